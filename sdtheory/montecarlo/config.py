"""Monte Carlo configuration: :class:`SimConfig` fixes the compiled program (shapes and options); its ``lam``,
``c`` and ``d`` are defaults of traced parameters that :func:`sdtheory.montecarlo.run_grid` can sweep."""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

from .. import _validation as V
from ..block import check_sampler_cd
from .._src.exact import DEFAULT_MAX_ITER, DEFAULT_SOLVER, DEFAULT_TOL, SOLVERS
from .._src.losses import check_q, get_loss
from .._src.rules import TIE_TOL
from ..noise import canonical_kind, check_clusters
from ..variants import check_variant

__all__ = ["METHODS", "SimConfig", "check_config", "make_config"]

#: Methods the engine knows, in output order.
METHODS = ("sd_closed", "sd_exact", "pll_closed", "pll_exact")
EXACT_METHODS = ("sd_exact", "pll_exact")


class SimConfig(NamedTuple):
    """Static description of a simulation (hashable; build it with :func:`make_config`).

    Attributes:
      num_classes: ``K >= 2``.
      per_class: ``n`` instances per class (``N = K n``).
      c, d: default within- and across-class feature correlation of the block model: ``d < c < 1``,
        ``d > -(1 - c + n c) / (n (K - 1))`` (a positive definite block Gram; ``d`` may be negative) and,
        with sampled features (``dim``), ``d >= -c / (K - 1)``; traced, sweepable.
      lam: default L2 weight ``> 0``; traced, sweepable.
      num_rounds: SD rounds ``0..num_rounds-1`` (round 0 is the teacher), at most ``MAX_NUM_ROUNDS`` (``10**5``).
      noise: corruption family (a name from :data:`sdtheory.noise.KINDS`).
      methods: subset of :data:`METHODS`.
      dim: ``None`` for the block Gram itself, else the dimension of sampled Gaussian-mixture features.
      exact_labels: exactly ``round(n C_kl)`` labels per type (``sample_labels(..., exact=True)``), not i.i.d.
      exact_tol, exact_max_iter, exact_solver: exact-solver options (``exact_solver`` from ``sdtheory.SOLVERS``).
      pll_loss, pll_q: loss of the exact PLL student (from ``sdtheory.LOSSES``) and the GCE exponent.
      clusters: for ``noise="cc"``: the cluster id of every class (tuple).
      tie_tol: the tie tolerance (:data:`sdtheory.TIE_TOL`): an instance is correct only if its true class
        beats every other by more than ``tie_tol``; the PLL student's top-2 rule treats values within it as tied.
      temperature, xi, hard: the distillation variant of the SD methods (:mod:`sdtheory.variants`; default
        plain SD). The theory columns (``r*``, all-correct rounds) describe plain SD.
    """

    num_classes: int = 4
    per_class: int = 100
    c: float = 0.4
    d: float = 0.1
    lam: float = 1e-4
    num_rounds: int = 16
    noise: str = "symmetric"
    methods: tuple = ("sd_closed", "pll_closed")
    dim: Optional[int] = None
    exact_labels: bool = False
    exact_tol: float = DEFAULT_TOL
    exact_max_iter: int = DEFAULT_MAX_ITER
    exact_solver: str = DEFAULT_SOLVER
    pll_loss: str = "ce"
    pll_q: float = 0.7
    clusters: Optional[tuple] = None
    tie_tol: float = TIE_TOL
    temperature: float = 1.0
    xi: float = 1.0
    hard: bool = False

    @property
    def num_instances(self) -> int:
        return self.num_classes * self.per_class

    @property
    def has_exact(self) -> bool:
        return any(m in self.methods for m in EXACT_METHODS)


def make_config(**fields: Any) -> SimConfig:
    """Validated :class:`SimConfig` from its fields as keyword arguments; ``ValueError``/``TypeError`` naming
    a bad (or unknown) field. :func:`run_grid` runs the same checks on the config it gets."""
    unknown = sorted(set(fields) - set(SimConfig._fields))
    if unknown:
        raise TypeError(f"make_config got unknown field(s) {unknown}; the fields are {list(SimConfig._fields)}")
    v = {**SimConfig()._asdict(), **fields}
    k = v["num_classes"] = V.check_size(v["num_classes"], "num_classes", minimum=2)
    n = v["per_class"] = V.check_size(v["per_class"], "per_class", minimum=1)
    if k * n > V.MAX_COUNT:
        raise ValueError(f"num_classes * per_class (instances) must be at most {V.MAX_COUNT}, got {k} * {n}")
    c, d = v["c"], v["d"] = V.check_cd(v["c"], v["d"], per_class=n, num_classes=k)
    v["lam"] = V.check_lam(v["lam"])
    v["num_rounds"] = V.check_num_rounds(v["num_rounds"], "num_rounds")  # before any array
    v["methods"] = _check_methods(v["methods"])
    if any(m.startswith("pll") for m in v["methods"]):
        V.check_pll_classes(k, "num_classes")
    if v["dim"] is not None:
        v["dim"] = V.check_size(v["dim"], "dim", minimum=1)
        check_sampler_cd(c, d, k)
    noise = v["noise"] = canonical_kind(v["noise"], "noise")
    if noise == "cc":
        v["clusters"] = tuple(int(i) for i in check_clusters(v["clusters"], k))
    elif v["clusters"] is not None:
        raise ValueError(f"clusters are only used by noise 'cc', not {noise!r}")
    v["exact_tol"] = V.check_real(v["exact_tol"], "exact_tol")
    if not v["exact_tol"] > 0:
        raise ValueError(f"exact_tol must be a positive finite float, got {v['exact_tol']!r}")
    v["exact_max_iter"] = V.check_size(v["exact_max_iter"], "exact_max_iter", minimum=1)
    V.check_choice(v["exact_solver"], "exact_solver", tuple(sorted(SOLVERS)))
    get_loss(v["pll_loss"], "pll_loss")
    v["pll_q"] = check_q(v["pll_q"], "pll_q")
    v["exact_labels"] = V.check_bool(v["exact_labels"], "exact_labels")
    v["tie_tol"] = V.check_tie_tol(v["tie_tol"])
    variant = check_variant(v["temperature"], v["xi"], v["hard"])
    v.update(temperature=variant.temperature, xi=variant.xi, hard=variant.hard)
    return SimConfig(**v)


def check_config(config: Any) -> SimConfig:
    """``config`` (possibly built by hand) re-validated by :func:`make_config`."""
    if not isinstance(config, SimConfig):
        raise TypeError(f"config must be a SimConfig (use make_config), got {type(config).__name__}")
    try:
        return make_config(**config._asdict())
    except (ValueError, TypeError) as exc:
        raise type(exc)(f"config: {exc}") from None


def _check_methods(methods: Any) -> tuple:
    expected = f"a sequence of method names from {METHODS}"
    if isinstance(methods, str):
        expected += f" (write ({methods!r},) for one method)"
    methods = tuple(V.as_sequence(methods, "methods", expected))
    if not methods:
        raise ValueError(f"methods must name at least one of {METHODS}")
    bad = [m for m in methods if not isinstance(m, str) or m not in METHODS]
    if bad:
        raise ValueError(f"methods: unknown method(s) {bad}; choose from {METHODS}")
    if len(set(methods)) != len(methods):
        raise ValueError(f"methods must not repeat, got {methods}")
    return tuple(m for m in METHODS if m in methods)
