"""The flags both trainers share (run, optimiser, LoRA, GeoTIFF imagery), their value types, and an argparse
whose errors are one line. Each trainer declares its own flags in its `parse_args` and adds these groups."""

from __future__ import annotations

import argparse
import math

from geovlm import imagery, lora


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
            raise argparse.ArgumentTypeError(
                f"expected {'an integer' if kind is int else 'a number'}, got {text!r}"
            ) from None
        if not (value > lo if strict else value >= lo) or (kind is float and not math.isfinite(value)):
            raise argparse.ArgumentTypeError(f"must be {'>' if strict else '>='} {lo}, got {text}")
        return value

    return parse


positive_int, count, positive, non_negative = (
    _number(int, 0, True),
    _number(int, 0, False),
    _number(float, 0, True),
    _number(float, 0, False),
)


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


def add_run_flags(
    p: argparse.ArgumentParser,
    name: str,
    default_model: str = "defaults.base_model(): the embedded tiny model",
) -> argparse._ArgumentGroup:
    """--model, --data, --out, checkpoints, resume, seed: the same meaning in both trainers."""
    g = p.add_argument_group("run")
    g.add_argument(
        "--model",
        default=None,
        help=f"hub id or local checkpoint directory; None: {default_model} (built on first use)",
    )
    g.add_argument(
        "--data", default=None, help="training JSONL (records, see data.py); None: the embedded synthetic set"
    )
    g.add_argument(
        "--skip-bad",
        action="store_true",
        help="skip malformed records (counted and reported) instead of stopping",
    )
    g.add_argument(
        "--out",
        default=f"runs/{name}",
        help="log.jsonl, checkpoints/ and final/ go here; a folder that "
        "holds another run is refused unless --resume or --overwrite",
    )
    g.add_argument(
        "--overwrite",
        action="store_true",
        help="start afresh in an --out that holds another run: its "
        "logs, checkpoints and final/ are replaced once this run has started (never before)",
    )
    g.add_argument(
        "--resume",
        default=None,
        help="a checkpoint directory, or auto: the newest complete one in --out; "
        "continues the step count, data position, RNG states and optimizer exactly",
    )
    g.add_argument(
        "--save-every",
        type=count,
        default=50,
        help="checkpoints/step-NNNNNN every N steps (and always final/, "
        "and one on Ctrl-C/SIGTERM); 0 = only those",
    )
    g.add_argument("--keep", type=count, default=3, help="keep the newest N checkpoints/step-*; 0 = all")
    g.add_argument("--seed", type=count, default=0, help="data order, sampling and initialisation")
    g.add_argument(
        "--tensorboard",
        action="store_true",
        help="also write every log row as TensorBoard events to "
        "OUT/tensorboard (PNG curves are written to OUT/plots either way)",
    )
    add_imagery_flags(p)  # --bands, --stretch, --nodata: defaults for records whose meta gives none
    return g


def add_optimiser_flags(p: argparse.ArgumentParser, lr_help: str, warmup: int) -> argparse._ArgumentGroup:
    g = p.add_argument_group("optimiser and memory")
    g.add_argument("--lr", type=positive, default=None, help=f"peak AdamW learning rate; None: {lr_help}")
    g.add_argument("--warmup-steps", type=count, default=warmup, help="linear warm-up, in optimiser steps")
    g.add_argument("--weight-decay", type=non_negative, default=0.0, help="AdamW weight decay")
    g.add_argument("--grad-clip", type=positive, default=1.0, help="max global gradient norm")
    g.add_argument(
        "--grad-ckpt", action="store_true", help="gradient checkpointing (less memory, ~30%% slower)"
    )
    g.add_argument(
        "--freeze-vision",
        action="store_true",
        help="keep the vision tower frozen (the common RL setting); "
        "GRPO then computes image features once per step and reuses them in every log-prob pass",
    )
    g.add_argument(
        "--cpu-offload",
        action="store_true",
        help="FSDP with parameters, gradients and optimizer state on the CPU (big models on few GPUs)",
    )
    return g


def imagery_flags(args: argparse.Namespace) -> dict:
    """The --bands / --stretch / --nodata flags as imagery options, or one line (SystemExit) when malformed."""
    try:
        return imagery.options_from_args(args)
    except imagery.ImageError as e:
        raise SystemExit(f"{e}") from None


def add_imagery_flags(parser: argparse.ArgumentParser) -> None:
    """The GeoTIFF flags (`--bands`, `--stretch`, `--nodata`) for a command that reads images."""
    g = parser.add_argument_group("GeoTIFF / non-8-bit imagery")
    g.add_argument(
        "--bands",
        default=None,
        metavar="R,G,B",
        help="1-based band numbers shown as red, green, blue (or one band as grey), e.g. 4,3,2; "
        "None: bands 1,2,3 (band 1 when the image has fewer than 3) (default: %(default)s)",
    )
    g.add_argument(
        "--stretch",
        default=None,
        metavar="LOW,HIGH",
        help="per-band percentile stretch to 0-255; None: 2,98 for non-8-bit data, none for 8-bit "
        "data (default: %(default)s)",
    )
    g.add_argument(
        "--nodata",
        default=None,
        metavar="VALUE",
        help="pixel value to mask before the stretch (black in the picture); None: the GeoTIFF's "
        "GDAL_NODATA tag, if any (default: %(default)s)",
    )


def _targets(text: str) -> tuple[str, ...]:
    names = tuple(t.strip() for t in text.split(",") if t.strip())
    unknown = [t for t in names if t not in lora.TARGETS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"expected a comma list of {','.join(lora.TARGETS)}, got {text!r}")
    return names


def add_lora_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("LoRA (lora.py)")
    g.add_argument(
        "--lora-rank",
        type=count,
        default=0,
        help="train rank-r adapters on the language model's "
        "projections instead of every weight (vision tower, embeddings, LM head frozen, as --freeze-vision); "
        "0 = full fine-tuning. A larger --lr than full fine-tuning's is usual (e.g. 1e-4)",
    )
    g.add_argument(
        "--lora-alpha",
        type=positive,
        default=None,
        help="the adapters' scale is alpha / rank; None: 2 x --lora-rank",
    )
    g.add_argument(
        "--lora-targets",
        type=_targets,
        default=None,
        help="comma list of the decoder layers' Linears "
        f"to adapt, of {','.join(lora.TARGETS)}; None: all of them (attention and MLP)",
    )


def check_lora_flags(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Fill the LoRA defaults, or one line (p.error) for --lora-alpha / --lora-targets without --lora-rank."""
    if not args.lora_rank:
        given = [
            f
            for f, v in (("--lora-alpha", args.lora_alpha), ("--lora-targets", args.lora_targets))
            if v is not None
        ]
        if given:
            p.error(f"{' and '.join(given)} given without --lora-rank (LoRA is off at rank 0)")
        return
    args.lora_alpha = args.lora_alpha or 2.0 * args.lora_rank
    args.lora_targets = args.lora_targets or lora.TARGETS
    args.freeze_vision = True  # the tower is frozen under LoRA: its features can be computed once per step
