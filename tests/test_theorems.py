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

import decimal
from decimal import ROUND_FLOOR, Decimal, getcontext, localcontext

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import assume, event, given, strategies as st

import sdtheory
from _traceable import assert_vmap_equals_loop, public_wrapped
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


def _min_rounds_vs_eigh(counts, c, d, lam):
    """``(fractions, min_rounds, per-round all-correct of the eigh path)`` for exact per-class counts.

    Examples whose r* lies beyond the eigh rounds or whose eigh margins are within float64 noise of a tie
    are discarded (``assume``).
    """
    k, n = counts.shape[0], int(counts[0].sum())
    true, given_ = _labels(counts)
    f = sdtheory.empirical_fractions(true, given_, k)
    r_star = sdtheory.min_rounds(f, c=c, d=d, lam=lam, per_class=n)
    assume(r_star < R - 1)
    margins = _eigh_margins(given_, true, c, d, lam, k)
    assume(np.all(np.abs(margins) > TIE))
    return f, r_star, margins > 0


@given(data=st.data(), shape=st.sampled_from(SHAPES), **params)
def test_min_rounds_is_first_all_correct_eigh_round(data, shape, c, dfrac, loglam):
    """Equal global frequencies: min_rounds = first round the eigh path is 100% correct (-1: none)."""
    k, n = shape
    d, lam = c * dfrac, 10.0**loglam
    f, r_star, ok = _min_rounds_vs_eigh(data.draw(doubly_stochastic_counts(k, n)), c, d, lam)
    event("r* = -1 (condition fails)" if r_star < 0 else ("r* = 0" if r_star == 0 else "r* >= 1"))
    assert r_star == (int(np.argmax(ok)) if ok.any() else -1)
    if r_star >= 0:  # and it stays correct (no upper end without a global term)
        assert ok[r_star:].all()
    # The window with the global term agrees.
    assert sdtheory.all_correct_rounds(f, c=c, d=d, lam=lam, per_class=n).first == r_star


@given(data=st.data(), shape=st.sampled_from(SHAPES), c=params["c"], dfrac=st.floats(0.1, 0.9), loglam=params["loglam"])
def test_min_rounds_is_first_all_correct_eigh_round_for_any_fractions(data, shape, c, dfrac, loglam):
    """Unequal global frequencies (sampled labels, d > 0): min_rounds includes the global term and is still the
    first round the eigh path is 100% correct (the equal-frequency formula alone can be a round early)."""
    k, n = shape
    _, r_star, ok = _min_rounds_vs_eigh(data.draw(any_counts(k, n)), c, c * dfrac, 10.0**loglam)
    event("r* = -1" if r_star < 0 else "r* >= 0")
    assert r_star == (int(np.argmax(ok)) if ok.any() else -1)


def test_min_rounds_counts_the_global_term():
    """One label of class 2 flipped to class 1: class 1 is globally more frequent, which delays the flipped
    instance; the equal-frequency formula said round 8, the eigh path is first all correct at round 9."""
    k, n, c, d, lam = 3, 12, 0.25, 0.125, 1e-3
    true, given_ = _labels(np.array([[12, 0, 0], [0, 12, 0], [0, 1, 11]]))
    f = sdtheory.empirical_fractions(true, given_, k)
    ok = _eigh_margins(given_, true, c, d, lam, k) > 0
    assert sdtheory.min_rounds(f, c=c, d=d, lam=lam, per_class=n) == int(np.argmax(ok)) == 9


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
    ok = np.asarray(sdtheory.theorems.all_correct_at(f, rounds, c=c, d=d, lam=lam, per_class=n))
    if w.first < 0:
        assert not ok.any()
    else:
        hi = min(w.last, rounds[-1])
        np.testing.assert_array_equal(np.flatnonzero(ok), np.arange(w.first, hi + 1))


