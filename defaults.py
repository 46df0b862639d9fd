"""The embedded defaults: what every script uses when --model / --data are not given, built once and cached.

    data_dir()     synthetic EO data (synth.make_dataset, 2000 records, seed 0): train.jsonl, test.jsonl, images/
    base_model()   the tiny Qwen2.5-VL (tiny.build_tiny, seed 0), its tokenizer trained on that data's text

Both live under GEOVLM_CACHE (default ~/.cache/geovlm-r1) and are built on first use, each in a temporary
folder renamed when whole, so concurrent processes (torchrun ranks) never see half a build and the loser of
a race keeps the winner's (identical) files. Everything here is offline.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

CACHE = Path(os.environ.get("GEOVLM_CACHE", Path.home() / ".cache" / "geovlm-r1"))


def tokenizer_corpus(jsonl_paths: list[str | os.PathLike] = ()) -> list[str]:
    """Text the tiny model will read and write: the system prompt, answer syntax, numbers, and the records'
    questions, reasoning and answers."""
    from data import SYSTEM_PROMPT

    texts = [SYSTEM_PROMPT, "<think> </think> <answer> </answer> [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]"]
    texts += [" ".join(str(i) for i in range(1000))]
    for path in jsonl_paths:
        with open(path) as f:
            for line in f:
                rec = json.loads(line)
                texts += [rec.get("question", ""), rec.get("reasoning") or "", json.dumps(rec.get("answer"))]
    return texts


def _build_once(out: Path, marker: str, build) -> Path:
    """Run build(tmp) into a temporary sibling of `out` and rename it to `out`, unless `out/marker` exists."""
    if not (out / marker).exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
        try:
            build(tmp / "built")
            (tmp / "built").rename(out)  # never replaces: a process already reading `out` keeps its files
        except OSError:  # another process (rank) won the race: same seed, same files
            if not (out / marker).exists():
                raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def data_dir(cache: Path = CACHE) -> Path:
    """The embedded data set: `synth.py --n 2000 --seed 0`."""
    import synth

    return _build_once(cache / "synth", "test.jsonl", lambda tmp: synth.make_dataset(tmp, n=2000, seed=0))


def base_model(cache: Path = CACHE) -> str:
    """The embedded model: the tiny Qwen2.5-VL with random weights, tokenizer trained on the embedded data."""
    import tiny

    corpus = tokenizer_corpus([data_dir(cache) / "train.jsonl"])
    return str(_build_once(cache / "tiny-qwen2.5-vl", "config.json", lambda tmp: tiny.build_tiny(tmp, corpus, seed=0)))
