r"""The corruption condition, the margin, the minimum round and the PLL condition.

Everything here is a statement about the **linearised, balanced block model**
(docs/theory.md sections 3-5, docs/theorems.md): ``K`` classes of ``n`` instances
(``per_class``), block Gram with within-class correlation ``c`` and
between-class correlation ``d`` (``0 <= d < c < 1``), L2 weight ``lam``, and
per-round shrink factors ``a < b <= g`` of the three eigenspaces
(:func:`sdtheory.block.block_factors`). For an instance of true class ``k``
with given label ``y`` the round-``r`` linearised output has, with
``e = r + 1``,

.. math:: \mathrm{score}_r(l) = a^e [y = l] + (b^e - a^e) f_k(l) + (g^e - b^e) f(l)

(own label, class average, global average), and the prediction is the
argmax. **Ties count as failures**: an instance is "correct" only when its
true class beats every other class strictly.

``fractions`` is any ``(K, K)`` row-stochastic matrix ``f``:

* **population version**: pass the corruption matrix ``C`` (the limit
  ``n -> infinity`` of the fractions);
* **empirical version**: pass ``empirical_fractions(true, given, K)`` of the
  sampled labels; then the statements are exact for ``sd_outputs`` on
  ``block_gram`` with those labels (balanced classes).

The global frequencies are ``f(l) = mean_k f_k(l)`` (balanced classes).
:func:`min_rounds` assumes they are all equal (``C`` doubly stochastic, e.g.
symmetric / asymmetric / pair / cc noise with exact counts), as the papers do;
:func:`all_correct_rounds` is exact without that assumption.

Each public function validates and calls a pure ``jnp`` core (``*_core``)
that takes ``(fractions, a, b[, g])`` and vmaps over fractions and factors
(i.e. over ``eta``, seeds and ``lam``).
"""

from __future__ import annotations

from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import _validation as V
from ._x64 import float64
from .block import block_factors
from .metrics import TIE_TOL, correct_core
from .noise import validate_corruption_matrix
from .refine import top2_mask_core

__all__ = ["UNBOUNDED", "GLOBAL_TOL", "PLLPrediction", "RoundWindow", "all_correct_at", "all_correct_at_core", "all_correct_rounds", "all_correct_rounds_core", "corruption_condition", "corruption_condition_core", "margin", "margin_core", "max_rounds", "min_rounds", "min_rounds_core", "pll_accuracy_prediction", "pll_condition", "pll_condition_core", "pll_prediction_core"]

#: Sentinel for "no upper end": the window of all-correct rounds never closes.
UNBOUNDED = int(np.iinfo(np.int64).max)
#: Largest exponent ``e = r + 1`` searched; windows reaching it count as unbounded.
_EMAX = 2**40
_SEARCH_STEPS = 44
#: Global-frequency differences below this are treated as 0 (float roundoff of
#: the column means of a doubly stochastic matrix).
GLOBAL_TOL = 1e-12


class RoundWindow(NamedTuple):
    """The rounds ``first <= r <= last`` at which every training instance is correct.

    ``first = last = -1`` when there is no such round; ``last = UNBOUNDED``
    when the window never closes.
    """

    first: Any
    last: Any


# --------------------------------------------------------------------------
# Pure cores
# --------------------------------------------------------------------------


def _offdiag(k):
    return ~jnp.eye(k, dtype=bool)


@jax.jit
def corruption_condition_core(fractions: jax.Array) -> jax.Array:
    """``f_k(k) > f_k(l)`` for every ``k`` and ``l != k`` (jnp bool)."""
    f = jnp.asarray(fractions)
    diag = jnp.diagonal(f)[:, None]
    return jnp.all(jnp.where(_offdiag(f.shape[0]), diag > f, True))


@jax.jit
def margin_core(fractions: jax.Array) -> jax.Array:
    """``Delta = min_{k, l != k, f_k(l) > 0} (f_k(k) - f_k(l))``; ``+inf`` when no label is corrupted."""
    f = jnp.asarray(fractions)
    diff = jnp.diagonal(f)[:, None] - f
    occurs = _offdiag(f.shape[0]) & (f > 0)
    return jnp.min(jnp.where(occurs, diff, jnp.inf))


def _pow(log_base, e):
    return jnp.exp(e * log_base)


