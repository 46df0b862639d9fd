"""The field's metrics, per task, per data set and per split: what eval.py prints and writes.

`score_samples` parses each completion with the task registry's parser (tasks.parse_answer: boxes back to
original pixels through each record's frame), scores it with rewards.score, and computes every task's metrics
(the table is in eval.py's docstring). Each metric function is pure and checked against its reference
library or hand-computed cases in tests/test_metrics.py.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import sys
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import rewards
from geovlm import parsing as P
from geovlm.frames import Frame, frame_from_json, frame_to_json
from geovlm.tasks import CAPTION_SCORING, TASKS, parse_answer

# GeoChat, EarthDial and GeoVLM-R1 leave these RSVQA types out of the mean
VQA_AVERAGE_EXCLUDES = ("count", "area")
MATCH_CAP = 500  # boxes per image matched in metrics (more still count as predictions)


@dataclass
class Sample:
    """One evaluated record: what the model wrote next to what it should have written."""

    task: str
    answer: Any
    completion: str
    frame: Frame | None = None  # None: boxes in the completion are original pixels
    meta: dict = field(default_factory=dict)
    id: str = ""
    # the record's image paths (the viewer draws the boxes on them)
    images: list = field(default_factory=list)
    question: str | None = None  # the record's question (the viewer's cards show it)


# ----------------------------------------------------------------------------- metric functions (pure)
def _div(a: float, b: float) -> float:
    return float(a) / float(b) if b else 0.0


def label_accuracy(preds: Sequence[str | None], gts: Sequence[str]) -> float:
    """Exact match after P.normalize_text; None (unparsed) is wrong."""
    hits = [p is not None and P.normalize_text(p) == P.normalize_text(g) for p, g in zip(preds, gts)]
    return _div(sum(hits), len(hits))


def vqa_metrics(
    preds: Sequence[str | None], gts: Sequence[str], types: Sequence[str | None]
) -> dict[str, float]:
    """Accuracy overall, per question type ("acc_<type>", meta.type), and "type_average": the mean of the
    types' accuracies, count and area left out (VQA_AVERAGE_EXCLUDES, any case) as the RSVQA tables of the
    field do."""
    out = {"accuracy": label_accuracy(preds, gts)}
    by_type: dict[str, list[int]] = defaultdict(list)
    for i, t in enumerate(types):
        if t is not None:
            by_type[str(t)].append(i)
    for t, idx in sorted(by_type.items()):
        out[f"acc_{t}"] = label_accuracy([preds[i] for i in idx], [gts[i] for i in idx])
    averaged = [out[f"acc_{t}"] for t in by_type if t.strip().lower() not in VQA_AVERAGE_EXCLUDES]
    if averaged:
        out["type_average"] = float(np.mean(averaged))
    # GeoVLM-R1's and EarthDial's RSVQA "avg": the questions of those types pooled (EarthDial's RSVQA-LR
    # results give its published 92.70 this way, the mean of the types 93.11)
    pooled = [i for t, idx in by_type.items() if t.strip().lower() not in VQA_AVERAGE_EXCLUDES for i in idx]
    if pooled:
        out["type_pooled"] = label_accuracy([preds[i] for i in pooled], [gts[i] for i in pooled])
    return out


def multilabel_metrics(
    preds: Sequence[Sequence[str] | None], gts: Sequence[Sequence[str]]
) -> dict[str, float]:
    """Micro F1 (pooled counts), macro F1 (mean over the labels that occur in the ground truth), sample F1 and
    sample recall."""
    tp = n_pred = n_gt = 0
    per_label: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])  # tp, fp, fn
    sample_f1, sample_recall = [], []
    for pred, gt in zip(preds, gts):
        p = {P.label_key(x) for x in (pred or [])} - {""}
        g = {P.label_key(x) for x in gt} - {""}
        tp += len(p & g)
        n_pred += len(p)
        n_gt += len(g)
        sample_f1.append(_div(2 * len(p & g), len(p) + len(g)))
        sample_recall.append(_div(len(p & g), len(g)))
        for lab in p | g:
            stats = per_label[lab]
            stats[0] += lab in p and lab in g
            stats[1] += lab in p and lab not in g
            stats[2] += lab in g and lab not in p
    vocab = {P.label_key(x) for gt in gts for x in gt} - {""}
    macro = [
        _div(2 * per_label[lab][0], 2 * per_label[lab][0] + per_label[lab][1] + per_label[lab][2])
        for lab in vocab
    ]
    return {
        "micro_precision": _div(tp, n_pred),
        "micro_recall": _div(tp, n_gt),
        "micro_f1": _div(2 * tp, n_pred + n_gt),
        "macro_f1": float(np.mean(macro)) if macro else 0.0,
        "sample_f1": float(np.mean(sample_f1)) if sample_f1 else 0.0,
        # the share of an image's labels named, averaged: EarthDial's BigEarthNet score (GeoVLM-R1's column)
        "sample_recall": float(np.mean(sample_recall)) if sample_recall else 0.0,
    }


# |error| of one count in the MAE is capped here: one runaway answer ("9" × 300 parses to 1e300; 2.3e113
# was seen) must not hide every other count. Counting benchmarks' true counts are mostly below it.
COUNT_ERROR_CAP = 100.0


def counting_metrics(preds: Sequence[float | None], gts: Sequence[float]) -> dict[str, float]:
    """Exact accuracy over all records (unparsed is wrong); "mae" over the parsed answers only, each |error|
    capped at COUNT_ERROR_CAP (absent when none parsed); "unparsed": the share of answers that held no
    number."""
    if len(gts) == 0:
        return {"accuracy": 0.0, "unparsed": 0.0}
    pairs = [(float(p), float(g)) for p, g in zip(preds, gts) if p is not None]
    out = {"accuracy": _div(sum(p == g for p, g in pairs), len(gts))}
    if pairs:
        out["mae"] = float(np.mean([min(abs(p - g), COUNT_ERROR_CAP) for p, g in pairs]))
    out["unparsed"] = 1.0 - _div(len(pairs), len(gts))
    return out


def _area(b: Sequence[float]) -> float:
    return max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1])


GROUNDING_THRESHOLDS = (0.5, 0.25, 0.7)  # acc@t: the share of queries whose box has IoU >= t with the truth


def grounding_metrics(
    preds: Sequence[Sequence[float] | None], gts: Sequence[Sequence[float]]
) -> dict[str, float]:
    """acc@0.5, acc@0.25, acc@0.7, mean IoU and cumulative IoU (ΣI / ΣU over all queries); a missing box has
    IoU 0 and adds the true box's area to ΣU."""
    if len(gts) == 0:
        return {**{f"acc@{t}": 0.0 for t in GROUNDING_THRESHOLDS}, "mean_iou": 0.0, "cum_iou": 0.0}
    ious, inters, unions = [], [], []
    for p, g in zip(preds, gts):
        iou = P.box_iou(p, g) if p is not None else 0.0
        # from IoU = I / (A + B - I)
        inter = iou * (_area(p) + _area(g)) / (1 + iou) if p is not None else 0.0
        ious.append(iou)
        inters.append(inter)
        unions.append(_area(g) + (_area(p) if p is not None else 0.0) - inter)
    ious_a = np.array(ious)
    return {
        **{f"acc@{t}": float((ious_a >= t).mean()) for t in GROUNDING_THRESHOLDS},
        "mean_iou": float(ious_a.mean()),
        "cum_iou": _div(sum(inters), sum(unions)),
    }


