"""The embedded start in one command: the perception ladder's chain of pretrain_tiny.py runs, from a fresh
tiny model to the start the defaults use (embedded/weights/embedded-start, defaults.sft_model()).

    python scripts/perception_start.py --out runs/perception     # 21 links, 31,000 steps: 14-15 h of one core
    python scripts/perception_start.py --out runs/perception     # again: resumes where it stopped
    python scripts/perception_start.py --out runs/perception --ship embedded/weights/embedded-start
                                        # copy the last link's model there, with its manifest
    python scripts/perception_start.py --out runs/perception --links 16 \\
        --ship embedded/weights/perception-start      # the first 16 links only: the perception start

Each link is one rung of docs/perception-ladder.md: a pretrain_tiny.py run of one stage from the previous
link's model (the first from a fresh tiny model with M-RoPE base 300, sections 2 / 4 / 10 and 4 key/value
heads). Each link draws its records from its own stream (stage index 0), as the rung did, so the chain gives
the ladder's runs again rather than one long run with other records; the way there was found rung by rung,
and this is that way, not a tidier one that was never measured. The first 16 links teach grounding and
detection only and end at the perception start (what the detection proof begins from); the last five mix every
other task of synth back in beside them, so that the start answers everything the defaults ask (the last four
with counting and change detection reasoned object by object, stage synthucd; the last three with grounding
and detection drawn 18 times in 28, which took synth grounding from 0.33 to 0.46 and detection from 0.107 to
0.200 over two links of 1,000 steps, then a third of 500 steps to grounding 0.41 and detection 0.260). The
held-out figures of each link are the ladder's table; the shipped start's are in its manifest.

The manifest holds the chain (each link's flags and the commit the rung ran at), the sha256 of each rung's
log in docs/perception-ladder/ and of every shipped file. tests/test_shipped_starts.py checks the hashes and
re-runs the first link's first steps from a fresh model and the first link after the perception start from
the shipped perception start, which must give the logged losses (the links after it start from models that are
not shipped: their logs' hashes are checked).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from geovlm.shipped import sha256, write_start  # noqa: E402

LADDER = ROOT / "docs" / "perception-ladder"

# (rung, its run folder in docs/perception-ladder/, the commit it ran at, pretrain_tiny.py flags). The rungs
# that are not here were side branches: docs/perception-ladder.md says what each showed.
LR_B16 = "--lr 1e-3 --batch-size 16"
LR_5E4_B16 = "--lr 5e-4 --batch-size 16"
GD8_ALL = "+".join(["grounding+detection"] * 8 + ["all"])  # 18 of every 28 records grounding or detection
CHAIN: list[tuple[int, str, str, str]] = [
    (
        30,
        "rope300-mha-square2",
        "519c8ea",
        "--rope-theta 300 --mrope-section 2,4,10 --kv-heads 4 --stages square:500:grounding",
    ),
    (32, "rope300-mha-square2rb", "25c0f71", "--stages square2rb:1000:grounding"),
    (35, "square2rb-more", "c6193fa", "--stages square2rb:1000:grounding --lr 1e-3"),
    (37, "square2rbg", "03ffac8", "--stages square2rbg:1500:grounding --lr 1e-3"),
    (38, "square2-after-rbg", "56f8d2f", "--stages square2:1500:grounding --lr 1e-3"),
    (40, "colourmixl-after-square2", "a3b3594", "--stages colourmixl:1000:grounding --lr 1e-3"),
    (42, "colourmixl-more", "1d7b825", "--stages colourmixl:1500:grounding --lr 1e-3"),
    (47, "classmixl-after-colourmixl", "ec00b03", "--stages classmixl:1500:grounding --lr 1e-3"),
    (50, "classmix1-after-classmixl", "703956f", "--stages classmix1:1500:grounding --lr 1e-3"),
    (52, "classmix1-more", "703956f", "--stages classmix1:3000:grounding --lr 1e-3"),
    (54, "synthuc-after-classmix1", "703956f", "--stages synthuc:2000:grounding --lr 1e-3"),
    (57, "synthuc-more", "161011b", "--stages synthuc:2000:grounding --lr 1e-3"),
    (58, "synthuc-b16", "f15ca78", f"--stages synthuc:3000:grounding {LR_B16}"),
    (62, "synthuc-b16-more", "8a4e28f", f"--stages synthuc:1500:grounding {LR_B16}"),
    (64, "synthuc-gd-after-b16-more", "e088643", f"--stages synthuc:3000:grounding+detection {LR_B16}"),
    (67, "synthuc-gd-more", "f95df74", f"--stages synthuc:1000:grounding+detection {LR_B16}"),
    (
        69,
        "synthuc-all-after-r67",
        "9f89d40",
        f"--stages synthuc:1000:grounding+detection+all {LR_5E4_B16} --seed 1 --eval-every 500",
    ),
    (
        72,
        "synthucd-all-after-r69",
        "da5e594",
        "--stages synthucd:1000:grounding+detection+counting+change_detection+all --lr 2.5e-4 "
        "--batch-size 16 --seed 2 --eval-every 500",
    ),
    (
        75,
        "synthucd-gd8-after-r72",
        "cbdded7",
        f"--stages synthucd:1000:{GD8_ALL} {LR_5E4_B16} --seed 5 --eval-every 500",
    ),
    (
        76,
        "synthucd-gd8-after-r75",
        "cbdded7",
        f"--stages synthucd:1000:{GD8_ALL} {LR_5E4_B16} --seed 6 --eval-every 500",
    ),
    (
        82,
        "synthucd-gd8-500-after-r76",
        "7129b68",
        f"--stages synthucd:500:{GD8_ALL} {LR_5E4_B16} --seed 8 --eval-every 500",
    ),
]
PERCEPTION_LINKS = 16  # the perception start (embedded/weights/perception-start): the chain up to rung 67


def link_dir(out: Path, k: int) -> Path:
    rung, run, _, _ = CHAIN[k]
    return out / f"{k:02d}-rung{rung}-{run}"


def stage_dir(out: Path, k: int) -> Path:
    """The model link k ends with: its run's stage-0 folder."""
    flags = CHAIN[k][3].split()
    return link_dir(out, k) / f"stage-0-{flags[flags.index('--stages') + 1].split(':')[0]}"


