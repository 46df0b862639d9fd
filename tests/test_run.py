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


# -------------------------------------------------------------------------- issue 20: caught early, said once
def test_a_task_that_is_no_task_is_one_line_before_anything_is_built(tmp_path):
    """On an empty cache: nothing built (not the data, not the 300-step SFT start), --out left untouched."""
    cache = tmp_path / "cache"
    proc = _cli(
        "train_grpo.py",
        "--out",
        str(tmp_path / "run"),
        "--task",
        "nonsense",
        env={"GEOVLM_CACHE": str(cache)},
    )
    lines = _lines(proc)
    assert proc.returncode == 2 and len(lines) == 1 and "--task: no task named nonsense" in lines[0], lines
    assert not cache.exists() and not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "flags, words",
    [
        (["--task", "vqa,segmentation"], "--task: no task named segmentation"),
        (["--stages", "detection200"], "--stages: expected task:steps"),
        (["--stages", "detection:200,nonsense:5"], "--stages: no task named nonsense"),
    ],
)
def test_task_names_are_checked_with_the_flags(flags, words, capsys):
    with pytest.raises(SystemExit) as e:
        train_grpo.parse_args(flags)
    assert e.value.code == 2 and words in capsys.readouterr().err


def test_a_task_the_data_lacks_is_one_line_before_the_model_and_the_rerun_works(
    tiny_dir, synth_dir, tmp_path, monkeypatch
):
    rows = [
        r for r in (synth_dir / "train.jsonl").read_text().splitlines() if '"task": "classification"' in r
    ]
    data = tmp_path / "train.jsonl"
    data.write_text("\n".join(rows) + "\n")
    (tmp_path / "images").symlink_to(synth_dir / "images")  # the records' images are relative to the file
    out = tmp_path / "run"
    monkeypatch.setattr(
        train_grpo.M, "load", lambda *a, **k: pytest.fail("loaded a model for a data mistake")
    )
    args = ["--model", str(tiny_dir), "--data", str(data), "--out", str(out)]
    with pytest.raises(
        SystemExit, match=r"no training records for task\(s\) \['vqa'\]; the data has \['classification'\]"
    ):
        train_grpo.main([*args, "--task", "vqa"])
    assert not holds_run_files(out)


def holds_run_files(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir()) if out.exists() else []


def test_a_start_that_failed_after_args_json_does_not_block_the_rerun(tmp_path):
    from geovlm.run import holds_run

    out = tmp_path / "run"
    (out / "plots").mkdir(parents=True)
    (out / "args.json").write_text("{}")
    (out / "log.jsonl").write_text("")
    assert not holds_run(out)  # nothing a rerun would lose
    (out / "log.jsonl").write_text(json.dumps({"step": 0, "eval": {}}) + "\n")
    assert holds_run(out)


def test_out_that_is_a_file_is_one_line(tmp_path):
    taken = tmp_path / "taken"
    taken.write_text("notes")
    proc = _cli("train_sft.py", "--out", str(taken), "--model", "/nonexistent")
    lines = _lines(proc)
    assert proc.returncode == 1 and lines == [
        f"--out {taken}: a file, not a folder; pick a folder (it is made when missing)"
    ]
    assert taken.read_text() == "notes"


def test_resume_auto_says_what_it_did(tiny_dir, synth_dir, tmp_path, capsys):
    common = ["--model", str(tiny_dir), "--data", str(synth_dir / "train.jsonl"), "--eval-records", "0"]
    common += ["--out", str(tmp_path / "run"), "--max-steps", "1", "--batch-size", "1", "--save-every", "0"]
    train_sft.main([*common, "--resume", "auto"])
    assert "--resume auto: no checkpoint in" in capsys.readouterr().out
    assert train_sft.main([*common, "--resume", "auto"]) == {"loss": [], "eval_loss": []}
    assert "finished at step 1 already" in capsys.readouterr().out


def test_grpo_evaluates_the_trained_tasks_and_prints_the_headline(tiny_dir, synth_dir, tmp_path, capsys):
    args = [
        "--model",
        str(tiny_dir),
        "--data",
        str(synth_dir / "train.jsonl"),
        "--out",
        str(tmp_path / "run"),
    ]
    args += ["--task", "vqa", "--eval-data", str(synth_dir / "test.jsonl"), "--eval-records", "4"]
    args += ["--max-steps", "1", "--group-size", "2", "--prompts-per-step", "1", "--max-new-tokens", "8"]
    result = train_grpo.main([*args, "--save-every", "0", "--beta", "0", "--log-rollouts-every", "0"])
    assert [sorted(h["eval"]) for h in result["eval"]] == [["vqa"], ["vqa"]]
    assert result["eval"][0]["eval"]["vqa"]["n"] == 4
    assert "held-out at step 0: vqa accuracy " in capsys.readouterr().out


def test_a_shipped_start_says_its_origin_and_a_foreign_manifest_is_ignored(tmp_path):
    from geovlm.run import shipped_origin

    assert shipped_origin(tmp_path) == ""
    (tmp_path / "manifest.json").write_text('["not", "ours"]')
    assert shipped_origin(tmp_path) == ""
    (tmp_path / "manifest.json").write_text('{"command": "python train_sft.py", "commit": "abc1234"}')
    assert shipped_origin(tmp_path) == " [shipped start: `python train_sft.py` at abc1234]"
