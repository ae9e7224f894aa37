"""The report: a grid's results as arrays (:class:`SimResult`, shapes ``(*sweep, E, S, ...)``, the swept axes
among ``lam``, ``c``, ``d`` in that order) and their reductions over seeds (host-side NumPy) of an unswept
result (:meth:`SimResult.select`): the phase-diagram table, the theory-vs-simulation agreement.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import numpy as np

from ..metrics import first_all_correct
from ..theorems import BEYOND_RANGE
from .config import SimConfig

__all__ = [
    "GapStats",
    "MethodStats",
    "SimResult",
    "TABLE_COLUMNS",
    "TheoryStats",
    "accuracy_curves",
    "agreement",
    "assemble",
    "mean_empirical_rstar",
    "median_first_all_correct",
    "phase_table",
]


class MethodStats(NamedTuple):
    """Per-cell outcome of one method; arrays ``(E, S, R)`` (``R = len(rounds)``).

    Attributes:
      rounds: ``(R,)`` the round of each slice (PLL: ``[1]``, the student after one round).
      num_correct: instances whose true class has the strictly largest output.
      num_correct_clean, num_correct_noisy: the same among instances whose given label is right / wrong.
      all_correct: ``num_correct == N``.
      converged, residual: the exact solver reached its tolerance, its fixed-point residual (closed form:
        ``True``, 0).
    """

    rounds: np.ndarray
    num_correct: np.ndarray
    num_correct_clean: np.ndarray
    num_correct_noisy: np.ndarray
    all_correct: np.ndarray
    converged: np.ndarray
    residual: np.ndarray


class TheoryStats(NamedTuple):
    """The theorems' predictions (linearised balanced block model, :mod:`sdtheory.theorems`).

    ``population_*`` from ``C(eta)`` (``(E, ...)``), ``empirical_*`` from each cell's label fractions
    (``(E, S, ...)``): the corruption condition, its margin ``Delta``, ``r*`` (``-1`` when the condition
    fails), the all-correct rounds ``(.., R)``, the PLL student's predicted accuracy (rounded to 12
    decimals: its last bits depend on the batch layout) and the PLL condition.
    """

    population_condition: np.ndarray
    population_margin: np.ndarray
    population_rstar: np.ndarray
    population_all_correct: np.ndarray
    population_pll_accuracy: np.ndarray
    population_pll_condition: np.ndarray
    empirical_condition: np.ndarray
    empirical_margin: np.ndarray
    empirical_rstar: np.ndarray
    empirical_all_correct: np.ndarray
    empirical_pll_accuracy: np.ndarray
    empirical_pll_condition: np.ndarray


class GapStats(NamedTuple):
    """The linearisation gap per cell and round (both SD methods run); arrays ``(..., E, S, R)``.

    Attributes:
      max_abs_diff: ``max |P_exact - P_closed|`` over instances and classes.
      argmax_agreement: fraction of instances whose argmax is the same.
      near_tie_frac: fraction of instances whose closed-form top-2 margin is below twice their output gap
        (the linearisation cannot decide them).
    """

    max_abs_diff: np.ndarray
    argmax_agreement: np.ndarray
    near_tie_frac: np.ndarray


class SimResult(NamedTuple):
    """Everything the engine measured (a pytree of host arrays).

    Attributes:
      etas: ``(E,)`` noise rates.
      rounds: ``(R,)`` SD rounds ``0..R-1``.
      num_instances: ``N``.
      num_noisy: ``(*sweep, E, S)`` instances whose given label differs from the true class.
      methods: ``{name: MethodStats}`` for the methods that were run.
      theory: :class:`TheoryStats`.
      gap: :class:`GapStats` when both SD methods ran, else ``None``.
      sweep: ``{axis: values}`` for the swept axes (``"lam"``, ``"c"``, ``"d"``, in array order).
      params: ``{axis: value}`` of the axes that were not swept.
    """

    etas: np.ndarray
    rounds: np.ndarray
    num_instances: int
    num_noisy: np.ndarray
    methods: dict
    theory: TheoryStats
    gap: Optional[GapStats] = None
    sweep: dict = {}
    params: dict = {}

    def select(self, **values: float) -> SimResult:
        """The unswept result at one value (matched exactly) of every swept axis, e.g. ``select(lam=1e-3)``:
        a separate :func:`run_grid` with those values."""
        missing = [a for a in self.sweep if a not in values]
        unknown = [a for a in values if a not in self.sweep]
        if missing or unknown:
            raise ValueError(
                f"select needs exactly the swept axes {list(self.sweep)}; missing {missing}, not swept {unknown}"
            )
        index = []
        for axis, vals in self.sweep.items():
            hits = [i for i, v in enumerate(vals) if v == float(values[axis])]
            if not hits:
                raise ValueError(f"{axis} = {values[axis]!r} is not one of the swept values {list(vals)}")
            index.append(hits[0])
        pick = lambda a: a[tuple(index)]  # noqa: E731
        methods = {m: MethodStats(st.rounds, *(pick(a) for a in st[1:])) for m, st in self.methods.items()}
        theory = TheoryStats(*(pick(a) for a in self.theory))
        gap = None if self.gap is None else GapStats(*(pick(a) for a in self.gap))
        params = dict(self.params, **{a: float(values[a]) for a in self.sweep})
        return SimResult(
            self.etas, self.rounds, self.num_instances, pick(self.num_noisy), methods, theory, gap, {}, params
        )

    def accuracy(self, method: str) -> np.ndarray:
        """Training accuracy vs the true classes, ``(*sweep, E, S, R)``."""
        return self.methods[method].num_correct / self.num_instances

    def clean_accuracy(self, method: str) -> np.ndarray:
        """Accuracy on instances with a correct given label; NaN where there are none."""
        den = (self.num_instances - self.num_noisy)[..., None]
        return np.where(den > 0, self.methods[method].num_correct_clean / np.maximum(den, 1), np.nan)

    def noisy_accuracy(self, method: str) -> np.ndarray:
        """Accuracy on instances with a corrupted label; NaN where there are none."""
        den = self.num_noisy[..., None]
        return np.where(den > 0, self.methods[method].num_correct_noisy / np.maximum(den, 1), np.nan)


def assemble(config: SimConfig, etas: np.ndarray, num_seeds: int, grid: dict, sweep: dict) -> SimResult:
    """Build a :class:`SimResult` from the engine's arrays ``(L, C, D, E, S, ...)``; unswept axes are dropped."""
    keep = tuple(i for i, (_, (_, swept)) in enumerate(sweep.items()) if swept)
    drop = tuple(i for i in range(3) if i not in keep)
    shape = lambda a: np.squeeze(a, axis=drop)  # noqa: E731
    rounds = np.arange(config.num_rounds)
    methods = {
        m: MethodStats(rounds if m.startswith("sd_") else np.array([1]), *(shape(a) for a in grid[m]))
        for m in config.methods
    }
    names = ("condition", "margin", "rstar", "all_correct", "pll_accuracy", "pll_condition")
    seed_axis = len(keep) + 1
    pop = [np.take(shape(grid[f"pop_{n}"]), 0, axis=seed_axis) for n in names]  # identical over seeds
    emp = [shape(grid[f"emp_{n}"]) for n in names]
    # a sum of fractions whose last bits depend on the batch shape: rounded, so "== 1" does not
    pop[4], emp[4] = np.round(pop[4], 12), np.round(emp[4], 12)
    theory = TheoryStats(*pop, *emp)
    gap = GapStats(*(shape(a) for a in grid["gap"])) if "gap" in grid else None
    swept = {name: list(vals) for name, (vals, s) in sweep.items() if s}
    params = {name: vals[0] for name, (vals, s) in sweep.items() if not s}
    return SimResult(etas, rounds, config.num_instances, shape(grid["num_noisy"]), methods, theory, gap, swept, params)


