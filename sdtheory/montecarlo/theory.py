r"""Exact and finite-sample theory of a simulation's block model, over the noise grid (no instances).

The engine's cells hold the linearised theory (:mod:`sdtheory.theorems`). This
module adds, for the same configuration, the predictions of the exact
(softmax) block model computed on label types (:mod:`sdtheory.reduced`):

* :func:`round_predictions`: per noise rate ``eta``, the population
  all-correct rounds of the exact model (counts ``n C_kl``), the finite-sample
  probability that every instance is correct at each round under i.i.d.
  labels (linearised and exact, from sampled per-class multinomial counts),
  the finite-sample median first all-correct round and the population PLL
  accuracy of the exact model;
* :func:`phase_map`: a 2-D map over ``(eta, lam)`` or ``(eta, c)`` of where
  exact multi-round SD reaches 100% within the simulated rounds, where the
  one-round PLL student does, and the same for the linearised model.

Every value is a prediction for the block Gram itself; with sampled features
(``config.dim``) the simulation also has feature noise, which these do not
model.
"""

from __future__ import annotations

from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .._src.rules import correct_core
from ..noise import corruption_matrix_core
from ..reduced import (
    corr_from_cd,
    finite_sample_core,
    label_types,
    reduced_closed_core,
    reduced_closed_fit,
    reduced_exact_core,
    reduced_exact_fit,
    type_all_correct_core,
    type_spectrum_core,
)
from .._x64 import float64
from ..refine import pll_rounds_core, round_fit
from ..theorems import first_round_quantiles
from .config import SimConfig

__all__ = ["PhaseMap", "RoundPredictions", "phase_map", "prediction_agreement", "round_predictions"]

#: PLL classes of :class:`PhaseMap` ``region``.
REGIONS = ("neither", "PLL student only", "SD only", "both")


