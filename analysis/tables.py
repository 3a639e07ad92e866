"""Table 7 (teacher-signal quality by peer context) as Markdown, CSV and LaTeX (booktabs).

All three read the ``metrics.json`` object of ``analysis.aggregate.compute_signal_metrics``;
columns, their headers and directions come from the metric registry
(``analysis/metric_specs.py``), row labels and the control rule from the conditions
(``Condition.label``, ``Condition.control``). Rows follow the paper's order (controls after a
rule); cells are ``mean ± h`` with ``h`` half the width of the 95% percentile-bootstrap CI (the
CSV keeps the exact bounds, as the percentile CI need not be symmetric).

Small samples are shown for what they are:

* ``n`` is the number of prompts of the row (those with at least two rows); a cell that averages
  fewer prompts (the metric is undefined on some) shows its own count, ``[n=12]``;
* ``*`` marks a mean that differs from the ``base`` condition (paired bootstrap p < 0.05,
  uncorrected) only when at least ``MIN_PROMPTS_FOR_SIGNIFICANCE`` prompts are paired;
* the best mean per column is bold (lowest for Brier), but never a cell of a metric that needs
  two classes (Brier) whose prompts are all one-class: such a cell is greyed (italic with ``†``
  in Markdown, ``\textcolor{gray}`` in LaTeX).
"""

from __future__ import annotations

import io

import pandas as pd

from analysis.aggregate import one_class_only, row_prompts
from analysis.metric_specs import METRICS, SPECS

SIGNIFICANCE = 0.05
# A bootstrap over fewer prompts has too few distinct resamples to support a p-value.
MIN_PROMPTS_FOR_SIGNIFICANCE = 5


def metric_title(metric: str, metrics: dict, *, tex: bool = False) -> str:
    """Column header of a metric (Kendall reads gamma under ``compat="paper"``)."""
    return SPECS[metric].label("latex" if tex else "markdown", metrics.get("compat", "default"))


def _base_name(metrics: dict) -> str | None:
    return "base" if "base" in metrics["conditions"] else None


def _significant(metrics: dict, cond: str, metric: str) -> bool:
    base = _base_name(metrics)
    if base is None or cond == base:
        return False
    pair = metrics["paired"].get(f"{cond}-vs-{base}", {}).get(metric, {})
    p = pair.get("p_value")
    return (
        p is not None
        and p < SIGNIFICANCE
        and pair.get("n_prompts", 0) >= MIN_PROMPTS_FOR_SIGNIFICANCE
    )


def greyed(metrics: dict, cond: str, metric: str, bucket: str | None = None) -> bool:
    """A cell of a two-class metric (Brier) over one-class prompts only."""
    return SPECS[metric].needs_two_classes and one_class_only(metrics, cond, bucket)


def _best(metrics: dict, metric: str) -> str | None:
    means = {
        c: v[metric]["mean"]
        for c, v in metrics["conditions"].items()
        if v[metric]["mean"] is not None and not greyed(metrics, c, metric)
    }
    if len(means) < 2:
        return None
    pick = min if SPECS[metric].lower_is_better else max
    return pick(means, key=means.get)


def _cell_n(metrics: dict, cond: str, metric: str) -> str:
    """The cell's prompt count when it differs from the row's, else empty."""
    n = metrics["conditions"][cond][metric]["n_prompts"]
    return "" if n == row_prompts(metrics, cond) else str(n)


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
    notes = [
        f"Mean over prompts {ci}. Sample set `{metrics['sample_set']}` ({sample}); "
        f"metrics `--compat {metrics['compat']}`.",
        "n = prompts with at least two rows; [n=k]: the cell averages k prompts (the metric is "
        "undefined on the others).",
        "Bold: best per column.",
    ]
    if _base_name(metrics):
        notes.append(
            f"* differs from {metrics['labels']['base']}, paired bootstrap p < {SIGNIFICANCE} "
            f"(uncorrected), marked only with at least {MIN_PROMPTS_FOR_SIGNIFICANCE} paired prompts."
        )
    if any(greyed(metrics, c, m) for c in metrics["condition_order"] for m in METRICS):
        notes.append(
            "_†_ (greyed): every prompt of the row has one class only (all successes or all "
            "failures); Brier there rewards pushing every score one way, so it is never bold "
            "nor starred."
        )
    return " ".join(notes)


