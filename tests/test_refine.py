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
    res = sdtheory.pll_student(Y, lam=lam, gram=G, num_rounds=2)
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
    feat = sdtheory.pll_student(Y, lam=lam, features=X, num_rounds=2)
    np.testing.assert_allclose(feat.outputs, res.outputs, atol=1e-9)


def test_pll_block_path_matches_gram_path():
    k, n, c, d, lam = 3, 12, 0.5, 0.1, 3e-3
    true = np.repeat(np.arange(k), n)
    counts = np.array([[7, 3, 2], [1, 9, 2], [3, 4, 5]])  # distinct per row: no top-2 ties
    given_ = np.concatenate([np.repeat(np.arange(k), counts[i]) for i in range(k)])
    Y = np.eye(k)[given_]
    res_b = sdtheory.pll_student_block_model(Y, true, c=c, d=d, lam=lam, num_rounds=2)
    res_g = sdtheory.pll_student(Y, lam=lam, gram=sdtheory.block_gram(true, c=c, d=d), num_rounds=2)
    chex.assert_trees_all_close(res_b, res_g, atol=1e-10)  # every field: teacher, targets, outputs, flags
    np.testing.assert_array_equal(res_b.targets, res_g.targets)


def test_pll_pipeline_core_vmaps_over_lam():
    X, G, Y = _problem(1)
    spec = sdtheory.spectrum(gram=G)

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
        sdtheory.pll_student_block_model(Y, y, c=0.4, d=0.1, lam=1e-2)
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
        sdtheory.pll_student_block_model(Y, np.arange(12) % 3, c=0.4, d=0.1, lam=1e-2, num_rounds=10**6)
    with pytest.raises(ValueError, match="lam must be a scalar"):
        sdtheory.pll_student_block_model(Y, np.arange(12) % 3, c=0.4, d=0.1, lam=[1e-2, 1e-1])
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
