"""The DAVIS-2017 semi-supervised J&F metric, written from its definition (Pont-Tuset et al. 2017; the
davis2017-evaluation code is the reference for the conventions below, none of its code is used).

Layouts: a label map is (H, W) integer (0 = background, 1..K = objects, 255 = void); a video is (T, H, W); object
masks are bool (K, T, H, W). Scores are fractions in [0, 1].

* **J** (region similarity): |S ∩ G| / |S ∪ G| per object and frame; an empty union scores 1.
* **F** (contour accuracy): 1-pixel boundaries by the ``seg2bmap`` rule (a pixel is on the boundary when it differs
  from its east, south or south-east neighbour; the last row compares east only, the last column south only, the
  bottom-right pixel is never a boundary); a boundary pixel matches when the other boundary lies within a disk of
  radius r = ceil(0.008 * sqrt(H^2 + W^2)) pixels (8 px for 854x480). P = matched predicted / predicted boundary
  pixels, R = matched GT / GT boundary pixels, with the official empty-set conventions (predicted boundary empty:
  P = 1, R = 0; GT empty: P = 0, R = 1; both empty: 1, 1) and F = 2PR / (P + R), 0 when P + R = 0.
* **Semi-supervised rule**: the first and last frames are not scored; the objects are the labels 1..K with K the
  maximum label of the first GT frame (void becomes background; the void mask is not used); a prediction with a
  label above K over the scored frames is an error; objects missing from the prediction are empty masks.
* **Per object**: Mean = nanmean, Recall = fraction of frames scoring > 0.5, Decay = mean of the first minus mean
  of the last of 4 overlapping bins whose edges are round(linspace(1, N, 5) + 1e-10) - 1, each bin including its
  right edge. The official code casts the edges to uint8, which wraps for N > 256 frames; we keep int64 (identical
  for N <= 256, correct beyond).
* **Global**: every object of every sequence is one entry; J-Mean, J-Recall, ... average over objects and
  J&F-Mean = (J-Mean + F-Mean) / 2 (object-weighted, not sequence-weighted).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import cv2
import numpy as np

from sslcore.errors import DataError

BOUND_TH = 0.008
VOID = 255
GLOBAL_COLUMNS = ("J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay")
SEQUENCE_COLUMNS = ("Sequence", "J-Mean", "F-Mean")


def jaccard(gt: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Region IoU over the last two axes: bool (..., H, W) x 2 -> float (...); an empty union gives 1."""
    gt, pred = gt.astype(bool), pred.astype(bool)
    inter = np.logical_and(gt, pred).sum(axis=(-2, -1))
    union = np.logical_or(gt, pred).sum(axis=(-2, -1))
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(union == 0, 1.0, inter / np.maximum(union, 1))
    return np.asarray(out, dtype=np.float64)


def seg2bmap(mask: np.ndarray) -> np.ndarray:
    """1-pixel boundary map of a binary (H, W) mask (see the module docstring for the rule)."""
    seg = mask.astype(bool)
    east = np.zeros_like(seg)
    south = np.zeros_like(seg)
    south_east = np.zeros_like(seg)
    east[:, :-1] = seg[:, 1:]
    south[:-1, :] = seg[1:, :]
    south_east[:-1, :-1] = seg[1:, 1:]
    bmap = (seg ^ east) | (seg ^ south) | (seg ^ south_east)
    bmap[-1, :] = seg[-1, :] ^ east[-1, :]
    bmap[:, -1] = seg[:, -1] ^ south[:, -1]
    bmap[-1, -1] = False
    return bmap


def disk(radius: int) -> np.ndarray:
    """uint8 (2r+1, 2r+1) structuring element with ones where x^2 + y^2 <= r^2."""
    grid = np.arange(-radius, radius + 1)
    return ((grid[:, None] ** 2 + grid[None, :] ** 2) <= radius**2).astype(np.uint8)


def boundary_radius(height: int, width: int, bound_th: float = BOUND_TH) -> int:
    """Matching tolerance in pixels: ``bound_th`` itself if >= 1, else ceil(bound_th * image diagonal)."""
    return int(bound_th) if bound_th >= 1 else int(math.ceil(bound_th * math.hypot(height, width)))


def precision_recall(gt: np.ndarray, pred: np.ndarray, bound_th: float = BOUND_TH) -> tuple[float, float]:
    """Boundary precision and recall of two binary (H, W) masks, with the empty-set conventions."""
    gt_b, pred_b = seg2bmap(gt), seg2bmap(pred)
    n_gt, n_pred = int(gt_b.sum()), int(pred_b.sum())
    if n_pred == 0 or n_gt == 0:
        return (1.0 if n_pred == 0 else 0.0), (1.0 if n_gt == 0 else 0.0)
    radius = boundary_radius(*gt.shape, bound_th)
    # Only the window around both boundaries (plus the radius) can match: crop to it before dilating (same result,
    # much less work on 854x480 frames with small objects).
    both = gt_b | pred_b
    rows, cols = np.flatnonzero(both.any(axis=1)), np.flatnonzero(both.any(axis=0))
    top, left = max(rows[0] - radius, 0), max(cols[0] - radius, 0)
    window = (slice(top, rows[-1] + radius + 1), slice(left, cols[-1] + radius + 1))
    gt_b, pred_b = gt_b[window], pred_b[window]
    kernel = disk(radius)
    gt_dil = cv2.dilate(gt_b.astype(np.uint8), kernel).astype(bool)
    pred_dil = cv2.dilate(pred_b.astype(np.uint8), kernel).astype(bool)
    precision = np.logical_and(pred_b, gt_dil).sum() / n_pred
    recall = np.logical_and(gt_b, pred_dil).sum() / n_gt
    return float(precision), float(recall)


