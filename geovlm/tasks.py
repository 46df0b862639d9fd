"""The task registry: each Earth-observation task once, with everything the rest of the code asks of it.

    TASKS["grounding"].images          (1, 1): how many images a record holds
    TASKS["grounding"].check(answer, image_sizes, where)   -> the validated answer, or RecordError
    TASKS["grounding"].target(answer, frame)               -> "[140, 98, 280, 196]": the answer as the model
                                                              writes it
    TASKS["grounding"].parse(text, frame, known_labels)    -> [[x1, y1, x2, y2]]: what the model wrote, typed
    TASKS["grounding"].scoring         "grounding": how eval scores it (metrics.SCORERS)
    TASKS["grounding"].metric          "acc@0.5": the headline metric in eval tables
    TASKS["grounding"].boxes           True: its answers hold boxes (viewer, blind baseline), and so on

data.py validates records and formats SFT targets with it, rewards.py, eval and the viewer parse with it,
metrics look its scorer up, synth.py and the scripts list tasks from it. Adding a task is one row of TASKS,
plus its rewards in rewards.py's two tables (checked against TASKS at import) and, when its scoring is new,
a scorer in metrics.SCORERS.

Answer types (boxes always in original-image pixels, [x1, y1, x2, y2] or [x1, y1, x2, y2, θ]):

    classification, vqa, temporal_classification   label (str; vqa also takes a number: RSVQA counts)
    multilabel                                     list of labels
    counting                                       non-negative integer
    grounding                                      exactly one box
    detection                                      list of boxes ([] is an image with nothing to find)
    change_detection                               list of boxes, or a label
    region_caption, change_caption                 text (region_caption's question holds {region})
    caption                                        text or list of reference texts
    grounded_caption                               {"caption": text, "boxes": [...]}
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from geovlm import parsing as P
from geovlm.frames import Frame, round_box, to_frame


class RecordError(ValueError):
    """A bad record: the message names file:line and the field."""


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def check_box(box: Any, size: tuple[int, int], where: str) -> list[float]:
    """A valid original-pixel box [x1, y1, x2, y2(, θ)] inside an image of `size`, or RecordError."""
    if not isinstance(box, (list, tuple)) or len(box) not in (4, 5) or not all(_is_num(v) for v in box):
        raise RecordError(
            f"{where}: a box must be [x1, y1, x2, y2] or [x1, y1, x2, y2, θ] of finite numbers, got {box!r}"
        )
    x1, y1, x2, y2 = box[:4]
    if x2 <= x1 or y2 <= y1:
        raise RecordError(f"{where}: box {list(box)} has x2<=x1 or y2<=y1")
    w, h = size
    if x1 < 0 or y1 < 0 or x2 > w or y2 > h:
        raise RecordError(f"{where}: box {list(box)} lies outside the {w}x{h} image")
    return list(box)


# ----------------------------------------------------------------------------- answer validation
def _text(v: Any, where: str) -> str:
    if not isinstance(v, str) or not v.strip():
        raise RecordError(f"{where}: needs a non-empty string, got {v!r}")
    return v.strip()


def check_label(v: Any, sizes: list[tuple[int, int]], where: str) -> str:
    return _text(v, where)


def check_short_answer(v: Any, sizes: list[tuple[int, int]], where: str) -> str:
    if _is_num(v):  # RSVQA's count answers ("12") come as numbers in some files
        return str(int(v)) if float(v).is_integer() else str(v)
    return _text(v, where)


def check_labels(v: Any, sizes: list[tuple[int, int]], where: str) -> list[str]:
    if not isinstance(v, list) or not v or not all(isinstance(a, str) and a.strip() for a in v):
        raise RecordError(f"{where}: multilabel needs a non-empty list of labels, got {v!r}")
    return [a.strip() for a in v]


def check_count(v: Any, sizes: list[tuple[int, int]], where: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise RecordError(f"{where}: counting needs a non-negative integer, got {v!r}")
    return v


def check_boxes(v: Any, sizes: list[tuple[int, int]], where: str, min_n: int = 0) -> list[list[float]]:
    if isinstance(v, (list, tuple)) and len(v) in (4, 5) and all(_is_num(x) for x in v):
        v = [v]  # a single flat box
    if not isinstance(v, (list, tuple)) or len(v) < min_n:
        raise RecordError(f"{where}: needs a list of at least {min_n} box(es), got {v!r}")
    return [check_box(b, sizes[0], where) for b in v]


def check_one_box(v: Any, sizes: list[tuple[int, int]], where: str) -> list[list[float]]:
    got = check_boxes(v, sizes, where, min_n=1)
    if len(got) != 1:
        raise RecordError(f"{where}: grounding needs exactly one box, got {len(got)}")
    return got


def check_boxes_or_label(v: Any, sizes: list[tuple[int, int]], where: str) -> str | list[list[float]]:
    return _text(v, where) if isinstance(v, str) else check_boxes(v, sizes, where)


def check_captions(v: Any, sizes: list[tuple[int, int]], where: str) -> list[str]:
    refs = [v] if isinstance(v, str) else v
    if not isinstance(refs, list) or not refs:
        raise RecordError(f"{where}: caption needs a string or a list of reference strings, got {v!r}")
    return [_text(r, where) for r in refs]


def check_grounded_caption(v: Any, sizes: list[tuple[int, int]], where: str) -> dict:
    if not isinstance(v, dict) or "caption" not in v or "boxes" not in v:
        raise RecordError(f"{where}: grounded_caption needs {{'caption': str, 'boxes': [...]}}, got {v!r}")
    return {"caption": _text(v["caption"], where), "boxes": check_boxes(v["boxes"], sizes, where)}


# --------------------------------------------------------------------------- answers as the model writes them
def box_text(box: Sequence[float], frame: Frame) -> str:
    """One box as written in text: "[x1, y1, x2, y2]", integers in the frame's units."""
    return "[" + ", ".join(str(v) for v in round_box(to_frame(list(box[:4]), frame))) + "]"