def test_min_rounds_population_worked_example():
    """Worked example (docs/theory.md, section 7): K = 6, n = 100, c = .4, d = .1, lam = 1e-4: SD rounds grow
    with eta, PLL needs one.

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
    assert sdtheory.theorems.margin(f) == float("inf")
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
    assert sdtheory.theorems.margin(f) == (min(occ) if occ else float("inf"))


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
    # Under jax.jit too, and with log-factors whose exp are sdtheory.block.block_factors.
    jitted = jax.jit(jax.vmap(lambda l: sdtheory.min_rounds(Cs[3], c=c, d=d, lam=l, per_class=n)))(lams)
    np.testing.assert_array_equal(jitted, grid[3])
    logs = T.log_block_factors(per_class=n, num_classes=k, c=c, d=d, lam=1e-3)
    a, b, g = sdtheory.block.block_factors(per_class=n, num_classes=k, c=c, d=d, lam=1e-3)
    np.testing.assert_allclose(
        np.exp([logs.log_b, logs.log_b + logs.log_rho, logs.log_b + logs.log_gamma]), [b, a, g], rtol=1e-15
    )
    traced = jax.jit(lambda l: jnp.stack(T.log_block_factors(per_class=n, num_classes=k, c=c, d=d, lam=l)))(1e-3)
    np.testing.assert_allclose(traced, logs, rtol=1e-15)
    # Jitted cores straight on the log-factors, vmapped over fractions and over a grid of lam.
    out = jax.jit(jax.vmap(T.min_rounds_core, in_axes=(0, None)))(Cs, logs)
    np.testing.assert_array_equal(out, grid[:, 0])
    lam_logs = jax.vmap(lambda l: T.log_block_factors(per_class=n, num_classes=k, c=c, d=d, lam=l))(lams)
    out = jax.jit(jax.vmap(T.min_rounds_core, in_axes=(None, 0)))(Cs[3], lam_logs)
    np.testing.assert_array_equal(out, grid[3])


# --------------------------------------------------------------------------
# Numerics: log space at small and huge lam, the round range, scalar lam
# (independent references in 80-digit decimal arithmetic)
# --------------------------------------------------------------------------


def _dec_ctx(prec=80):
    """80 significant digits, the widest exponent range; overflow gives +-Infinity (gamma^e at e ~ 2**63)
    and underflow 0 instead of raising; an invalid operation (inf - inf) still raises."""
    ctx = decimal.Context(
        prec=prec,
        Emin=decimal.MIN_EMIN,
        Emax=decimal.MAX_EMAX,
        traps=[decimal.InvalidOperation, decimal.DivisionByZero],
    )
    return localcontext(ctx)


def _dec_factors(k, n, c, d, lam):
    """(a, b, g) = s/(s + K N lam) of the balanced block model, from the exact values of the float inputs."""
    D = Decimal
    ridge = D(k) * D(k * n) * D(lam)
    s_w = D(1) - D(c)
    s_b = s_w + D(n) * (D(c) - D(d))
    s_g = s_b + D(k * n) * D(d)
    return tuple(s / (s + ridge) for s in (s_w, s_b, s_g))


def _dec_fractions(f):
    return [[Decimal(float(x)) for x in row] for row in np.asarray(f)]


def _dec_rstar(f, k, n, c, d, lam):
    """``(r*, x)``: ``r* = floor(x)``, ``x = log((1 + Delta)/Delta) / log(b/a)``, in decimal arithmetic."""
    with _dec_ctx():
        fr = _dec_fractions(f)
        delta = min(fr[i][i] - fr[i][j] for i in range(k) for j in range(k) if i != j and fr[i][j] > 0)
        a, b, _ = _dec_factors(k, n, c, d, lam)
        x = ((1 + delta) / delta).ln() / (b / a).ln()
        return int(x.to_integral_value(rounding=ROUND_FLOOR)), x


def _dec_all_correct(f, k, n, c, d, lam, rounds):
    """Brute force over instance types (true k, given y) and competitors l: the score formula's differences
    score(k) - score(l) = a^e ([y=k] - [y=l]) + (b^e - a^e)(f_k(k) - f_k(l)) + (g^e - b^e)(f(k) - f(l)) > 0,
    divided by b^e > 0 (so that a^e, b^e, g^e at e ~ 2**63 need not be represented), in decimal arithmetic."""
    with _dec_ctx():
        fr = _dec_fractions(f)
        fg = [sum(fr[i][l] for i in range(k)) / k for l in range(k)]
        a, b, g = _dec_factors(k, n, c, d, lam)
        rho, gamma = a / b, g / b
        out = []
        for r in rounds:
            e = int(r) + 1
            re, ge = rho**e, gamma**e
            ok = True
            for kk in range(k):
                for y in range(k):
                    if fr[kk][y] == 0:
                        continue
                    for l in range(k):
                        if l == kk:
                            continue
                        F = fg[kk] - fg[l]
                        glob = (ge - 1) * F if F != 0 else 0
                        ok &= re * ((y == kk) - (y == l)) + (1 - re) * (fr[kk][kk] - fr[kk][l]) + glob > 0
            out.append(bool(ok))
        return np.array(out)


def _off_boundary(x, tol=1e-6):
    """The real-valued boundary x is not within tol of an integer: float64 can decide the floor."""
    frac = x - x.to_integral_value(rounding=ROUND_FLOOR)
    return tol < frac < 1 - tol


SYM3 = dict(c=0.4, d=0.1, per_class=50)


@pytest.mark.parametrize("lam", [1e-12, 3e-13, 1e-13, 1e-14, 1.31e-15])
def test_min_rounds_small_lam_matches_decimal(lam):
    """Small lam: r* ~ 1/lam. The factors are floats within ~1e-10 of 1, so log(a) - log(b) of them lost
    most digits (lam = 1e-12 gave 1436714008 instead of 1436714145); the log-space factors keep them."""
    k = 3
    C = sdtheory.corruption_matrix("symmetric", k, 0.3)
    expected, x = _dec_rstar(C, k, SYM3["per_class"], SYM3["c"], SYM3["d"], lam)
    assert _off_boundary(x) and expected < T.MAX_ROUND
    if lam == 1e-12:
        assert expected == 1436714145  # the fuzz report's reference value
    assert sdtheory.min_rounds(C, lam=lam, **SYM3) == expected
    assert sdtheory.all_correct_rounds(C, lam=lam, **SYM3) == (expected, T.UNBOUNDED)
    rounds = [expected - 137, expected - 1, expected, expected + 1]
    got = sdtheory.theorems.all_correct_at(C, rounds, lam=lam, **SYM3)
    np.testing.assert_array_equal(got, [False, False, True, True])
    np.testing.assert_array_equal(got, _dec_all_correct(C, k, SYM3["per_class"], SYM3["c"], SYM3["d"], lam, rounds))


def test_window_small_lam_with_global_term_matches_decimal():
    """Unequal global frequencies at small lam: the window's ends against decimal brute force at each end."""
    k, n, c, d, lam = 3, 20, 0.5, 0.2, 1e-11
    f = np.array([[16, 2, 2], [6, 12, 2], [6, 2, 12]]) / 20  # label 0 globally frequent: the window closes
    w = sdtheory.all_correct_rounds(f, c=c, d=d, lam=lam, per_class=n)
    assert 0 < w.first < w.last < T.MAX_ROUND
    rounds = [w.first - 1, w.first, w.last, w.last + 1]
    np.testing.assert_array_equal(_dec_all_correct(f, k, n, c, d, lam, rounds), [False, True, True, False])
    np.testing.assert_array_equal(
        sdtheory.theorems.all_correct_at(f, rounds, c=c, d=d, lam=lam, per_class=n), [False, True, True, False]
    )


HUGE = [1e305, 1e308, float(np.finfo(float).max)]


@pytest.mark.parametrize("lam", HUGE)
def test_huge_lam_matches_decimal(lam):
    """lam >= 1e305: the factors s/(s + K N lam) underflow to 0 (and K N lam overflows at 1e308), so
    log a - log b was -inf or NaN; in log space a/b -> s_w/s_b and the answers are finite and exact."""
    k, n, c, d = 3, 2, 0.3, 0.25  # s_b/s_w = 8/7 close to 1: r* = 7 even at infinite lam
    C = sdtheory.corruption_matrix("symmetric", k, 0.3)
    expected, x = _dec_rstar(C, k, n, c, d, lam)
    assert _off_boundary(x) and expected == 7
    kw = dict(c=c, d=d, lam=lam, per_class=n)
    assert sdtheory.min_rounds(C, **kw) == expected
    assert sdtheory.all_correct_rounds(C, **kw) == (expected, T.UNBOUNDED)
    rounds = np.arange(20)
    ref = _dec_all_correct(C, k, n, c, d, lam, rounds)
    np.testing.assert_array_equal(sdtheory.theorems.all_correct_at(C, rounds, **kw), ref)
    # a window that closes (unequal global frequencies), against the brute force round by round
    f = np.array([[0.75, 0.125, 0.125], [0.25, 0.625, 0.125], [0.25, 0.125, 0.625]])
    ref = _dec_all_correct(f, k, n, c, 0.05, lam, rounds)
    got = sdtheory.theorems.all_correct_at(f, rounds, c=c, d=0.05, lam=lam, per_class=n)
    np.testing.assert_array_equal(got, ref)
    w = sdtheory.all_correct_rounds(f, c=c, d=0.05, lam=lam, per_class=n)
    np.testing.assert_array_equal(ref, [w.first <= r <= w.last for r in rounds])
    assert ref.any() and not ref[-1]
    logs = T.log_block_factors(per_class=n, num_classes=k, c=c, d=d, lam=lam)
    assert np.all(np.isfinite(logs))


