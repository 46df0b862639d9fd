"""Where do a detector's boxes miss? Centre and size errors per axis in eval.py's predictions, and the F1@0.5
each error costs (docs/results.md, "where the boxes miss").

    python eval.py --model runs/grpo/final --data runs/proof/eval.jsonl --out runs/ev
    python scripts/box_errors.py runs/ev/predictions.jsonl                  # one run
    python scripts/box_errors.py start/predictions.jsonl after/predictions.jsonl   # side by side

Each record's boxes are paired one-to-one with its true boxes (most total IoU, as the detection reward pairs
them). Over the pairs that overlap: the centre's offset in x and in y in units of the true box's width and
height (averaged), and the predicted width and height as ratios of the true ones (their median). Then F1@0.5
as eval.py counts it, and again with one error taken out of the predicted box of every overlapping pair: its x
centre moved onto the true one, its y centre, or its width and height set to the true ones. The error whose
removal gains the most F1@0.5 is the one that limits localisation; a ratio above 1 that grows under training
says boxes are being enlarged to overlap more (a hedge an IoU reward pays for).
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from geovlm import bootstrap, metrics, parsing  # noqa: E402
from geovlm.flags import ArgumentParser  # noqa: E402

FIXES = ("x centre", "y centre", "size")


def fixed(pred: list[float], true: list[float], what: str) -> list[float]:
    """pred with one error taken out: its x or y centre on the true box's, or the true width and height."""
    (x1, y1, x2, y2), (tx1, ty1, tx2, ty2) = pred, true
    if what == "x centre":
        shift = (tx1 + tx2 - x1 - x2) / 2
        return [x1 + shift, y1, x2 + shift, y2]
    if what == "y centre":
        shift = (ty1 + ty2 - y1 - y2) / 2
        return [x1, y1 + shift, x2, y2 + shift]
    cx, cy, half_w, half_h = (x1 + x2) / 2, (y1 + y2) / 2, (tx2 - tx1) / 2, (ty2 - ty1) / 2
    return [cx - half_w, cy - half_h, cx + half_w, cy + half_h]


def box_errors(rows: list[dict]) -> dict[str, float]:
    """Errors of the paired boxes and F1@0.5 as measured and with each of FIXES, over prediction rows."""
    n_records = n_pred = n_true = 0
    hits = dict.fromkeys(("measured", *FIXES), 0)
    dx, dy, w_ratio, h_ratio = [], [], [], []
    for row in rows:
        true = parsing.answer_boxes(row.get("answer"))
        pred = parsing.answer_boxes(row.get("parsed") or [])
        if not true:
            continue
        n_records, n_pred, n_true = n_records + 1, n_pred + len(pred), n_true + len(true)
        hits["measured"] += metrics.count_matches(pred, true, 0.5)
        pairs = [(p, t, iou) for p, t, iou in parsing.hungarian_match(pred, true) if iou > 0]
        for what in FIXES:
            moved = list(pred)
            for p, t, _ in pairs:
                moved[p] = fixed(pred[p], true[t], what)
            hits[what] += metrics.count_matches(moved, true, 0.5)
        for p, t, _ in pairs:
            (x1, y1, x2, y2), (tx1, ty1, tx2, ty2) = pred[p], true[t]
            dx.append(abs(x1 + x2 - tx1 - tx2) / 2 / (tx2 - tx1))
            dy.append(abs(y1 + y2 - ty1 - ty2) / 2 / (ty2 - ty1))
            w_ratio.append((x2 - x1) / (tx2 - tx1))
            h_ratio.append((y2 - y1) / (ty2 - ty1))
    f1 = {k: 2 * v / max(1, n_pred + n_true) for k, v in hits.items()}
    return {
        "records": n_records,
        "pred": n_pred,
        "true": n_true,
        "paired": len(dx),
        "x_offset": statistics.fmean(dx) if dx else 0.0,
        "y_offset": statistics.fmean(dy) if dy else 0.0,
        "w_ratio": statistics.median(w_ratio) if w_ratio else 0.0,
        "h_ratio": statistics.median(h_ratio) if h_ratio else 0.0,
        **{f"f1@0.5 {k}": v for k, v in f1.items()},
    }


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    p = ArgumentParser(description=__doc__)
    p.add_argument("predictions", type=Path, nargs="+", help="eval.py's predictions.jsonl (one or more runs)")
    p.add_argument("--task", default="detection", help="the box task to read (default: detection)")
    args = p.parse_args(argv)
    out = {}
    for path in args.predictions:
        if not path.is_file():
            p.error(f"{path}: no such file (eval.py --out DIR writes DIR/predictions.jsonl)")
        try:
            rows = bootstrap.read_predictions(path).get(args.task, [])
        except UnicodeDecodeError as e:
            p.error(f"{path}: not text ({e.reason}); give eval.py's predictions.jsonl")
        except ValueError as e:  # names the file and line
            p.error(str(e))
        if not rows:
            p.error(f"{path}: no {args.task} predictions")
        out[str(path)] = box_errors(rows)
        if not out[str(path)]["records"]:
            p.error(f"{path}: no {args.task} record has boxes in its answer; --task names a box task")
    print(
        "| predictions | paired / true | x offset | y offset | width ratio | height ratio | F1@0.5 | "
        + " | ".join(f"F1@0.5, {k} fixed" for k in FIXES)
        + " |\n|---|---:|---:|---:|---:|---:|---:|"
        + "---:|" * len(FIXES)
    )
    for path, s in out.items():
        print(
            f"| {path} | {s['paired']} / {s['true']} | {s['x_offset']:.3f} | {s['y_offset']:.3f} | "
            f"{s['w_ratio']:.3f} | {s['h_ratio']:.3f} | {s['f1@0.5 measured']:.3f} | "
            + " | ".join(f"{s[f'f1@0.5 {k}']:.3f}" for k in FIXES)
            + " |"
        )
    return out


if __name__ == "__main__":
    main()
