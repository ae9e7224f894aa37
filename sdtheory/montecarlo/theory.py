r"""Exact and finite-sample theory of a simulation's block model over the noise grid, on label types
(:mod:`sdtheory.reduced`; the cells hold the linearised theory, :mod:`sdtheory.theorems`).

:func:`theory_predictions` returns :class:`RoundPredictions` (per ``eta``: population and finite-sample
all-correct rounds, exact and linearised, and the PLL accuracy) and :class:`PhaseMap` (where SD and the
one-round PLL student reach 100% over ``(eta, lam)`` or ``(eta, c)``). Every value is a prediction for the
block Gram itself: with sampled features (``config.dim``) the simulation also has feature noise.
"""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from functools import lru_cache, partial
from typing import Any, NamedTuple, Optional
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from ..noise import corruption_matrix_core
from ..reduced import (
    corr_from_cd,
    label_types,
    reduced_closed_core,
    reduced_closed_fit,
    reduced_exact_core,
    type_accuracy_core,
    type_all_correct_core,
    type_spectrum_core,
)
from .._x64 import float64
from ..refine import top2_targets_core
from ..theorems import first_round_quantiles
from .config import SimConfig
from .report import median_first_all_correct

__all__ = ["PhaseMap", "RoundPredictions", "prediction_agreement", "theory_predictions"]

#: PLL classes of :class:`PhaseMap` ``region``.
REGIONS = ("neither", "PLL student only", "SD only", "both")


class RoundPredictions(NamedTuple):
    """Predictions per noise rate (leading axis ``E``) for rounds ``0..R-1``.

    Attributes:
      exact_population_all_correct: ``(E, R)`` exact model, population counts ``n C_kl``.
      exact_population_rstar: ``(E,)`` its first all-correct round, ``-1`` if none within the rounds.
      linear_population_all_correct: ``(E, R)`` linearised model (equals the closed-form theorems).
      exact_finite_p, linear_finite_p: ``(E, R)`` P(all correct at round r) under i.i.d. labels.
      exact_finite_median, linear_finite_median: ``(E,)`` median first all-correct round (``inf`` when
        most draws never get there within the rounds).
      exact_population_pll_accuracy: ``(E,)`` one-round PLL student, exact model, population counts.
      exact_finite_pll_p: ``(E,)`` P(PLL student all correct), exact model, i.i.d. labels.
      converged: every exact solve reached the configured tolerance.
    """

    exact_population_all_correct: np.ndarray
    exact_population_rstar: np.ndarray
    linear_population_all_correct: np.ndarray
    exact_finite_p: np.ndarray
    linear_finite_p: np.ndarray
    exact_finite_median: np.ndarray
    linear_finite_median: np.ndarray
    exact_population_pll_accuracy: np.ndarray
    exact_finite_pll_p: np.ndarray
    converged: bool


def _cluster_ids(config: SimConfig):
    return None if config.clusters is None else jnp.asarray(np.asarray(config.clusters, dtype=np.int64))


class _Solved(NamedTuple):
    """What the theory keeps of one type-level problem (leading axis: problems)."""

    sd_exact: Any  # (R,) every type correct at rounds 0..R-1
    sd_linear: Any
    pll_exact: Any  # training accuracy of the one-round PLL student
    pll_linear: Any
    converged: Any  # every exact round (SD and PLL) reached the tolerance


