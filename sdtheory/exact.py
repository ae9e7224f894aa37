r"""The exact (nonlinear softmax) solution of every self-distillation round.

Model (docs/theory.md section 1, docs/exact_solver.md). ``N`` instances with Gram
``G`` (``N x N``, or features ``X`` with ``G = X X^T``), targets ``T``
(``N x K``), logits ``z_i = W x_i`` and the objective

.. math:: L(W) = \frac1N \sum_i \ell(t_i, W x_i) + \frac{\lambda}{2} \|W\|_F^2

with ``ell`` = cross-entropy (``loss="ce"``, convex, unique minimiser) or the
generalised cross-entropy (``loss="gce"``, not convex: a stationary point is
returned). Round 0 fits the given targets, round ``r`` fits the training
outputs of round ``r - 1``.

Coordinates. With ``G = U diag(s) U^T`` every instance gets the feature row
``phi_i = sqrt(s) * U[i]`` (``M`` coordinates, ``Phi = U diag(sqrt s)``,
``Phi Phi^T = G``), and ``W`` acts through ``V`` (``M x K``), logits
``Z = Phi V``. Directions with ``s = 0`` have a zero column of ``Phi``: their
coordinate of ``V`` has gradient ``lam V`` and stays at zero; nothing is
divided by ``s``. From features the solver may use ``Phi = X R`` with ``R``
the eigenvectors of ``X^T X`` (weight space in a rotated orthonormal basis).

Stationarity: ``V = -Phi^T g / (N lam)`` with ``g = d ell / d z`` row-wise, so
the logits are ``G A`` with dual coefficients ``A = -g / (N lam)`` (``N x K``);
for CE ``A = (T - P) / (N lam)`` and the outputs solve the fixed point
``P = softmax((T - P) G / (N lam))``. The solver stops when the *fixed-point
residual* ``max |softmax(Z) - softmax(G A(Z))|`` is ``<= tol``.

Algorithm (chosen by measurement across lam = 1e-6..10, docs/exact_solver.md):
L-BFGS in the coordinates preconditioned by the zero-logit Hessian diagonal
``s/(K N) + lam``, with a line search along ``d`` that needs no product with
``Phi`` beyond ``Phi d`` (each trial is O(N K^2)) and two passes over ``Phi``
per iteration (the residual product is fused with ``Phi d``). Truncated
Newton (``solver="newton-cg"``) and optax's L-BFGS (``solver="optax-lbfgs"``)
are kept for comparison.
"""

from __future__ import annotations

from functools import partial
from typing import Any, NamedTuple

import chex
import jax
from jax.typing import ArrayLike
import jax.numpy as jnp
import numpy as np

from . import _validation as V
from ._x64 import float64
from .losses import get_loss
from .metrics import TIE_TOL
from .spectral import Spectrum, _spectrum as spectrum
from .variants import next_targets_core

__all__ = [
    "DEFAULT_MAX_CG",
    "DEFAULT_MAX_ITER",
    "DEFAULT_TOL",
    "SOLVERS",
    "ExactResult",
    "check_options",
    "exact_outputs",
    "exact_outputs_core",
    "exact_phi_core",
    "exact_predict",
    "raise_unconverged",
    "solver_features",
    "spectral_features",
]

#: Default stopping tolerance on the fixed-point residual (float64).
DEFAULT_TOL = 1e-9
#: Default budget of outer (L-BFGS or Newton) iterations per round.
DEFAULT_MAX_ITER = 1000
#: Default budget of conjugate-gradient iterations per Newton step.
DEFAULT_MAX_CG = 200
#: L-BFGS memory (number of stored curvature pairs).
MEMORY = 10
RESCALE_WARM_START = True


