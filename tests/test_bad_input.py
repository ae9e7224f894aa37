"""Bad input, property-based: malformed values thrown at every public function, one argument at a time.

For every public function of ``sdtheory.__all__`` (and the simple public
functions of ``sdtheory.data``, ``sdtheory.montecarlo``, ``sdtheory.io`` and
``sdtheory.experiments``) a table gives valid baseline keyword arguments. For
each argument, hypothesis draws a malformed value of the kind the baseline is
(NaN, inf, negative, zero, wrong shape, wrong dtype, bool, string, empty,
ragged list, out-of-range and huge ints, bad keys, bad paths...) plus random
scalars, substitutes it, and calls the function. The property:

* it raises ``ValueError`` or ``TypeError`` whose message contains the
  argument's name (or an alias listed in the table), or
* it returns, and every floating leaf of the result is finite (except where
  the function documents non-finite values: ``margin`` is ``inf`` without
  corrupted labels, an empty group of ``split_accuracy`` is NaN, ...).

Any other exception (``IndexError``, ``OverflowError``, a JAX error...), a
message that does not name the argument, a non-finite result or a call that
hangs fails the test. The exact solver, the Monte Carlo engine and the real
digits are marked ``slow``.
"""

from __future__ import annotations

import atexit
import dataclasses
import functools
import os
import shutil
import signal
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import sdtheory as sd
from sdtheory import data as D
from sdtheory import experiments as E
from sdtheory import io as sio
from sdtheory import montecarlo as mc

# --------------------------------------------------------------------------
# A small valid problem (K = 3 classes of 2 instances, d = 4 features)
# --------------------------------------------------------------------------

K = 3
CLASSES = np.array([0, 0, 1, 1, 2, 2])
NOISY = np.array([0, 1, 1, 2, 2, 0])
Y = np.eye(K)[NOISY]
_rng = np.random.default_rng(0)
X = _rng.normal(size=(6, 4))
XT = _rng.normal(size=(2, 4))
G = X @ X.T
CLUSTER_LABELS = np.repeat(np.arange(3), 4)
CLUSTERED = np.eye(3)[CLUSTER_LABELS] + 0.1 * np.random.default_rng(1).normal(size=(12, 3))
GT = XT @ X.T
P = np.array([[0.6, 0.3, 0.1], [0.2, 0.5, 0.3], [0.1, 0.7, 0.2], [0.3, 0.3, 0.4], [0.1, 0.2, 0.7], [0.5, 0.4, 0.1]])
C = np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8]])
MEANS = np.array([[1.0, 0.2, 0.0, 0.1], [0.9, 0.3, 0.1, 0.0], [0.0, 0.1, 1.0, 0.5]])
COEF = _rng.normal(size=(1, 6, 3)) * 0.1
KEY = jax.random.key(0)

#: Files and directories of the io/data cases live here (removed at exit).
WORK = Path(tempfile.mkdtemp(prefix="sdtheory-bad-input-"))
atexit.register(shutil.rmtree, WORK, True)
NPZ = WORK / "feats.npz"
np.savez(NPZ, features=X, labels=CLASSES)
AN_EXISTING_DIR = WORK / "a-directory"
AN_EXISTING_DIR.mkdir()


@functools.cache
def _run_dir() -> Path:
    """A committed run directory with its manifest (made on first use)."""
    path = WORK / "run"
    with sio.run_directory(path, script="test", parameters={"a": 1}) as stage:
        (stage / "x.txt").write_text("x")
    return path


# --------------------------------------------------------------------------
# Malformed values, by the kind of the baseline value
# --------------------------------------------------------------------------

NAN, INF = float("nan"), float("inf")
#: Integers beyond int64: every count, index or seed must reject them by name.
HUGE_INTS = [2**64, 2**63, -(2**63) - 1, 10**30]
RAGGED = [[0, 1], [2]]


def _key_bad() -> list:
    return [
        0,
        7,
        1.5,
        True,
        "key",
        None,
        [0, 0],
        np.zeros(2),
        np.zeros(3, np.uint32),
        np.zeros((2, 2), np.uint32),
        jax.random.split(KEY, 2),
        np.array(0),
    ]


BOOL_BAD = ["yes", "", 2, 0.5, np.array([True, False]), [True], NAN, None]
STR_BAD = ["nonsense", "", 5, 0.5, True, ["closed"], b"closed", None, NAN]
CALLABLE_BAD = ["abc", 5, 0.5, True, [print]]
NONE_BAD = [NAN, INF, -1, 0, 2.5, True, "abc", [], RAGGED, 1j, *HUGE_INTS]
MAPPING_BAD = [5, "abc", [1, 2], None, {"a": object()}, {"a": NAN}, {("t",): 1}, {"a": {"b": {1, 2}}}]
PATH_BAD = [5, 1.5, None, "", "bad\0name", ["a"], b"\xff\xfe", True]
BYTES_BAD = [5, "text", None, [1, 2], 1.5]


def _scalar_bad(v) -> list:
    out = [
        NAN,
        INF,
        -INF,
        -1.0,
        -1,
        0,
        0.0,
        1e308,
        -0.5,
        3.5,
        True,
        False,
        "abc",
        "0.5",
        [v],
        [[v, v]],
        [],
        RAGGED,
        1j,
        np.float32(NAN),
        np.array([v, v]),
        *HUGE_INTS,
    ]
    if isinstance(v, (int, np.integer)):
        out += [float(v), v + 0.5, np.int8(-1), np.uint64(2**64 - 1)]
    else:
        out += [np.float32(v), -v, 1.0 - v if 0 <= v <= 1 else v]
    return out


