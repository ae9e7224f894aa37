r"""The PLL pipeline: teacher, top-2 refined targets, student rounds (pure; the one-round fit is a parameter).

The PLL student of Jeong & Chung (docs/theory.md section 8): the teacher (round 0) fits the given targets; each student
fits ``1/2`` on each of the two highest classes of the previous round's training outputs. The one-round fit is a
parameter, ``fit(targets, start=None) -> Fit`` (:func:`closed_fit`, :func:`block_fit`, :func:`exact_fit`).

``init`` (:data:`PLL_INITS`): ``"teacher"`` (the public default, as the SelfPLL reference code) starts each student from
the weights of the model whose top 2 it fits, ``"zero"`` from zero weights; the same optimum for the convex CE, possibly
another stationary point for GCE. The closed form ignores it.
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
    """One fitted round: ``outputs`` ``(N, K)``, ``converged``, ``residual``; ``details`` the solver's
    record (the one-round :class:`sdtheory.ExactResult` for exact fits) or ``None``."""

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
      converged, residuals: ``(S + 1,)`` per round, teacher first (True / 0 for the closed form).
      fits: the fits' ``details`` stacked over the ``S + 1`` rounds, or ``None``.
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
    """One round of the linearised closed form on a spectrum (``start`` is ignored)."""
    return lambda t, start=None: _closed(sd_outputs_core(spec, t, lam, jnp.zeros((1,), jnp.int32))[0])


def block_fit(bspec: BlockSpectrum, classes: jax.Array, lam: Any) -> Callable[..., Fit]:
    """One round of the linearised closed form on the block Gram, ``O(N K)`` (``start`` is ignored)."""
    return lambda t, start=None: _closed(block_outputs_core(bspec, classes, t, lam, jnp.zeros((1,), jnp.int32))[0])


def round_fit(result: Any, r: int = 0) -> Fit:
    """Round ``r`` of an :class:`sdtheory.ExactResult` as a :class:`Fit` (its record of that round as ``details``)."""
    return Fit(
        result.outputs[r], result.converged[r], result.residuals[r], jax.tree_util.tree_map(lambda a: a[r], result)
    )


def exact_fit(phi: Any, lam: Any, *, loss: str = "ce", q: Any = 0.7, **options: Any) -> Callable[..., Fit]:
    """One exact round (CE or GCE) in the solver coordinates ``phi`` (:func:`sdtheory._src.exact.solver_features`),
    ``options`` those of :func:`sdtheory.exact.exact_phi_core`; ``fit(targets, start=None)`` starts from zero weights
    or from those of ``start``, an exact :class:`Fit` on the same ``phi``."""

    def fit(t, start=None):
        warm = {} if start is None else dict(init_coef=start.details.coef, init_intercepts=start.details.intercepts)
        return round_fit(exact_phi_core(phi, t, lam, 1, loss=loss, q=q, **options, **warm))

    return fit


def pll_rounds_core(
    fit_student: Callable[..., Fit], teacher: Fit, num_students: int, tie_tol: Any = TIE_TOL, init: str = "zero"
) -> PLLResult:
    """The PLL pipeline after the teacher: ``num_students`` (static) refinements; student ``j`` is
    ``fit_student(top2_targets_core(previous outputs))``, with ``init="teacher"`` ``fit_student(targets, previous)``
    (``previous``: the previous fit). The kernel default ``"zero"`` keeps one-argument fits working."""
    check_init(init)
    fits, targets = [teacher], []
    for _ in range(num_students):
        targets.append(top2_targets_core(fits[-1].outputs, tie_tol))
        fits.append(fit_student(targets[-1], fits[-1]) if init == "teacher" else fit_student(targets[-1]))
    details = [f.details for f in fits]
    record = None if any(d is None for d in details) else jax.tree_util.tree_map(lambda *a: jnp.stack(a), *details)
    conv, res = (jnp.stack([getattr(f, name) for f in fits]) for name in ("converged", "residual"))
    outs = jnp.stack([f.outputs for f in fits[1:]])
    return PLLResult(teacher.outputs, jnp.stack(targets), outs, conv, res, record)
