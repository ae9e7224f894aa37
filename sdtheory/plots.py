"""Figures for the Monte Carlo and real-data results (matplotlib; no math here).

Functions take plain arrays already reduced by the caller and return a
:class:`matplotlib.figure.Figure`; save them with :func:`sdtheory.io.write_figure`.
"""

from __future__ import annotations

from typing import Any, Optional
from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

from .montecarlo.theory import REGIONS
from .smoothing_study import method_label

__all__ = [
    "accuracy_figure",
    "diversity_figure",
    "diversity_gain_figure",
    "linearization_gap_figure",
    "paper_rounds_figure",
    "phase_diagram_figure",
    "smoothing_figure",
    "spectrum_figure",
]


#: The round axis of every figure: our round r counts the teacher as 0; the SelfPLL reference
#: numbers the same model step r + 1 (its step 1 is the teacher).
ROUND_LABEL = "round $r$ (0 = teacher = SelfPLL step 1)"


def _over_seeds(num_seeds: int) -> str:
    """``"mean +- std over 3 seeds"`` (``"one seed"`` for a single seed: no spread to show)."""
    return "one seed" if int(num_seeds) == 1 else f"mean +- std over {int(num_seeds)} seeds"


def new_figure(**kwargs):
    """A :class:`matplotlib.figure.Figure` not registered with pyplot (no backend, no global state)."""
    from matplotlib.figure import Figure

    return Figure(**kwargs)


def _edges(x: np.ndarray) -> np.ndarray:
    """Cell edges for centres ``x`` (midpoints, end cells mirrored)."""
    x = np.asarray(x, dtype=float)
    if x.size == 1:
        return np.array([x[0] - 0.5, x[0] + 0.5])
    mid = 0.5 * (x[1:] + x[:-1])
    return np.concatenate([[x[0] - (mid[0] - x[0])], mid, [x[-1] + (x[-1] - mid[-1])]])


def _step_boundary(ax, etas, values, **kw):
    """``values - 0.5`` as a step line (the lower edge of the all-correct region); negatives break it."""
    v = np.asarray(values, dtype=float)
    v = np.where(v >= 0, v - 0.5, np.nan)
    xs, ys = list(np.repeat(_edges(etas), 2)[1:-1]), list(np.repeat(v, 2))  # (edge i, edge i + 1) at height v[i]
    return ax.plot(xs, ys, **kw)


