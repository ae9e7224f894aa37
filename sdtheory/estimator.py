r"""A scikit-learn estimator for self-distilled linear probes (scikit-learn is an optional dependency).

:class:`SelfDistillationClassifier` fits the exact softmax student of every round (:func:`sdtheory.predictor`,
``model="exact"``) and predicts with the last one (or a selected one). Our ``(1/N) sum_i CE + (lam/2) ||W||^2``
is scikit-learn's multinomial ``LogisticRegression`` at ``C = 1 / (lam N)``; ``C = 2 / (lam N)`` for two
classes, where scikit-learn keeps one vector ``w = w_1 - w_0`` (docs/exact_solver.md, "The estimator").

**Choosing the round from one fit.** ``select_round="holdout"`` fits the chain on a stratified part of the
labels and predicts with the round (and student) whose predictions agree most with the held-out labels. Under
symmetric label noise at rate ``eta < (K - 1) / K`` the agreement ``eta / (K - 1) + a (1 - eta K / (K - 1))``
increases with the clean accuracy ``a``, so the most agreeing round is, up to sampling noise, the most
accurate one. :func:`round_scorer` gives the per-round scores to scikit-learn's model selection
(docs/practitioner.md). Compilation: docs/exact_solver.md (bucketed ``N``; JAX's opt-in persistent cache).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.special import log_softmax, softmax  # type: ignore[import-untyped]
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from . import _validation as V
from .exact import DEFAULT_MAX_ITER, DEFAULT_RTOL, DEFAULT_SOLVER, DEFAULT_TOL
from .predictor import STUDENTS, check_student, predictor

__all__ = ["SelfDistillationClassifier", "STUDENTS", "SELECT_ROUND", "round_scorer"]

#: The ways to choose the prediction round besides ``None`` (the last) and a round index.
SELECT_ROUND = ("holdout",)
#: ``student="auto"`` fits both students' chains and keeps the better one (``select_round="holdout"``).
AUTO_STUDENT = "auto"


class SelfDistillationClassifier(ClassifierMixin, BaseEstimator):
    """Multinomial logistic regression distilled into itself for ``num_rounds`` rounds.

    Round 0 fits the labels (CE, L2 weight ``lam``, optional unregularised intercept); each further round fits
    the previous round's training outputs (``student="sd"``) or ``1/2`` on its two highest classes
    (``student="pll"``, with ``loss``).

    Parameters:
      lam: L2 weight of the mean loss (``C = 1/(lam N)``; ``2/(lam N)`` for two classes).
      num_rounds: total rounds including round 0 (``1`` = plain logistic regression).
      student: ``"sd"``, ``"pll"``, or ``"auto"`` (with ``select_round="holdout"``: fits both chains on the
        same split and keeps the better; ties: SD).
      loss, q: the PLL student's loss for rounds ``>= 1`` (``"ce"`` or ``"gce"`` with exponent ``q``).
      init: the PLL student's start, ``"teacher"`` (the weights of the round whose top 2 it fits) or
        ``"zero"``; ``student="sd"``: ``"teacher"`` only.
      fit_intercept: unregularised bias (scikit-learn's default).
      tol, rtol, max_iter, solver: the exact solver's options (:func:`sdtheory.exact_outputs`).
      temperature, xi, hard: ``student="sd"`` variants (docs/variants.md): round ``r`` fits
        ``xi softmax(Z_{r-1}/temperature) + (1 - xi) Y`` (one-hot argmax rows when ``hard``).
      select_round: the prediction round: ``None`` (the last), a round index, or ``"holdout"`` (module
        docstring; ties: the earliest round).
      validation_fraction: held-out share of each class for ``"holdout"`` (``floor(fraction * n_k)``; at
        least one instance in all).
      random_state: seed (an integer) of the held-out split.
      pickle_predictor: keep ``predictor_`` in a pickle (by default only what prediction needs).

    Attributes (after ``fit``): ``classes_``, ``n_features_in_``, ``coef_`` (``(K, d)``; ``(1, d)`` for two
    classes), ``intercept_``, ``round_coefs_`` ``(R, K, d)``, ``round_intercepts_`` ``(R, K)``, ``n_iter_``
    ``(R,)``, ``kkt_`` ``(R,)``, ``predictor_``. With ``select_round`` set: ``best_round_``; with ``"holdout"``
    also ``round_scores_`` ``(R,)``, ``student_scores_`` (``{student: (R,) scores}``), ``best_student_`` and
    ``n_validation_``.
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
        select_round: Any = None,
        validation_fraction: float = 0.2,
        random_state: int = 0,
        pickle_predictor: bool = False,
    ):
        self.__dict__.update({name: value for name, value in locals().items() if name != "self"})  # the parameters

    def __getstate__(self) -> dict:
        """The state to pickle: without ``predictor_`` unless ``pickle_predictor`` (prediction does not use it)."""
        state = dict(super().__getstate__())  # a copy: the base class may return the instance's own __dict__
        if not self.pickle_predictor:
            state.pop("predictor_", None)
        return state

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = False
        return tags

    def fit(self, X: Any, y: Any = None, *, soft_targets: Any = None) -> SelfDistillationClassifier:
        """Fit on features ``X`` ``(N, d)`` and labels ``y`` (any hashable labels), or on ``soft_targets``
        (``(N, K)`` probability rows, class ``j`` = column ``j``; then ``classes_`` is ``0..K-1``)."""
        check_student(self.student, self.init, STUDENTS + (AUTO_STUDENT,))
        students = (self.student,) if self.student != AUTO_STUDENT else STUDENTS
        if self.student == "sd" and self.loss != "ce":
            raise ValueError(
                f"loss={self.loss!r} is the PLL student's loss (student='pll'); student='sd' rounds fit the "
                "previous round's soft outputs with cross-entropy (loss='ce')"
            )
        variants = dict(temperature=self.temperature, xi=self.xi, hard=self.hard)
        if self.student == "pll" and variants != dict(temperature=1.0, xi=1.0, hard=False):
            raise ValueError(
                f"temperature, xi and hard are variants of student='sd'; with student='pll' leave them at their "
                f"defaults (got {variants})"
            )
        select = self._check_selection()
        for name in ("best_round_", "round_scores_", "student_scores_", "best_student_", "n_validation_"):
            self.__dict__.pop(name, None)  # a previous fit's selection
        if soft_targets is not None:
            if y is not None:
                raise ValueError("pass y (labels) or soft_targets (N, K) probability rows, not both")
            if select == "holdout":
                raise ValueError(
                    "select_round='holdout' scores the rounds by agreement with held-out labels: pass labels y, "
                    "not soft_targets"
                )
            X = validate_data(self, X, dtype=np.float64, ensure_min_samples=2)
            V.check_targets(soft_targets, "soft_targets")  # real (not bool, string or object) probability rows
            t = np.asarray(soft_targets, dtype=float)
            V.check_same_n(X.shape[0], t.shape[0], "soft_targets", "X")
            self.classes_ = np.arange(t.shape[1])
            enc: Any = None
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
        if "pll" in students:
            where = "the columns of soft_targets" if soft_targets is not None else "the classes in y"
            V.check_pll_classes(self.classes_.size, where)
        train: Any = slice(None)  # every row
        if select == "holdout":
            train, val = _holdout_split(enc, self.validation_fraction, self.random_state)
        fits = {s: self._fit_chain(X[train], t[train], s) for s in students}
        if select == "holdout":
            scores = {s: _round_accuracies(X[val], enc[val], w, b) for s, (_, w, b) in fits.items()}
            # the highest agreement; ties: the earliest round, then SD (the order of STUDENTS)
            *_, self.best_student_, self.best_round_ = max(
                (float(sc[r]), -r, -i, s, r) for i, (s, sc) in enumerate(scores.items()) for r in range(sc.size)
            )
            self.student_scores_ = scores
            self.round_scores_ = self.student_scores_[self.best_student_]
            self.n_validation_ = int(val.size)
            kept = self.best_student_
        else:
            kept = students[0]
            if select is not None:
                self.best_round_ = select
        self.predictor_, self.round_coefs_, self.round_intercepts_ = fits[kept]
        result = self.predictor_.exact_result(num_rounds=self.predictor_.num_rounds)
        self.n_iter_ = np.asarray(result.iterations)
        self.kkt_ = np.asarray(result.kkt)
        w, b = self.round_coefs_[self._round], self.round_intercepts_[self._round]
        if self.classes_.size == 2:  # one vector, as scikit-learn's binary model: logit of class 1 over class 0
            self.coef_, self.intercept_ = (w[1] - w[0])[None, :], np.atleast_1d(b[1] - b[0])
        else:
            self.coef_, self.intercept_ = w, b
        return self

    def _check_selection(self) -> Any:
        """``select_round`` validated: ``None``, ``"holdout"`` or a round index ``< num_rounds`` (a Python int)."""
        sel = self.select_round
        num_rounds = V.check_num_rounds(self.num_rounds)
        if self.student == AUTO_STUDENT and sel != "holdout":
            raise ValueError(
                f"student='auto' chooses between the SD and PLL students on held-out labels: it needs "
                f"select_round='holdout', got select_round={sel!r}"
            )
        if sel is None:
            return None
        if isinstance(sel, str):
            if sel not in SELECT_ROUND:
                raise ValueError(f"select_round must be None, a round index or one of {SELECT_ROUND}, got {sel!r}")
            frac = V.check_real(self.validation_fraction, "validation_fraction")
            if not 0.0 < frac < 1.0:
                raise ValueError(f"validation_fraction must lie in (0, 1), got {self.validation_fraction!r}")
            V.check_size(self.random_state, "random_state", minimum=0, maximum=V.MAX_SEED)
            if num_rounds < 2:
                raise ValueError(
                    f"select_round='holdout' chooses among rounds: it needs num_rounds >= 2, got {num_rounds}"
                )
            return sel
        if isinstance(sel, (bool, np.bool_)) or not isinstance(sel, (int, np.integer)):
            raise TypeError(f"select_round must be None, a round index (int) or one of {SELECT_ROUND}, got {sel!r}")
        if not 0 <= int(sel) < num_rounds:
            raise ValueError(
                f"select_round={int(sel)} is not a fitted round: it must lie in 0..num_rounds-1 = 0..{num_rounds - 1}"
            )
        return int(sel)

    def _fit_chain(self, X: np.ndarray, t: np.ndarray, student: str) -> tuple:
        """``(Predictor, round weights (R, K, d), round intercepts (R, K))`` of one student's chain on ``(X, t)``."""
        own = ("loss", "q", "init") if student == "pll" else ("temperature", "xi", "hard")
        names = ("tol", "rtol", "max_iter", "solver", "fit_intercept", *own)
        opts = {name: getattr(self, name) for name in names}
        fitted = predictor(
            t, lam=self.lam, features=X, model="exact", num_rounds=self.num_rounds, student=student, **opts
        )
        weights = np.asarray(fitted.weights(num_rounds=fitted.num_rounds))
        intercepts = np.asarray(fitted.intercepts(num_rounds=fitted.num_rounds))
        return fitted, weights, intercepts

    @property
    def _round(self) -> int:
        """The round predictions use: ``best_round_`` when a round was selected, else the last."""
        return getattr(self, "best_round_", -1)

    def _features(self, X: Any) -> np.ndarray:
        """``X`` validated against the fit (``NotFittedError`` before ``fit``); every prediction starts here."""
        check_is_fitted(self)
        return validate_data(self, X, dtype=np.float64, reset=False)

    def _logits(self, X: Any) -> np.ndarray:
        """Logits ``(N, K)`` of the prediction round (``select_round``; the last round by default)."""
        return _round_logits(self._features(X), self.round_coefs_[self._round], self.round_intercepts_[self._round])

    def decision_function(self, X: Any) -> np.ndarray:
        """Logits ``(N, K)`` of the prediction round (the last, or ``best_round_`` when ``select_round`` is set,
        as for every prediction method); for two classes the logit difference ``(N,)``."""
        z = self._logits(X)
        return z[:, 1] - z[:, 0] if self.classes_.size == 2 else z

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities ``(N, K)`` of the prediction round (columns in the order of ``classes_``)."""
        return softmax(self._logits(X), axis=1)

    def predict_log_proba(self, X: Any) -> np.ndarray:
        """Log of :meth:`predict_proba` (computed stably)."""
        return log_softmax(self._logits(X), axis=1)

    def predict(self, X: Any) -> np.ndarray:
        """The most probable class of the prediction round (ties to the first class in ``classes_``)."""
        z = self._logits(X)  # checks the fit first
        return self.classes_[np.argmax(z, axis=1)]

    def round_proba(self, X: Any) -> np.ndarray:
        """Probabilities ``(R, N, K)`` of every round (round 0 = plain logistic regression)."""
        X = self._features(X)
        w, b = self.round_coefs_, self.round_intercepts_
        return np.stack([softmax(_round_logits(X, w[r], b[r]), axis=1) for r in range(w.shape[0])])

    def round_score(self, X: Any, y: Any) -> np.ndarray:
        """Accuracy ``(R,)`` of every round's predictions on ``(X, y)`` (round 0 = plain logistic regression).

        Labels of classes not seen in the fit count as errors. With noisy ``y`` this is the agreement
        that ``select_round="holdout"`` maximises; with clean ``y``, every round's clean accuracy.
        """
        X = self._features(X)
        y = np.asarray(y)
        if y.ndim != 1 or y.shape[0] != X.shape[0]:
            raise ValueError(f"y must be a 1-D array of {X.shape[0]} labels (the rows of X), got shape {y.shape}")
        pos = np.searchsorted(self.classes_, y).clip(0, self.classes_.size - 1)
        enc = np.where(self.classes_[pos] == y, pos, -1)  # -1: a class the fit never saw
        return _round_accuracies(X, enc, self.round_coefs_, self.round_intercepts_)


def round_scorer(estimator: SelfDistillationClassifier, X: Any, y: Any) -> dict:
    """A multi-metric scorer for scikit-learn's model selection: ``{"round_r": accuracy of round r}``.

    ``GridSearchCV(SelfDistillationClassifier(num_rounds=R), {"lam": grid}, scoring=round_scorer,
    refit=False)`` fits one chain per candidate ``lam`` and fold and reports ``mean_test_round_r`` in
    ``cv_results_``: fit the ``(lam, r)`` of the highest mean with ``num_rounds=r + 1`` (or
    ``select_round=r``) on all the data. Keep ``num_rounds`` fixed across the candidates (the metric names).
    """
    if not isinstance(estimator, SelfDistillationClassifier):
        raise TypeError(f"round_scorer scores a SelfDistillationClassifier, got {type(estimator).__name__}")
    return {f"round_{r}": float(a) for r, a in enumerate(estimator.round_score(X, y))}


def _round_logits(X: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Logits ``X W_r^T + b_r`` of one round: the exact test logits of :meth:`sdtheory.Predictor.test_outputs`."""
    return X @ w.T + b