#: Columns of :func:`phase_table`, in order.
TABLE_COLUMNS = (
    "eta",
    "round",
    "method",
    "num_seeds",
    "mean_accuracy",
    "std_accuracy",
    "min_accuracy",
    "mean_clean_accuracy",
    "mean_noisy_accuracy",
    "frac_all_correct",
    "majority_all_correct",
    "theory_all_correct",
    "theory_rstar",
    "frac_theory_empirical_all_correct",
    "theory_pll_accuracy",
    "mean_theory_empirical_pll_accuracy",
    "agree",
    "frac_converged",
    "max_residual",
)


def _pooled(num, den):
    """Sum of ``num`` over seeds / sum of ``den``; ``None`` where the denominator is 0."""
    n = np.sum(num, axis=1)
    d = np.sum(den, axis=1)
    return [None if dd == 0 else float(nn) / float(dd) for nn, dd in zip(n.ravel(), d.ravel(), strict=False)]


def _unswept(result: SimResult, what: str) -> None:
    if result.sweep:
        raise ValueError(
            f"{what} needs an unswept result; take one value per swept axis with "
            f"result.select({', '.join(a + '=...' for a in result.sweep)})"
        )


def phase_table(result: SimResult) -> dict:
    """One row per (eta, round, method), as columns (:data:`TABLE_COLUMNS`, docs/simulation.md).

    SD methods have a row for every round; PLL methods one (round 1, the student after one round).
    ``theory_all_correct`` is the population theorem's prediction for that cell (SD: every instance correct
    at that round; PLL: predicted student accuracy 1), ``agree`` compares it with the majority outcome over
    seeds (``frac_all_correct > 1/2``).
    """
    _unswept(result, "phase_table")
    th = result.theory
    cols: dict = {name: [] for name in TABLE_COLUMNS}
    pll_emp = th.empirical_pll_accuracy
    for m, st in result.methods.items():
        sd = m.startswith("sd_")
        acc = result.accuracy(m)  # (E, S, R')
        n_clean = result.num_instances - result.num_noisy
        for j, r in enumerate(st.rounds):
            a = acc[:, :, j]
            frac_all = st.all_correct[:, :, j].mean(axis=1)
            majority = frac_all > 0.5
            if sd:
                pred = th.population_all_correct[:, j]
                pred_emp = th.empirical_all_correct[:, :, j].mean(axis=1)
            else:
                pred = th.population_pll_accuracy >= 1.0
                pred_emp = (pll_emp >= 1.0).mean(axis=1)
            clean = _pooled(st.num_correct_clean[:, :, j], n_clean)
            noisy = _pooled(st.num_correct_noisy[:, :, j], result.num_noisy)
            for i in range(result.etas.size):
                cols["eta"].append(float(result.etas[i]))
                cols["round"].append(int(r))
                cols["method"].append(m)
                cols["num_seeds"].append(int(a.shape[1]))
                cols["mean_accuracy"].append(float(a[i].mean()))
                cols["std_accuracy"].append(float(a[i].std()))
                cols["min_accuracy"].append(float(a[i].min()))
                cols["mean_clean_accuracy"].append(clean[i])
                cols["mean_noisy_accuracy"].append(noisy[i])
                cols["frac_all_correct"].append(float(frac_all[i]))
                cols["majority_all_correct"].append(bool(majority[i]))
                cols["theory_all_correct"].append(bool(pred[i]))
                cols["theory_rstar"].append(int(th.population_rstar[i]) if sd else None)
                cols["frac_theory_empirical_all_correct"].append(float(pred_emp[i]))
                cols["theory_pll_accuracy"].append(None if sd else float(th.population_pll_accuracy[i]))
                cols["mean_theory_empirical_pll_accuracy"].append(None if sd else float(pll_emp[i].mean()))
                cols["agree"].append(bool(pred[i] == majority[i]))
                cols["frac_converged"].append(float(st.converged[i, :, j].mean()))
                cols["max_residual"].append(float(st.residual[i, :, j].max()))
    return cols


