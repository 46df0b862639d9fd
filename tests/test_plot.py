"""plot.py: PNG curves from GRPO and SFT logs (odd and partial logs included) and TensorBoard events read
back."""

from __future__ import annotations

import json
import math
import struct
import sys
from pathlib import Path

import pytest
from matplotlib.figure import Figure
from PIL import Image

from geovlm import plot

ROOT = Path(__file__).resolve().parents[1]

# rows as train_grpo.py writes them (step rows, then {"step", "eval"} rows), trimmed from a real run
GRPO_ROW = {
    "step": 1,
    "tasks": "classification,detection,grounding",
    "prompt_ids": "synth_000931,synth_000537",
    "reward_mean": 0.5,
    "reward_std": 0.2,
    "reward/exact_match": 0.5,
    "reward/format": 0.25,
    "reward/total": 0.75,
    "acc/classification": 0.5,
    "format/classification": 0.25,
    "loss": 0.01,
    "kl": None,
    "clip_frac": 0.0,
    "entropy": 6.9,
    "completion_len_mean": 16.0,
    "completion_len_max": 16.0,
    "truncated_frac": 1.0,
    "zero_std_frac": 1.0,
    "rollouts": 1,
    "grad_norm": 0.3,
    "lr": 0.0001,
    "rollout_s": 0.55,
    "reward_s": 1.2,
    "logprob_s": 0.18,
    "update_s": 0.62,
    "step_s": 2.56,
    "tokens_per_s": 117.0,
}
EVAL_ROW = {
    "step": 0,
    "eval": {
        "classification": {"n": 1, "format": 0.0, "parsed": 1.0, "accuracy": 0.0},
        "detection": {"n": 1, "format": 0.0, "f1@0.5": 0.0, "ap@0.5": 0.0},
    },
}
SFT_ROWS = [
    {"step": 0, "eval_loss": 6.99},
    *(
        {"step": s, "loss": 7.0 / s, "lr": 1e-4 * s, "grad_norm": 4.0, "tokens_per_s": 180.0, "seconds": 2.3}
        for s in range(1, 6)
    ),
    {"step": 5, "eval_loss": 1.5},
]


def grpo_log(steps: int = 60) -> list[dict]:
    rows = [EVAL_ROW]
    tasks = ["classification", "detection", "grounding"]
    for s in range(1, steps + 1):
        row = {k: v for k, v in GRPO_ROW.items() if not k.startswith(("acc/", "format/"))}
        task = tasks[s % 3]  # one task a step: per-task series are sparse
        row.update(
            {
                "step": s,
                "reward_mean": math.sin(s / 5),
                f"acc/{task}": s / steps,
                f"format/{task}": 1.0,
                "my_metric": s,
                "custom/a": 1.0,
                "custom/b": 2.0,
                "flag": True,
                "note": "text",
            }
        )
        rows.append(row)
        if s % 20 == 0:
            rows.append({"step": s, "eval": EVAL_ROW["eval"]})
    return rows


def write_log(run: Path, rows: list[dict], tail: str = "") -> Path:
    run.mkdir(parents=True, exist_ok=True)
    (run / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + tail)
    return run


def test_grpo_log_draws_every_group(tmp_path, capsys):
    run = write_log(tmp_path / "grpo", grpo_log(), tail='{"step": 61, "loss": 0.')  # torn by a crash
    files = plot.plot_run(run)
    assert [f.name for f in files] == [
        "rewards.png",
        "training.png",
        "lengths.png",
        "eval.png",
        "timing.png",
        "other.png",
    ]
    for f in files:
        assert f.parent == run / "plots"
        with Image.open(f) as im:
            assert im.format == "PNG" and im.width > 400 and im.height > 300
    assert f"plots: {run / 'plots'}/" in capsys.readouterr().out
    groups = plot.panels(plot.series(plot.read_log(run / "log.jsonl")))
    assert groups["rewards"]["accuracy reward per task"] == [
        "acc/classification",
        "acc/detection",
        "acc/grounding",
    ]
    assert "reward_std" not in str(groups)  # a band around reward_mean, not a line of its own
    assert set(groups["eval"]) == {"classification", "detection"}
    assert "eval/classification/n" not in groups["eval"]["classification"]
    # unknown keys too
    assert groups["other"] == {"custom": ["custom/a", "custom/b"], "my_metric": ["my_metric"]}
    assert not any("KL" in t for t in groups["training"])  # kl is null throughout (β = 0): no panel