def run_chain(out: Path, links: int = 0) -> Path:
    """Train every link of the first `links` (0: all) not finished yet, each from the one before; returns the
    last one's model folder."""
    links = links or len(CHAIN)
    for k, (rung, _, _, flags) in enumerate(CHAIN[:links]):
        if (stage_dir(out, k) / "done.json").exists():
            print(f"perception_start: link {k} (rung {rung}) done already", flush=True)
            continue
        base = ["--base-model", str(stage_dir(out, k - 1))] if k else []
        cmd = [sys.executable, str(ROOT / "scripts" / "pretrain_tiny.py"), "--out", str(link_dir(out, k))]
        print(f"perception_start: link {k} of {links} (rung {rung}): {flags}", flush=True)
        link = subprocess.Popen([*cmd, *base, *flags.split()])
        while True:
            try:
                code = link.wait()
                break
            except KeyboardInterrupt:  # the link got the Ctrl-C too: it ends its step and saves a checkpoint
                continue
        if code:  # pretrain_tiny.py has said why; finished links and the stopped one's checkpoint are kept
            raise SystemExit(
                f"perception_start.py: link {k} (rung {rung}) stopped (exit {code}); the same command "
                "continues it from its last checkpoint"
            )
    return stage_dir(out, links - 1)


def ship(out: Path, dest: Path, links: int = 0) -> dict:
    """Copy the model of the first `links` links (0: all) to `dest` with a manifest (the chain, the rungs' log
    hashes, the held-out figures, every file's sha256); returns the manifest."""
    links = links or len(CHAIN)
    final = stage_dir(out, links - 1)
    if not (final / "done.json").exists():
        raise SystemExit(f"perception_start.py: {final} is not finished; run the chain first (no --ship)")
    if dest.exists():
        raise SystemExit(f"perception_start.py: {dest} exists; remove it first (a start is replaced whole)")
    files = sorted(p for p in final.iterdir() if p.is_file() and p.name != "done.json")
    results = json.loads((link_dir(out, links - 1) / "results.json").read_text())
    chain = [
        dict(rung=r, run=run, commit=c, flags=f, log_sha256=sha256(LADDER / run / "log.jsonl"))
        for r, run, c, f in CHAIN[:links]
    ]
    manifest = {
        "command": "python scripts/perception_start.py --out runs/perception"
        + (f" --links {links}" if links < len(CHAIN) else ""),
        "commit": CHAIN[links - 1][2],
        "chain": chain,
        "heldout": {"blind": results["blind"], "eval_seed": results["eval_seed"]}
        | results["stages"][-1]["eval"],
        "sha256": {p.name: sha256(p) for p in files},
    }
    write_start(files, dest, manifest)
    return manifest


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--out", type=Path, required=True, help="the chain's folder, one run folder per link (required)"
    )
    p.add_argument(
        "--ship",
        type=Path,
        default=None,
        help="copy the finished chain's last model to this new folder, with its manifest, and stop "
        "(default: train the chain)",
    )
    p.add_argument(
        "--links",
        type=int,
        choices=range(1, len(CHAIN) + 1),
        metavar=f"1..{len(CHAIN)}",
        default=len(CHAIN),
        help=f"train (or ship) the chain's first N links only; {PERCEPTION_LINKS}: the perception start "
        "(default: all, %(default)s: the embedded start)",
    )
    args = p.parse_args(argv)
    if args.ship:
        manifest = ship(args.out, args.ship, args.links)
        print(f"shipped {stage_dir(args.out, args.links - 1)} to {args.ship} (commit {manifest['commit']})")
        return args.ship
    final = run_chain(args.out, args.links)
    print(f"perception_start: the chain's model is {final}")
    return final


if __name__ == "__main__":
    main()
