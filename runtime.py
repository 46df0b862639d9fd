"""Run plumbing shared by the trainers: torch.distributed set-up, seeding, the lr schedule, JSONL logs,
the data streams and the checkpoints that resume a run exactly.

Both trainers run unchanged from 1 process to N: started by torchrun (RANK/WORLD_SIZE set) they join
a process group (NCCL on CUDA, gloo on CPU); otherwise they run as a world of one.

A checkpoint directory (checkpoints/step-NNNNNN, the step zero-padded to six digits, and final/) is an
ordinary HF safetensors model + processor (`from_pretrained`, model.load, eval.py) with one extra folder, resume/:

    resume/optimizer/      the optimizer state, sharded as it is in memory (torch.distributed.checkpoint)
    resume/rank-00000.pt   per rank: every RNG state (python, numpy, torch, CUDA, the trainer's generators)
                           and the trainer's own state (data position)
    resume/state.json      step, world size, the trainer's global state; written last

With --lora-rank the top level is the *merged* model (W + (alpha/r) B A: loads like any other, no PEFT), and
adapter/ holds the adapters alone in PEFT's layout (lora.py); resuming loads the base model + adapter/.

The whole directory is written under a temporary name (.step-NNNNNN.tmp-*) and renamed when complete, so a
crash leaves either the previous checkpoints untouched or a dot-directory that resuming ignores.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import re
import shutil
import signal
import socket
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp

import fsdp
import imagery
import lora
import model as M


@dataclass(frozen=True)
class Dist:
    rank: int
    world: int
    local_rank: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def init_distributed(group_of_one: bool = False) -> Dist:
    """Join the torchrun process group if there is one; pick this rank's device.

    group_of_one: without torchrun, still make a one-process group (FSDP needs one, e.g. --cpu-offload)."""
    if "RANK" not in os.environ and group_of_one:
        os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1",
                          MASTER_PORT=str(_free_port()))  # fmt: skip
    if "RANK" not in os.environ:
        dev = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
        return Dist(0, 1, 0, dev)
    local = int(os.environ.get("LOCAL_RANK", 0))
    if torch.cuda.is_available():
        torch.cuda.set_device(local)
        dev = torch.device("cuda", local)
    else:
        dev = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), local, dev)


def all_reduce_sum(x: torch.Tensor | float, device: torch.device) -> torch.Tensor:
    """Σ over ranks (identity in a world of one)."""
    t = torch.as_tensor(x, dtype=torch.float64, device=device).clone()
    if dist.is_initialized():
        dist.all_reduce(t)
    return t


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def all_gather_list(items: list) -> list:
    """Every rank's list (picklable items), concatenated in rank order, on every rank."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return list(items)
    parts: list = [None] * dist.get_world_size()
    dist.all_gather_object(parts, list(items))
    return [x for part in parts for x in part]


@contextlib.contextmanager
def local_rank0_first(env: Dist):
    """Local rank 0 runs the block first (e.g. building the embedded defaults in the cache), the other
    ranks after it: they find its result instead of racing to build the same files."""
    if env.local_rank != 0:
        barrier()
    yield
    if env.local_rank == 0:
        barrier()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def lr_at(step: int, base_lr: float, warmup: int, total: int, schedule: str = "cosine", min_ratio: float = 0.1) -> float:
    """Linear warm-up to base_lr over `warmup` steps, then cosine to min_ratio·base_lr at `total` (or constant)."""
    if warmup > 0 and step < warmup:
        return base_lr * (step + 1) / warmup
    if schedule == "constant" or total <= warmup:
        return base_lr
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return base_lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


class JsonlLog:
    """Append-only JSONL log (one object per step), written by rank 0 only (plot.py draws it); each row also
    goes to TensorBoard when a plot.TensorBoard writer is attached (--tensorboard)."""

    def __init__(self, path: str | os.PathLike, enabled: bool = True, tensorboard=None):
        self.path, self.enabled, self.tensorboard = Path(path), enabled, tensorboard
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, row: dict) -> None:
        if self.enabled:
            with open(self.path, "a") as f:
                f.write(json.dumps(row, default=float) + "\n")
            if self.tensorboard is not None:
                self.tensorboard.write(row)


