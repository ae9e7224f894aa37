r"""Partial-label refinement: the one top-2 rule and the one PLL pipeline.

The PLL student of Jeong & Chung (docs/theory.md section 8): fit the teacher
(round 0) on the given targets; from its training outputs take every
instance's two highest classes and make the target ``1/2`` on each (a partial
label: "one of these two"); fit one student of the same form on these
targets. With ``num_rounds = R > 1`` the refinement is iterated: student
``j`` is fit on the top-2 targets of student ``j - 1``'s outputs.

**The top-2 rule** (:func:`top2_mask_core`, used by the public
:func:`top2_targets`, every PLL pipeline, the Monte Carlo engine and the
theorems' type-level prediction): scores are rounded to multiples of
``tie_tol`` (default :data:`sdtheory.TIE_TOL`), so values that differ only by
roundoff are tied; the first class is the highest, the second the highest of
the rest, ties going to the **lower class index**.

**The pipeline** (:func:`pll_rounds_core`) takes the one-round fit as a
parameter: any function ``fit(targets) -> Fit`` (outputs, converged,
residual). :func:`closed_fit`, :func:`block_fit` and :func:`exact_fit` build
the fits of the linearised closed form, the block model and the exact solver
(CE or GCE); the public :func:`pll_student` and :func:`pll_student_block_model`
and the Monte Carlo engine all run the same pipeline.

**The student's starting point** (``init``, :data:`PLL_INITS`): an exact
student is an iterative fit, so it needs a start. ``"teacher"`` (the default
of every public entry point, one rule for CE and GCE) starts student ``j``
from the weights of the model whose top-2 classes it fits (the teacher for
``j = 1``), as the SelfPLL reference code does; ``"zero"`` starts from zero
weights. For CE the objective is strictly convex and both starts reach the
same optimum (to the solver tolerance); GCE is not convex and the two starts
may end at different stationary points. The closed form has no iterations
and ignores ``init``.
"""

from __future__ import annotations

from typing import Any, NamedTuple
from collections.abc import Callable

import jax
from jax.typing import ArrayLike
import jax.numpy as jnp

from . import _validation as V
from ._x64 import float64
from .block import BlockSpectrum, _block_spectrum_checked, _sizes_from_classes, block_outputs_core
from .closed_form import sd_outputs_core
from .metrics import TIE_TOL, _check_tie_tol
from .spectral import Spectrum

__all__ = [
    "PLL_INITS",
    "Fit",
    "PLLResult",
    "block_fit",
    "check_init",
    "closed_fit",
    "exact_fit",
    "pll_rounds_core",
    "pll_student",
    "pll_student_block_model",
    "round_fit",
    "top1_mask_core",
    "top2_mask_core",
    "top2_targets",
    "top2_targets_core",
]


#: The PLL student's starting points (module docstring); the first is the default.
PLL_INITS = ("teacher", "zero")


def check_init(init: Any) -> str:
    """``init`` validated: one of :data:`PLL_INITS` (``TypeError`` / ``ValueError`` naming ``init``)."""
    if not isinstance(init, str):
        raise TypeError(f"init must be a string, one of {PLL_INITS}, got {type(init).__name__} {init!r}")
    if init not in PLL_INITS:
        raise ValueError(f"init must be one of {PLL_INITS} (the PLL student's starting weights), got {init!r}")
    return init


class Fit(NamedTuple):
    """One fitted round: ``outputs`` ``(N, K)``, ``converged`` and ``residual`` scalars.

    ``details``: the solver's own record of the round (for :func:`exact_fit`
    the one-round :class:`sdtheory.ExactResult`: dual coefficients,
    intercepts, iterations, ``kkt``), or ``None``.
    """

    outputs: jax.Array
    converged: jax.Array
    residual: jax.Array
    details: Any = None


class PLLResult(NamedTuple):
    """Outputs of the PLL pipeline.

    Attributes:
      teacher: ``(N, K)`` teacher outputs (round 0 on the given targets).
      targets: ``(R, N, K)`` refined top-2 targets of each student round.
      outputs: ``(R, N, K)`` outputs of student rounds ``1..R``.
      converged: ``(R + 1,)`` solver convergence flags, teacher first
        (always True for the closed form).
      residuals: ``(R + 1,)`` exact solver fixed-point residuals, teacher
        first (0 for the closed form).
      fits: the fits' ``details`` stacked over the ``R + 1`` rounds, teacher
        first (exact fits: an :class:`sdtheory.ExactResult` with leading axis
        ``R + 1``, from which the weights of every round follow), or ``None``.
    """

    teacher: jax.Array
    targets: jax.Array
    outputs: jax.Array
    converged: jax.Array
    residuals: jax.Array
    fits: Any = None


