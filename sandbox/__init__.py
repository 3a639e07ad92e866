"""Isolated execution of untrusted Python programs, and the test harnesses built on it.

>>> from sandbox import run, Limits
>>> run("print(input()[::-1])", stdin="abc", limits=Limits(timeout_s=2)).stdout
'cba\\n'

Depends on nothing else of mopd-eval. See sandbox/README.md for the isolation layers.
"""

from sandbox.config import Limits, SandboxConfig
from sandbox.harness import (
    HarnessResult,
    TestResult,
    run_assert_tests,
    run_call_tests,
    run_stdio_tests,
)
from sandbox.pool import map_run
from sandbox.result import STATUSES, Result
from sandbox.runner import Sandbox, default_sandbox, run

__all__ = [
    "STATUSES",
    "HarnessResult",
    "Limits",
    "Result",
    "Sandbox",
    "SandboxConfig",
    "TestResult",
    "default_sandbox",
    "map_run",
    "run",
    "run_assert_tests",
    "run_call_tests",
    "run_stdio_tests",
]
