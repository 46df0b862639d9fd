"""Is there room for GRPO above the greedy answer? Per record, the greedy completion's accuracy reward beside
G completions sampled as GRPO samples them (docs/results.md, "what lowers held-out detection").

    python scripts/headroom.py --task detection                      # the embedded start, its test split
    python scripts/headroom.py --model runs/grpo/final --data runs/proof/eval.jsonl --task detection

GRPO raises the reward of what it samples; greedy evaluation changes only where the policy's most likely
answer changes, which needs samples that beat the greedy one. Prints the mean accuracy reward of the greedy
completions, of the samples and of the best sample of each record; the share of samples, and of records'
best samples, that beat greedy; and the mean margin of the best sample over greedy. A sampled mean well under
greedy with few better samples says GRPO will mostly sharpen the sampler towards the answer greedy already
gives.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import data  # noqa: E402
import eval as E  # noqa: E402
import model as M  # noqa: E402
import rewards  # noqa: E402
from embedded import defaults  # noqa: E402
from geovlm.flags import ArgumentParser, count, positive, positive_int  # noqa: E402
from geovlm.run import check_model, load_data  # noqa: E402
from geovlm.tasks import TASKS  # noqa: E402


def headroom(greedy: list[float], sampled: list[list[float]]) -> dict[str, float]:
    """Summary of one greedy reward and G sampled rewards per record (same order)."""
    best = [max(s) for s in sampled]
    flat = [(r, g) for g, s in zip(greedy, sampled) for r in s]
    n = len(greedy)
    return {
        "records": n,
        "greedy": sum(greedy) / n,
        "sampled": sum(r for r, _ in flat) / len(flat),
        "best_sampled": sum(best) / n,
        "samples_above_greedy": sum(r > g for r, g in flat) / len(flat),
        "records_best_above_greedy": sum(b > g for b, g in zip(best, greedy)) / n,
        "best_margin": sum(max(0.0, b - g) for b, g in zip(best, greedy)) / n,
    }


def accuracy(task: str, completions: list[str], records: list, frames: list) -> list[float]:
    return [
        rewards.score(task, c, r.answer, f, record=r)["accuracy"]
        for c, r, f in zip(completions, records, frames)
    ]


def measure(loaded: M.Loaded, records: list, args: argparse.Namespace) -> dict[str, float]:
    """Greedy and --group-size sampled completions of every record, scored by the task's accuracy reward."""
    texts, frames = E.generate(
        loaded.model, loaded.processor, loaded.frame_kind, records, args.max_new_tokens, loaded.device
    )
    greedy = accuracy(args.task, texts, records, frames)
    gen = torch.Generator(device=loaded.device).manual_seed(args.seed)
    sampled: list[list[float]] = []
    with torch.no_grad():
        for start in tqdm(range(0, len(records), args.batch_size), desc="sample", unit="batch"):
            recs = records[start : start + args.batch_size]
            batch = data.collate_prompts(recs, loaded.processor, loaded.frame_kind)
            out = M.sample(
                loaded.model,
                M.to_device(batch.inputs, loaded.device),
                args.group_size,
                args.max_new_tokens,
                temperature=args.temperature,
                generator=gen,
            )
            done = M.decode(loaded.processor, out)
            G = args.group_size
            for i, (rec, frame) in enumerate(zip(recs, batch.frames)):
                sampled.append(accuracy(args.task, done[i * G : (i + 1) * G], [rec] * G, [frame] * G))
    return headroom(greedy, sampled)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = ArgumentParser(description=__doc__)
    ap.add_argument("--model", help="checkpoint directory; unset: the embedded start (defaults.sft_model)")
    ap.add_argument("--data", help="records (JSONL); unset: the embedded synthetic test split")
    ap.add_argument(
        "--task", choices=TASKS, default="detection", help="the task measured (default: detection)"
    )
    ap.add_argument("--records", type=positive_int, default=134, help="the first N records of the task")
    ap.add_argument("--group-size", type=positive_int, default=8, help="samples per record, as GRPO's G")
    ap.add_argument("--temperature", type=positive, default=0.7, help="sampling temperature (GRPO's)")
    ap.add_argument("--max-new-tokens", type=positive_int, default=128, help="tokens per completion")
    ap.add_argument("--batch-size", type=positive_int, default=8, help="prompts per sampling batch")
    ap.add_argument("--seed", type=count, default=0, help="seed of the sampling generator")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # no record of the task: one line from load_data
    records = load_data(args.data or defaults.test_data(), "--data", False, [args.task])[: args.records]
    model_path = args.model or defaults.sft_model()
    check_model(model_path)
    out = measure(M.load(model_path), records, args)
    for key, value in out.items():
        print(f"{key:>26}  {value:.3f}" if isinstance(value, float) else f"{key:>26}  {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
