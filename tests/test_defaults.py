"""The embedded defaults: the headline command, with no --model / --data, has something to learn from step
one, from the shipped start (defaults.sft_model: embedded/weights/embedded-start) on the embedded data."""

import json

import pytest

import train_grpo
from embedded import defaults


@pytest.mark.slow(minutes=0.6)
def test_headline_command_on_the_defaults_has_reward_spread_and_gradient_from_step_one(tmp_path, capsys):
    argv = ["--task", "detection", "--max-steps", "2", "--eval-records", "6", "--out", str(tmp_path / "run")]
    train_grpo.main(argv)
    banner = capsys.readouterr().out
    # the start-up banner names the embedded start and how it was made
    assert "embedded.defaults.sft_model" in banner
    assert "[shipped start: `python scripts/perception_start.py" in banner
    rows = list(map(json.loads, open(tmp_path / "run" / "log.jsonl")))
    steps = [r for r in rows if "reward_mean" in r]
    assert [r["step"] for r in steps] == [1, 2]
    assert steps[0]["reward_std"] > 0 and steps[0]["grad_norm"] > 0, steps[0]
    assert steps[0]["zero_std_frac"] < 1.0, steps[0]
    # the start finds objects: the detection reward itself pays at step one, not only the format reward
    assert steps[0]["reward/detection_score"] > 0, steps[0]
    # without --eval-data the embedded test split is held out: detection F1 logged at the start and the end
    evals = [r for r in rows if "eval" in r]
    assert [r["step"] for r in evals] == [0, 2] and all("f1@0.5" in r["eval"]["detection"] for r in evals)


def test_bad_data_is_reported_before_the_default_start_is_sought(tmp_path, monkeypatch):
    bad = tmp_path / "train.jsonl"
    bad.write_text('{"id": "a", "task": "vqa"\n')
    monkeypatch.setattr(
        defaults, "sft_model", lambda: pytest.fail("sought the GRPO start before reading --data")
    )
    with pytest.raises(SystemExit) as stop:
        train_grpo.main(["--data", str(bad), "--out", str(tmp_path / "run")])
    assert f"{bad}:1" in str(stop.value) and not (tmp_path / "run").exists()


def test_a_first_run_says_what_it_builds(tmp_path, monkeypatch, capsys):
    from embedded import synth

    monkeypatch.setattr(
        synth, "make_dataset", lambda out, n, seed: (out.mkdir(), (out / "test.jsonl").write_text(""))
    )
    assert defaults.data_dir(tmp_path) == tmp_path / f"synth-v{defaults.DATA_VERSION}"
    assert "defaults: building the embedded synthetic data set" in capsys.readouterr().out
    defaults.data_dir(tmp_path)
    assert capsys.readouterr().out == ""  # built once: nothing said the second time
