"""Collapse diagnostics: pure functions of a batch's embeddings and of a run's logged values.

A self-supervised run can lower its loss while every image maps to one direction (complete collapse), or while its
targets stay uniform (nothing is being matched). These numbers make both visible, during training (the methods log
them with each step line; the engine adds the effective rank at every k-NN monitor pass) and in the reports:

* :func:`view_cosines` — mean cosine similarity of embeddings of two different views of the **same** image
  (positive) and of **different** images (negative). Healthy runs keep the negative mean clearly below the positive
  one; in a collapsed run both approach 1.
* :func:`view_agreement` — the same cosines after centring, and how often an image's other view is its nearest
  one: whether the augmentations leave a network anything to match across views (a step-0 probe).
* :func:`effective_rank` — exp of the Shannon entropy of the normalised singular values of the centred feature
  matrix (Roy & Vetterli, 2007): 1 for features on one line, D for isotropic D-dimensional features.
* :func:`mean_cosine` — mean cosine similarity of the features of two different images, *not* centred: near 1 when
  every feature is one shared vector plus a small residual. The centred effective rank cannot see that shared part,
  and a cosine k-NN still ranks images by the residual, so both can look healthy while a linear head or fine-tuning
  starts from near-constant features (measured: BAM's ShapesWorld recipe run for 150 epochs reaches 0.999 with a
  20-NN of 33 % and an effective rank of 15; fine-tuning it stays at chance for 100 epochs).
* :func:`uniform_entropy` — ln(K - P): the entropy of a uniform attention row over K columns of which P are
  excluded positives (BAM's reference line: a source entropy near it means the attention matches nothing).
* :func:`collapse_findings` — the verdict of a finished (or running) log: a list of one-line findings, empty when
  nothing looks collapsed. The thresholds are documented with :data:`THRESHOLDS`.

Tensor layout of ``view_cosines``: ``z`` (V*B, D) rows crop-major ([view 0: images 0..B-1][view 1: ...]), as every
method's head output in :mod:`pretrain.methods`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

# A run is reported as collapsed when, at its last logged step / monitor pass:
THRESHOLDS: dict[str, float] = {
    "source_entropy_fraction": 0.97,  # source entropy >= 97 % of ln(K - P): attention (almost) uniform
    "cosine_gap": 0.02,  # positive - negative mean cosine below this: views of one image no closer than others
    "negative_cosine": 0.95,  # negative mean cosine above this: all images map to (nearly) one direction
    "effective_rank": 2.0,  # CLS features (almost) on one line
    "feature_mean_cosine": 0.95,  # CLS features of different images share one direction (mean cosine above this)
    "teacher_entropy_fraction": 0.02,  # DINO family: teacher rows one-hot (<= 2 % of ln K)
    "teacher_uniform_fraction": 0.98,  # DINO family: teacher rows (almost) uniform (>= 98 % of ln K)
}


@torch.no_grad()
def view_cosines(z: Tensor, num_views: int) -> dict[str, float]:
    """Mean positive / negative cosine of ``z`` (V*B, D), crop-major; needs V >= 2 and B >= 2."""
    rows = z.shape[0]
    if num_views < 2 or rows % num_views or rows // num_views < 2:
        raise ValueError(f"view_cosines: {rows} rows do not hold >= 2 views of >= 2 images (V={num_views})")
    batch = rows // num_views
    zn = F.normalize(z.float(), dim=-1)
    sim = zn @ zn.T
    image = torch.arange(rows, device=z.device) % batch
    same_image = image[:, None] == image[None, :]
    off_diagonal = ~torch.eye(rows, dtype=torch.bool, device=z.device)
    return {
        "positive_cosine": float(sim[same_image & off_diagonal].mean()),
        "negative_cosine": float(sim[~same_image].mean()),
    }


@torch.no_grad()
def view_agreement(z: Tensor, num_views: int) -> dict[str, float]:
    """What the views of one image still share, in ``z`` (V*B, D) crop-major, after centring by the mean row.

    ``agreement_positive_cosine`` / ``agreement_negative_cosine``: :func:`view_cosines` of the centred rows (the
    component every image shares removed, so a network whose features are one vector plus a residual is judged by
    the residual); ``agreement_retrieval``: how often, for an image's view u, the nearest (cosine) view-v row among
    the B images is the same image's, averaged over the ordered pairs u != v; ``agreement_chance`` = 1 / B.

    Measured at step 0 on a recipe's own views (``sslbench pretrain --probe-views``), it tells whether the
    augmentations leave the initial network anything to match across views (docs/demo.md, sixth round).
    """
    z = z.float()
    centred = z - z.mean(0, keepdim=True)
    cosines = view_cosines(centred, num_views)  # also checks the layout
    batch = z.shape[0] // num_views
    zn = F.normalize(centred, dim=-1).reshape(num_views, batch, -1)
    target = torch.arange(batch, device=z.device)
    hits = [
        float(((zn[u] @ zn[v].T).argmax(1) == target).float().mean())
        for u in range(num_views)
        for v in range(num_views)
        if u != v
    ]
    return {
        "agreement_positive_cosine": cosines["positive_cosine"],
        "agreement_negative_cosine": cosines["negative_cosine"],
        "agreement_retrieval": sum(hits) / len(hits),
        "agreement_chance": 1.0 / batch,
    }


@torch.no_grad()
def effective_rank(features: Tensor) -> float:
    """exp(entropy of the normalised singular values) of ``features`` (N, D) after centring; in [1, min(N, D)]."""
    x = features.double()
    x = x - x.mean(0, keepdim=True)
    s = torch.linalg.svdvals(x)
    total = s.sum()
    if float(total) <= 0:
        return 1.0
    p = s / total
    return float(torch.exp(torch.special.entr(p).sum()))


@torch.no_grad()
def mean_cosine(features: Tensor, chunk: int = 16384) -> float:
    """Mean cosine similarity over the pairs of different rows of ``features`` (N, D), N >= 2, not centred.

    |sum of unit rows|^2 counts every ordered pair once and each row with itself; the self terms are subtracted. Rows
    are normalised ``chunk`` at a time in float64, so the memory beyond ``features`` is O(chunk x D) (the k-NN
    protocol calls this on 1.28M ImageNet train features)."""
    n = features.shape[0]
    if n < 2:
        raise ValueError(f"mean_cosine needs at least 2 rows, got {n}")
    total = features.new_zeros(features.shape[1], dtype=torch.float64)
    self_terms = 0.0
    for rows in features.split(chunk):
        unit = F.normalize(rows.double(), dim=-1)
        total += unit.sum(0)
        self_terms += float((unit * unit).sum())
    return float((total @ total - self_terms) / (n * (n - 1)))


def uniform_entropy(num_columns: int, num_positives: int) -> float:
    """ln(K - P): entropy of a uniform distribution over the K - P non-positive columns."""
    if num_columns - num_positives < 1:
        raise ValueError(f"uniform_entropy: {num_columns} columns leave none after {num_positives} positives")
    return math.log(num_columns - num_positives)


def _last(records: Sequence[Mapping[str, Any]], key: str) -> float | None:
    for rec in reversed(records):
        value = rec.get(key)
        if value is not None and not (isinstance(value, float) and math.isnan(value)):
            return float(value)
    return None


def collapse_findings(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """One line per collapse symptom at the end of a pretraining log (its step and epoch records, in order)."""
    t = THRESHOLDS
    found = []
    src, uni = _last(records, "diag/source_entropy"), _last(records, "diag/uniform_entropy")
    if src is not None and uni and src >= t["source_entropy_fraction"] * uni:
        found.append(
            f"source entropy {src:.3f} is {100 * src / uni:.1f}% of uniform ln(K-P) = {uni:.3f}: "
            "the attention over the batch matches nothing"
        )
    pos, neg = _last(records, "positive_cosine"), _last(records, "negative_cosine")
    if pos is not None and neg is not None:
        if neg >= t["negative_cosine"]:
            found.append(f"negative-pair cosine {neg:.3f} >= {t['negative_cosine']}: all images map to one direction")
        elif pos - neg < t["cosine_gap"]:
            found.append(f"positive cosine {pos:.3f} is not above the negative {neg:.3f}: views are not matched")
    rank = _last(records, "knn_eff_rank")
    if rank is not None and rank < t["effective_rank"]:
        found.append(f"effective rank of the CLS features {rank:.2f} < {t['effective_rank']}: features on one line")
    shared = _last(records, "knn_mean_cosine")
    if shared is not None and shared >= t["feature_mean_cosine"]:
        found.append(
            f"CLS features of different images have mean cosine {shared:.4f} >= {t['feature_mean_cosine']}: they "
            "share one direction (a linear head or fine-tuning starts from near-constant features)"
        )
    ent, k = _last(records, "teacher_entropy"), _last(records, "teacher_num_outputs")
    if ent is not None and k:
        ln_k = math.log(k)
        if ent <= t["teacher_entropy_fraction"] * ln_k:
            found.append(f"teacher entropy {ent:.3f} nats: every image goes to one prototype")
        elif ent >= t["teacher_uniform_fraction"] * ln_k:
            found.append(f"teacher entropy {ent:.3f} of ln K = {ln_k:.3f}: teacher outputs are uniform")
    return found
