r"""Experiment protocols (pure: no I/O, no printing): the real-data protocol, the lam rule, aggregation.

The real-data protocol (docs/real_data.md): for every feature map, noise kind, rate and seed, corrupt the
training labels (:mod:`sdtheory.noise`), fit exact SD rounds and the exact PLL students (CE, GCE) from the
teacher's top 2, the closed form from the empirical Gram and the block models fitted to the features; score
every round against the true labels (ties are failures). A feature map's shared work is done once
(:func:`prepare_feature_map`), a cell is :func:`run_cell`; ``simulations/real_data.py`` writes the files.
"""

from __future__ import annotations

import functools
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
from ._src.exact import DEFAULT_MAX_CG, DEFAULT_MAX_ITER, DEFAULT_SOLVER, DEFAULT_TOL, Coordinates, ExactResult
from ._src.exact import check_options, exact_phi_core, solver_features
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
EXACT_OPTIONS = dict(tol=DEFAULT_TOL, max_iter=DEFAULT_MAX_ITER, max_cg=DEFAULT_MAX_CG, solver=DEFAULT_SOLVER)


def lam_rule(c: float, num_instances: int, num_classes: int) -> float:
    """``K N lam = 1 - c``: the block model's within-class shrink factor ``a = s_w / (s_w + K N lam)`` is 1/2.

    ``c < 1``: mean within-class cosine similarity (:func:`sdtheory.data.block_statistics` or :func:`noisy_label_c`).
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
    r"""The clean within-class ``c`` of the block model, fitted from *noisy* labels: ``(c, eta)``.

    Symmetric noise at rate ``eta`` (balanced classes, independent of the features) gives ``c~ - d~ = rho^2 (c - d)``,
    ``rho = 1 - eta K/(K-1)``, and keeps the mean ``m`` of the class-pair means, so
    ``c = m + (1 - 1/K)(c~ - d~)/rho^2``. ``rho^2`` comes from ``noise_rate`` (in ``[0, (K-1)/K)``) or from the rate
    ``A = 1/K + rho^2 (p - 1/K)`` at which the :data:`NEIGHBOURS` nearest neighbours (by ``<x_i, x_j>``) share an
    instance's given label, taking ``p = 1`` (``p < 1`` biases ``c`` up). docs/real_data.md, "lam with noisy labels".
    Raises ``ValueError`` for bad arguments, or neighbours that share labels no more often than chance.
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
            raise ValueError(
                f"labels: the {NEIGHBOURS} nearest neighbours (features) share their labels no more often than "
                f"chance (num_classes = {k}): no class signal"
            )
        eta = (1 - np.sqrt(rho2)) * (k - 1) / k
    else:
        eta = V.check_real(noise_rate, "noise_rate")
        if not 0 <= eta < (k - 1) / k:
            raise ValueError(f"noise_rate must lie in [0, (K-1)/K) = [0, {(k - 1) / k:.4g}), got {noise_rate!r}")
        rho2 = (1 - eta * k / (k - 1)) ** 2
    m = float(np.mean(stats.class_means))
    return float(m + (1 - 1 / k) * (stats.c - stats.d) / rho2), float(eta)


def split_key(seed: int) -> jax.Array:
    """The key ``fold_in(key(seed), 1)`` of the train/test split (the digits and a file without a split alike)."""
    seed = V.check_size(seed, "seed", minimum=0, maximum=V.MAX_SEED)
    return jax.random.fold_in(jax.random.key(seed), 1)


def prepare_dataset(
    ds: Dataset, *, seed: int = 0, test_fraction: float = 0.25, subset: Optional[tuple] = None
) -> Dataset:
    """The protocol's data set: a stratified ``test_fraction`` split from :func:`split_key` unless ``ds`` has
    one; ``subset=(n_train, n_test)`` keeps that many random instances of every class on each side (keys
    ``fold_in(key(seed), 2)`` and ``3``) and appends ``"-quick"`` to the name. Clean labels follow their rows."""
    if ds.test_features is None:
        tr, te = stratified_split(split_key(seed), ds.labels, test_fraction)
        ds = _take(ds, tr, te, ds.features, ds.labels, ds.clean_labels)
    if subset is not None:
        assert ds.test_features is not None and ds.test_labels is not None  # split above
        tr = stratified_subset(jax.random.fold_in(jax.random.key(seed), 2), ds.labels, subset[0])
        te = stratified_subset(jax.random.fold_in(jax.random.key(seed), 3), ds.test_labels, subset[1])
        ds = _take(ds, tr, te, ds.test_features, ds.test_labels, ds.test_clean_labels)._replace(name=ds.name + "-quick")
    return ds


