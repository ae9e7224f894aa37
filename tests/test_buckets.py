"""Instance buckets: the exact solver pads N to a few sizes with zero-weight rows, and nothing changes.

The public entries (``predictor(model="exact")``, ``exact_outputs``, the
estimator) pad the instances to :func:`bucket_rows` sizes so that one compiled
solver serves every ``N`` of a bucket. Padding rows are zero in the solver's
coordinates and get zero weight in the loss, so the padded solve must give the
unpadded solve's numbers: compared here with the kernel run on the exact shapes
(no padding), to 1e-12 in float64, on training outputs, dual coefficients,
intercepts, test outputs and the estimator's probabilities.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sdtheory
from sdtheory import exact_outputs, predictor
from sdtheory._src.exact import bucket_rounds, bucket_rows, exact_phi_core, solver_features

TOL = 1e-12
#: Tight stopping tolerances, so both solves end at the optimum (not at two iterates within 1e-9 of it).
TIGHT = dict(tol=1e-13, rtol=0.0, max_iter=200)


def _problem(n, d=5, k=3, seed=0):
    """Features with max |X| in [1, 2) (unit scale: the public face rescales nothing) and one-hot targets."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1.0, 1.0, (n, d))
    x[0, 0] = 1.5
    t = np.eye(k)[rng.integers(0, k, n)]
    t[:k] = np.eye(k)  # every class present
    return x, t


def _unpadded(phi, t, lam, num_rounds, **options):
    """The kernel on the exact shapes, without padding (float64)."""
    with jax.enable_x64(True):
        res = exact_phi_core(phi, jnp.asarray(t), jnp.asarray(lam), num_rounds, **options)
        return jax.tree_util.tree_map(np.asarray, res)


def test_bucket_rows_are_few_and_tight():
    # the buckets are m 2^e with m in 5..8 (and every n <= 8): enumerate them independently
    sizes = sorted({m << e for e in range(0, 14) for m in range(5, 9)} | set(range(1, 9)))
    for n in range(1, 5000):
        b = bucket_rows(n)
        assert b == min(s for s in sizes if s >= n)
        assert n <= b <= max(8, 1.25 * n)
    assert len({bucket_rows(n) for n in range(1, 4097)}) == 8 + 4 * 9  # four shapes per octave
    assert [bucket_rows(n) for n in (999, 1000, 1001, 1024, 1025, 1100)] == [1024] * 4 + [1280] * 2


@pytest.mark.parametrize("fit_intercept", [False, True])
@pytest.mark.parametrize("n", [29, 45])  # padded to 32 and 48
def test_padding_changes_no_output_features(n, fit_intercept):
    x, t = _problem(n)
    lam, rounds = 1e-2, 3
    assert bucket_rows(n) > n
    p = predictor(t, lam=lam, features=x, model="exact", num_rounds=rounds, fit_intercept=fit_intercept, **TIGHT)
    ref = _unpadded(solver_features(features=jnp.asarray(x)), t, lam, rounds, fit_intercept=fit_intercept, **TIGHT)
    got = p.exact_result(num_rounds=rounds)
    assert got.outputs.shape == (rounds, n, 3) and got.coef.shape == (rounds, n, 3)
    for name in ("outputs", "coef", "intercepts"):
        np.testing.assert_allclose(getattr(got, name), getattr(ref, name), rtol=0, atol=TOL, err_msg=name)
    # test outputs: softmax(X_test W_r + b_r) with the unpadded weights W_r = A_r^T X
    x_test, _ = _problem(7, seed=1)
    logits = np.einsum("td,rnk,nd->rtk", x_test, ref.coef, x) + ref.intercepts[:, None, :]
    direct = np.exp(logits - logits.max(-1, keepdims=True))
    direct /= direct.sum(-1, keepdims=True)
    np.testing.assert_allclose(p.test_outputs(num_rounds=rounds, test_features=x_test), direct, rtol=0, atol=TOL)


