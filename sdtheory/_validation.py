"""Input validation shared by every public function.

Checks run at the public boundary, outside ``jit``, on concrete values. When a
value is a JAX tracer (the caller wrapped a public function in ``jax.vmap`` or
``jax.jit``) its *value* cannot be inspected; then only static properties
(shape, dtype) are checked and the value checks are skipped. Callers who
transform public functions are expected to validate their grids themselves,
e.g. with :func:`check_lam` on the whole array of ``lam`` values.
"""

from __future__ import annotations

import numbers
from typing import Any, Optional, Sequence

import jax
import numpy as np

#: Relative tolerance used for "is this symmetric / PSD / row-stochastic".
DEFAULT_RTOL = 1e-8
#: Absolute tolerance on row sums of probability targets.
PROB_ATOL = 1e-6


def is_tracer(x: Any) -> bool:
    """True when ``x`` is an abstract value inside a JAX transformation."""
    return isinstance(x, jax.core.Tracer)


def _as_numpy(x: Any, name: str) -> np.ndarray:
    try:
        arr = np.asarray(x)
    except Exception as exc:  # pragma: no cover - exotic inputs
        raise TypeError(f"{name} must be array-like, got {type(x).__name__}") from exc
    if arr.dtype == object:
        raise TypeError(f"{name} must be a numeric array, got an object array")
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise TypeError(f"{name} must be numeric, got dtype {arr.dtype}")
    if np.iscomplexobj(arr):
        raise TypeError(f"{name} must be real, got complex dtype {arr.dtype}")
    return arr


def check_finite(x: Any, name: str) -> None:
    """Raise ``ValueError`` if a concrete array contains NaN or inf."""
    if is_tracer(x):
        return
    arr = _as_numpy(x, name)
    if not np.all(np.isfinite(arr)):
        bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        raise ValueError(f"{name} contains {bad} non-finite value(s) (NaN or inf)")


def check_ndim(x: Any, ndim: int, name: str) -> None:
    shape = np.shape(x)
    if len(shape) != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {tuple(shape)}")


def check_positive_scalar(x: Any, name: str, *, allow_array: bool = True) -> None:
    """``x`` must be finite and > 0 (elementwise when an array is allowed)."""
    if is_tracer(x):
        return
    arr = _as_numpy(x, name)
    if not allow_array and arr.ndim != 0:
        raise ValueError(f"{name} must be a scalar, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite, got {x!r}")
    if not np.all(arr > 0):
        raise ValueError(f"{name} must be > 0, got {x!r}")


def check_lam(lam: Any) -> None:
    """The L2 weight: finite and strictly positive (scalar or array of values)."""
    check_positive_scalar(lam, "lam")


def check_rounds(rounds: Any) -> np.ndarray:
    """Round indices: an int or 1-D sequence of non-negative ints (0 = teacher).

    Returns a 1-D ``int`` NumPy array. ``bool`` is rejected on purpose.
    """
    if is_tracer(rounds):
        raise TypeError("rounds must be concrete Python/NumPy integers, not a traced value")
    if isinstance(rounds, (bool, np.bool_)):
        raise TypeError("rounds must be an int or a 1-D sequence of ints, got a bool")
    arr = np.asarray(rounds)
    if arr.dtype == object or arr.dtype == np.bool_:
        raise TypeError(f"rounds must be integers, got {rounds!r}")
    if arr.ndim > 1:
        raise ValueError(f"rounds must be an int or a 1-D sequence, got shape {arr.shape}")
    arr = np.atleast_1d(arr)
    if arr.size == 0:
        raise ValueError("rounds must contain at least one round index")
    if not np.issubdtype(arr.dtype, np.integer):
        if np.issubdtype(arr.dtype, np.floating) and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
            raise TypeError(f"rounds must be integers, got floats {arr.tolist()}")
        raise TypeError(f"rounds must be integers, got {rounds!r}")
    if np.any(arr < 0):
        raise ValueError(f"rounds must be >= 0 (round 0 is the teacher), got {arr.tolist()}")
    return arr.astype(np.int64)


def check_int(x: Any, name: str, *, minimum: Optional[int] = None) -> int:
    """A Python/NumPy integer (not bool), optionally bounded below."""
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, (numbers.Integral, np.integer)):
        raise TypeError(f"{name} must be an int, got {x!r} ({type(x).__name__})")
    x = int(x)
    if minimum is not None and x < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {x}")
    return x


