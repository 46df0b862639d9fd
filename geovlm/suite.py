"""The GeoVLM-R1 benchmark suite: the paper's table as a manifest, and the table of a run beside it.

    python eval.py --suite geovlm-r1 --list                              # benchmarks, layouts, numbers
    python eval.py --suite geovlm-r1 --root /data/eo --model ckpt/grpo   # suite.md + suite.json in --out

BENCHMARKS below is the table of GeoVLM-R1's README (mustansarfiaz/GeoVLM-R1-Toolkit, README.md at dbe450c,
2026-03-27; its evaluation scripts were never released): one row per benchmark with the layout it is read from
under --root, the reader (geovlm/layouts.py, formats.py), and per column of the paper our metric and the
published numbers of GeoVLM-R1, EarthDial, GeoChat and Qwen2.5-VL-3B (None: "-" in the paper).

The paper's metrics are EarthDial's evaluation scripts (hiyamdebary/EarthDial, src/earthdial/eval/; GeoVLM-R1
shares an author and compares with EarthDial's numbers); which of ours reproduces each column:
  - referred detection, xBD detection ("mAP"), grounding @0.5/@0.25: `hit_precision@t`, the share of predicted
    boxes with IoU >= t to any true box (rs_detection/eval.py, rs_change_detection/eval_detection.py,
    rs_grounding_description/eval.py); small / medium / large by the record's size_group, single / multiple
    by its number of true boxes. On EarthDial's own GeoChat and NWPU result files this gives its published
    row.
  - RSVQA avg: `type_pooled`, accuracy over all presence / comparison (/ rural-urban) questions together
    (rs_vqa/eval.py's results reproduce EarthDial's 92.70 this way; the mean of the three types gives 93.11).
  - BigEarthNet: `sample_recall`, the mean share of an image's true labels named (rs_classification/eval.py).
  - captions: ROUGE-1 / ROUGE-L F1 averaged over references, NLTK METEOR (rs_image_caption/eval.py).
Values in the table are percentages, as the paper prints them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from geovlm import formats, layouts, parsing
from geovlm.tasks import RecordError

MODELS = ("GeoVLM-R1", "EarthDial", "GeoChat", "Qwen2.5-VL-3B")
SOURCE = "mustansarfiaz/GeoVLM-R1-Toolkit README.md at dbe450c (2026-03-27)"
SUITES = ("geovlm-r1",)


@dataclass(frozen=True)
class Column:
    """One column of the paper: its header, our metric, the published numbers (MODELS order, percent)."""

    name: str
    metric: str  # a key of the task's metrics, or "<split>/<key>" (a referring split: small, ..., multiple)
    published: tuple[float | None, ...]


@dataclass(frozen=True)
class Benchmark:
    """One benchmark of the paper's table and where under --root its data is read from."""

    name: str
    task: str  # our task (tasks.TASKS)
    reader: str  # a name in layouts.READERS
    path: str  # the annotation file or folder, relative to --root
    layout: str  # what must be there, in words (--list prints it; a missing benchmark names it)
    columns: tuple[Column, ...]
    images: str | None = None  # the image folder relative to --root; None: the reader's default
    options: dict = field(default_factory=dict)  # the reader's keyword arguments (split, task, referring)
    max_true_boxes: int | None = (
        None  # records with this many true boxes or more are left out (EarthDial's rule)
    )
    note: str = ""


def _c(name: str, metric: str, *published: float | None) -> Column:
    return Column(name, metric, tuple(published))


def _captions(r1: tuple, rl: tuple, m: tuple) -> tuple[Column, ...]:
    return _c("ROUGE-1", "rouge1", *r1), _c("ROUGE-L", "rouge_l", *rl), _c("METEOR", "meteor", *m)


def _referring(small, med, large, single, mult) -> tuple[Column, ...]:
    return tuple(
        _c(n, f"{s}/hit_precision@0.5", *v)
        for n, s, v in (
            ("small", "small", small),
            ("med.", "medium", med),
            ("large", "large", large),
            ("single", "single", single),
            ("mult.", "multiple", mult),
        )
    )


_XBD = "xBD/test/labels/*_post_disaster.json + xBD/test/images/*_{pre,post}_disaster.png (xView2 release)"
_ED = "an EarthDial-Dataset test split exported to json/jsonl: {image: [..], question, ground_truth}"