def _offsets(predicted: np.ndarray, observed: np.ndarray) -> dict:
    """Histogram of ``observed - predicted`` first all-correct rounds, and the mismatch counts."""
    both = (predicted >= 0) & (observed >= 0)
    diff = (observed - predicted)[both]
    vals, counts = np.unique(diff, return_counts=True)
    return {
        "histogram": {str(int(v)): int(c) for v, c in zip(vals, counts, strict=False)},
        "num_compared": int(both.sum()),
        "exact_match_fraction": float(np.mean(diff == 0)) if diff.size else None,
        "mean_offset": float(diff.mean()) if diff.size else None,
        "predicted_but_never_observed": int(np.sum((predicted >= 0) & (observed < 0))),
        "observed_but_predicted_never": int(np.sum((predicted < 0) & (observed >= 0))),
        "neither": int(np.sum((predicted < 0) & (observed < 0))),
    }


def agreement(result: SimResult) -> dict:
    """Theory vs simulation, per method (JSON-able dict; see docs/simulation.md).

    SD methods: the fraction of (eta, round) cells where the population prediction equals the majority
    outcome over seeds, of (eta, seed, round) cells where the empirical prediction equals the outcome, and
    the distribution of the offset between the observed and predicted first all-correct round (population
    ``r*`` and each seed's empirical ``r*``; a prediction beyond the simulated rounds counts as "predicted
    but never observed"). PLL methods: the two agreement fractions for "student accuracy is 1".
    """
    _unswept(result, "agreement")
    th = result.theory
    out = {}
    for m, st in result.methods.items():
        majority = st.all_correct.mean(axis=1) > 0.5  # (E, R')
        sd = m.startswith("sd_")
        pred_pop = th.population_all_correct if sd else (th.population_pll_accuracy >= 1.0)[:, None]
        pred_emp = th.empirical_all_correct if sd else (th.empirical_pll_accuracy >= 1.0)[..., None]
        entry: dict[str, Any] = {
            "cells_population_vs_majority": float(np.mean(pred_pop == majority)),
            "cells_empirical_vs_outcome": float(np.mean(pred_emp == st.all_correct)),
        }
        if sd:
            obs_first = first_all_correct(st.all_correct, st.rounds)  # (E, S)
            r_max = int(st.rounds[-1])
            clip = lambda r: np.where(r > r_max, -1, r)  # noqa: E731  beyond the simulated rounds
            rstar_pop = np.broadcast_to(th.population_rstar[:, None], obs_first.shape)
            entry["first_round_offset_vs_population"] = _offsets(clip(rstar_pop), obs_first)
            entry["first_round_offset_vs_empirical"] = _offsets(clip(th.empirical_rstar), obs_first)
            entry["predicted_beyond_simulated_rounds_population"] = int(np.sum(th.population_rstar > r_max))
        else:
            error = np.abs(result.accuracy(m)[..., 0] - th.empirical_pll_accuracy)
            entry["mean_abs_accuracy_error_empirical"] = float(np.mean(error))
        entry["all_converged"] = bool(np.all(st.converged))
        entry["max_residual"] = float(np.max(st.residual))
        out[m] = entry
    return out


