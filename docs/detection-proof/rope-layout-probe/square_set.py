"""Write n held-out records of a curriculum stage (grounding) as a JSONL set: python square_set.py STAGE N SEED OUT"""
import json, sys
from pathlib import Path
sys.path.insert(0, "/work/exp2"); sys.path.insert(0, "/work/exp2/scripts")
import numpy as np
import pretrain_tiny as P
stage, n, seed, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])
task = sys.argv[5] if len(sys.argv) > 5 else "grounding"
(out / "images").mkdir(parents=True, exist_ok=True)
rows = []
for i in range(n):
    s = P.BUILDERS[stage](np.random.default_rng([seed, 3000, i]), task)
    r = P.to_record(s, task, f"{stage}-{i:05d}", out / "images")
    rows.append({"id": r.id, "task": task, "images": r.images, "question": s.question, "answer": s.answer,
                 "reasoning": s.reasoning, "meta": s.meta})
(out / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
print(len(rows), "records in", out)
