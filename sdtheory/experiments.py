r"""Experiment protocols (pure: no I/O, no printing): the real-data protocol, the lam rule, aggregation.

The real-data protocol (docs/real_data.md, the SelfPLL experiments on real
features). For every feature map, noise kind, noise rate and seed:

1. corrupt the training labels with the corruption matrix of the kind
   (:mod:`sdtheory.noise`; ``"cc"`` groups confusable classes by feature
   similarity);
2. fit the teacher and SD rounds ``1..R-1`` with the exact softmax + CE + L2
   solver, and the PLL student (top-2 targets of the exact teacher, one
   round, CE and GCE) through the package's one PLL pipeline
   (:func:`sdtheory.refine.pll_rounds_core`);
3. alongside, the linearised closed form from the empirical Gram (SD rounds
   and the closed-form PLL student) and the closed form of the block model
   fitted to the features (``c``, ``d`` from
   :func:`sdtheory.data.block_statistics`);
4. score every round against the true labels with the one correctness rule
   (:func:`sdtheory.split_accuracy`, :func:`sdtheory.accuracy`: ties are
   failures), and record the confidence and predictive diversity of the exact
   outputs and, for the closed form and the block model, the fraction of
   training instances whose argmax agrees with the exact solution of the same
   round (``agree_exact``).

The expensive parts of a feature map are computed once
(:func:`prepare_feature_map`): the spectrum of the Gram (every closed-form
predictor is built from it), the exact solver's coordinates ``phi``, the
test-train Gram for held-out outputs, and the spectrum of the fitted block
Gram. A cell (:func:`run_cell`) then costs the exact fits and a few products.

Progress is reported through an optional callback ``progress(done, total,
seconds)`` (e.g. :func:`sdtheory.io.progress_printer`), every finished cell
through ``on_cell(key, rows)``, and ``completed=`` skips cells already done
(resuming an interrupted run); files are written by the caller
(``simulations/real_data.py``) with :mod:`sdtheory.io`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, NamedTuple, Optional
from collections.abc import Callable, Iterator, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from . import _validation as V
from ._x64 import float64
from .data import BlockStatistics, Dataset, block_statistics, make_features, stratified_split, stratified_subset
from ._src.exact import (
    DEFAULT_MAX_CG,
    DEFAULT_MAX_ITER,
    DEFAULT_TOL,
    Coordinates,
    ExactResult,
    check_options,
    exact_phi_core,
    solver_features,
)
from .exact import exact_predict
from ._src.losses import LOSSES
from .metrics import TIE_TOL, accuracy, split_accuracy
from .noise import confusable_clusters, corruption_matrix, sample_labels
from .predictor import predictor
from .refine import check_init, closed_fit, exact_fit, pll_rounds_core, round_fit
from .smoothing import confidence, predictive_diversity
from ._src.block import BlockSpectrum, block_outputs_core
from .block import checked_block_spectrum
from .reduced import label_types, reduced_closed_core, reduced_exact_core, type_spectrum_core
from ._src.spectral import Spectrum, _feature_spectrum

__all__ = [
    "CELL_COLUMNS",
    "FIELDNAMES",
    "METRIC_COLUMNS",
    "SOLVER_COLUMNS",
    "FeatureMap",
    "FeatureMapError",
    "ProtocolResult",
    "aggregate",
    "feature_map_report",
    "lam_rule",
    "markdown_summary",
    "noisy_feature_maps",
    "noisy_label_c",
    "prepare_dataset",
    "prepare_feature_map",
    "run_cell",
    "run_protocol",
    "score_rounds",
    "selfpll_table",
    "solver_report",
    "split_key",
]

#: Metric columns of a result row (one row per feature map, kind, rate, seed, solver, method, round).
METRIC_COLUMNS = ("train_acc", "train_acc_clean", "train_acc_corrupted", "test_acc", "confidence", "diversity")
#: The columns that name a result row's cell and method (every study's rows start with them).
CELL_COLUMNS = ("feature_map", "kind", "rate", "seed", "realised_rate", "lam", "solver", "method")
#: The solver's record on a result row (every study's rows end with them).
SOLVER_COLUMNS = ("residual", "converged")
#: Every column of a result row, in CSV order.
FIELDNAMES = (*CELL_COLUMNS, "round", *METRIC_COLUMNS, "agree_exact", *SOLVER_COLUMNS)

#: Nearest neighbours per instance in the noise estimate of :func:`noisy_label_c`.
NEIGHBOURS = 3
#: Exact-solver options of the protocol (the package defaults; L-BFGS).
EXACT_OPTIONS = dict(tol=DEFAULT_TOL, max_iter=DEFAULT_MAX_ITER, max_cg=DEFAULT_MAX_CG, solver="lbfgs")


def lam_rule(c: float, num_instances: int, num_classes: int) -> float:
    """``K N lam = 1 - c``: the teacher halves own-label (within-class) directions.

    ``c`` is the mean within-class cosine similarity of the training features
    (the fitted block model's ``c``); then the block model's within-class
    shrink factor is ``a = s_w / (s_w + K N lam) = 1/2``. ``c`` itself is
    fitted with labels (the mean similarity of same-label pairs,
    :func:`sdtheory.data.block_statistics`); :func:`prepare_feature_map` uses
    the true training labels. Fitted with noisy labels, ``c`` is pulled
    towards the across-class ``d`` and the rule's ``lam`` is too large.
    """
    c = V.check_real(c, "c")
    num_instances = V.check_size(num_instances, "num_instances", minimum=1)
    num_classes = V.check_size(num_classes, "num_classes", minimum=2)
    if not (c < 1.0):
        raise ValueError(f"within-class similarity c = {c} >= 1: the block rule K N lam = 1 - c needs c < 1")
    return (1.0 - c) / (num_classes * num_instances)


@float64
def noisy_label_c(
    features: Any, labels: Any, num_classes: int, *, noise_rate: Optional[float] = None
) -> tuple[float, float]:
    r"""The clean within-class ``c`` of the block model fitted from *noisy* labels: ``(c, eta)``.

    Under symmetric noise at rate ``eta`` (independent of the features;
    balanced classes), similarity means by given label mix the classes:
    ``c~ - d~ = rho^2 (c - d)`` with ``rho = 1 - eta K / (K - 1)``, while the
    mean ``m`` of the ``K x K`` class-pair means does not change. So
    ``c = m + (1 - 1/K) (c~ - d~) / rho^2`` (docs/real_data.md, "lam with
    noisy labels"). The same factor shrinks the rate ``A`` at which an
    instance's :data:`NEIGHBOURS` nearest neighbours (largest ``<x_i, x_j>``,
    ``j != i``) have its given label: ``A = 1/K + rho^2 (p - 1/K)``, ``p`` the
    rate for clean labels. Taking ``p = 1`` estimates ``rho^2 = (A - 1/K) / (1 - 1/K)`` and
    ``eta``; for ``p < 1`` the estimate of ``rho^2`` is low by the factor
    ``(p - 1/K) / (1 - 1/K)`` and ``c`` high.

    Args:
      features: ``(N, d)`` features (unit-norm rows: cosine similarities).
      labels: ``(N,)`` given (noisy) labels in ``0..K-1``.
      num_classes: ``K``.
      noise_rate: a known symmetric rate ``eta`` in ``[0, (K-1)/K)``; default
        the nearest-neighbour estimate.

    Raises:
      ValueError: bad arguments, or nearest neighbours that agree on their
        labels no more often than chance (``rho^2 <= 0``: no class signal).
    """
    stats = block_statistics(features, labels, num_classes)
    k, y = num_classes, np.asarray(labels)
    if noise_rate is None:
        x, same = np.asarray(features, dtype=float), 0
        for s in range(0, y.size, 1024):  # rows of the Gram in blocks: O(1024 N) memory
            g = x[s : s + 1024] @ x.T
            g[np.arange(g.shape[0]), np.arange(s, s + g.shape[0])] = -np.inf
            same += np.sum(y[np.argpartition(-g, NEIGHBOURS, axis=1)[:, :NEIGHBOURS]] == y[s : s + 1024, None])
        rho2 = (same / (NEIGHBOURS * y.size) - 1 / k) / (1 - 1 / k)
        if rho2 <= 0:
            raise ValueError("nearest neighbours share their given labels no more often than chance: no class signal")
        eta = (1 - np.sqrt(rho2)) * (k - 1) / k
    else:
        eta = V.check_real(noise_rate, "noise_rate")
        if not 0 <= eta < (k - 1) / k:
            raise ValueError(f"noise_rate must lie in [0, (K-1)/K) = [0, {(k - 1) / k:.4g}), got {noise_rate!r}")
        rho2 = (1 - eta * k / (k - 1)) ** 2
    m = float(np.mean(stats.class_means))
    return float(m + (1 - 1 / k) * (stats.c - stats.d) / rho2), float(eta)


# --------------------------------------------------------------------------
# Data set and feature map, prepared once
# --------------------------------------------------------------------------


def split_key(seed: int) -> jax.Array:
    """The key of the train/test split for master seed ``seed``: ``fold_in(key(seed), 1)``.

    Pass it to :func:`sdtheory.data.load_digits` so that the bundled digits and
    a user file without a held-out split are split by the same key.
    """
    seed = V.check_size(seed, "seed", minimum=0, maximum=V.MAX_SEED)
    return jax.random.fold_in(jax.random.key(seed), 1)


def prepare_dataset(
    ds: Dataset, *, seed: int = 0, test_fraction: float = 0.25, subset: Optional[tuple] = None
) -> Dataset:
    """The protocol's data set: a held-out split and an optional stratified subset.

    Without a held-out split in ``ds``, a stratified split with
    ``test_fraction`` is drawn from :func:`split_key`. ``subset=(n_train,
    n_test)`` keeps that many random instances of every class on each side
    (keys ``fold_in(key(seed), 2)`` and ``3``) and appends ``"-quick"`` to the
    name.
    """
    master = jax.random.key(seed)
    if ds.test_features is None:
        tr, te = stratified_split(split_key(seed), ds.labels, test_fraction)
        cl = ds.clean_labels
        ds = Dataset(
            ds.features[tr],
            ds.labels[tr],
            ds.num_classes,
            ds.features[te],
            ds.labels[te],
            ds.name,
            *_at(cl, tr, cl, te),
        )
    if subset is not None:
        assert ds.test_features is not None and ds.test_labels is not None  # split above
        tr = stratified_subset(jax.random.fold_in(master, 2), ds.labels, subset[0])
        te = stratified_subset(jax.random.fold_in(master, 3), ds.test_labels, subset[1])
        ds = Dataset(
            ds.features[tr],
            ds.labels[tr],
            ds.num_classes,
            ds.test_features[te],
            ds.test_labels[te],
            ds.name + "-quick",
            *_at(ds.clean_labels, tr, ds.test_clean_labels, te),
        )
    return ds


def _at(a, i, b, j) -> tuple:
    """``(a[i], b[j])``, ``None`` for an absent array (the optional clean labels)."""
    return (None if a is None else a[i]), (None if b is None else b[j])


@dataclass(frozen=True, eq=False)
class FeatureMap:
    """One feature map of a data set, with everything a cell reuses (build it with :func:`prepare_feature_map`).

    Not a pytree: its arrays stay on the device in float64.

    Attributes:
      name: the feature map's name.
      features, test_features: ``(N, d)`` / ``(M, d)``.
      labels: ``(N,)`` true training labels; num_classes: ``K``.
      lam: the L2 weight; lam_rule: ``"K N lam = 1 - c"`` or ``"given"``.
      stats: the fitted block statistics (``c``, ``d``, class-pair means).
      spectrum: spectrum of the Gram ``X X^T``: every closed-form predictor
        of the map is built from it (``predictor(..., spectrum=, features=)``).
      phi: the exact solver's coordinates (:func:`sdtheory.exact.solver_features`).
      block_spectrum: analytic :class:`sdtheory.block.BlockSpectrum` of the fitted
        block Gram ``(1 - c) I + (c - d) B + d 1 1^T`` (blocks = true
        classes; ``O(N K)`` outputs through :func:`sdtheory.block.block_outputs_core`),
        or ``None`` without the block model (raw features, whose Gram has
        no unit diagonal).
    """

    name: str
    features: jax.Array
    test_features: jax.Array
    labels: np.ndarray
    num_classes: int
    lam: float
    lam_rule: str
    stats: BlockStatistics
    spectrum: Spectrum
    phi: jax.Array | Coordinates
    block_spectrum: Optional[BlockSpectrum]


@float64
def prepare_feature_map(
    features: Any,
    test_features: Any,
    labels: Any,
    num_classes: int,
    *,
    lam: Optional[float] = None,
    name: str = "features",
    block_model: bool = True,
) -> FeatureMap:
    """Compute once what every cell of a feature map reuses (spectra, solver coordinates, lam).

    Args:
      features, test_features: ``(N, d)`` training and ``(M, d)`` held-out
        features (already mapped and normalised, :func:`sdtheory.data.make_features`).
      labels: ``(N,)`` true training labels in ``0..K-1``.
      num_classes: ``K``.
      lam: the L2 weight; default :func:`lam_rule` on the fitted ``c``.
      name: the feature map's name.
      block_model: fit the block model (needs unit-norm rows: its Gram has
        ``1`` on the diagonal); ``False`` for raw features.

    The fitted block model uses ``c`` and ``d`` as measured
    (:func:`sdtheory.data.block_statistics`); centred features give a
    slightly negative ``d``, inside the block model's domain (the theorems'
    too) while the block Gram stays positive definite
    (:func:`sdtheory._validation.check_cd`), so its analytic spectrum and
    ``O(N K)`` outputs apply.
    """
    V.check_features(features)
    V.check_features(test_features, "test_features")
    k = V.check_int(num_classes, "num_classes", minimum=2)
    y = V.check_labels(labels, k)
    n = y.shape[0]
    V.check_same_n(np.shape(features)[0], n, "labels", "features")
    if np.shape(test_features)[1] != np.shape(features)[1]:
        raise ValueError(
            f"test_features has dimension {np.shape(test_features)[1]} but features has {np.shape(features)[1]}"
        )
    stats = block_statistics(features, y, k)
    if lam is None:
        lam, rule = lam_rule(stats.c, n, k), "K N lam = 1 - c"
    else:
        V.check_lam(lam)
        lam, rule = float(lam), "given"
    x = jnp.asarray(features, dtype=float)
    xt = jnp.asarray(test_features, dtype=float)
    spec = _feature_spectrum(x)
    try:
        bspec = (
            checked_block_spectrum(stats.class_sizes, stats.c, stats.d)
            if V.check_bool(block_model, "block_model")
            else None
        )
    except ValueError as exc:
        raise ValueError(
            f"the block model fitted to these features (c, d: mean within- and across-class correlations) is "
            f"outside its domain; the classes are too weakly separated: {exc}"
        ) from None
    return FeatureMap(
        name=name,
        features=x,
        test_features=xt,
        labels=y,
        num_classes=k,
        lam=lam,
        lam_rule=rule,
        stats=stats,
        spectrum=spec,
        phi=solver_features(features=x),
        block_spectrum=bspec,
    )


def _descending(eigvals) -> np.ndarray:
    return np.sort(np.maximum(np.asarray(eigvals, dtype=float), 0.0))[::-1]


def feature_map_report(fm: FeatureMap) -> tuple:
    """``(summary, curves)`` of a feature map: a JSON-able summary and the spectra
    for :func:`sdtheory.plots.spectrum_figure`.

    ``summary`` holds the dimension, lam, the fitted ``c``, ``d`` and
    class-pair similarities, and spectrum statistics (rank, top eigenvalues,
    share of the trace in the top ``K - 1`` eigenvalues of the empirical and
    of the fitted block Gram, eigenvalues above the ridge ``K N lam``).
    """
    k = fm.num_classes
    n = fm.labels.shape[0]
    eig = _descending(fm.spectrum.eigvals)
    if fm.block_spectrum is None:  # no block model (raw features): its entries are NaN / empty
        top, block_eig = np.full(k, np.nan), np.zeros(0)
    else:
        top = _descending(fm.block_spectrum.class_eigvals)
        block_eig = _descending(np.concatenate([top, np.full(n - k, float(fm.block_spectrum.within))]))
    ridge = k * n * fm.lam
    nonzero = eig > 1e-10 * eig[0]
    summary = {
        "dim": int(fm.features.shape[1]),
        "lam": fm.lam,
        "lam_rule": fm.lam_rule,
        "c": fm.stats.c,
        "d": fm.stats.d,
        "class_means": fm.stats.class_means,
        "spectrum": {
            "rank": int(np.sum(nonzero)),
            "top_eigvals": eig[: 2 * k],
            "median_nonzero": float(np.median(eig[nonzero])),
            "trace_fraction_top_K_minus_1": float(eig[: k - 1].sum() / eig.sum()),
            "block_trace_fraction_top_K_minus_1": float(top[: k - 1].sum() / block_eig.sum())
            if block_eig.size
            else float("nan"),
            "block_s_w": 1.0 - fm.stats.c,
            "block_class_eigvals": top,
            "eigvals_above_ridge": int(np.sum(eig > ridge)),
        },
    }
    curves = dict(
        eigvals=eig,
        block_eigvals=block_eig,
        c=fm.stats.c,
        d=fm.stats.d,
        ridge=ridge,
        num_classes=k,
        n=n,
        dim=int(fm.features.shape[1]),
    )
    return summary, curves


# --------------------------------------------------------------------------
# Scoring and one cell
# --------------------------------------------------------------------------


@float64
def score_rounds(
    outputs: Any,
    true_labels: Any,
    given_labels: Any,
    *,
    test_outputs: Any = None,
    test_labels: Any = None,
    probabilities: bool = False,
) -> list:
    """Per-round metric dicts (:data:`METRIC_COLUMNS`) for outputs ``(R, N, K)``.

    Accuracies use the package's one correctness rule with the default
    :data:`sdtheory.TIE_TOL` (a tie between the true class and another class
    is a failure): ``train_acc`` and its clean / corrupted split
    (:func:`sdtheory.split_accuracy`; an empty group is NaN) against
    ``true_labels``, with ``given_labels`` defining the groups; ``test_acc``
    on ``test_outputs`` ``(R, M, K)`` against ``test_labels`` (NaN without
    them). With ``probabilities=True`` the outputs are probability rows and
    the mean confidence and normalised predictive diversity are recorded
    (NaN otherwise).
    """
    out = np.asarray(outputs, dtype=float)
    if out.ndim != 3:
        raise ValueError(f"outputs must be (R, N, K), got shape {out.shape}")
    split = split_accuracy(out, true_labels, given_labels, tie_tol=TIE_TOL)
    test = None
    if test_outputs is not None:
        test = np.asarray(accuracy(test_outputs, test_labels, tie_tol=TIE_TOL))
    rows = []
    for r in range(out.shape[0]):
        row = {
            "train_acc": float(split.overall[r]),
            "train_acc_clean": float(split.clean[r]),
            "train_acc_corrupted": float(split.corrupted[r]),
            "test_acc": float(test[r]) if test is not None else float("nan"),
            "confidence": float("nan"),
            "diversity": float("nan"),
        }
        if probabilities:
            row["confidence"] = float(np.mean(confidence(out[r])))
            row["diversity"] = float(np.mean(predictive_diversity(out[r], normalize=True)))
        rows.append(row)
    return rows


@float64
def run_cell(
    fm: FeatureMap,
    given_labels: Any,
    test_labels: Any,
    *,
    num_rounds: int,
    q: float = 0.7,
    init: str = "teacher",
    solver: str = "lbfgs",
) -> list:
    """All methods for one noisy label vector; rows without the cell keys (feature map, kind, rate, seed).

    Methods (``solver``, ``method``, ``round``): exact SD rounds
    ``0..num_rounds-1``; exact PLL students ``pll_ce`` and ``pll_gce``
    (exponent ``q``) from the exact teacher's top 2 (round 1); closed-form SD
    rounds and the closed-form PLL student; the fitted block model's SD
    rounds (training set only). ``residual`` / ``converged`` report the exact
    solver; ``agree_exact`` compares training argmaxes with the exact fit of
    the same round (the closed-form PLL student with the exact CE student).
    ``init``: the exact PLL students' starting weights (``"teacher"``: the
    exact teacher's, as SelfPLL; ``"zero"``), :data:`sdtheory.refine.PLL_INITS`.
    ``solver``: the exact solver (:data:`sdtheory.SOLVERS`; default L-BFGS,
    :data:`EXACT_OPTIONS`; ``"auto"``, truncated Newton, for the
    ill-conditioned Gram of raw features).
    """
    num_rounds = V.check_num_rounds(num_rounds, "num_rounds")
    init = check_init(init)
    check_options("gce", q, DEFAULT_TOL, DEFAULT_MAX_ITER, "flag", solver)
    opts = dict(EXACT_OPTIONS, solver=solver)
    k = fm.num_classes
    true = fm.labels
    given = V.check_labels(given_labels, k, "given_labels")
    V.check_same_n(true.shape[0], given.shape[0], "given_labels", "labels")
    test_true = V.check_labels(test_labels, k, "test_labels")
    V.check_same_n(fm.test_features.shape[0], test_true.shape[0], "test_labels", "test_features")
    t = jnp.asarray(np.eye(k)[given])
    lam = jnp.asarray(fm.lam, dtype=float)
    q = float(q)
    x, xt = fm.features, fm.test_features

    def score(outputs, test_outputs, probabilities):
        return score_rounds(
            outputs, true, given, test_outputs=test_outputs, test_labels=test_true, probabilities=probabilities
        )

    out = []
    # exact SD, rounds 0..R-1, in the solver coordinates computed once per feature map
    res: ExactResult = exact_phi_core(fm.phi, t, lam, num_rounds, loss="ce", q=q, **opts)
    exact_pred = np.asarray(res.outputs).argmax(-1)  # (R, N): reference for the agreement columns

    def agree(outputs, reference):
        """Fraction of training instances whose argmax equals ``reference``."""
        return float(np.mean(np.asarray(outputs).argmax(-1) == reference))

    test_out = exact_predict(res, test_features=xt, features=x)
    for r, m in enumerate(score(res.outputs, test_out, True)):
        out.append(
            dict(
                solver="exact",
                method="sd",
                round=r,
                agree_exact=float("nan"),
                residual=float(res.residuals[r]),
                converged=bool(res.converged[r]),
                **m,
            )
        )

    # exact PLL students (CE, GCE) from the exact teacher's top 2: the one PLL pipeline
    teacher = round_fit(res)
    pll_pred = {}
    for loss in LOSSES:  # every registered student loss (ce: the theory; gce: SelfPLL)
        pll = pll_rounds_core(exact_fit(fm.phi, lam, loss=loss, q=q, **opts), teacher, 1, TIE_TOL, init)
        pll_pred[loss] = np.asarray(pll.outputs[0]).argmax(-1)
        # the student's ExactResult (round axis kept) carries the dual coefficients for held-out outputs
        pt = exact_predict(jax.tree_util.tree_map(lambda a: a[1:], pll.fits), test_features=xt, features=x)
        m = score(pll.outputs, pt, True)[0]
        out.append(
            dict(
                solver="exact",
                method=f"pll_{loss}",
                round=1,
                agree_exact=float("nan"),
                residual=float(pll.residuals[1]),
                converged=bool(pll.converged[1]),
                **m,
            )
        )

    # closed form from the empirical Gram (linearised): one predictor per label vector, from the map's spectrum
    cf_model = predictor(t, lam=fm.lam, spectrum=fm.spectrum, features=x)
    cf = cf_model.train_outputs(num_rounds=num_rounds)
    cft = cf_model.test_outputs(num_rounds=num_rounds, test_features=xt)
    for r, m in enumerate(score(cf, cft, False)):
        out.append(
            dict(
                solver="closed_form",
                method="sd",
                round=r,
                agree_exact=agree(cf[r], exact_pred[r]),
                residual=float("nan"),
                converged=True,
                **m,
            )
        )
    fit = closed_fit(fm.spectrum, lam)
    pc = pll_rounds_core(fit, fit(t), 1, TIE_TOL)
    pct = predictor(pc.targets[0], lam=fm.lam, spectrum=fm.spectrum, features=x).test_outputs(
        rounds=0, test_features=xt
    )
    m = score(pc.outputs, pct, False)[0]
    out.append(
        dict(
            solver="closed_form",
            method="pll_ce",
            round=1,
            agree_exact=agree(pc.outputs[0], pll_pred["ce"]),
            residual=float("nan"),
            converged=True,
            **m,
        )
    )

    if fm.block_spectrum is None:  # raw features: no block model
        return out
    # block model fitted to the features (c, d); training instances only
    bo = block_outputs_core(fm.block_spectrum, jnp.asarray(true), t, lam, jnp.arange(num_rounds))
    for r, m in enumerate(score(bo, None, False)):
        out.append(
            dict(
                solver="block",
                method="sd",
                round=r,
                agree_exact=agree(bo[r], exact_pred[r]),
                residual=float("nan"),
                converged=True,
                **m,
            )
        )
    # block model with the fitted class-correlation matrix R (class-pair mean correlations), on label types:
    # linearised ("block_corr") and exact softmax ("block_corr_exact"); training instances only
    tcls, ttgt = label_types(k)
    tidx = jnp.asarray(true * k + given)
    counts = jnp.zeros((k * k,)).at[tidx].add(1.0)
    ts = type_spectrum_core(jnp.asarray(fm.stats.class_means, dtype=float), tcls, counts)
    br = reduced_closed_core(ts, ttgt.astype(float), lam, jnp.arange(num_rounds))[:, tidx]
    bx = reduced_exact_core(
        ts,
        ttgt.astype(float),
        lam,
        num_rounds,
        loss="ce",
        tol=opts["tol"],
        max_iter=opts["max_iter"],
        solver=solver,
    )
    for solver, outs, res_r, conv_r in (
        ("block_corr", br, None, None),
        ("block_corr_exact", bx.outputs[:, tidx], bx.residuals, bx.converged),
    ):
        for r, m in enumerate(score(outs, None, False)):
            out.append(
                dict(
                    solver=solver,
                    method="sd",
                    round=r,
                    agree_exact=agree(outs[r], exact_pred[r]),
                    residual=float("nan") if res_r is None else float(res_r[r]),
                    converged=True if conv_r is None else bool(conv_r[r]),
                    **m,
                )
            )
    return out


# --------------------------------------------------------------------------
# The whole protocol
# --------------------------------------------------------------------------


class FeatureMapError(ValueError):
    """A feature map that :func:`run_protocol` cannot use on the data set; the message names it and says why."""


class ProtocolResult(NamedTuple):
    """Result of :func:`run_protocol`.

    Attributes:
      rows: one dict per (feature map, kind, rate, seed, solver, method,
        round), keys :data:`FIELDNAMES`.
      dataset: a one-line description of the data set.
      feature_maps: feature map -> summary (:func:`feature_map_report`, plus
        the ``cc`` clusters when cc noise ran).
      spectra: feature map -> spectra for :func:`sdtheory.plots.spectrum_figure`.
      timings: feature map -> seconds spent on its cells.
    """

    rows: list
    dataset: str
    feature_maps: dict
    spectra: dict
    timings: dict


@float64
def run_protocol(
    ds: Dataset,
    *,
    feature_maps: Sequence[str],
    kinds: Sequence[str],
    rates: Sequence[float],
    num_seeds: int,
    num_rounds: int,
    lam: Optional[float] = None,
    q: float = 0.7,
    seed: int = 0,
    relu_dim: int = 512,
    center: bool = True,
    normalize: bool = True,
    init: str = "teacher",
    solver: str = "lbfgs",
    progress: Optional[Callable[[int, int, float], None]] = None,
    completed: Optional[Mapping[tuple, Sequence[Mapping]]] = None,
    on_cell: Optional[Callable[[tuple, list], None]] = None,
) -> ProtocolResult:
    """The real-data protocol over feature maps x kinds x rates x seeds (module docstring).

    ``ds`` needs a held-out split (:func:`prepare_dataset`). Keys derive from
    ``jax.random.key(seed)``: feature map ``i`` (random ReLU weights) from
    ``fold_in(master, 10 + i)``, the labels of (map ``i``, kind ``j``, rate
    ``l``, seed ``s``) from ``fold_in`` of ``100 + i``, ``j``, ``l``, ``s``.
    ``lam`` defaults to :func:`lam_rule` per feature map. ``center`` and
    ``normalize`` are :func:`sdtheory.data.make_features`'s; without
    ``normalize`` (raw features, the SelfPLL preset) the fitted block model
    (which needs unit-norm rows) is left out and its rows are absent.
    ``init``, ``solver``: the exact PLL students' start and the exact
    solver (:func:`run_cell`).
    ``progress(done, total, seconds)`` is called after every computed cell,
    and once before the first cell of every feature map (``done`` = the
    cells finished so far, those kept from a checkpoint included): the first cell compiles the solvers (about a
    minute on two busy cores), and a run reports that it is under way
    within seconds of starting.

    Resuming: a cell is identified by its key ``(feature_map, kind, rate,
    seed)`` (``rate`` a float, ``seed`` the seed index). ``on_cell(key,
    rows)`` is called after every computed cell, before ``progress``, with
    its result rows (keys :data:`FIELDNAMES`). ``completed`` maps keys of
    cells already done (by a call with the same arguments) to those rows;
    they are used as they are instead of being recomputed, so the result is
    the same as an uninterrupted run's. The per-feature-map preparation
    (spectra, summaries) is always recomputed; it is deterministic. Nothing
    here touches files: the caller persists what ``on_cell`` receives.
    """
    if ds.test_features is None or ds.test_labels is None:
        raise ValueError("the data set needs a held-out split; see prepare_dataset")
    num_seeds = V.check_int(num_seeds, "num_seeds", minimum=1)
    num_rounds = V.check_num_rounds(num_rounds, "num_rounds")
    relu_dim = V.check_int(relu_dim, "relu_dim", minimum=1)
    normalize = V.check_bool(normalize, "normalize")
    init = check_init(init)
    if lam is not None:
        V.check_lam(lam)
    check_options("gce", q, DEFAULT_TOL, DEFAULT_MAX_ITER, "flag", solver)
    if on_cell is not None and not callable(on_cell):
        raise TypeError("on_cell must be a callable (key, rows) or None")
    completed = _check_completed_cells(completed, feature_maps, kinds, rates, num_seeds)
    master = jax.random.key(seed)
    k = ds.num_classes
    true = ds.labels
    rows: list = []
    summaries, spectra, timings = {}, {}, {}
    total = len(feature_maps) * len(kinds) * len(rates) * num_seeds
    done = 0
    t_start = time.perf_counter()
    for fi, name in enumerate(feature_maps):
        try:
            x, xt = _map(ds, fi, name, seed, relu_dim, center, normalize)
            fm = prepare_feature_map(x, xt, true, k, lam=lam, name=name, block_model=normalize)
        except ValueError as exc:
            raise _unusable(ds, fi, name, exc) from None
        summaries[name], spectra[name] = feature_map_report(fm)
        clusters = None
        if "cc" in kinds:
            clusters = confusable_clusters(x, true)
            summaries[name]["cc_clusters"] = clusters
        t0 = time.perf_counter()
        if progress is not None:  # before the first (compiling) cell of this feature map, kept cells counted
            progress(done + sum(1 for cell in completed if cell[0] == name), total, t0 - t_start)
        for ki, kind in enumerate(kinds):
            for ri, rate in enumerate(rates):
                C = corruption_matrix(kind, k, rate, clusters=clusters if kind == "cc" else None)
                for s in range(num_seeds):
                    cell = (name, kind, float(rate), s)
                    done += 1
                    if cell in completed:
                        rows.extend(dict(r) for r in completed[cell])
                        continue
                    key = jax.random.fold_in(
                        jax.random.fold_in(jax.random.fold_in(jax.random.fold_in(master, 100 + fi), ki), ri), s
                    )
                    given = np.asarray(sample_labels(key, true, C)).astype(np.int64)
                    realised = float(np.mean(given != true))
                    cell_rows = [
                        dict(
                            feature_map=name,
                            kind=kind,
                            rate=float(rate),
                            seed=s,
                            realised_rate=realised,
                            lam=fm.lam,
                            **row,
                        )
                        for row in run_cell(
                            fm, given, ds.test_labels, num_rounds=num_rounds, q=q, init=init, solver=solver
                        )
                    ]
                    rows.extend(cell_rows)
                    if on_cell is not None:
                        on_cell(cell, [dict(r) for r in cell_rows])
                    if progress is not None:
                        progress(done, total, time.perf_counter() - t_start)
        timings[name] = time.perf_counter() - t0
    dataset = f"{ds.name}, N = {true.size} train / {ds.test_labels.size} held-out, K = {k}"
    return ProtocolResult(rows, dataset, summaries, spectra, timings)


def _map(ds: Dataset, fi: int, name: str, seed: int, relu_dim: int, center: bool, normalize: bool) -> tuple:
    """Feature map ``fi`` (``name``) of ``ds``: ``(x, xt)``; random weights from ``fold_in(key(seed), 10 + fi)``."""
    key = jax.random.fold_in(jax.random.key(seed), 10 + fi)
    return make_features(
        name, ds.features, ds.test_features, key=key, num_features=relu_dim, center=center, normalize=normalize
    )


def _unusable(ds: Dataset, fi: int, name: str, exc: Exception) -> FeatureMapError:
    return FeatureMapError(f"feature_maps[{fi}] = {name!r} cannot be used on {ds.name}: {exc}")


def noisy_feature_maps(
    ds: Dataset,
    *,
    feature_maps: Sequence[str],
    lam: Optional[float] = None,
    noise_rate: Optional[float] = None,
    seed: int = 0,
    relu_dim: int = 512,
    center: bool = True,
    normalize: bool = True,
) -> Iterator[tuple]:
    """The noisy-label mode's feature maps: yields ``(name, x, xt, info)`` per map, no noise drawn.

    ``ds.labels`` are the given (noisy) labels; the features are those of
    :func:`run_protocol` (same keys). ``lam`` defaults to :func:`lam_rule` on
    :func:`noisy_label_c` (``noise_rate``: known, else estimated). ``info``:
    ``lam``, ``lam_rule``, ``c`` (corrected), ``noise_rate`` (used or
    estimated), ``c_given_labels`` (the uncorrected fit); with
    ``ds.clean_labels``, for evaluation only, ``c_clean_labels`` and
    ``realised_rate``. ``FeatureMapError`` when a map cannot be used.
    """
    if ds.test_features is None or ds.test_labels is None:
        raise ValueError("the data set needs a held-out split; see prepare_dataset")
    k, y, clean = ds.num_classes, ds.labels, ds.clean_labels
    for fi, name in enumerate(feature_maps):
        try:
            x, xt = _map(ds, fi, name, seed, relu_dim, center, normalize)
            info: dict = dict(lam=lam, lam_rule="given", c_given_labels=block_statistics(x, y, k).c)
            if lam is None:
                info["c"], info["noise_rate"] = noisy_label_c(x, y, k, noise_rate=noise_rate)
                info.update(lam=lam_rule(info["c"], y.size, k), lam_rule="K N lam = 1 - c, c corrected for noise")
            if clean is not None:
                info.update(c_clean_labels=block_statistics(x, clean, k).c, realised_rate=float(np.mean(y != clean)))
        except ValueError as exc:
            raise _unusable(ds, fi, name, exc) from None
        yield name, x, xt, info


def _check_completed_cells(completed: Any, feature_maps, kinds, rates, num_seeds: int) -> dict:
    """``completed`` as ``{(feature_map, kind, float rate, seed): rows}``; every key must be a cell of the grid."""
    if completed is None:
        return {}
    if not isinstance(completed, Mapping):
        raise TypeError(f"completed must be a mapping cell key -> rows, got {type(completed).__name__}")
    cells = {(f, kd, float(r), s) for f in feature_maps for kd in kinds for r in rates for s in range(num_seeds)}
    out = {}
    for key, rows in completed.items():
        try:
            f, kd, r, s = key
            cell = (f, kd, float(r), int(s))
        except (TypeError, ValueError):
            raise ValueError(f"completed keys must be (feature_map, kind, rate, seed), got {key!r}") from None
        if cell not in cells:
            raise ValueError(f"completed has the cell {key!r}, which is not in this protocol's grid")
        rows = list(rows)
        if not rows or any(set(FIELDNAMES) - set(row) for row in rows):
            raise ValueError(f"completed[{key!r}] must be the cell's rows, each with the keys {FIELDNAMES}")
        out[cell] = rows
    return out


# --------------------------------------------------------------------------
# Aggregation and the summary table
# --------------------------------------------------------------------------


def aggregate(rows: Sequence[Mapping], *, metrics: Optional[Sequence[str]] = None) -> dict:
    """``(feature_map, kind, rate, solver, method, round) -> {metric: (mean, std, n)}`` over seeds.

    ``metrics``: the columns averaged (default: :data:`METRIC_COLUMNS`,
    ``agree_exact`` and ``realised_rate``). Non-finite values (an empty clean/corrupted group, a metric a method does
    not have) are left out of the mean; ``n`` counts the values used.
    """
    groups: dict = {}
    for row in rows:
        key = (row["feature_map"], row["kind"], row["rate"], row["solver"], row["method"], row["round"])
        groups.setdefault(key, []).append(row)
    agg: dict = {}
    for key, rs in groups.items():
        agg[key] = {}
        for m in METRIC_COLUMNS + ("agree_exact", "realised_rate") if metrics is None else metrics:
            v = np.array([r[m] for r in rs], dtype=float)
            v = v[np.isfinite(v)]
            agg[key][m] = (
                float(v.mean()) if v.size else float("nan"),
                float(v.std()) if v.size else float("nan"),
                int(v.size),
            )
    return agg


def solver_report(rows: Sequence[Mapping]) -> dict:
    """Exact-solver health over all rows: number of exact rows, unconverged ones, largest residual."""
    exact = [r for r in rows if r["solver"] == "exact"]
    return {
        "exact_rows": len(exact),
        "exact_unconverged": sum(not r["converged"] for r in exact),
        "max_exact_residual": max((r["residual"] for r in exact), default=float("nan")),
    }


def _table_columns(num_rounds: int) -> list:
    last = num_rounds - 1
    cols = [("exact", "sd", r, f"SD r{r}" if r else "teacher") for r in range(num_rounds)]
    cols += [
        ("exact", "pll_ce", 1, "PLL-CE"),
        ("exact", "pll_gce", 1, "PLL-GCE"),
        ("closed_form", "sd", 0, "CF teacher"),
        ("closed_form", "sd", last, f"CF SD r{last}"),
        ("closed_form", "pll_ce", 1, "CF PLL"),
        ("block", "sd", last, f"block SD r{last}"),
        ("block_corr", "sd", last, f"block-R SD r{last}"),
        ("block_corr_exact", "sd", last, f"block-R exact SD r{last}"),
    ]
    return cols


def _cell_text(v) -> str:
    if v is None or not np.isfinite(v[0]):
        return "-"
    return f"{100 * v[0]:.1f} ({100 * v[1]:.1f})"


def markdown_summary(
    agg: Mapping,
    *,
    dataset: str,
    feature_maps: Mapping[str, Mapping],
    kinds: Sequence[str],
    rates: Sequence[float],
    num_rounds: int,
    num_seeds: int,
) -> str:
    """The markdown tables of ``summary.md`` (mean (std) over seeds, in %), as a string.

    ``agg`` from :func:`aggregate`; ``feature_maps``: name -> summary
    (:attr:`ProtocolResult.feature_maps`), in table order.
    """
    lines = [
        "# Real data: self-distillation and the PLL student",
        "",
        f"Data: {dataset}. Mean (std) over {num_seeds} seed(s), in %. "
        "Exact = nonlinear softmax CE solver; CF = linearised closed form from the empirical Gram; "
        "block = closed form of the block model with c, d fitted to the features (training set only); "
        "block-R = the block model with the fitted K x K class-correlation matrix R (class-pair mean "
        "correlations), closed form and exact softmax, solved on label types (training set only). "
        "Rounds count the teacher as r0: SD r{r} is SelfPLL's step r+1.",
        "",
    ]
    cols = _table_columns(num_rounds)
    last = num_rounds - 1
    for fmap, info in feature_maps.items():
        lines += [
            f"## Feature map `{fmap}` (d = {info['dim']}, lam = {info['lam']:.3g}, "
            f"c = {info['c']:.3f}, d_between = {info['d']:.3f})",
            "",
        ]
        for metric, title in (
            ("train_acc", "Training-label recovery (train accuracy vs true labels)"),
            ("train_acc_corrupted", "Recovery on corrupted training instances"),
            ("test_acc", "Held-out accuracy"),
        ):
            use = [c for c in cols if not (metric == "test_acc" and c[0].startswith("block"))]
            lines += [
                f"### {title}",
                "",
                "| kind | eta | " + " | ".join(c[3] for c in use) + " |",
                "|---|---|" + "---|" * len(use),
            ]
            for kind in kinds:
                for rate in rates:
                    cells = [_cell_text(agg.get((fmap, kind, rate, s, m, r), {}).get(metric)) for s, m, r, _ in use]
                    lines.append(f"| {kind} | {rate:g} | " + " | ".join(cells) + " |")
            lines.append("")
        use = [
            ("closed_form", "sd", 0, "CF teacher"),
            ("closed_form", "sd", last, f"CF SD r{last}"),
            ("closed_form", "pll_ce", 1, "CF PLL vs exact PLL-CE"),
            ("block", "sd", 0, "block teacher"),
            ("block", "sd", last, f"block SD r{last}"),
            ("block_corr", "sd", last, f"block-R SD r{last}"),
            ("block_corr_exact", "sd", 0, "block-R exact teacher"),
            ("block_corr_exact", "sd", last, f"block-R exact SD r{last}"),
        ]
        lines += [
            "### Agreement with the exact solution (same round, training-set argmax)",
            "",
            "| kind | eta | " + " | ".join(c[3] for c in use) + " |",
            "|---|---|" + "---|" * len(use),
        ]
        for kind in kinds:
            for rate in rates:
                cells = [_cell_text(agg.get((fmap, kind, rate, s, m, r), {}).get("agree_exact")) for s, m, r, _ in use]
                lines.append(f"| {kind} | {rate:g} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines) + "\n"


def selfpll_table(
    agg: Mapping,
    *,
    dataset: str,
    feature_maps: Mapping[str, Mapping],
    kinds: Sequence[str],
    rates: Sequence[float],
    num_rounds: int,
    num_seeds: int,
    weight_decay: float,
) -> str:
    """Held-out accuracy in the SelfPLL reference's table layout (markdown), as a string.

    One table per feature map and noise kind: rows ``1 (Teacher)``, ``2``,
    ..., ``num_rounds`` (SelfPLL's distillation step ``t`` is our round
    ``t - 1``: exact SD) and ``PLL`` (the exact GCE student from the
    teacher's top 2, SelfPLL's partial loss); columns the noise rates; cells
    ``mean±std`` over seeds in %, two decimals (population std). ``agg``
    from :func:`aggregate`.
    """
    rows = [(f"{t + 1} (Teacher)" if t == 0 else str(t + 1), "sd", t) for t in range(num_rounds)]
    rows.append(("PLL", "pll_gce", 1))
    lines = [
        "# Real data in the SelfPLL layout",
        "",
        f"Data: {dataset}. Held-out accuracy, mean±std over {num_seeds} seed(s), in %; weight decay "
        f"{weight_decay:g} (lam = weight decay). Distillation step t is round t - 1 of the exact solver; "
        "PLL is the GCE student on the teacher's top 2, started from the teacher.",
        "",
    ]
    for fmap in feature_maps:
        for kind in kinds:
            lines += [
                f"## `{fmap}`, {kind} noise",
                "",
                "| Distillation Step | " + " | ".join(f"{r:g}" for r in rates) + " |",
                "|---|" + "---|" * len(rates),
            ]
            for label, method, r in rows:
                cells = []
                for rate in rates:
                    v = agg.get((fmap, kind, rate, "exact", method, r), {}).get("test_acc")
                    ok = v is not None and np.isfinite(v[0])
                    cells.append(f"{100 * v[0]:.2f}±{100 * v[1]:.2f}" if ok else "-")
                lines.append(f"| {label} | " + " | ".join(cells) + " |")
            lines.append("")
    return "\n".join(lines) + "\n"
