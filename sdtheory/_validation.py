"""The package's one checks module: input validation shared by every public function.

Concrete values are checked in full; of a tracer (noise and theorems vmap over ``eta`` or ``lam``) only the
shape and dtype. Arrays are real and rectangular; counts and round indices are compared as Python integers
before any fixed-width conversion; every message names the argument.
"""

from __future__ import annotations

import functools
import math
import numbers
from typing import Any, Optional
from collections.abc import Callable

import jax
import numpy as np

#: Relative tolerance used for "is this symmetric / PSD / row-stochastic".
DEFAULT_RTOL = 1e-8
#: Absolute tolerance on row sums of probability targets.
PROB_ATOL = 1e-6
#: Largest round index (the kernels take the indices as a device integer array).
MAX_ROUND = 2**31 - 1
#: Largest round count ``num_rounds`` (a count materialises every round ``0..R-1``).
MAX_NUM_ROUNDS = 10**5
#: Why counts are bounded (appended to the error message).
NUM_ROUNDS_WHY = "a count materialises rounds 0..R-1, solved one after another; pass rounds= with the indices you need"
#: Why round indices are bounded (appended to the error message).
ROUND_WHY = "the closed form evaluates q**(r + 1) in floating point"
#: Largest count (classes, instances, dimensions, seeds, chunk size): labels and indices are int32 on the device.
MAX_COUNT = 2**31 - 1
#: Largest PRNG seed (``jax.random.PRNGKey`` takes an int64).
MAX_SEED = 2**63 - 1


def is_tracer(x: Any) -> bool:
    """True when ``x`` is an abstract value inside a JAX transformation."""
    return isinstance(x, jax.core.Tracer)


def shape_of(x: Any, name: str) -> tuple:
    """The shape of a real array ``x`` (a tracer's static shape), checked as :func:`check_real_array`."""
    if is_tracer(x):
        return tuple(np.shape(x))
    return tuple(check_real_array(x, name).shape)


def check_finite(x: Any, name: str) -> None:
    """Raise ``ValueError`` if a concrete array contains NaN or inf."""
    if is_tracer(x):
        return
    arr = check_real_array(x, name)
    if not np.all(np.isfinite(arr)):
        bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        raise ValueError(f"{name} contains {bad} non-finite value(s) (NaN or inf)")


def check_lam(lam: Any, name: str = "lam") -> Any:
    """The L2 weight: a finite real ``> 0`` as a Python float (a tracer: checked for being a scalar only)."""
    if isinstance(lam, (bool, np.bool_)):
        raise TypeError(f"{name} (the L2 weight) must be a real number > 0, got a bool ({lam!r})")
    shape = shape_of(lam, name)
    if shape != ():
        raise ValueError(
            f"{name} must be a scalar (one L2 weight), got shape {tuple(shape)}; for a grid of {name}, jax.vmap a "
            f"*_core kernel over it (sdtheory.closed_form.sd_outputs_core, sdtheory.exact.exact_outputs_core), or "
            f"sweep it with sdtheory.montecarlo.run_grid(lams=...)"
        )
    if is_tracer(lam):
        return lam
    v = check_real(lam, f"{name} (the L2 weight)")
    if not v > 0:
        raise ValueError(f"{name} (the L2 weight) must be > 0, got {v:g}")
    return v


def _round_value(v: Any, name: str) -> int:
    """One round index as a Python int (any size: checked before any fixed-width conversion)."""
    if is_tracer(v):
        raise TypeError(f"{name} must be concrete Python/NumPy integers, not a traced value")
    if isinstance(v, (np.ndarray, jax.Array)) and np.ndim(v) == 0:
        v = v.item()
    if isinstance(v, (list, tuple, np.ndarray, jax.Array, range)):
        raise ValueError(f"{name} must be an int or a 1-D sequence of ints, got a nested sequence")
    if isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_)):
        return int(v)
    what = f"the float {v!r}" if isinstance(v, (numbers.Real, np.floating)) else f"{v!r} ({type(v).__name__})"
    what = f"a bool ({v!r})" if isinstance(v, (bool, np.bool_)) else what
    raise TypeError(f"{name} must be integers (round indices, 0 = teacher), got {what}")


