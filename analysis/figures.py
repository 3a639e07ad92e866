"""Figure 4 (metric bars per peer context) and its difficulty-bucket companion.

Both read the ``metrics.json`` object of ``analysis.aggregate.compute_signal_metrics`` and draw
with matplotlib's object API (``matplotlib.figure.Figure`` on the Agg canvas), so nothing
depends on a display or on pyplot's global state. Panels, titles and chance levels come from the
metric registry (``analysis/metric_specs.py``); labels and the hatching of controls from the
conditions (``Condition.label``, ``Condition.control``).

Small samples are shown for what they are: a panel with nothing to draw is left out (a bucket
without a usable prompt, a metric undefined everywhere) and the figure says what was left out; a
bar that averages fewer prompts than its condition has says ``n=k``; a Brier bar over one-class
prompts only is drawn grey.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from analysis.aggregate import BUCKETS, row_prompts
from analysis.metric_specs import METRICS, SPECS
from analysis.tables import greyed
from mopd_eval.jsonl import write_bytes_atomic

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
_GREYED = "#c8c8c8"
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
    spec = SPECS[metric]
    title = spec.label("plot", metrics.get("compat", "default"))
    return title + " (lower is better)" if spec.lower_is_better else title


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
    # Two lines: one does not fit the figure's width.
    return (
        f"mean over prompts; sample set: {metrics['sample_set']}; compat: {metrics['compat']}\n{ci}"
    )


def _set_limits(ax, metric: str, lows: np.ndarray, highs: np.ndarray) -> None:
    vals = np.concatenate([lows[np.isfinite(lows)], highs[np.isfinite(highs)], [0.0]])
    if SPECS[metric].chance is not None:
        vals = np.append(vals, SPECS[metric].chance)
    lo, hi = float(vals.min()), float(vals.max())
    if hi - lo < 1e-9:  # nothing defined to draw: keep a readable unit axis
        hi = lo + 1.0
    pad = 0.08 * (hi - lo)
    ax.set_ylim(lo - (pad if lo < 0 else 0), hi + pad)


def _panels(fig: Figure, n: int) -> list:
    """``n`` axes on a grid three wide; grid cells beyond ``n`` are removed, not left empty.

    With ``n == 0`` (no metric defined anywhere, e.g. a study too small for any prompt to have
    two effective rows) one empty axis says so, so the figure still exists and reads as such.
    """
    if n == 0:
        ax = fig.subplots()
        ax.set_axis_off()
        ax.text(0.5, 0.5, "no metric has a defined value (see the title)", ha="center", va="center")
        return []
    cols = min(n, 3)
    axes = list(fig.subplots((n + cols - 1) // cols, cols, squeeze=False).ravel())
    for ax in axes[n:]:
        fig.delaxes(ax)
    return axes[:n]


def _left_out_note(what: list[str]) -> str:
    return f"\nleft out (nothing to draw): {'; '.join(what)}" if what else ""


def _decorate(ax, metric: str, metrics: dict, lows: np.ndarray, highs: np.ndarray) -> None:
    chance = SPECS[metric].chance
    if chance is not None:
        ax.axhline(chance, color="0.3", lw=0.8, ls=":", zorder=1)
    _set_limits(ax, metric, lows, highs)
    ax.set_title(
        metric_panel_title(metric, metrics),
        fontweight="bold" if SPECS[metric].lower_is_better else None,
    )


def _cell_counts(metrics: dict, metric: str, order: list[str], bucket: str | None = None) -> list:
    """Per condition: the bar's prompt count where it differs from the condition's, else None."""
    out = []
    for c in order:
        stats = metrics["conditions"][c] if bucket is None else metrics["by_bucket"][bucket][c]
        n = stats[metric]["n_prompts"]
        out.append(None if n == row_prompts(metrics, c, bucket) else n)
    return out


def _figure4_panel(ax, metrics: dict, metric: str, colors: dict[str, str]) -> None:
    order = metrics["condition_order"]
    x = np.arange(len(order))
    mean, err, bounds = _stat_arrays([metrics["conditions"][c][metric] for c in order])
    for i in np.flatnonzero(np.isnan(mean)):
        ax.text(i, 0, "n/a", ha="center", va="bottom", fontsize=7, color="0.4")
    grey = [greyed(metrics, c, metric) for c in order]
    _bars(ax, x, mean, err, order, colors, metrics, grey=grey, width=0.72, capsize=3)
    _annotate_counts(ax, x, mean + err[1], _cell_counts(metrics, metric, order), fontsize=6.5)
    if "base" in order and metrics["conditions"]["base"][metric]["mean"] is not None:
        ax.axhline(
            metrics["conditions"]["base"][metric]["mean"], color="0.25", lw=1.1, ls="--", zorder=4
        )
    _decorate(ax, metric, metrics, np.r_[bounds[0], mean], np.r_[bounds[1], mean])
    labels = [metrics["labels"][c] for c in order]
    ax.set_xticks(x, labels, rotation=40, ha="right", rotation_mode="anchor", fontsize=8)
    ax.set_xlim(-0.6, len(order) - 0.4)
    controls = set(metrics.get("controls", ()))
    first_control = next((i for i, c in enumerate(order) if c in controls), None)
    if first_control:
        # Separates the paper's conditions from the controls.
        ax.axvline(first_control - 0.5, color="0.75", lw=0.8, zorder=1)


def _figure4_legend(fig: Figure, metrics: dict, any_grey: bool) -> None:
    order = metrics["condition_order"]
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
    if metrics.get("controls"):
        handles.append(Patch(**_bar_style(True, "#555555"), label="control condition"))
    if any_grey:
        handles.append(
            Patch(
                facecolor=_GREYED, edgecolor="white", label="one class only (Brier not comparable)"
            )
        )
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), frameon=False)


def figure4(metrics: dict) -> Figure:
    """One panel per metric with a defined value: a bar per condition (paper order, condition
    labels) with CI error bars, the ``base`` mean as a dashed reference line, chance level
    dotted, controls hatched, ``n=k`` over a bar that averages fewer prompts than its row."""
    order = metrics["condition_order"]
    colors = condition_colors(order)
    shown = [
        m for m in METRICS if any(metrics["conditions"][c][m]["mean"] is not None for c in order)
    ]
    left_out = [
        f"{SPECS[m].label('plot')} (undefined everywhere)" for m in METRICS if m not in shown
    ]
    fig = Figure(figsize=(12, 3.7 * max(1, (len(shown) + 2) // 3)), layout="constrained")
    with _rc():
        for ax, metric in zip(_panels(fig, len(shown)), shown, strict=True):
            _figure4_panel(ax, metrics, metric, colors)
        any_grey = any(greyed(metrics, c, m) for c in order for m in shown)
        _figure4_legend(fig, metrics, any_grey)
        fig.suptitle(
            "Teacher-signal quality by peer context\n"
            + _subtitle(metrics)
            + _left_out_note(left_out),
            fontsize=11,
        )
    return fig


def _bucket_panel(
    ax, metrics: dict, metric: str, buckets: list[str], colors: dict[str, str]
) -> None:
    order = metrics["condition_order"]
    k = len(order)
    width = 0.84 / max(k, 1)
    offsets = (np.arange(k) - (k - 1) / 2) * width
    all_lo, all_hi = [], []
    for j, bk in enumerate(buckets):
        mean, err, bounds = _stat_arrays([metrics["by_bucket"][bk][c][metric] for c in order])
        all_lo.append(np.r_[bounds[0], mean])
        all_hi.append(np.r_[bounds[1], mean])
        if np.isnan(mean).all():
            ax.text(
                j,
                0,
                "undefined on\nthese prompts",
                ha="center",
                va="bottom",
                fontsize=8,
                color="0.4",
                style="italic",
            )
            continue
        grey = [greyed(metrics, c, metric, bk) for c in order]
        _bars(
            ax,
            j + offsets,
            mean,
            err,
            order,
            colors,
            metrics,
            grey=grey,
            width=width * 0.95,
            capsize=1.5,
            elinewidth=0.7,
        )
        _annotate_counts(
            ax, j + offsets, mean + err[1], _cell_counts(metrics, metric, order, bk), fontsize=5
        )
    _decorate(ax, metric, metrics, np.concatenate(all_lo), np.concatenate(all_hi))
    n_bucket = {bk: max(row_prompts(metrics, c, bk) for c in order) for bk in buckets}
    ax.set_xticks(np.arange(len(buckets)), [f"{bk}\n({n_bucket[bk]} prompts)" for bk in buckets])
    ax.set_xlim(-0.5, len(buckets) - 0.5)


def figure4_buckets(metrics: dict) -> Figure:
    """One panel per metric: bars grouped by difficulty bucket (easy, medium, hard), one bar per
    condition in Figure 4's colours, with CI error bars. A bucket without a usable prompt under
    the sample set (``hard`` under the default one) is left out, and the title says so."""
    order = metrics["condition_order"]
    colors = condition_colors(order)
    buckets = [bk for bk in BUCKETS if any(row_prompts(metrics, c, bk) for c in order)]
    shown = [
        m
        for m in METRICS
        if any(metrics["by_bucket"][bk][c][m]["mean"] is not None for bk in buckets for c in order)
    ]
    left_out = [
        f"{bk} (no prompt with two rows in this sample set)" for bk in BUCKETS if bk not in buckets
    ]
    left_out += [
        f"{SPECS[m].label('plot')} (undefined everywhere)" for m in METRICS if m not in shown
    ]
    fig = Figure(figsize=(12, 3.8 * max(1, (len(shown) + 2) // 3)), layout="constrained")
    with _rc():
        for ax, metric in zip(_panels(fig, len(shown)), shown, strict=True):
            _bucket_panel(ax, metrics, metric, buckets, colors)
        handles = [
            Patch(
                **_bar_style(c in metrics.get("controls", ()), colors[c]),
                label=metrics["labels"][c],
            )
            for c in order
        ]
        fig.legend(
            handles=handles, loc="outside lower center", ncol=min(len(handles), 6), frameon=False
        )
        fig.suptitle(
            "Teacher-signal quality by prompt difficulty (successes in the rollout group: easy ≥ n/2, medium ≥ 1, hard 0)\n"
            + _subtitle(metrics)
            + _left_out_note(left_out),
            fontsize=11,
        )
    return fig


def _bar_style(control: bool, color: str) -> dict:
    # Controls: pale face, hatched in the full colour; the paper's conditions: solid.
    if control:
        return {
            "facecolor": to_rgba(color, _CONTROL_FACE_ALPHA),
            "edgecolor": color,
            "hatch": "////",
            "linewidth": 0.8,
        }
    return {"facecolor": color, "edgecolor": "white", "linewidth": 0.5}


def _bars(
    ax, xs, mean, err, order, colors, metrics, *, grey, width, capsize, elinewidth=1.0
) -> None:
    ok = ~np.isnan(mean)
    controls = set(metrics.get("controls", ()))
    for i in np.flatnonzero(ok):
        color = _GREYED if grey[i] else colors[order[i]]
        ax.bar(xs[i], mean[i], width=width, zorder=2, **_bar_style(order[i] in controls, color))
    if metrics["n_bootstrap"] and ok.any():
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


def _annotate_counts(ax, xs, tops, counts, *, fontsize: float) -> None:
    for x, top, n in zip(xs, tops, counts, strict=True):
        if n is not None and np.isfinite(top):
            ax.text(x, top, f"n={n}", ha="center", va="bottom", fontsize=fontsize, color="0.3")


def _rc():
    import matplotlib

    return matplotlib.rc_context(_STYLE)


def save_png(fig: Figure, path: str | Path, *, dpi: int = 200) -> None:
    """Render ``fig`` to PNG and write it atomically."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, facecolor="white")
    write_bytes_atomic(path, buf.getvalue())
