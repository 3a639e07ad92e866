"""What a task is: problems, the student's prompt, and a verifier."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from mopd_eval.verdict import Verdict


@dataclass
class Problem:
    problem_id: str
    question: str  # the user turn the student sees
    ground_truth: Any
    meta: dict = field(default_factory=dict)


class Task(Protocol):
    name: str

    def load(self, path: str | None = None, *, limit: int | None = None, seed: int = 0) -> list[Problem]:
        """The task's problems, in a fixed order (``limit`` keeps the first ones)."""
        ...

    def messages(self, problem: Problem) -> list[dict]:
        """Chat messages of the student's prompt."""
        ...

    def verify(self, problems: Sequence[Problem], responses: Sequence[str], *, progress: bool = False) -> list[Verdict]:
        """One verdict per (problem, response) pair, in order. Never raises for a bad response."""
        ...

    def close(self) -> None:
        """Release worker processes."""
        ...
