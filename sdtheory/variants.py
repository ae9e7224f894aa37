r"""Distillation variants: how round ``r``'s targets are made from round ``r - 1`` (docs/variants.md).

Plain self-distillation fits round ``r`` on the previous round's outputs,
``T_r = P_{r-1}``. Practitioners change that step; this module is the one
place where the change is written, used by the closed form
(:func:`sdtheory.sd_outputs`, :func:`sdtheory.predictor`) and by the exact
solver's chain of rounds (:func:`sdtheory.exact_outputs`):

* **temperature** ``tau > 0``: the teacher's outputs are softened,
  ``softmax(Z_{r-1} / tau)`` (``Z`` the logits). Linearised at zero logits this
  is ``1/K + (P_{r-1} - 1/K) / tau``;
* **hard labels** (``hard=True``): the teacher's argmax as a one-hot target,
  with the package's one tie rule (scores rounded to multiples of ``tie_tol``,
  ties to the lower class index, as in :func:`sdtheory.top2_targets`);
  temperature does not change an argmax, so it is ignored then;
* **mixing** with the given labels, weight ``xi`` in ``[0, 1]``:
  ``T_r = xi * teacher_r + (1 - xi) * Y`` (``xi = 1``: plain SD);
* a **lam schedule**: one L2 weight per round (``lam_schedule=`` in place
  of ``lam=``; ``lam_schedule[0]`` is the teacher's).

Closed form (linearised, no ``hard``): the centred targets of round ``r`` are
``c_r = U diag(m_r) U^T (Y - 1/K)`` (plus ``(1 - xi)`` times the null-space part)
with ``m_0 = 1`` and ``m_r = (xi q_{r-1} / tau) m_{r-1} + (1 - xi)``, where
``q_j = s / (s + K N lam_j)``; the outputs are ``1/K + U diag(q_r m_r) U^T (Y - 1/K)``.
With one ``lam`` this is ``m_r = a^r + (1 - xi)(1 - a^r)/(1 - a)``,
``a = xi q / tau``; with ``xi = 1`` the outputs are ``1/K + tau^{-r} S^{r+1} (Y - 1/K)``:
temperature rescales the centred outputs and never changes a prediction.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from . import _validation as V
from .metrics import TIE_TOL, _check_tie_tol
from .refine import top1_mask_core
from .spectral import Spectrum, apply_spectral, apply_spectral_to

__all__ = [
    "Variant",
    "check_variant",
    "closed_variant_core",
    "hard_targets_core",
    "linear_chain_core",
    "next_targets_core",
    "next_targets_linear_core",
    "resolve_lam",
    "target_multipliers_core",
]


class Variant(NamedTuple):
    """How round ``r``'s targets come from round ``r - 1`` (the defaults are plain SD).

    Attributes:
      temperature: ``tau > 0``; the teacher's logits are divided by it.
      xi: distillation weight in ``[0, 1]``; ``1 - xi`` of the given labels is mixed in.
      hard: one-hot argmax targets instead of soft ones.
      tie_tol: the tie tolerance of the argmax (:data:`sdtheory.TIE_TOL`).
    """

    temperature: float = 1.0
    xi: float = 1.0
    hard: bool = False
    tie_tol: float = TIE_TOL

    @property
    def is_plain(self) -> bool:
        """True for plain SD (``T_r = P_{r-1}``)."""
        return self.temperature == 1.0 and self.xi == 1.0 and not self.hard


def check_variant(temperature: Any = 1.0, xi: Any = 1.0, hard: Any = False, tie_tol: Any = TIE_TOL) -> Variant:
    """Validated :class:`Variant`; ``ValueError``/``TypeError`` naming the bad argument."""
    if V.is_tracer(temperature) or V.is_tracer(xi):
        raise TypeError(
            "temperature and xi must be concrete numbers; for a grid, vmap sdtheory.variants.closed_variant_core "
            "or sdtheory.exact.exact_phi_core"
        )
    tau = V.check_real(temperature, "temperature")
    if not tau > 0:
        raise ValueError(f"temperature must be > 0, got {tau:g}")
    x = V.check_real(xi, "xi", minimum=0.0, maximum=1.0)
    h = V.check_bool(hard, "hard")
    return Variant(tau, x, h, _check_tie_tol(tie_tol))


def resolve_lam(lam: Any, lam_schedule: Any, num_rounds: Optional[int] = None) -> tuple:
    """``(lam_0, schedule)`` from ``lam=`` (one L2 weight) or ``lam_schedule=`` (one per round).

    ``lam_schedule`` is ``None`` (then ``lam`` is returned as given, for the
    caller's usual ``lam`` checks, and ``schedule`` is ``None``) or a 1-D
    sequence of L2 weights ``> 0``, one for each round ``0..num_rounds-1``
    (``lam_schedule[0]`` is the teacher's; ``num_rounds=None`` accepts any
    length ``>= 1``); ``lam`` must then be omitted. Returns ``lam_0`` and the
    schedule as a float array.
    """
    if lam_schedule is None:
        return lam, None
    if lam is not None:
        raise ValueError("pass lam= (one L2 weight for every round) or lam_schedule= (one per round), not both")
    if V.is_tracer(lam_schedule):
        raise TypeError("lam_schedule must be concrete numbers; for a traced schedule call exact_phi_core(lams=...)")
    if isinstance(lam_schedule, (bool, np.bool_)):
        raise TypeError(f"lam_schedule must be a 1-D sequence of L2 weights > 0, got a bool ({lam_schedule!r})")
    arr = V.check_real_array(lam_schedule, "lam_schedule")
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(
            f"lam_schedule must be a non-empty 1-D sequence (one L2 weight per round), got shape {arr.shape}"
        )
    if num_rounds is not None and arr.size != num_rounds:
        raise ValueError(
            f"lam_schedule has {arr.size} L2 weight(s) but needs one for each round asked for (num_rounds / rounds: "
            f"0..{num_rounds - 1}, {num_rounds} in all)"
        )
    arr = arr.astype(float)
    if not np.all(np.isfinite(arr)) or not np.all(arr > 0):
        raise ValueError(f"lam_schedule: every L2 weight must be finite and > 0, got {V.short_list(arr)}")
    return float(arr[0]), arr


# --------------------------------------------------------------------------
# Target transforms (pure, jit-able; no validation)
# --------------------------------------------------------------------------


def hard_targets_core(scores: jax.Array, tie_tol: Any = TIE_TOL) -> jax.Array:
    """One-hot argmax of ``scores`` ``(..., K)`` by the package's tie rule (lower index wins a tie)."""
    return top1_mask_core(scores, tie_tol).astype(scores.dtype)


def _mix(teacher, given, xi):
    return xi * teacher + (1.0 - xi) * given


def next_targets_core(
    outputs: jax.Array,
    logits: jax.Array,
    given: jax.Array,
    temperature: Any = 1.0,
    xi: Any = 1.0,
    hard: bool = False,
    tie_tol: Any = TIE_TOL,
) -> jax.Array:
    """Exact model: round ``r``'s targets from round ``r - 1``'s outputs and logits ``(N, K)``.

    ``hard`` is static (a Python bool). ``softmax(logits / tau)`` equals
    ``softmax(log P / tau)``: the teacher's probabilities at temperature ``tau``.
    """
    if hard:
        teacher = hard_targets_core(outputs, tie_tol)
    else:  # shift first: (z - max z) / tau cannot overflow to inf - inf at a small tau
        teacher = jax.nn.softmax((logits - jnp.max(logits, axis=-1, keepdims=True)) / temperature, axis=-1)
    return _mix(teacher, given, xi)


def next_targets_linear_core(
    outputs: jax.Array, given: jax.Array, temperature: Any = 1.0, xi: Any = 1.0, hard: bool = False, tie_tol=TIE_TOL
) -> jax.Array:
    """Linearised model: as :func:`next_targets_core` with ``softmax(Z/tau)`` linearised, ``1/K + (P - 1/K)/tau``."""
    k = outputs.shape[-1]
    teacher = hard_targets_core(outputs, tie_tol) if hard else 1.0 / k + (outputs - 1.0 / k) / temperature
    return _mix(teacher, given, xi)


# --------------------------------------------------------------------------
# Closed form of the variants
# --------------------------------------------------------------------------


def target_multipliers_core(q: jax.Array, rounds: jax.Array, temperature, xi) -> jax.Array:
    """Centred-target multipliers ``m_r`` ``(R, M)`` for one ``lam`` (``q = s/(s + K N lam)``, ``(M,)``).

    ``m_r = a^r + (1 - xi)(1 - a^r)/(1 - a)`` with ``a = xi q / tau`` (the
    geometric sum is written as ``r`` where ``a`` is within roundoff of 1);
    round ``r``'s outputs are ``1/K + U diag(q m_r) U^T (T - 1/K)``. Also the
    kernel of :func:`sdtheory.closed_form.sd_mixed_outputs_core` (``tau = 1``).
    """
    r = rounds.astype(q.dtype)[:, None]
    a = (xi * q / temperature)[None, :]
    ar = a**r
    geo = jnp.where(jnp.abs(1.0 - a) > 1e-12, (1.0 - ar) / jnp.where(jnp.abs(1.0 - a) > 1e-12, 1.0 - a, 1.0), r)
    return ar + (1.0 - xi) * geo


def _scheduled_multipliers(qs: jax.Array, temperature, xi) -> jax.Array:
    """A schedule: ``m_0 = 1``, ``m_r = (xi q_{r-1}/tau) m_{r-1} + (1 - xi)``; ``qs`` ``(R, M)`` -> ``(R, M)``."""

    def step(m, q):
        return (xi * q / temperature) * m + (1.0 - xi), m

    _, ms = jax.lax.scan(step, jnp.ones_like(qs[0]), qs)
    return ms


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

    ``lams`` is one ``lam`` (``schedule=False``) or one per round
    ``0..len(lams)-1`` (``schedule=True``; then ``max(rounds) < len(lams)``).
    Without ``hard`` the outputs are the closed form of the module
    docstring; with ``hard`` (static) round ``r``'s targets are chained: each
    round is the one-round closed form on the previous round's hard targets,
    so rounds ``0..max(rounds)`` are computed. Not jitted (``rounds`` must be
    concrete when ``hard`` or ``schedule``); no validation.
    """
    n, k = targets.shape
    given = targets
    c0 = targets - 1.0 / k
    s = spec.eigvals
    rounds = jnp.asarray(rounds)
    if schedule or hard:
        count = int(np.max(np.asarray(rounds))) + 1
        lam_r = lams[:count] if schedule else jnp.broadcast_to(lams, (count,))
        ridges = k * n * lam_r  # (R_all,)
    if not hard:
        if schedule:
            qs = s[None, :] / (s[None, :] + ridges[:, None])
            m = _scheduled_multipliers(qs, temperature, xi)[rounds]
            ridge_r = ridges[rounds][:, None]
        else:
            ridge = k * n * lams
            m = target_multipliers_core(s / (s + ridge), rounds, temperature, xi)
            ridge_r = jnp.full((rounds.shape[0], 1), ridge, s.dtype)
        if cross is None:
            return 1.0 / k + apply_spectral(
                spec, lambda ev: m * ev[None, :] / (ev[None, :] + ridge_r), c0, vanishes_at_zero=True
            )
        return 1.0 / k + apply_spectral_to(spec, lambda ev: m / (ev[None, :] + ridge_r), c0, cross)

    u = spec.eigvecs

    def one_round(t, ridge):
        out = 1.0 / k + u @ ((s / (s + ridge))[:, None] * (u.T @ (t - 1.0 / k)))
        nxt = next_targets_linear_core(out, given, temperature, xi, True, tie_tol)
        return nxt, (t, out)

    _, (ts, outs) = jax.lax.scan(one_round, targets, ridges)
    if cross is None:
        return outs[rounds]
    ts = ts[rounds]
    coef = jnp.einsum("nm,rnk->rmk", u, ts - 1.0 / k)
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
    """Outputs ``(num_rounds, N, K)`` of a variant chained through any one-round linearised fit.

    ``fit(targets)`` returns a :class:`sdtheory.refine.Fit` (e.g.
    :func:`sdtheory.refine.closed_fit` or :func:`sdtheory.refine.block_fit`);
    round ``r``'s targets come from :func:`next_targets_linear_core`. Pure
    and jit-able (``num_rounds`` and ``hard`` static); the Monte Carlo engine
    uses it.
    """

    def step(t, _):
        p = fit(t).outputs
        return next_targets_linear_core(p, targets, temperature, xi, hard, tie_tol), p

    _, outs = jax.lax.scan(step, targets, None, length=num_rounds)
    return outs