@pytest.mark.parametrize(
    "k,n,c,d",
    [
        (4, 30, 0.45, 0.1),
        (3, 2, 0.3, 0.25),
        (3, 20, 0.5, 1e-10),
        (5, 7, 0.999999, 0.2),
        (2, 1, 0.1, 0.0),
        # negative d (g < b): the digits-like fit, and s_g = 0.02 near the positive-definite bound (g/b tiny)
        (4, 10, 0.4, -0.05),
        (10, 12, 0.372, -0.04),
        (3, 100, 0.5, -0.2524),
        (3, 20, 0.5, -1e-10),
    ],
)
def test_log_block_factors_match_decimal_everywhere(k, n, c, d):
    """log b, log(a/b), log(g/b) to a few ulps relative, from lam = 1e-300 to the float64 maximum, also
    where the eigenvalues nearly coincide (d = 1e-10: g/b - 1 ~ 1e-14) or differ by 1e6 (c near 1)."""
    for lam in [1e-300, 1e-200, 1e-30, 1e-12, 1e-4, 1.0, 1e10, 1e100, 1e300, 1e305, 1e307] + HUGE:
        got = T.log_block_factors(per_class=n, num_classes=k, c=c, d=d, lam=lam)
        with _dec_ctx(prec=400):  # ln(1 - 1e-300) needs ~320 digits beyond the leading 1
            a, b, g = _dec_factors(k, n, c, d, lam)
            ref = [float(b.ln()), float((a / b).ln()), float((g / b).ln())]
        np.testing.assert_allclose(list(got), ref, rtol=1e-14, atol=0, err_msg=str(lam))


def test_rounds_beyond_the_searched_range_raise_naming_lam():
    """r* > MAX_ROUND = 2**40 - 1: a ValueError naming lam (the old code clipped to ~2**40, or reported an
    empty window, i.e. "never all correct"); the kernels and vmapped calls return BEYOND_RANGE."""
    k, n, c, d = 3, 50, 0.4, 0.1
    C = sdtheory.corruption_matrix("symmetric", k, 0.3)
    lam_in, lam_out = 1.31e-15, 1.3e-15  # r* just below and just above 2**40 - 1
    r_in, _ = _dec_rstar(C, k, n, c, d, lam_in)
    r_out, _ = _dec_rstar(C, k, n, c, d, lam_out)
    assert r_in <= T.MAX_ROUND < r_out
    kw = dict(c=c, d=d, per_class=n)
    assert sdtheory.min_rounds(C, lam=lam_in, **kw) == r_in
    for fn in (sdtheory.min_rounds, sdtheory.all_correct_rounds, sdtheory.max_rounds):
        for lam in (lam_out, 1e-20, 1e-300, 5e-324):
            with pytest.raises(ValueError, match=r"lam = .*MAX_ROUND|MAX_ROUND.*lam ="):
                fn(C, lam=lam, **kw)
    # the kernels: the sentinel
    logs = T.log_block_factors(per_class=n, num_classes=k, c=c, d=d, lam=lam_out)
    assert int(T.min_rounds_core(jnp.asarray(C), logs)) == T.BEYOND_RANGE
    w = T.all_correct_rounds_core(jnp.asarray(C), logs)
    assert (int(w.first), int(w.last)) == (T.BEYOND_RANGE, T.UNBOUNDED)
    # vmapped public calls cannot raise: they return the sentinel
    lams = jnp.array([1e-3, lam_in, lam_out])
    got = jax.vmap(lambda l: sdtheory.min_rounds(C, lam=l, **kw))(lams)
    np.testing.assert_array_equal(got, [sdtheory.min_rounds(C, lam=1e-3, **kw), r_in, T.BEYOND_RANGE])
    # all_correct_at answers at any round, the decimal brute force agrees
    rounds = [r_out - 1, r_out]
    np.testing.assert_array_equal(sdtheory.theorems.all_correct_at(C, rounds, lam=lam_out, **kw), [False, True])
    np.testing.assert_array_equal(_dec_all_correct(C, k, n, c, d, lam_out, rounds), [False, True])


def test_window_closing_beyond_the_range_is_reported():
    """The window opens in range but closes after MAX_ROUND (d = 1e-10: g/b - 1 ~ 1e-14): the old code
    reported last = UNBOUNDED ("never closes"); now last = BEYOND_RANGE, and decimal brute force confirms
    round MAX_ROUND is all correct and round 2**62 is not. With d = 1e-9 it closes in range, at round
    ~4e11, and both ends agree with decimal brute force."""
    k, n, c, lam = 3, 20, 0.5, 1e-4
    eps = 2.0**-6  # dyadic: the global frequencies are exact in float64
    f = np.array([[0.75, 0.125, 0.125], [0.125, 0.75, 0.125], [0.125 + eps, 0.125 - eps, 0.75]])
    w = sdtheory.all_correct_rounds(f, c=c, d=1e-9, lam=lam, per_class=n)
    assert 0 < w.first < 100 and 10**11 < w.last < T.MAX_ROUND
    rounds = [w.first - 1, w.first, w.last, w.last + 1]
    np.testing.assert_array_equal(_dec_all_correct(f, k, n, c, 1e-9, lam, rounds), [False, True, True, False])
    d = 1e-10
    kw = dict(c=c, d=d, lam=lam, per_class=n)
    first, last = sdtheory.all_correct_rounds(f, **kw)
    assert last == T.BEYOND_RANGE == sdtheory.max_rounds(f, **kw)
    logs = T.log_block_factors(per_class=n, num_classes=k, c=c, d=d, lam=lam)
    assert tuple(int(x) for x in T.all_correct_rounds_core(jnp.asarray(f), logs)) == (first, last)
    rounds = [first - 1, first, T.MAX_ROUND, 2**62]  # all correct at round 2**40 - 1, closed at 2**62
    ref = _dec_all_correct(f, k, n, c, d, lam, rounds)
    np.testing.assert_array_equal(ref, [False, True, True, False])
    np.testing.assert_array_equal(sdtheory.theorems.all_correct_at(f, rounds, **kw), ref)


