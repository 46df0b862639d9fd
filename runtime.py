"""Run plumbing shared by the trainers: torch.distributed set-up, seeding, the lr schedule, JSONL logs.

Both trainers run unchanged from 1 process to N: started by torchrun (RANK/WORLD_SIZE set) they join
a process group (NCCL on CUDA, gloo on CPU); otherwise they run as a world of one.
"""

from __future__ import annotations

import json
import math
import os
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Dist:
    rank: int
    world: int
    local_rank: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed() -> Dist:
    """Join the torchrun process group if there is one; pick this rank's device."""
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
