"""Does GRPO learn, and is it the image that explains the gain? SFT -> GRPO on one task, per seed, with
controls.

    python scripts/grpo_proof.py                           # vqa (answer-balanced), seeds 0,1,2
    python scripts/grpo_proof.py --task grounding          # localisation: the probe set, M-RoPE base 50
    python scripts/grpo_proof.py --task detection          # the headline task, from the shipped perception
                                                           # start (embedded/weights/perception-start)
    python scripts/grpo_proof.py --task counting           # from the embedded start (defaults.sft_model)
    python scripts/grpo_proof.py --task grounding --seeds 0 --sft embedded/weights/grounding-probe-sft
                                                           # seed 0's SFT start as shipped (the suite's)

For each seed: a short SFT of the tiny model (under-trained on purpose, so there is room; skipped when --sft
is given or the task's recipe ships a start), then GRPO with the real rewards, evaluated greedily on held-out
records along the way, and three controls in the same table:

- shuffled rewards: the same GRPO with rewards permuted at random among each batch's completions (same reward
  distribution, no credit assignment): its gain is what extra steps and sampling noise give;
- mismatched images: the final GRPO policy evaluated with the held-out images deranged among the records
  (baselines.permute_images; boxes moved to the same relative place): a policy that reads the image loses
  its gain there;
- blind: the best question-only baseline (baselines.best_blind, fitted on the training records): what the
  answer prior alone is worth.

The held-out set is the embedded test split's records of the task plus fresh synthetic records of another
seed. Each task has a recipe (RECIPES: SFT length, GRPO steps, learning rate, ...); every flag overrides it.
Prints a table and writes --out/proof.json. The README holds the vqa and grounding tables. The grounding
recipe runs on the localisation probe (square_records: one red square on grey, fresh held-out records) from a
tiny model with M-RoPE base 50, because after a short SFT on synth's EO scenes the tiny model does not
localise. The detection recipe runs on synth's scenes from the perception start (scripts/perception_start.py:
the perception ladder's chain, 26,500 steps of pre-training, shipped with its manifest), whose detection
reward spreads within a group; from a short SFT it is 0 on every completion. The counting recipe starts from
the embedded start (the chain's last link, embedded/weights/embedded-start), whose counting answers spread.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
from PIL import Image

import eval as E  # noqa: E402
import model as M
import train_grpo  # noqa: E402
import train_sft  # noqa: E402
from data import load_records  # noqa: E402
from embedded import (
    defaults,  # noqa: E402
    synth,  # noqa: E402
    tiny,
)
from geovlm import baselines  # noqa: E402
from geovlm.tasks import TASKS  # noqa: E402

# per task: how long the SFT start trains and on what, how GRPO runs. train_records > 0: the SFT and GRPO
# train on that many fresh records of the task (the embedded set holds ~130 per task); images "squares": the
# localisation probe (square_records) instead of synth's EO scenes; rope_theta: the per-seed SFT starts from a
# fresh tiny model with that M-RoPE base (tiny.build_tiny: at the embedded 10000 it hardly sees left from
# right); sft: a shipped start every seed's GRPO begins from instead (none of the per-seed SFT is trained)
WEIGHTS = Path(__file__).resolve().parents[1] / "embedded" / "weights"
RECIPES: dict[str, dict] = {
    "vqa": dict(
        sft_tasks="classification,vqa",
        sft_steps=150,
        train_records=0,
        steps=40,
        eval_every=10,
        lr=1e-4,
        group_size=8,
        prompts=8,
        temperature=0.5,
        max_new_tokens=48,
        beta=0.0,
        images="synth",
        rope_theta=0.0,
        sft=None,
    ),
    "detection": dict(
        sft_tasks="detection",
        sft_steps=400,
        train_records=1200,
        steps=150,
        eval_every=50,
        lr=2e-4,
        group_size=8,
        prompts=8,
        temperature=0.7,
        max_new_tokens=128,
        beta=0.0,
        images="synth",
        rope_theta=0.0,
        sft=str(WEIGHTS / "perception-start"),
    ),
    "counting": dict(
        sft_tasks="counting",
        sft_steps=400,
        train_records=1200,
        steps=150,
        eval_every=50,
        lr=1e-4,
        group_size=8,
        prompts=8,
        temperature=0.7,
        max_new_tokens=96,  # the start counts object by object in ~50 tokens; GRPO hit 96 in < 5% a step
        beta=0.0,
        images="synth",
        rope_theta=0.0,
        sft=str(WEIGHTS / "embedded-start"),
    ),
    "grounding": dict(
        sft_tasks="grounding",
        sft_steps=500,
        train_records=4000,
        steps=150,
        eval_every=50,
        lr=1e-4,
        group_size=8,
        prompts=8,
        temperature=0.7,
        max_new_tokens=48,
        beta=0.0,
        images="squares",
        rope_theta=50.0,
        sft=None,
    ),
}
SQUARE_SIDE, SQUARE_IMAGE = 56, 224  # pixels


def square_records(out: Path, n: int, seed: int) -> Path:
    """The localisation probe: n grounding records, each one red SQUARE_SIDE-px square on flat grey
    (SQUARE_IMAGE x SQUARE_IMAGE) at a uniformly random place, one question, the reasoning naming its 3 x 3
    cell as synth's grounding records do. Nothing but the square's place varies, so only the image can answer.
    Written once to out/records.jsonl (absolute image paths) and out/images/; returns the JSONL's path."""

    path = out / "records.jsonl"
    if path.exists():
        return path
    (out / "images").mkdir(parents=True, exist_ok=True)
    rng, rows = np.random.default_rng(seed), []
    for i in range(n):
        x, y = (int(v) for v in rng.integers(0, SQUARE_IMAGE - SQUARE_SIDE, 2))
        img = np.full((SQUARE_IMAGE, SQUARE_IMAGE, 3), 90, np.uint8)
        img[y : y + SQUARE_SIDE, x : x + SQUARE_SIDE] = (230, 40, 40)
        file = (out / "images" / f"{i:06d}.png").resolve()
        Image.fromarray(img).save(file)
        cell = synth._cell(x + SQUARE_SIDE / 2, y + SQUARE_SIDE / 2, SQUARE_IMAGE, SQUARE_IMAGE)
        rows.append(
            {
                "id": f"square_{seed}_{i:06d}",
                "task": "grounding",
                "images": [str(file)],
                "question": "Where is the red square?",
                "answer": [[x, y, x + SQUARE_SIDE, y + SQUARE_SIDE]],
                "reasoning": f"The red square lies {synth._AT[cell]}.",
                "meta": {"dataset": "squares", "type": "unique"},
            }
        )
    path.with_suffix(".tmp").write_text("".join(json.dumps(r) + "\n" for r in rows))
    path.with_suffix(".tmp").rename(path)
    return path