def check_rounds(rounds: Any, *, name: str = "rounds", maximum: int = MAX_ROUND, why: str = ROUND_WHY) -> np.ndarray:
    """Round indices: an int or 1-D sequence of ints in ``[0, maximum]`` (0 = teacher), as 1-D ``int64``."""
    if is_tracer(rounds):
        raise TypeError(f"{name} must be concrete Python/NumPy integers, not a traced value")
    if isinstance(rounds, (str, bytes)):
        raise TypeError(f"{name} must be an int or a 1-D sequence of ints, got the string {rounds!r}")
    if isinstance(rounds, range):
        values = [rounds[0], rounds[-1]] if len(rounds) else []
        out = None  # made after the bound check
    elif isinstance(rounds, (np.ndarray, jax.Array)) and np.ndim(rounds) >= 1:
        if np.ndim(rounds) > 1:
            raise ValueError(f"{name} must be an int or a 1-D sequence, got shape {tuple(np.shape(rounds))}")
        dt = np.dtype(rounds.dtype)
        if dt == np.bool_ or not np.issubdtype(dt, np.integer):
            kind = "bools" if dt == np.bool_ else f"dtype {dt}"
            raise TypeError(f"{name} must be integers (round indices, 0 = teacher), got {kind}")
        arr = np.asarray(rounds)
        values = [int(arr.min()), int(arr.max())] if arr.size else []
        out = arr.astype(np.int64)
    else:
        values = [_round_value(v, name) for v in (rounds if isinstance(rounds, (list, tuple)) else [rounds])]
        out = None
    if not values:
        raise ValueError(f"{name} must contain at least one round index")
    if min(values) < 0:
        raise ValueError(f"{name} must be >= 0 (round 0 is the teacher), got {min(values)}")
    if max(values) > maximum:
        raise ValueError(f"{name} must be <= {maximum} ({why}), got {max(values)}")
    if isinstance(rounds, range):
        return np.arange(rounds.start, rounds.stop, rounds.step, dtype=np.int64)
    return np.asarray(values, dtype=np.int64) if out is None else out


def check_int(
    x: Any, name: str, *, minimum: Optional[int] = None, maximum: Optional[int] = None, why: Optional[str] = None
) -> int:
    """A Python/NumPy integer (not bool), optionally bounded (``why`` explains the upper bound)."""
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, (numbers.Integral, np.integer)):
        raise TypeError(f"{name} must be an int, got {x!r} ({type(x).__name__})")
    x = int(x)
    if minimum is not None and x < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {x}")
    if maximum is not None and x > maximum:
        raise ValueError(f"{name} must be <= {maximum}" + (f" ({why})" if why else "") + f", got {x}")
    return x


def check_targets(targets: Any, name: str = "targets", *, atol: float = PROB_ATOL) -> tuple:
    """Targets: ``(N, K)`` rows in the probability simplex, ``N >= 1``, ``K >= 2``; returns ``(N, K)``."""
    ok = lambda s: len(s) == 2 and s[0] >= 1 and s[1] >= 2
    arr = check_array(targets, name, ok, "a 2-D (N, K) array of probability rows with N >= 1 and K >= 2 classes")
    if not is_tracer(arr):
        check_stochastic_rows(arr, name, atol=atol, negative_atol=atol)
    return tuple(arr.shape)


