"""Load a command-line script from simulations/ as a module, and read its CSV outputs, for the script tests."""

import csv
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
