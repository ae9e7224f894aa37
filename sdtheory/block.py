r"""The class-wise block model (docs/block_model.md): analytic spectrum, O(N K) outputs, sampled features.

Normalised features with ``<x_i, x_j> = c`` within a class and ``d`` across: ``G = (1 - c) I + (c - d) B + d 1 1^T``
(``B`` the block-diagonal all-ones matrix of the true classes); the targets may be anything.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any
from collections.abc import Sequence

import jax
from jax.typing import ArrayLike
import jax.numpy as jnp
import numpy as np

from . import _validation as V
from ._x64 import float64
from ._src.block import BlockSpectrum, _block_spectrum, block_outputs_core, sample_block_features_core
from ._src.closed import RoundsLike
from . import reduced as Rd

__all__ = [
    "BlockSpectrum",
    "balanced_block_eigenvalues",
    "block_classes",
    "block_factors",
    "block_gram",
    "block_outputs",
    "block_outputs_core",
    "block_spectrum",
    "sample_block_features",
    "sample_block_features_core",
]


#: Where ``K`` comes from when the targets set it (in messages).
TARGET_K = "K (the columns of targets)"


def check_classes(
    classes: Any, num_classes: Any, *, n: int | None = None, require_all: bool = True, source: str = "num_classes"
) -> tuple:
    """Block membership ``(classes, K)``: 1-D integers in ``[0, K)``, ``K = num_classes`` or ``max + 1``;
    ``n``: the number of instances required; ``require_all``: every class non-empty."""
    if num_classes is None:
        arr = V.check_labels(classes, V.MAX_COUNT, "classes")
        if arr.size == 0:
            raise ValueError("classes must not be empty (the block model needs K >= 2 classes)")
        k = int(arr.max()) + 1
        if k < 2:
            raise ValueError(f"classes must contain K >= 2 classes, got only class 0 (K = max(classes) + 1 = {k})")
    else:
        k = V.check_size(num_classes, "num_classes", minimum=2) if source == "num_classes" else num_classes
        arr = V.check_labels_for(classes, k, "classes", f"{source} = {k}")
    if n is not None and arr.shape[0] != n:
        raise ValueError(f"classes has {arr.shape[0]} instances but targets has {n}")
    if require_all:
        if k > arr.size:
            raise ValueError(
                f"classes must give every class 0..{k - 1} at least one instance in the block model, "
                f"but there are {source} = {k} classes and only {arr.size} instances"
            )
        empty = np.flatnonzero(np.bincount(arr, minlength=k) < 1)
        if empty.size:
            raise ValueError(
                f"every class must have at least one instance in the block model; classes has none "
                f"of {V.short_list(empty)} ({source} = {k})"
            )
    return arr, k


def block_classes(class_sizes: Sequence[int]) -> np.ndarray:
    """Contiguous true-class vector ``[0]*n_0 + [1]*n_1 + ...`` for given sizes."""
    sizes = V.check_sizes(class_sizes)
    return np.repeat(np.arange(sizes.size), sizes)


@float64
def block_spectrum(class_sizes: Sequence[int], *, c: float, d: float) -> BlockSpectrum:
    """Analytic spectrum of the block Gram for classes of the given sizes (``d < c < 1``, ``d`` negative down
    to :func:`sdtheory._validation.cd_lower_bound`)."""
    return checked_block_spectrum(class_sizes, c, d)


def checked_block_spectrum(class_sizes, c, d) -> BlockSpectrum:
    """:func:`block_spectrum` without the float64 scope (for callers inside one)."""
    sizes = V.check_sizes(class_sizes)
    c, d = V.check_cd(c, d, class_sizes=sizes)
    return _block_spectrum(jnp.asarray(sizes, dtype=float), c, d)


@float64
def block_gram(
    classes: ArrayLike, *, c: Any = None, d: Any = None, corr: Any = None, num_classes: int | None = None
) -> jax.Array:
    """The ``(N, N)`` block Gram for true classes ``classes`` (any order, every class non-empty) from ``(c, d)``
    as in :func:`block_spectrum`, or ``corr``, a ``(K, K)`` class-correlation matrix ``R``: ``G_ij = R_{k_i k_j}``
    off the diagonal, ``G_ii = 1``."""
    classes_arr, k = check_classes(classes, num_classes)
    sizes = np.bincount(classes_arr, minlength=k)
    R = Rd.resolve_corr(c, d, corr, sizes)
    g = R[classes_arr][:, classes_arr]
    np.fill_diagonal(g, 1.0)
    return jnp.asarray(g, dtype=float)


def _instance_types(classes: np.ndarray, targets: np.ndarray) -> tuple:
    """Types of the instances (true class, target row): ``(type classes, type targets, counts, index)``."""
    keyed = np.concatenate([classes[:, None].astype(float), targets], axis=1)
    # np.unique(keyed, axis=0) in its order (rows sorted lexicographically), 5-10x faster than its structured sort
    order = np.lexsort(keyed.T[::-1])
    rows = keyed[order]
    first = np.concatenate([[True], np.any(rows[1:] != rows[:-1], axis=1)])
    index = np.empty(order.size, np.int64)
    index[order] = np.cumsum(first) - 1
    uniq, counts = rows[first], np.diff(np.append(np.flatnonzero(first), order.size))
    return uniq[:, 0].astype(np.int64), uniq[:, 1:], counts.astype(float), index


@float64
def block_outputs(
    targets: ArrayLike,
    classes: ArrayLike,
    *,
    c: Any = None,
    d: Any = None,
    corr: Any = None,
    lam: Any,
    rounds: RoundsLike | None = None,
    num_rounds: int | None = None,
    model: str = "closed",
    loss: str = "ce",
    q: float = 0.7,
    **exact_options: Any,
) -> jax.Array:
    """SD outputs ``(R, N, K)`` for the block Gram of true ``classes``, in ``O(N K)`` beyond the types.

    The same as ``sd_outputs`` (``model="closed"``) or ``exact_outputs(...).outputs`` (``model="exact"``;
    ``exact_options``: ``tol``, ``max_iter``, ``on_failure``, ``solver``) on ``gram=block_gram(classes, ...)``,
    without forming the Gram: the problem is solved once per (true class, target row) type (:mod:`sdtheory.reduced`).
    """
    n, k = V.check_targets(targets)
    classes, _ = check_classes(classes, k, n=n, source=TARGET_K)
    sizes = np.bincount(classes, minlength=k)
    V.check_lam(lam)
    model = V.check_model(model)
    V.check_closed_ce(model, loss, exact_options)
    r = V.resolve_rounds(rounds, num_rounds, maximum=(V.MAX_ROUND if model == "closed" else V.MAX_NUM_ROUNDS - 1))
    lam_a = jnp.asarray(lam, dtype=float)
    if model == "closed" and corr is None:
        bspec = checked_block_spectrum(sizes, c, d)
        return block_outputs_core(bspec, jnp.asarray(classes), jnp.asarray(targets, dtype=float), lam_a, jnp.asarray(r))
    R = Rd.resolve_corr(c, d, corr, sizes)
    tcls, ttgt, tcounts, index = _instance_types(np.asarray(classes), np.asarray(targets, dtype=float))
    Rd.check_type_problem(tcls.size, k, "targets", num_rounds=int(r.max()) + 1, label_types=False)
    ts = Rd.type_spectrum_core(jnp.asarray(R), jnp.asarray(tcls), jnp.asarray(tcounts))
    if model == "closed":
        out = Rd.reduced_closed_core(ts, jnp.asarray(ttgt), lam_a, jnp.asarray(r))
        return out[:, jnp.asarray(index)]
    opts = Rd.exact_options(loss, q, exact_options)
    return Rd.chain_rounds(ts, jnp.asarray(ttgt), lam_a, r, loss, q, opts).outputs[:, index]


def balanced_block_eigenvalues(*, per_class: int, num_classes: int, c: float, d: float) -> tuple:
    """``(s_w, s_b, s_g) = (1 - c, 1 - c + n (c - d), s_b + N d)`` of the balanced block Gram (Python floats), all
    positive: ``d > -(1 - c + n c) / (n (K - 1))`` (:func:`sdtheory._validation.check_cd`)."""
    n = V.check_size(per_class, "per_class", minimum=1)
    k = V.check_size(num_classes, "num_classes", minimum=2)
    if n * k > V.MAX_COUNT:
        raise ValueError(
            f"per_class * num_classes (the number of instances N) must be at most {V.MAX_COUNT}, got {n} * {k}"
        )
    c, d = V.check_cd(c, d, per_class=n, num_classes=k)
    if V.is_tracer(c) or V.is_tracer(d):
        s_w = 1.0 - c
        s_b = s_w + n * (c - d)
        return s_w, s_b, s_b + n * k * d
    # exact rational arithmetic on the float inputs, one rounding each: near the bound (d < 0) s_g is a
    # small difference of large terms, which float arithmetic would leave with a large relative error
    cq, dq = Fraction(c), Fraction(d)
    s_bq = 1 - cq + n * (cq - dq)
    return float(1 - cq), float(s_bq), float(s_bq + n * k * dq)


def block_factors(*, per_class: int, num_classes: int, c: float, d: float, lam: Any) -> tuple:
    """Per-round shrink factors ``(a, b, g) = s / (s + K N lam)`` of the balanced block model (``lam`` may be
    traced; then so are the factors)."""
    V.check_lam(lam)
    s_vals = balanced_block_eigenvalues(per_class=per_class, num_classes=num_classes, c=c, d=d)
    ridge = num_classes * (per_class * num_classes) * lam
    return tuple(s / (s + ridge) for s in s_vals)


@float64
def sample_block_features(
    key: jax.Array, classes: Any, *, c: float, d: float, dim: int, num_classes: int | None = None
) -> jax.Array:
    r"""Gaussian-mixture features ``(N, dim)`` whose *expected* Gram is the block Gram.

    ``x_i = mu_{k_i} + sqrt(1 - c) z_i``, ``z_i ~ N(0, I_dim / dim)``, class means with ``E <mu_k, mu_l> =
    1[k = l] (c - d) + d`` (docs/block_model.md, "Sampled features"); ``d < c < 1``, ``d >= -c / (K - 1)``.
    """
    V.check_key(key, "key")
    c, d = V.check_cd(c, d)
    dim = V.check_size(dim, "dim", minimum=1)
    classes, k = check_classes(classes, num_classes, require_all=False)
    check_sampler_cd(c, d, k)
    return sample_block_features_core(key, jnp.asarray(classes), c, d, dim, k)


def check_sampler_cd(c: Any, d: Any, num_classes: int) -> None:
    """``ValueError`` unless ``d >= -c / (K - 1)``: the class means' covariance must be PSD (traced values pass)."""
    if V.is_tracer(c) or V.is_tracer(d) or d >= 0:
        return
    k = int(num_classes)
    if c + (k - 1) * d < 0:
        raise ValueError(
            f"d = {d:g} is below -c / (K - 1) = {-c / (k - 1):.6g} (c = {c:g}, K = {k}): the Gaussian-mixture "
            "sampler (sample_block_features, dim=...) draws class means with covariance (c - d) I + d 1 1^T, "
            "which is then not positive semidefinite; use the block Gram itself (block_gram, block_outputs, "
            "or dim=None in the Monte Carlo engine), which allows d down to -(1 - c + n c) / (n (K - 1))"
        )
