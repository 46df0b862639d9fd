"""The GRPO trainer end to end on the tiny model: logs, checkpoints, and stopping cleanly on NaN."""

import hashlib
import json
from pathlib import Path

import pytest
import torch

import grpo
import model
import rewards
import train_grpo
from geovlm import kernels

# every step's log row has these (plus reward/<component>, acc/<task>, format/<task>)
STEP_KEYS = {
    "step",
    "tasks",
    "reward_mean",
    "reward_std",
    "loss",
    "kl",
    "clip_frac",
    "entropy",
    "completion_len_mean",
    "completion_len_max",
    "truncated_frac",
    "zero_std_frac",
    "rollouts",
    "grad_norm",
    "lr",
    "rollout_s",
    "reward_s",
    "logprob_s",
    "update_s",
    "step_s",
    "tokens_per_s",
}


def _argv(tiny_dir, synth_dir, out, *extra) -> list[str]:
    return [
        "--model",
        str(tiny_dir),
        "--data",
        str(Path(synth_dir) / "train.jsonl"),
        "--out",
        str(out),
        "--task",
        "classification,counting",
        "--group-size",
        "4",
        "--prompts-per-step",
        "2",
        "--max-new-tokens",
        "24",
        "--lr",
        "1e-4",
        "--seed",
        "0",
        *extra,
    ]


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(path.rglob("*")):
        if f.is_file():
            h.update(f.name.encode() + f.read_bytes())
    return h.hexdigest()


