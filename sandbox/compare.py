"""Output comparison, done in the parent on plain data (LiveCodeBench rules)."""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any


def stripped_lines(text: str) -> list[str]:
    """LiveCodeBench's normalisation: strip the whole text, split on newlines, strip each line.
    (So an empty output is one empty line, and blank lines inside count.)"""
    return [line.strip() for line in text.strip().split("\n")]


_TOKEN = re.compile(r"\S+")


def _tokens_equal(got: str, want: str) -> bool:
    """Token-wise equality as Decimals of one line. ``want`` (trusted) is split; ``got`` is
    scanned lazily and given up on as soon as it has more tokens, so a huge line costs no list
    of tokens, and each token becomes a Decimal only after the counts agreed."""
    want_tokens = want.split()
    got_tokens: list[str] = []
    for m in _TOKEN.finditer(got):
        if len(got_tokens) == len(want_tokens):
            return False
        got_tokens.append(m.group())
    if len(got_tokens) != len(want_tokens):
        return False
    for g, w in zip(got_tokens, want_tokens, strict=True):
        # Every token converts (even equal ones): a line with any non-number in it counts
        # only when equal as a whole, as in LiveCodeBench.
        try:
            gd, wd = Decimal(g), Decimal(w)
            # NaN (quiet or signalling) equals nothing; comparing an sNaN would raise.
            if gd.is_nan() or wd.is_nan() or gd != wd:
                return False
        except (ArithmeticError, ValueError):  # not a number: only exact equality counted
            return False
    return True


def stdout_matches(got: str, expected: str) -> bool:
    """LiveCodeBench stdin/stdout rule: same number of stripped lines, and each line equal
    exactly or, token by token, equal as Decimals (so ``1.0`` matches ``1`` and ``1e2`` matches
    ``100``, but ``0.30000000000000004`` does not match ``0.3``). Total and bounded: any text
    gives True or False (NaN, sNaN and garbage tokens are unequal), and a long output is
    rejected on its line or token count before anything is converted.

    >>> stdout_matches("3\\n", "3"), stdout_matches("1.50 2", "1.5 2"), stdout_matches("a", "b")
    (True, True, False)
    """
    got_text, want_text = got.strip(), expected.strip()
    if got_text.count("\n") != want_text.count("\n"):
        return False  # counted before splitting: a flood of newlines is never a list
    for g, w in zip(got_text.split("\n"), want_text.split("\n"), strict=True):
        g, w = g.strip(), w.strip()
        if g != w and not _tokens_equal(g, w):
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
        return _plain_equal(got, expected)
    except (ValueError, RecursionError, TypeError):  # not JSON, too deep, too many digits
        return False


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
