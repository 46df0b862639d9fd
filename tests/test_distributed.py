"""Several processes (torchrun, gloo on the CPU, 2 ranks): FSDP2 training takes the same step as one
process with the same global batch, a SIGKILLed run resumes exactly, checkpoints load with from_pretrained."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import grpo_launcher
import pytest
import torch
from safetensors.torch import load_file

import data
import model as M
import train_grpo
import train_sft
from geovlm.checkpoints import find_checkpoint, prune_checkpoints
from geovlm.logs import truncate_log
from geovlm.schedule import Stream, rank_slice

ROOT = Path(__file__).resolve().parents[1]
LAUNCHER = str(Path(grpo_launcher.__file__).relative_to(ROOT))  # test hooks: fixed completions, a SIGKILL
TIMEOUT = (
    240  # seconds for one torchrun; a hang (a collective one rank never joins) fails instead of blocking
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _env(**extra) -> dict:
    return {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        **extra,
    }


def _torchrun(script: str, *args: str, env: dict | None = None, **popen) -> subprocess.Popen:
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        f"--master_port={_free_port()}",
        script,
        *args,
    ]
    return subprocess.Popen(
        cmd, cwd=ROOT, env=env or _env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen
    )


def _run2(script: str, *args: str, env: dict | None = None) -> str:
    proc = _torchrun(script, *args, env=env)
    try:
        out, _ = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        pytest.fail(f"torchrun {script} hung:\n{out[-3000:]}")
    assert proc.returncode == 0, out[-4000:]
    return out


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _max_diff(a: Path, b: Path) -> float:
    x, y = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert x.keys() == y.keys()
    return max((x[k] - y[k]).abs().max().item() for k in x)


# ----------------------------------------------------------------------------- 1 process == 2 processes


def test_sft_two_processes_equal_one(tiny_dir, synth_dir, tmp_path):
    common = [
        "--model",
        str(tiny_dir),
        "--data",
        str(synth_dir / "train.jsonl"),
        "--max-steps",
        "2",
        "--lr",
        "1e-4",
        "--warmup-steps",
        "0",
        "--eval-records",
        "4",
        "--eval-every",
        "1",
    ]
    train_sft.main([*common, "--out", str(tmp_path / "one"), "--batch-size", "4"])
    _run2("train_sft.py", *common, "--out", str(tmp_path / "two"), "--batch-size", "2")
    one, two = _rows(tmp_path / "one" / "log.jsonl"), _rows(tmp_path / "two" / "log.jsonl")
    for a, b in zip(one, two):
        for k in ("loss", "eval_loss", "grad_norm"):
            if k in a:
                assert b[k] == pytest.approx(a[k], rel=1e-5), (a["step"], k)
    diff = _max_diff(tmp_path / "one" / "final", tmp_path / "two" / "final")
    moved = _max_diff(tmp_path / "one" / "final", Path(tiny_dir))
    print(f"SFT 1 vs 2 processes: max |param diff| {diff:.2e} (parameters moved up to {moved:.2e})")
    # Adam divides by sqrt(v): on weights whose gradient is near 0, round-off in the gradient sum (another
    # order over ranks) moves the update by a fraction of lr; 0.1 lr bounds it (seen: ~1e-6 here)
    assert moved > 1e-5 and diff < 1e-5


def _fixed_completions(synth_dir: Path, path: Path) -> str:
    """Varied rewards per group: a right answer, a wrong one, no format, a half-formatted right one."""
    table = {
        r.id: [
            f"<think>it is {r.answer}</think><answer>{r.answer}</answer>",
            "<think>unsure</think><answer>zzz</answer>",
            "no idea at all",
            f"<answer>{r.answer}</answer> maybe",
        ]
        for r in data.load_records(synth_dir / "train.jsonl")
    }
    path.write_text(json.dumps(table))
    return str(path)


@pytest.mark.parametrize("lora", [[], ["--lora-rank", "4", "--lr", "1e-3"]], ids=["full", "lora"])
def test_grpo_two_processes_equal_one(tiny_dir, synth_dir, tmp_path, monkeypatch, lora):
    """Full fine-tuning, and LoRA (adapters sharded with their decoder layer beside frozen weights, the KL
    reference computed with the adapters off): the same step on 2 processes as on 1."""
    fixed = _fixed_completions(synth_dir, tmp_path / "fixed.json")
    monkeypatch.setattr(train_grpo, "sample_group", grpo_launcher.fixed_sampler(fixed))
    common = [
        "--model",
        str(tiny_dir),
        "--data",
        str(synth_dir / "train.jsonl"),
        "--task",
        "classification,counting",
        "--group-size",
        "4",
        "--max-new-tokens",
        "16",
        "--max-steps",
        "2",
        "--lr",
        "1e-4",
        "--num-iterations",
        "2",
        "--micro-batch-size",
        "2",
        "--log-rollouts-every",
        "0",
        *lora,
    ]
    train_grpo.main([*common, "--out", str(tmp_path / "one"), "--prompts-per-step", "4"])
    _run2(
        LAUNCHER,
        "--fixed-completions",
        fixed,
        "--",
        *common,
        "--out",
        str(tmp_path / "two"),
        "--prompts-per-step",
        "2",
    )
    one, two = _rows(tmp_path / "one" / "log.jsonl"), _rows(tmp_path / "two" / "log.jsonl")
    assert [r["step"] for r in one] == [r["step"] for r in two] == [1, 2]
    for a, b in zip(one, two):
        assert a["prompt_ids"] == b["prompt_ids"]  # the same global batch, split between the ranks
        assert b["reward_mean"] == a["reward_mean"] and b["reward_std"] == pytest.approx(a["reward_std"])
        for k in ("loss", "kl", "clip_frac", "grad_norm", "entropy"):
            assert b[k] == pytest.approx(a[k], rel=1e-4, abs=1e-7), (a["step"], k)
    diff = _max_diff(tmp_path / "one" / "final", tmp_path / "two" / "final")
    moved = _max_diff(tmp_path / "one" / "final", Path(tiny_dir))
    print(
        f"GRPO 1 vs 2 processes{' (LoRA)' if lora else ''}: max |param diff| {diff:.2e} (parameters moved up "
        f"to {moved:.2e})"
    )
    assert moved > 1e-5 and diff < 1e-5  # as above (seen: ~6e-8)
    if lora:  # the adapters themselves, as PEFT reads them
        x, y = (
            load_file(tmp_path / run / "final" / "adapter" / "adapter_model.safetensors")
            for run in ("one", "two")
        )
        assert x.keys() == y.keys() and max((x[k] - y[k]).abs().max().item() for k in x) < 1e-5


# ----------------------------------------------------------------------------- kill and resume

STEP_FIELDS = (
    "step",
    "prompt_ids",
    "reward_mean",
    "reward_std",
    "loss",
    "kl",
    "clip_frac",
    "grad_norm",
    "entropy",
    "completion_len_mean",
)


@pytest.mark.slow
def test_sigkill_then_resume_equals_uninterrupted(tiny_dir, synth_dir, tmp_path):
    """Real sampling (each rank its own generator), beta > 0. Both ranks are SIGKILLed in step 3 (of 3), after
    the step-2 checkpoint; --resume auto passes over a torn checkpoint; losses, prompts, weights equal
    bitwise."""
    args = [
        "--model",
        str(tiny_dir),
        "--data",
        str(synth_dir / "train.jsonl"),
        "--task",
        "classification,counting",
        "--group-size",
        "2",
        "--prompts-per-step",
        "2",
        "--max-new-tokens",
        "8",
        "--max-steps",
        "3",
        "--save-every",
        "2",
        "--lr",
        "1e-3",
        "--log-rollouts-every",
        "0",
    ]
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    proc = _torchrun(LAUNCHER, "--sigkill-at-step", "3", "--", *args, "--out", str(broken))
    _run2("train_grpo.py", *args, "--out", str(whole))  # the uninterrupted run, meanwhile
    out, _ = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode != 0 and "SIGKILL" in out, out[-3000:]
    assert [p.name for p in (broken / "checkpoints").iterdir()] == ["step-000002"] and not (
        broken / "final"
    ).exists()
    assert [r["step"] for r in _rows(broken / "log.jsonl")] == [1, 2, 3]  # step 3 was logged, then lost
    # what a crash while writing a checkpoint leaves: a temporary directory, here claiming a newer step
    torn = broken / "checkpoints" / ".step-000003.tmp-crashed"
    (torn / "resume").mkdir(parents=True)
    (torn / "config.json").write_text("{")
    (torn / "resume" / "state.json").write_text(json.dumps({"step": 3, "world": 2}))

    out = _run2("train_grpo.py", *args, "--out", str(broken), "--resume", "auto")
    assert "step-000002 at step 2" in out, out[-2000:]

    a, b = _rows(whole / "log.jsonl"), _rows(broken / "log.jsonl")
    assert [r["step"] for r in b] == [1, 2, 3]  # the lost step-3 row was dropped and redone
    for ra, rb in zip(a, b):
        # bitwise: floats compare equal
        assert {k: ra[k] for k in STEP_FIELDS} == {k: rb[k] for k in STEP_FIELDS}
    ids = [i for r in b for i in r["prompt_ids"].split(",")]
    # every prompt once: none repeated, none skipped
    assert len(ids) == 3 * 2 * 2 and len(set(ids)) == len(ids)
    for name in ("final", "checkpoints/step-000002"):
        x, y = load_file(whole / name / "model.safetensors"), load_file(broken / name / "model.safetensors")
        assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x), name
    assert not torn.exists()  # cleaned up by the next successful save


# --------------------------------------------------------------------------- the pieces, in one 2-rank worker

WORKER = r"""
import json, sys
import torch, torch.distributed as dist
sys.path.insert(0, sys.argv[1])
import data, model as M
from geovlm import fsdp
from geovlm.checkpoints import save_checkpoint
from geovlm.distributed import all_gather_list, init_distributed

