"""A static HTML page to look at what the model wrote: rollouts.jsonl or eval predictions.jsonl.

    python -m geovlm.viewer runs/grpo/rollouts.jsonl                       # -> runs/grpo/rollouts.html
    python -m geovlm.viewer results/predictions.jsonl --out results/view.html

One card per row: the image(s) with the ground-truth boxes (green), the predicted boxes (blue) and, for region
captions, the region the question asks about (violet, dashed) drawn over them (SVG in the image's own pixel
coordinates; colours no synth object or ground has, see COLORS); the question, the completion, the parsed
answer, the reward of each component, the advantage. Several images (change, temporal) sit in a grid of at
most two columns up to four images, four beyond, so a card never runs off the page. Filters: task, step,
reward range, a text search, and the order; the filter is kept in the address
(view.html#task=grounding&min=0.5) so a view can be shared. One self-contained file: plain JavaScript, no
network, no CDN; images are embedded once each (downscaled to --max-side) unless --link-images, which refers
to them by a path relative to the page instead (smaller, not portable).

Rows: rollouts.jsonl {"step", "id", "task", "sample", "images", "frame", "question", "answer", "completion",
"parsed", "rewards", "advantage", "length", "truncated"} and predictions.jsonl {"id", "task", "images",
"question", "completion", "parsed", "scores", "answer", "meta", "frame"}: a card needs nothing else. Image
paths come from the row's "images" (absolute, or relative to the rows file), and the question from its
"question"; rows without them (older files) take them from the record with the same id in --data (a records
JSONL, data.load_records). Ground-truth boxes are original-image pixels. Predicted boxes: the row's "parsed"
when it has one, else the completion's answer parsed with parse_boxes in the row's "frame" (Frame(kind,
image_size, model_size)); a row without a frame gets its boxes drawn as written, and the card says so.
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import json
import math
import os
import re
import sys
from pathlib import Path
from typing import Any

from PIL import Image

from data import load_records
from geovlm.frames import frame_from_json
from geovlm.parsing import extract_answer
from geovlm.tasks import TASKS

# Saturated hues no synth scene holds: its objects are white, magenta, red, yellow and cyan (synth.CLASS_RGB)
# and its grounds muted; green and blue are told apart by most colour-blind eyes. The region never shares a
# card with boxes (region_caption has none).
COLORS = {"gt": "#39ff14", "pred": "#2f6bff", "region": "#7c4dff"}
PAGE_SIZE = 60


def _frame(obj: Any):
    """A Frame from a row's "frame" ({"kind", "image_size", "model_size"}), or None when absent or bad."""

    try:
        return frame_from_json(obj) if isinstance(obj, dict) else None
    except Exception:
        return None


def _box(b: Any) -> list[float] | None:
    """[x1, y1, x2, y2] of a box-like list (θ dropped: rewards and metrics use the horizontal box)."""
    if not isinstance(b, (list, tuple)) or len(b) < 4:
        return None
    try:
        v = [float(x) for x in b[:4]]
    except (TypeError, ValueError):
        return None
    if not all(math.isfinite(x) for x in v):
        return None
    x1, y1, x2, y2 = v
    return [min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)]


def _boxes(obj: Any) -> list[list[float]]:
    if isinstance(obj, dict):
        obj = obj.get("boxes")
    if not isinstance(obj, (list, tuple)):
        return []
    if _box(obj) is not None and not any(isinstance(x, (list, tuple)) for x in obj):
        return [_box(obj)]  # a single bare box
    return [b for b in (_box(x) for x in obj) if b is not None]


def gt_boxes(task: str, answer: Any) -> list[list[float]]:
    """Ground-truth boxes of a row's answer, in original-image pixels."""
    if task not in TASKS or not TASKS[task].boxes or isinstance(answer, str):
        return []  # change_detection's answer may be a label
    return _boxes(answer.get("boxes") if isinstance(answer, dict) else answer)


