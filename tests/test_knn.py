"""Weighted k-NN: the golden toy example of protocols.md section 1.3, a per-query reference, invariants."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from evaluate.protocols.knn import knn_accuracy, knn_predict


def _toy(sims: list[float], dim: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    """A query e0 and train rows whose cosine with it is exactly ``sims`` (each in its own orthogonal plane)."""
    query = torch.zeros(1, dim, dtype=torch.float64)
    query[0, 0] = 1.0
    train = torch.zeros(len(sims), dim, dtype=torch.float64)
    for i, s in enumerate(sims):
        train[i, 0], train[i, i + 1] = s, math.sqrt(1 - s * s)
    return query, train


def test_golden_toy_example_both_temperatures():
    query, train = _toy([0.90, 0.80, 0.75])
    labels = torch.tensor([0, 1, 1])  # A, B, B
    scores = knn_predict(train, labels, query, ks=[3], T=0.07, num_classes=2)[3][0]
    assert scores[0].item() == pytest.approx(383518.4, rel=1e-6)
    assert scores[1].item() == pytest.approx(136904.6, rel=1e-6)
    share = scores / scores.sum()
    assert share.tolist() == pytest.approx([0.7369, 0.2631], abs=1e-4)
    scores = knn_predict(train, labels, query, ks=[3], T=0.5, num_classes=2)[3][0]
    assert scores.tolist() == pytest.approx([6.050, 9.435], abs=1e-3)
    assert int(scores.argmax()) == 1  # B wins at T = 0.5, A at T = 0.07


def _reference(train, labels, test, k, T, C):
    """The straightforward per-query implementation."""
    train = F.normalize(train, dim=1)
    out = torch.zeros(len(test), C, dtype=torch.float64)
    for i, q in enumerate(F.normalize(test, dim=1)):
        sims = train @ q
        top = sims.argsort(descending=True)[: min(k, len(train))]
        for j in top:
            out[i, labels[j]] += math.exp(float(sims[j]) / T)
    return out


@pytest.mark.parametrize("n_test,num_classes", [(13, 37), (250, 3)])
def test_matches_per_query_reference_for_all_k(n_test, num_classes):
    gen = torch.Generator().manual_seed(0)
    train = torch.randn(300, 16, generator=gen, dtype=torch.float64)
    labels = torch.randint(0, num_classes, (300,), generator=gen)
    test = torch.randn(n_test, 16, generator=gen, dtype=torch.float64)
    ks = [10, 20, 100, 200]
    got = knn_predict(train, labels, test, ks, T=0.07, num_classes=num_classes, chunk=64)
    for k in ks:
        assert got[k].shape == (n_test, num_classes)
        torch.testing.assert_close(
            got[k].double(), _reference(train, labels, test, k, 0.07, num_classes), rtol=1e-5, atol=0
        )


def test_chunking_and_train_permutation_do_not_change_scores():
    gen = torch.Generator().manual_seed(1)
    train, test = torch.randn(500, 8, generator=gen), torch.randn(101, 8, generator=gen)
    labels = torch.randint(0, 10, (500,), generator=gen)
    full = knn_predict(train, labels, test, [10, 20], num_classes=10, chunk=1000)
    small = knn_predict(train, labels, test, [10, 20], num_classes=10, chunk=7)
    perm = torch.randperm(500, generator=gen)
    shuffled = knn_predict(train[perm], labels[perm], test, [10, 20], num_classes=10, chunk=33)
    for k in (10, 20):  # equal up to float32 rounding of differently blocked matmuls; same predictions
        torch.testing.assert_close(small[k], full[k], rtol=1e-5, atol=0)
        torch.testing.assert_close(shuffled[k], full[k], rtol=1e-5, atol=0)
        assert torch.equal(small[k].argmax(1), full[k].argmax(1))


def test_k_larger_than_train_is_clamped():
    gen = torch.Generator().manual_seed(2)
    train, test = torch.randn(5, 4, generator=gen), torch.randn(3, 4, generator=gen)
    labels = torch.tensor([0, 1, 1, 2, 2])
    got = knn_predict(train, labels, test, [5, 200], num_classes=3)
    torch.testing.assert_close(got[200], got[5])
    # every train row votes: class masses are the per-class sums of exp(s/T)
    sims = F.normalize(test, dim=1) @ F.normalize(train, dim=1).T
    expected = torch.stack([(sims[:, labels == c] / 0.07).exp().sum(1) for c in range(3)], dim=1)
    torch.testing.assert_close(got[200], expected, rtol=1e-5, atol=0)


def test_accuracy_agrees_with_scores_and_scale_invariance():
    gen = torch.Generator().manual_seed(3)
    centers = torch.randn(4, 32, generator=gen) * 3
    labels = torch.arange(4).repeat_interleave(50)
    train = centers[labels] + torch.randn(200, 32, generator=gen)
    test_labels = torch.arange(4).repeat_interleave(10)
    test = centers[test_labels] + torch.randn(40, 32, generator=gen)
    acc = knn_accuracy(train, labels, test, test_labels, [10, 20], num_classes=4, chunk=9)
    scores = knn_predict(train * 7.0, labels, test * 0.1, [10, 20], num_classes=4)  # features are normalised
    for k in (10, 20):
        expected = 100.0 * float((scores[k].argmax(1) == test_labels).float().mean())
        assert acc[f"top1@k{k}"] == pytest.approx(expected)
        assert acc[f"top5@k{k}"] == 100.0  # only 4 classes: top-5 is top-4
    assert acc["top1@k20"] > 90.0  # well-separated clusters


def test_bad_shapes_raise():
    with pytest.raises(ValueError):
        knn_predict(torch.randn(5, 4), torch.zeros(5, dtype=torch.long), torch.randn(2, 3), [1])


def test_top5_with_fewer_than_5_voted_classes_fills_the_tail_in_class_order():
    # 10 nearest rows: 6 of class 7, 4 of class 2; farther rows of every class. At k = 10 only classes 7 and 2 get
    # votes, so the ranking is 7, 2, then the unvoted classes in ascending index: top-5 = {7, 2, 0, 1, 3}.
    near = [0.95, 0.94, 0.93, 0.92, 0.91, 0.90, 0.89, 0.88, 0.87, 0.86]
    far = [0.1 + 0.01 * c for c in range(10)]
    query, train = _toy(near + far, dim=len(near + far) + 1)
    labels = torch.tensor([7] * 6 + [2] * 4 + list(range(10)))
    queries = query.repeat(5, 1)
    targets = torch.tensor([7, 2, 3, 0, 4])
    acc = knn_accuracy(train, labels, queries, targets, [10, 3], num_classes=10)
    assert acc["top1@k10"] == pytest.approx(100 * 1 / 5)
    assert acc["top5@k10"] == pytest.approx(100 * 4 / 5)  # 7, 2, 3, 0 hit; 4 is rank 5
    assert acc["top5@k3"] == pytest.approx(100 * 2 / 5)  # DINO counts the first min(5, k) = 3 ranks: 7, 0, 1
    # the same ranks as a stable descending sort of the scores (what DINO's probs.sort(1, True) gives)
    gen = torch.Generator().manual_seed(4)
    train = torch.randn(400, 8, generator=gen)
    labels = torch.randint(0, 10, (400,), generator=gen)
    test, test_labels = torch.randn(300, 8, generator=gen), torch.randint(0, 10, (300,), generator=gen)
    for k in (1, 2, 3, 10):
        scores = knn_predict(train, labels, test, [k], num_classes=10)[k]
        ranked = scores.sort(dim=1, descending=True, stable=True).indices
        assert int((scores == 0).sum(1).max()) >= 5  # many zero-score ties in the tail
        top = min(5, k)
        expected = 100.0 * float((ranked[:, :top] == test_labels[:, None]).any(1).float().mean())
        got = knn_accuracy(train, labels, test, test_labels, [k], num_classes=10, chunk=37)
        assert got[f"top5@k{k}"] == pytest.approx(expected)


def test_default_chunk_bounds_the_similarity_block(monkeypatch):
    import evaluate.protocols.knn as knn

    gen = torch.Generator().manual_seed(5)
    train, labels = torch.randn(1000, 8, generator=gen), torch.randint(0, 5, (1000,), generator=gen)
    test = torch.randn(50, 8, generator=gen)
    full = knn_predict(train, labels, test, [10], num_classes=5)
    monkeypatch.setattr(knn, "CHUNK_BYTES", 1000 * 4 * 7)  # 7 rows per block
    assert knn._chunk_rows(None, 1000, 4) == 7
    assert knn._chunk_rows(None, 1000, 4, "cuda") == (1 << 30) // 4000  # the GPU budget: 1 GiB
    assert knn._chunk_rows(3, 1000, 4, "cuda") == 3
    blocked = knn_predict(train, labels, test, [10], num_classes=5)
    torch.testing.assert_close(blocked[10], full[10], rtol=1e-5, atol=0)  # blocked matmuls round differently


def test_run_reports_the_feature_cosine_and_warns_when_features_share_one_direction(shapes_cls, tmp_path, caplog):
    """``knn.run`` writes the mean cosine between the train features into metrics.json and warns from 0.95 on; a
    backbone whose final norm has a large shared bias and a tiny scale gives features that differ by ~0.1 %."""
    import json

    from evaluate.protocols import knn
    from evaluate.protocols.evalrun import DataConfig
    from pretrain.vit import build_vit

    torch.manual_seed(0)
    cosines = {}
    for name in ("healthy", "shared"):
        model = build_vit("vit_femto").eval()
        if name == "shared":
            with torch.no_grad():
                model.norm.weight.fill_(1e-3)
                model.norm.bias.fill_(1.0)
        cfg = knn.KNNConfig(ks=[5], out=str(tmp_path / name))
        cfg.data = DataConfig(root=str(shapes_cls), name="shapesworld")
        cfg.features.progress = False
        caplog.clear()
        with caplog.at_level("WARNING", logger="sslbench"):
            knn.run(cfg, backbone=model)
        cosines[name] = json.loads((tmp_path / name / "metrics.json").read_text())["feature_mean_cosine"]
        assert ("share one direction" in caplog.text) == (name == "shared")
    assert cosines["healthy"] < 0.95 <= cosines["shared"] <= 1.0
