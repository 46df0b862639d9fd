"""geovlm/layouts.py: each reader on a tiny fake copy of its official layout (tests/fake_suite.py), and the
one-line errors (file:line / file:feature N and the field) or counted skips for bad input."""

import json

import fake_suite
import numpy as np
import pytest
from PIL import Image

from geovlm import layouts
from geovlm.tasks import RecordError


def by_id(conv):
    return {r.id: r for r in conv.records}


def test_scene_folders_labels_question_and_split(tmp_path):
    root = fake_suite.scene_folders(tmp_path / "AID", ("BareLand", "Forest", "baseball_diamond"), per_class=2)
    conv = layouts.read_scene_folders(root)
    assert len(conv.records) == 6 and {r.task for r in conv.records} == {"classification"}
    assert sorted({r.answer for r in conv.records}) == ["bare land", "baseball diamond", "forest"]
    q = conv.records[0].question
    assert "Classes: bare land, baseball diamond, forest." in q
    assert {r.meta["dataset"] for r in conv.records} == {"AID"}
    split = tmp_path / "test.txt"
    split.write_text("forest_1.jpg\nbareland_0\n")
    kept = layouts.read_scene_folders(root, split_file=str(split))
    assert sorted(r.answer for r in kept.records) == ["bare land", "forest"]


def test_scene_folders_errors_are_one_line(tmp_path):
    with pytest.raises(RecordError, match=r"nowhere: no such folder"):
        layouts.read_scene_folders(tmp_path / "nowhere")
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    with pytest.raises(RecordError, match=r"no class folders holding images"):
        layouts.read_scene_folders(tmp_path / "empty")
    root = fake_suite.scene_folders(tmp_path / "S", ("A", "B"), per_class=1)
    bad = root / "B" / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(RecordError, match=rf"^{bad}: field 'images': unreadable image"):
        layouts.read_scene_folders(root)
    conv = layouts.read_scene_folders(root, skip_bad=True)
    assert len(conv.records) == 2 and conv.skipped == {"unreadable image": 1}


def test_bigearthnet_split_labels_and_composed_rgb(tmp_path):
    root = fake_suite.bigearthnet(tmp_path / "BigEarthNet-v1.0")
    conv = layouts.read_bigearthnet(root, split_file=str(root / "test.csv"), rgb_dir=str(tmp_path / "rgb"))
    recs = by_id(conv)
    assert sorted(recs) == ["bigearthnet_S2A_p1", "bigearthnet_S2A_p2"]  # S2B_p3 is not in test.csv
    r = recs["bigearthnet_S2A_p1"]
    assert r.task == "multilabel" and r.answer == ["Coniferous forest", "Water bodies"]
    assert "Classes: Coniferous forest, Pastures, Water bodies." in r.question  # the split's labels only
    rgb = np.asarray(Image.open(r.images[0]))
    assert r.images[0] == str(tmp_path / "rgb" / "S2A_p1.png") and rgb.shape == (40, 40, 3)
    assert rgb.min() == 0 and rgb.max() == 255  # each band stretched 2-98 %
    assert len(layouts.read_bigearthnet(root, rgb_dir=str(tmp_path / "rgb")).records) == 3  # no split: all


def test_bigearthnet_bad_labels(tmp_path):
    root = fake_suite.bigearthnet(tmp_path / "B")
    labels = root / "S2A_p2" / "S2A_p2_labels_metadata.json"
    labels.write_text(json.dumps({"labels": []}))
    with pytest.raises(RecordError, match=rf"^{labels}: field 'labels': expected a non-empty list"):
        layouts.read_bigearthnet(root)
    conv = layouts.read_bigearthnet(root, skip_bad=True)
    assert len(conv.records) == 2 and conv.skipped == {"bad labels": 1}
    labels.write_text(json.dumps({"labels": ["Pastures"]}))
    (root / "S2A_p1" / "S2A_p1_B03.tif").unlink()
    with pytest.raises(
        RecordError, match=r"S2A_p1_labels_metadata.json: field 'images': no S2A_p1.png and no band"
    ):
        layouts.read_bigearthnet(root, rgb_dir=str(tmp_path / "rgb2"))


XBD_FLOOD, XBD_FIRE = "xbd_midwest-flooding_00000001", "xbd_santa-rosa-wildfire_00000002"