# --------------------------------------------------------------------------
# The top-2 rule
# --------------------------------------------------------------------------


def _tie_rounded(scores: jax.Array, tie_tol: Any) -> jax.Array:
    """Scores rounded to multiples of ``tie_tol`` (values within it compare equal; ``tie_tol = 0``: unchanged)."""
    tol = jnp.asarray(tie_tol, scores.dtype)
    return jnp.where(tol > 0, jnp.round(scores / jnp.where(tol > 0, tol, 1.0)), scores)


def top1_mask_core(scores: jax.Array, tie_tol: Any = TIE_TOL) -> jax.Array:
    """``(..., K)`` bool mask of the highest score by the same rule (ties to the lower index; no validation)."""
    return jax.nn.one_hot(jnp.argmax(_tie_rounded(scores, tie_tol), axis=-1), scores.shape[-1], dtype=bool)


def top2_mask_core(scores: jax.Array, tie_tol: Any = TIE_TOL) -> jax.Array:
    """``(..., K)`` bool mask of the two highest scores (the rule in the module docstring; no validation)."""
    k = scores.shape[-1]
    scores = _tie_rounded(scores, tie_tol)
    first = jnp.argmax(scores, axis=-1)
    m1 = jax.nn.one_hot(first, k, dtype=bool)
    second = jnp.argmax(jnp.where(m1, -jnp.inf, scores), axis=-1)
    return m1 | jax.nn.one_hot(second, k, dtype=bool)


def top2_targets_core(scores: jax.Array, tie_tol: Any = TIE_TOL) -> jax.Array:
    """Top-2 targets: ``1/2`` on each of the two highest classes (no validation)."""
    return top2_mask_core(scores, tie_tol).astype(scores.dtype) / 2.0


@float64
def top2_targets(outputs: ArrayLike, *, tie_tol: float = TIE_TOL) -> jax.Array:
    """``(N, K)`` partial-label targets with ``1/2`` on each of the two highest classes.

    ``outputs`` is ``(N, K)`` (any real scores: probabilities, linearised
    outputs or logits; only the order matters), ``K >= 2``, finite. Values
    within ``tie_tol`` (rounded to its multiples) are tied; ties go to the
    lower class index.
    """
    arr = V._as_numpy(outputs, "outputs")
    if arr.ndim != 2 or arr.shape[0] < 1:
        raise ValueError(f"outputs must be a non-empty 2-D (N, K) array, got shape {arr.shape}")
    if arr.shape[1] < 2:
        raise ValueError(f"outputs must have K >= 2 classes, got K = {arr.shape[1]}")
    V.check_finite(arr, "outputs")
    return top2_targets_core(jnp.asarray(arr, dtype=float), _check_tie_tol(tie_tol))


# --------------------------------------------------------------------------
# One-round fits and the pipeline
# --------------------------------------------------------------------------


def _closed(outputs):
    """A linearised round as a :class:`Fit` (always converged, residual 0)."""
    return Fit(outputs, jnp.ones((), bool), jnp.zeros((), outputs.dtype))


def closed_fit(spec: Spectrum, lam: Any) -> Callable[..., Fit]:
    """One round of the linearised closed form on a spectrum (pure; use inside jit/vmap).

    The fit ``fit(targets, start=None)`` ignores ``start``: the closed form has no iterations.
    """
    zero = jnp.zeros((1,), jnp.int32)
    return lambda t, start=None: _closed(sd_outputs_core(spec, t, lam, zero)[0])


def block_fit(bspec: BlockSpectrum, classes: jax.Array, lam: Any) -> Callable[..., Fit]:
    """One round of the linearised closed form on the block Gram, ``O(N K)`` (pure; ignores ``start``)."""
    zero = jnp.zeros((1,), jnp.int32)
    return lambda t, start=None: _closed(block_outputs_core(bspec, classes, t, lam, zero)[0])


