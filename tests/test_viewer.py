"""viewer.py: boxes from rows (parsed, or parsed through the row's frame), the page's data, and the page
rendered by a real headless Chromium: the boxes are checked in the screenshot's pixels."""

from __future__ import annotations

import importlib
import json
import re
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from geovlm import viewer

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
IMAGE_RGB = (60, 90, 120)  # a plain colour nothing else on the page has (text and UI greys have r = g = b)
W, H = 192, 96  # the page shows images 384 CSS px wide: exactly 2 screen pixels per image pixel
GT = [20, 20, 70, 70]
PRED = [110, 30, 170, 80]
# the model writes 2x coordinates
FRAME = {"kind": "pixels", "image_size": [W, H], "model_size": [2 * W, 2 * H]}


def hex_rgb(h: str) -> tuple[int, int, int]:
    return tuple(int(h[i : i + 2], 16) for i in (1, 3, 5))


def wrap(answer: str) -> str:
    return f"<think>r</think><answer>{answer}</answer>"


# ----------------------------------------------------------------------------- boxes from rows
def test_predicted_boxes_from_parsed_or_through_the_frame():
    # eval's predictions: "parsed" is already in original pixels
    assert viewer.predicted_boxes({"task": "grounding", "parsed": [PRED], "completion": "junk"}) == (
        [PRED],
        None,
    )
    assert viewer.predicted_boxes(
        {"task": "detection", "parsed": None, "completion": wrap("[1, 2, 3, 4]")}
    ) == ([], None)
    gc = {"task": "grounded_caption", "parsed": {"caption": "a", "boxes": [PRED, GT]}}
    assert viewer.predicted_boxes(gc) == ([PRED, GT], None)
    # no "parsed": the completion's answer, converted from the model's frame
    row = {"task": "grounding", "completion": wrap("[220, 60, 340, 160]"), "frame": FRAME}
    assert viewer.predicted_boxes(row) == ([PRED], None)
    # grounding scores the first box only; detection shows them all
    two = wrap("[220, 60, 340, 160], [0, 0, 10, 10]")
    assert viewer.predicted_boxes({"task": "grounding", "completion": two, "frame": FRAME})[0] == [PRED]
    assert len(viewer.predicted_boxes({"task": "detection", "completion": two, "frame": FRAME})[0]) == 2
    # no frame (today's rollout rows): drawn as written, and the card says so
    boxes, note = viewer.predicted_boxes({"task": "detection", "completion": wrap("[1, 2, 30, 40]")})
    assert boxes == [[1, 2, 30, 40]] and "no frame" in note
    # not a box task, or nothing usable: no boxes, no exception
    assert viewer.predicted_boxes({"task": "counting", "completion": wrap("[1, 2, 3, 4]")}) == ([], None)
    for bad in (
        {"task": "detection", "completion": None},
        {"task": "detection", "completion": "[1, 2", "frame": 3},
        {"task": "grounding", "parsed": [["a", 1, 2, 3]]},
        {},
    ):
        assert viewer.predicted_boxes(bad)[0] == []


def test_gt_boxes_by_task():
    assert viewer.gt_boxes("detection", [GT, PRED]) == [GT, PRED]
    assert viewer.gt_boxes("grounding", [[70, 70, 20, 20, 30]]) == [GT]  # θ dropped, corners ordered
    assert viewer.gt_boxes("grounded_caption", {"caption": "x", "boxes": [GT]}) == [GT]
    assert viewer.gt_boxes("change_detection", "no change") == []
    assert viewer.gt_boxes("caption", ["a caption"]) == []


# ----------------------------------------------------------------------------- the page's data
def make_case(tmp_path: Path) -> tuple[Path, Path]:
    """A plain image, a records file naming it, and prediction rows without "images" (looked up by id)."""
    Image.new("RGB", (W, H), IMAGE_RGB).save(tmp_path / "plain.png")
    records = [
        {
            "id": "g1",
            "task": "grounding",
            "images": ["plain.png"],
            "question": "Where is the thing?",
            "answer": [GT],
        },
        {
            "id": "c1",
            "task": "classification",
            "images": ["plain.png"],
            "question": "What is it?",
            "answer": "x",
        },
    ]
    data = tmp_path / "records.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    rows = [
        {
            "id": "g1",
            "task": "grounding",
            "completion": wrap("[220, 60, 340, 160]"),
            "answer": [GT],
            "scores": {"format": 1.0, "grounding_iou": 0.0, "total": 1.0},
            "meta": {},
            "frame": FRAME,
        },
        {
            "id": "c1",
            "task": "classification",
            "completion": wrap("x </script><b>not bold</b>"),
            "answer": "x",
            "scores": {"format": 1.0, "exact_match": 0.0, "total": 1.0},
            "meta": {},
        },
    ]
    rows_path = tmp_path / "predictions.jsonl"
    rows_path.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"torn line\n')
    return rows_path, data