SEQUENCE_BAD = [5, "abc", None, [], RAGGED, [object()], [[None]], {"a": 1}]


def _array_bad(value) -> list:
    try:
        a = np.asarray(value)
    except ValueError:  # a sequence of objects (devices, rows): not a numeric array
        return SEQUENCE_BAD
    if a.dtype == object:
        return SEQUENCE_BAD
    out: list = ["abc", 0.5, None, [], RAGGED, a.astype(bool), a.astype(str), a.astype(complex), a.astype(object)]
    out += [a[:0], np.zeros((0,) * max(a.ndim, 1)), a.reshape(-1)[:1].reshape(()), a[None]]
    if a.ndim >= 1 and a.shape[0] > 1:
        out.append(a[:-1])
        rows = a.tolist()
        if a.ndim >= 2:
            rows[-1] = rows[-1][:-1]
            out.append(rows)  # ragged rows
        else:
            out.append([rows, rows[:-1]])
    if a.ndim >= 2:
        out += [a.reshape(-1), a[..., None], a[:, :-1]]
        if a.shape[0] != a.shape[1]:
            out.append(a.T)
    if a.ndim == 1:
        out.append(a[:, None])
    if np.issubdtype(a.dtype, np.floating):
        for bad in (NAN, INF, -INF):
            b = a.copy()
            b.reshape(-1)[0] = bad
            out.append(b)
        out += [-a, a + 1.0, a * 1e6]
    if np.issubdtype(a.dtype, np.integer):
        out += [a.astype(float), a + 0.5, a - 1, a + int(a.max()) + 1]
        for bad in (-1, 2**31, int(np.iinfo(np.int64).max)):
            b = a.astype(np.int64).copy()
            b.reshape(-1)[-1] = bad
            out.append(b)
        big = a.astype(object)
        big.reshape(-1)[-1] = 2**64
        out.append(big)
        out.append(a.tolist())  # plain lists are valid input too
    return out


def _seq_str_bad(value) -> list:
    first = value[0]
    return [first, (), ("nonsense",), (5,), [[first]], 5, None, (first, first), RAGGED]


def _namedtuple_bad(value) -> st.SearchStrategy:
    fields = [f for f in value._fields]
    return st.sampled_from(fields).flatmap(
        lambda f: st.sampled_from(_plain_bad(getattr(value, f))).map(lambda v: value._replace(**{f: v}))
    )


def _is_key(v) -> bool:
    dt = getattr(v, "dtype", None)
    return dt is not None and (
        jax.dtypes.issubdtype(dt, jax.dtypes.prng_key) or (np.dtype(dt) == np.uint32 and np.shape(v) == (2,))
    )


def _plain_bad(v) -> list:
    """Malformed values for a baseline value (a list; no random part)."""
    if _is_key(v):
        return _key_bad()
    if isinstance(v, (bool, np.bool_)):
        return BOOL_BAD
    if isinstance(v, str):
        return STR_BAD
    if isinstance(v, bytes):
        return BYTES_BAD
    if isinstance(v, os.PathLike):
        return PATH_BAD + [AN_EXISTING_DIR, WORK / "missing" / "deeper" / "f.npz", NPZ.with_suffix(".txt")]
    if v is None:
        return NONE_BAD
    if isinstance(v, (int, float, np.integer, np.floating)):
        return _scalar_bad(v)
    if isinstance(v, tuple) and v and all(isinstance(x, str) for x in v):
        return _seq_str_bad(v)
    if isinstance(v, dict):
        return MAPPING_BAD
    if callable(v):
        return CALLABLE_BAD
    if isinstance(v, (np.ndarray, jax.Array, list, tuple)):
        return _array_bad(v)
    raise AssertionError(f"no malformed values for {type(v).__name__}")


#: Random integers of the fast cases: counts around every validator's boundary and a few valid sizes.
INTS = st.integers(-2, 5)
#: Random integers of the slow (exact solver, Monte Carlo) cases. Their counts are static sizes, and each
#: valid value compiles a new exact program (10-15 CPU s each: 3, 4 and 5 cost 3 compiles per argument for
#: nothing more than 1 and 2 check); the boundaries (negative, zero, one) are the same.
SLOW_INTS = st.integers(-2, 2)


def malformed(v, ints: st.SearchStrategy = INTS) -> st.SearchStrategy:
    """Hypothesis strategy of malformed (and random) values for an argument whose valid value is ``v``
    (``ints``: the random integers drawn for an integer argument)."""
    if isinstance(v, tuple) and hasattr(v, "_fields"):  # a NamedTuple (SimConfig, Spectrum, ExactResult)
        return st.one_of(_namedtuple_bad(v), st.sampled_from([5, "abc", None, tuple(v), dict(v._asdict())]))
    plain = st.sampled_from(_plain_bad(v))
    if isinstance(v, (bool, np.bool_)):
        return plain
    if isinstance(v, (int, np.integer)):
        return st.one_of(plain, ints)  # small: static sizes compile once per value
    if isinstance(v, (float, np.floating)):
        return st.one_of(plain, st.floats(allow_nan=True, allow_infinity=True))
    return plain


# --------------------------------------------------------------------------
# The table of functions
# --------------------------------------------------------------------------