def f_measure(gt: np.ndarray, pred: np.ndarray, bound_th: float = BOUND_TH) -> float:
    """Boundary F-measure of two binary (H, W) masks: 2PR / (P + R), 0 when P + R = 0."""
    precision, recall = precision_recall(gt, pred, bound_th)
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


def decay_bin_edges(n: int) -> np.ndarray:
    """The 5 bin edges of the official Decay: round(linspace(1, n, 5) + 1e-10) - 1 (int64, see the docstring)."""
    return (np.round(np.linspace(1, n, 5) + 1e-10) - 1).astype(np.int64)


def statistics(values: np.ndarray) -> tuple[float, float, float]:
    """(Mean, Recall, Decay) of one object's per-frame scores (N,)."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return math.nan, math.nan, math.nan
    mean = float(np.nanmean(values))
    recall = float(np.nanmean(values > 0.5))
    ids = decay_bin_edges(len(values))
    bins = [values[ids[i] : ids[i + 1] + 1] for i in range(4)]
    decay = float(np.nanmean(bins[0]) - np.nanmean(bins[3]))
    return mean, recall, decay


def object_masks(labels: np.ndarray, num_objects: int) -> np.ndarray:
    """Integer (T, H, W) label maps -> bool (K, T, H, W) with mask k-1 = (labels == k)."""
    ids = np.arange(1, num_objects + 1).reshape(-1, *([1] * labels.ndim))
    return labels[None] == ids


def evaluate_sequence(
    gt: np.ndarray, pred: np.ndarray, name: str = "sequence", bound_th: float = BOUND_TH
) -> tuple[np.ndarray, np.ndarray]:
    """Per-object, per-frame J and F of one sequence under the semi-supervised rule.

    Args:
        gt: integer (T, H, W) ground-truth label maps of every frame (255 = void, treated as background).
        pred: integer (T - 2, H, W) predicted label maps of the scored frames 1..T-2 (or (T, H, W): the first and
            last frames are then dropped unread).
        name: the sequence name, for error messages.

    Returns:
        J and F, each float (K, T - 2).

    Raises:
        DataError: shapes disagree or the prediction holds a label above K.
    """
    gt = np.where(gt == VOID, 0, gt)
    num_objects = int(gt[0].max())
    gt = gt[1:-1]
    if pred.shape[0] == gt.shape[0] + 2:
        pred = pred[1:-1]
    if pred.shape != gt.shape:
        raise DataError(f"{name}: prediction shape {pred.shape} does not match the scored GT frames {gt.shape}")
    pred_objects = int(pred.max()) if pred.size else 0
    if pred_objects > num_objects:
        raise DataError(
            f"{name}: the prediction has object index {pred_objects} but the first GT frame has only "
            f"{num_objects} object(s)"
        )
    gt_masks = object_masks(gt, num_objects)
    pred_masks = object_masks(pred, num_objects)  # objects absent from the prediction are empty masks
    j = jaccard(gt_masks, pred_masks)
    f = np.zeros_like(j)
    for k in range(num_objects):
        for t in range(gt.shape[0]):
            f[k, t] = f_measure(gt_masks[k, t], pred_masks[k, t], bound_th)
    return j, f


def summarize(per_sequence: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> tuple[dict[str, float], list[dict]]:
    """Global J&F numbers and per-object rows from {sequence: (J (K, T'), F (K, T'))}.

    Returns:
        (global, rows): ``global`` maps :data:`GLOBAL_COLUMNS` to fractions (object-weighted means); ``rows`` holds
        one ``{"Sequence": "<seq>_<k>", "J-Mean": ..., "F-Mean": ...}`` per object (k from 1), in input order.
    """
    stats: dict[str, list[float]] = {key: [] for key in ("JM", "JR", "JD", "FM", "FR", "FD")}
    rows = []
    for seq, (j, f) in per_sequence.items():
        for k in range(j.shape[0]):
            jm, jr, jd = statistics(j[k])
            fm, fr, fd = statistics(f[k])
            for key, value in zip(stats, (jm, jr, jd, fm, fr, fd)):
                stats[key].append(value)
            rows.append({"Sequence": f"{seq}_{k + 1}", "J-Mean": jm, "F-Mean": fm})
    if not rows:
        raise DataError("no objects to score (every first GT frame is empty)")
    mean = {key: float(np.mean(values)) for key, values in stats.items()}
    out = {
        "J&F-Mean": (mean["JM"] + mean["FM"]) / 2,
        "J-Mean": mean["JM"],
        "J-Recall": mean["JR"],
        "J-Decay": mean["JD"],
        "F-Mean": mean["FM"],
        "F-Recall": mean["FR"],
        "F-Decay": mean["FD"],
    }
    return out, rows
