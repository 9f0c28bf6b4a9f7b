"""Load any supported ViT checkpoint strictly into :class:`pretrain.vit.SSLViT` (ResNet / CAFormer checkpoints go to
:mod:`.pooled`, which builds the timm models of :mod:`pretrain.pooled`).

Steps: read the file safely (:mod:`.reading`), detect or take the format (:mod:`.formats`), convert the selected
network to timm keys, infer the architecture from the weights, resample the positional table if another input size
is asked for, then check that every model parameter is filled with the right shape and that every leftover key is a
known non-backbone key of the format. Any violation is one :class:`SSLBenchError` line listing the keys.

What the weights determine: patch size (``patch_embed.proj.weight``), width, depth (block indices), MLP ratio
(``mlp.fc1``), qkv bias (presence of ``attn.qkv.bias``), training resolution (stored positional grid x patch) and
whether the stored table is a fixed 2-D sin-cos table. What they cannot: the head count (same tensors for any head
count) and the LayerNorm eps; these come from the ``num_heads=`` argument, an architecture stored in the file
(sslbench exports) or the format's known default, and the source is recorded in ``info["num_heads_source"]``.

The sin-cos detector compares the stored table with two locally generated 2-D tables: the MoCo v3 layout (BAM; the
first half of the channels encodes the row-major *outer* grid index) and the MAE layout (PQCL/ADCLR; the first half
encodes the *inner* index). It is computed here rather than imported from ``pretrain`` on purpose (a detector only).

Positional resampling: ``pos_interp`` (default: the rule of the format's own code: DINO's ``+0.1`` scale-factor
bicubic for DINO, iBOT, SERE and PQCL/ADCLR, whose ViTs copy DINO's ``interpolate_pos_encoding``; timm's size-based
antialiased bicubic for timm/DeiT, MAE and BAM, whose ViT subclasses timm's with ``dynamic_img_size``) is the
model's run-time rule, and the same rule resamples the stored table at load time when ``img_size`` differs from the
stored grid. MAE's own ``interpolate_pos_embed`` resizes by target size with bicubic and no antialias: identical to
timm's when enlarging the grid (antialias only acts when shrinking), hence ``"timm"``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from timm.layers import resample_abs_pos_embed
from torch import Tensor

from evaluate.checkpoints.formats import detect_format, disallowed, get_format, holds_networks
from evaluate.checkpoints.pooled import is_pooled_checkpoint, load_pooled
from evaluate.checkpoints.reading import read_checkpoint, sha256_cached
from pretrain.vit import SSLViT, ViTArch, dino_resample
from sslcore.errors import SSLBenchError

log = logging.getLogger("sslbench")
_BLOCK = re.compile(r"blocks\.(\d+)\.")

MAX_GRID = 256  # positional tables up to 256 x 256 patches (4096 px at /16): larger ones only exhaust memory


@dataclasses.dataclass
class KeyReport:
    """Outcome of matching a converted state dict to the model (keys in timm names unless stated).

    Attributes:
        missing: model parameters the checkpoint does not fill (``blocks.i.*`` when a whole block is absent).
        unexpected: leftover keys outside the format's allow-list, or backbone keys the model does not have.
        dropped: leftover keys that are known non-backbone parameters (heads, projectors, SERE modules...).
        reshaped: parameters changed at load time, e.g. ``pos_embed (1, 197, 384) -> (1, 785, 384) [dino]``.
        mismatched: parameters whose stored shape differs from the model's, ``key (file) vs (model)``.
        nonfinite: backbone tensors holding NaN or infinite values (such weights evaluate to chance).
    """

    missing: list[str] = dataclasses.field(default_factory=list)
    unexpected: list[str] = dataclasses.field(default_factory=list)
    dropped: list[str] = dataclasses.field(default_factory=list)
    reshaped: list[str] = dataclasses.field(default_factory=list)
    mismatched: list[str] = dataclasses.field(default_factory=list)
    nonfinite: list[str] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched or self.nonfinite)


@dataclasses.dataclass
class LoadedBackbone:
    """A loaded backbone: ``model`` (eval mode, CPU), ``info`` (goes into ``Record.checkpoint``), ``report``."""

    model: SSLViT
    info: dict[str, Any]
    report: KeyReport


@dataclasses.dataclass
class Resolved:
    """Everything decided about a checkpoint object before a model is built (what ``ckpt inspect`` prints)."""

    format: str
    which: str | None
    arch: ViTArch
    sources: dict[str, str]
    pos_interp: str
    state: dict[str, Tensor]
    report: KeyReport
    top_level: list[str]


# ------------------------------------------------------------------------------------------------ sin-cos tables
def sincos_table(dim: int, grid: int, first: str) -> Tensor:
    """A (1, 1 + grid^2, dim) 2-D sin-cos table with a zero CLS row, float64.

    Channels are ``[sin(a w), cos(a w), sin(b w), cos(b w)]`` with w_d = 10000^(-d / (dim/4)); for position
    (i, j) of the row-major grid, ``a = i, b = j`` when ``first == "outer"`` (MoCo v3, BAM) and ``a = j, b = i``
    when ``first == "inner"`` (MAE, PQCL/ADCLR).
    """
    quarter = dim // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)
    outer, inner = torch.meshgrid(
        torch.arange(grid, dtype=torch.float64), torch.arange(grid, dtype=torch.float64), indexing="ij"
    )
    a, b = (outer, inner) if first == "outer" else (inner, outer)
    a, b = a.reshape(-1, 1) * omega, b.reshape(-1, 1) * omega
    table = torch.cat([a.sin(), a.cos(), b.sin(), b.cos()], dim=1)
    return torch.cat([torch.zeros(1, dim, dtype=torch.float64), table]).unsqueeze(0)


def is_sincos(pos_embed: Tensor, atol: float = 1e-4) -> bool:
    """True when a (1, 1 + g^2, D) table equals a 2-D sin-cos table (MoCo v3 or MAE layout)."""
    dim, n = pos_embed.shape[-1], pos_embed.shape[1] - 1
    grid = math.isqrt(max(n, 0))
    if pos_embed.dim() != 3 or dim % 4 or grid * grid != n or n == 0:
        return False
    stored = pos_embed.detach().to(torch.float64)
    return any(torch.allclose(stored, sincos_table(dim, grid, first), atol=atol) for first in ("outer", "inner"))


# ----------------------------------------------------------------------------------------- architecture inference
def _need(state: Mapping[str, Tensor], key: str) -> Tensor:
    if key not in state:
        raise SSLBenchError(f"checkpoint backbone has no {key!r}: cannot infer the architecture (missing: {key})")
    return state[key]


def infer_arch(
    state: Mapping[str, Tensor], fmt: str, hints: Mapping[str, Any] | None = None, num_heads: int | None = None
) -> tuple[ViTArch, dict[str, str]]:
    """The :class:`ViTArch` a timm-key backbone state dict determines, and where each field came from."""
    hints = hints or {}
    spec = get_format(fmt)
    proj = _need(state, "patch_embed.proj.weight")
    if proj.dim() != 4 or proj.shape[-1] != proj.shape[-2]:
        raise SSLBenchError(f"patch_embed.proj.weight has shape {tuple(proj.shape)}; expected (D, C, p, p)")
    width, patch = int(proj.shape[0]), int(proj.shape[-1])
    blocks = {int(m.group(1)) for k in state if (m := _BLOCK.match(k))}
    if not blocks:
        raise SSLBenchError("checkpoint backbone has no 'blocks.*' keys (missing: blocks.0.*)")
    depth = max(blocks) + 1
    fc1 = _need(state, f"blocks.{min(blocks)}.mlp.fc1.weight")
    pos = _need(state, "pos_embed")
    n = int(pos.shape[1]) - 1 if pos.dim() == 3 else -1
    grid = math.isqrt(max(n, 0))
    if pos.dim() != 3 or grid * grid != n or n == 0:
        raise SSLBenchError(
            f"pos_embed has shape {tuple(pos.shape)}; expected (1, 1 + g*g, D) (one CLS position, square grid)"
        )
    inferred: dict[str, Any] = {
        "patch_size": patch,
        "embed_dim": width,
        "depth": depth,
        "mlp_ratio": fc1.shape[0] / width,
        "qkv_bias": any(k.endswith("attn.qkv.bias") for k in state),
        "img_size": grid * patch,
        "pos_embed": "sincos" if is_sincos(pos) else "learned",
    }
    sources = {
        "patch_size": "patch_embed.proj.weight",
        "embed_dim": "patch_embed.proj.weight",
        "depth": "block indices",
        "mlp_ratio": "mlp.fc1.weight",
        "qkv_bias": "attn.qkv.bias presence",
        "img_size": "pos_embed grid x patch",
        "pos_embed": "pos_embed compared with 2-D sin-cos tables",
    }
    stored = hints.get("arch")
    if stored is not None:
        try:
            stored_arch = ViTArch.from_dict(dict(stored))
        except (TypeError, ValueError) as exc:
            raise SSLBenchError(f"stored architecture is invalid: {exc}") from None
        for field in ("patch_size", "embed_dim", "depth", "qkv_bias", "img_size"):
            if getattr(stored_arch, field) != inferred[field]:
                raise SSLBenchError(
                    f"stored arch says {field}={getattr(stored_arch, field)!r} but the weights give {inferred[field]!r}"
                )
        heads, heads_src = stored_arch.num_heads, "stored arch"
        eps, eps_src = stored_arch.norm_eps, "stored arch"
        inferred["pos_embed"] = stored_arch.pos_embed
        sources["pos_embed"] = "stored arch"
    else:
        heads, heads_src = spec.heads(width), f"format default ({fmt}: {spec.heads_note})"
        eps, eps_src = spec.norm_eps, f"format default ({fmt})"
    if stored is None and "num_heads" in hints:
        heads, heads_src = int(hints["num_heads"]), "config.json beside the file"
    if stored is None and "norm_eps" in hints:
        eps, eps_src = float(hints["norm_eps"]), "config.json beside the file"
    if num_heads is not None:
        heads, heads_src = int(num_heads), "flag"
    if heads < 1 or width % heads:
        raise SSLBenchError(f"num_heads={heads} does not divide the width {width}")
    sources.update(num_heads=heads_src, norm_eps=eps_src)
    return ViTArch(num_heads=heads, norm_eps=eps, **inferred), sources


# ---------------------------------------------------------------------------------------------------- resolving
def _resample(pos: Tensor, grid: int, rule: str) -> Tensor:
    if rule == "dino":
        return dino_resample(pos.float(), (grid, grid))
    return resample_abs_pos_embed(pos.float(), new_size=[grid, grid], num_prefix_tokens=1)


def _group_missing(missing: list[str], expected: Mapping[str, Any]) -> list[str]:
    """Collapse the keys of wholly missing blocks into ``blocks.i.*``."""
    out, done = [], set()
    for key in missing:
        m = _BLOCK.match(key)
        if m:
            prefix = m.group(0)
            block_keys = [k for k in expected if k.startswith(prefix)]
            if all(k in missing for k in block_keys):
                if prefix not in done:
                    done.add(prefix)
                    out.append(prefix + "*")
                continue
        out.append(key)
    return out


def _shape(t: Any) -> tuple[int, ...]:
    return tuple(t.shape)


def resolve(
    checkpoint: Any,
    *,
    format: str | None = None,
    which: str = "teacher",
    num_heads: int | None = None,
    img_size: int | None = None,
    pos_interp: str | None = None,
) -> Resolved:
    """Convert a loaded checkpoint object and match it against the inferred model, without raising on key problems.

    Raises:
        SSLBenchError: unknown format, no usable network, or an architecture that cannot be inferred.
    """
    if not isinstance(checkpoint, Mapping):
        raise SSLBenchError(f"checkpoint is a {type(checkpoint).__name__}, not a dict of weights")
    fmt = format or detect_format(checkpoint)
    spec = get_format(fmt)
    backbone, leftover = spec.convert(checkpoint, which)
    hints = spec.hints(checkpoint)
    arch, sources = infer_arch(backbone, fmt, hints, num_heads)
    rule = pos_interp or hints.get("pos_interp") or spec.pos_interp
    if rule not in ("dino", "timm"):
        raise SSLBenchError(f"pos_interp must be 'dino' or 'timm', got {rule!r}")
    sources["pos_interp"] = (
        "argument" if pos_interp else ("stored" if hints.get("pos_interp") else f"format default ({fmt})")
    )
    report = KeyReport()
    report.nonfinite = sorted(
        k for k, v in backbone.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())
    )
    if img_size is not None and img_size != arch.img_size:
        if img_size <= 0 or img_size % arch.patch_size:
            raise SSLBenchError(f"img_size={img_size} is not a positive multiple of the patch size {arch.patch_size}")
        if img_size // arch.patch_size > MAX_GRID:
            raise SSLBenchError(
                f"img_size={img_size}: a {img_size // arch.patch_size}-patch grid side is beyond {MAX_GRID} "
                f"(at most {MAX_GRID * arch.patch_size} px for patch {arch.patch_size})"
            )
        old = backbone["pos_embed"]
        backbone = dict(backbone, pos_embed=_resample(old, img_size // arch.patch_size, rule))
        report.reshaped.append(f"pos_embed {_shape(old)} -> {_shape(backbone['pos_embed'])} [{rule}]")
        arch = dataclasses.replace(arch, img_size=img_size)
        sources["img_size"] = f"argument (stored grid resampled, {rule} rule)"
    with torch.device("meta"):
        expected = {k: _shape(v) for k, v in SSLViT(arch).state_dict().items()}
    report.missing = _group_missing(sorted(k for k in expected if k not in backbone), expected)
    report.mismatched = [
        f"{k} {_shape(v)} vs model {expected[k]}"
        for k, v in backbone.items()
        if k in expected and _shape(v) != expected[k]
    ]
    bad = disallowed(fmt, leftover)
    report.unexpected = sorted(k for k in backbone if k not in expected) + bad
    report.dropped = [k for k in leftover if k not in bad]
    top = sorted(str(k) for k, v in checkpoint.items() if not isinstance(v, Tensor))
    return Resolved(fmt, which if holds_networks(fmt, checkpoint) else None, arch, sources, rule, backbone, report, top)


def _listing(label: str, keys: list[str], limit: int = 4) -> str:
    shown = ", ".join(keys[:limit])
    return f"{label}: {shown}" + (f" (+{len(keys) - limit} more)" if len(keys) > limit else "")


def check(resolved: Resolved, path: str | Path) -> None:
    """Raise one :class:`SSLBenchError` line if the report shows missing, unexpected or mis-shaped keys."""
    report = resolved.report
    if report.ok:
        return
    parts = [
        _listing(label, keys)
        for label, keys in (
            ("missing", report.missing),
            ("wrong shape", report.mismatched),
            ("unexpected", report.unexpected),
            ("non-finite values (NaN/Inf)", report.nonfinite),
        )
        if keys
    ]
    raise SSLBenchError(f"{path}: does not load strictly as {resolved.format} ({'; '.join(parts)})")


def load_backbone(
    path: str | Path,
    *,
    format: str | None = None,
    which: str = "teacher",
    num_heads: int | None = None,
    img_size: int | None = None,
    pos_interp: str | None = None,
    trust_pickle: bool = False,
    name: str | None = None,
) -> LoadedBackbone:
    """Load the backbone of a checkpoint file strictly into an :class:`SSLViT` (eval mode, CPU), or into a
    :mod:`pretrain.pooled` ResNet / MetaFormer when the file holds one (:func:`.pooled.load_pooled`).

    Args:
        path: checkpoint file (``.pth``/``.pt``/``.ckpt`` via ``torch.load``, or ``.safetensors``).
        format: a key of :data:`CHECKPOINT_FORMATS`; detected when None.
        which: ``"teacher"`` (default) or ``"student"`` for formats that store both.
        num_heads: head count; default the architecture stored in the file or the format's default.
        img_size: input size to build for; the positional table is resampled when it differs from the stored grid.
        pos_interp: ``"dino"`` or ``"timm"`` resampling rule; default the checkpoint's own code's rule.
        trust_pickle: allow pickled objects outside the safe allow-list (``weights_only=False``).
        name: short label for tables (default: the file stem).

    Returns:
        :class:`LoadedBackbone` with ``info = {"path", "name", "sha256", "format", "arch", "which", "pos_interp",
        "num_heads_source"}``.

    Raises:
        SSLBenchError: one line naming the file and the problem (see the module docstring).
    """
    path = Path(path)
    checkpoint, pickled = read_checkpoint(path, trust_pickle=trust_pickle)
    if is_pooled_checkpoint(checkpoint):  # ResNet / CAFormer: evaluate.checkpoints.pooled
        model, info, dropped = load_pooled(
            checkpoint,
            path,
            format=format,
            which=which,
            num_heads=num_heads,
            img_size=img_size,
            pos_interp=pos_interp,
            name=name,
            sha256=sha256_cached(path),
        )
        if pickled:
            info["unpickled"] = pickled
        return LoadedBackbone(model=model, info=info, report=KeyReport(dropped=dropped))
    try:
        resolved = resolve(
            checkpoint, format=format, which=which, num_heads=num_heads, img_size=img_size, pos_interp=pos_interp
        )
    except SSLBenchError as exc:
        raise SSLBenchError(f"{path}: {exc}") from None
    check(resolved, path)
    model = SSLViT(resolved.arch, pos_interp=resolved.pos_interp)
    model.load_state_dict(resolved.state, strict=True)
    model.eval()
    if resolved.report.dropped:
        log.info("%s: dropped %d non-backbone keys", path, len(resolved.report.dropped))
    info = {
        "path": str(path.resolve()),
        "name": name or path.stem,
        "sha256": sha256_cached(path),
        "format": resolved.format,
        "arch": resolved.arch.to_dict(),
        "which": resolved.which,
        "pos_interp": resolved.pos_interp,
        "num_heads_source": resolved.sources["num_heads"],
    }
    if pickled:
        info["unpickled"] = pickled
    return LoadedBackbone(model=model, info=info, report=resolved.report)
