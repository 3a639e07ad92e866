"""Per-prompt teacher-signal metrics: how well teacher scores rank one prompt's rollouts.

For one prompt and one peer-context condition the inputs are aligned 1-D arrays over the
prompt's rollouts: ``s`` the teacher scores (mean response log-probability), ``r`` the rewards and
``y`` the success labels. Six metrics (DESIGN.md, "Teacher score and metrics"):

=====================  =======================================  ==================================
metric                 ``compat="default"``                      ``compat="paper"`` (reference code)
=====================  =======================================  ==================================
``spearman``           Spearman rho of (s, r); NaN if s or r     0 when undefined
                       is constant
``kendall``            Kendall tau-b of (s, r); NaN if s or r    Goodman-Kruskal gamma: pairs tied
                       is constant                               in s or r dropped; 0 when no pair
                                                                 is left
``pairwise_accuracy``  over pairs with r_i != r_j, the share     a score tie counts 0
                       ordered like r; a score tie counts 1/2;
                       NaN when r is constant
``success_auc``        P(s of a success > s of a failure),       0 with one class
                       ties 1/2; NaN with one class
``point_biserial``     Pearson(s, y); NaN if s or y is constant  0 when undefined
``brier_sigmoid``      mean (sigmoid(s) - y)^2                   same
=====================  =======================================  ==================================

``pairwise_accuracy`` stays NaN in both modes when no pair has different rewards: the reference
rules give no value for it, and a 0 would read as "always wrong".

Two implementations, kept in agreement by the tests:

* the scalar functions (``spearman`` ... ``brier_sigmoid``, ``prompt_metrics``) call scipy and
  scikit-learn directly and are the readable reference;
* ``batch_metrics`` computes all six for a stack of equally sized prompts at once. Calling the
  library functions once per prompt costs several milliseconds per prompt (input validation
  dominates at n = 8), about a minute and a half for a 100k-row scores file; the batch path
  uses scipy's vectorised ``rankdata``/``pearsonr`` and numpy pair-sign matrices instead.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
from scipy import stats
from scipy.special import expit
from sklearn.metrics import brier_score_loss, roc_auc_score

METRICS: tuple[str, ...] = (
    "spearman",
    "kendall",
    "pairwise_accuracy",
    "success_auc",
    "point_biserial",
    "brier_sigmoid",
)
LOWER_IS_BETTER: frozenset[str] = frozenset({"brier_sigmoid"})
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
    reference code did). NaN in both modes when no pair has different rewards. No library ships
    this metric, so it is computed from pair-sign matrices (see ``batch_metrics``).
    """
    _check_compat(compat)
    s, r = _aligned(("s", s), ("r", r))
    if s.size < 2:
        return float("nan")
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


def brier_sigmoid(s, y) -> float:
    """Brier score of sigmoid(s) as a success probability: mean (sigmoid(s) - y)^2.

    Lower is better. Same in both compat modes. NaN for empty input.
    """
    s, y = _aligned(("s", s), ("y", y))
    if s.size == 0:
        return float("nan")
    return float(brier_score_loss(y, expit(s), pos_label=True))


def prompt_metrics(s, r, y, *, compat: str = "default") -> dict[str, float]:
    """All six metrics for one prompt's rows; every value is NaN with fewer than two rows."""
    _check_compat(compat)
    s, r, y = _aligned(("s", s), ("r", r), ("y", y))
    if s.size < MIN_ROWS:
        return dict.fromkeys(METRICS, float("nan"))
    return {
        "spearman": spearman(s, r, compat=compat),
        "kendall": kendall(s, r, compat=compat),
        "pairwise_accuracy": pairwise_accuracy(s, r, compat=compat),
        "success_auc": success_auc(s, y, compat=compat),
        "point_biserial": point_biserial(s, y, compat=compat),
        "brier_sigmoid": brier_sigmoid(s, y),
    }


# --------------------------------------------------------------------------- batched fast path


