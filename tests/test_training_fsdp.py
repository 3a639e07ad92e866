"""FSDP2 on gloo: a 2-process step under ``torchrun`` equals the 1-process step (fp32, 1e-5).

The comparison is made on the gradient itself: with AdamW's epsilon and learning rate both set to
1000, the first update is ``lr * g / (|g| + eps) = g`` to within 1e-3 relative, so the weights
after one step are ``w - g`` and two runs agree to 1e-5 only if their gradients do. (With the
usual epsilon the first Adam step is about ``lr * sign(g)``, which would hide gradient errors and
amplify rounding noise.) SDPO with an EMA teacher exercises the sharded teacher and its update.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from training.config import load_config
from training.trainer import train

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Tiny models run fastest on one thread, and a busy 2-core machine punishes oversubscription.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _config(path: Path, model: Path, out: Path) -> Path:
    cfg = {
        "model_name_or_path": str(model),
        "task": "training.synthetic_task:StartsWithTask",
        "task_kwargs": {"target": "The", "num_problems": 8},
        "teacher": "ema",
        "condition": "sdpo",  # failures always carry feedback: every sample is trained on
        "num_prompts_per_step": 4,
        "num_generations": 4,
        "max_completion_length": 4,
        "learning_rate": 1000.0,
        "adam_epsilon": 1000.0,
        "weight_decay": 0.0,
        "max_grad_norm": 1000.0,
        "lr_scheduler_type": "constant",
        "warmup_steps": 0,
        "max_steps": 1,
        "gradient_accumulation_steps": 2,
        "output_dir": str(out),
        "seed": 0,
    }
    path.write_text(json.dumps(cfg))
    return path


@pytest.mark.timeout(900)
def test_two_process_fsdp_step_equals_one_process_step(tiny_model_dir, tmp_path):
    one = train(load_config(_config(tmp_path / "one.yaml", tiny_model_dir, tmp_path / "one"), algo="sdpo"))

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "mopd_eval.cli", "train", "--algo", "sdpo",
           "--config", str(_config(tmp_path / "two.yaml", tiny_model_dir, tmp_path / "two"))]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=800)
    assert proc.returncode == 0, proc.stderr[-4000:]
    two = tmp_path / "two" / "checkpoint-1"
    assert json.loads((tmp_path / "two" / "train_config.json").read_text())["fsdp"] is True

    init = load_file(tiny_model_dir / "model.safetensors")
    a, b = load_file(one / "model.safetensors"), load_file(two / "model.safetensors")
    assert a.keys() == b.keys()
    moved = max(float((a[k] - init[k]).abs().max()) for k in a)
    assert moved > 1e-3, "the step did not change the weights"
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=1e-5, msg=k)
    # the EMA teachers moved alike
    ta, tb = load_file(one / "teacher" / "model.safetensors"), load_file(two / "teacher" / "model.safetensors")
    for k in ta:
        torch.testing.assert_close(tb[k], ta[k], rtol=0, atol=1e-5, msg=k)
    m1 = json.loads((tmp_path / "one" / "metrics.jsonl").read_text().splitlines()[0])
    m2 = json.loads((tmp_path / "two" / "metrics.jsonl").read_text().splitlines()[0])
    assert m1["actor/num_tokens"] == m2["actor/num_tokens"]
    assert m1["critic/rewards/mean"] == m2["critic/rewards/mean"]
    assert m2["actor/loss"] == pytest.approx(m1["actor/loss"], rel=1e-5)
    assert m2["actor/grad_norm"] == pytest.approx(m1["actor/grad_norm"], rel=1e-5)

    # The 2-process checkpoint holds the optimizer state as DCP shards, one file per rank (nothing
    # gathered on rank 0); one process resumes from it as from its own 1-process checkpoint.
    assert sorted(p.name for p in (two / "optimizer").glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]
    resumed = {}
    for name in ("one", "two"):
        cfg = load_config(_config(tmp_path / f"{name}.yaml", tiny_model_dir, tmp_path / name), algo="sdpo")
        cfg.max_steps, cfg.resume_from_checkpoint = 2, True
        resumed[name] = train(cfg)
    a, b = load_file(resumed["one"] / "model.safetensors"), load_file(resumed["two"] / "model.safetensors")
    assert max(float((a[k] - load_file(one / "model.safetensors")[k]).abs().max()) for k in a) > 1e-3
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=1e-4, msg=k)
