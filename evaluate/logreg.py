"""Multinomial L2 logistic regression on frozen features (Kornblith et al. 2019 transfer protocol), ``sslbench eval
logreg``; also the DINOv2 logistic regression and the 1 % / 10 % semi-supervised variant.

Core (:func:`sweep_logreg`): scikit-learn ``LogisticRegression(solver="lbfgs")`` (multinomial for more than two
classes) on the features X (N, D), no augmentation. The regularisation strength runs over 45 log-spaced values
lambda in [1e-6, 1e5] and sklearn's C = 1 / lambda. sklearn minimises C * sum_i CE_i + 0.5 * ||W||^2, so lambda
multiplies 0.5 * ||W||^2 against a *sum* of losses (the ssl-transfer convention, wd -> C = 1 / wd; DINOv2's cuML grid
C in 10^linspace(-6, 5, 45) is the same set of values). Each value is fitted on the train part and scored on the
validation part; the best (first maximum, scanning from strong to weak regularisation) is refitted on train + val
and scored on the test split.

``solver="torch"`` solves the same objective with ``torch.optim.LBFGS`` in float64 on ``features.device`` (a GPU for
ImageNet-size feature sets); it matches sklearn's coefficients to ~1e-4 and its accuracy within 0.1 point (tested).

Validation part: the dataset's official validation split when there is one (Aircraft, DTD, Flowers; or ``data.val``
/ ``val``), else a seeded random ``val_fraction`` of train (0.2, as ssl-transfer; DINOv2 uses 0.1). Metric
(``metric="auto"``): the dataset's, chosen by its registry name (mean per-class accuracy for Aircraft, Caltech-101,
Flowers and Pets as in Kornblith's list, top-1 otherwise and for ImageFolder trees); it drives the selection and is
the record's metric. With mean per-class, the refitted model's top-1 is recorded beside it.

Features (``run``): CLS of the last block through the final norm, Resize(short side = crop, bicubic) + CenterCrop
(224 -> 224 for DINOv2 / Kornblith), not L2-normalised (``l2_normalize=True`` gives the DINO "simple" semi-supervised
variant). ``data.subset`` (e.g. ``1percent``) restricts training to a SimCLR-style subset list.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import time
import warnings
from typing import Any, Literal

import numpy as np

from evaluate import evalrun
from evaluate.features import FeatureConfig, get_features, resolve_device
from evaluate.metrics import accuracy
from sslcore.errors import SSLBenchError

logger = logging.getLogger("sslbench")


def lambda_grid(low: float = 1e-6, high: float = 1e5, num: int = 45) -> np.ndarray:
    """``num`` log-spaced regularisation strengths lambda in [low, high] (C = 1 / lambda)."""
    return np.logspace(np.log10(low), np.log10(high), num)


def fit_logreg(
    x: np.ndarray,
    y: np.ndarray,
    C: float,
    max_iter: int = 1000,
    tol: float = 1e-4,
    seed: int = 0,
    solver: str = "sklearn",
    device: str = "cpu",
    init: Any = None,
) -> Any:
    """One L-BFGS logistic regression (with intercept) by sklearn or :class:`TorchLogReg` (``solver="torch"``).

    ``init``: an earlier sklearn fit on the same data to warm-start from (the sweep passes the previous lambda's
    model; the minimiser is unique, so only the iteration count changes). sklearn convergence warnings are logged.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    if solver == "torch":
        return TorchLogReg(C, max_iter, tol, device).fit(x, y)
    if init is not None:
        clf = init.set_params(C=C, warm_start=True)
    else:
        clf = LogisticRegression(C=C, solver="lbfgs", max_iter=max_iter, tol=tol, random_state=seed)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        clf.fit(x, y)
    if any(issubclass(w.category, ConvergenceWarning) for w in caught):
        logger.debug("logreg C=%g did not converge in %d iterations", C, max_iter)
    return clf


