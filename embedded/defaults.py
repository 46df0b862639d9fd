"""The embedded defaults: what every script uses when --model / --data are not given, built once and cached.

    data_dir()     synthetic EO data (synth.make_dataset, 2000 records, seed 0):
                   train.jsonl, test.jsonl, images/
    base_model()   the tiny Qwen2.5-VL (tiny.build_tiny, seed 0), its tokenizer trained on that data's text
    sft_model()    base_model() after a short supervised warm-up (SFT_RECIPE): where GRPO and eval start,
                   because a random-weight model never writes the answer format and GRPO then has no signal

Both live under GEOVLM_CACHE (default ~/.cache/geovlm-r1) and are built on first use, each in a temporary
folder renamed when whole, so concurrent processes (torchrun ranks) never see half a build and the loser of
a race keeps the winner's (identical) files. Everything here is offline.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
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


# The warm-up the embedded GRPO start gets (train_sft.py flags): the format and a first grasp of every task,
# short enough to build in a few CPU minutes. Changing it changes the cache folder's name (a new build).
SFT_RECIPE = ("--max-steps", "300", "--batch-size", "8", "--seed", "0")


def sft_model(cache: Path = CACHE) -> str:
    """The embedded GRPO / eval start: base_model() after `train_sft.py SFT_RECIPE` on the embedded data.

    Built once, in a separate process (a torchrun rank may call this: the warm-up must not join its process
    group), with its progress shown. The warm-up run (log.jsonl, plots/) stays beside the model, in
    NAME-warm-up/, and its log is copied into the model folder (warm-up-log.jsonl)."""
    name = f"tiny-qwen2.5-vl-v{DATA_VERSION}-sft-" + "-".join(a.lstrip("-") for a in SFT_RECIPE)
    data, base = data_dir(cache), base_model(cache)

    run = cache / f"{name}-warm-up"  # kept: the curves it prints the path of

    def warm_up(tmp: Path) -> None:
        print(
            f"defaults: building the embedded GRPO start once: train_sft.py {' '.join(SFT_RECIPE)} "
            f"(a few minutes on 2 CPU cores) -> {cache / name}",
            flush=True,
        )
        env = {
            k: v
            for k, v in os.environ.items()
            if k
            not in (
                "RANK",
                "WORLD_SIZE",
                "LOCAL_RANK",
                "LOCAL_WORLD_SIZE",
                "MASTER_ADDR",
                "MASTER_PORT",
                "GROUP_RANK",
            )
        }
        cmd = [
            sys.executable,
            str(Path(__file__).resolve().parents[1] / "train_sft.py"),
            "--model",
            base,
            "--data",
            str(data / "train.jsonl"),
            "--out",
            str(run),
            "--overwrite",  # what an interrupted earlier build left there
            "--save-every",
            "0",
            *SFT_RECIPE,
        ]
        subprocess.run(cmd, env=env, check=True)
        (run / "final").rename(tmp)
        shutil.copy(run / "log.jsonl", tmp / "warm-up-log.jsonl")

    return str(_build_once(cache / name, "config.json", warm_up))
