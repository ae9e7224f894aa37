"""Result writers: atomic, deterministic, provenance recorded, readable back by standard tools."""

import csv
import json
import os
import re
import struct
import zlib

import numpy as np
import pytest

from sdtheory import io as sio


def _tmp_leftovers(path):
    return [p for p in os.listdir(path) if p.endswith(".tmp")]


def test_csv_round_trip_floats_exact_and_bools(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(50) * 10.0 ** rng.integers(-12, 12, 50)
    cols = {"x": x, "i": np.arange(50), "flag": np.arange(50) % 3 == 0, "name": [f"m{i}" for i in range(50)],
            "opt": [None if i % 7 == 0 else 0.5 for i in range(50)]}
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

    data = {"arr": np.arange(3), "f": np.float32(0.5), "nan": float("nan"), "inf": -np.inf,
            "nt": P(2, np.eye(2)), "t": (1, 2), "b": np.bool_(True)}
    p = sio.write_json(tmp_path / "s.json", data, metadata={"k": 1})
    back = json.loads(p.read_text())  # strict JSON: no NaN literals
    assert back == {"metadata": {"k": 1}, "arr": [0, 1, 2], "f": 0.5, "nan": "nan", "inf": "-inf",
                    "nt": {"a": 2, "b": [[1.0, 0.0], [0.0, 1.0]]}, "t": [1, 2], "b": True}
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
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind = data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
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
