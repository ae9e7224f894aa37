r"""Real data: user feature files, the bundled handwritten digits, feature maps.

Everything here returns NumPy ``float64`` / ``int64`` arrays (data loading is
not part of the jitted math). Randomness (the train/test split, the random
feature map) goes through explicit ``jax.random`` keys: same key, same data.

Feature files (:func:`load_features`, written by :func:`sdtheory.io.save_features`)
-----------------------------------------------------------------------------------
``.npz`` (recommended)
    one archive with the arrays ``features`` ``(N, d)`` (any real numeric
    dtype) and ``labels`` ``(N,)`` (an integer dtype, values ``0 .. K-1``),
    and optionally ``test_features`` ``(M, d)`` with ``test_labels`` ``(M,)``
    (both or neither); for labels that are already noisy, optionally their
    clean versions ``clean_labels`` ``(N,)`` / ``test_clean_labels`` ``(M,)``
    (used only for evaluation). Other members are ignored.
``.npy`` (paired files)
    ``stem.npy`` holds the features ``(N, d)``; the labels are in the sibling
    file ``stem.labels.npy`` ``(N,)``. An optional held-out split lives in
    ``stem.test.npy`` and ``stem.test.labels.npy`` (both or neither).

Files are read with ``allow_pickle=False``: object arrays are refused. The
number of classes ``K`` is ``max(label) + 1`` over both splits unless given;
when it is inferred, every class ``0 .. K-1`` must occur in the training
labels (otherwise the labels are not contiguous -- pass ``num_classes=``).
Every ``.npy`` header (in an ``.npz``: of each member read) is checked before
any array is allocated: the declared shape and dtype must match the bytes that
hold the data and stay within :data:`MAX_ARRAY_BYTES`.
Every problem (missing or corrupt file, wrong dtype or shape, NaN/inf, labels
out of range or of the wrong length, test dimension mismatch) raises
``FileNotFoundError`` / ``ValueError`` / ``TypeError`` whose message starts
with the offending file name.

Feature maps (:func:`make_features`)
------------------------------------
0. ``"identity"``: the features as given (for user features such as network
   embeddings, which are already a representation).
1. ``"standardized"``: raw inputs, each column shifted and scaled by the
   *training* mean and standard deviation (columns that are constant on the
   training set, such as the always-blank border pixels of the digits, are
   only centred and so become 0).
2. ``"relu"``: standardised inputs ``z`` pushed through a fixed random ReLU
   layer ``max(0, z W + b)``, ``W ~ N(0, 1/d)`` ``(d, D)``, ``b ~ N(0, 1)``,
   drawn from an explicit key (random features of an arc-cosine-type kernel).

Then, as in the theory (docs/theory.md section 3: ``<x_i, x_i> = 1``), optionally
*centred* (subtract the training mean of the mapped features, applied to the
test points as well) and *row-normalised* to unit Euclidean norm, so the Gram
has unit diagonal and off-diagonal entries are cosine similarities. Centring
removes the common all-positive component that makes every pair of ReLU
features correlated (the ``d`` of the block model), leaving the class
structure (``c - d``) to carry the correlation.
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

#: Largest array a feature file may hold (bytes as stored, per array: 2 GiB). :func:`load_features`
#: reads every ``.npy`` header first and refuses a larger declaration before anything is allocated
#: (the solvers work on ``N x N`` or ``d x d`` matrices, far below this).
MAX_ARRAY_BYTES = 2 * 2**30


class Dataset(NamedTuple):
    """A labelled data set: training split and optional held-out split.

    Attributes:
      features: ``(N, d)`` float64.
      labels: ``(N,)`` int64, values in ``[0, num_classes)``.
      num_classes: ``K >= 2``.
      test_features: ``(M, d)`` float64 or ``None``.
      test_labels: ``(M,)`` int64 or ``None``.
      name: a short name (file stem or data set name).
      clean_labels, test_clean_labels: ``(N,)`` / ``(M,)`` int64 clean labels
        for evaluation when ``labels`` are noisy, or ``None``.
    """

    features: np.ndarray
    labels: np.ndarray
    num_classes: int
    test_features: Optional[np.ndarray]
    test_labels: Optional[np.ndarray]
    name: str
    clean_labels: Optional[np.ndarray] = None
    test_clean_labels: Optional[np.ndarray] = None


# --------------------------------------------------------------------------
# Validation of loaded arrays (messages prefixed with the file name)
# --------------------------------------------------------------------------


def _fail(src: str, exc: Exception) -> Exception:
    return type(exc)(f"{src}: {exc}")


def _check_feature_array(arr: Any, src: str, what: str) -> np.ndarray:
    try:
        arr = V.as_array(arr, what)
    except ValueError as exc:
        raise _fail(src, exc) from None
    if arr.dtype.names is not None:
        raise TypeError(
            f"{src}: {what} is a structured array (fields {arr.dtype.names}); expected a plain numeric (N, d) array"
        )
    if arr.dtype == np.bool_ or not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise TypeError(f"{src}: {what} must have a real numeric dtype (int or float), got {arr.dtype}")
    try:
        V.check_features(arr, what)
    except (ValueError, TypeError) as exc:
        raise _fail(src, exc) from None
    return arr.astype(np.float64)


def _check_label_array(arr: Any, src: str, what: str, n: int, n_what: str) -> np.ndarray:
    try:
        arr = V.as_array(arr, what)
    except ValueError as exc:
        raise _fail(src, exc) from None
    if arr.ndim != 1:
        raise ValueError(f"{src}: {what} must be a 1-D (N,) array of integer labels, got shape {arr.shape}")
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(
            f"{src}: {what} must have an integer dtype, got {arr.dtype} "
            f"(cast to int before saving if the values are whole numbers)"
        )
    if arr.shape[0] != n:
        raise ValueError(f"{src}: {what} has {arr.shape[0]} entries but {n_what} has {n} rows")
    if arr.size and arr.min() < 0:
        raise ValueError(f"{src}: {what} must be >= 0, got minimum {arr.min()}")
    return arr.astype(np.int64)


def validate_dataset(
    features, labels, test_features, test_labels, num_classes, src, name, clean_labels=None, test_clean_labels=None
) -> Dataset:
    x = _check_feature_array(features, src, "features")
    y = _check_label_array(labels, src, "labels", x.shape[0], "features")
    xt = yt = None
    if (test_features is None) != (test_labels is None):
        have, miss = ("test_features", "test_labels") if test_labels is None else ("test_labels", "test_features")
        raise ValueError(f"{src}: has {have} but no {miss}; give both or neither")
    if test_features is not None:
        xt = _check_feature_array(test_features, src, "test_features")
        if xt.shape[1] != x.shape[1]:
            raise ValueError(f"{src}: test_features has dimension {xt.shape[1]} but features has {x.shape[1]}")
        yt = _check_label_array(test_labels, src, "test_labels", xt.shape[0], "test_features")
    top = int(max(y.max(), yt.max() if yt is not None and yt.size else 0)) + 1
    if num_classes is None:
        k = top
        if k > y.size:
            raise ValueError(
                f"{src}: labels go up to {k - 1} but there are only {y.size} training labels, so some "
                f"classes never occur in them (labels must be 0..K-1; re-index them or pass "
                f"num_classes=)"
            )
        missing = np.setdiff1d(np.arange(k), y)
        if missing.size:
            raise ValueError(
                f"{src}: classes {V.short_list(missing)} never occur in the training labels "
                f"(labels must be 0..K-1; re-index them or pass num_classes=)"
            )
    else:
        try:
            k = V.check_size(num_classes, "num_classes", minimum=2)
        except (ValueError, TypeError) as exc:
            raise _fail(src, exc) from None
        for arr, what in ((y, "labels"), (yt, "test_labels")):
            if arr is not None and arr.size and arr.max() >= k:
                raise ValueError(f"{src}: {what} must lie in [0, {k - 1}] for num_classes={k}; got a label {arr.max()}")
    if k < 2:
        raise ValueError(f"{src}: need at least K = 2 classes, the labels only contain class 0")
    clean = []
    for arr, what, n_of in (
        (clean_labels, "clean_labels", "labels"),
        (test_clean_labels, "test_clean_labels", "test_labels"),
    ):
        if arr is not None:
            ref = y if n_of == "labels" else yt
            if ref is None:
                raise ValueError(f"{src}: has {what} but no {n_of}")
            arr = _check_label_array(arr, src, what, ref.size, n_of)
            if arr.size and arr.max() >= k:
                raise ValueError(f"{src}: {what} must lie in [0, {k - 1}]; got a label {arr.max()}")
        clean.append(arr)
    return Dataset(x, y, k, xt, yt, name, *clean)


def _check_magic(path: Path, magic: bytes, kind: str) -> None:
    with open(path, "rb") as fh:
        head = fh.read(len(magic))
    if head != magic:
        raise ValueError(
            f"{path}: not a {kind} file (wrong header: corrupt, or a different format saved under this name)"
        )


def _check_npy_header(fh: Any, size: int, where: str) -> None:
    """Refuse a ``.npy`` stream whose header declares more data than its ``size`` bytes hold, or too much.

    Reads only the header (``numpy.lib.format``), so a corrupt or hostile
    declaration (e.g. shape ``(10**11, 4)`` in a few hundred bytes) is a
    ``ValueError`` naming ``where`` instead of an allocation. Object dtypes are
    left to ``np.load`` (which refuses them without pickling).
    """
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


def _read_npy(path: Path) -> np.ndarray:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    _check_magic(path, b"\x93NUMPY", ".npy")
    with open(path, "rb") as fh:
        _check_npy_header(fh, os.fstat(fh.fileno()).st_size, str(path))
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise TypeError(f"{path}: holds an object (pickled) array; only numeric arrays are accepted") from None
        raise ValueError(f"{path}: not a readable .npy file (truncated or corrupt?): {exc}") from None
    except Exception as exc:  # EOFError, OSError, UnpicklingError...
        raise ValueError(f"{path}: not a readable .npy file (truncated or corrupt?): {exc}") from None


_NPZ_KEYS = ("features", "labels", "test_features", "test_labels", "clean_labels", "test_clean_labels")


@float64
def load_features(path: str | os.PathLike, *, num_classes: Optional[int] = None, name: Optional[str] = None) -> Dataset:
    """Load and validate user features and labels (``.npz`` or paired ``.npy``).

    See the module docstring for the file conventions. ``name`` defaults to
    the file stem. Returns a :class:`Dataset`.

    Raises:
      FileNotFoundError: the file (or a required sibling ``.labels.npy``) is
        missing.
      ValueError / TypeError: corrupt/truncated file, a ``.npy`` header that
        declares another size than the data hold or more than
        :data:`MAX_ARRAY_BYTES` (checked before reading), missing member, wrong
        dtype or shape, NaN/inf, labels out of range or not matching the
        number of rows, test dimension mismatch. Messages start with the file.
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
    if name is None:
        name = path.name[: -len(path.suffix)]
    if suffix == ".npz":
        if not path.is_file():
            raise FileNotFoundError(f"{path}: file not found")
        _check_magic(path, b"PK", ".npz (zip)")
        arrays = {}
        try:  # every member to be read: its .npy header against its (uncompressed) size, before np.load allocates
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
                for key in _NPZ_KEYS:
                    member = key if key in names else key + ".npy"  # np.load's lookup
                    if member in names:
                        info = zf.getinfo(member)
                        with zf.open(info) as fh:
                            _check_npy_header(fh, info.file_size, f"{path}: member {member!r}")
        except (zipfile.BadZipFile, EOFError, OSError, KeyError, RuntimeError, zlib.error) as exc:
            raise ValueError(f"{path}: not a readable .npz archive (truncated or corrupt?): {exc}") from None
        try:
            with np.load(path, allow_pickle=False) as z:
                members = list(z.files)
                for key in _NPZ_KEYS:
                    if key in members:
                        arrays[key] = z[key]
        except ValueError as exc:
            if "allow_pickle" in str(exc):
                raise TypeError(f"{path}: holds an object (pickled) array; only numeric arrays are accepted") from None
            raise ValueError(f"{path}: not a readable .npz archive (truncated or corrupt?): {exc}") from None
        except (zipfile.BadZipFile, EOFError, OSError, KeyError) as exc:
            raise ValueError(f"{path}: not a readable .npz archive (truncated or corrupt?): {exc}") from None
        for key in ("features", "labels"):
            if key not in arrays:
                raise ValueError(
                    f"{path}: missing array {key!r} (members: {members}); expected 'features' (N, d) and 'labels' (N,)"
                )
        return validate_dataset(
            arrays["features"],
            arrays["labels"],
            arrays.get("test_features"),
            arrays.get("test_labels"),
            num_classes,
            str(path),
            name,
            arrays.get("clean_labels"),
            arrays.get("test_clean_labels"),
        )
    stem = path.with_suffix("")
    lab_path = stem.with_name(stem.name + ".labels.npy")
    x = _read_npy(path)
    if not lab_path.is_file():
        raise FileNotFoundError(
            f"{path}: labels file {lab_path.name} not found next to it "
            f"(paired .npy convention: stem.npy + stem.labels.npy)"
        )
    y = _read_npy(lab_path)
    tx_path = stem.with_name(stem.name + ".test.npy")
    ty_path = stem.with_name(stem.name + ".test.labels.npy")
    tx = _read_npy(tx_path) if tx_path.is_file() else None
    ty = _read_npy(ty_path) if ty_path.is_file() else None
    if (tx is None) != (ty is None):
        have, miss = (tx_path, ty_path) if ty is None else (ty_path, tx_path)
        raise FileNotFoundError(f"{path}: found {have.name} but not {miss.name}; give both or neither")
    return validate_dataset(x, y, tx, ty, num_classes, str(path), name)


