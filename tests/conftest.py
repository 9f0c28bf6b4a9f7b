"""Shared fixtures: a tiny ViT, generated ShapesWorld data, the test device.

Set SSLBENCH_TEST_DEVICE=cuda to rerun the suite on a GPU.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def device() -> str:
    return os.environ.get("SSLBENCH_TEST_DEVICE", "cpu")


@pytest.fixture
def tiny_vit():
    """A timm ViT small enough for CPU tests: patch 8, width 32, depth 2, 2 heads, 32x32 input."""
    import timm
    import torch

    torch.manual_seed(0)
    return timm.models.vision_transformer.VisionTransformer(
        img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=0
    ).eval()


@pytest.fixture
def femto_file(tmp_path) -> Path:
    """An exported random vit_femto backbone (sslbench format), seed 0."""
    import torch

    from pretrain.vit import build_vit, export_backbone

    torch.manual_seed(0)
    path = tmp_path / "femto.pt"
    torch.save(export_backbone(build_vit("vit_femto")), path)
    return path


@pytest.fixture(scope="session")
def shapes_root(tmp_path_factory) -> Path:
    """A tiny ShapesWorld tree (every format), generated once per test session."""
    from evaluate.shapesworld.generate import PRESETS, generate

    root = tmp_path_factory.mktemp("shapesworld") / "sw"
    generate(root, PRESETS["tiny"], seed=0, workers=1)
    return root


@pytest.fixture(scope="session")
def shapes_cls(tmp_path_factory) -> Path:
    """A classification-only ShapesWorld (10 classes, 40 images per class at 32x32: 300 train / 100 val), generated
    once per session for the pretraining runs that must beat their step-0 model on k-NN."""
    import dataclasses

    from evaluate.shapesworld.generate import PRESETS, generate

    root = tmp_path_factory.mktemp("sw_cls") / "sw"
    spec = dataclasses.replace(PRESETS["tiny"], cls_per_class=40)
    generate(root, spec, seed=0, parts=("classification",), workers=1)
    return root / "classification"


@pytest.fixture(autouse=True)
def _isolated_store(tmp_path, monkeypatch):
    """Every test writes result records and caches into its own temporary directories."""
    monkeypatch.setenv("SSLBENCH_RESULTS", str(tmp_path / "records"))
    monkeypatch.setenv("SSLBENCH_CACHE", str(tmp_path / "cache"))
    if SHARED_DATA.is_dir() and not os.environ.get("SSLBENCH_ASSET_DIRS"):
        monkeypatch.setenv("SSLBENCH_ASSET_DIRS", str(SHARED_DATA))
