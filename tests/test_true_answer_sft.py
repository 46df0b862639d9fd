"""scripts/true_answer_sft.py: SFT on GRPO's training records with their true answers, as a yardstick."""

import json

import numpy as np
import pytest
from PIL import Image

from embedded import curriculum, synth


@pytest.fixture(scope="module")
def T():
    from conftest import script

    return script("true_answer_sft")


def test_dense_reasoning_is_what_the_perception_chain_writes(T, tmp_path):
    # the records synth writes carry its short reasoning; rewritten, each must read exactly as the chain's
    # own detection samples (curriculum.dense_detection) for the same image and boxes
    synth.make_dataset(tmp_path, n=12, seed=5, tasks=["detection"], test_frac=0.0)
    rows = [json.loads(line) for line in open(tmp_path / "train.jsonl")]
    rows = [r for r in rows if r["task"] == "detection"]
    assert rows and any(len(r["answer"]) > 1 for r in rows)
    for r in rows:
        r["images"] = [str(tmp_path / p) for p in r["images"]]
        image = np.asarray(Image.open(r["images"][0]))
        chain = curriculum.dense_detection(synth.Sample([image], r["question"], r["answer"], "", r["meta"]))
        dense = T.dense_reasoning(r)
        assert dense["reasoning"] == chain.reasoning != r["reasoning"]
        assert {k: v for k, v in dense.items() if k != "reasoning"} == {
            k: v for k, v in r.items() if k != "reasoning"
        }


def test_dense_reasoning_only_for_detection_in_one_line(T, capsys):
    with pytest.raises(SystemExit):
        T.parse_args(["--task", "counting", "--reasoning", "dense"])
    assert "rewrites detection records only" in capsys.readouterr().err
    assert T.parse_args(["--task", "counting"]).reasoning == "records"
    assert T.parse_args([]).reasoning == "dense"


def test_a_run_is_never_replaced_and_a_file_is_no_out(T, tmp_path):
    (tmp_path / "sft-seed1").mkdir()
    (tmp_path / "sft-seed1" / "log.jsonl").write_text('{"step": 1, "loss": 1.0}\n')
    with pytest.raises(SystemExit, match="sft-seed1 already hold a run"):
        T.main(["--out", str(tmp_path), "--seeds", "0,1"])
    assert not (tmp_path / "train.jsonl").exists()  # refused before any record was made
    (tmp_path / "earlier").mkdir()
    (tmp_path / "earlier" / "true_answer_sft.json").write_text("{}")
    with pytest.raises(SystemExit, match="true_answer_sft.json already hold a run"):
        T.main(["--out", str(tmp_path / "earlier"), "--seeds", "5"])
    (tmp_path / "file").write_text("x")
    with pytest.raises(SystemExit, match="a file, not a folder"):
        T.main(["--out", str(tmp_path / "file")])
