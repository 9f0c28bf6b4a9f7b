"""Official layouts through the protocols: ``--data NAME:ROOT``, split roles, the dataset's metric in the records,
mean per-class accuracy by hand, and the BAM transfer table filled from a per-class record."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from official_layouts import EXPECTED, WRITERS, write_cifar10, write_flowers, write_imagenet, write_inat, write_pets

from evaluate.cli import main
from evaluate.datasets import DATASETS, load_images
from evaluate.datasets.metrics import accuracy
from evaluate.protocols import linear
from evaluate.protocols.evalrun import DataConfig, dataset_label, load_splits
from evaluate.protocols.knn import knn_accuracy, knn_predict
from evaluate.reporting.records import Record, append_records, read_records
from evaluate.reporting.reference import reference_tables
from evaluate.reporting.results import query
from evaluate.reporting.tables import regenerate
from pretrain.vit import build_vit
from sslcore.errors import ConfigError, DataError


def test_mean_per_class_by_hand():
    y_true = [0, 0, 0, 0, 1, 2, 2]
    y_pred = [0, 0, 0, 1, 1, 0, 2]
    # class 0: 3/4, class 1: 1/1, class 2: 1/2 -> mean 0.75; top-1 = 5/7
    assert accuracy(y_true, y_pred, "mean_per_class") == pytest.approx(75.0)
    assert accuracy(y_true, y_pred, "top1") == pytest.approx(100 * 5 / 7)
    assert accuracy(torch.tensor(y_true), torch.tensor(y_pred), "mean_per_class") == pytest.approx(75.0)
    balanced = [0, 0, 1, 1]
    assert accuracy(balanced, [0, 1, 1, 1], "mean_per_class") == accuracy(balanced, [0, 1, 1, 1], "top1") == 75.0
    # a class only predicted, never true, does not count
    assert accuracy([0, 0], [0, 5], "mean_per_class") == pytest.approx(50.0)


def test_knn_and_linear_per_class_equal_the_reference_metric():
    gen = torch.Generator().manual_seed(0)
    train, test = torch.randn(40, 6, generator=gen), torch.randn(25, 6, generator=gen)
    y_train = torch.randint(0, 4, (40,), generator=gen)
    y_test = torch.tensor([0] * 15 + [1] * 5 + [2] * 3 + [3] * 2)  # unbalanced: per-class differs from top-1
    got = knn_accuracy(train, y_train, test, y_test, ks=[5], num_classes=4, chunk=7, per_class=True)
    pred = knn_predict(train, y_train, test, ks=[5], num_classes=4)[5].argmax(1)
    assert got["mean_per_class@k5"] == pytest.approx(accuracy(y_test, pred, "mean_per_class"))
    assert got["top1@k5"] == pytest.approx(accuracy(y_test, pred, "top1"))
    assert got["mean_per_class@k5"] != pytest.approx(got["top1@k5"])

    grid = linear.HeadGrid([linear.HeadGroup("all", 0, 6)], [0.1, 1.0], num_classes=4, seed=1)
    per_head = linear.head_accuracy(grid, test, y_test, chunk=4, metric="mean_per_class")
    top1 = linear.head_accuracy(grid, test, y_test, chunk=4)
    logits = grid(test)
    for h in range(2):
        assert per_head[h].item() == pytest.approx(accuracy(y_test, logits[h].argmax(-1), "mean_per_class"), abs=1e-4)
        assert top1[h].item() == pytest.approx(accuracy(y_test, logits[h].argmax(-1), "top1"), abs=1e-4)


def test_split_roles(tmp_path):
    root = write_flowers(tmp_path)
    cfg = DataConfig(root=str(root), name="flowers", check_counts=False)
    plan, train, val, test = load_splits(cfg)
    assert (train.split, val, test.split, plan.metric) == ("trainval", None, "test", "mean_per_class")
    assert train.labels == EXPECTED["flowers"]["train"] + EXPECTED["flowers"]["val"]
    plan, train, val, test = load_splits(cfg, select=True)
    assert (train.split, val.split, test.split) == ("train", "val", "test")
    pets = DataConfig(root=str(write_pets(tmp_path)), name="Oxford_Pets", check_counts=False)
    plan, train, val, test = load_splits(pets, select=True)
    assert (plan.name, train.split, val, test.split) == ("pets", "trainval", None, "test")
    assert dataset_label(pets) == "pets"


def test_protocols_on_official_layouts_from_the_cli(femto_file, tmp_path, capsys):
    flowers, pets = write_flowers(tmp_path / "f"), write_pets(tmp_path / "p")
    cifar, imagenet = write_cifar10(tmp_path / "c"), write_imagenet(tmp_path / "i", "csv")
    quiet = ["features.progress=false", "data.check_counts=false"]
    assert main(["eval", "knn", str(femto_file), "--data", f"flowers:{flowers}", *quiet, "ks=[1, 3]"]) == 0
    assert main(["eval", "knn", str(femto_file), "--data", f"cifar10:{cifar}", *quiet, "ks=[2]"]) == 0
    assert main(["eval", "logreg", str(femto_file), "--data", f"flowers:{flowers}", *quiet, "num_lambdas=3"]) == 0
    assert main(["eval", "linear", str(femto_file), "--data", f"pets:{pets}", *quiet, "epochs=2"]) == 0
    args = ["eval", "cluster", str(femto_file), "--data", f"imagenet:{imagenet}", *quiet]
    assert main([*args, "num_classes=[3]", "instances=1", "n_init=1"]) == 0
    assert "knn flowers: top1@k1=" in capsys.readouterr().out

    records = read_records(os.environ["SSLBENCH_RESULTS"])
    got = {(r["protocol"], r["dataset"], r["split"], r["metric"]) for r in records}
    assert {("knn", "flowers", "test", f"{m}@k{k}") for m in ("top1", "top5", "mean_per_class") for k in (1, 3)} <= got
    assert ("knn", "cifar10", "test", "top1@k2") in got and ("knn", "cifar10", "test", "mean_per_class@k2") not in got
    assert {m for p, d, s, m in got if p == "logreg"} == {"mean_per_class", "top1"}
    assert {m for p, d, s, m in got if p == "linear"} == {"mean_per_class", "mean_per_class_heldout"}
    assert {(d, s) for p, d, s, m in got if p == "cluster"} == {("imagenet", "val")}
    by = {r["protocol"] + "/" + r["dataset"]: r["settings"] for r in records}
    assert by["knn/flowers"]["train_split"] == "trainval" and by["knn/flowers"]["n_train"] == 6
    assert by["knn/cifar10"]["n_train"] == 10 and by["knn/cifar10"]["n_test"] == 3
    logreg = by["logreg/flowers"]
    assert (logreg["selection"], logreg["n_train"], logreg["n_val"], logreg["n_test"]) == ("predefined:val", 3, 3, 3)
    assert logreg["dataset_metric"] == "mean_per_class" and by["linear/pets"]["train_split"] == "trainval"


def test_official_layout_errors_are_one_line(femto_file, tmp_path, capsys):
    flowers = write_flowers(tmp_path)
    assert main(["eval", "knn", str(femto_file), "--data", f"flowers:{flowers}"]) == 2
    assert main(["eval", "knn", str(femto_file), "--data", f"food101:{tmp_path / 'nope'}"]) == 2
    (flowers / "setid.mat").unlink()
    assert main(["eval", "logreg", str(femto_file), "--data", f"flowers:{flowers}", "data.check_counts=false"]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("sslbench: error:")]
    assert len(errors) == 3
    assert "flowers train has 3 images, expected 1020 (a partial or modified copy?" in errors[0]
    assert "nope: not a directory" in errors[1]  # checked before any work (evalrun.check_outputs)
    assert "setid.mat: not found" in errors[2]
    assert not Path(os.environ["SSLBENCH_RESULTS"]).exists()


def test_bam_transfer_cell_filled_from_a_per_class_record(tmp_path):
    store = tmp_path / "store"
    ckpt = {"name": "bam-femto", "sha256": "c" * 64, "format": "sslbench"}

    def record(dataset, metric, value, run_id):
        return Record(
            "logreg", dataset, "test", metric, value, checkpoint=ckpt, run_id=run_id, created="2026-01-01T10:00:00+0000"
        )

    append_records(
        [
            record("aircraft", "mean_per_class", 61.25, "air000000001"),
            record("aircraft", "top1", 70.0, "air000000001"),  # the same run's top-1 must not fill the cell
            record("pets", "top1", 80.0, "pet000000001"),  # a per-class dataset without its metric: n/m
            record("food101", "top1", 55.5, "food00000001"),
        ],
        store,
    )
    table = next(t for t in reference_tables("all") if t.id == "bam.table5_transfer_linear")
    view = regenerate(table, query(store))
    row = next(r for r in view.rows if r[1] == "bam-femto")
    cells = dict(zip(view.headers, row))
    assert (cells["Aircraft"], cells["Pets"], cells["Food"], cells["Flowers"]) == ("61.2", "n/m", "55.5", "n/m")
    assert [ref.run_id for ref in view.refs] == ["food00000001", "air000000001"]
    assert "metric mean_per_class" in view.refs[1].text


def test_data_list_and_check_commands(tmp_path, capsys):
    assert main(["data", "list"]) == 0
    listed = capsys.readouterr().out
    assert "aircraft" in listed and "mean_per_class" in listed and "train/val/test" in listed
    root = write_flowers(tmp_path)
    assert main(["data", "check", f"flowers:{root}", "--partial"]) == 0
    out = capsys.readouterr().out
    assert (
        "reader sslbench; metric mean_per_class" in out and "train            3 images    102 classes  MISMATCH" in out
    )
    assert main(["data", "check", f"flowers:{root}"]) == 2
    assert "flowers train has 3 images, expected 1020" in capsys.readouterr().err
    assert main(["data", "check", str(root)]) == 2


@pytest.mark.parametrize("name", sorted(WRITERS))
def test_every_registry_dataset_through_knn(name, tmp_path):
    """Each dataset as written in its official layout, through the k-NN protocol: splits, labels, metric, record."""
    from evaluate.protocols import knn

    root = WRITERS[name](tmp_path)
    torch.manual_seed(0)
    model = build_vit("vit_femto").eval()
    cfg = knn.KNNConfig(ks=[1])
    cfg.data = DataConfig(root=str(root), name=name, check_counts=False)
    cfg.features.progress = False
    metrics = knn.run(cfg, backbone=model)
    spec = DATASETS[name]
    records = read_records(os.environ["SSLBENCH_RESULTS"])
    assert {(r["dataset"], r["split"]) for r in records} == {(name, spec.test)}
    fit = load_images(name, root, spec.fit, check_counts=False)
    assert records[0]["settings"]["n_train"] == len(fit) and records[0]["settings"]["train_split"] == spec.fit
    assert ("mean_per_class@k1" in metrics) == (spec.metric == "mean_per_class")
    assert 0.0 <= metrics["top1@k1"] <= 100.0


def test_inat_names_from_categories_json(tmp_path):
    root = write_inat(tmp_path, "2018")
    (root / "categories.json").write_text(
        json.dumps([{"id": i, "name": f"species {i}", "kingdom": "k"} for i in (2, 1, 0)])
    )
    assert load_images("inat2018", root, "val", check_counts=False).classes == ("species 0", "species 1", "species 2")
    (root / "categories.json").write_text(json.dumps([{"id": 0, "name": "only one"}]))
    with pytest.raises(DataError, match=r"categories.json: no entry for category id 1"):
        load_images("inat2018", root, "val", check_counts=False)


def test_converted_copy_as_imagefolder_keeps_the_metric(tmp_path):
    from official_layouts import jpg

    for split, n in (("trainval", 2), ("test", 1)):
        for k, cls in enumerate(("Abyssinian", "Birman")):
            for i in range(n):
                jpg(tmp_path / "pets_if" / split / cls / f"{cls}_{i}.jpg", k)
    cfg = DataConfig(root=str(tmp_path / "pets_if"), name="pets", layout="imagefolder")
    plan, train, val, test = load_splits(cfg, select=True)
    assert (plan.imagefolder, plan.metric, train.split, val, test.split) == (
        True,
        "mean_per_class",
        "trainval",
        None,
        "test",
    )
    assert train.classes == ("Abyssinian", "Birman") and len(train) == 4 and len(test) == 2
    plain = DataConfig(root=str(tmp_path / "pets_if"), name="my-pets", train="trainval", test="test")
    assert load_splits(plain)[0].metric == "top1"
    with pytest.raises(ConfigError, match=r"data.layout=official: 'my-pets' is not in the registry"):
        load_splits(DataConfig(root=str(tmp_path), name="my-pets", layout="official"))
