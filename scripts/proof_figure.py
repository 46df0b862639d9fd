"""The README's figure: a GRPO proof's held-out curve beside its controls, from the proof's proof.json.

    python scripts/grpo_proof.py --task grounding --out runs/proof-grounding
    python scripts/proof_figure.py runs/proof-grounding/proof.json --out docs/grounding-proof.png

One panel: per seed, the held-out headline metric along the GRPO steps (solid) and along the shuffled-reward
control's steps (dashed); the final policy's score with the images permuted among the records (a cross at
the last step); the blind (question-only) baseline (a grey line). Written with matplotlib's Agg canvas.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def draw(proof: dict, out: Path, title: str | None = None) -> Path:
    """The figure of one proof.json (see the module docstring) as a PNG at `out`."""
    metric, task = proof["metric"], proof["task"]
    fig = Figure(figsize=(6.4, 3.8), dpi=150)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    colours = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#8c564b"]
    for i, (seed, run) in enumerate(sorted(proof["seeds"].items())):
        c = colours[i % len(colours)]
        steps, values = zip(*[(step, m[metric]) for step, m in run["grpo"]["curve"]])
        ax.plot(steps, values, "-o", color=c, ms=3, label=f"GRPO, seed {seed}")
        if "control" in run:
            cs, cv = zip(*[(step, m[metric]) for step, m in run["control"]["curve"]])
            ax.plot(cs, cv, "--", color=c, alpha=0.6, label=f"shuffled rewards, seed {seed}")
        if "mismatched" in run:
            ax.plot([steps[-1]], [run["mismatched"][metric]], "x", color=c, ms=8, mew=2)
    ax.axhline(proof["blind"][metric], color="grey", lw=1)
    ax.text(0, proof["blind"][metric], " blind (question only)", va="bottom", fontsize=7, color="grey")
    ax.plot([], [], "xk", label="final policy, images permuted")
    ax.set_xlabel("GRPO step")
    ax.set_ylabel(f"held-out {metric}")
    ax.set_ylim(0, 1)
    ax.set_title(title or f"GRPO on {task}: held-out {metric} with its controls", fontsize=9)
    ax.legend(fontsize=6, loc="upper left", ncol=2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("proof", help="a proof.json written by scripts/grpo_proof.py (required)")
    p.add_argument(
        "--out", default="docs/grounding-proof.png", help="the PNG to write (default: %(default)s)"
    )
    p.add_argument("--title", default=None, help="the figure's title (default: the task and its metric)")
    args = p.parse_args(argv)
    try:
        proof = json.loads(Path(args.proof).read_text())
    except (OSError, ValueError) as e:
        raise SystemExit(f"proof_figure.py: {args.proof}: not a readable proof.json ({e})") from None
    print(f"wrote {draw(proof, Path(args.out), args.title)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
