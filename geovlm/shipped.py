"""Starts shipped in the repository (embedded/weights/NAME): a model's files and the manifest that says where
they came from, written whole or not at all."""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path

MANIFEST = "manifest.json"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_start(files: list[Path], dest: Path, manifest: dict) -> None:
    """Copy `files` into the new folder `dest` with manifest.json beside them. Built under a temporary name
    and renamed when whole: an interrupted ship leaves no half a start."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    try:
        for p in files:
            shutil.copy2(p, tmp / p.name)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
        tmp.rename(dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
