r"""The Monte Carlo engine: theorems against simulation over a grid of noise rates.

Model (docs/simulation.md). ``K`` balanced classes of ``n`` instances
(``N = K n``), true classes ``0, ..., K - 1`` in contiguous blocks. One *cell*
of the grid is a pair (noise rate ``eta``, seed ``s``):

1. the corruption matrix ``C = corruption_matrix(noise, K, eta)``;
2. the given labels ``y ~ C[true class]`` drawn with the seed's label key
   (:func:`sdtheory.noise.sample_labels`); the same key is used for every
   ``eta`` (common random numbers), so neighbouring cells of the phase diagram
   differ only through ``eta``;
3. the instance: either the block Gram itself (``dim=None``: correlation
   ``c`` within a class, ``d`` across, unit diagonal) or Gaussian-mixture
   features of dimension ``dim`` whose *expected* Gram is the block Gram
   (:func:`sdtheory.block.sample_block_features`, drawn with the seed's
   feature key, the same for every ``eta``), so feature noise is part of the
   simulation;
4. the methods, each evaluated on the training set and scored against the
   *true* classes:

   * ``"sd_closed"``: rounds ``0..R-1`` of multi-round SD in the linearised
     closed form (:func:`sdtheory.block.block_outputs_spectral` on the block
     Gram, :func:`sdtheory.closed_form.sd_outputs_spectral` on features);
   * ``"sd_exact"``: the same rounds with the exact softmax solver
     (:func:`sdtheory.exact.exact_outputs_spectral`);
   * ``"pll_closed"`` / ``"pll_exact"``: the PLL student after one round: the
     teacher's (round 0) top-2 classes become ``(1/2, 1/2)`` targets
     (:func:`sdtheory.refine.top2_targets`) and one student is fit on them
     (the closed form as in :func:`sdtheory.refine.pll_student_block`; the
     exact solver on the top-2 of the exact teacher, with loss ``pll_loss``).

5. the theory for the cell: the population corruption condition, margin
   ``Delta`` and first all-correct round ``r*`` from ``C``, and the empirical
   ones from the cell's label fractions ``f_k(l)``
   (:mod:`sdtheory.theorems`).

An instance counts as correct when the output of its *true* class is larger
than every other output by more than ``tie_tol`` (a tie is an error, as in
the theorems); the PLL teacher's top-2 is taken with the same tolerance
(ties to the lower class index), so results do not depend on roundoff.

Everything per cell is one pure function; the grid is flattened (eta-major),
cut into chunks to bound memory, and each chunk is one ``jax.jit`` of
``jax.vmap`` over its cells. With several devices the cell axis of every chunk
is sharded over a 1-D :class:`jax.sharding.Mesh` (the same code runs on a
multi-GPU host, a TPU slice, or many hosts after ``jax.distributed.initialize``);
the results do not depend on the number of devices.
"""

from __future__ import annotations

import math
import sys
import time
from functools import partial
from typing import Any, Callable, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from . import _validation as V
from .block import (
    block_classes,
    block_factors,
    block_gram,
    block_outputs_spectral,
    block_spectrum,
    sample_block_features,
)
from .closed_form import sd_outputs_spectral
from .exact import exact_outputs_spectral
from .spectral import feature_spectrum, gram_spectrum

__all__ = [
    "METHODS",
    "MethodStats",
    "SimConfig",
    "SimResult",
    "TheoryStats",
    "cell_chunk",
    "first_all_correct",
    "make_config",
    "run_grid",
    "simulate_cell",
]

#: Methods the engine knows, in output order.
METHODS = ("sd_closed", "sd_exact", "pll_closed", "pll_exact")
_EXACT_METHODS = ("sd_exact", "pll_exact")


# --------------------------------------------------------------------------
# Configuration and results
# --------------------------------------------------------------------------


