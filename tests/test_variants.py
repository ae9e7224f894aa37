"""Distillation variants (temperature, lam schedule, mixing, hard labels) against independent chains.

The references are computed here from scratch: the closed form by a direct
``N x N`` solve per round (``S = G (G + K N lam I)^{-1}`` with NumPy), the
exact model by chaining single exact rounds (one round of the solver is the
reference for one round; its own tests compare it with SciPy).
"""

import jax
import numpy as np
import pytest

import sdtheory as sd

N, K, D = 24, 3, 6
RNG = np.random.default_rng(13)
X = RNG.normal(size=(N, D))
G = X @ X.T
LABELS = RNG.integers(0, K, N)
Y = np.eye(K)[LABELS]
LAM = 0.05


def _filter(lam):
    return G @ np.linalg.inv(G + K * N * lam * np.eye(N))


def _closed_chain(targets, lams, teacher_fn):
    """Direct chain of one-round linearised solves; ``teacher_fn(P) -> next targets``."""
    out, t = [], targets
    for lam in lams:
        p = 1.0 / K + _filter(lam) @ (t - 1.0 / K)
        out.append(p)
        t = teacher_fn(p)
    return np.stack(out)


def _exact_chain(targets, lams, teacher_fn):
    out, t = [], targets
    for lam in lams:
        p = np.asarray(sd.exact_outputs(t, lam=lam, num_rounds=1, features=X).outputs[0])
        out.append(p)
        t = teacher_fn(p)
    return np.stack(out)


def _softmax(z):
    return np.asarray(jax.nn.softmax(z, axis=-1))


def _onehot_argmax(p):
    return np.eye(K)[np.argmax(p, axis=-1)]


@pytest.mark.parametrize("tau", [0.3, 1.0, 4.0])
def test_closed_temperature_rescales_and_keeps_predictions(tau):
    rounds = 5
    out = sd.sd_outputs(Y, lam=LAM, num_rounds=rounds, gram=G, temperature=tau)
    s, u = np.linalg.eigh(G)
    q = s / (s + K * N * LAM)
    ref = np.stack([1.0 / K + tau ** (-r) * (u * q ** (r + 1)) @ u.T @ (Y - 1.0 / K) for r in range(rounds)])
    np.testing.assert_allclose(out, ref, atol=1e-12)
    plain = np.stack([1.0 / K + (u * q ** (r + 1)) @ u.T @ (Y - 1.0 / K) for r in range(rounds)])
    np.testing.assert_array_equal(np.argmax(out, -1), np.argmax(plain, -1))
    # the chain of linearised softened targets gives the same numbers
    chain = _closed_chain(Y, [LAM] * rounds, lambda p: 1.0 / K + (p - 1.0 / K) / tau)
    np.testing.assert_allclose(out, chain, atol=1e-12)


def test_closed_lam_schedule_is_a_product_of_filters():
    lams = [0.05, 0.2, 0.01, 0.07]
    out = sd.sd_outputs(Y, lam_schedule=lams, num_rounds=4, features=X)
    np.testing.assert_allclose(out, _closed_chain(Y, lams, lambda p: p), atol=1e-12)
    prod = np.eye(N)
    for r, lam in enumerate(lams):
        prod = _filter(lam) @ prod
        np.testing.assert_allclose(out[r], 1.0 / K + prod @ (Y - 1.0 / K), atol=1e-12)


@pytest.mark.parametrize("xi,tau", [(0.0, 1.0), (0.4, 1.0), (0.7, 2.0), (1.0, 0.5)])
def test_closed_mixing_with_temperature(xi, tau):
    out = sd.sd_outputs(Y, lam=LAM, rounds=[0, 1, 3, 6], gram=G, xi=xi, temperature=tau)
    chain = _closed_chain(Y, [LAM] * 7, lambda p: xi * (1.0 / K + (p - 1.0 / K) / tau) + (1 - xi) * Y)
    np.testing.assert_allclose(out, chain[[0, 1, 3, 6]], atol=1e-12)


def test_closed_hard_student_and_its_test_outputs():
    xi = 0.6
    lams = [0.05, 0.03, 0.08]
    out = sd.sd_outputs(Y, lam_schedule=lams, num_rounds=3, features=X, hard=True, xi=xi)
    chain = _closed_chain(Y, lams, lambda p: xi * _onehot_argmax(p) + (1 - xi) * Y)
    np.testing.assert_allclose(out, chain, atol=1e-12)
    # test outputs: 1/K + G_test (T_r - P_r) / (K N lam_r) with the chained targets
    xt = RNG.normal(size=(5, D))
    pr = sd.predictor(Y, lam_schedule=lams, features=X, hard=True, xi=xi)
    got = pr.test_outputs(num_rounds=3, test_features=xt)
    t = Y
    for r, lam in enumerate(lams):
        ref = 1.0 / K + xt @ X.T @ (t - chain[r]) / (K * N * lam)
        np.testing.assert_allclose(got[r], ref, atol=1e-12)
        t = xi * _onehot_argmax(chain[r]) + (1 - xi) * Y


