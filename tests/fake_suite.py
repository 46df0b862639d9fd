"""A tiny fake copy of every layout GeoVLM-R1's suite reads (a few images and labels each), written under a
root folder in the official releases' structure (geovlm/suite.py's BENCHMARKS name the paths)."""

import json
from pathlib import Path

import numpy as np
from PIL import Image

SIZE = (64, 64)


def image(path: Path, size=SIZE, seed: int = 0) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    w, h = size
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
    return str(path)


def write(path: Path, obj, jsonl: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(json.dumps(o) for o in obj) + "\n" if jsonl else json.dumps(obj))
    return path


def scene_folders(root: Path, classes=("BareLand", "Forest"), ext=".jpg", per_class=2) -> Path:
    for c, cls in enumerate(classes):
        for k in range(per_class):
            image(root / cls / f"{cls.lower()}_{k}{ext}", seed=10 * c + k)
    return root


def bigearthnet(root: Path, patches=None) -> Path:
    import tifffile

    patches = patches or {
        "S2A_p1": ["Coniferous forest", "Water bodies"],
        "S2A_p2": ["Pastures"],
        "S2B_p3": ["Sea and ocean"],
    }
    rng = np.random.default_rng(0)
    for name, labels in patches.items():
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for band in ("B02", "B03", "B04", "B08"):
            tifffile.imwrite(folder / f"{name}_{band}.tif", rng.integers(0, 3000, (40, 40), dtype=np.uint16))
        write(folder / f"{name}_labels_metadata.json", {"labels": labels, "acquisition_date": "2017-06-13"})
    (root / "test.csv").write_text("S2A_p1\nS2A_p2\n")  # S2B_p3 is not in the split
    return root


def xbd(root: Path) -> Path:
    """Two pre/post pairs: a flood with one destroyed, one minor-damage and one intact building (plus one
    un-classified), and a fire without damage."""

    def poly(x1, y1, x2, y2):
        return f"POLYGON (({x1} {y1}, {x2} {y1}, {x2} {y2}, {x1} {y2}, {x1} {y1}))"

    pairs = {
        "midwest-flooding_00000001": (
            "flooding",
            [
                (poly(2, 2, 12, 10), "destroyed"),
                (poly(20, 20, 30, 34), "minor-damage"),
                (poly(40, 40, 50, 50), "no-damage"),
                (poly(5, 50, 9, 60), "un-classified"),
            ],
        ),
        "santa-rosa-wildfire_00000002": ("fire", [(poly(10, 10, 20, 20), "no-damage")]),
    }
    for k, (stem, (kind, buildings)) in enumerate(pairs.items()):
        for when in ("pre", "post"):
            image(root / "images" / f"{stem}_{when}_disaster.png", seed=k)
        feats = [
            {"properties": {"feature_type": "building", "subtype": s, "uid": f"u{i}"}, "wkt": w}
            for i, (w, s) in enumerate(buildings)
        ]
        write(
            root / "labels" / f"{stem}_post_disaster.json",
            {
                "features": {"lng_lat": [], "xy": feats},
                "metadata": {"disaster_type": kind, "width": 64, "height": 64},
            },
        )
        write(root / "labels" / f"{stem}_pre_disaster.json", {"features": {"xy": []}, "metadata": {}})
    return root


def fmow(root: Path) -> Path:
    """airport_0 with 5 pictures (times out of order on disk), zoo_1 with 2, zoo_2 with 1 (too few)."""
    seqs = {
        ("airport", "airport_0"): ["2016-05-01", "2015-01-01", "2017-03-01", "2014-02-01", "2016-01-01"],
        ("zoo", "zoo_1"): ["2012-01-01", "2013-01-01"],
        ("zoo", "zoo_2"): ["2012-01-01"],
    }
    for (cat, seq), stamps in seqs.items():
        for k, ts in enumerate(stamps):
            stem = root / cat / seq / f"{seq}_{k}_rgb"
            image(stem.with_suffix(".jpg"), seed=k)
            write(
                stem.with_suffix(".json"),
                {
                    "timestamp": f"{ts}T10:00:00Z",
                    "bounding_boxes": [{"box": [4, 4, 20, 20], "category": cat, "ID": k}],
                },
            )
    return root


