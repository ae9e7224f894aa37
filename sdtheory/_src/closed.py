r"""The linearised closed form of multi-round self-distillation, every variant included (pure; no validation).

Round ``r`` (0 = the teacher) has outputs ``P_r - 1/K = S^{r+1} (T - 1/K)``, ``S = G (G + K N lam I)^{-1}``: along
eigenvector ``u_m`` of ``G`` each round multiplies the centred labels by ``q_m = s_m / (s_m + K N lam)``. A variant
(:class:`Variant`) multiplies them by ``q_r m_r`` with ``m_0 = 1``, ``m_r = (xi q_{r-1} / tau) m_{r-1} + (1 - xi)``;
hard targets run as a chain of linearised rounds. Derivations: docs/closed_form.md, docs/variants.md.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional, Union
from collections.abc import Callable, Sequence

import chex
import jax
import jax.numpy as jnp
import numpy as np

from .rules import TIE_TOL, hard_targets_core
from .spectral import Spectrum, apply_spectral, apply_spectral_to


RoundsLike = Union[int, Sequence[int], np.ndarray]


def shrink_factors(eigvals: jax.Array, ridge: jax.Array) -> jax.Array:
    """Per-round multiplier ``q = s / (s + ridge)`` (``ridge = K N lam`` for CE)."""
    return eigvals / (eigvals + ridge)


def _check_kernel_args(spec: Spectrum, targets: jax.Array, lam: jax.Array, rounds: jax.Array) -> None:
    """The closed-form kernels' contract (trace-time): ``U (N, M)``, ``s (M,)``, ``T (N, K)``, 0-d lam, 1-D rounds."""
    chex.assert_rank([targets, spec.eigvecs, spec.eigvals, lam, rounds], [2, 2, 1, 0, 1])
    chex.assert_shape(spec.eigvecs, (targets.shape[0], spec.eigvals.shape[0]))


def _powers(spec: Spectrum, y: jax.Array, ridge: jax.Array, rounds: jax.Array) -> jax.Array:
    """``(G (G + ridge I)^{-1})^{r+1} y`` for every ``r`` in ``rounds``: ``(R, *y.shape)``."""
    exps = (jnp.asarray(rounds) + 1).astype(spec.eigvals.dtype)
    return apply_spectral(spec, lambda s: shrink_factors(s, ridge)[None, :] ** exps[:, None], y, vanishes_at_zero=True)


@jax.jit
def sd_outputs_core(spec: Spectrum, targets: jax.Array, lam: jax.Array, rounds: jax.Array) -> jax.Array:
    """Closed-form outputs ``(R, N, K)`` from a precomputed :class:`Spectrum` (vmaps over ``targets``, ``lam``)."""
    _check_kernel_args(spec, targets, lam, rounds)
    n, k = targets.shape
    return 1.0 / k + _powers(spec, targets - 1.0 / k, k * n * lam, rounds)


@jax.jit
def sd_predictions_core(spec: Spectrum, targets: jax.Array, lam: jax.Array, rounds: jax.Array) -> jax.Array:
    """``argmax(sd_outputs_core(...), -1)``, ``(R, N)``, one round at a time: ``O(N K)`` memory at large ``R``."""
    n, k = targets.shape
    u = spec.eigvecs
    coef = u.T @ (targets - 1.0 / k)
    q = shrink_factors(spec.eigvals, k * n * lam)
    one = lambda r: jnp.argmax(u @ (q[:, None] ** (r + 1.0) * coef), axis=-1)
    return jax.lax.map(one, jnp.asarray(rounds).astype(q.dtype))


@jax.jit
def sd_test_outputs_core(
    spec: Spectrum, targets: jax.Array, lam: jax.Array, rounds: jax.Array, cross: jax.Array
) -> jax.Array:
    r"""Linearised outputs ``(R, N_test, K)`` on new points, ``cross = G_{test,train} U``.

    ``1/K + G_test (T_r - P_r) / (K N lam) = 1/K + cross diag(q^r / (s + K N lam)) U^T (T - 1/K)``.
    """
    _check_kernel_args(spec, targets, lam, rounds)
    chex.assert_shape(cross, (None, spec.eigvals.shape[0]))
    n, k = targets.shape
    ridge = k * n * lam
    exps = jnp.asarray(rounds).astype(spec.eigvals.dtype)
    fn = lambda s: shrink_factors(s, ridge)[None, :] ** exps[:, None] / (s + ridge)[None, :]
    return 1.0 / k + apply_spectral_to(spec, fn, targets - 1.0 / k, cross)


@jax.jit
def kernel_ridge_sd_core(spec: Spectrum, targets: jax.Array, lam: jax.Array, rounds: jax.Array) -> jax.Array:
    """Kernel-ridge (squared-loss) SD: ``f_r = (G (G + N lam I)^{-1})^{r+1} y``. Exact."""
    return _powers(spec, targets, targets.shape[0] * lam, rounds)


class Variant(NamedTuple):
    """How round ``r``'s targets come from round ``r - 1``: teacher logits divided by ``temperature``, mixed
    with the given labels by ``xi``, or ``hard`` argmax targets (tie tolerance ``tie_tol``); defaults: plain SD."""

    temperature: float = 1.0
    xi: float = 1.0
    hard: bool = False
    tie_tol: float = TIE_TOL

    @property
    def is_plain(self) -> bool:
        """True for plain SD (``T_r = P_{r-1}``)."""
        return self.temperature == 1.0 and self.xi == 1.0 and not self.hard


