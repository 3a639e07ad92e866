"""``train-report``: seeds pooled under one name, bands, one-step runs, steps without a teacher context."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from training.metrics import context_summary, no_context_message
from training.report import NO_CONTEXT_ROW, seed_band, write_train_report


def _run(path, rewards, *, distill=True, fracs=None):
    path.mkdir(parents=True)
    rows = []
    for s, r in enumerate(rewards, start=1):
        row = {"step": s, "timing_s/gen": 1.0, "timing_s/step": 2.0, "critic/rewards/mean": r,
               "teacher/context_fraction": (fracs[s - 1] if fracs else 0.5) if distill else 0.0}
        if distill:
            row["teacher/prompt_length/mean"] = 50.0 if row["teacher/context_fraction"] else 0.0
        rows.append(row)
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_runs_with_one_name_are_seeds_of_one_curve(tmp_path):
    a0 = _run(tmp_path / "a0", [0.0, 0.2, 0.4])
    a1 = _run(tmp_path / "a1", [0.2, 0.4, 0.6])
    b0 = _run(tmp_path / "b0", [0.1, 0.1, 0.1], distill=False)
    md, _, png, summary = write_train_report([a0, a1, b0], tmp_path / "rep", names=["MOPD", "MOPD", "GRPO"])
    data = json.loads(summary.read_text())
    assert data["table"]["MOPD"]["runs (seeds)"] == 2 and data["table"]["GRPO"]["runs (seeds)"] == 1
    assert data["table"]["MOPD"]["reward (mean over steps)"] == pytest.approx(0.3)
    assert data["table"]["MOPD"]["steps averaged"] == 4  # two seeds x steps 2-3
    assert [r["name"] for r in data["per_run"]] == ["MOPD", "MOPD", "GRPO"]
    assert data["per_run"][1]["reward_last_steps"] == pytest.approx(0.4)
    assert "GRPO / MOPD" in md.read_text() and png.stat().st_size > 1000


def test_seed_band_spans_the_seeds_and_smooths():
    frames = [pd.DataFrame({"step": [1, 2, 3], "r": [0.0, 1.0, 0.0]}),
              pd.DataFrame({"step": [1, 2, 3], "r": [1.0, 1.0, 1.0]})]
    band = seed_band(frames, "r")
    assert band["lo"].tolist() == [0.0, 1.0, 0.0] and band["hi"].tolist() == [1.0, 1.0, 1.0]
    assert band["mean"].tolist() == [0.5, 1.0, 0.5]
    smooth = seed_band(frames, "r", window=2)
    assert smooth["lo"].tolist() == [0.0, 0.5, 0.5]


def test_one_step_runs_and_steps_without_context_are_reported(tmp_path):
    one = _run(tmp_path / "one", [0.25], fracs=[0.0])
    md, _, png, summary = write_train_report([one], tmp_path / "rep")
    data = json.loads(summary.read_text())
    assert data["table"]["one"][NO_CONTEXT_ROW] == 1 and data["table"]["one"]["steps averaged"] == 1
    assert data["per_run"][0]["steps_without_teacher_context"] == 1
    assert NO_CONTEXT_ROW in md.read_text() and png.is_file()
    text = context_summary(one / "metrics.jsonl")
    assert "0.0% of samples had a teacher context over 1 steps; 1 step had none" in text
    assert "update skipped" in no_context_message("2s1f") and "'2s1f'" in no_context_message("2s1f")


def test_heldout_table_pairs_problems_and_pools_seeds(tmp_path):
    from mopd_eval.errors import InputError
    from training.heldout import heldout_table, load_rates, main

    base = {"p1": 0.0, "p2": 0.5, "p3": 1.0, "p4": 0.5}
    better = {k: min(1.0, v + 0.25) for k, v in base.items()}
    rows = heldout_table([("base", base), ("A", better), ("A", base)], "base", n_boot=2000)
    a = next(r for r in rows if r["name"] == "A")
    assert a["seeds"] == 2 and a["mean"] == pytest.approx((0.5 + 0.6875) / 2)
    assert a["diff_vs_base"] == pytest.approx(0.09375)
    # paired: every resample moves A up by the same per-problem gains, so the CI stays above 0
    assert 0 < a["diff_ci95"][0] <= a["diff_vs_base"] <= a["diff_ci95"][1]
    with pytest.raises(InputError, match="other problems"):
        heldout_table([("base", base), ("B", {"p1": 1.0})], "base")
    for name, rates in (("base", base), ("A", better)):
        d = tmp_path / name
        d.mkdir()
        per = {k: {"successes": int(4 * v), "samples": 4} for k, v in rates.items()}
        (d / "results.json").write_text(json.dumps({"per_problem": per}))
    assert load_rates(tmp_path / "A") == better
    assert main([f"base={tmp_path / 'base'}", f"A={tmp_path / 'A'}", "--base", "base", "--out", str(tmp_path)]) == 0
    assert "| A | 1 | 4 |" in (tmp_path / "heldout.md").read_text()
