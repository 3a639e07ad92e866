"""Test harnesses: stdin/stdout, call-based and assert-based, with verdicts computed in the parent.

* stdin/stdout (LiveCodeBench stdin problems): one fresh sandboxed process per test. lcb_runner
  instead execs every test inside one process, wrapping the program in a function and mocking
  ``sys.stdin``; that changes what programs mean (``sys.stdin.buffer`` or ``os.read(0)`` see no
  input, ``exit()`` is swallowed, module state leaks between tests), while a process per test is
  what the judges the problems come from do. The cost is one interpreter start (~30 ms) per test.
* call-based (LeetCode style): all of a problem's tests in ONE process, as lcb_runner does (the
  fast path). A driver calls ``Solution().<func_name>(*args)`` and prints each result as JSON on
  a nonce-tagged line; the parent decodes that JSON and compares plain data, stops the process
  at the first failure, enforces each test's time limit itself, and, with partial credit,
  restarts after a test that hung or crashed the process.
* assert-based (HumanEval): the program, the tests and ``check(entry_point)``, then a line
  echoing a per-run nonce given only on stdin; passed only if the nonce is printed and the exit
  code is 0, so an ``exit(0)`` before the asserts fails.
"""

from __future__ import annotations

import json
import math
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from sandbox.compare import canonical_json, json_values_equal, parse_call_inputs, stdout_matches
from sandbox.config import Limits
from sandbox.drivers import LCB_IMPORTS, guest_program, script_program
from sandbox.feedback import error_tail, render, truncate
from sandbox.guest import spec_bytes
from sandbox.result import Result
from sandbox.runner import Sandbox, default_sandbox

# Before the driver's own clock starts (on_start) the first deadline allows for the sandbox's and
# interpreter's start-up, which a loaded machine can stretch to seconds.
STARTUP_S = 10.0
GRACE_S = 0.5  # parent-side slack over the child's own per-test alarm


@dataclass(frozen=True)
class TestResult:
    """One test. status: ``passed``, ``wrong_answer``, ``exited_early`` (assert style) or a
    sandbox status (``runtime_error``, ``timeout``, ``memory_limit``, ``output_limit``,
    ``killed``, ``sandbox_error``). input/expected/got/error are truncated for display."""

    index: int
    passed: bool
    status: str
    input: str | None
    expected: str | None
    got: str | None
    error: str | None
    time_s: float


@dataclass(frozen=True)
class HarnessResult:
    """All tests of one program. ``tests`` holds the tests that ran (with
    stop_at_first_failure, those up to the first failure); ``n_tests`` counts all of them, and
    tests that did not run count as failed in ``fraction_passed``."""

    tests: tuple[TestResult, ...]
    n_tests: int
    passed: bool
    fraction_passed: float
    feedback: str
    wall_s: float

    @property
    def status(self) -> str:
        """``passed`` or the status of the first failing test."""
        return next((t.status for t in self.tests if not t.passed), "passed" if self.passed
                    else "not_run")

    @property
    def sandbox_error(self) -> bool:
        """True when a verdict is missing because the sandbox failed, not the program."""
        return any(t.status == "sandbox_error" for t in self.tests)


def _finish(tests: list[TestResult], n_tests: int, style: str, limits: Limits,
            wall_s: float) -> HarnessResult:
    n_passed = sum(t.passed for t in tests)
    return HarnessResult(
        tests=tuple(tests),
        n_tests=n_tests,
        passed=n_passed == n_tests,
        fraction_passed=n_passed / n_tests,
        feedback=render(tests, n_tests, style=style, timeout_s=limits.timeout_s,
                        memory_mb=limits.memory_mb),
        wall_s=wall_s,
    )


def _error_text(res: Result) -> str | None:
    if res.status == "sandbox_error":
        return res.error
    text = error_tail(res.stderr)
    return truncate(text) if text else None


