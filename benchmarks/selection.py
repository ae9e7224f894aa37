"""Round selection from one fit per lam, against LogisticRegression tuned on the same noisy labels.

Usage::

    python benchmarks/selection.py            # 3 noise rates x 5 seeds (a few minutes on one core)
    python benchmarks/selection.py --quick    # 2 noise rates x 2 seeds

Data: scikit-learn's bundled digits (:func:`sdtheory.data.load_digits`, seed 0:
1347 train / 450 test), the package's ``standardized`` feature map (centred,
unit-norm rows, :func:`sdtheory.data.make_features`). The training labels get
symmetric noise at rate ``eta`` (:func:`sdtheory.sample_labels`, seed
``100 + s``); the test labels stay clean and are used only to score. Every
method sees only the noisy training labels:

* ``sd-holdout``: ``GridSearchCV(SelfDistillationClassifier(num_rounds=R,
  select_round="holdout"), {"lam": LAMS}, cv=5)``: each candidate lam is one
  chain per fold; the refitted estimator picks its round on a 20% held-out split.
* ``sd-cv``: ``GridSearchCV(..., scoring=round_scorer, refit=False)``: the
  5-fold mean agreement of every (lam, round) from one chain per lam and fold;
  then one fit on all the data with ``select_round`` = that round.
* ``logreg``: ``GridSearchCV(LogisticRegression(), {"C": 1/(lam N)}, cv=5)``,
  the same lam grid (scikit-learn's C at the training size).

For each SD method, ``oracle`` is the best clean test accuracy over the rounds
of the same fitted chain (what a clean-label oracle would pick) and ``gap`` the
oracle minus the selected round's accuracy, in points. Times: wall seconds and
CPU seconds (``time.process_time``, this process) of the whole search and refit,
with the 1-minute load average (``os.getloadavg``) when it started. One thread
(set below). Writes ``benchmarks/results/selection.md`` (``--quick``:
``selection_quick.md``).
"""

from __future__ import annotations

import os

os.environ["XLA_FLAGS"] = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"

import argparse  # noqa: E402
import pickle  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402

import sdtheory as sd  # noqa: E402
from sdtheory import data as D  # noqa: E402

LAMS = (1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2)
NUM_ROUNDS = 8
CV = 5


def timed(fn):
    """``(result, wall s, CPU s, 1-min load average at the start)``."""
    load = os.getloadavg()[0]
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w0, time.process_time() - c0, load


def sd_holdout(x, y):
    from sklearn.model_selection import GridSearchCV

    est = sd.SelfDistillationClassifier(num_rounds=NUM_ROUNDS, select_round="holdout")
    search = GridSearchCV(est, {"lam": list(LAMS)}, cv=CV).fit(x, y)
    best = search.best_estimator_
    return best, best.best_round_


def sd_cv(x, y):
    from sklearn.model_selection import GridSearchCV

    from sdtheory.estimator import round_scorer

    est = sd.SelfDistillationClassifier(num_rounds=NUM_ROUNDS)
    search = GridSearchCV(est, {"lam": list(LAMS)}, cv=CV, scoring=round_scorer, refit=False).fit(x, y)
    means = np.array([search.cv_results_[f"mean_test_round_{r}"] for r in range(NUM_ROUNDS)])  # (R, lams)
    r, i = np.unravel_index(np.argmax(means), means.shape)  # first maximum: the earliest round, then smallest lam
    best = sd.SelfDistillationClassifier(lam=LAMS[i], num_rounds=NUM_ROUNDS, select_round=int(r)).fit(x, y)
    return best, int(r)


