#!/usr/bin/env python
"""When can the linearised closed form be trusted? Closed form vs exact softmax outputs.

For the class-wise block model (K classes, n per class, within-class
correlation c, between-class d; the exact block Gram by default,
Gaussian-mixture features with ``--dim``) and symmetric label noise ``eta``,
runs the Monte Carlo engine (:func:`sdtheory.montecarlo.run_grid`, methods
``sd_closed`` and ``sd_exact``) over a log-spaced grid of ``lam`` for every
(c, d) pair, and reports per (c, d, lam, seed, round) of rounds 0..R-1:

* the linearisation gap: max abs difference of the training outputs, the
  argmax agreement rate and the near-tie fraction (instances whose
  closed-form top-2 margin is below twice their output gap);
* both training accuracies against the true classes (ties are failures);
* per (c, d, lam, seed) the first round at which every training instance is
  classified correctly by each method (-1 if none within R rounds);
* the exact solver's residual and whether it converged.

Seed s of ``--seeds`` uses the key ``jax.random.split(PRNGKey(--seed),
--seeds)[s]`` (split into a label key and a feature key), the same for every
(c, d) and lam. Non-converged exact solves are counted in params.json and
reported on stderr; their rows are kept (``exact_converged`` false).

Writes into ``--out`` (default results/linearization_gap/): ``gap.csv`` (+
``gap.csv.meta.json``), ``params.json`` (parameters and the ``timing`` field,
the only one that changes between runs with the same flags) and
``gap.png``/``gap.pdf``, each with the package version and git revision, and
``manifest.json`` (every file's SHA-256). The set is written as one unit: it
is staged next to ``--out`` and replaces the previous set only when complete
(Ctrl-C: exit status 130, ``--out`` unchanged; bad flags: status 2). The
printed table has one line per (c, d, lam), worst case over seeds.
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
    print("linearization_gap.py: interrupted while starting; nothing was written", file=sys.stderr, flush=True)
    os._exit(130)  # not an exception: JAX's import-time callbacks would swallow a KeyboardInterrupt


_previous_sigint = signal.signal(signal.SIGINT, _interrupted_while_starting)
try:
    import numpy as np

    import sdtheory
    from sdtheory import io as sio
    from sdtheory.cli import (
        cd_pairs,
        exit_script,
        float_in,
        int_at_least,
        num_rounds_type,
        interruptible,
        output_dir_or_exit,
        plain_text,
    )
    from sdtheory import montecarlo as mc
    from sdtheory.plots import linearization_gap_figure
finally:
    signal.signal(signal.SIGINT, _previous_sigint)

DEFAULT_OUT = os.path.join("results", "linearization_gap")
DEFAULT_CD = "0.4,0.1;0.6,0.1;0.3,0.2"
GAP_METHODS = ("sd_closed", "sd_exact")  # the montecarlo.METHODS this study compares
SCRIPT = "simulations/linearization_gap.py"
#: What a previous run leaves in --out (a run replaces the directory as a whole).
OUTPUTS = ("gap.csv", "gap.csv.meta.json", "params.json", "gap.png", "gap.pdf")


# --------------------------------------------------------------------------
# Argument parsing (validated types: argparse names the flag in its error)
# --------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="linearization_gap.py",
        description=plain_text(__doc__),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    g = p.add_argument_group("model")
    g.add_argument("--classes", type=int_at_least(2), default=4, help="number of classes K (default 4)")
    g.add_argument(
        "--per-class", type=int_at_least(1), default=50, help="training instances per class n, N = K n (default 50)"
    )
    g.add_argument(
        "--cd",
        type=cd_pairs,
        default=cd_pairs(DEFAULT_CD),
        help=f'(c, d) pairs "c,d;c,d;...", each d < c < 1 with a positive definite block Gram (default "{DEFAULT_CD}")',
    )
    g.add_argument("--eta", type=float_in(0.0, 1.0), default=0.4, help="symmetric label-noise rate (default 0.4)")
    g.add_argument(
        "--lam-min",
        type=float_in(0.0, math.inf, lo_open=True, hi_open=True),
        default=1e-6,
        help="smallest L2 weight lam (> 0, default 1e-6)",
    )
    g.add_argument(
        "--lam-max",
        type=float_in(0.0, math.inf, lo_open=True, hi_open=True),
        default=10.0,
        help="largest L2 weight lam (>= --lam-min, default 10)",
    )
    g.add_argument("--num-lam", type=int_at_least(1), default=15, help="lam values, log-spaced (default 15)")
    g.add_argument(
        "--num-rounds",
        type=num_rounds_type(1),
        default=8,
        help="number of SD rounds R: rounds 0..R-1, 0 is the teacher (default 8)",
    )
    g.add_argument(
        "--dim",
        type=int_at_least(0),
        default=0,
        help="feature dimension of Gaussian-mixture features; 0 = the exact block Gram (default)",
    )
    g = p.add_argument_group("exact solver")
    g.add_argument(
        "--tol",
        type=float_in(0.0, 1.0, lo_open=True),
        default=1e-9,
        help="tolerance on the fixed-point residual (default 1e-9)",
    )
    g.add_argument("--max-iter", type=int_at_least(1), default=2000, help="iterations per round (default 2000)")
    g.add_argument("--solver", choices=sorted(sdtheory.SOLVERS), default="auto", help="algorithm (default auto)")
    g = p.add_argument_group("seeds and output")
    g.add_argument("--seeds", type=int_at_least(1), default=1, help="Monte Carlo draws per cell (default 1)")
    g.add_argument("--seed", type=int_at_least(0), default=0, help="PRNG seed (default 0)")
    g.add_argument("--out", default=DEFAULT_OUT, help=f"output directory (default {DEFAULT_OUT})")
    g.add_argument(
        "--quick",
        action="store_true",
        help="small run (about 15 CPU seconds, mostly compiling): the defaults become K=3, 6 per class, "
        "3 lam values, 3 rounds (flags given "
        "explicitly still win)",
    )
    return p


#: The defaults ``--quick`` sets (explicit flags override them).
QUICK = {"classes": 3, "per_class": 6, "num_lam": 3, "num_rounds": 3}


def parse_args(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.quick:  # the quick values become the defaults; explicit flags still win
        parser.set_defaults(**QUICK)
        args = parser.parse_args(argv)
    if args.lam_max < args.lam_min:
        parser.error(f"argument --lam-max: must be >= --lam-min (got {args.lam_max:g} < {args.lam_min:g})")
    if args.num_lam == 1 and args.lam_max != args.lam_min:
        parser.error("argument --num-lam: must be >= 2 when --lam-min != --lam-max")
    if args.num_lam > 1 and args.lam_max == args.lam_min:
        parser.error("argument --num-lam: must be 1 when --lam-min == --lam-max")
    return parser, args


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------


def _config(parser, args, c, d, lam):
    try:
        return mc.make_config(
            num_classes=args.classes,
            per_class=args.per_class,
            c=c,
            d=d,
            lam=lam,
            num_rounds=args.num_rounds,
            noise="symmetric",
            methods=GAP_METHODS,
            dim=args.dim or None,
            exact_tol=args.tol,
            exact_max_iter=args.max_iter,
            exact_solver=args.solver,
        )
    except (TypeError, ValueError) as exc:
        parser.error(str(exc))


def main(argv=None) -> int:
    parser, args = parse_args(argv)
    t_start = time.perf_counter()
    out = output_dir_or_exit(parser, args.out, outputs=OUTPUTS)  # before any computation
    try:
        return _run(parser, args, out, t_start)
    except KeyboardInterrupt:
        raise KeyboardInterrupt(f"interrupted; {out} was not changed") from None
    except sio.OutputDirError as exc:  # the directory changed while computing
        parser.error(f"argument --out: {exc}")


def _run(parser, args, out: Path, t_start: float) -> int:
    lams = np.logspace(np.log10(args.lam_min), np.log10(args.lam_max), args.num_lam)
    configs = [_config(parser, args, c, d, float(lams[0])) for c, d in args.cd]
    progress = interruptible(sio.progress_printer("linearization_gap"))

    columns = {
        name: []
        for name in (
            "c",
            "d",
            "lam",
            "seed",
            "round",
            "max_abs_diff",
            "argmax_agreement",
            "near_tie_frac",
            "train_acc_exact",
            "train_acc_closed",
            "first_all_correct_exact",
            "first_all_correct_closed",
            "exact_residual",
            "exact_converged",
        )
    }
    panels = {
        name: [] for name in ("gap_first", "gap_max", "agreement_min", "decided_min", "first_exact", "first_closed")
    }
    tie_max = []
    unconverged = {}
    for (c, d), config in zip(args.cd, configs, strict=True):
        t0 = time.perf_counter()
        res = mc.run_grid(config, [args.eta], lams=lams, num_seeds=args.seeds, seed=args.seed, progress=progress)
        print(
            f"(c, d) = ({c:g}, {d:g}): {lams.size} lam x {args.seeds} seed(s) x {args.num_rounds} rounds in "
            f"{time.perf_counter() - t0:.1f} s",
            file=sys.stderr,
            flush=True,
        )
        # (L, E=1, S, R) -> (L, S, R)
        gap = [a[:, 0] for a in res.gap]
        acc = {m: res.accuracy(m)[:, 0] for m in GAP_METHODS}
        all_ok = {m: res.methods[m].all_correct[:, 0] for m in GAP_METHODS}
        first = {m: mc.first_all_correct(all_ok[m], res.rounds) for m in GAP_METHODS}  # (L, S)
        exact = res.methods["sd_exact"]
        residual, converged = exact.residual[:, 0], exact.converged[:, 0]
        bad = int(np.sum(~converged))
        unconverged[f"{c:g},{d:g}"] = bad
        if bad:
            print(
                f"warning: (c, d) = ({c:g}, {d:g}): the exact solver ({args.solver}) did not reach tol "
                f"{args.tol:g} in {args.max_iter} iterations in {bad} of {converged.size} (lam, seed, round) "
                f"solves; their rows have exact_converged = false",
                file=sys.stderr,
                flush=True,
            )

        # one row per (lam, seed, round), lam-major
        li, si, ri = (ix.ravel() for ix in np.indices(converged.shape))
        columns["c"] += [c] * li.size
        columns["d"] += [d] * li.size
        columns["lam"] += lams[li].tolist()
        columns["seed"] += si.tolist()
        columns["round"] += res.rounds[ri].tolist()
        for name, arr in zip(("max_abs_diff", "argmax_agreement", "near_tie_frac"), gap, strict=True):
            columns[name] += arr.ravel().tolist()
        columns["train_acc_exact"] += acc["sd_exact"].ravel().tolist()
        columns["train_acc_closed"] += acc["sd_closed"].ravel().tolist()
        columns["first_all_correct_exact"] += first["sd_exact"][li, si].tolist()
        columns["first_all_correct_closed"] += first["sd_closed"][li, si].tolist()
        columns["exact_residual"] += residual.ravel().tolist()
        columns["exact_converged"] += converged.ravel().tolist()

        # figure and table: per lam, worst case over seeds (and rounds)
        panels["gap_first"].append(gap[0][..., 0].max(axis=1))
        panels["gap_max"].append(gap[0].max(axis=(1, 2)))
        panels["agreement_min"].append(gap[1].min(axis=(1, 2)))
        tie_max.append(gap[2].max(axis=(1, 2)))
        panels["decided_min"].append(1.0 - tie_max[-1])
        for m, key in (("sd_exact", "first_exact"), ("sd_closed", "first_closed")):
            panels[key].append(mc.first_all_correct(all_ok[m].all(axis=1), res.rounds))  # every seed all-correct
    panels = {k: np.stack(v) for k, v in panels.items()}  # (P, L)

    num_bad = int(sum(unconverged.values()))
    params = {
        k: (list(v) if isinstance(v, tuple) else v)
        for k, v in configs[0]._asdict().items()
        if k not in ("c", "d", "lam")
    }
    params.update(
        cd=[list(p) for p in args.cd],
        eta=args.eta,
        lams=lams,
        num_seeds=args.seeds,
        prng_seed=args.seed,
        seed_rule="seed s uses jax.random.split(jax.random.PRNGKey(prng_seed), num_seeds)[s], split into "
        "(label key, feature key); the same keys for every (c, d) and lam",
        exact_unconverged_solves=num_bad,
        exact_unconverged_by_cd=unconverged,
    )
    meta = {"script": SCRIPT, "parameters": params, **sio.provenance()}
    title = (
        f"block model K={args.classes}, n={args.per_class}/class, symmetric noise eta={args.eta:g}, "
        + (f"features dim={args.dim}" if args.dim else "exact block Gram")
        + (f"; worst case over {args.seeds} seeds" if args.seeds > 1 else "")
    )
    fig = linearization_gap_figure(
        lams, [f"c={c:g}, d={d:g}" for c, d in args.cd], num_rounds=args.num_rounds, title=title, **panels
    )
    fig_meta = {"parameters": params, "package_version": meta["package_version"], "git_revision": meta["git_revision"]}
    with sio.run_directory(out, script=SCRIPT, parameters=params, outputs=OUTPUTS) as stage:
        sio.write_csv(stage / "gap.csv", columns, metadata=meta)
        sio.write_figure(fig, stage / "gap.png", metadata=fig_meta)
        sio.write_figure(fig, stage / "gap.pdf", metadata=fig_meta)
        # "timing" is the one field that differs between two runs with the same parameters (docs/simulation.md)
        sio.write_json(
            stage / "params.json",
            {"parameters": params, "timing": {"total_seconds": round(time.perf_counter() - t_start, 3)}},
            metadata=sio.provenance(),
        )

    print(
        f"{'c':>5s}{'d':>5s}{'lam':>10s}{'gap r0':>10s}{'gap max':>10s}{'agree min':>10s}{'tie max':>10s}"
        f"{'1st ok ex':>10s}{'1st ok cf':>10s}"
    )
    for p, (c, d) in enumerate(args.cd):
        for i, lam in enumerate(lams):
            print(
                f"{c:5.2f}{d:5.2f}{lam:10.1e}{panels['gap_first'][p, i]:10.2e}{panels['gap_max'][p, i]:10.2e}"
                f"{panels['agreement_min'][p, i]:10.3f}{tie_max[p][i]:10.3f}"
                f"{int(panels['first_exact'][p, i]):10d}{int(panels['first_closed'][p, i]):10d}"
            )
    if num_bad:
        print(f"warning: {num_bad} exact solve(s) did not converge (see exact_converged in gap.csv)", file=sys.stderr)
    print(
        f"linearization_gap: wrote {out}/gap.{{csv,png,pdf}}, params.json and {sio.MANIFEST} in "
        f"{time.perf_counter() - t_start:.1f} s",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    exit_script(main, "linearization_gap.py")