class ExactResult(NamedTuple):
    """Exact outputs of ``R`` chained rounds (a pytree; vmaps add leading axes).

    Attributes:
      outputs: ``(R, N, K)`` softmax outputs on the training instances.
      residuals: ``(R,)`` fixed-point residual ``max |P - softmax(G A)|`` with
        ``A = -(1/(N lam)) d loss/d logits`` evaluated at ``P``; for CE this is
        ``max |P - softmax((T - P) G / (N lam))|``.
      grad_norms: ``(R,)`` max-abs gradient of the objective with respect to
        the weights in the orthonormal coordinates ``V`` (for features: ``W``
        rotated by an orthogonal matrix, so the 2-norm equals ``||dL/dW||``).
      iterations: ``(R,)`` outer (L-BFGS or Newton) iterations used.
      converged: ``(R,)`` whether the residual reached ``tol``.
      coef: ``(R, N, K)`` dual coefficients ``A_r``: logits on any point ``x``
        are ``G(x, train) @ A_r``.
    """

    outputs: jax.Array
    residuals: jax.Array
    grad_norms: jax.Array
    iterations: jax.Array
    converged: jax.Array
    coef: jax.Array


# --------------------------------------------------------------------------
# Core: one round, feature matrix Phi (N, M) with Phi Phi^T = G.
# --------------------------------------------------------------------------


def _vdot(a, b):
    return jnp.sum(a * b)


class _State(NamedTuple):
    v: jax.Array  # (M, K) weights
    z: jax.Array  # (N, K) logits Phi v
    w: jax.Array  # (M, K) Phi^T g / N
    res: jax.Array  # fixed-point residual
    it: jax.Array


def _evaluate(phi, t, lam, v, loss, q):
    """Logits, data gradient ``Phi^T g / N`` and fixed-point residual at ``v``."""
    n = phi.shape[0]
    z = phi @ v
    g = loss.grad(t, z, q)
    w = phi.T @ g / n
    # logits implied by stationarity: G A = -Phi Phi^T g / (N lam) = -Phi w / lam
    za = -(phi @ w) / lam
    res = jnp.max(jnp.abs(jax.nn.softmax(z, axis=-1) - jax.nn.softmax(za, axis=-1)))
    return z, w, res


def _objective_along(t, lam, z, zd, v, d, alpha, loss, q):
    data = jnp.mean(loss.value(t, z + alpha * zd, q))
    vv = v + alpha * d
    return data + 0.5 * lam * _vdot(vv, vv)


def _hessian_diag(phi2, t, z, lam, loss, q):
    """Exact diagonal of the Hessian in ``v``: ``sum_i phi_im^2 J_g(z_i)_kk / N + lam``."""
    n, k = z.shape
    gfun = lambda zz: loss.grad(t, zz, q)  # noqa: E731

    def col(e):
        return jax.jvp(gfun, (z,), (jnp.broadcast_to(e, z.shape),))[1] @ e

    jdiag = jax.vmap(col, out_axes=1)(jnp.eye(k, dtype=z.dtype))  # (N, K)
    diag = phi2.T @ jdiag / n + lam
    return jnp.maximum(diag, lam)


