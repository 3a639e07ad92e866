"""The code view of a model response.

``extract_code`` (the general rule): the last fenced Python (or bare) block, else the whole text.
Shared by the diversity metrics and the code verifiers, so both look at the same program.

``extract_code_lcb``: LiveCodeBench's own rule, used by the ``lcb`` task so its scores are
comparable with the leaderboard.
"""

from __future__ import annotations

import re

# Info strings taken as Python. A fence with any other language (```cpp, ```text, ...) is a
# block of something else and is never picked.
PYTHON_INFO = frozenset({"", "python", "python3", "py"})
_NAMED_PYTHON = PYTHON_INFO - {""}

# An opening fence after prose on the same line ("Here it is: ```python"): the prose holds no
# fence of its own and the fence ends the line, followed by at most a one-word info string.
_PROSE_FENCE = re.compile(r"^(?P<prose>(?:(?!```).)*\S)(?:\s+|(?<!`))(?P<fence>`{3,})(?P<info>[\w+.#-]*)\s*$")


def _fence(line: str) -> tuple[int, str] | None:
    """``(backtick count, info string)`` of a line that starts with a fence, else None.

    The info string is its first word, lower-cased ('' for a bare fence).
    """
    stripped = line.strip()
    width = len(stripped) - len(stripped.lstrip("`"))
    if width < 3:
        return None
    words = stripped[width:].split()
    return width, (words[0].lower() if words else "")


def _opening(line: str) -> tuple[int, str] | None:
    """The fence a line opens: one at its start, or one after prose that ends the line."""
    fence = _fence(line)
    if fence is not None:
        return fence
    m = _PROSE_FENCE.match(line.strip())
    return None if m is None else (len(m.group("fence")), m.group("info").lower())


def extract_code(text: str) -> str:
    """Return the code a response proposes.

    Rules, in order:

    1. A fence is a line whose stripped text starts with three or more backticks, or, to open a
       block, a line of prose that ends with one ("then ```python"). An opening fence's info
       string (its first word, case-insensitive) names the language; ``python``, ``python3``,
       ``py`` and a bare fence count as Python. As in CommonMark, only a bare fence alone on
       its line and at least as long as the opening one closes a block: inside an open block a
       "```python" line is content, and a block opened with four backticks may hold "```"
       lines.
    2. The body of the **last** closed Python/bare block is returned (without its fences).
    3. A block still open at the end of the response (a generation cut off by the token limit)
       is returned instead when it was opened as ``python``/``python3``/``py`` and holds a
       non-blank line: it is the latest code the model wrote. A bare fence left open, or an
       open block with nothing in it, is a stray fence and never hides a closed block; with no
       closed block, a bare open block with content is returned.
    4. With no Python/bare block at all, the whole text is returned unchanged.

    The body keeps its inner lines exactly (CRLF line ends become ``\\n``); an empty block
    gives ``""``. Never raises for any string.

    >>> extract_code("Here:\\n```python\\nprint(1)\\n```\\nDone.")
    'print(1)'
    >>> extract_code("then ```python\\nprint(2)\\n```")
    'print(2)'
    >>> extract_code("x = 1")
    'x = 1'
    """
    last: str | None = None
    opening: tuple[int, str] | None = None  # (width, language) of the open block, None outside
    body: list[str] = []
    for line in text.replace("\r\n", "\n").split("\n"):
        if opening is None:
            opening, body = _opening(line), []
            continue
        fence = _fence(line)
        if fence is not None and fence[1] == "" and fence[0] >= opening[0]:
            if opening[1] in PYTHON_INFO:
                last = "\n".join(body)
            opening = None
        else:
            body.append(line)
    # An open block at the end comes after every closed one: rule 3 decides whether it is code.
    open_code = opening is not None and opening[1] in PYTHON_INFO and any(b.strip() for b in body)
    if open_code and (last is None or opening[1] in _NAMED_PYTHON):
        last = "\n".join(body)
    return text if last is None else last


def extract_code_lcb(text: str) -> str:
    """LiveCodeBench's extraction (lcb_runner, chat models): every line that contains ```` ``` ````
    anywhere is a fence line; the program is the lines strictly between the last two of them;
    fewer than two fence lines give the empty program. Lines are split on ``\\n`` only.

    >>> extract_code_lcb("```python\\nprint(1)\\n```")
    'print(1)'
    >>> extract_code_lcb("print(1)")
    ''
    """
    lines = text.split("\n")
    fences = [i for i, line in enumerate(lines) if "```" in line]
    if len(fences) < 2:
        return ""
    return "\n".join(lines[fences[-2] + 1 : fences[-1]])