@dataclasses.dataclass
class Case:
    fn: Callable
    kwargs: Callable[[], dict]
    aliases: dict = dataclasses.field(default_factory=dict)  # arg -> extra names the message may use
    nonfinite_ok: bool = False  # documented non-finite results (inf margin, NaN for an empty group)
    slow: bool = False
    skip: tuple = ()  # arguments not fuzzed (with the reason in a comment)
    name_is_value: tuple = ()  # arguments (paths) whose message may name the offending value itself
    missing_ok: tuple = ()  # arguments (paths of files to read) for which FileNotFoundError is the answer


def _spec():
    return sd.spectral.spectrum(gram=G)


def _config(**kw):
    base = dict(num_classes=2, per_class=3, num_rounds=2, lam=1e-2, methods=("sd_closed",))
    base.update(kw)
    return mc.make_config(**base)


THEORY = dict(fractions=C, c=0.4, d=0.1, lam=0.1, per_class=2)
EXACT_FLAG = dict(on_failure="flag", max_iter=60)
_MAKE_CONFIG_DEFAULTS = dict(
    num_classes=3,
    per_class=2,
    c=0.4,
    d=0.1,
    lam=1e-3,
    num_rounds=2,
    noise="symmetric",
    methods=("sd_closed", "pll_closed"),
    dim=None,
    exact_labels=False,
    exact_tol=1e-9,
    exact_max_iter=100,
    exact_solver="newton-cg",
    pll_loss="ce",
    pll_q=0.7,
    clusters=None,
    tie_tol=1e-10,
    temperature=1.0,
    xi=1.0,
    hard=False,
)

