r"""The class-wise block model: analytic spectrum and O(N K) outputs.

Normalised features with ``<x_i, x_i> = 1``, ``<x_i, x_j> = c`` when ``i, j``
share a class and ``d`` otherwise:

.. math:: G = (1 - c) I + (c - d) B + d\, 1 1^T,

``B`` the block-diagonal all-ones matrix of the class partition. Its spectrum
(docs/block_model.md):

* ``1 - c`` on vectors that sum to zero inside every class (multiplicity
  ``N - K``);
* the ``K`` eigenvalues of the ``K x K`` matrix
  ``M = diag(1 - c + (c - d) n_k) + d sqrt(n) sqrt(n)^T`` on class-constant
  vectors (basis ``1_{C_k} / sqrt(n_k)``). Balanced classes (``n_k = n``):
  ``s_b = 1 - c + n (c - d)`` (multiplicity ``K - 1``) and
  ``s_g = s_b + N d`` (the all-ones vector).

Instances are assigned to blocks by their *true* class ``classes[i]``; the
targets may be anything (noisy one-hot labels, soft labels).
"""

from __future__ import annotations

from functools import partial
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from . import _validation as V
from .closed_form import RoundsLike, shrink_factors


class BlockSpectrum(NamedTuple):
    """Spectrum of the block Gram in its natural bases.

    Attributes:
      within: scalar ``1 - c``, the eigenvalue on within-class zero-sum vectors.
      class_eigvals: ``(K,)`` eigenvalues of the class-level matrix ``M``.
      class_eigvecs: ``(K, K)`` eigenvectors of ``M`` in the orthonormal basis
        ``1_{C_k}/sqrt(n_k)``.
      sizes: ``(K,)`` class sizes ``n_k``.
    """

    within: jax.Array
    class_eigvals: jax.Array
    class_eigvecs: jax.Array
    sizes: jax.Array


def block_classes(class_sizes: Sequence[int]) -> np.ndarray:
    """Contiguous true-class vector ``[0]*n_0 + [1]*n_1 + ...`` for given sizes."""
    sizes = V.check_sizes(class_sizes)
    return np.repeat(np.arange(sizes.size), sizes)


def _check_cd(c: Any, d: Any) -> None:
    for name, v in (("c", c), ("d", d)):
        if V.is_tracer(v):
            return
        arr = np.asarray(v, dtype=float)
        if arr.ndim != 0 or not np.isfinite(arr):
            raise ValueError(f"{name} must be a finite scalar, got {v!r}")


def _class_matrix(sizes: jax.Array, c, d) -> jax.Array:
    sq = jnp.sqrt(sizes)
    return jnp.diag(1.0 - c + (c - d) * sizes) + d * jnp.outer(sq, sq)


@jax.jit
def _block_spectrum(sizes: jax.Array, c, d) -> BlockSpectrum:
    mu, e = jnp.linalg.eigh(_class_matrix(sizes, c, d))
    return BlockSpectrum(jnp.asarray(1.0 - c, dtype=sizes.dtype), mu, e, sizes)


def _sizes_from_classes(classes: Any, num_classes: int) -> np.ndarray:
    classes = V.check_labels(classes, num_classes, "classes")
    sizes = np.bincount(classes, minlength=num_classes)
    if np.any(sizes < 1):
        empty = np.flatnonzero(sizes < 1).tolist()
        raise ValueError(f"every class must have at least one instance in the block model; empty: {empty}")
    return sizes


def block_spectrum(class_sizes: Sequence[int], c: float, d: float) -> BlockSpectrum:
    """Analytic spectrum of the block Gram for classes of the given sizes.

    Raises ``ValueError`` when ``(c, d)`` make the block Gram indefinite:
    ``c > 1`` (with a class of size >= 2) or a negative class-level eigenvalue.
    """
    sizes = V.check_sizes(class_sizes)
    _check_cd(c, d)
    spec = _block_spectrum(jnp.asarray(sizes, dtype=float), float(c), float(d))
    tol = 1e-10 * max(1.0, float(np.max(np.abs(spec.class_eigvals))))
    if np.any(sizes >= 2) and float(c) > 1.0 + 1e-12:
        raise ValueError(f"block Gram with c = {c} > 1 is not PSD (within-class eigenvalue 1 - c < 0)")
    if float(np.min(spec.class_eigvals)) < -tol:
        raise ValueError(
            f"block Gram with c = {c}, d = {d} is not PSD: class-level eigenvalue "
            f"{float(np.min(spec.class_eigvals)):.3g} < 0 (need roughly -(1 - c + n(c - d))/N <= d <= c <= 1)"
        )
    return spec


def block_gram(classes: Any, c: float, d: float, *, num_classes: int | None = None) -> jax.Array:
    """The ``(N, N)`` block Gram for true classes ``classes`` (any order).

    Validates that ``(c, d)`` give a PSD matrix (see :func:`block_spectrum`).
    """
    classes_arr = np.asarray(classes)
    k = int(num_classes) if num_classes is not None else int(classes_arr.max()) + 1 if classes_arr.size else 0
    if k < 2:
        raise ValueError(f"the block model needs K >= 2 classes, got {k}")
    sizes = _sizes_from_classes(classes_arr, k)
    block_spectrum(sizes, c, d)  # PSD check
    same = classes_arr[:, None] == classes_arr[None, :]
    g = np.where(same, float(c), float(d))
    np.fill_diagonal(g, 1.0)
    return jnp.asarray(g, dtype=float)


