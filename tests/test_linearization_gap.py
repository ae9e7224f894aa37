"""End-to-end tests of simulations/linearization_gap.py on a tiny problem (seconds)."""

import csv
import json
from pathlib import Path

import jax
import numpy as np
import pytest
from _scripts import load_script

import sdtheory as sd
from sdtheory import io as sio

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "simulations" / "linearization_gap.py"

K, PER_CLASS, R, ETA, SEED, SEEDS = 3, 6, 3, 0.4, 3, 2
C, D = 0.4, 0.1
TINY = [
    "--classes",
    str(K),
    "--per-class",
    str(PER_CLASS),
    "--num-lam",
    "3",
    "--num-rounds",
    str(R),
    "--cd",
    f"{C},{D}",
    "--eta",
    str(ETA),
    "--tol",
    "1e-10",
    "--seeds",
    str(SEEDS),
    "--seed",
    str(SEED),
]


def _load():
    return load_script("linearization_gap")


@pytest.fixture(scope="module")
def script():
    return _load()


@pytest.fixture(scope="module")
def run(tmp_path_factory, script):
    out = tmp_path_factory.mktemp("gap")
    assert script.main(TINY + ["--out", str(out)]) == 0
    with open(out / "gap.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    return out, rows


def test_outputs_exist(run):
    out, rows = run
    for name in ("gap.csv", "gap.csv.meta.json", "params.json", "gap.png", "gap.pdf"):
        assert (out / name).is_file(), name
    assert len(rows) == 3 * SEEDS * R  # one row per (lam, seed, round)
    assert {int(r["seed"]) for r in rows} == set(range(SEEDS))
    assert {int(r["round"]) for r in rows} == set(range(R))
    assert "exact_iterations" not in rows[0]
    params = json.loads((out / "params.json").read_text())["parameters"]
    assert params["exact_unconverged_solves"] == 0
    assert all(r["exact_converged"] == "true" for r in rows)


def test_gap_matches_independent_computation(run):
    _, rows = run
    s, r = 1, R - 1
    lam = sorted({float(x["lam"]) for x in rows})[1]
    row = next(x for x in rows if float(x["lam"]) == lam and int(x["seed"]) == s and int(x["round"]) == r)

    classes = sd.block_classes([PER_CLASS] * K)
    key = jax.random.split(jax.random.PRNGKey(SEED), SEEDS)[s]
    label_key, _ = jax.random.split(key)
    labels = sd.sample_labels(label_key, classes, sd.corruption_matrix("symmetric", K, ETA))
    y = np.eye(K)[np.asarray(labels)]
    gram = sd.block_gram(classes, c=C, d=D)
    exact = np.asarray(sd.exact_outputs(y, lam=lam, num_rounds=R, gram=gram, tol=1e-10).outputs)
    closed = np.asarray(sd.sd_outputs(y, lam=lam, num_rounds=R, gram=gram))
    assert abs(float(row["max_abs_diff"]) - np.abs(exact[r] - closed[r]).max()) < 1e-8
    acc = lambda p: float(np.asarray(sd.accuracy(p, classes)))  # noqa: E731
    assert float(row["train_acc_exact"]) == pytest.approx(acc(exact[r]))
    assert float(row["train_acc_closed"]) == pytest.approx(acc(closed[r]))


@pytest.mark.parametrize(
    "argv, flag",
    [
        (["--eta", "1.5"], "--eta"),
        (["--cd", "0.1,0.4"], "--cd"),
        (["--lam-min", "1", "--lam-max", "0.1"], "--lam-max"),
        (["--num-rounds", "0"], "--num-rounds"),
        (["--num-rounds", "-1"], "--num-rounds"),
        (["--solver", "nope"], "--solver"),
        (["--classes", "1"], "--classes"),
        (["--num-lam", "0"], "--num-lam"),
        (["--num-lam", "1"], "--num-lam"),  # one lam needs --lam-min == --lam-max
        (["--lam-min", "0"], "--lam-min"),
        (["--lam-min", "nan"], "--lam-min"),
        (["--lam-max", "inf"], "--lam-max"),
        (["--tol", "0"], "--tol"),
        (["--max-iter", "0"], "--max-iter"),
        (["--seed", "-1"], "--seed"),
        (["--seeds", "0"], "--seeds"),
        (["--dim", "-1"], "--dim"),
        (["--per-class", "0"], "--per-class"),
    ],
)
def test_bad_flag_names_the_flag(script, capsys, argv, flag):
    with pytest.raises(SystemExit) as exc:
        script.main(argv + ["--out", "/nonexistent/never-written"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}" in err and "Traceback" not in err, err
    assert not Path("/nonexistent/never-written").exists()


def test_out_that_is_a_file_is_an_error_before_computing(script, capsys, tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("the simulation ran before --out was checked")

    monkeypatch.setattr(script.mc, "run_grid", boom)
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    for out in (blocker, blocker / "sub"):
        with pytest.raises(SystemExit) as exc:
            script.main(TINY + ["--out", str(out)])
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert "argument --out: " in err and "Traceback" not in err, err


def test_same_seed_same_files_whatever_the_out_path(run, script, tmp_path):
    """No elapsed time or path in the CSV, its sidecar or the figures; the one timing field is params.json's."""
    out, _ = run
    other = tmp_path / "elsewhere"
    assert script.main(TINY + ["--out", str(other)]) == 0
    manifest = sio.verify_manifest(other)
    assert set(manifest["files"]) == {"gap.csv", "gap.csv.meta.json", "params.json", "gap.png", "gap.pdf"}
    for name in ("gap.csv", "gap.csv.meta.json", "gap.png", "gap.pdf"):
        assert (out / name).read_bytes() == (other / name).read_bytes(), name
    a, b = (json.loads((d / "params.json").read_text()) for d in (out, other))
    assert set(a.pop("timing")) == {"total_seconds"} and "seconds" not in a["parameters"]
    b.pop("timing")
    assert a == b
    assert "seconds" not in (out / "gap.csv.meta.json").read_text()


def test_ctrl_c_leaves_out_unchanged(script, tmp_path, monkeypatch):
    """KeyboardInterrupt during the simulation: a one-line message for the entry point, --out untouched."""
    out = tmp_path / "out"

    def printer(prefix, stream=None):
        def report(done, total, seconds):
            raise KeyboardInterrupt

        return report

    monkeypatch.setattr(script.sio, "progress_printer", printer)
    with pytest.raises(KeyboardInterrupt, match=f"interrupted; {out} was not changed"):
        script.main(TINY + ["--out", str(out)])
    assert list(tmp_path.iterdir()) == []


def test_quick_sets_small_defaults_and_explicit_flags_win(script):
    _, args = script.parse_args(["--quick"])
    for name, value in script.QUICK.items():
        assert getattr(args, name) == value, name
    _, plain = script.parse_args([])
    assert (plain.classes, plain.num_lam) == (4, 15)  # the full run's defaults are unchanged
    _, args = script.parse_args(["--quick", "--classes", "5"])
    assert args.classes == 5 and args.num_lam == script.QUICK["num_lam"]


@pytest.mark.slow  # compiles the exact solver (about 30 s on 2 busy cores)
def test_quick_run_writes_its_files(script, tmp_path):
    assert script.main(["--quick", "--out", str(tmp_path / "q")]) == 0
    assert {"gap.csv", "params.json", "gap.png"} <= {p.name for p in (tmp_path / "q").iterdir()}
