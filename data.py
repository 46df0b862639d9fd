"""Records, validation, readers, coordinate frames, chat formatting and batch collation.

One JSON object a line (image paths relative to the JSONL file, boxes in original pixels):

    {"id": "synth_000001", "task": "grounding", "images": ["images/000001.png"],
     "question": "Where is the storage tank at the bottom left?",
     "answer": [[412, 630, 470, 688]], "reasoning": "...", "meta": {"dataset": "synth"}}
"""

from __future__ import annotations

import json
import math
import os
import warnings
from dataclasses import dataclass, field

# ----------------------------------------------------------------------------- coordinate frames
# Qwen2.5-VL reads and writes absolute pixels of the processor's resized input; Qwen2-VL uses
# 0-1000; GeoChat / EarthDial / TEOChat files use 0-100. Every conversion goes through this pair.

FRAME_KINDS = ("pixels", "0-1000", "0-100")


@dataclass(frozen=True)
class Frame:
    """How one image's boxes are written in text.

    kind: "pixels" (absolute pixels of the resized model input), "0-1000" or "0-100".
    image_size: original (width, height); model_size: the processor's resize (width, height).
    """

    kind: str
    image_size: tuple[int, int]
    model_size: tuple[int, int]

    def __post_init__(self) -> None:
        if self.kind not in FRAME_KINDS:
            raise ValueError(f"unknown frame kind {self.kind!r}; expected one of {FRAME_KINDS}")


def _frame_scale(frame: Frame) -> tuple[float, float]:
    """Frame units per original pixel, (sx, sy)."""
    w, h = frame.image_size
    if frame.kind == "pixels":
        mw, mh = frame.model_size
        return mw / w, mh / h
    span = 1000.0 if frame.kind == "0-1000" else 100.0
    return span / w, span / h


def to_frame(box: list[float], frame: Frame) -> list[float]:
    """Original-pixel box [x1, y1, x2, y2(, θ)] -> the frame's units (θ passes through)."""
    sx, sy = _frame_scale(frame)
    out = [box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy]
    return out + list(box[4:5])


def from_frame(box: list[float], frame: Frame) -> list[float]:
    """The frame's units -> original-pixel box (inverse of `to_frame`)."""
    sx, sy = _frame_scale(frame)
    out = [box[0] / sx, box[1] / sy, box[2] / sx, box[3] / sy]
    return out + list(box[4:5])


def round_box(box: list[float]) -> list[int]:
    return [int(math.floor(v + 0.5)) for v in box]


# ----------------------------------------------------------------------------- records and validation

TASKS = (
    "classification", "multilabel", "vqa", "counting", "grounding", "detection", "region_caption",
    "caption", "grounded_caption", "change_caption", "change_detection", "temporal_classification",
)  # fmt: skip
BOX_TASKS = ("grounding", "detection", "change_detection", "grounded_caption")
MULTI_IMAGE_TASKS = {"change_caption": (2, 2), "change_detection": (2, 2), "temporal_classification": (2, 64)}


class RecordError(ValueError):
    """A bad record: the message names file:line and the field."""


@dataclass
class Record:
    id: str
    task: str
    images: list[str]  # absolute paths
    question: str
    answer: object  # typed by task: see docs/INTERFACES.md
    reasoning: str | None = None
    meta: dict = field(default_factory=dict)
    source: str = ""  # "file.jsonl:LINE", for error messages
    image_sizes: list[tuple[int, int]] = field(default_factory=list)  # original (width, height)


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def check_box(box, size: tuple[int, int], where: str) -> list[float]:
    """A valid original-pixel box [x1, y1, x2, y2(, θ)] inside an image of `size`, or RecordError."""
    if not isinstance(box, (list, tuple)) or len(box) not in (4, 5) or not all(_is_num(v) for v in box):
        raise RecordError(f"{where}: a box must be [x1, y1, x2, y2] or [x1, y1, x2, y2, θ] of finite numbers, got {box!r}")
    x1, y1, x2, y2 = box[:4]
    if x2 <= x1 or y2 <= y1:
        raise RecordError(f"{where}: box {list(box)} has x2<=x1 or y2<=y1")
    w, h = size
    if x1 < 0 or y1 < 0 or x2 > w or y2 > h:
        raise RecordError(f"{where}: box {list(box)} lies outside the {w}x{h} image")
    return list(box)


