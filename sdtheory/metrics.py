"""Correctness and accuracy: the one rule every part of the package scores by (docs/theorems.md section 8).

An instance is correct when the output of its true class exceeds every other output by more than ``tie_tol`` (default
:data:`TIE_TOL`): a tie is a failure, so for outputs ``(0.5, 0.5, 0)`` and true class 0 the instance is *not* correct.
Integer predictions (already an argmax) are correct when they equal the true label. An empty group of
:func:`split_accuracy` has accuracy NaN, returned beside its counts.
"""

from __future__ import annotations

from typing import Any

import jax
from jax.typing import ArrayLike
import jax.numpy as jnp
import numpy as np

from . import _validation as V
from ._x64 import float64
from ._src.rules import TIE_TOL, SplitAccuracy, accuracy_core, correct_core, split_accuracy_core
from .predictor import predictor

__all__ = [
    "TIE_TOL",
    "SplitAccuracy",
    "accuracy",
    "accuracy_core",
    "correct",
    "correct_core",
    "first_all_correct",
    "heldout_accuracy",
    "split_accuracy",
    "split_accuracy_core",
]


def _check_scored(x: Any, true_labels: Any, name: str, labels_name: str, num_classes: Any = None):
    """``(scores, labels, K or None)`` from outputs ``(..., N, K)`` or integer predictions ``(..., N)`` (class indices
    ``>= 0``, ``< K`` where ``K`` is known) and labels ``(N,)``, ``N >= 1``."""
    host = V.check_real_array(x, name)
    shape = host.shape
    if host.ndim == 0:
        raise ValueError(f"{name} must be float (..., N, K) outputs or integer (..., N) predictions, got a scalar")
    floating = np.issubdtype(host.dtype, np.floating)
    if floating and len(shape) >= 2 and shape[-1] < 2:
        raise ValueError(f"{name}: float outputs must be (..., N, K) with K >= 2 classes, got shape {tuple(shape)}")
    k_out = shape[-1] if floating and len(shape) >= 2 else None
    if num_classes is not None:
        num_classes = V.check_size(num_classes, "num_classes", minimum=2)
        if k_out is not None and k_out != num_classes:
            raise ValueError(f"{name} has K = {k_out} classes (its last axis) but num_classes = {num_classes}")
    k = k_out if k_out is not None else num_classes
    source = "" if k is None else f"K = {k}: the class axis of {name}" if k_out else f"num_classes = {k}"
    t = V.check_labels_for(true_labels, k, labels_name, source) if k else V.check_labels(true_labels, k, labels_name)
    n = np.shape(t)[0]
    if n == 0:
        raise ValueError(f"{labels_name} is empty: an accuracy needs at least one instance")
    if floating:
        if len(shape) < 2 or shape[-2] != n:
            hint = "; predictions (class indices) must have an integer dtype (cast them with .astype(int))"
            raise ValueError(
                f"{name}: float outputs must be (..., N, K) with N = {n} (the length of {labels_name}), "
                f"got shape {tuple(shape)}{hint if shape[-1] == n else ''}"
            )
        V.check_finite(host, name)
        return jnp.asarray(host, dtype=float), jnp.asarray(t), k
    if len(shape) < 1 or shape[-1] != n:
        raise ValueError(
            f"{name}: integer predictions must be (..., N) with N = {n} (the length of {labels_name}), "
            f"got shape {tuple(shape)}"
        )
    V.check_class_indices(host, k, f"{name} (integer predictions)", source)
    return jnp.asarray(host), jnp.asarray(t), k


@float64
def correct(outputs: ArrayLike, true_labels: ArrayLike, *, tie_tol: float = TIE_TOL) -> jax.Array:
    """Per-instance correctness ``(..., N)`` of float outputs ``(..., N, K)`` (ties are failures; ``tie_tol``
    in ``[0, 0.1)``)."""
    tie_tol = V.check_tie_tol(tie_tol)
    if not np.issubdtype(V.check_real_array(outputs, "outputs").dtype, np.floating):
        raise TypeError("outputs must be floating (..., N, K) scores; integer predictions carry no tie information")
    x, t, _ = _check_scored(outputs, true_labels, "outputs", "true_labels")
    return correct_core(x, t, tie_tol)


