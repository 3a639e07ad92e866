"""--save-token-logprobs: shards, resume, reconciliation with the score log, the merged file, A_t."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from analysis.token_logprobs import (
    STORE_FILE,
    load_token_logprobs,
    read_shards,
    reconcile,
    token_pieces,
)
from mopd_eval.cli import main
from mopd_eval.errors import InputError
from mopd_eval.jsonl import iter_jsonl
from mopd_eval.records import group_rollouts, read_rollouts

CONDS = "base,primary,2s1f"


def rows(path):
    return [o for _, o in iter_jsonl(path)]


@pytest.fixture(scope="module")
def rollouts(tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("roll") / "r.jsonl"
    args = ["rollouts", "--task", "arith", "--model", str(tiny_model_dir), "-n", "4", "--limit", "3",
            "--max-tokens", "6", "--seed", "1", "--out", str(out)]
    assert main(args) == 0
    return out


def signal(rollouts, model, out, *extra):
    return main(["signal", "--rollouts", str(rollouts), "--model", str(model), "--bootstrap", "20",
                 "--conditions", CONDS, "--out", str(out), *extra])


@pytest.fixture(scope="module")
def study(rollouts, tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("signal")
    assert signal(rollouts, tiny_model_dir, out, "--save-token-logprobs") == 0
    return out


def independent_logprobs(model_dir, rollouts, cond: str, pid: str, rid: str) -> np.ndarray:
    """log p(y_t | teacher prompt, y_<t) from one plain forward of prompt + response ids."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mopd_eval.contexts import BUILTIN_CONDITIONS, build_context, render_teacher_prompt

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    group = group_rollouts(read_rollouts(rollouts))[pid]
    i = [r.rollout_id for r in group].index(rid)
    ctx = build_context(group, i, BUILTIN_CONDITIONS[cond])
    prompt = tok(render_teacher_prompt(group[i], ctx, tok, "chat"), add_special_tokens=False)["input_ids"]
    target = group[i].meta["response_token_ids"]
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([prompt + target])).logits[0, :-1].float(), -1)
    pos = torch.arange(len(prompt) - 1, len(prompt) + len(target) - 1)
    return logp[pos, torch.tensor(target)].numpy()


def test_store_holds_every_row_and_agrees_with_the_log(study, rollouts):
    store = load_token_logprobs(study / STORE_FILE)
    scores = rows(study / "teacher_scores.jsonl")
    assert len(store.rows) == len(scores) == 12 * 3
    for r in scores:
        lp = store.logprobs(r["condition"], r["problem_id"], r["rollout_id"])
        assert len(lp) == r["n_tokens"] and lp.dtype == np.float32
        assert abs(float(lp.sum()) - r["logprob_sum"]) < 1e-4
    assert store.meta["format"] == "mopd-eval token-logprobs" and list(store.meta["conditions"]) == CONDS.split(",")
    for r in read_rollouts(rollouts):
        ids, texts = store.tokens[(r.problem_id, r.rollout_id)]
        assert ids.tolist() == r.meta["response_token_ids"] and len(texts) == len(ids)
    assert not reconcile(scores, store.rows)


def test_advantage_of_a_sample_pair_equals_an_independent_forward(study, rollouts, tiny_model_dir):
    from analysis.tokens import advantage

    store = load_token_logprobs(study / STORE_FILE)
    # The tiny model fails most problems: 2s1f then shows a failed peer, still a different prompt.
    row = next(r for r in rows(study / "teacher_scores.jsonl") if r["condition"] == "2s1f")
    pid, rid = row["problem_id"], row["rollout_id"]
    want = (independent_logprobs(tiny_model_dir, rollouts, "2s1f", pid, rid)
            - independent_logprobs(tiny_model_dir, rollouts, "base", pid, rid))
    got = advantage(store, "2s1f", pid, rid)
    assert got.shape == want.shape and np.abs(got - want).max() < 1e-4
    assert np.abs(want).max() > 1e-3  # the context does change the teacher: the check has teeth


