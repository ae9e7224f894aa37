"""Top-2 targets and the PLL student, against NumPy sorting, direct linear solves and fixed-point checks."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, strategies as st

import sdtheory
from sdtheory import refine


def _top2_numpy(P):
    order = np.argsort(-P, axis=-1, kind="stable")  # stable: lower index first among ties
    m = np.zeros_like(P, dtype=float)
    np.put_along_axis(m, order[:, :2], 0.5, axis=-1)
    return m


@given(st.integers(0, 10**6), st.sampled_from([(7, 2), (9, 4)]))
def test_top2_matches_stable_sort_with_ties(seed, shape):
    rng = np.random.default_rng(seed)
    P = rng.integers(0, 3, size=shape).astype(float)  # many ties
    np.testing.assert_array_equal(np.asarray(sdtheory.top2_targets(P)), _top2_numpy(P))


def test_top2_tie_rule_documented_example():
    P = np.array([[0.2, 0.4, 0.4], [0.5, 0.25, 0.25], [1 / 3, 1 / 3, 1 / 3]])
    np.testing.assert_array_equal(np.asarray(sdtheory.top2_targets(P)), [[0, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0.5, 0]])


def _direct_round(G, T, lam):
    """Linearised CE fit by a direct solve: P = 1/K + G (G + K N lam I)^{-1} (T - 1/K)."""
    n, k = T.shape
    return 1.0 / k + G @ np.linalg.solve(G + k * n * lam * np.eye(n), T - 1.0 / k)


def _problem(seed, n=30, k=3, dim=6):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, dim)) / np.sqrt(dim)
    y = rng.integers(0, k, n)
    return X, X @ X.T, np.eye(k)[y]


@given(seed=st.integers(0, 10**6), loglam=st.floats(-3, 0))
def test_pll_student_closed_form_matches_direct_solves(seed, loglam):
    X, G, Y = _problem(seed)
    lam = 10.0**loglam
    res = sdtheory.pll_student(Y, lam=lam, gram=G, num_rounds=3)  # the teacher and two students
    teacher = _direct_round(G, Y, lam)
    t1 = _top2_numpy(teacher)
    s1 = _direct_round(G, t1, lam)
    t2 = _top2_numpy(s1)
    s2 = _direct_round(G, t2, lam)
    np.testing.assert_allclose(res.teacher, teacher, atol=1e-10)
    np.testing.assert_array_equal(res.targets[0], t1)
    np.testing.assert_allclose(res.outputs[0], s1, atol=1e-10)
    np.testing.assert_array_equal(res.targets[1], t2)
    np.testing.assert_allclose(res.outputs[1], s2, atol=1e-10)
    feat = sdtheory.pll_student(Y, lam=lam, features=X, num_rounds=3)
    np.testing.assert_allclose(feat.outputs, res.outputs, atol=1e-9)


def test_pll_block_path_matches_gram_path():
    k, n, c, d, lam = 3, 12, 0.5, 0.1, 3e-3
    true = np.repeat(np.arange(k), n)
    counts = np.array([[7, 3, 2], [1, 9, 2], [3, 4, 5]])  # distinct per row: no top-2 ties
    given_ = np.concatenate([np.repeat(np.arange(k), counts[i]) for i in range(k)])
    Y = np.eye(k)[given_]
    res_b = sdtheory.refine.pll_student_block_model(Y, true, c=c, d=d, lam=lam, num_rounds=3)
    res_g = sdtheory.pll_student(Y, lam=lam, gram=sdtheory.block_gram(true, c=c, d=d), num_rounds=3)
    chex.assert_trees_all_close(res_b, res_g, atol=1e-10)  # every field: teacher, targets, outputs, flags
    np.testing.assert_array_equal(res_b.targets, res_g.targets)


def test_pll_pipeline_core_vmaps_over_lam():
    X, G, Y = _problem(1)
    spec = sdtheory.spectral.spectrum(gram=G)

    def pipeline(lam):
        fit = refine.closed_fit(spec, lam)
        return refine.pll_rounds_core(fit, fit(jnp.asarray(Y)), 1).outputs

    lams = jnp.array([1e-3, 1e-2, 1e-1])
    out = jax.vmap(pipeline)(lams)
    for i, l in enumerate(np.asarray(lams)):
        np.testing.assert_allclose(out[i, 0], _direct_round(G, _top2_numpy(_direct_round(G, Y, l)), l), atol=1e-10)


def _stationarity_residual(P, T, G, lam, loss, q=0.7):
    """max | centred log P - ( -(1/(N lam)) G grad_z ) |: the exact first-order condition.

    At the optimum W = -(1/(N lam)) sum_i g_i x_i^T, so logits Z = -(1/(N lam)) G g with
    g = d loss/d z (rows summing to 0); log P equals Z up to a per-row constant.
    """
    n = P.shape[0]
    if loss == "ce":
        g = P - T
    else:
        pq = P**q
        g = -(T * pq) + (T * pq).sum(1, keepdims=True) * P
    Z = -(G @ g) / (n * lam)
    L = np.log(P)
    L = L - L.mean(1, keepdims=True)
    Z = Z - Z.mean(1, keepdims=True)
    return np.abs(L - Z).max()


@pytest.mark.parametrize("loss", ["ce", "gce"])
def test_pll_student_exact_satisfies_first_order_conditions(loss):
    X, G, Y = _problem(3, n=24, k=3, dim=5)
    lam = 1e-2
    res = sdtheory.pll_student(Y, lam=lam, features=X, model="exact", loss=loss, q=0.7)
    assert bool(np.all(res.converged))
    teacher = np.asarray(res.teacher)
    assert _stationarity_residual(teacher, Y, G, lam, "ce") < 1e-7
    np.testing.assert_array_equal(res.targets[0], _top2_numpy(teacher))
    assert _stationarity_residual(np.asarray(res.outputs[0]), np.asarray(res.targets[0]), G, lam, loss) < 1e-7


def test_refine_bad_input():
    Y = np.eye(3)[[0, 1, 2, 0]]
    G = np.eye(4)
    with pytest.raises(ValueError, match="model='exact'"):
        sdtheory.pll_student(Y, lam=1e-2, gram=G, loss="gce")
    with pytest.raises(ValueError, match="model"):
        sdtheory.pll_student(Y, lam=1e-2, gram=G, model="adam")
    with pytest.raises(ValueError, match="rounds"):
        sdtheory.pll_student(Y, lam=1e-2, gram=G, num_rounds=0)
    # num_rounds counts the teacher as round 0, as everywhere: one round is the teacher alone
    for fn in (
        lambda: sdtheory.pll_student(Y, lam=1e-2, gram=G, num_rounds=1),
        lambda: sdtheory.refine.pll_student_block_model(Y, np.arange(12) % 3, c=0.4, d=0.1, lam=1e-2, num_rounds=1),
    ):
        with pytest.raises(ValueError, match="needs num_rounds >= 2"):
            fn()
    with pytest.raises(ValueError, match="exactly one"):
        sdtheory.pll_student(Y, lam=1e-2)
    with pytest.raises(ValueError, match="instances"):
        sdtheory.pll_student(Y, lam=1e-2, gram=np.eye(5))
    with pytest.raises(ValueError, match="lam"):
        sdtheory.pll_student(Y, lam=0.0, gram=G)
    with pytest.raises(ValueError, match="K >= 2"):
        sdtheory.top2_targets(np.ones((3, 1)))
    with pytest.raises(ValueError, match="non-finite"):
        sdtheory.top2_targets(np.array([[np.nan, 1.0]]))


def test_pll_student_refuses_two_classes():
    """Top-2 of two classes is both classes: every refined target is (1/2, 1/2), whatever the teacher says."""
    X, G, _ = _problem(1, n=16)
    y = np.arange(16) % 2
    Y = np.eye(2)[y]
    # why: the top-2 targets of any two-class outputs are uniform (NumPy's sort agrees), so they carry no label
    teacher = np.random.default_rng(0).dirichlet(np.ones(2), size=16)
    np.testing.assert_array_equal(_top2_numpy(teacher), np.full((16, 2), 0.5))
    why = r"PLL student needs K >= 3 classes, got K = 2 \(the columns of targets\).*\(1/2, 1/2\)"
    with pytest.raises(ValueError, match=why):
        sdtheory.pll_student(Y, lam=1e-2, gram=G)
    with pytest.raises(ValueError, match=why):
        sdtheory.pll_student(Y, lam=1e-2, features=X, model="exact")
    with pytest.raises(ValueError, match=why):
        sdtheory.refine.pll_student_block_model(Y, y, c=0.4, d=0.1, lam=1e-2)
    with pytest.raises(ValueError, match=why):
        sdtheory.predictor(Y, lam=1e-2, features=X, model="exact", num_rounds=2, student="pll")
    # two classes are fine for self-distillation, and three for the PLL student
    sdtheory.predictor(Y, lam=1e-2, features=X, num_rounds=None)
    Y3 = np.eye(3)[np.arange(16) % 3]
    assert sdtheory.pll_student(Y3, lam=1e-2, gram=G).outputs.shape == (1, 16, 3)


# --------------------------------------------------------------------------
# Issue 12: the numeric validation layer
# --------------------------------------------------------------------------


def test_pll_student_bad_numbers_are_rejected_clearly():
    X, G, Y = _problem(0, n=12)
    with pytest.raises(ValueError, match="lam must be a scalar"):
        sdtheory.pll_student(Y, lam=np.full(12, 1e-2), gram=G)
    with pytest.raises(TypeError, match="lam"):
        sdtheory.pll_student(Y, lam=True, gram=G)
    with pytest.raises(TypeError, match="tie_tol"):
        sdtheory.pll_student(Y, lam=1e-2, gram=G, tie_tol=True)
    with pytest.raises(ValueError, match="tie_tol"):
        sdtheory.pll_student(Y, lam=1e-2, gram=G, tie_tol=np.array([0.0, 1e-10]))
    with pytest.raises(ValueError, match="num_rounds must be <= 100000"):
        sdtheory.pll_student(Y, lam=1e-2, gram=G, num_rounds=2**31)
    with pytest.raises(ValueError, match="num_rounds must be <= 100000"):
        sdtheory.refine.pll_student_block_model(Y, np.arange(12) % 3, c=0.4, d=0.1, lam=1e-2, num_rounds=10**6)
    with pytest.raises(ValueError, match="lam must be a scalar"):
        sdtheory.refine.pll_student_block_model(Y, np.arange(12) % 3, c=0.4, d=0.1, lam=[1e-2, 1e-1])
    with pytest.raises(TypeError, match="tol"):
        sdtheory.pll_student(Y, lam=1e-2, features=X, model="exact", tol=True)
    with pytest.raises(TypeError, match="lam is a traced value.*pll_rounds_core"):
        jax.vmap(lambda lam: sdtheory.pll_student(Y, lam=lam, gram=G).outputs)(jnp.array([-1.0, 1e-2]))


@pytest.mark.parametrize(
    "bad,exc,match",
    [
        ([[0.2, 0.5, 0.3], [0.1, 0.9]], ValueError, "rectangular"),
        (np.eye(3, dtype=bool), TypeError, "bool"),
        ("abc", TypeError, "string"),
        (np.zeros((0, 3)), ValueError, "non-empty"),
        ([[0.2, np.nan, 0.1]], ValueError, "non-finite"),
    ],
)
def test_top2_targets_bad_outputs(bad, exc, match):
    with pytest.raises(exc, match=match):
        sdtheory.top2_targets(bad)


@pytest.mark.parametrize("exponent", [450, -450])
def test_pll_student_of_any_scale_depends_on_g_over_lam(exponent):
    # features 2^e X with lam 2^(2e) lam0: the closed-form PLL pipeline is that of (X, lam0), checked against direct
    # NumPy solves at scale 1 (at 2^450 the Gram overflows, at 2^-450 it underflows)
    X, G, Y = _problem(5, n=24)
    lam0 = 2.0**-6
    scale, lam = np.ldexp(1.0, exponent), np.ldexp(lam0, 2 * exponent)
    res = sdtheory.pll_student(Y, lam=lam, features=X * scale)
    teacher = _direct_round(G, Y, lam0)
    np.testing.assert_allclose(res.teacher, teacher, atol=1e-10)
    t1 = _top2_numpy(teacher)
    np.testing.assert_array_equal(res.targets[0], t1)
    np.testing.assert_allclose(res.outputs[0], _direct_round(G, t1, lam0), atol=1e-10)
    exact = sdtheory.pll_student(Y, lam=lam, features=X * scale, model="exact", tol=1e-11)
    base = sdtheory.pll_student(Y, lam=lam0, features=X, model="exact", tol=1e-11)
    np.testing.assert_array_equal(exact.outputs, base.outputs)
    assert _stationarity_residual(np.asarray(exact.teacher), Y, G, lam0, "ce") < 1e-7


# --------------------------------------------------------------------------
# The PLL student's starting point (init="teacher" / "zero")
# --------------------------------------------------------------------------


def _softmax_np(z):
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def _gce_objective(w, x, t, lam, q):
    """The GCE student's objective written out: mean_i sum_l t_il (1 - p_il^q) / q + (lam / 2) ||W||^2."""
    p = jax.nn.softmax(x @ w.T, axis=-1)
    return jnp.mean(jnp.sum(t * (1.0 - p**q), axis=-1) / q) + 0.5 * lam * jnp.sum(w * w)


