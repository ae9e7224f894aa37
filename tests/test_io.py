"""Result writers: atomic, deterministic, provenance recorded, readable back by standard tools."""

import csv
import json
import os
import sys
import re
import struct
import zlib

import numpy as np
import pytest

from sdtheory import io as sio
from _scripts import busy_rename


def _tmp_leftovers(path):
    return [p for p in os.listdir(path) if p.endswith(".tmp")]


def test_csv_round_trip_floats_exact_and_bools(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(50) * 10.0 ** rng.integers(-12, 12, 50)
    cols = {
        "x": x,
        "i": np.arange(50),
        "flag": np.arange(50) % 3 == 0,
        "name": [f"m{i}" for i in range(50)],
        "opt": [None if i % 7 == 0 else 0.5 for i in range(50)],
    }
    path = sio.write_csv(tmp_path / "t.csv", cols)
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["name"] for r in rows] == cols["name"]
    np.testing.assert_array_equal([float(r["x"]) for r in rows], x)  # shortest repr round-trips exactly
    assert [r["flag"] for r in rows] == ["true" if f else "false" for f in cols["flag"]]
    assert [r["opt"] for r in rows] == ["" if i % 7 == 0 else "0.5" for i in range(50)]
    assert _tmp_leftovers(tmp_path) == []


def test_csv_rows_form_metadata_sidecar_and_errors(tmp_path):
    rows = [{"a": 1, "b": 2.5}, {"a": 3, "b": float("nan")}]
    p = sio.write_csv(tmp_path / "r.csv", rows=rows, fieldnames=["a", "b"], metadata={"seed": 3})
    assert p.read_text() == "a,b\n1,2.5\n3,nan\n"
    meta = json.loads((tmp_path / "r.csv.meta.json").read_text())
    assert meta["metadata"] == {"seed": 3} and meta["columns"] == ["a", "b"]
    with pytest.raises(ValueError, match="same length"):
        sio.write_csv(tmp_path / "bad.csv", {"a": [1, 2], "b": [1]})
    with pytest.raises(ValueError, match="missing column"):
        sio.write_csv(tmp_path / "bad.csv", rows=[{"a": 1}], fieldnames=["a", "b"])
    with pytest.raises(ValueError, match="exactly one"):
        sio.write_csv(tmp_path / "bad.csv")
    assert not (tmp_path / "bad.csv").exists()


def test_interrupted_write_keeps_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "keep.json"
    sio.write_json(target, {"v": 1})
    before = target.read_bytes()

    def boom(src, dst):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="simulated"):
        sio.write_json(target, {"v": 2})
    monkeypatch.undo()
    assert target.read_bytes() == before
    assert _tmp_leftovers(tmp_path) == []


def test_json_numpy_types_nonfinite_and_namedtuple(tmp_path):
    from typing import NamedTuple

    class P(NamedTuple):
        a: int
        b: np.ndarray

    data = {
        "arr": np.arange(3),
        "f": np.float32(0.5),
        "nan": float("nan"),
        "inf": -np.inf,
        "nt": P(2, np.eye(2)),
        "t": (1, 2),
        "b": np.bool_(True),
    }
    p = sio.write_json(tmp_path / "s.json", data, metadata={"k": 1})
    back = json.loads(p.read_text())  # strict JSON: no NaN literals
    assert back == {
        "metadata": {"k": 1},
        "arr": [0, 1, 2],
        "f": 0.5,
        "nan": "nan",
        "inf": "-inf",
        "nt": {"a": 2, "b": [[1.0, 0.0], [0.0, 1.0]]},
        "t": [1, 2],
        "b": True,
    }
    with pytest.raises(TypeError, match="cannot convert"):
        sio.write_json(tmp_path / "x.json", {"o": object()})


def test_npz_round_trip_metadata_and_byte_identical(tmp_path):
    arrays = {"a": np.arange(12.0).reshape(3, 4), "m": np.array([True, False])}
    p1 = sio.write_npz(tmp_path / "a.npz", arrays, metadata={"seed": 7})
    p2 = sio.write_npz(tmp_path / "b.npz", arrays, metadata={"seed": 7})
    assert p1.read_bytes() == p2.read_bytes()
    with np.load(p1) as z:
        np.testing.assert_array_equal(z["a"], arrays["a"])
        np.testing.assert_array_equal(z["m"], arrays["m"])
        assert json.loads(str(z["__metadata__"])) == {"seed": 7}
    with pytest.raises(ValueError, match="reserved"):
        sio.write_npz(tmp_path / "c.npz", {"__metadata__": np.zeros(1)})


