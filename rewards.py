"""Rewards: the ablation surface. Edit the table below, rerun training, compare.

A completion is what the policy wrote, e.g.

    "<think>Two storage tanks sit left of the road.</think>"
    "<answer>[12, 40, 60, 88], [70, 40, 118, 90]</answer>"

and its reward is

    total = FORMAT_WEIGHT × format_reward(completion) + Σ weight × reward(completion, answer, frame)

over the (reward, weight) entries of its task in TASK_REWARDS. Worked example:

    >>> score("counting", "<think>I see four planes... no, five.</think><answer>five</answer>", 5)
    {'format': 1.0, 'count_accuracy': 1.0, 'accuracy': 1.0, 'total': 2.0}
    >>> score("counting", "<answer>4</answer>", 5)          # no <think>: format 0, partial credit
    {'format': 0.0, 'count_accuracy': 0.8, 'accuracy': 0.8, 'total': 0.8}

A reward is a function `fn(completion, answer, frame=None) -> float` written in this file and named in the
table (or any callable put in the table). It may ask for more context with keyword-only arguments, which
`score` passes when a reward declares them:

    record              the data.Record being answered (meta, image sizes, question)
    completion_tokens   the completion's length in tokens
    group               all G completions sampled for the same prompt (for group-level rewards)

A length penalty in three lines (then add ("brevity", 0.1) to a task's entry):

    def brevity(completion, answer, frame=None, *, completion_tokens=0):
        return 1.0 - min(completion_tokens, 256) / 256

The contract: every component `score` returns is a finite float in [0, 1], for any completion and any
function in the table. A reward that raises or returns NaN/inf counts 0, one outside [0, 1] is clamped,
and a warning names the function once; the run goes on.

What the trainer logs: every component under its own name (reward/<name>), the weighted total, and the
task's accuracy (acc/<task>): the unweighted mean of the rewards that ACCURACY names for it, computed even
when they are off the table, so it means the same thing whatever the weights.

Parsing (tags, numbers, labels, boxes, IoU, text similarity) lives in parsing.py.
"""

from __future__ import annotations

import functools
import inspect
import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

from geovlm import parsing as P
from geovlm.frames import Frame
from geovlm.tasks import TASKS

# ----------------------------------------------------------------------------- the table
FORMAT_WEIGHT = 1.0  # weight of format_reward in every task's total; 0 ablates it

# task -> [(reward function, or its name in this file; weight)]
TASK_REWARDS: dict[str, list[tuple[str | Callable[..., float], float]]] = {
    "classification": [("exact_match", 1.0)],
    "multilabel": [("label_f1", 1.0)],
    "vqa": [("vqa_exact_match", 1.0)],  # or ("vqa_token_jaccard", 1.0): partial credit
    "counting": [("count_accuracy", 1.0)],
    "grounding": [("grounding_iou", 1.0)],  # or ("grounding_hit", 1.0): only IoU >= MATCH_IOU pays
    "detection": [("detection_score", 1.0)],  # or ("detection_f1", 1.0): a wrong box always costs
    "region_caption": [("caption_rouge_l", 1.0)],
    "caption": [("caption_rouge_l", 1.0)],  # or caption_levenshtein, or caption_hslr (sentence embeddings)
    "grounded_caption": [("grounded_caption_text", 0.5), ("grounded_caption_boxes", 0.5)],
    "change_caption": [("caption_rouge_l", 1.0)],
    "change_detection": [("change_detection_score", 1.0)],
    "temporal_classification": [("exact_match", 1.0)],
}

# task -> the reward(s) whose unweighted mean is logged as acc/<task>, whatever the table's weights
ACCURACY: dict[str, tuple[str, ...]] = {
    "classification": ("exact_match",),
    "multilabel": ("label_f1",),
    "vqa": ("vqa_exact_match",),
    "counting": ("count_accuracy",),
    "grounding": ("grounding_iou",),
    "detection": ("detection_score",),
    "region_caption": ("caption_rouge_l",),
    "caption": ("caption_rouge_l",),
    "grounded_caption": ("grounded_caption_text", "grounded_caption_boxes"),
    "change_caption": ("caption_rouge_l",),
    "change_detection": ("change_detection_score",),
    "temporal_classification": ("exact_match",),
}

