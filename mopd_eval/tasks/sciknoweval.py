"""``sciknoweval``: SciKnowEval level-3 multiple choice, answered as ``<answer>X</answer>``.

Data: local SciKnowEval files (JSONL, JSON list or parquet; one per domain or all together)
with ``question, choices {text: [...], label: ["A", ...]}, answerKey, type, domain,
details {level, task, subtask}``. Kept: ``details.level`` in ``levels`` (default L3) and
``type`` starting with ``mcq`` (``mcq-4-choices``, ``mcq-2-choices``, ...). Ids:
``<domain>-<row>`` (row in the file, counted before filtering, so ids are stable).

Prompt::

    {question}

    A. {choice A}
    B. {choice B}
    ...

    Answer with the letter of the correct option between <answer> and </answer>, for example
    <answer>A</answer>.

Verdict: the content of the last ``<answer>...</answer>`` (whitespace stripped) must equal
``answerKey`` exactly. No tag: ``no_answer``; a gold key that is not one of the labels makes
the problem ``invalid_test``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from mopd_eval.errors import InputError
from mopd_eval.tasks.base import Problem
from mopd_eval.tasks.data_files import Record, read_records
from mopd_eval.verdict import Verdict

INSTRUCTION = ("Answer with the letter of the correct option between <answer> and </answer>, "
               "for example <answer>A</answer>.")
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
    if not (isinstance(texts, list) and isinstance(labels, list) and len(texts) == len(labels) and texts):
        raise rec.error("expected equally long non-empty lists 'text' and 'label'", field="choices")
    return [str(t) for t in texts], [str(label) for label in labels]


def build_prompt(question: str, texts: Sequence[str], labels: Sequence[str]) -> str:
    options = "\n".join(f"{label}. {text}" for label, text in zip(labels, texts, strict=True))
    return f"{question.strip()}\n\n{options}\n\n{INSTRUCTION}"


class SciKnowEvalTask:
    name = "sciknoweval"

    def __init__(self, levels: Sequence[str] = ("L3",)) -> None:
        self.levels = tuple(levels)

    def load(self, path: str | None = None, *, limit: int | None = None, seed: int = 0) -> list[Problem]:
        """Level-``levels`` MCQ problems of ``path`` in file order (``seed`` unused)."""
        if path is None:
            raise InputError("sciknoweval needs a local data file: --data FILE (see docs/tasks.md)", field="--data")
        out: list[Problem] = []
        for rec in read_records(path):
            details = rec.get("details", default={})
            if not isinstance(details, dict):
                raise rec.error(f"expected an object, got {type(details).__name__}", field="details")
            kind = rec.require("type")
            if details.get("level") not in self.levels or not str(kind).startswith("mcq"):
                continue
            question = rec.require("question")
            if not isinstance(question, str) or not question.strip():
                raise rec.error("expected a non-empty string", field="question")
            texts, labels = _choices(rec)
            key = str(rec.require("answerKey")).strip()
            domain = rec.get("domain", default="sciknoweval")
            meta = {"labels": labels, "domain": domain, "task": details.get("task"),
                    "subtask": details.get("subtask"), "type": kind}
            if key not in labels:
                meta["invalid"] = f"answerKey {key!r} is not one of the labels {labels}"
            out.append(Problem(f"{domain}-{rec.index}", build_prompt(question, texts, labels), key, meta))
        return out[:limit] if limit else out

    def messages(self, problem: Problem) -> list[dict]:
        return [{"role": "user", "content": problem.question}]

    def verify(self, problems: Sequence[Problem], responses: Sequence[str], *, progress: bool = False) -> list[Verdict]:
        return [self._one(p, r) for p, r in zip(problems, responses, strict=True)]

    def _one(self, p: Problem, response: str) -> Verdict:
        if "invalid" in p.meta:
            return Verdict.failed("invalid_test", p.meta["invalid"])
        got = last_answer_tag(response)
        if got is None:
            return Verdict.failed("no_answer", "No final answer found: put the letter of your choice in <answer></answer>.")
        if got == p.ground_truth:
            return Verdict.correct()
        return Verdict.failed("wrong", f"Your answer {got!r} is incorrect.")

    def close(self) -> None:
        pass
