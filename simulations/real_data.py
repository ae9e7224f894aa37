#!/usr/bin/env python
"""Self-distillation and the PLL student on real features (the SelfPLL protocol).

Two label modes (docs/real_data.md, "Which labels each mode uses"):

* default (clean labels): the labels (the digits, or the ``--features``
  file's) are the clean truth. Synthetic noise is drawn on top of them; the
  lam rule fits ``c`` with them; recovery and held-out accuracy are scored
  against them.
* ``--noisy-labels`` (``--features`` only): the file's labels are already
  noisy. No noise is drawn; lam comes from the noisy-label rule (``c``
  corrected for the noise rate, estimated or ``--noise-rate``); the round and
  student are chosen on held-out given labels
  (``SelfDistillationClassifier(select_round="holdout", student="auto")``).
  The file's optional ``clean_labels`` / ``test_clean_labels`` are used only
  for the clean-accuracy columns.

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
statistics, spectra summaries, provenance, and the ``timing`` field), figures
``accuracy_<map>.png/.pdf``, ``diversity_<map>.png`` and ``spectrum.png``,
and ``manifest.json`` (every file's SHA-256, the parameters); with
``--noisy-labels`` one row per feature map, student and round
(:data:`NOISY_FIELDNAMES`), the per-round table and the choice in
``summary.md``, and no figures. The set is
written as one unit (staged next to ``--out``, then swapped in); finished
cells are checkpointed in ``<out>.work/`` and ``--resume`` continues an
interrupted run. Ctrl-C exits with status 130, bad flags or input with 2.

Run ``python simulations/real_data.py --help`` for the flags;
``--quick`` runs a tiny subset (about a minute, mostly compiling; the first
progress line comes within seconds).

Presets (``--preset``): ``package`` (the default: centred unit-norm
features, ``K N lam = 1 - c``) and ``selfpll`` (the SelfPLL reference's
protocol: raw features, ``lam`` = ``--weight-decay``, teacher-initialised PLL
student, no fitted block model, and ``selfpll_table.md`` with SD steps
``1..R`` and PLL in its table layout); docs/real_data.md.
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import sys
import time
from pathlib import Path


def _interrupted_while_starting(signum, frame):
    """Ctrl-C while NumPy/JAX load: one line, status 130 and no traceback (as run_main does later)."""
    print("real_data.py: interrupted while starting; nothing was written", file=sys.stderr, flush=True)
    os._exit(130)  # not an exception: JAX's import-time callbacks would swallow a KeyboardInterrupt


_previous_sigint = signal.signal(signal.SIGINT, _interrupted_while_starting)
try:
    from sdtheory.noise import KINDS as NOISE_KINDS
    from sdtheory import data as D
    from sdtheory import experiments as E
    from sdtheory import io as sio
    from sdtheory import plots
    from sdtheory import SOLVERS
    from sdtheory.predictor import STUDENTS
    import sdtheory as sd
    import numpy as np
    from sdtheory.refine import PLL_INITS
    from sdtheory.cli import (
        add_data_arguments,
        dataset_or_exit,
        HelpFormatter,
        exit_script,
        float_in,
        int_at_least,
        num_rounds_type,
        interrupted,
        interruptible,
        output_dir_or_exit,
        run_parameters,
    )
finally:
    signal.signal(signal.SIGINT, _previous_sigint)

SCRIPT = "simulations/real_data.py"
#: What a previous run leaves in --out (a run replaces the directory as a whole).
OUTPUTS = (
    "real_data.csv",
    "real_data.csv.meta.json",
    "summary.md",
    "real_data.json",
    "accuracy_*.png",
    "accuracy_*.pdf",
    "diversity_*.png",
    "spectrum.png",
    "selfpll_table.md",
)
CHECKPOINT = "real_data.checkpoint.npz"
DEFAULT_RATES = (0.0, 0.1, 0.3, 0.5, 0.6, 0.7, 0.8, 0.9)
DEFAULT_KINDS = ("symmetric", "asymmetric", "cc")
PRESETS = ("package", "selfpll")
#: The SelfPLL reference's default weight decay (its per-data-set values: 5e-5 for CIFAR-100,
#: Caltech-256, Food-101; 5e-4 for Caltech-101, StanfordCars, Flowers-102).
SELFPLL_WEIGHT_DECAY = 5e-4
#: The columns of a --noisy-labels row (one per feature map, student and round).
NOISY_FIELDNAMES = (
    "feature_map",
    "lam",
    "student",
    "round",
    "selected",
    "val_agree",
    "test_agree",
    "train_acc",
    "test_acc",
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="real_data.py",
        description="Self-distillation and the PLL student on real features: exact solver vs closed form "
        "vs fitted block model, under symmetric / asymmetric / cc label noise. Labels: by default the labels "
        "(digits or --features) are the clean truth: noise is drawn on top of them, and the lam rule and every "
        "score use them. With --noisy-labels the file's labels are taken as already noisy: no noise is drawn, "
        "lam and the choice of round use only them, and clean labels (the file's clean_labels / "
        "test_clean_labels, optional) serve only the clean-accuracy columns.",
        epilog="The protocol and the lam rule: docs/real_data.md. Exit status: 0 done, 2 bad flags or input "
        "file, 130 interrupted (Ctrl-C).",
        formatter_class=HelpFormatter,
    )
    add_data_arguments(p, datasets={"digits": "scikit-learn's handwritten digits, bundled (no download)"})
    p.add_argument(
        "--feature-maps",
        nargs="+",
        choices=D.FEATURE_MAPS,
        default=None,
        help="feature maps to run (unset: standardized relu for digits, identity for --features)",
    )
    p.add_argument(
        "--noisy-labels",
        action="store_true",
        help="the --features file's labels are already noisy: no synthetic noise (--kinds, --rates, --seeds do "
        "not apply), lam from the noisy-label rule, the round and student chosen by held-out agreement with the "
        "given labels; clean_labels / test_clean_labels in the file, if any, only for evaluation",
    )
    p.add_argument(
        "--noise-rate",
        type=float_in(0.0, 1.0, hi_open=True),
        default=None,
        help="with --noisy-labels: the known symmetric noise rate for the lam rule (unset: estimated from "
        "nearest-neighbour label agreement)",
    )
    p.add_argument("--kinds", nargs="+", default=list(DEFAULT_KINDS), choices=NOISE_KINDS, help="label-noise kinds")
    p.add_argument(
        "--rates",
        nargs="+",
        type=float_in(0.0, 1.0),
        default=list(DEFAULT_RATES),
        help="noise rates eta, each in [0, 1]",
    )
    p.add_argument(
        "--num-rounds",
        type=num_rounds_type(2),
        default=5,
        help="number of SD rounds R: rounds 0..R-1 (0 is the teacher), R >= 2 (the teacher and at least one student)",
    )
    p.add_argument("--seeds", type=int_at_least(1), default=3, help="number of noise seeds")
    p.add_argument(
        "--lam",
        type=float_in(0.0, math.inf, lo_open=True, hi_open=True),
        default=None,
        help="L2 weight (> 0); default: the block rule K N lam = 1 - c (sdtheory.experiments.lam_rule)",
    )
    p.add_argument(
        "--q", type=float_in(0.0, 1.0, lo_open=True), default=0.7, help="GCE exponent of the PLL student, in (0, 1]"
    )
    p.add_argument(
        "--pll-init",
        choices=PLL_INITS,
        default=None,
        help="starting weights of the exact PLL students (default teacher: the teacher's weights, as SelfPLL)",
    )
    p.add_argument(
        "--solver",
        choices=tuple(SOLVERS),
        default="auto",
        help="exact solver (default auto, truncated Newton)",
    )
    p.add_argument(
        "--preset",
        choices=PRESETS,
        default="package",
        help="package: centred unit-norm features and K N lam = 1 - c; selfpll: SelfPLL's protocol (raw "
        "features, lam = --weight-decay, teacher-initialised PLL student, no fitted block model, "
        "selfpll_table.md in its table layout); docs/real_data.md",
    )
    p.add_argument(
        "--weight-decay",
        type=float_in(0.0, math.inf, lo_open=True, hi_open=True),
        default=None,
        help=f"--preset selfpll: PyTorch SGD weight decay on the mean loss; lam = weight decay "
        f"(default {SELFPLL_WEIGHT_DECAY:g}, SelfPLL's)",
    )
    p.add_argument("--seed", type=int_at_least(0), default=0, help="master seed (split, random features, noise)")
    p.add_argument(
        "--out",
        type=Path,
        default=Path("results/real_data"),
        help="output directory; a run replaces its previous outputs as a unit (new, empty or a "
        "previous run's directory)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted run: reuse the finished cells kept in <out>.work/ (refused if "
        "they were computed with other parameters or data)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="tiny subset (20 train / 8 test per class, 2 rates, 2 seeds, rounds 0..2, relu-dim 64)",
    )
    p.add_argument("--no-figures", action="store_true", help="skip the figures")
    return p


def parse_args(argv=None, parser=None) -> argparse.Namespace:
    """Parsed and checked flags; ``--quick`` applied. Errors exit through ``parser.error`` naming the flag."""
    parser = parser or build_parser()
    args = parser.parse_args(argv)
    apply_preset(args, parser)
    if args.noisy_labels:
        if args.features is None:
            parser.error("argument --noisy-labels: needs --features (the digits' labels are clean)")
        for flag in ("kinds", "rates", "seeds"):
            if getattr(args, flag) != parser.get_default(flag):
                parser.error(f"argument --{flag}: draws synthetic noise; --noisy-labels uses the labels as given")
        if args.resume:
            parser.error("argument --resume: a --noisy-labels run has no cells to resume")
    elif args.noise_rate is not None:
        parser.error("argument --noise-rate: goes with --noisy-labels")
    if args.feature_maps is None:
        args.feature_maps = ["identity"] if args.features is not None else ["standardized", "relu"]
    if args.quick:
        args.rates = [0.0, 0.5] if args.rates == list(DEFAULT_RATES) else args.rates
        args.kinds = ["symmetric", "cc"] if args.kinds == list(DEFAULT_KINDS) else args.kinds
        args.seeds = min(args.seeds, 2)
        args.num_rounds = min(args.num_rounds, 3)
        args.relu_dim = min(args.relu_dim, 64)
    return args


def apply_preset(args, parser) -> None:
    """Resolve ``--preset`` into the run's parameters (``normalize``, ``lam``, ``pll_init``, ``solver``, ``table``).

    ``selfpll``: raw features (no centring, no unit norm: ``no_center``,
    ``normalize=False``), ``lam`` = ``--weight-decay`` (default
    :data:`SELFPLL_WEIGHT_DECAY`), ``pll_init="teacher"``, feature map
    ``identity`` unless ``--feature-maps`` is given, and the SelfPLL table.
    Flags that contradict it (``--lam``, ``--pll-init zero``) are refused.
    """
    if args.preset == "selfpll":
        if args.lam is not None:
            parser.error("argument --lam: --preset selfpll sets lam from --weight-decay (lam = weight decay)")
        if args.pll_init not in (None, "teacher"):
            parser.error("argument --pll-init: --preset selfpll starts the PLL student from the teacher")
        args.weight_decay = SELFPLL_WEIGHT_DECAY if args.weight_decay is None else args.weight_decay
        args.lam = args.weight_decay
        args.no_center, args.normalize = True, False
        args.pll_init = "teacher"
        if args.feature_maps is None:
            args.feature_maps = ["identity"]
        args.table = "selfpll"
    else:
        if args.weight_decay is not None:
            parser.error("argument --weight-decay: goes with --preset selfpll (the package preset uses --lam)")
        args.normalize = True
        args.pll_init = "teacher" if args.pll_init is None else args.pll_init
        args.table = "package"


def load_dataset(args) -> D.Dataset:
    """Read the data (bundled digits or ``--features``) and prepare the protocol's split / quick subset."""
    if args.features is not None:
        ds = D.load_features(args.features)
        if not args.noisy_labels and (ds.clean_labels is not None or ds.test_clean_labels is not None):
            raise ValueError(
                f"{args.features}: has clean labels, so its labels are noisy: pass --noisy-labels (the default "
                "mode takes the labels as the clean truth and draws noise on top)"
            )
    else:
        ds = D.load_digits(key=E.split_key(args.seed), test_fraction=args.test_fraction)
    return E.prepare_dataset(
        ds, seed=args.seed, test_fraction=args.test_fraction, subset=(20, 8) if args.quick else None
    )


