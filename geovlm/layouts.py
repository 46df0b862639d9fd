"""Readers for the official release layouts of the benchmarks in GeoVLM-R1's table that formats.py lacks.

Each is `read_<layout>(path, images=None, *, ...) -> formats.Conversion`, like formats.py's readers: records
go through `data.parse_record` (via `formats._Builder`), bad input raises `RecordError` naming `file:line` (or
`file:item N` / `file:feature N`) and the field, and `skip_bad=True` counts it instead.

    read_scene_folders   AID, UCMerced_LandUse/Images, WHU-RS19, RESISC45: <class>/<image> -> classification
    read_bigearthnet     BigEarthNet-S2 v1.0: <patch>/<patch>_labels_metadata.json + B04/B03/B02 -> multilabel
    read_xbd             xBD: labels/*_post_disaster.json + images/*_{pre,post}_disaster.png -> damage tasks
    read_fmow            fMoW-rgb: <category>/<category>_<n>/*_rgb.{jpg,json} -> temporal_classification
    read_caption_json    RSICD, RSITMD, UCM / Sydney (Karpathy json), NWPU-Captions ({class: [..]}) -> caption
    read_bench_jsonl     GeoChat-Bench / EarthDial test jsonl: formats.read_llava keeping size_group and type

Change captions in the LEVIR-CC json (LEVIR-MCI, Dubai-CC, SYSU-CC) are read by `formats.read_levir_cc`.

References for the layouts (read, not copied):
- xBD: DIUx-xView/xView2_baseline model/process_data.py (`features.xy`, `properties.subtype`, `wkt`);
- fMoW: fMoW/baseline code/data_ml_functions/dataFunctions.py (`*_rgb.json`: `timestamp`,
  `bounding_boxes`);
- BigEarthNet: tensorflow/datasets tensorflow_datasets/image_classification/bigearthnet.py
  (`_labels_metadata.json` `labels`; RGB from B04, B03, B02, scaled there by a fixed maximum where we
  stretch 2-98 % per band);
- the questions: EarthDial's test files (hiyamdebary/EarthDial src/earthdial/eval/*/results/*.jsonl).
"""

from __future__ import annotations

import os
import re

import numpy as np
from PIL import Image

from geovlm import formats, imagery
from geovlm.formats import IMAGE_EXTS, NUM, Conversion, _Boxes, _Builder, _read_json
from geovlm.tasks import RecordError

CLASSIFY_QUESTION = (
    "Classify the image in one of the following classes. Classes: {classes}. "
    "Answer in one word or a short phrase."
)
CAPTION_QUESTION = "Could you please provide the caption for the input image?"  # EarthDial's caption prompt


def label_name(folder: str) -> str:
    """A class folder's name as a label: CamelCase and _/- split into lowercase words
    ("BareLand" -> "bare land",
    "baseball_diamond" -> "baseball diamond"); run-together names stay as they are ("denseresidential")."""
    words = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", folder).replace("_", " ").replace("-", " ")
    return " ".join(words.lower().split())


def _split_names(split_file: str | None) -> set[str] | None:
    """Names in a split file (one a line, or the first CSV column), without extension; None: keep all."""
    if not split_file:
        return None
    try:
        with open(split_file, encoding="utf-8") as f:
            names = {os.path.splitext(line.split(",")[0].strip())[0] for line in f if line.strip()}
    except OSError as e:
        raise RecordError(f"{split_file}: cannot read the split file ({e.strerror or e})") from None
    return {os.path.basename(n) for n in names}


def _images_in(folder: str) -> list[str]:
    return sorted(n for n in os.listdir(folder) if os.path.splitext(n)[1] in IMAGE_EXTS)


# ----------------------------------------------------------------------------- scene classification folders


