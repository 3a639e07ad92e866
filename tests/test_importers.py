"""verl and candidate imports: file discovery, step order, duplicates, grouping, transcripts, placement."""

from __future__ import annotations

import json
import shutil

import pytest
from tiny_model import make_tiny_tokenizer

from mopd_eval.cli import main
from mopd_eval.errors import InputError
from mopd_eval.importers import (
    TranscriptParser,
    import_candidate_files,
    import_verl,
    natural_key,
    resolve_inputs,
    transcript_parser,
)
from mopd_eval.jsonl import iter_jsonl
from mopd_eval.records import Rollout, is_transcript, placement_for, read_rollouts

# Qwen2.5-Instruct's template without its tool-call branches: ChatML with a default system turn.
QWEN_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if (message.role == 'user') or (message.role == 'system' and not loop.first) or (message.role == 'assistant') %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def verl_input(tok, messages) -> str:
    """What verl records as ``input``: templated, tokenized, decoded without special tokens."""
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return tok.decode(tok(text, add_special_tokens=False)["input_ids"], skip_special_tokens=True)


def row(inp="user\nQ\nassistant\n", out="a", score=1.0, step=1, **extra) -> dict:
    r = {"input": inp, "output": out, "score": score, "step": step}
    r.update(extra)
    return r


def dump(path, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))


def step_dir(root, steps=(1, 2, 10)):
    """verl's layout: one {step}.jsonl per step, two rollouts of the same prompt in each."""
    for s in steps:
        dump(root / f"{s}.jsonl", [row(out=f"s{s}a", score=1.0, step=s), row(out=f"s{s}b", score=0.0, step=s)])
    (root / "notes.txt").write_text("not a dump")
    return root


@pytest.fixture
def record_warnings():
    seen: list[str] = []
    return seen, seen.append


# ---- finding files ---------------------------------------------------------------------------


def test_natural_key_orders_steps_numerically():
    names = ["10.jsonl", "2.jsonl", "1.jsonl", "step_10/a.jsonl", "step_9/a.jsonl"]
    assert sorted(names, key=natural_key) == ["1.jsonl", "2.jsonl", "10.jsonl", "step_9/a.jsonl", "step_10/a.jsonl"]


def test_directory_is_searched_recursively_in_step_order(tmp_path):
    step_dir(tmp_path / "dumps" / "rollout")
    files = resolve_inputs([tmp_path / "dumps"])
    assert [f.name for f in files] == ["1.jsonl", "2.jsonl", "10.jsonl"]
    rs = import_verl([tmp_path / "dumps"])
    assert [r.meta["step"] for r in rs] == [1, 1, 2, 2, 10, 10]
    assert len({r.problem_id for r in rs}) == 3  # per (prompt, step) by default


def test_glob_and_shell_order_both_give_numeric_order(tmp_path):
    step_dir(tmp_path)
    by_glob = import_verl([str(tmp_path / "*.jsonl")])
    shell_order = [tmp_path / f"{s}.jsonl" for s in (1, 10, 2)]  # how `ls`/a shell glob sorts
    assert [r.response for r in import_verl(shell_order)] == [r.response for r in by_glob]
    assert [r.meta["step"] for r in by_glob] == [1, 1, 2, 2, 10, 10]


@pytest.mark.parametrize(
    "arg, msg",
    [("nope.jsonl", "file not found"), ("*.nothing", "no file matches"), ("empty", "no \\*.jsonl file")],
)
def test_missing_inputs_are_input_errors(tmp_path, arg, msg):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=msg) as e:
        import_verl([str(tmp_path / arg)])
    assert e.value.path == str(tmp_path / arg)


def test_pool_steps_makes_one_group_per_prompt_in_step_order(tmp_path):
    step_dir(tmp_path)
    rs = import_verl([tmp_path], pool_steps=True)
    assert len({r.problem_id for r in rs}) == 1
    assert [r.response for r in rs] == ["s1a", "s1b", "s2a", "s2b", "s10a", "s10b"]
    pid = rs[0].problem_id
    assert [r.rollout_id for r in rs] == [f"{pid}_r{k}" for k in range(6)]
    assert len(pid) == 16  # sha1(input)[:16], the reference's prompt id


