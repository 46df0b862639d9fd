"""Synthetic Earth-observation scenes and questions for all 12 tasks: seeded, byte-reproducible.

    python -m embedded.synth --out data/synth --n 2000 --seed 0                  # every task, 80/20 split
    python -m embedded.synth --out data/tiny --n 48 --seed 1 --tasks counting,detection --test-frac 0.25

writes `out/images/*.png`, `out/train.jsonl` and `out/test.jsonl` (image paths relative to the
JSONL folder, boxes `[x1, y1, x2, y2]` in integer pixels of the original image, x2/y2 exclusive).
One record (a line of the JSONL files; this is `--seed 0`, record 5):

    {"id": "synth_000005", "task": "detection", "images": ["images/000005_0.png"],
     "question": "Find every storage tank and give its bounding box.",
     "answer": [[114, 60, 133, 79], [44, 170, 87, 213]],
     "reasoning": "There are two yellow round storage tanks; each gets its own box.",
     "meta": {"dataset": "synth", "type": "detect", "class": "storage tank"}}

Label vocabularies: SCENES (classification; RURAL_URBAN maps some to vqa's rural/urban), CLASSES
(multilabel, counting, grounding, detection), VQA_TYPES (presence and comparison answer yes/no),
QUALIFIERS (grounding), TEMPORAL_LABELS (temporal_classification).

How a scene is made: a background of one land-cover class (the classification label) drawn with
vectorised numpy noise, then objects (airplane, building, ship, storage tank, vehicle) placed by
rejection sampling so that their boxes never overlap. Every object class has its own saturated
colour family that no background pixel may enter (`_sanitise` enforces it), so `object_mask` and
`find_objects` recover every object and its box from the pixels alone: the tests check the
answers against the PNGs that way, not against this file's bookkeeping.

Ids: `synth_{i:06d}` for seed 0, `synth_{i:06d}_s{seed}` for any other seed (`record_id`), so records of
different seeds can share a file.

Determinism: record i draws everything from `np.random.default_rng([seed, i])`, PNGs carry no
metadata and JSON keys have a fixed order, so the same seed gives byte-identical files, whatever
`--workers` (processes, default: CPU count up to 8) is.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import multiprocessing
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from geovlm import tasks

TASKS = tuple(tasks.TASKS)  # the registry's order (no torch: tasks.py needs numpy/scipy/rapidfuzz alone)
SCENES = ("airport", "beach", "desert", "farmland", "forest", "urban", "water")
CLASSES = ("airplane", "building", "ship", "storage tank", "vehicle")
TEMPORAL_LABELS = ("construction", "deforestation", "demolition", "flooding", "no change")
RURAL_URBAN = {"desert": "rural", "farmland": "rural", "forest": "rural", "urban": "urban"}
QUALIFIERS = ("largest", "smallest", "leftmost", "rightmost", "topmost", "bottommost")
VQA_TYPES = ("presence", "comparison", "rural_urban")

# Which objects are plausible on which ground (ships only on water, airplanes only at airports).
SCENE_OBJECTS = {
    "airport": ("airplane", "building", "storage tank", "vehicle"),
    "beach": ("building", "ship", "vehicle"),
    "desert": ("building", "storage tank", "vehicle"),
    "farmland": ("building", "storage tank", "vehicle"),
    "forest": ("building", "vehicle"),
    "urban": ("building", "storage tank", "vehicle"),
    "water": ("ship",),
}

# One saturated colour family per class. Every base has a channel >= 200 and the bases are far
# apart, so an object pixel (base +- jitter + shade + noise, at most 29 away) is never confused
# with another class, and a background pixel darkened by `_sanitise` (<= 153) is never an object.
CLASS_RGB = {
    "airplane": (240, 240, 240),
    "building": (200, 40, 200),
    "ship": (220, 40, 40),
    "storage tank": (235, 215, 30),
    "vehicle": (30, 210, 230),
}
COLOUR_WORD = {
    "airplane": "white",
    "building": "magenta",
    "ship": "red",
    "storage tank": "yellow",
    "vehicle": "cyan",
}
SHAPE_WORD = {
    "airplane": "cross-shaped",
    "building": "rectangular",
    "ship": "pointed",
    "storage tank": "round",
    "vehicle": "oblong",
}
COLOUR_TOL = 40  # max |channel - base| for a pixel to count as that class
_SAFE = 60  # background pixels closer than this to any base get darkened
_OBJ_JITTER, _SHADE, _PIX_NOISE = 12, 12, 5  # 12 + 12 + 5 = 29 < COLOUR_TOL
_GAP = 4  # min free pixels between object boxes, so 8-connected components never merge
_MARGIN = 2  # objects keep off the image border
_MIN_SIDE, _MAX_SIDE = 160, 400

# Size classes use disjoint ranges so "small"/"large" in region captions is true by construction.
_SIZES = {
    "airplane": {"small": (30, 37), "medium": (42, 50), "large": (56, 68)},  # length
    "building": {"small": (18, 27), "medium": (30, 42), "large": (46, 64)},  # each side
    "ship": {"small": (48, 58), "medium": (64, 76), "large": (84, 100)},  # length
    "storage tank": {"small": (18, 23), "medium": (27, 33), "large": (37, 45)},  # diameter
    "vehicle": {"small": (26, 34)},  # length
}
_BIG_FIRST = ("ship", "airplane", "building", "storage tank", "vehicle")  # placement order

_NUM = (
    "no",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
)
_DIRS = ("north", "northeast", "east", "southeast", "south", "southwest", "west", "northwest")
_AXES = ("north-south", "northeast-southwest", "east-west", "northwest-southeast")
_CELLS = (
    ("top left", "top", "top right"),
    ("left", "centre", "right"),
    ("bottom left", "bottom", "bottom right"),
)
_AT = {
    "top left": "in the top left",
    "top": "at the top",
    "top right": "in the top right",
    "left": "on the left",
    "centre": "in the centre",
    "right": "on the right",
    "bottom left": "in the bottom left",
    "bottom": "at the bottom",
    "bottom right": "in the bottom right",
}

_SCENE_ADJ = {
    "airport": "airport",
    "beach": "beach",
    "desert": "desert",
    "farmland": "farmland",
    "forest": "forest",
    "urban": "urban",
    "water": "open-water",
}
_SCENE_NP = {
    "airport": "an airport",
    "beach": "a beach",
    "desert": "a desert",
    "farmland": "farmland",
    "forest": "a forest",
    "urban": "an urban area",
    "water": "open water",
}
_SCENE_PREP = {
    "airport": "at an airport",
    "beach": "on a beach",
    "desert": "in a desert",
    "farmland": "on farmland",
    "forest": "in a forest",
    "urban": "in an urban area",
    "water": "on open water",
}
_EVIDENCE = {
    "airport": "grey tarmac crossed by long runway strips",
    "beach": "pale sand meeting blue water along a shoreline",
    "desert": "pale sandy ground rippled by dunes",
    "farmland": "striped green and brown field parcels",
    "forest": "dense dark green tree canopy",
    "urban": "grey blocks separated by a street grid",
    "water": "blue water texture with small waves",
}


# ----------------------------------------------------------------------------- data shapes


@dataclass
class Obj:
    """One object: a tight boolean mask at (x, y) in the image, with its own pixel colours."""

    cls: str
    x: int
    y: int
    mask: np.ndarray  # bool (h, w), tight around the object
    pixels: np.ndarray  # uint8 (h, w, 3); only the masked pixels are drawn
    size: str  # "small" | "medium" | "large"
    heading: float | None  # compass degrees the nose/bow points to (0 = up = north), None if round

    @property
    def box(self) -> list[int]:
        h, w = self.mask.shape
        return [self.x, self.y, self.x + w, self.y + h]

    @property
    def area(self) -> int:
        return int(self.mask.sum())

    @property
    def centre(self) -> tuple[float, float]:
        x1, y1, x2, y2 = self.box
        return (x1 + x2) / 2, (y1 + y2) / 2


@dataclass
class Scene:
    """A background (`ground`, float RGB) with the regions objects may use, and its objects."""

    label: str
    ground: np.ndarray  # float32 (H, W, 3)
    water: np.ndarray  # bool (H, W): where ships may go
    land: np.ndarray  # bool (H, W): where everything else may go
    sun: tuple[int, int]  # shadow offset (dx, dy), one per scene
    objects: list[Obj] = field(default_factory=list)
    occ: np.ndarray | None = None  # bool (H, W): object boxes grown by _GAP

    def __post_init__(self) -> None:
        if self.occ is None:
            self.occ = np.zeros(self.water.shape, bool)

    @property
    def width(self) -> int:
        return int(self.ground.shape[1])

    @property
    def height(self) -> int:
        return int(self.ground.shape[0])


@dataclass
class Sample:
    """What a task builder returns: everything of a record except its id and file names."""

    images: list[np.ndarray]
    question: str
    answer: Any
    reasoning: str
    meta: dict


# ----------------------------------------------------------------------------- small helpers


def _pick(rng: np.random.Generator, seq: Sequence) -> Any:
    # rng.choice would hand back numpy scalars (np.str_), which json and tests dislike
    return seq[int(rng.integers(len(seq)))]


def _art(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _plural(cls: str, k: int = 2) -> str:
    return cls if k == 1 else cls + "s"


def _count_np(k: int, cls: str) -> str:
    """'a storage tank', 'three ships'."""
    return f"{_art(cls)} {cls}" if k == 1 else f"{_NUM[k]} {_plural(cls)}"


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _cap(s: str) -> str:
    return s[0].upper() + s[1:]


def _cell(cx: float, cy: float, w: int, h: int) -> str:
    return _CELLS[min(2, int(3 * cy / h))][min(2, int(3 * cx / w))]


def _where(o: Obj, scene: Scene) -> str:
    return _cell(*o.centre, scene.width, scene.height)


def _by_position(objs: list[Obj]) -> list[Obj]:
    return sorted(objs, key=lambda o: (o.box[1], o.box[0]))


def _inventory(objs: list[Obj]) -> list[tuple[str, int]]:
    """Classes present with counts, most frequent first (the order captions mention them)."""
    counts = {c: sum(o.cls == c for o in objs) for c in CLASSES}
    return sorted(((c, k) for c, k in counts.items() if k), key=lambda ck: (-ck[1], ck[0]))


# ----------------------------------------------------------------------------- backgrounds


@functools.lru_cache(maxsize=512)
def _bspline_taps(n: int, scale: int) -> tuple[np.ndarray, np.ndarray]:
    """(idx, wts), both (4, n): pixel p of an upsampled line is sum_k wts[k, p] * coarse[idx[k, p]].

    A cubic B-spline has 4 taps, so a gather beats a dense matmul (and needs no BLAS threads)."""
    t = np.arange(n) / scale + 1.5
    idx = np.floor(t).astype(np.intp)[None] - 1 + np.arange(4)[:, None]
    a = np.abs(t[None] - idx)
    wts = np.where(a < 1, (4 - 6 * a**2 + 3 * a**3) / 6, np.where(a < 2, (2 - a) ** 3 / 6, 0.0))
    return idx, wts.astype(np.float32)


def _noise(rng: np.random.Generator, h: int, w: int, scale: int) -> np.ndarray:
    """Smooth noise with features about `scale` px across, roughly zero mean and unit variance."""
    g = rng.standard_normal((h // scale + 5, w // scale + 5), dtype=np.float32)
    iy, wy = _bspline_taps(h, scale)
    ix, wx = _bspline_taps(w, scale)
    cols = sum(wx[k][None] * g[:, ix[k]] for k in range(4))  # (coarse h, w): the small gather first
    z = sum(wy[k][:, None] * cols[iy[k]] for k in range(4))  # (h, w): whole-row gathers are cheap
    return z * np.float32(2.1)  # a 2-D cubic B-spline of unit noise has variance ~0.21-0.25


def _grain(rng: np.random.Generator, h: int, w: int, sigma: float) -> np.ndarray:
    return rng.standard_normal((h, w, 1), dtype=np.float32) * np.float32(sigma)


def _cuts(rng: np.random.Generator, length: int, lo: int, hi: int) -> np.ndarray:
    """Random increasing positions in (0, length), spaced lo..hi apart (parcel / street lines)."""
    out, p = [], int(rng.integers(lo // 2, hi))
    while p < length - lo // 2:
        out.append(p)
        p += int(rng.integers(lo, hi))
    return np.array(out, int)


def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:h, 0:w]
    return yy.astype(np.float32), xx.astype(np.float32)


def _water_tex(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    yy, xx = _grid(h, w)
    base = np.array([38, 78, 128], np.float32) + rng.uniform(-10, 10, 3).astype(np.float32)
    a, per = rng.uniform(0, np.pi), rng.uniform(6, 14)
    waves = np.sin(2 * np.pi * (xx * np.cos(a) + yy * np.sin(a)) / per + 3 * _noise(rng, h, w, 40))
    shade = 1 + 0.06 * waves + 0.08 * _noise(rng, h, w, 60)
    return base * shade[..., None] + _grain(rng, h, w, 3)


def _sand_tex(rng: np.random.Generator, h: int, w: int, base: tuple[int, int, int]) -> np.ndarray:
    yy, xx = _grid(h, w)
    a, per = rng.uniform(0, np.pi), rng.uniform(18, 40)
    warp = 25 * _noise(rng, h, w, 60)
    ripples = np.sin(2 * np.pi * (xx * np.cos(a) + yy * np.sin(a) + warp) / per)
    shade = 1 + 0.07 * ripples + 0.05 * _noise(rng, h, w, 30)
    col = np.array(base, np.float32) + rng.uniform(-8, 8, 3).astype(np.float32)
    return col * shade[..., None] + _grain(rng, h, w, 3)


def _soil_tex(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    # a common brightness shift keeps the hue brown (red well above green) for every seed
    col = (
        np.array([132, 96, 64], np.float32)
        + np.float32(rng.uniform(-10, 10))
        + rng.uniform(-3, 3, 3).astype(np.float32)
    )
    shade = 1 + 0.08 * _noise(rng, h, w, 12) + 0.05 * _noise(rng, h, w, 50)
    return col * shade[..., None] + _grain(rng, h, w, 4)


def _farmland(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    # rectangular parcels, each with its own crop colour and furrow direction, dirt tracks between
    xs, ys = _cuts(rng, w, 40, 130), _cuts(rng, h, 40, 130)
    ix, iy = np.searchsorted(xs, np.arange(w), "right"), np.searchsorted(ys, np.arange(h), "right")
    pid = iy[:, None] * (len(xs) + 1) + ix[None, :]
    npar = (len(xs) + 1) * (len(ys) + 1)
    palette = np.array(
        [
            [88, 128, 62],
            [104, 142, 70],
            [72, 112, 52],
            [140, 112, 76],
            [158, 128, 88],
            [176, 160, 110],
            [120, 132, 70],
        ],
        np.float32,
    )
    col = palette[rng.integers(0, len(palette), npar)] + rng.uniform(-8, 8, (npar, 3)).astype(np.float32)
    ang, per, amp = rng.uniform(0, np.pi, npar), rng.uniform(5, 12, npar), rng.uniform(0.03, 0.1, npar)
    yy, xx = _grid(h, w)
    a = ang[pid]
    stripe = 1 + amp[pid] * np.sin(2 * np.pi * (xx * np.cos(a) + yy * np.sin(a)) / per[pid])
    img = col[pid] * (stripe * (1 + 0.05 * _noise(rng, h, w, 24)))[..., None] + _grain(rng, h, w, 3)
    track = np.zeros((h, w), bool)
    for x in xs:
        track[:, max(0, x - 1) : x + 2] = True
    for y in ys:
        track[max(0, y - 1) : y + 2, :] = True
    img[track] = np.array([150, 130, 95], np.float32) + _grain(rng, h, w, 4)[track]
    return img


def _water(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    return _water_tex(rng, h, w)


def _urban(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    # a street grid over blocks of grey lots (roofs stay grey: magenta is the building class)
    xs, ys = _cuts(rng, w, 50, 110), _cuts(rng, h, 50, 110)
    lx, ly = _cuts(rng, w, 12, 30), _cuts(rng, h, 12, 30)
    ix, iy = np.searchsorted(lx, np.arange(w), "right"), np.searchsorted(ly, np.arange(h), "right")
    lot = iy[:, None] * (len(lx) + 1) + ix[None, :]
    nlot = (len(lx) + 1) * (len(ly) + 1)
    grey = rng.uniform(110, 158, nlot).astype(np.float32)
    tint = rng.uniform(-5, 5, (nlot, 3)).astype(np.float32)
    img = (grey[:, None] + tint)[lot] * (1 + 0.04 * _noise(rng, h, w, 8))[..., None] + _grain(rng, h, w, 3)
    gaps = np.zeros((h, w), bool)
    gaps[:, lx] = True
    gaps[ly, :] = True
    img[gaps] *= 0.8
    bx, by = np.searchsorted(xs, np.arange(w), "right"), np.searchsorted(ys, np.arange(h), "right")
    block = by[:, None] * (len(xs) + 1) + bx[None, :]
    park = rng.random((len(xs) + 1) * (len(ys) + 1)) < 0.15
    pk = park[block]
    img[pk] = np.array([70, 110, 58], np.float32) * (1 + 0.1 * _noise(rng, h, w, 10))[pk][:, None]
    sw = int(rng.integers(6, 11))
    street = np.zeros((h, w), bool)
    for x in xs:
        street[:, max(0, x - sw // 2) : x + sw - sw // 2] = True
    for y in ys:
        street[max(0, y - sw // 2) : y + sw - sw // 2, :] = True
    img[street] = np.array([82, 84, 88], np.float32) + _grain(rng, h, w, 3)[street]
    return img


def _forest(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    coarse, crowns, gaps = _noise(rng, h, w, 40), _noise(rng, h, w, 10), _noise(rng, h, w, 5)
    dark, light = np.array([28, 56, 28], np.float32), np.array([52, 86, 40], np.float32)
    mix = (1 / (1 + np.exp(-2 * coarse)))[..., None]
    shade = (1 + 0.18 * crowns) * np.where(gaps < -0.8, 0.7, 1.0)
    return (dark * (1 - mix) + light * mix) * shade[..., None] + _grain(rng, h, w, 3)


def _airport(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    yy, xx = _grid(h, w)
    tarmac = np.array([122, 124, 126], np.float32) + rng.uniform(-8, 8, 3).astype(np.float32)
    img = tarmac * (1 + 0.04 * _noise(rng, h, w, 30))[..., None] + _grain(rng, h, w, 3)
    grass = _noise(rng, h, w, 70) > 0.7
    img[grass] = np.array([92, 122, 70], np.float32) * (1 + 0.08 * _noise(rng, h, w, 12))[grass][:, None]
    for _ in range(int(rng.integers(1, 3))):
        # a strip through a random point at a near-axis angle: dark asphalt, edge lines, dashes
        ang = np.deg2rad(_pick(rng, (0.0, 90.0)) + rng.uniform(-25, 25))
        px, py = rng.uniform(0.2, 0.8) * w, rng.uniform(0.2, 0.8) * h
        dist = (xx - px) * -np.sin(ang) + (yy - py) * np.cos(ang)
        along = (xx - px) * np.cos(ang) + (yy - py) * np.sin(ang)
        half = rng.uniform(12, 18)
        strip = np.abs(dist) < half
        img[strip] = np.array([72, 74, 78], np.float32) + _grain(rng, h, w, 3)[strip]
        edge = np.abs(np.abs(dist) - half + 2) < 1
        dash = (np.abs(dist) < 1.5) & ((along % 30) < 15)
        img[edge | dash] = np.array([176, 176, 174], np.float32)
    return img


def _desert(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    return _sand_tex(rng, h, w, (204, 178, 128))


def _beach(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = _grid(h, w)
    a = rng.uniform(0, 2 * np.pi)
    cx, cy = w / 2 + rng.uniform(-0.15, 0.15) * w, h / 2 + rng.uniform(-0.15, 0.15) * h
    d = (xx - cx) * np.cos(a) + (yy - cy) * np.sin(a) + 8 * _noise(rng, h, w, 50)
    img = np.where((d > 0)[..., None], _water_tex(rng, h, w), _sand_tex(rng, h, w, (204, 184, 140)))
    surf = np.abs(d) < 5
    img[surf] = np.array([165, 186, 198], np.float32) + _grain(rng, h, w, 4)[surf]
    return img, d


def _empty_scene(rng: np.random.Generator, label: str, big: bool = False) -> Scene:
    lo = 280 if big else _MIN_SIDE
    w, h = int(rng.integers(lo, _MAX_SIDE + 1)), int(rng.integers(lo, _MAX_SIDE + 1))
    water = np.zeros((h, w), bool)
    land = np.ones((h, w), bool)
    if label == "beach":
        ground, d = _beach(rng, h, w)
        water, land = d > 9, d < -9  # keep objects off the surf line
    else:
        ground = {
            "airport": _airport,
            "desert": _desert,
            "farmland": _farmland,
            "forest": _forest,
            "urban": _urban,
            "water": _water,
        }[label](rng, h, w)
        if label == "water":
            water, land = land, water
    sun = (int(_pick(rng, (-3, 3))), int(_pick(rng, (-3, 3))))
    return Scene(label, ground.astype(np.float32), water, land, sun)


# ----------------------------------------------------------------------------- objects


def _tighten(mask: np.ndarray, shade: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Keep the largest 8-connected piece (thin rotated tips can detach) and crop to it."""
    from scipy import ndimage  # 0.35 s: paid by the commands that draw scenes, not by every import of synth

    lab, n = ndimage.label(mask, np.ones((3, 3)))
    if n > 1:
        sizes = ndimage.sum(mask, lab, range(1, n + 1))
        mask = lab == 1 + int(np.argmax(sizes))
    ys, xs = np.nonzero(mask)
    sl = (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))
    return mask[sl], shade[sl] & mask[sl]