def check_finite(step: int, **values) -> None:
    """Stop the step with a clear message naming which quantity was NaN/inf."""
    for name, v in values.items():
        t = torch.as_tensor(v)
        if not torch.isfinite(t).all():
            raise FloatingPointError(f"step {step}: {name} is not finite ({t.flatten()[:4].tolist()}...); "
                                     "the step was not applied and the last checkpoint on disk is intact")  # fmt: skip


# ----------------------------------------------------------------------------- data position


class Stream:
    """Endless epochs over item indices 0..n-1, each epoch in its own order: a permutation seeded by
    (seed, name, epoch), so the position (epoch, index) is the whole state and resuming continues exactly.

    Every rank holds the same stream and takes the same global batch from it, then keeps its own slice:
    N processes with B items each see what one process with N*B items sees, and no two ranks overlap."""

    def __init__(self, n: int, seed: int, name: str = ""):
        if n < 1:
            raise ValueError(f"stream {name!r}: no items")
        self.n, self.seed, self.name = n, seed, name
        self.epoch, self.index = 0, 0
        self._order: list[int] | None = None

    def _epoch_order(self) -> list[int]:
        if self._order is None:
            self._order = list(range(self.n))
            random.Random(f"{self.seed}:{self.name}:{self.epoch}").shuffle(self._order)  # str seed: stable
        return self._order

    def next(self) -> int:
        i = self._epoch_order()[self.index]
        self.index += 1
        if self.index == self.n:
            self.epoch, self.index, self._order = self.epoch + 1, 0, None
        return i

    def take(self, k: int) -> list[int]:
        return [self.next() for _ in range(k)]

    def state_dict(self) -> dict:
        return {"n": self.n, "seed": self.seed, "name": self.name, "epoch": self.epoch, "index": self.index}

    def load_state_dict(self, state: dict) -> None:
        if (state["n"], state["seed"], state["name"]) != (self.n, self.seed, self.name):
            raise SystemExit(f"resume: data stream {self.name!r} was {state['n']} items, seed {state['seed']}; "
                             f"now {self.n} items, seed {self.seed}: not the same data / --seed")  # fmt: skip
        self.epoch, self.index, self._order = state["epoch"], state["index"], None


def rank_slice(items: list, counts: list[int], rank: int) -> list:
    """This rank's part of a global batch laid out rank after rank (counts[r] items for rank r)."""
    lo = sum(counts[:rank])
    return items[lo : lo + counts[rank]]


# ----------------------------------------------------------------------------- RNG state


def rng_state(generators: dict[str, torch.Generator] | None = None) -> dict:
    """Every random state this process draws from: python, numpy, torch (CPU, CUDA), and `generators`."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    state["generators"] = {k: g.get_state() for k, g in (generators or {}).items()}
    return state


def set_rng_state(state: dict, generators: dict[str, torch.Generator] | None = None) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
    for k, g in (generators or {}).items():
        g.set_state(state["generators"][k])


# ----------------------------------------------------------------------------- checkpoints

CKPT_PATTERN = re.compile(r"step-(\d+)")


def save_checkpoint(path: str | os.PathLike, net: torch.nn.Module, processor, optimizer: torch.optim.Optimizer,
                    env: Dist, state: dict, rank_state: dict, generators: dict | None = None,
                    keep: int = 0, lora_config: dict | None = None) -> Path:
    """Write the checkpoint directory `path` (see the module docstring); every rank must call it.

    state: the trainer's global position (JSON: step, stream positions, ...); rank_state: this rank's own
    (picklable); generators: this rank's torch.Generators, saved with the global RNG states. keep > 0
    prunes the other checkpoints/step-* directories beside `path` to the newest `keep`. lora_config (PEFT's
    adapter_config.json, lora.peft_config): the model has adapters; the merged model and adapter/ are written."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    path = Path(path)
    full = fsdp.full_state_dict(net)  # the whole model on rank 0 (collective under FSDP)
    optim_state = get_optimizer_state_dict(fsdp.unwrap(net), optimizer)  # this rank's shards
    adapter = None
    if lora_config is not None and env.main:
        full, adapter = lora.merge(full if full is not None else fsdp.unwrap(net).state_dict(), lora.adapters(net))

    def write_resume(tmp: Path | None) -> None:  # inside the temporary directory, before its rename
        if dist.is_initialized():
            box = [str(tmp) if tmp is not None else None]
            dist.broadcast_object_list(box, src=0)
            tmp = Path(box[0])
        if adapter is not None:
            lora.save_adapter(tmp / "adapter", adapter, lora_config)
        resume = tmp / "resume"
        resume.mkdir(exist_ok=True)
        with warnings.catch_warnings():  # one process: "assuming the intent is to save in a single process"
            warnings.simplefilter("ignore", UserWarning)
            dcp.save({"optimizer": optim_state}, checkpoint_id=str(resume / "optimizer"), no_dist=not dist.is_initialized())
        torch.save({"rng": rng_state(generators), "trainer": rank_state}, resume / f"rank-{env.rank:05d}.pt")
        barrier()
        if env.main:
            (resume / "state.json").write_text(json.dumps({**state, "world": env.world}, indent=1))

    if env.main:
        M.save(fsdp.unwrap(net), processor, path, state_dict=full, extra=write_resume)
        prune_checkpoints(path.parent, keep)
    else:
        write_resume(None)
    barrier()
    return path


