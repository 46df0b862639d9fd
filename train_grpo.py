"""GRPO: rollouts -> rewards -> group advantages -> clipped policy loss + KL -> step.

The objective (equations, a worked example, where it differs from TRL) is grpo.py; this file is the loop.
One step, top to bottom in `main`:

    prompts      B per process; tasks round-robin, each task's records in a seeded order (Stream)
    rollout      model.sample: G completions per prompt, one prefill per prompt, KV-cached decoding
    rewards      rewards.score_group: format + the task's accuracy rewards, one dict per completion
    advantages   grpo.group_advantages: each reward relative to its group
    log-probs    model.token_logprobs under the old policy (--num-iterations > 1) and the reference (beta > 0)
    update       grpo.grpo_loss per micro-batch, gradients accumulated, clipped, AdamW
    log, eval, save

Launch:

    python train_grpo.py                                  # embedded defaults: tiny model + synthetic set
    python train_grpo.py --model runs/sft/final --data data/train.jsonl --task classification --lr 1e-4
    python train_grpo.py --model runs/sft/final --data data/train.jsonl \\
        --stages classification:200,detection:400
    python train_grpo.py --model Qwen/Qwen2.5-VL-3B-Instruct --data data/train.jsonl --task all --beta 0.04
    python train_grpo.py --shuffle-rewards ...            # control: same rewards, no credit assignment
    torchrun --nproc_per_node=8 train_grpo.py --task detection   # FSDP2 over 8 GPUs (--help: several nodes)
    python train_grpo.py ... --save-every 50 --resume auto      # continue from the newest checkpoint
    python train_grpo.py --lora-rank 8 --task vqa         # LoRA: adapters only;
                                                          # the KL reference = adapters off
    python train_grpo.py --ratio-level sequence --num-iterations 2 ...   # GSPO's sequence-level ratio

Outputs in --out: log.jsonl (one row a step: rewards per component, accuracy and format per task, KL, clip
fraction, entropy, lengths, grad norm, seconds; and {"step", "eval"} rows with --eval-data), rollouts.jsonl
(every completion of every --log-rollouts-every-th step, with its rewards and advantage),
checkpoints/step-NNNNNN (--save-every) and final/ (HF directories that model.load and eval.py read, each with
a resume/ folder: sharded optimizer state, step, RNG states and data position, see geovlm/checkpoints.py).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import torch
from tqdm import tqdm

import data
import eval as evaluation
import grpo
import model as M
import rewards
from embedded import defaults
from geovlm import fsdp, lora
from geovlm.distributed import all_gather_list, all_reduce_sum, world_size
from geovlm.flags import (
    Count,
    ImageryFlags,
    LoRAFlags,
    NonNegative,
    OptimiserFlags,
    Positive,
    PositiveInt,
    Probability,
    RunFlags,
    choices,
    lora_implies,
    multi_node_help,
    parse_config,
)
from geovlm.frames import frame_to_json
from geovlm.logs import check_finite
from geovlm.metrics import Sample, parse_sample
from geovlm.run import Run, learning_rate, start_run
from geovlm.schedule import Stream, lr_at, rank_slice
from geovlm.tasks import TASKS
from model import to_device


# ----------------------------------------------------------------------------- flags
@dataclass
class Config(RunFlags, OptimiserFlags, LoRAFlags, ImageryFlags):
    """Every flag of train_grpo.py: a field each, its comment the --help text (geovlm/flags.py). The shared
    groups (run, optimiser, LoRA, imagery) are declared once in geovlm/flags.py; what a None means is filled
    in by `implied`, in words."""

    # ---- what to train
    model: str | None = None  # hub id or local checkpoint directory; None: the embedded tiny model
    # pre-trained to see, then on every task (defaults.sft_model, shipped in embedded/weights/embedded-start)
    task: str = "all"  # one task, a comma list (mixed round-robin in every batch), or all; tasks:
    # classification, multilabel, vqa, counting, grounding, detection, region_caption, caption,
    # grounded_caption, change_caption, change_detection, temporal_classification
    stages: str | None = None  # optimise tasks one after another, e.g. classification:200,detection:400
    # (tasks of one stage joined by +); replaces --task and --max-steps
    max_steps: PositiveInt = 100  # GRPO steps (one rollout each)
    out: str = "runs/grpo"  # log.jsonl, rollouts.jsonl, checkpoints/ and final/ go here; a folder that
    # holds another run is refused unless --resume or --overwrite
    eval_data: str | None = None  # held-out JSONL, evaluated greedily (eval.py) at start and end; None: the
    # embedded test split when --data is not given either (so the defaults log a held-out curve), else none
    eval_every: Count = 0  # also evaluate every N steps; 0 = start and end only
    eval_records: Count = 0  # evaluate the first N held-out records; 0 = all
    log_rollouts_every: Count = 10  # completions to rollouts.jsonl every N steps; 0 = off

    # ---- rollout
    group_size: PositiveInt = 8  # G: completions sampled per prompt (>= 2)
    prompts_per_step: PositiveInt = 4  # B: prompts per step and process (B*G completions)
    max_new_tokens: PositiveInt = 256  # completion length limit (Dr. GRPO's constant too)
    temperature: Positive = 1.0  # sampling temperature (> 0); log-probs use it too
    top_p: Probability = 1.0  # nucleus sampling; < 1 only restricts what is drawn, the ratio still uses the
    # full distribution
    top_k: Count = 0  # top-k sampling, 0 = off (same caveat as --top-p)
    compile_decode: bool = False  # decode into a static KV cache with a torch.compile'd step (CUDA graphs on
    # CUDA, geovlm/kernels.py); compiling costs seconds to a minute per new batch shape; one process only
    drop_zero_std_groups: bool = False  # dynamic sampling: replace groups whose rewards are all equal (no
    # signal) by fresh prompts
    max_resample_tries: Count = 3  # bound on extra rollouts per step for --drop-zero-std-groups
    mask_truncated: bool = False  # no loss on completions cut at --max-new-tokens
    shuffle_rewards: bool = False  # control experiment: permute rewards at random among the completions of
    # each batch (same reward distribution, no credit assignment)

    # ---- objective (grpo.py)
    beta: NonNegative = 0.04  # KL weight; 0 = no reference model loaded at all
    ratio_level: Annotated[str, choices(*grpo.RATIO_LEVELS)] = "token"  # importance ratio per token
    # (GRPO/PPO) or per completion, the geometric mean of its token ratios (GSPO); sequence needs
    # --num-iterations >= 2 (on-policy both are exactly 1)
    clip_eps_low: NonNegative | None = None  # rho is clipped at 1 - eps_low where A < 0; None: 0.2 at token
    # level, 3e-4 at sequence level (GSPO's)
    clip_eps_high: NonNegative | None = None  # rho is clipped at 1 + eps_high where A > 0; None: 0.28 at
    # token level (DAPO's clip-higher), 4e-4 at sequence level
    num_iterations: PositiveInt = 1  # PPO epochs over each rollout (optimiser steps per GRPO step, old
    # log-probs kept); 1 = on-policy: ratio exactly 1, REINFORCE with the group mean as baseline
    loss_agg: Annotated[str, choices(*grpo.LOSS_AGGS)] = "token-mean"  # how per-token losses are reduced
    adv_scale: Annotated[str, choices(*grpo.ADV_SCALES)] = "group"  # advantage divided by group std, batch
    # std or none

    # ---- optimiser and memory
    lr: Positive | None = None  # peak learning rate; None (AdamW): 1e-4 for a small (< 100M parameter) model
    # such as the embedded tiny one (it learns at ~1e-4 and breaks at 5e-4), 1e-5 otherwise
    lr_schedule: Annotated[str, choices("constant", "cosine")] = "constant"  # after the warm-up
    optimizer: Annotated[str, choices("adamw", "sgd")] = "adamw"  # sgd: SGD with momentum 0.9, whose step
    # scales with the gradient (AdamW moves every weight by ~lr whatever its gradient); needs its own --lr
    micro_batch_size: PositiveInt | None = None  # completions per forward/backward (gradient
    # accumulation), a multiple or a divisor of --group-size; None: --group-size


def implied(args: Config) -> list[str]:
    """The values the flags imply, filled in and said in words (start-up prints them); ValueError for flags
    that contradict each other. The only place a flag's value is changed after parsing."""
    G = args.group_size
    if G < 2:
        raise ValueError("--group-size must be >= 2: advantages compare the completions of a group")
    if args.ratio_level == "sequence" and args.num_iterations < 2:
        raise ValueError(
            "--ratio-level sequence changes nothing with --num-iterations 1 (every ratio is exactly 1); "
            "use --num-iterations >= 2"
        )
    if args.compile_decode and (args.cpu_offload or world_size() > 1):
        raise ValueError(
            "--compile-decode runs on one process only (not under FSDP: several GPUs, --cpu-offload)"
        )
    named_stages(args)  # a task name that is no task, or a malformed --stages
    if args.optimizer == "sgd" and args.lr is None:
        raise ValueError(
            "--optimizer sgd needs --lr: its step is lr x gradient, so AdamW's default does not fit"
        )
    notes = lora_implies(args)
    if args.micro_batch_size is None:
        args.micro_batch_size = G
        notes.append(f"--micro-batch-size {G} (--group-size)")
    elif args.micro_batch_size % G and G % args.micro_batch_size:
        raise ValueError(
            f"--micro-batch-size {args.micro_batch_size} must be a multiple or a divisor of --group-size {G}"
        )
    low, high = grpo.CLIP_DEFAULTS[args.ratio_level]
    if args.clip_eps_low is None or args.clip_eps_high is None:
        args.clip_eps_low = low if args.clip_eps_low is None else args.clip_eps_low
        args.clip_eps_high = high if args.clip_eps_high is None else args.clip_eps_high
        notes.append(
            f"--clip-eps-low {args.clip_eps_low:g} --clip-eps-high {args.clip_eps_high:g} "
            f"({args.ratio_level} level)"
        )
    return notes


