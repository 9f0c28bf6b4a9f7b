"""Load ResNet and CAFormer (MetaFormer) checkpoints strictly into the timm models of :mod:`pretrain.pooled`.

Layouts read (the network first, then the backbone inside it; DDP ``module.`` and ``torch.compile`` ``_orig_mod.``
segments removed):

==========  =========================================================================================================
sslbench    an export (``format: sslbench-backbone``, ``arch`` with a ``family``; timm keys) or a training checkpoint
            (``teacher``/``student`` with ``backbone.``/``heads.`` prefixes)
bam         official BAM ``main_pretrain.py``: ``model`` holds ``teacher.[module.]backbone.*`` and
            ``student.module.backbone.*`` (with BatchNorm the teacher is DDP-wrapped too), ``*.proj_head.*``; the
            backbone is timm's model with ``num_classes=0`` (``resnet50``: timm keys; ``caformer_m36``: BAM's
            ``models/metaformer.py``, timm's key names, GELU, no residual scales)
dino        DINO's ResNet-50 training checkpoint (``teacher``/``student``, ``backbone.*`` + ``head.*``) or its
            backbone-only release (flat torchvision keys without ``fc``)
moco        MoCo v3 (``state_dict`` with ``module.base_encoder.*``, ``module.momentum_encoder.*``,
            ``module.predictor.*``; ``base_encoder.fc.*`` is the projector) and MoCo v1/v2 (``module.encoder_q.*``):
            the base / query encoder, the one MoCo's own linear protocol (``main_lincls.py``) reads
timm        a flat torchvision or timm state dict (also under ``state_dict`` / ``model``), classifier ``fc.*``
            (ResNet) or ``head.fc.*`` (MetaFormer) dropped
==========  =========================================================================================================

The architecture is read off the weights. ResNet: stage depths (block indices of ``layer1..4``), block type
(``conv3`` present: Bottleneck), stage widths (``layer{i}.0.conv1``). MetaFormer: depths and
dims per stage (``stages.{i}.blocks.{j}``, ``norm1``), token mixer per stage (``token_mixer.qkv``: attention,
``token_mixer.pwconv1``: separable convolution), activation (``mlp.act.scale`` present: StarReLU, timm's CAFormer;
absent: GELU, BAM's) and residual scales (``res_scale1.scale``). Every backbone key must then fill the built model
with the right shape, and every model parameter must be filled (else one error line lists the keys). Keys outside the
backbone (projectors, predictors, the other network, classifiers) are reported as dropped.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from evaluate.checkpoints.formats import NETWORKS, _clean, _is_state_dict, _keys
from pretrain.pooled import POOLED_ARCHS, PooledArch, build_pooled, is_pooled
from sslcore.errors import SSLBenchError

RESNET_MARK = "layer1.0.conv1.weight"
METAFORMER_MARK = "stages.0.blocks.0.norm1.weight"
MARKS = {"resnet": RESNET_MARK, "metaformer": METAFORMER_MARK}
PREFIXES = ("backbone.", "base_encoder.", "encoder_q.", "")
CLASSIFIER = {"resnet": re.compile(r"fc\..*"), "metaformer": re.compile(r"head\.fc\..*")}
POOLED_FORMATS = ("sslbench", "bam", "dino", "moco", "timm")
_LAYER = re.compile(r"layer(\d+)\.(\d+)\.")
_STAGE = re.compile(r"stages\.(\d+)\.blocks\.(\d+)\.")


_DETECT = re.compile(
    r"((teacher|student)\.)?(module\.)?(backbone\.|base_encoder\.|encoder_q\.)?"
    r"(layer1\.0\.conv1\.weight|stages\.0\.blocks\.0\.norm1\.weight)"
)


def is_pooled_checkpoint(checkpoint: Any) -> bool:
    """True when a checkpoint object holds a ResNet or MetaFormer backbone (any layout above): a first-block key right
    under a network / backbone prefix (a hybrid ViT's ``patch_embed.backbone.stages...`` is not one)."""
    if not isinstance(checkpoint, Mapping):
        return False
    return any(_DETECT.fullmatch(_clean(str(k))) for k in _keys(checkpoint))


def _network(checkpoint: Mapping[str, Any], which: str) -> tuple[str, str | None, dict[str, Tensor]]:
    """(layout, network used, its state dict with cleaned keys)."""
    if which not in NETWORKS:
        raise SSLBenchError(f"which must be 'teacher' or 'student', got {which!r}")
    fmt = checkpoint.get("format")
    if fmt == "sslbench-backbone":
        if which != "teacher":
            raise SSLBenchError(f"an sslbench export holds one backbone; which={which!r} does not apply")
        return "sslbench", None, _cleaned(checkpoint.get("state_dict"), "state_dict")
    if any(n in checkpoint for n in NETWORKS):
        net = checkpoint.get(which)
        if net is None and which == "teacher" and _is_state_dict(checkpoint.get("student")):
            raise SSLBenchError("checkpoint has no teacher (a teacher-free run); use which='student' (--which student)")
        layout = "sslbench" if isinstance(fmt, str) and fmt.startswith("sslbench") else "dino"
        return layout, which, _cleaned(net, which)
    model = checkpoint.get("model")
    if _is_state_dict(model) and any(str(k).startswith(f"{n}.") for k in model for n in NETWORKS):
        head = f"{which}."
        mine = {k[len(head) :]: v for k, v in model.items() if str(k).startswith(head)}
        if not mine:
            raise SSLBenchError(f"BAM checkpoint has no '{head}*' keys")
        return "bam", which, _cleaned(mine, f"model.{which}")
    for name in ("state_dict", "model"):
        if _is_state_dict(checkpoint.get(name)):
            state = _cleaned(checkpoint[name], name)
            break
    else:
        state = _cleaned(checkpoint, "checkpoint")
    if any(k.startswith(("base_encoder.", "encoder_q.")) for k in state):
        return "moco", None, state
    return "timm", None, state


def _cleaned(state: Any, where: str) -> dict[str, Tensor]:
    if not _is_state_dict(state):
        raise SSLBenchError(f"no state dict under {where!r}")
    out = {_clean(str(k)): v for k, v in state.items()}
    if len(out) != len(state):
        raise SSLBenchError("duplicate keys after removing 'module.'/'_orig_mod.' prefixes")
    return out


def split_backbone(state: Mapping[str, Tensor]) -> tuple[str, dict[str, Tensor], list[str]]:
    """(family, backbone in timm keys, dropped keys) of one network's cleaned state dict."""
    for prefix in PREFIXES:
        for family, mark in MARKS.items():
            if prefix + mark in state:
                classifier = CLASSIFIER[family]
                backbone, dropped = {}, []
                for key, value in state.items():
                    inner = key[len(prefix) :]
                    if key.startswith(prefix) and not classifier.fullmatch(inner):
                        backbone[inner] = value
                    else:
                        dropped.append(key)
                return family, backbone, dropped
    raise SSLBenchError(f"no ResNet ({RESNET_MARK}) or MetaFormer ({METAFORMER_MARK}) backbone in the checkpoint")


def _need(state: Mapping[str, Tensor], key: str) -> Tensor:
    if key not in state:
        raise SSLBenchError(f"checkpoint backbone has no {key!r}: cannot infer the architecture")
    return state[key]


def _depths(state: Mapping[str, Tensor], pattern: re.Pattern, first: int) -> list[int]:
    blocks: dict[int, set[int]] = {}
    for key in state:
        if m := pattern.match(key):
            blocks.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
    stages = sorted(blocks)
    if stages != list(range(first, first + len(stages))):
        raise SSLBenchError(f"checkpoint stages {stages} are not consecutive from {first}")
    return [max(blocks[s]) + 1 for s in stages]


def infer_pooled_arch(family: str, state: Mapping[str, Tensor], img_size: int = 224) -> PooledArch:
    """The :class:`PooledArch` a timm-key ResNet / MetaFormer state dict determines (module docstring)."""
    if family == "resnet":
        depths = _depths(state, _LAYER, 1)
        bottleneck = "layer1.0.conv3.weight" in state
        widths = [int(_need(state, f"layer{i + 1}.0.conv1.weight").shape[0]) for i in range(len(depths))]
        _need(state, "conv1.weight")  # timm's plain stem (width 64); a deep stem (conv1.0.*) fails the strict match
        return PooledArch(
            "resnet", tuple(depths), tuple(widths), block="bottleneck" if bottleneck else "basic", img_size=img_size
        )
    depths = _depths(state, _STAGE, 0)
    dims, mixers, res_scale = [], [], []
    for i in range(len(depths)):
        dims.append(int(_need(state, f"stages.{i}.blocks.0.norm1.weight").shape[0]))
        block = f"stages.{i}.blocks.0."
        if block + "token_mixer.qkv.weight" in state:
            mixers.append("attention")
        elif block + "token_mixer.pwconv1.weight" in state:
            mixers.append("sepconv")
        else:
            raise SSLBenchError(f"stage {i}: unknown token mixer (neither {block}token_mixer.qkv nor .pwconv1)")
        res_scale.append(1.0 if block + "res_scale1.scale" in state else None)
    act = "starrelu" if any(k.endswith("mlp.act.scale") for k in state) else "gelu"
    try:
        return PooledArch(
            "metaformer",
            tuple(depths),
            tuple(dims),
            mixers=tuple(mixers),
            act=act,
            res_scale=tuple(res_scale),
            img_size=img_size,
        )
    except ValueError as exc:
        raise SSLBenchError(f"MetaFormer architecture: {exc}") from None


def _listing(label: str, keys: list[str], limit: int = 4) -> str:
    return f"{label}: {', '.join(keys[:limit])}" + (f" (+{len(keys) - limit} more)" if len(keys) > limit else "")


def load_pooled(
    checkpoint: Mapping[str, Any],
    path: Path,
    *,
    format: str | None = None,
    which: str = "teacher",
    num_heads: int | None = None,
    img_size: int | None = None,
    pos_interp: str | None = None,
    name: str | None = None,
    sha256: str = "",
) -> tuple[Any, dict[str, Any], list[str]]:
    """(model in eval mode, checkpoint info, dropped keys) of a ResNet / MetaFormer checkpoint object; raises one
    :class:`SSLBenchError` line on any mismatch."""
    if num_heads is not None or pos_interp is not None:
        raise SSLBenchError(f"{path}: num_heads / pos_interp apply to ViTs; this checkpoint is a CNN/MetaFormer")
    layout, used, state = _network(checkpoint, which)
    if format is not None and format != layout:
        raise SSLBenchError(f"{path}: format={format!r} but the file is a {layout!r} CNN/MetaFormer checkpoint")
    family, backbone, dropped = split_backbone(state)
    stored = checkpoint.get("arch") if layout == "sslbench" else None
    stored_size = stored.get("img_size") if isinstance(stored, Mapping) else None
    if stored_size is None and layout == "sslbench":
        config = checkpoint.get("config") if isinstance(checkpoint.get("config"), Mapping) else {}
        model_cfg = config.get("model") if isinstance(config.get("model"), Mapping) else {}
        if model_cfg.get("arch") in POOLED_ARCHS:
            stored_size = POOLED_ARCHS[model_cfg["arch"]].img_size
    arch = infer_pooled_arch(family, backbone, int(img_size or stored_size or 224))
    if isinstance(stored, Mapping):
        try:
            stored_arch = PooledArch.from_dict(dict(stored))
        except (TypeError, ValueError) as exc:
            raise SSLBenchError(f"{path}: stored architecture is invalid: {exc}") from None
        for field in ("family", "depths", "widths", "block", "mixers", "act"):
            if getattr(stored_arch, field) != getattr(arch, field):
                raise SSLBenchError(
                    f"{path}: stored arch says {field}={getattr(stored_arch, field)!r} but the weights give "
                    f"{getattr(arch, field)!r}"
                )
    model = build_pooled(arch)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(k for k in expected if k not in backbone)
    unexpected = sorted(k for k in backbone if k not in expected)
    mismatched = [
        f"{k} {tuple(v.shape)} vs model {expected[k]}"
        for k, v in backbone.items()
        if k in expected and tuple(v.shape) != expected[k]
    ]
    nonfinite = sorted(k for k, v in backbone.items() if v.is_floating_point() and not bool(torch.isfinite(v).all()))
    problems = [
        _listing(label, keys)
        for label, keys in (
            ("missing", missing),
            ("wrong shape", mismatched),
            ("unexpected", unexpected),
            ("non-finite values (NaN/Inf)", nonfinite),
        )
        if keys
    ]
    if problems:
        raise SSLBenchError(f"{path}: does not load strictly as a {layout} {family} ({'; '.join(problems)})")
    model.load_state_dict(backbone, strict=True)
    model.eval()
    info = {
        "path": str(path.resolve()),
        "name": name or path.stem,
        "sha256": sha256,
        "format": layout,
        "arch": arch.to_dict(),
        "which": used,
        "pos_interp": None,
        "num_heads_source": "n/a (CNN/MetaFormer)",
    }
    return model, info, dropped


def require_vit(model: Any, protocol: str, path: Any = None) -> None:
    """Raise one :class:`SSLBenchError` line when ``model`` is a pooled (CNN/MetaFormer) backbone: ``protocol`` needs
    patch tokens of a ViT."""
    if is_pooled(model):
        where = f"{path}: " if path else ""
        raise SSLBenchError(
            f"{where}{protocol} needs a ViT (patch tokens); this checkpoint is a {model.arch.family} backbone, "
            "which the frozen-feature protocols (knn, linear, logreg, cluster) evaluate"
        )
