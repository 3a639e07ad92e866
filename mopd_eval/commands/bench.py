"""``mopd-eval bench``: sample n responses per problem of one or more tasks, verify, report.

One task: ``DIR/samples.jsonl``, ``DIR/results.json``, ``DIR/table.md``. Several tasks
(``--task a --task b`` or ``--task a,b``): the same three files in ``DIR/<task>/`` each, plus
one combined ``DIR/table.md`` and ``DIR/summary.json`` (every task's results). Resumable (see ``mopd_eval.bench``).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from mopd_eval.errors import InputError
from mopd_eval.tasks import TASKS, get_task

LCB_V6 = ("2025-02-01", "2025-05-01")


def parse_tasks(values: list[str]) -> list[str]:
    """``--task`` values (repeated and/or comma-separated) -> task names in order, no repeats."""
    names: list[str] = []
    for v in values:
        for name in v.split(","):
            name = name.strip()
            if not name:
                continue
            if name not in TASKS:
                raise InputError(f"unknown task {name!r}; known: {', '.join(sorted(TASKS))}", field="--task")
            if name not in names:
                names.append(name)
    if not names:
        raise InputError("no task given", field="--task")
    return names


def parse_data(values: list[str] | None, tasks: list[str]) -> dict[str, str | None]:
    """``--data PATH`` (one task) or ``--data TASK=PATH`` (any number) -> {task: path or None}."""
    out: dict[str, str | None] = dict.fromkeys(tasks)
    for v in values or []:
        name, sep, path = v.partition("=")
        if sep and name in TASKS:
            if name not in out:
                raise InputError(f"--data for {name!r}, which is not among --task", field="--data")
            out[name] = path
        elif len(tasks) == 1:
            out[tasks[0]] = v
        else:
            raise InputError(f"with several tasks, give --data as TASK=PATH (got {v!r})", field="--data")
    return out


def add_task_arguments(p: argparse.ArgumentParser) -> None:
    """Options of the tasks themselves (shared with ``mopd-eval verify``)."""
    g = p.add_argument_group("task options")
    g.add_argument("--per-level", type=int, default=20, help="arith: problems per difficulty level (default 20)")
    g.add_argument("--lcb-start", default=LCB_V6[0], help="lcb: first contest date kept (default 2025-02-01, v6)")
    g.add_argument("--lcb-end", default=LCB_V6[1], help="lcb: contest dates before this are kept (default 2025-05-01)")
    g.add_argument("--partial-credit", action="store_true",
                   help="lcb: run every test (not stopping at the first failure) so partial credit is exact")
    g.add_argument("--code-timeout", type=float, default=6.0, help="code tasks: seconds per test (default 6)")
    g.add_argument("--math-timeout", type=float, default=10.0,
                   help="math tasks: wall clock of one math-verify call in seconds (default 10)")
    g.add_argument("--min-difficulty", type=float, help="deepmath: keep problems with difficulty >= this")
    g.add_argument("--workers", type=int, help="code tasks: parallel sandbox runs (default: one per core)")


def task_options(name: str, args: argparse.Namespace) -> dict:
    """Keyword arguments of task ``name`` that change results (recorded in the config)."""
    if name == "arith":
        return {"per_level": args.per_level}
    if name == "humaneval":
        return {"timeout_s": args.code_timeout}
    if name == "lcb":
        return {"start": args.lcb_start, "end": args.lcb_end, "partial_credit": args.partial_credit,
                "timeout_s": args.code_timeout}
    if name == "deepmath":
        return {"timeout_s": args.math_timeout, "min_difficulty": args.min_difficulty}
    if name in ("aime24", "aime25", "hmmt25"):
        return {"timeout_s": args.math_timeout}
    return {}


def make_task(name: str, args: argparse.Namespace):
    extra = {"workers": args.workers} if name in ("humaneval", "lcb") else {}
    return get_task(name, **task_options(name, args), **extra)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", action="append", required=True,
                   help=f"task family; repeat or comma-separate for several ({', '.join(sorted(TASKS))})")
    p.add_argument("--model", default="smollm2-135m", help="HF directory or alias (default: smollm2-135m)")
    p.add_argument("--engine", choices=["hf", "vllm"], default="hf")
    p.add_argument("--data", action="append", metavar="[TASK=]PATH",
                   help="task data file (default: the task's built-in source, where it has one)")
    p.add_argument("-n", type=int, default=8, help="samples per problem (default 8)")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--max-tokens", type=int, default=512)
    p.add_argument("--seed", type=int, default=0, help="seed of sampling and of generated problems (arith)")
    p.add_argument("--limit", type=int, help="first N problems of each task only")
    p.add_argument("--chunk", type=int, default=4, help="problems per resumable chunk (default 4)")
    add_task_arguments(p)
    p.add_argument("--out", required=True, help="output directory")


def run(args: argparse.Namespace) -> int:
    from mopd_eval.bench import TaskRun, markdown_table, run_task
    from mopd_eval.jsonl import write_json_atomic, write_text_atomic
    from mopd_eval.rollout_gen import SamplingConfig

    names = parse_tasks(args.task)
    data = parse_data(args.data, names)
    for flag in ("n", "max_tokens", "chunk"):
        if getattr(args, flag) < 1:
            raise InputError("must be >= 1", field=f"--{flag.replace('_', '-')}")
    if args.limit is not None and args.limit < 1:
        raise InputError("must be >= 1", field="--limit")
    cfg = SamplingConfig(n=args.n, temperature=args.temperature, top_p=args.top_p,
                         max_tokens=args.max_tokens, seed=args.seed)
    out = Path(args.out)
    # Load every task's problems before the model: a bad data file fails in seconds, not minutes.
    runs = []
    for name in names:
        task = make_task(name, args)
        problems = task.load(data[name], limit=args.limit, seed=args.seed)
        if not problems:
            raise InputError(f"task {name!r} has no problems to run", field="--data")
        config = {"task": name, "task_options": task_options(name, args), "data": data[name],
                  "limit": args.limit, "model": args.model, "engine": args.engine, **cfg.__dict__}
        runs.append(TaskRun(task, problems, out / name if len(names) > 1 else out, config))
    from mopd_eval.engines import make_engine

    t0 = time.perf_counter()
    engines: list = []

    def get_engine():  # loaded on first need: finished runs only rewrite their results
        if not engines:
            engines.append(make_engine(args.engine, args.model))
        return engines[0]

    results = []
    try:
        for r in runs:
            res = run_task(r, get_engine, cfg, chunk_problems=args.chunk)
            results.append(res)
            m = res["metrics"]
            print(f"{r.task.name}: {m['problems_scored']} problems, mean@{cfg.n} {m[f'mean@{cfg.n}']}, "
                  f"pass@{cfg.n} {m['pass@k'][str(cfg.n)]} -> {r.out_dir}")
    finally:
        for r in runs:
            r.task.close()
    if len(runs) > 1:
        write_text_atomic(out / "table.md", markdown_table(results))
        # Not "results.json": that name is one task's results (report indexes glob for it).
        write_json_atomic(out / "summary.json", {"tasks": {r["task"]: r for r in results}})
    print(f"done in {time.perf_counter() - t0:.0f} s; table: {out / 'table.md'}")
    return 0
