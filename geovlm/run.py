"""One training run's start and stop, for both trainers: `start_run` checks what a user can get wrong before
anything slow (the output folder, the data, the model path), then sets up processes, the model and the logs;
`Run` saves, stops on Ctrl-C / SIGTERM with a checkpoint, and draws the run's pictures at the end."""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from huggingface_hub import try_to_load_from_cache
from tqdm import tqdm

import data
import model as M
from geovlm import fsdp, lora, plot, viewer
from geovlm.checkpoints import (
    checkpoint_step,
    discard_torn,
    find_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from geovlm.distributed import Dist, all_reduce_sum, barrier, init_distributed, local_rank0_first
from geovlm.flags import imagery_flags
from geovlm.logs import JsonlLog, truncate_log
from geovlm.rng import seed_everything

RUN_FILES = (
    "log.jsonl",
    "rollouts.jsonl",
    "rollouts.html",
    "args.json",
    "checkpoints",
    "final",
    "eval",
    "plots",
    "tensorboard",
)


_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def holds_run(out: Path) -> bool:
    """True when `out` holds what a run made and a rerun would lose: logged rows, evaluations, checkpoints or
    a final model. The args.json (or plots) of a start that failed before its first row do not count."""

    def has(name: str) -> bool:
        path = out / name
        return (
            path.is_dir() and any(path.iterdir())
            if path.is_dir()
            else path.is_file() and path.stat().st_size > 0
        )

    return out.is_dir() and any(
        has(name) for name in ("log.jsonl", "rollouts.jsonl", "checkpoints", "final", "eval")
    )


def check_model(path_or_id: str) -> None:
    """A local model directory, or a hub id that can be had: else one line saying what to do (SystemExit),
    before anything loads. Offline (HF_HUB_OFFLINE=1), a hub id must already be in the Hugging Face cache."""
    if os.path.isdir(path_or_id):
        if not (Path(path_or_id) / "config.json").exists():
            raise SystemExit(
                f"--model {path_or_id}: this directory holds no config.json (not an HF model directory)"
            )
        return
    if os.path.exists(path_or_id) or not _HUB_ID.fullmatch(path_or_id):
        raise SystemExit(
            f"--model {path_or_id}: no such directory (and not a hub id like Qwen/Qwen2.5-VL-3B-Instruct)"
        )

    if isinstance(try_to_load_from_cache(path_or_id, "config.json"), str):
        return
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0", "false", "False"):
        raise SystemExit(
            f"--model {path_or_id}: not in the Hugging Face cache and HF_HUB_OFFLINE is set; download it "
            f"where there is network (hf download {path_or_id}) or pass a local directory"
        )
    try:
        socket.create_connection(("huggingface.co", 443), timeout=3).close()
    except OSError:
        raise SystemExit(
            f"--model {path_or_id}: not in the Hugging Face cache and huggingface.co cannot be reached; "
            "pass a local directory, or download it where there is network"
        ) from None


def load_data(
    path: str | os.PathLike,
    what: str,
    skip_bad: bool = False,
    tasks: list[str] | None = None,
    image_options: dict | None = None,
) -> list:
    """Validated records, or one line naming file:line and the field (SystemExit): a user's data, not our bug.
    image_options (the GeoTIFF flags) become each record's meta.bands / stretch / nodata unless it has its
    own, and are checked against its images there (--bands 4,3,2 on a 3-band file is a data error, before any
    model loads)."""
    try:
        records = data.load_records(path, skip_bad=skip_bad, tasks=tasks, meta_defaults=image_options)
    except (data.RecordError, ValueError) as e:
        raise SystemExit(f"{what}: {e}") from None
    except OSError as e:
        raise SystemExit(f"{what} {path}: {e.strerror or e}") from None
    if not records:
        raise SystemExit(f"{what} {path}: no records" + (f" of task(s) {', '.join(tasks)}" if tasks else ""))
    return records


_INTERRUPTED: list[int] = []  # signals received; the loop finishes its step, saves and stops


VIEWER_ROWS = 2000  # the newest completions in rollouts.html (each image is embedded once, shrunk)


def _on_signal(signum, frame) -> None:
    if not _INTERRUPTED:  # one line per process, however many signals arrive
        rank = f"rank {dist.get_rank()}: " if dist.is_initialized() else ""
        print(
            f"{rank}{signal.Signals(signum).name}: finishing this step, then a checkpoint, then stop",
            flush=True,
        )
    _INTERRUPTED.append(signum)


def catch_stop_signals() -> None:
    """From here on SIGINT / SIGTERM only set a flag (`stop_signalled`): the training loop finishes its step,
    saves a checkpoint and stops, instead of dying mid-step with the step's work lost."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _on_signal)


def stop_signalled() -> bool:
    """This process got SIGINT or SIGTERM since `catch_stop_signals`."""
    return bool(_INTERRUPTED)


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
        """Optimizer, RNG states and the trainer's state from the checkpoint being resumed (weights: loaded
        already)."""
        state, _ = load_checkpoint(self.resume, self.net, optimizer, self.env, generators)
        return state

    def save(
        self,
        path: Path,
        optimizer: torch.optim.Optimizer,
        state: dict,
        generators: dict | None = None,
        keep: int = 0,
    ) -> None:
        a = self.args
        adapter = (
            lora.peft_config(a.lora_rank, a.lora_alpha, a.lora_targets, self.model_path)
            if a.lora_rank
            else None
        )
        save_checkpoint(
            path,
            self.net,
            self.processor,
            optimizer,
            self.env,
            state,
            rank_state={},
            generators=generators,
            keep=keep,
            lora_config=adapter,
        )
        self.say(f"saved step {state['step']}: {path}")

    def stop_requested(self) -> bool:
        """True on every rank once any got SIGINT/SIGTERM (one tiny all-reduce a step, so all stop
        together)."""
        return bool(all_reduce_sum(float(stop_signalled()), self.env.device) > 0)

    def finish(self) -> None:
        """The pictures of the run (rank 0): PNG curves of log.jsonl in OUT/plots, the rollouts as an HTML
        page."""
        if not self.env.main:
            return
        if self.log.tensorboard is not None:
            self.log.tensorboard.close()
        plot.plot_run(self.out, quiet=True)
        if self.rollout_log.enabled and self.rollout_log.path.exists():
            viewer.write_viewer(self.rollout_log.path, max_rows=VIEWER_ROWS)
        self.say(
            f"curves in {self.out / 'plots'}/"
            + (
                f", completions in {self.rollout_log.path.with_suffix('.html')}"
                if self.rollout_log.path.with_suffix(".html").exists()
                else ""
            )
        )

    def stop(self, step: int) -> None:
        """After the interrupt's checkpoint: the pictures, one line per process, then exit 130 (as after
        Ctrl-C)."""
        self.finish()
        barrier()
        rank = f"rank {self.env.rank}: " if self.env.world > 1 else ""
        print(
            f"{self.name}: {rank}stopped after step {step}; continue with the same command and --resume auto",
            flush=True,
        )
        raise SystemExit(130)

    def finished(self, total: int) -> bool:
        """A resumed run that had reached `total` already (its final/ checkpoint): say so; nothing to do."""
        if self.start < total:
            return False
        self.say(f"{self.out} finished at step {self.start} already ({self.resume}); nothing to do")
        return True

    def say(self, message: str) -> None:
        """One line from rank 0, above the progress bar."""
        if self.env.main:
            tqdm.write(f"{self.name}: {message}")


def load_trained_model(
    args: argparse.Namespace, model_path: str, resume: Path | None, device: torch.device
) -> M.Loaded:
    """The model a run trains, fp32: the checkpoint being resumed, else `model_path`; with --lora-rank the
    base model `model_path` with adapters (lora.py: everything else frozen), the checkpoint's adapters when
    resuming (its top level is the merged model). One line (SystemExit) when a checkpoint and the run disagree
    about LoRA."""
    if resume is not None and (resume / "adapter").is_dir() != bool(args.lora_rank):
        raise SystemExit(
            f"--resume {resume}: saved {'with' if (resume / 'adapter').is_dir() else 'without'} LoRA, "
            f"this run is {'with' if args.lora_rank else 'without'}: resume with the same --lora-rank"
        )
    weights = model_path if args.lora_rank else str(resume or model_path)
    loaded = M.load(weights, device=device, grad_ckpt=args.grad_ckpt, dtype=torch.float32)
    if args.lora_rank:  # before FSDP wrapping: FSDP2 keeps requires_grad as it finds it
        lora.apply(loaded.model, args.lora_rank, args.lora_alpha, args.lora_targets, seed=args.seed)
        if resume is not None:
            lora.load_adapter(loaded.model, resume / "adapter", model_path)
    return loaded


def shipped_origin(model_dir: Path) -> str:
    """' [shipped start: `COMMAND` at COMMIT]' for a start shipped with scripts/ship_start.py (its
    manifest.json), else ''. A manifest.json of another kind in a user's model folder is not ours: ignored."""
    try:
        made = json.loads((model_dir / "manifest.json").read_text())
        return f" [shipped start: `{made['command']}` at {made['commit']}]"
    except (OSError, ValueError, TypeError, KeyError):
        return ""