def phase_diagram_figure(
    etas: npt.ArrayLike,
    rounds: npt.ArrayLike,
    sd_accuracy: np.ndarray,
    *,
    rstar_population: np.ndarray,
    rstar_empirical_mean: np.ndarray,
    observed_first: Optional[np.ndarray] = None,
    threshold: Optional[float] = None,
    curves: Optional[Mapping[str, np.ndarray]] = None,
    curve_styles: Optional[Mapping[str, dict]] = None,
    title: str = "",
    heat_label: str = "multi-round SD",
    num_classes: Optional[int] = None,
    extra_boundaries: Sequence[tuple] = (),
):
    """Two-panel phase diagram: (a) mean training accuracy of multi-round SD over (noise rate, round) with the
    theory's first all-correct round as the lower edge of the predicted 100% region, the observed first
    all-correct round and the corruption threshold; (b) accuracy against the noise rate for ``curves``.

    Args:
      etas: ``(E,)`` noise rates; rounds: ``(R,)`` round indices.
      sd_accuracy: ``(E, R)`` mean accuracy.
      rstar_population, rstar_empirical_mean: ``(E,)``; ``-1``/NaN = never.
      observed_first: ``(E,)`` median observed first all-correct round (NaN = never).
      threshold: noise rate where the population corruption condition stops holding.
      curves: label -> ``(E,)`` accuracy for the right panel.
      extra_boundaries: more predictions for the left panel, each ``(values (E,), label, line style dict)``.
    """
    from matplotlib import patheffects as pe

    stroke = [pe.Stroke(linewidth=3.6, foreground="black"), pe.Normal()]

    etas = np.asarray(etas, dtype=float)
    rounds = np.asarray(rounds)
    acc = np.asarray(sd_accuracy, dtype=float)
    if acc.shape != (etas.size, rounds.size):
        raise ValueError(f"sd_accuracy must be (E, R) = {(etas.size, rounds.size)}, got {acc.shape}")

    fig = new_figure(figsize=(12.5, 6.0))
    ax, ax2 = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.25, 1.0]})
    vmin = 0.0 if num_classes is None else min(1.0 / num_classes, float(np.nanmin(acc)))
    mesh = ax.pcolormesh(
        _edges(etas), _edges(rounds), acc.T, cmap="viridis", vmin=vmin, vmax=1.0, shading="flat", rasterized=True
    )
    cb = fig.colorbar(mesh, ax=ax, pad=0.02)
    cb.set_label("mean training accuracy (true labels)")

    population = "theory: first all-correct round $r^*(\\eta)$ (population, from the corruption matrix $C$)"
    empirical = "theory: mean empirical $r^*$ (from each seed's label fractions)"
    boundaries = [
        (rstar_population, population, dict(color="white", lw=2.2, path_effects=stroke)),
        (rstar_empirical_mean, empirical, dict(color="#ff7f0e", lw=1.8, ls="--")),
        *extra_boundaries,
    ]
    handles = []
    for values, label, style in boundaries:  # -1, NaN or inf: never (no line)
        v = np.asarray(values, dtype=float)
        handles += _step_boundary(ax, etas, np.where(np.isfinite(v), v, -1.0), label=label, **style)
    if observed_first is not None:
        of = np.asarray(observed_first, dtype=float)
        ok = np.isfinite(of) & (of >= 0)
        dots = dict(s=14, c="#d62728", edgecolors="white", linewidths=0.4, zorder=5)
        handles.append(
            ax.scatter(etas[ok], of[ok], label="simulation: median observed first all-correct round", **dots)
        )
    if threshold is not None and np.isfinite(threshold):
        label = f"corruption threshold $\\eta_c$ = {threshold:.3g}"
        handles.append(ax.axvline(threshold, color="white", ls=(0, (1, 1.5)), lw=2.0, path_effects=stroke, label=label))
    ax.set_xlim(_edges(etas)[0], _edges(etas)[-1])
    ax.set_ylim(_edges(rounds)[0], _edges(rounds)[-1])
    ax.set_xlabel("label noise rate $\\eta$")
    ax.set_ylabel("self-distillation " + ROUND_LABEL)
    ax.set_title(f"(a) {heat_label}: accuracy over (noise, round)", fontsize=11)
    if rounds.size <= 21:
        ax.set_yticks(rounds)
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.13), fontsize=8.5, frameon=False, ncol=1)

    styles = dict(curve_styles or {})
    for label, y in dict(curves or {}).items():
        ax2.plot(etas, np.asarray(y, dtype=float), label=label, **styles.get(label, {}))
    if threshold is not None and np.isfinite(threshold):
        ax2.axvline(threshold, color="0.3", ls=":", lw=1.5, label=f"corruption threshold $\\eta_c$ = {threshold:.3g}")
    if num_classes is not None:
        ax2.axhline(1.0 / num_classes, color="0.6", lw=0.8, ls="-", zorder=0)
    ax2.set_xlim(etas.min(), etas.max())
    ax2.set_ylim(-0.02, 1.03)
    ax2.set_xlabel("label noise rate $\\eta$")
    ax2.set_ylabel("mean training accuracy (true labels)")
    ax2.set_title("(b) PLL student after ONE round vs self-distillation", fontsize=11)
    ax2.grid(alpha=0.3)
    ax2.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), fontsize=8.5, frameon=False, ncol=2)

    if title:
        fig.suptitle(title, fontsize=11, y=0.98)
    fig.subplots_adjust(left=0.06, right=0.985, top=0.86 if title else 0.94, bottom=0.3, wspace=0.22)
    return fig


