"""Benchmark: float32 against float64 Hessian products in the truncated Newton solver (``"auto"`` vs ``"newton-cg"``).

Run on demand: ``python benchmarks/mixed_precision.py``. Writes ``benchmarks/results/mixed_precision.json``.

``solver="auto"`` (the default) takes float32 Hessian products, ``"newton-cg"`` float64 ones. This script times one
round of both on Gaussian mixtures (``N`` instances, ``d`` features, ``K`` classes, lam = 1e-4, tol 1e-9), each warmed
up (compiled) first, the minimum of repeats, and reports the ratio float64 / float32 (above 1: the float32 products
pay), the Newton steps of each and the largest gap between their outputs.
"""

from __future__ import annotations

import json
import os
import time

import numpy as np

import sdtheory as sd

HERE = os.path.dirname(os.path.abspath(__file__))
SHAPES = [(1000, 64, 10), (5000, 256, 10), (20000, 256, 20), (3000, 128, 30), (2000, 128, 50), (6000, 256, 50)]
SHAPES += [(1000, 64, 100), (10000, 256, 100)]


def mixture(n, d, k, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    x = 0.3 * rng.standard_normal((k, d))[y] + rng.standard_normal((n, d)) / np.sqrt(d)
    return x, np.eye(k)[y]


def timed(x, t, solver, repeats=3):
    fit = lambda: sd.exact_outputs(t, lam=1e-4, features=x, num_rounds=1, solver=solver)  # noqa: E731
    res = fit()
    best = (np.inf, np.inf)
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fit()
        best = min(best, (time.perf_counter() - t0, time.process_time() - c0))
    return best, res


def main():
    report = {"load_average_1min_at_start": os.getloadavg()[0], "rows": []}
    for n, d, k in SHAPES:
        x, t = mixture(n, d, k)
        (w32, c32), r32 = timed(x, t, "auto")
        (w64, c64), r64 = timed(x, t, "newton-cg")
        row = dict(n=n, d=d, k=k, wall_f32=w32, cpu_f32=c32, wall_f64=w64, cpu_f64=c64, ratio_wall=w64 / w32)
        row.update(iterations_f32=int(r32.iterations[0]), iterations_f64=int(r64.iterations[0]))
        row["max_output_gap"] = float(np.max(np.abs(r32.outputs - r64.outputs)))
        report["rows"].append(row)
        print(f"N={n} d={d} K={k}: f32 {w32:.3f}s ({row['iterations_f32']} it), f64 {w64:.3f}s "
              f"({row['iterations_f64']} it), f64/f32 {w64 / w32:.2f}", flush=True)  # fmt: skip
    report["load_average_1min_at_end"] = os.getloadavg()[0]
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    with open(os.path.join(HERE, "results", "mixed_precision.json"), "w") as fh:
        json.dump(report, fh, indent=2)


if __name__ == "__main__":
    main()