@pytest.mark.parametrize(
    "task, expect",
    [
        ("disaster_type", {XBD_FLOOD: "flood", XBD_FIRE: "fire"}),
        ("affected", {XBD_FLOOD: "yes", XBD_FIRE: "no"}),
        ("affected_count", {XBD_FLOOD: "two", XBD_FIRE: "none"}),  # un-classified buildings are not counted
    ],
)
def test_xbd_image_classification_sets(tmp_path, task, expect):
    conv = layouts.read_xbd(fake_suite.xbd(tmp_path / "xBD" / "test"), task=task)
    assert {r.id: r.answer for r in conv.records} == expect
    r = by_id(conv)[XBD_FLOOD]
    assert r.task == "temporal_classification" and [p.rsplit("_", 2)[-2] for p in r.images] == ["pre", "post"]
    assert r.question == layouts.XBD_QUESTIONS[task]


def test_xbd_regions_and_detection(tmp_path):
    root = fake_suite.xbd(tmp_path / "xBD" / "test")
    regions = by_id(layouts.read_xbd(root, task="region_damage"))
    assert {k: r.answer for k, r in regions.items()} == {
        f"{XBD_FLOOD}_0": "destroyed",
        f"{XBD_FLOOD}_1": "minor-damage",
        f"{XBD_FLOOD}_2": "no-damage",
        f"{XBD_FIRE}_0": "no-damage",
    }
    assert (
        regions[f"{XBD_FLOOD}_1"].meta["region"] == [20, 20, 30, 34]
        and "{region}" in regions[f"{XBD_FLOOD}_1"].question
    )
    affected = by_id(layouts.read_xbd(root, task="region_affected"))
    assert [affected[f"{XBD_FLOOD}_{k}"].answer for k in range(3)] == ["yes", "yes", "no"]
    det = by_id(layouts.read_xbd(root, task="detection"))
    assert det[XBD_FLOOD].task == "change_detection" and len(det[XBD_FLOOD].answer) == 4  # un-classified too
    assert det[XBD_FLOOD].answer[0] == [2, 2, 12, 10]
    ref = by_id(layouts.read_xbd(root, task="referred_detection"))
    assert sorted(ref) == [
        f"{XBD_FLOOD}_destroyed",
        f"{XBD_FLOOD}_minor-damage",
        f"{XBD_FLOOD}_no-damage",
        f"{XBD_FIRE}_no-damage",
    ]
    assert (
        ref[f"{XBD_FLOOD}_minor-damage"].question
        == "Locate every minor damage building in the post-disaster image."
    )
    assert ref[f"{XBD_FLOOD}_minor-damage"].answer == [[20, 20, 30, 34]]


def test_xbd_bad_input(tmp_path):
    root = fake_suite.xbd(tmp_path / "xBD" / "test")
    labels = root / "labels" / "midwest-flooding_00000001_post_disaster.json"
    obj = json.loads(labels.read_text())
    obj["features"]["xy"][1]["wkt"] = "POINT (3 4)"
    labels.write_text(json.dumps(obj))
    with pytest.raises(RecordError, match=rf"^{labels}:feature 1: field 'wkt': expected POLYGON"):
        layouts.read_xbd(root, task="detection")
    conv = layouts.read_xbd(root, task="detection", skip_bad=True)
    assert conv.skipped == {"bad polygon": 1} and len(by_id(conv)[XBD_FLOOD].answer) == 3
    labels.write_text("{broken")
    with pytest.raises(RecordError, match=rf"^{labels}:1: bad JSON"):
        layouts.read_xbd(root)
    (root / "images" / "santa-rosa-wildfire_00000002_pre_disaster.png").unlink()
    conv = layouts.read_xbd(root, skip_bad=True)
    assert conv.skipped == {"bad JSON": 1, "image not found": 1} and conv.records == []
    with pytest.raises(RecordError, match=r"no labels/ folder"):
        layouts.read_xbd(tmp_path)
    with pytest.raises(ValueError, match="unknown xBD task"):
        layouts.read_xbd(root, task="nonsense")