def _gce_case():
    """A small problem on which the two starts of the GCE student end at different stationary points."""
    rng = np.random.default_rng(0)
    n, k, d = 24, 3, 6
    x = rng.standard_normal((n, d))
    t = np.eye(k)[rng.integers(0, k, n)]
    return x, t, 1e-3, 1.0


@pytest.mark.parametrize("model_kwargs", [dict(features=True), dict(features=True, fit_intercept=True)])
def test_pll_init_ce_reaches_the_same_optimum_from_either_start(model_kwargs):
    x, t, lam, _ = _gce_case()
    fi = model_kwargs.get("fit_intercept", False)
    out = {}
    for init in refine.PLL_INITS:
        p = sdtheory.predictor(
            t, lam=lam, features=x, model="exact", num_rounds=3, student="pll", loss="ce", init=init, fit_intercept=fi
        )
        out[init] = (np.asarray(p.train_outputs(num_rounds=3)), np.asarray(p.weights(num_rounds=3)))
    np.testing.assert_allclose(out["teacher"][0], out["zero"][0], rtol=0, atol=1e-8)
    np.testing.assert_allclose(out["teacher"][1], out["zero"][1], rtol=1e-6, atol=1e-8)
    if not fi:  # the public pll_student (no intercept option) gives the same students from either start
        a = sdtheory.pll_student(t, lam=lam, features=x, model="exact", num_rounds=3, init="teacher")
        b = sdtheory.pll_student(t, lam=lam, features=x, model="exact", num_rounds=3, init="zero")
        np.testing.assert_allclose(np.asarray(a.outputs), np.asarray(b.outputs), rtol=0, atol=1e-8)
        np.testing.assert_allclose(np.asarray(a.outputs), out["zero"][0][1:], rtol=0, atol=1e-8)


