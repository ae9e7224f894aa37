"""The one engine: sweeps, the predictor, the one tie rule, and no import-time side effects.

* a sweep over lam / c / d equals separate runs with each value, bit for bit;
* a predictor reused for many rounds and test sets equals fresh calls, and
  its exact model equals an independent fixed-point check;
* one tie rule: ``(0.5, 0.5, 0)`` with true class 0 is a failure for the
  metrics, the Monte Carlo engine's counts, the theorems' type-level scoring
  and the PLL top-2 rule;
* importing the package leaves JAX's x64 flag and matplotlib's backend alone.
"""

import subprocess
import sys
import textwrap

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sdtheory as sd
from sdtheory import montecarlo as mc


# --------------------------------------------------------------------------
# Sweeps
# --------------------------------------------------------------------------


def _assert_same(a, b):
    """Bit for bit, and the same tree (methods, theory and gap fields, None where absent)."""
    chex.assert_trees_all_equal((a.num_noisy, a.methods, a.theory, a.gap), (b.num_noisy, b.methods, b.theory, b.gap))


def test_lam_sweep_equals_separate_runs_bit_for_bit():
    cfg = mc.make_config(
        num_classes=3, per_class=6, c=0.45, d=0.1, lam=1e-3, num_rounds=4, methods=("sd_closed", "pll_closed")
    )
    etas = np.array([0.0, 0.3, 0.55])
    lams = [3e-4, 1e-3, 2e-2]
    swept = mc.run_grid(cfg, etas, lams=lams, num_seeds=3, seed=5)
    assert swept.sweep == {"lam": lams}
    assert swept.methods["sd_closed"].num_correct.shape == (3, 3, 3, 4)
    for lam in lams:
        alone = mc.run_grid(cfg._replace(lam=lam), etas, num_seeds=3, seed=5)
        _assert_same(swept.select(lam=lam), alone)
    # the lam axis matters: different lam, different outcomes somewhere
    acc = swept.accuracy("sd_closed")
    assert not np.array_equal(acc[0], acc[-1])


@pytest.mark.slow
def test_lam_c_d_sweep_with_exact_methods_equals_separate_runs():
    cfg = mc.make_config(
        num_classes=3, per_class=5, c=0.45, d=0.1, lam=2e-3, num_rounds=3, methods=mc.METHODS, exact_tol=1e-10
    )
    etas = np.array([0.1, 0.4])
    lams, cs, ds = [2e-3, 1e-2], [0.4, 0.6], [0.0, 0.1]
    swept = mc.run_grid(cfg, etas, lams=lams, cs=cs, ds=ds, num_seeds=2, seed=2)
    assert list(swept.sweep) == ["lam", "c", "d"]
    assert swept.gap.max_abs_diff.shape == (2, 2, 2, 2, 2, 3)
    for lam in lams:
        for c in cs:
            for d in ds:
                alone = mc.run_grid(cfg._replace(lam=lam, c=c, d=d), etas, num_seeds=2, seed=2)
                _assert_same(swept.select(lam=lam, c=c, d=d), alone)


def test_sweep_validation_and_select_errors():
    cfg = mc.make_config(num_classes=2, per_class=3, num_rounds=2, methods=("sd_closed",))
    with pytest.raises(ValueError, match="lams"):
        mc.run_grid(cfg, [0.1], lams=[1e-3, -1.0], num_seeds=1)
    with pytest.raises(ValueError, match="0 <= d < c < 1"):
        mc.run_grid(cfg, [0.1], cs=[0.3], ds=[0.1, 0.3], num_seeds=1)
    res = mc.run_grid(cfg, [0.1], lams=[1e-3, 1e-2], num_seeds=1)
    with pytest.raises(ValueError, match="swept axes"):
        res.select()
    with pytest.raises(ValueError, match="not one of the swept values"):
        res.select(lam=5e-3)
    with pytest.raises(ValueError, match="select"):
        mc.phase_table(res)


