"""Source checkpoint formats: one pure converter per format, a detector, and each format's defaults.

A converter takes the top-level object of a checkpoint file (the network choice lives at that level: DINO keeps
``teacher`` and ``student`` side by side, BAM keeps both inside ``model``) and returns ``(backbone, leftover)``:

* ``backbone``: the backbone's tensors under timm ``VisionTransformer`` keys (``cls_token``, ``pos_embed``,
  ``patch_embed.proj.*``, ``blocks.{i}.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}.*``, ``norm.*``);
* ``leftover``: every other key of the selected network (heads, projectors, SERE modules, ``masked_embed``...), named
  relative to that network after removing the DDP ``module.`` and ``torch.compile`` ``_orig_mod.`` segments, e.g.
  ``backbone.masked_embed`` or ``head.mlp.0.weight``. For BAM, whose ``model`` dict holds both networks, the other
  network's keys are leftovers too (``student.*`` when loading the teacher).

No renames are needed: the official ViTs of DINO, iBOT, SERE, PQCL/ADCLR, BAM (a timm subclass) and MAE (timm 0.3.2
blocks) all use timm's parameter names. Layouts (from the official code; see docs/checkpoints.md):

=========  ===========================================================================================
sslbench   ``pretrain.vit.export_backbone`` payload, or a training checkpoint ``{"format": "sslbench-train",
           "teacher", "student", "config", ...}`` with ``backbone.``/``head.`` prefixes (teacher None when teacher-free)
dino       DINO/iBOT ``{"teacher", "student", "args", ...}``: ``backbone.*`` + ``head.*``, the student
           DDP-wrapped (``module.``); iBOT students carry ``backbone.masked_embed``
bam        ``{"model": StudentTeacherWrapper state, "args": Namespace, ...}``: ``teacher.backbone.*``,
           ``teacher.proj_head.*``, ``student.module.backbone.*``, ``student.module.proj_head.*``
sere       iBOT layout with both networks DDP-wrapped, plus ``{pixel,channel}_sere{,_local}.*`` and
           ``masked_embed``
adclr      PQCL code: iBOT layout plus ``backbone.masked_embed``, ``backbone.query_block.*`` and
           ``backbone.norm2.*`` (unused modules)
mae        ``{"model": ...}`` with timm keys; pre-training files add ``mask_token`` and ``decoder_*``
dino       (also) DINO's released backbone-only files (``dino_deitsmall16_pretrain.pth``...): a *flat* state dict
           of timm keys with no classifier ``head.*``: detected as ``dino`` (DINO's resampling rule), not timm
transf.    Hugging Face ``transformers`` ``ViTModel``/``ViTForImageClassification`` weights (``model.safetensors``
           or ``pytorch_model.bin``): ``embeddings.*``, ``encoder.layer.{i}.*``, ``layernorm.*``, optionally under
           ``vit.``; separate q/k/v are fused into timm's ``qkv``. Head count and LayerNorm eps come from the
           ``config.json`` beside the file when there is one (else width/64 and transformers' 1e-12)
timm       a timm/DeiT state dict with its classifier (flat, ``{"model"}`` or ``{"state_dict"}``), ``.pth`` or
           ``.safetensors``; also the files ``sslbench ckpt convert`` writes. A head-less flat file is taken for
           a DINO release (above); ``format=timm`` forces timm's rule
=========  ===========================================================================================
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from sslcore.errors import SSLBenchError

# Keys of a timm VisionTransformer as SSLViT builds it (CLS token, absolute positions, no LayerScale, no fc_norm).
TIMM_KEY = re.compile(
    r"cls_token|pos_embed|patch_embed\.proj\.(weight|bias)|norm\.(weight|bias)"
    r"|blocks\.\d+\.(norm1|norm2|attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)\.(weight|bias)"
)
NETWORKS = ("teacher", "student")
STANDARD_HEADS = {192: 3, 384: 6, 768: 12, 1024: 16, 1280: 16}

Converted = tuple[dict[str, Tensor], list[str]]


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(isinstance(v, Tensor) for v in obj.values())


def _clean(key: str) -> str:
    """Drop ``torch.compile``'s ``_orig_mod.`` segments and a leading DDP ``module.``."""
    key = key.replace("_orig_mod.", "")
    return key[len("module.") :] if key.startswith("module.") else key


