"""Clustering of frozen features (BAM appendix I), ``sslbench eval cluster``.

BAM draws C classes at random, takes every evaluation image of those classes, runs k-means with k = C on the
embeddings and reports NMI and ARI averaged over 10 random instances per C. Here:

* features: the k-NN features (CLS of the last block through the final norm, Resize 256 -> CenterCrop 224 scaled
  to the model's resolution) of the evaluation split (the dataset's test split, or ``data.test``; ImageNet val in
  BAM, a flat official ``val/`` included), L2-normalised;
* k-means: scikit-learn ``KMeans`` (k-means++, ``n_init`` restarts, seeded per instance);
* metrics (:func:`cluster_metrics`, in %): NMI with arithmetic averaging (sklearn's default, stated because older
  code used the geometric mean), ARI, and Hungarian accuracy (best one-to-one cluster -> class map,
  ``scipy.optimize.linear_sum_assignment`` on the negated contingency table);
* for each C in ``num_classes`` (values above the dataset's class count are skipped with a warning) and each of
  ``instances`` seeded draws: mean and std (population, ddof 0) over the instances. One record set per C, with the
  setting ``num_classes`` = C. The BAM text does not list its C values in our copy; the default list is ours.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from evaluate.protocols import evalrun
from evaluate.protocols.features import FeatureConfig, get_features
from sslcore.config import NON_NEGATIVE, POSITIVE, validate
from sslcore.errors import SSLBenchError

logger = logging.getLogger("sslbench")


def hungarian_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Fraction of samples correct under the best one-to-one map from cluster ids to labels (unmatched = wrong)."""
    from scipy.optimize import linear_sum_assignment

    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    _, t = np.unique(y_true, return_inverse=True)
    _, p = np.unique(y_pred, return_inverse=True)
    counts = np.zeros((p.max() + 1, t.max() + 1), dtype=np.int64)
    np.add.at(counts, (p, t), 1)
    rows, cols = linear_sum_assignment(-counts)
    return float(counts[rows, cols].sum()) / len(y_true)


def cluster_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """{"nmi", "ari", "acc"} in % (NMI with arithmetic averaging)."""
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    return {
        "nmi": 100.0 * normalized_mutual_info_score(y_true, y_pred, average_method="arithmetic"),
        "ari": 100.0 * adjusted_rand_score(y_true, y_pred),
        "acc": 100.0 * hungarian_accuracy(y_true, y_pred),
    }


def clusterable(c: int, num_present: int) -> bool:
    """Whether C classes can be drawn from the ``num_present`` classes of the data (2 <= C <= present)."""
    return 2 <= c <= num_present


def kmeans_labels(x: np.ndarray, k: int, seed: int, n_init: int = 10, max_iter: int = 300) -> np.ndarray:
    """k-means++ cluster ids of the rows of x (N, D)."""
    from sklearn.cluster import KMeans

    return KMeans(n_clusters=k, n_init=n_init, max_iter=max_iter, random_state=seed).fit_predict(x)


def clustering_instances(
    features: np.ndarray,
    labels: np.ndarray,
    num_classes: Sequence[int],
    instances: int = 10,
    seed: int = 0,
    n_init: int = 10,
    max_iter: int = 300,
) -> dict[int, dict[str, float]]:
    """{C: {"nmi", "ari", "acc", "nmi_std", "ari_std", "acc_std"}} over ``instances`` random C-class subsets.

    Features (N, D) are L2-normalised here. Instance i of C draws its classes with ``default_rng((seed, C, i))`` and
    seeds k-means with ``seed + i``.
    """
    x = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
    present = np.unique(labels)
    out = {}
    for c in num_classes:
        if not clusterable(c, len(present)):
            logger.warning("clustering: skipping C=%d (the data has %d classes; need 2 <= C)", c, len(present))
            continue
        runs = []
        for i in range(instances):
            chosen = np.random.default_rng((seed, c, i)).choice(present, size=c, replace=False)
            mask = np.isin(labels, chosen)
            pred = kmeans_labels(x[mask], c, seed + i, n_init, max_iter)
            runs.append(cluster_metrics(labels[mask], pred))
        summary = {}
        for name in ("nmi", "ari", "acc"):
            values = np.array([r[name] for r in runs])
            summary[name], summary[f"{name}_std"] = float(values.mean()), float(values.std())
        out[c] = summary
    return out


@dataclasses.dataclass
class ClusterConfig:
    backbone: evalrun.BackboneConfig = dataclasses.field(default_factory=evalrun.BackboneConfig)
    data: evalrun.DataConfig = dataclasses.field(default_factory=evalrun.DataConfig)
    features: FeatureConfig = dataclasses.field(default_factory=FeatureConfig)
    num_classes: list[int] = dataclasses.field(default_factory=lambda: [5, 10, 50, 100, 200])
    instances: int = 10
    n_init: int = 10
    max_iter: int = 300
    seed: int = 0
    out: str | None = None

    def __post_init__(self) -> None:
        validate(
            self,
            {
                "num_classes": (lambda v: len(v) > 0 and all(c >= 2 for c in v), "needs values >= 2"),
                "instances": POSITIVE,
                "n_init": POSITIVE,
                "max_iter": POSITIVE,
                "seed": NON_NEGATIVE,
            },
        )

    def splits_used(self, plan: Any) -> list[str]:
        """Only the evaluation split is clustered (checked before any work by ``evalrun.check_outputs``)."""
        return [plan.test]


def run(cfg: ClusterConfig, backbone: Any = None) -> dict[int, dict[str, float]]:
    """Features of the evaluation split, clustering instances, one record set per C; returns {C: metrics}."""
    started = time.time()
    plan = evalrun.data_plan(cfg.data)
    images = plan.load(plan.test)
    present = len(set(images.labels))
    if not any(clusterable(c, present) for c in cfg.num_classes):  # the others are skipped with a warning
        raise SSLBenchError(
            f"num_classes={list(cfg.num_classes)}: the evaluation split has {present} classes, "
            f"so no C can be clustered (each must be in 2..{present})"
        )
    model, info = evalrun.load_model(cfg.backbone, backbone)
    fs = get_features(model, info, images, cfg.features)
    results = clustering_instances(
        fs.features.double().numpy(),
        fs.labels.numpy(),
        cfg.num_classes,
        cfg.instances,
        cfg.seed,
        cfg.n_init,
        cfg.max_iter,
    )
    dataset = evalrun.dataset_label(cfg.data)
    out = evalrun.output_dir(cfg.out, "cluster", info, dataset)
    base = {"transform": fs.key["transform"], "taps": fs.key["taps"], "nmi_average": "arithmetic"}
    for c, metrics in results.items():
        evalrun.finish(
            "cluster",
            dataset,
            plan.test,
            metrics,
            cfg=cfg,
            info=info,
            started=started,
            out=out / f"C{c}",
            seed=cfg.seed,
            extra_settings={**base, "num_classes": c},
        )
    return results


add_arguments = evalrun.add_arguments


def run_cli(args: argparse.Namespace) -> int:
    cfg = evalrun.config_from_args(ClusterConfig, args)
    backbone = evalrun.cli_backbone(cfg, "cluster")
    for c, metrics in run(cfg, backbone=backbone).items():
        evalrun.print_metrics(f"cluster C={c}", evalrun.dataset_label(cfg.data), metrics)
    return 0
