r"""Label noise: corruption matrices, sampling noisy labels, empirical fractions (docs/theorems.md section 2).

A corruption matrix ``C`` is ``K x K`` and row-stochastic: ``C[k, l] = P(given label l | true class k)``. Families
(:data:`KINDS`): ``"symmetric"``, ``"asymmetric"`` (SelfPLL's ``asym``), ``"pair"`` and ``"cc"`` (confusable classes:
a label moves uniformly to the other classes of its cluster; a class alone in its cluster keeps its label). Every
family is row-stochastic exactly for ``0 <= eta <= 1``.

Every array function has a pure ``jnp`` core (``*_core``, no validation, ``jit``/``vmap``-able over ``eta``, keys,
matrices); the public functions are traceable too, except :func:`confusable_clusters` (host clustering).
"""

from __future__ import annotations

from functools import partial
from typing import Any, Optional

import jax
from jax.typing import ArrayLike
import jax.numpy as jnp
import numpy as np

from . import _validation as V
from ._x64 import float64
from .data import pow2_scale

__all__ = [
    "KINDS",
    "canonical_kind",
    "check_clusters",
    "condition_threshold",
    "confusable_clusters",
    "corruption_matrix",
    "corruption_matrix_core",
    "empirical_fractions",
    "empirical_fractions_core",
    "exact_counts",
    "max_eta",
    "sample_labels",
    "sample_labels_exact_core",
    "sample_labels_iid_core",
    "validate_corruption_matrix",
]

KINDS = ("symmetric", "asymmetric", "pair", "cc")
_ALIASES = {"sym": "symmetric", "asym": "asymmetric", "pairflip": "pair", "pair_flip": "pair"}


def canonical_kind(kind: Any, name: str = "kind") -> str:
    """Canonical name of a corruption family (``"sym"``: ``"symmetric"``, ...); messages call the argument ``name``."""
    if not isinstance(kind, str):
        raise TypeError(f"{name} must be a string, one of {KINDS}, got {kind!r}")
    k = _ALIASES.get(kind.lower(), kind.lower())
    if k not in KINDS:
        raise ValueError(
            f"unknown corruption kind {kind!r} for {name}; known kinds: {KINDS} (aliases: {sorted(_ALIASES)})"
        )
    return k


def _clusters_for(kind: str, clusters: Any, k: int, *, required: bool = True):
    """Cluster ids for kind ``"cc"`` (validated), ``None`` otherwise; clusters given for another kind are refused."""
    if kind != "cc" and clusters is not None:
        raise ValueError(f"clusters= is only used by kind 'cc', not {kind!r}")
    return check_clusters(clusters, k) if kind == "cc" and (required or clusters is not None) else None


@float64
def max_eta(kind: str, num_classes: int, *, clusters: Any = None) -> float:
    """Largest ``eta`` for which ``corruption_matrix(kind, ...)`` is row-stochastic: 1 for every kind (each
    row puts ``1 - eta`` on the diagonal). ``clusters`` is validated as in :func:`corruption_matrix`."""
    kind = canonical_kind(kind)
    k = V.check_size(num_classes, "num_classes", minimum=2)
    _clusters_for(kind, clusters, k, required=False)  # validated when given; refused for other kinds
    return 1.0


@float64
def condition_threshold(kind: str, num_classes: int, *, clusters: Any = None) -> float:
    """Supremum of the ``eta`` at which ``C`` satisfies the corruption condition ``C_kk > C_kl``.

    ``(K-1)/K`` (symmetric), ``K/(K+2)`` (asymmetric), ``1/2`` (pair), ``(m-1)/m`` (cc, smallest cluster size
    ``m >= 2``; 1 if all are singletons). At the threshold a wrong label ties the true one, so the condition fails
    there. ``clusters`` is required for ``"cc"`` and refused otherwise.
    """
    kind = canonical_kind(kind)
    k = V.check_size(num_classes, "num_classes", minimum=2)
    ids = _clusters_for(kind, clusters, k)
    if kind != "cc":
        return {"symmetric": (k - 1) / k, "asymmetric": k / (k + 2), "pair": 0.5}[kind]
    m = min((int(s) for s in np.bincount(ids) if s >= 2), default=None)  # the smallest cluster of 2 or more
    return 1.0 if m is None else (m - 1) / m


