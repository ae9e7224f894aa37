"""Noise: corruption matrices, confusable clusters, sampling, empirical fractions.

Every check compares with an independent computation: matrices built entry by
entry in plain Python, SciPy's hierarchical clustering, counting loops, and a
Bernstein bound for the i.i.d. sampler.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, strategies as st

import sdtheory
from _traceable import assert_vmap_equals_loop, public_wrapped
from sdtheory import noise


def _loop_matrix(kind, k, eta, clusters=None):
    """Entry-by-entry construction straight from the definitions."""
    C = [[0.0] * k for _ in range(k)]
    for i in range(k):
        for j in range(k):
            if kind == "symmetric":
                C[i][j] = 1 - eta if i == j else eta / (k - 1)
            elif kind == "asymmetric":
                if i == j:
                    C[i][j] = 1 - eta
                elif j == (i + 1) % k:
                    C[i][j] = 2 * eta / k
                else:
                    C[i][j] = eta / k
            elif kind == "pair":
                C[i][j] = 1 - eta if i == j else (eta if j == (i + 1) % k else 0.0)
            elif kind == "cc":
                size = sum(1 for x in clusters if x == clusters[i])
                if size == 1:
                    C[i][j] = 1.0 if i == j else 0.0
                elif i == j:
                    C[i][j] = 1 - eta
                elif clusters[i] == clusters[j]:
                    C[i][j] = eta / (size - 1)
    return np.array(C)


# A K = 2 asymmetric matrix puts 2 eta / 2 = eta on the only off-diagonal entry.
@given(
    kind=st.sampled_from(["symmetric", "asymmetric", "pair"]),
    k=st.sampled_from([2, 3, 7]),
    eta=st.floats(0.0, 1.0),
)
def test_matrix_families_match_definitions(kind, k, eta):
    C = np.asarray(sdtheory.corruption_matrix(kind, k, eta))
    np.testing.assert_allclose(C, _loop_matrix(kind, k, eta), atol=1e-15)
    np.testing.assert_allclose(C.sum(1), 1.0, atol=1e-14)


@given(ids=st.lists(st.integers(0, 3), min_size=6, max_size=6), eta=st.floats(0.0, 1.0))
def test_cc_matrix_matches_definition(ids, eta):
    k = len(ids)
    C = np.asarray(sdtheory.corruption_matrix("cc", k, eta, clusters=ids))
    np.testing.assert_allclose(C, _loop_matrix("cc", k, eta, ids), atol=1e-15)
    # Same partition given as groups.
    groups = [[i for i in range(k) if ids[i] == c] for c in sorted(set(ids))]
    np.testing.assert_array_equal(np.asarray(sdtheory.corruption_matrix("cc", k, eta, clusters=groups)), C)


def test_matrix_vmaps_over_eta():
    etas = jnp.linspace(0.0, 1.0, 7)
    for kind in ["symmetric", "asymmetric", "pair"]:
        out = jax.vmap(lambda e: sdtheory.corruption_matrix(kind, 5, e))(etas)
        for e, m in zip(np.asarray(etas), np.asarray(out), strict=False):
            np.testing.assert_allclose(m, _loop_matrix(kind, 5, float(e)), atol=1e-15)
    out = jax.jit(jax.vmap(lambda e: sdtheory.corruption_matrix("cc", 4, e, clusters=[0, 0, 1, 1])))(etas)
    np.testing.assert_allclose(out[3], _loop_matrix("cc", 4, float(etas[3]), [0, 0, 1, 1]), atol=1e-15)


@pytest.mark.parametrize(
    "kind,k,clusters",
    [("symmetric", 4, None), ("asymmetric", 5, None), ("pair", 3, None), ("cc", 6, [0, 0, 0, 1, 1, 2])],
)
def test_condition_threshold_is_where_condition_flips(kind, k, clusters):
    th = noise.condition_threshold(kind, k, clusters=clusters)

    def holds(eta):
        C = _loop_matrix(kind, k, eta, clusters)
        return all(C[i, i] > C[i, j] for i in range(k) for j in range(k) if j != i)

    assert holds(th - 1e-9) and not holds(min(th + 1e-9, 1.0))
    assert noise.max_eta(kind, k, clusters=clusters) == 1.0


# --------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------


@pytest.mark.parametrize("eta", [-0.1, 1.0000001, float("nan"), float("inf")])
def test_eta_out_of_range(eta):
    with pytest.raises(ValueError, match="eta"):
        sdtheory.corruption_matrix("symmetric", 3, eta)


def test_eta_above_max_message_names_maximum():
    with pytest.raises(ValueError, match=r"maximum 1 .*row-stochastic"):
        sdtheory.corruption_matrix("pair", 3, 1.5)


def test_unknown_kind_and_bad_k():
    with pytest.raises(ValueError, match="unknown corruption kind"):
        sdtheory.corruption_matrix("gaussian", 3, 0.1)
    with pytest.raises(ValueError, match="num_classes"):
        sdtheory.corruption_matrix("symmetric", 1, 0.1)
    with pytest.raises(TypeError):
        sdtheory.corruption_matrix("symmetric", 3.0, 0.1)


@pytest.mark.parametrize(
    "clusters,match",
    [
        (None, "needs clusters"),
        ([[0, 1], [1, 2]], "do not partition"),
        ([[0, 1]], "in no group"),
        ([[0, 1, 5], [2]], "outside"),
        ([[0, 1], [], [2]], "empty group"),
        ([0, -1, 1], ">= 0"),
    ],
)
def test_clusters_must_partition(clusters, match):
    with pytest.raises(ValueError, match=match):
        sdtheory.corruption_matrix("cc", 3, 0.2, clusters=clusters)


def test_clusters_only_for_cc():
    with pytest.raises(ValueError, match="only used by kind 'cc'"):
        sdtheory.corruption_matrix("symmetric", 3, 0.2, clusters=[0, 0, 1])


@pytest.mark.parametrize(
    "C,match",
    [
        (np.array([[0.5, 0.5], [0.2, 0.7]]), "row 1 sums"),
        (np.array([[1.2, -0.2], [0.0, 1.0]]), "negative"),
        (np.ones((2, 3)) / 3, "square"),
        (np.ones((1, 1)), "K >= 2"),
        (np.array([[np.nan, 1.0], [0.0, 1.0]]), "non-finite"),
    ],
)
def test_validate_corruption_matrix(C, match):
    with pytest.raises(ValueError, match=match):
        sdtheory.noise.validate_corruption_matrix(C)
    with pytest.raises(ValueError):
        sdtheory.sample_labels(jax.random.PRNGKey(0), np.zeros(3, int), C)


def test_sampling_and_fractions_bad_labels():
    C = sdtheory.corruption_matrix("symmetric", 3, 0.2)
    with pytest.raises(ValueError, match=r"\[0, 2\]"):
        sdtheory.sample_labels(jax.random.PRNGKey(0), np.array([0, 1, 3]), C)
    with pytest.raises(TypeError, match="integer"):
        sdtheory.sample_labels(jax.random.PRNGKey(0), np.array([0.0, 1.0]), C)
    with pytest.raises(ValueError, match="empty classes"):
        sdtheory.empirical_fractions(np.array([0, 0, 1]), np.array([0, 1, 1]), 3)
    with pytest.raises(ValueError, match="instances"):
        sdtheory.empirical_fractions(np.array([0, 1, 2]), np.array([0, 1]), 3)
    with pytest.raises(TypeError, match="exact"):
        sdtheory.sample_labels(jax.random.PRNGKey(0), np.array([0, 1, 2]), C, exact="yes")


# --------------------------------------------------------------------------
# Sampling
# --------------------------------------------------------------------------


def _counts_loop(true, given, k):
    m = np.zeros((k, k), dtype=int)
    for t, g in zip(true, given, strict=False):
        m[t, g] += 1
    return m


def _composition(total, k):
    """k non-negative integers summing to total (cut points of a stars-and-bars line)."""
    return st.lists(st.integers(0, total), min_size=k - 1, max_size=k - 1).map(
        lambda cuts: np.diff([0] + sorted(cuts) + [total]).tolist()
    )


# Shapes are kept to a few (K, N) pairs so that the jitted sampler compiles only a few times.
@given(data=st.data(), k=st.sampled_from([3, 4]), seed=st.integers(0, 2**31 - 1))
def test_exact_count_sampling_reproduces_fractions(data, k, seed):
    # Integer counts per class (class sizes differ), C = counts / n_k: n_k C_kl is an integer.
    sizes = np.array([6, 10, 14, 9][:k])
    counts = np.array([data.draw(_composition(int(s), k)) for s in sizes])
    C = counts / sizes[:, None]
    rng = np.random.default_rng(seed)
    true = rng.permutation(np.repeat(np.arange(k), sizes))
    given_ = np.asarray(sdtheory.sample_labels(jax.random.PRNGKey(seed), true, C, exact=True))
    np.testing.assert_array_equal(_counts_loop(true, given_, k), counts)
    f = np.asarray(sdtheory.empirical_fractions(true, given_, k))
    np.testing.assert_allclose(f, counts / sizes[:, None], rtol=0, atol=1e-15)


@given(
    k=st.just(5),
    n=st.just(7),
    eta=st.floats(0, 1),
    seed=st.integers(0, 1000),
    kind=st.sampled_from(["symmetric", "asymmetric", "pair"]),
)
def test_exact_count_rounding_keeps_class_sizes(k, n, eta, seed, kind):
    """Non-integer n_k C_kl: counts differ from n_k C_kl by < 1 and rows keep n_k."""
    C = np.asarray(sdtheory.corruption_matrix(kind, k, eta))
    true = np.repeat(np.arange(k), n)
    given_ = np.asarray(sdtheory.sample_labels(jax.random.PRNGKey(seed), true, C, exact=True))
    m = _counts_loop(true, given_, k)
    np.testing.assert_array_equal(m.sum(1), n)
    assert np.all(np.abs(m - n * C) < 1.0)
    assert np.all(m[C == 0] == 0)
    np.testing.assert_array_equal(m, sdtheory.noise.exact_counts(true, C))


def test_exact_count_assignment_is_random_within_class():
    """Different keys pick different instances; each instance is corrupted with frequency ~ eta."""
    k, n = 2, 10
    C = np.array([[0.7, 0.3], [0.3, 0.7]])
    true = np.repeat(np.arange(k), n)
    keys = jax.random.split(jax.random.PRNGKey(3), 2000)
    g = np.asarray(jax.vmap(lambda kk: sdtheory.sample_labels(kk, true, C, exact=True))(keys))
    assert np.all((g != true).sum(1) == 6)
    freq = (g != true).mean(0)
    # Each instance is flipped with probability 3/10 exactly; 2000 draws: sd 0.0102, 8 sd bound.
    assert np.all(np.abs(freq - 0.3) < 0.082)


def _bernstein_tol(p, n, delta):
    """t with P(|mean - p| >= t) <= delta for a mean of n Bernoulli(p) (Bernstein's inequality)."""
    L = math.log(2.0 / delta)
    var = p * (1 - p)
    return (L / 3 + math.sqrt(L * L / 9 + 2 * n * var * L)) / n


@pytest.mark.parametrize("kind", ["symmetric", "asymmetric", "pair"])
def test_iid_sampling_matches_C_within_binomial_tolerance(kind):
    """Each f_k(l) is a mean of n_k Bernoulli(C_kl); Bernstein's bound with delta = 1e-10 per entry
    makes a false failure less likely than 1e-8 over the whole test (and the keys are fixed)."""
    k, n = 5, 100000
    C = np.asarray(sdtheory.corruption_matrix(kind, k, 0.4))
    true = np.repeat(np.arange(k), n)
    f = np.asarray(sdtheory.empirical_fractions(true, sdtheory.sample_labels(jax.random.PRNGKey(11), true, C), k))
    for i in range(k):
        for j in range(k):
            assert abs(f[i, j] - C[i, j]) <= _bernstein_tol(C[i, j], n, 1e-10), (i, j, f[i, j], C[i, j])
    # The tolerance is not vacuous: it is far below the entries' spacing.
    assert _bernstein_tol(0.4, n, 1e-10) < 0.012


def test_iid_sampling_vmaps_over_keys_and_matrices():
    true = np.repeat(np.arange(3), 50)
    etas = jnp.array([0.0, 0.2, 0.5])
    Cs = jax.vmap(lambda e: sdtheory.corruption_matrix("symmetric", 3, e))(etas)
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    out = jax.vmap(lambda kk, C: sdtheory.sample_labels(kk, true, C))(keys, Cs)
    for i in range(3):
        np.testing.assert_array_equal(out[i], sdtheory.sample_labels(keys[i], true, np.asarray(Cs[i])))
    np.testing.assert_array_equal(out[0], true)  # eta = 0 never moves a label
    ex = jax.vmap(lambda kk, C: noise.sample_labels_exact_core(kk, jnp.asarray(true), C))(keys, Cs)
    for i in range(3):
        np.testing.assert_array_equal(ex[i], sdtheory.sample_labels(keys[i], true, np.asarray(Cs[i]), exact=True))


def test_pair_iid_only_moves_to_next_class():
    true = np.repeat(np.arange(4), 300)
    g = np.asarray(sdtheory.sample_labels(jax.random.PRNGKey(5), true, sdtheory.corruption_matrix("pair", 4, 0.3)))
    assert np.all((g == true) | (g == (true + 1) % 4))


@given(k=st.integers(2, 5), seed=st.integers(0, 10**6))
def test_empirical_fractions_match_counting(k, seed):
    rng = np.random.default_rng(seed)
    true = np.concatenate([np.arange(k), rng.integers(0, k, 30)])
    given_ = rng.integers(0, k, true.size)
    m = _counts_loop(true, given_, k)
    np.testing.assert_allclose(
        np.asarray(sdtheory.empirical_fractions(true, given_, k)), m / m.sum(1, keepdims=True), atol=1e-15
    )


# --------------------------------------------------------------------------
# Confusable clusters
# --------------------------------------------------------------------------


@given(seed=st.integers(0, 10**6), k=st.integers(3, 10), m=st.integers(1, 3))
def test_confusable_clusters_match_scipy_complete_linkage(seed, k, m):
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import squareform

    m = min(m, k)
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(k, 6))
    ours = sdtheory.noise.confusable_clusters(means, num_clusters=m)
    xn = means / np.linalg.norm(means, axis=1, keepdims=True)
    dist = np.clip(1.0 - xn @ xn.T, 0, None)
    np.fill_diagonal(dist, 0.0)
    ref = fcluster(linkage(squareform(dist, checks=False), method="complete"), m, criterion="maxclust")
    # Same partition (labels may be permuted).
    assert len(set(ours)) == len(set(ref)) == m
    pairs_ours = ours[:, None] == ours[None, :]
    pairs_ref = ref[:, None] == ref[None, :]
    np.testing.assert_array_equal(pairs_ours, pairs_ref)


