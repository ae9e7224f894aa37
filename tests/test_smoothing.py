"""Smoothing, mixed-target SD and metrics, against direct linear solves, NumPy loops and SciPy."""

import jax
import numpy as np
import pytest
from hypothesis import assume, given, strategies as st

import sdtheory

N, K, DIM = 24, 3, 6


def _problem(seed):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(N, DIM)) / np.sqrt(DIM)
    y = rng.integers(0, K, N)
    return X, X @ X.T, y


def _fit(G, T, lam):
    n, k = T.shape
    return 1.0 / k + G @ np.linalg.solve(G + k * n * lam * np.eye(n), T - 1.0 / k)


def _sd_direct(G, T, lam, rounds):
    out, t = [], T
    for _ in range(rounds):
        p = _fit(G, t, lam)
        out.append(p)
        t = p
    return np.array(out)


@given(seed=st.integers(0, 10**6), eps=st.floats(0.0, 0.99), loglam=st.floats(-3, 0))
def test_uniform_smoothing_never_changes_linearised_argmax(seed, eps, loglam):
    """P_eps - 1/K = (1 - eps)(P - 1/K): same argmax in every round (direct solves)."""
    X, G, y = _problem(seed)
    lam = 10.0**loglam
    Y = np.eye(K)[y]
    Ts = np.asarray(sdtheory.smoothing.uniform_smoothing(Y, eps))
    np.testing.assert_allclose(Ts, (1 - eps) * Y + eps / K, atol=1e-15)
    P = _sd_direct(G, Y, lam, 6)
    Ps = _sd_direct(G, Ts, lam, 6)
    srt = np.sort(P, -1)
    assume(np.min(srt[..., -1] - srt[..., -2]) > 1e-9)
    np.testing.assert_array_equal(P.argmax(-1), Ps.argmax(-1))
    # And the library's closed form agrees with the direct solves on smoothed targets.
    np.testing.assert_allclose(sdtheory.sd_outputs(Ts, lam=lam, rounds=np.arange(6), gram=G), Ps, atol=1e-10)


@given(seed=st.integers(0, 10**6), xi=st.floats(0.0, 1.0), loglam=st.floats(-3, 0))
def test_mixed_target_closed_form_equals_iterated_recursion(seed, xi, loglam):
    X, G, y = _problem(seed)
    lam = 10.0**loglam
    Y = np.eye(K)[y]
    out, t = [], Y
    for _ in range(7):
        p = _fit(G, t, lam)
        out.append(p)
        t = xi * p + (1 - xi) * Y
    got = sdtheory.sd_outputs(Y, lam=lam, rounds=np.arange(7), xi=xi, gram=G)
    np.testing.assert_allclose(got, np.array(out), atol=1e-10)


def test_beta_smoothing_rank_matching_and_distribution():
    from scipy import stats

    n, k, beta = 4000, 5, 2.5
    rng = np.random.default_rng(0)
    probs = rng.uniform(size=n)
    labels = rng.integers(0, k, n)
    T = np.asarray(sdtheory.smoothing.beta_smoothing(jax.random.PRNGKey(1), probs, labels, k, beta))
    v = T[np.arange(n), labels]
    # Rank matched: the labelled-class value increases with the model's confidence.
    order = np.argsort(probs, kind="stable")
    assert np.all(np.diff(v[order]) >= 0)
    # Other classes share the rest equally; rows are probability vectors.
    others = np.where(np.eye(k, dtype=bool)[labels], np.nan, T)
    np.testing.assert_allclose(np.nanmax(others, 1), (1 - v) / (k - 1), atol=1e-15)
    np.testing.assert_allclose(np.nanmin(others, 1), (1 - v) / (k - 1), atol=1e-15)
    np.testing.assert_allclose(T.sum(1), 1.0, atol=1e-14)
    # The values are a Beta(beta, 1) sample (KS test; false-failure probability 1e-6, fixed key).
    assert stats.kstest(v, stats.beta(beta, 1).cdf).pvalue > 1e-6
    # (N, K) probabilities: the labelled entry is used.
    P = rng.uniform(size=(n, k))
    P[np.arange(n), labels] = probs
    np.testing.assert_array_equal(sdtheory.smoothing.beta_smoothing(jax.random.PRNGKey(1), P, labels, k, beta), T)


