"""Multinomial L2 logistic regression on frozen features (Kornblith et al. 2019 transfer protocol), ``sslbench eval
logreg``; also the DINOv2 logistic regression and the 1 % / 10 % semi-supervised variant.

Core (:func:`sweep_logreg`): multinomial L2 logistic regression (the objective of scikit-learn's
``LogisticRegression(solver="lbfgs")``, one weight vector for two classes) on the features X (N, D), no augmentation.
The regularisation strength runs over 45 log-spaced values lambda in [1e-6, 1e5] and sklearn's C = 1 / lambda. sklearn
minimises C * sum_i CE_i + 0.5 * ||W||^2, so lambda multiplies 0.5 * ||W||^2 against a *sum* of losses (the
ssl-transfer convention, wd -> C = 1 / wd; DINOv2's cuML grid C in 10^linspace(-6, 5, 45) is the same set of values).
Each value is fitted on the train part and scored on the validation part; the best (first maximum, scanning from
strong to weak regularisation) is refitted on train + val and scored on the test split.

Solvers (``solver``): ``"torch"`` (default) solves that objective with ``torch.optim.LBFGS`` on ``features.device``
after a change of variables that makes its Hessian near the identity (:class:`TorchLogReg`), in float32, each lambda
warm-started from the previous one along the strong -> weak path and one eigendecomposition shared by all of them;
``"sklearn"`` is the reference (sklearn's lbfgs, warm-started the same way). Both select the same lambda and accuracy
within 0.1 point (tests/test_logreg.py; benchmarks/logreg.py measures the sweep against 45 sequential sklearn fits).
The former plain float64 torch L-BFGS, 12-19x slower than sklearn, is gone.

Validation part (``selection``, default ``auto``):

* ``val``: a predefined validation split: the dataset's official one (Aircraft, DTD, Flowers) or ``val=<split>``
  for ImageFolder trees (auto when there is one), refit on train + val;
* ``heldout``: a seeded random ``val_fraction`` of train (0.2, as ssl-transfer; DINOv2 uses 0.1), refit on
  train + held-out (auto without a predefined split or a subset). The split is stratified (the fraction of every
  class with at least two images, at least one each), where ssl-transfer and DINOv2 draw from all of train: the
  counts are the same, and a small dataset keeps every class on both sides;
* ``outside_subset`` (auto with ``data.subset``, the semi-supervised 1 % / 10 % runs): DINOv2's rule for label
  subsets: C is chosen on labelled train images that are **not** in the subset (per class as many as the subset has
  of that class, seeded), and the classifier is fitted on the subset only (selection labels never become training
  labels). Holding out a fraction of the subset itself, as before, left 2 validation images on a 10-image subset and
  chose C on noise. DINO v1's logistic regression instead fixes its settings (cyanure, lambda ~ 0.1/n); it is not
  reproduced here.

Every run refuses a selection part without at least one image of each training class (a ConfigError naming the
selection), since C chosen on a split that lacks classes is arbitrary. Metric (``metric="auto"``): the dataset's,
chosen by its registry name (mean per-class accuracy for Aircraft, Caltech-101, Flowers and Pets as in Kornblith's
list, top-1 otherwise and for ImageFolder trees); it drives the selection and is the record's metric. With mean
per-class, the refitted model's top-1 is recorded beside it.

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
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from evaluate.datasets import LabeledImages
from evaluate.datasets.metrics import accuracy
from evaluate.protocols import evalrun
from evaluate.protocols.features import FeatureConfig, get_features
from sslcore.config import NON_NEGATIVE, POSITIVE, validate
from sslcore.device import parse_device
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
    dtype: str = "float32",
) -> Any:
    """One L-BFGS logistic regression (with intercept) by sklearn or :class:`TorchLogReg` (``solver="torch"``).

    ``init``: an earlier fit of the same solver on the same data to warm-start from (the sweep passes the previous
    lambda's model; the minimiser is unique, so only the iteration count changes). ``dtype``: the torch solver's
    precision. sklearn convergence warnings are logged.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    if solver == "torch":
        return TorchLogReg(C, max_iter, tol, device, dtype).fit(x, y, init=init)
    if solver != "sklearn":
        raise SSLBenchError(f"solver={solver!r}: expected torch or sklearn")
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


class _Problem:
    """The data of a logistic regression in the solver's coordinates, shared by every lambda of a sweep.

    Features are centred (mean mu) and rotated onto the eigenvectors V of their covariance (eigenvalues s):
    z = (x - mu) V, (n, D). Weights W (rows, D) in the original coordinates are W' V^T in these; ||W|| = ||W'||.
    """

    def __init__(self, x: np.ndarray, y: np.ndarray, device: str, dtype: Any) -> None:
        import torch

        self.source, self.source_labels, self.device, self.dtype = x, y, device, dtype
        self.classes, target = np.unique(y, return_inverse=True)
        x64 = torch.as_tensor(x, dtype=torch.float64, device=device)
        self.mean = x64.mean(0)
        centred = x64 - self.mean
        eigenvalues, self.rotation = torch.linalg.eigh(centred.T @ centred / len(x))
        self.spectrum = eigenvalues.clamp_min(0).to(dtype)
        self.z = (centred @ self.rotation).to(dtype)
        self.y = torch.as_tensor(target, device=device)

    def matches(self, x: np.ndarray, y: np.ndarray, device: str, dtype: Any) -> bool:
        """The same arrays (by identity: the sweep passes the same ones for every lambda), device and precision."""
        return self.source is x and self.source_labels is y and self.device == device and self.dtype == dtype


class TorchLogReg:
    """The same model and objective as sklearn's lbfgs ``LogisticRegression``, solved by ``torch.optim.LBFGS`` on a
    diagonally preconditioned problem (the default solver of the sweep).

    Minimises C * sum_i CE_i + 0.5 * ||W||^2 (intercept not penalised), divided by C * n (same minimiser): mean CE +
    0.5 * lam * ||W||^2 with lam = 1 / (C n). Two classes use one weight vector and the logistic loss, as sklearn does;
    more use the full multinomial (rows = classes) matrix.

    Preconditioning (a change of variables, same minimiser): in the covariance eigenbasis of :class:`_Problem`, the
    Hessian of the objective along eigen-direction j is about a * s_j + lam (a = 1 / rows, the softmax curvature at
    uniform predictions; 1/4 for the logistic loss), so L-BFGS runs on U = W' * sqrt(a * s + lam), whose Hessian is
    near the identity at every lambda: weak regularisation, where the plain problem is ill-conditioned, converges in
    tens of iterations instead of hundreds. ``init`` (the previous lambda's fit on the same data) warm-starts and
    shares the eigendecomposition. Float32 by default (the sweep's selected lambda and accuracy are unchanged,
    benchmarks/logreg.py); ``dtype="float64"`` for tight tolerances. Stops when max |dJ/dU| <= ``tol``.
    """

    def __init__(
        self, C: float, max_iter: int = 1000, tol: float = 1e-4, device: str = "cpu", dtype: str = "float32"
    ) -> None:
        if dtype not in ("float32", "float64"):
            raise SSLBenchError(f"dtype={dtype!r}: expected float32 or float64")
        self.C, self.max_iter, self.tol, self.device, self.dtype = C, max_iter, tol, device, dtype

    def fit(self, x: np.ndarray, y: np.ndarray, init: TorchLogReg | None = None) -> TorchLogReg:
        import torch
        import torch.nn.functional as F

        dtype = getattr(torch, self.dtype)
        if init is not None and init.problem.matches(x, y, self.device, dtype):
            problem = init.problem
        else:
            problem, init = _Problem(x, y, self.device, dtype), None
        self.problem, self.classes_ = problem, problem.classes
        rows = 1 if len(self.classes_) == 2 else len(self.classes_)
        curvature = 0.25 if rows == 1 else 1.0 / rows
        lam = 1.0 / (self.C * len(x))
        scale = (curvature * problem.spectrum + lam).rsqrt()  # W' = U * scale
        bias_scale = curvature**-0.5
        if init is None:
            w = torch.zeros(rows, x.shape[1], dtype=dtype, device=self.device)
            b = torch.zeros(rows, dtype=dtype, device=self.device)
        else:
            w, b = init.rotated_
        u = (w / scale).requires_grad_(True)
        c = (b / bias_scale).requires_grad_(True)
        opt = torch.optim.LBFGS(
            [u, c],
            lr=1,
            max_iter=self.max_iter,
            tolerance_grad=self.tol,
            tolerance_change=1e-12 if dtype == torch.float64 else 1e-9,
            history_size=10,
            line_search_fn="strong_wolfe",
        )

        def closure():
            opt.zero_grad()
            weight = u * scale
            logits = torch.addmm(c * bias_scale, problem.z, weight.T)
            if rows == 1:
                data = F.binary_cross_entropy_with_logits(logits[:, 0], problem.y.to(dtype))
            else:
                data = F.cross_entropy(logits, problem.y)
            loss = data + 0.5 * lam * (weight * weight).sum()
            loss.backward()
            return loss

        opt.step(closure)
        state = opt.state[u]
        self.n_iter_, self.n_evals_ = int(state.get("n_iter", 0)), int(state.get("func_evals", 0))
        with torch.no_grad():
            self.rotated_ = (u * scale).detach(), (c * bias_scale).detach()
            coef = self.rotated_[0].double() @ problem.rotation.T
            self.coef_ = coef.cpu().numpy()
            self.intercept_ = (self.rotated_[1].double() - coef @ problem.mean).cpu().numpy()
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
    solver: str = "torch",
    device: str = "cpu",
    dtype: str = "float32",
    refit_on_val: bool = True,
) -> dict[str, Any]:
    """Choose lambda on validation, refit on train + val (``refit_on_val``, else on train only), score test.

    Returns {"lambda", "C", "val_scores" (per lambda), "test", "val_best", "model"}; lambdas are scanned from the
    largest (strongest regularisation) down, each fit warm-started from the previous one, and the first maximum wins.
    The refit on train + val starts from zero.
    """
    from tqdm.auto import tqdm

    order = np.sort(np.asarray(lambdas, dtype=float))[::-1]
    val_scores, clf = [], None
    for lam in tqdm(order, desc="logreg sweep", disable=not progress, leave=False):
        clf = fit_logreg(x_train, y_train, 1.0 / lam, max_iter, tol, seed, solver, device, init=clf, dtype=dtype)
        val_scores.append(accuracy(y_val, clf.predict(x_val), metric))
    best = int(np.argmax(val_scores))
    lam = float(order[best])
    final = fit_logreg(
        np.concatenate([x_train, x_val]) if refit_on_val else x_train,
        np.concatenate([y_train, y_val]) if refit_on_val else y_train,
        1.0 / lam,
        max_iter,
        tol,
        seed,
        solver,
        device,
        dtype=dtype,
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
    selection: Literal["auto", "val", "heldout", "outside_subset"] = "auto"  # see the module docstring
    val_fraction: float = 0.2  # selection=heldout: the fraction of train held out
    lambda_min: float = 1e-6
    lambda_max: float = 1e5
    num_lambdas: int = 45
    metric: Literal["auto", "top1", "mean_per_class"] = "auto"  # auto: the dataset's own
    l2_normalize: bool = False
    max_iter: int = 1000
    tol: float = 1e-4
    solver: Literal["torch", "sklearn"] = "torch"  # torch: preconditioned L-BFGS on features.device; sklearn: reference
    dtype: Literal["float32", "float64"] = "float32"  # torch solver precision
    seed: int = 0
    out: str | None = None

    def __post_init__(self) -> None:
        validate(
            self,
            {
                "val_fraction": (lambda v: 0 < v < 1, "must be in (0, 1)"),
                "lambda_min": POSITIVE,
                "lambda_max": (lambda v: v >= self.lambda_min, f"must be >= lambda_min={self.lambda_min}"),
                "num_lambdas": POSITIVE,
                "max_iter": POSITIVE,
                "tol": POSITIVE,
                "seed": NON_NEGATIVE,
            },
        )

    def check(self) -> None:
        """Cross-section checks, before any work (``evalrun.check_outputs``)."""
        plan = evalrun.data_plan(self.data)
        resolve_selection(self, has_val=bool(self.val or plan.val))
        if self.val and plan.imagefolder and not (Path(self.data.root) / self.val).is_dir():
            raise SSLBenchError(f"val={self.val}: split directory not found under {self.data.root}")


def resolve_selection(cfg: LogRegConfig, has_val: bool | None = None) -> str:
    """The selection rule ``auto`` stands for: ``val`` with a predefined split (``val=`` or the dataset's official
    one, ``has_val``), ``outside_subset`` with a label subset, else ``heldout``."""
    has_val = bool(cfg.val) if has_val is None else has_val
    if cfg.selection != "auto":
        if cfg.selection == "val" and not has_val:
            raise SSLBenchError("selection=val needs a predefined validation split (val=<split directory>)")
        if cfg.selection == "outside_subset" and not cfg.data.subset:
            raise SSLBenchError("selection=outside_subset needs data.subset")
        return cfg.selection
    return "val" if has_val else ("outside_subset" if cfg.data.subset else "heldout")


def outside_subset(full: LabeledImages, subset: LabeledImages, seed: int) -> LabeledImages:
    """Labelled images of ``full`` (the whole train split) not in ``subset``: per class as many as the subset holds
    of that class (fewer when the class has no more), seeded, in split order."""
    chosen = {path for path, _ in subset.samples}
    need = np.bincount(np.asarray(subset.labels, dtype=np.int64), minlength=len(full.classes))
    rng = np.random.default_rng(seed)
    picked: list[int] = []
    for cls in range(len(full.classes)):
        pool = [i for i, (path, label) in enumerate(full.samples) if label == cls and path not in chosen]
        if need[cls] and pool:
            picked += rng.choice(pool, size=min(int(need[cls]), len(pool)), replace=False).tolist()
    return full.select(sorted(picked))


def check_selection_split(y_train: np.ndarray, y_val: np.ndarray, classes: Sequence[str], selection: str) -> None:
    """Refuse a selection part that lacks a training class (C chosen on it would be arbitrary)."""
    lacking = sorted(set(np.unique(y_train).tolist()) - set(np.unique(y_val).tolist()))
    if lacking:
        raise SSLBenchError(
            f"selection={selection}: the selection split ({len(y_val)} images) has no image of {len(lacking)} of "
            f"the {len(np.unique(y_train))} training classes (e.g. {classes[lacking[0]]!r}); use a predefined "
            "val split, a larger val_fraction, or selection=outside_subset for label subsets"
        )


def _split_heldout(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if not 0.0 < fraction < 1.0:
        raise SSLBenchError(f"val_fraction={fraction}: must be in (0, 1) when no predefined val split is given")
    y = np.asarray(y)
    rng = np.random.default_rng(seed)
    held: list[int] = []
    for cls in np.unique(y):  # stratified: every class with 2+ images keeps one in train and gives one or more
        members = rng.permutation(np.flatnonzero(y == cls))
        if len(members) >= 2:
            held += members[: min(len(members) - 1, max(1, int(round(fraction * len(members)))))].tolist()
    held_arr = np.sort(np.asarray(held, dtype=np.int64))
    return np.setdiff1d(np.arange(len(y)), held_arr), held_arr


def run(cfg: LogRegConfig, backbone: Any = None) -> dict[str, float]:
    """Features, sweep, refit, test; appends one record (``top1`` or ``mean_per_class``); returns the metrics."""
    started = time.time()
    # The selection split is decided from the labels alone, before the model is loaded: a split that cannot select
    # (a class missing) fails before any feature is computed.
    plan, train, val, test = evalrun.load_splits(cfg.data, select=True, val=cfg.val)
    rule = resolve_selection(cfg, has_val=val is not None)
    labels = np.asarray(train.labels)
    keep = held = None
    if rule == "val":
        selection = f"predefined:{val.split}"
    elif rule == "outside_subset":
        val = outside_subset(plan.load(plan.train), train, cfg.seed)
        selection = "outside_subset"
    else:
        val = None
        keep, held = _split_heldout(labels, cfg.val_fraction, cfg.seed)
        selection = f"heldout:{cfg.val_fraction}"
    fit_labels = labels if keep is None else labels[keep]
    if len(np.unique(fit_labels)) < 2:
        raise SSLBenchError(f"{cfg.data.root}: the training part has fewer than 2 classes ({len(fit_labels)} images)")
    check_selection_split(
        fit_labels, np.asarray(val.labels) if val is not None else labels[held], train.classes, selection
    )
    metric = plan.metric if cfg.metric == "auto" else cfg.metric

    model, info = evalrun.load_model(cfg.backbone, backbone)
    tr = get_features(model, info, train, cfg.features)
    te = get_features(model, info, test, cfg.features)

    def arrays(fs) -> tuple[np.ndarray, np.ndarray]:
        x = fs.features.double().numpy()
        if cfg.l2_normalize:
            x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        return x, fs.labels.numpy()

    x_tr, y_tr = arrays(tr)
    x_te, y_te = arrays(te)
    if keep is not None:
        x_tr, x_va, y_tr, y_va = x_tr[keep], x_tr[held], y_tr[keep], y_tr[held]
    else:
        x_va, y_va = arrays(get_features(model, info, val, cfg.features))
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
        str(parse_device(cfg.features.device, "features.device")),
        cfg.dtype,
        refit_on_val=rule != "outside_subset",
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
        "refit": "train+val" if rule != "outside_subset" else "train (the subset)",
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