def _newton_cg_round(phi, phi2, t, lam, v0, mem, *, loss, q, tol, max_iter, max_cg):
    n = phi.shape[0]
    gfun = lambda zz: loss.grad(t, zz, q)  # noqa: E731

    z0, w0, res0 = _evaluate(phi, t, lam, v0, loss, q)
    init = _State(v0, z0, w0, res0, jnp.zeros((), jnp.int32))

    def cond(s):
        return (s.res > tol) & (s.it < max_iter)

    def body(s):
        grad = s.w + lam * s.v
        gnorm = jnp.sqrt(_vdot(grad, grad))
        diag = _hessian_diag(phi2, t, s.z, lam, loss, q)

        def hvp(d):
            zd = phi @ d
            jd = jax.jvp(gfun, (s.z,), (zd,))[1]
            return phi.T @ jd / n + lam * d

        # Preconditioned CG on H x = -grad, forcing term eta = min(0.5, sqrt(|grad|)).
        b = -grad
        eta = jnp.minimum(0.5, jnp.sqrt(gnorm))
        r0 = b
        zc0 = r0 / diag
        cg0 = (jnp.zeros_like(b), r0, zc0, zc0, _vdot(r0, zc0), jnp.zeros((), jnp.int32), jnp.zeros((), bool))

        def cg_cond(c):
            return (~c[6]) & (c[5] < max_cg)

        def cg_body(c):
            x, r, zc, p, rz, k, _ = c
            hp = hvp(p)
            php = _vdot(p, hp)
            neg = php <= 0
            alpha = rz / jnp.where(neg, 1.0, php)
            x_new = jnp.where(neg, jnp.where(k == 0, zc0, x), x + alpha * p)
            r_new = r - alpha * hp
            small = jnp.sqrt(_vdot(r_new, r_new)) <= eta * gnorm
            zc_new = r_new / diag
            rz_new = _vdot(r_new, zc_new)
            p_new = zc_new + (rz_new / jnp.where(rz == 0, 1.0, rz)) * p
            return (x_new, r_new, zc_new, p_new, rz_new, k + 1, neg | small)

        d = jax.lax.while_loop(cg_cond, cg_body, cg0)[0]

        # Armijo backtracking along d; Phi d computed once, each trial is O(N K).
        zd = phi @ d
        f0 = _objective_along(t, lam, s.z, zd, s.v, d, 0.0, loss, q)
        slope = _vdot(grad, d)
        slack = 100 * jnp.finfo(z0.dtype).eps * (1.0 + jnp.abs(f0))

        def ls_cond(c):
            a, j = c
            fa = _objective_along(t, lam, s.z, zd, s.v, d, a, loss, q)
            ok = fa <= f0 + 1e-4 * a * slope + slack
            return (~ok) & (j < 60)

        alpha, _ = jax.lax.while_loop(ls_cond, lambda c: (0.5 * c[0], c[1] + 1), (jnp.ones((), z0.dtype), 0))
        v_new = s.v + alpha * d
        z, w, res = _evaluate(phi, t, lam, v_new, loss, q)
        return _State(v_new, z, w, res, s.it + 1)

    return jax.lax.while_loop(cond, body, init), mem


def _optax_lbfgs_round(phi, phi2, t, lam, v0, mem, *, loss, q, tol, max_iter, max_cg):
    """Preconditioned optax L-BFGS (zoom line search); kept for the comparison."""
    import optax

    del max_cg
    n, k = phi.shape[0], t.shape[1]
    scale = jnp.sqrt(jnp.sum(phi2, axis=0) / (k * n) + lam)[:, None]  # sqrt(s/(KN) + lam)

    def f(u):
        v = u / scale
        return jnp.mean(loss.value(t, phi @ v, q)) + 0.5 * lam * _vdot(v, v)

    opt = optax.lbfgs()
    vg = optax.value_and_grad_from_state(f)
    u0 = v0 * scale
    z0, w0, res0 = _evaluate(phi, t, lam, v0, loss, q)

    def cond(c):
        return (c[3] > tol) & (c[2] < max_iter)

    def body(c):
        u, st, it, _ = c
        val, g = vg(u, state=st)
        upd, st = opt.update(g, st, u, value=val, grad=g, value_fn=f)
        u = optax.apply_updates(u, upd)
        res = _evaluate(phi, t, lam, u / scale, loss, q)[2]
        return (u, st, it + 1, res)

    u, _, it, _ = jax.lax.while_loop(cond, body, (u0, opt.init(u0), jnp.zeros((), jnp.int32), res0))
    v = u / scale
    z, w, res = _evaluate(phi, t, lam, v, loss, q)
    return _State(v, z, w, res, it), mem


