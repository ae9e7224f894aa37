#!/usr/bin/env python
"""Phase diagram of multi-round self-distillation: theorems vs Monte Carlo.

For every label-noise rate eta on a grid and every seed, draw noisy labels for
a class-wise block model (K balanced classes, feature correlation c within a
class and d across), run multi-round self-distillation (rounds 0..R-1, R =
--num-rounds) and the
PLL student (one round on the teacher's top-2 classes), score the training
predictions against the true classes, and compare with the theorems: the
corruption condition and the first all-correct round r*(eta).

Writes into --out (default results/phase_diagram/), as one unit (the whole set
is staged next to --out and replaces the previous one; an interrupted run
changes nothing):
  phase_diagram.png / .pdf  the figure (heat map + PLL panel)
  phase_map.png / .pdf      the exact theory's 2-D phase map over (eta, lam) or (eta, c)
  phase_diagram.csv         one row per (eta, round, method)
  summary.json              parameters, seeds, provenance, agreement, timing
  manifest.json             every file with its SHA-256, and the parameters
With --preset paper (SelfPLL's synthetic experiment on a perturbed block Gram;
explicit flags override its values) it writes paper.png / .pdf (training
accuracy against the round per noise rate, the block model's r* marked),
paper.csv (one row per (method, eta, seed or mean, round)), summary.json and
manifest.json into --out (default results/paper/) instead.
Finished simulation chunks and theory batches are checkpointed in <out>.work/;
--resume continues an interrupted run from them. Ctrl-C exits with status 130, bad flags with 2.

Column meanings: docs/simulation.md. Run with --help for every flag.
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
    print("phase_diagram.py: interrupted while starting; nothing was written", file=sys.stderr, flush=True)
    os._exit(130)  # not an exception: JAX's import-time callbacks would swallow a KeyboardInterrupt


_previous_sigint = signal.signal(signal.SIGINT, _interrupted_while_starting)
try:
    import numpy as np

    from sdtheory import LOSSES, MODELS, SOLVERS, TIE_TOL
    from sdtheory.noise import KINDS as NOISE_KINDS
    from sdtheory.exact import DEFAULT_MAX_ITER, DEFAULT_TOL
    from sdtheory import io as sio
    from sdtheory._validation import check_cd
    from sdtheory.block import check_sampler_cd
    from sdtheory.cli import (
        correlation,
        HelpFormatter,
        exit_script,
        float_in,
        int_at_least,
        num_rounds_type,
        interrupted,
        interruptible,
        noise_kind,
        output_dir_or_exit,
    )
    from sdtheory import montecarlo as mc
    from sdtheory.noise import condition_threshold
    from sdtheory.montecarlo.theory import REGIONS, prediction_agreement, theory_predictions
    from sdtheory.paper import PAPER, matched_feature_dim, reference_perturbation_size
    from sdtheory.plots import paper_rounds_figure, phase_diagram_figure, phase_map_figure
finally:
    signal.signal(signal.SIGINT, _previous_sigint)

DEFAULT_OUT = os.path.join("results", "phase_diagram")
SCRIPT = "simulations/phase_diagram.py"
#: What a previous run leaves in --out (a run replaces the directory as a whole).
OUTPUTS = (
    "phase_diagram.png",
    "phase_diagram.pdf",
    "phase_diagram.csv",
    "phase_diagram.csv.meta.json",
    "phase_map.png",
    "phase_map.pdf",
    "summary.json",
)
CHECKPOINT = "phase_diagram.checkpoint.npz"
THEORY_CHECKPOINT = "phase_diagram.theory.npz"
PRESETS = ("paper",)
PAPER_OUT = os.path.join("results", "paper")
#: What a previous --preset paper run leaves in --out.
PAPER_OUTPUTS = ("paper.png", "paper.pdf", "paper.csv", "paper.csv.meta.json", "summary.json")


# --------------------------------------------------------------------------
# Argument parsing (validated types: argparse names the flag in its error)
# --------------------------------------------------------------------------


def _clusters(text):
    try:
        ids = [int(t) for t in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated cluster ids like 0,0,1,1, got {text!r}") from None
    return ids


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="phase_diagram.py",
        description=(
            "Monte Carlo phase diagram of multi-round self-distillation (SD) and the PLL student "
            "in the class-wise block model, against the theorems (corruption condition, first "
            "all-correct round r*), linearised and exact, population and finite-sample. With no "
            "arguments: K=4, 100 per class, c=0.4, d=0.1, lam=1e-4, symmetric noise, eta 0..0.8 in "
            "41 steps, rounds 0..15, 32 seeds, exact softmax solver plus the linearised closed form."
        ),
        epilog="Output columns and the simulation model: docs/simulation.md.",
        formatter_class=HelpFormatter,
    )
    g = p.add_argument_group("model")
    g.add_argument("--classes", type=int_at_least(2), default=4, help="number of classes K")
    g.add_argument(
        "--per-class",
        type=int_at_least(1),
        default=100,
        help="training instances per class n (N = K n). On the block Gram the exact solver runs on "
        "the K^2 label types, so its cost does not grow with n; with --dim (sampled features) it "
        "grows like N^2",
    )
    g.add_argument(
        "--c",
        type=correlation,
        default=0.4,
        help="feature correlation between two instances of the same class (d < c < 1)",
    )
    g.add_argument(
        "--d",
        type=correlation,
        default=0.1,
        help="feature correlation between instances of different classes; may be negative while the block "
        "Gram stays positive definite, d > -(1 - c + n c) / (n (K - 1)) for K classes of n (with --dim: "
        "d >= -c / (K - 1))",
    )
    g.add_argument(
        "--lam",
        type=float_in(0.0, math.inf, lo_open=True, hi_open=True),
        default=1e-4,
        help="L2 weight lam of (1/N) sum CE + (lam/2)||W||^2 (> 0)",
    )
    g.add_argument(
        "--dim",
        type=int_at_least(1),
        default=None,
        help="if given, sample Gaussian-mixture features of this dimension whose expected Gram is "
        "the block Gram (feature noise); default: use the block Gram itself",
    )
    g = p.add_argument_group("noise grid")
    g.add_argument(
        "--noise",
        default="symmetric",
        type=noise_kind,
        choices=NOISE_KINDS,
        help="label-noise family (aliases: sym, asym, pairflip); cc needs --clusters",
    )
    g.add_argument(
        "--clusters",
        type=_clusters,
        default=None,
        help="for --noise cc: cluster id of every class, comma-separated (e.g. 0,0,1,1)",
    )
    g.add_argument("--eta-min", type=float_in(0.0, 1.0), default=0.0, help="smallest noise rate")
    g.add_argument("--eta-max", type=float_in(0.0, 1.0), default=0.8, help="largest noise rate")
    g.add_argument("--eta-steps", type=int_at_least(1), default=41, help="number of noise rates (evenly spaced)")
    g.add_argument(
        "--exact-labels",
        action="store_true",
        help="give exactly round(n C_kl) instances of class k the label l (without it: i.i.d. labels)",
    )
    g = p.add_argument_group("rounds and seeds")
    g.add_argument(
        "--num-rounds",
        type=num_rounds_type(1),
        default=16,
        help="number of SD rounds R: rounds 0..R-1 (0 is the teacher)",
    )
    g.add_argument("--seeds", type=int_at_least(1), default=32, help="Monte Carlo repetitions per noise rate")
    g.add_argument("--seed", type=int_at_least(0), default=0, help="PRNG seed (same seed, same files)")
    g = p.add_argument_group("theory")
    g.add_argument(
        "--theory-draws",
        type=int_at_least(1),
        default=128,
        help="draws of the per-class label counts for the finite-sample predictions (no instances)",
    )
    g.add_argument(
        "--map-axis",
        choices=("lam", "c"),
        default="lam",
        help="second axis of the exact phase map (phase_map.png): the L2 weight lam (log grid, "
        "lam/100..lam*100) or the within-class correlation c (d..0.95)",
    )
    g.add_argument("--map-steps", type=int_at_least(2), default=17, help="grid points on the phase map's second axis")
    g = p.add_argument_group("solver")
    g.add_argument(
        "--model",
        choices=MODELS,
        default="exact",
        help="exact: exact softmax solver for SD and PLL (the closed form is run alongside, "
        "it is cheap); closed: only the linearised closed form",
    )
    g.add_argument(
        "--tol",
        type=float_in(0.0, 1.0, lo_open=True),
        default=DEFAULT_TOL,
        help="exact solver: tolerance on the fixed-point residual",
    )
    g.add_argument(
        "--max-iter", type=int_at_least(1), default=DEFAULT_MAX_ITER, help="exact solver: iterations per round"
    )
    g.add_argument(
        "--solver",
        choices=sorted(SOLVERS),
        default="auto",
        help="exact solver algorithm",
    )
    g.add_argument(
        "--pll-loss",
        choices=sorted(LOSSES),
        default="ce",
        help="loss of the exact PLL student: ce (theory) or gce (SelfPLL's generalised CE)",
    )
    g.add_argument("--pll-q", type=float_in(0.0, 1.0, lo_open=True), default=0.7, help="GCE exponent q")
    g.add_argument(
        "--tie-tol",
        type=float_in(0.0, 0.1, hi_open=True),
        default=TIE_TOL,
        help="outputs closer than this are tied: a tie with the true class counts as an error and "
        "top-2 ties go to the lower class index (makes results independent of roundoff)",
    )
    g = p.add_argument_group("run")
    g.add_argument(
        "--out",
        default=DEFAULT_OUT,
        help="output directory; a run replaces its previous outputs as a unit (new, empty or a "
        "previous run's directory)",
    )
    g.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted run: reuse the finished simulation chunks and theory batches kept "
        "in <out>.work/ (refused if "
        "they were computed with other parameters); the files are the same as an uninterrupted "
        "run's",
    )
    g.add_argument(
        "--chunk-size",
        type=int_at_least(1),
        default=None,
        help="grid cells per jitted call (default 64 with the exact solver, else 4096)",
    )
    g.add_argument("--quiet", action="store_true", help="no progress on stderr")
    g.add_argument(
        "--quick",
        action="store_true",
        help="small run (about a minute of CPU, mostly compiling): the defaults become K=3, 6 per class, "
        "4 noise rates up to 0.6, 4 rounds, "
        "2 seeds, 8 theory draws, a 3-point phase map (with --preset paper: 20 per class, 4 rounds, 1 seed); "
        "flags given explicitly still win",
    )
    g = p.add_argument_group("preset")
    g.add_argument(
        "--preset",
        choices=tuple(PRESETS),
        default=None,
        help="paper: SelfPLL's synthetic experiment (K=4, 500 per class, c=0.4, d=0.1, lam=1e-5, symmetric "
        "noise at eta 0.1, 0.3, 0.5, 0.7, rounds 0..9 = steps 1..10, exact solver, 2 seeds, out "
        f"{PAPER_OUT}) on the block Gram perturbed as much as the reference's (Gaussian-mixture features, "
        "--dim from --epsilon); writes paper.{png,pdf,csv} and summary.json instead of the phase diagram. "
        "Flags given explicitly override the preset's values",
    )
    g.add_argument(
        "--epsilon",
        type=float_in(0.0, 1.0, lo_open=True),
        default=None,
        help="with --preset paper: half-width of the reference's uniform Gram perturbation (default 0.05); "
        "--dim defaults to the feature dimension whose Gram deviates from the block Gram by the same "
        "expected Frobenius norm (sdtheory.paper.matched_feature_dim)",
    )
    return p


def _preset_defaults(name: str) -> dict:
    """The flag values of a preset (dest -> value); explicit flags override them."""
    if name != "paper":  # pragma: no cover - choices= refuses any other name
        raise ValueError(f"unknown preset {name!r}")
    etas = PAPER["etas"]
    return {
        "classes": PAPER["num_classes"],
        "per_class": PAPER["per_class"],
        "c": PAPER["c"],
        "d": PAPER["d"],
        "lam": PAPER["lam"],
        "noise": PAPER["noise"],
        "eta_min": min(etas),
        "eta_max": max(etas),
        "eta_steps": len(etas),
        "num_rounds": PAPER["num_rounds"],
        "seeds": 2,
        "model": "exact",
        "out": PAPER_OUT,
        "epsilon": PAPER["epsilon"],
    }


#: The defaults ``--quick`` sets (explicit flags override them); with ``--preset paper``, :data:`QUICK_PAPER`.
QUICK = {
    "classes": 3,
    "per_class": 6,
    "eta_steps": 4,
    "eta_max": 0.6,
    "num_rounds": 4,
    "seeds": 2,
    "theory_draws": 8,
    "map_steps": 3,
}
QUICK_PAPER = {"per_class": 20, "num_rounds": 4, "seeds": 1, "theory_draws": 8, "map_steps": 3}


def preset_etas(args) -> np.ndarray:
    """The noise rates of a run: evenly spaced; with a preset rounded to 12 digits (0.3, not 0.30000000000000004)."""
    etas = np.linspace(args.eta_min, args.eta_max, args.eta_steps)
    return np.round(etas, 12) if args.preset else etas


def parse_args(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.preset is not None or args.quick:  # the preset's / quick values become the defaults; explicit flags win
        if args.preset is not None:
            parser.set_defaults(**_preset_defaults(args.preset))
        if args.quick:
            parser.set_defaults(**(QUICK_PAPER if args.preset == "paper" else QUICK))
        args = parser.parse_args(argv)
    if args.preset is None and args.epsilon is not None:
        parser.error("argument --epsilon: only used with --preset paper")
    try:  # the library's one c/d rule, at these class sizes (and the sampler's, with sampled features)
        check_cd(args.c, args.d, per_class=args.per_class, num_classes=args.classes)
        if args.dim is not None:
            check_sampler_cd(args.c, args.d, args.classes)
    except ValueError as exc:
        parser.error(f"argument --d: must satisfy the block model with --c: {exc}")
    if args.eta_max < args.eta_min:
        parser.error(f"argument --eta-max: must be >= --eta-min (got {args.eta_max:g} < {args.eta_min:g})")
    if args.eta_steps == 1 and args.eta_max != args.eta_min:
        parser.error("argument --eta-steps: must be >= 2 when --eta-min != --eta-max")
    is_cc = args.noise == "cc"
    if is_cc and args.clusters is None:
        parser.error("argument --clusters: required with --noise cc (e.g. --clusters 0,0,1,1)")
    if not is_cc and args.clusters is not None:
        parser.error("argument --clusters: only used with --noise cc")
    if args.clusters is not None and len(args.clusters) != args.classes:
        parser.error(f"argument --clusters: needs one id per class ({args.classes}), got {len(args.clusters)}")
    if args.preset == "paper" and args.dim is None:
        if args.classes * args.per_class < 2:
            parser.error("argument --per-class: --preset paper needs at least 2 instances in all")
        args.dim = matched_feature_dim(
            num_classes=args.classes, per_class=args.per_class, c=args.c, d=args.d, epsilon=args.epsilon
        )
    return parser, args


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------


def _checkpoint_note(args, checkpoint: Path) -> None:
    if checkpoint.exists() and not args.resume and not args.quiet:
        print(
            f"phase_diagram: starting over; the checkpoint {checkpoint} of an interrupted run will be replaced "
            "(pass --resume to continue it instead)",
            file=sys.stderr,
            flush=True,
        )


def main(argv=None) -> int:
    parser, args = parse_args(argv)
    t_start = time.perf_counter()
    paper = args.preset == "paper"
    out = output_dir_or_exit(parser, args.out, outputs=PAPER_OUTPUTS if paper else OUTPUTS)  # before any computation

    if paper:  # the paper's figure is multi-round SD only
        methods: tuple = ("sd_closed",) + (("sd_exact",) if args.model == "exact" else ())
    else:
        methods = ("sd_closed", "pll_closed") + (("sd_exact", "pll_exact") if args.model == "exact" else ())
    try:
        config = mc.make_config(
            num_classes=args.classes,
            per_class=args.per_class,
            c=args.c,
            d=args.d,
            lam=args.lam,
            num_rounds=args.num_rounds,
            noise=args.noise,
            methods=methods,
            dim=args.dim,
            exact_labels=args.exact_labels,
            exact_tol=args.tol,
            exact_max_iter=args.max_iter,
            exact_solver=args.solver,
            pll_loss=args.pll_loss,
            pll_q=args.pll_q,
            clusters=args.clusters,
            tie_tol=args.tie_tol,
        )
    except (ValueError, TypeError) as exc:  # the library's one check names the field (c/d, clusters, ...)
        parser.error(f"invalid model: {exc}")
    etas = preset_etas(args)
    sd_m, pll_m = ("sd_exact", "pll_exact") if args.model == "exact" else ("sd_closed", "pll_closed")
    params = {k: (list(v) if isinstance(v, tuple) else v) for k, v in config._asdict().items()}
    params.update(etas=etas, num_seeds=args.seeds, prng_seed=args.seed, model=args.model, chunk_size=args.chunk_size)
    if paper:
        params.update(preset=args.preset, epsilon=args.epsilon)
    meta = {"script": SCRIPT, "parameters": params, **sio.provenance()}

    # --resume: finished chunks of an interrupted run with the same parameters (and devices, code revision)
    checkpoint = sio.work_directory(out) / CHECKPOINT
    ckpt_params = {
        "parameters": params,
        "devices": _devices(),
        "package_version": meta["package_version"],
        "git_revision": meta["git_revision"],
    }
    # the theory's solved batches: a file of their own (small, rewritten after each batch)
    theory_checkpoint = checkpoint.with_name(THEORY_CHECKPOINT)
    theory_params = {**ckpt_params, "theory_draws": args.theory_draws, "map_axis": args.map_axis}
    theory_params["map_values"] = _map_values(args)
    saved: dict = {}
    saved_theory: dict = {}
    if args.resume:
        try:
            saved = sio.read_checkpoint(checkpoint, parameters=ckpt_params) or {}
            if not paper:
                saved_theory = sio.read_checkpoint(theory_checkpoint, parameters=theory_params) or {}
        except ValueError as exc:
            parser.error(f"argument --resume: {exc}")
        if not args.quiet:
            print(
                f"phase_diagram: resuming: {len(saved)} finished chunk(s) and {len(saved_theory)} theory "
                f"batch(es) in {checkpoint.parent}"
                if saved or saved_theory
                else f"phase_diagram: --resume: no checkpoint in {checkpoint.parent}, starting from the beginning",
                file=sys.stderr,
                flush=True,
            )
    else:
        _checkpoint_note(args, checkpoint)
        theory_checkpoint.unlink(missing_ok=True)  # starting over: an earlier run's batches are not reused
    resumed, resumed_theory = len(saved), len(saved_theory)

    def keep(start, chunk):
        saved[str(start)] = chunk
        sio.write_checkpoint(checkpoint, saved, parameters=ckpt_params)

    def keep_theory(start, batch):
        saved_theory[str(start)] = batch
        sio.write_checkpoint(theory_checkpoint, saved_theory, parameters=theory_params)

    try:
        if not args.quiet:
            print(
                f"phase_diagram: {etas.size} noise rates x {args.seeds} seeds = {etas.size * args.seeds} cells, "
                f"rounds 0..{args.num_rounds - 1}, methods {', '.join(config.methods)}",
                file=sys.stderr,
                flush=True,
            )
        t0 = time.perf_counter()
        result = mc.run_grid(
            config,
            etas,
            num_seeds=args.seeds,
            seed=args.seed,
            chunk_size=args.chunk_size,
            progress=None if args.quiet else sio.progress_printer("phase_diagram"),
            completed={int(k): v for k, v in saved.items()},
            on_chunk=interruptible(keep),
        )
        t_sim = time.perf_counter() - t0
        if paper:
            t0 = time.perf_counter()
            theory = paper_theory(config, etas)
            t_theory = time.perf_counter() - t0
            _write_paper_outputs(
                out,
                args,
                config,
                etas,
                result,
                sd_m,
                params,
                meta,
                theory,
                timing=_timing(t_sim, t_theory, resumed),
                t_start=t_start,
            )
            if not args.quiet:
                print(
                    f"phase_diagram --preset paper: wrote {out}/paper.{{png,pdf,csv}}, summary.json and "
                    f"{sio.MANIFEST} in {time.perf_counter() - t_start:.1f} s",
                    file=sys.stderr,
                )
            return 0
        t0 = time.perf_counter()
        if not args.quiet:
            print(
                f"phase_diagram: theory: exact and linearised predictions on label types ({args.theory_draws} "
                f"draws of the label counts per noise rate, phase map over {args.map_axis})",
                file=sys.stderr,
                flush=True,
            )
        preds, pmap = theory_predictions(
            config,
            etas,
            num_draws=args.theory_draws,
            seed=args.seed,
            map_axis=args.map_axis,
            map_values=_map_values(args),
            progress=None if args.quiet else sio.progress_printer("phase_diagram theory"),
            completed={int(k): v for k, v in saved_theory.items()},
            on_chunk=interruptible(keep_theory),
        )
        t_theory = time.perf_counter() - t0
        written = _write_outputs(
            out,
            args,
            config,
            etas,
            result,
            sd_m,
            pll_m,
            params,
            meta,
            preds,
            pmap,
            timing=_timing(t_sim, t_theory, resumed, resumed_theory),
            t_start=t_start,
        )
    except KeyboardInterrupt:
        kept = {**saved, **{f"theory-{k}": v for k, v in saved_theory.items()}}
        raise interrupted(out, checkpoint.parent, kept, "chunk") from None
    except sio.OutputDirError as exc:  # the directory changed while computing
        parser.error(f"argument --out: {exc}")
    except (MemoryError, RuntimeError) as exc:  # NumPy's MemoryError; XLA's RESOURCE_EXHAUSTED (a RuntimeError)
        if not isinstance(exc, MemoryError) and "RESOURCE_EXHAUSTED" not in str(exc):
            raise
        what = (str(exc).strip().splitlines() or ["MemoryError"])[0]
        kept = f"{len(saved)} finished chunk(s) are kept in {checkpoint} (--resume)" if saved else "nothing was kept"
        parser.exit(
            1,
            f"{parser.prog}: error: out of memory ({what}); {out} was not changed; {kept}; lower --chunk-size "
            "(or --num-rounds, --per-class, --seeds, --eta-steps)\n",
        )

    if not args.quiet:
        a = written[sd_m]
        off = a["first_round_offset_vs_population"]
        print(
            f"phase_diagram: wrote {out}/phase_diagram.{{png,pdf,csv}}, summary.json and {sio.MANIFEST} "
            f"in {time.perf_counter() - t_start:.1f} s",
            file=sys.stderr,
        )
        print(
            f"  {sd_m}: population theory agrees with the majority outcome in "
            f"{100 * a['cells_population_vs_majority']:.1f}% of (eta, round) cells; first all-correct "
            f"round offsets (observed - predicted): {off['histogram']}",
            file=sys.stderr,
        )
        pa = written["predictions"][sd_m]
        print(
            "  (eta, round) cells agreeing with the simulation's majority: "
            + ", ".join(f"{k} {100 * v['cells_vs_majority']:.1f}%" for k, v in pa.items()),
            file=sys.stderr,
        )
    return 0


def _map_values(args) -> np.ndarray:
    if args.map_axis == "lam":
        return np.logspace(np.log10(args.lam) - 2, np.log10(args.lam) + 2, args.map_steps)
    return np.linspace(args.d + (0.95 - args.d) / args.map_steps, 0.95, args.map_steps)


def _write_outputs(out, args, config, etas, result, sd_m, pll_m, params, meta, preds, pmap, *, timing, t_start) -> dict:
    """Reduce the result and write every output as one unit into ``out``; return the agreement."""
    table = mc.phase_table(result)
    agree = mc.agreement(result)
    pred_agree = prediction_agreement(result, preds, sd_m, pll_m)
    threshold = condition_threshold(config.noise, config.num_classes, clusters=config.clusters)
    th = result.theory
    obs_median = mc.median_first_all_correct(result, sd_m)
    rstar_mean = mc.mean_empirical_rstar(result)

    solver_name = "exact softmax solver" if args.model == "exact" else "linearised closed form"
    feat = "block Gram" if args.dim is None else f"Gaussian-mixture features, dim {args.dim}"
    title = (
        f"Self-distillation phase diagram: theory vs Monte Carlo ({solver_name}; {feat})\n"
        f"K = {config.num_classes} classes, n = {config.per_class} per class, c = {config.c:g}, "
        f"d = {config.d:g}, $\\lambda$ = {config.lam:g}, {config.noise} label noise, "
        f"{args.seeds} seeds per noise rate, PRNG seed {args.seed}"
    )
    sd_acc = result.accuracy(sd_m).mean(axis=1)  # (E, R)
    curves = mc.accuracy_curves(result, sd_m, pll_m)
    styles = {
        list(curves)[0]: dict(color="#d62728", lw=2.4),
        list(curves)[1]: dict(color="#1f77b4", lw=3.2, alpha=0.55),
        list(curves)[2]: dict(color="#2ca02c", lw=1.8, ls="--"),
        list(curves)[3]: dict(color="0.2", lw=1.0, ls="-."),
        list(curves)[4]: dict(color="k", lw=1.0, ls=":", marker=".", ms=3),
    }
    fig = phase_diagram_figure(
        etas,
        result.rounds,
        sd_acc,
        rstar_population=th.population_rstar,
        rstar_empirical_mean=rstar_mean,
        observed_first=obs_median,
        threshold=threshold if threshold <= etas.max() + 1e-12 else None,
        curves=curves,
        curve_styles=styles,
        title=title,
        heat_label=f"multi-round SD, {'exact' if args.model == 'exact' else 'closed form'}",
        num_classes=config.num_classes,
        extra_boundaries=[
            (
                preds.exact_population_rstar,
                "exact theory: first all-correct round (population, from $C$)",
                dict(color="#e377c2", lw=2.0),
            ),
            (
                preds.exact_finite_median,
                f"exact theory: median first all-correct round at n = {config.per_class} (i.i.d. labels)",
                dict(color="#17becf", lw=2.0, ls="-."),
            ),
        ],
    )
    map_title = (
        f"Exact block model (population): 100% training accuracy within rounds 0..{config.num_rounds - 1}\n"
        f"K = {config.num_classes}, n = {config.per_class}, "
        + (f"c = {config.c:g}, " if args.map_axis == "lam" else f"$\\lambda$ = {config.lam:g}, ")
        + f"d = {config.d:g}, {config.noise} noise, PLL loss {config.pll_loss}"
    )
    map_fig = phase_map_figure(pmap, num_rounds=config.num_rounds, title=map_title)
    fig_meta = {"parameters": params, "package_version": meta["package_version"], "git_revision": meta["git_revision"]}
    summary = {
        "seeds": {
            "prng_seed": args.seed,
            "num_seeds": args.seeds,
            "rule": "seed s uses jax.random.split(jax.random.PRNGKey(prng_seed), num_seeds)[s], split "
            "into (label key, feature key); the same keys for every eta",
        },
        "corruption_threshold": threshold,
        "heat_map_method": sd_m,
        "pll_method": pll_m,
        "agreement": agree,
        "prediction_agreement": pred_agree,
        "theory": {
            "population_rstar": th.population_rstar,
            "population_condition": th.population_condition,
            "mean_empirical_rstar": rstar_mean,
            "population_pll_accuracy": th.population_pll_accuracy,
            "exact_population_rstar": preds.exact_population_rstar,
            "exact_finite_sample_median_rstar": preds.exact_finite_median,
            "linear_finite_sample_median_rstar": preds.linear_finite_median,
            "exact_population_pll_accuracy": preds.exact_population_pll_accuracy,
            "finite_sample_draws": args.theory_draws,
        },
        "phase_map": {
            "axis": pmap.axis,
            "values": pmap.values,
            "etas": pmap.etas,
            "regions": list(REGIONS),
            "region": pmap.region,
            "sd_linear": pmap.sd_linear,
            "pll_linear": pmap.pll_linear,
            "exact_converged": pmap.converged,
        },
        "outputs": [
            "phase_diagram.png",
            "phase_diagram.pdf",
            "phase_diagram.csv",
            "phase_map.png",
            "phase_map.pdf",
            "summary.json",
            sio.MANIFEST,
        ],
    }
    with sio.run_directory(out, script=SCRIPT, parameters=params, outputs=OUTPUTS) as stage:
        sio.write_csv(stage / "phase_diagram.csv", table)
        sio.write_figure(fig, stage / "phase_diagram.png", metadata=fig_meta, dpi=150)
        sio.write_figure(fig, stage / "phase_diagram.pdf", metadata=fig_meta)
        sio.write_figure(map_fig, stage / "phase_map.png", metadata=fig_meta, dpi=150)
        sio.write_figure(map_fig, stage / "phase_map.pdf", metadata=fig_meta)
        # "timing" is the one field that differs between two runs with the same parameters (docs/simulation.md)
        summary["timing"] = {**timing, "total_seconds": round(time.perf_counter() - t_start, 3)}
        sio.write_json(stage / "summary.json", summary, metadata=meta)
    return {**agree, "predictions": pred_agree}


# --------------------------------------------------------------------------
# --preset paper: SelfPLL's synthetic experiment (docs/simulation.md)
# --------------------------------------------------------------------------


def paper_theory(config, etas) -> dict:
    """The block model's first all-correct round per noise rate (population ``C``): linearised and exact.

    ``-1``: no all-correct round (the corruption condition fails; for the
    exact model: none within the search).
    """
    from sdtheory.noise import corruption_matrix
    from sdtheory.theorems import min_rounds

    common = dict(c=config.c, d=config.d, lam=config.lam, per_class=config.per_class)
    lin, exact = [], []
    for eta in np.asarray(etas, dtype=float):
        C = np.asarray(corruption_matrix(config.noise, config.num_classes, float(eta), clusters=config.clusters))
        lin.append(int(min_rounds(C, **common)))
        exact.append(
            int(
                min_rounds(
                    C,
                    **common,
                    model="exact",
                    tie_tol=config.tie_tol,
                    tol=config.exact_tol,
                    max_iter=config.exact_max_iter,
                    solver=config.exact_solver,
                )
            )
        )
    return {"rstar_linear": np.asarray(lin, dtype=np.int64), "rstar_exact": np.asarray(exact, dtype=np.int64)}


def perturbation_sizes(config, *, num_seeds: int, seed: int) -> list:
    """``||X X^T - G||_F`` of every seed's sampled features (the engine's feature keys), G the block Gram."""
    import jax

    from sdtheory.block import block_classes, block_gram, sample_block_features

    classes = block_classes([config.per_class] * config.num_classes)
    gram = np.asarray(block_gram(classes, c=config.c, d=config.d))
    sizes = []
    for key in mc.seed_keys(seed, num_seeds):
        _, feature_key = jax.random.split(key)
        x = np.asarray(
            sample_block_features(
                feature_key, classes, c=config.c, d=config.d, dim=config.dim, num_classes=config.num_classes
            )
        )
        sizes.append(float(np.linalg.norm(x @ x.T - gram)))
    return sizes


def _timing(t_sim, t_theory, resumed, resumed_theory=0) -> dict:
    """The run's ``summary.json`` timing: seconds by phase, resumed chunks, devices and the machine's load."""
    return {
        "simulation_seconds": round(t_sim, 3),
        "theory_seconds": round(t_theory, 3),
        "resumed_chunks": resumed,
        "resumed_theory_batches": resumed_theory,
        "devices": _devices(),
        "load_average_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
    }


def paper_table(result, etas, methods, theory) -> dict:
    """The CSV columns: one row per (method, eta, seed or "mean", round)."""
    cols: dict = {
        k: []
        for k in (
            "method",
            "eta",
            "seed",
            "round",
            "paper_step",
            "accuracy",
            "clean_accuracy",
            "noisy_accuracy",
            "all_correct",
            "converged",
            "rstar_linear",
            "rstar_exact",
        )
    }
    rounds = np.asarray(result.rounds)
    for m in methods:
        st = result.methods[m]
        acc, cl, no = result.accuracy(m), result.clean_accuracy(m), result.noisy_accuracy(m)
        for e, eta in enumerate(etas):
            num_seeds = acc.shape[1]
            for s in [*range(num_seeds), "mean"]:
                for j, r in enumerate(rounds):
                    if s == "mean":
                        vals = (
                            acc[e, :, j].mean(),
                            np.nanmean(cl[e, :, j]) if np.isfinite(cl[e, :, j]).any() else np.nan,
                            np.nanmean(no[e, :, j]) if np.isfinite(no[e, :, j]).any() else np.nan,
                            st.all_correct[e, :, j].mean(),
                            st.converged[e, :, j].mean(),
                        )
                    else:
                        vals = (
                            acc[e, s, j],
                            cl[e, s, j],
                            no[e, s, j],
                            bool(st.all_correct[e, s, j]),
                            bool(st.converged[e, s, j]),
                        )
                    cols["method"].append(m)
                    cols["eta"].append(float(eta))
                    cols["seed"].append(s)
                    cols["round"].append(int(r))
                    cols["paper_step"].append(int(r) + 1)
                    for name, v in zip(
                        ("accuracy", "clean_accuracy", "noisy_accuracy", "all_correct", "converged"), vals, strict=True
                    ):
                        cols[name].append(v if isinstance(v, bool) else float(v))
                    cols["rstar_linear"].append(int(theory["rstar_linear"][e]))
                    cols["rstar_exact"].append(int(theory["rstar_exact"][e]))
    return cols


def _first_all_correct(all_correct) -> np.ndarray:
    """First round with every instance correct, per (eta, seed); -1 if none."""
    ac = np.asarray(all_correct, dtype=bool)
    return np.where(ac.any(axis=-1), ac.argmax(axis=-1), -1)


def _write_paper_outputs(out, args, config, etas, result, sd_m, params, meta, theory, *, timing, t_start) -> None:
    """Figure, CSV and summary of ``--preset paper``, written as one unit into ``out``."""
    n_total = config.num_classes * config.per_class
    solver_name = "exact softmax SD" if sd_m == "sd_exact" else "linearised SD (closed form)"
    title = (
        f"Multi-round self-distillation, SelfPLL's synthetic setting ({solver_name})\n"
        f"K = {config.num_classes}, n = {config.per_class} per class, c = {config.c:g}, d = {config.d:g}, "
        f"$\\lambda$ = {config.lam:g}, {config.noise} noise; Gram of Gaussian-mixture features (dim {config.dim}), "
        f"perturbed like the reference's $\\epsilon$ = {args.epsilon:g}; {args.seeds} seed(s), PRNG seed {args.seed}"
    )
    fig = paper_rounds_figure(
        result.rounds,
        etas,
        result.accuracy(sd_m),
        rstar_linear=theory["rstar_linear"],
        rstar_exact=theory["rstar_exact"],
        title=title,
        method_label=solver_name,
    )
    methods = [m for m in ("sd_exact", "sd_closed") if m in result.methods]
    table = paper_table(result, etas, methods, theory)
    sizes = perturbation_sizes(config, num_seeds=args.seeds, seed=args.seed)
    from sdtheory.paper import block_gram_frobenius_sq

    g2 = block_gram_frobenius_sq(num_classes=config.num_classes, per_class=config.per_class, c=config.c, d=config.d)
    fig_meta = {"parameters": params, "package_version": meta["package_version"], "git_revision": meta["git_revision"]}
    summary = {
        "preset": args.preset,
        "seeds": {
            "prng_seed": args.seed,
            "num_seeds": args.seeds,
            "rule": "seed s uses jax.random.split(jax.random.PRNGKey(prng_seed), num_seeds)[s], split "
            "into (label key, feature key); the same keys for every eta",
        },
        "figure_method": sd_m,
        "rounds": {"rounds": result.rounds, "paper_steps": np.asarray(result.rounds) + 1},
        "perturbation": {
            "kind": "Gram of Gaussian-mixture features (sdtheory.block.sample_block_features)",
            "epsilon": args.epsilon,
            "feature_dim": config.dim,
            "reference_expected_frobenius": reference_perturbation_size(n_total, args.epsilon),
            "features_expected_frobenius": float(np.sqrt((n_total**2 + g2) / config.dim)),
            "block_gram_frobenius": float(np.sqrt(g2)),
            "measured_frobenius_per_seed": sizes,
        },
        "theory": {
            "etas": etas,
            "rstar_linear_block_model": theory["rstar_linear"],
            "rstar_exact_block_model": theory["rstar_exact"],
        },
        "observed_first_all_correct_round": {
            m: {"per_eta_and_seed": _first_all_correct(result.methods[m].all_correct)} for m in methods
        },
        "mean_accuracy": {m: result.accuracy(m).mean(axis=1) for m in methods},
        "all_converged": {m: bool(np.all(result.methods[m].converged)) for m in methods},
        "outputs": ["paper.png", "paper.pdf", "paper.csv", "summary.json", sio.MANIFEST],
    }
    with sio.run_directory(out, script=SCRIPT, parameters=params, outputs=PAPER_OUTPUTS) as stage:
        sio.write_csv(stage / "paper.csv", table)
        sio.write_figure(fig, stage / "paper.png", metadata=fig_meta, dpi=150)
        sio.write_figure(fig, stage / "paper.pdf", metadata=fig_meta)
        summary["timing"] = {**timing, "total_seconds": round(time.perf_counter() - t_start, 3)}
        sio.write_json(stage / "summary.json", summary, metadata=meta)


def _devices():
    import jax

    return {"count": jax.device_count(), "platform": jax.devices()[0].platform, "processes": jax.process_count()}


if __name__ == "__main__":
    exit_script(main, "phase_diagram.py")
