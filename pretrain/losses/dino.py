"""DINO's self-distillation loss (Caron et al. 2021; official ``main_dino.py::DINOLoss``) as pure functions.

Layouts (B images on this rank, K prototypes): ``student`` (S * B, K) logits of S crops, crop-major (rows of crop 0,
then crop 1, ...), globals first; ``teacher`` (G * B, K) logits of the G global crops, same order; ``center`` (1, K).

    P_t(q) = softmax((teacher_q - center) / tau_t)      (detached)
    loss   = mean over pairs (q < G, v < S, v != q) of  mean_b  sum_k -P_t(q)[b, k] log softmax(student_v / tau_s)[b, k]

The center is updated *after* the loss from the raw teacher logits: ``c <- m c + (1 - m) mean_over_world_batch(t)``,
the batch sum all-reduced over ranks (:func:`updated_center`). The teacher temperature follows
:func:`teacher_temperature_schedule` indexed by epoch, as the official code.

Option (not in the DINO paper): DINOv2's ``train.centering: sinkhorn_knopp`` (Oquab et al. 2024, §4; official
``dinov2/loss/dino_clstoken_loss.py::sinkhorn_knopp_teacher``) replaces center and softmax by a Sinkhorn-Knopp
balancing of ``exp(teacher / tau_t)`` over the teacher rows of the whole world batch (3 iterations: prototypes to
equal mass, then each row to sum 1): :func:`sinkhorn_knopp_probs`. No center is used or updated then.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from pretrain.losses.sinkhorn import Collective, identity, sinkhorn_balance


def teacher_temperature_schedule(warmup_temp: float, temp: float, warmup_epochs: int, epochs: int) -> np.ndarray:
    """Per-epoch teacher temperature: ``linspace(warmup_temp, temp, warmup_epochs)`` then ``temp``.

    Length ``max(epochs, warmup_epochs)`` (the official code fails when epochs < warmup_epochs; here the warm-up is
    simply cut short by the end of training).
    """
    if warmup_epochs < 0 or temp <= 0 or warmup_temp <= 0:
        raise ValueError(
            f"teacher temperatures must be > 0 and warm-up epochs >= 0, got {warmup_temp}, {temp}, {warmup_epochs}"
        )
    ramp = np.linspace(warmup_temp, temp, warmup_epochs)
    return np.concatenate([ramp, np.full(max(epochs - warmup_epochs, 0), temp)])


def teacher_probs(teacher: Tensor, center: Tensor, temp: float) -> Tensor:
    """softmax((teacher - center) / temp) over the last axis, detached, fp32."""
    return F.softmax((teacher.float() - center) / temp, dim=-1).detach()


def sinkhorn_knopp_probs(
    teacher: Tensor,
    temp: float,
    iters: int = 3,
    *,
    all_gather: Collective = identity,
    all_reduce: Collective = identity,
) -> Tensor:
    """DINOv2's Sinkhorn-Knopp teacher targets: (R, K) logits -> (R, K) rows summing to 1 whose prototype masses are
    equal over the R rows of every rank (after ``iters`` rounds), fp32, no gradient. Equal to DINOv2's
    ``sinkhorn_knopp_teacher`` up to rounding (its global scale constants cancel; a global max shift is added)."""
    return sinkhorn_balance(teacher.detach().float() / temp, iters, all_gather=all_gather, all_reduce=all_reduce)


def cross_view_loss(student: Tensor, probs: Tensor, num_student: int, student_temp: float) -> tuple[Tensor, int]:
    """Sum over pairs (q, v != q) of the batch-mean cross-entropy, and the number of pairs.

    ``student`` (S * B, K) logits, ``probs`` (G * B, K) teacher probabilities; returns (sum, pairs).
    """
    num_teacher = probs.shape[0] * num_student // student.shape[0]
    log_p = F.log_softmax(student.float() / student_temp, dim=-1).chunk(num_student)
    targets = probs.chunk(num_teacher)
    total, pairs = student.new_zeros((), dtype=torch.float32), 0
    for q, target in enumerate(targets):
        for v, log_s in enumerate(log_p):
            if v == q:
                continue
            total = total + torch.sum(-target * log_s, dim=-1).mean()
            pairs += 1
    return total, pairs


def dino_loss(
    student: Tensor, teacher: Tensor, center: Tensor, num_student: int, teacher_temp: float, student_temp: float = 0.1
) -> Tensor:
    """The DINO loss (see the module docstring); ``num_student`` = S crops in ``student``."""
    return distillation_loss(student, teacher_probs(teacher, center, teacher_temp), num_student, student_temp)


def distillation_loss(student: Tensor, probs: Tensor, num_student: int, student_temp: float = 0.1) -> Tensor:
    """The DINO loss from ready teacher targets ``probs`` (G * B, K) (centred softmax or Sinkhorn-Knopp)."""
    if student.shape[0] % num_student or probs.shape[0] * num_student % student.shape[0]:
        raise ValueError(f"student rows {student.shape[0]} / teacher rows {probs.shape[0]} do not split into crops")
    total, pairs = cross_view_loss(student, probs, num_student, student_temp)
    if pairs == 0:
        raise ValueError("DINO needs at least one (teacher crop, other student crop) pair")
    return total / pairs


@torch.no_grad()
def updated_center(
    center: Tensor, teacher: Tensor, momentum: float, all_reduce: Callable[[Tensor, str], Tensor], world_size: int
) -> Tensor:
    """``momentum * center + (1 - momentum) * batch mean``; the mean is over the rows of every rank.

    ``teacher`` (R, K) (CLS logits) or (R, N, K) (patch logits: each row first averaged over its N tokens, as iBOT).
    """
    rows = teacher.float().mean(1) if teacher.ndim == 3 else teacher.float()
    batch_center = all_reduce(rows.sum(dim=0, keepdim=True), "sum") / (rows.shape[0] * world_size)
    return center * momentum + batch_center.reshape(center.shape) * (1 - momentum)


def entropy(probs: Tensor) -> Tensor:
    """Mean Shannon entropy (nats) of the rows of a (..., K) probability tensor."""
    return -(probs * probs.clamp_min(1e-12).log()).sum(-1).mean()
