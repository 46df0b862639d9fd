"""Experiment only (not in the repo): run a repo script with the tiny model's M-RoPE dims assigned to
time/rows/columns by ROPE_LAYOUT: std (2 t, 4 rows, 10 cols, as Qwen2.5-VL), swap (2 t, 4 cols, 10 rows),
inter (2 t, then rows/cols alternating). usage: ROPE_LAYOUT=swap python ropewrap.py SCRIPT ARGS..."""
import os, runpy, sys
import torch
from transformers.models.qwen2_5_vl import modeling_qwen2_5_vl as m

LAYOUTS = {
    "std": [0] * 2 + [1] * 4 + [2] * 10,
    "swap": [0] * 2 + [2] * 4 + [1] * 10,
    "inter": [0] * 2 + [1, 2] * 7,
}
A = LAYOUTS[os.environ["ROPE_LAYOUT"]]


def recomposition_frequencies(self, freq):
    assert freq.shape[-1] == len(A), freq.shape
    out = torch.stack([freq[A[j], ..., j] for j in range(len(A))], dim=-1)
    return torch.cat((out, out), dim=-1)


m.Qwen2_5_VLRotaryEmbedding.recomposition_frequencies = recomposition_frequencies
script = sys.argv[1]
sys.argv = sys.argv[1:]
sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(script))))
runpy.run_path(script, run_name="__main__")
