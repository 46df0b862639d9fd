"""Model: loading and saving, token log-probs, and the KV-cached group sampler.

    loaded = load("Qwen/Qwen2.5-VL-3B-Instruct")    # or a local directory
                                                    # (defaults.base_model(): the tiny one)
    save(loaded.model, loaded.processor, "ckpt/x")   # HF safetensors dir, written atomically
    rollout = sample(loaded.model, inputs, group_size=8, max_new_tokens=256)   # G completions per prompt
    logp = token_logprobs(loaded.model, inputs, rollout.completion_ids, rollout.completion_mask, group_size=8)

Everything here works on a stock HF checkpoint and is plain PyTorch; the fast paths (the fused log-prob
head, the compiled decode step) live in geovlm/kernels.py, one line away. Under FSDP2 the trainers run these
functions through fsdp.call(net, fn, ...) (fsdp.py); nothing here knows about sharding.
"""

from __future__ import annotations

import inspect
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from geovlm import kernels

# Never sampled: emitting one makes the next forward fail ("Image features and image tokens do not match").
VISION_TOKENS = [
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
]


@dataclass
class Loaded:
    model: torch.nn.Module
    processor: object
    frame_kind: str  # "pixels" (Qwen2.5-VL: absolute pixels of the resized input) or "0-1000" (Qwen2-VL)
    attn_impl: str
    device: torch.device


# ----------------------------------------------------------------------------- loading and saving


def pick_device() -> torch.device:
    return (
        torch.device("cuda", torch.cuda.current_device())
        if torch.cuda.is_available()
        else torch.device("cpu")
    )


def attention_backend(device: torch.device) -> str:
    """flash_attention_2 when flash_attn imports on CUDA, else PyTorch SDPA (which has its own flash
    kernel)."""
    if device.type == "cuda":
        try:
            import flash_attn  # noqa: F401

            return "flash_attention_2"
        except ImportError:
            pass
    return "sdpa"


def frame_kind_of(config) -> str:
    """Qwen2.5-VL speaks absolute pixels of its resized input; Qwen2-VL speaks 0-1000."""
    return "0-1000" if config.model_type == "qwen2_vl" else "pixels"


# M-RoPE layouts: which position (0 time, 1 row, 2 column) turns each of a head's rotary frequencies,
# highest first. "sections" is Qwen2.5-VL's: contiguous blocks of rope_parameters' mrope_section, so one axis
# gets only the slow frequencies (the tiny model's columns, 10 of 16 at 2,4,10). "interleaved" alternates rows
# and columns, so each sees fast and slow ones (Qwen3-VL's idea; here time keeps its block, first): on the
# one-square probe it was best in 3 of 3 seeds (docs/results.md, "Where the boxes miss"). A tiny model's
# config names it (text_config.mrope_layout, tiny.build_tiny); load() applies it, plain from_pretrained not.
MROPE_LAYOUTS = ("sections", "interleaved")


def mrope_axes(section: list[int] | tuple[int, ...], layout: str = "sections") -> list[int]:
    """The position axis of each rotary frequency, highest first: mrope_axes((2, 7, 7), "interleaved") is
    [0, 0, 1, 2, 1, 2, ...]: rows and columns alternate (a row first) while both have some left."""
    time, rows, cols = section
    if layout == "sections":
        return [0] * time + [1] * rows + [2] * cols
    if layout != "interleaved":
        raise ValueError(f"unknown M-RoPE layout {layout!r}; expected one of {MROPE_LAYOUTS}")
    return [0] * time + [axis for k in range(max(rows, cols)) for axis, n in ((1, rows), (2, cols)) if k < n]


def recompose_frequencies(freq: torch.Tensor, axes: torch.Tensor) -> torch.Tensor:
    """HF's Qwen2_5_VLRotaryEmbedding.recomposition_frequencies for any layout: freq [3, batch, positions,
    half head dim] (each frequency turned by the time, row and column positions) -> [batch, positions, head
    dim], frequency j taking position axes[j] (mrope_axes), repeated for the rotated half."""
    picked = freq.gather(0, axes.expand(1, *freq.shape[1:])).squeeze(0)
    return torch.cat((picked, picked), dim=-1)


