#!/usr/bin/env python
"""Self-distillation and the PLL student on real features (the SelfPLL protocol).

A thin script: flags -> data -> :func:`sdtheory.experiments.run_protocol` ->
files. The protocol (exact SD rounds 0..R-1, exact PLL students with CE and
GCE, the closed form from the empirical Gram and the fitted block model, under
symmetric / asymmetric / pair / cc label noise), the lam rule
``K N lam = 1 - c`` and the aggregation live in :mod:`sdtheory.experiments`;
the figures in :mod:`sdtheory.plots`; the writers in :mod:`sdtheory.io`.
docs/real_data.md describes the protocol and the results.

Outputs (``--out``, default results/real_data/): ``real_data.csv`` (one row
per feature map, kind, rate, seed, solver, method, round), ``summary.md``
(mean +- std over seeds), ``real_data.json`` (parameters, lam, fitted block
statistics, spectra summaries, timings, provenance), figures
``accuracy_<map>.png/.pdf``, ``diversity_<map>.png`` and ``spectrum.png``.
All files are written atomically.

Run ``python simulations/real_data.py --help`` for the flags;
``--quick`` runs a tiny subset in seconds.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

from sdtheory import NOISE_KINDS
from sdtheory import data as D
from sdtheory import experiments as E
from sdtheory import io as sio
from sdtheory import plots

DEFAULT_RATES = (0.0, 0.1, 0.3, 0.5, 0.6, 0.7, 0.8, 0.9)
DEFAULT_KINDS = ("symmetric", "asymmetric", "cc")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="real_data.py",
        description="Self-distillation and the PLL student on real features: exact solver vs closed form "
                    "vs fitted block model, under symmetric / asymmetric / cc label noise.",
        epilog="The protocol and the lam rule: docs/real_data.md.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    src = p.add_mutually_exclusive_group()
    src.add_argument("--dataset", choices=("digits",), default="digits",
                     help="bundled data set (scikit-learn's handwritten digits, no download)")
    src.add_argument("--features", type=Path, default=None,
                     help="your own features: .npz with features/labels[/test_features/test_labels], "
                          "or stem.npy + stem.labels.npy (see sdtheory.data)")
    p.add_argument("--feature-maps", nargs="+", choices=D.FEATURE_MAPS, default=None,
                   help="feature maps to run (default: standardized relu for digits, identity for --features)")
    p.add_argument("--relu-dim", type=int, default=512, help="number of random ReLU features")
    p.add_argument("--no-center", action="store_true", help="do not centre features before unit-normalising rows")
    p.add_argument("--test-fraction", type=float, default=0.25,
                   help="held-out fraction for the digits split (or for --features without a test split)")
    p.add_argument("--kinds", nargs="+", default=list(DEFAULT_KINDS), choices=NOISE_KINDS,
                   help="label-noise kinds")
    p.add_argument("--rates", nargs="+", type=float, default=list(DEFAULT_RATES), help="noise rates eta")
    p.add_argument("--num-rounds", type=int, default=5,
                   help="number of SD rounds R: rounds 0..R-1 (0 is the teacher), R >= 2")
    p.add_argument("--seeds", type=int, default=3, help="number of noise seeds")
    p.add_argument("--lam", type=float, default=None,
                   help="L2 weight; default: the block rule K N lam = 1 - c (sdtheory.experiments.lam_rule)")
    p.add_argument("--q", type=float, default=0.7, help="GCE exponent of the PLL student")
    p.add_argument("--seed", type=int, default=0, help="master seed (split, random features, noise)")
    p.add_argument("--out", type=Path, default=Path("results/real_data"), help="output directory")
    p.add_argument("--quick", action="store_true",
                   help="tiny subset (20 train / 8 test per class, 2 rates, 2 seeds, rounds 0..2, relu-dim 64)")
    p.add_argument("--no-figures", action="store_true", help="skip the figures")
    return p


def parse_args(argv=None) -> argparse.Namespace:
    """Parsed and checked flags; ``--quick`` applied. Errors exit through ``parser.error`` naming the flag."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.num_rounds < 2:
        parser.error(f"argument --num-rounds: must be >= 2 (the teacher and at least one student), "
                     f"got {args.num_rounds}")
    if args.seeds < 1:
        parser.error(f"argument --seeds: must be >= 1, got {args.seeds}")
    for r in args.rates:
        if not (0.0 <= r <= 1.0):
            parser.error(f"argument --rates: must lie in [0, 1], got {r:g}")
    if args.lam is not None and not (0 < args.lam < math.inf):
        parser.error(f"argument --lam: must be a finite number > 0, got {args.lam:g}")
    if not (0 < args.q <= 1):
        parser.error(f"argument --q: the GCE exponent must lie in (0, 1], got {args.q:g}")
    if args.relu_dim < 1:
        parser.error(f"argument --relu-dim: must be >= 1, got {args.relu_dim}")
    if not (0 < args.test_fraction < 1):
        parser.error(f"argument --test-fraction: must lie in (0, 1), got {args.test_fraction:g}")
    if args.feature_maps is None:
        args.feature_maps = ["identity"] if args.features is not None else ["standardized", "relu"]
    if args.quick:
        args.rates = [0.0, 0.5] if args.rates == list(DEFAULT_RATES) else args.rates
        args.kinds = ["symmetric", "cc"] if args.kinds == list(DEFAULT_KINDS) else args.kinds
        args.seeds = min(args.seeds, 2)
        args.num_rounds = min(args.num_rounds, 3)
        args.relu_dim = min(args.relu_dim, 64)
    return args