def _split(state: Mapping[str, Tensor]) -> Converted:
    """Split one network's state dict into timm backbone keys and leftovers.

    If any key starts with ``backbone.`` the backbone is that sub-tree (the rest are heads); otherwise the whole dict
    is the backbone. Inside the backbone, keys outside :data:`TIMM_KEY` are leftovers (named with their prefix).
    """
    cleaned = {_clean(k): v for k, v in state.items()}
    if len(cleaned) != len(state):
        raise SSLBenchError("duplicate keys after removing 'module.'/'_orig_mod.' prefixes")
    prefix = "backbone." if any(k.startswith("backbone.") for k in cleaned) else ""
    backbone: dict[str, Tensor] = {}
    leftover: list[str] = []
    for key, value in cleaned.items():
        if key.startswith(prefix) and TIMM_KEY.fullmatch(key[len(prefix) :]):
            backbone[key[len(prefix) :]] = value
        else:
            leftover.append(key)
    return backbone, leftover


def _check_which(which: str) -> None:
    if which not in NETWORKS:
        raise SSLBenchError(f"which must be 'teacher' or 'student', got {which!r}")


def _single(which: str, fmt: str) -> None:
    _check_which(which)
    if which != "teacher":
        raise SSLBenchError(f"format {fmt!r} holds a single network; which={which!r} does not apply")


def _unwrap(checkpoint: Mapping[str, Any], *names: str) -> Mapping[str, Any]:
    """The first ``checkpoint[name]`` that is a state dict, else the checkpoint itself if it is one."""
    for name in names:
        inner = checkpoint.get(name)
        if _is_state_dict(inner):
            return inner
    if _is_state_dict(checkpoint):
        return checkpoint
    found = ", ".join(sorted(map(str, checkpoint)))[:200]
    raise SSLBenchError(f"no state dict under {' / '.join(map(repr, names))} (top-level entries: {found})")


def _network(checkpoint: Mapping[str, Any], which: str) -> Mapping[str, Any]:
    """``checkpoint[which]`` of a teacher/student checkpoint, or a flat state dict (a backbone-only file)."""
    _check_which(which)
    if any(n in checkpoint for n in NETWORKS):
        net = checkpoint.get(which)
        if net is None and which == "teacher" and _is_state_dict(checkpoint.get("student")):
            raise SSLBenchError("checkpoint has no teacher (a teacher-free run); use which='student' (--which student)")
        if not _is_state_dict(net):
            raise SSLBenchError(f"checkpoint has no {which!r} state dict (entries: {', '.join(map(str, checkpoint))})")
        return net
    return _unwrap(checkpoint, "state_dict", "model")


def convert_sslbench(checkpoint: Mapping[str, Any], which: str = "teacher") -> Converted:
    """sslbench export payload (``state_dict`` in timm keys) or training checkpoint (``teacher``/``student``)."""
    if isinstance(checkpoint.get("format"), str) and checkpoint["format"] == "sslbench-backbone":
        _single(which, "sslbench export")
        backbone, leftover = _split(_unwrap(checkpoint, "state_dict"))
        return backbone, [f"state_dict.{k}" for k in leftover]  # an export holds the backbone only
    return _split(_network(checkpoint, which))


def convert_dino(checkpoint: Mapping[str, Any], which: str = "teacher") -> Converted:
    """DINO / iBOT training checkpoints (``teacher``/``student``), or their backbone-only extracts."""
    return _split(_network(checkpoint, which))


convert_sere = convert_dino  # same layout; the SERE-specific leftovers differ (see the allow-lists)
convert_adclr = convert_dino