def _check_answer(task: str, answer, sizes: list[tuple[int, int]], where: str):
    """The answer, normalised to its task's type (see docs/INTERFACES.md), or RecordError."""
    where = f"{where}: field 'answer'"

    def text(v, what="a non-empty string"):
        if not isinstance(v, str) or not v.strip():
            raise RecordError(f"{where}: {task} needs {what}, got {v!r}")
        return v.strip()

    def boxes(v, min_n=0):
        if isinstance(v, (list, tuple)) and len(v) in (4, 5) and all(_is_num(x) for x in v):
            v = [v]  # a single flat box
        if not isinstance(v, (list, tuple)) or len(v) < min_n:
            raise RecordError(f"{where}: {task} needs a list of at least {min_n} box(es), got {v!r}")
        return [check_box(b, sizes[0], where) for b in v]

    if task in ("classification", "vqa", "temporal_classification", "region_caption", "change_caption"):
        return text(answer)
    if task == "multilabel":
        if not isinstance(answer, list) or not answer or not all(isinstance(a, str) and a.strip() for a in answer):
            raise RecordError(f"{where}: multilabel needs a non-empty list of labels, got {answer!r}")
        return [a.strip() for a in answer]
    if task == "counting":
        if isinstance(answer, bool) or not isinstance(answer, int) or answer < 0:
            raise RecordError(f"{where}: counting needs a non-negative integer, got {answer!r}")
        return answer
    if task == "grounding":
        got = boxes(answer, 1)
        if len(got) != 1:
            raise RecordError(f"{where}: grounding needs exactly one box, got {len(got)}")
        return got
    if task == "detection":
        return boxes(answer)
    if task == "change_detection":
        return text(answer) if isinstance(answer, str) else boxes(answer)
    if task == "caption":
        refs = [answer] if isinstance(answer, str) else answer
        if not isinstance(refs, list) or not refs:
            raise RecordError(f"{where}: caption needs a string or a list of reference strings, got {answer!r}")
        return [text(r) for r in refs]
    if task == "grounded_caption":
        if not isinstance(answer, dict) or "caption" not in answer or "boxes" not in answer:
            raise RecordError(f"{where}: grounded_caption needs {{'caption': str, 'boxes': [...]}}, got {answer!r}")
        return {"caption": text(answer["caption"]), "boxes": boxes(answer["boxes"])}
    raise AssertionError(task)


def image_size(path: str, where: str) -> tuple[int, int]:
    """(width, height) of an image, decoded in full (imagery.image_size), or RecordError naming `where`."""
    import imagery

    try:
        return imagery.image_size(path)
    except FileNotFoundError:
        raise RecordError(f"{where}: field 'images': file not found: {path}") from None
    except (imagery.ImageError, OSError) as e:
        raise RecordError(f"{where}: field 'images': unreadable image {path}: {e}") from None


def load_image(path: str, where: str = ""):
    """The image as RGB, fully decoded (imagery.load_image: 8-bit pictures as PIL's convert("RGB"),
    GeoTIFF / non-8-bit data band-selected and stretched); a corrupt or truncated file raises RecordError."""
    import imagery

    try:
        return imagery.load_image(path)
    except (FileNotFoundError, OSError, ValueError) as e:  # imagery.ImageError is a ValueError
        raise RecordError(f"{where or path}: field 'images': cannot read {path}: {e}") from None


def parse_record(obj, base_dir: str, where: str) -> Record:
    """Validate one decoded JSON object into a Record (image paths resolved against `base_dir`)."""
    if not isinstance(obj, dict):
        raise RecordError(f"{where}: a record must be a JSON object, got {type(obj).__name__}")
    for key in ("id", "task", "images", "question", "answer"):
        if key not in obj:
            raise RecordError(f"{where}: field '{key}' is missing")
    task = obj["task"]
    if task not in TASKS:
        raise RecordError(f"{where}: field 'task': unknown task {task!r}; known: {', '.join(TASKS)}")
    images = obj["images"]
    if isinstance(images, str):
        images = [images]
    lo, hi = MULTI_IMAGE_TASKS.get(task, (1, 1))
    if not isinstance(images, list) or not all(isinstance(p, str) for p in images) or not lo <= len(images) <= hi:
        raise RecordError(f"{where}: field 'images': {task} needs {lo}..{hi} image path(s), got {obj['images']!r}")
    paths = [p if os.path.isabs(p) else os.path.normpath(os.path.join(base_dir, p)) for p in images]
    sizes = [image_size(p, where) for p in paths]
    question = obj["question"]
    if not isinstance(question, str) or not question.strip():
        raise RecordError(f"{where}: field 'question' is empty")
    meta = obj.get("meta") or {}
    if not isinstance(meta, dict):
        raise RecordError(f"{where}: field 'meta' must be an object")
    if "{region}" in question:
        if "region" not in meta:
            raise RecordError(f"{where}: field 'meta.region' is missing but the question holds {{region}}")
        meta = dict(meta, region=check_box(meta["region"], sizes[0], f"{where}: field 'meta.region'"))
    reasoning = obj.get("reasoning")
    if reasoning is not None and not isinstance(reasoning, str):
        raise RecordError(f"{where}: field 'reasoning' must be a string")
    answer = _check_answer(task, obj["answer"], sizes, where)
    return Record(str(obj["id"]), task, paths, question.strip(), answer, reasoning, meta, where, sizes)