class SimConfig(NamedTuple):
    """Static description of a simulation (hashable; build it with :func:`make_config`).

    Attributes:
      num_classes: ``K >= 2``.
      per_class: ``n`` instances per class (``N = K n``).
      c, d: within-class and across-class feature correlation of the block
        model (``0 <= d < c < 1``).
      lam: L2 weight ``> 0``.
      num_rounds: SD rounds ``0..num_rounds-1`` (round 0 is the teacher).
      noise: corruption family for :func:`sdtheory.noise.corruption_matrix`.
      methods: subset of :data:`METHODS`.
      dim: ``None`` for the block Gram itself, else the feature dimension of
        the sampled Gaussian-mixture features.
      exact_labels: draw labels with exactly ``round(n C_kl)`` per type
        (``sample_labels(..., exact=True)``) instead of i.i.d.
      exact_tol, exact_max_iter, exact_method: exact-solver options.
      pll_loss, pll_q: loss of the exact PLL student (``"ce"`` or ``"gce"``)
        and the GCE exponent.
      clusters: for ``noise="cc"``: the cluster id of every class (tuple).
      tie_tol: outputs closer than this count as tied: an instance is
        correct only if its true class beats every other class by more than
        ``tie_tol``, and the teacher's top-2 for the PLL student is taken on
        outputs rounded to multiples of ``tie_tol`` (ties go to the lower
        class index, as in the theorems). Without it, classes that are tied
        in exact arithmetic (e.g. every wrong class at ``eta = 0``) would be
        ordered by floating-point roundoff, which differs between devices
        and batch sizes.
    """

    num_classes: int
    per_class: int
    c: float
    d: float
    lam: float
    num_rounds: int
    noise: str = "symmetric"
    methods: tuple = ("sd_closed", "pll_closed")
    dim: Optional[int] = None
    exact_labels: bool = False
    exact_tol: float = 1e-9
    exact_max_iter: int = 1000
    exact_method: str = "newton-cg"
    pll_loss: str = "ce"
    pll_q: float = 0.7
    clusters: Optional[tuple] = None
    tie_tol: float = 1e-10


class MethodStats(NamedTuple):
    """Per-cell outcome of one method; arrays ``(E, S, R)`` (``R = len(rounds)``).

    Attributes:
      rounds: ``(R,)`` the round index of each slice (PLL: ``[1]``, the student
        after one round; round 0 is the teacher).
      num_correct: instances whose true class has the strictly largest output.
      num_correct_clean: the same among instances whose given label is the
        true class.
      num_correct_noisy: the same among instances whose given label is wrong.
      all_correct: ``num_correct == N``.
      converged: exact solver reached its tolerance (always ``True`` for the
        closed form).
      residual: exact solver's fixed-point residual (0 for the closed form).
    """

    rounds: np.ndarray
    num_correct: np.ndarray
    num_correct_clean: np.ndarray
    num_correct_noisy: np.ndarray
    all_correct: np.ndarray
    converged: np.ndarray
    residual: np.ndarray


class TheoryStats(NamedTuple):
    """The theorems' predictions for the grid (linearised balanced block model).

    Population quantities use the corruption matrix ``C(eta)`` (shape
    ``(E, ...)``); empirical ones use each cell's label fractions ``f_k(l)``
    (shape ``(E, S, ...)``).

    Attributes:
      *_condition: the corruption condition ``f_k(k) > f_k(l)``
        (:func:`sdtheory.theorems.corruption_condition_core`).
      *_margin: ``Delta`` (``inf`` when no label is corrupted).
      *_rstar: the first all-correct round
        ``floor(log((1 + Delta)/Delta)/log(b/a))`` (``-1`` when the condition
        fails; :func:`sdtheory.theorems.min_rounds_core`).
      *_all_correct: ``(.., R)`` every training instance correct at each
        round by the score formula with the global term
        (:func:`sdtheory.theorems.all_correct_at_core`).
      *_pll_accuracy: predicted training accuracy of the PLL student after
        one round (:func:`sdtheory.theorems.pll_prediction_core`), rounded to
        12 decimals (its last bits otherwise depend on the batch layout).
      *_pll_condition: the PLL one-round condition.
    """

    population_condition: np.ndarray
    population_margin: np.ndarray
    population_rstar: np.ndarray
    population_all_correct: np.ndarray
    population_pll_accuracy: np.ndarray
    population_pll_condition: np.ndarray
    empirical_condition: np.ndarray
    empirical_margin: np.ndarray
    empirical_rstar: np.ndarray
    empirical_all_correct: np.ndarray
    empirical_pll_accuracy: np.ndarray
    empirical_pll_condition: np.ndarray


