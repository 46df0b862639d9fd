"""synth.py: reproducibility, the record schema, and ground truth checked against the PNG pixels.

Pixel checks recover objects with their own colour rule (|pixel - class colour| <= tolerance in
every channel, 8-connected components) instead of trusting synth's bookkeeping.
"""

import functools
import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from embedded import synth

ROOT = Path(__file__).resolve().parents[1]
PIXEL_TASKS = [
    "counting",
    "grounding",
    "detection",
    "change_detection",
    "region_caption",
    "grounded_caption",
    "multilabel",
    "vqa",
    "temporal_classification",
]


# ----------------------------------------------------------------------------- helpers


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def records(d: Path) -> list[dict]:
    return read(d / "train.jsonl") + read(d / "test.jsonl")


@functools.cache
def load(path: str) -> np.ndarray:
    img = np.asarray(Image.open(path).convert("RGB"))
    img.flags.writeable = False
    return img


def images(d: Path, rec: dict) -> list[np.ndarray]:
    return [load(str(d / p)) for p in rec["images"]]


def class_mask(img: np.ndarray, cls: str) -> np.ndarray:
    out = np.ones(img.shape[:2], bool)
    for ch, v in enumerate(synth.CLASS_RGB[cls]):  # per channel on 2-D views: faster than .all(-1)
        out &= (img[..., ch] >= max(0, v - synth.COLOUR_TOL)) & (
            img[..., ch] <= min(255, v + synth.COLOUR_TOL)
        )
    return out


_COMPONENTS: dict[tuple[int, str], list] = {}


def components(img: np.ndarray, cls: str) -> list[tuple[list[int], int]]:
    """(box [x1, y1, x2, y2], pixel count) of each 8-connected blob of the class colour."""
    key = (id(img), cls)  # images come from the `load` cache, so ids are stable
    if key not in _COMPONENTS:
        mask = class_mask(img, cls)
        lab, n = ndimage.label(mask, np.ones((3, 3)))
        sizes = np.bincount(lab.ravel(), minlength=n + 1)[1:]
        _COMPONENTS[key] = [
            ([s[1].start, s[0].start, s[1].stop, s[0].stop], int(a))
            for s, a in zip(ndimage.find_objects(lab), sizes)
        ]
    return _COMPONENTS[key]


def all_boxes(img: np.ndarray) -> dict[tuple, str]:
    return {tuple(b): c for c in synth.CLASSES for b, _ in components(img, c)}


