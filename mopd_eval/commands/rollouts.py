"""``mopd-eval rollouts``: sample n responses per problem, verify them, write rollout records.

Task options and sampling defaults come from the task registry (``mopd_eval.tasks``), the same
declarations ``bench`` uses. Resumable (see ``mopd_eval.rollout_gen``).
"""

from __future__ import annotations

import argparse

from mopd_eval.errors import InputError
from mopd_eval.tasks import TASKS, add_sampling_arguments, add_task_arguments


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", required=True, choices=sorted(TASKS), help="task family")
    p.add_argument("--model", default="smollm2-135m", help="HF directory, hub id or alias (default: smollm2-135m)")
    p.add_argument("--data", help="task data: FILE[,FILE...], a GLOB, or hf:NAME[:CONFIG]:SPLIT "
                                  "(default: the task's built-in source; docs/tasks.md)")
    add_sampling_arguments(p)
    p.add_argument("--limit", type=int, help="first N problems only")
    p.add_argument("--chunk", type=int, default=4, help="problems per resumable chunk")
    add_task_arguments(p)
    from mopd_eval.engine_options import add_engine_arguments

    add_engine_arguments(p)
    p.add_argument("--out", required=True, help="rollout JSONL (written when complete; resumable)")
    p.add_argument("--rescore", action="store_true", help="discard an earlier run into --out and start over")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from mopd_eval.commands.bench import prepare_runs
    from mopd_eval.engine_options import engine_options, make_engine
    from mopd_eval.rollout_gen import write_rollouts_resumable
    from mopd_eval.scaleout import current_shard, finish

    for flag in ("chunk", "limit"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            raise InputError("must be >= 1", field=f"--{flag}")
    # The same task, problems and content key as bench builds (checked before the model loads).
    [(spec, sampling)] = prepare_runs(args, [args.task], {args.task: args.data}, Path(args.out).parent)
    shard = current_shard()  # torchrun: this rank's share; rank 0 merges
    try:
        out = write_rollouts_resumable(
            spec.task, lambda: make_engine(args.model, engine_options(args), purpose="generate"), spec.problems, sampling, args.out,
            model_name=args.model, key=spec.config, chunk_problems=args.chunk, rescore=args.rescore, shard=shard,
        )
    finally:
        spec.task.close()
        finish(shard)
    if out is None:
        return 0
    from mopd_eval.records import group_rollouts, read_rollouts

    groups = group_rollouts(read_rollouts(out)).values()
    succ = [sum(r.success for r in g) for g in groups]
    mixed = sum(0 < s < len(g) for s, g in zip(succ, groups, strict=True))
    print(f"wrote {sum(len(g) for g in groups)} rollouts for {len(succ)} problems to {out}: "
          f"{sum(succ)} successes, {mixed} problems with both outcomes, {sum(s >= 2 for s in succ)} with >= 2 successes")
    return 0
