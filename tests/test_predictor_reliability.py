"""Reliability of the predictor and the metrics: what a user can get wrong, refused or kept exact.

* a pickled :class:`sdtheory.Predictor` (and a fitted estimator's ``predictor_``)
  unpickled in a fresh process with JAX's default 32-bit mode still computes
  in float64 and reproduces the original outputs;
* ``predictor(spectrum=..., features=...)`` refuses features whose Gram is not
  the spectrum's (references: NumPy's ``X X^T`` and its eigendecomposition);
* integer predictions are class indices: a negative one (or one ``>= K``
  where ``K`` is known) is refused, never scored as a wrong answer.
"""

import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import sdtheory as sd

ROOT = Path(__file__).resolve().parents[1]


def _problem(seed=0, n=30, d=5, k=3, n_test=7):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    xt = rng.normal(size=(n_test, d))
    labels = rng.integers(0, k, n)
    return x, xt, labels


# --------------------------------------------------------------------------
# Pickling keeps float64
# --------------------------------------------------------------------------

_UNPICKLE_SCRIPT = textwrap.dedent(
    """
    import pickle, sys
    import jax
    import numpy as np
    assert not jax.config.jax_enable_x64, "the fresh process must run in JAX's default 32-bit mode"
    with open(sys.argv[1], "rb") as fh:
        objects, refs, calls = pickle.load(fh)
    for name, obj, method, kwargs in calls:
        got = getattr(obj, method)(**kwargs)
        ref = refs[name]
        for g, r in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(ref)):
            g = np.asarray(g)
            assert g.dtype == np.asarray(r).dtype, (name, g.dtype, np.asarray(r).dtype)
            if np.issubdtype(g.dtype, np.floating):
                assert g.dtype == np.float64, (name, g.dtype)
                np.testing.assert_allclose(g, r, rtol=0, atol=1e-12, err_msg=name)  # NaN == NaN here
            else:
                assert np.array_equal(g, r), name
    print("ok", len(calls))
    """
)


