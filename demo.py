"""`make demo`: the whole method end to end on the embedded defaults, on a laptop CPU, offline.

    synthetic EO data (synth.py) -> tiny Qwen2.5-VL (model.build_tiny) -> SFT warm-up (train_sft.py)
    -> greedy eval (eval.py) -> GRPO (train_grpo.py) -> greedy eval -> before/after table per task

    python demo.py                       # ~2 minutes on 2 CPU cores after the first-use build of data and model
    python demo.py --sft-tasks all --sft-steps 1000    # every task (longer)
    python demo.py --sft-steps 30 --grpo-steps 4 --eval-records 24     # a smoke run

The defaults are the configuration of scripts/grpo_proof.py (issue 4's acceptance run): a short SFT
on classification + vqa, under-trained on purpose, then 40 GRPO steps on vqa with the format +
exact-match reward at temperature 0.5, lr 1e-4, β = 0.

Everything lands in --out (default runs/demo): sft/, grpo/, eval-sft/, eval-grpo/ (metrics.json,
predictions.jsonl) and the logs to plot (sft/log.jsonl, grpo/log.jsonl).
"""

from __future__ import annotations

import argparse
import importlib
import json
import time
from pathlib import Path

import data
import model as M
import train_grpo
import train_sft

eval_lib = importlib.import_module("eval")  # `eval` is also a builtin name

# the headline metric of each task in the before/after table
HEADLINE = {
    "classification": "accuracy", "temporal_classification": "accuracy", "vqa": "accuracy",
    "multilabel": "micro_f1", "counting": "accuracy", "grounding": "acc@0.5", "detection": "f1@0.5",
    "change_detection": "f1@0.5", "caption": "rouge_l", "region_caption": "rouge_l",
    "change_caption": "rouge_l", "grounded_caption": "rouge_l",
}  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/demo", help="output directory (default: %(default)s)")
    p.add_argument("--sft-tasks", default="classification,vqa", help="SFT tasks, comma list or all (default: %(default)s)")
    p.add_argument("--sft-steps", type=int, default=150, help="SFT steps (default: %(default)s)")
    p.add_argument("--grpo-task", default="vqa", help="task(s) GRPO optimises (default: %(default)s)")
    p.add_argument("--grpo-steps", type=int, default=40, help="GRPO steps (default: %(default)s)")
    p.add_argument("--temperature", type=float, default=0.5, help="GRPO sampling temperature (default: %(default)s)")
    p.add_argument("--prompts", type=int, default=8, help="GRPO prompts per step (default: %(default)s)")
    p.add_argument("--beta", type=float, default=0.0, help="GRPO KL weight to the SFT checkpoint (default: %(default)s)")
    p.add_argument("--eval-records", type=int, default=120, help="held-out records evaluated (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed for SFT and GRPO (default: %(default)s)")
    return p.parse_args(argv)


def headline(metrics: dict) -> dict[str, tuple[str, float, float]]:
    """task -> (metric name, value, format rate)."""
    out = {}
    for task, m in metrics.items():
        name = HEADLINE.get(task, "accuracy")
        name = name if name in m else next((k for k in m if k not in ("n", "format")), "format")
        out[task] = (name, float(m.get(name, 0.0)), float(m.get("format", 0.0)))
    return out


def evaluate(model_dir: str, records: list, out_dir: Path) -> dict:
    completions, frames = eval_lib.generate(model_dir, records, batch_size=16, max_new_tokens=96)
    samples = [eval_lib.Sample(task=r.task, answer=r.answer, completion=c, frame=f, meta=r.meta, id=r.id)
               for r, c, f in zip(records, completions, frames)]  # fmt: skip
    return eval_lib.evaluate(samples, out_dir=out_dir, caption_extras=False, quiet=True)["tasks"]


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    out = Path(args.out)
    t_start = time.perf_counter()

    # ---- data and the tiny model (cached after the first run)
    data_dir = M.default_data()
    tiny = M.default_model()
    print(f"data: {data_dir}  model: {tiny}")
    tasks = list(data.TASKS) if args.sft_tasks == "all" else args.sft_tasks.split(",")
    test = data.load_records(data_dir / "test.jsonl", tasks=tasks)
    per_task = max(1, args.eval_records // len(tasks))
    held_out = [r for t in tasks for r in [x for x in test if x.task == t][:per_task]]

    # ---- SFT warm-up
    print(f"\n== SFT on {','.join(tasks)}: {args.sft_steps} steps ==")
    hist = train_sft.main(["--out", str(out / "sft"), "--max-steps", str(args.sft_steps), "--seed", str(args.seed),
                           "--tasks", ",".join(tasks), "--eval-every", str(max(1, args.sft_steps // 6))])  # fmt: skip
    curve = hist["eval_loss"]
    print("held-out loss: " + "  ".join(f"{s}:{v:.2f}" for s, v in curve))

    # ---- eval of the SFT checkpoint
    print("\n== eval after SFT ==")
    before = headline(evaluate(str(out / "sft" / "final"), held_out, out / "eval-sft"))
    preds = [json.loads(line) for line in open(out / "eval-sft" / "predictions.jsonl")]
    print("a few answers (SFT, greedy):")
    for row in preds[:: max(1, len(preds) // 6)][:6]:
        print(f"  [{row['task']}] truth {json.dumps(row['answer'])[:60]}\n      model {row['completion'][:110]!r}")

    # ---- GRPO
    print(f"\n== GRPO on {args.grpo_task}: {args.grpo_steps} steps ==")
    train_grpo.main([
        "--model", str(out / "sft" / "final"), "--data", str(data_dir / "train.jsonl"), "--task", args.grpo_task,
        "--max-steps", str(args.grpo_steps), "--out", str(out / "grpo"), "--seed", str(args.seed),
        "--lr", "1e-4", "--max-new-tokens", "48", "--beta", str(args.beta), "--temperature", str(args.temperature),
        "--prompts-per-step", str(args.prompts),
    ])  # fmt: skip
    grpo_log = [json.loads(line) for line in open(out / "grpo" / "log.jsonl")]
    steps = [r for r in grpo_log if "reward_mean" in r]
    print("GRPO reward (mean over 5-step windows): " + "  ".join(
        f"{steps[i]['step']}:{sum(r['reward_mean'] for r in steps[i:i + 5]) / len(steps[i:i + 5]):.2f}"
        for i in range(0, len(steps), 5)))  # fmt: skip

    # ---- eval of the GRPO checkpoint, and the table
    print("\n== eval after GRPO ==")
    after = headline(evaluate(str(out / "grpo" / "final"), held_out, out / "eval-grpo"))
    print("\n| task | metric | SFT | SFT+GRPO | format SFT -> GRPO |\n|---|---|---:|---:|---|")
    for task in before:
        name, b, bf = before[task]
        _, a, af = after.get(task, (name, float("nan"), float("nan")))
        mark = "  <- GRPO task" if task in args.grpo_task.split(",") else ""
        print(f"| {task} | {name} | {b:.3f} | {a:.3f} | {bf:.2f} -> {af:.2f} |{mark}")
    print(f"\ndemo finished in {(time.perf_counter() - t_start) / 60:.1f} min; outputs in {out}/")


if __name__ == "__main__":
    main()
