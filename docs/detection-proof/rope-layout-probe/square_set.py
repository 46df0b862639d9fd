"""Experiment, not part of the library: write n held-out records of a curriculum stage as a JSONL set
(rng [SEED, 3000, i], never a training stream).

    python docs/detection-proof/rope-layout-probe/square_set.py square 200 777 runs/square-eval
    python docs/detection-proof/rope-layout-probe/ropewrap_msq.py \\
        docs/detection-proof/rope-layout-probe/square_set.py msq 200 778 runs/msq-eval detection
"""

import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[3]
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]

import pretrain_tiny  # noqa: E402


def main(stage: str, n: int, seed: int, out: Path, task: str = "grounding") -> None:
    if (out / "records.jsonl").exists():
        raise SystemExit(f"square_set.py: {out} holds a set already; give a new folder")
    (out / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        s = pretrain_tiny.BUILDERS[stage](np.random.default_rng([seed, 3000, i]), task)
        r = pretrain_tiny.to_record(s, task, f"{stage}-{i:05d}", out / "images")
        row = {"id": r.id, "task": task, "images": r.images, "question": s.question, "answer": s.answer}
        rows.append(row | {"reasoning": s.reasoning, "meta": s.meta})
    (out / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(len(rows), "records in", out)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4]), *sys.argv[5:])