def test_confusable_clusters_recover_planted_groups_from_features():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 20)) * 5
    class_means = np.concatenate([centres[g] + rng.normal(size=(2, 20)) * 0.3 for g in range(3)])  # 6 classes
    labels = np.repeat(np.arange(6), 40)
    feats = class_means[labels] + rng.normal(size=(240, 20)) * 0.5
    ids = sdtheory.noise.confusable_clusters(feats, labels, num_clusters=3)
    assert ids[0] == ids[1] and ids[2] == ids[3] and ids[4] == ids[5]
    assert len({ids[0], ids[2], ids[4]}) == 3
    # The threshold rule (0.8 of the top merge height) also separates the planted groups here.
    ids2 = sdtheory.noise.confusable_clusters(feats, labels)
    assert ids2[0] == ids2[1] and ids2[0] != ids2[2]
    C = sdtheory.corruption_matrix("cc", 6, 0.3, clusters=ids)
    assert float(C[0, 1]) == pytest.approx(0.3) and float(C[0, 2]) == 0.0


def test_confusable_clusters_bad_input():
    with pytest.raises(ValueError, match="num_clusters"):
        sdtheory.noise.confusable_clusters(np.eye(3), num_clusters=4)
    with pytest.raises(ValueError, match="all-zero"):
        sdtheory.noise.confusable_clusters(np.zeros((3, 2)), num_clusters=2)
    with pytest.raises(ValueError, match="empty"):
        sdtheory.noise.confusable_clusters(np.eye(3), np.array([0, 0, 2]), num_clusters=2)


