"""Output comparison, done in the parent on plain data (LiveCodeBench rules)."""

from __future__ import annotations

import json
from decimal import Decimal, InvalidOperation
from typing import Any


def stripped_lines(text: str) -> list[str]:
    """LiveCodeBench's normalisation: strip the whole text, split on newlines, strip each line.
    (So an empty output is one empty line, and blank lines inside count.)"""
    return [line.strip() for line in text.strip().split("\n")]


def _decimals(line: str) -> list[Decimal] | None:
    try:
        return [Decimal(token) for token in line.split()]
    except (InvalidOperation, ValueError):
        return None


def stdout_matches(got: str, expected: str) -> bool:
    """LiveCodeBench stdin/stdout rule: same number of stripped lines, and each line equal
    exactly or, token by token, equal as Decimals (so ``1.0`` matches ``1`` and ``1e2`` matches
    ``100``, but ``0.30000000000000004`` does not match ``0.3``).

    >>> stdout_matches("3\\n", "3"), stdout_matches("1.50 2", "1.5 2"), stdout_matches("a", "b")
    (True, True, False)
    """
    got_lines, want_lines = stripped_lines(got), stripped_lines(expected)
    if len(got_lines) != len(want_lines):
        return False
    for g, w in zip(got_lines, want_lines, strict=True):
        if g == w:
            continue
        gd, wd = _decimals(g), _decimals(w)
        if gd is None or wd is None or gd != wd:
            return False
    return True


def parse_call_inputs(text: str) -> list[Any]:
    """Arguments of one call-based test: one JSON value per input line (LiveCodeBench).
    Raises ValueError naming the line when a line is not JSON."""
    args = []
    for n, line in enumerate(text.split("\n"), 1):
        try:
            args.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise ValueError(f"test input line {n} is not JSON: {e.msg}: {line[:80]!r}") from e
    return args


def canonical_json(value: Any) -> str:
    """Canonical text of a JSON value: sorted keys, no spaces, tuples as lists."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def json_values_equal(got_json: str, expected: Any) -> bool:
    """Whether the JSON text a program produced equals the expected value.

    Both sides are plain data decoded by ``json`` in the parent, so no object the program made
    takes part in the comparison (an ``__eq__`` that always returns True cannot pass).
    Numbers compare by value as in LiveCodeBench's ``==`` (``1 == 1.0``, ``True == 1``); NaN
    never equals anything.
    """
    try:
        got = json.loads(got_json)
    except (ValueError, RecursionError):
        return False
    return _plain_equal(got, expected)


def _plain_equal(a: Any, b: Any) -> bool:
    # Structural walk instead of ``a == b``: identical in result for plain JSON data, but it
    # cannot be fooled even if a caller passes something that is not plain data as ``expected``.
    if isinstance(a, list) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_plain_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_plain_equal(a[k], b[k]) for k in a)
    if isinstance(a, (bool, int, float)) and isinstance(b, (bool, int, float)):
        return bool(a == b)
    if isinstance(a, str) and isinstance(b, str) or a is None or b is None:
        return a == b
    return False
