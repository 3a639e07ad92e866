"""Write a diversity comparison: summary.json, summary.md (Table 8's layout), per_prompt.jsonl
and three figures. Input: per run, the ``GroupDiversity`` of each prompt.

Every run-level number is the mean over prompts of the values defined for that prompt (NaN
per-prompt values are left out), and the count each mean uses is reported beside it.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mopd_eval.diversity import GroupDiversity
from mopd_eval.jsonl import (
    write_bytes_atomic,
    write_json_atomic,
    write_jsonl_atomic,
    write_text_atomic,
)

# (key, table header, figure label); "↑" = higher means more diverse.
METRICS: tuple[tuple[str, str, str], ...] = (
    ("distinct1", "Distinct-1 ↑", "Distinct-1"),
    ("distinct2", "Distinct-2 ↑", "Distinct-2"),
    ("ast_jaccard_distance", "AST Jaccard distance ↑", "AST Jaccard distance"),
    ("self_bleu4", "self-BLEU-4 ↓", "self-BLEU-4"),
    ("unique_ratio", "Unique ratio ↑", "Unique ratio"),
)
# The paper's three diversity metrics (Table 8), the ones drawn in the figures.
FIGURE_METRICS = ("distinct1", "distinct2", "ast_jaccard_distance")
FIGURES = ("diversity_bars.png", "pass_at_k.png", "diversity_vs_pass.png")

RunGroups = Sequence[tuple[Any, GroupDiversity]]  # (problem_id, metrics) in prompt order


def mean_defined(values: Sequence[float | None]) -> tuple[float, int, float]:
    """``(mean, count, standard error)`` over the finite values; None and NaN are skipped.

    The mean is NaN when no value is finite; the standard error (sample std / sqrt(count)) is
    NaN with fewer than two values.
    """
    arr = np.array([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    if arr.size == 0:
        return math.nan, 0, math.nan
    sem = float(arr.std(ddof=1) / math.sqrt(arr.size)) if arr.size > 1 else math.nan
    return float(arr.mean()), int(arr.size), sem


def summarize_run(groups: Sequence[GroupDiversity]) -> dict[str, Any]:
    """The ``summary.json`` entry of one run (see the module docstring for the means).

    ``pass_at_k`` maps k (as a string, JSON keys being strings) to the mean pass@k over the
    prompts with at least k samples, ``pass_at_k_n_prompts`` to that number of prompts; both
    are None when the run has no verdicts.
    """
    out: dict[str, Any] = {}
    n_defined: dict[str, int] = {}
    sem: dict[str, float] = {}
    for key, _, _ in METRICS:
        vals = [getattr(g, key) for g in groups]
        if all(v is None for v in vals):  # not computed (AST of a text task)
            out[key], n_defined[key], sem[key] = None, 0, math.nan
            continue
        out[key], n_defined[key], sem[key] = mean_defined(vals)
    out["n_prompts"] = len(groups)
    out["n_responses"] = sum(g.n_responses for g in groups)
    out["n_defined"] = n_defined
    out["sem"] = sem
    curves = [g.pass_at_k for g in groups if g.pass_at_k is not None]
    if curves:
        k_max = max(map(len, curves))
        out["pass_at_k"] = {}
        out["pass_at_k_n_prompts"] = {}
        for k in range(1, k_max + 1):
            vals = [c[k - 1] for c in curves if len(c) >= k]
            out["pass_at_k"][str(k)] = float(np.mean(vals))
            out["pass_at_k_n_prompts"][str(k)] = len(vals)
    else:
        out["pass_at_k"] = out["pass_at_k_n_prompts"] = None
    return out


def common_k(runs: Mapping[str, RunGroups]) -> int | None:
    """The largest k every prompt of every run with verdicts supports (its fewest samples)."""
    ns = [g.n_responses for groups in runs.values() for _, g in groups if g.pass_at_k is not None]
    return min(ns) if ns else None


def per_prompt_rows(run: str, groups: RunGroups) -> list[dict[str, Any]]:
    rows = []
    for pid, g in groups:
        row: dict[str, Any] = {"run": run, "problem_id": pid, "n_responses": g.n_responses,
                               "n_tokens": g.n_tokens}
        for key, _, _ in METRICS:
            row[key] = getattr(g, key)
        row["n_parsable"] = g.n_parsable
        row["n_success"] = g.n_success
        row["pass_at_k"] = (None if g.pass_at_k is None
                            else {str(k): v for k, v in enumerate(g.pass_at_k, start=1)})
        rows.append(row)
    return rows


def _fmt(v: float | None, digits: int = 4) -> str:
    return "—" if v is None or not math.isfinite(v) else f"{v:.{digits}f}"


def render_summary_md(summary: Mapping[str, Any]) -> str:
    """Table 8's layout (rows = runs, columns = metrics) plus definitions and counts."""
    runs = summary["runs"]
    cfg = summary["config"]
    k = cfg.get("common_k")
    show_ast = cfg["task"] == "code"
    metrics = [m for m in METRICS if show_ast or m[0] != "ast_jaccard_distance"]
    header = ["Run", *(h for _, h, _ in metrics), "pass@1"]
    if k is not None and k > 1:
        header.append(f"pass@{k}")
    header.append("Prompts")
    lines = [
        "# Solution diversity",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join([" --- "] + [" ---: "] * (len(header) - 1)) + "|",
    ]
    for name, r in runs.items():
        cells = [name, *(_fmt(r[key]) for key, _, _ in metrics)]
        pak = r["pass_at_k"]
        cells.append(_fmt(pak["1"]) if pak else "—")
        if k is not None and k > 1:
            cells.append(_fmt(pak.get(str(k))) if pak else "—")
        cells.append(str(r["n_prompts"]))
        lines.append("| " + " | ".join(cells) + " |")
    mode = ("the group's token streams concatenated (the paper's way)"
            if cfg["distinct_mode"] == "stream" else "each response alone, averaged")
    view = ("the last fenced Python block of each response, else the whole text"
            if show_ast else "the whole response text")
    lines += [
        "",
        "Each number is the mean over prompts of that prompt's value (↑: higher is more diverse;",
        "↓: higher is more alike). Per-prompt values are in `per_prompt.jsonl`.",
        "",
        f"- View: {view}; tokens: `{cfg['token_pattern']}`.",
        f"- Distinct-n: unique n-grams / n-grams over {mode}.",
    ]
    if show_ast:
        lines.append("- AST Jaccard distance: 1 − Σmin/Σmax of AST node-type counts, mean over "
                     "pairs of parsable responses (prompts with fewer than two are left out).")
    lines += [
        f"- self-BLEU-4: {cfg['self_bleu']}.",
        "- Unique ratio: distinct stripped views / responses.",
        "- pass@k: unbiased estimator 1 − C(n−c,k)/C(n,k), on rows that carry `success`.",
        "",
        "Prompts each mean uses (a metric is undefined for a prompt when it has nothing to "
        "measure):",
        "",
        "| Run | " + " | ".join(lbl for _, _, lbl in metrics) + " |",
        "|" + "|".join([" --- "] + [" ---: "] * len(metrics)) + "|",
    ]
    for name, r in runs.items():
        lines.append(f"| {name} | "
                     + " | ".join(str(r["n_defined"][key]) for key, _, _ in metrics) + " |")
    lines += ["", f"Regenerate: `{cfg['command']}`", ""]
    return "\n".join(lines)


