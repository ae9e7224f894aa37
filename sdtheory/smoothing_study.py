r"""The label-smoothing study (docs/smoothing.md): is self-distillation instance-specific label smoothing?

For one noisy label vector (:func:`run_smoothing_cell`) every method is an exact fit on the same features and
``lam``: ``teacher`` (round 0); ``uniform`` (one fit per ``eps``, the ``param``); ``beta_one`` / ``beta_fixed``
(rank-matched Beta smoothing mixed with the hard labels by ``alpha``, one refit or iterated to a fixed point of
the ranking: ``refits`` counts the refits, ``fixed_point`` is 1 if the ranking stopped changing within
``beta_max_iter``); ``sd`` (rounds ``0..R-1``); ``sd_tau`` (SD at temperature ``tau``, the ``param``); ``pll``
(the PLL student). ``agree_ref`` is the argmax agreement with the teacher (``uniform``, Beta) or with plain SD
of the same round (``sd_tau``); ``solver="closed_form"`` rows give it for the linearised model. Every row has
the metrics of :func:`sdtheory.experiments.score_rounds`.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple, Optional
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from . import _validation as V
from . import experiments as E
from ._x64 import float64
from .data import Dataset
from .exact import ExactResult, exact_phi_core, exact_predict
from ._src.rules import TIE_TOL
from .predictor import predictor
from .refine import exact_fit, pll_rounds_core, round_fit
from .smoothing import beta_smoothing_fixed_point_core, uniform_smoothing_core

__all__ = [
    "FIELDNAMES",
    "STUDY_METHODS",
    "StudyResult",
    "aggregate",
    "markdown_table",
    "method_label",
    "run_smoothing_cell",
    "run_smoothing_study",
]

#: Methods of the study, in table order.
STUDY_METHODS = ("teacher", "uniform", "beta_one", "beta_fixed", "sd", "sd_tau", "pll")
#: Columns of a result row.
FIELDNAMES = (
    *E.CELL_COLUMNS,
    "param",
    "alpha",
    "round",
    *E.METRIC_COLUMNS,
    "agree_ref",
    "refits",
    "fixed_point",
    *E.SOLVER_COLUMNS,
)
#: The metrics :func:`sdtheory.experiments.aggregate` averages over seeds for this study.
AGG_METRICS = (*E.METRIC_COLUMNS, "agree_ref", "refits", "fixed_point", "realised_rate")


def method_label(method: str, param: float) -> str:
    """The aggregation key of a method: its name with its parameter, e.g. ``uniform(eps=0.1)``."""
    names = {"uniform": "eps", "beta_one": "beta", "beta_fixed": "beta", "sd_tau": "tau"}
    return f"{method}({names[method]}={param:g})" if method in names else method


@float64
def run_smoothing_cell(
    fm: E.FeatureMap,
    given_labels: Any,
    test_labels: Any,
    *,
    num_rounds: int,
    eps: Sequence[float],
    betas: Sequence[float],
    taus: Sequence[float],
    key: jax.Array,
    beta_max_iter: int = 20,
    alpha: float = 0.6,
) -> list:
    """All methods of the study for one noisy label vector (module docstring); rows without the cell keys.
    ``key`` draws the Beta values (one fold per ``beta``); ``alpha`` in ``[0, 1]`` weighs the Beta target
    against the hard labels."""
    alpha = V.check_real(alpha, "alpha", minimum=0.0, maximum=1.0)
    k, true = fm.num_classes, fm.labels
    given = V.check_labels(given_labels, k, "given_labels")
    V.check_same_n(true.shape[0], given.shape[0], "given_labels", "labels")
    test_true = V.check_labels(test_labels, k, "test_labels")
    y = jnp.asarray(np.eye(k)[given])
    lam = jnp.asarray(fm.lam, dtype=float)
    x, xt = fm.features, fm.test_features

    def solve(t, rounds=1, **variant) -> ExactResult:
        return exact_phi_core(fm.phi, t, lam, rounds, loss="ce", **E.EXACT_OPTIONS, **variant)

    nan = float("nan")
    blank = dict(agree_key="agree_ref", alpha=nan, refits=nan, fixed_point=nan)

    def rows_of(method, param, res, reference, first=0):  # reference: the argmaxes ``agree_ref`` compares with
        part = jax.tree_util.tree_map(lambda a: a[first:], res)  # the record's rounds from ``first`` on
        test_out = exact_predict(part, test_features=xt, features=x)
        scored = E.score_rounds(
            part.outputs, true, given, test_outputs=test_out, test_labels=test_true, probabilities=True
        )
        agreed = None if reference is None else E._agree(part.outputs, reference)
        return E._rows("exact", method, scored, first=first, agree=agreed, res=res, param=param, **blank)

    out: list = []
    sd = solve(y, num_rounds)
    sd_pred = np.asarray(sd.outputs).argmax(-1)  # (R, N)
    out += rows_of("teacher", nan, jax.tree_util.tree_map(lambda a: a[:1], sd), None)
    out += rows_of("sd", nan, sd, None)
    for e in eps:
        out += rows_of("uniform", float(e), solve(uniform_smoothing_core(y, jnp.asarray(float(e)))), sd_pred[:1])
    for i, beta in enumerate(betas):
        for method, max_iter in (("beta_one", 1), ("beta_fixed", beta_max_iter)):
            kept: list = []

            def fit(t, kept=kept):
                res = solve(t)
                kept.append(res)
                return res.outputs[0]

            args = (sd.outputs[0], jax.random.fold_in(key, i), jnp.asarray(given), k, float(beta), max_iter)
            bfp = beta_smoothing_fixed_point_core(fit, *args, alpha=alpha)
            fp = float(bfp.converged) if method == "beta_fixed" else nan
            extra = dict(round=1, alpha=alpha, refits=float(bfp.iterations), fixed_point=fp)
            out += [{**r, **extra} for r in rows_of(method, float(beta), kept[-1], sd_pred[:1])]
    for tau in taus:
        out += rows_of("sd_tau", float(tau), solve(y, num_rounds, temperature=float(tau)), sd_pred)
    pll = pll_rounds_core(exact_fit(fm.phi, lam, loss="ce", **E.EXACT_OPTIONS), round_fit(sd), 1, TIE_TOL)
    out += rows_of("pll", nan, pll.fits, None, first=1)

    # the linearised model's prediction: uniform smoothing and temperature never change an argmax
    def closed_rows(method, param, outs, reference):
        scored = E.score_rounds(outs, true, given)
        return E._rows("closed_form", method, scored, agree=E._agree(outs, reference), param=param, **blank)

    model = functools.partial(predictor, lam=fm.lam, spectrum=fm.spectrum, features=x)
    cf_pred = np.asarray(model(y).train_outputs(num_rounds=num_rounds)).argmax(-1)
    for e in eps:
        cf = model(uniform_smoothing_core(y, jnp.asarray(float(e))))
        out += closed_rows("uniform", float(e), cf.train_outputs(rounds=0), cf_pred[:1])
    for tau in taus:
        cf = model(y, temperature=float(tau))
        out += closed_rows("sd_tau", float(tau), cf.train_outputs(num_rounds=num_rounds), cf_pred)
    return out


class StudyResult(NamedTuple):
    """Result of :func:`run_smoothing_study`: ``rows`` (keys :data:`FIELDNAMES`), the data set line, the
    feature map summary (:func:`sdtheory.experiments.feature_map_report`) and the seconds spent."""

    rows: list
    dataset: str
    feature_map: dict
    seconds: float


@float64
def run_smoothing_study(
    ds: Dataset,
    *,
    feature_map: str,
    kinds: Sequence[str],
    rates: Sequence[float],
    num_seeds: int,
    num_rounds: int,
    eps: Sequence[float],
    betas: Sequence[float],
    taus: Sequence[float],
    lam: Optional[float] = None,
    seed: int = 0,
    relu_dim: int = 512,
    center: bool = True,
    beta_max_iter: int = 20,
    alpha: float = 0.6,
    progress: Optional[Callable[[int, int, float], None]] = None,
) -> StudyResult:
    """The study over kinds x rates x seeds on one feature map of ``ds`` (with a held-out split).

    Keys derive from ``jax.random.key(seed)`` as in :func:`sdtheory.experiments.run_protocol`; a cell's Beta
    draws from ``fold_in(label key, 7)``. ``lam`` defaults to :func:`sdtheory.experiments.lam_rule`;
    ``alpha``: the Beta target's weight (Zhang & Sabuncu's ``0.6``).
    """
    if ds.test_features is None or ds.test_labels is None:
        raise ValueError("the data set needs a held-out split; see sdtheory.experiments.prepare_dataset")
    num_seeds = V.check_int(num_seeds, "num_seeds", minimum=1)
    num_rounds = V.check_int(num_rounds, "num_rounds", minimum=2, maximum=V.MAX_NUM_ROUNDS, why=V.NUM_ROUNDS_WHY)
    alpha = V.check_real(alpha, "alpha", minimum=0.0, maximum=1.0)
    for name, vals, lo_ok in (("eps", eps, True), ("betas", betas, False), ("taus", taus, False)):
        arr = np.atleast_1d(V.check_real_array(vals, name)).astype(float)
        if arr.ndim != 1 or not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} must be a 1-D sequence of finite numbers, got {vals!r}")
        if name == "eps" and not np.all((arr >= 0) & (arr < 1)):
            raise ValueError(f"eps must lie in [0, 1), got {V.short_list(arr)}")
        if not lo_ok and not np.all(arr > 0):
            raise ValueError(f"{name} must be > 0, got {V.short_list(arr)}")
    if lam is not None:
        V.check_lam(lam)
    relu_dim = V.check_int(relu_dim, "relu_dim", minimum=1)
    opts = dict(num_rounds=num_rounds, eps=eps, betas=betas, taus=taus, beta_max_iter=beta_max_iter, alpha=alpha)
    fit = lambda fm, given, key: run_smoothing_cell(fm, given, ds.test_labels, key=jax.random.fold_in(key, 7), **opts)
    maps = ([feature_map], seed, relu_dim, center, True, lam)
    res = E._grid(ds, maps, kinds, rates, num_seeds, fit, progress, {}, None)
    return StudyResult(res.rows, res.dataset, res.feature_maps[feature_map], res.timings[feature_map])


def aggregate(rows: Sequence[dict]) -> dict:
    """``(feature_map, kind, rate, solver, method label, round) -> {metric: (mean, std, n)}`` over seeds; the
    Beta rows must share one ``alpha`` (the :func:`method_label` does not carry it)."""
    alphas = {float(r["alpha"]) for r in rows if r["method"] in ("beta_one", "beta_fixed") and "alpha" in r}
    if len(alphas) > 1:
        raise ValueError(f"the Beta rows mix alpha = {V.short_list(sorted(alphas))}; aggregate one alpha at a time")
    keyed = [{**r, "method": method_label(r["method"], r["param"])} for r in rows]
    return E.aggregate(keyed, metrics=AGG_METRICS)


def markdown_table(
    agg: dict,
    *,
    dataset: str,
    feature_map: str,
    summary: dict,
    kinds: Sequence[str],
    rates: Sequence[float],
    num_rounds: int,
    num_seeds: int,
    eps,
    betas,
    taus,
    alpha: float = 0.6,
) -> str:
    """``smoothing.md``: mean (std) over seeds, in %, per metric; then the closed form's agreement rows."""
    mix, last = f" a={alpha:g}", num_rounds - 1
    cols = [("exact", "teacher", 0, "teacher")]
    cols += [("exact", method_label("uniform", e), 0, f"LS eps={e:g}") for e in eps]
    for b in betas:
        cols += [
            ("exact", method_label("beta_one", b), 1, f"Beta({b:g}){mix} 1 refit"),
            ("exact", method_label("beta_fixed", b), 1, f"Beta({b:g}){mix} fixed pt"),
        ]
    cols += [("exact", "sd", r, f"SD r{r}") for r in range(1, num_rounds)]
    cols += [("exact", method_label("sd_tau", t), last, f"SD tau={t:g} r{last}") for t in taus]
    cols += [("exact", "pll", 1, "PLL")]
    lines = [
        "# Label smoothing vs self-distillation (exact softmax linear probe)",
        "",
        f"Data: {dataset}; feature map `{feature_map}` (d = {summary['dim']}, lam = {summary['lam']:.3g}). "
        f"Mean (std) over {num_seeds} seed(s), in %. LS = uniform label smoothing; Beta = rank-matched Beta "
        "smoothing (one refit from the teacher, or iterated to the fixed point of the ranking), trained on "
        f"the mixed target (1 - a) Y + a T_beta with a = alpha = {alpha:g}.",
        "",
    ]
    for metric, title in (
        ("train_acc", "Training-label recovery"),
        ("train_acc_corrupted", "Recovery on corrupted training instances"),
        ("test_acc", "Held-out accuracy"),
        ("confidence", "Mean confidence (max probability)"),
        ("diversity", "Mean normalised predictive diversity"),
        ("agree_ref", "Argmax agreement with the teacher (LS, Beta) or with plain SD of the same round (tau)"),
    ):
        lines += E._table(agg, feature_map, kinds, rates, cols, metric, f"## {title}")
    ccols = [("closed_form", method_label("uniform", e), 0, f"LS eps={e:g}") for e in eps]
    ccols += [
        ("closed_form", method_label("sd_tau", t), r, f"tau={t:g} r{r}") for t in taus for r in range(1, num_rounds)
    ]
    title = "## Linearised model: argmax agreement with the unsmoothed teacher / plain SD (theory: 100)"
    lines += E._table(agg, feature_map, kinds, rates, ccols, "agree_ref", title)
    return "\n".join(lines) + "\n"