# --------------------------------------------------------------------------
# Splits
# --------------------------------------------------------------------------


def _key(key: Any, what: str) -> jax.Array:
    """``key`` validated as one ``jax.random`` key (``what``: the function, for the message)."""
    try:
        return V.check_key(key, "key")
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"{what}: {exc}") from None


def _split_labels(labels: Any) -> np.ndarray:
    """Non-empty 1-D integer labels ``>= 0`` (the splits stratify by them)."""
    y = V.as_array(labels, "labels")
    if y.ndim != 1 or y.dtype == np.bool_ or not np.issubdtype(y.dtype, np.integer):
        raise TypeError(f"labels must be a 1-D integer array, got dtype {y.dtype} and shape {y.shape}")
    if y.size == 0:
        raise ValueError("labels must not be empty")
    if y.min() < 0:
        raise ValueError(f"labels must be >= 0 (classes 0..K-1), got minimum {y.min()}")
    return y


def pow2_scale(a: np.ndarray, axis: int) -> np.ndarray:
    """Powers of two near the largest ``|a|`` along ``axis`` (kept; 1 where that is 0).

    Dividing by them is exact, so scaled statistics of ordinary data have the
    same bits as unscaled ones, and data near the overflow or underflow
    threshold (``1e200``, ``1e-170``) is brought to order 1 first.
    """
    peak = np.max(np.abs(a), axis=axis, keepdims=True) if a.size else np.ones([1] * a.ndim)
    _, exponent = np.frexp(peak)  # peak = m 2^exponent, 1/2 <= m < 1; 2^(exponent - 1) never overflows
    return np.where(peak > 0, np.ldexp(1.0, exponent - 1), 1.0)


