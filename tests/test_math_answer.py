"""Math answers: boxed extraction, integer compare, math-verify in a killable worker."""

from __future__ import annotations

import pytest

from mopd_eval.tasks import get_task
from mopd_eval.tasks.arith import generate
from mopd_eval.verifiers.math_answer import (
    MathEquivalence,
    as_integer,
    last_boxed,
    last_number,
    verify_answer,
)


@pytest.mark.parametrize(
    "text, expected",
    [
        (r"so \boxed{12}", "12"),
        (r"\boxed{1} then \boxed{\frac{1}{2}}", r"\frac{1}{2}"),
        (r"\boxed{\{1, 2\}}", r"\{1, 2\}"),
        (r"\boxed{a_{n}^{2}} end", "a_{n}^{2}"),
        (r"\fbox{7}", "7"),
        (r"\boxed 5", "5"),
        (r"\boxed{12", None),
        ("no box here", None),
    ],
)
def test_last_boxed(text, expected):
    assert last_boxed(text) == expected


@pytest.mark.parametrize("s, n", [("007", 7), ("1,000", 1000), ("$42$", 42), ("42.0", 42), (r"\text{17}", 17), ("4.5", None), ("x", None), (None, None)])
def test_as_integer(s, n):
    assert as_integer(s) == n


def test_last_number():
    assert last_number("7 + 5 = 12, and 1,000 more.") == "1000"
    assert last_number("minus -3.5") == "-3.5"
    assert last_number("none") is None


def test_aime_mode_compares_integers():
    assert verify_answer(r"\boxed{033}", "33", mode="aime").success
    assert verify_answer(r"\boxed{33.0}", "033", mode="aime").success
    v = verify_answer(r"\boxed{34}", "33", mode="aime")
    assert not v.success and v.status == "wrong" and "34" in v.feedback
    assert verify_answer("I think 33", "33", mode="aime").status == "no_answer"
    assert verify_answer(r"\boxed{1}", "x+1", mode="aime").status == "invalid_test"


@pytest.fixture(scope="module")
def checker():
    with MathEquivalence(timeout_s=20) as c:
        yield c


# (gold, boxed answer, equivalent?) — the table the verifier must agree with math-verify on.
PAIRS = [
    ("12", "012", True),
    ("0.5", r"\frac{1}{2}", True),
    (r"\frac12", r"\frac{2}{4}", True),
    (r"\frac{3}{4}", "0.75", True),
    (r"\sqrt{2}/2", r"\frac{\sqrt{2}}{2}", True),
    (r"[1, 2)", r"[1,2)", True),
    (r"(0, \infty)", r"(0,\infty)", True),
    (r"x^2 + 2x + 1", r"(x+1)^2", True),
    (r"\pi", r"3.14", False),
    ("3", "4", False),
    (r"[1, 2]", r"(1, 2)", False),
]


@pytest.mark.parametrize("gold, answer, same", PAIRS)
def test_agrees_with_math_verify(checker, gold, answer, same):
    from math_verify import parse, verify

    ours = verify_answer(rf"The answer is \boxed{{{answer}}}.", gold, checker=checker).success
    theirs = verify(parse(f"${gold}$"), parse(rf"\boxed{{{answer}}}"))
    assert ours == theirs == same


def test_hung_check_is_killed_and_worker_recovers():
    with MathEquivalence(timeout_s=1.0) as c:
        assert c.equivalent("2", "2") is True  # warm the worker (imports sympy)
        # A huge exponent tower makes sympy run for minutes; the parent's clock must win.
        assert c.equivalent("1", r"9^{9^{9^{9}}} - 9^{9^{9^{9}}} + 1") in (None, True)
        assert c.equivalent("3", "3") is True


def test_arith_problems_are_seeded_and_graded():
    a, b = generate(3, seed=1), generate(3, seed=1)
    assert [p.question for p in a] == [p.question for p in b]
    assert [p.question for p in a] != [p.question for p in generate(3, seed=2)]
    assert len({p.problem_id for p in a}) == 15
    task = get_task("arith")
    p = a[0]
    ans = p.ground_truth
    v = task.verify([p, p, p, p], [f"{p.meta['expression']} = {ans}", rf"\boxed{{{ans}}} not 3", f"It is {int(ans) + 1}.", ""])
    assert [x.success for x in v] == [True, True, False, False]
    assert v[3].status == "no_answer"


def test_answer_spans_point_at_the_answer_text():
    from mopd_eval.verifiers.math_answer import last_boxed_span, last_number_span

    t = "first \\boxed{1} then \\boxed{ 2{,}000 } end 5"
    s, e = last_boxed_span(t)
    assert t[s:e] == "2{,}000"
    assert last_boxed_span("\\boxed{open") is None and last_boxed_span("none") is None
    s, e = last_number_span("a 12 b -3.5 c")
    assert "a 12 b -3.5 c"[s:e] == "-3.5" and last_number_span("none") is None
