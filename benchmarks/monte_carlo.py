"""Benchmark: Monte Carlo grid throughput, vmapped engine vs a plain Python loop.

Measures cells per second (one cell = one (eta, seed) pair with all rounds)
for the closed-form path (SD rounds + PLL student) and the exact-solver path,
and the ratio of the engine (``sdtheory.simulate.run_grid``: jit + vmap over
cells, chunked) against a plain Python loop over the same cells that calls
the package's public per-cell functions (``sample_labels``,
``block_outputs``, ``exact_outputs``) one cell at a time. Both sides are
warmed up first (compile time excluded) and timed in the same run; absolute
times on a shared 2-core machine are noise, the ratio is the number to read.

Usage: python benchmarks/monte_carlo.py [--quick]
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np

import sdtheory as sd
from sdtheory import montecarlo as sim
from sdtheory.exact import exact_outputs
from sdtheory.noise import corruption_matrix, sample_labels
from sdtheory.refine import top2_targets


def _loop(config, etas, num_seeds, seed, exact):
    """Plain Python loop over cells with the public per-cell functions."""
    k, n = config.num_classes, config.per_class
    classes = sd.block_classes([n] * k)
    gram = sd.block_gram(classes, c=config.c, d=config.d) if exact else None
    keys = sim.seed_keys(seed, num_seeds)
    out = []
    for eta in etas:
        C = corruption_matrix(config.noise, k, float(eta))
        for s in range(num_seeds):
            lk, _ = jax.random.split(keys[s])
            y = np.eye(k)[np.asarray(sample_labels(lk, classes, C))]
            if exact:
                res = exact_outputs(y, lam=config.lam, num_rounds=config.num_rounds, gram=gram, tol=config.exact_tol,
                                    solver=config.exact_method, on_failure="flag")
                st = exact_outputs(np.asarray(top2_targets(res.outputs[0])), lam=config.lam, num_rounds=1, gram=gram,
                                   tol=config.exact_tol, solver=config.exact_method, on_failure="flag")
                acc = (np.asarray(res.outputs).argmax(-1) == classes).mean(-1)
                acc_pll = (np.asarray(st.outputs).argmax(-1) == classes).mean(-1)
            else:
                p = sd.block_outputs(y, classes, c=config.c, d=config.d, lam=config.lam, rounds=range(config.num_rounds))
                t2 = top2_targets(np.asarray(p[0]))
                st = sd.block_outputs(np.asarray(t2), classes, c=config.c, d=config.d, lam=config.lam, rounds=[0])
                acc = (np.asarray(p).argmax(-1) == classes).mean(-1)
                acc_pll = (np.asarray(st).argmax(-1) == classes).mean(-1)
            out.append((acc, acc_pll))
    return out


def _time(fn, repeat=1):
    best = np.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def bench(name, config, etas, num_seeds, loop_cells, exact, repeat):
    cells = len(etas) * num_seeds
    run = lambda: sim.run_grid(config, etas, num_seeds=num_seeds, seed=0)  # noqa: E731
    run()  # compile
    t_engine = _time(run, repeat)
    # the loop runs on a subset of the same cells (it is slow), rate per cell compared
    loop_etas = etas[: max(1, loop_cells // num_seeds)]
    loop_seeds = min(num_seeds, loop_cells)
    _loop(config, loop_etas[:1], 1, 0, exact)  # compile the per-cell functions
    t_loop = _time(lambda: _loop(config, loop_etas, loop_seeds, 0, exact), 1)
    n_loop = len(loop_etas) * loop_seeds
    rate_engine = cells / t_engine
    rate_loop = n_loop / t_loop
    print(f"{name:>34s}: engine {cells:6d} cells in {t_engine:8.3f} s = {rate_engine:10.1f} cells/s | "
          f"python loop {n_loop:4d} cells in {t_loop:7.3f} s = {rate_loop:8.1f} cells/s | "
          f"engine/loop = {rate_engine / rate_loop:7.1f}x", flush=True)
    return rate_engine, rate_loop


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smaller grids (a smoke run)")
    args = ap.parse_args(argv)
    print(f"devices: {jax.devices()}")
    rounds = 16
    # closed form: the default phase-diagram model, many seeds
    cfg = sim.make_config(num_classes=4, per_class=100, c=0.4, d=0.1, lam=1e-4, num_rounds=rounds,
                          methods=("sd_closed", "pll_closed"))
    etas = np.linspace(0, 0.8, 41)
    seeds = 16 if args.quick else 128
    bench("closed form (SD 16 rounds + PLL)", cfg, etas, seeds, loop_cells=48 if args.quick else 160,
          exact=False, repeat=3)
    # exact solver
    n_per = 25 if args.quick else 50
    cfg_x = sim.make_config(num_classes=4, per_class=n_per, c=0.4, d=0.1, lam=1e-4, num_rounds=rounds,
                            methods=("sd_exact", "pll_exact"))
    etas_x = np.linspace(0, 0.8, 8)
    bench(f"exact (N = {4 * n_per}, SD 16 rounds + PLL)", cfg_x, etas_x, 8, loop_cells=8 if args.quick else 16,
          exact=True, repeat=1)


if __name__ == "__main__":
    main()