def check_stochastic_rows(
    arr: np.ndarray, name: str, *, atol: float, negative_atol: float = 0.0, what: Optional[str] = None
) -> None:
    """Finite rows of entries ``>= -negative_atol`` summing to 1 within ``atol``; ``what``: the matrix in messages."""
    what = what or name
    check_finite(arr, name)
    if np.any(arr < -negative_atol):
        i, j = np.argwhere(arr < -negative_atol)[0]
        raise ValueError(f"{what} has a negative entry {name}[{i}, {j}] = {arr[i, j]:.6g}")
    sums = arr.sum(axis=1)
    bad = np.abs(sums - 1.0) > atol
    if np.any(bad):
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"{what} is not row-stochastic: row {i} sums to {sums[i]:.17g} (rows must sum to 1 within atol = {atol:g})"
        )


def check_labels(labels: Any, num_classes: Optional[int], name: str = "labels") -> np.ndarray:
    """1-D integer class labels in ``[0, num_classes)`` (``>= 0`` when ``num_classes`` is ``None``)."""
    if is_tracer(labels):
        if len(np.shape(labels)) != 1:
            raise ValueError(f"{name} must be 1-D, got shape {np.shape(labels)}")
        return labels
    if isinstance(labels, (bool, np.bool_, str, bytes)):
        raise TypeError(f"{name} must be a 1-D array of integer labels, got {labels!r}")
    arr = as_array(labels, name)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of integer labels, got shape {arr.shape}")
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{name} must have an integer dtype, got {arr.dtype}")
    check_class_indices(arr, num_classes, name)
    return arr


def check_class_indices(arr: np.ndarray, num_classes: Optional[int], name: str, source: str = "") -> None:
    """Class indices in ``[0, num_classes)`` (``>= 0`` for ``None``); ``source``: where ``K`` comes from."""
    if not arr.size:
        return
    where = f" ({source})" if source else ""
    if num_classes is None:
        if arr.min() < 0:
            raise ValueError(f"{name} must be class indices >= 0, got values in [{arr.min()}, {arr.max()}]{where}")
        return
    if arr.min() < 0 or arr.max() >= num_classes:
        raise ValueError(
            f"{name} must lie in [0, {num_classes - 1}] for {num_classes} classes; "
            f"got values in [{arr.min()}, {arr.max()}]{where}"
        )


def check_gram(gram: Any, name: str = "gram", *, rtol: float = DEFAULT_RTOL) -> None:
    """Square, non-empty, finite, symmetric within ``10 rtol max|G|`` (PSD: checked on the spectrum)."""
    arr = check_array(gram, name, lambda s: len(s) == 2 and s[0] == s[1] >= 1, "a non-empty square (N, N) matrix")
    if is_tracer(arr):
        return
    scale = float(np.max(np.abs(arr)))
    if scale == 0.0:
        return
    unit = arr / scale  # relative, and no overflow in the difference
    asym = float(np.max(np.abs(unit - unit.T)))
    if asym > 10 * rtol:
        raise ValueError(f"{name} is not symmetric: max |G - G^T| / max |G| = {asym:.3g} > {10 * rtol:g}")


def check_psd_eigenvalues(eigvals: Any, name: str = "gram", *, rtol: float = 1e-8, unit: float = 1.0) -> None:
    """Reject an eigenvalue below ``-rtol * N * max|eigenvalue|``; the eigenvalues are those of ``G / unit``."""
    if is_tracer(eigvals):
        return
    s = np.asarray(eigvals)
    if s.size == 0:
        return
    scale = float(np.max(np.abs(s)))
    low = float(np.min(s))
    if low < 0 and -low > rtol * scale * max(1, s.size):
        raise ValueError(
            f"{name} is not positive semi-definite: smallest eigenvalue {low * unit:.3g} is below -{rtol:g} N "
            f"max|eigenvalue| (N = {s.size}, largest eigenvalue magnitude {scale * unit:.3g})"
        )


def check_features(features: Any, name: str = "features") -> tuple:
    """A finite real ``(N, d)`` array with ``N, d >= 1``; returns its shape."""
    ok = lambda s: len(s) == 2 and min(s) >= 1
    return tuple(check_array(features, name, ok, "a 2-D (N, d) array with N, d >= 1").shape)


