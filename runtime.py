"""Run plumbing shared by the trainers: torch.distributed set-up, seeding, the lr schedule, JSONL logs,
the data streams and the checkpoints that resume a run exactly.

Both trainers run unchanged from 1 process to N: started by torchrun (RANK/WORLD_SIZE set) they join
a process group (NCCL on CUDA, gloo on CPU); otherwise they run as a world of one.

A checkpoint directory (checkpoints/step-N, and final/) is an ordinary HF safetensors model + processor
(`from_pretrained`, model.load, eval.py) with one extra folder, resume/:

    resume/optimizer/      the optimizer state, sharded as it is in memory (torch.distributed.checkpoint)
    resume/rank-00000.pt   per rank: every RNG state (python, numpy, torch, CUDA, the trainer's generators)
                           and the trainer's own state (data position)
    resume/state.json      step, world size, the trainer's global state; written last

The whole directory is written under a temporary name (.step-N.tmp-*) and renamed when complete, so a
crash leaves either the previous checkpoints untouched or a dot-directory that resuming ignores.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import re
import shutil
import socket
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp


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
    """Append-only JSONL log (one object per step), written by rank 0 only; easy to plot with pandas."""

    def __init__(self, path: str | os.PathLike, enabled: bool = True):
        self.path, self.enabled = Path(path), enabled
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, row: dict) -> None:
        if self.enabled:
            with open(self.path, "a") as f:
                f.write(json.dumps(row, default=float) + "\n")


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
                    keep: int = 0) -> Path:  # fmt: skip
    """Write the checkpoint directory `path` (see the module docstring); every rank must call it.

    state: the trainer's global position (JSON: step, stream positions, ...); rank_state: this rank's own
    (picklable); generators: this rank's torch.Generators, saved with the global RNG states. keep > 0
    prunes the other checkpoints/step-* directories beside `path` to the newest `keep`."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    import model as M

    path = Path(path)
    full = M.full_state_dict(net)  # the whole model on rank 0 (collective under FSDP)
    optim_state = get_optimizer_state_dict(M.unwrap(net), optimizer)  # this rank's shards

    def write_resume(tmp: Path | None) -> None:  # inside the temporary directory, before its rename
        if dist.is_initialized():
            box = [str(tmp) if tmp is not None else None]
            dist.broadcast_object_list(box, src=0)
            tmp = Path(box[0])
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
        M.save(M.unwrap(net), processor, path, state_dict=full, extra=write_resume)
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
    """Drop what interrupted saves left (.step-N.tmp-*, .final.tmp-*); keep > 0: keep only the newest
    `keep` step-N checkpoints. Called by rank 0 after a successful save (no other save is in flight)."""
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

    import model as M

    path = Path(path)
    state = json.loads((path / "resume" / "state.json").read_text())
    if state["world"] != env.world:
        raise SystemExit(f"--resume {path}: saved by {state['world']} processes, now {env.world}; "
                         "resume with the same number of processes")  # fmt: skip
    optim_state = get_optimizer_state_dict(M.unwrap(net), optimizer)  # the layout to load into
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        dcp.load({"optimizer": optim_state}, checkpoint_id=str(path / "resume" / "optimizer"), no_dist=not dist.is_initialized())
    set_optimizer_state_dict(M.unwrap(net), optimizer, optim_state)
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
    import model as M  # here: model.py must not depend on the run plumbing at import time

    if device.type == "cuda" and not isinstance(net, M.FSDPRoot):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
