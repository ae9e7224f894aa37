"""Benchmark: does a new number of instances recompile? (issue 21, "shapes that do not recompile").

Run on demand: ``python benchmarks/buckets.py [--label after]``; for the code
of another checkout, ``PYTHONPATH=/path/to/checkout python benchmarks/buckets.py
--label before``.

Workload: Gaussian-mixture features (``d = 64``, ``K = 10`` classes), one-hot
labels, ``lam = 1e-3``, 3 rounds. Each of the three entries runs in its own
fresh process (so its first fit is a cold start) and fits, in that process,
``N = 1000, 999, 1001, 1100, 1200``, each twice in a row: the first fit of an
``N`` (new shape) and then a warm fit of the same shape. The entries:

* ``estimator``: ``SelfDistillationClassifier(lam=1e-3, num_rounds=3).fit(X, y)``
  (with its default intercept);
* ``predictor``: ``sdtheory.predictor(T, lam=1e-3, features=X, model="exact", num_rounds=3)``;
* ``exact_outputs``: ``sdtheory.exact_outputs(T, lam=1e-3, num_rounds=3, features=X)``.

For every fit: wall and CPU seconds, and the XLA compilations it caused
(``jax.monitoring`` events ``/jax/core/compile/backend_compile_duration``:
count and seconds); ``ratio`` is first fit / warm fit of the same ``N``
(issue 21 asks for at most 2 inside a bucket). ``N = 999, 1001`` share
``N = 1000``'s bucket (1024); 1100 opens the next (1280) and 1200 reuses it.
The first fit of ``exact_outputs`` at ``N = 1000`` is the first-call time
(compile + solve). The machine's load average is recorded beside the figures:
on a shared machine, read the ratios and the compile counts, not the seconds.
Writes ``benchmarks/results/buckets.json`` (one entry per ``--label``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
SIZES = (1000, 999, 1001, 1100, 1200)
ENTRIES = ("estimator", "predictor", "exact_outputs")


def problem(n, d=64, k=10, seed=0):
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(k, d)) / np.sqrt(d)
    y = rng.integers(0, k, n)
    x = means[y] + rng.normal(size=(n, d)) / np.sqrt(d)
    return x, y, np.eye(k)[y]


def child(entry, lam=1e-3, num_rounds=3):
    """Run one entry over :data:`SIZES` in this process; print its records as JSON."""
    import jax

    import sdtheory as sd

    compiles = []
    jax.monitoring.register_event_duration_secs_listener(
        lambda name, secs, **kw: compiles.append(secs) if name == "/jax/core/compile/backend_compile_duration" else None
    )

    def fit(x, y, t):
        if entry == "estimator":
            return sd.SelfDistillationClassifier(lam=lam, num_rounds=num_rounds).fit(x, y)
        if entry == "predictor":
            return sd.predictor(t, lam=lam, features=x, model="exact", num_rounds=num_rounds)
        return sd.exact_outputs(t, lam=lam, num_rounds=num_rounds, features=x)

    records = []
    for n in SIZES:
        x, y, t = problem(n)
        rec = {"n": n}
        for which in ("first", "warm"):
            before = len(compiles)
            wall, cpu = time.perf_counter(), time.process_time()
            fit(x, y, t)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            new = compiles[before:]
            rec[which] = {
                "wall_s": round(wall, 4),
                "cpu_s": round(cpu, 4),
                "compilations": len(new),
                "compile_s": round(sum(new), 4),
            }
        rec["ratio"] = round(rec["first"]["wall_s"] / rec["warm"]["wall_s"], 2)
        rec["cpu_ratio"] = round(rec["first"]["cpu_s"] / max(rec["warm"]["cpu_s"], 1e-9), 2)
        records.append(rec)
    print(json.dumps(records))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--label", default="after", help="the key of this run in the results file")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "buckets.json"))
    ap.add_argument("--child", choices=ENTRIES, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child)
        return
    run = {"load_average_before": os.getloadavg(), "cpu_count": os.cpu_count(), "entries": {}}
    for entry in ENTRIES:
        proc = subprocess.run(
            [sys.executable, os.path.abspath(__file__), "--child", entry],
            check=True,
            capture_output=True,
            text=True,
            env=os.environ,
        )
        run["entries"][entry] = json.loads(proc.stdout.strip().splitlines()[-1])
        for rec in run["entries"][entry]:
            f, w = rec["first"], rec["warm"]
            print(
                f"{entry:14s} N={rec['n']:5d} first {f['wall_s']:7.3f} s ({f['compilations']} compiles, "
                f"{f['compile_s']:.2f} s)  warm {w['wall_s']:6.3f} s ({w['compilations']} compiles)  "
                f"ratio {rec['ratio']:.2f}"
            )
    run["load_average_after"] = os.getloadavg()
    run["first_call_exact_outputs_s"] = run["entries"]["exact_outputs"][0]["first"]
    results = {}
    if os.path.exists(args.out):
        with open(args.out) as fh:
            results = json.load(fh)
    results[args.label] = run
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump(results, fh, indent=1)
        fh.write("\n")
    print(f"load average {run['load_average_before']} -> {run['load_average_after']}; wrote {args.out}")


if __name__ == "__main__":
    main()
