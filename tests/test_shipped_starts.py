"""The starts shipped in embedded/weights/ are what their manifests say: the files hash as listed, and the
recipe's first steps, re-run now, give the losses logged when the start was trained (scripts/ship_start.py).
A start whose recipe, data or code changed since fails here; rebuild it with the two commands in
scripts/ship_start.py."""

import json
from pathlib import Path

import pytest
import torch

WEIGHTS = Path(__file__).resolve().parents[1] / "embedded" / "weights"
# each shipped start and the grpo_proof.py task whose seed-0 SFT start it is
STARTS = {"grounding-probe-sft": "grounding", "vqa-sft": "vqa"}
STEPS = 20  # within the 20-step warm-up, so the learning rate of each step does not depend on --sft-steps


def manifest(start: Path) -> dict:
    return json.loads((start / "manifest.json").read_text())


def test_every_shipped_start_is_listed_here():
    assert {p.name for p in WEIGHTS.iterdir() if p.is_dir()} == set(STARTS)


@pytest.mark.parametrize("name", STARTS)
def test_the_shipped_files_are_the_manifests(ship_start, name):
    start = WEIGHTS / name
    m = manifest(start)
    shipped = {p.name for p in start.iterdir()} - {"manifest.json"}
    assert shipped == set(m["sha256"]), "a file is shipped without its hash, or listed and missing"
    assert {f: ship_start.sha256(start / f) for f in shipped} == m["sha256"]
    assert "model.safetensors" in shipped and m["commit"]


@pytest.mark.parametrize("name", STARTS)
def test_the_start_comes_from_its_recipe(tmp_path, grpo_proof, name):
    """The first STEPS steps of `grpo_proof.py --task TASK`'s SFT (the manifest's command) give the logged
    losses, and the start was trained with that recipe's length and tokenizer."""
    torch.set_num_threads(1)  # as the start was trained (one-thread sums): bit-for-bit on one machine
    start, task = WEIGHTS / name, STARTS[name]
    m = manifest(start)
    assert f"--task {task} --seeds 0 --sft-only" in m["command"]
    assert m["sft_args"]["max_steps"] == grpo_proof.RECIPES[task]["sft_steps"] == len(m["losses"])
    out = tmp_path / "proof"
    grpo_proof.main(
        ["--task", task, "--seeds", "0", "--sft-only", "--sft-steps", str(STEPS), "--out", str(out)]
    )
    rows = [json.loads(line) for line in open(out / "sft-seed0" / "log.jsonl")]
    again = [r["loss"] for r in rows if "loss" in r]
    assert again == pytest.approx(m["losses"][:STEPS], rel=1e-4, abs=1e-5)
    # the same tokenizer: the embedded corpus it is trained on has not changed since
    fresh = out / "sft-seed0" / "final" / "tokenizer.json"
    assert fresh.read_bytes() == (start / "tokenizer.json").read_bytes()
