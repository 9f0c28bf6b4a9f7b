"""Collapse diagnostics (pretrain.diagnostics): numbers on hand-built embeddings and the verdict on logged values."""

from __future__ import annotations

import math

import pytest
import torch

from pretrain.diagnostics import (
    collapse_findings,
    effective_rank,
    mean_cosine,
    uniform_entropy,
    view_agreement,
    view_cosines,
)


def test_view_cosines_hand_built() -> None:
    # 2 views x 3 images, crop-major; image i's views are both e_i -> positive 1, negatives 0
    eye = torch.eye(3)
    z = torch.cat([eye, 2 * eye])  # the scale must not matter (cosine)
    assert view_cosines(z, 2) == {"positive_cosine": 1.0, "negative_cosine": 0.0}
    # collapse: every row the same direction -> both 1
    same = torch.ones(6, 4)
    out = view_cosines(same, 2)
    assert out["positive_cosine"] == pytest.approx(1.0) and out["negative_cosine"] == pytest.approx(1.0)


def test_view_cosines_against_loops() -> None:
    g = torch.Generator().manual_seed(0)
    views, batch = 3, 4
    z = torch.randn(views * batch, 5, generator=g)
    zn = z / z.norm(dim=1, keepdim=True)
    pos, neg = [], []
    for a in range(views * batch):
        for b in range(views * batch):
            if a == b:
                continue
            (pos if a % batch == b % batch else neg).append(float(zn[a] @ zn[b]))
    out = view_cosines(z, views)
    assert out["positive_cosine"] == pytest.approx(sum(pos) / len(pos), abs=1e-6)
    assert out["negative_cosine"] == pytest.approx(sum(neg) / len(neg), abs=1e-6)


def test_view_cosines_rejects_bad_layout() -> None:
    with pytest.raises(ValueError, match="V=2"):
        view_cosines(torch.randn(5, 3), 2)
    with pytest.raises(ValueError):
        view_cosines(torch.randn(2, 3), 2)  # one image: no negatives


def test_view_agreement_hand_built() -> None:
    # 2 views x 3 images; every row = e_i + a large shared vector c. Centring removes c: u_i = e_i - (1, 1, 1, 0) / 3,
    # |u_i|^2 = 2/3 and u_i . u_j = -1/3, so same image 1, different images -1/2, and every image finds its other view
    eye = torch.cat([torch.eye(3), torch.zeros(3, 1)], dim=1)
    shared = torch.tensor([0.0, 0.0, 0.0, 50.0])
    z = torch.cat([eye, eye]) + shared
    assert view_cosines(z, 2)["negative_cosine"] > 0.99  # uncentred, the shared vector hides the images
    out = view_agreement(z, 2)
    assert out["agreement_positive_cosine"] == pytest.approx(1.0, abs=1e-6)
    assert out["agreement_negative_cosine"] == pytest.approx(-0.5, abs=1e-6)
    assert out["agreement_retrieval"] == 1.0 and out["agreement_chance"] == pytest.approx(1 / 3)
    # view 1 of image i shows image i + 1: nobody finds its own other view, in either direction
    shifted = torch.cat([eye, eye.roll(-1, dims=0)]) + shared
    assert view_agreement(shifted, 2)["agreement_retrieval"] == 0.0


def test_view_agreement_retrieval_against_loops() -> None:
    g = torch.Generator().manual_seed(1)
    views, batch = 3, 5
    base = torch.randn(batch, 6, generator=g)
    z = torch.cat([base + 0.8 * torch.randn(batch, 6, generator=g) for _ in range(views)])
    c = z - z.mean(0)
    c = c / c.norm(dim=1, keepdim=True)
    hits = []
    for u in range(views):
        for v in range(views):
            if u != v:
                for i in range(batch):
                    sims = [float(c[u * batch + i] @ c[v * batch + j]) for j in range(batch)]
                    hits.append(max(range(batch), key=sims.__getitem__) == i)
    assert view_agreement(z, views)["agreement_retrieval"] == pytest.approx(sum(hits) / len(hits))
    with pytest.raises(ValueError, match="V=2"):
        view_agreement(torch.randn(5, 3), 2)