def test_beta_smoothing_bad_input():
    key = jax.random.PRNGKey(0)
    with pytest.raises(ValueError, match="beta"):
        sdtheory.smoothing.beta_smoothing(key, np.ones(3) / 2, np.array([0, 1, 2]), 3, 0.0)
    with pytest.raises(ValueError, match=r"\[0, 2\]"):
        sdtheory.smoothing.beta_smoothing(key, np.ones(3) / 2, np.array([0, 1, 3]), 3, 1.0)
    with pytest.raises(ValueError, match="instances"):
        sdtheory.smoothing.beta_smoothing(key, np.ones(4) / 2, np.array([0, 1, 2]), 3, 1.0)
    with pytest.raises(ValueError, match="eps"):
        sdtheory.smoothing.uniform_smoothing(np.eye(3), 1.5)


def _diversity_loop(p):
    out = []
    for row in p:
        top = int(np.argmax(row))
        rest = np.delete(row, top)
        if rest.sum() == 0:
            out.append(0.0)
            continue
        r = rest / rest.sum()
        out.append(-sum(x * np.log(x) for x in r if x > 0))
    return np.array(out)


@given(st.integers(0, 10**6))
def test_predictive_diversity_and_confidence(seed):
    rng = np.random.default_rng(seed)
    P = rng.dirichlet(np.ones(4) * 0.5, size=10)
    P[0] = [1.0, 0.0, 0.0, 0.0]
    P[1] = [0.4, 0.2, 0.2, 0.2]
    np.testing.assert_allclose(sdtheory.smoothing.predictive_diversity(P), _diversity_loop(P), atol=1e-12)
    np.testing.assert_allclose(
        sdtheory.smoothing.predictive_diversity(P, normalize=True), _diversity_loop(P) / np.log(3), atol=1e-12
    )
    assert float(sdtheory.smoothing.predictive_diversity(P)[1]) == pytest.approx(np.log(3))
    np.testing.assert_allclose(sdtheory.smoothing.confidence(P), P.max(1), atol=0)
    with pytest.raises(ValueError, match="negative"):
        sdtheory.smoothing.predictive_diversity(np.array([[1.2, -0.2]]))


# --------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------


@given(st.integers(0, 10**6))
def test_accuracy_and_split_accuracy_match_loops(seed):
    rng = np.random.default_rng(seed)
    true = rng.integers(0, K, 20)
    given_ = np.where(rng.uniform(size=20) < 0.3, rng.integers(0, K, 20), true)
    out = rng.uniform(size=(3, 20, K))
    pred = out.argmax(-1)
    np.testing.assert_allclose(sdtheory.accuracy(out, true), [(p == true).mean() for p in pred], atol=0)
    np.testing.assert_allclose(sdtheory.accuracy(pred, true), [(p == true).mean() for p in pred], atol=0)
    s = sdtheory.split_accuracy(pred, true, given_)
    clean = given_ == true
    for r in range(3):
        ok = pred[r] == true
        nc, nx = clean.sum(), (~clean).sum()
        assert int(s.n_clean) == nc and int(s.n_corrupted) == nx
        assert int(s.clean_correct[r]) == (ok & clean).sum() and int(s.corrupted_correct[r]) == (ok & ~clean).sum()
        assert float(s.clean[r]) == pytest.approx((ok & clean).sum() / nc if nc else np.nan, abs=1e-15, nan_ok=True)
        assert float(s.corrupted[r]) == pytest.approx(
            (ok & ~clean).sum() / nx if nx else np.nan, abs=1e-15, nan_ok=True
        )
        assert float(s.overall[r]) == pytest.approx(ok.mean(), abs=1e-15)
    np.testing.assert_array_equal(sdtheory.split_accuracy(out, true, given_).clean_correct, s.clean_correct)


def test_split_accuracy_empty_group_convention():
    """An empty group has accuracy NaN (not a vacuous 1.0); its count says why."""
    true = np.array([0, 1, 2])
    s = sdtheory.split_accuracy(np.array([0, 1, 0]), true, true)  # no corrupted label
    assert int(s.n_corrupted) == 0 and np.isnan(float(s.corrupted)) and float(s.clean) == pytest.approx(2 / 3)
    assert int(s.corrupted_correct) == 0