def read_scene_folders(
    path,
    images=None,
    *,
    dataset: str | None = None,
    split_file: str | None = None,
    skip_bad: bool = False,
    meta: dict | None = None,
) -> Conversion:
    """A scene-classification release with one folder per class (AID, UCMerced_LandUse/Images, WHU-RS19,
    NWPU-RESISC45): `path/<class>/<image>` -> classification records whose question lists every class (the
    folder names as labels, `label_name`), as EarthDial's classification prompts do. `split_file` keeps the
    images it names (one file name or stem a line)."""
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise RecordError(f"{path}: no such folder (expected one folder per class)")
    classes = sorted(
        (
            d
            for d in os.listdir(path)
            if os.path.isdir(os.path.join(path, d)) and _images_in(os.path.join(path, d))
        ),
        key=label_name,
    )
    if not classes:
        raise RecordError(f"{path}: no class folders holding images (.jpg/.png/.tif)")
    keep = _split_names(split_file)
    labels = [label_name(c) for c in classes]
    question = CLASSIFY_QUESTION.format(classes=", ".join(labels))
    b = _Builder(skip_bad, meta)
    name = dataset or os.path.basename(os.path.normpath(path))
    for cls, label in zip(classes, labels):
        for fname in _images_in(os.path.join(path, cls)):
            stem = os.path.splitext(fname)[0]
            if keep is not None and stem not in keep:
                continue
            img = os.path.join(path, cls, fname)
            if b.size(img, img) is None:
                continue
            rec = {
                "id": f"{name}_{cls}_{stem}",
                "task": "classification",
                "images": [img],
                "question": question,
                "answer": label,
                "meta": {"dataset": name, "class": cls},
            }
            b.add(rec, img)
    return b.conv


# ----------------------------------------------------------------------------- BigEarthNet


def _compose_rgb(band_files: list[str], out: str) -> None:
    """Sentinel-2 bands B04, B03, B02 (one GeoTIFF each) -> one 8-bit RGB PNG, each band stretched 2-98 %."""
    bands = [imagery.read_bands(p)[0][..., 0] for p in band_files]
    rgb = imagery.to_rgb(np.stack(bands, axis=-1), bands=(1, 2, 3), stretch=imagery.DEFAULT_STRETCH)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    tmp = f"{out}.tmp{os.getpid()}.png"
    Image.fromarray(np.asarray(rgb, dtype=np.uint8)).save(tmp)
    os.replace(tmp, out)  # a half-written picture is never left under its final name


def read_bigearthnet(
    path,
    images=None,
    *,
    dataset: str | None = None,
    split_file: str | None = None,
    rgb_dir: str | None = None,
    skip_bad: bool = False,
    meta: dict | None = None,
) -> Conversion:
    """BigEarthNet-S2 v1.0 (`path/<patch>/<patch>_labels_metadata.json` with `labels`, and the band GeoTIFFs
    `<patch>_B02.tif` ... `_B12.tif`) -> multilabel records. The picture is `<patch>/<patch>.png` (.jpg, .tif)
    when the patch holds one (an RGB export such as EarthDial's), else B04/B03/B02 composed once into
    `rgb_dir/<patch>.png` (default: `<path>_rgb` beside the release). `split_file` keeps the patches it
    names (bigearthnet-models' test.csv: one patch name a line). The question lists the labels of the set."""
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise RecordError(f"{path}: no such folder (expected BigEarthNet patch folders)")
    rgb_dir = rgb_dir or os.path.normpath(path) + "_rgb"
    keep = _split_names(split_file)
    b = _Builder(skip_bad, meta)
    found = []
    for patch in sorted(os.listdir(path)):
        labels_file = os.path.join(path, patch, f"{patch}_labels_metadata.json")
        if not os.path.isfile(labels_file) or (keep is not None and patch not in keep):
            continue
        try:
            obj = _read_json(labels_file)
        except RecordError:
            if not skip_bad:
                raise
            b.skip("bad JSON", labels_file)
            continue
        labels = obj.get("labels") if isinstance(obj, dict) else None
        if (
            not isinstance(labels, list)
            or not labels
            or not all(isinstance(x, str) and x.strip() for x in labels)
        ):
            b.bad(
                labels_file,
                f"field 'labels': expected a non-empty list of names, got {labels!r}",
                "bad labels",
            )
            continue
        found.append((patch, labels_file, labels))
    if not found and not b.conv.skipped:
        raise RecordError(f"{path}: no <patch>/<patch>_labels_metadata.json (BigEarthNet-S2 v1.0 layout)")
    vocab = sorted({x for _, _, labels in found for x in labels})
    question = (
        "Classify the image into one or more of the following classes. Classes: "
        + ", ".join(vocab)
        + ". Answer with every class present, separated by commas."
    )
    for patch, labels_file, labels in found:
        folder = os.path.join(path, patch)
        img = formats._find_image(folder, patch)
        if img is None:
            bands = [os.path.join(folder, f"{patch}_{band}.tif") for band in ("B04", "B03", "B02")]
            missing = [p for p in bands if not os.path.isfile(p)]
            if missing:
                b.bad(
                    labels_file,
                    f"field 'images': no {patch}.png and no band file {missing[0]}",
                    "image not found",
                )
                continue
            img = os.path.join(rgb_dir, f"{patch}.png")
            if not os.path.isfile(img):
                try:
                    _compose_rgb(bands, img)
                except (imagery.ImageError, OSError, ValueError) as e:
                    b.bad(
                        labels_file,
                        f"field 'images': cannot compose RGB from {bands[0]}: {e}",
                        "unreadable image",
                    )
                    continue
        rec = {
            "id": f"bigearthnet_{patch}",
            "task": "multilabel",
            "images": [img],
            "question": question,
            "answer": list(labels),
            "meta": {"dataset": dataset or "BigEarthNet"},
        }
        b.add(rec, labels_file)
    return b.conv


