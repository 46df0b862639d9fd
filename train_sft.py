"""Supervised warm-up: teach the model the <think>…</think><answer>…</answer> format on EO instructions.

    python train_sft.py                                   # embedded defaults: tiny model + synthetic set
    python train_sft.py --model Qwen/Qwen2.5-VL-3B-Instruct --data data/instruct.jsonl --lr 1e-5
    torchrun --nproc_per_node=8 train_sft.py --model Qwen/Qwen2.5-VL-3B-Instruct --data data/instruct.jsonl

The loss is the mean negative log-likelihood of the assistant tokens (closing <|im_end|> included),
summed over the global batch and divided explicitly by its token count, so gradient accumulation and
any number of processes take the same step as one big batch.

Outputs in --out: log.jsonl (step, loss, eval_loss, lr, grad_norm, tokens/s), checkpoints/step-N and
final/ (HF safetensors directories that `model.load`, eval.py and train_grpo.py read, each with a resume/
folder: sharded optimizer state, RNG states and data position, so `--resume auto` continues exactly).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from tqdm import tqdm

import data
import model as M
import runtime as R

MULTI_NODE = """\
several GPUs, several nodes (torchrun; the flags are the same as for one process):
  torchrun --nproc_per_node=8 train_sft.py --model Qwen/Qwen2.5-VL-3B-Instruct --data data/instruct.jsonl
  # two nodes of 8 GPUs: the same line on each, --node_rank 0 and 1, --master_addr = node 0's address
  torchrun --nnodes=2 --node_rank=0 --master_addr=10.0.0.1 --master_port=29500 --nproc_per_node=8 train_sft.py ...
  torchrun --nnodes=2 --node_rank=1 --master_addr=10.0.0.1 --master_port=29500 --nproc_per_node=8 train_sft.py ...
With more than one process the model is sharded with FSDP2 (bf16 compute, fp32 master weights on CUDA);
--batch-size is per process, so the global batch is world x batch-size x grad-accum. --out must be on a
filesystem every node sees (each rank writes its optimizer shards). Memory: --grad-ckpt, --cpu-offload.
After a crash, rerun the same command with --resume auto."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, epilog=MULTI_NODE, formatter_class=argparse.RawDescriptionHelpFormatter)
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
    p.add_argument("--keep", type=int, default=0, help="keep the newest N checkpoints/step-*, 0 = all (default: %(default)s)")
    p.add_argument("--resume", default=None, help="a checkpoint directory, or auto: the newest complete one in --out (none: start fresh)")
    p.add_argument("--cpu-offload", action="store_true", help="FSDP with parameters, gradients and optimizer state on the CPU (big models on few GPUs)")
    p.add_argument("--skip-bad", action="store_true", help="skip malformed records (reported) instead of stopping")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    return p.parse_args(argv)


def sft_loss_sum(net: torch.nn.Module, batch: dict) -> tuple[torch.Tensor, int]:
    """Σ −log p(assistant token) over the batch, and how many tokens that is.

    Shapes: input_ids/labels [B, L]; only positions whose *next* label is not -100 are scored."""
    if isinstance(net, M.FSDPRoot):  # run inside the FSDP root's forward (model.py, FSDP2 section)
        return M.call(net, sft_loss_sum, batch)
    embeds, pos = M.prompt_embeddings(net, batch)  # the whole sequence, images scattered in
    hidden, _ = M.decoder(net, embeds, pos, batch["attention_mask"])  # [B, L, D]
    targets = batch["labels"][:, 1:]  # [B, L-1]
    scored = targets != -100
    h = hidden[:, :-1][scored]  # [n, D]: the state before each assistant token
    logp = M.chunked_logprobs(net.lm_head, h.unsqueeze(0), targets[scored].unsqueeze(0))  # [1, n]
    return -logp.sum(), int(scored.sum())


@torch.no_grad()
def eval_loss(net: torch.nn.Module, records: list, processor, frame_kind: str, batch_size: int, device,
              env: R.Dist | None = None) -> float:  # fmt: skip
    """Mean NLL of the assistant tokens of `records`; with several processes each scores its share."""
    env = env or R.Dist(0, 1, 0, torch.device(device))
    mine = records[env.rank :: env.world]
    net.eval()
    total, count = 0.0, 0
    with M.gathered(net), R.autocast(device, net):  # parameters gathered once for the whole pass
        for i in range(0, len(mine), batch_size):
            batch = R.to_device(data.collate_sft(mine[i : i + batch_size], processor, frame_kind), device)
            s, n = sft_loss_sum(net, batch)
            total, count = total + float(s), count + n
    net.train()
    total, count = float(R.all_reduce_sum(total, device)), float(R.all_reduce_sum(count, device))
    return total / max(count, 1)


