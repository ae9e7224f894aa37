"""Result files on disk: atomic CSV / JSON / NPZ / figure writers with provenance.

Only scripts write files; the library's math returns arrays. Every writer

* writes to a temporary file in the destination directory and moves it into
  place with :func:`os.replace`, so an interrupted run never leaves a
  half-written file under the final name;
* is deterministic: the same data gives byte-identical CSV, JSON and NPZ files
  (floats are written with Python's shortest round-trip ``repr``; JSON keys
  keep their insertion order; NPZ members carry no timestamps that change);
* records provenance. :func:`provenance` returns the package version, the git
  revision of the checkout the package was imported from (``None`` outside a
  git checkout), the JAX/NumPy versions and the Python version. JSON files and
  NPZ archives embed it; CSV files get it in a sidecar ``<name>.meta.json``
  when ``metadata=`` is given (so the CSV itself stays a plain table that any
  reader loads); PNG files carry it as text chunks and PDF files in their
  ``Subject``/``Keywords`` fields.
"""

from __future__ import annotations

import csv
import io as _io
import json
import math
import os
import platform
import subprocess
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence

import numpy as np

__all__ = [
    "atomic_write_bytes",
    "atomic_write_text",
    "progress_printer",
    "git_revision",
    "provenance",
    "save_features",
    "to_jsonable",
    "write_csv",
    "write_figure",
    "write_json",
    "write_npz",
]


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()

# --------------------------------------------------------------------------
# Atomic primitives
# --------------------------------------------------------------------------


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temp file in the same dir + ``os.replace``).

    Creates the parent directory. Returns the final :class:`~pathlib.Path`.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data must be bytes, got {type(data).__name__}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the file normal permissions
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """UTF-8 text version of :func:`atomic_write_bytes` (``\\n`` line endings)."""
    if not isinstance(text, str):
        raise TypeError(f"text must be str, got {type(text).__name__}")
    return atomic_write_bytes(path, text.encode("utf-8"))


# --------------------------------------------------------------------------
# Provenance
# --------------------------------------------------------------------------


def git_revision(path: str | os.PathLike | None = None) -> Optional[str]:
    """``git rev-parse HEAD`` of the repository containing ``path``.

    ``path`` defaults to this package's directory. Appends ``"+dirty"`` when
    tracked files have uncommitted changes. Returns ``None`` when ``path`` is
    not inside a git checkout or git is not installed.
    """
    where = Path(path) if path is not None else Path(__file__).resolve().parent
    if where.is_file():
        where = where.parent
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=where, capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    if not rev:
        return None
    return rev + ("+dirty" if dirty else "")


def provenance() -> dict:
    """Package version, git revision and library versions, as a JSON-able dict."""
    import jax

    from . import __version__

    return {
        "package": "sdtheory",
        "package_version": __version__,
        "git_revision": git_revision(),
        "jax_version": jax.__version__,
        "numpy_version": np.__version__,
        "python_version": platform.python_version(),
        # the package's results are float64 whatever the caller's JAX mode (scoped jax.enable_x64)
        "dtype_policy": "float64 (scoped jax.enable_x64 in every public function)",
    }


# --------------------------------------------------------------------------
# JSON
# --------------------------------------------------------------------------


def to_jsonable(obj: Any) -> Any:
    """Convert NumPy/JAX scalars and arrays, tuples, Paths and NamedTuples to JSON types.

    Non-finite floats become the strings ``"nan"``, ``"inf"``, ``"-inf"`` (JSON
    has no literal for them and we never write invalid JSON).
    """
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if hasattr(obj, "_asdict") and callable(obj._asdict):  # NamedTuple
        return to_jsonable(obj._asdict())
    if isinstance(obj, (str, bool)) or obj is None:
        return obj
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        if math.isfinite(f):
            return f
        return "nan" if math.isnan(f) else ("inf" if f > 0 else "-inf")
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if hasattr(obj, "__array__"):
        arr = np.asarray(obj)
        if arr.ndim == 0:
            return to_jsonable(arr.item())
        return [to_jsonable(v) for v in arr.tolist()]
    raise TypeError(f"cannot convert {type(obj).__name__} to JSON")


def write_json(path: str | os.PathLike, data: Mapping[str, Any], *, metadata: Optional[Mapping] = None) -> Path:
    """Write ``data`` as indented JSON, atomically.

    With ``metadata`` (e.g. :func:`provenance` plus run parameters) the file
    holds ``{"metadata": metadata, **data}``.
    """
    if not isinstance(data, Mapping):
        raise TypeError(f"data must be a mapping, got {type(data).__name__}")
    payload = {}
    if metadata is not None:
        payload["metadata"] = metadata
    payload.update(data)
    text = json.dumps(to_jsonable(payload), indent=2, allow_nan=False) + "\n"
    return atomic_write_text(path, text)


# --------------------------------------------------------------------------
# CSV
# --------------------------------------------------------------------------


def _cell(v: Any) -> str:
    if isinstance(v, (bool, np.bool_)):
        return "true" if v else "false"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        f = float(v)
        if math.isnan(f):
            return "nan"
        if math.isinf(f):
            return "inf" if f > 0 else "-inf"
        return repr(f)
    if v is None:
        return ""
    return str(v)