def run_stdio_tests(
    program: str,
    tests: Sequence[tuple[str, str]],
    limits: Limits | None = None,
    *,
    stop_at_first_failure: bool = True,
    lcb_imports: bool = True,
    sandbox: Sandbox | None = None,
) -> HarnessResult:
    """Run ``program`` once per (stdin, expected stdout) pair; compare with LiveCodeBench's
    rules (:func:`sandbox.compare.stdout_matches`). A test passes only if the program exits 0
    and its output matches. limits apply to each test (default: 6 s, 2 GiB).
    lcb_imports: run LiveCodeBench's import prelude first, as lcb_runner does.
    Raises ValueError when ``tests`` is empty."""
    if not tests:
        raise ValueError("no tests")
    sb = sandbox if sandbox is not None else default_sandbox()
    limits = limits if limits is not None else Limits()
    text = script_program(program, LCB_IMPORTS if lcb_imports else "")
    results: list[TestResult] = []
    t0 = time.monotonic()
    for i, (given, expected) in enumerate(tests):
        res = sb.run(text, stdin=given, limits=limits)
        if res.status == "ok":
            ok = stdout_matches(res.stdout, expected)
            status, error = ("passed" if ok else "wrong_answer"), None
        else:
            ok, status, error = False, res.status, _error_text(res)
        results.append(TestResult(i, ok, status, truncate(given), truncate(expected),
                                  truncate(res.stdout), error, res.wall_s))
        if not ok and stop_at_first_failure:
            break
    return _finish(results, len(tests), "stdio", limits, time.monotonic() - t0)


_RECORD_KINDS = ("ready", "value", "error", "timeout", "unserializable", "output_limit")
_HEADER_CAP = 1 << 16  # the driver's headers are small; anything longer is not one of them


def parse_record(payload: bytes, n_tests: int) -> dict | None:
    """One result record (``<header JSON>\\t<value>``, see sandbox/guest.py) as checked plain
    data, or None when it is malformed in any way: the header is not a small JSON object with an
    integer ``i`` in -1..n_tests-1 and a known ``kind``, ``t`` is not a finite number, ``error``
    not a string, or the value not UTF-8. Total: never raises, whatever the bytes."""
    header, _, value = payload.partition(b"\t")
    if len(header) > _HEADER_CAP:
        return None
    try:
        rec = json.loads(header)
        text = value.decode("utf-8")
    except (ValueError, RecursionError):
        return None
    if not isinstance(rec, dict):
        return None
    i, kind, t, error = rec.get("i"), rec.get("kind"), rec.get("t", 0.0), rec.get("error")
    if type(i) is not int or not -1 <= i < n_tests or not isinstance(kind, str) \
            or kind not in _RECORD_KINDS:
        return None
    if type(t) not in (int, float) or not math.isfinite(t) or (error is not None
                                                                 and not isinstance(error, str)):
        return None
    return {"i": i, "kind": kind, "t": float(t), "error": error, "value": text}


class _CallWatcher:
    """Parent side of the call-based protocol: parses result lines as they arrive, judges each
    against the expected value, and moves the per-test deadline. Any malformed record ends the
    run as a failure of the sample (``violation``)."""

    retain_stdout = False  # results are consumed here; the runner only counts bytes

    def __init__(self, nonce: str, expected: Sequence[Any], per_test_s: float,
                 stop_at_first_failure: bool, stderr_keep: int) -> None:
        self.prefix = nonce.encode() + b" "
        self.expected = expected
        # A right answer's JSON text is at most a few times the expected one's (spacing, 1.0
        # for 1, \\u escapes); longer ones are wrong without being decoded.
        self.max_chars = [8 * len(canonical_json(e)) + 1024 for e in expected]
        self.per_test_s = per_test_s
        self.stop_first = stop_at_first_failure
        self.stderr_keep = stderr_keep
        self.pending = bytearray()
        self.records: list[dict] = []  # one per test, in order, each with "passed"
        self.setup: dict | None = None  # the setup record when setup failed
        self.ready = False
        self.violation: str | None = None
        self.stopped = False  # decided; later lines (e.g. drained after the kill) are ignored
        self.deadline: float | None = time.monotonic() + STARTUP_S + per_test_s + GRACE_S

    def on_start(self, t: float) -> None:
        """The driver started: its setup (compiling the solution) gets one test's time."""
        if not self.ready and not self.records:
            self.deadline = t + self.per_test_s + GRACE_S

    def feed(self, chunk: bytes) -> bool:
        if self.stopped:
            return True
        self.pending += chunk
        while True:
            nl = self.pending.find(b"\n")
            if nl < 0:
                return False
            line = bytes(self.pending[:nl])
            del self.pending[:nl + 1]
            if not line.startswith(self.prefix):
                self.violation = "a line that is not a result record"
            elif not self._take(line[len(self.prefix):]):
                continue
            self.stopped = True
            return True

    def _take(self, payload: bytes) -> bool:
        rec = parse_record(payload, len(self.expected))
        if rec is None:
            self.violation = "malformed result line"
            return True
        index, kind = rec["i"], rec["kind"]
        self.deadline = time.monotonic() + self.per_test_s + GRACE_S
        if index == -1:
            if kind == "ready" and not self.ready:
                self.ready = True
                return False
            if kind in ("error", "timeout") and not self.ready:
                self.setup = rec
            else:
                self.violation = "result lines out of order"
            return True
        if not self.ready or index != len(self.records) or kind == "ready":
            self.violation = "result lines out of order"
            return True
        rec["passed"] = (kind == "value" and len(rec["value"]) <= self.max_chars[index]
                         and json_values_equal(rec["value"], self.expected[index]))
        self.records.append(rec)
        if len(self.records) == len(self.expected):
            self.deadline = None  # all in: the driver exits by itself
            return False
        return (not rec["passed"]) and self.stop_first


