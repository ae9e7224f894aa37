r"""The PLL pipeline: teacher, top-2 refined targets, student rounds (pure; the one-round fit is a parameter).

The PLL student of Jeong & Chung (docs/theory.md section 8): fit the teacher
(round 0) on the given targets; from its training outputs take every
instance's two highest classes (:func:`sdtheory._src.rules.top2_targets_core`)
and make the target ``1/2`` on each; fit one student of the same form on
these targets. With ``R > 1`` student rounds the refinement is iterated.

:func:`pll_rounds_core` takes the one-round fit as a parameter: any function
``fit(targets, start=None) -> Fit``. :func:`closed_fit`, :func:`block_fit`
and :func:`exact_fit` build the fits of the linearised closed form, the block
model and the exact solver (CE or GCE).

**The student's starting point** (``init``, :data:`PLL_INITS`): ``"teacher"``
(the default of every public entry point) starts student ``j`` from the
weights of the model whose top-2 classes it fits, as the SelfPLL reference
code does; ``"zero"`` starts from zero weights. For CE the objective is
strictly convex and both reach the same optimum; GCE is not convex and the
two may end at different stationary points. The closed form ignores ``init``.
"""

from __future__ import annotations

from typing import Any, NamedTuple
from collections.abc import Callable

import jax
import jax.numpy as jnp

from .block import BlockSpectrum, block_outputs_core
from .closed import sd_outputs_core
from .exact import exact_phi_core
from .rules import TIE_TOL, top2_targets_core
from .spectral import Spectrum


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
    """Outputs of the PLL pipeline with ``S`` student rounds (``num_rounds = S + 1`` in the public functions).

    Attributes:
      teacher: ``(N, K)`` teacher outputs (round 0 on the given targets).
      targets: ``(S, N, K)`` refined top-2 targets of each student round.
      outputs: ``(S, N, K)`` outputs of student rounds ``1..S``.
      converged: ``(S + 1,)`` solver convergence flags, teacher first
        (always True for the closed form).
      residuals: ``(S + 1,)`` exact solver fixed-point residuals, teacher
        first (0 for the closed form).
      fits: the fits' ``details`` stacked over the ``S + 1`` rounds, teacher
        first (exact fits: an :class:`sdtheory.ExactResult` with leading axis
        ``S + 1``, from which the weights of every round follow), or ``None``.
    """

    teacher: jax.Array
    targets: jax.Array
    outputs: jax.Array
    converged: jax.Array
    residuals: jax.Array
    fits: Any = None


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
    :class:`sdtheory._src.exact.Coordinates`, from :func:`sdtheory._src.exact.solver_features`).

    ``options``: the solver options of :func:`sdtheory.exact.exact_phi_core`
    (tol, max_iter, solver, rtol, fit_intercept). The fit's ``details`` is
    the round's :class:`sdtheory.ExactResult`.

    The fit is ``fit(targets, start=None)``: from zero weights, or from the
    weights of ``start``, an exact :class:`Fit` on the same ``phi`` and
    ``fit_intercept`` (its dual coefficients and intercepts; the kernel forms
    the weights in its own coordinates).
    """

    def fit(t, start=None):
        warm = {}
        if start is not None:
            warm = dict(init_coef=start.details.coef, init_intercepts=start.details.intercepts)
        return round_fit(exact_phi_core(phi, t, lam, 1, loss=loss, q=q, **options, **warm))

    return fit


def pll_rounds_core(
    fit_student: Callable[..., Fit],
    teacher: Fit,
    num_students: int,
    tie_tol: Any = TIE_TOL,
    init: str = "zero",
) -> PLLResult:
    """The PLL pipeline after the teacher: ``num_students`` refinements (pure; ``num_students`` static).

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
    for _ in range(num_students):
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
