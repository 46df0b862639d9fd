"""LoRA (lora.py) in both trainers: the adapters start at the base model, switch off to it (GRPO's reference),
save in PEFT's layout (PEFT itself loads them) next to a merged checkpoint that from_pretrained and eval.py
load, and resume exactly."""

import json
from pathlib import Path

import grpo_launcher
import pytest
import torch
from safetensors.torch import load_file

import data
import model as M
import train_grpo
import train_sft
from embedded import defaults
from geovlm import lora
from geovlm.run import Run


def _logprobs(net, processor, synth_dir, ro=None):
    recs = data.load_records(Path(synth_dir) / "test.jsonl")[:2]
    x = data.collate_prompts(recs, processor, "pixels").inputs
    if ro is None:
        ro = M.sample(net, x, 2, 6, generator=torch.Generator().manual_seed(0), eos_ids=[])
    with torch.no_grad():
        return M.token_logprobs(net, x, ro.completion_ids, ro.completion_mask, 2), ro


def test_adapters_start_at_the_base_switch_off_to_it_and_merge(tiny_dir, synth_dir):
    loaded = M.load(str(tiny_dir), device="cpu", dtype=torch.float32)
    net, proc = loaded.model.eval(), loaded.processor
    base_lp, ro = _logprobs(net, proc, synth_dir)
    base_sd = {k: v.clone() for k, v in net.state_dict().items()}
    assert (
        lora.apply(net, rank=4, alpha=8, targets=("q_proj", "down_proj"))
        == 2 * net.config.text_config.num_hidden_layers
    )
    # vision, embeddings, head frozen
    assert all(".lora_" in n for n, p in net.named_parameters() if p.requires_grad)
    assert not any("visual" in name for name in lora.adapters(net))  # its MLP's down_proj is not adapted
    torch.testing.assert_close(_logprobs(net, proc, synth_dir, ro)[0], base_lp, rtol=0, atol=0)  # B = 0
    with torch.no_grad():
        for m in lora.adapters(net).values():
            m.lora_B.weight.normal_(std=0.05)
    adapted_lp = _logprobs(net, proc, synth_dir, ro)[0]
    assert (adapted_lp - base_lp).abs().max() > 1e-3
    with lora.disabled(net):  # the reference: the base model exactly
        torch.testing.assert_close(_logprobs(net, proc, synth_dir, ro)[0], base_lp, rtol=0, atol=0)
    merged, adapter = lora.merge(net.state_dict(), lora.adapters(net))
    assert merged.keys() == base_sd.keys()  # the base model's own names
    assert all(
        torch.equal(merged[k], base_sd[k])
        for k in base_sd
        if "q_proj.weight" not in k and "down_proj.weight" not in k
    )
    assert len(adapter) == 2 * len(lora.adapters(net)) and all(
        k.startswith("base_model.model.model.language_model.") for k in adapter
    )
    plain = M.load(str(tiny_dir), device="cpu", dtype=torch.float32).model.eval()
    plain.load_state_dict(merged)
    torch.testing.assert_close(_logprobs(plain, proc, synth_dir, ro)[0], adapted_lp, rtol=1e-5, atol=1e-5)


def test_flags_are_checked_before_anything_loads(capsys):
    for argv, message in (
        (["--lora-rank", "-1"], "must be >= 0"),
        (["--lora-alpha", "8"], "without --lora-rank"),
        (["--lora-rank", "4", "--lora-targets", "q_proj,qkv"], "expected a comma list"),
    ):
        for parse in (train_grpo.parse_args, train_sft.parse_args):
            with pytest.raises(SystemExit):
                parse(argv)
            err = capsys.readouterr().err
            assert message in err and len(err.strip().splitlines()) == 1, err
    args = train_grpo.parse_args(["--lora-rank", "8"])
    assert (args.lora_alpha, args.lora_targets, args.freeze_vision) == (16.0, lora.TARGETS, True)


def _fixed(synth_dir, tmp_path, monkeypatch):
    """Fixed completions with reward spread: the random tiny model alone never earns a reward, so no
    gradient."""
    import test_distributed

    table = test_distributed._fixed_completions(Path(synth_dir), tmp_path / "fixed.json")
    monkeypatch.setattr(train_grpo, "sample_group", grpo_launcher.fixed_sampler(table))


