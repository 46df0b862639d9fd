"""A user's mistakes and lost work, as a new user meets them: one or two lines before anything loads, and an
earlier run's files never touched by a rerun, a failed start or a resume with nothing to resume."""

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import train_grpo
import train_sft

ROOT = Path(__file__).resolve().parents[1]


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def _lines(proc: subprocess.CompletedProcess) -> list[str]:
    return [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]


@pytest.mark.parametrize(
    "flags, words",
    [
        (["--model", "/nonexistent"], "no such directory"),
        (["--model", "Qwen/Not-A-Cached-Model"], "not in the Hugging Face cache"),
        (["--group-size", "0"], "--group-size"),
        (["--lr", "-1"], "--lr"),
        (["--data", "/nonexistent/train.jsonl"], "No such file"),
    ],
)
def test_user_mistakes_are_two_lines_and_fast(tmp_path, flags, words):
    t0 = time.perf_counter()
    proc = _cli("train_grpo.py", "--out", str(tmp_path / "run"), *flags)
    lines = _lines(proc)
    assert proc.returncode != 0 and len(lines) <= 2 and words in lines[-1], lines
    assert "Traceback" not in proc.stderr and not (tmp_path / "run").exists()
    assert time.perf_counter() - t0 < 60  # offline: no retries against the hub


def _digest(path: Path) -> dict[str, str]:
    return {
        str(f.relative_to(path)): hashlib.sha256(f.read_bytes()).hexdigest()
        for f in sorted(path.rglob("*"))
        if f.is_file()
    }


def _old_run(out: Path) -> dict[str, str]:
    """What an earlier run leaves: logs, args, a checkpoint without resume state, a final model."""
    (out / "checkpoints" / "step-000010").mkdir(parents=True)
    (out / "checkpoints" / "step-000010" / "config.json").write_text("{}")
    (out / "final").mkdir()
    (out / "final" / "config.json").write_text("{}")
    (out / "log.jsonl").write_text(json.dumps({"step": 1, "loss": 0.5}) + "\n")
    (out / "args.json").write_text("{}")
    return _digest(out)


@pytest.mark.parametrize("main", [train_grpo.main, train_sft.main])
def test_a_rerun_into_an_old_run_is_refused_and_changes_nothing(tmp_path, main):
    out = tmp_path / "run"
    before = _old_run(out)
    with pytest.raises(SystemExit, match="already holds a run"):
        main(["--out", str(out)])
    with pytest.raises(SystemExit, match="no complete checkpoint to resume"):
        main(["--out", str(out), "--resume", "auto"])
    assert _digest(out) == before


def test_a_failed_start_with_overwrite_keeps_the_old_run(tmp_path):
    out = tmp_path / "run"
    before = _old_run(out)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": 1, "task": "vqa"}\n')
    with pytest.raises(SystemExit, match=r"bad.jsonl:1: field 'images' is missing"):
        train_grpo.main(["--out", str(out), "--overwrite", "--data", str(bad)])
    assert _digest(out) == before  # not even args.json: the run never started


def test_overwrite_replaces_the_old_run_once_started(tiny_dir, synth_dir, tmp_path):
    out = tmp_path / "run"
    _old_run(out)
    train_sft.main(
        [
            "--out",
            str(out),
            "--overwrite",
            "--model",
            str(tiny_dir),
            "--data",
            str(synth_dir / "train.jsonl"),
            "--max-steps",
            "2",
            "--eval-records",
            "0",
            "--save-every",
            "0",
        ]
    )
    assert not (out / "checkpoints" / "step-000010").exists()
    assert [json.loads(x)["step"] for x in (out / "log.jsonl").read_text().splitlines()] == [1, 2]
    assert json.loads((out / "args.json").read_text())["max_steps"] == 2


def test_resume_auto_in_an_empty_folder_starts_fresh_and_the_bar_continues(
    tiny_dir, synth_dir, tmp_path, capsys
):
    common = [
        "--model",
        str(tiny_dir),
        "--data",
        str(synth_dir / "train.jsonl"),
        "--eval-records",
        "0",
        "--out",
        str(tmp_path / "run"),
        "--save-every",
        "2",
    ]
    train_sft.main([*common, "--max-steps", "2", "--resume", "auto"])
    capsys.readouterr()
    train_sft.main([*common, "--max-steps", "3", "--resume", "auto"])
    err = capsys.readouterr().err
    assert "2/3" in err and "0/3" not in err  # the resumed progress bar continues from the resumed step


def test_the_offline_hint_names_the_cli_the_venv_ships(monkeypatch):
    from geovlm import run

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SystemExit, match=r"\(hf download Qwen/Not-A-Cached-Model\)") as e:
        run.check_model("Qwen/Not-A-Cached-Model")
    assert "huggingface-cli" not in str(e.value)
