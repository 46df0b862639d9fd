"""Experiment, not part of the library: run a repository script with the tiny model's 14 row/column M-RoPE
frequencies handed out by ROPE_LAYOUT (the first 2 of 16 stay time's):
std (rows the 4 fast, columns the 10 slow, as Qwen2.5-VL), swap (columns the 4 fast, rows the 10 slow),
inter (rows and columns alternating).

    ROPE_LAYOUT=swap python docs/detection-proof/rope-layout-probe/ropewrap.py scripts/pretrain_tiny.py ARGS
    ROPE_LAYOUT=swap python docs/detection-proof/rope-layout-probe/ropewrap.py eval.py ARGS

The layout is not saved with a model: train and evaluate it under the same ROPE_LAYOUT. (The library has
"inter" since: a tiny model built with --mrope-layout interleaved carries it in its config; leave ROPE_LAYOUT
unset for such a model, and the script runs unwrapped.)
"""

import os
import runpy
import sys
from pathlib import Path

import torch
from transformers.models.qwen2_5_vl import modeling_qwen2_5_vl

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))
import model as M  # noqa: E402

LAYOUTS = {
    "std": M.mrope_axes((2, 4, 10)),
    "swap": [0] * 2 + [2] * 4 + [1] * 10,
    "inter": M.mrope_axes((2, 7, 7), "interleaved"),  # pretrain_tiny.py --mrope-layout interleaved
}


def recomposition_frequencies(self, freq: torch.Tensor) -> torch.Tensor:
    """freq (3, batch, positions, 16): dim j takes the time, row or column position of LAYOUTS[...][j]."""
    axes = torch.tensor(LAYOUTS[os.environ["ROPE_LAYOUT"]], device=freq.device)
    assert freq.shape[-1] == len(axes), freq.shape
    return M.recompose_frequencies(freq, axes)


def run(script: str, argv: list[str]) -> None:
    if "ROPE_LAYOUT" in os.environ:  # unset: no wrapper (a model whose config carries its layout)
        modeling_qwen2_5_vl.Qwen2_5_VLRotaryEmbedding.recomposition_frequencies = recomposition_frequencies
    sys.argv = [script, *argv]
    sys.path[:0] = [str(Path(script).resolve().parent), str(ROOT)]
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    run(sys.argv[1], sys.argv[2:])
