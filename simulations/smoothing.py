#!/usr/bin/env python
"""Label smoothing vs self-distillation on real features (is SD instance-specific label smoothing?).

A thin script: flags -> data -> :func:`sdtheory.smoothing_study.run_smoothing_study`
-> files. The methods (uniform label smoothing over a grid of eps, rank-matched
Beta smoothing after one refit or at its fixed point, SD rounds, SD with
temperature, the PLL student; all exact softmax fits; the Beta targets mixed
with the hard labels by ``--alpha``, Zhang & Sabuncu's 0.6 by default) and the closed-form
checks live in :mod:`sdtheory.smoothing_study`; docs/smoothing.md describes
the adaptation of Beta smoothing and the results.

Outputs (``--out``, default results/smoothing/): ``smoothing.csv`` (one row
per kind, rate, seed, solver, method, parameter, round), ``smoothing.md``
(mean (std) over seeds), ``smoothing.json`` (parameters, lam, feature map
summary, solver health, provenance, ``timing``), figures
``smoothing_accuracy.png/.pdf`` and ``diversity_gain.png/.pdf``, and
``manifest.json``. Ctrl-C exits with status 130, bad flags or input with 2.

``python simulations/smoothing.py`` runs on the bundled digits in a few
minutes; ``--dataset block`` runs the same study on synthetic block-model
features (``--block-*`` flags); ``--quick`` runs a tiny subset in seconds.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

from sdtheory.noise import KINDS as NOISE_KINDS
from sdtheory import data as D
from sdtheory import experiments as E
from sdtheory import io as sio
from sdtheory import plots
from sdtheory import smoothing_study as S
from sdtheory.cli import (
    add_data_arguments,
    cd_pairs,
    dataset_or_exit,
    HelpFormatter,
    float_in,
    int_at_least,
    num_rounds_type,
    output_dir_or_exit,
    run_main,
    run_parameters,
)

SCRIPT = "simulations/smoothing.py"
OUTPUTS = (
    "smoothing.csv",
    "smoothing.csv.meta.json",
    "smoothing.md",
    "smoothing.json",
    "smoothing_accuracy.png",
    "smoothing_accuracy.pdf",
    "diversity_gain.png",
    "diversity_gain.pdf",
)
DEFAULT_RATES = (0.0, 0.2, 0.4, 0.6)
DEFAULT_KINDS = ("symmetric", "asymmetric", "pair", "cc")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="smoothing.py",
        description="Uniform and Beta label smoothing vs self-distillation (with and without temperature) and "
        "the PLL student, exact softmax linear probe, under label noise.",
        epilog="Methods and the Beta smoothing adaptation: docs/smoothing.md. Exit status: 0 done, 2 bad flags "
        "or input file, 130 interrupted (Ctrl-C).",
        formatter_class=HelpFormatter,
    )
    add_data_arguments(
        p,
        datasets={
            "digits": "scikit-learn's handwritten digits, bundled (no download)",
            "block": "synthetic block-model features (--block-* flags)",
        },
    )
    p.add_argument(
        "--feature-map",
        choices=D.FEATURE_MAPS,
        default=None,
        help="feature map (unset: standardized for digits, identity for --features)",
    )
    p.add_argument("--block-classes", type=int_at_least(2), default=4, help="--dataset block: number of classes K")
    p.add_argument(
        "--block-per-class", type=int_at_least(1), default=100, help="--dataset block: training instances per class"
    )
    p.add_argument(
        "--block-test-per-class", type=int_at_least(1), default=50, help="--dataset block: held-out instances per class"
    )
    p.add_argument(
        "--block-cd",
        type=cd_pairs,
        default=[(0.4, 0.1)],
        help="--dataset block: within- and between-class correlation 'c,d' with d < c < 1 and d >= -c/(K-1)",
    )
    p.add_argument("--block-dim", type=int_at_least(1), default=200, help="--dataset block: feature dimension")
    p.add_argument("--kinds", nargs="+", default=list(DEFAULT_KINDS), choices=NOISE_KINDS, help="label-noise kinds")
    p.add_argument(
        "--rates", nargs="+", type=float_in(0.0, 1.0), default=list(DEFAULT_RATES), help="noise rates eta in [0, 1]"
    )
    p.add_argument(
        "--num-rounds", type=num_rounds_type(2), default=4, help="SD rounds 0..R-1 (0 is the teacher), R >= 2"
    )
    p.add_argument(
        "--eps",
        nargs="+",
        type=float_in(0.0, 1.0, hi_open=True),
        default=[0.1, 0.3, 0.6],
        help="uniform label smoothing weights, each in [0, 1)",
    )
    p.add_argument(
        "--betas",
        nargs="+",
        type=float_in(0.0, math.inf, lo_open=True, hi_open=True),
        default=[3.0],
        help="Beta(beta, 1) smoothing parameters, each > 0 (mean draw beta / (beta + 1))",
    )
    p.add_argument(
        "--alpha",
        type=float_in(0.0, 1.0),
        default=0.6,
        help="weight of the Beta target in the Beta methods' training target (1 - alpha) Y + alpha T_beta, in "
        "[0, 1]; 0.6 is Zhang & Sabuncu's value, 1 the Beta target alone",
    )
    p.add_argument(
        "--taus",
        nargs="+",
        type=float_in(0.0, math.inf, lo_open=True, hi_open=True),
        default=[0.5, 2.0],
        help="SD temperatures, each > 0",
    )
    p.add_argument(
        "--beta-max-iter", type=int_at_least(1), default=20, help="most refits of the iterated Beta smoothing"
    )
    p.add_argument("--seeds", type=int_at_least(1), default=2, help="number of noise seeds")
    p.add_argument(
        "--lam",
        type=float_in(0.0, math.inf, lo_open=True, hi_open=True),
        default=None,
        help="L2 weight (> 0); default: the block rule K N lam = 1 - c (sdtheory.experiments.lam_rule)",
    )
    p.add_argument("--seed", type=int_at_least(0), default=0, help="master seed (split, features, noise, Beta draws)")
    p.add_argument("--out", type=Path, default=Path("results/smoothing"), help="output directory")
    p.add_argument(
        "--quick", action="store_true", help="tiny subset (20 train / 8 test per class, 2 rates, 1 seed, 3 rounds)"
    )
    p.add_argument("--no-figures", action="store_true", help="skip the figures")
    return p


def parse_args(argv=None, parser=None) -> argparse.Namespace:
    parser = parser or build_parser()
    args = parser.parse_args(argv)
    if args.feature_map is None:
        args.feature_map = "identity" if args.features is not None or args.dataset == "block" else "standardized"
    if len(args.block_cd) != 1:
        parser.error("argument --block-cd: give one pair c,d")
    if args.quick:
        args.rates = [0.0, 0.4] if args.rates == list(DEFAULT_RATES) else args.rates
        args.kinds = ["symmetric", "pair"] if args.kinds == list(DEFAULT_KINDS) else args.kinds
        args.seeds = min(args.seeds, 1)
        args.num_rounds = min(args.num_rounds, 3)
        args.relu_dim = min(args.relu_dim, 64)
    return args


def load_dataset(args) -> D.Dataset:
    if args.features is not None:
        ds = D.load_features(args.features)
    elif args.dataset == "block":
        (c, d), key = args.block_cd[0], E.split_key(args.seed)
        sizes = dict(per_class=args.block_per_class, test_per_class=args.block_test_per_class)
        ds = D.block_dataset(key=key, num_classes=args.block_classes, c=c, d=d, dim=args.block_dim, **sizes)
    else:
        ds = D.load_digits(key=E.split_key(args.seed), test_fraction=args.test_fraction)
    return E.prepare_dataset(
        ds, seed=args.seed, test_fraction=args.test_fraction, subset=(20, 8) if args.quick else None
    )


def main(argv=None) -> dict:
    parser = build_parser()
    args = parse_args(argv, parser)
    t_start = time.perf_counter()
    out = output_dir_or_exit(parser, args.out, outputs=OUTPUTS)
    ds = dataset_or_exit(parser, args, load_dataset)
    params = run_parameters(args)
    metadata = {"script": SCRIPT, "parameters": params, **sio.provenance()}
    result = S.run_smoothing_study(
        ds,
        feature_map=args.feature_map,
        kinds=args.kinds,
        rates=args.rates,
        num_seeds=args.seeds,
        num_rounds=args.num_rounds,
        eps=args.eps,
        betas=args.betas,
        taus=args.taus,
        lam=args.lam,
        seed=args.seed,
        relu_dim=args.relu_dim,
        center=not args.no_center,
        beta_max_iter=args.beta_max_iter,
        alpha=args.alpha,
        progress=sio.progress_printer("smoothing"),
    )
    rows = result.rows
    agg = S.aggregate(rows)
    summary = {"dataset": result.dataset, "feature_map": result.feature_map, **E.solver_report(rows)}
    beta_rows = [r for r in rows if r["method"] == "beta_fixed"]
    summary["beta_fixed_point"] = {
        "cells": len(beta_rows),
        "reached": sum(r["fixed_point"] == 1.0 for r in beta_rows),
        "max_refits": max((int(r["refits"]) for r in beta_rows), default=0),
        "alpha": args.alpha,
    }
    common = dict(feature_map=args.feature_map, rates=args.rates, num_rounds=args.num_rounds)
    with sio.run_directory(out, script=SCRIPT, parameters=params, outputs=OUTPUTS) as stage:
        sio.write_csv(stage / "smoothing.csv", rows=rows, fieldnames=S.FIELDNAMES, metadata=metadata)
        sio.atomic_write_text(
            stage / "smoothing.md",
            S.markdown_table(
                agg,
                dataset=result.dataset,
                summary=result.feature_map,
                kinds=args.kinds,
                num_seeds=args.seeds,
                eps=args.eps,
                betas=args.betas,
                taus=args.taus,
                alpha=args.alpha,
                **common,
            ),
        )
        if not args.no_figures:
            fig = plots.smoothing_figure(
                agg,
                kinds=args.kinds,
                eps=args.eps,
                betas=args.betas,
                taus=args.taus,
                num_seeds=args.seeds,
                dataset_name=ds.name,
                **common,
            )
            sio.write_figure(fig, stage / "smoothing_accuracy.png", metadata=metadata)
            sio.write_figure(fig, stage / "smoothing_accuracy.pdf", metadata=metadata)
            fig = plots.diversity_gain_figure(agg, kind=args.kinds[0], **common)
            sio.write_figure(fig, stage / "diversity_gain.png", metadata=metadata)
            sio.write_figure(fig, stage / "diversity_gain.pdf", metadata=metadata)
        # "timing" is the one field that differs between two runs with the same parameters
        summary["timing"] = {"cells_seconds": result.seconds, "total_seconds": round(time.perf_counter() - t_start, 3)}
        sio.write_json(stage / "smoothing.json", summary, metadata=metadata)
    print(
        f"wrote {out}/ ({len(rows)} rows, {summary['timing']['total_seconds']:.0f}s, "
        f"{summary['exact_unconverged']} unconverged exact fits)",
        file=sys.stderr,
    )
    return {"rows": rows, "aggregate": agg, "summary": summary}


if __name__ == "__main__":
    sys.exit(run_main(main, "smoothing.py"))
