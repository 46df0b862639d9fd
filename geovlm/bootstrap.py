"""Confidence intervals of an evaluation's numbers, by resampling its records (eval.py --compare).

    rows = read_predictions("results/grpo/predictions.jsonl")           # eval's per-record lines
    stats = task_stats(rows["caption"])
    stats["rouge_l"].value, stats["rouge_l"].low, stats["rouge_l"].high  # 95% percentile bootstrap
    task_stats(rows["caption"], ["caption_levenshtein"])                 # + a reward, rescored where missing

A metric is recomputed on each resample (metrics.task_metrics), so corpus-level numbers such as detection's
F1 get honest intervals, not only per-record means. Records are sorted by id and every task draws the same
resamples (a fixed seed), so two runs over the same records are resampled in pairs: `paired_delta` gives the
interval of their difference, much narrower than the two intervals side by side.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import rewards
from geovlm import metrics
from geovlm.frames import frame_from_json

RESAMPLES = 200  # enough for a 95% interval to two decimals; each resample rescores the task once
LEVEL = 0.95
NOT_REWARDS = ("accuracy", "total")  # the per-record "scores" keys that are sums of the table's rewards
FORMAT = "well_formed"  # the format reward's mean is eval's well_formed rate: one name for both


@dataclass
class Stat:
    value: float
    low: float
    high: float
    replicates: np.ndarray  # the statistic on each resample (the same draws for every run: paired)


def read_predictions(path: str | Path) -> dict[str, list[dict]]:
    """eval's predictions.jsonl, per task, each task's lines sorted by id; {} when the file is missing.
    ValueError naming the file and line of the first line that is not a prediction."""
    by_task: dict[str, list[dict]] = defaultdict(list)
    try:
        with open(path, encoding="utf-8") as f:
            for i, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except ValueError as e:
                    raise ValueError(f"{path}:{i}: not JSON ({e})") from None
                if not isinstance(row, dict) or "task" not in row:
                    raise ValueError(f"{path}:{i}: no 'task' field; is it eval.py's predictions.jsonl?")
                by_task[row["task"]].append(row)
    except FileNotFoundError:
        return {}
    return {t: sorted(rows, key=lambda r: str(r.get("id", ""))) for t, rows in by_task.items()}


def reward_values(rows: list[dict], name: str) -> list[float] | None:
    """One reward per line: the line's own score, else (a run whose table did not name it) rescored from the
    completion with that reward of rewards.py; None when rewards.py holds no reward of that name."""
    scores = [r.get("scores") or {} for r in rows]
    if all(name in s for s in scores):
        return [float(s[name]) for s in scores]
    try:
        fn = rewards.resolve(name)
    except ValueError:
        return None
    return [
        float(s[name])
        if name in s
        else rewards.call_reward(
            fn, str(r.get("completion", "")), r.get("answer"), frame_from_json(r.get("frame"))
        )
        for r, s in zip(rows, scores)
    ]


def _numbers(task: str, rows: list[dict], idx: np.ndarray, named: dict[str, np.ndarray]) -> dict[str, float]:
    """Every metric eval reports for the lines `idx` (extras off), and the mean of each named reward there."""
    picked = [rows[i] for i in idx]
    samples = [metrics._as_sample(r) for r in picked]
    scores = [r.get("scores") or {} for r in picked]
    out = metrics.task_metrics(task, samples, [r.get("parsed") for r in picked], scores)
    out.pop("n", None)
    return out | {name: float(values[idx].mean()) for name, values in named.items()}


def task_stats(
    rows: list[dict], named: Sequence[str] = (), resamples: int = RESAMPLES, seed: int = 0
) -> dict[str, Stat]:
    """Each metric of the task's lines and the mean of each `named` reward (FORMAT for the format reward),
    with its LEVEL bootstrap interval (resampling lines with replacement)."""
    if not rows:
        return {}
    task = rows[0]["task"]
    values = {name: reward_values(rows, "format" if name == FORMAT else name) for name in named}
    per_line = {name: np.asarray(v, dtype=float) for name, v in values.items() if v is not None}
    point = _numbers(task, rows, np.arange(len(rows)), per_line)
    rng = np.random.default_rng(seed)
    draws = [_numbers(task, rows, rng.integers(0, len(rows), len(rows)), per_line) for _ in range(resamples)]
    tail = (1 - LEVEL) / 2 * 100
    out = {}
    for key, value in point.items():
        reps = np.array([d.get(key, np.nan) for d in draws], dtype=float)
        finite = reps[np.isfinite(reps)]
        low, high = np.percentile(finite, [tail, 100 - tail]) if finite.size else (np.nan, np.nan)
        out[key] = Stat(float(value), float(low), float(high), reps)
    return out


def paired_delta(first: Stat, last: Stat) -> tuple[float, float] | None:
    """The LEVEL interval of last - first when both were resampled in pairs (same records, same draws)."""
    if first.replicates.shape != last.replicates.shape:
        return None
    diff = last.replicates - first.replicates
    diff = diff[np.isfinite(diff)]
    if not diff.size:
        return None
    tail = (1 - LEVEL) / 2 * 100
    low, high = np.percentile(diff, [tail, 100 - tail])
    return float(low), float(high)


def same_records(a: list[dict], b: list[dict]) -> bool:
    """True when two runs scored the same records (by id, in the sorted order task_stats resamples)."""
    return len(a) == len(b) and all(str(x.get("id")) == str(y.get("id")) for x, y in zip(a, b))