def _line_search(t, lam, z, zd, v, d, slope0, loss, q, max_ls):
    """Safeguarded 1-D Newton/bisection for phi'(alpha) = 0 along ``d``.

    ``phi(alpha) = mean loss(t, z + alpha zd) + lam/2 |v + alpha d|^2``; each
    trial costs O(N K^2) (no matmul). Stops when ``|phi'| <= 0.1 |phi'(0)|``
    (a strong Wolfe point) or after ``max_ls`` trials; the returned step
    always has ``phi'(alpha) < 0`` on its left bracket, so it is a descent step
    for convex losses; a step that increases the objective is replaced by the
    left bracket.
    """
    n = z.shape[0]
    gfun = lambda zz: loss.grad(t, zz, q)  # noqa: E731
    dd = _vdot(d, d)
    vd = _vdot(v, d)

    def dphi(a):
        za = z + a * zd
        g, jg = jax.jvp(gfun, (za,), (zd,))
        return _vdot(g, zd) / n + lam * (vd + a * dd), _vdot(jg, zd) / n + lam * dd

    def cond(c):
        a, lo, hi, der, j = c
        return (jnp.abs(der) > 0.1 * jnp.abs(slope0)) & (j < max_ls)

    def body(c):
        a, lo, hi, der, j = c
        # der is phi'(a): update the bracket
        lo = jnp.where(der < 0, a, lo)
        hi = jnp.where(der > 0, a, hi)
        d1, d2 = dphi(a)
        newton = a - d1 / jnp.where(d2 > 0, d2, 1.0)
        fallback = jnp.where(jnp.isfinite(hi), 0.5 * (lo + hi), 2.0 * jnp.maximum(lo, a))
        ok = (d2 > 0) & (newton > lo) & (newton < hi) & jnp.isfinite(newton)
        a_new = jnp.where(ok, newton, fallback)
        der_new = dphi(a_new)[0]
        return (a_new, lo, hi, der_new, j + 1)

    one = jnp.ones((), z.dtype)
    der1 = dphi(one)[0]
    a, lo, hi, der, _ = jax.lax.while_loop(
        cond, body, (one, jnp.zeros((), z.dtype), jnp.full((), jnp.inf, z.dtype), der1, 0)
    )
    f0 = _objective_along(t, lam, z, zd, v, d, 0.0, loss, q)
    fa = _objective_along(t, lam, z, zd, v, d, a, loss, q)
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


def _init_memory(m_dim, k, dtype, memory=MEMORY):
    """Empty L-BFGS memory ``(S, Y, rho, count, gamma)``."""
    return (
        jnp.zeros((memory, m_dim, k), dtype),
        jnp.zeros((memory, m_dim, k), dtype),
        jnp.zeros((memory,), dtype),
        jnp.zeros((), jnp.int32),
        jnp.ones((), dtype),
    )


def _lbfgs_round(phi, phi2, t, lam, v0, mem, *, loss, q, tol, max_iter, max_cg, max_ls=20):
    """L-BFGS in preconditioned coordinates ``u = v * sqrt(h)``, ``h = s/(K N) + lam``.

    Two passes over ``Phi`` per iteration (the products are memory-bound at
    small ``K``): ``Phi^T g`` for the gradient, and one product
    ``Phi [w | d]`` that gives both the residual of the current point and
    ``Phi d`` for the next line search. Curvature pairs with ``s^T y <= 0``
    (possible for GCE) are skipped.
    """
    del max_cg
    n, k = phi.shape[0], t.shape[1]
    dtype = phi.dtype
    memory = mem[0].shape[0]
    scale = jnp.sqrt(jnp.sum(phi2, axis=0) / (k * n) + lam)[:, None]  # sqrt(s/(KN) + lam)

    def residual_and_zd(z, w, d):
        both = phi @ jnp.concatenate([w, d], axis=1)
        za = -both[:, :k] / lam
        res = jnp.max(jnp.abs(jax.nn.softmax(z, axis=-1) - jax.nn.softmax(za, axis=-1)))
        return res, both[:, k:]

    z0 = phi @ v0
    if RESCALE_WARM_START:
        # Rescale the warm start along the ray through 0 (free: Phi v0 = z0 is
        # known). From the previous round's optimum the new gradient is lam v0.
        w_pre = phi.T @ loss.grad(t, z0, q) / n
        slope_pre = _vdot(w_pre + lam * v0, -v0)
        a_pre = jnp.where(slope_pre < 0, _line_search(t, lam, z0, -z0, v0, -v0, slope_pre, loss, q, max_ls), 0.0)
        v0 = v0 * (1.0 - a_pre)
        z0 = z0 * (1.0 - a_pre)
    w0 = phi.T @ loss.grad(t, z0, q) / n
    gu0 = (w0 + lam * v0) / scale
    du0 = _two_loop(gu0, *mem, memory)  # type: ignore[call-arg]  # mem is (S, Y, rho, count, gamma)
    du0 = jnp.where(_vdot(gu0, du0) < 0, du0, -gu0)
    res0, zd0 = residual_and_zd(z0, w0, du0 / scale)

    def cond(c):
        return (c[5] > tol) & (c[6] < max_iter)

    def body(c):
        v, z, w, gu, du, res, it, zd, S, Y, rho, count, gamma = c
        d = du / scale
        slope = _vdot(gu, du)
        alpha = _line_search(t, lam, z, zd, v, d, slope, loss, q, max_ls)
        v_new = v + alpha * d
        z_new = z + alpha * zd
        w_new = phi.T @ loss.grad(t, z_new, q) / n
        gu_new = (w_new + lam * v_new) / scale
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
        du_new = jnp.where(bad, -gu_new, du_new)
        res_new, zd_new = residual_and_zd(z_new, w_new, du_new / scale)
        return (v_new, z_new, w_new, gu_new, du_new, res_new, it + 1, zd_new, S, Y, rho, count, gamma)

    init = (v0, z0, w0, gu0, du0, res0, jnp.zeros((), jnp.int32), zd0) + tuple(mem)
    out = jax.lax.while_loop(cond, body, init)
    v, z, w, _, _, res, it = out[:7]
    # (P, A, residual) are evaluated at the running logits z, so they are
    # mutually consistent; z equals Phi v up to accumulated roundoff.
    return _State(v, z, w, res, it), out[8:]


