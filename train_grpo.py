"""GRPO: rollouts -> rewards -> group advantages -> clipped policy loss + KL -> step.

Group Relative Policy Optimisation (DeepSeekMath, 2024) without a value network: for each prompt q
sample G completions o_1..o_G from the current policy, score each with the task's rewards, and use
the reward relative to the rest of its group as the advantage of every token of that completion.

    A_i   = (r_i - mean(r_1..r_G)) / (std(r_1..r_G) + eps)          # one number per completion
    rho_t = exp(log pi_theta(o_t) - log pi_old(o_t))                 # per token
    L_t   = -min(rho_t A_i, clip(rho_t, 1 - eps_low, 1 + eps_high) A_i) + beta KL_t
    KL_t  = exp(ref_t - logp_t) - (ref_t - logp_t) - 1               # k3, reference = frozen start
    loss  = sum_t L_t / (completion tokens in the global batch)

Worked example (G = 4, one prompt, format + accuracy rewards):

    rewards     r = [2.0, 1.0, 1.0, 0.0]      mean 1.0, std 0.7071 (population std)
    advantages  A = [+1.414, 0.0, 0.0, -1.414]
    The first completion's tokens are pushed up, the last one's down, the middle two are left alone.
    A group whose rewards are all equal ([1, 1, 1, 1]) has A = 0 everywhere: no signal, only KL.

With --num-iterations 1 the old policy *is* the current one (old log-probs = detached current
log-probs), so rho_t = 1 exactly, the clip never binds, and the gradient is REINFORCE with the
group mean as baseline: -A_i grad log pi(o_t) / tokens. With more iterations each rollout is
reused for several optimiser steps and the clip keeps the policy near the one that sampled it.

The step, top to bottom in `main`: sample prompts -> rollout (model.sample, G per prompt) -> rewards
(rewards.score) -> advantages -> old / reference log-probs (model.token_logprobs) -> update (micro-batches,
gradient accumulation, clipping, AdamW) -> log -> save.

Launch:

    python train_grpo.py                                  # embedded defaults: tiny model + synthetic set
    python train_grpo.py --model runs/sft/final --data data/train.jsonl --task classification --lr 1e-4
    python train_grpo.py --model runs/sft/final --data data/train.jsonl --stages classification:200,detection:400
    python train_grpo.py --model Qwen/Qwen2.5-VL-3B-Instruct --data data/train.jsonl --task all --beta 0.04
    python train_grpo.py --shuffle-rewards ...            # control: same rewards, no credit assignment
    torchrun --nproc_per_node=8 train_grpo.py --task detection   # FSDP2 over 8 GPUs (--help: several nodes)
    python train_grpo.py ... --save-every 50 --resume auto      # continue from the newest checkpoint

Outputs in --out: log.jsonl (one row a step: rewards, accuracy and format per task, KL, clip fraction,
entropy, lengths, grad norm, seconds; and {"step", "eval"} rows with --eval-data), rollouts.jsonl (every
completion of every --log-rollouts-every-th step, with its rewards and advantage), checkpoints/step-N
(--save-every) and final/ (HF directories that model.load and eval.py read, each with a resume/ folder:
sharded optimizer state, step, RNG states and data position, see runtime.py).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from signal import SIGKILL

import torch
from tqdm import tqdm

import data
import model as M
import rewards
import runtime as R

# ----------------------------------------------------------------------------- the math
# Each piece of the objective is a small pure function on tensors, tested against hand-computed
# values in tests/test_grpo_math.py. Shapes: N = B*G completions (row b*G+g is sample g of prompt
# b), T = padded completion length, mask [N, T] bool marks the real completion tokens.

ADV_SCALES = ("group", "batch", "none")
LOSS_AGGS = ("token-mean", "seq-mean-token-mean", "dr-grpo")


def group_advantages(rewards: torch.Tensor, group_size: int, scale: str = "group", eps: float = 1e-4) -> torch.Tensor:
    """Advantage of each completion relative to its group: rewards [B*G] -> advantages [B*G].

        scale="group":  A_i = (r_i - mean_group(r)) / (std_group(r) + eps)     (GRPO)
        scale="batch":  A_i = (r_i - mean_group(r)) / (std_batch(r) + eps)     (group baseline,
                        one scale for the whole batch, so easy groups are not blown up)
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
        adv = centered / (rewards.std(correction=0) + eps)
    else:
        adv = centered
    # mean([0.1, 0.1, 0.1]) != 0.1 in floating point, so test equality rather than trust r - mean
    constant = (r == r[:, :1]).all(dim=1, keepdim=True)  # [B, 1]
    return torch.where(constant, torch.zeros_like(adv), adv).view(-1)


