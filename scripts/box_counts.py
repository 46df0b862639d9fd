"""Does the detection reward favour fewer boxes? The sampled completions of a GRPO run, grouped by how many
boxes they give against the record's true count (docs/results.md, "what lowers held-out detection").

    python train_grpo.py --task detection --log-rollouts-every 1 --out runs/d   # every completion logged
    python scripts/box_counts.py runs/d/rollouts.jsonl
    python scripts/box_counts.py runs/d/rollouts.jsonl --steps 1-12      # only the first twelve steps

Per difference #predicted − #true (clipped to ±2): the number of completions, their mean accuracy reward,
their mean F1@0.5 (one-to-one matching, as eval.py) and their mean advantage. A reward under which the policy
should drop boxes pays the "-1" row more than the "+0" row.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from geovlm import metrics, parsing  # noqa: E402
from geovlm.flags import ArgumentParser  # noqa: E402

CLIP = 2  # differences beyond ±CLIP share a row


def f1_at_half(pred: list[list[float]], true: list[list[float]]) -> float:
    """2·TP / (#pred + #true), TP = eval.py's one-to-one matches at IoU ≥ 0.5; 1 when both are empty."""
    if not pred and not true:
        return 1.0
    return 2 * metrics.count_matches(pred, true, 0.5) / (len(pred) + len(true))


def by_count_difference(rows: list[dict]) -> dict[int, dict[str, float]]:
    """{#pred − #true (clipped): {n, reward, f1, advantage}} over detection rows of rollouts.jsonl."""
    groups: dict[int, list[tuple[float, float, float]]] = defaultdict(list)
    for row in rows:
        if row.get("task") != "detection":
            continue
        true = parsing.answer_boxes(row["answer"])
        pred = parsing.answer_boxes(row.get("parsed") or [])
        diff = max(-CLIP, min(CLIP, len(pred) - len(true)))
        groups[diff].append((row["rewards"]["accuracy"], f1_at_half(pred, true), row["advantage"]))
    return {
        d: {
            "n": len(g),
            "reward": sum(r for r, _, _ in g) / len(g),
            "f1": sum(f for _, f, _ in g) / len(g),
            "advantage": sum(a for _, _, a in g) / len(g),
        }
        for d, g in sorted(groups.items())
    }


FIELDS = ("step", "task", "answer", "rewards", "advantage")  # what each row of rollouts.jsonl must hold


def read_rollouts(path: Path) -> list[dict]:
    """The rows of rollouts.jsonl(.gz); ValueError naming the line and field of the first bad one."""
    hint = "is it a GRPO run's rollouts.jsonl?"
    opened = gzip.open(path, "rt") if path.suffix == ".gz" else path.open()
    rows = []
    with opened as lines:
        for i, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{i}: not JSON ({e.msg}); {hint}") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{i}: not a JSON object; {hint}")
            missing = [f for f in FIELDS if f not in row]
            if not missing and not (isinstance(row["rewards"], dict) and "accuracy" in row["rewards"]):
                missing = ["rewards.accuracy"]
            if missing:
                raise ValueError(f"{path}:{i}: no {missing[0]!r}; {hint}")
            rows.append(row)
    return rows


def step_range(text: str) -> tuple[int, int]:
    first, _, last = text.partition("-")
    try:
        return int(first), int(last or first)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give N or N-M, e.g. 1-12") from None


def main(argv: list[str] | None = None) -> dict[int, dict[str, float]]:
    p = ArgumentParser(description=__doc__)
    p.add_argument("rollouts", type=Path, help="a GRPO run's rollouts.jsonl (or rollouts.jsonl.gz)")
    p.add_argument("--steps", type=step_range, default=None, help="N or N-M: only these GRPO steps")
    args = p.parse_args(argv)
    if not args.rollouts.is_file():
        p.error(f"{args.rollouts}: no such file (train_grpo.py writes OUT/rollouts.jsonl)")
    try:
        rows = read_rollouts(args.rollouts)
    except ValueError as e:
        p.error(str(e))
    except OSError as e:  # e.g. a .gz that is not gzip
        p.error(f"{args.rollouts}: cannot be read ({e}); is it a GRPO run's rollouts.jsonl?")
    if args.steps:
        rows = [r for r in rows if args.steps[0] <= r["step"] <= args.steps[1]]
    table = by_count_difference(rows)
    if not table:
        p.error(f"{args.rollouts}: no detection completions (in those steps)")
    print("| #pred − #true | n | accuracy reward | F1@0.5 | advantage |\n|---:|---:|---:|---:|---:|")
    for d, s in table.items():
        label = f"{d:+d}" if abs(d) < CLIP else f"{d:+d} or {'more' if d > 0 else 'fewer'}"
        print(f"| {label} | {s['n']} | {s['reward']:.3f} | {s['f1']:.3f} | {s['advantage']:+.3f} |")
    return table


if __name__ == "__main__":
    main()
