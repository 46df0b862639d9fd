"""bench.py end to end at its smallest: the rollout and log-prob rows, and the GPU check's code at a tiny
shape on the CPU. Checks that the table and the JSON carry every row with positive numbers; timings are never
asserted."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def run_bench(*args: str, timeout: int = 1200) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(ROOT / "tools" / "bench.py"), *args]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_quick_rows_and_tiny_gpu_path(tmp_path):
    out = tmp_path / "bench.json"
    res = run_bench(
        "--quick",
        "--rows",
        "rollout,logprobs,gpu",
        "--gpu-shape",
        "tiny",
        "--device",
        "cpu",
        "--out",
        str(out),
    )
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    result = json.loads(out.read_text())
    rows = result["rows"]
    names = [r["row"] for r in rows]
    for name in ("rollout tokens/s", "log-prob peak GB", "gpu: update tokens/s", "gpu: rollout tokens/s"):
        assert name in names, names
    for r in rows:
        assert r["ours"]["median"] > 0 and r["ours"]["min"] > 0, r
        if r["baseline"] is not None:
            assert r["baseline"]["median"] > 0 and r["ratio"]["median"] > 0, r
    rollout = next(r for r in rows if r["row"] == "rollout tokens/s")
    assert rollout["ours"]["n"] == rollout["baseline"]["n"] == 2  # --quick: 2 alternated repetitions a side
    assert rollout["target"] == ">= 1.5x" and isinstance(rollout["met"], bool)
    gpu = [r for r in rows if r["row"].startswith("gpu:")]
    assert all(r["device"] for r in gpu) and any("scaled_dot_product" in r.get("attention", "") for r in gpu)
    # the table: printed, in the JSON, and as markdown next to it; the header names machine and versions
    table = result["table"]
    assert out.with_suffix(".md").read_text() == table and table in res.stdout
    assert sum(line.startswith("| ") for line in table.splitlines()) == len(rows) + 1  # + the column header
    for key in ("cpu", "cores", "torch_threads", "python", "torch", "transformers"):
        assert result["meta"]["machine"][key], key
    assert torch.__version__ in table and result["meta"]["date"] in table


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message a CPU-only machine gives")
def test_gpu_flag_needs_cuda(tmp_path):
    res = run_bench("--gpu", "--out", str(tmp_path / "b.json"), timeout=120)
    assert res.returncode != 0 and "needs CUDA" in res.stderr
    assert not (tmp_path / "b.json").exists()


def test_3b_shape_is_qwen25_vl_3b(tiny):
    import bench

    model = bench.gpu_model("3b", tiny.processor, torch.device("meta"), "sdpa")  # no memory, no weights
    counts = bench.param_counts(model)
    assert counts["total"] == 3_754_622_976  # Qwen/Qwen2.5-VL-3B-Instruct's parameter count
    assert model.lm_head.weight is model.get_input_embeddings().weight  # tied, as in the real checkpoint


def test_train_flops_count_the_shared_prompt_once(tiny):
    import bench

    model = bench.gpu_model("3b", tiny.processor, torch.device("meta"), "sdpa")
    c, tc = bench.param_counts(model), model.config.text_config
    B, P, T = 2, 1000, 100
    x = {"input_ids": torch.zeros(B, P, dtype=torch.long)}  # text only: no vision term
    f = lambda g: bench.train_flops(model, x, g, T)  # noqa: E731
    # one completion per prompt is a plain causal pass over P + T tokens: 3 x (linear + attention)
    plain = (
        2 * c["decoder"] * B * (P + T)
        + 2 * c["lm_head"] * B * T
        + 2 * tc.num_hidden_layers * tc.hidden_size * B * (P + T) ** 2
    )
    assert f(1) == pytest.approx(3 * plain)
    assert f(3) - f(2) == pytest.approx(f(2) - f(1))  # each completion adds the same work...
    assert f(8) < 0.3 * 8 * f(1)  # ...and the 1000-token prompt is counted once, not 8 times