def main(argv=None) -> dict:
    parser = build_parser()
    args = parse_args(argv, parser)
    t_start = time.perf_counter()
    out = output_dir_or_exit(parser, args.out, outputs=OUTPUTS)  # before any computation
    ds = dataset_or_exit(parser, args, load_dataset)
    # the flags, without where the files go (--out) or how the run was started (--resume)
    params = run_parameters(args, exclude=("out", "resume"))
    metadata = {"script": SCRIPT, "parameters": params, **sio.provenance()}
    try:
        return (run_noisy if args.noisy_labels else run_clean)(parser, args, ds, out, params, metadata, t_start)
    except E.FeatureMapError as exc:  # the data cannot be used with a feature map: its message, no traceback
        parser.exit(1, f"{parser.prog}: error: {exc}\n")
    except sio.OutputDirError as exc:  # the directory changed while computing
        parser.error(f"argument --out: {exc}")


def run_clean(parser, args, ds, out, params, metadata, t_start) -> dict:
    """The default mode: synthetic noise on the clean labels, every method, scored against the clean labels."""
    checkpoint = sio.work_directory(out) / CHECKPOINT
    ckpt_params = {
        "parameters": {k: v for k, v in params.items() if k != "no_figures"},
        "data_sha256": sio.fingerprint(ds.features, ds.labels, ds.test_features, ds.test_labels),
        "package_version": metadata["package_version"],
        "git_revision": metadata["git_revision"],
    }
    saved: dict = {}  # checkpoint entry name -> the cell's rows as columns
    if args.resume:
        try:
            saved = sio.read_checkpoint(checkpoint, parameters=ckpt_params) or {}
        except ValueError as exc:
            parser.error(f"argument --resume: {exc}")
        print(
            f"real_data: resuming: {len(saved)} finished cell(s) in {checkpoint}"
            if saved
            else f"real_data: --resume: no checkpoint in {checkpoint}, starting from the beginning",
            file=sys.stderr,
        )
    elif checkpoint.exists():
        print(
            f"real_data: starting over; the checkpoint {checkpoint} of an interrupted run will be replaced "
            "(pass --resume to continue it instead)",
            file=sys.stderr,
        )
    completed = {}
    for columns in saved.values():
        rows = sio.columns_to_rows(columns, E.FIELDNAMES)
        completed[(rows[0]["feature_map"], rows[0]["kind"], rows[0]["rate"], rows[0]["seed"])] = rows
    resumed = len(completed)

    def keep(cell, rows):
        saved[f"cell{len(saved)}"] = sio.rows_to_columns(rows, E.FIELDNAMES)
        sio.write_checkpoint(checkpoint, saved, parameters=ckpt_params)

    try:
        result = E.run_protocol(
            ds,
            feature_maps=args.feature_maps,
            kinds=args.kinds,
            rates=args.rates,
            num_seeds=args.seeds,
            num_rounds=args.num_rounds,
            lam=args.lam,
            q=args.q,
            seed=args.seed,
            relu_dim=args.relu_dim,
            center=not args.no_center,
            normalize=args.normalize,
            init=args.pll_init,
            solver=args.solver,
            progress=sio.progress_printer("real_data"),
            completed=completed,
            on_cell=interruptible(keep),
        )
        rows = result.rows
        agg = E.aggregate(rows)
        summary = {
            "dataset": result.dataset,
            "feature_maps": result.feature_maps,
            **E.solver_report(rows),
        }
        with sio.run_directory(out, script=SCRIPT, parameters=params, outputs=OUTPUTS) as stage:
            sio.write_csv(stage / "real_data.csv", rows=rows, fieldnames=E.FIELDNAMES, metadata=metadata)
            tables = dict(
                dataset=result.dataset,
                feature_maps=result.feature_maps,
                kinds=args.kinds,
                rates=args.rates,
                num_rounds=args.num_rounds,
                num_seeds=args.seeds,
            )
            sio.atomic_write_text(stage / "summary.md", E.markdown_summary(agg, **tables))
            if args.table == "selfpll":
                sio.atomic_write_text(
                    stage / "selfpll_table.md", E.selfpll_table(agg, weight_decay=args.weight_decay, **tables)
                )
            if not args.no_figures:
                for fmap in args.feature_maps:
                    fig = plots.accuracy_figure(
                        agg,
                        feature_map=fmap,
                        kinds=args.kinds,
                        rates=args.rates,
                        num_rounds=args.num_rounds,
                        q=args.q,
                        num_seeds=args.seeds,
                        dataset_name=ds.name,
                    )
                    sio.write_figure(fig, stage / f"accuracy_{fmap}.png", metadata=metadata)
                    sio.write_figure(fig, stage / f"accuracy_{fmap}.pdf", metadata=metadata)
                    fig = plots.diversity_figure(
                        agg, feature_map=fmap, kind=args.kinds[0], rates=args.rates, num_rounds=args.num_rounds
                    )
                    sio.write_figure(fig, stage / f"diversity_{fmap}.png", metadata=metadata)
                sio.write_figure(plots.spectrum_figure(result.spectra), stage / "spectrum.png", metadata=metadata)
            # "timing" is the one field that differs between two runs with the same parameters (docs/real_data.md)
            summary["timing"] = {
                "feature_map_seconds": result.timings,
                "resumed_cells": resumed,
                "total_seconds": round(time.perf_counter() - t_start, 3),
            }
            sio.write_json(stage / "real_data.json", summary, metadata=metadata)
    except KeyboardInterrupt:
        raise interrupted(out, checkpoint, saved, "cell") from None
    print(
        f"wrote {out}/ ({len(rows)} rows, {summary['timing']['total_seconds']:.0f}s, "
        f"{summary['exact_unconverged']} unconverged exact fits)",
        file=sys.stderr,
    )
    return {"rows": rows, "aggregate": agg, "summary": summary}


