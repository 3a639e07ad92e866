"""Per-step metrics: verl-named timers, a JSONL log (one object per step), TensorBoard if installed.

Timer names follow verl's ``timing_s/<phase>``: ``gen`` (sampling), ``reward`` (verifying),
``adv`` (advantages and teacher contexts), ``update_actor`` (teacher and student forwards,
backward, optimizer step, EMA update), ``step`` (the whole step). Extra phases: ``teacher``
(teacher forwards, a part of ``update_actor``), ``sync_weights`` (pushing the new weights to the
generation engine), ``save_checkpoint``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mopd_eval.jsonl import AppendLog, iter_jsonl, write_jsonl_atomic

PHASES = ("gen", "reward", "adv", "update_actor", "step")


@dataclass(frozen=True)
class SampleStats:
    """What the step metrics need of one training sample (small: it is gathered over ranks)."""

    reward: float
    success: bool
    response_tokens: int
    has_context: bool
    truncated: bool  # stopped by the length limit
    advantage: float
    teacher_prompt_tokens: int
    prompt_tokens: int

    @classmethod
    def of(cls, s) -> SampleStats:
        """From a ``training.samples.TrainSample``."""
        return cls(s.rollout.reward, s.rollout.success, len(s.response_ids), s.has_context,
                   s.rollout.meta["finish_reason"] == "length", s.advantage,
                   len(s.teacher_prompt_ids or ()), len(s.prompt_ids))


def step_sample_metrics(rows: Sequence[SampleStats], group_size: int, *, distill: bool) -> dict[str, float]:
    """One step's rollout metrics (verl's names) over every rank's samples, in group order."""
    rewards = np.array([r.reward for r in rows], dtype=float)
    success = np.array([r.success for r in rows], dtype=float)
    lengths = np.array([r.response_tokens for r in rows], dtype=float)
    groups = rewards.reshape(-1, group_size)
    succ_g = success.reshape(-1, group_size)
    out = {
        "critic/score/mean": float(rewards.mean()),
        "critic/score/max": float(rewards.max()),
        "critic/score/min": float(rewards.min()),
        "critic/rewards/mean": float(rewards.mean()),
        "success/mean": float(success.mean()),
        "response_length/mean": float(lengths.mean()),
        "response_length/max": float(lengths.max()),
        "response_length/min": float(lengths.min()),
        "response_length/clip_ratio": float(np.mean([r.truncated for r in rows])),
        "rollouts/mixed_group_fraction": float(np.mean((succ_g.min(1) < 1) & (succ_g.max(1) > 0))),
        "rollouts/group_reward_std": float(groups.std(1, ddof=1).mean()) if group_size > 1 else 0.0,
        "teacher/context_fraction": float(np.mean([r.has_context for r in rows])) if distill else 0.0,
        "prompt_length/mean": float(np.mean([r.prompt_tokens for r in rows])),
    }
    if distill:
        ctx_lens = [r.teacher_prompt_tokens for r in rows if r.has_context]
        # Teacher prompt tokens per trained sample: what makes a peer context cost time.
        out["teacher/prompt_length/mean"] = float(np.mean(ctx_lens)) if ctx_lens else 0.0
    else:
        out["critic/advantages/mean"] = float(np.mean([r.advantage for r in rows]))
        out["critic/advantages/max"] = float(np.max([r.advantage for r in rows]))
    return out


class Timers:
    """Accumulating wall-clock timers: ``with timers("gen"): ...`` adds to ``timing_s/gen``."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            key = f"timing_s/{name}"
            self.seconds[key] = self.seconds.get(key, 0.0) + time.perf_counter() - t0

    def pop(self) -> dict[str, float]:
        out, self.seconds = self.seconds, {}
        return out


class MetricsLog:
    """``metrics.jsonl`` (or ``name``) in the run directory; on resume, rows after the resumed
    step are dropped (they are recomputed)."""

    def __init__(self, run_dir: str | Path, *, resume_step: int | None = None, tensorboard: str = "auto",
                 name: str = "metrics.jsonl") -> None:
        self.path = Path(run_dir) / name
        if resume_step is not None and self.path.exists():
            # A run killed after logging a step but before its checkpoint will redo that step.
            keep = [row for _, row in iter_jsonl(self.path, allow_torn_tail=True) if row.get("step", 0) <= resume_step]
            write_jsonl_atomic(self.path, keep)
        elif resume_step is None and self.path.exists():
            self.path.unlink()
        self.log = AppendLog(self.path)
        self.tb = _tensorboard(Path(run_dir) / "tensorboard", tensorboard)

    def write(self, step: int, metrics: dict) -> None:
        row = {"step": step, **metrics}
        self.log.append([row])
        if self.tb is not None:
            for k, v in metrics.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    self.tb.add_scalar(k, v, step)
            self.tb.flush()

    def write_rows(self, rows: list[dict]) -> None:
        self.log.append(rows)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def _tensorboard(path: Path, mode: str):
    if mode == "none":
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is not a dependency; "auto" quietly skips it
        if mode == "tensorboard":
            raise
        return None
    return SummaryWriter(str(path))
