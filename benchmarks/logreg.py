"""Logistic-regression sweep speed: ``evaluate.protocols.logreg.sweep_logreg`` against scikit-learn run sequentially over the
same 45 C values, interleaved, same inputs, equal selected accuracy.

Reference: the protocol as ssl-transfer / Kornblith et al. and DINOv2 (``log_regression.py``, with cuML on GPU) run it:
for each C = 1 / lambda of the 45-value grid, a fresh ``sklearn.linear_model.LogisticRegression(C=C, solver="lbfgs",
max_iter=1000, tol=1e-4)`` fitted on the train part and scored on the validation part; the first maximum (strong ->
weak regularisation) is refitted on train + val and scored on test. sslbench: :func:`evaluate.protocols.logreg.sweep_logreg`
with its default solver (preconditioned float32 torch L-BFGS, warm-started along the path). Synthetic features shaped
like frozen SSL features (default 8,000 train + 2,000 val + 5,000 test x 384, 100 classes, an anisotropic spectrum,
class signal in a low-dimensional subspace, so that weak regularisation overfits and the selected lambda is interior).

Printed: min / median over ``--repeat`` interleaved rounds, the ratio, the selected lambda and val / test accuracy of
both, the test accuracy of a tightly converged refit at the selected lambda (the lambda must be the same, the val
accuracy within ``--tolerance`` points, and sslbench's test within ``--tolerance`` of the converged refit: sklearn's
refit at its default tol=1e-4 can stop farther than that from it), and the matmul floor of the sslbench sweep: its number of function
evaluations times the time of one evaluation's products (logits (n, D) x (D, K) and the weight gradient), measured in
the same run.

    python benchmarks/logreg.py [--repeat 2] [--device cuda]
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import interleaved, line  # noqa: E402

from evaluate.protocols import logreg  # noqa: E402


def make_features(n: int, dim: int, classes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Class means in a random ``dim // 8``-dimensional subspace, noise with a power-law spectrum, an offset."""
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(np.random.default_rng(1).normal(size=(dim, dim)))[0]
    spectrum = np.arange(1, dim + 1) ** -0.5
    centers = np.zeros((classes, dim))
    centers[:, : dim // 8] = np.random.default_rng(2).normal(size=(classes, dim // 8)) * spectrum[: dim // 8] * 0.5
    y = rng.integers(0, classes, n)
    x = (centers[y] + rng.normal(size=(n, dim)) * spectrum) @ basis.T * 3.0 + 0.5
    return x, y


def sklearn_sequential(x_tr, y_tr, x_va, y_va, x_te, y_te, lambdas) -> dict:
    """45 independent sklearn fits on train, the first best on val refitted on train + val (the reference)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    order = np.sort(lambdas)[::-1]
    scores = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for lam in order:
            clf = LogisticRegression(C=1.0 / lam, solver="lbfgs", max_iter=1000, tol=1e-4).fit(x_tr, y_tr)
            scores.append(100.0 * float((clf.predict(x_va) == y_va).mean()))
        best = int(np.argmax(scores))
        final = LogisticRegression(C=1.0 / order[best], solver="lbfgs", max_iter=1000, tol=1e-4)
        final.fit(np.concatenate([x_tr, x_va]), np.concatenate([y_tr, y_va]))
    test = 100.0 * float((final.predict(x_te) == y_te).mean())
    return {"lambda": float(order[best]), "val_best": scores[best], "test": test, "val_scores": scores}


def count_evaluations(run) -> int:
    """Function evaluations of the torch solver over one sweep (wraps TorchLogReg.fit)."""
    total = [0]
    original = logreg.TorchLogReg.fit

    def counting(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        total[0] += self.n_evals_
        return out

    logreg.TorchLogReg.fit = counting
    try:
        run()
    finally:
        logreg.TorchLogReg.fit = original
    return total[0]


def evaluation_products(n: int, dim: int, classes: int, device: str, repeat: int = 20) -> float:
    """Seconds of one function evaluation's products (float32): logits and the weight gradient."""
    z = torch.randn(n, dim, device=device)
    w = torch.randn(classes, dim, device=device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    best = float("inf")
    for _ in range(repeat):
        sync()
        start = time.perf_counter()
        logits = z @ w.T
        logits.T @ z
        sync()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-train", type=int, default=8000)
    parser.add_argument("--n-val", type=int, default=2000)
    parser.add_argument("--n-test", type=int, default=5000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--tolerance", type=float, default=0.1, help="accuracy agreement in points")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    x, y = make_features(args.n_train + args.n_val + args.n_test, args.dim, args.classes)
    a, b = args.n_train, args.n_train + args.n_val
    split = (x[:a], y[:a], x[a:b], y[a:b], x[b:], y[b:])
    lambdas = logreg.lambda_grid()

    def ours():
        return logreg.sweep_logreg(*split, lambdas, device=args.device)

    fns = {"sslbench sweep (torch)": ours, "sklearn, 45 sequential fits": lambda: sklearn_sequential(*split, lambdas)}
    times, out = interleaved(fns, args.repeat, args.device)
    evaluations = count_evaluations(ours)
    per_eval = evaluation_products(args.n_train, args.dim, args.classes, args.device)
    floor = evaluations * per_eval

    mine, ref = out["sslbench sweep (torch)"], out["sklearn, 45 sequential fits"]
    print(
        f"device={args.device} train={args.n_train} val={args.n_val} test={args.n_test} dim={args.dim} "
        f"classes={args.classes} lambdas={len(lambdas)} repeat={args.repeat} (interleaved; min is the figure)"
    )
    for name, secs in times.items():
        print(line(name, secs))
    t_ours, t_ref = min(times["sslbench sweep (torch)"]), min(times["sklearn, 45 sequential fits"])
    print(
        f"  ratio sklearn / sslbench {t_ref / t_ours:.2f}x (target >= 5x)   sslbench matmul floor "
        f"{evaluations} evaluations x {1e3 * per_eval:.1f} ms = {floor:.2f} s, time / floor {t_ours / floor:.2f}x"
    )
    for name, res in (("sslbench", mine), ("sklearn", ref)):
        print(f"  {name:<9} lambda {res['lambda']:.3g}   val {res['val_best']:.2f}   test {res['test']:.2f}")
    curve = ", ".join(f"{v:.1f}" for v in ref["val_scores"])
    print(f"  sklearn val curve (strong -> weak): {curve}")
    # the refit's test accuracy depends on how far each solver stops from the optimum: solve it tightly (float64)
    x_all, y_all = np.concatenate([split[0], split[2]]), np.concatenate([split[1], split[3]])
    tight = logreg.fit_logreg(
        x_all, y_all, 1.0 / ref["lambda"], max_iter=5000, tol=1e-7, solver="torch", device=args.device, dtype="float64"
    )
    optimum = 100.0 * float((tight.predict(split[4]) == split[5]).mean())
    print(
        f"  converged refit at sklearn's lambda (float64, tol 1e-7): test {optimum:.2f}; distance: sslbench "
        f"{abs(mine['test'] - optimum):.2f}, sklearn (tol 1e-4) {abs(ref['test'] - optimum):.2f}"
    )
    agree = (
        mine["lambda"] == ref["lambda"]
        and abs(mine["val_best"] - ref["val_best"]) <= args.tolerance
        and abs(mine["test"] - optimum) <= args.tolerance
    )
    print(
        f"  same lambda, val within {args.tolerance} point, test within {args.tolerance} point of the optimum: {agree}"
        f"   (test vs sklearn's refit: {mine['test'] - ref['test']:+.2f})"
    )
    if not agree:
        sys.exit(1)


if __name__ == "__main__":
    main()
