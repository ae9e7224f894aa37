"""Accuracy metrics: overall, split by clean / corrupted given labels, held-out.

Predictions are the argmax of outputs with ties to the lowest index
(:func:`sdtheory.predictions`). Every function has a jit-able core
(``*_core``) that works on any leading batch axes (rounds, seeds, ...).

Empty-group convention for :func:`split_accuracy`: the accuracy of an empty
group is **1.0** (vacuously, no instance of the group is misclassified) and
the group's count is returned beside it, so that averages over seeds can be
weighted by the counts (``sum correct / sum count``) instead.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import _validation as V


class SplitAccuracy(NamedTuple):
    """Accuracy on all instances and on the clean / corrupted groups.

    ``clean`` / ``corrupted`` are 1.0 for an empty group (see module doc);
    ``n_clean`` / ``n_corrupted`` and the ``*_correct`` counts are exact.
    """

    overall: jax.Array
    clean: jax.Array
    corrupted: jax.Array
    n_clean: jax.Array
    n_corrupted: jax.Array
    clean_correct: jax.Array
    corrupted_correct: jax.Array


def _to_predictions(x: jax.Array, true_labels: jax.Array) -> jax.Array:
    if jnp.issubdtype(x.dtype, jnp.floating):
        return jnp.argmax(x, axis=-1)
    return x


def accuracy_core(outputs_or_predictions: jax.Array, true_labels: jax.Array) -> jax.Array:
    """Fraction correct over the last instance axis (no validation).

    Floating inputs with a trailing class axis are reduced by argmax first;
    integer inputs are predictions. Batch axes in front are kept.
    """
    pred = _to_predictions(outputs_or_predictions, true_labels)
    return jnp.mean((pred == true_labels).astype(jnp.result_type(float)), axis=-1)


def _check_pred(x: Any, true_labels: Any, name="outputs_or_predictions"):
    shape = np.shape(x)
    n = np.shape(true_labels)[0]
    arr = jnp.asarray(x)
    if jnp.issubdtype(arr.dtype, jnp.floating):
        if len(shape) < 2 or shape[-2] != n:
            raise ValueError(f"{name}: float outputs must be (..., N, K) with N = {n}, got shape {tuple(shape)}")
        V.check_finite(x, name)
    else:
        if len(shape) < 1 or shape[-1] != n:
            raise ValueError(f"{name}: integer predictions must be (..., N) with N = {n}, got shape {tuple(shape)}")
    return arr


def accuracy(outputs_or_predictions: Any, true_labels: Any) -> jax.Array:
    """Accuracy against the true labels.

    Args:
      outputs_or_predictions: float ``(..., N, K)`` outputs (argmax taken,
        ties to the lowest index) or integer ``(..., N)`` predictions.
      true_labels: ``(N,)`` ints.

    Returns the accuracy with the leading axes kept (a scalar for one set).
    """
    shape = np.shape(outputs_or_predictions)
    k = shape[-1] if jnp.issubdtype(jnp.asarray(outputs_or_predictions).dtype, jnp.floating) else None
    t = V.check_labels(true_labels, k if k is not None else np.iinfo(np.int64).max, "true_labels")
    x = _check_pred(outputs_or_predictions, t)
    return accuracy_core(x, jnp.asarray(t))


def split_accuracy_core(predictions: jax.Array, true_labels: jax.Array, given_labels: jax.Array) -> SplitAccuracy:
    """See :func:`split_accuracy` (no validation; batch axes on ``predictions``)."""
    correct = predictions == true_labels
    clean = given_labels == true_labels
    n_clean = jnp.sum(clean)
    n_corr = clean.shape[-1] - n_clean
    c_ok = jnp.sum(correct & clean, axis=-1)
    x_ok = jnp.sum(correct & ~clean, axis=-1)
    acc_c = jnp.where(n_clean > 0, c_ok / jnp.maximum(n_clean, 1), 1.0)
    acc_x = jnp.where(n_corr > 0, x_ok / jnp.maximum(n_corr, 1), 1.0)
    return SplitAccuracy(jnp.mean(correct.astype(jnp.result_type(float)), axis=-1), acc_c, acc_x, n_clean, n_corr, c_ok, x_ok)


def split_accuracy(predictions: Any, true_labels: Any, given_labels: Any) -> SplitAccuracy:
    """Accuracy on instances whose given label was clean and on those whose label was corrupted.

    ``predictions`` are ints ``(..., N)`` or float outputs ``(..., N, K)``
    (argmax taken). An empty group has accuracy 1.0 by convention (vacuous);
    the counts ``n_clean``, ``n_corrupted``, ``clean_correct``,
    ``corrupted_correct`` are returned so no information is hidden.
    """
    t = np.asarray(true_labels)
    big = np.iinfo(np.int64).max
    t = V.check_labels(t, big, "true_labels")
    g = V.check_labels(given_labels, big, "given_labels")
    V.check_same_n(np.shape(t)[0], np.shape(g)[0], "given_labels", "true_labels")
    x = _check_pred(predictions, t, "predictions")
    if jnp.issubdtype(x.dtype, jnp.floating):
        k = x.shape[-1]
        V.check_labels(t, k, "true_labels")
        V.check_labels(g, k, "given_labels")
        x = jnp.argmax(x, axis=-1)
    return split_accuracy_core(x, jnp.asarray(t), jnp.asarray(g))


def heldout_accuracy(
    targets: Any,
    lam: Any,
    rounds: Any,
    test_labels: Any,
    *,
    features: Any = None,
    test_features: Any = None,
    gram: Any = None,
    test_gram: Any = None,
) -> jax.Array:
    """Held-out accuracy ``(R,)`` of the linearised SD rounds on new points.

    Evaluates :func:`sdtheory.sd_test_outputs` (features with test features,
    or Gram with the test-train Gram) and compares the argmax with
    ``test_labels`` ``(N_test,)``.
    """
    from .closed_form import sd_test_outputs

    out = sd_test_outputs(targets, lam, rounds, features=features, test_features=test_features, gram=gram, test_gram=test_gram)
    k = out.shape[-1]
    t = V.check_labels(test_labels, k, "test_labels")
    V.check_same_n(out.shape[1], np.shape(t)[0], "test_labels", "the test points")
    return accuracy_core(out, jnp.asarray(t))