def test_gap_stats_equal_direct_computation():
    """The engine's linearisation gap equals |exact_outputs - sd_outputs| computed by the public API."""
    k, n, c, d, lam, r = 3, 5, 0.45, 0.1, 5e-3, 3
    cfg = mc.make_config(
        num_classes=k, per_class=n, c=c, d=d, lam=lam, num_rounds=r, methods=("sd_closed", "sd_exact"), exact_tol=1e-11
    )
    res = mc.run_grid(cfg, [0.3], num_seeds=2, seed=4)
    classes = sd.block_classes([n] * k)
    gram = sd.block_gram(classes, c=c, d=d)
    keys = jax.random.split(jax.random.PRNGKey(4), 2)
    for s in range(2):
        label_key, _ = jax.random.split(keys[s])
        y = np.eye(k)[np.asarray(sd.sample_labels(label_key, classes, sd.corruption_matrix("symmetric", k, 0.3)))]
        ex = sd.exact_outputs(y, lam=lam, num_rounds=r, gram=gram, tol=1e-11).outputs
        cf = sd.sd_outputs(y, lam=lam, num_rounds=r, gram=gram)
        np.testing.assert_allclose(res.gap.max_abs_diff[0, s], np.abs(ex - cf).max(axis=(1, 2)), atol=1e-9)
        np.testing.assert_array_equal(res.gap.argmax_agreement[0, s], (ex.argmax(-1) == cf.argmax(-1)).mean(-1))


# --------------------------------------------------------------------------
# The predictor: fit once, evaluate many
# --------------------------------------------------------------------------


def _problem(seed=0, n=40, d=7, k=3, n_test=9):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)) / np.sqrt(d)
    xt = rng.normal(size=(n_test, d)) / np.sqrt(d)
    y = np.eye(k)[rng.integers(0, k, n)]
    return x, xt, y


def test_closed_predictor_reused_equals_fresh_calls():
    x, xt, y = _problem(1)
    lam = 0.02
    p = sd.predictor(y, lam=lam, features=x)
    for rounds in ([0], [3, 1], np.arange(6)):
        np.testing.assert_array_equal(
            p.train_outputs(rounds=rounds), sd.sd_outputs(y, lam=lam, rounds=rounds, features=x)
        )
        for test in (xt, xt[:3], x):
            np.testing.assert_array_equal(
                p.test_outputs(rounds=rounds, test_features=test),
                sd.closed_form.sd_test_outputs(y, lam=lam, rounds=rounds, features=x, test_features=test),
            )
    # the same spectrum through gram= and spectrum= gives the same numbers (roundoff)
    spec = sd.spectral.spectrum(features=x)
    q = sd.predictor(y, lam=lam, spectrum=spec)
    np.testing.assert_allclose(q.train_outputs(num_rounds=4), p.train_outputs(num_rounds=4), atol=1e-13)
    np.testing.assert_allclose(
        q.test_outputs(rounds=[2], test_gram=xt @ x.T), p.test_outputs(rounds=[2], test_features=xt), atol=1e-12
    )
    # and against an independent direct solve of the linearised fixed point, round 2
    g = x @ x.T
    s = g @ np.linalg.inv(g + 3 * x.shape[0] * lam * np.eye(x.shape[0]))
    direct = 1 / 3 + np.linalg.matrix_power(s, 3) @ (y - 1 / 3)
    np.testing.assert_allclose(p.train_outputs(rounds=2)[0], direct, atol=1e-10)


