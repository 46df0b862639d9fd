"""The GRPO objective (grpo.py) against hand-computed values."""

import math

import pytest
import torch

import grpo
from grpo import aggregate, group_advantages, grpo_loss, kl_k3, policy_loss, signal_groups

# ----------------------------------------------------------------------------- advantages


def test_group_advantages_hand_values():
    # group 1: mean 1, population std sqrt(0.5); group 2: mean 0.5, std 0.5
    rewards = torch.tensor([2.0, 1.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0])
    adv = group_advantages(rewards, group_size=4, eps=0.0)
    s = 1 / math.sqrt(0.5)
    expected = torch.tensor([s, 0.0, 0.0, -s, 1.0, -1.0, 1.0, -1.0])
    torch.testing.assert_close(adv, expected)
    # eps sits in the denominator
    adv_eps = group_advantages(rewards, group_size=4, eps=0.5)
    torch.testing.assert_close(adv_eps[4:], torch.tensor([0.5, -0.5, 0.5, -0.5]))
    # each group's advantages sum to zero: the baseline is the group mean
    assert adv.view(2, 4).sum(dim=1).abs().max() < 1e-6


def test_zero_std_groups_give_exactly_zero():
    # 0.1 is not representable: mean(0.1, 0.1, 0.1) - 0.1 is round-off, not 0, without the guard
    rewards = torch.tensor([0.1, 0.1, 0.1, 1.0, 0.0, 0.5, 3.7, 3.7, 3.7], dtype=torch.float64)
    for scale in ("group", "batch", "none"):
        adv = group_advantages(rewards, group_size=3, scale=scale)
        assert torch.equal(adv[:3], torch.zeros(3, dtype=torch.float64)), scale
        assert torch.equal(adv[6:], torch.zeros(3, dtype=torch.float64)), scale
        assert adv[3] > 0 > adv[4], scale
    # all groups constant -> all zero, no nan from 0/0 even with eps = 0
    assert torch.equal(group_advantages(torch.ones(6), 3, eps=0.0), torch.zeros(6))


def test_batch_and_none_scaling():
    rewards = torch.tensor([1.0, 0.0, 3.0, 1.0])  # group means 0.5 and 2.0
    centered = torch.tensor([0.5, -0.5, 1.0, -1.0])
    torch.testing.assert_close(group_advantages(rewards, 2, scale="none"), centered)
    # batch: population std of [1, 0, 3, 1] = sqrt(1.1875)
    torch.testing.assert_close(
        group_advantages(rewards, 2, scale="batch", eps=0.0), centered / math.sqrt(1.1875)
    )
    # group: each group scaled to unit std, so both groups become +-1
    torch.testing.assert_close(
        group_advantages(rewards, 2, scale="group", eps=0.0), torch.tensor([1.0, -1.0, 1.0, -1.0])
    )


def test_signal_groups_marks_groups_with_unequal_rewards():
    rewards = torch.tensor([1.0, 1.0, 1.0, 0.0, 1.0, 0.0, 0.3, 0.3, 0.3])
    assert signal_groups(rewards, 3).tolist() == [False, True, False]
    # exactly the groups that group_advantages leaves non-zero
    assert (group_advantages(rewards, 3).view(3, 3) != 0).any(dim=1).tolist() == [False, True, False]


def test_group_advantages_rejects_bad_input():
    with pytest.raises(ValueError):
        group_advantages(torch.zeros(5), 2)
    with pytest.raises(ValueError):
        group_advantages(torch.zeros(4), 2, scale="max")


# ----------------------------------------------------------------------------- clipped surrogate


def _loss_at_ratio(ratio: float, adv: float, lo: float = 0.2, hi: float = 0.28):
    logp = torch.tensor([[math.log(ratio)]], dtype=torch.float64, requires_grad=True)
    old = torch.zeros(1, 1, dtype=torch.float64)
    loss, stats = policy_loss(
        logp, old, torch.tensor([adv], dtype=torch.float64), torch.ones(1, 1, dtype=torch.bool), lo, hi
    )
    loss.sum().backward()
    return loss.item(), logp.grad.item(), float(stats["clip_frac"])