def _md_cell(metrics: dict, cond: str, metric: str, best: str | None, digits: int) -> str:
    c = _cell(metrics["conditions"][cond][metric], digits)
    if c is None:
        return "–"
    mean, half = c
    text = f"**{mean}**" if best == cond else mean
    if half:
        text += f" ± {half}"
    # A greyed cell is not compared: a one-class Brier differs from base for the wrong reason.
    if greyed(metrics, cond, metric):
        text = f"_{text}_†"
    elif _significant(metrics, cond, metric):
        text += "*"
    n = _cell_n(metrics, cond, metric)
    return f"{text} [n={n}]" if n else text


def table7_markdown(metrics: dict, *, digits: int = 3) -> str:
    """Table 7 as a GitHub-flavoured Markdown table with a note on how to read it."""
    cols = ["Context", "n", *(metric_title(m, metrics) for m in METRICS)]
    lines = [
        "| " + " | ".join(cols) + " |",
        "|" + "|".join([":---", "---:"] + [":---:"] * len(METRICS)) + "|",
    ]
    best = {m: _best(metrics, m) for m in METRICS}
    for cond in metrics["condition_order"]:
        cells = [metrics["labels"][cond], str(row_prompts(metrics, cond))]
        cells += [_md_cell(metrics, cond, m, best[m], digits) for m in METRICS]
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


def _tex_cell(metrics: dict, cond: str, metric: str, best: str | None, digits: int) -> str:
    c = _cell(metrics["conditions"][cond][metric], digits)
    if c is None:
        return "--"
    mean, half = c
    mean_tex = rf"\mathbf{{{mean}}}" if best == cond else mean
    grey = greyed(metrics, cond, metric)
    star = "^{*}" if not grey and _significant(metrics, cond, metric) else ""
    dagger = "^{\\dagger}" if grey else ""
    text = f"${mean_tex}{star} \\pm {half}{dagger}$" if half else f"${mean_tex}{star}{dagger}$"
    if grey:
        text = rf"\textcolor{{gray}}{{{text}}}"
    n = _cell_n(metrics, cond, metric)
    return rf"{text}\,{{\scriptsize[$n$={n}]}}" if n else text


def _tex_caption(metrics: dict) -> str:
    n_boot = metrics["n_bootstrap"]
    ci = (
        rf"$\pm$ half-width of the {round(metrics['ci_level'] * 100)}\% percentile-bootstrap CI "
        rf"over prompts ({n_boot} draws, seed {metrics['seed']})"
        if n_boot
        else "(no bootstrap)"
    )
    caption = (
        rf"Teacher-signal quality by peer context. Mean over prompts {ci}; $n$ prompts with at "
        rf"least two rows, [$n$=$k$] where a cell averages fewer (sample set "
        rf"\texttt{{{_tex(metrics['sample_set'])}}}, \texttt{{--compat {metrics['compat']}}}). "
        r"Bold: best per column."
    )
    if _base_name(metrics):
        caption += (
            rf" $^*$: differs from {_tex(metrics['labels']['base'])} (paired bootstrap "
            rf"$p<{SIGNIFICANCE}$, uncorrected; only with at least "
            rf"{MIN_PROMPTS_FOR_SIGNIFICANCE} paired prompts)."
        )
    if any(greyed(metrics, c, m) for c in metrics["condition_order"] for m in METRICS):
        caption += (
            r" $^\dagger$ (grey): every prompt of the row has one class only; never bold nor "
            r"starred."
        )
    return caption


def table7_latex(metrics: dict, *, digits: int = 3, label: str = "tab:signal-quality") -> str:
    """Table 7 as a LaTeX ``table`` with a booktabs ``tabular`` (needs
    ``\\usepackage{booktabs,xcolor}``).

    Written by hand rather than with ``DataFrame.to_latex``/``Styler`` so that it needs no jinja2
    and can bold, star, grey and split paper rows from controls.
    """
    best = {m: _best(metrics, m) for m in METRICS}
    controls = set(metrics.get("controls", ()))
    out = [
        r"\begin{table}[t]",
        r"\centering",
        r"\small",
        rf"\caption{{{_tex_caption(metrics)}}}",
        rf"\label{{{label}}}",
        r"\begin{tabular}{l r " + " ".join("c" for _ in METRICS) + "}",
        r"\toprule",
        " & ".join(["Context", "$n$", *(metric_title(m, metrics, tex=True) for m in METRICS)])
        + r" \\",
        r"\midrule",
    ]
    ruled = False
    for cond in metrics["condition_order"]:
        if cond in controls and not ruled:
            out.append(r"\midrule")
            ruled = True
        cells = [_tex(metrics["labels"][cond]), str(row_prompts(metrics, cond))]
        cells += [_tex_cell(metrics, cond, m, best[m], digits) for m in METRICS]
        out.append(" & ".join(cells) + r" \\")
    out += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(out) + "\n"