def _png_text_chunks(data: bytes) -> dict:
    """Parse tEXt chunks of a PNG directly from its bytes (independent of matplotlib/PIL)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, out = 8, {}
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(kind + body) & 0xFFFFFFFF
        if kind == b"tEXt":
            k, v = body.split(b"\x00", 1)
            out[k.decode("latin-1")] = v.decode("latin-1")
        pos += 12 + length
    return out


def test_figure_png_pdf_with_provenance(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    meta = {"seed": 5, "git_revision": "abc"}
    png = sio.write_figure(fig, tmp_path / "f.png", metadata=meta, dpi=50)
    pdf = sio.write_figure(fig, tmp_path / "f.pdf", metadata=meta)
    pdf2 = sio.write_figure(fig, tmp_path / "g.pdf", metadata=meta)
    plt.close(fig)
    chunks = _png_text_chunks(png.read_bytes())
    assert json.loads(chunks["Description"]) == meta
    assert pdf.read_bytes()[:5] == b"%PDF-"
    assert pdf.read_bytes() == pdf2.read_bytes()  # fixed CreationDate: reruns are reproducible
    with pytest.raises(ValueError, match="must end in"):
        sio.write_figure(fig, tmp_path / "f.jpg")


def test_provenance_and_git_revision(tmp_path):
    import sdtheory

    prov = sio.provenance()
    assert prov["package_version"] == sdtheory.__version__
    rev = prov["git_revision"]
    if rev is not None:  # inside a checkout (the normal case for developers and CI)
        assert re.fullmatch(r"[0-9a-f]{40}(\+dirty)?", rev)
    assert sio.git_revision(tmp_path) is None  # not a git checkout


def test_atomic_write_type_errors(tmp_path):
    with pytest.raises(TypeError, match="bytes"):
        sio.atomic_write_bytes(tmp_path / "x", "text")
    with pytest.raises(TypeError, match="str"):
        sio.atomic_write_text(tmp_path / "x", b"bytes")


# --------------------------------------------------------------------------
# Run directories (outputs as one unit, manifest), output checks, checkpoints
# --------------------------------------------------------------------------


def _write_set(stage, tag):
    sio.write_csv(stage / "t.csv", {"v": [1, 2, tag]})
    sio.write_json(stage / "s.json", {"tag": tag})


def _siblings(out):
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(out.name + "."))


def test_run_directory_complete_run_manifest_hashes_match(tmp_path):
    import hashlib

    out = tmp_path / "res"
    with sio.run_directory(out, script="test", parameters={"seed": 1}) as stage:
        assert stage != out and stage.parent == out.parent and not out.exists()
        _write_set(stage, 1)
    manifest = sio.verify_manifest(out)
    assert manifest["script"] == "test" and manifest["parameters"] == {"seed": 1}
    assert sorted(manifest["files"]) == ["s.json", "t.csv"]
    for name, entry in manifest["files"].items():
        data = (out / name).read_bytes()
        assert entry == {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    assert "git_revision" in manifest["metadata"]
    assert _siblings(out) == []  # no staging or set-aside directory left
    (out / "t.csv").write_text("tampered\n")
    with pytest.raises(ValueError, match="t.csv does not match"):
        sio.verify_manifest(out)


@pytest.mark.parametrize("exc", [KeyboardInterrupt, RuntimeError])
def test_run_directory_interrupted_rerun_keeps_previous_set(tmp_path, exc):
    out = tmp_path / "res"
    with sio.run_directory(out, script="test", parameters={"seed": 1}) as stage:
        _write_set(stage, 1)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(exc):
        with sio.run_directory(out, script="test", parameters={"seed": 2}) as stage:
            sio.write_csv(stage / "t.csv", {"v": [9]})  # half of the new set, then the run dies
            raise exc("simulated")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    sio.verify_manifest(out)
    assert _siblings(out) == []
    # a complete rerun replaces the set as a whole (a file the new run does not write disappears)
    with sio.run_directory(out, script="test", parameters={"seed": 3}) as stage:
        sio.write_json(stage / "s.json", {"tag": 3})
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "s.json"]
    assert sio.verify_manifest(out)["parameters"] == {"seed": 3}


def test_run_directory_finishes_a_commit_killed_between_renames(tmp_path):
    import subprocess
    import sys

    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    ).stdout.strip()
    out = tmp_path / "res"
    with sio.run_directory(out, script="test") as stage:
        _write_set(stage, 1)
    # a run killed after moving the old set aside, before moving its complete new set in
    os.rename(out, tmp_path / f"res.old-{dead}")
    with sio.run_directory(tmp_path / "new", script="test") as stage:
        _write_set(stage, 2)
    os.rename(tmp_path / "new", tmp_path / f"res.tmp-{dead}")
    with sio.run_directory(out, script="test", parameters={"seed": 9}) as stage:
        _write_set(stage, 3)
    assert json.loads((out / "s.json").read_text()) == {"tag": 3}
    assert _siblings(out) == []


def test_check_output_dir_errors(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(sio.OutputDirError, match="exists and is not a directory"):
        sio.check_output_dir(f)
    with pytest.raises(sio.OutputDirError, match="is not a directory"):
        sio.check_output_dir(f / "sub" / "out")
    with pytest.raises(sio.OutputDirError, match="root"):
        sio.check_output_dir("/")
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    (foreign / "phase_diagram.csv").write_text("old")
    with pytest.raises(sio.OutputDirError, match=r"not outputs of this script \(thesis.tex\)"):
        sio.check_output_dir(foreign, outputs=("phase_diagram.*",))
    (foreign / "thesis.tex").unlink()
    assert sio.check_output_dir(foreign, outputs=("phase_diagram.*",)) == foreign.resolve()  # an older run's set
    assert sio.check_output_dir(tmp_path / "a" / "b") == (tmp_path / "a" / "b").resolve()
    assert not (tmp_path / "a").exists()  # checking creates nothing
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "mine"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through permission bits")
def test_check_output_dir_unwritable(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(sio.OutputDirError, match="not writable"):
            sio.check_output_dir(ro / "out")
        with pytest.raises(sio.OutputDirError, match="not writable"):
            sio.check_output_dir(ro)
    finally:
        ro.chmod(0o755)


def test_checkpoint_round_trip_and_parameter_mismatch(tmp_path):
    path = sio.work_directory(tmp_path / "out") / "c.npz"
    assert path.parent.name == "out.work"
    params = {"seed": 1, "etas": np.array([0.0, 0.1])}
    assert sio.read_checkpoint(path, parameters=params) is None
    entries = {"0": {"a.0": np.array([1.5, np.nan]), "b": np.array([True, False])}, "4": {"a.0": np.arange(3)}}
    sio.write_checkpoint(path, entries, parameters=params)
    back = sio.read_checkpoint(path, parameters={"etas": [0.0, 0.1], "seed": 1})  # JSON-equal parameters
    assert sorted(back) == ["0", "4"]
    for k in entries:
        for name, arr in entries[k].items():
            assert back[k][name].dtype == arr.dtype
            np.testing.assert_array_equal(back[k][name], arr)
    with pytest.raises(ValueError, match=r"other parameters \(seed: 1 in the checkpoint, 2 now\)"):
        sio.read_checkpoint(path, parameters={"seed": 2, "etas": [0.0, 0.1]})
    path.write_bytes(b"garbage")
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        sio.read_checkpoint(path, parameters=params)


def test_rows_columns_round_trip_is_exact():
    rows = [
        {"s": "exact", "i": 3, "f": 0.1 + 0.2, "n": float("nan"), "b": True},
        {"s": "closed_form", "i": -1, "f": 1e-300, "n": 2.0, "b": False},
    ]
    names = ["s", "i", "f", "n", "b"]
    back = sio.columns_to_rows(sio.rows_to_columns(rows, names), names)
    for r, q in zip(rows, back, strict=True):
        for k in names:
            assert type(q[k]) is type(r[k]), k
            assert repr(q[k]) == repr(r[k]), k


def test_run_main_turns_ctrl_c_into_exit_130(capsys):
    from sdtheory.cli import run_main

    def interrupted(argv):
        raise KeyboardInterrupt("interrupted; results/x was not changed")

    assert run_main(interrupted, "prog.py") == 130
    err = capsys.readouterr().err
    assert err == "prog.py: interrupted; results/x was not changed\n"
    assert run_main(lambda argv: {"rows": []}, "prog.py") == 0
    assert run_main(lambda argv: 3, "prog.py") == 3


def test_check_output_dir_unwritable_simulated(tmp_path, monkeypatch):
    """The same check as above, also where the tests run as root: the write probe fails."""
    import tempfile

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkdtemp", denied)
    with pytest.raises(sio.OutputDirError, match="is not writable .Permission denied."):
        sio.check_output_dir(tmp_path / "out")


def test_exit_script_ends_an_interrupted_script_with_130_and_one_line():
    """exit_script ends the process itself after Ctrl-C (os._exit: no teardown racing XLA's compile threads)."""
    import subprocess
    import sys

    code = (
        "from sdtheory.cli import exit_script\n"
        "def main(argv):\n"
        "    raise KeyboardInterrupt('interrupted; results/x was not changed')\n"
        "exit_script(main, 'prog.py')\n"
        "print('not reached')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 130, proc.stderr
    assert proc.stderr == "prog.py: interrupted; results/x was not changed\n"
    assert proc.stdout == ""
    ok = subprocess.run(
        [sys.executable, "-c", "from sdtheory.cli import exit_script\nexit_script(lambda argv: 3, 'prog.py')"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (ok.returncode, ok.stderr) == (3, "")


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_ctrl_c_lost_in_a_gc_callback_is_raised_at_the_next_interruptible_callback(capsys):
    """Python discards an exception raised in a gc callback (JAX has one): the run must still stop."""
    import gc
    import signal

    from sdtheory.cli import interruptible, run_main

    before = signal.getsignal(signal.SIGINT)  # default_int_handler, or SIG_IGN under a background job
    calls = []
    hook = sys.unraisablehook

    def main(argv):
        def ctrl_c_during_gc(phase, info):
            if phase == "start":
                os.kill(os.getpid(), signal.SIGINT)

        gc.callbacks.append(ctrl_c_during_gc)
        try:
            gc.collect()  # the KeyboardInterrupt is raised inside the callback and discarded
        finally:
            gc.callbacks.remove(ctrl_c_during_gc)
        calls.append("went on")
        interruptible(calls.append)("chunk 1 kept")
        calls.append("not reached")

    assert run_main(main, "prog.py") == 130
    assert calls == ["went on", "chunk 1 kept"]
    assert capsys.readouterr().err == "prog.py: interrupted\n"  # no "Exception ignored" traceback either
    assert run_main(lambda argv: interruptible(calls.append)("later run"), "prog.py") == 0  # the flag is reset
    assert signal.getsignal(signal.SIGINT) is before  # run_main restored the handler
    assert sys.unraisablehook is hook  # and the unraisable hook


# --------------------------------------------------------------------------
# Commits that cannot happen: refused up front, or (late) the staged set kept; disk full while staging
# --------------------------------------------------------------------------


def test_output_dir_that_cannot_be_renamed_is_refused_up_front(tmp_path, monkeypatch):
    """A mount point as --out passed the check and failed (EBUSY) only at the commit, after the whole run."""
    out = tmp_path / "res"
    with sio.run_directory(out, script="test") as stage:
        _write_set(stage, 1)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert sio.check_output_dir(out) == out.resolve()  # renamed aside and back: nothing changes
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before and _siblings(out) == []
    busy_rename(monkeypatch, out.resolve())
    with pytest.raises(sio.OutputDirError, match=r"res cannot be replaced by a run's outputs: renaming it failed"):
        sio.check_output_dir(out)
    with pytest.raises(sio.OutputDirError, match="cannot be replaced"):
        with sio.run_directory(out, script="test"):
            raise AssertionError("the run started although its commit cannot happen")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before and _siblings(out) == []


@pytest.mark.parametrize("previous", [True, False])
def test_commit_failing_late_keeps_the_staged_set_and_says_where(tmp_path, monkeypatch, previous):
    import errno

    out = tmp_path / "res"
    if previous:
        with sio.run_directory(out, script="test") as stage:
            _write_set(stage, 1)
    before = {p.name: p.read_bytes() for p in out.iterdir()} if previous else None
    (tmp_path / "res.work").mkdir()
    (tmp_path / "res.work" / "c.npz").write_bytes(b"checkpoint")
    monkeypatch.setattr(sio, "_probe_replaceable", lambda target: None)  # the directory became busy after the check
    busy_rename(monkeypatch, out.resolve())
    with pytest.raises(sio.OutputWriteError, match="complete but could not be moved into") as exc:
        with sio.run_directory(out, script="test", parameters={"seed": 2}) as stage:
            _write_set(stage, 2)
    assert exc.value.__cause__.errno == errno.EBUSY
    kept = tmp_path / f"res.unsaved-{os.getpid()}"
    msg = str(exc.value)
    assert f"they are kept in {kept}" in msg and f"the checkpoints in {tmp_path / 'res.work'} are kept" in msg, msg
    assert sio.verify_manifest(kept)["parameters"] == {"seed": 2}  # the complete new set
    assert json.loads((kept / "s.json").read_text()) == {"tag": 2}
    if previous:
        assert f"the previous outputs in {out} are unchanged" in msg
        assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    else:
        assert f"{out} was not created" in msg and not out.exists()
    assert (tmp_path / "res.work" / "c.npz").read_bytes() == b"checkpoint"
    assert _siblings(out) == [f"res.unsaved-{os.getpid()}", "res.work"]
    monkeypatch.undo()
    with sio.run_directory(out, script="test") as stage:  # the next run leaves the kept set alone
        _write_set(stage, 3)
    assert kept.is_dir() and json.loads((out / "s.json").read_text()) == {"tag": 3}


def test_disk_full_while_staging_keeps_the_previous_set_and_says_so(tmp_path, monkeypatch):
    import errno

    out = tmp_path / "res"
    with sio.run_directory(out, script="test") as stage:
        _write_set(stage, 1)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    real = sio.atomic_write_bytes

    def full(path, data):
        if ".tmp-" in os.fspath(path):  # files of the staging directory
            raise OSError(errno.ENOSPC, "No space left on device", os.fspath(path))
        return real(path, data)

    monkeypatch.setattr(sio, "atomic_write_bytes", full)
    with pytest.raises(sio.OutputWriteError, match=r"writing the outputs failed \(\[Errno 28\] No space left") as exc:
        with sio.run_directory(out, script="test") as stage:
            _write_set(stage, 2)
    assert f"the previous outputs in {out} are unchanged" in str(exc.value)
    assert isinstance(exc.value, OSError) and exc.value.__cause__.errno == errno.ENOSPC
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert _siblings(out) == []  # the partial staging directory is removed


def test_run_main_prints_an_output_write_error_as_one_line_exit_1(capsys):
    from sdtheory.cli import EXIT_NOT_WRITTEN, run_main

    def main(argv):
        raise sio.OutputWriteError("writing the outputs failed (disk full); the previous outputs in /x are unchanged")

    assert run_main(main, "prog.py") == EXIT_NOT_WRITTEN == 1
    err = capsys.readouterr().err
    assert err == "prog.py: writing the outputs failed (disk full); the previous outputs in /x are unchanged\n"


def test_work_area_entry_that_is_not_a_file_is_refused_up_front(tmp_path):
    """<out>.work/<checkpoint> as a directory crashed a fresh run at its first checkpoint."""
    out = tmp_path / "res"
    (tmp_path / "res.work").mkdir()
    (tmp_path / "res.work" / "c.npz").write_bytes(b"checkpoint")
    assert sio.check_output_dir(out) == out.resolve()
    (tmp_path / "res.work" / "ckpt.npz").mkdir()
    with pytest.raises(sio.OutputDirError, match=r"res.work/ckpt.npz is not a file: the work area .* holds only"):
        sio.check_output_dir(out)


def test_disk_full_writing_a_checkpoint_says_what_the_previous_one_holds(tmp_path, monkeypatch):
    import errno

    path = sio.work_directory(tmp_path / "out") / "c.npz"
    real = sio.atomic_write_bytes

    def full(p, data):
        raise OSError(errno.ENOSPC, "No space left on device", os.fspath(p))

    monkeypatch.setattr(sio, "atomic_write_bytes", full)
    none_kept = r"writing the checkpoint .*c.npz failed .*Errno 28.*; none was kept"
    with pytest.raises(sio.OutputWriteError, match=none_kept):
        sio.write_checkpoint(path, {"0": {"a": np.arange(2)}}, parameters={"seed": 1})
    monkeypatch.setattr(sio, "atomic_write_bytes", real)
    entries = {"0": {"a": np.arange(2)}, "2": {"a": np.arange(2)}}
    sio.write_checkpoint(path, entries, parameters={"seed": 1})
    before = path.read_bytes()
    monkeypatch.setattr(sio, "atomic_write_bytes", full)
    two_kept = r"its previous version is unchanged \(2 finished piece\(s\); --resume"
    with pytest.raises(sio.OutputWriteError, match=two_kept):
        sio.write_checkpoint(path, {**entries, "4": {"a": np.arange(2)}}, parameters={"seed": 1})
    assert path.read_bytes() == before
