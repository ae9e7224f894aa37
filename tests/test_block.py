"""The block model: analytic spectrum and O(NK) outputs vs. the general eigh path."""

import jax
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import sdtheory as sd


def block_gram_numpy(classes, c, d):
    same = classes[:, None] == classes[None, :]
    g = np.where(same, c, d).astype(float)
    np.fill_diagonal(g, 1.0)
    return g


@st.composite
def block_problems(draw):
    k = draw(st.integers(2, 5))
    sizes = draw(st.lists(st.integers(1, 9), min_size=k, max_size=k))
    c = draw(st.floats(0.05, 0.95))
    d = draw(st.floats(0.0, 1.0)) * c * 0.99
    log_lam = draw(st.floats(-5, 0))
    seed = draw(st.integers(0, 2**31 - 1))
    return np.array(sizes), c, d, 10.0**log_lam, seed


@given(block_problems())
def test_block_outputs_equal_general_path(problem):
    sizes, c, d, lam, seed = problem
    rng = np.random.default_rng(seed)
    classes = rng.permutation(np.repeat(np.arange(sizes.size), sizes))  # any order
    k = sizes.size
    noisy = np.where(rng.random(classes.size) < 0.4, rng.integers(0, k, classes.size), classes)
    y = np.eye(k)[noisy]
    rounds = [0, 1, 4, 9]
    fast = np.asarray(sd.block_outputs(y, classes, c=c, d=d, lam=lam, rounds=rounds))
    general = np.asarray(sd.sd_outputs(y, lam=lam, rounds=rounds, gram=block_gram_numpy(classes, c, d)))
    np.testing.assert_allclose(fast, general, atol=1e-10)
    # with 0 <= d < c the linearised block outputs are probability vectors
    assert fast.min() >= -1e-12 and fast.max() <= 1 + 1e-12
    np.testing.assert_allclose(fast.sum(-1), 1.0, atol=1e-12)


@given(block_problems())
def test_block_spectrum_matches_eigh(problem):
    sizes, c, d, _, _ = problem
    classes = np.repeat(np.arange(sizes.size), sizes)
    bs = sd.block.block_spectrum(sizes, c=c, d=d)
    analytic = np.concatenate([np.full(sizes.sum() - sizes.size, 1 - c), np.asarray(bs.class_eigvals)])
    ref = np.linalg.eigvalsh(block_gram_numpy(classes, c, d))
    np.testing.assert_allclose(np.sort(analytic), ref, atol=1e-10)
    np.testing.assert_allclose(np.asarray(sd.block_gram(classes, c=c, d=d)), block_gram_numpy(classes, c, d))


def test_balanced_eigenvalues_and_factors():
    n, k, c, d, lam = 7, 4, 0.5, 0.2, 1e-3
    s_w, s_b, s_g = sd.block.balanced_block_eigenvalues(per_class=n, num_classes=k, c=c, d=d)
    ev = np.linalg.eigvalsh(block_gram_numpy(np.repeat(np.arange(k), n), c, d))
    vals, counts = np.unique(np.round(ev, 9), return_counts=True)
    assert dict(zip(vals.tolist(), counts.tolist(), strict=False)) == {
        round(s_w, 9): n * k - k,
        round(s_b, 9): k - 1,
        round(s_g, 9): 1,
    }
    a, b, g = sd.block.block_factors(per_class=n, num_classes=k, c=c, d=d, lam=lam)
    ridge = k * n * k * lam
    np.testing.assert_allclose([a, b, g], ev[[0, -2, -1]] / (ev[[0, -2, -1]] + ridge))


def test_score_decomposition_of_theory_section_3():
    # P_r(i) - 1/K = a^e (e_y - 1/K) + (b^e - a^e)(f_k - 1/K) + (g^e - b^e)(f - 1/K)
    n, k, c, d, lam = 6, 3, 0.45, 0.1, 2e-3
    rng = np.random.default_rng(0)
    classes = np.repeat(np.arange(k), n)
    given_labels = np.where(rng.random(n * k) < 0.3, rng.integers(0, k, n * k), classes)
    y = np.eye(k)[given_labels]
    a, b, g = sd.block.block_factors(per_class=n, num_classes=k, c=c, d=d, lam=lam)
    f_k = np.stack([y[classes == j].mean(0) for j in range(k)])
    f = y.mean(0)
    for r in [0, 2, 5]:
        e = r + 1
        expected = 1 / k + a**e * (y - 1 / k) + (b**e - a**e) * (f_k[classes] - 1 / k) + (g**e - b**e) * (f - 1 / k)
        got = np.asarray(sd.sd_outputs(y, lam=lam, rounds=r, gram=block_gram_numpy(classes, c, d)))[0]
        np.testing.assert_allclose(got, expected, atol=1e-12)


