"""Shared fixtures: one synthetic data set and one tiny model per test session (built offline)."""

import fcntl
import os
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(1, str(ROOT / "tools"))  # tests import tools/bench.py as `bench`
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pytest_collection_modifyitems(config, items):
    """Spread the slow tests over the workers. make test runs `pytest -n auto --dist worksteal`, which hands
    worker k the k-th contiguous share of this list and lets an idle worker steal the tail of a busy one's
    queue: so each share starts with its slow tests (longest first, dealt round-robin by their `minutes`), and
    a worker never waits at the end for a long test queued behind others on one worker."""
    workers = getattr(config, "workerinput", {}).get("workercount", 1)
    slow = sorted(
        (i for i in items if i.get_closest_marker("slow")),
        key=lambda i: -i.get_closest_marker("slow").kwargs.get("minutes", 1.0),
    )
    fast = [i for i in items if not i.get_closest_marker("slow")]
    shares, left = [slow[k::workers] for k in range(workers)], len(items)
    for k, share in enumerate(shares):
        size = left // (workers - k)  # what worksteal sends worker k of the `left` items still unsent
        take = max(0, size - len(share))
        share += fast[:take]
        del fast[:take]
        left -= len(share)
    shares[-1] += fast
    items[:] = [i for share in shares for i in share]


def _built_once(tmp_path_factory, name: str, build) -> Path:
    """A folder made by build(folder) once a session. Under pytest-xdist (make test) the workers share it: the
    first to get here builds it under a lock and the others wait and read it, instead of each building its
    own (15 s of a core each). The tests only read these folders."""
    if "PYTEST_XDIST_WORKER" not in os.environ:  # one process: it is the session
        out = tmp_path_factory.mktemp(name)
        build(out)
        return out
    root = tmp_path_factory.getbasetemp().parent  # this session's folder, above each worker's own
    out, built = root / name, root / f"{name}.built"
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not built.exists():
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir()
            build(out)
            built.touch()
    return out


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory) -> Path:
    from embedded import synth

    return _built_once(tmp_path_factory, "synth", lambda out: synth.make_dataset(out, n=240, seed=0))


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory, synth_dir) -> str:
    from embedded import defaults, tiny

    corpus = lambda: defaults.tokenizer_corpus([synth_dir / "train.jsonl"])  # noqa: E731
    out = _built_once(tmp_path_factory, "tiny", lambda out: tiny.build_tiny(out / "model", corpus(), seed=0))
    return str(out / "model")


@pytest.fixture(scope="session")
def tiny(tiny_dir):
    import model

    loaded = model.load(tiny_dir, device="cpu")
    loaded.model.eval()
    return loaded


def script(name: str):
    """scripts/NAME.py as a module (scripts/ is not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def grpo_proof():
    return script("grpo_proof")


@pytest.fixture(scope="session")
def ship_start():
    return script("ship_start")


@pytest.fixture(scope="session")
def perception_start():
    return script("perception_start")


@pytest.fixture(scope="session")
def pretrain_tiny():
    return script("pretrain_tiny")
