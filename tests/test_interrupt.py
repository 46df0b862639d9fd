"""Ctrl-C on a 2-process run (torchrun, gloo on the CPU): the step in progress finishes, each rank says so in
one line, a checkpoint is written, and the same command with --resume auto continues from it and finishes.

A terminal's Ctrl-C goes to torchrun's process group. torchrun starts its workers in sessions of their own, so
it is torchrun that passes SIGINT on to them; it then waits for them (its --shutdown_timeout, 30 s by default:
a step and a checkpoint must fit in it, or torchrun SIGKILLs the workers) and, having been signalled itself,
exits 1 with a SignalException traceback of its own, whatever the workers' exit codes (130 here: the run did
not finish).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
from test_distributed import TIMEOUT, _run2, _torchrun

# what our processes print
OURS = ("SIGINT: finishing this step", "stopped after step", "saved step", "curves in")


def _reader(proc: subprocess.Popen, chunks: list[tuple[float, str]]) -> threading.Thread:
    """Collect the run's output with the time each piece arrived (to tell what came after the signal)."""

    def read() -> None:
        for line in proc.stdout:
            chunks.append((time.monotonic(), line))

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    return thread


def _steps(log: Path) -> list[int]:
    return [row["step"] for row in map(json.loads, log.read_text().splitlines()) if "step" in row]


@pytest.mark.slow
def test_sigint_stops_two_processes_with_a_checkpoint_and_resume_continues(tiny_dir, synth_dir, tmp_path):
    out = tmp_path / "run"
    args = [
        "train_sft.py",
        "--model",
        str(tiny_dir),
        "--data",
        str(synth_dir / "train.jsonl"),
        "--batch-size",
        "1",
        "--eval-records",
        "0",
        "--save-every",
        "0",
        "--out",
        str(out),
    ]
    # its own process group, as in a terminal
    proc = _torchrun(*args, "--max-steps", "50", start_new_session=True)
    chunks: list[tuple[float, str]] = []
    reader = _reader(proc, chunks)
    deadline = time.monotonic() + TIMEOUT
    while not ((out / "log.jsonl").exists() and _steps(out / "log.jsonl")):
        assert proc.poll() is None and time.monotonic() < deadline, "".join(c for _, c in chunks)[-3000:]
        time.sleep(0.1)
    signalled = time.monotonic()
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C does: the whole foreground process group
    try:
        proc.wait(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail("the interrupted run did not stop")
    reader.join(timeout=10)
    text = "".join(c for _, c in chunks)
    after = [
        line
        for t, c in chunks
        if t >= signalled
        for line in c.replace("\r", "\n").splitlines()
        if line.strip()
    ]
    ours = [line for line in after if any(o in line for o in OURS)]
    print(
        f"after SIGINT: torchrun exit {proc.returncode}, {len(after)} lines, {len(ours)} of them ours:",
        *ours,
        sep="\n",
    )

    assert proc.returncode != 0, text[-3000:]  # interrupted is not finished (torchrun: 1; each worker: 130)
    for rank in (0, 1):  # one line per process when the signal arrives, and one when it stops
        assert text.count(f"rank {rank}: SIGINT: finishing this step") == 1, text[-3000:]
        assert text.count(f"sft: rank {rank}: stopped after step") == 1, text[-3000:]
    (ckpt,) = (out / "checkpoints").iterdir()
    stopped = int(ckpt.name.removeprefix("step-"))
    assert _steps(out / "log.jsonl") == list(range(1, stopped + 1)) and not (out / "final").exists()
    assert f"stopped after step {stopped};" in text and (ckpt / "resume" / "state.json").exists()

    # the same command (one more step to go) and --resume auto: it continues from that checkpoint and finishes
    resumed = _run2(*args, "--max-steps", str(stopped + 1), "--resume", "auto")
    assert f"resumed from {ckpt} at step {stopped}" in resumed, resumed[-3000:]
    assert _steps(out / "log.jsonl") == list(range(1, stopped + 2))
    assert json.loads((out / "final" / "resume" / "state.json").read_text())["step"] == stopped + 1
