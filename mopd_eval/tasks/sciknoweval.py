"""``sciknoweval``: SciKnowEval level-3 multiple choice, answered as ``<answer>X</answer>``.

Data (``--data``: files, a comma list, a glob or ``hf:NAME[:CONFIG]:SPLIT``; see
``tasks/data_files.py``): SciKnowEval records with ``question, choices {text: [...], label:
["A", ...]}, answerKey, type, domain, details {level, task, subtask}``. Kept: ``details.level``
in ``levels`` (default L3) and ``type`` starting with ``mcq`` (``mcq-4-choices``,
``mcq-2-choices``, ...). Ids: ``<domain>-<row>`` (row = position among all records of the data,
counted before filtering, so ids are stable and shards do not collide).

Prompt::

    {question}

    A. {choice A}
    B. {choice B}
    ...

    Answer with the letter of the correct option between <answer> and </answer>, for example
    <answer>A</answer>.

Verdict: the content of the last ``<answer>...</answer>`` (whitespace stripped) must equal
``answerKey`` exactly. No tag: ``no_answer``.

A record that does not fit (choices with 5 texts and 4 labels, a missing question, an
``answerKey`` that is not one of the labels, ``details`` or ``type`` unreadable so the level
filter cannot be applied) is kept as an ``invalid_test`` problem carrying the reason: the run
goes on, the bench leaves it out of the metrics and counts it.
"""

from __future__ import annotations

import re
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

INSTRUCTION = ("Answer with the letter of the correct option between <answer> and </answer>, "
               "for example <answer>A</answer>.")
COLUMNS = ("question", "choices", "answerKey", "type", "domain", "details")
_ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.S | re.I)


def last_answer_tag(text: str) -> str | None:
    """Stripped content of the last ``<answer>...</answer>`` (tags case-insensitive), or None."""
    found = _ANSWER_RE.findall(text)
    return found[-1].strip() if found else None


def _choices(rec: Record) -> tuple[list[str], list[str]]:
    choices = rec.require("choices")
    if not isinstance(choices, dict):
        raise rec.error(f"expected an object {{text, label}}, got {type(choices).__name__}", field="choices")
    texts, labels = choices.get("text"), choices.get("label")
    if not (isinstance(texts, list) and isinstance(labels, list) and texts):
        raise rec.error("expected non-empty lists 'text' and 'label'", field="choices")
    if len(texts) != len(labels):
        raise rec.error(f"{len(texts)} choice texts but {len(labels)} labels", field="choices")
    return [str(t) for t in texts], [str(label) for label in labels]


def build_prompt(question: str, texts: Sequence[str], labels: Sequence[str]) -> str:
    options = "\n".join(f"{label}. {text}" for label, text in zip(labels, texts, strict=True))
    return f"{question.strip()}\n\n{options}\n\n{INSTRUCTION}"


class SciKnowEvalTask:
    name = "sciknoweval"

    def __init__(self, levels: Sequence[str] = ("L3",)) -> None:
        self.levels = tuple(levels)

    def _wanted(self, rec: Record) -> bool:
        details = rec.get("details", default={})
        if not isinstance(details, dict):
            raise rec.error(f"expected an object, got {type(details).__name__}", field="details")
        return details.get("level") in self.levels and str(rec.require("type")).startswith("mcq")

    def _problems(self, rec: Record) -> list[Problem]:
        if not self._wanted(rec):
            return []
        question = rec.text("question")
        texts, labels = _choices(rec)
        key = str(rec.require("answerKey")).strip()
        if key not in labels:
            raise rec.error(f"answerKey {key!r} is not one of the labels {labels}", field="answerKey")
        details = rec.data["details"]
        meta = {"labels": labels, "domain": self._domain(rec), "task": details.get("task"),
                "subtask": details.get("subtask"), "type": rec.data["type"]}
        return [Problem(self._id(rec), build_prompt(question, texts, labels), key, meta)]

    def _domain(self, rec: Record) -> str:
        return str(rec.get("domain", default="sciknoweval"))

    def _id(self, rec: Record) -> str:
        return f"{self._domain(rec)}-{rec.position}"

    def _invalid(self, rec: Record, err: InputError) -> list[Problem]:
        question = rec.get("question", default="")
        return [invalid_problem(self._id(rec), str(err), question if isinstance(question, str) else "",
                                {"domain": self._domain(rec)})]

    def load(self, data: str | None = None, *, limit: int | None = None, seed: int = 0) -> list[Problem]:
        """Level-``levels`` MCQ problems of ``data`` in order (``seed`` unused)."""
        data = require_data(data, self.name, "hicai-zju/SciKnowEval, one file per domain")
        out = build_problems(read_records(data, columns=COLUMNS), self._problems, self._invalid)
        return out[:limit] if limit else out

    def messages(self, problem: Problem) -> list[dict]:
        return [{"role": "user", "content": problem.question}]

    def verify(self, problems: Sequence[Problem], responses: Sequence[str], *, progress: bool = False) -> list[Verdict]:
        return [self._one(p, r) for p, r in zip(problems, responses, strict=True)]

    def _one(self, p: Problem, response: str) -> Verdict:
        invalid = invalid_verdict(p)
        if invalid is not None:
            return invalid
        got = last_answer_tag(response)
        if got is None:
            return Verdict.failed("no_answer", "No final answer found: put the letter of your choice in <answer></answer>.")
        if got == p.ground_truth:
            return Verdict.correct()
        return Verdict.failed("wrong", f"Your answer {got!r} is incorrect.")

    def close(self) -> None:
        pass
