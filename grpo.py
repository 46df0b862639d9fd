"""The GRPO objective as small pure tensor functions, and `grpo_loss`, which combines them as the trainer
does.

Group Relative Policy Optimisation (DeepSeekMath, 2024) needs no value network: for each prompt q sample G
completions o_1..o_G from the policy that is being trained, score each, and use its reward relative to the
rest of its group as the advantage of every one of its tokens.

    A_i   = (r_i - mean(r_1..r_G)) / (std(r_1..r_G) + eps)          # one number per completion
    rho_t = exp(log pi_theta(o_t) - log pi_old(o_t))                 # per token (--ratio-level token)
    s_i   = exp(mean_{t in o_i} (log pi_theta(o_t) - log pi_old(o_t)))   # per completion (sequence, GSPO)
    L_t   = -min(rho_t A_i, clip(rho_t, 1 - eps_low, 1 + eps_high) A_i) + beta KL_t   # rho_t := s_i for GSPO
    KL_t  = exp(ref_t - logp_t) - (ref_t - logp_t) - 1               # k3, reference = frozen start
    loss  = sum_t L_t / (completion tokens in the global batch)

Worked example (G = 4, one prompt, format + accuracy rewards):

    rewards     r = [2.0, 1.0, 1.0, 0.0]      mean 1.0, std 0.7071 (population std)
    advantages  A = [+1.414, 0.0, 0.0, -1.414]
    The first completion's tokens are pushed up, the last one's down, the middle two are left alone.
    A group whose rewards are all equal ([1, 1, 1, 1]) has A = 0 everywhere: no signal, only KL.

With one optimiser step per rollout (--num-iterations 1) the old policy *is* the current one (old
log-probs = detached current log-probs), so rho_t = 1 exactly, the clip never binds, and the gradient is
REINFORCE with the group mean as baseline: -A_i grad log pi(o_t) / tokens. With more iterations each
rollout is reused for several optimiser steps and the clip keeps the policy near the one that sampled it.

Shapes: N = B*G completions (row b*G+g is sample g of prompt b), T = padded completion length, mask [N, T]
bool marks the real completion tokens. Everything returns tensors: no host synchronisation in here.

Where this differs from TRL's GRPOTrainer (same formulas otherwise, k3 KL and clip included):
- std is the population std (divide by G), so our advantages are sqrt(G / (G - 1)) x TRL's (Bessel's std);
  defined for G = 1, and the same for every G up to that constant factor.
- a group whose rewards are all equal gets advantages of exactly 0; TRL's (r - mean) / (0 + eps) leaves
  round-off / 1e-4, which can be ~1e-3 instead of 0.
- "token-mean" divides by the completion tokens of the *global* batch (all micro-batches, all ranks): TRL's
  loss_type "dapo", not "bnpo" (which divides by each local batch's own count, so gradient accumulation and
  rank count change the step).
- the sequence-level ratio is TRL's importance_sampling_level="sequence" (the masked mean of the log-ratio,
  differentiated through every token, the same s_i on each of the completion's tokens); see `policy_loss`.

GSPO (Zheng et al., 2025) moves the ratio to the unit the reward is given in: s_i is the geometric mean of the
completion's token ratios, so one unlikely token cannot swing the update and a whole completion is clipped
or not. Its ratios stay very close to 1 (a mean over many tokens), hence its tiny clip range (3e-4 / 4e-4).
With --num-iterations 1 both levels are exactly 1 and give the same gradient, so sequence level needs >= 2.
"""

from __future__ import annotations

import torch

ADV_SCALES = ("group", "batch", "none")
LOSS_AGGS = ("token-mean", "seq-mean-token-mean", "dr-grpo")
RATIO_LEVELS = ("token", "sequence")
# (eps_low, eps_high) per ratio level: DAPO's clip-higher for tokens; GSPO's paper (section 5.1, TRL's docs)
# for sequences
CLIP_DEFAULTS = {"token": (0.2, 0.28), "sequence": (3e-4, 4e-4)}


