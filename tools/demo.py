"""`make demo`: the whole method end to end on the embedded defaults, on a laptop CPU, offline.

    synthetic EO data (synth.py) -> tiny Qwen2.5-VL (tiny.build_tiny) -> SFT warm-up (train_sft.py)
    -> greedy eval (eval.py) -> GRPO (train_grpo.py) -> greedy eval -> before/after table per task

    python tools/demo.py                       # ~2 minutes on 2 CPU cores after the first-use build
                                               # of data and model
    python tools/demo.py --sft-tasks all --sft-steps 1000    # every task (longer)
    python tools/demo.py --sft-steps 30 --grpo-steps 4 --eval-records 24     # a smoke run

The defaults are the configuration of scripts/grpo_proof.py (the GRPO acceptance run): a short SFT
on classification + vqa, under-trained on purpose, then 40 GRPO steps on vqa with the format +
exact-match reward at temperature 0.5, lr 1e-4, β = 0.

Everything lands in a new folder under --out (default runs/demo/<date-time>, so a rerun never touches an
earlier one): sft/, grpo/, eval-sft/, eval-grpo/ (metrics.json, table.md, predictions.jsonl) and the logs
to plot (sft/log.jsonl, grpo/log.jsonl).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: its modules

import eval as eval_lib  # noqa: E402
import model as M  # noqa: E402
import train_grpo  # noqa: E402
import train_sft  # noqa: E402
from embedded import defaults  # noqa: E402
from geovlm import bootstrap, viewer  # noqa: E402
from geovlm.flags import ArgumentParser, count, non_negative, positive, positive_int  # noqa: E402
from geovlm.run import load_data  # noqa: E402
from geovlm.tasks import TASKS  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = ArgumentParser(description=__doc__)
    p.add_argument(
        "--out", default="runs/demo", help="the demo writes into a new <date-time> folder under this one"
    )
    p.add_argument("--sft-tasks", default="classification,vqa", help="SFT tasks, comma list or all")
    p.add_argument("--sft-steps", type=positive_int, default=150, help="SFT steps")
    p.add_argument("--grpo-task", default="vqa", help="task(s) GRPO optimises, comma list")
    p.add_argument("--grpo-steps", type=positive_int, default=40, help="GRPO steps")
    p.add_argument("--temperature", type=positive, default=0.5, help="GRPO sampling temperature")
    p.add_argument("--prompts", type=positive_int, default=8, help="GRPO prompts per step")
    p.add_argument("--beta", type=non_negative, default=0.0, help="GRPO KL weight to the SFT checkpoint")
    p.add_argument("--eval-records", type=positive_int, default=120, help="held-out records evaluated")
    p.add_argument("--seed", type=count, default=0, help="seed for SFT and GRPO")
    return p.parse_args(argv)


def change_table(before_dir: Path, after_dir: Path, trained: list[str]) -> str:
    """Per task: n, the headline metric before and after with their 95% bootstrap intervals, and the paired
    interval of the change (the same records resampled for both): a change whose interval holds 0 is noise."""
    before = bootstrap.read_predictions(before_dir / "predictions.jsonl")
    after = bootstrap.read_predictions(after_dir / "predictions.jsonl")
    lines = [
        "| task | n | metric | SFT [95% CI] | SFT+GRPO [95% CI] | change [paired 95% CI] | well-formed |",
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


def evaluate_checkpoint(model_dir: Path, records: list, out_dir: Path) -> dict:
    loaded = M.load(str(model_dir), device="cpu")
    return eval_lib.evaluate_model(
        loaded.model, loaded.processor, loaded.frame_kind, records, 96, loaded.device, out_dir=out_dir
    )["tasks"]


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    out = Path(args.out) / time.strftime("%Y%m%d-%H%M%S")
    t_start = time.perf_counter()

    # ---- data and the tiny model (cached after the first run)
    data_dir = defaults.data_dir()
    print(f"data: {data_dir}  model: {defaults.base_model()}  outputs: {out}")
    tasks = list(TASKS) if args.sft_tasks == "all" else args.sft_tasks.split(",")
    test = load_data(data_dir / "test.jsonl", "held-out data", tasks=tasks)
    per_task = max(1, args.eval_records // len(tasks))
    held_out = [r for t in tasks for r in [x for x in test if x.task == t][:per_task]]

    # ---- SFT warm-up
    print(f"\n== SFT on {','.join(tasks)}: {args.sft_steps} steps ==")
    hist = train_sft.main(
        [
            "--out",
            str(out / "sft"),
            "--max-steps",
            str(args.sft_steps),
            "--seed",
            str(args.seed),
            "--tasks",
            ",".join(tasks),
            "--eval-every",
            str(max(1, args.sft_steps // 6)),
        ]
    )
    print("held-out loss: " + "  ".join(f"{s}:{v:.2f}" for s, v in hist["eval_loss"]))

    # ---- eval of the SFT checkpoint
    print("\n== eval after SFT ==")
    evaluate_checkpoint(out / "sft" / "final", held_out, out / "eval-sft")
    preds = [json.loads(line) for line in open(out / "eval-sft" / "predictions.jsonl")]
    print("a few answers (SFT, greedy):")
    for row in preds[:: max(1, len(preds) // 6)][:6]:
        print(
            f"  [{row['task']}] truth {json.dumps(row['answer'])[:60]}\n      model "
            f"{row['completion'][:110]!r}"
        )

    # ---- GRPO
    print(f"\n== GRPO on {args.grpo_task}: {args.grpo_steps} steps ==")
    train_grpo.main(
        [
            "--model",
            str(out / "sft" / "final"),
            "--data",
            str(data_dir / "train.jsonl"),
            "--task",
            args.grpo_task,
            "--max-steps",
            str(args.grpo_steps),
            "--out",
            str(out / "grpo"),
            "--seed",
            str(args.seed),
            "--lr",
            "1e-4",
            "--max-new-tokens",
            "48",
            "--beta",
            str(args.beta),
            "--temperature",
            str(args.temperature),
            "--prompts-per-step",
            str(args.prompts),
        ]
    )
    steps = [r for r in map(json.loads, open(out / "grpo" / "log.jsonl")) if "reward_mean" in r]
    print(
        "GRPO reward (mean over 5-step windows): "
        + "  ".join(
            f"{steps[i]['step']}:"
            f"{sum(r['reward_mean'] for r in steps[i : i + 5]) / len(steps[i : i + 5]):.2f}"
            for i in range(0, len(steps), 5)
        )
    )

    # ---- eval of the GRPO checkpoint, and the table
    print("\n== eval after GRPO ==")
    evaluate_checkpoint(out / "grpo" / "final", held_out, out / "eval-grpo")
    print(change_table(out / "eval-sft", out / "eval-grpo", args.grpo_task.split(",")))
    page = viewer.write_viewer(out / "eval-grpo" / "predictions.jsonl")
    print(f"\ndemo finished in {(time.perf_counter() - t_start) / 60:.1f} min; outputs in {out}/")
    print(
        f"look at: {out}/sft/plots/ and {out}/grpo/plots/ (curves), {out}/grpo/rollouts.html (what GRPO "
        f"sampled and earned), {page} (held-out answers with their boxes)"
    )
    return out


if __name__ == "__main__":
    main()
