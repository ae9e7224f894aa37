r"""The class-wise block model's kernels: its analytic spectrum, O(N K) closed-form outputs and feature sampler.

The spectrum of ``G = (1 - c) I + (c - d) B + d 1 1^T`` is ``1 - c`` on within-class zero-sum vectors and the
eigenvalues of ``M = diag(1 - c + (c - d) n_k) + d sqrt(n) sqrt(n)^T`` on class-constant vectors (docs/block_model.md).
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp

from .closed import shrink_factors


class BlockSpectrum(NamedTuple):
    """Spectrum of the block Gram: ``within = 1 - c``, the eigenpairs of ``M`` (``(K,)``, ``(K, K)`` in the
    basis ``1_{C_k}/sqrt(n_k)``) and the class sizes ``(K,)``."""

    within: jax.Array
    class_eigvals: jax.Array
    class_eigvecs: jax.Array
    sizes: jax.Array


@jax.jit
def _block_spectrum(sizes: jax.Array, c, d) -> BlockSpectrum:
    sq = jnp.sqrt(sizes)
    mu, e = jnp.linalg.eigh(jnp.diag(1.0 - c + (c - d) * sizes) + d * jnp.outer(sq, sq))
    return BlockSpectrum(jnp.asarray(1.0 - c, dtype=sizes.dtype), mu, e, sizes)


@jax.jit
def block_outputs_core(
    bspec: BlockSpectrum, classes: jax.Array, targets: jax.Array, lam: jax.Array, rounds: jax.Array
) -> jax.Array:
    """O(N K + K^3) closed-form outputs ``(R, N, K)`` in the block model (no validation)."""
    chex.assert_rank([classes, targets, lam, rounds], [1, 2, 0, 1])
    chex.assert_shape(classes, (targets.shape[0],))
    chex.assert_type(classes, int)
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


@partial(jax.jit, static_argnums=(4, 5))
def sample_block_features_core(key, classes, c, d, dim, k):
    """Kernel of :func:`sample_block_features` (no validation; ``c``, ``d`` may be traced)."""
    kg, km, kz = jax.random.split(key, 3)
    scale = 1.0 / jnp.sqrt(dim)
    g = jax.random.normal(kg, (dim,)) * scale
    m = jax.random.normal(km, (k, dim)) * scale
    z = jax.random.normal(kz, (classes.shape[0], dim)) * scale
    alpha = jnp.sqrt(c - d)
    means_nonneg = jnp.sqrt(jnp.maximum(d, 0.0)) * g[None, :] + alpha * m
    beta = jnp.sqrt(jnp.maximum(c - d + k * d, 0.0)) - alpha
    means_neg = alpha * m + beta * jnp.mean(m, axis=0)[None, :]
    means = jnp.where(d >= 0, means_nonneg, means_neg)
    return means[classes] + jnp.sqrt(1.0 - c) * z