def test_rows_scored_without_the_flag_are_detected_and_rescored(rollouts, tiny_model_dir, tmp_path, capsys):
    assert signal(rollouts, tiny_model_dir, tmp_path) == 0
    assert not (tmp_path / STORE_FILE).exists()
    capsys.readouterr()
    assert signal(rollouts, tiny_model_dir, tmp_path, "--save-token-logprobs") == 0
    assert "36 scored rows have none on disk" in capsys.readouterr().err
    store = load_token_logprobs(tmp_path / STORE_FILE)
    assert store.meta["n_rescored"] == 36 and len(store.rows) == 36
    for r in rows(tmp_path / "teacher_scores.jsonl"):
        assert abs(float(store.logprobs(r["condition"], r["problem_id"], r["rollout_id"]).sum()) - r["logprob_sum"]) < 1e-3

    # Stored log-probs that disagree with the log (another model's, say) are not trusted: rescored.
    merged = tmp_path / STORE_FILE
    with np.load(merged) as z:
        arrays = dict(z)
    arrays["logprobs"] = arrays["logprobs"] - 1.0
    np.savez_compressed(merged, **arrays)
    assert signal(rollouts, tiny_model_dir, tmp_path, "--save-token-logprobs") == 0
    assert "36 scored rows have none on disk or disagree" in capsys.readouterr().err


def test_a_kill_between_shard_and_log_loses_nothing(rollouts, tiny_model_dir, tmp_path):
    assert signal(rollouts, tiny_model_dir, tmp_path, "--save-token-logprobs") == 0
    log = tmp_path / "work" / "teacher_scores.jsonl"
    lines = log.read_text().splitlines()
    log.write_text("\n".join(lines[:10]) + "\n")  # the log lost rows whose shard was written
    assert signal(rollouts, tiny_model_dir, tmp_path, "--save-token-logprobs") == 0
    store = load_token_logprobs(tmp_path / STORE_FILE)
    assert len(store.rows) == 36 and store.meta["n_rescored"] == 0
    readme = (tmp_path / "README.md").read_text()
    assert "--save-token-logprobs" in readme and "True" not in readme.split("Generated by")[1].splitlines()[0]


def test_shards_give_way_to_the_merged_file_and_a_subset_run_keeps_the_rest(rollouts, tiny_model_dir, tmp_path,
                                                                             capsys):
    shards = tmp_path / "work" / "token_logprobs"
    assert signal(rollouts, tiny_model_dir, tmp_path, "--save-token-logprobs") == 0
    assert not list(shards.glob("shard-*.npz"))  # one copy on disk: the merged file
    # A run of two of the three conditions: its file holds those; the third stays in one shard.
    assert main(["signal", "--rollouts", str(rollouts), "--model", str(tiny_model_dir), "--bootstrap", "20",
                 "--conditions", "base,primary", "--out", str(tmp_path), "--save-token-logprobs"]) == 0
    assert load_token_logprobs(tmp_path / STORE_FILE).conditions == ["base", "primary"]
    assert len(read_shards(shards)) == 12 and {k[0] for k in read_shards(shards)} == {"2s1f"}
    capsys.readouterr()
    assert signal(rollouts, tiny_model_dir, tmp_path, "--save-token-logprobs") == 0
    assert "scoring them again" not in capsys.readouterr().err
    assert load_token_logprobs(tmp_path / STORE_FILE).meta["n_rescored"] == 0
    # --rescore forgets the stored log-probs with the scores.
    assert signal(rollouts, tiny_model_dir, tmp_path, "--save-token-logprobs", "--rescore") == 0
    assert len(load_token_logprobs(tmp_path / STORE_FILE).rows) == 36


@pytest.mark.parametrize("text", ["What is 7 + 5? The answer is 12.", "naïve café ✓ 数学", "", "\n\n  x"])
def test_token_pieces_join_to_the_decoded_text(tiny_tokenizer, text):
    ids = tiny_tokenizer(text, add_special_tokens=False)["input_ids"]
    pieces = token_pieces(tiny_tokenizer, ids)
    assert len(pieces) == len(ids) and "".join(pieces) == tiny_tokenizer.decode(ids)


def test_bad_store_files_are_input_errors(study, tmp_path):
    with pytest.raises(InputError, match="file not found"):
        load_token_logprobs(tmp_path / "none.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(InputError, match="junk.npz"):
        load_token_logprobs(tmp_path / "junk.npz")
    with np.load(study / STORE_FILE) as z:
        arrays = dict(z)
    bad = dict(arrays, offsets=arrays["offsets"][:-1])
    np.savez(tmp_path / "bad.npz", **bad)
    with pytest.raises(InputError, match="field 'offsets'"):
        load_token_logprobs(tmp_path / "bad.npz")
    meta = json.loads(arrays["meta"].tobytes())
    meta["version"] = 99
    np.savez(tmp_path / "v.npz", **dict(arrays, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8)))
    with pytest.raises(InputError, match="version 99"):
        load_token_logprobs(tmp_path / "v.npz")