def count_matches(pred: Sequence[Sequence[float]], gt: Sequence[Sequence[float]], thr: float) -> int:
    """Most one-to-one pairs with IoU >= thr (maximum bipartite matching on the thresholded IoUs)."""
    if len(pred) == 0 or len(gt) == 0:
        return 0
    from scipy.optimize import linear_sum_assignment  # 0.5 s of scipy: only box tasks pay it

    ok = P.iou_matrix(pred[:MATCH_CAP], gt) >= thr
    rows, cols = linear_sum_assignment(ok.astype(np.float64), maximize=True)
    return int(ok[rows, cols].sum())


def average_precision(
    preds: Sequence[Sequence[Sequence[float]]], gts: Sequence[Sequence[Sequence[float]]], thr: float = 0.5
) -> float:
    """VOC AP (all-point interpolation), class-agnostic, over all images.

    Generated answers carry no scores, so boxes are ranked by their position in the answer (every image's
    first box before any second box, ties in record order). Matching as in the VOC devkit: a box takes its
    best-IoU ground truth; if that one is already taken, the box is a false positive.
    """
    n_pos = sum(len(g) for g in gts)
    if n_pos == 0:
        return 0.0
    dets = sorted(((rank, i) for i, p in enumerate(preds) for rank in range(len(p))))
    taken = [np.zeros(len(g), dtype=bool) for g in gts]
    tp = np.zeros(len(dets))
    for k, (rank, i) in enumerate(dets):
        if len(gts[i]) == 0:
            continue
        ious = P.iou_matrix([preds[i][rank]], gts[i])[0]
        j = int(ious.argmax())
        if ious[j] >= thr and not taken[i][j]:
            taken[i][j] = True
            tp[k] = 1
    ctp = np.cumsum(tp)
    recall = ctp / n_pos
    precision = ctp / np.arange(1, len(dets) + 1)
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]  # precision envelope, non-increasing in recall
    steps = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))


