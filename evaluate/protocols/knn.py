"""Weighted k-NN classification on frozen features (the DINO protocol), ``sslbench eval knn``.

Core (:func:`knn_predict`, :func:`knn_accuracy`): train features X (N, D) and test features Q (M, D) are
L2-normalised; for each query the k most cosine-similar train rows vote for their class with weight exp(s / T),
T = 0.07. Every k in ``ks`` (default 10, 20, 100, 200) comes from ONE top-k at max(ks): the neighbours of a smaller k
are a prefix of the sorted list, and one (rows, C) score buffer per chunk grows in place from one k to the next.
Queries are processed in blocks of a fixed number of rows (default: as many as keep the (rows, N) similarity block
within 64 MiB on a CPU and 1 GiB on a GPU; any test-set size works, unlike DINO's 100 equal chunks which fail below
100 queries); the train features are never copied (the similarity block is scaled by 1 / ||x_j|| per column
instead), so the block is the only large temporary: 1.28M x 768 train features fit a GPU. The GPU budget is
measured: on an H200, ImageNet's 1.28M x 384 train features and 50,000 queries take 6.1 s in 64 MiB blocks and
2.3 s in 1 GiB blocks, same accuracies (benchmarks/gpu/acceptance.py, docs/performance.md). Class scores are (M, C)
with C = ``num_classes``.

Choices, documented:

* k larger than the number of train rows N is clamped to N (all train rows vote); the record keeps the requested k.
* ranking is DINO's ``knn_classifier`` (``probs.sort(1, True)``, a stable sort): classes by descending score, equal
  scores (in practice: classes with no vote) in ascending class index, so with fewer than 5 voted classes zero-score
  classes fill the tail in index order and can count as top-5 hits. A top-5 hit is a rank below min(5, k) (DINO's
  ``narrow(1, 0, min(5, k))``); with C < 5 it is top-C. The rank is counted (:func:`rank_of`), not sorted, so it does
  not depend on ``topk``'s tie-breaking.
* DINOv2's softmax-normalised weights rank classes identically (a positive constant per query), so one
  implementation serves both.

Features (``run``): CLS of the last block through the final norm, Resize(256 bicubic) + CenterCrop(224) scaled to the
model's resolution (see :mod:`evaluate.protocols.features`), teacher weights. Data: the dataset's fit split (train, or train +
val where the dataset has an official val split) against its test split (``val`` for ImageFolder trees, ImageNet and
iNat). On datasets whose metric is mean per-class accuracy (Aircraft, Pets, Flowers, Caltech-101) the records also
carry ``mean_per_class@k<k>``.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import time
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from evaluate.datasets.metrics import accuracy
from evaluate.protocols import evalrun
from evaluate.protocols.features import FeatureConfig, get_features
from pretrain.diagnostics import THRESHOLDS, mean_cosine
from sslcore.config import ALL_POSITIVE, POSITIVE, POSITIVE_OR_NONE, validate
from sslcore.device import parse_device

logger = logging.getLogger("sslbench")

DEFAULT_KS = (10, 20, 100, 200)


CHUNK_BYTES = 64 << 20  # default budget of the (chunk, N) similarity block on a CPU
CUDA_CHUNK_BYTES = 1 << 30  # and on a GPU (2.6x faster than 64 MiB at ImageNet size on an H200)


def _chunk_rows(chunk: int | None, n_train: int, itemsize: int, device_type: str = "cpu") -> int:
    """Test rows per similarity block: ``chunk`` if given, else as many as fit the device's budget
    (``CUDA_CHUNK_BYTES`` on a GPU, ``CHUNK_BYTES`` elsewhere)."""
    if chunk is not None:
        return chunk
    budget = CUDA_CHUNK_BYTES if device_type == "cuda" else CHUNK_BYTES
    return max(1, budget // max(1, n_train * itemsize))


def _chunks(
    train_feats: Tensor,
    train_labels: Tensor,
    test_feats: Tensor,
    ks: Sequence[int],
    T: float,
    num_classes: int,
    chunk: int | None,
) -> Iterator[tuple[slice, int, Tensor]]:
    """Yield (rows, k, scores (rows, C)) for consecutive chunks of test rows, k ascending within a chunk.

    ``scores`` is ONE buffer per chunk, grown in place from one k to the next (the neighbours of a smaller k are a
    prefix of the sorted list): it is valid until the next item is drawn; copy it to keep it. The train features are
    not copied: similarities are the normalised queries times the raw train rows, scaled by 1 / ||x_j|| per column.
    """
    if train_feats.ndim != 2 or test_feats.ndim != 2 or train_feats.shape[1] != test_feats.shape[1]:
        raise ValueError(
            f"features must be (N, D) and (M, D); got {tuple(train_feats.shape)}, {tuple(test_feats.shape)}"
        )
    if len(train_labels) != len(train_feats) or len(train_feats) == 0:
        raise ValueError("train_labels must have one label per train row, and train must not be empty")
    if not ks or min(ks) < 1 or (chunk is not None and chunk < 1) or T <= 0:
        raise ValueError(f"need ks >= 1, chunk >= 1, T > 0; got ks={list(ks)}, chunk={chunk}, T={T}")
    inv_norm = train_feats.norm(dim=1).clamp_min(1e-12).reciprocal()  # (N,), as F.normalize's eps
    labels = train_labels.to(train_feats.device, torch.long)
    order = sorted(set(ks))
    kmax = min(order[-1], len(train_feats))
    rows_per = _chunk_rows(chunk, len(train_feats), train_feats.element_size(), train_feats.device.type)
    dtype = torch.float64 if train_feats.dtype == torch.float64 else torch.float32  # half features vote in float32
    for start in range(0, len(test_feats), rows_per):
        rows = slice(start, min(start + rows_per, len(test_feats)))
        query = F.normalize(test_feats[rows].to(train_feats.device, train_feats.dtype), dim=1)
        sims = (query @ train_feats.T).mul_(inv_norm)  # (m, N): the only large temporary
        top, idx = sims.topk(kmax, dim=1)  # (m, kmax), sorted descending
        del sims
        weights = (top.to(dtype) / T).exp()
        votes = labels[idx]
        scores = torch.zeros(len(query), num_classes, dtype=dtype, device=train_feats.device)
        done = 0
        for k in order:
            upto = min(k, kmax)
            scores.scatter_add_(1, votes[:, done:upto], weights[:, done:upto])
            done = upto
            yield rows, k, scores


def rank_of(scores: Tensor, target: Tensor) -> Tensor:
    """Rank (0 = first) of each row's ``target`` class when classes are sorted by descending score, equal scores in
    ascending class index: the order of a stable descending sort, as DINO's ``probs.sort(1, True)`` gives.

    Args:
        scores: (M, C); target: (M,) long. Returns (M,) long.
    """
    own = scores.gather(1, target.view(-1, 1))
    before = torch.arange(scores.shape[1], device=scores.device) < target.view(-1, 1)
    return ((scores > own) | ((scores == own) & before)).sum(1)


def knn_predict(
    train_feats: Tensor,
    train_labels: Tensor,
    test_feats: Tensor,
    ks: Sequence[int] = DEFAULT_KS,
    T: float = 0.07,
    num_classes: int | None = None,
    chunk: int | None = None,
) -> dict[int, Tensor]:
    """Class scores {k: (M, C)} = sum of exp(s/T) over the k nearest train rows of each class (see module doc).

    Args:
        train_feats: (N, D), any scale (normalised here); its device is where the work happens.
        train_labels: (N,) integer labels in [0, C).
        test_feats: (M, D).
        num_classes: C; default max label + 1.
        chunk: test rows per similarity block; default: as many as fit 64 MiB (1 GiB on a GPU).
    """
    num_classes = int(num_classes if num_classes is not None else int(train_labels.max()) + 1)
    parts: dict[int, list[Tensor]] = {k: [] for k in ks}
    for _, k, scores in _chunks(train_feats, train_labels, test_feats, ks, T, num_classes, chunk):
        parts[k].append(scores.to("cpu", copy=True))
    empty = torch.zeros(0, num_classes)
    return {k: torch.cat(v) if v else empty for k, v in parts.items()}


def knn_accuracy(
    train_feats: Tensor,
    train_labels: Tensor,
    test_feats: Tensor,
    test_labels: Tensor,
    ks: Sequence[int] = DEFAULT_KS,
    T: float = 0.07,
    num_classes: int | None = None,
    chunk: int | None = None,
    per_class: bool = False,
) -> dict[str, float]:
    """{"top1@k<k>": %, "top5@k<k>": %} streamed over chunks (no (M, C) score matrix is kept).

    Ranking as DINO's ``knn_classifier``: stable descending sort of the class scores (:func:`rank_of`), a hit in
    top-5 when the rank is below min(5, k) (DINO: "top5 does not make sense if k < 5"; fewer than C classes).
    ``per_class=True`` adds {"mean_per_class@k<k>": %} (:func:`evaluate.datasets.metrics.accuracy`) of the rank-0 class.
    """
    num_classes = int(num_classes if num_classes is not None else int(train_labels.max()) + 1)
    hits = {(k, n): 0 for k in ks for n in (1, 5)}
    predictions: dict[int, list[Tensor]] = {k: [] for k in ks}
    for rows, k, scores in _chunks(train_feats, train_labels, test_feats, ks, T, num_classes, chunk):
        rank = rank_of(scores, test_labels[rows].to(scores.device, torch.long))
        hits[k, 1] += int((rank == 0).sum())
        hits[k, 5] += int((rank < min(5, k)).sum())
        if per_class:
            predictions[k].append(scores.argmax(1).cpu())  # the first maximum: rank 0 of the stable sort
    total = max(len(test_feats), 1)
    out = {f"top{n}@k{k}": 100.0 * hits[k, n] / total for n in (1, 5) for k in ks}
    if per_class:
        for k in ks:
            out[f"mean_per_class@k{k}"] = accuracy(test_labels.cpu(), torch.cat(predictions[k]), "mean_per_class")
    return out


@dataclasses.dataclass
class KNNConfig:
    backbone: evalrun.BackboneConfig = dataclasses.field(default_factory=evalrun.BackboneConfig)
    data: evalrun.DataConfig = dataclasses.field(default_factory=evalrun.DataConfig)
    features: FeatureConfig = dataclasses.field(default_factory=FeatureConfig)
    ks: list[int] = dataclasses.field(default_factory=lambda: list(DEFAULT_KS))
    T: float = 0.07
    chunk: int | None = None  # test rows per similarity block; None: as many as fit 64 MiB (GPU: 1 GiB)
    out: str | None = None

    def __post_init__(self) -> None:
        validate(self, {"ks": ALL_POSITIVE, "T": POSITIVE, "chunk": POSITIVE_OR_NONE})


def run(cfg: KNNConfig, backbone: Any = None) -> dict[str, float]:
    """Extract (or read cached) train/test features, run the k-NN, append records; returns the metrics."""
    started = time.time()
    model, info = evalrun.load_model(cfg.backbone, backbone)
    plan, train, _, test = evalrun.load_splits(cfg.data)
    tr = get_features(model, info, train, cfg.features)
    te = get_features(model, info, test, cfg.features)
    device = parse_device(cfg.features.device, "features.device")
    metrics = knn_accuracy(
        tr.features.to(device),
        tr.labels,
        te.features,
        te.labels,
        cfg.ks,
        cfg.T,
        len(train.classes),
        cfg.chunk,
        per_class=plan.metric == "mean_per_class",
    )
    shared = mean_cosine(tr.features)
    if shared >= THRESHOLDS["feature_mean_cosine"]:
        logger.warning(
            "k-NN: the train features share one direction (mean cosine %.4f between images): a cosine k-NN still "
            "ranks them, but a linear head or fine-tuning starts from near-constant features",
            shared,
        )
    out = evalrun.output_dir(cfg.out, "knn", info, evalrun.dataset_label(cfg.data))
    extra = {
        "transform": tr.key["transform"],
        "taps": tr.key["taps"],
        "n_train": len(train),
        "n_test": len(test),
        "train_split": train.split,
        "dataset_metric": plan.metric,
    }
    evalrun.finish(
        "knn",
        evalrun.dataset_label(cfg.data),
        plan.test,
        metrics,
        cfg=cfg,
        info=info,
        started=started,
        out=out,
        extra_settings=extra,
        details={"feature_mean_cosine": shared},
    )
    return metrics


add_arguments = evalrun.add_arguments


def run_cli(args: argparse.Namespace) -> int:
    return evalrun.run_protocol_cli(KNNConfig, run, "knn", args)
