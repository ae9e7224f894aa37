"""The closed form of multi-round SD against independent computations.

Independent paths used here: the linearised fixed point of every round solved
with a direct dense linear solve (no eigendecomposition), NumPy's own
Gram/eigh, and explicit permutations.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import sdtheory as sd


def linearised_rounds_direct(gram, targets, lam, num_rounds):
    """Solve P = 1/K + G (T - P) / (K N lam) round by round with np.linalg.solve."""
    n, k = targets.shape
    ridge = k * n * lam
    a = np.eye(n) + gram / ridge
    t = np.asarray(targets, dtype=float)
    outs = []
    for _ in range(num_rounds):
        p = np.linalg.solve(a, 1.0 / k + gram @ t / ridge)
        outs.append(p)
        t = p
    return np.stack(outs)


def random_problem(seed, n, d, k):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)) / np.sqrt(d)
    y = np.eye(k)[rng.integers(0, k, n)]
    return x, y


@given(
    seed=st.integers(0, 2**31 - 1),
    n=st.integers(3, 25),
    d=st.integers(1, 30),
    k=st.integers(2, 6),
    log_lam=st.floats(-4, 1),
)
def test_closed_form_equals_direct_fixed_point(seed, n, d, k, log_lam):
    x, y = random_problem(seed, n, d, k)
    lam = 10.0**log_lam
    gram = x @ x.T
    direct = linearised_rounds_direct(gram, y, lam, 6)
    rounds = np.arange(6)
    via_gram = np.asarray(sd.sd_outputs(y, lam=lam, rounds=rounds, gram=gram))
    via_feat = np.asarray(sd.sd_outputs(y, lam=lam, rounds=rounds, features=x))
    scale = max(1.0, np.abs(direct).max())
    np.testing.assert_allclose(via_gram, direct, atol=1e-9 * scale, rtol=0)
    np.testing.assert_allclose(via_feat, direct, atol=1e-9 * scale, rtol=0)
    # rows are probability vectors in the sense of summing to one
    np.testing.assert_allclose(via_gram.sum(-1), 1.0, atol=1e-12)


def test_soft_targets_and_round_subsets():
    x, _ = random_problem(1, 12, 4, 3)
    rng = np.random.default_rng(2)
    t = rng.dirichlet(np.ones(3), size=12)
    direct = linearised_rounds_direct(x @ x.T, t, 0.05, 8)
    out = np.asarray(sd.sd_outputs(t, lam=0.05, rounds=[7, 0, 3], features=x))
    np.testing.assert_allclose(out, direct[[7, 0, 3]], atol=1e-12)
    scalar = np.asarray(sd.sd_outputs(t, lam=0.05, rounds=2, features=x))
    assert scalar.shape == (1, 12, 3)
    np.testing.assert_allclose(scalar[0], direct[2], atol=1e-12)


@pytest.mark.parametrize("n,d", [(20, 5), (8, 40), (15, 15)])
def test_feature_path_equals_gram_path_including_rank_deficient(n, d):
    rng = np.random.default_rng(n * d)
    x = rng.normal(size=(n, d))
    x[:, -1] = x[:, 0]  # rank deficient: a repeated feature
    x[3] = x[1]  # and a repeated instance
    y = np.eye(3)[rng.integers(0, 3, n)]
    a = sd.sd_outputs(y, lam=0.01, rounds=np.arange(5), features=x)
    b = sd.sd_outputs(y, lam=0.01, rounds=np.arange(5), gram=x @ x.T)
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-10)


@pytest.mark.parametrize("method", ["auto", "svd"])
@pytest.mark.parametrize("n,d", [(30, 7), (7, 30)])
def test_feature_spectrum_matches_numpy_eigh(method, n, d):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(n, d))
    spec = sd.feature_spectrum(x, method=method)
    m = min(n, d)
    assert spec.eigvecs.shape == (n, m)
    ref = np.sort(np.linalg.eigvalsh(x @ x.T))[-m:]
    np.testing.assert_allclose(np.sort(np.asarray(spec.eigvals)), ref, rtol=1e-10)
    # eigenvectors: G u = s u and U^T U = I, checked against a Gram formed here
    g = x @ x.T
    u, s = np.asarray(spec.eigvecs), np.asarray(spec.eigvals)
    np.testing.assert_allclose(g @ u, u * s, atol=1e-9)
    np.testing.assert_allclose(u.T @ u, np.eye(m), atol=1e-10)


def test_feature_spectrum_methods_agree_on_rank_deficient_features():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(25, 3)) @ rng.normal(size=(3, 9))  # rank 3, d = 9
    y = np.eye(3)[rng.integers(0, 3, 25)]
    direct = linearised_rounds_direct(x @ x.T, y, 1e-3, 4)
    for method in ("auto", "svd"):
        spec = sd.feature_spectrum(x, method=method)
        got = np.asarray(sd.closed_form.sd_outputs_core(spec, jnp.asarray(y), 1e-3, jnp.arange(4)))
        np.testing.assert_allclose(got, direct, atol=1e-9)
    with pytest.raises(ValueError, match="method"):
        sd.feature_spectrum(x, method="qr")


def test_permuting_instances_permutes_outputs():
    x, y = random_problem(4, 18, 6, 4)
    perm = np.random.default_rng(5).permutation(18)
    base = np.asarray(sd.sd_outputs(y, lam=0.02, rounds=[0, 2, 5], features=x))
    permuted = np.asarray(sd.sd_outputs(y[perm], lam=0.02, rounds=[0, 2, 5], features=x[perm]))
    np.testing.assert_allclose(permuted, base[:, perm], atol=1e-12)


def test_relabelling_classes_permutes_columns():
    x, y = random_problem(6, 18, 6, 4)
    sigma = np.array([2, 0, 3, 1])
    base = np.asarray(sd.sd_outputs(y, lam=0.02, rounds=[0, 4], features=x))
    relab = np.asarray(sd.sd_outputs(y[:, sigma], lam=0.02, rounds=[0, 4], features=x))
    np.testing.assert_allclose(relab, base[:, :, sigma], atol=1e-12)


def test_memory_light_predictions_equal_argmax_of_outputs():
    x, y = random_problem(12, 40, 8, 5)
    spec = sd.feature_spectrum(x)
    rounds = jnp.arange(7)
    direct = linearised_rounds_direct(x @ x.T, y, 0.01, 7)
    preds = np.asarray(sd.closed_form.sd_predictions_core(spec, jnp.asarray(y), 0.01, rounds))
    np.testing.assert_array_equal(preds, direct.argmax(-1))


def test_vmap_over_lam_equals_separate_calls():
    x, y = random_problem(7, 15, 4, 3)
    lams = jnp.array([1e-3, 1e-2, 0.3])
    batched = jax.vmap(lambda lam: sd.sd_outputs(y, lam=lam, rounds=[0, 3], features=x))(lams)
    for i, lam in enumerate(np.asarray(lams)):
        np.testing.assert_allclose(
            np.asarray(batched[i]), linearised_rounds_direct(x @ x.T, y, float(lam), 4)[[0, 3]], atol=1e-11
        )


def test_test_point_outputs_match_explicit_weights():
    rng = np.random.default_rng(8)
    x = rng.normal(size=(14, 5))
    xt = rng.normal(size=(6, 5))
    y = np.eye(3)[rng.integers(0, 3, 14)]
    lam, n, k = 0.03, 14, 3
    train = linearised_rounds_direct(x @ x.T, y, lam, 4)
    targets = [y] + [train[r - 1] for r in range(1, 4)]
    expected = []
    for r in range(4):
        w = (targets[r] - train[r]).T @ x / (n * lam)  # (K, d): stationarity of the objective
        z = xt @ w.T
        expected.append(1.0 / k + (z - z.mean(1, keepdims=True)) / k)
    expected = np.stack(expected)
    via_feat = np.asarray(sd.sd_test_outputs(y, lam=lam, rounds=np.arange(4), features=x, test_features=xt))
    via_gram = np.asarray(sd.sd_test_outputs(y, lam=lam, rounds=np.arange(4), gram=x @ x.T, test_gram=xt @ x.T))
    np.testing.assert_allclose(via_feat, expected, atol=1e-10)
    np.testing.assert_allclose(via_gram, expected, atol=1e-10)
    # a training point used as a "test" point reproduces the training output
    self_pred = np.asarray(sd.sd_test_outputs(y, lam=lam, rounds=np.arange(4), features=x, test_features=x))
    np.testing.assert_allclose(self_pred, train, atol=1e-10)


def test_mixed_targets_extremes():
    x, y = random_problem(9, 12, 4, 3)
    rounds = np.arange(5)
    plain = np.asarray(sd.sd_outputs(y, lam=0.05, rounds=rounds, features=x))
    np.testing.assert_allclose(np.asarray(sd.sd_mixed_outputs(y, lam=0.05, rounds=rounds, xi=1.0, features=x)), plain, atol=1e-12)
    refit = np.asarray(sd.sd_mixed_outputs(y, lam=0.05, rounds=rounds, xi=0.0, features=x))
    np.testing.assert_allclose(refit, np.broadcast_to(plain[0], refit.shape), atol=1e-12)


def test_kernel_ridge_sd_matches_repeated_ridge_solves():
    rng = np.random.default_rng(10)
    x = rng.normal(size=(16, 6))
    y = rng.normal(size=16)
    lam, n = 0.02, 16
    g = x @ x.T
    f, expected = y, []
    for _ in range(4):
        # ridge regression on the current targets: W = argmin (1/N)||Xw - f||^2/2 + lam/2||w||^2
        w = np.linalg.solve(x.T @ x / n + lam * np.eye(6), x.T @ f / n)
        f = x @ w
        expected.append(f)
    out = np.asarray(sd.kernel_ridge_sd(y, lam=lam, rounds=np.arange(4), gram=g))
    np.testing.assert_allclose(out, np.stack(expected), atol=1e-10)


# ----------------------------------------------------------------- bad input


@pytest.fixture
def small():
    x, y = random_problem(11, 6, 3, 3)
    return x, y


@pytest.mark.parametrize("lam", [0.0, -1.0, np.nan, np.inf])
def test_rejects_bad_lam(small, lam):
    x, y = small
    with pytest.raises(ValueError, match="lam"):
        sd.sd_outputs(y, lam=lam, rounds=1, features=x)


@pytest.mark.parametrize("rounds,exc", [(-1, ValueError), ([0, -2], ValueError), (1.5, TypeError), ([], ValueError), (True, TypeError)])
def test_rejects_bad_rounds(small, rounds, exc):
    x, y = small
    with pytest.raises(exc, match="rounds"):
        sd.sd_outputs(y, lam=0.1, rounds=rounds, features=x)


def test_rejects_bad_targets(small):
    x, y = small
    with pytest.raises(ValueError, match="sum to 1"):
        sd.sd_outputs(y * 0.5, lam=0.1, rounds=1, features=x)
    neg = y.copy()
    neg[0] = [1.5, -0.5, 0.0]
    with pytest.raises(ValueError, match="negative"):
        sd.sd_outputs(neg, lam=0.1, rounds=1, features=x)
    with pytest.raises(ValueError, match="K >= 2"):
        sd.sd_outputs(np.ones((6, 1)), lam=0.1, rounds=1, features=x)
    nan = y.copy()
    nan[1, 1] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        sd.sd_outputs(nan, lam=0.1, rounds=1, features=x)
    with pytest.raises(ValueError, match="2-D"):
        sd.sd_outputs(y[:, 0], lam=0.1, rounds=1, features=x)


def test_rejects_bad_matrices(small):
    x, y = small
    with pytest.raises(ValueError, match="exactly one"):
        sd.sd_outputs(y, lam=0.1, rounds=1)
    with pytest.raises(ValueError, match="exactly one"):
        sd.sd_outputs(y, lam=0.1, rounds=1, features=x, gram=x @ x.T)
    with pytest.raises(ValueError, match="instances"):
        sd.sd_outputs(y, lam=0.1, rounds=1, features=x[:5])
    with pytest.raises(ValueError, match="instances"):
        sd.sd_outputs(y, lam=0.1, rounds=1, gram=np.eye(7))
    g = x @ x.T
    asym = g.copy()
    asym[0, 1] += 0.5
    with pytest.raises(ValueError, match="symmetric"):
        sd.sd_outputs(y, lam=0.1, rounds=1, gram=asym)
    with pytest.raises(ValueError, match="positive semi-definite"):
        sd.sd_outputs(y, lam=0.1, rounds=1, gram=g - 5 * np.eye(6))
    with pytest.raises(ValueError, match="square"):
        sd.sd_outputs(y, lam=0.1, rounds=1, gram=np.ones((6, 5)))
    bad = x.copy()
    bad[2, 1] = np.inf
    with pytest.raises(ValueError, match="non-finite"):
        sd.sd_outputs(y, lam=0.1, rounds=1, features=bad)
    with pytest.raises(ValueError, match="xi"):
        sd.sd_mixed_outputs(y, lam=0.1, rounds=1, xi=1.5, features=x)
    with pytest.raises(ValueError, match="test_features"):
        sd.sd_test_outputs(y, lam=0.1, rounds=1, features=x, test_features=np.ones((2, 4)))


@pytest.mark.parametrize("n,d", [(20, 4), (6, 12)])
def test_apply_spectral_general_function_including_null_space(n, d):
    # f(G) = (G + I)^{-1} has f(0) = 1: the null space of G (d < N) must be kept.
    rng = np.random.default_rng(13)
    x = rng.normal(size=(n, d))
    y = rng.normal(size=(n, 3))
    spec = sd.feature_spectrum(x)
    got = np.asarray(sd.apply_spectral(spec, lambda s: 1.0 / (s + 1.0), jnp.asarray(y)))
    np.testing.assert_allclose(got, np.linalg.solve(x @ x.T + np.eye(n), y), atol=1e-10)
    # a batch of functions at once, and a vector right-hand side
    both = np.asarray(sd.apply_spectral(spec, lambda s: jnp.stack([1.0 / (s + 1.0), s]), jnp.asarray(y[:, 0])))
    np.testing.assert_allclose(both[1], x @ (x.T @ y[:, 0]), atol=1e-10)
