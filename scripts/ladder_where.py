"""Where a ladder model's greedy boxes fall on two-object scenes: on the asked object, on the other one,
between them, or nowhere in particular (docs/perception-ladder.md, "what the model does with two objects").

    python scripts/ladder_where.py runs/ladder/colourmixl/stage-0-colourmixl colourmixl
    python scripts/ladder_where.py runs/ladder/square2/stage-1-square2 square2 --stage-index 1

The records are the stage's own held-out grounding records (scripts/pretrain_tiny.py's stage_held_out: rng
[--eval-seed, 2000 + --stage-index, i]), so the figures sit beside the ladder's "own scenes" columns. The
other object of each scene is found from the pixels (synth.find_objects; the squares by their colour). Per
record: the IoU of the predicted box with the target and with the other object, and the distance of its
centre from the target's centre, the other's, their midpoint and the image centre. A model that picks one of
the two at random hits each about equally; one that reads the scene's salience as a whole lands near the
midpoint; a blind one near the image centre.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import eval as E  # noqa: E402
import model as M  # noqa: E402
from embedded import curriculum, synth  # noqa: E402
from geovlm import parsing  # noqa: E402
from geovlm.flags import count, positive_int  # noqa: E402

Box = list[float]


def centre(b: Box) -> tuple[float, float]:
    return (b[0] + b[2]) / 2, (b[1] + b[3]) / 2


def distance(a: tuple[float, float], b: tuple[float, float]) -> float:
    return float(np.hypot(a[0] - b[0], a[1] - b[1]))


def placement(pred: Box, target: Box, other: Box, side: int) -> dict:
    """Where one predicted box lies against the scene's two objects (pixel boxes x1, y1, x2, y2)."""
    p, t, o = centre(pred), centre(target), centre(other)
    return {
        "iou_target": parsing.box_iou(pred, target),
        "iou_other": parsing.box_iou(pred, other),
        "to_target": distance(p, t),
        "to_other": distance(p, o),
        "to_midpoint": distance(p, ((t[0] + o[0]) / 2, (t[1] + o[1]) / 2)),
        "to_image_centre": distance(p, (side / 2, side / 2)),
    }


def summary(rows: list[dict]) -> dict:
    """Means over the records whose box parsed, and the shares that hit (IoU >= 0.5) either object."""
    mean = lambda k: float(np.mean([r[k] for r in rows])) if rows else float("nan")  # noqa: E731
    share = lambda f: float(np.mean([f(r) for r in rows])) if rows else float("nan")  # noqa: E731
    return {
        "parsed": len(rows),
        "hit_target@0.5": share(lambda r: r["iou_target"] >= 0.5),
        "hit_other@0.5": share(lambda r: r["iou_other"] >= 0.5),
        "nearer_target": share(lambda r: r["to_target"] < r["to_other"]),
        **{f"mean_{k}": mean(k) for k in ("iou_target", "iou_other")},
        **{f"mean_px_{k}": mean(k) for k in ("to_target", "to_other", "to_midpoint", "to_image_centre")},
    }


def other_object(stage: str, img: np.ndarray, target: Box) -> Box | None:
    """The scene's one object that is not the target, from the pixels; None when there is none."""
    if stage.startswith("square"):  # the one box of what is not grey outside the target
        rest = (img != curriculum.GREY).any(-1)
        rest[int(target[1]) : int(target[3]), int(target[0]) : int(target[2])] = False
        yx = np.argwhere(rest)
        found = [] if not len(yx) else [[*map(int, yx.min(0)[::-1]), *map(int, yx.max(0)[::-1] + 1)]]
    else:
        found = [list(b) for _, b in synth.find_objects(img)]
    others = [b for b in found if b != list(target)]
    return others[0] if others else None


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="a ladder checkpoint (an HF folder model.load reads)")
    two = ["square2", "square2red", "square2rb", "square2rbg", "square2fade"]
    two += ["colourmixl", "colourmixlg", "classmixl", "classmix1", "fixedmixl", "fixedmixlg", "fixedmix"]
    p.add_argument("stage", choices=two, help="the two-object scenes to place boxes on")
    p.add_argument("--records", type=positive_int, default=50, help="held-out records (default: %(default)s)")
    p.add_argument("--stage-index", type=count, default=0, help="the stage's index in its run (default: 0)")
    p.add_argument("--eval-seed", type=count, default=90210, help="as pretrain_tiny's (default: %(default)s)")
    args = p.parse_args(argv)
    if not (Path(args.model) / "config.json").exists():
        p.error(f"{args.model}: not a model folder (no config.json); give a ladder run's stage-K-NAME folder")
    torch.set_num_threads(1)
    net = M.load(args.model, device="cpu")
    net.model.eval()
    with tempfile.TemporaryDirectory() as tmp:
        records, others = [], []
        for i in range(args.records):
            rng = np.random.default_rng([args.eval_seed, 2000 + args.stage_index, i])
            s = curriculum.BUILDERS[args.stage](rng, "grounding")
            records.append(curriculum.to_record(s, "grounding", f"{args.stage}-{i:05d}", Path(tmp)))
            others.append(other_object(args.stage, s.images[0], s.answer[0]))
        cpu = torch.device("cpu")
        completions, _ = E.generate(net.model, net.processor, net.frame_kind, records, 128, cpu)
    rows = []
    for r, c, o in zip(records, completions, others):
        boxes = parsing.parse_boxes(parsing.extract_answer(c))
        if boxes and o is not None:
            rows.append(placement(boxes[0], r.answer[0][:4], o, r.image_sizes[0][0]))
    out = {"model": args.model, "stage": args.stage, "records": args.records, **summary(rows)}
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