def _save(fig: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=150, bbox_inches="tight")
    plt.close(fig)
    write_bytes_atomic(path, buf.getvalue())


def _run_colors(summary: Mapping[str, Any]) -> dict[str, Any]:
    """One colour per run, the same in every figure (runs without verdicts keep theirs)."""
    import matplotlib.pyplot as plt

    cmap = plt.get_cmap("tab10")
    return {name: cmap(i % 10) for i, name in enumerate(summary["runs"])}


def plot_diversity_bars(summary: Mapping[str, Any], path: Path) -> None:
    """Grouped bars: one group per diversity metric, one bar per run, ± s.e.m. over prompts."""
    import matplotlib.pyplot as plt

    runs = summary["runs"]
    keys = [k for k in FIGURE_METRICS if any(r[k] is not None for r in runs.values())]
    labels = {k: lbl for k, _, lbl in METRICS}
    n_runs = len(runs)
    width = 0.8 / n_runs
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 + 1.1 * len(keys) * max(n_runs, 2)), 4.2))
    x = np.arange(len(keys))
    colors = _run_colors(summary)
    top = 0.0
    for i, (name, r) in enumerate(runs.items()):
        color = colors[name]
        vals = np.array([np.nan if r[k] is None else r[k] for k in keys], dtype=float)
        errs = np.array([r["sem"][k] for k in keys], dtype=float)
        pos = x - 0.4 + width * (i + 0.5)
        bars = ax.bar(pos, np.nan_to_num(vals), width * 0.92, color=color,
                      label=f"{name} ({r['n_prompts']} prompts)",
                      yerr=np.where(np.isfinite(errs), errs, 0), capsize=3,
                      error_kw={"elinewidth": 1, "ecolor": "0.25"})
        for bar, v, e in zip(bars, vals, errs, strict=True):
            bar_top = bar.get_height() + (e if np.isfinite(e) else 0)
            top = max(top, bar_top)
            ax.text(bar.get_x() + bar.get_width() / 2, bar_top + 0.01,
                    "n/a" if not np.isfinite(v) else f"{v:.3f}",
                    ha="center", va="bottom", fontsize=8)
    ax.set_xticks(x, [labels[k] for k in keys], fontsize=10)
    # All three metrics live in [0, 1]; zoom to the bars but never past 1 plus label room.
    ax.set_ylim(0, min(1.12, max(0.1, top * 1.15 + 0.03)))
    ax.set_ylabel("mean over prompts (higher = more diverse)")
    ax.set_title("Solution diversity per run (error bars: ± s.e.m. over prompts)", fontsize=11)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    ax.spines[["top", "right"]].set_visible(False)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=min(n_runs, 4),
              frameon=False, fontsize=9)
    _save(fig, path)


