r"""The corruption condition, the margin, the minimum round and the PLL condition (docs/theorems.md).

Statements about the linearised, balanced block model (``K`` classes of ``per_class`` instances, correlations ``c``,
``d``, L2 weight ``lam``), where an instance of true class ``k`` with label ``y`` scores at round ``r`` (``e = r + 1``)

.. math:: \mathrm{score}_r(l) = a^e [y = l] + (b^e - a^e) f_k(l) + (g^e - b^e) f(l)

and is correct when its true class wins strictly. ``fractions`` is any ``(K, K)`` row-stochastic matrix (``C`` or the
sampled ``empirical_fractions``). Each public function validates and calls a pure ``*_core`` kernel taking
``(fractions, logs)`` (:class:`LogFactors`), which vmaps over fractions and ``lam``.
"""

from __future__ import annotations

import math
from fractions import Fraction
from functools import partial
from typing import Any, NamedTuple

import jax
from jax.typing import ArrayLike
import jax.numpy as jnp
import numpy as np

from . import _validation as V
from ._x64 import float64
from .block import balanced_block_eigenvalues
from ._src.exact import raise_unconverged
from ._src.losses import get_loss
from ._src.rules import TIE_TOL, correct_core, top2_mask_core
from .noise import validate_corruption_matrix
from .reduced import (
    SEARCH_ROUNDS,
    TYPE_MEMORY_LIMIT,
    all_correct_search_core,
    check_type_problem,
    finite_sample_core,
    exact_options as _exact_options,
    label_types,
    resolve_corr,
    type_pll_core,
    type_problem_bytes,
    type_spectrum_core,
)

__all__ = [
    "BEYOND_RANGE",
    "MAX_ROUND",
    "PLL_MAX_CLASSES",
    "PLL_MAX_ROUNDS",
    "PLL_MEMORY_LIMIT",
    "UNBOUNDED",
    "GLOBAL_TOL",
    "LogFactors",
    "log_block_factors",
    "PLLPrediction",
    "RoundWindow",
    "SEARCH_ROUNDS",
    "FiniteSamplePrediction",
    "finite_sample_prediction",
    "all_correct_at",
    "all_correct_at_core",
    "all_correct_rounds",
    "all_correct_rounds_core",
    "corruption_condition",
    "corruption_condition_core",
    "margin",
    "margin_core",
    "max_rounds",
    "min_rounds",
    "min_rounds_core",
    "pll_accuracy_prediction",
    "pll_condition",
    "pll_condition_core",
    "pll_prediction_core",
]

#: Sentinel for "no upper end": the window of all-correct rounds never closes.
UNBOUNDED = int(np.iinfo(np.int64).max)
#: Largest exponent ``e = r + 1`` searched (rounds ``0..MAX_ROUND``).
_EMAX = 2**40
#: Largest round index the searches (``min_rounds``, ``all_correct_rounds``) resolve.
MAX_ROUND = _EMAX - 1
#: Sentinel "beyond the searched range" (a round ``> MAX_ROUND``) returned by the kernels.
BEYOND_RANGE = _EMAX
_SEARCH_STEPS = 44
#: Refuse PLL type-level predictions needing more memory than this (bytes): ``(K, K, K)`` arrays,
#: about ``24 K**3`` bytes (measured from XLA's memory analysis).
PLL_MEMORY_LIMIT = 2 * 2**30
_PLL_BYTES_PER_ENTRY = 24
#: Largest ``K`` with ``24 K**3 <= PLL_MEMORY_LIMIT`` (447).
PLL_MAX_CLASSES = next(k for k in range(2, 10**4) if _PLL_BYTES_PER_ENTRY * (k + 1) ** 3 > PLL_MEMORY_LIMIT)
#: Most PLL student rounds ``pll_accuracy_prediction`` takes (unrolled when compiled: 100 take ~3 s).
PLL_MAX_ROUNDS = 100
#: Global-frequency differences below this are 0 (roundoff of the column means of a doubly stochastic matrix).
GLOBAL_TOL = 1e-12


class RoundWindow(NamedTuple):
    """The rounds ``first <= r <= last`` at which every training instance is correct (``-1, -1``: none;
    ``last = UNBOUNDED``: the window never closes)."""

    first: Any
    last: Any


class LogFactors(NamedTuple):
    """Logs of the balanced block model's per-round shrink factors: the argument of every ``*_core``.

    Attributes:
      log_b: ``log b``, ``b = s_b/(s_b + K N lam)`` (the class factor).
      log_rho: ``log(a/b) <= 0`` (own label vs class average).
      log_gamma: ``log(g/b)`` (global vs class average): ``>= 0`` for ``d >= 0``, ``< 0`` for ``d < 0``.
    """

    log_b: Any
    log_rho: Any
    log_gamma: Any


def _offdiag(k):
    return ~jnp.eye(k, dtype=bool)


def _gaps(f):
    """``D[k, l] = f_k(k) - f_k(l)``, gaps within :data:`sdtheory.TIE_TOL` set to 0 (docs/theorems.md section 3)."""
    d = jnp.diagonal(f)[:, None] - f
    return jnp.where(jnp.abs(d) <= TIE_TOL, 0.0, d)