def page_data(html: str, name: str):
    m = re.search(rf'<script id="{name}" type="application/json">(.*?)</script>', html, re.S)
    return json.loads(m.group(1))


def test_page_holds_rows_images_and_nothing_from_the_network(tmp_path):
    rows_path, data = make_case(tmp_path)
    out = viewer.write_viewer(rows_path, data=data)
    assert out == tmp_path / "predictions.html"
    html = out.read_text()
    rows, images, info = page_data(html, "rows"), page_data(html, "images"), page_data(html, "info")
    assert (
        [r["id"] for r in rows] == ["g1", "c1"] and info["bad_lines"] == 1 and info["kind"] == "predictions"
    )
    g1 = rows[0]
    assert (
        g1["gt"] == [GT]
        and g1["pred"] == [PRED]
        and g1["total"] == 1.0
        and g1["question"] == "Where is the thing?"
    )
    assert len(images) == 1 and rows[1]["images"] == g1["images"]  # the same image embedded once
    (im,) = images.values()
    assert (im["w"], im["h"]) == (W, H) and im["src"].startswith("data:image/png;base64,")
    assert "</script><b>" not in html  # completions cannot close the data script
    # self-contained: no fetched script, style, font or image
    assert (
        not re.search(r"""(src|href)=["']?(https?:)?//""", html)
        and "<link" not in html
        and "@import" not in html
    )

    linked = viewer.write_viewer(rows_path, tmp_path / "sub" / "v.html", data=data, link_images=True)
    (im,) = page_data(linked.read_text(), "images").values()
    assert im["src"] == "../plain.png"


def test_reads_the_predictions_eval_writes(tmp_path):
    ev = importlib.import_module("eval")
    frame = ev.Frame(kind="pixels", image_size=(W, H), model_size=(2 * W, 2 * H))
    samples = [
        ev.Sample(task="detection", answer=[GT], completion=wrap("[220, 60, 340, 160]"), frame=frame, id="d1")
    ]
    ev.score_samples(samples, tmp_path, caption_extras=False, quiet=True)
    Image.new("RGB", (W, H), IMAGE_RGB).save(tmp_path / "plain.png")
    rec = {"id": "d1", "task": "detection", "images": ["plain.png"], "question": "Find all.", "answer": [GT]}
    (tmp_path / "records.jsonl").write_text(json.dumps(rec) + "\n")
    out = viewer.write_viewer(tmp_path / "predictions.jsonl", data=tmp_path / "records.jsonl")
    (row,) = page_data(out.read_text(), "rows")
    assert row["pred"] == [PRED] and row["gt"] == [GT] and row["images"] and not row["notes"]