#: The exact solvers by name (one round each; the registry the CLIs offer as choices).
SOLVERS = {"lbfgs": _lbfgs_round, "newton-cg": _newton_cg_round, "optax-lbfgs": _optax_lbfgs_round}


@partial(jax.jit, static_argnames=("num_rounds", "loss", "max_cg", "solver", "hard"))
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
    solver="lbfgs",
    lams=None,
    temperature=1.0,
    xi=1.0,
    hard=False,
    tie_tol=TIE_TOL,
):
    """Rounds ``0..num_rounds-1`` in the solver coordinates ``phi`` (jitted, no validation).

    Round ``r``'s targets come from round ``r - 1`` by
    :func:`sdtheory.variants.next_targets_core` (``temperature``, ``xi``,
    ``hard``; the defaults are plain SD, ``T_r = P_{r-1}``); ``lams``
    ``(num_rounds,)`` is a lam schedule (default: ``lam`` every round).
    """
    chex.assert_rank([phi, targets, lam], [2, 2, 0])  # Phi (N, M), T (N, K), one lam
    chex.assert_equal_shape_prefix([phi, targets], 1)
    lossfn = get_loss(loss)
    solve = SOLVERS[solver]
    n = phi.shape[0]
    dtype = phi.dtype
    targets = targets.astype(dtype)
    lam = jnp.asarray(lam, dtype)
    phi2 = phi * phi
    v0 = jnp.zeros((phi.shape[1], targets.shape[1]), dtype)

    mem0 = _init_memory(phi.shape[1], targets.shape[1], dtype)

    lams = jnp.broadcast_to(lam, (num_rounds,)) if lams is None else jnp.asarray(lams, dtype)

    def one_round(carry, lam):
        t, v = carry
        # A fresh L-BFGS memory each round: carrying the previous round's pairs
        # was measured to cost more iterations (docs/exact_solver.md).
        s, _ = solve(phi, phi2, t, lam, v, mem0, loss=lossfn, q=q, tol=tol, max_iter=max_iter, max_cg=max_cg)
        p = jax.nn.softmax(s.z, axis=-1)
        coef = -lossfn.grad(t, s.z, q) / (n * lam)
        grad = s.w + lam * s.v
        out = (p, s.res, jnp.max(jnp.abs(grad)), s.it, s.res <= tol, coef)
        return (next_targets_core(p, s.z, targets, temperature, xi, hard, tie_tol), s.v), out

    _, outs = jax.lax.scan(one_round, (targets, v0), lams)
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
    loss: str = "ce",
    q: float = 0.7,
    tol: float = DEFAULT_TOL,
    max_iter: int = DEFAULT_MAX_ITER,
    max_cg: int = DEFAULT_MAX_CG,
    solver: str = "lbfgs",
    **variant: Any,
) -> ExactResult:
    """Exact outputs of rounds ``0..num_rounds-1`` from a precomputed spectrum.

    ``variant``: the round-chaining options of :func:`exact_phi_core`
    (``lams``, ``temperature``, ``xi``, ``hard``, ``tie_tol``; module
    :mod:`sdtheory.variants`).

    Jitted, no validation (use :func:`exact_outputs` or
    :func:`sdtheory.predictor` at the public boundary). Works under
    ``jax.vmap`` over ``targets`` and ``lam`` (and ``spec``, ``q``, ``tol``);
    ``num_rounds``, ``loss``, ``max_cg`` and ``solver`` are static (``q``,
    ``tol`` and ``max_iter`` are traced, so changing them does not
    recompile). Unconverged rounds are reported by ``converged=False``; this
    function never raises. The rounds are a chain, so this kernel takes a
    count, not round indices.
    """
    return exact_phi_core(
        spectral_features(spec),
        targets,
        lam,
        num_rounds,
        loss=loss,
        q=q,
        tol=tol,
        max_iter=max_iter,
        max_cg=int(max_cg),
        solver=solver,
        **variant,
    )


