"""``scripts/gpu_check.sh --cpu --tiny``: the GPU acceptance run's CPU mode, so it cannot rot."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_check.sh"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def run(*args: str, timeout: int = 840) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable, "GPU_CHECK_TIMEOUT": str(timeout - 30)}
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=timeout)


def test_cpu_tiny_run_passes_and_prints_one_json_line():
    proc = run("--cpu", "--tiny")
    assert proc.returncode == 0, proc.stderr[-3000:]
    [line] = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    out = json.loads(line)
    assert out["ok"] is True and out["device"] == "cpu" and out["dtype"] == "bfloat16"
    checks = out["checks"]
    assert set(checks) == {"scoring", "sampling", "fp32_agreement", "fsdp"}
    assert checks["fp32_agreement"]["max_abs_diff"] < 2e-3
    assert checks["scoring"]["target_tokens"] > 0 and checks["scoring"]["ratio"] > 0
    assert checks["sampling"]["new_tokens"] > 0
    assert checks["fsdp"]["backend"] == "gloo" and checks["fsdp"]["weights_changed"]


def test_list_wheels_names_nothing_missing_here():
    proc = run("--list-wheels", timeout=120)
    assert proc.returncode == 0
    assert "nothing to carry" in proc.stdout


def test_embedded_tokenizer_ships_in_the_package():
    from importlib.resources import files

    from transformers import AutoTokenizer

    d = files("mopd_eval") / "data" / "tokenizer" / "smollm2"
    tok = AutoTokenizer.from_pretrained(str(d))
    assert len(tok) == 49152 and tok.eos_token == "<|im_end|>"
    ids = tok.apply_chat_template([{"role": "user", "content": "7 + 5?"}], add_generation_prompt=True)
    ids = ids["input_ids"] if hasattr(ids, "keys") else ids
    assert tok.decode(ids).endswith("<|im_start|>assistant\n")