def test_pickled_predictor_and_estimator_keep_float64_in_a_fresh_process(tmp_path):
    x, xt, labels = _problem(0)
    t = np.eye(3)[labels]
    closed = sd.predictor(t, lam=0.05, features=x, fit_intercept=True)
    # the estimator's own options (fit_intercept, default tolerances): one exact solver to compile, not two
    exact = sd.predictor(t, lam=0.05, features=x, model="exact", num_rounds=2, fit_intercept=True)
    gram_fit = sd.predictor(t, lam=0.05, gram=x @ x.T)
    rounds = dict(rounds=[0, 3])
    calls = [
        ("closed.train", "closed", "train_outputs", rounds),
        ("closed.test", "closed", "test_outputs", dict(test_features=xt, **rounds)),
        ("closed.pred", "closed", "predictions", dict(test_features=xt, **rounds)),
        ("gram.test", "gram_fit", "test_outputs", dict(test_gram=xt @ x.T, **rounds)),
        ("exact.train", "exact", "train_outputs", dict(num_rounds=2)),
        ("exact.test", "exact", "test_outputs", dict(num_rounds=2, test_features=xt)),
        ("exact.coef", "exact", "coef", dict(num_rounds=2)),
        ("exact.weights", "exact", "weights", dict(num_rounds=2)),
        ("exact.intercepts", "exact", "intercepts", dict(num_rounds=2)),
        ("exact.result", "exact", "exact_result", dict(num_rounds=2)),
    ]
    objects = {"closed": closed, "exact": exact, "gram_fit": gram_fit}
    try:
        import sklearn  # noqa: F401
    except ImportError:  # pragma: no cover - scikit-learn is optional
        pass
    else:
        est = sd.SelfDistillationClassifier(lam=0.05, num_rounds=2).fit(x, labels)
        objects["est_predictor"] = est.predictor_
        objects["est"] = est
        calls += [
            ("est.predictor_", "est_predictor", "train_outputs", dict(num_rounds=2)),
            ("est.round_proba", "est", "round_proba", dict(X=xt)),
        ]
    refs = {name: getattr(objects[obj], method)(**kwargs) for name, obj, method, kwargs in calls}
    # the unpickled objects are called; the estimator's predictor_ is the one inside the pickled estimator
    blob = [(name, objects[obj], method, kwargs) for name, obj, method, kwargs in calls]
    path = tmp_path / "fits.pkl"
    with open(path, "wb") as fh:
        pickle.dump((objects, refs, blob), fh)
    proc = subprocess.run(
        [sys.executable, "-c", _UNPICKLE_SCRIPT, str(path)],
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": "/usr/bin:/bin", "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == f"ok {len(calls)}"


def test_predictor_round_trips_through_pickle_in_process():
    x, xt, labels = _problem(1)
    t = np.eye(3)[labels]
    p = sd.predictor(t, lam=0.05, features=x, model="exact", num_rounds=2, fit_intercept=True)
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        q = pickle.loads(pickle.dumps(p, protocol=protocol))
        np.testing.assert_array_equal(q.train_outputs(num_rounds=2), p.train_outputs(num_rounds=2))
        np.testing.assert_array_equal(
            q.test_outputs(rounds=[1], test_features=xt), p.test_outputs(rounds=[1], test_features=xt)
        )
        assert repr(q) == repr(p)


# --------------------------------------------------------------------------
# A spectrum with features that are not its own
# --------------------------------------------------------------------------


def test_predictor_refuses_features_that_do_not_belong_to_the_spectrum():
    x, xt, labels = _problem(2, n=24, d=6)
    t = np.eye(3)[labels]
    lam = 0.05
    other = np.random.default_rng(9).normal(size=x.shape)
    spec = sd.feature_spectrum(x)
    for bad in (other, 2.0 * x, x[::-1]):
        with pytest.raises(ValueError, match="features do not belong to spectrum"):
            sd.predictor(t, lam=lam, spectrum=spec, features=bad)
        with pytest.raises(ValueError, match="features do not belong to spectrum"):
            sd.predictor(t, lam=lam, spectrum=spec, features=bad, model="exact")
    # a wrong number of instances is refused by shape, before any product
    with pytest.raises(ValueError, match="features has 23 instances but spectrum has 24"):
        sd.predictor(t, lam=lam, spectrum=spec, features=x[:-1])
    # spectra that do belong to x are accepted: every route of the package, NumPy's own
    # eigendecomposition of X X^T, and a spectrum with its features at scale 2^300 (the check runs at unit scale)
    g = x @ x.T
    s_np, u_np = np.linalg.eigh(g)
    big = np.ldexp(x, 300)
    for s_, f_ in (
        (spec, x),
        (sd.gram_spectrum(g), x),
        (sd.feature_spectrum(x, method="svd"), x),
        (sd.Spectrum(np.clip(s_np, 0, None), u_np), x),
        (sd.predictor(t, lam=np.ldexp(lam, 600), features=big).spectrum, big),
    ):
        scale = float(np.max(np.abs(f_))) / float(np.max(np.abs(x)))
        p = sd.predictor(t, lam=lam * scale**2, spectrum=s_, features=f_)
        # against the closed form solved directly with NumPy (round 1): S = G (G + K N lam)^-1
        s_mat = g @ np.linalg.inv(g + 3 * len(x) * lam * np.eye(len(x)))
        direct = 1 / 3 + s_mat @ s_mat @ (t - 1 / 3)
        np.testing.assert_allclose(p.train_outputs(rounds=[1])[0], direct, atol=1e-10)
    # features of rank below d (a repeated column): the spectrum has zero eigenvalues, still accepted
    low = np.hstack([x, x[:, :1]])
    sd.predictor(t, lam=lam, spectrum=sd.feature_spectrum(low), features=low)


# --------------------------------------------------------------------------
# Integer predictions are class indices
# --------------------------------------------------------------------------


def test_accuracy_refuses_integer_predictions_that_are_not_class_indices():
    y = np.array([0, 1, 1, 2])
    with pytest.raises(ValueError, match=r"outputs_or_predictions .*must be class indices >= 0"):
        sd.accuracy(np.array([0, 1, -1, 1]), y)
    with pytest.raises(ValueError, match=r"outputs_or_predictions .*must be class indices >= 0"):
        sd.accuracy(np.array([[0, 1, 1, 2], [0, -3, 1, 2]]), y)
    with pytest.raises(ValueError, match=r"outputs_or_predictions .*must be class indices >= 0"):
        sd.split_accuracy(np.array([0, 1, -1, 1]), y, y)
    # K known (num_classes): predictions and labels >= K are refused too
    with pytest.raises(ValueError, match=r"outputs_or_predictions .*must lie in \[0, 2\].*num_classes = 3"):
        sd.accuracy(np.array([0, 1, 3, 1]), y, num_classes=3)
    with pytest.raises(ValueError, match=r"true_labels must lie in \[0, 2\].*num_classes = 3"):
        sd.accuracy(np.array([0, 1, 2, 1]), np.array([0, 1, 3, 1]), num_classes=3)
    with pytest.raises(ValueError, match=r"outputs_or_predictions .*must lie in \[0, 2\]"):
        sd.split_accuracy(np.array([0, 1, 3, 1]), y, y, num_classes=3)
    with pytest.raises(ValueError, match=r"given_labels must lie in \[0, 2\]"):
        sd.split_accuracy(np.array([0, 1, 2, 1]), y, np.array([0, 1, 5, 1]), num_classes=3)
    # num_classes must agree with the class axis of float outputs
    with pytest.raises(ValueError, match="num_classes"):
        sd.accuracy(np.eye(3)[y], y, num_classes=4)
    with pytest.raises(TypeError, match="num_classes"):
        sd.accuracy(np.array([0, 1, 2, 1]), y, num_classes=2.5)
    # float values of shape (N,) are not predictions: refused, with the cast suggested
    with pytest.raises(ValueError, match=r"outputs_or_predictions.*integer dtype"):
        sd.accuracy(np.array([0.0, 1.0, 1.0, 2.0]), y)
    # valid input is still scored, against the plain count
    pred = np.array([[0, 1, 2, 2], [1, 1, 1, 2]])
    np.testing.assert_allclose(sd.accuracy(pred, y), np.mean(pred == y, axis=-1))
    np.testing.assert_allclose(sd.accuracy(pred, y, num_classes=3), np.mean(pred == y, axis=-1))
    np.testing.assert_allclose(sd.accuracy(np.eye(3)[pred[0]], y, num_classes=3), np.mean(pred[0] == y))
    given = np.array([0, 1, 0, 2])
    split = sd.split_accuracy(pred[0], y, given, num_classes=3)
    ok, clean = pred[0] == y, given == y
    assert (int(split.clean_correct), int(split.corrupted_correct)) == (np.sum(ok & clean), np.sum(ok & ~clean))