def _check_number(x, name, what):
    """One real number (Python/NumPy int or float, 0-d array; not bool, str, array of values); a Python float."""
    if V.is_tracer(x):
        raise TypeError(
            f"{name} is a traced value: the validating functions need a concrete number; vmap "
            "sdtheory.exact.exact_outputs_core instead"
        )
    if isinstance(x, (bool, np.bool_)):
        raise TypeError(f"{name} ({what}) must be a real number, got a bool ({x!r})")
    arr = V._as_numpy(x, name)
    if arr.ndim != 0:
        raise ValueError(
            f"{name} ({what}) must be a scalar, got shape {arr.shape}; for a grid of {name}, vmap "
            "sdtheory.exact.exact_outputs_core"
        )
    return float(arr)


def check_options(loss, q, tol, max_iter, on_failure, solver):
    """Validate the exact solver's options (loss, GCE ``q``, ``tol``, ``max_iter``, ``on_failure``, ``solver``).

    ``q`` and ``tol`` are single real numbers (not bools); ``q`` in ``(0, 1]``
    (checked for ``loss="gce"``, the loss that uses it), ``tol`` finite and
    ``> 0``; ``max_iter`` an int in ``[1, 2^31 - 1]`` (the iteration counters
    are int32).
    """
    lossfn = get_loss(loss)
    del lossfn
    qv = _check_number(q, "q", "GCE exponent")
    if loss == "gce" and not (0.0 < qv <= 1.0):
        raise ValueError(f"q (GCE exponent) must lie in (0, 1], got {q!r}")
    tv = _check_number(tol, "tol", "stopping tolerance on the fixed-point residual")
    if not (tv > 0 and np.isfinite(tv)):
        raise ValueError(f"tol must be a positive finite float, got {tol!r}")
    V.check_int(max_iter, "max_iter", minimum=1, maximum=2**31 - 1, why="the iteration counters are int32")
    if not isinstance(on_failure, str) or on_failure not in ("raise", "flag"):
        raise ValueError(f"on_failure must be 'raise' or 'flag', got {on_failure!r}")
    if not isinstance(solver, str) or solver not in SOLVERS:
        raise ValueError(f"solver must be one of {sorted(SOLVERS)}, got {solver!r}")


def _prepare_features(x):
    """``Phi = X R`` with ``R`` the eigenvectors of ``X^T X`` (weight space, ``d < N``)."""
    _, r = _eigh(x.T @ x)
    return x @ r


@jax.jit
def _eigh(a):
    return jnp.linalg.eigh(a)


