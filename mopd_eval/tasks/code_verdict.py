"""Sandbox harness results -> verdicts, shared by the code tasks (HumanEval, LiveCodeBench)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from mopd_eval.verdict import Verdict

if TYPE_CHECKING:
    from sandbox import HarnessResult


def harness_verdict(res: HarnessResult) -> Verdict:
    """Strict success = every test passed; ``partial`` = fraction of tests passed (tests not run
    after a first failure count as failed); status = ``correct`` or the first failing test's."""
    if res.passed:
        return Verdict(1.0, True, 1.0, None, "correct")
    return Verdict(0.0, False, float(res.fraction_passed), res.feedback, res.status)


def run_jobs(jobs: Sequence[Callable[[], Verdict]], *, workers: int | None, progress: bool,
             desc: str) -> list[Verdict]:
    """Run verdict jobs on the sandbox's worker pool (each job's work is a subprocess)."""
    from sandbox import map_run

    return map_run(jobs, workers, progress=progress, desc=desc)
