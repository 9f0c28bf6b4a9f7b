"""Weighted k-NN classification on frozen features (the DINO protocol), ``sslbench eval knn``.

Core (:func:`knn_predict`, :func:`knn_accuracy`): train features X (N, D) and test features Q (M, D) are
L2-normalised; for each query the k most cosine-similar train rows vote for their class with weight exp(s / T),
T = 0.07. Every k in ``ks`` (default 10, 20, 100, 200) comes from ONE top-k at max(ks): the neighbours of a smaller k
are a prefix of the sorted list. Queries are processed ``chunk`` rows at a time (a fixed size, so any test-set size
works, unlike DINO's 100 equal chunks which fail below 100 queries), so the (chunk, N) similarity block is the only
large temporary: 1.28M x 768 train features fit a GPU. Class scores are (M, C) with C = ``num_classes``.

Choices, documented:

* k larger than the number of train rows N is clamped to N (all train rows vote); the record keeps the requested k.
* top-5 ranks all C classes by score, as DINO does: with fewer than 5 voted classes, zero-score classes fill the tail
  in index order and can count as hits; with C < 5 it is top-C.
* DINOv2's softmax-normalised weights rank classes identically (a positive constant per query), so one
  implementation serves both.

Features (``run``): CLS of the last block through the final norm, Resize(256 bicubic) + CenterCrop(224) scaled to the
model's resolution (see :mod:`evaluate.features`), teacher weights. Data: the dataset's fit split (train, or train +
val where the dataset has an official val split) against its test split (``val`` for ImageFolder trees, ImageNet and
iNat). On datasets whose metric is mean per-class accuracy (Aircraft, Pets, Flowers, Caltech-101) the records also
carry ``mean_per_class@k<k>``.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from evaluate import evalrun
from evaluate.features import FeatureConfig, get_features, resolve_device
from evaluate.metrics import accuracy

DEFAULT_KS = (10, 20, 100, 200)


def _chunks(
    train_feats: Tensor,
    train_labels: Tensor,
    test_feats: Tensor,
    ks: Sequence[int],
    T: float,
    num_classes: int,
    chunk: int,
) -> Iterator[tuple[slice, dict[int, Tensor]]]:
    """Yield (rows, {k: scores (rows, C)}) for consecutive chunks of test rows."""
    if train_feats.ndim != 2 or test_feats.ndim != 2 or train_feats.shape[1] != test_feats.shape[1]:
        raise ValueError(
            f"features must be (N, D) and (M, D); got {tuple(train_feats.shape)}, {tuple(test_feats.shape)}"
        )
    if len(train_labels) != len(train_feats) or len(train_feats) == 0:
        raise ValueError("train_labels must have one label per train row, and train must not be empty")
    if not ks or min(ks) < 1 or chunk < 1 or T <= 0:
        raise ValueError(f"need ks >= 1, chunk >= 1, T > 0; got ks={list(ks)}, chunk={chunk}, T={T}")
    train = F.normalize(train_feats, dim=1)
    labels = train_labels.to(train.device, torch.long)
    order = sorted(set(ks))
    kmax = min(order[-1], len(train))
    for start in range(0, len(test_feats), chunk):
        rows = slice(start, min(start + chunk, len(test_feats)))
        query = F.normalize(test_feats[rows].to(train.device, train.dtype), dim=1)
        sims, idx = (query @ train.T).topk(kmax, dim=1)  # (m, kmax), sorted descending
        dtype = torch.float64 if train.dtype == torch.float64 else torch.float32  # half features vote in float32
        weights = (sims.to(dtype) / T).exp()
        votes = labels[idx]
        scores = torch.zeros(len(query), num_classes, dtype=dtype, device=train.device)
        out, done = {}, 0
        for k in order:  # grow the scores incrementally: neighbours of a smaller k are a prefix
            upto = min(k, kmax)
            scores.scatter_add_(1, votes[:, done:upto], weights[:, done:upto])
            done = upto
            out[k] = scores.clone()
        yield rows, out


def knn_predict(
    train_feats: Tensor,
    train_labels: Tensor,
    test_feats: Tensor,
    ks: Sequence[int] = DEFAULT_KS,
    T: float = 0.07,
    num_classes: int | None = None,
    chunk: int = 1024,
) -> dict[int, Tensor]:
    """Class scores {k: (M, C)} = sum of exp(s/T) over the k nearest train rows of each class (see module doc).

    Args:
        train_feats: (N, D), any scale (normalised here); its device is where the work happens.
        train_labels: (N,) integer labels in [0, C).
        test_feats: (M, D).
        num_classes: C; default max label + 1.
        chunk: test rows per similarity block.
    """
    num_classes = int(num_classes if num_classes is not None else int(train_labels.max()) + 1)
    parts: dict[int, list[Tensor]] = {k: [] for k in ks}
    for _, scores in _chunks(train_feats, train_labels, test_feats, ks, T, num_classes, chunk):
        for k in ks:
            parts[k].append(scores[k].cpu())
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
    chunk: int = 1024,
    per_class: bool = False,
) -> dict[str, float]:
    """{"top1@k<k>": %, "top5@k<k>": %} streamed over chunks (no (M, C) score matrix is kept).

    ``per_class=True`` adds {"mean_per_class@k<k>": %} (:func:`evaluate.metrics.accuracy`).
    """
    num_classes = int(num_classes if num_classes is not None else int(train_labels.max()) + 1)
    top = min(5, num_classes)
    hits = {(k, n): 0 for k in ks for n in (1, 5)}
    predictions: dict[int, list[Tensor]] = {k: [] for k in ks}
    for rows, scores in _chunks(train_feats, train_labels, test_feats, ks, T, num_classes, chunk):
        target = test_labels[rows].to(scores[ks[0]].device).view(-1, 1)
        for k in ks:
            ranked = scores[k].topk(top, dim=1).indices
            hits[k, 1] += int((ranked[:, :1] == target).sum())
            hits[k, 5] += int((ranked == target).any(dim=1).sum())
            if per_class:
                predictions[k].append(ranked[:, 0].cpu())
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
    chunk: int = 1024
    out: str | None = None


def run(cfg: KNNConfig, backbone: Any = None) -> dict[str, float]:
    """Extract (or read cached) train/test features, run the k-NN, append records; returns the metrics."""
    started = time.time()
    model, info = evalrun.load_model(cfg.backbone, backbone)
    plan, train, _, test = evalrun.load_splits(cfg.data)
    tr = get_features(model, info, train, cfg.features)
    te = get_features(model, info, test, cfg.features)
    device = resolve_device(cfg.features.device)
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
    )
    return metrics


add_arguments = evalrun.add_arguments


def run_cli(args: argparse.Namespace) -> int:
    return evalrun.run_protocol_cli(KNNConfig, run, "knn", args)
