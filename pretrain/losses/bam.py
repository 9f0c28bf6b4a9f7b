"""BAM loss: match each view's attention over the batch to a Sinkhorn-balanced attention of another view.

Shalam & Korman, "Unsupervised Representation Learning by Balanced Self Attention Matching", ECCV 2024, §3 and
App. 0.C; official code ``github.com/DanielShalam/BAM`` (``bam/bam_loss.py``).

Tensor layout (letters: V crops per image, G global crops (the first G crops), B images on this rank, W ranks,
D embedding dim, K = G*W*B columns)::

    student   (V*B, D)   rows crop-major: [crop 0: images 0..B-1][crop 1: images 0..B-1]...[crop V-1]
    teacher   (G*B, D) or (V*B, D), same order; None in teacher-free mode
    columns   (K, D)     the teacher's (teacher-free: the student's) global crops of every rank, crop-major over the
                         world: column m*W*B + r*B + i is crop m of image i of rank r

Equations (z L2-normalised; c the columns; a "positive" is a column of the same image, any view: G per row):

    S   = z_s c^T                                             (V*B, K) source similarities
    A   = log_softmax(S / tau) over non-positive columns      source "self-attention", paper Eq. (1), (3)
    S_t = z_t c^T (teacher) or stop_grad(S) (teacher-free)    target similarities, one row per teacher crop
    P   = Sinkhorn(exp(S_t / eps)), positives set to 0:       paper Eq. (4); `sinkhorn_iters` rounds of
          [columns scaled to equal sums over ALL rows of ALL ranks, then rows scaled to sum 1], then a final row
          normalisation; no gradient (paper §4.1 "Optimization")
    P_g = rows of global crop g; optional top-k: the k largest entries of mean_g P_g[i] form the support kept in
          every P_g[i] (then renormalised)
    L   = 1/G sum_g 1/(V-1) sum_{v != g} 1/B sum_i  -sum_j P_g[i, j] A_v[i, j]        (swapped CE, paper Eq. (5))

Every local crop is matched to every global target; local crops are never targets (no local-local pairs). The
loss is the mean over this rank's B images; averaging it over ranks (DDP) gives the world mean, equal to the loss
of one process holding the whole batch.

Paper vs official code (the defaults follow the paper; each code behaviour is an option):

* Positives. The paper (§3.2, App. 0.H) suppresses the attention entries of positive pairs before the softmax and
  the Sinkhorn; ``positive_mode="paper"`` excludes them exactly (logits -inf, their cross-entropy terms 0).
  ``"code"`` reproduces the release: logits set to the most negative finite float and the per-entry cross-entropy
  multiplied by (1 - mask). In fp32 the two agree to rounding. ``mask_positives=False`` is the ablation.
* Top-k sparsification of the target (``topk``): code only (k = 128 in its scripts; the README notes the paper
  does not mention it); default off here, the recipes set it. Its guard at HEAD (``masking_fn``) crashes; here
  ``topk=None``/``0`` disables it.
* Rows of the target: the code builds the Sinkhorn over the teacher outputs of ALL V crops (local rows only help
  to balance the columns); pass ``teacher`` with V*B rows for that, or G*B rows (teacher on global crops only).
  Teacher-free mode uses all V*B student rows, as the code's ``BAMLoss``.
* The code's Sinkhorn works in the probability domain with one global max shift and marginals r = 1/(K - G),
  c = 1/(W*n); the constants cancel in the final row normalisation, so only the shift and the order (columns,
  then rows) are kept here. Everything runs in fp32 with autocast disabled (the code forms S/eps in fp16).
* The eps schedule (linear ramp in the code, constant 0.05 in its scripts) is engine state: pass the current eps.

Distributed use: ``all_gather(t)`` must return the ranks' tensors concatenated along dim 0 in rank order
(differentiable, e.g. ``torch.distributed.nn.functional.all_gather``, in teacher-free mode: gradient flows into
the columns); ``all_reduce(t)`` must return the sum over ranks. All ranks must call with the same arguments.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from pretrain.losses.sinkhorn import Collective, identity, sinkhorn_balance

PositiveMode = Literal["paper", "code"]
POSITIVE_MODES = ("paper", "code")
DIAGNOSTICS = ("diag/source_entropy", "diag/target_entropy", "diag/marginal_error", "diag/topk_mass")


def positive_mask(rows: int, batch: int, world: int, num_global: int, rank: int, device=None) -> Tensor:
    """(rows, G*W*B) bool, True at the columns of the row's own image (row r is image r % B of this rank)."""
    image = torch.arange(rows, device=device) % batch
    cols = torch.arange(num_global, device=device)[None, :] * (world * batch) + rank * batch + image[:, None]
    mask = torch.zeros(rows, num_global * world * batch, dtype=torch.bool, device=device)
    return mask.scatter_(1, cols, True)