@jax.jit
def corruption_condition_core(fractions: jax.Array) -> jax.Array:
    """``f_k(k) > f_k(l)`` for every ``k`` and ``l != k``, gaps within ``TIE_TOL`` being ties (jnp bool)."""
    f = jnp.asarray(fractions)
    return jnp.all(jnp.where(_offdiag(f.shape[0]), _gaps(f) > 0, True))


@jax.jit
def margin_core(fractions: jax.Array) -> jax.Array:
    """``Delta = min_{k, l != k, f_k(l) > 0} (f_k(k) - f_k(l))`` (ties count 0); ``+inf`` if no label is corrupted."""
    f = jnp.asarray(fractions)
    occurs = _offdiag(f.shape[0]) & (f > 0)
    return jnp.min(jnp.where(occurs, _gaps(f), jnp.inf))


@jax.jit
def min_rounds_core(fractions: jax.Array, logs: LogFactors) -> jax.Array:
    r"""First all-correct round ``r*`` (no validation; ``-1``: none, :data:`BEYOND_RANGE`: beyond ``MAX_ROUND``).

    Equal global label frequencies: ``r* = floor(log((1 + Delta)/Delta) / log(b/a))``, corrected by evaluating
    ``Delta - (1 + Delta) (a/b)^e > 0`` at the neighbouring exponents; otherwise the first round of
    :func:`all_correct_rounds_core` (docs/theorems.md sections 4 and 9).
    """
    f = jnp.asarray(fractions)
    delta = margin_core(f)
    cond = corruption_condition_core(f)
    noisy = jnp.isfinite(delta)
    dsafe = jnp.where(noisy & cond, delta, 1.0)
    lr = logs.log_rho  # log(a/b) < 0 (0 only when lam underflows the log-factors)

    def ok(r):  # all noisy instances correct at round r (e = r + 1)
        return dsafe - (1.0 + dsafe) * jnp.exp((r + 1.0) * lr) > 0

    est = jnp.floor(jnp.log1p(1.0 / dsafe) / (-lr))  # +inf when lr == 0
    r = jnp.clip(jnp.nan_to_num(est, nan=float(_EMAX), posinf=float(_EMAX)), 0.0, float(MAX_ROUND))
    for _ in range(2):
        r = jnp.where(ok(r), r, r + 1.0)
    for _ in range(2):
        r = jnp.where((r >= 1) & ok(r - 1.0), r - 1.0, r)
    # not reached by round MAX_ROUND (the estimate is within 1 of the truth there)
    r = jnp.where(ok(r) & (r <= MAX_ROUND), r, float(BEYOND_RANGE)).astype(jnp.int64)
    formula = jnp.where(~cond, -1, jnp.where(noisy, r, 0))
    # unequal global label frequencies add the global term: the formula can be a round early there,
    # and the exact window's first round (which includes it) is the answer
    fg = jnp.mean(f, axis=0)
    equal = jnp.all(jnp.abs(fg[:, None] - fg[None, :]) <= GLOBAL_TOL)
    return jnp.where(equal, formula, all_correct_rounds_core(f, logs).first)


def _h_of(fractions, logs):
    """Per pair ``(k, l)``, ``h(e)`` of docs/theorems.md section 5; returns ``(D, F, nu, mask, lr, lgam, L, h)``."""
    f = jnp.asarray(fractions)
    fg = jnp.mean(f, axis=0)
    D = _gaps(f)
    F = fg[:, None] - fg[None, :]
    F = jnp.where(jnp.abs(F) <= GLOBAL_TOL, 0.0, F)
    clean_class = (jnp.diagonal(f) >= 1.0)[:, None]
    nu = jnp.where(f > 0, 1.0, jnp.where(clean_class, -1.0, 0.0))
    mask = _offdiag(f.shape[0])
    lr = logs.log_rho  # log rho <= 0
    lgam = logs.log_gamma  # log gamma: >= 0 for d >= 0, < 0 for d < 0
    F = jnp.where(lgam != 0, F, 0.0)
    L = D - F
    L = jnp.where(jnp.abs(L) <= TIE_TOL, 0.0, L)
    up = D + nu
    scaled = (lgam < 0) & (L == 0) & (F != 0)  # here h is h(e) / gamma^e

    def h(e):
        glob = jnp.where(F == 0, 0.0, F * jnp.expm1(e * lgam))
        plain = -D * jnp.expm1(e * lr) + glob - nu * jnp.exp(e * lr)
        rest = jnp.where(up == 0, F, F - up * jnp.exp(e * jnp.where(scaled, lr - lgam, 0.0)))
        return jnp.where(scaled, rest, plain)

    return D, F, nu, mask, lr, lgam, L, h


