"""The code view: what the diversity metrics and the code verifiers both look at."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from mopd_eval.code_extract import extract_code


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