@pytest.mark.parametrize("loss", ["ce", "gce"])
def test_padding_changes_no_output_gram_and_pll(loss):
    # a rank-deficient Gram (d = 4 < N): its zero eigenspace is degenerate; padding must not enter it
    n = 21  # padded to 24
    x, t = _problem(n, d=4)
    g = x @ x.T
    lam, rounds = 1e-2, 3
    p = predictor(t, lam=lam, gram=g, model="exact", num_rounds=rounds, student="pll", loss=loss, **TIGHT)
    phi = solver_features(gram=jnp.asarray(g))
    teacher = _unpadded(phi, t, lam, 1, **TIGHT)
    got = p.exact_result(num_rounds=rounds)
    np.testing.assert_allclose(got.outputs[0], teacher.outputs[0], rtol=0, atol=TOL)
    np.testing.assert_allclose(got.coef[0], teacher.coef[0], rtol=0, atol=TOL)
    # the students: top-2 targets of the previous round, fitted from its weights (init="teacher")
    prev = teacher
    for r in range(1, rounds):
        top2 = np.argsort(-prev.outputs[0], axis=1, kind="stable")[:, :2]
        t2 = np.zeros_like(t)
        np.put_along_axis(t2, top2, 0.5, axis=1)
        prev = _unpadded(phi, t2, lam, 1, loss=loss, init_coef=jnp.asarray(prev.coef[0]), **TIGHT)
        np.testing.assert_allclose(got.outputs[r], prev.outputs[0], rtol=0, atol=TOL, err_msg=f"round {r}")


def test_padded_gram_coordinates_are_zero_rows():
    x, _ = _problem(21, d=4)
    g = x @ x.T
    with jax.enable_x64(True):
        phi = np.asarray(solver_features(gram=jnp.asarray(g), rows=24))
    assert phi.shape == (24, 24)
    assert not np.any(phi[21:])  # exactly zero: the eigendecomposition never sees the padding
    np.testing.assert_allclose(phi[:21] @ phi[:21].T, g, rtol=0, atol=1e-13)


def test_padding_rows_get_zero_weight():
    # whatever the padding rows' targets, the kernel masks them: bitwise the same solve
    n, rows = 13, 16
    x, t = _problem(n)
    rng = np.random.default_rng(3)
    with jax.enable_x64(True):
        phi = solver_features(features=jnp.asarray(x), rows=rows)
        clean = np.pad(t, ((0, rows - n), (0, 0)))
        noisy = clean.copy()
        noisy[n:] = rng.dirichlet(np.ones(3), rows - n)
        a, b = (exact_phi_core(phi, jnp.asarray(tt), 1e-2, 3, fit_intercept=True, num_valid=n) for tt in (clean, noisy))
        for la, lb in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
            np.testing.assert_array_equal(np.asarray(la), np.asarray(lb))
        assert not np.any(np.asarray(a.coef)[:, n:])


def test_estimator_probabilities_unchanged_by_padding():
    pytest.importorskip("sklearn")
    x, t = _problem(45, d=5)
    y = np.argmax(t, axis=1)
    clf = sdtheory.SelfDistillationClassifier(lam=1e-2, num_rounds=2, **TIGHT).fit(x, y)
    ref = _unpadded(solver_features(features=jnp.asarray(x)), t, 1e-2, 2, fit_intercept=True, **TIGHT)
    x_test, _ = _problem(9, seed=2)
    logits = x_test @ (ref.coef[-1].T @ x).T + ref.intercepts[-1]
    direct = np.exp(logits - logits.max(1, keepdims=True))
    direct /= direct.sum(1, keepdims=True)
    np.testing.assert_allclose(clf.predict_proba(x_test), direct, rtol=0, atol=TOL)


def test_one_compile_per_bucket():
    # N = 37, 38 and 40 share the bucket 40: the solver compiles once for the three
    x, t = _problem(40, d=3)
    exact_outputs(t[:37], lam=1e-2, num_rounds=2, features=x[:37])
    before = exact_phi_core._cache_size()
    for n in (38, 40):
        exact_outputs(t[:n], lam=1e-2, num_rounds=2, features=x[:n])
    assert exact_phi_core._cache_size() == before


def test_one_compile_for_one_to_four_rounds():
    # num_rounds 1..4 share the chain length bucket_rounds = 4 (later rounds skipped): one compile, and each
    # chain's numbers are those of the kernel's plain scan over exactly num_rounds rounds
    assert [bucket_rounds(r) for r in (1, 2, 3, 4, 5, 9, 11)] == [4, 4, 4, 4, 5, 10, 12]
    x, t = _problem(30, d=4)
    phi = solver_features(features=jnp.asarray(x))
    predictor(t, lam=1e-2, features=x, model="exact", num_rounds=1, **TIGHT)
    before = exact_phi_core._cache_size()
    fitted = {r: predictor(t, lam=1e-2, features=x, model="exact", num_rounds=r, **TIGHT) for r in (2, 3, 4)}
    assert exact_phi_core._cache_size() == before
    for r, fit in fitted.items():
        ref = _unpadded(phi, t, 1e-2, r, **TIGHT)
        np.testing.assert_allclose(fit.train_outputs(num_rounds=r), ref.outputs, rtol=0, atol=TOL)
        np.testing.assert_array_equal(fit.exact_result(num_rounds=r).iterations, ref.iterations)
