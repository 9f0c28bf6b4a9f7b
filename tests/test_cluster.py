"""Clustering metrics by hand and on permutations; k-means instances on a separable toy."""

from __future__ import annotations

import math

import numpy as np
import pytest

from evaluate.protocols.cluster import cluster_metrics, clustering_instances, hungarian_accuracy


def test_hungarian_accuracy_hand_example():
    y_true = np.array([0, 0, 1, 1, 2, 2])
    y_pred = np.array([1, 1, 0, 0, 0, 2])  # best map: 1->0, 0->1, 2->2 gives 5 of 6
    assert hungarian_accuracy(y_true, y_pred) == pytest.approx(5 / 6)
    # more clusters than classes: one cluster stays unmatched and counts as wrong
    assert hungarian_accuracy(np.array([0, 0, 1, 1]), np.array([0, 1, 2, 2])) == pytest.approx(3 / 4)


def test_permuted_labels_score_100():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 6, size=200)
    perm = rng.permutation(6) + 10  # renamed clusters
    assert cluster_metrics(y, perm[y]) == pytest.approx({"nmi": 100.0, "ari": 100.0, "acc": 100.0})


def _nmi_ari_by_hand(y, c):
    n = len(y)
    cont = np.array([[np.sum((y == a) & (c == b)) for b in np.unique(c)] for a in np.unique(y)], dtype=float)
    pij, pi, pj = cont / n, cont.sum(1) / n, cont.sum(0) / n
    mi = sum(pij[i, j] * math.log(pij[i, j] / (pi[i] * pj[j])) for i, j in zip(*np.nonzero(pij)))
    h = lambda p: -sum(v * math.log(v) for v in p if v > 0)  # noqa: E731
    nmi = mi / ((h(pi) + h(pj)) / 2)
    comb = lambda v: v * (v - 1) / 2  # noqa: E731
    index = comb(cont).sum()
    a, b = comb(cont.sum(1)).sum(), comb(cont.sum(0)).sum()
    expected = a * b / comb(n)
    ari = (index - expected) / ((a + b) / 2 - expected)
    return 100 * nmi, 100 * ari


def test_nmi_arithmetic_and_ari_match_the_formulas():
    y = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2, 2])
    c = np.array([0, 0, 1, 1, 1, 2, 2, 2, 0, 2])
    nmi, ari = _nmi_ari_by_hand(y, c)
    got = cluster_metrics(y, c)
    assert got["nmi"] == pytest.approx(nmi) and got["ari"] == pytest.approx(ari)
    assert got["acc"] == pytest.approx(70.0)


def test_separable_toy_clusters_perfectly_over_instances():
    rng = np.random.default_rng(0)
    directions = np.eye(8)  # unit-norm features: classes on orthogonal axes, small noise
    y = np.repeat(np.arange(8), 15)
    x = directions[y] * rng.uniform(0.5, 3.0, size=(len(y), 1)) + 0.02 * rng.normal(size=(len(y), 8))
    out = clustering_instances(x, y, [2, 5, 8, 50], instances=3, seed=0, n_init=3)
    assert sorted(out) == [2, 5, 8]  # 50 > 8 classes is skipped
    for metrics in out.values():
        assert metrics == pytest.approx(
            {"nmi": 100.0, "ari": 100.0, "acc": 100.0, "nmi_std": 0.0, "ari_std": 0.0, "acc_std": 0.0}
        )


def test_instances_are_seeded_and_vary():
    rng = np.random.default_rng(1)
    y = np.repeat(np.arange(6), 20)
    x = rng.normal(size=(len(y), 5)) + 0.8 * np.eye(6, 5)[y]
    first = clustering_instances(x, y, [3], instances=4, seed=7, n_init=2)
    again = clustering_instances(x, y, [3], instances=4, seed=7, n_init=2)
    assert first == again
    assert first[3]["nmi_std"] > 0.0  # different class subsets give different scores on noisy data
