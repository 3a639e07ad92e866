"""Write the signal-metrics outputs of one run into a directory, each file atomically."""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd

from analysis.figures import figure4, figure4_buckets, save_png
from analysis.metric_specs import METRICS
from analysis.tables import table7_csv, table7_latex, table7_markdown
from mopd_eval.jsonl import write_json_atomic, write_text_atomic

OUTPUT_FILES: tuple[str, ...] = (
    "metrics.json",
    "per_prompt.csv",
    "table7.md",
    "table7.csv",
    "table7.tex",
    "figure4.png",
    "figure4_buckets.png",
)
PER_PROMPT_COLUMNS: tuple[str, ...] = (
    "condition",
    "problem_id",
    "bucket",
    "group_size",
    "group_successes",
    "n_rows",
    "n_successes",
    *METRICS,
)


def per_prompt_csv(metrics: dict) -> str:
    """The per-prompt metric rows (``metrics["per_prompt"]``) as CSV; undefined = empty cell."""
    frame = pd.DataFrame.from_records(
        metrics.get("per_prompt", []), columns=list(PER_PROMPT_COLUMNS)
    )
    buf = io.StringIO()
    frame.to_csv(buf, index=False, float_format="%.6g")
    return buf.getvalue()


def write_signal_reports(metrics: dict, out_dir: str | Path) -> dict[str, Path]:
    """Write ``OUTPUT_FILES`` into ``out_dir`` (created if missing) and return their paths.

    ``metrics.json`` holds ``metrics`` without its ``per_prompt`` list, which goes to
    ``per_prompt.csv``. Each file is written through a temp file and a rename, so a reader never
    sees half a file.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {name: out / name for name in OUTPUT_FILES}
    write_text_atomic(paths["per_prompt.csv"], per_prompt_csv(metrics))
    write_text_atomic(paths["table7.md"], table7_markdown(metrics))
    write_text_atomic(paths["table7.csv"], table7_csv(metrics))
    write_text_atomic(paths["table7.tex"], table7_latex(metrics))
    save_png(figure4(metrics), paths["figure4.png"])
    save_png(figure4_buckets(metrics), paths["figure4_buckets.png"])
    # Last, so a metrics.json on disk means the whole set was written.
    write_json_atomic(
        paths["metrics.json"], {k: v for k, v in metrics.items() if k != "per_prompt"}
    )
    return paths
