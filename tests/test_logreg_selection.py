"""Issue 17 item 3: semi-supervised logreg selects C outside the label subset (DINOv2's rule), fits on the subset
only, and refuses a selection split that lacks a class."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from evaluate.datasets import apply_subset, load_split, read_subset_file
from evaluate.datasets.metrics import accuracy as score
from evaluate.protocols.logreg import LogRegConfig, outside_subset, run
from evaluate.reporting.records import read_records
from pretrain.vit import ARCHS, SSLViT
from sslcore.config import load_config
from sslcore.errors import SSLBenchError


def _cfg(shapes_root, tmp_path, *overrides):
    root = shapes_root / "classification"
    return load_config(
        LogRegConfig,
        None,
        [f"data.root={root}", f"out={tmp_path / 'out'}", "features.progress=false", "num_lambdas=4", *overrides],
    )


def test_outside_subset_is_disjoint_and_per_class(shapes_root):
    full = load_split(shapes_root / "classification", "train")
    subset = apply_subset(full, read_subset_file(shapes_root / "classification" / "subsets" / "10percent.txt"))
    held = outside_subset(full, subset, seed=0)
    assert not {p for p, _ in held.samples} & {p for p, _ in subset.samples}
    assert np.bincount(held.labels, minlength=10).tolist() == np.bincount(subset.labels, minlength=10).tolist()
    assert held.samples == outside_subset(full, subset, seed=0).samples  # seeded


def test_subset_run_selects_outside_and_fits_on_the_subset(shapes_root, tmp_path):
    import torch

    torch.manual_seed(0)
    model = SSLViT(ARCHS["vit_femto"])
    # the sklearn solver, so the check below is exact (the subject here is the selection rule, not the solver)
    metrics = run(_cfg(shapes_root, tmp_path, "data.subset=1percent", "solver=sklearn"), backbone=model)
    (record,) = read_records()
    settings = record["settings"]
    assert settings["selection"] == "outside_subset" and settings["n_train"] == 10 and settings["n_val"] == 10
    # the reported number is a fit on the 10 subset images alone with the chosen C
    from evaluate.protocols.features import get_features

    cfg = _cfg(shapes_root, tmp_path)
    full = load_split(shapes_root / "classification", "train")
    subset = apply_subset(full, read_subset_file(shapes_root / "classification" / "subsets" / "1percent.txt"))
    info = {"name": "m"}
    tr = get_features(model, info, subset, cfg.features)
    te = get_features(model, info, load_split(shapes_root / "classification", "val"), cfg.features)
    clf = LogisticRegression(C=settings["C"], solver="lbfgs", max_iter=1000, tol=1e-4, random_state=0)
    clf.fit(tr.features.double().numpy(), tr.labels.numpy())
    want = score(te.labels.numpy(), clf.predict(te.features.double().numpy()), "top1")
    assert metrics["top1"] == pytest.approx(want, abs=1e-9)


def test_selection_split_without_every_class_is_refused(shapes_root, tmp_path):
    model = SSLViT(ARCHS["vit_femto"])
    with pytest.raises(SSLBenchError, match=r"selection=heldout:0.2: the selection split \(0 images\) has no image"):
        run(_cfg(shapes_root, tmp_path, "data.subset=1percent", "selection=heldout"), backbone=model)
    assert read_records() == []


def test_heldout_split_is_stratified():
    from evaluate.protocols.logreg import _split_heldout

    y = np.repeat(np.arange(8), 7)  # the tiny transfer set: 8 classes x 7 images
    keep, held = _split_heldout(y, 0.2, seed=0)
    assert sorted(np.r_[keep, held].tolist()) == list(range(56))
    assert np.bincount(y[held]).tolist() == [1] * 8 and np.bincount(y[keep]).tolist() == [6] * 8
