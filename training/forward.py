"""Batched forwards that return the logits predicting each response token.

Rows are ``prompt + response`` with prompts **left**-padded to a common end column ``P`` and
responses right-padded to a common width ``R``: every response then starts at column ``P`` and
the logits that predict it are columns ``P - 1 .. P + R - 2``, the last ``R + 1`` minus one,
which ``logits_to_keep`` computes without materialising logits for the (long) teacher prompts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass
class PaddedBatch:
    input_ids: torch.Tensor  # [B, P + R]
    attention_mask: torch.Tensor  # [B, P + R]
    position_ids: torch.Tensor  # [B, P + R]
    response_ids: torch.Tensor  # [B, R], pad where masked
    response_mask: torch.Tensor  # [B, R] float, 1 on real response tokens

    @property
    def width(self) -> int:
        return self.response_ids.shape[1]


def pad_batch(
    prompts: Sequence[Sequence[int]],
    responses: Sequence[Sequence[int]],
    pad_id: int,
    *,
    width: int | None = None,
    device: torch.device | str = "cpu",
) -> PaddedBatch:
    """Left-pad prompts, right-pad responses to ``width`` (default: the longest response)."""
    if len(prompts) != len(responses) or not prompts:
        raise ValueError("need as many prompts as responses, at least one")
    if any(len(p) == 0 for p in prompts):
        raise ValueError("empty prompt: the first response token would have no context")
    P = max(len(p) for p in prompts)
    R = max(len(r) for r in responses) if width is None else int(width)
    R = max(R, 1)
    B = len(prompts)
    ids = torch.full((B, P + R), pad_id, dtype=torch.long)
    mask = torch.zeros((B, P + R), dtype=torch.long)
    resp = torch.full((B, R), pad_id, dtype=torch.long)
    rmask = torch.zeros((B, R), dtype=torch.float32)
    for i, (p, r) in enumerate(zip(prompts, responses, strict=True)):
        if len(r) > R:
            raise ValueError(f"row {i}: response of {len(r)} tokens is wider than {R}")
        ids[i, P - len(p):P] = torch.as_tensor(list(p), dtype=torch.long)
        mask[i, P - len(p):P] = 1
        if len(r):
            ids[i, P:P + len(r)] = torch.as_tensor(list(r), dtype=torch.long)
            mask[i, P:P + len(r)] = 1
            resp[i, :len(r)] = torch.as_tensor(list(r), dtype=torch.long)
            rmask[i, :len(r)] = 1.0
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    dev = torch.device(device)
    return PaddedBatch(ids.to(dev), mask.to(dev), pos.to(dev), resp.to(dev), rmask.to(dev))


def response_logits(model: torch.nn.Module, batch: PaddedBatch) -> torch.Tensor:
    """Logits ``[B, R, V]`` predicting each response position of ``batch`` (padding included)."""
    R = batch.width
    out = model(
        input_ids=batch.input_ids,
        attention_mask=batch.attention_mask,
        position_ids=batch.position_ids,
        use_cache=False,
        logits_to_keep=R + 1,
    )
    return out.logits[:, :-1]


def token_logprobs(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """``log softmax(logits)[ids]`` per position, in float32, without keeping the full softmax."""
    logits = logits.float()
    return logits.gather(-1, ids[..., None])[..., 0] - torch.logsumexp(logits, dim=-1)