def policy_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_eps_low: float = 0.2,
    clip_eps_high: float = 0.28,
) -> tuple[torch.Tensor, dict[str, float]]:
    """PPO-clip surrogate per token: logp, old_logp [N, T], advantages [N], mask [N, T] -> [N, T].

        rho_t = exp(logp_t - old_logp_t)
        L_t   = -min(rho_t A, clip(rho_t, 1 - eps_low, 1 + eps_high) A)

    For A > 0 the objective stops growing once rho_t > 1 + eps_high (don't push a good token up
    further than the trust region); for A < 0 once rho_t < 1 - eps_low. A larger eps_high than
    eps_low ("clip-higher", DAPO) leaves more room to raise unlikely tokens, which keeps entropy up.
    Masked positions are 0. Stats: clip_frac, the fraction of real tokens whose clip is active
    (gradient 0), split into clip_frac_low (A < 0) and clip_frac_high (A > 0).
    """
    adv = advantages.unsqueeze(1)  # [N, 1], broadcast over the tokens of each completion
    ratio = torch.exp(logp - old_logp)  # [N, T]
    unclipped = ratio * adv
    clipped = torch.clamp(ratio, 1.0 - clip_eps_low, 1.0 + clip_eps_high) * adv
    per_token = -torch.minimum(unclipped, clipped)
    per_token = torch.where(mask, per_token, torch.zeros_like(per_token))

    with torch.no_grad():
        n = mask.sum().clamp(min=1)
        active = (clipped < unclipped) & mask  # the min picked the clipped branch: no gradient
        stats = {
            "clip_frac": (active.sum() / n).item(),
            "clip_frac_low": ((active & (adv < 0)).sum() / n).item(),
            "clip_frac_high": ((active & (adv > 0)).sum() / n).item(),
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
    summed = torch.where(mask, per_token, torch.zeros_like(per_token))  # padding never leaks in, not even a NaN
    if num_seqs is None:
        num_seqs = per_token.shape[0]
    if mode == "token-mean":
        if total_tokens is None:
            total_tokens = maskf.sum()
        return summed.sum() / total_tokens
    if mode == "seq-mean-token-mean":
        lengths = maskf.sum(dim=1).clamp(min=1.0)  # [N]; an empty completion contributes 0
        return (summed.sum(dim=1) / lengths).sum() / num_seqs
    if mode == "dr-grpo":
        if max_len is None:
            raise ValueError("dr-grpo aggregation needs max_len (the trainer passes --max-new-tokens)")
        return summed.sum() / (num_seqs * max_len)
    raise ValueError(f"unknown loss aggregation {mode!r}; expected one of {LOSS_AGGS}")


def signal_groups(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """rewards [B*G] -> keep [B] bool: True where the group's rewards are not all equal.

    A group with one reward value for every sample has zero advantage everywhere, so it teaches
    nothing (DAPO's dynamic sampling drops and replaces such groups).
    """
    r = rewards.view(-1, group_size)
    return ~(r == r[:, :1]).all(dim=1)


# ----------------------------------------------------------------------------- flags


MULTI_NODE = """\
several GPUs, several nodes (torchrun; the flags are the same as for one process):
  torchrun --nproc_per_node=8 train_grpo.py --task detection
  # two nodes of 8 GPUs: the same line on each, --node_rank 0 and 1, --master_addr = node 0's address
  torchrun --nnodes=2 --node_rank=0 --master_addr=10.0.0.1 --master_port=29500 --nproc_per_node=8 train_grpo.py ...
  torchrun --nnodes=2 --node_rank=1 --master_addr=10.0.0.1 --master_port=29500 --nproc_per_node=8 train_grpo.py ...
With more than one process the policy (and the reference) is sharded with FSDP2: bf16 compute and fp32
master weights on CUDA, parameters gathered once per rollout. --prompts-per-step is per process: the
global batch is world x B prompts x G completions, normalised as one batch. --out must be on a filesystem
every node sees (each rank writes its optimizer shards). Memory: --grad-ckpt, --micro-batch-size,
--cpu-offload. After a crash, rerun the same command with --resume auto."""


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults in the flag help, and the launch examples above kept as written."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="GRPO post-training of Qwen2.5-VL / Qwen2-VL; the equations are in the module docstring.",
        epilog=MULTI_NODE,
        formatter_class=HelpFormatter,
    )
    g = p.add_argument_group("what to train on")
    g.add_argument("--model", default=None, help="hub id or local checkpoint; None: the embedded tiny model")
    g.add_argument("--data", default=None, help="training JSONL (data.py records); None: the embedded synthetic set")
    g.add_argument("--eval-data", default=None, help="held-out JSONL, evaluated greedily (eval.py) at start and end")
    g.add_argument("--eval-every", type=int, default=0, help="also evaluate every N steps; 0 = start and end only")
    g.add_argument("--eval-records", type=int, default=0, help="evaluate the first N held-out records; 0 = all")
    g.add_argument("--task", default="all", help="one task, a comma list (mixed round-robin in every batch), or all")
    g.add_argument(
        "--stages",
        default=None,
        help="optimise tasks one after another, e.g. classification:200,detection:400 "
        "(tasks of one stage joined by +); replaces --task and --max-steps",
    )
    g.add_argument("--max-steps", type=int, default=100, help="GRPO steps (one rollout each)")

    g = p.add_argument_group("rollout")
    g.add_argument("--group-size", type=int, default=8, help="G: completions sampled per prompt")
    g.add_argument("--prompts-per-step", type=int, default=4, help="B: prompts per step and process (B*G completions)")
    g.add_argument("--max-new-tokens", type=int, default=256, help="completion length limit (Dr. GRPO's constant too)")
    g.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (> 0); log-probs use it too")
    g.add_argument(
        "--top-p",
        type=float,
        default=1.0,
        help="nucleus sampling; < 1 only restricts what is drawn, the ratio still uses the full distribution",
    )
    g.add_argument("--top-k", type=int, default=0, help="top-k sampling, 0 = off (same caveat as --top-p)")
    g.add_argument(
        "--compile-decode",
        action="store_true",
        help="decode into a static KV cache with a torch.compile'd step (CUDA graphs on CUDA); compiling costs "
        "seconds to a minute per new batch shape; one process only (not with FSDP yet); see README's bench",
    )
    g.add_argument(
        "--drop-zero-std-groups",
        action="store_true",
        help="dynamic sampling: replace groups whose rewards are all equal (no signal) by fresh prompts",
    )
    g.add_argument("--max-resample-tries", type=int, default=3, help="bound on extra rollouts per step for the above")
    g.add_argument("--mask-truncated", action="store_true", help="no loss on completions cut at --max-new-tokens")
    g.add_argument(
        "--shuffle-rewards",
        action="store_true",
        help="control experiment: permute rewards at random among the completions of each batch "
        "(same reward distribution, no credit assignment)",
    )

    g = p.add_argument_group("objective")
    g.add_argument("--beta", type=float, default=0.04, help="KL weight; 0 = no reference model loaded at all")
    g.add_argument("--clip-eps-low", type=float, default=0.2, help="rho is clipped at 1 - eps_low where A < 0")
    g.add_argument("--clip-eps-high", type=float, default=0.28, help="rho is clipped at 1 + eps_high where A > 0")
    g.add_argument(
        "--num-iterations",
        type=int,
        default=1,
        help="PPO epochs over each rollout (optimiser steps per GRPO step, old log-probs kept); "
        "1 = on-policy: ratio exactly 1, REINFORCE with the group mean as baseline",
    )
    g.add_argument("--loss-agg", default="token-mean", choices=LOSS_AGGS, help="how per-token losses are reduced")
    g.add_argument(
        "--adv-scale", default="group", choices=ADV_SCALES, help="advantage divided by group std, batch std or none"
    )

    g = p.add_argument_group("optimiser")
    g.add_argument(
        "--lr",
        type=float,
        default=None,
        help="peak AdamW lr; None: 1e-4 for the embedded tiny model (a few-million-parameter model learns at "
        "~1e-4 and breaks at 5e-4), 1e-5 otherwise",
    )
    g.add_argument("--lr-schedule", default="constant", choices=("constant", "cosine"), help="after the warm-up")
    g.add_argument("--warmup-steps", type=int, default=0, help="linear warm-up, in optimiser steps")
    g.add_argument("--weight-decay", type=float, default=0.0, help="AdamW weight decay")
    g.add_argument("--grad-clip", type=float, default=1.0, help="max global grad norm")
    g.add_argument(
        "--micro-batch-size",
        type=int,
        default=None,
        help="completions per forward/backward (gradient accumulation), a multiple or a divisor of "
        "--group-size; None: --group-size",
    )
    g.add_argument("--grad-ckpt", action="store_true", help="gradient checkpointing (less memory, ~30%% slower)")
    g.add_argument(
        "--freeze-vision",
        action="store_true",
        help="keep the vision tower frozen (the common RL setting); its image features are then computed once "
        "per step and reused by the old, reference and policy passes of every iteration",
    )
    g.add_argument(
        "--cpu-offload",
        action="store_true",
        help="FSDP with parameters, gradients and optimizer state on the CPU (big models on few GPUs)",
    )

    g = p.add_argument_group("run")
    g.add_argument("--out", default="runs/grpo", help="log.jsonl, rollouts.jsonl, checkpoints/ and final/ go here")
    g.add_argument("--save-every", type=int, default=0, help="checkpoints/step-N every N steps; 0 = final/ only")
    g.add_argument("--keep", type=int, default=0, help="keep the newest N checkpoints/step-*; 0 = all")
    g.add_argument(
        "--resume",
        default=None,
        help="a checkpoint directory, or auto: the newest complete one in --out (none there: start fresh); "
        "continues the step count, data position, RNG states and optimizer exactly",
    )
    g.add_argument(
        "--log-rollouts-every", type=int, default=10, help="completions to rollouts.jsonl every N steps; 0 = off"
    )
    g.add_argument("--seed", type=int, default=0, help="prompt order and sampling")
    args = p.parse_args(argv)

    G = args.group_size
    args.micro_batch_size = args.micro_batch_size or G
    if args.micro_batch_size % G and G % args.micro_batch_size:
        p.error(f"--micro-batch-size {args.micro_batch_size} must be a multiple or a divisor of --group-size {G}")
    if args.temperature <= 0:
        p.error("--temperature must be > 0: the policy gradient needs a sampling distribution")
    if args.num_iterations < 1 or args.group_size < 2 or args.prompts_per_step < 1:
        p.error("--num-iterations >= 1, --group-size >= 2 and --prompts-per-step >= 1 are needed")
    return args


def parse_stages(args: argparse.Namespace, available: list[str]) -> list[tuple[list[str], int]]:
    """[(tasks, steps)] from --stages 'a:200,b+c:400', or one stage of --task for --max-steps."""
    if args.stages:
        stages = []
        for part in args.stages.split(","):
            tasks, _, steps = part.rpartition(":")
            if not tasks or not steps.isdigit():
                raise SystemExit(f"--stages: expected task:steps[,task:steps], got {part!r}")
            stages.append((tasks.split("+"), int(steps)))
    else:
        stages = [(args.task.split(","), args.max_steps)]
    for tasks, _ in stages:
        if tasks == ["all"]:
            tasks[:] = available
        missing = [t for t in tasks if t not in available]
        if missing:
            raise SystemExit(f"no training records for task(s) {missing}; the data has {available}")
    return stages


# ----------------------------------------------------------------------------- the pieces of a step


@dataclass
class Rollouts:
    """One step's experience. B prompts, G samples each, N = B*G rows (row b*G+g = sample g of prompt b)."""

    records: list  # [B] data.Record
    frames: list  # [B] data.Frame: the frame the model writes each prompt's boxes in
    completion_ids: torch.Tensor  # [N, T] long, right padded
    completion_mask: torch.Tensor  # [N, T] bool, real tokens up to and including EOS
    truncated: torch.Tensor  # [N] bool, no EOS within --max-new-tokens
    sample_logp: torch.Tensor  # [N, T] fp32 log-probs under the sampling distribution
    texts: list[str]  # [N] decoded completions
    scores: list[dict[str, float]] = field(default_factory=list)  # [N] rewards.score of each completion
    rewards: torch.Tensor | None = None  # [N] fp32 total reward
    prompt_inputs: dict | None = None  # the sampler's processed prompt batch (CPU), reused by the update


def draw_prompts(streams: dict[str, R.Stream], by_task: dict[str, list], tasks: list[str], turn: int, count: int) -> list:
    """The next `count` prompts of the global batch: tasks round-robin from position `turn`, each task's
    records from its own stream (an explicit (epoch, index) position, so a resumed run draws the same)."""
    picks = [tasks[(turn + i) % len(tasks)] for i in range(count)]
    return [by_task[t][streams[t].next()] for t in picks]


# Testing hook, off unless the variable is set: a JSON file {record id: [completion texts]} whose texts
# replace sampling (completion g of a prompt is texts[g % len]), so runs that would draw different samples
# (1 process vs N, each rank with its own generator) train on the same completions. tests/test_distributed.py.
FIXED_COMPLETIONS_ENV = "GEOVLM_FIXED_COMPLETIONS"
# Testing hook, off unless set: every rank SIGKILLs itself at this step, after logging it and before its
# checkpoint: a crash in the middle of a run, at a known point (tests/test_distributed.py resumes it).
SIGKILL_AT_STEP_ENV = "GEOVLM_SIGKILL_AT_STEP"


def fixed_rollout(net, processor, records: list, inputs: dict, group_size: int, max_new_tokens: int,
                  temperature: float, path: str) -> M.Rollout:  # fmt: skip
    table = json.loads(Path(path).read_text())
    eos = M.eos_token_ids(net, processor)[0]
    pad = processor.tokenizer.pad_token_id
    rows = []
    for rec in records:
        texts = table[str(rec.id)]
        for g in range(group_size):
            ids = processor.tokenizer(texts[g % len(texts)], add_special_tokens=False)["input_ids"] + [eos]
            rows.append(ids[:max_new_tokens])
    T = max(len(r) for r in rows)
    ids = torch.full((len(rows), T), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), T), dtype=torch.bool)
    for i, r in enumerate(rows):
        ids[i, : len(r)], mask[i, : len(r)] = torch.tensor(r), True
    truncated = torch.tensor([r[-1] != eos for r in rows])
    dev = inputs["input_ids"].device
    banned = M.banned_token_ids(net, processor)
    logp = M.token_logprobs(net, inputs, ids.to(dev), mask.to(dev), group_size, temperature, banned)
    return M.Rollout(ids, mask, truncated, logp)