class SimResult(NamedTuple):
    """Everything the engine measured (a pytree of host arrays).

    Attributes:
      etas: ``(E,)`` noise rates.
      rounds: ``(R,)`` SD rounds ``0..R-1``.
      num_instances: ``N``.
      num_noisy: ``(E, S)`` instances whose given label differs from the true class.
      methods: ``{name: MethodStats}`` for the methods that were run.
      theory: :class:`TheoryStats`.
    """

    etas: np.ndarray
    rounds: np.ndarray
    num_instances: int
    num_noisy: np.ndarray
    methods: dict
    theory: TheoryStats

    def accuracy(self, method: str) -> np.ndarray:
        """Training accuracy vs the true classes, ``(E, S, R)``."""
        return self.methods[method].num_correct / self.num_instances

    def clean_accuracy(self, method: str) -> np.ndarray:
        """Accuracy on instances with a correct given label; NaN where there are none."""
        den = (self.num_instances - self.num_noisy)[:, :, None]
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(den > 0, self.methods[method].num_correct_clean / np.maximum(den, 1), np.nan)

    def noisy_accuracy(self, method: str) -> np.ndarray:
        """Accuracy on instances with a corrupted label; NaN where there are none."""
        den = self.num_noisy[:, :, None]
        return np.where(den > 0, self.methods[method].num_correct_noisy / np.maximum(den, 1), np.nan)


def make_config(
    *,
    num_classes: int = 4,
    per_class: int = 100,
    c: float = 0.4,
    d: float = 0.1,
    lam: float = 1e-4,
    num_rounds: int = 16,
    noise: str = "symmetric",
    methods: Sequence[str] = ("sd_closed", "pll_closed"),
    dim: Optional[int] = None,
    exact_labels: bool = False,
    exact_tol: float = 1e-9,
    exact_max_iter: int = 1000,
    exact_method: str = "newton-cg",
    pll_loss: str = "ce",
    pll_q: float = 0.7,
    clusters: Any = None,
    tie_tol: float = 1e-10,
) -> SimConfig:
    """Validated :class:`SimConfig`. Raises ``ValueError``/``TypeError`` naming the bad field."""
    k = V.check_int(num_classes, "num_classes", minimum=2)
    n = V.check_int(per_class, "per_class", minimum=1)
    for name, v in (("c", c), ("d", d)):
        if isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)) or not math.isfinite(v):
            raise ValueError(f"{name} must be a finite number, got {v!r}")
    if not (0.0 <= float(d) < float(c) < 1.0):
        raise ValueError(f"the block model needs 0 <= d < c < 1, got c = {c}, d = {d}")
    V.check_lam(lam)
    if np.ndim(lam) != 0:
        raise ValueError(f"lam must be a scalar, got shape {np.shape(lam)}")
    r = V.check_int(num_rounds, "num_rounds", minimum=1)
    methods = tuple(methods)
    if not methods:
        raise ValueError(f"methods must name at least one of {METHODS}")
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise ValueError(f"unknown method(s) {bad}; choose from {METHODS}")
    if len(set(methods)) != len(methods):
        raise ValueError(f"methods must not repeat, got {methods}")
    methods = tuple(m for m in METHODS if m in methods)
    if dim is not None:
        dim = V.check_int(dim, "dim", minimum=1)
    noise = canonical_kind(noise)
    if noise == "cc":
        clusters = tuple(int(i) for i in check_clusters(clusters, k))
    elif clusters is not None:
        raise ValueError(f"clusters are only used by noise 'cc', not {noise!r}")
    if not (isinstance(exact_tol, (float, int)) and not isinstance(exact_tol, bool) and exact_tol > 0
            and math.isfinite(exact_tol)):
        raise ValueError(f"exact_tol must be a positive finite float, got {exact_tol!r}")
    V.check_int(exact_max_iter, "exact_max_iter", minimum=1)
    if exact_method not in ("newton-cg", "lbfgs", "optax-lbfgs"):
        raise ValueError(f"exact_method must be 'newton-cg', 'lbfgs' or 'optax-lbfgs', got {exact_method!r}")
    if pll_loss not in ("ce", "gce"):
        raise ValueError(f"pll_loss must be 'ce' or 'gce', got {pll_loss!r}")
    if not (0.0 < float(pll_q) <= 1.0):
        raise ValueError(f"pll_q (GCE exponent) must lie in (0, 1], got {pll_q!r}")
    block_spectrum([n] * k, float(c), float(d))  # PSD check with a clear message
    if not isinstance(exact_labels, (bool, np.bool_)):
        raise TypeError(f"exact_labels must be a bool, got {exact_labels!r}")
    if isinstance(tie_tol, bool) or not isinstance(tie_tol, (int, float)) or not (0.0 <= tie_tol < 0.1):
        raise ValueError(f"tie_tol must be a float in [0, 0.1), got {tie_tol!r}")
    return SimConfig(k, n, float(c), float(d), float(lam), r, noise, methods, dim, bool(exact_labels),
                     float(exact_tol), int(exact_max_iter), exact_method, pll_loss, float(pll_q), clusters,
                     float(tie_tol))