# published numbers: GeoVLM-R1, EarthDial, GeoChat, Qwen2.5-VL-3B (percent; None: not reported)
BENCHMARKS: tuple[Benchmark, ...] = (
    Benchmark(
        "AID (ZS)",
        "classification",
        "scene-folders",
        "AID",
        "AID/<class>/<image>.jpg (30 class folders)",
        (_c("acc", "accuracy", 88.46, 88.76, 72.03, 58.27),),
    ),
    Benchmark(
        "UCMerced (ZS)",
        "classification",
        "scene-folders",
        "UCMerced_LandUse/Images",
        "UCMerced_LandUse/Images/<class>/<image>.tif (21 class folders)",
        (_c("acc", "accuracy", 97.81, 92.42, 84.43, 60.86),),
    ),
    Benchmark(
        "WHU-RS19 (ZS)",
        "classification",
        "scene-folders",
        "WHU-RS19",
        "WHU-RS19/<class>/<image>.jpg (19 class folders)",
        (_c("acc", "accuracy", 97.91, 96.21, 80.09, 78.21),),
    ),
    Benchmark(
        "BigEarthNet",
        "multilabel",
        "bigearthnet",
        "BigEarthNet-v1.0",
        "BigEarthNet-v1.0/<patch>/<patch>_labels_metadata.json + <patch>_B04/_B03/_B02.tif "
        "(optional BigEarthNet-v1.0/test.csv: the patches kept)",
        (_c("recall", "sample_recall", 80.91, 73.03, 20.35, 24.75),),
        options={"split_file": "BigEarthNet-v1.0/test.csv"},
    ),
    Benchmark(
        "FMoW (temporal)",
        "temporal_classification",
        "fmow",
        "fmow-rgb/val",
        "fmow-rgb/val/<category>/<category>_<n>/<category>_<n>_<k>_rgb.jpg (+ .json)",
        (_c("acc", "accuracy", 76.93, 70.03, 59.20, 34.36),),
    ),
    Benchmark(
        "xBD image classification Set-1 (disaster type)",
        "temporal_classification",
        "xbd",
        "xBD/test",
        _XBD,
        (_c("acc", "accuracy", 98.93, 96.37, 53.32, 51.44),),
        options={"task": "disaster_type"},
        note="also the classification table's 'xBD Set 1 (Temporal)'",
    ),
    Benchmark(
        "xBD image classification Set-2 (any building affected)",
        "temporal_classification",
        "xbd",
        "xBD/test",
        _XBD,
        (_c("acc", "accuracy", 86.39, 82.85, 52.19, 56.16),),
        options={"task": "affected"},
    ),
    Benchmark(
        "xBD image classification Set-3 (buildings affected: none/one/two/many)",
        "temporal_classification",
        "xbd",
        "xBD/test",
        _XBD,
        (_c("acc", "accuracy", 68.60, 54.01, 49.51, 41.26),),
        options={"task": "affected_count"},
    ),
    Benchmark(
        "xBD region classification Set-1 (damage level)",
        "temporal_classification",
        "xbd",
        "xBD/test",
        _XBD,
        (_c("acc", "accuracy", 81.36, 53.70, 25.30, 71.19),),
        options={"task": "region_damage"},
    ),
    Benchmark(
        "xBD region classification Set-2 (building affected)",
        "temporal_classification",
        "xbd",
        "xBD/test",
        _XBD,
        (_c("acc", "accuracy", 83.55, 83.09, 57.65, 59.69),),
        options={"task": "region_affected"},
    ),
    Benchmark(
        "xBD object detection",
        "change_detection",
        "xbd",
        "xBD/test",
        _XBD,
        (
            _c("mAP@0.5", "hit_precision@0.5", 38.15, 7.6, 1.15, None),
            _c("mAP@0.25", "hit_precision@0.25", 48.13, 21.11, 7.2, None),
        ),
        options={"task": "detection"},
    ),
    Benchmark(
        "xBD referred detection",
        "change_detection",
        "xbd",
        "xBD/test",
        _XBD,
        (
            _c("mAP@0.5", "hit_precision@0.5", 24.52, 5.1, 0.2, None),
            _c("mAP@0.25", "hit_precision@0.25", 34.52, 13.09, 3.09, None),
        ),
        options={"task": "referred_detection"},
    ),
    Benchmark(
        "xBD image captioning",
        "change_caption",
        "earthdial",
        "EarthDial/xBD_image_captioning.jsonl",
        _ED,
        _captions((92.26, 87.26, 14.18, 11.98), (92.26, 87.26, 10.67, 8.12), (93.37, 88.53, 12.20, 19.94)),
        note="xBD's release has no captions: EarthDial's are the references",
    ),
    Benchmark(
        "GeoChat-Instruct referred detection",
        "detection",
        "bench-jsonl",
        "GeoChat-Bench/referring.jsonl",
        "GeoChat-Bench/referring.jsonl ({question_id, image, text, ground_truth, size_group}) + "
        "GeoChat-Bench/images/",
        _referring(
            (36.02, 11.43, 2.9, None),
            (54.72, 31.76, 13.6, None),
            (55.03, 39.07, 21.7, None),
            (57.1, 34.29, 16, None),
            (35.04, 13.41, 4.3, None),
        ),
        images="GeoChat-Bench/images",
        options={"referring": True},
    ),
    Benchmark(
        "NWPU VHR-10 referred detection (ZS)",
        "detection",
        "nwpu",
        "NWPU VHR-10 dataset/ground truth",
        "NWPU VHR-10 dataset/ground truth/*.txt + NWPU VHR-10 dataset/positive image set/*.jpg (official)",
        _referring(
            (34.44, 11.66, 2.5, None),
            (48.76, 14.21, 3.2, None),
            (64.91, 23.12, 14.7, None),
            (55.97, 25.37, 13.23, None),
            (41.45, 8.9, 1.9, None),
        ),
        images="NWPU VHR-10 dataset/positive image set",
        note="one query per image and class ('Locate every ship'); sizes by box area (COCO ranges)",
    ),
    Benchmark(
        "GeoChat-Instruct region captioning",
        "region_caption",
        "bench-jsonl",
        "GeoChat-Bench/region_captioning.jsonl",
        "GeoChat-Bench/region_captioning.jsonl ([identify] {<x1><y1><x2><y2>|θ}) + GeoChat-Bench/images/",
        _captions((75.92, 73.38, 72.77, None), (75.9, 73.34, 72.74, None), (66.43, 62.72, 61.9, None)),
        images="GeoChat-Bench/images",
    ),
    Benchmark(
        "NWPU VHR-10 region captioning (ZS)",
        "region_caption",
        "earthdial",
        "EarthDial/NWPU_VHR_10_region_captioning.jsonl",
        _ED + "; [identify] <box>[[..]]</box> questions",
        _captions((72.10, 72.14, 62.02, None), (72.10, 72.14, 62.02, None), (55.49, 60.01, 53.31, None)),
    ),
    Benchmark(
        "NWPU VHR-10 grounding description (ZS)",
        "grounded_caption",
        "earthdial",
        "EarthDial/NWPU_VHR_10_grounding_description.jsonl",
        _ED + "; [grounding] answers with [[..]] boxes",
        (
            _c("@0.5", "box_hit_precision@0.5", 38.74, 17.07, 2.2, None),
            _c("@0.25", "box_hit_precision@0.25", 61.45, 41.00, 15.27, None),
            *_captions((31.31, 27.05, 21.46, None), (30.08, 26.35, 20.74, None), (26.10, 23.12, 21.38, None)),
        ),
        max_true_boxes=50,  # rs_grounding_description/eval.py scores images with fewer than 50 objects
        note="the paper's 'grounding' (@0.5, @0.25) and 'grounding description' columns: one set of records",
    ),
    Benchmark(
        "Dubai-CC change captions",
        "change_caption",
        "levir-cc",
        "Dubai-CC/DubaiCCcaptions.json",
        "Dubai-CC/DubaiCCcaptions.json (LEVIR-CC json) + Dubai-CC/images/{test}/{A,B}/",
        _captions((36.60, 31.94, 14.21, 14.41), (34.15, 30.66, 14.19, 13.62), (61.22, 55.83, 28.91, 27.59)),
        images="Dubai-CC/images",
        options={"split": "test"},
    ),
    Benchmark(
        "LEVIR-MCI change captions",
        "change_caption",
        "levir-cc",
        "LEVIR-MCI-dataset/LevirCCcaptions.json",
        "LEVIR-MCI-dataset/LevirCCcaptions.json + LEVIR-MCI-dataset/images/test/{A,B}/ (official)",
        _captions((37.85, 33.78, 17.15, 12.27), (34.02, 30.47, 35.42, 10.11), (73.56, 74.80, 12.35, 26.11)),
        images="LEVIR-MCI-dataset/images",
        options={"split": "test"},
        note="GeoChat's LEVIR-MCI numbers as printed (ROUGE-L above ROUGE-1)",
    ),
    Benchmark(
        "MUDS change captions",
        "change_caption",
        "earthdial",
        "EarthDial/MUDS.jsonl",
        _ED + "; two images a record (first and last of the series)",
        _captions((34.07, 28.16, 12.28, 12.13), (27.65, 24.03, 12.23, 9.30), (45.94, 33.56, 15.98, 18.22)),
    ),
    Benchmark(
        "SYSU-CC change captions (ZS)",
        "change_caption",
        "levir-cc",
        "SYSU-CC/SYSUCCcaptions.json",
        "SYSU-CC/SYSUCCcaptions.json (LEVIR-CC json) + SYSU-CC/images/test/{A,B}/",
        _captions((19.64, 18.03, 13.45, 13.61), (18.46, 17.42, 12.02, 10.34), (15.45, 14.98, 13.96, 16.06)),
        images="SYSU-CC/images",
        options={"split": "test"},
    ),
    Benchmark(
        "NWPU-Captions",
        "caption",
        "caption-json",
        "NWPU-Captions/dataset_nwpu.json",
        "NWPU-Captions/dataset_nwpu.json ({class: [{filename, split, raw, raw_1..raw_4}]}) + "
        "NWPU-RESISC45/<class>/<image>.jpg",
        _captions((46.94, 45.84, 14.86, 18.82), (40.96, 39.96, 12.54, 14.72), (82.00, 80.61, 15.21, 26.79)),
        images="NWPU-RESISC45",
        options={"split": "test"},
    ),
    Benchmark(
        "RSICD captions",
        "caption",
        "caption-json",
        "RSICD/dataset_rsicd.json",
        "RSICD/dataset_rsicd.json (Karpathy json) + RSICD/RSICD_images/",
        _captions((34.64, 33.77, 13.48, 21.37), (28.63, 27.61, 11.59, 16.42), (56.54, 56.18, 12.39, 26.53)),
        images="RSICD/RSICD_images",
        options={"split": "test"},
    ),
    Benchmark(
        "RSITMD captions (ZS)",
        "caption",
        "caption-json",
        "RSITMD/dataset_RSITMD.json",
        "RSITMD/dataset_RSITMD.json (Karpathy json) + RSITMD/images/",
        _captions((30.62, 26.74, 13.41, 18.79), (25.39, 21.72, 11.50, 15.02), (39.07, 34.06, 12.33, 25.05)),
        images="RSITMD/images",
        options={"split": "test"},
    ),
    Benchmark(
        "RSVQA-LRBEN",
        "vqa",
        "rsvqa",
        "RSVQA_LR",
        "RSVQA_LR/LR_split_test_{questions,answers,images}.json + RSVQA_LR/Images_LR/<id>.tif",
        (
            _c("presence", "acc_presence", 91.81, 92.58, 91.09, 59.59),
            _c("comp", "acc_comp", 93.20, 92.75, 90.33, 75.04),
            _c("R/U", "acc_rural_urban", 96, 94.00, 94.00, 63.00),
            _c("avg", "type_pooled", 92.66, 92.70, 90.70, 68.40),
        ),
        images="RSVQA_LR/Images_LR",
        options={"split": "test"},
    ),
    Benchmark(
        "RSVQA-HRBEN (ZS)",
        "vqa",
        "rsvqa",
        "RSVQA_HR",
        "RSVQA_HR/USGS_split_test_{questions,answers,images}.json + RSVQA_HR/Data/<id>.tif",
        (
            _c("presence", "acc_presence", 66.38, 58.89, 58.45, 59.89),
            _c("comp", "acc_comp", 82.26, 83.11, 83.19, 72.26),
            _c("avg", "type_pooled", 75.27, 72.45, 72.30, 66.81),
        ),
        images="RSVQA_HR/Data",
        options={"split": "test"},
    ),
)


