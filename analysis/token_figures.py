"""PNG summaries of the token-level analysis (``analysis/tokens.py``'s result object).

* ``divergence_profile.png``: mean A_t by token position relative to the divergence point, one
  panel per condition, failures and successes with their bootstrap CIs over prompts;
* ``token_summary.png``: per condition, A_t at divergence and in the answer for each class, and
  the success-vs-failure AUC of the token-level scores next to Table 7's sequence-mean AUC.

Colours of conditions come from ``analysis.figures.condition_colors``, as in Figure 4.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from analysis.figures import condition_colors, save_png
from analysis.scores import BASE_CONDITION

FAIL, SUCC = "#D55E00", "#009E73"
STYLE = {"font.size": 9, "axes.titlesize": 10, "axes.spines.top": False, "axes.spines.right": False,
         "axes.grid": True, "grid.alpha": 0.3, "grid.linewidth": 0.6}


def _arrays(stats: list[dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    get = lambda k: np.array([np.nan if s[k] is None else s[k] for s in stats], dtype=float)  # noqa: E731
    return get("mean"), get("ci_low"), get("ci_high")


def divergence_profile(result: dict) -> Figure:
    """A_t around the divergence token, per condition (base, identically 0, left out)."""
    conds = [c for c in result["conditions"] if c != BASE_CONDITION] or result["conditions"]
    cols = min(4, len(conds))
    rows = math.ceil(len(conds) / cols)
    fig = Figure(figsize=(3.3 * cols, 2.6 * rows + 0.8), layout="constrained")
    axes = fig.subplots(rows, cols, sharex=True, sharey=True, squeeze=False).ravel()
    x = np.array(result["profile_positions"])
    for ax, c in zip(axes, conds, strict=False):
        for cls, color, name in (("fail", FAIL, "failures"), ("succ", SUCC, "successes")):
            mean, lo, hi = _arrays(result["profile"][c][cls])
            ax.plot(x, mean, color=color, lw=1.4, marker="o", ms=2.5, label=name)
            ax.fill_between(x, lo, hi, color=color, alpha=0.18, lw=0)
        ax.axhline(0, color="0.4", lw=0.7)
        ax.axvline(0, color="0.2", lw=0.7, ls=":")
        n = result["summary"][c]["div_at_fail"]["n_prompts"]
        ax.set_title(f"{result['labels'][c]} ({n} prompts)")
    for ax in axes[len(conds):]:
        ax.set_visible(False)
    for ax in axes[(rows - 1) * cols:]:
        ax.set_xlabel("token position − divergence token")
    for ax in axes[::cols]:
        ax.set_ylabel("mean A_t (nats)")
    axes[0].legend(loc="best", fontsize=8, frameon=False)
    fig.suptitle("A_t = log p(y_t | peers) − log p(y_t | question) around the first token where a target "
                 "parts from a rollout of the other class\n(mean over prompts, 95% bootstrap CI; "
                 f"sample set {result['sample_set']})", fontsize=10)
    return fig


def _dots(ax, result: dict, metrics: list[tuple[str, str, str]], conds: list[str], *, ref: float,
          legend: str) -> None:
    y = np.arange(len(conds))
    step = 0.5 / max(len(metrics), 1)
    for k, (m, color, name) in enumerate(metrics):
        mean, lo, hi = _arrays([result["summary"][c][m] for c in conds])
        yy = y - 0.25 + step * (k + 0.5)
        ax.errorbar(mean, yy, xerr=[mean - lo, hi - mean], fmt="o", ms=3.5, color=color, lw=1, capsize=2, label=name)
    ax.axvline(ref, color="0.3", lw=0.7, ls=":")
    ax.set_yticks(y, [result["labels"][c] for c in conds])
    ax.invert_yaxis()
    ax.grid(axis="y", visible=False)
    for edge in y[:-1] + 0.5:
        ax.axhline(edge, color="0.9", lw=0.6)
    ax.legend(fontsize=7, frameon=True, framealpha=0.9, loc=legend)


def token_summary(result: dict) -> Figure:
    """Three panels: A_t at divergence, A_t in the answer, and the separation AUCs."""
    conds = result["conditions"]
    colors = condition_colors(conds)
    fig = Figure(figsize=(13, 0.42 * len(conds) + 1.8), layout="constrained")
    a, b, c = fig.subplots(1, 3, sharey=True)
    _dots(a, result, [("div_at_fail", FAIL, "failures"), ("div_at_succ", SUCC, "successes")], conds, ref=0, legend="lower left")
    a.set_title(f"A_t at divergence (token + next {result['window'] - 1})")
    a.set_xlabel("mean A_t (nats)")
    _dots(b, result, [("ans_in_fail", FAIL, "failures"), ("ans_in_succ", SUCC, "successes")], conds, ref=0, legend="lower left")
    b.set_title("A_t inside the final answer")
    b.set_xlabel("mean A_t (nats)")
    _dots(c, result, [("auc_seq_mean", "0.35", "mean log-prob (Table 7)"),
                      ("auc_adv_answer", colors.get("2s1f", "#009E73"), "Σ A_t over answer"),
                      ("auc_adv_suffix", "#0072B2", "Σ A_t over divergent suffix")], conds, ref=0.5, legend="lower right")
    c.set_title("success-vs-failure AUC per prompt")
    c.set_xlabel("AUC (0.5 = chance)")
    fig.suptitle("Token-level teacher signal per condition (mean over prompts, 95% bootstrap CI)", fontsize=10)
    return fig


def write_figures(result: dict, out: Path) -> list[Path]:
    """Write both PNGs into ``out``; return their paths."""
    import matplotlib

    paths = []
    with matplotlib.rc_context(STYLE):
        for name, make in (("divergence_profile.png", divergence_profile), ("token_summary.png", token_summary)):
            fig = make(result)
            save_png(fig, out / name, dpi=150)
            paths.append(out / name)
    return paths