@pytest.mark.parametrize("lam", [1e-6, 1e-3, 1.0, 1e305])
def test_all_correct_at_huge_round_indices_match_decimal(lam):
    """Round indices up to the int64 maximum: float64 e = r + 1 (rounded above 2**53), against decimal."""
    k, n, c, d = 3, 20, 0.5, 0.2
    rounds = np.array([0, 3, 2**31, 2**40, 2**53 - 1, 2**53 + 1, 2**62, 2**63 - 1], dtype=np.int64)
    cases = [
        sdtheory.corruption_matrix("symmetric", k, 0.3),  # never closes
        np.array([[0.75, 0.125, 0.125], [0.25, 0.625, 0.125], [0.25, 0.125, 0.625]]),  # closes
        np.array([[0.5, 0.5, 0.0], [0.0, 0.75, 0.25], [0.25, 0.0, 0.75]]),
    ]  # condition fails
    for f in cases:
        got = sdtheory.theorems.all_correct_at(f, rounds, c=c, d=d, lam=lam, per_class=n)
        np.testing.assert_array_equal(got, _dec_all_correct(f, k, n, c, d, lam, rounds), err_msg=str(f))
    np.testing.assert_array_equal(
        sdtheory.theorems.all_correct_at(cases[0], rounds, c=c, d=d, lam=lam, per_class=n)[-4:], True
    )
    with pytest.raises(ValueError, match="rounds"):
        sdtheory.theorems.all_correct_at(cases[0], [2**63], c=c, d=d, lam=lam, per_class=n)
    with pytest.raises(ValueError, match="rounds"):
        sdtheory.theorems.all_correct_at(cases[0], np.array([2**63], dtype=np.uint64), c=c, d=d, lam=lam, per_class=n)


def test_non_scalar_lam_is_refused_with_a_clear_error():
    C = sdtheory.corruption_matrix("symmetric", 3, 0.3)
    kw = dict(c=0.4, d=0.1, per_class=10)
    calls = [
        sdtheory.min_rounds,
        sdtheory.all_correct_rounds,
        sdtheory.max_rounds,
        sdtheory.pll_condition,
        sdtheory.pll_accuracy_prediction,
        lambda f, **k: sdtheory.theorems.all_correct_at(f, [0, 1], **k),
    ]
    for lam in (np.array([1e-3, 1e-2]), [1e-3], jnp.ones((2, 2)) * 1e-3):
        for fn in calls:
            with pytest.raises(ValueError, match="lam must be a scalar"):
                fn(C, lam=lam, **kw)
    # a non-scalar *traced* lam (jit without vmap) too; vmap over lam keeps working
    with pytest.raises(ValueError, match="lam must be a scalar"):
        jax.jit(lambda l: sdtheory.min_rounds(C, lam=l, **kw))(jnp.array([1e-3, 1e-2]))
    got = jax.vmap(lambda l: sdtheory.min_rounds(C, lam=l, **kw))(jnp.array([1e-3, 1e-2]))
    assert got.tolist() == [sdtheory.min_rounds(C, lam=1e-3, **kw), sdtheory.min_rounds(C, lam=1e-2, **kw)]


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


def test_pll_prediction_refuses_k_above_the_memory_bound():
    """K = 1000 would allocate ~22 GiB of (K, K, K) arrays: refused before anything of that size is built,
    naming fractions, K and the memory; the bound 24 K**3 bytes covers XLA's own memory analysis."""
    assert T.PLL_MAX_CLASSES == 447
    assert 24 * 447**3 <= T.PLL_MEMORY_LIMIT < 24 * 448**3
    kw = dict(c=0.4, d=0.1, lam=1e-3, per_class=5)
    for k in (448, 1000):
        f = np.eye(k)
        with pytest.raises(ValueError, match=rf"fractions has K = {k} classes.*GiB.*K <= 447"):
            sdtheory.pll_accuracy_prediction(f, **kw)
        with pytest.raises(ValueError, match=rf"fractions has K = {k}"):
            sdtheory.pll_condition(f, **kw)
    # the estimate: XLA's temporaries, arguments and outputs of the kernel at a moderate K
    k = 60
    f = jnp.asarray(sdtheory.corruption_matrix("symmetric", k, 0.3))
    logs = T.LogFactors(*(jnp.asarray(x) for x in T.log_block_factors(**kw, num_classes=k)))
    for fn in (lambda f, l: T.pll_prediction_core(f, l, 1), T.pll_condition_core):
        mem = jax.jit(fn).lower(f, logs).compile().memory_analysis()
        if mem is None:  # pragma: no cover - backend without a memory analysis
            pytest.skip("no XLA memory analysis on this backend")
        used = mem.temp_size_in_bytes + mem.argument_size_in_bytes + mem.output_size_in_bytes
        assert used <= 24 * k**3


def _has_kkk(jaxpr, k):
    """Some equation of the jaxpr, or of a jaxpr nested in its parameters, produces a (..., K, K, K) array."""
    for eqn in jaxpr.eqns:
        if any(tuple(getattr(v.aval, "shape", ()))[-3:] == (k, k, k) for v in eqn.outvars):
            return True
        for p in eqn.params.values():
            for item in p if isinstance(p, (list, tuple)) else [p]:
                inner = item if hasattr(item, "eqns") else getattr(item, "jaxpr", None)
                if inner is not None and hasattr(inner, "eqns") and _has_kkk(inner, k):
                    return True
    return False


def test_engine_computes_the_pll_theory_only_with_a_pll_method():
    """Without a PLL method the cell builds no (K, K, K) array and fills the PLL theory with NaN / False;
    every other theory output is the same as with a PLL method."""
    from sdtheory import montecarlo as mc
    from sdtheory.montecarlo.cell import make_point, make_shared, simulate_cell

    k, etas = 7, [0.0, 0.3, 0.6]
    common = dict(num_classes=k, per_class=6, c=0.45, d=0.1, lam=2e-3, num_rounds=4)
    sd_only = mc.make_config(methods=("sd_closed",), **common)
    with_pll = mc.make_config(methods=("sd_closed", "pll_closed"), **common)
    with jax.enable_x64(True):
        for cfg, expect in ((sd_only, False), (with_pll, True)):
            shared, point = make_shared(cfg), make_point(cfg, cfg.lam, cfg.c, cfg.d)
            jpr = jax.make_jaxpr(lambda e, key: simulate_cell(cfg, shared, point, e, key))(
                jnp.asarray(0.3), jax.random.PRNGKey(0)
            )
            assert _has_kkk(jpr.jaxpr, k) == expect
    a = mc.run_grid(sd_only, etas, num_seeds=2, seed=3).theory
    b = mc.run_grid(with_pll, etas, num_seeds=2, seed=3).theory
    for name in a._fields:
        x, y = np.asarray(getattr(a, name)), np.asarray(getattr(b, name))
        if "pll" in name:
            assert x.shape == y.shape
            assert np.all(np.isnan(x)) if "accuracy" in name else not x.any()
        else:
            np.testing.assert_array_equal(x, y, err_msg=name)


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
        sdtheory.theorems.margin(np.ones((2, 3)) / 3)
    with pytest.raises(ValueError, match="rounds"):
        sdtheory.pll_accuracy_prediction(f, c=0.5, d=0.1, lam=1e-3, per_class=5, num_rounds=0)
    with pytest.raises(ValueError, match="needs num_rounds >= 2"):  # round 0 is the teacher, as everywhere
        sdtheory.pll_accuracy_prediction(f, c=0.5, d=0.1, lam=1e-3, per_class=5, num_rounds=1)
    # the PLL rounds are unrolled when compiled: a huge count is refused at once instead of hanging
    for big in (T.PLL_MAX_ROUNDS + 2, np.uint64(2**64 - 1)):
        with pytest.raises(ValueError, match="num_rounds must be <= 101"):
            sdtheory.pll_accuracy_prediction(f, c=0.5, d=0.1, lam=1e-3, per_class=5, num_rounds=big)
    # the theorem functions call their matrix "fractions"
    for fn in (sdtheory.min_rounds, sdtheory.all_correct_rounds, sdtheory.pll_condition):
        with pytest.raises(ValueError, match="fractions"):
            fn(np.array([[0.5, 0.4], [0.5, 0.5]]), c=0.5, d=0.1, lam=1e-3, per_class=5)


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
    pred = sdtheory.pll_accuracy_prediction(f, c=c, d=d, lam=lam, per_class=n, num_rounds=4)
    np.testing.assert_allclose(np.asarray(pred.accuracy), accs, atol=1e-12)