def _shuffle(key: jax.Array, n: int) -> np.ndarray:
    """A random permutation of ``range(n)`` from ``key`` (argsort of uniforms)."""
    return np.argsort(np.asarray(jax.random.uniform(key, (n,), dtype=np.float64)), kind="stable")


@float64
def stratified_split(key: jax.Array, labels: Any, test_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic stratified split: ``(train_idx, test_idx)``, both sorted.

    Class ``k`` with ``n_k`` instances sends ``round(test_fraction * n_k)``
    of them (clipped to ``[1, n_k - 1]``) to the test side: the first ones
    of class ``k`` in one random permutation of all instances drawn from ``key``.
    """
    key = _key(key, "stratified_split")
    y = _split_labels(labels)
    tf = V.check_real(test_fraction, "test_fraction")
    if not (0.0 < tf < 1.0):
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction!r}")
    order = _shuffle(key, y.size)
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
    key = _key(key, "stratified_subset")
    per_class = V.check_size(per_class, "per_class", minimum=1)
    y = _split_labels(labels)
    order = _shuffle(key, y.size)
    out = [order[y[order] == k][:per_class] for k in np.unique(y)]
    return np.sort(np.concatenate(out))


@float64
def load_digits(*, key: Optional[jax.Array] = None, seed: int = 0, test_fraction: float = 0.25) -> Dataset:
    """The handwritten digits bundled with scikit-learn (1797 x 64, 10 classes).

    No download: the data ship inside scikit-learn (``pip install
    sdtheory[data]``). Raw pixel intensities (0..16) as float64; a stratified
    train/test split (:func:`stratified_split`) from ``key`` (default
    ``jax.random.key(seed)``). Apply a feature map with :func:`make_features`.
    """
    try:
        from sklearn.datasets import load_digits as _sk_load_digits
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "load_digits needs scikit-learn: pip install 'sdtheory[data]' (or pip install scikit-learn)"
        ) from exc
    if key is None:
        key = jax.random.key(V.check_size(seed, "seed", minimum=0, maximum=V.MAX_SEED))
    else:
        key = _key(key, "load_digits")
    x, y = _sk_load_digits(return_X_y=True)
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.int64)
    tr, te = stratified_split(key, y, test_fraction)
    return Dataset(x[tr], y[tr], 10, x[te], y[te], "digits")


def block_dataset(
    *,
    key: jax.Array,
    num_classes: int,
    per_class: int,
    test_per_class: int,
    c: float,
    d: float,
    dim: int,
) -> Dataset:
    """Synthetic data from the block model: Gaussian-mixture features whose expected Gram is the block Gram.

    Training and held-out points are drawn together by
    :func:`sdtheory.block.sample_block_features` (so they share the class
    means), ``per_class`` / ``test_per_class`` of each class, classes in
    blocks; ``d < c < 1``, for ``d < 0`` also ``d >= -c / (K - 1)`` (the
    sampler's class means, :func:`sdtheory.block.check_sampler_cd`). Name ``"block(c=..., d=...)"``.
    """
    key = _key(key, "block_dataset")
    k = V.check_size(num_classes, "num_classes", minimum=2)
    n = V.check_size(per_class, "per_class", minimum=1)
    m = V.check_size(test_per_class, "test_per_class", minimum=1)
    c, d = V.check_cd(c, d, per_class=n, num_classes=k)
    dim = V.check_size(dim, "dim", minimum=1)
    y = np.repeat(np.arange(k, dtype=np.int64), n)
    yt = np.repeat(np.arange(k, dtype=np.int64), m)
    x = np.asarray(sample_block_features(key, np.concatenate([y, yt]), c=c, d=d, dim=dim, num_classes=k))
    return Dataset(x[: y.size], y, k, x[y.size :], yt, f"block(c={c:g}, d={d:g})")


# --------------------------------------------------------------------------
# Feature maps
# --------------------------------------------------------------------------


def _check_pair(train, test):
    x = V.check_real_array(train, "train")
    V.check_features(x, "train")
    x = x.astype(np.float64)
    xt = None
    if test is not None:
        xt = V.check_real_array(test, "test")
        V.check_features(xt, "test")
        if xt.shape[1] != x.shape[1]:
            raise ValueError(f"test has dimension {xt.shape[1]} but train has {x.shape[1]}")
        xt = xt.astype(np.float64)
    return x, xt


@float64
def standardize(train: Any, test: Any = None) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """Columns shifted/scaled by the training mean and (population) std.

    Columns with zero training std are only centred. Returns ``(train, test)``
    (``test`` is ``None`` if not given). Scale-safe: each column is first
    divided by a power of two near its largest training ``|value|`` (exact,
    so ordinary data gives the same bits), so columns of order ``1e200`` or
    ``1e-170`` are standardised like any other.
    """
    x, xt = _check_pair(train, test)
    p = pow2_scale(x, axis=0)
    xs = x / p
    mu = xs.mean(axis=0)
    sd = xs.std(axis=0)
    varies = sd > 0
    scale = np.where(varies, sd, 1.0)

    def apply(a):  # constant columns are only centred, in their own units
        return np.where(varies, (a / p - mu) / scale, a - mu * p[0])

    return apply(x), (None if xt is None else apply(xt))


@float64
def random_relu_features(
    key: jax.Array, train: Any, num_features: int, test: Any = None
) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """``max(0, x W + b)`` with ``W ~ N(0, 1/d)`` ``(d, D)``, ``b ~ N(0, 1)``, from ``key``.

    The same key gives the same ``W, b`` and so the same features.
    """
    key = _key(key, "random_relu_features")
    x, xt = _check_pair(train, test)
    dim = V.check_size(num_features, "num_features", minimum=1)
    kw, kb = jax.random.split(key)
    w = np.asarray(jax.random.normal(kw, (x.shape[1], dim), dtype=np.float64)) / np.sqrt(x.shape[1])
    b = np.asarray(jax.random.normal(kb, (dim,), dtype=np.float64))
    return np.maximum(x @ w + b, 0.0), (None if xt is None else np.maximum(xt @ w + b, 0.0))


@float64
def normalize_rows(train: Any, test: Any = None, *, center: bool = False) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """Optionally subtract the training mean, then scale every row to unit norm.

    A row that is zero cannot be normalised: ``ValueError``. Without
    centring that means exactly zero (a row of norm ``1e-13`` is normalised
    like any other). After centring, a row whose norm is at most ``1e-12``
    times the largest training row norm *before* centring is zero up to the
    roundoff of the subtraction, and is refused too. Scale-safe: rows are
    divided by a power of two near their largest ``|entry|`` before the norm
    is taken (exact, so ordinary rows give the same bits as ``x / ||x||``).
    """
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
        mu = _column_mean(x)
        x = x - mu
        xt = None if xt is None else xt - mu

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
    """Apply a feature map and the theory's normalisation (see the module docstring).

    Args:
      kind: ``"identity"`` (as given), ``"standardized"`` or ``"relu"``
        (random ReLU features of the standardised inputs; needs ``key``).
      train, test: ``(N, d)`` / ``(M, d)`` raw inputs (``test`` optional).
      key: ``jax.random`` key for ``"relu"``.
      num_features: ``D`` for ``"relu"``.
      center: subtract the training mean of the mapped features first.
      normalize: scale rows to unit norm (the theory's ``<x_i, x_i> = 1``).

    Returns:
      ``(train_features, test_features)``.
    """
    if not isinstance(kind, str) or kind not in FEATURE_MAPS:
        raise ValueError(f"unknown feature map kind={kind!r}; choose one of {FEATURE_MAPS}")
    if key is not None:
        _key(key, "make_features")
    V.check_size(num_features, "num_features", minimum=1)
    center = V.check_bool(center, "center")
    normalize = V.check_bool(normalize, "normalize")
    if kind == "identity":
        x, xt = _check_pair(train, test)
    else:
        x, xt = standardize(train, test)
    if kind == "relu":
        if key is None:
            raise ValueError("feature map 'relu' needs an explicit key= (jax.random.key(...))")
        x, xt = random_relu_features(key, x, num_features, xt)
    if normalize:
        return normalize_rows(x, xt, center=center)
    if center:
        mu = _column_mean(x)
        return x - mu, (None if xt is None else xt - mu)
    return x, xt


def _column_mean(x: np.ndarray) -> np.ndarray:
    """Training column means, scale-safe (same bits as ``x.mean(0)`` for ordinary data)."""
    p = pow2_scale(x, axis=0)
    return (x / p).mean(axis=0) * p[0]


# --------------------------------------------------------------------------
# Diagnostics: how block-like is a real Gram?
# --------------------------------------------------------------------------


class BlockStatistics(NamedTuple):
    """Mean feature correlations by class pair, computed without forming the Gram.

    Attributes:
      class_means: ``(K, K)``: entry ``(k, l)`` is the mean of ``<x_i, x_j>``
        over ``i`` in class ``k``, ``j`` in class ``l`` (``i != j`` on the
        diagonal).
      c: mean of the diagonal of ``class_means`` (within-class correlation).
      d: mean of the off-diagonal entries (between-class correlation).
      class_sizes: ``(K,)``.
    """

    class_means: np.ndarray
    c: float
    d: float
    class_sizes: np.ndarray


@float64
def block_statistics(features: Any, labels: Any, num_classes: int) -> BlockStatistics:
    """The block model's ``c`` and ``d`` fitted to real features (class-pair means of ``<x_i, x_j>``)."""
    x = V.check_real_array(features, "features")
    V.check_features(x)
    x = x.astype(np.float64)
    k = V.check_size(num_classes, "num_classes", minimum=2)
    y = V.check_labels_for(labels, k, "labels", f"num_classes = {k}")
    V.check_same_n(x.shape[0], y.shape[0], "labels", "features")
    if 2 * k > y.size:
        raise ValueError(f"every class needs >= 2 instances, but num_classes = {k} and labels has only {y.size}")
    onehot = np.zeros((y.size, k))
    onehot[np.arange(y.size), y] = 1.0
    sizes = onehot.sum(axis=0)
    if np.any(sizes < 2):
        raise ValueError(f"every class needs >= 2 instances, got class sizes {sizes.astype(int).tolist()}")
    sums = onehot.T @ x  # (K, d) class sums
    totals = sums @ sums.T  # sum over i in k, j in l of <x_i, x_j>
    self_sq = onehot.T @ np.einsum("nd,nd->n", x, x)
    pairs = np.outer(sizes, sizes) - np.diag(sizes)
    totals = totals - np.diag(self_sq)
    means = totals / pairs
    off = ~np.eye(k, dtype=bool)
    return BlockStatistics(means, float(np.mean(np.diag(means))), float(np.mean(means[off])), sizes.astype(np.int64))
