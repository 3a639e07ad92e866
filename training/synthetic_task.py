"""A synthetic task for checking that a training setup learns: reward 1 when the response starts
with a given string.

Use it as ``task: training.synthetic_task:StartsWithTask`` with ``task_kwargs: {target: "yes"}``.
Any model can reach reward 1 by emitting one fixed prefix, so a run whose reward does not rise
within a few steps points at the trainer, not at the task. Failed rollouts get the feedback
``The response must start with '<target>'.``, which is what SDPO's teacher reads.
"""

from __future__ import annotations

from collections.abc import Sequence

from mopd_eval.tasks.base import Problem
from mopd_eval.verdict import Verdict

PROMPTS = ("Say one word.", "Answer briefly.", "Reply now.", "Give a short reply.")


class StartsWithTask:
    name = "starts_with"

    def __init__(self, target: str = "yes", num_problems: int = 16) -> None:
        if not target:
            raise ValueError("target must be a non-empty string")
        self.target = target
        self.num_problems = int(num_problems)

    def load(self, path: str | None = None, *, limit: int | None = None, seed: int = 0) -> list[Problem]:
        problems = [
            Problem(f"sw-{seed}-{i:03d}", f"{PROMPTS[i % len(PROMPTS)]} #{i}", self.target, {})
            for i in range(self.num_problems)
        ]
        return problems[:limit] if limit else problems

    def messages(self, problem: Problem) -> list[dict]:
        return [{"role": "user", "content": problem.question}]

    def verify(self, problems: Sequence[Problem], responses: Sequence[str], *, progress: bool = False) -> list[Verdict]:
        out = []
        for _p, r in zip(problems, responses, strict=True):
            if r.startswith(self.target):
                out.append(Verdict.correct())
            else:
                out.append(Verdict.failed("wrong", f"The response must start with {self.target!r}."))
        return out

    def close(self) -> None:
        pass