def round_fit(result: Any, r: int = 0) -> Fit:
    """Round ``r`` of an :class:`sdtheory.ExactResult` as a :class:`Fit` (its record of that round as ``details``)."""
    return Fit(
        result.outputs[r], result.converged[r], result.residuals[r], jax.tree_util.tree_map(lambda a: a[r], result)
    )


def exact_fit(phi: Any, lam: Any, *, loss: str = "ce", q: Any = 0.7, **options: Any) -> Callable[..., Fit]:
    """One exact round (CE or GCE) in the solver coordinates ``phi`` (pure; an array or
    :class:`sdtheory.exact.Coordinates`, from :func:`sdtheory.exact.solver_features`).

    ``options``: the solver options of :func:`sdtheory.exact.exact_phi_core`
    (tol, max_iter, solver, rtol, fit_intercept). The fit's ``details`` is
    the round's :class:`sdtheory.ExactResult`.

    The fit is ``fit(targets, start=None)``: from zero weights, or from the
    weights of ``start``, an exact :class:`Fit` on the same ``phi`` and
    ``fit_intercept`` (its dual coefficients and intercepts; the kernel forms
    the weights in its own coordinates).
    """
    from .exact import exact_phi_core

    def fit(t, start=None):
        warm = {}
        if start is not None:
            warm = dict(init_coef=start.details.coef, init_intercepts=start.details.intercepts)
        return round_fit(exact_phi_core(phi, t, lam, 1, loss=loss, q=q, **options, **warm))

    return fit


def pll_rounds_core(
    fit_student: Callable[..., Fit],
    teacher: Fit,
    num_rounds: int,
    tie_tol: Any = TIE_TOL,
    init: str = "zero",
) -> PLLResult:
    """The PLL pipeline after the teacher: ``num_rounds`` refinements (pure; ``num_rounds`` static).

    Student ``j`` is ``fit_student(top2_targets_core(previous outputs))``,
    the previous outputs being the teacher's for ``j = 1``. With
    ``init="teacher"`` it is ``fit_student(targets, previous fit)``: each
    student starts from the weights of the fit whose top 2 it learns (the
    fits of :func:`exact_fit` take that start; the closed-form fits ignore
    it). The kernel-level default ``"zero"`` keeps one-argument fits working;
    the public entry points default to ``"teacher"`` (module docstring).
    """
    check_init(init)
    prev, prev_fit = teacher.outputs, teacher
    ts, outs, conv, res, details = [], [], [teacher.converged], [teacher.residual], [teacher.details]
    for _ in range(num_rounds):
        t = top2_targets_core(prev, tie_tol)
        f = fit_student(t, prev_fit) if init == "teacher" else fit_student(t)
        prev, prev_fit = f.outputs, f
        ts.append(t)
        outs.append(f.outputs)
        conv.append(f.converged)
        res.append(f.residual)
        details.append(f.details)
    fits = None
    if all(d is not None for d in details):
        fits = jax.tree_util.tree_map(lambda *a: jnp.stack(a), *details)
    return PLLResult(teacher.outputs, jnp.stack(ts), jnp.stack(outs), jnp.stack(conv), jnp.stack(res), fits)


