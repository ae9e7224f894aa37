r"""Fit once, evaluate many: the predictor of self-distillation rounds.

:func:`predictor` computes the expensive part of a training set once (its spectrum, or the exact solution
of a chain of rounds); the :class:`Predictor` evaluates training outputs for any rounds, outputs on new
points, predictions, and (exact model) dual coefficients and weights.

* ``model="closed"``: ``P_r = 1/K + S^{r+1} (T - 1/K)``, ``S = G (G + K N lam I)^{-1}``, any round
  (docs/closed_form.md).
* ``model="exact"``: the exact softmax solution of rounds ``0..num_rounds-1`` (docs/exact_solver.md);
  logits ``G(x, train) A_r`` on any point. The instances are padded with zero-weight rows to
  :func:`sdtheory._src.exact.bucket_rows` sizes and the chain to :func:`sdtheory._src.exact.bucket_rounds`
  rounds (the rest skipped): one compiled solver serves every ``N`` and every ``num_rounds`` of a bucket.

Every method validates its input and returns NumPy float64 arrays; a pickled predictor computes the same
numbers in any process. Both models depend on ``G / lam`` only: the training set is stored at unit scale
(``X / root``, ``lam / root^2``, ``root`` a power of two, exact; :mod:`sdtheory.spectral`), so features of
size ``1e160`` or ``1e-160`` give the outputs of features of size 1.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Optional

import jax
from jax.typing import ArrayLike
import jax.numpy as jnp
import numpy as np

from . import _validation as V
from ._x64 import _enable_x64, float64
from ._src.closed import closed_variant_core, sd_outputs_core, sd_test_outputs_core
from ._src.exact import (
    DEFAULT_MAX_ITER,
    DEFAULT_RTOL,
    DEFAULT_SOLVER,
    DEFAULT_TOL,
    ExactResult,
    _pad,
    bucket_rounds,
    bucket_rows,
    check_options,
    exact_phi_core,
    raise_unconverged,
    solver_features,
)
from ._src.rules import TIE_TOL
from ._src.pll import check_init, exact_fit, pll_rounds_core
from ._src.spectral import Spectrum, _scale_down, _unit_lam, _unit_problem
from .variants import check_variant, resolve_lam

__all__ = ["Predictor", "predictor"]

#: The students of the rounds after the teacher: self-distillation on the outputs, or PLL on the top-2 classes.
STUDENTS = ("sd", "pll")

#: A spectrum given with ``features=`` must reproduce their Gram along one random vector ``v``:
#: ``||X X^T v - U diag(s) U^T v|| <= SPECTRUM_MATCH_RTOL max(s) ||v||`` (own spectra: ~1e-10; float32: ~1e-7).
SPECTRUM_MATCH_RTOL = 1e-5


def check_student(student: Any, init: Any, choices: tuple = STUDENTS) -> str:
    """``init`` validated for ``student`` (one of ``choices``): ``student="sd"`` starts from the teacher only."""
    V.check_choice(student, "student", choices)
    init = check_init(init)
    if student == "sd" and init != "teacher":
        raise ValueError(
            f"init={init!r} is the PLL student's starting point (student='pll'); student='sd' rounds start "
            "from the previous round's weights (init='teacher')"
        )
    return init


_KERNELS = "sdtheory.closed_form.sd_outputs_core (model='closed') or sdtheory.exact.exact_outputs_core (model='exact')"


class _HostArray:
    """A device array of a pickled :class:`Predictor`, held as a NumPy array (its dtype kept exactly)."""

    def __init__(self, array: np.ndarray):
        self.array = array


class Predictor:
    """A fitted training set; build it with :func:`predictor`.

    Attributes:
      model: ``"closed"`` or ``"exact"``.
      lam: the L2 weight (a Python float).
      num_instances, num_classes: ``N`` and ``K``.
      num_rounds: exact model: the rounds fitted (``0..num_rounds-1``); ``None`` for the closed form.
      spectrum: the :class:`Spectrum` of the training Gram (closed model, or when one was given), or ``None``.
      variant: the :class:`sdtheory.variants.Variant` of the rounds (default: plain SD).
      lam_schedule: the L2 weight of each round (a tuple) when ``lam`` was given as a schedule, else
        ``None``; ``lam`` is then the teacher's.
      fit_intercept: whether the fit has an unregularised bias.
    """

    def __init__(
        self,
        *,
        model,
        targets,
        lam,
        unit,
        num_rounds,
        result,
        lam_unit,
        variant,
        lam_schedule,
        lams_unit,
        centring,
    ):
        # unit (the training matrix), result and lam_unit are at unit scale (G / root^2, X / root, lam / root^2)
        self.model = model
        self._targets = targets
        self.lam = float(lam)
        self._lam = jnp.asarray(lam_unit, dtype=float)
        self._root = float(unit.root)
        self._spec = spec = unit.spec
        self._features = features = unit.features  # (N, d) device array at unit scale, or None
        self.num_rounds = num_rounds
        self.variant = variant
        self.lam_schedule = None if lam_schedule is None else tuple(float(v) for v in lam_schedule)
        self._lams = lams_unit  # (len(schedule),) at unit scale, or None
        self._result = result  # ExactResult over rounds 0..num_rounds-1 (exact model), unit scale
        self.num_instances, self.num_classes = targets.shape
        self._proj = None  # X^T U (closed model, from features): test cross-Gram in O(N_test d M)
        if model == "closed" and features is not None:
            self._proj = features.T @ spec.eigvecs
        self._weights: Optional[np.ndarray] = None  # the primal weights once asked for (:meth:`_primal`)
        # fit_intercept: ("features", mean) or ("gram", column means, overall mean) in the caller's units
        # (closed model: the training set was centred, and test inputs are centred the same way), or
        # ("exact",) (the exact solver centres internally and returns intercepts); None without intercept
        self._centring = centring
        self.fit_intercept = centring is not None

    def __getstate__(self) -> dict:
        """The state with every device array as a NumPy array (JAX would unpickle float32 without x64)."""
        return jax.tree_util.tree_map(
            lambda a: _HostArray(np.asarray(a)) if isinstance(a, jax.Array) else a, self.__dict__
        )

    def __setstate__(self, state: dict) -> None:
        with _enable_x64(True):  # float64 device arrays, whatever the unpickling process's JAX mode
            state = jax.tree_util.tree_map(
                lambda a: jnp.asarray(a.array) if isinstance(a, _HostArray) else a,
                state,
                is_leaf=lambda a: isinstance(a, _HostArray),
            )
        self.__dict__.update(state)

    @property
    def spectrum(self) -> Optional[Spectrum]:
        """The :class:`Spectrum` of the training Gram in the caller's units (``ValueError`` if it overflows)."""
        if self._spec is None:
            return None
        s = np.asarray(self._to_caller(self._spec.eigvals, 2, "eigenvalues"))
        return Spectrum(s, self._spec.eigvecs)  # type: ignore[arg-type]  # host arrays, as every public Spectrum

    def __repr__(self) -> str:
        rounds = "any round" if self.num_rounds is None else f"rounds 0..{self.num_rounds - 1}"
        return (
            f"Predictor(model={self.model!r}, N={self.num_instances}, K={self.num_classes}, lam={self.lam:g}, {rounds})"
        )

    def _to_caller(self, x, power: float, what: str):
        """``x * root^power`` (exact; on the host, where subnormal results are kept), which must be finite."""
        if self._root == 1.0 or power == 0:
            return x
        out = np.asarray(x)
        with np.errstate(over="ignore", under="ignore"):
            for _ in range(int(abs(power))):
                out = out * self._root if power > 0 else out / self._root
        if not np.all(np.isfinite(out)):
            raise ValueError(
                f"the {what} of this fit overflow float64 in the units of the given features/Gram "
                f"(scale 2^{2 * np.log2(self._root):.0f}); the outputs do not (they depend on G / lam "
                "only): rescale the features/Gram or lam to get them"
            )
        return out

    def _rounds(self, rounds, num_rounds) -> np.ndarray:
        r = V.resolve_rounds(rounds, num_rounds)
        if self.lam_schedule is not None and int(r.max()) >= len(self.lam_schedule):
            raise ValueError(
                f"rounds {r.tolist()} go beyond the lam schedule (one lam for each round "
                f"0..{len(self.lam_schedule) - 1})"
            )
        if self.variant.hard and int(r.max()) >= V.MAX_NUM_ROUNDS:
            raise ValueError(
                f"rounds must be < {V.MAX_NUM_ROUNDS} with hard=True (the rounds are chained one after "
                f"another), got {int(r.max())}"
            )
        if self.num_rounds is not None and int(r.max()) >= self.num_rounds:
            raise ValueError(
                f"rounds {r.tolist()} go beyond the fitted rounds 0..{self.num_rounds - 1}; build the "
                f"exact predictor with num_rounds >= {int(r.max()) + 1}"
            )
        return r

    @float64(kernel=_KERNELS)
    def train_outputs(self, *, rounds: Any = None, num_rounds: Any = None) -> np.ndarray:
        """Outputs ``(R, N, K)`` on the training instances for round indices ``rounds`` (or ``0..num_rounds-1``)."""
        r = self._rounds(rounds, num_rounds)
        if self.model == "closed":
            if self.variant.is_plain and self._lams is None:
                return sd_outputs_core(self._spec, self._targets, self._lam, jnp.asarray(r)) + self._offset()
            return self._closed_variant(r)
        return self._result.outputs[r]

    def _offset(self):
        """Closed model with an intercept: the instance mean of the targets passes through (docs/closed_form.md)."""
        if self._centring is None:
            return 0.0
        return jnp.mean(self._targets, axis=0) - 1.0 / self.num_classes

    def _closed_variant(self, r, cross=None):
        """Closed-form outputs of a variant (:func:`sdtheory.variants.closed_variant_core`)."""
        lams, schedule = (self._lam, False) if self._lams is None else (self._lams, True)
        out = closed_variant_core(
            self._spec, self._targets, lams, jnp.asarray(r), cross=cross, schedule=schedule, **self.variant._asdict()
        )
        if not bool(jnp.all(jnp.isfinite(out))):
            raise ValueError(
                f"the linearised outputs overflow float64 at temperature={self.variant.temperature:g}: the closed form "
                "multiplies the centred outputs of round r by about temperature^-r (docs/variants.md); use fewer "
                "rounds or a larger temperature"
            )
        return out

    def _cross(self, test_features, test_gram):
        """Validated test inputs at the training set's unit scale: ``("features", X_test)`` or ``("gram", G_test)``."""
        if (test_features is None) == (test_gram is None):
            raise ValueError("pass exactly one of test_features= (N_test, d) or test_gram= (N_test, N)")
        if test_features is not None:
            if self._features is None:
                raise ValueError(
                    "test_features= needs a predictor fitted on features=; pass test_gram= (the "
                    "test-train Gram) instead"
                )
            V.check_test_features(test_features, self._features.shape[1])
            if self._centring is not None and self._centring[0] == "features":
                test_features = np.asarray(test_features, dtype=float) - self._centring[1]
            x = _scale_down(test_features, self._root, 1)
            what = "test_features"
        else:
            V.check_test_gram(test_gram, self.num_instances)
            if self._centring is not None and self._centring[0] == "gram":
                g = np.asarray(test_gram, dtype=float)
                test_gram = g - g.mean(axis=1, keepdims=True) - self._centring[1][None, :] + self._centring[2]
            x = _scale_down(test_gram, self._root, 2)
            what = "test_gram"
        if not bool(jnp.all(jnp.isfinite(x))):
            raise ValueError(
                f"{what} is too large for the scale of the training set (it overflows float64 at the "
                f"training set's unit scale 2^{np.log2(self._root):.0f}); rescale both together"
            )
        return ("features" if test_features is not None else "gram"), x

    @float64(kernel=_KERNELS)
    def test_outputs(
        self, *, rounds: Any = None, num_rounds: Any = None, test_features: Any = None, test_gram: Any = None
    ) -> np.ndarray:
        """Outputs ``(R, N_test, K)`` on new points: ``test_features`` ``(N_test, d)`` or ``test_gram`` ``(N_test, N)``.

        Closed model: ``1/K + G_test (T_r - P_r)/(K N lam)`` (the round-``r`` weights); exact: ``softmax(G_test A_r)``.
        """
        r = self._rounds(rounds, num_rounds)
        kind, x = self._cross(test_features, test_gram)
        if self.model == "closed":
            cross = x @ self._proj if kind == "features" else x @ self._spec.eigvecs
            if not (self.variant.is_plain and self._lams is None):
                return self._closed_variant(r, cross)
            return sd_test_outputs_core(self._spec, self._targets, self._lam, jnp.asarray(r), cross) + self._offset()
        if kind == "features":
            logits = jnp.einsum("td,rkd->rtk", x, self._primal()[r])
        else:
            logits = jnp.einsum("tn,rnk->rtk", x, self._result.coef[r])
        return np.asarray(jax.nn.softmax(logits + self._result.intercepts[r][:, None, :], axis=-1))

    @float64(kernel=_KERNELS)
    def predictions(
        self, *, rounds: Any = None, num_rounds: Any = None, test_features: Any = None, test_gram: Any = None
    ) -> np.ndarray:
        """Argmax classes ``(R, N)`` on the training set, or ``(R, N_test)`` when test points are given; a
        prediction, not a score: :func:`sdtheory.correct` (ties are failures) decides correctness."""
        if test_features is None and test_gram is None:
            out = self.train_outputs(rounds=rounds, num_rounds=num_rounds)
        else:
            out = self.test_outputs(
                rounds=rounds, num_rounds=num_rounds, test_features=test_features, test_gram=test_gram
            )
        return np.argmax(out, axis=-1)

    def _primal(self) -> np.ndarray:
        """``W_r = A_r^T X`` ``(R, K, d)`` at unit scale, formed on first use on the host (no compile per ``N``)."""
        if self._weights is None:
            self._weights = np.asarray(self._result.coef).transpose(0, 2, 1) @ np.asarray(self._features)
        return self._weights

    def _need_exact(self, what):
        if self.model != "exact":
            raise ValueError(f"{what} is defined for the exact model; build the predictor with model='exact'")

    @float64(kernel="sdtheory.exact.exact_outputs_core")
    def exact_result(self, *, rounds: Any = None, num_rounds: Any = None) -> ExactResult:
        """The :class:`ExactResult` (outputs, residuals, iterations, ...) of the requested rounds."""
        self._need_exact("exact_result")
        r = self._rounds(rounds, num_rounds)
        # index on the host: the leaves are small, and one device gather per leaf cost ~8 ms a call
        res = jax.tree_util.tree_map(lambda a: np.asarray(a)[r], self._result)
        # dual coefficients scale as 1/root^2, the gradient in the weights as root (module docstring)
        return res._replace(
            grad_norms=self._to_caller(res.grad_norms, 1, "gradient norms"),
            coef=self._to_caller(res.coef, -2, "dual coefficients"),
        )

    @float64(kernel="sdtheory.exact.exact_outputs_core")
    def coef(self, *, rounds: Any = None, num_rounds: Any = None) -> np.ndarray:
        """Dual coefficients ``A_r`` ``(R, N, K)``: logits on a point ``x`` are ``G(x, train) @ A_r``."""
        self._need_exact("coef")
        return self._to_caller(self._result.coef[self._rounds(rounds, num_rounds)], -2, "dual coefficients")

    @float64(kernel="sdtheory.exact.exact_outputs_core")
    def weights(self, *, rounds: Any = None, num_rounds: Any = None) -> np.ndarray:
        """Primal weights ``W_r = A_r^T X`` ``(R, K, d)`` (logits ``W_r x``); needs ``features=``."""
        self._need_exact("weights")
        if self._features is None:
            raise ValueError("weights need the training features: build the predictor with features=")
        return self._to_caller(self._primal()[self._rounds(rounds, num_rounds)], -1, "primal weights")

    @float64(kernel="sdtheory.exact.exact_outputs_core")
    def intercepts(self, *, rounds: Any = None, num_rounds: Any = None) -> np.ndarray:
        """Unregularised biases ``b_r`` ``(R, K)`` of the logits ``W_r x + b_r`` (zeros without ``fit_intercept``)."""
        self._need_exact("intercepts")
        return self._result.intercepts[self._rounds(rounds, num_rounds)]


