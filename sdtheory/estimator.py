r"""A scikit-learn estimator for self-distilled linear probes.

:class:`SelfDistillationClassifier` fits the exact softmax student of every
self-distillation round (:func:`sdtheory.predictor` with ``model="exact"``)
and predicts with the last one. scikit-learn is an optional dependency: this
module imports it, and ``sdtheory`` imports this module only when
``sdtheory.SelfDistillationClassifier`` is first used.

**lam and C.** Our objective is ``(1/N) sum_i CE(t_i, W x_i + b) + (lam/2) ||W||_F^2``;
scikit-learn's multinomial ``LogisticRegression`` minimises
``C sum_i CE + (1/2) ||W||_F^2``, the same problem at ``C = 1 / (lam N)``.
For two classes scikit-learn keeps one weight vector ``w`` (logit ``w x``);
ours keeps two, whose optimum is ``w_1 = -w_0 = w/2`` (the class gradients sum
to zero), so ``||W||_F^2 = ||w||^2 / 2`` and the problems agree at
``C = 2 / (lam N)`` (docs/exact_solver.md, "The estimator").
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from . import _validation as V
from .exact import DEFAULT_MAX_ITER, DEFAULT_RTOL, DEFAULT_SOLVER, DEFAULT_TOL
from .predictor import STUDENTS
from .refine import check_init

__all__ = ["SelfDistillationClassifier", "STUDENTS"]


class SelfDistillationClassifier(ClassifierMixin, BaseEstimator):
    """Multinomial logistic regression distilled into itself for ``num_rounds`` rounds.

    Round 0 fits the labels (cross-entropy, L2 weight ``lam``, optional
    unregularised intercept); each further round fits the training outputs of
    the previous one (``student="sd"``) or ``1/2`` on each of its two highest
    classes (``student="pll"``, with ``loss``). Predictions use the last round;
    :meth:`round_proba` gives every round.

    Parameters:
      lam: L2 weight of the mean loss (``C = 1/(lam N)`` in scikit-learn's
        multinomial parametrisation, ``C = 2/(lam N)`` for two classes).
      num_rounds: total rounds including round 0 (``1`` = plain logistic regression).
      student: ``"sd"`` or ``"pll"``.
      loss: the PLL student's loss for rounds ``>= 1`` (``"ce"`` or ``"gce"``); round 0 is
        always CE, and ``student="sd"`` rounds fit soft outputs with CE (``loss="ce"``).
      q: GCE exponent.
      init: the PLL student's starting weights (``student="pll"``):
        ``"teacher"`` (the weights of the round whose top 2 it fits, as the
        SelfPLL reference code) or ``"zero"``; the same optimum for CE,
        possibly another stationary point for GCE. ``student="sd"`` rounds
        start from the previous round's weights (``"teacher"`` only).
      fit_intercept: unregularised bias (scikit-learn's default).
      tol, rtol, max_iter, solver: the exact solver's options (:func:`sdtheory.exact_outputs`).
      temperature, xi, hard: the distillation variants of ``student="sd"``
        (:func:`sdtheory.exact_outputs`, docs/variants.md): round ``r`` fits
        ``xi softmax(Z_{r-1}/temperature) + (1 - xi) Y`` (argmax one-hot rows
        when ``hard``). The defaults are plain SD.

    Attributes (after ``fit``): ``classes_``, ``n_features_in_``, ``coef_``
    (``(K, d)``; ``(1, d)`` for two classes, as scikit-learn), ``intercept_``,
    ``round_coefs_`` ``(R, K, d)``, ``round_intercepts_`` ``(R, K)``,
    ``n_iter_`` ``(R,)``, ``kkt_`` ``(R,)`` (the scale-free stationarity of each round),
    ``predictor_`` (the :class:`sdtheory.Predictor` of the fit).
    """

    def __init__(
        self,
        lam: float = 1e-3,
        num_rounds: int = 1,
        student: str = "sd",
        loss: str = "ce",
        q: float = 0.7,
        fit_intercept: bool = True,
        tol: float = DEFAULT_TOL,
        rtol: float = DEFAULT_RTOL,
        max_iter: int = DEFAULT_MAX_ITER,
        solver: str = DEFAULT_SOLVER,
        temperature: float = 1.0,
        xi: float = 1.0,
        hard: bool = False,
        init: str = "teacher",
    ):
        self.lam = lam
        self.num_rounds = num_rounds
        self.student = student
        self.loss = loss
        self.q = q
        self.fit_intercept = fit_intercept
        self.tol = tol
        self.rtol = rtol
        self.max_iter = max_iter
        self.solver = solver
        self.temperature = temperature
        self.xi = xi
        self.hard = hard
        self.init = init

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = False
        return tags

    # ------------------------------------------------------------------ fit
    def fit(self, X: Any, y: Any = None, *, soft_targets: Any = None) -> SelfDistillationClassifier:
        """Fit on features ``X`` ``(N, d)`` and labels ``y`` (any hashable labels), or on ``soft_targets``.

        ``soft_targets`` (``(N, K)`` probability rows, class ``j`` = column
        ``j``) replaces ``y``; then ``classes_`` is ``0..K-1``.
        """
        from .predictor import predictor

        if self.student not in STUDENTS:
            raise ValueError(f"student must be one of {STUDENTS}, got {self.student!r}")
        check_init(self.init)
        if self.student == "sd" and self.init != "teacher":
            raise ValueError(
                f"init={self.init!r} is the PLL student's starting point (student='pll'); student='sd' rounds "
                "start from the previous round's weights (init='teacher')"
            )
        if self.student == "sd" and self.loss != "ce":
            raise ValueError(
                f"loss={self.loss!r} is the PLL student's loss (student='pll'); student='sd' rounds fit the "
                "previous round's soft outputs with cross-entropy (loss='ce')"
            )
        if soft_targets is not None:
            if y is not None:
                raise ValueError("pass y (labels) or soft_targets (N, K) probability rows, not both")
            X = validate_data(self, X, dtype=np.float64, ensure_min_samples=2)
            V.check_targets(soft_targets, "soft_targets")  # real (not bool, string or object) probability rows
            t = np.asarray(soft_targets, dtype=float)
            if t.shape[0] != X.shape[0]:
                raise ValueError(f"soft_targets must be (N, K) with N = {X.shape[0]} (the rows of X), got {t.shape}")
            self.classes_ = np.arange(t.shape[1])
        else:
            if y is None:
                raise ValueError(
                    "SelfDistillationClassifier requires y to be passed, but the target y is None (pass labels y "
                    "or soft_targets=)"
                )
            X, y = validate_data(self, X, y, dtype=np.float64, ensure_min_samples=2)
            check_classification_targets(y)
            self.classes_, enc = np.unique(y, return_inverse=True)
            if self.classes_.size < 2:
                raise ValueError(
                    f"SelfDistillationClassifier needs samples of at least 2 classes in the data, got only "
                    f"class {self.classes_[0]!r}"
                )
            t = np.eye(self.classes_.size)[enc]
        if self.student == "pll":
            where = "the columns of soft_targets" if soft_targets is not None else "the classes in y"
            V.check_pll_classes(self.classes_.size, where)
        opts = dict(
            lam=self.lam,
            features=X,
            model="exact",
            tol=self.tol,
            rtol=self.rtol,
            max_iter=self.max_iter,
            solver=self.solver,
            fit_intercept=self.fit_intercept,
        )
        variants = dict(temperature=self.temperature, xi=self.xi, hard=self.hard)
        if self.student == "pll" and variants != dict(temperature=1.0, xi=1.0, hard=False):
            raise ValueError(
                f"temperature, xi and hard are variants of student='sd'; with student='pll' leave them at their "
                f"defaults (got {variants})"
            )
        self.predictor_ = predictor(
            t,
            num_rounds=self.num_rounds,
            student=self.student,
            loss=self.loss,
            q=self.q,
            init=self.init,
            **variants,
            **opts,
        )
        fitted = self.predictor_
        result = fitted.exact_result(num_rounds=fitted.num_rounds)
        self.round_coefs_ = np.asarray(fitted.weights(num_rounds=fitted.num_rounds))
        self.round_intercepts_ = np.asarray(fitted.intercepts(num_rounds=fitted.num_rounds))
        self.n_iter_ = np.asarray(result.iterations)
        self.kkt_ = np.asarray(result.kkt)
        w, b = self.round_coefs_[-1], self.round_intercepts_[-1]
        if self.classes_.size == 2:  # one vector, as scikit-learn's binary model: logit of class 1 over class 0
            self.coef_, self.intercept_ = (w[1] - w[0])[None, :], np.atleast_1d(b[1] - b[0])
        else:
            self.coef_, self.intercept_ = w, b
        return self

    # ------------------------------------------------------------------ predict
    def _features(self, X: Any) -> np.ndarray:
        """``X`` validated against the fit (``NotFittedError`` before ``fit``); every prediction starts here."""
        check_is_fitted(self)
        return validate_data(self, X, dtype=np.float64, reset=False)

    def _logits(self, X: Any, round_index: int = -1) -> np.ndarray:
        X = self._features(X)
        return X @ self.round_coefs_[round_index].T + self.round_intercepts_[round_index]

    def decision_function(self, X: Any) -> np.ndarray:
        """Logits ``(N, K)`` of the last round; for two classes the logit difference ``(N,)``."""
        z = self._logits(X)
        return z[:, 1] - z[:, 0] if self.classes_.size == 2 else z

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities ``(N, K)`` of the last round (columns in the order of ``classes_``)."""
        return _softmax(self._logits(X))

    def predict_log_proba(self, X: Any) -> np.ndarray:
        """Log of :meth:`predict_proba` (computed stably)."""
        z = self._logits(X)
        z = z - z.max(axis=1, keepdims=True)
        return z - np.log(np.exp(z).sum(axis=1, keepdims=True))

    def predict(self, X: Any) -> np.ndarray:
        """The most probable class of the last round (ties to the first class in ``classes_``)."""
        z = self._logits(X)  # checks the fit first
        return self.classes_[np.argmax(z, axis=1)]

    def round_proba(self, X: Any) -> np.ndarray:
        """Probabilities ``(R, N, K)`` of every round (round 0 = plain logistic regression)."""
        X = self._features(X)
        w, b = self.round_coefs_, self.round_intercepts_
        return np.stack([_softmax(X @ w[r].T + b[r]) for r in range(w.shape[0])])


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)
