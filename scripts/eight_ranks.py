"""The headline command with 8 processes on a CPU (gloo): 8 ranks train, checkpoint, get killed, and resume.

    python scripts/eight_ranks.py                      # ~10 min on 2 cores; prints PASS/FAIL per check
    python scripts/eight_ranks.py --out runs/eight --steps 4

Runs, on the embedded defaults (no --model, no --data: the tiny model after its SFT warm-up, the synthetic
set):

    torchrun --nproc_per_node=8 train_grpo.py --task detection --max-steps STEPS --save-every 1 ...
      killed with SIGKILL (every rank) once the first checkpoint exists, then
    torchrun --nproc_per_node=8 train_grpo.py --task detection --max-steps STEPS --save-every 1 ... \\
        --resume auto

and checks: the run reached a checkpoint with 8 ranks' optimizer shards, the resumed run continued from it
(not from step 0) to the last step, every step's global batch holds 8 ranks x B prompts with none repeated,
and the final model loads. Only the batch is smaller than the defaults (--prompts-per-step 1, --max-new-tokens
64): 8 ranks x 4 prompts x 8 completions x 256 tokens a step would take hours on 2 CPU cores.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from geovlm.checkpoints import checkpoint_step  # noqa: E402
from geovlm.flags import ArgumentParser, positive_int  # noqa: E402


def torchrun(args: list[str], log: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=8", "train_grpo.py", *args]
    print("$ " + " ".join(cmd[2:]), flush=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True
    )


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(description=__doc__)
    p.add_argument("--out", default="runs/eight-ranks", help="run folder (must not hold a run)")
    p.add_argument(
        "--steps", type=positive_int, default=3, help="GRPO steps in all (the kill comes after the first)"
    )
    p.add_argument("--timeout", type=positive_int, default=1800, help="seconds each torchrun may take")
    a = p.parse_args(argv)
    out = Path(a.out)
    common = [
        "--task",
        "detection",
        "--max-steps",
        str(a.steps),
        "--save-every",
        "1",
        "--keep",
        "0",
        "--prompts-per-step",
        "1",
        "--max-new-tokens",
        "64",
        "--log-rollouts-every",
        "0",
        "--out",
        str(out),
    ]
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()

    # ---- run until the first checkpoint exists, then SIGKILL every rank (a crash, not a clean stop)
    proc = torchrun(common, out.parent / f"{out.name}-first.log")
    while proc.poll() is None and not list((out / "checkpoints").glob("step-*/resume/state.json")):
        time.sleep(2)
        if time.perf_counter() - t0 > a.timeout:
            break
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    first = [checkpoint_step(d) for d in sorted((out / "checkpoints").glob("step-*"))]
    print(f"killed after {time.perf_counter() - t0:.0f} s; complete checkpoints at steps {first}", flush=True)

    # ---- resume
    proc = torchrun([*common, "--resume", "auto"], out.parent / f"{out.name}-resume.log")
    code = proc.wait(timeout=a.timeout)
    log = (out.parent / f"{out.name}-resume.log").read_text()
    rows = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "reward_mean" in r]
    ids = [i for r in steps for i in r["prompt_ids"].split(",")]
    shards = (
        sorted(p.name for p in (out / "final" / "resume").glob("rank-*.pt"))
        if (out / "final").exists()
        else []
    )
    checks = {
        "a checkpoint was written before the kill": bool(first) and first[0] is not None,
        "the resumed run started from it": f"at step {max(s for s in first if s)}" in log if first else False,
        "it finished (exit 0) with final/": code == 0 and (out / "final" / "config.json").exists(),
        "8 ranks' resume state in final/": len(shards) == 8,
        "every step logged once, in order": [r["step"] for r in steps] == list(range(1, a.steps + 1)),
        "each step's global batch: 8 prompts, none repeated": all(
            len(r["prompt_ids"].split(",")) == 8 for r in steps
        )
        and len(set(ids)) == len(ids),
    }
    for name, ok in checks.items():
        print(f"{'PASS' if ok else 'FAIL'}  {name}")
    print(
        f"{time.perf_counter() - t0:.0f} s in all; logs: {out.parent / (out.name + '-first.log')}, "
        f"{out.parent / (out.name + '-resume.log')}"
    )
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
