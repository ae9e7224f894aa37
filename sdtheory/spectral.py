"""The spectrum of the training Gram matrix and functions of it.

Every closed form in this package is a *function of the Gram matrix* applied
to a label matrix: ``f(G) Y = U diag(f(s)) U^T Y + f(0) (I - U U^T) Y``. We
compute the eigenpairs once (``eigh`` of the Gram; from features, ``eigh`` of
the ``d x d`` matrix ``X^T X`` when ``d < N`` so that the ``N x N`` Gram is
never formed, or a thin SVD on request) and evaluate any ``f`` in
the eigenbasis, in ``O(N M K)`` for ``M`` retained eigenpairs.

Conventions: ``features`` is ``(N, d)`` (one row per instance), ``gram`` is
``(N, N)``, label/target matrices are ``(N, K)``.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from . import _validation as V
from ._x64 import float64

__all__ = ["GRAM_ROUTE_CUTOFF", "Spectrum", "apply_spectral", "apply_spectral_to", "feature_spectrum", "gram_spectrum", "spectrum"]


class Spectrum(NamedTuple):
    """Eigenpairs of ``G = X X^T`` (or of a given Gram).

    Attributes:
      eigvals: ``(M,)`` non-negative eigenvalues ``s`` (roundoff negatives set to 0
        after the PSD check).
      eigvecs: ``(N, M)`` orthonormal eigenvectors ``U``. ``M = N`` for a Gram,
        ``M = min(N, d)`` for features; the orthogonal complement of ``U``
        belongs to the eigenvalue 0.
    """

    eigvals: jax.Array
    eigvecs: jax.Array

    @property
    def num_instances(self) -> int:
        return self.eigvecs.shape[0]

    @property
    def complete(self) -> bool:
        """True when ``U`` spans all of ``R^N`` (no implicit null space)."""
        return self.eigvecs.shape[1] == self.eigvecs.shape[0]


@jax.jit
def _eigh_spectrum(gram: jax.Array) -> Spectrum:
    gram = 0.5 * (gram + gram.T)
    s, u = jnp.linalg.eigh(gram)
    return Spectrum(s, u)


@jax.jit
def _svd_spectrum(features: jax.Array) -> Spectrum:
    # X = U Sigma V^T (thin): G = X X^T = U Sigma^2 U^T. Costs O(N d min(N, d)).
    u, sig, _ = jnp.linalg.svd(features, full_matrices=False)
    return Spectrum(sig**2, u)


#: Relative cut-off below which the "gram" route treats an eigenvalue of
#: ``X^T X`` as zero (its left singular vector cannot be recovered as
#: ``X v / sqrt(s)`` to useful accuracy).
GRAM_ROUTE_CUTOFF = 1e-10


@jax.jit
def _small_gram_spectrum(features: jax.Array) -> Spectrum:
    # d < N: X^T X = V diag(s) V^T (d x d) and U = X V diag(s)^{-1/2}; O(N d^2)
    # in two matrix products and a d x d eigh (several times faster than a
    # thin SVD on CPU). Directions with s <= cutoff * max(s) get a zero column
    # and s = 0, i.e. they join the null space of G.
    s, v = jnp.linalg.eigh(features.T @ features)
    s = jnp.maximum(s, 0.0)
    keep = s > GRAM_ROUTE_CUTOFF * jnp.max(s)
    inv_sqrt = jnp.where(keep, 1.0 / jnp.sqrt(jnp.where(keep, s, 1.0)), 0.0)
    return Spectrum(jnp.where(keep, s, 0.0), (features @ v) * inv_sqrt)


@jax.jit
def _large_gram_spectrum(features: jax.Array) -> Spectrum:
    # d >= N: the N x N Gram is no larger than X itself; eigh it directly.
    return _eigh_spectrum(features @ features.T)


def _clean(spec: Spectrum) -> Spectrum:
    return Spectrum(jnp.maximum(spec.eigvals, 0.0), spec.eigvecs)


def _gram_spectrum(gram: Any, *, validate: bool = True) -> Spectrum:
    """Spectrum of a symmetric PSD Gram matrix via ``eigh``.

    Raises ``ValueError`` for a non-square, non-finite, non-symmetric or
    non-PSD matrix (PSD within ``1e-8 * N * max(1, ||G||)``).
    """
    if validate:
        V.check_gram(gram)
    spec = _eigh_spectrum(jnp.asarray(gram, dtype=float))
    if validate:
        V.check_psd_eigenvalues(spec.eigvals)
    return _clean(spec)


def _feature_spectrum(features: Any, *, method: str = "auto", validate: bool = True) -> Spectrum:
    """Spectrum of ``G = X X^T`` from ``(N, d)`` features, never forming ``G`` when ``d < N``.

    Methods:
      ``"auto"`` (default): for ``d < N`` the eigendecomposition of the
        ``d x d`` matrix ``X^T X`` with ``U = X V diag(s)^{-1/2}`` (``M = d``
        eigenpairs; the rest of ``R^N`` is the zero eigenspace; eigenvalues
        below ``GRAM_ROUTE_CUTOFF * max(s)`` are set to 0); for ``d >= N``
        ``eigh`` of the ``N x N`` Gram, which is then no larger than ``X``.
        Squaring ``X`` costs accuracy only in directions with tiny ``s``,
        where every self-distillation multiplier ``s/(s + K N lam)`` is tiny
        too: the error on SD outputs is ``O(eps * max(s) / (K N lam))``.
      ``"svd"``: a thin SVD (backward stable for any function of ``G``,
        several times slower on CPU).
    Correct for ``d < N``, ``d >= N`` and rank-deficient ``X``.
    """
    if method not in ("auto", "svd"):
        raise ValueError(f"method must be 'auto' or 'svd', got {method!r}")
    if validate:
        V.check_features(features)
    x = jnp.asarray(features, dtype=float)
    if method == "svd":
        return _clean(_svd_spectrum(x))
    if x.shape[1] < x.shape[0]:
        return _small_gram_spectrum(x)
    return _clean(_large_gram_spectrum(x))


def _spectrum(*, gram: Any = None, features: Any = None, validate: bool = True) -> Spectrum:
    """Spectrum from exactly one of ``gram=`` ``(N, N)`` or ``features=`` ``(N, d)`` (device arrays)."""
    V.one_of_gram_features(gram, features)
    if gram is not None:
        return _gram_spectrum(gram, validate=validate)
    return _feature_spectrum(features, validate=validate)


# Public, float64 wrappers (results as NumPy arrays; the package itself calls the
# underscored versions, which keep the spectrum on the device).
gram_spectrum = float64(_gram_spectrum)
feature_spectrum = float64(_feature_spectrum)
spectrum = float64(_spectrum)


def apply_spectral(
    spec: Spectrum,
    fn: Callable[[jax.Array], jax.Array],
    y: jax.Array,
    *,
    vanishes_at_zero: bool = False,
) -> jax.Array:
    """Apply ``f(G)`` to ``y`` (``(N,)`` or ``(N, K)``) through the eigenbasis.

    ``fn`` maps eigenvalues ``(M,)`` to multipliers. It may return a batch of
    multipliers with leading axes ``(..., M)``; the result then has shape
    ``(..., N[, K])``. The zero eigenspace not covered by ``U`` gets ``fn(0)``,
    unless the caller declares ``vanishes_at_zero=True`` (``f(0) = 0``, as for
    every self-distillation filter ``(s/(s + ridge))^e``), which skips that
    term: at large ``N K R`` it saves two passes over the output.
    Pure and jit-able (``fn`` is applied to traced arrays).
    """
    u, s = spec.eigvecs, spec.eigvals
    vec = y.ndim == 1
    y2 = y[:, None] if vec else y
    coef = u.T @ y2  # (M, K)
    mult = fn(s)  # (..., M)
    out = jnp.einsum("nm,...m,mk->...nk", u, mult, coef)
    if u.shape[1] < u.shape[0] and not vanishes_at_zero:
        f0 = fn(jnp.zeros((1,), dtype=s.dtype))[..., 0]  # (...)
        resid = y2 - u @ coef
        out = out + f0[..., None, None] * resid
    return out[..., 0] if vec else out


def apply_spectral_to(
    spec: Spectrum,
    fn: Callable[[jax.Array], jax.Array],
    y: jax.Array,
    cross: jax.Array,
) -> jax.Array:
    """Evaluate ``cross @ U diag(fn(s)) U^T y``, ``cross`` being ``G_test,train U``.

    ``cross`` is ``(N_test, M)``. Used for predictions on new points, whose
    cross-Gram annihilates the training null space when it comes from
    features (or from any Gram consistent with the training one).
    """
    coef = spec.eigvecs.T @ (y[:, None] if y.ndim == 1 else y)
    mult = fn(spec.eigvals)
    out = jnp.einsum("tm,...m,mk->...tk", cross, mult, coef)
    return out[..., 0] if y.ndim == 1 else out
