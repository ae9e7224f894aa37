"""The Monte Carlo engine: theorems against simulation over grids of noise rates and model parameters:
:mod:`.config`, :mod:`.cell` (one cell, pure), :mod:`.grid` (:func:`run_grid`), :mod:`.report` (:class:`SimResult`
and its reductions), :mod:`.theory` (the exact theory on label types); docs/simulation.md."""

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