def get_suite(name: str) -> tuple[Benchmark, ...]:
    if name not in SUITES:
        raise ValueError(f"unknown suite {name!r}; known: {', '.join(SUITES)}")
    return BENCHMARKS


def slug(name: str) -> str:
    """A benchmark's name as a file name: "xBD object detection" -> "xbd_object_detection"."""
    return "_".join("".join(ch if ch.isalnum() else " " for ch in name.lower()).split())


def _cell(v: float | None) -> str:
    return "–" if v is None else f"{v:g}"


def list_table(benchmarks: Sequence[Benchmark] = BENCHMARKS) -> str:
    """Every benchmark with its task, reader, layout under --root and the published numbers (for --list)."""
    lines = [
        f"GeoVLM-R1 suite: {len(benchmarks)} benchmarks; published numbers from {SOURCE}.",
        "",
        "| benchmark | task | reader | layout under --root | column | our metric | "
        + " | ".join(MODELS)
        + " |",
        "|---|---|---|---|---|---|" + "---:|" * len(MODELS),
    ]
    for b in benchmarks:
        for k, c in enumerate(b.columns):
            head = f"{b.name} | {b.task} | {b.reader} | {b.layout}" if k == 0 else " | | | "
            lines.append(
                f"| {head} | {c.name} | {c.metric} | " + " | ".join(_cell(v) for v in c.published) + " |"
            )
    notes = [f"- {b.name}: {b.note}" for b in benchmarks if b.note]
    return "\n".join(lines + ([""] + notes if notes else []))


