"""Competition math: ``aime24``, ``aime25``, ``hmmt25`` and ``deepmath``.

Data (``--data``: files, a comma list, a glob or ``hf:NAME[:CONFIG]:SPLIT``, see
``tasks/data_files.py`` and docs/tasks.md for where to get them):

* ``aime24`` / ``aime25``: ``problem`` (or ``question``) and ``answer`` (an integer, possibly
  as a string with leading zeros); without ``answer``, the last ``\\boxed{}`` of ``solution``.
  Ids from ``id`` / ``ID`` / ``problem_idx`` when present, else ``<task>-<row>``.
* ``hmmt25`` (MathArena's ``hmmt_feb_2025``): ``problem_idx, problem, answer`` (LaTeX),
  ``problem_type``.
* ``deepmath`` (DeepMath-103K): ``question, final_answer, difficulty, topic``; ids
  ``deepmath-<row>`` (row = position among all records of the data, so a filtered set keeps
  its ids and shards do not collide). ``min_difficulty`` keeps rows with
  ``difficulty >= min_difficulty`` (the paper trained on 6+).

Parquet files and datasets read only these columns (DeepMath's long solution columns stay on
disk).

Prompt: ``{problem}\\n\\nPlease reason step by step, and put your final answer within \\boxed{}.``,
except that a problem whose last line already asks for ``\\boxed`` (published copies that end
with that very sentence) is used as it is, so the instruction is not given twice.

Verdict (``verifiers.math_answer.verify_answer``): the last ``\\boxed{}`` of the response.
AIME compares integers (``007`` == ``7``); a gold answer that is not an integer makes the
problem ``invalid_test``. HMMT and DeepMath accept equal numbers at once and otherwise ask
``math-verify`` in a worker process that is killed when its wall clock (``timeout_s``, 10 s by
default) runs out (verdict ``timeout``, the run goes on).

A record that does not fit (no problem text, no answer, a difficulty that is not a number) is
kept as an ``invalid_test`` problem carrying the reason; a duplicate id stops the load.
"""

from __future__ import annotations

from collections.abc import Sequence

from mopd_eval.errors import InputError
from mopd_eval.tasks.base import Problem
from mopd_eval.tasks.data_files import (
    Record,
    build_problems,
    invalid_problem,
    invalid_verdict,
    read_records,
    require_data,
)
from mopd_eval.verdict import Verdict
from mopd_eval.verifiers.math_answer import MathEquivalence, last_boxed, verify_answer

PROMPT = "{problem}\n\nPlease reason step by step, and put your final answer within \\boxed{{}}."


def asks_for_boxed(problem: str) -> bool:
    """Whether the problem's last line already tells the model to answer in ``\\boxed{}``."""
    lines = problem.strip().splitlines()
    return bool(lines) and "\\boxed" in lines[-1]


def math_prompt(problem: str) -> str:
    """The user turn for ``problem`` (module docstring rule)."""
    text = problem.strip()
    return text if asks_for_boxed(text) else PROMPT.format(problem=text)


