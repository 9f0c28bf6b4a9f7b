"""Projection heads: layer structure, key layout, shapes, init and parameter counts."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pretrain.heads import BAMProjector, ProjectionHead, count_parameters


def test_bam_projector_structure_and_keys():
    with torch.device("meta"):  # full size without allocating or initialising 35M weights
        head = BAMProjector(384)
    kinds = [type(m) for m in head.layers]
    assert kinds == [nn.Linear, nn.GELU, nn.Linear, nn.GELU, nn.Linear]
    assert [(m.in_features, m.out_features) for m in head.layers if isinstance(m, nn.Linear)] == [
        (384, 4096),
        (4096, 4096),
        (4096, 4096),
    ]
    assert list(head.state_dict()) == [f"layers.{i}.{p}" for i in (0, 2, 4) for p in ("weight", "bias")]
    # 384*4096 + 4096 + 2 * (4096*4096 + 4096)
    assert count_parameters(head) == 35_139_584


def test_bam_projector_init_and_forward_shape():
    torch.manual_seed(0)
    head = BAMProjector(32, hidden_dim=64, out_dim=48)
    for m in head.layers:
        if isinstance(m, nn.Linear):
            # trunc_normal_(std=0.02) truncates at +-2 in absolute units, as DINO/BAM: effectively N(0, 0.02)
            assert m.weight.std().item() == pytest.approx(0.02, rel=0.1)
            assert torch.equal(m.bias, torch.zeros_like(m.bias))
    assert head(torch.randn(5, 32)).shape == (5, 48)


def test_bam_projector_batch_norm_variant():
    head = BAMProjector(16, hidden_dim=32, out_dim=8, batch_norm=True)
    kinds = [type(m) for m in head.layers]
    assert kinds == [nn.Linear, nn.BatchNorm1d, nn.GELU] * 2 + [nn.Linear, nn.BatchNorm1d]
    linears = [m for m in head.layers if isinstance(m, nn.Linear)]
    assert all(m.bias is None for m in linears)
    norms = [m for m in head.layers if isinstance(m, nn.BatchNorm1d)]
    assert [n.affine for n in norms] == [True, True, False]
    out = head.train()(torch.randn(10, 16))
    assert out.shape == (10, 8)
    assert torch.allclose(out.mean(0), torch.zeros(8), atol=1e-5)  # affine-free output BN standardises features
    assert BAMProjector(16, 32, 8, batch_norm=True, last_bn_affine=True).layers[-1].affine


def test_projection_head_from_specs():
    head = ProjectionHead([(8, 16, nn.BatchNorm1d(16), nn.ReLU()), (16, 4, None, None)])
    assert [type(m) for m in head.layers] == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear]
    assert head.layers[0].bias is None and head.layers[3].bias is not None
    assert head(torch.randn(3, 8)).shape == (3, 4)
    assert BAMProjector(8, 16, 4, num_layers=1).layers[0].out_features == 4
    with pytest.raises(ValueError, match="layer 1 takes 5"):
        ProjectionHead([(8, 16, None, None), (5, 4, None, None)])
    with pytest.raises(ValueError, match="num_layers"):
        BAMProjector(8, num_layers=0)
