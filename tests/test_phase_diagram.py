"""End-to-end tests of simulations/phase_diagram.py on tiny grids (seconds)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _scripts import busy_rename, disk_full, load_script, read_csv

import sdtheory as sd
from sdtheory import io as sio
from sdtheory.noise import corruption_matrix, sample_labels

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "simulations" / "phase_diagram.py"

TINY = [
    "--classes",
    "3",
    "--per-class",
    "6",
    "--c",
    "0.45",
    "--d",
    "0.1",
    "--lam",
    "2e-3",
    "--eta-steps",
    "4",
    "--eta-max",
    "0.6",
    "--num-rounds",
    "4",
    "--seeds",
    "3",
    "--quiet",
]


def _load():
    return load_script("phase_diagram")


@pytest.fixture(scope="module")
def script():
    return _load()


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
    rows = read_csv(out / "phase_diagram.csv")
    # 4 etas x (4 SD rounds + 1 PLL row)
    assert len(rows) == 4 * (4 + 1)
    assert {"eta", "round", "method", "mean_accuracy", "frac_all_correct", "theory_all_correct"} <= set(rows[0])
    for r in rows:
        assert 0.0 <= float(r["mean_accuracy"]) <= 1.0
        assert 0.0 <= float(r["frac_all_correct"]) <= 1.0
        assert r["agree"] == ("true" if (r["theory_all_correct"] == r["majority_all_correct"]) else "false")
    pll = [r for r in rows if r["method"] == "pll_closed"]
    assert {r["round"] for r in pll} == {"1"}
    # no leftover temporary files, no staging or work directory next to --out; the manifest matches
    assert not [p for p in os.listdir(out) if p.endswith(".tmp")]
    assert not [p for p in os.listdir(out.parent) if p.startswith(out.name + ".")]
    manifest = sio.verify_manifest(out)
    assert sorted(manifest["files"]) == [
        "phase_diagram.csv",
        "phase_diagram.pdf",
        "phase_diagram.png",
        "phase_map.pdf",
        "phase_map.png",
        "summary.json",
    ]
    assert manifest["parameters"]["num_seeds"] == 3 and manifest["script"] == "simulations/phase_diagram.py"


def test_csv_values_match_direct_computation(closed_runs):
    """Recompute SD rows independently: public noise sampling + NumPy linear solves per seed."""
    out = closed_runs[0]
    rows = {(r["eta"], r["round"], r["method"]): r for r in read_csv(out / "phase_diagram.csv")}
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


def _manifest_without_summary_hash(path):
    """The manifest minus the hash of summary.json, whose "timing" field is exempt from byte-identity."""
    m = json.loads(Path(path).read_text())
    m["files"].pop("summary.json")
    return m


def test_same_seed_identical_files_whatever_the_out_path(closed_runs):
    """Same seed, different --out paths: byte-identical CSV, PNG, PDF; JSON equal apart from "timing"."""
    a, b, c = closed_runs
    assert a != b
    for name in ("phase_diagram.csv", "phase_diagram.png", "phase_diagram.pdf"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert _summary_without_timing(a / "summary.json") == _summary_without_timing(b / "summary.json")
    assert _manifest_without_summary_hash(a / "manifest.json") == _manifest_without_summary_hash(b / "manifest.json")
    for out in (a, b):  # no path and no timing anywhere but the exempt field
        for name in ("phase_diagram.csv", "phase_diagram.png", "phase_diagram.pdf", "manifest.json"):
            assert str(out).encode() not in (out / name).read_bytes(), name
        s = json.loads((out / "summary.json").read_text())
        assert str(out) not in json.dumps(s) and set(s["timing"]) >= {"simulation_seconds", "total_seconds"}
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
    pa = s["prediction_agreement"]["sd_closed"]
    assert set(pa) == {"linear_population", "exact_population", "linear_finite_sample", "exact_finite_sample"}
    assert pa["linear_population"]["cells_vs_majority"] == ag["cells_population_vs_majority"]
    assert s["prediction_agreement"]["theory_converged"]


def test_phase_map_matches_the_exact_theorems(closed_runs):
    """The 2-D map's exact regions against min_rounds / pll_accuracy_prediction(model='exact') point by point."""
    s = json.loads((closed_runs[0] / "summary.json").read_text())
    pm = s["phase_map"]
    assert pm["axis"] == "lam"
    region = np.asarray(pm["region"])
    rng = np.random.default_rng(0)
    for i, j in zip(rng.integers(0, len(pm["values"]), 4), rng.integers(0, len(pm["etas"]), 4), strict=True):
        C = sd.corruption_matrix("symmetric", 3, pm["etas"][j])
        kw = dict(c=0.45, d=0.1, lam=pm["values"][i], per_class=6, model="exact")
        r = sd.min_rounds(C, search_rounds=4, **kw)
        pll = sd.pll_accuracy_prediction(C, **kw).accuracy[0]
        assert region[i, j] == 2 * int(0 <= r <= 3) + int(pll >= 1.0)