def parse_args(argv: list[str] | None = None) -> Config:
    """The flags, checked (one line for a mistake), with what they imply filled in (args.implied)."""
    args, parser = parse_config(
        Config,
        argv,
        description="GRPO post-training of Qwen2.5-VL / Qwen2-VL (equations: grpo.py).",
        epilog=multi_node_help("train_grpo.py", "--prompts-per-step"),
    )
    try:
        args.implied = implied(args)
        # an edit of rewards.TASK_REWARDS with a typo fails here, not after the models load
        rewards.check_table()
    except ValueError as e:
        parser.error(str(e))
    return args


def named_stages(args: Config) -> list[tuple[list[str], int]]:
    """[(tasks, steps)] from --stages 'a:200,b+c:400', or one stage of --task for --max-steps; ValueError for
    a malformed --stages or a task name that is no task (found from the flags alone, before any data)."""
    if args.stages:
        stages = []
        for part in args.stages.split(","):
            tasks, _, steps = part.rpartition(":")
            if not tasks or not steps.isdigit() or int(steps) < 1:
                raise ValueError(f"--stages: expected task:steps[,task:steps] with steps >= 1, got {part!r}")
            stages.append((tasks.split("+"), int(steps)))
    else:
        stages = [(args.task.split(","), args.max_steps)]
    for tasks, _ in stages:
        unknown = [t for t in tasks if t not in TASKS and tasks != ["all"]]
        if unknown:
            flag = "--stages" if args.stages else "--task"
            raise ValueError(
                f"{flag}: no task named {', '.join(unknown)}; the tasks: all, {', '.join(TASKS)}"
            )
    return stages


