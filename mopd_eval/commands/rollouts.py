"""``mopd-eval rollouts``: sample n responses per problem, verify them, write rollout records."""

from __future__ import annotations

import argparse

from mopd_eval.rollout_gen import SamplingConfig, write_rollouts_resumable
from mopd_eval.tasks import TASKS, get_task


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", required=True, choices=sorted(TASKS), help="task family")
    p.add_argument("--model", default="smollm2-135m", help="HF directory or alias (default: smollm2-135m)")
    p.add_argument("--engine", choices=["hf", "vllm"], default="hf")
    p.add_argument("--data", help="task data file (default: the task's built-in source)")
    p.add_argument("-n", type=int, default=8, help="samples per problem (default 8)")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--max-tokens", type=int, default=256)
    p.add_argument("--seed", type=int, default=0, help="seed of sampling and of generated problems")
    p.add_argument("--limit", type=int, help="first N problems only")
    p.add_argument("--per-level", type=int, default=20, help="arith: problems per difficulty level")
    p.add_argument("--levels", default="1,2,3,4,5", help="arith: comma-separated difficulty levels")
    p.add_argument("--chunk", type=int, default=4, help="problems per resumable chunk")
    p.add_argument("--out", required=True, help="rollout JSONL (written when complete; resumable)")


def run(args: argparse.Namespace) -> int:
    from mopd_eval.engines import make_engine

    arith = {"per_level": args.per_level, "levels": tuple(int(x) for x in args.levels.split(","))}
    task = get_task(args.task, **(arith if args.task == "arith" else {}))
    problems = task.load(args.data, limit=args.limit, seed=args.seed)
    cfg = SamplingConfig(n=args.n, temperature=args.temperature, top_p=args.top_p, max_tokens=args.max_tokens, seed=args.seed)
    engine = make_engine(args.engine, args.model)
    try:
        out = write_rollouts_resumable(
            task, engine, problems, cfg, args.out, model_name=args.model, chunk_problems=args.chunk,
            run_config={"data": args.data, "limit": args.limit, "engine": args.engine,
                        **({k: list(v) if isinstance(v, tuple) else v for k, v in arith.items()} if args.task == "arith" else {})},
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