def _take(ds: Dataset, tr: np.ndarray, te: np.ndarray, xt: Any, yt: Any, ct: Any) -> Dataset:
    """Rows ``tr`` of the training side and rows ``te`` of ``(xt, yt, ct)`` as the held-out side."""
    cl = ds.clean_labels
    return ds._replace(
        features=ds.features[tr],
        labels=ds.labels[tr],
        test_features=xt[te],
        test_labels=yt[te],
        clean_labels=None if cl is None else cl[tr],
        test_clean_labels=None if ct is None else ct[te],
    )


@dataclass(frozen=True, eq=False)
class FeatureMap:
    """One feature map and what every cell reuses (:func:`prepare_feature_map`), in float64; ``block_spectrum``:
    ``None`` without the block model; ``lam_rule``: ``"K N lam = 1 - c"`` or ``"given"``."""

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

    ``features``, ``test_features``: ``(N, d)`` / ``(M, d)`` mapped features (:func:`sdtheory.data.make_features`);
    ``labels``: ``(N,)`` true training labels; ``lam``: default :func:`lam_rule` on the fitted ``c``;
    ``block_model``: fit the block model (unit-norm rows: its Gram has a unit diagonal). Raises ``ValueError`` for
    bad arguments, or a fitted ``(c, d)`` outside the block model's domain.
    """
    n_x, d = V.check_features(features)
    V.check_test_features(test_features, d)
    k = V.check_int(num_classes, "num_classes", minimum=2)
    y = V.check_labels(labels, k)
    n = y.shape[0]
    V.check_same_n(n_x, n, "labels", "features")
    stats = block_statistics(features, y, k)
    if lam is None:
        lam, rule = lam_rule(stats.c, n, k), "K N lam = 1 - c"
    else:
        V.check_lam(lam)
        lam, rule = float(lam), "given"
    x, xt, bspec = jnp.asarray(features, dtype=float), jnp.asarray(test_features, dtype=float), None
    try:
        if V.check_bool(block_model, "block_model"):
            bspec = checked_block_spectrum(stats.class_sizes, stats.c, stats.d)
    except ValueError as exc:
        raise ValueError(
            f"the block model fitted to these features (c, d: mean within- and across-class correlations) is "
            f"outside its domain; the classes are too weakly separated: {exc}"
        ) from None
    return FeatureMap(name, x, xt, y, k, lam, rule, stats, _feature_spectrum(x), solver_features(features=x), bspec)


def _descending(eigvals) -> np.ndarray:
    return np.sort(np.maximum(np.asarray(eigvals, dtype=float), 0.0))[::-1]


def feature_map_report(fm: FeatureMap) -> tuple:
    """``(summary, curves)``: a JSON-able summary (dimension, lam, fitted ``c``, ``d``, class-pair
    means, spectrum statistics of the empirical and the fitted block Gram) and the spectra for
    :func:`sdtheory.plots.spectrum_figure`."""
    k, n, dim = fm.num_classes, fm.labels.shape[0], int(fm.features.shape[1])
    eig = _descending(fm.spectrum.eigvals)
    if fm.block_spectrum is None:  # no block model (raw features): its entries are NaN / empty
        top, block_eig = np.full(k, np.nan), np.zeros(0)
    else:
        top = _descending(fm.block_spectrum.class_eigvals)
        block_eig = _descending(np.concatenate([top, np.full(n - k, float(fm.block_spectrum.within))]))
    ridge = k * n * fm.lam
    nonzero = eig > 1e-10 * eig[0]
    summary = {
        "dim": dim,
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
    return summary, dict(
        eigvals=eig, block_eigvals=block_eig, c=fm.stats.c, d=fm.stats.d, ridge=ridge, num_classes=k, n=n, dim=dim
    )


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

    Accuracies by the one correctness rule (:data:`sdtheory.TIE_TOL`: a tie with the true class fails) against
    ``true_labels``: ``train_acc`` and its clean / corrupted split (groups by ``given_labels``; an empty group
    is NaN); ``test_acc`` on ``test_outputs`` ``(R, M, K)`` (NaN without). ``probabilities``: the outputs are
    probability rows; record the mean confidence and normalised predictive diversity (NaN otherwise).
    """
    out = np.asarray(outputs, dtype=float)
    if out.ndim != 3:
        raise ValueError(f"outputs must be (R, N, K), got shape {out.shape}")
    split = split_accuracy(out, true_labels, given_labels, tie_tol=TIE_TOL)
    nan = np.full(out.shape[0], np.nan)
    test = nan if test_outputs is None else np.asarray(accuracy(test_outputs, test_labels, tie_tol=TIE_TOL))
    conf = [np.mean(confidence(o)) for o in out] if probabilities else nan
    div = [np.mean(predictive_diversity(o, normalize=True)) for o in out] if probabilities else nan
    cols = (split.overall, split.clean, split.corrupted, test, conf, div)
    return [{m: float(c[r]) for m, c in zip(METRIC_COLUMNS, cols, strict=True)} for r in range(out.shape[0])]