# --------------------------------------------------------------------------
# Noise / theorems: the engine calls the package's modules.
# --------------------------------------------------------------------------

from .noise import (  # noqa: E402
    canonical_kind,
    check_clusters,
    corruption_matrix,
    corruption_matrix_core,
    empirical_fractions_core,
    sample_labels_exact_core,
    sample_labels_iid_core,
)
from .theorems import (  # noqa: E402
    all_correct_at_core,
    corruption_condition_core,
    margin_core,
    min_rounds_core,
    pll_condition_core,
    pll_prediction_core,
)

from .refine import top2_core  # noqa: E402


# --------------------------------------------------------------------------
# One cell
# --------------------------------------------------------------------------


class _Shared(NamedTuple):
    """Arrays shared by every cell (replicated over devices)."""

    classes: jax.Array  # (N,) true classes
    bspec: Any  # BlockSpectrum of the block Gram
    spec: Any  # full Spectrum of the block Gram (exact methods on the block path) or None
    factors: jax.Array  # (3,) per-round shrink factors (a, b, g) of the balanced block model
    cluster_ids: Any  # (K,) cluster ids for noise "cc", else None


def _strict_correct(outputs: jax.Array, classes: jax.Array, tie_tol) -> jax.Array:
    """``outputs[..., i, true_i] > max_{l != true_i} outputs[..., i, l] + tie_tol`` (ties are errors)."""
    # Unrolled over the K classes: elementwise ops on (..., N) arrays fuse into one
    # loop, ~10x faster on CPU than one-hot masks reduced over a minor axis of size K.
    k = outputs.shape[-1]
    true_out = jnp.zeros(outputs.shape[:-1], outputs.dtype)
    other = jnp.full(outputs.shape[:-1], -jnp.inf, outputs.dtype)
    for l in range(k):
        col = outputs[..., l]
        is_l = classes == l
        true_out = jnp.where(is_l, col, true_out)
        other = jnp.where(is_l, other, jnp.maximum(other, col))
    return true_out > other + tie_tol


def _tie_safe_top2(outputs: jax.Array, tie_tol) -> jax.Array:
    """Top-2 targets of outputs rounded to multiples of ``tie_tol`` (exact ties -> lower index)."""
    if tie_tol > 0:
        outputs = jnp.round(outputs / tie_tol)
    return top2_core(outputs)


def _stats(outputs, classes, clean, converged, residual, tie_tol):
    correct = _strict_correct(outputs, classes, tie_tol)  # (R, N)
    n = classes.shape[0]
    # Both counts in one small matmul: XLA then materialises `correct` once
    # instead of re-fusing the whole output computation into each reduction
    # (measured 4x faster on CPU than three separate sums). Exact: 0/1 sums < 2^53.
    weights = jnp.stack([jnp.ones_like(clean), clean], axis=-1).astype(outputs.dtype)  # (N, 2)
    counts = jnp.round(correct.astype(outputs.dtype) @ weights).astype(jnp.int32)  # (R, 2)
    num, num_clean = counts[..., 0], counts[..., 1]
    return (num, num_clean, num - num_clean, num == n, converged, residual)


