"""Readers for the field's data formats, and one command that converts any of them to our JSONL.

    python -m geovlm.formats --format rsvqa --input RSVQA_LR/ --images RSVQA_LR/Images_LR \\
        --out data/rsvqa_lr.jsonl

Each reader is one function `read_<format>(path, images=None, *, ...) -> Conversion`; the records it
returns went through `data.parse_record`, so every one written passes `data.load_records`. Boxes are
converted to original-image pixels; what was kept, converted and skipped is counted
(`Conversion.summary()`). Bad input raises `data.RecordError` naming `file:line` (or `file:item N`, N the
0-based index in a JSON list) and the field; `skip_bad=True` counts it as skipped instead.

Formats (--format name, reader: what it reads -> our tasks):

- geochat (llava, earthdial), `read_llava`: LLaVA json/jsonl `{"image", "conversations"}` and flat `{"image",
  "question"/"text", "ground_truth"}` items; GeoChat `{<x1><y1><x2><y2>|θ}` and EarthDial `[[x1, y1, x2, y2,
  θ]]` boxes (0-100); tags `[refer]` -> grounding / detection, `[grounding]` -> grounded_caption, `[identify]`
  -> region_caption; "Classify ... classes" -> classification; several images (`jpg_A`, `jpg_B`, ... or an
  image list) -> change_caption / change_detection / temporal_classification
- vrsbench, `read_vrsbench`: VRSBench eval json (`image_id`, `question`, `ground_truth`, `type`): captions,
  referring (`obj_corner`, 0-1) -> grounding, VQA (`meta.type`)
- rsvqa, `read_rsvqa`: RSVQA-LR/HR `*_questions.json` / `*_answers.json` / `*_images.json` triples -> vqa
  (`meta.type`)
- dior-rsvg, `read_dior_rsvg`: VOC xml (`object/name`, `bndbox`, `description`) -> grounding
- dota, `read_dota`: `x1 y1 x2 y2 x3 y3 x4 y4 class difficult` lines -> detection, one record per image and
  class
- nwpu, `read_nwpu`: NWPU VHR-10 `(x1,y1),(x2,y2),class` lines -> detection, one record per image and class
- levir-cc, `read_levir_cc`: LevirCCcaptions.json (`images`: filepath, filename, split, sentences) ->
  change_caption

Conventions the readers share:
- Rotated boxes (GeoChat / EarthDial θ, VRSBench `obj_corner`, DOTA polygons) become the horizontal
  box that encloses the rotated rectangle or polygon, clipped to the image (as GeoVLM-R1 does); the
  source geometry stays in meta (`rotated_boxes`: pixel [x1, y1, x2, y2, θ] of the unrotated rectangle;
  `polygons`; `obj_corner`).
- A box in a *question* (GeoChat `[identify] ... {<..>}`, EarthDial `<box>[[..]]</box>`) becomes
  `meta.region` (original pixels) and the question holds `{region}`, so the model reads the region in
  its own frame (`data.question_text`). Phrase markers `<p>…</p>`, `<ref>…</ref>` are removed, their
  text kept; `<image>` tokens and sensor tags such as `[hr_rgb_0.5]` are removed (kept in `meta.tags`).
- Detection formats (DOTA, NWPU) give one record per image and class ("Locate every ship in the
  image."), because a detection answer is a list of boxes without labels.
- Numeric answers (RSVQA counts) are written as strings ("12"): a vqa answer is a string.
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import os
import re
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

import data
from data import Record
from geovlm import imagery
from geovlm.flags import add_imagery_flags
from geovlm.frames import Frame, from_frame
from geovlm.tasks import RecordError

NUM = r"-?\d+(?:\.\d+)?"
GEOCHAT_BOX = re.compile(
    rf"\{{\s*<({NUM})>\s*<({NUM})>\s*<({NUM})>\s*<({NUM})>\s*(?:\|\s*<?({NUM})>?)?\s*\}}"
)
EARTHDIAL_BOX = re.compile(rf"\[\s*({NUM})\s*,\s*({NUM})\s*,\s*({NUM})\s*,\s*({NUM})\s*(?:,\s*({NUM})\s*)?\]")
TAG = re.compile(r"\[([a-z][a-z0-9_.]*)\]")
TASK_TAGS = {"refer": "grounding", "grounding": "grounded_caption", "identify": "region_caption"}
MARKERS = re.compile(r"</?(?:p|ref|box|delim|image)>|<delim>", re.I)
CLASSIFY = re.compile(
    r"\bclassify\b|\bclassification\b|\b(?:following|given|these|below) "
    r"(?:classes|categories|options|labels)\b"
    r"|\b(?:classes|categories|options)\s*:",
    re.I,
)
MULTILABEL = re.compile(
    r"one or more|multi-?label|multiple (?:classes|labels|categories)"
    r"|all (?:the )?(?:classes|labels|categories) that",
    re.I,
)
CAPTION = re.compile(r"\b(?:describe|description|caption)\b", re.I)
IMAGE_EXTS = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp", ".TIF", ".PNG", ".JPG")


# ----------------------------------------------------------------------------- conversion bookkeeping


@dataclass
class Conversion:
    """What a reader produced: validated records and the counts the command reports."""

    records: list[Record] = field(default_factory=list)
    boxes: int = 0  # boxes converted to original pixels
    rotated: int = 0  # of which rotated boxes or polygons, replaced by their enclosing horizontal box
    clipped: int = 0  # of which clipped to the image
    skipped: collections.Counter = field(default_factory=collections.Counter)  # reason -> count
    first: dict = field(default_factory=dict)  # reason -> where it first happened

    def summary(self) -> str:
        parts = [
            f"kept {len(self.records)} record(s)",
            f"converted {self.boxes} box(es) to original pixels ({self.rotated} rotated -> enclosing "
            f"horizontal box, {self.clipped} clipped to the image)",
        ]
        n = sum(self.skipped.values())
        if n:
            why = "; ".join(f"{c} {r} (first: {self.first[r]})" for r, c in self.skipped.most_common())
            parts.append(f"skipped {n}: {why}")
        else:
            parts.append("skipped 0")
        return ", ".join(parts)


class _Builder:
    """Validates records as they are made (data.parse_record) and counts what is skipped and why."""

    def __init__(self, skip_bad: bool = False, meta: dict | None = None):
        self.conv = Conversion()
        self.skip_bad = skip_bad
        self.meta = dict(meta or {})
        self.bands = imagery.options_from_meta(self.meta).get("bands")
        self.ids: set[str] = set()

    def skip(self, reason: str, where: str) -> None:
        self.conv.skipped[reason] += 1
        self.conv.first.setdefault(reason, where)

    def bad(self, where: str, message: str, reason: str) -> None:
        """Bad input: one RecordError line, or a counted skip under `skip_bad`."""
        if not self.skip_bad:
            raise RecordError(f"{where}: {message}")
        self.skip(reason, where)

    def size(self, path: str, where: str) -> tuple[int, int] | None:
        """The image's (width, height) (decoded in full), or None after `bad`."""
        try:
            return data.image_size(path, where)
        except RecordError as e:
            reason = "image not found" if "file not found" in str(e) else "unreadable image"
            if not self.skip_bad:
                raise
            self.skip(reason, where)
            return None

    def add(self, obj: dict, where: str, boxes: int = 0, rotated: int = 0, clipped: int = 0) -> bool:
        obj["meta"] = {**obj.get("meta", {}), **self.meta}
        base = obj["id"] = str(obj["id"])
        k = 1
        while obj["id"] in self.ids:  # ids stay unique (GeoChat repeats an image's id across items)
            k += 1
            obj["id"] = f"{base}~{k}"
        try:
            if self.bands:
                for p in obj["images"]:
                    n = imagery.band_count(p)
                    if max(self.bands) > n:
                        raise RecordError(
                            f"{where}: field 'meta.bands': band {max(self.bands)} requested but "
                            f"{p} has {n} band(s)"
                        )
            rec = data.parse_record(obj, "/", where)
        except (RecordError, imagery.ImageError, OSError) as e:
            m = re.search(r"field '([^']+)'", str(e))
            self.bad(
                where,
                str(e).removeprefix(f"{where}: "),
                f"invalid record (field '{m.group(1) if m else '?'}')",
            )
            return False
        self.ids.add(rec.id)
        self.conv.records.append(rec)
        self.conv.boxes += boxes
        self.conv.rotated += rotated
        self.conv.clipped += clipped
        return True


