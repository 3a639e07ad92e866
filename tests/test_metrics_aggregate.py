"""Sample sets, difficulty buckets, the per-prompt table, bootstrap CIs, paired comparisons and the
``compute_signal_metrics`` object."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from analysis.aggregate import (
    BUCKETS,
    bootstrap_means,
    bootstrap_means_naive,
    compute_signal_metrics,
    difficulty_bucket,
    paired_difference,
    parse_pair,
    per_prompt_table,
    select_sample_set,
    summarize,
)
from analysis.metric_specs import METRICS, prompt_metrics
from analysis.scores import ScoreRow, as_scores_frame
from mopd_eval.errors import InputError


def row(cond, pid, rid, score, ok, eff=True, reward=None):
    return ScoreRow(
        cond, pid, rid, float(score), float(ok if reward is None else reward), bool(ok), bool(eff)
    )


def make_rows(conditions=("base", "2s1f"), n_prompts=30, group=8, seed=0, lift=None):
    """Synthetic rows: per prompt a success pattern shared by every condition; the score of a
    success gets ``lift[cond]`` added."""
    rng = np.random.default_rng(seed)
    lift = lift or {c: 0.3 * i for i, c in enumerate(conditions)}
    rows = []
    for p in range(n_prompts):
        ok = rng.random(group) < rng.uniform(0.1, 0.9)
        for c in conditions:
            scores = rng.normal(-1, 0.5, size=group) + lift[c] * ok
            rows += [row(c, f"p{p}", k, scores[k], ok[k]) for k in range(group)]
    return rows


# --------------------------------------------------------------------------- buckets, sample sets


@pytest.mark.parametrize(
    ("k", "n", "bucket"),
    [
        (8, 8, "easy"),
        (4, 8, "easy"),
        (3, 8, "medium"),
        (1, 8, "medium"),
        (0, 8, "hard"),
        (2, 4, "easy"),
        (1, 4, "medium"),
        (3, 5, "easy"),
        (2, 5, "medium"),
        (1, 1, "easy"),
    ],
)
def test_difficulty_bucket_thresholds(k, n, bucket):
    assert difficulty_bucket(k, n) == bucket


def test_difficulty_bucket_rejects_impossible_counts():
    with pytest.raises(ValueError):
        difficulty_bucket(5, 4)
    with pytest.raises(ValueError):
        difficulty_bucket(0, 0)


def sample_frame():
    return as_scores_frame(
        [
            # p1: both labels; the failure on rollout 3 is not effective.
            row("2s1f", "p1", 0, 0.1, True),
            row("2s1f", "p1", 1, 0.2, True),
            row("2s1f", "p1", 2, -0.5, False),
            row("2s1f", "p1", 3, -0.1, False, eff=False),
            # p2: only successes.
            row("2s1f", "p2", 0, 0.3, True),
            row("2s1f", "p2", 1, 0.0, True),
            # p3: both labels in the group, but the only failure is not effective.
            row("2s1f", "p3", 0, 0.3, True),
            row("2s1f", "p3", 1, 0.4, True),
            row("2s1f", "p3", 2, 0.9, False, eff=False),
        ]
    )


def test_sample_sets_keep_the_documented_rows():
    f = sample_frame()
    assert len(select_sample_set(f, "all")) == 9
    assert len(select_sample_set(f, "effective")) == 7
    kept = select_sample_set(f, "both_present_effective")
    # p1's effective rows and p3's (its group has a failure, though not an effective one).
    assert sorted(zip(kept.problem_id, kept.rollout_id, strict=True)) == [
        ("p1", 0),
        ("p1", 1),
        ("p1", 2),
        ("p3", 0),
        ("p3", 1),
    ]
    with pytest.raises(InputError, match="sample set"):
        select_sample_set(f, "some")


def test_per_prompt_table_uses_the_sample_set_rows():
    table = per_prompt_table(sample_frame(), sample_set="both_present_effective").set_index(
        "problem_id"
    )
    assert list(table.index) == ["p1", "p3"]
    assert table.loc["p1", "n_rows"] == 3 and table.loc["p1", "n_successes"] == 2
    exp = prompt_metrics([0.1, 0.2, -0.5], [1.0, 1.0, 0.0], [True, True, False])
    for m in METRICS:
        assert table.loc["p1", m] == pytest.approx(exp[m])
    # p3 keeps two successes only: one class, so AUC is undefined, Brier is not.
    assert math.isnan(table.loc["p3", "success_auc"]) and not math.isnan(
        table.loc["p3", "brier_sigmoid"]
    )
    everything = per_prompt_table(sample_frame(), sample_set="all")
    assert everything.set_index("problem_id").loc["p1", "n_rows"] == 4


def test_bucket_counts_distinct_rollouts_over_every_condition():
    rows = [row("base", "q", k, 0.0, k < 3) for k in range(8)]  # 3 of 8 succeed: medium
    rows += [
        row("2s1f", "q", k, 0.0, k < 3) for k in range(4)
    ]  # a condition that scored half the group
    rows += [row("base", "e", k, 0.0, k < 4) for k in range(8)]  # 4 of 8: easy
    rows += [row("base", "h", k, 0.0, False) for k in range(8)]  # 0 of 8: hard
    table = per_prompt_table(as_scores_frame(rows), sample_set="all")
    got = {
        (c, p): (b, n, k)
        for c, p, b, n, k in zip(
            table.condition,
            table.problem_id,
            table.bucket,
            table.group_size,
            table.group_successes,
            strict=True,
        )
    }
    assert got[("base", "q")] == ("medium", 8, 3)
    assert got[("2s1f", "q")] == ("medium", 8, 3)  # bucket of the prompt, not of the 4 rows
    assert got[("base", "e")] == ("easy", 8, 4)
    assert got[("base", "h")] == ("hard", 8, 0)


def test_mixed_id_types_stay_distinct():
    rows = [
        row("base", 1, 0, 0.1, True),
        row("base", 1, 1, 0.0, False),
        row("base", "1", 0, 0.1, True),
        row("base", "1", 1, 0.3, False),
    ]
    table = per_prompt_table(as_scores_frame(rows), sample_set="all")
    assert sorted(map(repr, table.problem_id)) == ["'1'", "1"]
    assert sorted(table.success_auc) == [0.0, 1.0]


# --------------------------------------------------------------------------- bootstrap


@pytest.mark.parametrize("block_cells", [4_000_000, 500])  # one block; many uneven blocks
def test_vectorised_bootstrap_equals_the_naive_loop(monkeypatch, block_cells):
    monkeypatch.setattr("analysis.aggregate._CHUNK_CELLS", block_cells)
    rng = np.random.default_rng(1)
    values = rng.normal(size=(57, 3))
    values[rng.random(values.shape) < 0.2] = np.nan
    values[:, 2] = np.nan
    values[0, 2] = 1.5  # one defined value in the last column: some draws miss it
    fast = bootstrap_means(values, n_boot=300, seed=7)
    slow = bootstrap_means_naive(values, n_boot=300, seed=7)
    np.testing.assert_allclose(fast, slow, equal_nan=True, rtol=1e-12)
    assert np.isnan(fast[:, 2]).any() and (fast[~np.isnan(fast[:, 2]), 2] == 1.5).all()


def test_bootstrap_is_deterministic_and_the_ci_contains_the_mean():
    values = np.random.default_rng(2).normal(0.3, 1.0, size=(40, 2))
    a = summarize(values, n_boot=500, seed=3)
    b = summarize(values, n_boot=500, seed=3)
    c = summarize(values, n_boot=500, seed=4)
    assert a == b
    assert a != c
    for stat, col in zip(a, values.T, strict=True):
        assert stat["mean"] == pytest.approx(col.mean())
        assert stat["ci_low"] < stat["mean"] < stat["ci_high"]
        assert stat["n_prompts"] == 40
        # Percentile CI of a mean of 40 unit-variance values: about +-1.96/sqrt(40).
        assert 0.4 < (stat["ci_high"] - stat["ci_low"]) < 0.85


def test_summarize_undefined_column_and_no_bootstrap():
    values = np.array([[0.5, np.nan], [0.7, np.nan]])
    s = summarize(values, n_boot=0, seed=0)
    assert s[0] == {"mean": pytest.approx(0.6), "ci_low": None, "ci_high": None, "n_prompts": 2}
    assert s[1] == {"mean": None, "ci_low": None, "ci_high": None, "n_prompts": 0}
    assert summarize(np.zeros((0, 2)), n_boot=100, seed=0)[0]["mean"] is None


def test_paired_difference_sign_ci_and_p_value():
    rng = np.random.default_rng(5)
    b = rng.normal(size=(50, 2))
    a = b + np.array([0.25, 0.0])  # better on column 0, identical on column 1
    res = paired_difference(a, b, n_boot=400, seed=0)
    assert res[0]["diff"] == pytest.approx(0.25)
    assert res[0]["ci_low"] == pytest.approx(0.25) and res[0]["ci_high"] == pytest.approx(0.25)
    assert res[0]["p_value"] == pytest.approx(2 / 401)  # every draw > 0
    assert res[1]["diff"] == 0.0 and res[1]["p_value"] == 1.0
    worse = paired_difference(b, a, n_boot=400, seed=0)[0]
    assert worse["diff"] == pytest.approx(-0.25) and worse["ci_high"] < 0


def test_paired_difference_on_noisy_data_is_not_significant_when_there_is_no_effect():
    rng = np.random.default_rng(6)
    a, b = rng.normal(size=(60, 1)), rng.normal(size=(60, 1))
    res = paired_difference(a, b, n_boot=1000, seed=0)[0]
    assert res["ci_low"] < 0 < res["ci_high"]
    assert res["p_value"] > 0.05
    assert res["n_prompts"] == 60


def test_parse_pair_accepts_names_with_colons():
    assert parse_pair("2s1f:base", ["base", "2s1f"]) == ("2s1f", "base")
    assert parse_pair("a:b:base", ["a:b", "base"]) == ("a:b", "base")
    with pytest.raises(InputError, match="pair"):
        parse_pair("2s1f-base", ["base", "2s1f"])


# --------------------------------------------------------------------------- the metrics object


def test_compute_signal_metrics_shape_and_effect_direction():
    rows = make_rows(
        ("base", "primary", "2s1f", "mine"),
        n_prompts=40,
        lift={"base": 0.0, "primary": 0.6, "2s1f": 1.5, "mine": 0.3},
    )
    m = compute_signal_metrics(rows, n_bootstrap=300, seed=11, pairs=["2s1f:primary"])
    assert (
        m["compat"] == "default" and m["sample_set"] == "both_present_effective" and m["seed"] == 11
    )
    assert m["condition_order"] == ["base", "primary", "2s1f", "mine"]
    assert m["labels"] == {
        "base": "Question only",
        "primary": "Primary Sol.",
        "2s1f": "2 Suc.+1 Failure",
        "mine": "mine",
    }
    assert set(m["conditions"]) == set(m["condition_order"])
    for cond in m["condition_order"]:
        assert list(m["conditions"][cond]) == list(METRICS)
        for stat in m["conditions"][cond].values():
            assert set(stat) == {"mean", "ci_low", "ci_high", "n_prompts"}
    assert set(m["by_bucket"]) == set(BUCKETS)
    assert set(m["paired"]) == {
        "primary-vs-base",
        "2s1f-vs-base",
        "mine-vs-base",
        "2s1f-vs-primary",
    }
    assert set(m["paired"]["2s1f-vs-base"]["spearman"]) == {
        "diff",
        "ci_low",
        "ci_high",
        "p_value",
        "n_prompts",
    }
    # Successes score 1.5 higher under 2s1f and no higher under base: every ranking metric improves.
    for metric in ("spearman", "kendall", "success_auc", "point_biserial", "pairwise_accuracy"):
        d = m["paired"]["2s1f-vs-base"][metric]
        assert d["diff"] > 0 and d["ci_low"] > 0 and d["p_value"] < 0.05, metric
        assert d["diff"] == pytest.approx(
            m["conditions"]["2s1f"][metric]["mean"] - m["conditions"]["base"][metric]["mean"]
        )


def test_means_are_over_defined_prompts_and_buckets_partition_them():
    rows = make_rows(("base", "2s1f"), n_prompts=25)
    m = compute_signal_metrics(rows, n_bootstrap=50, sample_set="all")
    pp = pd.DataFrame(m["per_prompt"])
    for cond in ("base", "2s1f"):
        sub = pp[pp.condition == cond]
        for metric in METRICS:
            vals = sub[metric].dropna()
            assert m["conditions"][cond][metric]["n_prompts"] == len(vals)
            assert m["conditions"][cond][metric]["mean"] == pytest.approx(vals.mean())
            assert sum(m["by_bucket"][b][cond][metric]["n_prompts"] for b in BUCKETS) == len(vals)


def test_paper_compat_counts_undefined_values_as_zero():
    rows = make_rows(("base",), n_prompts=12, seed=3)
    rows += [row("base", "flat", k, 0.0, k < 4) for k in range(8)]  # constant scores
    d = compute_signal_metrics(rows, n_bootstrap=0)
    p = compute_signal_metrics(rows, n_bootstrap=0, compat="paper")
    assert (
        p["conditions"]["base"]["spearman"]["n_prompts"]
        == d["conditions"]["base"]["spearman"]["n_prompts"] + 1
    )
    assert p["kendall_variant"] == "goodman_kruskal_gamma" and d["kendall_variant"] == "tau_b"


def test_condition_filter_and_bad_arguments():
    rows = make_rows(("base", "primary", "2s1f"), n_prompts=6)
    m = compute_signal_metrics(rows, n_bootstrap=20, conditions=["2s1f", "base"])
    assert m["condition_order"] == ["base", "2s1f"] and set(m["paired"]) == {"2s1f-vs-base"}
    with pytest.raises(InputError, match="'all' not in the scores"):
        compute_signal_metrics(rows, conditions=["all"])
    with pytest.raises(InputError, match="pair"):
        compute_signal_metrics(rows, n_bootstrap=10, pairs=[("2s1f", "feedback")])
    with pytest.raises(InputError, match="compat"):
        compute_signal_metrics(rows, compat="ref")
    with pytest.raises(InputError, match="bootstrap"):
        compute_signal_metrics(rows, n_bootstrap=-1)


def test_no_base_condition_means_no_default_pairs():
    m = compute_signal_metrics(make_rows(("primary", "2s1f"), n_prompts=6), n_bootstrap=20)
    assert m["paired"] == {}


def test_dataframe_input_is_checked_like_a_file():
    frame = pd.DataFrame([vars(r) for r in make_rows(("base",), n_prompts=4)])
    assert compute_signal_metrics(frame, n_bootstrap=10)["n_rows"] == len(frame)
    broken = frame.assign(success=frame.success.astype(int))
    with pytest.raises(InputError, match="<rows>:1: field 'success'"):
        compute_signal_metrics(broken, n_bootstrap=10)
    with pytest.raises(InputError, match="missing column"):
        compute_signal_metrics(frame.drop(columns=["effective"]))


def test_paper_pairwise_accuracy_counts_a_prompt_without_reward_pairs_as_zero():
    rows = make_rows(("base",), n_prompts=6, seed=5)
    rows += [row("base", "all-fail", k, 0.1 * k, False) for k in range(8)]  # one reward: no pair
    d = compute_signal_metrics(rows, n_bootstrap=0, sample_set="all")
    p = compute_signal_metrics(rows, n_bootstrap=0, sample_set="all", compat="paper")
    dd, pp = (
        d["conditions"]["base"]["pairwise_accuracy"],
        p["conditions"]["base"]["pairwise_accuracy"],
    )
    assert pp["n_prompts"] == dd["n_prompts"] + 1
    per_prompt = pd.DataFrame(p["per_prompt"]).set_index("problem_id")
    assert per_prompt.loc["all-fail", "pairwise_accuracy"] == 0.0


def test_labels_and_controls_come_from_condition_objects():
    from mopd_eval.contexts import BUILTIN_CONDITIONS, Condition

    rows = make_rows(("base", "2s1f", "mine"), n_prompts=6)
    mine = Condition("mine", successes=1, label="My context", control=True)
    m = compute_signal_metrics(
        rows, n_bootstrap=0, conditions=[mine, "2s1f", BUILTIN_CONDITIONS["base"]]
    )
    assert m["condition_order"] == ["base", "2s1f", "mine"]
    assert m["labels"] == {
        "base": "Question only",
        "2s1f": "2 Suc.+1 Failure",
        "mine": "My context",
    }
    assert m["controls"] == ["mine"]
    # Names only: built-ins by their labels, others by their names, nothing a control.
    m = compute_signal_metrics(rows, n_bootstrap=0)
    assert m["labels"]["mine"] == "mine" and m["controls"] == []
    assert m["prompts"]["2s1f"]["usable"] == m["conditions"]["2s1f"]["brier_sigmoid"]["n_prompts"]
