"""Test configuration: float64 for the tests' own JAX code, and hypothesis profiles.

The package itself leaves JAX's configuration alone (its public functions run
in a scoped float64 context); the tests turn float64 on for their own
reference computations.

``SDTHEORY_HYPOTHESIS_PROFILE=thorough`` runs many more examples; the default
``ci`` profile keeps the suite fast on 2 cores.

Compiled programs are dropped after every test module (``jax.clear_caches``):
each XLA:CPU executable keeps its own memory mappings, and the whole suite in
one process compiles enough of them to reach Linux's default limit of 65530
mappings per process (``vm.max_map_count``), where compilation aborts.
"""

import os

import jax
import pytest
from hypothesis import HealthCheck, settings

jax.config.update("jax_enable_x64", True)

settings.register_profile(
    "ci",
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=True,
)
settings.register_profile(
    "thorough",
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("SDTHEORY_HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(autouse=True, scope="module")
def _drop_compiled_programs():
    """Release the module's compiled executables (and their memory mappings) when it is done."""
    yield
    jax.clear_caches()