CASES = {
    # spectra and the closed form
    "spectrum[gram]": Case(sd.spectral.spectrum, lambda: dict(gram=G, validate=True)),
    "spectrum[features]": Case(sd.spectral.spectrum, lambda: dict(features=X)),
    "gram_spectrum": Case(sd.gram_spectrum, lambda: dict(gram=G, validate=True)),
    "feature_spectrum": Case(sd.feature_spectrum, lambda: dict(features=X, method="auto", validate=True)),
    "apply_spectral": Case(
        sd.spectral.apply_spectral,
        lambda: dict(spec=_spec(), fn=lambda s: s / (s + 1.0), y=Y, vanishes_at_zero=False),
        aliases={"spec": ("eigvals", "eigvecs", "Spectrum")},
    ),
    "sd_outputs[gram]": Case(sd.sd_outputs, lambda: dict(targets=Y, lam=0.1, rounds=[0, 2], gram=G)),
    "sd_outputs[features]": Case(sd.sd_outputs, lambda: dict(targets=Y, lam=0.1, num_rounds=2, features=X)),
    "sd_outputs[variant]": Case(
        sd.sd_outputs,
        lambda: dict(targets=Y, lam_schedule=[0.1, 0.2], num_rounds=2, features=X, temperature=2.0, xi=0.5, hard=False),
        aliases={"lam_schedule": ("lam",)},
    ),
    "predictor[variant]": Case(
        sd.predictor,
        lambda: dict(targets=Y, lam_schedule=[0.1, 0.2], features=X, temperature=0.5, xi=0.5, hard=True),
        aliases={"lam_schedule": ("lam",)},
    ),
    "exact_outputs[variant]": Case(
        sd.exact_outputs,
        lambda: dict(
            targets=Y, lam_schedule=[0.1, 0.2], num_rounds=2, gram=G, temperature=2.0, xi=0.5, hard=False, **EXACT_FLAG
        ),
        aliases={"lam_schedule": ("lam",), "num_rounds": ("lam_schedule",)},
        slow=True,
    ),
    "sd_test_outputs[features]": Case(
        sd.closed_form.sd_test_outputs, lambda: dict(targets=Y, lam=0.1, rounds=[0, 1], features=X, test_features=XT)
    ),
    "sd_test_outputs[gram]": Case(
        sd.closed_form.sd_test_outputs, lambda: dict(targets=Y, lam=0.1, num_rounds=2, gram=G, test_gram=GT)
    ),
    "kernel_ridge_sd": Case(sd.closed_form.kernel_ridge_sd, lambda: dict(targets=Y, lam=0.1, rounds=[0, 1], gram=G)),
    "predictions": Case(sd.predictions, lambda: dict(outputs=P)),
    "predictor[closed]": Case(sd.predictor, lambda: dict(targets=Y, lam=0.1, features=X, model="closed")),
    "predictor[spectrum]": Case(
        sd.predictor,
        lambda: dict(targets=Y, lam=0.1, spectrum=_spec()),
        aliases={"spectrum": ("eigvals", "eigvecs", "Spectrum")},
    ),
    "predictor[exact]": Case(
        sd.predictor,
        lambda: dict(
            targets=Y,
            lam=0.1,
            gram=G,
            model="exact",
            num_rounds=1,
            loss="ce",
            q=0.7,
            tol=1e-9,
            solver="lbfgs",
            **EXACT_FLAG,
        ),
        slow=True,
    ),
    "exact_outputs": Case(
        sd.exact_outputs,
        lambda: dict(
            targets=Y, lam=0.1, num_rounds=1, gram=G, loss="gce", q=0.7, tol=1e-9, solver="lbfgs", **EXACT_FLAG
        ),
        slow=True,
    ),
    "exact_predict[gram]": Case(
        sd.exact_predict, lambda: dict(result_or_coef=COEF, test_gram=GT), aliases={"result_or_coef": ("coef",)}
    ),
    "exact_predict[features]": Case(
        sd.exact_predict,
        lambda: dict(result_or_coef=COEF, test_features=XT, features=X),
        aliases={"result_or_coef": ("coef",)},
    ),
    # the block model
    "balanced_block_eigenvalues": Case(
        sd.block.balanced_block_eigenvalues, lambda: dict(per_class=2, num_classes=3, c=0.4, d=0.1)
    ),
    "block_classes": Case(sd.block_classes, lambda: dict(class_sizes=[2, 2, 2])),
    "block_factors": Case(sd.block.block_factors, lambda: dict(per_class=2, num_classes=3, c=0.4, d=0.1, lam=0.1)),
    "block_gram": Case(sd.block_gram, lambda: dict(classes=CLASSES, c=0.4, d=0.1, num_classes=3)),
    "block_outputs": Case(
        sd.block_outputs, lambda: dict(targets=Y, classes=CLASSES, c=0.4, d=0.1, lam=0.1, rounds=[0, 1])
    ),
    "block_spectrum": Case(sd.block.block_spectrum, lambda: dict(class_sizes=[2, 2, 2], c=0.4, d=0.1)),
    "sample_block_features": Case(
        sd.sample_block_features, lambda: dict(key=KEY, classes=CLASSES, c=0.4, d=0.1, dim=4, num_classes=3)
    ),
    # label noise
    "condition_threshold": Case(sd.condition_threshold, lambda: dict(kind="cc", num_classes=3, clusters=[0, 0, 1])),
    "confusable_clusters[features]": Case(
        sd.noise.confusable_clusters,
        lambda: dict(class_means_or_features=X, labels=CLASSES, num_clusters=2, threshold_ratio=0.8),
    ),
    "confusable_clusters[means]": Case(
        sd.noise.confusable_clusters, lambda: dict(class_means_or_features=MEANS, threshold_ratio=0.8)
    ),
    "corruption_matrix": Case(sd.corruption_matrix, lambda: dict(kind="symmetric", num_classes=3, eta=0.2)),
    "corruption_matrix[cc]": Case(
        sd.corruption_matrix, lambda: dict(kind="cc", num_classes=3, eta=0.2, clusters=[[0, 1], [2]])
    ),
    "empirical_fractions": Case(
        sd.empirical_fractions, lambda: dict(true_labels=CLASSES, given_labels=NOISY, num_classes=3)
    ),
    "exact_counts": Case(sd.noise.exact_counts, lambda: dict(true_labels=CLASSES, C=C)),
    "max_eta": Case(sd.noise.max_eta, lambda: dict(kind="cc", num_classes=3, clusters=[0, 1, 1])),
    "sample_labels": Case(sd.sample_labels, lambda: dict(key=KEY, true_labels=CLASSES, C=C, exact=False)),
    "validate_corruption_matrix": Case(sd.noise.validate_corruption_matrix, lambda: dict(C=C, atol=1e-8)),
    # correctness and accuracy
    "accuracy": Case(
        sd.accuracy, lambda: dict(outputs_or_predictions=P, true_labels=CLASSES, tie_tol=1e-10, num_classes=K)
    ),
    "correct": Case(sd.correct, lambda: dict(outputs=P, true_labels=CLASSES, tie_tol=1e-10)),
    "first_all_correct": Case(
        sd.metrics.first_all_correct,
        lambda: dict(all_correct=np.array([[False, True, True]] * 2), rounds=np.array([0, 1, 2])),
    ),
    "heldout_accuracy": Case(
        sd.metrics.heldout_accuracy,
        lambda: dict(
            targets=Y, test_labels=np.array([0, 2]), lam=0.1, rounds=[0, 1], features=X, test_features=XT, tie_tol=1e-10
        ),
    ),
    "split_accuracy": Case(
        sd.split_accuracy,
        lambda: dict(outputs_or_predictions=P, true_labels=CLASSES, given_labels=NOISY, tie_tol=1e-10, num_classes=K),
        nonfinite_ok=True,
    ),
    "block_outputs[exact]": Case(
        sd.block_outputs,
        lambda: dict(
            targets=Y, classes=CLASSES, corr=np.eye(K) * 0.3 + 0.1, lam=0.1, rounds=[0, 1], model="exact", **EXACT_FLAG
        ),
        slow=True,
    ),
    "block_type_outputs": Case(
        sd.block_type_outputs,
        lambda: dict(counts=C * 10, c=0.4, d=0.1, lam=0.1, num_rounds=2, model="exact", **EXACT_FLAG),
        slow=True,
    ),
    # theorems
    "all_correct_at": Case(sd.theorems.all_correct_at, lambda: dict(rounds=[0, 1, 5], **THEORY)),
    "all_correct_rounds": Case(sd.all_correct_rounds, lambda: dict(THEORY)),
    "corruption_condition": Case(sd.corruption_condition, lambda: dict(fractions=C)),
    "margin": Case(sd.theorems.margin, lambda: dict(fractions=C), nonfinite_ok=True),
    "max_rounds": Case(sd.max_rounds, lambda: dict(THEORY)),
    "min_rounds": Case(sd.min_rounds, lambda: dict(THEORY)),
    "finite_sample_prediction": Case(
        sd.finite_sample_prediction,
        lambda: dict(C=C, per_class=2, lam=0.1, num_rounds=3, c=0.4, d=0.1, num_draws=4, seed=0, tie_tol=1e-10),
        nonfinite_ok=True,  # quantiles of "never all correct" are inf
    ),
    "finite_sample_prediction[exact]": Case(
        sd.finite_sample_prediction,
        lambda: dict(
            C=C,
            per_class=2,
            lam=0.1,
            num_rounds=2,
            corr=np.eye(K) * 0.3 + 0.1,
            model="exact",
            num_draws=3,
            pll_loss="gce",
            q=0.7,
            **EXACT_FLAG,
        ),
        nonfinite_ok=True,
        slow=True,
    ),
    "min_rounds[exact]": Case(
        sd.min_rounds, lambda: dict(model="exact", search_rounds=20, tie_tol=1e-10, **THEORY, **EXACT_FLAG), slow=True
    ),
    "all_correct_rounds[corr]": Case(
        sd.all_correct_rounds,
        lambda: dict(fractions=C, corr=np.eye(K) * 0.3 + 0.1, lam=0.1, per_class=2, model="closed", search_rounds=20),
    ),
    "pll_accuracy_prediction[exact]": Case(
        sd.pll_accuracy_prediction,
        lambda: dict(num_rounds=2, model="exact", loss="gce", q=0.7, **THEORY, **EXACT_FLAG),
        slow=True,
    ),
    "pll_accuracy_prediction": Case(sd.pll_accuracy_prediction, lambda: dict(num_rounds=2, tie_tol=1e-10, **THEORY)),
    "pll_condition": Case(sd.pll_condition, lambda: dict(THEORY)),
    "log_block_factors": Case(
        sd.theorems.log_block_factors, lambda: dict(per_class=2, num_classes=3, c=0.4, d=0.1, lam=0.1)
    ),
    # PLL and smoothing
    "pll_student[closed]": Case(
        sd.pll_student, lambda: dict(targets=Y, lam=0.1, gram=G, model="closed", loss="ce", num_rounds=2, tie_tol=1e-10)
    ),
    "pll_student[exact]": Case(
        sd.pll_student,
        lambda: dict(
            targets=Y,
            lam=0.1,
            features=X,
            model="exact",
            loss="gce",
            q=0.7,
            num_rounds=2,
            tol=1e-9,
            solver="lbfgs",
            init="zero",
            **EXACT_FLAG,
        ),
        slow=True,
    ),
    "pll_student_block_model": Case(
        sd.refine.pll_student_block_model,
        lambda: dict(targets=Y, classes=CLASSES, c=0.4, d=0.1, lam=0.1, num_rounds=2, tie_tol=1e-10),
    ),
    "top2_targets": Case(sd.top2_targets, lambda: dict(outputs=P, tie_tol=1e-10)),
    "beta_smoothing": Case(
        sd.smoothing.beta_smoothing,
        lambda: dict(key=KEY, label_probs=P[np.arange(6), NOISY], labels=NOISY, num_classes=3, beta=2.0, alpha=0.6),
    ),
    "confidence": Case(sd.smoothing.confidence, lambda: dict(outputs=P)),
    "predictive_diversity": Case(sd.smoothing.predictive_diversity, lambda: dict(outputs=P, normalize=False)),
    "uniform_smoothing": Case(sd.smoothing.uniform_smoothing, lambda: dict(targets=Y, eps=0.1)),
    # Monte Carlo
    "make_config": Case(sd.montecarlo.make_config, lambda: dict(_MAKE_CONFIG_DEFAULTS)),
    "make_config[cc]": Case(
        sd.montecarlo.make_config,
        lambda: dict(num_classes=3, per_class=2, num_rounds=2, noise="cc", clusters=[0, 0, 1]),
    ),
    "run_grid": Case(
        sd.montecarlo.run_grid,
        lambda: dict(
            config=_config(),
            etas=[0.1, 0.3],
            num_seeds=2,
            seed=0,
            lams=None,
            cs=None,
            ds=None,
            chunk_size=None,
            devices=None,
            progress=None,
            completed=None,
            on_chunk=None,
        ),
        nonfinite_ok=True,
        slow=True,
    ),
    "run_grid[sweep]": Case(
        sd.montecarlo.run_grid,
        lambda: dict(
            config=_config(),
            etas=[0.2],
            num_seeds=1,
            lams=[1e-2, 1e-1],
            cs=[0.4, 0.5],
            ds=[0.1],
            chunk_size=4,
            devices=jax.devices()[:1],
            progress=lambda *a: None,
        ),
        nonfinite_ok=True,
        slow=True,
    ),
    "seed_keys": Case(mc.seed_keys, lambda: dict(seed=0, num_seeds=2)),
    # real data
    "load_features": Case(
        D.load_features,
        lambda: dict(path=NPZ, num_classes=3, name="feats"),
        name_is_value=("path",),
        missing_ok=("path",),
    ),
    "load_digits": Case(D.load_digits, lambda: dict(key=None, seed=0, test_fraction=0.25), slow=True),
    "load_digits[key]": Case(D.load_digits, lambda: dict(key=KEY, test_fraction=0.25), slow=True),
    "stratified_split": Case(D.stratified_split, lambda: dict(key=KEY, labels=CLASSES, test_fraction=0.5)),
    "stratified_subset": Case(D.stratified_subset, lambda: dict(key=KEY, labels=CLASSES, per_class=1)),
    "standardize": Case(D.standardize, lambda: dict(train=X, test=XT)),
    "random_relu_features": Case(D.random_relu_features, lambda: dict(key=KEY, train=X, num_features=5, test=XT)),
    "normalize_rows": Case(D.normalize_rows, lambda: dict(train=X, test=XT, center=True)),
    "make_features": Case(
        D.make_features,
        lambda: dict(kind="relu", train=X, test=XT, key=KEY, num_features=5, center=True, normalize=True),
    ),
    "block_statistics": Case(D.block_statistics, lambda: dict(features=X, labels=CLASSES, num_classes=3)),
    # experiments: the simple ones
    "lam_rule": Case(E.lam_rule, lambda: dict(c=0.4, num_instances=6, num_classes=3)),
    "split_key": Case(E.split_key, lambda: dict(seed=0)),
    # the estimated rate needs features whose nearest neighbours share labels more often than chance
    "noisy_label_c": Case(
        E.noisy_label_c, lambda: dict(features=CLUSTERED, labels=CLUSTER_LABELS, num_classes=3, noise_rate=None)
    ),
    "noisy_label_c[rate]": Case(
        E.noisy_label_c, lambda: dict(features=X, labels=CLASSES, num_classes=3, noise_rate=0.2)
    ),
    # io: the simple ones
    "atomic_write_bytes": Case(
        sio.atomic_write_bytes, lambda: dict(path=WORK / "b.bin", data=b"abc"), name_is_value=("path",)
    ),
    "atomic_write_text": Case(
        sio.atomic_write_text, lambda: dict(path=WORK / "t.txt", text="abc"), name_is_value=("path",)
    ),
    "write_json": Case(
        sio.write_json, lambda: dict(path=WORK / "j.json", data={"a": 1}, metadata={"m": 2}), name_is_value=("path",)
    ),
    "write_npz": Case(
        sio.write_npz, lambda: dict(path=WORK / "a.npz", arrays={"x": X}, metadata={"m": 2}), name_is_value=("path",)
    ),
    "write_csv": Case(
        sio.write_csv,
        lambda: dict(path=WORK / "c.csv", columns={"a": [1, 2], "b": [0.5, 1.5]}, metadata={"m": 2}),
        name_is_value=("path",),
    ),
    "save_features": Case(
        sio.save_features,
        lambda: dict(
            path=WORK / "s.npz",
            features=X,
            labels=CLASSES,
            test_features=XT,
            test_labels=np.array([0, 1]),
            num_classes=3,
        ),
        name_is_value=("path",),
    ),
    "to_jsonable": Case(sio.to_jsonable, lambda: dict(obj={"a": np.arange(3), "b": (1.5, "x")}), nonfinite_ok=True),
    "git_revision": Case(sio.git_revision, lambda: dict(path=Path(__file__).parent), name_is_value=("path",)),
    "check_output_dir": Case(
        sio.check_output_dir, lambda: dict(path=WORK / "out", outputs=("*.csv",)), name_is_value=("path",)
    ),
    "work_directory": Case(sio.work_directory, lambda: dict(path=WORK / "out"), name_is_value=("path",)),
    "verify_manifest": Case(sio.verify_manifest, lambda: dict(path=_run_dir()), name_is_value=("path",)),
    "write_checkpoint": Case(
        sio.write_checkpoint,
        lambda: dict(path=WORK / "ck.npz", entries={"0": {"x": X}}, parameters={"seed": 1}),
        name_is_value=("path",),
    ),
    "read_checkpoint": Case(
        sio.read_checkpoint, lambda: dict(path=WORK / "none.npz", parameters={"seed": 1}), name_is_value=("path",)
    ),
    "rows_to_columns": Case(
        sio.rows_to_columns, lambda: dict(rows=[{"a": 1, "b": "x"}], fieldnames=("a", "b")), nonfinite_ok=True
    ),
    "columns_to_rows": Case(
        sio.columns_to_rows,
        lambda: dict(columns={"a": [1, 2], "b": ["x", "y"]}, fieldnames=("a", "b")),
        nonfinite_ok=True,
    ),
    "progress_printer": Case(sio.progress_printer, lambda: dict(prefix="run", stream=None)),
}


