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
from mopd_eval.tasks import (
    TASKS,
    add_sampling_arguments,
    add_task_arguments,
    sampling_for,
    task_from_args,
    task_options,
)


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


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", action="append", required=True,
                   help=f"task family; repeat or comma-separate for several ({', '.join(sorted(TASKS))})")
    p.add_argument("--model", default="smollm2-135m", help="HF directory, hub id or alias (default: smollm2-135m)")
    p.add_argument("--data", action="append", metavar="[TASK=]DATA",
                   help="task data: FILE[,FILE...], a GLOB, or hf:NAME[:CONFIG]:SPLIT; with several tasks "
                        "TASK=DATA (default: the task's built-in source, where it has one; docs/tasks.md)")
    add_sampling_arguments(p)
    p.add_argument("--limit", type=int, help="first N problems of each task only")
    p.add_argument("--chunk", type=int, default=4, help="problems per resumable chunk (default 4)")
    add_task_arguments(p)
    from mopd_eval.engine_options import add_engine_arguments

    add_engine_arguments(p)
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--rescore", action="store_true", help="discard the samples in --out and start over")


def prepare_runs(args: argparse.Namespace, names: list[str], data: dict, out: Path) -> list:
    """One ``(TaskRun, SamplingConfig)`` per task: problems loaded and content key built, before
    any model loads (a bad data file, engine option or ``--model`` fails in seconds and writes nothing)."""
    from functools import cache

    from mopd_eval.engine_options import engine_options
    from mopd_eval.run_keys import model_key

    options = engine_options(args)  # the engine flags first: they need no file, no model
    # Resolved after the first task's data loaded (bad data fails first), and once for all tasks.
    model = cache(lambda: model_key(args.model, options.key_fields()))
    runs: list = []
    try:
        for name in names:
            sampling = sampling_for(name, args)
            runs.append((_task_run(args, name, task_from_args(name, args), data[name], sampling, model,
                                   out / name if len(names) > 1 else out), sampling))
    except BaseException:
        for r in [r for r, _ in runs]:
            r.task.close()
        raise
    return runs


def _task_run(args: argparse.Namespace, name: str, task, data: str | None, sampling, model, out: Path):
    from mopd_eval.bench import TaskRun
    from mopd_eval.run_keys import data_identity

    try:
        problems = task.load(data, limit=args.limit, seed=args.seed)
        if not problems:
            raise InputError(f"task {name!r} has no problems to run", field="--data")
        key = {"task": name, "task_options": task_options(name, args), "data": data,
               "data_sha256": data_identity(data), "limit": args.limit, "model_name": args.model,
               **model(), "sampling": sampling.to_dict()}
    except BaseException:
        task.close()
        raise
    return TaskRun(task, problems, out, key)


def run(args: argparse.Namespace) -> int:
    from mopd_eval.bench import markdown_table, run_task, write_lmeval
    from mopd_eval.jsonl import write_json_atomic, write_text_atomic

    names = parse_tasks(args.task)
    data = parse_data(args.data, names)
    for flag in ("chunk", "limit"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            raise InputError("must be >= 1", field=f"--{flag}")
    out = Path(args.out)
    # Every task's problems and sampling are checked before the model loads: a bad data file
    # fails in seconds, not minutes, and leaves nothing behind.
    runs = prepare_runs(args, names, data, out)
    from mopd_eval.engine_options import engine_options, make_engine

    t0 = time.perf_counter()
    engines: list = []

    def get_engine():  # loaded on first need: finished runs only rewrite their results
        if not engines:
            engines.append(make_engine(args.model, engine_options(args), purpose="generate"))
        return engines[0]

    from mopd_eval.scaleout import current_shard, finish

    shard = current_shard()  # torchrun: this rank's share of every task; rank 0 merges and reports
    results = []
    try:
        for r, sampling in runs:
            res = run_task(r, get_engine, sampling, chunk_problems=args.chunk, rescore=args.rescore, shard=shard)
            if res is None:
                continue
            results.append(res)
            m, n = res["metrics"], sampling.n
            print(f"{r.task.name}: {m['problems_scored']} problems, mean@{n} {m[f'mean@{n}']}, "
                  f"pass@{n} {m['pass@k'][str(n)]} -> {r.out_dir}")
    finally:
        for r, _ in runs:
            r.task.close()
        finish(shard)
    if not shard.is_main:
        return 0
    if len(runs) > 1:
        write_text_atomic(out / "table.md", markdown_table(results))
        # Not "results.json": that name is one task's results (report indexes glob for it).
        write_json_atomic(out / "summary.json", {"tasks": {r["task"]: r for r in results}})
        write_lmeval(out, results)
    print(f"done in {time.perf_counter() - t0:.0f} s; table: {out / 'table.md'}")
    return 0
