"""scripts/headroom.py: the greedy answer's reward beside GRPO-style samples of the same prompts."""

import pytest


@pytest.fixture
def H():
    from conftest import script

    return script("headroom")


def test_summary_of_greedy_against_samples(H):
    out = H.headroom([0.5, 0.0], [[0.5, 1.0], [0.0, 0.0]])
    assert out["greedy"] == 0.25 and out["sampled"] == 0.375 and out["best_sampled"] == 0.5
    assert out["samples_above_greedy"] == 0.25  # one of four samples beats its record's greedy answer
    assert out["records_best_above_greedy"] == 0.5 and out["best_margin"] == 0.25


def test_samples_at_near_zero_temperature_score_as_greedy_on_the_embedded_start(H, capsys):
    # sampling and greedy decoding go through different paths (model.sample with G > 1 vs eval.generate);
    # at T -> 0 they must give the same answers, scored in the same frames
    H.main(
        [
            "--task",
            "counting",
            "--records",
            "4",
            "--group-size",
            "2",
            "--max-new-tokens",
            "64",
            "--temperature",
            "1e-6",
        ]
    )
    printed = dict(line.split() for line in capsys.readouterr().out.strip().splitlines())
    assert float(printed["greedy"]) > 0  # the start counts some right, so the comparison means something
    assert printed["sampled"] == printed["greedy"] == printed["best_sampled"]
    assert float(printed["samples_above_greedy"]) == 0.0


def test_mistakes_are_one_line(H, tmp_path):
    empty = tmp_path / "r.jsonl"
    empty.write_text("")
    with pytest.raises(SystemExit, match="no records of task"):
        H.main(["--data", str(empty)])
    with pytest.raises(SystemExit, match="no such directory"):
        H.main(["--model", str(tmp_path / "nowhere"), "--records", "1"])
