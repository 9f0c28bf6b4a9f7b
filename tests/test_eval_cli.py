"""End to end: ``sslbench eval knn|linear|logreg|cluster`` on the ShapesWorld fixture with an exported tiny ViT."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from evaluate.cli import main
from evaluate.reporting.records import read_records
from sslcore.io import sha256_file


@pytest.mark.slow
def test_all_four_protocols_from_the_cli(femto_file, shapes_root, tmp_path, capsys):
    data = str(shapes_root / "classification")
    common = ["--data", data, str(femto_file), "features.progress=false"]
    # positionals before, between and after options
    assert main(["eval", "knn", "features.batch_size=7", "--out", str(tmp_path / "knn"), *common]) == 0
    assert main(["eval", "linear", *common, "variant=grid", "epochs=3", "lrs=[0.01, 0.1]"]) == 0
    assert main(["eval", "linear", *common, "epochs=2", "mode=augmented", "batch_size=64"]) == 0
    assert main(["eval", "logreg", *common, "num_lambdas=3", "max_iter=200"]) == 0
    assert (
        main(
            [
                "eval",
                "logreg",
                *common,
                "num_lambdas=3",
                "data.subset=10percent",
                "data.name=shapesworld-10pct",
                "val_fraction=0.3",
            ]
        )
        == 0
    )
    assert main(["eval", "cluster", *common, "num_classes=[3, 10]", "instances=2", "n_init=2"]) == 0
    printed = capsys.readouterr().out
    assert "knn shapesworld: top1@k10=" in printed and "cluster C=10" in printed

    records = read_records(os.environ["SSLBENCH_RESULTS"])
    by = {}
    for r in records:
        by.setdefault(r["protocol"], []).append(r)
    assert sorted(by) == ["cluster", "knn", "linear", "logreg"]
    assert {r["metric"] for r in by["knn"]} == {f"top{n}@k{k}" for n in (1, 5) for k in (10, 20, 100, 200)}
    assert {r["metric"] for r in by["linear"]} == {"top1", "top1_heldout"}
    assert {r["settings"]["variant"] for r in by["linear"]} == {"dino", "grid"}
    assert {(r["dataset"], r["metric"]) for r in by["logreg"]} == {
        ("shapesworld", "top1"),
        ("shapesworld-10pct", "top1"),
    }
    subset_run = next(r for r in by["logreg"] if r["dataset"] == "shapesworld-10pct")
    # one image per class in the subset; C chosen on as many labelled images outside it (issue 17 item 3)
    assert (subset_run["settings"]["n_train"], subset_run["settings"]["n_val"]) == (10, 10)
    assert subset_run["settings"]["selection"] == "outside_subset"
    assert {r["settings"]["num_classes"] for r in by["cluster"]} == {3, 10}
    assert {r["metric"] for r in by["cluster"]} == {"nmi", "ari", "acc", "nmi_std", "ari_std", "acc_std"}
    digest = sha256_file(femto_file)
    for r in records:
        assert r["checkpoint"]["sha256"] == digest and r["checkpoint"]["name"] == "femto"
        assert r["checkpoint"]["pos_interp"] in ("dino", "timm")
        assert 0.0 <= r["value"] <= 100.0 and r["wall_time_s"] is not None and r["peak_memory"]["cpu_rss_mb"] > 0
    assert (tmp_path / "knn" / "config.yaml").is_file() and (tmp_path / "knn" / "metrics.json").is_file()
    knn_runs = [r for r in by["knn"] if r["metric"] == "top1@k20"]
    assert knn_runs[0]["settings"]["features"]["batch_size"] == 7
    assert knn_runs[0]["settings"]["transform"] == {"resize": 37, "crop": 32, "interpolation": "bicubic"}
    # the same --out again: refused (the previous metrics.json stays) unless --force
    kept = (tmp_path / "knn" / "metrics.json").read_bytes()
    capsys.readouterr()
    assert main(["eval", "knn", "ks=[5]", "--out", str(tmp_path / "knn"), *common]) == 2
    assert "holds a previous result (metrics.json); pass --force" in capsys.readouterr().err
    assert (tmp_path / "knn" / "metrics.json").read_bytes() == kept
    assert main(["eval", "knn", "ks=[5]", "--out", str(tmp_path / "knn"), "--force", *common]) == 0
    assert "top1@k5" in (tmp_path / "knn" / "metrics.json").read_text()


def test_bad_input_exits_2_with_one_line(femto_file, shapes_root, tmp_path, capsys):
    data = str(shapes_root / "classification")
    assert main(["eval", "knn", str(tmp_path / "missing.pt"), "--data", data]) == 2
    assert main(["eval", "knn", str(femto_file), "--data", str(tmp_path / "nodata")]) == 2
    assert main(["eval", "knn", "--data", data, str(femto_file), "nosuchkey=1"]) == 2
    assert main(["eval", "linear", "--data", data, str(femto_file), "heldout_fraction=1.5"]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("sslbench: error:")]
    assert len(errors) == 4
    assert "nodata" in errors[1] and "nosuchkey" in errors[2] and "heldout_fraction" in errors[3]
    assert not Path(os.environ["SSLBENCH_RESULTS"]).exists()  # nothing recorded by failed runs


def test_dataset_label_names_the_subset():
    from evaluate.protocols.evalrun import DataConfig, dataset_label

    assert dataset_label(DataConfig(name="imagenet")) == "imagenet"
    assert dataset_label(DataConfig(name="imagenet", subset="/lists/1percent.txt")) == "imagenet-1pct"
    assert dataset_label(DataConfig(name="imagenet-10pct", subset="10percent")) == "imagenet-10pct"
    assert dataset_label(DataConfig(name="sw", subset="mylist.txt")) == "sw-mylist"