def check_clusters(clusters: Any, num_classes: int) -> np.ndarray:
    """Normalise ``clusters`` to a ``(K,)`` int array of cluster ids ``0..M-1``: from ``K`` cluster ids (one
    per class) or a sequence of groups (lists of class indices) partitioning ``{0, ..., K-1}``."""
    if clusters is None:
        raise ValueError("kind 'cc' needs clusters= (a partition of the classes into groups of confusable classes)")
    if V.is_tracer(clusters):
        raise TypeError("clusters must be concrete (a Python/NumPy partition), not a traced value")
    k = num_classes
    if isinstance(clusters, (str, bytes, dict)):
        raise TypeError(
            f"clusters must be K integer cluster ids or a sequence of groups of class indices, "
            f"got {type(clusters).__name__} {clusters!r}"
        )
    try:
        arr = np.asarray(clusters)
    except (ValueError, TypeError, OverflowError):  # ragged: groups of different sizes
        arr = None
    # Form 1: a flat array of K cluster ids.
    if (
        arr is not None
        and arr.ndim == 1
        and (arr.dtype != object or not any(isinstance(g, (list, tuple, np.ndarray, range)) for g in arr))
    ):
        if arr.size == 0:
            raise ValueError(f"clusters must not be empty: pass K = {k} cluster ids or groups covering 0..{k - 1}")
        if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
            raise TypeError(
                f"clusters must be integer cluster ids (one per class, int64), got dtype {arr.dtype}: "
                f"{V.short_list(arr)}"
            )
        if arr.size != k:
            raise ValueError(
                f"clusters has {arr.size} cluster ids but there are num_classes = K = {k} classes; pass "
                f"one id per class, or a list of groups (lists of class indices) covering 0..{k - 1}"
            )
        if np.any(arr < 0):
            raise ValueError(f"clusters ids must be >= 0, got {V.short_list(arr)}")
        _, ids = np.unique(arr, return_inverse=True)
        return ids.reshape(-1).astype(np.int64)
    # Form 2: a sequence of groups.
    try:
        items = list(clusters)
    except TypeError:
        raise TypeError(
            f"clusters must be K cluster ids or a sequence of class groups, got {type(clusters).__name__} {clusters!r}"
        ) from None
    ids = -np.ones(k, dtype=np.int64)
    for gi, g in enumerate(items):
        if isinstance(g, (str, bytes)):
            raise TypeError(f"clusters group {gi} must be a list of class indices, got {g!r}")
        g = V.as_array(g, f"clusters group {gi}").ravel().tolist()
        if len(g) == 0:
            raise ValueError(f"clusters must not contain an empty group (group {gi})")
        for c in g:
            if isinstance(c, (bool, np.bool_)) or not isinstance(c, (int, np.integer)):
                raise TypeError(f"clusters group {gi} contains a non-integer class {c!r}")
            c = int(c)
            if c < 0 or c >= k:
                raise ValueError(f"clusters group {gi} contains class {c}, outside [0, {k - 1}] (num_classes = {k})")
            if ids[c] != -1:
                raise ValueError(
                    f"clusters do not partition the classes: class {c} appears in groups {ids[c]} and {gi}"
                )
            ids[c] = gi
    missing = np.flatnonzero(ids < 0)
    if missing.size:
        raise ValueError(
            f"clusters do not partition the classes: classes {V.short_list(missing)} are in no group "
            f"(num_classes = K = {k}; pass K cluster ids or groups covering 0..{k - 1})"
        )
    return ids


