r"""Per-instance training losses of the softmax student, as functions of logits.

Each loss is a pair of pure functions of a target row ``t`` and a logit row ``z``, broadcast over the other axes:
``value(t, z, q, axis=-1)`` (loss per instance) and ``grad(t, z, q, axis=-1)`` (``d loss / d z``). ``axis`` is the class
axis: ``-1`` for ``(N, K)`` rows, ``0`` for the class-major ``(K, N)`` layout of the exact solver. A new objective is
two functions registered in :data:`LOSSES`.

* ``"ce"``: :math:`\ell(t, z) = -\sum_l t_l \log \mathrm{softmax}(z)_l`,
  gradient :math:`p - t`; convex.
* ``"gce"`` (Zhang & Sabuncu 2018, weighted by the target):
  :math:`\ell(t, z) = \sum_l t_l (1 - p_l^q) / q`, gradient
  :math:`-(t \odot p^q) + (t \cdot p^q)\, p`; with a ``(1/2, 1/2)`` top-2
  target the PLL student's loss of the SelfPLL code; not convex.
"""

from __future__ import annotations

from typing import NamedTuple
from collections.abc import Callable

import jax
import jax.numpy as jnp

from .. import _validation as V


class Loss(NamedTuple):
    """A per-instance loss and its logit gradient (pure functions).

    ``curvature(t, z, q, w, axis=-1)`` (optional): for 2-D ``t`` and ``z``, the row-weighted sum of the logit Hessians,
    ``sum_i w_i d^2 loss / dz^2 (t_i, z_i)`` (``K x K``; ``w=None`` for unit weights), which the exact solver's
    preconditioner uses; without it the solver forms the sum from ``K`` linearised gradient products.
    """

    value: Callable[..., jax.Array]  # (t, z, q, axis=-1)
    grad: Callable[..., jax.Array]  # (t, z, q, axis=-1)
    convex: bool
    curvature: Callable[..., jax.Array] | None = None


def _class_major(x, axis):
    return x.ndim == 2 and axis in (0, -2)


def class_sum(x, axis=-1, keepdims=False):
    """Sum over the class axis (class-major: a product with ones; XLA's CPU leading-axis reduction was 3-6x slower)."""
    if _class_major(x, axis):
        s = jnp.ones((x.shape[0],), x.dtype) @ x
        return s[None, :] if keepdims else s
    return jnp.sum(x, axis=axis, keepdims=keepdims)


def log_softmax(z, axis=-1):
    """``log softmax(z)`` over the class axis (:func:`jax.nn.log_softmax` for rows)."""
    if not _class_major(z, axis):
        return jax.nn.log_softmax(z, axis=axis)
    zc = z - jax.lax.stop_gradient(jnp.max(z, axis=axis, keepdims=True))  # softmax ignores the shift
    return zc - jnp.log(class_sum(jnp.exp(zc), axis, keepdims=True))


def softmax(z, axis=-1):
    """``softmax(z)`` over the class axis (:func:`jax.nn.softmax` for rows)."""
    if not _class_major(z, axis):
        return jax.nn.softmax(z, axis=axis)
    e = jnp.exp(z - jax.lax.stop_gradient(jnp.max(z, axis=axis, keepdims=True)))
    return e / class_sum(e, axis, keepdims=True)


def _ce_value(t, z, q, axis=-1):
    return -class_sum(t * log_softmax(z, axis), axis)


def _ce_grad(t, z, q, axis=-1):
    return softmax(z, axis) - t


def _ce_curvature(t, z, q, w=None, axis=-1):
    """``sum_i w_i (diag(p_i) - p_i p_i^T)``: the CE Hessian does not depend on the target."""
    p = softmax(z, axis)
    pw = p if w is None else jnp.expand_dims(w, axis) * p
    rows = 1 if _class_major(z, axis) else 0  # the instance axis of the 2-D z
    return jnp.diag(jnp.sum(pw, axis=rows)) - jnp.tensordot(pw, p, axes=(rows, rows))


def _gce_value(t, z, q, axis=-1):
    pq = jnp.exp(q * log_softmax(z, axis))
    return class_sum(t * (1.0 - pq), axis) / q


def _gce_grad(t, z, q, axis=-1):
    logp = log_softmax(z, axis)
    p = jnp.exp(logp)
    tpq = t * jnp.exp(q * logp)
    return -tpq + class_sum(tpq, axis, keepdims=True) * p


#: Registered losses by name.
LOSSES: dict[str, Loss] = {
    "ce": Loss(_ce_value, _ce_grad, True, _ce_curvature),
    "gce": Loss(_gce_value, _gce_grad, False),
}


def get_loss(name: str | Loss, arg: str = "loss") -> Loss:
    """A registered loss by name (a :class:`Loss` passes as is); ``TypeError``/``ValueError`` naming ``arg``."""
    if isinstance(name, Loss):
        return name
    if not isinstance(name, str):
        raise TypeError(f"{arg} must be a string, one of {sorted(LOSSES)}, got {type(name).__name__} {name!r}")
    if name not in LOSSES:
        raise ValueError(f"{arg} must be one of {sorted(LOSSES)}, got {name!r}")
    return LOSSES[name]


def check_q(q, name: str = "q") -> float:
    """The GCE exponent: a real number (not bool or str) in ``(0, 1]``; returns it as a float."""
    v = V.check_real(q, name)
    if not 0.0 < v <= 1.0:
        raise ValueError(f"{name} (GCE exponent) must lie in (0, 1], got {q!r}")
    return v
