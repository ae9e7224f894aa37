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
    # grids of lam go through the kernel (the validating public function refuses tracers)
    x, y = random_problem(7, 15, 4, 3)
    lams = jnp.array([1e-3, 1e-2, 0.3])
    spec = sd.feature_spectrum(x)
    with jax.enable_x64(True):
        batched = jax.vmap(lambda lam: sd.closed_form.sd_outputs_core(spec, jnp.asarray(y), lam, jnp.asarray([0, 3])))(
            lams
        )
    for i, lam in enumerate(np.asarray(lams)):
        np.testing.assert_allclose(
            np.asarray(batched[i]), linearised_rounds_direct(x @ x.T, y, float(lam), 4)[[0, 3]], atol=1e-11
        )
        np.testing.assert_allclose(
            np.asarray(batched[i]), sd.sd_outputs(y, lam=float(lam), rounds=[0, 3], features=x), atol=1e-13
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
    via_feat = np.asarray(sd.closed_form.sd_test_outputs(y, lam=lam, rounds=np.arange(4), features=x, test_features=xt))
    via_gram = np.asarray(
        sd.closed_form.sd_test_outputs(y, lam=lam, rounds=np.arange(4), gram=x @ x.T, test_gram=xt @ x.T)
    )
    np.testing.assert_allclose(via_feat, expected, atol=1e-10)
    np.testing.assert_allclose(via_gram, expected, atol=1e-10)
    # a training point used as a "test" point reproduces the training output
    self_pred = np.asarray(sd.closed_form.sd_test_outputs(y, lam=lam, rounds=np.arange(4), features=x, test_features=x))
    np.testing.assert_allclose(self_pred, train, atol=1e-10)


def test_mixed_targets_extremes():
    x, y = random_problem(9, 12, 4, 3)
    rounds = np.arange(5)
    plain = np.asarray(sd.sd_outputs(y, lam=0.05, rounds=rounds, features=x))
    np.testing.assert_allclose(
        np.asarray(sd.sd_outputs(y, lam=0.05, rounds=rounds, xi=1.0, features=x)), plain, atol=1e-12
    )
    refit = np.asarray(sd.sd_outputs(y, lam=0.05, rounds=rounds, xi=0.0, features=x))
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
    out = np.asarray(sd.closed_form.kernel_ridge_sd(y, lam=lam, rounds=np.arange(4), gram=g))
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


@pytest.mark.parametrize(
    "rounds,exc", [(-1, ValueError), ([0, -2], ValueError), (1.5, TypeError), ([], ValueError), (True, TypeError)]
)
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
        sd.sd_outputs(y, lam=0.1, rounds=1, xi=1.5, features=x)
    with pytest.raises(ValueError, match="test_features"):
        sd.closed_form.sd_test_outputs(y, lam=0.1, rounds=1, features=x, test_features=np.ones((2, 4)))


@pytest.mark.parametrize("n,d", [(20, 4), (6, 12)])
def test_apply_spectral_general_function_including_null_space(n, d):
    # f(G) = (G + I)^{-1} has f(0) = 1: the null space of G (d < N) must be kept.
    rng = np.random.default_rng(13)
    x = rng.normal(size=(n, d))
    y = rng.normal(size=(n, 3))
    spec = sd.feature_spectrum(x)
    got = np.asarray(sd.spectral.apply_spectral(spec, lambda s: 1.0 / (s + 1.0), jnp.asarray(y)))
    np.testing.assert_allclose(got, np.linalg.solve(x @ x.T + np.eye(n), y), atol=1e-10)
    # a batch of functions at once, and a vector right-hand side
    both = np.asarray(sd.spectral.apply_spectral(spec, lambda s: jnp.stack([1.0 / (s + 1.0), s]), jnp.asarray(y[:, 0])))
    np.testing.assert_allclose(both[1], x @ (x.T @ y[:, 0]), atol=1e-10)


# ----------------------------------------------------------------- issue 12: the numeric validation layer


T2 = np.array([[1.0, 0.0], [0.3, 0.7]])
G2 = np.array([[1.0, 0.5], [0.5, 1.0]])


@pytest.mark.parametrize("lam", [np.array([1e-2, 1e-1]), np.array([1e-2, 1e-1, 1.0]), [0.1], np.ones((1, 1))])
def test_lam_array_is_rejected_not_broadcast(lam):
    # an array of lam with as many entries as eigenvalues used to broadcast against them silently
    with pytest.raises(ValueError, match="lam must be a scalar.*vmap"):
        sd.sd_outputs(T2, lam=lam, rounds=[0], gram=G2)
    with pytest.raises(ValueError, match="lam must be a scalar"):
        sd.closed_form.kernel_ridge_sd(T2, lam=lam, rounds=[0], gram=G2)
    with pytest.raises(ValueError, match="lam must be a scalar"):
        sd.closed_form.sd_test_outputs(T2, lam=lam, rounds=[0], gram=G2, test_gram=G2)
    with pytest.raises(ValueError, match="lam must be a scalar"):
        sd.predictor(T2, lam=lam, gram=G2)
    # a 0-d array is one number and works
    np.testing.assert_allclose(
        sd.sd_outputs(T2, lam=np.array(0.1), rounds=[0], gram=G2), linearised_rounds_direct(G2, T2, 0.1, 1), atol=1e-14
    )


@pytest.mark.parametrize("xi", [np.array([0.1, 0.2]), [0.5], True, "0.5"])
def test_xi_must_be_one_number(xi):
    with pytest.raises((ValueError, TypeError), match="xi"):
        sd.sd_outputs(T2, lam=0.1, xi=xi, rounds=[0], gram=G2)


@pytest.mark.parametrize("lam", [True, False, np.bool_(True), "0.1", 1j])
def test_lam_bool_string_complex_rejected(lam):
    with pytest.raises(TypeError, match="lam"):
        sd.sd_outputs(T2, lam=lam, rounds=[0], gram=G2)


@pytest.mark.parametrize(
    "rounds", [2**31, [0, 2**63], 2**63, [2**70], np.array([2**63], dtype=np.uint64), np.array([2**31], dtype=np.int64)]
)
def test_huge_round_indices_are_rejected_not_wrapped(rounds):
    # 2**63 used to wrap to a negative int64 and give inf/NaN outputs
    with pytest.raises(ValueError, match=r"rounds must be <= 2147483647 \(the closed form evaluates q\*\*\(r \+ 1\)"):
        sd.sd_outputs(T2, lam=0.1, rounds=rounds, gram=G2)


def test_largest_round_index_is_accepted_and_correct():
    r = 2**31 - 1
    out = sd.sd_outputs(T2, lam=1e-3, rounds=[r], gram=G2)
    # independent: q^(r+1) in the eigenbasis by NumPy (the S matrix power would take 2^31 products)
    s, u = np.linalg.eigh(G2)
    q = s / (s + 2 * 2 * 1e-3)
    want = 0.5 + u @ np.diag(q ** (r + 1.0)) @ u.T @ (T2 - 0.5)
    np.testing.assert_allclose(out[0], want, atol=1e-12)


@pytest.mark.parametrize("num_rounds", [10**5 + 1, 2**31, 2**64])
def test_huge_num_rounds_rejected(num_rounds):
    with pytest.raises(ValueError, match=r"num_rounds must be <= 100000 \(a count materialises"):
        sd.sd_outputs(T2, lam=0.1, num_rounds=num_rounds, gram=G2)


@pytest.mark.parametrize(
    "rounds",
    [
        [0, True],
        [np.bool_(False)],
        np.array([0, 1], dtype=bool),
        [0, 1.0],
        [[0], [1]],
        [[0, 1]],
        "0",
        np.array([0.0, 1.0]),
    ],
)
def test_bool_float_nested_round_elements_rejected(rounds):
    with pytest.raises((TypeError, ValueError), match="rounds"):
        sd.sd_outputs(T2, lam=0.1, rounds=rounds, gram=G2)


def test_rounds_accept_ints_of_any_integer_type():
    want = linearised_rounds_direct(G2, T2, 0.1, 4)[[0, 3]]
    for rounds in (
        [0, 3],
        (0, 3),
        np.array([0, 3], dtype=np.uint8),
        [np.int32(0), np.uint64(3)],
        range(0, 4, 3),
        jnp.asarray([0, 3]),
    ):
        np.testing.assert_allclose(sd.sd_outputs(T2, lam=0.1, rounds=rounds, gram=G2), want, atol=1e-14)
    np.testing.assert_allclose(sd.sd_outputs(T2, lam=0.1, rounds=np.int64(3), gram=G2)[0], want[1], atol=1e-14)


@pytest.mark.parametrize("scale", [1e308 / 2, 1e200, 1e-160, 1e-300, 1e-310])
def test_gram_of_any_scale_gives_the_outputs_of_g_over_lam(scale):
    # the closed form depends on G / lam only: computed at unit scale, no overflow (G G^T, symmetrisation) or underflow
    rng = np.random.default_rng(3)
    x = rng.normal(size=(6, 3))
    g = x @ x.T
    g = g / np.abs(g).max()
    t = np.eye(3)[rng.integers(0, 3, 6)]
    want = linearised_rounds_direct(g, t, 1e-2, 4)  # NumPy solve at scale 1
    lam = 1e-2 * scale
    got = sd.sd_outputs(t, lam=lam, num_rounds=4, gram=g * scale)
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, want, atol=1e-9)
    mixed = sd.sd_outputs(t, lam=lam, xi=0.5, num_rounds=4, gram=g * scale)
    np.testing.assert_allclose(mixed, sd.sd_outputs(t, lam=1e-2, xi=0.5, num_rounds=4, gram=g), atol=1e-9)
    krr = sd.closed_form.kernel_ridge_sd(t, lam=lam, num_rounds=2, gram=g * scale)
    np.testing.assert_allclose(krr, sd.closed_form.kernel_ridge_sd(t, lam=1e-2, num_rounds=2, gram=g), atol=1e-9)


