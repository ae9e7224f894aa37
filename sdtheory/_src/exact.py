r"""The exact (nonlinear softmax) solution of every self-distillation round (docs/exact_solver.md).

Round 0 minimises ``L(W) = (1/N) sum_i ell(t_i, W x_i) + (lam/2) ||W||_F^2`` (``ell``: CE, convex, or the non-convex
GCE) on targets ``T`` ``(N, K)``, round ``r`` on the training outputs of round ``r - 1``. The solvers work class-major
(``V`` ``K x M``, logits ``V Phi^T``) in coordinates ``Phi Phi^T = G``: ``U diag(sqrt s)`` of a Gram, or ``X R`` (``R``
the eigenbasis of ``X^T X``) for features with ``d < N``. At a stationary point the logits are ``G A``,
``A = -(d ell / d z) / (N lam)``; a round stops when the fixed-point residual ``max |softmax(Z) - softmax(G A(Z))|`` is
``<= tol`` or the scale-free stationarity ``kkt`` is ``<= rtol``. ``solver="auto"`` (the default everywhere):
truncated Newton, CG preconditioned by the Kronecker-factored Hessian, Hessian products in float32 (the rest float64);
``"newton-cg"`` (float64 products) and ``"lbfgs"`` are the alternatives.
"""

from __future__ import annotations

from functools import partial
from typing import Any, NamedTuple
from collections.abc import Callable

import chex
import jax
import jax.numpy as jnp
import numpy as np

from .. import _validation as V
from .closed import next_targets_core
from .losses import get_loss, softmax
from .rules import TIE_TOL
from .spectral import Spectrum

#: Default stopping tolerance on the fixed-point residual (float64).
DEFAULT_TOL = 1e-9
#: Default tolerance on the scale-free stationarity ``kkt`` (:class:`ExactResult`; a few hundred ulps).
DEFAULT_RTOL = 1e-13
#: The default algorithm (a name from :data:`SOLVERS`).
DEFAULT_SOLVER = "auto"
#: Default budget of outer (L-BFGS or Newton) iterations per round.
DEFAULT_MAX_ITER = 1000
#: Default budget of conjugate-gradient iterations per Newton step.
DEFAULT_MAX_CG = 200
#: L-BFGS memory (number of stored curvature pairs).
MEMORY = 10


class ExactResult(NamedTuple):
    """Exact outputs of ``R`` chained rounds (a pytree; vmaps add leading axes).

    Attributes:
      outputs: ``(R, N, K)`` softmax outputs on the training instances.
      residuals: ``(R,)`` fixed-point residual ``max |P - softmax(G A)|``, ``A`` the dual coefficients at ``P``
        (for CE ``A = (T - P) / (N lam)``).
      grad_norms: ``(R,)`` max-abs gradient in the orthonormal coordinates ``V`` (its 2-norm equals ``||dL/dW||``).
      iterations: ``(R,)`` outer (L-BFGS or Newton) iterations used.
      converged: ``(R,)`` the residual reached ``tol`` or ``kkt`` reached ``rtol``, in this round and every one before.
      coef: ``(R, N, K)`` dual coefficients ``A_r``: logits ``G(x, train) @ A_r``.
      kkt: ``(R,)`` scale-free stationarity ``||dL/dW|| / (||lam W|| + ||dLoss/dW||)``; for CE
        ``||W - W*|| <= kkt (2 + kkt) ||W|| / (1 - kkt)``.
      error_bounds: ``(R,)`` CE: certified ``max_i |P_i - P*_i| <= max_i ||x_i|| ||dL/dW|| / (2 lam)`` (strong
        convexity, softmax 1/2-Lipschitz); not a bound for GCE; ``inf`` with an intercept.
      intercepts: ``(R, K)`` the unregularised bias ``b_r`` (zeros without ``fit_intercept``): logits ``... + b_r``.
    """

    outputs: jax.Array
    residuals: jax.Array
    grad_norms: jax.Array
    iterations: jax.Array
    converged: jax.Array
    coef: jax.Array
    kkt: jax.Array
    error_bounds: jax.Array
    intercepts: jax.Array


# One round on Phi (N, M), class-major: weights v and gradients w are (K, M), logits z and targets t (K, N), so z = v
# Phi^T and w = g Phi / N are row-major products (the (N, K) layout's Phi^T g ran 1.5-6x slower on XLA's CPU backend).


def _vdot(a, b):
    return jnp.sum(a * b)


def _kkt(w, v, lam):
    """Scale-free stationarity ``||w + lam v|| / (||w|| + ||lam v||)``; ``lam`` a scalar or a ``(1, M)`` row."""
    lv = lam * v
    grad = w + lv
    den = jnp.sqrt(_vdot(w, w)) + jnp.sqrt(_vdot(lv, lv))
    return jnp.sqrt(_vdot(grad, grad)) / jnp.where(den > 0, den, 1.0)


def _running(res, w, v, lam, tol, rtol):
    """Whether a round goes on: neither the residual reached ``tol`` nor ``kkt`` reached ``rtol``."""
    return (res > tol) & (_kkt(w, v, lam) > rtol)


class _Ops(NamedTuple):
    """The solver coordinates of one training set, prepared once for every round."""

    phi: jax.Array  # (N, M)
    phi32: jax.Array  # (N, M) float32 copy: Hessian products, which only need CG accuracy
    colsq: jax.Array  # (M,) sum_i phi_im^2 (the eigenvalues s in the eigenbasis); in `basis` if given
    max_row: jax.Array  # max_i ||phi_i||: output error bounds
    basis: jax.Array | None = None  # (M, M) orthonormal R in which Phi^T Phi is ~diagonal (preconditioners)
    count: Any = None  # the number of instances (the rows of Phi, or fewer when padded)
    mask: jax.Array | None = None  # (N,) 1 on the instances, 0 on padding rows; None without padding
    search: bool = False  # features, solver "auto", N d K >= START32_MIN_WORK: a float32 start and line search


