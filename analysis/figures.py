"""Figure 4 (metric bars per peer context) and its difficulty-bucket companion.

Both read the ``metrics.json`` object of ``analysis.aggregate.compute_signal_metrics`` and draw
with matplotlib's object API (``matplotlib.figure.Figure`` on the Agg canvas), so nothing
depends on a display or on pyplot's global state.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from analysis.aggregate import BUCKETS
from analysis.metrics import LOWER_IS_BETTER, METRICS
from analysis.scores import CONTROL_CONDITIONS
from mopd_eval.jsonl import write_bytes_atomic

_TITLES = {
    "spearman": "Spearman ρ",
    "kendall": "Kendall τ$_b$",
    "pairwise_accuracy": "Pairwise accuracy",
    "success_auc": "Success AUC",
    "point_biserial": "Point-biserial r",
    "brier_sigmoid": "Brier (sigmoid)",
}
# Where a metric means "no signal": drawn as a dotted line.
_CHANCE = {
    "spearman": 0.0,
    "kendall": 0.0,
    "point_biserial": 0.0,
    "pairwise_accuracy": 0.5,
    "success_auc": 0.5,
}
_BASE_COLOR = "#8c8c8c"
# A fixed colour per known condition, so a condition looks the same in every figure and run
# (Okabe-Ito first, colour-blind safe; the pale Okabe-Ito yellow is left out, it vanishes when
# hatched). Conditions a user defines take the extra colours in order.
_COLORS = {
    "primary": "#0072B2",
    "second": "#56B4E9",
    "failure": "#D55E00",
    "primary+failure": "#E69F00",
    "2s1f": "#009E73",
    "all": "#CC79A7",
    "all-capped": "#7B3294",
    "random_peer": "#8C564B",
    "score_ordered": "#4E79A7",
    "feedback": "#59A14F",
}
_EXTRA_COLORS = ["#F28E2B", "#B07AA1", "#9C755F", "#76B7B2", "#EDC948", "#FF9DA7", "#BAB0AC"]
_CONTROL_FACE_ALPHA = 0.3
_STYLE = {
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "axes.grid.axis": "y",
    "grid.alpha": 0.3,
    "grid.linewidth": 0.6,
}


def metric_panel_title(metric: str, metrics: dict) -> str:
    title = _TITLES[metric]
    if metric == "kendall" and metrics.get("compat") == "paper":
        title = "Kendall γ (paper compat)"
    if metric in LOWER_IS_BETTER:
        title += " (lower is better)"
    return title


def condition_colors(order: list[str]) -> dict[str, str]:
    """Colour per condition: grey for ``base``, fixed colours for the known conditions, the
    extra colours in order for the others."""
    colors, k = {}, 0
    for c in order:
        if c == "base":
            colors[c] = _BASE_COLOR
        elif c in _COLORS:
            colors[c] = _COLORS[c]
        else:
            colors[c] = _EXTRA_COLORS[k % len(_EXTRA_COLORS)]
            k += 1
    return colors


def _stat_arrays(stats: list[dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    mean = np.array([np.nan if s["mean"] is None else s["mean"] for s in stats], dtype=float)
    lo = np.array([np.nan if s["ci_low"] is None else s["ci_low"] for s in stats], dtype=float)
    hi = np.array([np.nan if s["ci_high"] is None else s["ci_high"] for s in stats], dtype=float)
    # Error bars need non-negative lengths; a missing CI draws none.
    err = np.vstack([np.nan_to_num(mean - lo), np.nan_to_num(hi - mean)]).clip(min=0)
    return mean, err, np.vstack([lo, hi])


def _subtitle(metrics: dict) -> str:
    ci = (
        f"error bars: {metrics['ci_level']:.0%} percentile bootstrap CI over prompts "
        f"({metrics['n_bootstrap']} draws, seed {metrics['seed']})"
        if metrics["n_bootstrap"]
        else "no bootstrap CI"
    )
    return (
        f"mean over prompts; sample set: {metrics['sample_set']}; compat: {metrics['compat']}; {ci}"
    )


def _set_limits(ax, metric: str, lows: np.ndarray, highs: np.ndarray) -> None:
    vals = np.concatenate([lows[np.isfinite(lows)], highs[np.isfinite(highs)], [0.0]])
    if metric in _CHANCE:
        vals = np.append(vals, _CHANCE[metric])
    lo, hi = float(vals.min()), float(vals.max())
    if hi - lo < 1e-9:  # nothing defined to draw: keep a readable unit axis
        hi = lo + 1.0
    pad = 0.08 * (hi - lo)
    ax.set_ylim(lo - (pad if lo < 0 else 0), hi + pad)


def figure4(metrics: dict) -> Figure:
    """2x3 panels, one per metric: a bar per condition (paper order, paper labels) with CI error
    bars, the ``base`` mean as a dashed reference line, chance level dotted, controls hatched."""
    order = metrics["condition_order"]
    colors = condition_colors(order)
    labels = [metrics["labels"][c] for c in order]
    x = np.arange(len(order))
    fig = Figure(figsize=(12, 7.4), layout="constrained")
    with _rc():
        axes = fig.subplots(2, 3)
        for ax, metric in zip(axes.ravel(), METRICS, strict=True):
            stats = [metrics["conditions"][c][metric] for c in order]
            mean, err, bounds = _stat_arrays(stats)
            for i in np.flatnonzero(np.isnan(mean)):
                ax.text(i, 0, "n/a", ha="center", va="bottom", fontsize=7, color="0.4")
            _bars(
                ax,
                x,
                mean,
                err,
                order,
                colors,
                width=0.72,
                show_err=bool(metrics["n_bootstrap"]),
                capsize=3,
            )
            if metric in _CHANCE:
                ax.axhline(_CHANCE[metric], color="0.3", lw=0.8, ls=":", zorder=1)
            if "base" in order:
                b = metrics["conditions"]["base"][metric]["mean"]
                if b is not None:
                    ax.axhline(b, color="0.25", lw=1.1, ls="--", zorder=4)
            _set_limits(ax, metric, np.r_[bounds[0], mean], np.r_[bounds[1], mean])
            ax.set_title(
                metric_panel_title(metric, metrics),
                fontweight="bold" if metric in LOWER_IS_BETTER else None,
            )
            ax.set_xticks(x, labels, rotation=40, ha="right", rotation_mode="anchor", fontsize=8)
            ax.set_xlim(-0.6, len(order) - 0.4)
            first_control = next((i for i, c in enumerate(order) if c in CONTROL_CONDITIONS), None)
            if first_control:
                # Separates the paper's conditions from the controls.
                ax.axvline(first_control - 0.5, color="0.75", lw=0.8, zorder=1)
        handles = []
        if "base" in order:
            handles.append(
                Line2D(
                    [],
                    [],
                    color="0.25",
                    ls="--",
                    lw=1.1,
                    label=f"{metrics['labels']['base']} (reference)",
                )
            )
        handles.append(Line2D([], [], color="0.3", ls=":", lw=0.8, label="chance / no correlation"))
        if any(c in CONTROL_CONDITIONS for c in order):
            handles.append(Patch(**_bar_style("random_peer", "#555555"), label="control condition"))
        fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), frameon=False)
        fig.suptitle("Teacher-signal quality by peer context\n" + _subtitle(metrics), fontsize=11)
    return fig


def figure4_buckets(metrics: dict) -> Figure:
    """2x3 panels, one per metric: bars grouped by difficulty bucket (easy, medium, hard), one
    bar per condition in Figure 4's colours, with CI error bars. A bucket with no usable prompt
    under the sample set says so."""
    order = metrics["condition_order"]
    colors = condition_colors(order)
    k = len(order)
    width = 0.84 / max(k, 1)
    offsets = (np.arange(k) - (k - 1) / 2) * width
    n_bucket = {
        bk: max(
            (s["n_prompts"] for c in order for s in metrics["by_bucket"][bk][c].values()), default=0
        )
        for bk in BUCKETS
    }
    ticks = [f"{bk}\n({n_bucket[bk]} prompts)" for bk in BUCKETS]
    fig = Figure(figsize=(12, 7.6), layout="constrained")
    with _rc():
        axes = fig.subplots(2, 3)
        for ax, metric in zip(axes.ravel(), METRICS, strict=True):
            all_lo, all_hi = [], []
            for j, bk in enumerate(BUCKETS):
                stats = [metrics["by_bucket"][bk][c][metric] for c in order]
                mean, err, bounds = _stat_arrays(stats)
                all_lo.append(np.r_[bounds[0], mean])
                all_hi.append(np.r_[bounds[1], mean])
                if np.isnan(mean).all():
                    ax.text(
                        j,
                        0,
                        "no prompts\nin this sample set"
                        if n_bucket[bk] == 0
                        else "undefined on\nthese prompts",
                        ha="center",
                        va="bottom",
                        fontsize=8,
                        color="0.4",
                        style="italic",
                    )
                    continue
                _bars(
                    ax,
                    j + offsets,
                    mean,
                    err,
                    order,
                    colors,
                    width=width * 0.95,
                    show_err=bool(metrics["n_bootstrap"]),
                    capsize=1.5,
                    elinewidth=0.7,
                )
            if metric in _CHANCE:
                ax.axhline(_CHANCE[metric], color="0.3", lw=0.8, ls=":", zorder=1)
            _set_limits(ax, metric, np.concatenate(all_lo), np.concatenate(all_hi))
            ax.set_title(
                metric_panel_title(metric, metrics),
                fontweight="bold" if metric in LOWER_IS_BETTER else None,
            )
            ax.set_xticks(np.arange(len(BUCKETS)), ticks)
            ax.set_xlim(-0.5, len(BUCKETS) - 0.5)
        handles = [Patch(**_bar_style(c, colors[c]), label=metrics["labels"][c]) for c in order]
        fig.legend(
            handles=handles, loc="outside lower center", ncol=min(len(handles), 6), frameon=False
        )
        fig.suptitle(
            "Teacher-signal quality by prompt difficulty (successes in the rollout group: easy ≥ n/2, medium ≥ 1, hard 0)\n"
            + _subtitle(metrics),
            fontsize=11,
        )
    return fig


def _bar_style(condition: str, color: str) -> dict:
    # Controls: pale face, hatched in the full colour; the paper's conditions: solid.
    if condition in CONTROL_CONDITIONS:
        return {
            "facecolor": to_rgba(color, _CONTROL_FACE_ALPHA),
            "edgecolor": color,
            "hatch": "////",
            "linewidth": 0.8,
        }
    return {"facecolor": color, "edgecolor": "white", "linewidth": 0.5}


def _bars(ax, xs, mean, err, order, colors, *, width, show_err, capsize, elinewidth=1.0) -> None:
    ok = ~np.isnan(mean)
    for i in np.flatnonzero(ok):
        ax.bar(xs[i], mean[i], width=width, zorder=2, **_bar_style(order[i], colors[order[i]]))
    if show_err and ok.any():
        ax.errorbar(
            xs[ok],
            mean[ok],
            yerr=err[:, ok],
            fmt="none",
            ecolor="0.15",
            elinewidth=elinewidth,
            capsize=capsize,
            zorder=3,
        )


def _rc():
    import matplotlib

    return matplotlib.rc_context(_STYLE)


def save_png(fig: Figure, path: str | Path, *, dpi: int = 200) -> None:
    """Render ``fig`` to PNG and write it atomically."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, facecolor="white")
    write_bytes_atomic(path, buf.getvalue())
