"""Result files: atomic, deterministic CSV / JSON / NPZ / figure writers with provenance (same data, same
bytes); run directories, complete or absent (:func:`run_directory`); checkpoints for ``--resume``
(docs/simulation.md)."""

from __future__ import annotations

import contextlib
import csv
import fnmatch
import hashlib
import io as _io
import json
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Optional

import numpy as np

from . import __version__
from .data import validate_dataset

__all__ = [
    "MANIFEST",
    "OutputDirError",
    "OutputWriteError",
    "atomic_write_bytes",
    "atomic_write_text",
    "check_output_dir",
    "columns_to_rows",
    "fingerprint",
    "progress_printer",
    "git_revision",
    "provenance",
    "read_checkpoint",
    "rows_to_columns",
    "run_directory",
    "save_features",
    "to_jsonable",
    "verify_manifest",
    "work_directory",
    "write_checkpoint",
    "write_csv",
    "write_figure",
    "write_json",
    "write_npz",
]


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (creating its directory); return the path."""
    path = _path_arg(path, file=True)
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data must be bytes, got {type(data).__name__}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """UTF-8 text version of :func:`atomic_write_bytes` (``\\n`` line endings)."""
    if not isinstance(text, str):
        raise TypeError(f"text must be str, got {type(text).__name__}")
    return atomic_write_bytes(path, text.encode("utf-8"))


def git_revision(path: str | os.PathLike | None = None) -> Optional[str]:
    """``git rev-parse HEAD`` of the checkout holding ``path`` (default: this package), ``"+dirty"`` appended
    when tracked files changed; ``None`` outside a git checkout or without git."""
    where = Path(__file__).resolve().parent if path is None else _path_arg(path)
    if where.is_file():
        where = where.parent
    out = []
    try:
        for cmd in (["rev-parse", "HEAD"], ["status", "--porcelain", "--untracked-files=no"]):
            run = subprocess.run(["git", *cmd], cwd=where, capture_output=True, text=True, timeout=10, check=True)
            out.append(run.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        return None
    return out[0] + ("+dirty" if out[1] else "") if out[0] else None


def provenance() -> dict:
    """Package version, git revision and library versions, as a JSON-able dict."""
    import jax

    return {
        "package": "sdtheory",
        "package_version": __version__,
        "git_revision": git_revision(),
        "jax_version": jax.__version__,
        "numpy_version": np.__version__,
        "python_version": platform.python_version(),
        "dtype_policy": "float64 (scoped jax.enable_x64 in every public function)",
    }


def to_jsonable(obj: Any) -> Any:
    """NumPy/JAX scalars and arrays, tuples, paths and NamedTuples as JSON types (``TypeError`` otherwise);
    non-finite floats as the strings ``"nan"``, ``"inf"``, ``"-inf"``."""
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if hasattr(obj, "_asdict") and callable(obj._asdict):  # NamedTuple
        return to_jsonable(obj._asdict())
    if isinstance(obj, str) or obj is None:
        return obj
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if math.isfinite(f) else repr(f)
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if hasattr(obj, "__array__"):
        return to_jsonable(np.asarray(obj).tolist())
    raise TypeError(f"obj: cannot convert {type(obj).__name__} to JSON")


def write_json(path: str | os.PathLike, data: Mapping[str, Any], *, metadata: Optional[Mapping] = None) -> Path:
    """Write ``data`` as indented JSON, atomically; with ``metadata``: ``{"metadata": metadata, **data}``."""
    _mapping_arg(data, "data")
    payload = _json_arg(data, "data")
    if metadata is not None:
        payload = {"metadata": _json_arg(metadata, "metadata"), **payload}
    return atomic_write_text(path, json.dumps(payload, indent=2, allow_nan=False) + "\n")


def _cell(v: Any) -> str:
    if isinstance(v, (bool, np.bool_)):
        return "true" if v else "false"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        return repr(float(v))  # shortest round trip; "nan", "inf", "-inf"
    return "" if v is None else str(v)


def write_csv(
    path: str | os.PathLike,
    columns: Mapping[str, Sequence[Any]] | None = None,
    *,
    rows: Iterable[Mapping[str, Any]] | None = None,
    fieldnames: Sequence[str] | None = None,
    metadata: Optional[Mapping] = None,
) -> Path:
    """Write a table as CSV, atomically: ``columns`` (name -> equal-length 1-D sequences) or ``rows`` (mappings)
    with ``fieldnames``; floats as their shortest round-trip ``repr``, booleans ``true``/``false``; with
    ``metadata``, a sidecar ``<path>.meta.json``."""
    _json_arg(metadata, "metadata")
    if (columns is None) == (rows is None):
        raise ValueError("pass exactly one of columns= or rows=")
    if columns is not None:
        _mapping_arg(columns, "columns")
        names = list(columns)
        if not names:
            raise ValueError("columns must contain at least one column")
        bad = [n for n in names if isinstance(columns[n], (str, bytes)) or not hasattr(columns[n], "__iter__")]
        if bad:
            raise TypeError(f"columns must map names to sequences; {bad[:3]} are not sequences")
        cols = [
            np.asarray(columns[n]).tolist() if hasattr(columns[n], "__array__") else list(columns[n]) for n in names
        ]
        if len({len(c) for c in cols}) != 1:
            lens = dict(zip(names, map(len, cols), strict=True))
            raise ValueError(f"all columns must have the same length, got {lens}")
        body = list(zip(*cols, strict=True))
    else:
        if fieldnames is None:
            raise ValueError("rows= needs fieldnames=")
        names = list(fieldnames)
        body = []
        for i, row in enumerate(rows or ()):
            missing = [n for n in names if n not in row]
            if missing:
                raise ValueError(f"row {i} is missing column(s) {missing}")
            body.append(tuple(row[n] for n in names))
    buf = _io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(names)
    writer.writerows([_cell(v) for v in cells] for cells in body)
    out = atomic_write_text(path, buf.getvalue())
    if metadata is not None:
        write_json(str(out) + ".meta.json", {"file": out.name, "columns": names}, metadata=metadata)
    return out


def write_npz(path: str | os.PathLike, arrays: Mapping[str, Any], *, metadata: Optional[Mapping] = None) -> Path:
    """Save arrays as an uncompressed ``.npz``, atomically; identical arrays give identical bytes; ``metadata``
    as the JSON string ``__metadata__`` (``json.loads(str(np.load(path)["__metadata__"]))``)."""
    _mapping_arg(arrays, "arrays")
    meta = _json_arg(metadata, "metadata")
    if "__metadata__" in arrays:
        raise ValueError("'__metadata__' is reserved for the metadata member")
    items = {k: np.asarray(v) for k, v in arrays.items()}
    for k, v in items.items():
        if v.dtype == object:
            raise TypeError(f"array {k!r} has dtype object; only numeric/bool/str arrays are written")
    if metadata is not None:
        items["__metadata__"] = np.asarray(json.dumps(meta, allow_nan=False))
    buf = _io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, arr in items.items():
            member = _io.BytesIO()
            np.lib.format.write_array(member, arr, allow_pickle=False)
            zf.writestr(zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0)), member.getvalue())
    return atomic_write_bytes(path, buf.getvalue())


def write_figure(fig: Any, path: str | os.PathLike, *, metadata: Optional[Mapping] = None, dpi: int = 150) -> Path:
    """Save a matplotlib figure atomically as the suffix says (png, pdf, svg), with ``metadata`` in the file
    (PNG: text chunks; PDF: ``Subject``, and a fixed ``CreationDate``: reruns differ only if the picture does)."""
    path = Path(path)
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in ("png", "pdf", "svg"):
        raise ValueError(f"figure path must end in .png, .pdf or .svg, got {path.name!r}")
    defaults: dict[str, dict] = {"png": {"Software": "sdtheory"}, "pdf": {"Creator": "sdtheory", "CreationDate": None}}
    meta = dict(defaults.get(fmt, {"Date": None}))
    if metadata is not None:
        text = json.dumps(to_jsonable(metadata), allow_nan=False, sort_keys=True)
        meta["Subject" if fmt == "pdf" else "Description"] = text
    buf = _io.BytesIO()
    fig.savefig(buf, format=fmt, dpi=dpi, metadata=meta, bbox_inches="tight")
    return atomic_write_bytes(path, buf.getvalue())


def progress_printer(prefix: str, stream: Any = None):
    """A progress callback ``(done, total, seconds)`` printing one line per call on ``stream`` (stderr)."""

    def report(done: int, total: int, seconds: float) -> None:
        line = f"[{prefix}] {done}/{total} ({100.0 * done / max(total, 1):5.1f}%) {seconds:7.1f} s"
        print(line, file=stream if stream is not None else sys.stderr, flush=True)

    return report


def save_features(
    path: str | os.PathLike,
    features: Any,
    labels: Any,
    *,
    test_features: Any = None,
    test_labels: Any = None,
    num_classes: Optional[int] = None,
) -> Path:
    """Write a ``.npz`` feature file that :func:`sdtheory.data.load_features` reads back, after the checks of
    a loaded file (messages start with ``path``; nothing is written if they fail); return the path."""
    path = _path_arg(path, file=True)
    if path.suffix.lower() != ".npz":
        raise ValueError(f"{path}: save_features writes .npz files; give a path ending in .npz")
    ds = validate_dataset(features, labels, test_features, test_labels, num_classes, str(path), path.stem)
    arrays: dict[str, Any] = {"features": ds.features, "labels": ds.labels}
    if ds.test_features is not None:
        arrays.update(test_features=ds.test_features, test_labels=ds.test_labels)
    return write_npz(path, arrays)


# Run directories: a run's outputs are one unit (complete or absent)

#: Name of the manifest every run directory ends with (written last).
MANIFEST = "manifest.json"


class OutputDirError(ValueError):
    """The output directory cannot take a run's outputs (a file, not writable, holds foreign files)."""