def predicted_boxes(row: dict) -> tuple[list[list[float]], str | None]:
    """(boxes in original pixels, a note or None) for a row of a box task; ([], None) for other tasks."""
    task = row.get("task")
    if task not in TASKS or not TASKS[task].boxes:
        return [], None
    if "parsed" in row:  # eval's predictions: already parsed and converted
        return _boxes(row["parsed"]), None
    completion = row.get("completion")
    if not isinstance(completion, str):
        return [], None
    try:
        frame = _frame(row.get("frame"))
        parsed = TASKS[task].parse(extract_answer(completion) or "", frame, ())  # what the rewards read
        boxes = _boxes(parsed)
    except Exception as exc:
        return [], f"could not parse the boxes: {type(exc).__name__}: {exc}"
    note = (
        None if frame is not None or not boxes else "no frame in this row: predicted boxes drawn as written"
    )
    return boxes, note


def read_rows(path: str | os.PathLike) -> tuple[list[dict], int]:
    """(dict rows, number of unreadable lines) of a JSONL file."""
    rows, bad = [], 0
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError:
                bad += 1
                continue
            if isinstance(row, dict):
                rows.append(row)
            else:
                bad += 1
    return rows, bad


def _records(data: str | os.PathLike | None) -> dict[str, Any]:
    if data is None:
        return {}

    return {r.id: r for r in load_records(data, skip_bad=True)}


class _Images:
    """Each image once: a data URI (downscaled to max_side) or a path relative to the page; its original
    size."""

    def __init__(self, out_dir: Path, link: bool, max_side: int):
        self.out_dir, self.link, self.max_side = out_dir, link, max_side
        self.table: dict[str, dict] = {}
        self.keys: dict[str, str] = {}

    def add(self, path: str) -> tuple[str | None, str | None]:
        """(key into the table, error) for an image path."""
        if path in self.keys:
            return self.keys[path], None
        try:
            with Image.open(path) as im:
                size = im.size
                if self.link:
                    try:
                        src = Path(os.path.relpath(path, self.out_dir)).as_posix()
                    except ValueError:  # another drive
                        src = Path(path).resolve().as_uri()
                else:
                    src = self._embed(im)
        except Exception as exc:
            return None, f"cannot read image {path}: {type(exc).__name__}: {exc}"
        key = f"im{len(self.table)}"
        self.table[key] = {"src": src, "w": size[0], "h": size[1], "path": str(path)}
        self.keys[path] = key
        return key, None

    def _embed(self, im) -> str:
        im = im.convert("RGB") if im.mode not in ("RGB", "L") else im
        scale = self.max_side / max(im.size) if self.max_side and max(im.size) > self.max_side else 1.0
        if scale < 1.0:
            im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))))
        buf = io.BytesIO()
        small = im.width * im.height <= 256 * 256
        im.save(buf, format="PNG" if small else "JPEG", **({} if small else {"quality": 88}))
        mime = "image/png" if small else "image/jpeg"
        return f"data:{mime};base64,{base64.b64encode(buf.getvalue()).decode('ascii')}"


def _short(obj: Any, limit: int = 600) -> str:
    text = obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False)
    return text if len(text) <= limit else text[:limit] + f"… ({len(text)} characters)"


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v) if math.isfinite(v) else None


def card(i: int, row: dict, record: Any, images: _Images, base_dir: Path) -> dict:
    """The page's data for one row (what the JavaScript draws)."""
    task = str(row.get("task", "?"))
    notes = []
    paths = row.get("images")
    if isinstance(paths, str):
        paths = [paths]
    if not isinstance(paths, list) or not paths:
        paths = list(record.images) if record is not None else []
        if not paths:
            notes.append("no images: the row has none and its id is not in --data")
    keys = []
    for p in paths:
        p = str(p) if os.path.isabs(str(p)) else str(base_dir / str(p))
        key, err = images.add(p)
        if key:
            keys.append(key)
        if err:
            notes.append(err)
    meta = (
        row.get("meta") if isinstance(row.get("meta"), dict) else (record.meta if record is not None else {})
    )
    answer = row.get("answer", record.answer if record is not None else None)
    pred, note = predicted_boxes(row)
    if note:
        notes.append(note)
    rewards = row.get("rewards") if isinstance(row.get("rewards"), dict) else row.get("scores")
    rewards = {str(k): _num(v) for k, v in rewards.items()} if isinstance(rewards, dict) else {}
    region = _box(meta.get("region")) if isinstance(meta, dict) and task == "region_caption" else None
    question = row.get("question", record.question if record is not None else None)
    return {
        "i": i,
        "id": str(row.get("id", "")),
        "task": task,
        "step": _num(row.get("step")),
        "sample": row.get("sample"),
        "question": question if isinstance(question, str) else None,
        "completion": row.get("completion") if isinstance(row.get("completion"), str) else "",
        "answer": _short(answer),
        "parsed": _short(row["parsed"]) if "parsed" in row else None,
        "rewards": rewards,
        "total": rewards.get("total"),
        "advantage": _num(row.get("advantage")),
        "length": _num(row.get("length")),
        "truncated": bool(row.get("truncated")),
        "images": keys,
        "on": list(range(len(keys)))
        if task in TASKS and TASKS[task].change
        else [0],  # the images the boxes are drawn on
        "gt": gt_boxes(task, answer),
        "pred": pred,
        "region": region,
        "notes": notes,
    }