def _problem(config: SimConfig, counts, corr, lam, teacher_start) -> _Solved:
    """Exact and linearised SD rounds and PLL student of one type-level problem (pure); ``counts``: ``(K^2,)``
    label-type counts; ``teacher_start``: the exact PLL student starts from the teacher's weights (the public
    rule), else from zero weights (as :func:`sdtheory.reduced.finite_sample_core`).

    One scan of one-round solves (one compiled solver): SD round ``i`` starts from the extrapolation of the last
    three rounds' coefficients (20% fewer Newton steps), a CE student is the last step. ``"auto"`` runs as
    ``"newton-cg"``: vmapped, the mixed solver computes both precisions' Hessian products (12% slower here)."""
    k, r = config.num_classes, config.num_rounds
    cls, tgt = label_types(k)
    tgt = tgt.astype(counts.dtype)
    solver = "newton-cg" if config.exact_solver == "auto" else config.exact_solver
    opts: dict[str, Any] = dict(tol=config.exact_tol, max_iter=config.exact_max_iter, solver=solver)
    ts = type_spectrum_core(corr, cls, counts)
    shared = config.pll_loss == "ce"

    def fit(t, start, loss="ce"):
        res = reduced_exact_core(ts, t, lam, 1, loss=loss, q=config.pll_q, init_coef=start, **opts)
        return res.outputs[0], res.coef[0] * ts.counts[:, None], res.converged[0]

    def step(carry, i):
        t, starts, teacher = carry  # starts: the last three rounds' coefficients, newest first
        lin = jnp.where(i >= 2, 2.0 * starts[0] - starts[1], starts[0])
        guess = jnp.where(i >= 3, 3.0 * (starts[0] - starts[1]) + starts[2], lin)
        student = i == r  # (shared) the PLL student: top 2 of the teacher, from its weights or zero
        t = jnp.where(student, top2_targets_core(teacher[0], config.tie_tol), t)
        out, coef, conv = fit(t, jnp.where(student, jnp.where(teacher_start, teacher[1], 0.0), guess))
        teacher = jax.tree_util.tree_map(lambda a, b: jnp.where(i == 0, a, b), (out, coef), teacher)
        return (out, (coef,) + starts[:2], teacher), (out, conv)

    zero = jnp.zeros_like(tgt)
    (_, _, teacher), (outs, conv) = jax.lax.scan(step, (tgt, (zero,) * 3, (zero, zero)), jnp.arange(r + shared))
    if shared:
        student, student_conv = outs[r], conv[r]
    else:
        start = jnp.where(teacher_start, teacher[1], 0.0)
        student, _, student_conv = fit(top2_targets_core(teacher[0], config.tie_tol), start, config.pll_loss)
    sd_x = type_all_correct_core(outs[:r], ts, config.tie_tol)
    sd_l = type_all_correct_core(reduced_closed_core(ts, tgt, lam, jnp.arange(r)), ts, config.tie_tol)
    lin_fit = reduced_closed_fit(ts, lam)  # the linearised PLL student
    lin = lin_fit(top2_targets_core(lin_fit(tgt).outputs, config.tie_tol)).outputs
    pll_x, pll_l = (type_accuracy_core(o, ts, config.tie_tol) for o in (student, lin))
    return _Solved(sd_x, sd_l, pll_x, pll_l, jnp.all(conv) & student_conv)


@lru_cache(maxsize=8)
def _program(config: SimConfig, size: int, x64: bool) -> Future:
    """The solver program for ``size`` problems: traced here (the GIL: not beside the label counts' tracing), compiled
    in a thread of its own (a future) while the theory draws the label counts. LLVM at -O1: ~20% less compile time
    than -O3, as fast a program (measured)."""
    with jax.enable_x64(x64):  # thread-local
        real, k = jnp.dtype("float64" if x64 else "float32"), config.num_classes
        shapes = (((k * k,), real), ((k, k), real), ((), real), ((), bool))
        args = [jax.ShapeDtypeStruct((size,) + shape, dtype) for shape, dtype in shapes]
        lowered = jax.jit(jax.vmap(partial(_problem, config))).lower(*args)
    pool = ThreadPoolExecutor(max_workers=1)
    future = pool.submit(lowered.compile, {"xla_backend_optimization_level": "1"})
    pool.shutdown(wait=False)  # the thread ends when the program is built
    return future


#: A chunk runs as this many calls at once, a thread each (calls dispatched from one thread ran one at a time).
PARTS = 2


def _part_size(size: int) -> int:
    return size // PARTS if size % PARTS == 0 else size