def test_fuzz_example_huge_gram_and_lam():
    got = sd.sd_outputs(T2, lam=1e304, rounds=[0], gram=G2 * 1e308)
    # G / lam = 1e4 G2: lam 1e-4 at scale 1 (NumPy solve)
    np.testing.assert_allclose(got[0], linearised_rounds_direct(G2, T2, 1e-4, 1)[0], atol=1e-12)


@pytest.mark.parametrize("exponent", [500, 300, -300, -530])
def test_features_of_any_scale_give_the_outputs_of_g_over_lam(exponent):
    # features 2^e and lam 2^(2e) lam0 pose the problem of (features, lam0): same outputs (G / lam only). At 2^500 the
    # entries of X^T X overflow, at 2^-530 they underflow (and XLA on CPU flushes subnormals to zero)
    rng = np.random.default_rng(4)
    x = rng.normal(size=(12, 3))
    xt = rng.normal(size=(4, 3))
    t = np.eye(3)[rng.integers(0, 3, 12)]
    lam0 = 2.0**-8
    scale, lam = np.ldexp(1.0, exponent), np.ldexp(lam0, 2 * exponent)
    for feats in (x, np.concatenate([x, x], 1), x[:2]):  # the d < N route (X^T X) and the d >= N route (X X^T)
        tt = t[: feats.shape[0]]
        want = linearised_rounds_direct(feats @ feats.T, tt, lam0, 3)  # NumPy solve at scale 1
        got = sd.sd_outputs(tt, lam=lam, num_rounds=3, features=feats * scale)
        np.testing.assert_allclose(got, want, atol=1e-10)
    # test points scale with the training features (and through the Gram route with the Gram)
    test_want = sd.closed_form.sd_test_outputs(t, lam=lam0, num_rounds=3, features=x, test_features=xt)
    test_got = sd.closed_form.sd_test_outputs(t, lam=lam, num_rounds=3, features=x * scale, test_features=xt * scale)
    np.testing.assert_allclose(test_got, test_want, atol=1e-10)
    if abs(exponent) < 500:  # the Gram itself is representable
        via_gram = sd.closed_form.sd_test_outputs(
            t, lam=lam, num_rounds=3, gram=(x * scale) @ (x * scale).T, test_gram=(xt * scale) @ (x * scale).T
        )
        np.testing.assert_allclose(via_gram, test_want, atol=1e-10)