def test_every_public_function_is_in_the_table():
    """Every public function (not the types, registries, constants and modules) has a table entry."""
    covered = [c.fn for c in CASES.values()]
    public = {n: getattr(sd, n) for n in sd.__all__}
    # the names that moved from the top level into their modules are public too
    public.update({n: getattr(getattr(sd, path.split(".")[0]), path.split(".")[1]) for n, path in sd._MOVED.items()})
    functions = [n for n, f in public.items() if callable(f) and not isinstance(f, type)]
    missing = [n for n in functions if not any(public[n] is f for f in covered)]
    assert not missing, f"public functions without a bad-input table entry: {missing}"


def test_a_moved_top_level_name_says_where_it_lives():
    """Names that left the package face raise an AttributeError naming their module; the module has them."""
    for name, path in (
        ("margin", "theorems.margin"),
        ("NOISE_KINDS", "noise.KINDS"),
        ("run_grid", "montecarlo.run_grid"),
    ):
        with pytest.raises(AttributeError, match=rf"sdtheory\.{name} lives in its module now: sdtheory\.{path}$"):
            getattr(sd, name)
        module, attr = path.split(".")
        assert hasattr(getattr(sd, module), attr)
    with pytest.raises(AttributeError, match="has no attribute 'no_such_name'"):
        _ = sd.no_such_name


