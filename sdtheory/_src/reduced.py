r"""Exact theory of the class-structured block model by symmetry reduction (docs/block_model.md, "Label types").

Gram ``G_ij = [i = j] (1 - R_{k_i k_i}) + R_{k_i k_j}`` for a ``K x K`` class-correlation matrix ``R``. Instances of the
same true class and target row (a *type*) share their outputs, so ``T`` types of counts ``m_t`` need only the eigenpairs
``U diag(s) U^T`` of the weighted type Gram ``sqrt(m_t m_t') R + [t = t'] (1 - R_kk)``: solver coordinates
``Phi = D^{-1/2} U diag(sqrt s)`` and the closed form ``P_r - 1/K = D^{-1/2} U diag(q^{r+1}) U^T D^{1/2} (T - 1/K)``.
The cost never depends on ``n``.
"""

from __future__ import annotations

from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .closed import shrink_factors
from .exact import DEFAULT_MAX_ITER, DEFAULT_SOLVER, DEFAULT_TOL, ExactResult, exact_phi_core
from .losses import LOSSES, Loss
from .pll import PLLResult, _closed, pll_rounds_core, round_fit
from .rules import TIE_TOL, correct_core


class TypeSpectrum(NamedTuple):
    """One training set's types: true ``classes`` ``(T,)``, ``counts`` ``(T,)`` (0: an empty type, masked
    out) and the eigenpairs ``(T,)``, ``(T, T)`` of the weighted type Gram."""

    classes: jax.Array
    counts: jax.Array
    eigvals: jax.Array
    eigvecs: jax.Array


def _weighted(base: Loss) -> Loss:
    """``base`` weighted per row: ``q = (q_base, w)`` with ``w`` ``(T,)`` row weights."""

    def value(t, z, q, axis=-1):
        return q[1] * base.value(t, z, q[0], axis=axis)

    def grad(t, z, q, axis=-1):
        return jnp.expand_dims(q[1], axis) * base.grad(t, z, q[0], axis=axis)

    curvature = None
    if base.curvature is not None:
        base_curv = base.curvature

        def curvature(t, z, q, w=None, axis=-1):
            return base_curv(t, z, q[0], q[1] if w is None else q[1] * w, axis=axis)

    return Loss(value, grad, base.convex, curvature)


#: Count-weighted versions of :data:`sdtheory.LOSSES` (row ``t`` weighted by
#: ``T m_t / N``, so the solver's mean over rows is ``(1/N) sum_t m_t loss_t``).
WEIGHTED_LOSSES: dict[str, Loss] = {name: _weighted(loss) for name, loss in LOSSES.items()}


@jax.jit
def type_spectrum_core(corr: jax.Array, classes: jax.Array, counts: jax.Array) -> TypeSpectrum:
    """Eigenpairs of the weighted type Gram ``sqrt(m m^T) R[k, k'] + diag(1 - R_kk)`` (empty types zeroed)."""
    counts = jnp.asarray(counts, dtype=corr.dtype)
    occ = counts > 0
    sq = jnp.sqrt(jnp.maximum(counts, 0.0))
    own = jnp.where(occ, 1.0 - jnp.diagonal(corr)[classes], 0.0)
    gw = sq[:, None] * sq[None, :] * corr[classes][:, classes] + jnp.diag(own)
    s, u = jnp.linalg.eigh(gw)
    return TypeSpectrum(classes, counts, s, u)


def _inv_sqrt_counts(counts):
    occ = counts > 0
    return jnp.where(occ, 1.0 / jnp.sqrt(jnp.where(occ, counts, 1.0)), 0.0)


@jax.jit
def reduced_closed_core(ts: TypeSpectrum, targets: jax.Array, lam: jax.Array, rounds: jax.Array) -> jax.Array:
    """Linearised outputs ``(R, T, K)`` of every type at ``rounds`` (empty types get ``1/K``)."""
    k = targets.shape[-1]
    ridge = k * jnp.sum(ts.counts) * lam
    exps = (jnp.asarray(rounds) + 1).astype(targets.dtype)
    q = shrink_factors(jnp.maximum(ts.eigvals, 0.0), ridge)[None, :] ** exps[:, None]  # (R, T)
    beta = ts.eigvecs.T @ (jnp.sqrt(ts.counts)[:, None] * (targets - 1.0 / k))  # (T, K)
    out = jnp.einsum("ti,ri,ik->rtk", ts.eigvecs, q, beta)
    return 1.0 / k + _inv_sqrt_counts(ts.counts)[None, :, None] * out


