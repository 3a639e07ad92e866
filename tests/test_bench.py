"""``mopd-eval bench``: every task from its fixture on a tiny real model, metrics, resume, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mopd_eval.bench import markdown_table, summarize
from mopd_eval.cli import main
from mopd_eval.diversity import pass_at_k
from mopd_eval.jsonl import iter_jsonl
from mopd_eval.pipeline import verify_safely
from mopd_eval.tasks.base import Problem
from mopd_eval.verdict import Verdict

FIX = Path(__file__).parent / "fixtures"
DATA = {"lcb": "lcb_release.jsonl", "aime24": "aime24.jsonl", "aime25": "aime25.jsonl", "hmmt25": "hmmt25.jsonl",
        "deepmath": "deepmath.jsonl", "sciknoweval": "sciknoweval.jsonl", "toolalpaca": "toolalpaca_eval.json"}
ALL = ["arith", "humaneval", *DATA]


def rows(path):
    return [o for _, o in iter_jsonl(path)]


def row(pid, success, status=None, partial=None):
    return {"problem_id": pid, "success": success, "status": status or ("correct" if success else "wrong"),
            "partial": float(success) if partial is None else partial, "n_tokens": 3,
            "timings": {"generate_s": 0.5, "verify_s": 0.25}, "finish_reason": "stop"}


def test_summarize_metrics_by_hand():
    n = 4
    data = ([row("a", True)] * 4 + [row("b", True)] + [row("b", False, partial=0.5)] * 3
            + [row("c", False)] * 4 + [row("d", False, "invalid_test")] * 4)
    res = summarize(data, ["a", "b", "c", "d"], n)
    m, c = res["metrics"], res["counts"]
    assert m["mean@4"] == pytest.approx((1 + 0.25 + 0) / 3)
    for k in range(1, 5):
        want = (pass_at_k(4, 4, k) + pass_at_k(4, 1, k) + pass_at_k(4, 0, k)) / 3
        assert m["pass@k"][str(k)] == pytest.approx(want)
    assert m["pass@k"]["1"] == pytest.approx(m["mean@4"]) and m["pass@k"]["4"] == pytest.approx(2 / 3)
    assert m["partial_credit"]["value"] == pytest.approx((1 + (1 + 1.5) / 4 + 0) / 3)
    assert "partial credit" in m["partial_credit"]["label"]
    assert (c["problems"], c["problems_scored"], c["problems_invalid"], c["invalid_problem_ids"]) == (4, 3, 1, ["d"])
    assert c["successes"] == 5 and c["problems_solved_at_least_once"] == 2
    assert c["status"] == {"wrong": 7, "correct": 5, "invalid_test": 4}
    assert res["per_problem"]["b"] == {"successes": 1, "samples": 4}
    assert res["timing"]["generate_s"] == pytest.approx(8.0) and res["timing"]["generated_tokens"] == 48


def test_summarize_edge_cases():
    with pytest.raises(ValueError, match="exactly n=2"):
        summarize([row("a", True)], ["a"], 2)
    with pytest.raises(ValueError, match="unknown problem"):
        summarize([row("z", True)], ["a"], 1)
    res = summarize([row("a", False, "invalid_test")], ["a"], 1)
    assert res["metrics"]["mean@1"] is None and res["metrics"]["pass@k"] == {"1": None}
    assert "| - |" in markdown_table([{"task": "t", "config": {"model": "m"}, **res}])


class _Fragile:
    """A task whose verifier raises on one response: the others keep their verdicts."""

    name = "fragile"

    def verify(self, problems, responses, *, progress=False):
        if "boom" in responses:
            raise RuntimeError("verifier bug")
        return [Verdict.correct() for _ in responses]


def test_a_raising_verifier_costs_only_its_sample():
    p = Problem("p", "q", None)
    v = verify_safely(_Fragile(), [p] * 3, ["ok", "boom", "ok"])
    assert [x.status for x in v] == ["correct", "verifier_error", "correct"]
    assert "RuntimeError: verifier bug" in v[1].feedback


def bench_args(model, out, tasks, *extra):
    args = ["bench", "--model", str(model), "-n", "2", "--limit", "2", "--max-tokens", "8", "--seed", "3",
            "--out", str(out)]
    for t in tasks:
        args += ["--task", t]
        if t in DATA:
            args += ["--data", f"{t}={FIX / DATA[t]}"]
    return args + list(extra)


@pytest.fixture(scope="module")
def all_tasks_run(tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "all"
    assert main(bench_args(tiny_model_dir, out, ALL)) == 0
    return out


def test_every_task_runs_from_its_fixture_into_one_combined_table(all_tasks_run):
    out = all_tasks_run
    table = (out / "table.md").read_text()
    for t in ALL:
        d = out / t
        samples = rows(d / "samples.jsonl")
        assert len(samples) == 4 and {s["task"] for s in samples} == {t}
        assert [(s["problem_id"], s["sample_index"]) for s in samples][:2] == [(samples[0]["problem_id"], 0),
                                                                             (samples[0]["problem_id"], 1)]
        for s in samples:
            assert isinstance(s["success"], bool) and s["status"] and 0 < s["n_tokens"] <= 8
            assert s["timings"]["generate_s"] > 0 and s["timings"]["verify_s"] >= 0
            assert (s["feedback"] is None) == s["success"]
        res = json.loads((d / "results.json").read_text())
        assert res["config"]["task"] == t and res["config"]["sampling"]["seed"] == 3 and res["config"]["sampling"]["n"] == 2
        assert res["config"]["data"] == (str(FIX / DATA[t]) if t in DATA else None)
        assert set(res["metrics"]["pass@k"]) == {"1", "2"} and "torch" in res["versions"]
        assert res["counts"]["samples"] == 4
        assert f"| {t} |" in table and (d / "table.md").exists()
    assert not (out / "results.json").exists()
    combined = json.loads((out / "summary.json").read_text())
    assert list(combined["tasks"]) == ALL
    assert json.loads((out / "arith" / "results.json").read_text())["config"]["task_options"] == {"per_level": 20, "levels": [1, 2, 3, 4, 5]}


def test_rerun_of_a_finished_run_only_rewrites_results(all_tasks_run, tiny_model_dir):
    before = rows(all_tasks_run / "arith" / "samples.jsonl")
    (all_tasks_run / "arith" / "results.json").unlink()
    assert main(bench_args(tiny_model_dir, all_tasks_run, ALL)) == 0
    assert rows(all_tasks_run / "arith" / "samples.jsonl") == before
    assert (all_tasks_run / "arith" / "results.json").exists()


def test_a_finished_run_never_loads_the_model(all_tasks_run):
    from mopd_eval.bench import TaskRun, run_task
    from mopd_eval.pipeline import SamplingConfig
    from mopd_eval.tasks import get_task

    d = all_tasks_run / "aime24"
    config = json.loads((d / "bench_config.json").read_text())["key"]
    task = get_task("aime24")
    run = TaskRun(task, task.load(config["data"], limit=2), d, config)
    cfg = SamplingConfig(n=2, temperature=1.0, top_p=1.0, max_tokens=8, seed=3)

    def no_engine():
        raise AssertionError("the model was loaded for a finished run")

    assert run_task(run, no_engine, cfg)["counts"]["samples"] == 4


def strip_timing(rs):
    return [{k: v for k, v in r.items() if k not in ("timings", "chunk")} for r in rs]


def test_resume_after_a_kill_gives_the_same_samples(tiny_model_dir, tmp_path, capsys):
    full = tmp_path / "full"
    args = bench_args(tiny_model_dir, full, ["arith"], "--limit", "3", "--chunk", "1")
    assert main(args) == 0
    done = rows(full / "samples.jsonl")
    # A run killed during its second chunk: one problem's samples, then a torn line.
    killed = tmp_path / "killed"
    killed.mkdir()
    (killed / "bench_config.json").write_text((full / "bench_config.json").read_text())
    lines = (full / "samples.jsonl").read_text().splitlines()
    (killed / "samples.jsonl.partial").write_text("\n".join(lines[:2]) + "\n" + lines[2][:40])
    assert main([a if a != str(full) else str(killed) for a in args]) == 0
    assert strip_timing(rows(killed / "samples.jsonl")) == strip_timing(done)
    assert not (killed / "samples.jsonl.partial").exists()
    assert [r["chunk"] for r in rows(killed / "samples.jsonl")] == [0, 0, 1, 1, 2, 2]
    # Other settings in the same directory are refused, not mixed.
    assert main([a if a != str(full) else str(killed) for a in args] + ["--seed", "4"]) == 2
    assert "other settings" in capsys.readouterr().err


def test_bad_data_fails_before_the_model_loads_naming_file_and_line(tmp_path, capsys):
    bad = tmp_path / "aime.jsonl"
    bad.write_text('{"id": 1, "problem": "p", "answer": "3"}\n{"id": 2, "problem": "q", "answer": 3\n')
    args = ["bench", "--task", "aime24", "--data", str(bad), "--model", str(tmp_path / "no-model"),
            "--out", str(tmp_path / "o")]
    assert main(args) == 2
    assert f"{bad}:2: malformed JSON" in capsys.readouterr().err
    assert main(["bench", "--task", "aime24", "--out", str(tmp_path / "o")]) == 2
    assert "aime24 needs data" in capsys.readouterr().err
    assert main(["bench", "--task", "arith,nope", "--out", str(tmp_path / "o")]) == 2
    assert "unknown task 'nope'" in capsys.readouterr().err
    assert main(["bench", "--task", "arith", "--task", "lcb", "--data", "x.jsonl", "--out", str(tmp_path / "o")]) == 2
    assert "TASK=PATH" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_lmeval_shaped_results_and_samples(all_tasks_run):
    d = all_tasks_run / "arith"
    lm = json.loads((d / "results_lmeval.json").read_text())
    res = json.loads((d / "results.json").read_text())
    r = lm["results"]["arith"]
    assert r["mean@2,none"] == res["metrics"]["mean@2"] and "mean@2_stderr,none" in r
    assert r["pass@2,none"] == res["metrics"]["pass@k"]["2"] and "pass@2_stderr,none" in r
    assert lm["n-samples"]["arith"] == {"original": 2, "effective": 2}
    assert lm["configs"]["arith"]["repeats"] == 2 and lm["n-shot"]["arith"] == 0
    assert lm["config"]["model_args"].startswith("pretrained=")
    lines = rows(d / "samples_arith.jsonl")
    assert [x["doc_id"] for x in lines] == [0, 1] and all(len(x["resps"][0]) == 2 for x in lines)
    combined = json.loads((all_tasks_run / "results_lmeval.json").read_text())
    assert set(combined["results"]) == set(combined["versions"]) and "humaneval" in combined["results"]


def test_pass_at_k_stderr_is_a_seeded_bootstrap_over_problems():
    import numpy as np

    from mopd_eval.bench import bootstrap_stderr

    rng = np.random.default_rng(1)
    x = rng.random((400, 2))
    se = bootstrap_stderr(x, draws=4000)
    assert se == bootstrap_stderr(x, draws=4000)  # seeded
    assert abs(se[0] - x[:, 0].std(ddof=1) / np.sqrt(400)) < 0.1 * se[0]  # the plain SE of a mean
    assert bootstrap_stderr(x[:1]) == [None, None]


@pytest.mark.parametrize("bad", [["--temperature", "-1"], ["--model", "/nonexistent/model"], ["--top-p", "0"]])
def test_bad_settings_write_nothing_and_the_corrected_run_is_not_refused(tiny_model_dir, tmp_path, capsys, bad):
    out = tmp_path / "o"
    args = bench_args(tiny_model_dir, out, ["arith"])
    assert main(args + bad) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1  # one line, no traceback
    assert not out.exists()
    assert main(args) == 0


def test_an_output_path_that_is_a_file_is_one_line_exit_2(tiny_model_dir, tmp_path, capsys):
    taken = tmp_path / "taken"
    taken.write_text("not a directory\n")
    assert main(bench_args(tiny_model_dir, taken, ["arith"])) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and str(taken) in err
    assert taken.read_text() == "not a directory\n"
