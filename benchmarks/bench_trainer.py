"""Our trainer's step against TRL's: GRPO vs ``GRPOTrainer``, OPD vs ``GKDTrainer(lmbda=1)``.

Same model (the embedded SmolLM2-135M-Instruct), same arith prompts in the same order (levels 1-2,
problems of seed 2000, the order of our trainer's step stream), same group size (``--prompts``
prompts x ``--generations`` rollouts per step; GKD has no groups, so each prompt is repeated
``--generations`` times in its batch), same completion length, temperature 1, same threads and
precision, activation checkpointing set alike on both (``--gradient-checkpointing``, default off;
TRL's GRPOConfig and SFTConfig/GKDConfig default it to on, so runs made before this flag compared
TRL with checkpointing against ours without). Each (algorithm, precision, trainer) runs ``--steps`` optimisation steps in a fresh
process, ours and TRL's alternating ``--rounds`` times, so machine load drifts affect both.
Reported: seconds per step (mean over the steps after the first, which pays one-time costs), the
process's peak RSS, and ours/TRL ratios. OPD and GKD both use an external frozen teacher (the same
model) and the JSD (``beta`` 0.5): ours on the student's top-100 plus a tail bucket, GKD on the
full vocabulary.

    .venv/bin/python benchmarks/bench_trainer.py                      # grpo+opd, fp32+bf16, 1 round
    .venv/bin/python benchmarks/bench_trainer.py --algos grpo --precisions bf16 --rounds 2

Needs ``trl`` (extra ``bench``). bf16 on CPU needs AVX512-BF16 or AMX (both trainers use autocast
with float32 master weights). Results: ``--out`` (JSON and a Markdown table).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODEL = "smollm2-135m"
TASK_KWARGS = {"per_level": 20, "levels": [1, 2]}
DATA_SEED = 2000


def _problems(args):
    """The prompts of steps 1..steps, in our trainer's order (seed 0)."""
    from mopd_eval.tasks import get_task
    from training.trainer import step_problems

    task = get_task("arith", **TASK_KWARGS)
    problems = task.load(None, seed=DATA_SEED)
    per_step = [step_problems(problems, s, args.prompts, 0) for s in range(1, args.steps + 1)]
    return task, [p for step in per_step for p in step]


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


# ---------------------------------------------------------------------------------------- ours


def run_ours(args) -> list[float]:
    from training.config import load_config
    from training.trainer import Trainer

    overrides = {
        "model_name_or_path": MODEL, "task": "arith", "task_kwargs": TASK_KWARGS, "data_seed": DATA_SEED,
        "num_prompts_per_step": args.prompts, "num_generations": args.generations,
        "max_completion_length": args.max_tokens, "temperature": 1.0, "learning_rate": 1e-6,
        "lr_scheduler_type": "constant", "warmup_steps": 0, "max_steps": args.steps,
        "gradient_accumulation_steps": 1, "bf16": args.precision == "bf16", "report_to": "none",
        "output_dir": tempfile.mkdtemp(prefix="bench-ours-"), "seed": 0,
        "gradient_checkpointing": args.gradient_checkpointing == "on",
    }
    if args.algo == "opd":
        overrides.update(teacher_model_name_or_path=MODEL, beta=0.5)
    trainer = Trainer(load_config(None, overrides, algo=args.algo))
    times = []
    for step in range(1, args.steps + 1):
        t0 = time.perf_counter()
        trainer.step(step)
        times.append(time.perf_counter() - t0)
    trainer._lock.release()
    return times


# ----------------------------------------------------------------------------------------- TRL


def _step_timer():
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.times: list[float] = []

        def on_step_begin(self, *a, **k):
            self.t0 = time.perf_counter()

        def on_step_end(self, *a, **k):
            self.times.append(time.perf_counter() - self.t0)

    return StepTimer()


def _common_trl_args(args, out: str) -> dict:
    return {"output_dir": out, "max_steps": args.steps, "learning_rate": 1e-6, "lr_scheduler_type": "constant",
            "per_device_train_batch_size": args.prompts * args.generations, "gradient_accumulation_steps": 1,
            "bf16": args.precision == "bf16", "use_cpu": True, "report_to": "none", "save_strategy": "no",
            "logging_steps": 1, "seed": 0, "dataloader_num_workers": 0,
            "gradient_checkpointing": args.gradient_checkpointing == "on"}


def run_trl_grpo(args) -> list[float]:
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from mopd_eval.models import load_model

    task, problems = _problems(args)
    by_question = {p.question: p for p in problems}
    ds = Dataset.from_list([{"prompt": task.messages(p)} for p in problems])

    def reward(completions, prompts, **kw):
        probs = [by_question[p[-1]["content"]] for p in prompts]
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        return [v.reward for v in task.verify(probs, texts)]

    model, tok = load_model(MODEL)
    timer = _step_timer()
    cfg = GRPOConfig(**_common_trl_args(args, tempfile.mkdtemp(prefix="bench-trl-")),
                     num_generations=args.generations, max_completion_length=args.max_tokens, temperature=1.0,
                     beta=0.0, shuffle_dataset=False, num_iterations=1)
    trainer = GRPOTrainer(model=model, reward_funcs=reward, args=cfg, train_dataset=ds, processing_class=tok,
                          callbacks=[timer])
    trainer.train()
    return timer.times