def _pair_signs(s: np.ndarray, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``sgn(s_i - s_j)`` and ``sgn(r_i - r_j)`` over pairs i < j, shape ``(G, n (n - 1) / 2)``.

    Signs of exact differences, so ties are detected exactly.
    """
    i, j = np.triu_indices(s.shape[1], k=1)
    return np.sign(s[:, i] - s[:, j]), np.sign(r[:, i] - r[:, j])


def _kendall(ds: np.ndarray, dr: np.ndarray, *, compat: str) -> np.ndarray:
    prod = ds * dr
    num = prod.sum(axis=1)
    if compat == "paper":
        untied = np.abs(prod).sum(axis=1)
        return np.where(untied > 0, num / np.where(untied > 0, untied, 1), 0.0)
    # tau-b = (C - D) / sqrt((pairs untied in s) * (pairs untied in r)).
    denom = np.sqrt((ds != 0).sum(axis=1) * (dr != 0).sum(axis=1))
    return np.where(denom > 0, num / np.where(denom > 0, denom, 1), np.nan)


def _pairwise_accuracy(ds: np.ndarray, dr: np.ndarray, *, compat: str) -> np.ndarray:
    # Hand-rolled: no library has this metric.
    reward_pairs = dr != 0
    n_pairs = reward_pairs.sum(axis=1)
    hits = (ds * dr > 0).sum(axis=1).astype(float)
    if compat == "default":
        hits += 0.5 * ((ds == 0) & reward_pairs).sum(axis=1)
    return np.where(n_pairs > 0, hits / np.where(n_pairs > 0, n_pairs, 1), np.nan)


def batch_metrics(s, r, y, *, compat: str = "default") -> dict[str, np.ndarray]:
    """All six metrics for ``G`` prompts of ``n`` rows each, given as ``(G, n)`` arrays.

    Row ``g`` of the result equals ``prompt_metrics(s[g], r[g], y[g], compat=compat)`` (up to
    floating-point rounding); with ``n < 2`` every value is NaN. Returns ``{metric: (G,) array}``.
    """
    _check_compat(compat)
    s = np.asarray(s, dtype=float)
    r = np.asarray(r, dtype=float)
    y = np.asarray(y, dtype=bool)
    if s.ndim != 2 or s.shape != r.shape or s.shape != y.shape:
        raise ValueError(
            f"s, r, y must be (G, n) arrays of one shape, got {s.shape}, {r.shape}, {y.shape}"
        )
    g, n = s.shape
    if n < MIN_ROWS or g == 0:
        return {m: np.full(g, np.nan) for m in METRICS}
    undefined = _undefined(compat)
    yf = y.astype(float)

    with _quiet_constant_input():
        rank_s = stats.rankdata(s, axis=1)
        rho = stats.pearsonr(rank_s, stats.rankdata(r, axis=1), axis=1).statistic
        pbs = stats.pearsonr(s, yf, axis=1).statistic

    ds, dr = _pair_signs(s, r)
    tau = _kendall(ds, dr, compat=compat)
    acc = _pairwise_accuracy(ds, dr, compat=compat)

    with np.errstate(invalid="ignore", divide="ignore"):
        # Mann-Whitney: AUC = (rank sum of successes - n1 (n1 + 1) / 2) / (n1 n0); average
        # ranks give ties 1/2, as roc_auc_score does.
        n1 = yf.sum(axis=1)
        n0 = n - n1
        both = (n1 > 0) & (n0 > 0)
        u = (rank_s * yf).sum(axis=1) - n1 * (n1 + 1) / 2
        auc = np.where(both, u / np.where(both, n1 * n0, 1), np.nan)

    brier = ((expit(s) - yf) ** 2).mean(axis=1)

    out = {
        "spearman": rho,
        "kendall": tau,
        "pairwise_accuracy": acc,
        "success_auc": auc,
        "point_biserial": pbs,
        "brier_sigmoid": brier,
    }
    if compat == "paper":
        for m in ("spearman", "success_auc", "point_biserial"):
            out[m] = np.where(np.isnan(out[m]), undefined, out[m])
    return {m: np.asarray(v, dtype=float) for m, v in out.items()}