def test_pll_init_gce_starts_end_at_different_stationary_points():
    x, t, lam, q = _gce_case()
    res = {}
    for init in refine.PLL_INITS:
        p = sdtheory.predictor(
            t, lam=lam, features=x, model="exact", num_rounds=2, student="pll", loss="gce", q=q, init=init
        )
        res[init] = (np.asarray(p.train_outputs(num_rounds=2)), np.asarray(p.weights(num_rounds=2))[1])
    teacher = res["teacher"][0][0]
    np.testing.assert_allclose(res["zero"][0][0], teacher, atol=1e-12)  # the same CE teacher
    targets = _top2_numpy(teacher)  # the student's targets, from NumPy sorting of the teacher's outputs
    grad = jax.grad(_gce_objective)
    for init, (outputs, w) in res.items():
        np.testing.assert_allclose(outputs[1], _softmax_np(x @ w.T), atol=1e-10)
        g = np.asarray(grad(jnp.asarray(w), jnp.asarray(x), jnp.asarray(targets), lam, q))
        # stationary: the gradient is ~0 next to each of its two terms (the weight decay lam W)
        assert np.abs(g).max() <= 1e-7 * np.abs(lam * w).max(), (init, np.abs(g).max())
    # ... and they are different points: other weights and other training outputs
    assert np.abs(res["teacher"][0][1] - res["zero"][0][1]).max() > 0.1
    assert np.abs(res["teacher"][1] - res["zero"][1]).max() > 0.1 * np.abs(res["zero"][1]).max()


