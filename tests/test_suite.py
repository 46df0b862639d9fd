"""The GeoVLM-R1 suite (geovlm/suite.py, eval.py --suite): the manifest, the metrics the paper's columns need
(checked by hand and against EarthDial's published numbers), and one run over a fake copy of every layout."""

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import fake_suite
import pytest

import eval as eval_cli
from geovlm import layouts, metrics, parsing, suite
from geovlm.tasks import TASKS

ROOT = Path(__file__).resolve().parents[1]
N_COLUMNS = sum(len(b.columns) for b in suite.BENCHMARKS)


# ----------------------------------------------------------------------------- the manifest


def test_manifest_covers_the_papers_table():
    names = [b.name for b in suite.BENCHMARKS]
    assert len(names) == len(set(names)) == 27 and N_COLUMNS == 66
    for b in suite.BENCHMARKS:
        assert b.task in TASKS and b.reader in layouts.READERS and b.columns, b.name
        assert all(len(c.published) == len(suite.MODELS) for c in b.columns), b.name
        assert all(v is None or 0 <= v <= 100 for c in b.columns for v in c.published), b.name
    by_name = {b.name: b for b in suite.BENCHMARKS}
    # a few numbers of the README (GeoVLM-R1, EarthDial, GeoChat, Qwen2.5-VL-3B)
    assert by_name["AID (ZS)"].columns[0].published == (88.46, 88.76, 72.03, 58.27)
    assert by_name["xBD object detection"].columns[1].published == (48.13, 21.11, 7.2, None)
    assert by_name["RSVQA-HRBEN (ZS)"].columns[-1].published == (75.27, 72.45, 72.30, 66.81)
    assert [c.metric for c in by_name["NWPU VHR-10 referred detection (ZS)"].columns] == [
        f"{s}/hit_precision@0.5" for s in ("small", "medium", "large", "single", "multiple")
    ]


def test_list_prints_every_benchmark_layout_and_number(capsys):
    assert eval_cli.main(["--suite", "geovlm-r1", "--list"]) == 0
    out = capsys.readouterr().out
    for b in suite.BENCHMARKS:
        assert b.name in out and b.layout in out
        for c in b.columns:
            assert any(
                f"| {c.name} | {c.metric} | " + " | ".join(suite._cell(v) for v in c.published) in line
                for line in out.splitlines()
            ), (b.name, c.name)


# ----------------------------------------------------------------------------- metrics


def test_hit_precision_by_hand():
    gts = [[[0, 0, 10, 10], [20, 20, 30, 30]], [[0, 0, 10, 10]]]
    # image 1: two boxes on the same truth (both hit: not one-to-one), one miss; image 2: one box at IoU 0.36
    preds = [[[0, 0, 10, 10], [1, 0, 10, 10], [50, 50, 60, 60]], [[0, 0, 6, 6]]]
    assert metrics.hit_precision(preds, gts, 0.5) == pytest.approx(2 / 4)
    assert metrics.hit_precision(preds, gts, 0.25) == pytest.approx(3 / 4)
    assert metrics.hit_precision([[], None], gts, 0.5) == 0.0
    det = metrics.detection_metrics(preds, gts)
    assert det["hit_precision@0.5"] == pytest.approx(0.5) and det["precision@0.5"] == pytest.approx(1 / 4)


def test_referring_splits_reproduce_earthdials_definition():
    """EarthDial's rs_detection/eval.py on two records: per split, predicted boxes hitting any true box over
    predicted boxes; size from the record's size_group, single / multiple from its number of true boxes."""
    samples = [
        metrics.Sample(
            "detection",
            [[0, 0, 10, 10], [20, 20, 30, 30]],
            "<answer>[0, 0, 10, 10], [50, 50, 60, 60], [20, 20, 30, 31]</answer>",
            meta={"size_group": "small"},
        ),
        metrics.Sample(
            "detection", [[0, 0, 40, 40]], "<answer>[0, 0, 40, 40]</answer>", meta={"size_group": "large"}
        ),
    ]
    m = metrics.score_samples(samples, caption_extras=False, quiet=True)
    splits = m["splits"]["all"]["detection"]
    assert splits["small"]["hit_precision@0.5"] == pytest.approx(2 / 3)
    assert splits["multiple"]["hit_precision@0.5"] == pytest.approx(2 / 3)
    assert splits["large"]["hit_precision@0.5"] == splits["single"]["hit_precision@0.5"] == 1.0
    assert suite.metric_value(m, "detection", "small/hit_precision@0.5") == pytest.approx(2 / 3)
    assert suite.metric_value(m, "detection", "hit_precision@0.5") == pytest.approx(3 / 4)


