"""What a score is worth: the blind (question-only) baseline and the mismatched-image control.

A learning result only shows perception if the image explains it. Two controls, both scored by eval.py's
metrics:

    blind = best_blind(train, test)                # eval's metrics of answers from the question alone
    swapped = permute_images(test, seed=0)         # each record gets another record's image(s)
    eval.evaluate_model(net, ..., swapped, ...)    # a policy that reads the image loses its gain here

`blind_samples` answers each held-out record with the most common training answer to the same question
(normalised text), or, for box answers, with the mean training box in image-relative coordinates; a
question never seen in training falls back to the task's most common answer / mean box. `best_blind`
scores that and the per-task constant and keeps the better per task: the strongest baseline that never
looks (for multilabel's F1, mind that answering every label is stronger still: F1's chance level).
`permute_images` is a derangement within each task (and image count): the question and the answer stay, an
answer's boxes (and `meta.region`) are moved to the same relative place on the new image, so a model that
ignores the image scores what it scored before, and one that reads it does not.

    python eval.py --blind data/train.jsonl --data data/test.jsonl --out results/blind
    python -m geovlm.baselines --train data/train.jsonl --data data/test.jsonl     # the same, without eval
    python eval.py --model runs/grpo/final --data data/test.jsonl --permute-images 0 --out results/swapped
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from data import Record, RecordError, load_records
from geovlm.frames import Frame
from geovlm.metrics import Sample, markdown_table, score_samples
from geovlm.parsing import answer_boxes, normalize_text
from geovlm.tasks import TASKS


def _is_boxes(task: str, answer: Any) -> bool:
    """A list of boxes (grounded_caption's dict and change_detection's label answers are answered as
    given)."""
    return TASKS[task].boxes and isinstance(answer, list)


def _relative(box: Sequence[float], size: tuple[int, int]) -> list[float]:
    w, h = size
    return [box[0] / w, box[1] / h, box[2] / w, box[3] / h]


def _absolute(box: Sequence[float], size: tuple[int, int]) -> list[float]:
    w, h = size
    return [round(box[0] * w, 1), round(box[1] * h, 1), round(box[2] * w, 1), round(box[3] * h, 1)]


def _prior(rows: list[Record]) -> Any:
    """The answer a blind model gives to these records' question: the mode, or the mean relative box."""
    if _is_boxes(rows[0].task, rows[0].answer):
        boxes = [_relative(b, r.image_sizes[0]) for r in rows for b in answer_boxes(r.answer)]
        return ("box", np.mean(boxes, axis=0).tolist()) if boxes else ("answer", [])
    mode = Counter(json.dumps(r.answer, sort_keys=True) for r in rows).most_common(1)[0][0]
    return ("answer", json.loads(mode))


def _answer_for(prior: tuple[str, Any], rec: Record) -> Any:
    kind, value = prior
    return [_absolute(value, rec.image_sizes[0])] if kind == "box" else value


def blind_samples(
    train: Sequence[Record], records: Sequence[Record], by_question: bool = True
) -> list[Sample]:
    """Each record answered from its question alone (see the module docstring), as eval Samples whose boxes
    are written in original pixels. by_question=False: the task's constant answer for every record."""
    by_task: dict[str, list[Record]] = defaultdict(list)
    by_q: dict[tuple[str, str], list[Record]] = defaultdict(list)
    for r in train:
        by_task[r.task].append(r)
        by_q[(r.task, normalize_text(r.question))].append(r)
    priors: dict[Any, tuple[str, Any]] = {}
    out = []
    for rec in records:
        key = (rec.task, normalize_text(rec.question))
        rows = by_q.get(key) if by_question else None
        rows = rows or by_task.get(rec.task)
        if rows is None:
            raise ValueError(
                f"{rec.source}: no training record of task {rec.task!r} to take a blind answer from"
            )
        pkey = key if rows is by_q.get(key) else rec.task
        if pkey not in priors:
            priors[pkey] = _prior(rows)
        size = tuple(rec.image_sizes[0])
        frame = Frame("pixels", size, size)  # written in original pixels: nothing is resized
        text = TASKS[rec.task].target(_answer_for(priors[pkey], rec), frame)
        out.append(
            Sample(
                task=rec.task,
                answer=rec.answer,
                completion=f"<think></think><answer>{text}</answer>",
                frame=frame,
                meta=dict(rec.meta),
                id=rec.id,
                images=list(rec.images),
            )
        )
    return out


