"""sdtheory: the theory of self-distillation for linear probing, in JAX.

Dtype policy: importing ``sdtheory`` enables JAX's float64 mode
(``jax_enable_x64``), because the theorems are statements about exact
arithmetic and several of them compare numbers like ``(a/b)^(r+1)`` against
``Delta/(1 + Delta)`` that float32 cannot resolve. Set the environment
variable ``SDTHEORY_X64=0`` before importing to keep JAX's default.
"""

import os as _os

import jax as _jax

if _os.environ.get("SDTHEORY_X64", "1") != "0":
    _jax.config.update("jax_enable_x64", True)

__version__ = "0.1.0"

from .spectral import Spectrum, apply_spectral, feature_spectrum, gram_spectrum, spectrum  # noqa: E402
from .closed_form import (  # noqa: E402
    kernel_ridge_sd,
    predictions,
    sd_mixed_outputs,
    sd_outputs,
    sd_outputs_spectral,
    sd_predictions_spectral,
    sd_test_outputs,
)
from .block import (  # noqa: E402
    BlockSpectrum,
    balanced_block_eigenvalues,
    block_classes,
    block_factors,
    block_gram,
    block_outputs,
    block_spectrum,
    sample_block_features,
)
from .exact import ExactResult, exact_outputs, exact_outputs_spectral, exact_predict  # noqa: E402
from .noise import (  # noqa: E402
    condition_threshold,
    confusable_clusters,
    corruption_matrix,
    empirical_fractions,
    exact_counts,
    max_eta,
    sample_labels,
    validate_corruption_matrix,
)

from . import data  # noqa: E402  (real data: loaders, splits, feature maps; sklearn imported lazily)
from .theorems import (  # noqa: E402
    PLLPrediction,
    RoundWindow,
    all_correct_at,
    all_correct_rounds,
    corruption_condition,
    margin,
    max_rounds,
    min_rounds,
    pll_accuracy_prediction,
    pll_condition,
)
from .refine import PLLResult, pll_student, pll_student_block, pll_student_block_model, pll_student_spectral, top2_targets  # noqa: E402
from .smoothing import beta_smoothing, confidence, predictive_diversity, uniform_smoothing  # noqa: E402
from .metrics import SplitAccuracy, accuracy, heldout_accuracy, split_accuracy  # noqa: E402
from . import io, plots, simulate  # noqa: E402
from .simulate import METHODS, SimConfig, SimResult, make_config, run_grid  # noqa: E402
