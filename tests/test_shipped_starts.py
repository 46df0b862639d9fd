"""The starts shipped in embedded/weights/ are what their manifests say: the files hash as listed, and the
recipe's first steps, re-run now, give the losses logged when the start was trained (scripts/ship_start.py).
A start whose recipe, data or code changed since fails here; rebuild it with the two commands in
scripts/ship_start.py."""

import json
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
PROBE = ROOT / "embedded" / "weights" / "grounding-probe-sft"
STEPS = 20  # within the 20-step warm-up, so the learning rate of each step does not depend on --sft-steps


def manifest(start: Path) -> dict:
    return json.loads((start / "manifest.json").read_text())


def test_the_shipped_files_are_the_manifests(ship_start):
    m = manifest(PROBE)
    shipped = {p.name for p in PROBE.iterdir()} - {"manifest.json"}
    assert shipped == set(m["sha256"]), "a file is shipped without its hash, or listed and missing"
    assert {name: ship_start.sha256(PROBE / name) for name in shipped} == m["sha256"]
    assert "model.safetensors" in shipped and m["commit"] and "grpo_proof.py" in m["command"]


def test_the_probe_start_comes_from_the_grounding_recipe(tmp_path, grpo_proof):
    """The first STEPS steps of `grpo_proof.py --task grounding`'s SFT (the manifest's command) give the
    logged losses, and the start was trained with that recipe's length and tokenizer."""
    torch.set_num_threads(1)  # as the start was trained (one-thread sums): bit-for-bit on one machine
    m = manifest(PROBE)
    recipe = grpo_proof.RECIPES["grounding"]
    assert m["sft_args"]["max_steps"] == recipe["sft_steps"] == len(m["losses"])
    out = tmp_path / "proof"
    grpo_proof.main(
        ["--task", "grounding", "--seeds", "0", "--sft-only", "--sft-steps", str(STEPS), "--out", str(out)]
    )
    again = [json.loads(line)["loss"] for line in open(out / "sft-seed0" / "log.jsonl")]
    assert again == pytest.approx(m["losses"][:STEPS], rel=1e-4, abs=1e-5)
    # the same tokenizer: the embedded corpus it is trained on has not changed since
    assert (out / "sft-seed0" / "final" / "tokenizer.json").read_bytes() == (
        PROBE / "tokenizer.json"
    ).read_bytes()
