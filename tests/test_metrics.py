"""Per-prompt signal metrics: hand-worked values in both compat modes, edge cases, and agreement
of the batched path with scipy / scikit-learn on random data."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import brier_score_loss, roc_auc_score

from analysis.metric_specs import METRIC_SPECS, METRICS, SPECS, batch_metrics, prompt_metrics
from analysis.metrics import (
    PromptBatch,
    brier_sigmoid,
    kendall,
    pairwise_accuracy,
    point_biserial,
    spearman,
    success_auc,
)

NAN = float("nan")


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, abs=1e-12)


# Example A: no score ties; two reward ties. Pairs (i<j): (0,1) C, (0,2) r-tie, (0,3) C,
# (1,2) C, (1,3) r-tie, (2,3) C.  Ranks s [1,3,2,4], r [1.5,3.5,1.5,3.5].
A = dict(s=[0.1, 0.4, 0.35, 0.8], r=[0.0, 1.0, 0.0, 1.0], y=[False, True, False, True])
A_EXPECTED = {
    "default": {
        "spearman": 4 / math.sqrt(5 * 4),
        "kendall": 4 / math.sqrt(6 * 4),  # tau-b: (C-D)/sqrt(untied in s * untied in r)
        "pairwise_accuracy": 1.0,
        "success_auc": 1.0,
        "point_biserial": 0.375 / math.sqrt(0.251875),
        "brier_sigmoid": (
            (sigmoid(0.1)) ** 2
            + (sigmoid(0.4) - 1) ** 2
            + sigmoid(0.35) ** 2
            + (sigmoid(0.8) - 1) ** 2
        )
        / 4,
    },
}
A_EXPECTED["paper"] = {**A_EXPECTED["default"], "kendall": 1.0}  # gamma: 4 concordant / 4 untied

# Example B: a score tie on a pair with different rewards. Pairs: (0,1) s-tie, (0,2) r-tie,
# (0,3) C, (1,2) C, (1,3) r-tie, (2,3) C.  Ranks s [2.5,2.5,4,1], r [3.5,1.5,3.5,1.5].
B = dict(s=[1.0, 1.0, 2.0, 0.0], r=[1.0, 0.0, 1.0, 0.0], y=[True, False, True, False])
B_EXPECTED = {
    "default": {
        "spearman": 3 / math.sqrt(4.5 * 4),
        "kendall": 3 / math.sqrt(5 * 4),
        "pairwise_accuracy": 3.5 / 4,  # the tied pair counts 1/2
        "success_auc": 3.5 / 4,  # success 1.0 vs failure 1.0 counts 1/2
        "point_biserial": 1.0
        / math.sqrt(2.0 * 1.0),  # s centred [0,0,1,-1]; y centred [.5,-.5,.5,-.5]
        "brier_sigmoid": (
            (sigmoid(1) - 1) ** 2 + sigmoid(1) ** 2 + (sigmoid(2) - 1) ** 2 + sigmoid(0) ** 2
        )
        / 4,
    },
}
B_EXPECTED["paper"] = {**B_EXPECTED["default"], "kendall": 1.0, "pairwise_accuracy": 3 / 4}

# Example C: every score equal.
C = dict(s=[0.5, 0.5, 0.5], r=[1.0, 0.0, 0.0], y=[True, False, False])
C_BRIER = ((sigmoid(0.5) - 1) ** 2 + 2 * sigmoid(0.5) ** 2) / 3
C_EXPECTED = {
    "default": {
        "spearman": NAN,
        "kendall": NAN,
        "pairwise_accuracy": 0.5,
        "success_auc": 0.5,
        "point_biserial": NAN,
        "brier_sigmoid": C_BRIER,
    },
    "paper": {
        "spearman": 0.0,
        "kendall": 0.0,
        "pairwise_accuracy": 0.0,
        "success_auc": 0.5,
        "point_biserial": 0.0,
        "brier_sigmoid": C_BRIER,
    },
}

# Example D: one class only (every rollout succeeded with the same reward).
D = dict(s=[-0.2, -0.9, -0.4], r=[1.0, 1.0, 1.0], y=[True, True, True])
D_BRIER = sum((sigmoid(v) - 1) ** 2 for v in D["s"]) / 3
D_EXPECTED = {
    "default": dict.fromkeys(METRICS, NAN) | {"brier_sigmoid": D_BRIER},
    "paper": {
        "spearman": 0.0,
        "kendall": 0.0,
        "pairwise_accuracy": 0.0,  # no pair with different rewards: the reference gives 0
        "success_auc": 0.0,
        "point_biserial": 0.0,
        "brier_sigmoid": D_BRIER,
    },
}

# Example E: perfectly reversed.
E = dict(s=[2.0, 1.0], r=[0.0, 1.0], y=[False, True])
E_EXPECTED = {
    mode: {
        "spearman": -1.0,
        "kendall": -1.0,
        "pairwise_accuracy": 0.0,
        "success_auc": 0.0,
        "point_biserial": -1.0,
        "brier_sigmoid": (sigmoid(2) ** 2 + (sigmoid(1) - 1) ** 2) / 2,
    }
    for mode in ("default", "paper")
}

CASES = [
    ("A", A, A_EXPECTED),
    ("B", B, B_EXPECTED),
    ("C", C, C_EXPECTED),
    ("D", D, D_EXPECTED),
    ("E", E, E_EXPECTED),
]


@pytest.mark.parametrize("compat", ["default", "paper"])
@pytest.mark.parametrize(("name", "case", "expected"), CASES, ids=[c[0] for c in CASES])
def test_hand_worked_examples(name, case, expected, compat):
    got = prompt_metrics(case["s"], case["r"], case["y"], compat=compat)
    for m in METRICS:
        assert same(got[m], expected[compat][m]), (name, compat, m, got[m], expected[compat][m])


@pytest.mark.parametrize("compat", ["default", "paper"])
@pytest.mark.parametrize(("name", "case", "expected"), CASES, ids=[c[0] for c in CASES])
def test_batch_path_matches_hand_worked_examples(name, case, expected, compat):
    got = batch_metrics([case["s"]], [case["r"]], [case["y"]], compat=compat)
    for m in METRICS:
        assert same(float(got[m][0]), expected[compat][m]), (name, compat, m)


def test_single_metric_functions_match_prompt_metrics():
    for compat in ("default", "paper"):
        assert same(spearman(B["s"], B["r"], compat=compat), B_EXPECTED[compat]["spearman"])
        assert same(kendall(B["s"], B["r"], compat=compat), B_EXPECTED[compat]["kendall"])
        assert same(
            pairwise_accuracy(B["s"], B["r"], compat=compat),
            B_EXPECTED[compat]["pairwise_accuracy"],
        )
        assert same(success_auc(B["s"], B["y"], compat=compat), B_EXPECTED[compat]["success_auc"])
        assert same(
            point_biserial(B["s"], B["y"], compat=compat), B_EXPECTED[compat]["point_biserial"]
        )
    assert same(brier_sigmoid(B["s"], B["y"]), B_EXPECTED["default"]["brier_sigmoid"])


@pytest.mark.parametrize("compat", ["default", "paper"])
def test_fewer_than_two_rows_defines_nothing(compat):
    one = prompt_metrics([0.3], [1.0], [True], compat=compat)
    assert all(math.isnan(v) for v in one.values())
    batched = batch_metrics(
        np.zeros((3, 1)), np.zeros((3, 1)), np.zeros((3, 1), bool), compat=compat
    )
    assert all(np.isnan(v).all() and v.shape == (3,) for v in batched.values())


def test_gamma_ignores_pairs_tied_in_either_variable_but_tau_b_does_not():
    # One concordant pair, one discordant, one tied in s only: gamma = 0, tau-b = 0 too;
    # add a second concordant pair tied in r: gamma stays on untied pairs only.
    s, r = [1.0, 2.0, 3.0, 3.0], [0.0, 1.0, 0.5, 1.0]
    # pairs: (0,1)C (0,2)C (0,3)C (1,2)D (1,3)r-tie (2,3)s-tie -> C=3, D=1
    assert kendall(s, r, compat="paper") == pytest.approx((3 - 1) / (3 + 1))
    assert kendall(s, r) == pytest.approx((3 - 1) / math.sqrt(5 * 5))
    assert kendall(s, r) == pytest.approx(stats.kendalltau(s, r).statistic)


def test_compat_must_be_known():
    with pytest.raises(ValueError, match="compat"):
        spearman([1, 2], [1, 2], compat="reference")
    with pytest.raises(ValueError, match="same length"):
        prompt_metrics([1, 2, 3], [1, 2], [True, False])


def test_constant_input_is_quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        prompt_metrics(C["s"], C["r"], C["y"])
        batch_metrics([C["s"]] * 2, [C["r"]] * 2, [C["y"]] * 2)


# --------------------------------------------------------------------------- random agreement


def _brute_pairs(s, r, tie_credit):
    """Independent O(n^2) loops for gamma and pairwise accuracy."""
    conc = disc = hits = pairs = 0.0
    for i in range(len(s)):
        for j in range(i + 1, len(s)):
            ds, dr = np.sign(s[i] - s[j]), np.sign(r[i] - r[j])
            if ds * dr > 0:
                conc += 1
            elif ds * dr < 0:
                disc += 1
            if dr != 0:
                pairs += 1
                hits += 1 if ds == dr else (tie_credit if ds == 0 else 0)
    gamma = (conc - disc) / (conc + disc) if conc + disc else 0.0
    return gamma, (hits / pairs if pairs else (0.0 if tie_credit == 0 else NAN))


def _random_groups(rng, g, n):
    # Coarse values so that ties in scores and rewards are common.
    s = np.round(rng.normal(size=(g, n)), 1)
    r = rng.choice([0.0, 0.5, 1.0], size=(g, n))
    y = r >= 1.0
    return s, r, y


@pytest.mark.parametrize("n", [2, 3, 5, 8])
def test_batch_agrees_with_scipy_and_sklearn_on_random_groups(n):
    rng = np.random.default_rng(n)
    s, r, y = _random_groups(rng, 60, n)
    got = batch_metrics(s, r, y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for g in range(len(s)):
            exp_rho = stats.spearmanr(s[g], r[g]).statistic
            exp_tau = stats.kendalltau(s[g], r[g]).statistic
            exp_pbs = stats.pointbiserialr(y[g], s[g]).statistic
            two = 0 < y[g].sum() < n
            exp_auc = roc_auc_score(y[g], s[g]) if two else NAN
            exp_brier = brier_score_loss(y[g], 1 / (1 + np.exp(-s[g])), pos_label=True)
            _, exp_acc = _brute_pairs(s[g], r[g], 0.5)
            for m, exp in [
                ("spearman", exp_rho),
                ("kendall", exp_tau),
                ("point_biserial", exp_pbs),
                ("success_auc", exp_auc),
                ("brier_sigmoid", exp_brier),
                ("pairwise_accuracy", exp_acc),
            ]:
                assert same(float(got[m][g]), float(exp)), (n, g, m, got[m][g], exp)


@pytest.mark.parametrize("n", [2, 4, 8])
def test_paper_batch_agrees_with_brute_force_and_scalar_path(n):
    rng = np.random.default_rng(100 + n)
    s, r, y = _random_groups(rng, 50, n)
    got = batch_metrics(s, r, y, compat="paper")
    for g in range(len(s)):
        gamma, acc = _brute_pairs(s[g], r[g], 0.0)
        assert got["kendall"][g] == pytest.approx(gamma, abs=1e-12)
        assert same(float(got["pairwise_accuracy"][g]), acc)
        scalar = prompt_metrics(s[g], r[g], y[g], compat="paper")
        for m in METRICS:
            assert same(float(got[m][g]), scalar[m]), (g, m)
            assert not math.isnan(scalar[m]), "paper mode leaves nothing undefined"


def test_paper_pairwise_accuracy_is_zero_without_a_pair_of_different_rewards():
    # Constant rewards (every rollout failed, or every one succeeded with one reward).
    for r in ([0.0, 0.0, 0.0], [1.0, 1.0, 1.0]):
        assert pairwise_accuracy([0.1, 0.5, 0.2], r, compat="paper") == 0.0
        assert math.isnan(pairwise_accuracy([0.1, 0.5, 0.2], r))
    got = batch_metrics(
        [[0.1, 0.5], [0.1, 0.5]],
        [[1.0, 1.0], [0.0, 1.0]],
        [[True, True], [False, True]],
        compat="paper",
    )
    assert list(got["pairwise_accuracy"]) == [0.0, 1.0]


# --------------------------------------------------------------------------- the registry


def test_registry_lists_each_metric_once_with_both_implementations():
    # The paper's six metrics, in the paper's order; a metric added later may sit among them.
    paper = ["spearman", "kendall", "pairwise_accuracy", "success_auc", "point_biserial", "brier_sigmoid"]
    assert [m for m in METRICS if m in paper] == paper and len(set(METRICS)) == len(METRICS)
    assert [s.name for s in METRIC_SPECS] == list(METRICS)
    assert {s.name for s in METRIC_SPECS if s.lower_is_better} == {"brier_sigmoid"}
    assert SPECS["pairwise_accuracy"].chance == 0.5 and SPECS["brier_sigmoid"].chance is None
    assert SPECS["kendall"].label("markdown") == "Kendall τ_b"
    assert SPECS["kendall"].label("markdown", "paper") == "Kendall γ"
    assert SPECS["spearman"].label("latex", "paper") == r"Spearman $\rho$"


@pytest.mark.parametrize("compat", ["default", "paper"])
def test_each_spec_scalar_and_batch_functions_agree(compat):
    rng = np.random.default_rng(7)
    s, r, y = _random_groups(rng, 40, 5)
    batch = PromptBatch(s, r, y)
    for spec in METRIC_SPECS:
        got = spec.batch(batch, compat)
        for g in range(len(s)):
            other = r[g] if spec.against == "reward" else y[g]
            assert same(float(got[g]), spec.scalar(s[g], other, compat=compat)), (spec.name, g)