def test_exact_predictor_reused_equals_fresh_calls_and_weights_are_primal():
    x, xt, y = _problem(2)
    lam = 0.05
    p = sd.predictor(y, lam=lam, features=x, model="exact", num_rounds=4, tol=1e-11)
    fresh = sd.exact_outputs(y, lam=lam, rounds=[1, 3], features=x, tol=1e-11)
    np.testing.assert_array_equal(p.train_outputs(rounds=[1, 3]), fresh.outputs)
    np.testing.assert_array_equal(p.coef(rounds=[1, 3]), fresh.coef)
    chex.assert_trees_all_equal(p.exact_result(rounds=[1, 3]), fresh)  # every field of the ExactResult
    for test in (xt, x[:5]):
        via_pred = p.test_outputs(rounds=[1, 3], test_features=test)
        np.testing.assert_allclose(via_pred, sd.exact_predict(fresh, test_features=test, features=x), atol=1e-13)
    # primal weights: softmax(W_r x) on the training set reproduces the outputs, and W_r = A_r^T X
    w = p.weights(rounds=[3])[0]  # (K, d)
    logits = x @ w.T
    probs = np.exp(logits - logits.max(1, keepdims=True))
    np.testing.assert_allclose(probs / probs.sum(1, keepdims=True), p.train_outputs(rounds=3)[0], atol=1e-8)
    # stationarity of round 3 (target = round-2 outputs): W = (T - P)^T X / (N lam)
    t3, p3 = p.train_outputs(rounds=[2, 3])
    np.testing.assert_allclose(w, (t3 - p3).T @ x / (x.shape[0] * lam), atol=1e-8)
    assert p.predictions(rounds=[0]).shape == (1, x.shape[0])
    assert p.predictions(rounds=[0], test_features=xt).shape == (1, xt.shape[0])


def test_predictor_bad_input():
    x, xt, y = _problem(3)
    with pytest.raises(ValueError, match="exactly one of features"):
        sd.predictor(y, lam=0.1)
    with pytest.raises(ValueError, match="model"):
        sd.predictor(y, lam=0.1, features=x, model="linear")
    with pytest.raises(ValueError, match="lam"):
        sd.predictor(y, lam=-1.0, features=x)
    p = sd.predictor(y, lam=0.1, features=x, model="exact", num_rounds=2)
    with pytest.raises(ValueError, match="num_rounds >= 4"):
        p.train_outputs(rounds=[3])
    with pytest.raises(ValueError, match="dimension"):
        p.test_outputs(rounds=[0], test_features=xt[:, :3])
    with pytest.raises(ValueError, match="exactly one of rounds"):
        p.train_outputs()
    closed = sd.predictor(y, lam=0.1, gram=x @ x.T)
    with pytest.raises(ValueError, match="test_gram"):
        closed.test_outputs(rounds=[0], test_features=xt)
    with pytest.raises(ValueError, match="exact model"):
        closed.coef(rounds=[0])


def test_predictor_refuses_traced_values_and_bad_numbers():
    x, xt, y = _problem(4, n=12)
    with pytest.raises(TypeError, match="lam is a traced value.*sd_outputs_core"):
        jax.vmap(lambda lam: sd.predictor(y, lam=lam, features=x).train_outputs(rounds=0))(jnp.array([-1.0, 0.1]))
    p = sd.predictor(y, lam=0.1, features=x)
    with pytest.raises(TypeError, match=r"rounds is a traced value .*sdtheory.Predictor.train_outputs"):
        jax.vmap(lambda r: p.train_outputs(rounds=r))(jnp.arange(3))
    with pytest.raises(TypeError, match="test_features is a traced value"):
        jax.jit(lambda xx: p.test_outputs(rounds=[0], test_features=xx))(xt)
    with pytest.raises(TypeError, match="sdtheory.Predictor.predictions was called inside jax.jit"):
        jax.jit(lambda a: p.predictions(rounds=[0]) * a)(1)
    with pytest.raises(ValueError, match="lam must be a scalar"):
        sd.predictor(y, lam=[0.1] * 12, features=x)
    with pytest.raises(TypeError, match="lam"):
        sd.predictor(y, lam=True, features=x)
    with pytest.raises(ValueError, match="rounds must be <= 2147483647"):
        p.train_outputs(rounds=[2**63])
    with pytest.raises(TypeError, match="rounds must be integers"):
        p.test_outputs(rounds=[0, True], test_features=xt)
    with pytest.raises(ValueError, match="test_features must be a 2-D"):
        p.test_outputs(rounds=[0], test_features=xt[0])
    with pytest.raises(TypeError, match="test_gram must be real numbers, got a bool"):
        sd.predictor(y, lam=0.1, gram=x @ x.T).test_outputs(rounds=[0], test_gram=np.ones((2, 12), dtype=bool))
    bad = sd.Spectrum(np.full(7, np.nan), np.zeros((12, 7)))
    with pytest.raises(ValueError, match="spectrum.eigvals contains"):
        sd.predictor(y, lam=0.1, spectrum=bad)
    with pytest.raises(ValueError, match="spectrum must hold eigvals"):
        sd.predictor(y, lam=0.1, spectrum=sd.Spectrum(np.ones(3), np.zeros((12, 7))))


