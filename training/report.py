"""``train-report``: runs' ``metrics.jsonl`` -> the time-breakdown table and reward curves.

The table is the paper's per-step wall-clock breakdown: for each run the mean seconds per step
of each verl phase (``gen``, ``reward``, ``adv``, ``update_actor`` with its ``teacher`` forward
part, ``step``), leaving the first ``skip_steps`` steps out (the first step pays one-time
costs), and the ratio of every run to the first run given (e.g. MOPD / SDPO).

Runs given the same name are seeds of one configuration: the table pools their steps, and the
curves show the mean over seeds with a band from the lowest to the highest seed. Reward curves
are also drawn as a moving average over ``SMOOTH`` steps (a step's reward is a mean of only
``prompts x rollouts`` verdicts). A run of a single step is reported as it is.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from mopd_eval.errors import InputError
from mopd_eval.jsonl import iter_jsonl, write_json_atomic, write_text_atomic

PHASE_ROWS = [
    ("timing_s/gen", "gen (sampling)"),
    ("timing_s/reward", "reward (verifier)"),
    ("timing_s/adv", "adv (advantages / teacher contexts)"),
    ("timing_s/update_actor", "update_actor"),
    ("timing_s/teacher", "  of which teacher forward"),
    ("timing_s/step", "step (total)"),
]
CONTEXT_ROWS = [
    ("teacher/prompt_length/mean", "teacher prompt tokens (mean, trained samples)"),
    ("teacher/context_fraction", "samples with a teacher context"),
    ("response_length/mean", "response tokens (mean)"),
    ("critic/rewards/mean", "reward (mean over steps)"),
]
NO_CONTEXT_ROW = "steps with no teacher context (update skipped)"
SMOOTH = 5


def load_run(run_dir: str | Path) -> tuple[dict, pd.DataFrame]:
    """``(config, metrics)`` of a run directory (``train_config.json`` optional)."""
    run_dir = Path(run_dir)
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        raise InputError("no metrics.jsonl (not a training run directory)", path=run_dir)
    rows = [row for _, row in iter_jsonl(path, allow_torn_tail=True)]
    if not rows:
        raise InputError("metrics.jsonl is empty", path=path)
    cfg_path = run_dir / "train_config.json"
    cfg = json.loads(cfg_path.read_text()) if cfg_path.is_file() else {}
    return cfg, pd.DataFrame(rows).sort_values("step").reset_index(drop=True)


def _pooled(runs: dict[str, pd.DataFrame | list[pd.DataFrame]]) -> dict[str, pd.DataFrame]:
    return {k: pd.concat(v, ignore_index=True) if isinstance(v, list) else v for k, v in runs.items()}


def time_breakdown(runs: dict[str, pd.DataFrame | list[pd.DataFrame]], skip_steps: int = 1) -> pd.DataFrame:
    """Mean seconds per step of each phase (rows) for each run (columns), plus ratio columns.

    Steps ``<= skip_steps`` are left out unless that would leave nothing. A phase a run never
    timed (e.g. ``teacher`` for GRPO) is NaN; a phase missing from some steps counts 0 there.
    The teacher prompt length is averaged over the samples that had a teacher context. With two or more runs, ``NAME / FIRST`` columns give
    each run's time relative to the first run.
    """
    n_runs = {k: len(v) if isinstance(v, list) else 1 for k, v in runs.items()}
    runs = _pooled(runs)
    names = list(runs)
    table = {}
    for name, df in runs.items():
        use = df[df["step"] > skip_steps] if (df["step"] > skip_steps).any() else df
        col = {}
        for key, label in PHASE_ROWS + CONTEXT_ROWS:
            if key not in df:
                col[label] = float("nan")
            elif key.startswith("timing_s/"):
                # A phase missing from a step took no time there (e.g. no teacher forward when an
                # update was skipped for lack of teacher contexts).
                col[label] = float(use[key].fillna(0.0).mean())
            elif key == "teacher/prompt_length/mean" and "teacher/context_fraction" in use:
                # per trained sample: weight each step by its number of samples with a context
                w = use["teacher/context_fraction"].fillna(0.0)
                col[label] = float((use[key].fillna(0.0) * w).sum() / w.sum()) if w.sum() > 0 else float("nan")
            elif key == "critic/rewards/mean":
                col[label] = float(df[key].mean())
            else:
                col[label] = float(use[key].mean())
        if "teacher/context_fraction" in df and "teacher/prompt_length/mean" in df:  # a distillation run
            col[NO_CONTEXT_ROW] = float((df["teacher/context_fraction"].fillna(0.0) == 0).sum())
        else:
            col[NO_CONTEXT_ROW] = float("nan")
        col["steps averaged"] = float(len(use))
        col["runs (seeds)"] = float(n_runs[name])
        table[name] = col
    out = pd.DataFrame(table)
    for name in names[1:]:
        # a ratio to 0 (e.g. the context fraction of a run without a teacher) is undefined, not inf
        out[f"{name} / {names[0]}"] = (out[name] / out[names[0]]).replace([float("inf"), -float("inf")], float("nan"))
        for count in ("steps averaged", "runs (seeds)", NO_CONTEXT_ROW):
            out.loc[count, f"{name} / {names[0]}"] = float("nan")
    return out


def _fmt(v: float, label: str) -> str:
    if pd.isna(v):
        return "-"
    if label in ("steps averaged", "runs (seeds)", NO_CONTEXT_ROW):
        return f"{v:.0f}"
    return f"{v:.3f}" if abs(v) < 100 else f"{v:.1f}"


def to_markdown(table: pd.DataFrame) -> str:
    cols = list(table.columns)
    lines = ["| mean per step (times in s) | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    for label, row in table.iterrows():
        lines.append(f"| {label} | " + " | ".join(_fmt(row[c], label) for c in cols) + " |")
    return "\n".join(lines) + "\n"


def seed_band(frames: list[pd.DataFrame], key: str, window: int = 1) -> pd.DataFrame:
    """Per step: mean, min and max over seeds of ``key`` (each seed's moving average first).

    Steps are aligned by number; a step some seeds lack is averaged over the others.
    """
    cols = []
    for i, df in enumerate(frames):
        if key not in df:
            continue
        series = df.set_index("step")[key].astype(float)
        cols.append(series.rolling(window, min_periods=1).mean().rename(i))
    if not cols:
        return pd.DataFrame(columns=["mean", "lo", "hi"])
    wide = pd.concat(cols, axis=1).sort_index()
    return pd.DataFrame({"mean": wide.mean(axis=1), "lo": wide.min(axis=1), "hi": wide.max(axis=1)})


def plot_curves(groups: dict[str, list[pd.DataFrame]], path: Path, smooth: int = SMOOTH) -> None:
    """Reward (raw and smoothed), teacher-context fraction and step time; bands span the seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    groups = {k: v if isinstance(v, list) else [v] for k, v in groups.items()}
    keys = [("critic/rewards/mean", f"reward (moving mean of {smooth} steps)", smooth),
            ("critic/rewards/mean", "reward per step", 1),
            ("teacher/context_fraction", "samples with a teacher context", 1),
            ("timing_s/step", "seconds per step", 1)]
    fig, axes = plt.subplots(1, len(keys), figsize=(4.0 * len(keys), 3.4))
    for ax, (key, title, window) in zip(axes, keys, strict=True):
        for i, (name, frames) in enumerate(groups.items()):
            if key == "teacher/context_fraction" and not any("teacher/prompt_length/mean" in f for f in frames):
                continue  # no teacher (GRPO): a flat 0 would read as "never had a context"
            band = seed_band(frames, key, window)
            if band.empty:
                continue
            color = f"C{i}"
            label = f"{name} ({len(frames)} seeds)" if len(frames) > 1 else name
            ax.plot(band.index, band["mean"], color=color, marker="o" if len(band) < 12 else None,
                    markersize=3, label=label)
            if len(frames) > 1:
                ax.fill_between(band.index, band["lo"], band["hi"], color=color, alpha=0.2, linewidth=0)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_train_report(
    run_dirs: Sequence[str | Path],
    out: str | Path,
    *,
    names: Sequence[str] | None = None,
    skip_steps: int = 1,
) -> list[Path]:
    """Write ``time_breakdown.md``/``.csv``, ``reward_curves.png`` and ``summary.json`` to ``out``.

    ``names`` label the runs (default: each run's ``algo``); runs with the same label are seeds of
    one configuration (module docstring).
    """
    out = Path(out)
    loaded = [load_run(d) for d in run_dirs]
    if names is not None and len(names) != len(loaded):
        raise InputError(f"{len(names)} names for {len(loaded)} runs", field="--names")
    labels = list(names) if names else [cfg.get("algo") or Path(d).name for (cfg, _), d in zip(loaded, run_dirs, strict=True)]
    groups: dict[str, list[pd.DataFrame]] = {}
    for label, (_, df) in zip(labels, loaded, strict=True):
        groups.setdefault(label, []).append(df)
    table = time_breakdown(groups, skip_steps)
    out.mkdir(parents=True, exist_ok=True)
    md = out / "time_breakdown.md"
    csv = out / "time_breakdown.csv"
    png = out / "reward_curves.png"
    summary = out / "summary.json"
    write_text_atomic(md, to_markdown(table))
    write_text_atomic(csv, table.to_csv())
    plot_curves(groups, png)
    write_json_atomic(summary, {
        "runs": [{"name": label, "dir": str(d)} for label, d in zip(labels, run_dirs, strict=True)],
        "skip_steps": skip_steps,
        "table": json.loads(table.to_json()),
        "per_run": [run_summary(df) | {"name": label, "dir": str(d)}
                    for label, (_, df), d in zip(labels, loaded, run_dirs, strict=True)],
        "configs": {str(d): cfg for (cfg, _), d in zip(loaded, run_dirs, strict=True)},
    })
    return [md, csv, png, summary]


def run_summary(df: pd.DataFrame, tail: int = SMOOTH) -> dict:
    """One run in numbers: steps, first/last rewards, steps without a teacher context."""
    rewards = df["critic/rewards/mean"].astype(float) if "critic/rewards/mean" in df else pd.Series(dtype=float)
    out = {
        "steps": int(df["step"].max()),
        "reward_first_steps": float(rewards.head(tail).mean()) if len(rewards) else None,
        "reward_last_steps": float(rewards.tail(tail).mean()) if len(rewards) else None,
        "reward_mean": float(rewards.mean()) if len(rewards) else None,
    }
    if "teacher/context_fraction" in df and "teacher/prompt_length/mean" in df:
        frac = df["teacher/context_fraction"].fillna(0.0)
        out["context_fraction_mean"] = float(frac.mean())
        out["steps_without_teacher_context"] = int((frac == 0).sum())
    return out
