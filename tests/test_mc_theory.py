"""sdtheory.montecarlo.theory: the batched, deduplicated type-level solves against straightforward ones."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sdtheory.metrics import correct_core
from sdtheory.montecarlo import make_config
from sdtheory.montecarlo import theory as th
from sdtheory.noise import corruption_matrix_core
from sdtheory.reduced import (
    corr_from_cd,
    finite_sample_core,
    label_types,
    reduced_closed_core,
    reduced_exact_core,
    sample_counts_core,
    type_all_correct_core,
    type_pll_core,
    type_spectrum_core,
)
from sdtheory.theorems import first_round_quantiles

CONFIG = make_config(
    num_classes=3,
    per_class=6,
    c=0.45,
    d=0.1,
    lam=2e-3,
    num_rounds=4,
    methods=("sd_closed", "sd_exact", "pll_closed", "pll_exact"),
)
ETAS = np.array([0.0, 0.2, 0.45, 0.6])
DRAWS = 6
MAP_VALUES = np.array([2e-4, 2e-3, 2e-2])  # contains the config's lam: the map repeats the population problems


def _solve(config):
    return dict(tol=config.exact_tol, max_iter=config.exact_max_iter, solver=config.exact_solver)


def _population_reference(config, eta, lam, c):
    """One population point the straightforward way: public type-level kernels, one point per call."""
    out = _population_point(config, jnp.asarray(eta), jnp.asarray(lam), jnp.asarray(c))
    return tuple(np.asarray(x) if np.ndim(x) else bool(x) for x in out)


@partial(jax.jit, static_argnames="config")
def _population_point(config, eta, lam, c):
    k, n, r = config.num_classes, config.per_class, config.num_rounds
    cls, tgt = label_types(k)
    tgt = tgt.astype(lam.dtype)
    C = corruption_matrix_core(config.noise, k, eta)
    ts = type_spectrum_core(corr_from_cd(c, config.d, k), cls, (n * C).reshape(-1))
    res = reduced_exact_core(ts, tgt, lam, r, loss="ce", **_solve(config))
    sd_x = type_all_correct_core(res.outputs, ts, config.tie_tol)
    sd_l = type_all_correct_core(reduced_closed_core(ts, tgt, lam, jnp.arange(r)), ts, config.tie_tol)
    pll = type_pll_core(ts, tgt, lam, config.tie_tol, model="exact", **_solve(config))
    lin = type_pll_core(ts, tgt, lam, config.tie_tol, model="closed")

    def all_right(outputs):  # from the outputs themselves, not from an accuracy ratio
        return jnp.all(correct_core(outputs, ts.classes, config.tie_tol) | (ts.counts <= 0))

    conv = jnp.all(res.converged) & jnp.all(pll.converged)
    return sd_x, sd_l, all_right(pll.outputs[0]), all_right(lin.outputs[0]), conv


@pytest.fixture(scope="module", autouse=True)
def _small_chunks():
    """Chunks of 4 problems: one compiled program serves every test here (and the padding is exercised)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(th, "CHUNK", 4)
        yield


@pytest.fixture(scope="module")
def together():
    return th.theory_predictions(CONFIG, ETAS, num_draws=DRAWS, seed=3, map_axis="lam", map_values=MAP_VALUES)


def test_round_predictions_match_finite_sample_core_and_the_population_kernels(together):
    preds = together[0]
    k = CONFIG.num_classes
    keys = jax.random.split(jax.random.key(3), DRAWS)
    sizes = jnp.full((k,), CONFIG.per_class)
    corr = corr_from_cd(CONFIG.c, CONFIG.d, k)
    common = dict(num_rounds=CONFIG.num_rounds, pll_loss=CONFIG.pll_loss, q=CONFIG.pll_q)
    fx, fl, pop = [], [], []
    for eta in ETAS:
        C = corruption_matrix_core(CONFIG.noise, k, jnp.asarray(eta))
        lam = jnp.asarray(CONFIG.lam)
        fx.append(
            finite_sample_core(keys, C, sizes, corr, lam, CONFIG.tie_tol, model="exact", **common, **_solve(CONFIG))
        )
        fl.append(finite_sample_core(keys, C, sizes, corr, lam, CONFIG.tie_tol, model="closed", **common))
        pop.append(_population_reference(CONFIG, eta, CONFIG.lam, CONFIG.c))
    ac_x = np.stack([np.asarray(f.all_correct) for f in fx])
    ac_l = np.stack([np.asarray(f.all_correct) for f in fl])
    np.testing.assert_array_equal(preds.exact_finite_p, ac_x.mean(axis=1))
    np.testing.assert_array_equal(preds.linear_finite_p, ac_l.mean(axis=1))
    first_x = np.stack([np.asarray(f.first) for f in fx])
    first_l = np.stack([np.asarray(f.first) for f in fl])
    np.testing.assert_array_equal(preds.exact_finite_median, first_round_quantiles(first_x, [0.5])[0])
    np.testing.assert_array_equal(preds.linear_finite_median, first_round_quantiles(first_l, [0.5])[0])
    pll_x = np.stack([np.asarray(f.pll_accuracy) for f in fx])
    np.testing.assert_array_equal(preds.exact_finite_pll_p, (pll_x >= 1.0).mean(axis=1))
    np.testing.assert_array_equal(preds.exact_population_all_correct, np.stack([p[0] for p in pop]))
    np.testing.assert_array_equal(preds.linear_population_all_correct, np.stack([p[1] for p in pop]))
    np.testing.assert_array_equal(preds.exact_population_pll_accuracy >= 1.0, [p[2] for p in pop])
    rstar = [int(np.argmax(p[0])) if p[0].any() else -1 for p in pop]
    np.testing.assert_array_equal(preds.exact_population_rstar, rstar)
    conv = all(p[4] for p in pop) and all(bool(np.all(np.asarray(f.converged))) for f in fx)
    assert preds.converged == conv