def _script_json(obj: Any) -> str:
    """JSON safe inside <script>: no "</script>", no HTML comment openers."""
    return (
        json.dumps(obj, ensure_ascii=True, separators=(",", ":"))
        .replace("<", "\\u003c")
        .replace(">", "\\u003e")
    )


def write_viewer(
    rows_path: str | os.PathLike,
    out_html: str | os.PathLike | None = None,
    data: str | os.PathLike | None = None,
    *,
    link_images: bool = False,
    max_side: int = 640,
    max_rows: int | None = None,
    title: str | None = None,
) -> Path:
    """Write the viewer page of a rollouts/predictions JSONL file; returns its path.

    out_html: default beside the rows file, same name with .html. data: a records JSONL to look up images
    (and questions) by id. link_images: refer to images by relative path instead of embedding them.
    max_side: embedded images are downscaled to this many pixels on their longer side (boxes keep their
    original-pixel coordinates). max_rows: keep only the last N rows (a long run's rollouts)."""
    rows_path = Path(rows_path)
    out = Path(out_html) if out_html is not None else rows_path.with_suffix(".html")
    out.parent.mkdir(parents=True, exist_ok=True)
    rows, bad = read_rows(rows_path)
    if max_rows is not None:
        rows = rows[-max_rows:] if max_rows > 0 else []
    records = _records(data)
    images = _Images(out.parent.resolve(), link_images, max_side)
    base_dir = rows_path.parent.resolve()
    cards = [card(i, row, records.get(str(row.get("id"))), images, base_dir) for i, row in enumerate(rows)]
    kind = "rollouts" if any("advantage" in r for r in rows) else "predictions"
    info = {
        "title": title or f"{rows_path.name} ({kind})",
        "source": str(rows_path),
        "kind": kind,
        "rows": len(cards),
        "bad_lines": bad,
        "colors": COLORS,
        "page_size": PAGE_SIZE,
    }
    fields = {
        "TITLE": html.escape(info["title"]),
        "COLOR_GT": COLORS["gt"],
        "COLOR_PRED": COLORS["pred"],
        "COLOR_REGION": COLORS["region"],
        "INFO": _script_json(info),
        "IMAGES": _script_json(images.table),
        "ROWS": _script_json(cards),
    }
    page = re.sub(r"__([A-Z_]+)__", lambda m: fields.get(m.group(1), m.group(0)), _PAGE)  # one pass
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, out)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("rows", help="rollouts.jsonl or predictions.jsonl")
    p.add_argument(
        "--data",
        default=None,
        help="records JSONL to find images by id (rows without 'images'); default: none",
    )
    p.add_argument("--out", default=None, help="the HTML file (default: beside ROWS, .html)")
    p.add_argument(
        "--link-images",
        action="store_true",
        help="refer to images by relative path, do not embed (default: embed them)",
    )
    p.add_argument(
        "--max-side", type=int, default=640, help="embedded images: longer side in pixels (default 640)"
    )
    p.add_argument("--max-rows", type=int, default=None, help="only the last N rows (default: all)")
    args = p.parse_args(argv)
    out = write_viewer(
        args.rows,
        args.out,
        args.data,
        link_images=args.link_images,
        max_side=args.max_side,
        max_rows=args.max_rows,
    )
    mb = out.stat().st_size / 1e6
    hint = " (large: try --link-images or --max-rows)" if mb > 50 else ""
    print(f"viewer: {out} ({mb:.1f} MB){hint}")
    return 0