def test_sampled_features_have_block_expected_gram():
    classes = sd.block_classes([30, 30, 30])
    x = np.asarray(sd.sample_block_features(jax.random.PRNGKey(1), classes, c=0.5, d=0.2, dim=4000))
    g = x @ x.T
    same = classes[:, None] == classes[None, :]
    off = ~np.eye(90, dtype=bool)
    # O(1/sqrt(dim)) fluctuations around 1, c and d (sd ~ 0.016-0.022 per entry)
    assert abs(np.diag(g).mean() - 1.0) < 0.01
    assert abs(g[same & off].mean() - 0.5) < 0.03
    assert abs(g[~same].mean() - 0.2) < 0.03
    again = np.asarray(sd.sample_block_features(jax.random.PRNGKey(1), classes, c=0.5, d=0.2, dim=4000))
    np.testing.assert_array_equal(x, again)


@pytest.mark.parametrize("c,d", [(1.2, 0.1), (0.3, -0.5), (0.5, np.nan), (0.3, 0.3), (0.2, 0.4)])
def test_one_cd_domain_everywhere(c, d):
    """One c/d rule (sdtheory._validation.check_cd) for every block-model entry point."""
    match = r"0 <= d < c < 1|d < c < 1|finite|positive definite|positive semidefinite"
    classes = np.repeat(np.arange(3), 4)
    y = np.eye(3)[classes]
    calls = [
        lambda: sd.block.block_spectrum([4, 4, 4], c=c, d=d),
        lambda: sd.block_gram(classes, c=c, d=d),
        lambda: sd.block_outputs(y, classes, c=c, d=d, lam=0.1, rounds=0),
        lambda: sd.sample_block_features(jax.random.PRNGKey(0), classes, c=c, d=d, dim=5),
        lambda: sd.block.block_factors(per_class=4, num_classes=3, c=c, d=d, lam=0.1),
        lambda: sd.min_rounds(np.eye(3), c=c, d=d, lam=0.1, per_class=4),
        lambda: sd.refine.pll_student_block_model(y, classes, c=c, d=d, lam=0.1),
        lambda: sd.montecarlo.make_config(c=c, d=d),
        lambda: sd.montecarlo.run_grid(
            sd.montecarlo.make_config(num_classes=3, per_class=4), [0.1], cs=[c], ds=[d], num_seeds=1
        ),
    ]
    for call in calls:
        with pytest.raises(ValueError, match=match):
            call()


def test_block_bad_input():
    y = np.eye(3)[np.array([0, 1, 2, 0])]
    with pytest.raises(ValueError, match="at least one instance"):
        sd.block_outputs(y, np.array([0, 1, 1, 0]), c=0.4, d=0.1, lam=0.1, rounds=1)
    with pytest.raises(ValueError, match="classes"):
        sd.block_outputs(y, np.array([0, 1, 2]), c=0.4, d=0.1, lam=0.1, rounds=1)
    with pytest.raises(ValueError, match=r"\[0, 2\]"):
        sd.block_outputs(y, np.array([0, 1, 3, 0]), c=0.4, d=0.1, lam=0.1, rounds=1)
    with pytest.raises(ValueError, match="lam"):
        sd.block_outputs(y, np.array([0, 1, 2, 0]), c=0.4, d=0.1, lam=-1.0, rounds=1)
    with pytest.raises(ValueError, match="class_sizes"):
        sd.block.block_spectrum([5], c=0.4, d=0.1)
    with pytest.raises(ValueError, match=">= 1"):
        sd.block.block_spectrum([5, 0], c=0.4, d=0.1)
    with pytest.raises(ValueError, match="0 <= d < c < 1"):
        sd.sample_block_features(jax.random.PRNGKey(0), np.array([0, 1]), c=0.1, d=0.4, dim=10)


