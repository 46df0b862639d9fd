import json
from pathlib import Path

import pytest
import torch

import model as M
import train_sft


def _argv(tiny_dir, synth_dir, out, *extra):
    return [
        "--model",
        str(tiny_dir),
        "--data",
        str(Path(synth_dir) / "train.jsonl"),
        "--eval-data",
        str(Path(synth_dir) / "test.jsonl"),
        "--out",
        str(out),
        "--batch-size",
        "8",
        "--lr",
        "2e-3",
        "--warmup-steps",
        "5",
        "--eval-records",
        "32",
        "--seed",
        "0",
        *extra,
    ]


@pytest.mark.slow(minutes=1.4)
def test_short_sft_halves_the_held_out_loss(tiny_dir, synth_dir, tmp_path):
    torch.set_num_threads(1)
    hist = train_sft.main(
        _argv(tiny_dir, synth_dir, tmp_path / "run", "--max-steps", "60", "--eval-every", "30")
    )
    (s0, first), (s1, last) = hist["eval_loss"][0], hist["eval_loss"][-1]
    assert (s0, s1) == (0, 60)
    assert last < 0.4 * first, hist["eval_loss"]  # "well under half": random init starts near ln(vocab)
    rows = [json.loads(line) for line in open(tmp_path / "run" / "log.jsonl")]
    assert {"step", "loss", "lr", "grad_norm", "tokens_per_s"} <= set(rows[-1]) and rows[-1]["step"] == 60
    loaded = M.load(str(tmp_path / "run" / "final"), device="cpu")  # an ordinary HF checkpoint
    assert loaded.frame_kind == "pixels"


def test_nan_loss_names_the_step_and_quantity(tiny_dir, synth_dir, tmp_path, monkeypatch):
    real = train_sft.sft_loss_sum
    monkeypatch.setattr(train_sft, "sft_loss_sum", lambda net, b: (real(net, b)[0] * float("nan"), 1))
    with pytest.raises(FloatingPointError, match=r"step 1: loss is not finite"):
        train_sft.main(
            _argv(tiny_dir, synth_dir, tmp_path / "nan", "--max-steps", "2", "--eval-records", "0")
        )
    assert not (tmp_path / "nan" / "final").exists()
