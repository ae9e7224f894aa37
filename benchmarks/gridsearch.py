"""GridSearchCV of the estimator against the same search of scikit-learn's LogisticRegression, in one process.

Usage::

    python benchmarks/gridsearch.py

Data: scikit-learn's bundled digits (:func:`sdtheory.data.load_digits`, seed 0:
1347 training instances), the ``standardized`` feature map, the given (clean)
labels. Searches, each with the same 5 stratified folds:

* ``sd``: ``GridSearchCV(SelfDistillationClassifier(), {"lam": LAMS,
  "num_rounds": (1, 2, 3)}, cv=5)``: 9 candidates x 5 folds, then the refit;
* ``logreg``: ``GridSearchCV(LogisticRegression(solver="lbfgs"), {"C": 1/(lam
  N_fold)}, cv=5)`` over the same lam values (``N_fold`` = the folds' training
  size, 4/5 of the data): 3 candidates x 5 folds, then the refit.

The estimator's searches run first in a fresh process, so its time includes
every compilation (no persistent compilation cache); the same search is then
run again in the same process (what every later search of a session costs).
Recorded: wall and CPU
seconds (``time.process_time``) of each search and the 1-minute load average
before it; the estimator's number of XLA compilations
(``jax.monitoring``); the two searches' best parameters and CV scores. One
thread on both sides (set below). Writes ``benchmarks/results/gridsearch.json``.
"""

from __future__ import annotations

import os

os.environ["XLA_FLAGS"] = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"

import argparse  # noqa: E402
import importlib.metadata  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import jax  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.model_selection import GridSearchCV, StratifiedKFold  # noqa: E402

import sdtheory as sd  # noqa: E402
from sdtheory import data as D  # noqa: E402

LAMS = (1e-4, 1e-3, 1e-2)
ROUNDS = (1, 2, 3)
COMPILES = [0]


def _count(event: str, *args, **kwargs) -> None:
    if event == "/jax/core/compile/backend_compile_duration":
        COMPILES[0] += 1


def timed(fn):
    load = os.getloadavg()[0]
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, {
        "wall_s": round(time.perf_counter() - w0, 3),
        "cpu_s": round(time.process_time() - c0, 3),
        "load_before": round(load, 2),
    }


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "gridsearch.json"), help="results file")
    args = ap.parse_args(argv)
    ds = D.load_digits(seed=0)
    x, _ = D.make_features("standardized", ds.features)
    y = ds.labels
    folds = list(StratifiedKFold(5, shuffle=True, random_state=0).split(x, y))
    n_fold = len(folds[0][0])
    jax.monitoring.register_event_duration_secs_listener(_count)

    sd_search = GridSearchCV(sd.SelfDistillationClassifier(), {"lam": list(LAMS), "num_rounds": list(ROUNDS)}, cv=folds)
    sd_fitted, sd_time = timed(lambda: sd_search.fit(x, y))
    sd_time["compilations"] = COMPILES[0]
    _, sd_warm = timed(lambda: GridSearchCV(sd_search.estimator, sd_search.param_grid, cv=folds).fit(x, y))
    sd_warm["compilations"] = COMPILES[0] - sd_time["compilations"]
    lr_search = GridSearchCV(
        LogisticRegression(solver="lbfgs", max_iter=10_000), {"C": [1.0 / (lam * n_fold) for lam in LAMS]}, cv=folds
    )
    lr_fitted, lr_time = timed(lambda: lr_search.fit(x, y))
    result = {
        "data": f"digits, standardized, {len(y)} training instances, 5 stratified folds of {n_fold}",
        "machine": {
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "jax": importlib.metadata.version("jax"),
            "sklearn": importlib.metadata.version("scikit-learn"),
        },
        "sd": {
            "grid": {"lam": LAMS, "num_rounds": ROUNDS},
            "fits": len(LAMS) * len(ROUNDS) * len(folds) + 1,
            "first_search": sd_time,
            "second_search": sd_warm,
            "best_params": sd_fitted.best_params_,
            "best_score": round(float(sd_fitted.best_score_), 4),
        },
        "logreg": {
            "grid": {"C": [round(1.0 / (lam * n_fold), 6) for lam in LAMS]},
            "fits": len(LAMS) * len(folds) + 1,
            **lr_time,
            "best_params": lr_fitted.best_params_,
            "best_score": round(float(lr_fitted.best_score_), 4),
        },
        "wall_ratio_sd_over_logreg": {
            "first_search": round(sd_time["wall_s"] / lr_time["wall_s"], 2),
            "second_search": round(sd_warm["wall_s"] / lr_time["wall_s"], 2),
        },
    }
    print(json.dumps(result, indent=1))
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