# ----------------------------------------------------------------------------- finding and converting


@dataclass
class Prepared:
    """What the suite found for one benchmark: a converted JSONL, or why not."""

    benchmark: Benchmark
    data: str | None = None  # the converted records (cached)
    status: str = "ready"  # ready | missing | error
    message: str = ""  # missing: what was looked for; error: the reader's one line
    summary: str = ""  # the conversion's counts (formats.Conversion.summary)


def _reader_kwargs(b: Benchmark, root: str, cache: str, skip_bad: bool) -> dict:
    kwargs = {"dataset": b.name, "skip_bad": skip_bad}
    for key, value in b.options.items():
        if key.endswith("_file"):  # an optional file under --root (e.g. BigEarthNet's test.csv)
            value = os.path.join(root, value) if os.path.isfile(os.path.join(root, value)) else None
        kwargs[key] = value
    if b.reader == "bigearthnet":
        kwargs["rgb_dir"] = os.path.join(cache, "bigearthnet_rgb")  # composed pictures live beside the cache
    return kwargs


def _true_boxes(answer) -> list:
    return parsing.answer_boxes(
        answer.get("boxes") if isinstance(answer, dict) else answer
    )  # grounded_caption


def _keep(b: Benchmark, conv: formats.Conversion) -> None:
    """Leave out the records the benchmark does not score: other tasks (a stray question in a mixed file),
    and records with `max_true_boxes` true boxes or more; counted as skipped."""
    kept = []
    for rec in conv.records:
        if rec.task != b.task:
            conv.skipped[f"{rec.task} record, not {b.task}"] += 1
            conv.first.setdefault(f"{rec.task} record, not {b.task}", rec.source or rec.id)
        elif b.max_true_boxes and len(_true_boxes(rec.answer)) >= b.max_true_boxes:
            conv.skipped[f"{b.max_true_boxes} or more true boxes"] += 1
            conv.first.setdefault(f"{b.max_true_boxes} or more true boxes", rec.source or rec.id)
        else:
            kept.append(rec)
    conv.records = kept