class OutputWriteError(OSError):
    """A run's outputs or checkpoint could not be written or moved into place; the message says what is kept."""


def _probe_writable(directory: Path, what: str) -> None:
    """Create and remove a directory in ``directory`` (permission bits lie for root and read-only mounts)."""
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".sdtheory-probe-", dir=directory))
    except OSError as exc:
        raise OutputDirError(f"{what} {directory} is not writable ({exc.strerror or exc})") from None


def _probe_replaceable(target: Path) -> None:
    """Rename ``target`` aside and back, as a commit does (a mount point refuses; :func:`_recover` undoes a death)."""
    aside = _sibling(target, "old", os.getpid())
    try:
        os.rename(target, aside)
        os.rename(aside, target)
    except OSError as exc:
        raise OutputDirError(
            f"{target} cannot be replaced by a run's outputs: renaming it failed ({exc.strerror or exc}; a mount "
            "point?); give a directory below it or another path"
        ) from None


def check_output_dir(path: str | os.PathLike, *, outputs: Sequence[str] = ()) -> Path:
    """Check, before anything is computed, that ``path`` can receive a run's outputs (else
    :class:`OutputDirError`); return it resolved. Nothing is created. ``path`` must be absent, empty, or a
    previous run's directory (entries listed in its :data:`MANIFEST` or matching an ``outputs`` glob), writable
    and renamable (not a mount point), its work area holding only files; its nearest existing ancestor writable
    (docs/simulation.md)."""
    target = _path_arg(path).expanduser().resolve()
    if target.parent == target:
        raise OutputDirError(f"{target} is a file system root; give a directory below it")
    if target.exists() and not target.is_dir():
        raise OutputDirError(f"{target} exists and is not a directory")
    ancestor = target.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise OutputDirError(f"{ancestor} is not a directory, so {target} cannot be created")
    _probe_writable(ancestor, "directory")
    work = work_directory(target)
    odd = sorted(e.name for e in work.iterdir() if not e.is_file()) if work.is_dir() else []
    if odd:
        raise OutputDirError(
            f"{work / odd[0]} is not a file: the work area {work} holds only checkpoint files; remove it"
        )
    if target.is_dir():
        _probe_writable(target, "output directory")
        _probe_replaceable(target)
        try:
            listed = set(json.loads((target / MANIFEST).read_text()).get("files", {})) | {MANIFEST}
        except (OSError, ValueError, AttributeError, TypeError):
            listed = {MANIFEST}
        patterns = (*outputs, ".*.tmp")  # .*.tmp: a half-written file of an older run
        foreign = sorted(
            e.name
            for e in target.iterdir()
            if e.name not in listed and not any(fnmatch.fnmatchcase(e.name, pat) for pat in patterns)
        )
        if foreign:
            shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
            raise OutputDirError(
                f"{target} holds entries that are not outputs of this script ({shown}); a run "
                "replaces the whole directory, so give a new or empty directory"
            )
    return target