def test_grpo_lora_on_the_embedded_defaults_saves_peft_adapter_and_merged_model(
    tiny_dir, synth_dir, tmp_path, monkeypatch
):
    """`python train_grpo.py --lora-rank 8 --task vqa --max-steps 3`, with the embedded defaults standing for
    the session's tiny model and synthetic set (building the real ones takes minutes)."""
    monkeypatch.setattr(defaults, "sft_model", lambda: str(tiny_dir))
    monkeypatch.setattr(defaults, "data_dir", lambda cache=None: Path(synth_dir))
    _fixed(synth_dir, tmp_path, monkeypatch)
    loads = []
    real_load = M.load
    monkeypatch.setattr(M, "load", lambda *a, **k: loads.append(a[0]) or real_load(*a, **k))
    out = tmp_path / "run"
    result = train_grpo.main(
        [
            "--lora-rank",
            "8",
            "--task",
            "vqa",
            "--max-steps",
            "3",
            "--out",
            str(out),
            "--group-size",
            "4",
            "--prompts-per-step",
            "2",
            "--max-new-tokens",
            "16",
        ]
    )
    assert loads == [str(tiny_dir)]  # beta 0.04 > 0, and no reference model was loaded: adapters off instead
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines() if "eval" not in line]
    assert [r["step"] for r in rows] == [1, 2, 3] and rows[0]["kl"] == 0.0 and rows[-1]["kl"] > 0.0
    assert result["last"]["grad_norm"] > 0

    final = out / "final"
    config = json.loads((final / "adapter" / "adapter_config.json").read_text())
    assert (config["peft_type"], config["r"], config["lora_alpha"], config["base_model_name_or_path"]) == (
        "LORA",
        8,
        16.0,
        str(tiny_dir),
    )
    adapter = load_file(final / "adapter" / "adapter_model.safetensors")
    layers = json.loads((final / "config.json").read_text())["text_config"]["num_hidden_layers"]
    assert len(adapter) == 2 * 7 * layers and all(
        k.startswith("base_model.model.model.language_model.layers.")
        and k.endswith((".lora_A.weight", ".lora_B.weight"))
        for k in adapter
    )
    # the merged model: the base model's keys (as HF writes them on disk); only the decoder's projections
    # moved
    base, merged = load_file(Path(tiny_dir) / "model.safetensors"), load_file(final / "model.safetensors")
    assert base.keys() == merged.keys()
    moved = {k for k in base if not torch.equal(base[k], merged[k])}
    assert len(moved) == 7 * layers and all(
        "visual" not in k and ".layers." in k and k.endswith("_proj.weight") for k in moved
    ), moved

    # PEFT reads the adapter onto the base model and computes what the merged checkpoint computes
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText, AutoProcessor

    proc = AutoProcessor.from_pretrained(final)
    merged_net, info = AutoModelForImageTextToText.from_pretrained(final, output_loading_info=True)
    assert not any(info.values()), info
    lp_merged, ro = _logprobs(merged_net.eval(), proc, synth_dir)
    peft_net = PeftModel.from_pretrained(
        AutoModelForImageTextToText.from_pretrained(tiny_dir), final / "adapter"
    ).eval()
    lp_peft, _ = _logprobs(peft_net.base_model.model, proc, synth_dir, ro)
    lp_base, _ = _logprobs(AutoModelForImageTextToText.from_pretrained(tiny_dir).eval(), proc, synth_dir, ro)
    assert (lp_merged - lp_base).abs().max() > 1e-5  # it trained
    torch.testing.assert_close(lp_peft, lp_merged, rtol=1e-5, atol=1e-5)

    import eval as eval_lib

    assert (
        eval_lib.main(
            [
                "--model",
                str(final),
                "--data",
                str(Path(synth_dir) / "test.jsonl"),
                "--limit",
                "4",
                "--max-new-tokens",
                "8",
                "--out",
                str(tmp_path / "eval"),
                "--no-caption-extras",
            ]
        )
        == 0
    )
    assert (tmp_path / "eval" / "metrics.json").exists()


def _grpo_argv(tiny_dir, synth_dir, out, *extra):
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
        "16",
        "--lr",
        "1e-3",
        "--lora-rank",
        "4",
        "--log-rollouts-every",
        "0",
        *extra,
    ]


def test_grpo_lora_stopped_then_resumed_equals_uninterrupted(tiny_dir, synth_dir, tmp_path, monkeypatch):
    _fixed(synth_dir, tmp_path, monkeypatch)
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    train_grpo.main(_grpo_argv(tiny_dir, synth_dir, whole, "--max-steps", "3"))
    real_stop = Run.stop_requested
    monkeypatch.setattr(Run, "stop_requested", lambda self: True)  # Ctrl-C during step 1
    with pytest.raises(SystemExit) as e:
        train_grpo.main(_grpo_argv(tiny_dir, synth_dir, broken, "--max-steps", "3"))
    assert e.value.code == 130 and (broken / "checkpoints" / "step-000001" / "adapter").is_dir()
    monkeypatch.setattr(Run, "stop_requested", real_stop)
    train_grpo.main(_grpo_argv(tiny_dir, synth_dir, broken, "--max-steps", "3", "--resume", "auto"))
    a = [json.loads(x) for x in (whole / "log.jsonl").read_text().splitlines()]
    b = [json.loads(x) for x in (broken / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in b] == [1, 2, 3]
    for ra, rb in zip(a, b):
        assert {k: ra[k] for k in ("prompt_ids", "loss", "kl", "grad_norm")} == {
            k: rb[k] for k in ("prompt_ids", "loss", "kl", "grad_norm")
        }
    for name in ("adapter/adapter_model.safetensors", "model.safetensors"):
        x, y = load_file(whole / "final" / name), load_file(broken / "final" / name)
        assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x), name
    with pytest.raises(SystemExit, match="resume with the same --lora-rank"):  # a LoRA checkpoint, a full run
        full = _grpo_argv(tiny_dir, synth_dir, broken, "--max-steps", "4", "--resume", "auto")
        i = full.index("--lora-rank")
        train_grpo.main(full[:i] + full[i + 2 :])


def test_sft_lora_trains_only_the_adapters(tiny_dir, synth_dir, tmp_path):
    out = tmp_path / "sft"
    train_sft.main(
        [
            "--model",
            str(tiny_dir),
            "--data",
            str(Path(synth_dir) / "train.jsonl"),
            "--out",
            str(out),
            "--max-steps",
            "2",
            "--batch-size",
            "2",
            "--eval-records",
            "0",
            "--lora-rank",
            "4",
            "--lora-targets",
            "q_proj,v_proj",
            "--lr",
            "1e-2",
        ]
    )
    base, merged = (
        load_file(Path(tiny_dir) / "model.safetensors"),
        load_file(out / "final" / "model.safetensors"),
    )
    moved = {k for k in base if not torch.equal(base[k], merged[k])}
    assert moved == {k for k in base if "visual" not in k and k.endswith(("q_proj.weight", "v_proj.weight"))}
    assert len(load_file(out / "final" / "adapter" / "adapter_model.safetensors")) == 2 * len(moved)
