"""torch.distributed, as much as the trainers need: join torchrun's process group (NCCL on CUDA, gloo on CPU)
or run as a world of one, and the few collectives that keep N processes in step.

Both trainers run unchanged from 1 process to N: started by torchrun (RANK/WORLD_SIZE set) they join a
process group; otherwise every collective here is the identity.
"""

from __future__ import annotations

import contextlib
import os
import socket
from dataclasses import dataclass

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


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def init_distributed(group_of_one: bool = False) -> Dist:
    """Join the torchrun process group if there is one; pick this rank's device.

    group_of_one: without torchrun, still make a one-process group (FSDP needs one, e.g. --cpu-offload)."""
    if "RANK" not in os.environ and group_of_one:
        os.environ.update(
            RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port())
        )
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


def world_size() -> int:
    """The number of processes torchrun started (1 without torchrun); readable before any process group
    exists."""
    return int(os.environ.get("WORLD_SIZE", "1"))


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


def rank_world() -> tuple[int, int]:
    """(rank, world): the process group's when there is one, else torchrun's environment (or 0, 1)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def gather_to_rank0(items: list) -> list | None:
    """Every rank's list, concatenated in rank order, on rank 0 (None elsewhere); the list itself alone."""
    rank, world = rank_world()
    if world == 1:
        return items
    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError("WORLD_SIZE > 1 but torch.distributed is not initialised")
    parts: list = [None] * world
    dist.all_gather_object(parts, items)
    return [x for part in parts for x in part] if rank == 0 else None