def test_fuzz_example_huge_features():
    # X = 1e160 I: G = 1e320 I overflows (used to give NaN). With lam = 1e300, G / lam = 1e20 I:
    # s / (s + K N lam) = 1 / (1 + 4e-20) = 1 in float64, so every round returns the targets
    x = np.eye(2) * 1e160
    got = sd.sd_outputs(T2, lam=1e300, rounds=[0, 5], features=x)
    np.testing.assert_allclose(got, np.stack([T2, T2]), atol=1e-15)
    p = sd.predictor(T2, lam=1e300, features=x)
    # a test point x_1 + x_2 / 2: 1/K + G_test (T_0 - P_0) / (K N lam) with G_test / (K N lam) = [1, 1/2] 1e20 / 4
    # and T_0 - P_0 = (T - 1/K) K N lam / (s + K N lam) = 4e-20 (T - 1/K) (to a relative 4e-20)
    xt = np.array([[1.0, 0.5]]) * 1e160
    want = 0.5 + np.array([[1.0, 0.5]]) @ (T2 - 0.5)
    np.testing.assert_allclose(p.test_outputs(rounds=[0], test_features=xt)[0], want, atol=1e-15)
    with pytest.raises(ValueError, match="overflow"):
        p.spectrum  # noqa: B018  (the eigenvalues themselves are not representable)
    # lam = 1e-2: lam / max|G| = 1e-322 is not a normal number: a clear error naming lam (used to be NaN)
    with pytest.raises(ValueError, match="lam = 0.01 is out of range for this features.*lam is 0 in effect"):
        sd.sd_outputs(T2, lam=1e-2, rounds=[0], features=x)