def test_fmow_sequences_in_time_order(tmp_path):
    conv = layouts.read_fmow(fake_suite.fmow(tmp_path / "fmow-rgb" / "val"))
    recs = by_id(conv)
    assert sorted(recs) == ["fmow_airport_0", "fmow_zoo_1"] and conv.skipped == {
        "sequence with fewer than 2 images": 1
    }
    a = recs["fmow_airport_0"]
    assert a.task == "temporal_classification" and a.answer == "airport" and len(a.images) == 4
    # five pictures, evenly spaced in time, first and last kept: 2014, 2015, 2016-05 (index 3 of 5), 2017
    assert [t[:7] for t in a.meta["timestamps"]] == ["2014-02", "2015-01", "2016-05", "2017-03"]
    assert a.images[0].endswith("airport_0_3_rgb.jpg") and "Classes: airport, zoo." in a.question


def test_caption_json_karpathy_and_nwpu(tmp_path):
    path = fake_suite.karpathy(tmp_path / "RSICD", "dataset_rsicd.json", "RSICD_images")
    conv = layouts.read_caption_json(path, tmp_path / "RSICD" / "RSICD_images")
    assert [r.id for r in conv.records] == [
        "rsicd_00000",
        "rsicd_00001",
    ]  # the train item is not in the test split
    assert conv.records[0].answer == ["many planes are parked near runway 0 .", "an airport ."]
    assert conv.records[0].question == layouts.CAPTION_QUESTION and conv.records[0].task == "caption"
    path = fake_suite.nwpu_captions(tmp_path)
    conv = layouts.read_caption_json(path, tmp_path / "NWPU-RESISC45", dataset="NWPU-Captions")
    r = by_id(conv)["NWPU-Captions_beach_001"]
    assert len(r.answer) == 5 and r.answer[0] == "a beach with things ." and r.meta["class"] == "beach"
    assert r.images[0] == str(tmp_path / "NWPU-RESISC45" / "beach" / "beach_001.jpg")
    bad = fake_suite.write(
        tmp_path / "bad.json", {"images": [{"filename": "00000.jpg", "split": "test", "sentences": []}]}
    )
    with pytest.raises(RecordError, match=rf"^{bad}:item 0: field 'sentences': no caption text"):
        layouts.read_caption_json(bad, tmp_path / "RSICD" / "RSICD_images")
    fake_suite.write(bad, [1, 2])
    with pytest.raises(RecordError, match="expected a Karpathy caption json"):
        layouts.read_caption_json(bad)


def test_bench_jsonl_keeps_size_group_and_makes_referring_detection(tmp_path):
    gc = tmp_path / "GeoChat-Bench"
    fake_suite.image(gc / "images" / "P0001.png", (100, 100))
    fake_suite.write(
        gc / "referring.jsonl",
        [
            {
                "question_id": 1,
                "image": "P0001.png",
                "text": "[refer] give me the location of <p>the ships</p>",
                "ground_truth": "{<10><10><20><20>|0}{<50><50><90><90>|0}",
                "size_group": "Small",
            },
            {
                "question_id": 2,
                "image": "P0001.png",
                "text": "[refer] where is <p>the plane</p>",
                "ground_truth": "{<10><10><60><60>|0}",
                "size_group": "large",
            },
        ],
        jsonl=True,
    )
    plain = by_id(layouts.read_bench_jsonl(gc / "referring.jsonl", gc / "images"))
    assert plain["2"].task == "grounding" and plain["1"].task == "detection"
    recs = by_id(layouts.read_bench_jsonl(gc / "referring.jsonl", gc / "images", referring=True))
    assert recs["2"].task == "detection" and recs["2"].answer == [[10, 10, 60, 60]]
    assert recs["1"].meta["size_group"] == "small" and recs["2"].meta["size_group"] == "large"


def test_bench_jsonl_repeated_ids_keep_their_own_size_group(tmp_path):
    """GeoChat-Bench repeats an image's id across items: each record takes the size_group of its own line."""
    fake_suite.image(tmp_path / "P1.png", (100, 100))
    items = [
        {
            "question_id": 7,
            "image": "P1.png",
            "text": "[refer] the ship",
            "ground_truth": "{<1><1><5><5>|0}",
            "size_group": "small",
        },
        {
            "question_id": 7,
            "image": "P1.png",
            "text": "[refer] the port",
            "ground_truth": "{<1><1><90><90>|0}",
            "size_group": "large",
        },
    ]
    fake_suite.write(tmp_path / "referring.jsonl", items, jsonl=True)
    recs = by_id(layouts.read_bench_jsonl(tmp_path / "referring.jsonl", tmp_path, referring=True))
    assert recs["7"].meta["size_group"] == "small" and recs["7~2"].meta["size_group"] == "large"
