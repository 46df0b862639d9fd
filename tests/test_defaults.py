"""The embedded defaults: the headline command, with no --model / --data, has something to learn from step
one.

`defaults.sft_model()` (the GRPO start when --model is omitted) is built for real here, in its own process, by
the same code as on a user's machine; only its recipe is shortened and the data and base model are the
session's small fixtures, so that the test takes a minute instead of the real build's few.
"""

import json

import pytest

import train_grpo
from embedded import defaults


@pytest.mark.slow(minutes=2.6)
def test_headline_command_on_the_defaults_has_reward_spread_and_gradient_from_step_one(
    tiny_dir, synth_dir, tmp_path, monkeypatch, capsys
):
    monkeypatch.setattr(defaults, "data_dir", lambda cache=None: synth_dir)
    monkeypatch.setattr(defaults, "base_model", lambda cache=None: tiny_dir)
    monkeypatch.setattr(defaults, "SFT_RECIPE", ("--max-steps", "100", "--batch-size", "8", "--seed", "0"))
    build = defaults.sft_model

    def sft_model(cache=tmp_path / "cache"):
        return build(cache)

    monkeypatch.setattr(defaults, "sft_model", sft_model)
    train_grpo.main(["--task", "detection", "--max-steps", "3", "--out", str(tmp_path / "run")])
    banner = capsys.readouterr().out
    assert "sft_model" in banner  # the start-up banner names the embedded start
    built = [
        p for p in (tmp_path / "cache").glob("tiny-qwen2.5-vl-*-sft-*") if not p.name.endswith("-warm-up")
    ]
    assert len(built) == 1 and (built[0] / "warm-up-log.jsonl").exists()
    # the warm-up's curves stay where its last line said they are
    assert (built[0].with_name(built[0].name + "-warm-up") / "plots" / "training.png").exists()
    steps = [r for r in map(json.loads, open(tmp_path / "run" / "log.jsonl")) if "reward_mean" in r]
    assert [r["step"] for r in steps] == [1, 2, 3]
    assert steps[0]["reward_std"] > 0 and steps[0]["grad_norm"] > 0, steps[0]
    assert steps[0]["zero_std_frac"] < 1.0, steps[0]


def test_bad_data_is_reported_before_the_default_start_is_built(tmp_path, monkeypatch):
    bad = tmp_path / "train.jsonl"
    bad.write_text('{"id": "a", "task": "vqa"\n')
    monkeypatch.setattr(
        defaults, "sft_model", lambda cache=None: pytest.fail("built the GRPO start before reading --data")
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