def levir_cc_json(root: Path, name: str, sentences=("a road was built .", "new houses appear .")) -> Path:
    items = []
    for k, s in enumerate(sentences):
        for ab in ("A", "B"):
            image(root / "images" / "test" / ab / f"test_{k}.png", seed=k)
        items.append(
            {
                "filepath": "test",
                "filename": f"test_{k}.png",
                "split": "test",
                "changeflag": 1,
                "sentences": [{"raw": s}, {"raw": "something changed ."}],
            }
        )
    items.append(
        {"filepath": "train", "filename": "train_0.png", "split": "train", "sentences": [{"raw": "x"}]}
    )
    return write(root / name, {"images": items})


def karpathy(root: Path, name: str, image_dir: str) -> Path:
    items = []
    for k in range(2):
        image(root / image_dir / f"{k:05d}.jpg", seed=k)
        items.append(
            {
                "filename": f"{k:05d}.jpg",
                "imgid": k,
                "split": "test",
                "sentences": [{"raw": f"many planes are parked near runway {k} ."}, {"raw": "an airport ."}],
            }
        )
    items.append({"filename": "99999.jpg", "imgid": 9, "split": "train", "sentences": [{"raw": "x"}]})
    return write(root / name, {"images": items, "dataset": name})


def nwpu_captions(root: Path) -> Path:
    for cls in ("airport", "beach"):
        image(root / "NWPU-RESISC45" / cls / f"{cls}_001.jpg")
    data = {
        cls: [
            {
                "filename": f"{cls}_001.jpg",
                "split": "test",
                "imgid": i,
                "raw": f"a {cls} with things .",
                **{f"raw_{j}": f"reference {j} of the {cls} ." for j in range(1, 5)},
            }
        ]
        for i, cls in enumerate(("airport", "beach"))
    }
    data["beach"].append({"filename": "beach_002.jpg", "split": "train", "raw": "x"})
    return write(root / "NWPU-Captions" / "dataset_nwpu.json", data)


def rsvqa(
    root: Path, prefix: str, image_dir: str, types=("presence", "comp", "rural_urban", "count")
) -> Path:
    folder = root / image_dir
    for i in range(2):
        image(folder / f"{i}.png", seed=i)
    answers = {"presence": "yes", "comp": "no", "rural_urban": "rural", "count": "12", "area": "0m2"}
    qs = [
        {
            "id": k,
            "img_id": k % 2,
            "type": t,
            "question": f"Question {k} about {t}?",
            "answers_ids": [k],
            "active": True,
        }
        for k, t in enumerate(types)
    ]
    base = root / prefix.split("_split")[0].replace("LR", "RSVQA_LR").replace("USGS", "RSVQA_HR")
    write(base / f"{prefix}_questions.json", {"questions": qs})
    write(
        base / f"{prefix}_answers.json",
        {"answers": [{"id": k, "answer": answers[t]} for k, t in enumerate(types)]},
    )
    write(base / f"{prefix}_images.json", {"images": [{"id": i, "active": True} for i in range(2)]})
    return base


