"""Backbones: the sin-cos table, frozen parts, MoCo init, parameter counts of ViT-S/16 and ViT-B/16."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pretrain.backbones import build_backbone, sincos_2d
from pretrain.vit import ARCHS, ViTArch


def mocov3_table(n: int, dim: int) -> np.ndarray:
    """MoCo v3's build_2d_sincos_position_embedding for an n x n grid, written literally (no CLS row)."""
    grid_w, grid_h = np.meshgrid(np.arange(n, dtype=np.float64), np.arange(n, dtype=np.float64), indexing="ij")
    pos_dim = dim // 4
    omega = 1.0 / 10000 ** (np.arange(pos_dim) / pos_dim)
    out_w = grid_w.flatten()[:, None] * omega[None]
    out_h = grid_h.flatten()[:, None] * omega[None]
    return np.concatenate([np.sin(out_w), np.cos(out_w), np.sin(out_h), np.cos(out_h)], axis=1)


def test_sincos_matches_mocov3_and_known_values():
    table = sincos_2d(14, 14, 384)
    assert table.shape == (196, 384)
    np.testing.assert_allclose(table.numpy(), mocov3_table(14, 384), atol=1e-5)
    # token (y=0, x=0): sines 0, cosines 1
    assert torch.equal(table[0], torch.cat([torch.zeros(96), torch.ones(96), torch.zeros(96), torch.ones(96)]))
    # token (y=1, x=2) = index 16; omega_0 = 1 and omega_1 = 10000^(-1/96)
    y, x, w1 = 1.0, 2.0, 10000 ** (-1 / 96)
    row = table[1 * 14 + 2]
    assert row[0].item() == pytest.approx(math.sin(y), abs=1e-6)
    assert row[1].item() == pytest.approx(math.sin(y * w1), abs=1e-6)
    assert row[96].item() == pytest.approx(math.cos(y), abs=1e-6)
    assert row[192].item() == pytest.approx(math.sin(x), abs=1e-6)
    assert row[288 + 1].item() == pytest.approx(math.cos(x * w1), abs=1e-6)
    # rectangular grid: rows vary along y only in the first half
    rect = sincos_2d(2, 3, 8)
    assert torch.equal(rect[0, :4], rect[2, :4]) and not torch.equal(rect[0, :4], rect[3, :4])
    with pytest.raises(ValueError, match="divisible by 4"):
        sincos_2d(2, 2, 6)


def test_bam_backbone_fixed_pos_embed_frozen_patch_and_dynamic_size():
    torch.manual_seed(0)
    model = build_backbone("vit_femto", pos_embed="sincos", freeze_patch_embed=True, init="moco", pos_interp="timm")
    assert model.arch.pos_embed == "sincos" and model.pos_interp == "timm"
    pos = model.pos_embed
    assert pos.shape == (1, 17, 32) and not pos.requires_grad
    assert torch.equal(pos[0, 0], torch.zeros(32))  # CLS row
    assert torch.allclose(pos[0, 1:], sincos_2d(4, 4, 32))
    assert "pos_embed" in model.state_dict()
    frozen = sorted(n for n, p in model.named_parameters() if not p.requires_grad)
    assert frozen == ["patch_embed.proj.bias", "patch_embed.proj.weight", "pos_embed"]
    # global 32x32 and local 16x16 crops; gradients never reach the frozen parameters
    out = model(torch.randn(2, 3, 32, 32)).sum() + model(torch.randn(2, 3, 16, 16)).sum()
    out.backward()
    assert all(p.grad is None for n, p in model.named_parameters() if n in frozen)
    assert model.blocks[0].attn.qkv.weight.grad is not None
    assert all(block.attn.fused_attn for block in model.blocks)


def test_moco_init():
    torch.manual_seed(0)
    model = build_backbone(ViTArch(patch_size=8, embed_dim=96, depth=2, num_heads=12, img_size=32), init="moco")
    qkv = model.blocks[0].attn.qkv.weight  # (3*96, 96)
    bound = math.sqrt(6 / (96 + 96))  # Q, K, V each a 96 x 96 matrix
    assert qkv.abs().max() <= bound and qkv.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.02)
    fc1 = model.blocks[0].mlp.fc1.weight  # (384, 96): Xavier uniform
    xavier = math.sqrt(6 / (384 + 96))
    assert fc1.abs().max() <= xavier and fc1.std().item() == pytest.approx(xavier / math.sqrt(3), rel=0.02)
    assert all(torch.equal(b, torch.zeros_like(b)) for n, b in model.named_parameters() if n.endswith("qkv.bias"))
    assert model.cls_token.std().item() < 1e-5
    timm_init = build_backbone("vit_femto")
    assert timm_init.blocks[0].attn.qkv.weight.std().item() == pytest.approx(0.02, rel=0.1)
    assert build_backbone("vit_femto", init="dino").cls_token.std().item() == pytest.approx(0.02, rel=0.5)


@pytest.mark.parametrize(
    ("arch", "total", "trainable"),
    [
        # timm vit_small_patch16_224 / vit_base_patch16_224 without head: 21,665,664 and 85,798,656 parameters;
        # frozen: patch projection (3*16*16*D + D) and the 197 x D positional table
        ("vit_small_12h", 21_665_664, 21_665_664 - 295_296 - 75_648),
        ("vit_base", 85_798_656, 85_798_656 - 590_592 - 151_296),
    ],
)
def test_parameter_counts(arch, total, trainable):
    with torch.device("meta"):
        model = build_backbone(arch, pos_embed="sincos", freeze_patch_embed=True, init="moco")
    assert model.blocks[0].attn.num_heads == 12
    assert sum(p.numel() for p in model.parameters()) == total
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == trainable


def test_dino_baseline_and_errors():
    model = build_backbone(ARCHS["vit_femto"], drop_path=0.1)
    assert model.arch.pos_embed == "learned" and model.pos_embed.requires_grad
    assert model.blocks[-1].drop_path1.drop_prob == pytest.approx(0.1)
    with pytest.raises(ValueError, match="unknown architecture"):
        build_backbone("vit_huge")
    with pytest.raises(ValueError, match="unknown init"):
        build_backbone("vit_femto", init="jax")
    with pytest.raises(ValueError, match="unknown pos_embed"):
        build_backbone("vit_femto", pos_embed="rope")
