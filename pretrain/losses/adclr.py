"""ADCLR's loss (Zhang et al., ICLR 2023, §3.2 Eq. 6): DINO's global CLS term + a cross-view term per query crop.

Layouts (B images on this rank, G global and S student crops, Q query crops per image, K prototypes): ``s_cls``
(S * B, K) crop-major, globals first; ``t_cls`` (G * B, K); ``s_query``/``t_query`` (G * B, Q, K): the logits of the
Q query tokens appended to global view g (rows g * B .. (g + 1) * B), student and teacher; centers (1, K) for CLS and
a separate (1, 1, K) for queries.

    L_global = mean over pairs (q < G, v < S, v != q) of the DINO cross-entropy          (DINO multi-crop)
    L_local  = mean over pairs (a != b < G) of  mean_b  (1 / Q) sum_i H(P_t(t_query_a[b, i]), s_query_b[b, i])
    loss     = L_global + lambda * L_local                                               (paper: lambda = 0.5)

with P_t = softmax((t - center) / tau_t) (each term its own center and teacher temperature) and
H(p, s) = -sum_k p_k log softmax(s / tau_s)_k. Query i's positive is the *same query crop* read in the context of the
other global view (correspondence-free). The query center is updated after the loss like iBOT's patch center, from
the batch mean of each row's token mean (:func:`pretrain.losses.dino.updated_center`).

PQCL (the released code, ``main_pos_bot.py::PQCLLoss``) computes its query term as the plain mean over both views,
images and query tokens of H(teacher target, student query) with one teacher target per query (the local crop's
patch tokens): the same number as :func:`query_loss` given ``t_query`` repeated over the G views.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from pretrain.losses.dino import cross_view_loss, teacher_probs


def query_loss(
    s_query: Tensor, t_query: Tensor, center: Tensor, num_global: int, teacher_temp: float, student_temp: float = 0.1
) -> Tensor:
    """L_local of the module docstring: (G * B, Q, K) x2 -> scalar (mean over view pairs, images and queries)."""
    if s_query.shape != t_query.shape or s_query.ndim != 3 or s_query.shape[0] % num_global:
        raise ValueError(
            f"query logits must be (G * B, Q, K) for student and teacher alike, got {tuple(s_query.shape)} and "
            f"{tuple(t_query.shape)} with G = {num_global}"
        )
    if num_global < 2:
        raise ValueError("the query term needs two global views (teacher of view a, student of view b != a)")
    probs = teacher_probs(t_query, center, teacher_temp).chunk(num_global)
    log_s = F.log_softmax(s_query.float() / student_temp, dim=-1).chunk(num_global)
    total, pairs = s_query.new_zeros((), dtype=torch.float32), 0
    for a, target in enumerate(probs):
        for b, log_p in enumerate(log_s):
            if a == b:
                continue
            total = total + torch.sum(-target * log_p, dim=-1).mean()  # mean over images and the Q queries
            pairs += 1
    return total / pairs


def adclr_loss(
    s_cls: Tensor,
    t_cls: Tensor,
    s_query: Tensor,
    t_query: Tensor,
    center: Tensor,
    center_query: Tensor,
    num_student: int,
    teacher_temp: float,
    teacher_query_temp: float,
    student_temp: float = 0.1,
    lam: float = 0.5,
) -> tuple[Tensor, Tensor, Tensor]:
    """(loss, L_global, L_local) as in the module docstring; ``num_student`` = S crops in ``s_cls``."""
    if s_cls.shape[0] % num_student or t_cls.shape[0] * num_student % s_cls.shape[0]:
        raise ValueError(f"student rows {s_cls.shape[0]} / teacher rows {t_cls.shape[0]} do not split into crops")
    num_global = t_cls.shape[0] * num_student // s_cls.shape[0]
    if t_query.shape[0] != t_cls.shape[0]:
        raise ValueError(f"query logits have {t_query.shape[0]} rows, the teacher CLS {t_cls.shape[0]} (G * B each)")
    total, pairs = cross_view_loss(s_cls, teacher_probs(t_cls, center, teacher_temp), num_student, student_temp)
    l_global = total / max(pairs, 1)
    l_local = query_loss(s_query, t_query, center_query, num_global, teacher_query_temp, student_temp)
    return l_global + lam * l_local, l_global, l_local
