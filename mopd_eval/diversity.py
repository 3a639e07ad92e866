"""Solution-diversity metrics of one group of responses (all samples of one prompt).

Pure functions on token lists, code strings and verdict counts. Every function defines its
undefined cases: where a metric has nothing to measure it returns NaN rather than a number that
would pull a mean over prompts, and the aggregation counts how many prompts each mean uses.

Definitions (docs/diversity.md):

- tokens: the regex ``[A-Za-z_][A-Za-z0-9_]*|\\d+|\\S`` (identifiers, digit runs, single
  non-space characters) over the response's view: the extracted code for code tasks, the whole
  text otherwise;
- Distinct-n: unique n-grams / n-grams (Li et al., 2016), over the group's concatenated token
  stream (the paper's way) or averaged per response;
- AST distance: weighted Jaccard distance of node-type multisets, mean over parsable pairs;
- self-BLEU-4: BLEU-4 of each response against the others, mean (Zhu et al., 2018, Texygen);
- unique-response ratio; pass@k (Chen et al., 2021, unbiased estimator).
"""

from __future__ import annotations

import ast
import math
import re
import warnings
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from mopd_eval.code_extract import extract_code

TOKEN_PATTERN = r"[A-Za-z_][A-Za-z0-9_]*|\d+|\S"
_TOKEN_RE = re.compile(TOKEN_PATTERN)

DistinctMode = Literal["stream", "per_response"]
Task = Literal["code", "text"]


def tokenize(text: str) -> list[str]:
    """Split ``text`` into identifier, digit-run and single-symbol tokens; whitespace is dropped.

    >>> tokenize("x1 = foo(42)+_y")
    ['x1', '=', 'foo', '(', '42', ')', '+', '_y']
    """
    return _TOKEN_RE.findall(text)


def _ngrams(tokens: Sequence[str], n: int) -> list[tuple[str, ...]]:
    # Shifted copies of unequal length: zip stops at the shortest, the last full n-gram.
    return list(zip(*(tokens[i:] for i in range(n)), strict=False))