def use_mrope_layout(model: torch.nn.Module) -> None:
    """Make a Qwen2.5-VL model's rotary embedding follow its config's mrope_layout (no-op for "sections")."""
    layout = getattr(model.config.get_text_config(), "mrope_layout", "sections")
    if layout == "sections":
        return
    if model.config.model_type != "qwen2_5_vl":
        raise ValueError(f"mrope_layout {layout!r} is for Qwen2.5-VL models, not {model.config.model_type!r}")
    rope = model.model.language_model.rotary_emb
    # a buffer, so it moves with the model and no forward (a decode step included) copies it to the device
    rope.register_buffer("mrope_axes", torch.tensor(mrope_axes(rope.mrope_section, layout)), persistent=False)
    rope.recomposition_frequencies = lambda freq: recompose_frequencies(freq, rope.mrope_axes)


def load(
    path_or_id: str,
    device: torch.device | str | None = None,
    grad_ckpt: bool = False,
    dtype: torch.dtype | None = None,
) -> Loaded:
    """Model + processor for Qwen2-VL / Qwen2.5-VL: bf16 on CUDA, fp32 on CPU (trainers ask for fp32
    master weights and autocast to bf16)."""
    # imported here: the auto classes pull in the image processors and torchvision (3 s), which a command that
    # stops at a mistake in its flags or data must not wait for
    from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

    device = torch.device(device) if device is not None else pick_device()
    dtype = dtype or (torch.bfloat16 if device.type == "cuda" else torch.float32)
    attn = attention_backend(device)
    config = AutoConfig.from_pretrained(path_or_id)
    if config.model_type not in ("qwen2_vl", "qwen2_5_vl"):
        raise ValueError(f"{path_or_id}: model_type {config.model_type!r} is not Qwen2-VL or Qwen2.5-VL")
    model = AutoModelForImageTextToText.from_pretrained(path_or_id, dtype=dtype, attn_implementation=attn)
    use_mrope_layout(model)
    model.to(device)
    if grad_ckpt:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    processor = AutoProcessor.from_pretrained(path_or_id)
    processor.tokenizer.padding_side = "left"
    return Loaded(model, processor, frame_kind_of(config), attn, device)