def prepare(benchmarks: Sequence[Benchmark], root: str, cache: str, skip_bad: bool = False) -> list[Prepared]:
    """Find each benchmark under `root` and convert it once to `cache/<slug>.jsonl`, reused while it was
    converted from the same path (`<slug>.source` says which; delete the jsonl to convert again). A missing
    path or a reader's error is a status, never an exception."""
    out = []
    for b in benchmarks:
        target = os.path.join(cache, f"{slug(b.name)}.jsonl")
        where = os.path.abspath(os.path.join(root, b.path))
        source = target[: -len(".jsonl")] + ".source"
        if os.path.isfile(target) and os.path.isfile(source) and Path(source).read_text() == where:
            out.append(Prepared(b, target, summary=f"converted earlier from {where} (cached)"))
            continue
        if not os.path.exists(where):
            out.append(Prepared(b, status="missing", message=f"looked for {where}: {b.layout}"))
            continue
        images = os.path.join(root, b.images) if b.images else None
        try:
            conv = layouts.READERS[b.reader](where, images, **_reader_kwargs(b, root, cache, skip_bad))
            _keep(b, conv)
            if not conv.records:
                raise RecordError(f"{where}: no {b.task} records ({conv.summary()})")
            formats.write_jsonl(conv.records, target)
            Path(source).write_text(where)
        except (RecordError, OSError, ValueError) as e:
            msg = f"{e.filename}: {e.strerror}" if isinstance(e, OSError) and e.filename else str(e)
            out.append(Prepared(b, status="error", message=msg))
            continue
        out.append(Prepared(b, target, summary=conv.summary()))
    return out


