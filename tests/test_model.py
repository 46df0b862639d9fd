import pytest
import torch

import data
import model as M
from geovlm import kernels


def test_build_save_load_roundtrip(tiny_dir, tiny, tmp_path, synth_dir):
    again = M.save(tiny.model, tiny.processor, tmp_path / "copy")
    reloaded = M.load(str(again), device="cpu")
    a, b = tiny.model.state_dict(), reloaded.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    recs = data.load_records(synth_dir / "test.jsonl")[:4]
    x = data.collate_prompts(recs, tiny.processor, tiny.frame_kind).inputs
    y = data.collate_prompts(recs, reloaded.processor, reloaded.frame_kind).inputs
    assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)
    assert reloaded.frame_kind == "pixels" and reloaded.attn_impl == "sdpa"
    assert type(tiny.model).__name__ == "Qwen2_5_VLForConditionalGeneration"
    assert 1e6 < sum(p.numel() for p in tiny.model.parameters()) < 2e7


def test_save_is_atomic_on_failure(tiny, tmp_path, monkeypatch):
    out = M.save(tiny.model, tiny.processor, tmp_path / "ckpt")
    before = sorted(p.name for p in out.iterdir())

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(tiny.processor, "save_pretrained", boom)
    try:
        M.save(tiny.model, tiny.processor, tmp_path / "ckpt")
    except OSError:
        pass
    assert sorted(p.name for p in out.iterdir()) == before  # the old checkpoint is untouched
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".ckpt.tmp")]


def _prompts(tiny, synth_dir, tasks=("counting", "grounding", "classification")):
    recs = data.load_records(synth_dir / "test.jsonl")
    picked = [next(r for r in recs if r.task == t) for t in tasks]
    return picked, data.collate_prompts(picked, tiny.processor, tiny.frame_kind)


@pytest.fixture(scope="module")
def shipped(synth_dir) -> tuple:
    """The shipped start (M-RoPE base 50, its own sections) in eval mode, detection, grounding and counting
    prompts, and its EOS ids: what the sampler's fast paths are checked on, at the proof's length."""
    from embedded import defaults

    start = M.load(defaults.sft_model(), device="cpu")
    start.model.eval()
    _, batch = _prompts(start, synth_dir, tasks=("detection", "grounding", "counting"))
    return start, batch, M.eos_token_ids(start.model, start.processor)


def test_greedy_sample_equals_hf_generate(tiny, synth_dir):
    recs, batch = _prompts(tiny, synth_dir)
    # left padding
    assert len({r.image_sizes[0] for r in recs}) > 1 and (batch.inputs["attention_mask"] == 0).any()
    m, banned = tiny.model, M.banned_token_ids(tiny.model, tiny.processor)
    eos, G = M.eos_token_ids(m, tiny.processor), 3
    ro = M.sample(m, batch.inputs, G, 24, temperature=0.0, banned=banned, eos_ids=eos)
    hf = m.generate(**batch.inputs, max_new_tokens=24, do_sample=False, suppress_tokens=banned.tolist())
    P = batch.inputs["input_ids"].shape[1]
    for b in range(len(recs)):
        ref = hf[b, P:]
        ref_len = int(next((i + 1 for i, t in enumerate(ref.tolist()) if t in eos), len(ref)))
        for g in range(G):
            row = b * G + g
            n = int(ro.completion_mask[row].sum())
            assert ro.completion_ids[row, :n].tolist() == ref[:ref_len].tolist()[:n] and n == min(ref_len, 24)


def test_sampling_logprobs_match_recomputed(tiny, synth_dir):
    _, batch = _prompts(tiny, synth_dir)
    banned, G = M.banned_token_ids(tiny.model, tiny.processor), 4
    gen = torch.Generator().manual_seed(0)
    ro = M.sample(
        tiny.model,
        batch.inputs,
        G,
        20,
        temperature=1.0,
        generator=gen,
        banned=banned,
        eos_ids=M.eos_token_ids(tiny.model, tiny.processor),
    )
    lp = M.token_logprobs(tiny.model, batch.inputs, ro.completion_ids, ro.completion_mask, G, 1.0, banned)
    assert ro.completion_ids.shape[0] == 3 * G
    assert (lp - ro.logprobs).abs().max().item() <= 1e-4
    assert not torch.isin(ro.completion_ids[ro.completion_mask], banned).any()