def hit_precision(
    preds: Sequence[Sequence[Sequence[float]] | None],
    gts: Sequence[Sequence[Sequence[float]]],
    thr: float = 0.5,
) -> float:
    """The share of predicted boxes whose IoU with some true box of their image is >= thr, several boxes
    free to hit the same one: EarthDial's referring, xBD detection and grounding-description score
    (hiyamdebary/EarthDial src/earthdial/eval/rs_detection/eval.py), which GeoVLM-R1 prints as "mAP"."""
    hits = n = 0
    for p, g in zip(preds, gts):
        p = list(p or [])
        n += len(p)
        if p and len(g):
            hits += int((P.iou_matrix(p[:MATCH_CAP], g) >= thr).any(axis=1).sum())
    return _div(hits, n)


def detection_metrics(
    preds: Sequence[Sequence[Sequence[float]] | None], gts: Sequence[Sequence[Sequence[float]]]
) -> dict[str, float]:
    """Precision / recall / F1 at IoU 0.5 and 0.25 (pooled over images, one-to-one), and AP@0.5.

    A prediction is a list of boxes, [] for an explicit empty answer ("none"), None for no answer. Recall@0.5
    is GeoChat's referring accuracy (TP / true boxes). An image with nothing to find adds nothing to recall:
    each box predicted on it is a false positive, an empty answer is not. "empty_accuracy" (only when there
    are such images) is the share of them answered explicitly empty: what the reward pays for
    (rewards._detection).
    """
    boxes = [p or [] for p in preds]
    out = {}
    n_pred, n_gt = sum(len(p) for p in boxes), sum(len(g) for g in gts)
    for thr in (0.5, 0.25):
        tp = sum(count_matches(p, g, thr) for p, g in zip(boxes, gts))
        out[f"precision@{thr}"] = _div(tp, n_pred)
        out[f"recall@{thr}"] = _div(tp, n_gt)
        out[f"f1@{thr}"] = _div(2 * tp, n_pred + n_gt)
        out[f"hit_precision@{thr}"] = hit_precision(boxes, gts, thr)
    out["ap@0.5"] = average_precision(boxes, gts, 0.5)
    empty = [p for p, g in zip(preds, gts) if len(g) == 0]
    if empty:
        out["empty_accuracy"] = _div(sum(p is not None and len(p) == 0 for p in empty), len(empty))
    return out


def rouge_metrics(preds: Sequence[str], refs: Sequence[Sequence[str]]) -> dict[str, float]:
    """ROUGE-1 and ROUGE-L F1 (rouge-score, stemmed) per caption averaged over its references, then over
    captions."""
    scorer = P.rouge_scorer()
    r1, rl = [], []
    for pred, rs in zip(preds, refs):
        scores = [scorer.score(r, pred or "") for r in rs] or [None]
        r1.append(np.mean([s["rouge1"].fmeasure if s else 0.0 for s in scores]))
        rl.append(np.mean([s["rougeL"].fmeasure if s else 0.0 for s in scores]))
    return {"rouge1": float(np.mean(r1)) if r1 else 0.0, "rouge_l": float(np.mean(rl)) if rl else 0.0}


