r"""Label smoothing and instance-specific smoothing (Zhang & Sabuncu 2020; docs/smoothing.md).

Uniform smoothing ``T = (1 - eps) Y + eps / K`` (in the linearised model the teacher's argmax is unchanged),
rank-matched Beta smoothing (one refit, or iterated to a fixed point of the ranking with a model trained to its
optimum), and the predictive diversity and confidence of outputs.
"""

from __future__ import annotations

from typing import Any, NamedTuple
from collections.abc import Callable

import jax
from jax.typing import ArrayLike
import jax.numpy as jnp
import numpy as np

from . import _validation as V
from ._x64 import float64

__all__ = [
    "BetaFixedPoint",
    "beta_smoothing",
    "beta_smoothing_fixed_point_core",
    "beta_smoothing_core",
    "confidence",
    "predictive_diversity",
    "predictive_diversity_core",
    "uniform_smoothing",
    "uniform_smoothing_core",
]


def uniform_smoothing_core(targets: jax.Array, eps: jax.Array) -> jax.Array:
    """``(1 - eps) T + eps / K`` (no validation)."""
    k = targets.shape[-1]
    return (1.0 - eps) * targets + eps / k


@float64
def uniform_smoothing(targets: ArrayLike, eps: Any) -> jax.Array:
    """Uniform label smoothing ``(1 - eps) T + eps/K`` of ``(N, K)`` probability targets, ``eps in [0, 1]``."""
    V.check_targets(targets, "targets")
    V.check_real(eps, "eps", minimum=0.0, maximum=1.0)
    return uniform_smoothing_core(jnp.asarray(targets, dtype=float), jnp.asarray(eps, dtype=float))


def beta_smoothing_core(
    key: jax.Array,
    label_probs: jax.Array,
    labels: jax.Array,
    num_classes: int,
    beta: jax.Array,
    alpha: Any = 1.0,
) -> jax.Array:
    """Rank-matched Beta smoothing ``(1 - alpha) Y + alpha T_beta`` with ``label_probs`` ``(N,)``.

    The ``j``-th smallest of ``N`` sorted ``Beta(beta, 1)`` draws goes to the ``j``-th least confident instance (ties by
    index); ``T_beta`` is the draw on the labelled class and ``(1 - draw)/(K - 1)`` on the others.
    """
    n = labels.shape[0]
    draws = jnp.sort(jax.random.beta(key, beta, 1.0, (n,), dtype=label_probs.dtype))
    order = jnp.argsort(label_probs, stable=True)
    v = jnp.empty_like(draws).at[order].set(draws)
    onehot = jax.nn.one_hot(labels, num_classes, dtype=label_probs.dtype)
    t_beta = onehot * v[:, None] + (1.0 - onehot) * ((1.0 - v) / (num_classes - 1))[:, None]
    return (1.0 - alpha) * onehot + alpha * t_beta


@float64
def beta_smoothing(
    key: jax.Array, label_probs: ArrayLike, labels: ArrayLike, num_classes: int, beta: Any, alpha: Any = 1.0
) -> jax.Array:
    """Zhang & Sabuncu's Beta smoothing targets ``(N, K)``, ``(1 - alpha) Y + alpha T_beta``.

    CE is linear in the target, so training on it is training on their mixed loss.

    Args:
      key: ``jax.random`` key.
      label_probs: ``(N,)`` the current model's probability of each
        instance's labelled class, or ``(N, K)`` its probabilities (the labelled entry is taken).
      labels: ``(N,)`` given labels in ``[0, K)``.
      num_classes: ``K >= 2``.
      beta: ``> 0``, the first Beta parameter.
      alpha: weight of the Beta target in ``[0, 1]`` (Zhang & Sabuncu use ``0.6``).
    """
    V.check_key(key, "key")
    k = V.check_size(num_classes, "num_classes", minimum=2)
    lab = V.check_labels_for(labels, k, "labels", f"num_classes = {k}")
    if not V.check_real(beta, "beta") > 0:
        raise ValueError(f"beta must be > 0, got {beta!r}")
    V.check_real(alpha, "alpha", minimum=0.0, maximum=1.0)
    label_probs = V.check_real_array(label_probs, "label_probs")
    p = jnp.asarray(label_probs, dtype=float)
    shape = np.shape(label_probs)
    if len(shape) == 2:
        if shape != (np.shape(lab)[0], k):
            raise ValueError(f"label_probs of shape {shape} must be (N, K) = {(np.shape(lab)[0], k)} or (N,)")
        p = jnp.take_along_axis(p, jnp.asarray(lab)[:, None], axis=1)[:, 0]
    elif len(shape) == 1:
        V.check_same_n(np.shape(lab)[0], shape[0], "label_probs", "labels")
    else:
        raise ValueError(f"label_probs must be (N,) or (N, K), got shape {shape}")
    V.check_finite(label_probs, "label_probs")
    return beta_smoothing_core(
        key, p, jnp.asarray(lab), k, jnp.asarray(beta, dtype=float), jnp.asarray(alpha, dtype=float)
    )