@jax.jit
def min_rounds_core(fractions: jax.Array, a: jax.Array, b: jax.Array) -> jax.Array:
    r"""First all-correct round ``r*`` with equal global frequencies (no validation).

    ``r* = floor(log((1 + Delta)/Delta) / log(b/a))`` computed, then corrected
    by evaluating the defining inequality ``Delta - (1 + Delta) (a/b)^e > 0``
    at the neighbouring exponents so that floating-point error in the floor
    cannot move it off the first round where the inequality holds. ``-1`` if
    the corruption condition fails, ``0`` if no label is corrupted.
    """
    f = jnp.asarray(fractions)
    delta = margin_core(f)
    cond = corruption_condition_core(f)
    noisy = jnp.isfinite(delta)
    dsafe = jnp.where(noisy & cond, delta, 1.0)
    lr = jnp.log(a) - jnp.log(b)  # log(a/b) < 0

    def ok(r):  # all noisy instances correct at round r (e = r + 1)
        return dsafe - (1.0 + dsafe) * _pow(lr, r + 1.0) > 0

    est = jnp.floor(jnp.log1p(1.0 / dsafe) / (-lr))
    r = jnp.clip(est, 0.0, float(_EMAX))
    for _ in range(2):
        r = jnp.where(ok(r), r, r + 1.0)
    for _ in range(2):
        r = jnp.where((r >= 1) & ok(r - 1.0), r - 1.0, r)
    r = r.astype(jnp.int64)
    return jnp.where(~cond, -1, jnp.where(noisy, r, 0))


def _constraint_terms(fractions):
    """Per pair ``(k, l)``, ``l != k``: coefficients ``(D, F, nu)`` of the binding constraint.

    The true class ``k`` must beat ``l`` for every instance of class ``k``.
    Dividing ``score(k) - score(l)`` by ``b^e`` gives
    ``h(e) = D (1 - rho^e) + F (gamma^e - 1) - nu rho^e`` with
    ``rho = a/b``, ``gamma = g/b``, ``D = f_k(k) - f_k(l)``,
    ``F = f(k) - f(l)`` and ``nu`` the own-label term of the hardest instance:
    ``+1`` if some instance of class ``k`` carries label ``l``; else ``0`` if
    class ``k`` has some other corrupted instance; else ``-1`` (class ``k``
    is clean and its own label helps).
    """
    f = jnp.asarray(fractions)
    k = f.shape[0]
    fg = jnp.mean(f, axis=0)
    D = jnp.diagonal(f)[:, None] - f
    F = fg[:, None] - fg[None, :]
    F = jnp.where(jnp.abs(F) <= GLOBAL_TOL, 0.0, F)
    clean_class = (jnp.diagonal(f) >= 1.0)[:, None]
    nu = jnp.where(f > 0, 1.0, jnp.where(clean_class, -1.0, 0.0))
    mask = _offdiag(k)
    return D, F, nu, mask


@jax.jit
def all_correct_rounds_core(fractions: jax.Array, a: jax.Array, b: jax.Array, g: jax.Array) -> RoundWindow:
    """Exact window of all-correct rounds from the score formula (no validation).

    Each constraint ``h(e) > 0`` (see :func:`_constraint_terms`) is
    increasing-then-decreasing in ``e`` (unimodal), so its set of integer
    ``e`` is an interval; it is found by locating the peak (analytically) and
    two integer bisections. The window is the intersection over constraints.
    Returns int64 ``RoundWindow(first, last)`` (``-1, -1`` if empty;
    ``last = UNBOUNDED`` if it never closes).
    """
    D, F, nu, mask = _constraint_terms(fractions)
    lr = jnp.log(a) - jnp.log(b)  # log rho < 0
    lg = jnp.log(g) - jnp.log(b)  # log gamma >= 0
    F = jnp.where(lg > 0, F, 0.0)

    def h(e):
        e = e.astype(D.dtype)
        glob = jnp.where(F == 0, 0.0, F * jnp.expm1(e * lg))
        return -D * jnp.expm1(e * lr) + glob - nu * jnp.exp(e * lr)

    emax = jnp.int64(_EMAX)
    up = D + nu  # coefficient of -rho^e
    safe_num = jnp.where((F < 0) & (up > 0), up * (-lr) / jnp.where(F < 0, -F * lg, 1.0), 1.0)
    e_peak = jnp.where(F < 0, jnp.where(up > 0, jnp.log(safe_num) / (lg - lr), 1.0), float(_EMAX))
    e_peak = jnp.clip(jnp.nan_to_num(e_peak, nan=1.0, posinf=float(_EMAX), neginf=1.0), 1.0, float(_EMAX))
    p_lo = jnp.floor(e_peak).astype(jnp.int64)
    p_hi = jnp.minimum(p_lo + 1, emax)
    p = jnp.where(h(p_hi) > h(p_lo), p_hi, p_lo)

    def lo_step(_, s):  # smallest e in [lo, hi] with h(e) > 0, h increasing there
        lo, hi = s
        mid = (lo + hi) // 2
        good = h(mid) > 0
        return jnp.where(lo < hi, jnp.where(good, lo, mid + 1), lo), jnp.where(lo < hi, jnp.where(good, mid, hi), hi)

    def hi_step(_, s):  # largest e in [lo, hi] with h(e) > 0, h decreasing there
        lo, hi = s
        mid = (lo + hi + 1) // 2
        good = h(mid) > 0
        return jnp.where(lo < hi, jnp.where(good, mid, lo), lo), jnp.where(lo < hi, jnp.where(good, hi, mid - 1), hi)

    ones = jnp.ones_like(p)
    e_lo, _ = jax.lax.fori_loop(0, _SEARCH_STEPS, lo_step, (ones, p))
    _, e_hi = jax.lax.fori_loop(0, _SEARCH_STEPS, hi_step, (p, jnp.full_like(p, emax)))
    feasible = h(p) > 0
    e_lo = jnp.where(mask, e_lo, 1)
    e_hi = jnp.where(mask, e_hi, emax)
    all_feasible = jnp.all(jnp.where(mask, feasible, True))
    first_e = jnp.max(e_lo)
    last_e = jnp.min(e_hi)
    nonempty = all_feasible & (first_e <= last_e)
    first = jnp.where(nonempty, first_e - 1, -1)
    last = jnp.where(nonempty, jnp.where(last_e >= emax, UNBOUNDED, last_e - 1), -1)
    return RoundWindow(first.astype(jnp.int64), last.astype(jnp.int64))