def checkpoint_step(path: Path) -> int | None:
    """The step of a complete checkpoint directory, None for anything else (a torn temporary one too)."""
    try:
        return int(json.loads((Path(path) / "resume" / "state.json").read_text())["step"])
    except (OSError, ValueError, KeyError):
        return None


def find_checkpoint(out: str | os.PathLike, resume: str) -> Path | None:
    """--resume PATH: that checkpoint; --resume auto: the newest complete one in out/checkpoints and
    out/final (None: start fresh). Temporary dot-directories of an interrupted save are never picked."""
    if resume != "auto":
        if checkpoint_step(Path(resume)) is None or re.fullmatch(r"\..*\.tmp-.*", Path(resume).name):
            raise SystemExit(f"--resume {resume}: not a complete checkpoint (no resume/state.json, or the "
                             "temporary directory of an interrupted save)")  # fmt: skip
        return Path(resume)
    out = Path(out)
    found = [(s, d) for d in [*sorted((out / "checkpoints").glob("step-*")), out / "final"]
             if (s := checkpoint_step(d)) is not None]  # fmt: skip
    return max(found, key=lambda t: t[0])[1] if found else None


def prune_checkpoints(ckpt_dir: Path, keep: int = 0) -> None:
    """Drop what interrupted saves left (.step-NNNNNN.tmp-*, .final.tmp-*); keep > 0: keep only the newest
    `keep` step-NNNNNN checkpoints. Called by rank 0 after a successful save (no other save is in flight)."""
    if keep > 0:
        steps = sorted((s, d) for d in ckpt_dir.iterdir()
                       if CKPT_PATTERN.fullmatch(d.name) and (s := checkpoint_step(d)) is not None)  # fmt: skip
        for _, d in steps[:-keep]:
            shutil.rmtree(d, ignore_errors=True)
    for pattern in (".step-*.tmp-*", ".final.tmp-*"):
        for d in ckpt_dir.glob(pattern):
            shutil.rmtree(d, ignore_errors=True)


def discard_torn(out: str | os.PathLike) -> None:
    """Remove what interrupted saves left in out/ and out/checkpoints/ (never picked by find_checkpoint)."""
    for d in (Path(out), Path(out) / "checkpoints"):
        if d.is_dir():
            prune_checkpoints(d, keep=0)