def mean_empirical_rstar(result: SimResult) -> np.ndarray:
    """``(E,)`` mean empirical ``r*`` over the seeds where it exists (in the searched range); NaN where most
    seeds have none."""
    _unswept(result, "mean_empirical_rstar")
    rstar_emp = result.theory.empirical_rstar
    ok = (rstar_emp >= 0) & (rstar_emp < BEYOND_RANGE)
    with np.errstate(invalid="ignore"):
        m = np.where(ok, rstar_emp, 0).sum(axis=1) / np.maximum(ok.sum(axis=1), 1)
    return np.where(ok.mean(axis=1) > 0.5, m, np.nan)


def median_first_all_correct(result: SimResult, method: str) -> np.ndarray:
    """``(E,)`` median over seeds of an SD method's first all-correct round; NaN where most never get there."""
    _unswept(result, "median_first_all_correct")
    observed = first_all_correct(result.methods[method].all_correct, result.rounds).astype(float)
    observed = np.where(observed >= 0, observed, np.nan)
    mostly = np.mean(np.isfinite(observed), axis=1) > 0.5
    med = np.full(result.etas.size, np.nan)
    med[mostly] = np.nanmedian(observed[mostly], axis=1)
    return med


def accuracy_curves(result: SimResult, sd_method: str, pll_method: str) -> dict:
    """Mean accuracy against eta ``(E,)`` of the PLL student, SD round 1, SD's best round, the teacher and
    the theory's mean empirical PLL prediction, keyed by legend labels (in the phase diagram's order)."""
    _unswept(result, "accuracy_curves")
    sd_acc = result.accuracy(sd_method).mean(axis=1)  # (E, R)
    last = int(result.rounds[-1])
    return {
        f"PLL student after 1 round ({pll_method.split('_')[1]})": result.accuracy(pll_method)[..., 0].mean(axis=1),
        "SD after 1 round (r = 1)": sd_acc[:, 1] if sd_acc.shape[1] > 1 else sd_acc[:, 0],
        # chosen per noise rate with the true labels: an oracle no practitioner has, and the legend says so
        f"SD, best round in 0..{last} (oracle: chosen with the true labels)": sd_acc.max(axis=1),
        "teacher (r = 0)": sd_acc[:, 0],
        "theory: PLL after 1 round (mean empirical prediction)": result.theory.empirical_pll_accuracy.mean(axis=1),
    }
