"""``mopd-eval diversity`` end to end: files in, summary.md / summary.json / figures out."""

from __future__ import annotations

import json
import math

import pytest

from mopd_eval.cli import main
from mopd_eval.jsonl import read_jsonl

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def write_rows(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def table_row(md: str, run: str) -> list[str]:
    for line in md.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[0] == run:
            return cells
    raise AssertionError(f"no row for {run} in\n{md}")


@pytest.fixture
def two_runs(tmp_path):
    # Run "a", prompt p1: views "x = 1" and "x = y" (prose and fences dropped); p2 only in "a".
    a = write_rows(
        tmp_path / "a.jsonl",
        [
            {"problem_id": "p1", "response": "Sure.\n```python\nx = 1\n```", "success": True},
            {"problem_id": "p2", "response": "```python\nz = 3\n```", "success": False},
            {"problem_id": "p1", "response": "```python\nx = y\n```\nDone", "success": False},
            {"problem_id": "p2", "response": "z = 4", "success": False},
        ],
    )
    # Run "b", prompt p1: the same program twice, once fenced, once bare.
    b = write_rows(
        tmp_path / "b.jsonl",
        [
            {"problem_id": "p1", "response": "x = 1", "success": True, "extra": "ignored"},
            {"problem_id": "p1", "response": "```\nx = 1\n```", "success": True},
        ],
    )
    return a, b


def test_summary_md_matches_hand_computation(tmp_path, two_runs, capsys):
    a, b = two_runs
    out = tmp_path / "out"
    rc = main(["diversity", "--run", f"a={a}", "--run", f"b={b}", "--intersect", "--out", str(out)])
    assert rc == 0
    md = (out / "summary.md").read_text(encoding="utf-8")
    header = table_row(md, "Run")
    assert header == [
        "Run",
        "Distinct-1 ↑",
        "Distinct-2 ↑",
        "AST Jaccard distance ↑",
        "self-BLEU-4 ↓",
        "Unique ratio ↑",
        "pass@1",
        "pass@2",
        "Prompts",
    ]

    # Run a, prompt p1 (the only common prompt), tokens x = 1 | x = y:
    #   Distinct-1: stream x = 1 x = y -> {x, =, 1, y} = 4 of 6
    #   Distinct-2: x= =1 1x x= =y -> 4 unique of 5
    #   AST: {Module, Assign, Name, Store, Constant} vs {Module, Assign, Name x2, Store, Load}
    #        -> 1 - 4/7
    #   self-BLEU-4: BLEU(x = 1 | x = y): p1 2/3, p2 1/2, p3 0 -> 0.1, p4 (no 4-gram) 0.1,
    #        BP 1 -> (2/3 * 1/2 * 0.1 * 0.1) ** 0.25, the same the other way round
    #   unique ratio 2/2; one success of two: pass@1 = 1/2, pass@2 = 1 - C(1,2)/C(2,2) = 1
    hand_a = [4 / 6, 4 / 5, 1 - 4 / 7, (1 / 300) ** 0.25, 1.0, 0.5, 1.0]
    assert table_row(md, "a") == ["a", *(f"{v:.4f}" for v in hand_a), "1"]

    # Run b, p1: x = 1 twice -> Distinct-1 3/6, Distinct-2 {x=, =1, 1x} 3 of 5, AST 0,
    #   self-BLEU: identical, so p1 = p2 = p3 = 1, but a 3-token response has no 4-gram and
    #   NLTK's smoothing gives that order 0.1 -> 0.1 ** 0.25, not 1;
    #   unique 1/2, both succeed -> pass@1 = pass@2 = 1
    hand_b = [3 / 6, 3 / 5, 0.0, 0.1**0.25, 0.5, 1.0, 1.0]
    assert table_row(md, "b") == ["b", *(f"{v:.4f}" for v in hand_b), "1"]

    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    ra = summary["runs"]["a"]
    assert ra["distinct1"] == pytest.approx(4 / 6)
    assert ra["ast_jaccard_distance"] == pytest.approx(3 / 7)
    assert ra["pass_at_k"] == pytest.approx({"1": 0.5, "2": 1.0})
    assert ra["n_prompts"] == 1 and ra["n_responses"] == 2
    assert summary["config"]["intersect"] is True
    assert summary["config"]["common_k"] == 2
    assert summary["config"]["runs"] == {"a": str(a), "b": str(b)}
    assert "python" in summary["config"]["versions"]

    rows = read_jsonl(out / "per_prompt.jsonl")
    assert [(r["run"], r["problem_id"]) for r in rows] == [("a", "p1"), ("b", "p1")]
    assert rows[0]["n_success"] == 1 and rows[0]["n_parsable"] == 2

    for name in ("diversity_bars.png", "pass_at_k.png", "diversity_vs_pass.png"):
        assert (out / name).read_bytes()[:8] == PNG_MAGIC
    assert table_row(capsys.readouterr().out, "a")[1] == "0.6667"


def test_without_intersect_each_run_uses_its_own_prompts_and_warns(tmp_path, two_runs, capsys):
    a, b = two_runs
    out = tmp_path / "out"
    assert main(["diversity", "--run", f"a={a}", "--run", f"b={b}", "--out", str(out)]) == 0
    assert "different prompts" in capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    ra = summary["runs"]["a"]
    assert ra["n_prompts"] == 2
    # p2: views "z = 3", "z = 4" -> stream z = 3 z = 4: 4 unique of 6; mean with p1's 4/6.
    assert ra["distinct1"] == pytest.approx(4 / 6)
    # p2 has no success: pass@1 = 0 -> mean (0.5 + 0) / 2
    assert ra["pass_at_k"]["1"] == pytest.approx(0.25)
    assert summary["runs"]["b"]["n_prompts"] == 1


def test_text_task_without_verdicts(tmp_path):
    f = write_rows(
        tmp_path / "t.jsonl",
        [
            {"problem_id": 7, "response": "the cat sat"},
            {"problem_id": 7, "response": "the cat ran"},
            {"problem_id": 8, "response": "ok"},
        ],
    )
    out = tmp_path / "out"
    # Stale figures from an earlier report with verdicts must not survive.
    out.mkdir()
    (out / "pass_at_k.png").write_bytes(b"old")
    assert (
        main(
            [
                "diversity",
                "--run",
                f"t={f}",
                "--task",
                "text",
                "--distinct-mode",
                "per-response",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    r = summary["runs"]["t"]
    assert r["ast_jaccard_distance"] is None
    assert r["pass_at_k"] is None
    # per response: prompt 7 -> (1 + 1) / 2 = 1; prompt 8 -> 1 -> mean 1
    assert r["distinct1"] == pytest.approx(1.0)
    # self-BLEU is undefined for the one-response prompt 8, so its mean uses prompt 7 only.
    assert r["n_defined"]["self_bleu4"] == 1
    assert summary["config"]["distinct_mode"] == "per_response"
    md = (out / "summary.md").read_text(encoding="utf-8")
    assert "AST" not in table_row(md, "Run")
    assert table_row(md, "t")[-2] == "—"  # pass@1 without verdicts
    assert not (out / "pass_at_k.png").exists()
    assert not (out / "diversity_vs_pass.png").exists()
    assert (out / "diversity_bars.png").read_bytes()[:8] == PNG_MAGIC


def test_undefined_metric_is_reported_as_dash_and_null(tmp_path):
    f = write_rows(tmp_path / "u.jsonl", [{"problem_id": "p", "response": "not python ("}])
    out = tmp_path / "out"
    assert main(["diversity", "--run", f"u={f}", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["runs"]["u"]["ast_jaccard_distance"] is None  # NaN -> null
    assert summary["runs"]["u"]["n_defined"]["ast_jaccard_distance"] == 0
    row = table_row((out / "summary.md").read_text(encoding="utf-8"), "u")
    assert row[3] == "—" and row[4] == "—"  # AST and self-BLEU undefined for one response
    assert not math.isnan(summary["runs"]["u"]["distinct1"])


@pytest.mark.parametrize(
    "rows,needle",
    [
        ([{"response": "x"}], "a.jsonl:1: field 'problem_id': missing"),
        ([{"problem_id": "p"}], "a.jsonl:1: field 'response': missing"),
        ([{"problem_id": "p", "response": None}], "field 'response': expected a string"),
        ([{"problem_id": [1], "response": "x"}], "field 'problem_id'"),
        ([{"problem_id": "p", "response": "x", "success": 1}], "field 'success'"),
        (
            [
                {"problem_id": "p", "response": "x", "success": True},
                {"problem_id": "p", "response": "y"},
            ],
            "a.jsonl:2: field 'success': present on some",
        ),
        ([], "a.jsonl: no rows"),
    ],
)
def test_bad_rows_exit_2_naming_file_line_field(tmp_path, capsys, rows, needle):
    f = write_rows(tmp_path / "a.jsonl", rows)
    assert main(["diversity", "--run", f"a={f}", "--out", str(tmp_path / "out")]) == 2
    assert needle in capsys.readouterr().err
    assert not (tmp_path / "out" / "summary.json").exists()


def test_bad_command_lines_exit_2(tmp_path, two_runs, capsys):
    a, b = two_runs
    out = str(tmp_path / "out")
    assert main(["diversity", "--run", str(a), "--out", out]) == 2
    assert "NAME=FILE" in capsys.readouterr().err
    assert main(["diversity", "--run", f"x={a}", "--run", f"x={b}", "--out", out]) == 2
    assert "used twice" in capsys.readouterr().err
    assert main(["diversity", "--run", f"x={tmp_path / 'missing.jsonl'}", "--out", out]) == 2
    assert "file not found" in capsys.readouterr().err
    (tmp_path / "bad.jsonl").write_text('{"problem_id": "p", "response": \n', encoding="utf-8")
    assert main(["diversity", "--run", f"x={tmp_path / 'bad.jsonl'}", "--out", out]) == 2
    assert "bad.jsonl:1" in capsys.readouterr().err
    c = write_rows(tmp_path / "c.jsonl", [{"problem_id": "other", "response": "x"}])
    assert (
        main(["diversity", "--run", f"a={a}", "--run", f"c={c}", "--intersect", "--out", out]) == 2
    )
    assert "share no problem_id" in capsys.readouterr().err
    (tmp_path / "a_file").write_text("", encoding="utf-8")
    assert main(["diversity", "--run", f"a={a}", "--out", str(tmp_path / "a_file")]) == 2
    assert "not a directory" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:  # argparse: --run is required
        main(["diversity", "--out", out])
    assert e.value.code == 2