def group_advantages(
    rewards: torch.Tensor,
    group_size: int,
    scale: str = "group",
    eps: float = 1e-4,
    batch_std: float | torch.Tensor | None = None,
) -> torch.Tensor:
    """Advantage of each completion relative to its group: rewards [B*G] -> advantages [B*G].

        scale="group":  A_i = (r_i - mean_group(r)) / (std_group(r) + eps)     (GRPO)
        scale="batch":  A_i = (r_i - mean_group(r)) / (std_batch(r) + eps)     (group baseline, one scale for
                        the whole batch, so easy groups are not blown up; batch_std: the global batch's std
                        when the batch spans several ranks, else these rewards' own)
        scale="none":   A_i =  r_i - mean_group(r)                             (Dr. GRPO)

    std is the population std (divide by G), defined for any G >= 1. A group whose rewards are all
    equal gets exactly 0 (not round-off / eps), so it contributes nothing but the KL term.

    >>> group_advantages(torch.tensor([2.0, 1.0, 1.0, 0.0]), 4)
    tensor([ 1.4140,  0.0000,  0.0000, -1.4140])
    """
    if scale not in ADV_SCALES:
        raise ValueError(f"unknown advantage scale {scale!r}; expected one of {ADV_SCALES}")
    if rewards.dim() != 1 or rewards.numel() % group_size:
        raise ValueError(f"rewards must be [B*G] with G={group_size}, got {tuple(rewards.shape)}")
    r = rewards.view(-1, group_size)  # [B, G]
    centered = r - r.mean(dim=1, keepdim=True)  # [B, G]
    if scale == "group":
        adv = centered / (r.std(dim=1, keepdim=True, correction=0) + eps)
    elif scale == "batch":
        adv = centered / ((rewards.std(correction=0) if batch_std is None else batch_std) + eps)
    else:
        adv = centered
    # mean([0.1, 0.1, 0.1]) != 0.1 in floating point, so test equality rather than trust r - mean
    constant = (r == r[:, :1]).all(dim=1, keepdim=True)  # [B, 1]
    return torch.where(constant, torch.zeros_like(adv), adv).view(-1)


