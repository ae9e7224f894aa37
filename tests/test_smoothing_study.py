"""The label-smoothing study (simulations/smoothing.py, sdtheory.smoothing_study) on a tiny subset.

Numbers are checked against independent computations: the smoothed teacher
by SciPy's L-BFGS on the primal objective, the linearised invariances by a
direct eigendecomposition, the Beta fixed point by re-ranking with NumPy.
"""

import json

import jax
import numpy as np
import pytest
from _scripts import load_script, read_csv

import sdtheory as sd
from sdtheory import data as D
from sdtheory import experiments as E
from sdtheory import io as sio
from sdtheory.smoothing import beta_smoothing_fixed_point_core

smoothing = load_script("smoothing")

TINY = [
    "--quick",
    "--kinds",
    "symmetric",
    "pair",
    "--rates",
    "0.4",
    "--eps",
    "0.3",
    "--taus",
    "2",
    "--num-rounds",
    "2",
    "--beta-max-iter",
    "5",
]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("sm")
    res = smoothing.main(TINY + ["--out", str(out)])
    return out, res


def test_end_to_end_files_rows_and_reproducibility(tiny_run, tmp_path):
    out, res = tiny_run
    for name in smoothing.OUTPUTS:
        assert (out / name).is_file(), name
    assert set(sio.verify_manifest(out)["files"]) == {p.name for p in out.iterdir()} - {"manifest.json"}
    rows = read_csv(out / "smoothing.csv")
    # per cell, exact: teacher 1 + SD 2 + LS 1 + Beta one/fixed 2 + SD tau 2 + PLL 1; closed: LS 1 + tau 2
    assert len(rows) == 2 * 12
    assert all(r["converged"] == "true" for r in rows)
    assert {r["method"] for r in rows} == set(sd.smoothing_study.STUDY_METHODS)
    # same seed: the same CSV, byte for byte; another seed: other labels
    smoothing.main(TINY + ["--out", str(tmp_path / "a"), "--no-figures"])
    assert (tmp_path / "a" / "smoothing.csv").read_bytes() == (out / "smoothing.csv").read_bytes()
    smoothing.main(TINY + ["--out", str(tmp_path / "b"), "--no-figures", "--seed", "1"])
    assert (tmp_path / "b" / "smoothing.csv").read_bytes() != (out / "smoothing.csv").read_bytes()


def test_alpha_is_recorded_with_the_results(tiny_run):
    # the default alpha is Zhang & Sabuncu's 0.6: in the Beta rows of the CSV, the parameters and the summary
    out, res = tiny_run
    rows = read_csv(out / "smoothing.csv")
    beta = [r for r in rows if r["method"] in ("beta_one", "beta_fixed")]
    assert beta and all(float(r["alpha"]) == 0.6 for r in beta)
    assert all(np.isnan(float(r["alpha"])) for r in rows if r not in beta)
    summary = json.loads((out / "smoothing.json").read_text())
    assert summary["beta_fixed_point"]["alpha"] == 0.6
    assert json.loads((out / "smoothing.csv.meta.json").read_text())["metadata"]["parameters"]["alpha"] == 0.6
    assert "a = alpha = 0.6" in (out / "smoothing.md").read_text()
    # rows of two alphas are not averaged together
    other = [{**r, "alpha": 1.0} if r["method"] == "beta_one" else r for r in res["rows"]]
    with pytest.raises(ValueError, match="alpha"):
        sd.smoothing_study.aggregate(other)


def test_alpha_changes_only_the_beta_rows(tiny_run, tmp_path):
    out = tmp_path / "a1"
    smoothing.main(TINY + ["--alpha", "1", "--no-figures", "--out", str(out)])
    a06, a1 = read_csv(tiny_run[0] / "smoothing.csv"), read_csv(out / "smoothing.csv")
    assert len(a06) == len(a1)
    changed = set()
    for r, q in zip(a06, a1, strict=True):
        assert (r["kind"], r["method"], r["solver"], r["round"]) == (q["kind"], q["method"], q["solver"], q["round"])
        if r["method"] in ("beta_one", "beta_fixed"):
            assert float(q["alpha"]) == 1.0
            changed |= {r["method"] for c in ("confidence", "diversity") if r[c] != q[c]}
        else:
            assert r == q
    # the mix keeps more of the hard label: the Beta students' outputs differ
    assert changed == {"beta_one", "beta_fixed"}


