"""ContrastiveCrop: boxes from attention (hand-derived), crop sampling bounds and Beta statistics, box store."""

from __future__ import annotations

import pytest
import torch

from pretrain.backbones import build_backbone
from pretrain.contrastive_crop import BoxStore, boxes_for_images, boxes_from_attention, sample_crop


def _blob_attention() -> torch.Tensor:
    """(1, 2 heads, 16) on a 4x4 grid: head 0 peaks at patch (row 1, col 2); head 1 is flat."""
    attn = torch.full((1, 2, 16), 0.02)
    attn[0, 0, 1 * 4 + 2] = 0.7
    return attn


def test_blob_box_on_patch_grid_and_upsampled():
    attn = _blob_attention()
    # patch level: only patch (1, 2) survives min-max + threshold -> rows [1/4, 2/4), cols [2/4, 3/4)
    assert boxes_from_attention(attn, (4, 4)).tolist() == [[0.25, 0.5, 0.5, 0.75]]
    # upsampled x4 to 16x16 (bilinear, align_corners=False): the value at pixel (p, q) is
    # (1 - |dy|)(1 - |dx|) with d = (p + 0.5) / 4 - 0.5 - k; the best column of a row has |dx| = 1/8, so a row is
    # salient when (1 - |dy|) * 7/8 > 0.1, i.e. |dy| < 0.8857: rows 2..9 for k = 1, columns 6..13 for k = 2.
    box = boxes_from_attention(attn, (4, 4), heatmap_size=(16, 16))
    assert box.tolist() == [[2 / 16, 6 / 16, 10 / 16, 14 / 16]]
    # the same map given per head as (B, heads, h, w), or summed as (B, h, w)
    assert torch.equal(boxes_from_attention(attn.reshape(1, 2, 4, 4), (4, 4)), boxes_from_attention(attn, (4, 4)))
    assert torch.equal(boxes_from_attention(attn.sum(1).reshape(1, 4, 4), (4, 4)), boxes_from_attention(attn, (4, 4)))


def test_threshold_and_flat_map():
    maps = torch.zeros(3, 4, 4)
    maps[:2, 0, 0] = 1.0
    maps[:2, 3, 3] = 0.5
    boxes = boxes_from_attention(maps, (4, 4), threshold=0.1)
    assert boxes[0].tolist() == [0.0, 0.0, 1.0, 1.0]  # both blobs
    assert boxes_from_attention(maps, (4, 4), threshold=0.6)[1].tolist() == [0.0, 0.0, 0.25, 0.25]
    assert boxes[2].tolist() == [0.0, 0.0, 1.0, 1.0]  # flat map: nothing salient -> whole image
    with pytest.raises(ValueError, match="patch grid"):
        boxes_from_attention(torch.zeros(1, 2, 15), (4, 4))


def test_boxes_for_images_from_a_vit():
    torch.manual_seed(0)
    model = build_backbone("vit_femto").train()
    images = torch.randn(3, 3, 32, 32)
    boxes = boxes_for_images(model, images)
    assert model.training  # mode restored
    attn = model.eval().forward_tokens(images, attn=True).attn[:, :, 0, 1:]
    assert torch.equal(boxes, boxes_from_attention(attn, (4, 4), heatmap_size=(32, 32)))
    assert boxes.shape == (3, 4) and (boxes[:, :2] < boxes[:, 2:]).all()
    assert ((boxes >= 0) & (boxes <= 1)).all()


@pytest.mark.parametrize(
    "box", [(0.0, 0.0, 1.0, 1.0), (0.1, 0.6, 0.3, 0.9), (0.9, 0.9, 0.95, 1.0), (0.5, 0.5, 0.5, 0.5)]
)
def test_crops_stay_inside_and_centres_follow_the_box(box):
    torch.manual_seed(0)
    height, width = 120, 200
    for _ in range(300):
        top, left, h, w = sample_crop(height, width, (0.05, 0.6), (3 / 4, 4 / 3), box)
        assert 0 <= top and top + h <= height and 0 <= left and left + w <= width
        assert 0.05 * height * width * 0.9 <= h * w <= 0.6 * height * width * 1.1
        # centre between the box edges, unless the image border pushes the crop inwards
        cy_lo = min(max(height * box[0], h / 2), height - h / 2) - 1
        cy_hi = min(max(height * box[2], h / 2), height - h / 2)
        assert cy_lo <= top + h / 2 <= cy_hi
        cx_lo = min(max(width * box[1], w / 2), width - w / 2) - 1
        cx_hi = min(max(width * box[3], w / 2), width - w / 2)
        assert cx_lo <= left + w / 2 <= cx_hi


@pytest.mark.parametrize(("alpha", "variance"), [(0.6, 1 / (4 * 2.2)), (1.0, 1 / 12)])
def test_beta_position_statistics(alpha, variance):
    # fixed 100x100 crop in a 1000x1000 image with the full box: top = floor(900 * beta)
    torch.manual_seed(0)
    draws = torch.tensor(
        [sample_crop(1000, 1000, (0.01, 0.01), (1.0, 1.0), (0, 0, 1, 1), alpha=alpha)[0] for _ in range(3000)]
    )
    beta = (draws.double() + 0.5) / 900
    assert beta.mean().item() == pytest.approx(0.5, abs=0.02)
    assert beta.var().item() == pytest.approx(variance, rel=0.08)  # Beta(a, a): 1 / (4 (2a + 1))
    assert draws.min() >= 0 and draws.max() <= 900


def test_centre_crop_fallback_and_reproducibility():
    # a crop wider than the image is impossible for every try -> centre crop within the ratio bounds
    assert sample_crop(10, 100, (1.0, 1.0), (1.0, 1.0), (0, 0, 1, 1)) == (0, 45, 10, 10)
    torch.manual_seed(5)
    first = [sample_crop(64, 64, (0.2, 1.0), (0.75, 1.33), (0.2, 0.2, 0.7, 0.7)) for _ in range(5)]
    torch.manual_seed(5)
    assert [sample_crop(64, 64, (0.2, 1.0), (0.75, 1.33), (0.2, 0.2, 0.7, 0.7)) for _ in range(5)] == first


def test_box_store_update_and_state_round_trip():
    store = BoxStore(5)
    assert len(store) == 5 and store[3].tolist() == [0.0, 0.0, 1.0, 1.0] and store.epoch == -1
    store.update(torch.tensor([1, 4]), torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.5, 0.5, 0.9, 0.8]]), epoch=40)
    state = store.state_dict()
    other = BoxStore(5)
    other.load_state_dict(state)
    assert torch.equal(other.boxes, store.boxes) and other.epoch == 40
    assert other[4].tolist() == pytest.approx([0.5, 0.5, 0.9, 0.8])
    assert other[0].tolist() == [0.0, 0.0, 1.0, 1.0]
    state["boxes"][0, 0] = 0.3  # the state is a copy
    assert store.boxes[0, 0].item() == 0.0
    with pytest.raises(ValueError, match="dataset needs"):
        BoxStore(4).load_state_dict(state)
    with pytest.raises(ValueError, match="shape"):
        store.update(torch.tensor([0]), torch.zeros(2, 4), epoch=1)