def one_of_gram_features(gram: Any, features: Any) -> None:
    if (gram is None) == (features is None):
        raise ValueError("pass exactly one of gram= (N, N) or features= (N, d)")


def check_same_n(n_expected: int, n_got: int, what: str, against: str) -> None:
    if n_expected != n_got:
        raise ValueError(f"{what} has {n_got} instances but {against} has {n_expected}")


def check_problem(targets: Any, lam: Any, gram: Any, features: Any, *, probability_targets: bool = True) -> int:
    """The checks every training problem shares (targets, ``lam``, one of ``gram``/``features`` with N rows); ``N``."""
    one_of_gram_features(gram, features)
    if probability_targets:
        n, _ = check_targets(targets)
    else:
        ok = lambda s: len(s) in (1, 2) and min(s) >= 1
        n = check_array(targets, "targets", ok, "a non-empty (N,) or (N, K) array").shape[0]
    check_lam(lam)
    matrix, what = (gram, "gram") if gram is not None else (features, "features")
    shape = shape_of(matrix, what)
    if len(shape) != 2:
        expected = "a square (N, N) matrix" if gram is not None else "a 2-D (N, d) array"
        raise ValueError(f"{what} must be {expected}, got shape {tuple(shape)}")
    check_same_n(shape[0], n, "targets", what)
    return n


def check_sizes(sizes: Any, name: str = "class_sizes") -> np.ndarray:
    """``K >= 2`` class sizes ``>= 1`` adding up to at most :data:`MAX_COUNT`, as ``int64``."""
    if is_tracer(sizes):
        raise TypeError(f"{name} must be concrete integers, not a traced value")
    arr = as_array(sizes, name)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D sequence of class sizes, got shape {arr.shape}")
    if arr.size < 2:
        raise ValueError(f"{name} must describe K >= 2 classes, got {arr.size}")
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{name} must be integers, got {arr.dtype}")
    if np.any(arr < 1):
        raise ValueError(f"{name} must all be >= 1, got {arr.tolist()}")
    total = int(np.sum(arr.astype(object)))  # Python ints: no int64 wrap-around
    if total > MAX_COUNT:
        raise ValueError(f"{name} must add up to at most {MAX_COUNT} instances, got {total}")
    return arr.astype(np.int64)


def check_num_rounds(num_rounds: Any, name: str = "num_rounds") -> int:
    """A round count ``R`` in ``[1, MAX_NUM_ROUNDS]`` (rounds ``0..R-1``)."""
    return check_int(num_rounds, name, minimum=1, maximum=MAX_NUM_ROUNDS, why=NUM_ROUNDS_WHY)


def check_pll_rounds(num_rounds: Any, maximum: int = MAX_NUM_ROUNDS, why: str = NUM_ROUNDS_WHY) -> int:
    """The number ``R - 1`` of PLL students in ``num_rounds = R >= 2`` (rounds ``0..R-1``, teacher included)."""
    if isinstance(num_rounds, numbers.Integral) and not isinstance(num_rounds, bool) and num_rounds == 1:
        raise ValueError(
            "num_rounds counts rounds 0..R-1 with the teacher as round 0 (as everywhere in sdtheory): the PLL "
            "student needs num_rounds >= 2 (num_rounds=2: the teacher and one student), got 1"
        )
    return check_int(num_rounds, "num_rounds", minimum=2, maximum=maximum, why=why) - 1


def resolve_rounds(rounds: Any, num_rounds: Any, *, maximum: int = MAX_ROUND, why: str = ROUND_WHY) -> np.ndarray:
    """Round indices (1-D int64) from exactly one of ``rounds`` (``<= maximum``) or ``num_rounds`` (``0..R-1``)."""
    if (rounds is None) == (num_rounds is None):
        raise ValueError(
            "pass exactly one of rounds= (round indices, 0 = teacher) or num_rounds= (a count R: rounds 0..R-1)"
        )
    if rounds is not None:
        return check_rounds(rounds, maximum=maximum, why=why)
    r = check_num_rounds(num_rounds)
    if r - 1 > maximum:
        raise ValueError(f"num_rounds must be <= {maximum + 1} ({why}), got {r}")
    return np.arange(r, dtype=np.int64)


