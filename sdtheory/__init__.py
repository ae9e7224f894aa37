"""sdtheory: the theory of self-distillation for linear probing, in JAX.

Importing the package changes nothing global: JAX's configuration, the
matplotlib backend and the file system are left alone. Public functions
compute in float64 inside a scoped ``jax.enable_x64(True)`` and return NumPy
arrays; the pure ``*_core`` kernels compute in the dtype of their inputs
(docs/glossary.md, "float64 policy").
"""

__version__ = "0.2.0"

from .spectral import Spectrum, apply_spectral, feature_spectrum, gram_spectrum, spectrum
from .closed_form import kernel_ridge_sd, predictions, sd_mixed_outputs, sd_outputs, sd_test_outputs
from .block import (
    BlockSpectrum,
    balanced_block_eigenvalues,
    block_classes,
    block_factors,
    block_gram,
    block_outputs,
    block_spectrum,
    sample_block_features,
)
from .losses import LOSSES
from .exact import SOLVERS, ExactResult, exact_outputs, exact_predict
from .predictor import MODELS, Predictor, predictor
from .noise import (
    condition_threshold,
    confusable_clusters,
    corruption_matrix,
    empirical_fractions,
    exact_counts,
    max_eta,
    sample_labels,
    validate_corruption_matrix,
)
from .noise import KINDS as NOISE_KINDS
from .metrics import TIE_TOL, SplitAccuracy, accuracy, correct, first_all_correct, heldout_accuracy, split_accuracy
from .theorems import (
    BEYOND_RANGE,
    MAX_ROUND,
    FiniteSamplePrediction,
    LogFactors,
    PLLPrediction,
    RoundWindow,
    all_correct_at,
    all_correct_rounds,
    corruption_condition,
    finite_sample_prediction,
    margin,
    max_rounds,
    min_rounds,
    pll_accuracy_prediction,
    pll_condition,
    log_block_factors,
)
from .reduced import block_type_outputs
from .refine import PLLResult, pll_student, pll_student_block_model, top2_targets
from .smoothing import beta_smoothing, confidence, predictive_diversity, uniform_smoothing
from . import data, experiments, io, montecarlo, plots, smoothing_study, variants
from .montecarlo import METHODS, SimConfig, SimResult, make_config, run_grid

__all__ = [
    # spectra and the closed form
    "Spectrum",
    "apply_spectral",
    "feature_spectrum",
    "gram_spectrum",
    "spectrum",
    "kernel_ridge_sd",
    "predictions",
    "sd_mixed_outputs",
    "sd_outputs",
    "sd_test_outputs",
    # the predictor and the exact solver
    "MODELS",
    "Predictor",
    "predictor",
    "LOSSES",
    "SOLVERS",
    "ExactResult",
    "exact_outputs",
    "exact_predict",
    # the block model
    "BlockSpectrum",
    "balanced_block_eigenvalues",
    "block_classes",
    "block_factors",
    "block_gram",
    "block_outputs",
    "block_type_outputs",
    "block_spectrum",
    "sample_block_features",
    # label noise
    "NOISE_KINDS",
    "condition_threshold",
    "confusable_clusters",
    "corruption_matrix",
    "empirical_fractions",
    "exact_counts",
    "max_eta",
    "sample_labels",
    "validate_corruption_matrix",
    # correctness and accuracy
    "TIE_TOL",
    "SplitAccuracy",
    "accuracy",
    "correct",
    "first_all_correct",
    "heldout_accuracy",
    "split_accuracy",
    # theorems
    "BEYOND_RANGE",
    "MAX_ROUND",
    "LogFactors",
    "log_block_factors",
    "PLLPrediction",
    "RoundWindow",
    "all_correct_at",
    "all_correct_rounds",
    "corruption_condition",
    "FiniteSamplePrediction",
    "finite_sample_prediction",
    "margin",
    "max_rounds",
    "min_rounds",
    "pll_accuracy_prediction",
    "pll_condition",
    # PLL and smoothing
    "PLLResult",
    "pll_student",
    "pll_student_block_model",
    "top2_targets",
    "beta_smoothing",
    "confidence",
    "predictive_diversity",
    "uniform_smoothing",
    # Monte Carlo and experiments
    "METHODS",
    "SimConfig",
    "SimResult",
    "make_config",
    "run_grid",
    "data",
    "experiments",
    "io",
    "montecarlo",
    "plots",
    "smoothing_study",
    "variants",
    # scikit-learn estimator (optional extra: imported on first use)
    "SelfDistillationClassifier",
]


def __getattr__(name: str):
    """``SelfDistillationClassifier`` is imported on first use: scikit-learn is an optional extra."""
    if name == "SelfDistillationClassifier":
        try:
            from .estimator import SelfDistillationClassifier
        except ImportError as err:  # pragma: no cover - depends on the environment
            raise ImportError(
                "sdtheory.SelfDistillationClassifier needs scikit-learn: pip install 'sdtheory[data]'"
            ) from err
        return SelfDistillationClassifier
    raise AttributeError(f"module 'sdtheory' has no attribute {name!r}")
