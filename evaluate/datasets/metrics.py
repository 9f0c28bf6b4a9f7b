"""Classification metrics of the protocols: top-1 accuracy and mean per-class accuracy, in percent.

Mean per-class accuracy (Kornblith et al. 2019's metric for FGVC-Aircraft, Oxford-IIIT Pets, Oxford Flowers-102 and
Caltech-101) is the unweighted mean, over the classes that occur in the ground truth, of the fraction of each class's
images predicted correctly. Classes absent from the ground truth are skipped (they have no accuracy); with equal
class sizes it equals top-1.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sslcore.errors import SSLBenchError

METRICS = ("top1", "mean_per_class")


def accuracy(y_true: Any, y_pred: Any, metric: str = "top1") -> float:
    """``metric`` of predicted labels ``y_pred`` (N,) against ``y_true`` (N,) (arrays, lists or tensors), in %."""
    y_true, y_pred = np.asarray(y_true).ravel(), np.asarray(y_pred).ravel()
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true and y_pred differ in length: {y_true.shape[0]} vs {y_pred.shape[0]}")
    if metric not in METRICS:
        raise SSLBenchError(f"metric={metric!r}: expected one of {', '.join(METRICS)}")
    if y_true.size == 0:
        return float("nan")
    correct = y_true == y_pred
    if metric == "top1":
        return 100.0 * float(correct.mean())
    classes, index = np.unique(y_true, return_inverse=True)
    per_class = np.bincount(index, weights=correct, minlength=len(classes)) / np.bincount(index)
    return 100.0 * float(per_class.mean())
