"""Rollout records, JSONL IO, importers and the contexts/import commands: good and bad input."""

from __future__ import annotations

import json
import os

import pytest

from mopd_eval.cli import main
from mopd_eval.errors import InputError
from mopd_eval.importers import import_candidates, import_verl
from mopd_eval.jsonl import AppendLog, iter_jsonl, write_jsonl_atomic
from mopd_eval.records import Rollout, read_rollouts, write_rollouts


def rec(**kw) -> dict:
    base = {"problem_id": "p1", "rollout_id": "r0", "prompt": "Q?", "response": "A", "reward": 1.0}
    base.update(kw)
    return base


def write_lines(path, lines) -> None:
    path.write_text(
        "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines)
    )


def test_roundtrip_and_defaults(tmp_path):
    rows = [
        rec(),
        rec(rollout_id="r1", reward=0.0, feedback="wrong", meta={"step": 3}),
        rec(problem_id=7, rollout_id=0, reward=0.5),
    ]
    f = tmp_path / "r.jsonl"
    write_lines(f, rows)
    rs = read_rollouts(f)
    assert [r.success for r in rs] == [True, False, False]  # reward >= 1.0 by default
    assert rs[2].problem_id == "7" and rs[2].rollout_id == "0"  # ids normalised to strings
    assert rs[1].feedback == "wrong" and rs[1].meta == {"step": 3}
    out = tmp_path / "out.jsonl"
    assert write_rollouts(out, rs) == 3
    assert read_rollouts(out) == rs
    assert read_rollouts(f, threshold=0.5)[2].success


def test_explicit_success_wins_over_threshold(tmp_path):
    f = tmp_path / "r.jsonl"
    write_lines(f, [rec(reward=0.2, success=True)])
    assert read_rollouts(f)[0].success is True


def test_chat_prompt_accepted(tmp_path):
    f = tmp_path / "r.jsonl"
    write_lines(
        f, [rec(prompt=[{"role": "system", "content": "S"}, {"role": "user", "content": "Q?"}])]
    )
    assert read_rollouts(f)[0].prompt_text == "Q?"


@pytest.mark.parametrize(
    "line, field, msg",
    [
        (json.dumps(rec(reward="1")), "reward", "expected int or float"),
        (json.dumps(rec(reward=True)), "reward", "expected int or float"),
        (json.dumps({k: v for k, v in rec().items() if k != "response"}), "response", "missing"),
        (json.dumps(rec(success="yes")), "success", "expected bool"),
        (json.dumps(rec(prompt=[{"role": "user"}])), "prompt", "chat messages"),
        (json.dumps(rec(problem_id=None)), "problem_id", "expected str or int"),
        (json.dumps(rec(meta=[1])), "meta", "expected an object"),
        ('{"problem_id": "p1", "rollout_id": ', None, "malformed JSON"),
        ("[1, 2]", None, "expected a JSON object"),
    ],
)
def test_bad_lines_name_file_line_field(tmp_path, line, field, msg):
    f = tmp_path / "bad.jsonl"
    write_lines(f, [rec(rollout_id="ok"), "", line])
    with pytest.raises(InputError, match=msg) as e:
        read_rollouts(f)
    assert e.value.line == 3 and e.value.field == field and e.value.path == str(f)
    assert str(e.value).startswith(f"{f}:3: ")


def test_duplicate_ids_and_empty_file(tmp_path):
    f = tmp_path / "dup.jsonl"
    write_lines(f, [rec(), rec(response="B")])
    with pytest.raises(
        InputError, match="duplicate rollout_id 'r0' in problem 'p1' \\(first on line 1\\)"
    ):
        read_rollouts(f)
    e = tmp_path / "empty.jsonl"
    e.write_text("\n")
    with pytest.raises(InputError, match="empty"):
        read_rollouts(e)
    with pytest.raises(InputError, match="not found"):
        read_rollouts(tmp_path / "missing.jsonl")


def test_atomic_writer_keeps_old_file_on_failure(tmp_path):
    f = tmp_path / "x.jsonl"
    write_jsonl_atomic(f, [{"a": 1}])

    def rows():
        yield {"a": 2}
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        write_jsonl_atomic(f, rows())
    assert [o for _, o in iter_jsonl(f)] == [{"a": 1}]
    assert os.listdir(tmp_path) == ["x.jsonl"]  # no temp file left behind


def test_append_log_drops_a_torn_tail(tmp_path):
    f = tmp_path / "log.jsonl"
    log = AppendLog(f)
    log.append([{"i": 0}, {"i": 1}])
    with f.open("a") as fh:
        fh.write('{"i": 2, "x"')  # a writer killed mid-line
    log = AppendLog(f)
    assert log.done == [{"i": 0}, {"i": 1}]
    log.append([{"i": 2}])
    assert [o["i"] for _, o in iter_jsonl(f)] == [0, 1, 2]