@partial(jax.jit, static_argnames=("num_rounds", "loss", "solver", "max_cg", "hard", "fit_intercept"))
def reduced_exact_core(
    ts: TypeSpectrum,
    targets: jax.Array,
    lam: jax.Array,
    num_rounds: int,
    *,
    loss: str = "ce",
    q: Any = 0.7,
    tol: Any = DEFAULT_TOL,
    max_iter: Any = DEFAULT_MAX_ITER,
    solver: str = DEFAULT_SOLVER,
    **chain: Any,
) -> ExactResult:
    """Exact outputs of rounds ``0..num_rounds-1`` for every type: an :class:`sdtheory.ExactResult` over types.

    ``outputs`` ``(R, T, K)``, the N-instance fixed-point residuals, ``coef`` the per-instance dual coefficients of each
    type (0 if empty). ``num_rounds``, ``loss``, ``solver`` static; ``chain``: the variant options of
    :func:`sdtheory.exact.exact_phi_core`. Solver coordinates ``Phi = D^{-1/2} U diag(sqrt s)`` (rows of empty types 0).
    """
    counts = ts.counts
    phi = _inv_sqrt_counts(counts)[:, None] * ts.eigvecs * jnp.sqrt(jnp.maximum(ts.eigvals, 0.0))[None, :]
    qw = (jnp.asarray(q, counts.dtype), counts * counts.shape[0] / jnp.sum(counts))  # row weights T m_t / N
    opts = dict(loss=WEIGHTED_LOSSES[loss], q=qw, tol=tol, max_iter=max_iter, solver=solver)
    res = exact_phi_core(phi, targets, lam, num_rounds, **opts, **chain)
    occ = counts > 0
    coef = jnp.where(occ[None, :, None], res.coef / jnp.where(occ, counts, 1.0)[None, :, None], 0.0)
    return res._replace(coef=coef)


def reduced_closed_fit(ts: TypeSpectrum, lam: Any):
    """One linearised round on the types (a :class:`sdtheory.refine.Fit` maker for the PLL pipeline)."""
    return lambda t: _closed(reduced_closed_core(ts, t, lam, jnp.zeros((1,), jnp.int32))[0])


def reduced_exact_fit(ts: TypeSpectrum, lam: Any, *, loss: str = "ce", q: Any = 0.7, **options: Any):
    """One exact round (CE or GCE) on the types, ``fit(targets, start=None)`` as :func:`sdtheory.refine.exact_fit`
    (``options``: tol, max_iter, solver); a start's per-instance coefficients are scaled back by the counts."""

    def fit(t, start=None):
        warm = {} if start is None else dict(init_coef=start.details.coef * ts.counts[:, None])
        return round_fit(reduced_exact_core(ts, t, lam, 1, loss=loss, q=q, **options, **warm))

    return fit


def label_types(num_classes: int) -> tuple:
    """The ``K^2`` one-hot label types ``(k, l)``, ``t = k K + l``: ``(classes (T,), targets (T, K))``."""
    return jnp.repeat(jnp.arange(num_classes), num_classes), jnp.tile(jnp.eye(num_classes), (num_classes, 1))


def corr_from_cd(c: Any, d: Any, num_classes: int) -> jax.Array:
    """``c`` on the diagonal, ``d`` off it: NumPy for concrete ``c``, ``d``, JAX when either is traced."""
    eye = np.eye(num_classes)
    return c * eye + d * (1.0 - eye)


#: Default number of rounds (``0..SEARCH_ROUNDS-1``) the round searches of the reduced model look at.
SEARCH_ROUNDS = 1000
_CHUNK = 16


