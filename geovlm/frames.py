"""Coordinate frames: how one image's boxes are written in text, and the one pair of conversions.

Records store boxes in original-image pixels, [x1, y1, x2, y2] or [x1, y1, x2, y2, θ] (θ in degrees).
Models and data sets write them in other units:

    "pixels"   Qwen2.5-VL: absolute pixels of the processor's resized input (sides multiples of 28)
    "0-1000"   Qwen2-VL
    "0-100"    GeoChat, EarthDial, TEOChat files

    >>> f = Frame("pixels", image_size=(800, 600), model_size=(280, 196))
    >>> to_frame([400, 300, 800, 600], f)           # original pixels -> what the model reads and writes
    [140.0, 98.0, 280.0, 196.0]
    >>> from_frame([140, 98, 280, 196], f)          # and back, for rewards and metrics
    [400.0, 300.0, 800.0, 600.0]

The resize that produces the model input is the processor's own (`model_size` asks it); nothing else
resizes images behind its back. This module is the ground floor: it imports nothing of the project.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

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
    """Integer corners, halves rounded up (what a box looks like written in an answer)."""
    return [int(math.floor(v + 0.5)) for v in box]


def model_size(size: tuple[int, int], image_processor) -> tuple[int, int]:
    """(width, height) of the processor's own resize of an image of `size` (Qwen's smart_resize)."""
    # imported here: it pulls in torchvision (3 s), which a mistake in the flags must not wait for
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

    ip = image_processor
    sz = getattr(ip, "size", None) or {}
    get = sz.get if isinstance(sz, dict) else lambda k: getattr(sz, k, None)
    lo = getattr(ip, "min_pixels", None) or get("shortest_edge")
    hi = getattr(ip, "max_pixels", None) or get("longest_edge")
    h, w = smart_resize(size[1], size[0], factor=ip.patch_size * ip.merge_size, min_pixels=lo, max_pixels=hi)
    return w, h


def frame_to_json(frame: Frame | None) -> dict | None:
    """A Frame as JSON: predictions and rollouts files carry it, so their boxes can be read back later."""
    if frame is None:
        return None
    return {"kind": frame.kind, "image_size": list(frame.image_size), "model_size": list(frame.model_size)}


def frame_from_json(obj) -> Frame | None:
    """The inverse of `frame_to_json` (None or {} -> None: boxes taken as original pixels)."""
    if not obj:
        return None
    return Frame(kind=obj["kind"], image_size=tuple(obj["image_size"]), model_size=tuple(obj["model_size"]))
