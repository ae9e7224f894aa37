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


def _check_class_sizes(class_sizes: Any) -> np.ndarray:
    """``K >= 2`` class sizes ``>= 1`` whose total ``N`` is at most :data:`sdtheory._validation.MAX_COUNT`."""
    if V.is_tracer(class_sizes):
        raise TypeError("class_sizes must be concrete integers, not a traced value")
    sizes = V.check_sizes(V.as_array(class_sizes, "class_sizes"))
    total = int(np.sum(sizes.astype(object)))  # Python ints: no int64 wrap-around
    if total > V.MAX_COUNT:
        raise ValueError(f"class_sizes must add up to at most {V.MAX_COUNT} instances, got {total}")
    return sizes


def _check_num_classes(num_classes: Any) -> int:
    return V.check_size(num_classes, "num_classes", minimum=2)


_TARGET_K = "K (the columns of targets)"


def _check_classes(
    classes: Any, num_classes: Any, *, n: int | None = None, require_all: bool = True, source: str = "num_classes"
):
    """Block membership: 1-D integer classes in ``[0, K)``; returns ``(classes, K)``.

    ``K`` is ``num_classes`` when given, else ``max(classes) + 1``. ``n``: the
    number of instances the classes must have (rows of the targets).
    ``require_all``: every class must have an instance (a class-level block
    of the Gram is then never empty); checked before anything of size ``K``
    is allocated.
    """
    arr = V.as_array(classes, "classes")
    if arr.ndim != 1:
        raise ValueError(f"classes must be a 1-D (N,) array of integer classes, got shape {arr.shape}")
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"classes must have an integer dtype, got {arr.dtype}")
    if n is not None and arr.shape[0] != n:
        raise ValueError(f"classes has {arr.shape[0]} instances but targets has {n}")
    if num_classes is None:
        if arr.size == 0:
            raise ValueError("classes must not be empty (the block model needs K >= 2 classes)")
        arr = V.check_labels(arr, V.MAX_COUNT, "classes")
        k = int(arr.max()) + 1
        if k < 2:
            raise ValueError(f"classes must contain K >= 2 classes, got only class 0 (K = max(classes) + 1 = {k})")
    else:
        k = _check_num_classes(num_classes) if source == "num_classes" else num_classes
        arr = V.check_labels_for(arr, k, "classes", f"{source} = {k}")
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
    sizes = _check_class_sizes(class_sizes)
    return np.repeat(np.arange(sizes.size), sizes)


def sizes_from_classes(
    classes: Any, num_classes: int, source: str = "K (the columns of targets)", *, n: int | None = None
) -> np.ndarray:
    """Class sizes ``(K,)`` of 1-D integer ``classes`` in ``[0, K)``, every class non-empty (``n`` of them if given)."""
    classes, k = _check_classes(classes, num_classes, n=n, source=source)
    return np.bincount(classes, minlength=k)


@float64
def block_spectrum(class_sizes: Sequence[int], *, c: float, d: float) -> BlockSpectrum:
    """Analytic spectrum of the block Gram for classes of the given sizes.

    ``(c, d)`` must lie in the block model's domain
    (:func:`sdtheory._validation.check_cd`): ``d < c < 1`` with a positive
    definite Gram at these sizes, i.e.
    ``1 + d sum_k n_k / (1 - c + (c - d) n_k) > 0`` (every ``0 <= d < c < 1``;
    a negative ``d``, as fitted to centred features, down to the bound
    :func:`sdtheory._validation.cd_lower_bound`).
    """
    return checked_block_spectrum(class_sizes, c, d)


def checked_block_spectrum(class_sizes, c, d) -> BlockSpectrum:
    sizes = _check_class_sizes(class_sizes)
    c, d = V.check_cd(c, d, class_sizes=sizes)
    return _block_spectrum(jnp.asarray(sizes, dtype=float), c, d)


@float64
def block_gram(
    classes: ArrayLike, *, c: Any = None, d: Any = None, corr: Any = None, num_classes: int | None = None
) -> jax.Array:
    """The ``(N, N)`` block Gram for true classes ``classes`` (any order).

    Either ``(c, d)`` as in :func:`block_spectrum`, or ``corr``, a ``(K, K)``
    class-correlation matrix ``R`` (:func:`sdtheory.reduced.check_corr`):
    ``G_ij = R_{k_i k_j}`` off the diagonal, ``G_ii = 1``. ``num_classes``
    (default ``max(classes) + 1``): ``K >= 2``; every class must have an
    instance.
    """
    classes_arr, k = _check_classes(classes, num_classes)
    sizes = np.bincount(classes_arr, minlength=k)
    R = Rd.resolve_corr(c, d, corr, sizes)
    g = R[classes_arr][:, classes_arr]
    np.fill_diagonal(g, 1.0)
    return jnp.asarray(g, dtype=float)


