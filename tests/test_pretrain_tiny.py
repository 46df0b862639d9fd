"""scripts/pretrain_tiny.py and embedded/curriculum.py: the curriculum's scenes hold what their records
claim (checked from the pixels), streams are seeded and never repeat, the recipe's first steps learn and
log, and a rerun resumes its stages."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def C():
    from embedded import curriculum

    return curriculum


@pytest.fixture(scope="module")
def P(pretrain_tiny):
    return pretrain_tiny


def _colours(pixels: np.ndarray) -> list[list[int]]:
    """The distinct [r, g, b] of RGB pixels, sorted: np.unique(axis=0).tolist() without its slow row sort
    (2 s of these tests' 3 s)."""
    packed = np.unique(pixels.reshape(-1, 3).astype(np.int64) @ np.array([65536, 256, 1]))
    return [[int(v) >> 16, int(v) >> 8 & 255, int(v) & 255] for v in packed]


def _cell(box: list, w: int, h: int) -> str:
    from embedded import synth

    return synth._AT[synth._cell((box[0] + box[2]) / 2, (box[1] + box[3]) / 2, w, h)]


@pytest.mark.parametrize(
    "stage",
    [
        "fixedq",
        "fixed1",
        "flat1",
        "flatmix",
        "classmix1",
        "classmix",
        "synthu",
        "synthuc",
        "synthc",
        "synthqd",
        "synth",
    ],
)
def test_stage_records_hold_what_they_claim(C, stage):
    from embedded import synth

    distractors, kinds = [], set()
    for i in range(24):
        task = ("grounding", "detection")[i % 2]
        s = C.BUILDERS[stage](np.random.default_rng([5, 1000, i]), task)
        img, cls = s.images[0], s.meta["class"]
        h, w = img.shape[:2]
        found = synth.find_objects(img)  # every object, recovered from the pixels alone
        mine = [b for c, b in found if c == cls]
        if stage == "classmix1":
            assert len(found) - len(mine) == 1  # one distractor, at any size
        if stage in ("fixedq", "fixed1", "classmix1"):
            assert img.shape == (C.FIXED_SIDE, C.FIXED_SIDE, 3)
        if stage in ("fixedq", "fixed1", "flat1"):
            assert len(found) == 1 and found[0][0] == cls
            assert len(_colours(img[~synth.object_mask(img)])) <= 2  # flat: ground+shadow
        qualified = s.meta["type"] != "unique" and task == "grounding"
        kinds.add((task, qualified))
        colour_said = stage in ("classmix1", "classmix", "synthuc") or (
            stage in ("synthc", "synthqd") and not qualified
        )
        if stage == "synthqd" and qualified:  # every object of the class by cell, in position order, then one
            listed, picked = s.reasoning.split(": ", 1)[1].split("; ")
            by_position = sorted(mine, key=lambda b: (b[1], b[0]))
            assert listed.split(", ") == [f"one {_cell(b, w, h)}" for b in by_position] and len(mine) >= 2
            assert picked == f"the {s.meta['type']} one lies {_cell(s.answer[0], w, h)}."
            assert f"the {s.meta['type']} {cls}" in s.question
        if stage == "synthc" and qualified:  # synth's wording: "Of the three ships, the leftmost one lies"
            assert s.reasoning.startswith("Of the ") and f"the {s.meta['type']} one lies " in s.reasoning
        if colour_said and task == "grounding":  # classmixl's reasoning, the cell kept from synth's
            assert s.reasoning.startswith(f"The {synth.COLOUR_WORD[cls]} object lies ")
            assert "only" not in s.reasoning
        if stage == "flatmix":
            distractors.append(len(found) - len(mine))  # objects of the other classes
            assert distractors[-1] <= 4
        if task == "grounding":
            assert s.answer[0] in mine and _cell(s.answer[0], w, h) in s.reasoning
            if stage not in ("synth", "synthc", "synthqd"):
                assert mine == s.answer  # the asked class is unique there
        else:
            assert sorted(map(tuple, mine)) == sorted(map(tuple, s.answer))
            cells = (
                s.reasoning.split(": ", 1)[1].split(";")[0].split(", ")
            )  # dense: each box's cell, in order
            assert cells == [f"one {_cell(b, w, h)}" for b in s.answer]
    if stage in ("synth", "synthc", "synthqd"):
        assert ("grounding", True) in kinds and ("grounding", False) in kinds  # both halves were checked
    if stage == "flatmix":
        assert np.mean([d >= 1 for d in distractors]) >= 0.8 and max(distractors) >= 2
    again = C.BUILDERS[stage](np.random.default_rng([5, 1000, 23]), "detection")
    assert again.answer == s.answer and np.array_equal(again.images[0], s.images[0])  # seeded


@pytest.mark.parametrize(
    "stage", ["fixed1l", "fixedmixl", "fixedmixlg", "colourmixl", "colourmixlg", "classmixl", "colourmix01l"]
)
def test_large_and_colour_stages_hold_what_they_claim(C, stage):
    """The large-object stages draw every object at its class's largest size; the colour stages ask for the
    target by its colour beside exactly one (colourmixl) or at most one (colourmix01l) distractor; the g
    stages lie on the probe's grey, the others on a random ground."""
    from embedded import synth

    others = []
    for i in range(24):
        s = C.BUILDERS[stage](np.random.default_rng([5, 1000, i]), "grounding")
        cls, img = s.meta["class"], s.images[0]
        found = synth.find_objects(img)  # recovered from the pixels alone
        assert img.shape == (C.FIXED_SIDE, C.FIXED_SIDE, 3)
        assert s.answer[0] in [b for c, b in found if c == cls]
        ground = _colours(img[~synth.object_mask(img)])
        assert ([C.GREY] * 3 in ground) == stage.endswith("g"), ground  # ground (and its shadow)
        for c, (x1, y1, x2, y2) in found:
            lo = list(synth._SIZES[c].values())[-1][0]  # the largest size's lower bound
            side = max(x2 - x1, y2 - y1)
            if c in ("airplane", "ship", "vehicle"):  # a length: these may lie along a diagonal
                side = max(side, np.hypot(x2 - x1, y2 - y1) - 4)
            assert side >= lo - 2, (c, x2 - x1, y2 - y1)
        others.append(len(found) - 1)
        if stage.startswith(("colour", "class")):
            assert len({c for c, _ in found}) == len(found)  # the colour (or class) names one object
            assert s.reasoning.startswith(f"The {synth.COLOUR_WORD[cls]} object lies ")
        if stage.startswith("colour"):
            assert s.question == f"Where is the {synth.COLOUR_WORD[cls]} object?"
        if stage == "classmixl":
            assert cls in s.question and synth.COLOUR_WORD[cls] not in s.question
    if stage == "classmixl":  # its detection records: every large object of the asked class, among others
        s = C.BUILDERS[stage](np.random.default_rng([5, 1000, 0]), "detection")
        found = synth.find_objects(s.images[0])
        assert sorted(s.answer) == sorted(b for c, b in found if c == s.meta["class"])
        assert len(found) > len(s.answer)
    if stage == "fixed1l":
        assert set(others) == {0}
    elif stage in ("colourmixl", "colourmixlg", "classmixl"):
        assert set(others) == {1}
    elif stage == "colourmix01l":
        assert set(others) == {0, 1}
    else:
        assert min(others) >= 1


def test_square_is_the_probe(C):
    for i in range(10):
        s = C.square(np.random.default_rng([0, 1000, i]), "detection")  # grounding whatever the task
        img = s.images[0]
        red = np.argwhere((img[..., 0] > 200) & (img[..., 1] < 80))
        (y1, x1), (y2, x2) = red.min(0), red.max(0)
        assert s.answer == [[int(x1), int(y1), int(x2) + 1, int(y2) + 1]] and x2 - x1 + 1 == 56
        assert s.question == "Where is the red square?" and _cell(s.answer[0], 224, 224) in s.reasoning


def test_streams_are_disjoint_from_the_held_out_seed(P, tmp_path):
    train = P.stream_records("synth", 2, 0, 0, 6, ("grounding", "detection"), tmp_path / "s")
    answers = [r.answer for r in train]
    held = P.held_out(90210, 3, tmp_path / "h")
    assert [r.task for r in held] == ["grounding"] * 3 + ["detection"] * 3
    assert not any(r.answer in answers for r in held)
    later = P.stream_records("synth", 2, 0, 6, 6, ("grounding", "detection"), tmp_path / "s")
    assert [r.answer for r in later] != answers  # the stream moves on: no sample twice


def test_said_cell_reads_the_reasoning(P):
    assert (
        P.said_cell("<think>The only red ship lies in the top left.</think><answer>[1]</answer>")
        == "top left"
    )
    assert P.said_cell("<think>x</think><answer>in the centre</answer>") is None
    assert P.said_cell("<think>Of two, the leftmost lies on the left, not at the top</think>") == "left"


def test_first_steps_learn_log_and_resume(P, tiny_dir, tmp_path):
    import data
    import model as M
    import train_sft
    from geovlm.distributed import Dist

    # the recipe's loss on one fixed batch of its stream falls under its own optimiser step
    loaded = M.load(tiny_dir, device="cpu")
    recs = P.stream_records("flat1", 0, 0, 0, 4, ("grounding", "detection"), tmp_path / "fixed")
    batch = data.collate_sft(recs, loaded.processor, loaded.frame_kind)
    opt = torch.optim.AdamW(loaded.model.parameters(), lr=2e-3)
    env = Dist(0, 1, 0, torch.device("cpu"))
    losses = [train_sft.train_step(loaded.model, opt, [batch], env, 1.0, s)[0] for s in range(8)]
    assert losses[-1] < losses[0] - 0.5, losses

    out = tmp_path / "run"
    common = [
        "--out",
        str(out),
        "--base-model",
        tiny_dir,
        "--eval-records",
        "2",
        "--blind-records",
        "20",
        "--batch-size",
        "2",
        "--max-new-tokens",
        "8",
    ]
    first = P.main([*common, "--stages", "flat1:3"])
    rows = [json.loads(line) for line in open(out / "log.jsonl")]
    steps = [r for r in rows if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2, 3] and all(np.isfinite(r["loss"]) for r in steps)
    assert first["stages"][0]["samples"] == 6 and "own_grounding" in first["stages"][0]["eval"]
    assert (out / "stage-0-flat1" / "done.json").exists()
    # the next rung resumes: stage 0 is not trained again, stage 1 starts from its weights; a launch of it
    # killed after its first step (before the stage's first checkpoint) left a row, which the rerun replaces
    kept = (out / "log.jsonl").read_text()
    killed = {"stage": "synth", "stage_index": 1, "step": 1, "global_step": 4, "loss": 9.9}
    (out / "log.jsonl").write_text(kept + json.dumps(killed) + "\n")
    second = P.main([*common, "--stages", "flat1:3,synth:2"])
    assert (out / "log.jsonl").read_text().startswith(kept)
    rows = [json.loads(line) for line in open(out / "log.jsonl")]
    assert [(r["stage"], r["step"]) for r in rows if "loss" in r] == [("flat1", s) for s in (1, 2, 3)] + [
        ("synth", 1),
        ("synth", 2),
    ]
    assert [s["stage"] for s in second["stages"]] == ["flat1", "synth"]
    # each launch's commit is kept, so a rung's figures name the code that made them
    commits = json.loads((out / "recipe.json").read_text())["commits"]
    assert len(commits) == 2 and all(c and not c.startswith("unknown") for c in commits)
    whole = (out / "log.jsonl").read_text()
    P.main([*common, "--stages", "flat1:3"])  # the first rung again: all done, nothing trained, nothing lost
    assert (out / "log.jsonl").read_text() == whole
    with pytest.raises(SystemExit, match="another recipe"):
        P.main([*common, "--stages", "flatmix:3"])


def test_a_stage_stopped_part_way_resumes_from_its_checkpoint_with_the_unstopped_losses(
    P, tiny_dir, tmp_path, monkeypatch, capsys
):
    import train_sft
    from geovlm import run

    common = [
        *("--base-model", tiny_dir, "--eval-records", "2", "--blind-records", "20", "--batch-size", "2"),
        *("--max-new-tokens", "8", "--stages", "flat1:4", "--save-every", "2"),
    ]
    monkeypatch.setattr(run, "_INTERRUPTED", [])  # the Ctrl-C below must not outlive this test
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    real_step = train_sft.train_step

    def launch(out: Path, at_step: int | None = None, then=None, extra: tuple = ()) -> dict:
        calls = []

        def step(*a, **k):
            calls.append(1)
            if len(calls) == at_step:
                then()
            return real_step(*a, **k)

        monkeypatch.setattr(train_sft, "train_step", step if at_step else real_step)
        try:
            return P.main(["--out", str(out), *common, *extra])
        finally:  # each launch is a new process: the signal handlers and the flag start afresh
            for s, h in handlers.items():
                signal.signal(s, h)
            run._INTERRUPTED.clear()

    def rows(out: Path) -> list[tuple]:
        lines = [json.loads(line) for line in open(out / "log.jsonl")]
        return [(r["global_step"], r["loss"], r["grad_norm"], r["lr"]) for r in lines if "loss" in r]

    whole = launch(tmp_path / "whole")
    assert not (tmp_path / "whole" / "partial").exists()  # a finished stage leaves no checkpoint behind

    out, ckpts = tmp_path / "stopped", tmp_path / "stopped" / "partial" / "stage-0-flat1" / "checkpoints"

    def die():  # a kill in step 4: nothing saved past the periodic checkpoint of step 2
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        launch(out, at_step=4, then=die)
    assert [d.name for d in ckpts.iterdir()] == ["step-000002"]
    # Ctrl-C in the resumed launch's first step (step 3): the step ends, is saved, and the run stops
    with pytest.raises(SystemExit) as stop:
        launch(out, at_step=1, then=lambda: os.kill(os.getpid(), signal.SIGINT))
    assert stop.value.code == 130
    assert "stopped in stage 0 (flat1) after step 3 of 4" in capsys.readouterr().out
    assert [d.name for d in ckpts.iterdir()] == ["step-000003"]
    assert [r[0] for r in rows(out)] == [1, 2, 3]
    # a launch of the stage on another schedule is refused before anything is written; the checkpoint stays
    recipe = (out / "recipe.json").read_text()
    with pytest.raises(SystemExit, match="stopped at step 3 of 4 steps of grounding"):
        launch(out, extra=("--stages", "flat1:6"))
    assert (out / "recipe.json").read_text() == recipe and (ckpts / "step-000003").is_dir()
    resumed = launch(out)
    assert "resuming from" in capsys.readouterr().out
    # the same losses, gradient norms and rates to the last bit, and the same held-out scores as unstopped
    assert rows(out) == rows(tmp_path / "whole") and len(rows(out)) == 4
    assert resumed["stages"][0]["eval"] == whole["stages"][0]["eval"]
    assert not (out / "partial").exists()


def test_the_text_first_template_puts_each_turn_s_text_before_its_images():
    from jinja2 import Template

    from embedded import tiny

    content = [{"type": "image", "image": "a.png"}, {"type": "text", "text": "Where?"}]
    turn = [{"role": "user", "content": content}]
    image_first, text_first = (
        Template(t).render(messages=turn, add_generation_prompt=True)
        for t in (tiny.CHAT_TEMPLATE, tiny.TEXT_FIRST_CHAT_TEMPLATE)
    )
    pad = "<|vision_start|><|image_pad|><|vision_end|>"
    assert f"user\n{pad}Where?<|im_end|>" in image_first
    assert f"user\nWhere?{pad}<|im_end|>" in text_first
    assert image_first.replace(pad, "") == text_first.replace(pad, "")  # only the order differs


def test_two_square_stages(C):
    """square2: two full-colour squares, the asked one answered; square2red: red always asked; square2fade:
    the other square on the line from the grey to its colour; square2rb: red and blue only."""
    strengths = []
    for stage in ("square2", "square2red", "square2fade", "square2rb", "square2rbg"):
        for i in range(12):
            s = C.BUILDERS[stage](np.random.default_rng([5, 1000, i]), "grounding")
            img, (x1, y1, x2, y2) = s.images[0], s.answer[0]
            asked = s.question.split()[3]
            assert (img[y1:y2, x1:x2] == C.SQUARE_COLOURS[asked]).all() and x2 - x1 == 56
            rest = img.copy()
            rest[y1:y2, x1:x2] = C.GREY
            colours = _colours(rest)
            other = [c for c in colours if c != [C.GREY] * 3]
            assert len(other) <= 1 and (stage == "square2fade" or len(other) == 1)
            assert stage != "square2red" or asked == "red"
            rb = {tuple(C.SQUARE_COLOURS[c]) for c in ("red", "blue")}
            assert stage != "square2rb" or (asked in ("red", "blue") and tuple(other[0]) in rb)
            yellow = list(C.SQUARE_COLOURS["yellow"])
            assert stage != "square2rbg" or (asked != "yellow" and other[0] != yellow)
            if stage == "square2fade" and other:
                full = [np.array(v) for k, v in C.SQUARE_COLOURS.items() if k != asked]
                t = [(np.array(other[0]) - C.GREY) / (f - C.GREY) for f in full]
                strengths += [float(np.median(v)) for v in t if np.allclose(v, np.median(v), atol=0.02)]
            elif other:
                assert tuple(other[0]) in map(tuple, C.SQUARE_COLOURS.values()) and other[0] != list(
                    C.SQUARE_COLOURS[asked]
                )
    assert len(strengths) >= 10 and min(strengths) < 0.4 and max(strengths) > 0.6


def test_square2p_asks_presence_by_colour(C):
    answers = []
    for i in range(40):
        rng = lambda i=i: np.random.default_rng([5, 1000, i])  # noqa: E731
        s = C.square2p(rng(), "vqa")
        asked = s.question.split()[3]
        shown = {tuple(v) for v in _colours(s.images[0])}
        assert s.answer == ("yes" if tuple(C.SQUARE_COLOURS[asked]) in shown else "no")
        assert s.meta["type"] == "presence" and ("no" in s.reasoning.split()) == (s.answer == "no")
        answers.append(s.answer)
        g = C.square2p(rng(), "grounding")
        assert np.array_equal(g.images[0], C.square2(rng(), "grounding").images[0])
    assert 12 <= answers.count("yes") <= 28


def test_flag_mistakes_are_one_line_before_anything_is_built(P, tmp_path, capsys):
    for flags, said in (
        (["--stages", "square:10:vqa"], "stage square does not make vqa records"),
        (["--stages", "square2p:10:vqa+grounding", "--mrope-section", "4,6"], "three counts that sum to 16"),
        (["--stages", "square:10", "--lm-width", "100"], "a multiple of 32"),
    ):
        with pytest.raises(SystemExit):
            P.parse_args(["--out", str(tmp_path / "run"), *flags])
        assert said in capsys.readouterr().err
    args = P.parse_args(
        ["--out", str(tmp_path / "run"), "--stages", "square2p:10:vqa", "--mrope-section", "2, 4, 10"]
    )
    assert args.mrope == (2, 4, 10) and args.mrope_section == "2,4,10"  # resumes a run written "2,4,10"
    assert not (tmp_path / "run").exists()


def test_held_out_grounding_is_scored_per_half_unique_and_qualified(P, tmp_path, monkeypatch):
    records = [r for r in P.held_out(90210, 12, tmp_path / "held") if r.task == "grounding"]
    unique = [r.meta["type"] == "unique" for r in records]
    assert 0 < sum(unique) < len(records)  # both halves are held out

    from embedded import synth
    from geovlm.parsing import box_iou

    def another(r):
        """An object of the asked class that the qualifier does not pick, recovered from the pixels."""
        found = synth.find_objects(np.asarray(Image.open(r.images[0]).convert("RGB")), r.meta["class"])
        return next(b for _, b in found if box_iou(b, r.answer[0]) < 0.5)

    qualified = [r for r in records if r.meta["type"] != "unique"]
    wrong = {r.id for r in qualified[: len(qualified) // 2]}  # the wrong one of the class, else nowhere

    def generate(net, processor, frame_kind, records, max_new_tokens, device):
        """Right boxes on the unique half; on the qualified half another object of the class, or a corner."""
        boxes = [
            r.answer[0][:4] if r.meta["type"] == "unique" else another(r) if r.id in wrong else [0, 0, 2, 2]
            for r in records
        ]
        texts = [f"<think>.</think><answer>{[round(v) for v in b]}</answer>" for b in boxes]
        return texts, [None] * len(records)

    monkeypatch.setattr(P.E, "generate", generate)
    g = P.evaluate(None, None, "qwen2.5-vl", records, 64)["grounding"]
    assert g["unique_acc@0.5"] == 1.0 and g["qualified_acc@0.5"] == 0.0
    assert g["acc@0.5"] == pytest.approx(np.mean(unique)) and g["unique_mean_iou"] > 0.9
    assert 0 < len(wrong) < len(qualified) and g["qualified_other@0.5"] == len(wrong) / len(qualified)


def test_held_out_detection_counts_the_boxes_given_against_the_objects(P, tmp_path, monkeypatch):
    records = [r for r in P.held_out(90210, 12, tmp_path / "held") if r.task == "detection"]

    def generate(net, processor, frame_kind, records, max_new_tokens, device):
        """The first object's box alone: one box whatever the count."""
        texts = [f"<think>.</think><answer>[{[round(v) for v in r.answer[0]]}]</answer>" for r in records]
        return texts, [None] * len(records)

    monkeypatch.setattr(P.E, "generate", generate)
    d = P.evaluate(None, None, "qwen2.5-vl", records, 64)["detection"]
    assert d["boxes_per_record"] == 1.0 and d["precision@0.5"] == 1.0
    assert d["objects_per_record"] == np.mean([len(r.answer) for r in records]) > 1


def test_a_stage_of_no_steps_evaluates_the_base_model_unchanged(P, tiny_dir, tmp_path):
    from safetensors.torch import load_file

    out = tmp_path / "e"
    flags = ["--eval-records", "2", "--blind-records", "20", "--max-new-tokens", "8", "--tasks", "grounding"]
    results = P.main(["--out", str(out), "--base-model", tiny_dir, "--stages", "synthc:0", *flags])
    stage = results["stages"][0]
    assert stage["steps"] == 0 and {"grounding", "own_grounding"} <= set(stage["eval"])
    base = load_file(Path(tiny_dir) / "model.safetensors")
    kept = load_file(out / "stage-0-synthc" / "model.safetensors")
    assert base.keys() == kept.keys() and all(torch.equal(base[k], kept[k]) for k in base)


def test_a_stage_of_every_task_streams_each_task_with_all_its_images(P, tmp_path):
    """synthuc:N:grounding+all: grounding drawn twice as often, every synth task in the round-robin, the
    multi-image tasks' records with each of their images written (the embedded start's last link)."""
    from embedded import synth

    ((_, steps, tasks),) = P.parse_args(
        ["--out", str(tmp_path / "run"), "--stages", "synthuc:3:grounding+all"]
    ).stage_list
    assert steps == 3 and tasks == ("grounding", *synth.BUILDERS) and len(set(tasks)) == 12
    records = P.stream_records("synthuc", 0, 0, 0, len(tasks), tasks, tmp_path / "stream")
    assert [r.task for r in records] == list(tasks)
    images = [Path(p) for r in records for p in r.images]
    assert any(len(r.images) > 1 for r in records) and len(set(images)) == len(images)
    assert all(p.exists() for p in images)
    two = next(r for r in records if r.task == "change_detection")
    assert not np.array_equal(*(np.asarray(Image.open(p)) for p in two.images[:2]))  # before and after differ


def test_synthucd_names_the_cell_of_each_counted_and_changed_object(C):
    """synthucd is synthuc with counting's and change detection's reasoning dense: each object of the counted
    class (found in the pixels) by cell in position order, and each changed box's cell in answer order."""
    from embedded import synth

    for i in range(16):
        rng = lambda i=i: np.random.default_rng([6, 1000, i])  # noqa: E731
        s, plain = C.BUILDERS["synthucd"](rng(), "counting"), C.BUILDERS["synthuc"](rng(), "counting")
        assert np.array_equal(s.images[0], plain.images[0]) and s.answer == plain.answer  # the same draws
        h, w = s.images[0].shape[:2]
        mine = sorted(
            (b for c, b in synth.find_objects(s.images[0]) if c == s.meta["class"]),
            key=lambda b: (b[1], b[0]),
        )
        assert len(mine) == s.answer
        if mine:
            listed, count = s.reasoning.split(": ", 1)[1].split("; ")
            assert listed.split(", ") == [f"one {_cell(b, w, h)}" for b in mine]
            assert count == f"I count {synth._NUM[s.answer]}."
        else:
            assert s.reasoning == plain.reasoning
        s, plain = (
            C.BUILDERS["synthucd"](rng(), "change_detection"),
            C.BUILDERS["synthuc"](rng(), "change_detection"),
        )
        assert s.answer == plain.answer and s.reasoning.startswith(plain.reasoning[:-1] + ": ")
        h, w = s.images[0].shape[:2]
        tail = s.reasoning.removeprefix(plain.reasoning.removesuffix(".") + ": ")
        cells = tail.removesuffix("; each gets its own box.").split(", ")
        assert cells == [f"one {_cell(b, w, h)}" for b in s.answer] and len(cells) == len(s.answer) >= 1
        for task in ("grounding", "detection", "vqa"):  # the rest as synthuc's
            assert (
                C.BUILDERS["synthucd"](rng(), task).reasoning == C.BUILDERS["synthuc"](rng(), task).reasoning
            )


def test_changesq_boxes_what_only_one_image_holds(C):
    """changesq: the squares found in the pixels of the two images; the answer is those only one image holds,
    in position order, and the reasoning counts the appeared and disappeared ones and names each one's cell;
    the other tasks are synthucd's records."""
    from scipy import ndimage

    from embedded import synth

    def squares(img):
        labels, _ = ndimage.label((img != C.GREY).any(axis=2))
        return {(s[1].start, s[0].start, s[1].stop, s[0].stop) for s in ndimage.find_objects(labels)}

    seen = set()
    for i in range(24):
        s = C.BUILDERS["changesq"](np.random.default_rng([7, 1000, i]), "change_detection")
        before, after = (squares(img) for img in s.images)
        assert all(x2 - x1 == y2 - y1 == 56 for x1, y1, x2, y2 in before | after)
        changed = sorted(before ^ after, key=lambda b: (b[1], b[0]))
        assert [tuple(b) for b in s.answer] == changed and 1 <= len(changed) <= 3 and len(before & after) <= 2
        n_add = len(after - before)
        head, tail = s.reasoning.rsplit(": ", 1)
        assert head == (
            f"{synth._cap(synth._NUM[len(changed)])} objects differ: {synth._NUM[n_add]} appeared and "
            f"{synth._NUM[len(changed) - n_add]} disappeared"
        )
        cells = tail.removesuffix("; each gets its own box.").split(", ")
        assert cells == [f"one {_cell(b, C.FIXED_SIDE, C.FIXED_SIDE)}" for b in changed]
        assert s.question in synth.CHANGE_DETECTION_QUESTIONS
        seen.add((n_add > 0, n_add < len(changed), len(before & after)))
    assert len(seen) >= 6  # appeared, disappeared and both, with 0-2 squares kept
    for i in range(300):  # five squares can reach a placement with no room left: it must start over
        assert (
            1
            <= len(C.BUILDERS["changesq"](np.random.default_rng([0, 1000, i]), "change_detection").answer)
            <= 3
        )
    rng = lambda: np.random.default_rng([7, 1000, 99])  # noqa: E731
    for task in ("counting", "detection", "vqa"):
        a, b = C.BUILDERS["changesq"](rng(), task), C.BUILDERS["synthucd"](rng(), task)
        assert a.reasoning == b.reasoning and a.answer == b.answer
