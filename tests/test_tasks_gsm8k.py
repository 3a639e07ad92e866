"""GSM8K: loads `#### N` golds (marker configurable), grades the last boxed integer."""

from __future__ import annotations

import json

from mopd_eval.tasks import get_task


def test_gsm8k_loads_golds_and_grades_boxed_integers(tmp_path):
    data = tmp_path / "gsm8k.jsonl"
    rows = [{"question": "2 + 2?", "answer": "Add them.\n#### 4"},
            {"question": "Big?", "answer": "Count.\n#### 1,234"},
            {"question": "Broken?", "answer": "no marker"}]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    task = get_task("gsm8k")
    p = task.load(str(data))
    assert [x.ground_truth for x in p[:2]] == ["4", "1234"]
    v = task.verify(p, ["so \\boxed{4}", "\\boxed{1,234}", "\\boxed{1}"])
    assert [x.success for x in v] == [True, True, False]
    assert v[2].status == "invalid_test"  # the broken row is an invalid problem, not a stop
    other = get_task("gsm8k", answer_marker="Answer:")
    data.write_text(json.dumps({"question": "q", "answer": "Answer: 7"}) + "\n")
    assert other.load(str(data))[0].ground_truth == "7"
