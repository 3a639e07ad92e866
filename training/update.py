"""One actor update: teacher and student forwards, the loss, backward over micro-batches, step.

Token-mean over the whole accumulation window and all ranks: every rank first learns the
global number ``N`` of trained tokens (samples without an effective teacher context excluded
for distillation), then each micro-batch contributes ``sum(token losses) / N``. FSDP averages
gradients over ranks, so that sum is multiplied by the world size to make the update the
gradient of exactly ``sum over all tokens / N`` on any number of processes.

Under FSDP every rank must run the same collectives: each runs the same number of micro-batch
forwards and backwards (a micro-batch without trained rows still does a zero-weighted backward)
and, with a sharded teacher, at least one teacher forward per micro-batch.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from training.config import TrainConfig
from training.distributed import DistInfo, all_reduce_sum
from training.forward import pad_batch, response_logits, token_logprobs
from training.losses import distill_token_loss, grpo_token_loss
from training.metrics import Timers
from training.samples import TrainSample
from training.teachers import Teacher


@dataclass
class UpdateContext:
    policy: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: object
    teacher: Teacher | None
    reference: torch.nn.Module | None  # GRPO's KL reference (beta > 0)
    info: DistInfo
    pad_id: int
    sharded: bool  # models are FSDP modules (collectives in forward)
    autocast_bf16: bool  # unsharded bf16 (FSDP's own policy handles sharded bf16)


def trained_tokens(s: TrainSample, distill: bool) -> int:
    return len(s.response_ids) if (s.has_context or not distill) else 0


def micro_batches(samples: Sequence[TrainSample], k: int) -> list[list[TrainSample]]:
    """``k`` contiguous micro-batches (some may be empty when there are fewer samples)."""
    return [[samples[i] for i in idx] for idx in np.array_split(np.arange(len(samples)), k)]


def _autocast(ctx: UpdateContext):
    if ctx.autocast_bf16:
        return torch.autocast(device_type=ctx.info.device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def actor_update(ctx: UpdateContext, samples: Sequence[TrainSample], cfg: TrainConfig, timers: Timers) -> dict:
    """Run the update on this rank's ``samples``; returns global metrics (same on every rank)."""
    distill = cfg.spec.uses_teacher
    info = ctx.info
    local_tokens = sum(trained_tokens(s, distill) for s in samples)
    (n_tokens,) = all_reduce_sum([local_tokens], info)
    metrics: dict[str, float] = {"actor/num_tokens": n_tokens, "actor/lr": ctx.scheduler.get_last_lr()[0]}
    if n_tokens == 0:
        # Nothing to learn from anywhere (e.g. no group with two successes for MOPD): no step.
        with warnings.catch_warnings():  # "scheduler.step() before optimizer.step()": intended here
            warnings.simplefilter("ignore", UserWarning)
            ctx.scheduler.step()
        metrics.update({"actor/skipped_update": 1.0, "actor/loss": float("nan"), "actor/grad_norm": float("nan")})
        return metrics
    scale = info.world_size / n_tokens
    sums = np.zeros(3)  # loss, divergence, kl
    ctx.policy.train()
    micro_loss = _distill_loss if distill else _policy_gradient_loss
    for mb in micro_batches(samples, cfg.gradient_accumulation_steps):
        if not mb:
            if ctx.sharded:
                raise ValueError("a rank has fewer samples than gradient_accumulation_steps")
            continue
        batch = pad_batch([s.prompt_ids for s in mb], [s.response_ids for s in mb], ctx.pad_id, device=info.device)
        with _autocast(ctx):
            logits = response_logits(ctx.policy, batch)
        loss = micro_loss(ctx, cfg, mb, batch, logits, sums, timers)
        (loss * scale).backward()
    grad_norm = _optimizer_step(ctx, cfg, timers)
    loss_sum, div_sum, kl_sum = all_reduce_sum(sums.tolist(), info)
    metrics.update({"actor/loss": loss_sum / n_tokens, "actor/grad_norm": grad_norm, "actor/skipped_update": 0.0})
    if distill:
        metrics["actor/distill_divergence"] = div_sum / n_tokens
    else:
        metrics["actor/pg_loss"] = loss_sum / n_tokens
        if cfg.beta > 0:
            metrics["actor/kl_loss"] = kl_sum / n_tokens
    return metrics


