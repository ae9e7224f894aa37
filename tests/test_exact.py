"""The exact softmax solver against independent computations.

Independent paths used here: the primal objective in the weights ``W``
written out plainly and differentiated with ``jax.grad``; plain full-batch
gradient descent with optax on ``W``; the closed form (large ``lam``);
the solver called round by round; explicit Python loops instead of vmap.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

import sdtheory as sd


def problem(seed, n, d, k, soft=False):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)) / np.sqrt(d)
    if soft:
        t = rng.dirichlet(np.ones(k), size=n)
    else:
        t = np.eye(k)[rng.integers(0, k, n)]
    return x, t


def primal(w, x, t, lam, loss="ce", q=0.7):
    """(1/N) sum_i loss(t_i, W x_i) + lam/2 |W|^2, W of shape (K, d), written plainly."""
    logits = x @ w.T
    logp = logits - jax.scipy.special.logsumexp(logits, axis=1, keepdims=True)
    if loss == "ce":
        per = -jnp.sum(t * logp, axis=1)
    else:
        per = jnp.sum(t * (1.0 - jnp.exp(logp) ** q), axis=1) / q
    return jnp.mean(per) + 0.5 * lam * jnp.sum(w**2)


def weights_from_coef(coef, x):
    """W_r = A_r^T X: the representer weights for every round, (R, K, d)."""
    return np.einsum("rnk,nd->rkd", np.asarray(coef), x)


def softmax_np(z):
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


# (N, K) come from a small set so that the jitted solver compiles only a few
# times; the Gram path's shapes do not depend on d, which varies freely (up to D_MAX).
D_MAX = 40
#: The gradient of the plain primal (CE), compiled once per shape.
PRIMAL_GRAD = jax.jit(jax.grad(primal))


@given(
    seed=st.integers(0, 2**31 - 1),
    nk=st.sampled_from([(12, 3), (25, 2), (25, 4)]),
    d=st.integers(1, D_MAX),
    log_lam=st.floats(-6, 1),
    soft=st.booleans(),
)
def test_stationary_in_weight_space(seed, nk, d, log_lam, soft):
    n, k = nk
    x, t = problem(seed, n, d, k, soft)
    lam = 10.0**log_lam
    res = sd.exact_outputs(t, lam=lam, num_rounds=3, gram=x @ x.T)
    assert np.all(np.asarray(res.converged))
    assert np.all(np.asarray(res.residuals) <= 1e-9)
    ws = weights_from_coef(res.coef, x)
    targets = [t] + [np.asarray(res.outputs[r]) for r in range(2)]
    # the gradient of the plain primal, one compiled program per (N, K): X and W padded with zero
    # feature columns to D_MAX leave the objective and the gradient's other entries as they are
    # and give the padded entries lam * 0 + X_pad^T (...) = 0 exactly
    pad = ((0, 0), (0, D_MAX - d))
    for r in range(3):
        g = np.asarray(PRIMAL_GRAD(jnp.asarray(np.pad(ws[r], pad)), np.pad(x, pad), targets[r], lam))
        # gradient = X^T (softmax(X W^T) - P) / N, bounded by residual * |X|
        assert np.max(np.abs(g)) <= 1e-8 * max(1.0, np.abs(x).max() ** 2 * d)
        # the returned outputs are the softmax of the returned weights
        np.testing.assert_allclose(softmax_np(x @ ws[r].T), np.asarray(res.outputs[r]), atol=2e-9)


def test_gce_stationary_point_top2_targets():
    x, _ = problem(3, 25, 8, 4)
    rng = np.random.default_rng(0)
    t = np.zeros((25, 4))
    for i in range(25):
        t[i, rng.choice(4, 2, replace=False)] = 0.5
    lam = 1e-3
    res = sd.exact_outputs(t, lam=lam, num_rounds=3, gram=x @ x.T, loss="gce", q=0.7)
    assert np.all(np.asarray(res.converged))
    ws = weights_from_coef(res.coef, x)
    g = np.asarray(jax.grad(primal)(jnp.asarray(ws[0]), x, t, lam, "gce", 0.7))
    assert np.max(np.abs(g)) <= 1e-8
    g1 = np.asarray(jax.grad(primal)(jnp.asarray(ws[1]), x, np.asarray(res.outputs[0]), lam, "gce", 0.7))
    assert np.max(np.abs(g1)) <= 1e-8
    # GCE differs from CE on the same targets (the loss switch is not a no-op)
    ce = sd.exact_outputs(t, lam=lam, num_rounds=3, gram=x @ x.T)
    assert np.max(np.abs(np.asarray(ce.outputs[0]) - np.asarray(res.outputs[0]))) > 1e-3


def test_plain_gradient_descent_reaches_same_outputs():
    n, d, k, lam = 12, 4, 3, 0.05
    x, t = problem(11, n, d, k)
    lip = np.linalg.eigvalsh(x.T @ x).max() / n + lam  # softmax Hessian <= 1/2 < 1
    opt = optax.sgd(1.0 / lip)
    loss = lambda w: primal(w, x, t, lam)  # noqa: E731

    def step(carry, _):
        w, s = carry
        g = jax.grad(loss)(w)
        u, s = opt.update(g, s)
        return (optax.apply_updates(w, u), s), None

    w0 = jnp.zeros((k, d))
    (w, _), _ = jax.lax.scan(step, (w0, opt.init(w0)), None, length=20000)
    p_gd = softmax_np(x @ np.asarray(w).T)
    res = sd.exact_outputs(t, lam=lam, num_rounds=3, gram=x @ x.T)
    np.testing.assert_allclose(np.asarray(res.outputs[0]), p_gd, atol=1e-8)
    # predictions on new points: exact_predict vs softmax(W_gd x_new)
    xt = np.random.default_rng(5).normal(size=(7, d)) / np.sqrt(d)
    want = softmax_np(xt @ np.asarray(w).T)
    via_feat = np.asarray(sd.exact_predict(res, test_features=xt, features=x))[0]
    via_gram = np.asarray(sd.exact_predict(res.coef, test_gram=xt @ x.T))[0]
    np.testing.assert_allclose(via_feat, want, atol=1e-8)
    np.testing.assert_allclose(via_gram, want, atol=1e-8)


def test_large_lam_approaches_closed_form():
    x, t = problem(2, 25, 6, 4)
    g = x @ x.T
    gaps = []
    for lam in [0.1, 1.0, 10.0, 100.0]:
        ex = np.asarray(sd.exact_outputs(t, lam=lam, num_rounds=3, gram=g).outputs)
        cf = np.asarray(sd.sd_outputs(t, lam=lam, rounds=[0, 1, 2], gram=g))
        gaps.append(np.max(np.abs(ex - cf)))
    assert all(b < a for a, b in zip(gaps, gaps[1:], strict=False)), gaps
    assert gaps[-1] < 1e-5
    # and the gap is genuinely nonzero at moderate lam (the solver is not the linearisation)
    assert gaps[0] > 1e-4


def test_chained_rounds_equal_round_by_round():
    x, t = problem(7, 25, 10, 4)
    g = x @ x.T
    lam = 1e-3
    chained = sd.exact_outputs(t, lam=lam, num_rounds=3, gram=g)
    cur = t
    for r in range(3):
        one = sd.exact_outputs(cur, lam=lam, num_rounds=1, gram=g)
        np.testing.assert_allclose(np.asarray(one.outputs[0]), np.asarray(chained.outputs[r]), atol=1e-7)
        cur = np.asarray(one.outputs[0])


def test_vmap_over_lam_and_targets():
    x, _ = problem(4, 25, 6, 4)
    spec = sd.spectral.spectrum(gram=x @ x.T)
    rng = np.random.default_rng(1)
    ts = jnp.asarray(np.eye(4)[rng.integers(0, 4, (4, 25))])
    lams = jnp.asarray([1e-4, 1e-2, 1.0])
    f = lambda t, lam: sd.exact.exact_outputs_core(spec, t, lam, 3)  # noqa: E731
    batched = jax.vmap(jax.vmap(f, in_axes=(None, 0)), in_axes=(0, None))(ts, lams)
    assert batched.outputs.shape == (4, 3, 3, 25, 4)
    assert np.all(np.asarray(batched.converged))
    for i in range(4):
        for j in range(3):
            single = sd.exact_outputs(np.asarray(ts[i]), lam=float(lams[j]), num_rounds=3, gram=x @ x.T)
            np.testing.assert_allclose(np.asarray(batched.outputs[i, j]), np.asarray(single.outputs), atol=1e-8)
            np.testing.assert_allclose(np.asarray(batched.coef[i, j]), np.asarray(single.coef), atol=1e-6)


@pytest.mark.parametrize("d", [5, 60])
def test_feature_path_equals_gram_path(d):
    x, t = problem(9, 25, d, 4, soft=True)
    lam = 1e-4
    a = sd.exact_outputs(t, lam=lam, num_rounds=3, features=x)
    b = sd.exact_outputs(t, lam=lam, num_rounds=3, gram=x @ x.T)
    np.testing.assert_allclose(np.asarray(a.outputs), np.asarray(b.outputs), atol=1e-8)


def test_zero_eigenvalues_rank_deficient_gram():
    x, t = problem(5, 25, 5, 4)  # rank 5 Gram: 20 zero eigenvalues
    res = sd.exact_outputs(t, lam=1e-5, num_rounds=3, gram=x @ x.T)
    assert np.all(np.isfinite(np.asarray(res.outputs)))
    assert np.all(np.asarray(res.converged))
    # outputs depend on the data only through the 3-d feature space: equal to the feature path
    np.testing.assert_allclose(
        np.asarray(res.outputs), np.asarray(sd.exact_outputs(t, lam=1e-5, num_rounds=3, features=x).outputs), atol=1e-7
    )


def test_reference_like_block_problem_small_lam():
    classes = np.repeat(np.arange(4), 30)
    x = np.asarray(sd.sample_block_features(jax.random.PRNGKey(0), classes, c=0.4, d=0.1, dim=120))
    rng = np.random.default_rng(0)
    y = np.where(rng.random(120) < 0.5, (classes + rng.integers(1, 4, 120)) % 4, classes)
    t = np.eye(4)[y]
    for lam in [1e-6, 1e-5]:
        res = sd.exact_outputs(t, lam=lam, num_rounds=3, gram=x @ x.T)
        assert np.all(np.asarray(res.residuals) <= 1e-9)
        p = np.asarray(res.outputs)
        g = x @ x.T
        # residual recomputed independently from the returned outputs
        targets = np.concatenate([t[None], p[:-1]])
        direct = softmax_np(np.einsum("nm,rmk->rnk", g, targets - p) / (120 * lam))
        assert np.max(np.abs(direct - p)) <= 1e-9


def test_methods_agree():
    x, t = problem(8, 25, 12, 4)
    a = sd.exact_outputs(t, lam=1e-3, num_rounds=3, gram=x @ x.T, solver="lbfgs")
    b = sd.exact_outputs(t, lam=1e-3, num_rounds=3, gram=x @ x.T, solver="newton-cg")
    np.testing.assert_allclose(np.asarray(a.outputs), np.asarray(b.outputs), atol=1e-8)


@pytest.mark.parametrize("loss", ["ce", "gce"])
def test_row_blocked_hessian_products_reach_the_same_optimum(monkeypatch, loss):
    """Large Phi is run over in row blocks (with a tail block); forced here on a small problem.

    Blocking changes only the CG directions, so the answer must be the unblocked one and
    stationary for the primal objective written plainly.
    """
    from sdtheory._src import exact as E

    x, t = problem(21, 333, 7, 3, soft=loss == "ce")
    if loss == "gce":
        t = sd.top2_targets(np.asarray(sd.exact_outputs(t, lam=1e-2, num_rounds=1, features=x).outputs[0]))
    kw = dict(lam=1e-3, num_rounds=1, features=x, loss=loss)
    plain = {s: np.asarray(sd.exact_outputs(t, solver=s, **kw).outputs[0]) for s in ("auto", "newton-cg")}
    monkeypatch.setattr(E, "BLOCK_ABOVE_BYTES", 0)
    monkeypatch.setattr(E, "ROW_BLOCK_BYTES", 1)  # 64-row blocks: 5 of them and a 13-row tail
    assert E._row_block(jnp.zeros((333, 7)), 0.7) == 64
    jax.clear_caches()
    try:
        for solver, ref in plain.items():
            res = sd.exact_outputs(t, solver=solver, **kw)
            np.testing.assert_allclose(np.asarray(res.outputs[0]), ref, atol=1e-9)
            w = weights_from_coef(res.coef, x)[0]
            g = np.asarray(jax.grad(primal)(jnp.asarray(w), x, t, 1e-3, loss, 0.7))
            assert np.max(np.abs(g)) < 1e-8
    finally:
        jax.clear_caches()


@pytest.mark.parametrize("loss", ["ce", "gce"])
def test_losses_class_major_equal_row_layout_and_autodiff(loss):
    """The solvers call the losses class-major (axis=0): same values as rows, gradient = autodiff of the value."""
    rng = np.random.default_rng(3)
    z = jnp.asarray(rng.normal(size=(40, 5)) * 30)  # large logits: the max shift matters
    t = jnp.asarray(rng.dirichlet(np.ones(5), size=40))
    f = sd.losses.get_loss(loss)
    np.testing.assert_allclose(np.asarray(f.value(t.T, z.T, 0.7, axis=0)), np.asarray(f.value(t, z, 0.7)), rtol=1e-13)
    np.testing.assert_allclose(np.asarray(f.grad(t.T, z.T, 0.7, axis=0)), np.asarray(f.grad(t, z, 0.7)).T, atol=1e-15)
    auto = jax.grad(lambda zz: jnp.sum(f.value(t.T, zz, 0.7, axis=0)))(z.T)
    np.testing.assert_allclose(np.asarray(f.grad(t.T, z.T, 0.7, axis=0)), np.asarray(auto), atol=1e-13)
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(np.asarray(sd.losses.softmax(z.T, axis=0)), p.T, atol=1e-15)
    if f.curvature is not None:
        hbar = sum(np.diag(pi) - np.outer(pi, pi) for pi in p)
        np.testing.assert_allclose(np.asarray(f.curvature(t.T, z.T, 0.7, axis=0)), hbar, atol=1e-13)


@pytest.mark.parametrize("solver", ["auto", "newton-cg", "lbfgs"])
def test_basis_in_the_preconditioner_equals_rotating_the_features(monkeypatch, solver):
    """Features with many rows per class keep their coordinates; the preconditioners apply the basis.

    That is the same algorithm in rotated coordinates, so the iterates (iteration counts and outputs)
    must match those of the explicit rotation ``Phi = X R``, and the answer must be stationary.
    """
    from sdtheory._src import exact as E

    x, t = problem(4, 300, 6, 3, soft=True)
    kw = dict(lam=1e-3, num_rounds=2, features=x, solver=solver, on_failure="flag")
    res = {}
    for rows in (0, 10**9):  # implicit basis, explicit rotation
        monkeypatch.setattr(E, "IMPLICIT_ROWS_PER_CLASS", rows)
        jax.clear_caches()
        res[rows] = sd.exact_outputs(t, **kw)
    jax.clear_caches()
    a, b = res[0], res[10**9]
    np.testing.assert_allclose(np.asarray(a.outputs), np.asarray(b.outputs), atol=1e-9)
    np.testing.assert_array_equal(np.asarray(a.iterations), np.asarray(b.iterations))
    assert bool(np.all(np.asarray(a.converged)))
    w = weights_from_coef(a.coef, x)[0]
    g = np.asarray(jax.grad(primal)(jnp.asarray(w), x, t, 1e-3))
    assert np.max(np.abs(g)) < 1e-8


@pytest.mark.parametrize("loss", ["ce", "gce"])
def test_row_blocked_hessian_product_equals_autodiff(monkeypatch, loss):
    """The blocked product (5 blocks of 64 rows and a 13-row tail) is the Hessian of the data term times d."""
    from sdtheory._src import exact as E

    rng = np.random.default_rng(5)
    phi = jnp.asarray(rng.normal(size=(333, 7)))
    t = jnp.asarray(rng.dirichlet(np.ones(3), size=333).T)  # class-major (K, N)
    v, d = (jnp.asarray(rng.normal(size=(3, 7))) for _ in range(2))
    lossfn = sd.losses.get_loss(loss)

    def data(v):
        return jnp.mean(lossfn.value(t, v @ phi.T, 0.7, axis=0))

    expect = np.asarray(jax.jvp(jax.grad(data), (v,), (d,))[1])
    monkeypatch.setattr(E, "BLOCK_ABOVE_BYTES", 0)
    monkeypatch.setattr(E, "ROW_BLOCK_BYTES", 1)
    assert E._row_block(phi, 0.7) == 64
    got = E._data_hvp(phi, t, v @ phi.T, d, lossfn, 0.7)
    np.testing.assert_allclose(np.asarray(got), expect, rtol=1e-12, atol=1e-14)
    monkeypatch.setattr(E, "BLOCK_ABOVE_BYTES", 1 << 40)
    assert E._row_block(phi, 0.7) == 0
    plain = E._data_hvp(phi, t, v @ phi.T, d, lossfn, 0.7)
    np.testing.assert_allclose(np.asarray(plain), expect, rtol=1e-12, atol=1e-14)


def test_bad_input():
    x, t = problem(1, 10, 3, 3)
    g = x @ x.T
    with pytest.raises(ValueError, match="lam"):
        sd.exact_outputs(t, lam=0.0, num_rounds=1, gram=g)
    with pytest.raises(ValueError, match="lam"):
        sd.exact_outputs(t, lam=-1.0, num_rounds=1, gram=g)
    with pytest.raises(ValueError, match="sum to 1"):
        sd.exact_outputs(t * 2, lam=1.0, num_rounds=1, gram=g)
    with pytest.raises(ValueError, match="exactly one"):
        sd.exact_outputs(t, lam=1.0, num_rounds=1, gram=g, features=x)
    with pytest.raises(ValueError, match="exactly one"):
        sd.exact_outputs(t, lam=1.0, num_rounds=1)
    with pytest.raises(ValueError, match="instances"):
        sd.exact_outputs(t[:5], lam=1.0, num_rounds=1, gram=g)
    with pytest.raises(ValueError, match="instances"):
        sd.exact_outputs(t[:5], lam=1.0, num_rounds=1, features=x)
    with pytest.raises(ValueError, match="symmetric"):
        sd.exact_outputs(t, lam=1.0, num_rounds=1, gram=g + np.triu(np.ones_like(g), 1))
    with pytest.raises(ValueError, match="positive semi-definite"):
        sd.exact_outputs(t, lam=1.0, num_rounds=1, gram=g - 5 * np.eye(10))
    with pytest.raises(ValueError, match="non-finite"):
        sd.exact_outputs(t, lam=1.0, num_rounds=1, features=np.where(x > 0.5, np.nan, x))
    with pytest.raises(ValueError, match="num_rounds"):
        sd.exact_outputs(t, lam=1.0, num_rounds=0, gram=g)
    with pytest.raises(TypeError, match="num_rounds"):
        sd.exact_outputs(t, lam=1.0, num_rounds=2.0, gram=g)
    with pytest.raises(ValueError, match="loss"):
        sd.exact_outputs(t, lam=1.0, num_rounds=1, gram=g, loss="mse")
    with pytest.raises(ValueError, match="q"):
        sd.exact_outputs(t, lam=1.0, num_rounds=1, gram=g, loss="gce", q=0.0)
    with pytest.raises(ValueError, match="on_failure"):
        sd.exact_outputs(t, lam=1.0, num_rounds=1, gram=g, on_failure="ignore")
    with pytest.raises(ValueError, match="tol"):
        sd.exact_outputs(t, lam=1.0, num_rounds=1, gram=g, tol=-1.0)
    with pytest.raises(ValueError, match="solver"):
        sd.exact_outputs(t, lam=1.0, num_rounds=1, gram=g, solver="adam")
    with pytest.raises(ValueError, match="exactly one of rounds"):
        sd.exact_outputs(t, lam=1.0, num_rounds=1, rounds=[0], gram=g)
    with pytest.raises(ValueError, match="test_gram"):
        sd.exact_predict(np.zeros((2, 10, 3)), test_gram=np.zeros((4, 9)))
    with pytest.raises(ValueError, match="dimension"):
        sd.exact_predict(np.zeros((2, 10, 3)), test_features=np.zeros((4, 2)), features=x)


def test_unconverged_raises_or_flags():
    x, t = problem(2, 25, 10, 4)
    g = x @ x.T
    with pytest.raises(RuntimeError, match="did not reach tol"):
        sd.exact_outputs(t, lam=1e-5, num_rounds=3, gram=g, max_iter=1)
    res = sd.exact_outputs(t, lam=1e-5, num_rounds=3, gram=g, max_iter=1, on_failure="flag")
    assert not np.any(np.asarray(res.converged))
    assert np.all(np.asarray(res.residuals) > 1e-9)
    assert np.all(np.asarray(res.iterations) == 1)


# --------------------------------------------------------------------------
# Issue 12: the numeric validation layer
# --------------------------------------------------------------------------


def test_lam_q_tol_max_iter_must_be_single_numbers():
    x, t = problem(1, 10, 3, 3)
    g = x @ x.T
    with pytest.raises(ValueError, match="lam must be a scalar.*exact_outputs_core"):
        sd.exact_outputs(t, lam=np.full(10, 0.1), num_rounds=1, gram=g)
    for bad in (True, np.bool_(True)):
        with pytest.raises(TypeError, match="lam"):
            sd.exact_outputs(t, lam=bad, num_rounds=1, gram=g)
        with pytest.raises(TypeError, match="tol"):
            sd.exact_outputs(t, lam=0.1, num_rounds=1, gram=g, tol=bad)
        with pytest.raises(TypeError, match="q"):
            sd.exact_outputs(t, lam=0.1, num_rounds=1, gram=g, loss="gce", q=bad)
    with pytest.raises(ValueError, match="tol .* must be a scalar"):
        sd.exact_outputs(t, lam=0.1, num_rounds=1, gram=g, tol=np.array([1e-9, 1e-8]))
    with pytest.raises(ValueError, match="q .* must be a scalar"):
        sd.exact_outputs(t, lam=0.1, num_rounds=1, gram=g, loss="gce", q=[0.5, 0.7])
    with pytest.raises(TypeError, match="q"):
        sd.exact_outputs(t, lam=0.1, num_rounds=1, gram=g, q="0.7")
    with pytest.raises(ValueError, match="max_iter must be <= 2147483647"):
        sd.exact_outputs(t, lam=0.1, num_rounds=1, gram=g, max_iter=2**63)
    # 0-d arrays are single numbers and give the same result as floats
    a = sd.exact_outputs(t, lam=np.array(0.1), num_rounds=1, gram=g, tol=np.float64(1e-10))
    b = sd.exact_outputs(t, lam=0.1, num_rounds=1, gram=g, tol=1e-10)
    np.testing.assert_array_equal(a.outputs, b.outputs)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(num_rounds=2**31),
        dict(num_rounds=10**5 + 1),
        dict(rounds=[10**5]),
        dict(rounds=[0, 2**63]),
        dict(num_rounds=2**64),
    ],
)
def test_huge_round_counts_are_rejected_before_solving(kwargs):
    # num_rounds = 2**31 used to hang (a chain of 2**31 solves); 2**63 used to wrap
    x, t = problem(1, 10, 3, 3)
    name = "num_rounds" if "num_rounds" in kwargs else "rounds"
    with pytest.raises(ValueError, match=rf"{name} must be <= \d+ \(.*(chain|one after another)"):
        sd.exact_outputs(t, lam=0.1, gram=x @ x.T, **kwargs)
    with pytest.raises(ValueError, match="num_rounds must be <= 100000"):
        sd.predictor(t, lam=0.1, gram=x @ x.T, model="exact", num_rounds=2**31)


def test_traced_inputs_and_jit_are_refused():
    x, t = problem(2, 25, 10, 4)
    g = x @ x.T
    # under jit, on_failure="raise" used to return the unconverged result without raising
    with pytest.raises(TypeError, match="sdtheory.exact_outputs was called inside jax.jit.*exact_outputs_core"):
        jax.jit(lambda a: sd.exact_outputs(t, lam=1e-5, num_rounds=1, gram=g, max_iter=1).outputs * a)(1.0)
    with pytest.raises(TypeError, match="lam is a traced value.*sdtheory.exact.exact_outputs_core"):
        jax.jit(lambda lam: sd.exact_outputs(t, lam=lam, num_rounds=1, gram=g, max_iter=1).outputs)(1e-5)
    # under vmap a negative lam used to give garbage: refused
    with pytest.raises(TypeError, match="lam is a traced value"):
        jax.vmap(lambda lam: sd.exact_outputs(t, lam=lam, num_rounds=1, gram=g).outputs)(jnp.array([-1.0, 1.0]))
    with pytest.raises(TypeError, match="test_gram is a traced value"):
        jax.jit(lambda tg: sd.exact_predict(np.zeros((1, 25, 4)), test_gram=tg))(np.zeros((3, 25)))
    # the concrete call still raises
    with pytest.raises(RuntimeError, match="did not reach tol"):
        sd.exact_outputs(t, lam=1e-5, num_rounds=1, gram=g, max_iter=1)


@pytest.mark.parametrize("exponent", [400, -400])
def test_exact_solution_of_any_scale_depends_on_g_over_lam(exponent):
    # features 2^e X and lam 2^(2e) lam0 pose the problem of (X, lam0) at another scale: at 2^400 the Gram has entries
    # 2^800 and the dual coefficients 2^-800; at 2^-400 the converse. Outputs, residuals, iterations are the same;
    # coef scale as 2^(-2e), weights as 2^(-e), gradient norms in the weights as 2^e (exact: powers of two)
    x, t = problem(4, 25, 6, 4)
    xt = np.random.default_rng(1).normal(size=(5, 6))
    lam0 = 2.0**-7
    scale, lam = np.ldexp(1.0, exponent), np.ldexp(lam0, 2 * exponent)
    base = sd.predictor(t, lam=lam0, features=x, model="exact", num_rounds=2, tol=1e-11)
    big = sd.predictor(t, lam=lam, features=x * scale, model="exact", num_rounds=2, tol=1e-11)
    rb, rs = base.exact_result(num_rounds=2), big.exact_result(num_rounds=2)
    np.testing.assert_array_equal(rs.outputs, rb.outputs)
    np.testing.assert_array_equal(rs.iterations, rb.iterations)
    np.testing.assert_array_equal(rs.coef, np.ldexp(rb.coef, -2 * exponent))
    np.testing.assert_array_equal(rs.grad_norms, np.ldexp(rb.grad_norms, exponent))
    np.testing.assert_array_equal(big.weights(rounds=[1]), np.ldexp(base.weights(rounds=[1]), -exponent))
    np.testing.assert_allclose(
        big.test_outputs(rounds=[0, 1], test_features=xt * scale),
        base.test_outputs(rounds=[0, 1], test_features=xt),
        atol=1e-15,
    )
    # independent check at the big scale: stationarity A = (T - P) / (N lam) in NumPy, and the fixed point
    # P = softmax(G A) with G A formed as (X 2^e)(X 2^e)^T A  (finite: 2^800 * 2^-800)
    p0 = np.asarray(rs.outputs[0])
    np.testing.assert_allclose(np.asarray(rs.coef[0]), (t - p0) / (25 * lam), rtol=1e-6, atol=0)
    xs = x * scale
    logits = xs @ (xs.T @ np.asarray(rs.coef[0]))
    np.testing.assert_allclose(softmax_np(logits), p0, atol=1e-9)
    # through exact_outputs and the Gram route as well (when the Gram is representable)
    ex = sd.exact_outputs(t, lam=lam, num_rounds=2, features=x * scale, tol=1e-11)
    np.testing.assert_array_equal(ex.outputs, rs.outputs)
    if exponent < 0:
        via_gram = sd.exact_outputs(t, lam=lam, num_rounds=2, gram=xs @ xs.T, tol=1e-11)
        np.testing.assert_allclose(via_gram.outputs, rs.outputs, atol=1e-9)


def test_exact_lam_out_of_range_for_the_scale():
    x, t = problem(1, 10, 3, 3)
    with pytest.raises(ValueError, match="lam = .* out of range"):
        sd.exact_outputs(t, lam=1e-300, num_rounds=1, features=x * 1e150)
    with pytest.raises(ValueError, match="lam = .* out of range"):
        sd.exact_outputs(t, lam=1e300, num_rounds=1, features=x * 1e-10)


def test_exact_predict_and_gram_bad_input_is_clear():
    x, t = problem(1, 10, 3, 3)
    g = x @ x.T
    with pytest.raises(ValueError, match="coef must be a rectangular array"):
        sd.exact_predict([[[0.0, 1.0]], [[1.0]]], test_gram=np.zeros((2, 1)))
    with pytest.raises(TypeError, match="coef must be real numbers, got a bool"):
        sd.exact_predict(np.zeros((10, 3), dtype=bool), test_gram=np.zeros((2, 10)))
    with pytest.raises(ValueError, match="test_features must be a 2-D"):
        sd.exact_predict(np.zeros((10, 3)), test_features=np.zeros(3), features=x)
    with pytest.raises(ValueError, match="test_gram must be a rectangular array"):
        sd.exact_predict(np.zeros((10, 3)), test_gram=[[0.0] * 10, [0.0]])
    with pytest.raises(TypeError, match="gram must be real numbers, got a bool"):
        sd.exact_outputs(t, lam=0.1, num_rounds=1, gram=g > 0)
    with pytest.raises(ValueError, match="targets must be a rectangular"):
        sd.exact_outputs([[1.0, 0.0], [1.0]], lam=0.1, num_rounds=1, gram=np.eye(2))
    with pytest.raises(TypeError, match="rounds must be integers.*bool"):
        sd.exact_outputs(t, lam=0.1, rounds=[0, True], gram=g)


def test_solver_names_and_coefficient_messages():
    x, t = problem(1, 10, 3, 3)
    with pytest.raises(ValueError, match="solver must be one of"):
        sd.exact_outputs(t, lam=0.1, num_rounds=1, gram=x @ x.T, solver=["lbfgs"])
    with pytest.raises(ValueError, match="on_failure must be"):
        sd.exact_outputs(t, lam=0.1, num_rounds=1, gram=x @ x.T, on_failure=["raise"])
    with pytest.raises(ValueError, match=r"test_gram must be .*N = 10 \(the instances of result_or_coef\)"):
        sd.exact_predict(np.zeros((1, 10, 3)), test_gram=np.zeros((2, 6)))


# --------------------------------------------------------------------------
# Issue 10: scale-free certificate, raw features, intercept
# --------------------------------------------------------------------------


def raw_digits(n=400):
    sk = pytest.importorskip("sklearn.datasets")
    x, y = sk.load_digits(return_X_y=True)
    return x[:n].astype(float), np.eye(10)[y[:n]]


@pytest.mark.parametrize("lam", [1e-6, 1e-3, 1.0])
def test_raw_pixels_converge_with_defaults(lam):
    # raw pixel values 0..16: the fixed-point residual alone could not certify small lam here
    x, t = raw_digits()
    res = sd.exact_outputs(t, lam=lam, num_rounds=1, features=x)
    assert bool(res.converged[0]) and int(res.iterations[0]) <= 200
    assert float(res.residuals[0]) <= 1e-9 or float(res.kkt[0]) <= sd.exact.DEFAULT_RTOL
    # independent stationarity check in the primal weights (jax.grad of the plain objective): the
    # gradient is small next to its regularisation term (the L-BFGS of before stopped at 0.5 at lam 1e-6).
    # These are the weights implied by the outputs (W = A^T X), whose gradient is the solver's own
    # gradient amplified by the condition number H / lam (~1e6 at lam 1e-6 on raw pixels): measured
    # 1.4e-4 relative at lam 1e-6 while the certified relative weight error (kkt) is 5e-8
    w = weights_from_coef(res.coef, x)[0]
    g = np.asarray(jax.grad(primal)(jnp.asarray(w), x, t, lam))
    assert np.linalg.norm(g) <= 1e-3 * lam * np.linalg.norm(w)
    # and the outputs against an independent tight solve (sklearn newton-cg at tol 1e-14, C = 1/(lam N))
    lr = pytest.importorskip("sklearn.linear_model")
    ref = lr.LogisticRegression(C=1 / (lam * len(t)), fit_intercept=False, tol=1e-14, max_iter=10_000)
    ref = ref.set_params(solver="newton-cg").fit(x, t.argmax(1))
    np.testing.assert_allclose(ref.predict_proba(x), np.asarray(res.outputs[0]), atol=1e-9)
    np.testing.assert_allclose(softmax_np(x @ w.T), np.asarray(res.outputs[0]), atol=1e-9)


@pytest.mark.parametrize("scale", [1e-3, 1e3])
def test_rescaled_features_converge_and_certificate_bounds_the_error(scale):
    x, t = raw_digits(300)
    x = x / 16.0
    lam = 1e-3
    res = sd.exact_outputs(t, lam=lam, num_rounds=1, features=scale * x)
    assert bool(res.converged[0]) and int(res.iterations[0]) <= 200
    # independent reference: sklearn at C = 1/(lam N), very tight
    lr = pytest.importorskip("sklearn.linear_model")
    ref = lr.LogisticRegression(C=1 / (lam * len(t)), fit_intercept=False, tol=1e-14, max_iter=10_000)
    ref = ref.set_params(solver="newton-cg").fit(scale * x, t.argmax(1))
    err = np.abs(ref.predict_proba(scale * x) - np.asarray(res.outputs[0])).max()
    assert err <= max(float(res.error_bounds[0]), 1e-9) + 1e-10


def test_kkt_is_scale_free_and_reported_when_unconverged():
    x, t = problem(5, 40, 6, 3)
    a = sd.exact_outputs(t, lam=1e-3, num_rounds=2, features=x, tol=1e-300, rtol=1e-300, max_iter=3, on_failure="flag")
    # the same problem in other units: X -> 2^10 X, lam -> 2^20 lam (identical iterates, exact arithmetic)
    b = sd.exact_outputs(
        t,
        lam=1e-3 * 2.0**20,
        num_rounds=2,
        features=x * 2.0**10,
        tol=1e-300,
        rtol=1e-300,
        max_iter=3,
        on_failure="flag",
    )
    np.testing.assert_allclose(a.kkt, b.kkt, rtol=1e-12)
    np.testing.assert_allclose(a.error_bounds, b.error_bounds, rtol=1e-12)
    with pytest.raises(RuntimeError, match=r"kkt \[.*standardise"):
        sd.exact_outputs(t, lam=1e-3, num_rounds=1, features=x, max_iter=1)


@pytest.mark.parametrize("k", [2, 3])
def test_intercept_equals_sklearn(k):
    lr = pytest.importorskip("sklearn.linear_model")
    rng = np.random.default_rng(k)
    n, d = 70, 4
    x = rng.normal(size=(n, d)) + 2.0
    y = rng.integers(0, k, n)
    lam = 1e-2
    c = (2.0 if k == 2 else 1.0) / (lam * n)
    ref = lr.LogisticRegression(C=c, tol=1e-12, max_iter=10_000, solver="newton-cg").fit(x, y)
    res = sd.exact_outputs(np.eye(k)[y], lam=lam, num_rounds=1, features=x, fit_intercept=True)
    np.testing.assert_allclose(res.outputs[0], ref.predict_proba(x), atol=1e-8)
    assert np.isinf(float(res.error_bounds[0]))
    # new points: from features, from the test-train Gram and through exact_predict
    xt = rng.normal(size=(9, d)) + 2.0
    p = sd.predictor(np.eye(k)[y], lam=lam, features=x, model="exact", fit_intercept=True)
    np.testing.assert_allclose(p.test_outputs(rounds=0, test_features=xt)[0], ref.predict_proba(xt), atol=1e-8)
    np.testing.assert_allclose(sd.exact_predict(res, test_gram=xt @ x.T)[0], ref.predict_proba(xt), atol=1e-8)
    pg = sd.predictor(np.eye(k)[y], lam=lam, gram=x @ x.T, model="exact", fit_intercept=True)
    np.testing.assert_allclose(pg.test_outputs(rounds=0, test_gram=xt @ x.T)[0], ref.predict_proba(xt), atol=1e-8)


def test_rtol_and_fit_intercept_bad_input_named():
    x, t = problem(6, 12, 3, 3)
    for bad in (-1e-3, 1.0, np.nan):
        with pytest.raises(ValueError, match="rtol"):
            sd.exact_outputs(t, lam=1e-2, num_rounds=1, features=x, rtol=bad)
    with pytest.raises(ValueError, match="rtol"):
        sd.exact_outputs(t, lam=1e-2, num_rounds=1, features=x, rtol=[1e-13])
    with pytest.raises(TypeError, match="rtol"):
        sd.exact_outputs(t, lam=1e-2, num_rounds=1, features=x, rtol=True)
    with pytest.raises(TypeError, match="fit_intercept"):
        sd.exact_outputs(t, lam=1e-2, num_rounds=1, features=x, fit_intercept="yes")


# ---------------------------------------------------------------- the certificate covers the bias
SOLVER_NAMES = ("auto", "newton-cg", "lbfgs")


def full_residual(x, t, p, bias, lam):
    """Stationarity of CE + L2 with an unregularised bias, from the outputs alone (independent of the solver).

    The weights implied by the outputs are ``X^T (T - P) / (N lam)``; their
    logits on the training points plus the bias must give back ``P``, and the
    bias (``None``: no intercept) is stationary when ``sum_i (p_i - t_i) = 0``.
    With a bias the weights are those of the centred features (the bias takes
    the mean), ``X_c^T A``: the same as ``X^T A`` once ``sum_i A_i = 0``, but
    not inflated by ``X^T 1 (sum_i A_i) ~ bias gap / lam`` before.
    """
    a = (t - p) / (len(t) * lam)
    if bias is None:
        logits = x @ (x.T @ a)
    else:
        logits = x @ ((x - x.mean(axis=0)).T @ a) + bias
    back = np.exp(logits - logits.max(axis=1, keepdims=True))
    back /= back.sum(axis=1, keepdims=True)
    gap = np.max(np.abs(p - back))
    return gap if bias is None else max(gap, np.max(np.abs(np.mean(p - t, axis=0))))


@pytest.mark.parametrize("solver", SOLVER_NAMES)
@pytest.mark.parametrize("const", [1.0, 0.0])
def test_intercept_of_constant_features_is_the_label_mean(solver, const):
    # Constant (or zero) features: the logits are the bias alone, so the optimum outputs are the
    # label frequencies (30/10). The certificate once ignored the bias: [0.5, 0.5], converged=True.
    t = np.eye(2)[np.array([0] * 30 + [1] * 10)]
    res = sd.exact_outputs(
        t, lam=1e-2, features=np.full((40, 3), const), num_rounds=1, fit_intercept=True, solver=solver
    )
    np.testing.assert_allclose(res.outputs[0], np.tile([0.75, 0.25], (40, 1)), atol=1e-9)
    assert bool(res.converged[0])


@pytest.mark.parametrize("solver", ["auto", "newton-cg", "lbfgs"])
def test_intercept_at_tiny_lam_matches_sklearn(solver):
    # lam = 1e-8 on unit-scale features, random labels: once an intercept of 3.5e9 and every
    # probability 1 reported as converged. Reference: scikit-learn, C = 2 / (lam N) for its binary
    # weight vector (the difference of our two class weights). The residual's float64 floor here
    # (gradient roundoff / lam) is 1e-10 to 1e-7 depending on the summation order, i.e. on the instance
    # count the solver pads to (4 of 40 seeds miss tol = 1e-9 padded to 32 rows, 1 of 40 unpadded), so
    # the answer is checked whether or not the round reports convergence.
    lr = pytest.importorskip("sklearn.linear_model")
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(30, 2)), rng.integers(0, 2, 30)
    lam = 1e-8
    ref = lr.LogisticRegression(C=2 / (lam * 30), tol=1e-14, max_iter=100_000, solver="newton-cg").fit(x, y)
    res = sd.exact_outputs(
        np.eye(2)[y], lam=lam, features=x, num_rounds=1, fit_intercept=True, solver=solver, on_failure="flag"
    )
    assert float(res.residuals[0]) <= 1e-7
    np.testing.assert_allclose(res.outputs[0], ref.predict_proba(x), atol=1e-8)
    np.testing.assert_allclose(res.intercepts[0, 1] - res.intercepts[0, 0], ref.intercept_[0], rtol=1e-6)


def test_unreachable_tolerance_is_named_not_nan():
    # lam = 1e-10: the residual's float64 floor (gradient roundoff / lam) is above tol. The solver
    # must stop with a finite answer and say why, not return NaN or advise rescaling unit features.
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(30, 2)), rng.integers(0, 2, 30)
    for solver in ("auto", "newton-cg"):
        with pytest.raises(RuntimeError, match="roundoff floor"):
            sd.exact_outputs(np.eye(2)[y], lam=1e-10, features=x, num_rounds=1, fit_intercept=True, solver=solver)
        res = sd.exact_outputs(
            np.eye(2)[y], lam=1e-10, features=x, num_rounds=1, fit_intercept=True, solver=solver, on_failure="flag"
        )
        assert np.all(np.isfinite(res.outputs)) and np.all(np.isfinite(res.intercepts))
        assert not bool(res.converged[0]) and res.iterations[0] < 1000


@given(
    seed=st.integers(0, 2**31 - 1),
    shape=st.sampled_from([(12, 1, 2), (30, 3, 3)]),  # few shapes: one compilation each per solver
    log_lam=st.floats(-10, 0),
    intercept=st.booleans(),
    solver=st.sampled_from(SOLVER_NAMES),
    const=st.booleans(),
)
@example(seed=0, shape=(12, 1, 2), log_lam=-2.0, intercept=True, solver="auto", const=True)
def test_converged_means_the_full_kkt_condition_holds(seed, shape, log_lam, intercept, solver, const):
    # converged=True is a certificate: with rtol=0 it is the residual alone, and the residual computed
    # here from the outputs (fixed point of the weights and stationarity of the bias) must be within
    # tol. With an intercept the reported bias folds in the feature mean with the solver's own weights
    # rather than the implied ones, which moves the outputs by at most the residual again: 2 tol.
    # Recomputed from the outputs, the fixed-point gap carries their float64 roundoff times the Gram
    # over lam (about eps max|x|^2 / lam); that much slack is allowed: strict at usual lam, and at
    # tiny lam the bias gap (mean(p - t), no 1/lam) is still checked to eps.
    n, d, k = shape
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)) + rng.normal(size=d)  # not centred: the bias matters
    if const:  # constant features: the logits are the bias alone
        x = np.ones((n, d))
    t = np.eye(k)[rng.integers(0, k, n)]
    lam, tol = 10.0**log_lam, 1e-9
    res = sd.exact_outputs(
        t, lam=lam, features=x, num_rounds=1, fit_intercept=intercept, solver=solver, rtol=0.0, on_failure="flag"
    )
    assert np.all(np.isfinite(res.outputs))
    if bool(res.converged[0]):
        bias = res.intercepts[0] if intercept else None
        roundoff = 10 * np.finfo(float).eps * np.max(np.sum(x * x, axis=1)) / lam
        assert full_residual(x, t, res.outputs[0], bias, lam) <= (2 if intercept else 1) * tol + roundoff + 1e-15
        if intercept:
            assert np.max(np.abs(np.mean(res.outputs[0] - t, axis=0))) <= tol


def test_exact_predict_takes_the_intercepts_of_bare_coefficients():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(40, 3)) + 1.0, rng.integers(0, 3, 40)
    xt = rng.normal(size=(7, 3))
    res = sd.exact_outputs(np.eye(3)[y], lam=1e-2, features=x, num_rounds=2, fit_intercept=True)
    # independent: softmax of X_test X^T A + b, written out
    logits = np.einsum("td,nd,rnk->rtk", xt, x, res.coef) + res.intercepts[:, None, :]
    want = np.exp(logits - logits.max(-1, keepdims=True))
    want /= want.sum(-1, keepdims=True)
    np.testing.assert_allclose(sd.exact_predict(res, test_features=xt, features=x), want, atol=1e-12)
    got = sd.exact_predict(res.coef, intercepts=res.intercepts, test_features=xt, features=x)
    np.testing.assert_allclose(got, want, atol=1e-12)
    got1 = sd.exact_predict(res.coef[1], intercepts=res.intercepts[1], test_gram=xt @ x.T)
    np.testing.assert_allclose(got1, want[1], atol=1e-12)
    with pytest.raises(ValueError, match="intercepts must have shape"):
        sd.exact_predict(res.coef, intercepts=res.intercepts[0], test_features=xt, features=x)
    with pytest.raises(ValueError, match="ExactResult carries its own"):
        sd.exact_predict(res, intercepts=res.intercepts, test_features=xt, features=x)


def test_a_late_round_reports_the_convergence_of_its_chain():
    # round r is trained on round r - 1's outputs: converged[r] is the AND of every round's own measures
    x, t = problem(0, 40, 4, 3)
    kw = dict(lam=1e-5, features=x, max_iter=5, solver="newton-cg", on_failure="flag")
    full = sd.exact_outputs(t, num_rounds=4, **kw)
    own = (full.residuals <= sd.exact.DEFAULT_TOL) | (full.kkt <= sd.exact.DEFAULT_RTOL)
    assert not own[0] and own[-1]  # the premise: round 0 misses, the last one reaches tol on its own
    np.testing.assert_array_equal(full.converged, np.logical_and.accumulate(own))
    late = sd.exact_outputs(t, rounds=[3], **kw)
    assert not late.converged[0]
    with pytest.raises(RuntimeError, match=r"round\(s\) \[0"):
        sd.exact_outputs(t, rounds=[3], **{**kw, "on_failure": "raise"})
    # the error names the round that missed (0), counts the three that follow it, and does not call them
    # stalled: they stopped before max_iter because they met the tolerance on their own
    kw6 = {**kw, "max_iter": 6, "on_failure": "raise"}
    with pytest.raises(RuntimeError) as info:
        sd.exact_outputs(t, num_rounds=4, **kw6)
    assert "in round(s) [0] within" in str(info.value) and "3 later round(s)" in str(info.value)
    assert "stopped before max_iter" not in str(info.value)


@pytest.mark.parametrize("fit_intercept", [False, True])
def test_kernel_started_at_an_optimum_stays_there(fit_intercept):
    """init_coef / init_intercepts: a round started from its own optimum's dual coefficients needs no work.

    The start is W = A^T X (plus the bias): the same function as the fit it came from, so the solver
    finds it stationary at once and returns the same outputs (and a fit from zero agrees with both).
    """
    from sdtheory.exact import exact_phi_core, solver_features

    rng = np.random.default_rng(5)
    n, d, k = 40, 4, 3
    x = rng.standard_normal((n, d)) + 1.0
    t = jnp.asarray(np.eye(k)[rng.integers(0, k, n)])
    phi = solver_features(features=jnp.asarray(x))
    lam = jnp.asarray(1e-2)
    opts = dict(loss="ce", tol=1e-10, solver="newton-cg", fit_intercept=fit_intercept)
    cold = exact_phi_core(phi, t, lam, 1, **opts)
    warm = exact_phi_core(phi, t, lam, 1, init_coef=cold.coef[0], init_intercepts=cold.intercepts[0], **opts)
    assert bool(warm.converged[0]) and int(warm.iterations[0]) <= 1
    np.testing.assert_allclose(np.asarray(warm.outputs), np.asarray(cold.outputs), rtol=0, atol=1e-9)
    logits = x @ (np.asarray(cold.coef[0]).T @ x).T + np.asarray(cold.intercepts[0])  # by NumPy
    p = np.exp(logits - logits.max(1, keepdims=True))
    np.testing.assert_allclose(np.asarray(warm.outputs[0]), p / p.sum(1, keepdims=True), rtol=0, atol=1e-9)


def test_float32_start_on_large_features_reaches_the_float64_optimum():
    # features with N d K >= START32_MIN_WORK: solver="auto" starts with whole float32 Newton steps. Its outputs are
    # the float64 solver's ("newton-cg", no float32 at all) and a fixed point checked in NumPy; max_iter=0 from
    # a fit returns that start unrounded
    from sdtheory._src.exact import START32_MIN_WORK
    from sdtheory.exact import solver_features
    from sdtheory.refine import exact_fit

    n, d, k, lam = 1800, 120, 10, 1e-4
    assert n * d * k >= START32_MIN_WORK  # unpadded (the kernel below) and padded (the public face)
    x, t = problem(3, n, d, k)
    x = x + np.eye(k)[t.argmax(1)] @ np.random.default_rng(4).normal(size=(k, d))  # separable-ish classes
    auto = sd.exact_outputs(t, lam=lam, num_rounds=1, features=x)
    plain = sd.exact_outputs(t, lam=lam, num_rounds=1, features=x, solver="newton-cg")
    assert bool(auto.converged[0]) and bool(plain.converged[0])
    p = np.asarray(auto.outputs[0])
    np.testing.assert_allclose(p, np.asarray(plain.outputs[0]), rtol=0, atol=1e-9)
    np.testing.assert_allclose(softmax_np((x @ x.T) @ (t - p) / (n * lam)), p, rtol=0, atol=1e-8)
    phi = solver_features(features=jnp.asarray(x))
    opts = dict(tol=1e-10, solver="auto")
    fit = exact_fit(phi, jnp.asarray(lam), loss="ce", max_iter=1000, **opts)(jnp.asarray(t))
    again = exact_fit(phi, jnp.asarray(lam), loss="ce", max_iter=0, **opts)(jnp.asarray(t), fit)
    w = np.asarray(fit.details.coef).T @ x  # the start's weights W = A^T X, by NumPy (float32 would leave ~1e-7)
    np.testing.assert_allclose(np.asarray(again.outputs), softmax_np(x @ w.T), rtol=0, atol=1e-12)