@pytest.mark.parametrize(
    "n, fit_intercept",
    [
        (24, False),
        (24, True),
        pytest.param(700, False, marks=pytest.mark.slow),
        pytest.param(700, True, marks=pytest.mark.slow),
    ],
)
def test_pll_init_teacher_first_iterate_is_the_teacher(n, fit_intercept):
    """With no iterations the student's outputs are the teacher's model, softmax(X W + b) with W = A^T X.

    n = 700 > 200 K: the kernel keeps X and applies the basis in the preconditioners; n = 24: it rotates X.
    """
    from sdtheory.exact import solver_features

    rng = np.random.default_rng(1)
    k, d = 3, 5
    x = rng.standard_normal((n, d)) + 0.5
    t = np.eye(k)[rng.integers(0, k, n)]
    lam = 1e-2
    phi = solver_features(features=jnp.asarray(x))
    opts = dict(tol=1e-10, max_iter=1000, solver="auto", fit_intercept=fit_intercept)
    teacher = refine.exact_fit(phi, jnp.asarray(lam), loss="ce", **opts)(jnp.asarray(t))
    targets = refine.top2_targets_core(teacher.outputs)
    frozen = dict(opts, max_iter=0)
    student = refine.exact_fit(phi, jnp.asarray(lam), loss="gce", q=0.7, **frozen)(targets, teacher)
    cold = refine.exact_fit(phi, jnp.asarray(lam), loss="gce", q=0.7, **frozen)(targets)
    a = np.asarray(teacher.details.coef)
    b = np.asarray(teacher.details.intercepts)
    w = a.T @ x  # the teacher's weights from its dual coefficients, by NumPy
    np.testing.assert_allclose(np.asarray(student.outputs), _softmax_np(x @ w.T + b), rtol=0, atol=1e-12)
    np.testing.assert_allclose(np.asarray(student.outputs), np.asarray(teacher.outputs), rtol=0, atol=1e-8)
    np.testing.assert_allclose(np.asarray(cold.outputs), 1.0 / k, rtol=0, atol=1e-15)  # zero start: uniform


@pytest.mark.parametrize(
    "bad, exc", [("teachers", ValueError), ("Zero", ValueError), (0, TypeError), (None, TypeError)]
)
def test_pll_init_is_validated_everywhere(bad, exc):
    x, t, lam, _ = _gce_case()
    with pytest.raises(exc, match="init"):
        sdtheory.pll_student(t, lam=lam, features=x, model="exact", init=bad)
    with pytest.raises(exc, match="init"):
        sdtheory.predictor(t, lam=lam, features=x, model="exact", num_rounds=2, student="pll", init=bad)
    with pytest.raises(exc, match="init"):
        refine.pll_rounds_core(lambda tt: None, None, 1, init=bad)
    with pytest.raises(ValueError, match="init='zero'.*student='pll'"):
        sdtheory.predictor(t, lam=lam, features=x, model="exact", num_rounds=2, student="sd", init="zero")