def test_metrics_bad_input():
    with pytest.raises(ValueError, match="N = 3"):
        sdtheory.accuracy(np.zeros((4, 2)), np.array([0, 1, 0]))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        sdtheory.accuracy(np.zeros((3, 2)), np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="instances"):
        sdtheory.split_accuracy(np.array([0, 1]), np.array([0, 1]), np.array([0, 1, 1]))


def test_heldout_accuracy_matches_direct_linearised_weights():
    rng = np.random.default_rng(4)
    X, G, y = _problem(4)
    Xt = rng.normal(size=(15, DIM)) / np.sqrt(DIM)
    yt = rng.integers(0, K, 15)
    lam = 1e-2
    Y = np.eye(K)[y]
    P = _sd_direct(G, Y, lam, 4)
    Ts = np.concatenate([Y[None], P[:-1]])
    # Linearised test outputs 1/K + G_test (T_r - P_r) / (K N lam).
    expected = [((1.0 / K + (Xt @ X.T) @ (Ts[r] - P[r]) / (K * N * lam)).argmax(1) == yt).mean() for r in range(4)]
    got = sdtheory.metrics.heldout_accuracy(Y, yt, lam=lam, rounds=np.arange(4), features=X, test_features=Xt)
    np.testing.assert_allclose(got, expected, atol=1e-15)


def test_smoothing_bools_and_strings_are_refused_by_name():
    key = jax.random.PRNGKey(0)
    labels = np.array([0, 1, 2])
    with pytest.raises(TypeError, match="eps"):
        sdtheory.smoothing.uniform_smoothing(np.eye(3), True)  # was eps = 1
    with pytest.raises(TypeError, match="targets"):
        sdtheory.smoothing.uniform_smoothing(np.eye(3, dtype=bool), 0.1)
    with pytest.raises(TypeError, match="beta"):
        sdtheory.smoothing.beta_smoothing(key, np.ones(3) / 2, labels, 3, True)  # was beta = 1
    with pytest.raises(TypeError, match="label_probs"):
        sdtheory.smoothing.beta_smoothing(key, np.array(["a", "b", "c"]), labels, 3, 1.0)  # was a NumPy error
    with pytest.raises(TypeError, match="label_probs"):
        sdtheory.smoothing.beta_smoothing(key, np.array([True, False, True]), labels, 3, 1.0)
    with pytest.raises(TypeError, match="key must be a jax.random key"):
        sdtheory.smoothing.beta_smoothing(0, np.ones(3) / 2, labels, 3, 1.0)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 1\].*num_classes = 2"):
        sdtheory.smoothing.beta_smoothing(key, np.ones(3) / 2, labels, 2, 1.0)
    with pytest.raises(TypeError, match="normalize"):
        sdtheory.smoothing.predictive_diversity(np.eye(3), normalize="no")  # was truthy
    with pytest.raises(ValueError, match="outputs must be a rectangular array"):
        sdtheory.smoothing.confidence([[0.5, 0.5], [1.0]])


# --------------------------------------------------------------------------
# Beta smoothing mixed with the hard labels (Zhang & Sabuncu's alpha)
# --------------------------------------------------------------------------


def _softmax_rows(z):
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def _mixed_objective_fit(x, y_onehot, t_beta, alpha, lam):
    """Minimise ``(1 - alpha) CE(y) + alpha CE(t_beta) + lam/2 |W|^2`` (two CE terms, written out) with SciPy."""
    from scipy.optimize import minimize

    n, d = x.shape
    k = y_onehot.shape[1]

    def f(w):
        w = w.reshape(d, k)
        p = _softmax_rows(x @ w)
        logp = np.log(p)
        ce_y = -np.sum(y_onehot * logp) / n
        ce_b = -np.sum(t_beta * logp) / n
        grad_y = x.T @ (p - y_onehot) / n
        grad_b = x.T @ (p - t_beta) / n
        val = (1 - alpha) * ce_y + alpha * ce_b + lam / 2 * np.sum(w**2)
        return val, ((1 - alpha) * grad_y + alpha * grad_b + lam * w).ravel()

    r = minimize(
        f, np.zeros(d * k), jac=True, method="L-BFGS-B", options={"gtol": 1e-13, "ftol": 1e-16, "maxiter": 50000}
    )
    return _softmax_rows(x @ r.x.reshape(d, k))


