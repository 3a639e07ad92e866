"""Loss functions of the trainer, pure and per token (the caller masks and averages).

Distillation (docs/training.md). On a support of ids (the student's top-k plus one tail bucket, or the
whole vocabulary) with student log-probs ``S`` and teacher log-probs ``T``:

    M = log((1 - b) e^S + b e^T),   D_b = b KL(T || M) + (1 - b) KL(S || M).

``b`` is TRL GKD's ``beta`` (``GKDConfig.beta``, ``generalized_jsd_loss(beta=...)``). For 0 < b < 1 this is the generalized Jensen-Shannon divergence (b = 0.5: the JSD, at most
log 2). At the ends the formula degenerates to 0 (M equals S at b = 0 and T at b = 1), while
``D_b / b -> KL(T || S)`` as b -> 0 and ``D_b / (1 - b) -> KL(S || T)`` as b -> 1. Like TRL's
``generalized_jsd_loss``, the end points are therefore defined as those limits: ``b = 0`` is the
forward KL ``KL(T || S)`` (mode covering) and ``b = 1`` the reverse KL ``KL(S || T)`` (mode
seeking, the paper's choice for math). Note the scale jump: D_b near 0 is about b KL(T || S).

Every divergence here is ``sum_x p(x) (log p(x) - log q(x))`` computed with
``torch.nn.functional.kl_div(log q, log p, log_target=True)``; inputs must be finite, which is
why the tail bucket's mass is clamped at the smallest normal float32 (log about -87.3) instead of
reaching log 0 when the top-k already holds all the mass.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

_TINY = torch.finfo(torch.float32).tiny


def kl(p_logp: torch.Tensor, q_logp: torch.Tensor) -> torch.Tensor:
    """``KL(P || Q)`` over the last dimension, from log-probabilities (finite)."""
    return F.kl_div(q_logp, p_logp, log_target=True, reduction="none").sum(-1)


def generalized_jsd(student_logp: torch.Tensor, teacher_logp: torch.Tensor, beta: float) -> torch.Tensor:
    """Divergence ``D_beta`` between two distributions given as log-probs on the last dimension.

    Returns a tensor of the leading shape. ``beta = 0``: ``KL(T || S)``; ``beta = 1``:
    ``KL(S || T)``; otherwise the generalized JSD of the module docstring (TRL GKD's ``beta``).
    ``beta`` outside [0, 1] is a ``ValueError``.
    """
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must lie in [0, 1], got {beta}")
    if beta == 0.0:
        return kl(teacher_logp, student_logp)
    if beta == 1.0:
        return kl(student_logp, teacher_logp)
    mix = torch.logaddexp(student_logp + math.log(1.0 - beta), teacher_logp + math.log(beta))
    return beta * kl(teacher_logp, mix) + (1.0 - beta) * kl(student_logp, mix)


def topk_with_tail(
    student_logp: torch.Tensor, teacher_logp: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Restrict both distributions to the student's top-``k`` ids plus one tail bucket.

    Inputs are full log-softmax outputs ``[..., V]``. Returns ``(s, t, ids)``: ``s`` and ``t``
    are ``[..., k + 1]`` log-probs (the last entry is the tail ``log(1 - sum p_topk)``, clamped
    at the float32 minimum when the top-k holds everything), ``ids`` the chosen ``[..., k]``
    token ids. ``k >= V`` keeps the whole vocabulary. Both outputs sum to 1 in probability.
    Gradients flow into the student's top-k and tail; the ids themselves carry none.
    """
    k = min(int(k), student_logp.shape[-1])
    s_top, ids = student_logp.topk(k, dim=-1)
    t_top = teacher_logp.gather(-1, ids)

    def tail(top: torch.Tensor) -> torch.Tensor:
        mass = 1.0 - top.exp().sum(-1, keepdim=True)
        return mass.clamp_min(_TINY).log()

    return torch.cat([s_top, tail(s_top)], -1), torch.cat([t_top, tail(t_top)], -1), ids


def distill_token_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    response_ids: torch.Tensor,
    *,
    beta: float = 0.5,
    variant: str = "topk",
    topk: int = 100,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token distillation loss and the divergence it optimises, both ``[B, R]``.

    ``student_logits`` and ``teacher_logits`` are ``[B, R, V]`` logits predicting each response
    token (``response_ids`` ``[B, R]``); the teacher's should carry no gradient. Variants:

    * ``topk``: ``D_beta`` on the student's top-``topk`` plus the tail bucket (the default);
    * ``full``: ``D_beta`` on the whole vocabulary;
    * ``sampled``: only the sampled token's log-probs. The per-token reverse-KL estimate
      ``d = log S(y) - log T(y)`` is used as a REINFORCE cost, ``loss = stop_grad(d) log S(y)``,
      whose expectation under the student has the gradient of ``KL(S || T)`` per position
      (beta must be 1 for it). The second output is then ``d`` itself.

    Logits are upcast to float32. Returns ``(loss, divergence)``; ``divergence`` is detached.
    """
    s = torch.log_softmax(student_logits.float(), dim=-1)
    with torch.no_grad():
        t = torch.log_softmax(teacher_logits.float(), dim=-1)
    if variant == "sampled":
        s_y = s.gather(-1, response_ids[..., None])[..., 0]
        d = (s_y - t.gather(-1, response_ids[..., None])[..., 0]).detach()
        return d * s_y, d
    if variant == "full":
        loss = generalized_jsd(s, t, beta)
    elif variant == "topk":
        s_k, t_k, _ = topk_with_tail(s, t, topk)
        loss = generalized_jsd(s_k, t_k, beta)
    else:
        raise ValueError(f"unknown distillation variant {variant!r} (topk, full, sampled)")
    return loss, loss.detach()


# ---- GRPO --------------------------------------------------------------------------------------


def grpo_advantages(
    rewards: torch.Tensor, *, scale: str = "group", batch_std: float | None = None, eps: float = 1e-6
) -> torch.Tensor:
    """Group-normalised advantages of ``rewards`` ``[num_groups, n]`` (one row per prompt).

    ``A = r - mean(r_group)``, then, as TRL's ``scale_rewards``: ``group`` divides by the group's
    ``std + eps``, ``batch`` by the std of all rewards of the step (``batch_std``: the global
    value when the step is split over processes; default the std of ``rewards``), ``none`` leaves
    it (Dr. GRPO). Standard deviations are sample ones (``torch.std``, as verl and TRL; TRL's ``eps``
    is 1e-4, ours stays 1e-6 so that earlier runs reproduce). A group of one rollout has no baseline: its advantage is 0. A group with equal
    rewards gets 0 everywhere.
    """
    if scale not in ("group", "batch", "none"):
        raise ValueError(f"scale must be group, batch or none, got {scale!r}")
    r = rewards.float()
    if r.shape[-1] < 2:
        return torch.zeros_like(r)
    adv = r - r.mean(-1, keepdim=True)
    if scale == "group":
        adv = adv / (r.std(-1, keepdim=True) + eps)
    elif scale == "batch":
        std = float(r.std()) if batch_std is None else float(batch_std)
        adv = adv / (std + eps)
    return adv


def batch_reward_std(total: float, total_sq: float, count: float) -> float:
    """Sample standard deviation from the sums ``sum r``, ``sum r^2`` and ``n`` (summed over ranks)."""
    if count < 2:
        return 0.0
    var = (total_sq - total * total / count) / (count - 1)
    return math.sqrt(max(var, 0.0))


def grpo_token_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    *,
    epsilon: float = 0.2,
    ref_logp: torch.Tensor | None = None,
    beta: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Clipped policy-gradient loss per token ``[B, R]`` and the KL term (or None).

    ``logp``/``old_logp``/``ref_logp`` are the sampled tokens' log-probs under the current,
    sampling-time and reference policies; ``advantages`` is ``[B]`` (one per sequence) or
    ``[B, R]``. ``loss = -min(ratio A, clip(ratio, 1-eps, 1+eps) A) + beta k3`` with
    ``ratio = exp(logp - old_logp)`` and the k3 estimator ``exp(ref - logp) - (ref - logp) - 1``
    of ``KL(pi || ref)`` when ``beta > 0``.
    """
    adv = advantages[:, None] if advantages.dim() == 1 else advantages
    ratio = torch.exp(logp - old_logp)
    loss = -torch.minimum(ratio * adv, ratio.clamp(1.0 - epsilon, 1.0 + epsilon) * adv)
    k3 = None
    if beta > 0.0:
        if ref_logp is None:
            raise ValueError("beta > 0 needs the reference log-probs")
        delta = ref_logp - logp
        k3 = torch.exp(delta) - delta - 1.0
        loss = loss + beta * k3
    return loss, k3
