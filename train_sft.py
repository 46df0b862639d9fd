"""Supervised warm-up: teach the model the <think>…</think><answer>…</answer> format on EO instructions.

    python train_sft.py                                   # embedded defaults: tiny model + synthetic set
    python train_sft.py --model Qwen/Qwen2.5-VL-3B-Instruct --data data/instruct.jsonl --lr 1e-5
    torchrun --nproc_per_node=8 train_sft.py --model Qwen/Qwen2.5-VL-3B-Instruct --data data/instruct.jsonl
    python train_sft.py --model Qwen/Qwen2.5-VL-3B-Instruct --data data/instruct.jsonl --lora-rank 16 --lr
    1e-4

The loss is the mean negative log-likelihood of the assistant tokens (closing <|im_end|> included),
summed over the global batch and divided explicitly by its token count, so gradient accumulation and
any number of processes take the same step as one big batch:

    loss = Σ_{assistant tokens t of the global batch} -log p(t | prompt, t_<) / (assistant tokens in the
    global batch)

Outputs in --out: log.jsonl (step, loss, eval_loss, lr, grad_norm, tokens/s), checkpoints/step-NNNNNN and
final/ (HF safetensors directories that `model.load`, eval.py and train_grpo.py read, each with a resume/
folder: sharded optimizer state, RNG states and data position, so `--resume auto` continues exactly; with
--lora-rank the model there is the merged one, and adapter/ holds the adapters in PEFT's layout, lora.py).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

import data
import model as M
from embedded import defaults
from geovlm import fsdp
from geovlm.distributed import Dist, all_reduce_sum
from geovlm.flags import (
    Count,
    ImageryFlags,
    LoRAFlags,
    OptimiserFlags,
    Positive,
    PositiveInt,
    RunFlags,
    lora_implies,
    multi_node_help,
    parse_config,
)
from geovlm.logs import check_finite
from geovlm.run import learning_rate, start_run
from geovlm.schedule import Stream, lr_at, rank_slice
from geovlm.tasks import TASKS
from model import to_device


@dataclass
class Config(RunFlags, OptimiserFlags, LoRAFlags, ImageryFlags):
    """Every flag of train_sft.py: a field each, its comment the --help text (geovlm/flags.py); the shared
    groups are declared once in geovlm/flags.py."""

    # ---- what to train
    model: str | None = None  # hub id or local checkpoint directory; None: the embedded tiny model
    # (embedded.defaults.base_model, built on first use)
    tasks: str | None = None  # comma list of tasks to keep; None: all in the file
    max_steps: PositiveInt = 300  # optimiser steps
    batch_size: PositiveInt = 8  # records per micro-batch per process
    grad_accum: PositiveInt = 1  # micro-batches per optimiser step
    out: str = "runs/sft"  # log.jsonl, checkpoints/ and final/ go here; a folder that holds another run is
    # refused unless --resume or --overwrite
    eval_data: str | None = None  # held-out JSONL for the eval loss; None: test.jsonl beside --data when
    # there is one
    eval_every: PositiveInt = 50  # held-out loss every N steps (and at the end)
    eval_records: Count = 64  # held-out records used for the eval loss; 0 = none

    # ---- optimiser and memory
    lr: Positive | None = None  # peak AdamW learning rate; None: 2e-3 for a small (< 100M parameter) model
    # such as the embedded tiny one, 1e-5 otherwise
    warmup_steps: Count = 20  # linear warm-up, in optimiser steps


def parse_args(argv: list[str] | None = None) -> Config:
    """The flags, checked (one line for a mistake), with what they imply filled in (args.implied)."""
    args, parser = parse_config(
        Config, argv, description=__doc__, epilog=multi_node_help("train_sft.py", "--batch-size")
    )
    try:
        unknown = [t for t in (args.tasks or "").split(",") if t and t not in TASKS]
        if unknown:
            raise ValueError(f"--tasks: no task named {', '.join(unknown)}; the tasks: {', '.join(TASKS)}")
        args.implied = lora_implies(args)
    except ValueError as e:
        parser.error(str(e))
    return args


def sft_loss_sum(net: torch.nn.Module, batch: dict) -> tuple[torch.Tensor, int]:
    """Σ −log p(assistant token) over the batch, and how many tokens that is.

    Shapes: input_ids/labels [B, L]; only positions whose *next* label is not -100 are scored. Called
    through fsdp.call, so `net` is the HF model whether or not it is sharded."""
    embeds, pos = M.prompt_embeddings(net, batch)  # the whole sequence, images scattered in
    hidden, _ = M.decoder(net, embeds, pos, batch["attention_mask"])  # [B, L, D]
    targets = batch["labels"][:, 1:]  # [B, L-1]
    scored = targets != -100
    h = hidden[:, :-1][scored]  # [n, D]: the state before each assistant token
    logp = M.head_logprobs(net.lm_head, h.unsqueeze(0), targets[scored].unsqueeze(0))  # [1, n]
    return -logp.sum(), int(scored.sum())


@torch.no_grad()
def eval_loss(
    net: torch.nn.Module,
    records: list,
    processor,
    frame_kind: str,
    batch_size: int,
    device,
    env: Dist | None = None,
) -> float:
    """Mean NLL of the assistant tokens of `records`; with several processes each scores its share."""
    env = env or Dist(0, 1, 0, torch.device(device))
    mine = records[env.rank :: env.world]
    net.eval()
    total, count = 0.0, 0
    with fsdp.gathered(net), fsdp.autocast(device, net):  # parameters gathered once for the whole pass
        for i in range(0, len(mine), batch_size):
            batch = to_device(data.collate_sft(mine[i : i + batch_size], processor, frame_kind), device)
            s, n = fsdp.call(net, sft_loss_sum, batch)
            total, count = total + float(s), count + n
    net.train()
    total, count = float(all_reduce_sum(total, device)), float(all_reduce_sum(count, device))
    return total / max(count, 1)


def train_step(
    net: torch.nn.Module,
    opt: torch.optim.Optimizer,
    micro: list[dict],
    env: Dist,
    grad_clip: float,
    step: int,
) -> tuple[float, float, float]:
    """One optimiser step over the micro-batches: (loss, grad norm, assistant tokens in the global batch)."""
    n_local = sum(int((b["labels"][:, 1:] != -100).sum()) for b in micro)
    n_global = float(all_reduce_sum(n_local, env.device))  # the loss is normalised by the global token count
    loss_sum = 0.0
    for b in micro:
        with fsdp.autocast(env.device, net):
            s, _ = fsdp.call(net, sft_loss_sum, b)
        (s / n_global * env.world).backward()  # FSDP averages gradients over ranks: x world makes it the sum
        loss_sum += float(s.detach())
    params = [p for group in opt.param_groups for p in group["params"]]
    grad_norm = torch.nn.utils.clip_grad_norm_(params, grad_clip)
    # FSDP: DTensor
    grad_norm = float(grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm)
    loss = float(all_reduce_sum(loss_sum, env.device)) / n_global
    check_finite(step, loss=loss, grad_norm=grad_norm)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss, grad_norm, n_global


def main(argv: list[str] | None = None) -> dict:
    """Train; returns {"loss": [(step, loss)], "eval_loss": [(step, held-out loss)]}."""
    # ---- set-up: flags, output folder, processes, data, model (start_run), optimiser, data order
    args = parse_args(argv)

    # --eval-data, else test.jsonl beside the data; none at 0 records
    def held_out_path(data_path: str) -> str | None:
        beside = Path(data_path).with_name("test.jsonl")
        return None if not args.eval_records else args.eval_data or (str(beside) if beside.exists() else None)

    tasks = args.tasks.split(",") if args.tasks else None
    run = start_run(
        args,
        "sft",
        default_data=defaults.train_data,
        default_model=defaults.base_model,
        tasks=tasks,
        eval_data=held_out_path,
        eval_records=args.eval_records,
    )
    net, env = run.net, run.env
    lr = learning_rate(args, run, small=2e-3, large=1e-5)
    opt = torch.optim.AdamW(
        [p for p in net.parameters() if p.requires_grad],
        lr=lr,
        weight_decay=args.weight_decay,
        betas=(0.9, 0.95),
    )
    # one global order; each rank takes its slice
    stream = Stream(len(run.records), seed=args.seed, name="sft")
    if run.resume is not None:
        stream.load_state_dict(run.restore(opt)["stream"])
    run.say(f"lr {lr}, batch {args.batch_size} x {args.grad_accum} x {env.world}")

    def evaluate() -> float:
        return eval_loss(net, run.held_out, run.processor, run.frame_kind, args.batch_size, env.device, env)

    def save(step: int, path: Path) -> None:
        run.save(path, opt, {"step": step, "stream": stream.state_dict()}, keep=args.keep)

    history = {"loss": [], "eval_loss": []}
    if run.finished(args.max_steps):
        return history
    if run.held_out and run.start == 0:
        history["eval_loss"].append((0, evaluate()))
        run.log.write({"step": 0, "eval_loss": history["eval_loss"][-1][1]})
    bar = tqdm(
        range(run.start + 1, args.max_steps + 1),
        desc="sft",
        initial=run.start,
        total=args.max_steps,
        disable=not env.main,
        dynamic_ncols=True,
    )
    for step in bar:
        # ---- one step: the global batch drawn in order, each rank its slice, accumulated micro-batches
        t0 = time.perf_counter()
        micro = []
        for _ in range(args.grad_accum):
            idx = rank_slice(
                stream.take(env.world * args.batch_size), [args.batch_size] * env.world, env.rank
            )
            micro.append(
                to_device(
                    data.collate_sft([run.records[i] for i in idx], run.processor, run.frame_kind), env.device
                )
            )
        for g in opt.param_groups:
            g["lr"] = lr_at(step - 1, lr, args.warmup_steps, args.max_steps)
        loss, grad_norm, n_tokens = train_step(net, opt, micro, env, args.grad_clip, step)

        # ---- log, eval
        dt = time.perf_counter() - t0
        row = {
            "step": step,
            "loss": loss,
            "lr": opt.param_groups[0]["lr"],
            "grad_norm": grad_norm,
            "tokens_per_s": n_tokens / dt,
            "seconds": dt,
        }
        history["loss"].append((step, loss))
        if run.held_out and (step % args.eval_every == 0 or step == args.max_steps):
            row["eval_loss"] = evaluate()
            history["eval_loss"].append((step, row["eval_loss"]))
        run.log.write(row)
        bar.set_postfix(
            loss=f"{loss:.3f}",
            lr=f"{row['lr']:.1e}",
            **({"eval": f"{row['eval_loss']:.3f}"} if "eval_loss" in row else {}),
        )

        # ---- save; Ctrl-C / SIGTERM: a checkpoint of this step, then stop
        stop = run.stop_requested()
        if (args.save_every and step % args.save_every == 0) or (stop and step < args.max_steps):
            save(step, run.out / "checkpoints" / f"step-{step:06d}")
        if stop and step < args.max_steps:
            bar.close()
            run.stop(step)

    # ---- final/: the model, and a checkpoint (resume/) like the others
    if run.start < args.max_steps or run.resume is None:
        save(args.max_steps, run.out / "final")
    run.finish()  # plots/*.png
    return history


if __name__ == "__main__":
    main()