# --------------------------------------------------------------------------
# Ties at the condition threshold: one rule (TIE_TOL) for the condition, the margin and the rounds
# --------------------------------------------------------------------------


def _exact_matrix(kind, k, eta, clusters=None):
    """The corruption matrix in exact rational arithmetic, entry by entry from the family's definition."""
    from fractions import Fraction

    eta = Fraction(eta)
    C = [[Fraction(0)] * k for _ in range(k)]
    for i in range(k):
        if kind == "cc":
            others = [j for j in range(k) if j != i and clusters[j] == clusters[i]]
            C[i][i] = 1 - eta if others else Fraction(1)
            for j in others:
                C[i][j] = eta / len(others)
            continue
        C[i][i] = 1 - eta
        for j in range(k):
            if j == i:
                continue
            if kind == "symmetric":
                C[i][j] = eta / (k - 1)
            elif kind == "asymmetric":
                C[i][j] = eta / k + (eta / k if j == (i + 1) % k else 0)
            elif kind == "pair":
                C[i][j] = eta if j == (i + 1) % k else Fraction(0)
    return C


def _exact_margin(C):
    """``min over k, occurring l != k of C_kk - C_kl`` in exact arithmetic (``None`` without corrupted labels)."""
    k = len(C)
    gaps = [C[i][i] - C[i][j] for i in range(k) for j in range(k) if j != i and C[i][j] > 0]
    return min(gaps) if gaps else None


def _rational_threshold(kind, k, clusters=None):
    from fractions import Fraction

    if kind == "symmetric":
        return Fraction(k - 1, k)
    if kind == "asymmetric":
        return Fraction(k, k + 2)
    if kind == "pair":
        return Fraction(1, 2)
    m = min(s for s in np.bincount(clusters) if s >= 2)
    return Fraction(m - 1, m)


THRESHOLD_CASES = [(kind, k, None) for kind in ("symmetric", "asymmetric", "pair") for k in (2, 3, 4, 6, 7, 200)]
THRESHOLD_CASES += [
    ("cc", 6, [0, 0, 0, 1, 1, 2]),
    ("cc", 7, [0, 0, 0, 1, 1, 1, 2]),
    ("cc", 9, [0, 0, 0, 0, 1, 1, 1, 2, 2]),
]


@pytest.mark.parametrize("kind,k,clusters", THRESHOLD_CASES)
def test_condition_threshold_is_a_tie_and_just_inside_it_holds(kind, k, clusters):
    """At eta = condition_threshold a wrong label is exactly as frequent as the true one (exact rational
    arithmetic): no round is all correct, whatever the sign of the float roundoff in C. Just inside (a gap of
    ~1e-7, far above TIE_TOL) the condition holds and r* is the decimal first round of the exact margin."""
    n, c, d, lam = 10, 0.4, 0.1, 1e-2
    kw = dict(c=c, d=d, lam=lam, per_class=n)
    th = sdtheory.condition_threshold(kind, k, clusters=clusters)
    exact_th = _rational_threshold(kind, k, clusters)
    assert th == float(exact_th)
    assert _exact_margin(_exact_matrix(kind, k, exact_th, clusters)) == 0  # a tie, exactly
    C = sdtheory.corruption_matrix(kind, k, th, clusters=clusters)
    assert sdtheory.corruption_condition(C) is False
    assert sdtheory.theorems.margin(C) == 0.0
    assert sdtheory.min_rounds(C, **kw) == -1
    assert sdtheory.all_correct_rounds(C, **kw) == (-1, -1)
    assert sdtheory.max_rounds(C, **kw) == -1
    assert not np.any(sdtheory.theorems.all_correct_at(C, [0, 1, 10, 10**6, 2**40], **kw))
    if 3 <= k <= 10:  # the PLL student needs K >= 3 (refused for K = 2)
        assert sdtheory.pll_condition(C, **kw) is False

    eta = th - 1e-7
    delta = _exact_margin(_exact_matrix(kind, k, eta, clusters))
    assert delta > 1e-8  # clearly above TIE_TOL
    C = sdtheory.corruption_matrix(kind, k, eta, clusters=clusters)
    assert sdtheory.corruption_condition(C) is True
    assert sdtheory.theorems.margin(C) == pytest.approx(float(delta), rel=1e-7)
    want = _decimal_first_round(Decimal(delta.numerator) / Decimal(delta.denominator), k, n, c, d, lam)
    assert sdtheory.min_rounds(C, **kw) == want
    assert sdtheory.all_correct_rounds(C, **kw).first == want


@pytest.mark.parametrize("gap,tied", [(0.0, True), (3e-11, True), (-3e-11, True), (1e-9, False), (-1e-9, False)])
def test_gaps_within_tie_tol_are_ties_in_every_theorem_function(gap, tied):
    """A fraction gap ``f_k(k) - f_k(l)`` within TIE_TOL = 1e-10 is a tie: the condition fails, the margin
    is 0 and no round is all correct; beyond it the sign decides (decimal reference for r*)."""
    k, n, c, d, lam = 3, 10, 0.4, 0.1, 1e-2
    kw = dict(c=c, d=d, lam=lam, per_class=n)
    # doubly stochastic: diagonal 1/3 + 2 gap/3, off-diagonal 1/3 - gap/3, so f_k(k) - f_k(l) = gap
    f = np.full((k, k), 1 / 3 - gap / 3) + np.eye(k) * gap
    assert sdtheory.TIE_TOL == 1e-10
    if tied or gap < 0:
        assert sdtheory.corruption_condition(f) is False
        assert sdtheory.theorems.margin(f) == (0.0 if tied else pytest.approx(gap, rel=1e-5))
        assert sdtheory.min_rounds(f, **kw) == -1
        assert sdtheory.all_correct_rounds(f, **kw) == (-1, -1)
        assert not np.any(sdtheory.theorems.all_correct_at(f, [0, 100, 10**6], **kw))
        return
    assert sdtheory.corruption_condition(f) is True
    assert sdtheory.theorems.margin(f) == pytest.approx(gap, rel=1e-5)
    want = _decimal_first_round(Decimal(float(f[0, 0])) - Decimal(float(f[0, 1])), k, n, c, d, lam)
    assert sdtheory.min_rounds(f, **kw) == want
    assert sdtheory.all_correct_rounds(f, **kw).first == want