def load_checkpoint(path: Path, net: torch.nn.Module, optimizer: torch.optim.Optimizer, env: Dist,
                    generators: dict | None = None) -> tuple[dict, dict]:  # fmt: skip
    """Restore the optimizer and this rank's RNG states from `path` (the model weights were loaded from
    it already: it is an HF directory). Returns (the trainer's global state, this rank's own state)."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict, set_optimizer_state_dict

    path = Path(path)
    state = json.loads((path / "resume" / "state.json").read_text())
    if state["world"] != env.world:
        raise SystemExit(f"--resume {path}: saved by {state['world']} processes, now {env.world}; "
                         "resume with the same number of processes")  # fmt: skip
    optim_state = get_optimizer_state_dict(fsdp.unwrap(net), optimizer)  # the layout to load into
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        dcp.load({"optimizer": optim_state}, checkpoint_id=str(path / "resume" / "optimizer"), no_dist=not dist.is_initialized())
    set_optimizer_state_dict(fsdp.unwrap(net), optimizer, optim_state)
    mine = torch.load(path / "resume" / f"rank-{env.rank:05d}.pt", weights_only=False)
    set_rng_state(mine["rng"], generators)
    return state, mine["trainer"]


def truncate_log(path: str | os.PathLike, step: int) -> None:
    """Drop the rows after `step` (written by the run being resumed after its last checkpoint)."""
    path = Path(path)
    if path.exists():
        rows = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line).get("step", 0) <= step]
        path.write_text("".join(r + "\n" for r in rows))


def to_device(batch: dict, device: torch.device) -> dict:
    """The batch's tensors moved to `device` (other values as they are)."""
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def autocast(device: torch.device, net: torch.nn.Module | None = None):
    """bf16 compute over fp32 master weights on CUDA: autocast on one GPU; under FSDP (an FSDPRoot) the
    sharded model casts to bf16 itself (its MixedPrecisionPolicy), so no autocast there. Plain fp32 on CPU."""
    if device.type == "cuda" and not isinstance(net, fsdp.FSDPRoot):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


# ----------------------------------------------------------------------------- flags both trainers share


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Every flag's default in its help, and the launch examples kept as written."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse with a one-line error: the mistake and where to look, not the whole usage block."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, formatter_class=HelpFormatter, **kwargs)

    def error(self, message: str):
        self.exit(2, f"{self.prog}: {message} (--help lists every flag)\n")


def _number(kind: type, lo: float, strict: bool):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, got {text!r}") from None
        if not (value > lo if strict else value >= lo) or (kind is float and not math.isfinite(value)):
            raise argparse.ArgumentTypeError(f"must be {'>' if strict else '>='} {lo}, got {text}")
        return value

    return parse


positive_int, count, positive, non_negative = _number(int, 0, True), _number(int, 0, False), _number(float, 0, True), _number(float, 0, False)


