"""Figures for the Monte Carlo results (matplotlib; no math here).

Functions take plain arrays already reduced by the caller and return a
:class:`matplotlib.figure.Figure`; save them with :func:`sdtheory.io.write_figure`.
"""

from __future__ import annotations

from typing import Mapping, Optional, Sequence

import numpy as np

__all__ = ["phase_diagram_figure"]


def new_figure(**kwargs):
    """A :class:`matplotlib.figure.Figure` not registered with pyplot: no backend, no global state.

    Save it with :func:`sdtheory.io.write_figure`; it is freed when no longer
    referenced (no ``plt.close`` needed).
    """
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
    """Draw ``values - 0.5`` (lower edge of the predicted all-correct region) as a step line.

    NaN or negative values (no all-correct round) break the line.
    """
    v = np.asarray(values, dtype=float)
    v = np.where(v >= 0, v - 0.5, np.nan)
    edges = _edges(etas)
    xs, ys = [], []
    for i in range(v.size):
        xs += [edges[i], edges[i + 1]]
        ys += [v[i], v[i]]
    return ax.plot(xs, ys, **kw)


def phase_diagram_figure(
    etas: Sequence[float],
    rounds: Sequence[int],
    sd_accuracy: np.ndarray,
    *,
    rstar_population: np.ndarray,
    rstar_empirical_mean: np.ndarray,
    observed_first: Optional[np.ndarray] = None,
    threshold: Optional[float] = None,
    curves: Mapping[str, np.ndarray] = (),
    curve_styles: Optional[Mapping[str, dict]] = None,
    title: str = "",
    heat_label: str = "multi-round SD",
    num_classes: Optional[int] = None,
):
    """Two-panel phase diagram.

    Left: mean training accuracy of multi-round SD as a heat map over
    (noise rate, round), with the theory's first all-correct round (population
    ``r*(eta)``, solid; mean empirical, dashed) drawn as the lower edge of the
    predicted 100% region, the observed first all-correct round (median over
    seeds, dots) and the corruption threshold (vertical dotted line).

    Right: accuracy against the noise rate for the curves in ``curves``
    (e.g. the PLL student after one round, SD after one round, SD's best
    round), with the same threshold line.

    Args:
      etas: ``(E,)`` noise rates; rounds: ``(R,)`` round indices.
      sd_accuracy: ``(E, R)`` mean accuracy.
      rstar_population, rstar_empirical_mean: ``(E,)``; ``-1``/NaN = never.
      observed_first: ``(E,)`` median observed first all-correct round (NaN = never).
      threshold: noise rate where the population corruption condition stops holding.
      curves: label -> ``(E,)`` accuracy for the right panel.
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
    mesh = ax.pcolormesh(_edges(etas), _edges(rounds), acc.T, cmap="viridis", vmin=vmin, vmax=1.0,
                         shading="flat", rasterized=True)
    cb = fig.colorbar(mesh, ax=ax, pad=0.02)
    cb.set_label("mean training accuracy (true labels)")

    handles = []
    handles += _step_boundary(ax, etas, rstar_population, color="white", lw=2.2, path_effects=stroke,
                              label="theory: first all-correct round $r^*(\\eta)$ (population, from $C$)")
    handles += _step_boundary(ax, etas, rstar_empirical_mean, color="#ff7f0e", lw=1.8, ls="--",
                              label="theory: mean empirical $r^*$ (from each seed's label fractions)")
    if observed_first is not None:
        of = np.asarray(observed_first, dtype=float)
        ok = np.isfinite(of) & (of >= 0)
        handles.append(ax.scatter(etas[ok], of[ok], s=14, c="#d62728", edgecolors="white", linewidths=0.4,
                                  zorder=5, label="simulation: median observed first all-correct round"))
    if threshold is not None and np.isfinite(threshold):
        handles.append(ax.axvline(threshold, color="white", ls=(0, (1, 1.5)), lw=2.0, path_effects=stroke,
                                  label=f"corruption threshold $\\eta_c$ = {threshold:.3g}"))
    ax.set_xlim(_edges(etas)[0], _edges(etas)[-1])
    ax.set_ylim(_edges(rounds)[0], _edges(rounds)[-1])
    ax.set_xlabel("label noise rate $\\eta$")
    ax.set_ylabel("self-distillation round $r$ (0 = teacher)")
    ax.set_title(f"(a) {heat_label}: accuracy over (noise, round)", fontsize=11)
    if rounds.size <= 21:
        ax.set_yticks(rounds)
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.13), fontsize=8.5, frameon=False, ncol=1)

    styles = dict(curve_styles or {})
    for label, y in dict(curves).items():
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