def parse_stages(args: Config, available: list[str]) -> list[tuple[list[str], int]]:
    """named_stages with `all` replaced by the tasks of the data; one line (SystemExit) for a task the data
    has no records of (start_run calls it on the training records, before any model loads)."""
    try:
        stages = named_stages(args)
    except ValueError as e:
        raise SystemExit(str(e)) from None
    for tasks, _ in stages:
        if tasks == ["all"]:
            tasks[:] = available
        missing = [t for t in tasks if t not in available]
        if missing:
            raise SystemExit(f"no training records for task(s) {missing}; the data has {available}")
    return stages


def available_tasks(records: list) -> list[str]:
    return sorted({r.task for r in records})


def headline(metrics: dict[str, dict]) -> str:
    """Each task's headline metric (the registry's) with its n: what the console shows of an evaluation."""
    return ", ".join(
        f"{t} {TASKS[t].metric} {m.get(TASKS[t].metric, 0.0):.3f} (n={m['n']})" for t, m in metrics.items()
    )


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


@dataclass
class Trainer:
    """What every step uses: the run, the models, the optimiser, the data streams and the generators."""

    args: Config
    run: Run
    policy: torch.nn.Module  # the model being trained (an fsdp.FSDPRoot under FSDP)
    # the frozen start, for the KL term (None when beta = 0, or with LoRA: adapters off)
    ref: torch.nn.Module | None
    optimizer: torch.optim.Optimizer
    lr: float
    by_task: dict[str, list]  # task -> training records
    streams: dict[str, Stream]  # task -> its records' order; the data position
    tasks_at: list[list[str]]  # step - 1 -> the tasks of that step's stage
    generators: dict[str, torch.Generator]  # "sample": this rank's sampling, "shuffle": --shuffle-rewards
    banned: torch.Tensor  # vision tokens: never sampled, masked in log-probs too
    turn: int = 0  # round-robin position over the stage's tasks, so that every batch mixes them
    steps_without_signal: int = 0  # consecutive steps in which every group's rewards were all equal

    @property
    def device(self) -> torch.device:
        return self.run.env.device


def draw_prompts(
    streams: dict[str, Stream], by_task: dict[str, list], tasks: list[str], turn: int, count: int
) -> list:
    """The next `count` prompts of the global batch: tasks round-robin from position `turn`, each task's
    records from its own stream (an explicit (epoch, index) position, so a resumed run draws the same)."""
    picks = [tasks[(turn + i) % len(tasks)] for i in range(count)]
    return [by_task[t][streams[t].next()] for t in picks]


def sample_group(tr: Trainer, inputs: dict, records: list) -> M.Rollout:
    """G completions for each prompt of a processed batch: model.sample with this run's sampling flags."""
    a, net, processor = tr.args, tr.policy, tr.run.processor
    return fsdp.call(
        net,
        M.sample,
        inputs,
        group_size=a.group_size,
        max_new_tokens=a.max_new_tokens,
        temperature=a.temperature,
        top_p=a.top_p,
        top_k=a.top_k,
        static_cache=a.compile_decode,
        generator=tr.generators["sample"],
        eos_ids=M.eos_token_ids(fsdp.unwrap(net), processor),
        banned=tr.banned,
        pad_id=processor.tokenizer.pad_token_id,
    )


