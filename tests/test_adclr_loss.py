"""ADCLR's loss against a NumPy re-implementation of paper Eq. 6, and against the released PQCL loss where the two
coincide (tests/data/official/pqcl_loss.pt, made by scripts/reference/official_pqcl_loss.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pretrain.losses.adclr import adclr_loss, query_loss
from pretrain.losses.dino import teacher_temperature_schedule, updated_center
from pretrain.losses.ibot import masked_patch_loss

OFFICIAL = Path(__file__).parent / "data" / "official" / "pqcl_loss.pt"


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def _softmax(x: np.ndarray) -> np.ndarray:
    return np.exp(_log_softmax(x))


def _np_adclr(s_cls, t_cls, s_q, t_q, c, cq, S, G, tt, tq, ts, lam):
    """Eq. 6 written out loop by loop: DINO's multi-crop CLS term + (lam / Q) sum_i of the cross-view query terms."""
    B = t_cls.shape[0] // G
    Q = s_q.shape[1]
    glob = []
    for q in range(G):
        p_t = _softmax((t_cls[q * B : (q + 1) * B] - c) / tt)
        for v in range(S):
            if v != q:
                log_s = _log_softmax(s_cls[v * B : (v + 1) * B] / ts)
                glob.append(np.mean(-(p_t * log_s).sum(-1)))
    l_global = np.mean(glob)
    per_query = np.zeros(Q)
    for i in range(Q):
        terms = []
        for a in range(G):
            for b in range(G):
                if a == b:
                    continue
                p_t = _softmax((t_q[a * B : (a + 1) * B, i] - cq[0]) / tq)
                log_s = _log_softmax(s_q[b * B : (b + 1) * B, i] / ts)
                terms.append(np.mean(-(p_t * log_s).sum(-1)))
        per_query[i] = np.mean(terms)
    l_local = per_query.sum()  # sum over queries; the lam / Q weight is applied below
    return l_global + lam / Q * l_local, l_global, l_local / Q


@pytest.mark.parametrize("lam", [0.5, 1.3])
def test_adclr_loss_matches_numpy(lam):
    rng = np.random.default_rng(0)
    S, G, B, Q, K = 4, 2, 3, 5, 7
    s_cls, t_cls = rng.normal(0, 3, (S * B, K)), rng.normal(0, 3, (G * B, K))
    s_q, t_q = rng.normal(0, 3, (G * B, Q, K)), rng.normal(0, 3, (G * B, Q, K))
    c, cq = rng.normal(0, 1, (1, K)), rng.normal(0, 1, (1, 1, K))
    want = _np_adclr(s_cls, t_cls, s_q, t_q, c, cq, S, G, 0.05, 0.06, 0.1, lam)
    t = lambda a: torch.tensor(a, dtype=torch.float32)  # noqa: E731
    got = adclr_loss(t(s_cls), t(t_cls), t(s_q), t(t_q), t(c), t(cq), S, 0.05, 0.06, 0.1, lam)
    for g, w in zip(got, want):
        assert float(g) == pytest.approx(float(w), rel=1e-5)


def test_query_i_is_paired_with_query_i_only():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(6, 5, 7, generator=g) * 3, torch.randn(6, 5, 7, generator=g) * 3
    c = torch.zeros(1, 1, 7)
    base = query_loss(s, t, c, 2, 0.05)
    perm = torch.tensor([1, 0, 2, 3, 4])
    torch.testing.assert_close(query_loss(s[:, perm], t[:, perm], c, 2, 0.05), base)  # same order: same loss
    assert abs(float(query_loss(s[:, perm], t, c, 2, 0.05) - base)) > 1e-3  # swapped student queries: another loss
    # the teacher of view a supervises the student of view b != a only: the same-view pairing changes nothing
    s_same = s.clone()
    s_same[:3], s_same[3:] = s[3:], s[:3]
    assert abs(float(query_loss(s_same, t, c, 2, 0.05) - base)) > 1e-3
    with pytest.raises(ValueError, match="two global views"):
        query_loss(s[:3], t[:3], c, 1, 0.05)
    with pytest.raises(ValueError, match=r"\(G \* B, Q, K\)"):
        query_loss(s, t[:, :4], c, 2, 0.05)


