"""Scale-out of ``signal``, ``bench`` and ``rollouts`` over ``torchrun`` processes.

Started as ``torchrun --nproc_per_node N -m mopd_eval.cli signal ...`` (or ``bench``,
``rollouts``), each process takes every N-th problem (``Shard.take``), keeps its own resumable
log (file names carry ``.rank{r}-of-{N}``), and waits at a barrier; rank 0 then merges the logs
in problem order and writes the results and reports, exactly as one process would have. Results
do not depend on the sharding: sampling is seeded per (prompt, sample index) and each score is a
function of its own (prompt, target) pair.

The barrier is ``torch.distributed`` on gloo (CPU collectives work whatever the accelerator), so
no GPU collective library is needed; each rank's engine picks its own device from
``LOCAL_RANK`` when ``--device`` is ``auto``. A resumed run must use the same number of processes
(the logs are per rank); a changed ``N`` starts those shards afresh rather than mixing.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Shard:
    """This process's share of a run: rank ``rank`` of ``world`` processes."""

    rank: int = 0
    world: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def suffix(self) -> str:
        """Inserted into per-rank file names; empty for a single process (the usual names)."""
        return "" if self.world == 1 else f".rank{self.rank}-of-{self.world}"

    def take(self, items: Sequence[T]) -> list[T]:
        """Every ``world``-th item from ``rank``: balanced, and problem order within a rank."""
        return list(items[self.rank :: self.world])

    def all(self) -> list[Shard]:
        return [Shard(r, self.world) for r in range(self.world)]


def current_shard() -> Shard:
    """The shard of this process: from torchrun's ``RANK``/``WORLD_SIZE``, else the whole run."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world < 1 or not 0 <= rank < world:
        raise RuntimeError(f"bad torchrun environment: RANK={rank} WORLD_SIZE={world}")
    return Shard(rank, world)


def barrier(shard: Shard, timeout_s: float = 6 * 3600) -> None:
    """Wait until every rank got here (no-op for one process). Long timeout: ranks finish their
    shards at different times, and the slowest one may take hours on a large study."""
    if shard.world == 1:
        return
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo", timeout=timedelta(seconds=timeout_s))
    dist.barrier()


def finish(shard: Shard) -> None:
    """Tear the process group down (after the last barrier)."""
    if shard.world == 1:
        return
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


ONE_PROCESS = Shard()