def linearization_gap_figure(
    lams: np.ndarray,
    labels: Sequence[str],
    *,
    gap_first: np.ndarray,
    gap_max: np.ndarray,
    agreement_min: np.ndarray,
    decided_min: np.ndarray,
    first_exact: np.ndarray,
    first_closed: np.ndarray,
    num_rounds: int,
    title: Optional[str] = None,
):
    """Closed form vs exact softmax outputs against ``lam``, one line per parameter point
    (simulations/linearization_gap.py).

    Args:
      lams: ``(L,)`` L2 weights (log x axis).
      labels: ``P`` legend labels, one per parameter point.
      gap_first, gap_max: ``(P, L)`` max abs output gap at round 0 and over all rounds.
      agreement_min: ``(P, L)`` smallest argmax agreement over rounds.
      decided_min: ``(P, L)`` one minus the largest near-tie fraction over rounds.
      first_exact, first_closed: ``(P, L)`` first all-correct round, exact and closed form (``-1``: none).
      num_rounds: ``R`` (rounds ``0..R-1``), for the title of the last panel.
    """
    lams = np.asarray(lams, dtype=float)
    fig = new_figure(figsize=(13, 3.8))
    axes = fig.subplots(1, 3)
    for p, label in enumerate(labels):
        (line,) = axes[0].loglog(lams, np.asarray(gap_first[p], dtype=float), "o-", label=f"{label} (round 0)")
        color = line.get_color()
        max_label = f"{label} (max over rounds)"
        axes[0].loglog(lams, np.asarray(gap_max[p], dtype=float), "s--", color=color, alpha=0.6, label=max_label)
        axes[1].semilogx(lams, np.asarray(agreement_min[p], dtype=float), "o-", color=color, label=label)
        tie_label = f"{label}: 1 - near-tie fraction"
        axes[1].semilogx(lams, np.asarray(decided_min[p], dtype=float), ":", color=color, label=tie_label)
        never = lambda v: np.where(np.asarray(v) >= 0, np.asarray(v, dtype=float), np.nan)  # noqa: E731
        axes[2].semilogx(lams, never(first_exact[p]), "o-", color=color, label=f"{label} exact")
        axes[2].semilogx(lams, never(first_closed[p]), "x:", color=color, label=f"{label} closed form")
    axes[0].set(xlabel="lam", ylabel="max |P_exact - P_closed|", title="output gap")
    axes[1].set(xlabel="lam", ylabel="argmax agreement (min over rounds)", title="prediction agreement")
    axes[2].set(
        xlabel="lam",
        ylabel="first all-correct round $r$ (0 = teacher)",
        title=f"first 100% round (gap: none in 0..{int(num_rounds) - 1})",
    )
    from matplotlib.ticker import MaxNLocator

    axes[2].yaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in axes:
        ax.legend(fontsize=6)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


# Real data (simulations/real_data.py): figures of sdtheory.experiments results


def _series(agg: Mapping, keys: Sequence[tuple], metric: str) -> tuple:
    """Mean and std over seeds of ``metric`` at ``keys`` (NaN where missing)."""
    vals = [agg.get(key, {}).get(metric, (np.nan, np.nan, 0)) for key in keys]
    return np.array([v[0] for v in vals], dtype=float), np.array([v[1] for v in vals], dtype=float)


