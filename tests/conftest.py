"""Test configuration: float64 for the tests' own JAX code, and hypothesis profiles.

The package itself leaves JAX's configuration alone (its public functions run
in a scoped float64 context); the tests turn float64 on for their own
reference computations.

``SDTHEORY_HYPOTHESIS_PROFILE=thorough`` runs many more examples and the tests
marked ``slow`` (Monte Carlo, end-to-end scripts, scikit-learn's estimator
checks); the default ``ci`` profile keeps the suite fast on 2 cores and skips
them, unless ``-m`` selects them (``-m slow`` runs only those).

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
PROFILE = os.environ.get("SDTHEORY_HYPOTHESIS_PROFILE", "ci")
settings.load_profile(PROFILE)


def pytest_collection_modifyitems(config, items):
    """Skip the ``slow`` tests outside the thorough profile, unless ``-m`` names them."""
    if PROFILE == "thorough" or "slow" in (config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(reason="slow: runs with SDTHEORY_HYPOTHESIS_PROFILE=thorough or -m slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True, scope="module")
def _drop_compiled_programs():
    """Release the module's compiled executables (and their memory mappings) when it is done."""
    yield
    jax.clear_caches()
