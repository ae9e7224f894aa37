"""The grid: cells chunked, vmapped, sharded over devices; sweeps over lam, c and d.

:func:`run_grid` lays the cells out as ``(lam, c, d) points x eta x seed``; every chunk of cells is one
call of the same compiled program (:func:`cell_chunk`), so a slice of a sweep equals the separate run bit
for bit. Progress and finished chunks go to callbacks; ``completed=`` resumes an interrupted run.
"""

from __future__ import annotations

import itertools
import time
from functools import partial
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Optional

import jax
from jax.typing import ArrayLike
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from .. import _validation as V
from ..block import check_sampler_cd
from .._x64 import float64
from .cell import Point, Shared, make_point, make_shared, point_spectra, simulate_cell
from .config import SimConfig, check_config
from .report import SimResult, assemble

__all__ = ["cell_chunk", "run_grid", "seed_keys"]


def _check_devices(devices: Any) -> list:
    """``None`` (all devices) or a non-empty sequence of distinct :class:`jax.Device` objects."""
    if devices is None:
        return list(jax.devices())
    devs = V.as_sequence(devices, "devices", "a sequence of jax.Device objects (e.g. jax.devices()[:2])")
    if not devs:
        raise ValueError("devices must contain at least one device")
    bad = [d for d in devs if not isinstance(d, jax.Device)]
    if bad:
        raise TypeError(f"devices must be jax.Device objects (from jax.devices()), got {bad[0]!r}")
    if len(set(devs)) != len(devs):
        raise ValueError(f"devices must not repeat, got {devs}")
    return devs


def _mesh(devices: Optional[Sequence[Any]]) -> Mesh:
    return Mesh(np.asarray(_check_devices(devices), dtype=object), ("cells",))


@partial(jax.jit, static_argnums=(0,))
def cell_chunk(
    config: SimConfig, shared: Shared, point: Point, etas: jax.Array, keys: jax.Array, cell_idx: jax.Array
) -> dict:
    """Cells ``cell_idx`` (flat, eta-major indices into ``etas x keys``) of one point in one vmapped call
    (pure, jitted; partitioned along a sharded ``cell_idx``)."""
    num_seeds = keys.shape[0]
    eta = etas[cell_idx // num_seeds]
    key = keys[cell_idx % num_seeds]
    # lam batched like eta: the same bits as a compile-time lam (an unbatched traced scalar lets XLA
    # reassociate products with it)
    lam = jnp.broadcast_to(point.lam, cell_idx.shape)
    return jax.vmap(lambda l, e, k: simulate_cell(config, shared, point._replace(lam=l), e, k))(lam, eta, key)


def seed_keys(seed: int, num_seeds: int) -> jax.Array:
    """The ``num_seeds`` per-seed keys ``split(PRNGKey(seed))`` of :func:`run_grid` (``seed``: an int in
    ``[0, 2**63 - 1]``, taken as an int64 in any JAX mode)."""
    seed = V.check_size(seed, "seed", minimum=0, maximum=V.MAX_SEED)
    num_seeds = V.check_size(num_seeds, "num_seeds", minimum=1)
    with jax.enable_x64(True):
        return jax.random.split(jax.random.PRNGKey(seed), num_seeds)


def _real_values(values: Any, name: str, *, positive: bool = False) -> np.ndarray:
    """A non-empty 1-D array of finite reals (``positive``: each ``> 0``, a scalar allowed); errors name ``name``."""
    arr = V.check_real_array(values, name).astype(float)
    arr = np.atleast_1d(arr) if positive else arr
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D sequence, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)) or (positive and not np.all(arr > 0)):
        raise ValueError(f"{name} must be finite{' and > 0' if positive else ''}, got {V.short_list(arr)}")
    return arr


def _sweep(values: Any, default: float, name: str) -> tuple:
    """(values as a list, swept?)."""
    if values is None:
        return [default], False
    return [float(v) for v in _real_values(values, name, positive=name == "lams")], True


def _leaf_name(path) -> str:
    return jax.tree_util.keystr(path, simple=True, separator=".")


def _flatten_chunk(tree: Any) -> dict:
    """A chunk result (pytree of host arrays) as the flat dict ``name -> array`` given to ``on_chunk``."""
    leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {_leaf_name(path): np.asarray(leaf) for path, leaf in leaves}