MATCH_IOU = 0.5  # detection-style rewards count a match at IoU >= this
HSLR_WEIGHT = 0.5  # caption_hslr = w × cosine(sentence embeddings) + (1 - w) × ROUGE-L


# ----------------------------------------------------------------------------- the rewards
def format_reward(completion: str, answer: Any = None, frame: Frame | None = None) -> float:
    """1.0 iff the whole completion is `<think>…</think> <answer>…</answer>`, else 0.0."""
    return float(P.is_well_formed(completion))


def exact_match(completion: str, answer: Any, frame: Frame | None = None) -> float:
    """Labels (classification, temporal classification, change labels): normalised exact match."""
    pred = P.normalize_text(P.extract_answer(completion))
    return float(bool(pred) and pred == P.label_text(answer))


def label_f1(completion: str, answer: Any, frame: Frame | None = None) -> float:
    """Multi-label: F1 of the predicted and true label sets (recall alone is won by listing every label)."""
    gt = {P.label_key(a) for a in answer} - {""}
    pred = set(P.parse_labels(P.extract_answer(completion), known=list(answer)))
    if not pred or not gt:
        return 0.0
    return 2 * len(pred & gt) / (len(pred) + len(gt))


def vqa_exact_match(completion: str, answer: Any, frame: Frame | None = None) -> float:
    """VQA: normalised exact match; a leading yes/no is the answer ("Yes, two ships." == "yes")."""
    pred = P.vqa_answer(P.extract_answer(completion))
    return float(bool(pred) and pred == P.label_text(answer))


def vqa_token_jaccard(completion: str, answer: Any, frame: Frame | None = None) -> float:
    """VQA option: Jaccard of the normalised token sets (partial credit for multi-word answers)."""
    pred, gt = set(P.vqa_answer(P.extract_answer(completion)).split()), set(P.label_text(answer).split())
    return len(pred & gt) / len(pred | gt) if pred and gt else 0.0


def count_accuracy(completion: str, answer: Any, frame: Frame | None = None) -> float:
    """Counting: 1 if exact, else partial credit max(0, 1 - |pred - gt| / max(gt, 1))."""
    pred = P.parse_number(P.extract_answer(completion))
    if pred is None:
        return 0.0
    gt = float(answer)
    return max(0.0, 1.0 - abs(pred - gt) / max(abs(gt), 1.0))


def grounding_iou(completion: str, answer: Any, frame: Frame | None = None) -> float:
    """Grounding: IoU of the first predicted box with the true box."""
    pred, gt = P.parse_boxes(P.extract_answer(completion), frame), P.answer_boxes(answer)
    return P.box_iou(pred[0], gt[0]) if pred and gt else 0.0


def grounding_hit(completion: str, answer: Any, frame: Frame | None = None) -> float:
    """Grounding: 1 when the first predicted box has IoU >= MATCH_IOU with the true box (acc@0.5 as a reward,
    VLM-R1's REC reward). Plain IoU pays a hedged box that overlaps a little; this pays only a hit."""
    return float(grounding_iou(completion, answer, frame) >= MATCH_IOU)


def _detection(text: str, answer: Any, frame: Frame | None) -> float:
    gt = P.answer_boxes(answer)
    if not gt:  # nothing to find: only an explicit empty answer ("none", "[]") is right
        return float(P.says_none(text) and not P.iter_boxes(text))
    return P.matched_iou_score(P.parse_boxes(text, frame), gt, MATCH_IOU)


def detection_score(completion: str, answer: Any, frame: Frame | None = None) -> float:
    """Detection: Hungarian one-to-one matching, Σ IoU of matches >= MATCH_IOU / max(#pred, #gt)."""
    return _detection(P.extract_answer(completion), answer, frame)