@float64(kernel=_KERNELS)
def predictor(
    targets: ArrayLike,
    *,
    lam: Any = None,
    features: ArrayLike | None = None,
    gram: ArrayLike | None = None,
    spectrum: Optional[Spectrum] = None,
    model: str = "closed",
    num_rounds: Optional[int] = None,
    loss: str = "ce",
    q: float = 0.7,
    tol: float = DEFAULT_TOL,
    max_iter: int = DEFAULT_MAX_ITER,
    on_failure: str = "raise",
    solver: str = DEFAULT_SOLVER,
    rtol: float = DEFAULT_RTOL,
    fit_intercept: bool = False,
    temperature: Any = 1.0,
    xi: Any = 1.0,
    hard: Any = False,
    lam_schedule: Any = None,
    student: str = "sd",
    init: str = "teacher",
) -> Predictor:
    """Fit a training set once; evaluate rounds, test sets and predictions many times.

    Args:
      targets: ``(N, K)`` probability rows (the teacher's targets).
      lam: L2 weight, one real number ``> 0`` (traced values are refused: vmap the ``*_core`` kernels).
      features / gram / spectrum: exactly one of ``(N, d)`` features, an ``(N, N)`` Gram, or a
        :class:`Spectrum` of the Gram, optionally with the ``features`` it was computed from (checked along
        one random probe, relative tolerance :data:`SPECTRUM_MATCH_RTOL`; then test features and weights
        work and nothing is factorised again).
      model: ``"closed"`` (linearised closed form, any round) or ``"exact"`` (exact softmax solution of
        rounds ``0..num_rounds-1``).
      num_rounds: exact model: chained rounds to solve (default 1, at most ``10^5``).
      loss, q, tol, max_iter, on_failure, solver, rtol: exact model options (:func:`sdtheory.exact_outputs`).
      fit_intercept: an unregularised bias (exact: solved with the weights; closed, from ``features=`` or
        ``gram=`` and plain SD: the mean of the targets passes through, the rest is filtered by the centred
        Gram, docs/closed_form.md).
      temperature, xi, hard: distillation variants (:mod:`sdtheory.variants`).
      lam_schedule: in place of ``lam``, one L2 weight per round (exact: it sets the default
        ``num_rounds``; closed: rounds ``0..len - 1``).
      student: ``"sd"`` (each round fits the previous round's outputs) or ``"pll"`` (exact model: each round
        after the CE teacher fits ``1/2`` on the previous round's top-2 classes with ``loss``;
        :func:`sdtheory.refine.pll_rounds_core`).
      init: ``student="pll"``: each student starts from the weights of the round whose top 2 it fits
        (``"teacher"``) or from zero (``"zero"``). ``student="sd"``: ``"teacher"`` only.

    Returns:
      :class:`Predictor`, reused by every call.
    """
    model = V.check_model(model)
    init = check_student(student, init)
    V.check_bool(fit_intercept, "fit_intercept")
    variant = check_variant(temperature, xi, hard)
    lam, schedule = resolve_lam(lam, lam_schedule)
    plain = variant.is_plain and schedule is None
    if student == "pll" and (model != "exact" or not plain):
        raise ValueError(
            "student='pll' is built for model='exact' with plain rounds: no temperature, xi, hard or "
            "lam_schedule (for the closed-form PLL student use sdtheory.pll_student)"
        )
    if fit_intercept and model == "closed" and (spectrum is not None or not plain):
        raise ValueError(
            "fit_intercept=True with the closed form is derived for plain SD from features= or gram= (the spectrum "
            "of the centred Gram); use model='exact' for spectrum=, temperature, xi, hard or lam_schedule"
        )
    if (gram is not None) + (spectrum is not None) + (features is not None and spectrum is None) != 1:
        raise ValueError(
            "pass exactly one of features= (N, d), gram= (N, N) or spectrum= (a Spectrum, optionally "
            "with the features= it was computed from)"
        )
    if spectrum is not None:
        n, _ = V.check_targets(targets)
        V.check_lam(lam)
        m = _check_spectrum(spectrum)
        V.check_same_n(m, n, "targets", "spectrum")
        if features is not None:
            V.check_same_n(m, V.check_features(features)[0], "features", "spectrum")
    else:
        V.check_problem(targets, lam, gram, features)
    if student == "pll":
        V.check_pll_classes(V.shape_of(targets, "targets")[1], "the columns of targets")
    V.check_closed_ce(model, loss, {})
    if model == "closed" and num_rounds is not None:
        raise ValueError("num_rounds is for model='exact'; the closed form evaluates any round")
    if model == "exact":
        if num_rounds is None:
            num_rounds = 1 if schedule is None else len(schedule)
        num_rounds = V.check_num_rounds(num_rounds)
        if schedule is not None:
            resolve_lam(None, schedule, num_rounds)
        check_options(loss, q, tol, max_iter, on_failure, solver, rtol)
    centring: Optional[tuple] = None
    if fit_intercept and model == "exact":
        centring = ("exact",)
    elif fit_intercept:
        if features is not None:
            mean = np.asarray(features, dtype=float).mean(axis=0)
            features = np.asarray(features, dtype=float) - mean
            centring = ("features", mean)
        else:
            g = np.asarray(gram, dtype=float)
            cols, total = g.mean(axis=0), g.mean()
            gram = g - g.mean(axis=1, keepdims=True) - cols[None, :] + total
            centring = ("gram", cols, total)
    # unit scale: G / root^2 and lam / root^2 (root a power of two; the outputs depend on G / lam only)
    unit = _unit_problem(
        gram=gram, features=features, spectrum=spectrum, need_spectrum=model == "closed" or spectrum is not None
    )
    if spectrum is not None and features is not None:
        assert unit.spec is not None and unit.features is not None  # both given
        _check_spectrum_features(unit.spec, unit.features)
    what = "spectrum" if spectrum is not None else ("gram" if gram is not None else "features")
    lam_u = _unit_lam(lam, unit.root, what)
    lams_u = None if schedule is None else jnp.stack([_unit_lam(v, unit.root, what) for v in schedule])
    t = jax.device_put(np.asarray(targets, dtype=float))
    common = dict(
        targets=t,
        lam=float(lam),
        unit=unit,
        lam_unit=lam_u,
        centring=centring,
        variant=variant,
        lam_schedule=schedule,
        lams_unit=lams_u,
    )
    if model == "closed":
        return Predictor(model="closed", num_rounds=None, result=None, **common)
    # zero rows pad N to a bucket (module docstring); from a given spectrum the coordinates are U diag(sqrt s)
    n = t.shape[0]
    rows = bucket_rows(n)
    phi = solver_features(gram=unit.gram, features=unit.features, spec=unit.spec, rows=rows)
    assert num_rounds is not None  # checked above for the exact model
    solve: dict[str, Any] = dict(
        q=float(q),
        tol=float(tol),
        max_iter=int(max_iter),
        solver=solver,
        rtol=float(rtol),
        fit_intercept=bool(fit_intercept),
        num_valid=n,
    )
    t_pad = _pad(t, rows)
    if student == "pll":
        fit = partial(exact_fit, phi, lam_u, **solve)
        res = pll_rounds_core(fit(loss=loss), fit(loss="ce")(t_pad), num_rounds - 1, TIE_TOL, init).fits
    else:
        # the chain compiled at a bucketed length, the rounds past num_rounds skipped (one program for 1-4 rounds)
        length = bucket_rounds(num_rounds)
        lams_b = None if schedule is None else np.asarray(lams_u)[np.minimum(np.arange(length), num_rounds - 1)]
        res = exact_phi_core(
            phi, t_pad, lam_u, length, loss=loss, lams=lams_b, num_active=num_rounds, **variant._asdict(), **solve
        )
    # on the host, without the skipped rounds and the padding rows
    res = jax.tree_util.tree_map(lambda a: np.asarray(a)[:num_rounds], res)
    res = res._replace(outputs=res.outputs[:, :n], coef=res.coef[:, :n])
    if on_failure == "raise":
        raise_unconverged(res, tol, max_iter, rtol=rtol, solver=solver)
    return Predictor(model="exact", num_rounds=num_rounds, result=res, **common)


