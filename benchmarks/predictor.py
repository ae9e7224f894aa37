"""Benchmark: fit once, evaluate many. One :func:`sdtheory.predictor` vs fresh calls.

Run on demand:
``python benchmarks/predictor.py [--n 5000 --d 256 --k 10 --test-sets 5 --n-test 1000 --num-rounds 20]``.

Workload: a training set (``--n`` x ``--d`` Gaussian features, ``--k``
classes, one-hot targets, lam = 1e-3) and ``--test-sets`` sets of
``--n-test`` new points. Every round ``r`` in ``0..R-1`` (``R =
--num-rounds``) is evaluated on the training set and on every test set, in
two layouts, each timed for

* **predictor**: ``p = sdtheory.predictor(y, lam=lam, features=X)`` once
  (the spectrum and ``X^T U`` are computed once), then
  ``p.train_outputs(...)`` and ``p.test_outputs(..., test_features=Xt)``;
* **fresh**: the same numbers from fresh public calls,
  ``sdtheory.sd_outputs(y, lam=lam, ..., features=X)`` and
  ``sdtheory.closed_form.sd_test_outputs(y, lam=lam, ..., features=X, test_features=Xt)``,
  each of which recomputes the spectrum.

Layouts:

* ``per_round``: one call per (round, training set or test set), i.e.
  ``R (1 + T)`` calls, as a loop that inspects one round at a time does;
* ``batched``: one call per training set or test set with every round,
  ``rounds=range(R)``, i.e. ``1 + T`` calls.

Both sides are warmed up (compiled) first; ``--repeats`` interleaved
repeats, the minimum is reported, and the two sides' outputs are checked to
agree. The ratio fresh / predictor is the number to read (absolute times on a
shared 2-core machine are noise). Writes ``benchmarks/results/predictor.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

import sdtheory as sd

HERE = os.path.dirname(os.path.abspath(__file__))


def problem(n, d, k, test_sets, n_test, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)) / np.sqrt(d)
    y = np.eye(k)[rng.integers(0, k, n)]
    tests = [rng.normal(size=(n_test, d)) / np.sqrt(d) for _ in range(test_sets)]
    return x, y, tests


def with_predictor(x, y, tests, lam, num_rounds, layout):
    p = sd.predictor(y, lam=lam, features=x)
    if layout == "batched":
        return [p.train_outputs(num_rounds=num_rounds)] + [
            p.test_outputs(num_rounds=num_rounds, test_features=xt) for xt in tests
        ]
    out = []
    for r in range(num_rounds):
        out.append(p.train_outputs(rounds=[r]))
        out += [p.test_outputs(rounds=[r], test_features=xt) for xt in tests]
    return out


def fresh(x, y, tests, lam, num_rounds, layout):
    if layout == "batched":
        return [sd.sd_outputs(y, lam=lam, num_rounds=num_rounds, features=x)] + [
            sd.closed_form.sd_test_outputs(y, lam=lam, num_rounds=num_rounds, features=x, test_features=xt)
            for xt in tests
        ]
    out = []
    for r in range(num_rounds):
        out.append(sd.sd_outputs(y, lam=lam, rounds=[r], features=x))
        out += [sd.closed_form.sd_test_outputs(y, lam=lam, rounds=[r], features=x, test_features=xt) for xt in tests]
    return out


def _timed(fn):
    """``(output, wall s, CPU s)``."""
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()  # public functions return NumPy arrays: the work is done
    return out, time.perf_counter() - t0, time.process_time() - c0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=5000, help="training instances N (default 5000)")
    ap.add_argument("--d", type=int, default=256, help="feature dimension (default 256)")
    ap.add_argument("--k", type=int, default=10, help="classes K (default 10)")
    ap.add_argument("--test-sets", type=int, default=5, help="number of test sets T (default 5)")
    ap.add_argument("--n-test", type=int, default=1000, help="points per test set (default 1000)")
    ap.add_argument("--num-rounds", type=int, default=20, help="rounds R: rounds 0..R-1 (default 20)")
    ap.add_argument("--lam", type=float, default=1e-3)
    ap.add_argument("--repeats", type=int, default=3, help="interleaved timed repeats (min reported)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=os.path.join(HERE, "results", "predictor.json"))
    a = ap.parse_args(argv)
    if min(a.n, a.d, a.k - 1, a.test_sets, a.n_test, a.num_rounds, a.repeats) < 1:
        ap.error("every size must be >= 1 (and --k >= 2)")

    x, y, tests = problem(a.n, a.d, a.k, a.test_sets, a.n_test, a.seed)
    report = {
        "problem": {
            "n": a.n,
            "d": a.d,
            "k": a.k,
            "test_sets": a.test_sets,
            "n_test": a.n_test,
            "num_rounds": a.num_rounds,
            "lam": a.lam,
            "seed": a.seed,
            "repeats": a.repeats,
        },
        "cpu_count": os.cpu_count(),
        "load_average_1min_at_start": os.getloadavg()[0],
    }
    for layout in ("per_round", "batched"):
        calls = a.num_rounds * (1 + a.test_sets) if layout == "per_round" else 1 + a.test_sets
        ours = lambda: with_predictor(x, y, tests, a.lam, a.num_rounds, layout)  # noqa: E731
        base = lambda: fresh(x, y, tests, a.lam, a.num_rounds, layout)  # noqa: E731
        ours()  # compile
        base()
        t_ours, t_base, c_ours, c_base = [], [], [], []
        for _ in range(a.repeats):
            out_p, t, c = _timed(ours)
            t_ours.append(t)
            c_ours.append(c)
            out_f, t, c = _timed(base)
            t_base.append(t)
            c_base.append(c)
        diff = max(float(np.max(np.abs(np.asarray(u) - np.asarray(v)))) for u, v in zip(out_p, out_f, strict=False))
        ratio = min(t_base) / min(t_ours)
        report[layout] = {
            "calls": calls,
            "predictor_s": min(t_ours),
            "fresh_s": min(t_base),
            "ratio_fresh_over_predictor": ratio,
            "max_abs_diff": diff,
            "raw_seconds": {"predictor": t_ours, "fresh": t_base},
            "raw_cpu_seconds": {"predictor": c_ours, "fresh": c_base},
        }
        print(
            f"{layout:>9s}: {calls:4d} evaluations (rounds 0..{a.num_rounds - 1}, train + {a.test_sets} test "
            f"sets): predictor {min(t_ours):7.3f} s | fresh calls {min(t_base):7.3f} s | "
            f"fresh/predictor = {ratio:6.1f}x | max |diff| {diff:.1e}",
            flush=True,
        )
    report["load_average_1min_at_end"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    tmp = a.out + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(report, fh, indent=2)
    os.replace(tmp, a.out)
    print(f"wrote {a.out}")
    return report


if __name__ == "__main__":
    main()
