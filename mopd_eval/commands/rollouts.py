"""``mopd-eval rollouts``: sample n responses per problem, verify them, write rollout records.

Task options and sampling defaults come from the task registry (``mopd_eval.tasks``), the same
declarations ``bench`` uses. Resumable (see ``mopd_eval.rollout_gen``).
"""

from __future__ import annotations

import argparse

from mopd_eval.errors import InputError
from mopd_eval.tasks import (
    TASKS,
    add_sampling_arguments,
    add_task_arguments,
    sampling_for,
    task_from_args,
    task_options,
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", required=True, choices=sorted(TASKS), help="task family")
    p.add_argument("--model", default="smollm2-135m", help="HF directory, hub id or alias (default: smollm2-135m)")
    p.add_argument("--engine", choices=["hf", "vllm"], default="hf")
    p.add_argument("--data", help="task data file (default: the task's built-in source)")
    add_sampling_arguments(p)
    p.add_argument("--limit", type=int, help="first N problems only")
    p.add_argument("--chunk", type=int, default=4, help="problems per resumable chunk")
    add_task_arguments(p)
    p.add_argument("--out", required=True, help="rollout JSONL (written when complete; resumable)")
    p.add_argument("--rescore", action="store_true", help="discard an earlier run into --out and start over")


def run(args: argparse.Namespace) -> int:
    from mopd_eval.engines import make_engine
    from mopd_eval.rollout_gen import write_rollouts_resumable
    from mopd_eval.run_keys import data_identity, model_key

    for flag in ("chunk", "limit"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            raise InputError("must be >= 1", field=f"--{flag}")
    sampling = sampling_for(args.task, args)
    task = task_from_args(args.task, args)
    try:
        problems = task.load(args.data, limit=args.limit, seed=args.seed)
        if not problems:
            raise InputError(f"task {args.task!r} has no problems to run", field="--data")
        key = {"task": args.task, "task_options": task_options(args.task, args), "data": args.data,
               "data_sha256": data_identity(args.data), "limit": args.limit, "model_name": args.model,
               **model_key(args.model, {"engine": args.engine}), "sampling": sampling.to_dict()}
        out = write_rollouts_resumable(
            task, lambda: make_engine(args.engine, args.model), problems, sampling, args.out,
            model_name=args.model, key=key, chunk_problems=args.chunk, rescore=args.rescore,
        )
    finally:
        task.close()
    from mopd_eval.records import group_rollouts, read_rollouts

    groups = group_rollouts(read_rollouts(out)).values()
    succ = [sum(r.success for r in g) for g in groups]
    mixed = sum(0 < s < len(g) for s, g in zip(succ, groups, strict=True))
    print(f"wrote {sum(len(g) for g in groups)} rollouts for {len(succ)} problems to {out}: "
          f"{sum(succ)} successes, {mixed} problems with both outcomes, {sum(s >= 2 for s in succ)} with >= 2 successes")
    return 0