@partial(jax.jit, static_argnums=(0, 1))
def corruption_matrix_core(
    kind: str, num_classes: int, eta: jax.Array, cluster_ids: Optional[jax.Array] = None
) -> jax.Array:
    """Pure core of :func:`corruption_matrix` (no validation; ``kind``/``num_classes`` static; ``eta`` may be
    traced; ``cluster_ids`` ``(K,)`` for kind ``"cc"``)."""
    k = num_classes
    eta = jnp.asarray(eta, dtype=float)
    eye = jnp.eye(k)
    nxt = jnp.roll(eye, 1, axis=1)  # nxt[k, (k+1) % K] = 1
    if kind == "symmetric":
        return (1.0 - eta) * eye + eta / (k - 1) * (1.0 - eye)
    if kind == "asymmetric":
        return (1.0 - eta) * eye + eta / k * (1.0 - eye) + eta / k * nxt
    if kind == "pair":
        return (1.0 - eta) * eye + eta * nxt
    if kind == "cc":
        ids = jnp.asarray(cluster_ids)
        same = (ids[:, None] == ids[None, :]).astype(float)
        others = same - eye  # same cluster, other class
        m = others.sum(axis=1, keepdims=True)
        moved = jnp.where(m > 0, eta * others / jnp.maximum(m, 1.0), 0.0)
        stay = jnp.where(m[:, 0] > 0, 1.0 - eta, 1.0)
        return stay[:, None] * eye + moved
    raise ValueError(f"unknown corruption kind {kind!r}")


def _check_eta(eta: Any, kind: str) -> None:
    if V.is_tracer(eta):
        if np.ndim(eta) != 0:
            raise ValueError(
                f"eta must be a scalar (vmap over a grid of rates), got a traced value of shape {np.shape(eta)}"
            )
        return
    v = V.check_real(eta, "eta (noise rate)", minimum=0.0)
    if v > 1:
        raise ValueError(
            f"eta = {v} exceeds the maximum 1 for kind {kind!r}: the diagonal 1 - eta of the "
            "corruption matrix would be negative, so it would not be a row-stochastic matrix"
        )


@float64
def corruption_matrix(kind: str, num_classes: int, eta: Any, *, clusters: Any = None) -> jax.Array:
    """The ``(K, K)`` corruption matrix ``C[k, l] = P(given l | true k)`` of a noise family.

    Args:
      kind: ``"symmetric"``, ``"asymmetric"``, ``"pair"`` or ``"cc"`` (aliases ``"sym"``, ``"asym"``, ...).
      num_classes: ``K >= 2``.
      eta: noise rate in ``[0, 1]``; may be traced (``jax.vmap`` over ``eta``), then its value is not checked.
      clusters: ``"cc"`` only: ``K`` cluster ids or groups partitioning ``0..K-1``.

    Raises ``ValueError`` for an unknown kind, ``eta`` outside ``[0, 1]``,
    clusters that do not partition the classes or are given for another kind.
    """
    kind = canonical_kind(kind)
    k = V.check_size(num_classes, "num_classes", minimum=2)
    _check_eta(eta, kind)
    ids = _clusters_for(kind, clusters, k)
    return corruption_matrix_core(kind, k, eta, None if ids is None else jnp.asarray(ids))


@float64
def validate_corruption_matrix(C: Any, *, atol: float = 1e-8, name: str = "C") -> np.ndarray:
    """Check a user corruption matrix: square ``(K, K)``, ``K >= 2``, real, finite, non-negative, rows summing
    to 1 within ``atol`` (``>= 0``); a float NumPy array. ``name``: the matrix in the messages."""
    atol = V.check_real(atol, "atol", minimum=0.0)
    what = f"{name} (corruption matrix)"
    shape = V.shape_of(C, name)
    if len(shape) != 2 or shape[0] != shape[1]:
        raise ValueError(f"{what} must be square (K, K), got shape {tuple(shape)}")
    if shape[0] < 2:
        raise ValueError(f"{what} must have K >= 2 classes, got K = {shape[0]}")
    if V.is_tracer(C):
        return C
    arr = V.check_real_array(C, name).astype(float)
    V.check_stochastic_rows(arr, name, atol=atol, what=what)
    return arr