def test_spectrum_functions_raise_when_eigenvalues_are_not_representable():
    # feature_spectrum used to return zeros (the Gram overflowed)
    with pytest.raises(ValueError, match="features is too large.*overflow"):
        sd.feature_spectrum(np.eye(2) * 1e160)
    with pytest.raises(ValueError, match="features is too small.*underflow"):
        sd.feature_spectrum(np.eye(2) * 1e-170)
    # representable: the eigenvalues themselves, against NumPy at scale 1
    s = sd.gram_spectrum(G2 * 1e308 / 2).eigvals
    np.testing.assert_allclose(np.sort(s) / (1e308 / 2), np.linalg.eigvalsh(G2), rtol=1e-14)
    s = sd.feature_spectrum(np.diag([3.0, 4.0]) * 1e150).eigvals
    np.testing.assert_allclose(np.sort(s), [9e300, 16e300], rtol=1e-14)


def test_lam_out_of_range_for_the_scale_is_rejected():
    # lam / max|G| not representable: a clear error naming lam instead of NaN
    with pytest.raises(ValueError, match="lam = .* out of range"):
        sd.sd_outputs(T2, lam=1e-300, rounds=[0], gram=G2 * 1e300)
    with pytest.raises(ValueError, match="lam = .* out of range"):
        sd.sd_outputs(T2, lam=1e300, rounds=[0], gram=G2 * 1e-300)


def test_symmetry_and_psd_tolerances_are_relative():
    # an eigenvalue -1e-10 next to 3e-10 used to be clipped (absolute floor of 1 in the tolerance)
    with pytest.raises(ValueError, match="positive semi-definite: smallest eigenvalue -1e-10"):
        sd.gram_spectrum(1e-10 * np.array([[1.0, 2.0], [2.0, 1.0]]))
    with pytest.raises(ValueError, match="positive semi-definite"):
        sd.sd_outputs(T2, lam=1e-12, rounds=[0], gram=1e-10 * np.array([[1.0, 2.0], [2.0, 1.0]]))
    # a 1e-300-scale non-symmetric Gram used to pass
    with pytest.raises(ValueError, match="not symmetric"):
        sd.gram_spectrum(1e-300 * np.array([[1.0, 2.0], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="not symmetric"):
        sd.sd_outputs(T2, lam=1e-302, rounds=[0], gram=1e-300 * np.array([[1.0, 2.0], [0.0, 1.0]]))
    # roundoff-level asymmetry and negative eigenvalues stay accepted at any scale
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 3))
    for scale in (1e-300, 1.0, 1e300):
        g = (x * np.sqrt(scale)) @ (x * np.sqrt(scale)).T
        g[0, 1] *= 1 + 1e-12
        s = sd.gram_spectrum(g).eigvals
        np.testing.assert_allclose(np.sort(s)[-3:] / scale, np.linalg.eigvalsh(x @ x.T)[-3:], rtol=1e-9)


