"""The float64 policy (scoped, never global) and the concrete-input rule of the public boundary.

Importing :mod:`sdtheory` leaves JAX's configuration alone. Every public, validating function is decorated with
:func:`float64`: its body runs inside ``jax.enable_x64(True)`` and its array results come back as NumPy arrays (float64
whatever the caller's JAX mode). The pure kernels (``*_core``) compute in the dtype of their inputs: call them inside
``with jax.enable_x64(True):`` for float64.

A validating function checks values, which a tracer does not have: on a traced argument or inside ``jax.jit`` it raises
a ``TypeError`` naming the argument and the kernel to transform instead. Functions that run under transformations opt in
with ``traceable=True`` (the public functions of :data:`TRACEABLE_MODULES`); their traced real and signed-integer
arguments are widened to float64 / int64 in the scope (:func:`_widen_tracers`).
"""

from __future__ import annotations

import functools
import inspect
import sys
from typing import Any, Optional, TypeVar
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

# The scoped context is ``jax.enable_x64`` in current JAX and ``jax.experimental.enable_x64`` in older releases.
_enable_x64: Any = getattr(jax, "enable_x64", None)
if _enable_x64 is None:  # pragma: no cover - older JAX
    from jax.experimental import enable_x64 as _enable_x64  # type: ignore[attr-defined,no-redef]

F = TypeVar("F", bound=Callable)

#: Modules whose public functions run under ``jax.vmap``/``jax.jit`` and check what a tracer allows themselves.
TRACEABLE_MODULES = frozenset({"sdtheory.noise", "sdtheory.theorems"})
_WIDE = ((jnp.floating, jnp.float64), (jnp.signedinteger, jnp.int64), (jnp.complexfloating, jnp.complex128))


def float64(fn: Optional[F] = None, *, kernel: Optional[str] = None, traceable: Optional[bool] = None):
    """Run ``fn`` inside ``jax.enable_x64(True)`` (a scoped, thread-local setting); NumPy results. Use as ``@float64``
    or ``@float64(kernel=..., traceable=...)``.

    Args:
      kernel: the pure kernel to transform instead (named in the error for a traced argument); default
        ``<module>.<name>_core`` when the module has one, else the module's ``*_core`` kernels.
      traceable: let traced arguments through (the function checks what it can of a tracer itself). Default: ``True``
        for the functions of :data:`TRACEABLE_MODULES`, ``False`` for every other function.
    """
    if fn is None:
        return functools.partial(float64, kernel=kernel, traceable=traceable)
    allow = traceable if traceable is not None else fn.__module__ in TRACEABLE_MODULES

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if not allow:
            _refuse_traced(fn, kernel, args, kwargs)
        with _enable_x64(True):
            if allow and (any(map(_has_tracer, args)) or any(map(_has_tracer, kwargs.values()))):
                args, kwargs = _widen_tracers((args, kwargs))
            return to_host(fn(*args, **kwargs))

    return wrapper


def _has_tracer(x: Any) -> bool:
    if isinstance(x, jax.core.Tracer):
        return True
    if isinstance(x, (np.ndarray, jax.Array, str, bytes, int, float, complex, bool, type(None))):
        return False
    return any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves(x))


def _widen_tracers(tree):
    """Real, signed-integer and complex tracers in ``tree`` widened to 64 bits (called inside the x64 scope).

    A tracer made in 32-bit mode may carry float64 values (``jax.vmap`` of a NumPy batch); one conversion makes the
    types consistent (else XLA raises ``RuntimeProgramInputMismatch``). Bools, unsigned integers and keys pass."""

    def widen(x):
        if isinstance(x, jax.core.Tracer):
            for kind, wide in _WIDE:
                if jnp.issubdtype(x.dtype, kind):
                    return jax.lax.convert_element_type(x, wide)
        return x

    return jax.tree_util.tree_map(widen, tree)


def _tracing() -> bool:
    """True inside ``jax.jit`` (a transformation that stages out even operations on constants)."""
    try:
        from jax._src import core as _core

        if _core.trace_state_clean():
            return False
    except Exception:  # pragma: no cover - private API moved: fall back to the probe alone
        pass
    return isinstance(jnp.zeros(()), jax.core.Tracer)


def _refuse_traced(fn: Callable, kernel: Optional[str], args: tuple, kwargs: dict) -> None:
    """``TypeError`` for a traced argument or a call inside ``jax.jit`` (concrete values are needed)."""
    traced = [i for i, a in enumerate(args) if _has_tracer(a)]
    traced_kw = [k for k, v in kwargs.items() if _has_tracer(v)]
    if not traced and not traced_kw and not _tracing():
        return
    if kernel is None:  # <module>.<name>_core when the module has one, else the module's *_core kernels
        core = fn.__name__.lstrip("_") + "_core"
        own = hasattr(sys.modules.get(fn.__module__), core)
        kernel = f"{fn.__module__}.{core}" if own else f"the pure *_core kernels of {fn.__module__}"
    # sdtheory.<name> when the package exports it (sdtheory.Predictor.train_outputs), else the full path
    name = fn.__qualname__.lstrip("_")
    package = sys.modules.get("sdtheory")
    exported = fn.__module__.startswith("sdtheory.") and hasattr(package, name.split(".")[0])
    name = f"sdtheory.{name}" if exported else f"{fn.__module__}.{name}"
    if traced or traced_kw:
        kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        params = [p.name for p in inspect.signature(fn).parameters.values() if p.kind in kinds]
        arg = traced_kw[0] if traced_kw else params[traced[0]] if traced[0] < len(params) else f"argument {traced[0]}"
        raise TypeError(
            f"{arg} is a traced value (inside jax.jit/vmap/grad): {name} validates its input and "
            f"needs concrete values; transform {kernel} instead (no validation: check the values "
            "yourself)"
        )
    raise TypeError(
        f"{name} was called inside jax.jit: it validates its input and needs concrete values (its "
        f"checks and errors cannot run on traced results); call it outside jit, or jit {kernel} "
        "instead (no validation: check the values yourself)"
    )


def to_host(tree):
    """JAX arrays among the pytree leaves of ``tree`` as NumPy arrays, unless some leaf is a tracer."""
    leaves = jax.tree_util.tree_leaves(tree)
    if any(isinstance(x, jax.core.Tracer) for x in leaves) or not any(isinstance(x, jax.Array) for x in leaves):
        return tree
    return jax.tree_util.tree_map(lambda x: np.asarray(x) if isinstance(x, jax.Array) else x, tree)