def make_root(root: Path) -> Path:
    """Every layout of the suite under `root` (2-4 records per benchmark)."""
    scene_folders(root / "AID", ("BareLand", "Forest"))
    scene_folders(root / "UCMerced_LandUse" / "Images", ("agricultural", "denseresidential"), ext=".tif")
    scene_folders(root / "WHU-RS19", ("Airport", "footballField"))
    bigearthnet(root / "BigEarthNet-v1.0")
    fmow(root / "fmow-rgb" / "val")
    xbd(root / "xBD" / "test")
    pre = "../xBD/test/images/midwest-flooding_00000001_pre_disaster.png"
    post = pre.replace("_pre_", "_post_")
    write(
        root / "EarthDial" / "xBD_image_captioning.jsonl",
        [
            {
                "id": f"c{k}",
                "image": [pre, post],
                "question": "[grounding] [hr_rgb_temp_0.5] <image> <image> \\n Please "
                "describe the damage observed in the post-disaster image.",
                "ground_truth": text,
            }
            for k, text in enumerate(
                [
                    "There has been a flood disaster that destroyed one building.",
                    "A flood damaged two buildings.",
                ]
            )
        ],
        jsonl=True,
    )
    gc = root / "GeoChat-Bench"
    image(gc / "images" / "P0001.png", (100, 100))
    write(
        gc / "referring.jsonl",
        [
            {
                "question_id": 1,
                "image": "P0001.png",
                "text": "[refer] give me the location of <p>the ships</p>",
                "ground_truth": "{<10><10><20><20>|0}{<50><50><90><90>|0}",
                "size_group": "Small",
                "type": "ref",
            },
            {
                "question_id": 2,
                "image": "P0001.png",
                "text": "[refer] where is <p>the plane</p>",
                "ground_truth": "{<10><10><60><60>|0}",
                "size_group": "large",
                "type": "ref",
            },
            {
                "question_id": 5,
                "image": "P0001.png",
                "text": "[refer] where is <p>the car</p>",
                "ground_truth": "{<30><30><45><45>|0}",
                "size_group": "medium",
                "type": "ref",
            },
        ],
        jsonl=True,
    )
    write(
        gc / "region_captioning.jsonl",
        [
            {
                "question_id": 3,
                "image": "P0001.png",
                "text": "[identify] what is at {<10><20><30><40>|0}",
                "ground_truth": "a white ship",
            },
            {
                "question_id": 4,
                "image": "P0001.png",
                "text": "[identify] what is at {<50><50><60><60>|0}",
                "ground_truth": "a small car",
            },
        ],
        jsonl=True,
    )
    nwpu = root / "NWPU VHR-10 dataset"
    image(nwpu / "positive image set" / "001.jpg", (100, 100), seed=1)
    image(nwpu / "positive image set" / "002.jpg", (200, 200), seed=2)
    (nwpu / "ground truth").mkdir(parents=True)
    (nwpu / "ground truth" / "001.txt").write_text("(10,10),(20,30),1\n(40,40),(90,90),1\n(5,60),(15,70),2\n")
    (nwpu / "ground truth" / "002.txt").write_text("(10,10),(150,150),3\n")
    img = "../NWPU VHR-10 dataset/positive image set/001.jpg"
    write(
        root / "EarthDial" / "NWPU_VHR_10_region_captioning.jsonl",
        [
            {
                "id": f"r{k}",
                "image": img,
                "question": f"[identify] [hr_rgb_0.5] <image> \\n what object is in this location "
                f"<box>[[{b}]]</box>",
                "ground_truth": t,
            }
            for k, (b, t) in enumerate(
                [
                    ("10, 10, 20, 30, 0", "1 gray medium airplane at the top left"),
                    ("5, 60, 15, 70, 0", "1 white ship at the left"),
                ]
            )
        ],
        jsonl=True,
    )
    write(
        root / "EarthDial" / "NWPU_VHR_10_grounding_description.jsonl",
        [
            {
                "id": f"g{k}",
                "image": img,
                "question": "[grounding] [hr_rgb_0.5] <image> \\n Describe the image in detail.",
                "ground_truth": t,
            }
            for k, t in enumerate(
                [
                    "In the image there is <ref>1 airplane</ref> <box>[[[10, 10, 20, 30, 0]]]</box> at the "
                    "top left.",
                    "There are <ref>2 airplanes</ref> <box>[[[10, 10, 20, 30, 0]][[40, 40, 90, 90, 0]]]</box>"
                    ".",
                ]
            )
        ],
        jsonl=True,
    )
    levir_cc_json(root / "Dubai-CC", "DubaiCCcaptions.json")
    levir_cc_json(root / "LEVIR-MCI-dataset", "LevirCCcaptions.json")
    levir_cc_json(root / "SYSU-CC", "SYSUCCcaptions.json")
    muds = [f"../Dubai-CC/images/test/{ab}/test_0.png" for ab in ("A", "B")]
    write(
        root / "EarthDial" / "MUDS.jsonl",
        [
            {
                "id": f"m{k}",
                "image": muds,
                "question": "[changedet] are there any semantic change detected in the provided images?",
                "ground_truth": t,
            }
            for k, t in enumerate(["roads are built .", "the scene is the same ."])
        ],
        jsonl=True,
    )
    nwpu_captions(root)
    karpathy(root / "RSICD", "dataset_rsicd.json", "RSICD_images")
    karpathy(root / "RSITMD", "dataset_RSITMD.json", "images")
    rsvqa(root, "LR_split_test", "RSVQA_LR/Images_LR")
    rsvqa(root, "USGS_split_test", "RSVQA_HR/Data", types=("presence", "comp", "count", "area"))
    return root