# ---- optional caption metrics: run only where their reference implementations run offline
_WORD_RE = re.compile(r"\w+")
_LEXNAMES = (
    "adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact noun.attribute noun.body "
    "noun.cognition noun.communication noun.event noun.feeling noun.food noun.group noun.location "
    "noun.motive noun.object noun.person noun.phenomenon noun.plant noun.possession noun.process "
    "noun.quantity noun.relation noun.shape noun.state noun.substance noun.time verb.body verb.change "
    "verb.cognition verb.communication verb.competition verb.consumption verb.contact verb.creation "
    "verb.emotion verb.motion verb.perception verb.possession verb.social verb.stative verb.weather "
    "adj.ppl"
).split()
_DEBIAN_WORDNET = Path("/usr/share/wordnet")


def nltk_wordnet_status() -> str | None:
    """None when NLTK's WordNet loads (so NLTK METEOR runs), else why not and how to enable it.

    NLTK's own data (`nltk.download('wordnet')`) needs the network. Debian's WordNet 3.0 packages hold the
    same database; NLTK reads it once it sits in an nltk_data layout with a `lexnames` file, which is built
    here in a cache folder (a one-off copy of ~30 MB).
    """
    try:
        import nltk
        from nltk.corpus import wordnet
    except ImportError:
        return "nltk is not installed (pip install nltk)"
    try:
        wordnet.ensure_loaded()
        return None
    except LookupError:
        pass
    if not (_DEBIAN_WORDNET / "data.noun").exists() or not (_DEBIAN_WORDNET / "index.sense").exists():
        return (
            "no WordNet data for NLTK: apt-get install wordnet-base wordnet-sense-index "
            "(or nltk.download('wordnet') where there is network)"
        )
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "geovlm-r1" / "nltk_data"
    target = cache / "corpora" / "wordnet"
    try:
        if not (target / "lexnames").exists():
            target.mkdir(parents=True, exist_ok=True)
            for pos in ("noun", "verb", "adj", "adv"):
                for name in (f"data.{pos}", f"index.{pos}", f"{pos}.exc"):
                    shutil.copyfile(_DEBIAN_WORDNET / name, target / name)  # NLTK refuses symlinked data
            shutil.copyfile(_DEBIAN_WORDNET / "index.sense", target / "index.sense")
            pos_id = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}
            lines = [f"{i:02d}\t{n}\t{pos_id[n.split('.')[0]]}\n" for i, n in enumerate(_LEXNAMES)]
            (target / "lexnames").write_text("".join(lines))
        if str(cache) not in nltk.data.path:
            nltk.data.path.insert(0, str(cache))
        wordnet.ensure_loaded()
        return None
    except Exception as exc:  # an optional metric: report, never fail the evaluation
        return f"NLTK cannot read Debian's WordNet ({exc})"


def nltk_meteor(preds: Sequence[str], refs: Sequence[Sequence[str]]) -> float:
    """Mean NLTK METEOR (lowercased word tokens; several references: NLTK's own max over them)."""
    from nltk.translate.meteor_score import meteor_score

    scores = []
    for pred, rs in zip(preds, refs):
        hyp = _WORD_RE.findall((pred or "").lower())
        ref_tokens = [_WORD_RE.findall(r.lower()) for r in rs]
        scores.append(meteor_score(ref_tokens, hyp) if hyp and any(ref_tokens) else 0.0)
    return float(np.mean(scores)) if scores else 0.0


def coco_status() -> str | None:
    """None when pycocoevalcap and Java are there (BLEU, METEOR 1.5, ROUGE-L, CIDEr-D), else how to enable
    them."""
    try:
        import pycocoevalcap  # noqa: F401
    except ImportError:
        return "pycocoevalcap is not installed (pip install -r requirements-eval.txt)"
    if shutil.which("java") is None:
        return (
            "pycocoevalcap needs Java for its tokenizer and METEOR 1.5 (apt-get install default-jre-headless)"
        )
    return None


