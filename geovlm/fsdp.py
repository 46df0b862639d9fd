"""FSDP2 done plainly: shard a Qwen2-VL / Qwen2.5-VL model over the process group, and run our own functions
on it.

    net = wrap_fsdp(model)         # fully_shard per vision block, vision tower, decoder layer, root
    with gathered(net):            # one all-gather per unit, then any number of forwards, no collective
        rollout = model.sample(net, inputs, ...)
    call(net, fn, *args)           # fn(hf_model, *args) inside the root's forward (its hooks fire)
    state = full_state_dict(net)   # the whole model on rank 0, for save_pretrained

Sharding layout (torch.distributed.fsdp.fully_shard, bottom-up): each vision block, the vision tower
(patch embedding + merger), each decoder layer, then the root. The root is `FSDPRoot`, a thin module
around the HF model whose forward runs one of our functions on it: model.py drives the HF submodules
directly (never the HF `forward`), so without it nothing would run the root's hooks, which gather what
the root owns (token embeddings, final norm, lm_head: tied or not, they stay together), pick the root at
the first forward, and finish the gradient reduce-scatter after backward. `model.token_logprobs`,
`model.sample` and `call` take either the plain HF model or an FSDPRoot.
"""

from __future__ import annotations

import contextlib

import torch

# torch.distributed.fsdp and .checkpoint are imported where a sharded model needs them: together 1.1 s, which
# every one-process command (a mistake in the flags too) would otherwise wait for


class FSDPRoot(torch.nn.Module):
    """The FSDP2 root around an HF model: `root(fn, *args)` = fn(hf_model, *args) inside the root's
    forward."""

    def __init__(self, module: torch.nn.Module):
        super().__init__()
        self.module = module
        self.gather_depth = 0  # > 0 inside `gathered`: every parameter is unsharded, no collective runs

    def forward(self, fn, *args, **kwargs):
        return fn(self.module, *args, **kwargs)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The HF model inside an FSDPRoot (config, generation_config, save_pretrained), or the model itself."""
    return model.module if isinstance(model, FSDPRoot) else model


def _fsdp_children(root: FSDPRoot) -> list:
    from torch.distributed.fsdp import FSDPModule

    return [m for m in root.module.modules() if isinstance(m, FSDPModule)]


def call(model: torch.nn.Module, fn, *args, **kwargs):
    """fn(hf_model, *args, **kwargs); through the root's forward when `model` is an FSDPRoot.

    Without gradients no backward will free what the root gathered, so it is resharded at once (unless
    inside `gathered`): an optimiser step must never meet a stale unsharded copy."""
    if not isinstance(model, FSDPRoot):
        return fn(model, *args, **kwargs)
    out = model(fn, *args, **kwargs)
    if not torch.is_grad_enabled() and model.gather_depth == 0:
        model.reshard()
    return out


def _noop(module):
    return None


@contextlib.contextmanager
def gathered(model: torch.nn.Module):
    """Unshard every parameter once (one all-gather per FSDP unit), keep them through any number of
    forwards, reshard on exit. Inside, the forwards run no collective at all, so ranks may run different
    numbers of them: a rollout's decoding loop (ranks stop at their own EOS), a rank with no prompts
    left to resample, an evaluation shard of another size. A no-op for a plain model; nests."""
    if not isinstance(model, FSDPRoot) or model.gather_depth:
        if isinstance(model, FSDPRoot):
            model.gather_depth += 1
        try:
            yield
        finally:
            if isinstance(model, FSDPRoot):
                model.gather_depth -= 1
        return
    children = _fsdp_children(model)
    with torch.no_grad():
        # the first forward through the root picks it as FSDP root (lazy init) and gathers its own
        model(_noop)
        for m in children:
            m.set_reshard_after_forward(False, recurse=False)
            m.unshard()
    model.gather_depth = 1
    try:
        yield
    finally:
        model.gather_depth = 0
        for m in children:
            m.reshard()
            m.set_reshard_after_forward(True, recurse=False)
        model.reshard()


def wrap_fsdp(
    model: torch.nn.Module,
    mixed_precision: bool | None = None,
    activation_checkpointing: bool = False,
    cpu_offload: bool = False,
) -> FSDPRoot:
    """Shard a Qwen2-VL / Qwen2.5-VL model with FSDP2 over the default process group; returns the FSDPRoot.

    mixed_precision (default: on CUDA): parameters all-gathered and computed in bf16, gradients reduced in
    fp32, over the fp32 master weights the model was loaded with. activation_checkpointing: recompute each
    decoder layer and vision block in backward. cpu_offload: sharded parameters, gradients and optimizer
    state live on the CPU (the optimizer steps there); each unit is copied to the GPU for its forward."""
    from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, OffloadPolicy, fully_shard

    device = next(model.parameters()).device
    if mixed_precision is None:
        mixed_precision = device.type == "cuda"
    mp = (
        MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        if mixed_precision
        else MixedPrecisionPolicy()
    )
    offload = CPUOffloadPolicy(pin_memory=device.type == "cuda") if cpu_offload else OffloadPolicy()
    kw = {"mp_policy": mp, "offload_policy": offload}
    if activation_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    core = model.model
    for block in core.visual.blocks:
        fully_shard(block, reshard_after_forward=True, **kw)
    fully_shard(core.visual, reshard_after_forward=True, **kw)  # patch_embed + merger
    for layer in core.language_model.layers:
        fully_shard(layer, reshard_after_forward=True, **kw)
    root = FSDPRoot(model)
    fully_shard(root, reshard_after_forward=False, **kw)  # embed_tokens, norm, lm_head: needed again at once
    return root


def full_state_dict(model: torch.nn.Module) -> dict | None:
    """The whole model's state dict, HF names, on the CPU: gathered on rank 0 (None elsewhere) under FSDP,
    None for a plain model (save then reads the model itself). Every rank must call it."""
    if not isinstance(model, FSDPRoot):
        return None
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    for m in [*_fsdp_children(model), model]:  # sharded fp32 masters registered, never a gathered (bf16) copy
        m.reshard()
    sd = get_model_state_dict(model.module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return sd if torch.distributed.get_rank() == 0 else None


def autocast(device: torch.device, net: torch.nn.Module | None = None):
    """bf16 compute over fp32 master weights on CUDA: autocast on one GPU; a sharded model (an FSDPRoot) casts
    to bf16 itself (its MixedPrecisionPolicy), so no autocast there. Plain fp32 on CPU."""
    if device.type == "cuda" and not isinstance(net, FSDPRoot):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