_PAGE = r"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>__TITLE__</title>
<style>
  body { font: 14px/1.4 system-ui, sans-serif; margin: 0; background: #f4f4f6; color: #222; }
  header { position: sticky; top: 0; z-index: 2; background: #fff; border-bottom: 1px solid #ccc; padding: 8px 12px; }
  header h1 { font-size: 16px; margin: 0 0 6px 0; }
  .controls { display: flex; flex-wrap: wrap; gap: 10px; align-items: center; }
  .controls label { display: flex; gap: 4px; align-items: center; }
  .controls input[type=number] { width: 5em; }
  .legend span.sw { display: inline-block; width: 18px; height: 0; border-top: 3px solid; margin: 0 4px 3px 8px; }
  #cards { display: flex; flex-direction: column; gap: 10px; padding: 10px 12px; }
  .card { background: #fff; border: 1px solid #ddd; border-radius: 4px; padding: 8px 10px; display: flex; gap: 14px; align-items: flex-start; }
  .imgs { display: grid; grid-template-columns: repeat(var(--cols, 1), minmax(0, var(--side, 384px))); gap: 6px;
          flex: 0 1 auto; min-width: 0; max-width: 62%; }
  .imgs svg { width: 100%; height: auto; display: block; background: #ddd; }
  .text { flex: 1; min-width: 0; }
  .head { font-weight: 600; margin-bottom: 4px; }
  .badge { display: inline-block; padding: 0 6px; border-radius: 3px; background: #eee; margin-left: 6px; font-weight: 400; }
  pre { white-space: pre-wrap; word-break: break-word; background: #f7f7f7; padding: 6px; margin: 4px 0; max-height: 22em; overflow: auto; }
  table.rw { border-collapse: collapse; margin: 4px 0; }
  table.rw td { border: 1px solid #e2e2e2; padding: 1px 6px; }
  .note { color: #a33; }
  .dim { color: #666; }
  .pager { padding: 4px 12px 20px; }
</style></head>
<body>
<header>
  <h1 id="title">__TITLE__</h1>
  <div class="controls">
    <label>task <select id="f-task"></select></label>
    <label>step <select id="f-step"></select></label>
    <label>reward ≥ <input id="f-min" type="number" step="0.05"></label>
    <label>≤ <input id="f-max" type="number" step="0.05"></label>
    <label>search <input id="f-q" type="search" placeholder="id or text"></label>
    <label>order <select id="f-sort">
      <option value="file">file order</option><option value="reward-desc">reward, high first</option>
      <option value="reward-asc">reward, low first</option><option value="adv-desc">|advantage|, high first</option>
    </select></label>
    <span id="count" class="dim"></span>
    <span class="legend"><span class="sw" style="border-color:__COLOR_GT__"></span>ground truth<span
      class="sw" style="border-color:__COLOR_PRED__"></span>predicted<span
      class="sw" style="border-color:__COLOR_REGION__; border-top-style: dashed"></span>region in the question</span>
  </div>
</header>
<div id="cards"></div>
<div class="pager"><button id="prev">previous</button> <span id="page" class="dim"></span> <button id="next">next</button></div>
<script id="info" type="application/json">__INFO__</script>
<script id="images" type="application/json">__IMAGES__</script>
<script id="rows" type="application/json">__ROWS__</script>
<script>
"use strict";
const INFO = JSON.parse(document.getElementById("info").textContent);
const IMAGES = JSON.parse(document.getElementById("images").textContent);
const ROWS = JSON.parse(document.getElementById("rows").textContent);
const SVG = "http://www.w3.org/2000/svg";
const $ = (id) => document.getElementById(id);
let page = 0;

function el(tag, attrs, text) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined && text !== null) e.textContent = text;
  return e;
}
function fmt(v) { return v === null || v === undefined ? "–" : (Number.isInteger(v) ? String(v) : v.toFixed(3)); }

function options(select, values, label) {
  select.appendChild(el("option", {value: ""}, "all"));
  for (const [v, n] of values) select.appendChild(el("option", {value: String(v)}, `${label(v)} (${n})`));
}
function counts(key) {
  const m = new Map();
  for (const r of ROWS) if (r[key] !== null && r[key] !== undefined) m.set(r[key], (m.get(r[key]) || 0) + 1);
  return [...m.entries()].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
}

function rect(svg, b, color, w, dashed, title) {
  // a dark halo under a coloured core: visible on bright and dark images alike
  for (const [stroke, width] of [["rgba(0,0,0,0.55)", w + 2], [color, w]]) {
    const r = document.createElementNS(SVG, "rect");
    r.setAttribute("x", b[0]); r.setAttribute("y", b[1]);
    r.setAttribute("width", Math.max(b[2] - b[0], 0)); r.setAttribute("height", Math.max(b[3] - b[1], 0));
    r.setAttribute("fill", "none"); r.setAttribute("stroke", stroke); r.setAttribute("stroke-width", width);
    r.setAttribute("vector-effect", "non-scaling-stroke");
    r.setAttribute("shape-rendering", "crispEdges");
    if (dashed) r.setAttribute("stroke-dasharray", "6 4");
    const t = document.createElementNS(SVG, "title"); t.textContent = title; r.appendChild(t);
    svg.appendChild(r);
  }
}

function picture(row, k, idx) {
  const im = IMAGES[k];
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", `0 0 ${im.w} ${im.h}`);
  svg.setAttribute("class", "pic");
  const img = document.createElementNS(SVG, "image");
  img.setAttribute("href", im.src); img.setAttribute("x", 0); img.setAttribute("y", 0);
  img.setAttribute("width", im.w); img.setAttribute("height", im.h);
  img.setAttribute("preserveAspectRatio", "none");
  const t = document.createElementNS(SVG, "title"); t.textContent = `${im.path} (${im.w}×${im.h})`; img.appendChild(t);
  svg.appendChild(img);
  if (row.on.includes(idx)) {
    const noFrame = row.notes.some((n) => n.startsWith("no frame"));
    if (row.region) rect(svg, row.region, INFO.colors.region, 3, true, `region ${JSON.stringify(row.region)}`);
    for (const b of row.gt) rect(svg, b, INFO.colors.gt, 3, false, `ground truth ${JSON.stringify(b.map(Math.round))}`);
    for (const b of row.pred) rect(svg, b, INFO.colors.pred, 3, noFrame, `predicted ${JSON.stringify(b.map(Math.round))}`);
  }
  return svg;
}

function render_card(row) {
  const c = el("div", {class: "card", "data-i": row.i, "data-task": row.task});
  const n = row.images.length, cols = n <= 2 ? n : n <= 4 ? 2 : 4;  // a 2x2 grid for 4 images, not a row of 4
  const imgs = el("div", {class: "imgs", style: `--cols: ${cols}; --side: ${n > 4 ? 192 : 384}px`});
  row.images.forEach((k, idx) => imgs.appendChild(picture(row, k, idx)));
  if (row.images.length) c.appendChild(imgs);
  const t = el("div", {class: "text"});
  const head = el("div", {class: "head"}, `${row.task} · ${row.id}`);
  if (row.step !== null) head.appendChild(el("span", {class: "badge"}, `step ${fmt(row.step)}` + (row.sample !== null && row.sample !== undefined ? ` · sample ${row.sample}` : "")));
  head.appendChild(el("span", {class: "badge"}, `reward ${fmt(row.total)}`));
  if (row.advantage !== null) head.appendChild(el("span", {class: "badge"}, `advantage ${fmt(row.advantage)}`));
  if (row.length !== null) head.appendChild(el("span", {class: "badge"}, `${fmt(row.length)} tokens${row.truncated ? ", truncated" : ""}`));
  t.appendChild(head);
  if (row.question) { t.appendChild(el("div", {class: "dim"}, "question")); t.appendChild(el("pre", {}, row.question)); }
  t.appendChild(el("div", {class: "dim"}, "completion"));
  t.appendChild(el("pre", {class: "completion"}, row.completion));
  const tbl = el("table", {class: "rw"});
  const names = Object.keys(row.rewards);
  const tr1 = el("tr"), tr2 = el("tr");
  for (const n of names) { tr1.appendChild(el("td", {class: "dim"}, n)); tr2.appendChild(el("td", {}, fmt(row.rewards[n]))); }
  tbl.appendChild(tr1); tbl.appendChild(tr2);
  if (names.length) t.appendChild(tbl);
  t.appendChild(el("div", {}, "answer: ")).appendChild(el("code", {}, row.answer));
  if (row.parsed !== null) t.appendChild(el("div", {}, "parsed: ")).appendChild(el("code", {}, row.parsed));
  if (row.pred.length || row.gt.length) {
    t.appendChild(el("div", {class: "dim"}, `boxes: ${row.gt.length} ground truth, ${row.pred.length} predicted`));
  }
  for (const n of row.notes) t.appendChild(el("div", {class: "note"}, n));
  c.appendChild(t);
  return c;
}

function state() {
  return {task: $("f-task").value, step: $("f-step").value, min: $("f-min").value, max: $("f-max").value,
          q: $("f-q").value, sort: $("f-sort").value};
}
function filtered() {
  const s = state();
  const lo = s.min === "" ? -Infinity : Number(s.min), hi = s.max === "" ? Infinity : Number(s.max);
  const q = s.q.toLowerCase();
  let rows = ROWS.filter((r) =>
    (!s.task || r.task === s.task) && (!s.step || String(r.step) === s.step) &&
    ((s.min === "" && s.max === "") || (r.total !== null && r.total >= lo && r.total <= hi)) &&
    (!q || r.id.toLowerCase().includes(q) || r.completion.toLowerCase().includes(q)));
  const val = (r, k) => (r[k] === null ? -Infinity : r[k]);
  if (s.sort === "reward-desc") rows = rows.slice().sort((a, b) => val(b, "total") - val(a, "total"));
  if (s.sort === "reward-asc") rows = rows.slice().sort((a, b) => val(a, "total") - val(b, "total"));
  if (s.sort === "adv-desc") rows = rows.slice().sort((a, b) => Math.abs(b.advantage || 0) - Math.abs(a.advantage || 0));
  return rows;
}
function render() {
  const rows = filtered();
  const pages = Math.max(1, Math.ceil(rows.length / INFO.page_size));
  page = Math.min(page, pages - 1);
  const box = $("cards");
  box.replaceChildren();
  for (const r of rows.slice(page * INFO.page_size, (page + 1) * INFO.page_size)) box.appendChild(render_card(r));
  $("count").textContent = `${rows.length} of ${ROWS.length} rows` + (INFO.bad_lines ? ` (${INFO.bad_lines} unreadable lines skipped)` : "");
  $("page").textContent = `page ${page + 1} of ${pages}`;
  $("prev").disabled = page === 0; $("next").disabled = page >= pages - 1;
  const s = state();
  const hash = Object.entries(s).filter(([k, v]) => v !== "" && !(k === "sort" && v === "file"))
    .map(([k, v]) => `${k}=${encodeURIComponent(v)}`).join("&");
  if (location.hash.slice(1) !== hash) history.replaceState(null, "", hash ? `#${hash}` : location.pathname + location.search);
}

options($("f-task"), counts("task"), (v) => v);
options($("f-step"), counts("step"), (v) => fmt(v));
if (!ROWS.some((r) => r.step !== null)) $("f-step").parentElement.style.display = "none";
for (const part of location.hash.slice(1).split("&")) {
  const [k, v] = part.split("=");
  const input = $(`f-${k}`);
  if (input && v !== undefined) input.value = decodeURIComponent(v);
}
for (const id of ["f-task", "f-step", "f-min", "f-max", "f-q", "f-sort"]) $(id).addEventListener("input", () => { page = 0; render(); });
$("prev").addEventListener("click", () => { page--; render(); window.scrollTo(0, 0); });
$("next").addEventListener("click", () => { page++; render(); window.scrollTo(0, 0); });
render();
</script>
</body></html>
"""


if __name__ == "__main__":
    sys.exit(main())