def coco_metrics(preds: Sequence[str], refs: Sequence[Sequence[str]], meteor: Any = True) -> dict[str, float]:
    """coco-caption numbers: PTB tokenizer, BLEU-1/4, METEOR 1.5, ROUGE-L (β = 1.2), CIDEr-D (corpus level).

    METEOR 1.5 starts a JVM that loads its paraphrase table (~10 s on 2 cores): meteor=False skips it, and a
    running pycocoevalcap Meteor passed as `meteor` is reused (evaluate() starts one for all its groups).
    """
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    keep = [i for i, rs in enumerate(refs) if rs]
    # one tokenizer run (one JVM start) for references and hypotheses: keys ("g", i) and ("r", i)
    both = {("g", i): [{"caption": r} for r in refs[i]] for i in keep}
    both |= {("r", i): [{"caption": preds[i] or ""}] for i in keep}
    tokens = PTBTokenizer().tokenize(both)
    gts = {i: tokens[("g", i)] for i in keep}
    # no empty hypotheses
    res = {i: [tokens[("r", i)][0] if tokens[("r", i)][0].strip() else "none"] for i in keep}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    rouge, _ = Rouge().compute_score(gts, res)
    cider, _ = Cider().compute_score(gts, res)
    out = {
        "bleu1": float(bleu[0]),
        "bleu4": float(bleu[3]),
        "rouge_l_coco": float(rouge),
        "cider": float(cider),
    }
    if meteor is True:
        scorer = Meteor()
        try:
            out["meteor_coco"] = float(scorer.compute_score(gts, res)[0])
        finally:
            del scorer  # stops its Java process
    elif meteor:
        out["meteor_coco"] = float(meteor.compute_score(gts, res)[0])
    return out


# --------------------------------------------------------------------------- the referring / grounding splits
# GeoChat-bench referring and VRSBench report grounding by object size and by single / multiple objects.
SPLITS = ("small", "medium", "large", "single", "multiple")  # in table order
# COCO's ranges in original-image pixels: small < 32², medium < 96² <= large
SMALL_AREA, LARGE_AREA = (32**2, 96**2)


def size_split(s: Sample) -> str | None:
    """small / medium / large: meta.size_group (VRSBench's) when the record has one, else by the area of its
    true box (the mean area when several) in the COCO ranges SMALL_AREA, LARGE_AREA; None without a box."""
    given = str(s.meta.get("size_group", "")).strip().lower()
    if given in SPLITS[:3]:
        return given
    boxes = P.answer_boxes(s.answer)
    if not boxes:
        return None
    area = float(np.mean([_area(b) for b in boxes]))
    return "small" if area < SMALL_AREA else "medium" if area < LARGE_AREA else "large"


def multiplicity_split(s: Sample) -> str | None:
    """single / multiple: one or several objects of the referred class in the image. From meta.single or
    meta.unique (VRSBench's) when a boolean, or meta.class_count (objects of that class in the image); else,
    for detection-style referring, the number of true boxes; None when unknown (a grounding record without
    them)."""
    for key in ("single", "unique"):
        if isinstance(s.meta.get(key), bool):
            return "single" if s.meta[key] else "multiple"
    count = s.meta.get("class_count")
    if isinstance(count, int) and not isinstance(count, bool) and count > 0:
        return "single" if count == 1 else "multiple"
    if s.task == "detection":
        n = len(P.answer_boxes(s.answer))
        return None if n == 0 else "single" if n == 1 else "multiple"
    return None


def reference_splits(s: Sample) -> list[str]:
    """The splits a grounding / detection record belongs to (at most one size, one multiplicity); []
    otherwise."""
    if not TASKS[s.task].splits:
        return []
    return [x for x in (size_split(s), multiplicity_split(s)) if x is not None]


def _ordered(metrics: dict) -> None:
    """Tasks and data sets by name ("all" first), splits in SPLITS order: tables and files read the same each
    run."""
    metrics["tasks"] = dict(sorted(metrics["tasks"].items()))
    metrics["datasets"] = {d: dict(sorted(ts.items())) for d, ts in sorted(metrics["datasets"].items())}
    metrics["splits"] = {
        d: {t: {k: by[k] for k in SPLITS if k in by} for t, by in sorted(ts.items())}
        for d, ts in sorted(metrics["splits"].items(), key=lambda kv: (kv[0] != "all", kv[0]))
    }


