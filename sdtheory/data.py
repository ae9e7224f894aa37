r"""Real data: user feature files, the bundled handwritten digits, feature maps (docs/real_data.md).

Everything returns NumPy ``float64`` / ``int64`` arrays; randomness (splits, random features) comes from
explicit ``jax.random`` keys: same key, same data.
"""

from __future__ import annotations

import math
import os
import zipfile
import zlib
from pathlib import Path
from typing import Any, NamedTuple, Optional

import jax
import numpy as np

from . import _validation as V
from ._x64 import float64
from .block import sample_block_features

__all__ = [
    "Dataset",
    "BlockStatistics",
    "load_features",
    "load_digits",
    "block_dataset",
    "stratified_split",
    "stratified_subset",
    "standardize",
    "random_relu_features",
    "normalize_rows",
    "make_features",
    "block_statistics",
    "FEATURE_MAPS",
    "MAX_ARRAY_BYTES",
]

#: Feature maps known to :func:`make_features`.
FEATURE_MAPS = ("standardized", "relu", "identity")

#: Largest array a feature file may hold (bytes as stored, per array: 2 GiB), checked on its header.
MAX_ARRAY_BYTES = 2 * 2**30


class Dataset(NamedTuple):
    """A labelled data set: ``features`` ``(N, d)``, ``labels`` ``(N,)`` in ``0..K-1``, ``num_classes`` ``K``,
    optional ``test_features`` / ``test_labels``, a ``name`` and, when ``labels`` are noisy, optional
    ``clean_labels`` / ``test_clean_labels`` (only to evaluate)."""

    features: np.ndarray
    labels: np.ndarray
    num_classes: int
    test_features: Optional[np.ndarray]
    test_labels: Optional[np.ndarray]
    name: str
    clean_labels: Optional[np.ndarray] = None
    test_clean_labels: Optional[np.ndarray] = None


def _fail(src: str, exc: Exception) -> Exception:
    return type(exc)(f"{src}: {exc}")


def _features_in(arr: Any, src: str, what: str) -> np.ndarray:
    """A loaded feature array: real numeric, finite, ``(N, d)``; errors prefixed with the file."""
    try:
        arr = V.as_array(arr, what)
        if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):  # not bool either
            raise TypeError(f"{what} must have a real numeric dtype (int or float), got {arr.dtype}")
        V.check_features(arr, what)
    except (ValueError, TypeError) as exc:
        raise _fail(src, exc) from None
    return arr.astype(np.float64)


def _labels_in(arr: Any, src: str, what: str, n: int, n_what: str) -> np.ndarray:
    """Loaded labels: 1-D integers ``>= 0``, one per row of ``n_what``; errors prefixed with the file."""
    try:
        arr = V.as_array(arr, what)
        if arr.ndim != 1:
            raise ValueError(f"{what} must be a 1-D (N,) array of integer labels, got shape {arr.shape}")
        if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
            raise TypeError(f"{what} must have an integer dtype, got {arr.dtype} (cast whole numbers to int first)")
        if arr.shape[0] != n:
            raise ValueError(f"{what} has {arr.shape[0]} entries but {n_what} has {n} rows")
        if arr.size and arr.min() < 0:
            raise ValueError(f"{what} must be >= 0, got minimum {arr.min()}")
    except (ValueError, TypeError) as exc:
        raise _fail(src, exc) from None
    return arr.astype(np.int64)