def _cd_det(c: float, d: float, sizes: np.ndarray, counts: np.ndarray) -> float:
    """``1 + d sum_k n_k / (1 - c + (c - d) n_k)`` (divided through by ``c - d``): the sign of the block Gram."""
    return 1.0 + d / (c - d) * float(np.sum(counts * sizes / ((1.0 - c) / (c - d) + sizes)))


def cd_lower_bound(c: float, class_sizes: Any = None, *, per_class: Any = None, num_classes: Any = None) -> float:
    """The bound of the ``(c, d)`` domain: the block Gram is positive definite iff ``bound < d < c < 1``."""
    if per_class is not None:
        n, k = float(per_class), float(num_classes)
        return -(1.0 - c + n * c) / (n * (k - 1.0)) if k > 1 else -math.inf
    sizes, counts = np.unique(np.asarray(class_sizes, dtype=float), return_counts=True)
    if counts.sum() < 2:
        return -math.inf
    hi = min(c, 0.0)
    lo = hi - 1.0
    while _cd_det(c, lo, sizes, counts) > 0:
        lo, hi = 2.0 * lo - hi, lo
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            break
        lo, hi = (mid, hi) if _cd_det(c, mid, sizes, counts) <= 0 else (lo, mid)
    return hi


def check_cd(c: Any, d: Any, *, class_sizes: Any = None, per_class: Any = None, num_classes: Any = None) -> tuple:
    """The block model's ``(c, d)``: finite, ``-1 < d < c < 1``, the block Gram positive definite at the given
    sizes (docs/block_model.md, "The ``(c, d)`` domain"); tracers pass unchecked. Returns ``(c, d)``."""
    c, d = (v if is_tracer(v) else check_real(v, name) for name, v in (("c", c), ("d", d)))
    if is_tracer(c) or is_tracer(d):
        return c, d
    if not (d < c < 1.0):
        raise ValueError(f"the block model needs d < c < 1 (every 0 <= d < c < 1 works), got c = {c:g}, d = {d:g}")
    if not d > -1.0:
        raise ValueError(f"d = {d:g} makes the block Gram not positive definite for any class sizes: it needs d > -1")
    balanced = per_class is not None and num_classes is not None
    if d >= 0 or not (balanced or class_sizes is not None):
        return c, d
    if balanced:
        n, k = int(per_class), int(num_classes)
        sizes, counts = np.array([float(n)]), np.array([float(k)])
        where, rule = f"{k} classes of {n}", "d > -(1 - c + n c) / (n (K - 1))"
    else:
        sizes, counts = np.unique(np.asarray(class_sizes, dtype=float), return_counts=True)
        where = f"class sizes {short_list(np.asarray(class_sizes, dtype=int))}"
        rule = "1 + d sum_k n_k / (1 - c + (c - d) n_k) > 0"
    if not _cd_det(c, d, sizes, counts) > 0:
        bound = cd_lower_bound(c, per_class=n, num_classes=k) if balanced else cd_lower_bound(c, class_sizes)
        raise ValueError(
            f"d = {d:.10g} makes the block Gram with c = {c:g} not positive definite for {where}: it needs "
            f"d > {bound:.10g} ({rule}; every 0 <= d < c < 1 works)"
        )
    return c, d


def short_list(values: Any, limit: int = 8) -> str:
    """``values`` for an error message: all of them, or the first ``limit`` and how many there are."""
    arr = np.asarray(values).ravel()
    if arr.size <= limit:
        return str(arr.tolist())
    return f"[{', '.join(str(v) for v in arr[:limit].tolist())}, ...] ({arr.size} in all)"


