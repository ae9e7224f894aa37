"""The main job (`python simulations/phase_diagram.py`, default arguments) timed as a user runs it.

Usage::

    python benchmarks/main_job.py              # one run into a temporary directory
    python benchmarks/main_job.py --repeats 2  # the least wall time of two runs is reported first
    python benchmarks/main_job.py --reference old/phase_diagram.csv  # and compare each CSV with it, byte for byte

Each run is a fresh process (compilation included, no persistent compilation
cache). Recorded per run: wall seconds, the child's CPU seconds (user + system,
from ``getrusage``), the 1-minute load average before and after, and the
``timing`` block of the run's ``summary.json`` (simulation and theory seconds, and their ratio) and, with
``--reference``, whether the run's ``phase_diagram.csv`` is byte-identical to it.
Writes ``benchmarks/results/main_job.json``; README quotes it.
"""

from __future__ import annotations

import argparse
import filecmp
import importlib.metadata
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def one_run(out: Path, reference: str | None = None) -> dict:
    load_before = os.getloadavg()[0]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, str(ROOT / "simulations" / "phase_diagram.py"), "--out", str(out), "--quiet"],
        check=True,
    )
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    timing = json.loads((out / "summary.json").read_text())["timing"]
    run = {
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
        "load_before": round(load_before, 2),
        "load_after": round(os.getloadavg()[0], 2),
        "theory_over_simulation": round(timing["theory_seconds"] / timing["simulation_seconds"], 3),
        "summary_timing": timing,
    }
    if reference is not None:
        run["csv_identical_to_reference"] = filecmp.cmp(out / "phase_diagram.csv", reference, shallow=False)
    return run


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=1, help="number of fresh-process runs (default: 1)")
    ap.add_argument("--reference", help="a phase_diagram.csv each run's CSV is compared with (byte for byte)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "main_job.json"), help="results file")
    args = ap.parse_args(argv)
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):
            runs.append(one_run(Path(tmp) / f"run{i}", args.reference))
            print(json.dumps(runs[-1]), flush=True)
    runs.sort(key=lambda r: r["wall_s"])
    result = {
        "command": "python simulations/phase_diagram.py (default arguments, --quiet)",
        "machine": {
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "jax": importlib.metadata.version("jax"),
            "platform": platform.platform(),
        },
        "runs": runs,
    }
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