def distinct_n(
    token_lists: Sequence[Sequence[str]], n: int, *, mode: DistinctMode = "stream"
) -> float:
    """Distinct-n of a group: the number of unique n-grams divided by the number of n-grams.

    Parameters
    ----------
    token_lists : one token list per response, in group order.
    n : n-gram order, >= 1.
    mode :
        ``"stream"`` (default, the paper's computation): the token lists are concatenated into
        one sequence and its n-grams counted, so for n >= 2 the n-1 n-grams that span the end
        of one response and the start of the next are counted too (k responses add at most
        (k-1)(n-1) such n-grams; with a few hundred tokens a response their effect is small,
        and keeping them reproduces the paper's numbers).
        ``"per_response"``: Distinct-n of each response alone, averaged over the responses
        that have at least one n-gram.

    Returns
    -------
    float in (0, 1]; NaN when there is no n-gram at all (stream shorter than n tokens, or in
    ``per_response`` mode no response with n tokens). One response is fine: its own value.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if mode == "stream":
        stream = [t for tokens in token_lists for t in tokens]
        grams = _ngrams(stream, n)
        return len(set(grams)) / len(grams) if grams else math.nan
    if mode == "per_response":
        values = [len(set(g)) / len(g) for g in (_ngrams(t, n) for t in token_lists) if g]
        return float(np.mean(values)) if values else math.nan
    raise ValueError(f"mode must be 'stream' or 'per_response', got {mode!r}")


def ast_node_counts(code: str) -> Counter[str] | None:
    """Multiset of AST node-type names of ``code`` (``type(node).__name__`` over ``ast.walk``).

    Returns None when the code does not parse, and for empty or whitespace-only code: an empty
    module is no solution, and counting it ({Module: 1}) would make every pair with it look
    maximally different.
    """
    if not code.strip():
        return None
    try:
        with warnings.catch_warnings():
            # Invalid escapes etc. warn at parse time; they are the model's text, not our problem.
            warnings.simplefilter("ignore")
            tree = ast.parse(code)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        # ValueError: NUL bytes; RecursionError/MemoryError: pathologically nested input.
        return None
    return Counter(type(node).__name__ for node in ast.walk(tree))


def ast_jaccard_distance(a: Mapping[str, int], b: Mapping[str, int]) -> float:
    """Weighted Jaccard distance of two node-type multisets: 1 - sum(min) / sum(max).

    0 for identical multisets, 1 for disjoint ones. NaN when both are empty (no node at all);
    counts from ``ast_node_counts`` are never empty.
    """
    keys = a.keys() | b.keys()
    inter = sum(min(a.get(k, 0), b.get(k, 0)) for k in keys)
    union = sum(max(a.get(k, 0), b.get(k, 0)) for k in keys)
    return 1.0 - inter / union if union else math.nan


def mean_pairwise_ast_distance(codes: Sequence[str]) -> tuple[float, int]:
    """Mean ``ast_jaccard_distance`` over all unordered pairs of parsable codes.

    Returns ``(mean distance, number of parsable codes)``; the mean is NaN with fewer than two
    parsable codes. Unparsable codes are left out, not counted as distance 1.
    """
    counts = [c for c in map(ast_node_counts, codes) if c is not None]
    p = len(counts)
    if p < 2:
        return math.nan, p
    # Hand-vectorised rather than a library call: scipy's jaccard is the boolean set version,
    # and the weighted (min/max) form over a count matrix is two numpy reductions.
    types = sorted(set().union(*counts))
    m = np.array([[c.get(t, 0) for t in types] for c in counts], dtype=np.float64)
    inter = np.minimum(m[:, None, :], m[None, :, :]).sum(-1)
    union = np.maximum(m[:, None, :], m[None, :, :]).sum(-1)
    iu = np.triu_indices(p, k=1)
    return float(np.mean(1.0 - inter[iu] / union[iu])), p


def self_bleu(token_lists: Sequence[Sequence[str]], max_order: int = 4) -> float:
    """Self-BLEU: the mean over responses of BLEU(response, references = the other responses).

    BLEU is NLTK's ``sentence_bleu`` (Texygen's self-BLEU): uniform weights up to
    ``max_order``, n-gram counts clipped by their largest count in any one reference, brevity
    penalty against the reference length closest to the response's (the shorter on a tie),
    and Chen & Cherry smoothing method 1: an order with no match gets precision
    0.1 / (the response's n-grams of that order). Consequences of that definition, pinned down by
    the tests: a response sharing no unigram with any other scores 0, an empty response scores
    0, and an order longer than the response gets precision 0.1 (its n-gram count is taken as
    1), so identical responses shorter than ``max_order`` tokens score below 1. Higher means
    more alike (less diverse).

    Returns NaN with fewer than two responses (nothing to compare against).
    """
    # Not nltk.sentence_bleu itself: it recounts every reference's n-grams for every
    # hypothesis, O(k^2 L) for k responses of L tokens (about 6 s for one prompt of 64
    # samples here). Counting each response once and keeping, per n-gram, the two largest
    # counts and the owner of the largest gives every "max over the others" in O(1).
    # tests/test_diversity_metrics.py checks equality with NLTK on random groups.
    k = len(token_lists)
    if k < 2:
        return math.nan
    counts = [[Counter(_ngrams(t, n)) for n in range(1, max_order + 1)] for t in token_lists]
    top: list[dict[tuple[str, ...], tuple[int, int, int]]] = []  # gram -> (c1, owner1, c2)
    for n in range(max_order):
        best: dict[tuple[str, ...], tuple[int, int, int]] = {}
        for j in range(k):
            for g, c in counts[j][n].items():
                c1, o1, c2 = best.get(g, (0, -1, 0))
                best[g] = (c, j, c1) if c > c1 else (c1, o1, max(c2, c))
        top.append(best)
    lengths = [len(t) for t in token_lists]
    log_weight = 1.0 / max_order
    scores = []
    for j in range(k):
        hyp_len = lengths[j]
        logs = []
        matched_unigram = False
        for n in range(max_order):
            num = 0
            for g, c in counts[j][n].items():
                c1, o1, c2 = top[n][g]
                num += min(c, c2 if o1 == j else c1)
            den = max(1, sum(counts[j][n].values()))
            if n == 0:
                matched_unigram = num > 0
            logs.append(math.log((num if num else 0.1) / den))
        if not matched_unigram:
            scores.append(0.0)
            continue
        ref_len = min((lengths[i] for i in range(k) if i != j),
                      key=lambda r: (abs(r - hyp_len), r))
        bp = 1.0 if hyp_len > ref_len else math.exp(1 - ref_len / hyp_len)
        scores.append(bp * math.exp(math.fsum(log_weight * x for x in logs)))
    return float(np.mean(scores))


def unique_ratio(texts: Sequence[str]) -> float:
    """Distinct texts after stripping surrounding whitespace, divided by the number of texts.

    1 when all differ, 1/k when all k are the same. NaN for an empty sequence.
    """
    if not texts:
        return math.nan
    return len({t.strip() for t in texts}) / len(texts)


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k estimate from ``n`` samples of which ``c`` succeeded: 1 - C(n-c,k)/C(n,k).

    Computed as the product 1 - prod_{i=n-c+1}^{n} (1 - k/i) (Chen et al., 2021), which stays
    exact-to-rounding where the binomials overflow. Raises ValueError unless 0 <= c <= n and
    1 <= k <= n.
    """
    if not (0 <= c <= n):
        raise ValueError(f"need 0 <= c <= n, got n={n}, c={c}")
    if not (1 <= k <= n):
        raise ValueError(f"need 1 <= k <= n, got n={n}, k={k}")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def pass_at_k_curve(n: int, c: int) -> list[float]:
    """``[pass_at_k(n, c, k) for k in 1..n]``."""
    return [pass_at_k(n, c, k) for k in range(1, n + 1)]


def response_view(text: str, task: Task) -> str:
    """What the metrics look at: the extracted code for ``"code"``, the text for ``"text"``."""
    if task == "code":
        return extract_code(text)
    if task == "text":
        return text
    raise ValueError(f"task must be 'code' or 'text', got {task!r}")


@dataclass(frozen=True)
class GroupDiversity:
    """All metrics of one group. ``None`` marks a metric not computed (AST for text tasks,
    pass@k without verdicts); NaN marks one computed but undefined for this group."""

    n_responses: int
    n_tokens: int
    distinct1: float
    distinct2: float
    ast_jaccard_distance: float | None
    n_parsable: int | None
    self_bleu4: float
    unique_ratio: float
    n_success: int | None
    pass_at_k: list[float] | None  # index k-1 holds pass@k, k = 1..n_responses


def group_diversity(
    responses: Sequence[str],
    *,
    task: Task = "code",
    distinct_mode: DistinctMode = "stream",
    successes: Sequence[bool] | None = None,
) -> GroupDiversity:
    """Every diversity metric of one prompt's responses (in group order), on their view.

    ``successes``, when given, must have one verdict per response; it adds pass@k for
    k = 1..len(responses). Raises ValueError for an empty group or mismatched verdicts.
    """
    if not responses:
        raise ValueError("a group needs at least one response")
    views = [response_view(r, task) for r in responses]
    tokens = [tokenize(v) for v in views]
    if task == "code":
        ast_dist, n_parsable = mean_pairwise_ast_distance(views)
    else:
        ast_dist, n_parsable = None, None
    n_success = curve = None
    if successes is not None:
        if len(successes) != len(responses):
            raise ValueError(f"{len(successes)} verdicts for {len(responses)} responses")
        n_success = sum(bool(s) for s in successes)
        curve = pass_at_k_curve(len(responses), n_success)
    return GroupDiversity(
        n_responses=len(responses),
        n_tokens=sum(map(len, tokens)),
        distinct1=distinct_n(tokens, 1, mode=distinct_mode),
        distinct2=distinct_n(tokens, 2, mode=distinct_mode),
        ast_jaccard_distance=ast_dist,
        n_parsable=n_parsable,
        self_bleu4=self_bleu(tokens, 4),
        unique_ratio=unique_ratio(views),
        n_success=n_success,
        pass_at_k=curve,
    )
