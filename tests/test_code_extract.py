"""The code view: what the diversity metrics and the code verifiers both look at, and
LiveCodeBench's own extraction rule."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mopd_eval.code_extract import extract_code, extract_code_lcb


def test_last_python_block_wins():
    text = "First try:\n```python\nx = 1\n```\nBetter:\n```python\nx = 2\nprint(x)\n```\nDone."
    assert extract_code(text) == "x = 2\nprint(x)"


def test_bare_fence_counts_as_python():
    assert extract_code("Answer:\n```\nprint(3)\n```") == "print(3)"


def test_python_aliases_case_insensitive_and_info_words():
    assert extract_code("```Python\na = 1\n```") == "a = 1"
    assert extract_code("```py\na = 2\n```") == "a = 2"
    assert extract_code("```python3 title=sol.py\na = 3\n```") == "a = 3"


def test_other_language_blocks_are_skipped():
    text = "```python\ngood = 1\n```\nAnd in C++:\n```cpp\nint main() {}\n```\n"
    assert extract_code(text) == "good = 1"


def test_no_python_block_returns_whole_text():
    only_cpp = "```cpp\nint x;\n```"
    assert extract_code(only_cpp) == only_cpp
    plain = "def f():\n    return 1\n"
    assert extract_code(plain) == plain
    assert extract_code("") == ""


def test_fence_after_prose_on_the_same_line_opens_a_block():
    # The published failure: the opening fence follows prose, the block ends with a lone fence.
    text = "I will read the input, then ```python\nn = int(input())\nprint(n * 2)\n```"
    assert extract_code(text) == "n = int(input())\nprint(n * 2)"
    assert extract_code("Here: ```\nprint(1)\n```\nDone.") == "print(1)"
    assert extract_code("In `C` terms: ```py\nx = 1\n```") == "x = 1"
    assert extract_code("Some prose ```cpp\nint x;\n```\nthen ```python\ny = 2\n```") == "y = 2"


def test_inline_fences_in_prose_open_nothing():
    text = "Wrap code in ```x``` like this.\n```python\nz = 3\n```"
    assert extract_code(text) == "z = 3"
    assert extract_code("print('```')\nx = 1") == "print('```')\nx = 1"


@pytest.mark.parametrize("tail", ["\n```", "\n```\n", "\n```\nHope this helps!", "\n```python\n", "\n```\n\n  \n"])
def test_a_stray_trailing_fence_never_hides_a_closed_python_block(tail):
    text = "Solution:\n```python\nprint(42)\n```" + tail
    assert extract_code(text) == "print(42)"


def test_unclosed_final_block_is_the_truncated_code():
    text = "```python\nold = 1\n```\nNow the full one:\n```python\ndef f(x):\n    return x +"
    assert extract_code(text) == "def f(x):\n    return x +"


def test_fence_with_language_does_not_close_a_block():
    # CommonMark: only a bare fence closes, so the second opener is content of the first block.
    text = "```python\nx = 1\n```python\ny = 2\n```"
    assert extract_code(text) == "x = 1\n```python\ny = 2"


def test_longer_fence_holds_triple_backtick_lines():
    text = "````python\ns = '''\n```\n'''\n````"
    assert extract_code(text) == "s = '''\n```\n'''"


def test_indented_fences_and_crlf():
    assert extract_code("Text\r\n  ```python\r\n  x = 1\r\n  ```\r\n") == "  x = 1"


def test_empty_block_gives_empty_string():
    assert extract_code("```python\n```") == ""


@given(st.text())
def test_never_raises_and_returns_a_substring_of_lines(text):
    out = extract_code(text)
    assert isinstance(out, str)
    # The view is made of the response's own lines, never invented text.
    normalized = text.replace("\r\n", "\n")
    assert out == text or out in normalized


@pytest.mark.parametrize("text, code", [
    ("```python\nprint(1)\n```", "print(1)"),
    # every line that contains ``` is a fence line, wherever the backticks are
    ("I will now write it ```python\na = 1\n```", "a = 1"),
    ("```python\nold = 1\n```\nBetter:\n```python\nnew = 2\n```", "new = 2"),
    # between the LAST two fence lines, even when that is prose between two blocks
    ("```python\nx = 1\n```\nok\n```", "ok"),
    ("```python\nx = 1\n```\n```", ""),
    ("s = '```'\nprint(s)\n```", "print(s)"),
    ("no fence at all", ""),
    ("```python\ntruncated = ", ""),
    ("```python\r\nx = 1\r\n```", "x = 1\r"),  # split on \n only, as lcb_runner does
])
def test_lcb_rule(text, code):
    assert extract_code_lcb(text) == code


@given(st.text())
def test_lcb_rule_never_raises_and_is_empty_without_two_fence_lines(text):
    out = extract_code_lcb(text)
    if sum("```" in line for line in text.split("\n")) < 2:
        assert out == ""
    else:
        assert out in text
