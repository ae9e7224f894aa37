"""The synthetic setting of SelfPLL's numerical experiment, with a valid Gram (docs/simulation.md, "The
paper's synthetic experiment").

The reference perturbs the block Gram ``G`` with i.i.d. uniform noise in
``[-epsilon, epsilon]`` off the diagonal: neither symmetric nor PSD, so the package refuses it. The valid equivalent
here is the Gram ``X X^T`` of the Gaussian-mixture features of :func:`sdtheory.block.sample_block_features` (expectation
``G``), whose dimension makes ``E ||X X^T - G||_F^2 = (N^2 + ||G||_F^2) / dim`` equal the reference's
``N (N - 1) epsilon^2 / 3`` (:func:`matched_feature_dim`).
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


def reference_perturbation_size(num_instances: int, epsilon: float) -> float:
    """Root of the expected squared Frobenius norm of the reference's perturbation of an ``N x N`` matrix:
    ``epsilon sqrt(N (N - 1) / 3)``."""
    n = V.check_size(num_instances, "num_instances", minimum=2)
    e = V.check_real(epsilon, "epsilon")
    if not e > 0:
        raise ValueError(f"epsilon must be finite and > 0, got {epsilon!r}")
    return e * math.sqrt(n * (n - 1) / 3.0)


def block_gram_frobenius_sq(*, num_classes: int, per_class: int, c: float, d: float) -> float:
    """``||G||_F^2`` of the balanced block Gram (diagonal 1, ``c`` within a class, ``d`` across)."""
    k = V.check_size(num_classes, "num_classes", minimum=2)
    n = V.check_size(per_class, "per_class", minimum=1)
    c, d = V.check_cd(c, d)
    big_n = k * n
    return big_n + big_n * (n - 1) * c * c + big_n * (big_n - n) * d * d


def matched_feature_dim(*, num_classes: int, per_class: int, c: float, d: float, epsilon: float) -> int:
    """Feature dimension whose Gram deviates from the block Gram as much as the reference's perturbation:
    ``round(3 (N^2 + ||G||_F^2) / (N (N - 1) epsilon^2))``, at least 1."""
    k = V.check_size(num_classes, "num_classes", minimum=2)
    n = V.check_size(per_class, "per_class", minimum=1)
    big_n = k * n  # >= 2
    g2 = block_gram_frobenius_sq(num_classes=k, per_class=n, c=c, d=d)
    target = reference_perturbation_size(big_n, epsilon) ** 2
    return max(1, int(round((big_n * big_n + g2) / target)))


def paper_features(
    key: jax.Array, *, num_classes: int, per_class: int, c: float, d: float, epsilon: float
) -> tuple[jax.Array, np.ndarray]:
    """Features of the perturbed block model: ``(X, classes)``, ``X`` ``(N, dim)`` (``dim`` from
    :func:`matched_feature_dim`), classes sorted (``per_class`` instances of class 0, then class 1, ...)."""
    dim = matched_feature_dim(num_classes=num_classes, per_class=per_class, c=c, d=d, epsilon=epsilon)
    classes = block_classes([int(per_class)] * int(num_classes))
    x = sample_block_features(key, jnp.asarray(classes), c=c, d=d, dim=dim, num_classes=num_classes)
    return x, classes