@jax.jit
def block_outputs_spectral(
    bspec: BlockSpectrum, classes: jax.Array, targets: jax.Array, lam: jax.Array, rounds: jax.Array
) -> jax.Array:
    """O(N K + K^3) closed-form outputs ``(R, N, K)`` in the block model (no validation)."""
    n_total, k = targets.shape
    ridge = k * n_total * lam
    exps = (jnp.asarray(rounds) + 1).astype(targets.dtype)
    centred = targets - 1.0 / k
    onehot = jax.nn.one_hot(classes, bspec.sizes.shape[0], dtype=targets.dtype)  # (N, Kc)
    means = (onehot.T @ centred) / bspec.sizes[:, None]  # (Kc, K) class means
    resid = centred - onehot @ means  # within-class part
    a_e = shrink_factors(bspec.within, ridge) ** exps  # (R,)
    qc = shrink_factors(bspec.class_eigvals, ridge)[None, :] ** exps[:, None]  # (R, Kc)
    sq = jnp.sqrt(bspec.sizes)[:, None]
    beta = bspec.class_eigvecs.T @ (sq * means)  # (Kc, K)
    new_means = jnp.einsum("ij,rj,jl->ril", bspec.class_eigvecs, qc, beta) / sq[None]  # (R, Kc, K)
    return 1.0 / k + a_e[:, None, None] * resid[None] + new_means[:, classes, :]


def block_outputs(
    targets: Any,
    classes: Any,
    c: float,
    d: float,
    lam: Any,
    rounds: RoundsLike,
) -> jax.Array:
    """Closed-form SD outputs ``(R, N, K)`` for the block Gram, in ``O(N K)`` per round.

    Agrees with ``sd_outputs(targets, lam, rounds, gram=block_gram(classes, c, d))``
    without forming the Gram. ``classes`` are the true classes (block
    membership) in ``[0, K)``; every class must be non-empty.
    """
    n, k = V.check_targets(targets)
    classes = np.asarray(classes)
    V.check_same_n(n, int(np.shape(classes)[0]) if classes.ndim == 1 else -1, "classes", "targets")
    sizes = _sizes_from_classes(classes, k)
    V.check_lam(lam)
    r = V.check_rounds(rounds)
    bspec = block_spectrum(sizes, c, d)
    return block_outputs_spectral(
        bspec, jnp.asarray(classes), jnp.asarray(targets, dtype=float), jnp.asarray(lam, dtype=float), jnp.asarray(r)
    )


def balanced_block_eigenvalues(n: int, num_classes: int, c: float, d: float) -> tuple:
    """``(s_w, s_b, s_g)`` of the balanced block Gram, ``n`` instances per class."""
    n = V.check_int(n, "n (per-class size)", minimum=1)
    k = V.check_int(num_classes, "num_classes", minimum=2)
    block_spectrum([n] * k, c, d)  # validates PSD
    s_w = 1.0 - c
    s_b = 1.0 - c + n * (c - d)
    s_g = s_b + n * k * d
    return s_w, s_b, s_g


def block_factors(n: int, num_classes: int, c: float, d: float, lam: float) -> tuple:
    """Per-round shrink factors ``(a, b, g) = s / (s + K N lam)`` of the balanced block model."""
    V.check_lam(lam)
    s_w, s_b, s_g = balanced_block_eigenvalues(n, num_classes, c, d)
    ridge = num_classes * (n * num_classes) * lam
    return tuple(s / (s + ridge) for s in (s_w, s_b, s_g))


def sample_block_features(key: jax.Array, classes: Any, c: float, d: float, dim: int, *, num_classes: int | None = None) -> jax.Array:
    r"""Gaussian-mixture features whose *expected* Gram is the block Gram.

    ``x_i = sqrt(d) g + sqrt(c - d) m_{k_i} + sqrt(1 - c) z_i`` with ``g``,
    ``m_k``, ``z_i`` i.i.d. ``N(0, I_dim / dim)``, so
    ``E <x_i, x_j> = 1[i = j] (1 - c) + 1[k_i = k_j] (c - d) + d``. The
    empirical Gram fluctuates around the block Gram by ``O(1/sqrt(dim))``:
    this is the "feature noise" of the Monte Carlo simulations.
    Requires ``0 <= d <= c <= 1``. Returns ``(N, dim)``.
    """
    _check_cd(c, d)
    if not V.is_tracer(c) and not V.is_tracer(d) and not (0.0 <= float(d) <= float(c) <= 1.0):
        raise ValueError(f"sample_block_features needs 0 <= d <= c <= 1, got c = {c}, d = {d}")
    dim = V.check_int(dim, "dim", minimum=1)
    classes = jnp.asarray(classes)
    if classes.ndim != 1:
        raise ValueError(f"classes must be 1-D, got shape {classes.shape}")
    k = int(num_classes) if num_classes is not None else int(np.asarray(classes).max()) + 1
    return _sample_block_features(key, classes, c, d, dim, k)


@partial(jax.jit, static_argnums=(4, 5))
def _sample_block_features(key, classes, c, d, dim, k):
    kg, km, kz = jax.random.split(key, 3)
    scale = 1.0 / jnp.sqrt(dim)
    g = jax.random.normal(kg, (dim,)) * scale
    m = jax.random.normal(km, (k, dim)) * scale
    z = jax.random.normal(kz, (classes.shape[0], dim)) * scale
    return jnp.sqrt(d) * g[None, :] + jnp.sqrt(c - d) * m[classes] + jnp.sqrt(1.0 - c) * z