DEFAULT_RECIPE = RECIPES["vqa"] | {"sft_tasks": None}
RECIPE_KEYS = list(RECIPES["vqa"])


def task_split(src: Path, task: str, out: Path) -> Path:
    """The task's records of `src`, image paths made absolute."""
    rows = [json.loads(line) for line in open(src)]
    rows = [r for r in rows if r["task"] == task]
    for r in rows:
        r["images"] = [str((src.parent / p).resolve()) for p in r["images"]]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return out


def grpo_run(
    args: argparse.Namespace, sft: str, seed: int, control: bool, eval_path: Path, train_path: Path
) -> dict:
    """One GRPO run (or its shuffled-reward control): the held-out curve, sampled format rate and timings."""
    name = f"{'control' if control else 'grpo'}-seed{seed}"
    argv = [
        "--model",
        sft,
        "--data",
        str(train_path),
        "--task",
        args.task,
        "--max-steps",
        str(args.steps),
        "--eval-data",
        str(eval_path),
        "--eval-every",
        str(args.eval_every),
        "--out",
        str(Path(args.out) / name),
        "--seed",
        str(seed),
        "--lr",
        str(args.lr),
        "--group-size",
        str(args.group_size),
        "--prompts-per-step",
        str(args.prompts),
        "--max-new-tokens",
        str(args.max_new_tokens),
        "--beta",
        str(args.beta),
        "--temperature",
        str(args.temperature),
        "--log-rollouts-every",
        "0",
        "--save-every",
        "0",
    ] + (["--overwrite"] if args.overwrite else [])
    argv += args.grpo_args.split() + (["--shuffle-rewards"] if control else [])
    out = train_grpo.main(argv)
    rows = [json.loads(line) for line in open(Path(args.out) / name / "log.jsonl")]
    steps = [r for r in rows if "reward_mean" in r]
    fmt = [r.get(f"format/{args.task}", 0.0) for r in steps]
    curve = [(h["step"], h["eval"][args.task]) for h in out["eval"]]
    return {
        "curve": curve,
        "format_rate": sum(fmt) / max(1, len(fmt)),
        "final": str(Path(args.out) / name / "final"),
        "seconds": sum(r["step_s"] for r in steps),
        "reward_std": sum(r.get("reward_std", 0.0) for r in steps) / max(1, len(steps)),
    }