def test_effective_rank_limits() -> None:
    g = torch.Generator().manual_seed(0)
    line = torch.randn(50, 1, generator=g) * torch.randn(1, 8, generator=g)  # rank 1 after centring
    assert effective_rank(line) == pytest.approx(1.0, abs=1e-6)
    # equal singular values in d directions -> exactly d
    q, _ = torch.linalg.qr(torch.randn(40, 40, generator=g, dtype=torch.float64))
    x = q[:, :6] * 3.0
    x = torch.cat([x, -x])  # zero mean, singular values all equal
    assert effective_rank(x) == pytest.approx(6.0, rel=1e-9)
    assert effective_rank(torch.zeros(4, 3)) == 1.0


def test_mean_cosine_hand_values_and_the_shared_direction_the_effective_rank_misses() -> None:
    # rows e1, e2, e1 + e2: pair cosines 0, 1/sqrt2, 1/sqrt2 -> mean sqrt2 / 3
    x = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]])
    assert mean_cosine(x) == pytest.approx(math.sqrt(2) / 3, rel=1e-12)
    assert mean_cosine(torch.tensor([[1.0, 0.0], [-2.0, 0.0]])) == pytest.approx(-1.0)
    # a shared vector of norm 8 plus isotropic residuals of norm ~0.2 (the 150-epoch BAM backbone): the centred
    # effective rank sees only the residuals (near D), the mean cosine sees the shared direction
    g = torch.Generator().manual_seed(0)
    shared = torch.randn(64, generator=g)
    features = 8 * shared / shared.norm() + 0.025 * torch.randn(300, 64, generator=g)
    assert effective_rank(features) > 50
    assert mean_cosine(features) > 0.99
    assert mean_cosine(features, chunk=7) == pytest.approx(mean_cosine(features), rel=1e-12)  # chunks: same sum
    with pytest.raises(ValueError, match="at least 2 rows"):
        mean_cosine(torch.ones(1, 4))


def test_uniform_entropy() -> None:
    assert uniform_entropy(128, 2) == pytest.approx(math.log(126))
    with pytest.raises(ValueError):
        uniform_entropy(2, 2)


def test_collapse_findings() -> None:
    healthy = [
        {"kind": "step", "diag/source_entropy": 3.0, "diag/uniform_entropy": math.log(126)},
        {"kind": "step", "positive_cosine": 0.8, "negative_cosine": 0.3, "knn_eff_rank": 20.0},
    ]
    assert collapse_findings(healthy) == []
    # the measured demo: entropy at ln(126), cosines 0.987 / 0.964
    collapsed = [{"diag/source_entropy": 4.83, "diag/uniform_entropy": math.log(126)}]
    collapsed.append({"positive_cosine": 0.987, "negative_cosine": 0.964, "knn_eff_rank": 1.3})
    found = collapse_findings(collapsed)
    assert len(found) == 3
    assert "uniform" in found[0] and "one direction" in found[1] and "effective rank" in found[2]
    # the last finite value counts; an early collapse that recovered is not reported
    assert collapse_findings([{"negative_cosine": 0.99, "positive_cosine": 0.99}, {"negative_cosine": 0.2}]) == []
    # DINO family: one-hot and uniform teachers
    assert "one prototype" in collapse_findings([{"teacher_entropy": 0.01, "teacher_num_outputs": 1024}])[0]
    assert "uniform" in collapse_findings([{"teacher_entropy": 6.9, "teacher_num_outputs": 1024}])[0]
    assert collapse_findings([{"teacher_entropy": 3.0, "teacher_num_outputs": 1024}]) == []
    # backbone features sharing one direction (logged by the k-NN monitor)
    shared = collapse_findings([{"knn_eff_rank": 15.3, "knn_mean_cosine": 0.9993}])
    assert len(shared) == 1 and "mean cosine 0.9993" in shared[0] and "one direction" in shared[0]
    assert collapse_findings([{"knn_eff_rank": 15.3, "knn_mean_cosine": 0.76}]) == []