def test_rsvqa_average_is_pooled_as_published():
    """EarthDial's RSVQA-LR results (rs_vqa/results/RSVQA_LR.jsonl) hold 2955 presence (2736 right), 4002
    comparison (3712), 100 rural/urban (94) and 2947 count (816) questions; its published row is 92.58 /
    92.75 / 94.00 / avg 92.70: the average pools the questions of the three types (the mean of the types is
    93.11)."""
    counts = {"presence": (2955, 2736), "comp": (4002, 3712), "rural_urban": (100, 94), "count": (2947, 816)}
    preds, gts, types = [], [], []
    for t, (n, right) in counts.items():
        preds += ["yes"] * right + ["no"] * (n - right)
        gts += ["yes"] * n
        types += [t] * n
    m = metrics.vqa_metrics(preds, gts, types)
    assert round(100 * m["acc_presence"], 2) == 92.59 and round(100 * m["acc_comp"], 2) == 92.75
    assert round(100 * m["type_pooled"], 2) == 92.70
    assert round(100 * m["type_average"], 2) == 93.11


def test_sample_recall_by_hand():
    m = metrics.multilabel_metrics(
        [["sea", "forest"], ["urban"], None], [["sea", "pastures"], ["urban"], ["sea"]]
    )
    assert m["sample_recall"] == pytest.approx((1 / 2 + 1 + 0) / 3)


# ----------------------------------------------------------------------------- the whole suite


def _rows(md: str) -> list[list[str]]:
    return [
        [c.strip() for c in line.strip("|").split("|")]
        for line in md.splitlines()
        if line.startswith("| ") and not line.startswith("| benchmark")
    ]