def mismatched(checkpoint: str, records: list, seed: int, args: argparse.Namespace) -> dict:
    """The checkpoint's held-out metrics with the images deranged among the records."""

    loaded = M.load(checkpoint)  # model.pick_device(): the device a one-process train_grpo run picks
    return E.evaluate_model(
        loaded.model,
        loaded.processor,
        loaded.frame_kind,
        baselines.permute_images(records, seed),
        args.max_new_tokens,
        loaded.device,
        batch_size=16,
    )["tasks"][args.task]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--task",
        default="vqa",
        choices=list(TASKS),
        help="the task GRPO trains and the proof measures (default: %(default)s)",
    )
    p.add_argument(
        "--seeds",
        default="0,1,2",
        help="comma list of seeds, one SFT + GRPO + control each (default: %(default)s)",
    )
    p.add_argument(
        "--sft",
        default=None,
        help="an SFT checkpoint every seed starts from (default: the start the task's recipe ships, "
        "else a short SFT per seed)",
    )
    p.add_argument(
        "--base-model",
        default=None,
        help="the model the per-seed SFT starts from (default: the embedded tiny model)",
    )
    p.add_argument(
        "--data", default=None, help="folder with train.jsonl/test.jsonl (default: the embedded set)"
    )
    p.add_argument(
        "--eval-records",
        type=int,
        default=None,
        help="fresh held-out records: added to the test split's "
        "(default 100), or all of them with --images squares (default 200)",
    )
    p.add_argument(
        "--grpo-args",
        default="",
        help="more train_grpo.py flags, joined to the flag by = since they start with a dash: "
        "--grpo-args='--freeze-vision --drop-zero-std-groups' (default: none)",
    )
    p.add_argument(
        "--no-control",
        action="store_true",
        help="skip the shuffled-reward control runs (the cheap "
        "mismatched-image and blind controls always run; default: run them)",
    )
    p.add_argument(
        "--sft-only",
        action="store_true",
        help="train each seed's SFT start (OUT/sft-seedN/final) and stop: how a start is made to be shipped "
        "(default: go on to GRPO)",
    )
    p.add_argument("--out", default=None, help="output folder (default: runs/proof-TASK)")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the runs of an earlier proof in --out (default: "
        "refuse, so that nothing is lost; an SFT start already there with the same SFT recipe is reused "
        "either way)",
    )
    g = p.add_argument_group("recipe (default: RECIPES[task], printed at start)")
    for flag, kind, what in [
        ("sft-tasks", str, "tasks of the per-seed SFT"),
        ("sft-steps", int, "steps of the per-seed SFT"),
        ("train-records", int, "fresh synthetic training records of the task; 0: the embedded set's"),
        ("steps", int, "GRPO steps"),
        ("eval-every", int, "held-out evaluation every N GRPO steps"),
        ("lr", float, "GRPO learning rate"),
        ("group-size", int, "G: completions per prompt"),
        ("prompts", int, "prompts per GRPO step"),
        ("temperature", float, "sampling temperature"),
        ("max-new-tokens", int, "completion length limit"),
        ("beta", float, "KL weight"),
        ("images", str, "synth (EO scenes) or squares (the localisation probe)"),
        (
            "rope-theta",
            float,
            "M-RoPE base of a fresh tiny model for the per-seed SFT; 0: the embedded model",
        ),
    ]:
        g.add_argument(f"--{flag}", type=kind, default=None, help=f"{what} (default: the task's recipe)")
    args = p.parse_args(argv)
    recipe = RECIPES.get(args.task, DEFAULT_RECIPE)
    for key, value in recipe.items():
        # --base-model and --sft-only ask for the per-seed SFT: a recipe's shipped start does not stand in
        if getattr(args, key) is None and not (key == "sft" and (args.base_model or args.sft_only)):
            setattr(args, key, value)
    args.sft_tasks = args.sft_tasks or args.task
    args.eval_records = (
        args.eval_records if args.eval_records is not None else (200 if args.images == "squares" else 100)
    )
    if args.images not in ("synth", "squares"):
        raise SystemExit(f"grpo_proof.py: --images {args.images}: expected synth or squares")
    if args.images == "squares" and args.task != "grounding":
        raise SystemExit(
            "grpo_proof.py: --images squares holds grounding records only: use it with --task grounding"
        )
    if args.images == "squares" and (args.train_records < 1 or args.eval_records < 1):
        raise SystemExit(
            "grpo_proof.py: --images squares has no embedded records: give --train-records and "
            "--eval-records of at least 1"
        )
    if args.eval_records < 0 or args.train_records < 0 or args.rope_theta < 0:
        raise SystemExit(
            "grpo_proof.py: --eval-records, --train-records and --rope-theta must not be negative"
        )
    if args.sft_only and args.sft:
        raise SystemExit("grpo_proof.py: --sft-only trains the SFT starts; with --sft there is none to train")
    if args.base_model:
        args.rope_theta = 0.0  # the SFT starts from --base-model as it is (and recipe.json says so)
    args.out = args.out or f"runs/proof-{args.task}"
    earlier = [d.name for d in Path(args.out).glob("*-seed*") if d.name.split("-")[0] in ("grpo", "control")]
    if earlier and not args.overwrite:
        raise SystemExit(
            f"grpo_proof.py: {args.out} holds an earlier proof's runs ({', '.join(sorted(earlier))}); pick "
            "another --out or add --overwrite"
        )
    return args


