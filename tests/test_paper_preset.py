"""``simulations/phase_diagram.py --preset paper`` and ``sdtheory.paper`` (SelfPLL's synthetic setting).

Expected values come from the reference's setting (K = 4, n = 500, lam = 1e-5,
c = 0.4, d = 0.1, epsilon = 0.05, ten models) and from NumPy computations
written out here, not from the code under test.
"""

import json
from pathlib import Path

import jax
import numpy as np
import pytest
from _scripts import load_script, read_csv

from sdtheory.block import sample_block_features
from sdtheory.noise import corruption_matrix, sample_labels
from sdtheory.paper import matched_feature_dim, paper_features, reference_perturbation_size
from sdtheory.theorems import min_rounds


@pytest.fixture(scope="module")
def script():
    return load_script("phase_diagram")


def _block_gram_np(k, n, c, d):
    cls = np.repeat(np.arange(k), n)
    same = cls[:, None] == cls[None, :]
    g = np.where(same, c, d).astype(float)
    np.fill_diagonal(g, 1.0)
    return g


def _dim_np(k, n, c, d, eps):
    """dim with E||X X^T - G||_F^2 = sum_ij (1 + G_ij^2)/dim equal to the reference's N(N-1) eps^2/3."""
    g = _block_gram_np(k, n, c, d)
    big_n = k * n
    return int(round(np.sum(1.0 + g**2) / (big_n * (big_n - 1) * eps**2 / 3.0)))


def test_preset_resolves_to_the_papers_parameters(script):
    _, a = script.parse_args(["--preset", "paper"])
    assert (a.classes, a.per_class, a.c, a.d, a.lam) == (4, 500, 0.4, 0.1, 1e-5)
    assert a.noise == "symmetric" and a.model == "exact"
    assert a.num_rounds == 10  # ten models: the teacher (round 0 = step 1) and rounds 1..9
    assert a.epsilon == 0.05
    assert script.preset_etas(a).tolist() == [0.1, 0.3, 0.5, 0.7]
    assert a.dim == _dim_np(4, 500, 0.4, 0.1, 0.05) == 1258
    assert a.out == str(Path("results") / "paper")


def test_explicit_flags_override_the_preset_and_dim_follows_the_size(script):
    _, a = script.parse_args(["--preset", "paper", "--per-class", "10", "--seeds", "1", "--epsilon", "0.1"])
    assert (a.per_class, a.seeds, a.epsilon, a.lam) == (10, 1, 0.1, 1e-5)
    assert a.dim == _dim_np(4, 10, 0.4, 0.1, 0.1)
    _, b = script.parse_args(["--preset", "paper", "--dim", "64"])
    assert b.dim == 64


def test_epsilon_without_the_preset_is_an_argparse_error(script, capsys):
    with pytest.raises(SystemExit) as exc:
        script.parse_args(["--epsilon", "0.05"])
    assert exc.value.code == 2
    assert "--epsilon" in capsys.readouterr().err


def test_no_preset_leaves_the_defaults_alone(script):
    _, a = script.parse_args([])
    assert a.preset is None and a.epsilon is None and a.dim is None
    assert (a.per_class, a.lam, a.num_rounds) == (100, 1e-4, 16)


def test_reference_perturbation_size_matches_a_sampled_uniform_perturbation():
    rng = np.random.default_rng(0)
    big_n, eps = 400, 0.05
    e = rng.uniform(-eps, eps, size=(big_n, big_n))
    np.fill_diagonal(e, 0.0)  # the reference resets the diagonal to 1
    assert np.linalg.norm(e) == pytest.approx(reference_perturbation_size(big_n, eps), rel=0.02)


@pytest.mark.parametrize("k,n,eps", [(4, 50, 0.05), (3, 40, 0.1)])
def test_perturbed_gram_is_symmetric_psd_with_the_references_deviation_size(k, n, eps):
    c, d = 0.4, 0.1
    assert matched_feature_dim(num_classes=k, per_class=n, c=c, d=d, epsilon=eps) == _dim_np(k, n, c, d, eps)
    target = eps * np.sqrt(k * n * (k * n - 1) / 3.0)
    g = _block_gram_np(k, n, c, d)
    devs = []
    for s in range(12):
        x, classes = paper_features(jax.random.PRNGKey(s), num_classes=k, per_class=n, c=c, d=d, epsilon=eps)
        x = np.asarray(x, dtype=np.float64)
        assert x.shape == (k * n, _dim_np(k, n, c, d, eps))
        assert np.array_equal(classes, np.repeat(np.arange(k), n))
        gram = x @ x.T
        assert np.array_equal(gram, gram.T)
        ev = np.linalg.eigvalsh(gram)
        assert ev.min() >= -1e-10 * ev.max()
        devs.append(np.linalg.norm(gram - g))
    # matched in expectation: the root-mean-square deviation within 8% of the reference's size; the shared
    # class means make single draws fluctuate more (each within 30% here)
    assert np.sqrt(np.mean(np.square(devs))) == pytest.approx(target, rel=0.08)
    assert all(abs(v / target - 1.0) < 0.3 for v in devs), devs


def test_bad_epsilon_names_the_argument():
    with pytest.raises(ValueError, match="epsilon"):
        matched_feature_dim(num_classes=4, per_class=10, c=0.4, d=0.1, epsilon=0.0)
    with pytest.raises(TypeError, match="epsilon"):
        reference_perturbation_size(10, "x")