# ----------------------------------------------------------------------------- parsing and per-sample scoring
def parse_sample(s: Sample) -> Any:
    """The sample's parsed answer (tasks.parse_answer), typed to match its ground truth."""
    if s.task == "change_detection":  # read as what its truth is: a label, or boxes (read like detection's)
        return parse_answer(
            "classification" if isinstance(s.answer, str) else "detection", s.completion, s.frame
        )
    known = s.answer if s.task == "multilabel" and isinstance(s.answer, list) else ()
    return parse_answer(s.task, s.completion, s.frame, known_labels=known)


def _label_scores(samples, parsed, answers, extras) -> dict[str, float]:
    return {"accuracy": label_accuracy(parsed, answers)}


def _vqa_scores(samples, parsed, answers, extras) -> dict[str, float]:
    return vqa_metrics(parsed, answers, [s.meta.get("type") for s in samples])


def _multilabel_scores(samples, parsed, answers, extras) -> dict[str, float]:
    return multilabel_metrics(parsed, answers)


def _counting_scores(samples, parsed, answers, extras) -> dict[str, float]:
    return counting_metrics(parsed, answers)


def _grounding_scores(samples, parsed, answers, extras) -> dict[str, float]:
    truth = [(P.answer_boxes(a) or [[0, 0, 0, 0]])[0] for a in answers]
    return grounding_metrics([p[0] if p else None for p in parsed], truth)


def _detection_scores(samples, parsed, answers, extras) -> dict[str, float]:
    """Boxes scored as detection; change_detection's label answers (a change class) as accuracy."""
    out: dict[str, float] = {}
    box_idx = [i for i, a in enumerate(answers) if not isinstance(a, str)]
    label_idx = [i for i, a in enumerate(answers) if isinstance(a, str)]
    if box_idx:
        boxes = [P.answer_boxes(answers[i]) for i in box_idx]
        out |= detection_metrics([parsed[i] for i in box_idx], boxes)
    if label_idx:
        labels = [answers[i] for i in label_idx]
        out["label_accuracy"] = label_accuracy([parsed[i] for i in label_idx], labels)
    return out


def _caption_scores(samples, parsed, answers, extras) -> dict[str, float]:
    texts = [p or "" for p in parsed]
    return caption_metrics(texts, [P.answer_references(a) for a in answers], extras)


def _grounded_caption_scores(samples, parsed, answers, extras) -> dict[str, float]:
    """The caption as a caption, its boxes as detection (box_ keys)."""
    texts = [p["caption"] if p else "" for p in parsed]
    boxes = [P.answer_boxes(a.get("boxes")) for a in answers]
    det = detection_metrics([p["boxes"] if p else [] for p in parsed], boxes)
    refs = [P.answer_references(a) for a in answers]
    return {f"box_{k}": v for k, v in det.items()} | caption_metrics(texts, refs, extras)


def caption_metrics(texts: list[str], refs: list[list[str]], extras: dict[str, Any]) -> dict[str, float]:
    """ROUGE always; NLTK METEOR and coco-caption where `extras` says their offline parts are there."""
    out = rouge_metrics(texts, refs)
    if extras.get("meteor"):
        out["meteor"] = nltk_meteor(texts, refs)
    if extras.get("coco"):
        try:
            out |= coco_metrics(
                texts, refs, meteor=extras["coco_meteor"] if "coco_meteor" in extras else True
            )
        except Exception as exc:  # optional: a broken Java must not lose the other numbers
            print(f"coco-caption metrics failed: {exc}", file=sys.stderr)
    return out


# Task.scoring -> its metrics: fn(samples, parsed answers, true answers, caption extras) -> {metric: value}
SCORERS: dict[str, Callable[[Sequence[Sample], Sequence[Any], list, dict], dict[str, float]]] = {
    "label": _label_scores,
    "vqa": _vqa_scores,
    "multilabel": _multilabel_scores,
    "counting": _counting_scores,
    "grounding": _grounding_scores,
    "detection": _detection_scores,
    "caption": _caption_scores,
    "grounded_caption": _grounded_caption_scores,
}