@pytest.mark.parametrize(
    "kind,k",
    [
        ("symmetric", 3),
        pytest.param("symmetric", 7, marks=pytest.mark.slow),
        pytest.param("asymmetric", 3, marks=pytest.mark.slow),
    ],
)
def test_exact_model_agrees_at_the_threshold(kind, k):
    """The exact (softmax) model decides the threshold as the linearised one: never all correct."""
    C = sdtheory.corruption_matrix(kind, k, sdtheory.condition_threshold(kind, k))
    kw = dict(c=0.4, d=0.1, lam=1e-2, per_class=10)
    assert sdtheory.min_rounds(C, **kw) == -1
    assert sdtheory.min_rounds(C, model="exact", search_rounds=16, **kw) == -1


# --------------------------------------------------------------------------
# Transformations: the traceable theorem functions under jax.vmap in JAX's default 32-bit mode
# --------------------------------------------------------------------------

_KW = dict(c=0.4, d=0.1, per_class=10)
_FRACS = np.stack([np.asarray(sdtheory.corruption_matrix("asymmetric", 3, e)) for e in np.linspace(0.0, 0.7, 6)])
_FRACS[:, 0] = _FRACS[:, 0, [1, 0, 2]]  # class 0 favours label 1 in some rows: unequal global frequencies
_LAMS = np.geomspace(1e-4, 1e-1, 5)  # a NumPy float64 batch
_CORR = np.array([[0.5, 0.1, 0.2], [0.1, 0.4, 0.1], [0.2, 0.1, 0.45]])


def _per_fractions_and_lam(fn):
    """``fn(f, lam)`` vmapped over the fractions (at lam = 1e-2) and over lam (at one matrix)."""
    return [(lambda f: fn(f, 1e-2), _FRACS), (lambda lam: fn(_FRACS[3], lam), _LAMS)]


#: Every public function of sdtheory.theorems that the docs call traceable: (function of one element, batch).
THEOREMS_TRACEABLE = {
    "corruption_condition": [(sdtheory.corruption_condition, _FRACS)],
    "margin": [(sdtheory.theorems.margin, _FRACS)],
    "min_rounds": _per_fractions_and_lam(lambda f, lam: sdtheory.min_rounds(f, lam=lam, **_KW))
    + [(lambda f: sdtheory.min_rounds(f, corr=_CORR, lam=1e-2, per_class=10, search_rounds=40), _FRACS)],
    "all_correct_rounds": _per_fractions_and_lam(lambda f, lam: sdtheory.all_correct_rounds(f, lam=lam, **_KW)),
    "max_rounds": _per_fractions_and_lam(lambda f, lam: sdtheory.max_rounds(f, lam=lam, **_KW)),
    "all_correct_at": _per_fractions_and_lam(
        lambda f, lam: sdtheory.theorems.all_correct_at(f, [0, 3, 50], lam=lam, **_KW)
    ),
    "pll_condition": _per_fractions_and_lam(lambda f, lam: sdtheory.pll_condition(f, lam=lam, **_KW)),
    "pll_accuracy_prediction": _per_fractions_and_lam(
        lambda f, lam: sdtheory.pll_accuracy_prediction(f, lam=lam, num_rounds=3, **_KW)
    ),
    "log_block_factors": [(lambda lam: T.log_block_factors(num_classes=3, lam=lam, **_KW), _LAMS)],
}
#: Public functions of sdtheory.theorems that refuse traced input, with the kernel their TypeError names.
THEOREMS_CONCRETE = {"finite_sample_prediction": "sdtheory.reduced.finite_sample_core"}


def test_every_public_theorem_function_is_traceable_or_refuses_traced_input():
    assert public_wrapped(T) == set(THEOREMS_TRACEABLE) | set(THEOREMS_CONCRETE)


@pytest.mark.parametrize("name", sorted(THEOREMS_TRACEABLE))
def test_traceable_theorem_functions_vmap_over_a_numpy_float64_batch(name):
    """jax.vmap over a NumPy float64 batch in JAX's default 32-bit mode equals the per-element loop."""
    for fn, batch in THEOREMS_TRACEABLE[name]:
        assert_vmap_equals_loop(fn, batch, rtol=1e-13)


def test_concrete_only_theorem_functions_refuse_traced_input_naming_the_kernel():
    C = np.asarray(sdtheory.corruption_matrix("symmetric", 3, 0.3))
    kw = dict(c=0.4, d=0.1, per_class=10, num_rounds=2, num_draws=8)
    with pytest.raises(TypeError, match="lam is a traced value.*sdtheory.reduced.finite_sample_core"):
        jax.vmap(lambda lam: sdtheory.finite_sample_prediction(C, lam=lam, **kw))(_LAMS)
    with pytest.raises(TypeError, match="C is a traced value.*sdtheory.reduced.finite_sample_core"):
        jax.vmap(lambda f: sdtheory.finite_sample_prediction(f, lam=1e-2, **kw))(_FRACS)


def test_exact_model_refuses_traced_input_unless_failures_are_flagged():
    """model='exact' checks convergence (on_failure='raise'): under vmap/jit it cannot, so it says so, before
    solving anything, instead of skipping the check."""
    kw = dict(c=0.4, d=0.1, per_class=10, model="exact")
    calls = {
        "sdtheory.reduced.all_correct_search_core": lambda f, lam: sdtheory.min_rounds(f, lam=lam, **kw),
        "sdtheory.reduced.type_pll_core": lambda f, lam: sdtheory.pll_accuracy_prediction(f, lam=lam, **kw),
    }
    for kernel, fn in calls.items():
        with pytest.raises(TypeError, match=f"fractions is a traced value.*on_failure='flag'.*{kernel}"):
            jax.vmap(lambda f: fn(f, 1e-2))(_FRACS)
        with pytest.raises(TypeError, match=f"lam is a traced value.*{kernel}"):
            jax.vmap(lambda lam: fn(_FRACS[2], lam))(_LAMS)
        with pytest.raises(TypeError, match=f"inside jax.jit.*{kernel}"):
            jax.jit(lambda: fn(_FRACS[2], 1e-2))()


# --------------------------------------------------------------------------
# Memory of the type-level problem (model="exact", corr=, finite samples)
# --------------------------------------------------------------------------


