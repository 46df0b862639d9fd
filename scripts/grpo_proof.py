"""Does GRPO learn? A short SFT -> GRPO on one task, per seed, and a shuffled-reward control.

    python scripts/grpo_proof.py                       # vqa, seeds 0,1,2 (~40 CPU minutes)
    python scripts/grpo_proof.py --sft runs/demo/sft/final --task counting --seeds 0 --steps 40

For each seed: a short SFT of the tiny model (under-trained on purpose, so there is room; skipped
when --sft is given), the greedy held-out accuracy of that checkpoint (the baseline), then GRPO with
the real rewards and GRPO with rewards permuted at random among each batch's completions (same
reward distribution, no credit assignment), each evaluated along the way. Prints a table and writes
--out/proof.json. The acceptance bar (issue 4): >= +10 points over the baseline at the final
evaluation in every seed, sampled format rate >= 90%, and no such gain in the control.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import defaults  # noqa: E402
import synth  # noqa: E402
import train_grpo  # noqa: E402
import train_sft  # noqa: E402

METRIC = {"counting": "accuracy", "classification": "accuracy", "vqa": "accuracy", "grounding": "acc@0.5",
          "multilabel": "micro_f1", "temporal_classification": "accuracy", "detection": "f1@0.5"}  # fmt: skip


def task_split(src: Path, task: str, out: Path, limit: int) -> Path:
    """The task's records of `src`, image paths made absolute, at most `limit` of them."""
    rows = [json.loads(line) for line in open(src)]
    rows = [r for r in rows if r["task"] == task][: limit or None]
    for r in rows:
        r["images"] = [str((src.parent / p).resolve()) for p in r["images"]]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return out


def run(args: argparse.Namespace, sft: str, seed: int, control: bool, eval_path: Path, train_path: Path) -> dict:
    name = f"{'control' if control else 'grpo'}-seed{seed}"
    argv = ["--model", sft, "--data", str(train_path), "--task", args.task, "--max-steps", str(args.steps),
            "--eval-data", str(eval_path), "--eval-every", str(args.eval_every), "--out", str(Path(args.out) / name),
            "--seed", str(seed), "--lr", str(args.lr), "--group-size", str(args.group_size),
            "--prompts-per-step", str(args.prompts), "--max-new-tokens", str(args.max_new_tokens),
            "--beta", str(args.beta), "--temperature", str(args.temperature), "--log-rollouts-every", "0"]  # fmt: skip
    argv += args.grpo_args.split()
    if control:
        argv.append("--shuffle-rewards")
    out = train_grpo.main(argv)
    rows = [json.loads(line) for line in open(Path(args.out) / name / "log.jsonl")]
    steps = [r for r in rows if "reward_mean" in r]
    fmt = [r.get(f"format/{args.task}", 0.0) for r in steps]
    metric = METRIC.get(args.task, "accuracy")
    curve = [(h["step"], h["eval"][args.task][metric]) for h in out["eval"]]
    return {"curve": curve, "format_rate": sum(fmt) / max(1, len(fmt)), "reward_first": steps[0]["reward_mean"],
            "reward_last": sum(r["reward_mean"] for r in steps[-5:]) / len(steps[-5:]),
            "seconds_per_step": {k: sum(r[k] for r in steps) / len(steps) for k in
                                 ("rollout_s", "reward_s", "logprob_s", "update_s", "step_s")}}  # fmt: skip


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sft", default=None, help="an SFT checkpoint to start every seed from (default: a short SFT per seed)")
    p.add_argument("--base-model", default=None, help="model the per-seed SFT starts from (default: the embedded tiny model)")
    p.add_argument("--sft-steps", type=int, default=150, help="steps of the per-seed SFT (default: %(default)s)")
    p.add_argument("--sft-tasks", default="classification,vqa", help="tasks of the per-seed SFT (default: %(default)s)")
    p.add_argument("--data", default=None, help="dir with train.jsonl/test.jsonl (default: the embedded set)")
    p.add_argument("--task", default="vqa")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--eval-every", type=int, default=10)
    p.add_argument("--eval-records", type=int, default=100)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--group-size", type=int, default=8)
    p.add_argument("--prompts", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--beta", type=float, default=0.0)
    p.add_argument("--temperature", type=float, default=0.5)
    p.add_argument("--grpo-args", default="", help="more train_grpo.py flags, e.g. '--drop-zero-std-groups'")
    p.add_argument("--no-control", action="store_true")
    p.add_argument("--out", default="runs/proof")
    args = p.parse_args(argv)
    data_dir = Path(args.data) if args.data else defaults.data_dir()
    out = Path(args.out)
    # held out: the embedded test split's records of the task plus a fresh synthetic set (another seed)
    # of the same task, so that one image is one point of accuracy at most 1/eval_records
    extra = out / "extra-eval"
    if not (extra / "train.jsonl").exists():
        synth.make_dataset(extra, n=args.eval_records, seed=1000, tasks=[args.task], test_frac=0.5)
    eval_path = out / "eval.jsonl"
    rows = [task_split(p, args.task, out / f"eval-part{i}.jsonl", 0).read_text()
            for i, p in enumerate([data_dir / "test.jsonl", extra / "train.jsonl", extra / "test.jsonl"])]
    eval_path.write_text("".join(rows))
    train_path = task_split(data_dir / "train.jsonl", args.task, out / "train.jsonl", 0)
    results = {}
    for seed in [int(s) for s in args.seeds.split(",")]:
        sft = args.sft
        if sft is None and (out / f"sft-seed{seed}" / "final" / "config.json").exists():
            sft = str(out / f"sft-seed{seed}" / "final")  # this seed's SFT is done already: reuse it
        if sft is None:
            base = ["--model", args.base_model, "--lr", "2e-3"] if args.base_model else []
            train_sft.main([*base, "--data", str(data_dir / "train.jsonl"), "--tasks", args.sft_tasks, "--max-steps",
                            str(args.sft_steps), "--seed", str(seed), "--out", str(out / f"sft-seed{seed}"),
                            "--eval-every", "1000"])  # fmt: skip
            sft = str(out / f"sft-seed{seed}" / "final")
        results[f"grpo-{seed}"] = run(args, sft, seed, False, eval_path, train_path)
        if not args.no_control:
            results[f"control-{seed}"] = run(args, sft, seed, True, eval_path, train_path)
    print(f"\n| run | {args.task} accuracy along the way (step: value) | gain | sampled format |\n|---|---|---:|---:|")
    for name, r in results.items():
        base, final = r["curve"][0][1], r["curve"][-1][1]
        curve = "  ".join(f"{s}:{v:.3f}" for s, v in r["curve"])
        print(f"| {name} | {curve} | {100 * (final - base):+.1f} pt | {r['format_rate']:.2f} |")
    (out / "proof.json").write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
