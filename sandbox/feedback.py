"""The feedback text a teacher sees (SDPO / MOPD): which test failed, on what input, expected
versus got, or the last lines of the error, every part truncated."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sandbox.harness import TestResult

FIELD_CHARS = 600  # per input / expected / got / error block
ERROR_LINES = 12
_TAIL_CHARS = 1 << 16

_PATH_RE = re.compile(r'File "[^"\n]*/(main\.py|solution\.py)"')
_BOOTSTRAP_FRAME_RE = re.compile(r'  File "main\.py", line \d+, in <module>\n    exec\(__mopd_code\)\n')


def truncate(text: str, limit: int = FIELD_CHARS) -> str:
    """``text`` if it fits, else its head and tail around a note of how much was cut.

    >>> truncate("abcdefghij", 6)
    'abc\\n... (4 characters omitted) ...\\nhij'
    """
    if limit <= 0 or len(text) <= limit:
        return text
    head = limit // 2
    tail = limit - head
    return f"{text[:head]}\n... ({len(text) - head - tail} characters omitted) ...\n{text[-tail:]}"


def error_tail(stderr: str, max_lines: int = ERROR_LINES) -> str:
    """The end of a traceback, with sandbox paths and the harness's own frame removed so the
    same error reads the same on every machine."""
    # Only the end matters, and a flood of stderr must not be split into lines whole.
    text = _PATH_RE.sub(lambda m: f'File "{m.group(1)}"', stderr[-_TAIL_CHARS:])
    text = _BOOTSTRAP_FRAME_RE.sub("", text)
    lines = text.rstrip().splitlines()
    if len(lines) > max_lines:
        lines = [f"... ({len(lines) - max_lines} lines omitted)"] + lines[-max_lines:]
    return "\n".join(lines)


_DESCRIPTIONS = {
    "wrong_answer": "wrong answer",
    "runtime_error": "runtime error",
    "timeout": "time limit exceeded",
    "memory_limit": "memory limit exceeded",
    "output_limit": "output limit exceeded",
    "killed": "the program was killed by a signal",
    "sandbox_error": "the program could not be run (sandbox error, not the program's fault)",
    "exited_early": "the program exited before the tests finished",
}


def describe(status: str, timeout_s: float | None = None, memory_mb: int | None = None) -> str:
    text = _DESCRIPTIONS.get(status, status.replace("_", " "))
    if status == "timeout" and timeout_s is not None:
        text += f" ({timeout_s:g} s)"
    if status == "memory_limit" and memory_mb is not None:
        text += f" ({memory_mb} MiB)"
    return text


def render(
    tests: Sequence[TestResult],
    n_tests: int,
    *,
    style: str,
    timeout_s: float | None = None,
    memory_mb: int | None = None,
) -> str:
    """Feedback for a harness run. style: ``stdio``, ``call`` or ``assert``.

    All passed: a one-line confirmation. Otherwise the first failing test in full, then (with
    partial credit) how many others failed.
    """
    failed = [t for t in tests if not t.passed]
    n_passed = sum(t.passed for t in tests)
    if not failed:
        return "All tests passed." if style == "assert" else f"All {n_tests} tests passed."
    first = failed[0]
    what = describe(first.status, timeout_s, memory_mb)
    if style == "assert":
        lines = [f"The tests failed: {what}."]
    else:
        lines = [f"Test {first.index + 1} of {n_tests} failed: {what}."]
    if style != "assert" and first.input is not None:
        lines += ["Input:", first.input.rstrip("\n")]
    if first.status == "wrong_answer":
        if first.expected is not None:
            lines += ["Expected output:" if style == "stdio" else "Expected:",
                      first.expected.rstrip("\n")]
        if first.got is not None:
            lines += ["Your output:" if style == "stdio" else "Got:", first.got.rstrip("\n")]
    if first.error:
        lines += ["Error:", first.error]
    if len(failed) > 1:
        lines.append(f"{len(failed)} of {n_tests} tests failed ({n_passed} passed).")
    return "\n".join(lines)