tiny, synth, out = sys.argv[2], sys.argv[3], sys.argv[4]
env = init_distributed()
loaded = M.load(tiny, device="cpu", dtype=torch.float32)
plain = M.load(tiny, device="cpu", dtype=torch.float32).model
net = fsdp.wrap_fsdp(loaded.model)
recs = data.load_records(synth + "/test.jsonl")[:2]
x = data.collate_prompts(recs, loaded.processor, loaded.frame_kind).inputs
banned = M.banned_token_ids(fsdp.unwrap(net), loaded.processor)

# 1. a rollout gathers the parameters once, however long it runs; rank 0 stops after 2 tokens, rank 1 after 9
import torch.distributed.fsdp._fully_shard._fsdp_param_group as pg
gathers = {"n": 0}
real = pg.foreach_all_gather  # one call = one FSDP unit's all-gather
def counting(*a, **k):
    gathers["n"] += 1
    return real(*a, **k)
pg.foreach_all_gather = counting
T = 2 + 7 * env.rank
with fsdp.gathered(net):
    ro = fsdp.call(
        net, M.sample, x, 2, T, generator=torch.Generator().manual_seed(0), eos_ids=[], banned=banned,
        check_every=1,
    )
pg.foreach_all_gather = real
ref = M.sample(
    plain, x, 2, T, generator=torch.Generator().manual_seed(0), eos_ids=[], banned=banned, check_every=1
)
assert ro.completion_ids.shape[1] == T and torch.equal(ro.completion_ids, ref.completion_ids)
assert torch.allclose(ro.logprobs, ref.logprobs, atol=1e-5)
units = len(fsdp._fsdp_children(net)) + 1
counts = all_gather_list([gathers["n"]])
assert counts == [units, units], (counts, units)