# ----------------------------------------------------------------------------- boxes


def enclosing_box(box, angle: float | None = None) -> list[float]:
    """The horizontal box enclosing rectangle [x1, y1, x2, y2] rotated by `angle` degrees about its centre."""
    x1, y1, x2, y2 = (float(v) for v in box[:4])
    if not angle:
        return [x1, y1, x2, y2]
    cx, cy, w, h, t = (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1, math.radians(angle)
    hw = (abs(w * math.cos(t)) + abs(h * math.sin(t))) / 2
    hh = (abs(w * math.sin(t)) + abs(h * math.cos(t))) / 2
    return [cx - hw, cy - hh, cx + hw, cy + hh]


def polygon_box(points) -> list[float]:
    """The horizontal box enclosing a polygon given as [x1, y1, x2, y2, ...] or [[x, y], ...]."""
    flat = [float(v) for p in points for v in (p if isinstance(p, (list, tuple)) else [p])]
    xs, ys = flat[0::2], flat[1::2]
    return [min(xs), min(ys), max(xs), max(ys)]


def clip_box(box, size: tuple[int, int]) -> tuple[list[float], bool] | None:
    """(box clipped to the image and rounded to 0.01 px, whether it was clipped), or None if nothing is
    left."""
    w, h = size
    out = [
        min(max(box[0], 0.0), w),
        min(max(box[1], 0.0), h),
        min(max(box[2], 0.0), w),
        min(max(box[3], 0.0), h),
    ]
    out = [round(v, 2) for v in out]
    if out[2] <= out[0] or out[3] <= out[1]:
        return None
    return out, any(abs(a - b) > 0.005 for a, b in zip(out, box))


def find_boxes(text: str) -> list[tuple[int, int, list[float], float | None]]:
    """GeoChat `{<x1><y1><x2><y2>|θ}` and EarthDial `[x1, y1, x2, y2(, θ)]` boxes (0-100) in `text`, in order:
    (start, end, [x1, y1, x2, y2], θ or None)."""
    found = []
    for pattern in (GEOCHAT_BOX, EARTHDIAL_BOX):
        for m in pattern.finditer(text):
            vals = [float(v) for v in m.groups()[:4]]
            found.append((m.start(), m.end(), vals, float(m.group(5)) if m.group(5) is not None else None))
    return sorted(found)


class _Boxes:
    """0-100 (or 0-1) boxes of one image -> original pixels, counting what was rotated and clipped."""

    def __init__(self, size: tuple[int, int]):
        self.size, self.n, self.rotated, self.clipped = size, 0, 0, 0
        self.sources: list = []  # [x1, y1, x2, y2, θ] in pixels (the unrotated rectangle) per 0-100 box

    def from_0_100(self, vals, angle) -> list[float] | None:
        px = from_frame(list(vals[:4]), Frame("0-100", self.size, self.size))
        self.sources.append([round(v, 2) for v in px] + [angle or 0.0])
        return self._finish(enclosing_box(px, angle), bool(angle))

    def from_polygon(self, points, scale=(1.0, 1.0)) -> list[float] | None:
        box = polygon_box(points)
        box = [box[0] * scale[0], box[1] * scale[1], box[2] * scale[0], box[3] * scale[1]]
        flat = [float(v) for p in points for v in (p if isinstance(p, (list, tuple)) else [p])]
        axis_aligned = (
            len(flat) == 4
            or len({round(x, 6) for x in flat[0::2]}) <= 2
            and len({round(y, 6) for y in flat[1::2]}) <= 2
        )
        return self._finish(box, not axis_aligned)

    def _finish(self, box, rotated: bool) -> list[float] | None:
        got = clip_box(box, self.size)
        if got is None:
            return None
        self.n += 1
        self.rotated += rotated
        self.clipped += got[1]
        return got[0]


def strip_markup(text: str) -> str:
    """Remove `<p>`/`<ref>`/`<box>`/`<delim>`/`<image>` markers (their text stays) and tidy spaces."""
    text = MARKERS.sub(" ", text.replace("\\n", " "))
    text = re.sub(r"\[[\s,]*\]", " ", text)  # brackets left around removed boxes: [[..]] -> []
    text = re.sub(r"\s+", " ", text).strip()
    return re.sub(r"\s+([.,;:!?])", r"\1", text)


def _remove_spans(text: str, spans, repl: str = " ") -> str:
    """`text` with the box spans replaced by `repl`: a run of boxes (with the brackets, commas and spaces
    around and between them, as in EarthDial's `[[..]][[..]]` or `[[..], [..]]`) becomes one `repl`."""
    for start, end in sorted(spans, reverse=True):
        text = text[:start] + "\x00" + text[end:]
    return re.sub(r"\[*\s*\x00(?:[\s,\[\]]*\x00)*\s*\]*", lambda _: repl, text)


# ----------------------------------------------------------------------------- input helpers


def _read_json(path: str):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise RecordError(f"{path}:{e.lineno}: bad JSON: {e.msg} at column {e.colno}") from None
    except UnicodeDecodeError as e:
        raise RecordError(f"{path}: not UTF-8 text: {e.reason}") from None


def _json_items(path: str) -> list[tuple[str, object]]:
    """A JSON list (or one object) or a JSONL file -> [(where, item)]."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        if path.endswith(".jsonl"):
            raise json.JSONDecodeError("a .jsonl file is read line by line", text, 0)
        items = json.loads(text)
    except json.JSONDecodeError:
        out = []
        for lineno, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    out.append((f"{path}:{lineno}", json.loads(line)))
                except json.JSONDecodeError as e:
                    raise RecordError(f"{path}:{lineno}: bad JSON: {e.msg} at column {e.colno}") from None
        return out
    if isinstance(items, dict):
        for key in ("annotations", "data", "items", "images"):  # common wrappers around the list of items
            if (
                isinstance(items.get(key), list)
                and items[key]
                and all(isinstance(v, dict) for v in items[key])
            ):
                items = items[key]
                break
        else:
            items = [items]
    if not isinstance(items, list):
        raise RecordError(f"{path}: expected a JSON list of items, got {type(items).__name__}")
    return [(f"{path}:item {i}", item) for i, item in enumerate(items)]


def _image_path(images: str, name: str) -> str:
    return name if os.path.isabs(name) else os.path.normpath(os.path.join(images, name))


def _find_image(images: str, stem: str, index: dict | None = None) -> str | None:
    """images/stem.<ext> for the usual raster extensions (index: stem -> file name, from one listdir)."""
    if index is not None:
        name = index.get(stem)
        return os.path.join(images, name) if name else None
    for ext in IMAGE_EXTS:
        p = os.path.join(images, stem + ext)
        if os.path.exists(p):
            return p
    return None


def _image_index(images: str) -> dict:
    out: dict[str, str] = {}
    try:
        names = sorted(os.listdir(images))
    except OSError:
        return out
    for name in names:
        stem, ext = os.path.splitext(name)
        if ext in IMAGE_EXTS and (
            stem not in out or IMAGE_EXTS.index(ext) < IMAGE_EXTS.index(os.path.splitext(out[stem])[1])
        ):
            out[stem] = name
    return out


def _default_images(path: str, images) -> str:
    if images:
        return os.fspath(images)
    path = os.fspath(path)
    return path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))


def _answer_text(v) -> str:
    """A JSON answer as the string a vqa answer is (12 -> "12", 0.5 -> "0.5", True -> "yes")."""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v).strip()


# ----------------------------------------------------------------------------- GeoChat / EarthDial / LLaVA


def _item_images(item: dict, base: str) -> list[str] | None:
    """Image paths of a LLaVA / GeoChat / EarthDial / TEOChat item (`image` str or list, `images`,
    `video`, or `jpg_A`, `jpg_B`, ... keys), resolved against `base`."""
    value = item.get("image", item.get("images", item.get("video")))
    if value is None:
        keys = sorted(k for k in item if re.fullmatch(r"[a-z]+_[A-Z]", k))
        value = [item[k] for k in keys] or None
    if isinstance(value, str):
        whole = _image_path(base, value)
        value = (
            [value] if os.path.exists(whole) or "," not in value else [v.strip() for v in value.split(",")]
        )
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        return None
    return [_image_path(base, v) for v in value]


def _item_turns(item: dict) -> list | None:
    """[(question, answer)] of an item: conversation pairs, or one flat question/answer."""
    conv = item.get("conversations")
    if isinstance(conv, list):
        return [(conv[k], conv[k + 1]) for k in range(0, len(conv) - 1, 2)]
    q = item.get("question", item.get("text"))
    refs = [item[k] for k in sorted(item) if re.fullmatch(r"groundtruth\d+", k)]
    a = refs or item.get("ground_truth", item.get("groundtruth", item.get("answer")))
    if q is None or a is None:
        return None
    return [({"from": "human", "value": q}, {"from": "gpt", "value": a})]


def _llava_turn(b: _Builder, q: str, a, paths, sizes, where: str, rid: str, dataset: str) -> None:
    """One human/gpt pair -> one record (or a counted skip)."""
    tags = TAG.findall(q)
    q = TAG.sub(" ", q.replace("<image>", " "))
    task_tag = next((t for t in tags if t in TASK_TAGS), None)
    meta: dict = {"dataset": dataset}
    if tags:
        meta["tags"] = tags
    boxes = _Boxes(sizes[0])
    # a box in the question is the region the question is about: meta.region + {region}
    qboxes = find_boxes(q)
    if len(qboxes) > 1:
        return b.skip("several boxes in one question", where)
    if qboxes:
        start, end, vals, angle = qboxes[0]
        region = boxes.from_0_100(vals, angle)
        if region is None:
            return b.skip("empty box after clipping to the image", where)
        meta["region"] = region
        source = boxes.sources.pop()
        if angle:
            meta["region_rotated"] = source
        q = _remove_spans(q, [(start, end)], " {region} ")
    q = strip_markup(q)
    if q.replace("{region}", "").strip(" ?.:") == "":
        q = "What is in the region {region}?" if "{region}" in q else q
    refs = [_answer_text(r) for r in a] if isinstance(a, list) else None
    a_text = refs[0] if refs else _answer_text(a)
    found = find_boxes(a_text)
    caption = strip_markup(_remove_spans(a_text, [(s, e) for s, e, _, _ in found]))
    answer_boxes = []
    for _, _, vals, angle in found:
        box = boxes.from_0_100(vals, angle)
        if box is None:
            return b.skip("empty box after clipping to the image", where)
        answer_boxes.append(box)
    answer: object
    if len(paths) >= 2:
        if answer_boxes:
            task, answer = "change_detection", answer_boxes
        elif CLASSIFY.search(q):
            task, answer = "temporal_classification", caption
        elif len(paths) == 2:
            task, answer = "change_caption", caption
            if refs and len(refs) > 1:
                meta["references"] = [strip_markup(r) for r in refs]
        else:
            return b.skip(f"{len(paths)} images and not a classification question", where)
    elif task_tag == "refer" or (answer_boxes and not caption and task_tag is None):
        if not answer_boxes:
            return b.skip("[refer] answer without a box", where)
        task, answer = ("grounding" if len(answer_boxes) == 1 else "detection"), answer_boxes
    elif task_tag == "grounding" or answer_boxes:
        task, answer = (
            ("grounded_caption", {"caption": caption, "boxes": answer_boxes})
            if caption
            else ("detection", answer_boxes)
        )
    elif task_tag == "identify":
        if "region" not in meta:
            return b.skip("[identify] question without a region", where)
        task, answer = "region_caption", caption
    elif CLASSIFY.search(q):
        labels = [s.strip() for s in re.split(r"[,;]", caption) if s.strip()]
        task, answer = (
            ("multilabel", labels) if MULTILABEL.search(q) and labels else ("classification", caption)
        )
    elif CAPTION.search(q) and "region" not in meta:
        task, answer = "caption", [strip_markup(r) for r in refs] if refs else caption
    else:
        task, answer = "vqa", caption
    if any(src[4] for src in boxes.sources):  # the source's rotated rectangles, one per answer box
        meta["rotated_boxes"] = boxes.sources
    obj = {"id": rid, "task": task, "images": paths, "question": q, "answer": answer, "meta": meta}
    b.add(obj, where, boxes.n, boxes.rotated, boxes.clipped)


def read_llava(
    path,
    images=None,
    *,
    dataset: str | None = None,
    skip_bad: bool = False,
    meta: dict | None = None,
    default_dataset: str = "GeoChat",
) -> Conversion:
    """GeoChat / EarthDial / LLaVA-style files (a JSON list, one object, or JSONL) -> records, one per
    human/gpt turn pair (or per flat question/answer item: GeoChat bench `{"question_id", "image",
    "text", "ground_truth"}`, EarthDial `{"question", "groundtruth"}` or `groundtruth0..4` references).

    Image paths are resolved against `images` (default: the file's folder); `meta.dataset` is `dataset`,
    else the item's own "dataset" field, else `default_dataset`. Boxes (GeoChat
    `{<x1><y1><x2><y2>|θ}`, EarthDial `[[x1, y1, x2, y2, θ]]`, both 0-100, several concatenated) become
    original pixels; a rotated one (θ != 0) becomes the horizontal box enclosing the rotated rectangle,
    the source kept in `meta.rotated_boxes`. Task: `[refer]` -> grounding (one box) or detection;
    `[grounding]` -> grounded_caption (`<p>…</p>` markers removed, phrase text kept); `[identify]` ->
    region_caption with the question's box in `meta.region` and `{region}` in the question;
    "Classify ... classes" -> classification (multilabel when "one or more"); "describe"/"caption" ->
    caption; two images (`jpg_A`, `jpg_B` or an image list) -> change_detection (boxes),
    temporal_classification (classify) or change_caption; anything else -> vqa."""
    path = os.fspath(path)
    base = _default_images(path, images)
    b = _Builder(skip_bad, meta)
    for i, (where, item) in enumerate(_json_items(path)):
        if not isinstance(item, dict):
            b.bad(where, f"an item must be a JSON object, got {type(item).__name__}", "item not an object")
            continue
        paths = _item_images(item, base)
        if paths is None:
            b.bad(
                where,
                "field 'image': missing or not a path (or list of paths, or jpg_A/jpg_B keys)",
                "no image field",
            )
            continue
        turns = _item_turns(item)
        if turns is None:
            b.bad(
                where,
                "field 'conversations' is missing (nor 'question' and 'ground_truth')",
                "no conversations",
            )
            continue
        sizes = [b.size(p, where) for p in paths]
        if None in sizes:
            continue
        src_id = str(item.get("id", item.get("question_id", i)))
        for k, (human, gpt) in enumerate(turns):
            here = f"{where} turn {k}" if len(turns) > 1 else where
            if (
                not isinstance(human, dict)
                or not isinstance(gpt, dict)
                or human.get("from") != "human"
                or gpt.get("from") != "gpt"
            ):
                b.bad(
                    here,
                    f"field 'conversations[{2 * k}]': expected a human turn then a gpt turn",
                    "conversation not human/gpt pairs",
                )
                continue
            q, a = human.get("value"), gpt.get("value")
            if not isinstance(q, str) or a is None or (isinstance(a, str) and not a.strip()):
                b.bad(
                    here,
                    f"field 'conversations[{2 * k}].value': empty question or answer",
                    "empty question or answer",
                )
                continue
            rid = src_id if len(turns) == 1 else f"{src_id}_{k}"
            _llava_turn(
                b, q, a, paths, sizes, here, rid, dataset or str(item.get("dataset", default_dataset))
            )
    return b.conv


# ----------------------------------------------------------------------------- VRSBench


def read_vrsbench(
    path, images=None, *, dataset: str | None = None, skip_bad: bool = False, meta: dict | None = None
) -> Conversion:
    """VRSBench eval files (VRSBench_EVAL_Cap.json, _referring.json, _vqa.json: a JSON list of
    `{"image_id", "question", "ground_truth", "question_id", "type"}`) -> caption, grounding and vqa records.

    `type` "caption" -> caption; an item with `obj_corner` (the object's 4 corners, x1 y1 ... x4 y4 on
    0-1) or type "ref" -> grounding, the box enclosing the corners in pixels (else the ground truth's
    `{<x1><y1><x2><y2>}` on 0-100); other types -> vqa with `meta.type`. Images: `images/image_id`
    (default: the file's folder). VRSBench's LLaVA-style training file is read by `read_llava`."""
    path = os.fspath(path)
    base = _default_images(path, images)
    b = _Builder(skip_bad, meta)
    for where, item in _json_items(path):
        if not isinstance(item, dict):
            b.bad(where, f"an item must be a JSON object, got {type(item).__name__}", "item not an object")
            continue
        missing = [k for k in ("image_id", "ground_truth") if k not in item]
        if missing:
            b.bad(where, f"field '{missing[0]}' is missing", f"no '{missing[0]}'")
            continue
        img = _image_path(base, str(item["image_id"]))
        size = b.size(img, where)
        if size is None:
            continue
        kind = str(item.get("type", "")).strip().lower()
        m = {"dataset": dataset or str(item.get("dataset", "VRSBench")), "type": kind or None}
        m = {k: v for k, v in m.items() if v is not None}
        slug = re.sub(r"\W+", "_", kind) or "item"
        rid = f"vrsbench_{slug}_{item.get('question_id', where.rsplit(' ', 1)[-1])}"
        question = str(item.get("question", "")).strip()
        boxes = _Boxes(size)
        if kind == "caption":
            obj = {
                "task": "caption",
                "question": question or "Describe the image in detail.",
                "answer": _answer_text(item["ground_truth"]),
            }
        elif "obj_corner" in item or kind in ("ref", "referring", "grounding"):
            corner = item.get("obj_corner")
            if corner is not None:
                try:
                    box = boxes.from_polygon(corner, scale=size)
                except (TypeError, ValueError, IndexError):
                    b.bad(
                        where,
                        f"field 'obj_corner': expected 8 numbers on 0-1, got {corner!r}",
                        "bad obj_corner",
                    )
                    continue
                m["obj_corner"] = corner
            else:
                found = find_boxes(str(item["ground_truth"]))
                if not found:
                    b.bad(
                        where,
                        f"field 'ground_truth': no {{<x1><y1><x2><y2>}} box in {item['ground_truth']!r}",
                        "no box",
                    )
                    continue
                box = boxes.from_0_100(found[0][2], found[0][3])
            if box is None:
                b.skip("empty box after clipping to the image", where)
                continue
            for key in ("obj_cls", "size_group", "unique"):
                if key in item:
                    m[key] = item[key]
            obj = {"task": "grounding", "question": strip_markup(question), "answer": [box]}
        else:
            obj = {"task": "vqa", "question": question, "answer": _answer_text(item["ground_truth"])}
        b.add({"id": rid, "images": [img], "meta": m, **obj}, where, boxes.n, boxes.rotated, boxes.clipped)
    return b.conv


# ----------------------------------------------------------------------------- RSVQA


def _rsvqa_triples(path: str, split: str | None) -> list[tuple[str, str, str, str]]:
    """(questions, answers, images, prefix) files of RSVQA triples in a folder, or the triple a file
    belongs to."""
    if os.path.isdir(path):
        qfiles = sorted(os.path.join(path, n) for n in os.listdir(path) if n.endswith("questions.json"))
    else:
        m = re.fullmatch(r"(.*)(questions|answers|images)\.json", os.path.basename(path))
        if not m:
            raise RecordError(
                f"{path}: not an RSVQA file (expected *_questions.json, *_answers.json or *_images.json)"
            )
        qfiles = [os.path.join(os.path.dirname(path), m.group(1) + "questions.json")]
    out = []
    for q in qfiles:
        prefix = os.path.basename(q)[: -len("questions.json")]
        s = re.search(r"_split_(.+?)_?$", prefix)
        if split and (s.group(1) if s else "") != split:
            continue
        a, i = q[: -len("questions.json")] + "answers.json", q[: -len("questions.json")] + "images.json"
        for f in (q, a):
            if not os.path.exists(f):
                raise RecordError(f"{f}: missing (an RSVQA set is a questions / answers / images triple)")
        out.append((q, a, i, prefix))
    if not out:
        raise RecordError(f"{path}: no RSVQA *_questions.json" + (f" for split {split!r}" if split else ""))
    return out


def _rsvqa_list(path: str, key: str) -> list:
    obj = _read_json(path)
    items = obj.get(key) if isinstance(obj, dict) else None
    if not isinstance(items, list):
        raise RecordError(f"{path}: field '{key}': expected {{\"{key}\": [...]}}")
    return items


def read_rsvqa(
    path,
    images=None,
    *,
    split: str | None = None,
    dataset: str | None = None,
    skip_bad: bool = False,
    meta: dict | None = None,
) -> Conversion:
    """RSVQA-LR / RSVQA-HR (`{LR|USGS}_split_{split}_{questions,answers,images}.json`; `path` one of the
    three files or a folder holding triples, `split` picks one) -> vqa records.

    questions `{"id", "img_id", "type", "question", "answers_ids", "active"}`; the first answer id's
    `answer` is the answer, written as a string (counts: "12"); the question type (presence,
    comparison, rural_urban, count, area) goes to `meta.type`. Inactive questions or images are
    skipped (counted). Images: `images/{img_id}.tif` (or .png/.jpg; default: the folder of `path`)."""
    path = os.fspath(path)
    base = _default_images(path, images)
    index = _image_index(base)
    b = _Builder(skip_bad, meta)
    for qfile, afile, ifile, prefix in _rsvqa_triples(path, split):
        questions = _rsvqa_list(qfile, "questions")
        answers = {a.get("id"): a for a in _rsvqa_list(afile, "answers") if isinstance(a, dict)}
        imgs = (
            {im.get("id"): im for im in _rsvqa_list(ifile, "images") if isinstance(im, dict)}
            if os.path.exists(ifile)
            else {}
        )
        name = dataset or (
            "RSVQA-LR"
            if prefix.startswith("LR")
            else "RSVQA-HR"
            if prefix.startswith(("USGS", "HR"))
            else "RSVQA"
        )
        s = re.search(r"_split_(.+?)_?$", prefix)
        for i, q in enumerate(questions):
            where = f"{qfile}:item {i}"
            if not isinstance(q, dict):
                b.bad(where, "a question must be a JSON object", "question not an object")
                continue
            missing = [k for k in ("id", "img_id", "question", "answers_ids") if k not in q]
            if missing:
                b.bad(where, f"field '{missing[0]}' is missing", f"no '{missing[0]}'")
                continue
            if not q.get("active", True):
                b.skip("inactive question", where)
                continue
            if not imgs.get(q["img_id"], {}).get("active", True):
                b.skip("inactive image", where)
                continue
            ids = q["answers_ids"] if isinstance(q["answers_ids"], list) else [q["answers_ids"]]
            ans = answers.get(ids[0]) if ids else None
            if ans is None or "answer" not in ans:
                b.bad(
                    where,
                    f"field 'answers_ids': answer {ids[0] if ids else None!r} is not in "
                    f"{os.path.basename(afile)}",
                    "answer id not found",
                )
                continue
            img = _find_image(base, str(q["img_id"]), index)
            if img is None:
                b.bad(
                    where,
                    f"field 'img_id': no image {q['img_id']}.tif/.png/.jpg in {base}",
                    "image not found",
                )
                continue
            if b.size(img, where) is None:
                continue
            m = {
                "dataset": name,
                "type": str(q.get("type", "")).strip() or None,
                "split": s.group(1) if s else None,
            }
            obj = {
                "id": f"{prefix}{q['id']}",
                "task": "vqa",
                "images": [img],
                "question": str(q["question"]),
                "answer": _answer_text(ans["answer"]),
                "meta": {k: v for k, v in m.items() if v is not None},
            }
            b.add(obj, where)
    return b.conv


# ----------------------------------------------------------------------------- DIOR-RSVG


def _numeric_key(p: str):
    stem = os.path.splitext(os.path.basename(p))[0]
    return (0, int(stem), "") if stem.isdigit() else (1, 0, stem)


def read_dior_rsvg(
    path,
    images=None,
    *,
    split_file: str | None = None,
    dataset: str | None = None,
    skip_bad: bool = False,
    meta: dict | None = None,
) -> Conversion:
    """DIOR-RSVG (VOC xml per image: `filename`, `object/name`, `object/bndbox/{xmin,ymin,xmax,ymax}`,
    `object/description`; `path` a folder of xml files or one) -> grounding records, one per object
    with a description ("Locate the object described: <description>").

    `split_file` (the data set's train.txt / val.txt / test.txt) lists object indices counted over all
    objects of the xml files in numeric file order (00001.xml, 00002.xml, ...), as the official loader
    counts them; only those objects are kept. Images: `images/<filename>` (default: the xml folder)."""
    path = os.fspath(path)
    base = _default_images(path, images)
    b = _Builder(skip_bad, meta)
    files = (
        sorted((os.path.join(path, n) for n in os.listdir(path) if n.endswith(".xml")), key=_numeric_key)
        if os.path.isdir(path)
        else [path]
    )
    wanted = None
    if split_file:
        try:
            with open(split_file, encoding="utf-8") as f:
                wanted = {int(t) for t in f.read().split()}
        except ValueError as e:
            raise RecordError(f"{split_file}: split file must list object indices (integers): {e}") from None
    count = -1
    for xml in files:
        try:
            root = ET.parse(xml).getroot()
        except ET.ParseError as e:
            b.bad(xml, f"bad XML: {e}", "bad XML")
            continue
        objects = root.findall("object")
        fname = (root.findtext("filename") or "").strip() or os.path.splitext(os.path.basename(xml))[
            0
        ] + ".jpg"
        img, size, size_failed = _image_path(base, fname), None, False
        for k, obj in enumerate(objects):
            count += 1
            if wanted is not None and count not in wanted:
                continue
            where = f"{xml}:object {k}"
            desc = " ".join((obj.findtext("description") or "").split())
            if not desc:
                b.skip("object without a description", where)
                continue
            try:
                bb = obj.find("bndbox")
                box = [float(bb.findtext(t)) for t in ("xmin", "ymin", "xmax", "ymax")]
            except (AttributeError, TypeError, ValueError):
                b.bad(where, "field 'bndbox': needs numeric xmin, ymin, xmax, ymax", "bad bndbox")
                continue
            if size is None and not size_failed:
                size = b.size(img, where)
                size_failed = size is None
            if size is None:
                continue
            boxes = _Boxes(size)
            px = boxes._finish(box, False)
            if px is None:
                b.skip("empty box after clipping to the image", where)
                continue
            name = (obj.findtext("name") or "").strip()
            m = {"dataset": dataset or "DIOR-RSVG", "class": name, "description": desc, "object_index": count}
            rec = {
                "id": f"diorrsvg_{count}",
                "task": "grounding",
                "images": [img],
                "question": f"Locate the object described: {desc}",
                "answer": [px],
                "meta": m,
            }
            b.add(rec, where, boxes.n, boxes.rotated, boxes.clipped)
    return b.conv


# ----------------------------------------------------------------------------- DOTA / NWPU VHR-10

NWPU_CLASSES = {
    1: "airplane",
    2: "ship",
    3: "storage tank",
    4: "baseball diamond",
    5: "tennis court",
    6: "basketball court",
    7: "ground track field",
    8: "harbor",
    9: "bridge",
    10: "vehicle",
}


def _label_files(path: str) -> list[str]:
    if os.path.isdir(path):
        return sorted(os.path.join(path, n) for n in os.listdir(path) if n.endswith(".txt"))
    return [path]


def _detection_records(
    b: _Builder, txt: str, base: str, index: dict, objects: list, dataset: str, extra: dict
) -> None:
    """objects: [(where, class, polygon points, difficult)] of one image -> one detection record per class."""
    stem = os.path.splitext(os.path.basename(txt))[0]
    img = _find_image(base, stem, index)
    if img is None:
        b.bad(txt, f"no image {stem}.png/.jpg/.tif in {base}", "image not found")
        return
    size = b.size(img, txt)
    if size is None:
        return
    by_class: dict[str, list] = collections.defaultdict(list)
    for obj in objects:
        by_class[obj[1]].append(obj)
    for cls in sorted(by_class):
        boxes, answer, polygons, difficult = _Boxes(size), [], [], 0
        for where, _, points, diff in by_class[cls]:
            box = boxes.from_polygon(points)
            if box is None:
                b.skip("object outside the image or empty (dropped)", where)
                continue
            answer.append(box)
            polygons.append(points)
            difficult += diff
        if not answer:
            continue
        label = cls.replace("-", " ").replace("_", " ")
        m = {"dataset": dataset, "class": cls, "polygons": polygons, **extra}
        if difficult:
            m["difficult"] = difficult
        rec = {
            "id": f"{dataset.lower()}_{stem}_{cls}",
            "task": "detection",
            "images": [img],
            "question": f"Locate every {label} in the image.",
            "answer": answer,
            "meta": m,
        }
        b.add(rec, txt, boxes.n, boxes.rotated, boxes.clipped)


def _label_lines(txt: str):
    """(file:line, stripped text) of each non-empty line of a label file."""
    with open(txt, encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            if line.strip():
                yield f"{txt}:{lineno}", line.strip()


def read_dota(
    path, images=None, *, dataset: str | None = None, skip_bad: bool = False, meta: dict | None = None
) -> Conversion:
    """DOTA labelTxt files (`path` a folder of .txt or one): header lines `imagesource:` / `gsd:`, then
    `x1 y1 x2 y2 x3 y3 x4 y4 class difficult` per object -> detection records, one per image and class,
    each polygon replaced by its enclosing horizontal box (polygons kept in `meta.polygons`, the count
    of difficult objects in `meta.difficult`). Images: `images/<stem>.png` (or .jpg/.tif; default: the
    label folder)."""
    path = os.fspath(path)
    base = _default_images(path, images)
    index = _image_index(base)
    b = _Builder(skip_bad, meta)
    for txt in _label_files(path):
        objects, extra = [], {}
        for where, line in _label_lines(txt):
            if re.match(r"(imagesource|gsd)\s*:", line):
                key, _, value = line.partition(":")
                try:
                    extra[key.strip()] = float(value) if key.strip() == "gsd" else value.strip()
                except ValueError:
                    pass  # "gsd:null" in some files
                continue
            tokens = line.split()
            try:
                points = [float(t) for t in tokens[:8]]
                cls = tokens[8]
                diff = int(tokens[9]) if len(tokens) > 9 else 0
            except (ValueError, IndexError):
                b.bad(
                    where,
                    f"expected 'x1 y1 x2 y2 x3 y3 x4 y4 class difficult', got {line[:80]!r}",
                    "bad DOTA line",
                )
                continue
            objects.append((where, cls, points, diff))
        if objects:
            _detection_records(b, txt, base, index, objects, dataset or "DOTA", extra)
    return b.conv


NWPU_LINE = re.compile(rf"((?:\(\s*{NUM}\s*,\s*{NUM}\s*\)\s*,\s*){{2,}})\s*([^,()\s][^,()]*)\s*$")


def read_nwpu(
    path, images=None, *, dataset: str | None = None, skip_bad: bool = False, meta: dict | None = None
) -> Conversion:
    """NWPU VHR-10 ground truth (`path` the "ground truth" folder of .txt or one file): lines
    `(x1,y1),(x2,y2),class` (class 1-10 or a name; more points are read as a polygon) -> detection
    records, one per image and class. Images: `images/<stem>.jpg` ("positive image set"; default: the
    label folder)."""
    path = os.fspath(path)
    base = _default_images(path, images)
    index = _image_index(base)
    b = _Builder(skip_bad, meta)
    for txt in _label_files(path):
        objects = []
        for where, line in _label_lines(txt):
            m = NWPU_LINE.fullmatch(line)
            if not m:
                b.bad(where, f"expected '(x1,y1),(x2,y2),class', got {line[:80]!r}", "bad NWPU line")
                continue
            points = [float(v) for v in re.findall(NUM, m.group(1))]
            cls = m.group(2).strip()
            if cls.isdigit():
                if int(cls) not in NWPU_CLASSES:
                    b.bad(where, f"class {cls} is not one of NWPU VHR-10's 1-10", "unknown class")
                    continue
                cls = NWPU_CLASSES[int(cls)]
            objects.append((where, cls, points, 0))
        if objects:
            _detection_records(b, txt, base, index, objects, dataset or "NWPU-VHR-10", {})
    return b.conv


# ----------------------------------------------------------------------------- LEVIR-CC

CHANGE_QUESTION = "What has changed between the two images?"


def read_levir_cc(
    path,
    images=None,
    *,
    split: str | None = None,
    dataset: str | None = None,
    skip_bad: bool = False,
    meta: dict | None = None,
) -> Conversion:
    """LEVIR-CC (LevirCCcaptions.json: `{"images": [{"filepath", "filename", "split", "sentences": [{"raw"}],
    "changeflag"}]}`) -> change_caption records: images `images/{filepath}/A/{filename}` and `.../B/...`
    (default: the json's folder), the first sentence as the answer, all of them in `meta.references`
    (a change_caption answer is one string), `changeflag` and `split` in meta; `split` keeps one split."""
    path = os.fspath(path)
    base = _default_images(path, images)
    b = _Builder(skip_bad, meta)
    obj = _read_json(path)
    items = obj.get("images") if isinstance(obj, dict) else None
    if not isinstance(items, list):
        raise RecordError(f"{path}: field 'images': expected {{\"images\": [...]}} (LevirCCcaptions.json)")
    for i, item in enumerate(items):
        where = f"{path}:item {i}"
        if not isinstance(item, dict):
            b.bad(where, "an item must be a JSON object", "item not an object")
            continue
        missing = [k for k in ("filename", "sentences") if k not in item]
        if missing:
            b.bad(where, f"field '{missing[0]}' is missing", f"no '{missing[0]}'")
            continue
        item_split = str(item.get("split", item.get("filepath", "")))
        if split and item_split != split:
            continue
        folder = str(item.get("filepath", item_split))
        pair = [os.path.join(base, folder, ab, str(item["filename"])) for ab in ("A", "B")]
        sentences = item["sentences"] if isinstance(item["sentences"], list) else []
        refs = [" ".join(str(s.get("raw", "") if isinstance(s, dict) else s).split()) for s in sentences]
        refs = [r for r in refs if r]
        if not refs:
            b.bad(where, "field 'sentences': no sentence with a 'raw' text", "no sentence")
            continue
        if any(b.size(p, where) is None for p in pair):
            continue
        m = {"dataset": dataset or "LEVIR-CC", "split": item_split, "references": refs}
        if "changeflag" in item:
            m["changeflag"] = item["changeflag"]
        stem = os.path.splitext(str(item["filename"]))[0]
        rec = {
            "id": f"levircc_{stem}",
            "task": "change_caption",
            "images": pair,
            "question": CHANGE_QUESTION,
            "answer": refs[0],
            "meta": m,
        }
        b.add(rec, where)
    return b.conv


# ----------------------------------------------------------------------------- the command

FORMATS = {  # name: (reader, what --input is, what --images is)
    "geochat": (
        read_llava,
        "GeoChat / LLaVA json or jsonl (conversations, or question + ground_truth items)",
        "the folder the items' image names are relative to",
    ),
    "llava": (read_llava, "same as geochat", "same as geochat"),
    "earthdial": (
        read_llava,
        "as geochat, with EarthDial's [[x1, y1, x2, y2, θ]] boxes, <box> regions, jpg_A/jpg_B pairs",
        "as geochat",
    ),
    "vrsbench": (
        read_vrsbench,
        "VRSBench_EVAL_{Cap,referring,vqa}.json",
        "Images_val (files named by image_id)",
    ),
    "rsvqa": (
        read_rsvqa,
        "an RSVQA *_questions.json / _answers.json / _images.json, or their folder",
        "Images_LR (LR) or Data (HR): files {img_id}.tif",
    ),
    "dior-rsvg": (read_dior_rsvg, "DIOR-RSVG's Annotations folder of VOC xml (or one xml)", "JPEGImages"),
    "dota": (read_dota, "a DOTA labelTxt folder (or one .txt)", "the images folder: {stem}.png"),
    "nwpu": (
        read_nwpu,
        "NWPU VHR-10's 'ground truth' folder (or one .txt)",
        "'positive image set': {stem}.jpg",
    ),
    "levir-cc": (read_levir_cc, "LevirCCcaptions.json", "the images folder holding {train,val,test}/{A,B}/"),
}
DEFAULT_DATASET = {"earthdial": "EarthDial", "llava": "LLaVA"}


def record_json(rec: Record, out_dir: str) -> dict:
    """A Record as one JSONL object, image paths relative to the output file's folder."""
    obj = {
        "id": rec.id,
        "task": rec.task,
        "images": [os.path.relpath(p, out_dir) for p in rec.images],
        "question": rec.question,
        "answer": rec.answer,
    }
    if rec.reasoning is not None:
        obj["reasoning"] = rec.reasoning
    if rec.meta:
        obj["meta"] = rec.meta
    return obj


def write_jsonl(records: list[Record], out: str) -> None:
    """Write records to `out` atomically (a temporary file renamed into place)."""
    out_dir = os.path.dirname(os.path.abspath(out))
    os.makedirs(out_dir, exist_ok=True)
    tmp = os.path.join(out_dir, f".{os.path.basename(out)}.tmp{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            for rec in records:
                f.write(json.dumps(record_json(rec, out_dir), ensure_ascii=False) + "\n")
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def convert(
    fmt: str, input_path, images=None, *, split=None, split_file=None, dataset=None, skip_bad=False, meta=None
) -> Conversion:
    """Run the reader of `fmt` with the options it takes."""
    reader = FORMATS[fmt][0]
    kwargs = {"dataset": dataset, "skip_bad": skip_bad, "meta": meta}
    if fmt in DEFAULT_DATASET:
        kwargs["default_dataset"] = DEFAULT_DATASET[fmt]
    if reader in (read_rsvqa, read_levir_cc):
        kwargs["split"] = split
    if reader is read_dior_rsvg:
        kwargs["split_file"] = split_file
    return reader(input_path, images, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    formats = "\n".join(f"  {k:10s} --input: {v[1]}\n  {'':10s} --images: {v[2]}" for k, v in FORMATS.items())
    p = argparse.ArgumentParser(
        prog="formats.py",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Convert an EO data set in its own format to GeoVLM-R1's JSONL (one validated record a "
        "line, boxes in original pixels, image paths relative to --out), and report what was kept, "
        "converted and skipped.",
        epilog=f"formats:\n{formats}\n\nexamples:\n"
        "  python -m geovlm.formats --format rsvqa --input RSVQA_LR/ --images RSVQA_LR/Images_LR --split "
        "test --out data/rsvqa_lr_test.jsonl\n"
        "  python -m geovlm.formats --format dota --input DOTA/val/labelTxt --images DOTA/val/images --out "
        "data/dota_val.jsonl\n"
        "  python -m geovlm.formats --format geochat --input GeoChat_Instruct.json --images GeoChat/images "
        "--out data/geochat.jsonl\n"
        "  python -m geovlm.formats --format dior-rsvg --input DIOR-RSVG/Annotations --images "
        "DIOR-RSVG/JPEGImages --split-file DIOR-RSVG/test.txt --out data/dior_rsvg_test.jsonl",
    )
    p.add_argument(
        "--format",
        required=True,
        choices=sorted(FORMATS),
        help="the input's format (see the list below); required",
    )
    p.add_argument(
        "--input",
        required=True,
        help="the annotation file or folder to read (what each format takes is listed below); required",
    )
    p.add_argument(
        "--images",
        default=None,
        help="folder the input's image names are relative to; default: the folder of --input (--input itself "
        "when it is a folder)",
    )
    p.add_argument(
        "--out",
        required=True,
        help="the JSONL file to write; required; an existing file is kept unless --force",
    )
    p.add_argument(
        "--split",
        default=None,
        help="rsvqa: which triple to read (train, val, test, test_phili); levir-cc: keep this split only; "
        "default: all",
    )
    p.add_argument(
        "--split-file",
        default=None,
        help="dior-rsvg: the data set's train.txt/val.txt/test.txt of object indices to keep; default: every "
        "object",
    )
    p.add_argument(
        "--dataset",
        default=None,
        help="meta.dataset of every record (eval reports per data set); default: the format's name, e.g. "
        "RSVQA-LR, DOTA",
    )
    p.add_argument(
        "--skip-bad",
        action="store_true",
        help="skip malformed input items and missing or unreadable images, counted in the report; default: "
        "stop at the first with one error line",
    )
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists; default: refuse")
    add_imagery_flags(p)
    p.epilog += (
        "\n\n--bands/--stretch/--nodata are written into every record's meta (meta.bands, meta.stretch, "
        "meta.nodata): how a GeoTIFF of this data set becomes RGB (see imagery.py)."
    )
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    prog = "formats.py: error:"
    try:
        opts = imagery.options_from_args(args)
    except imagery.ImageError as e:
        parser.error(str(e))
    if not os.path.exists(args.input):
        print(f"{prog} --input {args.input}: no such file or folder", file=sys.stderr)
        return 2
    if args.images and not os.path.isdir(args.images):
        print(f"{prog} --images {args.images}: no such folder", file=sys.stderr)
        return 2
    if args.split_file and not os.path.isfile(args.split_file):
        print(f"{prog} --split-file {args.split_file}: no such file", file=sys.stderr)
        return 2
    if os.path.exists(args.out) and not args.force:
        print(f"{prog} --out {args.out} exists; pass --force to overwrite it", file=sys.stderr)
        return 2
    meta = {k: list(v) if isinstance(v, tuple) else v for k, v in opts.items()}
    try:
        conv = convert(
            args.format,
            args.input,
            args.images,
            split=args.split,
            split_file=args.split_file,
            dataset=args.dataset,
            skip_bad=args.skip_bad,
            meta=meta,
        )
        write_jsonl(conv.records, args.out)
    except RecordError as e:
        print(f"{prog} {e}", file=sys.stderr)
        print("(--skip-bad skips such items and counts them)", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"{prog} {e.filename or ''}: {e.strerror or e}", file=sys.stderr)
        return 1
    print(conv.summary())
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