def save(
    model: torch.nn.Module, processor, out_dir: str | os.PathLike, state_dict: dict | None = None, extra=None
) -> Path:
    """Write a safetensors HF directory atomically: a temporary sibling, then one rename.

    state_dict: the weights to write (e.g. gathered from FSDP shards); default the model's own.
    extra(tmp_dir): writes more into the directory before the rename (the trainers' resume state)."""
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        model.save_pretrained(tmp, state_dict=state_dict, safe_serialization=True)
        processor.save_pretrained(tmp)
        if extra is not None:
            extra(tmp)
        if out.exists():  # replace: move the old one aside first so a crash never leaves neither
            old = out.with_name(f".{out.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


# ----------------------------------------------------------------------------- forward pieces
# We drive the HF modules ourselves (vision tower, decoder stack, lm_head) instead of `forward`/`generate`:
# images are encoded once per prompt, M-RoPE positions are computed once and then given explicitly
# (the model's stored `rope_deltas` are wrong after the cache is expanded to G samples), and log-probs
# come from hidden states without materialising [tokens x vocab] fp32 logits at once.


def _kwarg_name(fn, new: str, old: str) -> str:
    """transformers renames kwargs across 5.x (past_key_values -> cache); use what this version takes."""
    return new if new in inspect.signature(fn).parameters else old


def banned_token_ids(model: torch.nn.Module, processor=None) -> torch.Tensor:
    """Vision/box special tokens present in the vocabulary: never sampled, masked in log-probs too.
    Without a processor, the ones the model config names (image/video pads, vision start/end)."""
    ids = {
        getattr(model.config, k, None)
        for k in ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id")
    }
    unk = None
    if processor is not None:
        tok = processor.tokenizer
        ids |= {tok.convert_tokens_to_ids(t) for t in VISION_TOKENS}
        unk = tok.unk_token_id
    vocab = model.get_output_embeddings().weight.shape[0]
    return torch.tensor(
        sorted(i for i in ids if isinstance(i, int) and 0 <= i < vocab and i != unk), dtype=torch.long
    )


def eos_token_ids(model: torch.nn.Module, processor=None) -> list[int]:
    eos = model.generation_config.eos_token_id
    eos = [eos] if isinstance(eos, int) else list(eos or [])
    if not eos and processor is not None:
        eos = [processor.tokenizer.convert_tokens_to_ids("<|im_end|>")]
    return eos


def encode_images(model: torch.nn.Module, inputs: dict) -> torch.Tensor:
    """The vision tower on a prompt batch's images -> merged features [image tokens, D]."""
    out = model.model.get_image_features(inputs["pixel_values"], inputs["image_grid_thw"])
    feats = getattr(out, "pooler_output", out)  # newer 5.x return a ModelOutput, older a tuple per image
    return torch.cat(list(feats)) if isinstance(feats, (list, tuple)) else feats


def prompt_embeddings(model: torch.nn.Module, inputs: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Token embeddings with image features scattered in, and 3-D M-RoPE positions.

    Returns embeds [B, P, D] and position_ids [3, B, P] (padding positions are 0)."""
    core = model.model
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    embeds = core.get_input_embeddings()(ids)
    if inputs.get("pixel_values") is not None:
        feats = inputs.get("image_features")  # precomputed (frozen vision tower) or encode now
        if feats is None:
            feats = encode_images(model, inputs)
        image_mask = (ids == model.config.image_token_id).unsqueeze(-1)
        embeds = embeds.masked_scatter(image_mask, feats.to(embeds.dtype))
    kw = {"image_grid_thw": inputs.get("image_grid_thw"), "attention_mask": mask}
    if "mm_token_type_ids" in inspect.signature(core.get_rope_index).parameters:
        kw["mm_token_type_ids"] = inputs["mm_token_type_ids"]
    position_ids, _ = core.get_rope_index(ids, **kw)
    return embeds, position_ids


def decoder(model: torch.nn.Module, embeds, position_ids, attention_mask, cache=None, use_cache=False):
    """The decoder stack on embeddings with explicit positions -> (hidden [B, L, D], cache)."""
    lm = model.model.language_model
    cache_kw = _kwarg_name(lm.forward, "cache", "past_key_values")
    out = lm(
        inputs_embeds=embeds,
        position_ids=position_ids,
        attention_mask=attention_mask,
        use_cache=use_cache,
        **{cache_kw: cache},
    )
    return out.last_hidden_state, out.get(cache_kw)  # the output names it as the input does


def head_logits(lm_head: torch.nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """fp32 logits [..., V] of the LM head, for the sampler (no autograd there)."""
    return lm_head(hidden).float()


def plain_head_logprobs(
    lm_head: torch.nn.Module,
    hidden: torch.Tensor,
    targets: torch.Tensor,
    temperature: float = 1.0,
    banned: torch.Tensor | None = None,
) -> torch.Tensor:
    """log softmax(lm_head(h) / T)[target], banned tokens masked: hidden [N, T, D] -> [N, T] fp32.
    The definition; it builds the whole [N, T, V] fp32 logits (kernels.fused_head_logprobs does not)."""
    logits = lm_head(hidden).float() / temperature
    if banned is not None and banned.numel():
        logits = logits.index_fill(-1, banned.to(logits.device), float("-inf"))
    return logits.log_softmax(-1).gather(-1, targets.to(logits.device)[..., None]).squeeze(-1)


# The head every log-prob pass uses. The fused kernel equals plain_head_logprobs (tests/test_model.py) at a
# fraction of the memory; swap this line for `head_logprobs = plain_head_logprobs` to read or debug.
head_logprobs = kernels.fused_head_logprobs


def reference_token_logprobs(
    model: torch.nn.Module,
    inputs: dict,
    completion_ids: torch.Tensor,
    completion_mask: torch.Tensor,
    group_size: int,
    temperature: float = 1.0,
    banned: torch.Tensor | None = None,
) -> torch.Tensor:
    """What token_logprobs computes, written plainly: each completion after its own copy of the prompt,
    the whole sequence through the model, log-softmax, gather. [B*G, T]; 0 where completion_mask is False."""
    G, T = group_size, completion_ids.shape[1]
    embeds, pos = prompt_embeddings(model, inputs)  # [B, P, D], [3, B, P]
    embeds, pos = embeds.repeat_interleave(G, 0), pos.repeat_interleave(G, 1)  # one copy per completion
    after = pos.amax(dim=(0, 2)) + 1 + torch.arange(T, device=pos.device)[:, None]  # [T, BG]: text positions
    tokens = torch.cat([embeds, model.model.get_input_embeddings()(completion_ids)], 1)
    positions = torch.cat([pos, after.T.unsqueeze(0).expand(3, -1, -1)], 2)
    mask = torch.cat([inputs["attention_mask"].repeat_interleave(G, 0), completion_mask.long()], 1)
    hidden, _ = decoder(model, tokens, positions, mask)
    h = hidden[:, embeds.shape[1] - 1 : -1]  # the state before each completion token predicts it
    return plain_head_logprobs(model.lm_head, h, completion_ids, temperature, banned) * completion_mask


def _recomputes_layers(model: torch.nn.Module) -> bool:
    """Gradient-checkpointed decoder layers in training mode: HF then runs them without a KV cache (5.24
    only under autograd, 5.17 always)."""
    layers = model.model.language_model.layers
    return model.training and any(getattr(m, "gradient_checkpointing", False) for m in layers)


def token_logprobs(
    model: torch.nn.Module,
    inputs: dict,
    completion_ids: torch.Tensor,
    completion_mask: torch.Tensor,
    group_size: int,
    temperature: float = 1.0,
    banned: torch.Tensor | None = None,
    share_prefix: bool = True,
) -> torch.Tensor:
    """log π(o_t | q, o_<t) of each completion token, [B*G, T]; 0 where completion_mask is False.

    inputs: the prompt batch (B prompts, left padded, images); completions are grouped: row b*G+g is
    sample g of prompt b. Images are encoded once per prompt. share_prefix: the decoder also runs the
    prompt once per group (as the sampler's prefill does) instead of once per completion; off, or where
    the layers are gradient-checkpointed in training mode (HF drops the cache there), the prompt is
    repeated to every completion. The head is `head_logprobs` (the fused one unless swapped); the plain
    definition of the whole function is `reference_token_logprobs`, which tests hold this one to."""
    G = group_size
    embeds, pos = prompt_embeddings(model, inputs)  # [B, P, D], [3, B, P]
    P, T = embeds.shape[1], completion_ids.shape[1]
    start = (pos.amax(dim=(0, 2)) + 1).repeat_interleave(G)  # [BG] first text position after the prompt
    # [3, BG, T]
    cpos = (start[:, None] + torch.arange(T, device=start.device)).unsqueeze(0).expand(3, -1, -1)
    cemb = model.model.get_input_embeddings()(completion_ids)  # [BG, T, D]
    mask = torch.cat([inputs["attention_mask"].repeat_interleave(G, 0), completion_mask.long()], dim=1)
    if share_prefix and not _recomputes_layers(model):
        # the prompt once per group; its (differentiable) KV cache is repeated to the G completions, which
        # attend to it as they would to their own copy: (P + G*T) tokens through the decoder, not G*(P + T)
        hidden_p, cache = decoder(model, embeds, pos, inputs["attention_mask"], use_cache=True)  # [B, P, D]
        cache.batch_repeat_interleave(G)
        hidden_c, _ = decoder(model, cemb, cpos, mask, cache=cache, use_cache=True)  # [BG, T, D]
        h = torch.cat([hidden_p[:, -1:].repeat_interleave(G, 0), hidden_c[:, :-1]], 1)  # [BG, T, D]
    else:
        embeds, pos = embeds.repeat_interleave(G, 0), pos.repeat_interleave(G, 1)  # [BG, P, D], [3, BG, P]
        hidden, _ = decoder(model, torch.cat([embeds, cemb], 1), torch.cat([pos, cpos], 2), mask)
        h = hidden[:, P - 1 : P + T - 1]  # the state before each completion token predicts it: [BG, T, D]
    return head_logprobs(model.lm_head, h, completion_ids, temperature, banned) * completion_mask


# ----------------------------------------------------------------------------- the group sampler


@dataclass
class Rollout:
    completion_ids: torch.Tensor  # [B*G, T] long, pad after the end
    completion_mask: torch.Tensor  # [B*G, T] bool, True up to and including EOS
    truncated: torch.Tensor  # [B*G] bool, no EOS within max_new_tokens
    logprobs: torch.Tensor  # [B*G, T] log π(token) at `temperature`, vision tokens masked; 0 past the end


def _draw(logits: torch.Tensor, temperature: float, top_p: float, top_k: int, generator) -> torch.Tensor:
    if temperature <= 0:
        return logits.argmax(-1)
    logits = logits / temperature
    if top_k and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        drop = cum - sorted_logits.softmax(-1) > top_p  # keep the smallest prefix whose mass reaches top_p
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(-1)


def decode_step(model: torch.nn.Module, cache) -> Callable:
    """One token per row through the decoder, written into `cache`: step(tokens [N, 1], positions [3, N, 1],
    mask [N, L]) -> fp32 logits [N, V] of the next token."""
    embed = model.model.get_input_embeddings()

    def step(tok: torch.Tensor, pos: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        hidden, _ = decoder(model, embed(tok), pos, mask, cache=cache, use_cache=True)
        return head_logits(model.lm_head, hidden[:, -1])

    return step


@torch.no_grad()
def sample(
    model: torch.nn.Module,
    inputs: dict,
    group_size: int,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = 0,
    generator: torch.Generator | None = None,
    eos_ids: list[int] | None = None,
    banned: torch.Tensor | None = None,
    pad_id: int | None = None,
    check_every: int = 8,
    static_cache: bool = False,
    preallocate: bool = True,
    shared_prefix: bool = True,
) -> Rollout:
    """G completions per prompt from a KV-cached decoding loop (temperature 0 = greedy).

    Each prompt is prefilled once (images encoded once); its first logits and positions are repeated to its
    G samples, and its KV cache is read once per group by the decode step (shared_prefix, below). Every
    decode step gets explicit M-RoPE positions: the prompt's last position + 1 + t on all three rows. EOS is
    checked on the host every `check_every` tokens only. Returned log-probs are log softmax(logits / T) of
    the drawn token with `banned` masked (T=1 when greedy): exactly what `token_logprobs` recomputes, so the
    first PPO ratio is 1. top-k/top-p only restrict which tokens are drawn. eos_ids/banned/pad_id default to
    the model's own (generation config, vision tokens named in its config); pass [] / an empty tensor to
    switch them off.

    Under FSDP call it as fsdp.call(net, sample, ...) inside fsdp.gathered(net): the parameters are gathered
    once for the whole rollout, so the loop runs no collective and a rank whose samples end early just stops.

    static_cache: the fast path (kernels.compiled_decode_step): a fixed-size KV cache and a torch.compile'd
    `decode_step` (CUDA graphs on CUDA), its length rounded up to 128 so that prompts of similar length share
    one compiled step. Compiling takes seconds to a minute per new (B*G, length); it pays only over many
    rollouts of the same shape.

    shared_prefix: the decode step (kernels.shared_prefix_decode) keeps the prompt's cache once per prompt
    and computes only the rows that have not ended as of the last check; the same tokens, log-probs to float
    rounding (1.28x faster at the detection proof's 8 prompts x 8, 128 tokens, on CPU: scripts/ablate.py,
    docs/performance.md). False: the plain step through transformers' decoder on the cache repeated to the G
    samples, with:

    preallocate: the decode steps write the KV cache in place (kernels.preallocate_cache) instead of
    transformers' concatenation of the whole cache every step; the same numbers (False: the plain path)."""
    G, T = group_size, max_new_tokens
    eos_ids = eos_token_ids(model) if eos_ids is None else eos_ids
    banned = banned_token_ids(model) if banned is None else banned
    if pad_id is None:
        pad_id = model.generation_config.pad_token_id or (eos_ids[0] if eos_ids else 0)
    embeds, pos = prompt_embeddings(model, inputs)  # [B, P, D], [3, B, P]
    mask = inputs["attention_mask"]
    hidden, cache = decoder(model, embeds, pos, mask, use_cache=True)  # prefill: once per prompt
    logits = head_logits(model.lm_head, hidden[:, -1])  # [B, V]
    # ---- expand the prompt state to the G samples of each group
    logits = logits.repeat_interleave(G, 0)
    P = mask.shape[1]
    if shared_prefix and not static_cache:  # the prompt's cache stays one per prompt
        shared = kernels.shared_prefix_decode(model, cache, mask, G, T)
        step = lambda tok, pos, upto, live: shared(tok, pos, upto - P - 1, live)
    else:
        cache.batch_repeat_interleave(G)
        L = -(-(P + T) // 128) * 128 if static_cache else P + T  # KV length
        completion_slots = mask.new_ones(mask.shape[0] * G, L - P)
        mask = torch.cat([mask.repeat_interleave(G, 0), completion_slots], 1)  # [BG, L]
        if static_cache:
            # the compiled step reads the whole [BG, L] mask: later slots are hidden by causality
            static, compiled = kernels.compiled_decode_step(model, mask.shape[0], L, hidden, decode_step)
            kernels.load_static(static, cache)
            step = lambda tok, pos, upto, live: compiled(
                tok, pos.contiguous(), mask
            ).clone()  # clone: graphs reuse outputs
        else:
            if preallocate:
                kernels.preallocate_cache(cache, L)
            plain = decode_step(model, cache)
            step = lambda tok, pos, upto, live: plain(tok, pos, mask[:, :upto])
    next_pos = (pos.amax(dim=(0, 2)) + 1).repeat_interleave(G)  # [BG]
    N, dev = logits.shape[0], logits.device
    eos = torch.tensor(eos_ids or [], device=dev, dtype=torch.long)
    banned = banned.to(dev) if banned is not None and banned.numel() else None
    ids = torch.full((N, T), pad_id, dtype=torch.long, device=dev)
    logps = torch.zeros((N, T), device=dev)
    alive = torch.zeros((N, T), dtype=torch.bool, device=dev)
    done = torch.zeros(N, dtype=torch.bool, device=dev)
    live = torch.arange(N, device=dev)  # rows still decoding, as of the last check
    steps = T
    for t in range(T):
        if banned is not None:
            logits.index_fill_(-1, banned, float("-inf"))
        # [BG, V], once a step
        logp_all = (logits / temperature if temperature > 0 else logits).log_softmax(-1)
        if temperature > 0 and top_p >= 1.0 and not top_k:  # plain sampling: draw from the same distribution
            tok = torch.multinomial(logp_all.exp(), 1, generator=generator).squeeze(-1)
        else:
            tok = _draw(logits, temperature, top_p, top_k, generator)  # [BG]
        lp = logp_all.gather(-1, tok[:, None])[:, 0]
        ids[:, t] = torch.where(done, pad_id, tok)
        logps[:, t] = torch.where(done, 0.0, lp)
        alive[:, t] = ~done
        done = done | torch.isin(tok, eos)
        if (t + 1) % check_every == 0:  # the host looks at `done` only here
            if bool(done.all()):
                steps = t + 1
                break
            live = (~done).nonzero()[:, 0]
        if t == T - 1:
            break
        p = (next_pos + t).view(1, N, 1).expand(3, N, 1)
        logits = step(ids[:, t : t + 1], p, P + t + 1, live)
    return Rollout(ids[:, :steps], alive[:, :steps], ~done, logps[:, :steps])


def decode(processor, rollout: Rollout) -> list[str]:
    """Completion texts (special tokens stripped; nothing past the end)."""
    tok = processor.tokenizer
    return [
        tok.decode(ids[m], skip_special_tokens=True)
        for ids, m in zip(rollout.completion_ids, rollout.completion_mask)
    ]


def to_device(batch: dict, device: torch.device) -> dict:
    """The batch's tensors moved to `device` (other values as they are)."""
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
