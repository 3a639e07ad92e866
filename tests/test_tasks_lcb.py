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


def test_prompt_follows_the_starter_code_or_stdin_format(problems):
    assert "class Solution:\n    def largestElement" in problems["9001"].question
    assert "standard input" in problems["mopd001_a"].question
    assert problems["mopd001_a"].question.startswith("You will be given a programming problem.")


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


def test_wrong_schema_and_malformed_json_name_file_and_line(tmp_path, task):
    rows = [json.loads(line) for line in FIXTURE.read_text().splitlines()]
    del rows[2]["question_content"]
    f = tmp_path / "r.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(InputError) as e:
        task.load(str(f))
    assert str(e.value) == f"{f}:3: field 'question_content': missing"
    rows = FIXTURE.read_text().splitlines()
    f.write_text(rows[0] + "\n" + rows[1][:-5] + "\n")
    with pytest.raises(InputError, match=r"r\.jsonl:2: malformed JSON"):
        task.load(str(f))
    bad_date = [json.loads(line) for line in FIXTURE.read_text().splitlines()]
    bad_date[0]["contest_date"] = "last tuesday"
    f.write_text("".join(json.dumps(r) + "\n" for r in bad_date))
    with pytest.raises(InputError, match="field 'contest_date': not an ISO date"):
        task.load(str(f))


def test_json_list_release_file_loads_the_same(tmp_path, task):
    rows = [json.loads(line) for line in FIXTURE.read_text().splitlines()]
    f = tmp_path / "r.json"
    f.write_text(json.dumps(rows, indent=1))
    assert [p.problem_id for p in task.load(str(f))] == [p.problem_id for p in task.load(str(FIXTURE))]


def test_missing_data_file_is_an_input_error(task):
    with pytest.raises(InputError, match="--data"):
        task.load(None)