def boxes_text(boxes: Sequence[Sequence[float]], frame: Frame) -> str:
    """Boxes joined by ", "; an empty list is written "none" (an explicit answer, see parsing.says_none)."""
    return ", ".join(box_text(b, frame) for b in boxes) if boxes else "none"


def write_text(answer: Any, frame: Frame) -> str:
    return str(answer)


def write_labels(answer: list[str], frame: Frame) -> str:
    return ", ".join(answer)


def write_boxes_or_label(answer: Any, frame: Frame) -> str:
    return answer if isinstance(answer, str) else boxes_text(answer, frame)


def write_caption(answer: Any, frame: Frame) -> str:
    return answer[0] if isinstance(answer, list) else answer


def write_grounded_caption(answer: dict, frame: Frame) -> str:
    boxes = ", ".join(box_text(b, frame) for b in answer["boxes"])
    return f"{answer['caption']} {boxes}".strip()


# ----------------------------------------------------------------------- parsers: answer text -> typed answer
# Each takes the extracted answer text (parsing.extract_answer), the frame its boxes are written in and, for
# label lists, the known labels; returns the answer in the record's types (boxes in original pixels) or None.
def parse_label(text: str, frame: Frame | None, known: Sequence[str]) -> str | None:
    return P.normalize_text(text) or None


def parse_short_answer(text: str, frame: Frame | None, known: Sequence[str]) -> str | None:
    return P.vqa_answer(text) or None


def parse_label_list(text: str, frame: Frame | None, known: Sequence[str]) -> list[str] | None:
    return P.parse_labels(text, known) or None


def parse_count(text: str, frame: Frame | None, known: Sequence[str]) -> int | float | None:
    value = P.parse_number(text)
    return None if value is None else (int(value) if value.is_integer() else value)


def parse_first_box(text: str, frame: Frame | None, known: Sequence[str]) -> list[list[float]] | None:
    return P.parse_boxes(text, frame)[:1] or None


def parse_box_list(text: str, frame: Frame | None, known: Sequence[str]) -> list[list[float]] | None:
    # [] only for an explicit empty answer ("none", "[]"): words without a box are no answer, as in the reward
    boxes = P.parse_boxes(text, frame)
    return boxes if boxes or P.says_none(text) else None