def _fill_value(mode: str) -> float:
    return float("-inf") if mode == "paper" else torch.finfo(torch.float32).min


@torch.no_grad()
def topk_shared(targets: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Keep, in every view, the k entries largest in the views' mean; renormalise rows.

    targets: (G, B, K) row-stochastic. Returns the sparsified (G, B, K) targets and the (G, B) mass each view's row
    had on the kept support before renormalisation.
    """
    support = targets.mean(0).topk(k, dim=-1).indices  # (B, k)
    keep = torch.zeros(targets.shape[1:], dtype=torch.bool, device=targets.device).scatter_(1, support, True)
    kept = targets * keep
    mass = kept.sum(-1)
    return kept / mass.clamp_min(torch.finfo(kept.dtype).tiny).unsqueeze(-1), mass


def bam_loss(
    student: Tensor,
    teacher: Tensor | None,
    *,
    num_crops: int,
    num_global: int = 2,
    tau: float = 0.1,
    eps: float = 0.05,
    sinkhorn_iters: int = 3,
    topk: int | None = None,
    mask_positives: bool = True,
    positive_mode: PositiveMode = "paper",
    all_gather: Collective = identity,
    all_reduce: Collective = identity,
    rank: int = 0,
    diagnostics: bool = True,
) -> tuple[Tensor, dict[str, float]]:
    """BAM loss of one rank (see the module docstring for layout, equations and options).

    Args:
        student: (V*B, D) projector outputs of all crops, crop-major, globals first (not normalised).
        teacher: (G*B, D) or (V*B, D) EMA-teacher outputs in the same order; ``None`` for the teacher-free variant
            (columns and Sinkhorn input then come from the student). Never receives a gradient.
        num_crops: V. num_global: G, the crops used as columns and targets.
        tau: source softmax temperature. eps: Sinkhorn entropy regularisation (target temperature).
        sinkhorn_iters: number of (column, row) scaling rounds. topk: shared top-k support, ``None``/0 for off.
        mask_positives, positive_mode: see the module docstring.
        all_gather, all_reduce, rank: collectives over ranks (identity and 0 for one process).
        diagnostics: compute the ``diag/*`` values (one extra ``all_reduce``; every rank must pass the same value).

    Returns:
        The scalar loss (fp32) and a dict with ``diag/source_entropy`` and ``diag/target_entropy`` (mean row
        entropy in nats of the student's and of the Sinkhorn target's global-crop rows, before top-k),
        ``diag/marginal_error`` (max |column sum / uniform - 1| of the Sinkhorn output over all ranks) and
        ``diag/topk_mass`` (mean target mass on the kept top-k support; 1 without top-k); empty if not
        ``diagnostics``.
    """
    views, n_global = num_crops, num_global
    if views < 2 or not 1 <= n_global <= views:
        raise ValueError(f"need num_crops >= 2 and 1 <= num_global <= num_crops, got {views} and {n_global}")
    if student.ndim != 2 or student.shape[0] % views:
        raise ValueError(f"student must be (num_crops*B, D) with num_crops={views}, got {tuple(student.shape)}")
    if positive_mode not in POSITIVE_MODES:
        raise ValueError(f"unknown positive_mode {positive_mode!r} (valid: {', '.join(POSITIVE_MODES)})")
    batch = student.shape[0] // views
    if teacher is not None and (teacher.shape[0] not in (n_global * batch, views * batch) or teacher.ndim != 2):
        raise ValueError(f"teacher must be ({n_global}*B or {views}*B, D) with B={batch}, got {tuple(teacher.shape)}")

    with torch.autocast(device_type=student.device.type, enabled=False):
        z_s = F.normalize(student.float(), dim=-1)
        z_t = None if teacher is None else F.normalize(teacher.detach().float(), dim=-1)
        local_cols = (z_s if z_t is None else z_t)[: n_global * batch]
        gathered = all_gather(local_cols)
        world = gathered.shape[0] // (n_global * batch)
        if world * n_global * batch != gathered.shape[0] or world * batch < 2:
            raise ValueError(f"all_gather returned {gathered.shape[0]} rows for {n_global}*{batch} local columns")
        cols = gathered.reshape(world, n_global, batch, -1).transpose(0, 1).reshape(n_global * world * batch, -1)
        num_cols = cols.shape[0]

        sim = z_s @ cols.T  # (V*B, K)
        sim_t = sim.detach() if z_t is None else z_t @ cols.T  # (R*B, K), R = rows crops of the target
        fill = _fill_value(positive_mode)
        mask = positive_mask(batch, batch, world, n_global, rank, student.device) if mask_positives else None

        target_logits = sim_t / eps
        source_logits = sim / tau
        if mask is not None:
            target_logits = target_logits.masked_fill(mask.repeat(sim_t.shape[0] // batch, 1), fill)
            source_logits = source_logits.masked_fill(mask.repeat(views, 1), fill)
        balanced = sinkhorn_balance(target_logits, sinkhorn_iters, all_gather=all_gather, all_reduce=all_reduce)
        targets = balanced[: n_global * batch].reshape(n_global, batch, num_cols)
        dense_targets = targets
        mass = None
        if topk and topk < num_cols:
            targets, mass = topk_shared(targets, topk)

        log_attn = source_logits.log_softmax(-1).reshape(views, batch, num_cols)
        if mask is not None:
            log_attn = log_attn.masked_fill(mask, 0.0) if positive_mode == "paper" else log_attn * (~mask)
        ce = -torch.einsum("gbk,vbk->gvb", targets, log_attn)  # (G, V, B)
        pairs = torch.ones(n_global, views, dtype=torch.bool, device=ce.device)
        pairs[torch.arange(n_global), torch.arange(n_global)] = False  # a target view is not its own source
        loss = ce[pairs].sum() / (n_global * (views - 1) * batch)

        diag: dict[str, float] = {}
        if diagnostics:
            diag = _diagnostics(log_attn[:n_global], mask, dense_targets, balanced, mass, world, all_reduce)
    return loss, diag


@torch.no_grad()
def _diagnostics(
    log_attn: Tensor,
    mask: Tensor | None,
    targets: Tensor,
    balanced: Tensor,
    mass: Tensor | None,
    world: int,
    all_reduce: Collective,
) -> dict[str, float]:
    """Global means of the ``diag/*`` values; one ``all_reduce`` of [column sums, three row sums]."""
    probs = log_attn.exp()
    if mask is not None:
        probs = probs.masked_fill(mask, 0.0)  # masked log-probabilities were zeroed above; their mass is 0
    sums = torch.stack(
        [
            torch.special.entr(probs).sum(),
            torch.special.entr(targets).sum(),
            torch.ones_like(targets[..., 0]).sum() if mass is None else mass.sum(),
        ]
    )
    reduced = all_reduce(torch.cat([balanced.sum(0), sums]))
    col_sums, (src, tgt, kept) = reduced[:-3], reduced[-3:]
    uniform = world * balanced.shape[0] / col_sums.numel()
    rows = world * targets.shape[0] * targets.shape[1]
    return {
        "diag/source_entropy": float(src / rows),
        "diag/target_entropy": float(tgt / rows),
        "diag/marginal_error": float((col_sums / uniform - 1).abs().max()),
        "diag/topk_mass": float(kept / rows),
    }
