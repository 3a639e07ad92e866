"""Harness semantics: LiveCodeBench comparison rules, call-based protocol, HumanEval asserts,
feedback text, and the worker pool."""

from __future__ import annotations

import functools
import os
import sys
import threading
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sandbox import (
    Limits,
    Sandbox,
    SandboxConfig,
    map_run,
    run_assert_tests,
    run_call_tests,
    run_stdio_tests,
)
from sandbox.compare import json_values_equal, parse_call_inputs, stdout_matches
from sandbox.feedback import error_tail, truncate

pytestmark = pytest.mark.filterwarnings("ignore::sandbox.detect.SandboxWarning")


@pytest.fixture(scope="module")
def sb() -> Sandbox:
    return Sandbox(SandboxConfig(uid_base=63000 + (os.getpid() % 40) * 50, uid_count=50))


# --- LiveCodeBench stdout rules ----------------------------------------------------------------

@pytest.mark.parametrize(("got", "want", "ok"), [
    ("6\n", "6", True),
    ("  6  \n\n", "6\n", True),  # whole text and each line stripped
    ("1 2\n3\n", "1 2\n3", True),
    ("1  2\n", "1 2", True),  # token-wise as decimals
    ("1.0 2.50\n", "1 2.5", True),
    ("1e2\n", "100", True),
    ("0.30000000000000004\n", "0.3", False),  # Decimal, not float tolerance
    ("6\n7\n", "6", False),  # line count differs
    ("6\n\n7\n", "6\n7", False),  # blank lines inside count
    ("YES\n", "yes", False),  # case matters
    ("abc def\n", "abc  def", False),  # non-numeric tokens compare as whole lines
    ("", "", True),
    ("", "0", False),
])
def test_stdout_matches_lcb_rules(got, want, ok):
    assert stdout_matches(got, want) is ok


@given(st.lists(st.integers(-10**18, 10**18), min_size=1, max_size=20))
def test_stdout_matches_numbers_however_spaced(nums):
    want = " ".join(map(str, nums))
    assert stdout_matches("  ".join(map(str, nums)) + " \n", want)
    assert not stdout_matches(" ".join(str(n + 1) for n in nums), want)


def test_json_comparison_is_on_plain_data():
    assert json_values_equal("[1, 2]", [1, 2]) and json_values_equal("[1.0, 2]", [1, 2])
    assert json_values_equal('{"b": [true], "a": null}', {"a": None, "b": [True]})
    assert not json_values_equal("[1, 2]", [2, 1]) and not json_values_equal('"1"', 1)
    assert not json_values_equal("NaN", float("nan")) and not json_values_equal("{", {})
    assert parse_call_inputs('[1,2]\n"x"\n{"a": 1}') == [[1, 2], "x", {"a": 1}]
    with pytest.raises(ValueError, match="line 2"):
        parse_call_inputs("1\nnot json")


# --- stdin/stdout harness ----------------------------------------------------------------------

SUM = "n = int(input())\nprint(sum(map(int, input().split())))\n"
SUM_TESTS = [("3\n1 2 3\n", "6\n"), ("2\n5 5\n", "10"), ("1\n-4\n", "-4")]


def test_stdio_all_pass(sb):
    res = run_stdio_tests(SUM, SUM_TESTS, sandbox=sb)
    assert res.passed and res.fraction_passed == 1.0 and len(res.tests) == 3
    assert res.feedback == "All 3 tests passed."


def test_stdio_first_failure_stops_and_feedback_names_it(sb):
    bad = SUM.replace("sum(", "1 + sum(")
    res = run_stdio_tests(bad, SUM_TESTS, sandbox=sb)
    assert not res.passed and len(res.tests) == 1 and res.fraction_passed == 0.0
    assert res.tests[0].status == "wrong_answer" and res.tests[0].got == "7\n"
    assert res.feedback == ("Test 1 of 3 failed: wrong answer.\nInput:\n3\n1 2 3\n"
                            "Expected output:\n6\nYour output:\n7")


def test_stdio_partial_credit(sb):
    prog = "n = int(input())\nxs = list(map(int, input().split()))\nprint(sum(xs) if n != 2 else 0)\n"
    res = run_stdio_tests(prog, SUM_TESTS, stop_at_first_failure=False, sandbox=sb)
    assert [t.status for t in res.tests] == ["passed", "wrong_answer", "passed"]
    assert res.fraction_passed == pytest.approx(2 / 3) and not res.passed
    assert "Test 2 of 3 failed" in res.feedback and "1 of 3" not in res.feedback


def test_stdio_runtime_error_feedback_points_at_solution_lines(sb):
    res = run_stdio_tests("x = int(input())\ny = [1][x]\nprint(y)\n", [("5\n", "1")], sandbox=sb)
    assert res.tests[0].status == "runtime_error"
    assert 'File "solution.py", line 2, in <module>' in res.feedback
    assert "IndexError: list index out of range" in res.feedback
    assert "mopd-sbx" not in res.feedback and "__mopd" not in res.feedback


