"""Checkpoints that resume a run exactly.

A checkpoint directory (checkpoints/step-NNNNNN, the step zero-padded to six digits, and final/) is an
ordinary HF safetensors model + processor (`from_pretrained`, model.load, eval.py) with one extra folder,
resume/:

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

import json
import os
import re
import shutil
import warnings
from pathlib import Path

import torch
import torch.distributed as dist

import model as M
from geovlm import fsdp, lora
from geovlm.distributed import Dist, barrier
from geovlm.rng import rng_state, set_rng_state

CKPT_PATTERN = re.compile(r"step-(\d+)")


def save_checkpoint(
    path: str | os.PathLike,
    net: torch.nn.Module,
    processor,
    optimizer: torch.optim.Optimizer,
    env: Dist,
    state: dict,
    rank_state: dict,
    generators: dict | None = None,
    keep: int = 0,
    lora_config: dict | None = None,
) -> Path:
    """Write the checkpoint directory `path` (see the module docstring); every rank must call it.

    state: the trainer's global position (JSON: step, stream positions, ...); rank_state: this rank's own
    (picklable); generators: this rank's torch.Generators, saved with the global RNG states. keep > 0
    prunes the other checkpoints/step-* directories beside `path` to the newest `keep`. lora_config (PEFT's
    adapter_config.json, lora.peft_config): the model has adapters; the merged model and adapter/ are
    written."""
    # torch.distributed.checkpoint is imported here and in load_checkpoint: 1.2 s that a command stopped by a
    # mistake, or an evaluation, does not need
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    path = Path(path)
    full = fsdp.full_state_dict(net)  # the whole model on rank 0 (collective under FSDP)
    optim_state = get_optimizer_state_dict(fsdp.unwrap(net), optimizer)  # this rank's shards
    adapter = None
    if lora_config is not None and env.main:
        full, adapter = lora.merge(
            full if full is not None else fsdp.unwrap(net).state_dict(), lora.adapters(fsdp.unwrap(net))
        )

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
            dcp.save(
                {"optimizer": optim_state},
                checkpoint_id=str(resume / "optimizer"),
                no_dist=not dist.is_initialized(),
            )
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
            raise SystemExit(
                f"--resume {resume}: not a complete checkpoint (no resume/state.json, or the "
                "temporary directory of an interrupted save)"
            )
        return Path(resume)
    out = Path(out)
    found = [
        (s, d)
        for d in [*sorted((out / "checkpoints").glob("step-*")), out / "final"]
        if (s := checkpoint_step(d)) is not None
    ]
    return max(found, key=lambda t: t[0])[1] if found else None


def prune_checkpoints(ckpt_dir: Path, keep: int = 0) -> None:
    """Drop what interrupted saves left (.step-NNNNNN.tmp-*, .final.tmp-*); keep > 0: keep only the newest
    `keep` step-NNNNNN checkpoints. Called by rank 0 after a successful save (no other save is in flight)."""
    if keep > 0:
        steps = sorted(
            (s, d)
            for d in ckpt_dir.iterdir()
            if CKPT_PATTERN.fullmatch(d.name) and (s := checkpoint_step(d)) is not None
        )
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


def load_checkpoint(
    path: Path,
    net: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    env: Dist,
    generators: dict | None = None,
) -> tuple[dict, dict]:
    """Restore the optimizer and this rank's RNG states from `path` (the model weights were loaded from
    it already: it is an HF directory). Returns (the trainer's global state, this rank's own state)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict, set_optimizer_state_dict

    path = Path(path)
    state = json.loads((path / "resume" / "state.json").read_text())
    if state["world"] != env.world:
        raise SystemExit(
            f"--resume {path}: saved by {state['world']} processes, now {env.world}; "
            "resume with the same number of processes"
        )
    optim_state = get_optimizer_state_dict(fsdp.unwrap(net), optimizer)  # the layout to load into
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        dcp.load(
            {"optimizer": optim_state},
            checkpoint_id=str(path / "resume" / "optimizer"),
            no_dist=not dist.is_initialized(),
        )
    set_optimizer_state_dict(fsdp.unwrap(net), optimizer, optim_state)
    mine = torch.load(path / "resume" / f"rank-{env.rank:05d}.pt", weights_only=False)
    set_rng_state(mine["rng"], generators)
    return state, mine["trainer"]