def test_sft_log(tmp_path):
    run = write_log(tmp_path / "sft", SFT_ROWS)
    assert [f.name for f in plot.plot_run(run)] == ["training.png", "timing.png"]
    groups = plot.panels(plot.series(SFT_ROWS))
    assert groups["training"] == {
        "loss": ["loss", "eval_loss"],
        "learning rate": ["lr"],
        "grad norm": ["grad_norm"],
    }
    assert plot.series(SFT_ROWS)["eval_loss"] == ([0.0, 5.0], [6.99, 1.5])


def test_a_missing_key_skips_only_its_panel(tmp_path):
    run = write_log(tmp_path / "r", [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.0, "entropy": None}])
    (f,) = plot.plot_run(run, quiet=True)
    assert f.name == "training.png"
    assert plot.panels(plot.series(plot.read_log(f.parent.parent / "log.jsonl"))) == {
        "training": {"loss": ["loss"]}
    }


def test_odd_logs_never_raise(tmp_path, capsys):
    assert plot.plot_run(tmp_path / "missing") == []
    assert "no such file" in capsys.readouterr().out
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "log.jsonl").write_text("")
    assert plot.plot_run(tmp_path / "empty") == []
    junk = [
        "not json",
        "[1, 2]",
        '{"step": "x", "loss": "nan"}',
        '{"step": 1, "loss": NaN, "kl": Infinity}',
        '{"step": null, "eval": {"vqa": 3}}',
        '{"loss": 1e400}',
    ]
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "log.jsonl").write_text("\n".join(junk))
    files = plot.plot_run(tmp_path / "junk" / "log.jsonl")  # a log file works as well as its folder
    assert [f.name for f in files] == ["eval.png"]  # the one finite number, at its row index (no step)
    assert plot.series(plot.read_log(tmp_path / "junk" / "log.jsonl")) == {"eval/vqa": ([2.0], [3.0])}


def test_without_matplotlib_a_run_is_told_once(tmp_path, monkeypatch, capsys):
    """matplotlib is imported when drawing: its absence costs the curves (one line), not the run."""
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # what `import matplotlib` meets when it is missing
    rows = [{"step": s, "loss": 1 / s} for s in (1, 2)]
    (tmp_path / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert plot.plot_run(tmp_path) == []
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and "matplotlib" in out[0], out
    assert not (tmp_path / "plots").exists()


def test_resumed_steps_keep_the_last_value_and_the_cli(tmp_path):
    rows = [
        {"step": 1, "loss": 3.0},
        {"step": 2, "loss": 2.0},
        {"step": 2, "loss": 1.5},
        {"step": 3, "loss": 1.0},
    ]
    assert plot.series(rows)["loss"] == ([1.0, 2.0, 3.0], [3.0, 1.5, 1.0])
    run = write_log(tmp_path / "run", rows)
    assert plot.main([str(run), "--out", str(tmp_path / "pics")]) == 0
    assert (tmp_path / "pics" / "training.png").exists()
    assert plot.main([str(tmp_path / "nothing")]) == 1
    # a folder of runs (what demo.py writes: sft/, grpo/, eval-*/) plots each run in it
    write_log(tmp_path / "demo" / "sft", SFT_ROWS)
    write_log(tmp_path / "demo" / "grpo", grpo_log(3))
    (tmp_path / "demo" / "eval-sft").mkdir()
    assert plot.main([str(tmp_path / "demo")]) == 0
    assert (tmp_path / "demo" / "sft" / "plots" / "training.png").exists()
    assert (tmp_path / "demo" / "grpo" / "plots" / "rewards.png").exists()


def test_a_folder_of_dated_demo_runs_plots_every_nested_run(tmp_path, capsys):
    # what tools/demo.py writes: runs/demo/<date-time>/{sft,grpo} (and eval-* folders without logs)
    demo = tmp_path / "demo"
    for stamp in ("20261205-010203", "20261205-020304"):
        write_log(demo / stamp / "sft", SFT_ROWS)
        write_log(demo / stamp / "grpo", grpo_log(3))
        (demo / stamp / "eval-sft").mkdir()
    assert plot.main([str(demo)]) == 0
    for stamp in ("20261205-010203", "20261205-020304"):
        assert (demo / stamp / "sft" / "plots" / "training.png").exists()
        assert (demo / stamp / "grpo" / "plots" / "rewards.png").exists()
    assert f"{demo}: 4 runs" in capsys.readouterr().out
    (tmp_path / "empty" / "a").mkdir(parents=True)
    assert plot.main([str(tmp_path / "empty")]) == 1
    assert "no log.jsonl" in capsys.readouterr().out


def test_step_axes_have_whole_steps_only():
    fig = Figure()
    ax = fig.subplots()
    data = plot.series([{"step": s, "loss": 1 / s} for s in (1, 2, 3)])  # matplotlib alone ticks 1.25, 1.5...
    plot._draw_panel(ax, "loss", ["loss"], data, 3)
    ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
    assert ticks and all(float(t).is_integer() for t in ticks), ticks


# ----------------------------------------------------------------------------- TensorBoard
def _crc32c(data: bytes) -> int:  # written here, not taken from the writer: the test checks the framing
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 & -(crc & 1))
    return crc ^ 0xFFFFFFFF


