"""One step's training samples: rollouts, verdicts, teacher contexts and advantages.

Teacher prompts are built only through ``mopd_eval.contexts`` (chat placement, the paper's
templates), so the teacher reads in training exactly what it reads in the signal study. The
target is the student's own sampled token ids; when the sample ended on a stop token, that token
is appended so the policy also learns where to stop.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from mopd_eval.contexts import (
    PAPER_TEMPLATES,
    Condition,
    TemplateSet,
    build_context,
    render_teacher_prompt,
)
from mopd_eval.pipeline import SampledRecord
from mopd_eval.records import Rollout
from training.losses import grpo_advantages


@dataclass
class TrainSample:
    rollout: Rollout
    group: int  # index of its prompt among this rank's prompts of the step
    prompt_ids: list[int]
    response_ids: list[int]  # trained-on ids: the sampled ids, plus the stop token if it stopped
    teacher_prompt_ids: list[int] | None = None
    has_context: bool = False  # the teacher context is effective (every slot filled)
    advantage: float = 0.0


def stop_id_for(tokenizer, stop_ids: Sequence[int]) -> int | None:
    """The id appended to a stopped response: the tokenizer's eos if it stops generation."""
    eos = tokenizer.eos_token_id
    if isinstance(eos, int) and eos in stop_ids:
        return eos
    return stop_ids[0] if stop_ids else None


def make_samples(
    records: Sequence[SampledRecord],
    *,
    task_name: str,
    stop_id: int | None,
    step: int,
) -> list[TrainSample]:
    """``TrainSample``s of the pipeline's records (problem order, then sample order).

    ``group`` is the position of the record's problem among this rank's prompts, not its id: a
    step may hold the same problem twice (the epoch stream wraps), and each is its own group.
    """
    out: list[TrainSample] = []
    for r in records:
        ids = list(r.sample.token_ids)
        if r.sample.finish_reason == "stop" and stop_id is not None:
            ids.append(stop_id)
        out.append(TrainSample(r.to_rollout(task_name, step=step), r.position, list(r.prompt_ids), ids))
    return out


def attach_contexts(
    samples: Sequence[TrainSample],
    condition: Condition,
    tokenizer,
    *,
    templates: TemplateSet = PAPER_TEMPLATES,
    order: str = "group",
    seed: int = 0,
) -> None:
    """Build each sample's teacher prompt from its group (in place).

    ``has_context`` is the context's ``effective`` flag: a sample whose condition could not be
    filled (MOPD without two successful siblings, SDPO with neither a successful sibling nor
    feedback) is masked out of the distillation loss. ``base`` is always effective.
    """
    groups: dict[int, list[TrainSample]] = {}
    for s in samples:
        groups.setdefault(s.group, []).append(s)
    for members in groups.values():
        rollouts = [m.rollout for m in members]
        for i, m in enumerate(members):
            ctx = build_context(rollouts, i, condition, templates, order=order, seed=seed)
            text = render_teacher_prompt(m.rollout, ctx, tokenizer, "chat", templates)
            m.teacher_prompt_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            m.has_context = ctx.effective


def attach_advantages(samples: Sequence[TrainSample], *, scale: str = "group", batch_std: float | None = None) -> None:
    """GRPO: group-normalised advantages of the rewards (in place); groups must be equal-sized.

    ``scale`` and ``batch_std`` as in ``training.losses.grpo_advantages``.
    """
    groups: dict[int, list[TrainSample]] = {}
    for s in samples:
        groups.setdefault(s.group, []).append(s)
    sizes = {len(m) for m in groups.values()}
    if len(sizes) > 1:
        raise ValueError(f"groups of unequal size {sorted(sizes)}")
    members = list(groups.values())
    if not members:
        return
    rewards = torch.tensor([[s.rollout.reward for s in m] for m in members], dtype=torch.float64)
    adv = grpo_advantages(rewards, scale=scale, batch_std=batch_std)
    for row, m in zip(adv.tolist(), members, strict=True):
        for a, s in zip(row, m, strict=True):
            s.advantage = float(a)