def convert_bam(checkpoint: Mapping[str, Any], which: str = "teacher") -> Converted:
    """Official BAM ``checkpoint.pth``: ``model`` holds ``teacher.backbone.*`` and ``student.module.backbone.*``."""
    _check_which(which)
    model = _unwrap(checkpoint, "model", "state_dict")
    head = f"{which}."
    mine = {k[len(head) :]: v for k, v in model.items() if k.startswith(head)}
    if not mine:
        raise SSLBenchError(f"BAM checkpoint has no '{head}*' keys")
    backbone, leftover = _split(mine)
    others = [k for k in model if not k.startswith(head)]
    return backbone, leftover + others


def convert_mae(checkpoint: Mapping[str, Any], which: str = "teacher") -> Converted:
    """MAE ``{"model": ...}`` (pre-training: with ``mask_token``/``decoder_*``; or the encoder-only release)."""
    _single(which, "mae")
    return _split(_unwrap(checkpoint, "model", "state_dict"))


_HF_LAYER = {
    "layernorm_before": "norm1",
    "layernorm_after": "norm2",
    "attention.output.dense": "attn.proj",
    "intermediate.dense": "mlp.fc1",
    "output.dense": "mlp.fc2",
}
_HF_TOP = {
    "embeddings.cls_token": "cls_token",
    "embeddings.position_embeddings": "pos_embed",
    "embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
    "embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
    "layernorm.weight": "norm.weight",
    "layernorm.bias": "norm.bias",
}
_HF_BLOCK = re.compile(r"encoder\.layer\.(\d+)\.(.+)\.(weight|bias)")


def convert_transformers(checkpoint: Mapping[str, Any], which: str = "teacher") -> Converted:
    """Hugging Face ``transformers`` ViT weights (``ViTModel``, or ``ViTForImageClassification`` under ``vit.``).

    ``encoder.layer.i.attention.attention.{query,key,value}`` are concatenated (q, k, v order) into timm's
    ``blocks.i.attn.qkv``; the other tensors are renamed one to one (``layernorm_before`` -> ``norm1``, ...).
    """
    _single(which, "transformers")
    state = _unwrap(checkpoint, "state_dict", "model")
    prefix = "vit." if any(k.startswith("vit.embeddings.") for k in state) else ""
    backbone: dict[str, Tensor] = {}
    leftover: list[str] = []
    qkv: dict[tuple[str, str], dict[str, Tensor]] = {}
    for key, value in state.items():
        name = key[len(prefix) :] if key.startswith(prefix) else key
        if not key.startswith(prefix):
            leftover.append(key)
        elif name in _HF_TOP:
            backbone[_HF_TOP[name]] = value
        elif m := _HF_BLOCK.fullmatch(name):
            block, module, kind = m.groups()
            if module in ("attention.attention.query", "attention.attention.key", "attention.attention.value"):
                qkv.setdefault((block, kind), {})[module.rsplit(".", 1)[1]] = value
            elif module in _HF_LAYER:
                backbone[f"blocks.{block}.{_HF_LAYER[module]}.{kind}"] = value
            else:
                leftover.append(name)
        else:
            leftover.append(name)
    for (block, kind), parts in qkv.items():
        if set(parts) != {"query", "key", "value"}:
            missing = sorted({"query", "key", "value"} - set(parts))
            raise SSLBenchError(f"encoder.layer.{block}.attention.attention: missing {', '.join(missing)}.{kind}")
        backbone[f"blocks.{block}.attn.qkv.{kind}"] = torch.cat([parts["query"], parts["key"], parts["value"]])
    return backbone, leftover


def convert_timm(checkpoint: Mapping[str, Any], which: str = "teacher") -> Converted:
    """A plain timm/DeiT state dict, possibly under ``model`` or ``state_dict``."""
    _single(which, "timm")
    return _split(_unwrap(checkpoint, "state_dict", "model"))


