"""Diversity metrics of one group, checked against values worked out by hand."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import comb

from mopd_eval.diversity import (
    ast_jaccard_distance,
    ast_node_counts,
    distinct_n,
    group_diversity,
    mean_pairwise_ast_distance,
    pass_at_k,
    pass_at_k_curve,
    self_bleu,
    tokenize,
    unique_ratio,
)

# --- tokens ---------------------------------------------------------------------------------


def test_tokenize_identifiers_digit_runs_and_symbols():
    assert tokenize("x1 = foo(42)+_y") == ["x1", "=", "foo", "(", "42", ")", "+", "_y"]
    # A float is three tokens; a non-ASCII letter is a symbol of its own.
    assert tokenize("3.14") == ["3", ".", "14"]
    assert tokenize("café") == ["caf", "é"]
    assert tokenize("  \n\t ") == []


# --- Distinct-n -----------------------------------------------------------------------------


def test_distinct_stream_hand_values():
    # stream = a b a | b a  ->  a b a b a
    # unigrams: 5 total, {a, b} unique           -> 2/5
    # bigrams: ab ba ab ba = 4 total, {ab, ba}   -> 2/4
    groups = [["a", "b", "a"], ["b", "a"]]
    assert distinct_n(groups, 1) == pytest.approx(2 / 5)
    assert distinct_n(groups, 2) == pytest.approx(2 / 4)


def test_distinct_stream_counts_ngrams_across_response_boundaries():
    # stream = a b | a b -> bigrams ab, ba (the boundary one), ab: 2 unique of 3.
    # Counting within responses only would give 1 unique of 2.
    assert distinct_n([["a", "b"], ["a", "b"]], 2) == pytest.approx(2 / 3)


def test_distinct_per_response_hand_values():
    # response 1: a b a -> D1 = 2/3, D2 = {ab, ba}/2 = 1
    # response 2: b a   -> D1 = 2/2,   D2 = {ba}/1 = 1
    groups = [["a", "b", "a"], ["b", "a"]]
    assert distinct_n(groups, 1, mode="per_response") == pytest.approx((2 / 3 + 1) / 2)
    assert distinct_n(groups, 2, mode="per_response") == pytest.approx(1.0)
    # A response with no bigram is left out of the mean: only b b counts -> 1/1.
    assert distinct_n([["a"], ["b", "b"]], 2, mode="per_response") == pytest.approx(1.0)


def test_distinct_edge_cases():
    assert distinct_n([["a", "a", "b"]], 1) == pytest.approx(2 / 3)  # one response is fine
    assert math.isnan(distinct_n([[], []], 1))  # empty texts: no n-gram
    assert math.isnan(distinct_n([["a"]], 2))  # shorter than n
    assert math.isnan(distinct_n([["a"], ["b"]], 2, mode="per_response"))
    with pytest.raises(ValueError):
        distinct_n([["a"]], 0)
    with pytest.raises(ValueError):
        distinct_n([["a"]], 1, mode="pooled")


# --- AST distance ---------------------------------------------------------------------------


def test_ast_node_counts_hand_values():
    # x = 1 : Module, Assign, Name(x), Store (its ctx), Constant(1)
    assert ast_node_counts("x = 1") == {
        "Module": 1,
        "Assign": 1,
        "Name": 1,
        "Store": 1,
        "Constant": 1,
    }
    # x = y : Module, Assign, Name(x), Store, Name(y), Load
    assert ast_node_counts("x = y") == {"Module": 1, "Assign": 1, "Name": 2, "Store": 1, "Load": 1}


def test_ast_distance_hand_values():
    a, b = ast_node_counts("x = 1"), ast_node_counts("x = y")
    # sum(min) = Module 1 + Assign 1 + Name 1 + Store 1 = 4
    # sum(max) = Module 1 + Assign 1 + Name 2 + Store 1 + Constant 1 + Load 1 = 7
    assert ast_jaccard_distance(a, b) == pytest.approx(1 - 4 / 7)
    assert ast_jaccard_distance(a, a) == 0.0
    assert ast_jaccard_distance({"If": 2}, {"For": 1}) == 1.0
    assert math.isnan(ast_jaccard_distance({}, {}))


def test_mean_pairwise_ast_distance_skips_unparsable():
    # pairs of the parsable three: (x=1, x=y) 3/7, (x=1, x=1) 0, (x=y, x=1) 3/7 -> mean 2/7
    codes = ["x = 1", "x = y", "def (:", "x = 1"]
    value, n_parsable = mean_pairwise_ast_distance(codes)
    assert n_parsable == 3
    assert value == pytest.approx((3 / 7 + 0 + 3 / 7) / 3)


def test_ast_edge_cases():
    assert ast_node_counts("") is None  # empty text is no program
    assert ast_node_counts("  \n") is None
    assert ast_node_counts("x = ") is None
    assert ast_node_counts("a\0b") is None  # NUL byte: ValueError inside ast.parse
    assert ast_node_counts("s = '\\d'") is not None  # an invalid escape only warns
    value, p = mean_pairwise_ast_distance(["x = 1", "oops("])
    assert math.isnan(value) and p == 1  # one parsable: no pair
    value, p = mean_pairwise_ast_distance(["(", ")"])
    assert math.isnan(value) and p == 0  # nothing parsable
    assert ast_node_counts("(" * 300 + ")" * 300) is None  # too deep for the parser


# --- self-BLEU ------------------------------------------------------------------------------


def test_self_bleu_equal_length_hand_values():
    # h1 = a b c d against h2 = a b c e (and the reverse, symmetric):
    #   p1 = 3/4, p2 = {ab, bc}/3 = 2/3, p3 = {abc}/2 = 1/2, p4 = 0/1 -> smoothed 0.1/1
    #   brevity penalty 1 (same length)
    #   BLEU = (3/4 * 2/3 * 1/2 * 0.1) ** (1/4) = 0.025 ** 0.25
    h1, h2 = list("abcd"), list("abce")
    assert self_bleu([h1, h2]) == pytest.approx(0.025**0.25)


def test_self_bleu_brevity_penalty_and_short_hypothesis():
    long, short = list("abcde"), list("abc")
    # BLEU(long | short): p1 = 3/5, p2 = 2/4, p3 = 1/3, p4 = 0/2 -> 0.1/2; BP = 1 (longer)
    b_long = (3 / 5 * 2 / 4 * 1 / 3 * 0.05) ** 0.25
    # BLEU(short | long): p1 = p2 = p3 = 1; p4: no 4-gram, counted as 0/1 -> 0.1;
    #   BP = exp(1 - 5/3)
    b_short = math.exp(1 - 5 / 3) * 0.1**0.25
    assert self_bleu([long, short]) == pytest.approx((b_long + b_short) / 2)


def test_self_bleu_identical_and_disjoint_and_edges():
    same = list("abcdef")
    assert self_bleu([same, same, same]) == pytest.approx(1.0)
    assert self_bleu([list("abcd"), list("wxyz")]) == 0.0  # no shared unigram
    assert self_bleu([[], list("ab")]) == 0.0  # empty response: 0 both ways
    assert math.isnan(self_bleu([list("abcd")]))  # one response: nothing to compare
    assert math.isnan(self_bleu([]))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.lists(st.sampled_from("abcd"), max_size=12), min_size=2, max_size=6))
def test_self_bleu_equals_nltk_sentence_bleu(groups):
    # The fast implementation must give NLTK's numbers exactly (Texygen's self-BLEU).
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

    smooth = SmoothingFunction().method1
    expected = sum(
        sentence_bleu([g for j, g in enumerate(groups) if j != i], h, smoothing_function=smooth)
        for i, h in enumerate(groups)
    ) / len(groups)
    assert self_bleu(groups) == pytest.approx(expected, rel=1e-12, abs=1e-12)


# --- unique ratio ---------------------------------------------------------------------------


def test_unique_ratio():
    # "a" and " a\n" are the same after stripping -> {a, b, c} of 4
    assert unique_ratio(["a", " a\n", "b", "c"]) == pytest.approx(3 / 4)
    assert unique_ratio(["x", "x"]) == pytest.approx(1 / 2)
    assert unique_ratio([""]) == 1.0
    assert math.isnan(unique_ratio([]))


# --- pass@k ---------------------------------------------------------------------------------


def test_pass_at_k_hand_values():
    assert pass_at_k(4, 1, 2) == pytest.approx(1 - 3 / 6)  # 1 - C(3,2)/C(4,2)
    assert pass_at_k(5, 2, 2) == pytest.approx(1 - 3 / 10)  # 1 - C(3,2)/C(5,2)
    assert pass_at_k(4, 3, 2) == 1.0  # C(1,2) = 0: every pair holds a success
    assert pass_at_k(8, 0, 8) == 0.0
    assert pass_at_k(8, 3, 1) == pytest.approx(3 / 8)  # pass@1 = c/n
    # n = 3, c = 1: k=1 1/3; k=2 1 - C(2,2)/C(3,2) = 2/3; k=3 1
    assert pass_at_k_curve(3, 1) == pytest.approx([1 / 3, 2 / 3, 1.0])


@given(
    st.integers(1, 300).flatmap(
        lambda n: st.tuples(st.just(n), st.integers(0, n), st.integers(1, n))
    )
)
def test_pass_at_k_matches_exact_binomials(nck):
    n, c, k = nck
    exact = 1 - Fraction(int(comb(n - c, k, exact=True)), int(comb(n, k, exact=True)))
    assert pass_at_k(n, c, k) == pytest.approx(float(exact), abs=1e-12)


@pytest.mark.parametrize("n,c,k", [(4, 5, 1), (4, -1, 1), (4, 1, 0), (4, 1, 5)])
def test_pass_at_k_rejects_impossible_arguments(n, c, k):
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


# --- one group ------------------------------------------------------------------------------


def test_group_diversity_uses_the_code_view():
    responses = ["Sure.\n```python\nx = 1\n```", "```python\nx = y\n```\nDone"]
    g = group_diversity(responses, successes=[True, False])
    # views x = 1 | x = y -> stream x = 1 x = y: 4 unique of 6 tokens; bigrams
    # x= =1 1x x= =y: 4 unique of 5
    assert g.distinct1 == pytest.approx(4 / 6)
    assert g.distinct2 == pytest.approx(4 / 5)
    assert g.ast_jaccard_distance == pytest.approx(3 / 7)
    assert g.n_parsable == 2
    assert g.unique_ratio == 1.0
    assert g.n_success == 1
    assert g.pass_at_k == pytest.approx([0.5, 1.0])
    assert g.n_tokens == 6


def test_group_diversity_text_task_skips_ast_and_keeps_fences():
    g = group_diversity(["```python\nx\n```", "y"], task="text")
    assert g.ast_jaccard_distance is None and g.n_parsable is None
    assert g.n_tokens == len(tokenize("```python\nx\n```")) + 1
    assert g.pass_at_k is None and g.n_success is None


def test_group_diversity_one_response_and_errors():
    g = group_diversity(["x = 1"])
    assert g.distinct1 == pytest.approx(1.0)
    assert math.isnan(g.self_bleu4) and math.isnan(g.ast_jaccard_distance)
    assert g.unique_ratio == 1.0
    with pytest.raises(ValueError):
        group_diversity([])
    with pytest.raises(ValueError):
        group_diversity(["a", "b"], successes=[True])