@jax.jit
def all_correct_rounds_core(fractions: jax.Array, logs: LogFactors) -> RoundWindow:
    """Exact window of all-correct rounds from the score formula (no validation).

    Each constraint holds on an interval of integer ``e``, found from its peak (analytic) and two integer bisections
    over ``1 <= e <= 2**40``; the window is their intersection (docs/theorems.md section 5). Returns int64
    ``RoundWindow(first, last)``: ``(-1, -1)`` if empty; ``last = UNBOUNDED`` if it never closes; an end beyond
    ``MAX_ROUND`` is ``BEYOND_RANGE`` (with ``first = BEYOND_RANGE`` whether the window is empty is not decided).
    """
    D, F, nu, mask, lr, lgam, L, h = _h_of(fractions, logs)

    def hi_(e):  # h at integer exponents
        return h(e.astype(D.dtype))

    emax = jnp.int64(_EMAX)
    beyond_e = emax + 1  # an end beyond the searched exponents
    never_e = jnp.int64(2**62)  # the window never closes
    up = D + nu  # >= 0, coefficient of -rho^e
    neg = lgam < 0  # d < 0: gamma < 1, h -> L = D - F
    # this pair's interval is bounded: h -> -inf (d >= 0, F < 0) or h falls to L < 0 (d < 0, F > 0)
    closes = jnp.where(neg, (F > 0) & (L < 0), F < 0)
    ratio = jnp.where(closes & (up > 0), up * (-lr) / jnp.where(closes, -F * lgam, 1.0), 1.0)
    # real maximiser of h over e > 0: <= 1 when h only decreases; +inf when it never decreases
    e_peak = jnp.where(closes, jnp.log(ratio) / jnp.where(closes & (lgam != lr), lgam - lr, 1.0), jnp.inf)
    # d < 0 with gamma <= rho: h < 0 for every e > 0 (decreasing, then rising to L < 0 from below)
    e_peak = jnp.where(closes & neg & (lgam <= lr), 1.0, e_peak)
    e_peak = jnp.nan_to_num(e_peak, nan=1.0, posinf=jnp.inf, neginf=1.0)
    peak_beyond = e_peak > float(_EMAX)
    p_lo = jnp.floor(jnp.clip(e_peak, 1.0, float(_EMAX))).astype(jnp.int64)
    p_hi = jnp.minimum(p_lo + 1, emax)
    p = jnp.where(hi_(p_hi) > hi_(p_lo), p_hi, p_lo)  # best integer exponent in [1, 2**40]
    feasible = hi_(p) > 0
    # h > 0 somewhere (closing pairs: at the peak) or eventually (the others): d >= 0: h -> +inf (F > 0)
    # or D (F == 0); d < 0: h -> L, from above when F > 0 and gamma > rho (or up == 0)
    eventually = jnp.where(neg, (L > 0) | ((L == 0) & (F > 0) & ((lgam > lr) | (up == 0))), (F > 0) | (D > 0))
    sup_pos = jnp.where(closes, jnp.where(jnp.isfinite(e_peak), h(e_peak) > 0, D > 0), eventually)
    starts_beyond = ~feasible & peak_beyond & sup_pos

    def lo_step(_, s):  # smallest e in [lo, hi] with h(e) > 0, h increasing there
        lo, hi = s
        mid = (lo + hi) // 2
        good = hi_(mid) > 0
        return jnp.where(lo < hi, jnp.where(good, lo, mid + 1), lo), jnp.where(lo < hi, jnp.where(good, mid, hi), hi)

    def hi_step(_, s):  # largest e in [lo, hi] with h(e) > 0, h decreasing there
        lo, hi = s
        mid = (lo + hi + 1) // 2
        good = hi_(mid) > 0
        return jnp.where(lo < hi, jnp.where(good, mid, lo), lo), jnp.where(lo < hi, jnp.where(good, hi, mid - 1), hi)

    ones = jnp.ones_like(p)
    e_lo, _ = jax.lax.fori_loop(0, _SEARCH_STEPS, lo_step, (ones, p))
    _, e_hi = jax.lax.fori_loop(0, _SEARCH_STEPS, hi_step, (p, jnp.full_like(p, emax)))
    e_lo = jnp.where(feasible, e_lo, beyond_e)
    e_hi = jnp.where(closes, jnp.where(peak_beyond | (hi_(jnp.full_like(p, emax)) > 0), beyond_e, e_hi), never_e)
    ok_pair = jnp.all(jnp.where(mask, feasible | starts_beyond, True))
    first_e = jnp.max(jnp.where(mask, e_lo, 1))
    last_e = jnp.min(jnp.where(mask, e_hi, never_e))
    nonempty = ok_pair & (first_e <= last_e)
    first = jnp.where(nonempty, jnp.where(first_e > emax, BEYOND_RANGE, first_e - 1), -1)
    last = jnp.where(last_e == never_e, UNBOUNDED, jnp.where(last_e > emax, BEYOND_RANGE, last_e - 1))
    return RoundWindow(first.astype(jnp.int64), jnp.where(nonempty, last, -1).astype(jnp.int64))


@jax.jit
def all_correct_at_core(fractions: jax.Array, logs: LogFactors, rounds: jax.Array) -> jax.Array:
    """Whether every training instance is correct at each of ``rounds`` (shape ``rounds.shape``): the
    binding constraints evaluated directly at ``e = r + 1`` (no unimodality used; any int64 round)."""
    D, F, nu, mask, lr, lgam, L, h = _h_of(fractions, logs)
    e = (jnp.asarray(rounds).astype(D.dtype) + 1.0)[..., None, None]
    return jnp.all(jnp.where(mask, h(e) > 0, True), axis=(-2, -1))