def signal_groups(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """rewards [B*G] -> keep [B] bool: True where the group's rewards are not all equal.

    A group with one reward value for every sample has zero advantage everywhere, so it teaches
    nothing (DAPO's dynamic sampling drops and replaces such groups).
    """
    r = rewards.view(-1, group_size)
    return ~(r == r[:, :1]).all(dim=1)


def policy_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_eps_low: float = 0.2,
    clip_eps_high: float = 0.28,
    level: str = "token",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO-clip surrogate per token: logp, old_logp [N, T], advantages [N], mask [N, T] -> [N, T].

        level="token":     rho_t = exp(logp_t - old_logp_t)
        level="sequence":  rho_t = s_i = exp(sum_t m_t (logp_t - old_logp_t) / sum_t m_t)   for every t of o_i
        L_t   = -min(rho_t A, clip(rho_t, 1 - eps_low, 1 + eps_high) A)

    For A > 0 the objective stops growing once rho_t > 1 + eps_high (don't push a good token up further
    than the trust region); for A < 0 once rho_t < 1 - eps_low. A larger eps_high than eps_low
    ("clip-higher", DAPO) leaves more room to raise unlikely tokens, which keeps entropy up. Masked
    positions are 0. Stats (0-d tensors): clip_frac, the fraction of real tokens whose clip is active
    (gradient 0), split into clip_frac_low (A < 0) and clip_frac_high (A > 0); at sequence level a clipped
    completion counts all its tokens.

    Sequence level is TRL's importance_sampling_level="sequence": s_i keeps its gradient through every
    token's logp, dL/dlogp_t = -A s_i / |o_i| per completion before aggregation. GSPO-token's
    s_it = sg[s_i] pi(o_t) / sg[pi(o_t)] has the same value and, since A is one number per completion, the
    same gradient under every aggregation (tests/test_grpo_math.py checks it); its distinction only
    matters for per-token advantages, which GRPO does not have. One-token completions, or completions whose
    token ratios are all equal, get the token-level loss and gradient exactly.
    """
    if level not in RATIO_LEVELS:
        raise ValueError(f"unknown ratio level {level!r}; expected one of {RATIO_LEVELS}")
    adv = advantages.unsqueeze(1)  # [N, 1], broadcast over the tokens of each completion
    log_ratio = torch.where(mask, logp - old_logp, torch.zeros_like(logp))  # [N, T]
    if level == "sequence":  # the completion's mean log-ratio, the same on each of its tokens
        n_i = mask.sum(dim=1, keepdim=True).clamp(min=1)  # [N, 1]; an empty completion gets s_i = 1
        log_ratio = (log_ratio.sum(dim=1, keepdim=True) / n_i).expand_as(logp)
    ratio = torch.exp(log_ratio)  # [N, T]
    unclipped = ratio * adv
    clipped = torch.clamp(ratio, 1.0 - clip_eps_low, 1.0 + clip_eps_high) * adv
    per_token = torch.where(mask, -torch.minimum(unclipped, clipped), torch.zeros_like(unclipped))
    with torch.no_grad():
        n = mask.sum().clamp(min=1)
        active = (clipped < unclipped) & mask  # the min picked the clipped branch: no gradient
        stats = {
            "clip_frac": active.sum() / n,
            "clip_frac_low": (active & (adv < 0)).sum() / n,
            "clip_frac_high": (active & (adv > 0)).sum() / n,
        }
    return per_token, stats


def kl_k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-token KL(pi_theta || pi_ref) estimate on the sampled tokens, [N, T] -> [N, T].

        KL_t = exp(ref_t - logp_t) - (ref_t - logp_t) - 1        (Schulman's k3)

    Unbiased for samples from pi_theta, and >= 0 for every token (e^x >= 1 + x), unlike the plain
    log-ratio (k1), so the penalty never rewards drifting away on a lucky token.
    """
    d = ref_logp - logp
    return torch.exp(d) - d - 1.0


def aggregate(
    per_token: torch.Tensor,
    mask: torch.Tensor,
    mode: str = "token-mean",
    total_tokens: float | torch.Tensor | None = None,
    num_seqs: int | None = None,
    max_len: int | None = None,
) -> torch.Tensor:
    """Reduce a per-token loss [N, T] to the scalar that is backpropagated.

        "token-mean":          sum_{i,t} L_it / total_tokens
            every token of the global batch weighs the same, so a long completion weighs more than a
            short one in proportion to its length (DAPO, and the default).
        "seq-mean-token-mean": (1 / num_seqs) sum_i (1 / |o_i|) sum_t L_it      (original GRPO)
            every completion weighs the same, so each token of a long completion weighs less: a long
            wrong answer is penalised less per token than a short one (the length bias Dr. GRPO
            pointed out).
        "dr-grpo":             sum_{i,t} L_it / (num_seqs * max_len)
            a constant normaliser (max_len = --max-new-tokens) that does not depend on the lengths
            sampled, so neither long nor short completions are favoured.

    The normalisers are arguments on purpose: with gradient accumulation (and across ranks) each
    micro-batch must divide by the count of the *whole* batch, not its own, so that the summed
    gradients equal those of one big batch. Defaults (the local counts) are right for one
    micro-batch on one process.
    """
    maskf = mask.to(per_token.dtype)
    # padding never leaks in, not even a NaN
    summed = torch.where(mask, per_token, torch.zeros_like(per_token))
    if num_seqs is None:
        num_seqs = per_token.shape[0]
    if mode == "token-mean":
        return summed.sum() / (maskf.sum() if total_tokens is None else total_tokens)
    if mode == "seq-mean-token-mean":
        lengths = maskf.sum(dim=1).clamp(min=1.0)  # [N]; an empty completion contributes 0
        return (summed.sum(dim=1) / lengths).sum() / num_seqs
    if mode == "dr-grpo":
        if max_len is None:
            raise ValueError("dr-grpo aggregation needs max_len (the trainer passes --max-new-tokens)")
        return summed.sum() / (num_seqs * max_len)
    raise ValueError(f"unknown loss aggregation {mode!r}; expected one of {LOSS_AGGS}")


def grpo_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    ref_logp: torch.Tensor | None = None,
    *,
    beta: float = 0.0,
    clip_eps_low: float = 0.2,
    clip_eps_high: float = 0.28,
    agg: str = "token-mean",
    total_tokens: float | torch.Tensor | None = None,
    num_seqs: int | None = None,
    max_len: int | None = None,
    ratio_level: str = "token",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The scalar loss of one micro-batch, exactly as the trainer backpropagates it:

        loss = aggregate(policy_loss(logp, old_logp, A, level=ratio_level) + beta * kl_k3(logp, ref_logp))

    logp [n, T] (with gradients), old_logp and ref_logp [n, T], advantages [n], mask [n, T]; the normalisers
    are the global batch's (see `aggregate`). ref_logp None (beta = 0, no reference model) drops the KL.
    Stats: policy_loss's clip fractions of this micro-batch, and "kl_sum", the k3 summed over its real tokens.
    """
    # [n, T]
    per_token, stats = policy_loss(logp, old_logp, advantages, mask, clip_eps_low, clip_eps_high, ratio_level)
    if ref_logp is not None:
        kl = kl_k3(logp, ref_logp)  # [n, T]
        per_token = per_token + beta * kl
        stats["kl_sum"] = torch.where(mask, kl.detach(), torch.zeros_like(kl)).sum()
    loss = aggregate(per_token, mask, agg, total_tokens=total_tokens, num_seqs=num_seqs, max_len=max_len)
    return loss, stats