def work_directory(path: str | os.PathLike) -> Path:
    """The work area ``<path>.work`` of an output directory: checkpoints for ``--resume``, removed when a
    run's outputs are committed."""
    target = _path_arg(path).expanduser().resolve()
    return target.with_name(target.name + ".work")


def _sibling(target: Path, kind: str, pid: int) -> Path:
    return target.with_name(f"{target.name}.{kind}-{pid}")


def _recover(target: Path) -> None:
    """Finish or undo what killed runs (other pids) left next to ``target`` (docs/simulation.md)."""
    if not target.parent.is_dir():
        return
    pattern = re.compile(re.escape(target.name) + r"\.(tmp|old)-(\d+)")
    dead: dict[str, list[Path]] = {"tmp": [], "old": []}
    for entry in target.parent.iterdir():
        m = pattern.fullmatch(entry.name)
        if m and entry.is_dir() and int(m.group(2)) != os.getpid():
            dead[m.group(1)].append(entry)
    if not target.exists():
        complete = [d for d in dead["tmp"] if (d / MANIFEST).is_file()]
        back = complete[0] if complete else (dead["old"][0] if dead["old"] else None)
        if back is not None:
            os.rename(back, target)
            dead["tmp" if complete else "old"].remove(back)
    for d in dead["tmp"] + dead["old"]:
        shutil.rmtree(d, ignore_errors=True)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _files(directory: Path) -> list:
    return sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file())