class TorchLogReg:
    """The same model and objective as sklearn's lbfgs ``LogisticRegression``, solved by ``torch.optim.LBFGS``.

    Minimises C * sum_i CE_i + 0.5 * ||W||^2 (intercept not penalised) in float64, divided by C * n for conditioning
    (same minimiser). Two classes use one weight vector and the logistic loss, as sklearn does; more use the full
    multinomial (C, D) matrix. Runs on any torch device (the GPU solver for large feature sets).
    """

    def __init__(self, C: float, max_iter: int = 1000, tol: float = 1e-4, device: str = "cpu") -> None:
        self.C, self.max_iter, self.tol, self.device = C, max_iter, tol, device

    def fit(self, x: np.ndarray, y: np.ndarray) -> TorchLogReg:
        import torch
        import torch.nn.functional as F

        self.classes_, target = np.unique(y, return_inverse=True)
        xt = torch.as_tensor(x, dtype=torch.float64, device=self.device)
        yt = torch.as_tensor(target, device=self.device)
        rows = 1 if len(self.classes_) == 2 else len(self.classes_)
        w = torch.zeros(rows, x.shape[1], dtype=torch.float64, device=self.device, requires_grad=True)
        b = torch.zeros(rows, dtype=torch.float64, device=self.device, requires_grad=True)
        opt = torch.optim.LBFGS(
            [w, b],
            lr=1,
            max_iter=self.max_iter,
            tolerance_grad=self.tol / len(x),
            tolerance_change=1e-12,
            history_size=10,
            line_search_fn="strong_wolfe",
        )
        scale = 1.0 / (self.C * len(x))

        def closure():
            opt.zero_grad()
            logits = xt @ w.T + b
            if rows == 1:
                data = F.binary_cross_entropy_with_logits(logits[:, 0], yt.double(), reduction="mean")
            else:
                data = F.cross_entropy(logits, yt, reduction="mean")
            loss = data + 0.5 * scale * (w * w).sum()
            loss.backward()
            return loss

        opt.step(closure)
        self.coef_, self.intercept_ = w.detach().cpu().numpy(), b.detach().cpu().numpy()
        return self

    def decision_function(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x, dtype=np.float64) @ self.coef_.T + self.intercept_

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        z = self.decision_function(x)
        if z.shape[1] == 1:
            p = 1.0 / (1.0 + np.exp(-z[:, 0]))
            return np.stack([1 - p, p], axis=1)
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    def predict(self, x: np.ndarray) -> np.ndarray:
        z = self.decision_function(x)
        index = (z[:, 0] > 0).astype(int) if z.shape[1] == 1 else z.argmax(axis=1)
        return self.classes_[index]


def sweep_logreg(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    lambdas: np.ndarray,
    metric: str = "top1",
    max_iter: int = 1000,
    tol: float = 1e-4,
    seed: int = 0,
    progress: bool = False,
    solver: str = "sklearn",
    device: str = "cpu",
) -> dict[str, Any]:
    """Choose lambda on validation, refit on train + val, score test.

    Returns {"lambda", "C", "val_scores" (per lambda), "test", "val_best", "model"}; lambdas are scanned from the
    largest (strongest regularisation) down, each fit warm-started from the previous one, and the first maximum wins.
    The refit on train + val starts from zero.
    """
    from tqdm.auto import tqdm

    order = np.sort(np.asarray(lambdas, dtype=float))[::-1]
    val_scores, clf = [], None
    for lam in tqdm(order, desc="logreg sweep", disable=not progress, leave=False):
        clf = fit_logreg(x_train, y_train, 1.0 / lam, max_iter, tol, seed, solver, device, init=clf)
        val_scores.append(accuracy(y_val, clf.predict(x_val), metric))
    best = int(np.argmax(val_scores))
    lam = float(order[best])
    final = fit_logreg(
        np.concatenate([x_train, x_val]),
        np.concatenate([y_train, y_val]),
        1.0 / lam,
        max_iter,
        tol,
        seed,
        solver,
        device,
    )
    return {
        "lambda": lam,
        "C": 1.0 / lam,
        "lambdas": order.tolist(),
        "val_scores": val_scores,
        "val_best": val_scores[best],
        "test": accuracy(y_test, final.predict(x_test), metric),
        "model": final,
    }