def _beta_target_numpy(key, label_probs, labels, k, beta):
    """The rank-matched Beta target from the sorted draws, by NumPy ranking."""
    n = labels.size
    draws = np.sort(np.asarray(jax.random.beta(key, beta, 1.0, (n,), dtype=float)))
    rank = np.argsort(np.argsort(label_probs, kind="stable"), kind="stable")
    v = draws[rank]
    onehot = np.eye(k)[labels]
    return onehot * v[:, None] + (1 - onehot) * ((1 - v) / (k - 1))[:, None]


def _alpha_problem():
    rng = np.random.default_rng(7)
    n, d, k = 30, 3, 3
    means = 1.5 * rng.normal(size=(k, d))
    labels = np.arange(n) % k
    x = means[labels] + rng.normal(size=(n, d))
    labels[:4] = (labels[:4] + 1) % k  # a few wrong labels
    return x, labels, k, 0.05


@pytest.mark.parametrize("alpha", [0.0, 0.6, 1.0])
def test_beta_alpha_student_matches_scipy_on_the_mixed_objective(alpha):
    """The exact student on the mixed target = the minimiser of (1 - a) CE(y) + a CE(t_beta) + lam/2 |W|^2."""
    from sdtheory.smoothing import beta_smoothing_fixed_point_core

    x, labels, k, lam = _alpha_problem()
    y = np.eye(k)[labels]
    key, beta = jax.random.key(5), 3.0
    # independent teacher (alpha plays no part) and its ranking
    teacher = _mixed_objective_fit(x, y, y, 0.0, lam)
    t_beta = _beta_target_numpy(key, teacher[np.arange(labels.size), labels], labels, k, beta)
    expected = _mixed_objective_fit(x, y, t_beta, alpha, lam)

    def fit(t):
        return sdtheory.exact_outputs(np.asarray(t), lam=lam, num_rounds=1, features=x).outputs[0]

    # the study's path: one refit from the teacher with the mixed target
    res = beta_smoothing_fixed_point_core(
        fit, jax.numpy.asarray(teacher), key, jax.numpy.asarray(labels), k, beta, 1, alpha=alpha
    )
    np.testing.assert_allclose(res.outputs, expected, atol=1e-6)
    # the public function: the same target, and the same student
    t = np.asarray(sdtheory.smoothing.beta_smoothing(key, teacher, labels, k, beta, alpha))
    np.testing.assert_allclose(t, (1 - alpha) * y + alpha * t_beta, atol=1e-15)
    np.testing.assert_allclose(fit(t), expected, atol=1e-6)


def test_beta_alpha_one_is_the_beta_target_and_alpha_zero_the_hard_labels():
    rng = np.random.default_rng(2)
    n, k = 50, 4
    probs, labels = rng.uniform(size=n), rng.integers(0, k, n)
    key = jax.random.key(3)
    before = np.asarray(sdtheory.smoothing.beta_smoothing(key, probs, labels, k, 2.0))  # default: the Beta target alone
    np.testing.assert_array_equal(
        np.asarray(sdtheory.smoothing.beta_smoothing(key, probs, labels, k, 2.0, 1.0)), before
    )
    np.testing.assert_allclose(before, _beta_target_numpy(key, probs, labels, k, 2.0), atol=1e-15)
    np.testing.assert_array_equal(
        np.asarray(sdtheory.smoothing.beta_smoothing(key, probs, labels, k, 2.0, 0.0)), np.eye(k)[labels]
    )


@pytest.mark.parametrize(
    "alpha,exc", [(-0.1, ValueError), (1.5, ValueError), (np.nan, ValueError), ("0.6", TypeError), (True, TypeError)]
)
def test_beta_alpha_bad_values_are_refused_by_name(alpha, exc):
    from sdtheory.smoothing import beta_smoothing_fixed_point_core

    key, labels = jax.random.key(0), np.array([0, 1, 2])
    with pytest.raises(exc, match="alpha"):
        sdtheory.smoothing.beta_smoothing(key, np.ones(3) / 2, labels, 3, 1.0, alpha)
    with pytest.raises(exc, match="alpha"):
        beta_smoothing_fixed_point_core(lambda t: t, np.eye(3), key, labels, 3, 1.0, 1, alpha=alpha)
