"""rollouts -> signal on a tiny real model: outputs, resume, and scores against a plain forward."""

from __future__ import annotations

import json

import pytest
import torch

from mopd_eval.cli import main
from mopd_eval.jsonl import iter_jsonl
from mopd_eval.records import read_rollouts


def rows(path):
    return [o for _, o in iter_jsonl(path)]


@pytest.fixture(scope="module")
def rollouts(tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("roll") / "r.jsonl"
    args = ["rollouts", "--task", "arith", "--model", str(tiny_model_dir), "-n", "4", "--limit", "3",
            "--max-tokens", "6", "--seed", "1", "--out", str(out)]
    assert main(args) == 0
    return out, args


def test_rollouts_are_complete_records_with_token_ids(rollouts):
    out, _ = rollouts
    rs = read_rollouts(out)
    assert len(rs) == 12 and len({r.problem_id for r in rs}) == 3
    for r in rs:
        assert r.task == "arith" and isinstance(r.success, bool)
        assert r.meta["seed"] == 1 and r.meta["temperature"] == 1.0
        assert 0 < len(r.meta["response_token_ids"]) <= 6
        assert r.feedback if not r.success else r.feedback is None
    assert not out.with_name(out.name + ".partial").exists()


def test_rollouts_resume_from_partial_and_refuse_other_settings(rollouts, tmp_path, capsys):
    out, args = rollouts
    # A run killed after its first chunk: the partial file holds one problem's group.
    partial = tmp_path / "r.jsonl.partial"
    first = [line for line in out.read_text().splitlines()[:4]]
    partial.write_text("\n".join(first) + "\n" + first[0][:30])  # plus a torn line
    record = json.loads(out.with_name("r.jsonl.run.json").read_text())
    (tmp_path / "r.jsonl.run.json").write_text(json.dumps(record))
    new = args[:-1] + [str(tmp_path / "r.jsonl")]
    assert main(new) == 0
    assert rows(tmp_path / "r.jsonl") == rows(out)  # same samples as the uninterrupted run
    # An unfinished run with other settings is not silently mixed in.
    (tmp_path / "s.jsonl.partial").write_text(first[0] + "\n")
    record["key"]["sampling"]["seed"] = 99
    (tmp_path / "s.jsonl.run.json").write_text(json.dumps(record))
    assert main(args[:-1] + [str(tmp_path / "s.jsonl")]) == 2
    err = capsys.readouterr().err
    assert "other settings: sampling" in err and "--rescore" in err
    # A finished run is recognised: the rerun does nothing and loads no model.
    assert main(args) == 0


def test_signal_end_to_end_resumes_and_matches_a_plain_forward(rollouts, tiny_model_dir, tmp_path, capsys):
    out, _ = rollouts
    report = tmp_path / "signal"
    args = ["signal", "--rollouts", str(out), "--model", str(tiny_model_dir), "--bootstrap", "50", "--out", str(report)]
    assert main(args) == 0
    scores = rows(report / "teacher_scores.jsonl")
    from mopd_eval.contexts import STUDY_CONDITIONS

    assert len(scores) == 12 * len(STUDY_CONDITIONS)  # 12 targets x every study condition
    for name in ("metrics.json", "table7.md", "table7.csv", "table7.tex", "figure4.png", "figure4_buckets.png", "README.md"):
        assert (report / name).exists(), name
    metrics = json.loads((report / "metrics.json").read_text())
    assert "2s1f" in metrics["conditions"] and metrics["seed"] == 0

    # The resumable log lives in work/, which git ignores (a fresh clone scores for itself).
    log = report / "work" / "teacher_scores.jsonl"
    assert (report / "work" / ".gitignore").read_text() == "*\n"
    assert sorted(log.read_text().splitlines()) == sorted(
        (report / "teacher_scores.jsonl").read_text().splitlines()
    )
    # Rerun: nothing left to score, same scores; a torn tail (a kill mid-write) is recovered.
    text = log.read_text().splitlines()
    log.write_text("\n".join(text[:50]) + "\n" + text[50][:20])
    assert main(args) == 0
    again = rows(report / "teacher_scores.jsonl")
    key = lambda r: (r["condition"], r["problem_id"], r["rollout_id"])  # noqa: E731
    a, b = sorted(again, key=key), sorted(scores, key=key)
    assert [key(r) for r in a] == [key(r) for r in b]
    # Rescored pairs sit in another batch composition: equal up to float32 summation order.
    assert all(abs(x["teacher_score"] - y["teacher_score"]) < 1e-5 for x, y in zip(a, b, strict=True))

    # One row against an independent forward pass of the rendered teacher prompt + response ids.
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mopd_eval.contexts import BUILTIN_CONDITIONS, build_context, render_teacher_prompt
    from mopd_eval.records import group_rollouts

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    row = next(r for r in scores if r["condition"] == "2s1f" and r["effective"]) if any(
        r["condition"] == "2s1f" and r["effective"] for r in scores) else next(r for r in scores if r["condition"] == "2s1f")
    group = group_rollouts(read_rollouts(out))[row["problem_id"]]
    i = [r.rollout_id for r in group].index(row["rollout_id"])
    ctx = build_context(group, i, BUILTIN_CONDITIONS["2s1f"])
    prompt = tok(render_teacher_prompt(group[i], ctx, tok, "chat"), add_special_tokens=False)["input_ids"]
    target = group[i].meta["response_token_ids"]
    ids = torch.tensor([prompt + target])
    with torch.no_grad():
        logp = torch.log_softmax(model(ids).logits[0, :-1].float(), -1)
    lp = logp[torch.arange(len(prompt) - 1, len(prompt) + len(target) - 1), torch.tensor(target)]
    assert row["n_tokens"] == len(target) and row["n_prompt_tokens"] == len(prompt)
    assert abs(row["teacher_score"] - lp.mean().item()) < 1e-4
    assert abs(row["logprob_sum"] - lp.sum().item()) < 1e-3


def test_signal_refuses_to_mix_runs(rollouts, tiny_model_dir, tmp_path, capsys):
    out, _ = rollouts
    report = tmp_path / "signal"
    base = ["signal", "--rollouts", str(out), "--model", str(tiny_model_dir), "--bootstrap", "10",
            "--conditions", "base,primary", "--out", str(report)]
    assert main(base) == 0
    assert main([*base, "--placement", "flat"]) == 2
    assert "other settings" in capsys.readouterr().err
    # Adding a condition to a finished study scores only the new one.
    assert main([*base[:-4], "--conditions", "base,primary,failure", "--out", str(report)]) == 0
    assert len(rows(report / "teacher_scores.jsonl")) == 12 * 3
    # --rescore starts over even when the settings change.
    assert main([*base, "--placement", "flat", "--rescore"]) == 0
    assert len(rows(report / "teacher_scores.jsonl")) == 12 * 2


def test_signal_unknown_condition_exit_2(rollouts, tmp_path, capsys):
    out, _ = rollouts
    rc = main(["signal", "--rollouts", str(out), "--conditions", "base,wat", "--out", str(tmp_path / "s")])
    assert rc == 2 and "unknown condition 'wat'" in capsys.readouterr().err


SPEC = """
templates:
  - name: mine
    reprompt: "{prompt}{solution}{another}{failure}{feedback}\\n\\nSolve it."
    solution: "\\nGood:\\n{text}"
    another: "\\nAlso good:\\n{text}"
    failure: "\\nBad:\\n{text}"
    feedback: "\\nNote:\\n{text}"
conditions:
  - name: one-of-each
    successes: 1
    failures: 1
    label: One of each
"""


def test_a_changed_template_text_or_condition_definition_is_not_resumed(rollouts, tiny_model_dir, tmp_path, capsys):
    """The resume key holds the template texts and condition definitions, not their names."""
    out, _ = rollouts
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    report = tmp_path / "signal"
    args = ["signal", "--rollouts", str(out), "--model", str(tiny_model_dir), "--bootstrap", "10", "--spec", str(spec),
            "--templates", "mine", "--conditions", "base,one-of-each", "--limit", "2", "--out", str(report)]
    assert main(args) == 0
    first = rows(report / "teacher_scores.jsonl")
    assert "One of each" in (report / "table7.md").read_text()  # the spec's label reaches Table 7
    spec.write_text(SPEC.replace("Good:", "Correct:"))  # same name, other text
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "templates: " in err and "--rescore" in err and "new --out" in err
    spec.write_text(SPEC.replace("failures: 1", "failures: 0"))  # same name, other definition
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "conditions.one-of-each" in err and "--rescore" in err
    assert rows(report / "teacher_scores.jsonl") == first  # nothing was mixed in
    assert main([*args, "--rescore"]) == 0


def test_a_response_that_disagrees_with_its_token_ids_is_refused(rollouts, tiny_model_dir, tmp_path, capsys):
    out, _ = rollouts
    lines = out.read_text().splitlines()
    row = json.loads(lines[2])
    row["response"] = row["response"] + " edited"
    lines[2] = json.dumps(row)
    edited = tmp_path / "edited.jsonl"
    edited.write_text("\n".join(lines) + "\n")
    args = ["signal", "--rollouts", str(edited), "--model", str(tiny_model_dir), "--out", str(tmp_path / "s")]
    assert main(args) == 2
    assert f"{edited}:3: field 'meta.response_token_ids'" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def test_a_bad_model_leaves_no_work_directory(rollouts, tmp_path, capsys):
    out, _ = rollouts
    report = tmp_path / "s"
    assert main(["signal", "--rollouts", str(out), "--model", str(tmp_path / "missing"), "--out", str(report)]) == 2
    assert "model" in capsys.readouterr().err
    assert not report.exists()
    assert main(["signal", "--rollouts", str(out), "--limit", "0", "--out", str(report)]) == 2
    assert "--limit" in capsys.readouterr().err