@dataclasses.dataclass
class LogRegConfig:
    backbone: evalrun.BackboneConfig = dataclasses.field(default_factory=evalrun.BackboneConfig)
    data: evalrun.DataConfig = dataclasses.field(default_factory=evalrun.DataConfig)
    features: FeatureConfig = dataclasses.field(default_factory=lambda: FeatureConfig(resize_ratio=1.0))
    val: str | None = None  # selection split (default: the dataset's official val, data.val for ImageFolder trees)
    val_fraction: float = 0.2  # held out of train when there is no predefined validation split
    lambda_min: float = 1e-6
    lambda_max: float = 1e5
    num_lambdas: int = 45
    metric: Literal["auto", "top1", "mean_per_class"] = "auto"  # auto: the dataset's own
    l2_normalize: bool = False
    max_iter: int = 1000
    tol: float = 1e-4
    solver: Literal["sklearn", "torch"] = "sklearn"  # torch: L-BFGS on features.device (GPU for large sets)
    seed: int = 0
    out: str | None = None


def _split_heldout(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if not 0.0 < fraction < 1.0:
        raise SSLBenchError(f"val_fraction={fraction}: must be in (0, 1) when no predefined val split is given")
    perm = np.random.default_rng(seed).permutation(len(y))
    count = max(1, int(round(fraction * len(y))))
    return np.sort(perm[count:]), np.sort(perm[:count])


def run(cfg: LogRegConfig, backbone: Any = None) -> dict[str, float]:
    """Features, sweep, refit, test; appends one record (``top1`` or ``mean_per_class``); returns the metrics."""
    started = time.time()
    model, info = evalrun.load_model(cfg.backbone, backbone)
    plan, train, val, test = evalrun.load_splits(cfg.data, select=True, val=cfg.val)
    metric = plan.metric if cfg.metric == "auto" else cfg.metric
    tr = get_features(model, info, train, cfg.features)
    te = get_features(model, info, test, cfg.features)

    def arrays(fs) -> tuple[np.ndarray, np.ndarray]:
        x = fs.features.double().numpy()
        if cfg.l2_normalize:
            x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        return x, fs.labels.numpy()

    x_tr, y_tr = arrays(tr)
    x_te, y_te = arrays(te)
    if val is not None:
        x_va, y_va = arrays(get_features(model, info, val, cfg.features))
        selection = f"predefined:{val.split}"
    else:
        keep, held = _split_heldout(y_tr, cfg.val_fraction, cfg.seed)
        x_tr, x_va, y_tr, y_va = x_tr[keep], x_tr[held], y_tr[keep], y_tr[held]
        selection = f"heldout:{cfg.val_fraction}"
    if len(np.unique(y_tr)) < 2:
        raise SSLBenchError(f"{cfg.data.root}: the training part has fewer than 2 classes ({len(y_tr)} images)")
    lambdas = lambda_grid(cfg.lambda_min, cfg.lambda_max, cfg.num_lambdas)
    result = sweep_logreg(
        x_tr,
        y_tr,
        x_va,
        y_va,
        x_te,
        y_te,
        lambdas,
        metric,
        cfg.max_iter,
        cfg.tol,
        cfg.seed,
        cfg.features.progress,
        cfg.solver,
        str(resolve_device(cfg.features.device)),
    )
    metrics = {metric: result["test"]}
    if metric != "top1":
        metrics["top1"] = accuracy(y_te, result["model"].predict(x_te), "top1")
    out = evalrun.output_dir(cfg.out, "logreg", info, evalrun.dataset_label(cfg.data))
    extra = {
        "C": result["C"],
        "lambda": result["lambda"],
        "grid": {
            "lambda_min": cfg.lambda_min,
            "lambda_max": cfg.lambda_max,
            "num": cfg.num_lambdas,
            "convention": "C = 1/lambda (sklearn: C * sum CE + 0.5 ||W||^2)",
        },
        "selection": selection,
        "dataset_metric": metric,
        "train_split": train.split,
        "val_best": result["val_best"],
        "transform": tr.key["transform"],
        "taps": tr.key["taps"],
        "n_train": len(y_tr),
        "n_val": len(y_va),
        "n_test": len(y_te),
    }
    details = {"lambdas": result["lambdas"], "val_scores": result["val_scores"]}
    evalrun.finish(
        "logreg",
        evalrun.dataset_label(cfg.data),
        plan.test,
        metrics,
        cfg=cfg,
        info=info,
        started=started,
        out=out,
        seed=cfg.seed,
        extra_settings=extra,
        details=details,
    )
    return metrics


add_arguments = evalrun.add_arguments


def run_cli(args: argparse.Namespace) -> int:
    return evalrun.run_protocol_cli(LogRegConfig, run, "logreg", args)
