"""Records: validation, image loading, readers, chat formatting and batch collation.

One JSON object a line (image paths relative to the JSONL file, boxes in original pixels):

    {"id": "synth_000001", "task": "grounding", "images": ["images/000001.png"],
     "question": "Where is the storage tank at the bottom left?",
     "answer": [[412, 630, 470, 688]], "reasoning": "...", "meta": {"dataset": "synth"}}
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field

import torch

from geovlm import imagery
from geovlm.frames import FRAME_KINDS, Frame, from_frame, model_size, to_frame  # noqa: F401 - re-exported for readers
from geovlm.tasks import TASKS, RecordError, box_text, check_box

log = logging.getLogger(__name__)  # data problems that do not stop a run: one line each, no source echo


@dataclass
class Record:
    id: str
    task: str
    images: list[str]  # absolute paths
    question: str
    answer: object  # typed by task: see tasks.py
    reasoning: str | None = None
    meta: dict = field(default_factory=dict)
    source: str = ""  # "file.jsonl:LINE", for error messages
    image_sizes: list[tuple[int, int]] = field(default_factory=list)  # original (width, height)


# ----------------------------------------------------------------------------- records and validation


def image_size(path: str, where: str) -> tuple[int, int]:
    """(width, height) of an image, decoded in full (imagery.image_size), or RecordError naming `where`."""
    try:
        return imagery.image_size(path)
    except FileNotFoundError:
        raise RecordError(f"{where}: field 'images': file not found: {path}") from None
    except (imagery.ImageError, OSError) as e:
        raise RecordError(f"{where}: field 'images': unreadable image {path}: {e}") from None


def load_image(path: str, where: str = "", **options):
    """The image as RGB, fully decoded (imagery.load_image: 8-bit pictures as PIL's convert("RGB"),
    GeoTIFF / non-8-bit data band-selected and stretched with `options`: bands, stretch, nodata, as a record's
    meta gives them); a corrupt or truncated file raises RecordError."""
    try:
        return imagery.load_image(path, **options)
    except (FileNotFoundError, OSError, ValueError) as e:  # imagery.ImageError is a ValueError
        raise RecordError(f"{where or path}: field 'images': cannot read {path}: {e}") from None


def image_options(meta: dict, paths: list[str], where: str) -> dict:
    """The record's GeoTIFF options (meta.bands / stretch / nodata, see imagery.py), checked against its
    images."""
    try:
        options = imagery.options_from_meta(meta)
        for p in paths if options.get("bands") else []:
            if max(options["bands"]) > (n := imagery.band_count(p)):
                raise imagery.ImageError(f"field 'meta.bands': {options['bands']} but {p} has {n} band(s)")
    except imagery.ImageError as e:
        raise RecordError(f"{where}: {e}") from None
    return options


def parse_record(obj, base_dir: str, where: str, meta_defaults: dict | None = None) -> Record:
    """Validate one decoded JSON object into a Record (image paths resolved against `base_dir`);
    `meta_defaults` (e.g. the --bands/--stretch/--nodata flags) fill meta keys the record does not set, and
    are checked with it."""
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
    lo, hi = TASKS[task].images
    if (
        not isinstance(images, list)
        or not all(isinstance(p, str) for p in images)
        or not lo <= len(images) <= hi
    ):
        raise RecordError(
            f"{where}: field 'images': {task} needs {lo}..{hi} image path(s), got {obj['images']!r}"
        )
    paths = [p if os.path.isabs(p) else os.path.normpath(os.path.join(base_dir, p)) for p in images]
    sizes = [image_size(p, where) for p in paths]
    question = obj["question"]
    if not isinstance(question, str) or not question.strip():
        raise RecordError(f"{where}: field 'question' is empty")
    for name in ("question", "reasoning"):
        if isinstance(obj.get(name), str) and len(obj[name]) > MAX_TEXT:
            raise RecordError(
                f"{where}: field '{name}' has {len(obj[name]):,} characters; at most {MAX_TEXT:,}"
            )
    meta = obj.get("meta") or {}
    if not isinstance(meta, dict):
        raise RecordError(f"{where}: field 'meta' must be an object")
    meta = {**(meta_defaults or {}), **meta}
    image_options(meta, paths, where)
    if "{region}" in question:
        if "region" not in meta:
            raise RecordError(f"{where}: field 'meta.region' is missing but the question holds {{region}}")
        meta = dict(meta, region=check_box(meta["region"], sizes[0], f"{where}: field 'meta.region'"))
    reasoning = obj.get("reasoning")
    if reasoning is not None and not isinstance(reasoning, str):
        raise RecordError(f"{where}: field 'reasoning' must be a string")
    answer = TASKS[task].check(obj["answer"], sizes, f"{where}: field 'answer'")
    return Record(str(obj["id"]), task, paths, question.strip(), answer, reasoning, meta, where, sizes)


MAX_TEXT = (
    20_000  # characters of a question or reasoning: far beyond any EO instruction, far below a runaway file
)
MAX_LINE = 1_000_000  # characters of one JSONL line (answers with many boxes, long captions included)


def _lines(f, path: str):
    """(line number, line) of a text file; a file that is not UTF-8 is a RecordError naming the line."""
    lineno = 0
    try:
        for lineno, line in enumerate(f, 1):  # noqa: B007 - lineno is read in the except clause
            yield lineno, line
    except UnicodeDecodeError as e:
        raise RecordError(
            f"{path}:{lineno + 1}: not UTF-8 text ({e.reason} at byte {e.start}); save the file as UTF-8"
        ) from None


def load_records(
    path: str | os.PathLike,
    skip_bad: bool = False,
    tasks: list[str] | None = None,
    max_reported: int = 5,
    meta_defaults: dict | None = None,
) -> list[Record]:
    """Validated records of a JSONL file. Stops at the first bad line unless `skip_bad`, which then
    logs a warning with the count of skipped lines and the first few reasons (never silently). Ids repeated
    in the file are kept but warned about, naming both lines (predictions and the viewer go by id).
    `meta_defaults`: see `parse_record`."""
    path = os.fspath(path)
    if tasks:
        unknown = [t for t in tasks if t not in TASKS]
        if unknown:
            raise ValueError(f"unknown task(s) {unknown}; known: {', '.join(TASKS)}")
    base = os.path.dirname(os.path.abspath(path))
    records, errors, duplicates = [], [], []
    first_line: dict[str, int] = {}  # id -> the line that used it first
    # -sig: a byte-order mark (Windows editors) is not a JSON error
    with open(path, encoding="utf-8-sig") as f:
        for lineno, line in _lines(f, path):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                if len(line) > MAX_LINE:
                    raise RecordError(
                        f"{where}: the line has {len(line):,} characters; a record holds at most {MAX_LINE:,}"
                    )
                try:  # without its newline: a cut line is reported where it ends, not at "line 2 column 1"
                    obj = json.loads(line.rstrip("\r\n"))
                except json.JSONDecodeError as e:
                    raise RecordError(f"{where}: bad JSON ({e.msg}, column {e.colno})") from None
                rec = parse_record(obj, base, where, meta_defaults)
            except RecordError as e:
                if not skip_bad:
                    raise
                errors.append(str(e))
                continue
            if rec.id in first_line:
                duplicates.append(f"{where}: id {rec.id!r} is also the id of line {first_line[rec.id]}")
            first_line.setdefault(rec.id, lineno)
            if not tasks or rec.task in tasks:
                records.append(rec)
    if errors:
        shown = "\n  ".join(errors[:max_reported])
        log.warning(f"{path}: skipped {len(errors)} bad line(s); first reasons:\n  {shown}")
    if duplicates:
        shown = "\n  ".join(duplicates[:max_reported])
        log.warning(f"{path}: {len(duplicates)} duplicate id(s), which should be unique; first:\n  {shown}")
    return records


# ----------------------------------------------------------------------------- chat formatting

SYSTEM_PROMPT = (
    "You are an expert in Earth Observation reasoning. Analyze the problem carefully and provide "
    "step-by-step reasoning and the final response. Ensure your reasoning process and response are "
    "within tags such as <think>...</think> and <answer>...</answer>, respectively. Keep your "
    "explanation clear, logical, and concise."
)


def frames_of(record: Record, frame_kind: str, image_processor) -> list[Frame]:
    return [Frame(frame_kind, s, model_size(s, image_processor)) for s in record.image_sizes]


def format_answer(task: str, answer, frame: Frame) -> str:
    """The answer as the model writes it, boxes in the model's frame (tasks.TASKS[task].target)."""
    return TASKS[task].target(answer, frame)


