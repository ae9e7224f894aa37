"""The theorems as executable statements, each against an independent computation.

The independent computation is the general eigh path: ``sd_outputs`` on the
explicit ``block_gram`` (an ``N x N`` eigendecomposition, no use of the block
structure or of the score formula), evaluated round by round; the PLL
pipeline is rebuilt from it with a NumPy top-2. Examples whose eigh outputs
sit within 1e-9 of a tie are skipped (``assume``): there the float
eigendecomposition, not the theorem, decides the argmax.

Shapes are drawn from a few (K, n) pairs and the rounds are always 0..R-1 so
that the jitted closed form compiles a handful of times only.
"""

from decimal import Decimal, getcontext

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import assume, event, given, strategies as st

import sdtheory
from sdtheory import theorems as T

R = 40
ROUNDS = np.arange(R)
TIE = 1e-9
SHAPES = [(3, 12), (4, 10)]


def _composition(total, k):
    return st.lists(st.integers(0, total), min_size=k - 1, max_size=k - 1).map(
        lambda cuts: np.diff([0] + sorted(cuts) + [total]).tolist()
    )


@st.composite
def doubly_stochastic_counts(draw, k, n):
    """Counts with every row and column summing to n: a weighted sum of permutation matrices."""
    m = draw(st.integers(1, 3))
    w0 = draw(st.integers(0, n))  # weight of the identity (clean labels)
    weights = draw(_composition(n - w0, m))
    counts = w0 * np.eye(k, dtype=int)
    for w in weights:
        perm = draw(st.permutations(range(k)))
        counts = counts + w * np.eye(k, dtype=int)[list(perm)]
    return counts