def verify_manifest(path: str | os.PathLike) -> dict:
    """Check a run directory against its manifest and return it; ``ValueError`` naming the first file that is
    missing, unlisted or whose SHA-256 differs."""
    directory = _path_arg(path)
    if not (directory / MANIFEST).is_file():
        raise ValueError(f"path {directory} has no {MANIFEST}: not a complete run directory")
    manifest = json.loads((directory / MANIFEST).read_text())
    files = manifest["files"]
    for name in sorted(set(_files(directory)) - set(files) - {MANIFEST}):
        raise ValueError(f"{directory}: {name} is not listed in {MANIFEST}")
    for name, entry in files.items():
        if not (directory / name).is_file():
            raise ValueError(f"{directory}: {name} is listed in {MANIFEST} but missing")
        if _sha256(directory / name) != entry["sha256"]:
            raise ValueError(f"{directory}: {name} does not match its SHA-256 in {MANIFEST}")
    return manifest


@contextlib.contextmanager
def run_directory(
    path: str | os.PathLike, *, script: str, parameters: Optional[Mapping] = None, outputs: Sequence[str] = ()
) -> Iterator[Path]:
    """Write a run's outputs as one unit: yields a fresh staging directory, then replaces ``path`` with it.

    When the block ends normally, :data:`MANIFEST` (every file's size and SHA-256, the ``parameters``,
    provenance) is written last and the stage replaces ``path`` (docs/simulation.md); if it raises, ``path``
    is untouched. Raises :class:`OutputDirError` (:func:`check_output_dir`) and :class:`OutputWriteError`: an
    ``OSError`` while staging, or a failed commit (the complete new set is kept in ``<out>.unsaved-<pid>``).
    """
    target = check_output_dir(path, outputs=outputs)
    _recover(target)
    stage = _sibling(target, "tmp", os.getpid())
    try:
        shutil.rmtree(stage, ignore_errors=True)
        stage.mkdir(parents=True)
        yield stage
        names = [n for n in _files(stage) if n != MANIFEST]
        files = {n: {"sha256": _sha256(stage / n), "bytes": (stage / n).stat().st_size} for n in names}
        manifest = {"script": script, "parameters": parameters, "files": files}
        write_json(stage / MANIFEST, manifest, metadata=provenance())
    except BaseException as exc:
        shutil.rmtree(stage, ignore_errors=True)
        if isinstance(exc, OSError) and not isinstance(exc, OutputWriteError):
            raise OutputWriteError(f"writing the outputs failed ({exc}); {_kept(target)}") from exc
        raise
    old = _sibling(target, "old", os.getpid())
    had_old = target.exists()
    try:
        if had_old:
            os.rename(target, old)
        try:
            os.rename(stage, target)
        except BaseException:
            if had_old:
                os.rename(old, target)
            raise
    except OSError as exc:
        unsaved = _sibling(target, "unsaved", os.getpid())
        with contextlib.suppress(OSError):
            os.rename(stage, unsaved)  # out of the way of the next run's clean-up (_recover)
        raise OutputWriteError(
            f"the outputs are complete but could not be moved into {target} ({exc.strerror or exc}); "
            f"they are kept in {unsaved if unsaved.is_dir() else stage}; {_kept(target, old)}"
        ) from exc
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)
    shutil.rmtree(work_directory(target), ignore_errors=True)


