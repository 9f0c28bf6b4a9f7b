"""iBOT's loss (Zhou et al. 2022; official ``main_ibot.py::iBOTLoss``): DINO's CLS term + masked patch prediction.

Layouts (B images on this rank, G global and S student crops, N patches of a global crop, K / K2 prototypes):
``s_cls`` (S * B, K) crop-major, globals first; ``t_cls`` (G * B, K); ``s_patch``/``t_patch`` (G * B, N, K2) for the
global crops (student: masked inputs, teacher: unmasked); ``masks`` (G * B, N) bool (True = masked); centers
(1, K) and (1, 1, K2).

    L_cls   = mean over pairs (q, v != q) of the DINO cross-entropy (locals are student crops only)
    L_mim^q = mean_b [ sum_{n masked} H(P_t(t_patch_q)[b, n], student_q[b, n]) / max(1, #masked_b) ]
    L_mim   = mean over q of L_mim^q                      (same view, masked positions only)
    loss    = lambda1 * L_cls + lambda2 * L_mim

An image with no masked patch contributes 0 to its view's mean and still counts in the denominator (the official
``clamp(min=1)`` then ``.mean()``). Both centers are updated after the loss (:func:`pretrain.losses.dino.updated_center`;
the patch center from each image's mean over all its patch tokens).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from pretrain.losses.dino import cross_view_loss, teacher_probs


def masked_patch_loss(
    s_patch: Tensor, t_patch: Tensor, masks: Tensor, center2: Tensor, teacher_temp: float, student_temp: float
) -> Tensor:
    """Per-image masked-patch cross-entropy averaged over images: (R, N, K2) x2, (R, N) -> scalar."""
    probs = teacher_probs(t_patch, center2, teacher_temp)
    per_token = torch.sum(-probs * F.log_softmax(s_patch.float() / student_temp, dim=-1), dim=-1)  # (R, N)
    m = masks.float()
    return (torch.sum(per_token * m, dim=-1) / m.sum(dim=-1).clamp(min=1.0)).mean()


def ibot_loss(
    s_cls: Tensor,
    t_cls: Tensor,
    s_patch: Tensor,
    t_patch: Tensor,
    masks: Tensor,
    center: Tensor,
    center2: Tensor,
    num_student: int,
    teacher_temp: float,
    teacher_patch_temp: float,
    student_temp: float = 0.1,
    lambda1: float = 1.0,
    lambda2: float = 1.0,
) -> tuple[Tensor, Tensor, Tensor]:
    """(loss, L_cls, L_mim) as in the module docstring."""
    num_global = t_cls.shape[0] * num_student // s_cls.shape[0]
    if s_patch.shape != t_patch.shape or masks.shape != s_patch.shape[:2] or s_patch.shape[0] != t_cls.shape[0]:
        raise ValueError(
            f"patch logits {tuple(s_patch.shape)}/{tuple(t_patch.shape)} and masks {tuple(masks.shape)} must share "
            f"(G * B, N) with the {t_cls.shape[0]} teacher CLS rows"
        )
    total, pairs = cross_view_loss(s_cls, teacher_probs(t_cls, center, teacher_temp), num_student, student_temp)
    l_cls = total / max(pairs, 1)
    views = zip(s_patch.chunk(num_global), t_patch.chunk(num_global), masks.chunk(num_global))
    l_mim = sum(masked_patch_loss(s, t, m, center2, teacher_patch_temp, student_temp) for s, t, m in views) / num_global
    return lambda1 * l_cls + lambda2 * l_mim, l_cls, l_mim