def probability(text: str) -> float:
    """A flag in (0, 1] (e.g. --top-p)."""
    value = positive(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return value


def multi_node_help(script: str, batch_flag: str) -> str:
    return f"""\
several GPUs, several nodes (torchrun; the flags are the same as for one process):
  torchrun --nproc_per_node=8 {script} --model Qwen/Qwen2.5-VL-3B-Instruct --data data/train.jsonl
  # two nodes of 8 GPUs: the same line on each, --node_rank 0 and 1, --master_addr = node 0's address
  torchrun --nnodes=2 --node_rank=0 --master_addr=10.0.0.1 --master_port=29500 --nproc_per_node=8 {script} ...
  torchrun --nnodes=2 --node_rank=1 --master_addr=10.0.0.1 --master_port=29500 --nproc_per_node=8 {script} ...
With more than one process the model is sharded with FSDP2 (bf16 compute, fp32 master weights on CUDA).
{batch_flag} is per process: the global batch is world x that, normalised as one batch. --out must be on a
filesystem every node sees (each rank writes its optimizer shards). Memory: --grad-ckpt, --cpu-offload.
Ctrl-C (SIGINT) or SIGTERM: the step in progress finishes, a checkpoint is written, the run stops (exit 130);
rerun the same command with --resume auto to continue. torchrun kills its workers 30 s after a Ctrl-C unless
given more time (torchrun --shutdown_timeout 600 ...): a big model's last step and checkpoint need it; if they
are cut short the previous checkpoint is still intact. torchrun prints its own traceback after the "stopped"
lines: expected."""


def add_run_flags(p: argparse.ArgumentParser, name: str, default_model: str = "defaults.base_model(): the embedded "
                  "tiny model") -> argparse._ArgumentGroup:  # fmt: skip
    """--model, --data, --out, checkpoints, resume, seed: the same meaning in both trainers."""
    g = p.add_argument_group("run")
    g.add_argument("--model", default=None, help=f"hub id or local checkpoint directory; None: {default_model} "
                   "(built on first use)")  # fmt: skip
    g.add_argument("--data", default=None, help="training JSONL (records, see data.py); None: the embedded synthetic set")
    g.add_argument("--skip-bad", action="store_true", help="skip malformed records (counted and reported) instead of stopping")
    g.add_argument("--out", default=f"runs/{name}", help="log.jsonl, checkpoints/ and final/ go here; a folder that "
                   "holds another run is refused unless --resume or --overwrite")  # fmt: skip
    g.add_argument("--overwrite", action="store_true", help="start afresh in an --out that holds another run: its "
                   "logs, checkpoints and final/ are replaced once this run has started (never before)")  # fmt: skip
    g.add_argument("--resume", default=None, help="a checkpoint directory, or auto: the newest complete one in --out; "
                   "continues the step count, data position, RNG states and optimizer exactly")  # fmt: skip
    g.add_argument("--save-every", type=count, default=50, help="checkpoints/step-NNNNNN every N steps (and always final/, "
                   "and one on Ctrl-C/SIGTERM); 0 = only those")  # fmt: skip
    g.add_argument("--keep", type=count, default=3, help="keep the newest N checkpoints/step-*; 0 = all")
    g.add_argument("--seed", type=count, default=0, help="data order, sampling and initialisation")
    g.add_argument("--tensorboard", action="store_true", help="also write every log row as TensorBoard events to "
                   "OUT/tensorboard (PNG curves are written to OUT/plots either way)")  # fmt: skip
    imagery.add_arguments(p)  # --bands, --stretch, --nodata: defaults for records whose meta gives none
    return g


def add_optimiser_flags(p: argparse.ArgumentParser, lr_help: str, warmup: int) -> argparse._ArgumentGroup:
    g = p.add_argument_group("optimiser and memory")
    g.add_argument("--lr", type=positive, default=None, help=f"peak AdamW learning rate; None: {lr_help}")
    g.add_argument("--warmup-steps", type=count, default=warmup, help="linear warm-up, in optimiser steps")
    g.add_argument("--weight-decay", type=non_negative, default=0.0, help="AdamW weight decay")
    g.add_argument("--grad-clip", type=positive, default=1.0, help="max global gradient norm")
    g.add_argument("--grad-ckpt", action="store_true", help="gradient checkpointing (less memory, ~30%% slower)")
    g.add_argument("--freeze-vision", action="store_true", help="keep the vision tower frozen (the common RL setting); "
                   "GRPO then computes image features once per step and reuses them in every log-prob pass")  # fmt: skip
    g.add_argument("--cpu-offload", action="store_true", help="FSDP with parameters, gradients and optimizer state on "
                   "the CPU (big models on few GPUs)")  # fmt: skip
    return g


def world_size() -> int:
    """The number of processes torchrun started (1 without torchrun); readable before any process group exists."""
    return int(os.environ.get("WORLD_SIZE", "1"))


# ----------------------------------------------------------------------------- user errors, found early
RUN_FILES = ("log.jsonl", "rollouts.jsonl", "rollouts.html", "args.json", "checkpoints", "final", "eval", "plots",
             "tensorboard")
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def holds_run(out: Path) -> bool:
    """True when `out` already holds a run's files (a log, checkpoints, a final model)."""
    return out.is_dir() and any((out / name).exists() for name in RUN_FILES)


def check_model(path_or_id: str) -> None:
    """A local model directory, or a hub id that can be had: else one line saying what to do (SystemExit),
    before anything loads. Offline (HF_HUB_OFFLINE=1), a hub id must already be in the Hugging Face cache."""
    if os.path.isdir(path_or_id):
        if not (Path(path_or_id) / "config.json").exists():
            raise SystemExit(f"--model {path_or_id}: this directory holds no config.json (not an HF model directory)")
        return
    if os.path.exists(path_or_id) or not _HUB_ID.fullmatch(path_or_id):
        raise SystemExit(f"--model {path_or_id}: no such directory (and not a hub id like Qwen/Qwen2.5-VL-3B-Instruct)")
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache(path_or_id, "config.json"), str):
        return
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0", "false", "False"):
        raise SystemExit(f"--model {path_or_id}: not in the Hugging Face cache and HF_HUB_OFFLINE is set; download it "
                         "where there is network (huggingface-cli download ...) or pass a local directory")  # fmt: skip
    try:
        socket.create_connection(("huggingface.co", 443), timeout=3).close()
    except OSError:
        raise SystemExit(f"--model {path_or_id}: not in the Hugging Face cache and huggingface.co cannot be reached; "
                         "pass a local directory, or download it where there is network") from None  # fmt: skip