def test_query_center_update_matches_numpy():
    rng = np.random.default_rng(1)
    t_q, c = rng.normal(0, 3, (6, 5, 7)), rng.normal(0, 1, (1, 1, 7))
    got = updated_center(torch.tensor(c), torch.tensor(t_q), 0.9, lambda x, op: x, 1)
    want = 0.9 * c + 0.1 * t_q.reshape(-1, 7).mean(0)  # every (image, view, query) row counts once
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-6)
    # two ranks with half the rows each give the world mean
    halves = [torch.tensor(t_q[:3]), torch.tensor(t_q[3:])]
    total = halves[0].mean(1).sum(0, keepdim=True) + halves[1].mean(1).sum(0, keepdim=True)
    got2 = updated_center(torch.tensor(c), halves[0], 0.9, lambda x, op: total, 2)
    np.testing.assert_allclose(got2.numpy(), want, rtol=1e-6)


def test_query_temperature_schedule_is_linear_then_flat():
    sched = teacher_temperature_schedule(0.04, 0.07, 30, 100)
    np.testing.assert_allclose(sched[:30], np.linspace(0.04, 0.07, 30))
    assert len(sched) == 100 and (sched[30:] == 0.07).all()


@pytest.mark.skipif(not OFFICIAL.exists(), reason="official PQCL outputs not generated")
def test_against_the_released_pqcl_loss_where_they_coincide():
    """PQCL: L = l1 L_cls + l2 L_mim + l3 L_q with one teacher target per query for both views. ADCLR* with that
    target repeated over the two views, lam = l3 and iBOT's MIM term gives the same loss and the same three centers
    after each of three calls (epochs 0, 2 and 4 of the temperature schedules)."""
    ref = torch.load(OFFICIAL, weights_only=True)
    st = ref["settings"]
    k = st["out_dim"]
    center, center2, center3 = torch.zeros(1, k), torch.zeros(1, 1, k), torch.zeros(1, 1, k)
    temps = [
        teacher_temperature_schedule(st[f"warmup_temp{n}"], st[f"temp{n}"], st["warmup_epochs"], st["epochs"])
        for n in ("", "2", "3")
    ]
    for x, epoch, out in zip(ref["inputs"], ref["epochs"], ref["outputs"]):
        t_query = torch.cat([x["t_query"], x["t_query"]])  # the same target for both views
        loss, l_cls, l_q = adclr_loss(
            x["s_cls"],
            x["t_cls"],
            x["s_query"],
            t_query,
            center,
            center3,
            2,
            float(temps[0][epoch]),
            float(temps[2][epoch]),
            0.1,
            st["lambda3"],
        )
        masks = x["masks"].flatten(1)
        views = zip(x["s_patch"].chunk(2), x["t_patch"].chunk(2), masks.chunk(2))
        l_mim = sum(masked_patch_loss(s, t, m, center2, float(temps[1][epoch]), 0.1) for s, t, m in views) / 2
        torch.testing.assert_close(l_cls * st["lambda1"], out["cls"], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(l_q * st["lambda3"], out["query"], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(l_mim * st["lambda2"], out["patch"], rtol=1e-5, atol=1e-6)
        assert st["lambda1"] == 1.0  # adclr_loss weighs the CLS term by 1
        torch.testing.assert_close(loss + st["lambda2"] * l_mim, out["loss"], rtol=1e-5, atol=1e-5)
        ident = lambda t, op: t  # noqa: E731
        center = updated_center(center, x["t_cls"], 0.9, ident, 1)
        center2 = updated_center(center2, x["t_patch"], 0.9, ident, 1)
        center3 = updated_center(center3, t_query, 0.9, ident, 1)
        for name, mine in (("center", center), ("center2", center2), ("center3", center3)):
            torch.testing.assert_close(mine, out[name], rtol=1e-5, atol=1e-6)
