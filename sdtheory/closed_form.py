r"""Linearised closed form of multi-round self-distillation (derivation: docs/closed_form.md).

Objective ``(1/N) sum_i CE(t_i, softmax(W x_i)) + (lam/2) ||W||_F^2``; round 0 (the teacher) fits the given
targets, round ``r >= 1`` the training outputs of round ``r - 1``. Linearising the softmax at zero logits gives

.. math::  P_r - 1/K = S^{r+1} (T - 1/K),\qquad S = G (G + K N lam I)^{-1}.

The public functions validate their input (concrete values only: for grids use the ``*_core`` kernels) and
compute at unit scale (any representable features or Gram).
"""

from __future__ import annotations

from typing import Any

import jax
from jax.typing import ArrayLike
import jax.numpy as jnp

from . import _validation as V
from ._x64 import float64
from ._src.closed import (
    RoundsLike,
    kernel_ridge_sd_core,
    sd_outputs_core,
    sd_predictions_core,
    sd_test_outputs_core,
)
from ._src.spectral import _unit_lam, _unit_problem
from .predictor import predictor
from .variants import resolve_lam

__all__ = [
    "RoundsLike",
    "kernel_ridge_sd",
    "kernel_ridge_sd_core",
    "predictions",
    "sd_outputs",
    "sd_outputs_core",
    "sd_predictions_core",
    "sd_test_outputs",
    "sd_test_outputs_core",
]


@float64
def sd_outputs(
    targets: ArrayLike,
    *,
    lam: Any = None,
    rounds: RoundsLike | None = None,
    num_rounds: int | None = None,
    gram: ArrayLike | None = None,
    features: ArrayLike | None = None,
    temperature: Any = 1.0,
    xi: Any = 1.0,
    hard: Any = False,
    lam_schedule: Any = None,
) -> jax.Array:
    r"""Linearised softmax outputs ``(R, N, K)`` of self-distillation rounds on the training set.

    Args:
      targets: ``(N, K)`` probability rows (one-hot for hard labels), the teacher's targets.
      lam: L2 weight, one real number ``> 0``.
      rounds: an int or 1-D sequence of round indices in ``0..2^31 - 1`` (0 is the teacher), or
        num_rounds: a count ``R <= 10^5`` (rounds ``0..R-1``). Exactly one.
      gram: ``(N, N)`` symmetric PSD Gram, or features: ``(N, d)``. Exactly one.
      temperature, xi, hard: the variant (docs/variants.md; defaults: plain SD): round ``r`` fits
        ``xi * teacher + (1 - xi) * targets``, the teacher being round ``r - 1``'s outputs at
        ``temperature`` or, with ``hard``, their one-hot argmax.
      lam_schedule: in place of ``lam``, one L2 weight per round ``0..max(rounds)``.

    Returns ``P_r = 1/K + S^{r+1} (T - 1/K)`` for plain SD (rows sum to 1).
    To evaluate many rounds or test sets, build a :func:`sdtheory.predictor` once.
    Raises ``ValueError`` / ``TypeError`` naming the invalid argument.
    """
    options = dict(locals())  # the predictor's arguments, but the rounds
    which = dict(rounds=options.pop("rounds"), num_rounds=options.pop("num_rounds"))
    schedule = resolve_lam(lam, lam_schedule)[1]
    if schedule is not None:
        resolve_lam(None, schedule, int(V.resolve_rounds(**which).max()) + 1)
    return predictor(**options).train_outputs(**which)


@float64
def sd_test_outputs(
    targets: ArrayLike,
    *,
    lam: Any,
    rounds: RoundsLike | None = None,
    num_rounds: int | None = None,
    features: ArrayLike | None = None,
    test_features: ArrayLike | None = None,
    gram: ArrayLike | None = None,
    test_gram: ArrayLike | None = None,
) -> jax.Array:
    """Linearised outputs ``(R, N_test, K)`` of each round on new points: ``features`` ``(N, d)`` with
    ``test_features`` ``(N_test, d)``, or ``gram`` ``(N, N)`` with ``test_gram`` ``(N_test, N)``; the same as
    ``predictor(targets, lam=lam, ...).test_outputs(...)``."""
    if features is not None and test_gram is not None:
        raise ValueError("with features= pass test_features= (and not test_gram=)")
    p = predictor(targets, lam=lam, gram=gram, features=features)
    return p.test_outputs(rounds=rounds, num_rounds=num_rounds, test_features=test_features, test_gram=test_gram)


@float64
def kernel_ridge_sd(
    targets: ArrayLike,
    *,
    lam: Any,
    rounds: RoundsLike | None = None,
    num_rounds: int | None = None,
    gram: ArrayLike | None = None,
    features: ArrayLike | None = None,
) -> jax.Array:
    """Squared-loss (kernel ridge) self-distillation, exact: ``f_r = (G (G + N lam I)^{-1})^{r+1} y``.

    Each round minimises ``(1/N) sum_i ||f(x_i) - t_i||^2 / 2 + (lam/2)||W||^2`` on the previous round's
    fitted values. ``targets``: any real ``(N,)`` or ``(N, K)`` array. Returns ``(R, N[, K])``.
    """
    V.check_problem(targets, lam, gram, features, probability_targets=False)
    r = V.resolve_rounds(rounds, num_rounds)
    unit = _unit_problem(gram=gram, features=features)
    lam_u = _unit_lam(lam, unit.root, "gram" if gram is not None else "features")
    return kernel_ridge_sd_core(unit.spec, jnp.asarray(targets, dtype=float), lam_u, jnp.asarray(r))


@float64(kernel="jax.numpy.argmax(outputs, axis=-1)")
def predictions(outputs: ArrayLike) -> jax.Array:
    """Argmax class of outputs ``(..., K)``, ties to the lowest index: a prediction, not a score
    (:func:`sdtheory.correct` decides correctness, where a tie is a failure)."""
    ok = lambda s: len(s) >= 1 and s[-1] >= 1
    arr = V.check_array(outputs, "outputs", ok, "a (..., K) array with a class axis of size K >= 1")
    return jnp.argmax(jnp.asarray(arr), axis=-1)