def solver_features(*, gram: Any = None, features: Any = None, spec: Spectrum | None = None) -> jax.Array:
    """The solver's coordinates ``Phi`` (``Phi Phi^T = G``), computed once per training set.

    From features with ``d < N``: ``Phi = X R`` (weight space, ``R`` the
    eigenvectors of ``X^T X``); with ``d >= N`` or a Gram: ``U diag(sqrt s)``
    (eigh of the ``N x N`` Gram, measured faster than a thin SVD here). Inputs
    are assumed validated.
    """
    if spec is not None:
        return spectral_features(spec)
    if features is not None:
        x = jnp.asarray(features, dtype=float)
        if x.shape[1] < x.shape[0]:
            return _prepare_features(x)
        return spectral_features(spectrum(gram=x @ x.T, validate=False))
    return spectral_features(spectrum(gram=gram))


def raise_unconverged(res: Any, tol: float, max_iter: int, rounds: Any = None) -> None:
    """``RuntimeError`` naming the rounds of ``res`` (ExactResult or PLLResult) that missed ``tol`` (concrete)."""
    if V.is_tracer(res.converged) or bool(np.all(np.asarray(res.converged))):
        return
    bad_pos = np.flatnonzero(~np.asarray(res.converged))
    bad = bad_pos.tolist() if rounds is None else np.asarray(rounds)[bad_pos].tolist()
    raise RuntimeError(
        f"exact solver did not reach tol={tol:g} in round(s) {bad} within max_iter={max_iter}: "
        f"residuals {np.asarray(res.residuals)[bad_pos].tolist()}. Raise max_iter or tol, or pass "
        f"on_failure='flag' to get the unconverged result with converged=False."
    )


@float64
def exact_outputs(
    targets: ArrayLike,
    *,
    lam: Any = None,
    rounds: Any = None,
    num_rounds: Any = None,
    gram: ArrayLike | None = None,
    features: ArrayLike | None = None,
    loss: str = "ce",
    q: float = 0.7,
    tol: float = DEFAULT_TOL,
    max_iter: int = DEFAULT_MAX_ITER,
    on_failure: str = "raise",
    solver: str = "lbfgs",
    temperature: Any = 1.0,
    xi: Any = 1.0,
    hard: Any = False,
    lam_schedule: Any = None,
) -> ExactResult:
    r"""Exact softmax outputs of chained self-distillation rounds.

    Round 0 minimises ``(1/N) sum_i loss(t_i, W x_i) + (lam/2) ||W||_F^2`` on
    ``targets``; round ``r`` on the training outputs of round ``r - 1``
    (warm-started from round ``r - 1``'s weights). A thin wrapper over
    :func:`sdtheory.predictor` with ``model="exact"``.

    Args:
      targets: ``(N, K)`` probability rows (one-hot labels, soft labels or
        ``(1/2, 1/2)`` top-2 candidate targets for ``loss="gce"``).
      lam: L2 weight, one real number ``> 0`` (vmap :func:`exact_outputs_core`
        for grids; traced values are refused, also under ``jax.jit``, where
        ``on_failure="raise"`` could not raise).
      rounds: round indices to return (0 = teacher; the chain is solved up to
        the largest, so at most ``10^5 - 1``), or
      num_rounds: a count ``R <= 10^5``: rounds ``0..R-1``. Exactly one of the two.
        The rounds are a chain solved one after another: the bound keeps a
        mistyped count from running for days.
      gram: ``(N, N)`` symmetric PSD Gram (representer/eigenbasis form), or
      features: ``(N, d)`` features (weight space when ``d < N``).
      loss: a name from :data:`sdtheory.LOSSES` (``"ce"`` or ``"gce"`` with
        parameter ``q`` in ``(0, 1]``, not convex).
      tol: stopping tolerance on the fixed-point residual (default 1e-9).
      max_iter: outer iterations per round (default 1000).
      on_failure: ``"raise"`` (RuntimeError if a round misses ``tol``) or
        ``"flag"`` (return with ``converged=False``).
      solver: a name from :data:`SOLVERS` (``"lbfgs"``, the default,
        ``"newton-cg"`` or ``"optax-lbfgs"``).
      temperature, xi, hard: distillation variants (:mod:`sdtheory.variants`):
        round ``r`` fits ``xi * softmax(Z_{r-1}/temperature) + (1 - xi) * targets``,
        or with ``hard=True`` the one-hot argmax of round ``r - 1`` in place of
        the softened outputs.
      lam_schedule: in place of ``lam``, a 1-D sequence with one L2 weight
        for each round ``0..max(rounds)``.

    Returns:
      :class:`ExactResult` with leading axis ``R`` (one entry per requested round).
    """
    from .predictor import predictor

    r = V.resolve_rounds(
        rounds,
        num_rounds,
        maximum=V.MAX_NUM_ROUNDS - 1,
        why="the exact solver solves the chain of rounds 0..max(rounds) one after another",
    )
    p = predictor(
        targets,
        lam=lam,
        gram=gram,
        features=features,
        model="exact",
        num_rounds=int(r.max()) + 1,
        loss=loss,
        q=q,
        tol=tol,
        max_iter=max_iter,
        on_failure=on_failure,
        solver=solver,
        temperature=temperature,
        xi=xi,
        hard=hard,
        lam_schedule=lam_schedule,
    )
    return p.exact_result(rounds=r)


