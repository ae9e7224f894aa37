r"""Partial-label refinement: top-2 targets and the PLL student (THEORY.md section 5).

The PLL student of Jeong & Chung: fit the teacher (round 0) on the given
targets; from its training outputs take every instance's two most probable
classes and make the target ``1/2`` on each (a partial label: "one of these
two"); fit one student of the same form on these targets. With
``rounds = R > 1`` the refinement is iterated: student ``j`` is fit on the
top-2 targets of student ``j - 1``'s outputs.

Two solvers:

* ``method="closed_form"``: the linearised CE model (each fit is
  ``P = 1/K + S (T - 1/K)``, ``S = G (G + K N lam I)^{-1}``), the model the
  theorems are about; ``loss`` must be ``"ce"``.
* ``method="exact"``: the exact softmax solution of every fit
  (:func:`sdtheory.exact.exact_outputs`). The teacher always uses CE; the
  students use ``loss="ce"`` (CE with the ``(1/2, 1/2)`` target, the theory)
  or ``loss="gce"`` (SelfPLL's generalised CE on each candidate, ``q``).
"""

from __future__ import annotations

from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import _validation as V
from .block import BlockSpectrum, block_outputs_spectral, block_spectrum, _sizes_from_classes
from .closed_form import sd_outputs_spectral
from .spectral import Spectrum, spectrum


class PLLResult(NamedTuple):
    """Outputs of the PLL pipeline.

    Attributes:
      teacher: ``(N, K)`` teacher outputs (round 0 on the given targets).
      targets: ``(R, N, K)`` refined top-2 targets of each student round.
      outputs: ``(R, N, K)`` outputs of student rounds ``1..R``.
      converged: for ``method="exact"``, ``(R + 1,)`` solver convergence flags
        (teacher first); all True for the closed form.
    """

    teacher: jax.Array
    targets: jax.Array
    outputs: jax.Array
    converged: jax.Array


def top2_core(outputs: jax.Array) -> jax.Array:
    """Top-2 targets (no validation): ``1/2`` on the two largest entries of each row.

    Ties are broken toward the **lower class index**: the first class is
    ``argmax`` (first maximal index), the second is the ``argmax`` of the row
    with the first class removed (again the first maximal index).
    Works on any leading batch axes.
    """
    k = outputs.shape[-1]
    first = jnp.argmax(outputs, axis=-1)
    m1 = jax.nn.one_hot(first, k, dtype=bool)
    second = jnp.argmax(jnp.where(m1, -jnp.inf, outputs), axis=-1)
    m2 = jax.nn.one_hot(second, k, dtype=bool)
    return (m1 | m2).astype(outputs.dtype) / 2.0


def top2_targets(outputs: Any) -> jax.Array:
    """``(N, K)`` partial-label targets with ``1/2`` on each of the two highest classes.

    ``outputs`` is ``(N, K)`` (any real scores: probabilities, linearised
    outputs or logits; only the order matters), ``K >= 2``, finite. Ties go
    to the lower class index (see :func:`top2_core`).
    """
    shape = np.shape(outputs)
    if len(shape) != 2:
        raise ValueError(f"outputs must be a 2-D (N, K) array, got shape {tuple(shape)}")
    if shape[1] < 2:
        raise ValueError(f"outputs must have K >= 2 classes, got K = {shape[1]}")
    V.check_finite(outputs, "outputs")
    return top2_core(jnp.asarray(outputs, dtype=float))


@partial(jax.jit, static_argnames=("rounds",))
def pll_student_spectral(spec: Spectrum, targets: jax.Array, lam: jax.Array, rounds: int = 1) -> PLLResult:
    """Closed-form (linearised CE) PLL pipeline on a precomputed spectrum (no validation).

    Vmaps over ``targets`` and ``lam``.
    """
    zero = jnp.zeros((1,), dtype=jnp.int32)
    teacher = sd_outputs_spectral(spec, targets, lam, zero)[0]
    prev = teacher
    ts, outs = [], []
    for _ in range(rounds):
        t = top2_core(prev)
        prev = sd_outputs_spectral(spec, t, lam, zero)[0]
        ts.append(t)
        outs.append(prev)
    return PLLResult(teacher, jnp.stack(ts), jnp.stack(outs), jnp.ones((rounds + 1,), dtype=bool))