def write_csv(
    path: str | os.PathLike,
    columns: Mapping[str, Sequence[Any]] | None = None,
    *,
    rows: Iterable[Mapping[str, Any]] | None = None,
    fieldnames: Sequence[str] | None = None,
    metadata: Optional[Mapping] = None,
) -> Path:
    """Write a table as CSV, atomically and deterministically.

    Pass either ``columns`` (name -> equal-length 1-D sequences, in column
    order) or ``rows`` (mappings) with ``fieldnames``. Floats use the shortest
    round-trip representation, booleans ``true``/``false``. With ``metadata``
    a sidecar ``<path>.meta.json`` is written (atomically) next to the CSV.
    """
    if (columns is None) == (rows is None):
        raise ValueError("pass exactly one of columns= or rows=")
    if columns is not None:
        names = list(columns.keys())
        if not names:
            raise ValueError("columns must contain at least one column")
        cols = [np.asarray(columns[n]).tolist() if hasattr(columns[n], "__array__") else list(columns[n])
                for n in names]
        lengths = {len(c) for c in cols}
        if len(lengths) != 1:
            raise ValueError(f"all columns must have the same length, got {dict(zip(names, map(len, cols)))}")
        body = list(zip(*cols))
    else:
        if fieldnames is None:
            raise ValueError("rows= needs fieldnames=")
        names = list(fieldnames)
        body = []
        for i, row in enumerate(rows):
            missing = [n for n in names if n not in row]
            if missing:
                raise ValueError(f"row {i} is missing column(s) {missing}")
            body.append(tuple(row[n] for n in names))
    buf = _io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(names)
    for row in body:
        writer.writerow([_cell(v) for v in row])
    out = atomic_write_text(path, buf.getvalue())
    if metadata is not None:
        write_json(str(out) + ".meta.json", {"file": out.name, "columns": names}, metadata=metadata)
    return out


# --------------------------------------------------------------------------
# NPZ
# --------------------------------------------------------------------------


def write_npz(path: str | os.PathLike, arrays: Mapping[str, Any], *, metadata: Optional[Mapping] = None) -> Path:
    """Save arrays as an uncompressed ``.npz``, atomically and deterministically.

    ``metadata`` is stored as the JSON string array ``__metadata__`` (read it
    back with ``json.loads(str(np.load(path)["__metadata__"]))``). Members get
    a fixed timestamp so identical arrays give identical bytes.
    """
    if "__metadata__" in arrays:
        raise ValueError("'__metadata__' is reserved for the metadata member")
    items = {k: np.asarray(v) for k, v in arrays.items()}
    for k, v in items.items():
        if v.dtype == object:
            raise TypeError(f"array {k!r} has dtype object; only numeric/bool/str arrays are written")
    if metadata is not None:
        items["__metadata__"] = np.asarray(json.dumps(to_jsonable(metadata), allow_nan=False))
    buf = _io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, arr in items.items():
            member = _io.BytesIO()
            np.lib.format.write_array(member, arr, allow_pickle=False)
            info = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            zf.writestr(info, member.getvalue())
    return atomic_write_bytes(path, buf.getvalue())


# --------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------


def write_figure(fig: Any, path: str | os.PathLike, *, metadata: Optional[Mapping] = None, dpi: int = 150) -> Path:
    """Save a matplotlib figure atomically; the format follows the suffix (png, pdf, svg).

    Provenance goes into the file: PNG text chunks (one per key), PDF
    ``Subject`` (JSON) with a fixed ``CreationDate`` so reruns differ only if
    the picture does.
    """
    path = Path(path)
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in ("png", "pdf", "svg"):
        raise ValueError(f"figure path must end in .png, .pdf or .svg, got {path.name!r}")
    meta: dict = {}
    text = json.dumps(to_jsonable(metadata), allow_nan=False, sort_keys=True) if metadata is not None else None
    if fmt == "png":
        meta = {"Software": "sdtheory"}
        if text is not None:
            meta["Description"] = text
    elif fmt == "pdf":
        meta = {"Creator": "sdtheory", "CreationDate": None}
        if text is not None:
            meta["Subject"] = text
    else:
        meta = {"Date": None}
        if text is not None:
            meta["Description"] = text
    buf = _io.BytesIO()
    fig.savefig(buf, format=fmt, dpi=dpi, metadata=meta, bbox_inches="tight")
    return atomic_write_bytes(path, buf.getvalue())


def progress_printer(prefix: str, stream: Any = None):
    """A progress callback ``(done, total, seconds)`` that prints one line per call on ``stream`` (stderr).

    For scripts: the library never prints, it calls the callback it is given.
    """
    import sys

    def report(done: int, total: int, seconds: float) -> None:
        print(f"[{prefix}] {done}/{total} ({100.0 * done / max(total, 1):5.1f}%) {seconds:7.1f} s",
              file=stream if stream is not None else sys.stderr, flush=True)

    return report


def save_features(path: str | os.PathLike, features: Any, labels: Any, *, test_features: Any = None,
                  test_labels: Any = None, num_classes: Optional[int] = None) -> Path:
    """Validate and write a ``.npz`` feature file that :func:`sdtheory.data.load_features` reads back.

    The arrays go through the same checks as a loaded file (messages start
    with ``path``); nothing is written if they fail. Written atomically
    (:func:`write_npz`). Returns the path.
    """
    from .data import _validate

    path = Path(path)
    if path.suffix.lower() != ".npz":
        raise ValueError(f"{path}: save_features writes .npz files; give a path ending in .npz")
    ds = _validate(features, labels, test_features, test_labels, num_classes, str(path), path.stem)
    arrays = {"features": ds.features, "labels": ds.labels}
    if ds.test_features is not None:
        arrays["test_features"] = ds.test_features
        arrays["test_labels"] = ds.test_labels
    return write_npz(path, arrays)