def rollout(tr: Trainer, records: list) -> Rollouts:
    """The records' prompts processed once, G completions each, decoded (model.sample via `sample_group`)."""
    batch = data.collate_prompts(records, tr.run.processor, tr.run.frame_kind)
    with torch.no_grad(), fsdp.autocast(tr.device, tr.policy), fsdp.gathered(tr.policy):
        out = sample_group(tr, to_device(batch.inputs, tr.device), records)
    return Rollouts(
        records=list(records),
        frames=list(batch.frames),
        completion_ids=out.completion_ids.cpu(),
        completion_mask=out.completion_mask.bool().cpu(),
        truncated=out.truncated.bool().cpu(),
        sample_logp=out.logprobs.float().cpu(),
        texts=M.decode(tr.run.processor, out),
        prompt_inputs=batch.inputs,
    )


def score_completions(ro: Rollouts, group_size: int) -> tuple[list[dict[str, float]], torch.Tensor]:
    """rewards.score_group of each prompt's G completions against its record's answer, in that prompt's
    frame."""
    lengths = ro.completion_mask.sum(dim=1).tolist()
    scores = []
    for b, rec in enumerate(ro.records):
        rows = slice(b * group_size, (b + 1) * group_size)
        scores += rewards.score_group(
            rec.task, ro.texts[rows], rec.answer, ro.frames[b], record=rec, completion_tokens=lengths[rows]
        )
    return scores, torch.tensor([s["total"] for s in scores], dtype=torch.float32)


def pad_cat(tensors: list[torch.Tensor], value) -> torch.Tensor:
    """Concatenate [n_i, T_i] tensors along rows, right-padding each to the widest T with `value`."""
    out = tensors[0].new_full((sum(t.shape[0] for t in tensors), max(t.shape[1] for t in tensors)), value)
    row = 0
    for t in tensors:
        out[row : row + t.shape[0], : t.shape[1]] = t
        row += t.shape[0]
    return out


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


def collect_rollouts(tr: Trainer, tasks: list[str], step: int) -> tuple[Rollouts, dict]:
    """This process's B prompts of the step with G scored completions each, and what sampling them took.

    Dynamic sampling (--drop-zero-std-groups): a group whose G rewards are all equal has zero advantage; fresh
    prompts take its place, up to --max-resample-tries more rollouts, then zero-std groups fill in. Under FSDP
    the parameters are gathered once for all of it: ranks may need different numbers of rollouts, and no
    collective runs inside them (the prompt counts are exchanged between rollouts, outside the gather)."""
    a, G, P = tr.args, tr.args.group_size, tr.args.prompts_per_step
    parts: list[Rollouts] = []
    kept: list[tuple[int, int]] = []  # (rollout index, prompt index)
    dropped: list[tuple[int, int]] = []
    info = {"rollout_s": 0.0, "reward_s": 0.0, "zero_std": 0}
    tr.policy.eval()
    with fsdp.gathered(tr.policy):
        for _ in range(1 + (a.max_resample_tries if a.drop_zero_std_groups else 0)):
            need = P - len(kept)
            needs = all_gather_list([need])  # every rank's count: the global batch is drawn in rank order
            if sum(needs) == 0:
                break
            prompts = rank_slice(
                draw_prompts(tr.streams, tr.by_task, tasks, tr.turn, sum(needs)), needs, tr.run.env.rank
            )
            tr.turn += sum(needs)
            if need == 0:
                continue
            t0 = time.perf_counter()
            part = rollout(tr, prompts)
            t1 = time.perf_counter()
            part.scores, part.rewards = score_completions(part, G)  # [N]
            info["rollout_s"] += t1 - t0
            info["reward_s"] += time.perf_counter() - t1
            check_finite(step, rewards=part.rewards)
            parts.append(part)
            signal = grpo.signal_groups(part.rewards, G)  # [need]
            info["zero_std"] += int((~signal).sum())
            for b in range(need):
                (kept if signal[b] or not a.drop_zero_std_groups else dropped).append((len(parts) - 1, b))
    picks = (kept + dropped)[:P]
    pad_id = tr.run.processor.tokenizer.pad_token_id
    ro = parts[0] if picks == [(0, b) for b in range(P)] else select_groups(parts, picks, G, pad_id)
    info |= {
        "groups": sum(len(p.records) for p in parts),
        "rollouts": len(parts),
        "sampled_tokens": sum(int(p.completion_mask.sum()) for p in parts),
    }
    return ro, info


def advantages_of(tr: Trainer, ro: Rollouts) -> torch.Tensor:
    """[N] advantages of the step's completions (grpo.group_advantages); --adv-scale batch divides by the std
    of the global batch (all ranks), as one process would; --shuffle-rewards permutes the rewards first."""
    r = ro.rewards  # [N]
    if tr.args.shuffle_rewards:  # control: the same rewards, handed to random completions of the batch
        r = r[torch.randperm(len(r), generator=tr.generators["shuffle"])]
    batch_std = None
    if tr.args.adv_scale == "batch" and tr.run.env.world > 1:
        s1, s2, n = (
            float(all_reduce_sum(v, tr.device))
            for v in (float(r.sum()), float((r.double() ** 2).sum()), len(r))
        )
        batch_std = max(s2 / n - (s1 / n) ** 2, 0.0) ** 0.5
    return grpo.group_advantages(r, tr.args.group_size, scale=tr.args.adv_scale, batch_std=batch_std)


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