def test_sampling_logprobs_match_recomputed_on_the_embedded_start(shipped):
    """The shipped start on detection prompts at the proof's temperature and completion length: GRPO's
    gradient is taken on what the sampler drew, at the log-probs it drew it with."""
    start, batch, eos = shipped
    banned, G = M.banned_token_ids(start.model, start.processor), 2
    gen = torch.Generator().manual_seed(0)
    ro = M.sample(
        start.model, batch.inputs, G, 128, temperature=0.7, generator=gen, banned=banned, eos_ids=eos
    )
    lp = M.token_logprobs(start.model, batch.inputs, ro.completion_ids, ro.completion_mask, G, 0.7, banned)
    assert ro.completion_mask.sum(1).min() > 30  # whole answers with boxes, not a few tokens
    assert ((lp - ro.logprobs).abs() * ro.completion_mask).max().item() <= 1e-4


def test_vision_tokens_never_sampled(tiny_dir, synth_dir):
    loaded = M.load(tiny_dir, device="cpu")
    banned = M.banned_token_ids(loaded.model, loaded.processor)
    old = loaded.model.lm_head  # make <|image_pad|> by far the most likely token
    head = torch.nn.Linear(old.in_features, old.out_features, bias=True)
    with torch.no_grad():
        head.weight.copy_(old.weight)
        head.bias.zero_()
        head.bias[loaded.model.config.image_token_id] = 50.0
    loaded.model.lm_head = head
    _, batch = _prompts(loaded, synth_dir)
    ro = M.sample(
        loaded.model,
        batch.inputs,
        2,
        12,
        temperature=1.0,
        banned=banned,
        generator=torch.Generator().manual_seed(1),
    )
    assert not torch.isin(ro.completion_ids, banned).any()
    default = M.sample(loaded.model, batch.inputs, 2, 4, temperature=0.0)  # guarded by default too
    assert not torch.isin(default.completion_ids, banned).any()
    unguarded = M.sample(
        loaded.model, batch.inputs, 2, 1, temperature=0.0, banned=torch.tensor([], dtype=torch.long)
    )
    # the guard is what stops it
    assert (unguarded.completion_ids == loaded.model.config.image_token_id).any()


@pytest.mark.parametrize("chunk_tokens,vocab_chunk", [(5, 64), (1000, 1000), (3, 7)])
def test_fused_head_equals_the_plain_head(chunk_tokens, vocab_chunk):
    """Values and both gradients of the fused head (kernels.py) equal model.plain_head_logprobs (autograd
    through full logits), for tiles that split tokens and vocabulary unevenly, a whole vocabulary slice
    banned ([7, 14)), and T != 1."""
    torch.manual_seed(0)
    head = torch.nn.Linear(16, 500, bias=False)
    h = torch.randn(3, 7, 16, requires_grad=True)
    y = torch.randint(14, 500, (3, 7))
    banned = torch.arange(3, 14)
    fused = kernels.fused_head_logprobs(
        head, h, y, 0.7, banned, chunk_tokens=chunk_tokens, vocab_chunk=vocab_chunk
    )
    naive = M.plain_head_logprobs(head, h, y, 0.7, banned)
    assert torch.allclose(fused, naive, atol=1e-5)
    weights = torch.randn_like(naive)  # an arbitrary upstream gradient, like the advantage-weighted loss
    g1 = torch.autograd.grad((fused * weights).sum(), [h, head.weight])
    g2 = torch.autograd.grad((naive * weights).sum(), [h, head.weight])
    for a, b in zip(g1, g2):
        assert torch.allclose(a, b, atol=1e-5)


def test_fused_head_frozen_and_under_autocast():
    torch.manual_seed(0)
    head = torch.nn.Linear(16, 300, bias=False).requires_grad_(False)
    h = torch.randn(2, 5, 16, requires_grad=True)
    y = torch.randint(0, 300, (2, 5))
    lp = kernels.fused_head_logprobs(head, h, y, vocab_chunk=64)
    lp.sum().backward()  # no weight gradient asked for, none made
    assert head.weight.grad is None and h.grad is not None
    with torch.autocast("cpu", dtype=torch.bfloat16):  # bf16 matmuls, fp32 log-softmax: close to fp32
        lp_bf16 = kernels.fused_head_logprobs(head, h, y, vocab_chunk=64)
    assert lp_bf16.dtype == torch.float32 and (lp_bf16 - lp).abs().max().item() < 0.1
    assert (lp_bf16 - lp).abs().max().item() > 0  # it did run in bf16


