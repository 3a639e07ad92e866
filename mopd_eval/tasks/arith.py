"""``arith``: seeded arithmetic questions of graded difficulty, sized to a 135M-parameter model.

SmolLM2-135M almost never solves HumanEval but answers small sums 10-60% of the time, so this
family gives groups with both successes and failures, which the signal study needs.

Levels (operands drawn uniformly; each level has its own seeded stream, so asking for more
problems per level keeps the earlier ones):
  1. a + b,      a, b in 1..9
  2. a * b,      a, b in 2..9
  3. a - b,      a in 2..20, b in 1..a-1
  4. a + b,      a in 10..29, b in 2..9
  5. a + b + c,  a, b, c in 1..9

Data: generated (no ``--data``), or ``--data`` (files, a comma list, a glob or
``hf:NAME[:CONFIG]:SPLIT``; see ``tasks/data_files.py``) with records ``{problem_id, question,
answer}``; a record missing one of them becomes an ``invalid_test`` problem saying which.

Prompt: ``What is {expression}?`` (asking a 135M model for ``\\boxed{}`` makes it write an empty
box more often than an answer). Graded by the math verifier: the last ``\\boxed{}``, else the last
number in the response.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from mopd_eval.errors import InputError
from mopd_eval.tasks.base import Problem
from mopd_eval.tasks.data_files import (
    Record,
    build_problems,
    invalid_problem,
    invalid_verdict,
    read_records,
)
from mopd_eval.verdict import Verdict
from mopd_eval.verifiers.math_answer import verify_answer

PROMPT = "What is {expression}?"
COLUMNS = ("problem_id", "question", "answer")
LEVELS = (1, 2, 3, 4, 5)


def make_problem(level: int, rng: random.Random) -> tuple[str, int]:
    """One (expression, answer) at ``level`` drawn from ``rng``."""
    if level == 1:
        a, b = rng.randint(1, 9), rng.randint(1, 9)
        return f"{a} + {b}", a + b
    if level == 2:
        a, b = rng.randint(2, 9), rng.randint(2, 9)
        return f"{a} * {b}", a * b
    if level == 3:
        a = rng.randint(2, 20)
        b = rng.randint(1, a - 1)
        return f"{a} - {b}", a - b
    if level == 4:
        a, b = rng.randint(10, 29), rng.randint(2, 9)
        return f"{a} + {b}", a + b
    if level == 5:
        a, b, c = rng.randint(1, 9), rng.randint(1, 9), rng.randint(1, 9)
        return f"{a} + {b} + {c}", a + b + c
    raise ValueError(f"unknown arith level {level}")


def generate(per_level: int, seed: int = 0, levels: Sequence[int] = LEVELS) -> list[Problem]:
    """``per_level`` problems per level, interleaved by level, no expression repeated in a level.

    Level ``L`` draws from ``random.Random(f"arith-{seed}-{L}")``: the first k problems of a
    level are the same whatever ``per_level`` or the other levels are.
    """
    by_level: list[list[Problem]] = []
    for level in levels:
        rng = random.Random(f"arith-{seed}-{level}")
        seen: set[str] = set()
        out: list[Problem] = []
        while len(out) < per_level:
            expr, ans = make_problem(level, rng)
            if expr in seen:
                continue
            seen.add(expr)
            out.append(
                Problem(f"arith-{seed}-L{level}-{len(out):03d}", PROMPT.format(expression=expr), str(ans), {"level": level, "expression": expr})
            )
        by_level.append(out)
    return [p for row in zip(*by_level, strict=True) for p in row]


def _file_problem(rec: Record) -> list[Problem]:
    values = [rec.require(f) for f in COLUMNS]
    return [Problem(*(str(v) for v in values), {})]


def _invalid(rec: Record, err: InputError) -> list[Problem]:
    return [invalid_problem(str(rec.get("problem_id", default=f"arith-file-{rec.position}")), str(err),
                            str(rec.get("question", default="")))]


class ArithTask:
    name = "arith"

    def __init__(self, per_level: int = 20, levels: Sequence[int] = LEVELS) -> None:
        bad = [lv for lv in levels if lv not in LEVELS]
        if bad:
            raise InputError(f"unknown arith levels {bad}; known: {list(LEVELS)}", field="--levels")
        self.per_level = per_level
        self.levels = tuple(levels)

    def load(self, data: str | None = None, *, limit: int | None = None, seed: int = 0) -> list[Problem]:
        """Generated problems (``data`` None) or the records ``{problem_id, question, answer}`` of ``data``."""
        if data is None:
            problems = generate(self.per_level, seed, self.levels)
        else:
            problems = build_problems(read_records(data, columns=COLUMNS), _file_problem, _invalid, id_field="problem_id")
        return problems[:limit] if limit else problems

    def messages(self, problem: Problem) -> list[dict]:
        return [{"role": "user", "content": problem.question}]

    def verify(self, problems: Sequence[Problem], responses: Sequence[str], *, progress: bool = False) -> list[Verdict]:
        # Integer answers compare exactly, no math-verify worker needed.
        return [
            invalid_verdict(p) or verify_answer(r, str(p.ground_truth), mode="aime", fallback_last_number=True)
            for p, r in zip(problems, responses, strict=True)
        ]

    def close(self) -> None:
        pass