def run_trl_gkd(args) -> list[float]:
    from datasets import Dataset
    from trl.experimental.gkd import GKDConfig, GKDTrainer

    from mopd_eval.models import load_model

    task, problems = _problems(args)
    rows = []
    for p in problems:  # our group of n rollouts of one prompt = the prompt n times in GKD's batch
        rows += [{"messages": task.messages(p) + [{"role": "assistant", "content": str(p.ground_truth)}]}
                 ] * args.generations
    model, tok = load_model(MODEL)
    teacher, _ = load_model(MODEL)
    timer = _step_timer()
    cfg = GKDConfig(**_common_trl_args(args, tempfile.mkdtemp(prefix="bench-gkd-")), lmbda=1.0, beta=0.5,
                    temperature=1.0, max_new_tokens=args.max_tokens, seq_kd=False)
    # GKDConfig's own defaults reorder nothing; a sequential sampler keeps our prompt order.
    trainer = GKDTrainer(model=model, teacher_model=teacher, args=cfg, train_dataset=Dataset.from_list(rows),
                         processing_class=tok, callbacks=[timer])
    trainer._get_train_sampler = lambda *a, **k: __import__("torch").utils.data.SequentialSampler(trainer.train_dataset)
    trainer.train()
    return timer.times


def worker(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    fn = {("ours", "grpo"): run_ours, ("ours", "opd"): run_ours,
          ("trl", "grpo"): run_trl_grpo, ("trl", "opd"): run_trl_gkd}[(args.worker, args.algo)]
    times = fn(args)
    print("RESULT " + json.dumps({"times": times, "peak_rss_gb": _peak_rss_gb()}), flush=True)


# -------------------------------------------------------------------------------------- driver


def _spawn(args, who: str, algo: str, precision: str) -> dict:
    cmd = [sys.executable, __file__, "--worker", who, "--algo", algo, "--precision", precision,
           "--steps", str(args.steps), "--prompts", str(args.prompts), "--generations", str(args.generations),
           "--max-tokens", str(args.max_tokens), "--threads", str(args.threads),
           "--gradient-checkpointing", args.gradient_checkpointing]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=args.timeout)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{who} {algo} {precision} failed (rc {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def summarise(runs: list[dict]) -> dict:
    """Mean s/step over the steps after the first, of every run; the highest peak RSS."""
    steady = [t for r in runs for t in (r["times"][1:] or r["times"])]
    return {"s_per_step": statistics.mean(steady), "s_per_step_runs": [statistics.mean(r["times"][1:] or r["times"])
                                                                       for r in runs],
            "peak_rss_gb": max(r["peak_rss_gb"] for r in runs), "steps_timed": len(steady)}


def to_markdown(results: list[dict]) -> str:
    lines = ["| algorithm (ours vs TRL) | precision | ours s/step | TRL s/step | time ratio | ours peak RSS GB "
             "| TRL peak RSS GB | RSS ratio |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        o, t = r["ours"], r["trl"]
        lines.append(f"| {r['label']} | {r['precision']} | {o['s_per_step']:.2f} | {t['s_per_step']:.2f} | "
                     f"{o['s_per_step'] / t['s_per_step']:.2f} | {o['peak_rss_gb']:.2f} | {t['peak_rss_gb']:.2f} | "
                     f"{o['peak_rss_gb'] / t['peak_rss_gb']:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--algos", default="grpo,opd")
    p.add_argument("--precisions", default="fp32,bf16")
    p.add_argument("--rounds", type=int, default=1, help="ours/TRL alternations per setting")
    p.add_argument("--steps", type=int, default=3, help="optimisation steps per process (the first is left out)")
    p.add_argument("--prompts", type=int, default=2)
    p.add_argument("--generations", type=int, default=8)
    p.add_argument("--max-tokens", type=int, default=48)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--gradient-checkpointing", choices=["on", "off"], default="off",
                   help="activation checkpointing on both sides (TRL's GRPOConfig/SFTConfig default it to "
                        "on, ours to off; runs before this flag used those defaults)")
    p.add_argument("--timeout", type=int, default=3600)
    p.add_argument("--out", type=Path, default=ROOT / "reports" / "training" / "bench_trainer")
    p.add_argument("--worker", choices=["ours", "trl"], help=argparse.SUPPRESS)
    p.add_argument("--algo", choices=["grpo", "opd"], help=argparse.SUPPRESS)
    p.add_argument("--precision", choices=["fp32", "bf16"], help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    results = []
    for algo in args.algos.split(","):
        for precision in args.precisions.split(","):
            runs: dict[str, list[dict]] = {"ours": [], "trl": []}
            for rnd in range(args.rounds):
                for who in (("ours", "trl") if rnd % 2 == 0 else ("trl", "ours")):
                    r = _spawn(args, who, algo, precision)
                    runs[who].append(r)
                    print(f"{algo} {precision} {who}: {[round(t, 1) for t in r['times']]} s, "
                          f"peak RSS {r['peak_rss_gb']:.2f} GB", flush=True)
            label = "GRPO vs GRPOTrainer" if algo == "grpo" else "OPD vs GKDTrainer(lmbda=1)"
            results.append({"label": label, "algo": algo, "precision": precision,
                            "ours": summarise(runs["ours"]), "trl": summarise(runs["trl"]), "raw": runs})
    table = to_markdown(results)
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    meta = {k: getattr(args, k) for k in ("rounds", "steps", "prompts", "generations", "max_tokens", "threads",
                                          "gradient_checkpointing")}
    meta["load_average_at_end"] = os.getloadavg()
    (args.out / "results.json").write_text(json.dumps({"settings": meta, "results": results}, indent=2) + "\n")
    (args.out / "table.md").write_text(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