# ----------------------------------------------------------------------------- xBD (xView2)

XBD_DAMAGE = ("no-damage", "minor-damage", "major-damage", "destroyed")  # xBD's joint damage scale
XBD_DISASTER = {"flooding": "flood"}  # metadata.disaster_type -> the option EarthDial's prompt lists
XBD_OPTIONS = "volcano, fire, earthquake, flood, tsunami, wind"
XBD_QUESTIONS = {  # the question of each task, EarthDial's xBD test sets' wording; {region}: a building's box
    "disaster_type": "Analyze the images to identify the type of disaster that occurred. "
    f"Options: {XBD_OPTIONS}.",
    "affected": "Are there any buildings affected due to disaster? Please answer yes or no.",
    "affected_count": "How many buildings are affected? Please answer none, one, two or many.",
    "region_damage": "Compare the building at {region} between the pre-disaster and post-disaster images. "
    "In the post-disaster image, classify the level of damage. Classes: " + ", ".join(XBD_DAMAGE) + ".",
    "region_affected": "Is the building at {region} affected due to disaster in the second image? "
    "Please answer yes or no.",
    "detection": "Locate all buildings in the post-disaster image.",
    "referred_detection": "Locate every {damage} building in the post-disaster image.",
}
WKT_POLYGON = re.compile(rf"POLYGON\s*\(\(\s*({NUM}\s+{NUM}(?:\s*,\s*{NUM}\s+{NUM})+)\s*\)", re.I)


def _xbd_buildings(b: _Builder, labels_file: str, obj) -> list[tuple[str, list[float], str]] | None:
    """(where, polygon [x1, y1, x2, y2, ...], damage subtype) of each building of a labels file."""
    feats = (
        obj.get("features", {}).get("xy")
        if isinstance(obj, dict) and isinstance(obj.get("features"), dict)
        else None
    )
    if not isinstance(feats, list):
        b.bad(
            labels_file,
            "field 'features.xy': expected a list of building features (xBD label json)",
            "bad xBD labels",
        )
        return None
    out = []
    for k, feat in enumerate(feats):
        where = f"{labels_file}:feature {k}"
        props = feat.get("properties", {}) if isinstance(feat, dict) else {}
        if props.get("feature_type", "building") != "building":
            continue
        m = WKT_POLYGON.search(str(feat.get("wkt", ""))) if isinstance(feat, dict) else None
        if m is None:
            b.bad(
                where,
                f"field 'wkt': expected POLYGON ((x y, ...)), got {str(feat.get('wkt', ''))[:60]!r}"
                if isinstance(feat, dict)
                else "a feature must be a JSON object",
                "bad polygon",
            )
            continue
        points = [float(v) for v in re.findall(NUM, m.group(1))]
        out.append((where, points, str(props.get("subtype", "un-classified"))))
    return out