def _kept(target: Path, old: Optional[Path] = None) -> str:
    """What a run that could not commit leaves: the previous outputs, the checkpoints."""
    if target.exists():
        text = f"the previous outputs in {target} are unchanged"
    elif old is not None and old.is_dir():
        text = f"the previous outputs are in {old}"
    else:
        text = f"{target} was not created"
    work = work_directory(target)
    if work.is_dir() and any(work.iterdir()):
        text += f"; the checkpoints in {work} are kept (--resume continues from them)"
    return text


# Checkpoints (--resume): completed pieces of a run with the parameters they belong to


def _canonical(parameters: Mapping) -> dict:
    return json.loads(json.dumps(to_jsonable(parameters), allow_nan=False, sort_keys=True))


def _differences(a: Any, b: Any, prefix: str = "") -> list:
    """``(dotted key, a value, b value)`` for every leaf where two JSON-like dicts differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b)) for d in _differences(a.get(k), b.get(k), f"{prefix}{k}.")]
    return [] if a == b else [(prefix.rstrip("."), a, b)]


def _short(v: Any) -> str:
    text = json.dumps(v)
    return text if len(text) <= 60 else text[:57] + "..."


def write_checkpoint(path: str | os.PathLike, entries: Mapping[str, Mapping[str, Any]], *, parameters: Mapping) -> Path:
    """Write completed pieces of a run (``key -> {name: array}``, read back bit for bit by
    :func:`read_checkpoint`) and their parameters to one ``.npz``, atomically; :class:`OutputWriteError`
    from an ``OSError`` (disk full, ...), saying what the previous checkpoint still holds."""
    path = _path_arg(path, file=True)
    _mapping_arg(entries, "entries")
    _json_arg(parameters, "parameters")
    arrays = {}
    for key, piece in entries.items():
        if "/" in key:
            raise ValueError(f"entries: checkpoint keys must not contain '/', got {key!r}")
        if not isinstance(piece, Mapping):
            raise TypeError(f"entries[{key!r}] must be a mapping of array names to arrays, got {type(piece).__name__}")
        for name, arr in piece.items():
            if np.asarray(arr).dtype == object:
                raise TypeError(f"entries[{key!r}][{name!r}] must be a numeric, bool or str array")
            arrays[f"{key}/{name}"] = arr
    meta = {"parameters": _canonical(parameters), "keys": list(entries)}
    try:
        return write_npz(path, arrays, metadata=meta)
    except OSError as exc:  # the atomic write left the previous checkpoint as it was
        kept = "none was kept"
        if path.is_file():
            try:
                with np.load(path, allow_pickle=False) as z:
                    n = len(json.loads(str(z["__metadata__"])).get("keys", []))
                kept = f"its previous version is unchanged ({n} finished piece(s); --resume continues from them)"
            except (OSError, ValueError, KeyError, zipfile.BadZipFile):
                kept = "its previous version is unchanged (unreadable)"
        raise OutputWriteError(f"writing the checkpoint {path} failed ({exc}); {kept}") from exc


def read_checkpoint(path: str | os.PathLike, *, parameters: Mapping) -> Optional[dict]:
    """The pieces of the checkpoint at ``path`` (``key -> {name: array}``), or ``None`` if there is none;
    ``ValueError`` when it is unreadable or was written with other ``parameters`` (naming the differing ones)."""
    path = _path_arg(path)
    _json_arg(parameters, "parameters")
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["__metadata__"]))
            arrays = {k: z[k] for k in z.files if k != "__metadata__"}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{path}: not a readable checkpoint ({exc}); delete it to start over") from None
    have, want = meta.get("parameters", {}), _canonical(parameters)
    if have != want:
        diff = [f"{k}: {_short(a)} in the checkpoint, {_short(b)} now" for k, a, b in _differences(have, want)]
        raise ValueError(
            f"the checkpoint {path} was written with other parameters ({'; '.join(diff)}); rerun "
            "without --resume to start over, or with the checkpoint's parameters"
        )
    entries: dict = {str(k): {} for k in meta.get("keys", [])}
    for name, arr in arrays.items():
        key, _, member = name.partition("/")
        entries.setdefault(key, {})[member] = arr
    return entries


def rows_to_columns(rows: Sequence[Mapping[str, Any]], fieldnames: Sequence[str]) -> dict:
    """Rows (dicts of str/int/float/bool) -> ``{name: 1-D array}`` for :func:`write_checkpoint`."""
    _fieldnames_arg(fieldnames)
    if not isinstance(rows, (list, tuple)):
        raise TypeError(f"rows must be a list of mappings, got {type(rows).__name__}")
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise TypeError(f"rows[{i}] must be a mapping, got {type(row).__name__}")
        missing = [f for f in fieldnames if f not in row]
        if missing:
            raise ValueError(f"rows[{i}] lacks the fieldnames {missing[:8]}")
    return {name: np.asarray([row[name] for row in rows]) for name in fieldnames}


def columns_to_rows(columns: Mapping[str, Any], fieldnames: Sequence[str]) -> list:
    """Inverse of :func:`rows_to_columns`: Python ``str``/``int``/``float``/``bool`` values, bit for bit."""
    _fieldnames_arg(fieldnames)
    _mapping_arg(columns, "columns")
    missing = [f for f in fieldnames if f not in columns]
    if missing:
        raise ValueError(f"columns lacks the fieldnames {missing[:8]}")
    cols = [np.asarray(columns[name]).tolist() for name in fieldnames]
    return [dict(zip(fieldnames, values, strict=True)) for values in zip(*cols, strict=True)]


def fingerprint(*arrays: Any) -> str:
    """SHA-256 of arrays (dtype, shape and bytes; ``None`` allowed): identifies input data in checkpoint parameters."""
    h = hashlib.sha256()
    for a in arrays:
        if a is None:
            h.update(b"none;")
            continue
        arr = np.ascontiguousarray(np.asarray(a))
        h.update(f"{arr.dtype.str}{arr.shape};".encode())
        h.update(arr.tobytes())
    return h.hexdigest()


# Argument checks shared by the writers (errors name the argument)


def _path_arg(path: Any, *, file: bool = False) -> Path:
    """A non-empty ``str`` or ``os.PathLike`` path without NUL bytes (``file``: not a directory)."""
    if isinstance(path, (bytes, bytearray)) or not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike path, got {type(path).__name__}")
    text = os.fspath(path)
    if not isinstance(text, str) or text == "":
        raise ValueError(f"path must be a non-empty path, got {path!r}")
    if "\x00" in text:
        raise ValueError(f"path must not contain NUL bytes, got {path!r}")
    if file and os.path.isdir(text):
        raise ValueError(f"path is a directory, not a file path: {text}")
    return Path(text)


def _mapping_arg(x: Any, name: str) -> None:
    if not isinstance(x, Mapping):
        raise TypeError(f"{name} must be a mapping (dict), got {type(x).__name__}")
    bad = [k for k in x if not isinstance(k, str)]
    if bad:
        raise TypeError(f"{name} must have str keys, got {bad[:3]!r}")


def _json_arg(x: Any, name: str) -> Any:
    """``x`` (``None`` allowed) as JSON types (:func:`to_jsonable`: strict JSON, non-finite floats as strings)."""
    try:
        return to_jsonable(x)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"{name} cannot be written as JSON: {exc}") from None


def _fieldnames_arg(fieldnames: Any) -> None:
    if not isinstance(fieldnames, (list, tuple)) or not all(isinstance(f, str) for f in fieldnames):
        raise TypeError(f"fieldnames must be a list or tuple of str, got {fieldnames!r}")