def _accuracy_grid(agg: Mapping, feature_map: str, kinds, rates, series, band_alpha, suptitle, bottom, ncol):
    """Per noise kind, recovery and held-out accuracy against eta; ``series``: (solver, method, r, label, style)."""
    rates_a = np.asarray(rates, dtype=float)
    fig = new_figure(figsize=(10, 3.1 * len(kinds)))
    axes = fig.subplots(len(kinds), 2, squeeze=False, sharey=True)
    for i, kind in enumerate(kinds):
        for j, (metric, title) in enumerate(
            (("train_acc", "training-label recovery"), ("test_acc", "held-out accuracy"))
        ):
            ax = axes[i, j]
            for solver, method, r, label, color, ls, marker in series:
                if metric == "test_acc" and solver == "block":
                    continue
                mu, sdv = _series(agg, [(feature_map, kind, rate, solver, method, r) for rate in rates], metric)
                ax.plot(rates_a, 100 * mu, ls=ls, color=color, marker=marker, ms=3.5, lw=1.3, label=label)
                if ls == "-":
                    ax.fill_between(rates_a, 100 * (mu - sdv), 100 * (mu + sdv), color=color, alpha=band_alpha, lw=0)
            ax.set_title(f"{kind} noise: {title}", fontsize=10)
            ax.set_xlabel("noise rate eta")
            ax.grid(alpha=0.3)
            if j == 0:
                ax.set_ylabel("accuracy (%)")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.suptitle(suptitle, fontsize=11)
    fig.tight_layout(rect=(0, bottom, 1, 1))
    fig.legend(handles, labels, loc="lower center", ncol=min(ncol, len(labels)), fontsize=8, frameon=False)
    return fig


def accuracy_figure(
    agg: Mapping,
    *,
    feature_map: str,
    kinds: Sequence[str],
    rates: Sequence[float],
    num_rounds: int,
    q: float,
    num_seeds: int,
    dataset_name: str,
):
    """Accuracy against the noise rate, one row of panels per noise kind (the papers' main figure): exact SD
    rounds and PLL students (solid), the closed form (dashed), the fitted block model (dotted, training
    only). ``agg`` from :func:`sdtheory.experiments.aggregate`."""
    from matplotlib import colormaps

    blues = colormaps["Blues"]
    last = num_rounds - 1
    series: list[tuple] = [("exact", "sd", 0, "teacher", "k", "-", "o")]
    series += [("exact", "sd", r, f"SD r{r}", blues(0.35 + 0.65 * r / last), "-", "o") for r in range(1, num_rounds)]
    series += [
        ("exact", "pll_ce", 1, "PLL-CE", "tab:red", "-", "s"),
        ("exact", "pll_gce", 1, f"PLL-GCE (q={q:g})", "tab:orange", "-", "^"),
        ("closed_form", "sd", last, f"closed form SD r{last}", "tab:blue", "--", None),
        ("closed_form", "pll_ce", 1, "closed form PLL", "tab:red", "--", None),
        ("block", "sd", last, f"fitted block SD r{last}", "tab:gray", ":", None),
    ]
    title = f"Self-distillation on {dataset_name} ({feature_map} features), {_over_seeds(num_seeds)}"
    return _accuracy_grid(agg, feature_map, kinds, rates, series, 0.12, title, 0.06 if len(kinds) > 1 else 0.12, 6)


def _rate_panels(rates: Sequence[float], num_rounds: int) -> tuple:
    """A 1 x 2 figure, its axes, the rounds ``0..num_rounds-1`` and a viridis colour per noise rate."""
    from matplotlib import colormaps

    viridis = colormaps["viridis"]
    fig = new_figure(figsize=(9, 3.3))
    colors = [viridis(i / max(1, len(rates) - 1)) for i in range(len(rates))]
    return fig, fig.subplots(1, 2), np.arange(num_rounds), colors


def _finish_rate_panels(fig, axes, title: str):
    """Round axes, grids, the legend and ``title`` of a :func:`_rate_panels` figure."""
    for ax in axes:
        ax.set_xlabel("SD " + ROUND_LABEL)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7, ncol=2)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def diversity_figure(agg: Mapping, *, feature_map: str, kind: str, rates: Sequence[float], num_rounds: int):
    """Mean confidence and predictive diversity of the exact SD rounds ``0..num_rounds-1``, one line per noise rate."""
    fig, axes, rr, colors = _rate_panels(rates, num_rounds)
    for rate, color in zip(rates, colors, strict=True):
        for ax, metric in zip(axes, ("confidence", "diversity"), strict=False):
            mu, _ = _series(agg, [(feature_map, kind, rate, "exact", "sd", r) for r in rr], metric)
            ax.plot(rr, mu, marker="o", ms=3, color=color, label=f"eta={rate:g}")
    axes[0].set_ylabel("mean max probability (confidence)")
    axes[1].set_ylabel("mean predictive diversity")
    title = f"Confidence and predictive diversity of each round ({kind} noise, {feature_map} features)"
    return _finish_rate_panels(fig, axes, title)


