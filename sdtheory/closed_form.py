r"""Linearised closed form of multi-round self-distillation (label averaging).

Model (docs/theory.md sections 1-2, docs/closed_form.md): ``N`` instances, ``K``
classes, Gram ``G`` (``N x N``), targets ``T`` (``N x K``, probability rows),
objective ``(1/N) sum_i CE(t_i, softmax(W x_i)) + (lam/2) ||W||_F^2``.
Round 0 (the teacher) fits the given targets, round ``r >= 1`` fits the
training outputs of round ``r - 1``. Linearising the softmax at zero logits
gives, with ``S = G (G + K N lam I)^{-1}``,

.. math::  P_r - 1/K = S^{r+1} (T - 1/K).

In the eigenbasis ``G = U diag(s) U^T`` each round multiplies the component of
the centred labels along eigenvector ``u_m`` by ``q_m = s_m / (s_m + K N lam)``.

The public functions validate their input (``lam`` one real number ``> 0``;
round indices ``0..2^31 - 1``, counts up to ``10^5``; concrete values only:
for grids and transformations use the ``*_core`` kernels) and compute at unit
scale (``G / root^2`` and ``lam / root^2`` for a power of two ``root``,
:func:`sdtheory._src.spectral._unit_problem`), so any representable features or
Gram work.
"""

from __future__ import annotations

from typing import Any

import jax
from jax.typing import ArrayLike
import jax.numpy as jnp
import numpy as np

from . import _validation as V
from ._x64 import float64
from ._src.closed import (
    RoundsLike,
    kernel_ridge_sd_core,
    sd_mixed_outputs_core,
    sd_outputs_core,
    sd_predictions_core,
    sd_test_outputs_core,
    shrink_factors,
)
from ._src.spectral import _unit_lam, _unit_problem
from .predictor import predictor
from .variants import check_variant, resolve_lam

__all__ = [
    "RoundsLike",
    "kernel_ridge_sd",
    "kernel_ridge_sd_core",
    "predictions",
    "sd_mixed_outputs",
    "sd_mixed_outputs_core",
    "sd_outputs",
    "sd_outputs_core",
    "sd_predictions_core",
    "sd_test_outputs",
    "sd_test_outputs_core",
    "shrink_factors",
]


# --------------------------------------------------------------------------
# Pure, jit-able kernels on a precomputed spectrum.
# --------------------------------------------------------------------------


# --------------------------------------------------------------------------
# Validating public API (thin wrappers over the predictor where one exists).
# --------------------------------------------------------------------------


def _prepare(targets, lam, rounds, num_rounds, gram, features, *, probability_targets=True):
    """Validated ``(unit-scale spectrum, targets, lam / root^2, rounds)``; the outputs depend on ``G / lam`` only."""
    V.check_problem(targets, lam, gram, features, probability_targets=probability_targets)
    r = V.resolve_rounds(rounds, num_rounds)
    unit = _unit_problem(gram=gram, features=features)
    lam_u = _unit_lam(lam, unit.root, "gram" if gram is not None else "features")
    return unit.spec, jnp.asarray(targets, dtype=float), lam_u, jnp.asarray(r)


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
    r"""Linearised softmax outputs of self-distillation rounds on the training set.

    Args:
      targets: ``(N, K)`` probability rows (one-hot for hard labels), the
        teacher's targets.
      lam: L2 weight of ``(1/N) sum CE + (lam/2)||W||^2``; one real number
        ``> 0``. For a grid of ``lam`` (``jax.vmap``/``jax.jit``), transform
        :func:`sd_outputs_core` on a precomputed spectrum: this function
        refuses traced values.
      rounds: an int or 1-D sequence of round indices in ``0..2^31 - 1``
        (``q^(r+1)`` is evaluated in floating point); 0 is the teacher. Or
      num_rounds: a count ``R <= 10^5``: rounds ``0..R-1``. Exactly one of the two.
      gram: ``(N, N)`` symmetric PSD Gram. Exactly one of ``gram``/``features``.
      features: ``(N, d)`` features; the Gram ``X X^T`` is never formed.
      temperature, xi, hard: distillation variants (:mod:`sdtheory.variants`;
        defaults: plain SD). Round ``r`` fits
        ``xi * teacher + (1 - xi) * targets``, the teacher being round
        ``r - 1``'s outputs at temperature ``temperature`` (linearised:
        ``1/K + (P - 1/K)/temperature``) or, with ``hard=True``, their one-hot
        argmax.
      lam_schedule: in place of ``lam``, a 1-D sequence with one L2 weight
        for each round ``0..max(rounds)`` (per eigenvalue the filters multiply).

    Returns:
      ``(R, N, K)`` array ``P_r = 1/K + S^{r+1} (T - 1/K)``,
      ``S = G (G + K N lam I)^{-1}``. Rows sum to 1. (Entries can leave
      ``[0, 1]`` for very small ``lam``: that is the linearisation, see docs.)
      To evaluate many rounds, lam-free test sets or predictions from one
      spectrum, build a :func:`sdtheory.predictor` once.

    Raises:
      ValueError / TypeError naming the problem for invalid inputs.
    """
    variant = check_variant(temperature, xi, hard)
    schedule = resolve_lam(lam, lam_schedule)[1]
    if not variant.is_plain or schedule is not None:
        r = V.resolve_rounds(rounds, num_rounds)
        if schedule is not None:
            resolve_lam(None, schedule, int(r.max()) + 1)
        p = predictor(
            targets,
            lam=lam,
            gram=gram,
            features=features,
            temperature=temperature,
            xi=xi,
            hard=hard,
            lam_schedule=lam_schedule,
        )
        return p.train_outputs(rounds=r)
    spec, t, lam, r = _prepare(targets, lam, rounds, num_rounds, gram, features)
    return sd_outputs_core(spec, t, lam, r)


