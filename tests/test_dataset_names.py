"""Issue 17 item 8: records name the dataset from its root unless ``data.name`` is set (never 'shapesworld' for a
real dataset)."""

from __future__ import annotations

import shutil

from evaluate.protocols.evalrun import DataConfig, dataset_label, dataset_name


def test_name_from_root(tmp_path, shapes_root):
    imagenet = tmp_path / "ImageNet"
    shutil.copytree(shapes_root / "classification", imagenet)
    assert dataset_name(DataConfig(root=str(imagenet))) == "imagenet"
    assert dataset_name(DataConfig(root=str(shapes_root / "classification"))) == "shapesworld"
    assert dataset_name(DataConfig(root=str(shapes_root / "transfer"))) == "shapesworld-transfer"
    assert dataset_name(DataConfig(root=str(imagenet), name="in1k")) == "in1k"
    assert dataset_label(DataConfig(root=str(imagenet), subset="1percent")) == "imagenet-1pct"


def test_knn_record_of_a_real_layout_is_not_shapesworld(tmp_path, shapes_root):
    from evaluate.protocols.knn import KNNConfig, run
    from evaluate.reporting.records import read_records
    from pretrain.vit import ARCHS, SSLViT

    root = tmp_path / "imagenet"
    shutil.copytree(shapes_root / "classification", root)
    cfg = KNNConfig()
    cfg.data.root, cfg.out, cfg.ks = str(root), str(tmp_path / "out"), [5]
    cfg.features.progress = False
    run(cfg, backbone=SSLViT(ARCHS["vit_femto"]))
    assert {r["dataset"] for r in read_records()} == {"imagenet"}