# --------------------------------------------------------------------------
# Issue 12: opaque errors and silent accepts
# --------------------------------------------------------------------------


def test_eta_bool_and_string_are_refused_by_name():
    with pytest.raises(TypeError, match="eta.*bool"):
        sdtheory.corruption_matrix("symmetric", 3, True)
    with pytest.raises(TypeError, match="eta"):
        sdtheory.corruption_matrix("symmetric", 3, "0.1")
    with pytest.raises(ValueError, match="num_classes must be <="):
        sdtheory.corruption_matrix("symmetric", 2**64, 0.1)  # was an OverflowError inside jnp.eye


@pytest.mark.parametrize("key", [0, 1.5, "key", np.zeros(2), np.zeros(3, np.uint32), [0, 0], None])
def test_sample_labels_bad_key_is_named(key):
    C = sdtheory.corruption_matrix("symmetric", 3, 0.2)
    with pytest.raises(TypeError, match="key must be a jax.random key"):
        sdtheory.sample_labels(key, np.array([0, 1, 2]), C)


def test_sample_labels_key_batch_and_raw_key():
    C = sdtheory.corruption_matrix("symmetric", 3, 0.2)
    with pytest.raises(ValueError, match="single jax.random key"):
        sdtheory.sample_labels(jax.random.split(jax.random.key(0), 2), np.array([0, 1, 2]), C)
    raw = sdtheory.sample_labels(jax.random.PRNGKey(3), np.array([0, 1, 2]), C)
    typed = sdtheory.sample_labels(jax.random.wrap_key_data(jax.random.PRNGKey(3)), np.array([0, 1, 2]), C)
    np.testing.assert_array_equal(raw, typed)