# --------------------------------------------------------------------------------------------- hints and defaults
def _config_arch(checkpoint: Mapping[str, Any]) -> dict[str, Any]:
    """Architecture of an ``sslbench-train`` checkpoint from its resolved config (``config.model.arch`` names one of
    ``pretrain.vit.ARCHS``; ``config.model.pos_embed``/``pos_interp`` complete it)."""
    from pretrain.vit import ARCHS

    config = checkpoint.get("config")
    model = config.get("model") if isinstance(config, Mapping) else None
    if not isinstance(model, Mapping) or model.get("arch") not in ARCHS:
        return {}
    arch = ARCHS[model["arch"]].to_dict()
    if model.get("pos_embed") in ("learned", "sincos"):
        arch["pos_embed"] = model["pos_embed"]
    out: dict[str, Any] = {"arch": arch}
    if model.get("pos_interp") in ("dino", "timm"):
        out["pos_interp"] = model["pos_interp"]
    return out


def _stored_arch(checkpoint: Mapping[str, Any]) -> dict[str, Any]:
    """Architecture/pos-rule stored by sslbench: the export payload's, a training checkpoint's (top-level ``arch`` or
    its resolved ``config``), or ``ckpt convert``'s meta."""
    meta = checkpoint.get("meta") if isinstance(checkpoint.get("meta"), Mapping) else {}
    out: dict[str, Any] = {}
    for source in (meta, checkpoint):
        if isinstance(source.get("arch"), Mapping) and "arch" not in out:
            out["arch"] = dict(source["arch"])
        if source.get("pos_interp") in ("dino", "timm") and "pos_interp" not in out:
            out["pos_interp"] = source["pos_interp"]
    return out or _config_arch(checkpoint)


def standard_heads(width: int) -> int:
    """Head count of the standard ViT at this width (timm/DeiT/DINO), else width/64 (at least 1)."""
    if width in STANDARD_HEADS:
        return STANDARD_HEADS[width]
    return width // 64 if width >= 64 and width % 64 == 0 else 1


def bam_heads(width: int) -> int:
    """BAM's ViT-S/16 uses 12 heads of width 32 (MoCo v3 style); its ViT-B the standard 12."""
    return 12 if width == 384 else standard_heads(width)


@dataclasses.dataclass(frozen=True)
class CheckpointFormat:
    """One source format: how to convert, detect, and what to assume where the weights are silent.

    Attributes:
        convert: ``(checkpoint, which) -> (backbone in timm keys, leftover keys)``.
        detect: True when a checkpoint's top-level structure/keys identify this format.
        allowed: regexes (full match) for leftover keys that are known non-backbone parameters.
        pos_interp: positional-embedding resampling rule of the format's own code.
        heads: default head count from the width (heads cannot be read off the weights).
        networks: whether the format stores a teacher and a student.
        hints: extra facts stored in the file (sslbench's own arch and pos rule).
    """

    convert: Callable[[Mapping[str, Any], str], Converted]
    detect: Callable[[Mapping[str, Any]], bool]
    allowed: tuple[str, ...]
    pos_interp: str
    heads: Callable[[int], int]
    heads_note: str
    networks: bool
    description: str
    norm_eps: float = 1e-6
    hints: Callable[[Mapping[str, Any]], dict[str, Any]] = lambda checkpoint: {}


def _keys(checkpoint: Mapping[str, Any]) -> list[str]:
    """All state-dict keys one level down (``model``, ``state_dict``, ``teacher``, ``student``) or at the top."""
    out = [k for k, v in checkpoint.items() if isinstance(v, Tensor)]
    for name in ("model", "state_dict", *NETWORKS):
        inner = checkpoint.get(name)
        if isinstance(inner, Mapping):
            out += [str(k) for k in inner]
    return out


def _any(keys: list[str], pattern: str) -> bool:
    regex = re.compile(pattern)
    return any(regex.search(k) for k in keys)


def _detect_sslbench(c: Mapping[str, Any]) -> bool:
    fmt = c.get("format")
    return (isinstance(fmt, str) and fmt.startswith("sslbench")) or (
        isinstance(c.get("arch"), Mapping) and any(n in c for n in NETWORKS)
    )


def _detect_bam(c: Mapping[str, Any]) -> bool:
    return _any(_keys(c), r"^(teacher\.(module\.)?backbone\.|student\.module\.backbone\.)")


