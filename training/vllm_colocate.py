"""Colocated vLLM rollouts (``engine: vllm``), laid out as TRL's and verl's colocate modes are.

Every ``torchrun`` process holds its FSDP shard of the policy *and* a vLLM engine on the same
GPU; there is no separate inference server:

* vLLM is built with ``distributed_executor_backend="external_launcher"``: it joins the process
  group ``torchrun`` made instead of spawning workers, so rank ``r`` runs its engine on its own
  GPU (``LOCAL_RANK``), not on GPU 0. The engine core runs in this process
  (``VLLM_ENABLE_V1_MULTIPROCESSING=0``, which the external launcher requires), so nothing is
  pickled to another process.
* Its share of GPU memory is ``gpu_memory_utilization`` (default 0.3, TRL's
  ``vllm_gpu_memory_utilization``): the policy, its optimizer state and the teacher need the rest.
  ``tensor_parallel_size`` ranks form one vLLM instance; every rank of such a group must submit
  the same requests, so the group's prompts are gathered, generated once and split back.
* With ``vllm_enable_sleep_mode`` (and a vLLM that has sleep mode) the engine sleeps after each
  generation (level 1: weights offloaded to CPU, KV cache freed) so the update has the memory,
  and wakes in two stages around the weight push: ``wake_up(tags=["weights"])``, the new weights,
  then ``wake_up(tags=["kv_cache"])``, as TRL does.
* Weights go in per rank through vLLM's weight-loading API: ``LLM.apply_model`` runs
  ``model.load_weights(name, tensor)`` on this rank's model, in chunks of about
  ``WEIGHT_CHUNK_MB``; under FSDP each parameter is gathered alone (``DTensor.full_tensor``), so
  neither a full state dict nor a pickle of one is ever made. The prefix cache is reset after the
  push (its KV entries belong to the old weights).

vLLM needs GPUs for this path; the CPU development machine does not run it (docs/training.md).
``tests/test_training_vllm_colocate.py`` runs the trainer against a recording fake of the vLLM
API instead.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from mopd_eval.engines.base import Sample
from mopd_eval.errors import InputError
from training.distributed import DistInfo

WEIGHT_CHUNK_MB = 256  # bytes of tensors handed to one load_weights call
SLEEP_LEVEL = 1  # 1: offload weights to CPU and free the KV cache; they are overwritten on wake anyway
DEFAULT_GPU_MEMORY_UTILIZATION = 0.3  # TRL's colocate default: the policy already holds the GPU


class ColocatedVLLM:
    """A vLLM engine sharing its GPU with this rank's policy shard (module docstring)."""

    name = "vllm"

    def __init__(self, model_path: str | os.PathLike[str], info: DistInfo, *, tensor_parallel_size: int = 1,
                 gpu_memory_utilization: float | None = None, enable_sleep_mode: bool = False,
                 dtype: str = "auto", max_model_len: int | None = None, enforce_eager: bool = False,
                 engine_args: dict | None = None) -> None:
        from mopd_eval.engines.vllm_engine import VLLMEngine

        tp = int(tensor_parallel_size)
        if info.world_size % tp:
            raise InputError(f"tensor_parallel_size={tp} does not divide the {info.world_size} processes",
                             field="tensor_parallel_size")
        # external_launcher runs the engine core in this process; vLLM refuses it otherwise.
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        self.info, self.tp = info, tp
        self.tp_group = _tp_group(info, tp)
        if enable_sleep_mode and not sleep_mode_available():
            warnings.warn("vllm_enable_sleep_mode: this vLLM platform has no sleep mode (vLLM offers it on "
                          "CUDA, ROCm and XPU); the engine keeps its memory during the update", stacklevel=2)
            enable_sleep_mode = False
        self.engine = VLLMEngine(
            model_path, tensor_parallel_size=tp,
            gpu_memory_utilization=gpu_memory_utilization or DEFAULT_GPU_MEMORY_UTILIZATION,
            dtype=dtype, max_model_len=max_model_len, enforce_eager=enforce_eager,
            seed=info.rank // tp, for_scoring=False, distributed_executor_backend="external_launcher",
            enable_sleep_mode=enable_sleep_mode, **(engine_args or {}),
        )
        self.llm = self.engine.llm
        self.tokenizer, self.stop_ids = self.engine.tokenizer, self.engine.stop_ids
        self.sleep_mode = bool(enable_sleep_mode)
        self.asleep = False

    def generate(self, prompt_ids: list[list[int]], n: int, temperature: float, top_p: float,
                 max_tokens: int, seed: int) -> list[list[Sample]]:
        """``n`` samples per prompt; a tensor-parallel group generates its ranks' prompts together."""
        if self.asleep:
            self.wake_up()
        if self.tp_group is None:
            return self.engine.generate(prompt_ids, n, temperature, top_p, max_tokens, seed)
        parts: list[Any] = [None] * self.tp
        torch.distributed.all_gather_object(parts, list(prompt_ids), group=self.tp_group)
        flat = [p for part in parts for p in part]
        out = self.engine.generate(flat, n, temperature, top_p, max_tokens, seed)
        return split_back(out, [len(p) for p in parts], self.info.rank % self.tp)

    def sleep(self) -> None:
        """Free the GPU memory for the update (no-op without sleep mode)."""
        if self.sleep_mode and not self.asleep:
            self.llm.sleep(level=SLEEP_LEVEL)
            self.asleep = True

    def wake_up(self, tags: Sequence[str] | None = None) -> None:
        if not self.sleep_mode:
            return
        if tags is None:
            self.llm.wake_up()
        else:
            try:
                self.llm.wake_up(tags=list(tags))
            except TypeError:  # a vLLM whose wake_up wakes everything at once
                self.llm.wake_up()
                tags = None
        self.asleep = tags is not None and "kv_cache" not in tags

    def load_policy_weights(self, policy: torch.nn.Module) -> int:
        """Push ``policy``'s current weights into this rank's vLLM model; returns the chunk count."""
        if self.asleep:
            self.wake_up(["weights"])
        chunks = 0
        for chunk in weight_chunks(policy, WEIGHT_CHUNK_MB * 2**20, _vllm_dtype(self.engine)):
            self.llm.apply_model(_Loader(chunk))
            chunks += 1
        self.llm.reset_prefix_cache()
        if self.sleep_mode:
            self.wake_up(["kv_cache"])
        return chunks


