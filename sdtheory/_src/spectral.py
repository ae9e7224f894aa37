"""The spectrum of the training Gram matrix and functions of it.

Every closed form here is a function of the Gram applied to a label matrix,
``f(G) Y = U diag(f(s)) U^T Y + f(0) (I - U U^T) Y``, evaluated in the eigenbasis computed once (``eigh`` of the Gram,
or of ``X^T X`` when ``d < N``, or a thin SVD on request). ``features`` is ``(N, d)``, ``gram`` ``(N, N)``, targets
``(N, K)``.

**Scale.** Inputs are divided by a power of two before they are factorised (features by ``root ~ max|X|``, a Gram by
``root^2``) and the eigenvalues multiplied back: no digit changes, and features of size ``1e160`` or a Gram of size
``1e-300`` are factorised as accurately as any other. The package works with the unit-scale spectrum and
``lam / root^2`` (:func:`_unit_problem`); the public spectrum functions raise a ``ValueError`` when the eigenvalues are
not representable.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple, Optional
from collections.abc import Callable

import jax
from jax.typing import ArrayLike
import jax.numpy as jnp
import numpy as np

from .. import _validation as V
from .._x64 import float64


class Spectrum(NamedTuple):
    """Eigenpairs of ``G = X X^T`` (or of a given Gram).

    Attributes:
      eigvals: ``(M,)`` non-negative eigenvalues ``s`` (roundoff negatives set to 0 after the PSD check).
      eigvecs: ``(N, M)`` orthonormal eigenvectors ``U``. ``M = N`` for a Gram, ``M = min(N, d)`` for features; the
        orthogonal complement of ``U`` belongs to the eigenvalue 0.
    """

    eigvals: jax.Array
    eigvecs: jax.Array


@jax.jit
def _eigh_spectrum(gram: jax.Array) -> Spectrum:
    s, u = jnp.linalg.eigh(0.5 * (gram + gram.T))
    return Spectrum(s, u)


@jax.jit
def _svd_spectrum(features: jax.Array) -> Spectrum:
    # X = U Sigma V^T (thin): G = X X^T = U Sigma^2 U^T. Costs O(N d min(N, d)).
    u, sig, _ = jnp.linalg.svd(features, full_matrices=False)
    return Spectrum(sig**2, u)


#: Relative cut-off below which the "gram" route treats an eigenvalue of ``X^T X`` as zero (its left singular vector
#: cannot be recovered as ``X v / sqrt(s)`` to useful accuracy).
GRAM_ROUTE_CUTOFF = 1e-10


@jax.jit
def _small_gram_spectrum(features: jax.Array) -> Spectrum:
    # d < N: X^T X = V diag(s) V^T (d x d) and U = X V diag(s)^{-1/2}; O(N d^2) in two matrix products and a d x d eigh
    # (several times faster than a thin SVD on CPU). Directions with s <= cutoff * max(s) get a zero column and s = 0,
    # i.e. they join the null space of G.
    s, v = jnp.linalg.eigh(features.T @ features)
    s = jnp.maximum(s, 0.0)
    keep = s > GRAM_ROUTE_CUTOFF * jnp.max(s)
    inv_sqrt = jnp.where(keep, 1.0 / jnp.sqrt(jnp.where(keep, s, 1.0)), 0.0)
    return Spectrum(jnp.where(keep, s, 0.0), (features @ v) * inv_sqrt)


@jax.jit
def _large_gram_spectrum(features: jax.Array) -> Spectrum:
    return _eigh_spectrum(features @ features.T)  # d >= N: the Gram is no larger than X


def _clean(spec: Spectrum) -> Spectrum:
    return Spectrum(jnp.maximum(spec.eigvals, 0.0), spec.eigvecs)


def _scale_down(x: Any, root: float, power: int) -> jax.Array:
    """``x / root^power`` on the host (exact for a power of two; no flush of subnormal inputs), as a device array."""
    a = np.asarray(x, dtype=float)
    with np.errstate(over="ignore", under="ignore"):  # the callers check that the result is finite
        for _ in range(power if root != 1.0 else 0):
            a = a / root
    return jax.device_put(a)  # device_put: jnp.asarray compiles a copy per shape


def _to_unit(x: Any, *, gram: bool) -> tuple:
    """``(x / root^2, root)`` for a Gram, ``(x / root, root)`` else: ``max|x| / root^2`` in ``[1, 4)``, resp.
    ``max|x| / root`` in ``[1, 2)``; ``root = 1`` for zeros and tracers (on the host: XLA's CPU flushes subnormals)."""
    if V.is_tracer(x):
        return jnp.asarray(x, dtype=float), 1.0
    a = np.asarray(x, dtype=float)
    m = float(np.max(np.abs(a))) if a.size else 0.0
    e = math.frexp(m)[1] - 1 if m > 0 else 0
    root = math.ldexp(1.0, e // 2 if gram else e)
    return _scale_down(a, root, 2 if gram else 1), root


def _rescaled_eigvals(spec: Spectrum, root: float, what: str, validate: bool) -> Spectrum:
    """Eigenvalues of the unit-scale matrix times ``root^2`` (exact), checked to be representable."""
    if root == 1.0:
        return spec
    s = spec.eigvals * root * root
    if validate:
        top, big = (float(jnp.max(jnp.abs(x))) if x.size else 0.0 for x in (spec.eigvals, s))
        if not math.isfinite(big) or (top > 0 and big < np.finfo(float).tiny):
            size, flow = ("large", "overflow") if not math.isfinite(big) else ("small", "underflow")
            raise ValueError(
                f"{what} is too {size}: the eigenvalues of its Gram {flow} float64 (about "
                f"2^{math.log2(top) + 2 * math.log2(root):.0f}). Rescale it; sdtheory.predictor and the "
                "closed-form functions accept it as it is (they depend on G / lam only)"
            )
    return Spectrum(s, spec.eigvecs)


def _check_validate(validate: Any) -> None:
    if not isinstance(validate, (bool, np.bool_)):
        raise TypeError(f"validate must be True or False, got {validate!r}")


def _unit_gram_spectrum(gram: Any, *, validate: bool = True) -> tuple:
    """``(spectrum of G / root^2, root)`` with ``root`` a power of two, ``max|G| / root^2`` in ``[1, 4)``."""
    _check_validate(validate)
    if validate:
        V.check_gram(gram)
    g, root = _to_unit(gram, gram=True)
    spec = _eigh_spectrum(g)
    if validate:
        V.check_psd_eigenvalues(spec.eigvals, unit=root * root)
    return _clean(spec), root


def _gram_spectrum(gram: ArrayLike, *, validate: bool = True) -> Spectrum:
    """Spectrum of a symmetric PSD Gram matrix via ``eigh``.

    Raises ``ValueError`` for a non-square, non-finite, non-symmetric or non-PSD matrix (symmetric within
    ``1e-7 max|G|``, PSD within ``1e-8 N max|s|``: relative to the matrix's scale), and for a Gram whose eigenvalues
    overflow or underflow float64.
    """
    spec, root = _unit_gram_spectrum(gram, validate=validate)
    return _rescaled_eigvals(spec, root, "gram", validate)


def _unit_feature_spectrum(features: Any, *, method: str = "auto", validate: bool = True) -> tuple:
    """``(spectrum of X X^T / root^2, root)`` with ``root`` a power of two, ``max|X| / root`` in ``[1, 2)``."""
    if not isinstance(method, str) or method not in ("auto", "svd"):
        raise ValueError(f"method must be 'auto' or 'svd', got {method!r}")
    _check_validate(validate)
    if validate:
        V.check_features(features)
    x, root = _to_unit(features, gram=False)
    if method == "svd":
        return _clean(_svd_spectrum(x)), root
    if x.shape[1] < x.shape[0]:
        return _small_gram_spectrum(x), root
    return _clean(_large_gram_spectrum(x)), root


def _feature_spectrum(features: ArrayLike, *, method: str = "auto", validate: bool = True) -> Spectrum:
    """Spectrum of ``G = X X^T`` from ``(N, d)`` features, never forming ``G`` when ``d < N``.

    ``method="auto"``: for ``d < N`` ``eigh`` of ``X^T X`` with ``U = X V diag(s)^{-1/2}`` (``M = d``; eigenvalues below
    ``GRAM_ROUTE_CUTOFF * max(s)`` set to 0: the error on SD outputs is ``O(eps max(s) / (K N lam))``), else ``eigh`` of
    the Gram; ``"svd"``: a thin SVD (backward stable, slower). ``ValueError`` when the eigenvalues overflow or underflow
    float64 (features beyond about ``1e+-154``).
    """
    spec, root = _unit_feature_spectrum(features, method=method, validate=validate)
    return _rescaled_eigvals(spec, root, "features", validate)


def _spectrum(*, gram: Any = None, features: Any = None, validate: bool = True) -> Spectrum:
    """Spectrum from exactly one of ``gram=`` ``(N, N)`` or ``features=`` ``(N, d)`` (device arrays)."""
    V.one_of_gram_features(gram, features)
    if gram is not None:
        return _gram_spectrum(gram, validate=validate)
    return _feature_spectrum(features, validate=validate)


class UnitProblem(NamedTuple):
    """A training matrix at unit scale, ``(G / root^2, lam / root^2)`` (the outputs depend on ``G / lam`` only).

    Attributes:
      spec: spectrum of ``G / root^2`` (``None`` when not asked for).
      features: ``X / root`` or ``None`` (when the matrix was a Gram).
      gram: ``G / root^2`` or ``None`` (when the matrix was features).
      root: the power of two.
    """

    spec: Optional[Spectrum]
    features: Optional[jax.Array]
    gram: Optional[jax.Array]
    root: float


def _unit_problem(
    *, gram: Any = None, features: Any = None, spectrum: Optional[Spectrum] = None, need_spectrum: bool = True
) -> UnitProblem:
    """Validate the training matrix and bring it to unit scale (:class:`UnitProblem`).

    Exactly one of ``gram`` and ``features``, or a validated ``spectrum`` (optionally with its ``features``). Without
    ``need_spectrum`` nothing is factorised.
    """
    if spectrum is not None:
        eigvals, root = _to_unit(spectrum.eigvals, gram=True)
        spec: Optional[Spectrum] = Spectrum(eigvals, jnp.asarray(spectrum.eigvecs, dtype=float))
        x = None if features is None else _scale_down(features, root, 1)
        return UnitProblem(spec, x, None, root)
    V.one_of_gram_features(gram, features)
    if gram is not None:
        if need_spectrum:
            spec, root = _unit_gram_spectrum(gram)
            return UnitProblem(spec, None, None, root)
        V.check_gram(gram)
        g, root = _to_unit(gram, gram=True)
        return UnitProblem(None, None, g, root)
    if need_spectrum:
        spec, root = _unit_feature_spectrum(features)
    else:
        V.check_features(features)
        spec, root = None, None
    x, root_x = _to_unit(features, gram=False)
    return UnitProblem(spec, x, None, root_x if root is None else root)


def _unit_lam(lam: Any, root: float, what: str) -> jax.Array:
    """``lam / root^2`` (exact for a power of two ``root``); ``ValueError`` if it is not representable."""
    lam_u = float(lam) / root / root
    if not (lam_u >= np.finfo(float).tiny and math.isfinite(lam_u)):
        ratio = math.log2(float(lam)) - 2 * math.log2(root)
        kind = (
            "above the largest float64: overflow"
            if not math.isfinite(lam_u)
            else "below the smallest normal float64: lam is 0 in effect"
        )
        raise ValueError(
            f"lam = {float(lam):g} is out of range for this {what} (largest Gram entry about "
            f"2^{2 * math.log2(root):.0f}): the outputs depend on G / lam only, and lam / max|G| (about "
            f"2^{ratio:.0f}) is {kind}; rescale {what} or lam"
        )
    return jax.device_put(np.float64(lam_u))  # jnp.asarray of a Python float compiles a conversion


# Public, float64 wrappers (NumPy results; the package calls the underscored versions)
_EIGH = "jax.numpy.linalg.eigh (of the Gram, or of X^T X for features)"
gram_spectrum = float64(_gram_spectrum, kernel=_EIGH)
feature_spectrum = float64(_feature_spectrum, kernel=_EIGH)
spectrum = float64(_spectrum, kernel=_EIGH)


def apply_spectral(
    spec: Spectrum, fn: Callable[[jax.Array], jax.Array], y: jax.Array, *, vanishes_at_zero: bool = False
) -> jax.Array:
    """Apply ``f(G)`` to ``y`` (``(N,)`` or ``(N, K)``) through the eigenbasis.

    ``fn`` maps eigenvalues ``(M,)`` to multipliers ``(..., M)``; the result is ``(..., N[, K])``. The zero eigenspace
    not covered by ``U`` gets ``fn(0)`` unless ``vanishes_at_zero`` (every SD filter). Jit-able; shapes are checked, and
    concrete values (multipliers included) to be finite.
    """
    y = _check_apply(spec, fn, y)
    if not isinstance(vanishes_at_zero, (bool, np.bool_)):
        raise TypeError(f"vanishes_at_zero must be True or False, got {vanishes_at_zero!r}")
    u, s = spec.eigvecs, spec.eigvals
    vec = y.ndim == 1
    y2 = y[:, None] if vec else y
    coef = u.T @ y2  # (M, K)
    mult = _multipliers(fn, s)  # (..., M)
    out = jnp.einsum("nm,...m,mk->...nk", u, mult, coef)
    if u.shape[1] < u.shape[0] and not vanishes_at_zero:
        f0 = _multipliers(fn, jnp.zeros((1,), dtype=s.dtype))[..., 0]  # (...): f(0) on the null space
        resid = y2 - u @ coef
        out = out + f0[..., None, None] * resid
    return out[..., 0] if vec else out


def _check_apply(spec: Any, fn: Any, y: Any) -> jax.Array:
    """Validate the arguments of :func:`apply_spectral` (static checks; values too when concrete); returns ``y``."""
    if not isinstance(spec, Spectrum):
        raise TypeError(
            f"spec must be a sdtheory.Spectrum (from sdtheory.spectral.spectrum), got {type(spec).__name__}"
        )
    shapes = []
    for name, a, ndim in (("spec.eigvals", spec.eigvals, 1), ("spec.eigvecs", spec.eigvecs, 2)):
        if not V.is_tracer(a):
            V.check_finite(a, name)
        elif not jnp.issubdtype(a.dtype, jnp.floating):
            raise TypeError(f"{name} must be floating, got dtype {a.dtype}")
        shape = V.shape_of(a, name)
        if len(shape) != ndim:
            raise ValueError(f"{name} must be {ndim}-D, got shape {shape}")
        shapes.append(shape)
    (m,), (n, m2) = shapes
    if m2 != m or n < 1:
        raise ValueError(
            f"spec must hold eigvals (M,) and eigvecs (N, M) with N >= 1, got shapes {shapes[0]} and {shapes[1]}"
        )
    if not callable(fn):
        raise TypeError(f"fn must be a function of the eigenvalues (M,) -> multipliers (..., M), got {fn!r}")
    if V.is_tracer(y):
        if not jnp.issubdtype(y.dtype, jnp.floating) and not jnp.issubdtype(y.dtype, jnp.integer):
            raise TypeError(f"y must be real numbers, got dtype {y.dtype}")
        yy = y
    else:
        V.check_finite(y, "y")
        yy = jnp.asarray(V.check_real_array(y, "y"))
    if yy.ndim not in (1, 2) or yy.shape[0] != n or (yy.ndim == 2 and yy.shape[1] < 1):
        raise ValueError(f"y must be (N,) or (N, K) with N = {n} (the instances of spec), got shape {tuple(yy.shape)}")
    return yy


def _multipliers(fn: Callable, s: jax.Array) -> jax.Array:
    """``fn(s)``, checked to be ``(..., M)`` (and finite when concrete)."""
    mult = jnp.asarray(fn(s))
    if mult.ndim < 1 or mult.shape[-1] != s.shape[0]:
        raise ValueError(
            f"fn must map the eigenvalues (M,) = {tuple(s.shape)} to multipliers (..., M), got shape "
            f"{tuple(mult.shape)}"
        )
    if not V.is_tracer(mult) and not bool(jnp.all(jnp.isfinite(mult))):
        raise ValueError(
            "fn returned non-finite multipliers (NaN or inf) for the eigenvalues of spec (or for the "
            "eigenvalue 0 of the null space of a spectrum from features with d < N)"
        )
    return mult


def apply_spectral_to(
    spec: Spectrum, fn: Callable[[jax.Array], jax.Array], y: jax.Array, cross: jax.Array
) -> jax.Array:
    """``cross @ diag(fn(s)) U^T y`` with ``cross = G(test, train) U`` ``(N_test, M)`` (new points)."""
    coef = spec.eigvecs.T @ (y[:, None] if y.ndim == 1 else y)
    mult = fn(spec.eigvals)
    out = jnp.einsum("tm,...m,mk->...tk", cross, mult, coef)
    return out[..., 0] if y.ndim == 1 else out
