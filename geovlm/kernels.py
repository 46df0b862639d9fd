"""The fast paths, kept apart from the plain ones in model.py that they are tested against.

    fused_head_logprobs     = model.plain_head_logprobs (log_softmax(h W^T / T)[y]) without ever building the
                              [tokens, vocabulary] logits: a custom autograd function, vocabulary-tiled
    compiled_decode_step    model.decode_step into a fixed-size KV cache, torch.compile'd
                            (CUDA graphs on CUDA)
    preallocate_cache       the sampler's KV cache written in place into buffers of the rollout's length,
                            instead of transformers' torch.cat of the whole cache every step
    shared_prefix_decode    model.decode_step with the prompt's keys and values kept once per prompt
                            instead of repeated to its G samples: the prompt is read once per group

model.py switches between them in one line each (`head_logprobs = ...`, `sample(static_cache=...)`,
`sample(preallocate=...)`, `sample(shared_prefix=...)`); tests/test_model.py checks that each equals its
plain twin.
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


# ----------------------------------------------------------------------------- the shared-prefix decode step
def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def shared_prefix_decode(
    model: torch.nn.Module, prefill: DynamicCache, prompt_mask: torch.Tensor, G: int, T: int
) -> Callable:
    """A decode step for G samples per prompt that reads each prompt's keys and values once per group, and
    computes only the rows still decoding.

    Decoding is memory-bound: the repeated cache makes every step read the prompt's [P] keys and values G
    times (on the tiny model, 40 % of a rollout). Here they stay [B, P] and the G samples' queries are
    stacked as G query rows of their prompt, so one matmul per prompt scores them all; only the completions'
    own keys ([rows, T], written in place) are per sample. With both parts in one softmax, attention is the
    plain one over [prompt; completion]:

        a = softmax([q K_p^T, q K_c^T] * d^-1/2) [V_p; V_c]     (K_p, V_p: the prompt's; masked where padded)

    step(tokens [BG, 1], positions [3, BG, 1], t, live) -> fp32 logits [BG, V]: writes slot t of the
    completion cache of the rows in `live` (ascending indices into BG; a third of a detection rollout's rows
    have ended while the longest goes on) and gives the others zero logits, which the sampler's done rows
    ignore (a draw from them still uses the generator as before, so the samples stay the same). The layer
    code is transformers' Qwen2(.5)-VL decoder's (norms, projections, rotary from the model's own
    `rotary_emb`, MLP, residuals), so the numbers equal model.decode_step's to float rounding (the summation
    order differs): tests/test_model.py."""
    lm, head = model.model.language_model, model.lm_head
    embed = lm.get_input_embeddings()
    B, P = prompt_mask.shape
    BG = B * G
    padding = ~prompt_mask.bool()[:, None, None, :]  # [B, 1, 1, P]
    prefix = [(layer.keys, layer.values) for layer in prefill.layers]  # [B, KVH, P, d] each
    KVH, d = prefix[0][0].shape[1], prefix[0][0].shape[-1]
    state = {"rows": torch.arange(BG, device=prompt_mask.device)}
    state["own"] = [(k.new_zeros(BG, KVH, T, d), v.new_zeros(BG, KVH, T, d)) for k, v in prefix]

    def by_prompt(x: torch.Tensor) -> torch.Tensor:  # [BG, KVH, rep, n] -> [B, KVH, G * rep, n]
        rep, n = x.shape[2], x.shape[3]
        return x.view(B, G, KVH, rep, n).permute(0, 2, 1, 3, 4).reshape(B, KVH, G * rep, n)

    def by_row(x: torch.Tensor, rep: int) -> torch.Tensor:  # the inverse of by_prompt
        n = x.shape[-1]
        return x.view(B, KVH, G, rep, n).permute(0, 2, 1, 3, 4).reshape(BG, KVH, rep, n)

    def attend(q, Kp, Vp, Kc, Vc, t, rows, scale):  # q [n, H, d] of `rows` -> [n, H * d]
        n, H = q.shape[:2]
        rep = H // KVH  # query heads per key/value head (grouped-query attention)
        q_all = q.new_zeros(BG, KVH, rep, d).index_copy_(0, rows, q.view(n, KVH, rep, d))
        s_p = by_prompt(q_all) @ Kp.transpose(-1, -2)  # [B, KVH, G * rep, P]
        s_p = s_p.masked_fill(padding, float("-inf"))
        s_c = q.view(n, KVH, rep, d) @ Kc[:, :, : t + 1].transpose(-1, -2)  # [n, KVH, rep, t+1]
        s = torch.cat([by_row(s_p, rep)[rows], s_c], -1) * scale
        w = s.softmax(-1, dtype=torch.float32).to(q.dtype)
        w_all = w.new_zeros(BG, KVH, rep, P).index_copy_(0, rows, w[..., :P])
        o_p = by_row(by_prompt(w_all) @ Vp, rep)[rows]
        return (o_p + w[..., P:] @ Vc[:, :, : t + 1]).reshape(n, H * d)

    def step(tok: torch.Tensor, pos: torch.Tensor, t: int, live: torch.Tensor) -> torch.Tensor:
        if live.numel() != state["rows"].numel():  # rows ended: drop them from the completion cache
            keep_rows = torch.searchsorted(state["rows"], live)
            state["own"] = [(k[keep_rows], v[keep_rows]) for k, v in state["own"]]
            state["rows"] = live
        rows = state["rows"]
        h = embed(tok[rows])  # [n, 1, D]
        cos, sin = lm.rotary_emb(h, pos[:, rows])  # [n, 1, d], the M-RoPE sections already recomposed
        cos, sin = cos[:, None], sin[:, None]  # [n, 1, 1, d]
        n = rows.numel()
        for layer, (Kp, Vp), (Kc, Vc) in zip(lm.layers, prefix, state["own"]):
            att = layer.self_attn
            x = layer.input_layernorm(h)
            q = att.q_proj(x).view(n, 1, -1, d).transpose(1, 2)  # [n, H, 1, d]
            k = att.k_proj(x).view(n, 1, -1, d).transpose(1, 2)
            q, k = q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin
            Kc[:, :, t : t + 1].copy_(k)
            Vc[:, :, t : t + 1].copy_(att.v_proj(x).view(n, 1, -1, d).transpose(1, 2))
            h = h + att.o_proj(attend(q[:, :, 0], Kp, Vp, Kc, Vc, t, rows, att.scaling)[:, None])
            h = h + layer.mlp(layer.post_attention_layernorm(h))
        out = head(lm.norm(h)[:, -1]).float()
        return out.new_zeros(BG, out.shape[-1]).index_copy_(0, rows, out)

    return step