@float64(kernel="jax.nn.softmax(jnp.einsum('tn,rnk->rtk', test_gram, coef))")
def exact_predict(
    result_or_coef: Any,
    *,
    test_gram: ArrayLike | None = None,
    test_features: ArrayLike | None = None,
    features: ArrayLike | None = None,
) -> jax.Array:
    """Softmax outputs ``(R, N_test, K)`` of every round on new points.

    Logits are ``G(test, train) @ A_r`` with the dual coefficients ``A_r``
    (``result.coef``). Pass ``test_gram`` (``(N_test, N)``) or
    ``test_features`` (``(N_test, d)``) together with the training
    ``features`` (``(N, d)``); then ``G(test, train) = X_test X^T`` is never
    formed (``X_test (X^T A_r)``).
    """
    coef = result_or_coef.coef if isinstance(result_or_coef, ExactResult) else result_or_coef
    coef = V._as_numpy(coef, "result_or_coef")
    cshape = coef.shape
    if len(cshape) not in (2, 3) or 0 in cshape:
        raise ValueError(
            f"result_or_coef must be a non-empty (N, K) or (R, N, K) array of dual coefficients (or an "
            f"ExactResult), got shape {tuple(cshape)}"
        )
    V.check_finite(coef, "result_or_coef")
    coef = jnp.asarray(coef, dtype=float)
    n = cshape[-2]
    if test_gram is not None:
        if test_features is not None or features is not None:
            raise ValueError("pass either test_gram=, or test_features= with features=, not both")
        gshape = V.shape_of(test_gram, "test_gram")
        if len(gshape) != 2 or gshape[1] != n or gshape[0] < 1:
            raise ValueError(
                f"test_gram must be (N_test, N) with N_test >= 1 and N = {n} (the instances of "
                f"result_or_coef), got shape {gshape}"
            )
        V.check_finite(test_gram, "test_gram")
        logits = jnp.einsum("tn,...nk->...tk", jnp.asarray(test_gram, dtype=float), coef)
    else:
        if test_features is None or features is None:
            raise ValueError("pass test_gram= (N_test, N), or test_features= (N_test, d) with features= (N, d)")
        fshape = V.check_features(features)
        tshape = V.check_features(test_features, "test_features")
        V.check_same_n(n, fshape[0], "features", "result_or_coef")
        if tshape[1] != fshape[1]:
            raise ValueError(f"test_features has dimension {tshape[1]} but features has {fshape[1]}")
        x = jnp.asarray(features, dtype=float)
        w = jnp.einsum("nd,...nk->...dk", x, coef)
        logits = jnp.einsum("td,...dk->...tk", jnp.asarray(test_features, dtype=float), w)
    return jax.nn.softmax(logits, axis=-1)