class PLLPrediction(NamedTuple):
    """Type-level prediction of the PLL student in the linearised balanced block model.

    Attributes:
      accuracy: ``(R - 1,)`` training accuracy of student rounds ``1..R-1`` (``num_rounds = R``).
      correct: ``(R - 1, K, K)`` whether type (true ``k``, given ``y``) is correct after each student round.
      top2: ``(K, K, K)`` bool, the teacher's top-2 set for type ``(k, y)``.
      h: ``(K, K)`` ``h_k(l)``: fraction of class ``k`` whose teacher top-2 contains ``l``.
    """

    accuracy: jax.Array
    correct: jax.Array
    top2: jax.Array
    h: jax.Array


def _type_scores(targets_kyl, f_types, a, b, g):
    """One-round (``e = 1``) linearised scores ``(K, K, K)`` of every type ``(k, y)`` (targets ``targets_kyl``)."""
    tbar_k = jnp.einsum("ky,kyl->kl", f_types, targets_kyl)
    tbar = jnp.mean(tbar_k, axis=0)
    return a * targets_kyl + (b - a) * tbar_k[:, None, :] + (g - b) * tbar[None, None, :]


@partial(jax.jit, static_argnames=("num_rounds",))
def pll_prediction_core(fractions: jax.Array, logs: LogFactors, num_rounds: int = 1, tie_tol=TIE_TOL) -> PLLPrediction:
    """PLL student prediction from the fractions (no validation; ``num_rounds`` student rounds, static).

    Teacher: round 0 on the one-hot given labels; each student fits one round (``e = 1``) on ``1/2`` on each of the
    previous round's top-2 classes (the one top-2 and tie rules of :mod:`sdtheory._src.rules`). Holds ``(K, K, K)``
    arrays, about ``24 K**3`` bytes (:data:`PLL_MEMORY_LIMIT`).
    """
    f = jnp.asarray(fractions)
    k = f.shape[0]
    a, b, g = (jnp.exp(logs.log_b + logs.log_rho), jnp.exp(logs.log_b), jnp.exp(logs.log_b + logs.log_gamma))
    t = jnp.broadcast_to(jnp.eye(k, dtype=f.dtype)[None, :, :], (k, k, k))  # type (k, y) has one-hot target e_y
    teacher_top2 = top2_mask_core(_type_scores(t, f, a, b, g), tie_tol)
    true_class = jnp.arange(k)[:, None]  # type (k, y) has true class k
    h = jnp.einsum("ky,kyl->kl", f, teacher_top2.astype(f.dtype))
    accs, corrects = [], []
    mask = teacher_top2
    for _ in range(num_rounds):
        scores = _type_scores(mask.astype(f.dtype) / 2.0, f, a, b, g)
        correct = correct_core(scores, true_class, tie_tol)
        corrects.append(correct)
        accs.append(jnp.sum(jnp.where(correct, f, 0.0)) / k)
        mask = top2_mask_core(scores, tie_tol)
    return PLLPrediction(jnp.stack(accs), jnp.stack(corrects), teacher_top2, h)


@jax.jit
def pll_condition_core(fractions: jax.Array, logs: LogFactors) -> jax.Array:
    """Corruption condition and ``h_k(l) < 1`` for all ``l != k`` (no validation)."""
    f = jnp.asarray(fractions)
    pred = pll_prediction_core(f, logs, 1)
    hk = jnp.where(_offdiag(f.shape[0]), pred.h, 0.0)
    return corruption_condition_core(f) & jnp.all(hk < 1.0)


def _pll_from_types(f, ts, res, tie_tol) -> PLLPrediction:
    """:class:`PLLPrediction` from the PLL pipeline run on the ``K^2`` label types (balanced classes)."""
    k = f.shape[0]
    correct = correct_core(res.outputs, ts.classes, tie_tol).reshape(-1, k, k)
    top2 = top2_mask_core(res.teacher, tie_tol).reshape(k, k, k)
    h = jnp.einsum("ky,kyl->kl", f, top2.astype(f.dtype))
    acc = jnp.sum(jnp.where(correct, f[None], 0.0), axis=(1, 2)) / k
    return PLLPrediction(acc, correct, top2, h)


def _scalar(x, cast):
    """A 0-d kernel result as a Python ``cast``; a tracer (under ``jax.vmap``/``jax.jit``) as it is."""
    return x if V.is_tracer(x) else cast(x)


def _check_fractions(fractions):
    return jnp.asarray(validate_corruption_matrix(fractions, name="fractions"), dtype=float)


def _log_factors_xp(xp, s_w, s_b, s_g, d_bw, d_gb, kn, lam):
    """:class:`LogFactors` (docs/theorems.md section 9); ``d_bw = s_b - s_w``, ``d_gb = s_g - s_b``, ``kn = K N``."""
    R = kn * lam
    xb = R / s_b
    t = math.log(kn) - math.log(s_b) + xp.log(lam)
    log_b = xp.where(xp.isfinite(xb), -xp.log1p(xb), -(t + xp.log1p(xp.exp(-t))))
    x = (d_bw / s_b) / (1.0 + s_w / R)
    log_rho = xp.where(x <= 0.5, xp.log1p(-x), math.log(s_w / s_b) + xp.log1p(d_bw / (s_w + R)))
    y = (d_gb / s_b) / (1.0 + s_g / R)
    log_gamma = xp.where(y >= -0.5, xp.log1p(y), math.log(s_g / s_b) + xp.log1p(-d_gb / (s_g + R)))
    return LogFactors(log_b, log_rho, log_gamma)


