"""End-to-end tests of simulations/phase_diagram.py on tiny grids (seconds)."""

import csv
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import sdtheory as sd
from sdtheory.noise import corruption_matrix, sample_labels

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "simulations" / "phase_diagram.py"

TINY = ["--classes", "3", "--per-class", "6", "--c", "0.45", "--d", "0.1", "--lam", "2e-3",
        "--eta-steps", "4", "--eta-max", "0.6", "--num-rounds", "4", "--seeds", "3", "--quiet"]


def _load():
    spec = importlib.util.spec_from_file_location("phase_diagram_script", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def script():
    return _load()


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _summary_without_timing(path):
    s = json.loads(Path(path).read_text())
    s.pop("timing")
    return s


@pytest.fixture(scope="module")
def closed_runs(tmp_path_factory, script):
    a = tmp_path_factory.mktemp("a")
    b = tmp_path_factory.mktemp("b")
    c = tmp_path_factory.mktemp("c")
    assert script.main(TINY + ["--model", "closed", "--out", str(a)]) == 0
    assert script.main(TINY + ["--model", "closed", "--out", str(b)]) == 0
    assert script.main(TINY + ["--model", "closed", "--out", str(c), "--seed", "1"]) == 0
    return a, b, c


def test_outputs_exist_and_table_is_consistent(closed_runs):
    out = closed_runs[0]
    for name in ("phase_diagram.png", "phase_diagram.pdf", "phase_diagram.csv", "summary.json"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "phase_diagram.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "phase_diagram.pdf").read_bytes()[:5] == b"%PDF-"
    rows = _rows(out / "phase_diagram.csv")
    # 4 etas x (4 SD rounds + 1 PLL row)
    assert len(rows) == 4 * (4 + 1)
    assert {"eta", "round", "method", "mean_accuracy", "frac_all_correct", "theory_all_correct"} <= set(rows[0])
    for r in rows:
        assert 0.0 <= float(r["mean_accuracy"]) <= 1.0
        assert 0.0 <= float(r["frac_all_correct"]) <= 1.0
        assert r["agree"] == ("true" if (r["theory_all_correct"] == r["majority_all_correct"]) else "false")
    pll = [r for r in rows if r["method"] == "pll_closed"]
    assert {r["round"] for r in pll} == {"1"}
    # no leftover temporary files
    assert not [p for p in os.listdir(out) if p.endswith(".tmp")]


def test_csv_values_match_direct_computation(closed_runs):
    """Recompute SD rows independently: public noise sampling + NumPy linear solves per seed."""
    out = closed_runs[0]
    rows = {(r["eta"], r["round"], r["method"]): r for r in _rows(out / "phase_diagram.csv")}
    import jax

    k, n_per, c, d, lam = 3, 6, 0.45, 0.1, 2e-3
    classes = sd.block_classes([n_per] * k)
    n = classes.size
    g = np.where(classes[:, None] == classes[None, :], c, d)
    np.fill_diagonal(g, 1.0)
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    for eta in np.linspace(0.0, 0.6, 4)[[1, 3]]:
        eta = float(eta)
        accs = np.zeros((3, 4))
        for s in range(3):
            lk, _ = jax.random.split(keys[s])
            lab = np.asarray(sample_labels(lk, classes, corruption_matrix("symmetric", k, eta)))
            cur = np.eye(k)[lab] - 1.0 / k
            for r in range(4):
                cur = g @ np.linalg.solve(g + k * n * lam * np.eye(n), cur)
                srt = np.sort(cur, axis=1)
                own = cur[np.arange(n), classes]
                accs[s, r] = np.mean((own == srt[:, -1]) & (srt[:, -1] - srt[:, -2] > 1e-10))
        for r in range(4):
            row = rows[(repr(eta), str(r), "sd_closed")]
            assert float(row["mean_accuracy"]) == pytest.approx(accs[:, r].mean(), abs=1e-12)
            assert float(row["frac_all_correct"]) == pytest.approx(np.mean(accs[:, r] == 1.0))


def test_same_seed_identical_files_different_seed_differs(closed_runs):
    a, b, c = closed_runs
    assert (a / "phase_diagram.csv").read_bytes() == (b / "phase_diagram.csv").read_bytes()
    assert _summary_without_timing(a / "summary.json") == _summary_without_timing(b / "summary.json")
    assert (a / "phase_diagram.pdf").read_bytes() == (b / "phase_diagram.pdf").read_bytes()
    assert (a / "phase_diagram.csv").read_bytes() != (c / "phase_diagram.csv").read_bytes()


def test_summary_contents(closed_runs):
    s = json.loads((closed_runs[0] / "summary.json").read_text())
    p = s["metadata"]["parameters"]
    assert p["num_classes"] == 3 and p["per_class"] == 6 and p["num_seeds"] == 3 and p["prng_seed"] == 0
    assert len(p["etas"]) == 4 and p["lam"] == 2e-3
    assert s["metadata"]["package_version"] == sd.__version__
    assert "git_revision" in s["metadata"]
    ag = s["agreement"]["sd_closed"]
    # the closed form on the block Gram is exactly the linearised model of the theorems
    assert ag["cells_empirical_vs_outcome"] == 1.0
    hist = ag["first_round_offset_vs_empirical"]["histogram"]
    assert set(hist) <= {"0"}
    assert s["corruption_threshold"] == pytest.approx(2 / 3)


@pytest.mark.slow
def test_exact_solver_end_to_end_subprocess(tmp_path):
    """The script as a user runs it (subprocess), with the exact solver."""
    out = tmp_path / "exact"
    env = dict(os.environ, MPLBACKEND="Agg")
    proc = subprocess.run([sys.executable, str(SCRIPT), *TINY[:-1], "--seeds", "2", "--out", str(out)],
                          capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "cells" in proc.stderr  # progress
    rows = _rows(out / "phase_diagram.csv")
    methods = {r["method"] for r in rows}
    assert methods == {"sd_closed", "sd_exact", "pll_closed", "pll_exact"}
    assert all(float(r["frac_converged"]) == 1.0 for r in rows)
    assert all(float(r["max_residual"]) <= 1e-9 for r in rows if r["method"].endswith("exact"))


@pytest.mark.parametrize(
    "argv, flag",
    [
        (["--c", "1.5"], "--c"),
        (["--c", "0.2", "--d", "0.3"], "--d"),
        (["--lam", "0"], "--lam"),
        (["--lam", "nan"], "--lam"),
        (["--eta-max", "1.2"], "--eta-max"),
        (["--eta-min", "0.5", "--eta-max", "0.2"], "--eta-max"),
        (["--seeds", "0"], "--seeds"),
        (["--num-rounds", "two"], "--num-rounds"),
        (["--noise", "gaussian"], "--noise"),
        (["--noise", "cc"], "--clusters"),
        (["--noise", "cc", "--clusters", "0,1"], "--clusters"),
        (["--solver", "adam"], "--solver"), (["--model", "linear"], "--model"),
        (["--per-class", "-3"], "--per-class"),
    ],
)
def test_bad_values_are_argparse_errors_naming_the_flag(script, capsys, argv, flag):
    with pytest.raises(SystemExit) as exc:
        script.main(argv + ["--quiet", "--out", "/nonexistent/never-written"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}" in err, err
    assert not Path("/nonexistent/never-written").exists()


def test_help_explains_every_flag(script, capsys):
    with pytest.raises(SystemExit) as exc:
        script.main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--classes", "--per-class", "--c", "--d", "--lam", "--noise", "--eta-min", "--eta-max",
                 "--eta-steps", "--num-rounds", "--seeds", "--seed", "--model", "--solver", "--dim", "--out", "--tie-tol"):
        assert flag in text, flag


def test_csv_does_not_depend_on_chunking(closed_runs, script, tmp_path):
    """Same cells in other batch shapes (as on other devices) give the same bytes."""
    assert script.main(TINY + ["--model", "closed", "--chunk-size", "5", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "phase_diagram.csv").read_bytes() == (closed_runs[0] / "phase_diagram.csv").read_bytes()
