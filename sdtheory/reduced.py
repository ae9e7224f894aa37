"""The block model on label types (docs/block_model.md, "Label types"): validation and the public entry point.

Instances of the same true class and target row share their outputs in every
round, so the problems are solved once per type (kernels: :mod:`sdtheory._src.reduced`).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from . import _validation as V
from ._x64 import float64
from ._src.exact import DEFAULT_MAX_ITER, DEFAULT_SOLVER, DEFAULT_TOL, ExactResult, check_options, raise_unconverged
from ._src.reduced import (
    SEARCH_ROUNDS,
    WEIGHTED_LOSSES,
    SearchResult,
    TypeSpectrum,
    all_correct_search_core,
    corr_from_cd,
    finite_sample_core,
    label_types,
    reduced_closed_core,
    reduced_closed_fit,
    reduced_exact_core,
    reduced_exact_fit,
    sample_counts_core,
    type_accuracy_core,
    type_all_correct_core,
    type_pll_core,
    type_spectrum_core,
)

__all__ = [
    "SEARCH_ROUNDS",
    "SearchResult",
    "TYPE_MAX_CLASSES",
    "TYPE_MEMORY_LIMIT",
    "WEIGHTED_LOSSES",
    "all_correct_search_core",
    "finite_sample_core",
    "sample_counts_core",
    "type_accuracy_core",
    "type_all_correct_core",
    "type_pll_core",
    "block_type_outputs",
    "chain_rounds",
    "check_corr",
    "check_type_problem",
    "corr_from_cd",
    "label_types",
    "reduced_closed_core",
    "reduced_closed_fit",
    "reduced_exact_core",
    "reduced_exact_fit",
    "resolve_corr",
    "type_problem_bytes",
    "type_spectrum_core",
]


#: Refuse type-level problems needing more memory than this (bytes, :func:`type_problem_bytes`).
TYPE_MEMORY_LIMIT = 2 * 2**30


def type_problem_bytes(num_types: int, num_classes: int, num_rounds: int = 1) -> int:
    """Estimated peak memory ``24 T**2 + 768 T K + 256 T K R`` (bytes) of ``T`` types, ``K`` classes, ``R`` rounds:
    three ``(T, T)`` float64 arrays, ~96 ``(T, K)`` solver arrays and 32 per round (fitted above XLA's analysis)."""
    t, k = int(num_types), int(num_classes)
    return 24 * t * t + 768 * t * k + 256 * t * k * int(num_rounds)


#: Largest ``K`` whose ``K**2`` label types fit :data:`TYPE_MEMORY_LIMIT` (88).
TYPE_MAX_CLASSES = next(k for k in range(2, 10**4) if type_problem_bytes((k + 1) ** 2, k + 1) > TYPE_MEMORY_LIMIT)


def check_type_problem(
    num_types: int, num_classes: int, name: str, *, num_rounds: int = 1, label_types: bool = True
) -> None:
    """``ValueError`` naming ``name`` when the problem exceeds :data:`TYPE_MEMORY_LIMIT` (``label_types``: ``K**2``)."""
    size = type_problem_bytes(num_types, num_classes, num_rounds)
    if size <= TYPE_MEMORY_LIMIT:
        return
    what = (
        f"{name} has K = {num_classes} classes, so the type-level problem has K**2 = {num_types} label types"
        if label_types
        else f"{name} has T = {num_types} distinct (true class, target row) types of K = {num_classes} classes"
    )
    rounds = f" and {num_rounds} rounds" if num_rounds > 1 else ""
    raise ValueError(
        f"{what}{rounds}: it holds dense (T, T) float64 arrays (type Gram, eigenvectors, solver coordinates), "
        f"about {size / 2**30:.3g} GiB, above TYPE_MEMORY_LIMIT = {TYPE_MEMORY_LIMIT / 2**30:g} GiB; it supports "
        f"K <= {TYPE_MAX_CLASSES} classes with one-hot labels (fewer with many rounds)"
    )


def check_counts(counts: Any, *, name: str = "counts") -> np.ndarray:
    """Label counts ``m[k, l]`` (``(K, K)``, ``K >= 2``, fractional allowed): finite, ``>= 0``, no empty class."""
    square = lambda s: len(s) == 2 and s[0] == s[1] >= 2
    arr = V.check_array(counts, name, square, "a square (K, K) array of label counts with K >= 2").astype(float)
    if np.any(arr < 0):
        raise ValueError(f"{name} must be non-negative (m[k, l] instances of class k labelled l)")
    rows = arr.sum(axis=1)
    if np.any(rows <= 0):
        raise ValueError(
            f"every class must have instances: {name} has empty rows {V.short_list(np.flatnonzero(rows <= 0))}"
        )
    if np.sum(rows) > V.MAX_COUNT:
        raise ValueError(f"{name} must add up to at most {V.MAX_COUNT} instances")
    return arr


def check_corr(corr: Any, class_sizes: Any, *, name: str = "corr") -> np.ndarray:
    """The class-correlation matrix ``R`` ``(K, K)`` for classes of ``class_sizes``, validated: finite,
    symmetric (to ``1e-12``), entries in ``[-1, 1]``, ``R_kk < 1`` and ``diag(1 - R_kk) + sqrt(n_k n_l) R_kl``
    PSD (the block Gram is positive definite)."""
    if V.is_tracer(corr):
        raise TypeError(f"{name} must be concrete, not a traced value; vmap the *_core kernels instead")
    sizes = np.asarray(class_sizes, dtype=float)
    k = sizes.size
    expected = f"a (K, K) class-correlation matrix with K = {k}"
    arr = V.check_array(corr, name, lambda s: s == (k, k), expected).astype(float)
    if not np.allclose(arr, arr.T, rtol=0, atol=1e-12):
        raise ValueError(f"{name} must be symmetric (R_kl = R_lk), max |R - R^T| = {np.max(np.abs(arr - arr.T)):.3g}")
    arr = 0.5 * (arr + arr.T)
    if np.any(np.abs(arr) > 1.0):
        raise ValueError(f"{name} entries are correlations and must lie in [-1, 1]")
    own = 1.0 - np.diagonal(arr)
    if np.any(own <= 0):
        raise ValueError(f"{name} must have R_kk < 1 (own term 1 - R_kk > 0) for every class")
    sq = np.sqrt(sizes)
    mat = np.diag(own) + np.outer(sq, sq) * arr
    low = float(np.linalg.eigvalsh(mat).min())
    if low < -1e-10 * float(np.abs(mat).max()):
        raise ValueError(
            f"{name} makes the block Gram indefinite: the class-level matrix diag(1 - R_kk) + sqrt(n_k n_l) R_kl "
            f"has eigenvalue {low:.3g} < 0 for class sizes {sizes.tolist()}"
        )
    return arr


def resolve_corr(c: Any, d: Any, corr: Any, class_sizes: Any) -> np.ndarray:
    """The validated ``(K, K)`` class-correlation matrix from ``corr`` or ``(c, d)`` (``R_kk = c``, ``R_kl = d``)."""
    sizes = np.asarray(class_sizes, dtype=float)
    if corr is not None:
        if c is not None or d is not None:
            raise TypeError("pass either corr= (the class-correlation matrix) or c= and d=, not both")
        return check_corr(corr, sizes)
    if c is None or d is None:
        raise TypeError("pass c= and d= (within- and between-class correlation) or corr= (a (K, K) matrix)")
    c, d = V.check_cd(c, d, class_sizes=sizes)
    return np.asarray(corr_from_cd(c, d, sizes.size), dtype=float)


def exact_options(loss: Any, q: Any, options: dict) -> dict:
    """Validated exact-solver options (``tol``, ``max_iter``, ``on_failure``, ``solver``) with defaults."""
    opts: dict[str, Any] = dict(tol=DEFAULT_TOL, max_iter=DEFAULT_MAX_ITER, on_failure="raise", solver=DEFAULT_SOLVER)
    unknown = sorted(set(options) - set(opts))
    if unknown:
        raise TypeError(f"unexpected keyword arguments for the exact solver: {unknown}")
    opts.update(options)
    check_options(loss, q, opts["tol"], opts["max_iter"], opts["on_failure"], opts["solver"])
    return {**opts, "tol": float(opts["tol"]), "max_iter": int(opts["max_iter"])}


def chain_rounds(ts: TypeSpectrum, targets: Any, lam: Any, rounds: Any, loss: str, q: Any, opts: dict) -> ExactResult:
    """Exact ``rounds`` on the types, rounds ``0..max(rounds)`` solved as one chain (``opts``: :func:`exact_options`);
    ``on_failure="raise"`` checks every round of the chain (each later round depends on the earlier ones)."""
    solver = {x: opts[x] for x in ("tol", "max_iter", "solver")}
    res = reduced_exact_core(ts, targets, lam, int(np.max(rounds)) + 1, loss=loss, q=float(q), **solver)
    if opts["on_failure"] == "raise":
        raise_unconverged(res, opts["tol"], opts["max_iter"], solver=opts["solver"])
    idx = np.asarray(rounds)
    return jax.tree_util.tree_map(lambda x: np.asarray(x)[idx], res)


@float64
def block_type_outputs(
    counts: Any,
    *,
    lam: Any,
    c: Any = None,
    d: Any = None,
    corr: Any = None,
    rounds: Any = None,
    num_rounds: Any = None,
    model: str = "exact",
    loss: str = "ce",
    q: float = 0.7,
    **exact_opts: Any,
) -> ExactResult:
    """SD outputs of every label type ``(k, l)`` of the block model, from the label counts alone.

    Args:
      counts: ``(K, K)`` label counts ``m[k, l]`` (class ``k`` labelled ``l``); fractional counts
        (population: ``n_k C_kl``) are fine.
      lam: L2 weight ``> 0``.
      c, d / corr: the two-parameter block model or a ``(K, K)`` class-correlation matrix (:func:`check_corr`).
      rounds / num_rounds: exactly one (round indices, 0 = teacher, or a count).
      model: ``"exact"`` (softmax, the exact solver on the types) or ``"closed"`` (linearised).
      loss, q: loss of every round (exact only for ``"gce"``).
      exact_opts: ``tol``, ``max_iter``, ``on_failure``, ``solver``.

    Returns:
      :class:`sdtheory.ExactResult` with ``outputs`` and per-instance ``coef`` ``(R, K, K, K)`` (``[r, k, l]``:
      class ``k`` labelled ``l``; empty types carry no meaning) and the residuals (0 for the closed form). The
      cost does not depend on ``N``.
    """
    arr = check_counts(counts)
    k = arr.shape[0]
    lam = V.check_lam(lam)
    model = V.check_model(model)
    V.check_closed_ce(model, loss, exact_opts)
    rr = V.resolve_rounds(rounds, num_rounds, maximum=V.MAX_NUM_ROUNDS - 1, why="the rounds are a chain")
    check_type_problem(k * k, k, "counts", num_rounds=int(rr.max()) + 1)
    R = resolve_corr(c, d, corr, arr.sum(axis=1))
    cls, tgt = label_types(k)
    ts = type_spectrum_core(jnp.asarray(R), cls, jnp.asarray(arr.reshape(-1)))
    lam_a = jnp.asarray(lam, dtype=float)
    if model == "closed":
        out = reduced_closed_core(ts, tgt, lam_a, jnp.asarray(rr))
        zeros = jnp.zeros(rr.shape)  # every diagnostic of a closed form
        return ExactResult(*[zeros] * 9)._replace(
            outputs=out.reshape(-1, k, k, k),
            iterations=jnp.zeros(rr.shape, jnp.int32),
            converged=jnp.ones(rr.shape, bool),
            intercepts=jnp.zeros(rr.shape + (k,)),
        )
    res = chain_rounds(ts, tgt, lam_a, rr, loss, q, exact_options(loss, q, exact_opts))
    return res._replace(outputs=res.outputs.reshape(-1, k, k, k), coef=res.coef.reshape(-1, k, k, k))
