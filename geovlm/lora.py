"""LoRA (Hu et al., 2021) by hand: low-rank adapters on the text decoder's projections, everything else
frozen.

    h = W x + (alpha / r) B A x          W frozen; A [r, in] PEFT's init (Kaiming-uniform), B [out, r] = 0

so training starts exactly at the base model, and only r (in + out) numbers per adapted matrix are trained
(gradients and AdamW state for those alone: the memory LoRA saves).

    lora.apply(net, rank=8, alpha=16, targets=TARGETS)   # wraps the decoder layers' Linears in place
    with lora.disabled(net): ...                         # the base model again: GRPO's KL reference, no copy
    # HF weights W + (alpha/r) B A; PEFT keys
    merged, adapter = lora.merge(net.state_dict(), lora.adapters(net))
    lora.save_adapter(dir, adapter, lora.peft_config(rank, alpha, targets, base))
    lora.load_adapter(net, dir, base)                    # resume: the adapters back onto a fresh base model

Only the language model's decoder layers are adapted: Qwen2.5-VL's vision MLP uses the same names
(gate/up/down_proj), so targets are matched on the decoder's module paths, as a regex PEFT reads too. The
vision tower, embeddings, norms and LM head stay frozen. No dropout on the adapter input (PEFT's
lora_dropout=0): RL's gradients are noisy enough.

The adapter directory is PEFT's layout (adapter_config.json, adapter_model.safetensors with keys
base_model.model.<module path>.lora_A.weight / lora_B.weight), so `PeftModel.from_pretrained(base, dir)`
loads it; the trainers' checkpoints also hold the merged model, which needs no PEFT at all.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")  # attention + MLP
_ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")


class LoRALinear(torch.nn.Module):
    """base(x) + lora_B(scale * lora_A(x)); `enabled` False gives base(x) alone."""

    def __init__(
        self, base: torch.nn.Linear, rank: int, alpha: float, generator: torch.Generator | None = None
    ):
        super().__init__()
        self.base = base.requires_grad_(False)
        self.lora_A = torch.nn.Linear(base.in_features, rank, bias=False, dtype=base.weight.dtype)
        self.lora_B = torch.nn.Linear(rank, base.out_features, bias=False, dtype=base.weight.dtype)
        # A as PEFT (and nn.Linear) initialise it, from `generator` on the CPU: the same on every rank
        torch.nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5), generator=generator)
        torch.nn.init.zeros_(self.lora_B.weight)  # B A = 0: the adapted model starts as the base model
        self.to(base.weight.device)
        self.scale = alpha / rank
        self.enabled = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        if not self.enabled:
            return y
        # scale the [.., r] tensor and add in place: autograd then keeps only [.., r] activations for the
        # adapter, not two more of the layer's output size (nn.Linear's backward never reads its output)
        return y.add_(self.lora_B(self.lora_A(x) * self.scale))


def target_regex(targets: tuple[str, ...]) -> str:
    """The module paths adapted, as one regex (PEFT full-matches a string target_modules against module
    names)."""
    attn = [t for t in targets if t in _ATTENTION]
    mlp = [t for t in targets if t not in _ATTENTION]
    parts = ([rf"self_attn\.({'|'.join(attn)})"] if attn else []) + (
        [rf"mlp\.({'|'.join(mlp)})"] if mlp else []
    )
    return rf".*language_model\.layers\.\d+\.({'|'.join(parts)})"


def apply(
    net: torch.nn.Module, rank: int, alpha: float, targets: tuple[str, ...] = TARGETS, seed: int = 0
) -> int:
    """Freeze the whole (HF, unwrapped) model and wrap its targeted decoder Linears in LoRALinear; returns how
    many were wrapped. Before FSDP wrapping: the adapters are then sharded with their decoder layer. `seed`
    draws every A, so all ranks (whose global seeds differ) start from the same adapters."""
    net.requires_grad_(False)
    pattern = re.compile(target_regex(targets))
    found = [
        (name, m)
        for name, m in net.named_modules()
        if isinstance(m, torch.nn.Linear) and pattern.fullmatch(name)
    ]
    if not found:
        raise SystemExit(
            f"--lora-targets {','.join(targets)}: no module of this model matches {pattern.pattern}"
        )
    generator = torch.Generator().manual_seed(seed)
    for name, m in found:
        parent, _, child = name.rpartition(".")
        setattr(net.get_submodule(parent), child, LoRALinear(m, rank, alpha, generator))
    return len(found)


def adapters(net: torch.nn.Module) -> dict[str, LoRALinear]:
    """Module path -> LoRALinear (paths as in the HF model's state dict); empty for a model without LoRA."""
    return {name: m for name, m in net.named_modules() if isinstance(m, LoRALinear)}


@contextlib.contextmanager
def disabled(net: torch.nn.Module):
    """The base model inside the block (every adapter off), the adapted one after it. A flag per module, no
    weights touched: under FSDP the shards stay as they are and no collective runs."""
    mods = adapters(net).values()
    for m in mods:
        m.enabled = False
    try:
        yield
    finally:
        for m in mods:
            m.enabled = True


def merge(state: dict[str, torch.Tensor], mods: dict[str, LoRALinear]) -> tuple[dict, dict]:
    """A LoRA model's state dict -> (the merged HF state dict, under the base model's own names, with
    W + (alpha/r) B A in place of each adapted weight; PEFT's adapter state dict)."""
    merged, adapter = dict(state), {}
    for path, m in mods.items():
        a, b, w = (
            merged.pop(f"{path}.lora_A.weight"),
            merged.pop(f"{path}.lora_B.weight"),
            merged.pop(f"{path}.base.weight"),
        )
        merged[f"{path}.weight"] = (w.float() + m.scale * (b.float() @ a.float())).to(w.dtype)
        if f"{path}.base.bias" in merged:
            merged[f"{path}.bias"] = merged.pop(f"{path}.base.bias")
        adapter[f"base_model.model.{path}.lora_A.weight"] = a.contiguous()
        adapter[f"base_model.model.{path}.lora_B.weight"] = b.contiguous()
    return merged, adapter


def peft_config(rank: int, alpha: float, targets: tuple[str, ...], base: str) -> dict:
    """adapter_config.json as PEFT writes it (the fields it would fill with these same defaults are left
    out)."""
    return {
        "peft_type": "LORA",
        "task_type": None,
        "base_model_name_or_path": str(base),
        "r": rank,
        "lora_alpha": alpha,
        "lora_dropout": 0.0,
        "target_modules": target_regex(targets),
        "bias": "none",
        "fan_in_fan_out": False,
        "inference_mode": True,
        "init_lora_weights": True,
        "use_rslora": False,
        "use_dora": False,
        "modules_to_save": None,
        "rank_pattern": {},
        "alpha_pattern": {},
    }


def save_adapter(out_dir: str | os.PathLike, adapter: dict[str, torch.Tensor], config: dict) -> None:

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_file(
        {k: v.detach().cpu() for k, v in adapter.items()},
        str(out / "adapter_model.safetensors"),
        metadata={"format": "pt"},
    )
    (out / "adapter_config.json").write_text(json.dumps(config, indent=2))


def load_adapter(net: torch.nn.Module, adapter_dir: str | os.PathLike, base: str) -> None:
    """The adapter weights of `adapter_dir` into the LoRALinears of `net` (already `apply`d, not yet sharded);
    one line (SystemExit) when they were trained on another base model or do not fit."""

    adapter_dir = Path(adapter_dir)
    if not (adapter_dir / "adapter_config.json").exists():
        raise SystemExit(f"--resume: {adapter_dir.parent} holds no adapter/ (saved without --lora-rank)")
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    if config["base_model_name_or_path"] != str(base):
        raise SystemExit(
            f"--resume: the adapter in {adapter_dir} was trained on {config['base_model_name_or_path']}, "
            f"this run's model is {base}: pass the same --model"
        )
    state = {
        k.removeprefix("base_model.model."): v
        for k, v in load_file(str(adapter_dir / "adapter_model.safetensors")).items()
    }
    own = {k for k in net.state_dict() if ".lora_A." in k or ".lora_B." in k}
    if set(state) != own or any(net.get_parameter(k).shape != v.shape for k, v in state.items()):
        raise SystemExit(
            f"--resume: the adapter in {adapter_dir} does not fit this run's --lora-rank / --lora-targets"
        )
    with torch.no_grad():
        for k, v in state.items():
            net.get_parameter(k).copy_(v)