def validate_dataset(
    features, labels, test_features, test_labels, num_classes, src, name, clean_labels=None, test_clean_labels=None
) -> Dataset:
    """The arrays of a feature file (``src``: its name, prefixed to every message) as a checked :class:`Dataset`."""
    x = _features_in(features, src, "features")
    y = _labels_in(labels, src, "labels", x.shape[0], "features")
    xt = yt = None
    if (test_features is None) != (test_labels is None):
        have, miss = ("test_features", "test_labels") if test_labels is None else ("test_labels", "test_features")
        raise ValueError(f"{src}: has {have} but no {miss}; give both or neither")
    if test_features is not None:
        xt = _features_in(test_features, src, "test_features")
        if xt.shape[1] != x.shape[1]:
            raise ValueError(f"{src}: test_features has dimension {xt.shape[1]} but features has {x.shape[1]}")
        yt = _labels_in(test_labels, src, "test_labels", xt.shape[0], "test_features")
    cy = None if clean_labels is None else _labels_in(clean_labels, src, "clean_labels", y.size, "labels")
    cyt = None
    if test_clean_labels is not None:
        if yt is None:
            raise ValueError(f"{src}: has test_clean_labels but no test_labels")
        cyt = _labels_in(test_clean_labels, src, "test_clean_labels", yt.size, "test_labels")
    if num_classes is None:
        k = int(max(y.max(), yt.max() if yt is not None and yt.size else 0)) + 1
        missing = np.setdiff1d(np.arange(k), y) if k <= y.size else None  # k > N: a huge range is never built
        if missing is None or missing.size:
            what = (
                f"labels go up to {k - 1} but there are only {y.size} training labels, so some classes never occur"
                if missing is None
                else f"classes {V.short_list(missing)} never occur in the training labels"
            )
            raise ValueError(f"{src}: {what} (labels must be 0..K-1; re-index them or pass num_classes=)")
    else:
        try:
            k = V.check_size(num_classes, "num_classes", minimum=2)
        except (ValueError, TypeError) as exc:
            raise _fail(src, exc) from None
    if k < 2:
        raise ValueError(f"{src}: need at least K = 2 classes, the labels only contain class 0")
    for arr, what in ((y, "labels"), (yt, "test_labels"), (cy, "clean_labels"), (cyt, "test_clean_labels")):
        if arr is not None and arr.size and arr.max() >= k:
            raise ValueError(f"{src}: {what} must lie in [0, {k - 1}] for num_classes={k}; got a label {arr.max()}")
    return Dataset(x, y, k, xt, yt, name, cy, cyt)


def _check_magic(path: Path, magic: bytes, kind: str) -> None:
    with open(path, "rb") as fh:
        head = fh.read(len(magic))
    if head != magic:
        raise ValueError(f"{path}: not a {kind} file (wrong header: corrupt, or another format under this name)")


def _check_npy_header(fh: Any, size: int, where: str) -> None:
    """Refuse a ``.npy`` stream whose header declares other than its ``size`` bytes, or too much."""
    fmt = np.lib.format
    try:
        version = fmt.read_magic(fh)
        read = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
        shape, _, dtype = read(fh)
    except (ValueError, EOFError, OSError, zlib.error) as exc:
        raise ValueError(f"{where}: not a readable .npy array (truncated or corrupt?): {exc}") from None
    if dtype.hasobject:
        return
    declared = math.prod(shape) * dtype.itemsize  # Python ints: no overflow
    held = size - fh.tell()
    if declared != held:
        raise ValueError(
            f"{where}: the header declares shape {shape} of {dtype} ({declared} bytes) but the data are "
            f"{held} bytes (truncated or corrupt?)"
        )
    if declared > MAX_ARRAY_BYTES:
        raise ValueError(
            f"{where}: shape {shape} of {dtype} is {declared / 2**30:.1f} GiB, more than the "
            f"{MAX_ARRAY_BYTES / 2**30:g} GiB one array may hold (sdtheory.data.MAX_ARRAY_BYTES)"
        )


def _unreadable(path: Path, kind: str, exc: Exception) -> Exception:
    if "allow_pickle" in str(exc):
        return TypeError(f"{path}: holds an object (pickled) array; only numeric arrays are accepted")
    return ValueError(f"{path}: not a readable {kind} (truncated or corrupt?): {exc}")


def _read_npy(path: Path) -> np.ndarray:
    """An existing ``.npy`` file's array, header checked first."""
    _check_magic(path, b"\x93NUMPY", ".npy")
    with open(path, "rb") as fh:
        _check_npy_header(fh, os.fstat(fh.fileno()).st_size, str(path))
    try:
        return np.load(path, allow_pickle=False)
    except Exception as exc:  # ValueError, EOFError, OSError, UnpicklingError...
        raise _unreadable(path, ".npy file", exc) from None


