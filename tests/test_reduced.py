"""The type-reduced block model against independent N-instance computations.

Independent checks: the N-instance exact solver (:func:`sdtheory.exact_outputs`)
and the eigendecomposition closed form (:func:`sdtheory.sd_outputs`) on the
explicit block Gram of :func:`sdtheory.block_gram`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import sdtheory as sd
from sdtheory.reduced import block_type_outputs
from sdtheory.theorems import UNBOUNDED

K = 3
N = 12  # fixed shapes: one compiled N-instance solver for every example


def _problem(seed):
    """Unbalanced classes, a random PSD class-correlation matrix and random labels (numpy only)."""
    rng = np.random.default_rng(seed)
    cuts = np.sort(rng.choice(np.arange(1, N), size=K - 1, replace=False))
    sizes = np.diff(np.concatenate([[0], cuts, [N]]))
    classes = np.repeat(np.arange(K), sizes)
    a = rng.normal(size=(K, 4))
    a *= np.sqrt(rng.uniform(0.1, 0.8, size=(K, 1))) / np.linalg.norm(a, axis=1, keepdims=True)
    corr = a @ a.T  # R_kk in (0.1, 0.8), PSD
    noise = rng.uniform(0.0, 0.7)
    given = np.where(rng.uniform(size=N) < noise, rng.integers(0, K, size=N), classes)
    counts = np.zeros((K, K))
    np.add.at(counts, (classes, given), 1)
    return classes, given, corr, counts


@settings(max_examples=8)
@given(
    seed=st.integers(0, 2**32 - 1),
    lam=st.sampled_from([1e-3, 1e-2, 1e-1]),
    loss=st.sampled_from(["ce", "gce"]),
)
def test_reduced_exact_equals_n_instance_solver(seed, lam, loss):
    classes, given, corr, counts = _problem(seed)
    gram = np.asarray(sd.block_gram(classes, corr=corr))
    y = np.eye(K)[given]
    ref = sd.exact_outputs(y, lam=lam, num_rounds=3, gram=gram, loss=loss, tol=1e-11)
    red = block_type_outputs(counts, lam=lam, corr=corr, num_rounds=3, loss=loss, tol=1e-11)
    got = np.asarray(red.outputs)[:, classes, given]
    np.testing.assert_allclose(got, np.asarray(ref.outputs), atol=1e-8, rtol=0)
    # the certificate is the N-instance residual
    assert np.all(np.asarray(red.residuals) <= 1e-11)
    np.testing.assert_allclose(np.asarray(red.coef)[:, classes, given], np.asarray(ref.coef), atol=1e-6, rtol=1e-6)


@settings(max_examples=8)
@given(seed=st.integers(0, 2**32 - 1), lam=st.sampled_from([1e-3, 1e-1]))
def test_reduced_closed_equals_eigh_of_explicit_gram(seed, lam):
    classes, given, corr, counts = _problem(seed)
    gram = np.asarray(sd.block_gram(classes, corr=corr))
    y = np.eye(K)[given]
    ref = np.asarray(sd.sd_outputs(y, lam=lam, rounds=[0, 2, 7], gram=gram))
    red = block_type_outputs(counts, lam=lam, corr=corr, rounds=[0, 2, 7], model="closed")
    np.testing.assert_allclose(np.asarray(red.outputs)[:, classes, given], ref, atol=1e-12, rtol=0)


def test_block_outputs_exact_soft_targets_and_negative_d():
    """Public contract: block_outputs(model='exact') == exact_outputs on block_gram, any targets, (c, d) or corr."""
    rng = np.random.default_rng(3)
    classes = np.repeat(np.arange(K), [5, 2, 6])
    targets = rng.dirichlet(np.ones(K), size=classes.size)
    targets[::3] = np.eye(K)[classes[::3]]
    for kw in (dict(c=0.5, d=-0.02), dict(corr=[[0.5, 0.1, 0.2], [0.1, 0.3, 0.0], [0.2, 0.0, 0.7]])):
        gram = sd.block_gram(classes, **kw)
        ref = sd.exact_outputs(targets, lam=1e-3, rounds=[0, 3], gram=gram, tol=1e-11).outputs
        got = sd.block_outputs(targets, classes, lam=1e-3, rounds=[0, 3], model="exact", tol=1e-11, **kw)
        np.testing.assert_allclose(np.asarray(got), np.asarray(ref), atol=1e-8, rtol=0)
        closed = sd.block_outputs(targets, classes, lam=1e-3, rounds=[0, 3], **kw)
        np.testing.assert_allclose(
            np.asarray(closed), np.asarray(sd.sd_outputs(targets, lam=1e-3, rounds=[0, 3], gram=gram)), atol=1e-12
        )


def test_cd_is_the_special_case_of_corr():
    counts = np.array([[30.0, 5.0, 5.0], [4.0, 28.0, 8.0], [6.0, 6.0, 28.0]])
    a = block_type_outputs(counts, lam=1e-3, c=0.4, d=0.1, num_rounds=2).outputs
    b = block_type_outputs(counts, lam=1e-3, corr=0.3 * np.eye(3) + 0.1, num_rounds=2).outputs
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-12)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        (dict(corr=[[0.5, 0.1, 0.0], [0.2, 0.5, 0.0], [0.0, 0.0, 0.5]]), "symmetric"),
        (dict(corr=[[0.5, 1.5, 0.0], [1.5, 0.5, 0.0], [0.0, 0.0, 0.5]]), r"\[-1, 1\]"),
        (dict(corr=np.eye(3)), "1 - R_kk"),
        (dict(corr=0.6 * np.eye(3) - 0.3), "indefinite"),
        (dict(corr=np.eye(2) * 0.5), "K = 3"),
        (dict(c=0.4, d=0.1, corr=np.eye(3) * 0.5), "not both"),
        (dict(c=0.4), "corr"),
    ],
)
def test_bad_corr_is_named(kwargs, name):
    with pytest.raises((ValueError, TypeError), match=name):
        block_type_outputs(np.full((3, 3), 10.0), lam=1e-2, num_rounds=1, **kwargs)


@pytest.mark.parametrize(
    ("counts", "name"),
    [
        (-np.eye(3), "non-negative"),
        (np.zeros((3, 3)), "empty"),
        (np.ones((3, 2)), "square"),
        ([[np.nan, 1], [1, 1]], "finite"),
    ],
)
def test_bad_counts_are_named(counts, name):
    with pytest.raises(ValueError, match=name):
        block_type_outputs(counts, lam=1e-2, c=0.4, d=0.1, num_rounds=1)


# --------------------------------------------------------------------------
# Exact population theory vs the N-instance exact solver
# --------------------------------------------------------------------------


def _exact_count_labels(per_class, counts):
    """Given labels with exactly ``counts[k, l]`` instances of class ``k`` labelled ``l`` (balanced)."""
    classes = np.repeat(np.arange(counts.shape[0]), per_class)
    given = np.concatenate([np.repeat(np.arange(counts.shape[1]), row.astype(int)) for row in counts])
    return classes, given


@pytest.mark.parametrize("eta", [0.2, 0.4, 0.6])
def test_exact_population_min_rounds_and_window_vs_n_instance(eta):
    n, lam, c, d = 10, 2e-3, 0.4, 0.1
    C = np.asarray(sd.corruption_matrix("symmetric", K, eta))
    counts = n * C  # integer counts: the population types are realised exactly
    assert np.allclose(counts, np.round(counts))
    classes, given = _exact_count_labels(n, np.round(counts))
    gram = sd.block_gram(classes, c=c, d=d)
    rounds = np.arange(30)
    ref = sd.exact_outputs(np.eye(K)[given], lam=lam, num_rounds=rounds.size, gram=gram, tol=1e-10)
    all_ok = np.asarray(sd.correct(ref.outputs, classes)).all(axis=-1)
    r_ref = int(sd.metrics.first_all_correct(all_ok, rounds))
    assert r_ref > 0  # the setting needs some rounds
    got = sd.min_rounds(C, c=c, d=d, lam=lam, per_class=n, model="exact", search_rounds=30)
    assert got == r_ref
    win = sd.all_correct_rounds(C, c=c, d=d, lam=lam, per_class=n, model="exact", search_rounds=30)
    after = np.flatnonzero(~all_ok[r_ref:])
    assert win.first == r_ref
    assert win.last == (r_ref + after[0] - 1 if after.size else UNBOUNDED)


@pytest.mark.parametrize("loss", ["ce", "gce"])
def test_exact_pll_prediction_vs_n_instance_pll_student(loss):
    n, lam, c, d = 10, 1e-3, 0.4, 0.1
    C = np.array([[0.6, 0.3, 0.1], [0.1, 0.6, 0.3], [0.3, 0.1, 0.6]])
    classes, given = _exact_count_labels(n, np.round(n * C))
    gram = sd.block_gram(classes, c=c, d=d)
    ref = sd.pll_student(np.eye(K)[given], lam=lam, gram=gram, model="exact", loss=loss, num_rounds=3, tol=1e-10)
    ref_acc = np.asarray(sd.correct(ref.outputs, classes)).mean(axis=-1)
    pred = sd.pll_accuracy_prediction(
        C, c=c, d=d, lam=lam, per_class=n, model="exact", loss=loss, num_rounds=3, tol=1e-10
    )
    np.testing.assert_allclose(np.asarray(pred.accuracy), ref_acc, atol=1e-12)
    top2 = np.asarray(sd.top2_targets(ref.teacher)) > 0
    np.testing.assert_array_equal(np.asarray(pred.top2)[classes, given], top2)


@pytest.mark.parametrize("eta", [0.3, 0.55])
def test_linearised_general_corr_rounds_vs_eigh(eta):
    """min_rounds / all_correct_rounds / PLL with a general R against sd_outputs on the explicit Gram."""
    n, lam = 6, 1e-3
    corr = np.array([[0.5, 0.1, 0.25], [0.1, 0.35, 0.0], [0.25, 0.0, 0.6]])
    C = np.asarray(sd.corruption_matrix("asym", K, eta))
    counts = np.round(n * C)
    C = counts / n  # realisable fractions
    classes, given = _exact_count_labels(n, counts)
    gram = sd.block_gram(classes, corr=corr)
    rounds = np.arange(200)
    out = np.asarray(sd.sd_outputs(np.eye(K)[given], lam=lam, rounds=rounds, gram=gram))
    all_ok = np.asarray(sd.correct(out, classes)).all(axis=-1)
    r_ref = int(sd.metrics.first_all_correct(all_ok, rounds))
    assert sd.min_rounds(C, corr=corr, lam=lam, per_class=n, search_rounds=200) == r_ref
    win = sd.all_correct_rounds(C, corr=corr, lam=lam, per_class=n, search_rounds=200)
    assert win.first == r_ref
    if r_ref >= 0:
        after = np.flatnonzero(~all_ok[r_ref:])
        assert win.last == (r_ref + after[0] - 1 if after.size else UNBOUNDED)
    pll = sd.pll_student(np.eye(K)[given], lam=lam, gram=gram)
    pred = sd.pll_accuracy_prediction(C, corr=corr, lam=lam, per_class=n)
    np.testing.assert_allclose(np.asarray(pred.accuracy), np.asarray(sd.correct(pll.outputs, classes)).mean(-1))


# --------------------------------------------------------------------------
# Finite-sample theory vs instance-level Monte Carlo
# --------------------------------------------------------------------------

#: Two-sample z bound per round: P(|Z| > 4.4) = 1.1e-5, so with at most 20 rounds compared the
#: probability that a correct implementation fails a test is below 2.2e-4 (Bonferroni); the
#: draws use fixed seeds, so a given version passes or fails deterministically.
Z_BOUND = 4.4


def _instance_level(per_class, C, lam, c, d, num_rounds, sims, model, seed=1):
    """P(all correct at r) and first rounds from instance-level simulations with i.i.d. labels."""
    classes = np.repeat(np.arange(C.shape[0]), per_class)
    gram = sd.block_gram(classes, c=c, d=d) if model == "exact" else None
    keys = jax.random.split(jax.random.key(seed), sims)
    ok = []
    for key in keys:
        given = np.asarray(sd.sample_labels(key, classes, C))
        y = np.eye(C.shape[0])[given]
        if model == "exact":
            out = sd.exact_outputs(y, lam=lam, num_rounds=num_rounds, gram=gram).outputs
        else:
            out = sd.block_outputs(y, classes, c=c, d=d, lam=lam, num_rounds=num_rounds)
        ok.append(np.asarray(sd.correct(out, classes)).all(axis=-1))
    return np.array(ok)


def _assert_same_distribution(pred, mc):
    d, m = pred.all_correct.shape[0], mc.shape[0]
    p_mc = mc.mean(axis=0)
    pooled = (pred.p_all_correct * d + p_mc * m) / (d + m)
    se = np.sqrt(pooled * (1 - pooled) * (1.0 / d + 1.0 / m))
    assert np.all(np.abs(pred.p_all_correct - p_mc) <= Z_BOUND * se + 1e-12), (pred.p_all_correct, p_mc)


def test_finite_sample_linearised_matches_instance_monte_carlo():
    C = np.asarray(sd.corruption_matrix("symmetric", 4, 0.5))
    kw = dict(per_class=20, lam=2e-4, c=0.4, d=0.1, num_rounds=20)
    pred = sd.finite_sample_prediction(C, num_draws=4000, **kw)
    assert 0.05 < pred.p_all_correct.max()  # something to compare
    mc = _instance_level(kw["per_class"], C, kw["lam"], kw["c"], kw["d"], kw["num_rounds"], 300, "closed")
    _assert_same_distribution(pred, mc)


@pytest.mark.slow
def test_finite_sample_exact_matches_instance_monte_carlo():
    C = np.asarray(sd.corruption_matrix("symmetric", 3, 0.3))
    kw = dict(per_class=8, lam=3e-3, c=0.4, d=0.1, num_rounds=12)
    pred = sd.finite_sample_prediction(C, model="exact", num_draws=3000, **kw)
    assert pred.converged and 0.05 < pred.p_all_correct.max()
    mc = _instance_level(kw["per_class"], C, kw["lam"], kw["c"], kw["d"], kw["num_rounds"], 200, "exact")
    _assert_same_distribution(pred, mc)


def test_convergence_is_a_property_of_the_whole_chain():
    """Round r is trained on round r - 1's outputs: asking for a late round must not hide unconverged earlier
    rounds. on_failure='raise' names them; the reported converged[r] is the AND over rounds 0..r."""
    from sdtheory import reduced as Rd
    from sdtheory.exact import DEFAULT_RTOL, DEFAULT_TOL

    k, n = 3, 6
    classes = np.repeat(np.arange(k), n)
    given = classes.copy()
    given[[0, n, 2 * n]] = [1, 2, 0]
    y = np.eye(k)[given]
    counts = np.zeros((k, k))
    np.add.at(counts, (classes, given), 1)
    bad = dict(lam=1e-3, c=0.4, d=0.1, max_iter=6, solver="newton-cg")
    # each round's own measures, from the kernel: round 0 misses tol, the later rounds reach it
    ts = Rd.type_spectrum_core(jnp.asarray(Rd.corr_from_cd(0.4, 0.1, k)), *Rd.label_types(k)[:1], counts.reshape(-1))
    with jax.enable_x64(True):
        raw = Rd.reduced_exact_core(ts, Rd.label_types(k)[1], jnp.asarray(1e-3), 4, max_iter=6, solver="newton-cg")
    per_round = (np.asarray(raw.residuals) <= DEFAULT_TOL) | (np.asarray(raw.kkt) <= DEFAULT_RTOL)
    assert not per_round[0] and per_round[3]
    chain = np.logical_and.accumulate(per_round)
    np.testing.assert_array_equal(raw.converged, chain)  # the kernel reports the chain
    with pytest.raises(RuntimeError, match=r"round\(s\) \[0"):
        sd.block_outputs(y, classes, rounds=[3], model="exact", **bad)
    with pytest.raises(RuntimeError, match=r"round\(s\) \[0"):
        block_type_outputs(counts, rounds=[3], **bad)
    res = block_type_outputs(counts, rounds=[3, 1], on_failure="flag", **bad)
    np.testing.assert_array_equal(res.converged, chain[[3, 1]])
    np.testing.assert_array_equal(block_type_outputs(counts, num_rounds=4, on_failure="flag", **bad).converged, chain)
    # converged chains: the selected rounds are the chain's rounds, all converged
    full = block_type_outputs(counts, lam=1e-3, c=0.4, d=0.1, num_rounds=4, solver="newton-cg")
    part = block_type_outputs(counts, lam=1e-3, c=0.4, d=0.1, rounds=[3, 1], solver="newton-cg")
    assert np.all(part.converged)
    np.testing.assert_array_equal(part.outputs, full.outputs[[3, 1]])


def test_type_level_gce_student_starts_from_the_teacher_like_the_instance_level_one():
    """The type-level PLL student (theory, Monte Carlo) follows the public rule init='teacher': for GCE its per-type
    outputs equal the instance-level student's on the explicit block Gram (an independent path: N instances,
    predictor coordinates); the start is passed through the type counts (per-type dual coefficients)."""
    from sdtheory import reduced as Rd

    n, lam, c, d = 10, 1e-3, 0.4, 0.1
    counts = np.round(n * np.array([[0.6, 0.3, 0.1], [0.1, 0.6, 0.3], [0.3, 0.1, 0.6]]))
    classes, given = _exact_count_labels(n, counts)
    y = np.eye(K)[given]
    gram = sd.block_gram(classes, c=c, d=d)
    kw = dict(lam=lam, gram=gram, model="exact", loss="gce", q=1.0, tol=1e-10, solver="newton-cg")
    inst = np.asarray(sd.pll_student(y, init="teacher", **kw).outputs[-1])
    cls, tgt = Rd.label_types(K)
    with jax.enable_x64(True):
        ts = Rd.type_spectrum_core(jnp.asarray(Rd.corr_from_cd(c, d, K)), cls, jnp.asarray(counts.reshape(-1)))
        typed = Rd.type_pll_core(ts, tgt, jnp.asarray(lam), loss="gce", q=1.0, tol=1e-10, solver="newton-cg")
    per_instance = np.asarray(typed.outputs[-1])[classes * K + given]
    np.testing.assert_allclose(per_instance, inst, atol=1e-7)
