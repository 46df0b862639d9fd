"""formats.py: one reader per field format, each tested on a small file written here in that format,
and the conversion command (report, --help, one-line errors, every written record loads)."""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import data
import rewards
from data import Frame, RecordError
from geovlm import formats

ROOT = Path(__file__).resolve().parents[1]


def image(path, size=(200, 100), value=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    w, h = size
    arr = (
        np.full((h, w, 3), value, np.uint8)
        if value is not None
        else np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    )
    Image.fromarray(arr).save(path)
    return path


def rotated_enclosing(box, angle):
    """Independent check: rotate the 4 corners and take min/max."""
    x1, y1, x2, y2 = box
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    t = math.radians(angle)
    pts = [(x - cx, y - cy) for x, y in [(x1, y1), (x2, y1), (x2, y2), (x1, y2)]]
    rot = [(cx + x * math.cos(t) - y * math.sin(t), cy + x * math.sin(t) + y * math.cos(t)) for x, y in pts]
    xs, ys = [p[0] for p in rot], [p[1] for p in rot]
    return [min(xs), min(ys), max(xs), max(ys)]


def by_id(conv):
    return {r.id: r for r in conv.records}


# ----------------------------------------------------------------------------- GeoChat / EarthDial


@pytest.fixture
def geochat(tmp_path):
    image(tmp_path / "images" / "a.png", (200, 100))
    items = [
        {
            "id": "g1",
            "image": "a.png",
            "conversations": [
                {"from": "human", "value": "<image>\n[refer] Where is the ship?"},
                {"from": "gpt", "value": "{<10><20><30><40>|90}"},
                {"from": "human", "value": "[grounding] Describe the scene."},
                {
                    "from": "gpt",
                    "value": "<p>A ship</p> {<5><10><25><50>|0} near <p>a dock</p> {<60><5><90><95>|30}.",
                },
                {"from": "human", "value": "[identify] What is the object present at {<10><20><30><40>|0}"},
                {"from": "gpt", "value": "a white ship"},
                {
                    "from": "human",
                    "value": "Classify the image from the following classes: harbor, forest, desert.",
                },
                {"from": "gpt", "value": "harbor"},
                {"from": "human", "value": "Describe the image in detail."},
                {"from": "gpt", "value": "A harbor with ships."},
                {"from": "human", "value": "Is there a ship in the image?"},
                {"from": "gpt", "value": "Yes"},
                {"from": "human", "value": "[refer] Where are the ships?"},
                {"from": "gpt", "value": "{<10><20><30><40>}<delim>{<50><20><60><40>}"},
            ],
        },
        {
            "id": "g1",
            "image": "a.png",
            "conversations": [  # GeoChat repeats ids: they must stay unique
                {"from": "human", "value": "[identify] {<10><20><30><40>|45}"},
                {"from": "gpt", "value": "a ship"},
                {"from": "human", "value": "What is it?"},
                {"from": "gpt", "value": "a ship"},
            ],
        },
    ]
    path = tmp_path / "geochat.json"
    path.write_text(json.dumps(items))
    return path


def test_geochat_tasks_boxes_and_fixes(geochat):
    conv = formats.read_llava(geochat, geochat.parent / "images")
    recs = by_id(conv)
    assert len(recs) == 9 and sum(conv.skipped.values()) == 0
    g = recs["g1_0"]  # rotated 90°: the enclosing box of the rotated rectangle, θ kept in meta
    assert g.task == "grounding" and g.question == "Where is the ship?"
    assert g.answer[0] == pytest.approx([30, 10, 50, 50])
    assert g.meta["rotated_boxes"] == [[20, 20, 60, 40, 90]] and g.meta["dataset"] == "GeoChat"
    gc = recs["g1_1"]  # <p> markers stripped, phrase text kept; θ = 30 rotated and clipped
    assert gc.task == "grounded_caption" and gc.answer["caption"] == "A ship near a dock."
    assert gc.answer["boxes"][0] == pytest.approx([10, 10, 50, 50])
    expect = rotated_enclosing([120, 5, 180, 95], 30)
    expect = [max(expect[0], 0), max(expect[1], 0), min(expect[2], 200), min(expect[3], 100)]
    assert gc.answer["boxes"][1] == pytest.approx(expect, abs=0.01)
    ident = recs["g1_2"]  # the region goes to meta.region, the question holds {region}
    assert ident.task == "region_caption" and ident.question == "What is the object present at {region}"
    assert ident.meta["region"] == pytest.approx([20, 20, 60, 40]) and ident.answer == "a white ship"
    frame = Frame("pixels", (200, 100), (224, 112))  # the model sees its own resized frame, not 0-100
    assert data.question_text(ident, frame) == "What is the object present at [22, 22, 67, 45]"
    assert recs["g1_3"].task == "classification" and recs["g1_3"].answer == "harbor"
    assert recs["g1_4"].task == "caption" and recs["g1_4"].answer == ["A harbor with ships."]
    assert recs["g1_5"].task == "vqa" and recs["g1_5"].answer == "Yes"
    assert recs["g1_6"].task == "detection" and len(recs["g1_6"].answer) == 2
    lone = recs["g1_0~2"]  # a question that is only a box; its rotation kept as region_rotated
    assert lone.question == "What is in the region {region}?" and lone.meta["region_rotated"][4] == 45
    assert lone.meta["region"] == pytest.approx(rotated_enclosing([20, 20, 60, 40], 45), abs=0.01)
    assert recs["g1_1~2"].task == "vqa"
    assert conv.boxes == 7 and conv.rotated == 3 and conv.clipped == 1


def test_a_box_less_grounding_item_is_a_grounded_caption_its_own_target_wins(tmp_path):
    image(tmp_path / "a.png")
    item = {
        "id": "e",
        "image": "a.png",
        "conversations": [
            {"from": "human", "value": "[grounding] Describe the scene."},
            {"from": "gpt", "value": "An empty field."},
        ],
    }
    (tmp_path / "g.json").write_text(json.dumps([item]))
    (rec,) = formats.read_llava(tmp_path / "g.json").records
    assert rec.task == "grounded_caption" and rec.answer == {"caption": "An empty field.", "boxes": []}
    frame = Frame("pixels", (200, 100), (196, 112))
    target = f"<think>x</think><answer>{data.TASKS[rec.task].target(rec.answer, frame)}</answer>"
    assert rewards.score(rec.task, target, rec.answer, frame)["total"] == pytest.approx(2.0)
    none = rewards.score(rec.task, "<think>x</think><answer>none</answer>", rec.answer, frame)["total"]
    assert none < 2.0


def test_geochat_jsonl_and_bad_items(tmp_path):
    image(tmp_path / "a.png")
    ok = {
        "id": "x",
        "image": "a.png",
        "conversations": [{"from": "human", "value": "What is it?"}, {"from": "gpt", "value": "a port"}],
    }
    path = tmp_path / "g.jsonl"
    path.write_text(json.dumps(ok) + "\n" + json.dumps({"id": "y", "image": "a.png"}) + "\n")
    with pytest.raises(RecordError, match=rf"^{path}:2: field 'conversations' is missing"):
        formats.read_llava(path)
    conv = formats.read_llava(path, skip_bad=True)
    assert [r.id for r in conv.records] == ["x"] and conv.skipped == {"no conversations": 1}
    path.write_text(json.dumps(dict(ok, image="missing.png")) + "\n")
    with pytest.raises(RecordError, match=rf"^{path}:1: field 'images': file not found"):
        formats.read_llava(path)
    path.write_text(
        json.dumps(
            dict(
                ok,
                conversations=[
                    {"from": "human", "value": "[refer] where? {<1><1><5><5>} or {<6><6><9><9>}"},
                    {"from": "gpt", "value": "{<1><1><5><5>}"},
                ],
            )
        )
        + "\n"
    )
    conv = formats.read_llava(path)
    assert conv.records == [] and conv.skipped == {"several boxes in one question": 1}


def test_earthdial_boxes_regions_and_pairs(tmp_path):
    image(tmp_path / "img.png", (400, 400))
    image(tmp_path / "pre.png", (256, 256))
    image(tmp_path / "post.png", (256, 256))
    items = [
        {
            "id": "e1",
            "image": "img.png",
            "question": "[refer] [hr_rgb_0.5] <image> \\n Give me the location of <ref>2 white small storage "
            "tank</ref>",
            "groundtruth": "[[19, 19, 23, 23, 90]][[14, 15, 18, 19, 0]]",
        },
        {
            "id": "e2",
            "image": "img.png",
            "question": " [identify] [hr_rgb_0.5] <image> \\n what object is in this location <box>[[7, 22, "
            "14, 31, 0]]</box>",
            "groundtruth": "1 gray medium airplane at the top left",
        },
        {
            "id": "e3",
            "jpg_A": "pre.png",
            "jpg_B": "post.png",
            "question": "[hr_rgb_temp_0.5] <image> <image> \\n Describe the changes.",
            "groundtruth0": "a road was built",
            "groundtruth1": "a new road appears",
        },
        {
            "id": "e4",
            "jpg_A": "pre.png",
            "jpg_B": "post.png",
            "question": "[changedet] [hr_rgb_temp_0.5] <image> <image> \\n "
            "Analyze the images to identify the type of disaster from one of the following classes. Classes: "
            "fire, flood.",
            "groundtruth": "flood",
        },
        {
            "id": "e5",
            "image": "pre.png,post.png",
            "question": "[grounding] <image> <image> Locate the destroyed buildings.",
            "groundtruth": "[[10, 10, 20, 20, 0]]",
        },
    ]
    path = tmp_path / "earthdial.json"
    path.write_text(json.dumps(items))
    recs = by_id(formats.read_llava(path))
    e1 = recs["e1"]
    assert e1.task == "detection" and e1.question == "Give me the location of 2 white small storage tank"
    assert e1.answer == [pytest.approx([76, 76, 92, 92]), pytest.approx([56, 60, 72, 76])]
    assert e1.meta["tags"] == ["refer", "hr_rgb_0.5"] and e1.meta["rotated_boxes"] == [
        [76, 76, 92, 92, 90],
        [56, 60, 72, 76, 0],
    ]
    e2 = recs["e2"]
    assert e2.task == "region_caption" and e2.question == "what object is in this location {region}"
    assert e2.meta["region"] == pytest.approx([28, 88, 56, 124])
    e3 = recs["e3"]
    assert e3.task == "change_caption" and [Path(p).name for p in e3.images] == ["pre.png", "post.png"]
    assert e3.answer == "a road was built" and e3.meta["references"] == [
        "a road was built",
        "a new road appears",
    ]
    assert recs["e4"].task == "temporal_classification" and recs["e4"].answer == "flood"
    assert recs["e5"].task == "change_detection" and recs["e5"].answer == [
        pytest.approx([25.6, 25.6, 51.2, 51.2])
    ]


# ----------------------------------------------------------------------------- VRSBench


def test_vrsbench_caption_referring_vqa(tmp_path):
    image(tmp_path / "Images_val" / "P0003_0004.png", (512, 512))
    corner = [0.1, 0.2, 0.3, 0.1, 0.4, 0.3, 0.2, 0.4]  # a rotated quadrilateral, 0-1
    items = [
        {
            "image_id": "P0003_0004.png",
            "question": "Describe the image in detail",
            "ground_truth": "A port.",
            "question_id": 0,
            "type": "caption",
        },
        {
            "image_id": "P0003_0004.png",
            "question": "The <p>small ship</p> at the left.",
            "ground_truth": "{<10><10><40><40>}",
            "question_id": 1,
            "type": "ref",
            "obj_corner": corner,
            "obj_cls": "ship",
            "size_group": "small",
            "unique": True,
        },
        {
            "image_id": "P0003_0004.png",
            "question": "The dock.",
            "ground_truth": "{<50><50><70><60>}",
            "question_id": 2,
            "type": "ref",
        },
        {
            "image_id": "P0003_0004.png",
            "question": "How many ships are there?",
            "ground_truth": 3,
            "question_id": 3,
            "type": "object quantity",
        },
    ]
    path = tmp_path / "VRSBench_EVAL.json"
    path.write_text(json.dumps(items))
    conv = formats.read_vrsbench(path, tmp_path / "Images_val")
    cap, ref, ref2, vqa = conv.records
    assert cap.task == "caption" and cap.answer == ["A port."]
    assert ref.task == "grounding" and ref.question == "The small ship at the left."
    assert ref.answer[0] == pytest.approx([0.1 * 512, 0.1 * 512, 0.4 * 512, 0.4 * 512])
    assert ref.meta["obj_cls"] == "ship" and ref.meta["obj_corner"] == corner and conv.rotated == 1
    assert ref2.answer[0] == pytest.approx([256, 256, 358.4, 307.2])
    assert vqa.task == "vqa" and vqa.answer == "3" and vqa.meta["type"] == "object quantity"


# ----------------------------------------------------------------------------- RSVQA


def rsvqa_files(root, split="test", prefix="LR"):
    image(root / "Images_LR" / "0.tif", (256, 256))
    image(root / "Images_LR" / "1.tif", (256, 256))
    qs = {
        "questions": [
            {
                "id": 0,
                "img_id": 0,
                "type": "presence",
                "question": "Is there a road?",
                "answers_ids": [0],
                "active": True,
            },
            {
                "id": 1,
                "img_id": 0,
                "type": "count",
                "question": "How many buildings are there?",
                "answers_ids": [1],
                "active": True,
            },
            {
                "id": 2,
                "img_id": 1,
                "type": "rural_urban",
                "question": "Is it a rural or an urban area?",
                "answers_ids": [2],
                "active": True,
            },
            {
                "id": 3,
                "img_id": 1,
                "type": "comparison",
                "question": "Are there more roads than water areas?",
                "answers_ids": [3],
                "active": False,
            },
        ]
    }
    ans = {
        "answers": [
            {"id": 0, "question_id": 0, "answer": "yes", "active": True},
            {"id": 1, "question_id": 1, "answer": 12, "active": True},
            {"id": 2, "question_id": 2, "answer": "rural", "active": True},
            {"id": 3, "question_id": 3, "answer": "no", "active": True},
        ]
    }
    imgs = {
        "images": [
            {"id": 0, "questions_ids": [0, 1], "active": True},
            {"id": 1, "questions_ids": [2, 3], "active": True},
        ]
    }
    for name, obj in (("questions", qs), ("answers", ans), ("images", imgs)):
        (root / f"{prefix}_split_{split}_{name}.json").write_text(json.dumps(obj))
    return root


def test_rsvqa_triple(tmp_path):
    root = rsvqa_files(tmp_path)
    rsvqa_files(tmp_path, split="val")
    conv = formats.read_rsvqa(root, root / "Images_LR", split="test")
    assert [r.answer for r in conv.records] == ["yes", "12", "rural"]  # the numeric answer as a string
    assert [r.meta["type"] for r in conv.records] == ["presence", "count", "rural_urban"]
    assert conv.records[0].meta == {"dataset": "RSVQA-LR", "type": "presence", "split": "test"}
    assert conv.skipped == {"inactive question": 1}
    assert len(formats.read_rsvqa(root, root / "Images_LR").records) == 6  # both splits
    one = formats.read_rsvqa(root / "LR_split_val_answers.json", root / "Images_LR")  # any file of the triple
    assert {r.meta["split"] for r in one.records} == {"val"}
    (root / "LR_split_test_answers.json").write_text(json.dumps({"answers": []}))
    with pytest.raises(RecordError, match=r"LR_split_test_questions.json:item 0: field 'answers_ids'"):
        formats.read_rsvqa(root, root / "Images_LR", split="test")


# ----------------------------------------------------------------------------- DIOR-RSVG


DIOR_XML = """<annotation><filename>{name}.jpg</filename><size><width>800</width><height>800</height></size>
{objects}</annotation>"""
DIOR_OBJ = """<object><name>{cls}</name><pose>Unspecified</pose><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>
<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox><description>{desc}</description></object>"""


def test_dior_rsvg_xml_and_split(tmp_path):
    ann = tmp_path / "Annotations"
    ann.mkdir()
    for name, objs in (
        ("00002", [("vehicle", (10, 20, 50, 60), "the gray vehicle at the left")]),
        (
            "00001",
            [
                ("storagetank", (400, 500, 470, 560), "the storage tank   at the bottom"),
                ("dam", (0, 0, 100, 100), ""),
            ],
        ),
    ):
        image(tmp_path / "JPEGImages" / f"{name}.jpg", (800, 800), value=90)
        body = "".join(DIOR_OBJ.format(cls=c, b=b, desc=d) for c, b, d in objs)
        (ann / f"{name}.xml").write_text(DIOR_XML.format(name=name, objects=body))
    conv = formats.read_dior_rsvg(ann, tmp_path / "JPEGImages")
    assert [r.answer for r in conv.records] == [[[400, 500, 470, 560]], [[10, 20, 50, 60]]]
    first = conv.records[0]
    assert (
        first.task == "grounding"
        and first.question == "Locate the object described: the storage tank at the bottom"
    )
    assert first.meta["class"] == "storagetank" and conv.skipped == {"object without a description": 1}
    split = tmp_path / "test.txt"
    split.write_text("2\n")  # object indices over 00001.xml, 00002.xml in numeric order
    conv = formats.read_dior_rsvg(ann, tmp_path / "JPEGImages", split_file=str(split))
    assert [r.meta["class"] for r in conv.records] == ["vehicle"] and conv.records[0].id == "diorrsvg_2"
    (ann / "00003.xml").write_text("<annotation><object>")
    with pytest.raises(RecordError, match=r"00003.xml: bad XML"):
        formats.read_dior_rsvg(ann, tmp_path / "JPEGImages")


# ----------------------------------------------------------------------------- DOTA / NWPU


def test_dota_polygons_one_record_per_class(tmp_path):
    image(tmp_path / "images" / "P0001.png", (300, 200))
    (tmp_path / "labelTxt").mkdir()
    # crosses the right border: clipped
    (tmp_path / "labelTxt" / "P0001.txt").write_text(
        "imagesource:GoogleEarth\ngsd:0.146\n"
        "10 10 50 10 50 40 10 40 plane 0\n"
        "100 60 140 100 100 140 60 100 plane 1\n"  # a diamond: rotated
        "250 150 320 150 320 190 250 190 small-vehicle 0\n"
    )
    conv = formats.read_dota(tmp_path / "labelTxt", tmp_path / "images")
    plane, vehicle = conv.records
    assert plane.task == "detection" and plane.question == "Locate every plane in the image."
    assert plane.answer == [[10, 10, 50, 40], [60, 60, 140, 140]]
    assert plane.meta["difficult"] == 1 and plane.meta["gsd"] == 0.146 and len(plane.meta["polygons"]) == 2
    assert vehicle.question == "Locate every small vehicle in the image." and vehicle.answer == [
        [250, 150, 300, 190]
    ]
    assert conv.boxes == 3 and conv.rotated == 1 and conv.clipped == 1
    (tmp_path / "labelTxt" / "P0001.txt").write_text("10 10 50 plane\n")
    with pytest.raises(RecordError, match=r"P0001.txt:1: expected 'x1 y1 x2 y2 x3 y3 x4 y4 class difficult'"):
        formats.read_dota(tmp_path / "labelTxt", tmp_path / "images")


def test_nwpu_lines(tmp_path):
    image(tmp_path / "positive image set" / "001.jpg", (600, 400))
    gt = tmp_path / "ground truth"
    gt.mkdir()
    (gt / "001.txt").write_text("(563,278),(590,373),1\n(10, 20),(60,80),3\n\n(100,100),(150,160),1\n")
    conv = formats.read_nwpu(gt, tmp_path / "positive image set")
    assert [(r.meta["class"], r.answer) for r in conv.records] == [
        ("airplane", [[563, 278, 590, 373], [100, 100, 150, 160]]),
        ("storage tank", [[10, 20, 60, 80]]),
    ]
    assert conv.records[0].meta["dataset"] == "NWPU-VHR-10" and conv.rotated == 0
    (gt / "001.txt").write_text("(1,2),(3,4),11\n")
    with pytest.raises(RecordError, match=r"001.txt:1: class 11 is not one of NWPU VHR-10's 1-10"):
        formats.read_nwpu(gt, tmp_path / "positive image set")


# ----------------------------------------------------------------------------- LEVIR-CC


def levir_files(root):
    for split, name in (("train", "train_000001.png"), ("test", "test_000001.png")):
        for ab in "AB":
            image(root / "images" / split / ab / name, (256, 256))
    obj = {
        "images": [
            {
                "filepath": "train",
                "filename": "train_000001.png",
                "imgid": 0,
                "split": "train",
                "changeflag": 1,
                "sentences": [
                    {"raw": " a road is built along the river . ", "tokens": []},
                    {"raw": "a new road appears ."},
                ],
            },
            {
                "filepath": "test",
                "filename": "test_000001.png",
                "imgid": 1,
                "split": "test",
                "changeflag": 0,
                "sentences": [{"raw": " the scene is the same as before . "}],
            },
        ]
    }
    (root / "LevirCCcaptions.json").write_text(json.dumps(obj))
    return root / "LevirCCcaptions.json"


def test_levir_cc(tmp_path):
    path = levir_files(tmp_path)
    conv = formats.read_levir_cc(path, tmp_path / "images")
    train, test = conv.records
    assert train.task == "change_caption" and train.answer == "a road is built along the river ."
    assert train.meta["references"] == ["a road is built along the river .", "a new road appears ."]
    assert [Path(p).parent.name for p in train.images] == ["A", "B"] and train.meta["changeflag"] == 1
    assert [r.id for r in formats.read_levir_cc(path, tmp_path / "images", split="test").records] == [test.id]


# ----------------------------------------------------------------------------- the command


def run_cli(args, capsys):
    code = formats.main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def cli_input(fmt, root, geochat):
    """(--input, --images) of a small data set in format `fmt`."""
    if fmt == "geochat":
        return geochat, geochat.parent / "images"
    if fmt == "vrsbench":
        image(root / "Images_val" / "a.png", (512, 512))
        items = [
            {
                "image_id": "a.png",
                "question": "The ship.",
                "ground_truth": "{<1><1><9><9>}",
                "question_id": 0,
                "type": "ref",
                "obj_corner": [0.01, 0.01, 0.09, 0.01, 0.09, 0.09, 0.01, 0.09],
            },
            {
                "image_id": "a.png",
                "question": "Is it a port?",
                "ground_truth": "yes",
                "question_id": 1,
                "type": "object existence",
            },
        ]
        (root / "vrs.json").write_text(json.dumps(items))
        return root / "vrs.json", root / "Images_val"
    if fmt == "rsvqa":
        rsvqa_files(root)
        return root, root / "Images_LR"
    if fmt == "dior-rsvg":
        (root / "Annotations").mkdir()
        image(root / "JPEGImages" / "00001.jpg", (800, 800))
        obj = DIOR_OBJ.format(cls="ship", b=(1, 2, 30, 40), desc="the ship on the left")
        (root / "Annotations" / "00001.xml").write_text(DIOR_XML.format(name="00001", objects=obj))
        return root / "Annotations", root / "JPEGImages"
    if fmt == "dota":
        image(root / "images" / "P1.png", (100, 100))
        (root / "labelTxt").mkdir()
        (root / "labelTxt" / "P1.txt").write_text(
            "1 1 20 1 20 20 1 20 ship 0\n5 50 30 40 40 60 15 70 plane 0\n"
        )
        return root / "labelTxt", root / "images"
    if fmt == "nwpu":
        image(root / "positive image set" / "001.jpg", (100, 100))
        (root / "ground truth").mkdir()
        (root / "ground truth" / "001.txt").write_text("(1,2),(30,40),2\n")
        return root / "ground truth", root / "positive image set"
    path = levir_files(root)
    return path, root / "images"


@pytest.mark.parametrize("fmt", ["geochat", "vrsbench", "rsvqa", "dior-rsvg", "dota", "nwpu", "levir-cc"])
def test_cli_writes_loadable_records(tmp_path, capsys, geochat, fmt):
    inp, imgs = cli_input(fmt, tmp_path, geochat)
    out = tmp_path / "out" / f"{fmt}.jsonl"
    code, stdout, err = run_cli(["--format", fmt, "--input", inp, "--images", imgs, "--out", out], capsys)
    assert code == 0 and err == ""
    recs = data.load_records(out)  # every written record passes validation
    kept = int(stdout.split("kept ")[1].split()[0])
    assert len(recs) == kept > 0 and "converted" in stdout and "skipped" in stdout
    assert all(
        not Path(p).is_absolute() for line in out.read_text().splitlines() for p in json.loads(line)["images"]
    )
    code, _, err = run_cli(["--format", fmt, "--input", inp, "--images", imgs, "--out", out], capsys)
    assert code == 2 and "--force" in err  # an existing output is kept


def test_cli_report_counts_skips(tmp_path, capsys):
    root = rsvqa_files(tmp_path)
    code, stdout, _ = run_cli(
        [
            "--format",
            "rsvqa",
            "--input",
            root,
            "--images",
            root / "Images_LR",
            "--split",
            "test",
            "--out",
            tmp_path / "o.jsonl",
        ],
        capsys,
    )
    assert code == 0
    assert stdout.startswith("kept 3 record(s), converted 0 box(es)")
    assert (
        "skipped 1: 1 inactive question (first: " in stdout
        and "LR_split_test_questions.json:item 3" in stdout
    )


def test_cli_bands_go_to_meta(tmp_path, capsys):
    tifffile = pytest.importorskip("tifffile")
    (tmp_path / "img").mkdir()
    tifffile.imwrite(
        tmp_path / "img" / "s.tif",
        np.random.default_rng(0).integers(0, 9000, (4, 32, 32)).astype(np.uint16),
        photometric="minisblack",
        planarconfig="separate",
    )
    item = {"id": "s", "image": "s.tif", "question": "What is this?", "ground_truth": "farmland"}
    (tmp_path / "s.json").write_text(json.dumps([item]))
    args = [
        "--format",
        "llava",
        "--input",
        tmp_path / "s.json",
        "--images",
        tmp_path / "img",
        "--bands",
        "4,3,2",
        "--nodata",
        "0",
    ]
    code, _, _ = run_cli([*args, "--out", tmp_path / "s.jsonl"], capsys)
    assert code == 0
    rec = data.load_records(tmp_path / "s.jsonl")[0]
    assert rec.meta["bands"] == [4, 3, 2] and rec.meta["nodata"] == 0.0
    code, _, err = run_cli([*args[:-4], "--bands", "5,3,2", "--out", tmp_path / "t.jsonl"], capsys)
    assert code == 1 and "field 'meta.bands': band 5 requested" in err and "s.json:item 0" in err


def test_cli_bad_input_is_one_line_without_traceback(tmp_path):
    image(tmp_path / "a.png")
    (tmp_path / "g.json").write_text(
        json.dumps(
            [
                {
                    "id": 1,
                    "image": "a.png",
                    "conversations": [{"from": "human", "value": "What?"}, {"from": "gpt", "value": "x"}],
                },
                {"id": 2, "conversations": []},
            ]
        )
    )
    cmd = [
        sys.executable,
        "-m",
        "geovlm.formats",
        "--format",
        "geochat",
        "--input",
        str(tmp_path / "g.json"),
        "--out",
        str(tmp_path / "o.jsonl"),
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert res.returncode == 1 and "Traceback" not in res.stderr
    first = res.stderr.splitlines()[0]
    assert first.startswith("formats.py: error: ") and "g.json:item 1: field 'image'" in first
    assert not (tmp_path / "o.jsonl").exists()
    res = subprocess.run([*cmd, "--skip-bad"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert res.returncode == 0 and "kept 1 record(s)" in res.stdout and "1 no image field" in res.stdout
    res = subprocess.run(
        [*cmd[:6], str(tmp_path / "nope.json"), *cmd[7:]],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert (
        res.returncode == 2
        and res.stderr.strip()
        == f"formats.py: error: --input {tmp_path / 'nope.json'}: no such file or folder"
    )


def test_help_is_complete(capsys):
    with pytest.raises(SystemExit):
        formats.main(["--help"])
    text = capsys.readouterr().out
    for flag in (
        "--format",
        "--input",
        "--images",
        "--out",
        "--split",
        "--split-file",
        "--dataset",
        "--skip-bad",
        "--force",
        "--bands",
        "--stretch",
        "--nodata",
    ):
        assert flag in text
    for action in formats.build_parser()._actions:
        if action.dest != "help":
            assert action.help and ("default" in action.help or "required" in action.help), action.dest
    for name in formats.FORMATS:
        assert f"  {name}" in text