def test_negative_d_allowed_exactly_while_the_block_gram_is_positive_definite():
    """Centred features fit a slightly negative d: allowed for the block Gram iff it stays PD."""
    sizes = np.array([3, 5, 4])
    classes = np.repeat(np.arange(3), sizes)
    c = 0.3
    # the boundary from the determinant lemma: 1 + d sum n_k / (1 - c + (c - d) n_k) = 0
    from scipy.optimize import brentq

    edge = brentq(lambda d: 1 + d * np.sum(sizes / (1 - c + (c - d) * sizes)), -0.5, 0.0)
    inside, outside = edge * 0.99, edge * 1.01
    g = sd.block_gram(classes, c=c, d=inside)
    assert np.linalg.eigvalsh(g).min() > 0  # independent check: the Gram is positive definite
    y = np.eye(3)[np.random.default_rng(0).integers(0, 3, classes.size)]
    np.testing.assert_allclose(
        sd.block_outputs(y, classes, c=c, d=inside, lam=1e-2, rounds=[0, 2]),
        sd.sd_outputs(y, lam=1e-2, rounds=[0, 2], gram=g),
        atol=1e-10,
    )
    assert np.linalg.eigvalsh(block_gram_numpy(classes, c, outside)).min() < 0
    with pytest.raises(ValueError, match="positive definite"):
        sd.block_gram(classes, c=c, d=outside)
    with pytest.raises(ValueError, match=rf"d = {outside:.10g} .*class sizes \[3, 5, 4\].*d > {f'{edge:.12f}'[:9]}"):
        sd.block_outputs(y, classes, c=c, d=outside, lam=1e-2, rounds=0)
    sd.block_outputs(y, classes, c=c, d=edge * (1 - 1e-9), lam=1e-2, rounds=0)
    with pytest.raises(ValueError, match="positive definite"):
        sd.block_outputs(y, classes, c=c, d=edge * (1 + 1e-9), lam=1e-2, rounds=0)
    # the theorems (balanced, 3 per class) accept it too: their bound -(1 - c + n c)/(n (K - 1)) is -0.2667
    assert sd.min_rounds(np.eye(3), c=c, d=inside, lam=0.1, per_class=3) == 0


# --------------------------------------------------------------------------
# Issue 12: opaque errors and silent accepts
# --------------------------------------------------------------------------


def test_block_numbers_only():
    classes = sd.block_classes([3, 3, 3])
    with pytest.raises(TypeError, match="^c "):
        sd.block_gram(classes, c="abc", d=0.1)  # was "could not convert string to float"
    with pytest.raises(TypeError, match="^c "):
        sd.block_gram(classes, c="0.4", d=0.1)  # was accepted
    with pytest.raises(TypeError, match="num_classes must be an int"):
        sd.block_gram(classes, c=0.4, d=0.1, num_classes=3.7)  # was truncated to 3
    with pytest.raises(TypeError, match="d "):
        sd.block.block_spectrum([3, 3], c=0.4, d=True)


def test_block_classes_checked_before_allocating():
    with pytest.raises(ValueError, match="classes must be a 1-D"):
        sd.block_outputs(np.eye(3)[[0, 1, 2]], np.array([[0, 1, 2]]), c=0.4, d=0.1, lam=0.1, rounds=0)
    with pytest.raises(ValueError, match="classes must be a rectangular array"):
        sd.block_gram([[0, 1], [1]], c=0.4, d=0.1)
    with pytest.raises(ValueError, match="classes must not be empty"):
        sd.block_gram(np.array([], dtype=int), c=0.4, d=0.1)
    with pytest.raises(ValueError, match="only 3 instances"):
        sd.block_gram(np.array([0, 1, 2**30]), c=0.4, d=0.1)  # no bincount of length 2**30
    with pytest.raises(ValueError, match=r"classes must lie in \[0, 1\].*num_classes = 2"):
        sd.block_gram(np.array([0, 1, 2]), c=0.4, d=0.1, num_classes=2)
    with pytest.raises(ValueError, match=r"K \(the columns of targets\) = 3"):
        sd.block_outputs(np.eye(3)[[0, 1, 2]], np.array([0, 1, 3]), c=0.4, d=0.1, lam=0.1, rounds=0)
    with pytest.raises(ValueError, match="class_sizes must be a rectangular array"):
        sd.block_classes([[2, 2], [2]])
    with pytest.raises(ValueError, match="class_sizes must add up to at most"):
        sd.block_classes([2**40, 2])