def micro_batch_inputs(tr: Trainer, ro: Rollouts, mbs: list[MicroBatch]) -> list[dict]:
    """Each micro-batch's prompts, processed once on the device and reused by every log-prob pass of the step:
    the sampler's own batch when one micro-batch spans all prompts; image features too with
    --freeze-vision."""
    out = []
    for mb in mbs:
        if ro.prompt_inputs is not None and mb.prompts == slice(0, len(ro.records)):
            x = ro.prompt_inputs
        else:
            x = data.collate_prompts(ro.records[mb.prompts], tr.run.processor, tr.run.frame_kind).inputs
        out.append(to_device(x, tr.device))
        # a frozen tower gives the same features to every pass: encode the images once
        if tr.args.freeze_vision:
            with torch.no_grad(), fsdp.autocast(tr.device, tr.policy):
                out[-1]["image_features"] = fsdp.call(tr.policy, M.encode_images, out[-1])
    return out


def completion_logprobs(
    net, inputs: dict, ro: Rollouts, mb: MicroBatch, banned: torch.Tensor, temperature: float, device
) -> torch.Tensor:
    """log pi(o_t | q, o_<t) [n, T] fp32 for one micro-batch (its prompts' `inputs` already on the device);
    differentiable unless under no_grad. `banned` tokens are masked as the sampler masked them."""
    with fsdp.autocast(device, net):
        lp = fsdp.call(
            net,
            M.token_logprobs,
            inputs,
            ro.completion_ids[mb.rows].to(device),
            ro.completion_mask[mb.rows].to(device),
            group_size=mb.per_prompt,
            temperature=temperature,
            banned=banned,
        )
    return lp.float()


@torch.no_grad()
def all_logprobs(
    net, tr: Trainer, ro: Rollouts, mbs: list[MicroBatch], mb_inputs: list[dict]
) -> torch.Tensor:
    """[N, T] log-probs of every completion under `net` (the old policy or the reference), micro-batch by
    micro-batch, kept on the CPU; under FSDP the parameters are gathered once for all micro-batches."""
    with fsdp.gathered(net):
        return torch.cat(
            [
                completion_logprobs(net, x, ro, mb, tr.banned, tr.args.temperature, tr.device).cpu()
                for mb, x in zip(mbs, mb_inputs)
            ]
        )


def reference_logprobs(
    tr: Trainer, ro: Rollouts, mbs: list[MicroBatch], mb_inputs: list[dict]
) -> torch.Tensor | None:
    """[N, T] log-probs under the KL reference (None when beta = 0): the frozen copy of the start, or with
    LoRA the policy itself with its adapters switched off, which *is* the start (B = 0 there), without a
    second model."""
    if tr.args.beta == 0:
        return None
    if tr.ref is not None:
        return all_logprobs(tr.ref, tr, ro, mbs, mb_inputs)
    with lora.disabled(tr.policy):
        return all_logprobs(tr.policy, tr, ro, mbs, mb_inputs)