def start_run(
    args: argparse.Namespace,
    name: str,
    default_data: Callable[[], str],
    default_model: Callable[[], str],
    logs: tuple[str, ...] = ("log.jsonl",),
    tasks: list[str] | None = None,
    eval_data=None,
    eval_records: int = 0,
    plan: Callable[[list], list[str]] | None = None,
) -> Run:
    """Set up a training run, in the order that finds a user's mistakes before anything slow:

    default_data / default_model: what --data / --model mean when not given (the trainer's embedded defaults,
    built on first use, or shipped). tasks: keep only these tasks' records. plan(records) -> the tasks the run
    trains, or one line (SystemExit) when the data cannot serve the flags; the held-out records are those
    tasks'.

    1. the output folder: refused if it holds another run, unless --resume or --overwrite; --resume auto
       with nothing to resume in a folder that holds a run is refused too (its logs stay as they are);
    2. processes (torchrun) and seeds; the data (training and held-out records), validated;
    3. the model path checked (a directory, or a hub id that can be had offline), then loaded, frozen
       parts frozen, FSDP2-wrapped with more than one process;
    4. only then the run starts in --out: an --overwrite run's old files go, logs are reset (or cut at the
       resumed step), args.json is written, and SIGINT/SIGTERM now stop it with a checkpoint.
    """
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise SystemExit(f"--out {out}: a file, not a folder; pick a folder (it is made when missing)")
    resume = None
    if args.resume:
        resume = find_checkpoint(out, args.resume)
        if resume is None and holds_run(out) and not args.overwrite:
            raise SystemExit(
                f"--resume auto: {out} holds a run but no complete checkpoint to resume; its files are "
                "left as they are. Add --overwrite to start over there, or pick another --out"
            )
        if resume is None and os.environ.get("RANK", "0") == "0":
            print(f"{name}: --resume auto: no checkpoint in {out}; starting a fresh run there", flush=True)
    elif holds_run(out) and not args.overwrite:
        raise SystemExit(
            f"{out} already holds a run (log, checkpoints or final/); nothing was changed. Continue it "
            "with --resume auto, start over there with --overwrite, or pick another --out"
        )
    if args.model:  # a path or hub id that cannot be had is known from the flag alone
        check_model(args.model)
    env = init_distributed(group_of_one=args.cpu_offload)
    use_fsdp = env.world > 1 or args.cpu_offload
    seed_everything(args.seed + env.rank)
    with local_rank0_first(env):  # the embedded defaults are built once, not by every rank at once
        data_path = args.data or default_data()
    records = load_data(data_path, "--data", args.skip_bad, tasks, imagery_flags(args))
    trained = plan(records) if plan is not None else tasks  # e.g. --task vqa on data without vqa: one line
    eval_data = eval_data(data_path) if callable(eval_data) else eval_data  # SFT: test.jsonl beside the data
    held_out = (
        load_data(eval_data, "--eval-data", args.skip_bad, trained, imagery_flags(args))[
            : eval_records or None
        ]
        if eval_data
        else []
    )
    with local_rank0_first(env):  # after the data is known good: a default model may be built on first use
        model_path = args.model or default_model()

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
                shutil.rmtree(out / entry) if (out / entry).is_dir() else (out / entry).unlink(
                    missing_ok=True
                )
        else:
            discard_torn(out)
            for entry in logs:  # what the interrupted run logged after its checkpoint is done again
                truncate_log(out / entry, start)
        (out / "args.json").write_text(json.dumps(vars(args), indent=2))
    barrier()
    catch_stop_signals()
    tensorboard = None
    if args.tensorboard and env.main:
        tensorboard = plot.TensorBoard(
            out / "tensorboard", purge_step=start + 1 if resume is not None else None
        )
    run = Run(
        args,
        name,
        env,
        out,
        resume,
        start,
        model_path,
        records,
        held_out,
        net,
        loaded.processor,
        loaded.frame_kind,
        loaded.attn_impl,
        use_fsdp,
        JsonlLog(out / logs[0], env.main, tensorboard),
        JsonlLog(out / logs[-1], enabled=env.main and len(logs) > 1),
    )
    n_train = sum(p.numel() for p in net.parameters() if p.requires_grad)
    adapted = (
        f", LoRA rank {args.lora_rank} on {len(lora.adapters(fsdp.unwrap(net)))} Linears"
        if args.lora_rank
        else ""
    )
    what = (
        "" if args.model else f" (the embedded default: {default_model.__module__}.{default_model.__name__})"
    )
    what += shipped_origin(Path(model_path))
    run.say(
        f"{model_path}{what} ({n_train / 1e6:.2f}M trainable, {env.device}, world {env.world}"
        f"{', FSDP' if use_fsdp else ''}{adapted}, attention {loaded.attn_impl}), {len(records)} records "
        f"from {data_path}" + (f"; resumed from {resume} at step {start}" if resume else "")
    )
    if getattr(args, "implied", None):  # what the flags left unset means here, and what they imply
        run.say("implied by the flags: " + "; ".join(args.implied))
    return run


def learning_rate(args: argparse.Namespace, run: Run, small: float, large: float) -> float:
    """--lr, or the default that follows the model: `small` below 100M parameters (the tiny model, whether
    built or a checkpoint of it), `large` for real checkpoints."""
    if args.lr is not None:
        return args.lr
    n = sum(p.numel() for p in fsdp.unwrap(run.net).parameters())
    return small if n < 100e6 else large