def question_text(record: Record, frame: Frame) -> str:
    q = record.question
    if "{region}" in q:
        q = q.replace("{region}", box_text(record.meta["region"], frame))
    return q


def target_text(record: Record, frame: Frame) -> str:
    """The SFT target: <think>{reasoning}</think><answer>{answer}</answer>."""
    return (
        f"<think>{record.reasoning or ''}</think>"
        f"<answer>{format_answer(record.task, record.answer, frame)}</answer>"
    )


def to_messages(record: Record, frames: list[Frame], with_answer: bool = False) -> list[dict]:
    """System prompt, the image(s) ("Image k:" labels when several), the question[, the SFT target]."""
    content: list[dict] = []
    for k in range(len(record.images)):
        if len(record.images) > 1:
            content.append({"type": "text", "text": f"Image {k + 1}: "})
        content.append({"type": "image"})
    content.append({"type": "text", "text": question_text(record, frames[0])})
    messages = [
        {"role": "system", "content": [{"type": "text", "text": SYSTEM_PROMPT}]},
        {"role": "user", "content": content},
    ]
    if with_answer:
        messages.append(
            {"role": "assistant", "content": [{"type": "text", "text": target_text(record, frames[0])}]}
        )
    return messages


# ----------------------------------------------------------------------------- batch collation