@float64
def log_block_factors(*, per_class: int, num_classes: int, c: float, d: float, lam: Any) -> LogFactors:
    r"""Logs of the balanced block model's shrink factors: :class:`LogFactors` ``(log b, log(a/b), log(g/b))``.

    ``(a, b, g) = s/(s + K N lam)`` for the eigenvalues of :func:`sdtheory.block.balanced_block_eigenvalues`; accurate
    to a few ulps for every finite ``lam > 0`` (docs/theorems.md section 9). ``c``, ``d`` concrete; a traced ``lam``
    gives traced fields, concrete input Python floats.
    """
    for name, v in (("c", c), ("d", d)):
        if V.is_tracer(v):
            raise TypeError(f"{name} must be a concrete float (vmap over lam and fractions, not {name})")
    V.check_lam(lam)
    s_w, s_b, s_g = balanced_block_eigenvalues(per_class=per_class, num_classes=num_classes, c=c, d=d)
    n, k = int(per_class), int(num_classes)
    c, d = float(c), float(d)
    # the differences exactly rounded from the float inputs (they may be tiny next to the eigenvalues)
    d_bw = float(n * (Fraction(c) - Fraction(d)))
    args = (s_w, s_b, s_g, d_bw, n * k * d, k * k * n)
    if V.is_tracer(lam):
        return _log_factors_xp(jnp, *args, lam)
    with np.errstate(all="ignore"):
        out = _log_factors_xp(np, *args, np.float64(lam))
    return LogFactors(*(float(v) for v in out))


def _log_factors(fractions, c, d, lam, per_class):
    """:class:`LogFactors` as float arrays for the kernels (``lam`` may be traced; ``c``, ``d`` concrete)."""
    logs = log_block_factors(per_class=per_class, num_classes=int(np.shape(fractions)[0]), c=c, d=d, lam=lam)
    return LogFactors(*(jnp.asarray(x, dtype=float) for x in logs))


def _check_pll_fractions(fractions):
    f = _check_fractions(fractions)
    k = int(f.shape[0])
    V.check_pll_classes(k, "the classes of fractions")
    if k > PLL_MAX_CLASSES:
        raise ValueError(
            f"fractions has K = {k} classes: the (K, K, K) arrays need {_PLL_BYTES_PER_ENTRY * k**3 / 2**30:.3g} GiB "
            f"> PLL_MEMORY_LIMIT; it supports K <= {PLL_MAX_CLASSES}"
        )
    return f


def _check_per_class(per_class: Any, k: int) -> int:
    n = V.check_size(per_class, "per_class", minimum=1)
    if k * n > V.MAX_COUNT:
        raise ValueError(f"per_class * K (the number of instances N) must be at most {V.MAX_COUNT}, got {n} * {k}")
    return n


def _uses_reduced(model, corr, c, d, exact_options) -> bool:
    """Validate ``model``; True when the answer comes from the reduced model (exact, or a general ``corr``)."""
    model = V.check_model(model)
    if model == "closed" and exact_options:
        raise TypeError(f"unexpected keyword arguments for the linearised model: {sorted(exact_options)}")
    if corr is None and (c is None or d is None):
        raise TypeError("pass c= and d= (within- and between-class correlation) or corr= (a (K, K) matrix)")
    return model == "exact" or corr is not None


def _solver_kwargs(opts: dict) -> dict:
    return {x: opts[x] for x in ("tol", "max_iter", "solver") if x in opts}


def _check_exact_concrete(opts: dict, kernel: str, **values: Any) -> None:
    """``TypeError`` when ``on_failure="raise"`` must check convergence on traced ``values`` (by name)."""
    traced = [name for name, v in values.items() if any(V.is_tracer(x) for x in jax.tree_util.tree_leaves(v))]
    if traced and opts.get("on_failure") == "raise":
        what = (
            "the computation is traced (inside jax.jit)" if traced == ["result"] else f"{traced[0]} is a traced value"
        )
        raise TypeError(
            f"model='exact' checks convergence (on_failure='raise') on concrete values, but {what}; pass "
            f"on_failure='flag' under jax.vmap/jax.jit, or transform {kernel} instead (its result carries converged)"
        )


def _on_types(kernel, opts, fractions, c, d, corr, lam, per_class, tie_tol, kept_rounds=1, **static):
    """``(f, ts, tie_tol, kernel(ts, targets, lam, tie_tol, **static))`` on the population types, validated."""
    f = _check_fractions(fractions)
    k = int(f.shape[0])
    check_type_problem(k * k, k, "fractions", num_rounds=kept_rounds)
    n = _check_per_class(per_class, k)
    R = resolve_corr(c, d, corr, [n] * k)
    V.check_lam(lam)
    tie_tol = V.check_tie_tol(tie_tol)
    cls, tgt = label_types(k)
    ts = type_spectrum_core(jnp.asarray(R), cls, n * f.reshape(-1))
    name = f"sdtheory.reduced.{kernel.__name__}"
    _check_exact_concrete(opts, name, fractions=fractions, lam=lam)
    res = kernel(ts, tgt, jnp.asarray(lam, dtype=float), tie_tol, **static, **_solver_kwargs(opts))
    _check_exact_concrete(opts, name, result=res.converged)
    return f, ts, tie_tol, res