def test_baselines_are_valid():
    """Every baseline call succeeds (so a failure below is the malformed argument's doing)."""
    for name, case in CASES.items():
        if case.slow:
            continue
        _check_result(name, case, _call(case.fn, case.kwargs()))


# --------------------------------------------------------------------------
# The property
# --------------------------------------------------------------------------

# A genuine hang (an unbounded round count) computes without end. The guard counts the process's CPU
# time (ITIMER_PROF, all threads), not wall time: a busy machine (other jobs on the 2 cores, where one
# exact compile took 30 s of wall time for 12 s of CPU) cannot trip it, and 60 CPU seconds are 4 times the
# largest first-call compile seen here.
TIMEOUT_S = 60


class _Hung(Exception):
    pass


def _alarm(signum, frame):
    raise _Hung(f"no answer within {TIMEOUT_S} CPU s")


def _call(fn, kwargs):
    """``fn(**kwargs)`` run in :data:`WORK` (a relative path such as ``""`` lands there, not in the
    repository) and interrupted after :data:`TIMEOUT_S` seconds of CPU time."""
    cwd = os.getcwd()
    os.chdir(WORK)
    try:
        return _call_with_timeout(fn, kwargs)
    finally:
        os.chdir(cwd)


def _call_with_timeout(fn, kwargs):
    old = signal.signal(signal.SIGPROF, _alarm)
    # repeating: an alarm that lands in a callback whose exceptions are ignored (a GC hook) fires again
    signal.setitimer(signal.ITIMER_PROF, TIMEOUT_S, 1.0)
    try:
        return fn(**kwargs)
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.signal(signal.SIGPROF, old)


