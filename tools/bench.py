"""Performance: our rollout, GRPO step and log-probs against the usual tools, side by side in one run.

    python tools/bench.py                          # rows rollout, grpo, lora, logprobs on this machine
                                                   # (several minutes)
    python tools/bench.py --quick                  # reduced sizes and repetitions: a plumbing check,
                                                   # not a measurement
    python tools/bench.py --rows rollout --reps 9  # one row, more repetitions
    python tools/bench.py --gpu                    # CUDA: the real Qwen2.5-VL-3B shape (random weights, bf16)

Absolute times on shared machines are noise; ratios measured together are not. So every row runs its two
sides alternately (A, B, A, B, ...) after warm-up runs, with the same seeds, and reports the median and the
min-max of each side and of the paired ratios (rep i of A against rep i of B). The table is printed and
written as JSON to --out (and as markdown next to it) for the README. CPU rows run on one torch thread
unless --threads says otherwise (see main for why).

Rows (each side does exactly the same work):
  rollout   model.sample vs HF generate(num_return_sequences=G): same prompts and images, same G, exactly
            B*G*T new tokens on both sides (EOS disabled), full-vocabulary sampling at temperature 1.
  grpo      one GRPO step (rollout + rewards + advantages + reference pass + policy loss + AdamW step):
            train_grpo.main itself vs TRL's GRPOTrainer on the same tiny model, prompts, G, lengths, beta, lr,
            clip, loss; TRL only here (pip install -r requirements-bench.txt); the row says so without it.
  lora      one GRPO update (reference log-probs + policy forward/backward + AdamW) with LoRA (--lora-rank 8)
            vs full fine-tuning on the same batch: step time alternated in one process, peak memory (RSS
            growth, weights included) in one fresh subprocess per side.
  logprobs  peak memory of kernels.fused_head_logprobs (the head of token_logprobs) vs the naive full-logits
            computation at Qwen's real vocabulary, forward + backward, one fresh subprocess per measurement,
            in each trainer's precision setting (PRECISIONS).
  gpu       (--gpu, CUDA) the Qwen2.5-VL-3B shape: fwd+bwd tokens/s and MFU, rollout of 64 sequences
            (ours vs HF generate) with decode bandwidth utilisation, GRPO update MFU, peak memory, which
            attention kernel ran. `--gpu-shape tiny --device cpu` runs the same code small, for tests.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import inspect
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: its modules

from importlib.metadata import PackageNotFoundError, version

import numpy as np
import transformers
from PIL import Image
from torch.profiler import ProfilerActivity, profile
from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, TrainerCallback

import data  # noqa: E402
import grpo  # noqa: E402
import model as M  # noqa: E402
import rewards  # noqa: E402
import train_grpo as TG
from embedded import (
    defaults,  # noqa: E402
    tiny,  # noqa: E402
)
from geovlm import (
    kernels,
    lora,  # noqa: E402
)

ROWS = ("rollout", "grpo", "lora", "logprobs", "gpu")
QWEN_VOCAB = 151_936
BENCH_PIXELS = 448 * 448  # the tiny processor stops at 280 px; the bench feeds 448 px images unshrunk

# dense bf16 peak (TFLOP/s) and memory bandwidth (TB/s) per card, matched on torch.cuda.get_device_name
CARDS = [  # (name pattern, bf16 TFLOP/s, TB/s), first match wins
    ("H100 PCIe", 756.0, 2.0),
    ("H100 NVL", 835.0, 3.9),
    ("GH200", 989.0, 4.0),
    ("H200", 989.0, 4.8),
    ("H100", 989.0, 3.35),
    ("A100.*80GB", 312.0, 2.0),
    ("A100", 312.0, 1.555),
    ("L40S", 362.0, 0.864),
]


# ----------------------------------------------------------------------------- timing and statistics


def sync(device: torch.device | str = "cpu") -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def alternate(
    fns: dict, reps: int, warmup: int, device: torch.device | str = "cpu"
) -> dict[str, list[float]]:
    """Seconds of each callable, run in turn A, B, A, B, ... `warmup` rounds first (discarded). Interleaving
    spreads whatever else the machine is doing over both sides instead of onto one."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for i in range(warmup + reps):
        for name, fn in fns.items():
            gc.collect()
            sync(device)
            t0 = time.perf_counter()
            fn()
            sync(device)
            if i >= warmup:
                times[name].append(time.perf_counter() - t0)
    return times


def stats(xs: list[float]) -> dict:
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "n": len(xs)}


def paired(a: list[float], b: list[float], f) -> dict:
    """Statistics of f(a_i, b_i) over the repetitions measured together."""
    return stats([f(x, y) for x, y in zip(a, b)])


def fmt_stat(s: dict | None, unit: str = "", digits: int = 3) -> str:
    if not s:
        return ""

    def g(v: float) -> str:
        return f"{v:.{digits}g}" if abs(v) < 10**digits else f"{v:,.0f}"

    spread = f" [{g(s['min'])}–{g(s['max'])}]" if s.get("n", 1) > 1 else ""
    return f"{g(s['median'])}{unit}{spread}"


def row(name: str, case: str, ours: dict | None, base: dict | None, ratio: dict | None, **kw) -> dict:
    return {"row": name, "case": case, "ours": ours, "baseline": base, "ratio": ratio, **kw}


# --------------------------------------------------------------------------- the fixture: tiny model + images


@dataclass
class Fixture:
    dir: Path
    model_dir: str
    jsonl: Path
    records: list  # data.Record, grouped by image size
    model: torch.nn.Module
    processor: object
    frame_kind: str

    def records_of(self, size: int) -> list:
        return [r for r in self.records if r.image_sizes[0] == (size, size)]