def test_multi_image_prompt(tiny, synth_dir):
    recs, batch = _prompts(tiny, synth_dir, tasks=("change_detection", "temporal_classification"))
    assert batch.inputs["image_grid_thw"].shape[0] == sum(len(r.images) for r in recs) >= 5
    banned = M.banned_token_ids(tiny.model, tiny.processor)
    ro = M.sample(
        tiny.model,
        batch.inputs,
        2,
        8,
        temperature=1.0,
        banned=banned,
        generator=torch.Generator().manual_seed(0),
    )
    lp = M.token_logprobs(tiny.model, batch.inputs, ro.completion_ids, ro.completion_mask, 2, 1.0, banned)
    assert (lp - ro.logprobs).abs().max().item() <= 1e-4
    assert len(M.decode(tiny.processor, ro)) == 4


def test_shared_prefix_logprobs_equal_repeated_prompt(tiny, synth_dir):
    """The prompt run once per group (its KV cache repeated to G) gives the log-probs and the gradients of
    running it once per completion, with left padding (prompts of different lengths) and ended rows."""
    _, batch = _prompts(tiny, synth_dir)
    model = tiny.model
    banned = M.banned_token_ids(model, tiny.processor)
    ro = M.sample(
        model, batch.inputs, 3, 10, temperature=1.0, banned=banned, generator=torch.Generator().manual_seed(1)
    )
    weights = torch.randn(ro.completion_ids.shape, generator=torch.Generator().manual_seed(2))
    params = [p for p in model.parameters() if p.requires_grad]
    out = {}
    for share in (True, False):
        lp = M.token_logprobs(
            model, batch.inputs, ro.completion_ids, ro.completion_mask, 3, 1.0, banned, share_prefix=share
        )
        out[share] = (lp.detach(), torch.autograd.grad((lp * weights).sum(), params, allow_unused=True))
    assert (out[True][0] - out[False][0]).abs().max().item() < 1e-5
    assert (out[True][0] - ro.logprobs).abs().max().item() < 1e-4
    for a, b in zip(out[True][1], out[False][1]):
        assert (a is None) == (b is None)
        if a is not None:
            assert torch.allclose(a, b, atol=1e-5, rtol=1e-4)


def test_shared_prefix_falls_back_under_gradient_checkpointing(tiny_dir, synth_dir):
    loaded = M.load(tiny_dir, device="cpu", grad_ckpt=True)
    _, batch = _prompts(loaded, synth_dir)
    ro = M.sample(
        loaded.model.eval(), batch.inputs, 2, 6, temperature=1.0, generator=torch.Generator().manual_seed(0)
    )
    loaded.model.train()
    banned = M.banned_token_ids(loaded.model)
    # would drop the cache
    lp = M.token_logprobs(loaded.model, batch.inputs, ro.completion_ids, ro.completion_mask, 2, 1.0, banned)
    assert (lp.detach() - ro.logprobs).abs().max().item() < 1e-4


def test_the_preallocated_cache_samples_bit_for_bit_what_the_concatenating_one_does(shipped):
    """kernels.preallocate_cache (the repeated-cache step's default) against transformers' DynamicCache: the
    same tokens and the same log-probs to the last bit, on the shipped start at the proof's temperature and
    length."""
    start, batch, eos = shipped

    def draw(preallocate: bool) -> M.Rollout:
        gen = torch.Generator().manual_seed(0)
        return M.sample(
            start.model,
            batch.inputs,
            4,
            128,
            0.7,
            generator=gen,
            eos_ids=eos,
            preallocate=preallocate,
            shared_prefix=False,
        )

    fast, plain = draw(True), draw(False)
    assert fast.completion_mask.sum(1).min() > 30  # whole answers: the cache grows by a hundred tokens
    for field in ("completion_ids", "completion_mask", "truncated", "logprobs"):
        assert torch.equal(getattr(fast, field), getattr(plain, field)), field