def update_policy(tr: Trainer, step: int, ro: Rollouts, advantages: torch.Tensor) -> dict[str, float]:
    """--num-iterations optimiser steps on the step's rollouts, each accumulating grpo_loss over
    micro-batches.

    Every micro-batch divides by the token and sequence counts of the whole global batch (all micro-batches,
    all ranks), so the summed gradients equal one big batch's (see grpo.aggregate)."""
    a, env, dev = tr.args, tr.run.env, tr.device
    loss_mask = ro.completion_mask.clone()  # [N, T]
    if a.mask_truncated:  # a cut-off completion never got to finish its answer: no loss on it
        loss_mask[ro.truncated] = False
    global_tokens = max(float(all_reduce_sum(int(loss_mask.sum()), dev)), 1.0)  # all masked: loss 0, not 0/0
    global_seqs = int(all_reduce_sum(len(ro.texts), dev))

    # ---- old and reference log-probs, [N, T] each
    t0 = time.perf_counter()
    mbs = micro_batches(len(ro.texts), a.micro_batch_size, a.group_size)
    mb_inputs = micro_batch_inputs(tr, ro, mbs)
    # pi_old stays put
    old_logp = all_logprobs(tr.policy, tr, ro, mbs, mb_inputs) if a.num_iterations > 1 else None
    ref_logp = reference_logprobs(tr, ro, mbs, mb_inputs)
    t1 = time.perf_counter()

    # ---- the optimiser steps
    tr.policy.train()
    params = [p for p in tr.policy.parameters() if p.requires_grad]
    sums = {
        "loss": torch.zeros(()),
        "kl": torch.zeros(()),
        "clip_frac": torch.zeros(()),
        "grad_norm": torch.zeros(()),
    }
    for it in range(a.num_iterations):
        for mb, x in zip(mbs, mb_inputs):
            m = loss_mask[mb.rows].to(dev)  # [n, T]
            # [n, T], with gradients
            logp = completion_logprobs(tr.policy, x, ro, mb, tr.banned, a.temperature, dev)
            check_finite(step, logprobs=logp[m].detach())
            old = logp.detach() if old_logp is None else old_logp[mb.rows].to(dev)  # 1 iteration: rho = 1
            ref = ref_logp[mb.rows].to(dev) if ref_logp is not None else None
            loss, stats = grpo.grpo_loss(
                logp,
                old,
                advantages[mb.rows].to(dev),
                m,
                ref,
                beta=a.beta,
                clip_eps_low=a.clip_eps_low,
                clip_eps_high=a.clip_eps_high,
                agg=a.loss_agg,
                total_tokens=global_tokens,
                num_seqs=global_seqs,
                max_len=a.max_new_tokens,
                ratio_level=a.ratio_level,
            )
            check_finite(step, loss=loss.detach())
            # x world undoes the mean over ranks that FSDP's reduce-scatter applies to gradients
            (loss * env.world).backward()
            sums["loss"] += loss.detach().cpu()
            sums["clip_frac"] += (stats["clip_frac"] * m.sum() / global_tokens).cpu()
            if "kl_sum" in stats:
                sums["kl"] += (stats["kl_sum"] / global_tokens).cpu()
        grad_norm = torch.nn.utils.clip_grad_norm_(params, a.grad_clip)
        # FSDP: DTensor
        grad_norm = grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm
        check_finite(step, grad_norm=grad_norm)
        for group in tr.optimizer.param_groups:
            opt_step = (step - 1) * a.num_iterations + it
            group["lr"] = lr_at(
                opt_step, tr.lr, a.warmup_steps, len(tr.tasks_at) * a.num_iterations, a.lr_schedule
            )
        tr.optimizer.step()
        tr.optimizer.zero_grad(set_to_none=True)
        sums["grad_norm"] += grad_norm.detach().float().cpu()
    out = {k: float(all_reduce_sum(float(v), dev)) if k != "grad_norm" else float(v) for k, v in sums.items()}
    out = {k: v / a.num_iterations for k, v in out.items()}
    return out | {"logprob_s": t1 - t0, "update_s": time.perf_counter() - t1}


NO_SIGNAL_STEPS = 5  # consecutive steps of zero reward spread everywhere before the trainer says so


def warn_if_no_signal(tr: Trainer, row: dict) -> None:
    """Say once, naming the likely cause, when every group has had equal rewards for NO_SIGNAL_STEPS steps in
    a row: every advantage is then 0 and the policy gradient too, so the run is only spending time."""
    tr.steps_without_signal = tr.steps_without_signal + 1 if row["zero_std_frac"] >= 1.0 else 0
    if tr.steps_without_signal != NO_SIGNAL_STEPS:
        return
    formats = [v for k, v in row.items() if k.startswith("format/")]
    if formats and max(formats) == 0.0:
        cause = (
            "no completion is well-formed (<think>…</think><answer>…</answer>): start from an SFT checkpoint "
            "(train_sft.py, or omit --model for the embedded warmed-up one)"
        )
    else:
        cause = (
            "every completion of a prompt earns the same reward: the task is too hard or too easy for this "
            "model, or the sampling too narrow: raise --temperature, add --drop-zero-std-groups, or pick "
            "another task"
        )
    tr.run.say(
        f"warning: {NO_SIGNAL_STEPS} steps in a row without reward spread in any group (reward "
        f"{row['reward_mean']:.2f}), so no gradient; likely cause: {cause}"
    )


def reward_summary(scores: list[dict[str, float]], row_tasks: list[str]) -> dict[str, float]:
    """Mean of each reward component (reward/<name>); per task, acc/<task> (the mean of score's "accuracy":
    rewards.ACCURACY, the same under any weights) and format/<task> (fraction with format reward 1).
    scores and row_tasks: one per completion."""
    out: dict[str, float] = {}
    for k in sorted({k for s in scores for k in s} - {"accuracy"}):
        vals = [s[k] for s in scores if k in s]
        out[f"reward/{k}"] = sum(vals) / len(vals)
    for task in sorted(set(row_tasks)):
        rows = [s for s, t in zip(scores, row_tasks) if t == task]
        out[f"acc/{task}"] = sum(s["accuracy"] for s in rows) / len(rows)
        out[f"format/{task}"] = sum(s["format"] >= 1.0 for s in rows) / len(rows)
    return out