def test_rollout_rows_with_their_own_images_and_the_cli(tmp_path, capsys):
    Image.new("RGB", (W, H), IMAGE_RGB).save(tmp_path / "a.png")
    rows = [
        {
            "step": s,
            "id": "r1",
            "task": "region_caption",
            "sample": k,
            "answer": "a road",
            "completion": wrap("a road"),
            "rewards": {"format": 1.0, "caption_rouge_l": 1.0, "total": 2.0},
            "advantage": 0.5 - k,
            "length": 7,
            "truncated": False,
            "images": [str(tmp_path / "a.png")],
            "meta": {"region": GT},
        }
        for s in (10, 20)
        for k in (0, 1)
    ]
    Image.new("RGB", (W, H), (0, 0, 0)).save(tmp_path / "b.png")  # images relative to the rows file below
    rows.append(
        {
            "step": 20,
            "id": "c1",
            "task": "change_detection",
            "sample": 0,
            "answer": [GT],
            "completion": wrap("[1, 2, 3, 4]"),
            "rewards": {"total": 0.0},
            "advantage": 0.0,
            "images": ["a.png", "b.png"],
        }
    )
    (tmp_path / "rollouts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert viewer.main([str(tmp_path / "rollouts.jsonl"), "--max-rows", "3"]) == 0
    assert "rollouts.html" in capsys.readouterr().out
    html = (tmp_path / "rollouts.html").read_text()
    cards = page_data(html, "rows")
    assert len(cards) == 3 and page_data(html, "info")["kind"] == "rollouts"
    assert cards[-2]["region"] == GT and cards[-2]["advantage"] == -0.5 and cards[-2]["step"] == 20
    change = cards[-1]  # a change is an appearance or a disappearance: its boxes go on both images
    assert len(change["images"]) == 2 and change["on"] == [0, 1] and change["gt"] == [GT]
    assert change["pred"] == [[1, 2, 3, 4]] and "no frame" in change["notes"][0]


def test_box_colours_are_no_colour_of_synth_scenes():
    from embedded import synth

    for name, colour in viewer.COLORS.items():
        rgb = hex_rgb(colour)
        # far from every object colour family; more saturated than any ground (muted: max - min <= 70)
        nearest = min(
            sum((a - b) ** 2 for a, b in zip(rgb, base)) ** 0.5 for base in synth.CLASS_RGB.values()
        )
        assert nearest >= 100, (name, colour, nearest)
        assert max(rgb) - min(rgb) >= 150, (name, colour)
    assert len(set(viewer.COLORS.values())) == 3


def grpo_rows(tmp_path: Path) -> list[dict]:
    """rollouts.jsonl rows as train_grpo.rollout_rows writes them, for one grounding prompt and two
    samples."""
    import torch

    import data
    import train_grpo

    Image.new("RGB", (W, H), IMAGE_RGB).save(tmp_path / "plain.png")
    rec = data.Record("g7", "grounding", [str(tmp_path / "plain.png")], "Where is the red ship?", [GT])
    frame = data.Frame(**{k: tuple(v) if isinstance(v, list) else v for k, v in FRAME.items()})
    texts = [wrap("[220, 60, 340, 160]"), wrap("nowhere")]
    ro = SimpleNamespace(
        records=[rec],
        frames=[frame],
        texts=texts,
        scores=[{"format": 1.0, "total": 1.0}, {"format": 1.0, "total": 1.0}],
        completion_mask=torch.ones(2, 5, dtype=torch.bool),
        truncated=torch.zeros(2, dtype=torch.bool),
    )
    return train_grpo.rollout_rows(3, ro, torch.tensor([0.5, -0.5]), 2)


def test_rollout_and_prediction_rows_carry_what_a_card_shows(tmp_path):
    rows = grpo_rows(tmp_path)
    assert rows[0]["question"] == "Where is the red ship?" and rows[0]["parsed"] == [PRED]
    assert rows[1]["parsed"] is None
    (tmp_path / "rollouts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cards = page_data(viewer.write_viewer(tmp_path / "rollouts.jsonl").read_text(), "rows")  # no --data
    assert [c["question"] for c in cards] == ["Where is the red ship?"] * 2
    assert (
        cards[0]["parsed"] == json.dumps([[float(v) for v in PRED]])
        and cards[0]["pred"] == [PRED]
        and not cards[0]["notes"]
    )
    # eval's predictions.jsonl: the question too, kept when the file is scored again
    ev = importlib.import_module("eval")
    sample = ev.Sample("grounding", [GT], wrap("[1, 2, 3, 4]"), id="g7", question="Where is the red ship?")
    ev.score_samples([sample], tmp_path / "eval", caption_extras=False, quiet=True)
    (row,) = viewer.read_rows(tmp_path / "eval" / "predictions.jsonl")[0]
    assert row["question"] == "Where is the red ship?"
    (again,) = ev.load_predictions(tmp_path / "eval" / "predictions.jsonl")
    assert again.question == "Where is the red ship?"


# ----------------------------------------------------------------------------- in a real browser
def browser() -> str:
    for name in BROWSERS:
        if path := shutil.which(name):
            return path
    pytest.fail(
        "no Chromium for the viewer's browser test: `make` installs it when run as root "
        "(apt-get install -y chromium); else run: sudo apt-get install -y chromium",
        pytrace=False,
    )


def screenshot(page: Path, fragment: str, tmp_path: Path, size=(1000, 700)) -> Image.Image:
    shot = tmp_path / f"shot{len(list(tmp_path.glob('shot*.png')))}.png"
    cmd = [
        browser(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
        f"--user-data-dir={tmp_path / 'profile'}",
        f"--screenshot={shot}",
        f"--window-size={size[0]},{size[1]}",
        page.resolve().as_uri() + fragment,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert shot.exists(), f"chromium wrote no screenshot (exit {proc.returncode}): {proc.stderr[-2000:]}"
    return Image.open(shot).convert("RGB")


def mask(img: Image.Image, rgb, tol: int = 40):
    import numpy as np

    a = np.asarray(img).astype(int)
    return (np.abs(a - np.array(rgb)) <= tol).all(axis=2)


def image_area(img: Image.Image) -> tuple[int, int, float]:
    """(left, top, screen pixels per image pixel) of the one plain-coloured image on screen."""
    import numpy as np

    ys, xs = np.nonzero(mask(img, IMAGE_RGB, tol=6))
    assert len(xs), "the image is not on the screenshot"
    left, top, right, bottom = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
    scale = (right - left) / W
    assert scale == pytest.approx((bottom - top) / H, abs=0.02), "the image is not drawn at its aspect ratio"
    return int(left), int(top), scale


def check_box(m, box, left: int, top: int, scale: float, near: int = 4) -> None:
    """The colour of `m` lies on all four edges of the box and nowhere else in the image."""
    import numpy as np

    x1, y1, x2, y2 = (
        left + box[0] * scale,
        top + box[1] * scale,
        left + box[2] * scale,
        top + box[3] * scale,
    )
    xm, ym = int((x1 + x2) / 2), int((y1 + y2) / 2)
    for name, (ya, yb, xa, xb) in {
        "left": (ym - 5, ym + 5, x1 - near, x1 + near),
        "right": (ym - 5, ym + 5, x2 - near, x2 + near),
        "top": (y1 - near, y1 + near, xm - 5, xm + 5),
        "bottom": (y2 - near, y2 + near, xm - 5, xm + 5),
    }.items():
        assert m[int(ya) : int(yb), int(xa) : int(xb)].any(), f"no box colour on the {name} edge of {box}"
    ys, xs = np.nonzero(m)
    on_edge = (
        ((np.abs(xs - x1) <= near) | (np.abs(xs - x2) <= near)) & (ys >= y1 - near) & (ys <= y2 + near)
    ) | (((np.abs(ys - y1) <= near) | (np.abs(ys - y2) <= near)) & (xs >= x1 - near) & (xs <= x2 + near))
    assert on_edge.all(), f"box colour off the edges of {box}: {list(zip(xs[~on_edge], ys[~on_edge]))[:5]}"


def test_boxes_render_where_the_record_says(tmp_path):
    rows_path, data = make_case(tmp_path)
    page = viewer.write_viewer(rows_path, data=data)
    img = screenshot(page, "#task=grounding", tmp_path)
    left, top, scale = image_area(img)
    assert scale == pytest.approx(2.0, abs=0.02)
    inside = (slice(top, top + round(H * scale)), slice(left, left + round(W * scale)))
    gt = mask(img, hex_rgb(viewer.COLORS["gt"]))[inside]
    pred = mask(img, hex_rgb(viewer.COLORS["pred"]))[inside]
    check_box(gt, GT, 0, 0, scale)
    check_box(pred, PRED, 0, 0, scale)
    # the filter: only the classification card, whose image has no boxes
    img = screenshot(page, "#task=classification", tmp_path)
    left, top, scale = image_area(img)
    inside = (slice(top, top + round(H * scale)), slice(left, left + round(W * scale)))
    for color in viewer.COLORS.values():
        assert not mask(img, hex_rgb(color))[inside].any()


def dom(page: Path, fragment: str, tmp_path: Path) -> str:
    cmd = [
        browser(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--dump-dom",
        page.resolve().as_uri() + fragment,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert "<body" in proc.stdout, f"chromium dumped no page (exit {proc.returncode}): {proc.stderr[-2000:]}"
    return proc.stdout


def test_a_rollout_card_shows_question_parsed_answer_and_legend(tmp_path):
    (tmp_path / "rollouts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in grpo_rows(tmp_path)))
    html = dom(viewer.write_viewer(tmp_path / "rollouts.jsonl"), "", tmp_path)
    text = re.sub(r"<[^>]+>", " ", re.sub(r"<(script|style)\b.*?</\1>", " ", html, flags=re.S))
    text = " ".join(text.split())
    assert text.count("question Where is the red ship?") == 2  # both cards, with no --data
    assert f"parsed: {json.dumps([[float(v) for v in PRED]])}" in text and "parsed: null" in text
    assert "ground truth predicted region in the question" in text  # the legend names each colour


def test_four_temporal_images_stay_on_the_page(tmp_path):
    colours = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30)]  # one plain colour per image
    for k, rgb in enumerate(colours):
        Image.new("RGB", (W, H), rgb).save(tmp_path / f"t{k}.png")
    row = {
        "id": "t1",
        "task": "temporal_classification",
        "images": [f"t{k}.png" for k in range(4)],
        "question": "What changes over time?",
        "completion": wrap("urban growth"),
        "answer": "urban growth",
        "scores": {"format": 1.0, "exact_match": 1.0, "total": 2.0},
    }
    (tmp_path / "predictions.jsonl").write_text(json.dumps(row) + "\n")
    img = screenshot(viewer.write_viewer(tmp_path / "predictions.jsonl"), "", tmp_path, size=(1000, 900))
    for rgb in colours:  # every image whole on a 1000 px wide page: none runs off its right edge
        ys, xs = np.nonzero(mask(img, rgb, tol=6))
        assert len(xs), f"image {rgb} is not on the page"
        assert xs.max() < img.width - 300, "the images leave no room for the card's text"
        assert (xs.max() - xs.min() + 1) / W == pytest.approx((ys.max() - ys.min() + 1) / H, abs=0.05)