def test_step_from_file_name_when_rows_lack_it(tmp_path):
    dump(tmp_path / "7.jsonl", [{"input": "Q", "output": "a", "score": 1}, {"input": "Q", "output": "b", "score": 0}])
    rs = import_verl([tmp_path / "7.jsonl"])
    assert [r.meta["step"] for r in rs] == [7, 7] and rs[0].problem_id.endswith("-s7")


def test_dumps_with_and_without_gts(tmp_path):
    dump(tmp_path / "1.jsonl", [row(gts="42", acc=True, pred="42"), row(out="b", score=0.0)])
    rs = import_verl([tmp_path / "1.jsonl"])
    assert rs[0].ground_truth == "42" and rs[1].ground_truth is None
    assert rs[0].meta["acc"] is True and rs[0].meta["pred"] == "42" and "gts" not in rs[0].meta
    assert rs[0].meta["source_line"] == 1


# ---- duplicates ------------------------------------------------------------------------------


def test_same_file_twice_does_not_double_groups(tmp_path, record_warnings):
    seen, warn = record_warnings
    step_dir(tmp_path)
    once = import_verl([tmp_path / "1.jsonl"])
    twice = import_verl([tmp_path / "1.jsonl", str(tmp_path / "1.jsonl"), tmp_path / "." / "1.jsonl"], warn=warn)
    assert twice == once
    assert len(seen) == 2 and all("given more than once" in w for w in seen)


def test_copied_file_rows_dropped_with_warning(tmp_path, record_warnings):
    seen, warn = record_warnings
    step_dir(tmp_path / "a")
    shutil.copytree(tmp_path / "a", tmp_path / "backup")
    rs = import_verl([tmp_path], pool_steps=True, warn=warn)
    assert len(rs) == 6
    assert len(seen) == 1 and "dropped 6 rows" in seen[0] and "6 from another file" in seen[0]


def test_repeat_within_a_file_dropped_or_kept(tmp_path, record_warnings):
    seen, warn = record_warnings
    dump(tmp_path / "1.jsonl", [row(), row(), row(out="b", score=0.0)])
    assert len(import_verl([tmp_path / "1.jsonl"], warn=warn)) == 2
    assert "1 within one file" in seen[0] and f"{tmp_path / '1.jsonl'}:2 repeats" in seen[0]
    assert len(import_verl([tmp_path / "1.jsonl"], keep_duplicates=True, warn=warn)) == 3
    assert len(seen) == 1


def test_python_warning_without_a_callback(tmp_path):
    dump(tmp_path / "1.jsonl", [row(), row()])
    with pytest.warns(UserWarning, match="dropped 1 rows"):
        import_verl([tmp_path / "1.jsonl"])


# ---- bad rows --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad, field, msg",
    [
        ({"output": "a", "score": 1}, "input", "missing"),
        ({"input": 3, "output": "a", "score": 1}, "input", "expected string"),
        ({"input": "Q", "score": 1}, "output", "missing"),
        ({"input": "Q", "output": "a"}, "score", "missing"),
        ({"input": "Q", "output": "a", "score": "1"}, "score", "expected int or float"),
        ({"input": "Q", "output": "a", "score": 1, "step": "x"}, "step", "expected an integer"),
        ({"input": "Q", "output": "a", "score": 1, "feedback": 5}, "feedback", "expected string"),
        ('{"input": "Q", ', None, "malformed JSON"),
    ],
)
def test_bad_rows_name_file_line_field(tmp_path, bad, field, msg):
    f = tmp_path / "3.jsonl"
    dump(f, [row(), "", bad])
    with pytest.raises(InputError, match=msg) as e:
        import_verl([tmp_path])
    assert (e.value.path, e.value.line, e.value.field) == (str(f), 3, field)


# ---- transcripts and placement ---------------------------------------------------------------


