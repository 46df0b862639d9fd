"""Each rollout/update optimisation on and off, alternated in one run (the README's before/after figures).

    python scripts/ablate.py [--reps 5] [--group-size 8] [--new-tokens 64]
    python scripts/ablate.py --model embedded/weights/perception-start --task detection --prompts 8 \
        --new-tokens 128 --reps 3          # the detection proof's rollout shape

Rows (median [min-max] seconds over --reps, the two variants alternated):
  shared prefill   model.sample(prompts, G)            vs  model.sample(prompts repeated G times, 1):
                   one prefill + image encoding per prompt vs one per sample
  EOS check        check_every=8 (host sync every 8 tokens) vs check_every=1
  prefix decode    sample(shared_prefix=True): the decode step reads each prompt's keys and values once per
                   group and skips rows that have ended (kernels.shared_prefix_decode) vs the cache repeated
                   to the G samples; EOS on (both sides draw the same tokens), so rows end as they would
  preallocated     on the repeated cache, sample(preallocate=True): the KV cache written in place into
                   buffers of the rollout's length (kernels.preallocate_cache) vs transformers' DynamicCache,
                   concatenated every step
  static cache     sample(static_cache=True): fixed-size KV cache + torch.compile'd decode step (compiled in
                   the warm-up run) vs the eager loop (the default decoder)
  frozen vision    token_logprobs with image features computed once vs encoded again in the pass
  shared prefix    token_logprobs running the prompt once per group (KV cache repeated to G) vs once per
                   completion, with autograd (the policy update) and without (reference / old log-probs)
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import data  # noqa: E402
import model as M  # noqa: E402
from embedded import defaults  # noqa: E402
from geovlm.flags import ArgumentParser, positive_int  # noqa: E402
from geovlm.run import check_model  # noqa: E402


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def row(name: str, a_name: str, b_name: str, a, b, reps: int) -> str:
    a(), b()  # warm-up
    ta, tb = [], []
    for _ in range(reps):
        ta.append(timed(a))
        tb.append(timed(b))
    ma, mb = statistics.median(ta), statistics.median(tb)
    return (
        f"| {name} | {a_name}: {ma:.3f} s [{min(ta):.3f}-{max(ta):.3f}] | {b_name}: {mb:.3f} s "
        f"[{min(tb):.3f}-{max(tb):.3f}] | {mb / ma:.2f}x |"
    )


def main(argv: list[str] | None = None) -> None:
    p = ArgumentParser(description=__doc__)
    p.add_argument(
        "--reps", type=positive_int, default=5, help="timed repetitions of each side (after one warm-up)"
    )
    p.add_argument("--group-size", type=positive_int, default=8, help="G: completions per prompt")
    p.add_argument("--prompts", type=positive_int, default=2, help="B: prompts per batch")
    p.add_argument("--new-tokens", type=positive_int, default=64, help="T: tokens decoded per completion")
    p.add_argument("--threads", type=positive_int, default=1, help="torch CPU threads")
    p.add_argument("--model", default=None, help="model folder (default: the embedded base tiny model)")
    p.add_argument("--task", default="counting", help="the prompts: test-split records of this task")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    recs = [r for r in data.load_records(defaults.data_dir() / "test.jsonl") if r.task == args.task]
    if not recs:
        p.error(f"--task {args.task}: no such records in the embedded test split")
    recs = recs[: args.prompts]
    model_path = args.model or defaults.base_model()
    check_model(model_path)
    loaded = M.load(model_path, device="cpu")
    net, G, T = loaded.model.eval(), args.group_size, args.new_tokens
    x = data.collate_prompts(recs, loaded.processor, loaded.frame_kind).inputs
    xg = data.collate_prompts([r for r in recs for _ in range(G)], loaded.processor, loaded.frame_kind).inputs
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    no_eos = {"eos_ids": []}  # the same number of tokens on both sides
    print(
        f"# ablate: tiny Qwen2.5-VL, CPU, {args.threads} thread(s), B={args.prompts}, G={G}, T={T}, "
        f"reps {args.reps}, torch {torch.__version__}\n"
    )
    print("| optimisation | on | off | off/on |\n|---|---|---|---:|")
    print(
        row(
            "shared prefill (images encoded once per prompt)",
            "shared",
            "per sample",
            lambda: M.sample(net, x, G, T, generator=gen(), **no_eos),
            lambda: M.sample(net, xg, 1, T, generator=gen(), **no_eos),
            args.reps,
        )
    )
    print(
        row(
            "EOS checked every 8 tokens",
            "every 8",
            "every token",
            lambda: M.sample(net, x, G, T, generator=gen(), check_every=8),
            lambda: M.sample(net, x, G, T, generator=gen(), check_every=1),
            args.reps,
        )
    )
    print(
        row(
            "decode step reads the prompt once per group",
            "once per group",
            "repeated cache",
            lambda: M.sample(net, x, G, T, generator=gen()),
            lambda: M.sample(net, x, G, T, generator=gen(), shared_prefix=False),
            args.reps,
        )
    )
    repeated = {"shared_prefix": False, **no_eos}
    print(
        row(
            "KV cache preallocated, written in place (repeated cache)",
            "in place",
            "concatenated",
            lambda: M.sample(net, x, G, T, generator=gen(), **repeated),
            lambda: M.sample(net, x, G, T, generator=gen(), preallocate=False, **repeated),
            args.reps,
        )
    )
    print(
        row(
            "static KV cache + compiled decode step",
            "compiled",
            "eager",
            lambda: M.sample(net, x, G, T, generator=gen(), static_cache=True, **no_eos),
            lambda: M.sample(net, x, G, T, generator=gen(), **no_eos),
            args.reps,
        )
    )
    ro = M.sample(net, x, G, T, generator=gen(), **no_eos)
    with torch.no_grad():
        feats = M.encode_images(net, x)
    xf = {**x, "image_features": feats}

    def logprob_pass(inputs, share_prefix=True):
        lp = M.token_logprobs(
            net, inputs, ro.completion_ids, ro.completion_mask, G, share_prefix=share_prefix
        )
        lp.sum().backward()
        net.zero_grad(set_to_none=True)

    @torch.no_grad()
    def logprob_forward(share_prefix):
        M.token_logprobs(net, x, ro.completion_ids, ro.completion_mask, G, share_prefix=share_prefix)

    print(
        row(
            "frozen vision: features reused by a log-prob pass (fwd+bwd)",
            "reused",
            "re-encoded",
            lambda: logprob_pass(xf),
            lambda: logprob_pass(x),
            args.reps,
        )
    )
    print(
        row(
            "shared prefix: log-prob pass, fwd+bwd (policy update)",
            "once per group",
            "once per completion",
            lambda: logprob_pass(x, True),
            lambda: logprob_pass(x, False),
            args.reps,
        )
    )
    print(
        row(
            "shared prefix: log-prob pass, no grad (reference, old policy)",
            "once per group",
            "once per completion",
            lambda: logprob_forward(True),
            lambda: logprob_forward(False),
            args.reps,
        )
    )


if __name__ == "__main__":
    main()