@pytest.mark.parametrize("temperature", [0.7, 0.0])
def test_the_shared_prefix_decoder_samples_what_the_repeated_cache_does(shipped, temperature):
    """kernels.shared_prefix_decode (the sampler's default: the prompt's cache once per group, ended rows
    dropped) against the plain step on the repeated, preallocated cache: the same tokens, ends and
    truncations, log-probs equal to float rounding, on the shipped start at the proof's length, with rows
    that end at different steps (so rows are dropped mid-rollout) and the generator left where it was."""
    start, batch, eos = shipped

    def draw(shared: bool) -> tuple[M.Rollout, torch.Tensor]:
        gen = torch.Generator().manual_seed(0)
        ro = M.sample(
            start.model, batch.inputs, 4, 128, temperature, generator=gen, eos_ids=eos, shared_prefix=shared
        )
        return ro, torch.rand(4, generator=gen)

    (fast, after_fast), (plain, after_plain) = draw(True), draw(False)
    lengths = fast.completion_mask.sum(1)
    first_check_after_an_end = (lengths.min() + 7) // 8 * 8  # the sampler looks every 8 tokens
    assert lengths.min() > 30 and first_check_after_an_end < lengths.max()  # rows dropped, others go on
    for field in ("completion_ids", "completion_mask", "truncated"):
        assert torch.equal(getattr(fast, field), getattr(plain, field)), field
    assert (fast.logprobs - plain.logprobs).abs().max().item() <= 1e-4
    assert torch.equal(after_fast, after_plain)  # the same draws from the generator


def test_static_cache_compiled_decode_equals_eager(tiny, synth_dir):
    """The compiled fixed-size-cache decoder: greedy tokens of the eager sampler, log-probs that
    token_logprobs reproduces, one compiled step per (rows, cache length) reused by the next rollout."""
    _, batch = _prompts(tiny, synth_dir)
    model, banned = tiny.model, M.banned_token_ids(tiny.model, tiny.processor)
    eager = M.sample(model, batch.inputs, 2, 12, temperature=0.0, eos_ids=[])
    static = M.sample(model, batch.inputs, 2, 12, temperature=0.0, eos_ids=[], static_cache=True)
    assert torch.equal(static.completion_ids, eager.completion_ids)
    before = len(kernels.COMPILED_STEPS)
    drawn = M.sample(
        model,
        batch.inputs,
        2,
        12,
        temperature=1.0,
        banned=banned,
        static_cache=True,
        generator=torch.Generator().manual_seed(0),
    )
    assert len(kernels.COMPILED_STEPS) == before  # same shape: the compiled step and its cache are reused
    lp = M.token_logprobs(model, batch.inputs, drawn.completion_ids, drawn.completion_mask, 2, 1.0, banned)
    assert (lp - drawn.logprobs).abs().max().item() <= 1e-4


@pytest.mark.parametrize("share_prefix", [True, False])
def test_token_logprobs_equal_the_reference(tiny, synth_dir, share_prefix):
    """The fast path (shared prompt prefix, fused head) equals reference_token_logprobs, the plain definition
    (each completion after its own prompt copy, full logits), in values and in gradients."""
    recs = data.load_records(synth_dir / "test.jsonl")[:2]
    batch = data.collate_prompts(recs, tiny.processor, tiny.frame_kind)
    banned = M.banned_token_ids(tiny.model, tiny.processor)
    ro = M.sample(tiny.model, batch.inputs, 3, 10, generator=torch.Generator().manual_seed(0), banned=banned)
    args = (batch.inputs, ro.completion_ids, ro.completion_mask, 3, 0.8, banned)
    model = tiny.model.train()
    fast = M.token_logprobs(model, *args, share_prefix=share_prefix)
    plain = M.reference_token_logprobs(model, *args)
    assert torch.allclose(fast, plain, atol=1e-5), (fast - plain).abs().max()
    params = [p for p in model.parameters() if p.requires_grad][-4:]
    g_fast = torch.autograd.grad(fast.sum(), params)
    g_plain = torch.autograd.grad(plain.sum(), params)
    model.eval()
    for a, b in zip(g_fast, g_plain):
        assert torch.allclose(a, b, atol=1e-4)


def test_a_wider_deeper_tiny_lm_keeps_32_dim_heads_and_runs(tmp_path, synth_dir):
    """build_tiny(lm_width=..., lm_layers=..., kv_heads=...): the perception ladder's capacity rungs are the
    same architecture, wider, deeper or without shared key/value heads."""
    from embedded import defaults, tiny

    corpus = defaults.tokenizer_corpus([synth_dir / "train.jsonl"])
    built = tiny.build_tiny(tmp_path / "wide", corpus, lm_width=192, lm_layers=6, kv_heads=6)
    wide = M.load(built, device="cpu")
    text = wide.model.config.text_config
    assert (text.hidden_size, text.num_attention_heads, text.num_key_value_heads) == (192, 6, 6)
    assert text.num_hidden_layers == 6 and len(wide.model.model.language_model.layers) == 6
    assert text.hidden_size // text.num_attention_heads == 32 and text.intermediate_size == 576
    recs = data.load_records(synth_dir / "test.jsonl")[:2]
    batch = data.collate_prompts(recs, wide.processor, wide.frame_kind)
    with torch.no_grad():
        logits = wide.model(**batch.inputs).logits  # image features reach the wider LM
    assert logits.shape[-1] == text.vocab_size and torch.isfinite(logits).all()