def test_stdio_timeout_and_lcb_imports(sb):
    res = run_stdio_tests("print(gcd(12, 18), *accumulate([1, 2, 3]))\n", [("", "6 1 3 6")],
                          sandbox=sb)
    assert res.passed  # LiveCodeBench's prelude provides gcd and accumulate
    res = run_stdio_tests("print(gcd(12, 18))\n", [("", "6")], lcb_imports=False, sandbox=sb)
    assert res.tests[0].status == "runtime_error" and "NameError" in res.feedback
    res = run_stdio_tests("while True: pass\n", [("", "1")], Limits(timeout_s=0.5), sandbox=sb)
    assert res.tests[0].status == "timeout"
    assert res.feedback.startswith("Test 1 of 1 failed: time limit exceeded (0.5 s).")


def test_stdio_reads_stdin_like_a_judge(sb):
    prog = ("import sys, os\ndata = sys.stdin.buffer.read().split()\n"
            "print(int(data[0]) * 2)\n")
    assert run_stdio_tests(prog, [("21\n", "42")], sandbox=sb).passed
    prog = "import sys\nprint(input())\nsys.exit(0)\nprint('never')\n"
    assert run_stdio_tests(prog, [("hi\n", "hi")], sandbox=sb).passed


def test_no_tests_is_an_error(sb):
    with pytest.raises(ValueError):
        run_stdio_tests("print(1)", [], sandbox=sb)
    with pytest.raises(ValueError):
        run_call_tests("", "f", [], sandbox=sb)


# --- call-based harness --------------------------------------------------------------------------

TWO_SUM = ("class Solution:\n    def twoSum(self, nums: List[int], target: int) -> List[int]:\n"
           "        seen = {}\n        for i, x in enumerate(nums):\n"
           "            if target - x in seen:\n                return (seen[target - x], i)\n"
           "            seen[x] = i\n")
TS_TESTS = [("[2,7,11,15]\n9", "[0, 1]"), ("[3,2,4]\n6", "[1, 2]"), ("[3,3]\n6", "[0,1]")]


def test_call_all_pass_tuples_count_as_lists(sb):
    res = run_call_tests(TWO_SUM, "twoSum", TS_TESTS, sandbox=sb)
    assert res.passed and res.feedback == "All 3 tests passed." and len(res.tests) == 3


def test_call_module_level_function(sb):
    res = run_call_tests("def add(a, b):\n    return a + b\n", "add",
                         [("1\n2", "3"), ("[1]\n[2]", "[1, 2]")], sandbox=sb)
    assert res.passed


def test_call_wrong_answer_feedback(sb):
    prog = TWO_SUM.replace("(seen[target - x], i)", "[i, seen[target - x]]")
    res = run_call_tests(prog, "twoSum", TS_TESTS, sandbox=sb)
    assert not res.passed and len(res.tests) == 1
    assert res.feedback == ("Test 1 of 3 failed: wrong answer.\nInput:\n[2,7,11,15]\n9\n"
                            "Expected:\n[0,1]\nGot:\n[1, 0]")


def test_call_stops_at_first_failure_without_running_slow_tests(sb):
    prog = ("import time\nclass Solution:\n    def f(self, x):\n"
            "        if x > 0:\n            time.sleep(10)\n        return x\n")
    t0 = time.monotonic()
    res = run_call_tests(prog, "f", [("0", "1"), ("1", "1"), ("2", "2")], Limits(timeout_s=20),
                         sandbox=sb)
    assert res.tests[0].status == "wrong_answer" and len(res.tests) == 1
    assert time.monotonic() - t0 < 8  # the parent killed the child after test 1


def test_call_setup_errors(sb):
    res = run_call_tests("class Solution:\n    def g(self): pass\n", "f", [("1", "1")], sandbox=sb)
    assert res.tests[0].status == "runtime_error" and "AttributeError" in res.feedback
    res = run_call_tests("def f(x:\n", "f", [("1", "1")], sandbox=sb)
    assert "SyntaxError" in res.feedback and 'File "solution.py", line 1' in res.feedback


def test_call_setup_that_hangs_times_out_on_the_test_clock(sb):
    t0 = time.monotonic()
    res = run_call_tests("while True:\n    pass\n", "f", [("1", "1")], Limits(timeout_s=0.5),
                         sandbox=sb)
    assert res.tests[0].status == "timeout"
    assert time.monotonic() - t0 < 5  # setup gets one test's time, not the start-up allowance


