"""Test configuration: float64 for the tests' own JAX code, hypothesis profiles, and compilation settings.

The package itself leaves JAX's configuration alone (its public functions run
in a scoped float64 context); the tests turn float64 on for their own
reference computations.

``SDTHEORY_HYPOTHESIS_PROFILE=thorough`` runs many more examples and the tests
marked ``slow`` (Monte Carlo, end-to-end scripts, scikit-learn's estimator
checks); the default ``ci`` profile keeps the suite fast on 2 cores and skips
them, unless ``-m`` selects them (``-m slow`` runs only those).

Test-harness settings of XLA (this file only; importing ``sdtheory`` sets
nothing): nearly all of the suite's time is XLA compiling many small
programs, so the tests compile with XLA's backend optimisations off
(``XLA_FLAGS=--xla_backend_optimization_level=0
--xla_llvm_disable_expensive_passes=true``, a third less compile time) and
with XLA:CPU's older loop emitters instead of its fusion emitters
(``--xla_cpu_use_fusion_emitters=false``: the exact solver's program compiles
in under half the CPU time; test_exact plus test_buckets took 91 CPU-s instead
of 213). The operations are the same (results may differ in the last bits, as
where LLVM fuses a multiply-add; every tolerance holds as before); the programs
only run slower, which the tests' small problems do not notice. A user's own
``XLA_FLAGS`` is left as it is; ``SDTHEORY_TEST_XLA_OPT=1`` keeps XLA's defaults.

Compiled programs are kept across test modules (shared shapes compile once
per process) until the process holds many memory mappings: each XLA:CPU
executable keeps its own, and the whole suite in one process compiles
enough of them to reach Linux's default limit of 65530 mappings per process
(``vm.max_map_count``), where compilation aborts. After a module, when
``/proc/self/maps`` lists more than ``MAX_MAPPINGS`` of them (or cannot be
read), ``jax.clear_caches()`` drops them all.
"""

import os

if "XLA_FLAGS" not in os.environ and os.environ.get("SDTHEORY_TEST_XLA_OPT") != "1":
    # before JAX creates its CPU client (the flags are read then); subprocesses of the tests inherit it
    os.environ["XLA_FLAGS"] = " ".join(
        [
            "--xla_backend_optimization_level=0",
            "--xla_llvm_disable_expensive_passes=true",
            "--xla_cpu_use_fusion_emitters=false",
        ]
    )

import jax  # noqa: E402
import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

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

#: Memory mappings of this process above which the compiled programs are dropped after a module: under
#: half of Linux's default ``vm.max_map_count`` (65530), as one module can add several thousand.
MAX_MAPPINGS = 30_000


def pytest_collection_modifyitems(config, items):
    """Skip the ``slow`` tests outside the thorough profile, unless ``-m`` names them."""
    if PROFILE == "thorough" or "slow" in (config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(reason="slow: runs with SDTHEORY_HYPOTHESIS_PROFILE=thorough or -m slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


def memory_mappings():
    """The number of memory mappings of this process (``/proc/self/maps`` lines), None where unreadable."""
    try:
        with open("/proc/self/maps", "rb") as fh:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 20), b""))
    except OSError:
        return None


@pytest.fixture(autouse=True, scope="module")
def _drop_compiled_programs():
    """After the module, release every compiled executable (and its mappings) when the process holds many."""
    yield
    count = memory_mappings()
    if count is None or count > MAX_MAPPINGS:
        jax.clear_caches()
