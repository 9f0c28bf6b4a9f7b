"""DINO's label propagation for semi-supervised video object segmentation, as pure tensor functions.

The protocol (DINO ``eval_video_segmentation.py``, after Jabri et al. 2020, appendix F): the labels of target frame
t are a weighted vote of the soft labels of its context frames, the first frame (ground truth, one-hot) and the
``n_last_frames`` previous frames (their propagated soft labels: the low-resolution probability maps before
upsampling and normalisation, not the argmax). With L2-normalised patch features f:

1. affinity A[i, (c, j)] = exp(<f_t,i, f_c,j> / 0.1) for target patch i and patch j of context frame c;
2. zeroed outside a (2s+1)x(2s+1) window, s = ``size_mask_neighborhood`` patches (Chebyshev distance, s <= 0: off);
3. per target patch, every entry below the k-th largest over *all context frames jointly* is zeroed (ties with
   the k-th value are kept, as DINO's ``aff[aff < kth] = 0``; ties are judged on the scaled similarities rather
   than on their float32 exponentials, which differs only if two distinct similarities round to one exponential),
   and the kept entries are normalised to sum to 1;
4. label_t[i] = sum over (c, j) of W[i, (c, j)] * label_c[j].

Layouts (letters): T frames, B a chunk of target frames, C context slots, N = h*w patches (row-major), D feature
dim, K label channels (background + objects). Weights are stored target-major, ``W[b, i, c * N + j]`` (DINO builds
the transpose, sources x targets, and normalises its columns: the same numbers).

Because the weights depend on features only, the weights of a chunk of target frames are computed in one batched
product (on whatever device the features live: GPU when present, CPU otherwise); only the cheap label products run
frame by frame. No globals, no device choice in here.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

TEMPERATURE = 0.1


def neighborhood_mask(h: int, w: int, size: int, device: torch.device | str | None = None) -> Tensor | None:
    """float (N, N) mask, M[i, j] = 1 iff patches i and j (row-major on an h x w grid) are within ``size`` rows and
    ``size`` columns of each other; None when ``size`` <= 0 (no restriction)."""
    if size <= 0:
        return None
    rows = torch.arange(h, device=device).repeat_interleave(w)
    cols = torch.arange(w, device=device).repeat(h)
    near = ((rows[:, None] - rows[None, :]).abs() <= size) & ((cols[:, None] - cols[None, :]).abs() <= size)
    return near.float()


def context_slots(t: int, n_last_frames: int) -> list[int]:
    """Context frames of target t >= 1: the first frame, then the previous ``n_last_frames`` frames (never 0 twice)."""
    return [0, *range(max(1, t - n_last_frames), t)]


def affinity_logits(
    target: Tensor, sources: Tensor, mask: Tensor | None = None, temperature: float = TEMPERATURE
) -> Tensor:
    """Scaled similarities <f_t,i, f_c,j> / temperature, -inf outside the neighbourhood window.

    Args:
        target: (B, N, D) L2-normalised target features.
        sources: (B, C, N, D) L2-normalised context features.
        mask: (N, N) neighbourhood mask (target patch i, source patch j; nonzero = allowed) or None.

    Returns:
        (B, N, C * N) logits, column c * N + j for patch j of context slot c: one batched matmul, plus one in-place
        pass for the mask.
    """
    batch, ctx, n, dim = sources.shape
    logits = torch.bmm(target * (1.0 / temperature), sources.reshape(batch, ctx * n, dim).transpose(1, 2))
    if mask is not None:
        bias = torch.zeros(n, n, dtype=logits.dtype, device=logits.device).masked_fill_(~mask.bool(), float("-inf"))
        logits.view(batch, n, ctx, n).add_(bias[None, :, None, :])
    return logits


def propagation_weights(
    target: Tensor,
    sources: Tensor,
    valid: Tensor | None = None,
    mask: Tensor | None = None,
    topk: int = 5,
    temperature: float = TEMPERATURE,
) -> Tensor:
    """Normalised top-k affinities of a chunk of target frames to their context frames, as a dense matrix.

    The readable form of steps 1-3 (used by tests and for inspection); :func:`propagate` keeps only the k kept
    entries per row (:func:`topk_weights`), which gives the same labels without the dense exp and product.

    Args:
        target: (B, N, D) L2-normalised target features.
        sources: (B, C, N, D) L2-normalised context features.
        valid: bool (B, C); False marks a padding slot (its affinities are zeroed). None: all valid.
        mask: (N, N) neighbourhood mask (target patch i, source patch j; nonzero = allowed) or None.

    Returns:
        (B, N, C * N) weights; each target patch's row sums to 1.
    """
    batch, ctx, n, _ = sources.shape
    logits = affinity_logits(target, sources, mask, temperature)
    if valid is not None:
        logits.view(batch, n, ctx, n).masked_fill_(~valid.bool()[:, None, :, None], float("-inf"))
    kth = logits.topk(min(topk, ctx * n), dim=-1).values[..., -1:]
    weights = logits.masked_fill_(logits < kth, float("-inf")).exp_()
    return weights.div_(weights.sum(dim=-1, keepdim=True))


def topk_weights(logits: Tensor, topk: int) -> tuple[Tensor, Tensor, Tensor]:
    """The kept entries of each row of ``logits`` (B, N, M) and where exact ties make the k-th value ambiguous.

    Returns:
        weights (B, N, k') normalised exp of the k' = min(topk, M) largest logits, their column indices (B, N, k'),
        and a bool (B, N) marking rows whose (k'+1)-th largest logit equals the k'-th (finite): DINO keeps every
        entry tied with the k-th, so those rows need the dense form.
    """
    kept = min(topk, logits.shape[-1])
    values, index = logits.topk(min(kept + 1, logits.shape[-1]), dim=-1)
    if values.shape[-1] > kept:
        kth, after = values[..., kept - 1], values[..., kept]
        ties = (after == kth) & torch.isfinite(kth)
    else:
        ties = torch.zeros(values.shape[:-1], dtype=torch.bool, device=values.device)
    weights = values[..., :kept].exp()
    return weights.div_(weights.sum(-1, keepdim=True)), index[..., :kept], ties


def _chunk_size(n: int, ctx: int, budget_bytes: int) -> int:
    per_frame = n * ctx * n * 4  # the float32 logits block
    return max(1, budget_bytes // per_frame)


def _chunks(num_frames: int, n_last_frames: int, chunk_of: Callable[[int], int]) -> list[list[int]]:
    """Consecutive target frames 1..T-1 grouped so that all frames of a group have the same number of context slots
    (frames 1..n_last_frames have fewer), at most ``chunk_of(slots)`` frames per group."""
    groups: list[list[int]] = []
    for t in range(1, num_frames):
        slots = len(context_slots(t, n_last_frames))
        if groups and len(context_slots(groups[-1][0], n_last_frames)) == slots and len(groups[-1]) < chunk_of(slots):
            groups[-1].append(t)
        else:
            groups.append([t])
    return groups


def propagate(
    features: Tensor,
    first: Tensor,
    grid: tuple[int, int],
    *,
    n_last_frames: int = 7,
    topk: int = 5,
    size_mask_neighborhood: int = 12,
    temperature: float = TEMPERATURE,
    budget_bytes: int = 1 << 30,
) -> Tensor:
    """Soft labels of every frame of a video by label propagation.

    Per group of target frames with the same context: one batched affinity product (:func:`affinity_logits`), one
    top-(k+1) per target patch, then per frame label_t[i] = sum over the k kept entries of w * label (a gather, no
    dense exp or product). Rows with a tie at the k-th value (identical frames, duplicated features) are recomputed
    densely from the same logits, keeping every tied entry as DINO does.

    Args:
        features: (T, N, D) patch features of all frames (not necessarily normalised; normalised here).
        first: (N, K) labels of frame 0 (one-hot ground truth on the patch grid).
        grid: (h, w) with h * w = N.
        budget_bytes: memory for one group's (B, N, C * N) logits (sets the group size).

    Returns:
        (T, N, K) soft labels, row 0 = ``first``.
    """
    num_frames, n, _ = features.shape
    if grid[0] * grid[1] != n:
        raise ValueError(f"grid {grid} does not match {n} patches")
    feats = F.normalize(features.float(), dim=-1)
    mask = neighborhood_mask(*grid, size_mask_neighborhood, device=feats.device)
    labels = torch.empty(num_frames, n, first.shape[-1], dtype=feats.dtype, device=feats.device)
    labels[0] = first.to(feats)
    for targets in _chunks(num_frames, n_last_frames, lambda c: _chunk_size(n, c, budget_bytes)):
        ctx = torch.tensor([context_slots(t, n_last_frames) for t in targets], device=feats.device)  # (B, C)
        logits = affinity_logits(feats[targets], feats[ctx], mask, temperature)  # (B, N, C * N)
        weights, index, ties = topk_weights(logits, topk)
        for b, t in enumerate(targets):
            source = labels[ctx[b]].reshape(-1, labels.shape[-1])  # (C * N, K)
            labels[t] = (weights[b, :, :, None] * source[index[b]]).sum(1)
            rows = ties[b].nonzero()[:, 0]
            if len(rows):
                row_logits = logits[b, rows]
                kth = row_logits.gather(1, index[b, rows, -1:])
                dense = row_logits.masked_fill(row_logits < kth, float("-inf")).exp_()
                labels[t, rows] = (dense / dense.sum(1, keepdim=True)) @ source
    return labels


def upsample_argmax(soft: Tensor, grid: tuple[int, int], patch: int) -> Tensor:
    """Full-resolution label indices from soft patch labels.

    Bilinear upsampling by ``patch`` (align_corners False), per-channel min-max normalisation of every channel whose
    maximum is positive, argmax over channels. (DINO divides by zero on a constant positive channel; such a channel
    is left unnormalised here.)

    Args:
        soft: (B, N, K) soft labels.

    Returns:
        long (B, h * patch, w * patch) label indices.
    """
    batch, _, k = soft.shape
    maps = soft.transpose(1, 2).reshape(batch, k, *grid)
    maps = F.interpolate(maps, scale_factor=patch, mode="bilinear", align_corners=False, recompute_scale_factor=False)
    lo = maps.amin(dim=(-2, -1), keepdim=True)
    hi = maps.amax(dim=(-2, -1), keepdim=True)
    span = hi - lo
    normalise = (hi > 0) & (span > 0)
    maps = torch.where(normalise, (maps - lo) / torch.where(span > 0, span, torch.ones_like(span)), maps)
    return maps.argmax(dim=1)


def one_hot_labels(labels: Tensor, num_channels: int | None = None) -> Tensor:
    """long (N,) label indices -> float (N, K) one-hot, K = max + 1 unless given."""
    k = int(labels.max()) + 1 if num_channels is None else num_channels
    return F.one_hot(labels.long(), k).float()
