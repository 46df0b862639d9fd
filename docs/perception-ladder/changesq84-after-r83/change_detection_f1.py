"""Experiment, not part of the library: change-detection F1 of models on 40 fresh square pairs (the changesq
stage's held-out records, rng [31337, 2000, i]) and on 100 fresh synth change-detection records
(synth.make_dataset(seed=4242, tasks=["change_detection"]), written under --work if missing); greedy, 128
tokens.

    python docs/perception-ladder/changesq84-after-r83/change_detection_f1.py --out f1.json \\
        start=embedded/weights/embedded-start r83=runs/changesq/stage-0-changesq \\
        r84=runs/changesq84/stage-0-changesq
"""

import argparse
import importlib.util
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

import eval as E  # noqa: E402
import model as M  # noqa: E402
from data import load_records  # noqa: E402
from embedded import synth  # noqa: E402
from geovlm.metrics import Sample, score_samples  # noqa: E402

spec = importlib.util.spec_from_file_location("pretrain_tiny", ROOT / "scripts" / "pretrain_tiny.py")
P = importlib.util.module_from_spec(spec)
spec.loader.exec_module(P)
KEEP = ("n", "f1@0.5", "f1@0.25", "precision@0.5", "recall@0.5", "well_formed")

if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="+", help="NAME=PATH")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--work", type=Path, default=Path("runs/change-detection-f1"), help="held-out records")
    args = p.parse_args()
    torch.set_num_threads(1)
    pairs = P.stage_held_out("changesq", 0, 31337, 40, args.work / "pairs", "change_detection")
    if not (args.work / "synth" / "train.jsonl").exists():
        synth.make_dataset(args.work / "synth", n=100, seed=4242, tasks=["change_detection"], test_frac=0.0)
    fresh = load_records(args.work / "synth" / "train.jsonl")
    out = {}
    for name, path in (m.split("=", 1) for m in args.models):
        loaded = M.load(path, device="cpu")
        loaded.model.eval()
        for set_name, records in (("pairs", pairs), ("synth100", fresh)):
            completions, frames = E.generate(
                loaded.model, loaded.processor, loaded.frame_kind, records, 128, torch.device("cpu")
            )
            rows = zip(records, completions, frames)
            samples = [Sample(r.task, r.answer, c, f, r.meta, r.id) for r, c, f in rows]
            m = score_samples(samples, caption_extras=False, quiet=True)["tasks"]["change_detection"]
            out[f"{name}/{set_name}"] = {k: m[k] for k in KEEP}
            print(name, set_name, json.dumps(out[f"{name}/{set_name}"]), flush=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