def _float_leaves(out):
    for leaf in jax.tree_util.tree_leaves(out):
        if isinstance(leaf, (bool, np.bool_, str, bytes)) or leaf is None:
            continue
        if _is_key(leaf) or jax.dtypes.issubdtype(getattr(leaf, "dtype", np.int8), jax.dtypes.prng_key):
            continue
        if isinstance(leaf, (int, float, np.number, np.ndarray, jax.Array)):
            arr = np.asarray(leaf)
            if np.issubdtype(arr.dtype, np.inexact):
                yield arr


def _check_result(label, case, out):
    if case.nonfinite_ok:
        return
    for arr in _float_leaves(out):
        assert np.all(np.isfinite(arr)), f"{label}: returned a non-finite result: {arr!r}"


def _short(v, n=160) -> str:
    text = repr(v)
    return text if len(text) <= n else text[:n] + "..."


def _where(exc) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    return f"{Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else "?"


def check_bad_argument(label: str, arg: str, value: Any) -> None:
    case = CASES[label]
    kwargs = case.kwargs()
    kwargs[arg] = value
    what = f"{label}({arg}={_short(value)})"
    try:
        out = _call(case.fn, kwargs)
    except (ValueError, TypeError) as exc:
        msg = str(exc)
        names = (arg, *case.aliases.get(arg, ()))
        if arg in case.name_is_value and len(str(value)) >= 3:
            names += (str(value), os.fspath(value) if isinstance(value, os.PathLike) else str(value))
        assert any(n in msg for n in names), (
            f"{what}: {type(exc).__name__} does not name {names[0]!r} (from {_where(exc)}): {_short(msg, 400)}"
        )
        return
    except FileNotFoundError as exc:
        assert arg in case.missing_ok, f"{what}: raised FileNotFoundError (from {_where(exc)}): {exc}"
        assert os.fspath(value) in str(exc), f"{what}: FileNotFoundError does not name the file: {exc}"
        return
    except _Hung:
        raise AssertionError(f"{what}: hung (no answer within {TIMEOUT_S} CPU s)") from None
    except Exception as exc:  # noqa: BLE001 - the point: no other exception type may escape
        raise AssertionError(
            f"{what}: raised {type(exc).__name__} (not ValueError/TypeError) from {_where(exc)}: "
            f"{_short(str(exc), 400)}"
        ) from None
    _check_result(what, case, out)


def _pairs(slow: bool) -> list:
    out = []
    for label, case in CASES.items():
        for arg in case.kwargs():
            if arg in case.skip:
                continue
            marks = [pytest.mark.slow] if case.slow else []
            if case.slow == slow:
                out.append(pytest.param(label, arg, marks=marks, id=f"{label}-{arg}"))
    return out


@pytest.mark.parametrize("label,arg", _pairs(slow=False))
@given(data=st.data())
def test_malformed_argument(label, arg, data):
    value = data.draw(malformed(CASES[label].kwargs()[arg]), label=arg)
    check_bad_argument(label, arg, value)


@pytest.mark.parametrize("label,arg", _pairs(slow=True))
@given(data=st.data())
def test_malformed_argument_slow(label, arg, data):
    value = data.draw(malformed(CASES[label].kwargs()[arg], SLOW_INTS), label=arg)
    check_bad_argument(label, arg, value)


# --------------------------------------------------------------------------
# The values the fuzz run reported, pinned (issue 12)
# --------------------------------------------------------------------------


class Pinned(NamedTuple):
    label: str
    arg: str
    value: Any