def test_mrope_axes():
    assert M.mrope_axes((4, 6, 6)) == [0] * 4 + [1] * 6 + [2] * 6
    assert M.mrope_axes((2, 7, 7), "interleaved") == [0, 0] + [1, 2] * 7
    assert M.mrope_axes((2, 4, 10), "interleaved") == [0, 0] + [1, 2] * 4 + [2] * 6
    with pytest.raises(ValueError, match="unknown M-RoPE layout"):
        M.mrope_axes((4, 6, 6), "diagonal")


def test_interleaved_mrope_turns_each_frequency_by_its_axis(tmp_path, synth_dir, tiny):
    """A tiny model built with mrope_layout="interleaved" keeps the field through save and load, and its
    rotary angle of frequency j is position[axis j] x inv_freq[j]; the default layout leaves HF's method."""
    from embedded import defaults
    from embedded import tiny as tiny_lib

    corpus = defaults.tokenizer_corpus([synth_dir / "train.jsonl"])
    inter = M.load(
        tiny_lib.build_tiny(tmp_path / "inter", corpus, mrope_section=(2, 7, 7), mrope_layout="interleaved"),
        device="cpu",
    )
    assert inter.model.config.text_config.mrope_layout == "interleaved"
    assert not hasattr(tiny.model.config.text_config, "mrope_layout")  # the default writes no field
    positions = torch.tensor([[[3, 5]], [[7, 11]], [[13, 17]]])  # [3 axes, batch 1, 2 tokens]: distinct t/h/w
    x = torch.zeros(1, dtype=torch.float32)
    for loaded, axes in ((inter, [0, 0] + [1, 2] * 7), (tiny, M.mrope_axes((4, 6, 6)))):
        rope = loaded.model.model.language_model.rotary_emb
        cos, _ = rope(x, positions)
        angles = torch.stack([positions[a, 0].float() * rope.inv_freq[j] for j, a in enumerate(axes)], -1)
        assert torch.allclose(cos[0], torch.cat((angles, angles), -1).cos(), atol=1e-6)
    assert "recomposition_frequencies" not in vars(tiny.model.model.language_model.rotary_emb)
    with pytest.raises(ValueError, match="unknown M-RoPE layout"):
        tiny_lib.build_tiny(tmp_path / "bad", corpus, mrope_layout="diagonal")
    assert not (tmp_path / "bad").exists()


def test_the_shared_prefix_decoder_on_a_qwen2_vl_model(tiny, synth_dir):
    """Qwen2-VL (the other supported family, "0-1000" frames) through the same decode step: its layers have
    the same parts, and its rotary embedding recomposes the M-RoPE sections as Qwen2.5-VL's does."""
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    c, text = tiny.model.config, tiny.model.config.text_config
    rope = {"rope_type": "default", "mrope_section": [2, 6, 8], "rope_theta": 10000.0}
    config = Qwen2VLConfig(
        text_config=dict(
            vocab_size=text.vocab_size,
            hidden_size=128,
            intermediate_size=256,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            rope_parameters=rope,
        ),
        vision_config=dict(depth=1, embed_dim=64, hidden_size=128, num_heads=4, mlp_ratio=2),
        image_token_id=c.image_token_id,
        video_token_id=c.video_token_id,
        vision_start_token_id=c.vision_start_token_id,
        vision_end_token_id=c.vision_end_token_id,
    )
    torch.manual_seed(0)
    qwen2 = Qwen2VLForConditionalGeneration(config).eval()
    _, batch = _prompts(tiny, synth_dir)
    no_eos = {"eos_ids": [], "banned": torch.tensor([], dtype=torch.long), "pad_id": 0}

    def draw(shared: bool) -> M.Rollout:
        gen = torch.Generator().manual_seed(0)
        return M.sample(qwen2, batch.inputs, 3, 12, 1.0, generator=gen, shared_prefix=shared, **no_eos)

    fast, plain = draw(True), draw(False)
    assert type(qwen2.model.language_model.layers[0]).__name__ == "Qwen2VLDecoderLayer"
    assert torch.equal(fast.completion_ids, plain.completion_ids)
    assert (fast.logprobs - plain.logprobs).abs().max().item() <= 1e-4
