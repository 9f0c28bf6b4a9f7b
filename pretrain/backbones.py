"""Backbones for pretraining: :class:`pretrain.vit.SSLViT` configured as BAM (MoCo v3 recipe) or as plain DINO.

BAM's ViT (paper App. 0.C; official ``models/vit.py``, a timm ``VisionTransformer``):

* ViT-S/16 with **12 heads** of width 32 (``ARCHS["vit_small_12h"]``; timm's ViT-S has 6) or ViT-B/16; qkv bias,
  LayerNorm eps 1e-6, CLS token after the final norm as the output.
* ``pos_embed="sincos"``: the fixed 2-D sin-cos table of MoCo v3 (:func:`sincos_2d`, temperature 10000) with a zero
  row for the CLS token, stored in the state dict with ``requires_grad=False``. Local crops use the stored table
  resampled to their grid by :class:`SSLViT` (``pos_interp="timm"`` is what the official code's timm model does).
* ``freeze_patch_embed=True``: MoCo v3's random patch projection (``patch_embed.proj`` never trained).
* ``init="moco"``: timm's ``weight_init="moco"``, which the official code uses: qkv weights uniform
  +-sqrt(6 / (out/3 + in)) (Q, K and V treated as separate matrices), other Linear layers Xavier-uniform, zero biases,
  CLS token N(0, 1e-6); the patch projection keeps PyTorch's default conv init (MoCo v3's own code Xavier-inits it;
  timm and BAM do not).
* drop path (0 in the official scripts), fused ``scaled_dot_product_attention`` (timm's default), dynamic image size.

ResNet and CAFormer (``resnet50``, ``caformer_m36`` and their tiny test variants) are :mod:`pretrain.pooled`
backbones: :func:`backbone_from_config` builds them when ``model.arch`` names one; the ViT-only options
(``pos_embed``, ``freeze_patch_embed``, ``init``, ``pos_interp``) must then keep their defaults.

The DINO baseline is ``build_backbone("vit_small")``: learned positional embedding, timm init (``init="dino"`` also
draws the CLS token and positional table from N(0, 0.02) truncated, as DINO's ``vision_transformer.py``).
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import torch
from torch import Tensor

from pretrain.config import ModelConfig
from pretrain.pooled import POOLED_ARCHS, build_pooled
from pretrain.vit import ARCHS, PosInterp, SSLViT, ViTArch

Init = Literal["timm", "moco", "dino"]
INITS = ("timm", "moco", "dino")
POS_EMBEDS = ("learned", "sincos")


def sincos_2d(grid_h: int, grid_w: int, dim: int, temperature: float = 10000.0) -> Tensor:
    """Fixed 2-D sin-cos positional table, (grid_h * grid_w, dim), tokens in row-major order (index y * grid_w + x).

    With F = dim / 4 and omega_d = temperature^(-d / F) for d < F, the token at row y, column x gets
    ``[sin(y omega), cos(y omega), sin(x omega), cos(x omega)]`` (four blocks of F). For square grids this is exactly
    MoCo v3's ``build_2d_sincos_position_embedding``, whose first coordinate (named "w" there, from
    ``meshgrid(grid_w, grid_h)``) is the slow index of the flattened grid, i.e. the row.
    """
    if dim % 4:
        raise ValueError(f"sin-cos positional embedding needs a width divisible by 4, got {dim}")
    quarter = dim // 4
    omega = temperature ** -(torch.arange(quarter, dtype=torch.float32) / quarter)
    ys, xs = torch.meshgrid(
        torch.arange(grid_h, dtype=torch.float32), torch.arange(grid_w, dtype=torch.float32), indexing="ij"
    )
    out_y = ys.flatten()[:, None] * omega[None, :]
    out_x = xs.flatten()[:, None] * omega[None, :]
    return torch.cat([out_y.sin(), out_y.cos(), out_x.sin(), out_x.cos()], dim=1)


def build_backbone(
    arch: str | ViTArch,
    *,
    pos_embed: Literal["learned", "sincos"] | None = None,
    freeze_patch_embed: bool = False,
    init: Init = "timm",
    drop_path: float = 0.0,
    pos_interp: PosInterp = "dino",
    mask_token: bool = False,
) -> SSLViT:
    """An :class:`SSLViT` for pretraining (see the module docstring).

    Args:
        arch: a name in :data:`pretrain.vit.ARCHS` or a :class:`ViTArch`.
        pos_embed: ``"learned"`` or ``"sincos"`` (fixed, non-trainable); ``None`` keeps ``arch.pos_embed``. The
            choice is written into ``model.arch`` so exported backbones record it.
        freeze_patch_embed: keep the random patch projection fixed (``requires_grad=False``).
        init: ``"timm"`` (timm's default), ``"moco"`` (timm's MoCo v3 init, BAM's) or ``"dino"``.
        drop_path: stochastic-depth rate (linearly increasing over blocks, timm's rule).
        pos_interp: positional resampling rule for other input sizes (``"dino"`` or ``"timm"``).
        mask_token: add the learned mask token of masked image modelling (iBOT); never exported.
    """
    if isinstance(arch, str):
        if arch not in ARCHS:
            raise ValueError(f"unknown architecture {arch!r} (valid: {', '.join([*ARCHS, *POOLED_ARCHS])})")
        arch = ARCHS[arch]
    if pos_embed is not None:
        if pos_embed not in POS_EMBEDS:
            raise ValueError(f"unknown pos_embed {pos_embed!r} (valid: {', '.join(POS_EMBEDS)})")
        arch = dataclasses.replace(arch, pos_embed=pos_embed)
    if init not in INITS:
        raise ValueError(f"unknown init {init!r} (valid: {', '.join(INITS)})")
    model = SSLViT(arch, pos_interp=pos_interp, drop_path_rate=drop_path, mask_token=mask_token)
    if init == "moco":
        model.init_weights("moco")
    elif init == "dino":
        torch.nn.init.trunc_normal_(model.cls_token, std=0.02)
    if arch.pos_embed == "sincos":
        grid_h, grid_w = model.patch_embed.grid_size
        table = sincos_2d(grid_h, grid_w, arch.embed_dim)
        with torch.no_grad():
            model.pos_embed.copy_(torch.cat([table.new_zeros(1, arch.embed_dim), table])[None])
        model.pos_embed.requires_grad_(False)
    if freeze_patch_embed:
        model.patch_embed.proj.requires_grad_(False)
    return model


VIT_ONLY_DEFAULTS = {"pos_embed": "learned", "freeze_patch_embed": False, "init": "timm", "pos_interp": "dino"}


def backbone_from_config(m: ModelConfig, mask_token: bool = False) -> SSLViT:
    """:func:`build_backbone` from a ``model`` config section (a :mod:`pretrain.pooled` backbone for a ResNet or
    CAFormer name)."""
    if m.arch in POOLED_ARCHS:
        if mask_token:
            raise ValueError(f"model.arch={m.arch}: masked image modelling needs a ViT (patch tokens)")
        for key, default in VIT_ONLY_DEFAULTS.items():
            if getattr(m, key) != default:
                raise ValueError(
                    f"model.{key}={getattr(m, key)!r} applies to ViTs only; model.arch={m.arch} needs {default!r}"
                )
        return build_pooled(m.arch, drop_path=m.drop_path)
    return build_backbone(
        m.arch,
        pos_embed=m.pos_embed,
        freeze_patch_embed=m.freeze_patch_embed,
        init=m.init,
        drop_path=m.drop_path,
        pos_interp=m.pos_interp,
        mask_token=mask_token,
    )