def test_clip_positive_advantage():
    # inside the trust region: L = -rho A, dL/dlogp = -rho A
    value, grad, frac = _loss_at_ratio(1.1, 2.0)
    assert value == pytest.approx(-2.2) and grad == pytest.approx(-2.2) and frac == 0.0
    # above 1 + eps_high: L = -(1.28) A, constant -> no gradient, counted as clipped
    value, grad, frac = _loss_at_ratio(1.5, 2.0)
    assert value == pytest.approx(-2.56) and grad == 0.0 and frac == 1.0
    # below 1 - eps_low with A > 0: the min keeps the unclipped (smaller) term, gradient flows
    value, grad, frac = _loss_at_ratio(0.5, 2.0)
    assert value == pytest.approx(-1.0) and grad == pytest.approx(-1.0) and frac == 0.0


def test_clip_negative_advantage():
    # below 1 - eps_low with A < 0: L = -(0.8)(-1) = 0.8 constant, clipped
    value, grad, frac = _loss_at_ratio(0.5, -1.0)
    assert value == pytest.approx(0.8) and grad == 0.0 and frac == 1.0
    # above 1 + eps_high with A < 0: unclipped -rho A = 1.5 is larger, gradient keeps pushing down
    value, grad, frac = _loss_at_ratio(1.5, -1.0)
    assert value == pytest.approx(1.5) and grad == pytest.approx(1.5) and frac == 0.0
    # asymmetric bounds: 0.75 is inside [1 - 0.3, 1 + 0.1] for A < 0 ...
    assert _loss_at_ratio(0.75, -1.0, lo=0.3, hi=0.1)[2] == 0.0
    # ... while 1.15 is outside it for A > 0
    assert _loss_at_ratio(1.15, 1.0, lo=0.3, hi=0.1)[2] == 1.0


def test_policy_loss_masks_padding_and_splits_clip_stats():
    logp = torch.log(torch.tensor([[1.5, 1.0, 9.0], [0.5, 1.0, 9.0]]))
    old = torch.zeros(2, 3)
    mask = torch.tensor([[True, True, False], [True, True, False]])
    loss, stats = policy_loss(logp, old, torch.tensor([1.0, -1.0]), mask, 0.2, 0.2)
    assert loss[:, 2].eq(0).all()  # padding contributes nothing, even with a wild ratio there
    # statistics stay on the device: no host sync
    assert all(isinstance(v, torch.Tensor) for v in stats.values())
    assert float(stats["clip_frac"]) == pytest.approx(0.5)  # tokens (0,0) and (1,0) out of 4
    assert float(stats["clip_frac_high"]) == pytest.approx(0.25)
    assert float(stats["clip_frac_low"]) == pytest.approx(0.25)


# ----------------------------------------------------------------------------- sequence-level ratio (GSPO)