def as_array(x: Any, name: str) -> np.ndarray:
    """``np.asarray(x)``, with a ragged or malformed sequence reported against ``name``."""
    if isinstance(x, np.ndarray):
        return x
    try:
        return np.asarray(x)
    except (ValueError, TypeError, OverflowError):
        raise ValueError(
            f"{name} must be a rectangular array (a ragged or malformed sequence was given: rows of different lengths?)"
        ) from None


def check_real_array(x: Any, name: str) -> np.ndarray:
    """A concrete rectangular array of real numbers (integer or floating)."""
    if isinstance(x, (str, bytes)):
        raise TypeError(f"{name} must be a numeric array, got the string {x!r}")
    arr = as_array(x, name)
    if arr.dtype == np.bool_:
        raise TypeError(f"{name} must be real numbers, got a bool array (cast it with x.astype(float) for 0/1)")
    if arr.dtype == object:
        raise TypeError(
            f"{name} must be a numeric array, got an object array (mixed or non-numeric entries, or "
            "integers too large for int64)"
        )
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise TypeError(f"{name} must be real numbers (int or float), got dtype {arr.dtype}")
    return arr


def check_real(x: Any, name: str, *, minimum: Optional[float] = None, maximum: Optional[float] = None) -> float:
    """A finite real scalar (not bool or str), optionally bounded, as a Python float."""
    if isinstance(x, (bool, np.bool_)):
        raise TypeError(f"{name} must be a real number, got a bool ({x!r})")
    arr = check_real_array(x, name)
    if arr.ndim != 0:
        raise ValueError(f"{name} must be a scalar, got shape {arr.shape}")
    v = float(arr)
    if not np.isfinite(v):
        raise ValueError(f"{name} must be finite, got {v}")
    if minimum is not None and v < minimum:
        raise ValueError(f"{name} must be >= {minimum:g}, got {v:g}")
    if maximum is not None and v > maximum:
        raise ValueError(f"{name} must be <= {maximum:g}, got {v:g}")
    return v


def check_size(x: Any, name: str, *, minimum: int = 1, maximum: int = MAX_COUNT) -> int:
    """An int (not bool) in ``[minimum, maximum]`` (default ``maximum``: :data:`MAX_COUNT`)."""
    return check_int(x, name, minimum=minimum, maximum=maximum)


