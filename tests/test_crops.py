"""Multi-crop views: boxes and flips reproduce every crop; deterministic per (epoch, image); resumable sampler."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from pretrain.config import DataConfig
from pretrain.crops import MultiCropAugment
from pretrain.data import MultiCropDataset, ResumableSampler
from pretrain.views import collate

PLAIN = DataConfig(
    global_size=24,
    local_size=12,
    local_crops=3,
    jitter_p=0.0,
    grayscale_p=0.0,
    blur_p=(0.0, 0.0, 0.0),
    solarize_p=(0.0, 0.0, 0.0),
    mean=(0.0, 0.0, 0.0),
    std=(1.0, 1.0, 1.0),
)


def noise_image(width: int = 50, height: int = 40, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def test_box_and_flip_reproduce_each_crop():
    img = noise_image()
    torch.manual_seed(0)
    aug = MultiCropAugment(PLAIN)
    for _ in range(5):
        views, boxes, flips = aug(img)
        assert len(views) == 5 and boxes.shape == (5, 4) and flips.shape == (5,)
        assert [v.shape[-1] for v in views] == [24, 24, 12, 12, 12]
        for v, (box, flip) in enumerate(zip(boxes.tolist(), flips.tolist())):
            left, top, right, bottom = box
            assert 0 <= left < right <= 50 and 0 <= top < bottom <= 40
            size = views[v].shape[-1]
            ref = TF.resized_crop(
                img, int(top), int(left), int(bottom - top), int(right - left), [size, size], InterpolationMode.BICUBIC
            )
            ref = TF.to_tensor(TF.hflip(ref) if flip else ref)
            assert torch.equal(views[v], ref), (v, box, flip)


def test_crop_areas_follow_scales_and_flip_probability():
    img = noise_image(64, 64)
    torch.manual_seed(1)
    aug = MultiCropAugment(PLAIN)
    glob, loc, flips = [], [], []
    for _ in range(40):
        _, boxes, f = aug(img)
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) / 64**2
        glob += area[:2].tolist()
        loc += area[2:].tolist()
        flips += f.tolist()
    assert min(glob) >= 0.25 - 0.03 and max(glob) <= 1.0
    assert min(loc) >= 0.05 - 0.02 and max(loc) <= 0.25 + 0.03
    assert 0.3 < np.mean(flips) < 0.7
    never = MultiCropAugment(dataclasses.replace(PLAIN, flip_p=0.0))
    assert not never(img)[2].any()


def test_contrastive_crop_box_keeps_centres_between_box_edges():
    img = noise_image(80, 60)
    torch.manual_seed(2)
    aug = MultiCropAugment(dataclasses.replace(PLAIN, local_scale=(0.02, 0.05)))
    box = torch.tensor([0.0, 0.0, 0.2, 0.3])  # [h_min, w_min, h_max, w_max]: the top-left corner is salient
    for _ in range(20):
        _, boxes, _ = aug(img, box)
        cy = (boxes[:, 1] + boxes[:, 3]) / 2
        cx = (boxes[:, 0] + boxes[:, 2]) / 2
        local = slice(2, None)
        assert (cy[local] <= 0.2 * 60 + 1).all() and (cx[local] <= 0.3 * 80 + 1).all()


def test_dataset_items_depend_only_on_seed_epoch_index(tmp_path):
    paths = []
    for i in range(4):
        paths.append((str(tmp_path / f"{i}.png"), i % 2))
        noise_image(seed=i).save(paths[-1][0])
    ds = MultiCropDataset(paths, MultiCropAugment(DataConfig(global_size=16, local_size=8, local_crops=2)), seed=3)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = ds[(2, 5)]
    assert torch.equal(torch.get_rng_state(), state)  # the caller's generator is untouched
    torch.manual_seed(999)
    b = ds[(2, 5)]
    c = ds[(2, 6)]
    assert all(torch.equal(x, y) for x, y in zip(a["views"], b["views"])) and torch.equal(a["boxes"], b["boxes"])
    assert not torch.equal(a["boxes"], c["boxes"])
    batch = collate([ds[(i, 0)] for i in range(4)], num_global=2)
    assert [tuple(v.shape) for v in batch.views] == [(4, 3, 16, 16)] * 2 + [(4, 3, 8, 8)] * 2
    assert batch.boxes.shape == (4, 4, 4) and batch.label.tolist() == [0, 1, 0, 1] and batch.masks is None


def test_sampler_partitions_ranks_and_resumes_mid_epoch():
    full = ResumableSampler(50, 4, rank=0, world_size=1, seed=7)
    ranks = [ResumableSampler(50, 4, rank=r, world_size=2, seed=7) for r in range(2)]
    for s in ranks:
        s.set_epoch(3)
    full.set_epoch(3)
    r0, r1 = ([i for i, _ in s] for s in ranks)
    assert len(r0) == len(r1) == 24 and not set(r0) & set(r1)  # 6 batches of 4 per rank, drop_last
    perm = full.indices(3)
    assert sorted(r0 + r1) == sorted(perm[:48]) or set(r0 + r1) <= set(range(50))
    ranks[0].set_epoch(3, start_batch=2)
    assert [i for i, _ in ranks[0]] == r0[8:] and len(ranks[0]) == 16
    assert {e for _, e in ranks[0]} == {3}
    with pytest.raises(Exception, match="smaller than one global batch"):
        ResumableSampler(5, 4, world_size=2)


def test_sampler_span_equals_one_pass_per_epoch():
    """One pass over epochs [2, 5) from batch 3 yields each epoch's pairs as its own pass would, in order."""
    s = ResumableSampler(50, 4, rank=1, world_size=2, seed=7)
    s.set_epoch(2, start_batch=3, stop_epoch=5)
    spanned = list(s)
    assert len(spanned) == len(s) == (3 * 6 - 3) * 4
    expected = []
    for epoch, start in ((2, 3), (3, 0), (4, 0)):
        s.set_epoch(epoch, start_batch=start)
        expected += list(s)
    assert spanned == expected and [e for _, e in spanned[:12]] == [2] * 12 and spanned[12][1] == 3
    for bad in ((2, 0, 2), (2, 6, None), (2, -1, None)):
        with pytest.raises(ValueError, match="no batches"):
            s.set_epoch(*bad)


def test_weighted_knn_vote_hand_example():
    """The monitor's vote (evaluate.protocols.knn.knn_accuracy, handed to the trainer) on a hand-checked case."""
    from evaluate.protocols.knn import knn_accuracy

    def top1(test_labels, k):
        return knn_accuracy(train, labels, test, test_labels, ks=(k,), T=0.07, num_classes=2)[f"top1@k{k}"]

    train = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    labels = torch.tensor([0, 0, 1, 1])
    test = torch.tensor([[1.0, 0.05], [0.05, 1.0], [0.6, 0.4]])
    # k=1: nearest neighbours are train rows 0, 2 and 1 -> predictions 0, 1, 0
    assert top1(torch.tensor([0, 1, 1]), 1) == pytest.approx(200 / 3)
    # k=4: all train rows vote; exp(s / T) weights favour the class of the closer rows (0, 1, 0)
    assert top1(torch.tensor([0, 1, 0]), 4) == 100.0
