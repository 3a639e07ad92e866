"""Importers from neighbouring formats into rollout records (DESIGN.md, "Neighbouring formats").

* verl/SDPO rollout dumps: one JSON object per rollout, one file per step (``{step}.jsonl``),
  keys ``input``, ``output``, ``score``, ``gts``, ``step`` and the reward function's extras
  (``acc``, ``pred``, ``feedback``, ...). A group is the rows of one step with the same
  ``input`` text, so ``problem_id`` is derived from (step, input).
* The reference analysis code's ``candidate_responses.jsonl``: ``prompt_id, response_id,
  prompt, response_text, reward, success, feedback_text, ground_truth, rollout_step, ...``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from mopd_eval.errors import InputError
from mopd_eval.jsonl import iter_jsonl
from mopd_eval.records import DEFAULT_SUCCESS_THRESHOLD, Rollout, check_unique_id, rollout_from_json

VERL_KNOWN = {"input", "output", "score", "gts", "step", "feedback"}
CANDIDATE_KNOWN = {
    "prompt_id", "uid", "prompt", "response_id", "response_text", "reward", "success",
    "feedback_text", "ground_truth", "difficulty_bucket", "rollout_step",
}


def _get(obj: dict, name: str, path: Path, line: int) -> Any:
    if name not in obj:
        raise InputError("missing", path=path, line=line, field=name)
    return obj[name]


def import_verl(paths: Iterable[str | Path], *, threshold: float = DEFAULT_SUCCESS_THRESHOLD, task: str = "verl") -> list[Rollout]:
    """Read verl/SDPO dumps. ``success`` is ``score >= threshold``; ``acc`` and extras go to ``meta``."""
    rollouts: list[Rollout] = []
    counts: dict[str, int] = {}
    for path in map(Path, paths):
        for line, obj in iter_jsonl(path):
            text = _get(obj, "input", path, line)
            if not isinstance(text, str):
                raise InputError(f"expected string, got {type(text).__name__}", path=path, line=line, field="input")
            step = obj.get("step")
            digest = hashlib.sha1(text.encode()).hexdigest()[:12]
            pid = digest if step is None else f"s{step}-{digest}"
            k = counts.get(pid, 0)
            counts[pid] = k + 1
            feedback = obj.get("feedback")
            rec = {
                "problem_id": pid,
                "rollout_id": f"{pid}-{k}",
                "prompt": text,
                "response": _get(obj, "output", path, line),
                "reward": _get(obj, "score", path, line),
                "feedback": feedback if feedback not in ("", None) else None,
                "task": task,
                "ground_truth": obj.get("gts"),
                "meta": {"step": step, "source": str(path)} | {k2: v for k2, v in obj.items() if k2 not in VERL_KNOWN},
            }
            rollouts.append(_validated(rec, obj, path, line, threshold, {"output": "response", "score": "reward"}))
    if not rollouts:
        raise InputError("no rows in the given verl dump files")
    return rollouts


def import_candidates(path: str | Path, *, threshold: float = DEFAULT_SUCCESS_THRESHOLD, task: str = "reference") -> list[Rollout]:
    """Read the reference code's ``candidate_responses.jsonl``; its ``success`` is kept when present."""
    path = Path(path)
    rollouts: list[Rollout] = []
    seen: dict[tuple[str, str], int] = {}
    for line, obj in iter_jsonl(path):
        pid = obj.get("prompt_id", obj.get("uid"))
        if pid is None:
            raise InputError("missing (neither prompt_id nor uid)", path=path, line=line, field="prompt_id")
        rec = {
            "problem_id": pid,
            "rollout_id": _get(obj, "response_id", path, line),
            "prompt": _get(obj, "prompt", path, line),
            "response": _get(obj, "response_text", path, line),
            "reward": _get(obj, "reward", path, line),
            "success": obj.get("success"),
            "feedback": obj.get("feedback_text") or None,
            "task": task,
            "ground_truth": obj.get("ground_truth"),
            "meta": {"step": obj.get("rollout_step"), "difficulty_bucket": obj.get("difficulty_bucket")}
            | {k: v for k, v in obj.items() if k not in CANDIDATE_KNOWN},
        }
        r = _validated(rec, obj, path, line, threshold, {"response_text": "response", "response_id": "rollout_id", "prompt_id": "problem_id"})
        check_unique_id(r, seen, path, line)
        rollouts.append(r)
    if not rollouts:
        raise InputError("no rows (empty file)", path=path)
    return rollouts


def _validated(rec: dict, raw: dict, path: Path, line: int, threshold: float, renamed: dict[str, str]) -> Rollout:
    """Validate through the rollout schema, reporting the *source* field name on error."""
    try:
        return rollout_from_json(rec, path=path, line=line, threshold=threshold)
    except InputError as e:
        back = {v: k for k, v in renamed.items()}
        raise InputError(e.message, path=path, line=line, field=back.get(e.field, e.field)) from None