def _rounds(first_only, fractions, c, d, lam, per_class, corr, model, search_rounds, tie_tol, options) -> RoundWindow:
    """:func:`min_rounds` (``first_only``: ``last`` is not computed) and :func:`all_correct_rounds`."""
    if not _uses_reduced(model, corr, c, d, options):
        f = _check_fractions(fractions)
        logs = _log_factors(f, c, d, lam, per_class)
        w = RoundWindow(min_rounds_core(f, logs), -1) if first_only else all_correct_rounds_core(f, logs)
        if not V.is_tracer(w.first) and int(w.first) == BEYOND_RANGE:
            raise ValueError(
                f"the first all-correct round{' r*' if first_only else ''} lies beyond round MAX_ROUND = 2**40 - 1 at "
                f"lam = {float(lam):.6g}; increase lam, or use the *_core kernels (they return BEYOND_RANGE there)"
            )
        return w if V.is_tracer(w.first) else RoundWindow(int(w.first), int(w.last))
    search_rounds = V.check_int(
        search_rounds, "search_rounds", minimum=1, maximum=V.MAX_NUM_ROUNDS, why="the rounds are evaluated one by one"
    )
    opts = _exact_options("ce", 0.7, options) if model == "exact" else {}
    static = dict(model=model, search_rounds=search_rounds, stop_at_first=first_only)
    res = _on_types(all_correct_search_core, opts, fractions, c, d, corr, lam, per_class, tie_tol, **static)[3]
    if model == "exact" and opts["on_failure"] == "raise" and not res.converged:
        raise RuntimeError(
            f"exact solver did not reach tol={opts['tol']:g} in some round of the search (largest residual "
            f"{float(res.residual):.3g}); raise max_iter or tol, or pass on_failure='flag'"
        )
    last = -1 if first_only else jnp.where(res.first < 0, -1, jnp.where(res.closed, res.last, UNBOUNDED))
    return RoundWindow(res.first, last) if V.is_tracer(res.first) else RoundWindow(int(res.first), int(last))


@float64
def corruption_condition(fractions: ArrayLike) -> bool:
    """The label-corruption condition ``f_k(k) > f_k(l)`` for all ``k``, ``l != k`` (ties fail): in the linearised
    balanced block model with equal global label frequencies (or ``d = 0``), necessary and sufficient for some round
    to classify every training instance correctly (docs/theorems.md section 3)."""
    return _scalar(corruption_condition_core(_check_fractions(fractions)), bool)


@float64
def margin(fractions: ArrayLike) -> float:
    """``Delta = min over k and labels l != k with f_k(l) > 0 of f_k(k) - f_k(l)``; ``inf`` when no
    label is corrupted."""
    return _scalar(margin_core(_check_fractions(fractions)), float)


@float64
def min_rounds(
    fractions: ArrayLike,
    *,
    c: Any = None,
    d: Any = None,
    lam: Any,
    per_class: int,
    corr: Any = None,
    model: str = "closed",
    search_rounds: int = SEARCH_ROUNDS,
    tie_tol: float = TIE_TOL,
    **exact_options: Any,
):
    r"""First round ``r*`` (0 = teacher) at which every training instance is correct (docs/theorems.md section 4).

    With equal global label frequencies ``r* = floor(log((1 + Delta)/Delta) / log(b/a))``; otherwise the
    first round of :func:`all_correct_rounds`. Returns an ``int``: ``-1`` if the corruption condition fails,
    ``0`` if no label is corrupted (a traced array under ``jax.vmap``, :data:`BEYOND_RANGE` beyond
    :data:`MAX_ROUND`, where the public function raises ``ValueError`` naming ``lam``).

    ``model="exact"`` (softmax) or a ``(K, K)`` class-correlation ``corr`` (for ``c``, ``d``): rounds
    ``0..search_rounds-1`` of the population types of :mod:`sdtheory.reduced`, evaluated directly with
    ``tie_tol`` (``-1``: none); ``exact_options``: ``tol``, ``max_iter``, ``on_failure``, ``solver``.
    """
    return _rounds(True, fractions, c, d, lam, per_class, corr, model, search_rounds, tie_tol, exact_options).first


@float64
def all_correct_rounds(
    fractions: ArrayLike,
    *,
    c: Any = None,
    d: Any = None,
    lam: Any,
    per_class: int,
    corr: Any = None,
    model: str = "closed",
    search_rounds: int = SEARCH_ROUNDS,
    tie_tol: float = TIE_TOL,
    **exact_options: Any,
) -> RoundWindow:
    r"""Exact window ``first <= r <= last`` of all-correct rounds (global term included).

    Every pair ``(k, l)`` must satisfy (divided by ``b^e``, ``rho = a/b``, ``gamma = g/b``)

    .. math:: h(e) = D (1 - \rho^e) + F (\gamma^e - 1) - \nu \rho^e > 0,

    ``D = f_k(k) - f_k(l)``, ``F = f(k) - f(l)``; each holds on an interval of rounds, so the window is one
    (docs/theorems.md section 5). Returns ``RoundWindow(first, last)`` of ints: ``(-1, -1)`` if empty, ``last =
    UNBOUNDED`` if it never closes, ``last = BEYOND_RANGE`` when it closes after :data:`MAX_ROUND`; a window opening
    beyond ``MAX_ROUND`` raises ``ValueError`` naming ``lam``. ``corr``, ``model``, ``search_rounds``, ``tie_tol``,
    ``exact_options``: as in :func:`min_rounds` (there the window is the run of all-correct rounds from the first).
    """
    return _rounds(False, fractions, c, d, lam, per_class, corr, model, search_rounds, tie_tol, exact_options)