_NPZ_KEYS = ("features", "labels", "test_features", "test_labels", "clean_labels", "test_clean_labels")


@float64
def load_features(path: str | os.PathLike, *, num_classes: Optional[int] = None, name: Optional[str] = None) -> Dataset:
    """Load and validate user features and labels (docs/real_data.md), read with ``allow_pickle=False``.

    ``path``: ``.npz`` with ``features`` ``(N, d)`` (real numeric), ``labels`` ``(N,)`` (integers ``0..K-1``),
    optionally ``test_features`` / ``test_labels`` (both or neither), ``clean_labels`` / ``test_clean_labels``
    (only to evaluate); or ``stem.npy`` + ``stem.labels.npy`` (and ``stem.test.npy`` + ``stem.test.labels.npy``).
    ``name``: default the file stem; ``num_classes``: default ``max(label) + 1`` (then every class must occur).

    Raises:
      FileNotFoundError: the file (or a required sibling ``.labels.npy``) is missing.
      ValueError, TypeError: a corrupt or truncated file, a header declaring other than the data or more
        than :data:`MAX_ARRAY_BYTES`, a missing member, a wrong dtype or shape, NaN/inf, labels out of range
        or not one per row, a test dimension mismatch; every message starts with the file.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike (a .npz or .npy file), got {type(path).__name__} {path!r}")
    if name is not None and not isinstance(name, str):
        raise TypeError(f"name must be a str or None, got {type(name).__name__} {name!r}")
    if not os.fspath(path):
        raise ValueError("path must name a .npz or .npy file, got an empty path")
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".npz", ".npy"):
        raise ValueError(f"{path}: unsupported file type {path.suffix!r}; use .npz or .npy (see sdtheory.data)")
    stem = path.name[: -len(path.suffix)]
    name = stem if name is None else name
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    if suffix == ".npz":
        _check_magic(path, b"PK", ".npz (zip)")
        try:  # every member to be read: its .npy header against its (uncompressed) size, before np.load allocates
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
                for key in _NPZ_KEYS:
                    member = key if key in names else key + ".npy"  # np.load's lookup
                    if member in names:
                        with zf.open(zf.getinfo(member)) as fh:
                            _check_npy_header(fh, zf.getinfo(member).file_size, f"{path}: member {member!r}")
        except (zipfile.BadZipFile, EOFError, OSError, KeyError, RuntimeError, zlib.error) as exc:
            raise _unreadable(path, ".npz archive", exc) from None
        try:
            with np.load(path, allow_pickle=False) as z:
                members = list(z.files)
                arrays = {key: z[key] for key in _NPZ_KEYS if key in members}
        except (ValueError, zipfile.BadZipFile, EOFError, OSError, KeyError) as exc:
            raise _unreadable(path, ".npz archive", exc) from None
        for key in ("features", "labels"):
            if key not in arrays:
                raise ValueError(
                    f"{path}: missing array {key!r} (members: {members}); expected 'features' (N, d) and 'labels' (N,)"
                )
        x, y, tx, ty, cy, cty = (arrays.get(key) for key in _NPZ_KEYS)
        return validate_dataset(x, y, tx, ty, num_classes, str(path), name, cy, cty)
    lab_path, tx_path, ty_path = (
        path.with_name(stem + tail) for tail in (".labels.npy", ".test.npy", ".test.labels.npy")
    )
    x = _read_npy(path)
    if not lab_path.is_file():
        raise FileNotFoundError(
            f"{path}: labels file {lab_path.name} not found next to it (paired .npy convention: stem.npy + "
            "stem.labels.npy)"
        )
    y = _read_npy(lab_path)
    tx, ty = (_read_npy(p) if p.is_file() else None for p in (tx_path, ty_path))
    if (tx is None) != (ty is None):
        have, miss = (tx_path, ty_path) if ty is None else (ty_path, tx_path)
        raise FileNotFoundError(f"{path}: found {have.name} but not {miss.name}; give both or neither")
    return validate_dataset(x, y, tx, ty, num_classes, str(path), name)


def _shuffled(key: jax.Array, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    """Non-empty 1-D integer labels ``>= 0`` (the splits stratify by them) and a permutation from ``key``."""
    key = V.check_key(key)
    y = V.as_array(labels, "labels")
    if y.ndim != 1 or y.dtype == np.bool_ or not np.issubdtype(y.dtype, np.integer):
        raise TypeError(f"labels must be a 1-D integer array, got dtype {y.dtype} and shape {y.shape}")
    if y.size == 0:
        raise ValueError("labels must not be empty")
    if y.min() < 0:
        raise ValueError(f"labels must be >= 0 (classes 0..K-1), got minimum {y.min()}")
    return y, np.argsort(np.asarray(jax.random.uniform(key, (y.size,), dtype=np.float64)), kind="stable")


def pow2_scale(a: np.ndarray, axis: int) -> np.ndarray:
    """Powers of two near the largest ``|a|`` along ``axis`` (1 where that is 0): dividing by them is exact,
    so ordinary data keeps its bits and data near overflow or underflow is brought to order 1."""
    peak = np.max(np.abs(a), axis=axis, keepdims=True) if a.size else np.ones([1] * a.ndim)
    _, exponent = np.frexp(peak)  # peak = m 2^exponent, 1/2 <= m < 1; 2^(exponent - 1) never overflows
    return np.where(peak > 0, np.ldexp(1.0, exponent - 1), 1.0)


@float64
def stratified_split(key: jax.Array, labels: Any, test_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Stratified split ``(train_idx, test_idx)``, both sorted: ``round(test_fraction * n_k)`` of class ``k``
    (clipped to ``[1, n_k - 1]``) go to the test side, the first of the class in one permutation from ``key``."""
    y, order = _shuffled(key, labels)
    tf = V.check_real(test_fraction, "test_fraction")
    if not (0.0 < tf < 1.0):
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction!r}")
    train, test = [], []
    for k in np.unique(y):
        idx = order[y[order] == k]  # class k in random order
        if idx.size < 2:
            raise ValueError(f"labels: class {int(k)} has {idx.size} instance(s); a stratified split needs >= 2")
        m = int(min(max(round(tf * idx.size), 1), idx.size - 1))
        test.append(idx[:m])
        train.append(idx[m:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


@float64
def stratified_subset(key: jax.Array, labels: Any, per_class: int) -> np.ndarray:
    """Sorted indices of ``min(per_class, n_k)`` random instances of every class."""
    per_class = V.check_size(per_class, "per_class", minimum=1)
    y, order = _shuffled(key, labels)
    out = [order[y[order] == k][:per_class] for k in np.unique(y)]
    return np.sort(np.concatenate(out))


@float64
def load_digits(*, key: Optional[jax.Array] = None, seed: int = 0, test_fraction: float = 0.25) -> Dataset:
    """The handwritten digits bundled with scikit-learn (1797 x 64, 10 classes; no download): raw pixels
    (0..16) and a :func:`stratified_split` from ``key`` (default ``jax.random.key(seed)``)."""
    try:
        from sklearn.datasets import load_digits as _sk_load_digits
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "load_digits needs scikit-learn: pip install 'sdtheory[data]' (or pip install scikit-learn)"
        ) from exc
    key = jax.random.key(V.check_size(seed, "seed", minimum=0, maximum=V.MAX_SEED)) if key is None else V.check_key(key)
    x, y = _sk_load_digits(return_X_y=True)
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.int64)
    tr, te = stratified_split(key, y, test_fraction)
    return Dataset(x[tr], y[tr], 10, x[te], y[te], "digits")