def imagery_flags(args: argparse.Namespace) -> dict:
    """The --bands / --stretch / --nodata flags as imagery options, or one line (SystemExit) when malformed."""
    try:
        return imagery.options_from_args(args)
    except imagery.ImageError as e:
        raise SystemExit(f"{e}") from None


def load_data(path: str | os.PathLike, what: str, skip_bad: bool = False, tasks: list[str] | None = None,
              image_options: dict | None = None) -> list:  # fmt: skip
    """Validated records, or one line naming file:line and the field (SystemExit): a user's data, not our bug.
    image_options (the GeoTIFF flags) become each record's meta.bands / stretch / nodata unless it has its own, and
    are checked against its images there (--bands 4,3,2 on a 3-band file is a data error, before any model loads)."""
    import data

    try:
        records = data.load_records(path, skip_bad=skip_bad, tasks=tasks, meta_defaults=image_options)
    except (data.RecordError, ValueError) as e:
        raise SystemExit(f"{what}: {e}") from None
    except OSError as e:
        raise SystemExit(f"{what} {path}: {e.strerror or e}") from None
    if not records:
        raise SystemExit(f"{what} {path}: no records" + (f" of task(s) {', '.join(tasks)}" if tasks else ""))
    return records


# ----------------------------------------------------------------------------- one run's set-up, both trainers
_INTERRUPTED: list[int] = []  # signals received; the loop finishes its step, saves and stops
VIEWER_ROWS = 2000  # the newest completions in rollouts.html (each image is embedded once, shrunk)


def _on_signal(signum, frame) -> None:
    if not _INTERRUPTED:  # one line per process, however many signals arrive
        rank = f"rank {dist.get_rank()}: " if dist.is_initialized() else ""
        print(f"{rank}{signal.Signals(signum).name}: finishing this step, then a checkpoint, then stop", flush=True)
    _INTERRUPTED.append(signum)


