r"""Distillation variants: how round ``r``'s targets are made from round ``r - 1`` (docs/variants.md).

Temperature ``tau`` (the teacher's logits divided by it), mixing with the given labels
(``T_r = xi * teacher_r + (1 - xi) * Y``), hard argmax targets, and one ``lam`` per round (``lam_schedule``):
the validated options; the kernels are in :mod:`sdtheory._src.closed`.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from . import _validation as V
from ._src.closed import Variant, closed_variant_core, linear_chain_core, next_targets_core
from ._src.rules import TIE_TOL

__all__ = [
    "Variant",
    "check_variant",
    "closed_variant_core",
    "linear_chain_core",
    "next_targets_core",
    "resolve_lam",
]


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
    return Variant(tau, x, h, V.check_tie_tol(tie_tol))


def resolve_lam(lam: Any, lam_schedule: Any, num_rounds: Optional[int] = None) -> tuple:
    """``(lam_0, schedule)`` from ``lam=`` (one L2 weight, unchecked: ``(lam, None)``) or ``lam_schedule=``: a 1-D
    sequence of L2 weights ``> 0`` for rounds ``0..num_rounds-1`` (any length when ``num_rounds`` is None)."""
    if lam_schedule is None:
        return lam, None
    if lam is not None:
        raise ValueError("pass lam= (one L2 weight for every round) or lam_schedule= (one per round), not both")
    if V.is_tracer(lam_schedule):
        raise TypeError("lam_schedule must be concrete numbers; for a traced schedule call exact_phi_core(lams=...)")
    expected = "a non-empty 1-D sequence (one L2 weight per round)"
    arr = V.check_array(lam_schedule, "lam_schedule", lambda s: len(s) == 1 and s[0] >= 1, expected)
    if num_rounds is not None and arr.size != num_rounds:
        raise ValueError(
            f"lam_schedule has {arr.size} L2 weight(s) but needs one for each round asked for (num_rounds / rounds: "
            f"0..{num_rounds - 1}, {num_rounds} in all)"
        )
    arr = arr.astype(float)
    if not np.all(arr > 0):
        raise ValueError(f"lam_schedule: every L2 weight must be > 0, got {V.short_list(arr)}")
    return float(arr[0]), arr