def pad_cat(tensors: list[torch.Tensor], value) -> torch.Tensor:
    """Concatenate [n_i, T_i] tensors along rows, right-padding each to the widest T with `value`."""
    out = tensors[0].new_full((sum(t.shape[0] for t in tensors), max(t.shape[1] for t in tensors)), value)
    row = 0
    for t in tensors:
        out[row : row + t.shape[0], : t.shape[1]] = t
        row += t.shape[0]
    return out


def rollout(
    net,
    processor,
    frame_kind: str,
    records: list,
    group_size: int,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = 0,
    generator: torch.Generator | None = None,
    device: torch.device | None = None,
    static_cache: bool = False,
) -> Rollouts:
    """G completions for each of the B records: one prefill per prompt, then KV-cached sampling (model.sample).

    temperature 0 = greedy (evaluation)."""
    batch = data.collate_prompts(records, processor, frame_kind)
    device = device or generator.device
    fixed = os.environ.get(FIXED_COMPLETIONS_ENV) if temperature > 0 else None
    with torch.no_grad(), R.autocast(device, net), M.gathered(net):  # FSDP: parameters gathered once per rollout
        if fixed:
            out = fixed_rollout(net, processor, records, R.to_device(batch.inputs, device), group_size, max_new_tokens,
                                temperature, fixed)  # fmt: skip
        else:
            out = M.sample(
                net,
                R.to_device(batch.inputs, device),
                group_size=group_size,
                max_new_tokens=max_new_tokens,
                temperature=temperature,
                top_p=top_p,
                top_k=top_k,
                static_cache=static_cache,
                generator=generator,
                eos_ids=M.eos_token_ids(net, processor),
                banned=M.banned_token_ids(net, processor),  # vision tokens: sampling one breaks the next forward
                pad_id=processor.tokenizer.pad_token_id,
            )
    return Rollouts(
        records=list(records),
        frames=list(batch.frames),
        completion_ids=out.completion_ids.cpu(),
        completion_mask=out.completion_mask.bool().cpu(),
        truncated=out.truncated.bool().cpu(),
        sample_logp=out.logprobs.float().cpu(),
        texts=M.decode(processor, out),
        prompt_inputs=batch.inputs,
    )


