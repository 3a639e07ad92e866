"""Process group and FSDP2 setup: one code path from a single CPU process to many GPUs.

Under ``torchrun`` the environment holds ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``; without it the
trainer runs as rank 0 of 1 and never initialises a process group. Backend: NCCL on CUDA, gloo
on CPU. Models are sharded with FSDP2's ``fully_shard``: each decoder layer is one unit, the
root takes the rest (embeddings, final norm and a tied LM head together).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed() -> DistInfo:
    """Initialise the default process group when launched by ``torchrun`` (idempotent)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    else:
        device = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistInfo(rank, world, local, device)


def all_reduce_sum(values: list[float], info: DistInfo) -> list[float]:
    """Sum a few floats over all ranks (float64 on the wire)."""
    if not info.distributed:
        return [float(v) for v in values]
    t = torch.tensor(values, dtype=torch.float64, device=info.device if info.device.type == "cuda" else "cpu")
    dist.all_reduce(t)
    return t.tolist()


def all_gather_objects(obj, info: DistInfo) -> list:
    if not info.distributed:
        return [obj]
    out = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()


def decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The repeated blocks of a transformers causal LM (``model.model.layers`` for Llama-likes)."""
    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    if layers is None:
        raise ValueError(f"cannot find the decoder layers of {type(model).__name__} (expected .model.layers)")
    return list(layers)


def shard_model(model: torch.nn.Module, info: DistInfo, *, bf16: bool, reshard_root: bool = False) -> torch.nn.Module:
    """Apply ``fully_shard`` to each decoder layer and the root; returns the same module.

    ``bf16``: parameters are gathered and computed in bfloat16, gradients reduced in float32,
    the sharded master weights stay float32. ``reshard_root``: free the root's gathered
    parameters after forward too; a teacher needs it (it has no backward that would, and its
    EMA update writes the shards).
    """
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mesh = init_device_mesh(info.device.type, (info.world_size,))
    mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bf16 else MixedPrecisionPolicy()
    for layer in decoder_layers(model):
        fully_shard(layer, mesh=mesh, mp_policy=mp)
    fully_shard(model, mesh=mesh, mp_policy=mp, reshard_after_forward=True if reshard_root else None)
    return model
