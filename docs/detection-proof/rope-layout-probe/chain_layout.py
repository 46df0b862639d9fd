"""Experiment, not part of the library: the perception chain's first links (scripts/perception_start.py) with
the first link's fresh model built in another M-RoPE layout; every later link as the chain has it.

    python docs/detection-proof/rope-layout-probe/chain_layout.py --out runs/chain-inter --links 5 \\
        --first-flags "--mrope-section 2,7,7 --mrope-layout interleaved"

--first-flags replace the first link's "--mrope-section 2,4,10" (the chain's: rows the 4 fast frequencies,
columns the 10 slow). Compare each link's results.json with the ladder's rung (docs/perception-ladder.md).
"""

import argparse
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
spec = importlib.util.spec_from_file_location("perception_start", ROOT / "scripts" / "perception_start.py")
perception_start = importlib.util.module_from_spec(spec)
spec.loader.exec_module(perception_start)

if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--links", type=int, required=True)
    p.add_argument("--first-flags", required=True)
    args = p.parse_args()
    rung, run, commit, flags = perception_start.CHAIN[0]
    assert "--mrope-section 2,4,10" in flags, flags
    perception_start.CHAIN[0] = (rung, run, commit, flags.replace("--mrope-section 2,4,10", args.first_flags))
    print(perception_start.run_chain(args.out, args.links))