def _raster(radius: float, heading: float, fn: Callable) -> tuple[np.ndarray, np.ndarray]:
    """Rasterise fn(u, v) -> (mask, shade) at pixel centres; u points along `heading`, v to the right."""
    r = np.arange(-math.ceil(radius) - 1, math.ceil(radius) + 2, dtype=np.float32)
    dy, dx = np.meshgrid(r, r, indexing="ij")
    t = math.radians(heading)
    u = dx * math.sin(t) - dy * math.cos(t)
    v = dx * math.cos(t) + dy * math.sin(t)
    mask, shade = fn(u, v)
    return _tighten(mask, shade)


def _airplane(length: float, span: float) -> Callable:
    def fn(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        av, half = np.abs(v), length / 2
        fw = max(5.0, 0.13 * length)
        body = (av <= fw / 2 * np.sqrt(np.clip(1 - (u / half) ** 8, 0, 1))) & (np.abs(u) <= half)
        chord, c0 = max(9.0, 0.24 * length), 0.06 * length
        wing = (av <= span / 2) & (u <= c0 + chord / 2 - 0.35 * av) & (u >= c0 - chord / 2 - 0.21 * av)
        tchord = max(6.0, 0.18 * length)
        tail = (av <= 0.2 * length) & (u >= -half + 1) & (u <= -half + tchord - 0.3 * av)
        return body | wing | tail, body & (u > half - 1.5 * fw)  # darker cockpit

    return fn


def _ship(length: float, width: float) -> Callable:
    def fn(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        av, half = np.abs(v), length / 2
        bow = np.clip((half - u) / (0.3 * length), 0, 1) ** 0.6  # pointed bow
        stern = np.clip((u + half) / (0.08 * length + 1), 0, 1) ** 0.5  # rounded stern
        hull = (av <= width / 2 * np.minimum(bow, stern)) & (np.abs(u) <= half)
        bridge = hull & (u > -0.38 * length) & (u < -0.12 * length) & (av <= 0.32 * width)
        return hull, bridge

    return fn


def _vehicle(length: float, width: float) -> Callable:
    def fn(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        body = (np.abs(u) <= length / 2) & (np.abs(v) <= width / 2)
        return body, body & (u > 0.12 * length) & (u < 0.3 * length)  # windscreen

    return fn


def _shape(rng: np.random.Generator, cls: str, size: str) -> tuple[np.ndarray, np.ndarray, float | None]:
    """A (mask, shade, heading) for one object; shade marks pixels drawn a little darker."""
    lo, hi = _SIZES[cls][size]
    s = float(rng.uniform(lo, hi))
    if cls == "storage tank":
        r = np.arange(-math.ceil(s / 2) - 1, math.ceil(s / 2) + 2, dtype=np.float32)
        d = np.hypot(*np.meshgrid(r, r, indexing="ij"))
        return *_tighten(d <= s / 2, d >= s / 2 - 2.5), None  # darker rim
    if cls == "building":
        w, h = int(round(s)), int(rng.integers(lo, hi + 1))
        shade = np.zeros((h, w), bool)
        if w >= h:
            shade[: h // 2] = True  # one roof face in shadow
        else:
            shade[:, : w // 2] = True
        return np.ones((h, w), bool), shade, 0.0
    if cls == "vehicle":
        heading = 45.0 * int(rng.integers(8)) + float(rng.uniform(-4, 4))
        return *_raster(s / 2 + 10, heading, _vehicle(s, float(rng.uniform(16, 18)))), heading
    heading = 45.0 * int(rng.integers(8)) + float(rng.uniform(-8, 8))
    if cls == "airplane":
        span = s * float(rng.uniform(0.85, 1.0))
        return *_raster(math.hypot(s / 2, span / 2), heading, _airplane(s, span)), heading
    width = max(16.0, s * float(rng.uniform(0.22, 0.28)))
    return *_raster(math.hypot(s / 2, width / 2) + 1, heading, _ship(s, width)), heading


def _occupy(occ: np.ndarray, o: Obj) -> None:
    # boxes, not masks, are kept apart: every box then holds exactly one object's pixels
    x1, y1, x2, y2 = o.box
    occ[max(0, y1 - _GAP) : y2 + _GAP, max(0, x1 - _GAP) : x2 + _GAP] = True


def _place(
    rng: np.random.Generator,
    scene: Scene,
    cls: str,
    size: str | None = None,
    cell: tuple[int, int] | None = None,
    tries: int = 40,
) -> Obj | None:
    """Rejection-sample one object that fits its allowed region and clears the others.

    It is marked in scene.occ but not added to scene.objects (change tasks keep it elsewhere).
    cell=(row, col) of the 3x3 grid forces the object's box centre into that cell.
    """
    allowed = scene.water if cls == "ship" else scene.land
    H, W = allowed.shape
    for t in range(tries):
        # half the tries at a random size, then small ones, so crowded scenes still fill up
        sz = size or (_pick(rng, tuple(_SIZES[cls])) if t < tries // 2 else "small")
        mask, shade, heading = _shape(rng, cls, sz)
        h, w = mask.shape
        xlo, xhi, ylo, yhi = _MARGIN, W - w - _MARGIN, _MARGIN, H - h - _MARGIN
        if cell is not None:
            r, c = cell
            xlo, xhi = (
                max(xlo, math.ceil(c * W / 3 - w / 2)),
                min(xhi, math.floor((c + 1) * W / 3 - w / 2) - 1),
            )
            ylo, yhi = (
                max(ylo, math.ceil(r * H / 3 - h / 2)),
                min(yhi, math.floor((r + 1) * H / 3 - h / 2) - 1),
            )
        if xlo > xhi or ylo > yhi:
            continue
        x, y = int(rng.integers(xlo, xhi + 1)), int(rng.integers(ylo, yhi + 1))
        win = (slice(y, y + h), slice(x, x + w))
        if scene.occ[win].any() or not allowed[win][mask].all():
            continue
        base = np.array(CLASS_RGB[cls], np.int16) + rng.integers(-_OBJ_JITTER, _OBJ_JITTER + 1, 3)
        noise = rng.integers(-_PIX_NOISE, _PIX_NOISE + 1, (h, w, 3))
        pixels = np.clip(base - _SHADE * shade[..., None] + noise, 0, 255).astype(np.uint8)
        o = Obj(cls, x, y, mask, pixels, sz, heading)
        _occupy(scene.occ, o)
        return o
    return None


def _populate(
    rng: np.random.Generator, scene: Scene, counts: dict[str, int], extras: bool, max_objects: int
) -> bool:
    """Place exactly counts[c] objects of each class c (False if they do not fit), then some extras
    of the scene's other plausible classes up to max_objects in total."""
    for cls in sorted(counts, key=_BIG_FIRST.index):
        for _ in range(counts[cls]):
            o = _place(rng, scene, cls)
            if o is None:
                return False
            scene.objects.append(o)
    if extras:
        for cls in SCENE_OBJECTS[scene.label]:
            if cls in counts:
                continue
            for _ in range(int(_pick(rng, (0, 0, 1, 1, 2, 3)))):
                if len(scene.objects) >= max_objects:
                    break
                o = _place(rng, scene, cls, tries=15)
                if o is not None:
                    scene.objects.append(o)
    return True


def make_scene(
    rng: np.random.Generator,
    label: str | None = None,
    counts: dict[str, int] | None = None,
    extras: bool = True,
    max_objects: int = 8,
) -> Scene:
    """A scene of background `label` (random if None) holding exactly counts[c] objects of class c.

    Classes not in `counts` get a few random extras (if `extras`) among those plausible there.
    Retries with fresh sizes, and after a few failures with larger images, until everything fits.
    """
    counts = {c: k for c, k in (counts or {}).items()}
    label = label or _pick(rng, SCENES)
    bad = [c for c, k in counts.items() if k and c not in SCENE_OBJECTS[label]]
    if bad:
        raise ValueError(f"{bad} cannot appear in a {label} scene")
    for attempt in range(60):
        scene = _empty_scene(rng, label, big=attempt >= 6)
        if _populate(rng, scene, counts, extras, max_objects):
            return scene
    raise RuntimeError(f"could not fit {counts} into a {label} scene")


def _box_luts(radius: int) -> np.ndarray:
    """(3, 256) uint8: bit b of lut[ch][v] is set when |v - base_b[ch]| <= radius.

    "Within `radius` of some base in every channel" is a union of RGB boxes, so three table
    lookups and two ANDs classify a whole image at once."""
    v = np.arange(256)[None, :, None]
    bases = np.array(list(CLASS_RGB.values())).T[:, None, :]  # (3, 1, n_classes)
    near = np.abs(v - bases) <= radius  # (3, 256, n_classes)
    return (near * (1 << np.arange(len(CLASS_RGB)))).sum(-1).astype(np.uint8)


_NEAR_LUT = _box_luts(_SAFE - 1)
_CLASS_LUT = _box_luts(COLOUR_TOL)


def _lookup(img: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """uint8 (H, W): the bits of the classes whose box holds each pixel."""
    return lut[0][img[..., 0]] & lut[1][img[..., 1]] & lut[2][img[..., 2]]


def _sanitise(img: np.ndarray) -> np.ndarray:
    """Darken any background pixel that comes near an object colour family (guarantees recovery)."""
    bad = _lookup(img, _NEAR_LUT) != 0
    if bad.any():
        img[bad] = (img[bad] * 0.6).astype(np.uint8)  # every base has a channel >= 200; 0.6 * 255 = 153
    return img


def render(scene: Scene, objects: list[Obj] | None = None, ground: np.ndarray | None = None) -> np.ndarray:
    """uint8 (H, W, 3) image: ground, object shadows, then the objects (default: scene's own)."""
    objs = scene.objects if objects is None else objects
    img = (scene.ground if ground is None else ground).copy()
    H, W = img.shape[:2]
    dx, dy = scene.sun
    for o in objs:
        if o.cls == "ship":
            continue  # no shadows on water
        h, w = o.mask.shape
        x0, y0 = o.x + dx, o.y + dy
        xs, ys, xe, ye = max(0, x0), max(0, y0), min(W, x0 + w), min(H, y0 + h)
        m = o.mask[ys - y0 : ye - y0, xs - x0 : xe - x0]
        img[ys:ye, xs:xe][m] *= 0.62
    img = _sanitise(np.clip(np.rint(img), 0, 255).astype(np.uint8))
    for o in objs:
        h, w = o.mask.shape
        img[o.y : o.y + h, o.x : o.x + w][o.mask] = o.pixels[o.mask]
    return img


# ----------------------------------------------------------------------------- recovery from pixels


def object_mask(img: np.ndarray, cls: str | None = None) -> np.ndarray:
    """bool (H, W): pixels in the colour family of `cls` (of any object class if None)."""
    bits = _lookup(np.asarray(img, np.uint8)[..., :3], _CLASS_LUT)
    if cls is None:
        return bits != 0
    return (bits & (1 << list(CLASS_RGB).index(cls))) != 0


def find_objects(img: np.ndarray, cls: str | None = None) -> list[tuple[str, list[int]]]:
    """(class, [x1, y1, x2, y2]) of every object recovered from pixels, in reading order."""
    from scipy import ndimage

    found = []
    for c in CLASSES if cls is None else (cls,):
        lab, _ = ndimage.label(object_mask(img, c), np.ones((3, 3)))
        for sl in ndimage.find_objects(lab):
            found.append((c, [int(sl[1].start), int(sl[0].start), int(sl[1].stop), int(sl[0].stop)]))
    return sorted(found, key=lambda cb: (cb[1][1], cb[1][0]))


# ----------------------------------------------------------------------------- task builders


def _meta(qtype: str, **extra: Any) -> dict:
    return {"dataset": "synth", "type": qtype, **extra}


def _scene_for(rng: np.random.Generator, cls: str, k: int) -> str:
    """A background where `cls` can appear (k > 0 requires one; k == 0 mostly picks one anyway)."""
    ok = [s for s in SCENES if cls in SCENE_OBJECTS[s]]
    return _pick(rng, ok) if k > 0 or rng.random() < 0.7 else _pick(rng, SCENES)


def _nonempty_scene(rng: np.random.Generator, max_objects: int = 8) -> Scene:
    label = _pick(rng, SCENES)
    cls = _pick(rng, SCENE_OBJECTS[label])
    return make_scene(rng, label, {cls: int(rng.integers(1, 3))}, max_objects=max_objects)


def _classification(rng: np.random.Generator) -> Sample:
    label = _pick(rng, SCENES)
    scene = make_scene(rng, label)
    q = _pick(
        rng,
        (
            "What type of scene is this?",
            "Classify this aerial image into a scene category.",
            "Which land-cover class best describes this image?",
            "What kind of area does this remote sensing image show?",
            f"Classify the scene as one of: {', '.join(SCENES)}.",
        ),
    )
    why = f"The image shows {_EVIDENCE[label]}, typical of {_SCENE_NP[label]}."
    return Sample([render(scene)], q, label, why, _meta("scene"))


def _label_set(rng: np.random.Generator) -> tuple[str, list[str]]:
    """A scene label and the object classes it holds, each class present about as often (~35%) as the others:
    ships alone a third of the time (no scene holds ships and airplanes), else each land class by a coin
    flip."""
    if rng.random() < 1 / 3:
        return _pick(rng, ("beach", "water")), ["ship"]
    while not (present := [c for c in CLASSES if c != "ship" and rng.random() < 0.5]):
        pass
    return (
        "airport"
        if "airplane" in present
        else _pick(rng, [s for s in SCENES if set(present) <= set(SCENE_OBJECTS[s])])
    ), present


def _multilabel(rng: np.random.Generator) -> Sample:
    label, present = _label_set(rng)
    scene = make_scene(rng, label, {c: int(rng.integers(1, 3)) for c in present}, extras=False)
    q = _pick(
        rng,
        (
            "Which object categories appear in this image?",
            "List all object types visible in the image.",
            "What kinds of objects can be seen? Answer with category names.",
            f"Which of these categories are present: {', '.join(CLASSES)}?",
        ),
    )
    seen = _join([f"{COLOUR_WORD[c]} {_plural(c)}" for c in present])
    return Sample([render(scene)], q, present, f"I can see {seen} in this scene.", _meta("objects"))


def _vqa(rng: np.random.Generator) -> Sample:
    qtype = _pick(rng, VQA_TYPES)
    if qtype == "presence":
        cls = _pick(rng, CLASSES)
        k = int(rng.integers(1, 4)) if rng.random() < 0.5 else 0
        scene = make_scene(rng, _scene_for(rng, cls, k), {cls: k})
        q = _pick(
            rng,
            (
                f"Is there {_art(cls)} {cls} in the image?",
                f"Are any {_plural(cls)} visible?",
                f"Does this image contain {_art(cls)} {cls}?",
            ),
        )
        ans = "yes" if k else "no"
        why = (
            f"I can see {_count_np(k, COLOUR_WORD[cls] + ' ' + cls)}, so the answer is yes."
            if k
            else f"No {COLOUR_WORD[cls]} {SHAPE_WORD[cls]} {cls} shapes appear anywhere in the image."
        )
        return Sample([render(scene)], q, ans, why, _meta("presence", **{"class": cls}))
    if qtype == "comparison":
        label = _pick(rng, [s for s in SCENES if len(SCENE_OBJECTS[s]) >= 2])
        a, b = (str(c) for c in rng.permutation(SCENE_OBJECTS[label])[:2])
        ka, kb = int(rng.integers(0, 5)), int(rng.integers(0, 5))
        if (ka > kb) != (rng.random() < 0.5):  # the answer is a coin flip: "no" must not be the safe guess
            ka, kb = (kb, ka) if ka != kb else (ka + 1, kb)
        scene = make_scene(rng, label, {a: ka, b: kb})
        q = _pick(
            rng,
            (
                f"Are there more {_plural(a)} than {_plural(b)}?",
                f"Is the number of {_plural(a)} greater than the number of {_plural(b)}?",
                f"Do {_plural(a)} outnumber {_plural(b)} in this image?",
            ),
        )
        ans = "yes" if ka > kb else "no"
        why = f"I count {_NUM[ka]} {_plural(a, ka)} and {_NUM[kb]} {_plural(b, kb)}, so the answer is {ans}."
        return Sample([render(scene)], q, ans, why, _meta("comparison", classes=[a, b]))
    label = "urban" if rng.random() < 0.5 else _pick(rng, ("desert", "farmland", "forest"))
    scene = make_scene(rng, label)
    q = _pick(
        rng,
        (
            "Is this a rural or an urban area?",
            "Would you describe this area as rural or urban?",
            "Is the area shown urban or rural?",
        ),
    )
    ans = RURAL_URBAN[label]
    why = f"The image shows {_EVIDENCE[label]}, which indicates {_art(ans)} {ans} area."
    return Sample([render(scene)], q, ans, why, _meta("rural_urban"))


def _counting(rng: np.random.Generator) -> Sample:
    return counting_with_scene(rng)[0]


def counting_with_scene(rng: np.random.Generator) -> tuple[Sample, Scene]:
    """A counting record and the scene it shows (embedded/curriculum.py names each counted object's cell)."""
    cls = _pick(rng, CLASSES)
    k = int(rng.integers(0, 7))
    scene = make_scene(rng, _scene_for(rng, cls, k), {cls: k})
    p = _plural(cls)
    q = _pick(
        rng,
        (
            f"How many {p} are there?",
            f"Count the {p} in this image.",
            f"What is the number of {p} visible?",
            f"How many {p} can you see in the image?",
        ),
    )
    desc = f"{COLOUR_WORD[cls]} {SHAPE_WORD[cls]} {_plural(cls, k)}"
    why = f"I count {_NUM[k]} {desc} in the image." if k else f"No {desc} appear in the image."
    return Sample([render(scene)], q, k, why, _meta("count", **{"class": cls})), scene


def _qualified(objs: list[Obj], qual: str) -> Obj | None:
    """The object `qual` picks out, only if it does so by a clear margin (else None)."""
    key = {
        "largest": lambda o: -o.area,
        "smallest": lambda o: o.area,
        "leftmost": lambda o: o.centre[0],
        "rightmost": lambda o: -o.centre[0],
        "topmost": lambda o: o.centre[1],
        "bottommost": lambda o: -o.centre[1],
    }[qual]
    first, second = sorted(objs, key=key)[:2]
    if qual in ("largest", "smallest"):
        big, small = (first, second) if qual == "largest" else (second, first)
        return first if big.area >= 1.25 * small.area else None
    return first if key(second) - key(first) >= 20 else None


def _grounding_target(rng: np.random.Generator) -> tuple[Scene, Obj, str | None]:
    """A grounding scene and its target: the one object of a random class, or (half the time) the one of 2-4
    that a qualifier picks out, with that qualifier (None when unique)."""
    cls = _pick(rng, CLASSES)
    unique = rng.random() < 0.5
    want = _pick(rng, QUALIFIERS)  # chosen first so that the rarer "largest"/"smallest" still get asked
    for attempt in range(30):
        k = 1 if unique else int(rng.integers(2, 5))
        scene = make_scene(rng, _scene_for(rng, cls, 1), {cls: k})
        same = [o for o in scene.objects if o.cls == cls]
        if unique:
            target, qual = same[0], None
            break
        options = [(q, o) for q in QUALIFIERS if (o := _qualified(same, q)) is not None]
        wanted = [(q, o) for q, o in options if q == want]
        if wanted or (options and attempt >= 10):
            qual, target = _pick(rng, wanted or options)
            break
    else:
        raise RuntimeError("no unambiguous grounding target")
    return scene, target, qual


def _grounding(rng: np.random.Generator) -> Sample:
    scene, target, qual = _grounding_target(rng)
    cls = target.cls
    name = cls if qual is None else f"{qual} {cls}"
    q = _pick(
        rng,
        (
            f"Where is the {name}?",
            f"Locate the {name}.",
            f"Give the bounding box of the {name}.",
            f"Find the {name} in the image.",
        ),
    )
    where = _AT[_where(target, scene)]
    if qual is None:
        why = f"The only {COLOUR_WORD[cls]} {SHAPE_WORD[cls]} {cls} lies {where}."
    else:
        same = sum(o.cls == cls for o in scene.objects)
        why = f"Of the {_NUM[same]} {_plural(cls)}, the {qual} one lies {where}."
    return Sample([render(scene)], q, [target.box], why, _meta(qual or "unique", **{"class": cls}))


def _detection(rng: np.random.Generator) -> Sample:
    cls = _pick(rng, CLASSES)
    k = int(rng.integers(1, 6))
    scene = make_scene(rng, _scene_for(rng, cls, k), {cls: k})
    p = _plural(cls)
    q = _pick(
        rng,
        (
            f"Detect all {p}.",
            f"Find every {cls} and give its bounding box.",
            f"Locate all {p} in the image.",
            f"Output a bounding box for each {cls}.",
        ),
    )
    boxes = [o.box for o in _by_position([o for o in scene.objects if o.cls == cls])]
    why = (
        f"There {'is' if k == 1 else 'are'} {_NUM[k]} {COLOUR_WORD[cls]} {SHAPE_WORD[cls]} "
        f"{_plural(cls, k)}; " + ("it gets a box." if k == 1 else "each gets its own box.")
    )
    return Sample([render(scene)], q, boxes, why, _meta("detect", **{"class": cls}))


def _describe(o: Obj) -> str:
    """'a large red ship heading northeast' - size, colour, class and orientation."""
    words = ([] if o.size == "medium" or o.cls == "vehicle" else [o.size]) + [COLOUR_WORD[o.cls], o.cls]
    text = f"{_art(words[0])} {' '.join(words)}"
    if o.cls in ("airplane", "ship"):
        text += f" heading {_DIRS[round(o.heading / 45) % 8]}"
    elif o.cls == "vehicle":
        text += f" aligned {_AXES[round(o.heading / 45) % 4]}"
    return text


def _region_caption(rng: np.random.Generator) -> Sample:
    scene = _nonempty_scene(rng)
    o = _pick(rng, scene.objects)
    q = _pick(
        rng,
        (
            "Describe the object in region {region}.",
            "What is in the region {region}?",
            "Give a short description of the area {region}.",
            "Briefly describe what is inside {region}.",
        ),
    )
    size = "" if o.size == "medium" or o.cls == "vehicle" else f"{o.size} "
    why = f"The region holds one {size}{COLOUR_WORD[o.cls]} {SHAPE_WORD[o.cls]} shape, {_art(o.cls)} {o.cls}."
    return Sample([render(scene)], q, _describe(o), why, _meta("region", region=o.box, **{"class": o.cls}))


def _caption_text(rng: np.random.Generator, label: str, objs: list[Obj]) -> str:
    lst = _join([_count_np(k, c) for c, k in _inventory(objs)])
    adj = _SCENE_ADJ[label]
    return _pick(
        rng,
        (
            f"{_cap(_art(adj))} {adj} scene with {lst}.",
            f"Aerial view of {_SCENE_NP[label]} with {lst}.",
            f"{_cap(lst)} {_SCENE_PREP[label]}.",
            f"This image shows {lst} {_SCENE_PREP[label]}.",
        ),
    )


def _caption(rng: np.random.Generator) -> Sample:
    scene = _nonempty_scene(rng)
    text = _caption_text(rng, scene.label, scene.objects)
    q = _pick(
        rng,
        (
            "Describe this image in one sentence.",
            "Write a short caption for this aerial image.",
            "What does this image show?",
            "Give a one-sentence description of the scene.",
        ),
    )
    why = f"The background is {_EVIDENCE[scene.label]}; I count the objects of each colour."
    return Sample([render(scene)], q, text, why, _meta("caption"))


def _grounded_caption(rng: np.random.Generator) -> Sample:
    scene = _nonempty_scene(rng, max_objects=6)
    text = _caption_text(rng, scene.label, scene.objects)
    # boxes in the order the caption mentions them: class by class, each class left to right
    boxes = [
        o.box
        for c, _ in _inventory(scene.objects)
        for o in sorted((o for o in scene.objects if o.cls == c), key=lambda o: (o.box[0], o.box[1]))
    ]
    q = _pick(
        rng,
        (
            "Describe the image and give a bounding box for every object you mention.",
            "Write a grounded caption: a sentence plus the box of each mentioned object.",
            "Caption this scene and localise each object in the caption.",
        ),
    )
    why = f"The background is {_EVIDENCE[scene.label]}; each coloured object gets a box."
    return Sample([render(scene)], q, {"caption": text, "boxes": boxes}, why, _meta("grounded"))


_VERBS = {  # class -> (appeared: singular, plural), (disappeared: singular, plural)
    "airplane": (("arrived", "arrived"), ("departed", "departed")),
    "building": (("was built", "were built"), ("was demolished", "were demolished")),
    "ship": (("appeared", "appeared"), ("sailed away", "sailed away")),
    "storage tank": (("was built", "were built"), ("was removed", "were removed")),
    "vehicle": (("appeared", "appeared"), ("disappeared", "disappeared")),
}


@dataclass
class _Change:
    kind: str  # "added" | "removed"
    cls: str
    cell: str
    objects: list[Obj]


def _change_pair(
    rng: np.random.Generator, allow_none: bool
) -> tuple[Scene, list[Obj], list[Obj], list[_Change]]:
    """A scene and its before/after object lists: groups of one class added or removed in one cell."""
    if allow_none and rng.random() < 0.1:
        scene = _nonempty_scene(rng, max_objects=6)
        return scene, scene.objects, scene.objects, []
    kinds = _pick(rng, (("added",), ("removed",), ("added", "removed")))
    for _ in range(20):
        scene = make_scene(rng, max_objects=5)
        changes = []
        for kind in kinds:
            cls = _pick(rng, SCENE_OBJECTS[scene.label])
            r, c = int(rng.integers(3)), int(rng.integers(3))
            placed = []
            for _ in range(int(rng.integers(1, 4))):
                o = _place(rng, scene, cls, cell=(r, c), tries=25)
                if o is not None:
                    placed.append(o)
            if placed:
                changes.append(_Change(kind, cls, _CELLS[r][c], placed))
        if len(changes) == len(kinds):
            break
    else:
        raise RuntimeError("could not place a change")
    gone = [o for ch in changes if ch.kind == "removed" for o in ch.objects]
    new = [o for ch in changes if ch.kind == "added" for o in ch.objects]
    return scene, scene.objects + gone, scene.objects + new, changes


def _change_caption(rng: np.random.Generator) -> Sample:
    scene, before, after, changes = _change_pair(rng, allow_none=True)
    q = _pick(
        rng,
        (
            "Describe the changes between the two images.",
            "What changed from the first image to the second?",
            "Summarise the difference between these two images of the same area.",
        ),
    )
    if not changes:
        text = _pick(
            rng,
            (
                "There is no change between the two images.",
                "Nothing has changed in this area.",
                "The two images show no difference.",
            ),
        )
        why = "Every coloured object sits at the same place in both images."
        kind = "none"
    else:
        parts = []
        for ch in changes:
            k = len(ch.objects)
            verb = _VERBS[ch.cls][ch.kind == "removed"][k > 1]
            parts.append(f"{_count_np(k, ch.cls)} {verb} {_AT[ch.cell]}")
        text = _cap(" and ".join(parts)) + "."
        if len(changes) == 1 and rng.random() < 0.4:
            ch = changes[0]
            k = len(ch.objects)
            new = "new " if ch.kind == "added" else ""
            verb = "appear" if ch.kind == "added" else "are gone"
            if k == 1:
                verb = "appears" if ch.kind == "added" else "is gone"
            text = f"Compared with the first image, {_count_np(k, new + ch.cls)} {verb} {_AT[ch.cell]}."
        kind = changes[0].kind if len(changes) == 1 else "mixed"
        cw = _join(sorted({COLOUR_WORD[ch.cls] for ch in changes}))
        why = f"Comparing both images, {cw} objects change " + (
            "in one area." if len(changes) == 1 else "in two areas."
        )
    imgs = [render(scene, before), render(scene, after)]
    return Sample(imgs, q, text, why, _meta(kind))


CHANGE_DETECTION_QUESTIONS = (
    "Mark the objects that changed between the two images.",
    "Give the bounding boxes of all objects that appeared or disappeared.",
    "Detect the changed objects between the first and the second image.",
)


def _change_detection(rng: np.random.Generator) -> Sample:
    scene, before, after, changes = _change_pair(rng, allow_none=False)
    changed = _by_position([o for ch in changes for o in ch.objects])
    q = _pick(rng, CHANGE_DETECTION_QUESTIONS)
    n_add = sum(len(ch.objects) for ch in changes if ch.kind == "added")
    n_rem = len(changed) - n_add
    why = f"{_cap(_NUM[len(changed)])} objects differ: {_NUM[n_add]} appeared and {_NUM[n_rem]} disappeared."
    kind = changes[0].kind if len(changes) == 1 else "mixed"
    meta = _meta(kind, added=n_add, removed=n_rem)
    return Sample([render(scene, before), render(scene, after)], q, [o.box for o in changed], why, meta)


def _temporal(rng: np.random.Generator) -> Sample:
    label = _pick(rng, TEMPORAL_LABELS)
    T = int(rng.integers(3, 5))
    if label in ("construction", "demolition"):
        for _ in range(20):
            scene = make_scene(
                rng,
                _pick(rng, ("desert", "farmland", "forest", "urban")),
                {"building": int(rng.integers(0, 3))},
                max_objects=4,
            )
            frames, added = [list(scene.objects)], []
            for _ in range(T - 1):
                step = [
                    o
                    for o in (_place(rng, scene, "building", tries=25) for _ in range(rng.integers(1, 3)))
                    if o
                ]
                added += step
                frames.append(scene.objects + added)
            if all(len(b) > len(a) for a, b in zip(frames, frames[1:])):
                break
        else:
            raise RuntimeError("could not grow buildings")
        counts = [sum(o.cls == "building" for o in f) for f in frames]
        if label == "demolition":
            frames, counts = frames[::-1], counts[::-1]
        imgs = [render(scene, f) for f in frames]
        why = (
            f"The number of magenta buildings goes from {_NUM[counts[0]]} to {_NUM[counts[-1]]} "
            "across the frames."
        )
    elif label == "flooding":
        for _ in range(20):
            scene = _empty_scene(rng, _pick(rng, ("desert", "farmland", "forest", "urban")))
            h, w = scene.height, scene.width
            yy, xx = _grid(h, w)
            side = int(rng.integers(4))
            t = (xx / w, 1 - xx / w, yy / h, 1 - yy / h)[side] + 0.06 * _noise(rng, h, w, 60)
            levels = np.linspace(rng.uniform(0.0, 0.12), rng.uniform(0.45, 0.7), T)
            scene.land &= t >= levels[-1] + 0.04  # objects stay on ground that never floods
            if _populate(rng, scene, {}, True, 5):
                break
        water = _water_tex(rng, h, w)
        imgs = [render(scene, ground=np.where((t < lv)[..., None], water, scene.ground)) for lv in levels]
        why = "Blue water covers a larger part of the land in each later frame."
    elif label == "deforestation":
        scene = make_scene(rng, "forest", max_objects=4)
        n = _noise(rng, scene.height, scene.width, 45)
        soil = _soil_tex(rng, scene.height, scene.width)
        qs = np.linspace(rng.uniform(0.0, 0.08), rng.uniform(0.4, 0.65), T)
        imgs = [
            render(scene, ground=np.where((n < np.quantile(n, q))[..., None], soil, scene.ground)) for q in qs
        ]
        why = "Dark green canopy is replaced by bare brown soil over a growing area in each frame."
    else:
        scene = make_scene(rng)
        imgs = [render(scene)] * T
        why = "The ground cover and every coloured object stay the same in all frames."
    q = _pick(
        rng,
        (
            f"These {_NUM[T]} images show the same area at successive dates. What change is happening?",
            f"Classify the change across this image time series as one of: {', '.join(TEMPORAL_LABELS)}.",
            "What kind of change does this sequence of satellite images show?",
        ),
    )
    return Sample(imgs, q, label, why, _meta("temporal", frames=T))


BUILDERS: dict[str, Callable[[np.random.Generator], Sample]] = {
    "classification": _classification,
    "multilabel": _multilabel,
    "vqa": _vqa,
    "counting": _counting,
    "grounding": _grounding,
    "detection": _detection,
    "region_caption": _region_caption,
    "caption": _caption,
    "grounded_caption": _grounded_caption,
    "change_caption": _change_caption,
    "change_detection": _change_detection,
    "temporal_classification": _temporal,
}


# ----------------------------------------------------------------------------- data set writer


def make_sample(task: str, seed: int, index: int) -> Sample:
    """The sample record `index` of a `seed`'s data set would hold for `task` (images in memory)."""
    return BUILDERS[task](np.random.default_rng([seed, index]))


def _split(tasks_of: list[str], seed: int, test_frac: float) -> set[int]:
    """Indices of the test records: round(n * test_frac) of them, spread evenly over the tasks."""
    rng = np.random.default_rng([seed, 1, 7])  # 3 words: never the stream of a record ([seed, i])
    by_task: dict[str, list[int]] = {}
    for i, t in enumerate(tasks_of):
        by_task.setdefault(t, []).append(i)
    names = sorted(by_task, key=TASKS.index)
    quota = {t: len(by_task[t]) * test_frac for t in names}
    take = {t: math.floor(quota[t]) for t in names}
    spare = round(len(tasks_of) * test_frac) - sum(take.values())
    order = sorted(names, key=lambda t: (-(quota[t] - take[t]), float(rng.random())))
    for t in order[:spare]:
        take[t] += 1
    test = set()
    for t in names:
        test.update(int(i) for i in rng.permutation(by_task[t])[: take[t]])
    return test


def record_id(seed: int, index: int) -> str:
    """The id of record `index`: synth_000005 for seed 0, synth_000005_s7 for seed 7. Sets of different
    seeds merge without clashing ids (predictions and the viewer go by id); seed 0 keeps the bare form of
    the embedded set and its caches."""
    return f"synth_{index:06d}" if seed == 0 else f"synth_{index:06d}_s{seed}"


def _write_record(job: tuple[str, str, int, int]) -> str:
    """Build record `index`, write its PNGs under out/images and return its JSON line."""
    out, task, seed, i = job
    s = make_sample(task, seed, i)
    names = []
    for k, img in enumerate(s.images):
        name = f"images/{i:06d}_{k}.png"
        Image.fromarray(img).save(Path(out) / name, format="PNG", compress_level=1)  # no metadata chunks
        names.append(name)
    rec = {
        "id": record_id(seed, i),
        "task": task,
        "images": names,
        "question": s.question,
        "answer": s.answer,
        "reasoning": s.reasoning,
        "meta": s.meta,
    }
    return json.dumps(rec)


def make_dataset(
    out_dir: str | Path,
    n: int,
    seed: int,
    test_frac: float = 0.2,
    tasks: Sequence[str] | None = None,
    progress: bool = False,
    workers: int = 1,
) -> dict:
    """Write n records spread round-robin over `tasks` (default: all 12) to out_dir.

    Files: out_dir/images/{i:06d}_{k}.png, out_dir/train.jsonl, out_dir/test.jsonl. `workers` > 1
    builds records in that many processes; the bytes are the same either way (one RNG per record).
    Returns {"train": path, "test": path, "images": dir, "n_train": int, "n_test": int,
    "tasks": {task: count}}.
    """
    tasks = tuple(tasks or TASKS)
    unknown = [t for t in tasks if t not in BUILDERS]
    if unknown:
        raise ValueError(f"unknown tasks {unknown}; expected some of {TASKS}")
    if not 0 <= test_frac <= 1:
        raise ValueError(f"test_frac must be in [0, 1], got {test_frac}")
    if seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed}")
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    tasks_of = [tasks[i % len(tasks)] for i in range(n)]
    test = _split(tasks_of, seed, test_frac)
    jobs = [(str(out), tasks_of[i], seed, i) for i in range(n)]
    pool = None
    if workers > 1 and n > 1:
        # spawn, not fork: callers may hold threads (torch, BLAS) that a forked child would inherit
        pool = multiprocessing.get_context("spawn").Pool(min(workers, n))
        results = pool.imap(_write_record, jobs, chunksize=8)  # ordered, so the files do not depend on timing
    else:
        results = map(_write_record, jobs)
    if progress:
        results = tqdm(results, total=n, desc="synth", unit="rec")
    lines: dict[str, list[str]] = {"train": [], "test": []}
    try:
        for i, line in enumerate(results):
            lines["test" if i in test else "train"].append(line)
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    paths = {}
    for split, ls in lines.items():
        paths[split] = out / f"{split}.jsonl"
        paths[split].write_text("".join(line + "\n" for line in ls))
    return {
        "train": str(paths["train"]),
        "test": str(paths["test"]),
        "images": str(out / "images"),
        "n_train": len(lines["train"]),
        "n_test": len(lines["test"]),
        "tasks": {t: tasks_of.count(t) for t in tasks},
    }


def main(argv: Sequence[str] | None = None) -> dict:
    p = argparse.ArgumentParser(
        description="Generate a seeded synthetic Earth-observation data set covering all 12 tasks: "
        "OUT/images/*.png, OUT/train.jsonl and OUT/test.jsonl. The same --seed gives byte-identical files."
    )
    p.add_argument("--out", required=True, help="output folder (created if missing); required")
    p.add_argument(
        "--n",
        type=int,
        default=2000,
        help="number of records in total, spread evenly over the tasks (default: %(default)s)",
    )
    p.add_argument(
        "--seed", type=int, default=0, help="random seed (non-negative integer) (default: %(default)s)"
    )
    p.add_argument(
        "--tasks", default=None, help=f"comma-separated subset of: {','.join(TASKS)} (default: all)"
    )
    p.add_argument(
        "--test-frac", type=float, default=0.2, help="fraction of records in test.jsonl (default 0.2)"
    )
    p.add_argument(
        "--workers",
        type=int,
        default=min(8, os.cpu_count() or 1),
        help="processes building records (default: CPU count, at most 8); output is the same for any value",
    )
    a = p.parse_args(argv)
    tasks = [t.strip() for t in a.tasks.split(",") if t.strip()] if a.tasks else None
    info = make_dataset(a.out, a.n, a.seed, a.test_frac, tasks, progress=True, workers=a.workers)
    print(f"wrote {info['n_train']} train + {info['n_test']} test records to {a.out}")
    return info


if __name__ == "__main__":
    main()
