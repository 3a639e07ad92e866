"""LiveCodeBench: release-file loading, safe private-test decoding, date window, both test styles."""

from __future__ import annotations

import base64
import json
import pickle
import zlib
from pathlib import Path

import pytest

from mopd_eval.errors import InputError
from mopd_eval.tasks.lcb import LCBTask, decode_test_cases

FIXTURE = Path(__file__).parent / "fixtures" / "lcb_release.jsonl"


def pack(obj) -> str:
    return base64.b64encode(zlib.compress(pickle.dumps(obj))).decode()


def fenced(code: str) -> str:
    return f"Solution:\n```python\n{code}\n```\n"


@pytest.fixture(scope="module")
def task():
    return LCBTask(timeout_s=3.0)


@pytest.fixture(scope="module")
def problems(task):
    return {p.problem_id: p for p in task.load(str(FIXTURE))}


def test_decode_json_and_compressed_private_tests():
    tests = [{"input": "1\n", "output": "2\n", "testtype": "stdin"}]
    assert decode_test_cases(json.dumps(tests)) == tests
    assert decode_test_cases(pack(json.dumps(tests))) == tests
    assert decode_test_cases(pack(json.dumps(tests).encode())) == tests
    assert decode_test_cases(tests) == tests


class _Marker:
    """Unpickling this would create a file: the proof that a pickle ran code."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def test_a_pickle_that_would_run_code_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "ran"
    payload = pack(_Marker(str(marker)))
    assert pickle.loads(zlib.decompress(base64.b64decode(payload))) is None and marker.exists()
    marker.unlink()  # the plain pickle module runs it; ours must not
    with pytest.raises(ValueError, match="refusing to load"):
        decode_test_cases(payload)
    assert not marker.exists()


@pytest.mark.parametrize("raw, match", [
    ("not base64 at all!", "neither JSON nor base64"),
    (base64.b64encode(b"plain bytes").decode(), "not zlib"),
    (pack(42), "holds a int"),
    (pack("not json"), "not JSON"),
    (json.dumps({"input": "1"}), "expected a list"),
    (json.dumps([{"input": "1"}]), "'output' missing"),
    (json.dumps([{"input": "1", "output": "2", "testtype": "graphic"}]), "unknown testtype"),
])
def test_undecodable_tests_raise_value_error_saying_why(raw, match):
    with pytest.raises(ValueError, match=match):
        decode_test_cases(raw)


def test_date_window_keeps_v6_by_default_and_is_configurable(task):
    assert [p.problem_id for p in task.load(str(FIXTURE))] == ["mopd001_a", "9001", "9002", "mopd001_b"]
    everything = LCBTask(start="", end="").load(str(FIXTURE))
    assert [p.problem_id for p in everything][3] == "mopd000_a" and len(everything) == 5
    assert [p.problem_id for p in LCBTask(start="2025-03-01", end="2025-04-30").load(str(FIXTURE))] == ["9001"]
    assert LCBTask().load(str(FIXTURE), limit=2)[1].problem_id == "9001"


LCB_SYSTEM = ("You are an expert Python programmer. You will be given a question (problem specification) and will "
              "generate a correct Python program that matches the specification and passes all tests.")


def test_default_prompt_is_lcb_runners_generic_chat_prompt(task, problems):
    stdin = task.messages(problems["mopd001_a"])
    assert stdin == [{"role": "system", "content": LCB_SYSTEM}, {"role": "user", "content": (
        "### Question:\nYou are given two integers A and B on one line. Print A + B.\n\n"
        "### Format: Read the inputs from stdin solve the problem and write the answer to stdout (do not directly "
        "test on the sample inputs). Enclose your code within delimiters as follows. Ensure that when the python "
        "program runs, it reads the inputs, runs the algorithm and writes output to STDOUT.\n"
        "```python\n# YOUR CODE HERE\n```\n\n### Answer: (use the provided format with backticks)\n\n")}]
    call = task.messages(problems["9001"])[1]["content"]
    assert call == (
        "### Question:\nGiven an integer array nums, return its largest element.\n\n"
        "### Format: You will use the following starter code to write the solution to the problem and enclose "
        "your code within delimiters.\n```python\nclass Solution:\n    def largestElement(self, nums: List[int]) "
        "-> int:\n        \n```\n\n### Answer: (use the provided format with backticks)\n\n")


def test_mopd_prompt_style_keeps_the_earlier_wording():
    ps = {p.problem_id: p for p in LCBTask(prompt_style="mopd").load(str(FIXTURE))}
    q = ps["mopd001_a"].question
    assert q.startswith("You will be given a programming problem.") and "standard input" in q
    assert "class Solution:\n    def largestElement" in ps["9001"].question
    assert LCBTask(prompt_style="mopd").messages(ps["9001"]) == [{"role": "user", "content": ps["9001"].question}]


@pytest.mark.parametrize("kwargs, field", [
    ({"prompt_style": "chat"}, "prompt_style"), ({"code_extraction": "first"}, "code_extraction"),
    ({"start": "Feb 2025"}, "start/end"),
])
def test_unknown_options_are_input_errors(kwargs, field):
    with pytest.raises(InputError) as e:
        LCBTask(**kwargs)
    assert e.value.field == field


def test_code_extraction_lcb_by_default_general_as_an_option():
    # Prose after the code holding a fence mention: lcb_runner takes the lines between the last
    # two fence lines (here the prose), the general rule takes the closed Python block.
    response = "```python\nprint(1)\n```\nThe ``` above closes the block.\n"
    assert LCBTask().program(response) == ""
    assert LCBTask(code_extraction="general").program(response) == "print(1)"
    no_fence = "print(1)"
    assert LCBTask().program(no_fence) == "" and LCBTask(code_extraction="general").program(no_fence) == "print(1)"


def test_unfenced_program_is_empty_under_the_lcb_rule(task, problems):
    v = task.verify([problems["mopd001_a"]], ["a, b = map(int, input().split())\nprint(a + b)"])[0]
    assert not v.success


def test_stdin_problem_correct_wrong_and_runtime_error(task, problems):
    p = problems["mopd001_a"]
    ok = fenced("a, b = map(int, input().split())\nprint(a + b)")
    wrong = fenced("a, b = map(int, input().split())\nprint(a - b)")
    crash = fenced("print(1 / 0)")
    v = task.verify([p, p, p], [ok, wrong, crash])
    assert [x.success for x in v] == [True, False, False]
    assert [x.status for x in v] == ["correct", "wrong_answer", "runtime_error"]
    assert v[1].partial == 0.0 and "ZeroDivisionError" in v[2].feedback


def test_call_based_problems_use_func_name_and_private_tests(task, problems):
    good = fenced("class Solution:\n    def largestElement(self, nums):\n        return max(nums)")
    first_only = fenced("class Solution:\n    def largestElement(self, nums):\n        return 5")
    add = fenced("class Solution:\n    def addTwo(self, a, b):\n        return a + b")
    v = task.verify([problems["9001"], problems["9001"], problems["9002"]], [good, first_only, add])
    assert [x.success for x in v] == [True, False, True]
    # Public test passes, the first private one fails, the rest is not run: 1 of 3.
    assert v[1].partial == pytest.approx(1 / 3)


def test_partial_credit_runs_every_test():
    p = {q.problem_id: q for q in LCBTask(partial_credit=True, timeout_s=3.0).load(str(FIXTURE))}["mopd001_a"]
    half = fenced("a, b = map(int, input().split())\nprint(a + b if a < 5 else 0)")
    v = LCBTask(partial_credit=True, timeout_s=3.0).verify([p], [half])[0]
    assert not v.success and v.partial == pytest.approx(2 / 4)  # "1 2" and "-5 5" pass


def test_undecodable_private_tests_give_invalid_test_for_that_problem_only(task, problems):
    ok = fenced("a, b = map(int, input().split())\nprint(a + b)")
    v = task.verify([problems["mopd001_b"], problems["mopd001_a"]], [fenced("print(int(input()) * 2)"), ok])
    assert v[0].status == "invalid_test" and "truncated" in v[0].feedback
    assert v[1].success


def test_functional_problem_without_func_name_is_invalid(tmp_path, task):
    rows = [json.loads(line) for line in FIXTURE.read_text().splitlines()]
    rows[1]["metadata"] = "{}"
    f = tmp_path / "r.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    p = {q.problem_id: q for q in task.load(str(f))}["9001"]
    assert task.verify([p], ["x"])[0].status == "invalid_test"


def test_malformed_records_are_invalid_problems_and_malformed_json_stops(tmp_path, task):
    rows = [json.loads(line) for line in FIXTURE.read_text().splitlines()]
    del rows[2]["question_content"]
    rows[4]["contest_date"] = "last tuesday"
    f = tmp_path / "r.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    ps = {p.problem_id: p for p in task.load(str(f))}
    assert list(ps) == ["mopd001_a", "9001", "9002", "mopd001_b"]
    assert ps["9002"].meta["invalid"] == f"{f}:3: field 'question_content': missing"
    assert "field 'contest_date': not an ISO date" in ps["mopd001_b"].meta["invalid"]
    v = task.verify([ps["9002"]], [fenced("print(1)")])[0]
    assert (v.status, v.feedback) == ("invalid_test", ps["9002"].meta["invalid"])
    lines = FIXTURE.read_text().splitlines()
    f.write_text(lines[0] + "\n" + lines[1][:-5] + "\n")
    with pytest.raises(InputError, match=r"r\.jsonl:2: malformed JSON"):
        task.load(str(f))
    f.write_text(lines[0] + "\n" + lines[0] + "\n")
    with pytest.raises(InputError, match="field 'question_id': duplicate problem id 'mopd001_a'"):
        task.load(str(f))


def test_release_files_as_a_comma_list_and_a_glob(tmp_path, task):
    lines = FIXTURE.read_text().splitlines()
    (tmp_path / "test.jsonl").write_text("\n".join(lines[:2]) + "\n")
    (tmp_path / "test2.jsonl").write_text("\n".join(lines[2:]) + "\n")
    want = [p.problem_id for p in task.load(str(FIXTURE))]
    assert [p.problem_id for p in task.load(f"{tmp_path / 'test.jsonl'},{tmp_path / 'test2.jsonl'}")] == want
    assert [p.problem_id for p in task.load(str(tmp_path / "test*.jsonl"))] == want


def test_json_list_release_file_loads_the_same(tmp_path, task):
    rows = [json.loads(line) for line in FIXTURE.read_text().splitlines()]
    f = tmp_path / "r.json"
    f.write_text(json.dumps(rows, indent=1))
    assert [p.problem_id for p in task.load(str(f))] == [p.problem_id for p in task.load(str(FIXTURE))]


def test_missing_data_file_is_an_input_error(task):
    with pytest.raises(InputError, match="--data"):
        task.load(None)
