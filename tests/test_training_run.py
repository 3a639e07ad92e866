"""Few-step runs of every algorithm on a tiny model, built from a YAML config with the tiny offline
tokenizer, on an easy synthetic task (reward 1 when the response starts with "The"): the reward
rises. Also: checkpoints load as Hugging Face directories, and a killed run resumes identically.

A random tiny model does no in-context learning, so the teacher of SDPO/MOPD would have nothing
to teach. The fixture first fine-tunes ("primes") the tiny model for a few seconds so that it
behaves like a real instruct model would: on the plain prompt it starts with "The" about a
quarter of the time, and when the teacher prompt shows a successful solution or feedback it
starts with "The". OPD's external teacher is primed to start with "The" on the plain prompt.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tiny_model import make_tiny_model

from mopd_eval.contexts import BUILTIN_CONDITIONS, build_context, render_teacher_prompt
from mopd_eval.errors import InputError
from mopd_eval.pipeline import chat_prompt_ids
from mopd_eval.records import Rollout
from training.config import TRAINING_CONDITIONS, load_config
from training.synthetic_task import StartsWithTask
from training.trainer import Trainer, train

TARGET = "The"
TASK = "training.synthetic_task:StartsWithTask"


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Tiny models run fastest on one thread, and a busy 2-core machine punishes oversubscription.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _teacher_prompts(tok, task, problems) -> list[list[int]]:
    """Teacher prompts with the kinds of context SDPO and MOPD build, via mopd_eval.contexts."""
    out = []
    for p in problems:
        msgs = task.messages(p)
        group = []
        for j, (text, ok) in enumerate([("The", True), ("The 1", True), ("d", False), ("x 1", False)]):
            fb = None if ok else f"The response must start with {TARGET!r}."
            group.append(Rollout(p.problem_id, f"{p.problem_id}#{j}", msgs, text, float(ok), ok, fb))
        for cond, target in ((BUILTIN_CONDITIONS["2s1f"], 3), (TRAINING_CONDITIONS["sdpo"], 2),
                             (TRAINING_CONDITIONS["sdpo"], 0)):
            ctx = build_context(group, target, cond)
            assert ctx.effective
            out.append(tok(render_teacher_prompt(group[target], ctx, tok), add_special_tokens=False)["input_ids"])
    return out


def _prime(model, tok, prompts_and_targets, steps=30, lr=2e-2):
    """Fit the next-token distribution after each prompt to a target distribution."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    width = max(len(p) for p, _ in prompts_and_targets)
    ids = torch.full((len(prompts_and_targets), width), tok.pad_token_id)
    mask = torch.zeros_like(ids)
    for i, (p, _) in enumerate(prompts_and_targets):
        ids[i, width - len(p):] = torch.tensor(p)
        mask[i, width - len(p):] = 1
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    target = torch.stack([q for _, q in prompts_and_targets])
    model.train()
    for _ in range(steps):
        logits = model(input_ids=ids, attention_mask=mask, position_ids=pos, logits_to_keep=1).logits[:, -1]
        loss = -(target * torch.log_softmax(logits, -1)).sum(-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    return model


@pytest.fixture(scope="module")
def primed(tmp_path_factory):
    root = tmp_path_factory.mktemp("primed")
    model, tok = make_tiny_model(seed=0)
    V = model.config.vocab_size
    task = StartsWithTask(TARGET, num_problems=8)
    problems = task.load()
    plain = [chat_prompt_ids(tok, task.messages(p)) for p in problems]
    the = tok.encode(TARGET, add_special_tokens=False)[0]
    others = [tok.encode(c, add_special_tokens=False)[0] for c in ("d", "x", "1")]
    mixed = torch.zeros(V)
    mixed[the] = 0.25
    mixed[others] = 0.25
    sure = torch.zeros(V)
    sure[the] = 1.0
    torch.manual_seed(0)
    student = _prime(model, tok, [(p, mixed) for p in plain] + [(p, sure) for p in _teacher_prompts(tok, task, problems)])
    student.save_pretrained(root / "student")
    tok.save_pretrained(root / "student")
    teacher, _ = make_tiny_model(seed=1)
    teacher = _prime(teacher, tok, [(p, sure) for p in plain], steps=20)
    teacher.save_pretrained(root / "teacher")
    tok.save_pretrained(root / "teacher")
    return root


def _write_config(path: Path, model: Path, out: Path, **extra) -> Path:
    cfg = {
        "model_name_or_path": str(model),
        "task": TASK,
        "task_kwargs": {"target": TARGET, "num_problems": 8},
        "num_prompts_per_step": 4,
        "num_generations": 8,
        "max_completion_length": 3,
        "learning_rate": 3e-3,
        "lr_scheduler_type": "constant",
        "warmup_steps": 0,
        "max_steps": 6,
        "gradient_accumulation_steps": 2,
        "output_dir": str(out),
        "seed": 0,
        **extra,
    }
    path.write_text(json.dumps(cfg))  # JSON is YAML
    return path


def _rewards(run_dir: Path) -> list[float]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["critic/rewards/mean"] for r in rows]