@partial(jax.jit, static_argnames=("rounds",))
def pll_student_block(
    bspec: BlockSpectrum, classes: jax.Array, targets: jax.Array, lam: jax.Array, rounds: int = 1
) -> PLLResult:
    """Closed-form PLL pipeline in the block model, ``O(N K)`` per fit (no validation)."""
    zero = jnp.zeros((1,), dtype=jnp.int32)
    teacher = block_outputs_spectral(bspec, classes, targets, lam, zero)[0]
    prev = teacher
    ts, outs = [], []
    for _ in range(rounds):
        t = top2_core(prev)
        prev = block_outputs_spectral(bspec, classes, t, lam, zero)[0]
        ts.append(t)
        outs.append(prev)
    return PLLResult(teacher, jnp.stack(ts), jnp.stack(outs), jnp.ones((rounds + 1,), dtype=bool))


def pll_student(
    targets: Any,
    lam: Any,
    *,
    gram: Any = None,
    features: Any = None,
    method: str = "closed_form",
    loss: str = "ce",
    q: float = 0.7,
    rounds: int = 1,
    **exact_kwargs: Any,
) -> PLLResult:
    """The PLL student: teacher on ``targets``, top-2 refined targets, student round(s).

    Args:
      targets: ``(N, K)`` teacher targets (one-hot given labels).
      lam: L2 weight ``> 0``.
      gram / features: exactly one of ``(N, N)`` Gram or ``(N, d)`` features.
      method: ``"closed_form"`` (linearised CE) or ``"exact"``.
      loss: student loss, ``"ce"`` or ``"gce"`` (exact only).
      q: GCE parameter in ``(0, 1]``.
      rounds: number of student rounds ``R >= 1`` (iterated refinement).
      exact_kwargs: passed to :func:`sdtheory.exact.exact_outputs` (``tol``,
        ``on_failure``, ...).

    Returns:
      :class:`PLLResult`.
    """
    rounds = V.check_int(rounds, "rounds", minimum=1)
    if method not in ("closed_form", "exact"):
        raise ValueError(f"method must be 'closed_form' or 'exact', got {method!r}")
    if loss not in ("ce", "gce"):
        raise ValueError(f"loss must be 'ce' or 'gce', got {loss!r}")
    if method == "closed_form" and loss != "ce":
        raise ValueError("the closed form is the linearised cross-entropy student; use method='exact' for loss='gce'")
    if exact_kwargs and method != "exact":
        raise TypeError(f"unexpected keyword arguments for the closed form: {sorted(exact_kwargs)}")
    V.check_problem(targets, lam, gram, features)
    t = jnp.asarray(targets, dtype=float)
    if method == "closed_form":
        spec = spectrum(gram=gram, features=features)
        return pll_student_spectral(spec, t, jnp.asarray(lam, dtype=float), rounds)
    from .exact import exact_outputs

    teach = exact_outputs(t, lam, 1, gram=gram, features=features, loss="ce", **exact_kwargs)
    prev = teach.outputs[0]
    conv = [jnp.all(teach.converged)]
    ts, outs = [], []
    for _ in range(rounds):
        tt = top2_core(prev)
        res = exact_outputs(tt, lam, 1, gram=gram, features=features, loss=loss, q=q, **exact_kwargs)
        prev = res.outputs[0]
        ts.append(tt)
        outs.append(prev)
        conv.append(jnp.all(res.converged))
    return PLLResult(teach.outputs[0], jnp.stack(ts), jnp.stack(outs), jnp.stack(conv))


def pll_student_block_model(targets: Any, classes: Any, c: float, d: float, lam: Any, *, rounds: int = 1) -> PLLResult:
    """Closed-form PLL pipeline on the block Gram of ``classes`` without forming it."""
    rounds = V.check_int(rounds, "rounds", minimum=1)
    n, k = V.check_targets(targets)
    classes = np.asarray(classes)
    V.check_same_n(n, int(classes.shape[0]) if classes.ndim == 1 else -1, "classes", "targets")
    sizes = _sizes_from_classes(classes, k)
    V.check_lam(lam)
    bspec = block_spectrum(sizes, c, d)
    return pll_student_block(bspec, jnp.asarray(classes), jnp.asarray(targets, dtype=float), jnp.asarray(lam, dtype=float), rounds)