@float64
def max_rounds(
    fractions: ArrayLike,
    *,
    c: Any = None,
    d: Any = None,
    lam: Any,
    per_class: int,
    corr: Any = None,
    model: str = "closed",
    search_rounds: int = SEARCH_ROUNDS,
    tie_tol: float = TIE_TOL,
    **exact_options: Any,
):
    """Upper end ``r_max`` of the all-correct window: ``all_correct_rounds(...).last`` (same arguments)."""
    return _rounds(False, fractions, c, d, lam, per_class, corr, model, search_rounds, tie_tol, exact_options).last


@float64
def all_correct_at(fractions: ArrayLike, rounds: Any, *, c: float, d: float, lam: Any, per_class: int) -> np.ndarray:
    """Bool per round: is every training instance correct there (score formula, global term included)? ``rounds``:
    indices in ``[0, 2**63 - 1]``, evaluated in float64 at ``e = r + 1`` (above ``2**53`` rounded)."""
    f = _check_fractions(fractions)
    r = V.check_rounds(rounds, maximum=UNBOUNDED, why="round indices are int64")
    return all_correct_at_core(f, _log_factors(f, c, d, lam, per_class), jnp.asarray(r, dtype=jnp.int64))


@float64
def pll_condition(fractions: ArrayLike, *, c: float, d: float, lam: Any, per_class: int) -> bool:
    r"""PLL one-round condition: the corruption condition and ``h_k(l) < 1`` for all ``l != k``.

    ``h_k(l)``: the fraction of class ``k`` whose linearised teacher top-2 contains ``l``. Exact when the global term
    vanishes (``d = 0``); otherwise :func:`pll_accuracy_prediction` is (docs/theorems.md section 6).
    ``K <= PLL_MAX_CLASSES`` (447).
    """
    f = _check_pll_fractions(fractions)
    return _scalar(pll_condition_core(f, _log_factors(f, c, d, lam, per_class)), bool)


@float64
def pll_accuracy_prediction(
    fractions: ArrayLike,
    *,
    c: Any = None,
    d: Any = None,
    lam: Any,
    per_class: int,
    num_rounds: int = 2,
    tie_tol: float = TIE_TOL,
    corr: Any = None,
    model: str = "closed",
    loss: str = "ce",
    q: float = 0.7,
    **exact_options: Any,
) -> PLLPrediction:
    """Training accuracy of the (multi-round) PLL student in the balanced block model (:class:`PLLPrediction`).

    Exact for the model at the level of instance types (true ``k``, given ``y``), with the package's one top-2 and tie
    rules. ``num_rounds = R``: the teacher and ``R - 1 <= PLL_MAX_ROUNDS`` students (unrolled when compiled).
    ``K <= PLL_MAX_CLASSES`` (447; ``(K, K, K)`` arrays), else a ``ValueError`` naming ``fractions``. ``model="exact"``
    (student ``loss`` ``"ce"`` or ``"gce"`` with ``q``) or a general ``corr``: the population types of
    :mod:`sdtheory.reduced` through the one PLL pipeline; ``exact_options`` as in :func:`min_rounds`.
    """
    f = _check_pll_fractions(fractions)
    num_students = V.check_pll_rounds(
        num_rounds, maximum=PLL_MAX_ROUNDS + 1, why="the student rounds are unrolled in the compiled program"
    )
    if not _uses_reduced(model, corr, c, d, exact_options):
        return pll_prediction_core(f, _log_factors(f, c, d, lam, per_class), num_students, V.check_tie_tol(tie_tol))
    if model == "closed" and loss != "ce":
        raise ValueError("the linearised PLL student is the cross-entropy one; use model='exact' for loss='gce'")
    opts = _exact_options(loss, q, exact_options) if model == "exact" else {}
    static = dict(model=model, num_rounds=num_students, loss=loss, q=float(q))
    f, ts, tie_tol, res = _on_types(
        type_pll_core, opts, fractions, c, d, corr, lam, per_class, tie_tol, num_students + 1, **static
    )
    if model == "exact" and opts["on_failure"] == "raise":
        raise_unconverged(res, opts["tol"], opts["max_iter"])
    return _pll_from_types(f, ts, res, tie_tol)


