"""The spectrum of the training Gram matrix and functions of it (public face of :mod:`sdtheory._src.spectral`).

Every closed form in this package is a function of the Gram matrix applied to a label matrix, evaluated in the
eigenbasis computed once: see :mod:`sdtheory._src.spectral` for the scale conventions and docs/closed_form.md.
"""

from ._src.spectral import Spectrum, apply_spectral, feature_spectrum, gram_spectrum, spectrum

__all__ = ["Spectrum", "apply_spectral", "feature_spectrum", "gram_spectrum", "spectrum"]
