"""Experiment, not part of the library: for eval.py's predictions on the several-squares records, how many
records got the true number of boxes and how many of the squares' cells the reasoning named right (the k-th
"one in/at/on the <cell>" phrase against the k-th of the record's reasoning; the answers run top to bottom).

    python docs/detection-proof/rope-layout-probe/msq_cells.py runs/msq-eval/records.jsonl \\
        runs/msq/inter-s1-msq-more-eval/predictions.jsonl [more predictions …]
"""

import gzip
import json
import re
import sys

CELL = re.compile(r"one (?:in|at|on) the ([a-z ]+?)(?=[,;.]|$)")


def main(records: str, predictions: list[str]) -> None:
    truth = {r["id"]: r for r in map(json.loads, open(records))}
    for path in predictions:
        rows = [json.loads(line) for line in (gzip.open if path.endswith(".gz") else open)(path, "rt")]
        count = named = cells = 0
        for row in rows:
            want = truth[row["id"]]
            count += len(row["parsed"] or []) == len(want["answer"])
            expected = CELL.findall(want["reasoning"])
            named += sum(g == w for g, w in zip(CELL.findall(row["completion"]), expected))
            cells += len(expected)
        print(f"{path}: count right {count}/{len(rows)}, cells right {named} / {cells} ({named / cells:.2f})")


if __name__ == "__main__":
    if len(sys.argv) < 3:
        raise SystemExit("usage: msq_cells.py RECORDS PREDICTIONS [PREDICTIONS …]")
    main(sys.argv[1], sys.argv[2:])