def _chunk_layout(fn: Callable, *args: Any) -> tuple:
    """(names, treedef, per-cell shapes and dtypes) of a chunk's result, by tracing only (no computation)."""
    shapes = jax.eval_shape(fn, *args)
    leaves, treedef = jax.tree_util.tree_flatten_with_path(shapes)
    names = [_leaf_name(path) for path, _ in leaves]
    return names, treedef, [(leaf.shape[1:], np.dtype(leaf.dtype)) for _, leaf in leaves]


def _unflatten_chunk(flat: Mapping[str, Any], layout: tuple, valid: int, key: int) -> Any:
    names, treedef, specs = layout
    other = "it was produced by another configuration"
    if set(flat) != set(names):
        raise ValueError(f"completed[{key}] has arrays {sorted(flat)}, expected {sorted(names)}: {other}")
    leaves = [np.asarray(flat[name]) for name in names]
    for name, a, (shape, dtype) in zip(names, leaves, specs, strict=True):
        if a.shape != (valid, *shape) or a.dtype != dtype:
            want = f"{(valid, *shape)} and {dtype}"
            raise ValueError(f"completed[{key}][{name!r}] has shape {a.shape} and dtype {a.dtype}, not {want}: {other}")
    return jax.tree_util.tree_unflatten(treedef, leaves)


def _check_completed(completed: Any, per_point: int, chunk_size: int, num_points: int) -> dict:
    """``completed`` as ``{int start: chunk}``; every start must be a chunk start of this layout."""
    if completed is None:
        return {}
    if not isinstance(completed, Mapping):
        raise TypeError(f"completed must be a mapping start -> chunk result, got {type(completed).__name__}")
    starts = {p * per_point + s for p in range(num_points) for s in range(0, per_point, chunk_size)}
    out = {}
    for k, v in completed.items():
        try:
            start = int(k)
        except (TypeError, ValueError):
            raise ValueError(f"completed keys must be chunk starts (integers), got {k!r}") from None
        if start not in starts or not isinstance(v, Mapping):
            raise ValueError(
                f"completed[{k!r}] is not a chunk of this grid ({num_points} point(s) of {per_point} "
                f"cells in chunks of {chunk_size}): it comes from another grid, chunk size or "
                "number of devices"
            )
        out[start] = v
    return out


def _gather(x: jax.Array) -> np.ndarray:
    if jax.process_count() > 1:  # pragma: no cover - multi-host only
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(jax.device_get(x))