def test_call_partial_credit_survives_hangs_and_crashes(sb):
    prog = ("import os\nclass Solution:\n    def f(self, x):\n"
            "        if x == 1:\n            while True:\n                try:\n"
            "                    while True: pass\n                except BaseException:\n"
            "                    pass\n"
            "        if x == 2:\n            os._exit(0)\n        if x == 3:\n"
            "            raise KeyError(x)\n        return x\n")
    tests = [(str(i), str(i)) for i in range(5)]
    res = run_call_tests(prog, "f", tests, Limits(timeout_s=0.5), stop_at_first_failure=False,
                         sandbox=sb)
    assert [t.status for t in res.tests] == ["passed", "timeout", "runtime_error",
                                             "runtime_error", "passed"]
    assert res.fraction_passed == pytest.approx(0.4)
    assert "KeyError: 3" in res.tests[3].error


def test_call_prints_do_not_disturb_results(sb):
    prog = "class Solution:\n    def f(self, x):\n        print('[9]', x)\n        return [x]\n"
    res = run_call_tests(prog, "f", [("1", "[1]"), ("2", "[2]")], sandbox=sb)
    assert res.passed


def test_call_memory_limit_is_reported(sb):
    prog = "class Solution:\n    def f(self, x):\n        return len(bytearray(x))\n"
    res = run_call_tests(prog, "f", [("1", "1"), (str(8 << 30), "0")], Limits(memory_mb=512),
                         sandbox=sb)
    assert [t.status for t in res.tests] == ["passed", "runtime_error"]
    assert "MemoryError" in res.tests[1].error


# --- assert harness --------------------------------------------------------------------------------

CHECK = "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(-1, 1) == 0\n"


def test_assert_pass_fail_and_feedback(sb):
    assert run_assert_tests("def add(a, b):\n    return a + b\n", CHECK, "add", sandbox=sb).passed
    res = run_assert_tests("def add(a, b):\n    return a * b\n", CHECK, "add", sandbox=sb)
    assert not res.passed and res.tests[0].status == "runtime_error"
    assert res.feedback.startswith("The tests failed: runtime error.\nError:\n")
    assert "assert candidate(2, 3) == 5" in res.feedback and "AssertionError" in res.feedback
    res = run_assert_tests("def add(a, b):\n    while True: pass\n", CHECK, "add",
                           Limits(timeout_s=0.5), sandbox=sb)
    assert res.tests[0].status == "timeout"


def test_assert_program_output_never_reaches_the_result_channel(sb):
    # The program's prints go to stderr: its process holds no descriptor of the driver's stdout.
    res = run_assert_tests("def add(a, b):\n    print('dbg')\n    return a + b\n", CHECK, "add",
                           sandbox=sb)
    assert res.passed and res.tests[0].got is None
    res = run_assert_tests("def add(a, b):\n    print('dbg')\n    return a * b\n", CHECK, "add",
                           sandbox=sb)
    assert not res.passed and "AssertionError" in res.feedback


# --- feedback helpers ----------------------------------------------------------------------

def test_truncate_keeps_head_and_tail():
    text = "a" * 50 + "b" * 50
    out = truncate(text, 20)
    assert out.startswith("a" * 10) and out.endswith("b" * 10) and "80 characters omitted" in out
    assert truncate("short", 20) == "short"


def test_error_tail_normalises_paths():
    tb = ('Traceback (most recent call last):\n  File "/tmp/mopd-sbx-abc/main.py", line 3, in '
          '<module>\nZeroDivisionError: division by zero\n')
    assert error_tail(tb) == ('Traceback (most recent call last):\n  File "main.py", line 3, in '
                              '<module>\nZeroDivisionError: division by zero')


# --- pool --------------------------------------------------------------------------------------

def test_map_run_keeps_order_and_runs_in_parallel(sb):
    jobs = [functools.partial(sb.run, f"import time\ntime.sleep(1.5)\nprint({i})")
            for i in range(4)]
    t0 = time.monotonic()
    results = map_run(jobs, workers=4, progress=False)
    elapsed = time.monotonic() - t0
    assert [r.stdout for r in results] == [f"{i}\n" for i in range(4)]
    assert elapsed < 5  # four 1.5 s sleeps overlapped (6 s one after the other)