@st.composite
def any_counts(draw, k, n):
    """Per-class counts: a uniform number of corrupted labels, spread over the wrong classes."""
    mild = draw(st.booleans())  # half the examples keep every class at least half clean
    rows = []
    for i in range(k):
        m = draw(st.integers(0, n // 2 if mild else n))
        off = draw(_composition(m, k - 1))
        rows.append(off[:i] + [n - m] + off[i:])
    return np.array(rows)


def _distinct_rows(k, n):
    """All rows of k distinct non-negative integers summing to n (as tuples)."""
    import itertools

    return [r for r in itertools.product(range(n + 1), repeat=k) if sum(r) == n and len(set(r)) == k]


_DISTINCT = {shape: _distinct_rows(*shape) for shape in SHAPES}


@st.composite
def distinct_counts(draw, k, n):
    """Per-class counts whose entries differ within each row: no ties between class fractions,
    so the teacher's top-2 is not decided by rounding."""
    dominant = draw(st.booleans())  # half the examples put every row's largest count on the true class
    rows = []
    for i in range(k):
        row = list(draw(st.sampled_from(_DISTINCT[(k, n)])))
        if dominant or draw(st.booleans()):
            j = int(np.argmax(row))
            row[i], row[j] = row[j], row[i]
        rows.append(row)
    return np.array(rows)


def _labels(counts):
    """True classes (contiguous blocks) and given labels realising the per-class counts."""
    k = counts.shape[0]
    true = np.repeat(np.arange(k), counts.sum(1))
    given_ = np.concatenate([np.repeat(np.arange(k), counts[c]) for c in range(k)])
    return true, given_


def _eigh_margins(given_, true, c, d, lam, k):
    """(R,) min over instances of P(true) - max_{l != true} P(l) on the eigh path."""
    G = sdtheory.block_gram(true, c=c, d=d)
    P = np.asarray(sdtheory.sd_outputs(np.eye(k)[given_], lam=lam, rounds=ROUNDS, gram=G))
    pt = np.take_along_axis(P, true[None, :, None], axis=2)[..., 0]
    other = np.where(np.eye(k, dtype=bool)[true][None], -np.inf, P).max(-1)
    return (pt - other).min(axis=1)


params = dict(
    c=st.floats(0.2, 0.8),
    dfrac=st.floats(0.0, 0.9),
    loglam=st.floats(-3.5, -0.5),
)


# --------------------------------------------------------------------------
# min_rounds and the corruption condition
# --------------------------------------------------------------------------


@given(data=st.data(), shape=st.sampled_from(SHAPES), **params)
def test_min_rounds_is_first_all_correct_eigh_round(data, shape, c, dfrac, loglam):
    """Equal global frequencies: min_rounds = first round the eigh path is 100% correct (-1: none)."""
    k, n = shape
    counts = data.draw(doubly_stochastic_counts(k, n))
    d, lam = c * dfrac, 10.0**loglam
    true, given_ = _labels(counts)
    f = sdtheory.empirical_fractions(true, given_, k)
    r_star = sdtheory.min_rounds(f, c=c, d=d, lam=lam, per_class=n)
    assume(r_star < R - 1)
    margins = _eigh_margins(given_, true, c, d, lam, k)
    assume(np.all(np.abs(margins) > TIE))
    ok = margins > 0
    first = int(np.argmax(ok)) if ok.any() else -1
    event("r* = -1 (condition fails)" if r_star < 0 else ("r* = 0" if r_star == 0 else "r* >= 1"))
    assert r_star == first
    if r_star >= 0:  # and it stays correct (no upper end without a global term)
        assert ok[r_star:].all()
    # The window with the global term agrees.
    assert sdtheory.all_correct_rounds(f, c=c, d=d, lam=lam, per_class=n).first == r_star


@given(data=st.data(), shape=st.sampled_from(SHAPES), **params)
def test_corruption_condition_iff_some_all_correct_round(data, shape, c, dfrac, loglam):
    """Condition holds <=> some eigh round classifies every training instance correctly.

    The global term vanishes for d = 0 or equal global frequencies; half the
    examples use d = 0 with arbitrary per-class counts.
    """
    k, n = shape
    if data.draw(st.booleans()):
        counts, d = data.draw(any_counts(k, n)), 0.0
    else:
        counts, d = data.draw(doubly_stochastic_counts(k, n)), c * dfrac
    lam = 10.0**loglam
    true, given_ = _labels(counts)
    f = sdtheory.empirical_fractions(true, given_, k)
    cond = sdtheory.corruption_condition(f)
    # Condition from the counts directly (integer arithmetic).
    assert cond == all(counts[i, i] > counts[i, j] for i in range(k) for j in range(k) if i != j)
    if cond:
        assume(sdtheory.min_rounds(f, c=c, d=d, lam=lam, per_class=n) < R - 1)
    margins = _eigh_margins(given_, true, c, d, lam, k)
    assume(np.all(np.abs(margins) > TIE))
    event(f"condition {'holds' if cond else 'fails'}")
    assert cond == bool((margins > 0).any())


@given(data=st.data(), shape=st.sampled_from(SHAPES), **params)
def test_all_correct_window_matches_eigh_with_global_term(data, shape, c, dfrac, loglam):
    """Arbitrary (unequal global) fractions: the exact window equals the eigh all-correct rounds."""
    k, n = shape
    counts = data.draw(any_counts(k, n))
    d, lam = c * dfrac, 10.0**loglam
    true, given_ = _labels(counts)
    f = sdtheory.empirical_fractions(true, given_, k)
    w = sdtheory.all_correct_rounds(f, c=c, d=d, lam=lam, per_class=n)
    margins = _eigh_margins(given_, true, c, d, lam, k)
    assume(np.all(np.abs(margins) > TIE))
    expected = np.array([w.first >= 0 and w.first <= r <= w.last for r in ROUNDS])
    event("empty window" if w.first < 0 else ("window closes before R" if w.last < R - 1 else "window open through R"))
    np.testing.assert_array_equal(margins > 0, expected)
    assert sdtheory.max_rounds(f, c=c, d=d, lam=lam, per_class=n) == w.last


def test_window_closes_when_global_frequencies_differ():
    """A hand-made case with r* < r_max < R: label 0 is globally frequent, so class 1 is over-averaged."""
    k, n, c, d, lam = 3, 20, 0.5, 0.2, 3e-3
    counts = np.array([[16, 2, 2], [6, 12, 2], [6, 2, 12]])
    true, given_ = _labels(counts)
    f = sdtheory.empirical_fractions(true, given_, k)
    w = sdtheory.all_correct_rounds(f, c=c, d=d, lam=lam, per_class=n)
    margins = _eigh_margins(given_, true, c, d, lam, k)
    ok = np.flatnonzero(margins > 0)
    assert 0 <= w.first < w.last < R - 1
    np.testing.assert_array_equal(ok, np.arange(w.first, w.last + 1))


@given(data=st.data(), shape=st.sampled_from(SHAPES), **params)
def test_window_search_agrees_with_direct_evaluation_over_long_ranges(data, shape, c, dfrac, loglam):
    """The bisection (which relies on unimodality) vs evaluating every round 0..4999 directly."""
    k, n = shape
    counts = data.draw(any_counts(k, n))
    d, lam = c * dfrac, 10.0**loglam
    f = np.asarray(counts / n, dtype=float)
    w = sdtheory.all_correct_rounds(f, c=c, d=d, lam=lam, per_class=n)
    rounds = np.arange(5000)
    ok = np.asarray(sdtheory.all_correct_at(f, rounds, c=c, d=d, lam=lam, per_class=n))
    if w.first < 0:
        assert not ok.any()
    else:
        hi = min(w.last, rounds[-1])
        np.testing.assert_array_equal(np.flatnonzero(ok), np.arange(w.first, hi + 1))


def test_min_rounds_population_worked_example():
    """Worked example (docs/theory.md, section 7): K = 6, n = 100, c = .4, d = .1, lam = 1e-4: SD rounds grow with eta, PLL needs one.

    Population (C) values from the floor formula evaluated by hand in Python floats.
    """
    import math

    k, n, c, d, lam = 6, 100, 0.4, 0.1, 1e-4
    s_w, s_b = 1 - c, 1 - c + n * (c - d)
    ridge = k * k * n * lam
    a, b = s_w / (s_w + ridge), s_b / (s_b + ridge)
    prev = -1
    for eta in [0.3, 0.5, 0.6, 0.7]:
        delta = (1 - eta) - eta / (k - 1)
        expected = math.floor(math.log((1 + delta) / delta) / math.log(b / a))
        C = sdtheory.corruption_matrix("symmetric", k, eta)
        got = sdtheory.min_rounds(C, c=c, d=d, lam=lam, per_class=n)
        assert got == expected and got >= prev
        prev = got
        assert sdtheory.pll_condition(C, c=c, d=d, lam=lam, per_class=n)
    # Past the threshold (K-1)/K the condition fails.
    assert sdtheory.min_rounds(sdtheory.corruption_matrix("symmetric", k, 5 / 6), c=c, d=d, lam=lam, per_class=n) == -1


def test_no_noise_gives_round_zero_and_margin_inf():
    f = np.eye(4)
    assert sdtheory.min_rounds(f, c=0.5, d=0.1, lam=1e-3, per_class=10) == 0
    assert sdtheory.margin(f) == float("inf")
    assert sdtheory.corruption_condition(f)


def _decimal_first_round(delta, k, n, c, d, lam):
    """First e - 1 with (a/b)^e < delta/(1+delta), in 60-digit decimal arithmetic."""
    getcontext().prec = 60
    D = Decimal
    ridge = D(k) * D(k * n) * D(lam)
    s_w = D(1) - D(c)
    s_b = s_w + D(n) * (D(c) - D(d))
    rho = (s_w / (s_w + ridge)) / (s_b / (s_b + ridge))
    target = D(delta) / (D(1) + D(delta))
    e = 1
    p = rho
    while not p < target:
        e += 1
        p *= rho
    return e - 1


@pytest.mark.parametrize("e_target", [1, 2, 5, 17])
def test_min_rounds_near_integer_boundary(e_target):
    """lam chosen so that log((1+Delta)/Delta)/log(b/a) is (numerically) the integer e_target."""
    k, n, c, d = 3, 10, 0.6, 0.1
    counts = np.array([[7, 2, 1], [1, 7, 2], [2, 1, 7]])  # doubly stochastic, Delta = 5/10
    f = counts / n
    delta = 0.5
    s_w, s_b = 1 - c, 1 - c + n * (c - d)
    rho = (delta / (1 + delta)) ** (1 / e_target)
    ridge = s_w * s_b * (rho - 1) / (s_w - rho * s_b)
    lam0 = ridge / (k * k * n)
    # Relative offsets 1e-13 away from the boundary are decided correctly; exactly at the
    # (float-rounded) boundary float64 cannot decide and the test does not ask it to.
    for lam in [lam0 * (1 + t) for t in (-1e-9, -1e-13, 1e-13, 1e-9)]:
        got = sdtheory.min_rounds(f, c=c, d=d, lam=lam, per_class=n)
        assert got == _decimal_first_round(Decimal(5) / Decimal(10), k, n, c, d, lam), lam
        assert sdtheory.all_correct_rounds(f, c=c, d=d, lam=lam, per_class=n).first == got


@given(shape=st.sampled_from(SHAPES), data=st.data())
def test_condition_and_margin_match_loops(shape, data):
    k, n = shape
    counts = data.draw(any_counts(k, n))
    f = counts / n
    cond = all(f[i, i] > f[i, j] for i in range(k) for j in range(k) if j != i)
    occ = [f[i, i] - f[i, j] for i in range(k) for j in range(k) if j != i and counts[i, j] > 0]
    assert sdtheory.corruption_condition(f) == cond
    assert sdtheory.margin(f) == (min(occ) if occ else float("inf"))


def test_cores_vmap_over_fractions_and_lam():
    k, n, c, d = 3, 10, 0.5, 0.1
    etas = jnp.linspace(0.0, 0.7, 8)
    lams = jnp.array([1e-3, 3e-3, 1e-2])
    Cs = jax.vmap(lambda e: sdtheory.corruption_matrix("symmetric", k, e))(etas)
    grid = jax.vmap(lambda C: jax.vmap(lambda l: sdtheory.min_rounds(C, c=c, d=d, lam=l, per_class=n))(lams))(Cs)
    win = jax.vmap(lambda C: jax.vmap(lambda l: sdtheory.all_correct_rounds(C, c=c, d=d, lam=l, per_class=n))(lams))(Cs)
    for i in range(len(etas)):
        for j in range(len(lams)):
            C = np.asarray(Cs[i])
            assert int(grid[i, j]) == sdtheory.min_rounds(C, c=c, d=d, lam=float(lams[j]), per_class=n)
            w = sdtheory.all_correct_rounds(C, c=c, d=d, lam=float(lams[j]), per_class=n)
            assert (int(win.first[i, j]), int(win.last[i, j])) == (w.first, w.last)
    # Under jax.jit too, and with the same factors as sdtheory.block_factors.
    jitted = jax.jit(jax.vmap(lambda l: sdtheory.min_rounds(Cs[3], c=c, d=d, lam=l, per_class=n)))(lams)
    np.testing.assert_array_equal(jitted, grid[3])
    np.testing.assert_allclose(T._factors(Cs[3], c, d, 1e-3, n), sdtheory.block_factors(per_class=n, num_classes=k, c=c, d=d, lam=1e-3), rtol=1e-15)
    # Jitted cores straight on the block factors.
    a, b, g = sdtheory.block_factors(per_class=n, num_classes=k, c=c, d=d, lam=1e-3)
    out = jax.jit(jax.vmap(T.min_rounds_core, in_axes=(0, None, None)))(Cs, a, b)
    np.testing.assert_array_equal(out, grid[:, 0])


# --------------------------------------------------------------------------
# PLL
# --------------------------------------------------------------------------


def _top2_numpy(P):
    """Top-2 mask by sorting (stable: lower index first among ties)."""
    order = np.argsort(-P, axis=-1, kind="stable")
    m = np.zeros_like(P)
    np.put_along_axis(m, order[:, :2], 0.5, axis=-1)
    return m, np.take_along_axis(P, order, -1)


def _eigh_pll(given_, true, c, d, lam, k):
    G = sdtheory.block_gram(true, c=c, d=d)
    teacher = np.asarray(sdtheory.sd_outputs(np.eye(k)[given_], lam=lam, rounds=[0], gram=G))[0]
    t2, srt = _top2_numpy(teacher)
    gap23 = (srt[:, 1] - srt[:, 2]).min()
    student = np.asarray(sdtheory.sd_outputs(t2, lam=lam, rounds=[0], gram=G))[0]
    pt = student[np.arange(true.size), true]
    other = np.where(np.eye(k, dtype=bool)[true], -np.inf, student).max(-1)
    return pt - other, gap23


@given(data=st.data(), shape=st.sampled_from(SHAPES), **params)
def test_pll_condition_iff_student_all_correct_when_d_zero(data, shape, c, dfrac, loglam):
    """d = 0 (no global term): PLL condition <=> the one-round PLL student is 100% correct (eigh path)."""
    k, n = shape
    counts = data.draw(distinct_counts(k, n))
    lam = 10.0**loglam
    true, given_ = _labels(counts)
    f = sdtheory.empirical_fractions(true, given_, k)
    margins, gap23 = _eigh_pll(given_, true, c, 0.0, lam, k)
    assume(gap23 > TIE and np.all(np.abs(margins) > TIE))
    cond = sdtheory.pll_condition(f, c=c, d=0.0, lam=lam, per_class=n)
    event(f"PLL condition {'holds' if cond else 'fails'}")
    assert cond == bool(np.all(margins > 0))


@given(data=st.data(), shape=st.sampled_from(SHAPES), **params)
def test_pll_accuracy_prediction_matches_eigh_student(data, shape, c, dfrac, loglam):
    """With the global term (d > 0): predicted PLL training accuracy = eigh-path student accuracy."""
    k, n = shape
    counts = data.draw(distinct_counts(k, n))
    d, lam = c * dfrac, 10.0**loglam
    true, given_ = _labels(counts)
    f = sdtheory.empirical_fractions(true, given_, k)
    margins, gap23 = _eigh_pll(given_, true, c, d, lam, k)
    assume(gap23 > TIE and np.all(np.abs(margins) > TIE))
    pred = sdtheory.pll_accuracy_prediction(f, c=c, d=d, lam=lam, per_class=n)
    event("student 100%" if np.all(margins > 0) else "student < 100%")
    assert float(pred.accuracy[0]) == pytest.approx(float(np.mean(margins > 0)), abs=1e-12)


@pytest.mark.parametrize("k,n", SHAPES)
def test_pll_fails_for_pure_pair_flips(k, n):
    """Pair flips: every top-2 of class k is {k, k+1}, so h_k(k+1) = 1 and the student ties k with k+1."""
    c, d, lam = 0.5, 0.0, 1e-2
    C = sdtheory.corruption_matrix("pair", k, 0.3)
    true = np.repeat(np.arange(k), n)
    given_ = np.asarray(sdtheory.sample_labels(jax.random.PRNGKey(0), true, C, exact=True))
    f = sdtheory.empirical_fractions(true, given_, k)
    assert sdtheory.corruption_condition(f)  # SD itself can still correct them
    assert not sdtheory.pll_condition(f, c=c, d=d, lam=lam, per_class=n)
    G = sdtheory.block_gram(true, c=c, d=d)
    teacher = np.asarray(sdtheory.sd_outputs(np.eye(k)[given_], lam=lam, rounds=[0], gram=G))[0]
    t2, _ = _top2_numpy(teacher)
    student = np.asarray(sdtheory.sd_outputs(t2, lam=lam, rounds=[0], gram=G))[0]
    i = np.arange(true.size)
    # A tie up to rounding: the student cannot prefer the true class.
    np.testing.assert_allclose(student[i, true], student[i, (true + 1) % k], atol=1e-12)
    assert float(sdtheory.pll_accuracy_prediction(f, c=c, d=d, lam=lam, per_class=n).accuracy[0]) == 0.0


# --------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------


def test_theorem_bad_input():
    f = np.eye(3)
    with pytest.raises(ValueError, match="per_class"):
        sdtheory.min_rounds(f, c=0.5, d=0.1, lam=1e-3, per_class=0)
    with pytest.raises(ValueError, match="0 <= d < c < 1"):
        sdtheory.min_rounds(f, c=0.1, d=0.1, lam=1e-3, per_class=5)
    with pytest.raises(ValueError, match="0 <= d < c < 1"):
        sdtheory.all_correct_rounds(f, c=1.0, d=0.1, lam=1e-3, per_class=5)
    with pytest.raises(ValueError, match="lam"):
        sdtheory.min_rounds(f, c=0.5, d=0.1, lam=-1.0, per_class=5)
    with pytest.raises(ValueError, match="row-stochastic"):
        sdtheory.corruption_condition(np.array([[0.5, 0.4], [0.5, 0.5]]))
    with pytest.raises(ValueError, match="square"):
        sdtheory.margin(np.ones((2, 3)) / 3)
    with pytest.raises(ValueError, match="rounds"):
        sdtheory.pll_accuracy_prediction(f, c=0.5, d=0.1, lam=1e-3, per_class=5, num_rounds=0)


@given(data=st.data(), shape=st.sampled_from(SHAPES), **params)
def test_multi_round_pll_prediction_matches_eigh_pipeline(data, shape, c, dfrac, loglam):
    """Iterated refinement (3 student rounds): type-level prediction = eigh pipeline, round by round."""
    k, n = shape
    counts = data.draw(distinct_counts(k, n))
    d, lam = c * dfrac, 10.0**loglam
    true, given_ = _labels(counts)
    f = sdtheory.empirical_fractions(true, given_, k)
    G = sdtheory.block_gram(true, c=c, d=d)
    prev = np.asarray(sdtheory.sd_outputs(np.eye(k)[given_], lam=lam, rounds=[0], gram=G))[0]
    accs = []
    for _ in range(3):
        t2, srt = _top2_numpy(prev)
        assume((srt[:, 1] - srt[:, 2]).min() > TIE)
        prev = np.asarray(sdtheory.sd_outputs(t2, lam=lam, rounds=[0], gram=G))[0]
        pt = prev[np.arange(true.size), true]
        margin_ = pt - np.where(np.eye(k, dtype=bool)[true], -np.inf, prev).max(-1)
        assume(np.all(np.abs(margin_) > TIE))
        accs.append(np.mean(margin_ > 0))
    pred = sdtheory.pll_accuracy_prediction(f, c=c, d=d, lam=lam, per_class=n, num_rounds=3)
    np.testing.assert_allclose(np.asarray(pred.accuracy), accs, atol=1e-12)