@float64
def run_grid(
    config: SimConfig,
    etas: ArrayLike,
    *,
    lams: Any = None,
    cs: Any = None,
    ds: Any = None,
    num_seeds: int,
    seed: int = 0,
    chunk_size: Optional[int] = None,
    devices: Optional[Sequence[Any]] = None,
    progress: Optional[Callable[[int, int, float], None]] = None,
    completed: Optional[Mapping[int, Mapping[str, Any]]] = None,
    on_chunk: Optional[Callable[[int, dict], None]] = None,
) -> SimResult:
    """Run every method of ``config`` on the grid ``[lams x cs x ds x] etas x range(num_seeds)``.

    Args:
      config: from :func:`make_config`; its ``lam``, ``c`` and ``d`` are used for an axis that is not swept.
      etas: ``(E,)`` noise rates in ``[0, 1]``.
      lams, cs, ds: optional 1-D sequences of values to sweep (every combination in the block model's
        domain, as in :func:`make_config`); the given axes lead the results' shapes, in this order.
      num_seeds, seed: ``S >= 1`` repetitions per cell; seed ``s`` uses key ``split(PRNGKey(seed), S)[s]``
        for every eta and parameter value (common random numbers).
      chunk_size: at most this many cells per compiled call (default 64 with an exact method, else 4096);
        the ``E x S`` cells of a point are cut into equal chunks, each a multiple of the number of devices
        (the last one padded by repeating its final cell).
      devices: devices to shard over (default: all, ``jax.devices()``).
      progress: optional callable ``(done, total, seconds)`` called after every chunk.
      completed: ``start -> chunk result`` (as given to ``on_chunk``) from a run with the same arguments
        and number of devices: not recomputed; the result is bit for bit an uninterrupted run's.
      on_chunk: optional callable ``(start, result)`` after every computed chunk, before ``progress``:
        ``start`` its first cell in the flat order (``point_index * E * S + first cell``), ``result`` a
        flat dict ``name -> host array`` over the chunk's cells.

    Returns a :class:`SimResult` whose arrays have shape ``(*sweep, E, S, ...)``. Raises ``ValueError`` or
    ``TypeError`` naming a bad argument, or for a ``completed`` chunk that does not belong to this grid.
    """
    config = check_config(config)
    etas_np = _real_values(etas, "etas")
    if np.any(etas_np < 0) or np.any(etas_np > 1):
        raise ValueError(f"etas: every noise rate eta must lie in [0, 1], got {V.short_list(etas_np)}")
    num_seeds = V.check_size(num_seeds, "num_seeds", minimum=1)
    seed = V.check_size(seed, "seed", minimum=0, maximum=V.MAX_SEED)
    lam_list, lam_swept = _sweep(lams, config.lam, "lams")
    c_list, c_swept = _sweep(cs, config.c, "cs")
    d_list, d_swept = _sweep(ds, config.d, "ds")
    swept = " and ".join(n for n, s in (("cs", c_swept), ("ds", d_swept)) if s) or "config"
    for c, d in itertools.product(c_list, d_list):
        try:
            V.check_cd(c, d, per_class=config.per_class, num_classes=config.num_classes)
            if config.dim is not None:
                check_sampler_cd(c, d, config.num_classes)
        except ValueError as exc:
            raise ValueError(f"{swept}: {exc}") from None
    for name, fn in (("progress", progress), ("on_chunk", on_chunk)):
        if fn is not None and not callable(fn):
            raise TypeError(f"{name} must be a callable or None")
    if chunk_size is None:
        chunk_size = 64 if config.has_exact else 4096
    chunk_size = V.check_size(chunk_size, "chunk_size", minimum=1)
    mesh = _mesh(devices)
    ndev = mesh.devices.size
    per_point = etas_np.size * num_seeds
    chunk_size = min(chunk_size, per_point)
    num_chunks = -(-per_point // chunk_size)
    chunk_size = -(-per_point // num_chunks)  # balance the chunks: little padding in the last one
    chunk_size = -(-chunk_size // ndev) * ndev

    replicated = NamedSharding(mesh, PartitionSpec())
    cell_sharding = NamedSharding(mesh, PartitionSpec("cells"))
    shared = jax.device_put(make_shared(config), replicated)
    etas_dev = jax.device_put(jnp.asarray(etas_np), replicated)
    keys = jax.device_put(seed_keys(seed, num_seeds), replicated)

    # lam, c and d are traced: a config differing only in them reuses the compiled program
    static = config._replace(lam=None, c=None, d=None)  # type: ignore[arg-type]  # None: not part of the static key
    spectra = {(c, d): point_spectra(config, c, d) for c, d in itertools.product(c_list, d_list)}
    points = list(itertools.product(lam_list, c_list, d_list))
    total = per_point * len(points)
    completed = _check_completed(completed, per_point, chunk_size, len(points))
    layout = None  # (leaf names, treedef, leaf shapes) of a chunk result, for completed chunks
    done = 0
    t0 = time.perf_counter()
    per_point_results = []
    for p, (lam, c, d) in enumerate(points):
        point = jax.device_put(make_point(config, lam, c, d, spectra[c, d]), replicated)
        pieces = []
        for start in range(0, per_point, chunk_size):
            idx = np.arange(start, start + chunk_size)
            valid = int(np.sum(idx < per_point))
            idx = np.minimum(idx, per_point - 1)  # pad the last chunk by repeating the last cell
            idx_dev = jax.make_array_from_callback(idx.shape, cell_sharding, idx.__getitem__)
            key = p * per_point + start
            done += valid
            if key in completed:
                if layout is None:
                    layout = _chunk_layout(partial(cell_chunk, static), shared, point, etas_dev, keys, idx_dev)
                pieces.append(_unflatten_chunk(completed[key], layout, valid, key))
                continue
            out = cell_chunk(static, shared, point, etas_dev, keys, idx_dev)
            pieces.append(jax.tree_util.tree_map(lambda a, v=valid: _gather(a)[:v], out))
            if on_chunk is not None:
                on_chunk(key, _flatten_chunk(pieces[-1]))
            if progress is not None:
                progress(done, total, time.perf_counter() - t0)
        per_point_results.append(jax.tree_util.tree_map(lambda *a: np.concatenate(a, axis=0), *pieces))
    # (points, E * S, ...) -> (L, C, D, E, S, ...)
    flat = jax.tree_util.tree_map(lambda *a: np.stack(a, axis=0), *per_point_results)
    shape = (len(lam_list), len(c_list), len(d_list), etas_np.size, num_seeds)
    grid = jax.tree_util.tree_map(lambda a: a.reshape(shape + a.shape[2:]), flat)
    sweep = {"lam": (lam_list, lam_swept), "c": (c_list, c_swept), "d": (d_list, d_swept)}
    return assemble(config, etas_np, num_seeds, grid, sweep)