class FiniteSamplePrediction(NamedTuple):
    """Finite-sample theory of the block model under i.i.d. labels (:func:`finite_sample_prediction`).

    Attributes:
      all_correct: ``(D, R)`` bools, per draw of the label counts and round.
      first: ``(D,)`` first all-correct round per draw, ``-1`` if none of ``0..R-1`` is.
      pll_accuracy: ``(D,)`` one-round PLL student training accuracy per draw.
      p_all_correct: ``(R,)`` probability that every instance is correct at round ``r``.
      median_first: median of ``first``, ``-1`` counted as "after the last round" (``inf``).
      quantiles_first: ``(5,)`` the 10, 25, 50, 75 and 90% lower empirical quantiles of ``first``, same convention.
      converged: every exact solve of every draw reached ``tol``.
    """

    all_correct: np.ndarray
    first: np.ndarray
    pll_accuracy: np.ndarray
    p_all_correct: np.ndarray
    median_first: float
    quantiles_first: np.ndarray
    converged: bool


#: The quantile levels of :attr:`FiniteSamplePrediction.quantiles_first`.
FIRST_QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)


def first_round_quantiles(first: Any, levels: Any = FIRST_QUANTILES) -> np.ndarray:
    """Lower empirical quantiles of first all-correct rounds, ``-1`` (never) counted as ``+inf``."""
    f = np.asarray(first, dtype=float)
    f = np.where(f < 0, np.inf, f)
    return np.quantile(f, np.asarray(levels, dtype=float), axis=-1, method="inverted_cdf")


@float64(traceable=False, kernel="sdtheory.reduced.finite_sample_core")
def finite_sample_prediction(
    C: Any,
    *,
    per_class: int,
    lam: Any,
    num_rounds: int,
    c: Any = None,
    d: Any = None,
    corr: Any = None,
    model: str = "closed",
    num_draws: int = 1000,
    seed: int = 0,
    pll_loss: str = "ce",
    q: float = 0.7,
    tie_tol: float = TIE_TOL,
    **exact_options: Any,
) -> FiniteSamplePrediction:
    """Distribution of the first all-correct round and of the PLL accuracy at finite ``n``, without instances.

    Under i.i.d. labels ``y_i ~ C[k_i]`` the block model's outputs depend on the labels only through the per-class label
    counts (independent multinomials). Each of ``num_draws`` draws (``seed``) samples them and evaluates SD rounds
    ``0..num_rounds-1`` and the one-round PLL student (loss ``pll_loss``) on the types, ``model="closed"`` or
    ``"exact"`` (docs/theorems.md section 10). ``C``: ``(K, K)`` corruption matrix; ``(c, d)``, ``corr`` and
    ``exact_options`` as in :func:`min_rounds`.
    """
    Cv = validate_corruption_matrix(C, name="C")
    k = Cv.shape[0]
    n = _check_per_class(per_class, k)
    model = V.check_model(model)
    get_loss(pll_loss, "pll_loss")
    if model == "closed" and (exact_options or pll_loss != "ce"):
        raise TypeError("the linearised model takes no exact-solver options and only pll_loss='ce'")
    V.check_lam(lam)
    num_rounds = V.check_int(num_rounds, "num_rounds", minimum=1, maximum=V.MAX_NUM_ROUNDS, why="rounds are a chain")
    check_type_problem(k * k, k, "C", num_rounds=num_rounds + 2)  # one draw: the SD rounds, teacher and student
    num_draws = V.check_int(num_draws, "num_draws", minimum=1, maximum=10**7, why="the draws are held in memory")
    seed = V.check_int(seed, "seed", minimum=0, maximum=V.MAX_SEED)
    R = resolve_corr(c, d, corr, [n] * k)
    opts = _exact_options(pll_loss, q, exact_options) if model == "exact" else {}
    # draws padded to a power of two (at least 8): a few compiled shapes serve every num_draws
    keys = jax.random.split(jax.random.key(seed), max(8, 1 << (num_draws - 1).bit_length()))
    # the draws are vmapped, each holding its own type problem (and its rounds' outputs): evaluate them in
    # chunks of a power of two that keep one call within TYPE_MEMORY_LIMIT (each draw depends on its key only)
    per_draw = type_problem_bytes(k * k, k, num_rounds + 2)
    chunk = min(keys.shape[0], 1 << max(0, (TYPE_MEMORY_LIMIT // per_draw).bit_length() - 1))
    tie_tol = V.check_tie_tol(tie_tol)
    args = (jnp.asarray(Cv, dtype=float), jnp.full((k,), n), jnp.asarray(R), jnp.asarray(lam, dtype=float), tie_tol)
    static = dict(model=model, num_rounds=num_rounds, pll_loss=pll_loss, q=float(q), **_solver_kwargs(opts))
    parts = [
        jax.tree_util.tree_map(np.asarray, finite_sample_core(keys[i : i + chunk], *args, **static))
        for i in range(0, keys.shape[0], chunk)
    ]
    out = jax.tree_util.tree_map(lambda *x: np.concatenate(x)[:num_draws], *parts)
    converged = bool(np.all(out.converged))
    if model == "exact" and opts["on_failure"] == "raise" and not converged:
        raise RuntimeError(
            f"exact solver did not reach tol={opts['tol']:g} in {int(np.sum(~np.asarray(out.converged)))} of "
            f"{num_draws} draws; raise max_iter or tol, or pass on_failure='flag'"
        )
    qs, ac = first_round_quantiles(out.first), out.all_correct
    return FiniteSamplePrediction(ac, out.first, out.pll_accuracy, ac.mean(axis=0), float(qs[2]), qs, converged)
