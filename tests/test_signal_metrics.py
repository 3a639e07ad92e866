"""``mopd-eval signal-metrics`` end to end: outputs, their shape, tables, figures, and bad input."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.figures import figure4, figure4_buckets
from analysis.metric_specs import METRICS
from analysis.reports import OUTPUT_FILES
from analysis.scores import read_scores
from analysis.signal_metrics import compute_signal_metrics, write_signal_reports
from analysis.tables import table7_csv, table7_latex, table7_markdown
from mopd_eval.cli import main

CONDITIONS = ("feedback", "base", "2s1f", "my_cond", "primary", "random_peer")


def scores_rows(n_prompts=12, group=8, seed=0, conditions=CONDITIONS):
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_prompts):
        ok = rng.random(group) < rng.uniform(0.0, 1.0)
        for i, c in enumerate(conditions):
            s = rng.normal(-1, 0.4, size=group) + 0.25 * i * ok
            rows += [
                {
                    "condition": c,
                    "problem_id": p if p % 2 else f"q{p}",
                    "rollout_id": k,
                    "teacher_score": float(s[k]),
                    "reward": float(ok[k]),
                    "success": bool(ok[k]),
                    "effective": bool(c == "base" or k != 0),
                    "teacher_logprob_sum": -3.0,  # extra fields are allowed
                }
                for k in range(group)
            ]
    return rows


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def scores(tmp_path) -> Path:
    return write_jsonl(tmp_path / "scores.jsonl", scores_rows())


def test_cli_writes_every_output(tmp_path, scores, capsys):
    out = tmp_path / "out"
    rc = main(
        [
            "signal-metrics",
            "--scores",
            str(scores),
            "--out",
            str(out),
            "--bootstrap",
            "200",
            "--seed",
            "5",
            "--pair",
            "2s1f:primary",
        ]
    )
    assert rc == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUT_FILES)
    m = json.loads((out / "metrics.json").read_text())
    assert {"compat", "sample_set", "seed", "conditions", "by_bucket", "paired"} <= set(m)
    assert "per_prompt" not in m
    assert (m["compat"], m["sample_set"], m["seed"], m["n_bootstrap"]) == (
        "default",
        "both_present_effective",
        5,
        200,
    )
    # Paper order first, user-defined conditions after, controls last.
    assert m["condition_order"] == ["base", "primary", "2s1f", "my_cond", "random_peer", "feedback"]
    assert m["controls"] == ["random_peer", "feedback"]
    assert set(m["paired"]) == {f"{c}-vs-base" for c in m["condition_order"][1:]} | {
        "2s1f-vs-primary"
    }
    for cond, stats in m["conditions"].items():
        for metric, s in stats.items():
            assert set(s) == {"mean", "ci_low", "ci_high", "n_prompts"}, (cond, metric)
            assert s["mean"] is None or s["ci_low"] <= s["mean"] <= s["ci_high"]
    assert set(m["by_bucket"]) == {"easy", "medium", "hard"}
    # The default sample set needs a success in the group, so no hard prompt is used.
    assert all(
        s["n_prompts"] == 0 and s["mean"] is None for s in m["by_bucket"]["hard"]["base"].values()
    )

    per_prompt = pd.read_csv(out / "per_prompt.csv")
    assert (
        len(per_prompt)
        == sum(1 for _ in m["condition_order"])
        * m["conditions"]["base"]["brier_sigmoid"]["n_prompts"]
    )
    assert per_prompt.groupby("condition").brier_sigmoid.mean()["base"] == pytest.approx(
        m["conditions"]["base"]["brier_sigmoid"]["mean"]
    )

    for png in ("figure4.png", "figure4_buckets.png"):
        data = (out / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 50_000
    stdout = capsys.readouterr().out
    assert "| Question only |" in stdout


def test_same_seed_same_numbers(scores):
    rows = read_scores(scores)
    a = compute_signal_metrics(rows, n_bootstrap=100, seed=3)
    b = compute_signal_metrics(rows, n_bootstrap=100, seed=3)
    c = compute_signal_metrics(rows, n_bootstrap=100, seed=4)
    assert json.dumps(a) == json.dumps(b)
    assert table7_markdown(a) == table7_markdown(b)
    assert (
        a["conditions"]["2s1f"]["spearman"]["ci_low"]
        != c["conditions"]["2s1f"]["spearman"]["ci_low"]
    )
    assert (
        a["conditions"]["2s1f"]["spearman"]["mean"] == c["conditions"]["2s1f"]["spearman"]["mean"]
    )


def test_paper_compat_and_sample_set_change_the_numbers(scores):
    rows = read_scores(scores)
    d = compute_signal_metrics(rows, n_bootstrap=0)
    p = compute_signal_metrics(rows, n_bootstrap=0, compat="paper")
    everything = compute_signal_metrics(rows, n_bootstrap=0, sample_set="all")
    assert p["compat"] == "paper" and everything["sample_set"] == "all"
    assert p["conditions"]["2s1f"]["kendall"]["mean"] != d["conditions"]["2s1f"]["kendall"]["mean"]
    n_all = everything["conditions"]["base"]["brier_sigmoid"]["n_prompts"]
    assert n_all > d["conditions"]["base"]["brier_sigmoid"]["n_prompts"]
    assert d["conditions"]["base"]["spearman"]["ci_low"] is None  # no bootstrap: no CI
    assert "Kendall γ" in table7_markdown(p) and "Kendall τ_b" in table7_markdown(d)


def test_cli_condition_filter(tmp_path, scores, capsys):
    out = tmp_path / "out"
    assert (
        main(
            [
                "signal-metrics",
                "--scores",
                str(scores),
                "--out",
                str(out),
                "--bootstrap",
                "20",
                "--conditions",
                "2s1f,base",
            ]
        )
        == 0
    )
    m = json.loads((out / "metrics.json").read_text())
    assert m["condition_order"] == ["base", "2s1f"]
    assert (
        main(
            [
                "signal-metrics",
                "--scores",
                str(scores),
                "--out",
                str(tmp_path / "x"),
                "--conditions",
                "2s1f,all",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "'all' not in the scores" in err
    assert not (tmp_path / "x").exists()


# --------------------------------------------------------------------------- bad input


def _run_bad(tmp_path, capsys, text: str) -> str:
    path = tmp_path / "bad.jsonl"
    path.write_text(text)
    out = tmp_path / "out"
    rc = main(["signal-metrics", "--scores", str(path), "--out", str(out), "--bootstrap", "10"])
    assert rc == 2
    assert not out.exists(), "nothing is written for bad input"
    return capsys.readouterr().err


GOOD = {
    "condition": "base",
    "problem_id": 1,
    "rollout_id": 0,
    "teacher_score": -0.5,
    "reward": 1.0,
    "success": True,
    "effective": True,
}


def line(**changes) -> str:
    obj = {**GOOD, **changes}
    return json.dumps({k: v for k, v in obj.items() if v is not ...}) + "\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (line() + '{"condition": "base", "problem_id": 1,\n', "bad.jsonl:2: malformed JSON"),
        (line() + "[1, 2]\n", "bad.jsonl:2: expected a JSON object"),
        (line() + line(rollout_id=1, effective=...), "bad.jsonl:2: field 'effective': missing"),
        (line(success="yes"), "bad.jsonl:1: field 'success': expected true or false"),
        (line(teacher_score="-0.5"), "bad.jsonl:1: field 'teacher_score': expected a number"),
        (line(reward=True), "bad.jsonl:1: field 'reward': expected a number"),
        (line(problem_id=1.5), "bad.jsonl:1: field 'problem_id': expected a string or an integer"),
        (line(condition=""), "bad.jsonl:1: field 'condition': expected a non-empty string"),
        (
            line() + "\n" + line(teacher_score=float("nan")),
            "bad.jsonl:3: field 'teacher_score': expected a finite number",
        ),
        ("", "no score rows (empty file?)"),
        ("\n\n", "no score rows (empty file?)"),
        (line() + line(rollout_id=1) + line(), "appears on lines 1 and 3"),
        (
            line() + line(condition="2s1f", success=False),
            "success=True on line 1 (base) but success=False on line 2 (2s1f)",
        ),
    ],
    ids=[
        "malformed",
        "not-object",
        "missing",
        "bool-type",
        "str-number",
        "bool-number",
        "float-id",
        "empty-condition",
        "nan",
        "empty",
        "blank",
        "duplicate",
        "inconsistent",
    ],
)
def test_bad_input_exits_2_naming_file_and_line(tmp_path, capsys, text, expected):
    err = _run_bad(tmp_path, capsys, text)
    assert "bad.jsonl" in err
    assert expected in err, err


def test_missing_file_and_bad_options(tmp_path, capsys):
    assert (
        main(
            [
                "signal-metrics",
                "--scores",
                str(tmp_path / "nope.jsonl"),
                "--out",
                str(tmp_path / "o"),
            ]
        )
        == 2
    )
    assert "nope.jsonl: file not found" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["signal-metrics", "--scores", "x", "--out", "y", "--bootstrap", "-3"])
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        main(["signal-metrics", "--scores", "x", "--out", "y", "--sample-set", "some"])
    assert e.value.code == 2


def test_read_scores_keeps_json_types(scores):
    rows = read_scores(scores)
    assert len(rows) == len(scores_rows())
    assert {type(r.problem_id) for r in rows} == {int, str}


# --------------------------------------------------------------------------- tables and figures


@pytest.fixture(scope="module")
def metrics():
    return compute_signal_metrics(scores_rows(n_prompts=20), n_bootstrap=200, seed=1)


def test_table7_formats(metrics):
    md = table7_markdown(metrics)
    labels = [
        "Question only",
        "Primary Sol.",
        "2 Suc.+1 Failure",
        "my_cond",
        "Random peers",
        "SDPO feedback",
    ]
    positions = [md.index(f"| {label} |") for label in labels]
    assert positions == sorted(positions)
    assert "Brier ↓" in md and " ± " in md
    base_spearman = metrics["conditions"]["base"]["spearman"]
    assert (
        f"{base_spearman['mean']:.3f} ± {(base_spearman['ci_high'] - base_spearman['ci_low']) / 2:.3f}"
        in md
    )

    csv = pd.read_csv(io.StringIO(table7_csv(metrics)))
    assert list(csv.columns[:7]) == [
        "condition",
        "label",
        "metric",
        "mean",
        "ci_low",
        "ci_high",
        "n_prompts",
    ]
    assert len(csv) == len(METRICS) * len(metrics["condition_order"])
    got = csv.set_index(["condition", "metric"]).loc[("2s1f", "kendall")]
    exp = metrics["conditions"]["2s1f"]["kendall"]
    assert (
        got["mean"] == pytest.approx(exp["mean"], rel=1e-5) and got["n_prompts"] == exp["n_prompts"]
    )
    assert got["p_value_vs_base"] == pytest.approx(
        metrics["paired"]["2s1f-vs-base"]["kendall"]["p_value"], rel=1e-5
    )

    tex = table7_latex(metrics)
    assert tex.count(r"\toprule") == 1 and tex.count(r"\bottomrule") == 1
    assert r"my\_cond" in tex and r"Brier $\downarrow$" in tex
    # A rule separates the paper's conditions from the controls.
    assert tex.index(r"\midrule", tex.index("2 Suc.+1 Failure")) < tex.index("Random peers")


def test_figures_have_the_paper_layout(metrics):
    fig = figure4(metrics)
    axes = fig.get_axes()
    assert len(axes) == len(METRICS)
    titles = [ax.get_title() for ax in axes]
    assert titles[-1] == "Brier (sigmoid) (lower is better)"
    assert [t.get_text() for t in axes[0].get_xticklabels()] == [
        metrics["labels"][c] for c in metrics["condition_order"]
    ]
    base_mean = metrics["conditions"]["base"]["spearman"]["mean"]
    dashed = [ln for ln in axes[0].get_lines() if ln.get_linestyle() == "--"]
    assert any(np.allclose(ln.get_ydata(), base_mean) for ln in dashed)
    assert len(figure4_buckets(metrics).get_axes()) == len(METRICS)


def test_reports_without_base_or_bootstrap(tmp_path):
    m = compute_signal_metrics(
        scores_rows(n_prompts=5, conditions=("primary", "all")), n_bootstrap=0
    )
    paths = write_signal_reports(m, tmp_path / "r")
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == sorted(OUTPUT_FILES)
    table = paths["table7.md"].read_text().split("\n\n")[0]
    assert " ± " not in table  # no CI without a bootstrap
    assert m["paired"] == {}
    assert "*" not in table.replace("**", "")  # bold best stays; no significance marks


# --------------------------------------------------------------------------- labels and small samples


def test_label_from_a_spec_file_shows_in_table7_and_figure(tmp_path, capsys):
    from mopd_eval.contexts import load_spec_file

    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "conditions:\n  - name: my_cond\n    successes: 3\n    label: Three successes\n"
        "    control: true\n"
    )
    conds, _ = load_spec_file(spec)
    m = compute_signal_metrics(
        scores_rows(), n_bootstrap=20, conditions=["base", "2s1f", conds["my_cond"]]
    )
    assert m["labels"]["my_cond"] == "Three successes" and m["controls"] == ["my_cond"]
    assert "| Three successes |" in table7_markdown(m)
    tex = table7_latex(m)
    assert tex.index(r"\midrule", tex.index("2 Suc.+1 Failure")) < tex.index("Three successes")
    ticks = [t.get_text() for t in figure4(m).get_axes()[0].get_xticklabels()]
    assert ticks == ["Question only", "2 Suc.+1 Failure", "Three successes"]
    # The CLI on a scores file: --spec names the rows.
    scores = write_jsonl(tmp_path / "s.jsonl", scores_rows())
    out = tmp_path / "out"
    args = ["signal-metrics", "--scores", str(scores), "--out", str(out), "--bootstrap", "10"]
    assert main([*args, "--spec", str(spec)]) == 0
    assert "| Three successes |" in (out / "table7.md").read_text()
    assert main(args) == 0  # without the spec the name itself
    assert "| my_cond |" in (out / "table7.md").read_text()


def _two_prompt_metrics():
    # Two prompts only: a big, consistent effect whose bootstrap p-value is nonetheless < 0.05.
    rows = []
    for p in range(2):
        for k in range(8):
            ok = k < 4
            for c, lift in (("base", 0.0), ("2s1f", 3.0)):
                rows.append(
                    {
                        "condition": c,
                        "problem_id": p,
                        "rollout_id": k,
                        "teacher_score": -1.0 + lift * ok + 0.01 * k,
                        "reward": float(ok),
                        "success": ok,
                        "effective": True,
                    }
                )
    return compute_signal_metrics(rows, n_bootstrap=500, seed=0)


def test_no_significance_mark_below_five_prompts():
    m = _two_prompt_metrics()
    pair = m["paired"]["2s1f-vs-base"]["spearman"]
    assert pair["n_prompts"] == 2 and pair["p_value"] < 0.05
    table = table7_markdown(m)
    assert "*" not in table.split("\n\n")[0].replace("**", "")
    assert "at least 5 paired prompts" in table
    body = table7_latex(m).split(r"\midrule", 1)[1]
    assert "^{*}" not in body


def _feedback_rows():
    # `feedback` rows are all failures (only failed rollouts carry feedback): one class.
    rows = scores_rows(n_prompts=10, conditions=("base", "primary"))
    for r in [r for r in rows if r["condition"] == "base"]:
        if not r["success"]:
            rows.append(
                {**r, "condition": "feedback", "teacher_score": 5.0}
            )  # sigmoid ~ 1: Brier worst
            rows.append({**r, "condition": "fb2", "teacher_score": -9.0})  # sigmoid ~ 0: Brier best
    return rows


def test_one_class_brier_is_greyed_and_never_bold():
    m = compute_signal_metrics(_feedback_rows(), n_bootstrap=0, sample_set="effective")
    assert m["prompts"]["fb2"]["two_class"] == 0 and m["prompts"]["fb2"]["usable"] > 0
    brier = {c: m["conditions"][c]["brier_sigmoid"]["mean"] for c in m["condition_order"]}
    assert min(brier, key=brier.get) == "fb2"  # the lowest Brier belongs to a one-class row ...
    md = table7_markdown(m)
    fb2_row = next(ln for ln in md.splitlines() if ln.startswith("| fb2 |"))
    assert fb2_row.rstrip(" |").endswith("†") and "**" not in fb2_row.split("|")[-2]
    # ... so the bold Brier goes to a two-class row.
    rows = [ln.split("|") for ln in md.splitlines() if ln.startswith("| ")]
    bold_rows = [r[1].strip() for r in rows if "**" in r[-2]]
    assert bold_rows and "fb2" not in bold_rows and "SDPO feedback" not in bold_rows
    assert "one class only" in md
    tex = table7_latex(m)
    assert r"\textcolor{gray}" in tex


def test_cell_prompt_counts_shown_where_they_differ_from_the_row():
    # Sample set `all` keeps one-class prompts: Brier covers them, the rank metrics do not.
    m = compute_signal_metrics(scores_rows(n_prompts=20), n_bootstrap=0, sample_set="all")
    md = table7_markdown(m)
    lines = {
        ln.split("|")[1].strip(): ln.split("|") for ln in md.splitlines() if ln.startswith("| ")
    }
    shown = 0
    for cond in m["condition_order"]:
        row = lines[m["labels"][cond]]
        assert int(row[2]) == m["prompts"][cond]["usable"]
        for cell, metric in zip(row[3:-1], m["metrics"], strict=True):
            n = m["conditions"][cond][metric]["n_prompts"]
            if n != m["prompts"][cond]["usable"] and n:
                assert cell.strip().endswith(f"[n={n}]"), (cond, metric, cell)
                shown += 1
            else:
                assert "[n=" not in cell
    assert shown > 0
    assert r"{\scriptsize[$n$=" in table7_latex(m)


def test_bucket_figure_leaves_out_empty_buckets(metrics):
    fig = figure4_buckets(metrics)
    ticks = [t.get_text() for t in fig.get_axes()[0].get_xticklabels()]
    assert not any(t.startswith("hard") for t in ticks)  # no hard prompt in the default set
    assert "left out" in fig._suptitle.get_text() and "hard" in fig._suptitle.get_text()


def test_figure_leaves_out_a_metric_undefined_everywhere():
    # Every prompt one-class: AUC and point-biserial are undefined everywhere.
    rows = [
        {
            "condition": "base",
            "problem_id": p,
            "rollout_id": k,
            "teacher_score": 0.1 * k,
            "reward": 0.1 * k,
            "success": False,
            "effective": True,
        }
        for p in range(3)
        for k in range(4)
    ]
    m = compute_signal_metrics(rows, n_bootstrap=0, sample_set="all")
    fig = figure4(m)
    titles = [ax.get_title() for ax in fig.get_axes()]
    # One class everywhere: the two success-label metrics but Brier have nothing to draw.
    assert "Success AUC" not in titles and "Point-biserial r" not in titles and len(titles) == len(METRICS) - 2
    assert "Success AUC (undefined everywhere)" in fig._suptitle.get_text()
