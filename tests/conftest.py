"""Test configuration: float64 and hypothesis profiles.

``SDTHEORY_HYPOTHESIS_PROFILE=thorough`` runs many more examples; the default
``ci`` profile keeps the suite fast on 2 cores.
"""

import os

import sdtheory  # noqa: F401  (enables float64)
from hypothesis import HealthCheck, settings

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
