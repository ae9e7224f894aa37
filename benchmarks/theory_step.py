"""Benchmark: the theory step of simulations/phase_diagram.py, before and after batching it (issue 21).

The theory step (:mod:`sdtheory.montecarlo.theory`) simulates no instances:
for every noise rate it solves type-level problems of the exact block model
(16 SD rounds and the one-round PLL student): the population problem, the
finite-sample draws of the label counts, and the phase map over ``lam``. With
the script's defaults that is 41 + 41 x 128 + 17 x 41 problems.

* **before**: the previous implementation (copied here): three programs, each
  ``jax.jit`` of ``jax.vmap`` over *all* its problems at once (population,
  finite-sample exact and linearised, phase map), the draws sampled inside
  them;
* **after**: :func:`sdtheory.montecarlo.theory.theory_predictions`: the counts
  sampled once (``lax.map``), every distinct problem solved once, 128 at a
  time (two parallel calls of 64) by one compiled program in which the SD
  rounds and the CE PLL student share one solver (here compiled at first
  use; the theory step compiles it in a thread while the counts are drawn).

Each piece is timed as compile (``lower().compile()``; for the batched
solver: its first call minus its second) and run, in wall and process CPU
seconds, in the same run; the ratios are the numbers to read (the
2-core machine is shared). Both give the same predictions, except the PLL
"100% correct" test on fractional population counts, which the old code
decided from a ratio of sums that could come out ``1 - 1e-16`` (listed under
``differences``). Results: ``benchmarks/results/theory_step.json``.

Usage: python benchmarks/theory_step.py [--eta-steps E] [--draws D] [--map-steps A] [--no-save]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from sdtheory.metrics import correct_core
from sdtheory.montecarlo import make_config
from sdtheory.montecarlo import theory as th
from sdtheory.noise import corruption_matrix_core
from sdtheory.reduced import (
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
from sdtheory.refine import pll_rounds_core, round_fit

RESULTS = Path(__file__).parent / "results" / "theory_step.json"


# --------------------------------------------------------------------------
# before: the previous sdtheory/montecarlo/theory.py programs (commit 6d5c50d)
# --------------------------------------------------------------------------


def _solve(config):
    return dict(tol=config.exact_tol, max_iter=config.exact_max_iter, solver=config.exact_solver)


def _old_population(config, lam, c, d, eta):
    k, n, r = config.num_classes, config.per_class, config.num_rounds
    C = corruption_matrix_core(config.noise, k, eta, th._cluster_ids(config))
    cls, tgt = label_types(k)
    tgt = tgt.astype(C.dtype)
    ts = type_spectrum_core(corr_from_cd(c, d, k), cls, (n * C).reshape(-1))
    res = reduced_exact_core(ts, tgt, lam, r, loss="ce", **_solve(config))
    ac_exact = type_all_correct_core(res.outputs, ts, config.tie_tol)
    ac_lin = type_all_correct_core(reduced_closed_core(ts, tgt, lam, jnp.arange(r)), ts, config.tie_tol)
    teacher = round_fit(res)
    fit = reduced_exact_fit(ts, lam, loss=config.pll_loss, q=config.pll_q, **_solve(config))
    pll = pll_rounds_core(fit, teacher, 1, config.tie_tol, init="teacher")
    right = correct_core(pll.outputs[0], ts.classes, config.tie_tol)
    acc = jnp.sum(jnp.where(right, ts.counts, 0.0)) / jnp.sum(ts.counts)
    lin_fit = reduced_closed_fit(ts, lam)
    lin = pll_rounds_core(lin_fit, lin_fit(tgt), 1, config.tie_tol)
    right_lin = correct_core(lin.outputs[0], ts.classes, config.tie_tol)
    acc_lin = jnp.sum(jnp.where(right_lin, ts.counts, 0.0)) / jnp.sum(ts.counts)
    return ac_exact, ac_lin, acc, acc_lin, jnp.all(res.converged) & jnp.all(pll.converged)


@partial(jax.jit, static_argnames=("config",))
def _old_population_etas(config, lam, c, d, etas):
    return jax.vmap(lambda e: _old_population(config, lam, c, d, e))(etas)


@partial(jax.jit, static_argnames=("config", "model"))
def _old_finite_etas(config, model, keys, sizes, corr, lam, etas):
    k = config.num_classes

    def one(eta):
        C = corruption_matrix_core(config.noise, k, eta, th._cluster_ids(config))
        opts = _solve(config) if model == "exact" else {}
        pll_loss = config.pll_loss if model == "exact" else "ce"
        return finite_sample_core(
            keys, C, sizes, corr, lam, config.tie_tol, model=model, num_rounds=config.num_rounds, pll_loss=pll_loss,
            q=config.pll_q, **opts,
        )  # fmt: skip

    return jax.vmap(one)(etas)


@partial(jax.jit, static_argnames=("config",))
def _old_phase_grid(config, vals, etas, lam0, c0, d0):
    point = lambda v, eta: _old_population(config, v, c0, d0, eta)  # noqa: E731
    return jax.vmap(jax.vmap(point, in_axes=(None, 0)), in_axes=(0, None))(vals, etas)


# --------------------------------------------------------------------------


def _cpu() -> float:
    t = os.times()
    return t.user + t.system  # this process, all its threads


def _timed(pieces: dict, name: str, fn, *args):
    """Run ``fn(*args)`` (blocking), record its wall and CPU seconds under ``name``."""
    w0, c0 = time.perf_counter(), _cpu()
    out = jax.block_until_ready(fn(*args))
    pieces[name] = {"wall_s": round(time.perf_counter() - w0, 3), "cpu_s": round(_cpu() - c0, 3)}
    return out


def _compile_and_run(pieces: dict, name: str, jitted, *args, static: int = 1):
    compiled = _timed(pieces, name + " compile", lambda: jitted.lower(*args).compile())
    return _timed(pieces, name + " run", compiled, *args[static:])


def before(config, etas, draws, vals) -> tuple[dict, dict]:
    pieces: dict = {}
    lam, c, d = (jnp.asarray(v, dtype=float) for v in (config.lam, config.c, config.d))
    e = jnp.asarray(etas)
    keys = jax.random.split(jax.random.key(0), draws)
    sizes = jnp.full((config.num_classes,), config.per_class)
    corr = corr_from_cd(c, d, config.num_classes)
    pop = _compile_and_run(pieces, "population", _old_population_etas, config, lam, c, d, e)
    fx = _compile_and_run(
        pieces, "finite exact", _old_finite_etas, config, "exact", keys, sizes, corr, lam, e, static=2
    )
    fl = _compile_and_run(
        pieces, "finite linear", _old_finite_etas, config, "closed", keys, sizes, corr, lam, e, static=2
    )
    grid = _compile_and_run(pieces, "phase map", _old_phase_grid, config, jnp.asarray(vals), e, lam, c, d)
    out = {
        "exact_finite_p": np.asarray(fx.all_correct).mean(axis=1),
        "linear_finite_p": np.asarray(fl.all_correct).mean(axis=1),
        "exact_finite_pll_p": (np.asarray(fx.pll_accuracy) >= 1.0).mean(axis=1),
        "exact_population_all_correct": np.asarray(pop[0]),
        "exact_population_pll_accuracy": np.asarray(pop[2]),
        "map_sd_exact": np.asarray(grid[0]).any(axis=-1),
        "map_pll_exact": np.asarray(grid[2]) >= 1.0,
        "map_pll_linear": np.asarray(grid[3]) >= 1.0,
    }
    return pieces, out


def after(config, etas, draws, vals) -> tuple[dict, dict]:
    pieces: dict = {}
    e = jnp.asarray(etas)
    keys = jax.random.split(jax.random.key(0), draws)
    _compile_and_run(pieces, "population counts", th._population_counts, config, e)
    _compile_and_run(pieces, "sampled counts", th._sampled_counts, config, e, keys)
    problems = th._concat(th._round_problems(config, e, draws, 0), th._map_problems(config, e, "lam", vals))
    _timed(pieces, "solve, first call (compile + run)", lambda: th._solve_problems(config, problems))
    solved = _timed(pieces, "solve, second call (run)", lambda: th._solve_problems(config, problems))
    first, second = pieces["solve, first call (compile + run)"], pieces["solve, second call (run)"]
    pieces["solve, first call (compile + run)"] = {k: round(first[k] - second[k], 3) for k in first}
    pieces["solver compile (first call - second)"] = pieces.pop("solve, first call (compile + run)")
    p = th._round_problems(config, e, draws, 0).lam.shape[0]  # cheap: the programs are compiled
    preds = th._round_result(th._Solved(*(a[:p] for a in solved)), len(etas), draws)
    pm = th._map_result(th._Solved(*(a[p:] for a in solved)), "lam", vals, e)
    out = {
        "exact_finite_p": preds.exact_finite_p,
        "linear_finite_p": preds.linear_finite_p,
        "exact_finite_pll_p": preds.exact_finite_pll_p,
        "exact_population_all_correct": preds.exact_population_all_correct,
        "exact_population_pll_accuracy": preds.exact_population_pll_accuracy,
        "map_sd_exact": pm.sd_exact,
        "map_pll_exact": pm.pll_exact,
        "map_pll_linear": pm.pll_linear,
    }
    return pieces, out | {"num_problems": problems.lam.size, "num_distinct": th._distinct(problems)[0].size}


def _total(pieces: dict, key: str) -> float:
    return round(sum(v[key] for v in pieces.values()), 3)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--eta-steps", type=int, default=41)
    p.add_argument("--draws", type=int, default=128)
    p.add_argument("--map-steps", type=int, default=17)
    p.add_argument("--no-save", action="store_true", help="print only, do not write the results file")
    args = p.parse_args(argv)
    config = make_config(methods=("sd_closed", "sd_exact", "pll_closed", "pll_exact"))  # the script's defaults
    etas = np.linspace(0.0, 0.8, args.eta_steps)
    vals = np.logspace(np.log10(config.lam) - 2, np.log10(config.lam) + 2, args.map_steps)
    with jax.enable_x64(True):
        after_pieces, new = after(config, etas, args.draws, vals)  # first: the old programs warm nothing it uses
        before_pieces, old = before(config, etas, args.draws, vals)
    diffs = {}
    for name, a in old.items():
        b = new[name]
        if name == "exact_population_pll_accuracy":
            a, b = a >= 1.0, b >= 1.0  # what the outputs use; the values agree to 2e-16
        if not np.array_equal(a, b):
            diffs[name] = [[int(i) for i in ix] for ix in np.argwhere(np.asarray(a) != np.asarray(b))]
    result = {
        "config": {"etas": args.eta_steps, "draws": args.draws, "map_steps": args.map_steps, **config._asdict()},
        "problems": {"total": new["num_problems"], "distinct": new["num_distinct"], "chunk": th.CHUNK},
        "load_average_1min": round(os.getloadavg()[0], 2),
        "before": before_pieces,
        "after": after_pieces,
        "total_wall_s": {"before": _total(before_pieces, "wall_s"), "after": _total(after_pieces, "wall_s")},
        "total_cpu_s": {"before": _total(before_pieces, "cpu_s"), "after": _total(after_pieces, "cpu_s")},
        "differences": diffs,
    }
    result["cpu_ratio_before_over_after"] = round(result["total_cpu_s"]["before"] / result["total_cpu_s"]["after"], 2)
    result["wall_ratio_before_over_after"] = round(
        result["total_wall_s"]["before"] / result["total_wall_s"]["after"], 2
    )
    print(json.dumps(result, indent=1, default=str))
    if not args.no_save:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(result, indent=1, default=str) + "\n")
    return result


if __name__ == "__main__":
    main()