def plot_pass_at_k(summary: Mapping[str, Any], path: Path) -> None:
    """pass@k against k for every run with verdicts."""
    import matplotlib.pyplot as plt

    runs = {n: r for n, r in summary["runs"].items() if r["pass_at_k"]}
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    colors = _run_colors(summary)
    k_max = 1
    for name, r in runs.items():
        color = colors[name]
        ks = [int(k) for k in r["pass_at_k"]]
        vs = [r["pass_at_k"][str(k)] for k in ks]
        k_max = max(k_max, max(ks))
        # Past 16 samples a marker per k is a smear: mark the powers of two (and the last k).
        marks = [i for i, k in enumerate(ks) if len(ks) <= 16 or k & (k - 1) == 0 or k == ks[-1]]
        ax.plot(ks, vs, marker="o", ms=4, lw=1.8, color=color, markevery=marks,
                label=f"{name} (pass@{ks[-1]} = {vs[-1]:.3f})")
    if k_max > 16:
        ax.set_xscale("log", base=2)
        ticks = sorted({2**i for i in range(k_max.bit_length()) if 2**i <= k_max} | {k_max})
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.set_xlim(0.85, k_max * 1.15)
    else:
        ax.set_xticks(range(1, k_max + 1))
        ax.set_xlim(0.7, k_max + 0.3)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("k (samples allowed)")
    ax.set_ylabel("pass@k (unbiased), mean over prompts")
    ax.set_title("pass@k per run", fontsize=11)
    ax.grid(alpha=0.3)
    ax.spines[["top", "right"]].set_visible(False)
    ax.legend(frameon=False, fontsize=9, loc="lower right")
    _save(fig, path)


