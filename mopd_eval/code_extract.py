"""The code view of a model response: the last fenced Python (or bare) block, else the whole text.

Shared by the diversity metrics and the code verifiers, so both look at the same program.
"""

from __future__ import annotations

# Info strings taken as Python. A fence with any other language (```cpp, ```text, ...) is a
# block of something else and is never picked.
PYTHON_INFO = frozenset({"", "python", "python3", "py"})


def _fence(line: str) -> tuple[int, str] | None:
    """``(backtick count, info string)`` of a fence line, or None if the line is not a fence.

    The info string is its first word, lower-cased ('' for a bare fence).
    """
    stripped = line.strip()
    width = len(stripped) - len(stripped.lstrip("`"))
    if width < 3:
        return None
    words = stripped[width:].split()
    return width, (words[0].lower() if words else "")


def extract_code(text: str) -> str:
    """Return the code a response proposes.

    Rules, in order:

    1. Fences are lines whose stripped text starts with three or more backticks. An opening
       fence's info string (its first word, case-insensitive) names the language; ``python``,
       ``python3``, ``py`` and a bare fence count as Python. As in CommonMark, only a bare
       fence at least as long as the opening one closes a block: inside an open block a
       "```python" line is content, and a block opened with four backticks may hold "```"
       lines.
    2. The body of the **last** closed Python/bare block is returned (without its fences).
    3. If the response ends inside an open Python/bare block (a generation cut off by the token
       limit), that unfinished body is the last block and is returned: it is the latest code
       the model wrote, and its opening fence would make the whole text unparsable.
    4. With no Python/bare block at all, the whole text is returned unchanged.

    The body keeps its inner lines exactly (CRLF line ends become ``\\n``); an empty block
    gives ``""``. Never raises for any string.

    >>> extract_code("Here:\\n```python\\nprint(1)\\n```\\nDone.")
    'print(1)'
    >>> extract_code("x = 1")
    'x = 1'
    """
    lines = text.replace("\r\n", "\n").split("\n")
    last: str | None = None
    opening: tuple[int, str] | None = None  # (width, language) of the open block, None outside
    body: list[str] = []
    for line in lines:
        fence = _fence(line)
        if opening is None:
            if fence is not None:
                opening, body = fence, []
        elif fence is not None and fence[1] == "" and fence[0] >= opening[0]:
            if opening[1] in PYTHON_INFO:
                last = "\n".join(body)
            opening = None
        else:
            body.append(line)
    if opening is not None and opening[1] in PYTHON_INFO:
        # An unclosed block at the end comes after every closed one, so it is the last block.
        last = "\n".join(body)
    return text if last is None else last