def _solve_chunk(config, *arrays) -> _Solved:
    """One chunk of problems as :data:`PARTS` calls of the compiled program in parallel threads; host arrays."""
    n, x64 = arrays[0].shape[0], arrays[0].dtype == np.float64
    h = _part_size(n)
    program = _program(config, h, x64).result()

    def call(i):
        with jax.enable_x64(x64):  # thread-local
            return jax.device_get(program(*(a[i : i + h] for a in arrays)))

    with ThreadPoolExecutor(max_workers=PARTS) as pool:
        return _Solved(*map(np.concatenate, zip(*pool.map(call, range(0, n, h)), strict=True)))


#: Problems per chunk (:data:`PARTS` calls of the compiled type-level program, one shape: one compile); 128 fastest
#: (benchmarks/theory_step.py): each vmapped chunk runs until its slowest problem converges.
CHUNK = 128

#: About how many progress reports :func:`_solve_problems` makes.
PROGRESS_REPORTS = 20


class _Problems(NamedTuple):
    """A flat batch of type-level problems (leading axis ``P``), host arrays."""

    counts: np.ndarray  # (P, K^2) label-type counts
    corr: np.ndarray  # (P, K, K)
    lam: np.ndarray  # (P,)
    teacher_start: np.ndarray  # (P,) bool: the exact PLL student starts from the teacher


def _concat(*problems: _Problems) -> _Problems:
    return _Problems(*(np.concatenate(parts) for parts in zip(*problems, strict=True)))


def _distinct(problems: _Problems) -> tuple:
    """The bitwise-distinct problems in order of first occurrence: ``(index (U,), inverse (P,))`` with
    ``problems[index][inverse] == problems``."""
    p = problems.lam.shape[0]
    rows = np.ascontiguousarray(np.concatenate([np.reshape(a, (p, -1)).astype(np.float64) for a in problems], axis=1))
    keys = rows.view(np.dtype((np.void, rows.dtype.itemsize * rows.shape[1]))).ravel()
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    order = np.argsort(first)  # unique ids in order of first occurrence
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    return first[order], rank[inverse.ravel()]


