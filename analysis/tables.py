"""Table 7 (teacher-signal quality by peer context) as Markdown, CSV and LaTeX (booktabs).

All three read the ``metrics.json`` object of ``analysis.aggregate.compute_signal_metrics``.
Rows follow the paper's order and labels (controls after a rule); cells are ``mean ± h`` with
``h`` half the width of the 95% percentile-bootstrap CI (the CSV keeps the exact bounds, as the
percentile CI need not be symmetric); the best mean per column is bold (lowest for Brier);
``*`` marks a mean that differs from the ``base`` condition (paired bootstrap p < 0.05,
uncorrected for multiple comparisons).
"""

from __future__ import annotations

import io

import pandas as pd

from analysis.metrics import LOWER_IS_BETTER, METRICS
from analysis.scores import CONTROL_CONDITIONS

SIGNIFICANCE = 0.05
_HEADERS_MD = {
    "spearman": "Spearman ρ",
    "kendall": "Kendall τ_b",
    "pairwise_accuracy": "Pair. acc.",
    "success_auc": "AUC",
    "point_biserial": "Pt-biserial",
    "brier_sigmoid": "Brier ↓",
}
_HEADERS_TEX = {
    "spearman": r"Spearman $\rho$",
    "kendall": r"Kendall $\tau_b$",
    "pairwise_accuracy": r"Pair.\ acc.",
    "success_auc": "AUC",
    "point_biserial": "Pt-biserial",
    "brier_sigmoid": r"Brier $\downarrow$",
}


def metric_title(metric: str, metrics: dict, *, tex: bool = False) -> str:
    """Column header of a metric; Kendall reads gamma under ``compat="paper"``."""
    if metric == "kendall" and metrics.get("compat") == "paper":
        return r"Kendall $\gamma$" if tex else "Kendall γ"
    return (_HEADERS_TEX if tex else _HEADERS_MD)[metric]


def _base_name(metrics: dict) -> str | None:
    return "base" if "base" in metrics["conditions"] else None


def _significant(metrics: dict, cond: str, metric: str) -> bool:
    base = _base_name(metrics)
    if base is None or cond == base:
        return False
    p = metrics["paired"].get(f"{cond}-vs-{base}", {}).get(metric, {}).get("p_value")
    return p is not None and p < SIGNIFICANCE


def _best(metrics: dict, metric: str) -> str | None:
    means = {
        c: v[metric]["mean"]
        for c, v in metrics["conditions"].items()
        if v[metric]["mean"] is not None
    }
    if len(means) < 2:
        return None
    pick = min if metric in LOWER_IS_BETTER else max
    return pick(means, key=means.get)


def _n_prompts(metrics: dict, cond: str) -> int:
    return max(v["n_prompts"] for v in metrics["conditions"][cond].values())


def _cell(stat: dict, digits: int) -> tuple[str, str] | None:
    """(mean, half-width) strings, half-width empty when there is no CI; None when undefined."""
    mean = stat["mean"]
    if mean is None:
        return None
    lo, hi = stat["ci_low"], stat["ci_high"]
    half = "" if lo is None or hi is None else f"{(hi - lo) / 2:.{digits}f}"
    return f"{mean:.{digits}f}", half


def _notes(metrics: dict) -> str:
    n_boot = metrics["n_bootstrap"]
    ci = (
        f"± half-width of the {metrics['ci_level']:.0%} percentile-bootstrap CI over prompts "
        f"({n_boot} draws, seed {metrics['seed']}; exact bounds in table7.csv)"
        if n_boot
        else "no bootstrap (--bootstrap 0)"
    )
    sample = {
        "both_present_effective": "effective rows of prompts whose group has a success and a failure",
        "effective": "effective rows",
        "all": "all rows",
    }[metrics["sample_set"]]
    return (
        f"Mean over prompts {ci}. Sample set `{metrics['sample_set']}` ({sample}); "
        f"metrics `--compat {metrics['compat']}`. n = prompts with at least two rows; a metric "
        f"skips prompts where it is undefined (counts in table7.csv). Bold: best per column. "
        f"* differs from Question only, paired bootstrap p < {SIGNIFICANCE} (uncorrected)."
    )