def next_targets_core(
    outputs: jax.Array,
    logits: jax.Array,
    given: jax.Array,
    temperature: Any = 1.0,
    xi: Any = 1.0,
    hard: bool = False,
    tie_tol: Any = TIE_TOL,
) -> jax.Array:
    """Exact model: round ``r``'s targets from round ``r - 1``'s outputs and logits ``(N, K)`` (``hard`` static)."""
    if hard:
        teacher = hard_targets_core(outputs, tie_tol)
    else:  # shift first: (z - max z) / tau cannot overflow to inf - inf at a small tau
        teacher = jax.nn.softmax((logits - jnp.max(logits, axis=-1, keepdims=True)) / temperature, axis=-1)
    return xi * teacher + (1.0 - xi) * given


def next_targets_linear_core(
    outputs: jax.Array, given: jax.Array, temperature: Any = 1.0, xi: Any = 1.0, hard: bool = False, tie_tol=TIE_TOL
) -> jax.Array:
    """Linearised model: as :func:`next_targets_core` with ``softmax(Z/tau)`` linearised, ``1/K + (P - 1/K)/tau``."""
    k = outputs.shape[-1]
    teacher = hard_targets_core(outputs, tie_tol) if hard else 1.0 / k + (outputs - 1.0 / k) / temperature
    return xi * teacher + (1.0 - xi) * given


def closed_variant_core(
    spec: Spectrum,
    targets: jax.Array,
    lams: jax.Array,
    rounds: jax.Array,
    temperature: Any = 1.0,
    xi: Any = 1.0,
    hard: bool = False,
    tie_tol: Any = TIE_TOL,
    cross: Optional[jax.Array] = None,
    schedule: bool = False,
) -> jax.Array:
    """Linearised outputs ``(R, N, K)`` of a variant (or ``(R, N_test, K)`` with ``cross = G_test,train U``).

    ``lams``: one ``lam``, or with ``schedule=True`` one per round (``max(rounds) < len(lams)``). With ``hard`` (static)
    rounds ``0..max(rounds)`` are chained. Not jitted: ``rounds`` must be concrete when ``hard`` or ``schedule``.
    """
    n, k = targets.shape
    c0 = targets - 1.0 / k
    s = spec.eigvals
    rounds = jnp.asarray(rounds)
    if schedule or hard:
        count = int(np.max(np.asarray(rounds))) + 1
        lam_r = lams[:count] if schedule else jnp.broadcast_to(lams, (count,))
        ridges = k * n * lam_r  # (R_all,)
    if not hard:
        if schedule:
            qs = s[None, :] / (s[None, :] + ridges[:, None])  # (R_all, M)
            step = lambda m, q: ((xi * q / temperature) * m + (1.0 - xi), m)  # m_0 = 1, m_r from m_{r-1}, q_{r-1}
            m = jax.lax.scan(step, jnp.ones_like(qs[0]), qs)[1][rounds]
            ridge_r = ridges[rounds][:, None]
        else:
            ridge = k * n * lams
            # m_r = a^r + (1 - xi)(1 - a^r)/(1 - a), a = xi q / tau; the geometric sum is r where a is 1 to roundoff
            q = s / (s + ridge)
            r = rounds.astype(q.dtype)[:, None]
            a = (xi * q / temperature)[None, :]
            ar, far = a**r, jnp.abs(1.0 - a) > 1e-12
            m = ar + (1.0 - xi) * jnp.where(far, (1.0 - ar) / jnp.where(far, 1.0 - a, 1.0), r)
            ridge_r = jnp.full((rounds.shape[0], 1), ridge, s.dtype)
        if cross is None:
            return 1.0 / k + apply_spectral(
                spec, lambda ev: m * ev[None, :] / (ev[None, :] + ridge_r), c0, vanishes_at_zero=True
            )
        return 1.0 / k + apply_spectral_to(spec, lambda ev: m / (ev[None, :] + ridge_r), c0, cross)

    u = spec.eigvecs

    def one_round(t, ridge):
        out = 1.0 / k + u @ ((s / (s + ridge))[:, None] * (u.T @ (t - 1.0 / k)))
        nxt = next_targets_linear_core(out, targets, temperature, xi, True, tie_tol)
        return nxt, (t, out)

    _, (ts, outs) = jax.lax.scan(one_round, targets, ridges)
    if cross is None:
        return outs[rounds]
    coef = jnp.einsum("nm,rnk->rmk", u, ts[rounds] - 1.0 / k)
    return 1.0 / k + jnp.einsum("tm,rm,rmk->rtk", cross, 1.0 / (s[None, :] + ridges[rounds][:, None]), coef)


def linear_chain_core(
    fit: Callable[[jax.Array], Any],
    targets: jax.Array,
    num_rounds: int,
    temperature: Any = 1.0,
    xi: Any = 1.0,
    hard: bool = False,
    tie_tol: Any = TIE_TOL,
) -> jax.Array:
    """Outputs ``(num_rounds, N, K)`` of a variant chained through a one-round linearised fit: ``fit(targets)``, a
    :class:`sdtheory.refine.Fit` (e.g. ``closed_fit``, ``block_fit``); ``num_rounds`` and ``hard`` are static."""

    def step(t, _):
        p = fit(t).outputs
        return next_targets_linear_core(p, targets, temperature, xi, hard, tie_tol), p

    _, outs = jax.lax.scan(step, targets, None, length=num_rounds)
    return outs
