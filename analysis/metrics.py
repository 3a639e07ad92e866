"""Per-prompt teacher-signal metrics: how well teacher scores rank one prompt's rollouts.

For one prompt and one peer-context condition the inputs are aligned 1-D arrays over the
prompt's rollouts: ``s`` the teacher scores (mean response log-probability), ``r`` the rewards and
``y`` the success labels. Six metrics (``docs/metrics.md`` has the full account):

=====================  =======================================  ==================================
metric                 ``compat="default"``                      ``compat="paper"`` (reference code)
=====================  =======================================  ==================================
``spearman``           Spearman rho of (s, r); NaN if s or r     0 when undefined
                       is constant
``kendall``            Kendall tau-b of (s, r); NaN if s or r    Goodman-Kruskal gamma: pairs tied
                       is constant                               in s or r dropped; 0 when no pair
                                                                 is left
``pairwise_accuracy``  over pairs with r_i != r_j, the share     a score tie counts 0; 0 when r is
                       ordered like r; a score tie counts 1/2;   constant
                       NaN when r is constant
``success_auc``        P(s of a success > s of a failure),       0 with one class
                       ties 1/2; NaN with one class
``point_biserial``     Pearson(s, y); NaN if s or y is constant  0 when undefined
``brier_sigmoid``      mean (sigmoid(s) - y)^2                   same
=====================  =======================================  ==================================

Under ``compat="paper"`` every undefined value is 0, as the reference code computed it: for
``pairwise_accuracy`` a prompt with no pair of different rewards counts 0 (it pulls the mean
down, which is why the default reports NaN and leaves the prompt out).

Each metric has two implementations, kept in agreement by the tests:

* the scalar function (``spearman`` ... ``brier_sigmoid``) calls scipy and scikit-learn directly
  and is the readable reference; signature ``f(s, r_or_y, *, compat)``;
* the batch function (``spearman_batch`` ... ``brier_sigmoid_batch``) computes the metric for a
  stack of equally sized prompts at once from a ``PromptBatch``. Calling the library functions
  once per prompt costs several milliseconds per prompt (input validation dominates at n = 8),
  about a minute and a half for a 100k-row scores file; the batch path uses scipy's vectorised
  ``rankdata``/``pearsonr`` and numpy pair-sign matrices instead.

The registry ``analysis/metric_specs.py`` lists the metrics with their labels, chance levels and
directions, and runs them all (``prompt_metrics``, ``batch_metrics``).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property

import numpy as np
from scipy import stats
from scipy.special import expit
from sklearn.metrics import brier_score_loss, roc_auc_score

COMPAT_MODES: tuple[str, ...] = ("default", "paper")

# A metric is computed on a prompt only when it has at least this many rows.
MIN_ROWS = 2


def _check_compat(compat: str) -> None:
    if compat not in COMPAT_MODES:
        raise ValueError(f"compat must be one of {COMPAT_MODES}, got {compat!r}")


@contextmanager
def _quiet_constant_input() -> Iterator[None]:
    # NaN for constant input is the defined outcome here, not something to warn about.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        warnings.simplefilter("ignore", stats.NearConstantInputWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def _undefined(compat: str) -> float:
    return 0.0 if compat == "paper" else float("nan")


def _as_1d(name: str, x, dtype=float) -> np.ndarray:
    a = np.asarray(x, dtype=dtype)
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {a.shape}")
    return a


def _aligned(*pairs: tuple[str, object]) -> list[np.ndarray]:
    arrays = [_as_1d(n, x, bool if n == "y" else float) for n, x in pairs]
    if len({a.shape for a in arrays}) > 1:
        raise ValueError(
            "inputs must have the same length: "
            + ", ".join(f"{n}={a.size}" for (n, _), a in zip(pairs, arrays, strict=True))
        )
    return arrays


# --------------------------------------------------------------------------- scalar reference


def spearman(s, r, *, compat: str = "default") -> float:
    """Spearman rank correlation of scores ``s`` and rewards ``r`` (average ranks for ties).

    Returns NaN when ``s`` or ``r`` is constant or has fewer than two values; 0.0 instead under
    ``compat="paper"``.
    """
    _check_compat(compat)
    s, r = _aligned(("s", s), ("r", r))
    if s.size < 2:
        return _undefined(compat)
    with _quiet_constant_input():
        v = float(stats.spearmanr(s, r).statistic)
    return _undefined(compat) if np.isnan(v) else v


def kendall(s, r, *, compat: str = "default") -> float:
    """Kendall rank correlation of scores ``s`` and rewards ``r``.

    ``compat="default"``: tau-b (``scipy.stats.kendalltau``), NaN when ``s`` or ``r`` is constant.
    ``compat="paper"``: Goodman-Kruskal gamma, (concordant - discordant) / (concordant +
    discordant) over the pairs tied in neither ``s`` nor ``r``; 0.0 when no such pair exists.
    """
    _check_compat(compat)
    s, r = _aligned(("s", s), ("r", r))
    if compat == "paper":
        if s.size < 2:
            return 0.0
        return float(_kendall(*_pair_signs(s[None], r[None]), compat="paper")[0])
    if s.size < 2:
        return float("nan")
    with _quiet_constant_input():
        return float(stats.kendalltau(s, r, variant="b").statistic)


def pairwise_accuracy(s, r, *, compat: str = "default") -> float:
    """Share of rollout pairs with different rewards that the scores order the same way.

    A pair with equal scores counts 1/2 (``compat="default"``) or 0 (``compat="paper"``, as the
    reference code did). With no pair of different rewards: NaN, or 0.0 under ``compat="paper"``
    (the reference's value). No library ships this metric, so it is computed from pair-sign
    matrices (see ``pairwise_accuracy_batch``).
    """
    _check_compat(compat)
    s, r = _aligned(("s", s), ("r", r))
    if s.size < 2:
        return _undefined(compat)
    return float(_pairwise_accuracy(*_pair_signs(s[None], r[None]), compat=compat)[0])


def success_auc(s, y, *, compat: str = "default") -> float:
    """ROC AUC of scores ``s`` for success labels ``y`` (``sklearn.metrics.roc_auc_score``).

    Equals P(score of a success > score of a failure) with ties counting 1/2. NaN when ``y``
    holds one class only; 0.0 instead under ``compat="paper"``.
    """
    _check_compat(compat)
    s, y = _aligned(("s", s), ("y", y))
    if y.all() or not y.any():
        return _undefined(compat)
    return float(roc_auc_score(y, s))


def point_biserial(s, y, *, compat: str = "default") -> float:
    """Point-biserial correlation of scores ``s`` with success labels ``y``
    (``scipy.stats.pointbiserialr``, i.e. Pearson of ``s`` and ``y`` as 0/1).

    NaN when ``s`` or ``y`` is constant or there are fewer than two values; 0.0 instead under
    ``compat="paper"``.
    """
    _check_compat(compat)
    s, y = _aligned(("s", s), ("y", y))
    if s.size < 2:
        return _undefined(compat)
    with _quiet_constant_input():
        v = float(stats.pointbiserialr(y, s).statistic)
    return _undefined(compat) if np.isnan(v) else v


def brier_sigmoid(s, y, *, compat: str = "default") -> float:
    """Brier score of sigmoid(s) as a success probability: mean (sigmoid(s) - y)^2.

    Lower is better. Same in both compat modes (``compat`` is checked, not used). NaN for empty
    input.
    """
    _check_compat(compat)
    s, y = _aligned(("s", s), ("y", y))
    if s.size == 0:
        return float("nan")
    return float(brier_score_loss(y, expit(s), pos_label=True))


# --------------------------------------------------------------------------- batched fast path


class PromptBatch:
    """``G`` prompts of ``n`` rows each as ``(G, n)`` arrays, with the derived arrays several
    metrics share (ranks, pair signs) computed once, on first use."""

    def __init__(self, s, r, y) -> None:
        self.s = np.asarray(s, dtype=float)
        self.r = np.asarray(r, dtype=float)
        self.y = np.asarray(y, dtype=bool)
        if self.s.ndim != 2 or self.s.shape != self.r.shape or self.s.shape != self.y.shape:
            raise ValueError(
                f"s, r, y must be (G, n) arrays of one shape, got {self.s.shape}, {self.r.shape}, {self.y.shape}"
            )
        self.yf = self.y.astype(float)

    @cached_property
    def rank_s(self) -> np.ndarray:
        return stats.rankdata(self.s, axis=1)

    @cached_property
    def pair_signs(self) -> tuple[np.ndarray, np.ndarray]:
        """``sgn(s_i - s_j)`` and ``sgn(r_i - r_j)`` over pairs i < j, shape ``(G, n (n - 1) / 2)``.

        Signs of exact differences, so ties are detected exactly.
        """
        return _pair_signs(self.s, self.r)


def _pair_signs(s: np.ndarray, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    i, j = np.triu_indices(s.shape[1], k=1)
    return np.sign(s[:, i] - s[:, j]), np.sign(r[:, i] - r[:, j])


def _fill_undefined(v: np.ndarray, compat: str) -> np.ndarray:
    v = np.asarray(v, dtype=float)
    return np.where(np.isnan(v), 0.0, v) if compat == "paper" else v


def spearman_batch(b: PromptBatch, compat: str = "default") -> np.ndarray:
    """``spearman`` per prompt: Pearson of the average ranks."""
    with _quiet_constant_input():
        rho = stats.pearsonr(b.rank_s, stats.rankdata(b.r, axis=1), axis=1).statistic
    return _fill_undefined(rho, compat)


def kendall_batch(b: PromptBatch, compat: str = "default") -> np.ndarray:
    """``kendall`` per prompt: tau-b, or gamma under ``compat="paper"``."""
    return _kendall(*b.pair_signs, compat=compat)


def _kendall(ds: np.ndarray, dr: np.ndarray, *, compat: str) -> np.ndarray:
    prod = ds * dr
    num = prod.sum(axis=1)
    if compat == "paper":
        untied = np.abs(prod).sum(axis=1)
        return np.where(untied > 0, num / np.where(untied > 0, untied, 1), 0.0)
    # tau-b = (C - D) / sqrt((pairs untied in s) * (pairs untied in r)).
    denom = np.sqrt((ds != 0).sum(axis=1) * (dr != 0).sum(axis=1))
    return np.where(denom > 0, num / np.where(denom > 0, denom, 1), np.nan)


def pairwise_accuracy_batch(b: PromptBatch, compat: str = "default") -> np.ndarray:
    """``pairwise_accuracy`` per prompt."""
    return _pairwise_accuracy(*b.pair_signs, compat=compat)


def _pairwise_accuracy(ds: np.ndarray, dr: np.ndarray, *, compat: str) -> np.ndarray:
    # Hand-rolled: no library has this metric.
    reward_pairs = dr != 0
    n_pairs = reward_pairs.sum(axis=1)
    hits = (ds * dr > 0).sum(axis=1).astype(float)
    if compat == "default":
        hits += 0.5 * ((ds == 0) & reward_pairs).sum(axis=1)
    return np.where(n_pairs > 0, hits / np.where(n_pairs > 0, n_pairs, 1), _undefined(compat))


def success_auc_batch(b: PromptBatch, compat: str = "default") -> np.ndarray:
    """``success_auc`` per prompt by Mann-Whitney: AUC = (rank sum of successes - n1 (n1 + 1) / 2)
    / (n1 n0); average ranks give ties 1/2, as ``roc_auc_score`` does."""
    n1 = b.yf.sum(axis=1)
    n0 = b.s.shape[1] - n1
    both = (n1 > 0) & (n0 > 0)
    u = (b.rank_s * b.yf).sum(axis=1) - n1 * (n1 + 1) / 2
    return np.where(both, u / np.where(both, n1 * n0, 1), _undefined(compat))


def point_biserial_batch(b: PromptBatch, compat: str = "default") -> np.ndarray:
    """``point_biserial`` per prompt: Pearson of s and y as 0/1."""
    with _quiet_constant_input():
        v = stats.pearsonr(b.s, b.yf, axis=1).statistic
    return _fill_undefined(v, compat)


def brier_sigmoid_batch(b: PromptBatch, compat: str = "default") -> np.ndarray:
    """``brier_sigmoid`` per prompt."""
    return ((expit(b.s) - b.yf) ** 2).mean(axis=1)