@float64
def sd_mixed_outputs(
    targets: ArrayLike,
    *,
    lam: Any,
    xi: Any,
    rounds: RoundsLike | None = None,
    num_rounds: int | None = None,
    gram: ArrayLike | None = None,
    features: ArrayLike | None = None,
) -> jax.Array:
    """Closed form for SD with mixed targets ``T_r = xi P_{r-1} + (1 - xi) T``.

    ``xi = 1`` is plain SD (:func:`sd_outputs`), ``xi = 0`` refits the labels
    every round. ``xi`` is one real number in ``[0, 1]`` (for a grid, vmap
    :func:`sd_mixed_outputs_core`).
    """
    if isinstance(xi, (bool, np.bool_)):
        raise TypeError(f"xi (distillation weight) must be a real number in [0, 1], got a bool ({xi!r})")
    xi_arr = V._as_numpy(xi, "xi")
    if xi_arr.ndim != 0:
        raise ValueError(
            f"xi (distillation weight) must be a scalar in [0, 1], got shape {xi_arr.shape}; for a grid "
            "of xi, jax.vmap sdtheory.closed_form.sd_mixed_outputs_core"
        )
    if not (np.isfinite(xi_arr) and 0.0 <= float(xi_arr) <= 1.0):
        raise ValueError(f"xi (distillation weight) must lie in [0, 1], got {float(xi_arr)}")
    spec, t, lam, r = _prepare(targets, lam, rounds, num_rounds, gram, features)
    return sd_mixed_outputs_core(spec, t, lam, r, jnp.asarray(float(xi_arr), dtype=float))


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
    """Linearised outputs of each round on new points, ``(R, N_test, K)``.

    Pass either ``features`` (``(N, d)``) with ``test_features``
    (``(N_test, d)``), or ``gram`` (``(N, N)``) with ``test_gram`` (the
    test-train Gram, ``(N_test, N)``). Equivalent to
    ``predictor(targets, lam=lam, ...).test_outputs(rounds=..., ...)``.
    """
    if features is not None and test_gram is not None:
        raise ValueError("with features= pass test_features= (and not test_gram=)")
    if gram is not None and test_features is not None:
        raise ValueError("with gram= pass test_gram= (N_test, N) (and not test_features=)")
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
    """Squared-loss (kernel ridge) self-distillation, exact (Mobahi et al. 2020).

    Each round minimises ``(1/N) sum_i ||f(x_i) - t_i||^2 / 2 + (lam/2)||W||^2``
    (so ridge ``N lam``) on the previous round's fitted values. Targets may be
    any real ``(N,)`` or ``(N, K)`` array. Returns ``(R, N[, K])``.
    """
    spec, t, lam, r = _prepare(targets, lam, rounds, num_rounds, gram, features, probability_targets=False)
    return kernel_ridge_sd_core(spec, t, lam, r)


@float64(kernel="jax.numpy.argmax(outputs, axis=-1)")
def predictions(outputs: ArrayLike) -> jax.Array:
    """Argmax class of outputs ``(..., K)`` (ties to the lowest index).

    ``outputs`` is a finite real array with a class axis (``K >= 1``). A
    prediction, not a score: whether an instance is *correct* is decided by
    :func:`sdtheory.correct`, for which a tie is a failure.
    """
    arr = V._as_numpy(outputs, "outputs")
    if arr.ndim < 1 or arr.shape[-1] < 1:
        raise ValueError(f"outputs must be a (..., K) array with a class axis of size K >= 1, got shape {arr.shape}")
    V.check_finite(arr, "outputs")
    return jnp.argmax(jnp.asarray(arr), axis=-1)