def weight_chunks(policy: torch.nn.Module, max_bytes: int,
                  dtype: torch.dtype | None = None) -> Iterator[list[tuple[str, torch.Tensor]]]:
    """``(name, tensor)`` lists of about ``max_bytes`` each, in state-dict order.

    Under FSDP2 each sharded parameter is gathered on its own (a collective every rank runs in the
    same order), so at most one chunk of full tensors exists at a time. Names are Hugging Face's,
    which vLLM's ``load_weights`` maps onto its own layout.
    """
    chunk: list[tuple[str, torch.Tensor]] = []
    size = 0
    with torch.no_grad():
        for name, t in policy.state_dict().items():
            if hasattr(t, "full_tensor"):
                t = t.full_tensor()
            t = t.detach()
            if dtype is not None and t.is_floating_point():
                t = t.to(dtype)
            chunk.append((name, t))
            size += t.numel() * t.element_size()
            if size >= max_bytes:
                yield chunk
                chunk, size = [], 0
    if chunk:
        yield chunk


def split_back(outputs: list, sizes: Sequence[int], index: int) -> list:
    """The slice of ``outputs`` (all ranks' prompts, in rank order) that belongs to ``index``."""
    start = sum(sizes[:index])
    return outputs[start:start + sizes[index]]


def sleep_mode_available() -> bool:
    """Whether the installed vLLM can sleep on this platform (``Platform.is_sleep_mode_available``)."""
    from vllm.platforms import current_platform

    check = getattr(current_platform, "is_sleep_mode_available", None)
    return bool(check()) if check is not None else False


def _tp_group(info: DistInfo, tp: int):
    if tp == 1:
        return None
    # Consecutive ranks form one instance, as vLLM's external launcher assumes.
    group, _ = torch.distributed.new_subgroups_by_enumeration(
        [list(range(i, i + tp)) for i in range(0, info.world_size, tp)])
    return group


def _vllm_dtype(engine: Any) -> torch.dtype | None:
    dtype = getattr(getattr(getattr(engine.llm, "llm_engine", None), "model_config", None), "dtype", None)
    return dtype if isinstance(dtype, torch.dtype) else None


class _Loader:
    """Runs inside the (in-process) vLLM worker: ``model.load_weights`` with HF names."""

    def __init__(self, items: list[tuple[str, torch.Tensor]]) -> None:
        self.items = items

    def __call__(self, model: torch.nn.Module) -> None:
        model.load_weights(weights=iter(self.items))
