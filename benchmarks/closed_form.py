"""Benchmark: closed-form SD outputs at CIFAR-100 scale, from features.

Run on demand:
``python benchmarks/closed_form.py [--n 50000 --d 512 --k 100 --num-rounds 51]``.

Each case runs in its own subprocess so that its peak resident memory
(``ru_maxrss``) is its own. Reports, in the same run:

* the large case (default N = 50,000, d = 512, K = 100, ``--num-rounds 51``:
  rounds 0..50) from features: spectrum time (the public
  :func:`sdtheory.feature_spectrum`: ``eigh`` of the ``d x d`` matrix
  ``X^T X``), outputs time (the jitted kernel
  :func:`sdtheory.closed_form.sd_outputs_core` on the device spectrum), PLL
  student time (the one top-2 rule, :func:`sdtheory.top2_targets`, plus one
  student round), peak memory, and that memory against the N x N Gram it
  never forms;
* at a size where the N x N path fits (default N = 4,000), the feature path
  against the direct ``eigh`` of the Gram (:func:`sdtheory.gram_spectrum`):
  wall time ratio.

Everything runs in float64 (the package's policy: the public functions enable
it in their own scope; the kernel is called inside ``jax.enable_x64(True)``).
Absolute times on a shared 2-core machine are noise; the ratios are the
numbers to read. Results are written to ``benchmarks/results/closed_form.json``.
The fit-once/evaluate-many comparison of :func:`sdtheory.predictor` is
``benchmarks/predictor.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def _timed(fn):
    import jax

    t0 = time.perf_counter()
    out = fn()
    jax.block_until_ready(out)
    return out, time.perf_counter() - t0


def run_case(path: str, n: int, d: int, k: int, num_rounds: int, seed: int = 0) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    import sdtheory as sd
    from sdtheory.closed_form import sd_outputs_core
    from sdtheory.spectral import Spectrum

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)) / np.sqrt(d)
    y = np.eye(k)[rng.integers(0, k, n)]
    lam = 1e-4
    res = {"path": path, "n": n, "d": d, "k": k, "num_rounds": num_rounds}
    if path == "features":
        make_spec = lambda: sd.feature_spectrum(x)  # noqa: E731
    else:
        g = x @ x.T
        make_spec = lambda: sd.gram_spectrum(g)  # noqa: E731

    with jax.enable_x64(True):
        yj, lamj, r = jnp.asarray(y), jnp.asarray(lam), jnp.arange(num_rounds)

        def device(spec):  # the public spectrum comes back as NumPy; the kernel wants device arrays
            return Spectrum(jnp.asarray(spec.eigvals), jnp.asarray(spec.eigvecs))

        spec, _ = _timed(make_spec)  # compile + warm
        spec = device(spec)
        out, _ = _timed(lambda: sd_outputs_core(spec, yj, lamj, r))
        del out
        spec, t_spec = _timed(make_spec)
        spec = device(spec)
        out, t_out = _timed(lambda: sd_outputs_core(spec, yj, lamj, r))
        res.update(spectrum_s=t_spec, outputs_s=t_out)
        if path == "features":
            # PLL student: the teacher's top-2 classes (the one top-2 rule), then one student round.
            def pll():
                t2 = jnp.asarray(sd.top2_targets(out[0]))
                return sd_outputs_core(spec, t2, lamj, jnp.arange(1))

            _timed(pll)
            _, t_pll = _timed(pll)
            res["pll_student_s"] = t_pll
        res["output_dtype"] = str(out.dtype)
    res["total_s"] = t_spec + t_out + res.get("pll_student_s", 0.0)
    res["output_bytes"] = int(np.prod(out.shape)) * out.dtype.itemsize
    res["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    res["gram_bytes_if_formed"] = n * n * 8
    return res


def _subprocess(args: list[str]) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--_case", *args]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=50_000, help="instances in the large case")
    p.add_argument("--d", type=int, default=512, help="feature dimension")
    p.add_argument("--k", type=int, default=100, help="classes")
    p.add_argument("--num-rounds", type=int, default=51, help="number of rounds R: rounds 0..R-1 (default 51)")
    p.add_argument("--n-small", type=int, default=4_000, help="size for the feature-vs-eigh comparison")
    p.add_argument("--out", default=os.path.join(HERE, "results", "closed_form.json"))
    p.add_argument("--_case", nargs=5, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a._case:
        path, n, d, k, r = a._case
        print(json.dumps(run_case(path, int(n), int(d), int(k), int(r))))
        return
    if a.num_rounds < 1:
        p.error("argument --num-rounds: must be >= 1")
    large = _subprocess(["features", str(a.n), str(a.d), str(a.k), str(a.num_rounds)])
    small_f = _subprocess(["features", str(a.n_small), str(a.d), str(a.k), str(a.num_rounds)])
    small_g = _subprocess(["gram", str(a.n_small), str(a.d), str(a.k), str(a.num_rounds)])
    report = {
        "large_features": large,
        "small_features": small_f,
        "small_gram_eigh": small_g,
        "ratio_eigh_over_features_small": small_g["total_s"] / small_f["total_s"],
        "ratio_gram_bytes_over_peak_rss_large": large["gram_bytes_if_formed"] / large["peak_rss_bytes"],
        "cpu_count": os.cpu_count(),
    }
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    tmp = a.out + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(report, fh, indent=2)
    os.replace(tmp, a.out)
    gb = 1024**3
    print(f"large  N={a.n} d={a.d} K={a.k} rounds 0..{a.num_rounds - 1} from features:")
    print(
        f"  spectrum {large['spectrum_s']:.2f} s, outputs {large['outputs_s']:.2f} s, "
        f"PLL {large.get('pll_student_s', float('nan')):.2f} s, total {large['total_s']:.2f} s"
    )
    print(
        f"  peak RSS {large['peak_rss_bytes'] / gb:.2f} GiB (outputs alone {large['output_bytes'] / gb:.2f} GiB); "
        f"an N x N Gram would be {large['gram_bytes_if_formed'] / gb:.1f} GiB"
    )
    print(
        f"small  N={a.n_small}: features {small_f['total_s']:.2f} s vs eigh {small_g['total_s']:.2f} s "
        f"-> eigh/features = {report['ratio_eigh_over_features_small']:.1f}x"
    )
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
