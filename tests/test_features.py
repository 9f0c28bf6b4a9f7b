"""The feature extractor: taps, transforms, batch independence, the disk cache, 2-process extraction, datasets."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import torch

from evaluate.datasets import LabeledImages, apply_subset, fingerprint, load_split, read_subset_file, resolve_subset
from evaluate.protocols import features as feat
from pretrain.vit import build_vit, export_backbone
from sslcore.errors import DataError, SSLBenchError


@pytest.fixture
def femto():
    torch.manual_seed(0)
    return build_vit("vit_femto").eval()


def test_taps_layout(femto):
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():  # reference: timm's own embedding and blocks, run by hand
        h = femto.norm_pre(femto._pos_embed(femto.patch_embed(x)))
        h0 = femto.blocks[0](h)
        blocks = [femto.norm(h0), femto.norm(femto.blocks[1](h0))]
    cls2 = feat.tap_features(femto, x, "cls", 2)
    torch.testing.assert_close(cls2, torch.cat([blocks[0][:, 0], blocks[1][:, 0]], dim=1))
    mean = feat.tap_features(femto, x, "mean_patch")
    torch.testing.assert_close(mean, blocks[1][:, 1:].mean(1))
    both = feat.tap_features(femto, x, "cls+mean_patch", 2)
    assert both.shape == (3, 96)
    torch.testing.assert_close(both, torch.cat([cls2, mean], dim=1))
    inter = feat.tap_features(femto, x, "cls+mean_patch", 1, interleave=True)
    torch.testing.assert_close(inter[:, 0::2], blocks[1][:, 0])  # DINO v1 order: c0, a0, c1, a1, ...
    torch.testing.assert_close(inter[:, 1::2], mean)
    with pytest.raises(SSLBenchError):
        feat.check_taps("cls", 3, False, depth=2)
    with pytest.raises(SSLBenchError):
        feat.check_taps("cls", 2, True)


def test_transform_sizes(femto):
    cfg = feat.FeatureConfig(crop=64)
    assert feat.resolve_sizes(cfg, femto) == (73, 64)
    assert feat.resolve_sizes(feat.FeatureConfig(crop=224), femto) == (256, 224)
    assert feat.resolve_sizes(feat.FeatureConfig(), femto) == (37, 32)  # the model's own resolution
    assert feat.resolve_sizes(feat.FeatureConfig(crop=224, resize_ratio=1.0), femto) == (224, 224)
    from PIL import Image

    out = feat.eval_transform(73, 64)(Image.new("RGB", (128, 96), (255, 0, 0)))
    assert out.shape == (3, 64, 64)
    expected = (1.0 - feat.IMAGENET_MEAN[0]) / feat.IMAGENET_STD[0]
    assert out[0].mean().item() == pytest.approx(expected, abs=1e-5)


def test_batch_split_equals_full_batch(femto, shapes_root):
    images = load_split(shapes_root / "classification", "val")
    transform = feat.eval_transform(37, 32)
    one = feat.extract_features(femto, images, transform, feat.FeatureConfig(batch_size=1000, progress=False))
    split = feat.extract_features(femto, images, transform, feat.FeatureConfig(batch_size=3, progress=False))
    assert one[0].shape == (len(images), 32) and one[0].dtype == torch.float32
    torch.testing.assert_close(split[0], one[0], rtol=1e-5, atol=1e-5)
    assert one[1].tolist() == images.labels


def test_cache_hit_on_rerun_and_miss_on_new_key(femto, shapes_root, monkeypatch):
    images = load_split(shapes_root / "classification", "val")
    cfg = feat.FeatureConfig(progress=False)
    info = {"sha256": "abc", "which": "teacher", "pos_interp": "dino"}
    first = feat.get_features(femto, info, images, cfg)
    assert not first.from_cache
    assert len(list((Path(os.environ["SSLBENCH_CACHE"]) / "features").glob("*.pt"))) == 1

    def boom(*args, **kwargs):
        raise AssertionError("recomputed instead of reading the cache")

    monkeypatch.setattr(feat, "extract_features", boom)
    second = feat.get_features(femto, info, images, cfg)
    assert second.from_cache
    assert torch.equal(second.features, first.features) and torch.equal(second.labels, first.labels)
    for changed_info, changed_cfg in [
        ({**info, "sha256": "abd"}, cfg),
        ({**info, "pos_interp": "timm"}, cfg),
        (info, feat.FeatureConfig(taps="mean_patch", progress=False)),
        (info, feat.FeatureConfig(crop=24, progress=False)),
    ]:
        with pytest.raises(AssertionError, match="recomputed"):
            feat.get_features(femto, changed_info, images, changed_cfg)


def test_in_memory_model_is_hashed(femto):
    other = build_vit("vit_femto")
    assert feat.model_sha256(femto) == feat.model_sha256(femto)
    assert feat.model_sha256(femto) != feat.model_sha256(other)


def test_fingerprint_tracks_files(tmp_path, shapes_root):
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(shapes_root / "classification" / "val", root / "val")
    base = fingerprint(load_split(root, "val"))
    assert fingerprint(load_split(root, "val")) == base
    victim = next((root / "val").rglob("*.png"))
    os.utime(victim, ns=(time.time_ns(), time.time_ns() + 10**9))
    touched = fingerprint(load_split(root, "val"))
    assert touched != base
    shutil.copy(victim, victim.with_name("extra_99999.png"))
    assert fingerprint(load_split(root, "val")) not in (base, touched)


def test_subsets(shapes_root):
    root = shapes_root / "classification"
    train = load_split(root, "train")
    names = read_subset_file(resolve_subset(root, "10percent"))
    sub = apply_subset(train, names)
    assert len(sub) == len(names) and {os.path.basename(p) for p, _ in sub.samples} == set(names)
    for path, label in sub.samples:
        assert os.path.basename(path).split("_")[0] == sub.classes[label]
    with pytest.raises(DataError, match="not in"):
        apply_subset(train, ["nosuch_00000.png"])
    misfiled = LabeledImages(root, ("a", "b"), (("/x/a/b_001.png", 0),))
    with pytest.raises(DataError, match="stored under class 'a'"):
        apply_subset(misfiled, ["b_001.png"])
    with pytest.raises(DataError):
        load_split(root, "nosplit")


def _worker(rank: int, world: int, init: str, ckpt: str, root: str, out: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        payload = torch.load(ckpt, weights_only=True)
        model = build_vit("vit_femto")
        model.load_state_dict(payload["state_dict"], strict=False)
        images = load_split(root, "val")
        cfg = feat.FeatureConfig(batch_size=4, progress=False, device="cpu")
        feats, labels = feat.extract_features(model, images, feat.eval_transform(37, 32), cfg)
        torch.save({"features": feats, "labels": labels}, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_process_extraction_equals_single_process(femto, shapes_root, tmp_path):
    import torch.multiprocessing as mp

    ckpt = tmp_path / "femto.pt"
    torch.save(export_backbone(femto), ckpt)
    root = str(shapes_root / "classification")
    init = f"file://{tmp_path / 'rendezvous'}"
    out = str(tmp_path / "feats")
    mp.spawn(_worker, args=(2, init, str(ckpt), root, out), nprocs=2, join=True)
    images = load_split(root, "val")
    cfg = feat.FeatureConfig(batch_size=4, progress=False, device="cpu")
    single, labels = feat.extract_features(femto, images, feat.eval_transform(37, 32), cfg)
    for rank in range(2):
        got = torch.load(f"{out}.{rank}", weights_only=True)
        assert torch.equal(got["labels"], labels)
        assert torch.equal(got["features"], single)
