"""`mopd-eval report`: the index shows each report's headline numbers, read from its own files."""

from __future__ import annotations

import json
import random
from pathlib import Path

from mopd_eval.cli import main
from mopd_eval.jsonl import write_jsonl_atomic


def test_index_lists_signal_and_diversity_headlines(tmp_path):
    rng = random.Random(0)
    rows = []
    for p in range(6):
        for r in range(4):
            success = r < 2
            for cond in ("base", "2s1f"):
                # 2s1f separates successes from failures, base does not
                score = (1.0 if success else -1.0) + rng.gauss(0, 0.1) if cond == "2s1f" else rng.gauss(0, 1)
                rows.append({"condition": cond, "problem_id": p, "rollout_id": r, "teacher_score": score,
                             "reward": float(success), "success": success, "effective": True})
    write_jsonl_atomic(tmp_path / "scores.jsonl", rows)
    reports = tmp_path / "reports"
    assert main(["signal-metrics", "--scores", str(tmp_path / "scores.jsonl"), "--out", str(reports / "signal"),
                 "--bootstrap", "50"]) == 0
    samples = [{"problem_id": "q", "response": t} for t in ("a b c", "a b d")]
    write_jsonl_atomic(tmp_path / "a.jsonl", samples)
    assert main(["diversity", "--run", f"A={tmp_path / 'a.jsonl'}", "--task", "text", "--out", str(reports / "diversity")]) == 0
    assert main(["report", "--reports", str(reports)]) == 0
    text = (reports / "README.md").read_text()
    metrics = json.loads((reports / "signal" / "metrics.json").read_text())
    auc = metrics["conditions"]["2s1f"]["success_auc"]["mean"]
    assert auc == 1.0 and "| 2 Suc.+1 Failure |" in text and f"| {auc:.3f} |" in text
    summary = json.loads((reports / "diversity" / "summary.json").read_text())
    # "a b c" / "a b d": stream of 6 tokens, 4 distinct unigrams
    assert summary["runs"]["A"]["distinct1"] == 4 / 6
    assert "| A | 0.667 |" in text
    assert "## Benchmarks\n\nNot generated yet." in text
    assert "Regenerate: `mopd-eval signal`" in text
    # A bench report as `mopd-eval bench` writes it (the committed arith run).
    committed = Path(__file__).parents[1] / "reports" / "bench" / "arith" / "results.json"
    (reports / "bench" / "arith").mkdir(parents=True)
    (reports / "bench" / "arith" / "results.json").write_text(committed.read_text())
    assert main(["report", "--reports", str(reports)]) == 0
    r = json.loads(committed.read_text())["metrics"]
    row = f"| {r['mean@8']:.3f} | {r['pass@k']['1']:.3f} | {r['pass@k']['8']:.3f} |"
    assert row in (reports / "README.md").read_text()


def test_report_never_overwrites_a_foreign_readme_nor_creates_folders(tmp_path, capsys):
    from mopd_eval.cli import main

    study = tmp_path / "signal"
    study.mkdir()
    (study / "README.md").write_text("# Teacher-signal study\n")
    assert main(["report", "--reports", str(study)]) == 2
    assert "not an index" in capsys.readouterr().err
    assert (study / "README.md").read_text() == "# Teacher-signal study\n"
    assert main(["report", "--reports", str(tmp_path / "nope")]) == 2
    assert not (tmp_path / "nope").exists()
    fresh = tmp_path / "reports"
    fresh.mkdir()
    assert main(["report", "--reports", str(fresh)]) == 0
    assert main(["report", "--reports", str(fresh)]) == 0  # its own index is rewritten
