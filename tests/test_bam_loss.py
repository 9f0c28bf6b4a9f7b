"""BAM loss: hand-derived value, a NumPy reference, Sinkhorn invariants, top-k, symmetry and split-batch equality."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from collectives import ThreadGroup, run_ranks

from pretrain.losses.bam import bam_loss, positive_mask, sinkhorn_balance, topk_shared


def _feats(n: int, dim: int, seed: int) -> torch.Tensor:
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).float()


def numpy_bam(student, teacher, views, n_global, tau, eps, iters, topk, world=1):
    """The released code's formulation: transposed Q, total-mass normalisation, marginals r = 1/(K - G),
    c = 1/n, most-negative-float masking, (1 - mask) loss multiplier, explicit pair loops. One process."""
    s = student / np.linalg.norm(student, axis=1, keepdims=True)
    t = s if teacher is None else teacher / np.linalg.norm(teacher, axis=1, keepdims=True)
    batch = s.shape[0] // views
    cols = t[: n_global * batch]
    k = cols.shape[0]
    big_neg = np.finfo(np.float64).min

    def mask_for(rows):
        m = np.zeros((rows, k))
        for row in range(rows):
            for g in range(n_global):
                m[row, g * batch + row % batch] = 1
        return m

    sim_t = t @ cols.T
    mt = mask_for(sim_t.shape[0])
    logits = np.where(mt > 0, big_neg, sim_t / eps)
    q = np.exp(logits - logits.max()).T  # (K, n): rows are targets, columns are samples
    q /= q.sum()
    r, c = 1.0 / (k - n_global), 1.0 / q.shape[1]
    for _ in range(iters):
        q *= (r / q.sum(1))[:, None]
        q *= (c / q.sum(0))[None, :]
    p = (q / q.sum(0, keepdims=True)).T
    targets = [p[g * batch : (g + 1) * batch] for g in range(n_global)]
    if topk:
        mean = sum(targets) / n_global
        keep = np.zeros_like(mean)
        for i in range(batch):
            keep[i, np.argsort(-mean[i])[:topk]] = 1
        targets = [x * keep / (x * keep).sum(1, keepdims=True) for x in targets]
    ms = mask_for(s.shape[0])
    z = np.where(ms > 0, big_neg, (s @ cols.T) / tau)
    z = z - z.max(1, keepdims=True)
    log_a = z - np.log(np.exp(z).sum(1, keepdims=True))
    total = 0.0
    for g in range(n_global):
        per_target = 0.0
        for v in range(views):
            if v != g:
                blk = slice(v * batch, (v + 1) * batch)
                per_target += np.mean(-np.sum((1 - ms[blk]) * targets[g] * log_a[blk], axis=1))
        total += per_target / (views - 1)
    return total / n_global


def test_hand_derived_two_images_two_views():
    # Images 0 and 1 are antipodal in R^2; view 1 is view 0 rotated by alpha. Every target block is symmetric, so
    # it is balanced at once and each row reduces to a 2-way softmax:
    # loss = -[sig(-d/eps) log sig(d/tau) + sig(d/eps) log sig(-d/tau)], d = 1 - cos(alpha).
    alpha, tau, eps = math.pi / 3, 0.1, 0.05
    v0 = torch.tensor([1.0, 0.0])
    v1 = torch.tensor([math.cos(alpha), math.sin(alpha)])
    z = torch.stack([v0, -v0, v1, -v1])  # crop-major: [view0: img0, img1][view1: img0, img1]
    d = 1 - math.cos(alpha)
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    expected = -(sig(-d / eps) * math.log(sig(d / tau)) + sig(d / eps) * math.log(sig(-d / tau)))
    for teacher in (z.clone(), None):
        loss, _ = bam_loss(z, teacher, num_crops=2, tau=tau, eps=eps)
        assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert expected == pytest.approx(5.006488, rel=1e-6)  # ~ sig(10) * (5 + log(1 + e^-5))


@pytest.mark.parametrize("topk", [None, 5])
@pytest.mark.parametrize("teacher_rows", ["none", "global", "all"])
def test_matches_numpy_reference(topk, teacher_rows):
    views, n_global, batch, dim = 4, 2, 3, 6
    student = _feats(views * batch, dim, 0)
    teacher = {"none": None, "global": _feats(n_global * batch, dim, 1), "all": _feats(views * batch, dim, 1)}
    teacher = teacher[teacher_rows]
    expected = numpy_bam(
        student.double().numpy(),
        None if teacher is None else teacher.double().numpy(),
        views,
        n_global,
        tau=0.2,
        eps=0.1,
        iters=3,
        topk=topk,
    )
    for mode in ("paper", "code"):
        loss, _ = bam_loss(
            student, teacher, num_crops=views, tau=0.2, eps=0.1, topk=topk, positive_mode=mode, diagnostics=False
        )
        assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_sinkhorn_rows_masked_entries_and_convergence():
    torch.manual_seed(0)
    logits = torch.randn(24, 16) * 3
    mask = positive_mask(24, 8, 1, 2, 0)
    logits = logits.masked_fill(mask, float("-inf"))
    errors = []
    for iters in range(0, 16):
        p = sinkhorn_balance(logits, iters)
        assert torch.allclose(p.sum(1), torch.ones(24), atol=1e-6)
        assert (p[mask] == 0).all() and (p[~mask] > 0).all()
        cols = p.sum(0)
        errors.append((cols / cols.mean() - 1).abs().max().item())
    assert all(b < a for a, b in zip(errors, errors[1:])), errors
    assert errors[0] > 0.5 and errors[-1] < 0.02
    cols = sinkhorn_balance(logits, 60).sum(0)
    assert (cols / cols.mean() - 1).abs().max() < 1e-5
    # the code's most-negative-float fill gives the same target
    coded = sinkhorn_balance(logits.masked_fill(mask, torch.finfo(torch.float32).min), 3)
    assert torch.equal(coded, sinkhorn_balance(logits, 3))


def test_positive_mask_layout():
    mask = positive_mask(rows=6, batch=2, world=3, num_global=2, rank=1)
    # row 3 = crop 1, image 1 of rank 1 -> columns m*W*B + r*B + i = 3 and 9
    assert mask.shape == (6, 12) and mask.sum(1).tolist() == [2] * 6
    assert mask[3].nonzero().flatten().tolist() == [3, 9]
    assert mask[0].nonzero().flatten().tolist() == [2, 8]


def test_topk_shared_support():
    torch.manual_seed(0)
    targets = torch.softmax(torch.randn(2, 5, 20), -1)
    sparse, mass = topk_shared(targets, 4)
    nonzero = sparse > 0
    assert nonzero.sum(-1).eq(4).all()
    assert torch.equal(nonzero[0], nonzero[1])
    assert torch.allclose(sparse.sum(-1), torch.ones(2, 5))
    top_mean = targets.mean(0).topk(4, -1).indices.sort(-1).values
    assert torch.equal(nonzero[0].nonzero()[:, 1].reshape(5, 4), top_mean)
    assert torch.allclose(mass, (targets * nonzero).sum(-1))


def test_topk_diag_and_inactive_when_k_large():
    student, teacher = _feats(16, 8, 0), _feats(16, 8, 1)
    base, d0 = bam_loss(student, teacher, num_crops=4, topk=None)
    same, d1 = bam_loss(student, teacher, num_crops=4, topk=8)  # K = 2*4 = 8 columns: top-8 keeps everything
    assert torch.equal(base, same) and d0["diag/topk_mass"] == 1.0 == d1["diag/topk_mass"]
    sparse, d2 = bam_loss(student, teacher, num_crops=4, topk=3)
    assert 0 < d2["diag/topk_mass"] < 1 and not torch.allclose(base, sparse)


def test_no_gradient_through_target_teacher_mode():
    student = _feats(12, 5, 0).requires_grad_()
    teacher = _feats(12, 5, 1).requires_grad_()
    loss, _ = bam_loss(student, teacher, num_crops=3, topk=4)
    loss.backward()
    assert teacher.grad is None and student.grad is not None and student.grad.abs().sum() > 0


def test_teacher_free_gradient_treats_target_as_constant():
    views, n_global, batch = 3, 2, 4
    student = _feats(views * batch, 6, 0).requires_grad_()
    loss, _ = bam_loss(student, None, num_crops=views, tau=0.2, eps=0.1)
    (grad,) = torch.autograd.grad(loss, student)

    # reference: same loss with the target frozen as a constant, gradient through queries and keys
    z = F.normalize(student, dim=-1)
    cols = z[: n_global * batch]
    sim = z @ cols.T
    mask = positive_mask(views * batch, batch, 1, n_global, 0)
    with torch.no_grad():
        target = sinkhorn_balance((sim / 0.1).masked_fill(mask, float("-inf")), 3)[: n_global * batch]
    log_a = (sim / 0.2).masked_fill(mask, float("-inf")).log_softmax(-1).masked_fill(mask, 0.0)
    ref = 0.0
    for g in range(n_global):
        for v in range(views):
            if v != g:
                blk = slice(v * batch, (v + 1) * batch)
                ref = ref - (target[g * batch : (g + 1) * batch] * log_a[blk]).sum(1).mean()
    ref = ref / (n_global * (views - 1))
    (ref_grad,) = torch.autograd.grad(ref, student)
    assert loss.item() == pytest.approx(ref.item(), rel=1e-6)
    assert torch.allclose(grad, ref_grad, atol=1e-6)


def _permute_images(x: torch.Tensor, views: int, perm: torch.Tensor) -> torch.Tensor:
    return x.reshape(views, -1, x.shape[-1])[:, perm].reshape(x.shape)


@pytest.mark.parametrize("teacher_free", [False, True])
def test_image_permutation_and_global_view_swap_invariance(teacher_free):
    views, batch = 5, 6
    student, teacher = _feats(views * batch, 8, 0), _feats(views * batch, 8, 1)
    teacher = None if teacher_free else teacher
    kwargs = dict(num_crops=views, topk=7)
    loss, diag = bam_loss(student, teacher, **kwargs)

    perm = torch.randperm(batch, generator=torch.Generator().manual_seed(3))
    t_perm = None if teacher is None else _permute_images(teacher, views, perm)
    loss_p, diag_p = bam_loss(_permute_images(student, views, perm), t_perm, **kwargs)
    assert loss_p.item() == pytest.approx(loss.item(), rel=1e-5)
    assert diag_p == pytest.approx(diag, rel=1e-4)

    swap = lambda x: torch.cat([x[batch : 2 * batch], x[:batch], x[2 * batch :]])  # noqa: E731
    loss_s, diag_s = bam_loss(swap(student), None if teacher is None else swap(teacher), **kwargs)
    assert loss_s.item() == pytest.approx(loss.item(), rel=1e-5)
    assert diag_s == pytest.approx(diag, rel=1e-4)


def test_diagnostics_values():
    views, batch = 4, 5
    student, teacher = _feats(views * batch, 8, 0), _feats(views * batch, 8, 1)
    _, diag = bam_loss(student, teacher, num_crops=views, sinkhorn_iters=50, eps=0.2)
    num_cols = 2 * batch
    # masked rows spread over K - 2 columns at most
    assert 0 < diag["diag/source_entropy"] <= math.log(num_cols - 2) + 1e-6
    assert 0 < diag["diag/target_entropy"] <= math.log(num_cols - 2) + 1e-6
    assert diag["diag/marginal_error"] < 1e-4  # converged Sinkhorn: uniform column sums
    _, few = bam_loss(student, teacher, num_crops=views, sinkhorn_iters=0, eps=0.2)
    assert few["diag/marginal_error"] > 10 * diag["diag/marginal_error"]
    # source entropy by hand: student global rows against teacher global columns, positives excluded
    zs, zt = F.normalize(student, dim=-1), F.normalize(teacher, dim=-1)
    mask = positive_mask(2 * batch, batch, 1, 2, 0)
    p = (zs[: 2 * batch] @ zt[: 2 * batch].T / 0.1).masked_fill(mask, float("-inf")).softmax(-1)
    assert diag["diag/source_entropy"] == pytest.approx(torch.special.entr(p).sum(1).mean().item(), rel=1e-5)
    assert set(bam_loss(student, teacher, num_crops=views, diagnostics=False)[1]) == set()


@pytest.mark.parametrize("teacher_rows", ["global", "all", "none"])
def test_split_batch_over_two_ranks_equals_full_batch(teacher_rows):
    views, n_global, world, batch, dim = 4, 2, 2, 5, 8
    full_b = world * batch
    student = _feats(views * full_b, dim, 0)
    teacher = None if teacher_rows == "none" else _feats(views * full_b, dim, 1)
    if teacher_rows == "global":
        teacher = teacher[: n_global * full_b]
    kwargs = dict(num_crops=views, tau=0.1, eps=0.05, topk=6)

    full_s = student.clone().requires_grad_()
    full_loss, full_diag = bam_loss(full_s, teacher, **kwargs)
    full_loss.backward()

    def shard(x, r):  # rank r holds images r*B..(r+1)*B-1 of every crop
        return x.reshape(-1, full_b, dim)[:, r * batch : (r + 1) * batch].reshape(-1, dim)

    group = ThreadGroup(world)
    shards = [shard(student, r).clone().requires_grad_() for r in range(world)]

    def run(r):
        t = None if teacher is None else shard(teacher, r)
        return bam_loss(shards[r], t, **kwargs, all_gather=group.all_gather(r), all_reduce=group.all_reduce(r), rank=r)

    results = run_ranks(world, run)
    mean_loss = sum(res[0] for res in results) / world
    assert mean_loss.item() == pytest.approx(full_loss.item(), rel=1e-5)
    for _, diag in results:
        assert diag == pytest.approx(full_diag, rel=1e-4, abs=1e-6)
    # DDP averages the ranks' gradients; teacher-free gradients also flow through the gathered columns
    grads = run_ranks(world, lambda r: torch.autograd.grad(results[r][0] / world, shards[r])[0])
    for r in range(world):
        assert torch.allclose(grads[r], shard(full_s.grad, r), atol=1e-6)


def test_positive_mode_code_matches_paper_and_unmasked_differs():
    student, teacher = _feats(12, 6, 0), _feats(12, 6, 1)
    paper, _ = bam_loss(student, teacher, num_crops=3, positive_mode="paper")
    code, _ = bam_loss(student, teacher, num_crops=3, positive_mode="code")
    plain, _ = bam_loss(student, teacher, num_crops=3, mask_positives=False)
    assert code.item() == pytest.approx(paper.item(), rel=1e-6)
    assert abs(plain.item() - paper.item()) > 1e-3


def test_bad_arguments():
    x = torch.randn(12, 4)
    with pytest.raises(ValueError, match="positive_mode"):
        bam_loss(x, None, num_crops=3, positive_mode="zero")
    with pytest.raises(ValueError, match="num_crops"):
        bam_loss(x, None, num_crops=5)
    with pytest.raises(ValueError, match="teacher"):
        bam_loss(x, torch.randn(4, 4), num_crops=3)
    with pytest.raises(ValueError, match="all_gather"):
        bam_loss(torch.randn(2, 4), None, num_crops=2)  # one image on one rank: every column is a positive


def test_autocast_inputs_are_computed_in_fp32():
    student, teacher = _feats(12, 6, 0), _feats(12, 6, 1)
    ref, _ = bam_loss(student, teacher, num_crops=3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low, _ = bam_loss(student, teacher, num_crops=3)
    assert low.dtype == torch.float32 and low.item() == pytest.approx(ref.item(), rel=1e-6)
