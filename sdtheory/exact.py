"""The exact (softmax) solution of chained self-distillation rounds: the validated public face.

The solver is :mod:`sdtheory._src.exact` (derivation: docs/exact_solver.md); :func:`exact_outputs` wraps
:func:`sdtheory.predictor` with ``model="exact"``; :func:`exact_predict` evaluates a fit on new points.
"""

from __future__ import annotations

from typing import Any

import jax
from jax.typing import ArrayLike
import jax.numpy as jnp

from . import _validation as V
from ._x64 import float64
from ._src.exact import (
    DEFAULT_MAX_ITER,
    DEFAULT_RTOL,
    DEFAULT_SOLVER,
    DEFAULT_TOL,
    SOLVERS,
    ExactResult,
    exact_outputs_core,
    exact_phi_core,
    solver_features,
    spectral_features,
)
from .predictor import predictor

__all__ = [
    "DEFAULT_MAX_ITER",
    "DEFAULT_RTOL",
    "DEFAULT_SOLVER",
    "DEFAULT_TOL",
    "SOLVERS",
    "ExactResult",
    "exact_outputs",
    "exact_outputs_core",
    "exact_phi_core",
    "exact_predict",
    "solver_features",
    "spectral_features",
]


@float64
def exact_outputs(
    targets: ArrayLike,
    *,
    lam: Any = None,
    rounds: Any = None,
    num_rounds: Any = None,
    gram: ArrayLike | None = None,
    features: ArrayLike | None = None,
    loss: str = "ce",
    q: float = 0.7,
    tol: float = DEFAULT_TOL,
    max_iter: int = DEFAULT_MAX_ITER,
    on_failure: str = "raise",
    solver: str = DEFAULT_SOLVER,
    rtol: float = DEFAULT_RTOL,
    fit_intercept: bool = False,
    temperature: Any = 1.0,
    xi: Any = 1.0,
    hard: Any = False,
    lam_schedule: Any = None,
) -> ExactResult:
    r"""Exact softmax outputs of chained self-distillation rounds (a thin wrapper over :func:`sdtheory.predictor`).

    Round 0 minimises ``(1/N) sum_i loss(t_i, W x_i) + (lam/2) ||W||_F^2`` on ``targets``; round ``r`` on the
    training outputs of round ``r - 1`` (warm-started from its weights).

    Args:
      targets: ``(N, K)`` probability rows (one-hot, soft, or top-2 candidates).
      lam: L2 weight, one real number ``> 0`` (vmap :func:`exact_outputs_core` for grids).
      rounds / num_rounds: exactly one: round indices to return (0 = teacher; at most ``10^5 - 1``), or a
        count ``R <= 10^5`` (rounds ``0..R-1``).
      gram / features: exactly one: an ``(N, N)`` symmetric PSD Gram or ``(N, d)`` features (weight space when
        ``d < N``).
      loss: ``"ce"`` or ``"gce"`` (exponent ``q`` in ``(0, 1]``, not convex).
      tol, max_iter: stopping tolerance on the fixed-point residual; outer iterations per round.
      on_failure: ``"raise"`` (RuntimeError if a round misses both ``tol`` and ``rtol``) or ``"flag"``.
      solver: a name from :data:`SOLVERS` (``"auto"``: truncated Newton with float32 Hessian products).
      rtol: a round also stops when ``ExactResult.kkt <= rtol`` (0 disables it).
      fit_intercept: an unregularised bias ``b`` in the logits ``W x + b``.
      temperature, xi, hard: round ``r`` fits ``xi * softmax(Z_{r-1}/temperature) + (1 - xi) * targets``
        (one-hot argmax with ``hard``; :mod:`sdtheory.variants`).
      lam_schedule: in place of ``lam``, one L2 weight per round ``0..max(rounds)``.

    Returns:
      :class:`ExactResult` with leading axis ``R`` (one entry per requested round).
    """
    options = dict(locals())  # the predictor's arguments, but the rounds
    why = "the exact solver solves the chain of rounds 0..max(rounds) one after another"
    r = V.resolve_rounds(options.pop("rounds"), options.pop("num_rounds"), maximum=V.MAX_NUM_ROUNDS - 1, why=why)
    return predictor(model="exact", num_rounds=int(r.max()) + 1, **options).exact_result(rounds=r)


@float64(kernel="jax.nn.softmax(jnp.einsum('tn,rnk->rtk', test_gram, coef))")
def exact_predict(
    result_or_coef: Any,
    *,
    test_gram: ArrayLike | None = None,
    test_features: ArrayLike | None = None,
    features: ArrayLike | None = None,
    intercepts: ArrayLike | None = None,
) -> jax.Array:
    """Softmax outputs ``(R, N_test, K)`` of every round on new points: logits ``G(test, train) @ A_r + b_r``.

    ``result_or_coef``: an :class:`ExactResult`, or dual coefficients ``(N, K)`` or ``(R, N, K)`` with, for a
    ``fit_intercept`` fit, their ``intercepts`` (``(K,)`` or ``(R, K)``). New points: ``test_gram``
    ``(N_test, N)``, or ``test_features`` ``(N_test, d)`` with the training ``features`` (``X_test (X^T A_r)``:
    the cross-Gram is never formed).
    """
    bias: Any = intercepts
    if isinstance(result_or_coef, ExactResult):
        if intercepts is not None:
            raise ValueError("intercepts= goes with bare coefficients; an ExactResult carries its own")
        result_or_coef, bias = result_or_coef.coef, result_or_coef.intercepts
    expected = "a non-empty (N, K) or (R, N, K) array of dual coefficients (or an ExactResult)"
    coef: Any = V.check_array(result_or_coef, "result_or_coef", lambda s: len(s) in (2, 3) and 0 not in s, expected)
    cshape = coef.shape
    if intercepts is not None:
        bshape = V.check_real_array(intercepts, "intercepts").shape
        want = cshape[:-2] + cshape[-1:]
        if bshape != want:
            raise ValueError(
                f"intercepts must have shape {want} (one per class{' and round' if len(want) == 2 else ''}, as "
                f"the coefficients {tuple(cshape)}), got {bshape}"
            )
        V.check_finite(intercepts, "intercepts")
    coef = jnp.asarray(coef, dtype=float)
    n = cshape[-2]
    if test_gram is not None:
        if test_features is not None or features is not None:
            raise ValueError("pass either test_gram=, or test_features= with features=, not both")
        V.check_test_gram(test_gram, n, " (the instances of result_or_coef)")
        logits = jnp.einsum("tn,...nk->...tk", jnp.asarray(test_gram, dtype=float), coef)
    else:
        if test_features is None or features is None:
            raise ValueError("pass test_gram= (N_test, N), or test_features= (N_test, d) with features= (N, d)")
        fshape = V.check_features(features)
        V.check_test_features(test_features, fshape[1])
        V.check_same_n(n, fshape[0], "features", "result_or_coef")
        w = jnp.einsum("nd,...nk->...dk", jnp.asarray(features, dtype=float), coef)
        logits = jnp.einsum("td,...dk->...tk", jnp.asarray(test_features, dtype=float), w)
    if bias is not None:
        logits = logits + jnp.asarray(bias, dtype=float)[..., None, :]
    return jax.nn.softmax(logits, axis=-1)