TINY = [
    "--preset",
    "paper",
    "--per-class",
    "10",
    "--eta-min",
    "0.1",
    "--eta-max",
    "0.3",
    "--eta-steps",
    "2",
    "--seeds",
    "1",
    "--lam",
    "1e-2",
    "--num-rounds",
    "4",
    "--quiet",
]

COLUMNS = [
    "method",
    "eta",
    "seed",
    "round",
    "paper_step",
    "accuracy",
    "clean_accuracy",
    "noisy_accuracy",
    "all_correct",
    "converged",
    "rstar_linear",
    "rstar_exact",
]


def _run_tiny(script, tmp_path, monkeypatch, extra):
    drawn = {}
    real = script.paper_rounds_figure

    def spy(*args, **kwargs):
        drawn.update(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(script, "paper_rounds_figure", spy)
    out = tmp_path / "paper"
    assert script.main(TINY + extra + ["--out", str(out)]) == 0
    return out, drawn


def _check_tiny(out, drawn, methods):
    for name in ("paper.png", "paper.pdf", "paper.csv", "summary.json", "manifest.json"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "paper.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "paper.pdf").read_bytes()[:5] == b"%PDF-"
    rows = read_csv(out / "paper.csv")
    assert list(rows[0]) == COLUMNS
    # methods x 2 etas x (1 seed + mean) x 4 rounds
    assert len(rows) == len(methods) * 2 * 2 * 4
    assert {r["method"] for r in rows} == set(methods)
    assert {r["seed"] for r in rows} == {"0", "mean"}
    assert {float(r["eta"]) for r in rows} == {0.1, 0.3}
    for r in rows:
        assert int(r["paper_step"]) == int(r["round"]) + 1
        assert 0.0 <= float(r["accuracy"]) <= 1.0
    # with one seed the mean rows repeat the seed's rows
    seed_rows = [r for r in rows if r["seed"] == "0"]
    mean_rows = [r for r in rows if r["seed"] == "mean"]
    for a, b in zip(seed_rows, mean_rows, strict=True):
        assert float(a["accuracy"]) == float(b["accuracy"])
    # the r* in the CSV, the summary and the figure equal min_rounds computed here
    expect_lin, expect_exact = [], []
    for eta in (0.1, 0.3):
        C = np.asarray(corruption_matrix("symmetric", 4, eta))
        expect_lin.append(min_rounds(C, c=0.4, d=0.1, lam=1e-2, per_class=10))
        expect_exact.append(min_rounds(C, c=0.4, d=0.1, lam=1e-2, per_class=10, model="exact"))
    assert list(drawn["rstar_linear"]) == expect_lin
    assert list(drawn["rstar_exact"]) == expect_exact
    for r in rows:
        e = 0 if float(r["eta"]) == 0.1 else 1
        assert (int(r["rstar_linear"]), int(r["rstar_exact"])) == (expect_lin[e], expect_exact[e])
    s = json.loads((out / "summary.json").read_text())
    assert s["theory"]["rstar_linear_block_model"] == expect_lin
    assert s["theory"]["rstar_exact_block_model"] == expect_exact
    p = s["metadata"]["parameters"]
    assert (p["per_class"], p["num_rounds"], p["lam"], p["epsilon"], p["preset"]) == (10, 4, 1e-2, 0.05, "paper")
    assert p["dim"] == _dim_np(4, 10, 0.4, 0.1, 0.05)
    pert = s["perturbation"]
    assert pert["reference_expected_frobenius"] == pytest.approx(0.05 * np.sqrt(40 * 39 / 3.0))
    assert pert["measured_frobenius_per_seed"][0] == pytest.approx(pert["reference_expected_frobenius"], rel=0.3)


def test_tiny_preset_closed_form_end_to_end(script, tmp_path, monkeypatch):
    out, drawn = _run_tiny(script, tmp_path, monkeypatch, ["--model", "closed"])
    _check_tiny(out, drawn, ["sd_closed"])
    # the accuracies, recomputed: the seed's labels and features (its two keys), NumPy linear solves
    rows = {(r["eta"], r["round"]): r for r in read_csv(out / "paper.csv") if r["seed"] == "0"}
    k, n_per, lam = 4, 10, 1e-2
    classes = np.repeat(np.arange(k), n_per)
    n = classes.size
    label_key, feature_key = jax.random.split(jax.random.split(jax.random.PRNGKey(0), 1)[0])
    x = np.asarray(
        sample_block_features(feature_key, classes, c=0.4, d=0.1, dim=_dim_np(k, n_per, 0.4, 0.1, 0.05)),
        dtype=np.float64,
    )
    g = x @ x.T
    for eta in (0.1, 0.3):
        lab = np.asarray(sample_labels(label_key, classes, corruption_matrix("symmetric", k, eta)))
        cur = np.eye(k)[lab] - 1.0 / k
        for r in range(4):
            cur = g @ np.linalg.solve(g + k * n * lam * np.eye(n), cur)
            srt = np.sort(cur, axis=1)
            own = cur[np.arange(n), classes]
            acc = np.mean((own == srt[:, -1]) & (srt[:, -1] - srt[:, -2] > 1e-10))
            assert float(rows[(repr(eta), str(r))]["accuracy"]) == pytest.approx(acc, abs=1e-12)


@pytest.mark.slow
def test_tiny_preset_exact_end_to_end(script, tmp_path, monkeypatch):
    out, drawn = _run_tiny(script, tmp_path, monkeypatch, [])
    _check_tiny(out, drawn, ["sd_exact", "sd_closed"])
    rows = read_csv(out / "paper.csv")
    assert all(r["converged"] == "true" for r in rows if r["seed"] == "0")