def file_hashes(d: Path) -> dict[str, str]:
    return {
        str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(d.rglob("*"))
        if p.is_file()
    }


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def ds(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth_all")
    info = synth.make_dataset(out, n=48, seed=3)
    assert info["n_train"] + info["n_test"] == 48
    return out


@pytest.fixture(scope="module")
def pix(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth_pix")
    synth.make_dataset(out, n=72, seed=4, tasks=PIXEL_TASKS)
    return out


@pytest.fixture(scope="module")
def both(ds, pix) -> list[tuple[Path, dict]]:
    return [(d, r) for d in (ds, pix) for r in records(d)]


# ----------------------------------------------------------------------------- reproducibility


def test_same_seed_same_bytes_other_seed_different(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    synth.make_dataset(a, n=24, seed=7)
    synth.make_dataset(b, n=24, seed=7, workers=2)  # a process pool must not change a byte
    synth.make_dataset(c, n=24, seed=8)
    ha, hb, hc = file_hashes(a), file_hashes(b), file_hashes(c)
    assert len(ha) > 24 and ha == hb
    assert ha["train.jsonl"] != hc["train.jsonl"]
    pngs = [k for k in ha if k.endswith(".png") and k in hc]
    assert pngs and all(ha[k] != hc[k] for k in pngs)


def test_ids_of_different_seeds_differ():
    assert synth.record_id(0, 5) == "synth_000005"  # the embedded set's ids, as before
    assert synth.record_id(7, 5) == "synth_000005_s7"
    assert len({synth.record_id(seed, i) for seed in (0, 1, 10, 1000) for i in range(30)}) == 120


def test_split_is_balanced_and_deterministic(ds):
    train, test = read(ds / "train.jsonl"), read(ds / "test.jsonl")
    assert len(test) == round(48 * 0.2) and len(train) + len(test) == 48
    assert not {r["id"] for r in train} & {r["id"] for r in test}
    per_task = {t: sum(r["task"] == t for r in train + test) for t in synth.TASKS}
    assert set(per_task.values()) == {4}  # 48 records over 12 tasks, round-robin
    assert len({r["task"] for r in test}) == len(test)  # 10 test records from 10 different tasks
    assert synth._split([r["task"] for r in sorted(train + test, key=lambda r: r["id"])], 3, 0.2) == {
        int(r["id"].split("_")[1]) for r in test
    }


def test_task_subset_and_bad_arguments(tmp_path):
    info = synth.make_dataset(tmp_path / "s", n=6, seed=0, tasks=["caption", "counting"], test_frac=0.5)
    assert info["tasks"] == {"caption": 3, "counting": 3} and info["n_test"] == 3
    assert {r["task"] for r in records(tmp_path / "s")} == {"caption", "counting"}
    with pytest.raises(ValueError):
        synth.make_dataset(tmp_path / "x", n=2, seed=0, tasks=["segmentation"])
    with pytest.raises(ValueError):
        synth.make_dataset(tmp_path / "x", n=2, seed=0, test_frac=1.5)


# ----------------------------------------------------------------------------- schema


def check_box(box, w: int, h: int) -> None:
    assert isinstance(box, list) and len(box) == 4 and all(type(v) is int for v in box), box
    x1, y1, x2, y2 = box
    assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h, (box, w, h)


def test_schema(both):
    seen = set()
    for d, r in both:
        seen.add(r["task"])
        assert list(r) == ["id", "task", "images", "question", "answer", "reasoning", "meta"]
        assert re.fullmatch(r"synth_\d{6}_s[34]", r["id"]) and r["task"] in synth.TASKS
        sizes = {Image.open(d / p).size for p in r["images"]}
        assert all(re.fullmatch(r"images/\d{6}_\d\.png", p) for p in r["images"])
        assert len(sizes) == 1, "all images of a record share one size"
        w, h = sizes.pop()
        assert 160 <= w <= 400 and 160 <= h <= 400
        assert isinstance(r["question"], str) and r["question"].endswith(("?", "."))
        assert isinstance(r["reasoning"], str) and r["reasoning"].endswith(".")
        assert 3 <= len(r["reasoning"].split()) <= 22
        meta, a, task = r["meta"], r["answer"], r["task"]
        assert meta["dataset"] == "synth" and isinstance(meta["type"], str)
        n_img = {"change_caption": {2}, "change_detection": {2}, "temporal_classification": {3, 4}}.get(
            task, {1}
        )
        assert len(r["images"]) in n_img
        if task == "classification":
            assert a in synth.SCENES
        elif task == "multilabel":
            assert a and a == sorted(set(a)) and set(a) <= set(synth.CLASSES)
        elif task == "vqa":
            allowed = {
                "presence": {"yes", "no"},
                "comparison": {"yes", "no"},
                "rural_urban": {"rural", "urban"},
            }
            assert a in allowed[meta["type"]]
        elif task == "counting":
            assert type(a) is int and 0 <= a <= 6 and meta["class"] in synth.CLASSES
        elif task == "grounding":
            assert len(a) == 1 and meta["type"] in ("unique", *synth.QUALIFIERS)
            check_box(a[0], w, h)
        elif task in ("detection", "change_detection"):
            assert 1 <= len(a) <= (5 if task == "detection" else 9)
            for b in a:
                check_box(b, w, h)
        elif task == "region_caption":
            assert "{region}" in r["question"] and isinstance(a, str) and a
            check_box(meta["region"], w, h)
        elif task == "grounded_caption":
            assert list(a) == ["caption", "boxes"] and isinstance(a["caption"], str) and a["boxes"]
            for b in a["boxes"]:
                check_box(b, w, h)
        elif task == "temporal_classification":
            assert a in synth.TEMPORAL_LABELS and meta["frames"] == len(r["images"])
        else:  # caption, change_caption
            assert isinstance(a, str) and a.endswith(".")
    assert seen == set(synth.TASKS)


def test_data_py_accepts_the_records(ds):
    pytest.importorskip("torch")
    data = pytest.importorskip("data")
    if not hasattr(data, "load_records"):
        pytest.skip("data.load_records not written yet")
    assert tuple(data.TASKS) == synth.TASKS
    assert len(data.load_records(ds / "train.jsonl")) + len(data.load_records(ds / "test.jsonl")) == 48


# ----------------------------------------------------------------------------- ground truth from pixels


def test_backgrounds_hold_no_object_colours():
    for label in synth.SCENES:
        for s in range(3):
            scene = synth.make_scene(np.random.default_rng([s, 99]), label, extras=False)
            img = synth.render(scene)
            assert not any(class_mask(img, c).any() for c in synth.CLASSES), label


def test_object_mask_helpers_match_the_colour_rule(pix):
    d, r = pix, records(pix)[0]
    img = images(d, r)[0]
    for c in synth.CLASSES:
        assert (synth.object_mask(img, c) == class_mask(img, c)).all()
    assert sorted(synth.find_objects(img), key=str) == sorted(
        ((c, list(b)) for b, c in all_boxes(img).items()), key=str
    )


def test_objects_are_visible_and_whole(both):
    for d, r in both:
        for img in images(d, r):
            boxes = [b for c in synth.CLASSES for b, _ in components(img, c)]
            for (x1, y1, x2, y2), area in (ba for c in synth.CLASSES for ba in components(img, c)):
                assert min(x2 - x1, y2 - y1) >= 16 and area >= 150, r["id"]
            for i, a in enumerate(boxes):  # boxes never overlap, so each box holds one object
                for b in boxes[i + 1 :]:
                    assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1], (r["id"], a, b)


def test_counting_matches_pixels(both):
    checked = 0
    for d, r in both:
        if r["task"] == "counting":
            assert len(components(images(d, r)[0], r["meta"]["class"])) == r["answer"], r["id"]
            checked += 1
    assert checked >= 10


def test_grounding_box_is_the_object(both):
    checked = 0
    for d, r in both:
        if r["task"] != "grounding":
            continue
        img, cls, box = images(d, r)[0], r["meta"]["class"], r["answer"][0]
        comps = components(img, cls)
        match = [area for b, area in comps if b == box]
        assert len(match) == 1, r["id"]  # the box is exactly one object's tight box
        x1, y1, x2, y2 = box
        inside = sum(int(class_mask(img, c)[y1:y2, x1:x2].sum()) for c in synth.CLASSES)
        assert inside == match[0]  # all of that object and nothing of any other object
        cy, cx = (y1 + y2) // 2, (x1 + x2) // 2
        assert class_mask(img, cls)[max(0, cy - 3) : cy + 4, max(0, cx - 3) : cx + 4].any(), r["id"]
        qual = r["meta"]["type"]
        others = [(b, a) for b, a in comps if b != box]
        if qual == "unique":
            assert not others
        else:
            assert others
            key = {
                "largest": lambda b, a: -a,
                "smallest": lambda b, a: a,
                "leftmost": lambda b, a: b[0] + b[2],
                "rightmost": lambda b, a: -(b[0] + b[2]),
                "topmost": lambda b, a: b[1] + b[3],
                "bottommost": lambda b, a: -(b[1] + b[3]),
            }[qual]
            assert all(key(box, match[0]) < key(b, a) for b, a in others), (r["id"], qual)
        checked += 1
    assert checked >= 10


def test_detection_boxes_are_all_objects_of_the_class(both):
    checked = 0
    for d, r in both:
        if r["task"] == "detection":
            found = sorted(b for b, _ in components(images(d, r)[0], r["meta"]["class"]))
            assert found == sorted(r["answer"]), r["id"]
            checked += 1
    assert checked >= 10


def test_change_detection_boxes_are_exactly_the_changes(both):
    checked = 0
    for d, r in both:
        if r["task"] != "change_detection":
            continue
        a, b = images(d, r)
        for x1, y1, x2, y2 in r["answer"]:
            assert (a[y1:y2, x1:x2] != b[y1:y2, x1:x2]).any(-1).mean() > 0.2, r["id"]
        before, after = all_boxes(a), all_boxes(b)
        changed = before.keys() ^ after.keys()
        assert changed == {tuple(x) for x in r["answer"]}, r["id"]
        assert len(after.keys() - before.keys()) == r["meta"]["added"]
        checked += 1
    assert checked >= 10


def test_region_multilabel_vqa_grounded_caption_match_pixels(both):
    for d, r in both:
        task, a, meta = r["task"], r["answer"], r["meta"]
        if task not in ("region_caption", "multilabel", "vqa", "grounded_caption", "caption"):
            continue
        img = images(d, r)[0]
        objs = all_boxes(img)
        if task == "region_caption":
            cls = objs[tuple(meta["region"])]
            assert cls in a and synth.COLOUR_WORD[cls] in a, (r["id"], a)
        elif task == "multilabel":
            assert set(a) == set(objs.values()), r["id"]
        elif task == "vqa" and meta["type"] == "presence":
            assert (a == "yes") == (meta["class"] in objs.values()), r["id"]
        elif task == "vqa" and meta["type"] == "comparison":
            ka, kb = (sum(c == x for c in objs.values()) for x in meta["classes"])
            assert (a == "yes") == (ka > kb), r["id"]
        elif task == "grounded_caption":
            assert sorted(map(tuple, a["boxes"])) == sorted(objs), r["id"]
            for cls in set(objs.values()):
                assert cls in a["caption"]
        elif task == "caption":
            for cls in set(objs.values()):
                assert cls in a, (r["id"], a)


def test_temporal_sequences_match_pixels(both):
    for d, r in both:
        if r["task"] != "temporal_classification":
            continue
        frames, label = images(d, r), r["answer"]
        buildings = [len(components(f, "building")) for f in frames]
        blue = [
            float(((f[..., 2].astype(int) > f[..., 0] + 40) & (f[..., 2] > f[..., 1])).mean()) for f in frames
        ]
        soil = [float((f[..., 0].astype(int) > f[..., 1] + 10).mean()) for f in frames]
        steps = list(zip(frames, frames[1:]))
        if label == "no change":
            assert all((x == y).all() for x, y in steps), r["id"]
        elif label == "construction":
            assert all(p < q for p, q in zip(buildings, buildings[1:])), (r["id"], buildings)
        elif label == "demolition":
            assert all(p > q for p, q in zip(buildings, buildings[1:])), (r["id"], buildings)
        elif label == "flooding":
            assert all(p < q for p, q in zip(blue, blue[1:])) and blue[-1] - blue[0] > 0.2, (r["id"], blue)
        elif label == "deforestation":
            assert all(p < q for p, q in zip(soil, soil[1:])) and soil[-1] - soil[0] > 0.2, (r["id"], soil)


# ----------------------------------------------------------------------------- command line


def test_cli(tmp_path):
    out = tmp_path / "cli"
    res = subprocess.run(
        [sys.executable, "-m", "embedded.synth", "--out", str(out), "--n", "24", "--seed", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    assert len(records(out)) == 24 and len(read(out / "test.jsonl")) == 5
    assert "wrote 19 train + 5 test" in res.stdout
    help_ = subprocess.run(
        [sys.executable, "-m", "embedded.synth", "--help"], cwd=ROOT, capture_output=True, text=True
    )
    assert help_.returncode == 0 and "--seed" in help_.stdout and "--tasks" in help_.stdout
