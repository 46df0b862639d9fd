"""The fast paths, kept apart from the plain ones in model.py that they are tested against.

    fused_head_logprobs     = model.plain_head_logprobs (log_softmax(h W^T / T)[y]) without ever building the
                              [tokens, vocabulary] logits: a custom autograd function, vocabulary-tiled
    compiled_decode_step    model.decode_step into a fixed-size KV cache, torch.compile'd
                            (CUDA graphs on CUDA)
    preallocate_cache       the sampler's KV cache written in place into buffers of the rollout's length,
                            instead of transformers' torch.cat of the whole cache every step

model.py switches between them in one line each (`head_logprobs = ...`, `sample(static_cache=...)`,
`sample(preallocate=...)`); tests/test_model.py checks that each equals its plain twin.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from transformers import DynamicCache, StaticCache


# ----------------------------------------------------------------------------- the fused log-prob head
def _compute_dtype(weight: torch.Tensor) -> torch.dtype:
    """The head's matmul dtype: autocast's where it is on (bf16 over fp32 masters), else the weight's own."""
    dev = weight.device.type
    return torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else weight.dtype


def _tiles(h, weight, targets, banned, temperature, dtype, vocab_chunk, token_chunk):
    """The [n, v] tiles of z = h W^T / T (banned columns -inf), vocabulary slice by token chunk, each with
    its rows, its vocabulary offset, and each row's target as an index into the slice (`here`: in it)."""
    N, V = h.shape[0], weight.shape[0]
    for v0 in range(0, V, vocab_chunk):
        v1 = min(v0 + vocab_chunk, V)
        w = weight[v0:v1].to(dtype)  # one slice of the cast weight at a time
        ban = banned[(banned >= v0) & (banned < v1)] - v0
        for t0 in range(0, N, token_chunk):
            rows = slice(t0, t0 + token_chunk)
            z = (h[rows] @ w.T).float()  # [n, v] fp32
            if temperature != 1.0:
                z.div_(temperature)
            if ban.numel():
                z.index_fill_(-1, ban, float("-inf"))
            y = targets[rows] - v0
            yield rows, v0, v1, w, z, y.clamp(0, v1 - v0 - 1), (y >= 0) & (y < v1 - v0)


