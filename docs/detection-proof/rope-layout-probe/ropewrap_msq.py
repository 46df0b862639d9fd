"""Experiment, not part of the library: ropewrap.py plus a curriculum stage 'msq': detection of 2 to 4 red
40-px squares on grey 224 x 224 (8 px apart at least), answers top to bottom as synth's, the reasoning naming
each square's cell.

    ROPE_LAYOUT=std python docs/detection-proof/rope-layout-probe/ropewrap_msq.py scripts/pretrain_tiny.py \\
        --base-model <a square model> --stages msq:1000:detection ...
    python docs/detection-proof/rope-layout-probe/ropewrap_msq.py scripts/pretrain_tiny.py \\
        --base-model <an interleaved square model> --stages msq:1000:detection ...   # no wrapper
"""

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import ropewrap  # noqa: E402

from embedded import curriculum, synth  # noqa: E402

SIDE, GAP = 40, 8


def apart(x: int, y: int, box: list[int]) -> bool:
    return x >= box[2] + GAP or box[0] >= x + SIDE + GAP or y >= box[3] + GAP or box[1] >= y + SIDE + GAP


def msq(rng: np.random.Generator, task: str) -> synth.Sample:
    k, side = int(rng.integers(2, 5)), curriculum.FIXED_SIDE
    boxes: list[list[int]] = []
    while len(boxes) < k:
        x, y = (int(v) for v in rng.integers(0, side - SIDE, 2))
        if all(apart(x, y, b) for b in boxes):
            boxes.append([x, y, x + SIDE, y + SIDE])
    boxes.sort(key=lambda b: (b[1], b[0]))
    img = np.full((side, side, 3), curriculum.GREY, np.uint8)
    for x1, y1, x2, y2 in boxes:
        img[y1:y2, x1:x2] = (230, 40, 40)
    cells = curriculum._cells_text(boxes, side, side)
    why = f"There are {synth._NUM[k]} red squares: {cells}; each gets its own box."
    q = "Find every red square and give its bounding box."
    return synth.Sample([img], q, boxes, why, synth._meta("detect"))


curriculum.BUILDERS["msq"] = msq

if __name__ == "__main__":
    ropewrap.run(sys.argv[1], sys.argv[2:])