def test_validate_corruption_matrix_checks_atol_and_dtype():
    C = np.eye(2)
    with pytest.raises(ValueError, match="atol must be >= 0"):
        sdtheory.noise.validate_corruption_matrix(C, atol=-1)  # was "row 0 sums to 1, not 1"
    with pytest.raises(ValueError, match="atol must be finite"):
        sdtheory.noise.validate_corruption_matrix(2 * C, atol=float("nan"))  # was accepted
    with pytest.raises(TypeError, match="atol"):
        sdtheory.noise.validate_corruption_matrix(C, atol=True)
    with pytest.raises(TypeError, match="C must be real numbers.*bool"):
        sdtheory.noise.validate_corruption_matrix(C.astype(bool))
    with pytest.raises(ValueError, match="C .corruption matrix. is not row-stochastic: row 0 sums to 1.0000001"):
        sdtheory.noise.validate_corruption_matrix(np.array([[1.0000001, 0.0], [0.0, 1.0]]), atol=0.0)
    with pytest.raises(ValueError, match="fractions"):
        sdtheory.noise.validate_corruption_matrix(np.ones((2, 3)) / 3, name="fractions")
    np.testing.assert_array_equal(
        sdtheory.noise.validate_corruption_matrix(np.float32(1) * C, atol=np.float32(1e-6)), C
    )


