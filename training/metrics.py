"""Per-step metrics: verl-named timers, a JSONL log (one object per step), TensorBoard and W&B.

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

from mopd_eval.errors import InputError
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


def no_context_message(condition: str) -> str:
    """The step-log line of a step in which no sample had a teacher context."""
    return (f"no sample had a teacher context (condition {condition!r} could not be filled from any "
            "group's siblings): nothing to distil, update skipped")


def context_summary(metrics_path: Path) -> str | None:
    """End-of-run line: steps without any teacher context and the fraction of samples with one."""
    rows = [r for _, r in iter_jsonl(metrics_path, allow_torn_tail=True)] if metrics_path.is_file() else []
    fracs = [r["teacher/context_fraction"] for r in rows if "teacher/context_fraction" in r]
    if not fracs:
        return None
    empty = sum(f == 0 for f in fracs)
    text = f"{float(np.mean(fracs)):.1%} of samples had a teacher context over {len(fracs)} steps"
    if empty:
        text += f"; {empty} step{'s' if empty > 1 else ''} had none (update skipped)"
    return text


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
    step are dropped (they are recomputed).

    ``reporters``: the integrations to mirror every row to (``TrainConfig.reporters()``):
    ``tensorboard`` (events under ``run_dir/tensorboard``) and ``wandb`` (``wandb.init`` with
    ``dir=run_dir``, ``config``, the run directory's name, and ``resume="allow"`` under a run id
    kept in ``run_dir/wandb_run_id`` so that a resumed job continues the same W&B run; W&B reads
    its own environment: ``WANDB_PROJECT`` (default ``mopd-eval``), ``WANDB_MODE=offline`` to
    write ``run_dir/wandb/offline-run-*`` without network, ``wandb sync`` later).
    """

    def __init__(self, run_dir: str | Path, *, resume_step: int | None = None, reporters: Sequence[str] = (),
                 name: str = "metrics.jsonl", config: dict | None = None) -> None:
        self.path = Path(run_dir) / name
        if resume_step is not None and self.path.exists():
            # A run killed after logging a step but before its checkpoint will redo that step.
            keep = [row for _, row in iter_jsonl(self.path, allow_torn_tail=True) if row.get("step", 0) <= resume_step]
            write_jsonl_atomic(self.path, keep)
        elif resume_step is None and self.path.exists():
            self.path.unlink()
        self.log = AppendLog(self.path)
        self.tb = _tensorboard(Path(run_dir) / "tensorboard") if "tensorboard" in reporters else None
        self.wandb = _wandb_run(Path(run_dir), config or {}) if "wandb" in reporters else None

    def write(self, step: int, metrics: dict) -> None:
        row = {"step": step, **metrics}
        self.log.append([row])
        scalars = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if self.tb is not None:
            for k, v in scalars.items():
                self.tb.add_scalar(k, v, step)
            self.tb.flush()
        if self.wandb is not None:
            self.wandb.log(scalars, step=step)

    def write_rows(self, rows: list[dict]) -> None:
        self.log.append(rows)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()
            self.wandb = None


def _missing(package: str, extra: str) -> InputError:
    return InputError(f"report_to names {package}, which is not installed: pip install 'mopd-eval[{extra}]'",
                      field="report_to")


def _tensorboard(path: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise _missing("tensorboard", "tensorboard") from None
    return SummaryWriter(str(path))


def _wandb_run(run_dir: Path, config: dict):
    """A W&B run for ``run_dir``; its id is kept in ``run_dir/wandb_run_id`` for resumed jobs."""
    import os
    import uuid

    try:
        import wandb
    except ImportError:
        raise _missing("wandb", "wandb") from None
    id_file = run_dir / "wandb_run_id"
    run_id = id_file.read_text().strip() if id_file.is_file() else uuid.uuid4().hex[:12]
    id_file.write_text(run_id + "\n")
    return wandb.init(project=os.environ.get("WANDB_PROJECT", "mopd-eval"), name=run_dir.name, id=run_id,
                      resume="allow", dir=str(run_dir), config=config)