def predictive_diversity_core(outputs: jax.Array, normalize: bool = False) -> jax.Array:
    """Entropy of the renormalised non-top probabilities (0 for a one-hot row; ``normalize``: ``/ log(K - 1)``)."""
    k = outputs.shape[-1]
    top = jax.nn.one_hot(jnp.argmax(outputs, axis=-1), k, dtype=bool)
    rest = jnp.where(top, 0.0, outputs)
    mass = rest.sum(axis=-1, keepdims=True)
    r = jnp.where(mass > 0, rest / jnp.where(mass > 0, mass, 1.0), 0.0)
    ent = 0.0 - jnp.sum(jnp.where(r > 0, r * jnp.log(jnp.where(r > 0, r, 1.0)), 0.0), axis=-1)
    if normalize:
        ent = ent / np.log(k - 1) if k > 2 else jnp.zeros_like(ent)
    return ent


@float64
def predictive_diversity(outputs: ArrayLike, *, normalize: bool = False) -> jax.Array:
    """Per-row entropy ``(N,)`` of the non-argmax probabilities of ``(N, K)`` probability rows, renormalised.

    A one-hot row has diversity 0; ``normalize=True`` divides by ``log(K - 1)`` (0 for ``K = 2``).
    """
    V.check_targets(outputs, "outputs")
    normalize = V.check_bool(normalize, "normalize")
    return predictive_diversity_core(jnp.asarray(outputs, dtype=float), normalize)


@float64
def confidence(outputs: ArrayLike) -> jax.Array:
    """Top probability ``max_l p_l`` per row, ``(N,)``, of ``(N, K)`` probability rows."""
    V.check_targets(outputs, "outputs")
    return jnp.max(jnp.asarray(outputs, dtype=float), axis=-1)


class BetaFixedPoint(NamedTuple):
    """The last Beta-smoothed ``targets`` and the ``outputs`` fitted on them (``(N, K)``), the number of
    refits ``iterations`` and whether the ranking stopped changing (``converged``: a fixed point)."""

    targets: jax.Array
    outputs: jax.Array
    iterations: int
    converged: bool


def beta_smoothing_fixed_point_core(
    fit: Callable[[jax.Array], jax.Array],
    outputs: jax.Array,
    key: jax.Array,
    labels: jax.Array,
    num_classes: int,
    beta: Any,
    max_iter: int = 20,
    alpha: Any = 1.0,
) -> BetaFixedPoint:
    """Beta smoothing iterated with a model trained to its optimum (docs/smoothing.md).

    From the teacher's ``outputs`` ``(N, K)``: rank by the labelled-class probability, assign the sorted draws of the
    *same* ``key`` (:func:`beta_smoothing_core`), refit with ``fit(targets) -> outputs``; stop when the ranking no
    longer changes or after ``max_iter`` refits (1: one refit). Host loop; only ``alpha`` and ``max_iter`` are
    validated.
    """
    if max_iter < 1:
        raise ValueError(f"max_iter must be >= 1, got {max_iter}")
    V.check_real(alpha, "alpha", minimum=0.0, maximum=1.0)

    def label_probs(p):
        return jnp.take_along_axis(p, labels[:, None], axis=1)[:, 0]

    def ranking(p):
        return np.argsort(np.asarray(label_probs(p)), kind="stable")  # the order beta_smoothing_core uses

    current, order = outputs, ranking(outputs)
    it = 0
    while True:
        it += 1
        targets = beta_smoothing_core(key, label_probs(current), labels, num_classes, beta, alpha)
        current = fit(targets)
        new_order = ranking(current)
        fixed = bool(np.array_equal(new_order, order))
        if fixed or it == max_iter:
            return BetaFixedPoint(targets, current, it, fixed)
        order = new_order