def test_cluster_ids_of_the_wrong_length_say_so():
    with pytest.raises(ValueError, match="clusters has 3 cluster ids but there are num_classes = K = 4"):
        sdtheory.corruption_matrix("cc", 4, 0.1, clusters=[0, 0, 1])  # was "class 0 appears in groups 0 and 1"
    with pytest.raises(TypeError, match="clusters must be integer cluster ids"):
        sdtheory.corruption_matrix("cc", 3, 0.1, clusters=[0.0, 0.0, 1.0])
    with pytest.raises(ValueError, match="clusters must be a rectangular array|clusters group 0"):
        sdtheory.corruption_matrix("cc", 3, 0.1, clusters=[[0, [1, 2]]])
    with pytest.raises(TypeError, match="clusters"):
        sdtheory.corruption_matrix("cc", 3, 0.1, clusters="abc")


def test_long_lists_in_messages_are_truncated():
    with pytest.raises(ValueError, match=r"in no group") as info:
        sdtheory.corruption_matrix("cc", 10_000, 0.1, clusters=[[0, 1]])
    assert "(9998 in all)" in str(info.value) and len(str(info.value)) < 300
    with pytest.raises(ValueError, match="num_classes") as info:
        sdtheory.empirical_fractions(np.array([0, 1]), np.array([0, 1]), 10**7)  # was an 89 MB message
    assert len(str(info.value)) < 300
    with pytest.raises(ValueError, match="empty classes") as info:
        sdtheory.empirical_fractions(np.zeros(50, int), np.zeros(50, int), 40)
    assert "(39 in all)" in str(info.value)


