"""Model engines behind one interface (``base.Engine``): ``hf`` (transformers) and ``vllm``."""

from __future__ import annotations

import os

from mopd_eval.engines.base import Engine, Sample, row_seed, stop_token_ids
from mopd_eval.errors import InputError

ENGINES = ("hf", "vllm")

__all__ = ["ENGINES", "Engine", "Sample", "make_engine", "row_seed", "stop_token_ids"]


def make_engine(name: str, model: str | os.PathLike[str], **kw) -> Engine:
    """Build engine ``name`` ("hf" or "vllm") on ``model`` (alias, local directory or hub id).

    Keyword arguments go to the engine: ``HFEngine(device=, dtype=, attn_implementation=,
    max_model_len=, model_kwargs=, pack_tokens=, row_tokens=, kv_budget_mb=, gen_batch_rows=)``,
    ``VLLMEngine(tensor_parallel_size=, data_parallel_size=, gpu_memory_utilization=, dtype=,
    max_model_len=, enforce_eager=, for_scoring=, **LLM kwargs)``. Commands build them from one
    checked option group: ``mopd_eval.engine_options.make_engine``. An unknown name, or ``vllm``
    without the ``vllm`` extra installed, raises ``InputError`` (field ``engine``).
    """
    if name == "hf":
        from mopd_eval.engines.hf import HFEngine

        return HFEngine(model, **kw)
    if name == "vllm":
        try:
            from mopd_eval.engines.vllm_engine import VLLMEngine
        except ImportError as e:
            raise InputError(
                f"the vllm engine needs vLLM ({e}); install the extra: pip install 'mopd-eval[vllm]'",
                field="engine",
            ) from None
        return VLLMEngine(model, **kw)
    raise InputError(f"unknown engine {name!r} (choose from {', '.join(ENGINES)})", field="engine")
