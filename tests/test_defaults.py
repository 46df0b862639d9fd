"""The embedded defaults: the headline command, with no --model / --data, has something to learn from step
one, from the shipped start (defaults.sft_model: embedded/weights/embedded-sft) on the embedded data."""

import json

import pytest

import train_grpo
from embedded import defaults


@pytest.mark.slow(minutes=0.6)
def test_headline_command_on_the_defaults_has_reward_spread_and_gradient_from_step_one(tmp_path, capsys):
    train_grpo.main(["--task", "detection", "--max-steps", "3", "--out", str(tmp_path / "run")])
    banner = capsys.readouterr().out
    # the start-up banner names the embedded start and how it was made
    assert "embedded.defaults.sft_model" in banner and "[shipped start: `python train_sft.py" in banner
    steps = [r for r in map(json.loads, open(tmp_path / "run" / "log.jsonl")) if "reward_mean" in r]
    assert [r["step"] for r in steps] == [1, 2, 3]
    assert steps[0]["reward_std"] > 0 and steps[0]["grad_norm"] > 0, steps[0]
    assert steps[0]["zero_std_frac"] < 1.0, steps[0]


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
