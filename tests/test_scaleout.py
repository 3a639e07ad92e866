"""torchrun scale-out: ``signal``, ``bench`` and ``rollouts`` on 2 gloo processes equal one process
(scores within 1e-5, identical samples and verdicts, the same files in the same order)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mopd_eval.jsonl import iter_jsonl
from mopd_eval.scaleout import Shard

ROOT = Path(__file__).resolve().parents[1]


def run(args: list[str], nproc: int = 1) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
                if nproc > 1 else [sys.executable])
    p = subprocess.run([*launcher, "-m", "mopd_eval.cli", *args], env=env, cwd=ROOT, capture_output=True,
                       text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]


def rows(path: Path) -> list[dict]:
    return [o for _, o in iter_jsonl(path)]


def test_shards_cover_every_item_once_in_order():
    items = list(range(11))
    parts = [Shard(r, 3).take(items) for r in range(3)]
    assert sorted(sum(parts, [])) == items and parts[0] == [0, 3, 6, 9]
    assert Shard().suffix == "" and Shard(1, 2).suffix == ".rank1-of-2"


@pytest.fixture(scope="module")
def sampled(tiny_model_dir, tmp_path_factory):
    d = tmp_path_factory.mktemp("scale")
    common = ["--task", "arith", "--model", str(tiny_model_dir), "-n", "4", "--limit", "5", "--max-tokens", "6",
              "--seed", "3", "--chunk", "1"]
    run(["rollouts", *common, "--out", str(d / "one.jsonl")])
    run(["rollouts", *common, "--out", str(d / "two.jsonl")], nproc=2)
    run(["bench", *common, "--out", str(d / "bench1")])
    run(["bench", *common, "--out", str(d / "bench2")], nproc=2)
    return d


def test_rollouts_on_two_processes_equal_one(sampled):
    assert rows(sampled / "two.jsonl") == rows(sampled / "one.jsonl")


def test_bench_on_two_processes_equals_one(sampled):
    strip = lambda rs: [{k: v for k, v in r.items() if k not in ("timings", "chunk")} for r in rs]  # noqa: E731
    assert strip(rows(sampled / "bench2" / "samples.jsonl")) == strip(rows(sampled / "bench1" / "samples.jsonl"))
    one, two = (json.loads((sampled / b / "results.json").read_text()) for b in ("bench1", "bench2"))
    assert two["metrics"] == one["metrics"] and two["per_problem"] == one["per_problem"]
    run(["bench", "--task", "arith", "--model", str(Path(one["config"]["model"]["path"])), "-n", "4", "--limit", "5",
         "--max-tokens", "6", "--seed", "3", "--chunk", "1", "--out", str(sampled / "bench2")])  # 1-process rerun: finished


def test_signal_on_two_processes_equals_one(sampled, tiny_model_dir):
    args = ["signal", "--rollouts", str(sampled / "one.jsonl"), "--model", str(tiny_model_dir), "--bootstrap", "20"]
    run([*args, "--out", str(sampled / "sig1")])
    run([*args, "--out", str(sampled / "sig2")], nproc=2)
    one, two = rows(sampled / "sig1" / "teacher_scores.jsonl"), rows(sampled / "sig2" / "teacher_scores.jsonl")
    key = lambda r: (r["condition"], r["problem_id"], r["rollout_id"])  # noqa: E731
    assert [key(r) for r in two] == [key(r) for r in one]  # same rows, same order
    for a, b in zip(two, one, strict=True):
        assert (a["teacher_score"] is None) == (b["teacher_score"] is None)
        if a["teacher_score"] is not None:
            assert abs(a["teacher_score"] - b["teacher_score"]) < 1e-5
        assert (a["effective"], a["n_tokens"], a["success"]) == (b["effective"], b["n_tokens"], b["success"])
