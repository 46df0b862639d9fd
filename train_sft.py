"""Supervised warm-up: teach the model the <think>…</think><answer>…</answer> format on EO instructions.

    python train_sft.py                                   # embedded defaults: tiny model + synthetic set
    python train_sft.py --model Qwen/Qwen2.5-VL-3B-Instruct --data data/instruct.jsonl --lr 1e-5
    torchrun --nproc_per_node=8 train_sft.py --model Qwen/Qwen2.5-VL-3B-Instruct --data data/instruct.jsonl

The loss is the mean negative log-likelihood of the assistant tokens (closing <|im_end|> included),
summed over the global batch and divided explicitly by its token count, so gradient accumulation and
any number of processes take the same step as one big batch.

Outputs in --out: log.jsonl (step, loss, eval_loss, lr, grad_norm, tokens/s), checkpoints/step-N and
final/ (HF safetensors directories that `model.load`, eval.py and train_grpo.py read).
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

import torch
from tqdm import tqdm

import data
import model as M
import runtime as R


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="HF hub id or local dir (default: the embedded tiny model, built on first use)")
    p.add_argument("--data", default=None, help="training JSONL (default: the embedded synthetic train split)")
    p.add_argument("--eval-data", default=None, help="held-out JSONL for eval loss (default: test.jsonl beside --data if present)")
    p.add_argument("--tasks", default=None, help="comma list of tasks to keep (default: all in the file)")
    p.add_argument("--out", default="runs/sft", help="output directory (default: %(default)s)")
    p.add_argument("--max-steps", type=int, default=300, help="optimiser steps (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=8, help="records per micro-batch per process (default: %(default)s)")
    p.add_argument("--grad-accum", type=int, default=1, help="micro-batches per optimiser step (default: %(default)s)")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate (default: 2e-3 for the tiny model, 1e-5 otherwise)")
    p.add_argument("--warmup-steps", type=int, default=20, help="linear warm-up steps (default: %(default)s)")
    p.add_argument("--weight-decay", type=float, default=0.0, help="AdamW weight decay (default: %(default)s)")
    p.add_argument("--grad-clip", type=float, default=1.0, help="max global grad norm (default: %(default)s)")
    p.add_argument("--freeze-vision", action="store_true", help="keep the vision tower frozen")
    p.add_argument("--grad-ckpt", action="store_true", help="gradient checkpointing (less memory, ~30%% slower)")
    p.add_argument("--eval-every", type=int, default=50, help="held-out loss every N steps (default: %(default)s)")
    p.add_argument("--eval-records", type=int, default=64, help="held-out records used for eval loss (default: %(default)s)")
    p.add_argument("--save-every", type=int, default=0, help="checkpoint every N steps, 0 = only at the end (default: %(default)s)")
    p.add_argument("--skip-bad", action="store_true", help="skip malformed records (reported) instead of stopping")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    return p.parse_args(argv)


def sft_loss_sum(net: torch.nn.Module, batch: dict) -> tuple[torch.Tensor, int]:
    """Σ −log p(assistant token) over the batch, and how many tokens that is.

    Shapes: input_ids/labels [B, L]; only positions whose *next* label is not -100 are scored."""
    embeds, pos = M.prompt_embeddings(net, batch)  # the whole sequence, images scattered in
    hidden, _ = M.decoder(net, embeds, pos, batch["attention_mask"])  # [B, L, D]
    targets = batch["labels"][:, 1:]  # [B, L-1]
    scored = targets != -100
    h = hidden[:, :-1][scored]  # [n, D]: the state before each assistant token
    logp = M.chunked_logprobs(net.lm_head, h.unsqueeze(0), targets[scored].unsqueeze(0))  # [1, n]
    return -logp.sum(), int(scored.sum())


@torch.no_grad()
def eval_loss(net: torch.nn.Module, records: list, processor, frame_kind: str, batch_size: int, device) -> float:
    net.eval()
    total, count = 0.0, 0
    for i in range(0, len(records), batch_size):
        batch = to_device(data.collate_sft(records[i : i + batch_size], processor, frame_kind), device)
        s, n = sft_loss_sum(net, batch)
        total, count = total + float(s), count + n
    net.train()
    return total / max(count, 1)


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    env = R.init_distributed()
    R.seed_everything(args.seed + env.rank)

    # ---- model and data
    model_path = args.model or M.default_model()
    data_path = Path(args.data) if args.data else M.default_data() / "train.jsonl"
    eval_path = Path(args.eval_data) if args.eval_data else data_path.with_name("test.jsonl")
    lr = args.lr if args.lr is not None else (2e-3 if args.model is None else 1e-5)
    tasks = args.tasks.split(",") if args.tasks else None
    loaded = M.load(model_path, device=env.device, grad_ckpt=args.grad_ckpt, dtype=torch.float32)
    net, processor = loaded.model, loaded.processor
    if args.freeze_vision:
        net.model.visual.requires_grad_(False)
    train = data.load_records(data_path, skip_bad=args.skip_bad, tasks=tasks)
    train = train[env.rank :: env.world]  # each rank its own shard, no overlap
    held_out = data.load_records(eval_path, skip_bad=args.skip_bad, tasks=tasks) if eval_path.exists() else []
    held_out = held_out[: args.eval_records]
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=args.weight_decay, betas=(0.9, 0.95))
    out = Path(args.out)
    if env.main:
        (out / "log.jsonl").unlink(missing_ok=True)  # a fresh run starts a fresh log
    log = R.JsonlLog(out / "log.jsonl", enabled=env.main)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if env.device.type == "cuda" else torch.autocast("cpu", enabled=False)
    if env.main:
        print(f"sft: {model_path} ({sum(p.numel() for p in params) / 1e6:.1f}M trainable, attention {loaded.attn_impl}, "
              f"{env.device}, world {env.world}) on {len(train)} records/rank from {data_path}, lr {lr}")  # fmt: skip

    # ---- the loop
    rng = random.Random(args.seed)
    order: list[int] = []
    history = {"loss": [], "eval_loss": []}
    start_eval = eval_loss(net, held_out, processor, loaded.frame_kind, args.batch_size, env.device) if held_out else None
    if start_eval is not None:
        history["eval_loss"].append((0, start_eval))
        log.write({"step": 0, "eval_loss": start_eval})
    bar = tqdm(range(1, args.max_steps + 1), desc="sft", disable=not env.main, dynamic_ncols=True)
    for step in bar:
        t0 = time.perf_counter()
        micro = []
        for _ in range(args.grad_accum):
            if len(order) < args.batch_size:  # next epoch: a fresh shuffle of this rank's shard
                perm = list(range(len(train)))
                rng.shuffle(perm)
                order += perm
            idx, order = order[: args.batch_size], order[args.batch_size :]
            micro.append(to_device(data.collate_sft([train[i] for i in idx], processor, loaded.frame_kind), env.device))
        # the loss is normalised by the global number of assistant tokens in this step
        n_local = sum(int((b["labels"][:, 1:] != -100).sum()) for b in micro)
        n_global = float(R.all_reduce_sum(n_local, env.device))
        loss_sum = 0.0
        for b in micro:
            with autocast:
                s, _ = sft_loss_sum(net, b)
            (s / n_global * env.world).backward()  # DDP/FSDP average gradients over ranks: undo it
            loss_sum += float(s.detach())
        grad_norm = torch.nn.utils.clip_grad_norm_(params, args.grad_clip)
        loss = float(R.all_reduce_sum(loss_sum, env.device)) / n_global
        R.check_finite(step, loss=loss, grad_norm=grad_norm)
        for g in opt.param_groups:
            g["lr"] = R.lr_at(step - 1, lr, args.warmup_steps, args.max_steps)
        opt.step()
        opt.zero_grad(set_to_none=True)
        dt = time.perf_counter() - t0
        row = {"step": step, "loss": loss, "lr": opt.param_groups[0]["lr"], "grad_norm": float(grad_norm),
               "tokens_per_s": n_global / dt, "seconds": dt}  # fmt: skip
        history["loss"].append((step, loss))
        if held_out and (step % args.eval_every == 0 or step == args.max_steps):
            row["eval_loss"] = eval_loss(net, held_out, processor, loaded.frame_kind, args.batch_size, env.device)
            history["eval_loss"].append((step, row["eval_loss"]))
        log.write(row)
        bar.set_postfix(loss=f"{loss:.3f}", lr=f"{row['lr']:.1e}", **({"eval": f"{row['eval_loss']:.3f}"} if "eval_loss" in row else {}))
        if env.main and args.save_every and step % args.save_every == 0:
            M.save(net, processor, out / "checkpoints" / f"step-{step:06d}")

    # ---- save
    if env.main:
        M.save(net, processor, out / "final")
        print(f"saved {out / 'final'}")
    return history


if __name__ == "__main__":
    main()
