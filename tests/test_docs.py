"""The docs cannot drift from the code: every Python example in README.md and docs/ runs, and every test they
cite exists.

A docs example may use a few names it does not define, as a reader's own data would be: ``X`` (features),
``Y`` (one-hot targets of ``X``) and, in a temporary working directory, a features file ``emb.npz`` (the
bundled-digits format of :func:`sdtheory.data.load_features`). Everything else it needs it defines itself.
"""

import re
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
#: Examples that run a Monte Carlo grid or a study: the thorough profile (``-m slow``) runs them.
SLOW = {"smoothing.md#0", "real_data.md#0", "real_data.md#1", "simulation.md#0"}


def _blocks():
    for page in PAGES:
        for i, m in enumerate(re.finditer(r"^```python\n(.*?)^```", page.read_text(), re.S | re.M)):
            name = f"{page.name}#{i}"
            marks = [pytest.mark.slow] if name in SLOW else []
            yield pytest.param(m.group(1), id=name, marks=marks)


def _reader_data(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 8))
    labels = rng.integers(0, 3, 60)
    np.savez(
        tmp_path / "emb.npz",
        features=rng.normal(size=(90, 8)) + np.repeat(np.eye(3, 8) * 3, 30, axis=0),
        labels=np.repeat(np.arange(3), 30),
    )
    return {"X": x, "Y": np.eye(3)[labels]}


@pytest.mark.parametrize("code", list(_blocks()))
def test_docs_example_runs(code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "<docs example>", "exec"), {"__name__": "docs_example", **_reader_data(tmp_path)})


def test_every_test_the_docs_cite_exists():
    defined = {
        m.group(1)
        for p in (ROOT / "tests").glob("test_*.py")
        for m in re.finditer(r"^def (test_\w+)", p.read_text(), re.M)
    }
    package = "\n".join(p.read_text() for p in (ROOT / "sdtheory").rglob("*.py"))
    missing = []
    for page in PAGES:
        text = page.read_text()
        for m in re.finditer(r"tests/(test_\w+\.py)::(test_\w+)", text):
            path = ROOT / "tests" / m.group(1)
            if not path.exists() or f"def {m.group(2)}" not in path.read_text():
                missing.append(f"{page.name}: {m.group(0)}")
        # a bare `test_x` is a test unless the package itself uses the word (test_features, test_gram, ...)
        missing += [
            f"{page.name}: {name}"
            for name in re.findall(r"`(test_\w+)`", text)
            if name not in defined and not re.search(rf"\b{name}\b", package)
        ]
    assert not missing, missing