def spectrum_figure(spectra: Mapping[str, Mapping]):
    """Eigenvalues of the empirical Gram and of the fitted block Gram, one panel per feature map: ``spectra``
    as :attr:`sdtheory.experiments.ProtocolResult.spectra`."""
    fig = new_figure(figsize=(4.6 * len(spectra), 3.4))
    axes = fig.subplots(1, len(spectra), squeeze=False)
    for ax, (fmap, info) in zip(axes[0], spectra.items(), strict=False):
        s = np.asarray(info["eigvals"], dtype=float)
        b = np.asarray(info["block_eigvals"], dtype=float)
        ax.semilogy(np.arange(1, s.size + 1), np.maximum(s, 1e-8), color="tab:blue", lw=1.5, label="empirical Gram")
        fitted = f"fitted block model (c={info['c']:.2f}, d={info['d']:.2f})"
        ax.semilogy(np.arange(1, b.size + 1), np.maximum(b, 1e-8), color="tab:gray", ls="--", lw=1.5, label=fitted)
        ax.axhline(info["ridge"], color="tab:red", lw=1, ls=":", label="K N lam")
        ax.axvline(info["num_classes"], color="k", lw=0.6, alpha=0.5)
        ax.set(xscale="log", xlabel="eigenvalue index", ylabel="eigenvalue", ylim=(1e-4, None))
        ax.set_title(f"{fmap}: N={info['n']}, d={info['dim']}", fontsize=10)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def phase_map_figure(phase_map: Any, *, num_rounds: int, title: str = ""):
    """2-D phase map of the exact block model (a :class:`sdtheory.montecarlo.theory.PhaseMap`): where exact
    SD and/or the one-round PLL student reach 100% training accuracy; lines: the linearised boundaries."""
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    etas = np.asarray(phase_map.etas, dtype=float)
    vals = np.asarray(phase_map.values, dtype=float)
    log_y = phase_map.axis == "lam"
    yc = np.log10(vals) if log_y else vals
    colours = ["#d9d9d9", "#9ecae1", "#fdae6b", "#74c476"]
    fig = new_figure(figsize=(8.0, 6.0))
    ax = fig.subplots()
    ax.pcolormesh(
        _edges(etas), _edges(yc), phase_map.region, cmap=ListedColormap(colours), vmin=-0.5, vmax=3.5, shading="flat"
    )
    handles = [Patch(color=col, label=f"exact: {name}") for col, name in zip(colours, REGIONS, strict=True)]
    for field, colour, label in (
        (phase_map.sd_linear, "k", f"linearised: SD 100% within rounds 0..{num_rounds - 1} (boundary)"),
        (phase_map.pll_linear, "#08519c", "linearised: one-round PLL student 100% (boundary)"),
    ):
        if np.any(field) and not np.all(field):
            cs = ax.contour(etas, yc, field.astype(float), levels=[0.5], colors=colour, linewidths=1.8)
            handles.append(cs.legend_elements()[0][0])
            handles[-1].set_label(label)
    ax.set_xlabel("label noise rate $\\eta$")
    ax.set_ylabel("$\\log_{10} \\lambda$" if log_y else "within-class correlation $c$")
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.12), fontsize=8.5, frameon=False, ncol=2)
    if title:
        ax.set_title(title, fontsize=10)
    fig.subplots_adjust(left=0.1, right=0.97, top=0.88, bottom=0.27)
    return fig