def block_dataset(
    *, key: jax.Array, num_classes: int, per_class: int, test_per_class: int, c: float, d: float, dim: int
) -> Dataset:
    """Block-model data: training and held-out points drawn together (shared class means) by
    :func:`sdtheory.block.sample_block_features`, whose expected Gram is the block Gram; ``d < c < 1``
    (for ``d < 0`` also ``d >= -c / (K - 1)``). Name ``"block(c=..., d=...)"``."""
    key = V.check_key(key)
    k = V.check_size(num_classes, "num_classes", minimum=2)
    n = V.check_size(per_class, "per_class", minimum=1)
    m = V.check_size(test_per_class, "test_per_class", minimum=1)
    c, d = V.check_cd(c, d, per_class=n, num_classes=k)
    dim = V.check_size(dim, "dim", minimum=1)
    y = np.repeat(np.arange(k, dtype=np.int64), n)
    yt = np.repeat(np.arange(k, dtype=np.int64), m)
    x = np.asarray(sample_block_features(key, np.concatenate([y, yt]), c=c, d=d, dim=dim, num_classes=k))
    return Dataset(x[: y.size], y, k, x[y.size :], yt, f"block(c={c:g}, d={d:g})")


def _check_pair(train: Any, test: Any) -> tuple:
    def one(a, what):
        V.check_features(a, what)
        return np.asarray(a, dtype=np.float64)

    x, xt = one(train, "train"), (None if test is None else one(test, "test"))
    if xt is not None and xt.shape[1] != x.shape[1]:
        raise ValueError(f"test has dimension {xt.shape[1]} but train has {x.shape[1]}")
    return x, xt