def detection_f1(completion: str, answer: Any, frame: Frame | None = None) -> float:
    """Detection, F1's denominator: 2 Σ IoU of matches >= MATCH_IOU / (#pred + #gt): each wrong box costs."""
    text = P.extract_answer(completion)
    pred, gt = P.parse_boxes(text, frame), P.answer_boxes(answer)
    if not pred or not gt:  # nothing written, or nothing to find: as detection_score
        return _detection(text, answer, frame)
    return P.matched_iou_score(pred, gt, MATCH_IOU) * 2 * max(len(pred), len(gt)) / (len(pred) + len(gt))


def change_detection_score(completion: str, answer: Any, frame: Frame | None = None) -> float:
    """Change detection: like detection when the answer is boxes; exact match when it is a label."""
    if isinstance(answer, str):
        return exact_match(completion, answer, frame)
    return _detection(P.extract_answer(completion), answer, frame)


def caption_rouge_l(completion: str, answer: Any, frame: Frame | None = None) -> float:
    """Captions: ROUGE-L F1, the best over the references."""
    pred = P.extract_answer(completion)
    return max((P.rouge_l(pred, ref) for ref in P.answer_references(answer)), default=0.0)


def caption_levenshtein(completion: str, answer: Any, frame: Frame | None = None) -> float:
    """Captions: Levenshtein ratio, the best over the references."""
    pred = P.extract_answer(completion)
    return max((P.levenshtein_ratio(pred, ref) for ref in P.answer_references(answer)), default=0.0)


def caption_hslr(completion: str, answer: Any, frame: Frame | None = None) -> float:
    """Captions: HSLR_WEIGHT × embedding cosine + (1 - HSLR_WEIGHT) × ROUGE-L, best reference; ROUGE-L alone
    without an embedding model (parsing.set_embedding_model / GEOVLM_EMBEDDING_MODEL)."""
    pred, refs = P.extract_answer(completion), P.answer_references(answer)
    if not pred.strip() or not refs:
        return 0.0
    lexical = [P.rouge_l(pred, ref) for ref in refs]
    vectors = P.embed_texts([pred, *refs])
    if vectors is None:
        return max(lexical)
    cosines = [min(1.0, max(0.0, float(vectors[0] @ v))) for v in vectors[1:]]
    return max(HSLR_WEIGHT * c + (1 - HSLR_WEIGHT) * lex for c, lex in zip(cosines, lexical))


def grounded_caption_text(completion: str, answer: Any, frame: Frame | None = None) -> float:
    """Grounded caption, text part: ROUGE-L F1 of the caption with its boxes removed."""
    pred = P.strip_boxes(P.extract_answer(completion))
    return max((P.rouge_l(pred, ref) for ref in P.answer_references(answer)), default=0.0)


def grounded_caption_boxes(completion: str, answer: Any, frame: Frame | None = None) -> float:
    """Grounded caption, box part: the detection score of the caption's boxes; with no box to find, a caption
    that writes none is right (as detection's explicit empty answer is)."""
    text, gt = P.extract_answer(completion), answer.get("boxes") or []
    if not P.answer_boxes(gt):
        return float(bool(text.strip()) and not P.iter_boxes(text))
    return _detection(text, gt, frame)


# ----------------------------------------------------------------------------- score: the contract
CONTEXT = ("record", "completion_tokens", "group")  # what a reward may ask for by keyword
_warned: set[tuple[str, str]] = set()


def resolve(entry: str | Callable[..., float]) -> Callable[..., float]:
    """A table entry's function: itself, or the function of that name in this file."""
    fn = globals().get(entry) if isinstance(entry, str) else entry
    if not callable(fn):
        raise ValueError(f"rewards.TASK_REWARDS names {entry!r}, which is no function in rewards.py")
    return fn


def _same_tasks(table: dict, name: str) -> None:
    if set(table) != set(TASKS):
        missing, unknown = sorted(set(TASKS) - set(table)), sorted(set(table) - set(TASKS))
        raise ValueError(f"rewards.{name}: no entry for task(s) {missing}; unknown task(s) {unknown}")


def check_accuracy() -> None:
    """ACCURACY names, for exactly the registry's tasks, rewards of this file (checked on import)."""
    _same_tasks(ACCURACY, "ACCURACY")
    for names in ACCURACY.values():
        for name in names:
            resolve(name)