@dataclass
class Run:
    """What `start_run` set up: processes, folders, data, the model being trained, logs."""

    args: argparse.Namespace
    name: str  # "sft" or "grpo"
    env: Dist
    out: Path
    resume: Path | None  # the checkpoint this run continues, or None
    start: int  # the step it continues after (0: a fresh run)
    model_path: str  # what the run started from (GRPO's KL reference)
    records: list  # training records
    held_out: list  # evaluation records
    net: torch.nn.Module  # the model being trained; an fsdp.FSDPRoot under FSDP
    processor: object
    frame_kind: str
    attn_impl: str
    use_fsdp: bool
    log: JsonlLog
    rollout_log: JsonlLog

    def restore(self, optimizer: torch.optim.Optimizer, generators: dict | None = None) -> dict:
        """Optimizer, RNG states and the trainer's state from the checkpoint being resumed (weights: loaded already)."""
        state, _ = load_checkpoint(self.resume, self.net, optimizer, self.env, generators)
        return state

    def save(self, path: Path, optimizer: torch.optim.Optimizer, state: dict, generators: dict | None = None,
             keep: int = 0) -> None:  # fmt: skip
        a = self.args
        adapter = lora.peft_config(a.lora_rank, a.lora_alpha, a.lora_targets, self.model_path) if a.lora_rank else None
        save_checkpoint(path, self.net, self.processor, optimizer, self.env, state, rank_state={}, generators=generators,
                        keep=keep, lora_config=adapter)
        self.say(f"saved step {state['step']}: {path}")

    def stop_requested(self) -> bool:
        """True on every rank once any got SIGINT/SIGTERM (one tiny all-reduce a step, so all stop together)."""
        return bool(all_reduce_sum(float(bool(_INTERRUPTED)), self.env.device) > 0)

    def finish(self) -> None:
        """The pictures of the run (rank 0): PNG curves of log.jsonl in OUT/plots, the rollouts as an HTML page."""
        if not self.env.main:
            return
        import plot
        import viewer

        if self.log.tensorboard is not None:
            self.log.tensorboard.close()
        plot.plot_run(self.out, quiet=True)
        if self.rollout_log.enabled and self.rollout_log.path.exists():
            viewer.write_viewer(self.rollout_log.path, max_rows=VIEWER_ROWS)
        self.say(f"curves in {self.out / 'plots'}/" + (f", completions in {self.rollout_log.path.with_suffix('.html')}"
                                                       if self.rollout_log.path.with_suffix(".html").exists() else ""))

    def stop(self, step: int) -> None:
        """After the interrupt's checkpoint: the pictures, one line per process, then exit 130 (as after Ctrl-C)."""
        self.finish()
        barrier()
        rank = f"rank {self.env.rank}: " if self.env.world > 1 else ""
        print(f"{self.name}: {rank}stopped after step {step}; continue with the same command and --resume auto", flush=True)
        raise SystemExit(130)

    def say(self, message: str) -> None:
        """One line from rank 0, above the progress bar."""
        if self.env.main:
            from tqdm import tqdm

            tqdm.write(f"{self.name}: {message}")

    def greedy_eval(self, net: torch.nn.Module, records: list, max_new_tokens: int, step: int) -> dict | None:
        """Greedy evaluation (eval.py's path) of `records`: {task: metrics} on rank 0, None elsewhere."""
        if not records:
            return None
        import importlib

        eval_lib = importlib.import_module("eval")  # by name: `eval` is also a builtin
        res = eval_lib.evaluate_model(net, self.processor, self.frame_kind, records, max_new_tokens, self.env.device,
                                      out_dir=self.out / "eval" / f"step-{step:06d}", quiet=True)  # fmt: skip
        return None if res is None else res["tasks"]


def load_trained_model(args: argparse.Namespace, model_path: str, resume: Path | None, device: torch.device) -> M.Loaded:
    """The model a run trains, fp32: the checkpoint being resumed, else `model_path`; with --lora-rank the base model
    `model_path` with adapters (lora.py: everything else frozen), the checkpoint's adapters when resuming (its top
    level is the merged model). One line (SystemExit) when a checkpoint and the run disagree about LoRA."""
    if resume is not None and (resume / "adapter").is_dir() != bool(args.lora_rank):
        raise SystemExit(f"--resume {resume}: saved {'with' if (resume / 'adapter').is_dir() else 'without'} LoRA, "
                         f"this run is {'with' if args.lora_rank else 'without'}: resume with the same --lora-rank")
    weights = model_path if args.lora_rank else str(resume or model_path)
    loaded = M.load(weights, device=device, grad_ckpt=args.grad_ckpt, dtype=torch.float32)
    if args.lora_rank:  # before FSDP wrapping: FSDP2 keeps requires_grad as it finds it
        lora.apply(loaded.model, args.lora_rank, args.lora_alpha, args.lora_targets, seed=args.seed)
        if resume is not None:
            lora.load_adapter(loaded.model, resume / "adapter", model_path)
    return loaded


