"""scripts/grpo_proof.py's parts that take no training: the localisation probe's records and what the script
refuses (an SFT start of another recipe, an earlier proof's runs, the probe with a task it does not hold)."""

import argparse
import json
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


@pytest.fixture
def proof(grpo_proof):
    return grpo_proof


def test_square_records_put_the_square_where_answer_and_reasoning_say(proof, tmp_path):
    import data
    from embedded import synth

    path = proof.square_records(tmp_path / "sq", 40, seed=3)
    records = data.load_records(path)  # the project's own validation accepts them
    assert len(records) == 40 and all(r.task == "grounding" for r in records)
    cells = set()
    for r in records:
        img = np.asarray(Image.open(r.images[0]).convert("RGB"))
        assert img.shape == (proof.SQUARE_IMAGE, proof.SQUARE_IMAGE, 3)
        red = np.argwhere((img[..., 0] > 200) & (img[..., 1] < 80))
        (y1, x1), (y2, x2) = red.min(0), red.max(0)
        assert [[int(x1), int(y1), int(x2) + 1, int(y2) + 1]] == r.answer  # the box is exactly the square
        cell = synth._cell((x1 + x2 + 1) / 2, (y1 + y2 + 1) / 2, img.shape[1], img.shape[0])
        assert r.reasoning == f"The red square lies {synth._AT[cell]}."
        cells.add(cell)
    assert len(cells) >= 7  # uniform places: nearly every 3 x 3 cell in 40 draws
    again = proof.square_records(tmp_path / "sq2", 40, seed=3).read_text()
    assert again.replace("sq2", "sq") == path.read_text()  # seeded: the same records
    assert proof.square_records(tmp_path / "sq3", 40, seed=4).read_text() != again


def test_blind_baseline_on_the_probe_is_far_below_a_localiser(proof, tmp_path):
    import data
    from geovlm import baselines

    train = data.load_records(proof.square_records(tmp_path / "train", 300, seed=2000))
    held_out = data.load_records(proof.square_records(tmp_path / "eval", 200, seed=1000))
    blind = baselines.best_blind(train, held_out)["tasks"]["grounding"]
    assert blind["acc@0.5"] <= 0.08, blind  # the mean box rarely overlaps a randomly placed square by half


def test_an_sft_start_of_another_recipe_is_refused(proof, tmp_path, monkeypatch):
    trained = []

    def fake_sft(argv):  # writes what a finished SFT leaves, so no training runs here
        out = Path(argv[argv.index("--out") + 1])
        (out / "final").mkdir(parents=True)
        (out / "final" / "config.json").write_text("{}")
        trained.append(argv)

    monkeypatch.setattr(proof.train_sft, "main", fake_sft)
    args = proof.parse_args(["--task", "grounding", "--out", str(tmp_path / "p"), "--rope-theta", "0"])
    first = proof.sft_start(args, 0, tmp_path / "train.jsonl", tmp_path / "p")
    assert proof.sft_start(args, 0, tmp_path / "train.jsonl", tmp_path / "p") == first and len(trained) == 1
    assert (
        json.loads((tmp_path / "p" / "sft-seed0" / "recipe.json").read_text())["sft_steps"] == args.sft_steps
    )
    longer = proof.parse_args(
        ["--task", "grounding", "--out", str(tmp_path / "p"), "--rope-theta", "0", "--sft-steps", "900"]
    )
    with pytest.raises(SystemExit, match="another SFT recipe.*sft_steps"):
        proof.sft_start(longer, 0, tmp_path / "train.jsonl", tmp_path / "p")


def test_the_probe_holds_grounding_only_and_earlier_runs_are_kept(proof, tmp_path):
    with pytest.raises(SystemExit, match="grounding records only"):
        proof.parse_args(["--task", "detection", "--images", "squares", "--out", str(tmp_path / "a")])
    (tmp_path / "b" / "grpo-seed0").mkdir(parents=True)
    with pytest.raises(SystemExit, match="earlier proof's runs"):
        proof.parse_args(["--task", "grounding", "--out", str(tmp_path / "b")])
    assert proof.parse_args(["--task", "grounding", "--out", str(tmp_path / "b"), "--overwrite"]).overwrite
    for flags, said in (
        (["--train-records", "0"], "no embedded records"),
        (["--eval-records", "-1"], "no embedded"),
        (["--images", "synth", "--eval-records", "-1"], "must not be negative"),
        (["--rope-theta", "-5"], "must not be negative"),
        (["--sft-only", "--sft", "some/start"], "none to train"),
    ):
        with pytest.raises(SystemExit, match=said):
            proof.parse_args(["--task", "grounding", "--out", str(tmp_path / "c"), *flags])
    kept = proof.parse_args(
        ["--task", "grounding", "--out", str(tmp_path / "c"), "--base-model", "some/model"]
    )
    assert kept.rope_theta == 0.0  # a given base model is used as it is, not rebuilt with the recipe's base


def test_detection_starts_from_the_shipped_perception_start_unless_a_per_seed_sft_is_asked_for(
    proof, tmp_path
):
    out = ["--task", "detection", "--out", str(tmp_path / "d")]
    shipped = proof.parse_args(out).sft
    assert (
        shipped
        and (Path(shipped) / "model.safetensors").exists()
        and Path(shipped).name == "perception-start"
    )
    assert proof.parse_args([*out, "--sft", "my/start"]).sft == "my/start"
    assert proof.parse_args([*out, "--base-model", "some/model"]).sft is None  # the per-seed SFT from it
    assert proof.parse_args([*out, "--sft-only"]).sft is None
    assert proof.parse_args(["--task", "vqa", "--out", str(tmp_path / "v")]).sft is None
    # counting starts from the embedded start itself: the one train_grpo.py and the demo use by default
    from embedded import defaults

    counting = proof.parse_args(["--task", "counting", "--out", str(tmp_path / "c")])
    assert Path(counting.sft).resolve() == Path(defaults.sft_model()).resolve()
    assert (counting.steps, counting.train_records, counting.lr) == (150, 1200, 1e-4)


def test_the_help_example_of_grpo_args_reaches_train_grpo(proof, tmp_path, monkeypatch):
    parsers = []
    real = argparse.ArgumentParser.parse_args
    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", lambda p, *a: parsers.append(p) or real(p, *a))
    out = ["--task", "detection", "--out", str(tmp_path / "d")]
    proof.parse_args(out)
    flag = next(a for a in parsers[0]._actions if "--grpo-args" in a.option_strings)
    example = re.search(r"(--grpo-args='[^']*')", flag.help).group(1)  # as a user would paste it
    assert proof.parse_args([*out, *shlex.split(example)]).grpo_args.split() == [
        "--freeze-vision",
        "--drop-zero-std-groups",
    ]


def test_the_held_out_set_has_unique_ids(proof, tmp_path, caplog):
    # the embedded set (seed 0) + fresh records of seed 1000 once shared ids: the viewer showed wrong
    # questions
    import argparse

    import data
    from embedded import synth

    synth.make_dataset(tmp_path / "data", n=24, seed=0, tasks=["counting"], test_frac=0.5)
    args = argparse.Namespace(task="counting", eval_records=24, train_records=0)
    eval_path, _, _ = proof.synth_split(args, tmp_path / "data", tmp_path / "out")
    ids = [r.id for r in data.load_records(eval_path)]
    assert len(ids) == 36 and len(set(ids)) == len(ids)
    assert "duplicate id" not in caplog.text
