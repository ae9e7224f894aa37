"""Load a command-line script from simulations/ as a module, and read its CSV outputs, for the script tests."""

import csv
import errno
import os
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_script(name: str):
    """``simulations/<name>.py`` imported as a fresh module (its ``main`` can then be called in-process)."""
    spec = importlib.util.spec_from_file_location(f"{name}_script", ROOT / "simulations" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    # every script is argparse -> library -> io: the tests call its main(argv) and build_parser()
    assert callable(getattr(mod, "main", None)), f"simulations/{name}.py defines no main(argv)"
    assert callable(getattr(mod, "build_parser", None)), f"simulations/{name}.py defines no build_parser()"
    return mod


def read_csv(path):
    """The rows of a CSV output file as dicts (strings), header keyed."""
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def busy_rename(monkeypatch, target):
    """``os.rename`` of ``target`` (either side) fails with EBUSY, as for a mount point."""
    real = os.rename

    def rename(src, dst, *args, **kwargs):
        if os.fspath(target) in (os.fspath(src), os.fspath(dst)):
            raise OSError(errno.EBUSY, "Device or resource busy", os.fspath(src))
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "rename", rename)


def disk_full(monkeypatch, module, when):
    """``module.atomic_write_bytes`` fails with ENOSPC for the paths where ``when(path)`` holds."""
    real = module.atomic_write_bytes

    def write(path, data):
        if when(path):
            raise OSError(errno.ENOSPC, "No space left on device", os.fspath(path))
        return real(path, data)

    monkeypatch.setattr(module, "atomic_write_bytes", write)