def run_noisy(parser, args, ds, out, params, metadata, t_start) -> dict:
    """--noisy-labels: per feature map, the estimator's held-out choice of student and round on the given labels."""
    rows, maps = [], {}
    progress = sio.progress_printer("real_data")
    try:
        fmaps = E.noisy_feature_maps(
            ds,
            feature_maps=args.feature_maps,
            lam=args.lam,
            noise_rate=args.noise_rate,
            seed=args.seed,
            relu_dim=args.relu_dim,
            center=not args.no_center,
            normalize=args.normalize,
        )
        for i, (name, x, xt, info) in enumerate(fmaps):
            progress(i, len(args.feature_maps), time.perf_counter() - t_start)
            fm_rows = selection_rows(name, x, xt, ds, info["lam"], args)
            rows += fm_rows
            maps[name] = {**info, **selection_summary(fm_rows)}
        progress(len(args.feature_maps), len(args.feature_maps), time.perf_counter() - t_start)
        k, n, m = ds.num_classes, ds.labels.size, ds.test_labels.size
        summary = {"dataset": f"{ds.name}, N = {n} train / {m} held-out, K = {k}", "feature_maps": maps}
        with sio.run_directory(out, script=SCRIPT, parameters=params, outputs=OUTPUTS) as stage:
            sio.write_csv(stage / "real_data.csv", rows=rows, fieldnames=NOISY_FIELDNAMES, metadata=metadata)
            sio.atomic_write_text(stage / "summary.md", noisy_markdown(summary, rows))
            summary["timing"] = {"total_seconds": round(time.perf_counter() - t_start, 3)}
            sio.write_json(stage / "real_data.json", summary, metadata=metadata)
    except KeyboardInterrupt:
        raise KeyboardInterrupt(f"interrupted; {out} was not changed") from None
    print(f"wrote {out}/ ({len(rows)} rows, {summary['timing']['total_seconds']:.0f}s)", file=sys.stderr)
    return {"rows": rows, "summary": summary}