def full_norm(x) -> float:
    """A grad norm as a float; under FSDP clip_grad_norm_ returns a DTensor."""
    return float(x.full_tensor() if hasattr(x, "full_tensor") else x)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    env = R.init_distributed(group_of_one=args.cpu_offload)
    use_fsdp = env.world > 1 or args.cpu_offload
    R.seed_everything(args.seed + env.rank)
    out = Path(args.out)

    # ---- model and data
    with R.local_rank0_first(env):  # the embedded defaults are built once, not by every rank at once
        model_path = args.model or M.default_model()
        data_path = Path(args.data) if args.data else M.default_data() / "train.jsonl"
    eval_path = Path(args.eval_data) if args.eval_data else data_path.with_name("test.jsonl")
    lr = args.lr if args.lr is not None else (2e-3 if args.model is None else 1e-5)
    tasks = args.tasks.split(",") if args.tasks else None
    resume = R.find_checkpoint(out, args.resume) if args.resume else None
    if args.resume and env.main:
        R.discard_torn(out)
    loaded = M.load(str(resume or model_path), device=env.device, grad_ckpt=args.grad_ckpt, dtype=torch.float32)
    net, processor = loaded.model, loaded.processor
    if args.freeze_vision:
        net.model.visual.requires_grad_(False)
    if use_fsdp:
        net = M.wrap_fsdp(net, activation_checkpointing=args.grad_ckpt, cpu_offload=args.cpu_offload)
    train = data.load_records(data_path, skip_bad=args.skip_bad, tasks=tasks)
    held_out = data.load_records(eval_path, skip_bad=args.skip_bad, tasks=tasks) if eval_path.exists() else []
    held_out = held_out[: args.eval_records]
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=args.weight_decay, betas=(0.9, 0.95))
    # One global order over the whole set; every step each rank takes its own slice of the global batch.
    stream = R.Stream(len(train), seed=args.seed, name="sft")
    start = 0
    if resume is not None:
        state, mine = R.load_checkpoint(resume, net, opt, env)
        start = state["step"]
        stream.load_state_dict(state["stream"])
    if env.main:
        if resume is None:
            (out / "log.jsonl").unlink(missing_ok=True)  # a fresh run starts a fresh log
        else:
            R.truncate_log(out / "log.jsonl", start)  # rows of steps after the checkpoint are redone
    log = R.JsonlLog(out / "log.jsonl", enabled=env.main)
    if env.main:
        print(f"sft: {model_path} ({sum(p.numel() for p in params) / 1e6:.1f}M trainable, attention {loaded.attn_impl}, "
              f"{env.device}, world {env.world}{', FSDP' if use_fsdp else ''}) on {len(train)} records from "
              f"{data_path}, lr {lr}" + (f"; resumed from {resume} at step {start}" if resume else ""))  # fmt: skip

    def checkpoint(step: int, path: Path) -> None:
        R.save_checkpoint(path, net, processor, opt, env, state={"step": step, "stream": stream.state_dict()},
                          rank_state={}, keep=args.keep)  # fmt: skip

    # ---- the loop
    history = {"loss": [], "eval_loss": []}
    if held_out and resume is None:
        start_eval = eval_loss(net, held_out, processor, loaded.frame_kind, args.batch_size, env.device, env)
        history["eval_loss"].append((0, start_eval))
        log.write({"step": 0, "eval_loss": start_eval})
    bar = tqdm(range(start + 1, args.max_steps + 1), desc="sft", disable=not env.main, dynamic_ncols=True)
    for step in bar:
        t0 = time.perf_counter()
        micro = []
        for _ in range(args.grad_accum):
            idx = R.rank_slice(stream.take(env.world * args.batch_size), [args.batch_size] * env.world, env.rank)
            micro.append(R.to_device(data.collate_sft([train[i] for i in idx], processor, loaded.frame_kind), env.device))
        # the loss is normalised by the global number of assistant tokens in this step
        n_local = sum(int((b["labels"][:, 1:] != -100).sum()) for b in micro)
        n_global = float(R.all_reduce_sum(n_local, env.device))
        loss_sum = 0.0
        for b in micro:
            with R.autocast(env.device, net):
                s, _ = sft_loss_sum(net, b)
            (s / n_global * env.world).backward()  # FSDP averages gradients over ranks: x world makes it the sum
            loss_sum += float(s.detach())
        grad_norm = full_norm(torch.nn.utils.clip_grad_norm_(params, args.grad_clip))
        loss = float(R.all_reduce_sum(loss_sum, env.device)) / n_global
        R.check_finite(step, loss=loss, grad_norm=grad_norm)
        for g in opt.param_groups:
            g["lr"] = R.lr_at(step - 1, lr, args.warmup_steps, args.max_steps)
        opt.step()
        opt.zero_grad(set_to_none=True)
        dt = time.perf_counter() - t0
        row = {"step": step, "loss": loss, "lr": opt.param_groups[0]["lr"], "grad_norm": grad_norm,
               "tokens_per_s": n_global / dt, "seconds": dt}  # fmt: skip
        history["loss"].append((step, loss))
        if held_out and (step % args.eval_every == 0 or step == args.max_steps):
            row["eval_loss"] = eval_loss(net, held_out, processor, loaded.frame_kind, args.batch_size, env.device, env)
            history["eval_loss"].append((step, row["eval_loss"]))
        log.write(row)
        bar.set_postfix(loss=f"{loss:.3f}", lr=f"{row['lr']:.1e}", **({"eval": f"{row['eval_loss']:.3f}"} if "eval_loss" in row else {}))
        if args.save_every and step % args.save_every == 0:
            checkpoint(step, out / "checkpoints" / f"step-{step:06d}")

    # ---- save: final/ is the model and a checkpoint (resume/) like the others
    if start < args.max_steps or resume is None:
        checkpoint(args.max_steps, out / "final")
        if env.main:
            print(f"saved {out / 'final'}")
    return history


if __name__ == "__main__":
    main()