# ----------------------------------------------------------------------------- the table


def metric_value(metrics: dict, task: str, metric: str) -> float | None:
    """A column's value in eval's metrics dict: the task's `key`, or the referring split's `<split>/<key>`."""
    split, _, key = metric.rpartition("/")
    if split:
        value = metrics.get("splits", {}).get("all", {}).get(task, {}).get(split, {}).get(key)
    else:
        value = metrics.get("tasks", {}).get(task, {}).get(key)
    return None if value is None else float(value)


def table_rows(prepared: Sequence[Prepared], results: dict[str, dict]) -> list[dict]:
    """One row per (benchmark, column) evaluated: n, ours (percent) and the paper's numbers."""
    rows = []
    for p in prepared:
        metrics = results.get(p.benchmark.name)
        if metrics is None:
            continue
        b = p.benchmark
        for c in b.columns:
            value = metric_value(metrics, b.task, c.metric)
            n = metric_value(metrics, b.task, c.metric.rpartition("/")[0] + "/n" if "/" in c.metric else "n")
            rows.append(
                {
                    "benchmark": b.name,
                    "task": b.task,
                    "metric": c.name,
                    "key": c.metric,
                    "n": int(n or 0),
                    "ours": None if value is None else 100 * value,
                    "published": dict(zip(MODELS, c.published)),
                }
            )
    return rows


def write_table(prepared: Sequence[Prepared], results: dict[str, dict], out: str | Path, model: str) -> str:
    """suite.md and suite.json in `out`: the rows of every benchmark evaluated, one line per benchmark that
    was missing or failed. Returns the markdown."""
    rows = table_rows(prepared, results)
    lines = [
        f"# GeoVLM-R1 suite: {model}",
        "",
        f"Published numbers: {SOURCE}. Values in percent; n: the records evaluated (a referring column: "
        "those of its split).",
        "",
        "| benchmark | metric | n | ours | " + " | ".join(MODELS) + " |",
        "|---|---|---:|---:|" + "---:|" * len(MODELS),
    ]
    for r in rows:
        ours = "n/a" if r["ours"] is None else f"{r['ours']:.2f}"
        lines.append(
            f"| {r['benchmark']} | {r['metric']} | {r['n']} | {ours} | "
            + " | ".join(_cell(r["published"][m]) for m in MODELS)
            + " |"
        )
    if any(r["ours"] is None for r in rows):
        lines += [
            "",
            "n/a: not computed in this run; the benchmark's table.md says why (e.g. METEOR without "
            "WordNet, or --no-caption-extras).",
        ]
    others = [p for p in prepared if p.status != "ready" or p.benchmark.name not in results]
    if others:
        lines += ["", "Not evaluated:"]
        lines += [f"- {p.benchmark.name}: {p.status}: {p.message or 'no result'}" for p in others]
    text = "\n".join(lines) + "\n"
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "suite.md").write_text(text)
    status = [
        {
            "benchmark": p.benchmark.name,
            "status": "evaluated" if p.benchmark.name in results else p.status,
            "message": p.message,
            "data": p.data,
            "conversion": p.summary,
        }
        for p in prepared
    ]
    (out / "suite.json").write_text(
        json.dumps({"model": model, "source": SOURCE, "rows": rows, "benchmarks": status}, indent=2) + "\n"
    )
    return text


def run(prepared: Sequence[Prepared], evaluate: Callable[[Prepared], dict | None]) -> dict[str, dict]:
    """evaluate(p) -> eval's metrics dict (None on ranks other than 0) for every benchmark that is ready."""
    results = {}
    for p in prepared:
        if p.status == "ready":
            metrics = evaluate(p)
            if metrics is not None:
                results[p.benchmark.name] = metrics
    return results