def test_closed_variant_test_outputs_match_the_chain():
    tau, xi = 2.0, 0.5
    xt = RNG.normal(size=(4, D))
    pr = sd.predictor(Y, lam=LAM, features=X, temperature=tau, xi=xi)
    got = pr.test_outputs(rounds=[0, 2], test_features=xt)
    chain = _closed_chain(Y, [LAM] * 3, lambda p: xi * (1.0 / K + (p - 1.0 / K) / tau) + (1 - xi) * Y)
    t, refs = Y, []
    for r in range(3):
        refs.append(1.0 / K + xt @ X.T @ (t - chain[r]) / (K * N * LAM))
        t = xi * (1.0 / K + (chain[r] - 1.0 / K) / tau) + (1 - xi) * Y
    np.testing.assert_allclose(got, np.stack(refs)[[0, 2]], atol=1e-12)


def test_exact_temperature_equals_chained_single_rounds():
    tau = 2.5
    res = sd.exact_outputs(Y, lam=LAM, num_rounds=3, features=X, temperature=tau)
    chain = _exact_chain(Y, [LAM] * 3, lambda p: _softmax(np.log(p) / tau))
    np.testing.assert_allclose(res.outputs, chain, atol=1e-7)
    # unlike the linearised model, temperature changes the exact outputs beyond a rescaling
    plain = sd.exact_outputs(Y, lam=LAM, num_rounds=3, features=X)
    assert np.max(np.abs(res.outputs[2] - plain.outputs[2])) > 1e-3


def test_exact_schedule_mixing_and_hard_labels_equal_chained_single_rounds():
    lams = [0.05, 0.02, 0.1]
    xi = 0.3
    res = sd.exact_outputs(Y, lam_schedule=lams, num_rounds=3, features=X, xi=xi)
    np.testing.assert_allclose(res.outputs, _exact_chain(Y, lams, lambda p: xi * p + (1 - xi) * Y), atol=1e-7)
    hard = sd.exact_outputs(Y, lam_schedule=lams, num_rounds=3, features=X, hard=True)
    np.testing.assert_allclose(hard.outputs, _exact_chain(Y, lams, _onehot_argmax), atol=1e-7)
    # dual coefficients use each round's own lam: test outputs from the predictor equal softmax(G_test A_r)
    xt = RNG.normal(size=(4, D))
    pr = sd.predictor(Y, lam_schedule=lams, features=X, model="exact", hard=True)
    np.testing.assert_allclose(
        pr.test_outputs(num_rounds=3, test_features=xt),
        sd.exact_predict(hard, test_features=xt, features=X),
        atol=1e-12,
    )


def test_plain_defaults_are_unchanged():
    np.testing.assert_array_equal(
        sd.sd_outputs(Y, lam=LAM, num_rounds=3, gram=G, temperature=1.0, xi=1.0),
        sd.sd_outputs(Y, lam=LAM, num_rounds=3, gram=G),
    )


@pytest.mark.parametrize(
    "kwargs,name",
    [
        (dict(temperature=0.0), "temperature"),
        (dict(temperature=-1.0), "temperature"),
        (dict(temperature=float("inf")), "temperature"),
        (dict(temperature=float("nan")), "temperature"),
        (dict(xi=1.5), "xi"),
        (dict(xi=-0.1), "xi"),
        (dict(hard="yes"), "hard"),
        (dict(lam=None, lam_schedule=[0.1, 0.1]), "lam_schedule"),
        (dict(lam=None, lam_schedule=[0.1, 0.1, 0.1, 0.1]), "lam_schedule"),
        (dict(lam=None, lam_schedule=[0.1, -0.1, 0.1]), "lam_schedule"),
        (dict(lam=None, lam_schedule=[[0.1, 0.1, 0.1]]), "lam_schedule"),
        (dict(lam=None, lam_schedule=[0.1, float("nan"), 0.1]), "lam_schedule"),
        (dict(lam_schedule=[0.1, 0.1, 0.1]), "lam_schedule"),
        (dict(lam=[0.1, 0.1, 0.1]), "lam"),
    ],
)
@pytest.mark.parametrize("fn", ["closed", "exact"])
def test_bad_variant_arguments_are_named(kwargs, name, fn):
    args = dict(lam=LAM, num_rounds=3, features=X)
    args.update(kwargs)
    call = sd.sd_outputs if fn == "closed" else sd.exact_outputs
    with pytest.raises((ValueError, TypeError), match=name):
        call(Y, **args)


def test_engine_variants():
    from sdtheory import montecarlo as mc

    base = dict(num_classes=3, per_class=6, c=0.5, d=0.1, lam=1e-2, num_rounds=3, methods=("sd_closed", "sd_exact"))
    etas = [0.2, 0.5]
    plain = mc.run_grid(mc.make_config(**base), etas, num_seeds=2, seed=3)
    hot = mc.run_grid(mc.make_config(**{**base, "methods": ("sd_closed",)}, temperature=3.0), etas, num_seeds=2, seed=3)
    # linearised: temperature never changes a prediction
    np.testing.assert_array_equal(hot.methods["sd_closed"].num_correct, plain.methods["sd_closed"].num_correct)
    # xi = 0 refits the given labels every round: every round is the teacher
    fixed = mc.run_grid(mc.make_config(**base, xi=0.0, hard=True), etas, num_seeds=2, seed=3)
    for m in ("sd_closed", "sd_exact"):
        nc = np.asarray(fixed.methods[m].num_correct)
        np.testing.assert_array_equal(nc, np.broadcast_to(nc[..., :1], nc.shape))
        np.testing.assert_array_equal(nc[..., 0], np.asarray(plain.methods[m].num_correct)[..., 0])
    with pytest.raises(ValueError, match="temperature"):
        mc.make_config(**base, temperature=0.0)