def make_images(out_dir: Path, sizes: list[int], per_size: int, seed: int = 0) -> Path:
    """Square synthetic scenes (smooth ground + a few bright rectangles) and one record per image, mixing
    classification, counting and grounding so the reward functions all do their usual work."""

    rng = np.random.default_rng(seed)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    lines = []
    for size in sizes:
        for k in range(per_size):
            ground = rng.integers(40, 160, (size // 16 + 1, size // 16 + 1, 3)).astype(np.uint8)
            img = np.kron(ground, np.ones((16, 16, 1), np.uint8))[:size, :size].copy()
            boxes = []
            for _ in range(3):
                w, h = (int(v) for v in rng.integers(size // 12, size // 5, 2))
                x, y = int(rng.integers(0, size - w)), int(rng.integers(0, size - h))
                img[y : y + h, x : x + w] = rng.integers(180, 255, 3)
                boxes.append([x, y, x + w, y + h])
            name = f"images/{size}_{k}.png"
            Image.fromarray(img).save(out_dir / name)
            task = ("classification", "counting", "grounding")[k % 3]
            question, answer = {
                "classification": ("What is the main land-use class of this scene?", "industrial"),
                "counting": ("How many storage tanks are in the image?", len(boxes)),
                "grounding": ("Where is the largest bright building?", [boxes[0]]),
            }[task]
            lines.append(
                {
                    "id": f"bench_{size}_{k}",
                    "task": task,
                    "images": [name],
                    "question": question,
                    "answer": answer,
                }
            )
    path = out_dir / "bench.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


def widen_processor(model_dir: str, max_pixels: int = BENCH_PIXELS) -> None:
    """Raise the saved image processor's pixel budget so 448 px images reach the model unshrunk. Written into
    the checkpoint, so ours, HF generate, TRL and data.model_size (the coordinate frames) all read one
    value."""
    for name in ("processor_config.json", "preprocessor_config.json"):  # newer / older transformers layouts
        path = Path(model_dir) / name
        if not path.exists():
            continue
        cfg = json.loads(path.read_text())
        ip = cfg.get("image_processor", cfg)
        if isinstance(ip.get("size"), dict):
            ip["size"]["longest_edge"] = max_pixels
        if "max_pixels" in ip:
            ip["max_pixels"] = max_pixels
        path.write_text(json.dumps(cfg, indent=2))


def build_fixture(work: Path, sizes: list[int], per_size: int) -> Fixture:
    jsonl = make_images(work / "data", sizes, per_size)
    model_dir = tiny.build_tiny(work / "tiny", defaults.tokenizer_corpus([jsonl]), seed=0)
    widen_processor(model_dir)
    loaded = M.load(model_dir, device="cpu", dtype=torch.float32)
    loaded.model.eval()
    recs = data.load_records(jsonl)
    return Fixture(work, model_dir, jsonl, recs, loaded.model, loaded.processor, loaded.frame_kind)


# ----------------------------------------------------------------------------- row 1: rollout tokens/s


def rollout_pair(
    m: torch.nn.Module,
    batch: dict,
    G: int,
    new_tokens: int,
    banned: torch.Tensor,
    pad: int,
    static_cache: bool = False,
):
    """(ours, hf): two callables that each sample exactly G * new_tokens tokens per prompt of `batch`."""
    B, P = batch["input_ids"].shape

    def ours():
        gen = torch.Generator(batch["input_ids"].device).manual_seed(0)
        # eos_ids=[]: no early stop, so both sides decode exactly T tokens per sequence
        ro = M.sample(
            m,
            batch,
            G,
            new_tokens,
            generator=gen,
            eos_ids=[],
            banned=banned,
            pad_id=pad,
            static_cache=static_cache,
        )
        assert ro.completion_ids.shape == (B * G, new_tokens) and bool(ro.completion_mask.all())

    def hf():
        torch.manual_seed(0)
        with torch.no_grad():  # top_k=0: transformers 5.x otherwise applies top_k=50 on do_sample
            seqs = m.generate(
                **batch,
                do_sample=True,
                num_return_sequences=G,
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                temperature=1.0,
                top_k=0,
                top_p=1.0,
                suppress_tokens=banned.tolist(),
                pad_token_id=pad,
            )
        assert seqs.shape == (B * G, P + new_tokens)

    return ours, hf


def bench_rollout(
    fx: Fixture, sizes: list[int], groups: list[int], prompts: int, new_tokens: int, reps: int, warmup: int
) -> list[dict]:
    """model.sample against HF generate on the same left-padded prompt batch, exactly B*G*T tokens each."""
    m, proc = fx.model, fx.processor
    banned = M.banned_token_ids(m, proc)
    pad = proc.tokenizer.pad_token_id
    out = []
    for size in sizes:
        batch = data.collate_prompts(fx.records_of(size)[:prompts], proc, fx.frame_kind).inputs
        B, P = batch["input_ids"].shape
        for G in groups:
            ours, hf = rollout_pair(m, batch, G, new_tokens, banned, pad)
            t = alternate({"ours": ours, "hf": hf}, reps, warmup)
            n = B * G * new_tokens
            tps = lambda ts, n=n: stats([n / x for x in ts])  # noqa: E731
            case = f"{size} px, B={B}, G={G}, T={new_tokens} ({n} tok, prompt {P})"
            speedup = paired(t["ours"], t["hf"], lambda a, b: b / a)
            target = ">= 1.5x" if (G == 8 and size == 448 and new_tokens == 64) else ""
            out.append(
                row(
                    "rollout tokens/s",
                    case,
                    tps(t["ours"]),
                    tps(t["hf"]),
                    speedup,
                    baseline_name="HF generate",
                    ratio_name="speedup",
                    target=target,
                    met=(speedup["median"] >= 1.5) if target else None,
                )
            )
            print(f"  rollout {case}: speedup {fmt_stat(speedup, 'x')}", flush=True)
    return out


# ----------------------------------------------------------------------------- row 2: GRPO step vs TRL


TRL_HINT = (
    "get it with: pip install -r requirements-bench.txt --constraint <(pip freeze | grep -iE "
    "'^(torch|torchvision|transformers|tokenizers)==')  (TRL for this row only; torch/transformers "
    "stay as they are)"
)


def bench_grpo(
    fx: Fixture,
    size: int,
    prompts: int,
    G: int,
    new_tokens: int,
    beta: float,
    lr: float,
    reps: int,
    warmup: int,
) -> list[dict]:
    """One GRPO step of ours (train_grpo.main itself, one step per call, its own step_s) and of TRL's
    GRPOTrainer, alternated step by step: our step runs inside TRL's on_step_end callback and TRL's time is
    what passes between callbacks. Same checkpoint, prompts and images (same chat template and pixel budget),
    G, T, beta, lr, AdamW, grad clip, clip range (0.2 / 0.28), token-mean loss, group-std advantages, one
    iteration (no old-policy pass), one micro-batch of all B*G completions, no activation checkpointing."""
    case = f"{size} px, B={prompts}, G={G}, T={new_tokens}, beta={beta}, lr={lr}, 1 iteration"
    try:
        import trl
        from datasets import Dataset
        from trl import GRPOConfig, GRPOTrainer
    except ImportError as e:
        msg = f"skipped: TRL not importable ({e}); pip install -r requirements-bench.txt (see its header)"
        print(f"  grpo {msg}\n  {TRL_HINT}", flush=True)
        return [row("GRPO step s", case, None, None, None, note=msg, target="<= 0.5x")]

    recs = fx.records_of(size)[:prompts]
    jsonl = fx.dir / "data" / "grpo.jsonl"  # just these prompts, so train_grpo draws exactly them
    jsonl.write_text(
        "".join(fx.jsonl.read_text().splitlines(keepends=True)[fx.records.index(r)] for r in recs)
    )
    steps = warmup + reps
    times: dict[str, list[float]] = {"ours": [], "trl": []}
    parts: list[dict] = []

    def ours_step(k: int) -> None:
        argv = [
            "--model",
            fx.model_dir,
            "--data",
            str(jsonl),
            "--task",
            "all",
            "--max-steps",
            "1",
            "--group-size",
            str(G),
            "--prompts-per-step",
            str(prompts),
            "--max-new-tokens",
            str(new_tokens),
            "--temperature",
            "1.0",
            "--top-k",
            "0",
            "--top-p",
            "1.0",
            "--beta",
            str(beta),
            "--lr",
            str(lr),
            "--num-iterations",
            "1",
            "--clip-eps-low",
            "0.2",
            "--clip-eps-high",
            "0.28",
            "--loss-agg",
            "token-mean",
            "--adv-scale",
            "group",
            "--grad-clip",
            "1.0",
            "--weight-decay",
            "0",
            "--micro-batch-size",
            str(prompts * G),
            "--log-rollouts-every",
            "0",
            "--seed",
            str(k),
            "--out",
            str(fx.dir / "ours"),
            "--overwrite",
            "--save-every",
            "0",
        ]
        # EOS off (as TRL's min_new_tokens=T): both sides sample and train on exactly B*G*T tokens
        with patched(M, "eos_token_ids", lambda *a, **k: []), quiet():
            last = TG.main(argv)["last"]
        assert last.get("completion_len_mean", new_tokens) == new_tokens, "EOS was not disabled: unequal work"
        times["ours"].append(last["step_s"])
        parts.append({k: last[k] for k in ("rollout_s", "reward_s", "logprob_s", "update_s") if k in last})

    frames = {r.id: data.frames_of(r, fx.frame_kind, fx.processor.image_processor)[0] for r in recs}
    by_id = {r.id: r for r in recs}

    def trl_reward(completions, rid, **_) -> list[float]:  # the same task rewards as ours
        return [
            rewards.score(by_id[i].task, c[0]["content"], by_id[i].answer, frames[i])["total"]
            for c, i in zip(completions, rid)
        ]

    rows = [
        {
            "prompt": [
                {"role": "system", "content": data.SYSTEM_PROMPT},
                {"role": "user", "content": r.question},
            ],
            "image": data.load_image(r.images[0]),
            "rid": r.id,
        }
        for r in recs
    ] * (steps + 1)

    class Alternate(TrainerCallback):
        def on_train_begin(self, *a, **k):
            self.mark = time.perf_counter()

        def on_step_end(self, *a, **k):
            times["trl"].append(time.perf_counter() - self.mark)
            gc.collect()
            ours_step(len(times["trl"]))
            gc.collect()
            self.mark = time.perf_counter()

    cfg = GRPOConfig(
        output_dir=str(fx.dir / "trl"),
        per_device_train_batch_size=prompts * G,
        gradient_accumulation_steps=1,
        num_generations=G,
        max_completion_length=new_tokens,
        generation_kwargs={"min_new_tokens": new_tokens},
        temperature=1.0,
        top_k=0,
        top_p=1.0,
        beta=beta,
        num_iterations=1,
        epsilon=0.2,
        epsilon_high=0.28,
        loss_type="dapo",
        scale_rewards="group",
        learning_rate=lr,
        lr_scheduler_type="constant",
        weight_decay=0.0,
        max_grad_norm=1.0,
        max_steps=steps,
        bf16=False,
        use_cpu=True,
        gradient_checkpointing=False,
        shuffle_dataset=False,
        report_to="none",
        logging_strategy="no",
        save_strategy="no",
        disable_tqdm=True,
        log_completions=False,
        dataloader_num_workers=0,
        seed=0,
    )
    trl_model = M.load(fx.model_dir, device="cpu", dtype=torch.float32).model
    trainer = GRPOTrainer(
        model=trl_model,
        reward_funcs=[trl_reward],
        args=cfg,
        train_dataset=Dataset.from_list(rows),
        processing_class=fx.processor,
        callbacks=[Alternate()],
    )
    with quiet():  # its end-of-training summary and warnings are not part of the table
        trainer.train()
    t_ours, t_trl = times["ours"][warmup:], times["trl"][warmup:]
    ratio = paired(t_ours, t_trl, lambda a, b: a / b)
    split = {k: statistics.median(p[k] for p in parts[warmup:]) for k in parts[-1]}
    note = "ours: " + ", ".join(f"{k[:-2]} {v:.2f}s" for k, v in split.items())
    print(f"  grpo {case}: ours/TRL {fmt_stat(ratio, 'x')} ({note})", flush=True)
    return [
        row(
            "GRPO step s",
            case,
            stats(t_ours),
            stats(t_trl),
            ratio,
            baseline_name=f"TRL {trl.__version__} GRPOTrainer",
            ratio_name="ours/TRL",
            target="<= 0.5x",
            met=ratio["median"] <= 0.5,
            note=note,
            parts=split,
        )
    ]


@contextlib.contextmanager
def patched(obj, name: str, value):
    old = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, old)


@contextlib.contextmanager
def quiet():
    """Silence a trainer's progress bars and prints while it is being timed."""
    with open(os.devnull, "w") as null, contextlib.redirect_stdout(null), contextlib.redirect_stderr(null):
        yield


# ----------------------------------------------------------------------------- row 3: LoRA vs full update

LORA_RANK = 8


def update_step(spec: dict, loaded_hook=None):
    """One GRPO update as train_grpo runs it at beta > 0, on a fixed batch, as a callable: reference log-probs
    (full: a second, frozen copy of the model; LoRA: the policy with its adapters off), policy forward +
    backward, grad clip, AdamW. spec["rank"] 0 = full fine-tuning (every weight trained, as by default).
    The batch is sampled before any adapter exists, so both sides train on the same completions.
    loaded_hook(): called once the policy's weights (and the libraries) are loaded."""
    loaded = M.load(spec["model_dir"], device="cpu", dtype=torch.float32)
    if loaded_hook is not None:
        loaded_hook()
    net, proc, G, T, rank = loaded.model.eval(), loaded.processor, spec["G"], spec["T"], spec["rank"]
    recs = [r for r in data.load_records(spec["jsonl"]) if r.image_sizes[0] == (spec["size"],) * 2][
        : spec["prompts"]
    ]
    x = data.collate_prompts(recs, proc, loaded.frame_kind).inputs
    banned = M.banned_token_ids(net, proc)
    ro = M.sample(net, x, G, T, generator=torch.Generator().manual_seed(0), eos_ids=[], banned=banned)
    ids, mask = ro.completion_ids, ro.completion_mask
    ref = None
    if rank:
        lora.apply(net, rank, 2.0 * rank)
    else:
        ref = M.load(spec["model_dir"], device="cpu", dtype=torch.float32).model.eval().requires_grad_(False)
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.0)
    adv = torch.randn(len(ids), generator=torch.Generator().manual_seed(1))
    logprobs = lambda m: M.token_logprobs(m, x, ids, mask, G, 1.0, banned)  # noqa: E731

    def update() -> None:
        with torch.no_grad(), lora.disabled(net) if rank else contextlib.nullcontext():
            ref_lp = logprobs(ref if ref is not None else net)
        net.train()
        lp = logprobs(net)
        loss, _ = grpo.grpo_loss(lp, lp.detach(), adv, mask, ref_lp, beta=spec["beta"])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        net.eval()

    return update, sum(p.numel() for p in params)


def update_child(spec: dict) -> dict:
    """Peak RSS growth of one update (the first: AdamW allocates its state there) and its set-up (the batch;
    full: the reference copy), over the process holding the policy's weights and the libraries (the same on
    both sides)."""
    base: list[int] = []

    def mark() -> None:
        gc.collect()
        with contextlib.suppress(OSError):  # reset the high-water mark to now (Linux >= 4.0)
            Path("/proc/self/clear_refs").write_text("5")
        base.append(_proc_kb("VmRSS"))

    update, trainable = update_step(spec, mark)
    update()
    return {"peak_bytes": (_proc_kb("VmHWM") - base[0]) * 1024, "trainable": trainable}


def bench_lora(
    fx: Fixture,
    size: int,
    prompts: int,
    G: int,
    new_tokens: int,
    beta: float,
    reps: int,
    warmup: int,
    threads: int | None,
) -> list[dict]:
    """LoRA (rank LORA_RANK, every decoder projection) against full fine-tuning: the same update on the same
    batch."""
    spec = {
        "kind": "update",
        "model_dir": fx.model_dir,
        "jsonl": str(fx.jsonl),
        "size": size,
        "prompts": prompts,
        "G": G,
        "T": new_tokens,
        "beta": beta,
    }
    (full, n_full), (low, n_low) = update_step({**spec, "rank": 0}), update_step({**spec, "rank": LORA_RANK})
    t = alternate({"lora": low, "full": full}, reps, warmup)
    mem = {k: measure_child({**spec, "rank": r}, threads) for k, r in (("full", 0), ("lora", LORA_RANK))}
    case = (
        f"{size} px, B={prompts}, G={G}, T={new_tokens}, beta={beta}: reference log-probs + fwd/bwd + AdamW; "
        f"LoRA rank {LORA_RANK} ({n_low:,} trainable) vs full ({n_full:,})"
    )
    gb = {k: v["peak_bytes"] / 1e9 for k, v in mem.items()}
    speed = paired(t["lora"], t["full"], lambda a, b: a / b)
    print(
        f"  lora {case}: step LoRA/full {fmt_stat(speed, 'x')}, peak {gb['lora']:.3f} GB "
        f"vs {gb['full']:.3f} GB",
        flush=True,
    )
    return [
        row(
            "update s, LoRA vs full",
            case,
            stats(t["lora"]),
            stats(t["full"]),
            speed,
            baseline_name="full",
            ratio_name="LoRA/full",
        ),
        row(
            "update peak GB, LoRA vs full",
            case + "; peak RSS growth of a fresh process over its loaded policy",
            stats([gb["lora"]]),
            stats([gb["full"]]),
            stats([gb["lora"] / gb["full"]]),
            baseline_name="full",
            ratio_name="LoRA/full",
        ),
    ]


# ----------------------------------------------------------------------------- row 4: log-prob peak memory


def _proc_kb(key: str) -> int:
    return int(re.search(rf"{key}:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1))


# How the head's weights and activations arrive in each trainer setting (what the naive side gets too):
PRECISIONS = {
    "autocast": "fp32 weights, bf16 autocast (one GPU)",
    "bf16": "bf16 weights (FSDP's gathered params)",
    "fp32": "fp32 throughout (CPU trainer)",
}


def head_case(precision: str, n: int, d: int, vocab: int, device: torch.device | str = "cpu"):
    """A [vocab x d] head, hidden states of n tokens and targets as `precision` has them, plus the context
    (autocast or none) that the forward runs in. lm_head.grad starts as None (zero_grad(set_to_none=True))."""
    torch.manual_seed(0)
    dev = torch.device(device)
    wdtype = torch.bfloat16 if precision == "bf16" else torch.float32
    hdtype = torch.float32 if precision == "fp32" else torch.bfloat16
    head = torch.nn.Linear(d, vocab, bias=False, device=dev, dtype=wdtype)
    hidden = torch.randn(1, n, d, dtype=hdtype, device=dev).requires_grad_()
    targets = torch.randint(0, vocab, (1, n), device=dev)
    ctx = (
        torch.autocast(dev.type, dtype=torch.bfloat16)
        if precision == "autocast"
        else contextlib.nullcontext()
    )
    return head, hidden, targets, ctx


def logprobs_loss(mode: str, head, hidden, targets, banned, chunk: int) -> torch.Tensor:
    if mode == "naive":  # every logit at once, fp32 log_softmax, gather
        lp = head(hidden).float().log_softmax(-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    else:
        lp = kernels.fused_head_logprobs(head, hidden, targets, 1.0, banned, chunk_tokens=chunk)
    return -lp.mean()


def logprobs_child(spec: dict) -> dict:
    """One measurement in a fresh process: peak RSS growth of forward + backward of the log-probs of `n`
    completion tokens through a [vocab x hidden] lm_head, in one of PRECISIONS."""
    n, d, V = spec["tokens"], spec["hidden"], spec["vocab"]
    head, hidden, targets, ctx = head_case(spec["precision"], n, d, V)
    banned = torch.arange(V - 16, V - 7)  # 9 vision ids, masked as train_grpo masks them
    gc.collect()
    with contextlib.suppress(OSError):  # reset the high-water mark to now (Linux >= 4.0)
        Path("/proc/self/clear_refs").write_text("5")
    base = _proc_kb("VmRSS")
    t0 = time.perf_counter()
    with ctx:
        loss = logprobs_loss(spec["mode"], head, hidden, targets, banned, spec["chunk"])
    loss.backward()
    seconds = time.perf_counter() - t0
    assert hidden.grad is not None and head.weight.grad is not None
    return {"peak_bytes": (_proc_kb("VmHWM") - base) * 1024, "seconds": seconds}


def measure_child(spec: dict, threads: int | None) -> dict:
    """One measurement (logprobs_child, or update_child for spec kind "update") in a fresh process."""
    env = dict(os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {}))
    cmd = [sys.executable, os.path.abspath(__file__), "--_child", json.dumps(spec)]
    res = subprocess.run(
        cmd, capture_output=True, text=True, env=env, cwd=Path(__file__).resolve().parents[1]
    )
    if res.returncode:
        raise RuntimeError(f"memory child {spec} failed:\n{res.stderr[-2000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def logprobs_row(name: str, case: str, ours_gb: float, naive_gb: float, target: bool, **kw) -> dict:
    ratio = ours_gb / naive_gb
    return row(
        name,
        case,
        stats([ours_gb]),
        stats([naive_gb]),
        stats([ratio]),
        baseline_name="naive full logits",
        ratio_name="ours/naive",
        target="<= 0.25x" if target else "",
        met=(ratio <= 0.25) if target else None,
        **kw,
    )


def bench_logprobs(lengths: list[int], hidden: int, threads: int | None, precisions: list[str]) -> list[dict]:
    """Peak memory of kernels.fused_head_logprobs (its default chunk size) vs naive: every length in the first
    of `precisions` (the one-GPU setting, autocast, in a full run), the longest in the others too."""
    chunk = inspect.signature(kernels.fused_head_logprobs).parameters["chunk_tokens"].default
    out = []
    cases = [(precisions[0], n) for n in lengths] + [(p, max(lengths)) for p in precisions[1:]]
    for precision, n in cases:
        spec = {"tokens": n, "hidden": hidden, "vocab": QWEN_VOCAB, "precision": precision, "chunk": chunk}
        naive = measure_child({**spec, "mode": "naive"}, threads)
        ours = measure_child({**spec, "mode": "fused"}, threads)
        case = f"{n} tok, V={QWEN_VOCAB}, d={hidden}, {PRECISIONS[precision]}, fwd+bwd"
        out.append(
            logprobs_row(
                "log-prob peak GB",
                case,
                ours["peak_bytes"] / 1e9,
                naive["peak_bytes"] / 1e9,
                n == 4096,
                seconds={"ours": ours["seconds"], "naive": naive["seconds"]},
            )
        )
        print(
            f"  logprobs {case}: {ours['peak_bytes'] / 1e9:.2f} GB vs naive {naive['peak_bytes'] / 1e9:.2f} "
            f"GB = {out[-1]['ratio']['median']:.3f}x; {ours['seconds']:.2f} s vs {naive['seconds']:.2f} s",
            flush=True,
        )
    return out


# ---------------------------------------------------------------------------- row 5: the GPU check (3B shape)

GPU_SHAPES = {
    # Qwen2.5-VL-3B-Instruct's config.json, random weights
    "3b": dict(
        text=dict(
            hidden_size=2048,
            intermediate_size=11008,
            num_hidden_layers=36,
            num_attention_heads=16,
            num_key_value_heads=2,
            vocab_size=QWEN_VOCAB,
            max_position_embeddings=128000,
            rms_norm_eps=1e-6,
            rope_theta=1_000_000.0,
            rope_scaling={"type": "mrope", "mrope_section": [16, 24, 24]},
        ),
        vision=dict(
            depth=32,
            hidden_size=1280,
            intermediate_size=3420,
            num_heads=16,
            out_hidden_size=2048,
            patch_size=14,
            spatial_merge_size=2,
            temporal_patch_size=2,
            window_size=112,
            fullatt_block_indexes=[7, 15, 23, 31],
            tokens_per_second=2,
        ),
        tie=True,
        seq=1024,
        new_tokens=64,
    ),
    # the same code paths at a size a CPU runs in seconds (tests)
    "tiny": dict(
        text=dict(
            hidden_size=128,
            intermediate_size=256,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            vocab_size=8192,
            max_position_embeddings=4096,
            rms_norm_eps=1e-6,
            rope_theta=10000.0,
            rope_scaling={"type": "mrope", "mrope_section": [4, 6, 6]},
        ),
        vision=dict(
            depth=2,
            hidden_size=64,
            intermediate_size=128,
            num_heads=2,
            out_hidden_size=128,
            patch_size=14,
            spatial_merge_size=2,
            temporal_patch_size=2,
            window_size=112,
            fullatt_block_indexes=[1],
        ),
        tie=True,
        seq=512,
        new_tokens=16,
    ),
}


def gpu_model(shape: str, processor, device: torch.device, attn: str) -> torch.nn.Module:
    """A Qwen2.5-VL of `shape` with random bf16 weights, built directly on `device` (no download, no CPU
    copy). Its special-token ids are the tiny tokenizer's, so the bench's processor drives it."""

    s, tok = GPU_SHAPES[shape], processor.tokenizer
    ids = {t: tok.convert_tokens_to_ids(t) for t in tiny.QWEN_SPECIAL_TOKENS}
    text = dict(
        s["text"],
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
    )
    config = Qwen2_5_VLConfig(
        text_config=text,
        vision_config=s["vision"],
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=s["tie"],
    )
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen2_5_VLForConditionalGeneration._from_config(
            config, dtype=torch.bfloat16, attn_implementation=attn
        )
    model.generation_config.eos_token_id = [ids["<|im_end|>"], ids["<|endoftext|>"]]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    return model


def param_counts(model: torch.nn.Module) -> dict[str, int]:
    """Parameters by role: the vision tower, the decoder (no embedding table), the lm_head matrix."""
    vis = sum(p.numel() for p in model.model.visual.parameters())
    emb = model.model.get_input_embeddings().weight
    lm = sum(p.numel() for p in model.model.language_model.parameters()) - emb.numel()
    head = model.lm_head.weight.numel()
    return {
        "vision": vis,
        "decoder": lm,
        "lm_head": head,
        "total": sum(p.numel() for p in model.parameters()),
    }


def train_flops(model: torch.nn.Module, inputs: dict, rows_per_prompt: int, completion_tokens: int) -> float:
    """Model FLOPs of one forward + backward (3x forward) of token_logprobs on this batch, as it runs
    (shared prefix: each prompt once, each of its G completions attending to it): 2 FLOPs per parameter
    per token (vision tower per patch, decoder per prompt token and per completion token, lm_head per
    completion token) plus attention (causal decoder, windowed/full vision). Recomputation (the fused
    head's backward) is not counted, as MFU conventionally does not."""
    c, tc, vc = param_counts(model), model.config.text_config, model.config.vision_config
    B, P = inputs["input_ids"].shape
    rows, T = B * rows_per_prompt, completion_tokens
    d_attn = tc.num_attention_heads * (tc.hidden_size // tc.num_attention_heads)
    fwd = 2 * c["decoder"] * (B * P + rows * T) + 2 * c["lm_head"] * rows * T
    # QK^T and AV, 4·d per query-key pair: the prompt causal (P²/2 pairs), each completion T·P + T²/2
    fwd += 4 * tc.num_hidden_layers * d_attn * (B * P * P / 2 + rows * (T * P + T * T / 2))
    if inputs.get("image_grid_thw") is not None:
        patches = inputs["image_grid_thw"].prod(-1)  # [images]
        win = (vc.window_size // vc.patch_size) ** 2
        full = len(vc.fullatt_block_indexes)
        attn_v = sum(
            4 * vc.hidden_size * p * (full * p + (vc.depth - full) * min(win, p)) for p in patches.tolist()
        )
        fwd += 2 * c["vision"] * int(patches.sum()) + attn_v  # vision runs once per prompt, not per row
    return 3.0 * fwd


def card_peaks(
    device: torch.device, peak_tflops: float | None, peak_tbs: float | None
) -> tuple[str, float | None, float | None]:
    if device.type != "cuda":
        return platform.processor() or "cpu", peak_tflops, peak_tbs
    name = torch.cuda.get_device_name(device)
    for pat, tf, tbs in CARDS:
        if re.search(pat, name):
            return name, peak_tflops or tf, peak_tbs or tbs
    return name, peak_tflops, peak_tbs


def attention_kernels(model: torch.nn.Module, inputs: dict, device: torch.device) -> str:
    """The attention ops/kernels one forward actually ran, from the profiler (not what we hoped for)."""

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with torch.no_grad(), profile(activities=acts) as prof:
        emb, pos = M.prompt_embeddings(model, inputs)
        M.decoder(model, emb, pos, inputs["attention_mask"])
        sync(device)
    pat = re.compile(r"flash|fmha|efficient_attention|scaled_dot_product|cudnn.*attention", re.I)
    names = sorted({e.key for e in prof.key_averages() if pat.search(e.key)}, key=len)
    return ", ".join(names[:4]) or "none found"


def gpu_check(
    fx: Fixture,
    shape: str,
    device: torch.device,
    reps: int,
    warmup: int,
    peak_tflops: float | None,
    peak_tbs: float | None,
    prompts_n: int = 8,
) -> list[dict]:
    """The scale-out issue's GPU check: fwd+bwd tokens/s and MFU on ~1k-token rows with images, a rollout of
    prompts_n x G=8 sequences (64; bench --quick: 16) (ours vs HF generate) with decode bandwidth utilisation,
    a GRPO update's MFU, peak memory, the attention kernel. bf16 parameters and AdamW state (the trainers'
    fp32 master copy doubles the memory but not the FLOPs; a 3B model with fp32 master weights and AdamW needs
    ~60 GB before activations)."""
    card, tflops, tbs = card_peaks(device, peak_tflops, peak_tbs)
    attn = M.attention_backend(device)
    cuda = device.type == "cuda"
    t0 = time.perf_counter()
    model = gpu_model(shape, fx.processor, device, attn)
    counts = param_counts(model)
    build_s = time.perf_counter() - t0
    proc, fk = fx.processor, fx.frame_kind
    banned, pad = M.banned_token_ids(model, proc), proc.tokenizer.pad_token_id
    to_dev = lambda d: {k: v.to(device) if torch.is_tensor(v) else v for k, v in d.items()}  # noqa: E731
    recs448 = fx.records_of(448)
    mem_gb = lambda: torch.cuda.max_memory_allocated(device) / 1e9 if cuda else _proc_kb("VmHWM") * 1024 / 1e9  # noqa: E731

    def reset_peak():
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        else:
            with contextlib.suppress(OSError):
                Path("/proc/self/clear_refs").write_text("5")

    def mfu(flops: float, seconds: float) -> float | None:
        return flops / seconds / (tflops * 1e12) if tflops else None

    info = (
        f"{shape} shape: {counts['total'] / 1e6:,.1f}M params (vision {counts['vision'] / 1e6:,.1f}M, "
        f"decoder {counts['decoder'] / 1e6:,.1f}M, lm_head {counts['lm_head'] / 1e6:,.1f}M), bf16, "
        f"attn {attn}, built in {build_s:.1f}s on {card}"
    )
    print(f"  gpu {info}", flush=True)

    def fwd_bwd(mb_inputs, mb_ids, mb_mask, mb_adv, g):
        lp = M.token_logprobs(model, mb_inputs, mb_ids, mb_mask, group_size=g, temperature=1.0, banned=banned)
        loss = -(lp * mb_adv[:, None]).sum() / mb_mask.sum()
        loss.backward()

    # ---- 1. fwd+bwd on ~1k-token rows: B prompts with a 448 px image, G completions each, no padding
    def section_fwd_bwd() -> list[dict]:
        total_gb = torch.cuda.get_device_properties(device).total_memory / 1e9 if cuda else 0.0
        # H200: 8 rows of 1k tokens; H100: 4 (no activation checkpointing)
        rows_total = 8 if total_gb > 100 else 4
        G = 2
        B = rows_total // G
        # identical prompts: no padding, SDPA runs causal
        batch = data.collate_prompts([recs448[0]] * B, proc, fk)
        inputs = to_dev(batch.inputs)
        P = inputs["input_ids"].shape[1]
        T = max(16, GPU_SHAPES[shape]["seq"] - P)
        gen = torch.Generator().manual_seed(0)
        # ordinary text tokens of the tiny vocab
        comp = torch.randint(0, 400, (B * G, T), generator=gen).to(device)
        cmask = torch.ones(B * G, T, dtype=torch.bool, device=device)
        adv = torch.randn(B * G, device=device)
        kernels = attention_kernels(model, inputs, device)
        model.train()
        reset_peak()
        t = alternate({"fwd_bwd": lambda: fwd_bwd(inputs, comp, cmask, adv, G)}, reps, warmup, device)[
            "fwd_bwd"
        ]
        peak = mem_gb()
        model.zero_grad(set_to_none=True)
        fl = train_flops(model, inputs, G, T)
        s = stats([B * G * (P + T) / x for x in t])
        m = mfu(fl, statistics.median(t))
        case = f"fwd+bwd {B * G} rows x {P + T} tok (prompt {P} incl. 256 image tok), bf16, no act. ckpt"
        print(
            f"  gpu {case}: {fmt_stat(s)} tok/s, MFU {fmt_pct(m)}, peak {peak:.1f} GB, kernels: {kernels}",
            flush=True,
        )
        return [
            row(
                "gpu: update tokens/s",
                case,
                s,
                None,
                None,
                mfu=m,
                peak_gb=peak,
                attention=f"{attn}: {kernels}",
                note=f"MFU {fmt_pct(m)}, peak {peak:.1f} GB, {fl / 1e12:.1f} TFLOP/step, "
                f"attention {attn}: {kernels}",
                target="MFU >= 40%",
                met=(m >= 0.4) if m is not None else None,
            )
        ]

    # ---- 2. rollout: 64 sequences = 8 prompts (--quick: 2) x G=8, 64 new tokens, ours vs HF generate;
    # decode bandwidth
    G, T = 8, GPU_SHAPES[shape]["new_tokens"]
    prompts = (recs448 * prompts_n)[:prompts_n]

    def section_rollout() -> list[dict]:
        """Eager decoding and the static-cache compiled step (model.sample(static_cache=True)), each against
        HF generate, with the decode step time (all tokens minus prefill + 1 token) over the bytes it
        reads."""
        inputs = to_dev(data.collate_prompts(prompts, proc, fk).inputs)
        B, P = inputs["input_ids"].shape
        n = B * G * T
        fns = {}
        for name, static in (("eager", False), ("compiled", True)):
            fns[name], fns["hf"] = rollout_pair(model, inputs, G, T, banned, pad, static)
            fns[f"{name} prefill"], _ = rollout_pair(model, inputs, G, 1, banned, pad, static)
        model.eval()
        t0 = time.perf_counter()
        variants = ["eager", "compiled"]
        try:
            fns["compiled"]()  # compile once (not timed; a training run pays it once per shape)
        except Exception as e:  # the eager rows still count; say why the compiled ones are missing
            traceback.print_exc()
            variants = ["eager"]
            del fns["compiled"], fns["compiled prefill"]
            failed = f"{type(e).__name__}: {str(e)[:300]}"
        compile_s = time.perf_counter() - t0
        reset_peak()
        t = alternate(fns, reps, warmup, device)
        peak = mem_gb()
        tps = lambda ts: stats([n / x for x in ts])  # noqa: E731
        tc = model.config.text_config
        head_dim = tc.hidden_size // tc.num_attention_heads
        # per decode step every decoder weight and the lm_head are read once, and the KV cache of all rows
        weight_bytes = 2 * (counts["decoder"] + counts["lm_head"])
        kv_bytes = 2 * 2 * tc.num_hidden_layers * tc.num_key_value_heads * head_dim * B * G * (P + T / 2)
        out = (
            []
            if "compiled" in variants
            else [row("gpu: rollout compiled decode", "failed", None, None, None, note=failed)]
        )
        for name in variants:
            speed = paired(t[name], t["hf"], lambda a, b: b / a)
            step_s = (statistics.median(t[name]) - statistics.median(t[f"{name} prefill"])) / (T - 1)
            bw = (weight_bytes + kv_bytes) / step_s
            util = bw / (tbs * 1e12) if tbs else None
            case = f"rollout {B}x{G}={B * G} seq, {P}-tok prompts (448 px), T={T}, {name} decode"
            extra = f", compiled in {compile_s:.0f} s" if name == "compiled" else ""
            print(
                f"  gpu {case}: speedup {fmt_stat(speed, 'x')}, decode {step_s * 1e3:.1f} ms/step, "
                f"BW {fmt_pct(util)}{extra}",
                flush=True,
            )
            out.append(
                row(
                    "gpu: rollout tokens/s",
                    case,
                    tps(t[name]),
                    tps(t["hf"]),
                    speed,
                    baseline_name="HF generate",
                    ratio_name="speedup",
                    peak_gb=peak,
                    decode_step_s=step_s,
                    decode_bw_util=util,
                    note=f"decode step {step_s * 1e3:.1f} ms, {bw / 1e12:.2f} TB/s = {fmt_pct(util)} of "
                    f"bandwidth, peak {peak:.1f} GB{extra}",
                    target="decode >= 50% of bandwidth",
                    met=(util >= 0.5) if util is not None else None,
                )
            )
        return out

    # ---- 3. a GRPO update on the 64 rollouts (--quick: 16): micro-batches of G rows (train_grpo's
    # default), one AdamW step
    def section_update() -> list[dict]:
        inputs = to_dev(data.collate_prompts(prompts, proc, fk).inputs)
        B = len(prompts)
        model.eval()
        ro = M.sample(
            model,
            inputs,
            G,
            T,
            generator=torch.Generator(device).manual_seed(1),
            eos_ids=[],
            banned=banned,
            pad_id=pad,
        )
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-6, weight_decay=0.0)
        adv = torch.randn(B * G, device=device)
        # unpadded micro-batches
        per_prompt = [to_dev(data.collate_prompts([r], proc, fk).inputs) for r in prompts]

        def update():
            model.train()
            for b, mb_inputs in enumerate(per_prompt):
                rows = slice(b * G, (b + 1) * G)
                fwd_bwd(mb_inputs, ro.completion_ids[rows], ro.completion_mask[rows], adv[rows], G)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)

        reset_peak()
        t = alternate({"update": update}, reps, warmup, device)["update"]
        peak = mem_gb()
        fl = sum(train_flops(model, x, G, T) for x in per_prompt)
        m = mfu(fl, statistics.median(t))
        n_tok = sum(G * (x["input_ids"].shape[1] + T) for x in per_prompt)
        s = stats([n_tok / y for y in t])
        case = f"GRPO update: {B * G} rows, {n_tok} tok in micro-batches of {G} rows, + AdamW step"
        print(f"  gpu {case}: {fmt_stat(s)} tok/s, MFU {fmt_pct(m)}, peak {peak:.1f} GB", flush=True)
        return [
            row(
                "gpu: update tokens/s",
                case,
                s,
                None,
                None,
                mfu=m,
                peak_gb=peak,
                note=f"MFU {fmt_pct(m)}, peak {peak:.1f} GB",
                target="MFU >= 40%",
                met=(m >= 0.4) if m is not None else None,
            )
        ]

    out: list[dict] = []
    for name, section in (
        ("fwd+bwd", section_fwd_bwd),
        ("rollout", section_rollout),
        ("update", section_update),
    ):
        try:  # a GPU is lent for minutes: report every section that works, and why the others did not
            out += section()
        except Exception as e:
            traceback.print_exc()
            out.append(
                row(f"gpu: {name}", "failed", None, None, None, note=f"{type(e).__name__}: {str(e)[:300]}")
            )
        model.zero_grad(set_to_none=True)
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()
    for r in out:
        r["device"] = card
        r["shape_info"] = info
    return out


def gpu_logprobs_memory(device: torch.device, hidden: int, vocab: int, n: int = 4096) -> list[dict]:
    """The logprobs row on the GPU: CUDA allocator peak above the inputs, every precision setting."""
    chunk = inspect.signature(kernels.fused_head_logprobs).parameters["chunk_tokens"].default
    out = []
    for precision in PRECISIONS:
        res = {}
        for mode in ("naive", "fused"):
            head, h, y, ctx = head_case(precision, n, hidden, vocab, device)
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
            with ctx:
                loss = logprobs_loss(mode, head, h, y, None, chunk)
            loss.backward()
            torch.cuda.synchronize()
            res[mode] = (torch.cuda.max_memory_allocated(device) - base) / 1e9
            del head, h, y, loss
        case = f"{n} tok, V={vocab}, d={hidden}, {PRECISIONS[precision]}, fwd+bwd (CUDA allocator)"
        out.append(logprobs_row("gpu: log-prob peak GB", case, res["fused"], res["naive"], True))
    return out


def fmt_pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


# ----------------------------------------------------------------------------- report


def machine() -> dict:
    cpu = platform.processor()
    with contextlib.suppress(OSError):
        m = re.search(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text())
        cpu = m.group(1).strip() if m else cpu
    info = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": _version("transformers"),
        "trl": _version("trl"),
        "platform": platform.platform(),
    }
    with contextlib.suppress(OSError):
        info["load_avg"] = os.getloadavg()
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def _version(pkg: str) -> str | None:

    try:
        return version(pkg)
    except PackageNotFoundError:
        return None


def render(meta: dict, rows: list[dict]) -> str:
    m = meta["machine"]
    lines = [
        f"## bench.py — {meta['date']}",
        "",
        f"- machine: {m['cpu']}, {m['cores']} cores, torch threads {m['torch_threads']}"
        + (f", GPU {m['gpu']}" if m.get("gpu") else "")
        + (f", load avg at start {m['load_avg'][0]:.1f}" if m.get("load_avg") else ""),
        f"- versions: python {m['python']}, torch {m['torch']}, transformers {m['transformers']}, "
        f"trl {m['trl'] or 'absent'}",
        f"- settings: {meta['settings']}",
        "- each cell: median [min–max] over the repetitions; ratio = paired per repetition "
        "(A and B alternated)",
        "",
        "| row | case | ours | baseline | ratio | target | met |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        base = fmt_stat(r["baseline"])
        if r["baseline"] and r.get("baseline_name"):
            base = f"{base} ({r['baseline_name']})"
        ratio = f"{fmt_stat(r['ratio'], 'x')} {r.get('ratio_name', '')}".strip() if r["ratio"] else ""
        ours = fmt_stat(r["ours"])
        if r.get("note"):
            ours = f"{ours}; {r['note']}" if ours else r["note"]
        met = {True: "yes", False: "**no**", None: ""}[r.get("met")]
        cells = [r["row"], r["case"], ours, base, ratio, r.get("target", ""), met]
        lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="reduced sizes and repetitions: a plumbing check, not a measurement",
    )
    p.add_argument(
        "--rows", default=None, help=f"comma list of {','.join(ROWS)}; default all but gpu (--gpu: gpu)"
    )
    p.add_argument("--gpu", action="store_true", help="the GPU check at the Qwen2.5-VL-3B shape; needs CUDA")
    p.add_argument("--gpu-shape", default="3b", choices=sorted(GPU_SHAPES), help="model shape of the gpu row")
    p.add_argument(
        "--device",
        default=None,
        help="device of the gpu row (cuda by default; cpu only with --gpu-shape tiny)",
    )
    p.add_argument(
        "--reps", type=int, default=None, help="measured repetitions per side (default 5, --quick 2)"
    )
    p.add_argument("--warmup", type=int, default=1, help="unmeasured runs per side first")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads; 0 = torch's default (see main)")
    p.add_argument(
        "--new-tokens", type=int, default=64, help="T: new tokens per completion (rollout and grpo rows)"
    )
    p.add_argument("--prompts", type=int, default=2, help="B: prompts per batch (rollout and grpo rows)")
    p.add_argument("--beta", type=float, default=0.04, help="KL weight of the grpo row (both sides)")
    p.add_argument("--lr", type=float, default=1e-4, help="AdamW lr of the grpo row (both sides)")
    p.add_argument("--peak-tflops", type=float, default=None, help="override the card's dense bf16 TFLOP/s")
    p.add_argument(
        "--peak-tbs", type=float, default=None, help="override the card's memory bandwidth in TB/s"
    )
    p.add_argument(
        "--out", default="runs/bench/bench.json", help="JSON result (a .md copy of the table next to it)"
    )
    p.add_argument("--_child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    rows = (
        args.rows.split(",")
        if args.rows
        else (["gpu"] if args.gpu else ["rollout", "grpo", "lora", "logprobs"])
    )
    if args.gpu and "gpu" not in rows:
        rows.append("gpu")
    bad = [r for r in rows if r not in ROWS]
    if bad:
        p.error(f"unknown rows {bad}; expected some of {ROWS}")
    args.rows = rows
    args.reps = args.reps or (2 if args.quick else 5)
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args._child:  # one memory measurement, in its own process
        spec = json.loads(args._child)
        print(json.dumps(update_child(spec) if spec.get("kind") == "update" else logprobs_child(spec)))
        return {}
    gpu_device = None
    if "gpu" in args.rows:
        gpu_device = torch.device(args.device or "cuda")
        if gpu_device.type == "cuda" and not torch.cuda.is_available():
            print(
                "bench.py --gpu needs CUDA (no GPU visible to torch). On a CPU, `--gpu --gpu-shape tiny "
                "--device cpu` runs the same code at a tiny shape.",
                file=sys.stderr,
            )
            raise SystemExit(2)
        if gpu_device.type == "cpu" and args.gpu_shape != "tiny":
            print(
                "the 3b shape on a CPU would take hours; use --gpu-shape tiny with --device cpu",
                file=sys.stderr,
            )
            raise SystemExit(2)
    # One thread by default: the tiny model's ops are too small to split, and on a shared CPU OpenMP threads
    # spin-wait against other processes (measured here: 2 threads under load ran 10-30x slower than 1).
    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    warnings.filterwarnings("ignore")
    with contextlib.suppress(ImportError):
        transformers.utils.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()

    q = args.quick
    sizes = [448] if q else [224, 336, 448]
    groups = [8] if q else [8, 16]
    lengths = [1280] if q else [1024, 2048, 4096]
    # --quick: a narrow head so it finishes fast; the full run uses Qwen-3B's 2048
    mem_hidden = 128 if q else 2048
    # --quick: fp32 only; bf16 matmuls on a CPU without bf16 units take minutes (autocast 1280 tokens: 220 s
    # naive)
    mem_precisions = ["fp32"] if q else list(PRECISIONS)
    settings = (
        f"{'quick' if q else 'full'}; rows {','.join(args.rows)}; reps {args.reps} (+{args.warmup} warm-up) "
        f"per side; tiny Qwen2.5-VL on CPU fp32 (rollout, grpo); images up to 448 px (processor "
        f"max_pixels {BENCH_PIXELS}); T={args.new_tokens}; B={args.prompts}"
    )
    print(f"bench.py: {settings}", flush=True)
    t_start = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="geovlm-bench-"))
    rows: list[dict] = []
    try:
        fx = build_fixture(work, sorted(set(sizes + [448])), per_size=max(args.prompts, 2))
        print(f"[fixture] tiny model + images in {time.perf_counter() - t_start:.1f} s", flush=True)
        for name in args.rows:
            torch.manual_seed(0)
            t_row = time.perf_counter()
            print(f"[{name}]", flush=True)
            if name == "rollout":
                rows += bench_rollout(
                    fx, sizes, groups, args.prompts, args.new_tokens, args.reps, args.warmup
                )
            elif name == "grpo":
                rows += bench_grpo(
                    fx, 448, args.prompts, 8, args.new_tokens, args.beta, args.lr, args.reps, args.warmup
                )
            elif name == "lora":
                # --quick: a smaller batch, so that the row takes seconds
                G, T = (4, 16) if q else (8, args.new_tokens)
                rows += bench_lora(
                    fx, 448, args.prompts, G, T, args.beta, args.reps, args.warmup, args.threads
                )
            elif name == "logprobs":
                rows += bench_logprobs(lengths, mem_hidden, args.threads, mem_precisions)
            elif name == "gpu":
                # --quick: a plumbing check (one repetition, 2 prompts in the rollout and update sections, not
                # 8)
                reps, warmup, n = (1, 0, 2) if q else (args.reps, args.warmup, 8)
                rows += gpu_check(
                    fx, args.gpu_shape, gpu_device, reps, warmup, args.peak_tflops, args.peak_tbs, n
                )
                gc.collect()  # the 3B model is gone with gpu_check's frame; measure the head's memory alone
                if gpu_device.type == "cuda":
                    text = GPU_SHAPES[args.gpu_shape]["text"]
                    rows += gpu_logprobs_memory(gpu_device, text["hidden_size"], text["vocab_size"])
            print(f"[{name}] {time.perf_counter() - t_row:.1f} s", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    meta = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": machine(),
        "settings": settings,
        "seconds": round(time.perf_counter() - t_start, 1),
        "argv": sys.argv[1:],
    }
    table = render(meta, rows)
    print("\n" + table, flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {"meta": meta, "rows": rows, "table": table}
    out.write_text(json.dumps(result, indent=2, default=float))
    out.with_suffix(".md").write_text(table)
    print(f"wrote {out} and {out.with_suffix('.md')} ({meta['seconds']} s)")
    return result


if __name__ == "__main__":
    main()
