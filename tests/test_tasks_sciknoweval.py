"""SciKnowEval: L3 multiple-choice filter, prompt, and the exact-letter <answer> rule."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mopd_eval.errors import InputError
from mopd_eval.tasks.sciknoweval import SciKnowEvalTask, last_answer_tag

FIXTURE = Path(__file__).parent / "fixtures" / "sciknoweval.jsonl"


@pytest.fixture(scope="module")
def problems():
    return SciKnowEvalTask().load(str(FIXTURE))


def test_only_level3_multiple_choice_is_kept_with_stable_row_ids(problems):
    # Row 3 is L1, row 4 open-ended: both dropped; ids keep the file row.
    assert [p.problem_id for p in problems] == ["Chemistry-0", "Chemistry-1", "Physics-2", "Physics-5"]
    assert [p.ground_truth for p in problems] == ["B", "D", "A", None]  # row 5's key is not a label
    assert [p.problem_id for p in SciKnowEvalTask(levels=("L1",)).load(str(FIXTURE))] == ["Biology-3"]


def test_prompt_lists_lettered_options_and_the_answer_format(problems):
    q = problems[0].question
    assert q.startswith("Which gas is produced when zinc reacts with dilute hydrochloric acid?\n\nA. Oxygen\nB. Hydrogen\n")
    assert q.endswith("for example <answer>A</answer>.")


@pytest.mark.parametrize("response, success, status", [
    ("Zinc displaces hydrogen. <answer>B</answer>", True, "correct"),
    ("<answer>A</answer> no wait, <answer> B </answer>", True, "correct"),
    ("<ANSWER>B</ANSWER>", True, "correct"),
    ("<answer>A</answer>", False, "wrong"),
    ("<answer>b</answer>", False, "wrong"),
    ("<answer>B. Hydrogen</answer>", False, "wrong"),
    ("The answer is B.", False, "no_answer"),
])
def test_exact_letter_in_the_last_answer_tag(problems, response, success, status):
    v = SciKnowEvalTask().verify([problems[0]], [response])[0]
    assert (v.success, v.status) == (success, status)
    assert (v.feedback is None) == success


def test_gold_key_outside_the_labels_is_invalid_for_that_problem_only(problems):
    v = SciKnowEvalTask().verify([problems[3], problems[2]], ["<answer>E</answer>", "<answer>A</answer>"])
    assert v[0].status == "invalid_test" and "field 'answerKey': answerKey 'E'" in v[0].feedback
    assert v[1].success


def test_last_answer_tag():
    assert last_answer_tag("x <answer>\nC\n</answer>") == "C"
    assert last_answer_tag("<answer></answer>") == ""
    assert last_answer_tag("none") is None


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_malformed_rows_are_invalid_problems_naming_file_line_and_field(tmp_path):
    rows = [json.loads(line) for line in FIXTURE.read_text().splitlines()]
    # the published case: five choice texts, four labels
    rows[1]["choices"] = {"text": ["a", "b", "c", "d", "e"], "label": ["A", "B", "C", "D"]}
    del rows[2]["question"]
    f = _write(tmp_path / "s.jsonl", rows)
    ps = SciKnowEvalTask().load(f)
    assert [p.problem_id for p in ps] == ["Chemistry-0", "Chemistry-1", "Physics-2", "Physics-5"]
    assert ps[1].meta["invalid"] == f"{f}:2: field 'choices': 5 choice texts but 4 labels"
    assert ps[1].question == rows[1]["question"]
    assert ps[2].meta["invalid"] == f"{f}:3: field 'question': missing"
    v = SciKnowEvalTask().verify(ps, ["<answer>B</answer>"] * 4)
    assert [x.status for x in v] == ["correct", "invalid_test", "invalid_test", "invalid_test"]
    assert v[1].feedback == ps[1].meta["invalid"]


def test_unreadable_level_or_type_is_invalid_but_other_levels_stay_filtered(tmp_path):
    rows = [json.loads(line) for line in FIXTURE.read_text().splitlines()]
    rows[0]["details"] = "L3"
    del rows[1]["type"]
    del rows[3]["choices"]  # level L1: dropped before its schema matters
    ps = SciKnowEvalTask().load(_write(tmp_path / "s.jsonl", rows))
    assert [p.problem_id for p in ps] == ["Chemistry-0", "Chemistry-1", "Physics-2", "Physics-5"]
    assert "field 'details': expected an object" in ps[0].meta["invalid"]
    assert "field 'type': missing" in ps[1].meta["invalid"]


def test_shards_get_distinct_row_ids(tmp_path):
    rows = [json.loads(line) for line in FIXTURE.read_text().splitlines()]
    a, b = _write(tmp_path / "a.jsonl", rows[:3]), _write(tmp_path / "b.jsonl", rows[3:])
    ids = [p.problem_id for p in SciKnowEvalTask().load(f"{a},{b}")]
    assert ids == [p.problem_id for p in SciKnowEvalTask().load(str(FIXTURE))]


def test_malformed_json_still_stops_the_load(tmp_path):
    f = tmp_path / "s.jsonl"
    f.write_text(FIXTURE.read_text().splitlines()[0] + "\n{not json\n")
    with pytest.raises(InputError, match=r"s\.jsonl:2: malformed JSON"):
        SciKnowEvalTask().load(str(f))
    with pytest.raises(InputError, match="--data"):
        SciKnowEvalTask().load(None)