_KIND_STATUS = {"error": "runtime_error", "timeout": "timeout", "unserializable": "wrong_answer",
                "output_limit": "output_limit"}


def run_call_tests(
    program: str,
    func_name: str,
    tests: Sequence[tuple[str, str]],
    limits: Limits | None = None,
    *,
    stop_at_first_failure: bool = True,
    lcb_imports: bool = True,
    sandbox: Sandbox | None = None,
) -> HarnessResult:
    """LiveCodeBench call-based tests: each test is (input, output) where input holds one JSON
    argument per line and output one JSON value; the program defines ``class Solution`` with
    method ``func_name`` (or a module-level function of that name). Results are compared as
    canonical JSON in the parent (tuples as lists; numbers by value).
    limits.timeout_s is per test. Raises ValueError for empty or non-JSON tests."""
    if not tests:
        raise ValueError("no tests")
    sb = sandbox if sandbox is not None else default_sandbox()
    limits = limits if limits is not None else Limits()
    args = [parse_call_inputs(given) for given, _ in tests]
    try:
        expected = [json.loads(out) for _, out in tests]
    except json.JSONDecodeError as e:
        raise ValueError(f"expected output is not JSON: {e}") from e
    prelude = LCB_IMPORTS if lcb_imports else ""
    results: list[TestResult] = []
    t0 = time.monotonic()
    start = 0
    while start < len(tests):
        watcher, res = _call_batch(sb, program, prelude, func_name, args[start:],
                                   expected[start:], limits, stop_at_first_failure)
        for k, rec in enumerate(watcher.records):
            i = start + k
            status = "passed" if rec["passed"] else _KIND_STATUS.get(rec["kind"], "wrong_answer")
            got: str | None = rec["value"] if rec["kind"] == "value" else None
            if rec["kind"] == "unserializable":
                got = f"<not JSON-serializable: {rec['error']}>"
            results.append(TestResult(
                i, rec["passed"], status, truncate(tests[i][0]), truncate(canonical_json(
                    expected[i])), truncate(got) if got is not None else None,
                truncate(error_tail(rec["error"] or "")) if rec["kind"] == "error" else None,
                rec["t"]))
        failed = any(not r["passed"] for r in watcher.records)
        if (failed and stop_at_first_failure) or watcher.violation:
            if watcher.violation:  # a forged or malformed record fails the whole sample
                results.append(_violation_result(watcher, tests, expected, start, res))
            break
        done = start + len(watcher.records)
        if done == len(tests):
            break
        # The process stopped before test `done` reported: setup failed, or the test hung,
        # crashed the process, or broke the protocol.
        status, error = _batch_failure(watcher, res)
        results.append(TestResult(done, False, status, truncate(tests[done][0]),
                                  truncate(canonical_json(expected[done])), None, error,
                                  res.wall_s))
        if stop_at_first_failure or watcher.setup is not None:
            break
        start = done + 1
    return _finish(results, len(tests), "call", limits, time.monotonic() - t0)