def _detect_sere(c: Mapping[str, Any]) -> bool:
    return _any(_keys(c), r"(^|\.)(pixel|channel)_sere(_local)?\.")


def _detect_adclr(c: Mapping[str, Any]) -> bool:
    return _any(_keys(c), r"(^|\.)query_block\.")


def _detect_mae(c: Mapping[str, Any]) -> bool:
    keys = _keys(c)
    if _any(keys, r"^(decoder_|mask_token$)"):
        return True
    model = c.get("model")  # MAE's encoder-only release: {"model": timm keys}, no classifier (DeiT's has head.*)
    return _is_state_dict(model) and "blocks.0.attn.qkv.weight" in model and "head.weight" not in model


def _detect_dino(c: Mapping[str, Any]) -> bool:
    return (
        any(n in c for n in NETWORKS)
        or _any(_keys(c), r"^(module\.)?backbone\.|(^|\.)masked_embed$")
        or _detect_dino_release(c)
    )


def _detect_dino_release(c: Mapping[str, Any]) -> bool:
    """DINO's backbone-only release: a flat dict of timm backbone keys without a classifier head."""
    return (
        _is_state_dict(c)
        and "cls_token" in c
        and _any(list(c), r"^blocks\.\d+\.attn\.qkv\.weight$")
        and not _any(list(c), r"^head(_dist)?\.")
    )


def _detect_transformers(c: Mapping[str, Any]) -> bool:
    return _any(_keys(c), r"^(vit\.)?embeddings\.patch_embeddings\.projection\.weight$")


def _hf_hints(checkpoint: Mapping[str, Any]) -> dict[str, Any]:
    """Head count and LayerNorm eps from the ``config.json`` the reader found beside the file."""
    config = checkpoint.get("hf_config")
    if not isinstance(config, Mapping):
        return {}
    out: dict[str, Any] = {}
    if isinstance(config.get("num_attention_heads"), int):
        out["num_heads"] = config["num_attention_heads"]
    if isinstance(config.get("layer_norm_eps"), (int, float)):
        out["norm_eps"] = float(config["layer_norm_eps"])
    return out


def _detect_timm(c: Mapping[str, Any]) -> bool:
    return _any(_keys(c), r"^blocks\.\d+\.attn\.qkv\.weight$")


_OTHER_NET = r"(teacher|student)\..*"
_HEADS = r"head\..*"

