"""The one tie rule: which instances are correct, and the top-1 / top-2 class masks (pure; no validation).

An instance is correct when the output of its true class exceeds every other output by more than ``tie_tol``; a tie is a
failure. The top-k masks round the scores to multiples of ``tie_tol`` first, so values within it compare equal and the
lower class index wins a tie.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

#: Outputs closer than this are tied; a tie with the true class is a failure. The theorems apply the same
#: rule to label fractions: ``|f_k(k) - f_k(l)| <= TIE_TOL`` is a tie (the corruption condition fails).
TIE_TOL = 1e-10


class SplitAccuracy(NamedTuple):
    """Accuracy on all instances and on the clean / corrupted groups (NaN for an empty group), with the counts."""

    overall: jax.Array
    clean: jax.Array
    corrupted: jax.Array
    n_clean: jax.Array
    n_corrupted: jax.Array
    clean_correct: jax.Array
    corrupted_correct: jax.Array


def correct_core(outputs: jax.Array, true_labels: jax.Array, tie_tol: Any = TIE_TOL) -> jax.Array:
    """``outputs[..., i, true_i] > max_{l != true_i} outputs[..., i, l] + tie_tol``: bools ``outputs.shape[:-1]``."""
    # Unrolled over the K classes: elementwise ops on (..., N) arrays fuse into one
    # loop, ~10x faster on CPU than one-hot masks reduced over a minor axis of size K.
    k = outputs.shape[-1]
    true_out = jnp.zeros(outputs.shape[:-1], outputs.dtype)
    other = jnp.full(outputs.shape[:-1], -jnp.inf, outputs.dtype)
    for l in range(k):
        col = outputs[..., l]
        is_l = true_labels == l
        true_out = jnp.where(is_l, col, true_out)
        other = jnp.where(is_l, other, jnp.maximum(other, col))
    return true_out > other + tie_tol


def _correct_any(x: jax.Array, true_labels: jax.Array, tie_tol) -> jax.Array:
    return correct_core(x, true_labels, tie_tol) if jnp.issubdtype(x.dtype, jnp.floating) else x == true_labels


def accuracy_core(outputs_or_predictions: jax.Array, true_labels: jax.Array, tie_tol: Any = TIE_TOL) -> jax.Array:
    """Fraction correct over the instance axis: ``(..., N, K)`` float outputs or ``(..., N)`` int predictions."""
    ok = _correct_any(outputs_or_predictions, true_labels, tie_tol)
    return jnp.mean(ok.astype(jnp.result_type(float)), axis=-1)


def split_accuracy_core(
    outputs_or_predictions: jax.Array, true_labels: jax.Array, given_labels: jax.Array, tie_tol: Any = TIE_TOL
) -> SplitAccuracy:
    """Kernel of :func:`sdtheory.metrics.split_accuracy` (batch axes in front of the instance axis)."""
    ok = _correct_any(outputs_or_predictions, true_labels, tie_tol)
    clean = given_labels == true_labels
    n_clean = jnp.sum(clean)
    n_corr = clean.shape[-1] - n_clean
    c_ok = jnp.sum(ok & clean, axis=-1)
    x_ok = jnp.sum(ok & ~clean, axis=-1)
    acc_c = jnp.where(n_clean > 0, c_ok / jnp.maximum(n_clean, 1), jnp.nan)
    acc_x = jnp.where(n_corr > 0, x_ok / jnp.maximum(n_corr, 1), jnp.nan)
    overall = jnp.mean(ok.astype(jnp.result_type(float)), axis=-1)
    return SplitAccuracy(overall, acc_c, acc_x, n_clean, n_corr, c_ok, x_ok)


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


def hard_targets_core(scores: jax.Array, tie_tol: Any = TIE_TOL) -> jax.Array:
    """One-hot argmax of ``scores`` ``(..., K)`` by the package's tie rule (lower index wins a tie)."""
    return top1_mask_core(scores, tie_tol).astype(scores.dtype)
