"""Run many sandbox jobs in parallel: one thread per worker, each job a subprocess."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from typing import TypeVar

T = TypeVar("T")


def default_workers() -> int:
    """One worker per core this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def map_run(
    jobs: Iterable[Callable[[], T]],
    workers: int | None = None,
    *,
    progress: bool = True,
    desc: str = "sandbox",
) -> list[T]:
    """Call every job (a zero-argument callable, e.g. ``functools.partial(run_stdio_tests,
    program, tests)``) on ``workers`` threads (default: one per core) and return the results in
    job order. Threads suffice because each job's work happens in a sandboxed subprocess.

    Safe to call from several threads at once (each call has its own executor; the sandbox
    hands every concurrent run its own uid). Shows a tqdm progress bar when ``progress``.
    If a job raises, pending jobs are cancelled and the exception is re-raised.
    """
    jobs = list(jobs)
    n_workers = workers if workers is not None else default_workers()
    if n_workers < 1:
        raise ValueError(f"workers must be >= 1, got {n_workers}")
    results: list[T] = [None] * len(jobs)  # type: ignore[list-item]
    if not jobs:
        return results
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(jobs), desc=desc, unit="job", dynamic_ncols=True)
    try:
        with ThreadPoolExecutor(max_workers=n_workers, thread_name_prefix=desc) as pool:
            index: dict[Future, int] = {pool.submit(job): i for i, job in enumerate(jobs)}
            pending = set(index)
            while pending:
                done, pending = wait(pending, return_when=FIRST_EXCEPTION)
                for fut in done:
                    err = fut.exception()
                    if err is not None:
                        for other in pending:
                            other.cancel()
                        raise err
                    results[index[fut]] = fut.result()
                if bar is not None:
                    bar.update(len(done))
    finally:
        if bar is not None:
            bar.close()
    return results