@float64
def standardize(train: Any, test: Any = None) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """``(train, test)`` with columns shifted and scaled by the training mean and (population) std; columns
    constant on the training set are only centred. Scale-safe (:func:`pow2_scale` per column first)."""
    x, xt = _check_pair(train, test)
    p = pow2_scale(x, axis=0)
    xs = x / p
    mu, sd = xs.mean(axis=0), xs.std(axis=0)
    varies = sd > 0
    scale = np.where(varies, sd, 1.0)

    def apply(a):  # constant columns are only centred, in their own units
        return np.where(varies, (a / p - mu) / scale, a - mu * p[0])

    return apply(x), (None if xt is None else apply(xt))


@float64
def random_relu_features(
    key: jax.Array, train: Any, num_features: int, test: Any = None
) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """``max(0, x W + b)`` with ``W ~ N(0, 1/d)`` ``(d, D)``, ``b ~ N(0, 1)`` from ``key`` (same key, same map)."""
    key = V.check_key(key)
    x, xt = _check_pair(train, test)
    dim = V.check_size(num_features, "num_features", minimum=1)
    kw, kb = jax.random.split(key)
    w = np.asarray(jax.random.normal(kw, (x.shape[1], dim), dtype=np.float64)) / np.sqrt(x.shape[1])
    b = np.asarray(jax.random.normal(kb, (dim,), dtype=np.float64))
    return np.maximum(x @ w + b, 0.0), (None if xt is None else np.maximum(xt @ w + b, 0.0))