@pytest.mark.parametrize("axis", ["lam", "c"])
def test_phase_map_matches_the_population_kernels_point_by_point(axis, together):
    values = MAP_VALUES if axis == "lam" else np.array([0.3, 0.6])
    if axis == "lam":
        pm = together[1]
    else:
        pm = th.theory_predictions(CONFIG, ETAS, num_draws=1, seed=3, map_axis=axis, map_values=values)[1]
    for i, v in enumerate(values):
        lam, c = (v, CONFIG.c) if axis == "lam" else (CONFIG.lam, v)
        for j, eta in enumerate(ETAS):
            sd_x, sd_l, pll_x, pll_l, conv = _population_reference(CONFIG, eta, lam, c)
            assert pm.sd_exact[i, j] == sd_x.any() and pm.sd_linear[i, j] == sd_l.any(), (i, j)
            assert pm.pll_exact[i, j] == pll_x and pm.pll_linear[i, j] == pll_l, (i, j)
            assert pm.region[i, j] == 2 * int(sd_x.any()) + int(pll_x)
            assert conv or not pm.converged


def test_sampled_counts_are_the_draws_of_sample_counts_core():
    etas = jnp.asarray(ETAS)
    keys = jax.random.split(jax.random.key(5), 7)
    got = np.asarray(th._sampled_counts(CONFIG, etas, keys))
    sizes = jnp.full((CONFIG.num_classes,), CONFIG.per_class)
    sample = jax.jit(sample_counts_core)
    for e, eta in enumerate(ETAS):
        C = corruption_matrix_core(CONFIG.noise, CONFIG.num_classes, jnp.asarray(eta))
        for d in range(7):
            want = np.asarray(sample(keys[d], C, sizes)).reshape(-1)
            np.testing.assert_array_equal(got[e, d], want)


def _problems(rng, num):
    """Random type-level problems, some of them repeated, in a shuffled order."""
    k = CONFIG.num_classes
    counts = rng.multinomial(CONFIG.per_class, np.full(k, 1.0 / k), size=(num, k)).reshape(num, -1).astype(float)
    corr = np.broadcast_to(np.asarray(corr_from_cd(CONFIG.c, CONFIG.d, k)), (num, k, k))
    lam = rng.choice([CONFIG.lam, 10 * CONFIG.lam], size=num)
    start = rng.random(num) < 0.5
    base = th._Problems(counts, corr, lam, start)
    take = rng.permutation(np.concatenate([np.arange(num), rng.integers(0, num, num)]))
    return th._Problems(*(a[take] for a in base))


def test_distinct_problems_solved_once_equal_every_problem_solved(monkeypatch):
    problems = _problems(np.random.default_rng(0), 5)
    index, inverse = th._distinct(problems)
    for a in problems:
        np.testing.assert_array_equal(a[index][inverse], a)
    assert len(set(map(bytes, problems.counts[index]))) <= index.size < problems.lam.size
    calls = []
    chunk = th._solve_chunk

    def counting(*args):
        calls.append(args[1].shape[0])
        return chunk(*args)

    monkeypatch.setattr(th, "_solve_chunk", counting)
    reports = []
    got = th._solve_problems(CONFIG, problems, progress=lambda *a: reports.append(a))
    assert index.size <= sum(calls) < index.size + 4 and set(calls) == {4}
    assert [r[:2] for r in reports][-1] == (index.size, index.size)
    assert [r[0] for r in reports] == sorted(r[0] for r in reports)
    # straightforward: every problem on its own, duplicates included
    for p in range(problems.lam.size):
        one = chunk(CONFIG, *(jnp.asarray(np.repeat(a[p : p + 1], 4, axis=0)) for a in problems))
        for name, a, b in zip(th._Solved._fields, got, one, strict=True):
            np.testing.assert_array_equal(a[p], np.asarray(b)[0], err_msg=f"{name} of problem {p}")


def test_pll_accuracy_is_exactly_one_when_every_instance_is_right():
    """Fractional population counts: the "100% correct" test (accuracy >= 1) follows the outputs, not roundoff."""
    etas = np.linspace(0.0, 0.6, 13)
    preds = th.theory_predictions(CONFIG, etas, num_draws=1, map_values=[CONFIG.lam])[0]
    for j, eta in enumerate(etas):
        pll_right = _population_reference(CONFIG, eta, CONFIG.lam, CONFIG.c)[2]
        acc = preds.exact_population_pll_accuracy[j]
        assert (acc == 1.0) == pll_right and 0.0 <= acc <= 1.0, (eta, acc)


def test_bad_axis_is_refused():
    with pytest.raises(ValueError, match="axis"):
        th.theory_predictions(CONFIG, ETAS, map_axis="eta", map_values=[0.1])