def table7_markdown(metrics: dict, *, digits: int = 3) -> str:
    """Table 7 as a GitHub-flavoured Markdown table with a note on how to read it."""
    cols = ["Context", "n", *(metric_title(m, metrics) for m in METRICS)]
    lines = [
        "| " + " | ".join(cols) + " |",
        "|" + "|".join([":---", "---:"] + [":---:"] * len(METRICS)) + "|",
    ]
    best = {m: _best(metrics, m) for m in METRICS}
    for cond in metrics["condition_order"]:
        cells = [metrics["labels"][cond], str(_n_prompts(metrics, cond))]
        for m in METRICS:
            c = _cell(metrics["conditions"][cond][m], digits)
            if c is None:
                cells.append("–")
                continue
            mean, half = c
            text = f"**{mean}**" if best[m] == cond else mean
            if half:
                text += f" ± {half}"
            if _significant(metrics, cond, m):
                text += "*"
            cells.append(text)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\n" + _notes(metrics) + "\n"


def table7_frame(metrics: dict) -> pd.DataFrame:
    """Long form: one row per (condition, metric) with the CI bounds and the paired test vs base."""
    base = _base_name(metrics)
    recs = []
    for cond in metrics["condition_order"]:
        for m in METRICS:
            stat = metrics["conditions"][cond][m]
            pair = (
                metrics["paired"].get(f"{cond}-vs-{base}", {}).get(m, {})
                if base and cond != base
                else {}
            )
            recs.append(
                {
                    "condition": cond,
                    "label": metrics["labels"][cond],
                    "metric": m,
                    "mean": stat["mean"],
                    "ci_low": stat["ci_low"],
                    "ci_high": stat["ci_high"],
                    "n_prompts": stat["n_prompts"],
                    "diff_vs_base": pair.get("diff"),
                    "diff_ci_low": pair.get("ci_low"),
                    "diff_ci_high": pair.get("ci_high"),
                    "p_value_vs_base": pair.get("p_value"),
                    "n_prompts_paired": pair.get("n_prompts"),
                }
            )
    frame = pd.DataFrame.from_records(recs)
    frame["n_prompts_paired"] = frame["n_prompts_paired"].astype("Int64")
    return frame


def table7_csv(metrics: dict) -> str:
    """Table 7 in long CSV form (``table7_frame``); undefined values are empty cells."""
    buf = io.StringIO()
    table7_frame(metrics).to_csv(buf, index=False, float_format="%.6g")
    return buf.getvalue()


_TEX_ESCAPES = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def _tex(text: str) -> str:
    return "".join(_TEX_ESCAPES.get(ch, ch) for ch in text)


def table7_latex(metrics: dict, *, digits: int = 3, label: str = "tab:signal-quality") -> str:
    """Table 7 as a LaTeX ``table`` with a booktabs ``tabular`` (needs ``\\usepackage{booktabs}``).

    Written by hand rather than with ``DataFrame.to_latex``/``Styler`` so that it needs no jinja2
    and can bold, star and split paper rows from controls.
    """
    best = {m: _best(metrics, m) for m in METRICS}
    n_boot = metrics["n_bootstrap"]
    ci = (
        rf"$\pm$ half-width of the {round(metrics['ci_level'] * 100)}\% percentile-bootstrap CI over prompts "
        rf"({n_boot} draws, seed {metrics['seed']})"
        if n_boot
        else "(no bootstrap)"
    )
    caption = (
        rf"Teacher-signal quality by peer context. Mean over prompts {ci}; $n$ prompts "
        rf"(sample set \texttt{{{_tex(metrics['sample_set'])}}}, \texttt{{--compat {metrics['compat']}}}). "
        rf"Bold: best per column. $^*$: differs from Question only (paired bootstrap $p<{SIGNIFICANCE}$, uncorrected)."
    )
    out = [
        r"\begin{table}[t]",
        r"\centering",
        r"\small",
        rf"\caption{{{caption}}}",
        rf"\label{{{label}}}",
        r"\begin{tabular}{l r " + " ".join("c" for _ in METRICS) + "}",
        r"\toprule",
        " & ".join(["Context", "$n$", *(metric_title(m, metrics, tex=True) for m in METRICS)])
        + r" \\",
        r"\midrule",
    ]
    ruled = False
    for cond in metrics["condition_order"]:
        if cond in CONTROL_CONDITIONS and not ruled:
            out.append(r"\midrule")
            ruled = True
        cells = [_tex(metrics["labels"][cond]), str(_n_prompts(metrics, cond))]
        for m in METRICS:
            c = _cell(metrics["conditions"][cond][m], digits)
            if c is None:
                cells.append("--")
                continue
            mean, half = c
            mean_tex = rf"\mathbf{{{mean}}}" if best[m] == cond else mean
            star = "^{*}" if _significant(metrics, cond, m) else ""
            cells.append(f"${mean_tex}{star} \\pm {half}$" if half else f"${mean_tex}{star}$")
        out.append(" & ".join(cells) + r" \\")
    out += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(out) + "\n"