@dataclass
class PromptBatch:
    inputs: (
        dict  # input_ids/attention_mask/mm_token_type_ids [B, P] (left padded), pixel_values, image_grid_thw
    )
    records: list[Record]
    frames: list[Frame]  # one per record: its first image's frame (boxes in answers refer to it)


def _encode_prompts(records: list[Record], processor, frame_kind: str, padding_side: str):
    frames = [frames_of(r, frame_kind, processor.image_processor) for r in records]
    texts = [
        processor.apply_chat_template(to_messages(r, f), add_generation_prompt=True, tokenize=False)
        for r, f in zip(records, frames)
    ]
    images = [load_image(p, r.source, **imagery.options_from_meta(r.meta)) for r in records for p in r.images]
    enc = processor(text=texts, images=images, padding=True, padding_side=padding_side, return_tensors="pt")
    # the processor resized each image itself; the frames must agree with what it did
    patch = processor.image_processor.patch_size
    sizes = [(int(w) * patch, int(h) * patch) for _, h, w in enc["image_grid_thw"].tolist()]
    expected = [f.model_size for fs in frames for f in fs]
    if sizes != expected:
        raise RuntimeError(f"processor resized images to {sizes}, frames expected {expected}")
    if "mm_token_type_ids" not in enc:  # older processors: derive it (image 1, video 2, text 0)
        ids = enc["input_ids"]
        enc["mm_token_type_ids"] = (ids == processor.image_token_id).long() + 2 * (
            ids == processor.video_token_id
        ).long()
    return dict(enc), frames


def collate_prompts(records: list[Record], processor, frame_kind: str) -> PromptBatch:
    """Prompt-only batch, left padded, plus what rewards need (records: task and answer; frames)."""
    inputs, frames = _encode_prompts(records, processor, frame_kind, "left")
    return PromptBatch(inputs, records, [f[0] for f in frames])


def collate_sft(records: list[Record], processor, frame_kind: str) -> dict:
    """Prompt + target batch (right padded); labels are -100 except on the assistant tokens, closing
    <|im_end|> included. Prompt and target are tokenised apart and joined, exactly as sampling sees them."""
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
    return {
        "input_ids": input_ids,
        "attention_mask": attention,
        "mm_token_type_ids": mm_types,
        "labels": labels,
        "pixel_values": enc["pixel_values"],
        "image_grid_thw": enc["image_grid_thw"],
    }