PINNED = [
    Pinned("block_gram", "c", "abc"),
    Pinned("block_gram", "c", "0.4"),
    Pinned("block_gram", "num_classes", 3.7),
    Pinned("sample_labels", "key", 0),
    Pinned("sample_labels", "key", np.zeros(2)),
    Pinned("sample_block_features", "classes", np.array([0, 1, 5, 1, 2, 2])),
    Pinned("sample_block_features", "num_classes", 3.5),
    Pinned("block_outputs", "classes", CLASSES[None]),
    Pinned("block_gram", "classes", [[0, 1], [2]]),
    Pinned("corruption_matrix", "eta", True),
    Pinned("pll_student_block_model", "d", -8.98846567431158e307),  # the PD check overflowed and accepted it
    Pinned("validate_corruption_matrix", "atol", -1.0),
    Pinned("validate_corruption_matrix", "atol", NAN),
    Pinned("validate_corruption_matrix", "C", C.astype(bool)),
    Pinned("stratified_subset", "labels", np.array([0.0, 1.0, NAN, 1.0])),
    Pinned("stratified_subset", "labels", np.array([], dtype=int)),
    Pinned("stratified_split", "labels", np.array([], dtype=int)),
    Pinned("max_eta", "kind", "symmetric"),  # with clusters=: refused for a kind that has none
    Pinned("empirical_fractions", "num_classes", 10**7),
    Pinned("make_config", "methods", "sd_closed"),
    Pinned("make_config", "noise", 5),
    Pinned("make_config", "exact_solver", ["lbfgs"]),
    Pinned("make_config", "pll_q", "0.5"),
    Pinned("make_config", "lam", "0.1"),
    Pinned("confusable_clusters[features]", "labels", CLASSES[None]),
    Pinned("confusable_clusters[features]", "labels", np.array([0, 0, 1, 1, 2, 2**40])),
    Pinned("block_statistics", "num_classes", 10**6),
    Pinned("make_features", "kind", ["relu"]),
    Pinned("normalize_rows", "center", "no"),
    Pinned("predictive_diversity", "normalize", "no"),
    Pinned("uniform_smoothing", "eps", True),
    Pinned("beta_smoothing", "beta", True),
    Pinned("beta_smoothing", "label_probs", np.array(["a"] * 6)),
    Pinned("load_features", "path", 5),
    Pinned("load_features", "name", 5),
]


@pytest.mark.parametrize("pin", PINNED, ids=[f"{p.label}-{p.arg}-{_short(p.value, 30)}" for p in PINNED])
def test_reported_inputs_are_rejected_by_name(pin):
    case = CASES[pin.label]
    kwargs = case.kwargs()
    if pin.label == "max_eta":
        kwargs["clusters"] = [0, 0, 1]
    kwargs[pin.arg] = pin.value
    with pytest.raises((ValueError, TypeError)) as info:
        case.fn(**kwargs)
    assert pin.arg in str(info.value) or (pin.label == "max_eta" and "clusters" in str(info.value)), str(info.value)


def test_seed_and_devices_of_run_grid_are_checked_before_anything_runs():
    cfg = _config()
    with pytest.raises(ValueError, match="seed"):
        sd.montecarlo.run_grid(cfg, [0.1], num_seeds=1, seed=2**64)
    with pytest.raises(TypeError, match="devices"):
        sd.montecarlo.run_grid(cfg, [0.1], num_seeds=1, devices=["cpu"])
    with pytest.raises(ValueError, match="devices"):
        sd.montecarlo.run_grid(cfg, [0.1], num_seeds=1, devices=[])
    with pytest.raises(ValueError, match="config: num_rounds"):
        sd.montecarlo.run_grid(cfg._replace(num_rounds=0), [0.1], num_seeds=1)


def test_huge_message_lists_are_truncated():
    with pytest.raises(ValueError, match="empty classes") as info:
        sd.empirical_fractions(np.zeros(20, int), np.zeros(20, int), 10)
    assert "(9 in all)" in str(info.value) and len(str(info.value)) < 400
    with pytest.raises(ValueError, match="in no group") as info:
        sd.corruption_matrix("cc", 100, 0.1, clusters=[[0, 1]])
    assert "(98 in all)" in str(info.value) and len(str(info.value)) < 400


def test_two_dimensional_classes_of_the_block_model_pll_student_are_named_as_such():
    # issue 12: 2-D classes used to be reported as "classes has -1 instances"
    with pytest.raises(ValueError, match=r"classes must be a 1-D") as info:
        sd.refine.pll_student_block_model(Y, CLASSES[None], c=0.4, d=0.1, lam=0.1)
    assert "-1" not in str(info.value)
    with pytest.raises(ValueError, match=r"classes has 5 instances but targets has 6"):
        sd.refine.pll_student_block_model(Y, CLASSES[:5], c=0.4, d=0.1, lam=0.1)


@pytest.mark.parametrize("test_arg", ["test_features", "test_gram"])
def test_heldout_accuracy_count_mismatch_names_the_test_matrix(test_arg):
    # two labels for the two test points is right; three labels must name both test_labels and the matrix
    test = {"test_features": XT, "test_gram": GT}[test_arg]
    np.testing.assert_array_equal(
        np.shape(sd.metrics.heldout_accuracy(Y, [0, 1], features=X, lam=0.1, rounds=[0], **{test_arg: test})), (1,)
    )
    with pytest.raises(ValueError, match=rf"test_labels has 3 instances but {test_arg} has 2"):
        sd.metrics.heldout_accuracy(Y, [0, 1, 2], features=X, lam=0.1, rounds=[0], **{test_arg: test})


@pytest.mark.parametrize("d", [-0.6, -0.3, -0.2, -0.1, -0.01, -1e10, -1e300, -8.98846567431158e307])
def test_negative_d_is_accepted_exactly_when_the_block_gram_is_positive_definite(d):
    """The determinant-lemma check against the smallest eigenvalue of the block Gram built by hand."""
    c, classes = 0.4, np.array([0, 0, 1, 1, 1, 2])
    same = classes[:, None] == classes[None, :]
    with np.errstate(over="ignore", invalid="ignore"):
        g = np.where(same, c, d) + (1 - c) * np.eye(classes.size)
        pd = bool(np.all(np.isfinite(g))) and np.linalg.eigvalsh(g).min() > 0
    if pd:
        out = sd.refine.pll_student_block_model(np.eye(3)[classes], classes, c=c, d=d, lam=0.1)
        assert np.all(np.isfinite(out.outputs))
    else:
        with pytest.raises(ValueError, match="not positive definite"):
            sd.refine.pll_student_block_model(np.eye(3)[classes], classes, c=c, d=d, lam=0.1)