@pytest.mark.parametrize("algo", ["grpo", "opd", "sdpo", "mopd"])
def test_reward_rises_on_easy_task(algo, primed, tmp_path):
    extra = {"teacher_model_name_or_path": str(primed / "teacher")} if algo == "opd" else {}
    if algo == "grpo":
        extra["learning_rate"] = 1e-2
    cfg_file = _write_config(tmp_path / "cfg.yaml", primed / "student", tmp_path / "run", **extra)
    cfg = load_config(cfg_file, algo=algo)
    last = train(cfg)
    rewards = _rewards(tmp_path / "run")
    assert len(rewards) == 6
    assert sum(rewards[-2:]) / 2 > rewards[0] + 0.2, rewards
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    for key in ("timing_s/gen", "timing_s/reward", "timing_s/adv", "timing_s/update_actor", "timing_s/step",
                "actor/loss", "actor/grad_norm", "response_length/mean", "teacher/context_fraction"):
        assert key in rows[0], key
    if algo in ("sdpo", "mopd"):
        assert 0 < rows[0]["teacher/context_fraction"] <= 1
    # the checkpoint is a Hugging Face directory that loads and generates
    from mopd_eval.engines import make_engine

    assert last == tmp_path / "run" / "checkpoint-6"
    eng = make_engine("hf", last)
    out = eng.generate([chat_prompt_ids(eng.tokenizer, [{"role": "user", "content": "Reply now. #1"}])], 2, 1.0, 1.0, 3, 0)
    assert len(out[0]) == 2


def test_no_teacher_context_means_no_update(primed, tmp_path, capsys):
    # MOPD with a condition no group can fill (3 successes + 3 failures of 7 peers are rare, and
    # the first step's groups have none): the samples are masked and the weights do not move.
    cfg_file = _write_config(tmp_path / "cfg.yaml", primed / "student", tmp_path / "run", max_steps=1,
                             condition={"name": "impossible", "successes": 7, "failures": 1})
    train(load_config(cfg_file, algo="mopd"))
    row = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert row["teacher/context_fraction"] == 0.0 and row["actor/skipped_update"] == 1.0
    err = capsys.readouterr().err
    assert "step 1: no sample had a teacher context (condition 'impossible'" in err
    assert "0.0% of samples had a teacher context over 1 steps; 1 step had none (update skipped)" in err
    before = load_file(primed / "student" / "model.safetensors")
    after = load_file(tmp_path / "run" / "checkpoint-1" / "model.safetensors")
    for k in before:
        torch.testing.assert_close(after[k], before[k], rtol=0, atol=0)


def _comparable(rows):
    return [{k: v for k, v in r.items() if not k.startswith("timing_s/")} for r in rows]