def _complete_linkage(dist: np.ndarray, num_clusters: Optional[int], threshold_ratio: float) -> np.ndarray:
    """Complete-linkage agglomerative clustering of a ``(K, K)`` distance matrix into ``num_clusters``, or
    (``None``) cut at ``threshold_ratio`` times the final merge height; ties merge the lowest indices first."""
    k = dist.shape[0]
    merges, heights = [], []
    d = dist.astype(float).copy()
    np.fill_diagonal(d, np.inf)
    active = list(range(k))
    while len(active) > 1:  # the full dendrogram (only the active rows and columns of d are read), then the cut
        ia, ib = divmod(int(np.argmin(d[np.ix_(active, active)])), len(active))
        a, b = active[min(ia, ib)], active[max(ia, ib)]
        merges.append((a, b))
        heights.append(float(d[a, b]))
        d[a, :] = np.maximum(d[a, :], d[b, :])  # complete linkage: the merged cluster keeps index a
        d[:, a] = d[a, :]
        active.remove(b)
    if num_clusters is None:
        num_clusters = k - int(np.sum(np.asarray(heights) <= threshold_ratio * max(heights)))
    roots = np.arange(k)  # each class's cluster, named by its smallest class (a < b in every merge)
    for a, b in merges[: k - num_clusters]:
        roots[roots == b] = a
    _, ids = np.unique(roots, return_inverse=True)
    return ids.astype(np.int64)


@float64
def confusable_clusters(
    class_means_or_features: Any,
    labels: ArrayLike | None = None,
    num_clusters: Optional[int] = None,
    *,
    threshold_ratio: float = 0.8,
) -> np.ndarray:
    """Group classes whose features are similar (candidates for ``"cc"`` noise); docs/theorems.md section 2.

    Distance ``1 - s_kl``, ``s_kl`` the mean cosine similarity of instances of classes ``k`` and ``l``; complete linkage
    into ``num_clusters`` groups, or (``None``) cut at ``threshold_ratio`` of the top merge height (SelfPLL's rule).

    Args:
      class_means_or_features: ``(K, d)`` class means (``labels=None``) or
        ``(N, d)`` instance features with ``labels`` ``(N,)`` in ``[0, K)``.
      labels: true labels of the instances, or None.
      num_clusters: number of clusters in ``[1, K]``, or None for the cut rule.

    Returns ``(K,)`` int cluster ids ``0..M-1`` (pass as ``clusters=``).
    """
    name = "class_means_or_features"
    for arg, value in ((name, class_means_or_features), ("labels", labels)):
        if V.is_tracer(value):
            raise TypeError(
                f"{arg} is a traced value (inside jax.jit/vmap/grad): sdtheory.noise.confusable_clusters clusters the "
                "classes on the host (NumPy) and needs concrete values; call it once per feature set, outside "
                "the transformation"
            )
    x = V.check_real_array(class_means_or_features, name)
    V.check_features(x, name)
    x = x.astype(float)
    # unit rows, scale-safe: each row is first divided by a power of two near its largest |entry|
    # (exact, so ordinary rows give the same bits as x / ||x||)
    xs = x / pow2_scale(x, axis=1)
    norms = np.linalg.norm(xs, axis=1, keepdims=True)
    if np.any(norms == 0):
        raise ValueError(
            f"{name} has an all-zero row (row {int(np.flatnonzero(norms[:, 0] == 0)[0])}); "
            "cosine similarity is undefined"
        )
    xn = xs / norms
    if labels is not None:
        lab = V.check_labels(labels, V.MAX_COUNT, "labels")
        V.check_same_n(x.shape[0], lab.shape[0], "labels", name)
        k = int(lab.max()) + 1
        if k > lab.size:
            raise ValueError(
                f"labels must use every class 0..K-1 (K = max label + 1 = {k}), but there are only {lab.size} instances"
            )
        counts = np.bincount(lab, minlength=k)
        if np.any(counts == 0):
            raise ValueError(
                f"labels must use every class 0..{k - 1} at least once; empty: "
                f"{V.short_list(np.flatnonzero(counts == 0))}"
            )
        means = np.zeros((k, x.shape[1]))
        np.add.at(means, lab, xn)
        means /= counts[:, None]
        sim = means @ means.T
    else:
        sim = xn @ xn.T
    k = sim.shape[0]
    if k < 2:
        what = "labels" if labels is not None else f"{name} (one row per class)"
        raise ValueError(f"{what} must describe K >= 2 classes, got {k}")
    threshold_ratio = V.check_real(threshold_ratio, "threshold_ratio", minimum=0.0, maximum=1.0)
    if num_clusters is not None:
        num_clusters = V.check_int(num_clusters, "num_clusters", minimum=1)
        if num_clusters > k:
            raise ValueError(f"num_clusters must be <= K = {k}, got {num_clusters}")
    return _complete_linkage(1.0 - sim, num_clusters, threshold_ratio)


