"""The perception curriculum's scenes (scripts/pretrain_tiny.py's stages): records about synth's objects, or
the localisation probe's squares, on flat ground, each stage widening one thing; docs/perception-ladder.md
measures them. A builder is `fn(rng, task) -> synth.Sample`, seeded by its rng alone; BUILDERS names them.

    s = BUILDERS["colourmixl"](np.random.default_rng([0, 1000, 7]), "grounding")
    record = to_record(s, "grounding", "colourmixl-7", Path("runs/x/images"))
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

import data
from embedded import synth

FIXED_SIDE = 224  # pixels: the localisation probe's image (scripts/grpo_proof.py)
GREY = 90  # the probe's ground
_GROUND_Q = (
    "Where is the {}?",
    "Locate the {}.",
    "Give the bounding box of the {}.",
    "Find the {} in the image.",
)
_DETECT_Q = (
    "Detect all {p}.",
    "Find every {c} and give its bounding box.",
    "Locate all {p} in the image.",
    "Output a bounding box for each {c}.",
)


# ----------------------------------------------------------------------------- the curriculum's scenes


def flat_scene(
    rng: np.random.Generator,
    counts: dict[str, int],
    distractors: int,
    side: int | None = None,
    large: bool = False,
    grey: bool = False,
) -> synth.Scene:
    """A scene of flat ground (one dull random colour, 160-400 px a side) holding exactly counts[c] objects of
    class c (placed by synth's own rejection sampler), then up to `distractors` objects of other classes.
    `large`: every object at its class's largest synth size (37-100 px: over one 28-px image token).
    `grey`: the probe's grey ground, not a random colour (where the squares models learnt their salience)."""
    size_of = lambda cls: list(synth._SIZES[cls])[-1] if large else None  # noqa: E731
    for _ in range(60):
        w, h = (int(v) for v in rng.integers(synth._MIN_SIDE, synth._MAX_SIDE + 1, 2))
        w, h = (side, side) if side else (w, h)  # fixed: the probe's one image shape (one grid of tokens)
        ground = np.empty((h, w, 3), np.float32)
        ground[:] = rng.integers(50, 170, 3)  # render() darkens anything near an object colour
        if grey:  # after the draw, so that the other stages' streams stay as they were
            ground[:] = GREY
        everywhere = np.ones((h, w), bool)  # ships may sit anywhere: flat ground is land and water at once
        scene = synth.Scene("flat", ground, everywhere, everywhere.copy(), (int(rng.choice([-3, 3])), 3))
        placed = True
        for cls in sorted(counts, key=synth._BIG_FIRST.index):
            for _ in range(counts[cls]):
                o = synth._place(rng, scene, cls, size_of(cls))
                if o is None:
                    placed = False
                    break
                scene.objects.append(o)
        if not placed:
            continue
        others = [c for c in synth.CLASSES if c not in counts]
        for _ in range(distractors):
            other = synth._pick(rng, others)
            o = synth._place(rng, scene, other, size_of(other), tries=15)
            if o is not None:
                scene.objects.append(o)
        return scene
    raise RuntimeError(f"could not fit {counts} on flat ground")


def _cells_text(boxes: list[list[int]], w: int, h: int) -> str:
    """'one in the top left, one at the bottom': each box's 3 x 3 cell, in the order given."""
    return ", ".join(
        f"one {synth._AT[synth._cell((b[0] + b[2]) / 2, (b[1] + b[3]) / 2, w, h)]}" for b in boxes
    )


def grounding_sample(rng: np.random.Generator, scene: synth.Scene, cls: str) -> synth.Sample:
    """Grounding of the one `cls` object of `scene`, worded as synth's unique grounding records."""
    target = next(o for o in scene.objects if o.cls == cls)
    q = synth._pick(rng, _GROUND_Q).format(cls)
    where = synth._AT[synth._where(target, scene)]
    why = f"The only {synth.COLOUR_WORD[cls]} {synth.SHAPE_WORD[cls]} {cls} lies {where}."
    return synth.Sample([synth.render(scene)], q, [target.box], why, synth._meta("unique", **{"class": cls}))


def detection_sample(rng: np.random.Generator, scene: synth.Scene, cls: str) -> synth.Sample:
    """Detection of every `cls` object of `scene`: synth's wording, plus each object's cell
    (dense_detection)."""
    objs = synth._by_position([o for o in scene.objects if o.cls == cls])
    q = synth._pick(rng, _DETECT_Q).format(p=synth._plural(cls), c=cls)
    s = synth.Sample(
        [synth.render(scene)], q, [o.box for o in objs], "", synth._meta("detect", **{"class": cls})
    )
    return dense_detection(s)


def _listed(cls: str, boxes: list[list[int]], w: int, h: int) -> str:
    """'There are two red pointed ships: one in the top left, one at the bottom': objects by cell."""
    k = len(boxes)
    what = f"{synth._NUM[k]} {synth.COLOUR_WORD[cls]} {synth.SHAPE_WORD[cls]} {synth._plural(cls, k)}"
    return f"There {'is' if k == 1 else 'are'} {what}: {_cells_text(boxes, w, h)}"


def detection_reasoning(cls: str, boxes: list[list[int]], w: int, h: int) -> str:
    """'There are two red pointed ships: one in the top left, one at the bottom; each gets its own box.'"""
    tail = "it gets a box." if len(boxes) == 1 else "each gets its own box."
    return f"{_listed(cls, boxes, w, h)}; {tail}"


def dense_detection(s: synth.Sample) -> synth.Sample:
    """The reasoning names every box's cell in answer order, so position is supervised before the numbers."""
    h, w = s.images[0].shape[:2]
    s.reasoning = detection_reasoning(s.meta["class"], s.answer, w, h)
    return s


def asked_class(
    rng: np.random.Generator,
    task: str,
    most: int = 1,
    distractors: tuple[int, int] = (0, 0),
    side: int | None = None,
    large: bool = False,
    grey: bool = False,
) -> synth.Sample:
    """A record about one random class on flat_scene ground: grounding of its one object, or detection of 1 to
    `most` of them, among rng.integers(*distractors) objects of other classes (none for (0, 0))."""
    cls = synth._pick(rng, synth.CLASSES)
    k = 1 if task == "grounding" or most == 1 else int(rng.integers(1, most + 1))
    others = int(rng.integers(*distractors)) if distractors != (0, 0) else 0
    scene = flat_scene(rng, {cls: k}, others, side, large, grey)
    return (grounding_sample if task == "grounding" else detection_sample)(rng, scene, cls)


def flat1(rng: np.random.Generator, task: str) -> synth.Sample:
    """One object of a random class on flat ground: the probe, with synth's objects instead of a square."""
    return asked_class(rng, task)


def square(rng: np.random.Generator, task: str) -> synth.Sample:
    """scripts/grpo_proof.py's localisation probe (square_records): one red 56-px square at a uniformly random
    place on flat grey 224 x 224, "Where is the red square?", its cell in the reasoning. Grounding whatever
    `task`: the rung that checks this loop against the probe's measured SFT."""
    x, y = (int(v) for v in rng.integers(0, FIXED_SIDE - 56, 2))
    img = np.full((FIXED_SIDE, FIXED_SIDE, 3), GREY, np.uint8)
    img[y : y + 56, x : x + 56] = (230, 40, 40)
    at = synth._AT[synth._cell(x + 28, y + 28, FIXED_SIDE, FIXED_SIDE)]
    box = [[x, y, x + 56, y + 56]]
    return synth.Sample(
        [img], "Where is the red square?", box, f"The red square lies {at}.", synth._meta("unique")
    )


SQUARE_COLOURS = {
    "red": (230, 40, 40),
    "blue": (40, 70, 230),
    "green": (40, 200, 60),
    "yellow": (230, 220, 40),
}


def square2(
    rng: np.random.Generator,
    task: str,
    red_asked: bool = False,
    faded: bool = False,
    colours: tuple[str, ...] = tuple(SQUARE_COLOURS),
) -> synth.Sample:
    """The probe with a second square of another colour: "Where is the blue square?" among two 56-px squares
    on grey 224 x 224 (8 px apart at least). Binding a colour word to one of two salient tokens, with nothing
    else changed from the probe the model already localises (grounding whatever `task`).
    `red_asked`: always "Where is the red square?", the other square of another colour (selection by colour
    without reading the question). `faded`: the other square's colour blended with the grey by a uniform
    random strength (0: invisible, 1: full colour), so that the one-square readout still half works.
    `colours`: the colours drawn from (("red", "blue"): one bit for the question to choose)."""
    if red_asked:
        asked, other = "red", rng.choice([c for c in SQUARE_COLOURS if c != "red"])
    else:
        asked, other = rng.choice(list(colours), 2, replace=False)
    img = np.full((FIXED_SIDE, FIXED_SIDE, 3), GREY, np.uint8)
    while True:
        (x, y), (u, v) = (rng.integers(0, FIXED_SIDE - 56, 2) for _ in range(2))
        if abs(int(x) - int(u)) >= 64 or abs(int(y) - int(v)) >= 64:
            break
    x, y, u, v = int(x), int(y), int(u), int(v)
    strength = rng.uniform(0.0, 1.0) if faded else 1.0
    img[y : y + 56, x : x + 56] = SQUARE_COLOURS[asked]
    img[v : v + 56, u : u + 56] = np.round(GREY + strength * (np.array(SQUARE_COLOURS[other]) - GREY))
    at = synth._AT[synth._cell(x + 28, y + 28, FIXED_SIDE, FIXED_SIDE)]
    return synth.Sample(
        [img],
        f"Where is the {asked} square?",
        [[x, y, x + 56, y + 56]],
        f"The {asked} square lies {at}.",
        synth._meta("unique"),
    )


def square2p(rng: np.random.Generator, task: str) -> synth.Sample:
    """square2 when `task` is grounding; when it is vqa, the same kind of scene asked "Is there a green
    square?" (yes for half the records): selecting by the question's colour word with a yes/no answer, before
    having to say where."""
    if task != "vqa":
        return square2(rng, task)
    s = square2(rng, "grounding")
    present = {tuple(c) for c in np.unique(s.images[0].reshape(-1, 3), axis=0).tolist()}
    colours = [c for c, rgb in SQUARE_COLOURS.items() if tuple(rgb) in present]
    if rng.random() < 0.5:
        asked, answer = str(rng.choice(colours)), "yes"
    else:
        asked, answer = str(rng.choice([c for c in SQUARE_COLOURS if c not in colours])), "no"
    why = f"There is a {asked} square." if answer == "yes" else f"There is no {asked} square."
    return synth.Sample(s.images, f"Is there a {asked} square?", answer, why, synth._meta("presence"))


def fixedq(rng: np.random.Generator, task: str) -> synth.Sample:
    """The probe with synth's objects: a fixed FIXED_SIDE-px square of flat ground, one object of any class,
    and one wording whatever the class ("Where is the object?"), so that the answer's place in the sequence is
    the same in every record: through M-RoPE (relative) the model then reads an image token's column as the
    probe does, before learning to do it from wherever the question leaves it."""
    cls = synth._pick(rng, synth.CLASSES)
    scene = flat_scene(rng, {cls: 1}, 0, FIXED_SIDE)
    o = scene.objects[0]
    at = synth._AT[synth._where(o, scene)]
    if task == "grounding":
        q, why = "Where is the object?", f"The object lies {at}."
    else:
        q, why = "Detect all objects.", f"There is one object: one {at}; it gets a box."
    return synth.Sample([synth.render(scene)], q, [o.box], why, synth._meta("unique", **{"class": cls}))


def fixed1(rng: np.random.Generator, task: str) -> synth.Sample:
    """flat1 on a fixed FIXED_SIDE-px square: the probe's one image shape (8 x 8 tokens), synth's objects."""
    return asked_class(rng, task, side=FIXED_SIDE)


def fixedmix(rng: np.random.Generator, task: str) -> synth.Sample:
    """flatmix on the fixed FIXED_SIDE-px square: distractors without the image size varying."""
    return asked_class(rng, task, 5, (1, 5), FIXED_SIDE)


def fixed1l(rng: np.random.Generator, task: str) -> synth.Sample:
    """fixed1 with the object at its class's largest size: position first, where a token can resolve it."""
    return asked_class(rng, task, side=FIXED_SIDE, large=True)


def fixedmixl(rng: np.random.Generator, task: str, grey: bool = False) -> synth.Sample:
    """fixedmix with every object at its class's largest size: selection by colour without small objects.
    `grey` (fixedmixlg): on the probe's grey, where the squares models learnt their salience (rung 43: no
    better than a random ground)."""
    return asked_class(rng, task, 2, (1, 3), FIXED_SIDE, large=True, grey=grey)


def colourmixl(
    rng: np.random.Generator, task: str, distractors: int = 1, grey: bool = False, by_class: bool = False
) -> synth.Sample:
    """fixedmixl asked by colour ("Where is the yellow object?"), one distractor: binding a colour word to the
    image's colour is all the selection left (grounding whatever `task`). `grey` (colourmixlg): on grey.
    `by_class` (classmixl): asked by class in synth's wording ("Find the storage tank in the image."), the
    reasoning still "The yellow object lies ...": the model says the colour before the box, so the box is read
    as it was asked by colour; only the class-to-colour word is new (classmixl's detection records are
    fixedmixl's)."""
    cls = synth._pick(rng, synth.CLASSES)
    scene = flat_scene(rng, {cls: 1}, distractors, FIXED_SIDE, large=True, grey=grey)
    target = next(o for o in scene.objects if o.cls == cls)
    colour, at = synth.COLOUR_WORD[cls], synth._AT[synth._where(target, scene)]
    question = synth._pick(rng, _GROUND_Q).format(cls) if by_class else f"Where is the {colour} object?"
    return synth.Sample(
        [synth.render(scene)],
        question,
        [target.box],
        f"The {colour} object lies {at}.",
        synth._meta("unique", **{"class": cls}),
    )


def colourmix01l(rng: np.random.Generator, task: str) -> synth.Sample:
    """colourmixl where half the records have no distractor: the one-object localisation the start has is
    kept in training while the selection is learnt beside it, instead of being unlearnt first (rung 20)."""
    return colourmixl(rng, task, int(rng.integers(0, 2)))


def flatmix(rng: np.random.Generator, task: str) -> synth.Sample:
    """Flat ground, the asked class among 1-4 distractors of the other classes (found by colour and shape)."""
    return asked_class(rng, task, 5, (1, 5))


def synth_unique(rng: np.random.Generator, task: str) -> synth.Sample:
    """synth's scenes (textured ground, extras, its image sizes and object sizes) without its qualifiers:
    grounding of a class's one object (synth's unique half), detection as synth's (dense)."""
    if task != "grounding":
        return synth_stage(rng, task)
    cls = synth._pick(rng, synth.CLASSES)
    return grounding_sample(rng, synth.make_scene(rng, synth._scene_for(rng, cls, 1), {cls: 1}), cls)


def said_by_colour(s: synth.Sample) -> synth.Sample:
    """A unique grounding record's reasoning as classmixl's: "The only red pointed ship lies at the top." ->
    "The red object lies at the top." (detection records, whose dense reasoning names the colour first, as
    they are)."""
    if s.meta["type"] != "unique":
        return s
    where = s.reasoning.split(" lies ", 1)[1]  # "at the top.": every unique reasoning ends "... lies <cell>."
    s.reasoning = f"The {synth.COLOUR_WORD[s.meta['class']]} object lies {where}"
    return s


def qualified_dense(rng: np.random.Generator, task: str) -> synth.Sample:
    """synth's grounding where a qualified record's reasoning first lists the class's objects by cell, as
    dense detection does, then picks one: "There are three red pointed ships: one in the top left, one at the
    bottom, one on the right; the leftmost one lies in the top left." Unique records read as synthuc's, and
    other tasks as synth_stage's."""
    if task != "grounding":
        return synth_stage(rng, task)
    scene, target, qual = synth._grounding_target(rng)
    if qual is None:
        return said_by_colour(grounding_sample(rng, scene, target.cls))
    cls = target.cls
    same = synth._by_position([o for o in scene.objects if o.cls == cls])
    q = synth._pick(rng, _GROUND_Q).format(f"{qual} {cls}")
    listed = _listed(cls, [o.box for o in same], scene.width, scene.height)
    why = f"{listed}; the {qual} one lies {synth._AT[synth._where(target, scene)]}."
    return synth.Sample([synth.render(scene)], q, [target.box], why, synth._meta(qual, **{"class": cls}))


def synth_stage(rng: np.random.Generator, task: str) -> synth.Sample:
    """synth's own record for `task` (its scenes, extras, qualifiers), detection's reasoning made dense."""
    s = synth.BUILDERS[task](rng)
    return dense_detection(s) if task == "detection" else s


def dense_counted(rng: np.random.Generator, task: str) -> synth.Sample:
    """synthuc's record, where counting and change detection name each object's cell as dense detection does
    (what taught grounding and detection where things are): "There are three red pointed ships: one in the top
    left, one at the bottom, one on the right; I count three." and "Three objects differ: two appeared and one
    disappeared: one in the top left, one in the top left, one at the bottom; each gets its own box." The
    other tasks' records are synthuc's (the same draws)."""
    if task == "counting":
        s, scene = synth.counting_with_scene(rng)
        cls = s.meta["class"]
        counted = [o.box for o in synth._by_position([o for o in scene.objects if o.cls == cls])]
        if counted:  # "No red pointed ships appear in the image." stays
            s.reasoning = (
                f"{_listed(cls, counted, scene.width, scene.height)}; I count {synth._NUM[s.answer]}."
            )
        return s
    s = BUILDERS["synthuc"](rng, task)
    if task == "change_detection":
        h, w = s.images[0].shape[:2]
        s.reasoning = (
            f"{s.reasoning.removesuffix('.')}: {_cells_text(s.answer, w, h)}; each gets its own box."
        )
    return s


def square_change(rng: np.random.Generator, task: str) -> synth.Sample:
    """Change detection on the probe's ground: two grey 224 x 224 images holding 0-2 squares of the probe's
    colours in both and 1-3 that only one of them holds (appeared in the second, or disappeared from it); the
    answer boxes those, by position, and the reasoning counts and places them as synthucd's does. Comparing
    two images with nothing else to see, as the square stages taught one image. The other tasks' records are
    synthucd's, so the stage can mix every task back in."""
    if task != "change_detection":
        return dense_counted(rng, task)
    n_changed, n_kept = int(rng.integers(1, 4)), int(rng.integers(0, 3))
    placed: list[tuple[int, int]] = []
    while len(placed) < n_changed + n_kept:  # 8 px apart at least, as square2's; a dead end starts over
        placed = []
        for _ in range(200):
            x, y = (int(v) for v in rng.integers(0, FIXED_SIDE - 56, 2))
            if all(abs(x - u) >= 64 or abs(y - v) >= 64 for u, v in placed):
                placed.append((x, y))
                if len(placed) == n_changed + n_kept:
                    break
    appeared = rng.random(n_changed) < 0.5  # else disappeared
    images = [np.full((FIXED_SIDE, FIXED_SIDE, 3), GREY, np.uint8) for _ in range(2)]
    colours = list(SQUARE_COLOURS.values())
    for k, (x, y) in enumerate(placed):
        colour = colours[int(rng.integers(len(colours)))]
        for image, there in zip(images, (k >= n_changed or not appeared[k], k >= n_changed or appeared[k])):
            if there:
                image[y : y + 56, x : x + 56] = colour
    boxes = sorted(([x, y, x + 56, y + 56] for x, y in placed[:n_changed]), key=lambda b: (b[1], b[0]))
    n_add = int(appeared.sum())
    cells = _cells_text(boxes, FIXED_SIDE, FIXED_SIDE)
    why = (
        f"{synth._cap(synth._NUM[n_changed])} objects differ: {synth._NUM[n_add]} appeared and "
        f"{synth._NUM[n_changed - n_add]} disappeared: {cells}; each gets its own box."
    )
    question = synth._pick(rng, synth.CHANGE_DETECTION_QUESTIONS)
    kind = "added" if n_add == n_changed else "removed" if n_add == 0 else "mixed"
    meta = synth._meta(kind, added=n_add, removed=n_changed - n_add)
    return synth.Sample(images, question, boxes, why, meta)


BUILDERS: dict[str, Callable[[np.random.Generator, str], synth.Sample]] = {
    "square": square,
    "square2": square2,
    "square2red": lambda rng, task: square2(rng, task, red_asked=True),
    "square2fade": lambda rng, task: square2(rng, task, faded=True),
    "square2p": square2p,
    "square2rb": lambda rng, task: square2(rng, task, colours=("red", "blue")),
    "square2rbg": lambda rng, task: square2(rng, task, colours=("red", "blue", "green")),
    "fixedq": fixedq,
    "fixed1": fixed1,
    "fixedmix": fixedmix,
    "fixed1l": fixed1l,
    "fixedmixl": fixedmixl,
    "fixedmixlg": lambda rng, task: fixedmixl(rng, task, grey=True),
    "colourmixl": colourmixl,
    "colourmixlg": lambda rng, task: colourmixl(rng, task, grey=True),
    "classmixl": lambda rng, task: (
        colourmixl(rng, task, by_class=True) if task == "grounding" else fixedmixl(rng, task)
    ),
    "colourmix01l": colourmix01l,
    "flat1": flat1,
    "flatmix": flatmix,
    "synthu": synth_unique,
    "classmix1": lambda rng, task: said_by_colour(asked_class(rng, task, 2, (1, 2), FIXED_SIDE)),
    "classmix": lambda rng, task: said_by_colour(fixedmix(rng, task)),
    "synthuc": lambda rng, task: said_by_colour(synth_unique(rng, task)),
    "synthucd": dense_counted,
    "changesq": square_change,
    "synthc": lambda rng, task: said_by_colour(synth_stage(rng, task)),
    "synthqd": qualified_dense,
    "synth": synth_stage,
}


def to_record(s: synth.Sample, task: str, rid: str, folder: Path) -> data.Record:
    """The sample as a validated data.Record (data.parse_record), its image written to folder/rid.png (a
    multi-image task's to folder/rid-K.png)."""
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"{rid}.png"] if len(s.images) == 1 else [f"{rid}-{k}.png" for k in range(len(s.images))]
    paths = [(folder / name).resolve() for name in names]
    for image, path in zip(s.images, paths):
        Image.fromarray(image).save(path, format="PNG", compress_level=1)
    obj = {
        "id": rid,
        "task": task,
        "images": [str(path) for path in paths],
        "question": s.question,
        "answer": s.answer,
        "reasoning": s.reasoning,
        "meta": s.meta,
    }
    return data.parse_record(obj, str(folder), rid)