def test_max_eta_and_condition_threshold_use_clusters():
    with pytest.raises(ValueError, match="only used by kind 'cc'"):
        noise.max_eta("symmetric", 3, clusters=[0, 0, 1])  # was ignored
    with pytest.raises(ValueError, match="only used by kind 'cc'"):
        noise.condition_threshold("pair", 3, clusters=[0, 0, 1])  # was ignored
    with pytest.raises(ValueError, match="in no group"):
        noise.max_eta("cc", 3, clusters=[[0, 1]])  # validated when given
    assert noise.max_eta("cc", 3) == 1.0 and noise.max_eta("cc", 3, clusters=[0, 0, 1]) == 1.0
    assert noise.condition_threshold("cc", 4, clusters=[0, 0, 0, 1]) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="needs clusters"):
        noise.condition_threshold("cc", 3)


def test_labels_ragged_or_mismatched_name_both_arguments():
    C = sdtheory.corruption_matrix("symmetric", 3, 0.2)
    with pytest.raises(ValueError, match="true_labels must be a rectangular array"):
        sdtheory.sample_labels(jax.random.key(0), [[0, 1], [2]], C)
    with pytest.raises(ValueError, match=r"true_labels must lie in \[0, 1\].*num_classes = 2"):
        sdtheory.empirical_fractions(np.array([0, 1, 2]), np.array([0, 1, 1]), 2)
    with pytest.raises(ValueError, match=r"true_labels.*K = 3, the size of C"):
        sdtheory.noise.exact_counts(np.array([0, 3]), C)


def test_confusable_clusters_bad_labels_and_scale():
    x = np.random.default_rng(0).normal(size=(6, 4))
    with pytest.raises(ValueError, match="labels must be a 1-D"):
        sdtheory.noise.confusable_clusters(x, np.array([[0, 0, 1, 1, 2, 2]]))  # was "labels has -1 instances"
    with pytest.raises(ValueError, match="labels must use every class"):
        sdtheory.noise.confusable_clusters(x, np.array([0, 0, 1, 1, 2, 2**30]))  # no (2**30,) bincount
    with pytest.raises(ValueError, match="labels must lie in"):
        sdtheory.noise.confusable_clusters(x, np.array([0, 0, 1, 1, 2, 2**40]))
    with pytest.raises(TypeError, match="class_means_or_features"):
        sdtheory.noise.confusable_clusters(np.array([["a", "b"], ["c", "d"]]))
    with pytest.raises(TypeError, match="threshold_ratio"):
        sdtheory.noise.confusable_clusters(x, threshold_ratio="0.5")
    means = np.random.default_rng(1).normal(size=(5, 3))
    base = sdtheory.noise.confusable_clusters(means, num_clusters=2)
    for scale in (1e200, 1e-170):  # cosine similarity does not depend on the scale
        np.testing.assert_array_equal(sdtheory.noise.confusable_clusters(means * scale, num_clusters=2), base)