def _xbd_records(
    task: str, stem: str, pair: list[str], size, disaster: str, buildings, b: _Builder, where: str
):
    """The records of one pre/post pair for `task` (see XBD_QUESTIONS)."""
    base = {"images": pair, "meta": {"disaster_type": disaster}}
    rated = [
        (w, p, s) for w, p, s in buildings if s in XBD_DAMAGE
    ]  # un-classified buildings have no damage level
    hit = sum(s != "no-damage" for _, _, s in rated)
    if task == "disaster_type":
        yield (
            {"id": f"xbd_{stem}", "task": "temporal_classification", "answer": disaster, **base},
            where,
            None,
        )
    elif task == "affected":
        yield (
            {
                "id": f"xbd_{stem}",
                "task": "temporal_classification",
                "answer": "yes" if hit else "no",
                **base,
            },
            where,
            None,
        )
    elif task == "affected_count":
        answer = ("none", "one", "two")[hit] if hit < 3 else "many"
        yield {"id": f"xbd_{stem}", "task": "temporal_classification", "answer": answer, **base}, where, None
    elif task in ("region_damage", "region_affected"):
        for k, (w, points, damage) in enumerate(rated):
            boxes = _Boxes(size)
            region = boxes.from_polygon(points)
            if region is None:
                b.skip("building outside the image or empty (dropped)", w)
                continue
            answer = damage if task == "region_damage" else "yes" if damage != "no-damage" else "no"
            rec = {
                "id": f"xbd_{stem}_{k}",
                "task": "temporal_classification",
                "answer": answer,
                **base,
                "meta": {**base["meta"], "region": region, "damage": damage},
            }
            yield rec, w, boxes
    else:
        groups = (
            {"buildings": buildings}
            if task == "detection"
            else {d: [x for x in rated if x[2] == d] for d in XBD_DAMAGE}
        )
        for damage, members in groups.items():
            boxes = _Boxes(size)
            answer = [box for _, points, _ in members if (box := boxes.from_polygon(points)) is not None]
            if not answer:
                continue
            suffix = "" if task == "detection" else f"_{damage}"
            yield (
                {
                    "id": f"xbd_{stem}{suffix}",
                    "task": "change_detection",
                    "answer": answer,
                    **base,
                    "meta": {**base["meta"], **({} if task == "detection" else {"damage": damage})},
                },
                where,
                boxes,
            )


def read_xbd(
    path,
    images=None,
    *,
    task: str = "disaster_type",
    dataset: str | None = None,
    skip_bad: bool = False,
    meta: dict | None = None,
) -> Conversion:
    """xBD / xView2 (`path/labels/<disaster>_<id>_post_disaster.json`: `metadata.disaster_type`, `features.xy`
    buildings with `properties.subtype` (no-damage, minor-damage, major-damage, destroyed, un-classified) and
    a `wkt` POLYGON in pixels; `path/images/` the `_pre_disaster.png` / `_post_disaster.png` pair) -> records
    on the pre/post pair for one `task` of XBD_QUESTIONS, EarthDial's xBD test sets:

        disaster_type, affected, affected_count   image classification Set-1, -2, -3 (temporal_classification)
        region_damage, region_affected            region classification Set-1, -2 (one record per building)
        detection, referred_detection             all buildings / those of one damage level (change_detection)

    Building polygons become their enclosing horizontal boxes."""
    if task not in XBD_QUESTIONS:
        raise ValueError(f"unknown xBD task {task!r}; known: {', '.join(XBD_QUESTIONS)}")
    path = os.fspath(path)
    label_dir = os.path.join(path, "labels")
    image_dir = os.fspath(images) if images else os.path.join(path, "images")
    if not os.path.isdir(label_dir):
        raise RecordError(
            f"{path}: no labels/ folder (xBD layout: labels/*_post_disaster.json, images/*.png)"
        )
    b = _Builder(skip_bad, meta)
    for name in sorted(n for n in os.listdir(label_dir) if n.endswith("_post_disaster.json")):
        labels_file = os.path.join(label_dir, name)
        stem = name[: -len("_post_disaster.json")]
        try:
            obj = _read_json(labels_file)
        except RecordError:
            if not skip_bad:
                raise
            b.skip("bad JSON", labels_file)
            continue
        disaster = (
            str((obj.get("metadata") or {}).get("disaster_type", "")).strip().lower()
            if isinstance(obj, dict)
            else ""
        )
        if not disaster:
            b.bad(labels_file, "field 'metadata.disaster_type' is missing", "no disaster type")
            continue
        buildings = _xbd_buildings(b, labels_file, obj)
        if buildings is None:
            continue
        pair = [os.path.join(image_dir, f"{stem}_{when}_disaster.png") for when in ("pre", "post")]
        sizes = [b.size(p, labels_file) for p in pair]
        if None in sizes:
            continue
        disaster = XBD_DISASTER.get(disaster, disaster)
        for rec, where, boxes in _xbd_records(
            task, stem, pair, sizes[1], disaster, buildings, b, labels_file
        ):
            damage = rec["meta"].get("damage", "")
            rec["question"] = XBD_QUESTIONS[task].replace("{damage}", damage.replace("-", " "))
            rec["meta"]["dataset"] = dataset or "xBD"
            counts = (boxes.n, boxes.rotated, boxes.clipped) if boxes is not None else (0, 0, 0)
            b.add(rec, where, *counts)
    return b.conv