class Coordinates(NamedTuple):
    """Features ``phi = X`` (``d < N``), an orthonormal ``basis`` ``R`` nearly diagonalising ``X^T X`` and its
    eigenvalues ``colsq`` (float32 accuracy); :func:`exact_phi_core` rotates, ``Phi = X R``, or applies ``R`` in
    the preconditioners, whichever costs less."""

    phi: jax.Array
    basis: jax.Array
    colsq: jax.Array


def _to_basis(ops, g):
    """A class-major ``(K, M)`` array in the coordinates of ``ops.basis`` (if any)."""
    return g if ops.basis is None else g @ ops.basis


def _from_basis(ops, u):
    return u if ops.basis is None else u @ ops.basis.T


class _State(NamedTuple):
    v: jax.Array  # (K, M) weights
    z: jax.Array  # (K, N) logits v Phi^T
    w: jax.Array  # (K, M) g Phi / N
    res: jax.Array  # fixed-point residual
    it: jax.Array


def _shift_free(d):
    """``d`` without its all-classes part: an unregularised bias is flat along that shift and would drift."""
    return d - jnp.mean(d, axis=0, keepdims=True)


def _implied(w, v, lam):
    """Weights implied by stationarity, ``-w / lam`` (logits ``G A``; ``v`` on an unregularised coordinate)."""
    reg = lam > 0
    return jnp.where(reg, -w / jnp.where(reg, lam, 1.0), v)


def _logits(phi, v):
    """Class-major logits ``v Phi^T`` (``(K, N)``; one pass over ``Phi``)."""
    return jnp.einsum("km,nm->kn", v, phi)


def _bias_gap(w, lam):
    """``max |dLoss/db|`` over the unregularised coordinates (``lam == 0``; 0 when there are none)."""
    return jnp.max(jnp.where(lam > 0, 0.0, jnp.abs(w)))


def _gap(z, za, w, lam):
    """The residual from the current logits ``z`` and the implied ones ``za``: fixed-point gap and bias gap."""
    return jnp.maximum(jnp.max(jnp.abs(softmax(z, axis=0) - softmax(za, axis=0))), _bias_gap(w, lam))


def _residual(ops, z, w, v, lam):
    """Residual ``max(max |softmax(z) - softmax((-w / lam) Phi^T)|, max |dLoss/db|)`` (one pass over ``Phi``)."""
    return _gap(z, _logits(ops.phi, _implied(w, v, lam)), w, lam)


def _data_grad(ops, t, z, loss, q):
    """``g(z) Phi / N`` (one pass over ``Phi``)."""
    return loss.grad(t, z, q, axis=0) @ ops.phi / ops.count


def _mean_rows(x, ops):
    """The mean over the instances (the last axis) of a class-major array; padding rows excluded."""
    if ops.mask is not None:
        x = x * ops.mask.astype(x.dtype)
    return jnp.sum(x, axis=-1) / ops.count


#: ``Phi`` above this many bytes (beyond a last-level cache; measured) is run over in row blocks of ROW_BLOCK_BYTES.
BLOCK_ABOVE_BYTES = 1 << 24
ROW_BLOCK_BYTES = 1 << 22