def load_records(path: str | os.PathLike, skip_bad: bool = False, tasks: list[str] | None = None,
                 max_reported: int = 5) -> list[Record]:  # fmt: skip
    """Validated records of a JSONL file. Stops at the first bad line unless `skip_bad`, which then
    warns with the count of skipped lines and the first few reasons (never silently)."""
    path = os.fspath(path)
    if tasks:
        unknown = [t for t in tasks if t not in TASKS]
        if unknown:
            raise ValueError(f"unknown task(s) {unknown}; known: {', '.join(TASKS)}")
    base = os.path.dirname(os.path.abspath(path))
    records, errors = [], []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    raise RecordError(f"{where}: bad JSON: {e.msg} at column {e.colno}") from None
                rec = parse_record(obj, base, where)
            except RecordError as e:
                if not skip_bad:
                    raise
                errors.append(str(e))
                continue
            if not tasks or rec.task in tasks:
                records.append(rec)
    if errors:
        shown = "\n  ".join(errors[:max_reported])
        warnings.warn(f"{path}: skipped {len(errors)} bad line(s); first reasons:\n  {shown}", stacklevel=2)
    return records


# ----------------------------------------------------------------------------- chat formatting

SYSTEM_PROMPT = (
    "You are an expert in Earth Observation reasoning. Analyze the problem carefully and provide "
    "step-by-step reasoning and the final response. Ensure your reasoning process and response are "
    "within tags such as <think>...</think> and <answer>...</answer>, respectively. Keep your "
    "explanation clear, logical, and concise."
)


def model_size(size: tuple[int, int], image_processor) -> tuple[int, int]:
    """(width, height) of the processor's own resize of an image of `size` (Qwen's smart_resize)."""
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

    ip = image_processor
    sz = getattr(ip, "size", None) or {}
    get = sz.get if isinstance(sz, dict) else lambda k: getattr(sz, k, None)
    lo = getattr(ip, "min_pixels", None) or get("shortest_edge")
    hi = getattr(ip, "max_pixels", None) or get("longest_edge")
    h, w = smart_resize(size[1], size[0], factor=ip.patch_size * ip.merge_size, min_pixels=lo, max_pixels=hi)
    return w, h


def frames_of(record: Record, frame_kind: str, image_processor) -> list[Frame]:
    return [Frame(frame_kind, s, model_size(s, image_processor)) for s in record.image_sizes]


def _box_text(box: list[float], frame: Frame) -> str:
    return "[" + ", ".join(str(v) for v in round_box(to_frame(box[:4], frame))) + "]"


def format_answer(task: str, answer, frame: Frame) -> str:
    """The answer as the model writes it, boxes in the model's frame."""
    if task in BOX_TASKS[:3] and not isinstance(answer, str):
        return ", ".join(_box_text(b, frame) for b in answer)
    if task == "grounded_caption":
        return " ".join([answer["caption"]] + [", ".join(_box_text(b, frame) for b in answer["boxes"])]).strip()
    if task == "multilabel":
        return ", ".join(answer)
    if task == "caption":
        return answer[0] if isinstance(answer, list) else answer
    return str(answer)


def question_text(record: Record, frame: Frame) -> str:
    q = record.question
    if "{region}" in q:
        q = q.replace("{region}", _box_text(record.meta["region"], frame))
    return q


def target_text(record: Record, frame: Frame) -> str:
    """The SFT target: <think>{reasoning}</think><answer>{answer}</answer>."""
    return f"<think>{record.reasoning or ''}</think><answer>{format_answer(record.task, record.answer, frame)}</answer>"