def logreg(x, y):
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV

    n_fit = len(y) * (CV - 1) / CV  # C = 1/(lam N) at the size each candidate is fitted on
    grid = {"C": [1.0 / (lam * n_fit) for lam in LAMS]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence warnings at the largest C: reported by the accuracy
        search = GridSearchCV(LogisticRegression(max_iter=2000), grid, cv=CV).fit(x, y)
    return search.best_estimator_


def pickle_sizes():
    """Pickle bytes of a fitted estimator (3 rounds) and of LogisticRegression on the same 2,000 x 128 data."""
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(5)
    x = rng.normal(size=(2000, 128))
    y = rng.integers(0, 10, 2000)
    x += np.eye(10, 128)[y] * 2.0
    est = sd.SelfDistillationClassifier(lam=1e-3, num_rounds=3).fit(x, y)
    full = sd.SelfDistillationClassifier(lam=1e-3, num_rounds=3, pickle_predictor=True).fit(x, y)
    ref = LogisticRegression(C=1.0 / (1e-3 * len(y)), max_iter=500).fit(x, y)
    return {name: len(pickle.dumps(m)) for name, m in (("sd", est), ("sd_pickle_predictor", full), ("logreg", ref))}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="2 noise rates x 2 seeds")
    args = p.parse_args(argv)
    rates, seeds = ((0.3, 0.5), 2) if args.quick else ((0.3, 0.4, 0.5), 5)
    ds = D.load_digits(seed=0)
    x, xt = D.make_features("standardized", ds.features, ds.test_features)
    # compile once outside the timings (both paths use the same solver)
    sd.SelfDistillationClassifier(num_rounds=NUM_ROUNDS).fit(x[:200], ds.labels[:200])
    rows = []
    for eta in rates:
        C = sd.corruption_matrix("symmetric", ds.num_classes, eta)
        for s in range(seeds):
            noisy = np.asarray(sd.sample_labels(jax.random.key(100 + s), ds.labels, C))
            row = {"eta": eta, "seed": s, "noise": float(np.mean(noisy != ds.labels))}
            for name, fn in (("sd-holdout", sd_holdout), ("sd-cv", sd_cv)):
                (best, r), wall, cpu, load = timed(lambda fn=fn: fn(x, noisy))
                acc = best.round_score(xt, ds.test_labels)
                row[name] = dict(
                    lam=best.lam, round=r, acc=acc[r], oracle=acc.max(), oracle_round=int(np.argmax(acc)), wall=wall,
                    cpu=cpu, load=load,
                )  # fmt: skip
            lr, wall, cpu, load = timed(lambda: logreg(x, noisy))
            row["logreg"] = dict(C=lr.C, acc=lr.score(xt, ds.test_labels), wall=wall, cpu=cpu, load=load)
            rows.append(row)
            h, c = row["sd-holdout"], row["sd-cv"]
            print(
                f"eta {eta} seed {s}: holdout r{h['round']} {h['acc']:.3f}/{h['oracle']:.3f}, "
                f"cv r{c['round']} {c['acc']:.3f}/{c['oracle']:.3f}, logreg {row['logreg']['acc']:.3f}",
                flush=True,
            )
    sizes = pickle_sizes()
    out = Path(__file__).parent / "results" / ("selection_quick.md" if args.quick else "selection.md")
    out.write_text(report(rows, sizes, rates))
    print(f"wrote {out}")


def report(rows, sizes, rates) -> str:
    lines = [
        "# Round selection from one fit per lam vs LogisticRegression (benchmarks/selection.py)",
        "",
        f"Digits (1347 train / 450 clean test), standardized feature map, symmetric noise on the training "
        f"labels, lam grid {list(LAMS)}, num_rounds {NUM_ROUNDS}, {CV}-fold GridSearchCV on the noisy labels. "
        "acc: clean test accuracy of the selected model; oracle: best clean test accuracy over the rounds "
        "of the same chain; gap = oracle - acc (points). Times: wall s / CPU s of search + refit, with the "
        "1-min load average at the start (one thread). "
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}; "
        f"jax {jax.__version__}.",
        "",
        "| eta | seed | noise | method | lam / C | round (oracle's) | acc | oracle | gap | wall s | CPU s | load |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        for name in ("sd-holdout", "sd-cv"):
            m = row[name]
            lines.append(
                f"| {row['eta']} | {row['seed']} | {row['noise']:.3f} | {name} | lam {m['lam']:g} | "
                f"{m['round']} ({m['oracle_round']}) | {m['acc']:.3f} | {m['oracle']:.3f} | "
                f"{100 * (m['oracle'] - m['acc']):.1f} | {m['wall']:.1f} | {m['cpu']:.1f} | {m['load']:.2f} |"
            )
        m = row["logreg"]
        lines.append(
            f"| {row['eta']} | {row['seed']} | {row['noise']:.3f} | logreg | C {m['C']:.3g} | | {m['acc']:.3f} | | | "
            f"{m['wall']:.1f} | {m['cpu']:.1f} | {m['load']:.2f} |"
        )
    lines += [
        "",
        "## Per noise rate (mean over seeds)",
        "",
        "| eta | method | acc | oracle | gap mean | gap max | seeds with gap > 1 | CPU s | load |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for eta in rates:
        sub = [r for r in rows if r["eta"] == eta]
        for name in ("sd-holdout", "sd-cv", "logreg"):
            ms = [r[name] for r in sub]
            acc = np.mean([m["acc"] for m in ms])
            cpu, load = np.mean([m["cpu"] for m in ms]), np.mean([m["load"] for m in ms])
            if name == "logreg":
                lines.append(f"| {eta} | {name} | {acc:.3f} | | | | | {cpu:.1f} | {load:.2f} |")
                continue
            gaps = np.array([100 * (m["oracle"] - m["acc"]) for m in ms])
            lines.append(
                f"| {eta} | {name} | {acc:.3f} | {np.mean([m['oracle'] for m in ms]):.3f} | {gaps.mean():.2f} | "
                f"{gaps.max():.1f} | {int(np.sum(gaps > 1.0 + 1e-9))} of {len(gaps)} | {cpu:.1f} | {load:.2f} |"
            )
    lines += [
        "",
        "## Pickle size (2,000 x 128, 10 classes, 3 rounds)",
        "",
        f"SelfDistillationClassifier: {sizes['sd']:,} bytes; with pickle_predictor=True: "
        f"{sizes['sd_pickle_predictor']:,} bytes; LogisticRegression: {sizes['logreg']:,} bytes "
        f"(ratio {sizes['sd'] / sizes['logreg']:.1f}x).",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
