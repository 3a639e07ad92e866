"""The trainer's loss functions against torch's own KL and hand computations."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from training.losses import (
    batch_reward_std,
    distill_token_loss,
    generalized_jsd,
    grpo_advantages,
    grpo_token_loss,
    topk_with_tail,
)

V = 50


def logps(seed: int, shape=(3, 4, V), scale: float = 2.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.log_softmax(torch.randn(*shape, generator=g, dtype=torch.float64) * scale, dim=-1)


def test_beta_zero_is_forward_kl_teacher_to_student():
    s, t = logps(0), logps(1)
    # kl_div(input=log q, target=log p) = KL(P || Q): here KL(T || S)
    want = F.kl_div(s, t, log_target=True, reduction="none").sum(-1)
    torch.testing.assert_close(generalized_jsd(s, t, 0.0), want)


def test_beta_one_is_reverse_kl_student_to_teacher():
    s, t = logps(0), logps(1)
    want = F.kl_div(t, s, log_target=True, reduction="none").sum(-1)
    torch.testing.assert_close(generalized_jsd(s, t, 1.0), want)


def test_interior_divergence_tends_to_the_end_points_when_rescaled():
    s, t = logps(2), logps(3)
    fwd = F.kl_div(s, t, log_target=True, reduction="none").sum(-1)
    rev = F.kl_div(t, s, log_target=True, reduction="none").sum(-1)
    a = 1e-7
    torch.testing.assert_close(generalized_jsd(s, t, a) / a, fwd, rtol=1e-3, atol=1e-6)
    torch.testing.assert_close(generalized_jsd(s, t, 1 - a) / a, rev, rtol=1e-3, atol=1e-6)


def test_jsd_is_symmetric_bounded_and_zero_on_equal_inputs():
    s, t = logps(4), logps(5)
    d = generalized_jsd(s, t, 0.5)
    torch.testing.assert_close(d, generalized_jsd(t, s, 0.5))
    assert (d >= 0).all() and (d <= math.log(2) + 1e-12).all()
    assert generalized_jsd(s, s, 0.5).abs().max() < 1e-12
    # the explicit mixture definition
    m = torch.log(0.5 * s.exp() + 0.5 * t.exp())
    want = 0.5 * (t.exp() * (t - m)).sum(-1) + 0.5 * (s.exp() * (s - m)).sum(-1)
    torch.testing.assert_close(d, want)


def test_beta_outside_unit_interval_is_rejected():
    s = logps(0)
    with pytest.raises(ValueError):
        generalized_jsd(s, s, 1.5)


@pytest.mark.parametrize("k", [1, 5, 20, V - 1])
def test_tail_bucket_makes_each_distribution_sum_to_one(k):
    s, t = logps(6).float(), logps(7).float()
    s_k, t_k, ids = topk_with_tail(s, t, k)
    assert s_k.shape[-1] == k + 1 and ids.shape[-1] == k
    torch.testing.assert_close(s_k.exp().sum(-1), torch.ones(s.shape[:-1]), atol=1e-6, rtol=0)
    torch.testing.assert_close(t_k.exp().sum(-1), torch.ones(s.shape[:-1]), atol=1e-6, rtol=0)
    # the ids are the student's top-k, and the teacher's entries are gathered at them
    torch.testing.assert_close(s_k[..., :k], s.topk(k, dim=-1).values)
    torch.testing.assert_close(t_k[..., :k], t.gather(-1, ids))


@pytest.mark.parametrize("beta", [0.0, 0.3, 0.5, 1.0])
def test_topk_with_k_equal_vocabulary_equals_full_logits(beta):
    g = torch.Generator().manual_seed(8)
    s_logits = (torch.randn(2, 3, V, generator=g) * 3).requires_grad_(True)
    t_logits = torch.randn(2, 3, V, generator=g) * 3
    ids = torch.randint(0, V, (2, 3), generator=g)
    full, _ = distill_token_loss(s_logits, t_logits, ids, beta=beta, variant="full")
    (g_full,) = torch.autograd.grad(full.sum(), s_logits)
    top, _ = distill_token_loss(s_logits, t_logits, ids, beta=beta, variant="topk", topk=V)
    (g_top,) = torch.autograd.grad(top.sum(), s_logits)
    torch.testing.assert_close(top, full, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(g_top, g_full, atol=1e-6, rtol=1e-5)
    # and a k beyond the vocabulary is the same thing
    over, _ = distill_token_loss(s_logits, t_logits, ids, beta=beta, variant="topk", topk=10 * V)
    torch.testing.assert_close(over, full, atol=1e-6, rtol=1e-5)


def test_small_topk_differs_from_full_but_is_a_divergence():
    g = torch.Generator().manual_seed(9)
    s_logits, t_logits = torch.randn(4, V, generator=g), torch.randn(4, V, generator=g)
    ids = torch.zeros(4, dtype=torch.long)
    top, _ = distill_token_loss(s_logits, t_logits, ids, variant="topk", topk=3)
    full, _ = distill_token_loss(s_logits, t_logits, ids, variant="full")
    assert (top >= -1e-7).all() and not torch.allclose(top, full)
    same, _ = distill_token_loss(s_logits, s_logits.clone(), ids, variant="topk", topk=3)
    assert same.abs().max() < 1e-6


def test_teacher_logits_get_no_gradient():
    g = torch.Generator().manual_seed(10)
    s_logits = torch.randn(2, V, generator=g, requires_grad=True)
    t_logits = torch.randn(2, V, generator=g, requires_grad=True)
    loss, _ = distill_token_loss(s_logits, t_logits, torch.zeros(2, dtype=torch.long))
    loss.sum().backward()
    assert s_logits.grad is not None and s_logits.grad.abs().sum() > 0
    assert t_logits.grad is None


def test_sampled_variant_is_an_unbiased_reverse_kl_gradient():
    # E_{y ~ S}[stop_grad(d(y)) grad log S(y)] = grad KL(S || T): enumerate y exactly.
    g = torch.Generator().manual_seed(11)
    s_logits = torch.randn(1, V, generator=g, dtype=torch.float64, requires_grad=True)
    t_logits = torch.randn(1, V, generator=g, dtype=torch.float64)
    probs = torch.softmax(s_logits, -1).detach()[0]
    expected_loss = 0.0
    for y in range(V):
        loss, d = distill_token_loss(s_logits, t_logits, torch.tensor([y]), beta=1.0, variant="sampled")
        expected_loss = expected_loss + probs[y] * loss.sum()
        want_d = torch.log_softmax(s_logits, -1)[0, y] - torch.log_softmax(t_logits, -1)[0, y]
        torch.testing.assert_close(d[0], want_d.detach().float())
    (g_est,) = torch.autograd.grad(expected_loss, s_logits)
    rev = generalized_jsd(torch.log_softmax(s_logits, -1), torch.log_softmax(t_logits, -1), 1.0).sum()
    (g_true,) = torch.autograd.grad(rev, s_logits)
    torch.testing.assert_close(g_est, g_true, rtol=1e-4, atol=1e-6)


def test_grpo_advantages_by_hand():
    r = torch.tensor([[1.0, 0.0, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 3.0]])
    adv = grpo_advantages(r, eps=0.0)
    # group 1: mean 0.5, sample std sqrt(4 * 0.25 / 3) = 0.57735
    s = math.sqrt(1 / 3)
    torch.testing.assert_close(adv[0], torch.tensor([0.5, -0.5, -0.5, 0.5]) / s)
    assert torch.isnan(adv[1]).all()  # eps 0 and a constant group: 0/0, which is why eps exists
    adv = grpo_advantages(r)
    torch.testing.assert_close(adv[1], torch.zeros(4))
    # group 3: mean 0.75, std sqrt((3 * 0.5625 + 5.0625) / 3) = 1.5
    torch.testing.assert_close(adv[2], torch.tensor([-0.5, -0.5, -0.5, 1.5]), atol=1e-5, rtol=0)
    torch.testing.assert_close(grpo_advantages(r, scale="none")[0], torch.tensor([0.5, -0.5, -0.5, 0.5]))
    torch.testing.assert_close(grpo_advantages(torch.tensor([[1.0], [0.0]])), torch.zeros(2, 1))


def test_grpo_batch_scaling_uses_one_std_for_the_step():
    r = torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 3.0]])
    all_std = float(r.double().flatten().std())  # TRL's scale_rewards="batch": std of every reward of the step
    centred = r - r.mean(-1, keepdim=True)
    torch.testing.assert_close(grpo_advantages(r, scale="batch", eps=0.0), centred / all_std, rtol=1e-6, atol=1e-7)
    # the global std from per-rank sums (two "ranks" holding one group each) is the same number
    sums = [float(r.sum()), float((r * r).sum()), float(r.numel())]
    assert math.isclose(batch_reward_std(*sums), all_std, rel_tol=1e-9)
    torch.testing.assert_close(grpo_advantages(r[:1], scale="batch", batch_std=all_std, eps=0.0), centred[:1] / all_std)
    with pytest.raises(ValueError, match="group, batch or none"):
        grpo_advantages(r, scale=True)


def test_grpo_token_loss_clips_and_adds_kl():
    logp = torch.log(torch.tensor([[0.5, 0.5]]))
    adv = torch.tensor([2.0])
    # on-policy: ratio 1, loss -A per token, gradient -A d log p
    lp = logp.clone().requires_grad_(True)
    loss, k3 = grpo_token_loss(lp, lp.detach(), adv)
    torch.testing.assert_close(loss, torch.tensor([[-2.0, -2.0]]))
    assert k3 is None
    loss.sum().backward()
    torch.testing.assert_close(lp.grad, torch.tensor([[-2.0, -2.0]]))
    # ratio 1.5 > 1 + eps with A > 0: clipped to 1.2 A; with A < 0 the unclipped -1.5 A is kept
    old = logp - math.log(1.5)
    clipped, _ = grpo_token_loss(logp, old, adv, epsilon=0.2)
    torch.testing.assert_close(clipped, torch.full((1, 2), -2.4))
    neg, _ = grpo_token_loss(logp, old, -adv, epsilon=0.2)
    torch.testing.assert_close(neg, torch.full((1, 2), 3.0))
    # k3 KL is 0 at the reference and positive away from it
    same, k3 = grpo_token_loss(logp, logp, adv, ref_logp=logp, beta=0.1)
    torch.testing.assert_close(k3, torch.zeros(1, 2))
    _, k3 = grpo_token_loss(logp, logp, adv, ref_logp=logp - 0.5, beta=0.1)
    torch.testing.assert_close(k3, torch.full((1, 2), math.exp(-0.5) + 0.5 - 1))
    with pytest.raises(ValueError):
        grpo_token_loss(logp, logp, adv, beta=0.1)
