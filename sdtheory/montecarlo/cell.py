r"""One Monte Carlo cell: a pure function of (static config, parameter point, eta, seed key).

A *point* (:class:`Point`, host-side :func:`make_point`) holds the traced ``(lam, c, d)`` and what depends only on them,
with the same shapes at every point (one compiled program). A *cell* (:func:`simulate_cell`) draws the labels
``y ~ C(eta)[true class]`` with the seed's label key (common random numbers over eta and points), uses the block Gram or
Gaussian-mixture features drawn with the seed's feature key, runs the config's methods (SD closed form / exact rounds
``0..R-1``, exact on the label types for the block Gram; the PLL student after one round, the exact one starting from
the teacher's weights), scores them against the true classes (ties are failures) and evaluates the theorems on ``C``
(population) and on the cell's label fractions (empirical). docs/simulation.md lists every output.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .._src.block import BlockSpectrum, _block_spectrum, block_outputs_core, sample_block_features_core
from ..block import block_classes
from .._src.closed import Variant, linear_chain_core, sd_outputs_core
from .._src.exact import exact_outputs_core, spectral_features
from .._src.rules import correct_core
from ..noise import corruption_matrix_core, empirical_fractions_core, sample_labels_exact_core, sample_labels_iid_core
from ..reduced import corr_from_cd, label_types, reduced_exact_core, reduced_exact_fit, type_spectrum_core
from .._src.pll import block_fit, closed_fit, exact_fit, pll_rounds_core, round_fit
from .._src.spectral import _feature_spectrum as feature_spectrum
from ..theorems import (
    LogFactors,
    all_correct_at_core,
    corruption_condition_core,
    log_block_factors,
    margin_core,
    min_rounds_core,
    pll_condition_core,
    pll_prediction_core,
)
from .config import SimConfig

__all__ = ["Point", "Shared", "make_point", "make_shared", "point_spectra", "simulate_cell"]


class Shared(NamedTuple):
    """Arrays shared by every cell of a run (replicated over devices)."""

    classes: jax.Array  # (N,) true classes
    cluster_ids: Any  # (K,) cluster ids for noise "cc", else None


class Point(NamedTuple):
    """One (lam, c, d) point: the traced scalars ``lam``, ``c``, ``d``, the :class:`LogFactors` of the balanced
    shrink factors (:func:`sdtheory.theorems.log_block_factors`) and the :class:`BlockSpectrum` ``bspec`` of the
    block Gram at ``(c, d)``."""

    lam: jax.Array
    c: jax.Array
    d: jax.Array
    log_factors: LogFactors
    bspec: BlockSpectrum


def make_shared(config: SimConfig) -> Shared:
    classes = block_classes([config.per_class] * config.num_classes)
    ids = None if config.clusters is None else jnp.asarray(np.asarray(config.clusters, dtype=np.int64))
    return Shared(jnp.asarray(classes, dtype=jnp.int32), ids)


def make_point(config: SimConfig, lam: float, c: float, d: float, spectra: Any = None) -> Point:
    """Host-side precomputation for one (lam, c, d) (validated by the caller); ``spectra``: its
    :func:`point_spectra`, if known."""
    bspec = point_spectra(config, c, d) if spectra is None else spectra
    logs = log_block_factors(per_class=config.per_class, num_classes=config.num_classes, c=c, d=d, lam=lam)
    return Point(
        jnp.asarray(lam, dtype=float),
        jnp.asarray(c, dtype=float),
        jnp.asarray(d, dtype=float),
        LogFactors(*(jnp.asarray(x, dtype=float) for x in logs)),
        bspec,
    )


def point_spectra(config: SimConfig, c: float, d: float) -> BlockSpectrum:
    """The :class:`BlockSpectrum` of the block Gram at ``(c, d)`` (the exact methods run on label types)."""
    sizes = [config.per_class] * config.num_classes
    return _block_spectrum(jnp.asarray(sizes, dtype=float), c, d)


def _stats(outputs, classes, clean, converged, residual, tie_tol):
    correct = correct_core(outputs, classes, tie_tol)  # (R, N)
    n = classes.shape[0]
    # both counts in one small matmul: `correct` is materialised once (measured 4x faster on CPU than
    # three sums); exact, 0/1 sums < 2^53
    weights = jnp.stack([jnp.ones_like(clean), clean], axis=-1).astype(outputs.dtype)  # (N, 2)
    counts = jnp.round(correct.astype(outputs.dtype) @ weights).astype(jnp.int32)  # (R, 2)
    num, num_clean = counts[..., 0], counts[..., 1]
    return (num, num_clean, num - num_clean, num == n, converged, residual)


def _gap(closed, exact, classes, tie_tol):
    """Linearisation gap per round: max |P_exact - P_closed|, argmax agreement, near-tie fraction."""
    diff = jnp.abs(exact - closed)
    agree = jnp.mean((jnp.argmax(exact, -1) == jnp.argmax(closed, -1)).astype(closed.dtype), axis=-1)
    srt = jnp.sort(closed, axis=-1)
    # near tie: the closed form's top-2 margin is below twice the output gap of that instance
    near = jnp.mean((srt[..., -1] - srt[..., -2] < 2 * jnp.max(diff, -1)).astype(closed.dtype), axis=-1)
    return jnp.max(diff, axis=(-2, -1)), agree, near


def simulate_cell(config: SimConfig, shared: Shared, point: Point, eta: jax.Array, key: jax.Array) -> dict:
    """Everything for one (point, eta, seed) cell; pure and jit/vmap-able (no validation).

    Returns a dict of arrays: per method a 6-tuple of ``(R_m,)`` arrays (num_correct, num_correct_clean,
    num_correct_noisy, all_correct, converged, residual), ``num_noisy``, the theory values and, with both
    SD methods, the gap ``(max_abs_diff, argmax_agreement, near_tie_frac)``.
    """
    k = config.num_classes
    r = config.num_rounds
    classes = shared.classes
    lam = point.lam
    rounds = jnp.arange(r)
    label_key, feature_key = jax.random.split(key)

    C = corruption_matrix_core(config.noise, k, eta, shared.cluster_ids)
    sampler = sample_labels_exact_core if config.exact_labels else sample_labels_iid_core
    given = sampler(label_key, classes, C)
    y = jax.nn.one_hot(given, k, dtype=lam.dtype)
    clean = given == classes
    frac = empirical_fractions_core(classes, given, k)

    if config.dim is None:
        closed = lambda targets, rr: block_outputs_core(point.bspec, classes, targets, lam, rr)  # noqa: E731
        fit_closed = block_fit(point.bspec, classes, lam)
    else:
        x = sample_block_features_core(feature_key, classes, point.c, point.d, config.dim, k)
        spec = feature_spectrum(x, validate=False)
        closed = lambda targets, rr: sd_outputs_core(spec, targets, lam, rr)  # noqa: E731
        fit_closed = closed_fit(spec, lam)

    solve: dict[str, Any] = dict(tol=config.exact_tol, max_iter=config.exact_max_iter, solver=config.exact_solver)
    out: dict = {}
    ones_r = jnp.ones((r,), bool)
    zeros_r = jnp.zeros((r,), lam.dtype)
    tt = config.tie_tol
    sd_closed = None
    variant = Variant(config.temperature, config.xi, config.hard, tt)
    chain = {} if variant.is_plain else variant._asdict()
    if "sd_closed" in config.methods:
        sd_closed = closed(y, rounds) if variant.is_plain else linear_chain_core(fit_closed, y, r, *variant)
        out["sd_closed"] = _stats(sd_closed, classes, clean, ones_r, zeros_r, tt)
    if "pll_closed" in config.methods:
        pll = pll_rounds_core(fit_closed, fit_closed(y), 1, tt)
        out["pll_closed"] = _stats(pll.outputs, classes, clean, ones_r[:1], zeros_r[:1], tt)
    if config.has_exact:
        teacher_rounds = r if "sd_exact" in config.methods else 1
        if config.dim is None:
            # block Gram: every instance of a label type (true k, given l) has the type's outputs
            tcls, ttgt = label_types(k)
            tidx = classes * k + given
            counts = jnp.zeros((k * k,), lam.dtype).at[tidx].add(1.0)
            ts = type_spectrum_core(corr_from_cd(point.c, point.d, k), tcls, counts)
            res_t = reduced_exact_core(ts, ttgt.astype(lam.dtype), lam, teacher_rounds, loss="ce", **solve, **chain)
            res = res_t._replace(outputs=res_t.outputs[:, tidx])
            student_fit = reduced_exact_fit(ts, lam, loss=config.pll_loss, q=config.pll_q, **solve)
            teacher_fit = round_fit(res_t)
        else:
            res = exact_outputs_core(spec, y, lam, teacher_rounds, loss="ce", q=config.pll_q, **solve, **chain)
            student_fit = exact_fit(spectral_features(spec), lam, loss=config.pll_loss, q=config.pll_q, **solve)
            teacher_fit = round_fit(res)
        if "sd_exact" in config.methods:
            out["sd_exact"] = _stats(res.outputs, classes, clean, res.converged, res.residuals, tt)
            if sd_closed is not None:
                out["gap"] = _gap(sd_closed, res.outputs, classes, tt)
        if "pll_exact" in config.methods:
            pll = pll_rounds_core(student_fit, teacher_fit, 1, tt, init="teacher")
            if config.dim is None:
                pll = pll._replace(outputs=pll.outputs[:, tidx])
            # a student counts as converged only with its teacher; its residual is the worse of the two
            out["pll_exact"] = _stats(
                pll.outputs,
                classes,
                clean,
                pll.converged[1:] & pll.converged[:1],
                jnp.maximum(pll.residuals[1:], pll.residuals[:1]),
                tt,
            )

    # theory (population: C; empirical: this cell's fractions), from the log-factors
    logs = point.log_factors
    # the PLL prediction holds (K, K, K) arrays per cell: only when a PLL method runs
    has_pll = any(m.startswith("pll_") for m in config.methods)
    out["num_noisy"] = jnp.sum(~clean)
    for tag, f in (("pop", C), ("emp", frac)):
        out[f"{tag}_condition"] = corruption_condition_core(f)
        out[f"{tag}_margin"] = margin_core(f)
        out[f"{tag}_rstar"] = min_rounds_core(f, logs)
        out[f"{tag}_all_correct"] = all_correct_at_core(f, logs, rounds)
        if has_pll:
            out[f"{tag}_pll_accuracy"] = pll_prediction_core(f, logs, 1, tt).accuracy[0]
            out[f"{tag}_pll_condition"] = pll_condition_core(f, logs)
        else:
            out[f"{tag}_pll_accuracy"] = jnp.full((), jnp.nan, dtype=f.dtype)
            out[f"{tag}_pll_condition"] = jnp.zeros((), dtype=bool)
    return out
