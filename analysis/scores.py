"""Teacher-score rows: the record, the JSONL reader and the checks that keep bad files out.

One row = one rollout scored by the teacher under one peer-context condition::

    {"condition": "2s1f", "problem_id": 17, "rollout_id": 3, "teacher_score": -0.41,
     "reward": 1.0, "success": true, "effective": true, ...extra fields ignored}

Checks, each an ``InputError`` naming file, line and field: every field present with its type
(``problem_id``/``rollout_id`` a string or integer, scores and rewards finite numbers, the two
flags booleans, ``condition`` a non-empty string); no (condition, problem_id, rollout_id) twice;
one rollout's ``success`` the same under every condition (it is a property of the rollout, and the
difficulty buckets depend on it); at least one row.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import pandas as pd

from mopd_eval.contexts import BUILTIN_CONDITIONS, Condition
from mopd_eval.errors import InputError
from mopd_eval.jsonl import iter_jsonl

BASE_CONDITION = "base"


@dataclass(frozen=True)
class ScoreRow:
    """One rollout scored under one condition (see the module docstring for the JSON form)."""

    condition: str
    problem_id: str | int
    rollout_id: str | int
    teacher_score: float
    reward: float
    success: bool
    effective: bool


FIELDS: tuple[str, ...] = tuple(f.name for f in fields(ScoreRow))
_KEY = ["condition", "problem_id", "rollout_id"]


def as_conditions(conditions: Iterable[str | Condition]) -> list[Condition]:
    """``Condition`` objects for names or conditions, first occurrence of a name kept.

    A name is looked up among the built-in conditions; any other name (a condition defined in a
    spec file whose scores are read without the spec) becomes a plain ``Condition`` labelled by
    its name.
    """
    out: dict[str, Condition] = {}
    for c in conditions:
        cond = c if isinstance(c, Condition) else BUILTIN_CONDITIONS.get(c) or Condition(c)
        out.setdefault(cond.name, cond)
    return list(out.values())


def order_conditions(conditions: Iterable[str | Condition]) -> list[Condition]:
    """Paper order for Table 7 and Figure 4: the built-in conditions in their order, then the
    others in the order given; controls (``Condition.control``) after all the rest."""
    conds = as_conditions(conditions)
    rank = {name: i for i, name in enumerate(BUILTIN_CONDITIONS)}
    ordered = sorted(conds, key=lambda c: rank.get(c.name, len(rank)))  # stable: given order kept
    return [c for c in ordered if not c.control] + [c for c in ordered if c.control]


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def validate_record(
    obj: Mapping, *, path: str | Path | None = None, line: int | None = None
) -> ScoreRow:
    """Check one decoded row and return it as a ``ScoreRow``; raise ``InputError`` if bad."""

    def bad(field: str, message: str) -> InputError:
        return InputError(message, path=path, line=line, field=field)

    for name in FIELDS:
        if name not in obj:
            raise bad(name, "missing")
    cond = obj["condition"]
    if not isinstance(cond, str) or not cond:
        raise bad("condition", f"expected a non-empty string, got {cond!r}")
    for name in ("problem_id", "rollout_id"):
        v = obj[name]
        if isinstance(v, bool) or not isinstance(v, (str, int)):
            raise bad(name, f"expected a string or an integer, got {type(v).__name__} {v!r}")
    for name in ("teacher_score", "reward"):
        v = obj[name]
        if not _is_number(v):
            raise bad(name, f"expected a number, got {type(v).__name__} {v!r}")
        if not math.isfinite(v):
            raise bad(name, f"expected a finite number, got {v!r}")
    for name in ("success", "effective"):
        v = obj[name]
        if not isinstance(v, bool):
            raise bad(name, f"expected true or false, got {type(v).__name__} {v!r}")
    return ScoreRow(
        condition=cond,
        problem_id=obj["problem_id"],
        rollout_id=obj["rollout_id"],
        teacher_score=float(obj["teacher_score"]),
        reward=float(obj["reward"]),
        success=obj["success"],
        effective=obj["effective"],
    )


def _frame(rows: list[ScoreRow], lines: list[int]) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "condition": [r.condition for r in rows],
            "problem_id": pd.Series([r.problem_id for r in rows], dtype=object),
            "rollout_id": pd.Series([r.rollout_id for r in rows], dtype=object),
            "teacher_score": [r.teacher_score for r in rows],
            "reward": [r.reward for r in rows],
            "success": pd.Series([r.success for r in rows], dtype=bool),
            "effective": pd.Series([r.effective for r in rows], dtype=bool),
            "line": lines,
        }
    )
    return frame


def _check_frame(frame: pd.DataFrame, path: str | Path) -> pd.DataFrame:
    if frame.empty:
        raise InputError("no score rows (empty file?)", path=path)
    dup = frame.duplicated(subset=_KEY, keep=False)
    if dup.any():
        first = frame[dup].iloc[0]
        same = frame[dup & (frame.condition == first.condition)]
        same = same[
            [
                p == first.problem_id and r == first.rollout_id
                for p, r in zip(same.problem_id, same.rollout_id, strict=True)
            ]
        ]
        a, b = same.line.iloc[0], same.line.iloc[1]
        raise InputError(
            f"duplicate row: condition {first.condition!r}, problem_id {first.problem_id!r}, "
            f"rollout_id {first.rollout_id!r} appears on lines {a} and {b}",
            path=path,
            line=int(b),
        )
    per_rollout = frame.groupby(["problem_id", "rollout_id"], sort=False).success.nunique()
    if (per_rollout > 1).any():
        pid, rid = per_rollout[per_rollout > 1].index[0]
        rows = frame[
            [p == pid and r == rid for p, r in zip(frame.problem_id, frame.rollout_id, strict=True)]
        ]
        a = rows.iloc[0]
        b = rows[rows.success != a.success].iloc[0]
        raise InputError(
            f"rollout problem_id {pid!r}, rollout_id {rid!r} is success={a.success} on line "
            f"{a.line} ({a.condition}) but success={b.success} on line {b.line} ({b.condition})",
            path=path,
            line=int(b.line),
            field="success",
        )
    return frame


def load_scores(path: str | Path) -> pd.DataFrame:
    """Read and check a scores JSONL file.

    Returns a DataFrame with the ``ScoreRow`` columns plus ``line`` (1-based line number in the
    file); ``problem_id`` and ``rollout_id`` keep their JSON types (``1`` and ``"1"`` differ).
    """
    rows: list[ScoreRow] = []
    lines: list[int] = []
    for line, obj in iter_jsonl(path):
        rows.append(validate_record(obj, path=path, line=line))
        lines.append(line)
    return _check_frame(_frame(rows, lines), path)


def read_scores(path: str | Path) -> list[ScoreRow]:
    """Read and check a scores JSONL file into ``ScoreRow`` records."""
    frame = load_scores(path)
    return [
        ScoreRow(**{k: v for k, v in zip(FIELDS, t, strict=True)})
        for t in frame[list(FIELDS)].itertuples(index=False, name=None)
    ]


def as_scores_frame(rows: Iterable[ScoreRow | Mapping] | pd.DataFrame) -> pd.DataFrame:
    """Check in-memory rows (``ScoreRow``s, dicts, or a DataFrame with the ``ScoreRow`` columns).

    Errors name the source ``<rows>`` and the 1-based row position as the line.
    """
    source = "<rows>"
    if isinstance(rows, pd.DataFrame):
        missing = [f for f in FIELDS if f not in rows.columns]
        if missing:
            raise InputError(
                f"missing column(s) {', '.join(missing)}", path=source, field=missing[0]
            )
        records: Iterable = rows[list(FIELDS)].to_dict("records")
    else:
        records = rows
    checked: list[ScoreRow] = []
    for i, rec in enumerate(records, start=1):
        obj = asdict(rec) if isinstance(rec, ScoreRow) else rec
        if not isinstance(obj, Mapping):
            raise InputError(
                f"expected a ScoreRow or a mapping, got {type(rec).__name__}", path=source, line=i
            )
        checked.append(validate_record(_plain(obj), path=source, line=i))
    return _check_frame(_frame(checked, list(range(1, len(checked) + 1))), source)


def _plain(obj: Mapping) -> dict:
    # DataFrame records carry numpy scalars (np.bool_, np.int64); judge them as the Python values.
    return {
        k: (v.item() if hasattr(v, "item") and not isinstance(v, (str, bytes)) else v)
        for k, v in obj.items()
    }