def test_predictor_methods_return_numpy_and_scale_free_results():
    x, xt, y = _problem(5, n=20)
    lam0, e = 2.0**-6, 300
    p = sd.predictor(y, lam=lam0, features=x)
    big = sd.predictor(y, lam=np.ldexp(lam0, 2 * e), features=np.ldexp(x, e))
    for out in (
        big.train_outputs(rounds=[0, 2]),
        big.test_outputs(rounds=[1], test_features=np.ldexp(xt, e)),
        big.predictions(num_rounds=2),
    ):
        assert isinstance(out, np.ndarray)
    np.testing.assert_array_equal(big.train_outputs(rounds=[0, 2]), p.train_outputs(rounds=[0, 2]))
    np.testing.assert_allclose(
        big.test_outputs(rounds=[1], test_features=np.ldexp(xt, e)),
        p.test_outputs(rounds=[1], test_features=xt),
        atol=1e-13,
    )
    np.testing.assert_allclose(
        big.test_outputs(rounds=[1], test_gram=np.ldexp(xt @ x.T, 2 * e)),
        p.test_outputs(rounds=[1], test_features=xt),
        atol=1e-12,
    )
    # the spectrum attribute is in the caller's units: eigenvalues of the Gram, against NumPy
    np.testing.assert_allclose(
        np.sort(np.asarray(big.spectrum.eigvals)) / np.ldexp(1.0, 2 * e), np.linalg.eigvalsh(x.T @ x), rtol=1e-12
    )
    assert big.lam == np.ldexp(lam0, 2 * e) and isinstance(big.lam, float)
    # against an independent solve at scale 1, round 2
    g = x @ x.T
    s = g @ np.linalg.inv(g + 3 * 20 * lam0 * np.eye(20))
    np.testing.assert_allclose(
        big.train_outputs(rounds=2)[0], 1 / 3 + np.linalg.matrix_power(s, 3) @ (y - 1 / 3), atol=1e-10
    )
    # a spectrum given in the caller's units works at any scale too
    q = sd.predictor(y, lam=np.ldexp(lam0, 2 * e), spectrum=big.spectrum, features=np.ldexp(x, e))
    np.testing.assert_allclose(q.train_outputs(rounds=[0, 2]), p.train_outputs(rounds=[0, 2]), atol=1e-13)
    np.testing.assert_allclose(
        q.test_outputs(rounds=[1], test_features=np.ldexp(xt, e)),
        p.test_outputs(rounds=[1], test_features=xt),
        atol=1e-12,
    )
    # a test set too large for the training set's scale (1e300 against 2^-600): a clear error, not NaN
    small = sd.predictor(y, lam=np.ldexp(lam0, -2 * e), gram=np.ldexp(x @ x.T, -2 * e))
    with pytest.raises(ValueError, match="test_gram is too large for the scale of the training set"):
        small.test_outputs(rounds=[0], test_gram=np.full((1, 20), 1e300))


# --------------------------------------------------------------------------
# One tie rule
# --------------------------------------------------------------------------


