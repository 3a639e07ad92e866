"""Competition math from local files: ``aime24``, ``aime25``, ``hmmt25`` and ``deepmath``.

Data (JSONL, JSON list or parquet; no hub access, see docs/tasks.md for where to get them):

* ``aime24`` / ``aime25``: ``problem`` (or ``question``) and ``answer`` (an integer, possibly
  as a string with leading zeros); without ``answer``, the last ``\\boxed{}`` of ``solution``.
  Ids from ``id`` / ``ID`` / ``problem_idx`` when present, else ``<task>-<row>``.
* ``hmmt25`` (MathArena's ``hmmt_feb_2025``): ``problem_idx, problem, answer`` (LaTeX),
  ``problem_type``.
* ``deepmath`` (DeepMath-103K): ``question, final_answer, difficulty, topic``; ids
  ``deepmath-<row>`` (row in the file, so a filtered set keeps its ids).
  ``min_difficulty`` keeps rows with ``difficulty >= min_difficulty`` (the paper trained on 6+).

Prompt: ``{problem}\\n\\nPlease reason step by step, and put your final answer within \\boxed{}.``

Verdict (``verifiers.math_answer.verify_answer``): the last ``\\boxed{}`` of the response.
AIME compares integers (``007`` == ``7``); a gold answer that is not an integer makes the
problem ``invalid_test``. HMMT and DeepMath accept equal numbers at once and otherwise ask
``math-verify`` in a worker process that is killed when its wall clock (``timeout_s``, 10 s by
default) runs out (verdict ``timeout``, the run goes on).
"""

from __future__ import annotations

from collections.abc import Sequence

from mopd_eval.errors import InputError
from mopd_eval.tasks.base import Problem
from mopd_eval.tasks.data_files import Record, read_records
from mopd_eval.verdict import Verdict
from mopd_eval.verifiers.math_answer import MathEquivalence, last_boxed, verify_answer

PROMPT = "{problem}\n\nPlease reason step by step, and put your final answer within \\boxed{{}}."


class MathFileTask:
    """A math task read from a local file; subclasses set the fields and the answer mode."""

    name = "math"
    mode = "math"  # "aime": integer answers; "math": math-verify
    text_fields: tuple[str, ...] = ("problem", "question")
    answer_fields: tuple[str, ...] = ("answer",)
    id_fields: tuple[str, ...] = ("id", "ID", "problem_idx")
    source_hint = ""

    def __init__(self, timeout_s: float = 10.0, checker: MathEquivalence | None = None) -> None:
        # A checker passed in is shared (several tasks, one worker) and not closed by close().
        self.timeout_s = timeout_s
        self._checker = checker
        self._own_checker = checker is None

    def keep(self, rec: Record) -> bool:
        return True

    def answer(self, rec: Record) -> str:
        value = rec.require(*self.answer_fields)
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise rec.error(f"expected a string or number, got {type(value).__name__}", field=self.answer_fields[0])
        return str(value)

    def problem_id(self, rec: Record) -> str:
        value = rec.get(*self.id_fields)
        return f"{self.name}-{rec.index}" if value is None else str(value)

    def meta(self, rec: Record) -> dict:
        return {}

    def load(self, path: str | None = None, *, limit: int | None = None, seed: int = 0) -> list[Problem]:
        """Problems of ``path`` in file order (``seed`` unused: a fixed set)."""
        if path is None:
            raise InputError(f"{self.name} needs a local data file: --data FILE ({self.source_hint})", field="--data")
        out: list[Problem] = []
        seen: set[str] = set()
        for rec in read_records(path):
            text = rec.require(*self.text_fields)
            if not isinstance(text, str) or not text.strip():
                raise rec.error("expected a non-empty string", field=self.text_fields[0])
            gold = self.answer(rec)
            if not self.keep(rec):
                continue
            pid = self.problem_id(rec)
            if pid in seen:
                raise rec.error(f"duplicate problem id {pid!r}", field=self.id_fields[0])
            seen.add(pid)
            out.append(Problem(pid, PROMPT.format(problem=text.strip()), gold, self.meta(rec)))
        return out[:limit] if limit else out

    def messages(self, problem: Problem) -> list[dict]:
        return [{"role": "user", "content": problem.question}]

    def verify(self, problems: Sequence[Problem], responses: Sequence[str], *, progress: bool = False) -> list[Verdict]:
        if self.mode == "math" and self._checker is None:
            self._checker = MathEquivalence(timeout_s=self.timeout_s)
            self._own_checker = True
        return [verify_answer(r, str(p.ground_truth), mode=self.mode, checker=self._checker)
                for p, r in zip(problems, responses, strict=True)]

    def close(self) -> None:
        if self._checker is not None and self._own_checker:
            self._checker.close()
            self._checker = None


class _AIME(MathFileTask):
    mode = "aime"
    source_hint = "e.g. HuggingFaceH4/aime_2024 or math-ai/aime25 exported to JSONL"

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
    source_hint = "MathArena/hmmt_feb_2025 exported to JSONL"

    def meta(self, rec: Record) -> dict:
        return {"problem_type": rec.get("problem_type")}


class DeepMathTask(MathFileTask):
    name = "deepmath"
    text_fields = ("question", "problem")
    answer_fields = ("final_answer", "answer")
    id_fields = ()
    source_hint = "zwhe99/DeepMath-103K exported to JSONL"

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
            raise rec.error("missing (needed by --min-difficulty)", field="difficulty")
        return d >= self.min_difficulty

    def meta(self, rec: Record) -> dict:
        return {"difficulty": self._difficulty(rec), "topic": rec.get("topic")}
