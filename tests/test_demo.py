"""The demo's before/after table: n, intervals, and a change that means something only when its paired
interval excludes 0 (issue 20, item 9)."""

import re

import demo

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