@float64
def normalize_rows(train: Any, test: Any = None, *, center: bool = False) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """Optionally subtract the training mean, then scale every row to unit norm (scale-safe: rows divided
    by :func:`pow2_scale` first). A zero row is a ``ValueError``: without centring exactly zero; after
    centring, of norm at most ``1e-12`` times the largest training row norm before centring (zero up to the
    roundoff of the subtraction)."""
    center = V.check_bool(center, "center")
    x, xt = _check_pair(train, test)

    def scaled(a: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``a`` with rows divided by powers of two, their norms, and the log of the true norms."""
        p = pow2_scale(a, axis=1)
        a = a / p
        n = np.linalg.norm(a, axis=1)
        with np.errstate(divide="ignore"):
            return a, n, np.log(n) + np.log(p[:, 0])

    floor = -np.inf  # log of the largest norm that counts as zero
    if center:
        floor = np.log(1e-12) + float(np.max(scaled(x)[2]))
        x, xt = _centre(x, xt)

    def unit(a: np.ndarray, norms: np.ndarray, log_norms: np.ndarray, what: str) -> np.ndarray:
        tiny = (norms == 0) | (log_norms <= floor)
        if np.any(tiny):
            i = int(np.flatnonzero(tiny)[0])
            if not center:
                raise ValueError(f"{what} row {i} is zero; it cannot be normalised to unit norm")
            raise ValueError(
                f"{what} row {i} is zero after centring, up to roundoff (norm "
                f"{np.exp(log_norms[i]):.3g}, at most 1e-12 times the largest train row norm before "
                f"centring, {np.exp(floor) * 1e12:.3g}); it cannot be normalised to unit norm"
            )
        return a / norms[:, None]

    return unit(*scaled(x), "train"), (None if xt is None else unit(*scaled(xt), "test"))


@float64
def make_features(
    kind: str,
    train: Any,
    test: Any = None,
    *,
    key: Optional[jax.Array] = None,
    num_features: int = 1024,
    center: bool = True,
    normalize: bool = True,
) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """``(train_features, test_features)``: feature map ``kind`` (:data:`FEATURE_MAPS`; ``"relu"``: ``num_features``
    random ReLU features of the standardised inputs from ``key``) of ``train`` / ``test`` (optional), then
    centring by the training mean (``center``) and unit-norm rows (``normalize``: ``<x_i, x_i> = 1``)."""
    if not isinstance(kind, str) or kind not in FEATURE_MAPS:
        raise ValueError(f"unknown feature map kind={kind!r}; choose one of {FEATURE_MAPS}")
    if key is not None:
        V.check_key(key)
    V.check_size(num_features, "num_features", minimum=1)
    center = V.check_bool(center, "center")
    normalize = V.check_bool(normalize, "normalize")
    x, xt = _check_pair(train, test) if kind == "identity" else standardize(train, test)
    if kind == "relu":
        if key is None:
            raise ValueError("feature map 'relu' needs an explicit key= (jax.random.key(...))")
        x, xt = random_relu_features(key, x, num_features, xt)
    if normalize:
        return normalize_rows(x, xt, center=center)
    return _centre(x, xt) if center else (x, xt)


def _centre(x: np.ndarray, xt: Optional[np.ndarray]) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """``(x, xt)`` minus the training column means, scale-safe (same bits as ``x.mean(0)`` for ordinary data)."""
    p = pow2_scale(x, axis=0)
    mu = (x / p).mean(axis=0) * p[0]
    return x - mu, (None if xt is None else xt - mu)


class BlockStatistics(NamedTuple):
    """Class-pair means of ``<x_i, x_j>`` ``(K, K)`` (``i != j`` on the diagonal); ``c``: their diagonal mean,
    ``d``: off-diagonal mean, ``class_sizes`` ``(K,)``."""

    class_means: np.ndarray
    c: float
    d: float
    class_sizes: np.ndarray


@float64
def block_statistics(features: Any, labels: Any, num_classes: int) -> BlockStatistics:
    """The block model's ``c`` and ``d`` fitted to real features, without forming the Gram: class sums
    ``S = Y^T X`` give ``S S^T`` minus the squared norms on the diagonal, over the pair counts."""
    V.check_features(features)
    x = np.asarray(features, dtype=np.float64)
    k = V.check_size(num_classes, "num_classes", minimum=2)
    y = V.check_labels_for(labels, k, "labels", f"num_classes = {k}")
    V.check_same_n(x.shape[0], y.shape[0], "labels", "features")
    if 2 * k > y.size:
        raise ValueError(f"every class needs >= 2 instances, but num_classes = {k} and labels has only {y.size}")
    onehot = np.eye(k)[y]
    sizes = onehot.sum(axis=0)
    if np.any(sizes < 2):
        raise ValueError(
            f"labels: every class needs >= 2 instances, got class sizes {sizes.astype(int).tolist()} "
            f"for num_classes = {k}"
        )
    sums = onehot.T @ x  # (K, d) class sums
    totals = sums @ sums.T - np.diag(onehot.T @ np.einsum("nd,nd->n", x, x))  # sum over i != j of <x_i, x_j>
    means = totals / (np.outer(sizes, sizes) - np.diag(sizes))
    off = ~np.eye(k, dtype=bool)
    return BlockStatistics(means, float(np.mean(np.diag(means))), float(np.mean(means[off])), sizes.astype(np.int64))