@jax.jit
def all_correct_at_core(fractions: jax.Array, a: jax.Array, b: jax.Array, g: jax.Array, rounds: jax.Array) -> jax.Array:
    """Whether every training instance is correct at each of ``rounds`` (direct score evaluation).

    Evaluates the binding constraints at each round; no unimodality is used.
    Shape ``rounds.shape``.
    """
    D, F, nu, mask = _constraint_terms(fractions)
    lr = jnp.log(a) - jnp.log(b)
    lg = jnp.log(g) - jnp.log(b)
    F = jnp.where(lg > 0, F, 0.0)
    e = (jnp.asarray(rounds) + 1.0)[..., None, None]
    glob = jnp.where(F == 0, 0.0, F * jnp.expm1(e * lg))
    hv = -D * jnp.expm1(e * lr) + glob - nu * jnp.exp(e * lr)
    return jnp.all(jnp.where(mask, hv > 0, True), axis=(-2, -1))


class PLLPrediction(NamedTuple):
    """Type-level prediction of the PLL student in the linearised balanced block model.

    Attributes:
      accuracy: ``(R,)`` training accuracy of student rounds ``1..R``.
      correct: ``(R, K, K)`` whether instances of type (true ``k``, given
        ``y``) are strictly correct after each student round.
      top2: ``(K, K, K)`` bool, the teacher's top-2 set for type ``(k, y)``.
      h: ``(K, K)`` ``h_k(l)``: fraction of class ``k`` whose teacher top-2
        contains ``l``.
    """

    accuracy: jax.Array
    correct: jax.Array
    top2: jax.Array
    h: jax.Array


def _type_scores(targets_kyl, f_types, a, b, g, e):
    """Linearised scores ``(K, K, K)`` of every type ``(k, y)`` for type-level targets.

    ``targets_kyl[k, y]`` is the target row of the instances of type
    ``(k, y)``; ``f_types[k, y]`` their fraction in class ``k``.
    """
    tbar_k = jnp.einsum("ky,kyl->kl", f_types, targets_kyl)
    tbar = jnp.mean(tbar_k, axis=0)
    ae, be, ge = a**e, b**e, g**e
    return ae * targets_kyl + (be - ae) * tbar_k[:, None, :] + (ge - be) * tbar[None, None, :]