def _solve_problems(
    config: SimConfig,
    problems: _Problems,
    *,
    progress=None,
    chunk: Optional[int] = None,
    completed: Optional[Mapping[int, Mapping[str, Any]]] = None,
    on_chunk: Optional[Callable[[int, dict], None]] = None,
) -> _Solved:
    """Solve every distinct problem once, ``chunk`` (default :data:`CHUNK`) at a time; NumPy results per problem.

    ``progress(done, total, seconds)`` after about every 5% of the distinct problems; ``on_chunk(start,
    fields)`` after each solved chunk (``start``: its first distinct problem); ``completed`` chunks are reused.
    """
    index, inverse = _distinct(problems)
    total = index.size
    size = min(CHUNK if chunk is None else chunk, problems.lam.shape[0])  # known before the problems are
    every = -(-total // (size * PROGRESS_REPORTS))  # report after every this many chunks
    completed = {} if completed is None else completed
    t0 = time.perf_counter()
    parts = []
    for i, start in enumerate(range(0, total, size)):
        idx = index[start : start + size]
        if start in completed:
            parts.append(_reuse(completed[start], start, idx.size))
        else:
            take = np.concatenate([idx, np.full(size - idx.size, idx[-1])])  # the last chunk repeats a problem
            out = _solve_chunk(config, *(a[take] for a in problems))
            parts.append(_Solved(*(np.asarray(a)[: idx.size] for a in out)))
            if on_chunk is not None:
                on_chunk(start, parts[-1]._asdict())
        if progress is not None and ((i + 1) % every == 0 or start + size >= total):
            progress(start + idx.size, total, time.perf_counter() - t0)
    solved = _Solved(*(np.concatenate(a) for a in zip(*parts, strict=True)))
    return _Solved(*(a[inverse] for a in solved))


def _reuse(piece: Mapping[str, Any], start: int, size: int) -> _Solved:
    """A completed chunk as :class:`_Solved`; ``ValueError`` if it is not one of ``size`` problems."""
    if set(piece) != set(_Solved._fields) or any(np.shape(piece[f])[:1] != (size,) for f in _Solved._fields):
        raise ValueError(f"completed[{start}] is not a theory chunk of this run: it comes from other arguments")
    return _Solved(*(np.asarray(piece[f]) for f in _Solved._fields))


@partial(jax.jit, static_argnames=("config",))
def _population_counts(config, etas):
    """``(E, K^2)`` population label-type counts ``n C_kl`` per eta."""
    k = config.num_classes
    C = jax.vmap(lambda e: corruption_matrix_core(config.noise, k, e, _cluster_ids(config)))(etas)
    return (config.per_class * C).reshape(etas.shape[0], -1)


@partial(jax.jit, static_argnames=("config",))
def _sampled_counts(config, etas, keys):
    """``(E, D, K^2)`` i.i.d. label-type counts, draw ``d`` at every eta from ``keys[d]``: those of
    :func:`sdtheory.reduced.sample_counts_core`, one row at a time under ``lax.map`` (vmapped: 2-3x slower)."""
    k, e, d = config.num_classes, etas.shape[0], keys.shape[0]
    C = jax.vmap(lambda eta: corruption_matrix_core(config.noise, k, eta, _cluster_ids(config)))(etas)
    row_keys = jax.vmap(lambda key: jax.random.split(key, k))(keys)  # (D, K)
    row_keys = jnp.broadcast_to(row_keys[None], (e, d, k)).reshape(-1)
    probs = jnp.broadcast_to(C[:, None], (e, d, k, k)).reshape(-1, k)
    n = jnp.full(row_keys.shape, config.per_class, C.dtype)
    rows = jax.lax.map(lambda a: jax.random.multinomial(a[0], a[1], a[2]), (row_keys, n, probs))
    return rows.reshape(e, d, k * k)


def _round_problems(config: SimConfig, etas, num_draws: int, seed: int) -> _Problems:
    """Population problems (``E``, teacher start) then the draws (``E x D``, zero start, eta-major)."""
    e, k = etas.shape[0], config.num_classes
    corr = np.asarray(corr_from_cd(float(config.c), float(config.d), k), dtype=float)
    pop = np.asarray(_population_counts(config, etas))
    keys = jax.random.split(jax.random.key(seed), num_draws)
    draws = np.asarray(_sampled_counts(config, etas, keys)).reshape(e * num_draws, -1)
    p = e + draws.shape[0]
    return _Problems(
        np.concatenate([pop, draws]),
        np.broadcast_to(corr, (p, k, k)),
        np.full(p, float(config.lam)),
        np.arange(p) < e,
    )


def _round_result(solved: _Solved, e: int, num_draws: int) -> RoundPredictions:
    pop = _Solved(*(a[:e] for a in solved))
    fin = _Solved(*(a[e:].reshape((e, num_draws) + a.shape[1:]) for a in solved))
    return RoundPredictions(
        exact_population_all_correct=pop.sd_exact,
        exact_population_rstar=_first(pop.sd_exact),
        linear_population_all_correct=pop.sd_linear,
        exact_finite_p=fin.sd_exact.mean(axis=1),
        linear_finite_p=fin.sd_linear.mean(axis=1),
        exact_finite_median=first_round_quantiles(_first(fin.sd_exact), [0.5])[0],
        linear_finite_median=first_round_quantiles(_first(fin.sd_linear), [0.5])[0],
        exact_population_pll_accuracy=pop.pll_exact,
        exact_finite_pll_p=(fin.pll_exact >= 1.0).mean(axis=1),
        converged=bool(np.all(pop.converged) and np.all(fin.converged)),
    )


def _first(ac):
    return np.where(ac.any(axis=-1), np.argmax(ac, axis=-1), -1)


class PhaseMap(NamedTuple):
    """Population phase map over ``(axis value, eta)`` (leading axes ``(A, E)``).

    Attributes:
      axis: ``"lam"`` or ``"c"``; values: ``(A,)`` its values; etas: ``(E,)``. sd_exact / sd_linear: SD all correct at
      some round ``0..R-1``. pll_exact / pll_linear: the one-round PLL student all correct.
      region: ``(A, E)`` index into :data:`REGIONS` of the exact model (``2 * sd + pll``).
      converged: every exact solve reached the tolerance.
    """

    axis: str
    values: np.ndarray
    etas: np.ndarray
    sd_exact: np.ndarray
    sd_linear: np.ndarray
    pll_exact: np.ndarray
    pll_linear: np.ndarray
    region: np.ndarray
    converged: bool


@float64
def theory_predictions(
    config: SimConfig,
    etas: Any,
    *,
    num_draws: int = 256,
    seed: int = 0,
    map_axis: str = "lam",
    map_values: Any,
    progress: Optional[Callable[[int, int, float], None]] = None,
    completed: Optional[Mapping[int, Mapping[str, Any]]] = None,
    on_chunk: Optional[Callable[[int, dict], None]] = None,
) -> tuple[RoundPredictions, PhaseMap]:
    """Exact population and finite-sample predictions per noise rate, and the population phase map.

    Every exact solve is a type-level problem (label-type counts, ``corr``, ``lam``); each distinct one is
    solved once, a fixed number at a time by one compiled program.

    Args:
      config, etas: the simulation's configuration (``lam``, ``c``, ``d``, rounds, solver options) and
        ``(E,)`` noise rates.
      num_draws: draws of the per-class label counts per eta (the same keys for every eta), as in
        :func:`sdtheory.finite_sample_prediction`; ``seed``: their PRNG seed.
      map_axis, map_values: the map's second axis, ``"lam"`` or ``"c"`` (each value above the config's
        ``d``), and its values.
      progress: optional callable ``(done, total, seconds)`` counting distinct problems solved.
      on_chunk: optional callable ``(start, result)`` after every solved batch (a flat dict of host arrays).
      completed: ``start -> result`` from a call with the same arguments: those batches are reused, the
        results are bit for bit an uninterrupted call's.

    Returns ``(RoundPredictions, PhaseMap)``; raises ``ValueError`` for a ``map_axis`` other than ``"lam"``
    or ``"c"``, or a completed batch that does not fit.
    """
    if map_axis not in ("lam", "c"):
        raise ValueError(f"map_axis must be 'lam' or 'c', got {map_axis!r}")
    vals = np.asarray(map_values, dtype=float)
    etas_a = jnp.asarray(np.asarray(etas, dtype=float))
    _program(config, _part_size(min(CHUNK, etas_a.shape[0] * (1 + num_draws + vals.shape[0]))), True)  # meanwhile
    rounds = _round_problems(config, etas_a, num_draws, seed)
    problems = _concat(rounds, _map_problems(config, etas_a, map_axis, vals))
    solved = _solve_problems(config, problems, progress=progress, completed=completed, on_chunk=on_chunk)
    p = rounds.lam.shape[0]
    preds = _round_result(_Solved(*(a[:p] for a in solved)), etas_a.shape[0], num_draws)
    return preds, _map_result(_Solved(*(a[p:] for a in solved)), map_axis, vals, etas_a)


def _map_problems(config: SimConfig, etas, axis: str, vals: np.ndarray) -> _Problems:
    """The population problem at every ``(value, eta)``, value-major; the other parameters the config's."""
    e, a, k = etas.shape[0], vals.shape[0], config.num_classes
    pop = np.asarray(_population_counts(config, etas))
    cs = vals if axis == "c" else np.full(a, float(config.c))
    corr = np.stack([np.asarray(corr_from_cd(float(v), float(config.d), k), dtype=float) for v in cs])
    lam = vals if axis == "lam" else np.full(a, float(config.lam))
    return _Problems(
        np.broadcast_to(pop[None], (a,) + pop.shape).reshape(a * e, -1),
        np.broadcast_to(corr[:, None], (a, e, k, k)).reshape(a * e, k, k),
        np.repeat(lam, e),
        np.ones(a * e, bool),
    )


def _map_result(solved: _Solved, axis: str, vals: np.ndarray, etas) -> PhaseMap:
    shape = (vals.shape[0], etas.shape[0])
    sd_x, sd_l = (a.reshape(shape + (-1,)).any(axis=-1) for a in (solved.sd_exact, solved.sd_linear))
    pll_x, pll_l = (a.reshape(shape) >= 1.0 for a in (solved.pll_exact, solved.pll_linear))
    region = 2 * sd_x.astype(int) + pll_x
    return PhaseMap(axis, vals, np.asarray(etas), sd_x, sd_l, pll_x, pll_l, region, bool(np.all(solved.converged)))


def _never_as_nan(first, last_round):
    f = np.asarray(first, dtype=float)
    return np.where((f >= 0) & np.isfinite(f) & (f <= last_round), f, np.nan)


def _first_agreement(predicted, observed) -> dict:
    both_never = np.isnan(predicted) & np.isnan(observed)
    both = ~np.isnan(predicted) & ~np.isnan(observed)
    diff = (observed - predicted)[both]
    return {
        "eta_match_fraction": float(np.mean(both_never | (both & (observed == predicted)))),
        "num_both_within_rounds": int(both.sum()),
        "mean_offset_observed_minus_predicted": float(diff.mean()) if diff.size else None,
        "max_abs_offset": float(np.abs(diff).max()) if diff.size else None,
    }


def prediction_agreement(result: Any, preds: RoundPredictions, sd_method: str, pll_method: str) -> dict:
    """Each prediction against the simulation, per cell (JSON-able; see docs/simulation.md).

    SD (``sd_method``): the fraction of (eta, round) cells where the prediction "every instance correct"
    equals the majority outcome over seeds (finite-sample ones as ``P(all correct) > 1/2``), the mean
    absolute difference between the finite-sample probability and the observed fraction of seeds, and per
    eta the first all-correct round against the observed median (beyond the simulated rounds: "never").
    PLL (``pll_method``): the same cell agreement for "the student is 100% correct".
    """
    st = result.methods[sd_method]
    frac = st.all_correct.mean(axis=1)  # (E, R)
    majority = frac > 0.5
    last = int(result.rounds[-1])
    th = result.theory
    observed = median_first_all_correct(result, sd_method)
    sd_preds = {
        "linear_population": (th.population_all_correct, None, th.population_rstar),
        "exact_population": (preds.exact_population_all_correct, None, preds.exact_population_rstar),
        "linear_finite_sample": (preds.linear_finite_p > 0.5, preds.linear_finite_p, preds.linear_finite_median),
        "exact_finite_sample": (preds.exact_finite_p > 0.5, preds.exact_finite_p, preds.exact_finite_median),
    }
    sd_out = {}
    for name, (cells, prob, first) in sd_preds.items():
        entry: dict[str, Any] = {"cells_vs_majority": float(np.mean(np.asarray(cells) == majority))}
        if prob is not None:
            entry["mean_abs_probability_error"] = float(np.mean(np.abs(prob - frac)))
        entry["first_round_vs_median_observed"] = _first_agreement(_never_as_nan(first, last), observed)
        sd_out[name] = entry
    pll = result.methods[pll_method].all_correct[..., 0]  # (E, S)
    pll_major = pll.mean(axis=1) > 0.5
    pll_out = {
        "linear_population": float(np.mean((th.population_pll_accuracy >= 1.0) == pll_major)),
        "exact_population": float(np.mean((preds.exact_population_pll_accuracy >= 1.0) == pll_major)),
        "exact_finite_sample": float(np.mean((preds.exact_finite_pll_p > 0.5) == pll_major)),
    }
    return {sd_method: sd_out, pll_method: {"etas_vs_majority": pll_out}, "theory_converged": preds.converged}