def check_targets(targets: Any, name: str = "targets", *, atol: float = PROB_ATOL) -> tuple:
    """Targets: (N, K) rows in the probability simplex, K >= 2.

    Returns ``(N, K)``. Value checks are skipped for tracers.
    """
    shape = np.shape(targets)
    if len(shape) != 2:
        raise ValueError(f"{name} must be a 2-D (N, K) array of probability rows, got shape {tuple(shape)}")
    n, k = shape
    if k < 2:
        raise ValueError(f"{name} must have K >= 2 classes (columns), got K = {k}")
    if n < 1:
        raise ValueError(f"{name} must have at least one row (instance)")
    if is_tracer(targets):
        return n, k
    arr = _as_numpy(targets, name)
    check_finite(arr, name)
    if np.any(arr < -atol):
        i = int(np.argwhere(arr < -atol)[0, 0])
        raise ValueError(f"{name} has negative entries (first in row {i}: {arr[i].tolist()})")
    sums = arr.sum(axis=1)
    bad = np.abs(sums - 1.0) > atol
    if np.any(bad):
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"{name} rows must sum to 1 (probability vectors); row {i} sums to {sums[i]:.6g}"
        )
    return n, k


def check_labels(labels: Any, num_classes: int, name: str = "labels") -> np.ndarray:
    """Integer class labels in ``[0, num_classes)``; returns a 1-D int array."""
    if is_tracer(labels):
        if len(np.shape(labels)) != 1:
            raise ValueError(f"{name} must be 1-D, got shape {np.shape(labels)}")
        return labels
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of integer labels, got shape {arr.shape}")
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{name} must have an integer dtype, got {arr.dtype}")
    if arr.size and (arr.min() < 0 or arr.max() >= num_classes):
        raise ValueError(
            f"{name} must lie in [0, {num_classes - 1}] for {num_classes} classes; "
            f"got values in [{arr.min()}, {arr.max()}]"
        )
    return arr


def check_gram(gram: Any, name: str = "gram", *, rtol: float = DEFAULT_RTOL) -> None:
    """Square, finite and symmetric within ``rtol * max|G|`` (PSD is checked on the spectrum)."""
    shape = np.shape(gram)
    if len(shape) != 2 or shape[0] != shape[1]:
        raise ValueError(f"{name} must be a square (N, N) matrix, got shape {tuple(shape)}")
    if is_tracer(gram):
        return
    arr = _as_numpy(gram, name)
    check_finite(arr, name)
    scale = max(1.0, float(np.max(np.abs(arr)))) if arr.size else 1.0
    asym = float(np.max(np.abs(arr - arr.T))) if arr.size else 0.0
    if asym > rtol * scale * 10:
        raise ValueError(f"{name} is not symmetric: max |G - G^T| = {asym:.3g}")


def check_psd_eigenvalues(eigvals: Any, name: str = "gram", *, rtol: float = 1e-8) -> None:
    """Reject a spectrum with an eigenvalue below ``-rtol * max(1, max eigenvalue) * N``."""
    if is_tracer(eigvals):
        return
    s = np.asarray(eigvals)
    if s.size == 0:
        return
    tol = rtol * max(1.0, float(np.max(np.abs(s)))) * max(1, s.size)
    if float(np.min(s)) < -tol:
        raise ValueError(
            f"{name} is not positive semi-definite: smallest eigenvalue {float(np.min(s)):.3g} < -{tol:.2g}"
        )


def check_features(features: Any, name: str = "features") -> tuple:
    shape = np.shape(features)
    if len(shape) != 2:
        raise ValueError(f"{name} must be a 2-D (N, d) array, got shape {tuple(shape)}")
    if shape[0] < 1 or shape[1] < 1:
        raise ValueError(f"{name} must be non-empty, got shape {tuple(shape)}")
    check_finite(features, name)
    return shape


def one_of_gram_features(gram: Any, features: Any) -> None:
    if (gram is None) == (features is None):
        raise ValueError("pass exactly one of gram= (N, N) or features= (N, d)")


def check_same_n(n_expected: int, n_got: int, what: str, against: str) -> None:
    if n_expected != n_got:
        raise ValueError(f"{what} has {n_got} instances but {against} has {n_expected}")


def check_problem(targets: Any, lam: Any, gram: Any, features: Any, *, probability_targets: bool = True) -> int:
    """The checks every training problem shares; returns ``N``.

    Exactly one of ``gram``/``features``; targets ``(N, K)`` probability rows
    (or, with ``probability_targets=False``, any finite ``(N,)``/``(N, K)``
    array); a valid ``lam``; and as many rows in the matrix as in the targets.
    The matrix's own contents (symmetry, PSD, finiteness) are checked where
    its spectrum is computed.
    """
    one_of_gram_features(gram, features)
    if probability_targets:
        n, _ = check_targets(targets)
    else:
        shape = np.shape(targets)
        if len(shape) not in (1, 2):
            raise ValueError(f"targets must be (N,) or (N, K), got shape {tuple(shape)}")
        check_finite(targets, "targets")
        n = shape[0]
    check_lam(lam)
    matrix, what = (gram, "gram") if gram is not None else (features, "features")
    shape = np.shape(matrix)
    if len(shape) != 2:
        expected = "a square (N, N) matrix" if gram is not None else "a 2-D (N, d) array"
        raise ValueError(f"{what} must be {expected}, got shape {tuple(shape)}")
    check_same_n(shape[0], n, "targets", what)
    return n