def plot_diversity_vs_pass(summary: Mapping[str, Any], path: Path) -> None:
    """One panel per diversity metric: each run's diversity (x, ± s.e.m.) against its pass@1
    (hollow) and pass@K (filled, K the common k), joined by a line."""
    import matplotlib.pyplot as plt

    runs = {n: r for n, r in summary["runs"].items() if r["pass_at_k"]}
    colors = _run_colors(summary)
    k = summary["config"]["common_k"]
    keys = [m for m in FIGURE_METRICS if any(r[m] is not None for r in runs.values())]
    labels = {key: lbl for key, _, lbl in METRICS}
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 4.0), squeeze=False,
                             sharey=True)
    for ax, key in zip(axes[0], keys, strict=True):
        for name, r in runs.items():
            x = r[key]
            if x is None or not math.isfinite(x):
                continue
            p1, pk = r["pass_at_k"]["1"], r["pass_at_k"].get(str(k), math.nan)
            c = colors[name]
            ax.plot([x, x], [p1, pk], color=c, lw=1.2, alpha=0.6)
            ax.errorbar(x, pk, xerr=r["sem"][key] if math.isfinite(r["sem"][key]) else None,
                        fmt="o", ms=8, color=c, capsize=3)
            ax.plot(x, p1, "o", ms=8, mfc="white", mec=c, mew=1.5)
        ax.set_xlabel(labels[key] + " (higher = more diverse)")
        ax.grid(alpha=0.3)
        ax.spines[["top", "right"]].set_visible(False)
        ax.margins(x=0.2)
        lo, hi = ax.get_xlim()
        ax.set_xlim(max(lo, -0.01), hi)  # diversity is never negative; keep a 0 point visible
    axes[0][0].set_ylabel("pass rate, mean over prompts")
    axes[0][0].set_ylim(0, 1.04)
    handles = [plt.Line2D([], [], marker="o", ls="", ms=8, color=colors[n], label=n)
               for n in runs]
    handles += [
        plt.Line2D([], [], marker="o", ls="", ms=8, color="0.35", label=f"filled: pass@{k}"),
        plt.Line2D([], [], marker="o", ls="", ms=8, mfc="white", mec="0.35", mew=1.5,
                   label="hollow: pass@1"),
    ]
    fig.suptitle(f"Diversity against pass@1 and pass@{k} (one point per run)", fontsize=11)
    fig.tight_layout()
    fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.02),
               ncol=min(len(handles), 6), frameon=False, fontsize=9)
    _save(fig, path)


def write_report(
    out_dir: str | Path, runs: Mapping[str, RunGroups], config: Mapping[str, Any]
) -> dict[str, Any]:
    """Write summary.json, summary.md, per_prompt.jsonl and the figures into ``out_dir``.

    ``config`` must hold ``task``, ``distinct_mode``, ``token_pattern``, ``self_bleu`` (a
    description) and ``command``; ``common_k`` is added. Figures that need verdicts are written
    only when some run has them; a stale copy from an earlier report is removed so the folder
    never mixes two runs. Returns the summary.
    """
    import matplotlib

    matplotlib.use("Agg")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = {
        "runs": {name: summarize_run([g for _, g in groups]) for name, groups in runs.items()},
        "config": {**config, "common_k": common_k(runs)},
    }
    write_json_atomic(out / "summary.json", summary)
    write_text_atomic(out / "summary.md", render_summary_md(summary))
    write_jsonl_atomic(out / "per_prompt.jsonl",
                       [row for name, groups in runs.items() for row in per_prompt_rows(name, groups)])
    written = {"diversity_bars.png"}
    plot_diversity_bars(summary, out / "diversity_bars.png")
    if summary["config"]["common_k"] is not None:
        plot_pass_at_k(summary, out / "pass_at_k.png")
        plot_diversity_vs_pass(summary, out / "diversity_vs_pass.png")
        written |= {"pass_at_k.png", "diversity_vs_pass.png"}
    for name in FIGURES:
        if name not in written:
            (out / name).unlink(missing_ok=True)
    return summary