@pytest.mark.parametrize(
    "bad,exc,match",
    [
        ([[0.2, np.nan, 0.1]], ValueError, "non-finite"),
        ([[0.2, np.inf, 0.1]], ValueError, "non-finite"),
        ("abc", TypeError, "outputs must be a numeric array"),
        (1.0, ValueError, "class axis"),
        ([[0.2, 0.5], [0.1]], ValueError, "rectangular"),
        ([[True, False]], TypeError, "bool"),
        (np.zeros((2, 0)), ValueError, "class axis"),
    ],
)
def test_predictions_rejects_bad_outputs(bad, exc, match):
    with pytest.raises(exc, match=match):
        sd.predictions(bad)


def test_predictions_valid_input():
    np.testing.assert_array_equal(
        sd.predictions([[0.2, 0.5, 0.1], [0.4, 0.4, 0.2]]), np.argmax([[0.2, 0.5, 0.1], [0.4, 0.4, 0.2]], -1)
    )


def test_ragged_bool_and_string_matrices_rejected_clearly():
    with pytest.raises(ValueError, match="targets must be a rectangular array"):
        sd.sd_outputs([[1, 0], [1]], lam=0.1, rounds=[0], gram=G2)
    with pytest.raises(ValueError, match="gram must be a rectangular array"):
        sd.sd_outputs(T2, lam=0.1, rounds=[0], gram=[[1, 0], [1]])
    with pytest.raises(ValueError, match="features must be a rectangular array"):
        sd.sd_outputs(T2, lam=0.1, rounds=[0], features=[[1, 0], [1]])
    with pytest.raises(TypeError, match="gram must be real numbers, got a bool array"):
        sd.sd_outputs(T2, lam=0.1, rounds=[0], gram=[[True, False], [False, True]])
    with pytest.raises(TypeError, match="features must be real numbers, got a bool array"):
        sd.sd_outputs(T2, lam=0.1, rounds=[0], features=np.eye(2, dtype=bool))
    with pytest.raises(TypeError, match="targets must be real numbers, got a bool array"):
        sd.sd_outputs(np.eye(2, dtype=bool), lam=0.1, rounds=[0], gram=G2)
    with pytest.raises(TypeError, match="gram must be a numeric array, got the string"):
        sd.sd_outputs(T2, lam=0.1, rounds=[0], gram="eye")
    with pytest.raises(ValueError, match="test_gram must be a rectangular array"):
        sd.closed_form.sd_test_outputs(T2, lam=0.1, rounds=[0], gram=G2, test_gram=[[1, 0], [1]])


def test_one_dimensional_features_in_sd_test_outputs():
    x = np.array([[1.0, 0.2], [0.3, 1.0]])
    with pytest.raises(ValueError, match="test_features must be a 2-D"):
        sd.closed_form.sd_test_outputs(T2, lam=0.1, rounds=[0], features=x, test_features=np.ones(2))
    with pytest.raises(ValueError, match="test_features must be a 2-D"):
        sd.closed_form.sd_test_outputs(T2, lam=0.1, rounds=[0], features=x, test_features=1.0)
    with pytest.raises(ValueError, match="features must be a 2-D"):
        sd.closed_form.sd_test_outputs(T2, lam=0.1, rounds=[0], features=np.ones(2), test_features=np.ones((1, 2)))
    with pytest.raises(ValueError, match="test_gram must be"):
        sd.closed_form.sd_test_outputs(T2, lam=0.1, rounds=[0], gram=G2, test_gram=np.ones(2))