@float64
def run_cell(
    fm: FeatureMap,
    given_labels: Any,
    test_labels: Any,
    *,
    num_rounds: int,
    q: float = 0.7,
    init: str = "teacher",
    solver: str = DEFAULT_SOLVER,
) -> list:
    """All methods for one noisy label vector; rows without the cell keys (feature map, kind, rate, seed).

    ``(solver, method, round)``: exact SD rounds; exact PLL students ``pll_ce``, ``pll_gce`` (``q``, start
    ``init``) from the exact teacher's top 2 (round 1); closed-form SD and PLL; the fitted block models' SD
    (``block``: ``(c, d)``; ``block_corr`` / ``block_corr_exact``: class-pair means, linearised / exact;
    training set only). ``agree_exact``: the share of training argmaxes equal to the exact fit's of the round.
    """
    num_rounds = V.check_num_rounds(num_rounds, "num_rounds")
    init = check_init(init)
    check_options("gce", q, DEFAULT_TOL, DEFAULT_MAX_ITER, "flag", solver)
    opts = dict(EXACT_OPTIONS, solver=solver)
    k, true = fm.num_classes, fm.labels
    given = V.check_labels(given_labels, k, "given_labels")
    V.check_same_n(true.shape[0], given.shape[0], "given_labels", "labels")
    test_true = V.check_labels(test_labels, k, "test_labels")
    V.check_same_n(fm.test_features.shape[0], test_true.shape[0], "test_labels", "test_features")
    t = jnp.asarray(np.eye(k)[given])
    lam, q, x, xt = jnp.asarray(fm.lam, dtype=float), float(q), fm.features, fm.test_features

    def score(outputs, test_outputs=None, probabilities=False):
        return score_rounds(
            outputs, true, given, test_outputs=test_outputs, test_labels=test_true, probabilities=probabilities
        )

    # exact SD, rounds 0..R-1, in the solver coordinates computed once per feature map
    res: ExactResult = exact_phi_core(fm.phi, t, lam, num_rounds, loss="ce", q=q, **opts)
    exact_pred = np.asarray(res.outputs).argmax(-1)  # (R, N): reference of the agreement columns
    test_out = exact_predict(res, test_features=xt, features=x)
    out = _rows("exact", "sd", score(res.outputs, test_out, True), res=res)
    teacher, pll_pred = round_fit(res), {}
    for loss in LOSSES:  # every registered student loss (ce: the theory; gce: SelfPLL), the one PLL pipeline
        pll = pll_rounds_core(exact_fit(fm.phi, lam, loss=loss, q=q, **opts), teacher, 1, TIE_TOL, init)
        pll_pred[loss] = np.asarray(pll.outputs[:1]).argmax(-1)
        # the student's ExactResult (round axis kept) carries the dual coefficients for held-out outputs
        pt = exact_predict(jax.tree_util.tree_map(lambda a: a[1:], pll.fits), test_features=xt, features=x)
        out += _rows("exact", f"pll_{loss}", score(pll.outputs, pt, True)[:1], first=1, res=pll)
    # closed form from the empirical Gram (linearised): one predictor per label vector, from the map's spectrum
    model = functools.partial(predictor, lam=fm.lam, spectrum=fm.spectrum, features=x)
    cf_model = model(t)
    cf = cf_model.train_outputs(num_rounds=num_rounds)
    cft = cf_model.test_outputs(num_rounds=num_rounds, test_features=xt)
    out += _rows("closed_form", "sd", score(cf, cft), agree=_agree(cf, exact_pred))
    fit = closed_fit(fm.spectrum, lam)
    pc = pll_rounds_core(fit, fit(t), 1, TIE_TOL)
    pct = model(pc.targets[0]).test_outputs(rounds=0, test_features=xt)
    out += _rows(
        "closed_form", "pll_ce", score(pc.outputs, pct)[:1], first=1, agree=_agree(pc.outputs[:1], pll_pred["ce"])
    )
    if fm.block_spectrum is None:  # raw features: no block model
        return out
    # block model fitted to the features (c, d); training instances only
    bo = block_outputs_core(fm.block_spectrum, jnp.asarray(true), t, lam, jnp.arange(num_rounds))
    out += _rows("block", "sd", score(bo), agree=_agree(bo, exact_pred))
    # the block model with the class-pair means R, on label types: linearised and exact softmax
    tcls, ttgt = label_types(k)
    tidx = jnp.asarray(true * k + given)
    ts = type_spectrum_core(jnp.asarray(fm.stats.class_means, dtype=float), tcls, jnp.zeros((k * k,)).at[tidx].add(1.0))
    br = reduced_closed_core(ts, ttgt.astype(float), lam, jnp.arange(num_rounds))[:, tidx]
    bx = reduced_exact_core(
        ts, ttgt.astype(float), lam, num_rounds, loss="ce", tol=opts["tol"], max_iter=opts["max_iter"], solver=solver
    )
    out += _rows("block_corr", "sd", score(br), agree=_agree(br, exact_pred))
    bxo = bx.outputs[:, tidx]
    return out + _rows("block_corr_exact", "sd", score(bxo), agree=_agree(bxo, exact_pred), res=bx)