def test_type_problem_memory_bound_refuses_large_k_before_allocating():
    """K = 200 has 40,000 label types: dense (T, T) arrays of ~36 GiB. Refused at once, naming the argument,
    the size and the largest K that fits (the estimate: next test)."""
    import time

    from sdtheory import reduced as Rd

    assert Rd.TYPE_MAX_CLASSES == 88
    assert Rd.type_problem_bytes(88**2, 88) <= Rd.TYPE_MEMORY_LIMIT < Rd.type_problem_bytes(89**2, 89)
    kw = dict(c=0.4, d=0.1, lam=1e-3, per_class=10)
    for k in (89, 200):
        C = sdtheory.corruption_matrix("symmetric", k, 0.3)
        corr = np.where(np.eye(k, dtype=bool), 0.4, 0.1)
        calls = {
            "fractions": [
                lambda: sdtheory.min_rounds(C, model="exact", **kw),
                lambda: sdtheory.all_correct_rounds(C, model="exact", **kw),
                lambda: sdtheory.max_rounds(C, corr=corr, lam=1e-3, per_class=10),
                lambda: sdtheory.pll_accuracy_prediction(C, model="exact", **kw),
            ],
            "C": [lambda: sdtheory.finite_sample_prediction(C, num_rounds=2, **kw)],
            "counts": [lambda: sdtheory.block_type_outputs(10 * C, c=0.4, d=0.1, lam=1e-3, num_rounds=2)],
        }
        for name, fns in calls.items():
            for fn in fns:
                start = time.perf_counter()
                with pytest.raises(ValueError, match=rf"{name} has K = {k} classes.*GiB.*K <= 88"):
                    fn()
                assert time.perf_counter() - start < 1.0
    # many rounds of a small problem count too
    with pytest.raises(ValueError, match=r"counts has K = 20 classes.*and 20000 rounds"):
        sdtheory.block_type_outputs(np.eye(20) * 5, c=0.4, d=0.1, lam=1e-3, num_rounds=20000)


@pytest.mark.slow
def test_type_problem_memory_estimate_covers_xla_memory_analysis():
    """XLA's temporaries, arguments and outputs of the type problem's programs stay within the estimate."""
    from sdtheory import reduced as Rd

    k = 8
    cls, tgt = Rd.label_types(k)
    R = jnp.asarray(Rd.corr_from_cd(0.4, 0.1, k))
    counts = jnp.full((k * k,), 0.5)
    ts = Rd.type_spectrum_core(R, cls, counts)
    lam = jnp.asarray(1e-3)
    programs = [
        (Rd.type_spectrum_core.lower(R, cls, counts), 1),
        (Rd.all_correct_search_core.lower(ts, tgt, lam, model="exact", stop_at_first=True), 1),
        (Rd.all_correct_search_core.lower(ts, tgt, lam, model="exact", solver="newton-cg"), 1),
        (Rd.type_pll_core.lower(ts, tgt, lam, model="exact", num_rounds=3, loss="gce"), 4),
    ]
    for lowered, rounds in programs:
        mem = lowered.compile().memory_analysis()
        if mem is None:  # pragma: no cover - backend without a memory analysis
            pytest.skip("no XLA memory analysis on this backend")
        used = mem.temp_size_in_bytes + mem.argument_size_in_bytes + mem.output_size_in_bytes
        assert used <= Rd.type_problem_bytes(k * k, k, rounds)


def test_pll_theorems_need_three_classes():
    # the type-level PLL prediction and condition once returned an accuracy of 0 for K = 2
    f = np.array([[0.7, 0.3], [0.3, 0.7]])
    with pytest.raises(ValueError, match="PLL student needs K >= 3"):
        sdtheory.pll_condition(f, c=0.4, d=0.1, lam=1e-3, per_class=50)
    with pytest.raises(ValueError, match="PLL student needs K >= 3"):
        sdtheory.pll_accuracy_prediction(f, c=0.4, d=0.1, lam=1e-3, per_class=50)


# --------------------------------------------------------------------------
# Negative cross-class correlation d (block models fitted to centred features)
# --------------------------------------------------------------------------


def _numpy_block_gram(true, c, d):
    g = np.where(true[:, None] == true[None, :], c, d).astype(float)
    np.fill_diagonal(g, 1.0)
    return g


def _numpy_closed_form(true, given_, k, c, d, lam, rounds):
    """Closed-form student outputs P_r = 1/K + U diag((s/(s + K N lam))^(r+1)) U^T (T - 1/K), from
    numpy.linalg.eigh of the explicit block Gram, and the (R,) strict margins min_i P(true) - max_{l != true}."""
    s, U = np.linalg.eigh(_numpy_block_gram(true, c, d))
    q = s / (s + k * true.size * lam)
    coef = U.T @ (np.eye(k)[given_] - 1.0 / k)
    e = np.asarray(rounds, dtype=float)[:, None, None] + 1.0
    P = 1.0 / k + np.einsum("ij,rjl->ril", U, q[None, :, None] ** e * coef[None])
    pt = np.take_along_axis(P, true[None, :, None], axis=2)[..., 0]
    other = np.where(np.eye(k, dtype=bool)[true][None], -np.inf, P).max(-1)
    return P, s, (pt - other).min(axis=1)


NEG_CASES = [
    # (K, n, c, d, per-class counts row (circulant: doubly stochastic), lam)
    (4, 10, 0.4, -0.05, [7, 2, 1, 0], 1e-3),
    (10, 12, 0.372, -0.040, [8, 2, 1, 1, 0, 0, 0, 0, 0, 0], 1e-4),  # the digits' fitted c, d
]