def check_table() -> None:
    """Every task has an entry and every entry resolves: a typo in the table fails before any model loads."""
    _same_tasks(TASK_REWARDS, "TASK_REWARDS")
    for entries in TASK_REWARDS.values():
        for entry, _ in entries:
            resolve(entry)


@functools.cache
def _asks_for(fn: Callable[..., float]) -> frozenset[str]:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return frozenset()
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return frozenset(CONTEXT)
    return frozenset(name for name in CONTEXT if name in params)


def _warn_once(fn: Callable[..., float], what: str, message: str) -> None:
    name = getattr(fn, "__name__", repr(fn))
    if (name, what) not in _warned:
        _warned.add((name, what))
        text = f"reward {name}: {message} (warned once per reward; the run goes on)"
        warnings.warn(text, RuntimeWarning, stacklevel=3)


def call_reward(
    fn: Callable[..., float], completion: str, answer: Any, frame: Frame | None = None, **context: Any
) -> float:
    """fn(completion, answer, frame, + the context it asks for), made total: a finite float in [0, 1]."""
    try:
        value = float(
            fn(completion, answer, frame, **{k: v for k, v in context.items() if k in _asks_for(fn)})
        )
    except Exception as exc:  # a reward must never end a run: unreadable means 0
        _warn_once(fn, "raised", f"raised {type(exc).__name__}: {exc}; counted as 0")
        return 0.0
    if not math.isfinite(value):
        _warn_once(fn, "nan", f"returned {value}; counted as 0")
        return 0.0
    if not 0.0 <= value <= 1.0:
        _warn_once(fn, "range", f"returned {value}, outside [0, 1]; clamped")
        return min(1.0, max(0.0, value))
    return value


def score(
    task: str,
    completion: str,
    answer: Any,
    frame: Frame | None = None,
    *,
    record: Any = None,
    completion_tokens: int | None = None,
    group: Sequence[str] | None = None,
) -> dict[str, float]:
    """Every reward of the task for one completion: "format", one key per table entry, "accuracy", "total".

    frame=None means boxes in the completion are already in original pixels. An unknown task raises
    ValueError: that is a bug in the caller, not something the model wrote.
    """
    if task not in TASK_REWARDS:
        raise ValueError(f"unknown task {task!r}; known tasks: {', '.join(TASK_REWARDS)}")
    # what the caller does not know (eval has no tokens): the reward's own default
    context = {
        k: v
        for k, v in {"record": record, "completion_tokens": completion_tokens, "group": group}.items()
        if v is not None
    }
    out = {"format": call_reward(format_reward, completion, answer, frame)}
    total = FORMAT_WEIGHT * out["format"]
    for entry, weight in TASK_REWARDS[task]:
        fn = resolve(entry)
        out[fn.__name__] = call_reward(fn, completion, answer, frame, **context)
        total += weight * out[fn.__name__]
    names = ACCURACY.get(task, ())
    accs = [
        out[n] if n in out else call_reward(resolve(n), completion, answer, frame, **context) for n in names
    ]
    out["accuracy"] = sum(accs) / len(accs) if accs else 0.0
    out["total"] = total
    return out


def score_group(
    task: str,
    completions: Sequence[str],
    answer: Any,
    frame: Frame | None = None,
    *,
    record: Any = None,
    completion_tokens: Sequence[int] | None = None,
) -> list[dict[str, float]]:
    """`score` of each of one prompt's G completions (the trainer's call). Rewards that ask for `group` get
    the G texts; caption_hslr's sentence embeddings are computed for the whole group in one batch first."""
    if any(resolve(entry) is caption_hslr for entry, _ in TASK_REWARDS.get(task, ())):
        P.prime_embeddings(completions, answer)
    tokens = list(completion_tokens) if completion_tokens is not None else [None] * len(completions)
    return [
        score(task, text, answer, frame, record=record, completion_tokens=n, group=completions)
        for text, n in zip(completions, tokens)
    ]


check_accuracy()  # the two tables are kept in step with the registry by this, not by hand
