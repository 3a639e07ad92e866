"""Rollout records: the dataclass, validation, and the JSONL reader and writer.

One rollout a line (docs/formats.md). A *group* is every rollout of one ``problem_id``, in file order.
Ids are kept as strings: a file that mixes ``1`` and ``"1"`` would otherwise split one group in
two, and score files join on them.

``meta["prompt_format"] == "transcript"`` marks a string prompt that is a whole chat transcript
decoded without special tokens (verl's ``input``, the reference's ``candidate_responses.jsonl``),
not a question: such a prompt can only be placed flat (see ``placement_for`` and
docs/formats.md).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mopd_eval.errors import InputError
from mopd_eval.jsonl import iter_jsonl, write_jsonl_atomic

DEFAULT_SUCCESS_THRESHOLD = 1.0
PROMPT_FORMAT = "prompt_format"  # meta key: "transcript" or "chat" on imported records
TRANSCRIPT = "transcript"
PLACEMENTS = ("chat", "flat")


@dataclass
class Rollout:
    problem_id: str
    rollout_id: str
    prompt: str | list[dict]
    response: str
    reward: float
    success: bool
    feedback: str | None = None
    task: str = "unknown"
    ground_truth: Any = None
    meta: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return asdict(self)

    @property
    def prompt_text(self) -> str:
        """The question the rollout answers: the prompt string, or the last user turn of a chat."""
        if isinstance(self.prompt, str):
            return self.prompt
        users = [m["content"] for m in self.prompt if m.get("role") == "user"]
        return users[-1] if users else ""


def _require(obj: dict, name: str, types: tuple[type, ...], path: Path | str, line: int) -> Any:
    if name not in obj:
        raise InputError("missing", path=path, line=line, field=name)
    value = obj[name]
    # bool is an int subclass; a reward of `true` is a mistake worth reporting.
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
        want = " or ".join(t.__name__ for t in types)
        raise InputError(f"expected {want}, got {type(value).__name__} {value!r:.40}", path=path, line=line, field=name)
    return value


def _as_id(obj: dict, name: str, path: Path | str, line: int) -> str:
    value = _require(obj, name, (str, int), path, line)
    if isinstance(value, str) and not value:
        raise InputError("empty id", path=path, line=line, field=name)
    return str(value)


def _check_prompt(prompt: Any, path: Path | str, line: int) -> str | list[dict]:
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list) and prompt and all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
        for m in prompt
    ):
        return prompt
    raise InputError(
        "expected a string or a non-empty list of {role, content} chat messages",
        path=path,
        line=line,
        field="prompt",
    )


def rollout_from_json(
    obj: dict,
    *,
    path: Path | str = "<input>",
    line: int = 0,
    threshold: float = DEFAULT_SUCCESS_THRESHOLD,
) -> Rollout:
    """Validate one decoded JSON object and build a ``Rollout``.

    ``success`` may be omitted; it is then ``reward >= threshold``. ``feedback``, ``task``,
    ``ground_truth`` and ``meta`` are optional. Any other problem raises ``InputError``
    naming ``path``, ``line`` and the field.
    """
    problem_id = _as_id(obj, "problem_id", path, line)
    rollout_id = _as_id(obj, "rollout_id", path, line)
    if "prompt" not in obj:
        raise InputError("missing", path=path, line=line, field="prompt")
    prompt = _check_prompt(obj["prompt"], path, line)
    response = _require(obj, "response", (str,), path, line)
    reward = float(_require(obj, "reward", (int, float), path, line))
    if not math.isfinite(reward):
        raise InputError(f"reward must be finite, got {reward}", path=path, line=line, field="reward")
    if "success" in obj and obj["success"] is not None:
        success = _require(obj, "success", (bool,), path, line)
    else:
        success = reward >= threshold
    feedback = obj.get("feedback")
    if feedback is not None and not isinstance(feedback, str):
        raise InputError(f"expected string or null, got {type(feedback).__name__}", path=path, line=line, field="feedback")
    task = obj.get("task", "unknown")
    if not isinstance(task, str):
        raise InputError(f"expected string, got {type(task).__name__}", path=path, line=line, field="task")
    meta = obj.get("meta") or {}
    if not isinstance(meta, dict):
        raise InputError(f"expected an object, got {type(meta).__name__}", path=path, line=line, field="meta")
    return Rollout(
        problem_id=problem_id,
        rollout_id=rollout_id,
        prompt=prompt,
        response=response,
        reward=reward,
        success=success,
        feedback=feedback,
        task=task,
        ground_truth=obj.get("ground_truth"),
        meta=meta,
    )


def read_rollouts(path: str | Path, *, threshold: float = DEFAULT_SUCCESS_THRESHOLD) -> list[Rollout]:
    """Read and validate a rollout JSONL file.

    Raises ``InputError`` for an empty file, a malformed line, a bad field, or a
    ``(problem_id, rollout_id)`` pair seen twice (self-exclusion needs unique ids).
    """
    rollouts: list[Rollout] = []
    seen: dict[tuple[str, str], int] = {}
    for line, obj in iter_jsonl(path):
        r = rollout_from_json(obj, path=path, line=line, threshold=threshold)
        check_unique_id(r, seen, path, line)
        rollouts.append(r)
    if not rollouts:
        raise InputError("no rollouts (empty file)", path=path)
    return rollouts


def check_unique_id(r: Rollout, seen: dict[tuple[str, str], int], path: Path | str, line: int) -> None:
    """Raise if ``(problem_id, rollout_id)`` was already seen; record it otherwise."""
    key = (r.problem_id, r.rollout_id)
    if key in seen:
        raise InputError(
            f"duplicate rollout_id {r.rollout_id!r} in problem {r.problem_id!r} (first on line {seen[key]})",
            path=path,
            line=line,
            field="rollout_id",
        )
    seen[key] = line


def write_rollouts(path: str | Path, rollouts: Iterable[Rollout]) -> int:
    """Write rollouts atomically; returns the count."""
    return write_jsonl_atomic(path, (r.to_json() for r in rollouts))


def group_rollouts(rollouts: Sequence[Rollout]) -> dict[str, list[Rollout]]:
    """Groups keyed by ``problem_id`` in order of first appearance, members in file order."""
    groups: dict[str, list[Rollout]] = {}
    for r in rollouts:
        groups.setdefault(r.problem_id, []).append(r)
    return groups


def is_transcript(r: Rollout) -> bool:
    """True when the prompt is a decoded chat transcript rather than a question or chat messages."""
    return isinstance(r.prompt, str) and r.meta.get(PROMPT_FORMAT) == TRANSCRIPT


def placement_for(rollouts: Iterable[Rollout], requested: str | None) -> tuple[str, str | None]:
    """The teacher-prompt placement to use for ``rollouts``, and a note for the user when it differs.

    ``requested`` is ``"chat"``, ``"flat"`` or ``None`` (the default, chat). A transcript prompt
    already holds the student's whole chat, role names and system prompt included; placed
    ``chat`` it would be nested inside a new user turn, so any transcript in the set turns the
    placement to ``flat`` (the transcript, then the blocks) and the note says why and how to get
    chat placement back (import with ``--tokenizer``).
    """
    want = requested or "chat"
    if want not in PLACEMENTS:
        raise InputError(f"unknown placement {want!r} (use chat or flat)", field="placement")
    rollouts = list(rollouts)
    n = sum(is_transcript(r) for r in rollouts)
    if want == "flat" or n == 0:
        return want, None
    note = (
        f"{n} of {len(rollouts)} rollouts have a decoded chat transcript as prompt "
        f"(meta.{PROMPT_FORMAT}={TRANSCRIPT}, e.g. verl's `input`), which a chat placement would nest "
        "inside a new user turn: using flat placement (transcript, then the peer blocks). Import "
        "with `--tokenizer MODEL` to parse transcripts back into chat messages for chat placement."
    )
    return "flat", note