@pytest.mark.parametrize("k,n,c,d,row,lam", NEG_CASES)
def test_negative_d_matches_numpy_eigh_of_the_explicit_gram(k, n, c, d, row, lam):
    """d < 0: the block spectrum, block_outputs and the theorems (r*, the window, all_correct_at, the
    condition) against numpy.linalg.eigh of the explicit Gram and the closed form round by round."""
    counts = np.stack([np.roll(row, i) for i in range(k)])
    true, given_ = _labels(counts)
    f = sdtheory.empirical_fractions(true, given_, k)
    P, s, margins = _numpy_closed_form(true, given_, k, c, d, lam, ROUNDS)
    # the spectrum: three eigenvalues with multiplicities K(n-1), K-1, 1; s_g < s_b because d < 0
    s_w, s_b, s_g = sdtheory.block.balanced_block_eigenvalues(per_class=n, num_classes=k, c=c, d=d)
    np.testing.assert_allclose(
        np.sort(s), np.sort(np.repeat([s_w, s_b, s_g], [k * (n - 1), k - 1, 1])), rtol=1e-10, atol=1e-12
    )
    assert 0 < s_g < s_b
    np.testing.assert_allclose(
        sdtheory.block_outputs(np.eye(k)[given_], true, c=c, d=d, lam=lam, rounds=ROUNDS), P, atol=1e-10
    )
    assert np.all(np.abs(margins) > TIE)
    ok = margins > 0
    assert sdtheory.corruption_condition(f) == bool(ok.any())
    first = int(np.argmax(ok))
    assert 0 < first < R - 1 and ok[first:].all()
    assert sdtheory.min_rounds(f, c=c, d=d, lam=lam, per_class=n) == first
    assert sdtheory.all_correct_rounds(f, c=c, d=d, lam=lam, per_class=n) == (first, T.UNBOUNDED)
    np.testing.assert_array_equal(sdtheory.theorems.all_correct_at(f, ROUNDS, c=c, d=d, lam=lam, per_class=n), ok)
    # r* = floor(log((1 + Delta)/Delta) / log(b/a)) with the factors of the eigh eigenvalues
    delta = min(counts[0, 0] - x for x in counts[0, 1:] if x > 0) / n
    assert sdtheory.theorems.margin(f) == pytest.approx(delta, abs=1e-15)
    # the eigh eigenvalues by multiplicity: K(n-1) times the within-class one, K-1 times the class one
    values, mult = np.unique(np.round(s, 9), return_counts=True)
    eig_w, eig_b = values[mult == k * (n - 1)][0], values[mult == k - 1][0]
    ridge = k * k * n * lam
    a, b = eig_w / (eig_w + ridge), eig_b / (eig_b + ridge)
    assert int(np.floor(np.log((1 + delta) / delta) / np.log(b / a))) == first


@pytest.mark.parametrize(
    "c,d,lam,window",
    [
        (0.5, -0.12625, 1e-3, (4, 11)),  # gamma = g/b > rho = a/b: the constraint rises, then falls to D - F < 0
        (0.2, -0.0104, 1e-3, (5, 37)),
        (0.5, -0.02525, 1e-3, (3, 89)),
    ],
)
def test_negative_d_window_closes_when_a_frequent_class_is_over_averaged(c, d, lam, window):
    """d < 0 turns the global term around: class 0 is globally frequent (f(0) > f(1)) with a small own gap,
    so g < b now pulls its instances *toward* label 1 (D - F < 0): the window closes. The window is checked
    round by round against the numpy eigh closed form and the decimal brute force; ``window`` is what the
    numpy path gives (it is also asserted)."""
    k, n = 3, 100
    counts = np.array([[51, 49, 0], [40, 60, 0], [45, 0, 55]])
    true, given_ = _labels(counts)
    f = sdtheory.empirical_fractions(true, given_, k)
    rounds = np.arange(120)
    _, _, margins = _numpy_closed_form(true, given_, k, c, d, lam, rounds)
    assert np.all(np.abs(margins) > TIE)
    ok = np.flatnonzero(margins > 0)
    assert (ok[0], ok[-1]) == window and ok.size == window[1] - window[0] + 1
    w = sdtheory.all_correct_rounds(f, c=c, d=d, lam=lam, per_class=n)
    assert (w.first, w.last) == window
    assert sdtheory.max_rounds(f, c=c, d=d, lam=lam, per_class=n) == window[1]
    probe = [window[0] - 1, window[0], window[1], window[1] + 1]
    np.testing.assert_array_equal(_dec_all_correct(f, k, n, c, d, lam, probe), [False, True, True, False])
    np.testing.assert_array_equal(
        sdtheory.theorems.all_correct_at(f, probe, c=c, d=d, lam=lam, per_class=n), [False, True, True, False]
    )


def _neg_bound(k, n, c):
    """The smallest excluded d: the last eigenvalue 1 - c + n (c - d) + n K d of the balanced Gram is 0."""
    return -(1 - c + n * c) / (n * (k - 1))


@given(
    data=st.data(),
    shape=st.sampled_from(SHAPES),
    c=st.floats(0.05, 0.9),
    dneg=st.floats(0.0, 0.999),
    loglam=st.floats(-3.5, -0.5),
)
def test_all_correct_window_matches_eigh_for_negative_d(data, shape, c, dneg, loglam):
    """Arbitrary fractions, d anywhere in (bound, 0] (including s_g < s_w, where g < a): the window, the
    condition and r* against the eigh closed form, round by round."""
    k, n = shape
    counts = data.draw(any_counts(k, n))
    d, lam = _neg_bound(k, n, c) * dneg, 10.0**loglam
    true, given_ = _labels(counts)
    f = sdtheory.empirical_fractions(true, given_, k)
    _, _, margins = _numpy_closed_form(true, given_, k, c, d, lam, ROUNDS)
    assume(np.all(np.abs(margins) > TIE))
    try:
        w = sdtheory.all_correct_rounds(f, c=c, d=d, lam=lam, per_class=n)
    except ValueError as err:  # d -> 0-: the window opens beyond MAX_ROUND, so no round checked is all correct
        assert "beyond round MAX_ROUND" in str(err), err
        assert not np.any(margins > 0)
        return
    expected = np.array([w.first >= 0 and w.first <= r <= w.last for r in ROUNDS])
    event("empty window" if w.first < 0 else ("window closes before R" if w.last < R - 1 else "window open"))
    np.testing.assert_array_equal(margins > 0, expected)
    np.testing.assert_array_equal(sdtheory.theorems.all_correct_at(f, ROUNDS, c=c, d=d, lam=lam, per_class=n), expected)


def test_negative_d_below_the_positive_definite_bound_is_refused_naming_d():
    """Just above the bound (the balanced Gram's last eigenvalue 1 - c + n (c - d) + n K d > 0) every theorem
    accepts d; just below it is refused with a message naming d and stating the bound."""
    k, n, c = 4, 10, 0.4
    bound = _neg_bound(k, n, c)
    true = np.repeat(np.arange(k), n)
    above, below = bound * (1 - 1e-9), bound * (1 + 1e-9)
    assert np.linalg.eigvalsh(_numpy_block_gram(true, c, above)).min() > 0
    assert np.linalg.eigvalsh(_numpy_block_gram(true, c, bound * 1.01)).min() < 0
    C = sdtheory.corruption_matrix("symmetric", k, 0.3)
    kw = dict(c=c, lam=1e-2, per_class=n)
    calls = [
        lambda d: sdtheory.min_rounds(C, d=d, **kw),
        lambda d: sdtheory.all_correct_rounds(C, d=d, **kw),
        lambda d: sdtheory.theorems.all_correct_at(C, [0, 1], d=d, **kw),
        lambda d: sdtheory.pll_condition(C, d=d, **kw),
        lambda d: T.log_block_factors(per_class=n, num_classes=k, c=c, d=d, lam=1e-2),
    ]
    for call in calls:
        call(above)
        with pytest.raises(ValueError, match=r"d = -0\.15333.*d > -0\.1533333333"):
            call(below)