def simulate_cell(config: SimConfig, shared: _Shared, eta: jax.Array, key: jax.Array) -> dict:
    """Everything for one (eta, seed) cell; pure and jit/vmap-able (no validation).

    Returns a dict of arrays: per method a 6-tuple of ``(R_m,)`` arrays
    (num_correct, num_correct_clean, num_correct_noisy, all_correct,
    converged, residual), plus ``num_noisy`` and the theory scalars.
    """
    k, n = config.num_classes, config.per_class
    r = config.num_rounds
    classes = shared.classes
    lam = jnp.asarray(config.lam)
    rounds = jnp.arange(r)
    label_key, feature_key = jax.random.split(key)

    C = corruption_matrix_core(config.noise, k, eta, shared.cluster_ids)
    sampler = sample_labels_exact_core if config.exact_labels else sample_labels_iid_core
    given = sampler(label_key, classes, C)
    y = jax.nn.one_hot(given, k, dtype=lam.dtype)
    clean = given == classes
    frac = empirical_fractions_core(classes, given, k)

    if config.dim is None:
        spec = shared.spec

        def closed(targets, rr):
            return block_outputs_spectral(shared.bspec, classes, targets, lam, rr)

    else:
        x = sample_block_features(feature_key, classes, config.c, config.d, config.dim, num_classes=k)
        spec = feature_spectrum(x, validate=False)

        def closed(targets, rr):
            return sd_outputs_spectral(spec, targets, lam, rr)


    def exact(targets, rounds_n, loss="ce"):
        return exact_outputs_spectral(spec, targets, lam, rounds_n, loss=loss, q=config.pll_q,
                                      tol=config.exact_tol, max_iter=config.exact_max_iter, method=config.exact_method)

    out: dict = {}
    ones_r = jnp.ones((r,), bool)
    zeros_r = jnp.zeros((r,), lam.dtype)
    tt = config.tie_tol
    zero = jnp.zeros((1,), rounds.dtype)
    if "sd_closed" in config.methods:
        out["sd_closed"] = _stats(closed(y, rounds), classes, clean, ones_r, zeros_r, tt)
    if "pll_closed" in config.methods:
        # the PLL pipeline of sdtheory.refine.pll_student_block/_spectral, with a tie-safe top-2
        student = closed(_tie_safe_top2(closed(y, zero)[0], tt), zero)
        out["pll_closed"] = _stats(student, classes, clean, ones_r[:1], zeros_r[:1], tt)
    if "sd_exact" in config.methods or "pll_exact" in config.methods:
        teacher_rounds = r if "sd_exact" in config.methods else 1
        res = exact(y, teacher_rounds)
        if "sd_exact" in config.methods:
            out["sd_exact"] = _stats(res.outputs, classes, clean, res.converged, res.residuals, tt)
        if "pll_exact" in config.methods:
            st = exact(_tie_safe_top2(res.outputs[0], tt), 1, loss=config.pll_loss)
            out["pll_exact"] = _stats(st.outputs, classes, clean, st.converged & res.converged[:1],
                                      jnp.maximum(st.residuals, res.residuals[:1]), tt)

    # theory (population: C; empirical: this cell's fractions)
    a, b, g = shared.factors[0], shared.factors[1], shared.factors[2]
    out["num_noisy"] = jnp.sum(~clean)
    for tag, f in (("pop", C), ("emp", frac)):
        out[f"{tag}_condition"] = corruption_condition_core(f)
        out[f"{tag}_margin"] = margin_core(f)
        out[f"{tag}_rstar"] = min_rounds_core(f, a, b)
        out[f"{tag}_all_correct"] = all_correct_at_core(f, a, b, g, rounds)
        out[f"{tag}_pll_accuracy"] = pll_prediction_core(f, a, b, g, 1).accuracy[0]
        out[f"{tag}_pll_condition"] = pll_condition_core(f, a, b, g)
    return out


# --------------------------------------------------------------------------
# The grid
# --------------------------------------------------------------------------


def _mesh(devices: Optional[Sequence[Any]]) -> Mesh:
    devs = list(jax.devices()) if devices is None else list(devices)
    if not devs:
        raise ValueError("devices must contain at least one device")
    return Mesh(np.asarray(devs), ("cells",))


