"""Flags as dataclasses: a field is a flag, its type annotation the flag's type, its comment the flag's help.

    @dataclass
    class Config(RunFlags, OptimiserFlags):
        # ---- rollout
        group_size: PositiveInt = 8  # G: completions sampled per prompt

    args = parse_config(Config, argv, description=__doc__)     # python train_grpo.py --group-size 16

`--group-size` takes an int > 0 (PositiveInt = Annotated[int, positive_int]: the validator parses the text),
`--help` prints the comment and the default, a `# ---- name` line starts a group of flags. The flags both
trainers share are the dataclasses below (RunFlags, OptimiserFlags, LoRAFlags, ImageryFlags); each trainer
declares the rest in one `Config` of its own. Mistakes are one line (ArgumentParser.error).
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import io
import math
import re
import tokenize
import types
import typing
from dataclasses import dataclass
from typing import Annotated, Any

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


PositiveInt = Annotated[int, positive_int]
Count = Annotated[int, count]  # an int >= 0
Positive = Annotated[float, positive]
NonNegative = Annotated[float, non_negative]
Probability = Annotated[float, probability]


def choices(*values: str) -> tuple[str, ...]:
    """Annotated[str, choices("a", "b")]: the flag takes one of these."""
    return values


def _lora_targets(text: str) -> tuple[str, ...]:
    names = tuple(t.strip() for t in text.split(",") if t.strip())
    unknown = [t for t in names if t not in lora.TARGETS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"expected a comma list of {','.join(lora.TARGETS)}, got {text!r}")
    return names


# ----------------------------------------------------------------------------- the flags both trainers share
@dataclass
class RunFlags:
    # ---- run
    model: str | None = (
        None  # hub id or local checkpoint directory; None: the embedded default (built once, or shipped)
    )
    data: str | None = None  # training JSONL (records, see data.py); None: the embedded synthetic set
    skip_bad: bool = False  # skip malformed records (counted and reported) instead of stopping
    out: str = "runs/run"  # log.jsonl, checkpoints/ and final/ go here; a folder that holds another run is
    # refused unless --resume or --overwrite
    overwrite: bool = False  # start afresh in an --out that holds another run: its logs, checkpoints and
    # final/ are replaced once this run has started (never before)
    resume: str | None = None  # a checkpoint directory, or auto: the newest complete one in --out; continues
    # the step count, data position, RNG states and optimizer exactly
    save_every: Count = 50  # checkpoints/step-NNNNNN every N steps (and always final/, and one on
    # Ctrl-C/SIGTERM); 0 = only those
    keep: Count = 3  # keep the newest N checkpoints/step-*; 0 = all
    seed: Count = 0  # data order, sampling and initialisation
    tensorboard: bool = False  # also write every log row as TensorBoard events to OUT/tensorboard (PNG curves
    # are written to OUT/plots either way)


@dataclass
class OptimiserFlags:
    # ---- optimiser and memory
    lr: Positive | None = None  # peak AdamW learning rate; None: the trainer's default for the model's size
    warmup_steps: Count = 0  # linear warm-up, in optimiser steps
    weight_decay: NonNegative = 0.0  # weight decay (decoupled in AdamW)
    grad_clip: Positive = 1.0  # max global gradient norm
    grad_ckpt: bool = False  # gradient checkpointing (less memory, ~30% slower)
    freeze_vision: bool = False  # keep the vision tower frozen (the common RL setting); GRPO then computes
    # image features once per step and reuses them in every log-prob pass
    cpu_offload: bool = False  # FSDP with parameters, gradients and optimizer state on the CPU (big models on
    # few GPUs)


@dataclass
class LoRAFlags:
    # ---- LoRA (geovlm/lora.py)
    lora_rank: Count = 0  # train rank-r adapters on the language model's projections instead of every weight
    # (vision tower, embeddings, LM head frozen: implies --freeze-vision); 0 = full fine-tuning. A larger
    # --lr than full fine-tuning's is usual (e.g. 1e-4)
    lora_alpha: Positive | None = None  # the adapters' scale is alpha / rank; None: 2 x --lora-rank
    lora_targets: Annotated[tuple[str, ...] | None, _lora_targets] = None  # comma list of the decoder
    # layers' Linears to adapt (q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj); None: all of them


@dataclass
class ImageryFlags:
    # ---- GeoTIFF / non-8-bit imagery: defaults for records whose meta gives none
    bands: str | None = None  # 1-based band numbers shown as red, green, blue (or one band as grey), e.g.
    # 4,3,2; None: bands 1,2,3 (band 1 when the image has fewer than 3)
    stretch: str | None = None  # per-band percentile stretch to 0-255, e.g. 2,98; None: 2,98 for non-8-bit
    # data, none for 8-bit data
    nodata: str | None = None  # pixel value to mask before the stretch (black in the picture); None: the
    # GeoTIFF's GDAL_NODATA tag, if any


def lora_implies(args: Any) -> list[str]:
    """Fill the LoRA defaults; what that implies, said in words (start-up prints it). An error (str) for
    --lora-alpha / --lora-targets without --lora-rank."""
    if not args.lora_rank:
        given = [
            f for f, v in (("--lora-alpha", args.lora_alpha), ("--lora-targets", args.lora_targets)) if v
        ]
        if given:
            raise ValueError(f"{' and '.join(given)} given without --lora-rank (LoRA is off at rank 0)")
        return []
    args.lora_alpha = args.lora_alpha or 2.0 * args.lora_rank
    args.lora_targets = args.lora_targets or lora.TARGETS
    notes = [f"--lora-alpha {args.lora_alpha:g}", f"--lora-targets {','.join(args.lora_targets)}"]
    if not args.freeze_vision:  # the tower is frozen under LoRA: its features can be computed once per step
        args.freeze_vision = True
        notes.append("--freeze-vision (LoRA trains the decoder's adapters only)")
    return notes


# ----------------------------------------------------------------------------- dataclass -> argparse
def _field_docs(cls: type) -> dict[str, tuple[str, str]]:
    """field -> (help, group): the comment on the field's line and the comment lines right under it; the
    group is the last `# ---- title` line above it. From the source of every dataclass in the MRO."""
    docs: dict[str, tuple[str, str]] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass) or "__annotations__" not in vars(klass):
            continue
        try:
            lines = inspect.getsource(klass).splitlines()
        except (OSError, TypeError):  # no source (a frozen build): flags without help
            continue
        comments = {}
        for tok in tokenize.generate_tokens(io.StringIO("\n".join(lines) + "\n").readline):
            if tok.type == tokenize.COMMENT:
                comments[tok.start[0] - 1] = tok.string.lstrip("#").strip()
        own, group, last = vars(klass)["__annotations__"], klass.__name__, None
        for i, line in enumerate(lines):
            field = re.match(r"\s+(\w+)\s*:", line)
            if line.strip().startswith("# ----"):
                group, last = comments[i].lstrip("- ").strip(), None
            elif field and field.group(1) in own:
                last = field.group(1)
                docs[last] = (comments.get(i, ""), group)
            elif last and line.strip().startswith("#"):
                docs[last] = (f"{docs[last][0]} {comments[i]}", group)
            else:
                last = None
    return docs


def _without_none(hint: Any) -> Any:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):  # X | None: the flag's type is X
        return next(a for a in typing.get_args(hint) if a is not type(None))
    return hint


def _argparse_type(hint: Any) -> tuple[Any, bool]:
    """(the flag's type, validator or ("choices", values); is it a switch) for a field's resolved
    annotation."""
    hint, validator = _without_none(hint), None
    if typing.get_origin(hint) is Annotated:
        hint, *extra = typing.get_args(hint)
        validator = next((x for x in extra if callable(x)), None)
        picks = next((x for x in extra if isinstance(x, tuple)), None)
        if picks is not None:
            return ("choices", picks), False
        hint = _without_none(hint)
    if hint is bool:
        return None, True
    return validator or (hint if hint in (int, float, str) else str), False


def add_flags(parser: argparse.ArgumentParser, cls: type) -> None:
    """One flag per field of the dataclass `cls` (see the module docstring), in argument groups."""
    docs, hints = _field_docs(cls), typing.get_type_hints(cls, include_extras=True)
    groups: dict[str, argparse._ArgumentGroup] = {}
    order = [
        f
        for klass in cls.__mro__
        if dataclasses.is_dataclass(klass)
        for f in vars(klass).get("__annotations__", {})
    ]
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for name in dict.fromkeys(order):  # the class's own fields first, then its bases'
        f = fields[name]
        text, title = docs.get(name, ("", cls.__name__))
        g = groups.setdefault(title, parser.add_argument_group(title))
        kind, switch = _argparse_type(hints[name])
        # argparse %-formats help: a literal % in a comment is doubled
        flag, help_ = "--" + name.replace("_", "-"), text.replace("%", "%%") + " (default: %(default)s)"
        if switch:
            g.add_argument(flag, action="store_true", default=f.default, help=help_)
        elif isinstance(kind, tuple):
            g.add_argument(flag, choices=kind[1], default=f.default, help=help_)
        else:
            g.add_argument(flag, type=kind, default=f.default, help=help_)


def parse_config(
    cls: type, argv: list[str] | None = None, **parser_kwargs: Any
) -> tuple[Any, ArgumentParser]:
    """(an instance of the dataclass `cls` from the command line, the parser: its .error for later checks)."""
    parser = ArgumentParser(**parser_kwargs)
    add_flags(parser, cls)
    return cls(**vars(parser.parse_args(argv))), parser


def imagery_flags(args: Any) -> dict:
    """The --bands / --stretch / --nodata flags as imagery options, or one line (SystemExit) when
    malformed."""
    try:
        return imagery.options_from_args(args)
    except imagery.ImageError as e:
        raise SystemExit(f"{e}") from None


def add_imagery_flags(parser: argparse.ArgumentParser) -> None:
    """The GeoTIFF flags (`--bands`, `--stretch`, `--nodata`) for a command that reads images."""
    add_flags(parser, ImageryFlags)