@jax.jit
def _largest_remainder_counts(sizes: jax.Array, C: jax.Array) -> jax.Array:
    """``(K, K)`` integer counts with row sums ``sizes[k]``, the largest-remainder rounding of
    ``sizes[k] C[k, l]`` (ties to the lower label; products within ``1e-9`` of an integer snapped first)."""
    x = sizes[:, None] * C
    near = jnp.round(x)
    x = jnp.where(jnp.abs(x - near) <= 1e-9 * jnp.maximum(1.0, sizes[:, None]), near, x)
    base = jnp.floor(x)
    frac = x - base
    left = sizes - base.sum(axis=1)  # (K,) leftover units, integer-valued
    order = jnp.argsort(-frac, axis=1, stable=True)  # largest fraction first, ties low index
    rank = jnp.argsort(order, axis=1)  # rank of each entry in that order
    extra = (rank < left[:, None]).astype(x.dtype)
    return (base + extra).astype(jnp.int32)


def _labels_and_matrix(true_labels: Any, C: Any):
    """Validated ``true_labels`` (int32, in ``[0, K)``) and corruption matrix ``C`` (float)."""
    C = validate_corruption_matrix(C)
    k = np.shape(C)[0]
    lab = V.check_labels_for(true_labels, k, "true_labels", f"K = {k}, the size of C")
    return jnp.asarray(lab, dtype=jnp.int32), jnp.asarray(C, dtype=float)


@float64
def exact_counts(true_labels: ArrayLike, C: Any) -> np.ndarray:
    """The per-class label counts ``m[k, l]`` that ``sample_labels(..., exact=True)`` realises."""
    lab, C = _labels_and_matrix(true_labels, C)
    return _largest_remainder_counts(jnp.bincount(lab, length=C.shape[0]).astype(float), C)


@jax.jit
def sample_labels_iid_core(key: jax.Array, true_labels: jax.Array, C: jax.Array) -> jax.Array:
    """Independent draws ``given_i ~ C[true_i, :]`` by inverse CDF (no validation)."""
    u = jax.random.uniform(key, true_labels.shape, dtype=C.dtype)
    cum = jnp.cumsum(C, axis=1)[true_labels, :-1]  # (N, K-1)
    return jnp.sum(u[:, None] >= cum, axis=1).astype(jnp.int32)