def task_metrics(
    task: str,
    samples: Sequence[Sample],
    parsed: Sequence[Any],
    scores: Sequence[dict],
    caption_extras: dict[str, Any] | None = None,
) -> dict[str, float]:
    """Every metric of one task over its samples: the rates every task has, then its scorer's (SCORERS)."""
    extras = caption_extras or {}  # {"meteor": bool, "coco": bool, "coco_meteor": a running Meteor or None}
    out: dict[str, float] = {"n": len(samples)}
    if not samples:
        return out
    # exactly <think>…</think><answer>…</answer>; readable as the task's answer type
    out["well_formed"] = float(np.mean([s["format"] for s in scores]))
    out["answer_parsed"] = float(np.mean([p is not None for p in parsed]))
    # the mean total reward, and the task's reward without format
    out["reward"] = float(np.mean([s["total"] for s in scores]))
    out["accuracy_reward"] = float(np.mean([s["accuracy"] for s in scores]))
    scorer = SCORERS[TASKS[task].scoring]
    return out | scorer(samples, parsed, [s.answer for s in samples], extras)


def _as_sample(x: Any) -> Sample:
    if isinstance(x, Sample):
        return x
    if isinstance(x, dict):
        return Sample(
            task=x["task"],
            answer=x["answer"],
            completion=x.get("completion", ""),
            frame=x.get("frame") if isinstance(x.get("frame"), Frame) else frame_from_json(x.get("frame")),
            meta=x.get("meta") or {},
            id=str(x.get("id", "")),
            images=list(x.get("images") or []),
            question=x.get("question"),
        )
    task, answer, completion, frame, meta = x  # a (task, answer, completion, frame, meta) tuple
    return Sample(task=task, answer=answer, completion=completion, frame=frame, meta=meta or {})


def score_samples(
    samples: Sequence[Any],
    out_dir: str | Path | None = None,
    caption_extras: bool = True,
    quiet: bool = False,
) -> dict:
    """Score samples and compute every metric, per task and per task within each meta.dataset.

    samples: `Sample`s, dicts with the same keys, or (task, answer, completion, frame, meta) tuples.
    Writes metrics.json and predictions.jsonl under out_dir when given. Returns the metrics dict.
    """
    samples = [_as_sample(x) for x in samples]
    unknown = sorted({s.task for s in samples} - set(TASKS))
    if unknown:
        raise ValueError(f"unknown task(s) {unknown}; known tasks: {', '.join(TASKS)}")
    parsed = [parse_sample(s) for s in samples]
    scores = [rewards.score(s.task, s.completion, s.answer, s.frame) for s in samples]

    unavailable: dict[str, str] = {}
    extras: dict[str, Any] = {"meteor": False, "coco": False, "coco_meteor": None}
    if caption_extras and any(TASKS[s.task].scoring in CAPTION_SCORING for s in samples):
        reason = nltk_wordnet_status()
        extras["meteor"] = reason is None
        if reason:
            unavailable["meteor"] = reason
        reason = coco_status()
        extras["coco"] = reason is None
        if reason:
            unavailable["bleu1, bleu4, meteor_coco, rouge_l_coco, cider"] = reason
    if caption_extras:
        unavailable["spice"] = "SPICE needs Stanford CoreNLP models fetched at run time: not run"

    groups: dict[tuple[str, str | None, str | None], list[int]] = defaultdict(list)  # (task, dataset, split)
    for i, s in enumerate(samples):
        for dataset in (None, str(s.meta.get("dataset", "unknown"))):
            for split in (None, *reference_splits(s)):
                groups[(s.task, dataset, split)].append(i)
    if extras["coco"]:
        try:
            from pycocoevalcap.meteor.meteor import Meteor

            extras["coco_meteor"] = Meteor()  # one JVM for every caption group of this evaluation
        except Exception as exc:
            unavailable["meteor_coco"] = f"METEOR 1.5 did not start ({exc})"
    metrics: dict[str, Any] = {"n": len(samples), "tasks": {}, "datasets": {}, "splits": {}}
    done: dict[tuple[int, ...], dict] = {}  # the same samples (a task in one data set only): computed once
    try:
        for (task, dataset, split), idx in groups.items():
            key = tuple(idx)
            if key not in done:
                done[key] = task_metrics(
                    task,
                    [samples[i] for i in idx],
                    [parsed[i] for i in idx],
                    [scores[i] for i in idx],
                    extras,
                )
            if split is not None:
                metrics["splits"].setdefault(dataset or "all", {}).setdefault(task, {})[split] = done[key]
            elif dataset is None:
                metrics["tasks"][task] = done[key]
            else:
                metrics["datasets"].setdefault(dataset, {})[task] = done[key]
    finally:
        extras["coco_meteor"] = None  # drops the last reference: pycocoevalcap's __del__ stops the JVM
    _ordered(metrics)
    metrics["unavailable"] = unavailable

    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=False) + "\n")
        with open(out / "predictions.jsonl", "w") as f:
            for s, p, sc in zip(samples, parsed, scores):
                f.write(
                    json.dumps(
                        {
                            "id": s.id,
                            "task": s.task,
                            "images": s.images,
                            "question": s.question,
                            "completion": s.completion,
                            "parsed": p,
                            "scores": sc,
                            "answer": s.answer,
                            "meta": s.meta,
                            "frame": frame_to_json(s.frame),
                        }
                    )
                    + "\n"
                )
        (out / "table.md").write_text(markdown_table(metrics) + "\n")
    if not quiet:
        print(markdown_table(metrics))
        if out_dir is not None:
            print(f"wrote {Path(out_dir) / 'metrics.json'}, predictions.jsonl and table.md")
    return metrics