def test_transcripts_are_marked_and_force_flat_placement(tmp_path):
    dump(tmp_path / "1.jsonl", [row(), row(out="b", score=0.0)])
    rs = import_verl([tmp_path])
    assert all(is_transcript(r) and r.meta["prompt_format"] == "transcript" for r in rs)
    for requested in (None, "chat"):
        placement, note = placement_for(rs, requested)
        assert placement == "flat" and "2 of 2 rollouts" in note and "--tokenizer" in note
    assert placement_for(rs, "flat") == ("flat", None)
    plain = [Rollout("p", "a", "Q", "x", 1.0, True), Rollout("p", "b", [{"role": "user", "content": "Q"}], "y", 0.0, False)]
    assert placement_for(plain, None) == ("chat", None)
    assert placement_for(plain, "flat") == ("flat", None)
    with pytest.raises(InputError) as e:
        placement_for(plain, "inline")
    assert e.value.field == "placement"


@pytest.fixture(scope="module")
def embedded_like_dir(tmp_path_factory):
    """A model directory with the embedded model's (SmolLM2) chat template, built offline."""
    from tiny_model import make_tiny_model_dir

    return make_tiny_model_dir(tmp_path_factory.mktemp("smol") / "model")


@pytest.fixture(scope="module")
def qwen_dir(tmp_path_factory):
    """A Qwen-style ChatML tokenizer directory (default system turn), built offline."""
    path = tmp_path_factory.mktemp("qwen") / "model"
    tok = make_tiny_tokenizer()
    tok.chat_template = QWEN_TEMPLATE
    tok.save_pretrained(path)
    (path / "config.json").write_text(json.dumps({"model_type": "qwen2"}))
    return path


CONVERSATIONS = [
    [{"role": "user", "content": "What is 7 + 5?"}],
    [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "What is 7 + 5?\n\nThink."}],
    [
        {"role": "user", "content": "What is 1 + 1?"},
        {"role": "assistant", "content": "2"},
        {"role": "user", "content": "And 2 + 2?"},
    ],
]


@pytest.mark.parametrize("family", ["embedded_like_dir", "qwen_dir"])
def test_tokenizer_parses_transcripts_back_into_chat(request, tmp_path, family):
    model = request.getfixturevalue(family)
    parser = transcript_parser(str(model))  # through mopd_eval.models, as --tokenizer does
    tok = parser.tok
    rows = [row(inp=verl_input(tok, conv), out=f"o{i}") for i, conv in enumerate(CONVERSATIONS)]
    dump(tmp_path / "1.jsonl", rows)
    seen: list[str] = []
    rs = import_verl([tmp_path], parser=parser, warn=seen.append)
    for r, conv in zip(rs, CONVERSATIONS, strict=True):
        assert not is_transcript(r) and r.meta["prompt_format"] == "chat"
        assert verl_input(tok, r.prompt) == verl_input(tok, conv)
    assert rs[0].prompt == CONVERSATIONS[0] and rs[1].prompt == CONVERSATIONS[1]
    # Role markers decode to plain text: the multi-turn prompt reads as one user turn quoting
    # them too; the single turn is kept (nothing lost) and the ambiguity reported.
    assert [m["role"] for m in rs[2].prompt if m["role"] != "system"] == ["user"]
    assert "And 2 + 2?" in rs[2].prompt[-1]["content"]
    assert len(seen) == 1 and "1 distinct transcripts" in seen[0]
    assert placement_for(rs, None) == ("chat", None)


def test_transcript_of_another_family_is_an_input_error(tmp_path, qwen_dir):
    llama_style = "<|start_header_id|>user<|end_header_id|>\n\nWhat is 7 + 5?"
    parser = transcript_parser(str(qwen_dir))
    dump(tmp_path / "4.jsonl", [row(inp=verl_input(parser.tok, CONVERSATIONS[0])), row(inp=llama_style)])
    with pytest.raises(InputError, match="not what .* chat template renders") as e:
        import_verl([tmp_path], parser=parser)
    assert (e.value.path, e.value.line, e.value.field) == (str(tmp_path / "4.jsonl"), 2, "input")


