"""Hostile completions stay cheap. A policy writes anything, and a parser that backtracks quadratically turns
one bad completion into minutes of a training step: every parser and reward here must stay linear in the
text's length on long runs of spaces, digits, brackets, tags, commas and newlines, and its caches must not
keep long texts."""

from __future__ import annotations

import random
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rewards
from geovlm import parsing as P
from geovlm import tasks

TASKS = tuple(tasks.TASKS)
ANSWERS = {  # a valid answer of each task (the rewards' other input)
    "classification": "airport",
    "temporal_classification": "urban growth",
    "vqa": "yes",
    "multilabel": ["forest", "river"],
    "counting": 4,
    "grounding": [[10, 10, 60, 60]],
    "detection": [[10, 10, 60, 60], [100, 100, 140, 150]],
    "change_detection": [[10, 10, 60, 60]],
    "caption": ["a plane parked near the runway"],
    "region_caption": "a white plane",
    "change_caption": "two new buildings",
    "grounded_caption": {"caption": "a ship", "boxes": [[10, 10, 60, 60]]},
}
# every function that reads what a model wrote; each is timed on its own
READERS = {
    "extract_answer": P.extract_answer,
    "is_well_formed": P.is_well_formed,
    "parse_boxes": P.parse_boxes,
    "strip_boxes": P.strip_boxes,
    "parse_labels": lambda t: P.parse_labels(t, known=["beaches, dunes, sands", "a and b"]),
    "parse_number": P.parse_number,
    "normalize_text": P.normalize_text,
    "vqa_answer": P.vqa_answer,
    "says_none": P.says_none,
    "rouge_l": lambda t: P.rouge_l(t, "a plane parked near the runway"),
    "levenshtein_ratio": lambda t: P.levenshtein_ratio(t, "a plane parked near the runway"),
    "tasks.parse_answer (every task)": lambda t: [tasks.parse_answer(k, t) for k in TASKS],
    "rewards.score (every task)": lambda t: [rewards.score(k, t, ANSWERS[k]) for k in TASKS],
}
# (opener, run): a run alone, and after the openers a regex once backtracked on ("<" + spaces,
# "{<1><2><3><4>|" + spaces were quadratic: minutes at 100k characters)
CASES = [
    ("", run)
    for run in (" ", "\n", "7", "[", "]", "<answer>", "</think>", ",", "1,", "[1,2,3,4],", " and ", "{<1>")
]
CASES += [
    ("<", " "),
    ("<", "\n"),
    ("{<1><2><3><4>|", " "),
    ("{<1><2><3><4>|<5", " "),
    ("[1, 2, 3, 4", " "),
    ("(1,1)", " "),
    ("twenty", " "),
    ("<think>", "7"),
    ("[", "7"),
]
N = 25_000  # characters; each case is timed at N and 4N


def _text(opener: str, run: str, n: int) -> str:
    return opener + (run * (n // len(run) + 1))[:n] + "x"


def _seconds(fn, text: str) -> float:
    start = time.perf_counter()
    fn(text)
    return time.perf_counter() - start


def _linear(t1: float, t4: float) -> bool:
    """Four times the text, about four times the time: a quadratic reader takes 16x, so 8x (+ 100 ms of slack)
    leaves a factor of two for a loaded machine either way; and 100k characters in well under the 3 s
    allowed."""
    return t4 <= 8 * t1 + 0.1 and t4 <= 3.0


@pytest.fixture(scope="module", autouse=True)
def warm_up():
    # one-off imports (rouge-score, NLTK's stemmer) must not time as a slow parser
    for fn in READERS.values():
        fn("<think>warm up</think><answer>the stemmer and the tokenizer [1, 2, 3, 4]</answer>")


@pytest.mark.parametrize("opener, run", CASES, ids=[repr(o + r) for o, r in CASES])
def test_every_reader_is_linear_on_long_runs(opener, run):
    slow = []
    for name, fn in READERS.items():
        # a quadratic reader fails here in seconds, not minutes; a linear one slowed once by a loaded
        # machine (CI once measured 0.63 s for what takes 0.09 s) gets two more tries, the fastest counts
        half = _text(opener, run, N // 2)
        probe = _seconds(fn, half)
        for _ in range(2):
            if probe <= 0.5:
                break
            probe = min(probe, _seconds(fn, half))
        if probe > 0.5:
            slow.append(f"{name}: {probe:.3f} s at {N // 2} characters")
            continue
        t1, t4 = _seconds(fn, _text(opener, run, N)), _seconds(fn, _text(opener, run, 4 * N))
        for _ in range(3):  # again, the fastest of each: another process may have had the CPU
            if _linear(t1, t4):
                break
            t1 = min(t1, _seconds(fn, _text(opener, run, N)))
            t4 = min(t4, _seconds(fn, _text(opener, run, 4 * N)))
        if not _linear(t1, t4):
            slow.append(f"{name}: {t1:.3f} s at {N}, {t4:.3f} s at {4 * N} characters")
    assert not slow, slow


PIECES = [
    " ",
    "\n",
    "\t",
    "7",
    "1,",
    ",",
    ";",
    "[",
    "]",
    "{",
    "}",
    "<",
    ">",
    "|",
    "(",
    ")",
    ".",
    "-",
    "e",
    "<answer>",
    "</answer>",
    "<think>",
    "</think>",
    " and ",
    "twenty",
    "none",
    "[1, 2, 3, 4]",
    "{<1><2><3><4>|<5>}",
    "é",
    "ſ",
    "ı",
    "İ",
    "٣",
    "𝟓",
]
long_runs = st.lists(st.tuples(st.sampled_from(PIECES), st.integers(1, 3000)), min_size=1, max_size=6).map(
    lambda parts: "".join(piece * k for piece, k in parts)[:100_000]
)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=long_runs)
def test_any_mix_of_long_runs_is_cheap(text):
    for name, fn in READERS.items():
        # a backtracking regex takes minutes; a linear reader up to ~4 s on 100k characters when two other
        # processes share the 2 cores (parse_answer on 46k of "{<1><2><3><4>|<5>}" took 4.4 s so)
        assert _seconds(fn, text) < 15.0, (name, len(text))


CACHES = {
    "normalize_text": P._normalize_short,
    "rouge_tokens": P._rouge_tokens_short,
    "Porter stems": P._stem_short,
}


def test_long_completions_leave_the_caches_small():
    for cache in CACHES.values():
        cache.cache_clear()
    rng = random.Random(0)
    words = "plane ship runway harbor building parked near white".split()
    for i in range(1000):
        junk = "".join(rng.choices("abcdefghij", k=2000)) + str(i)  # one long "word", new every time
        completion = f"<think>{junk}</think><answer>{' '.join(rng.choices(words, k=100))} {junk}</answer>"
        for task in ("caption", "classification", "multilabel"):
            rewards.score(task, completion, ANSWERS[task])
        P.normalize_text(completion)
    sizes = {name: cache.cache_info().currsize for name, cache in CACHES.items()}
    # what is left: the references and labels (short, they recur) and the short words; no completion, no junk
    # word
    assert all(size <= 2 * len(words) for size in sizes.values()), sizes
