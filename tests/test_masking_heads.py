"""Block masks (iBOT/BEiT rule), the per-image mask stream of the data pipeline, and DINO's head."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pretrain.heads import DINOHead, WeightNormLinear
from pretrain.masking import block_mask, draw_mask, random_mask, sample_ratio


def test_sample_ratio_picks_zero_or_the_spread_range():
    torch.manual_seed(0)
    ratios = torch.tensor([sample_ratio((0.0, 0.3), (0.0, 0.2)) for _ in range(2000)])
    zero = ratios == 0
    assert 0.45 < float(zero.float().mean()) < 0.55  # one pair of two, chosen uniformly
    assert float(ratios[~zero].min()) >= 0.1 and float(ratios[~zero].max()) <= 0.5
    assert abs(float(ratios[~zero].mean()) - 0.3) < 0.01
    with pytest.raises(ValueError, match="within"):
        sample_ratio((0.1,), (0.2,))


@pytest.mark.parametrize("h,w", [(14, 14), (12, 7), (4, 4)])
def test_block_masks_cover_about_the_target_and_never_more(h, w):
    torch.manual_seed(1)
    for ratio in (0.1, 0.3, 0.5):
        counts = [int(block_mask(h, w, ratio).sum()) for _ in range(200)]
        target = ratio * h * w
        assert max(counts) < target + 1 + (min(h, w) // 3) ** 2  # BEiT stops once the target is reached
        assert sum(counts) / len(counts) > 0.6 * target  # and gets close to it on average
    assert int(block_mask(h, w, 0.0).sum()) == 0


def test_block_masks_are_rectangles_unions_not_scattered_patches():
    torch.manual_seed(2)
    mask = block_mask(14, 14, 0.3).float()

    # a mask of blocks has most masked patches with a masked 4-neighbour; a random mask of 30 % mostly has not
    def neighbour_fraction(m):
        nb = torch.zeros_like(m)
        nb[1:] += m[:-1]
        nb[:-1] += m[1:]
        nb[:, 1:] += m[:, :-1]
        nb[:, :-1] += m[:, 1:]
        return float(((nb > 0) & (m > 0)).sum() / m.sum())

    assert neighbour_fraction(mask) > 0.95
    assert int(random_mask(14, 14, 0.3).sum()) == int(0.3 * 196)
    with pytest.raises(ValueError, match="unknown mask shape"):
        draw_mask(4, 4, (0.3,), (0.0,), shape="grid")


def test_dataset_masks_are_seeded_per_image_and_epoch(tmp_path):
    from PIL import Image

    from pretrain.config import DataConfig
    from pretrain.crops import MultiCropAugment
    from pretrain.data import MultiCropDataset
    from pretrain.views import ViewPlan, collate

    for i in range(3):
        Image.new("RGB", (40, 30), (40 * i, 20, 90)).save(tmp_path / f"{i}.png")
    samples = [(str(tmp_path / f"{i}.png"), 0) for i in range(3)]
    cfg = DataConfig(global_size=32, local_size=16, local_crops=1)
    plan = ViewPlan(2, 1, patch_size=8, masks=True, mask_means=(0.5,), mask_spreads=(0.0,))
    ds = MultiCropDataset(samples, MultiCropAugment(cfg), seed=3, plan=plan)
    a, b = ds[(1, 4)], ds[(1, 4)]
    assert [m.shape for m in a["masks"]] == [(4, 4), (4, 4)]
    assert all(torch.equal(x, y) for x, y in zip(a["masks"], b["masks"]))
    assert all(torch.equal(x, y) for x, y in zip(a["views"], b["views"]))
    assert any(not torch.equal(x, y) for x, y in zip(a["masks"], ds[(1, 5)]["masks"]))
    batch = collate([ds[(i, 0)] for i in range(3)], num_global=2)
    assert batch.masks[0].shape == (3, 4, 4) and len(batch.globals) == 2 and len(batch.locals) == 1
    assert batch.boxes.shape == (3, 3, 4) and batch.flips.shape == (3, 3)
    late = ViewPlan(2, 1, patch_size=8, masks=True, mask_means=(0.5,), mask_spreads=(0.0,), mask_start_epoch=2)
    early = MultiCropDataset(samples, MultiCropAugment(cfg), seed=3, plan=late)[(0, 1)]
    assert not any(m.any() for m in early["masks"])  # before the start epoch: all-False masks


def test_weight_norm_linear_equals_torch_weight_norm_and_keeps_dino_keys():
    torch.manual_seed(0)
    ours = WeightNormLinear(6, 4, fix_norm=False)
    with torch.no_grad():
        ours.weight_g.uniform_(0.5, 2.0)
    ref = torch.nn.utils.weight_norm(nn.Linear(6, 4, bias=False))
    ref.load_state_dict(ours.state_dict())  # weight_g / weight_v, DINO's keys
    x = torch.randn(3, 6)
    torch.testing.assert_close(ours(x), ref(x))
    assert not WeightNormLinear(6, 4, fix_norm=True).weight_g.requires_grad


def test_dino_head_layout_and_bottleneck_is_unit_norm():
    torch.manual_seed(0)
    head = DINOHead(32, out_dim=50, hidden_dim=24, bottleneck_dim=8, nlayers=3)
    keys = set(head.state_dict())
    assert keys == {
        "mlp.0.weight", "mlp.0.bias", "mlp.2.weight", "mlp.2.bias", "mlp.4.weight", "mlp.4.bias",
        "last_layer.weight_g", "last_layer.weight_v",
    }  # fmt: skip
    x = torch.randn(5, 32)
    torch.testing.assert_close(head.bottleneck(x).norm(dim=-1), torch.ones(5))
    assert head(x).shape == (5, 50) and head.forward_patches(torch.randn(2, 3, 32)).shape == (2, 3, 50)
    separate = DINOHead(32, out_dim=50, hidden_dim=24, bottleneck_dim=8, patch_out_dim=20)
    assert separate.forward_patches(torch.randn(2, 3, 32)).shape == (2, 3, 20)
    bn = DINOHead(32, out_dim=50, hidden_dim=24, bottleneck_dim=8, use_bn=True)
    assert isinstance(bn.mlp[1], nn.BatchNorm1d)
