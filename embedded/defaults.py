"""The embedded defaults: what every script uses when --model / --data are not given, built once and cached.

    data_dir()     synthetic EO data (synth.make_dataset, 2000 records, seed 0):
                   train.jsonl, test.jsonl, images/
    base_model()   the tiny Qwen2.5-VL (tiny.build_tiny, seed 0), its tokenizer trained on that data's text
    sft_model()    the embedded start, shipped in weights/embedded-start (its manifest.json says how it was
                   made): the tiny model pre-trained to see (the perception ladder's chain), then on every
                   task; where GRPO and eval start, because a random-weight model never writes the answer
                   format and sees nothing, and GRPO then has no signal

The first two live under GEOVLM_CACHE (default ~/.cache/geovlm-r1) and are built on first use, each in a
temporary folder renamed when whole, so concurrent processes (torchrun ranks) never see half a build and the
loser of a race keeps the winner's (identical) files. Everything here is offline.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from data import SYSTEM_PROMPT
from embedded import synth, tiny

CACHE = Path(os.environ.get("GEOVLM_CACHE", Path.home() / ".cache" / "geovlm-r1"))
DATA_VERSION = 2  # bump when synth.py's records change, so that caches built from older data are not reused


def tokenizer_corpus(jsonl_paths: list[str | os.PathLike] = ()) -> list[str]:
    """Text the tiny model will read and write: the system prompt, answer syntax, numbers, and the records'
    questions, reasoning and answers."""

    texts = [SYSTEM_PROMPT, "<think> </think> <answer> </answer> [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]"]
    texts += [" ".join(str(i) for i in range(1000))]
    for path in jsonl_paths:
        with open(path) as f:
            for line in f:
                rec = json.loads(line)
                texts += [rec.get("question", ""), rec.get("reasoning") or "", json.dumps(rec.get("answer"))]
    return texts


def _build_once(out: Path, marker: str, build, what: str = "") -> Path:
    """Run build(tmp) into a temporary sibling of `out` and rename it to `out`, unless `out/marker` exists.
    `what` is said before building: a first run must not sit silent for a minute."""
    if not (out / marker).exists():
        if what:
            print(f"defaults: building {what} once, into {out}", flush=True)
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

    return _build_once(
        cache / f"synth-v{DATA_VERSION}",
        "test.jsonl",
        lambda tmp: synth.make_dataset(tmp, n=2000, seed=0),
        what="the embedded synthetic data set (2,000 records with their images; about half a minute)",
    )


def train_data(cache: Path = CACHE) -> str:
    """The embedded training split, data_dir()/train.jsonl: what --data means when not given."""
    return str(data_dir(cache) / "train.jsonl")


def test_data(cache: Path = CACHE) -> str:
    """The embedded test split, data_dir()/test.jsonl: what eval.py's --data means when not given."""
    return str(data_dir(cache) / "test.jsonl")


def base_model(cache: Path = CACHE) -> str:
    """The embedded model: the tiny Qwen2.5-VL with random weights, tokenizer trained on the embedded data."""

    corpus = tokenizer_corpus([data_dir(cache) / "train.jsonl"])
    return str(
        _build_once(
            cache / f"tiny-qwen2.5-vl-v{DATA_VERSION}",
            "config.json",
            lambda tmp: tiny.build_tiny(tmp, corpus, seed=0),
            what="the tiny Qwen2.5-VL and its tokenizer (seconds)",
        )
    )


# The embedded GRPO / eval start, shipped in the repository (scripts/perception_start.py --ship): a tiny model
# of the same tokenizer as base_model() (M-RoPE base 300, not 10000: at 10000 it cannot tell left from right)
# after the perception ladder's chain of pretrain_tiny.py stages, the last five of them on every task. Shipped
# rather than built on first use: the chain costs 14-15 hours of one core. tests/test_shipped_starts.py
# re-runs the first link after the perception start against the logged losses.
SFT_START = Path(__file__).resolve().parent / "weights" / "embedded-start"


def sft_model() -> str:
    """The embedded GRPO / eval start (SFT_START): the tiny model pre-trained to see, then on every task,
    because a random-weight model never writes the answer format and GRPO then has no signal."""
    return str(SFT_START)
