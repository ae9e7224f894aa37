"""The float64 policy: scoped, never global.

Importing :mod:`sdtheory` leaves JAX's global configuration alone. Every
public, validating function is decorated with :func:`float64`, which runs its
body inside ``jax.enable_x64(True)``: its inputs are converted to float64, its
jitted kernels are traced and cached in float64 mode, and its array results
come back as NumPy arrays (float64 stays float64 whatever the caller's JAX
mode; a float64 *JAX* array would break ``jnp`` operations of a caller running
in JAX's default 32-bit mode). Called inside a transformation (``jax.vmap``,
``jax.jit``) the traced results are returned as they are. The pure kernels (``*_core``) compute in the dtype of their inputs;
call them inside ``with jax.enable_x64(True):`` to get float64 (the theorems
compare quantities like ``(a/b)^(r+1)`` with ``Delta/(1 + Delta)`` that
float32 cannot resolve).
"""

from __future__ import annotations

import functools
from typing import Callable, TypeVar

import jax
import numpy as np

__all__ = ["float64", "to_host"]

F = TypeVar("F", bound=Callable)


def float64(fn: F) -> F:
    """Run ``fn`` inside ``jax.enable_x64(True)`` (a scoped, thread-local setting)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with jax.enable_x64(True):
            return to_host(fn(*args, **kwargs))

    return wrapper  # type: ignore[return-value]


def to_host(tree):
    """JAX arrays in ``tree`` as NumPy arrays, unless some leaf is a tracer.

    Only pytree leaves are converted: objects that are not pytrees (such as a
    :class:`sdtheory.Predictor`, which keeps its spectrum on the device) pass
    through unchanged.
    """
    leaves = jax.tree_util.tree_leaves(tree)
    if any(isinstance(x, jax.core.Tracer) for x in leaves):
        return tree
    if not any(isinstance(x, jax.Array) for x in leaves):
        return tree
    return jax.tree_util.tree_map(lambda x: np.asarray(x) if isinstance(x, jax.Array) else x, tree)