def start_run(args: argparse.Namespace, name: str, logs: tuple[str, ...] = ("log.jsonl",), tasks: list[str] | None = None,
              eval_data=None, eval_records: int = 0, default_model=None) -> Run:  # fmt: skip
    """Set up a training run, in the order that finds a user's mistakes before anything slow:

    1. the output folder: refused if it holds another run, unless --resume or --overwrite; --resume auto
       with nothing to resume in a folder that holds a run is refused too (its logs stay as they are);
    2. processes (torchrun) and seeds; the data (training and held-out records), validated;
    3. the model path checked (a directory, or a hub id that can be had offline), then loaded, frozen
       parts frozen, FSDP2-wrapped with more than one process;
    4. only then the run starts in --out: an --overwrite run's old files go, logs are reset (or cut at the
       resumed step), args.json is written, and SIGINT/SIGTERM now stop it with a checkpoint.
    """
    out = Path(args.out)
    resume = None
    if args.resume:
        resume = find_checkpoint(out, args.resume)
        if resume is None and holds_run(out) and not args.overwrite:
            raise SystemExit(f"--resume auto: {out} holds a run but no complete checkpoint to resume; its files are "
                             "left as they are. Add --overwrite to start over there, or pick another --out")  # fmt: skip
    elif holds_run(out) and not args.overwrite:
        raise SystemExit(f"{out} already holds a run (log, checkpoints or final/); nothing was changed. Continue it "
                         "with --resume auto, start over there with --overwrite, or pick another --out")  # fmt: skip
    env = init_distributed(group_of_one=args.cpu_offload)
    use_fsdp = env.world > 1 or args.cpu_offload
    seed_everything(args.seed + env.rank)
    import defaults

    with local_rank0_first(env):  # the embedded defaults are built once, not by every rank at once
        data_path = args.data or str(defaults.data_dir() / "train.jsonl")
    records = load_data(data_path, "--data", args.skip_bad, tasks, imagery_flags(args))
    eval_data = eval_data(data_path) if callable(eval_data) else eval_data  # SFT: test.jsonl beside the data
    held_out = load_data(eval_data, "--eval-data", args.skip_bad, tasks, imagery_flags(args))[: eval_records or None] if eval_data else []
    with local_rank0_first(env):  # after the data is known good: the default GRPO start is minutes of SFT
        model_path = args.model or (default_model or defaults.base_model)()
    check_model(model_path)

    start = checkpoint_step(resume) if resume is not None else 0
    loaded = load_trained_model(args, model_path, resume, env.device)
    net = loaded.model
    if args.freeze_vision:  # before wrapping: FSDP2 keeps requires_grad as it finds it
        net.model.visual.requires_grad_(False)
    if use_fsdp:
        net = fsdp.wrap_fsdp(net, activation_checkpointing=args.grad_ckpt, cpu_offload=args.cpu_offload)

    if env.main:  # the run starts: from here on --out is this run's
        out.mkdir(parents=True, exist_ok=True)
        if resume is None:
            for entry in RUN_FILES if args.overwrite else logs:
                shutil.rmtree(out / entry) if (out / entry).is_dir() else (out / entry).unlink(missing_ok=True)
        else:
            discard_torn(out)
            for entry in logs:  # what the interrupted run logged after its checkpoint is done again
                truncate_log(out / entry, start)
        (out / "args.json").write_text(json.dumps(vars(args), indent=2))
    barrier()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _on_signal)
    tensorboard = None
    if args.tensorboard and env.main:
        import plot

        tensorboard = plot.TensorBoard(out / "tensorboard", purge_step=start + 1 if resume is not None else None)
    run = Run(args, name, env, out, resume, start, model_path, records, held_out, net, loaded.processor,
              loaded.frame_kind, loaded.attn_impl, use_fsdp, JsonlLog(out / logs[0], env.main, tensorboard),
              JsonlLog(out / logs[-1], enabled=env.main and len(logs) > 1))  # fmt: skip
    n_train = sum(p.numel() for p in net.parameters() if p.requires_grad)
    adapted = f", LoRA rank {args.lora_rank} on {len(lora.adapters(net))} Linears" if args.lora_rank else ""
    what = "" if args.model else f" (the embedded default: defaults.{(default_model or defaults.base_model).__name__})"
    run.say(f"{model_path}{what} ({n_train / 1e6:.2f}M trainable, {env.device}, world {env.world}"
            f"{', FSDP' if use_fsdp else ''}{adapted}, attention {loaded.attn_impl}), {len(records)} records from {data_path}"
            + (f"; resumed from {resume} at step {start}" if resume else ""))  # fmt: skip
    return run


def learning_rate(args: argparse.Namespace, run: Run, small: float, large: float) -> float:
    """--lr, or the default that follows the model: `small` below 100M parameters (the tiny model, whether built
    or a checkpoint of it), `large` for real checkpoints."""
    if args.lr is not None:
        return args.lr
    n = sum(p.numel() for p in fsdp.unwrap(run.net).parameters())
    return small if n < 100e6 else large