def load_dataset(args) -> D.Dataset:
    """Read the data (bundled digits or ``--features``) and prepare the protocol's split / quick subset."""
    if args.features is not None:
        ds = D.load_features(args.features)
    else:
        ds = D.load_digits(key=E.split_key(args.seed), test_fraction=args.test_fraction)
    return E.prepare_dataset(ds, seed=args.seed, test_fraction=args.test_fraction,
                             subset=(20, 8) if args.quick else None)


def main(argv=None) -> dict:
    args = parse_args(argv)
    t_start = time.time()
    ds = load_dataset(args)
    result = E.run_protocol(ds, feature_maps=args.feature_maps, kinds=args.kinds, rates=args.rates,
                            num_seeds=args.seeds, num_rounds=args.num_rounds, lam=args.lam, q=args.q,
                            seed=args.seed, relu_dim=args.relu_dim, center=not args.no_center,
                            progress=sio.progress_printer("real_data"))
    rows = result.rows
    agg = E.aggregate(rows)

    params = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    metadata = {"script": "simulations/real_data.py", "parameters": params, **sio.provenance()}
    out = Path(args.out)
    sio.write_csv(out / "real_data.csv", rows=rows, fieldnames=E.FIELDNAMES, metadata=metadata)
    sio.atomic_write_text(out / "summary.md", E.markdown_summary(
        agg, dataset=result.dataset, feature_maps=result.feature_maps, kinds=args.kinds, rates=args.rates,
        num_rounds=args.num_rounds, num_seeds=args.seeds))
    summary = {
        "dataset": result.dataset,
        "feature_maps": result.feature_maps,
        "timings_seconds": result.timings,
        "total_seconds": time.time() - t_start,
        **E.solver_report(rows),
    }
    sio.write_json(out / "real_data.json", summary, metadata=metadata)
    if not args.no_figures:
        for fmap in args.feature_maps:
            fig = plots.accuracy_figure(agg, feature_map=fmap, kinds=args.kinds, rates=args.rates,
                                        num_rounds=args.num_rounds, q=args.q, num_seeds=args.seeds,
                                        dataset_name=ds.name)
            sio.write_figure(fig, out / f"accuracy_{fmap}.png", metadata=metadata)
            sio.write_figure(fig, out / f"accuracy_{fmap}.pdf", metadata=metadata)
            fig = plots.diversity_figure(agg, feature_map=fmap, kind=args.kinds[0], rates=args.rates,
                                         num_rounds=args.num_rounds)
            sio.write_figure(fig, out / f"diversity_{fmap}.png", metadata=metadata)
        sio.write_figure(plots.spectrum_figure(result.spectra), out / "spectrum.png", metadata=metadata)
    print(f"wrote {out}/ ({len(rows)} rows, {summary['total_seconds']:.0f}s, "
          f"{summary['exact_unconverged']} unconverged exact fits)", file=sys.stderr)
    return {"rows": rows, "aggregate": agg, "summary": summary}


if __name__ == "__main__":
    main()