def test_traced_inputs_are_refused_with_the_kernel_to_use():
    # under vmap a negative lam used to return garbage (the value checks were skipped)
    with pytest.raises(
        TypeError,
        match=r"lam is a traced value .*sdtheory.sd_outputs .*"
        r"sdtheory.closed_form.sd_outputs_core",
    ):
        jax.vmap(lambda lam: sd.sd_outputs(T2, lam=lam, rounds=[0], gram=G2))(jnp.array([-1.0, 0.1]))
    with pytest.raises(TypeError, match="gram is a traced value"):
        jax.vmap(lambda g: sd.sd_outputs(T2, lam=0.1, rounds=[0], gram=g))(jnp.stack([G2, G2]))
    with pytest.raises(TypeError, match="targets is a traced value"):
        jax.jit(lambda t: sd.sd_outputs(t, lam=0.1, rounds=[0], gram=G2))(T2)
    with pytest.raises(TypeError, match="xi is a traced value"):
        jax.vmap(lambda xi: sd.sd_outputs(T2, lam=0.1, xi=xi, rounds=[0], gram=G2))(jnp.array([0.1, 0.2]))
    with pytest.raises(TypeError, match="gram is a traced value.*eigh"):
        jax.jit(sd.gram_spectrum)(G2)
    with pytest.raises(TypeError, match="outputs is a traced value"):
        jax.jit(sd.predictions)(T2)
    # called inside jit with concrete (closed-over) values: refused as well
    with pytest.raises(TypeError, match="sdtheory.sd_outputs was called inside jax.jit"):
        jax.jit(lambda a: sd.sd_outputs(T2, lam=0.1, rounds=[0], gram=G2) * a)(1.0)
    # inside vmap, a call on concrete values is concrete and works
    out = jax.vmap(lambda a: a * sd.sd_outputs(T2, lam=0.1, rounds=[0], gram=G2)[0, 0, 0])(jnp.ones(2))
    np.testing.assert_allclose(out, linearised_rounds_direct(G2, T2, 0.1, 1)[0, 0, 0], atol=1e-14)


@pytest.mark.parametrize(
    "call,exc,match",
    [
        (lambda: sd.accuracy(np.zeros((0, 3)), np.zeros(0, int)), ValueError, "true_labels is empty"),
        (lambda: sd.accuracy(np.zeros(0, int), np.zeros(0, int)), ValueError, "true_labels is empty"),
        (lambda: sd.split_accuracy(np.zeros((0, 3)), np.zeros(0, int), np.zeros(0, int)), ValueError, "empty"),
        (lambda: sd.accuracy("abc", [0]), TypeError, "outputs_or_predictions must be a numeric array"),
        (lambda: sd.accuracy(1.0, [0]), ValueError, "got a scalar"),
        (lambda: sd.accuracy(np.array(1), [0]), ValueError, "got a scalar"),
        (lambda: sd.accuracy([[True, False]], [0]), TypeError, "bool"),
        (lambda: sd.accuracy([[0.2, 0.8], [0.1]], [0, 1]), ValueError, "rectangular"),
        (lambda: sd.accuracy([[0.2, np.nan]], [0]), ValueError, "non-finite"),
        (lambda: sd.accuracy([[0.2, 0.8]], "0"), TypeError, "true_labels"),
        (lambda: sd.accuracy([[0.2, 0.8]], [0], tie_tol=True), TypeError, "tie_tol"),
        (lambda: sd.accuracy([[0.2, 0.8]], [0], tie_tol=np.array([0.0, 0.1])), ValueError, "tie_tol"),
        (lambda: sd.correct("abc", [0]), TypeError, "outputs must be a numeric array"),
        (lambda: sd.correct([[1, 0]], [0]), TypeError, "integer predictions carry no tie information"),
    ],
)
def test_metrics_reject_bad_input_clearly(call, exc, match):
    # the accuracy of an empty set used to be NaN; strings and scalars gave errors from inside JAX
    with pytest.raises(exc, match=match):
        call()


def test_metrics_valid_input_unchanged():
    out = np.array([[0.5, 0.5, 0.0], [0.2, 0.5, 0.3]])
    assert float(sd.accuracy(out, [0, 1])) == 0.5
    assert float(sd.accuracy(np.array([0, 1]), [0, 1])) == 1.0
    assert float(sd.accuracy(out, [0, 1], tie_tol=np.float64(0.0))) == 0.5
    np.testing.assert_array_equal(sd.correct(out, np.array([0, 1])), [False, True])
    assert sd.accuracy(np.zeros((0, 2, 3)), [0, 1]).shape == (0,)  # an empty batch of valid sets is not an error


