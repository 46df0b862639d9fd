"""Experiment only: ropewrap plus stage 'msq': detection of 2-4 red 40-px squares on grey 224 x 224 (8 px apart),
answers top to bottom as synth's, reasoning naming each square's cell. usage as ropewrap.py."""
import os, sys
sys.path.insert(0, "/work/exp2")
import numpy as np
from embedded import curriculum as C, synth

SIDE, GAP = 40, 8


def msq(rng: np.random.Generator, task: str) -> synth.Sample:
    k = int(rng.integers(2, 5))
    boxes: list[list[int]] = []
    while len(boxes) < k:
        x, y = (int(v) for v in rng.integers(0, C.FIXED_SIDE - SIDE, 2))
        if all(x >= b[2] + GAP or b[0] >= x + SIDE + GAP or y >= b[3] + GAP or b[1] >= y + SIDE + GAP for b in boxes):
            boxes.append([x, y, x + SIDE, y + SIDE])
    boxes.sort(key=lambda b: (b[1], b[0]))
    img = np.full((C.FIXED_SIDE, C.FIXED_SIDE, 3), C.GREY, np.uint8)
    for x1, y1, x2, y2 in boxes:
        img[y1:y2, x1:x2] = (230, 40, 40)
    why = f"There are {synth._NUM[k]} red squares: {C._cells_text(boxes, C.FIXED_SIDE, C.FIXED_SIDE)}; each gets its own box."
    return synth.Sample([img], "Find every red square and give its bounding box.", boxes, why, synth._meta("detect"))


C.BUILDERS["msq"] = msq
exec(open("/work/meas/s14/rope/ropewrap.py").read())