def smoothing_figure(
    agg: Mapping,
    *,
    feature_map: str,
    kinds: Sequence[str],
    rates: Sequence[float],
    num_rounds: int,
    eps: Sequence[float],
    betas: Sequence[float],
    taus: Sequence[float],
    num_seeds: int,
    dataset_name: str,
):
    """Label smoothing vs self-distillation: accuracy against the noise rate, one row of panels per kind
    (exact model); ``agg`` from :func:`sdtheory.smoothing_study.aggregate`."""
    from matplotlib import colormaps

    greens, purples, oranges = colormaps["Greens"], colormaps["Purples"], colormaps["Oranges"]
    last = num_rounds - 1

    def shade(cmap, i, values, lo, span):
        return cmap(lo + span * i / max(1, len(values) - 1))

    series: list = [("teacher", 0, "teacher", "k", "-", "o")]
    series += [
        (method_label("uniform", e), 0, f"uniform LS eps={e:g}", shade(greens, i, eps, 0.45, 0.5), "--", None)
        for i, e in enumerate(eps)
    ]
    series += [
        (method_label("beta_fixed", b), 1, f"Beta({b:g}) smoothing", shade(purples, i, betas, 0.5, 0.45), "-", "v")
        for i, b in enumerate(betas)
    ]
    series += [("sd", last, f"SD r{last}", "tab:blue", "-", "o")]
    series += [
        (method_label("sd_tau", t), last, f"SD tau={t:g} r{last}", shade(oranges, i, taus, 0.5, 0.45), ":", "x")
        for i, t in enumerate(taus)
    ]
    series += [("pll", 1, "PLL student", "tab:red", "-", "s")]
    series = [("exact", *row) for row in series]
    title = f"Label smoothing vs self-distillation on {dataset_name} ({feature_map} features), {_over_seeds(num_seeds)}"
    return _accuracy_grid(
        agg, feature_map, kinds, rates, series, 0.1, title, 0.2 / len(kinds) if len(kinds) > 1 else 0.14, 5
    )


def diversity_gain_figure(agg: Mapping, *, feature_map: str, kind: str, rates: Sequence[float], num_rounds: int):
    """Predictive diversity of each exact SD round beside its gain in training-label recovery over round
    ``r - 1`` (percentage points), one line per noise rate; ``agg`` from :func:`sdtheory.smoothing_study.aggregate`."""
    fig, axes, rr, colors = _rate_panels(rates, num_rounds)
    for rate, color in zip(rates, colors, strict=True):
        keys = [(feature_map, kind, float(rate), "exact", "sd", int(r)) for r in rr]
        (div, _), (acc, _) = _series(agg, keys, "diversity"), _series(agg, keys, "train_acc")
        axes[0].plot(rr, div, marker="o", ms=3, color=color, label=f"eta={rate:g}")
        axes[1].plot(rr[1:], 100 * np.diff(acc), marker="o", ms=3, color=color, label=f"eta={rate:g}")
    axes[0].set_ylabel("mean predictive diversity (normalised)")
    axes[1].set_ylabel("gain of the round (points of recovery)")
    axes[1].axhline(0.0, color="k", lw=0.6)
    axes[0].set_xticks(rr)
    axes[1].set_xticks(rr[1:])
    title = f"Does predictive diversity track the gains of SD? ({kind} noise, {feature_map} features)"
    return _finish_rate_panels(fig, axes, title)


# The paper's synthetic experiment (simulations/phase_diagram.py --preset paper)


def _rstar_text(r: int, num_rounds: int) -> str:
    if r < 0:
        return "none"
    return str(r) if r < num_rounds else f"{r} (beyond {num_rounds - 1})"