def test_apply_spectral_checks_its_arguments():
    x = np.random.default_rng(0).normal(size=(6, 3))
    spec = sd.feature_spectrum(x)
    with pytest.raises(TypeError, match="fn must be a function"):
        sd.spectral.apply_spectral(spec, "abc", np.ones(6))
    with pytest.raises(TypeError, match="y must be a numeric array"):
        sd.spectral.apply_spectral(spec, lambda s: s, "abc")
    with pytest.raises(ValueError, match="y must be .* N = 6"):
        sd.spectral.apply_spectral(spec, lambda s: s, np.ones(5))
    with pytest.raises(ValueError, match="spec.eigvals contains 1 non-finite"):
        sd.spectral.apply_spectral(spec._replace(eigvals=np.array([np.nan, 1.0, 2.0])), lambda s: s, np.ones(6))
    with pytest.raises(ValueError, match="spec must hold eigvals"):
        sd.spectral.apply_spectral(spec._replace(eigvals=np.ones(4)), lambda s: s, np.ones(6))
    with pytest.raises(TypeError, match="spec must be a sdtheory.Spectrum"):
        sd.spectral.apply_spectral(5, lambda s: s, np.ones(6))
    with pytest.raises(ValueError, match="fn must map the eigenvalues"):
        sd.spectral.apply_spectral(spec, lambda s: s[:2], np.ones(6))
    # f(0) = 1/0 on the null space (d < N) used to give NaN outputs
    with pytest.raises(ValueError, match="fn returned non-finite multipliers"):
        sd.spectral.apply_spectral(spec, lambda s: 1.0 / s, np.ones(6))
    with pytest.raises(TypeError, match="validate must be True or False"):
        sd.gram_spectrum(np.eye(2), validate=np.array([True, False]))
    with pytest.raises(ValueError, match="method must be"):
        sd.feature_spectrum(x, method=["svd"])


def test_metric_messages_name_both_arguments_of_a_mismatch():
    with pytest.raises(ValueError, match=r"true_labels must lie in \[0, 1\].*class axis of outputs_or_predictions"):
        sd.accuracy(np.full((3, 2), 0.5), [0, 1, 2])
    with pytest.raises(ValueError, match="K >= 2"):
        sd.accuracy(np.full((3, 1), 0.5), [0, 0, 0])
    with pytest.raises(ValueError, match="outputs_or_predictions.*N = 3 \\(the length of true_labels\\)"):
        sd.accuracy(np.full((2, 3), 0.5), [0, 1, 2])
    with pytest.raises(ValueError, match="all_correct must be a rectangular"):
        sd.metrics.first_all_correct([[0, 1], [2]], [0, 1])
    with pytest.raises(TypeError, match="rounds must be an int or a 1-D sequence of ints, got the string"):
        sd.metrics.first_all_correct([[True, False]], "01")
    with pytest.raises(ValueError, match="all_correct must be bools"):
        sd.metrics.first_all_correct([[0, 2]], [0, 1])
    np.testing.assert_array_equal(
        sd.metrics.first_all_correct(np.array([[False, True], [False, False]]), [3, 7]), [7, -1]
    )


# Issue 10: the closed form with an unregularised intercept, against a direct solve on the centred Gram


def test_intercept_closed_form_equals_centred_gram_solve():
    rng = np.random.default_rng(0)
    n, d, k, lam = 30, 5, 3, 1e-2
    x = rng.normal(size=(n, d)) + 1.5
    t = np.eye(k)[rng.integers(0, k, n)]
    xt = rng.normal(size=(4, d)) + 1.5
    h = np.eye(n) - 1.0 / n
    gc = h @ x @ x.T @ h
    s_c = gc @ np.linalg.inv(gc + k * n * lam * np.eye(n))
    tbar = t.mean(axis=0)
    # linearised model with a free bias: P_r = mean(T) + S_c^{r+1} (T - mean(T))
    direct = np.stack([tbar + np.linalg.matrix_power(s_c, r + 1) @ (t - tbar) for r in range(3)])
    # new points: mean(T) + G_c(test, train) (T_r - P_r) / (K N lam), with T_r = P_{r-1}
    gct = (xt - x.mean(0)) @ (x - x.mean(0)).T
    prev = np.concatenate([t[None], direct[:-1]])
    test_direct = tbar + np.einsum("tn,rnk->rtk", gct, prev - direct) / (k * n * lam)
    for kw, test in ((dict(features=x), dict(test_features=xt)), (dict(gram=x @ x.T), dict(test_gram=xt @ x.T))):
        p = sd.predictor(t, lam=lam, fit_intercept=True, **kw)
        np.testing.assert_allclose(p.train_outputs(num_rounds=3), direct, atol=1e-12)
        np.testing.assert_allclose(p.test_outputs(num_rounds=3, **test), test_direct, atol=1e-12)
    with pytest.raises(ValueError, match="fit_intercept"):
        sd.predictor(t, lam=lam, spectrum=sd.spectral.spectrum(features=x), fit_intercept=True)
