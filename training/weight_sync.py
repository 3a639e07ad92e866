"""After each update, generation must use the new weights: push them into the rollout engine.

Four cases:

* ``hf`` engine wrapping the policy module itself (one process, no FSDP, the CPU default):
  nothing to do, the engine samples from the very parameters the optimizer just changed.
* ``hf`` engine on its own unsharded copy (FSDP: the policy is sharded across ranks, but each
  rank samples its prompts alone, which a sharded module cannot do without lock-step
  collectives): the full state dict is gathered on every rank and loaded into the copy.
* the colocated ``vllm`` engine of training (``training.vllm_colocate``): it streams the weights
  into its own model per rank and per chunk (``load_policy_weights``); no full state dict.
* any other ``vllm`` engine: the gathered weights are handed to vLLM's model through ``LLM.apply_model``
  (``model.load_weights`` takes Hugging Face names), then the prefix cache is reset because its
  KV entries were computed with the old weights. vLLM's V1 engine runs the model in a separate
  process unless ``VLLM_ENABLE_V1_MULTIPROCESSING=0``; with multiprocessing the function and
  the tensors are pickled to it, which needs ``VLLM_ALLOW_INSECURE_SERIALIZATION=1``. For large
  models use vLLM's weight-transfer engine (NCCL) instead; this hook is the small-model path.
  It was not run on this CPU machine (vLLM's CPU build compiles for minutes per start).
"""

from __future__ import annotations

from typing import Any

import torch
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict


def gathered_weights(policy: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Unsharded weights on every rank (a collective under FSDP)."""
    return get_model_state_dict(policy, options=StateDictOptions(full_state_dict=True))


def engine_shares_policy(engine: Any, policy: torch.nn.Module) -> bool:
    return getattr(engine, "model", None) is policy


def push_weights(engine: Any, policy: torch.nn.Module) -> str:
    """Make ``engine`` generate with ``policy``'s current weights; returns what was done."""
    if engine_shares_policy(engine, policy):
        return "shared"
    if hasattr(engine, "load_policy_weights"):
        engine.load_policy_weights(policy)
        return "streamed"
    weights = gathered_weights(policy)
    if hasattr(engine, "update_weights"):  # an engine that implements the hook itself
        engine.update_weights(weights)
        return "engine.update_weights"
    llm = getattr(engine, "llm", None)
    if llm is not None and hasattr(llm, "apply_model"):
        items = [(k, v.detach().to("cpu")) for k, v in weights.items()]
        llm.apply_model(_VLLMLoader(items))
        if hasattr(llm, "reset_prefix_cache"):
            llm.reset_prefix_cache()
        return "vllm.apply_model"
    model = getattr(engine, "model", None)
    if isinstance(model, torch.nn.Module):
        with torch.no_grad():
            model.load_state_dict({k: v.to(next(model.parameters()).device) for k, v in weights.items()})
        return "copy"
    raise TypeError(f"cannot push weights into a {type(engine).__name__}: give it update_weights(state_dict)")


class _VLLMLoader:
    """Picklable callable run inside vLLM's worker: ``model.load_weights`` with HF names."""

    def __init__(self, items: list[tuple[str, torch.Tensor]]) -> None:
        self.items = items

    def __call__(self, model: torch.nn.Module) -> None:
        model.load_weights(weights=iter(self.items))