def test_one_tie_rule_across_metrics_engine_theorems_and_pll():
    tie = np.array([[0.5, 0.5, 0.0], [0.2, 0.5, 0.3]])
    true = np.array([0, 1])
    # metrics: a tie is a failure (argmax would have said class 0)
    assert float(sd.accuracy(tie[:1], true[:1])) == 0.0
    np.testing.assert_array_equal(sd.correct(tie, true), [False, True])
    assert float(sd.accuracy(tie, true)) == 0.5
    # a difference below tie_tol is a tie too; above it, not
    near = np.array([[0.5 + 1e-12, 0.5 - 1e-12, 0.0]])
    assert float(sd.accuracy(near, [0])) == 0.0
    assert float(sd.accuracy(near, [0], tie_tol=0.0)) == 1.0
    split = sd.split_accuracy(tie, true, np.array([0, 2]))
    assert int(split.clean_correct) == 0 and int(split.corrupted_correct) == 1
    # the Monte Carlo engine counts with the same rule
    from sdtheory.montecarlo.cell import _stats

    num, num_clean, num_noisy, all_ok, _, _ = _stats(
        jnp.asarray(tie)[None],
        jnp.asarray(true),
        jnp.asarray([True, False]),
        jnp.ones(1, bool),
        jnp.zeros(1),
        sd.TIE_TOL,
    )
    assert (int(num[0]), int(num_clean[0]), int(num_noisy[0]), bool(all_ok[0])) == (1, 0, 1, False)
    # the theorems' type-level scoring uses it as well: a class whose true and wrong labels
    # tie in the PLL student's scores is predicted wrong (low noise: one wrong label per class)
    k, n = 3, 10
    f = np.eye(k) * (1 - 1 / n) + np.roll(np.eye(k), 1, axis=1) / n
    pred = sd.pll_accuracy_prediction(f, c=0.5, d=0.0, lam=1e-3, per_class=n)
    assert float(pred.accuracy[0]) == 0.0
    # top-2: ties within tie_tol go to the lower class index
    np.testing.assert_array_equal(sd.top2_targets(np.array([[0.2, 0.4, 0.4 + 1e-13]])), [[0, 0.5, 0.5]])
    np.testing.assert_array_equal(sd.top2_targets(np.array([[0.4 + 1e-13, 0.2, 0.4, 0.4]])), [[0.5, 0, 0.5, 0]])


def test_engine_pll_theory_equals_closed_form_simulation_at_low_noise():
    """With the one top-2 rule the theorems' PLL prediction equals the closed-form simulation
    cell by cell, also at low noise where the teacher's wrong classes tie exactly."""
    cfg = mc.make_config(num_classes=4, per_class=12, c=0.4, d=0.1, lam=1e-4, num_rounds=2, methods=("pll_closed",))
    res = mc.run_grid(cfg, np.array([0.0, 0.02, 0.05, 0.1, 0.3]), num_seeds=6, seed=0)
    np.testing.assert_allclose(res.accuracy("pll_closed")[..., 0], res.theory.empirical_pll_accuracy, atol=1e-12)


# --------------------------------------------------------------------------
# No import-time side effects
# --------------------------------------------------------------------------

_IMPORT_SCRIPT = textwrap.dedent(
    """
    import jax, matplotlib
    x64_before = jax.config.jax_enable_x64
    backend_before = matplotlib.get_backend()
    import numpy as np
    import sdtheory as sd
    from sdtheory import plots
    assert jax.config.jax_enable_x64 == x64_before, "import changed jax_enable_x64"
    y = np.eye(3)[[0, 1, 2, 0, 1, 2]]
    x = np.random.default_rng(0).normal(size=(6, 4))
    out = sd.sd_outputs(y, lam=0.1, rounds=[0, 1], features=x)
    assert out.dtype == np.float64, out.dtype
    assert jax.config.jax_enable_x64 == x64_before, "a public call changed jax_enable_x64"
    import jax.numpy as jnp
    assert jnp.argmax(jnp.asarray(out), -1).shape == (2, 6)  # usable in the caller's 32-bit mode
    fig = plots.new_figure()
    assert matplotlib.get_backend() == backend_before
    print("ok", x64_before)
    """
)


def test_import_changes_nothing_global():
    proc = subprocess.run(
        [sys.executable, "-c", _IMPORT_SCRIPT],
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": "/usr/bin:/bin", "JAX_PLATFORMS": "cpu"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "ok False"