@pytest.mark.parametrize("save_dtype", ["float32", "bfloat16"])
def test_killed_run_resumes_identically(primed, tmp_path, save_dtype):
    def cfg_for(out):
        return load_config(_write_config(tmp_path / f"{out}.yaml", primed / "student", tmp_path / out,
                                         max_steps=4, save_steps=2, save_dtype=save_dtype), algo="mopd")

    full = train(cfg_for("full"))
    # the same run "killed" after step 3 (checkpoint at step 2), then resumed
    Trainer(cfg_for("killed")).train(stop_after=3)
    assert not (tmp_path / "killed" / "checkpoint-4").exists()
    resumed_cfg = cfg_for("killed")
    resumed_cfg.resume_from_checkpoint = True
    trainer = Trainer(resumed_cfg)
    assert trainer.start_step == 2
    resumed = trainer.train()
    a, b = load_file(full / "model.safetensors"), load_file(resumed / "model.safetensors")
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[save_dtype]
    assert {v.dtype for v in a.values()} == {dtype}
    assert json.loads((full / "config.json").read_text())["dtype"] == save_dtype
    # the optimizer state is DCP shards (one process: rank 0's file and the metadata)
    assert (full / "optimizer" / ".metadata").is_file() and list((full / "optimizer").glob("*.distcp"))
    hf_state = json.loads((full / "trainer_state.json").read_text())
    assert hf_state["global_step"] == 4 and [e["step"] for e in hf_state["log_history"]] == [1, 2, 3, 4]
    assert {"loss", "grad_norm", "learning_rate", "reward"} <= set(hf_state["log_history"][-1])
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=1e-7)
    ta, tb = load_file(full / "teacher" / "model.safetensors"), load_file(resumed / "teacher" / "model.safetensors")
    for k in ta:
        torch.testing.assert_close(tb[k], ta[k], rtol=0, atol=1e-7)
    rows_full = [json.loads(x) for x in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    rows_res = [json.loads(x) for x in (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows_res] == [1, 2, 3, 4]
    assert _comparable(rows_res) == _comparable(rows_full)


def test_external_teacher_with_another_tokenizer_is_refused(primed, tmp_path):
    from tiny_model import make_tiny_tokenizer

    from mopd_eval.errors import InputError

    other = tmp_path / "other"
    m, _ = make_tiny_model(seed=2)
    m.save_pretrained(other)
    make_tiny_tokenizer(vocab_size=300).save_pretrained(other)
    cfg_file = _write_config(tmp_path / "cfg.yaml", primed / "student", tmp_path / "run",
                             teacher_model_name_or_path=str(other))
    with pytest.raises(InputError, match="does not share the student's tokenizer"):
        Trainer(load_config(cfg_file, algo="opd"))


@pytest.mark.parametrize("algo,extra,key", [
    ("sdpo", {"distill_variant": "full"}, "actor/distill_divergence"),
    ("sdpo", {"distill_variant": "sampled", "beta": 1.0}, "actor/distill_divergence"),
    ("mopd", {"teacher": "frozen", "condition": "mopd-s", "gradient_checkpointing": True}, "actor/distill_divergence"),
    ("grpo", {"beta": 0.1}, "actor/kl_loss"),
])
def test_one_step_with_each_option_updates_the_weights(algo, extra, key, primed, tmp_path):
    cfg_file = _write_config(tmp_path / "cfg.yaml", primed / "student", tmp_path / "run", max_steps=1, **extra)
    last = train(load_config(cfg_file, algo=algo))
    row = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert row["actor/skipped_update"] == 0.0 and key in row
    assert all(v is None or v == v for v in row.values())  # no NaN slipped through as a number
    before = load_file(primed / "student" / "model.safetensors")
    after = load_file(last / "model.safetensors")
    assert max(float((after[k] - before[k]).abs().max()) for k in before) > 1e-4


def test_a_second_trainer_on_the_same_output_dir_is_refused(primed, tmp_path):
    cfg = load_config(_write_config(tmp_path / "c.yaml", primed / "student", tmp_path / "run", max_steps=1), algo="grpo")
    first = Trainer(cfg)
    with pytest.raises(InputError, match=r"another training run is writing here \(pid \d+"):
        Trainer(cfg)
    first.train()
    Trainer(cfg)  # released by the finished run


def test_report_to_wandb_offline_and_tensorboard(primed, tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    pytest.importorskip("tensorboard")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    for var in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy"):  # any network use would fail
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    cfg_file = _write_config(tmp_path / "cfg.yaml", primed / "student", tmp_path / "run", max_steps=2,
                             report_to=["wandb", "tensorboard"])
    train(load_config(cfg_file, algo="grpo"))
    run = tmp_path / "run"
    offline = list((run / "wandb").glob("offline-run-*"))
    assert len(offline) == 1
    (log,) = offline[0].glob("run-*.wandb")
    # The offline log holds each history row's keys and JSON values as plain protobuf strings.
    # wandb-core finishes writing it just after finish() returns.
    deadline = time.monotonic() + 30
    while b"critic/rewards/mean" not in log.read_bytes() and time.monotonic() < deadline:
        time.sleep(0.2)
    data = log.read_bytes()
    for row in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()):
        reward = json.dumps(row["critic/rewards/mean"]).encode()
        assert b"\x13critic/rewards/mean\x82\x01" + bytes([len(reward)]) + reward in data, row["step"]
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert (run / "wandb_run_id").read_text().strip() in offline[0].name