def score_completions(ro: Rollouts, group_size: int) -> tuple[list[dict[str, float]], torch.Tensor]:
    """rewards.score of every completion against its record's answer, in that prompt's coordinate frame."""
    scores = []
    for i, text in enumerate(ro.texts):
        rec = ro.records[i // group_size]
        scores.append(rewards.score(rec.task, text, rec.answer, ro.frames[i // group_size]))
    return scores, torch.tensor([s["total"] for s in scores], dtype=torch.float32)


def select_groups(parts: list[Rollouts], picks: list[tuple[int, int]], G: int, pad_id: int) -> Rollouts:
    """One batch from (rollout index, prompt index) picks out of several rollouts (dynamic sampling)."""
    rows = lambda b: list(range(b * G, (b + 1) * G))  # noqa: E731

    def cat(name: str, pad=None) -> torch.Tensor:
        ts = [getattr(parts[p], name)[rows(b)] for p, b in picks]
        return torch.cat(ts) if pad is None else pad_cat(ts, pad)

    return Rollouts(
        records=[parts[p].records[b] for p, b in picks],
        frames=[parts[p].frames[b] for p, b in picks],
        completion_ids=cat("completion_ids", pad_id),
        completion_mask=cat("completion_mask", False),
        truncated=cat("truncated"),
        sample_logp=cat("sample_logp", 0.0),
        texts=[parts[p].texts[i] for p, b in picks for i in rows(b)],
        scores=[parts[p].scores[i] for p, b in picks for i in rows(b)],
        rewards=cat("rewards"),
    )


@dataclass(frozen=True)
class MicroBatch:
    rows: slice  # its completions, [n] of the N
    prompts: slice  # the prompts they belong to
    per_prompt: int  # completions per prompt in it: G, or a divisor of G


def micro_batches(n_rows: int, size: int, G: int) -> list[MicroBatch]:
    """Split N = B*G completions into forward/backward chunks of `size`.

    A chunk is whole groups (size a multiple of G) or a slice of one group (size divides G), so every prompt
    in it contributes the same number of completions: the layout token_logprobs expects.
    """
    out = []
    for start in range(0, n_rows, size):
        stop = min(start + size, n_rows)
        out.append(MicroBatch(slice(start, stop), slice(start // G, (stop - 1) // G + 1), min(size, G)))
    return out


def completion_logprobs(
    net, inputs: dict, ro: Rollouts, mb: MicroBatch, banned: torch.Tensor, temperature: float, device
) -> torch.Tensor:
    """log pi(o_t | q, o_<t) [n, T] fp32 for one micro-batch (its prompts' `inputs` already on the device);
    differentiable unless under no_grad. `banned` tokens are masked as the sampler masked them."""
    with R.autocast(device, net):
        lp = M.token_logprobs(
            net,
            inputs,
            ro.completion_ids[mb.rows].to(device),
            ro.completion_mask[mb.rows].to(device),
            group_size=mb.per_prompt,
            temperature=temperature,
            banned=banned,
        )
    return lp.float()


@torch.no_grad()
def all_logprobs(net, mbs: list[MicroBatch], mb_inputs: list[dict], ro: Rollouts, banned, temperature, device):
    """[N, T] log-probs of every completion under `net`, micro-batch by micro-batch, kept on the CPU
    (under FSDP the parameters are gathered once for all micro-batches)."""
    with M.gathered(net):
        return torch.cat([completion_logprobs(net, x, ro, mb, banned, temperature, device).cpu() for mb, x in zip(mbs, mb_inputs)])  # fmt: skip


def task_metrics(scores: list[dict[str, float]], row_tasks: list[str]) -> dict[str, float]:
    """Mean of each reward component; per task, accuracy (total - format: the weighted accuracy rewards)
    and format rate (fraction of completions with format reward 1). scores and row_tasks: one per completion."""
    out: dict[str, float] = {}
    for k in sorted({k for s in scores for k in s}):
        vals = [s[k] for s in scores if k in s]
        out[f"reward/{k}"] = sum(vals) / len(vals)
    for task in sorted(set(row_tasks)):
        rows = [s for s, t in zip(scores, row_tasks) if t == task]
        out[f"acc/{task}"] = sum(s["total"] - s["format"] for s in rows) / len(rows)
        out[f"format/{task}"] = sum(s["format"] >= 1.0 for s in rows) / len(rows)
    return out


def rollout_rows(step: int, ro: Rollouts, advantages: torch.Tensor, G: int) -> list[dict]:
    """One JSON row per completion, for reading what the policy actually wrote and what it earned."""
    lengths = ro.completion_mask.sum(dim=1).tolist()
    return [
        {
            "step": step,
            "id": ro.records[i // G].id,
            "task": ro.records[i // G].task,
            "sample": i % G,
            "answer": ro.records[i // G].answer,
            "completion": ro.texts[i],
            "rewards": ro.scores[i],
            "advantage": advantages[i].item(),
            "length": lengths[i],
            "truncated": bool(ro.truncated[i]),
        }
        for i in range(len(ro.texts))
    ]


def evaluate(net, processor, frame_kind: str, records: list, max_new_tokens: int, device, out_dir: Path,
             rank: int = 0, world: int = 1) -> dict | None:  # fmt: skip
    """Greedy completions of held-out records scored by eval.py: {task: {metric: value}}.

    With several processes every rank generates for its share (parameters gathered once under FSDP) and
    rank 0 scores them all; the other ranks get None."""
    eval_lib = importlib.import_module("eval")  # by name: `eval` is also a builtin
    net.eval()
    samples = []
    mine = list(range(rank, len(records), world))
    with M.gathered(net):
        for start in range(0, len(mine), 16):
            chunk = [records[i] for i in mine[start : start + 16]]
            ro = rollout(net, processor, frame_kind, chunk, 1, max_new_tokens, temperature=0.0, device=device)
            for i, rec, frame, text in zip(mine[start : start + 16], chunk, ro.frames, ro.texts):
                sample = eval_lib.Sample(
                    task=rec.task, answer=rec.answer, completion=text, frame=frame, meta=rec.meta, id=rec.id
                )
                samples.append((i, sample))
    samples = R.all_gather_list(samples)
    if rank != 0:
        return None
    samples = [s for _, s in sorted(samples, key=lambda t: t[0])]
    return eval_lib.evaluate(samples, out_dir=out_dir, caption_extras=False, quiet=True)["tasks"]


# ----------------------------------------------------------------------------- the loop


def main(argv: list[str] | None = None) -> dict:
    """Train; returns {"last": the last step's log row, "eval": [{"step", "eval": {task: metrics}}]}."""
    args = parse_args(argv)
    if args.compile_decode and (args.cpu_offload or int(os.environ.get("WORLD_SIZE", "1")) > 1):
        raise SystemExit("train_grpo: --compile-decode runs on one process only for now (not under FSDP: several "
                         "GPUs or --cpu-offload); drop it or run a single process")  # fmt: skip
    env = R.init_distributed(group_of_one=args.cpu_offload)
    use_fsdp = env.world > 1 or args.cpu_offload  # parameters, gradients and optimizer state sharded (FSDP2)
    R.seed_everything(args.seed + env.rank)
    shuffle_gen = torch.Generator().manual_seed(args.seed + env.rank)  # --shuffle-rewards
    out = Path(args.out)
    resume = R.find_checkpoint(out, args.resume) if args.resume else None
    if args.resume and env.main:
        R.discard_torn(out)
    if env.main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "args.json").write_text(json.dumps(vars(args), indent=2))
    log = R.JsonlLog(out / "log.jsonl", enabled=env.main)
    rollout_log = R.JsonlLog(out / "rollouts.jsonl", enabled=env.main)

    # ---- model, reference model, data, optimiser -----------------------------------------------------
    with R.local_rank0_first(env):  # the embedded defaults are built once, not by every rank at once
        model_path = args.model or M.default_model()
        data_path = args.data or str(M.default_data() / "train.jsonl")
    lr = args.lr if args.lr is not None else (1e-4 if args.model is None else 1e-5)
    # a resumed run reloads the policy from its checkpoint (an HF directory); the reference is the start
    loaded = M.load(str(resume or model_path), device=env.device, grad_ckpt=args.grad_ckpt, dtype=torch.float32)
    policy, processor, frame_kind, device = loaded.model, loaded.processor, loaded.frame_kind, env.device
    if args.freeze_vision:  # before wrapping: FSDP2 keeps requires_grad as it finds it
        policy.model.visual.requires_grad_(False)
    if use_fsdp:
        policy = M.wrap_fsdp(policy, activation_checkpointing=args.grad_ckpt, cpu_offload=args.cpu_offload)
    ref = None
    if args.beta > 0:  # the frozen starting point that the KL term pulls back towards
        ref = M.load(model_path, device=device).model.eval().requires_grad_(False)
        if use_fsdp:  # sharded too; it only ever runs without gradients
            ref = M.wrap_fsdp(ref, cpu_offload=args.cpu_offload)
    pad_id = processor.tokenizer.pad_token_id
    banned = M.banned_token_ids(policy, processor)  # vision tokens: never sampled, masked in log-probs too
    G, P = args.group_size, args.prompts_per_step

    by_task: dict[str, list] = {}
    for rec in data.load_records(data_path):
        by_task.setdefault(rec.task, []).append(rec)
    stages = parse_stages(args, sorted(by_task))
    # one stream per task, the same on every rank: each step every rank draws the same global batch and
    # keeps its own slice (draw_prompts, R.rank_slice), so ranks never overlap and N ranks x B prompts
    # see what 1 process x N*B prompts sees
    streams = {task: R.Stream(len(recs), seed=args.seed, name=task) for task, recs in by_task.items()}
    tasks_at = [tasks for tasks, steps in stages for _ in range(steps)]  # step - 1 -> that stage's tasks
    total_steps = len(tasks_at)

    params = [p for p in policy.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=args.weight_decay)
    generator = torch.Generator(device=device).manual_seed(args.seed + env.rank)  # each rank samples its own
    generators = {"sample": generator, "shuffle": shuffle_gen}
    start, turn = 0, 0  # turn: round-robin position over the stage's tasks, so that every batch mixes them
    if resume is not None:
        state, _ = R.load_checkpoint(resume, policy, optimizer, env, generators)
        start, turn = state["step"], state["turn"]
        for task, st in state["streams"].items():
            streams[task].load_state_dict(st)
    if env.main:
        for name in ("log.jsonl", "rollouts.jsonl"):
            if resume is None:
                (out / name).unlink(missing_ok=True)
            else:  # what the interrupted run logged after its checkpoint is done again
                R.truncate_log(out / name, start)
        print(f"grpo: {model_path} ({sum(p.numel() for p in params) / 1e6:.1f}M trainable, {device}, world "
              f"{env.world}{', FSDP' if use_fsdp else ''}, attention {loaded.attn_impl}), stages {stages}, "
              f"G={G} x B={P} per process, beta {args.beta}, lr {lr}"
              + (f"; resumed from {resume} at step {start}" if resume else ""))  # fmt: skip
    held_out = data.load_records(args.eval_data)[: args.eval_records or None] if args.eval_data else []
    history: list[dict] = []  # the eval rows, also in log.jsonl

    def run_eval(step: int) -> None:
        if held_out:  # every rank generates its share; rank 0 scores and logs
            res = evaluate(policy, processor, frame_kind, held_out, args.max_new_tokens, device,
                           out / f"eval/step-{step:06d}", env.rank, env.world)  # fmt: skip
            if env.main:
                history.append({"step": step, "eval": res})
                log.write(history[-1])

    def checkpoint(step: int, path: Path) -> None:
        state = {"step": step, "turn": turn, "streams": {t: st.state_dict() for t, st in streams.items()}}
        R.save_checkpoint(path, policy, processor, optimizer, env, state, rank_state={}, generators=generators,
                          keep=args.keep)  # fmt: skip

    if resume is None:
        run_eval(0)

    bar = tqdm(range(start + 1, total_steps + 1), desc="grpo", disable=not env.main, dynamic_ncols=True)
    row: dict = {}
    for step in bar:
        tasks = tasks_at[step - 1]
        t_step = time.perf_counter()

        # ---- sample prompts -> rollout -> rewards ----------------------------------------------------
        # Dynamic sampling (--drop-zero-std-groups): a group whose G rewards are all equal has zero advantage;
        # fresh prompts take its place, up to --max-resample-tries more rollouts, then zero-std groups fill in.
        # Under FSDP the parameters are gathered once for all of it: ranks may need different numbers of
        # rollouts, and no collective runs inside them.
        policy.eval()
        parts: list[Rollouts] = []
        kept: list[tuple[int, int]] = []  # (rollout index, prompt index)
        dropped: list[tuple[int, int]] = []
        t_rollout = t_reward = 0.0
        with M.gathered(policy):
            for _ in range(1 + (args.max_resample_tries if args.drop_zero_std_groups else 0)):
                need = P - len(kept)
                needs = R.all_gather_list([need])  # every rank's count: the global batch is drawn in rank order
                if sum(needs) == 0:
                    break
                prompts = R.rank_slice(draw_prompts(streams, by_task, tasks, turn, sum(needs)), needs, env.rank)
                turn += sum(needs)
                if need == 0:
                    continue
                t0 = time.perf_counter()
                part = rollout(policy, processor, frame_kind, prompts, G, args.max_new_tokens,
                               args.temperature, args.top_p, args.top_k, generator, static_cache=args.compile_decode)  # fmt: skip
                t1 = time.perf_counter()
                part.scores, part.rewards = score_completions(part, G)  # [N]
                t_rollout, t_reward = t_rollout + t1 - t0, t_reward + time.perf_counter() - t1
                R.check_finite(step, rewards=part.rewards)
                parts.append(part)
                signal = signal_groups(part.rewards, G)  # [need]
                for b in range(need):
                    if signal[b] or not args.drop_zero_std_groups:
                        kept.append((len(parts) - 1, b))
                    else:
                        dropped.append((len(parts) - 1, b))
        picks = (kept + dropped)[:P]
        ro = parts[0] if picks == [(0, b) for b in range(P)] else select_groups(parts, picks, G, pad_id)
        N = len(ro.texts)

        # ---- advantages ------------------------------------------------------------------------------
        r = ro.rewards  # [N]
        if args.shuffle_rewards:  # control: the same rewards, handed to random completions of the batch
            r = r[torch.randperm(N, generator=shuffle_gen)]
        if args.adv_scale == "batch" and env.world > 1:  # one std over the global batch, as on one process
            s1, s2, n = (float(R.all_reduce_sum(v, device)) for v in (float(r.sum()), float((r.double() ** 2).sum()), N))
            std = max(s2 / n - (s1 / n) ** 2, 0.0) ** 0.5
            advantages = group_advantages(r, G, scale="none") / (std + 1e-4)  # [N]
        else:
            advantages = group_advantages(r, G, scale=args.adv_scale)  # [N]

        loss_mask = ro.completion_mask.clone()  # [N, T]
        if args.mask_truncated:  # a cut-off completion never got to finish its answer: no loss on it
            loss_mask[ro.truncated] = False
        # Normalisers of the whole global batch (all micro-batches, all ranks): see `aggregate`.
        global_tokens = max(float(R.all_reduce_sum(int(loss_mask.sum()), device)), 1.0)  # all masked: loss 0, not 0/0
        global_seqs = int(R.all_reduce_sum(N, device))

        # ---- old and reference log-probs -------------------------------------------------------------
        t0 = time.perf_counter()
        mbs = micro_batches(N, args.micro_batch_size, G)
        mb_inputs = []  # each micro-batch's prompts, processed once and reused by every pass below
        for mb in mbs:
            if ro.prompt_inputs is not None and mb.prompts == slice(0, len(ro.records)):  # all of them: as sampled
                x = ro.prompt_inputs
            else:
                x = data.collate_prompts(ro.records[mb.prompts], processor, frame_kind).inputs
            mb_inputs.append(R.to_device(x, device))
            if args.freeze_vision:  # a frozen tower gives the same features to every pass: encode the images once
                with torch.no_grad(), R.autocast(device, policy):
                    mb_inputs[-1]["image_features"] = M.call(policy, M.encode_images, mb_inputs[-1])
        temp = args.temperature
        old_logp = ref_logp = None  # [N, T]
        if args.num_iterations > 1:  # pi_old must stay put while the policy moves over the iterations
            old_logp = all_logprobs(policy, mbs, mb_inputs, ro, banned, temp, device)
        if ref is not None:
            ref_logp = all_logprobs(ref, mbs, mb_inputs, ro, banned, temp, device)
        t_logprobs = time.perf_counter() - t0

        # ---- update: num_iterations optimiser steps, each accumulating gradients over the micro-batches -
        t0 = time.perf_counter()
        policy.train()
        loss_sum = kl_sum = clipped_sum = grad_norm_sum = 0.0
        for it in range(args.num_iterations):
            for mb, x in zip(mbs, mb_inputs):
                m = loss_mask[mb.rows].to(device)  # [n, T]
                logp = completion_logprobs(policy, x, ro, mb, banned, temp, device)  # [n, T], with gradients
                R.check_finite(step, logprobs=logp[m].detach())
                old = logp.detach() if old_logp is None else old_logp[mb.rows].to(device)  # 1 iteration: rho = 1
                adv = advantages[mb.rows].to(device)  # [n]
                per_token, stats = policy_loss(logp, old, adv, m, args.clip_eps_low, args.clip_eps_high)  # [n, T]
                if ref_logp is not None:
                    kl = kl_k3(logp, ref_logp[mb.rows].to(device))  # [n, T]
                    per_token = per_token + args.beta * kl
                    kl_sum += float((kl.detach() * m).sum()) / global_tokens
                loss = aggregate(
                    per_token, m, args.loss_agg, total_tokens=global_tokens, num_seqs=global_seqs,
                    max_len=args.max_new_tokens,
                )  # fmt: skip
                R.check_finite(step, loss=loss.detach())
                # each micro-batch is already divided by the global count, so the gradients just add up;
                # x world undoes the mean over ranks that FSDP's reduce-scatter applies to gradients
                (loss * env.world).backward()
                loss_sum += float(loss.detach())
                clipped_sum += stats["clip_frac"] * float(m.sum()) / global_tokens
            grad_norm = torch.nn.utils.clip_grad_norm_(params, args.grad_clip)
            grad_norm = grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm  # FSDP: DTensor
            R.check_finite(step, grad_norm=grad_norm)
            for group in optimizer.param_groups:
                opt_step = (step - 1) * args.num_iterations + it
                group["lr"] = R.lr_at(opt_step, lr, args.warmup_steps, total_steps * args.num_iterations, args.lr_schedule)  # fmt: skip
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            grad_norm_sum += float(grad_norm)
        t_update = time.perf_counter() - t0
        t_step = time.perf_counter() - t_step

        # ---- log: the global batch (every rank's rollouts), written by rank 0 -----------------------
        n_it = args.num_iterations
        loss_sum, kl_sum, clipped_sum = (float(R.all_reduce_sum(v, device)) for v in (loss_sum, kl_sum, clipped_sum))
        sampled = ro.sample_logp[ro.completion_mask]  # log-probs of every sampled token
        mine = {
            "ids": [rec.id for rec in ro.records],
            "tasks": [rec.task for rec in ro.records],
            "scores": ro.scores,
            "rewards": ro.rewards.tolist(),
            "lengths": ro.completion_mask.sum(dim=1).tolist(),
            "truncated": ro.truncated.tolist(),
            "logp_sum": float(sampled.sum()),
            "logp_n": sampled.numel(),
            "zero_std": sum(int((~signal_groups(p.rewards, G)).sum()) for p in parts),
            "groups": sum(len(p.records) for p in parts),
            "rollouts": len(parts),
            "sampled_tokens": sum(int(p.completion_mask.sum()) for p in parts),
        }
        every = R.all_gather_list([mine])
        cat = lambda k, every=every: [x for m in every for x in m[k]]  # noqa: E731
        tot = lambda k, every=every: sum(m[k] for m in every)  # noqa: E731
        rewards_all, lengths = torch.tensor(cat("rewards")), torch.tensor(cat("lengths"), dtype=torch.float32)
        row = {
            "step": step,
            "tasks": ",".join(tasks),
            "prompt_ids": ",".join(map(str, cat("ids"))),  # the global batch, rank after rank, in order
            "reward_mean": rewards_all.mean().item(),
            "reward_std": rewards_all.std(correction=0).item(),
            **task_metrics(cat("scores"), [t for t in cat("tasks") for _ in range(G)]),  # reward/, acc/, format/<task>
            "loss": loss_sum / n_it,
            "kl": kl_sum / n_it if ref is not None else None,  # mean k3 per token; None without a reference
            "clip_frac": clipped_sum / n_it,
            "entropy": -tot("logp_sum") / tot("logp_n") if tot("logp_n") else 0.0,  # one-sample estimate: -mean log p
            "completion_len_mean": lengths.mean().item(),
            "completion_len_max": lengths.max().item(),
            "truncated_frac": sum(cat("truncated")) / len(cat("truncated")),
            # of all groups sampled this step, resampled ones included: how much of the batch was dead weight
            "zero_std_frac": tot("zero_std") / tot("groups"),
            "rollouts": max(m["rollouts"] for m in every),
            "grad_norm": grad_norm_sum / n_it,
            "lr": optimizer.param_groups[0]["lr"],
            "rollout_s": t_rollout,
            "reward_s": t_reward,
            "logprob_s": t_logprobs,
            "update_s": t_update,
            "step_s": t_step,
            "tokens_per_s": tot("sampled_tokens") / max(t_rollout, 1e-9),  # sampled, all ranks
        }
        log.write(row)
        if args.log_rollouts_every and step % args.log_rollouts_every == 0:
            for r_row in R.all_gather_list(rollout_rows(step, ro, advantages, G)):
                rollout_log.write(r_row)
        bar.set_postfix(
            reward=f"{row['reward_mean']:.3f}",
            kl="-" if row["kl"] is None else f"{row['kl']:.4f}",
            clip=f"{row['clip_frac']:.3f}",
            H=f"{row['entropy']:.2f}",
            len=f"{row['completion_len_mean']:.0f}",
            gn=f"{row['grad_norm']:.2f}",
            refresh=False,
        )

        if os.environ.get(SIGKILL_AT_STEP_ENV) == str(step):
            R.barrier()  # every rank has logged its part of this step
            os.kill(os.getpid(), SIGKILL)

        # ---- eval and save ---------------------------------------------------------------------------
        if args.eval_every and step % args.eval_every == 0 and step != total_steps:
            run_eval(step)
        if args.save_every and step % args.save_every == 0:  # atomic: a crash keeps the last complete one
            checkpoint(step, out / "checkpoints" / f"step-{step:06d}")

    if start < total_steps or resume is None:
        run_eval(total_steps)
        checkpoint(total_steps, out / "final")  # the model, and a checkpoint like the others
        if env.main:
            print(f"saved {out / 'final'}")
    return {"last": row, "eval": history}


if __name__ == "__main__":
    main()