# ----------------------------------------------------------------------------- fMoW


def _fmow_timestamp(json_file: str) -> str:
    try:
        obj = _read_json(json_file)
    except (RecordError, OSError):
        return ""
    return str(obj.get("timestamp", "")) if isinstance(obj, dict) else ""


def read_fmow(
    path,
    images=None,
    *,
    dataset: str | None = None,
    max_images: int = 4,
    skip_bad: bool = False,
    meta: dict | None = None,
) -> Conversion:
    """fMoW-rgb (`path/<category>/<category>_<n>/<category>_<n>_<k>_rgb.jpg` with a `_rgb.json` beside each:
    `timestamp`, `bounding_boxes`; `path` one split, e.g. fmow-rgb/val) -> temporal_classification records,
    one per sequence: up to `max_images` of its pictures (evenly spaced in time, first and last kept;
    EarthDial shows
    four), the category as the answer; the question lists the categories of the split."""
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise RecordError(f"{path}: no such folder (expected fMoW <category>/<category>_<n>/ folders)")
    categories = sorted(d for d in os.listdir(path) if os.path.isdir(os.path.join(path, d)))
    if not categories:
        raise RecordError(f"{path}: no category folders (fMoW-rgb layout)")
    question = (
        "Classify the given images in one of the following classes. Classes: " + ", ".join(categories) + "."
    )
    b = _Builder(skip_bad, meta)
    for cat in categories:
        for seq in sorted(os.listdir(os.path.join(path, cat))):
            folder = os.path.join(path, cat, seq)
            if not os.path.isdir(folder):
                continue
            pics = [n for n in _images_in(folder) if os.path.splitext(n)[0].endswith("_rgb")]
            stamps = {
                n: _fmow_timestamp(os.path.join(folder, os.path.splitext(n)[0] + ".json")) for n in pics
            }
            pics.sort(key=lambda n: (stamps[n], n))
            if len(pics) < 2:
                b.skip("sequence with fewer than 2 images", folder)
                continue
            pick = (
                sorted({round(i * (len(pics) - 1) / (max_images - 1)) for i in range(max_images)})
                if len(pics) > max_images
                else range(len(pics))
            )
            paths = [os.path.join(folder, pics[i]) for i in pick]
            if any(b.size(p, folder) is None for p in paths):
                continue
            rec = {
                "id": f"fmow_{seq}",
                "task": "temporal_classification",
                "images": paths,
                "question": question,
                "answer": cat,
                "meta": {"dataset": dataset or "FMoW", "timestamps": [stamps[pics[i]] for i in pick]},
            }
            b.add(rec, folder)
    return b.conv


# ----------------------------------------------------------------------------- caption json (Karpathy / NWPU)


def _karpathy_items(obj, path: str) -> list[tuple[str, dict, str]]:
    """(where, item, class folder or "") of a Karpathy json (`images`) or NWPU-Captions' `{class: [...]}`."""
    if isinstance(obj, dict) and isinstance(obj.get("images"), list):
        return [(f"{path}:item {i}", it, "") for i, it in enumerate(obj["images"])]
    if isinstance(obj, dict) and obj and all(isinstance(v, list) for v in obj.values()):
        return [
            (f"{path}:{cls} item {i}", it, cls) for cls, items in obj.items() for i, it in enumerate(items)
        ]
    raise RecordError(
        f'{path}: expected a Karpathy caption json {{"images": [...]}} or NWPU-Captions\' '
        '{"<class>": [...]}'
    )