CHECKPOINT_FORMATS: dict[str, CheckpointFormat] = {
    "sslbench": CheckpointFormat(
        convert=convert_sslbench,
        detect=_detect_sslbench,
        # training checkpoints: every module outside backbone.* is a method head/projector; inside the backbone
        # only the masking token the masked-image-modelling methods add
        allowed=(r"(?!backbone\.|state_dict\.).*", r"backbone\.(masked_embed|mask_token)"),
        pos_interp="dino",
        heads=standard_heads,
        heads_note="stored arch, else standard ViT heads (width/64)",
        networks=True,
        description="sslbench export (pretrain.vit.export_backbone) or training checkpoint",
        hints=_stored_arch,
    ),
    "bam": CheckpointFormat(
        convert=convert_bam,
        detect=_detect_bam,
        allowed=(_OTHER_NET, r"proj_head\..*", _HEADS),
        pos_interp="timm",  # BAM's ViT is a timm subclass (dynamic_img_size): timm's resampling at run time
        heads=bam_heads,
        heads_note="BAM ViT-S/16: 12 heads; otherwise standard",
        networks=True,
        description="official BAM main_pretrain.py checkpoint (model = StudentTeacherWrapper state)",
    ),
    "sere": CheckpointFormat(
        convert=convert_sere,
        detect=_detect_sere,
        allowed=(_HEADS, r"(backbone\.)?(pixel|channel)_sere(_local)?\..*", r"(backbone\.)?masked_embed"),
        pos_interp="dino",
        heads=standard_heads,
        heads_note="iBOT ViT-S: 6 heads (standard)",
        networks=True,
        description="official SERE (iBOT+SERE) checkpoint",
    ),
    "adclr": CheckpointFormat(
        convert=convert_adclr,
        detect=_detect_adclr,
        allowed=(_HEADS, r"(backbone\.)?(masked_embed|query_block\..*|norm2\.(weight|bias))"),
        pos_interp="dino",
        heads=standard_heads,
        heads_note="PQCL pos_small: 6 heads (standard)",
        networks=True,
        description="PQCL/ADCLR code checkpoint",
    ),
    "dino": CheckpointFormat(
        convert=convert_dino,
        detect=_detect_dino,
        allowed=(_HEADS, r"(backbone\.)?masked_embed"),
        pos_interp="dino",
        heads=standard_heads,
        heads_note="DINO/iBOT ViT-S: 6 heads (standard)",
        networks=True,
        description="DINO or iBOT checkpoint (teacher/student), or a backbone extract with module./backbone.",
    ),
    "mae": CheckpointFormat(
        convert=convert_mae,
        detect=_detect_mae,
        allowed=(r"mask_token", r"decoder_.*", _HEADS, r"fc_norm\.(weight|bias)"),
        pos_interp="timm",
        heads=standard_heads,
        heads_note="standard ViT heads",
        networks=False,
        description="MAE checkpoint ({'model': ...})",
    ),
    "transformers": CheckpointFormat(
        convert=convert_transformers,
        detect=_detect_transformers,
        allowed=(r"classifier\..*", r"pooler\..*", r"embeddings\.mask_token"),
        # transformers' ViT.interpolate_pos_encoding resizes by target size (bicubic): timm's rule when enlarging
        pos_interp="timm",
        heads=standard_heads,
        heads_note="config.json beside the file, else width/64",
        networks=False,
        description="Hugging Face transformers ViT / DINO weights (embeddings.*, encoder.layer.*)",
        norm_eps=1e-12,
        hints=_hf_hints,
    ),
    "timm": CheckpointFormat(
        convert=convert_timm,
        detect=_detect_timm,
        allowed=(_HEADS, r"head_dist\..*"),
        pos_interp="timm",
        heads=standard_heads,
        heads_note="meta arch, else standard ViT heads",
        networks=False,
        description="plain timm/DeiT state dict (.pth or .safetensors)",
        hints=_stored_arch,
    ),
}

# Detection order: the most specific markers first (BAM's wrapper prefixes, SERE/PQCL modules), plain timm last.
DETECTION_ORDER = ("sslbench", "bam", "sere", "adclr", "mae", "transformers", "dino", "timm")


def detect_format(checkpoint: Any) -> str:
    """The name of the format in :data:`CHECKPOINT_FORMATS` that this checkpoint object follows.

    Raises:
        SSLBenchError: when no format matches (the message lists the known formats).
    """
    if isinstance(checkpoint, Mapping):
        for name in DETECTION_ORDER:
            if CHECKPOINT_FORMATS[name].detect(checkpoint):
                return name
    raise SSLBenchError(
        f"unknown checkpoint format (known formats: {', '.join(CHECKPOINT_FORMATS)}; force with format=)"
    )


def get_format(name: str) -> CheckpointFormat:
    if name not in CHECKPOINT_FORMATS:
        raise SSLBenchError(f"unknown checkpoint format {name!r} (known formats: {', '.join(CHECKPOINT_FORMATS)})")
    return CHECKPOINT_FORMATS[name]


def holds_networks(fmt: str, checkpoint: Mapping[str, Any]) -> bool:
    """Whether this checkpoint stores a teacher and a student (an sslbench export holds one backbone)."""
    return get_format(fmt).networks and checkpoint.get("format") != "sslbench-backbone"


def disallowed(fmt: str, leftover: list[str]) -> list[str]:
    """Leftover keys that are not in the format's allow-list of known non-backbone keys."""
    patterns = [re.compile(p) for p in get_format(fmt).allowed]
    return [k for k in leftover if not any(p.fullmatch(k) for p in patterns)]