def test_sample_block_features_checks_classes_and_num_classes():
    key = jax.random.key(0)
    with pytest.raises(ValueError, match=r"classes must lie in \[0, 1\]"):
        sd.sample_block_features(key, np.array([0, 5]), c=0.4, d=0.1, dim=3, num_classes=2)  # was accepted
    with pytest.raises(TypeError, match="num_classes must be an int"):
        sd.sample_block_features(key, np.array([0, 1]), c=0.4, d=0.1, dim=3, num_classes=3.5)  # was accepted
    with pytest.raises(ValueError, match="classes must not be empty"):
        sd.sample_block_features(key, np.array([], dtype=int), c=0.4, d=0.1, dim=3)
    with pytest.raises(TypeError, match="key must be a jax.random key"):
        sd.sample_block_features(0, np.array([0, 1]), c=0.4, d=0.1, dim=3)
    with pytest.raises(ValueError, match="dim must be <="):
        sd.sample_block_features(key, np.array([0, 1]), c=0.4, d=0.1, dim=2**40)
    # an empty class is fine for the sampler (its mean is drawn anyway), and the same key gives the same features
    x = sd.sample_block_features(key, np.array([0, 0, 2]), c=0.4, d=0.1, dim=3, num_classes=3)
    np.testing.assert_array_equal(
        x, sd.sample_block_features(key, np.array([0, 0, 2]), c=0.4, d=0.1, dim=3, num_classes=3)
    )


@pytest.mark.parametrize("k,n,c,d", [(4, 10, 0.4, -0.05), (10, 12, 0.372, -0.040)])
def test_negative_d_block_outputs_match_numpy_eigh(k, n, c, d):
    """d < 0 (the digits' fitted c = 0.372, d = -0.040): block_outputs and the analytic spectrum against
    numpy.linalg.eigh of the explicit Gram and the closed form 1/K + U diag(q^(r+1)) U^T (T - 1/K)."""
    classes = np.repeat(np.arange(k), n)
    rng = np.random.default_rng(0)
    labels = np.where(rng.random(classes.size) < 0.3, rng.integers(0, k, classes.size), classes)
    lam, rounds = 1e-3, np.array([0, 1, 5, 20])
    g = block_gram_numpy(classes, c, d)
    s, U = np.linalg.eigh(g)
    assert s.min() > 0
    q = s / (s + k * classes.size * lam)
    coef = U.T @ (np.eye(k)[labels] - 1.0 / k)
    expected = np.stack([1.0 / k + U @ (q[:, None] ** (r + 1) * coef) for r in rounds])
    np.testing.assert_allclose(
        sd.block_outputs(np.eye(k)[labels], classes, c=c, d=d, lam=lam, rounds=rounds), expected, atol=1e-10
    )
    spec = sd.block.block_spectrum([n] * k, c=c, d=d)
    np.testing.assert_allclose(
        np.sort(np.concatenate([np.full(k * (n - 1), float(spec.within)), np.asarray(spec.class_eigvals)])),
        s,
        atol=1e-10,
    )
    # the rows still sum to 1, but with g < b the global term enters with a negative weight (no convexity)
    np.testing.assert_allclose(expected.sum(-1), 1.0, atol=1e-12)


def test_sampled_features_with_negative_d():
    """d in [-c/(K-1), 0): the sampler's class means are centred; the empirical Gram averages to the block
    Gram. Below -c/(K-1) it refuses, naming d and what to use instead; d >= 0 keeps its random stream."""
    k, c, d = 4, 0.45, -0.12
    classes = np.repeat(np.arange(k), 30)
    x = np.asarray(sd.sample_block_features(jax.random.PRNGKey(2), classes, c=c, d=d, dim=4000))
    g = x @ x.T
    same = classes[:, None] == classes[None, :]
    off = ~np.eye(classes.size, dtype=bool)
    assert abs(np.diag(g).mean() - 1.0) < 0.01
    assert abs(g[same & off].mean() - c) < 0.03
    assert abs(g[~same].mean() - d) < 0.03
    sd.sample_block_features(jax.random.PRNGKey(0), classes, c=c, d=-c / (k - 1), dim=5)
    with pytest.raises(ValueError, match=r"d = -0\.16 is below -c / \(K - 1\).*block_gram, block_outputs"):
        sd.sample_block_features(jax.random.PRNGKey(0), classes, c=c, d=-0.16, dim=5)
    # d >= 0: the construction sqrt(d) g + sqrt(c - d) m_k + sqrt(1 - c) z_i, draw for draw
    key = jax.random.PRNGKey(5)
    kg, km, kz = jax.random.split(key, 3)
    dim = 7
    gg = np.asarray(jax.random.normal(kg, (dim,))) / np.sqrt(dim)
    m = np.asarray(jax.random.normal(km, (k, dim))) / np.sqrt(dim)
    z = np.asarray(jax.random.normal(kz, (classes.size, dim))) / np.sqrt(dim)
    ref = np.sqrt(0.1) * gg + np.sqrt(c - 0.1) * m[classes] + np.sqrt(1 - c) * z
    np.testing.assert_allclose(sd.sample_block_features(key, classes, c=c, d=0.1, dim=dim), ref, atol=1e-12)