def _round_accuracies(X: np.ndarray, enc: np.ndarray, coefs: np.ndarray, intercepts: np.ndarray) -> np.ndarray:
    """Share ``(R,)`` of rows whose round-``r`` argmax equals the class index ``enc`` (``-1``: never)."""
    hits = [np.argmax(_round_logits(X, w, b), axis=1) == enc for w, b in zip(coefs, intercepts, strict=True)]
    return np.mean(hits, axis=1)


def _holdout_split(enc: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(train, validation)`` sorted indices: ``floor(fraction * n_k)`` random instances of class ``k`` held out,
    at least one kept for training; ``ValueError`` naming ``validation_fraction`` when nothing would be held out."""
    rng = np.random.default_rng(seed)
    val = []
    for k in np.unique(enc):
        idx = np.flatnonzero(enc == k)
        m = min(int(np.floor(fraction * idx.size)), idx.size - 1)
        val.append(rng.permutation(idx)[:m])
    held = np.sort(np.concatenate(val))
    if held.size == 0:
        raise ValueError(
            f"validation_fraction={fraction!r} holds out no instance of these {enc.size} labels "
            "(floor(fraction * n_k) per class); raise it or pass select_round=None or a round index"
        )
    train = np.setdiff1d(np.arange(enc.size), held)
    return train, held
