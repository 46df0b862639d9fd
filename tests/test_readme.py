"""The README stays what a newcomer needs: short, its figure present, its line counts true, its links alive,
and no commit hashes (those live in docs/, beside the figures they date)."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_short_with_its_figure():
    assert len(README.splitlines()) <= 250
    figures = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", README)
    assert figures and all((ROOT / f).is_file() for f in figures), figures


def test_reading_grpo_line_counts_are_true():
    rows = re.findall(r"^\| `([\w/]+\.py)` \| (\d+) \|", README, flags=re.M)
    assert len(rows) >= 4
    for path, lines in rows:
        assert len((ROOT / path).read_text().splitlines()) == int(lines), f"README: {path} has {lines} lines"


def test_links_point_at_files():
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", README):
        assert (ROOT / target).exists(), target


def test_no_commit_hashes():
    assert not re.findall(r"\b(?=[0-9a-f]*[a-f])(?=[0-9a-f]*\d)[0-9a-f]{7,40}\b", README)