@float64
def accuracy(
    outputs_or_predictions: ArrayLike, true_labels: ArrayLike, *, tie_tol: float = TIE_TOL, num_classes: Any = None
) -> jax.Array:
    """Accuracy against the true labels, leading axes kept (a scalar for one set).

    Args:
      outputs_or_predictions: float ``(..., N, K)`` outputs, scored by the
        tie-aware rule (:func:`correct`), or integer ``(..., N)`` predictions (class indices in ``[0, K)``).
      true_labels: ``(N,)`` ints in ``[0, K)``.
      tie_tol: outputs closer than this are tied (a tie is a failure).
      num_classes: ``K``, optional: bounds integer predictions; must equal the outputs' class axis.

    ``accuracy([[0.5, 0.5, 0.0]], [0]) == 0``.
    """
    tie_tol = V.check_tie_tol(tie_tol)
    x, t, _ = _check_scored(outputs_or_predictions, true_labels, "outputs_or_predictions", "true_labels", num_classes)
    return accuracy_core(x, t, tie_tol)


@float64
def split_accuracy(
    outputs_or_predictions: ArrayLike,
    true_labels: ArrayLike,
    given_labels: ArrayLike,
    *,
    tie_tol: float = TIE_TOL,
    num_classes: Any = None,
) -> SplitAccuracy:
    """Accuracy on instances whose given label was clean and on those whose label was corrupted (arguments as in
    :func:`accuracy`); an empty group has accuracy NaN, beside the counts ``n_clean``, ``n_corrupted``,
    ``clean_correct``, ``corrupted_correct``."""
    tie_tol = V.check_tie_tol(tie_tol)
    x, t, k = _check_scored(outputs_or_predictions, true_labels, "outputs_or_predictions", "true_labels", num_classes)
    g = V.check_labels(given_labels, k, "given_labels")
    V.check_same_n(np.shape(t)[0], np.shape(g)[0], "given_labels", "true_labels")
    return split_accuracy_core(x, t, jnp.asarray(g), tie_tol)


@float64
def heldout_accuracy(
    targets: ArrayLike,
    test_labels: ArrayLike,
    *,
    lam: Any,
    rounds: Any,
    features: ArrayLike | None = None,
    test_features: ArrayLike | None = None,
    gram: ArrayLike | None = None,
    test_gram: ArrayLike | None = None,
    tie_tol: float = TIE_TOL,
) -> jax.Array:
    """Held-out accuracy ``(R,)`` of the linearised SD rounds on new points: :func:`sdtheory.predictor` fitted
    on ``targets``, its ``test_outputs`` at ``rounds`` scored against ``test_labels`` ``(N_test,)``."""
    p = predictor(targets, lam=lam, features=features, gram=gram)
    out = p.test_outputs(rounds=rounds, test_features=test_features, test_gram=test_gram)
    k = out.shape[-1]
    t = V.check_labels(test_labels, k, "test_labels")
    V.check_same_n(
        out.shape[1], np.shape(t)[0], "test_labels", "test_gram" if test_features is None else "test_features"
    )
    return accuracy_core(jnp.asarray(out), jnp.asarray(t), V.check_tie_tol(tie_tol))


def first_all_correct(all_correct: ArrayLike, rounds: Any) -> np.ndarray:
    """First round (value from ``rounds``, ``R`` round indices) whose ``all_correct`` (bools ``(..., R)``, or 0/1
    numbers) is true along the last axis; ``-1`` if none."""
    a = V.as_array(all_correct, "all_correct")
    if a.dtype != np.bool_:
        a = V.check_real_array(a, "all_correct")
        if not np.all((a == 0) | (a == 1)):
            raise ValueError("all_correct must be bools (or 0/1), got other values")
        a = a.astype(bool)
    r = V.check_rounds(rounds)
    if a.ndim < 1 or r.ndim != 1 or a.shape[-1] != r.shape[0]:
        raise ValueError(f"all_correct has {a.shape[-1] if a.ndim else 0} rounds but rounds has shape {r.shape}")
    hit = a.any(axis=-1)
    return np.where(hit, r[np.argmax(a, axis=-1)], -1)
