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
from collections.abc import Iterator
from pathlib import Path

from mopd_eval.jsonl import AppendLog, iter_jsonl, write_jsonl_atomic

PHASES = ("gen", "reward", "adv", "update_actor", "step")


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