def _masked(data: bytes) -> int:
    crc = _crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def read_events(folder: Path) -> list:
    """Every Event of every event file in the folder: TFRecord framing (length, CRCs) checked, protobuf
    decoded."""
    from tensorboardX.proto import event_pb2

    events = []
    for path in sorted(folder.glob("events.out.tfevents.*")):
        data, pos = path.read_bytes(), 0
        while pos < len(data):
            header = data[pos : pos + 8]
            (n,) = struct.unpack("<Q", header)
            assert struct.unpack("<I", data[pos + 8 : pos + 12])[0] == _masked(header)
            body = data[pos + 12 : pos + 12 + n]
            assert struct.unpack("<I", data[pos + 12 + n : pos + 16 + n])[0] == _masked(body)
            event = event_pb2.Event()
            event.ParseFromString(body)
            events.append(event)
            pos += 16 + n
    return events


def scalars_of(events) -> dict[str, list[tuple[int, float]]]:
    out: dict[str, list[tuple[int, float]]] = {}
    for e in events:
        for v in e.summary.value:
            out.setdefault(v.tag, []).append((e.step, v.simple_value))
    return out


def test_tensorboard_writer_round_trip(tmp_path):
    with plot.TensorBoard(tmp_path / "tb") as tb:
        tb.write(EVAL_ROW)
        tb.write(GRPO_ROW)
        tb.write({"step": 2, **{k: v for k, v in GRPO_ROW.items() if k != "step"}, "loss": 0.5})
    events = read_events(tmp_path / "tb")
    assert events[0].file_version.startswith("brain.Event:")
    got = scalars_of(events)
    assert got["training/loss"] == [(1, pytest.approx(0.01)), (2, 0.5)]
    assert got["reward/total"] == [(1, 0.75), (2, 0.75)] and got["acc/classification"][0] == (1, 0.5)
    assert got["eval/detection/f1_at_0.5"] == [(0, 0.0)] and "eval/detection/n" not in got
    assert got["timing/step_s"][0] == (1, pytest.approx(2.56))
    assert "training/kl" not in got and not any("tasks" in t or "prompt_ids" in t for t in got)


def test_log_to_tensorboard_converts_once(tmp_path):
    run = write_log(tmp_path / "sft", SFT_ROWS)
    out = plot.log_to_tensorboard(run)
    assert out == run / "tensorboard"
    plot.log_to_tensorboard(run)  # again: the earlier conversion is replaced, not doubled
    assert len(list(out.glob("events.out.tfevents.*"))) == 1
    got = scalars_of(read_events(out))
    assert got["training/eval_loss"] == [(0, pytest.approx(6.99)), (5, 1.5)]
    assert [s for s, _ in got["training/loss"]] == [1, 2, 3, 4, 5]


def test_the_proof_figure_draws_a_proof_json(tmp_path):
    from conftest import script

    figure = script("proof_figure")
    curve = [[0, {"acc@0.5": 0.4}], [50, {"acc@0.5": 0.6}]]
    proof = {
        "task": "grounding",
        "metric": "acc@0.5",
        "blind": {"acc@0.5": 0.03},
        "seeds": {
            "0": {"grpo": {"curve": curve}, "control": {"curve": curve}, "mismatched": {"acc@0.5": 0.01}}
        },
    }
    (tmp_path / "proof.json").write_text(json.dumps(proof))
    assert figure.main([str(tmp_path / "proof.json"), "--out", str(tmp_path / "f.png")]) == 0
    assert (tmp_path / "f.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(SystemExit, match="not a readable proof.json"):
        figure.main([str(tmp_path / "missing.json")])
