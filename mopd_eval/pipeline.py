"""Problems -> sampled, verified records: the one sample -> verify path of every command.

``mopd-eval rollouts`` (rollout records), ``mopd-eval bench`` (sample rows) and the trainer
(training samples) all call ``sample_and_verify``; each turns the ``SampledRecord``s into its own
format. One place therefore decides the prompt tokens (the tokenizer's chat template with the
generation prompt), the seeding (the engine's per-row streams from ``SamplingConfig.seed``, so a
problem samples the same responses whatever chunk it lands in), the order (problem order, then
sample order), and what a verifier that raises costs (only the samples it raised on).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from tqdm import tqdm

from mopd_eval.engines.base import Sample
from mopd_eval.records import Rollout
from mopd_eval.tasks.base import Problem, Task
from mopd_eval.verdict import Verdict


@dataclass(frozen=True)
class SamplingConfig:
    """How responses are sampled; ``seed`` feeds the engine's per-row random streams."""

    n: int = 8
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 256
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class SampledRecord:
    """Sample ``index`` of ``problem``, with its verdict and its share of the chunk's time.

    ``position`` is the problem's index in the list given to ``sample_and_verify`` (a list may
    hold one problem twice; each occurrence is its own group).
    """

    problem: Problem
    position: int
    index: int
    messages: list[dict]
    prompt_ids: list[int]
    sample: Sample
    verdict: Verdict
    chunk: int
    generate_s: float
    verify_s: float

    def to_rollout(self, task_name: str, **meta: Any) -> Rollout:
        """The rollout record; ``meta`` adds to the token ids, finish reason and verdict status."""
        return Rollout(
            problem_id=self.problem.problem_id,
            rollout_id=f"{self.problem.problem_id}#{self.index}",
            prompt=self.messages,
            response=self.sample.text,
            reward=self.verdict.reward,
            success=self.verdict.success,
            feedback=self.verdict.feedback,
            task=task_name,
            ground_truth=self.problem.ground_truth,
            meta={
                **meta,
                "finish_reason": self.sample.finish_reason,
                "status": self.verdict.status,
                "response_token_ids": list(self.sample.token_ids),
            },
        )


def chat_prompt_ids(tokenizer, messages: list[dict]) -> list[int]:
    ids = tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)
    if not isinstance(ids, list):  # transformers 5 may return a BatchEncoding
        ids = ids["input_ids"]
    return list(ids)


def verify_safely(task: Task, problems: Sequence[Problem], responses: Sequence[str]) -> list[Verdict]:
    """``task.verify``, but a verifier that raises costs only the samples it raised on.

    Tasks must not raise for a bad response; if one does anyway (a bug, a broken sandbox), the
    batch is re-verified sample by sample and each sample that still raises gets a
    ``verifier_error`` verdict naming the exception, so the run goes on and the count shows it.
    """
    try:
        return task.verify(problems, responses)
    except Exception:
        out = []
        for p, r in zip(problems, responses, strict=True):
            try:
                out.extend(task.verify([p], [r]))
            except Exception as e:
                out.append(Verdict.failed("verifier_error", f"the verifier failed: {type(e).__name__}: {e}"))
        return out


@contextlib.contextmanager
def _no_timer(name: str) -> Iterator[None]:
    yield


def _one_chunk(engine, task: Task, problems: Sequence[Problem], offset: int, sampling: SamplingConfig,
               chunk: int, timer: Callable[[str], contextlib.AbstractContextManager]) -> list[SampledRecord]:
    messages = [task.messages(p) for p in problems]
    prompt_ids = [chat_prompt_ids(engine.tokenizer, m) for m in messages]
    t0 = time.perf_counter()
    with timer("gen"):
        groups = engine.generate(prompt_ids, sampling.n, sampling.temperature, sampling.top_p,
                                 sampling.max_tokens, sampling.seed)
    t1 = time.perf_counter()
    flat = [(i, j, s) for i, group in enumerate(groups) for j, s in enumerate(group)]
    with timer("reward"):
        verdicts = verify_safely(task, [problems[i] for i, _, _ in flat], [s.text for _, _, s in flat])
    t2 = time.perf_counter()
    if len(verdicts) != len(flat):
        raise RuntimeError(f"task {task.name!r} returned {len(verdicts)} verdicts for {len(flat)} samples")
    n = max(len(flat), 1)
    return [SampledRecord(problems[i], offset + i, j, messages[i], prompt_ids[i], s, v, chunk, (t1 - t0) / n, (t2 - t1) / n)
            for (i, j, s), v in zip(flat, verdicts, strict=True)]


def sample_and_verify(
    engine,
    task: Task,
    problems: Sequence[Problem],
    sampling: SamplingConfig,
    *,
    chunk_problems: int | None = None,
    on_chunk: Callable[[list[SampledRecord]], None] | None = None,
    first_chunk: int = 0,
    desc: str | None = None,
    total: int | None = None,
    progress: bool = True,
    timer: Callable[[str], contextlib.AbstractContextManager] | None = None,
) -> list[SampledRecord]:
    """Sample ``sampling.n`` responses per problem and verify them, ``chunk_problems`` at a time.

    Returns every record (problem order, then sample order). ``on_chunk`` receives each finished
    chunk's records (a resumable command appends them to its log there, so a kill loses at most
    the chunk in flight). ``timer(name)`` wraps the ``gen`` and ``reward`` phases (the trainer's
    timers); ``total`` sizes the progress bar when earlier chunks were done by another run.
    """
    size = chunk_problems or max(len(problems), 1)
    total = len(problems) if total is None else total
    bar = tqdm(total=total, initial=total - len(problems), desc=desc or f"sample {task.name}",
               unit="problem", disable=not progress)
    out: list[SampledRecord] = []
    try:
        for c, start in enumerate(range(0, len(problems), size)):
            records = _one_chunk(engine, task, problems[start:start + size], start, sampling,
                                 first_chunk + c, timer or _no_timer)
            if on_chunk is not None:
                on_chunk(records)
            out += records
            bar.update(len(problems[start:start + size]))
    finally:
        bar.close()
    return out