def test_help_documents_every_flag(capsys):
    with pytest.raises(SystemExit) as e:
        train_grpo.parse_args(["--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for flag in (
        "--task",
        "--stages",
        "--model",
        "--data",
        "--eval-data",
        "--group-size",
        "--prompts-per-step",
        "--micro-batch-size",
        "--max-new-tokens",
        "--temperature",
        "--top-p",
        "--top-k",
        "--lr",
        "--beta",
        "--clip-eps-low",
        "--clip-eps-high",
        "--num-iterations",
        "--loss-agg",
        "--adv-scale",
        "--drop-zero-std-groups",
        "--mask-truncated",
        "--max-steps",
        "--seed",
        "--save-every",
        "--log-rollouts-every",
        "--out",
        "--shuffle-rewards",
        "--ratio-level",
        "--lora-rank",
        "--lora-alpha",
        "--lora-targets",
    ):
        assert flag in text, flag


def test_micro_batches_keep_groups_whole_or_split_evenly():
    mbs = train_grpo.micro_batches(12, 8, 4)  # whole groups: prompts 0-1, then prompt 2
    assert [(m.rows, m.prompts, m.per_prompt) for m in mbs] == [
        (slice(0, 8), slice(0, 2), 4),
        (slice(8, 12), slice(2, 3), 4),
    ]
    mbs = train_grpo.micro_batches(8, 2, 4)  # halves of one group each
    assert [(m.rows.start, m.prompts, m.per_prompt) for m in mbs] == [
        (0, slice(0, 1), 2),
        (2, slice(0, 1), 2),
        (4, slice(1, 2), 2),
        (6, slice(1, 2), 2),
    ]
    with pytest.raises(SystemExit):
        train_grpo.parse_args(["--group-size", "4", "--micro-batch-size", "3"])


def test_parse_stages(tmp_path):
    args = train_grpo.parse_args(["--stages", "classification:3,counting+vqa:5"])
    assert train_grpo.parse_stages(args, ["classification", "counting", "vqa"]) == [
        (["classification"], 3),
        (["counting", "vqa"], 5),
    ]
    args = train_grpo.parse_args(["--task", "all", "--max-steps", "7"])
    assert train_grpo.parse_stages(args, ["a", "b"]) == [(["a", "b"], 7)]
    with pytest.raises(SystemExit):
        train_grpo.parse_stages(train_grpo.parse_args(["--task", "detection"]), ["classification"])


def test_two_steps_write_log_rollouts_and_checkpoints(tiny_dir, synth_dir, tmp_path):
    out = tmp_path / "run"
    result = train_grpo.main(
        _argv(
            tiny_dir,
            synth_dir,
            out,
            "--max-steps",
            "2",
            "--save-every",
            "1",
            "--log-rollouts-every",
            "1",
            "--num-iterations",
            "2",
            "--micro-batch-size",
            "2",
        )
    )
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    for r in rows:
        assert STEP_KEYS <= r.keys(), STEP_KEYS - r.keys()
        for task in ("classification", "counting"):
            assert 0.0 <= r[f"acc/{task}"] <= 1.0 and 0.0 <= r[f"format/{task}"] <= 1.0
        assert {"reward/format", "reward/exact_match", "reward/count_accuracy"} <= r.keys()
        assert r["kl"] >= 0.0 and 0.0 <= r["clip_frac"] <= 1.0 and r["grad_norm"] >= 0.0
        assert all(v is None or isinstance(v, str) or torch.isfinite(torch.tensor(v)) for v in r.values())
    # the reference is the starting policy: KL is 0 in the first iteration, small after one lr 1e-4 step
    assert rows[0]["kl"] < 0.05
    assert result["last"]["step"] == 2

    rollouts = [json.loads(line) for line in (out / "rollouts.jsonl").read_text().splitlines()]
    assert len(rollouts) == 2 * 2 * 4  # steps x prompts x group
    assert {
        "step",
        "id",
        "task",
        "images",
        "frame",
        "question",
        "completion",
        "parsed",
        "rewards",
        "advantage",
        "length",
        "truncated",
    } <= rollouts[0].keys()
    first_group = [r["advantage"] for r in rollouts[:4]]
    assert sum(first_group) == pytest.approx(0.0, abs=1e-5)  # group-relative

    for ckpt in (out / "checkpoints" / "step-000001", out / "checkpoints" / "step-000002", out / "final"):
        assert (ckpt / "config.json").exists() and list(ckpt.glob("*.safetensors")), ckpt


def test_nan_loss_stops_with_clear_error_and_keeps_checkpoint(tiny_dir, synth_dir, tmp_path, monkeypatch):
    out = tmp_path / "run"
    saved: dict[str, str] = {}
    real_save, real_loss = model.save, grpo.policy_loss

    def recording_save(net, processor, out_dir, *a, **kw):
        path = real_save(net, processor, out_dir, *a, **kw)
        saved[str(path)] = _digest(Path(path))
        return path

    calls = {"n": 0}

    def nan_from_step_2(*a, **kw):  # 2 micro-batches a step: calls 1-2 are step 1
        calls["n"] += 1
        per_token, stats = real_loss(*a, **kw)
        return (per_token * float("nan") if calls["n"] > 2 else per_token), stats

    monkeypatch.setattr(model, "save", recording_save)
    monkeypatch.setattr(grpo, "policy_loss", nan_from_step_2)
    with pytest.raises(FloatingPointError, match=r"step 2: loss is not finite"):
        train_grpo.main(
            _argv(tiny_dir, synth_dir, out, "--max-steps", "3", "--save-every", "1", "--beta", "0")
        )

    ckpt = out / "checkpoints" / "step-000001"
    assert list(saved) == [str(ckpt)]  # nothing else was written
    assert _digest(ckpt) == saved[str(ckpt)]  # and the one on disk is byte-identical
    assert not (out / "checkpoints" / "step-000002").exists() and not (out / "final").exists()
    assert [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()] == [1]


def test_nan_reward_is_named(tiny_dir, synth_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(rewards, "score", lambda *a, **kw: {"format": 0.0, "total": float("nan")})
    with pytest.raises(FloatingPointError, match=r"step 1: rewards is not finite"):
        train_grpo.main(_argv(tiny_dir, synth_dir, tmp_path / "run", "--max-steps", "1", "--beta", "0"))


def test_freeze_vision_reuses_features_and_keeps_the_tower(tiny_dir, synth_dir, tmp_path):
    import safetensors.torch

    import data
    import model as M

    loaded = M.load(str(tiny_dir), device="cpu")
    recs = data.load_records(Path(synth_dir) / "test.jsonl")[:3]
    x = data.collate_prompts(recs, loaded.processor, loaded.frame_kind).inputs
    ro = M.sample(loaded.model, x, 2, 6, temperature=1.0, generator=torch.Generator().manual_seed(0))
    plain = M.token_logprobs(loaded.model, x, ro.completion_ids, ro.completion_mask, 2)
    with torch.no_grad():
        feats = M.encode_images(loaded.model, x)
    reused = M.token_logprobs(
        loaded.model, {**x, "image_features": feats}, ro.completion_ids, ro.completion_mask, 2
    )
    assert torch.equal(plain, reused)

    train_grpo.main(
        _argv(tiny_dir, synth_dir, tmp_path / "run", "--max-steps", "1", "--freeze-vision", "--beta", "0")
    )
    before = safetensors.torch.load_file(str(Path(tiny_dir) / "model.safetensors"))
    after = safetensors.torch.load_file(str(tmp_path / "run" / "final" / "model.safetensors"))
    vision = [k for k in before if ".visual." in k or k.startswith("visual.")]
    assert vision and all(torch.equal(before[k], after[k]) for k in vision)
    assert any(not torch.equal(before[k], after[k]) for k in before if k not in vision)


def test_compile_decode_trains_and_refuses_fsdp(tiny_dir, synth_dir, tmp_path):
    out, compiled_before = tmp_path / "run", len(kernels.COMPILED_STEPS)
    result = train_grpo.main(
        _argv(tiny_dir, synth_dir, out, "--max-steps", "2", "--compile-decode", "--beta", "0")
    )
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2] and all(r["completion_len_mean"] > 0 for r in rows)
    # it did decode compiled
    assert result["last"]["step"] == 2 and len(kernels.COMPILED_STEPS) > compiled_before


def test_compile_decode_refuses_fsdp_before_anything_starts(capsys, tmp_path):
    with pytest.raises(SystemExit):
        train_grpo.main(["--out", str(tmp_path / "r2"), "--compile-decode", "--cpu-offload"])
    assert "one process only" in capsys.readouterr().err and not (tmp_path / "r2").exists()


def test_a_raising_reward_added_to_the_table_warns_once_and_training_finishes(
    tiny_dir, synth_dir, tmp_path, monkeypatch
):
    def my_reward(completion, answer, frame=None):
        raise KeyError("meta field the author forgot")

    monkeypatch.setattr(rewards, "_warned", set())
    monkeypatch.setitem(rewards.TASK_REWARDS, "counting", [("count_accuracy", 0.5), (my_reward, 1.0)])
    with pytest.warns(RuntimeWarning, match="reward my_reward: raised KeyError") as caught:
        result = train_grpo.main(
            _argv(
                tiny_dir, synth_dir, tmp_path / "run", "--max-steps", "3", "--beta", "0", "--task", "counting"
            )
        )
    assert result["last"]["step"] == 3
    assert len([w for w in caught if "my_reward" in str(w.message)]) == 1
    assert result["last"]["reward/my_reward"] == 0.0


def test_logged_accuracy_ignores_the_weights(monkeypatch):
    monkeypatch.setitem(rewards.TASK_REWARDS, "counting", [("count_accuracy", 0.5)])
    scores = rewards.score_group("counting", ["<think>x</think><answer>5</answer>"] * 2, 5)
    row = train_grpo.reward_summary(scores, ["counting", "counting"])
    assert row["acc/counting"] == 1.0 and row["reward/total"] == 1.5 and row["reward/count_accuracy"] == 1.0


def test_no_reward_spread_is_reported_with_its_cause(tiny_dir, synth_dir, tmp_path, monkeypatch, capsys):
    # the random-weight tiny model never writes the format: every reward is 0, every advantage 0
    monkeypatch.setattr(train_grpo, "NO_SIGNAL_STEPS", 2)
    train_grpo.main(
        _argv(
            tiny_dir,
            synth_dir,
            tmp_path / "run",
            "--max-steps",
            "2",
            "--beta",
            "0",
            "--group-size",
            "2",
            "--max-new-tokens",
            "8",
        )
    )
    out = capsys.readouterr().out
    assert "2 steps in a row without reward spread" in out and "no completion is well-formed" in out


def test_ratio_level_sequence_trains_with_gspo_clip_range(tiny_dir, synth_dir, tmp_path, capsys):
    seq = train_grpo.parse_args(["--ratio-level", "sequence", "--num-iterations", "2"])
    assert (seq.clip_eps_low, seq.clip_eps_high) == grpo.CLIP_DEFAULTS["sequence"] == (3e-4, 4e-4)
    assert (train_grpo.parse_args([]).clip_eps_low, train_grpo.parse_args([]).clip_eps_high) == (0.2, 0.28)
    assert (
        train_grpo.parse_args(
            ["--ratio-level", "sequence", "--num-iterations", "2", "--clip-eps-low", "0.01"]
        ).clip_eps_low
        == 0.01
    )
    # on-policy the ratio is 1 at either level: a mistake, said before anything loads
    with pytest.raises(SystemExit):
        train_grpo.parse_args(["--ratio-level", "sequence"])
    assert "--num-iterations >= 2" in capsys.readouterr().err
    out = tmp_path / "run"
    result = train_grpo.main(
        _argv(
            tiny_dir,
            synth_dir,
            out,
            "--max-steps",
            "1",
            "--ratio-level",
            "sequence",
            "--num-iterations",
            "2",
            "--beta",
            "0",
            "--log-rollouts-every",
            "0",
        )
    )
    last = result["last"]
    assert (
        last["step"] == 1 and torch.isfinite(torch.tensor(last["loss"])) and 0.0 <= last["clip_frac"] <= 1.0
    )
    assert json.loads((out / "args.json").read_text())["clip_eps_low"] == 3e-4


def test_sgd_steps_by_lr_times_the_clipped_gradient_and_resumes_bitwise(
    tiny_dir, synth_dir, tmp_path, capsys, monkeypatch
):
    import safetensors.torch

    from geovlm.run import Run

    with pytest.raises(SystemExit):
        train_grpo.parse_args(["--optimizer", "sgd"])  # AdamW's default lr is 1000x too small for SGD
    assert "--optimizer sgd needs --lr" in capsys.readouterr().err

    lr, whole, broken = 1e-2, tmp_path / "whole", tmp_path / "broken"
    sgd = ("--max-steps", "2", "--beta", "0", "--optimizer", "sgd", "--lr", str(lr))
    train_grpo.main(_argv(tiny_dir, synth_dir, whole, *sgd))
    real_stop = Run.stop_requested
    monkeypatch.setattr(Run, "stop_requested", lambda self: True)  # Ctrl-C during step 1
    with pytest.raises(SystemExit):
        train_grpo.main(_argv(tiny_dir, synth_dir, broken, *sgd))
    monkeypatch.setattr(Run, "stop_requested", real_stop)

    # the first SGD step (momentum buffer = gradient) moves the weights by exactly lr x the clipped gradient;
    # AdamW's first step moves every weight with a gradient by ~lr, far more in norm
    load = safetensors.torch.load_file
    before = load(str(Path(tiny_dir) / "model.safetensors"))
    after = load(str(broken / "checkpoints" / "step-000001" / "model.safetensors"))
    moved = sum(float((after[k].double() - before[k].double()).pow(2).sum()) for k in before) ** 0.5
    grad_norm = json.loads((broken / "log.jsonl").read_text().splitlines()[0])["grad_norm"]
    assert grad_norm > 0
    assert moved == pytest.approx(lr * min(grad_norm, 1.0), rel=1e-3)

    # the momentum buffer is part of the checkpoint: step 2 after a resume is step 2 of the whole run
    train_grpo.main(_argv(tiny_dir, synth_dir, broken, *sgd, "--resume", "auto"))
    x, y = load(str(whole / "final" / "model.safetensors")), load(str(broken / "final" / "model.safetensors"))
    assert all(torch.equal(x[k], y[k]) for k in x)
