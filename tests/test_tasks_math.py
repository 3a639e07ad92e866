"""Math tasks: file formats, boxed extraction, and agreement with math-verify on answer pairs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from math_verify import parse, verify

from mopd_eval.errors import InputError
from mopd_eval.tasks import get_task
from mopd_eval.verifiers.math_answer import MathEquivalence, verify_answer

FIX = Path(__file__).parent / "fixtures"

# (gold, answer, equivalent?) written for this test: integers with leading zeros and separators,
# fractions, LaTeX forms, intervals, sets, expressions.
PAIRS = [
    ("7", "007", True), ("7", "07.0", True), ("42", "43", False), ("1000", "1,000", True),
    ("-3", "-3.0", True), ("12", "12.5", False),
    ("\\frac{1}{2}", "0.5", True), ("\\frac{1}{2}", "\\frac12", True), ("\\frac{1}{2}", "1/2", True),
    ("\\dfrac{9}{2}", "4.5", True), ("\\frac{9}{2}", "\\frac{18}{4}", True), ("\\frac{9}{2}", "\\frac{9}{4}", False),
    ("0.1", "\\frac{1}{10}", True),
    ("2\\sqrt{3}", "\\sqrt{12}", True), ("2\\sqrt{3}", "3\\sqrt{2}", False),
    ("\\frac{\\pi}{4}", "\\pi/4", True), ("\\frac{\\pi}{4}", "0.785", False),
    ("(-2,2)", "(-2, 2)", True), ("(-2,2)", "[-2,2]", False), ("[1,3)", "[1, 3)", True),
    ("(0,\\infty)", "(0, \\infty)", True),
    ("x^2+2x+1", "(x+1)^2", True), ("\\{1,2\\}", "\\{2,1\\}", True), ("e", "\\exp(1)", True),
]


@pytest.fixture(scope="module")
def checker():
    with MathEquivalence(timeout_s=20) as c:
        yield c


@pytest.mark.parametrize("gold, answer, same", PAIRS)
def test_math_verifier_agrees_with_math_verify(checker, gold, answer, same):
    reference = verify(parse(f"${gold}$"), parse(f"${answer}$"))
    ours = verify_answer(f"Thus the answer is $\\boxed{{{answer}}}$.", gold, mode="math", checker=checker)
    assert ours.success == reference == same


@pytest.mark.parametrize("name, file, ids, golds", [
    ("aime24", "aime24.jsonl", ["1", "2"], ["016", "24"]),
    ("aime25", "aime25.jsonl", ["2025-I-1", "2025-I-2"], ["9", "25"]),
    ("hmmt25", "hmmt25.jsonl", ["1", "2", "3"], ["\\frac{9}{2}", "2\\sqrt{3}", "(-2,2)"]),
    ("deepmath", "deepmath.jsonl", ["deepmath-0", "deepmath-1", "deepmath-2"], ["\\dfrac{1}{2}", "\\frac{\\pi}{4}", "2"]),
])
def test_loaders_read_the_real_layouts(name, file, ids, golds):
    task = get_task(name)
    ps = task.load(str(FIX / file))
    assert [p.problem_id for p in ps] == ids
    assert [p.ground_truth for p in ps] == golds
    assert ps[0].question.endswith("\n\nPlease reason step by step, and put your final answer within \\boxed{}.")
    assert task.messages(ps[0]) == [{"role": "user", "content": ps[0].question}]


def test_deepmath_min_difficulty_keeps_row_ids():
    ps = get_task("deepmath", min_difficulty=6).load(str(FIX / "deepmath.jsonl"))
    assert [p.problem_id for p in ps] == ["deepmath-1", "deepmath-2"]
    assert ps[0].meta["difficulty"] == 6.0


def test_aime_compares_integers_and_needs_a_box():
    task = get_task("aime24")
    p = task.load(str(FIX / "aime24.jsonl"))[0]  # gold "016"
    v = task.verify([p] * 4, ["So the count is \\boxed{16}.", "\\boxed{016}", "\\boxed{61}", "It is 16."])
    assert [x.success for x in v] == [True, True, False, False]
    assert v[3].status == "no_answer" and "boxed" in v[3].feedback


def test_aime_gold_that_is_not_an_integer_is_invalid_for_that_problem(tmp_path):
    f = tmp_path / "a.jsonl"
    f.write_text(json.dumps({"id": 1, "problem": "p", "answer": "\\frac{1}{2}"}) + "\n"
                 + json.dumps({"id": 2, "problem": "q", "answer": "5"}) + "\n")
    task = get_task("aime25")
    ps = task.load(str(f))
    v = task.verify(ps, ["\\boxed{1/2}", "\\boxed{5}"])
    assert v[0].status == "invalid_test" and v[1].success


def test_hmmt_and_deepmath_use_math_verify_in_the_worker(checker):
    for name, file, answers in [("hmmt25", "hmmt25.jsonl", ["\\boxed{4.5}", "\\boxed{\\sqrt{12}}", "\\boxed{[-2,2]}"]),
                                ("deepmath", "deepmath.jsonl", ["\\boxed{0.5}", "\\boxed{\\pi/4}", "\\boxed{3}"])]:
        task = get_task(name, checker=checker)
        ps = task.load(str(FIX / file))
        assert [v.success for v in task.verify(ps, answers)] == [True, True, False]
        task.close()
        assert checker.equivalent("1", "1.0")  # a shared checker outlives the task


@pytest.mark.parametrize("content, field, line", [
    ('{"id": 1, "answer": "3"}\n', "problem", 1),
    ('{"id": 1, "problem": "p", "answer": "3"}\n{"id": 2, "problem": "q"}\n', "answer", 2),
])
def test_malformed_record_is_an_invalid_problem_naming_file_line_and_field(tmp_path, content, field, line):
    f = tmp_path / "m.jsonl"
    f.write_text(content)
    task = get_task("hmmt25")
    ps = task.load(str(f))
    bad = ps[line - 1]
    assert bad.meta["invalid"].startswith(f"{f}:{line}: field '{field}': missing")
    assert [v.status for v in task.verify([bad], ["\\boxed{3}"])] == ["invalid_test"]
    task.close()


def test_duplicate_ids_stop_the_load(tmp_path):
    f = tmp_path / "m.jsonl"
    f.write_text('{"id": 1, "problem": "p", "answer": "3"}\n{"id": 1, "problem": "q", "answer": "4"}\n')
    with pytest.raises(InputError, match=r"m\.jsonl:2: field 'id': duplicate problem id '1' \(first at .*m\.jsonl:1\)"):
        get_task("aime25").load(str(f))


INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."


@pytest.mark.parametrize("name", ["aime24", "aime25", "hmmt25", "deepmath"])
def test_an_instruction_the_problem_already_ends_with_is_not_repeated(tmp_path, name):
    text_field = "question" if name == "deepmath" else "problem"
    answer_field = "final_answer" if name == "deepmath" else "answer"
    rows = [{text_field: f"Find $x$ if $x + 1 = 3$.\n{INSTRUCTION}", answer_field: "2"},
            {text_field: f"Find $y$ if $2y = 8$. {INSTRUCTION}\n", answer_field: "4"},
            {text_field: "Compute $3 \\cdot 5$.", answer_field: "15"}]
    f = tmp_path / "m.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    qs = [p.question for p in get_task(name).load(str(f))]
    assert qs[0] == rows[0][text_field] and qs[0].count("step by step") == 1
    assert qs[1] == rows[1][text_field].strip() and qs[1].count("step by step") == 1
    assert qs[2] == f"Compute $3 \\cdot 5$.\n\n{INSTRUCTION}"


def test_deepmath_shards_keep_row_ids_and_bad_difficulty_is_invalid(tmp_path):
    rows = [json.loads(line) for line in (FIX / "deepmath.jsonl").read_text().splitlines()]
    rows[2]["difficulty"] = "hard"
    for i, part in enumerate((rows[:2], rows[2:])):
        (tmp_path / f"part-{i}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part))
    ps = get_task("deepmath", min_difficulty=6).load(str(tmp_path / "part-*.jsonl"))
    assert [p.problem_id for p in ps] == ["deepmath-1", "deepmath-2"]
    assert "field 'difficulty': expected a number" in ps[1].meta["invalid"]


def test_no_data_file_says_where_to_get_one():
    with pytest.raises(InputError, match="DeepMath-103K"):
        get_task("deepmath").load(None)


def test_json_list_and_parquet_readers(tmp_path):
    rows = [json.loads(line) for line in (FIX / "hmmt25.jsonl").read_text().splitlines()]
    (tmp_path / "h.json").write_text(json.dumps(rows, indent=2))
    assert [p.ground_truth for p in get_task("hmmt25").load(str(tmp_path / "h.json"))] == [r["answer"] for r in rows]
    bad = json.dumps(rows, indent=2).replace('"answer": "2\\\\sqrt{3}",', '"answer": ,')
    (tmp_path / "bad.json").write_text(bad)
    with pytest.raises(InputError, match=r"bad\.json:\d+: malformed JSON"):
        get_task("hmmt25").load(str(tmp_path / "bad.json"))


def test_parquet_files_read_like_jsonl(tmp_path):
    pytest.importorskip("pyarrow")
    import pandas as pd

    rows = [json.loads(line) for line in (FIX / "deepmath.jsonl").read_text().splitlines()]
    rows[1]["topic"] = None
    pd.DataFrame(rows).to_parquet(tmp_path / "d.parquet")
    ps = get_task("deepmath").load(str(tmp_path / "d.parquet"))
    assert [(p.problem_id, p.ground_truth, p.meta["difficulty"]) for p in ps] == [
        (f"deepmath-{i}", r["final_answer"], r["difficulty"]) for i, r in enumerate(rows)]
    assert ps[1].meta["topic"] is None
    del rows[2]["final_answer"]
    pd.DataFrame(rows).to_parquet(tmp_path / "e.parquet")
    bad = get_task("deepmath").load(str(tmp_path / "e.parquet"))[2]
    assert bad.meta["invalid"] == f"{tmp_path / 'e.parquet'}: field 'final_answer': row 2 (0-based): missing (or 'answer')"