@jax.jit
def sample_labels_exact_core(key: jax.Array, true_labels: jax.Array, C: jax.Array) -> jax.Array:
    """Exact-count sampling (no validation): in class ``k`` exactly ``m[k, l]`` (:func:`exact_counts`)
    instances get label ``l``, assigned in a uniformly random order within the class."""
    k = C.shape[0]
    n = true_labels.shape[0]
    sizes = jnp.bincount(true_labels, length=k).astype(C.dtype)
    counts = _largest_remainder_counts(sizes, C)  # (K, K)
    u = jax.random.uniform(key, (n,), dtype=C.dtype)
    # Sort by (class, u): position within class is the random rank.
    order = jnp.lexsort((u, true_labels))
    pos = jnp.empty((n,), dtype=jnp.int32).at[order].set(jnp.arange(n, dtype=jnp.int32))
    starts = jnp.concatenate([jnp.zeros((1,), jnp.int32), jnp.cumsum(sizes.astype(jnp.int32))[:-1]])
    rank = pos - starts[true_labels]
    cum = jnp.cumsum(counts, axis=1)[true_labels, :-1]  # (N, K-1)
    return jnp.sum(rank[:, None] >= cum, axis=1).astype(jnp.int32)


@float64
def sample_labels(key: jax.Array, true_labels: ArrayLike, C: ArrayLike, *, exact: bool = False) -> jax.Array:
    """Noisy labels ``(N,)`` drawn from the corruption matrix ``C``.

    Args:
      key: a ``jax.random`` key. Same key, same labels.
      true_labels: ``(N,)`` ints in ``[0, K)``.
      C: ``(K, K)`` row-stochastic corruption matrix (validated unless traced).
      exact: False: i.i.d. ``given_i ~ Categorical(C[true_i])``. True: in class ``k`` exactly ``m[k, l]`` instances
        get label ``l`` (the largest-remainder rounding of ``n_k C[k, l]``, :func:`exact_counts`), chosen uniformly.

    Works under ``jax.vmap`` over ``key`` and ``C``.
    """
    exact = V.check_bool(exact, "exact")
    V.check_key(key, "key")
    lab, C = _labels_and_matrix(true_labels, C)
    return (sample_labels_exact_core if exact else sample_labels_iid_core)(key, lab, C)


@partial(jax.jit, static_argnums=(2,))
def empirical_fractions_core(true_labels: jax.Array, given_labels: jax.Array, num_classes: int) -> jax.Array:
    """``f[k, l]`` = fraction of class-``k`` instances whose given label is ``l`` (no validation; an empty
    class gets an all-zero row)."""
    k = num_classes
    idx = true_labels * k + given_labels
    counts = jnp.bincount(idx, length=k * k).reshape(k, k).astype(float)
    sizes = counts.sum(axis=1, keepdims=True)
    return counts / jnp.maximum(sizes, 1.0)


@float64
def empirical_fractions(true_labels: ArrayLike, given_labels: ArrayLike, num_classes: int) -> jax.Array:
    """Empirical corruption fractions ``f_k(l)`` (``(K, K)``, row-stochastic): the fraction of true class
    ``k`` with given label ``l``. Every class must have at least one instance."""
    k = V.check_size(num_classes, "num_classes", minimum=2)
    t = V.check_labels_for(true_labels, k, "true_labels", f"num_classes = {k}")
    g = V.check_labels_for(given_labels, k, "given_labels", f"num_classes = {k}")
    V.check_same_n(np.shape(t)[0], np.shape(g)[0], "given_labels", "true_labels")
    if not V.is_tracer(t):
        if np.shape(t)[0] < k:
            raise ValueError(
                f"true_labels must contain every class 0..{k - 1} (empirical fractions divide by the "
                f"class sizes), but num_classes = {k} exceeds the {np.shape(t)[0]} instances"
            )
        sizes = np.bincount(np.asarray(t), minlength=k)
        if np.any(sizes == 0):
            raise ValueError(
                f"true_labels must contain every class 0..{k - 1} of num_classes = {k} (empirical fractions "
                f"divide by the class sizes); empty classes: {V.short_list(np.flatnonzero(sizes == 0))}"
            )
    return empirical_fractions_core(jnp.asarray(t), jnp.asarray(g), k)
