"""Problems -> rollout records in ``OUT``: sample, verify, write resumably.

Chunks of problems go through ``pipeline.sample_and_verify``; each finished chunk's rollouts are
appended to ``OUT.partial``, so a kill loses at most the chunk in flight. The run's content key
(``OUT.run.json``: task options, data file hash, model identity, sampling) is checked on every
rerun: the same key resumes, another is refused. When every problem is done ``OUT.partial``
becomes ``OUT`` in one rename; a rerun of a finished run does nothing.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from mopd_eval.pipeline import SampledRecord, SamplingConfig, sample_and_verify
from mopd_eval.records import Rollout
from mopd_eval.resumable import ResumableRun
from mopd_eval.tasks.base import Problem, Task


def rollout_of(record: SampledRecord, task_name: str, model_name: str, sampling: SamplingConfig) -> Rollout:
    """The rollout record written by ``mopd-eval rollouts`` (sampling settings in ``meta``)."""
    return record.to_rollout(
        task_name, model=model_name, sample_index=record.index, **sampling.to_dict(),
        partial=record.verdict.partial, **{f"problem_{k}": v for k, v in record.problem.meta.items()},
    )


def todo_problems(problems: Sequence[Problem], run: ResumableRun, done_rows: Sequence[Mapping],
                  n: int) -> list[Problem]:
    """Problems without their ``n`` rows among ``done_rows``.

    A group left incomplete (a kill in the middle of writing a chunk) is dropped from the log and
    sampled again; the seeding makes the redone samples equal to the lost ones.
    """
    counts = Counter(row.get("problem_id") for row in done_rows)
    todo = [p for p in problems if counts.get(p.problem_id, 0) < n]
    half = {p.problem_id for p in todo if counts.get(p.problem_id)}
    if half:
        run.rewrite([row for row in done_rows if row.get("problem_id") not in half])
        print(f"resuming: dropped the incomplete samples of {len(half)} problem(s) to redo them", file=sys.stderr)
    return todo


def write_rollouts_resumable(
    task: Task,
    get_engine: Callable[[], object],
    problems: Sequence[Problem],
    sampling: SamplingConfig,
    out: str | Path,
    *,
    model_name: str,
    key: Mapping,
    chunk_problems: int = 4,
    rescore: bool = False,
) -> Path:
    """Generate and verify rollouts for ``problems`` into ``out`` (see the module docstring).

    ``get_engine()`` is called only when samples are missing.
    """
    out = Path(out)
    run = ResumableRun(out.with_name(out.name + ".partial"), out.with_name(out.name + ".run.json"), key,
                       final_path=out, what="rollouts run")
    with run:
        done = run.start(fresh=rescore)
        if run.finished:
            return out
        todo = todo_problems(problems, run, done, sampling.n)
        if todo:
            engine = get_engine()
            sample_and_verify(
                engine, task, todo, sampling, chunk_problems=chunk_problems, total=len(problems),
                desc=f"rollouts {task.name}",
                on_chunk=lambda recs: run.append(rollout_of(r, task.name, model_name, sampling).to_json()
                                                 for r in recs),
            )
        return run.finish()