def paper_rounds_figure(
    rounds: np.ndarray,
    etas: np.ndarray,
    accuracy: np.ndarray,
    *,
    rstar_linear: Sequence[int],
    rstar_exact: Sequence[int],
    title: str = "",
    method_label: str = "exact softmax SD",
):
    """Training accuracy against the round, one curve per noise rate, with the theory's ``r*`` marked
    (``simulations/phase_diagram.py --preset paper``).

    Args:
      rounds: ``(R,)`` SD rounds ``0..R-1`` (the top axis shows SelfPLL's step ``r + 1``).
      etas: ``(E,)`` noise rates, one curve each.
      accuracy: ``(E, S, R)`` training accuracy per seed; curve: mean, band: min..max.
      rstar_linear, rstar_exact: ``(E,)`` the block model's first all-correct round (``-1``: none),
        written beside each curve end and marked on the 100% line.
      method_label: what the curves are (y-axis label).
    """
    rounds = np.asarray(rounds)
    etas = np.asarray(etas, dtype=float)
    acc = 100.0 * np.asarray(accuracy, dtype=float)
    num_rounds = int(rounds.size)
    fig = new_figure(figsize=(8.4, 5.2))
    ax = fig.subplots()
    top = 100.0
    ends = []
    for i, eta in enumerate(etas):
        col = f"C{i % 10}"
        mean = acc[i].mean(axis=0)
        rl, rx = int(rstar_linear[i]), int(rstar_exact[i])
        label = f"$\\eta$ = {eta:g}: r* linear {_rstar_text(rl, num_rounds)}, exact {_rstar_text(rx, num_rounds)}"
        ax.plot(rounds, mean, "o-", color=col, lw=1.8, ms=4, label=label)
        if acc.shape[1] > 1:
            ax.fill_between(rounds, acc[i].min(axis=0), acc[i].max(axis=0), color=col, alpha=0.18, lw=0)
        dx = 0.1 * (i - (etas.size - 1) / 2.0)  # curves whose r* coincide stay distinguishable
        for r, marker, dy in ((rl, "v", 1.4), (rx, "D", 3.6)):
            if 0 <= r <= rounds[-1]:
                ax.plot([r + dx], [top + dy], marker, color=col, ms=6, mec="k", mew=0.6, clip_on=False)
        text = "r* " + " / ".join("none" if r < 0 else str(r) for r in (rl, rx))
        ends.append([mean[-1], text, col])
    # the texts beside the curve ends, at least 3.5 points apart
    order = np.argsort([e[0] for e in ends])
    y_prev = -np.inf
    for j in order:
        y = max(ends[j][0], y_prev + 3.5)
        ax.annotate(
            ends[j][1],
            xy=(rounds[-1], ends[j][0]),
            xytext=(rounds[-1] + 0.35, y),
            color=ends[j][2],
            fontsize=8,
            va="center",
            arrowprops=dict(arrowstyle="-", color=ends[j][2], lw=0.6),
            annotation_clip=False,
        )
        y_prev = y
    ax.axhline(top, color="0.4", lw=0.8, ls=":")
    ax.plot([], [], "v", color="0.5", mec="k", mew=0.6, ms=7, label="r* of the block model, linearised (min_rounds)")
    ax.plot([], [], "D", color="0.5", mec="k", mew=0.6, ms=7, label="r* of the block model, exact softmax")
    ax.plot([], [], ls="none", label="beside each curve: r* linear / exact")
    ax.set_xlim(rounds[0] - 0.4, rounds[-1] + 2.2)
    ymin = max(0.0, np.floor(acc.min() / 10.0) * 10.0 - 5.0)
    ax.set_ylim(ymin, top + 5.0)
    ax.set_xticks(rounds)
    ax.set_xlabel("SD round r (0 = teacher)")
    ax.set_ylabel(f"training accuracy (%), {method_label}")
    sec = ax.secondary_xaxis("top", functions=(lambda r: r + 1, lambda t: t - 1))
    sec.set_xticks(rounds + 1)
    sec.set_xlabel("SelfPLL step t = r + 1 (teacher = step 1)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2, frameon=False)
    if title:
        fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    return fig
