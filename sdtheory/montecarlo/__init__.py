"""The Monte Carlo engine: theorems against simulation over grids of noise rates and model parameters.

Split by role (docs/simulation.md):

* :mod:`.config`: :class:`SimConfig`, the static shapes and options (a new
  config compiles a new program) with the default traced parameters;
* :mod:`.cell`: one (parameter point, lam, eta, seed) cell, a pure function;
* :mod:`.grid`: :func:`run_grid`, chunking, sharding over devices, sweeps
  over ``lam``, ``c`` and ``d`` in one compiled program, progress through a
  callback;
* :mod:`.report`: :class:`SimResult` and its reductions over seeds
  (:func:`phase_table`, :func:`agreement`).
"""

from .cell import Point, Shared, make_point, make_shared, point_spectra, simulate_cell
from .config import EXACT_METHODS, METHODS, SimConfig, make_config
from .grid import cell_chunk, run_grid, seed_keys
from .report import (
    TABLE_COLUMNS,
    GapStats,
    MethodStats,
    SimResult,
    TheoryStats,
    accuracy_curves,
    agreement,
    mean_empirical_rstar,
    median_first_all_correct,
    phase_table,
)
from ..metrics import first_all_correct

__all__ = [
    "EXACT_METHODS",
    "METHODS",
    "TABLE_COLUMNS",
    "GapStats",
    "MethodStats",
    "Point",
    "Shared",
    "SimConfig",
    "SimResult",
    "TheoryStats",
    "accuracy_curves",
    "agreement",
    "cell_chunk",
    "first_all_correct",
    "make_config",
    "make_point",
    "make_shared",
    "mean_empirical_rstar",
    "point_spectra",
    "median_first_all_correct",
    "phase_table",
    "run_grid",
    "seed_keys",
    "simulate_cell",
]