@pytest.mark.slow
def test_exact_solver_end_to_end_subprocess(tmp_path):
    """The script as a user runs it (subprocess), with the exact solver."""
    out = tmp_path / "exact"
    env = dict(os.environ, MPLBACKEND="Agg")
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), *TINY[:-1], "--seeds", "2", "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "cells" in proc.stderr  # progress
    rows = read_csv(out / "phase_diagram.csv")
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
        (["--solver", "adam"], "--solver"),
        (["--model", "linear"], "--model"),
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


@pytest.mark.parametrize("name", ["phase_diagram", "linearization_gap", "real_data", "smoothing"])
def test_num_rounds_beyond_the_packages_bound_is_an_argparse_error(name, capsys):
    """--num-rounds 1000000000 passed validation and died later (392 GB RESOURCE_EXHAUSTED); now argparse refuses it."""
    from sdtheory._validation import MAX_NUM_ROUNDS

    parser = load_script(name).build_parser()
    assert parser.parse_args(["--num-rounds", str(MAX_NUM_ROUNDS)]).num_rounds == MAX_NUM_ROUNDS
    with pytest.raises(SystemExit) as exc:
        parser.parse_args(["--num-rounds", "1000000000"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"argument --num-rounds: must be <= {MAX_NUM_ROUNDS}" in err and "Traceback" not in err, err


def test_num_rounds_too_large_exits_2_before_computing(script, capsys, tmp_path, monkeypatch):
    _no_compute(monkeypatch, script)
    with pytest.raises(SystemExit) as exc:
        script.main(TINY + ["--num-rounds", "1000000000", "--out", str(tmp_path / "out")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "argument --num-rounds: " in err and "Traceback" not in err, err
    assert list(tmp_path.iterdir()) == []


def test_help_explains_every_flag(script, capsys):
    with pytest.raises(SystemExit) as exc:
        script.main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for flag in (
        "--classes",
        "--per-class",
        "--c",
        "--d",
        "--lam",
        "--noise",
        "--eta-min",
        "--eta-max",
        "--eta-steps",
        "--num-rounds",
        "--seeds",
        "--seed",
        "--model",
        "--solver",
        "--dim",
        "--out",
        "--tie-tol",
        "--resume",
    ):
        assert flag in text, flag


def test_csv_does_not_depend_on_chunking(closed_runs, script, tmp_path):
    """Same cells in other batch shapes (as on other devices) give the same bytes."""
    assert script.main(TINY + ["--model", "closed", "--chunk-size", "5", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "phase_diagram.csv").read_bytes() == (closed_runs[0] / "phase_diagram.csv").read_bytes()


# --------------------------------------------------------------------------
# --out checked first; outputs as one unit; Ctrl-C; --resume
# --------------------------------------------------------------------------


def _no_compute(monkeypatch, script):
    def boom(*args, **kwargs):
        raise AssertionError("the simulation ran before --out was checked")

    monkeypatch.setattr(script.mc, "run_grid", boom)


@pytest.mark.parametrize("case", ["file", "under_file", "foreign", "unwritable"])
def test_bad_out_is_an_argparse_error_before_computing(script, capsys, tmp_path, monkeypatch, case):
    _no_compute(monkeypatch, script)
    blocker = tmp_path / "blocker"
    blocker.write_text("not a directory")
    out = {
        "file": blocker,
        "under_file": blocker / "out",
        "foreign": tmp_path / "mine",
        "unwritable": tmp_path / "ro" / "out",
    }[case]
    if case == "foreign":
        out.mkdir()
        (out / "notes.txt").write_text("keep me")
    if case == "unwritable":  # simulated: root writes through permission bits
        import tempfile

        def denied(*args, **kwargs):
            raise PermissionError(13, "Permission denied")

        monkeypatch.setattr(tempfile, "mkdtemp", denied)
    with pytest.raises(SystemExit) as exc:
        script.main(TINY + ["--model", "closed", "--out", str(out)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "argument --out: " in err and "Traceback" not in err, err
    assert blocker.read_text() == "not a directory"
    if case == "foreign":
        assert (out / "notes.txt").read_text() == "keep me"


def _interrupt_after(monkeypatch, script, cells, calls=None, theory=None, theory_reports=None):
    """Progress callbacks that count the simulation's calls and raise KeyboardInterrupt (as Ctrl-C would) once
    ``cells`` are done; the theory's reports ``(done, total)`` go to ``theory``, and it is interrupted at its
    ``theory_reports``-th report."""

    def printer(prefix, stream=None):
        def report(done, total, seconds):
            if prefix != "phase_diagram":
                if theory is not None:
                    theory.append((prefix, done, total))
                    if theory_reports is not None and len(theory) >= theory_reports:
                        raise KeyboardInterrupt
                return
            if calls is not None:
                calls.append(done)
            if cells is not None and done >= cells:
                raise KeyboardInterrupt

        return report

    monkeypatch.setattr(script.sio, "progress_printer", printer)


RESUMABLE = [a for a in TINY if a != "--quiet"] + ["--model", "closed", "--chunk-size", "2"]  # 12 cells, 6 chunks


def test_interrupted_rerun_keeps_previous_set_and_resume_gives_identical_files(script, tmp_path, monkeypatch, capsys):
    ref, out = tmp_path / "ref", tmp_path / "out"
    assert script.main(RESUMABLE + ["--quiet", "--out", str(ref)]) == 0  # uninterrupted
    assert script.main(RESUMABLE + ["--quiet", "--seed", "1", "--out", str(out)]) == 0  # a previous complete set
    previous = {p.name: p.read_bytes() for p in out.iterdir()}

    # interrupted after 3 of 6 chunks: the previous set is untouched, the finished chunks are kept
    _interrupt_after(monkeypatch, script, cells=6)
    with pytest.raises(KeyboardInterrupt, match="was not changed; 3 finished chunk.s. are kept in .*--resume"):
        script.main(RESUMABLE + ["--out", str(out)])
    assert {p.name: p.read_bytes() for p in out.iterdir()} == previous
    sio.verify_manifest(out)
    checkpoint = tmp_path / "out.work" / "phase_diagram.checkpoint.npz"
    assert checkpoint.is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "out.work", "ref"]  # no staging directory

    # other parameters: the checkpoint is refused, naming what differs
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        script.main(RESUMABLE + ["--resume", "--eta-max", "0.5", "--out", str(out)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "argument --resume: the checkpoint" in err and "etas" in err, err

    # resumed: only the 3 missing chunks run, and the files equal the uninterrupted run's
    calls, theory = [], []
    _interrupt_after(monkeypatch, script, cells=None, calls=calls, theory=theory)
    assert script.main(RESUMABLE + ["--resume", "--out", str(out)]) == 0
    assert calls == [8, 10, 12]
    # the theory phase reports its progress too, up to all of its problems
    assert theory and {t[0] for t in theory} == {"phase_diagram theory"} and theory[-1][1] == theory[-1][2]
    for name in ("phase_diagram.csv", "phase_diagram.png", "phase_diagram.pdf"):
        assert (out / name).read_bytes() == (ref / name).read_bytes(), name
    assert _summary_without_timing(out / "summary.json") == _summary_without_timing(ref / "summary.json")
    assert json.loads((out / "summary.json").read_text())["timing"]["resumed_chunks"] == 3
    assert _manifest_without_summary_hash(out / "manifest.json") == _manifest_without_summary_hash(
        ref / "manifest.json"
    )
    sio.verify_manifest(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "ref"]  # the work area is gone


def test_ctrl_c_in_the_theory_phase_resumes_to_identical_files(script, tmp_path, monkeypatch, capsys):
    """Interrupted after 2 of the theory's batches: --resume recomputes neither the simulation nor those batches,
    and writes the files of an uninterrupted run."""
    from sdtheory.montecarlo import theory as th

    ref, out = tmp_path / "ref", tmp_path / "out"
    argv = RESUMABLE  # the theory: 4 + 4 x 128 + 17 x 4 problems, in batches of 128 (fewer distinct)
    batches = []  # the theory's solved batches, counted where they are computed
    real = th._solve_chunk
    monkeypatch.setattr(th, "_solve_chunk", lambda *a: batches.append(1) or real(*a))
    assert script.main(argv + ["--quiet", "--out", str(ref)]) == 0
    total = len(batches)
    assert total >= 3

    batches.clear()
    theory: list = []
    _interrupt_after(monkeypatch, script, cells=None, theory=theory, theory_reports=2)
    with pytest.raises(KeyboardInterrupt, match=r"was not changed; 8 finished chunk.s. are kept in .*--resume"):
        script.main(argv + ["--out", str(out)])  # 6 simulation chunks and 2 theory batches
    assert len(batches) == 2 and not out.exists()
    assert (tmp_path / "out.work" / script.THEORY_CHECKPOINT).is_file()

    with pytest.raises(SystemExit):  # the batches belong to these theory flags
        script.main(RESUMABLE + ["--theory-draws", "8", "--resume", "--out", str(out)])
    assert "theory_draws: 128 in the checkpoint, 8 now" in capsys.readouterr().err

    batches.clear()
    calls: list = []
    _interrupt_after(monkeypatch, script, cells=None, calls=calls, theory=[])
    assert script.main(argv + ["--resume", "--out", str(out)]) == 0
    assert calls == [] and len(batches) == total - 2  # nothing solved twice
    for name in ("phase_diagram.csv", "phase_diagram.png", "phase_diagram.pdf", "phase_map.png", "phase_map.pdf"):
        assert (out / name).read_bytes() == (ref / name).read_bytes(), name
    assert _summary_without_timing(out / "summary.json") == _summary_without_timing(ref / "summary.json")
    timing = json.loads((out / "summary.json").read_text())["timing"]
    assert (timing["resumed_chunks"], timing["resumed_theory_batches"]) == (6, 2)
    sio.verify_manifest(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "ref"]


def test_ctrl_c_exits_130_with_one_line_and_no_partial_files(tmp_path):
    """SIGINT to the script as a user runs it: exit status 130 (or 0 if it finished first), no traceback."""
    import signal

    out = tmp_path / "out"
    env = dict(os.environ, MPLBACKEND="Agg")
    argv = [a for a in TINY if a != "--quiet"] + ["--model", "closed", "--chunk-size", "1", "--out", str(out)]
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), *argv],
        stderr=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    seen = []
    for line in proc.stderr:  # wait until main is running (the first progress line), then press Ctrl-C
        seen.append(line)
        if line.startswith("[phase_diagram]"):
            proc.send_signal(signal.SIGINT)
            break
    _, rest = proc.communicate(timeout=300)
    err = "".join(seen) + (rest or "")
    assert proc.returncode in (130, 0), err
    assert "Traceback" not in err, err
    if proc.returncode == 130:
        last = err.strip().splitlines()[-1]
        assert last.startswith("phase_diagram.py: interrupted; ") and str(out) in last, err
        assert not out.exists()
    else:
        sio.verify_manifest(out)
    leftovers = [p.name for p in tmp_path.iterdir() if ".tmp" in p.name or ".old-" in p.name]
    assert leftovers == []


def test_run_grid_resumes_from_completed_chunks_bit_for_bit():
    """The engine side of --resume: on_chunk hands out every chunk, completed= skips them, same arrays."""
    import jax

    from sdtheory import montecarlo as mc

    cfg = mc.make_config(num_classes=3, per_class=6, c=0.45, d=0.1, lam=2e-3, num_rounds=4)
    kw = dict(lams=[1e-3, 1e-2], num_seeds=3, seed=2, chunk_size=4)  # 2 points x 9 cells, chunks of 3
    seen = {}
    full = mc.run_grid(cfg, [0.0, 0.3, 0.6], on_chunk=seen.__setitem__, **kw)
    assert sorted(seen) == [0, 3, 6, 9, 12, 15]  # point index * 9 + first cell
    assert all(v.shape[0] == 3 for chunk in seen.values() for v in chunk.values())
    calls = []
    part = {k: seen[k] for k in (0, 6, 12)}
    res = mc.run_grid(cfg, [0.0, 0.3, 0.6], completed=part, on_chunk=lambda s, r: calls.append(s), **kw)
    assert calls == [3, 9, 15]
    for a, b in zip(jax.tree_util.tree_leaves(full), jax.tree_util.tree_leaves(res), strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match=r"completed\[1\] is not a chunk of this grid"):
        mc.run_grid(cfg, [0.0, 0.3, 0.6], completed={1: seen[3]}, **kw)
    broken = dict(seen[3])
    broken.pop(next(iter(broken)))
    with pytest.raises(ValueError, match="produced by another configuration"):
        mc.run_grid(cfg, [0.0, 0.3, 0.6], completed={3: broken}, **kw)


# Sends SIGINT to the process the moment the script starts importing JAX (deterministic, unlike a timer).
_CTRL_C_DURING_IMPORT = """
import importlib.abc, os, runpy, signal, sys

class CtrlC(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "jax":
            os.kill(os.getpid(), signal.SIGINT)
        return None

sys.meta_path.insert(0, CtrlC())
sys.argv = [sys.argv[1], "--help"]
runpy.run_path(sys.argv[0], run_name="__main__")
print("not reached")
"""


@pytest.mark.parametrize("script", ["phase_diagram", "real_data", "linearization_gap"])
def test_ctrl_c_while_the_package_loads_exits_130_with_one_line(script, tmp_path):
    path = ROOT / "simulations" / f"{script}.py"
    env = dict(os.environ, MPLBACKEND="Agg")
    proc = subprocess.run(
        [sys.executable, "-c", _CTRL_C_DURING_IMPORT, str(path)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode == 130, proc.stderr
    assert proc.stderr == f"{script}.py: interrupted while starting; nothing was written\n"
    assert proc.stdout == ""
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------
# Commits that cannot happen (a mount point as --out), disk full, a foreign work-area entry
# --------------------------------------------------------------------------


def test_out_that_cannot_be_renamed_is_refused_before_computing(script, capsys, tmp_path, monkeypatch):
    """A mount point as --out passed the check, ran the whole job, then failed to commit (EBUSY) with a traceback."""
    out = tmp_path / "mnt"
    out.mkdir()
    _no_compute(monkeypatch, script)
    busy_rename(monkeypatch, out)
    with pytest.raises(SystemExit) as exc:
        script.main(TINY + ["--model", "closed", "--out", str(out)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "argument --out: " in err and "cannot be replaced" in err and "Traceback" not in err, err


def test_commit_failing_late_keeps_the_results_exit_1_one_line(script, capsys, tmp_path, monkeypatch):
    from sdtheory.cli import run_main

    out = tmp_path / "out"
    monkeypatch.setattr(sio, "_probe_replaceable", lambda target: None)  # busy only by the time of the commit
    busy_rename(monkeypatch, out)
    assert run_main(script.main, "phase_diagram.py", TINY + ["--model", "closed", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("phase_diagram.py: the outputs are complete but could not"), err
    kept = tmp_path / f"out.unsaved-{os.getpid()}"
    assert f"kept in {kept}" in err and "Traceback" not in err, err
    sio.verify_manifest(kept)
    assert (kept / "phase_diagram.csv").is_file() and not out.exists()


def test_disk_full_while_staging_exit_1_one_line_and_resume_finishes(script, capsys, tmp_path, monkeypatch):
    from sdtheory.cli import run_main

    out = tmp_path / "out"
    # files of the staging directory; the checkpoints still fit
    disk_full(monkeypatch, sio, lambda path: ".tmp-" in os.fspath(path))
    assert run_main(script.main, "phase_diagram.py", RESUMABLE + ["--quiet", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith("phase_diagram.py: writing the outputs failed ([Errno 28] No space left on device"), err
    assert f"{out} was not created; the checkpoints in {tmp_path / 'out.work'} are kept" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.work"]
    monkeypatch.undo()
    assert script.main(RESUMABLE + ["--quiet", "--resume", "--out", str(out)]) == 0
    assert json.loads((out / "summary.json").read_text())["timing"]["resumed_chunks"] == 6
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_checkpoint_path_that_is_a_directory_is_refused_before_a_fresh_run(script, capsys, tmp_path):
    """<out>.work/<checkpoint> being a directory crashed a fresh run at its first checkpoint (traceback)."""
    out = tmp_path / "out"
    (tmp_path / "out.work" / script.CHECKPOINT).mkdir(parents=True)
    with pytest.raises(SystemExit) as exc:
        script.main(TINY + ["--model", "closed", "--out", str(out)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"argument --out: {tmp_path / 'out.work' / script.CHECKPOINT} is not a file" in err, err
    assert not out.exists()


def test_disk_full_writing_a_checkpoint_exit_1_one_line(script, capsys, tmp_path, monkeypatch):
    from sdtheory.cli import run_main

    out = tmp_path / "out"
    writes = []
    # the second checkpoint write finds the disk full
    disk_full(monkeypatch, sio, lambda path: writes.append(path) or len(writes) > 1)
    assert run_main(script.main, "phase_diagram.py", RESUMABLE + ["--quiet", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert "writing the checkpoint" in err and "its previous version is unchanged (1 finished piece(s)" in err, err
    assert not out.exists()


def test_out_of_memory_is_one_line_exit_1(script, capsys, tmp_path, monkeypatch):
    """XLA's RESOURCE_EXHAUSTED (a grid too large for the memory, e.g. --num-rounds 100000 at the defaults)."""
    import jax

    def exhausted(*args, **kwargs):
        raise jax.errors.JaxRuntimeError("RESOURCE_EXHAUSTED: Out of memory allocating 392000000000 bytes.")

    monkeypatch.setattr(script.mc, "run_grid", exhausted)
    with pytest.raises(SystemExit) as exc:
        script.main(TINY + ["--model", "closed", "--out", str(tmp_path / "out")])
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith("phase_diagram.py: error: out of memory (RESOURCE_EXHAUSTED: Out of memory allocating"), err
    assert "lower --chunk-size" in err and not (tmp_path / "out").exists()


def test_negative_d_within_the_gram_bound_is_accepted_and_beyond_it_refused(script, capsys):
    # the bound is checked at the run's class sizes: the smallest eigenvalue of the block Gram,
    # from numpy on the explicit Gram, is positive just inside and not just outside
    import numpy as np

    k, n, c = 4, 10, 0.4
    bound = -(1 - c + n * c) / (n * (k - 1))
    for d, ok in ((bound + 1e-3, True), (bound - 1e-3, False)):
        gram = np.full((k * n, k * n), d) + np.kron(np.eye(k), np.full((n, n), c - d))
        np.fill_diagonal(gram, 1.0)
        assert (np.linalg.eigvalsh(gram)[0] > 0) == ok
        argv = ["--classes", str(k), "--per-class", str(n), "--c", str(c), "--d", repr(d)]
        if ok:
            _, args = script.parse_args(argv)
            assert args.d == d
        else:
            with pytest.raises(SystemExit) as exc:
                script.parse_args(argv)
            assert exc.value.code == 2
            assert "argument --d" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["phase_diagram", "real_data", "smoothing", "linearization_gap"])
def test_help_shows_one_default_per_flag_and_no_markup(name):
    import re
    import subprocess
    import sys

    root = __import__("pathlib").Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [sys.executable, str(root / "simulations" / f"{name}.py"), "--help"], capture_output=True, text=True, check=True
    ).stdout
    flags = re.split(r"\n  (?=-)", out)  # one entry per flag
    assert all(entry.count("(default:") <= 1 for entry in flags), [e for e in flags if e.count("(default:") > 1]
    # an unset default or an off switch is described by the help text, not as "None" / "False"
    assert "(default: None)" not in out and "(default: False)" not in out, out
    assert ":func:" not in out and ":mod:" not in out and "``" not in out, out


def test_quick_sets_small_defaults_and_explicit_flags_win(script):
    _, args = script.parse_args(["--quick"])
    for name, value in script.QUICK.items():
        assert getattr(args, name) == value, name
    _, plain = script.parse_args([])
    assert (plain.per_class, plain.seeds, plain.eta_steps) == (100, 32, 41)  # full-run defaults unchanged
    _, args = script.parse_args(["--quick", "--seeds", "5"])
    assert args.seeds == 5 and args.per_class == script.QUICK["per_class"]
    _, paper = script.parse_args(["--quick", "--preset", "paper"])
    for name, value in script.QUICK_PAPER.items():
        assert getattr(paper, name) == value, name
    assert paper.classes == 4 and paper.lam == 1e-5  # the preset's model, smaller


@pytest.mark.slow  # compiles the exact solver and the theory (about a minute on 2 busy cores)
def test_quick_run_writes_the_phase_diagram(script, tmp_path):
    assert script.main(["--quick", "--quiet", "--out", str(tmp_path / "q")]) == 0
    assert {"phase_diagram.png", "phase_diagram.csv", "summary.json"} <= {p.name for p in (tmp_path / "q").iterdir()}
