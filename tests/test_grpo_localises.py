"""GRPO sharpens what the model sees: seed 0 of `scripts/grpo_proof.py --task grounding`, shortened.

The grounding recipe (the localisation probe: one red square on grey; IoU reward, G=8, 8 prompts a step,
temperature 0.7, lr 1e-4) with STEPS GRPO steps instead of 150 (its cosine schedule spans the STEPS), from the
recipe's seed-0 SFT start shipped in embedded/weights/grounding-probe-sft (a 500-step SFT of the tiny model
with M-RoPE base 50: five minutes of the suite saved; tests/test_shipped_starts.py shows it is that SFT's),
evaluated greedily on 100 of its held-out records before and after, and once more with the images permuted
among the records. The README reports the full proof (three seeds, per-seed SFT, the shuffled-reward
control).
"""

import json
from pathlib import Path

import pytest
import torch

STEPS = 60
START = Path(__file__).resolve().parents[1] / "embedded" / "weights" / "grounding-probe-sft"


@pytest.mark.slow(minutes=3.0)
def test_grpo_raises_grounding_and_only_with_the_right_image(tmp_path, grpo_proof):
    torch.set_num_threads(1)  # tiny matmuls: one thread is as fast, and immune to a busy machine
    results = grpo_proof.main(
        [
            "--task",
            "grounding",
            "--seeds",
            "0",
            "--no-control",
            "--sft",
            str(START),
            "--steps",
            str(STEPS),
            "--eval-every",
            str(STEPS),
            "--eval-records",
            "100",
            "--out",
            str(tmp_path / "proof"),
        ]
    )
    run, blind = results["seeds"][0], results["blind"]
    (base_step, base), (last_step, final) = run["grpo"]["curve"][0], run["grpo"]["curve"][-1]
    assert (base_step, last_step) == (0, STEPS)
    summary = json.dumps({k: v for k, v in run.items() if k != "mismatched"})
    # the start localises, GRPO raises the reward it optimises
    assert base["acc@0.5"] >= 0.25, summary
    assert final["mean_iou"] - base["mean_iou"] >= 0.03, (
        f"mean IoU {base['mean_iou']:.3f} -> {final['mean_iou']:.3f}: {summary}"
    )
    assert final["acc@0.5"] >= base["acc@0.5"], summary
    assert run["grpo"]["format_rate"] >= 0.95, summary
    # and it is the image: another record's image, or none, leaves a small fraction of it
    assert final["acc@0.5"] >= run["mismatched"]["acc@0.5"] + 0.25, run["mismatched"]
    assert final["acc@0.5"] >= blind["acc@0.5"] + 0.25, blind