def rollout_rows(step: int, ro: Rollouts, advantages: torch.Tensor, G: int) -> list[dict]:
    """One JSON row per completion, for reading what the policy actually wrote and what it earned: with the
    question and the parsed answer (boxes in original pixels), so the viewer needs nothing else."""
    lengths = ro.completion_mask.sum(dim=1).tolist()
    return [
        {
            "step": step,
            "id": ro.records[i // G].id,
            "task": ro.records[i // G].task,
            "sample": i % G,
            "images": ro.records[i // G].images,
            "frame": frame_to_json(ro.frames[i // G]),
            "question": ro.records[i // G].question,
            "answer": ro.records[i // G].answer,
            "completion": ro.texts[i],
            "parsed": parse_sample(
                Sample(ro.records[i // G].task, ro.records[i // G].answer, ro.texts[i], ro.frames[i // G])
            ),
            "rewards": ro.scores[i],
            "advantage": advantages[i].item(),
            "length": lengths[i],
            "truncated": bool(ro.truncated[i]),
        }
        for i in range(len(ro.texts))
    ]


def log_step(
    tr: Trainer,
    step: int,
    tasks: list[str],
    ro: Rollouts,
    advantages: torch.Tensor,
    info: dict,
    update: dict,
    seconds: float,
) -> dict:
    """The step's row over the global batch (every rank's rollouts), written to log.jsonl by rank 0, and
    every completion to rollouts.jsonl each --log-rollouts-every steps."""
    G = tr.args.group_size
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
        **info,
    }
    every = all_gather_list([mine])
    cat = lambda k: [x for m in every for x in m[k]]  # noqa: E731
    tot = lambda k: sum(m[k] for m in every)  # noqa: E731
    rewards_all, lengths = torch.tensor(cat("rewards")), torch.tensor(cat("lengths"), dtype=torch.float32)
    row = {
        "step": step,
        "tasks": ",".join(tasks),
        "prompt_ids": ",".join(map(str, cat("ids"))),  # the global batch, rank after rank, in order
        "reward_mean": rewards_all.mean().item(),
        "reward_std": rewards_all.std(correction=0).item(),
        # reward/, acc/, format/<task>
        **reward_summary(cat("scores"), [t for t in cat("tasks") for _ in range(G)]),
        "loss": update["loss"],
        "kl": update["kl"] if tr.args.beta > 0 else None,  # mean k3 per token; None without a reference
        "clip_frac": update["clip_frac"],
        "entropy": -tot("logp_sum") / tot("logp_n")
        if tot("logp_n")
        else 0.0,  # one-sample estimate: -mean log p
        "completion_len_mean": lengths.mean().item(),
        "completion_len_max": lengths.max().item(),
        "truncated_frac": sum(cat("truncated")) / len(cat("truncated")),
        # of all groups sampled this step, resampled ones included: how much of the batch was dead weight
        "zero_std_frac": tot("zero_std") / tot("groups"),
        "rollouts": max(m["rollouts"] for m in every),
        "grad_norm": update["grad_norm"],
        "lr": tr.optimizer.param_groups[0]["lr"],
        "rollout_s": info["rollout_s"],
        "reward_s": info["reward_s"],
        "logprob_s": update["logprob_s"],
        "update_s": update["update_s"],
        "step_s": seconds,
        "tokens_per_s": tot("sampled_tokens") / max(info["rollout_s"], 1e-9),  # sampled, all ranks
    }
    tr.run.log.write(row)
    if tr.args.log_rollouts_every and step % tr.args.log_rollouts_every == 0:
        for r_row in all_gather_list(rollout_rows(step, ro, advantages, G)):
            tr.run.rollout_log.write(r_row)
    return row


# ----------------------------------------------------------------------------- set-up


def setup(args: Config, run: Run) -> Trainer:
    """The reference model (none with LoRA: see `reference_logprobs`), the data plan (stages, per-task
    streams), the optimiser and the generators; restored from the checkpoint when resuming."""
    ref = None
    if args.beta > 0 and not args.lora_rank:  # the frozen starting point that the KL term pulls back towards
        ref = M.load(run.model_path, device=run.env.device).model.eval().requires_grad_(False)
        if run.use_fsdp:  # sharded too; it only ever runs without gradients
            ref = fsdp.wrap_fsdp(ref, cpu_offload=args.cpu_offload)
    by_task: dict[str, list] = {}
    for rec in run.records:
        by_task.setdefault(rec.task, []).append(rec)
    stages = parse_stages(args, available_tasks(run.records))
    # one stream per task, the same on every rank: each step every rank draws the same global batch and keeps
    # its own slice (rank_slice), so ranks never overlap and N ranks x B prompts see what 1 process x N*B
    # prompts see
    streams = {task: Stream(len(recs), seed=args.seed, name=task) for task, recs in by_task.items()}
    lr = learning_rate(args, run, small=1e-4, large=1e-5)
    trained = [p for p in run.net.parameters() if p.requires_grad]
    if args.optimizer == "sgd":
        optimizer = torch.optim.SGD(trained, lr=lr, momentum=0.9, weight_decay=args.weight_decay)
    else:
        optimizer = torch.optim.AdamW(trained, lr=lr, weight_decay=args.weight_decay)
    generators = {
        "sample": torch.Generator(device=run.env.device).manual_seed(args.seed + run.env.rank),
        "shuffle": torch.Generator().manual_seed(args.seed + run.env.rank),
    }
    tr = Trainer(
        args,
        run,
        run.net,
        ref,
        optimizer,
        lr,
        by_task,
        streams,
        [tasks for tasks, steps in stages for _ in range(steps)],
        generators,
        M.banned_token_ids(fsdp.unwrap(run.net), run.processor),
    )
    if run.resume is not None:
        state = run.restore(optimizer, generators)
        tr.turn = state["turn"]
        for task, st in state["streams"].items():
            streams[task].load_state_dict(st)
    run.say(
        f"stages {stages}, G={args.group_size} x B={args.prompts_per_step} per process, beta {args.beta}, "
        f"lr {lr}"
    )
    return tr


def save(tr: Trainer, step: int, path: Path) -> None:
    state = {"step": step, "turn": tr.turn, "streams": {t: st.state_dict() for t, st in tr.streams.items()}}
    tr.run.save(path, tr.optimizer, state, tr.generators, keep=tr.args.keep)


# ----------------------------------------------------------------------------- the loop


def main(argv: list[str] | None = None) -> dict:
    """Train; returns {"last": the last step's log row, "eval": [{"step", "eval": {task: metrics}}]}."""
    # ---- set-up: flags, output folder, processes, data, models, optimiser (start_run, `setup`)
    args = parse_args(argv)
    run = start_run(
        args,
        "grpo",
        default_data=defaults.train_data,
        default_model=defaults.sft_model,
        logs=("log.jsonl", "rollouts.jsonl"),
        eval_data=args.eval_data or (None if args.data else lambda _: defaults.test_data()),
        eval_records=args.eval_records,
        plan=lambda records: sorted(
            {t for tasks, _ in parse_stages(args, available_tasks(records)) for t in tasks}
        ),
    )
    tr = setup(args, run)
    history: list[dict] = []  # the eval rows, also in log.jsonl
    total = len(tr.tasks_at)
    if run.finished(total):
        return {"last": {}, "eval": []}

    def run_eval(step: int) -> None:  # every rank generates its share greedily; rank 0 scores and logs
        if not run.held_out:
            return
        res = evaluation.evaluate_model(
            tr.policy,
            run.processor,
            run.frame_kind,
            run.held_out,
            args.max_new_tokens,
            run.env.device,
            out_dir=run.out / "eval" / f"step-{step:06d}",
        )
        if res is not None:
            history.append({"step": step, "eval": res["tasks"]})
            run.say(f"held-out at step {step}: " + headline(res["tasks"]))
            run.log.write(history[-1])

    if run.start == 0:
        run_eval(0)
    bar = tqdm(
        range(run.start + 1, total + 1),
        desc="grpo",
        initial=run.start,
        total=total,
        disable=not run.env.main,
        dynamic_ncols=True,
    )
    row: dict = {}
    for step in bar:
        tasks, t_step = tr.tasks_at[step - 1], time.perf_counter()
        if step == run.start + 1 or tasks != tr.tasks_at[step - 2]:
            run.say(
                f"step {step}: training on {'+'.join(tasks)} until step "
                f"{step - 1 + tr.tasks_at[step - 1 :].count(tasks)}"
            )

        # ---- rollout and rewards: B prompts x G completions, each scored (rewards.py)
        ro, info = collect_rollouts(tr, tasks, step)

        # ---- advantages: each completion's reward relative to its group (grpo.py)
        advantages = advantages_of(tr, ro)  # [N]

        # ---- old / reference log-probs, then the clipped policy loss + KL, optimiser step(s)
        update = update_policy(tr, step, ro, advantages)

        # ---- log
        row = log_step(tr, step, tasks, ro, advantages, info, update, time.perf_counter() - t_step)
        warn_if_no_signal(tr, row)
        bar.set_postfix(
            reward=f"{row['reward_mean']:.3f}",
            kl="-" if row["kl"] is None else f"{row['kl']:.4f}",
            clip=f"{row['clip_frac']:.3f}",
            H=f"{row['entropy']:.2f}",
            len=f"{row['completion_len_mean']:.0f}",
            gn=f"{row['grad_norm']:.2f}",
            refresh=False,
        )

        # ---- eval and save; Ctrl-C / SIGTERM: a checkpoint of this step, then stop
        if args.eval_every and step % args.eval_every == 0 and step != total:
            run_eval(step)
        stop = run.stop_requested()
        if (args.save_every and step % args.save_every == 0) or (stop and step < total):
            # atomic: a crash keeps the last complete one
            save(tr, step, run.out / "checkpoints" / f"step-{step:06d}")
        if stop and step < total:
            bar.close()
            run.stop(step)

    if run.start < total or run.resume is None:
        run_eval(total)
        save(tr, total, run.out / "final")  # the model, and a checkpoint like the others
    run.finish()  # plots/*.png, rollouts.html
    return {"last": row, "eval": history}


if __name__ == "__main__":
    main()