def test_linearised_model_predicts_no_change(tiny_run):
    # uniform smoothing keeps the teacher's argmax and temperature keeps plain SD's (closed-form rows)
    rows = [r for r in read_csv(tiny_run[0] / "smoothing.csv") if r["solver"] == "closed_form"]
    assert rows and all(float(r["agree_ref"]) == 1.0 for r in rows)


def _primal_softmax(x, t, lam):
    """Minimise (1/N) sum CE(t_i, softmax(W x_i)) + lam/2 ||W||^2 with SciPy L-BFGS; return the outputs."""
    from scipy.optimize import minimize

    n, d = x.shape
    k = t.shape[1]

    def f(w):
        w = w.reshape(d, k)
        z = x @ w
        z = z - z.max(1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(1, keepdims=True)
        val = -np.sum(t * np.log(p)) / n + lam / 2 * np.sum(w**2)
        return val, (x.T @ ((p - t) / n) + lam * w).ravel()

    r = minimize(
        f, np.zeros(d * k), jac=True, method="L-BFGS-B", options={"gtol": 1e-12, "ftol": 1e-15, "maxiter": 20000}
    )
    z = x @ r.x.reshape(d, k)
    z = z - z.max(1, keepdims=True)
    return np.exp(z) / np.exp(z).sum(1, keepdims=True)


def test_smoothed_teacher_against_scipy(tiny_run):
    out, _ = tiny_run
    args = smoothing.parse_args(TINY)
    ds = smoothing.load_dataset(args)
    x, _ = D.make_features("standardized", ds.features, ds.test_features)
    rows = read_csv(out / "smoothing.csv")
    for r in rows:
        if r["solver"] != "exact" or r["method"] != "uniform":
            continue
        # rebuild the cell's given labels from the documented keys
        ki, ri = args.kinds.index(r["kind"]), 0  # one rate: index 0
        key = jax.random.fold_in(
            jax.random.fold_in(jax.random.fold_in(jax.random.fold_in(jax.random.key(0), 100), ki), ri), 0
        )
        fm = E.prepare_feature_map(x, x[:2], ds.labels, 10)
        C = sd.corruption_matrix(r["kind"], 10, 0.4)
        given = np.asarray(sd.sample_labels(key, ds.labels, C))
        eps = float(r["param"])
        t = (1 - eps) * np.eye(10)[given] + eps / 10
        p = _primal_softmax(np.asarray(x), t, fm.lam)
        assert float(r["lam"]) == pytest.approx(fm.lam, rel=1e-12)
        assert float(r["train_acc"]) == pytest.approx(np.mean(p.argmax(1) == ds.labels), abs=1e-12)
        assert float(r["realised_rate"]) == pytest.approx(np.mean(given != ds.labels), abs=1e-12)


def test_beta_smoothing_reaches_its_fixed_point():
    rng = np.random.default_rng(3)
    n, k, beta = 60, 3, 2.0
    x = rng.normal(size=(n, 5)) + 2.0 * np.eye(k)[rng.integers(0, k, n)] @ rng.normal(size=(k, 5))
    labels = rng.integers(0, k, n)
    g = x @ x.T
    lam = 0.05

    def fit(t):  # one linearised round by a direct solve
        return 1.0 / k + g @ np.linalg.solve(g + k * n * lam * np.eye(n), np.asarray(t) - 1.0 / k)

    teacher = fit(np.eye(k)[labels])
    key = jax.random.key(11)
    res = beta_smoothing_fixed_point_core(fit, teacher, key, labels, k, beta, max_iter=50)
    assert res.converged and 1 <= res.iterations < 50
    # independent re-ranking: the final model's ranking gives back the final targets
    draws = np.sort(np.asarray(jax.random.beta(key, beta, 1.0, (n,), dtype=float)))
    rank = np.argsort(np.argsort(res.outputs[np.arange(n), labels], kind="stable"), kind="stable")
    v = draws[rank]
    expected = np.where(np.eye(k)[labels] == 1, v[:, None], ((1 - v) / (k - 1))[:, None])
    np.testing.assert_allclose(res.targets, expected, atol=1e-15)
    # one refit from the teacher: the targets are rank-matched to the teacher
    one = beta_smoothing_fixed_point_core(fit, teacher, key, labels, k, beta, max_iter=1)
    rank0 = np.argsort(np.argsort(teacher[np.arange(n), labels], kind="stable"), kind="stable")
    np.testing.assert_allclose(one.targets[np.arange(n), labels], draws[rank0], atol=1e-15)
    assert one.iterations == 1


def test_bad_flags(capsys):
    for bad in (
        ["--eps", "1.0"],
        ["--eps", "-0.1"],
        ["--betas", "0"],
        ["--taus", "0"],
        ["--taus", "inf"],
        ["--num-rounds", "1"],
        ["--kinds", "uniform"],
        ["--alpha", "-0.1"],
        ["--alpha", "1.5"],
        ["--alpha", "nan"],
    ):
        with pytest.raises(SystemExit) as e:
            smoothing.main(bad)
        assert e.value.code == 2
        assert f"argument {bad[0]}" in capsys.readouterr().err


@pytest.mark.parametrize(
    "kw,name",
    [
        (dict(eps=[1.0]), "eps"),
        (dict(betas=[0.0]), "betas"),
        (dict(taus=[-1.0]), "taus"),
        (dict(taus=[np.nan]), "taus"),
        (dict(alpha=1.5), "alpha"),
        (dict(alpha=-0.1), "alpha"),
        (dict(alpha=np.nan), "alpha"),
    ],
)
def test_study_bad_arguments_are_named(kw, name):
    ds = D.Dataset(np.eye(4), np.array([0, 1, 0, 1]), 2, np.eye(4), np.array([0, 1, 0, 1]), "toy")
    args = dict(feature_map="identity", kinds=["symmetric"], rates=[0.0], num_seeds=1, num_rounds=2)
    args.update(dict(eps=[0.1], betas=[1.0], taus=[2.0]))
    args.update(kw)
    with pytest.raises(ValueError, match=name):
        sd.smoothing_study.run_smoothing_study(ds, **args)


def test_block_dataset_has_the_block_gram_in_expectation():
    ds = D.block_dataset(key=jax.random.key(0), num_classes=3, per_class=40, test_per_class=20, c=0.5, d=0.2, dim=4000)
    x = np.concatenate([ds.features, ds.test_features])
    y = np.concatenate([ds.labels, ds.test_labels])
    g = x @ x.T
    same = y[:, None] == y[None, :]
    off = ~np.eye(y.size, dtype=bool)
    # E <x_i, x_j> = 1[i = j](1 - c) + 1[same class](c - d) + d; held-out points share the class means
    assert np.mean(np.diag(g)) == pytest.approx(1.0, abs=0.05)
    assert np.mean(g[same & off]) == pytest.approx(0.5, abs=0.05)
    assert np.mean(g[~same]) == pytest.approx(0.2, abs=0.05)
    assert ds.labels.tolist() == [0] * 40 + [1] * 40 + [2] * 40 and ds.test_labels.size == 60
    with pytest.raises(ValueError, match="c"):
        D.block_dataset(key=jax.random.key(0), num_classes=3, per_class=4, test_per_class=2, c=0.2, d=0.5, dim=10)


def test_block_study_runs_through_the_script(tiny_run, tmp_path):
    # K = 10 and dimension 64: the shapes of the digits run, so its compiled programs are reused
    out = tmp_path / "blk"
    res = smoothing.main(
        TINY + ["--dataset", "block", "--block-classes", "10", "--block-dim", "64", "--no-figures", "--out", str(out)]
    )
    assert res["summary"]["dataset"].startswith("block(c=0.4, d=0.1)-quick")
    assert res["summary"]["exact_unconverged"] == 0
    assert all(r["agree_ref"] == 1.0 for r in res["rows"] if r["solver"] == "closed_form")