class HeadLogprobs(torch.autograd.Function):
    """Fused LM head + log-softmax + gather, tiled over vocabulary slices x token chunks.

        z = h W^T / T  (banned columns -inf),   lp_i = z_i[y_i] - lse_i,   lse_i = log sum_v exp z_iv

        dL/dz_iv = g_i (1[v = y_i] - exp(z_iv - lse_i)),   dL/dh = (dL/dz / T) W,   dL/dW = (dL/dz / T)^T h

    No [N, V] tensor is ever built: the forward keeps a running (max, sum) per token across vocabulary
    slices (online logsumexp) and saves only lse [N]; the backward recomputes each [n, v] tile and adds
    its share into dL/dh and into its rows of dL/dW. The weight is cast to the compute dtype one slice at
    a time, so autocast's whole bf16 copy of the head never exists either. Peak beyond the weight's own
    gradient: one tile of logits + one slice of the cast weight."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, temperature, banned, vocab_chunk, token_chunk, dtype):
        # hidden [N, D], weight [V, D], targets [N], banned [k] (may be empty) -> log-probs [N] fp32
        N, dev = hidden.shape[0], hidden.device
        run_max = torch.full((N,), float("-inf"), device=dev)
        run_sum, picked = torch.zeros(N, device=dev), torch.zeros(N, device=dev)
        tiles = _tiles(
            hidden.to(dtype), weight, targets, banned, temperature, dtype, vocab_chunk, token_chunk
        )
        for rows, _, _, _, z, y, here in tiles:
            picked[rows] += torch.where(here, z.gather(-1, y[:, None])[:, 0], 0.0)
            new_max = torch.maximum(run_max[rows], z.amax(-1))
            shift = torch.where(torch.isinf(new_max), 0.0, new_max)  # a slice all banned so far: -inf rows
            run_sum[rows] = run_sum[rows] * (run_max[rows] - shift).exp() + z.sub_(shift[:, None]).exp_().sum(
                -1
            )
            run_max[rows] = new_max
        lse = torch.where(torch.isinf(run_max), 0.0, run_max) + run_sum.log()
        ctx.save_for_backward(hidden, weight, targets, lse, banned)
        ctx.args = (temperature, vocab_chunk, token_chunk, dtype)
        return picked - lse

    @staticmethod
    def backward(ctx, grad_lp):
        hidden, weight, targets, lse, banned = ctx.saved_tensors
        temperature, vocab_chunk, token_chunk, dtype = ctx.args
        want_h, want_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        h = hidden.to(dtype)
        g = grad_lp.float() / temperature  # the 1/T of dz/d(h W^T) folded in once
        grad_h = torch.zeros(hidden.shape, dtype=torch.float32, device=hidden.device) if want_h else None
        grad_w = torch.zeros_like(weight) if want_w else None
        for rows, v0, v1, w, z, y, here in _tiles(
            h, weight, targets, banned, temperature, dtype, vocab_chunk, token_chunk
        ):
            dz = z.sub_(lse[rows, None]).exp_().mul_(-g[rows, None])  # -g p, in place: [n, v]
            at = here.nonzero()[:, 0]  # rows whose target is in this slice
            dz[at, y[at]] += g[rows][at]  # + g at the target
            dz = dz.to(dtype)
            if want_h:
                grad_h[rows] += (dz @ w).float()
            if want_w:
                grad_w[v0:v1] += (dz.T @ h[rows]).to(weight.dtype)
        return (grad_h.to(hidden.dtype) if want_h else None), grad_w, None, None, None, None, None, None


def fused_head_logprobs(
    lm_head,
    hidden: torch.Tensor,
    targets: torch.Tensor,
    temperature: float = 1.0,
    banned: torch.Tensor | None = None,
    chunk_tokens: int = 1024,
    vocab_chunk: int = 16384,
) -> torch.Tensor:
    """log softmax(lm_head(h) / T)[target] for hidden [N, T, D] -> [N, T] fp32, through `HeadLogprobs`:
    at most [chunk_tokens, vocab_chunk] logits exist at once, forward or backward. The matmuls run in
    autocast's dtype where autocast is on, else in the weight's."""
    if getattr(lm_head, "bias", None) is not None:
        raise ValueError("fused_head_logprobs: an LM head with a bias is not supported (Qwen's has none)")
    n, t, d = hidden.shape
    weight = lm_head.weight
    banned = torch.empty(0, dtype=torch.long) if banned is None else banned
    dtype = _compute_dtype(weight)  # read before autocast is switched off below
    with torch.autocast(hidden.device.type, enabled=False):
        lp = HeadLogprobs.apply(
            hidden.reshape(n * t, d),
            weight,
            targets.reshape(n * t).to(hidden.device),
            float(temperature),
            banned.to(hidden.device),
            vocab_chunk,
            chunk_tokens,
            dtype,
        )
    return lp.view(n, t)


# ----------------------------------------------------------------------------- the preallocated KV cache
@functools.cache
def _preallocated_layer() -> type:
    """A DynamicLayer whose keys and values are views of buffers allocated once for the rollout's length: a
    step copies its token's states into the next slot. transformers' DynamicLayer concatenates, copying the
    whole cache every step (O(L) a token, O(L^2) a rollout: on the CPU as much time as the attention). The
    views hold the same numbers as the concatenated ones, and attention reads them alike (bitwise: tested).
    Made on first use: importing transformers takes seconds that --help and a flag mistake do not need."""
    from transformers import DynamicLayer

    class PreallocatedLayer(DynamicLayer):
        def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
            n, m = self.keys.shape[-2], key_states.shape[-2]
            self._key_buffer[..., n : n + m, :].copy_(key_states)
            self._value_buffer[..., n : n + m, :].copy_(value_states)
            self.keys, self.values = self._key_buffer[..., : n + m, :], self._value_buffer[..., : n + m, :]
            return self.keys, self.values

    return PreallocatedLayer


def preallocate_cache(cache: DynamicCache, length: int) -> None:
    """Give every layer of a prefilled DynamicCache (already repeated to its rows) buffers of `length`
    positions, its prefill copied into their first slots; later updates write in place."""
    for i, layer in enumerate(cache.layers):
        k, v = layer.keys, layer.values  # [rows, kv heads, P, head dim]
        new = _preallocated_layer()()
        new.device, new.is_initialized = k.device, True
        new._key_buffer = k.new_empty(*k.shape[:-2], length, k.shape[-1])
        new._value_buffer = v.new_empty(*v.shape[:-2], length, v.shape[-1])
        new.keys = new._key_buffer[..., :0, :]
        new.update(k, v)  # the prefill, into the first slots
        cache.layers[i] = new


# ----------------------------------------------------------------------------- the compiled decode step
COMPILED_STEPS: dict = {}  # (model, rows, cache length, dtype, device) -> (StaticCache, compiled step)


def compiled_decode_step(
    model: torch.nn.Module, rows: int, length: int, like: torch.Tensor, make_step: Callable
) -> tuple[StaticCache, Callable]:
    """A fixed-size KV cache and `make_step(model, cache)` torch.compile'd for it, made once per shape and
    reused by every rollout of that shape, so compiling is paid once. The step takes the whole [rows, length]
    mask (slots past the current one are hidden by causality), so every call has the same shapes."""
    from transformers import StaticCache

    key = (id(model), rows, length, like.dtype, like.device)
    if key not in COMPILED_STEPS:
        cache = StaticCache(config=model.config, max_cache_len=length)
        mode = "reduce-overhead" if like.device.type == "cuda" else "default"
        COMPILED_STEPS[key] = (cache, torch.compile(make_step(model, cache), mode=mode, dynamic=False))
    return COMPILED_STEPS[key]


def load_static(static, dynamic) -> None:
    """The prefill's DynamicCache (already repeated to the BG rows) into the static cache's first P slots."""
    for s, d in zip(static.layers, dynamic.layers, strict=True):
        k, v = d.keys, d.values  # [BG, H, P, d]
        if not s.is_initialized:
            s.lazy_initialization(k, v)
        P = k.shape[2]
        s.keys[:, :, :P].copy_(k), s.values[:, :, :P].copy_(v)
        # a previous rollout's states: masked, but zeroed
        (s.keys[:, :, P:].zero_(), s.values[:, :, P:].zero_())
        s.cumulative_length.fill_(P)
