"""Helpers of the traceability tests (noise and theorems): which public functions there are, and vmap vs loop."""

import jax
import numpy as np


def public_wrapped(module):
    """Names in ``module.__all__`` of the float64-decorated public functions (the validating boundary)."""
    names = set()
    for name in module.__all__:
        obj = getattr(module, name)
        if callable(obj) and hasattr(obj, "__wrapped__") and not name.endswith("_core"):
            names.add(name)
    return names


def assert_vmap_equals_loop(fn, batch, rtol=1e-14):
    """``jax.vmap(fn)(batch)`` in JAX's default 32-bit mode equals ``fn`` per element, float64 kept."""
    with jax.enable_x64(False):  # the caller's default mode: a float64 NumPy batch gets a 32-bit type
        got = jax.vmap(fn)(batch)
    for i, x in enumerate(batch):
        for g, e in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(fn(x)), strict=True):
            g, e = np.asarray(g)[i], np.asarray(e)
            if np.issubdtype(e.dtype, np.floating):
                assert g.dtype == np.float64
                np.testing.assert_allclose(g, e, rtol=rtol, atol=1e-15)
            else:
                np.testing.assert_array_equal(g, e)
