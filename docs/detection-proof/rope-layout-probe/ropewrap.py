"""Experiment, not part of the library: run a repository script with the tiny model's 14 row/column M-RoPE
frequencies handed out by ROPE_LAYOUT (the first 2 of 16 stay time's):
std (rows the 4 fast, columns the 10 slow, as Qwen2.5-VL), swap (columns the 4 fast, rows the 10 slow),
inter (rows and columns alternating).

    ROPE_LAYOUT=swap python docs/detection-proof/rope-layout-probe/ropewrap.py scripts/pretrain_tiny.py ARGS
    ROPE_LAYOUT=swap python docs/detection-proof/rope-layout-probe/ropewrap.py eval.py ARGS

The layout is not saved with a model: train and evaluate it under the same ROPE_LAYOUT.
"""

import os
import runpy
import sys
from pathlib import Path

import torch
from transformers.models.qwen2_5_vl import modeling_qwen2_5_vl

ROOT = Path(__file__).resolve().parents[3]
LAYOUTS = {
    "std": [0] * 2 + [1] * 4 + [2] * 10,
    "swap": [0] * 2 + [2] * 4 + [1] * 10,
    "inter": [0] * 2 + [1, 2] * 7,
}


def recomposition_frequencies(self, freq: torch.Tensor) -> torch.Tensor:
    """freq (3, batch, positions, 16): dim j takes the time, row or column position of LAYOUTS[...][j]."""
    layout = LAYOUTS[os.environ["ROPE_LAYOUT"]]
    assert freq.shape[-1] == len(layout), freq.shape
    out = torch.stack([freq[layout[j], ..., j] for j in range(len(layout))], dim=-1)
    return torch.cat((out, out), dim=-1)


def run(script: str, argv: list[str]) -> None:
    modeling_qwen2_5_vl.Qwen2_5_VLRotaryEmbedding.recomposition_frequencies = recomposition_frequencies
    sys.argv = [script, *argv]
    sys.path[:0] = [str(Path(script).resolve().parent), str(ROOT)]
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    run(sys.argv[1], sys.argv[2:])
