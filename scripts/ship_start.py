"""Ship a trained start in the repository: copy an SFT run's final model and write its manifest.

    python scripts/grpo_proof.py --task grounding --seeds 0 --sft-only --out runs/probe-start
    python scripts/ship_start.py runs/probe-start/sft-seed0 embedded/weights/grounding-probe-sft \\
        --command "python scripts/grpo_proof.py --task grounding --seeds 0 --sft-only --out runs/probe-start"
    (at the commit the first command ran at, or name it with --commit)

A shipped start saves the suite and the demo minutes of training on 2 cores, but weights in a repository
could come from anywhere. So the manifest holds what shows where they came from: the exact command, the
commit it ran at, the SFT's flags (args.json), its loss at every step (log.jsonl) and the sha256 of every
file. tests/test_shipped_starts.py checks the hashes and re-runs the recipe's first steps, which must give
the logged losses: a start whose recipe, data or code has changed since fails there and is rebuilt with the
two commands above. The optimiser state (final/resume/) is not shipped: nobody resumes a shipped start.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from geovlm.logs import commit_of  # noqa: E402
from geovlm.shipped import sha256, write_start  # noqa: E402


def ship(run: Path, dest: Path, command: str, commit: str) -> dict:
    """Copy run/final's model files (not resume/) to `dest` and write dest/manifest.json; returns the
    manifest."""
    final, log = run / "final", run / "log.jsonl"
    missing = [p for p in (final / "config.json", run / "args.json", log) if not p.exists()]
    if missing:
        raise SystemExit(f"ship_start.py: {run} is not a finished SFT run (missing {missing[0]})")
    if dest.exists():
        raise SystemExit(f"ship_start.py: {dest} exists; remove it first (a shipped start is replaced whole)")
    files = sorted(p for p in final.iterdir() if p.is_file())
    args = json.loads((run / "args.json").read_text())
    rows = [json.loads(line) for line in open(log)]
    manifest = {
        "command": command,
        "commit": commit,
        "sft_args": {k: v for k, v in args.items() if k not in ("model", "data", "out")},
        "losses": [r["loss"] for r in rows if "loss" in r],
        "sha256": {p.name: sha256(p) for p in files},
    }
    write_start(files, dest, manifest)
    return manifest


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path, help="a finished SFT run folder (args.json, log.jsonl, final/)")
    p.add_argument("dest", type=Path, help="where the start is shipped (a new folder)")
    p.add_argument("--command", required=True, help="the exact command that made RUN (kept in the manifest)")
    p.add_argument(
        "--commit",
        default=None,
        help="the commit RUN was made at (default: this checkout's HEAD, '+changes' when its files differ)",
    )
    args = p.parse_args(argv)
    commit = args.commit or commit_of(Path(__file__).resolve().parent)
    manifest = ship(args.run, args.dest, args.command, commit)
    size = sum((args.dest / name).stat().st_size for name in manifest["sha256"]) / 2**20
    print(f"shipped {args.run / 'final'} to {args.dest} ({size:.1f} MiB, commit {manifest['commit']})")
    return manifest


if __name__ == "__main__":
    main()