def _agree(outputs: Any, reference: Any) -> list:
    """Per round, the share of argmaxes of ``outputs`` ``(R, N, K)`` equal to ``reference`` ``(R, N)``."""
    return [float(np.mean(np.asarray(o).argmax(-1) == f)) for o, f in zip(outputs, reference, strict=True)]


def _rows(solver, method, metrics, *, first=0, agree=None, res=None, agree_key="agree_exact", **extra) -> list:
    """Rows of one method from per-round metrics, ``agree``, the solver record ``res`` (round ``first + r``)."""
    nan = float("nan")
    return [
        dict(
            solver=solver,
            method=method,
            round=first + r,
            residual=nan if res is None else float(res.residuals[first + r]),
            converged=True if res is None else bool(res.converged[first + r]),
            **{agree_key: nan if agree is None else agree[r]},
            **extra,
            **m,
        )
        for r, m in enumerate(metrics)
    ]


class FeatureMapError(ValueError):
    """A feature map that :func:`run_protocol` cannot use on the data set; the message names it and says why."""


class ProtocolResult(NamedTuple):
    """Result of :func:`run_protocol`: ``rows`` (keys :data:`FIELDNAMES`), a one-line ``dataset``, per
    feature map its summary (:func:`feature_map_report`, plus ``cc`` clusters), ``spectra`` and ``timings``."""

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
    solver: str = DEFAULT_SOLVER,
    progress: Optional[Callable[[int, int, float], None]] = None,
    completed: Optional[Mapping[tuple, Sequence[Mapping]]] = None,
    on_cell: Optional[Callable[[tuple, list], None]] = None,
) -> ProtocolResult:
    """The real-data protocol over feature maps x kinds x rates x seeds (module docstring).

    ``ds`` needs a held-out split (:func:`prepare_dataset`). Keys from ``master = key(seed)``: map ``i``
    from ``fold_in(master, 10 + i)``, the labels of (map ``i``, kind ``j``, rate ``l``, seed ``s``) from
    ``fold_in`` of ``100 + i``, ``j``, ``l``, ``s``. ``lam``: default :func:`lam_rule` per map;
    ``center``, ``normalize``: :func:`sdtheory.data.make_features`'s (without ``normalize`` no block
    model); ``init``, ``solver``: :func:`run_cell`'s. ``progress(done, total, seconds)``: before the first
    (compiling) cell of every map and after every computed cell; ``on_cell(key, rows)`` after every
    computed cell, ``key = (feature_map, kind, float rate, seed index)``; ``completed``: such keys of cells
    already done by a call with the same arguments, mapped to their rows (used as they are).
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
    opts = dict(num_rounds=num_rounds, q=q, init=init, solver=solver)
    fit = lambda fm, given, key: run_cell(fm, given, ds.test_labels, **opts)
    maps = (feature_maps, seed, relu_dim, center, normalize, lam)
    return _grid(ds, maps, kinds, rates, num_seeds, fit, progress, completed, on_cell)


def _grid(ds, maps, kinds, rates, num_seeds, fit, progress, completed, on_cell) -> ProtocolResult:
    """:func:`run_protocol`'s loop over checked arguments; ``fit(fm, given labels, their key)``: a cell's rows."""
    feature_maps, seed, relu_dim, center, normalize, lam = maps
    master, k, true = jax.random.key(seed), ds.num_classes, ds.labels
    rows: list = []
    summaries, spectra, timings = {}, {}, {}
    total, done, t_start = len(feature_maps) * len(kinds) * len(rates) * num_seeds, 0, time.perf_counter()
    for fi, name in enumerate(feature_maps):
        try:
            x, xt = _map(ds, fi, name, seed, relu_dim, center, normalize)
            fm = prepare_feature_map(x, xt, true, k, lam=lam, name=name, block_model=normalize)
        except ValueError as exc:
            raise _unusable(ds, fi, name, exc) from None
        summaries[name], spectra[name] = feature_map_report(fm)
        if "cc" in kinds:  # (the only kind that reads the clusters)
            summaries[name]["cc_clusters"] = clusters = confusable_clusters(x, true)
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
                    key = functools.reduce(jax.random.fold_in, (100 + fi, ki, ri, s), master)
                    given = np.asarray(sample_labels(key, true, C)).astype(np.int64)
                    realised = float(np.mean(given != true))
                    head = dict(
                        feature_map=name, kind=kind, rate=float(rate), seed=s, realised_rate=realised, lam=fm.lam
                    )
                    cell_rows = [{**head, **row} for row in fit(fm, given, key)]
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
    """The noisy-label mode: per feature map ``(name, x, xt, info)``; no noise drawn, ``ds.labels`` as given.

    Features as in :func:`run_protocol`; ``lam``: default :func:`lam_rule` on :func:`noisy_label_c` (``noise_rate``:
    known, else estimated). ``info``: ``lam``, ``lam_rule``, ``c``, ``noise_rate``, ``c_given_labels`` (the uncorrected
    fit) and, from ``ds.clean_labels`` for evaluation only, ``c_clean_labels`` and ``realised_rate``.
    """
    if ds.test_features is None or ds.test_labels is None:
        raise ValueError("the data set needs a held-out split; see prepare_dataset")
    k, y, clean = ds.num_classes, ds.labels, ds.clean_labels
    lam = None if lam is None else V.check_lam(lam)
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


def aggregate(rows: Sequence[Mapping], *, metrics: Optional[Sequence[str]] = None) -> dict:
    """``(feature_map, kind, rate, solver, method, round) -> {metric: (mean, std, n)}`` over seeds.

    ``metrics``: default :data:`METRIC_COLUMNS`, ``agree_exact`` and ``realised_rate``. Non-finite values
    (an empty group, a metric a method does not have) are left out; ``n`` counts the values used.
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
            agg[key][m] = (float(v.mean()), float(v.std()), int(v.size)) if v.size else (np.nan, np.nan, 0)
    return agg