def selection_rows(name, x, xt, ds, lam, args) -> list:
    """One feature map's rows: every student's chain, fitted once on the given labels (80% of them).

    ``val_agree``: agreement with the held-out 20% of the given labels, the
    criterion of ``SelfDistillationClassifier(select_round="holdout",
    student="auto")``, whose pick is the ``selected`` row; ``test_agree``:
    agreement with the given held-out labels; ``train_acc`` / ``test_acc``:
    clean accuracy against the file's clean labels (NaN without them).
    """
    opts = dict(lam=lam, num_rounds=args.num_rounds, select_round="holdout", solver=args.solver, random_state=args.seed)
    opts["fit_intercept"] = False  # as the protocol's fits and the lam rule: centred features, no intercept
    pll = dict(loss="gce", q=args.q, init=args.pll_init)  # SelfPLL's partial loss
    auto = ds.num_classes >= 3  # the PLL student needs K >= 3
    pick = sd.SelfDistillationClassifier(**(dict(student="auto", **pll) if auto else {}), **opts).fit(x, ds.labels)
    chains = {pick.best_student_: pick}
    for s in STUDENTS if auto else ():  # the other student's chain, same split: its scores = pick.student_scores_[s]
        if s not in chains:
            chains[s] = sd.SelfDistillationClassifier(student=s, **(pll if s == "pll" else {}), **opts).fit(
                x, ds.labels
            )
    nan = np.full(args.num_rounds, np.nan)
    rows = []
    for s in (s for s in STUDENTS if s in chains):
        est = chains[s]
        cols = dict(
            val_agree=est.round_scores_,
            test_agree=est.round_score(xt, ds.test_labels),
            train_acc=nan if ds.clean_labels is None else est.round_score(x, ds.clean_labels),
            test_acc=nan if ds.test_clean_labels is None else est.round_score(xt, ds.test_clean_labels),
        )
        for r in range(args.num_rounds):
            chosen = (s, r) == (pick.best_student_, pick.best_round_)
            rows.append(dict(feature_map=name, lam=lam, student=s, round=r, selected=chosen))
            rows[-1].update({c: float(v[r]) for c, v in cols.items()})
    return rows