@partial(jax.jit, static_argnames=("num_rounds",))
def pll_prediction_core(fractions: jax.Array, a, b, g, num_rounds: int = 1, tie_tol=TIE_TOL) -> PLLPrediction:
    """PLL student prediction from the fractions (no validation; ``num_rounds`` static).

    Teacher: round 0 on the one-hot given labels. Each student round ``j``
    takes the top-2 classes of the previous round's outputs (the package's
    one top-2 rule, :func:`sdtheory.refine.top2_mask_core`), puts ``1/2`` on
    each and fits one round (``e = 1``); a type is correct by the package's
    one rule (:func:`sdtheory.metrics.correct_core`, ties are failures).
    """
    f = jnp.asarray(fractions)
    k = f.shape[0]
    eye = jnp.eye(k, dtype=f.dtype)
    t = jnp.broadcast_to(eye[None, :, :], (k, k, k))  # type (k, y) has one-hot target e_y
    scores = _type_scores(t, f, a, b, g, 1.0)
    teacher_top2 = top2_mask_core(scores, tie_tol)
    true_class = jnp.arange(k)[:, None]  # type (k, y) has true class k
    h = jnp.einsum("ky,kyl->kl", f, teacher_top2.astype(f.dtype))
    accs, corrects = [], []
    mask = teacher_top2
    for _ in range(num_rounds):
        t = mask.astype(f.dtype) / 2.0
        scores = _type_scores(t, f, a, b, g, 1.0)
        correct = correct_core(scores, true_class, tie_tol)
        corrects.append(correct)
        accs.append(jnp.sum(jnp.where(correct, f, 0.0)) / k)
        mask = top2_mask_core(scores, tie_tol)
    return PLLPrediction(jnp.stack(accs), jnp.stack(corrects), teacher_top2, h)


@jax.jit
def pll_condition_core(fractions: jax.Array, a, b, g) -> jax.Array:
    """Corruption condition and ``h_k(l) < 1`` for all ``l != k`` (no validation)."""
    f = jnp.asarray(fractions)
    pred = pll_prediction_core(f, a, b, g, 1)
    hk = jnp.where(_offdiag(f.shape[0]), pred.h, 0.0)
    return corruption_condition_core(f) & jnp.all(hk < 1.0)


# --------------------------------------------------------------------------
# Validating public API
# --------------------------------------------------------------------------


def _check_fractions(fractions):
    f = validate_corruption_matrix(fractions)
    return jnp.asarray(f, dtype=float)


def _factors(fractions, c, d, lam, per_class):
    """``(a, b, g)`` from :func:`sdtheory.block.block_factors` (``lam`` may be traced; ``c``, ``d`` concrete)."""
    for name, v in (("c", c), ("d", d)):
        if V.is_tracer(v):
            raise TypeError(f"{name} must be a concrete float (vmap over lam and fractions, not {name})")
    k = int(np.shape(fractions)[0])
    a, b, g = block_factors(per_class=per_class, num_classes=k, c=c, d=d, lam=lam)
    return tuple(jnp.asarray(x, dtype=float) for x in (a, b, g))


@float64
def corruption_condition(fractions: Any) -> bool:
    """The label-corruption condition ``f_k(k) > f_k(l)`` for all ``k``, ``l != k``.

    Population version: pass ``C``; empirical: pass the sampled fractions.
    In the linearised balanced block model with equal global label
    frequencies (or ``d = 0``) it is necessary and sufficient for some round
    to classify every training instance correctly. Ties fail.
    """
    return bool(corruption_condition_core(_check_fractions(fractions)))


@float64
def margin(fractions: Any) -> float:
    """``Delta = min over k and labels l != k occurring in class k of f_k(k) - f_k(l)``.

    "Occurring" means ``f_k(l) > 0``. ``inf`` when no label is corrupted.
    Negative or zero exactly when some occurring wrong label is at least as
    frequent as the true one.
    """
    return float(margin_core(_check_fractions(fractions)))


@float64
def min_rounds(fractions: Any, *, c: float, d: float, lam: Any, per_class: int):
    r"""First round ``r*`` (0 = teacher) at which every training instance is correct.

    Model: linearised SD on the balanced block Gram (``per_class`` instances
    per class, correlations ``c``/``d``, ``0 <= d < c < 1``), **assuming equal
    global label frequencies** (``f`` doubly stochastic; or ``d = 0``): then
    a corrupted instance (true ``k``, label ``l``) is correct at round ``r``
    iff ``(a/b)^{r+1} < Delta_{kl}/(1 + Delta_{kl})`` and clean ones always
    are, so ``r* = floor(log((1 + Delta)/Delta) / log(b/a))``.

    Returns an ``int``: ``-1`` if the corruption condition fails (never all
    correct), ``0`` if no label is corrupted. Under ``jax.vmap`` over ``lam``
    or ``fractions`` it returns a traced int array. Use
    :func:`all_correct_rounds` when the global frequencies differ.
    """
    f = _check_fractions(fractions)
    a, b, _ = _factors(f, c, d, lam, per_class)
    out = min_rounds_core(f, a, b)
    return out if V.is_tracer(out) else int(out)