SFT_KEYS = ("sft_tasks", "sft_steps", "train_records", "images", "rope_theta", "base_model")


def sft_start(args: argparse.Namespace, seed: int, sft_data: Path, out: Path) -> str:
    """This seed's SFT start: trained once with the recipe's SFT_KEYS (kept in sft-seedN/recipe.json) and
    reused by a later run with the same ones; a different recipe there is refused (it would be misread)."""
    folder, recipe = out / f"sft-seed{seed}", {k: getattr(args, k) for k in SFT_KEYS}
    if (folder / "final" / "config.json").exists():
        kept = json.loads((folder / "recipe.json").read_text()) if (folder / "recipe.json").exists() else {}
        if kept != recipe:
            diff = {k: (kept.get(k), recipe[k]) for k in recipe if kept.get(k) != recipe[k]}
            raise SystemExit(
                f"grpo_proof.py: {folder} was trained with another SFT recipe (there, here: {diff}); "
                "pick another --out"
            )
        return str(folder / "final")  # this seed's SFT is done already: reuse it
    base_model = args.base_model or (tiny_base(out, args.rope_theta) if args.rope_theta else None)
    base = ["--model", base_model, "--lr", "2e-3"] if base_model else []
    train_sft.main(
        [
            *base,
            "--data",
            str(sft_data),
            "--tasks",
            args.sft_tasks,
            "--max-steps",
            str(args.sft_steps),
            "--seed",
            str(seed),
            "--out",
            str(folder),
            "--eval-every",
            "1000",
            "--save-every",
            "0",
        ]
        + (["--overwrite"] if args.overwrite else [])
    )
    (folder / "recipe.json").write_text(json.dumps(recipe) + "\n")
    return str(folder / "final")


def tiny_base(out: Path, rope_theta: float) -> str:
    """The embedded tiny model's twin (same sizes, seed and tokenizer) with M-RoPE base `rope_theta`, built
    once."""

    corpus = defaults.tokenizer_corpus([defaults.data_dir() / "train.jsonl"])
    build = lambda tmp: tiny.build_tiny(tmp, corpus, seed=0, rope_theta=rope_theta)  # noqa: E731
    # whole or absent
    return str(defaults._build_once(out / f"base-rope-theta-{rope_theta:g}", "config.json", build))


