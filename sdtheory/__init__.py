"""sdtheory: the theory of self-distillation for linear probing, in JAX.

The package face: the names below, validated at the boundary and computed by the pure kernels of
:mod:`sdtheory._src`; everything else lives in its module (docs/glossary.md lists where). Importing the
package changes nothing global; public functions compute in float64 inside a scoped
``jax.enable_x64(True)`` (docs/glossary.md, "float64 policy").
"""

__version__ = "0.2.0"

from ._validation import MODELS
from ._src.losses import LOSSES
from ._src.exact import SOLVERS, ExactResult
from ._src.rules import TIE_TOL
from .spectral import Spectrum, feature_spectrum, gram_spectrum
from .predictor import Predictor, predictor
from .closed_form import predictions, sd_outputs
from .exact import exact_outputs, exact_predict
from .metrics import accuracy, correct, split_accuracy
from .reduced import block_type_outputs
from .block import block_classes, block_gram, block_outputs, sample_block_features
from .refine import pll_student, top2_targets
from .noise import condition_threshold, corruption_matrix, empirical_fractions, sample_labels
from .theorems import (
    all_correct_rounds,
    corruption_condition,
    finite_sample_prediction,
    max_rounds,
    min_rounds,
    pll_accuracy_prediction,
    pll_condition,
)

# the other submodules, so that sdtheory.<module> is an attribute (those above are bound by their imports)
from . import data, experiments, io, losses, montecarlo, plots, smoothing, smoothing_study, variants

__all__ = [
    # outputs: the predictor and its conveniences
    "predictor",
    "Predictor",
    "sd_outputs",
    "exact_outputs",
    "exact_predict",
    "ExactResult",
    "predictions",
    "pll_student",
    "top2_targets",
    # spectra
    "Spectrum",
    "gram_spectrum",
    "feature_spectrum",
    # the block model
    "block_classes",
    "block_gram",
    "block_outputs",
    "block_type_outputs",
    "sample_block_features",
    # label noise
    "corruption_matrix",
    "sample_labels",
    "empirical_fractions",
    "condition_threshold",
    # theorems
    "corruption_condition",
    "min_rounds",
    "max_rounds",
    "all_correct_rounds",
    "finite_sample_prediction",
    "pll_condition",
    "pll_accuracy_prediction",
    # correctness and accuracy
    "TIE_TOL",
    "accuracy",
    "correct",
    "split_accuracy",
    # registries
    "MODELS",
    "SOLVERS",
    "LOSSES",
    # the scikit-learn estimator (optional extra: imported on first use)
    "SelfDistillationClassifier",
    # submodules: the Monte Carlo engine, data sets, result files and figures
    "montecarlo",
    "data",
    "io",
]

#: Names that moved from the top level into their modules: where each lives now (``module.name``).
_MOVED = {"NOISE_KINDS": "noise.KINDS"} | {
    name: f"{module}.{name}"
    for module, names in (
        ("spectral", "apply_spectral spectrum"),
        ("closed_form", "kernel_ridge_sd sd_test_outputs"),
        ("block", "BlockSpectrum balanced_block_eigenvalues block_factors block_spectrum"),
        ("noise", "confusable_clusters exact_counts max_eta validate_corruption_matrix"),
        ("metrics", "SplitAccuracy first_all_correct heldout_accuracy"),
        ("theorems", "BEYOND_RANGE MAX_ROUND LogFactors log_block_factors PLLPrediction RoundWindow all_correct_at"),
        ("theorems", "FiniteSamplePrediction margin"),
        ("refine", "PLLResult pll_student_block_model"),
        ("smoothing", "beta_smoothing confidence predictive_diversity uniform_smoothing"),
        ("montecarlo", "METHODS SimConfig SimResult make_config run_grid"),
    )
    for name in names.split()
}


def __getattr__(name: str):
    """The estimator on first use (scikit-learn is an optional extra); a moved name says where it lives now."""
    if name == "SelfDistillationClassifier":
        try:
            from .estimator import SelfDistillationClassifier
        except ImportError as err:  # pragma: no cover - depends on the environment
            raise ImportError(
                "sdtheory.SelfDistillationClassifier needs scikit-learn: pip install 'sdtheory[data]'"
            ) from err
        return SelfDistillationClassifier
    if name in _MOVED:
        raise AttributeError(f"sdtheory.{name} lives in its module now: sdtheory.{_MOVED[name]}")
    raise AttributeError(f"module 'sdtheory' has no attribute {name!r}")