def _call_batch(sb: Sandbox, source: str, prelude: str, func_name: str, args: list,
                expected: list, limits: Limits, stop_first: bool) -> tuple[_CallWatcher, Result]:
    nonce = secrets.token_hex(16)
    spec = {"mode": "call", "nonce": nonce, "source": source, "func_name": func_name,
            "inputs": args, "timeout": limits.timeout_s, "prelude": prelude,
            "line_cap": limits.output_bytes}
    watcher = _CallWatcher(nonce, expected, limits.timeout_s, stop_first, limits.output_bytes)
    n = len(args)
    # Each test keeps its own clock (the watcher's deadline); the process as a whole gets the
    # sum, and CPU and output budgets to match (stderr is kept to one test's cap, its tail).
    total = STARTUP_S + (n + 1) * (limits.timeout_s + GRACE_S)
    batch = replace(limits, timeout_s=total, cpu_s=total + 1,
                    output_bytes=limits.output_bytes * (n + 1))
    res = sb.run(guest_program(sb.setup.python_version), stdin=spec_bytes(spec), limits=batch, watcher=watcher)
    return watcher, res


def _violation_result(watcher: _CallWatcher, tests: Sequence[tuple[str, str]],
                      expected: list, start: int, res: Result) -> TestResult:
    i = min(start + len(watcher.records), len(tests) - 1)
    return TestResult(i, False, "runtime_error", truncate(tests[i][0]),
                      truncate(canonical_json(expected[i])), None,
                      f"the program interfered with the test driver ({watcher.violation})",
                      res.wall_s)


def _batch_failure(watcher: _CallWatcher, res: Result) -> tuple[str, str | None]:
    if watcher.violation:
        return "runtime_error", f"the program interfered with the test driver ({watcher.violation})"
    if watcher.setup is not None:
        kind = watcher.setup.get("kind")
        err = watcher.setup.get("error")
        return _KIND_STATUS.get(kind, "runtime_error"), truncate(error_tail(err)) if err else None
    if res.status in ("ok", "runtime_error"):
        return "runtime_error", _error_text(res) or "the program exited during this test"
    return res.status, _error_text(res)


def run_assert_tests(
    program: str,
    test_code: str,
    entry_point: str,
    limits: Limits | None = None,
    *,
    prompt: str | None = None,
    sandbox: Sandbox | None = None,
) -> HarnessResult:
    """HumanEval style: ``test_code`` defines ``check(candidate)``; passed only if
    ``check(entry_point)`` returns, which the driver proves by echoing a nonce, and the process
    exits 0. The tests run in a driver process the program cannot touch (sandbox/guest.py):
    ``program`` (prompt + completion) runs in a second process, and every call of the entry
    point, or of another of its top-level functions, crosses a pipe as plain data.
    prompt: the problem's trusted prompt, executed in the driver so that the tests' helpers
    (HumanEval/32's ``poly``) are the problem's own rather than the program's."""
    sb = sandbox if sandbox is not None else default_sandbox()
    limits = limits if limits is not None else Limits()
    nonce = secrets.token_hex(16)
    spec = {"mode": "assert", "source": program, "test": test_code,
            "entry_point": entry_point, "prompt": prompt, "line_cap": limits.output_bytes}
    res = sb.run(guest_program(sb.setup.python_version), stdin=spec_bytes(spec) + (nonce + "\n").encode(), limits=limits)
    printed = nonce in res.stdout.splitlines()
    if res.status == "ok" and printed:
        status, error = "passed", None
    elif res.status == "ok":
        status, error = "exited_early", _error_text(res)
    else:
        status, error = res.status, _error_text(res)
    own = "".join(ln for ln in res.stdout.splitlines(True) if ln.rstrip("\n") != nonce)
    test = TestResult(0, status == "passed", status, None, None, truncate(own) or None, error,
                      res.wall_s)
    return _finish([test], 1, "assert", limits, res.wall_s)