def _row_block(phi, q):
    """Rows per block of :func:`_data_hvp`, or 0 for one product (also for row-weighted losses: per-row ``q``)."""
    n, m = phi.shape
    row = m * phi.dtype.itemsize
    nb = max(64, ROW_BLOCK_BYTES // row)
    per_row = any(jnp.ndim(x) > 0 for x in jax.tree_util.tree_leaves(q))
    return 0 if per_row or n * row <= BLOCK_ABOVE_BYTES or n < 2 * nb else nb


def _data_hvp(phi, t, z, d, loss, q, lin=None, count=None):
    """The data part of a Hessian product, ``J(z)[d Phi^T] Phi / N`` (class-major ``(K, M)``), in row blocks for
    large ``Phi`` (:func:`_row_block`), else with the linearised gradient ``lin`` when given; ``count``: ``N``."""
    n = phi.shape[0]
    count = n if count is None else count
    nb = _row_block(phi, q)

    if not nb:
        u = _logits(phi, d)
        if lin is None:
            lin = lambda u: jax.jvp(lambda zz: loss.grad(t, zz, q, axis=0), (z,), (u,))[1]  # noqa: E731
        return lin(u) @ phi / count

    def body(i, acc):
        # the last block is clamped to end at row N and masked to the rows no other block has
        start = jnp.minimum(i * nb, n - nb)
        rows = lambda a, axis: jax.lax.dynamic_slice_in_dim(a, start, nb, axis)  # noqa: E731
        ph, tb, zb = rows(phi, 0), rows(t, 1), rows(z, 1)
        fresh = (start + jnp.arange(nb)) >= i * nb
        u = jnp.where(fresh, _logits(ph, d), 0.0)
        return acc + jax.jvp(lambda zz: loss.grad(tb, zz, q, axis=0), (zb,), (u,))[1] @ ph

    return jax.lax.fori_loop(0, -(-n // nb), body, jnp.zeros_like(d)) / count


#: The Newton solvers compute the exact residual (a pass over ``Phi``) once its bound is below this multiple of tol.
RESIDUAL_GATE = 1e6


def _objective_along(ops, t, lam, z, zd, v, d, alpha, loss, q):
    data = _mean_rows(loss.value(t, z + alpha * zd, q, axis=0), ops)
    vv = v + alpha * d
    return data + 0.5 * _vdot(lam * vv, vv)


def _kron_preconditioner(ops, jvp32, curvature, z32, lam, dtype):
    """Inverse of the Kronecker-factored Hessian ``diag(s) / N (x) Hbar + lam`` (a function of the CG residual).

    The Hessian ``sum_i phi_i phi_i^T (x) J(z_i) / N + lam`` with every logit Hessian ``J(z_i)`` replaced by their mean
    ``Hbar`` (the loss's ``curvature``, else ``K`` linearised products ``jvp32``; float32): in the eigenbasis one
    ``K x K`` block ``s_m Hbar / N + lam`` per coordinate, all inverted through ``Hbar = Q diag(h) Q^T``. Exact at zero
    logits; keeps the coupling between classes; negative curvature (GCE) dropped.
    """
    k = z32.shape[0]
    if curvature is not None:
        hbar = curvature(z32, None if ops.mask is None else ops.mask.astype(z32.dtype)).astype(dtype) / ops.count
    else:
        # column l of Hbar: the mean over instances of J(z_i) e_l (one linearised product per class)
        mean_col = lambda e: _mean_rows(jvp32(jnp.broadcast_to(e[:, None], z32.shape)), ops)  # noqa: E731
        hbar = jax.lax.map(mean_col, jnp.eye(k, dtype=z32.dtype)).T.astype(dtype)
    hv, hq = jnp.linalg.eigh(0.5 * (hbar + hbar.T))
    # the all-ones class direction has curvature 0 (softmax is shift invariant): with an
    # unregularised bias that block is singular, and the gradient has no part in it
    hv = jnp.where(hv > 1e-6 * jnp.max(hv), hv, 0.0)
    den = hv[:, None] * ops.colsq[None, :] / ops.count + lam
    inv = jnp.where(den > 0, 1.0 / jnp.where(den > 0, den, 1.0), 0.0)
    return lambda r: _from_basis(ops, hq @ ((hq.T @ _to_basis(ops, r)) * inv))


#: Floor of the CG forcing term for float32 Hessian products: Newton then converges linearly at about this rate.
ETA_FLOOR_MIXED = 1e-4
#: ``ops.search``: the mixed solver's steps run all in float32 until ``kkt`` reaches this (at most START32_ITER).
START32_KKT, START32_ITER = 1e-4, 30
#: ... and only from this many ``N d K`` up: below it the start saved no time and doubled the compile time (measured:
#: 1000 x 64, K = 10, 9.2 ms either way, first call 3.6 s against 2.3 s; 2000 x 128, K = 20, 74 against 88 ms).
START32_MIN_WORK = 1 << 21


def _newton_cg_round(ops, t, lam, v0, *, loss, q, tol, max_iter, max_cg, rtol, mixed=False, start=False):
    """Truncated Newton: preconditioned CG on the Newton system, Armijo backtracking; ``mixed=True``: Hessian products
    in float32 until a step's CG misses ``eta``, then float64 (docs/exact_solver.md); ``ops.search``: a float32 stage
    first (``start=True``, to ``kkt <= START32_KKT``), the first trial step from a line search while ``kkt > 0.1``."""
    dtype = ops.phi.dtype
    lo = jnp.float32
    t32 = t.astype(lo)
    it0 = jnp.zeros((), jnp.int32)
    if mixed and ops.search:
        # a float32 start (every pass half the float64 cost), its iterations counted with the round's
        to32 = lambda x: jax.tree_util.tree_map(lambda a: jnp.asarray(a, lo), x)  # noqa: E731
        opt = dict(
            loss=loss, q=to32(q), tol=0.0, max_iter=jnp.minimum(max_iter, START32_ITER), rtol=START32_KKT, start=True
        )
        s32 = _newton_cg_round(
            to32(ops._replace(phi=ops.phi32))._replace(search=True), t32, to32(lam), to32(v0), max_cg=max_cg, **opt
        )
        # the shift float32 left would stay (lam v); no float32 step taken (max_iter 0, or converged): v0 unrounded
        v0, it0 = jnp.where(s32.it > 0, _shift_free(s32.v.astype(dtype)), v0), s32.it
    gfun32 = lambda zz: loss.grad(t32, zz, q, axis=0).astype(lo)  # noqa: E731
    lam_lo = jnp.asarray(lam).astype(lo)

    def residual(z, w, v):
        """The exact residual, or far above ``tol`` its bound (``u = -w/lam - v``, no pass); and whether exact."""
        u = _implied(w, v, lam) - v
        bound = jnp.maximum(0.5 * ops.max_row * jnp.sqrt(jnp.max(jnp.sum(u * u, axis=1))), _bias_gap(w, lam))
        near = bound <= RESIDUAL_GATE * tol
        return jax.lax.cond(near, lambda: _residual(ops, z, w, v, lam), lambda: bound), near

    z0 = _logits(ops.phi, v0)
    w0 = _data_grad(ops, t, z0, loss, q)
    res0, exact0 = residual(z0, w0, v0)
    f_init = _objective_along(ops, t, lam, z0, z0, v0, v0, 0.0, loss, q)
    init = (_State(v0, z0, w0, res0, it0), jnp.asarray(not mixed), exact0, f_init, False)

    def cond(c):
        s, stalled = c[0], c[4]
        return _running(s.res, s.w, s.v, lam, tol, rtol) & (s.it < max_iter) & ~stalled

    def body(c):
        s, hi, _, f0, _ = c
        grad = s.w + lam * s.v
        gnorm = jnp.sqrt(_vdot(grad, grad))
        z32 = s.z.astype(lo)
        _, jvp32 = jax.linearize(gfun32, z32)
        curv = None if loss.curvature is None else (lambda zz, w: loss.curvature(t32, zz, q, w, axis=0))
        pre = _kron_preconditioner(ops, jvp32, curv, z32, lam, dtype)

        def hvp64(d):
            # linearised inside the branch: with float32 products the float64 softmax is never formed
            return _data_hvp(ops.phi, t, s.z, d, loss, q, count=ops.count) + lam * d

        def hvp32(d):
            d32 = d.astype(lo)
            return (_data_hvp(ops.phi32, t32, z32, d32, loss, q, jvp32, ops.count) + lam_lo * d32).astype(dtype)

        hvp = hvp64 if not mixed else (lambda d: jax.lax.cond(hi, hvp64, hvp32, d))
        hvp = hvp32 if start else hvp  # the float32 start: products linearised once a step
        # Preconditioned CG on H x = -grad; scale-free forcing term (relative to kkt)
        b = -grad
        kkt = _kkt(s.w, s.v, lam)
        eta = jnp.minimum(0.2 if ops.search else 0.5, jnp.sqrt(kkt))
        # no tighter than the stop needs (eta = tol / res would just reach it; a factor 10 of margin)
        enough = 0.1 * jnp.maximum(tol / jnp.maximum(s.res, tol), rtol / jnp.maximum(kkt, rtol))
        eta = jnp.maximum(eta, jnp.minimum(enough, 0.5))
        # close to the optimum (kkt^2 below enough * kkt) one step can reach the stop: solve to `enough`
        eta = jnp.where(kkt <= enough, jnp.minimum(eta, enough), eta)
        if mixed:
            eta = jnp.where(hi, eta, jnp.maximum(eta, ETA_FLOOR_MIXED))
        zc0 = pre(b)
        cg0 = (jnp.zeros_like(b), b, zc0, zc0, _vdot(b, zc0), jnp.zeros((), jnp.int32), jnp.zeros((), bool), False)

        def cg_body(c):
            x, r, zc, p, rz, k, _, _ = c
            hp = hvp(p)
            php = _vdot(p, hp)
            neg = php <= 0
            alpha = rz / jnp.where(neg, 1.0, php)
            x_new = jnp.where(neg, jnp.where(k == 0, zc0, x), x + alpha * p)
            r_new = r - alpha * hp
            small = jnp.sqrt(_vdot(r_new, r_new)) <= eta * gnorm
            zc_new = pre(r_new)
            rz_new = _vdot(r_new, zc_new)
            p_new = zc_new + (rz_new / jnp.where(rz == 0, 1.0, rz)) * p
            return (x_new, r_new, zc_new, p_new, rz_new, k + 1, neg | small, small)

        cg = jax.lax.while_loop(lambda c: (~c[6]) & (c[5] < max_cg), cg_body, cg0)
        d = _shift_free(cg[0])
        hi = hi | ~cg[7]  # float32 products did not reach eta: float64 from here on

        # Armijo backtracking along d (Phi d once; each trial O(N K)); the accepted objective is carried
        zd = _logits(ops.phi, d)
        slope = _vdot(grad, d)
        slack = 100 * jnp.finfo(dtype).eps * (1.0 + jnp.abs(f0))

        def trial(a, j):
            fa = _objective_along(ops, t, lam, s.z, zd, s.v, d, a, loss, q)
            return a, j, fa, fa <= f0 + 1e-4 * a * slope + slack

        a1 = jnp.ones((), dtype)
        if ops.search:  # far from the optimum (kkt > 0.1) the first trial from a 1-D Newton line search
            a_ls = _line_search(ops, t, lam, s.z, zd, s.v, d, slope, loss, q, 5)
            a1 = jnp.where((kkt > 0.1) & (a_ls > 0), a_ls, a1)
        alpha, _, f_new, ok = jax.lax.while_loop(
            lambda c: (~c[3]) & (c[1] < 60), lambda c: trial(0.5 * c[0], c[1] + 1), trial(a1, 0)
        )
        # no decrease within 60 halvings (the roundoff floor): stay and end the round; a where on the
        # iterate, not on alpha (0 * d is NaN where CG broke down to a non-finite d)
        f_new = jnp.where(ok, f_new, f0)
        v_new = jnp.where(ok, s.v + alpha * d, s.v)
        z = jnp.where(ok, s.z + alpha * zd, s.z)
        w = _data_grad(ops, t, z, loss, q)
        res, exact = residual(z, w, v_new)
        return _State(v_new, z, w, res, s.it + 1), hi, exact, f_new, ~ok

    s, _, exact, _, _ = jax.lax.while_loop(cond, body, init)
    # stopped on kkt or max_iter with the bound in place of the residual: report the residual itself
    res = jax.lax.cond(exact, lambda: s.res, lambda: _residual(ops, s.z, s.w, s.v, lam))
    return s._replace(res=res)


def _line_search(ops, t, lam, z, zd, v, d, slope0, loss, q, max_ls):
    """Safeguarded 1-D Newton/bisection for ``phi'(alpha) = 0``, ``phi(alpha) = L(v + alpha d)``, to
    ``|phi'| <= 0.1 |phi'(0)|`` or ``max_ls`` trials; a step that increases the objective gives the left bracket."""
    n = ops.count
    gfun = lambda zz: loss.grad(t, zz, q, axis=0)  # noqa: E731
    dd = _vdot(lam * d, d)  # lam may be a (1, M) row (intercept)
    vd = _vdot(lam * v, d)

    def dphi(a):
        za = z + a * zd
        g, jg = jax.jvp(gfun, (za,), (zd,))
        return _vdot(g, zd) / n + (vd + a * dd), _vdot(jg, zd) / n + dd

    def body(c):
        a, lo, hi, der, j = c
        lo = jnp.where(der < 0, a, lo)
        hi = jnp.where(der > 0, a, hi)
        d1, d2 = dphi(a)
        newton = a - d1 / jnp.where(d2 > 0, d2, 1.0)
        fallback = jnp.where(jnp.isfinite(hi), 0.5 * (lo + hi), 2.0 * jnp.maximum(lo, a))
        ok = (d2 > 0) & (newton > lo) & (newton < hi) & jnp.isfinite(newton)
        a_new = jnp.where(ok, newton, fallback)
        return a_new, lo, hi, dphi(a_new)[0], j + 1

    one = jnp.ones((), z.dtype)
    init = (one, jnp.zeros((), z.dtype), jnp.full((), jnp.inf, z.dtype), dphi(one)[0], 0)
    going = lambda c: (jnp.abs(c[3]) > 0.1 * jnp.abs(slope0)) & (c[4] < max_ls)  # noqa: E731
    a, lo, _, _, _ = jax.lax.while_loop(going, body, init)
    f0 = _objective_along(ops, t, lam, z, zd, v, d, 0.0, loss, q)
    fa = _objective_along(ops, t, lam, z, zd, v, d, a, loss, q)
    slack = 100 * jnp.finfo(z.dtype).eps * (1.0 + jnp.abs(f0))
    return jnp.where(fa <= f0 + slack, a, jnp.where(lo > 0, lo, 0.0))


def _two_loop(gu, S, Y, rho, count, gamma, memory):
    """L-BFGS two-loop recursion over the stored pairs (newest first); returns ``-H g``."""
    idx = (count - 1 - jnp.arange(memory)) % memory
    valid = jnp.arange(memory) < jnp.minimum(count, memory)

    def first(qv, i):
        j, ok = idx[i], valid[i]
        a = jnp.where(ok, rho[j] * _vdot(S[j], qv), 0.0)
        return qv - a * Y[j], a

    qv, alphas = jax.lax.scan(first, gu, jnp.arange(memory))
    r = gamma * qv

    def second(r, i):
        j, ok = idx[i], valid[i]
        b = rho[j] * _vdot(Y[j], r)
        return r + jnp.where(ok, alphas[i] - b, 0.0) * S[j], None

    r, _ = jax.lax.scan(second, r, jnp.arange(memory)[::-1])
    return -r


def _lbfgs_round(ops, t, lam, v0, *, loss, q, tol, max_iter, max_cg, rtol, max_ls=20, memory=MEMORY):
    """L-BFGS in preconditioned coordinates ``u = v * sqrt(h)``, ``h = s/(K N) + lam``; two passes over ``Phi`` per
    iteration (gradient, ``Phi [w | d]``); pairs with ``s^T y <= 0`` (GCE) skipped; a fresh memory each round."""
    del max_cg
    phi = ops.phi
    k = t.shape[0]
    dtype = phi.dtype
    scale = jnp.sqrt(ops.colsq[None, :] / (k * ops.count) + lam)  # sqrt(s/(KN) + lam)

    def residual_and_zd(z, w, v, d):
        both = _logits(phi, jnp.concatenate([_implied(w, v, lam), d], axis=0))
        return _gap(z, both[:k], w, lam), both[k:]

    z0 = _logits(phi, v0)
    # rescale the warm start along the ray through 0 (free: Phi v0 = z0 is known)
    w_pre = _data_grad(ops, t, z0, loss, q)
    slope_pre = _vdot(w_pre + lam * v0, -v0)
    a_pre = jnp.where(slope_pre < 0, _line_search(ops, t, lam, z0, -z0, v0, -v0, slope_pre, loss, q, max_ls), 0.0)
    v0, z0 = v0 * (1.0 - a_pre), z0 * (1.0 - a_pre)
    w0 = _data_grad(ops, t, z0, loss, q)
    gu0 = _to_basis(ops, w0 + lam * v0) / scale
    zeros = jnp.zeros((memory, k, v0.shape[1]), dtype)
    mem = (zeros, zeros, jnp.zeros((memory,), dtype), jnp.zeros((), jnp.int32), jnp.ones((), dtype))  # empty
    du0 = _two_loop(gu0, *mem, memory)
    du0 = _shift_free(jnp.where(_vdot(gu0, du0) < 0, du0, -gu0))
    res0, zd0 = residual_and_zd(z0, w0, v0, _from_basis(ops, du0 / scale))

    def cond(c):
        return _running(c[5], c[2], c[0], lam, tol, rtol) & (c[6] < max_iter) & ~c[8]

    def body(c):
        v, z, w, gu, du, res, it, zd, _, S, Y, rho, count, gamma = c
        d = _from_basis(ops, du / scale)
        slope = _vdot(gu, du)
        alpha = _line_search(ops, t, lam, z, zd, v, d, slope, loss, q, max_ls)
        v_new = v + alpha * d
        z_new = z + alpha * zd
        w_new = _data_grad(ops, t, z_new, loss, q)
        gu_new = _to_basis(ops, w_new + lam * v_new) / scale
        s_vec = alpha * du
        y_vec = gu_new - gu
        sy = _vdot(s_vec, y_vec)
        keep = sy > jnp.finfo(dtype).tiny
        slot = count % memory
        S = jnp.where(keep, S.at[slot].set(s_vec), S)
        Y = jnp.where(keep, Y.at[slot].set(y_vec), Y)
        rho = jnp.where(keep, rho.at[slot].set(1.0 / jnp.where(keep, sy, 1.0)), rho)
        gamma = jnp.where(keep, sy / _vdot(y_vec, y_vec), gamma)
        count = count + keep.astype(count.dtype)
        du_new = _two_loop(gu_new, S, Y, rho, count, gamma, memory)
        bad = ~(_vdot(gu_new, du_new) < 0)
        du_new = _shift_free(jnp.where(bad, -gu_new, du_new))
        res_new, zd_new = residual_and_zd(z_new, w_new, v_new, _from_basis(ops, du_new / scale))
        # no step (no decrease): end the round; its measures say whether it converged
        stalled = alpha == 0
        return (v_new, z_new, w_new, gu_new, du_new, res_new, it + 1, zd_new, stalled, S, Y, rho, count, gamma)

    init = (v0, z0, w0, gu0, du0, res0, jnp.zeros((), jnp.int32), zd0, jnp.zeros((), bool)) + mem
    out = jax.lax.while_loop(cond, body, init)
    v, z, w, _, _, res, it = out[:7]
    return _State(v, z, w, res, it)


#: The exact solvers by name (one round each; the registry the CLIs offer as choices).
SOLVERS: dict[str, Callable[..., _State]] = {
    "auto": partial(_newton_cg_round, mixed=True),
    "lbfgs": _lbfgs_round,
    "newton-cg": _newton_cg_round,
}


@partial(jax.jit, static_argnames=("num_rounds", "loss", "max_cg", "solver", "hard", "fit_intercept"))
def exact_phi_core(
    phi,
    targets,
    lam,
    num_rounds,
    *,
    loss="ce",
    q=0.7,
    tol=DEFAULT_TOL,
    max_iter=DEFAULT_MAX_ITER,
    max_cg=DEFAULT_MAX_CG,
    solver=DEFAULT_SOLVER,
    lams=None,
    temperature=1.0,
    xi=1.0,
    hard=False,
    tie_tol=TIE_TOL,
    rtol=DEFAULT_RTOL,
    fit_intercept=False,
    init_coef=None,
    init_intercepts=None,
    num_valid=None,
    num_active=None,
):
    """Rounds ``0..num_rounds-1`` in the solver coordinates ``phi`` (jitted, no validation).

    ``phi``: an ``(N, M)`` factor of the Gram or the :class:`Coordinates` of features (:func:`solver_features`). Round
    ``r`` fits :func:`sdtheory.variants.next_targets_core` of round ``r - 1`` (``temperature``, ``xi``, ``hard``;
    default plain SD); ``lams`` ``(num_rounds,)``: a lam schedule. Round 0 starts from zero weights or from another
    fit's ``init_coef`` ``(N, K)`` and ``init_intercepts`` ``(K,)`` (same ``phi`` and ``fit_intercept``); later rounds
    from the previous one. ``num_valid`` (traced): only the first rows are instances, the rest are zero padding rows
    (:func:`bucket_rows`) with zero weight in the loss, so the solution is that of the unpadded problem.
    ``num_active`` (traced): solve only rounds ``0..num_active-1`` (a loop of that many rounds; the later entries are
    zeros), so one program serves every chain length up to ``num_rounds`` (:func:`bucket_rounds`).
    """
    coords = phi if isinstance(phi, Coordinates) else None
    phi = phi if coords is None else coords.phi
    chex.assert_rank([phi, targets, lam], [2, 2, 0])  # Phi (N, M), T (N, K), one lam
    chex.assert_equal_shape_prefix([phi, targets], 1)
    lossfn = get_loss(loss)
    solve = SOLVERS[solver]
    n, m = phi.shape
    k = targets.shape[1]
    basis = colsq = None
    if coords is not None:
        if fit_intercept or n <= IMPLICIT_ROWS_PER_CLASS * k:
            phi = phi @ coords.basis  # rotate once: Phi = X R
        else:
            basis, colsq = coords.basis, coords.colsq
    dtype = phi.dtype
    count, mask = n, None
    if num_valid is not None:
        count = jnp.asarray(num_valid, dtype)
        mask = (jnp.arange(n) < num_valid).astype(dtype)
    keep = (lambda a: a) if mask is None else (lambda a: a * mask[:, None])  # zero on the padding rows
    targets = keep(targets.astype(dtype))
    lam = jnp.asarray(lam, dtype)
    mean = jnp.sum(phi, axis=0) / count  # padding rows are zero
    if fit_intercept:
        # unregularised bias: centred coordinates plus a constant one with L2 weight 0
        phi = keep(jnp.concatenate([phi - mean, jnp.ones((n, 1), dtype)], axis=1))

    def reg(lam):
        """The L2 weight per coordinate: ``lam``, or a ``(1, M + 1)`` row with 0 on the bias."""
        return jnp.concatenate([jnp.full((1, m), lam), jnp.zeros((1, 1), dtype)], axis=1) if fit_intercept else lam

    # separate passes (barriers): fused, XLA's CPU backend materialised Phi * Phi (2.7x slower)
    ph = phi
    if colsq is None:
        colsq = jnp.sum(ph * ph, axis=0)
        ph, colsq = jax.lax.optimization_barrier((ph, colsq))
    max_row = jnp.sqrt(jnp.max(jnp.sum(ph * ph, axis=1)))
    ph, max_row = jax.lax.optimization_barrier((ph, max_row))
    start32 = coords is not None and solver == "auto" and n * m * k >= START32_MIN_WORK
    ops = _Ops(ph, ph.astype(jnp.float32), colsq, max_row, basis, count, mask, start32)
    if init_coef is None:
        v0 = jnp.zeros((k, phi.shape[1]), dtype)  # class-major (K, M), as the solvers work
    elif not fit_intercept:
        v0 = jnp.asarray(init_coef, dtype).T @ phi  # the start's weights W = A^T X in these coordinates
    else:
        # the centred columns carry W = A^T (X - mean) + (sum_i A_i) mean and the constant one b + W mean
        a = jnp.asarray(init_coef, dtype)
        v0 = a.T @ phi[:, :m] + jnp.sum(a, axis=0)[:, None] * mean[None, :]
        b = jnp.zeros(k, dtype) if init_intercepts is None else jnp.asarray(init_intercepts, dtype)
        v0 = jnp.concatenate([v0, (b + v0 @ mean)[:, None]], axis=1)

    rtol = jnp.asarray(rtol, dtype)
    lams = jnp.broadcast_to(lam, (num_rounds,)) if lams is None else jnp.asarray(lams, dtype)

    def one_round(carry, lam):
        t, v, chain_ok = carry
        lam_c = reg(lam)
        s = solve(ops, t.T, lam_c, v, loss=lossfn, q=q, tol=tol, max_iter=max_iter, max_cg=max_cg, rtol=rtol)
        z = s.z.T
        p = jax.nn.softmax(z, axis=-1)
        coef = keep(-lossfn.grad(t, z, q) / (count * lam))
        grad = s.w + lam_c * s.v
        kkt = _kkt(s.w, s.v, lam_c)
        # with an intercept logits (x - mean) V + b' = G(x, train) A + (b' - mean V) (the sum of A over instances is 0)
        bias = s.v[:, m] - s.v[:, :m] @ mean if fit_intercept else jnp.zeros(k, dtype)
        bound = jnp.full((), jnp.inf, dtype) if fit_intercept else 0.5 * ops.max_row * jnp.sqrt(_vdot(grad, grad)) / lam
        # convergence is a property of the chain: round r is trained on round r - 1's outputs
        conv = chain_ok & ((s.res <= tol) | (kkt <= rtol))
        out = (p, s.res, jnp.max(jnp.abs(grad)), s.it, conv, coef, kkt, bound, bias)
        return (keep(next_targets_core(p, z, targets, temperature, xi, hard, tie_tol)), s.v, conv), out

    carry0 = (targets, v0, jnp.ones((), bool))
    if num_active is None:
        _, outs = jax.lax.scan(one_round, carry0, lams)
    else:
        shapes = jax.eval_shape(one_round, carry0, lam)[1]
        outs = jax.tree_util.tree_map(lambda a: jnp.zeros((num_rounds, *a.shape), a.dtype), shapes)

        def active_round(r, state):
            carry, outs = one_round(state[0], lams[r])
            return carry, jax.tree_util.tree_map(lambda a, o: a.at[r].set(o), state[1], outs)

        _, outs = jax.lax.fori_loop(0, num_active, active_round, (carry0, outs))
    return ExactResult(*outs)


def spectral_features(spec: Spectrum) -> jax.Array:
    """``Phi = U diag(sqrt(s))`` (``(N, M)``, ``Phi Phi^T = G``); zero columns for ``s = 0``."""
    return spec.eigvecs * jnp.sqrt(jnp.maximum(spec.eigvals, 0.0))[None, :]


def exact_outputs_core(
    spec: Spectrum,
    targets: jax.Array,
    lam: jax.Array,
    num_rounds: int,
    *,
    q: Any = 0.7,
    tol: Any = DEFAULT_TOL,
    max_iter: Any = DEFAULT_MAX_ITER,
    max_cg: int = DEFAULT_MAX_CG,
    rtol: Any = DEFAULT_RTOL,
    **options: Any,
) -> ExactResult:
    """Exact outputs of rounds ``0..num_rounds-1`` from a precomputed spectrum (jitted, no validation).

    ``options``: the others of :func:`exact_phi_core`. vmaps over ``targets``, ``lam``, ``spec``, ``q``, ``tol``;
    ``num_rounds``, ``loss``, ``max_cg`` and ``solver`` are static. Never raises: unconverged rounds are flagged.
    """
    traced = dict(q=q, tol=tol, max_iter=max_iter, rtol=rtol)
    return exact_phi_core(spectral_features(spec), targets, lam, num_rounds, max_cg=int(max_cg), **traced, **options)


def _check_number(x, name, what):
    """One real number (not a bool, string or array of values) as a Python float; ``what`` names it in errors."""
    if isinstance(x, (bool, np.bool_)):
        raise TypeError(f"{name} ({what}) must be a real number, got a bool ({x!r})")
    arr = V.check_real_array(x, name)
    if arr.ndim != 0:
        raise ValueError(
            f"{name} ({what}) must be a scalar, got shape {arr.shape}; for a grid of {name}, vmap "
            "sdtheory.exact.exact_outputs_core"
        )
    return float(arr)


def check_options(loss, q, tol, max_iter, on_failure, solver, rtol=DEFAULT_RTOL):
    """``TypeError``/``ValueError`` naming the first bad option of the exact solver."""
    get_loss(loss)
    qv = _check_number(q, "q", "GCE exponent")
    if loss == "gce" and not (0.0 < qv <= 1.0):
        raise ValueError(f"q (GCE exponent) must lie in (0, 1], got {q!r}")
    tv = _check_number(tol, "tol", "stopping tolerance on the fixed-point residual")
    if not (tv > 0 and np.isfinite(tv)):
        raise ValueError(f"tol must be a positive finite float, got {tol!r}")
    if not 0.0 <= _check_number(rtol, "rtol", "stopping tolerance on the scale-free stationarity kkt") < 1.0:
        raise ValueError(f"rtol (stopping tolerance on the scale-free stationarity) must lie in [0, 1), got {rtol!r}")
    V.check_int(max_iter, "max_iter", minimum=1, maximum=2**31 - 1, why="the iteration counters are int32")
    if not isinstance(on_failure, str) or on_failure not in ("raise", "flag"):
        raise ValueError(f"on_failure must be 'raise' or 'flag', got {on_failure!r}")
    V.check_choice(solver, "solver", tuple(sorted(SOLVERS)))


#: Above this many rows per class the preconditioners apply the basis (``2 K d^2`` each) instead of rotating once.
IMPLICIT_ROWS_PER_CLASS = 200


@jax.jit
def _prepare_features(x):
    """:class:`Coordinates` of features (``d < N``): float32 eigenvectors of ``X^T X`` made orthogonal in float64 by
    two Newton-Schulz steps ``R (3 I - R^T R) / 2`` (each squares ``||R^T R - I||``)."""
    top = jnp.max(jnp.abs(x))
    top = jnp.where(top > 0, top, 1.0)
    x32 = (x / top).astype(jnp.float32)
    s, r = jnp.linalg.eigh(x32.T @ x32)
    r = r.astype(x.dtype)
    for _ in range(2):
        r = r @ (1.5 * jnp.eye(r.shape[0], dtype=x.dtype) - 0.5 * (r.T @ r))
    return Coordinates(x, r, jnp.maximum(s.astype(x.dtype), 0.0) * top**2)


def bucket_rounds(r: int) -> int:
    """The compiled chain length for ``r`` rounds: at least 4, then as :func:`bucket_rows` (at most 25% more)."""
    return max(4, bucket_rows(r))


def bucket_rows(n: int) -> int:
    """The padded row count of ``n`` instances: ``n`` up to 8, else the least ``m 2^e >= n`` with ``m`` in 5..8.

    Four shapes per octave, at most 25% padding rows: the exact solver compiles once per bucket, not once per ``N``.
    """
    e = max(0, (n - 1).bit_length() - 3)
    return -(-n // (1 << e)) << e


def _pad(a: Any, rows: int, cols: int | None = None) -> jax.Array:
    """``a`` (float64) zero-padded to ``(rows, cols)`` on the host (no compile); ``a`` itself at that shape."""
    cols = a.shape[1] if cols is None else cols
    pad = ((0, rows - a.shape[0]), (0, cols - a.shape[1]))
    return jax.device_put(a if a.shape == (rows, cols) else np.pad(np.asarray(a), pad))


@jax.jit
def _gram_factor(g):
    """Eigenvalues ``s`` and ``Phi = U diag(sqrt s)`` of a symmetrised Gram (``eigh``: faster than a thin SVD here)."""
    s, u = jnp.linalg.eigh(0.5 * (g + g.T), symmetrize_input=False)
    return s, u * jnp.sqrt(jnp.maximum(s, 0.0))


def solver_features(
    *, gram: Any = None, features: Any = None, spec: Spectrum | None = None, rows: int | None = None
) -> jax.Array | Coordinates:
    """The solver's coordinates ``Phi`` (``Phi Phi^T = G``), computed once per training set (validated inputs).

    From features with ``d < N``: :class:`Coordinates` (``X`` and the eigenbasis ``R`` of ``X^T X``, weight space); with
    ``d >= N``, a Gram (its eigenvalues checked ``>= 0``) or a spectrum: ``U diag(sqrt s)``. ``rows``: pad with zero
    rows to this count (and the Gram's ``N`` coordinates to as many), as :func:`exact_phi_core` with ``num_valid``
    expects; the eigendecomposition sees the instances only.
    """
    if spec is None and features is not None:
        features = jnp.asarray(features, dtype=float)
        if features.shape[1] < features.shape[0]:
            return _prepare_features(features if rows is None else _pad(features, rows))
    if spec is not None:
        u, s = np.asarray(spec.eigvecs), np.asarray(spec.eigvals)
        phi = u * np.sqrt(np.maximum(s, 0.0))
    else:
        g = features @ features.T if features is not None else gram
        s, phi = _gram_factor(jnp.asarray(g, dtype=float))
        if gram is not None:
            V.check_psd_eigenvalues(s)
    return jnp.asarray(phi) if rows is None else _pad(phi, rows, bucket_rows(phi.shape[1]))


def raise_unconverged(
    res: Any, tol: float, max_iter: int, rounds: Any = None, rtol: float = DEFAULT_RTOL, solver: str = ""
) -> None:
    """``RuntimeError`` naming the rounds of ``res`` (ExactResult or PLLResult) that missed ``tol`` and ``rtol``."""
    if V.is_tracer(res.converged) or bool(np.all(conv := np.asarray(res.converged))):
        return
    has_kkt = hasattr(res, "kkt")  # an ExactResult (the PLL pipeline reports residuals only)
    own = (np.asarray(res.residuals) <= tol) | (has_kkt and np.asarray(res.kkt) <= rtol)
    bad_pos = np.flatnonzero(~conv & ~own)
    if bad_pos.size == 0:  # tolerances other than the solve's: name every unconverged round
        bad_pos = np.flatnonzero(~conv)
    later = int(np.sum(~conv)) - bad_pos.size  # unconverged only through an earlier round
    bad = bad_pos.tolist() if rounds is None else np.asarray(rounds)[bad_pos].tolist()
    fmt = lambda a: "[" + ", ".join(f"{float(x):.2g}" for x in a) + "]"  # noqa: E731
    measures = f"residuals {fmt(np.asarray(res.residuals)[bad_pos])}"
    worst = 1.0
    if has_kkt:
        kkt = np.asarray(res.kkt)[bad_pos]
        worst = float(np.max(kkt))
        measures += f", kkt {fmt(kkt)}, certified output error bounds {fmt(np.asarray(res.error_bounds)[bad_pos])}"
    stalled = np.asarray(res.iterations)[bad_pos] < max_iter if hasattr(res, "iterations") else np.zeros(1, bool)
    if np.any(stalled):
        # a solver ends a round early only when its line search finds no decrease
        advice = (
            "The solver stopped before max_iter because no step decreased the objective: the residual is at "
            "its float64 roundoff floor, which grows as 1/lam (the implied weights are the data gradient / "
            "lam). Pass a larger tol (e.g. 10x the residual above) or raise lam; more iterations do not help"
        )
    elif worst < 1e-10:
        # stationary to near working precision: the residual floor of an ill-conditioned problem
        advice = (
            f"The weights are stationary to a relative {worst:.1g}, near float64 precision: the residual cannot "
            f"go lower at this scale of G / lam. Pass a larger rtol (e.g. {10 * worst:.0e}) or tol, or "
            "standardise the features / raise lam"
        )
    else:
        switch = "" if solver in ("auto", "newton-cg") else "use solver='auto' or 'newton-cg' (Newton steps), "
        advice = (
            f"Raise max_iter, {switch}standardise the features (zero mean, unit variance) or raise lam: "
            "small lam relative to the feature scale makes the problem ill-conditioned"
        )
    chained = f" ({later} later round(s) are unconverged with them: each is trained on the one before)" if later else ""
    raise RuntimeError(
        f"exact solver did not reach tol={tol:g} (fixed-point residual) or rtol={rtol:g} (scale-free "
        f"stationarity kkt) in round(s) {bad} within max_iter={max_iter}{chained}: {measures}. {advice}; or pass "
        "on_failure='flag' to get the unconverged result with converged=False."
    )