class SearchResult(NamedTuple):
    """Result of :func:`all_correct_search_core`.

    Attributes:
      first: first all-correct round, ``-1`` if none among the searched rounds.
      last: last round of the all-correct run from ``first`` (valid when ``closed``).
      closed: whether a failing round after ``first`` was found.
      converged, residual: every exact round solved to ``tol``; the largest residual.
    """

    first: jax.Array
    last: jax.Array
    closed: jax.Array
    converged: jax.Array
    residual: jax.Array


def type_all_correct_core(outputs: jax.Array, ts: TypeSpectrum, tie_tol: Any = TIE_TOL) -> jax.Array:
    """Whether every instance (every non-empty type) is correct: ``(..., T, K)`` outputs -> ``(...)`` bools."""
    return jnp.all(correct_core(outputs, ts.classes, tie_tol) | (ts.counts <= 0), axis=-1)


def type_accuracy_core(outputs: jax.Array, ts: TypeSpectrum, tie_tol: Any = TIE_TOL) -> jax.Array:
    """Count-weighted training accuracy ``right / (right + wrong)`` of ``(T, K)`` type outputs: exactly 1 (0) when
    every (no) instance is correct, also for fractional counts."""
    right = correct_core(outputs, ts.classes, tie_tol)
    good = jnp.sum(jnp.where(right, ts.counts, 0.0))
    return good / (good + jnp.sum(jnp.where(right, 0.0, ts.counts)))


@partial(jax.jit, static_argnames=("model", "search_rounds", "stop_at_first", "solver", "chunk"))
def all_correct_search_core(
    ts: TypeSpectrum,
    targets: jax.Array,
    lam: jax.Array,
    tie_tol: Any = TIE_TOL,
    *,
    model: str = "exact",
    search_rounds: int = SEARCH_ROUNDS,
    stop_at_first: bool = False,
    tol: Any = DEFAULT_TOL,
    max_iter: Any = DEFAULT_MAX_ITER,
    solver: str = DEFAULT_SOLVER,
    chunk: int = _CHUNK,
) -> SearchResult:
    """First all-correct round and the end of the all-correct run after it, among rounds ``0..search_rounds-1``
    evaluated ``chunk`` at a time; it stops as soon as the answer is known (``stop_at_first``: at the first one)."""
    big = jnp.int64(search_rounds + chunk)

    def step(carry):
        t, start, first, last, closed, conv, res = carry
        idx = start + jnp.arange(chunk, dtype=jnp.int64)
        valid = idx < search_rounds
        if model == "exact":
            r = reduced_exact_core(ts, t, lam, chunk, loss="ce", tol=tol, max_iter=max_iter, solver=solver)
            outs = r.outputs
            conv = conv & jnp.all(r.converged | ~valid)
            res = jnp.maximum(res, jnp.max(jnp.where(valid, r.residuals, 0.0)))
            t = outs[-1]
        else:
            outs = reduced_closed_core(ts, targets, lam, idx)
        ac = type_all_correct_core(outs, ts, tie_tol) & valid
        cand = jnp.min(jnp.where(ac, idx, big))
        first = jnp.where(first >= 0, first, jnp.where(cand < big, cand, -1))
        fail = (~ac) & valid & (first >= 0) & (idx > first)
        fidx = jnp.min(jnp.where(fail, idx, big))
        newly = (~closed) & (fidx < big)
        last = jnp.where(newly, fidx - 1, last)
        return (t, start + chunk, first, last, closed | newly, conv, res)

    def cond(carry):
        _, start, first, _, closed, _, _ = carry
        going = (start < search_rounds) & ~closed
        return going & (first < 0) if stop_at_first else going

    dt = targets.dtype
    minus = jnp.full((), -1, jnp.int64)
    init = (targets, jnp.zeros((), jnp.int64), minus, minus, jnp.zeros((), bool), jnp.ones((), bool), jnp.zeros((), dt))
    _, _, first, last, closed, conv, res = jax.lax.while_loop(cond, step, init)
    return SearchResult(first, jnp.where(closed, last, -1), closed, conv, res)