RATES = ("well_formed", "answer_parsed")  # every task's two rates, columns of their own in the table


def footer(tasks: Sequence[str]) -> list[str]:
    """What the table's columns mean (the lines for the tasks it shows)."""
    lines = [
        "- well_formed: the share of completions that are exactly `<think>…</think><answer>…</answer>` (the "
        "format reward); answer_parsed: the share whose answer could be read as the task's type (a label, a "
        'number, boxes or an explicit "none", a text).'
    ]
    if "counting" in tasks:
        lines.append(
            f"- counting: mae over the parsed answers only, each |error| capped at {COUNT_ERROR_CAP:g}; "
            "unparsed: the share of answers without a number."
        )
    if any(TASKS[t].splits for t in tasks):
        lines.append(
            f"- grounding / detection splits: small < {math.isqrt(SMALL_AREA)}² px <= medium < "
            f"{math.isqrt(LARGE_AREA)}² px <= large (true box area, or meta.size_group); single / multiple "
            "objects of the referred class. Detection: recall@0.5 is GeoChat's referring accuracy (true "
            'positives / true boxes); empty_accuracy: images with nothing to find answered "none".'
        )
    return [*lines, "- values are fractions (published tables print percentages), except mae and cider."]


def markdown_table(metrics: dict) -> str:
    """One row per task; per data set when a task spans several; per split (size, single / multiple) of
    grounding and detection; then what was not computed and what the columns mean."""
    lines = [
        "| task | dataset | split | n | well_formed | answer_parsed | metrics |",
        "|---|---|---|---:|---:|---:|---|",
    ]

    def row(task: str, dataset: str, split: str, m: dict) -> str:
        rest = " · ".join(f"{k} {v:.4f}" for k, v in m.items() if k not in ("n", *RATES))
        rates = " | ".join(f"{m.get(k, 0.0):.4f}" for k in RATES)
        return f"| {task} | {dataset} | {split} | {m['n']} | {rates} | {rest} |"

    splits = metrics.get("splits", {})
    for task, m in metrics["tasks"].items():
        lines.append(row(task, "all", "all", m))
        lines += [row(task, "all", sp, sm) for sp, sm in splits.get("all", {}).get(task, {}).items()]
        per = [(d, ts[task]) for d, ts in metrics["datasets"].items() if task in ts]
        if len(per) > 1:
            for d, dm in per:
                lines.append(row(task, d, "all", dm))
                lines += [row(task, d, sp, sm) for sp, sm in splits.get(d, {}).get(task, {}).items()]
    if metrics.get("unavailable"):
        lines.append("")
        lines += [f"- not computed: {k}: {v}" for k, v in metrics["unavailable"].items()]
    lines += ["", *footer(list(metrics["tasks"]))]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- the one greedy-evaluation path
