"""The ViT every part of sslbench uses: a timm ``VisionTransformer`` plus the two things SSL code needs.

1. **Positional-embedding resampling by rule.** The DINO-family code (DINO, iBOT, SERE, BAM, and their DAVIS /
   dense evaluations) resamples at run time with ``F.interpolate(mode="bicubic", scale_factor=((h + 0.1) / sqrt(N),
   (w + 0.1) / sqrt(N)))`` and no antialiasing; timm resamples by target size with antialiasing. The two give
   numerically different features, so :class:`SSLViT` offers both (``pos_interp="dino"`` or ``"timm"``); every
   result records which one was used.
2. **Taps**: normalised CLS/patch tokens of the last n blocks, and the last block's self-attention.

The model's ``state_dict`` keys are timm's (``cls_token``, ``pos_embed``, ``patch_embed.proj.*``, ``blocks.{i}.*``,
``norm.*``), so any timm tool loads it. :class:`ViTArch` describes an architecture and travels with every exported
backbone (:func:`export_backbone`).

Tensor layouts: images (B, 3, H, W); tokens (B, 1 + h*w, D) with the CLS token first; attention (B, heads, 1 + h*w,
1 + h*w); h = H // patch, w = W // patch.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Literal

import torch
import torch.nn.functional as F
from timm.layers import resample_abs_pos_embed
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor

PosInterp = Literal["dino", "timm"]
EXPORT_FORMAT = "sslbench-backbone"
EXPORT_VERSION = 1


@dataclasses.dataclass(frozen=True)
class ViTArch:
    """Architecture of a plain ViT with a CLS token and an absolute positional embedding.

    ``img_size`` is the training resolution: it fixes the stored positional grid (img_size / patch_size)^2.
    ``pos_embed="sincos"`` marks a fixed 2-D sin-cos table (BAM, MoCo v3); it is stored in the state dict either way.
    """

    patch_size: int = 16
    embed_dim: int = 384
    depth: int = 12
    num_heads: int = 6
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    norm_eps: float = 1e-6
    img_size: int = 224
    pos_embed: Literal["learned", "sincos"] = "learned"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ViTArch:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown ViT architecture key {unknown[0]!r} (valid: {', '.join(sorted(names))})")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


ARCHS: dict[str, ViTArch] = {
    "vit_tiny": ViTArch(embed_dim=192, num_heads=3),
    "vit_small": ViTArch(embed_dim=384, num_heads=6),
    "vit_small_12h": ViTArch(embed_dim=384, num_heads=12),  # BAM's ViT-S/16 uses 12 heads of width 32
    "vit_base": ViTArch(embed_dim=768, num_heads=12),
    "vit_large": ViTArch(embed_dim=1024, depth=24, num_heads=16),
    # tiny models for CPU runs (demo and tests)
    "vit_pico": ViTArch(patch_size=8, embed_dim=64, depth=4, num_heads=4, img_size=64),
    "vit_femto": ViTArch(patch_size=8, embed_dim=32, depth=2, num_heads=2, img_size=32),
}


def dino_resample(pos_embed: Tensor, grid: tuple[int, int], num_prefix: int = 1) -> Tensor:
    """Resample a (1, prefix + N, D) table to a (gh, gw) grid the way DINO's ``interpolate_pos_encoding`` does.

    The stored grid must be square (N = n^2). Bicubic, ``align_corners=False``, no antialias, scale factors
    ((gh + 0.1) / n, (gw + 0.1) / n) so that flooring the output size gives exactly (gh, gw).
    """
    prefix, patch = pos_embed[:, :num_prefix], pos_embed[:, num_prefix:]
    n = int(math.isqrt(patch.shape[1]))
    if n * n != patch.shape[1]:
        raise ValueError(f"DINO-style resampling needs a square positional grid, got {patch.shape[1]} positions")
    gh, gw = grid
    if (gh, gw) == (n, n):
        return pos_embed
    dim = patch.shape[-1]
    table = patch.reshape(1, n, n, dim).permute(0, 3, 1, 2)
    table = F.interpolate(
        table.float(), scale_factor=((gh + 0.1) / n, (gw + 0.1) / n), mode="bicubic", align_corners=False
    ).to(pos_embed.dtype)
    if table.shape[-2:] != (gh, gw):
        raise RuntimeError(f"DINO resampling produced {tuple(table.shape[-2:])}, expected {(gh, gw)}")
    return torch.cat([prefix, table.permute(0, 2, 3, 1).reshape(1, gh * gw, dim)], dim=1)


class SSLViT(VisionTransformer):
    """timm ViT with rule-selectable positional resampling and SSL taps (see the module docstring)."""

    def __init__(self, arch: ViTArch, pos_interp: PosInterp = "dino", drop_path_rate: float = 0.0) -> None:
        super().__init__(
            img_size=arch.img_size,
            patch_size=arch.patch_size,
            embed_dim=arch.embed_dim,
            depth=arch.depth,
            num_heads=arch.num_heads,
            mlp_ratio=arch.mlp_ratio,
            qkv_bias=arch.qkv_bias,
            norm_layer=functools.partial(torch.nn.LayerNorm, eps=arch.norm_eps),
            num_classes=0,
            global_pool="token",
            dynamic_img_size=True,
            drop_path_rate=drop_path_rate,
        )
        if pos_interp not in ("dino", "timm"):
            raise ValueError(f"pos_interp must be 'dino' or 'timm', got {pos_interp!r}")
        self.arch = arch
        self.pos_interp: PosInterp = pos_interp

    def _pos_embed(self, x: Tensor) -> Tensor:
        # x: (B, gh, gw, D) because dynamic_img_size=True
        batch, gh, gw, dim = x.shape
        if self.pos_interp == "dino":
            pos = dino_resample(self.pos_embed, (gh, gw), self.num_prefix_tokens)
        else:
            pos = resample_abs_pos_embed(
                self.pos_embed,
                new_size=(gh, gw),
                old_size=self.patch_embed.grid_size,
                num_prefix_tokens=self.num_prefix_tokens,
            )
        x = torch.cat([self.cls_token.expand(batch, -1, -1), x.reshape(batch, gh * gw, dim)], dim=1)
        return self.pos_drop(x + pos)

    def tokens(self, x: Tensor, n_last: int = 1, norm: bool = True) -> list[Tensor]:
        """Outputs of the last ``n_last`` blocks, each (B, 1 + h*w, D), through the final norm if ``norm``.

        The final norm is applied to every tapped block, as DINO/iBOT/DINOv2's ``get_intermediate_layers`` do.
        """
        x = self.norm_pre(self._pos_embed(self.patch_embed(x)))
        outs = []
        first = len(self.blocks) - n_last
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i >= first:
                outs.append(self.norm(x) if norm else x)
        return outs

    def last_selfattention(self, x: Tensor) -> Tensor:
        """Softmax attention of the last block, (B, heads, 1 + h*w, 1 + h*w)."""
        x = self.norm_pre(self._pos_embed(self.patch_embed(x)))
        for block in self.blocks[:-1]:
            x = block(x)
        attn = self.blocks[-1].attn
        batch, n, dim = x.shape
        qkv = attn.qkv(self.blocks[-1].norm1(x)).reshape(batch, n, 3, attn.num_heads, dim // attn.num_heads)
        q, k, _ = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        q, k = attn.q_norm(q), attn.k_norm(k)
        return ((q * attn.scale) @ k.transpose(-2, -1)).softmax(dim=-1)


def build_vit(arch: ViTArch | str, pos_interp: PosInterp = "dino", drop_path_rate: float = 0.0) -> SSLViT:
    """Build an :class:`SSLViT` from a :class:`ViTArch` or a name in :data:`ARCHS`."""
    if isinstance(arch, str):
        if arch not in ARCHS:
            raise ValueError(f"unknown architecture {arch!r} (valid: {', '.join(ARCHS)})")
        arch = ARCHS[arch]
    return SSLViT(arch, pos_interp=pos_interp, drop_path_rate=drop_path_rate)


def export_backbone(model: SSLViT, meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """The exported-backbone payload: tensors and plain values only (loads with ``torch.load(weights_only=True)``).

    Layout: ``{"format": "sslbench-backbone", "version": 1, "arch": ViTArch dict, "pos_interp": str,
    "state_dict": timm keys -> tensors, "meta": {...}}``.
    """
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items() if not k.startswith("head.")}
    return {
        "format": EXPORT_FORMAT,
        "version": EXPORT_VERSION,
        "arch": model.arch.to_dict(),
        "pos_interp": model.pos_interp,
        "state_dict": state,
        "meta": dict(meta or {}),
    }