class RoundPredictions(NamedTuple):
    """Predictions per noise rate (leading axis ``E``) for rounds ``0..R-1``.

    Attributes:
      exact_population_all_correct: ``(E, R)`` exact model, population counts.
      exact_population_rstar: ``(E,)`` first all-correct round of it, ``-1``
        if none within the rounds.
      linear_population_all_correct: ``(E, R)`` linearised model, population
        counts (evaluated on the types; equals the closed-form theorems).
      exact_finite_p: ``(E, R)`` P(all correct at round r) under i.i.d.
        labels, exact model.
      linear_finite_p: ``(E, R)`` the same, linearised model.
      exact_finite_median: ``(E,)`` median first all-correct round, exact
        model (``inf`` when most draws never get there within the rounds).
      linear_finite_median: ``(E,)`` the same, linearised model.
      exact_population_pll_accuracy: ``(E,)`` one-round PLL student, exact
        model, population counts.
      exact_finite_pll_p: ``(E,)`` P(PLL student all correct), exact model,
        i.i.d. labels.
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


def _solve(config: SimConfig) -> dict:
    return dict(tol=config.exact_tol, max_iter=config.exact_max_iter, solver=config.exact_solver)


def _cluster_ids(config: SimConfig):
    return None if config.clusters is None else jnp.asarray(np.asarray(config.clusters, dtype=np.int64))


def _population(config: SimConfig, lam, c, d, eta):
    """Population all-correct rounds (exact, linear) and exact PLL accuracy at one point (pure)."""
    k, n, r = config.num_classes, config.per_class, config.num_rounds
    C = corruption_matrix_core(config.noise, k, eta, _cluster_ids(config))
    cls, tgt = label_types(k)
    tgt = tgt.astype(C.dtype)
    ts = type_spectrum_core(corr_from_cd(c, d, k), cls, (n * C).reshape(-1))
    res = reduced_exact_core(ts, tgt, lam, r, loss="ce", **_solve(config))
    ac_exact = type_all_correct_core(res.outputs, ts, config.tie_tol)
    ac_lin = type_all_correct_core(reduced_closed_core(ts, tgt, lam, jnp.arange(r)), ts, config.tie_tol)
    teacher = round_fit(res)  # SD round 0 is the PLL teacher; the student starts from its weights
    fit = reduced_exact_fit(ts, lam, loss=config.pll_loss, q=config.pll_q, **_solve(config))
    pll = pll_rounds_core(fit, teacher, 1, config.tie_tol, init="teacher")
    right = correct_core(pll.outputs[0], ts.classes, config.tie_tol)
    acc = jnp.sum(jnp.where(right, ts.counts, 0.0)) / jnp.sum(ts.counts)
    lin_fit = reduced_closed_fit(ts, lam)
    lin = pll_rounds_core(lin_fit, lin_fit(tgt), 1, config.tie_tol)
    right_lin = correct_core(lin.outputs[0], ts.classes, config.tie_tol)
    acc_lin = jnp.sum(jnp.where(right_lin, ts.counts, 0.0)) / jnp.sum(ts.counts)
    conv = jnp.all(res.converged) & jnp.all(pll.converged)
    return ac_exact, ac_lin, acc, acc_lin, conv


@partial(jax.jit, static_argnames=("config",))
def _population_etas(config, lam, c, d, etas):
    return jax.vmap(lambda e: _population(config, lam, c, d, e))(etas)


@partial(jax.jit, static_argnames=("config", "model"))
def _finite_etas(config, model, keys, sizes, corr, lam, etas):
    k = config.num_classes

    def one(eta):
        C = corruption_matrix_core(config.noise, k, eta, _cluster_ids(config))
        opts = _solve(config) if model == "exact" else {}
        pll_loss = config.pll_loss if model == "exact" else "ce"
        return finite_sample_core(
            keys,
            C,
            sizes,
            corr,
            lam,
            config.tie_tol,
            model=model,
            num_rounds=config.num_rounds,
            pll_loss=pll_loss,
            q=config.pll_q,
            **opts,
        )

    return jax.vmap(one)(etas)


@partial(jax.jit, static_argnames=("config", "axis"))
def _phase_grid(config, axis, vals, etas, lam0, c0, d0):
    def point(v, eta):
        lam, c = (v, c0) if axis == "lam" else (lam0, v)
        return _population(config, lam, c, d0, eta)

    return jax.vmap(jax.vmap(point, in_axes=(None, 0)), in_axes=(0, None))(vals, etas)


def _first(ac):
    return np.where(ac.any(axis=-1), np.argmax(ac, axis=-1), -1)


@float64
def round_predictions(config: SimConfig, etas: Any, *, num_draws: int = 256, seed: int = 0) -> RoundPredictions:
    """Exact population and finite-sample predictions for the grid ``etas`` at the config's ``(lam, c, d)``.

    ``num_draws`` draws of the per-class label counts per eta (the same
    keys for every eta), model as in :func:`sdtheory.finite_sample_prediction`.
    """
    etas_a = jnp.asarray(np.asarray(etas, dtype=float))
    lam, c, d = (jnp.asarray(v, dtype=float) for v in (config.lam, config.c, config.d))
    k = config.num_classes
    pop = _population_etas(config, lam, c, d, etas_a)
    ac_exact, ac_lin, pll_acc, _, conv_pop = (np.asarray(x) for x in pop)
    keys = jax.random.split(jax.random.key(seed), num_draws)
    sizes = jnp.full((k,), config.per_class)
    corr = corr_from_cd(c, d, k)

    fx = _finite_etas(config, "exact", keys, sizes, corr, lam, etas_a)
    fl = _finite_etas(config, "closed", keys, sizes, corr, lam, etas_a)
    med_x = first_round_quantiles(np.asarray(fx.first), [0.5])[0]
    med_l = first_round_quantiles(np.asarray(fl.first), [0.5])[0]
    return RoundPredictions(
        exact_population_all_correct=ac_exact,
        exact_population_rstar=_first(ac_exact),
        linear_population_all_correct=ac_lin,
        exact_finite_p=np.asarray(fx.all_correct).mean(axis=1),
        linear_finite_p=np.asarray(fl.all_correct).mean(axis=1),
        exact_finite_median=med_x,
        linear_finite_median=med_l,
        exact_population_pll_accuracy=pll_acc,
        exact_finite_pll_p=(np.asarray(fx.pll_accuracy) >= 1.0).mean(axis=1),
        converged=bool(np.all(conv_pop) and np.all(np.asarray(fx.converged))),
    )


class PhaseMap(NamedTuple):
    """Population phase map over ``(axis value, eta)`` (leading axes ``(A, E)``).

    Attributes:
      axis: ``"lam"`` or ``"c"``; values: ``(A,)`` its values; etas: ``(E,)``.
      sd_exact / sd_linear: SD all correct at some round ``0..R-1``.
      pll_exact / pll_linear: the one-round PLL student all correct.
      region: ``(A, E)`` int index into :data:`REGIONS` of the exact model
        (``2 * sd + pll``).
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
def phase_map(config: SimConfig, etas: Any, *, axis: str = "lam", values: Any) -> PhaseMap:
    """Exact (and linearised) population phase map over ``(values of axis) x etas``, rounds ``0..R-1``.

    ``axis``: ``"lam"`` (the L2 weight) or ``"c"`` (within-class correlation,
    every value must exceed the config's ``d``); the other parameters are
    the config's.
    """
    if axis not in ("lam", "c"):
        raise ValueError(f"axis must be 'lam' or 'c', got {axis!r}")
    vals = np.asarray(values, dtype=float)
    etas_a = jnp.asarray(np.asarray(etas, dtype=float))
    lam0, c0, d0 = (jnp.asarray(v, dtype=float) for v in (config.lam, config.c, config.d))

    grid = _phase_grid(config, axis, jnp.asarray(vals), etas_a, lam0, c0, d0)
    ac_exact, ac_lin, pll_acc, pll_lin, conv = (np.asarray(x) for x in grid)
    sd_x, sd_l = np.asarray(ac_exact.any(axis=-1)), np.asarray(ac_lin.any(axis=-1))
    pll_x, pll_l = np.asarray(pll_acc >= 1.0), np.asarray(pll_lin >= 1.0)
    return PhaseMap(
        axis, vals, np.asarray(etas_a), sd_x, sd_l, pll_x, pll_l, 2 * sd_x.astype(int) + pll_x, bool(np.all(conv))
    )


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

    SD (``sd_method``): per (eta, round) cell, the fraction of cells where the
    prediction "every instance correct" equals the majority outcome over
    seeds (population predictions directly, finite-sample ones as
    ``P(all correct) > 1/2``), the mean absolute difference between the
    finite-sample probability and the observed fraction of seeds, and per
    eta the first all-correct round against the observed median (rounds
    beyond the simulated ones count as "never"). PLL (``pll_method``): the
    same cell agreement for "the student is 100% correct".
    """
    from .report import median_first_all_correct

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
    return {
        sd_method: sd_out,
        pll_method: {"etas_vs_majority": pll_out},
        "theory_converged": preds.converged,
    }