@float64(kernel="sdtheory.refine.pll_rounds_core with sdtheory.refine.closed_fit / exact_fit")
def pll_student(
    targets: ArrayLike,
    *,
    lam: Any,
    gram: ArrayLike | None = None,
    features: ArrayLike | None = None,
    model: str = "closed",
    loss: str = "ce",
    q: float = 0.7,
    num_rounds: int = 1,
    tie_tol: float = TIE_TOL,
    init: str = "teacher",
    **exact_options: Any,
) -> PLLResult:
    """The PLL student: teacher on ``targets``, top-2 refined targets, student round(s).

    Args:
      targets: ``(N, K)`` teacher targets (one-hot given labels).
      lam: L2 weight, one real number ``> 0``.
      gram / features: exactly one of ``(N, N)`` Gram or ``(N, d)`` features.
      model: ``"closed"`` (linearised CE, the theorems' model) or ``"exact"``.
      loss: student loss from :data:`sdtheory.LOSSES` (``"gce"``: exact only);
        the teacher always uses CE.
      q: GCE parameter in ``(0, 1]``.
      num_rounds: number of student rounds ``1 <= R <= 10^5`` (iterated
        refinement, one round after another).
      tie_tol: the top-2 tie tolerance.
      init: the exact student's starting weights, ``"teacher"`` (each
        student starts from the weights of the model whose top 2 it fits, as
        the SelfPLL reference code) or ``"zero"``. CE reaches the same
        optimum from either; GCE (not convex) may not. No effect on the
        closed form.
      exact_options: ``tol``, ``max_iter``, ``on_failure``, ``solver`` of the
        exact solver.

    Returns:
      :class:`PLLResult`.
    """
    from .exact import check_options, raise_unconverged, solver_features
    from .losses import get_loss
    from .predictor import MODELS

    num_rounds = V.check_num_rounds(num_rounds)
    init = check_init(init)
    if model not in MODELS:
        raise ValueError(f"model must be one of {MODELS}, got {model!r}")
    get_loss(loss)
    if model == "closed" and loss != "ce":
        raise ValueError("the closed form is the linearised cross-entropy student; use model='exact' for loss='gce'")
    if exact_options and model != "exact":
        raise TypeError(f"unexpected keyword arguments for the closed form: {sorted(exact_options)}")
    tie_tol = _check_tie_tol(tie_tol)
    V.check_problem(targets, lam, gram, features)
    V.check_pll_classes(V.shape_of(targets, "targets")[1], "the columns of targets")
    t = jnp.asarray(targets, dtype=float)
    # unit scale (G / root^2, lam / root^2): the outputs depend on G / lam only
    from .spectral import _unit_lam, _unit_problem

    unit = _unit_problem(gram=gram, features=features, need_spectrum=model == "closed")
    lam_a = _unit_lam(lam, unit.root, "gram" if gram is not None else "features")
    if model == "closed":
        assert unit.spec is not None  # need_spectrum
        fit = closed_fit(unit.spec, lam_a)
        return pll_rounds_core(fit, fit(t), num_rounds, tie_tol)
    from .exact import DEFAULT_MAX_ITER, DEFAULT_SOLVER, DEFAULT_TOL

    opts: dict[str, Any] = dict(tol=DEFAULT_TOL, max_iter=DEFAULT_MAX_ITER, on_failure="raise", solver=DEFAULT_SOLVER)
    unknown = sorted(set(exact_options) - set(opts))
    if unknown:
        raise TypeError(f"unexpected keyword arguments for the exact solver: {unknown}")
    opts.update(exact_options)
    check_options(loss, q, opts["tol"], opts["max_iter"], opts["on_failure"], opts["solver"])
    phi = solver_features(gram=unit.gram, features=unit.features)
    solve = dict(tol=float(opts["tol"]), max_iter=int(opts["max_iter"]), solver=opts["solver"])
    result = pll_rounds_core(
        exact_fit(phi, lam_a, loss=loss, q=float(q), **solve),
        exact_fit(phi, lam_a, loss="ce", q=float(q), **solve)(t),
        num_rounds,
        tie_tol,
        init,
    )
    if opts["on_failure"] == "raise":
        raise_unconverged(result, opts["tol"], opts["max_iter"])
    return result


@float64(kernel="sdtheory.refine.pll_rounds_core with sdtheory.refine.block_fit")
def pll_student_block_model(
    targets: ArrayLike,
    classes: ArrayLike,
    *,
    c: float,
    d: float,
    lam: Any,
    num_rounds: int = 1,
    tie_tol: float = TIE_TOL,
) -> PLLResult:
    """Closed-form PLL pipeline on the block Gram of ``classes`` without forming it (``O(N K)`` per fit)."""
    num_rounds = V.check_num_rounds(num_rounds)
    n, k = V.check_targets(targets)
    V.check_pll_classes(k, "the columns of targets")
    classes = V.as_array(classes, "classes")
    sizes = _sizes_from_classes(classes, k, n=n)
    lam = V.check_lam(lam)
    bspec = _block_spectrum_checked(sizes, c, d)
    fit = block_fit(bspec, jnp.asarray(classes), jnp.asarray(lam, dtype=float))
    return pll_rounds_core(fit, fit(jnp.asarray(targets, dtype=float)), num_rounds, _check_tie_tol(tie_tol))
