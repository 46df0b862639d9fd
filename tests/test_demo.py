"""The demo's before/after table: n, intervals, and a change that means something only when its paired
interval excludes 0 (issue 20, item 9)."""

import json
import re

import demo
import pytest

from geovlm import metrics
from geovlm.frames import Frame


def _predictions(out, records, right: int) -> None:
    """predictions.jsonl of an evaluation that answers the first `right` records correctly."""
    samples = []
    for i, rec in enumerate(records):
        answer = rec.answer if i < right else "not " + str(rec.answer)
        frame = Frame("pixels", tuple(rec.image_sizes[0]), tuple(rec.image_sizes[0]))
        samples.append(
            metrics.Sample(
                task=rec.task,
                answer=rec.answer,
                completion=f"<think>x</think><answer>{answer}</answer>",
                frame=frame,
                meta=rec.meta,
                id=str(rec.id),
            )
        )
    metrics.score_samples(samples, out, caption_extras=False, quiet=True)


def test_the_change_table_gives_n_and_paired_intervals(synth_dir, tmp_path):
    import data

    vqa = [r for r in data.load_records(synth_dir / "train.jsonl") if r.task == "vqa"]
    _predictions(tmp_path / "before", vqa, right=4)
    _predictions(tmp_path / "after", vqa, right=12)
    _predictions(tmp_path / "same", vqa, right=4)
    table = demo.change_table(tmp_path / "before", tmp_path / "after", ["vqa"])
    row = next(
        line
        for line in table.splitlines()
        if line.startswith(f"| vqa (GRPO's task) | {len(vqa)} | accuracy |")
    )
    assert len(vqa) == 16
    low, high = map(float, re.search(r"\+0\.500 \[([+-][\d.]+), ([+-][\d.]+)\]", row).groups())
    assert 0 < low < 0.5 < high  # 8 more right answers of 16: a change the interval cannot explain away
    same = demo.change_table(tmp_path / "before", tmp_path / "same", ["vqa"])
    assert "+0.000 [+0.000, +0.000]" in same and "contains 0 is not distinguishable from noise" in same


@pytest.mark.slow(minutes=0.4)
def test_the_demo_runs_end_to_end_on_a_small_budget(tmp_path, capsys):
    """make demo's path, shortened: the embedded start evaluated, GRPO on detection, evaluated again with the
    images permuted, the table and the viewer written into a new dated folder."""
    out = demo.main(["--grpo-steps", "2", "--prompts", "2", "--eval-records", "4", "--out", str(tmp_path)])
    said = capsys.readouterr().out
    assert out.parent == tmp_path and "made by `python scripts/perception_start.py" in said
    assert "| detection (GRPO's task) | 4 | f1@0.5 |" in said and "images permuted" in said
    for part in ("eval-start", "eval-grpo", "eval-permuted"):
        assert len((out / part / "predictions.jsonl").read_text().splitlines()) == 4
    assert all((out / part / "predictions.html").exists() for part in ("eval-start", "eval-grpo"))
    assert (out / "grpo" / "final").is_dir()
    steps = [r for r in map(json.loads, open(out / "grpo" / "log.jsonl")) if "reward_mean" in r]
    assert [r["step"] for r in steps] == [1, 2] and all("acc/detection" in r for r in steps)


def test_a_demo_never_writes_into_an_existing_dated_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(demo.time, "strftime", lambda fmt: "20260101-000000")
    (tmp_path / "20260101-000000" / "eval-start").mkdir(parents=True)
    with pytest.raises(SystemExit, match="exists already"):
        demo.main(["--out", str(tmp_path)])
    assert [p.name for p in (tmp_path / "20260101-000000").iterdir()] == ["eval-start"]