def best_blind(train: Sequence[Record], records: Sequence[Record], out_dir: str | Path | None = None) -> dict:
    """eval's metrics of the strongest blind answer per task: per-question or per-task, whichever scores
    higher on the task's headline metric (named in each task's "baseline"). Writes metrics.json and table.md
    to out_dir."""
    best: dict[str, dict] = {}
    for name, by_question in (("per-question", True), ("per-task", False)):
        scored = score_samples(blind_samples(train, records, by_question), caption_extras=False, quiet=True)
        for task, m in scored["tasks"].items():
            head = TASKS[task].metric
            if task not in best or m.get(head, 0.0) > best[task].get(head, 0.0):
                best[task] = {**m, "baseline": name}
    metrics = {"n": len(records), "tasks": best, "datasets": {}, "splits": {}, "unavailable": {}}
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        (out / "table.md").write_text(blind_table(metrics) + "\n")
    return metrics


def blind_table(metrics: dict) -> str:
    """eval's markdown table of `best_blind`'s metrics (each task's "baseline" name left out of the
    numbers)."""
    numbers = {t: {k: v for k, v in m.items() if k != "baseline"} for t, m in metrics["tasks"].items()}
    return markdown_table({**metrics, "tasks": numbers})


def _scale_boxes(boxes: Any, old: tuple[int, int], new: tuple[int, int]) -> Any:
    return [_absolute(_relative(b, old), new) + list(b[4:]) for b in boxes]


def _moved(rec: Record, donor: Record) -> Record:
    """rec with donor's images; its boxes (answer, meta.region) at the same relative place on them."""
    old, new = rec.image_sizes[0], donor.image_sizes[0]
    answer, meta = rec.answer, dict(rec.meta)
    if _is_boxes(rec.task, answer):
        answer = _scale_boxes(answer, old, new)
    elif isinstance(answer, dict) and "boxes" in answer:
        answer = {**answer, "boxes": _scale_boxes(answer["boxes"], old, new)}
    if isinstance(meta.get("region"), list) and len(meta["region"]) >= 4:
        meta["region"] = _scale_boxes([meta["region"]], old, new)[0]
    return dataclasses.replace(
        rec, images=list(donor.images), image_sizes=list(donor.image_sizes), answer=answer, meta=meta
    )


def permute_images(records: Sequence[Record], seed: int = 0) -> list[Record]:
    """The records with their images deranged within each (task, image count): no record keeps its own image
    (groups of one keep theirs). Order, questions and answers stay; boxes move with the image size."""
    rng = np.random.default_rng(seed)
    groups: dict[tuple[str, int], list[int]] = defaultdict(list)
    for i, r in enumerate(records):
        groups[(r.task, len(r.images))].append(i)
    out = list(records)
    for idx in groups.values():
        if len(idx) < 2:
            continue
        shift = rng.permutation(len(idx))  # a random cycle over the group: i -> next in the cycle
        for a, b in zip(shift, np.roll(shift, -1)):
            out[idx[a]] = _moved(records[idx[a]], records[idx[b]])
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """The blind baseline of a held-out file, as `eval.py --blind` scores it: eval's table, metrics.json."""
    p = argparse.ArgumentParser(
        prog="python -m geovlm.baselines",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--train", required=True, help="records whose answers the blind baseline learns (JSONL; required)"
    )
    p.add_argument("--data", required=True, help="held-out records it answers, scored (JSONL; required)")
    p.add_argument("--out", default=None, help="write metrics.json and table.md here (default: print only)")
    args = p.parse_args(argv)
    try:
        train, held_out = load_records(args.train), load_records(args.data)
        metrics = best_blind(train, held_out, args.out)
    except (RecordError, ValueError) as e:  # a bad line, or a task of --data that --train never shows
        raise SystemExit(f"baselines: {e}") from None
    except OSError as e:
        raise SystemExit(f"baselines: {e.filename}: {e.strerror}") from None
    print(blind_table(metrics))
    return 0


if __name__ == "__main__":
    sys.exit(main())