# 2. one step under FSDP, then log-probs of the trained model and a checkpoint
ro = M.sample(plain, x, 2, 6, generator=torch.Generator().manual_seed(1), banned=banned)
opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
lp = fsdp.call(net, M.token_logprobs, x, ro.completion_ids, ro.completion_mask, 2, 1.0, banned)
(-(lp.sum()) / ro.completion_mask.sum() * env.world).backward()
opt.step()
with torch.no_grad():
    lp = fsdp.call(net, M.token_logprobs, x, ro.completion_ids, ro.completion_mask, 2, 1.0, banned)
save_checkpoint(
    out + "/ckpt", net, loaded.processor, opt, env, state={"step": 1}, rank_state={"rank": env.rank}
)
if env.main:
    torch.save({"ids": ro.completion_ids, "mask": ro.completion_mask, "lp": lp}, out + "/trained.pt")
dist.destroy_process_group()
"""


def test_fsdp_rollout_gathers_once_and_checkpoint_loads_with_from_pretrained(tiny_dir, synth_dir, tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    _run2(str(script), str(ROOT), str(tiny_dir), str(synth_dir), str(tmp_path))

    from transformers import AutoModelForImageTextToText, AutoProcessor

    ckpt = tmp_path / "ckpt"
    assert sorted(p.name for p in (ckpt / "resume").iterdir()) == [
        "optimizer",
        "rank-00000.pt",
        "rank-00001.pt",
        "state.json",
    ]
    model, info = AutoModelForImageTextToText.from_pretrained(ckpt, output_loading_info=True)
    assert not any(info.values()), info  # no missing / unexpected / mismatched weights
    processor = AutoProcessor.from_pretrained(ckpt)
    saved = torch.load(tmp_path / "trained.pt")
    recs = data.load_records(synth_dir / "test.jsonl")[:2]
    x = data.collate_prompts(recs, processor, "pixels").inputs
    with torch.no_grad():
        lp = M.token_logprobs(
            model.eval(), x, saved["ids"], saved["mask"], 2, 1.0, M.banned_token_ids(model, processor)
        )
    diff = (lp - saved["lp"]).abs().max().item()
    print(
        f"log-probs, FSDP-trained model vs its checkpoint loaded with from_pretrained: max |diff| {diff:.1e}"
    )
    assert diff < 1e-5
    # it did train
    assert (
        lp
        - M.token_logprobs(
            M.load(str(tiny_dir), device="cpu").model,
            x,
            saved["ids"],
            saved["mask"],
            2,
            1.0,
            M.banned_token_ids(model, processor),
        )
    ).abs().max() > 1e-4


# ----------------------------------------------------------------------------- the plumbing, in one process


def test_stream_position_is_the_whole_state():
    a = Stream(5, seed=3, name="counting")
    first = a.take(7)  # crosses an epoch
    assert sorted(first[:5]) == list(range(5)) and a.state_dict()["epoch"] == 1
    b = Stream(5, seed=3, name="counting")
    b.load_state_dict(json.loads(json.dumps(a.state_dict())))
    assert b.take(9) == a.take(9)
    assert rank_slice(list("abcdef"), [2, 4], 1) == list("cdef")
    with pytest.raises(SystemExit, match="not the same data"):
        Stream(6, seed=3, name="counting").load_state_dict(a.state_dict())


def test_find_and_prune_checkpoints(tmp_path):
    ckpts = tmp_path / "checkpoints"
    for step in (1, 2, 3):
        (ckpts / f"step-{step:06d}" / "resume").mkdir(parents=True)
        (ckpts / f"step-{step:06d}" / "resume" / "state.json").write_text(
            json.dumps({"step": step, "world": 1})
        )
    (ckpts / ".step-000004.tmp-x" / "resume").mkdir(parents=True)  # torn: a crash while saving
    (ckpts / ".step-000004.tmp-x" / "resume" / "state.json").write_text(json.dumps({"step": 4, "world": 1}))
    (ckpts / "step-000005").mkdir()  # not a checkpoint of ours (no resume state)
    assert find_checkpoint(tmp_path, "auto") == ckpts / "step-000003"
    assert find_checkpoint(tmp_path / "nothing", "auto") is None
    with pytest.raises(SystemExit, match="not a complete checkpoint"):
        find_checkpoint(tmp_path, str(ckpts / ".step-000004.tmp-x"))
    prune_checkpoints(ckpts, keep=2)  # --keep 2: the two newest complete ones; leftovers of crashes go
    assert sorted(p.name for p in ckpts.iterdir()) == ["step-000002", "step-000003", "step-000005"]


def test_truncate_log(tmp_path):
    log = tmp_path / "log.jsonl"
    log.write_text(
        "".join(
            json.dumps(r) + "\n" for r in [{"step": 0, "eval": {}}, {"step": 1}, {"step": 2}, {"step": 3}]
        )
    )
    truncate_log(log, 2)
    assert [json.loads(x)["step"] for x in log.read_text().splitlines()] == [0, 1, 2]