def _distill_loss(ctx: UpdateContext, cfg: TrainConfig, mb: list[TrainSample], batch, logits: torch.Tensor,
                  sums: np.ndarray, timers: Timers) -> torch.Tensor:
    """Summed distillation loss of one micro-batch's rows that have a teacher context."""
    dev = ctx.info.device
    rows = [i for i, s in enumerate(mb) if s.has_context]
    # A sharded teacher must run its collectives on every rank: a dummy row if needed.
    t_rows = rows or ([0] if ctx.sharded else [])
    if t_rows:
        with timers("teacher"), torch.no_grad(), _autocast(ctx):
            tb = pad_batch([mb[i].teacher_prompt_ids or mb[i].prompt_ids for i in t_rows],
                           [mb[i].response_ids for i in t_rows], ctx.pad_id, width=batch.width, device=dev)
            t_logits = response_logits(ctx.teacher.model, tb)
            if ctx.sharded and hasattr(ctx.teacher.model, "reshard"):
                ctx.teacher.model.reshard()
    if not rows:
        return logits.sum() * 0.0  # keeps the backward (and FSDP's reduce-scatter) in step
    sel = torch.tensor(rows, device=dev)
    tok_loss, div = distill_token_loss(
        logits[sel], t_logits[: len(rows)], batch.response_ids[sel],
        beta=cfg.beta, variant=cfg.distill_variant, topk=cfg.distill_topk,
    )
    mask = batch.response_mask[sel]
    loss = (tok_loss * mask).sum()
    sums[0] += float(loss.detach())
    sums[1] += float((div * mask).sum())
    return loss


def _policy_gradient_loss(ctx: UpdateContext, cfg: TrainConfig, mb: list[TrainSample], batch,
                          logits: torch.Tensor, sums: np.ndarray, timers: Timers) -> torch.Tensor:
    """Summed GRPO loss of one micro-batch (plus the k3 KL to the reference when beta > 0)."""
    logp = token_logprobs(logits, batch.response_ids)
    ref_logp = None
    if cfg.beta > 0.0:
        with torch.no_grad(), _autocast(ctx):
            ref_logp = token_logprobs(response_logits(ctx.reference, batch), batch.response_ids)
    adv = torch.tensor([s.advantage for s in mb], dtype=torch.float32, device=ctx.info.device)
    # One update per batch of rollouts: the sampling policy is the current one, so the
    # ratio is 1 in value and the clip never binds; it still gives the PPO gradient.
    tok_loss, k3 = grpo_token_loss(logp, logp.detach(), adv, epsilon=cfg.epsilon, ref_logp=ref_logp, beta=cfg.beta)
    mask = batch.response_mask
    loss = (tok_loss * mask).sum()
    sums[0] += float(loss.detach())
    if k3 is not None:
        sums[2] += float((k3.detach() * mask).sum())
    return loss


def _optimizer_step(ctx: UpdateContext, cfg: TrainConfig, timers: Timers) -> float:
    """Clip, step, schedule, zero; then the EMA teacher follows. Returns the global grad norm."""
    with timers("optimizer"):
        grad_norm = torch.nn.utils.clip_grad_norm_(ctx.policy.parameters(), cfg.max_grad_norm)
        if hasattr(grad_norm, "full_tensor"):
            grad_norm = grad_norm.full_tensor()
        ctx.optimizer.step()
        ctx.scheduler.step()
        ctx.optimizer.zero_grad(set_to_none=True)
    if ctx.teacher is not None:
        ctx.teacher.update(ctx.policy)
    ctx.policy.eval()
    return float(grad_norm)
