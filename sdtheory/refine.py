r"""Partial-label refinement: the one top-2 rule and the one PLL pipeline (docs/theorems.md section 6).

The PLL student of Jeong & Chung: fit the teacher (round 0) on the given targets, put ``1/2`` on each
instance's two highest teacher outputs (:func:`top2_targets`: scores rounded to multiples of ``tie_tol``,
ties to the lower class index) and fit a student on these targets; ``num_rounds = R``: the teacher and
``R - 1`` students, each fit on the top 2 of the previous one. The pipeline (:func:`pll_rounds_core`)
takes the one-round fit as a parameter (:func:`closed_fit`, :func:`block_fit`, :func:`exact_fit`); an
exact student starts (``init``, :data:`PLL_INITS`) from the weights of the model whose top 2 it fits
(``"teacher"``, as SelfPLL) or from zero.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import jax
from jax.typing import ArrayLike
import jax.numpy as jnp
import numpy as np

from . import _validation as V
from ._x64 import float64
from ._src.exact import raise_unconverged, solver_features
from ._src.losses import get_loss
from ._src.pll import (
    PLL_INITS,
    Fit,
    PLLResult,
    block_fit,
    check_init,
    closed_fit,
    exact_fit,
    pll_rounds_core,
    round_fit,
)
from ._src.rules import TIE_TOL, top2_targets_core
from ._src.spectral import _unit_lam, _unit_problem
from .block import TARGET_K, check_classes, checked_block_spectrum
from .reduced import exact_options as check_exact_options

__all__ = [
    "PLL_INITS",
    "Fit",
    "PLLResult",
    "block_fit",
    "check_init",
    "closed_fit",
    "exact_fit",
    "pll_rounds_core",
    "pll_student",
    "pll_student_block_model",
    "round_fit",
    "top2_targets",
    "top2_targets_core",
]


@float64
def top2_targets(outputs: ArrayLike, *, tie_tol: float = TIE_TOL) -> jax.Array:
    """``(N, K)`` partial-label targets with ``1/2`` on each of the two highest classes of ``outputs``
    ``(N, K)`` (any finite real scores, ``K >= 2``); values within ``tie_tol`` are tied, ties to the lower index."""
    ok = lambda s: len(s) == 2 and s[0] >= 1 and s[1] >= 2
    arr = V.check_array(outputs, "outputs", ok, "a non-empty 2-D (N, K) array with K >= 2 classes")
    return top2_targets_core(jnp.asarray(arr, dtype=float), V.check_tie_tol(tie_tol))


@float64(kernel="sdtheory.refine.pll_rounds_core with sdtheory.refine.closed_fit / exact_fit")
def pll_student(
    targets: ArrayLike,
    *,
    lam: Any,
    gram: ArrayLike | None = None,
    features: ArrayLike | None = None,
    model: str = "closed",
    loss: str = "ce",
    q: float = 0.7,
    num_rounds: int = 2,
    tie_tol: float = TIE_TOL,
    init: str = "teacher",
    **exact_options: Any,
) -> PLLResult:
    """The PLL student: teacher on ``targets``, top-2 refined targets, student round(s); a :class:`PLLResult`.

    Args:
      targets: ``(N, K)`` teacher targets (one-hot given labels).
      lam: L2 weight, one real number ``> 0``.
      gram / features: exactly one of ``(N, N)`` Gram or ``(N, d)`` features.
      model: ``"closed"`` (linearised CE, the theorems' model) or ``"exact"``.
      loss: student loss from :data:`sdtheory.LOSSES` (``"gce"``: exact only, exponent ``q`` in ``(0, 1]``);
        the teacher always uses CE.
      num_rounds: ``R`` in ``[2, 10^5]``: the teacher and ``R - 1`` student rounds.
      tie_tol: the top-2 tie tolerance.
      init: the exact student's starting weights, ``"teacher"`` or ``"zero"`` (CE reaches the same optimum
        from either; GCE, not convex, may not).
      exact_options: ``tol``, ``max_iter``, ``on_failure``, ``solver`` of the exact solver.
    """
    num_students = V.check_pll_rounds(num_rounds)
    init = check_init(init)
    model = V.check_model(model)
    get_loss(loss)
    if exact_options and model != "exact":
        raise TypeError(f"unexpected keyword arguments for the closed form: {sorted(exact_options)}")
    V.check_closed_ce(model, loss, exact_options)
    tie_tol = V.check_tie_tol(tie_tol)
    V.check_problem(targets, lam, gram, features)
    V.check_pll_classes(V.shape_of(targets, "targets")[1], "the columns of targets")
    t = jnp.asarray(targets, dtype=float)
    # unit scale (G / root^2, lam / root^2): the outputs depend on G / lam only
    unit = _unit_problem(gram=gram, features=features, need_spectrum=model == "closed")
    lam_a = _unit_lam(lam, unit.root, "gram" if gram is not None else "features")
    if model == "closed":
        assert unit.spec is not None  # need_spectrum
        fit = closed_fit(unit.spec, lam_a)
        return pll_rounds_core(fit, fit(t), num_students, tie_tol)
    opts = check_exact_options(loss, q, exact_options)
    phi = solver_features(gram=unit.gram, features=unit.features)
    exact = partial(exact_fit, phi, lam_a, q=float(q), **{x: opts[x] for x in ("tol", "max_iter", "solver")})
    result = pll_rounds_core(exact(loss=loss), exact(loss="ce")(t), num_students, tie_tol, init)
    if opts["on_failure"] == "raise":
        raise_unconverged(result, opts["tol"], opts["max_iter"])
    return result


@float64(kernel="sdtheory.refine.pll_rounds_core with sdtheory.refine.block_fit")
def pll_student_block_model(
    targets: ArrayLike,
    classes: ArrayLike,
    *,
    c: float,
    d: float,
    lam: Any,
    num_rounds: int = 2,
    tie_tol: float = TIE_TOL,
) -> PLLResult:
    """Closed-form PLL pipeline on the block Gram of ``classes`` (``(N,)``; correlations ``c``, ``d``) without
    forming it (``O(N K)`` per fit); the other arguments as in :func:`pll_student`."""
    num_students = V.check_pll_rounds(num_rounds)
    n, k = V.check_targets(targets)
    V.check_pll_classes(k, "the columns of targets")
    classes, _ = check_classes(classes, k, n=n, source=TARGET_K)
    sizes = np.bincount(classes, minlength=k)
    lam = V.check_lam(lam)
    bspec = checked_block_spectrum(sizes, c, d)
    fit = block_fit(bspec, jnp.asarray(classes), jnp.asarray(lam, dtype=float))
    return pll_rounds_core(fit, fit(jnp.asarray(targets, dtype=float)), num_students, V.check_tie_tol(tie_tol))