def _check_spectrum(spec: Any) -> int:
    """A given :class:`Spectrum`: ``(M,)`` finite eigenvalues ``>= 0`` (up to roundoff), ``(N, M)`` eigenvectors;
    returns ``N``."""
    if not isinstance(spec, Spectrum):
        raise TypeError(f"spectrum must be a sdtheory.Spectrum, got {type(spec).__name__}")
    s = V.check_real_array(spec.eigvals, "spectrum.eigvals")
    u = V.check_real_array(spec.eigvecs, "spectrum.eigvecs")
    if s.ndim != 1 or u.ndim != 2 or u.shape[1] != s.shape[0] or u.shape[0] < 1:
        raise ValueError(f"spectrum must hold eigvals (M,) and eigvecs (N, M), got shapes {s.shape} and {u.shape}")
    V.check_finite(s, "spectrum.eigvals")
    V.check_finite(u, "spectrum.eigvecs")
    V.check_psd_eigenvalues(s, "spectrum")
    return u.shape[0]


def _check_spectrum_features(spec: Spectrum, x: jax.Array) -> None:
    """``ValueError`` unless ``X (X^T v)`` matches ``U diag(s) (U^T v)`` for one fixed random ``v`` (unit scale)."""
    v = jnp.asarray(np.random.default_rng(0).standard_normal(x.shape[0]))
    direct = x @ (x.T @ v)
    via_spec = spec.eigvecs @ (spec.eigvals * (spec.eigvecs.T @ v))
    norm_v = float(jnp.linalg.norm(v))
    err = float(jnp.linalg.norm(direct - via_spec)) / norm_v
    scale = max(float(jnp.max(jnp.abs(spec.eigvals), initial=0.0)), float(jnp.linalg.norm(direct)) / norm_v)
    if err > SPECTRUM_MATCH_RTOL * scale:
        raise ValueError(
            "features do not belong to spectrum: the spectrum's Gram U diag(s) U^T differs from X X^T of the "
            f"features by {err / scale:.3g} max(s) along a random direction (tolerance {SPECTRUM_MATCH_RTOL:g}); "
            "pass the features the spectrum was computed from, or features= alone"
        )