def test_sequence_ratio_hand_values():
    # completion 0: log-ratios 0.1, -0.3 (mean -0.1, s = e^-0.1 = 0.904837); completion 1: 0.5 alone (s =
    # e^0.5)
    old = torch.zeros(2, 3, dtype=torch.float64)
    logp = torch.tensor([[0.1, -0.3, 7.0], [0.5, 7.0, 7.0]], dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[True, True, False], [True, False, False]])
    adv = torch.tensor([1.0, -1.0], dtype=torch.float64)
    per_token, stats = policy_loss(logp, old, adv, mask, 0.2, 0.28, level="sequence")
    s0 = math.exp(-0.1)
    # every token of completion 0 carries -s0 * A; completion 1 (A < 0, s = 1.6487 > 1.28) takes the unclipped
    # -s A
    torch.testing.assert_close(
        per_token, torch.tensor([[-s0, -s0, 0.0], [math.exp(0.5), 0.0, 0.0]], dtype=torch.float64)
    )
    assert float(stats["clip_frac"]) == 0.0
    aggregate(per_token, mask, "token-mean").backward()
    # d/dlogp_t of sum_t (-s0 A) / 3 tokens = -|o_0| s0 A (1/|o_0|) / 3 = -s0 / 3 on each of its tokens
    expected = torch.tensor([[-s0 / 3, -s0 / 3, 0.0], [math.exp(0.5) / 3, 0.0, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(logp.grad, expected)
    # GSPO's clip range, advantages flipped: s0 < 1 - 3e-4 with A < 0 and e^0.5 > 1 + 4e-4 with A > 0 are
    # both clipped, each completion as a whole (2 tokens low, 1 high)
    _, stats = policy_loss(logp, old, -adv, mask, *grpo.CLIP_DEFAULTS["sequence"], level="sequence")
    assert float(stats["clip_frac"]) == 1.0 and float(stats["clip_frac_low"]) == pytest.approx(2 / 3)
    assert float(stats["clip_frac_high"]) == pytest.approx(1 / 3)
    with pytest.raises(ValueError):
        policy_loss(logp, old, adv, mask, level="sentence")


def _loss_and_grad(logp, old, adv, mask, agg="token-mean", **kw):
    logp = logp.detach().clone().requires_grad_()
    loss, _ = grpo_loss(logp, old, adv, mask, agg=agg, max_len=logp.shape[1], **kw)
    loss.backward()
    return loss.detach(), logp.grad


def test_sequence_ratio_reduces_to_token_ratio():
    g = torch.Generator().manual_seed(4)
    adv = torch.tensor([1.5, -0.5, 0.7, -2.0], dtype=torch.float64)
    # one-token completions: s_i is that token's ratio
    logp, old = (
        torch.randn(4, 1, generator=g, dtype=torch.float64) * 0.3,
        torch.zeros(4, 1, dtype=torch.float64),
    )
    mask = torch.ones(4, 1, dtype=torch.bool)
    for agg in grpo.LOSS_AGGS:
        a = _loss_and_grad(logp, old, adv, mask, agg, ratio_level="token")
        b = _loss_and_grad(logp, old, adv, mask, agg, ratio_level="sequence")
        torch.testing.assert_close(a, b)
    # equal per-token log-ratios within each completion (some outside the clip range): same loss, same
    # gradient
    delta = torch.tensor([[0.1], [-0.4], [0.02], [0.5]], dtype=torch.float64)
    old = torch.randn(4, 5, generator=g, dtype=torch.float64) - 1
    mask = torch.tensor(
        [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0], [1, 1, 0, 0, 0]], dtype=torch.bool
    )
    for agg in grpo.LOSS_AGGS:
        a = _loss_and_grad(old + delta, old, adv, mask, agg, ratio_level="token")
        b = _loss_and_grad(old + delta, old, adv, mask, agg, ratio_level="sequence")
        torch.testing.assert_close(a, b)
    # on-policy (old = current): both ratios are exactly 1, so both give REINFORCE's gradient
    logp = torch.randn(4, 5, generator=g, dtype=torch.float64)
    a = _loss_and_grad(logp, logp, adv, mask, ratio_level="token")
    b = _loss_and_grad(logp, logp, adv, mask, ratio_level="sequence")
    torch.testing.assert_close(a, b)


def test_sequence_ratio_has_gspo_token_gradient():
    """GSPO-token's s_it = sg[s_i] pi(o_t) / sg[pi(o_t)]: the same value as s_i and, with one advantage per
    completion, the same gradient as TRL's sequence level (ours) under every aggregation."""
    g = torch.Generator().manual_seed(5)
    old = torch.randn(4, 6, generator=g, dtype=torch.float64) - 1
    logp = old + 0.01 * torch.randn(4, 6, generator=g, dtype=torch.float64)
    adv = torch.tensor([1.0, -1.0, 0.3, -0.2], dtype=torch.float64)
    mask = torch.rand(4, 6, generator=g) > 0.3
    mask[:, 0] = True
    lo, hi = 3e-4, 4e-4  # some completions clipped, some not
    for agg in grpo.LOSS_AGGS:
        ours = _loss_and_grad(
            logp, old, adv, mask, agg, clip_eps_low=lo, clip_eps_high=hi, ratio_level="sequence"
        )
        x = logp.detach().clone().requires_grad_()
        n = mask.sum(1, keepdim=True)
        s = torch.exp(((x - old) * mask).sum(1, keepdim=True) / n)
        s_t = s.detach() * torch.exp(x - x.detach())  # [N, T]
        a = adv[:, None]
        per_token = torch.where(mask, -torch.minimum(s_t * a, torch.clamp(s_t, 1 - lo, 1 + hi) * a), 0.0)
        loss = aggregate(per_token, mask, agg, max_len=6)
        loss.backward()
        torch.testing.assert_close(ours, (loss.detach(), x.grad))
        assert ours[1].abs().sum() > 0


# ----------------------------------------------------------------------------- KL


def test_kl_k3_hand_values_and_nonnegative():
    logp = torch.tensor([[-1.0, -2.0, -0.5]])
    ref = torch.tensor([[-1.0, -1.0, -1.5]])
    # d = ref - logp = [0, 1, -1]; exp(d) - d - 1
    expected = torch.tensor([[0.0, math.e - 2.0, math.exp(-1.0)]])
    torch.testing.assert_close(kl_k3(logp, ref), expected)
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(64, 32, generator=g) * 3, torch.randn(64, 32, generator=g) * 3
    assert (kl_k3(a, b) >= 0).all()
    assert torch.equal(kl_k3(a, a), torch.zeros_like(a))


# ----------------------------------------------------------------------------- one iteration = REINFORCE


def test_one_iteration_is_reinforce_with_baseline():
    g = torch.Generator().manual_seed(0)
    rewards = torch.tensor([1.0, 0.0, 0.5, 0.5, 2.0, 1.0])
    adv = group_advantages(rewards, group_size=3)
    logp = (-torch.rand(6, 5, generator=g) * 3).requires_grad_()
    mask = torch.tensor(
        [
            [1, 1, 1, 1, 1],
            [1, 1, 0, 0, 0],
            [1, 1, 1, 0, 0],
            [1, 0, 0, 0, 0],
            [1, 1, 1, 1, 0],
            [1, 1, 1, 1, 1],
        ],
        dtype=torch.bool,
    )
    old = logp.detach()  # --num-iterations 1: the sampling policy is the current one

    assert torch.equal(torch.exp(logp - old), torch.ones(6, 5))  # ratio exactly 1
    per_token, stats = policy_loss(logp, old, adv, mask, 0.2, 0.28)
    assert float(stats["clip_frac"]) == 0.0
    loss = aggregate(per_token, mask, "token-mean")
    loss.backward()

    reinforce = -adv[:, None] * mask / mask.sum()  # d/dlogp of -(1/tokens) sum A_i logp_it
    torch.testing.assert_close(logp.grad, reinforce)


# ----------------------------------------------------------------------------- aggregation


def test_aggregate_hand_values():
    per_token = torch.tensor([[1.0, 2.0, 3.0, 9.0], [4.0, 9.0, 9.0, 9.0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]], dtype=torch.bool)
    assert aggregate(per_token, mask, "token-mean").item() == pytest.approx(10 / 4)
    assert aggregate(per_token, mask, "seq-mean-token-mean").item() == pytest.approx((2 + 4) / 2)
    assert aggregate(per_token, mask, "dr-grpo", max_len=8).item() == pytest.approx(10 / 16)
    with pytest.raises(ValueError):
        aggregate(per_token, mask, "dr-grpo")
    with pytest.raises(ValueError):
        aggregate(per_token, mask, "sum")


def test_micro_batches_with_global_normaliser_equal_one_batch():
    """Gradient accumulation: each micro-batch divides by the whole batch's count."""
    g = torch.Generator().manual_seed(1)
    per_token_w = torch.randn(4, 6, generator=g)
    mask = torch.rand(4, 6, generator=g) > 0.3
    for mode in ("token-mean", "seq-mean-token-mean", "dr-grpo"):
        full = aggregate(per_token_w, mask, mode, max_len=6)
        parts = sum(
            aggregate(
                per_token_w[i : i + 2], mask[i : i + 2], mode, total_tokens=mask.sum(), num_seqs=4, max_len=6
            )
            for i in (0, 2)
        )
        torch.testing.assert_close(parts, full)


def test_token_mean_vs_seq_mean_length_weighting():
    """token-mean weighs every token alike; seq-mean gives a short completion's tokens more weight.

    Two completions with the same advantage, one of 1 token and one of 3. token-mean: each of the
    4 tokens gets gradient -A/4. seq-mean-token-mean: the short one's token gets -A/(2*1), each of
    the long one's tokens -A/(2*3) -- so with A < 0 a long wrong answer is penalised less per token.
    """
    mask = torch.tensor([[1, 0, 0], [1, 1, 1]], dtype=torch.bool)
    for a in (1.0, -1.0):
        adv = torch.tensor([a, a])
        grads = {}
        for mode in ("token-mean", "seq-mean-token-mean", "dr-grpo"):
            logp = torch.full((2, 3), -1.0, requires_grad=True)
            per_token, _ = policy_loss(logp, logp.detach(), adv, mask)
            aggregate(per_token, mask, mode, max_len=3).backward()
            grads[mode] = logp.grad
        short, long_ = grads["token-mean"][0, 0], grads["token-mean"][1, 0]
        assert short.item() == pytest.approx(-a / 4) and long_.item() == pytest.approx(-a / 4)
        short, long_ = grads["seq-mean-token-mean"][0, 0], grads["seq-mean-token-mean"][1, 0]
        assert short.item() == pytest.approx(-a / 2) and long_.item() == pytest.approx(-a / 6)
        assert abs(short) > abs(long_)
        # dr-grpo: constant normaliser N * max_len = 6, the same weight for every token
        assert grads["dr-grpo"][0, 0].item() == pytest.approx(-a / 6)
        assert grads["dr-grpo"][1, 2].item() == pytest.approx(-a / 6)
    # per completion, token-mean gives the long one 3x the total weight of the short one
    assert grads["token-mean"][1].sum() == pytest.approx(3 * grads["token-mean"][0].sum())
    assert grads["seq-mean-token-mean"][1].sum() == pytest.approx(grads["seq-mean-token-mean"][0].sum())


def test_grpo_loss_is_the_documented_combination():
    """grpo_loss = aggregate(policy_loss + beta * kl_k3), with the global normalisers, as the trainer calls
    it."""
    g = torch.Generator().manual_seed(3)
    logp = (torch.randn(4, 5, generator=g) - 1).requires_grad_()
    old, ref = (
        logp.detach() + 0.1 * torch.randn(4, 5, generator=g),
        logp.detach() + 0.2 * torch.randn(4, 5, generator=g),
    )
    adv, mask = torch.tensor([1.0, -0.5, 0.0, 2.0]), torch.rand(4, 5, generator=g) > 0.2
    for agg in grpo.LOSS_AGGS:
        loss, stats = grpo_loss(
            logp, old, adv, mask, ref, beta=0.04, agg=agg, total_tokens=30.0, num_seqs=8, max_len=5
        )
        per_token, _ = policy_loss(logp, old, adv, mask)
        expected = aggregate(
            per_token + 0.04 * kl_k3(logp, ref), mask, agg, total_tokens=30.0, num_seqs=8, max_len=5
        )
        torch.testing.assert_close(loss, expected)
        assert float(stats["kl_sum"]) == pytest.approx(
            float((kl_k3(logp, ref) * mask).sum().detach()), rel=1e-6
        )
    no_ref, stats = grpo_loss(logp, old, adv, mask)
    torch.testing.assert_close(no_ref, aggregate(policy_loss(logp, old, adv, mask)[0], mask))
    assert "kl_sum" not in stats


def test_batch_scale_takes_the_global_std():
    r = torch.tensor([1.0, 0.0, 2.0, 2.0])
    local = group_advantages(r, 2, scale="batch")
    torch.testing.assert_close(local, (r - torch.tensor([0.5, 0.5, 2.0, 2.0])) / (r.std(correction=0) + 1e-4))
    torch.testing.assert_close(
        group_advantages(r, 2, scale="batch", batch_std=2.0), torch.tensor([0.5, -0.5, 0, 0]) / 2.0001
    )


def test_grpo_docstring_examples():
    import doctest

    failures, tried = doctest.testmod(grpo, verbose=False)
    assert tried >= 1 and failures == 0