def parse_boxes_or_label(text: str, frame: Frame | None, known: Sequence[str]) -> Any:
    return P.parse_boxes(text, frame) if P.iter_boxes(text) else (P.normalize_text(text) or None)


def parse_caption(text: str, frame: Frame | None, known: Sequence[str]) -> str:
    return " ".join(text.split())


def parse_grounded_caption(text: str, frame: Frame | None, known: Sequence[str]) -> dict:
    return {"caption": P.strip_boxes(text), "boxes": P.parse_boxes(text, frame)}


# ----------------------------------------------------------------------------- the registry
@dataclass(frozen=True)
class Task:
    name: str
    images: tuple[int, int]  # (fewest, most) images a record holds
    check: Callable[[Any, list[tuple[int, int]], str], Any]  # validate + normalise an answer, or RecordError
    target: Callable[[Any, Frame], str]  # the answer as the model writes it (SFT targets), boxes in the frame
    parse: Callable[[str, Frame | None, Sequence[str]], Any]  # answer text -> typed answer, or None
    scoring: str  # how eval scores it: a key of metrics.SCORERS
    metric: str  # the headline metric among what that scorer reports
    boxes: bool = False  # answers hold boxes: drawn by the viewer, a mean box for the blind baseline
    splits: bool = (
        False  # metrics per object size and per single / multiple objects, as GeoChat-bench reports
    )
    change: bool = False  # the answer is about a change between the images: boxes are drawn on each of them


# fmt: off
TASKS: dict[str, Task] = {t.name: t for t in [
    # name                       images   check                   target                  parse
    # scoring             metric
    Task("classification",          (1, 1),  check_label,            write_text,             parse_label,            "label",            "accuracy"),
    Task("multilabel",              (1, 1),  check_labels,           write_labels,           parse_label_list,       "multilabel",       "micro_f1"),
    Task("vqa",                     (1, 1),  check_short_answer,     write_text,             parse_short_answer,     "vqa",              "accuracy"),
    Task("counting",                (1, 1),  check_count,            write_text,             parse_count,            "counting",         "accuracy"),
    Task("grounding",               (1, 1),  check_one_box,          write_boxes_or_label,   parse_first_box,        "grounding",        "acc@0.5",
         boxes=True, splits=True),
    Task("detection",               (1, 1),  check_boxes,            write_boxes_or_label,   parse_box_list,         "detection",        "f1@0.5",
         boxes=True, splits=True),
    Task("region_caption",          (1, 1),  check_label,            write_text,             parse_caption,          "caption",          "rouge_l"),
    Task("caption",                 (1, 1),  check_captions,         write_caption,          parse_caption,          "caption",          "rouge_l"),
    Task("grounded_caption",        (1, 1),  check_grounded_caption, write_grounded_caption, parse_grounded_caption, "grounded_caption", "rouge_l",
         boxes=True),
    Task("change_caption",          (2, 2),  check_label,            write_text,             parse_caption,          "caption",          "rouge_l",
         change=True),
    Task("change_detection",        (2, 2),  check_boxes_or_label,   write_boxes_or_label,   parse_boxes_or_label,   "detection",        "f1@0.5",
         boxes=True, change=True),
    Task("temporal_classification", (2, 64), check_label,            write_text,             parse_label,            "label",            "accuracy"),
]}
# fmt: on
CAPTION_SCORING = (
    "caption",
    "grounded_caption",
)  # text scored against references (ROUGE, METEOR, coco-caption)


def parse_answer(
    task: str, completion: str, frame: Frame | None = None, known_labels: Sequence[str] = ()
) -> Any:
    """The completion's answer in the record's types (boxes in original pixels), or None when unreadable.

    Text answers come back normalised (what exact match compares); captions as written. `known_labels` helps
    split label lists whose labels contain commas (see parsing.parse_labels). Never raises on any completion.
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; known tasks: {', '.join(TASKS)}")
    try:
        text = P.extract_answer(completion)
        return TASKS[task].parse(text, frame, known_labels) if text else None
    except Exception:  # same contract as the rewards: unreadable is None, never an exception
        return None
