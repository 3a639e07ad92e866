"""Math answers: the last ``\\boxed{}``, integer comparison, and math-verify under a hard wall clock.

math-verify's own timeouts use ``signal.alarm`` (main thread only, and sympy can ignore it in C
code), so each equivalence check runs in a separate worker process that the parent kills when
its wall clock runs out. The worker is reused across calls and restarted after a kill.
"""

from __future__ import annotations

import multiprocessing as mp
import re
import threading
from decimal import Decimal, InvalidOperation

from mopd_eval.verdict import Verdict

_BOX_RE = re.compile(r"\\(?:boxed|fbox)\s*")
_NUMBER_RE = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")


def last_boxed_span(text: str) -> tuple[int, int] | None:
    """Character range ``[start, end)`` of the last ``\\boxed{...}`` (or ``\\fbox``) content,
    surrounding spaces excluded, with nested braces; None if absent or the last box is unclosed.

    ``\\boxed 5`` (no braces) gives the range of the next token.
    """
    starts = [m.end() for m in _BOX_RE.finditer(text)]
    for start in reversed(starts):
        if start < len(text) and text[start] == "{":
            depth = 0
            for i in range(start, len(text)):
                if text[i] == "{":
                    depth += 1
                elif text[i] == "}":
                    depth -= 1
                    if depth == 0:
                        inner = text[start + 1 : i]
                        lead = len(inner) - len(inner.lstrip())
                        return start + 1 + lead, start + 1 + lead + len(inner.strip())
            return None
        m = re.match(r"[^\s$]+", text[start:])
        if m:
            return start, start + m.end()
    return None


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (or ``\\fbox``), with nested braces; None if absent.

    ``\\boxed 5`` (no braces) yields the next token. An unclosed last box yields None.
    """
    span = last_boxed_span(text)
    return None if span is None else text[span[0] : span[1]]


def last_number_span(text: str) -> tuple[int, int] | None:
    """Character range of the last number written in ``text``, or None."""
    found = list(_NUMBER_RE.finditer(text))
    return (found[-1].start(), found[-1].end()) if found else None


def last_number(text: str) -> str | None:
    """The last number written in ``text`` (thousands separators dropped), or None."""
    span = last_number_span(text)
    return None if span is None else text[span[0] : span[1]].replace(",", "")


def _strip_latex(s: str) -> str:
    s = s.strip().strip("$").strip()
    s = re.sub(r"\\text\{([^}]*)\}", r"\1", s)
    s = re.sub(r"\\(?:,|;|!| )", "", s)  # LaTeX spacing
    s = s.replace("{,}", "").rstrip(".")
    return s.strip()


def as_integer(s: str | None) -> int | None:
    """Parse an integer answer the AIME way: ``"007"``, ``"1,000"``, ``"$42$"``, ``"42.0"``; else None."""
    if s is None:
        return None
    s = _strip_latex(s).replace(",", "")
    if s.startswith("{") and s.endswith("}"):
        s = s[1:-1]
    try:
        d = Decimal(s)
    except InvalidOperation:
        return None
    if not d.is_finite() or d != d.to_integral_value():
        return None
    return int(d)


def as_decimal(s: str | None) -> Decimal | None:
    if s is None:
        return None
    try:
        d = Decimal(_strip_latex(s).replace(",", ""))
    except InvalidOperation:
        return None
    return d if d.is_finite() else None


def _worker(conn) -> None:  # pragma: no cover - runs in the child process
    from math_verify import parse, verify

    conn.send("ready")  # imports (sympy) take seconds; they must not count against a check's clock
    while True:
        try:
            gold, answer = conn.recv()
        except EOFError:
            return
        try:
            # Bare LaTeX ("\\frac12") is only recognised inside math delimiters.
            g = parse(gold if "$" in gold else f"${gold}$")
            a = parse(answer if "$" in answer else f"${answer}$")
            conn.send(bool(verify(g, a)))
        except Exception as e:  # a parser crash is a non-match, not a dead worker
            conn.send(f"error: {type(e).__name__}: {e}")


class MathEquivalence:
    """``equivalent(gold, answer)`` through math-verify in a killable worker process.

    Returns True/False, or None when the check ran past ``timeout_s`` (the worker is killed and
    restarted). Thread-safe: calls are serialised on one worker.
    """

    def __init__(self, timeout_s: float = 10.0, startup_timeout_s: float = 120.0) -> None:
        self.timeout_s = timeout_s
        self.startup_timeout_s = startup_timeout_s
        self._lock = threading.Lock()
        self._proc: mp.Process | None = None
        self._conn = None

    def _start(self) -> None:
        # spawn: forking a parent that holds torch threads or locks is unsafe.
        ctx = mp.get_context("spawn")
        parent, child = ctx.Pipe()
        self._proc = ctx.Process(target=_worker, args=(child,), daemon=True)
        self._proc.start()
        child.close()
        self._conn = parent
        if not (parent.poll(self.startup_timeout_s) and parent.recv() == "ready"):
            self._kill()
            raise RuntimeError(f"math-verify worker did not start within {self.startup_timeout_s} s")

    def _kill(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.join(5)
        self._proc, self._conn = None, None

    def equivalent(self, gold: str, answer: str) -> bool | None:
        with self._lock:
            if self._proc is None or not self._proc.is_alive():
                self._start()
            self._conn.send((gold, answer))
            if self._conn.poll(self.timeout_s):
                out = self._conn.recv()
                return out if isinstance(out, bool) else False
            self._kill()
            return None

    def close(self) -> None:
        with self._lock:
            self._kill()

    def __enter__(self) -> MathEquivalence:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def verify_answer(
    response: str,
    gold: str,
    *,
    mode: str = "math",
    checker: MathEquivalence | None = None,
    fallback_last_number: bool = False,
) -> Verdict:
    """Grade a free-form math response against ``gold``.

    The answer is the last ``\\boxed{}``; with ``fallback_last_number`` (the arithmetic task,
    whose small model rarely boxes) the last number in the text when no box exists.
    ``mode="aime"``: integers compared as integers (leading zeros, commas ignored).
    ``mode="math"``: equal integers or decimals match at once; anything else goes to
    math-verify (``checker`` required then), each call under a hard wall clock.
    """
    answer = last_boxed(response)
    if answer is None and fallback_last_number:
        answer = last_number(response)
    if answer is None or not answer.strip():
        hint = "the response contains no number" if fallback_last_number else "put the final answer in \\boxed{}"
        return Verdict.failed("no_answer", f"No final answer found: {hint}.")
    gi, ai = as_integer(gold), as_integer(answer)
    if mode == "aime":
        if gi is None:
            return Verdict.failed("invalid_test", f"gold answer {gold!r} is not an integer")
        if ai is not None and ai == gi:
            return Verdict.correct()
        return Verdict.failed("wrong", f"Your final answer {answer!r} is incorrect.")
    gd, ad = as_decimal(gold), as_decimal(answer)
    if gd is not None and ad is not None:
        return Verdict.correct() if gd == ad else Verdict.failed("wrong", f"Your final answer {answer!r} is incorrect.")
    if checker is None:
        raise ValueError("a MathEquivalence checker is needed for non-numeric answers")
    same = checker.equivalent(gold, answer)
    if same is None:
        return Verdict.failed("timeout", f"Checking your answer {answer!r} timed out.")
    return Verdict.correct() if same else Verdict.failed("wrong", f"Your final answer {answer!r} is incorrect.")
