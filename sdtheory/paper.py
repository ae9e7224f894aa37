"""The synthetic setting of SelfPLL's numerical experiment, with a valid Gram.

The reference setting: ``K = 4`` classes, ``n = 500`` per class, ``lam = 1e-5``,
block correlations ``c = 0.4``, ``d = 0.1``, symmetric label noise and ten
models (the teacher and nine distillation rounds). The reference perturbs the
block Gram ``G`` by adding i.i.d. uniform noise in ``[-epsilon, epsilon]``
(``epsilon = 0.05``) to every off-diagonal entry. That matrix is neither
symmetric nor positive semi-definite, so it is no Gram of any features and the
package refuses it.

The valid equivalent used here is the Gram ``X X^T`` of the Gaussian-mixture
features of :func:`sdtheory.block.sample_block_features`, whose expectation is
``G``, with the feature dimension chosen so that its expected squared
Frobenius deviation from ``G`` equals the reference's. For these features
``<x_i, x_j>`` is a sum of ``dim`` i.i.d. products of two jointly Gaussian
coordinates of variance ``1/dim`` and correlation ``G_ij``, so
``Var <x_i, x_j> = (1 + G_ij^2) / dim`` and

    E ||X X^T - G||_F^2 = (N^2 + ||G||_F^2) / dim,

while the reference's perturbation has ``E ||E||_F^2 = N (N - 1) epsilon^2 / 3``.
Equating the two gives :func:`matched_feature_dim` (1258 for the reference
setting; then ``dim < N`` and the Gram has rank ``dim``).
docs/simulation.md ("The paper's synthetic experiment") explains the choice.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from . import _validation as V
from .block import block_classes, sample_block_features

__all__ = [
    "PAPER",
    "block_gram_frobenius_sq",
    "matched_feature_dim",
    "paper_features",
    "reference_perturbation_size",
]

#: The reference's synthetic setting (``num_rounds`` = 10 models: rounds 0..9,
#: i.e. SelfPLL steps 1..10; ``epsilon``: half-width of its uniform perturbation).
PAPER: dict[str, Any] = {
    "num_classes": 4,
    "per_class": 500,
    "lam": 1e-5,
    "c": 0.4,
    "d": 0.1,
    "noise": "symmetric",
    "num_rounds": 10,
    "epsilon": 0.05,
    "etas": (0.1, 0.3, 0.5, 0.7),
}


def _check_epsilon(epsilon: Any) -> float:
    try:
        e = float(epsilon)
    except (TypeError, ValueError):
        raise TypeError(f"epsilon must be a real number, got {type(epsilon).__name__}") from None
    if not (math.isfinite(e) and e > 0):
        raise ValueError(f"epsilon must be finite and > 0, got {epsilon!r}")
    return e


def reference_perturbation_size(num_instances: int, epsilon: float) -> float:
    """Root of the expected squared Frobenius norm of the reference's perturbation.

    i.i.d. uniform entries on ``[-epsilon, epsilon]`` (variance ``epsilon^2/3``)
    off the diagonal of an ``N x N`` matrix: ``epsilon sqrt(N (N - 1) / 3)``.
    """
    n = V.check_size(num_instances, "num_instances", minimum=2)
    e = _check_epsilon(epsilon)
    return e * math.sqrt(n * (n - 1) / 3.0)


def block_gram_frobenius_sq(*, num_classes: int, per_class: int, c: float, d: float) -> float:
    """``||G||_F^2`` of the balanced block Gram (diagonal 1, ``c`` within a class, ``d`` across)."""
    k = V.check_size(num_classes, "num_classes", minimum=2)
    n = V.check_size(per_class, "per_class", minimum=1)
    c, d = V.check_cd(c, d)
    big_n = k * n
    return big_n + big_n * (n - 1) * c * c + big_n * (big_n - n) * d * d


def matched_feature_dim(*, num_classes: int, per_class: int, c: float, d: float, epsilon: float) -> int:
    """Feature dimension whose Gram deviates from the block Gram as much as the reference's perturbation.

    ``dim = round(3 (N^2 + ||G||_F^2) / (N (N - 1) epsilon^2))`` (module
    docstring), at least 1.
    """
    k = V.check_size(num_classes, "num_classes", minimum=2)
    n = V.check_size(per_class, "per_class", minimum=1)
    big_n = k * n
    if big_n < 2:
        raise ValueError(f"num_classes * per_class must be >= 2, got {big_n}")
    g2 = block_gram_frobenius_sq(num_classes=k, per_class=n, c=c, d=d)
    target = reference_perturbation_size(big_n, epsilon) ** 2
    return max(1, int(round((big_n * big_n + g2) / target)))


def paper_features(
    key: jax.Array, *, num_classes: int, per_class: int, c: float, d: float, epsilon: float
) -> tuple[jax.Array, np.ndarray]:
    """Features of the perturbed block model: ``(X, classes)``, ``X`` of shape ``(N, dim)``.

    ``X X^T`` is symmetric PSD, equals the block Gram in expectation and
    deviates from it by about :func:`reference_perturbation_size` in
    Frobenius norm (``dim`` from :func:`matched_feature_dim`). Classes are
    sorted (``per_class`` instances of class 0, then class 1, ...).
    """
    dim = matched_feature_dim(num_classes=num_classes, per_class=per_class, c=c, d=d, epsilon=epsilon)
    classes = block_classes([int(per_class)] * int(num_classes))
    x = sample_block_features(key, jnp.asarray(classes), c=c, d=d, dim=dim, num_classes=num_classes)
    return x, classes