@partial(jax.jit, static_argnums=(0,))
def cell_chunk(config: SimConfig, shared: _Shared, etas: jax.Array, keys: jax.Array, cell_idx: jax.Array) -> dict:
    """Cells ``cell_idx`` (flat, eta-major indices into ``etas x keys``) in one vmapped call.

    Pure and jitted; when ``cell_idx`` is sharded over devices the whole
    computation is partitioned along the cell axis.
    """
    num_seeds = keys.shape[0]
    eta = etas[cell_idx // num_seeds]
    key = keys[cell_idx % num_seeds]
    return jax.vmap(lambda e, k: simulate_cell(config, shared, e, k))(eta, key)


def _shared_arrays(config: SimConfig) -> _Shared:
    classes = block_classes([config.per_class] * config.num_classes)
    bspec = block_spectrum([config.per_class] * config.num_classes, config.c, config.d)
    spec = None
    if config.dim is None and any(m in config.methods for m in _EXACT_METHODS):
        spec = gram_spectrum(block_gram(classes, config.c, config.d, num_classes=config.num_classes))
    factors = jnp.asarray(block_factors(config.per_class, config.num_classes, config.c, config.d, config.lam))
    ids = None if config.clusters is None else jnp.asarray(np.asarray(config.clusters, dtype=np.int64))
    return _Shared(jnp.asarray(classes, dtype=jnp.int32), bspec, spec, factors, ids)


def seed_keys(seed: int, num_seeds: int) -> jax.Array:
    """The ``num_seeds`` per-seed keys derived from the PRNG seed (``split(PRNGKey(seed))``)."""
    return jax.random.split(jax.random.PRNGKey(seed), num_seeds)


def _check_etas(etas: Any) -> np.ndarray:
    arr = np.asarray(etas, dtype=float)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"etas must be a non-empty 1-D array of noise rates, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)) or np.any(arr < 0) or np.any(arr > 1):
        raise ValueError(f"noise rates eta must lie in [0, 1], got {arr.tolist()}")
    return arr


def _gather(x: jax.Array) -> np.ndarray:
    if jax.process_count() > 1:  # pragma: no cover - multi-host only
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(jax.device_get(x))


def run_grid(
    config: SimConfig,
    etas: Any,
    *,
    num_seeds: int,
    seed: int = 0,
    chunk_size: Optional[int] = None,
    devices: Optional[Sequence[Any]] = None,
    progress: bool | Callable[[int, int, float], None] = False,
) -> SimResult:
    """Run every method of ``config`` on the grid ``etas x range(num_seeds)``.

    Args:
      config: from :func:`make_config`.
      etas: ``(E,)`` noise rates in ``[0, 1]``.
      num_seeds: ``S >= 1`` Monte Carlo repetitions per noise rate; seed ``s``
        uses key ``split(PRNGKey(seed), S)[s]`` for every ``eta``.
      seed: the PRNG seed.
      chunk_size: at most this many cells per jitted call (default 64 with an
        exact method, else 4096); the grid is cut into equal chunks, each a
        multiple of the number of devices (the last one padded by repeating
        its final cell).
      devices: devices to shard over (default: all, ``jax.devices()``).
      progress: ``True`` prints ``cells done/total`` per chunk on stderr; a
        callable gets ``(done, total, seconds)``.

    Returns:
      :class:`SimResult` with ``(E, S, ...)`` arrays.
    """
    if not isinstance(config, SimConfig):
        raise TypeError("config must be a SimConfig (use make_config)")
    etas_np = _check_etas(etas)
    num_seeds = V.check_int(num_seeds, "num_seeds", minimum=1)
    seed = V.check_int(seed, "seed", minimum=0)
    mesh = _mesh(devices)
    ndev = mesh.devices.size
    has_exact = any(m in config.methods for m in _EXACT_METHODS)
    if chunk_size is None:
        chunk_size = 64 if has_exact else 4096
    chunk_size = V.check_int(chunk_size, "chunk_size", minimum=1)
    total = etas_np.size * num_seeds
    chunk_size = min(chunk_size, total)
    num_chunks = -(-total // chunk_size)
    chunk_size = -(-total // num_chunks)  # balance the chunks: little padding in the last one
    chunk_size = -(-chunk_size // ndev) * ndev

    replicated = NamedSharding(mesh, PartitionSpec())
    cell_sharding = NamedSharding(mesh, PartitionSpec("cells"))
    shared = jax.device_put(_shared_arrays(config), replicated)
    etas_dev = jax.device_put(jnp.asarray(etas_np), replicated)
    keys = jax.device_put(seed_keys(seed, num_seeds), replicated)

    pieces = []
    t0 = time.perf_counter()
    for start in range(0, total, chunk_size):
        idx = np.arange(start, start + chunk_size)
        valid = int(np.sum(idx < total))
        idx = np.minimum(idx, total - 1)  # pad the last chunk by repeating the last cell
        idx_dev = jax.make_array_from_callback(idx.shape, cell_sharding, lambda sl, idx=idx: idx[sl])
        out = cell_chunk(config, shared, etas_dev, keys, idx_dev)
        out = jax.tree_util.tree_map(lambda a, v=valid: _gather(a)[:v], out)
        pieces.append(out)
        done = start + valid
        if progress:
            dt = time.perf_counter() - t0
            if callable(progress):
                progress(done, total, dt)
            else:
                print(f"[sdtheory.simulate] cells {done}/{total} ({100.0 * done / total:5.1f}%) "
                      f"{dt:7.1f} s", file=sys.stderr, flush=True)
    flat = jax.tree_util.tree_map(lambda *a: np.concatenate(a, axis=0), *pieces)
    return _assemble(config, etas_np, num_seeds, flat)


def _assemble(config: SimConfig, etas: np.ndarray, num_seeds: int, flat: dict) -> SimResult:
    e, s = etas.size, num_seeds
    grid = lambda a: a.reshape((e, s) + a.shape[1:])  # noqa: E731
    rounds = np.arange(config.num_rounds)
    methods = {}
    for m in config.methods:
        num, cl, no, allc, conv, res = (grid(a) for a in flat[m])
        mrounds = rounds if m.startswith("sd_") else np.array([1])
        methods[m] = MethodStats(mrounds, num, cl, no, allc, conv, res)
    names = ("condition", "margin", "rstar", "all_correct", "pll_accuracy", "pll_condition")
    pop = [grid(flat[f"pop_{n}"])[:, 0] for n in names]  # identical over seeds
    emp = [grid(flat[f"emp_{n}"]) for n in names]
    # The predicted PLL accuracy is a sum of fractions: its last bits depend on
    # the batch shape (chunk size, devices). Round it to 12 decimals so that
    # tables and "accuracy == 1" decisions do not change with the layout.
    pop[4], emp[4] = np.round(pop[4], 12), np.round(emp[4], 12)
    theory = TheoryStats(*pop, *emp)
    n_total = config.num_classes * config.per_class
    return SimResult(etas, rounds, n_total, grid(flat["num_noisy"]), methods, theory)


def first_all_correct(all_correct: Any, rounds: Any) -> np.ndarray:
    """First round (value from ``rounds``) whose ``all_correct`` is true along the last axis; ``-1`` if none."""
    a = np.asarray(all_correct, dtype=bool)
    r = np.asarray(rounds)
    if a.shape[-1] != r.shape[0]:
        raise ValueError(f"all_correct has {a.shape[-1]} rounds but rounds has {r.shape[0]}")
    hit = a.any(axis=-1)
    return np.where(hit, r[np.argmax(a, axis=-1)], -1)


# --------------------------------------------------------------------------
# Reductions over seeds (host-side NumPy): the phase-diagram table and the
# theory-vs-simulation agreement.
# --------------------------------------------------------------------------

#: Columns of :func:`phase_table`, in order.
TABLE_COLUMNS = (
    "eta", "round", "method", "num_seeds", "mean_accuracy", "std_accuracy", "min_accuracy",
    "mean_clean_accuracy", "mean_noisy_accuracy", "frac_all_correct", "majority_all_correct",
    "theory_all_correct", "theory_rstar", "frac_theory_empirical_all_correct",
    "theory_pll_accuracy", "mean_theory_empirical_pll_accuracy", "agree",
    "frac_converged", "max_residual",
)


def _pooled(num, den):
    """Sum of ``num`` over seeds / sum of ``den``; ``None`` where the denominator is 0."""
    n = np.sum(num, axis=1)
    d = np.sum(den, axis=1)
    return [None if dd == 0 else float(nn) / float(dd) for nn, dd in zip(n.ravel(), d.ravel())]


def phase_table(result: SimResult) -> dict:
    """One row per (eta, round, method), as columns (see :data:`TABLE_COLUMNS` and docs/simulation.md).

    SD methods have a row for every round; PLL methods one row (round 1,
    the student after one round). ``theory_all_correct`` is the population
    theorem's prediction for that cell (SD: every instance correct at that
    round; PLL: predicted student accuracy 1), ``agree`` compares it with the
    majority outcome over seeds (``frac_all_correct > 1/2``).
    """
    th = result.theory
    cols: dict = {name: [] for name in TABLE_COLUMNS}
    e_count = result.etas.size
    for m, st in result.methods.items():
        acc = result.accuracy(m)  # (E, S, R')
        n_clean = result.num_instances - result.num_noisy
        for j, r in enumerate(st.rounds):
            a = acc[:, :, j]
            frac_all = st.all_correct[:, :, j].mean(axis=1)
            majority = frac_all > 0.5
            if m.startswith("sd_"):
                pred = th.population_all_correct[:, j]
                pred_emp = th.empirical_all_correct[:, :, j].mean(axis=1)
                rstar = th.population_rstar
            else:
                pred = th.population_pll_accuracy >= 1.0
                pred_emp = (th.empirical_pll_accuracy >= 1.0).mean(axis=1)
                rstar = np.full(e_count, -1)
            clean = _pooled(st.num_correct_clean[:, :, j], n_clean)
            noisy = _pooled(st.num_correct_noisy[:, :, j], result.num_noisy)
            for i in range(e_count):
                cols["eta"].append(float(result.etas[i]))
                cols["round"].append(int(r))
                cols["method"].append(m)
                cols["num_seeds"].append(int(a.shape[1]))
                cols["mean_accuracy"].append(float(a[i].mean()))
                cols["std_accuracy"].append(float(a[i].std()))
                cols["min_accuracy"].append(float(a[i].min()))
                cols["mean_clean_accuracy"].append(clean[i])
                cols["mean_noisy_accuracy"].append(noisy[i])
                cols["frac_all_correct"].append(float(frac_all[i]))
                cols["majority_all_correct"].append(bool(majority[i]))
                cols["theory_all_correct"].append(bool(pred[i]))
                cols["theory_rstar"].append(int(rstar[i]) if m.startswith("sd_") else None)
                cols["frac_theory_empirical_all_correct"].append(float(pred_emp[i]))
                cols["theory_pll_accuracy"].append(None if m.startswith("sd_") else float(th.population_pll_accuracy[i]))
                cols["mean_theory_empirical_pll_accuracy"].append(
                    None if m.startswith("sd_") else float(th.empirical_pll_accuracy[i].mean()))
                cols["agree"].append(bool(pred[i] == majority[i]))
                cols["frac_converged"].append(float(st.converged[i, :, j].mean()))
                cols["max_residual"].append(float(st.residual[i, :, j].max()))
    return cols


def _offsets(predicted: np.ndarray, observed: np.ndarray) -> dict:
    """Histogram of ``observed - predicted`` first all-correct rounds, and the mismatch counts."""
    both = (predicted >= 0) & (observed >= 0)
    diff = (observed - predicted)[both]
    vals, counts = np.unique(diff, return_counts=True)
    return {
        "histogram": {str(int(v)): int(c) for v, c in zip(vals, counts)},
        "num_compared": int(both.sum()),
        "exact_match_fraction": float(np.mean(diff == 0)) if diff.size else None,
        "mean_offset": float(diff.mean()) if diff.size else None,
        "predicted_but_never_observed": int(np.sum((predicted >= 0) & (observed < 0))),
        "observed_but_predicted_never": int(np.sum((predicted < 0) & (observed >= 0))),
        "neither": int(np.sum((predicted < 0) & (observed < 0))),
    }


def agreement(result: SimResult) -> dict:
    """Theory vs simulation, per method (JSON-able dict; see docs/simulation.md).

    For SD methods: the fraction of (eta, round) cells where the population
    prediction equals the majority outcome over seeds, the fraction of
    (eta, seed, round) cells where the empirical prediction equals the
    outcome, and the distribution of the offset between the observed and
    predicted first all-correct round (population ``r*`` and each seed's
    empirical ``r*``; only rounds inside the simulated range can be
    observed, so predictions beyond it count as "predicted but never
    observed"). For PLL methods: the same two agreement fractions for
    "student accuracy is 1".
    """
    th = result.theory
    out = {}
    for m, st in result.methods.items():
        majority = st.all_correct.mean(axis=1) > 0.5  # (E, R')
        if m.startswith("sd_"):
            pred_pop, pred_emp = th.population_all_correct, th.empirical_all_correct
            obs_first = first_all_correct(st.all_correct, st.rounds)  # (E, S)
            r_max = int(st.rounds[-1])
            clip = lambda r: np.where(r > r_max, -1, r)  # noqa: E731  beyond the simulated rounds
            entry = {
                "cells_population_vs_majority": float(np.mean(pred_pop == majority)),
                "cells_empirical_vs_outcome": float(np.mean(pred_emp == st.all_correct)),
                "first_round_offset_vs_population": _offsets(
                    clip(np.broadcast_to(th.population_rstar[:, None], obs_first.shape)), obs_first),
                "first_round_offset_vs_empirical": _offsets(clip(th.empirical_rstar), obs_first),
                "predicted_beyond_simulated_rounds_population": int(np.sum(th.population_rstar > r_max)),
            }
        else:
            pred_pop = (th.population_pll_accuracy >= 1.0)[:, None]
            pred_emp = (th.empirical_pll_accuracy >= 1.0)[..., None]
            entry = {
                "cells_population_vs_majority": float(np.mean(pred_pop == majority)),
                "cells_empirical_vs_outcome": float(np.mean(pred_emp == st.all_correct)),
                "mean_abs_accuracy_error_empirical": float(np.mean(np.abs(
                    result.accuracy(m)[..., 0] - th.empirical_pll_accuracy))),
            }
        entry["all_converged"] = bool(np.all(st.converged))
        entry["max_residual"] = float(np.max(st.residual))
        out[m] = entry
    return out