class MathFileTask:
    """A math task read from ``--data``; subclasses set the fields and the answer mode."""

    name = "math"
    mode = "math"  # "aime": integer answers; "math": math-verify
    text_fields: tuple[str, ...] = ("problem", "question")
    answer_fields: tuple[str, ...] = ("answer",)
    id_fields: tuple[str, ...] = ("id", "ID", "problem_idx")
    extra_fields: tuple[str, ...] = ()  # other columns the task reads
    source_hint = ""

    def __init__(self, timeout_s: float = 10.0, checker: MathEquivalence | None = None) -> None:
        # A checker passed in is shared (several tasks, one worker) and not closed by close().
        self.timeout_s = timeout_s
        self._checker = checker
        self._own_checker = checker is None

    @property
    def columns(self) -> tuple[str, ...]:
        return self.text_fields + self.answer_fields + self.id_fields + self.extra_fields

    def keep(self, rec: Record) -> bool:
        return True

    def answer(self, rec: Record) -> str:
        value = rec.require(*self.answer_fields)
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise rec.error(f"expected a string or number, got {type(value).__name__}", field=self.answer_fields[0])
        return str(value)

    def problem_id(self, rec: Record) -> str:
        value = rec.get(*self.id_fields)
        return f"{self.name}-{rec.position}" if value is None else str(value)

    def meta(self, rec: Record) -> dict:
        return {}

    def _problems(self, rec: Record) -> list[Problem]:
        if not self.keep(rec):
            return []
        text = rec.text(*self.text_fields)
        return [Problem(self.problem_id(rec), math_prompt(text), self.answer(rec), self.meta(rec))]

    def _invalid(self, rec: Record, err: InputError) -> list[Problem]:
        text = rec.get(*self.text_fields, default="")
        return [invalid_problem(self.problem_id(rec), str(err), math_prompt(text) if isinstance(text, str) else "")]

    def load(self, data: str | None = None, *, limit: int | None = None, seed: int = 0) -> list[Problem]:
        """Problems of ``data`` in order (``seed`` unused: a fixed set)."""
        data = require_data(data, self.name, self.source_hint)
        records = read_records(data, columns=self.columns)
        out = build_problems(records, self._problems, self._invalid, id_field=(self.id_fields or ("id",))[0])
        return out[:limit] if limit else out

    def messages(self, problem: Problem) -> list[dict]:
        return [{"role": "user", "content": problem.question}]

    def verify(self, problems: Sequence[Problem], responses: Sequence[str], *, progress: bool = False) -> list[Verdict]:
        if self.mode == "math" and self._checker is None:
            self._checker = MathEquivalence(timeout_s=self.timeout_s)
            self._own_checker = True
        return [invalid_verdict(p) or verify_answer(r, str(p.ground_truth), mode=self.mode, checker=self._checker)
                for p, r in zip(problems, responses, strict=True)]

    def close(self) -> None:
        if self._checker is not None and self._own_checker:
            self._checker.close()
            self._checker = None


class _AIME(MathFileTask):
    mode = "aime"
    extra_fields = ("solution",)
    source_hint = "e.g. HuggingFaceH4/aime_2024 or math-ai/aime25"

    def answer(self, rec: Record) -> str:
        if rec.get("answer", "Answer") is not None:
            return super().answer(rec)
        solution = rec.get("solution")
        boxed = last_boxed(solution) if isinstance(solution, str) else None
        if boxed is None:
            raise rec.error("missing (and no \\boxed{} answer in 'solution')", field="answer")
        return boxed


class AIME24Task(_AIME):
    name = "aime24"
    answer_fields = ("answer", "Answer")


class AIME25Task(_AIME):
    name = "aime25"
    answer_fields = ("answer", "Answer")


class HMMT25Task(MathFileTask):
    name = "hmmt25"
    extra_fields = ("problem_type",)
    source_hint = "MathArena/hmmt_feb_2025"

    def meta(self, rec: Record) -> dict:
        return {"problem_type": rec.get("problem_type")}


class DeepMathTask(MathFileTask):
    name = "deepmath"
    text_fields = ("question", "problem")
    answer_fields = ("final_answer", "answer")
    id_fields = ()
    extra_fields = ("difficulty", "topic")
    source_hint = "zwhe99/DeepMath-103K, its parquet shards as a glob"

    def __init__(self, timeout_s: float = 10.0, min_difficulty: float | None = None,
                 checker: MathEquivalence | None = None) -> None:
        super().__init__(timeout_s, checker)
        self.min_difficulty = min_difficulty

    def _difficulty(self, rec: Record) -> float | None:
        d = rec.get("difficulty")
        if d is None:
            return None
        try:
            return float(d)
        except (TypeError, ValueError):
            raise rec.error(f"expected a number, got {d!r:.40}", field="difficulty") from None

    def keep(self, rec: Record) -> bool:
        if self.min_difficulty is None:
            return True
        d = self._difficulty(rec)
        if d is None:
            raise rec.error("missing (needed by min_difficulty)", field="difficulty")
        return d >= self.min_difficulty

    def meta(self, rec: Record) -> dict:
        return {"difficulty": self._difficulty(rec), "topic": rec.get("topic")}