def solver_report(rows: Sequence[Mapping]) -> dict:
    """Exact-solver health over all rows: number of exact rows, unconverged ones, largest residual."""
    exact = [r for r in rows if r["solver"] == "exact"]
    return {
        "exact_rows": len(exact),
        "exact_unconverged": sum(not r["converged"] for r in exact),
        "max_exact_residual": max((r["residual"] for r in exact), default=float("nan")),
    }


def _cell_text(v, digits: int = 1) -> str:
    """``mean (std)`` in % (``mean±std`` with two digits, SelfPLL's layout); ``-`` for nothing."""
    if v is None or not np.isfinite(v[0]):
        return "-"
    return f"{100 * v[0]:.1f} ({100 * v[1]:.1f})" if digits == 1 else f"{100 * v[0]:.2f}±{100 * v[1]:.2f}"


def _markdown(heading: str, head: Sequence[str], body: Sequence[Sequence[str]]) -> list:
    """Lines of ``heading``, a blank line, the table (header ``head``, rows ``body``) and a blank line."""
    line = lambda cells: "| " + " | ".join(cells) + " |"
    return [heading, "", line(head), "|" + "---|" * len(head), *map(line, body), ""]


def _table(agg: Mapping, fmap: str, kinds: Sequence, rates: Sequence, cols: list, metric: str, heading: str) -> list:
    """A summary table of ``metric``: a row per (kind, rate), a column per ``(solver, method, round, title)``."""
    body = [
        [kind, f"{rate:g}", *(_cell_text(agg.get((fmap, kind, rate, *c[:3]), {}).get(metric)) for c in cols)]
        for kind in kinds
        for rate in rates
    ]
    return _markdown(heading, ["kind", "eta", *(c[3] for c in cols)], body)


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
    """``summary.md`` (mean (std) over seeds, in %): ``agg`` from :func:`aggregate`, ``feature_maps`` name ->
    summary (:attr:`ProtocolResult.feature_maps`) in table order."""
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
    last = num_rounds - 1
    cols = [("exact", "sd", r, f"SD r{r}" if r else "teacher") for r in range(num_rounds)]
    cols += [
        ("exact", "pll_ce", 1, "PLL-CE"),
        ("exact", "pll_gce", 1, "PLL-GCE"),
        ("closed_form", "sd", 0, "CF teacher"),
    ]
    cols += [("closed_form", "sd", last, f"CF SD r{last}"), ("closed_form", "pll_ce", 1, "CF PLL")]
    cols += [(s, "sd", last, f"{h} SD r{last}") for s, h in (("block", "block"), ("block_corr", "block-R"))]
    cols += [("block_corr_exact", "sd", last, f"block-R exact SD r{last}")]
    agree = [("closed_form", "sd", 0, "CF teacher"), ("closed_form", "sd", last, f"CF SD r{last}")]
    agree += [("closed_form", "pll_ce", 1, "CF PLL vs exact PLL-CE"), ("block", "sd", 0, "block teacher")]
    agree += [("block", "sd", last, f"block SD r{last}"), ("block_corr", "sd", last, f"block-R SD r{last}")]
    agree += [("block_corr_exact", "sd", r, f"block-R exact {'teacher' if r == 0 else f'SD r{r}'}") for r in (0, last)]
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
            lines += _table(agg, fmap, kinds, rates, use, metric, f"### {title}")
        title = "### Agreement with the exact solution (same round, training-set argmax)"
        lines += _table(agg, fmap, kinds, rates, agree, "agree_exact", title)
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
    """Held-out accuracy in the SelfPLL reference's table layout (markdown): per feature map and kind, rows
    ``1 (Teacher)``, ``2``, ..., ``num_rounds`` (step ``t`` = our round ``t - 1``) and ``PLL`` (the exact
    GCE student), columns the rates, cells ``mean±std`` over seeds in %."""
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
            cell = lambda m, r, rate: _cell_text(agg.get((fmap, kind, rate, "exact", m, r), {}).get("test_acc"), 2)
            body = [[label, *(cell(m, r, rate) for rate in rates)] for label, m, r in rows]
            lines += _markdown(f"## `{fmap}`, {kind} noise", ["Distillation Step", *(f"{r:g}" for r in rates)], body)
    return "\n".join(lines) + "\n"
