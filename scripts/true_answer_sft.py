"""What the true answers of GRPO's training records teach: SFT on the same records from the same start,
scored on the same held-out records, beside the GRPO proof's gain.

    python scripts/true_answer_sft.py                          # detection: the proof's start and records,
                                                               # 150 steps of 8 (one pass), lr 2e-4, seed 0
    python scripts/true_answer_sft.py --steps 300 --seeds 0,1  # two passes, two data orders
    python scripts/true_answer_sft.py --steps 600 --train-records 4800   # one pass over 4x the images

GRPO's reward says how good each sampled completion is; a record's answer says what the best one is. So
supervised training on the same images for as many passes is a yardstick for what a GRPO run on them can be
expected to teach (for detection from the perception start the two gains are of one size: docs/results.md).
The records come from `grpo_proof.synth_split` with the task's recipe (the same 1,200 training and 134
held-out records as `grpo_proof.py --task detection`). With --reasoning dense (detection's default) each
record's reasoning is rewritten the way the perception start was taught to reason (`embedded.curriculum`:
every box's 3 x 3 cell in answer order): synth's own short reasoning would first have to unteach that, which
costs more F1 than the boxes teach (measured: docs/results.md). Each seed's SFT is `train_sft.py` (its loss,
schedule and data order), scored greedily with eval's `evaluate_model`. Prints start, final and gain per
seed; writes --out/true_answer_sft.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(1, str(Path(__file__).resolve().parent))  # grpo_proof, when loaded from elsewhere (tests)

import grpo_proof  # noqa: E402

import eval as E  # noqa: E402
import model as M  # noqa: E402
import train_sft  # noqa: E402
from data import load_records  # noqa: E402
from embedded import curriculum, defaults  # noqa: E402
from geovlm.flags import ArgumentParser, count, positive, positive_int  # noqa: E402
from geovlm.run import check_model, holds_run  # noqa: E402
from geovlm.tasks import TASKS  # noqa: E402

# the tasks whose proof trains on fresh synth records
SYNTH_TASKS = [t for t, r in grpo_proof.RECIPES.items() if r["images"] == "synth" and r["train_records"]]


def dense_reasoning(record: dict) -> dict:
    """A detection record with its reasoning as the perception chain writes it ('There are two red pointed
    ships: one in the top left, one at the bottom; each gets its own box.')."""
    w, h = Image.open(record["images"][0]).size
    reasoning = curriculum.detection_reasoning(record["meta"]["class"], record["answer"], w, h)
    return {**record, "reasoning": reasoning}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = ArgumentParser(description=__doc__)
    ap.add_argument(
        "--task", choices=SYNTH_TASKS, default="detection", help="the proof whose records are used"
    )
    ap.add_argument(
        "--sft", help="the start (a checkpoint directory); unset: the task recipe's shipped start"
    )
    ap.add_argument(
        "--steps", type=positive_int, default=150, help="SFT steps (150 x 8 = one pass over 1,200)"
    )
    ap.add_argument("--batch-size", type=positive_int, default=8, help="records a step")
    ap.add_argument(
        "--lr", type=positive, default=2e-4, help="peak AdamW rate (the detection proof's GRPO rate)"
    )
    ap.add_argument("--seeds", default="0", help="comma list; each seed is one SFT run (its data order)")
    ap.add_argument(
        "--reasoning",
        choices=("dense", "records"),
        help="dense: detection reasoning rewritten as the perception chain's; records: as synth wrote it; "
        "unset: dense for detection, records otherwise",
    )
    ap.add_argument(
        "--train-records", type=positive_int, help="fresh training records; unset: the task recipe's (1,200)"
    )
    ap.add_argument(
        "--eval-records", type=count, default=100, help="fresh held-out records beside the test split's"
    )
    ap.add_argument(
        "--out", default="runs/true-answer-sft", help="records, SFT runs and true_answer_sft.json"
    )
    args = ap.parse_args(argv)
    recipe = grpo_proof.RECIPES[args.task]
    args.sft = args.sft or recipe["sft"]
    args.reasoning = args.reasoning or ("dense" if args.task == "detection" else "records")
    if args.reasoning == "dense" and args.task != "detection":
        ap.error("--reasoning dense rewrites detection records only; use --reasoning records")
    try:
        args.seed_list = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        ap.error(f"--seeds {args.seeds}: a comma list of integers, e.g. 0,1,2")
    args.train_records = args.train_records or recipe["train_records"]
    args.max_new_tokens = recipe["max_new_tokens"]
    return args


def score(checkpoint: str, records: list, args: argparse.Namespace) -> dict:
    """The checkpoint's greedy held-out metrics of the task."""
    loaded = M.load(checkpoint)
    return E.evaluate_model(
        loaded.model,
        loaded.processor,
        loaded.frame_kind,
        records,
        args.max_new_tokens,
        loaded.device,
        batch_size=16,
    )["tasks"][args.task]


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    check_model(args.sft)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise SystemExit(f"--out {out}: a file, not a folder; give a folder for the records and runs")
    taken = [str(out / f"sft-seed{s}") for s in args.seed_list if holds_run(out / f"sft-seed{s}")]
    if (out / "true_answer_sft.json").exists():  # its seeds may have run with other flags: never mixed
        taken.append(str(out / "true_answer_sft.json"))
    if taken:  # before any record is made: a rerun never replaces a run or its results
        raise SystemExit(f"{', '.join(taken)} already hold a run: give another --out")
    eval_path, train_path, _ = grpo_proof.synth_split(args, defaults.data_dir(), out)
    rows = [json.loads(line) for line in open(train_path)]
    if args.reasoning == "dense":
        rows = [dense_reasoning(r) for r in rows]
    sft_data = out / f"train-{args.reasoning}.jsonl"
    sft_data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    held_out, metric = load_records(eval_path), TASKS[args.task].metric
    results: dict = {"task": args.task, "metric": metric, "args": vars(args), "seeds": {}}
    results["start"] = score(args.sft, held_out, args)
    print(f"start: {metric} {results['start'][metric]:.3f}", flush=True)
    for seed in args.seed_list:
        run = out / f"sft-seed{seed}"
        train_sft.main(
            ["--model", args.sft, "--data", str(sft_data), "--max-steps", str(args.steps)]
            + ["--batch-size", str(args.batch_size), "--lr", str(args.lr), "--warmup-steps", "0"]
            + ["--eval-records", "0", "--seed", str(seed), "--out", str(run)]
        )
        results["seeds"][seed] = score(str(run / "final"), held_out, args)
        (out / "true_answer_sft.json").write_text(json.dumps(results, indent=2))
    print(table(results))
    return results


def table(results: dict) -> str:
    """Per seed: the start, after SFT on the true answers, the gain; and the mean accuracy reward."""
    metric, start = results["metric"], results["start"]
    lines = [
        f"| seed | {metric} start | after SFT on the true answers | gain | accuracy reward start -> after |",
        "|---|---:|---:|---:|---|",
    ]
    for seed, m in results["seeds"].items():
        lines.append(
            f"| {seed} | {start[metric]:.3f} | {m[metric]:.3f} | {100 * (m[metric] - start[metric]):+.1f} pt "
            f"| {start['accuracy_reward']:.3f} -> {m['accuracy_reward']:.3f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