def selection_summary(rows) -> dict:
    """The pick and, with clean held-out labels, the oracle's best (student, round) and the gap in test accuracy."""
    sel = next(r for r in rows if r["selected"])
    out = {"selected": {k: sel[k] for k in ("student", "round", "val_agree", "test_acc")}}
    if np.isfinite(sel["test_acc"]):
        best = max(rows, key=lambda r: r["test_acc"])  # first of the ties
        out["oracle"] = {k: best[k] for k in ("student", "round", "test_acc")}
        out["oracle_gap"] = best["test_acc"] - sel["test_acc"]
    return out


def noisy_markdown(summary, rows) -> str:
    """``summary.md`` of a --noisy-labels run: per feature map, lam, the choice and the per-round table (%)."""
    lines = [
        "# Real data, labels as given (--noisy-labels)",
        "",
        f"Data: {summary['dataset']}. No synthetic noise. Chains fitted on 80% of the given training labels; "
        "held-out agreement = agreement with the other 20% (the selection criterion); test agreement = with "
        "the given held-out labels; clean columns only from the file's clean labels ('-' without them).",
        "",
    ]
    for name, info in summary["feature_maps"].items():
        sel = info["selected"]
        head = f"## `{name}`: lam = {info['lam']:.3g} ({info['lam_rule']})"
        if "noise_rate" in info:
            head += (
                f", c = {info['c']:.3f} (given labels: {info['c_given_labels']:.3f}), eta = {info['noise_rate']:.3f}"
            )
        lines += [head, "", f"Selected: {sel['student']} round {sel['round']}."]
        if "oracle" in info:
            o = info["oracle"]
            gap = 100 * info["oracle_gap"]
            lines[-1] += f" Best by clean test accuracy: {o['student']} round {o['round']} (gap {gap:.1f} points)."
        lines += [
            "",
            "| student | round | held-out agreement | test agreement | clean train acc | clean test acc |",
            "|---|---|---|---|---|---|",
        ]
        for r in (r for r in rows if r["feature_map"] == name):
            cells = [f"{100 * r[c]:.1f}" if np.isfinite(r[c]) else "-" for c in NOISY_FIELDNAMES[5:]]
            mark = " (selected)" if r["selected"] else ""
            lines.append(f"| {r['student']} | {r['round']}{mark} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    exit_script(main, "real_data.py")