def test_quoted_role_marker_keeps_fewest_messages_and_warns(tmp_path, record_warnings):
    seen, warn = record_warnings
    tok = make_tiny_tokenizer()
    parser = TranscriptParser(tok, "tiny")
    question = "Log lines:\nuser\nhello\nassistant\nhi\nuser\nWhich speaker spoke last?"
    dump(tmp_path / "1.jsonl", [row(inp=verl_input(tok, [{"role": "user", "content": question}]))])
    rs = import_verl([tmp_path], parser=parser, warn=warn)
    assert rs[0].prompt == [{"role": "user", "content": question}]
    assert len(seen) == 1 and "1 distinct transcripts read as more than one conversation" in seen[0]


def test_parser_needs_a_chat_template():
    tok = make_tiny_tokenizer()
    tok.chat_template = None
    with pytest.raises(InputError, match="no chat template"):
        TranscriptParser(tok, "bare")


@pytest.mark.slow
def test_embedded_tokenizer_round_trip(tmp_path):
    """The real embedded tokenizer (fetched once if missing): parse what verl would have written."""
    parser = transcript_parser("smollm2-135m")
    for conv in CONVERSATIONS:
        text = verl_input(parser.tok, conv)
        got = parser.parse(text)
        assert got is not None and verl_input(parser.tok, got) == text


# ---- candidates ------------------------------------------------------------------------------


def cand(rid, reward, prompt="system\nS\nuser\nQ\nassistant\n", **kw) -> dict:
    r = {"prompt_id": "p0", "uid": "p0", "prompt": prompt, "response_id": f"p0_r{rid}",
         "response_text": f"t{rid}", "reward": reward, "success": reward >= 1, "feedback_text": ""}
    r.update(kw)
    return r


def test_candidates_are_transcripts_and_files_given_twice_are_not_doubled(tmp_path, record_warnings):
    seen, warn = record_warnings
    dump(tmp_path / "a" / "candidate_responses.jsonl", [cand(0, 1.0), cand(1, 0.0)])
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    rs = import_candidate_files([tmp_path / "a", tmp_path / "b"], warn=warn)
    assert [r.rollout_id for r in rs] == ["p0_r0", "p0_r1"] and all(is_transcript(r) for r in rs)
    assert "dropped 2 rollouts" in seen[0]
    dump(tmp_path / "b" / "candidate_responses.jsonl", [cand(0, 0.0)])
    with pytest.raises(InputError, match="differs from the one in") as e:
        import_candidate_files([tmp_path / "a", tmp_path / "b"], warn=warn)
    assert e.value.field == "response_id"


def test_candidates_parsed_with_tokenizer(tmp_path, qwen_dir):
    parser = transcript_parser(str(qwen_dir))
    text = verl_input(parser.tok, CONVERSATIONS[1])
    dump(tmp_path / "c.jsonl", [cand(0, 1.0, prompt=text)])
    (r,) = import_candidate_files([tmp_path / "c.jsonl"], parser=parser)
    assert r.prompt == CONVERSATIONS[1] and not is_transcript(r)


# ---- the commands ----------------------------------------------------------------------------


def _contexts(tmp_path, rollouts, name, *extra) -> list[dict]:
    out = tmp_path / f"{name}.jsonl"
    assert main(["contexts", "--rollouts", str(rollouts), "--conditions", "base,primary", "--out", str(out), *extra]) == 0
    return [o for _, o in iter_jsonl(out)]


