"""Logistic regression: the lambda grid, metrics, selection on validation and the refit against direct sklearn."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from evaluate.datasets.metrics import accuracy as score
from evaluate.protocols.logreg import _split_heldout, fit_logreg, lambda_grid, sweep_logreg
from sslcore.errors import SSLBenchError


def test_lambda_grid_is_the_kornblith_grid():
    grid = lambda_grid()
    assert len(grid) == 45
    assert grid[0] == pytest.approx(1e-6) and grid[-1] == pytest.approx(1e5)
    steps = np.diff(np.log10(grid))
    assert np.allclose(steps, 11 / 44)


def test_metrics_by_hand():
    y = np.array([0, 0, 0, 0, 1, 2])
    p = np.array([0, 0, 0, 0, 0, 2])
    assert score(y, p, "top1") == pytest.approx(100 * 5 / 6)
    assert score(y, p, "mean_per_class") == pytest.approx(100 * (1 + 0 + 1) / 3)
    with pytest.raises(SSLBenchError):
        score(y, p, "top3")


def _blobs(seed, n_per, classes=4, dim=10, spread=1.5):
    """Overlapping Gaussian blobs around fixed centers (the same for every seed)."""
    centers = np.random.default_rng(123).normal(size=(classes, dim)) * 1.2
    y = np.repeat(np.arange(classes), n_per)
    return centers[y] + spread * np.random.default_rng(seed).normal(size=(len(y), dim)), y


def test_sweep_selects_on_val_and_refit_matches_direct_sklearn():
    x_tr, y_tr = _blobs(0, 30)
    x_va, y_va = _blobs(1, 10)
    x_te, y_te = _blobs(2, 20)
    lambdas = lambda_grid(1e-3, 1e3, 7)
    res = sweep_logreg(x_tr, y_tr, x_va, y_va, x_te, y_te, lambdas, tol=1e-8, solver="sklearn")
    assert res["lambdas"] == sorted(res["lambdas"], reverse=True)  # strong -> weak regularisation
    best = int(np.argmax(res["val_scores"]))
    assert res["lambda"] == pytest.approx(res["lambdas"][best]) and res["C"] == pytest.approx(1 / res["lambda"])
    assert res["val_best"] == max(res["val_scores"])
    # each val score is that of a direct fit on train
    direct = LogisticRegression(C=1 / res["lambdas"][2], max_iter=1000, tol=1e-8).fit(x_tr, y_tr)
    assert res["val_scores"][2] == pytest.approx(100 * (direct.predict(x_va) == y_va).mean())
    # the test score is that of a direct fit on train + val with the chosen C
    final = LogisticRegression(C=res["C"], max_iter=1000, tol=1e-8).fit(np.r_[x_tr, x_va], np.r_[y_tr, y_va])
    assert res["test"] == pytest.approx(100 * (final.predict(x_te) == y_te).mean())
    np.testing.assert_allclose(res["model"].coef_, final.coef_, rtol=1e-4, atol=1e-6)
    proba = res["model"].predict_proba(x_te)
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-12)
    assert res["test"] > 60.0  # the blobs overlap but are learnable


def test_heldout_split():
    keep, held = _split_heldout(np.zeros(50), 0.2, seed=0)
    assert len(held) == 10 and sorted(np.r_[keep, held].tolist()) == list(range(50))
    with pytest.raises(SSLBenchError):
        _split_heldout(np.zeros(5), 0.0, seed=0)


@pytest.mark.parametrize("classes", [2, 4])
def test_torch_lbfgs_matches_sklearn(classes):
    x, y = _blobs(0, 60, classes=classes)
    x_te, y_te = _blobs(5, 50, classes=classes)
    for C in (0.01, 10.0, 1e4):  # 1e4: weak regularisation, where the preconditioning matters
        ref = fit_logreg(x, y, C, tol=1e-10, max_iter=5000)
        got = fit_logreg(x, y, C, tol=1e-9, solver="torch", dtype="float64")
        assert got.coef_.shape == ref.coef_.shape == ((1 if classes == 2 else classes), x.shape[1])
        assert abs(score(y_te, got.predict(x_te), "top1") - score(y_te, ref.predict(x_te), "top1")) <= 0.1
        scale = np.abs(ref.coef_).max()
        np.testing.assert_allclose(got.coef_, ref.coef_, rtol=0, atol=1e-4 * max(scale, 1.0))
        np.testing.assert_allclose(got.intercept_, ref.intercept_, rtol=0, atol=1e-4 * max(scale, 1.0))
        np.testing.assert_allclose(got.predict_proba(x_te), ref.predict_proba(x_te), atol=1e-4)


def test_objective_is_sklearns_at_the_torch_minimum():
    # the torch fit's objective C * sum CE + 0.5 ||W||^2 is no larger than sklearn's at its own optimum
    from sklearn.metrics import log_loss

    x, y = _blobs(3, 40, classes=3, spread=2.0)
    for C in (0.1, 100.0):
        ref = fit_logreg(x, y, C, tol=1e-10, max_iter=5000)
        got = fit_logreg(x, y, C, tol=1e-9, solver="torch", dtype="float64")

        def objective(m, C=C):
            return C * len(y) * log_loss(y, m.predict_proba(x)) + 0.5 * float((m.coef_**2).sum())

        assert objective(got) <= objective(ref) * (1 + 1e-7)


def test_warm_start_shares_the_problem_and_reaches_the_cold_minimum():
    x, y = _blobs(4, 50, classes=4)
    cold = fit_logreg(x, y, 100.0, tol=1e-9, solver="torch", dtype="float64")
    strong = fit_logreg(x, y, 0.01, tol=1e-9, solver="torch", dtype="float64")
    warm = fit_logreg(x, y, 100.0, tol=1e-9, solver="torch", dtype="float64", init=strong)
    assert warm.problem is strong.problem  # one eigendecomposition for the whole path
    np.testing.assert_allclose(warm.coef_, cold.coef_, atol=1e-5 * np.abs(cold.coef_).max())
    other = fit_logreg(x.copy(), y, 100.0, solver="torch", init=strong)  # different data object: not shared
    assert other.problem is not strong.problem


def test_torch_sweep_selects_as_sklearn_sweep_on_non_square_odd_data():
    # 7 classes, 37 dims, uneven class sizes, offset and anisotropic features: the default (float32 torch) sweep picks
    # the same lambda and the same accuracies as the sklearn sweep
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(7, 37)) * 0.6
    scale = np.linspace(0.2, 3.0, 37)

    def draw(n, seed):
        r = np.random.default_rng(seed)
        y = r.choice(7, size=n, p=np.array([4, 3, 3, 2, 2, 1, 1]) / 16)
        return (centers[y] + r.normal(size=(n, 37))) * scale + 5.0, y

    parts = (*draw(301, 1), *draw(97, 2), *draw(203, 3))
    lambdas = lambda_grid(1e-3, 1e4, 12)
    ref = sweep_logreg(*parts, lambdas, solver="sklearn")
    got = sweep_logreg(*parts, lambdas)
    assert got["lambda"] == pytest.approx(ref["lambda"])
    assert abs(got["val_best"] - ref["val_best"]) <= 0.1 + 1e-9
    assert abs(got["test"] - ref["test"]) <= 0.1 + 1e-9


def test_bad_solver_and_dtype_raise():
    x, y = _blobs(0, 5)
    with pytest.raises(SSLBenchError):
        fit_logreg(x, y, 1.0, solver="cuml")
    with pytest.raises(SSLBenchError):
        fit_logreg(x, y, 1.0, solver="torch", dtype="float16")
