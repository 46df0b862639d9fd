"""The offline tiny Qwen2.5-VL: the real architecture at a size a laptop CPU trains in minutes.

    path = build_tiny("runs/tiny", corpus=texts)     # random weights, tokenizer trained on `texts`
    loaded = model.load(path)                        # the same path a real checkpoint takes

It is a stock `Qwen2_5_VLForConditionalGeneration` (TINY_TEXT / TINY_VISION below: 1.55M parameters with the
embedded tokenizer), a byte-level BPE tokenizer (1024 tokens + the 14 Qwen special tokens) trained on the
given texts, Qwen's chat template, and the stock Qwen2.5-VL processor with at most TINY_MAX_PIXELS per image.
Saved as an ordinary HF directory, so everything downstream (loading, sampling, FSDP, checkpoints, eval) runs
exactly as on Qwen/Qwen2.5-VL-3B-Instruct. Tests, the demo and the embedded defaults (defaults.py) use it.
"""

from __future__ import annotations

import os

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

import model as model_lib

# Qwen's special tokens, in Qwen's order. The tiny tokenizer carries all of them so that the
# processor, the chat template and the model config see the same ids as on a real checkpoint.
QWEN_SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]

# Qwen2-VL / Qwen2.5-VL chat template (the stock one, "Picture N:" labels off by default).
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}"
    "{{ message['content'] }}<|im_end|>\n{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture "
    "{{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}Video "
    "{{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# The same, with each user turn's text before its images: the question is read before the image, so in the
# causal LM an image token can already attend to what is asked (which class, which colour) and mark itself;
# the answer then only has to read where the marked token is, as on the one-object probe. A model-level
# choice kept in the model's own chat template (the code path is the same), for the perception ladder.
TEXT_FIRST_CHAT_TEMPLATE = CHAT_TEMPLATE.replace(
    "{% for content in message['content'] %}",
    "{% for content in message['content'] %}{% if content['type'] == 'text' and 'text' in content %}"
    "{{ content['text'] }}{% endif %}{% endfor %}{% for content in message['content'] %}",
).replace("{% elif 'text' in content %}{{ content['text'] }}{% endif %}", "{% endif %}")


TINY_TEXT = dict(
    hidden_size=128,
    intermediate_size=384,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=4096,
    rms_norm_eps=1e-6,
    rope_theta=10000.0,
)
TINY_VISION = dict(
    depth=2,
    hidden_size=96,
    intermediate_size=192,
    num_heads=4,
    patch_size=14,
    spatial_merge_size=2,
    temporal_patch_size=2,
    window_size=112,
    fullatt_block_indexes=[1],
)
TINY_MIN_PIXELS = 16 * 28 * 28  # 16 merged tokens at least
TINY_MAX_PIXELS = 100 * 28 * 28  # ~280 x 280: at most 100 image tokens per image, fast on a CPU


def _train_tokenizer(texts: list[str], vocab_size: int):
    """Byte-level BPE trained on the project's own text, Qwen special tokens appended after it."""
    from transformers import PreTrainedTokenizerFast  # here: transformers' processors cost seconds to import

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, clean_up_tokenization_spaces=False)
    fast.add_special_tokens({"additional_special_tokens": QWEN_SPECIAL_TOKENS})
    fast.eos_token, fast.pad_token = "<|im_end|>", "<|endoftext|>"
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_tiny(
    out_dir: str | os.PathLike,
    corpus: list[str],
    seed: int = 0,
    vocab_size: int = 1024,
    rope_theta: float = TINY_TEXT["rope_theta"],
    text_first: bool = False,
    lm_width: int = TINY_TEXT["hidden_size"],
    lm_layers: int = TINY_TEXT["num_hidden_layers"],
    mrope_section: tuple[int, int, int] = (4, 6, 6),
    kv_heads: int | None = None,
    mrope_layout: str = "sections",
) -> str:
    """A real Qwen2_5_VLForConditionalGeneration with random weights (sizes above), its tokenizer trained on
    `corpus` (the texts it will read and write), saved as an HF directory; returns its path.

    `rope_theta` sets where the LM can see in an image. M-RoPE gives an image token's row and column the
    middle and the lowest of the head's 16 rotary frequencies (mrope_section [4, 6, 6]); at theta 10000 the
    column frequencies are 3e-3 .. 2e-4 rad a token, so across a 10-token-wide image their angles move by
    under 0.03 rad and left looks like right. At theta 50 they move by up to 0.8 rad (rows: 3.4), enough to
    localise (the README's grounding proof); the embedded model keeps 10000, as its measured figures were.
    `text_first`: the chat template puts a turn's text before its images (TEXT_FIRST_CHAT_TEMPLATE).
    `lm_width`: the LM's hidden size; heads keep their 32 dims (so the M-RoPE sections hold), kv heads are
    half the heads and the MLP 3x the width, as in TINY_TEXT (the perception ladder's capacity rung).
    `lm_layers`: the LM's decoder layers (depth: the attention hops it has to bind a box to its object).
    `mrope_section`: how many of the 16 frequencies (highest first) go to time, rows and columns.
    `kv_heads`: key/value heads (default: half the heads, as TINY_TEXT; the heads' count: no sharing).
    `mrope_layout`: "interleaved" alternates the row and column frequencies (model.MROPE_LAYOUTS; model.load
    applies it); the default writes no field, so the config is Qwen2.5-VL's own."""
    # here, not at the top: these pull in torchvision (seconds), which `import embedded.defaults` must not pay
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    model_lib.mrope_axes(mrope_section, mrope_layout)  # an unknown layout fails here, before any work
    tokenizer = _train_tokenizer(corpus, vocab_size)
    template = TEXT_FIRST_CHAT_TEMPLATE if text_first else CHAT_TEMPLATE
    tokenizer.chat_template = template
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIAL_TOKENS}
    heads = lm_width // 32
    text = dict(
        TINY_TEXT,
        hidden_size=lm_width,
        intermediate_size=3 * lm_width,
        num_hidden_layers=lm_layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads or max(1, heads // 2),
        rope_theta=rope_theta,
        vocab_size=len(tokenizer),
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
        rope_scaling={"type": "mrope", "mrope_section": list(mrope_section)},
    )
    if mrope_layout != "sections":
        text["mrope_layout"] = mrope_layout
    vision = dict(TINY_VISION, out_hidden_size=lm_width)
    config = Qwen2_5_VLConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config)
    model.generation_config.eos_token_id = [ids["<|im_end|>"], ids["<|endoftext|>"]]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    image_processor = Qwen2VLImageProcessor(
        min_pixels=TINY_MIN_PIXELS,
        max_pixels=TINY_MAX_PIXELS,
        patch_size=14,
        merge_size=2,
        temporal_patch_size=2,
    )
    video_processor = Qwen2VLVideoProcessor(min_pixels=TINY_MIN_PIXELS, max_pixels=TINY_MAX_PIXELS)
    processor = Qwen2_5_VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=template,
    )
    return str(model_lib.save(model, processor, out_dir))
