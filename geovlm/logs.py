"""A run's logs: log.jsonl (one JSON object a step, drawn by plot.py), cut back on resume; the commit that
wrote a run; and the NaN guard."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import torch


class JsonlLog:
    """Append-only JSONL log (one object per step), written by rank 0 only (plot.py draws it); each row also
    goes to TensorBoard when a plot.TensorBoard writer is attached (--tensorboard)."""

    def __init__(self, path: str | os.PathLike, enabled: bool = True, tensorboard=None):
        self.path, self.enabled, self.tensorboard = Path(path), enabled, tensorboard
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, row: dict) -> None:
        if self.enabled:
            with open(self.path, "a") as f:
                f.write(json.dumps(row, default=float) + "\n")
            if self.tensorboard is not None:
                self.tensorboard.write(row)


def commit_of(folder: Path) -> str:
    """HEAD of the repository holding `folder`, with "+changes" when its tracked files differ from HEAD."""
    git = ["git", "-C", str(folder)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    if head.returncode:
        return "unknown (not a git checkout)"
    dirty = subprocess.run([*git, "diff", "--quiet", "HEAD"]).returncode
    return head.stdout.strip() + ("+changes" if dirty else "")


def truncate_log(path: str | os.PathLike, step: int, key: str = "step") -> None:
    """Drop the rows after `step` (written by the run being resumed after its last checkpoint); `key` names
    the rows' step field (a staged run counts "global_step")."""
    path = Path(path)
    if path.exists():
        rows = [
            line
            for line in path.read_text().splitlines()
            if line.strip() and json.loads(line).get(key, 0) <= step
        ]
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text("".join(r + "\n" for r in rows))
        os.replace(tmp, path)  # a Ctrl-C while writing leaves the old log whole, never half of it


def check_finite(step: int, **values) -> None:
    """Stop the step with a clear message naming which quantity was NaN/inf."""
    for name, v in values.items():
        t = torch.as_tensor(v)
        if not torch.isfinite(t).all():
            raise FloatingPointError(
                f"step {step}: {name} is not finite ({t.flatten()[:4].tolist()}...); "
                "the step was not applied and the last checkpoint on disk is intact"
            )