def check_sizes(sizes: Sequence[int], name: str = "class_sizes") -> np.ndarray:
    arr = np.asarray(sizes)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D sequence of class sizes, got shape {arr.shape}")
    if arr.size < 2:
        raise ValueError(f"{name} must describe K >= 2 classes, got {arr.size}")
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{name} must be integers, got {arr.dtype}")
    if np.any(arr < 1):
        raise ValueError(f"{name} must all be >= 1, got {arr.tolist()}")
    return arr.astype(np.int64)


def resolve_rounds(rounds: Any, num_rounds: Any) -> np.ndarray:
    """Round indices from exactly one of ``rounds`` (indices, 0 = teacher) or ``num_rounds`` (a count).

    ``num_rounds = R`` means rounds ``0..R-1``. Returns a 1-D int64 array.
    """
    if (rounds is None) == (num_rounds is None):
        raise ValueError("pass exactly one of rounds= (round indices, 0 = teacher) or num_rounds= (a count R: "
                         "rounds 0..R-1)")
    if rounds is not None:
        return check_rounds(rounds)
    return np.arange(check_int(num_rounds, "num_rounds", minimum=1), dtype=np.int64)


def check_cd(c: Any, d: Any, *, class_sizes: Any = None) -> tuple:
    """The block model's correlations: the one domain every block-model function checks.

    ``c`` is the correlation of two instances of the same class, ``d`` of two
    different classes; both finite real scalars with ``d < c < 1``, and

    * ``d >= 0`` (so ``0 <= d < c < 1``) for the balanced model of the
      theorems, the Monte Carlo engine and the Gaussian-mixture sampler
      (``class_sizes=None``): there the three eigenvalues
      ``1 - c < s_b <= s_g`` are positive and ordered;
    * with ``class_sizes`` (the block Gram itself: :func:`sdtheory.block_gram`,
      :func:`sdtheory.block_spectrum`, :func:`sdtheory.block_outputs`),
      ``d`` may be negative as long as the Gram stays positive definite. Its
      class-level matrix ``D + d sqrt(n) sqrt(n)^T`` with
      ``D = diag(1 - c + (c - d) n_k) > 0`` is positive definite iff
      ``1 + d sum_k n_k / (1 - c + (c - d) n_k) > 0`` (determinant lemma),
      which holds for every ``d >= 0``. Fitted block models of centred
      features have a slightly negative ``d``.

    Traced values are not inspected. Returns ``(c, d)`` (floats when concrete).
    """
    out = []
    for name, v in (("c", c), ("d", d)):
        if is_tracer(v):
            out.append(v)
            continue
        if isinstance(v, (bool, np.bool_)):
            raise TypeError(f"{name} must be a real number, got a bool")
        arr = _as_numpy(v, name)
        if arr.ndim != 0:
            raise ValueError(f"{name} must be a scalar, got shape {arr.shape}")
        if not np.isfinite(arr):
            raise ValueError(f"{name} must be finite, got {v!r}")
        out.append(float(arr))
    c, d = out
    if is_tracer(c) or is_tracer(d):
        return c, d
    if class_sizes is None or d >= 0:
        if not (0.0 <= d < c < 1.0):
            raise ValueError(
                f"the block model needs 0 <= d < c < 1 (d: correlation across classes, c: within a class), "
                f"got c = {c:g}, d = {d:g}")
        return c, d
    if not (d < c < 1.0):
        raise ValueError(f"the block model needs d < c < 1 (and 0 <= d < c < 1 for the theorems), got c = {c:g}, "
                         f"d = {d:g}")
    n = np.asarray(class_sizes, dtype=float)
    det = 1.0 + d * float(np.sum(n / (1.0 - c + (c - d) * n)))
    if not det > 0:
        raise ValueError(f"the block Gram with c = {c:g}, d = {d:g} is not positive definite for class sizes "
                         f"{n.astype(int).tolist()} (needs 1 + d sum_k n_k / (1 - c + (c - d) n_k) > 0, got {det:.3g}; "
                         "0 <= d < c < 1 always works)")
    return c, d
