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
from dataclasses import dataclass
from pathlib import Path

from mopd_eval.jsonl import iter_jsonl, write_json_atomic, write_jsonl_atomic
from mopd_eval.pipeline import SampledRecord, SamplingConfig, sample_and_verify
from mopd_eval.records import Rollout
from mopd_eval.resumable import ResumableRun, key_sha256
from mopd_eval.scaleout import ONE_PROCESS, Shard, barrier
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


@dataclass(frozen=True)
class SampledRun:
    """Where one sampled run lives: ``files(suffix)`` gives (log, record, final) for a shard suffix
    (``""`` for one process, ``.rank{r}-of-{N}`` under torchrun)."""

    files: Callable[[str], tuple[Path, Path, Path]]
    key: Mapping
    what: str


def sample_into(
    where: SampledRun,
    task: Task,
    get_engine: Callable[[], object],
    problems: Sequence[Problem],
    sampling: SamplingConfig,
    to_row: Callable[[SampledRecord], dict],
    *,
    chunk_problems: int = 4,
    rescore: bool = False,
    shard: Shard = ONE_PROCESS,
) -> list[dict] | None:
    """Sample and verify the missing problems of this shard into its resumable log, then (rank 0,
    after every rank finished) return all rows in problem order; other ranks return ``None``.

    ``get_engine()`` is called only when samples are missing, so a finished run never loads the
    model. Under torchrun rank 0 also writes the merged final file and its record, so a later
    one-process rerun finds a finished run.
    """
    log, record, final = where.files(shard.suffix)
    run = ResumableRun(log, record, where.key, final_path=final, what=where.what)
    with run:
        done = run.start(fresh=rescore)
        if not run.finished:
            mine = shard.take(problems)
            todo = todo_problems(mine, run, done, sampling.n)
            if todo:
                first_chunk = max((row.get("chunk", -1) for row in done), default=-1) + 1
                sample_and_verify(get_engine(), task, todo, sampling, chunk_problems=chunk_problems,
                                  first_chunk=first_chunk, total=len(mine), desc=f"{where.what} {task.name}",
                                  on_chunk=lambda recs: run.append(to_row(r) for r in recs))
            run.finish()
    barrier(shard)
    if not shard.is_main:
        return None
    if shard.world == 1:
        return [obj for _, obj in iter_jsonl(final)]
    order = {p.problem_id: i for i, p in enumerate(problems)}
    rows = sorted((obj for other in shard.all() for _, obj in iter_jsonl(where.files(other.suffix)[2])),
                  key=lambda row: order.get(row.get("problem_id"), len(order)))  # stable: sample order kept
    log, record, final = where.files("")
    write_json_atomic(record, {"key": dict(where.key), "key_sha256": key_sha256(where.key)})
    write_jsonl_atomic(final, rows)
    return rows


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
    shard: Shard = ONE_PROCESS,
) -> Path | None:
    """Generate and verify rollouts for ``problems`` into ``out`` (see the module docstring);
    returns ``out`` on rank 0, ``None`` on the other ranks of a torchrun job."""
    out = Path(out)

    def files(sfx: str) -> tuple[Path, Path, Path]:
        return (out.with_name(f"{out.name}{sfx}.partial"), out.with_name(f"{out.name}{sfx}.run.json"),
                out.with_name(f"{out.name}{sfx}") if sfx else out)

    rows = sample_into(SampledRun(files, key, "rollouts"), task, get_engine, problems, sampling,
                       lambda r: rollout_of(r, task.name, model_name, sampling).to_json(),
                       chunk_problems=chunk_problems, rescore=rescore, shard=shard)
    return None if rows is None else out