@float64
def all_correct_rounds(fractions: Any, *, c: float, d: float, lam: Any, per_class: int) -> RoundWindow:
    r"""Exact window ``first <= r <= last`` of all-correct rounds (global term included).

    Model: linearised SD on the balanced block Gram; no assumption on the
    global frequencies ``f(l) = mean_k f_k(l)``. For each pair ``(k, l)``
    the hardest instance of class ``k`` must have ``score(k) > score(l)``,
    i.e. (divided by ``b^e``, ``rho = a/b``, ``gamma = g/b``)

    .. math:: h(e) = D (1 - \rho^e) + F (\gamma^e - 1) - \nu \rho^e > 0,

    ``D = f_k(k) - f_k(l)``, ``F = f(k) - f(l)``, ``nu = 1`` if label ``l``
    occurs in class ``k`` (else 0, or -1 if class ``k`` is clean). Each
    ``h`` is increasing and then (if ``F < 0``) decreasing in ``e``, so the
    window is an interval. ``F < 0`` for some constraint closes it: that is
    the upper end ``r_max`` of the window (docs/theory.md section 4).

    Returns ``RoundWindow(first, last)`` of ints; ``(-1, -1)`` if empty,
    ``last = UNBOUNDED`` if it never closes.
    """
    f = _check_fractions(fractions)
    a, b, g = _factors(f, c, d, lam, per_class)
    w = all_correct_rounds_core(f, a, b, g)
    if V.is_tracer(w.first):
        return w
    return RoundWindow(int(w.first), int(w.last))


@float64
def max_rounds(fractions: Any, *, c: float, d: float, lam: Any, per_class: int):
    """Upper end ``r_max`` of the all-correct window (``all_correct_rounds(...).last``).

    ``UNBOUNDED`` when every global difference ``f(k) - f(l)`` that matters
    is ``>= 0`` (e.g. equal global frequencies); ``-1`` when no round is all
    correct.
    """
    return all_correct_rounds(fractions, c=c, d=d, lam=lam, per_class=per_class).last


@float64
def all_correct_at(fractions: Any, rounds: Any, *, c: float, d: float, lam: Any, per_class: int) -> np.ndarray:
    """Bool per round: is every training instance correct there (score formula, global term included)?"""
    f = _check_fractions(fractions)
    r = V.check_rounds(rounds)
    a, b, g = _factors(f, c, d, lam, per_class)
    return all_correct_at_core(f, a, b, g, jnp.asarray(r))


@float64
def pll_condition(fractions: Any, *, c: float, d: float, lam: Any, per_class: int) -> bool:
    r"""PLL one-round condition: the corruption condition and ``h_k(l) < 1`` for all ``l != k``.

    ``h_k(l)`` is the fraction of class ``k`` whose linearised teacher top-2
    (ties to the lower index) contains ``l``. Under the corruption condition
    every top-2 contains the true class; the student trained on ``(1/2, 1/2)``
    targets then has equal own-label terms for its two candidates and the
    class term ``(b - a)(1 - h_k(l))/2`` breaks the tie toward ``k`` iff
    ``h_k(l) < 1``. Exact when the global term vanishes (``d = 0``, then
    ``g = b``); otherwise the global term of the refined targets can move
    the answer, and :func:`pll_accuracy_prediction` is exact.
    """
    f = _check_fractions(fractions)
    a, b, g = _factors(f, c, d, lam, per_class)
    return bool(pll_condition_core(f, a, b, g))


@float64
def pll_accuracy_prediction(
    fractions: Any, *, c: float, d: float, lam: Any, per_class: int, num_rounds: int = 1, tie_tol: float = TIE_TOL
) -> PLLPrediction:
    """Training accuracy of the (multi-round) PLL student in the linearised balanced block model.

    Exact for the model (global term included) at the level of instance
    types (true ``k``, given ``y``): all instances of a type have identical
    scores. Teacher top-2 by the package's one rule (:func:`sdtheory.refine.top2_targets`);
    the student counts as correct by the one tie-aware rule (:func:`sdtheory.correct`). See :class:`PLLPrediction`.
    """
    from .metrics import _check_tie_tol

    f = _check_fractions(fractions)
    num_rounds = V.check_int(num_rounds, "num_rounds", minimum=1)
    a, b, g = _factors(f, c, d, lam, per_class)
    return pll_prediction_core(f, a, b, g, num_rounds, _check_tie_tol(tie_tol))
