"""The spectrum of the training Gram matrix and functions of it (public face of :mod:`sdtheory._src.spectral`).

Every closed form in this package is a function of the Gram matrix applied to
a label matrix, evaluated in the eigenbasis computed once: see
:mod:`sdtheory._src.spectral` for the scale conventions and docs/closed_form.md.
"""

from ._src.spectral import (
    GRAM_ROUTE_CUTOFF,
    Spectrum,
    apply_spectral,
    apply_spectral_to,
    feature_spectrum,
    gram_spectrum,
    spectrum,
)

__all__ = [
    "GRAM_ROUTE_CUTOFF",
    "Spectrum",
    "apply_spectral",
    "apply_spectral_to",
    "feature_spectrum",
    "gram_spectrum",
    "spectrum",
]
