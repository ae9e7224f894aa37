"""Benchmark: Monte Carlo grid throughput, the engine vs a plain Python loop over the same cells.

Measures cells per second (one cell = one (eta, seed) pair with all rounds)
for the closed-form path (SD rounds + PLL student) and the exact-solver path,
and the ratio of the engine (:func:`sdtheory.montecarlo.run_grid`: one
compiled program, ``jax.jit`` of ``jax.vmap`` over chunks of cells) against a
plain Python loop over the same cells that calls the package's public
per-cell functions one cell at a time: :func:`sdtheory.sample_labels` with
the engine's label key of that seed (so both sides see the same labels),
:func:`sdtheory.block_outputs` or :func:`sdtheory.exact_outputs` for the SD
rounds, :func:`sdtheory.top2_targets` (the one top-2 rule) and one more fit
for the PLL student, and :func:`sdtheory.accuracy` (the one tie-aware
correctness rule). The loop runs on the first cells of the engine's grid (it
is slow) and its accuracies are checked against the engine's for those
cells. The engine computes the theory columns of every cell as well; the loop
does not, so the ratio understates the engine's advantage.

Both sides are warmed up first (compile time excluded) and timed in the same
run; absolute times on a shared 2-core machine are noise, the ratio is the
number to read.

Usage: python benchmarks/monte_carlo.py [--quick] [--seeds S] [--exact-seeds S] [--num-rounds R]
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np

import sdtheory as sd
from sdtheory import montecarlo as mc


def _loop(config, etas, seeds, all_seeds):
    """Plain Python loop over the cells ``etas x seeds`` with the public per-cell functions.

    ``all_seeds`` is the engine's ``num_seeds``: seed ``s`` uses the engine's key
    ``split(PRNGKey(0), all_seeds)[s]``, split into (label key, feature key).
    Returns accuracies ``(len(etas), len(seeds), R)`` of SD and ``(len(etas), len(seeds))`` of PLL.
    """
    k, n = config.num_classes, config.per_class
    classes = sd.block_classes([n] * k)
    exact = config.has_exact
    gram = sd.block_gram(classes, c=config.c, d=config.d) if exact else None
    keys = mc.seed_keys(0, all_seeds)
    opts = dict(tol=config.exact_tol, max_iter=config.exact_max_iter, solver=config.exact_solver, on_failure="flag")
    acc_sd, acc_pll = [], []
    for eta in etas:
        C = sd.corruption_matrix(config.noise, k, float(eta))
        for s in seeds:
            label_key, _ = jax.random.split(keys[s])
            y = np.eye(k)[sd.sample_labels(label_key, classes, C)]
            if exact:
                res = sd.exact_outputs(y, lam=config.lam, num_rounds=config.num_rounds, gram=gram, **opts)
                st = sd.exact_outputs(
                    sd.top2_targets(res.outputs[0]),
                    lam=config.lam,
                    num_rounds=1,
                    gram=gram,
                    loss=config.pll_loss,
                    q=config.pll_q,
                    **opts,
                )
                p, p_st = res.outputs, st.outputs
            else:
                p = sd.block_outputs(y, classes, c=config.c, d=config.d, lam=config.lam, num_rounds=config.num_rounds)
                p_st = sd.block_outputs(
                    sd.top2_targets(p[0]), classes, c=config.c, d=config.d, lam=config.lam, rounds=0
                )
            acc_sd.append(sd.accuracy(p, classes, tie_tol=config.tie_tol))
            acc_pll.append(sd.accuracy(p_st[0], classes, tie_tol=config.tie_tol))
    shape = (len(etas), len(seeds))
    return np.reshape(acc_sd, shape + (-1,)), np.reshape(acc_pll, shape)


def _time(fn, repeat=1):
    best, out = np.inf, None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def bench(name, config, etas, num_seeds, loop_cells, repeat):
    cells = len(etas) * num_seeds
    run = lambda: mc.run_grid(config, etas, num_seeds=num_seeds, seed=0)  # noqa: E731
    run()  # compile
    t_engine, result = _time(run, repeat)
    # the loop runs on the first cells of the same grid (it is slow); rates per cell are compared
    loop_seeds = list(range(min(num_seeds, loop_cells)))
    loop_etas = etas[: max(1, loop_cells // len(loop_seeds))]
    _loop(config, loop_etas[:1], loop_seeds[:1], num_seeds)  # compile the per-cell functions
    t_loop, (acc_sd, acc_pll) = _time(lambda: _loop(config, loop_etas, loop_seeds, num_seeds), 1)
    n_loop = len(loop_etas) * len(loop_seeds)
    sd_m, pll_m = ("sd_exact", "pll_exact") if config.has_exact else ("sd_closed", "pll_closed")
    e, s = len(loop_etas), len(loop_seeds)
    diff = max(
        np.max(np.abs(result.accuracy(sd_m)[:e, :s] - acc_sd)),
        np.max(np.abs(result.accuracy(pll_m)[:e, :s, 0] - acc_pll)),
    )
    rate_engine = cells / t_engine
    rate_loop = n_loop / t_loop
    print(
        f"{name:>36s}: engine {cells:6d} cells in {t_engine:8.3f} s = {rate_engine:10.1f} cells/s | "
        f"python loop {n_loop:4d} cells in {t_loop:7.3f} s = {rate_loop:8.1f} cells/s | "
        f"engine/loop = {rate_engine / rate_loop:7.1f}x | accuracy max |engine - loop| = {diff:.2g}",
        flush=True,
    )
    return rate_engine, rate_loop


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--quick",
        action="store_true",
        help="smaller grids (a smoke run): 16 closed-form seeds, exact N = 100 with 2 seeds",
    )
    ap.add_argument("--seeds", type=int, default=None, help="closed-form seeds per eta (default 128; --quick 16)")
    ap.add_argument("--exact-seeds", type=int, default=None, help="exact-solver seeds per eta (default 8; --quick 2)")
    ap.add_argument("--num-rounds", type=int, default=16, help="SD rounds R: rounds 0..R-1 (default 16)")
    args = ap.parse_args(argv)
    if args.num_rounds < 1:
        ap.error("argument --num-rounds: must be >= 1")
    print(f"devices: {jax.devices()}")
    r = args.num_rounds
    # closed form: the default phase-diagram model, many seeds
    cfg = mc.make_config(
        num_classes=4, per_class=100, c=0.4, d=0.1, lam=1e-4, num_rounds=r, methods=("sd_closed", "pll_closed")
    )
    etas = np.linspace(0, 0.8, 41)
    seeds = args.seeds or (16 if args.quick else 128)
    bench(f"closed form (SD {r} rounds + PLL)", cfg, etas, seeds, loop_cells=48 if args.quick else 160, repeat=3)
    # exact solver
    n_per = 25 if args.quick else 50
    cfg_x = mc.make_config(
        num_classes=4, per_class=n_per, c=0.4, d=0.1, lam=1e-4, num_rounds=r, methods=("sd_exact", "pll_exact")
    )
    etas_x = np.linspace(0, 0.8, 8)
    exact_seeds = args.exact_seeds or (2 if args.quick else 8)
    bench(
        f"exact (N = {4 * n_per}, SD {r} rounds + PLL)",
        cfg_x,
        etas_x,
        exact_seeds,
        loop_cells=8 if args.quick else 16,
        repeat=1,
    )


if __name__ == "__main__":
    main()