def synth_split(args: argparse.Namespace, data_dir: Path, out: Path) -> tuple[Path, Path, Path]:
    """(held-out, GRPO training, SFT data) JSONL paths from synth's records: held out = the data's test
    split's task records + args.eval_records fresh ones; training = the data's or args.train_records fresh
    ones."""
    extra = out / f"extra-eval-{args.eval_records}"  # keyed by size: a rerun with another size is not misread
    if not (extra / "train.jsonl").exists():
        synth.make_dataset(extra, n=args.eval_records, seed=1000, tasks=[args.task], test_frac=0.5)
    eval_path = out / "eval.jsonl"
    parts = [
        task_split(src, args.task, out / f"eval-part{i}.jsonl").read_text()
        for i, src in enumerate([data_dir / "test.jsonl", extra / "train.jsonl", extra / "test.jsonl"])
    ]
    eval_path.write_text("".join(parts))
    if args.train_records:
        fresh = out / f"train-{args.train_records}"
        if not (fresh / "train.jsonl").exists():
            synth.make_dataset(fresh, n=args.train_records, seed=2000, tasks=[args.task], test_frac=0.0)
        train_path = task_split(fresh / "train.jsonl", args.task, out / "train.jsonl")
        sft_data = train_path
    else:
        train_path = task_split(data_dir / "train.jsonl", args.task, out / "train.jsonl")
        sft_data = data_dir / "train.jsonl"
    return eval_path, train_path, sft_data


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    print("recipe:", {k: getattr(args, k) for k in RECIPE_KEYS}, flush=True)
    data_dir = Path(args.data) if args.data else defaults.data_dir()
    out = Path(args.out)
    # ---- data: held out = the embedded test split's task records + fresh ones; train = embedded or fresh
    if args.images == "squares":  # the probe: fresh records only, held out and training of different seeds
        eval_path = square_records(out / f"eval-squares-{args.eval_records}", args.eval_records, seed=1000)
        train_path = sft_data = square_records(
            out / f"train-squares-{args.train_records}", args.train_records, seed=2000
        )
    else:
        eval_path, train_path, sft_data = synth_split(args, data_dir, out)
    held_out, train = load_records(eval_path), load_records(train_path)
    metric = TASKS[args.task].metric
    blind = baselines.best_blind(train, held_out)["tasks"][args.task]
    print(f"blind baseline ({blind['baseline']}): {metric} {blind[metric]:.3f}", flush=True)

    results: dict = {
        "task": args.task,
        "metric": metric,
        "blind": blind,
        "seeds": {},
        "recipe": {k: getattr(args, k) for k in RECIPE_KEYS},
    }
    for seed in [int(s) for s in args.seeds.split(",")]:
        t0 = time.time()
        sft = args.sft or sft_start(args, seed, sft_data, out)
        if args.sft_only:
            print(f"seed {seed}: SFT start {sft}", flush=True)
            continue
        run = {"grpo": grpo_run(args, sft, seed, False, eval_path, train_path)}
        run["mismatched"] = mismatched(run["grpo"]["final"], held_out, seed, args)
        if not args.no_control:
            run["control"] = grpo_run(args, sft, seed, True, eval_path, train_path)
        run["minutes"] = (time.time() - t0) / 60
        results["seeds"][seed] = run
        (out / "proof.json").write_text(json.dumps(results, indent=2))
    if not args.sft_only:
        print(table(results))
    return results


def table(results: dict) -> str:
    """The proof's markdown table: per seed, start, final, gain and the three controls, in the task's
    metric."""
    task, metric, blind = results["task"], results["metric"], results["blind"][results["metric"]]
    lines = [
        "| seed | SFT start | GRPO final | gain | shuffled-reward control | final, images permuted | blind | "
        "accuracy reward start → final | sampled format | minutes |",
        "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    for seed, run in results["seeds"].items():
        (_, start), (_, final) = run["grpo"]["curve"][0], run["grpo"]["curve"][-1]
        control = run["control"]["curve"][-1][1][metric] if "control" in run else float("nan")
        swapped = run["mismatched"][metric] if "mismatched" in run else float("nan")
        lines.append(
            f"| {seed} | {start[metric]:.3f} | {final[metric]:.3f} | "
            f"{100 * (final[metric] - start[metric]):+.1f} pt "
            f"| {control:.3f} | {swapped:.3f} | {blind:.3f} | {start['accuracy_reward']:.3f} → "
            f"{final['accuracy_reward']:.3f} | {run['grpo']['format_rate']:.2f} | {run['minutes']:.1f} |"
        )
    parts = sorted(k for k in results["blind"] if k.startswith("acc_"))  # vqa: accuracy per question type
    if parts:
        lines += [
            "",
            "| seed | "
            + " | ".join(f"{k[4:]}: start → final (images permuted) [blind]" for k in parts)
            + " |",
            "|---|" + "---|" * len(parts),
        ]
        for seed, run in results["seeds"].items():
            start, final = run["grpo"]["curve"][0][1], run["grpo"]["curve"][-1][1]
            swapped = run.get("mismatched", {})
            lines.append(
                f"| {seed} | "
                + " | ".join(
                    f"{start.get(k, 0):.3f} → {final.get(k, 0):.3f} ({swapped.get(k, float('nan')):.3f}) "
                    f"[{results['blind'].get(k, 0):.3f}]"
                    for k in parts
                )
                + " |"
            )
    return f"{task}, {metric} on {results['blind']['n']} held-out records\n\n" + "\n".join(lines)


if __name__ == "__main__":
    main()
