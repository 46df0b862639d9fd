"""Shared fixtures: one synthetic data set and one tiny model per test session (built offline)."""

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pytest_collection_modifyitems(config, items):
    """The slow tests first: with one worker per core (make test: pytest -n auto), the minutes-long ones start at
    once on different cores instead of meeting at the end of one worker's queue."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)  # stable: file order otherwise


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory) -> Path:
    import synth

    out = tmp_path_factory.mktemp("synth")
    synth.make_dataset(out, n=240, seed=0)
    return out


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory, synth_dir) -> str:
    import defaults
    import tiny

    out = tmp_path_factory.mktemp("tiny") / "model"
    return tiny.build_tiny(out, defaults.tokenizer_corpus([synth_dir / "train.jsonl"]), seed=0)


@pytest.fixture(scope="session")
def tiny(tiny_dir):
    import model

    loaded = model.load(tiny_dir, device="cpu")
    loaded.model.eval()
    return loaded


@pytest.fixture(scope="session")
def grpo_proof():
    """scripts/grpo_proof.py as a module (scripts/ is not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("grpo_proof", ROOT / "scripts" / "grpo_proof.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