def to_messages(record: Record, frames: list[Frame], with_answer: bool = False) -> list[dict]:
    """System prompt, the image(s) ("Image k:" labels when several), the question[, the SFT target]."""
    content: list[dict] = []
    for k in range(len(record.images)):
        if len(record.images) > 1:
            content.append({"type": "text", "text": f"Image {k + 1}: "})
        content.append({"type": "image"})
    content.append({"type": "text", "text": question_text(record, frames[0])})
    messages = [{"role": "system", "content": [{"type": "text", "text": SYSTEM_PROMPT}]},
                {"role": "user", "content": content}]  # fmt: skip
    if with_answer:
        messages.append({"role": "assistant", "content": [{"type": "text", "text": target_text(record, frames[0])}]})
    return messages


# ----------------------------------------------------------------------------- batch collation


@dataclass
class PromptBatch:
    inputs: dict  # input_ids/attention_mask/mm_token_type_ids [B, P] (left padded), pixel_values, image_grid_thw
    records: list[Record]
    frames: list[Frame]  # one per record: its first image's frame (boxes in answers refer to it)


def _encode_prompts(records: list[Record], processor, frame_kind: str, padding_side: str):
    frames = [frames_of(r, frame_kind, processor.image_processor) for r in records]
    texts = [processor.apply_chat_template(to_messages(r, f), add_generation_prompt=True, tokenize=False)
             for r, f in zip(records, frames)]  # fmt: skip
    images = [load_image(p, r.source) for r in records for p in r.images]
    enc = processor(text=texts, images=images, padding=True, padding_side=padding_side, return_tensors="pt")
    # the processor resized each image itself; the frames must agree with what it did
    patch = processor.image_processor.patch_size
    sizes = [(int(w) * patch, int(h) * patch) for _, h, w in enc["image_grid_thw"].tolist()]
    expected = [f.model_size for fs in frames for f in fs]
    if sizes != expected:
        raise RuntimeError(f"processor resized images to {sizes}, frames expected {expected}")
    if "mm_token_type_ids" not in enc:  # older processors: derive it (image 1, video 2, text 0)
        ids = enc["input_ids"]
        enc["mm_token_type_ids"] = (ids == processor.image_token_id).long() + 2 * (ids == processor.video_token_id).long()
    return dict(enc), frames


def collate_prompts(records: list[Record], processor, frame_kind: str) -> PromptBatch:
    """Prompt-only batch, left padded, plus what rewards need (records: task and answer; frames)."""
    inputs, frames = _encode_prompts(records, processor, frame_kind, "left")
    return PromptBatch(inputs, records, [f[0] for f in frames])


def collate_sft(records: list[Record], processor, frame_kind: str) -> dict:
    """Prompt + target batch (right padded); labels are -100 except on the assistant tokens, closing
    <|im_end|> included. Prompt and target are tokenised apart and joined, exactly as sampling sees them."""
    import torch  # here, not at the top: rewards/eval import data.py and should start without torch
    enc, frames = _encode_prompts(records, processor, frame_kind, "right")
    tok = processor.tokenizer
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    rows = []
    for i, (rec, fr) in enumerate(zip(records, frames)):
        keep = enc["attention_mask"][i].bool()
        prompt_ids, prompt_types = enc["input_ids"][i][keep], enc["mm_token_type_ids"][i][keep]
        target = tok(target_text(rec, fr[0]), add_special_tokens=False)["input_ids"] + [im_end]
        rows.append((prompt_ids, prompt_types, torch.tensor(target, dtype=prompt_ids.dtype)))
    n = max(len(p) + len(t) for p, _, t in rows)
    pad = tok.pad_token_id if tok.pad_token_id is not None else im_end
    input_ids = torch.full((len(rows), n), pad, dtype=torch.long)
    labels = torch.full((len(rows), n), -100, dtype=torch.long)
    attention = torch.zeros((len(rows), n), dtype=torch.long)
    mm_types = torch.zeros((len(rows), n), dtype=torch.long)
    for i, (p, ty, t) in enumerate(rows):
        input_ids[i, : len(p) + len(t)] = torch.cat([p, t])
        labels[i, len(p) : len(p) + len(t)] = t
        attention[i, : len(p) + len(t)] = 1
        mm_types[i, : len(p)] = ty
    return {"input_ids": input_ids, "attention_mask": attention, "mm_token_type_ids": mm_types, "labels": labels,
            "pixel_values": enc["pixel_values"], "image_grid_thw": enc["image_grid_thw"]}  # fmt: skip