def read_caption_json(
    path,
    images=None,
    *,
    split: str | None = "test",
    dataset: str | None = None,
    skip_bad: bool = False,
    meta: dict | None = None,
) -> Conversion:
    """Image-caption sets in the Karpathy json (RSICD `dataset_rsicd.json`, RSITMD `dataset_RSITMD.json`,
    UCM / Sydney captions: `{"images": [{"filename", "split", "sentences": [{"raw"}]}]}`, images
    `images/<filename>`) or NWPU-Captions' `dataset_nwpu.json` (`{"<class>": [{"filename", "split", "raw",
    "raw_1".."raw_4"}]}`, images `images/<class>/<filename>`) -> caption records with every reference.
    `split` keeps one split (default test; None: all). Images default: the json's folder."""
    path = os.fspath(path)
    base = formats._default_images(path, images)
    b = _Builder(skip_bad, meta)
    name = dataset or os.path.splitext(os.path.basename(path))[0].removeprefix("dataset_")
    for where, item, cls in _karpathy_items(_read_json(path), path):
        if not isinstance(item, dict) or "filename" not in item:
            b.bad(where, "field 'filename' is missing", "no 'filename'")
            continue
        if split and str(item.get("split", "")) != split:
            continue
        if "sentences" in item:
            refs = [s.get("raw", "") if isinstance(s, dict) else s for s in item["sentences"] or []]
        else:
            refs = [item[k] for k in sorted(item) if re.fullmatch(r"raw(_\d+)?", k)]
        refs = [" ".join(str(r).split()) for r in refs if str(r).strip()]
        if not refs:
            b.bad(where, "field 'sentences': no caption text ('raw')", "no caption")
            continue
        img = os.path.join(base, cls, str(item["filename"]))
        if b.size(img, where) is None:
            continue
        stem = os.path.splitext(str(item["filename"]))[0]
        rec = {
            "id": f"{name}_{stem}",
            "task": "caption",
            "images": [img],
            "question": CAPTION_QUESTION,
            "answer": refs,
            "meta": {"dataset": name, **({"class": cls} if cls else {})},
        }
        b.add(rec, where)
    return b.conv


# ------------------------------------------------------------------------- GeoChat-Bench / EarthDial files


def read_bench_jsonl(
    path,
    images=None,
    *,
    dataset: str | None = None,
    referring: bool = False,
    skip_bad: bool = False,
    meta: dict | None = None,
) -> Conversion:
    """GeoChat-Bench and EarthDial test files (`{"question_id", "image", "text"/"question", "ground_truth"}`
    items; formats.read_llava reads them) keeping the items' `size_group` and `type` in meta, which the
    referring splits use (GeoChat-Bench and EarthDial group objects by these, not by area). `referring`: every
    [refer] record becomes detection (one box or several), so one benchmark is one task."""
    conv = formats.read_llava(path, images, dataset=dataset, skip_bad=skip_bad, meta=meta)
    items = dict(formats._json_items(os.fspath(path)))  # where ("file:line") -> item, as the records' source
    for rec in conv.records:
        item = items.get(rec.source.split(" turn ")[0])
        item = item if isinstance(item, dict) else {}
        for key in ("size_group", "type"):
            if isinstance(item.get(key), str) and item[key].strip():
                rec.meta[key] = item[key].strip().lower()
        if referring and rec.task == "grounding":
            rec.task = "detection"  # the answer, one box in a list, is already a valid detection answer
    return conv


READERS = {  # name: reader (the suite's manifest names them)
    "scene-folders": read_scene_folders,
    "bigearthnet": read_bigearthnet,
    "xbd": read_xbd,
    "fmow": read_fmow,
    "caption-json": read_caption_json,
    "bench-jsonl": read_bench_jsonl,
    "levir-cc": formats.read_levir_cc,
    "rsvqa": formats.read_rsvqa,
    "nwpu": formats.read_nwpu,
    "earthdial": formats.read_llava,
}
