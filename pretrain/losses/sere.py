"""SERE's self-relations and losses (Li et al., arXiv 2206.05184 / TPAMI 2023; official code MCG-NKU/SERE) as pure
functions.

Layouts (B images, C channels, an (h, w) patch map, n = h * w, M relation heads, d = C / M, S the overlap grid):

    feature map      (B, C, h, w)          after the SERE head (teacher: projection Z, student: predictor P)
    pixel relation   (B, M, n, n)          R_m = Z_m Z_m^T * d^-1/2, Z_m the contiguous channels [m d, (m+1) d)
    channel relation (B, C, C)             R = (Z / sqrt(n)) (Z / sqrt(n))^T = Z Z^T / (h w)
    resampled pixel  (B, M, S^2, S^2)      both axes sampled on the crop's overlap grid (:mod:`pretrain.overlap`)

Relations are raw logits; the softmax is applied only in the loss, after resampling. Resampling (the released
``sampling``): bilinear ``grid_sample``, ``align_corners=False``, zero padding, in fp32; the key axis is sampled
first (the relation viewed as (B, M * n, h, w)), then the query axis. The cross-entropy of one pair is

    H(T, S) = mean over (b, m, query row) of  sum_key  -softmax(T / t)_key * log_softmax(S)_key

(teacher sharpened by t and detached, student at temperature 1, no centring). Pairs, for G teacher (global) crops and
the student's V = G + L crops, globals first:

* pixel: teacher global q vs student global v != q on the ``global_grid`` (13) overlap grid of crops q and v, and
  teacher global q vs every student local l on the ``local_grid`` (6) grid; each crop's relation is sampled with the
  grid in its own coordinates; one average over all G (G - 1) + G L terms. A pair without overlap samples zeros on
  both sides: its term is exactly log S^2 with no gradient, and it still counts in the mean (as released).
* channel: teacher global q vs every student crop v != q (no geometry); one average over the same number of terms.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from pretrain.overlap import overlap_grids


def pixel_relation(z: Tensor, heads: int) -> Tensor:
    """(B, C, h, w) -> (B, M, n, n): per-head token-to-token dot products scaled by (C / M)^-1/2, in fp32."""
    b, c, h, w = z.shape
    if c % heads:
        raise ValueError(f"{c} channels do not split into {heads} relation heads")
    d = c // heads
    with torch.autocast(z.device.type, enabled=False):
        tokens = z.float().reshape(b, heads, d, h * w).transpose(2, 3)  # (B, M, n, d)
        return tokens @ tokens.transpose(2, 3) * d**-0.5


def channel_relation(z: Tensor) -> Tensor:
    """(B, C, h, w) -> (B, C, C): channel-to-channel dot products over the map divided by h * w, in fp32."""
    b, c, h, w = z.shape
    with torch.autocast(z.device.type, enabled=False):
        flat = z.float().reshape(b, c, h * w) / math.sqrt(h * w)
        return flat @ flat.transpose(1, 2)


def resample_relation(relation: Tensor, hw: tuple[int, int], grid: Tensor) -> Tensor:
    """(B, M, n, n) on an (h, w) map -> (B, M, S^2, S^2): keys, then queries, sampled at ``grid`` (B, S, S, 2)."""
    b, m, n, n2 = relation.shape
    h, w = hw
    if n != h * w or n2 != n:
        raise ValueError(f"relation {tuple(relation.shape)} does not match an {h}x{w} map")
    s2 = grid.shape[1] * grid.shape[2]

    def sample(x: Tensor) -> Tensor:  # (B, M, rows, n) -> (B, M, S^2, rows): the last axis sampled as a map
        rows = x.shape[2]
        maps = x.float().reshape(b, m * rows, h, w)
        out = F.grid_sample(maps, grid.float(), mode="bilinear", padding_mode="zeros", align_corners=False)
        return out.reshape(b, m, rows, s2).transpose(2, 3)

    return sample(sample(relation))  # keys -> (B, M, S^2 keys, n queries) -> (B, M, S^2 queries, S^2 keys)


def relation_cross_entropy(student: Tensor, teacher: Tensor, teacher_temp: float) -> Tensor:
    """Mean over every leading index of ``sum_last -softmax(teacher / t) * log_softmax(student)``; teacher detached."""
    if student.shape != teacher.shape:
        raise ValueError(f"student {tuple(student.shape)} and teacher {tuple(teacher.shape)} relations differ")
    target = F.softmax(teacher.detach().float() / teacher_temp, dim=-1)
    return torch.sum(-target * F.log_softmax(student.float(), dim=-1), dim=-1).mean()


def pixel_pair_loss(
    s_rel: Tensor,
    s_hw: tuple[int, int],
    s_grid: Tensor,
    t_rel: Tensor,
    t_hw: tuple[int, int],
    t_grid: Tensor,
    temp: float,
) -> Tensor:
    """One (teacher crop, student crop) term of the pixel loss on their overlap grids."""
    return relation_cross_entropy(resample_relation(s_rel, s_hw, s_grid), resample_relation(t_rel, t_hw, t_grid), temp)


def sere_pixel_loss(
    student: list[Tensor],
    student_hw: list[tuple[int, int]],
    teacher: list[Tensor],
    teacher_hw: tuple[int, int],
    boxes: Tensor,
    flips: Tensor,
    teacher_temp: float = 0.5,
    global_grid: int = 13,
    local_grid: int = 6,
) -> Tensor:
    """L_pix (module docstring). ``student``: V relations (B, M, n_v, n_v), globals first, on maps ``student_hw``;
    ``teacher``: G relations of the global crops; ``boxes`` (B, V, 4) and ``flips`` (B, V) of the student's crops."""
    num_global = len(teacher)
    if boxes.shape[1] != len(student) or len(student_hw) != len(student) or num_global > len(student):
        raise ValueError(f"{len(student)} student crops, {num_global} teacher crops, boxes {tuple(boxes.shape)}")
    terms = []
    for q, t_rel in enumerate(teacher):
        for v, s_rel in enumerate(student):
            if v == q:
                continue
            size = global_grid if v < num_global else local_grid
            t_grid, s_grid = overlap_grids(boxes[:, q], boxes[:, v], flips[:, q], flips[:, v], size)
            terms.append(pixel_pair_loss(s_rel, student_hw[v], s_grid, t_rel, teacher_hw, t_grid, teacher_temp))
    if not terms:
        raise ValueError("SERE needs at least one (teacher crop, other student crop) pair")
    return torch.stack(terms).mean()


def sere_channel_loss(student: list[Tensor], teacher: list[Tensor], teacher_temp: float = 0.1) -> Tensor:
    """L_ch (module docstring). ``student``: V relations (B, C, C), globals first; ``teacher``: G relations."""
    terms = [
        relation_cross_entropy(s_rel, t_rel, teacher_temp)
        for q, t_rel in enumerate(teacher)
        for v, s_rel in enumerate(student)
        if v != q
    ]
    if not terms:
        raise ValueError("SERE needs at least one (teacher crop, other student crop) pair")
    return torch.stack(terms).mean()