def test_import_verl_groups_by_step_and_input(tmp_path):
    f = tmp_path / "3.jsonl"
    write_lines(
        f,
        [
            {
                "input": "user\nQ1\nassistant\n",
                "output": "a",
                "score": 1.0,
                "gts": "1",
                "step": 3,
                "acc": True,
                "pred": "1",
            },
            {
                "input": "user\nQ1\nassistant\n",
                "output": "b",
                "score": 0.0,
                "gts": "1",
                "step": 3,
                "acc": False,
                "feedback": "Expected 1",
            },
            {
                "input": "user\nQ2\nassistant\n",
                "output": "c",
                "score": 0.0,
                "gts": "2",
                "step": 3,
                "feedback": "",
            },
        ],
    )
    rs = import_verl([f])
    assert len({r.problem_id for r in rs}) == 2
    assert rs[0].problem_id == rs[1].problem_id and rs[0].rollout_id != rs[1].rollout_id
    assert [r.success for r in rs] == [True, False, False]
    assert rs[1].feedback == "Expected 1" and rs[2].feedback is None
    assert rs[0].meta["acc"] is True and rs[0].meta["pred"] == "1" and rs[0].meta["step"] == 3
    assert rs[0].ground_truth == "1"


def test_import_verl_reports_source_field_names(tmp_path):
    f = tmp_path / "1.jsonl"
    write_lines(f, [{"input": "x", "output": "y", "score": "high"}])
    with pytest.raises(InputError) as e:
        import_verl([f])
    assert e.value.field == "score" and e.value.line == 1


def test_import_candidates(tmp_path):
    f = tmp_path / "candidate_responses.jsonl"
    write_lines(
        f,
        [
            {
                "prompt_id": 0,
                "uid": "u",
                "prompt": "Q",
                "response_id": 0,
                "response_text": "a",
                "reward": 1.0,
                "success": True,
                "feedback_text": "",
                "ground_truth": "1",
                "difficulty_bucket": "easy",
                "rollout_step": 5,
            },
            {
                "prompt_id": 0,
                "uid": "u",
                "prompt": "Q",
                "response_id": 1,
                "response_text": "b",
                "reward": 0.0,
                "success": False,
                "feedback_text": "bad",
                "ground_truth": "1",
                "difficulty_bucket": "easy",
                "rollout_step": 5,
            },
        ],
    )
    rs = import_candidates(f)
    assert [(r.problem_id, r.rollout_id, r.success, r.feedback) for r in rs] == [
        ("0", "0", True, None),
        ("0", "1", False, "bad"),
    ]
    assert rs[0].meta["difficulty_bucket"] == "easy"
    write_lines(f, [{"prompt_id": 0, "prompt": "Q", "response_id": 0, "reward": 1.0}])
    with pytest.raises(InputError) as e:
        import_candidates(f)
    assert e.value.field == "response_text"


def test_cli_import_then_contexts(tmp_path, capsys):
    dump = tmp_path / "2.jsonl"
    write_lines(
        dump,
        [
            {"input": "Q", "output": o, "score": s, "step": 2}
            for o, s in [("a", 1), ("b", 0), ("c", 1), ("d", 0)]
        ],
    )
    rollouts = tmp_path / "r.jsonl"
    assert main(["import", "--format", "verl", str(dump), "--out", str(rollouts)]) == 0
    out = tmp_path / "c.jsonl"
    assert (
        main(
            [
                "contexts",
                "--rollouts",
                str(rollouts),
                "--conditions",
                "2s1f,primary",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    rows = [o for _, o in iter_jsonl(out)]
    assert len(rows) == 8 and {r["condition"] for r in rows} == {"2s1f", "primary"}
    first = rows[0]  # 2s1f, target "a": peers c (success) and b (failure), one success short
    assert first["teacher_user_turn"].startswith(
        "Q\nCorrect solution:\n\nc\nA known failed solution"
    )
    assert first["effective"] is False
    assert "wrote 8 contexts" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args, msg",
    [
        (["--conditions", "2s1f,bogus"], "unknown condition 'bogus'"),
        (["--conditions", ","], "no condition given"),
        (["--templates", "fancy"], "unknown template set"),
    ],
)
def test_cli_contexts_bad_arguments_exit_2(tmp_path, capsys, args, msg):
    rollouts = tmp_path / "r.jsonl"
    write_rollouts(rollouts, [Rollout("p", "a", "Q", "x", 1.0, True)])
    rc = main(["contexts", "--rollouts", str(rollouts), "--out", str(tmp_path / "c.jsonl"), *args])
    assert rc == 2 and msg in capsys.readouterr().err
    assert not (tmp_path / "c.jsonl").exists()


def test_cli_contexts_bad_rollout_file_exit_2(tmp_path, capsys):
    f = tmp_path / "r.jsonl"
    write_lines(f, [rec(), rec(rollout_id="r1", reward=None)])
    rc = main(["contexts", "--rollouts", str(f), "--out", str(tmp_path / "c.jsonl")])
    err = capsys.readouterr().err
    assert rc == 2 and f"{f}:2: field 'reward'" in err
