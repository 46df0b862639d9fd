"""`make demo`: GRPO teaching the tiny model to find objects, end to end on a laptop CPU, offline.

    the embedded start (the tiny Qwen2.5-VL pre-trained to see, then on every task; shipped) -> greedy eval
    -> GRPO on detection (train_grpo.py) -> greedy eval -> before/after table, boxes drawn in predictions.html

    python tools/demo.py                              # ~5 minutes on 2 CPU cores after the first-use build
    python tools/demo.py --grpo-task counting         # another task (a comma list: mixed)
    python tools/demo.py --grpo-steps 4 --eval-records 24        # a smoke run

The start is embedded/weights/embedded-start (defaults.sft_model; its manifest says how it was made: the
perception ladder's chain, then four stages of every task, scripts/perception_start.py): the supervised
warm-up of the method, shipped because it takes hours of CPU. GRPO then trains on the embedded training
split with the detection proof's recipe (scripts/grpo_proof.py: temperature 0.7, 8 prompts x 8 completions,
128 new tokens, beta 0) for fewer steps, at lr 1e-4, train_grpo.py's own rate for the tiny model: from this
start the proof's 2e-4 lowers held-out detection on the proof's records, 1e-4 less (docs/results.md). The
held-out records of each GRPO task are the embedded test split's and fresh synth records (seed 1000, never
trained on), --eval-records in all, as in the proof. Beside the change it prints what explains it: the
final policy's score with the images permuted among the held-out records (the image must matter) and the
best question-only answer (blind).

Everything lands in a new folder under --out (default runs/demo/<date-time>, so a rerun never touches an
earlier one): grpo/ (log.jsonl, plots/, rollouts.html), eval-start/, eval-grpo/, eval-permuted/
(metrics.json, table.md, predictions.jsonl; predictions.html for the first two) and held-out/ (the records).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: its modules

import eval as eval_lib  # noqa: E402
import model as M  # noqa: E402
import train_grpo  # noqa: E402
from embedded import defaults, synth  # noqa: E402
from geovlm import baselines, bootstrap, viewer  # noqa: E402
from geovlm.flags import ArgumentParser, count, non_negative, positive, positive_int  # noqa: E402
from geovlm.run import load_data  # noqa: E402
from geovlm.tasks import TASKS  # noqa: E402

MAX_NEW_TOKENS = 128  # a four-object detection answer takes ~103 tokens


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = ArgumentParser(description=__doc__)
    p.add_argument(
        "--out", default="runs/demo", help="the demo writes into a new <date-time> folder under this one"
    )
    p.add_argument("--grpo-task", default="detection", help="task(s) GRPO optimises, comma list")
    p.add_argument("--grpo-steps", type=positive_int, default=40, help="GRPO steps")
    p.add_argument("--lr", type=positive, default=1e-4, help="GRPO learning rate")
    p.add_argument("--temperature", type=positive, default=0.7, help="GRPO sampling temperature")
    p.add_argument("--prompts", type=positive_int, default=8, help="GRPO prompts per step")
    p.add_argument("--beta", type=non_negative, default=0.0, help="GRPO KL weight to the start")
    p.add_argument(
        "--eval-records",
        type=positive_int,
        default=134,
        help="held-out records per GRPO task: the test split's, then fresh ones up to this many",
    )
    p.add_argument("--seed", type=count, default=0, help="seed for GRPO")
    return p.parse_args(argv)


def held_out_records(data_dir: Path, tasks: list[str], n: int, folder: Path) -> list:
    """Per task: the test split's records, then fresh synth records of seed 1000 (the proof's) up to n."""
    test = load_data(data_dir / "test.jsonl", "held-out data", tasks=tasks)
    records = []
    for task in tasks:
        own = [r for r in test if r.task == task][:n]
        if len(own) < n:
            fresh = folder / task
            if not (fresh / "train.jsonl").exists():
                synth.make_dataset(fresh, n=n - len(own), seed=1000, tasks=[task], test_frac=0.0)
            own += load_data(fresh / "train.jsonl", "fresh held-out data")
        records += own
    return records


def change_table(before_dir: Path, after_dir: Path, trained: list[str]) -> str:
    """Per task: n, the headline metric before and after with their 95% bootstrap intervals, and the paired
    interval of the change (the same records resampled for both): a change whose interval holds 0 is noise."""
    before = bootstrap.read_predictions(before_dir / "predictions.jsonl")
    after = bootstrap.read_predictions(after_dir / "predictions.jsonl")
    lines = [
        "| task | n | metric | start [95% CI] | after GRPO [95% CI] | change [paired 95% CI] | well-formed |",
        "|---|---:|---|---|---|---|---|",
    ]
    for task, rows in before.items():
        metric = TASKS[task].metric
        b, a = bootstrap.task_stats(rows), bootstrap.task_stats(after.get(task, []))
        if metric not in b or metric not in a:
            continue
        delta = bootstrap.paired_delta(b[metric], a[metric])
        interval = f"[{delta[0]:+.3f}, {delta[1]:+.3f}]" if delta else "–"
        mark = " (GRPO's task)" if task in trained else ""
        lines.append(
            f"| {task}{mark} | {len(rows)} | {metric} | {b[metric].value:.3f} [{b[metric].low:.3f}, "
            f"{b[metric].high:.3f}] | {a[metric].value:.3f} [{a[metric].low:.3f}, {a[metric].high:.3f}] | "
            f"{a[metric].value - b[metric].value:+.3f} {interval} | "
            f"{b['well_formed'].value:.2f} -> {a['well_formed'].value:.2f} |"
        )
    lines.append(
        "A change whose paired interval contains 0 is not distinguishable from noise on these records."
    )
    return "\n" + "\n".join(lines)


def evaluate_checkpoint(model_dir: str | Path, records: list, out_dir: Path) -> dict:
    loaded = M.load(str(model_dir), device="cpu")
    return eval_lib.evaluate_model(
        loaded.model,
        loaded.processor,
        loaded.frame_kind,
        records,
        MAX_NEW_TOKENS,
        loaded.device,
        out_dir=out_dir,
    )["tasks"]


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    out = Path(args.out) / time.strftime("%Y%m%d-%H%M%S")
    t_start = time.perf_counter()
    tasks = args.grpo_task.split(",")
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise SystemExit(f"--grpo-task: unknown task(s) {unknown}; tasks: {', '.join(TASKS)}")
    try:  # a demo started in the same second must not write into this one's folder
        out.mkdir(parents=True)
    except FileExistsError:
        raise SystemExit(f"demo: {out} exists already (a demo started this second); run it again") from None

    # ---- data (built once, cached), the start (shipped) and the held-out records
    data_dir, start = defaults.data_dir(), defaults.sft_model()
    made = json.loads((Path(start) / "manifest.json").read_text())
    print(
        f"data: {data_dir}\nstart: {start} (made by `{made['command']}` at {made['commit']})\noutputs: {out}"
    )
    held_out = held_out_records(data_dir, tasks, args.eval_records, out / "held-out")
    train = load_data(data_dir / "train.jsonl", "training data", tasks=tasks)
    blind = baselines.best_blind(train, held_out)["tasks"]

    # ---- eval of the start
    print(f"\n== eval of the start: {len(held_out)} held-out records ==")
    evaluate_checkpoint(start, held_out, out / "eval-start")
    preds = [json.loads(line) for line in open(out / "eval-start" / "predictions.jsonl")]
    print("a few answers (start, greedy):")
    for row in preds[:: max(1, len(preds) // 3)][:3]:
        truth = json.dumps(row["answer"])[:70]
        print(f"  [{row['task']}] truth {truth}\n      model {row['completion'][:140]!r}")

    # ---- GRPO
    print(f"\n== GRPO on {args.grpo_task}: {args.grpo_steps} steps ==")
    train_grpo.main(
        [
            *("--data", str(data_dir / "train.jsonl"), "--task", args.grpo_task),
            *("--max-steps", str(args.grpo_steps), "--out", str(out / "grpo"), "--seed", str(args.seed)),
            *("--lr", str(args.lr), "--max-new-tokens", str(MAX_NEW_TOKENS), "--beta", str(args.beta)),
            *("--temperature", str(args.temperature), "--prompts-per-step", str(args.prompts)),
        ]
    )
    steps = [r for r in map(json.loads, open(out / "grpo" / "log.jsonl")) if "reward_mean" in r]
    accuracy = [np.mean([v for k, v in r.items() if k.startswith("acc/")]) for r in steps]  # of its tasks
    print(
        "GRPO accuracy reward of the sampled completions (mean over 10-step windows): "
        + "  ".join(
            f"{steps[i]['step']}:{sum(accuracy[i : i + 10]) / len(accuracy[i : i + 10]):.3f}"
            for i in range(0, len(steps), 10)
        )
    )

    # ---- eval of the GRPO policy, with the images permuted, and the table
    print("\n== eval after GRPO ==")
    after = evaluate_checkpoint(out / "grpo" / "final", held_out, out / "eval-grpo")
    permuted = evaluate_checkpoint(
        out / "grpo" / "final", baselines.permute_images(held_out, args.seed), out / "eval-permuted"
    )
    print(change_table(out / "eval-start", out / "eval-grpo", tasks))
    print("\nwhat explains it (the GRPO policy): its score with the images permuted, and the blind answer")
    for task in tasks:
        metric = TASKS[task].metric
        print(
            f"  {task} {metric}: {after[task][metric]:.3f}; images permuted {permuted[task][metric]:.3f}; "
            f"blind ({blind[task]['baseline']}) {blind[task][metric]:.3f}"
        )
    before, page = (
        viewer.write_viewer(out / part / "predictions.jsonl") for part in ("eval-start", "eval-grpo")
    )
    print(f"\ndemo finished in {(time.perf_counter() - t_start) / 60:.1f} min; outputs in {out}/")
    print(
        f"look at: {out}/grpo/plots/ (curves), {out}/grpo/rollouts.html (what GRPO sampled and earned), "
        f"{page} (held-out answers with their boxes; the start's: {before})"
    )
    return out


if __name__ == "__main__":
    main()
