"""Problems -> rollout records: sample n responses per problem, verify, write resumably.

Work is done in chunks of problems; each finished chunk's rollouts are appended to
``OUT.partial`` and flushed, so a kill loses at most the chunk in flight. A rerun with the same
settings skips problems already there; when every problem is done the partial file is renamed
to ``OUT``. The settings are stored next to it (``OUT.partial.config.json``) and a rerun with
different ones refuses to mix them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from mopd_eval.errors import InputError
from mopd_eval.jsonl import AppendLog, write_json_atomic
from mopd_eval.records import Rollout
from mopd_eval.tasks.base import Problem, Task


@dataclass(frozen=True)
class SamplingConfig:
    n: int = 8
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 256
    seed: int = 0


def chat_prompt_ids(tokenizer, messages: list[dict]) -> list[int]:
    ids = tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)
    if not isinstance(ids, list):  # transformers 5 may return a BatchEncoding
        ids = ids["input_ids"]
    return list(ids)


def sampled_rollout(
    problem: Problem,
    index: int,
    messages: list[dict],
    sample,
    verdict,
    task_name: str,
    **meta,
) -> Rollout:
    """The rollout record of sample ``index`` of ``problem`` (an engine ``Sample``) and its
    ``Verdict``; ``meta`` adds to the sampled token ids, finish reason and verdict status."""
    return Rollout(
        problem_id=problem.problem_id,
        rollout_id=f"{problem.problem_id}#{index}",
        prompt=messages,
        response=sample.text,
        reward=verdict.reward,
        success=verdict.success,
        feedback=verdict.feedback,
        task=task_name,
        ground_truth=problem.ground_truth,
        meta={
            **meta,
            "finish_reason": sample.finish_reason,
            "status": verdict.status,
            "response_token_ids": list(sample.token_ids),
        },
    )


def sample_and_verify(
    task: Task,
    engine,
    problems: Sequence[Problem],
    cfg: SamplingConfig,
    model_name: str,
) -> list[Rollout]:
    """Rollouts of ``problems`` (n each, problem order then sample order), verified by ``task``."""
    tok = engine.tokenizer
    messages = [task.messages(p) for p in problems]
    prompt_ids = [chat_prompt_ids(tok, m) for m in messages]
    samples = engine.generate(prompt_ids, cfg.n, cfg.temperature, cfg.top_p, cfg.max_tokens, cfg.seed)
    flat_p = [p for p, group in zip(problems, samples, strict=True) for _ in group]
    flat_s = [s for group in samples for s in group]
    verdicts = task.verify(flat_p, [s.text for s in flat_s])
    out: list[Rollout] = []
    k = 0
    for p, msgs, group in zip(problems, messages, samples, strict=True):
        for j, s in enumerate(group):
            v = verdicts[k]
            k += 1
            out.append(
                sampled_rollout(
                    p,
                    j,
                    msgs,
                    s,
                    v,
                    task.name,
                    model=model_name,
                    sample_index=j,
                    temperature=cfg.temperature,
                    top_p=cfg.top_p,
                    max_tokens=cfg.max_tokens,
                    seed=cfg.seed,
                    partial=v.partial,
                    **{f"problem_{key}": val for key, val in p.meta.items()},
                )
            )
    return out


def write_rollouts_resumable(
    task: Task,
    engine,
    problems: Sequence[Problem],
    cfg: SamplingConfig,
    out: str | Path,
    *,
    model_name: str,
    chunk_problems: int = 4,
    run_config: dict | None = None,
) -> Path:
    """Generate and verify rollouts for ``problems`` into ``out`` (see the module docstring)."""
    out = Path(out)
    partial = out.with_name(out.name + ".partial")
    cfg_path = out.with_name(out.name + ".partial.config.json")
    config = {"task": task.name, "model": model_name, **cfg.__dict__, **(run_config or {})}
    if partial.exists() and cfg_path.exists():
        import json

        old = json.loads(cfg_path.read_text())
        if old != config:
            diff = {k: (old.get(k), config.get(k)) for k in set(old) | set(config) if old.get(k) != config.get(k)}
            raise InputError(f"an unfinished run with other settings is there ({diff}); delete it or use another --out", path=partial)
    write_json_atomic(cfg_path, config)
    log = AppendLog(partial)
    counts: dict[str, int] = {}
    for row in log.done:
        counts[row["problem_id"]] = counts.get(row["problem_id"], 0) + 1
    todo = [p for p in problems if counts.get(p.problem_id, 0) < cfg.n]
    half_done = [p.problem_id for p in todo if counts.get(p.problem_id)]
    if half_done:  # appends are per chunk, so this only happens if the log was edited by hand
        raise InputError(f"problems with an incomplete group in the partial file: {half_done[:5]}", path=partial)
    bar = tqdm(total=len(problems), initial=len(problems) - len(todo), desc=f"rollouts {task.name}", unit="problem")
    for i in range(0, len(todo), chunk_problems):
        chunk = todo[i : i + chunk_problems]
        log.append(r.to_json() for r in sample_and_verify(task, engine, chunk, cfg, model_name))
        bar.update(len(chunk))
    bar.close()
    os.replace(partial, out)
    cfg_path.unlink(missing_ok=True)
    return out