@pytest.mark.slow(minutes=0.5)
def test_suite_on_fake_layouts_with_the_tiny_model(tiny_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(metrics, "coco_status", lambda: "off in this test (a JVM start per benchmark)")
    root = fake_suite.make_root(tmp_path / "root")
    out = tmp_path / "out"
    argv = [
        "--suite",
        "geovlm-r1",
        "--root",
        str(root),
        "--model",
        tiny_dir,
        "--out",
        str(out),
        "--limit",
        "3",
        "--max-new-tokens",
        "6",
        "--batch-size",
        "4",
    ]
    assert eval_cli.main(argv) == 0
    md = (out / "suite.md").read_text()
    rows = _rows(md)
    assert len(rows) == N_COLUMNS and "Not evaluated" not in md
    assert all(r[3] != "n/a" and 0 <= float(r[3]) <= 100 for r in rows), [r for r in rows if r[3] == "n/a"]
    table = json.loads((out / "suite.json").read_text())
    by = {(r["benchmark"], r["metric"]): r for r in table["rows"]}
    assert by[("AID (ZS)", "acc")]["n"] == 3 and by[("AID (ZS)", "acc")]["published"]["GeoVLM-R1"] == 88.46
    assert by[("xBD region classification Set-1 (damage level)", "acc")]["n"] == 3
    assert by[("GeoChat-Instruct referred detection", "med.")]["n"] == 1
    assert by[("NWPU VHR-10 referred detection (ZS)", "large")]["n"] == 1
    # ours recomputed by hand from the benchmark's predictions: xBD detection's hit precision at 0.25
    preds = [
        json.loads(line)
        for line in (out / "xbd_object_detection" / "predictions.jsonl").read_text().splitlines()
    ]
    boxes = [p["parsed"] if isinstance(p["parsed"], list) else [] for p in preds]
    hits = sum(
        any(parsing.box_iou(b, g) >= 0.25 for g in p["answer"]) for p, bs in zip(preds, boxes) for b in bs
    )
    n = sum(len(bs) for bs in boxes)
    assert by[("xBD object detection", "mAP@0.25")]["ours"] == pytest.approx(100 * hits / n if n else 0.0)
    # accuracy from the predictions: the share whose parsed answer equals the label
    cls = [
        json.loads(line) for line in (out / "fmow_temporal" / "predictions.jsonl").read_text().splitlines()
    ]
    acc = sum(c["parsed"] == c["answer"] for c in cls) / len(cls)
    assert by[("FMoW (temporal)", "acc")]["ours"] == pytest.approx(100 * acc)
    assert sorted(p.name for p in (out / "data").glob("*.jsonl")) == sorted(
        f"{suite.slug(b.name)}.jsonl" for b in suite.BENCHMARKS
    )


def test_suite_missing_and_bad_benchmarks_are_one_line(tmp_path, capsys, monkeypatch):
    """A missing benchmark is one line naming what was looked for; a bad label file one line naming file and
    field; nothing else runs (no benchmark left: no model is built or loaded)."""
    root = tmp_path / "root"
    fake_suite.xbd(root / "xBD" / "test")
    labels = root / "xBD" / "test" / "labels" / "midwest-flooding_00000001_post_disaster.json"
    labels.write_text(labels.read_text().replace('"disaster_type": "flooding"', '"disaster": "x"'))
    out = tmp_path / "out"
    assert eval_cli.main(["--suite", "geovlm-r1", "--root", str(root), "--out", str(out)]) == 0
    md = (out / "suite.md").read_text()
    assert f"- AID (ZS): missing: looked for {root}/AID: AID/<class>/<image>.jpg" in md
    assert re.search(
        rf"- xBD object detection: error: {re.escape(str(labels))}: field 'metadata.disaster_type' is "
        "missing",
        md,
    )
    assert len([line for line in md.splitlines() if line.startswith("- ")]) == 27 and not _rows(md)
    status = {b["benchmark"]: b["status"] for b in json.loads((out / "suite.json").read_text())["benchmarks"]}
    assert status["AID (ZS)"] == "missing" and status["xBD object detection"] == "error"
    # --skip-bad: the bad pair is skipped and counted, the other converts
    assert (
        suite.prepare(
            [b for b in suite.BENCHMARKS if b.name == "xBD object detection"],
            str(root),
            str(tmp_path / "cache"),
            skip_bad=True,
        )[0].status
        == "ready"
    )
    with pytest.raises(SystemExit, match="--root .*: no such folder"):
        eval_cli.main(["--suite", "geovlm-r1", "--root", str(tmp_path / "nowhere")])


def test_prepare_keeps_what_the_benchmark_scores_and_caches_by_source(tmp_path):
    """EarthDial scores grounding descriptions of images with fewer than 50 objects; a stray question of
    another task is left out (counted); the cache is reused for the same path and rebuilt for another root."""
    bench = [b for b in suite.BENCHMARKS if b.name == "NWPU VHR-10 grounding description (ZS)"]
    root = fake_suite.make_root(tmp_path / "root")
    path = root / bench[0].path
    many = "".join(f"[[{k}, {k}, {k + 2}, {k + 2}, 0]]" for k in range(50))
    lines = path.read_text().splitlines()
    img = json.loads(lines[0])["image"]
    extra = [
        {
            "id": "g50",
            "image": img,
            "question": "[grounding] Describe the image.",
            "ground_truth": f"cars {many}",
        },
        {"id": "q", "image": img, "question": "Is there a plane?", "ground_truth": "yes"},
    ]
    path.write_text("\n".join(lines + [json.dumps(e) for e in extra]) + "\n")
    p = suite.prepare(bench, str(root), str(tmp_path / "cache"))[0]
    assert p.status == "ready" and "kept 2 record(s)" in p.summary
    assert "1 50 or more true boxes" in p.summary and "1 vqa record, not grounded_caption" in p.summary
    assert suite.prepare(bench, str(root), str(tmp_path / "cache"))[0].summary.startswith("converted earlier")
    other = fake_suite.make_root(tmp_path / "other")
    again = suite.prepare(bench, str(other), str(tmp_path / "cache"))[0]
    assert (
        again.status == "ready" and "kept 2 record(s)" in again.summary and "50 or more" not in again.summary
    )


@pytest.mark.slow(minutes=0.4)
def test_suite_under_torchrun_matches_one_process(tiny_dir, tmp_path):
    """Two ranks (gloo on the CPU) shard each benchmark's records and rank 0 writes the same table."""
    root = tmp_path / "root"
    fake_suite.scene_folders(root / "AID", ("BareLand", "Forest"), per_class=3)
    fake_suite.rsvqa(root, "LR_split_test", "RSVQA_LR/Images_LR")
    args = [
        "--suite",
        "geovlm-r1",
        "--root",
        str(root),
        "--model",
        tiny_dir,
        "--max-new-tokens",
        "6",
        "--no-caption-extras",
    ]
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        f"--master_port={port}",
        "eval.py",
    ]
    run = subprocess.run(
        cmd + args + ["--out", str(tmp_path / "two")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert eval_cli.main(args + ["--out", str(tmp_path / "one")]) == 0
    one, two = (json.loads((tmp_path / d / "suite.json").read_text())["rows"] for d in ("one", "two"))
    assert one == two and len(one) == 1 + 4 and one[0]["n"] == 6 and one[-1]["n"] == 4