def test_map_run_from_several_threads(sb):
    out: dict[int, list[str]] = {}

    def batch(k: int) -> None:
        jobs = [functools.partial(run_stdio_tests, SUM, SUM_TESTS[:1], sandbox=sb)
                for _ in range(3)]
        out[k] = [r.status for r in map_run(jobs, workers=2, progress=False)]

    threads = [threading.Thread(target=batch, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert out == {k: ["passed"] * 3 for k in range(3)}


def test_map_run_propagates_errors_and_validates():
    def boom():
        raise RuntimeError("job failed")

    with pytest.raises(RuntimeError, match="job failed"):
        map_run([boom, lambda: 1], workers=2, progress=False)
    with pytest.raises(ValueError):
        map_run([lambda: 1], workers=0, progress=False)
    assert map_run([], progress=False) == []


# --- totality and memory bounds of everything that parses program output ------------------------

@given(st.text(), st.sampled_from(["1", "1.5 2", "sNaN", "NaN", "abc", "", "1\n2"]))
def test_stdout_matches_is_total(got, want):
    assert stdout_matches(got, want) in (True, False)


@pytest.mark.parametrize("got", ["sNaN", "-sNaN", "sNaN1", "NaN", "Infinity", "1e999999999999999999",
                                 "0e-99999999999999999999", "1_000", "٣"])
def test_stdout_matches_odd_numbers_never_raise(got):
    assert stdout_matches(got, "1") is False
    assert stdout_matches(got + " 2", "1 2") is False


def _peak_mib(fn) -> float:
    import gc
    import tracemalloc

    gc.collect()
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def test_stdout_comparison_memory_is_bounded():
    many_tokens = "1 " * (8 << 20)  # a 16 MiB line: a Decimal per token would cost > 1 GB
    newlines = "\n" * (16 << 20)
    assert _peak_mib(lambda: stdout_matches(many_tokens, "1 1")) < 40
    assert _peak_mib(lambda: stdout_matches(newlines + "1", "1\n1")) < 40
    assert _peak_mib(lambda: json_values_equal("[" * 200000, [1])) < 40


def test_call_batch_stderr_is_kept_to_one_tests_cap(sb):
    # Both tests flood stderr with newlines; the parent keeps one test's cap of it (the tail),
    # and the feedback reads only its end.
    program = ("import os\nclass Solution:\n    def f(self, x):\n"
               "        os.write(2, b'\\n' * (3 << 20))\n        raise ValueError('boom')\n")
    limits = Limits(timeout_s=5, output_bytes=4 << 20)

    def run():
        return run_call_tests(program, "f", [("1", "1"), ("2", "2")], limits, sandbox=sb,
                              stop_at_first_failure=False)

    holder = []
    peak = _peak_mib(lambda: holder.append(run()))
    res = holder[0]
    assert [t.status for t in res.tests] == ["runtime_error", "runtime_error"]
    assert "ValueError: boom" in res.feedback
    assert peak < 6 * 4  # a small multiple of the per-test cap (it was 1.25 GB)


# --- the driver/candidate codec (sandbox/guest.py) ----------------------------------------------

def test_plain_copies_contents_whatever_subclasses_override():
    from sandbox.guest import plain

    class L(list):
        def __iter__(self):
            return iter([9, 9])

        def __eq__(self, other):
            return True

    class S(str):
        def __str__(self):
            return "lie"

    out = plain((L([1, 2]), S("ab"), {1: {2, 3}}, frozenset({b"x"}), 1 + 2j, float("nan")))
    assert out[:5] == ([1, 2], "ab", {1: {2, 3}}, frozenset({b"x"}), 1 + 2j)
    assert [type(x) for x in out[:2]] == [list, str]
    for bad in (object(), len, iter([1]), [lambda: 1], {1: object()}):
        with pytest.raises(TypeError):
            plain(bad)


def test_check_plain_rejects_what_marshal_can_carry_besides_data():
    import marshal

    from sandbox.guest import check_plain

    check_plain(marshal.loads(marshal.dumps({"v": [1, (2.5, "x"), {3}], "t": 0.1})), [100])
    loop: list = []
    loop.append(loop)
    shared: list = [0]
    for _ in range(60):  # 2**60 paths through 60 shared lists
        shared = [shared, shared]
    for bad in (compile("1", "x", "exec"), ..., StopIteration, slice(1), loop, shared):
        with pytest.raises(ValueError):
            check_plain(bad, [10_000])


def test_guest_ships_as_source_to_another_python_version():
    from sandbox.drivers import GUEST_SOURCE, guest_program

    assert guest_program("2.7.18") == GUEST_SOURCE
    here = "%d.%d.0" % sys.version_info[:2]  # noqa: UP031
    assert guest_program(here).startswith("import marshal\n")


def test_assert_prompt_helpers_run_in_the_driver_and_reach_the_candidate(sb):
    # The prompt's helper is the problem's own (a completion redefining it changes nothing),
    # and when it calls the entry point it reaches the candidate's, not the prompt's stub.
    prompt = "def helper(x):\n    return add(x, 1)\n\ndef add(a, b):\n    '''Add.'''\n"
    test = "def check(candidate):\n    assert helper(2) == 3\n    assert candidate(1, 1) == 2\n"
    honest = prompt + "    return a + b\n"
    assert run_assert_tests(honest, test, "add", prompt=prompt, sandbox=sb).passed
    cheat = prompt + "    return a + b + 1\n\ndef helper(x):\n    return 3\n"
    assert not run_assert_tests(cheat, test, "add", prompt=prompt, sandbox=sb).passed