def check_bool(x: Any, name: str) -> bool:
    """``True`` or ``False`` (Python or NumPy bool); anything else is a ``TypeError``."""
    if not isinstance(x, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool (True or False), got {x!r}")
    return bool(x)


@functools.cache
def _raw_key_shape() -> tuple:
    return tuple(jax.eval_shape(lambda: jax.random.PRNGKey(0)).shape)


def check_key(key: Any, name: str = "key") -> Any:
    """One ``jax.random`` key, typed (``jax.random.key(seed)``) or raw ``uint32`` (``jax.random.PRNGKey(seed)``)."""
    usage = "jax.random.key(seed) or jax.random.PRNGKey(seed)"
    dtype = getattr(key, "dtype", None)
    if dtype is None or isinstance(key, (bool, np.bool_, numbers.Number, str, bytes)):
        hint = ""
        if isinstance(key, numbers.Integral) and not isinstance(key, (bool, np.bool_)):
            hint = f"; use jax.random.key({key})"
        raise TypeError(f"{name} must be a jax.random key ({usage}), got {type(key).__name__} {key!r}{hint}")
    shape = tuple(np.shape(key))
    if jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        if shape != ():
            raise ValueError(f"{name} must be a single jax.random key, got a batch of keys of shape {shape}")
        return key
    if np.dtype(dtype) == np.uint32 and shape == _raw_key_shape():
        return key
    raise TypeError(
        f"{name} must be a jax.random key ({usage}): a typed key, or raw key data of dtype uint32 "
        f"and shape {_raw_key_shape()}; got dtype {dtype} and shape {shape}"
    )


def check_labels_for(labels: Any, num_classes: int, name: str, source: str) -> Any:
    """:func:`check_labels`, its errors saying where ``K`` comes from (``source``, e.g. ``"num_classes = 3"``)."""
    try:
        return check_labels(labels, num_classes, name)
    except ValueError as exc:
        raise ValueError(f"{exc} ({source})") from None


def as_sequence(x: Any, name: str, expected: str) -> list:
    """``x`` as a list when it is a non-string sequence; else a ``TypeError`` naming ``name`` and ``expected``."""
    if isinstance(x, (str, bytes)):
        raise TypeError(f"{name} must be {expected}, got the string {x!r}")
    try:
        return list(x)
    except TypeError:
        raise TypeError(f"{name} must be {expected}, got {type(x).__name__} {x!r}") from None


def check_pll_classes(num_classes: int, source: str = "targets") -> None:
    """The PLL student needs ``K >= 3`` classes; ``source`` says where ``K`` comes from."""
    if num_classes < 3:
        raise ValueError(
            f"the PLL student needs K >= 3 classes, got K = {num_classes} ({source}): with two classes every "
            "target is (1/2, 1/2); use self-distillation (student='sd') for two classes"
        )


def check_tie_tol(tie_tol: Any) -> float:
    """One real number in ``[0, 0.1)`` (not a bool, not an array); a Python float."""
    if is_tracer(tie_tol):
        raise TypeError("tie_tol must be a concrete float in [0, 0.1), not a traced value")
    v = check_real(tie_tol, "tie_tol")
    if not 0.0 <= v < 0.1:
        raise ValueError(f"tie_tol must be a float in [0, 0.1), got {tie_tol!r}")
    return v


#: The two models of every output: the linearised closed form (the theorems' model) and the exact softmax solution.
MODELS = ("closed", "exact")


def check_choice(x: Any, name: str, choices: tuple) -> str:
    """One of the strings ``choices``."""
    if not isinstance(x, str) or x not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {x!r}")
    return x


def check_model(model: Any) -> str:
    """``model`` validated: one of :data:`MODELS`."""
    return check_choice(model, "model", MODELS)


def check_closed_ce(model: str, loss: Any, options: dict) -> None:
    """``model="closed"`` is the linearised cross-entropy model: no other ``loss``, no exact-solver ``options``."""
    if model == "closed" and (loss != "ce" or options):
        extra = f" and the exact-solver options {sorted(options)}" if options else ""
        raise ValueError(
            f"model='closed' is the linearised cross-entropy model; use model='exact' for loss={loss!r}{extra}"
        )


def check_array(x: Any, name: str, ok: Callable[[tuple], bool], expected: str) -> Any:
    """A finite real array (of a tracer, the shape only) whose shape passes ``ok``; else ``ValueError``: ``name``
    must be ``expected``."""
    arr = x if is_tracer(x) else check_real_array(x, name)
    if not ok(tuple(np.shape(arr))):
        raise ValueError(f"{name} must be {expected}, got shape {tuple(np.shape(arr))}")
    check_finite(arr, name)
    return arr


def check_test_features(test_features: Any, dim: int) -> tuple:
    """``test_features`` as :func:`check_features`, of the training features' dimension ``dim``; its shape."""
    shape = check_features(test_features, "test_features")
    if shape[1] != dim:
        raise ValueError(f"test_features has dimension {shape[1]} but features has {dim}")
    return shape


def check_test_gram(test_gram: Any, n: int, whose: str = "") -> None:
    """A finite ``(N_test, N)`` test-train Gram, ``N_test >= 1``; ``whose``: where ``N`` comes from."""
    ok = lambda s: len(s) == 2 and s[1] == n and s[0] >= 1
    check_array(test_gram, "test_gram", ok, f"(N_test, N) with N_test >= 1 and N = {n}{whose}")