@partial(jax.jit, static_argnames=("model", "num_rounds", "loss", "solver"))
def type_pll_core(
    ts: TypeSpectrum,
    targets: jax.Array,
    lam: jax.Array,
    tie_tol: Any = TIE_TOL,
    *,
    model: str = "exact",
    num_rounds: int = 1,
    loss: str = "ce",
    q: Any = 0.7,
    tol: Any = DEFAULT_TOL,
    max_iter: Any = DEFAULT_MAX_ITER,
    solver: str = DEFAULT_SOLVER,
) -> PLLResult:
    """The PLL pipeline (:func:`sdtheory.refine.pll_rounds_core`) on the types: CE teacher, ``loss`` students."""
    if model == "exact":
        opts = dict(tol=tol, max_iter=max_iter, solver=solver)
        teacher = reduced_exact_fit(ts, lam, loss="ce", q=q, **opts)(targets)
        fit = reduced_exact_fit(ts, lam, loss=loss, q=q, **opts)
        return pll_rounds_core(fit, teacher, num_rounds, tie_tol, init="teacher")  # the public rule
    fit = reduced_closed_fit(ts, lam)
    return pll_rounds_core(fit, fit(targets), num_rounds, tie_tol)


class FiniteSampleDraws(NamedTuple):
    """Per draw ``D`` in :func:`finite_sample_core`: ``all_correct`` ``(D, R)``, ``first`` all-correct round
    (``-1``: none), the one-round PLL student's ``pll_accuracy`` and ``converged`` (every exact round), ``(D,)``."""

    all_correct: jax.Array
    first: jax.Array
    pll_accuracy: jax.Array
    converged: jax.Array


def sample_counts_core(key: jax.Array, C: jax.Array, sizes: jax.Array) -> jax.Array:
    """Label counts ``(K, K)`` of i.i.d. labels: row ``k`` is ``Multinomial(n_k, C_k)`` (``O(K^2)``, no instances)."""
    keys = jax.random.split(key, C.shape[0])
    return jax.vmap(lambda kk, n, p: jax.random.multinomial(kk, n, p))(keys, sizes.astype(C.dtype), C)


@partial(jax.jit, static_argnames=("model", "num_rounds", "pll_loss", "solver"))
def finite_sample_core(
    keys: jax.Array,
    C: jax.Array,
    sizes: jax.Array,
    corr: jax.Array,
    lam: jax.Array,
    tie_tol: Any = TIE_TOL,
    *,
    model: str = "closed",
    num_rounds: int = 1,
    pll_loss: str = "ce",
    q: Any = 0.7,
    tol: Any = DEFAULT_TOL,
    max_iter: Any = DEFAULT_MAX_ITER,
    solver: str = DEFAULT_SOLVER,
) -> FiniteSampleDraws:
    """One draw of i.i.d. label counts per key (``keys`` ``(D,)``), then SD rounds and the PLL student on the types;
    vmap it again over ``C`` or ``lam`` (nothing depends on the number of instances)."""
    cls, tgt = label_types(C.shape[0])
    tgt = tgt.astype(C.dtype)

    def one(key):
        counts = sample_counts_core(key, C, sizes)
        ts = type_spectrum_core(corr, cls, counts.reshape(-1))
        if model == "exact":
            opts = dict(tol=tol, max_iter=max_iter, solver=solver)
            res = reduced_exact_core(ts, tgt, lam, num_rounds, loss="ce", **opts)
            outs, conv = res.outputs, jnp.all(res.converged)
            teacher = round_fit(res)
            fit = reduced_exact_fit(ts, lam, loss=pll_loss, q=q, **opts)
        else:
            outs, conv = reduced_closed_core(ts, tgt, lam, jnp.arange(num_rounds)), jnp.ones((), bool)
            fit = reduced_closed_fit(ts, lam)
            teacher = fit(tgt)
        ac = type_all_correct_core(outs, ts, tie_tol)
        first = jnp.where(jnp.any(ac), jnp.argmax(ac), -1)
        pll = pll_rounds_core(fit, teacher, 1, tie_tol)
        acc = type_accuracy_core(pll.outputs[0], ts, tie_tol)
        return FiniteSampleDraws(ac, first, acc, conv & jnp.all(pll.converged))

    return jax.vmap(one)(keys)