def _instance_types(classes: np.ndarray, targets: np.ndarray) -> tuple:
    """Types of the instances (true class, target row): ``(type classes, type targets, counts, index)``."""
    keyed = np.concatenate([classes[:, None].astype(float), targets], axis=1)
    uniq, index, counts = np.unique(keyed, axis=0, return_inverse=True, return_counts=True)
    return uniq[:, 0].astype(np.int64), uniq[:, 1:], counts.astype(float), index.reshape(-1)


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
    """SD outputs ``(R, N, K)`` for the block Gram, at a cost that does not grow with ``N`` beyond ``O(N K)``.

    ``model="closed"`` (default) agrees with ``sd_outputs(targets, lam=lam,
    rounds=rounds, gram=block_gram(classes, c=c, d=d))`` and
    ``model="exact"`` with ``exact_outputs(..., gram=block_gram(...)).outputs``
    (softmax, ``loss`` ``"ce"`` or ``"gce"``; ``exact_options``: ``tol``,
    ``max_iter``, ``on_failure``, ``solver``), without forming the Gram:
    instances of the same true class and the same target row share their
    outputs (:mod:`sdtheory.reduced`), so the problem is solved once per
    type. ``classes`` are the true classes (block membership) in ``[0, K)``;
    every class must be non-empty. The Gram is given by ``(c, d)`` or by a
    ``(K, K)`` class-correlation matrix ``corr``. Pass exactly one of
    ``rounds`` (indices, 0 = teacher) or ``num_rounds`` (rounds ``0..R-1``).
    """
    n, k = V.check_targets(targets)
    classes, _ = _check_classes(classes, k, n=n, source=_TARGET_K)
    sizes = np.bincount(classes, minlength=k)
    V.check_lam(lam)
    model = V.check_model(model)
    if model == "closed" and (loss != "ce" or exact_options):
        raise ValueError(
            "model='closed' is the linearised cross-entropy model: loss and solver options need model='exact'"
        )
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
    res = Rd.reduced_exact_core(
        ts,
        jnp.asarray(ttgt),
        lam_a,
        int(r.max()) + 1,
        loss=loss,
        q=float(q),
        **{x: opts[x] for x in ("tol", "max_iter", "solver")},
    )
    return Rd.chain_rounds(res, r, opts).outputs[:, index]


def balanced_block_eigenvalues(*, per_class: int, num_classes: int, c: float, d: float) -> tuple:
    """``(s_w, s_b, s_g)`` of the balanced block Gram, ``per_class`` instances per class (Python floats).

    ``s_w = 1 - c < s_b = 1 - c + n (c - d)``; ``s_g = s_b + N d`` is at least
    ``s_b`` for ``d >= 0`` and below it for ``d < 0`` (then possibly even
    below ``s_w``). All three are positive: ``(c, d)`` must satisfy
    ``d > -(1 - c + n c) / (n (K - 1))`` (:func:`sdtheory._validation.check_cd`).
    """
    n = V.check_size(per_class, "per_class", minimum=1)
    k = _check_num_classes(num_classes)
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
    """Per-round shrink factors ``(a, b, g) = s / (s + K N lam)`` of the balanced block model.

    The one place the factors are computed (the theorems and the Monte Carlo
    engine call it). ``c`` and ``d`` must be concrete; ``lam`` may be a
    traced value (then the factors are traced too), so the theorems work under
    ``jax.jit``/``jax.vmap`` over ``lam``. With concrete inputs the factors
    are Python floats.
    """
    V.check_lam(lam)
    s_vals = balanced_block_eigenvalues(per_class=per_class, num_classes=num_classes, c=c, d=d)
    ridge = num_classes * (per_class * num_classes) * lam
    return tuple(s / (s + ridge) for s in s_vals)


@float64
def sample_block_features(
    key: jax.Array, classes: Any, *, c: float, d: float, dim: int, num_classes: int | None = None
) -> jax.Array:
    r"""Gaussian-mixture features whose *expected* Gram is the block Gram.

    ``x_i = mu_{k_i} + sqrt(1 - c) z_i`` with class means ``mu_k`` and
    ``z_i`` i.i.d. ``N(0, I_dim / dim)``; for ``d >= 0``
    ``mu_k = sqrt(d) g + sqrt(c - d) m_k``, for ``d < 0``
    ``mu_k = alpha m_k + beta mbar`` (``mbar`` the mean of the ``K`` vectors
    ``m_l``, ``alpha = sqrt(c - d)``, ``beta = sqrt(c - d + K d) - alpha``),
    with ``g``, ``m_k`` i.i.d. ``N(0, I_dim / dim)``. Either way
    ``E <mu_k, mu_l> = 1[k = l] (c - d) + d``, so
    ``E <x_i, x_j> = 1[i = j] (1 - c) + 1[k_i = k_j] (c - d) + d``. The
    empirical Gram fluctuates around the block Gram by ``O(1/sqrt(dim))``:
    this is the "feature noise" of the Monte Carlo simulations.

    Requires ``d < c < 1`` and, for ``d < 0``, ``d >= -c / (K - 1)``
    (:func:`check_sampler_cd`): the ``K x K`` covariance
    ``(c - d) I + d 1 1^T`` of the class means must be positive semidefinite.
    The block Gram itself allows ``d`` down to
    ``-(1 - c + n c) / (n (K - 1))``, slightly lower; use
    :func:`block_gram` / :func:`block_outputs` (no sampled features) there.
    Returns ``(N, dim)``.
    """
    V.check_key(key, "key")
    c, d = V.check_cd(c, d)
    dim = V.check_size(dim, "dim", minimum=1)
    if V.is_tracer(classes):
        if np.ndim(classes) != 1 or not jnp.issubdtype(classes.dtype, jnp.integer):
            raise TypeError(f"classes must be 1-D integers, got a traced {classes.dtype} of shape {np.shape(classes)}")
        if num_classes is None:
            raise TypeError("pass num_classes= when classes is a traced value")
        k = _check_num_classes(num_classes)
    else:
        classes, k = _check_classes(classes, num_classes, require_all=False)
    check_sampler_cd(c, d, k)
    return sample_block_features_core(key, jnp.asarray(classes), c, d, dim, k)


def check_sampler_cd(c: Any, d: Any, num_classes: int) -> None:
    """``ValueError`` unless the Gaussian-mixture sampler can realise ``(c, d)`` with ``num_classes`` means.

    For ``d < 0`` the class means' covariance ``(c - d) I + d 1 1^T`` needs
    ``c + (K - 1) d >= 0``, i.e. ``d >= -c / (K - 1)``. Traced values pass.
    """
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