def test_cli_import_directory_then_contexts_flat_and_chat(tmp_path, capsys, embedded_like_dir):
    tok = TranscriptParser(make_tiny_tokenizer()).tok
    question = [{"role": "user", "content": "What is 7 + 5?"}]
    text = verl_input(tok, question)
    step = tmp_path / "dumps"
    dump(step / "3.jsonl", [row(inp=text, out="12", score=1.0, step=3), row(inp=text, out="13", score=0.0, step=3)])
    dump(step / "old" / "3.jsonl", [row(inp=text, out="12", score=1.0, step=3)])  # a stray copy
    plain, parsed = tmp_path / "plain.jsonl", tmp_path / "parsed.jsonl"
    assert main(["import", "--format", "verl", str(step), "--out", str(plain)]) == 0
    out, err = capsys.readouterr()
    assert "wrote 2 rollouts in 1 groups" in out and "flat placement" in out and "dropped 1 rows" in err
    model = str(embedded_like_dir)
    assert main(["import", "--format", "verl", str(step), "--out", str(parsed), "--tokenizer", model]) == 0
    assert read_rollouts(parsed)[0].prompt == question

    flat = _contexts(tmp_path, plain, "flat", "--tokenizer", model)
    err = capsys.readouterr().err
    assert "using flat placement" in err and {r["placement"] for r in flat} == {"flat"}
    primary = next(r for r in flat if r["condition"] == "primary" and r["rollout_id"].endswith("_r1"))
    assert primary["teacher_prompt"] == text + "\nCorrect solution:\n\n12\n\nCorrectly solve the original question."
    assert "<|im_start|>" not in primary["teacher_prompt"]

    # The parsed import gives the same flat prompt through the chat template, and chat placement.
    flat2 = _contexts(tmp_path, parsed, "flat2", "--tokenizer", model, "--placement", "flat")
    assert [r["teacher_prompt"] for r in flat2] == [r["teacher_prompt"] for r in flat]
    chat = _contexts(tmp_path, parsed, "chat", "--tokenizer", model)
    assert "note" not in capsys.readouterr().err and {r["placement"] for r in chat} == {"chat"}
    base = next(r for r in chat if r["condition"] == "base")
    assert base["teacher_prompt"] == tok.apply_chat_template(question, tokenize=False, add_generation_prompt=True)


def test_cli_pool_steps_and_bad_flags(tmp_path, capsys):
    step_dir(tmp_path / "d")
    out = tmp_path / "r.jsonl"
    assert main(["import", "--format", "verl", str(tmp_path / "d"), "--pool-steps", "--out", str(out)]) == 0
    assert "6 rollouts in 1 groups" in capsys.readouterr().out
    dump(tmp_path / "c.jsonl", [cand(0, 1.0)])
    rc = main(["import", "--format", "candidates", str(tmp_path / "c.jsonl"), "--pool-steps", "--out", str(out)])
    assert rc == 2 and "--pool-steps" in capsys.readouterr().err
    dump(tmp_path / "bad" / "1.jsonl", [row(), {"input": "Q", "output": "a", "score": None}])
    rc = main(["import", "--format", "verl", str(tmp_path / "bad"), "--out", str(tmp_path / "x.jsonl")])
    assert rc == 2 and f"{tmp_path / 'bad' / '1.jsonl'}:2: field 'score'" in capsys.readouterr().err
    assert not (tmp_path / "x.jsonl").exists()


def test_cli_flat_paper_analysis_on_a_verl_import(tmp_path, capsys):
    """The reference analysis script's assembly: verl's `input`, then its blocks, byte for byte."""
    text = "system\nS\nuser\nWhat is 6 + 4?\nassistant\n"
    dump(tmp_path / "d" / "5.jsonl", [row(inp=text, out="10", score=1.0, step=5), row(inp=text, out="11", score=0.0, step=5)])
    rollouts = tmp_path / "r.jsonl"
    assert main(["import", "--format", "verl", str(tmp_path / "d"), "--out", str(rollouts)]) == 0
    rows = _contexts(tmp_path, rollouts, "pa", "--templates", "paper-analysis", "--placement", "flat")
    primary = next(r for r in rows if r["condition"] == "primary" and r["rollout_id"].endswith("_r1"))
    assert primary["placement"] == "flat"
    assert primary["teacher_user_turn"] == text + "\nCorrect solution:\n\n10\n\n\n\nCorrectly solve the original question.\n"
    assert "note" not in capsys.readouterr().err  # flat was asked for: nothing to explain
