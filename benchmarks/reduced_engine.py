"""Benchmark: exact Monte Carlo cells on the block Gram, label types vs N instances.

One cell = one (eta, seed): the exact SD teacher and rounds ``1..R-1`` plus the
exact one-round PLL student, on ``K = 4`` classes of ``n = 200`` instances
(``N = 800``). Two programs over the same cells, both ``jax.jit`` of
``jax.vmap`` over cells, compile time excluded, timed in the same run:

* **types**: the engine (:func:`sdtheory.montecarlo.run_grid`, methods
  ``sd_exact`` and ``pll_exact``), whose block-Gram exact cells run on the
  ``K^2`` label types (:mod:`sdtheory.reduced`); it also computes the theory
  columns and the statistics of every cell;
* **instances**: the N-instance exact solver on the eigendecomposition of the
  ``N x N`` block Gram (:func:`sdtheory.exact.exact_outputs_core` and the
  exact PLL fit, the engine's previous path), on the engine's labels of the
  same cells (the first few cells: it is slow).

The accuracies of both are compared on the common cells. The ratio of the
per-cell times is the number to read (absolute times on the shared 2-core
machine are noise). Results: ``benchmarks/results/reduced_engine.json``.

Usage: python benchmarks/reduced_engine.py [--per-class n] [--num-rounds R] [--seeds S] [--instance-cells M]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import sdtheory as sd
from sdtheory import io as sio
from sdtheory import montecarlo as mc
from sdtheory.exact import exact_outputs_core, spectral_features
from sdtheory.metrics import correct_core
from sdtheory.noise import corruption_matrix_core, sample_labels_iid_core
from sdtheory.refine import Fit, exact_fit, pll_rounds_core
from sdtheory.spectral import gram_spectrum

RESULTS = Path(__file__).parent / "results" / "reduced_engine.json"


def _instance_cells(config, etas, keys):
    """Accuracies ``(cells, R)`` of SD, ``(cells,)`` of PLL and convergence flags, N-instance exact solver."""
    k, n = config.num_classes, config.per_class
    classes = jnp.asarray(sd.block_classes([n] * k))
    spec = gram_spectrum(sd.block_gram(classes, c=config.c, d=config.d))
    phi = spectral_features(spec)
    lam = jnp.asarray(config.lam)
    solve = dict(tol=config.exact_tol, max_iter=config.exact_max_iter, solver=config.exact_solver)

    def cell(eta, key):
        label_key, _ = jax.random.split(key)
        C = corruption_matrix_core(config.noise, k, eta)
        y = jax.nn.one_hot(sample_labels_iid_core(label_key, classes, C), k, dtype=lam.dtype)
        res = exact_outputs_core(spec, y, lam, config.num_rounds, loss="ce", **solve)
        fit = exact_fit(phi, lam, loss=config.pll_loss, q=config.pll_q, **solve)
        pll = pll_rounds_core(fit, Fit(res.outputs[0], res.converged[0], res.residuals[0]), 1, config.tie_tol)
        acc = jnp.mean(correct_core(res.outputs, classes, config.tie_tol), axis=-1)
        conv = jnp.all(res.converged) & jnp.all(pll.converged)
        return acc, jnp.mean(correct_core(pll.outputs[0], classes, config.tie_tol)), conv

    return jax.jit(jax.vmap(cell))(jnp.asarray(etas), keys)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-class", type=int, default=200, help="instances per class n (default 200)")
    ap.add_argument("--num-rounds", type=int, default=12, help="SD rounds R (default 12)")
    ap.add_argument("--seeds", type=int, default=16, help="seeds per eta on the types (default 16)")
    ap.add_argument("--instance-cells", type=int, default=4, help="cells run by the N-instance solver (default 4)")
    ap.add_argument(
        "--solver", default="lbfgs", choices=sorted(sd.SOLVERS), help="exact solver of both (default lbfgs)"
    )
    args = ap.parse_args(argv)
    jax.config.update("jax_enable_x64", True)  # the baseline runs the kernels directly: float64 as the engine
    config = mc.make_config(
        num_classes=4,
        per_class=args.per_class,
        c=0.4,
        d=0.1,
        lam=1e-4,
        num_rounds=args.num_rounds,
        methods=("sd_exact", "pll_exact"),
        exact_solver=args.solver,
    )
    etas = np.linspace(0.1, 0.7, 8)
    cells = etas.size * args.seeds
    run = lambda: mc.run_grid(config, etas, num_seeds=args.seeds, seed=0)  # noqa: E731
    run()  # compile
    t0 = time.perf_counter()
    result = run()
    t_types = time.perf_counter() - t0

    # the same cells' keys and etas as the engine: cell (e, s) uses seed key s
    m = args.instance_cells
    keys = mc.seed_keys(0, args.seeds)
    cell_etas = np.repeat(etas, args.seeds)[:m]
    cell_keys = jnp.stack([keys[i % args.seeds] for i in range(m)])
    jax.block_until_ready(_instance_cells(config, cell_etas, cell_keys))  # compile
    t0 = time.perf_counter()
    acc_sd, acc_pll, inst_conv = jax.block_until_ready(_instance_cells(config, cell_etas, cell_keys))
    t_inst = time.perf_counter() - t0

    eng_sd = result.accuracy("sd_exact").reshape(cells, -1)[:m]
    eng_pll = result.accuracy("pll_exact").reshape(cells, -1)[:m, 0]
    ok = np.asarray(inst_conv)  # compare only cells the N-instance solver certified
    diff = float(
        max(
            np.max(np.abs(eng_sd - np.asarray(acc_sd))[ok], initial=0.0),
            np.max(np.abs(eng_pll - acc_pll)[ok], initial=0.0),
        )
    )
    types_conv = bool(np.all(result.methods["sd_exact"].converged) and np.all(result.methods["pll_exact"].converged))
    per_types, per_inst = t_types / cells, t_inst / m
    out = {
        "config": {
            "num_classes": 4,
            "per_class": args.per_class,
            "num_rounds": args.num_rounds,
            "lam": 1e-4,
            "solver": args.solver,
        },
        "device": str(jax.devices()[0]),
        "types_cells": cells,
        "types_seconds": t_types,
        "types_seconds_per_cell": per_types,
        "instance_cells": m,
        "instance_seconds": t_inst,
        "instance_seconds_per_cell": per_inst,
        "speedup_per_cell": per_inst / per_types,
        "accuracy_max_abs_diff_on_converged_cells": diff,
        "instance_cells_converged": int(ok.sum()),
        "types_all_converged": types_conv,
    }
    print(
        f"n = {args.per_class}/class, R = {args.num_rounds}: types {per_types * 1e3:.2f} ms/cell ({cells} cells), "
        f"N instances {per_inst * 1e3:.1f} ms/cell ({m} cells): {per_inst / per_types:.0f}x per cell; "
        f"accuracy max |diff| = {diff:.2g} on {int(ok.sum())} N-instance cells that converged; "
        f"types all converged: {types_conv}"
    )
    sio.write_json(RESULTS, out)


if __name__ == "__main__":
    main()
