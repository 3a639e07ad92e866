"""kill -9 at several moments of rollouts, bench, signal and train; each resume must finish with
the results of an uninterrupted run (same verdicts and samples, scores within 1e-5).

The kill is a real SIGKILL of a real ``mopd-eval`` process. Its moment is chosen by
``MOPD_EVAL_FAULT_KILL_AT_APPEND=N`` (``mopd_eval/jsonl.py``): the N-th append of the process
writes half its bytes and kills the process, so every resume also recovers a torn last line.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from mopd_eval.jsonl import iter_jsonl

ROOT = Path(__file__).resolve().parents[1]


def cli(args: list[str], kill_at: int | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    env.pop("MOPD_EVAL_FAULT_KILL_AT_APPEND", None)
    if kill_at is not None:
        env["MOPD_EVAL_FAULT_KILL_AT_APPEND"] = str(kill_at)
    return subprocess.run([sys.executable, "-m", "mopd_eval.cli", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=600)


def rows(path: Path) -> list[dict]:
    return [o for _, o in iter_jsonl(path)]


def killed_then_resumed(args: list[str], kill_at: int) -> None:
    first = cli(args, kill_at)
    assert first.returncode == -signal.SIGKILL, first.stderr[-2000:]
    again = cli(args)
    assert again.returncode == 0, again.stderr[-2000:]


@pytest.fixture(scope="module")
def rollouts_args(tiny_model_dir, tmp_path_factory):
    d = tmp_path_factory.mktemp("kill")
    base = ["rollouts", "--task", "arith", "--model", str(tiny_model_dir), "-n", "4", "--limit", "6",
            "--max-tokens", "5", "--seed", "2", "--chunk", "1"]
    ref = d / "ref.jsonl"
    assert cli([*base, "--out", str(ref)]).returncode == 0
    return base, ref


@pytest.mark.parametrize("kill_at", [1, 4])
def test_rollouts_killed_and_resumed_equal_an_uninterrupted_run(rollouts_args, tmp_path, kill_at):
    base, ref = rollouts_args
    out = tmp_path / "r.jsonl"
    killed_then_resumed([*base, "--out", str(out)], kill_at)
    assert rows(out) == rows(ref)


@pytest.mark.parametrize("kill_at", [2, 5])
def test_bench_killed_and_resumed_equals_an_uninterrupted_run(tiny_model_dir, tmp_path, kill_at):
    args = ["bench", "--task", "arith", "--model", str(tiny_model_dir), "-n", "4", "--limit", "6",
            "--max-tokens", "5", "--seed", "2", "--chunk", "1"]
    assert cli([*args, "--out", str(tmp_path / "ref")]).returncode == 0
    killed_then_resumed([*args, "--out", str(tmp_path / "k")], kill_at)
    strip = lambda rs: [{k: v for k, v in r.items() if k not in ("timings", "chunk")} for r in rs]  # noqa: E731
    assert strip(rows(tmp_path / "k" / "samples.jsonl")) == strip(rows(tmp_path / "ref" / "samples.jsonl"))
    ref = json.loads((tmp_path / "ref" / "results.json").read_text())
    got = json.loads((tmp_path / "k" / "results.json").read_text())
    assert got["metrics"] == ref["metrics"] and got["per_problem"] == ref["per_problem"]


@pytest.mark.parametrize("kill_at", [1, 2])
def test_signal_killed_and_resumed_equals_an_uninterrupted_run(rollouts_args, tiny_model_dir, tmp_path, kill_at):
    _, rollouts = rollouts_args
    args = ["signal", "--rollouts", str(rollouts), "--model", str(tiny_model_dir), "--bootstrap", "20",
            "--conditions", "base,primary,2s1f"]
    assert cli([*args, "--out", str(tmp_path / "ref")]).returncode == 0
    killed_then_resumed([*args, "--out", str(tmp_path / "k")], kill_at)
    key = lambda r: (r["condition"], r["problem_id"], r["rollout_id"])  # noqa: E731
    ref = sorted(rows(tmp_path / "ref" / "teacher_scores.jsonl"), key=key)
    got = sorted(rows(tmp_path / "k" / "teacher_scores.jsonl"), key=key)
    assert [key(r) for r in got] == [key(r) for r in ref]
    for a, b in zip(got, ref, strict=True):
        assert (a["teacher_score"] is None) == (b["teacher_score"] is None)
        if a["teacher_score"] is not None:
            assert abs(a["teacher_score"] - b["teacher_score"]) < 1e-5
        assert a["effective"] == b["effective"] and a["n_tokens"] == b["n_tokens"]
    # The timing line counts the killed run's scored pairs too (they are in the log).
    timing = json.loads((tmp_path / "k" / "work" / "teacher_scores.timing.json").read_text())
    assert timing["pairs_scored"] >= len(ref) - 4 * 3 * 4


def test_train_killed_and_resumed_equals_an_uninterrupted_run(tiny_model_dir, tmp_path):
    def config(out: Path) -> Path:
        cfg = {"model_name_or_path": str(tiny_model_dir), "task": "training.synthetic_task:StartsWithTask",
               "task_kwargs": {"target": "The", "num_problems": 8}, "num_prompts_per_step": 2,
               "num_generations": 4, "max_completion_length": 3, "learning_rate": 1e-3, "warmup_steps": 0,
               "max_steps": 4, "save_steps": 1, "output_dir": str(out), "seed": 0,
               "resume_from_checkpoint": True}
        path = out.with_suffix(".yaml")
        path.write_text(json.dumps(cfg))
        return path

    assert cli(["train", "--algo", "sdpo", "--config", str(config(tmp_path / "ref"))]).returncode == 0
    # Appends per step: metrics.jsonl and rollouts.jsonl; the 5th is step 3's metrics row.
    killed_then_resumed(["train", "--algo", "sdpo", "--config", str(config(tmp_path / "k"))], 5)
    ref = load_file(tmp_path / "ref" / "checkpoint-4" / "model.safetensors")
    got = load_file(tmp_path / "k" / "checkpoint-4" / "model.safetensors")
    assert ref.keys() == got.keys()
    assert all((ref[k] - got[k]).abs().max().item() < 1e-5 for k in ref)
    steps = [r["step"] for r in rows(tmp_path / "k" / "metrics.jsonl")]
    assert steps == [1, 2, 3, 4]
