"""Self-distillation and the PLL student on real features (the SelfPLL protocol).

For every feature map, noise kind, noise rate and seed:

1. corrupt the training labels with the corruption matrix of the kind
   (``sdtheory.noise``; "cc" groups confusable classes by feature similarity);
2. fit the teacher and SD rounds 1..R with the *exact* softmax + CE + L2
   solver (``sdtheory.exact``), and the PLL student (top-2 targets of the
   exact teacher, one round, CE and GCE q = 0.7, ``sdtheory.refine``);
3. alongside, the closed-form predictions from the empirical Gram
   (``sdtheory.sd_outputs`` with ``features=``, and the closed-form PLL
   student), and the block model fitted to the features (c, d from
   ``sdtheory.data.block_statistics``, ``sdtheory.block_outputs``);
4. record training-label recovery (accuracy against the true labels, on all,
   clean and corrupted instances), held-out accuracy, the confidence and
   predictive diversity (``sdtheory.smoothing``) of every round's outputs, and
   for the closed form and the block model the fraction of training instances
   whose prediction agrees with the exact solution of the same round
   (``agree_exact``; for the closed-form PLL student: with the exact CE one).

lam rule (default, documented in docs/real_data.md): fit the block model to
the training features (``c`` = mean within-class cosine similarity) and set
``K N lam = 1 - c``, the block model's within-class eigenvalue ``s_w``. Then
the teacher keeps exactly half of every instance's own-label deviation
(``a = s_w / (s_w + K N lam) = 1/2``) while class-level directions
(``s_b = 1 - c + n (c - d) >> s_w``) are kept almost whole, so the own-label
term halves with each round and rounds 0..4 span the label-averaging regime
of the theory. The rule uses the features only, never the labels.

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
import sys
import time
from pathlib import Path
from typing import NamedTuple

import jax
import numpy as np

import sdtheory as sd
from sdtheory import data as D
from sdtheory import io as sio
from sdtheory import metrics, refine, smoothing
from sdtheory.exact import exact_outputs_spectral

DEFAULT_RATES = (0.0, 0.1, 0.3, 0.5, 0.6, 0.7, 0.8, 0.9)
DEFAULT_KINDS = ("symmetric", "asymmetric", "cc")
METRIC_COLUMNS = ("train_acc", "train_acc_clean", "train_acc_corrupted", "test_acc",
                  "confidence", "diversity")
FIELDNAMES = ("feature_map", "kind", "rate", "seed", "realised_rate", "lam", "solver", "method", "round",
              *METRIC_COLUMNS, "agree_exact", "residual", "converged")


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Self-distillation and the PLL student on real features: exact solver vs closed form "
                    "vs fitted block model, under symmetric / asymmetric / cc label noise.",
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
    p.add_argument("--kinds", nargs="+", default=list(DEFAULT_KINDS),
                   choices=("symmetric", "asymmetric", "cc", "pair"), help="label-noise kinds")
    p.add_argument("--rates", nargs="+", type=float, default=list(DEFAULT_RATES), help="noise rates eta")
    p.add_argument("--rounds", type=int, default=4, help="last SD round R (rounds 0..R; 0 is the teacher)")
    p.add_argument("--seeds", type=int, default=3, help="number of noise seeds")
    p.add_argument("--lam", type=float, default=None,
                   help="L2 weight; default: the block rule K N lam = 1 - c (see module docstring)")
    p.add_argument("--q", type=float, default=0.7, help="GCE exponent of the PLL student")
    p.add_argument("--seed", type=int, default=0, help="master seed (split, random features, noise)")
    p.add_argument("--out", type=Path, default=Path("results/real_data"), help="output directory")
    p.add_argument("--quick", action="store_true",
                   help="tiny subset (20 train / 8 test per class, 2 rates, 2 seeds, rounds 0..2, relu-dim 64)")
    p.add_argument("--no-figures", action="store_true", help="skip the figures")
    return p


def _resolve(args) -> argparse.Namespace:
    if args.rounds < 1:
        raise SystemExit("--rounds must be >= 1")
    if args.seeds < 1:
        raise SystemExit("--seeds must be >= 1")
    for r in args.rates:
        if not (0.0 <= r <= 1.0):
            raise SystemExit(f"--rates must lie in [0, 1], got {r}")
    if args.lam is not None and not (0 < args.lam < float("inf")):
        raise SystemExit("--lam must be a finite number > 0")
    if not (0 < args.q <= 1):
        raise SystemExit(f"--q (GCE exponent) must lie in (0, 1], got {args.q}")
    if args.relu_dim < 1:
        raise SystemExit("--relu-dim must be >= 1")
    if args.feature_maps is None:
        args.feature_maps = ["identity"] if args.features is not None else ["standardized", "relu"]
    if args.quick:
        args.rates = [0.0, 0.5] if args.rates == list(DEFAULT_RATES) else args.rates
        args.kinds = ["symmetric", "cc"] if args.kinds == list(DEFAULT_KINDS) else args.kinds
        args.seeds = min(args.seeds, 2)
        args.rounds = min(args.rounds, 2)
        args.relu_dim = min(args.relu_dim, 64)
    return args


# --------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------


def load_dataset(args) -> D.Dataset:
    master = jax.random.key(args.seed)
    if args.features is not None:
        ds = D.load_features(args.features)
        if ds.test_features is None:
            tr, te = D.stratified_split(jax.random.fold_in(master, 1), ds.labels, args.test_fraction)
            ds = D.Dataset(ds.features[tr], ds.labels[tr], ds.num_classes, ds.features[te], ds.labels[te], ds.name)
    else:
        ds = D.load_digits(key=jax.random.fold_in(master, 1), test_fraction=args.test_fraction)
    if args.quick:
        tr = D.stratified_subset(jax.random.fold_in(master, 2), ds.labels, 20)
        te = D.stratified_subset(jax.random.fold_in(master, 3), ds.test_labels, 8)
        ds = D.Dataset(ds.features[tr], ds.labels[tr], ds.num_classes, ds.test_features[te],
                       ds.test_labels[te], ds.name + "-quick")
    return ds


def lam_rule(c: float, n: int, k: int) -> float:
    """``K N lam = 1 - c``: the teacher halves own-label (within-class) directions."""
    if not (c < 1.0):
        raise ValueError(f"within-class similarity c = {c} >= 1: the block rule K N lam = 1 - c needs c < 1")
    return (1.0 - c) / (k * n)


# --------------------------------------------------------------------------
# One cell: labels -> all methods -> metric rows
# --------------------------------------------------------------------------


def _metrics(outputs, test_outputs, true, given, test_true, probs: bool) -> list:
    """Per-round metric dicts for outputs ``(R, N, K)`` and test outputs ``(R, M, K)``."""
    outputs = np.asarray(outputs)
    test_outputs = np.asarray(test_outputs)
    rows = []
    for r in range(outputs.shape[0]):
        split = metrics.split_accuracy(outputs[r], true, given)
        row = {
            "train_acc": float(split.overall),
            # an empty group gets NaN here (metrics' vacuous 1.0 would read as "recovered everything")
            "train_acc_clean": float(split.clean) if int(split.n_clean) else float("nan"),
            "train_acc_corrupted": float(split.corrupted) if int(split.n_corrupted) else float("nan"),
            "test_acc": float(metrics.accuracy(test_outputs[r], test_true)),
            "confidence": float("nan"),
            "diversity": float("nan"),
        }
        if probs:
            row["confidence"] = float(np.mean(np.asarray(smoothing.confidence(outputs[r]))))
            row["diversity"] = float(np.mean(np.asarray(smoothing.predictive_diversity(outputs[r], normalize=True))))
        rows.append(row)
    return rows


class Prepared(NamedTuple):
    """Training/held-out features with their spectrum, computed once per feature map."""

    x: np.ndarray
    xt: np.ndarray
    spec: sd.Spectrum  # thin SVD of x: eigenpairs of G = x x^T
    cross: jax.Array  # G(test, train) U = xt x^T U, for held-out closed-form outputs


def prepare(x, xt) -> Prepared:
    """One spectrum per feature map serves every noise draw, round, loss and solver."""
    spec = sd.feature_spectrum(x)
    cross = jax.numpy.asarray(xt) @ (jax.numpy.asarray(x).T @ spec.eigvecs)
    return Prepared(np.asarray(x), np.asarray(xt), spec, cross)


def _exact(prep: Prepared, t, lam, num_rounds, loss="ce", q=0.7):
    """Exact rounds from the precomputed spectrum; inputs were validated when prepared."""
    return exact_outputs_spectral(prep.spec, jax.numpy.asarray(t, dtype=float), jax.numpy.asarray(lam),
                                  num_rounds, loss=loss, q=q)


def run_cell(prep: Prepared, true, test_true, given, k, lam, rounds, q, bstats) -> list:
    """All methods for one noisy label vector; returns rows without the cell keys."""
    x, xt = prep.x, prep.xt
    t = np.eye(k)[given]
    out = []
    rr = np.arange(rounds + 1)
    lam_a = jax.numpy.asarray(lam)

    # exact SD, rounds 0..R
    res = _exact(prep, t, lam, rounds + 1)
    exact_pred = np.asarray(res.outputs).argmax(-1)  # (R+1, N): reference for the agreement columns

    def agree(outputs, r):
        """Fraction of training instances whose argmax equals the exact round-r argmax."""
        return float(np.mean(np.asarray(outputs).argmax(-1) == exact_pred[r]))

    test_out = sd.exact_predict(res, test_features=xt, features=x)
    for r, m in enumerate(_metrics(res.outputs, test_out, true, given, test_true, True)):
        out.append(dict(solver="exact", method="sd", round=r, agree_exact=float("nan"), residual=float(res.residuals[r]),
                        converged=bool(res.converged[r]), **m))

    # exact PLL students from the exact teacher's top-2
    t2 = np.asarray(refine.top2_targets(res.outputs[0]))
    pll_pred = {}
    for loss in ("ce", "gce"):
        pr = _exact(prep, t2, lam, 1, loss=loss, q=q)
        pll_pred[loss] = np.asarray(pr.outputs[0]).argmax(-1)
        pt = sd.exact_predict(pr, test_features=xt, features=x)
        m = _metrics(pr.outputs, pt, true, given, test_true, True)[0]
        out.append(dict(solver="exact", method=f"pll_{loss}", round=1, agree_exact=float("nan"),
                        residual=float(pr.residuals[0]),
                        converged=bool(pr.converged[0]), **m))

    # closed form from the empirical Gram (linearised), SD and PLL
    cf = sd.sd_outputs_spectral(prep.spec, jax.numpy.asarray(t, dtype=float), lam_a, rr)
    cft = sd.closed_form.sd_test_outputs_spectral(prep.spec, jax.numpy.asarray(t, dtype=float), lam_a, rr, prep.cross)
    for r, m in enumerate(_metrics(cf, cft, true, given, test_true, False)):
        out.append(dict(solver="closed_form", method="sd", round=r, agree_exact=agree(cf[r], r),
                        residual=float("nan"), converged=True, **m))
    t2c = refine.top2_targets(cf[0])
    pc = sd.sd_outputs_spectral(prep.spec, t2c, lam_a, np.zeros(1, dtype=int))
    pct = sd.closed_form.sd_test_outputs_spectral(prep.spec, t2c, lam_a, np.zeros(1, dtype=int), prep.cross)
    m = _metrics(pc, pct, true, given, test_true, False)[0]
    out.append(dict(solver="closed_form", method="pll_ce", round=1,
                    agree_exact=float(np.mean(np.asarray(pc[0]).argmax(-1) == pll_pred["ce"])), residual=float("nan"),
                    converged=True, **m))

    # block model fitted to the features (c, d); training instances only
    bo = np.asarray(sd.block_outputs(t, true, bstats.c, bstats.d, lam, rr))
    for r in range(rounds + 1):
        split = metrics.split_accuracy(bo[r], true, given)
        out.append(dict(solver="block", method="sd", round=r, agree_exact=agree(bo[r], r),
                        residual=float("nan"), converged=True,
                        train_acc=float(split.overall),
                        train_acc_clean=float(split.clean) if int(split.n_clean) else float("nan"),
                        train_acc_corrupted=float(split.corrupted) if int(split.n_corrupted) else float("nan"),
                        test_acc=float("nan"),
                        confidence=float("nan"), diversity=float("nan")))
    return out


# --------------------------------------------------------------------------
# Aggregation, tables, figures
# --------------------------------------------------------------------------


def aggregate(rows: list) -> dict:
    """(feature_map, kind, rate, solver, method, round) -> {metric: (mean, std, n)}."""
    groups: dict = {}
    for row in rows:
        key = (row["feature_map"], row["kind"], row["rate"], row["solver"], row["method"], row["round"])
        groups.setdefault(key, []).append(row)
    agg = {}
    for key, rs in groups.items():
        agg[key] = {}
        for m in METRIC_COLUMNS + ("agree_exact", "realised_rate"):
            v = np.array([r[m] for r in rs], dtype=float)
            v = v[np.isfinite(v)]
            agg[key][m] = (float(v.mean()) if v.size else float("nan"),
                           float(v.std()) if v.size else float("nan"), int(v.size))
    return agg


def _table_columns(rounds):
    cols = [("exact", "sd", r, f"SD r{r}" if r else "teacher") for r in range(rounds + 1)]
    cols += [("exact", "pll_ce", 1, "PLL-CE"), ("exact", "pll_gce", 1, "PLL-GCE"),
             ("closed_form", "sd", 0, "CF teacher"), ("closed_form", "sd", rounds, f"CF SD r{rounds}"),
             ("closed_form", "pll_ce", 1, "CF PLL"), ("block", "sd", rounds, f"block SD r{rounds}")]
    return cols


def markdown_summary(agg, args, meta_by_map) -> str:
    lines = ["# Real data: self-distillation and the PLL student", "",
             f"Data: {meta_by_map['_dataset']}. Mean (std) over {args.seeds} seed(s), in %. "
             "Exact = nonlinear softmax CE solver; CF = linearised closed form from the empirical Gram; "
             "block = closed form of the block model with c, d fitted to the features (training set only).", ""]
    cols = _table_columns(args.rounds)
    for fmap in args.feature_maps:
        info = meta_by_map[fmap]
        lines += [f"## Feature map `{fmap}` (d = {info['dim']}, lam = {info['lam']:.3g}, "
                  f"c = {info['c']:.3f}, d_between = {info['d']:.3f})", ""]
        for metric, title in (("train_acc", "Training-label recovery (train accuracy vs true labels)"),
                              ("train_acc_corrupted", "Recovery on corrupted training instances"),
                              ("test_acc", "Held-out accuracy")):
            use = [c for c in cols if not (metric == "test_acc" and c[0] == "block")]
            lines += [f"### {title}", "", "| kind | eta | " + " | ".join(c[3] for c in use) + " |",
                      "|---|---|" + "---|" * len(use)]
            for kind in args.kinds:
                for rate in args.rates:
                    cells = []
                    for solver, method, r, _ in use:
                        v = agg.get((fmap, kind, rate, solver, method, r), {}).get(metric)
                        if v is None or not np.isfinite(v[0]):
                            cells.append("-")
                        else:
                            cells.append(f"{100 * v[0]:.1f} ({100 * v[1]:.1f})")
                    lines.append(f"| {kind} | {rate:g} | " + " | ".join(cells) + " |")
            lines.append("")
        R = args.rounds
        use = [("closed_form", "sd", 0, "CF teacher"), ("closed_form", "sd", R, f"CF SD r{R}"),
               ("closed_form", "pll_ce", 1, "CF PLL vs exact PLL-CE"), ("block", "sd", 0, "block teacher"),
               ("block", "sd", R, f"block SD r{R}")]
        lines += ["### Agreement with the exact solution (same round, training-set argmax)", "",
                  "| kind | eta | " + " | ".join(c[3] for c in use) + " |", "|---|---|" + "---|" * len(use)]
        for kind in args.kinds:
            for rate in args.rates:
                cells = []
                for solver, method, r, _ in use:
                    v = agg.get((fmap, kind, rate, solver, method, r), {}).get("agree_exact")
                    cells.append("-" if v is None or not np.isfinite(v[0]) else f"{100 * v[0]:.1f} ({100 * v[1]:.1f})")
                lines.append(f"| {kind} | {rate:g} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines) + "\n"


def accuracy_figure(agg, args, fmap):
    import matplotlib.pyplot as plt

    kinds = args.kinds
    fig, axes = plt.subplots(len(kinds), 2, figsize=(10, 3.1 * len(kinds)), squeeze=False, sharey=True)
    rates = np.array(args.rates)
    R = args.rounds
    series = [("exact", "sd", 0, "teacher", "k", "-", "o")]
    series += [("exact", "sd", r, f"SD r{r}", plt.cm.Blues(0.35 + 0.65 * r / R), "-", "o") for r in range(1, R + 1)]
    series += [("exact", "pll_ce", 1, "PLL-CE", "tab:red", "-", "s"),
               ("exact", "pll_gce", 1, "PLL-GCE (q=%g)" % args.q, "tab:orange", "-", "^"),
               ("closed_form", "sd", R, f"closed form SD r{R}", "tab:blue", "--", None),
               ("closed_form", "pll_ce", 1, "closed form PLL", "tab:red", "--", None),
               ("block", "sd", R, f"fitted block SD r{R}", "tab:gray", ":", None)]
    for i, kind in enumerate(kinds):
        for j, (metric, title) in enumerate((("train_acc", "training-label recovery"),
                                             ("test_acc", "held-out accuracy"))):
            ax = axes[i, j]
            for solver, method, r, label, color, ls, marker in series:
                if metric == "test_acc" and solver == "block":
                    continue
                vals = [agg.get((fmap, kind, rate, solver, method, r), {}).get(metric, (np.nan, np.nan, 0))
                        for rate in args.rates]
                mu = np.array([v[0] for v in vals])
                sdv = np.array([v[1] for v in vals])
                ax.plot(rates, 100 * mu, ls=ls, color=color, marker=marker, ms=3.5, lw=1.3, label=label)
                if ls == "-":
                    ax.fill_between(rates, 100 * (mu - sdv), 100 * (mu + sdv), color=color, alpha=0.12, lw=0)
            ax.set_title(f"{kind} noise: {title}", fontsize=10)
            ax.set_xlabel("noise rate eta")
            ax.grid(alpha=0.3)
            if j == 0:
                ax.set_ylabel("accuracy (%)")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.suptitle(f"Self-distillation on {args._dataset_name} ({fmap} features), mean +- std over {args.seeds} seeds",
                 fontsize=11)
    fig.tight_layout(rect=(0, 0.06 if len(kinds) > 1 else 0.12, 1, 1))
    fig.legend(handles, labels, loc="lower center", ncol=min(6, len(labels)), fontsize=8, frameon=False)
    return fig


def diversity_figure(agg, args, fmap):
    import matplotlib.pyplot as plt

    kind = args.kinds[0]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.3))
    rr = np.arange(args.rounds + 1)
    for i, rate in enumerate(args.rates):
        color = plt.cm.viridis(i / max(1, len(args.rates) - 1))
        for ax, metric in zip(axes, ("confidence", "diversity")):
            mu = [agg.get((fmap, kind, rate, "exact", "sd", r), {}).get(metric, (np.nan,))[0] for r in rr]
            ax.plot(rr, mu, marker="o", ms=3, color=color, label=f"eta={rate:g}")
    axes[0].set_ylabel("mean max probability (confidence)")
    axes[1].set_ylabel("mean predictive diversity")
    for ax in axes:
        ax.set_xlabel("SD round (0 = teacher)")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7, ncol=2)
    fig.suptitle(f"Confidence and predictive diversity of each round ({kind} noise, {fmap} features)", fontsize=10)
    fig.tight_layout()
    return fig


def spectrum_figure(spectra, args):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(spectra), figsize=(4.6 * len(spectra), 3.4), squeeze=False)
    for ax, (fmap, info) in zip(axes[0], spectra.items()):
        s = info["eigvals"]
        b = info["block_eigvals"]
        idx = np.arange(1, s.size + 1)
        ax.semilogy(idx, np.maximum(s, 1e-8), color="tab:blue", lw=1.5, label="empirical Gram")
        ax.semilogy(np.arange(1, b.size + 1), np.maximum(b, 1e-8), color="tab:gray", ls="--", lw=1.5,
                    label=f"fitted block model (c={info['c']:.2f}, d={info['d']:.2f})")
        ax.axhline(info["ridge"], color="tab:red", lw=1, ls=":", label="K N lam")
        ax.axvline(info["num_classes"], color="k", lw=0.6, alpha=0.5)
        ax.set_xscale("log")
        ax.set_xlabel("eigenvalue index")
        ax.set_ylabel("eigenvalue")
        ax.set_title(f"{fmap}: N={info['n']}, d={info['dim']}", fontsize=10)
        ax.set_ylim(1e-4, None)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------


def main(argv=None) -> dict:
    args = _resolve(build_parser().parse_args(argv))
    t_start = time.time()
    master = jax.random.key(args.seed)
    ds = load_dataset(args)
    args._dataset_name = ds.name
    k = ds.num_classes
    true = ds.labels
    n = true.size
    rows = []
    meta_by_map = {"_dataset": f"{ds.name}, N = {n} train / {ds.test_labels.size} held-out, K = {k}"}
    spectra = {}
    timings = {}
    cells_total = len(args.feature_maps) * len(args.kinds) * len(args.rates) * args.seeds
    done = 0
    for fi, fmap in enumerate(args.feature_maps):
        x, xt = D.make_features(fmap, ds.features, ds.test_features, key=jax.random.fold_in(master, 10 + fi),
                                num_features=args.relu_dim, center=not args.no_center)
        bstats = D.block_statistics(x, true, k)
        lam = float(args.lam) if args.lam is not None else lam_rule(bstats.c, n, k)
        eig = np.sort(np.linalg.svd(x, compute_uv=False) ** 2)[::-1]  # for the report (NumPy, independent)
        bspec = sd.block_spectrum(bstats.class_sizes, bstats.c, bstats.d)
        block_eig = np.sort(np.concatenate([np.asarray(bspec.class_eigvals),
                                            np.full(n - k, float(bspec.within))]))[::-1]
        top = np.sort(np.asarray(bspec.class_eigvals))[::-1]
        spectra[fmap] = dict(eigvals=eig, block_eigvals=block_eig, c=bstats.c, d=bstats.d, ridge=k * n * lam,
                             num_classes=k, n=n, dim=x.shape[1])
        meta_by_map[fmap] = {
            "dim": int(x.shape[1]), "lam": lam, "lam_rule": "given" if args.lam is not None else "K N lam = 1 - c",
            "c": bstats.c, "d": bstats.d,
            "class_means": bstats.class_means,
            "spectrum": {
                "rank": int(np.sum(eig > 1e-10 * eig[0])),
                "top_eigvals": eig[: 2 * k],
                "median_nonzero": float(np.median(eig[eig > 1e-10 * eig[0]])),
                "trace_fraction_top_K_minus_1": float(eig[: k - 1].sum() / eig.sum()),
                "block_trace_fraction_top_K_minus_1": float(top[: k - 1].sum() / block_eig.sum()),
                "block_s_w": float(bspec.within),
                "block_class_eigvals": top,
                "eigvals_above_ridge": int(np.sum(eig > k * n * lam)),
            },
        }
        clusters = None
        if "cc" in args.kinds:
            clusters = sd.confusable_clusters(x, true)
            meta_by_map[fmap]["cc_clusters"] = clusters
        prep = prepare(x, xt)
        t0 = time.time()
        for ki, kind in enumerate(args.kinds):
            for ri, rate in enumerate(args.rates):
                C = sd.corruption_matrix(kind, k, rate, clusters=clusters if kind == "cc" else None)
                for s in range(args.seeds):
                    key = jax.random.fold_in(jax.random.fold_in(jax.random.fold_in(
                        jax.random.fold_in(master, 100 + fi), ki), ri), s)
                    given = np.asarray(sd.sample_labels(key, true, C)).astype(np.int64)
                    realised = float(np.mean(given != true))
                    for row in run_cell(prep, true, ds.test_labels, given, k, lam, args.rounds, args.q, bstats):
                        rows.append(dict(feature_map=fmap, kind=kind, rate=float(rate), seed=s,
                                         realised_rate=realised, lam=lam, **row))
                    done += 1
                    print(f"\r[{done}/{cells_total}] {fmap} {kind} eta={rate:g} seed={s} "
                          f"({time.time() - t_start:.0f}s)", end="", file=sys.stderr, flush=True)
        timings[fmap] = time.time() - t0
    print("", file=sys.stderr)

    params = {k_: (str(v) if isinstance(v, Path) else v) for k_, v in vars(args).items() if not k_.startswith("_")}
    metadata = {"script": "simulations/real_data.py", "parameters": params, **sio.provenance()}
    out = Path(args.out)
    agg = aggregate(rows)
    unconverged = [r for r in rows if r["solver"] == "exact" and not r["converged"]]
    sio.write_csv(out / "real_data.csv", rows=rows, fieldnames=FIELDNAMES, metadata=metadata)
    sio.atomic_write_text(out / "summary.md", markdown_summary(agg, args, meta_by_map))
    summary = {
        "dataset": meta_by_map["_dataset"],
        "feature_maps": {f: meta_by_map[f] for f in args.feature_maps},
        "timings_seconds": timings,
        "total_seconds": time.time() - t_start,
        "exact_rows": sum(r["solver"] == "exact" for r in rows),
        "exact_unconverged": len(unconverged),
        "max_exact_residual": max((r["residual"] for r in rows if r["solver"] == "exact"), default=float("nan")),
    }
    sio.write_json(out / "real_data.json", summary, metadata=metadata)
    if not args.no_figures:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        for fmap in args.feature_maps:
            fig = accuracy_figure(agg, args, fmap)
            sio.write_figure(fig, out / f"accuracy_{fmap}.png", metadata=metadata)
            sio.write_figure(fig, out / f"accuracy_{fmap}.pdf", metadata=metadata)
            plt.close(fig)
            fig = diversity_figure(agg, args, fmap)
            sio.write_figure(fig, out / f"diversity_{fmap}.png", metadata=metadata)
            plt.close(fig)
        fig = spectrum_figure(spectra, args)
        sio.write_figure(fig, out / "spectrum.png", metadata=metadata)
        plt.close(fig)
    print(f"wrote {out}/ ({len(rows)} rows, {summary['total_seconds']:.0f}s, "
          f"{len(unconverged)} unconverged exact fits)", file=sys.stderr)
    return {"rows": rows, "aggregate": agg, "summary": summary}


if __name__ == "__main__":
    main()