# --------------------------------------------------------------------------
# Transformations: the traceable functions under jax.vmap in JAX's default 32-bit mode
# --------------------------------------------------------------------------

_ETAS = np.linspace(0.0, 0.9, 7)  # a NumPy float64 batch
_TRUE = np.repeat(np.arange(3), 7)
_CS = np.stack([np.asarray(sdtheory.corruption_matrix("asymmetric", 3, e)) for e in _ETAS])
_GIVENS = np.stack([np.roll(_TRUE, s) for s in range(4)])  # int64 batch
_KEY = jax.random.key(3)

#: Every public function of sdtheory.noise that the docs call traceable: (function of one batch element, batch).
NOISE_TRACEABLE = {
    "corruption_matrix": [
        (lambda e, kind=kind: sdtheory.corruption_matrix(kind, 4, e), _ETAS)
        for kind in ("symmetric", "asymmetric", "pair")
    ]
    + [(lambda e: sdtheory.corruption_matrix("cc", 4, e, clusters=[0, 0, 1, 1]), _ETAS)],
    "exact_counts": [(lambda C: sdtheory.noise.exact_counts(_TRUE, C), _CS)],
    "sample_labels": [
        (lambda C: sdtheory.sample_labels(_KEY, _TRUE, C), _CS),
        (lambda C: sdtheory.sample_labels(_KEY, _TRUE, C, exact=True), _CS),
    ],
    "empirical_fractions": [(lambda g: sdtheory.empirical_fractions(_TRUE, g, 3), _GIVENS)],
    "validate_corruption_matrix": [(lambda C: sdtheory.noise.validate_corruption_matrix(C), _CS)],
}
#: Traceable public functions without array arguments: Python constants inside jax.jit / jax.vmap.
NOISE_NO_ARRAYS = {
    "max_eta": lambda: sdtheory.noise.max_eta("pair", 3),
    "condition_threshold": lambda: sdtheory.condition_threshold("symmetric", 3),
}
#: Public functions of sdtheory.noise that need concrete input, and the argument their TypeError names.
NOISE_CONCRETE = {"confusable_clusters": "class_means_or_features"}


def test_every_public_noise_function_is_traceable_or_refuses_traced_input():
    assert public_wrapped(noise) == set(NOISE_TRACEABLE) | set(NOISE_NO_ARRAYS) | set(NOISE_CONCRETE)


@pytest.mark.parametrize("name", sorted(NOISE_NO_ARRAYS))
def test_noise_constants_work_inside_jit_and_vmap(name):
    value = NOISE_NO_ARRAYS[name]()
    with jax.enable_x64(False):
        np.testing.assert_allclose(jax.jit(lambda x: x * NOISE_NO_ARRAYS[name]())(2.0), 2 * value, rtol=1e-7)
        np.testing.assert_allclose(jax.vmap(lambda x: x * NOISE_NO_ARRAYS[name]())(_ETAS), _ETAS * value, rtol=1e-7)


@pytest.mark.parametrize("name", sorted(NOISE_TRACEABLE))
def test_traceable_noise_functions_vmap_over_a_numpy_float64_batch(name):
    for fn, batch in NOISE_TRACEABLE[name]:
        assert_vmap_equals_loop(fn, batch)


def test_confusable_clusters_refuses_traced_input_by_name():
    feats = np.random.default_rng(0).normal(size=(2, 3, 5))
    with pytest.raises(TypeError, match="class_means_or_features is a traced value"):
        jax.vmap(lambda f: sdtheory.noise.confusable_clusters(f, num_clusters=2))(feats)
