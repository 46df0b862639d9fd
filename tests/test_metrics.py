"""eval.py: every metric on hand-made cases, ROUGE against rouge-score, the --predictions CLI end to end."""

from __future__ import annotations

import importlib.util
import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import eval as ev
import rewards
from data import Frame, to_frame
from geovlm import distributed, metrics

ROOT = Path(__file__).resolve().parents[1]


def wrap(answer: str) -> str:
    return f"<think>r</think><answer>{answer}</answer>"


# ----------------------------------------------------------------------------- classification, vqa
def test_label_accuracy():
    assert (
        metrics.label_accuracy(
            ["Airport.", "the Forest", None, "river"], ["airport", "forest", "beach", "lake"]
        )
        == 0.5
    )
    assert metrics.label_accuracy([], []) == 0.0


def test_vqa_per_type_and_average():
    preds = ["yes", "no", "yes", "rural", "urban", "3"]
    gts = ["yes", "yes", "yes", "rural", "rural", "4"]
    types = ["presence", "presence", "comparison", "rural_urban", "rural_urban", "count"]
    m = metrics.vqa_metrics(preds, gts, types)
    assert m["accuracy"] == pytest.approx(3 / 6)
    assert m["acc_presence"] == 0.5 and m["acc_comparison"] == 1.0 and m["acc_rural_urban"] == 0.5
    assert m["acc_count"] == 0.0
    assert m["type_average"] == pytest.approx((0.5 + 1.0 + 0.5) / 3)  # count left out, as the field does
    # RSVQA-HR: presence, comparison, count, area; count and area (any case) stay out of the mean
    m = metrics.vqa_metrics(
        ["yes", "no", "3", "10m2"], ["yes", "yes", "3", "10m2"], ["presence", "comp", "Count", "area"]
    )
    assert m["acc_Count"] == m["acc_area"] == 1.0 and m["type_average"] == pytest.approx((1.0 + 0.0) / 2)


# ----------------------------------------------------------------------------- multilabel, counting
def test_multilabel_micro_macro_by_hand():
    preds = [["forest", "river"], ["forest"], ["beach", "lake"]]
    gts = [["forest"], ["forest", "river"], ["lake"]]
    m = metrics.multilabel_metrics(preds, gts)
    # pooled: tp = 1 + 1 + 1 = 3, predicted 5, true 4
    assert m["micro_precision"] == pytest.approx(3 / 5)
    assert m["micro_recall"] == pytest.approx(3 / 4)
    assert m["micro_f1"] == pytest.approx(2 * 3 / 9)
    # per true label: forest tp2 fp0 fn0 -> 1; river tp0 fp1 fn1 -> 0; lake tp1 -> 1 (beach is not a true
    # label)
    assert m["macro_f1"] == pytest.approx(2 / 3)
    assert m["sample_f1"] == pytest.approx(np.mean([2 / 3, 2 / 3, 2 / 3]))
    assert metrics.multilabel_metrics([None], [["a"]])["micro_f1"] == 0.0


def test_counting_metrics():
    m = metrics.counting_metrics([3, 5, None, 10], [3, 4, 2, 10])
    assert m["accuracy"] == 0.5  # unparsed is wrong
    assert m["mae"] == pytest.approx((0 + 1 + 0) / 3)  # over the parsed answers only
    assert m["unparsed"] == 0.25


def test_counting_mae_is_capped_per_answer():
    # a runaway number (2.3e113 was seen in a run) costs COUNT_ERROR_CAP, not the whole metric
    m = metrics.counting_metrics([2.3e113, 4, 7], [3, 4, 5])
    assert metrics.COUNT_ERROR_CAP == 100
    assert m["mae"] == pytest.approx((100 + 0 + 2) / 3) and m["accuracy"] == pytest.approx(1 / 3)
    # no mae of nothing
    assert metrics.counting_metrics([None, None], [1, 2]) == {"accuracy": 0.0, "unparsed": 1.0}
    assert metrics.counting_metrics([], []) == {"accuracy": 0.0, "unparsed": 0.0}


# ----------------------------------------------------------------------------- boxes
def test_grounding_metrics_by_hand():
    gts = [[0, 0, 10, 10]] * 4
    preds = [[0, 0, 10, 10], [5, 0, 15, 10], [0, 0, 10, 6], None]  # IoU 1, 1/3, 0.6, 0
    m = metrics.grounding_metrics(preds, gts)
    assert m["acc@0.5"] == 0.5
    assert m["acc@0.25"] == 0.75
    assert m["acc@0.7"] == 0.25
    assert m["mean_iou"] == pytest.approx((1 + 1 / 3 + 0.6) / 4)
    # ΣI / ΣU = (100 + 50 + 60 + 0) / (100 + 150 + 100 + 100)
    assert m["cum_iou"] == pytest.approx(210 / 450)


def test_referring_splits_by_hand():
    """Size: meta.size_group, else the true box's area (small < 32², medium < 96² <= large, original pixels);
    single / multiple: meta.unique / meta.single / meta.class_count, else (detection) the number of true
    boxes."""
    small, medium, large = [0, 0, 20, 20], [0, 0, 50, 50], [0, 0, 200, 200]  # 400, 2500, 40000 px²
    g = lambda box, answer, **meta: ("grounding", [box], wrap(str(answer)), None, {"dataset": "D1", **meta})
    samples = [
        g(small, small, unique=True),  # small, single, hit
        g(small, medium, unique=False),  # small, multiple, miss
        g(medium, medium, class_count=1),  # medium, single, hit
        g(large, [0, 0, 200, 120], single=False),  # large, multiple, IoU 0.6
        g(large, large, size_group="Small"),  # meta.size_group wins over the area; multiplicity unknown
        ("grounding", [medium], wrap("none"), None, {"dataset": "D2"}),  # medium, no box written
    ]
    m = metrics.score_samples(samples, caption_extras=False, quiet=True)
    s = m["splits"]["all"]["grounding"]
    assert list(s) == ["small", "medium", "large", "single", "multiple"]
    assert {k: v["n"] for k, v in s.items()} == {
        "small": 3,
        "medium": 2,
        "large": 1,
        "single": 2,
        "multiple": 2,
    }
    assert s["small"]["acc@0.5"] == pytest.approx(2 / 3) and s["medium"]["acc@0.5"] == 0.5
    assert (
        s["large"]["acc@0.5"] == 1.0
        and s["large"]["acc@0.7"] == 0.0
        and s["large"]["mean_iou"] == pytest.approx(0.6)
    )
    assert s["single"]["acc@0.5"] == 1.0 and s["multiple"]["acc@0.5"] == 0.5
    # ΣI / ΣU over the multiple split: (400 + 24000) / (2500 + 40000)
    assert s["multiple"]["cum_iou"] == pytest.approx(24400 / 42500)
    assert m["splits"]["D1"]["grounding"]["small"]["n"] == 3 and "D2" in m["splits"]
    table = metrics.markdown_table(m)
    assert "| grounding | all | small | 3 |" in table and "| grounding | D1 | single | 2 |" in table

    # detection-style referring: single / multiple by the number of true boxes
    A, B = [0, 0, 10, 10], [20, 20, 30, 30]
    det = [
        ("detection", [A], wrap(f"{A}"), None, {}),
        ("detection", [A, B], wrap(f"{A}"), None, {}),
        ("detection", [], wrap("none"), None, {}),
    ]
    s = metrics.score_samples(det, caption_extras=False, quiet=True)["splits"]["all"]["detection"]
    # GeoChat's TP / true boxes
    assert s["single"]["recall@0.5"] == 1.0 and s["multiple"]["recall@0.5"] == 0.5
    # the empty image is in no split
    assert s["single"]["n"] == s["multiple"]["n"] == 1 and s["small"]["n"] == 2


def test_empty_ground_truth_detection_is_consistent_with_the_reward():
    A = [0, 0, 10, 10]
    preds = [[], [A, A], None, [A]]  # explicit "none", two boxes on an empty image, no answer, a hit
    gts = [[], [], [], [A]]
    m = metrics.detection_metrics(preds, gts)
    assert m["precision@0.5"] == pytest.approx(1 / 3)  # the two boxes on the empty image are false positives
    assert m["recall@0.5"] == 1.0 and m["empty_accuracy"] == pytest.approx(1 / 3)
    assert "empty_accuracy" not in metrics.detection_metrics([[A]], [[A]])
    # through parsing: "none" is an (empty) answer, words without a box are none, as rewards._detection scores
    # them
    samples = [
        ("detection", [], wrap(x), None, {}) for x in ("none", "[]", "I see nothing of note", "[0, 0, 5, 5]")
    ]
    m = metrics.score_samples(samples, caption_extras=False, quiet=True)["tasks"]["detection"]
    assert m["empty_accuracy"] == 0.5 and m["answer_parsed"] == 0.75 and m["precision@0.5"] == 0.0
    rewarded = [rewards.score("detection", c, a)["detection_score"] for _, a, c, _, _ in samples]
    assert rewarded == [1.0, 1.0, 0.0, 0.0]
    # change detection with boxes reads its answer the same way
    m = metrics.score_samples(
        [
            ("change_detection", [], wrap("none"), None, {}),
            ("change_detection", [], wrap("new roads"), None, {}),
        ],
        caption_extras=False,
        quiet=True,
    )
    assert m["tasks"]["change_detection"]["empty_accuracy"] == 0.5


def test_compare_reads_old_and_new_column_names(tmp_path):
    old, new = tmp_path / "old", tmp_path / "new"
    old.mkdir(), new.mkdir()
    (old / "metrics.json").write_text(
        json.dumps(
            {"tasks": {"vqa": {"n": 2, "accuracy": 0.5, "format": 0.25, "parsed": 1.0, "reward": 1.0}}}
        )
    )
    (new / "metrics.json").write_text(
        json.dumps(
            {
                "tasks": {
                    "vqa": {"n": 2, "accuracy": 1.0, "well_formed": 0.75, "answer_parsed": 1.0, "reward": 2.0}
                }
            }
        )
    )
    table = ev.compare([str(old), str(new)])
    assert "| vqa | well_formed | 2 | 0.2500 | 0.7500 | +0.5000 |" in table and "format" not in table
    assert "| vqa | answer_parsed | 2 | 1.0000 | 1.0000 | +0.0000 |" in ev.compare(
        [str(old), str(new)], every_metric=True
    )


def _caption_run(out, captions, monkeypatch=None, table=None):
    refs = ["a plane parked near the runway", "two ships in the harbor", "a road through green fields"]
    samples = [("caption", [refs[i % 3]], wrap(captions[i % len(captions)]), None, {}) for i in range(30)] + [
        ("counting", 3, wrap(str(i % 4)), None, {}) for i in range(20)
    ]
    if table is not None:
        monkeypatch.setitem(rewards.TASK_REWARDS, "caption", table)
    samples = [metrics.Sample(*x, id=f"r{i:02d}") for i, x in enumerate(samples)]
    metrics.score_samples(samples, out, caption_extras=False, quiet=True)
    monkeypatch.undo() if monkeypatch is not None else None
    return out


def test_compare_shows_headline_and_table_rewards_with_n_and_intervals(tmp_path, monkeypatch):
    base = _caption_run(tmp_path / "base", ["a plane near the runway", "ships", "a road"])
    ablation = _caption_run(
        tmp_path / "lev",
        ["a plane parked near the runway", "two ships", "a road through fields"],
        monkeypatch,
        [("caption_levenshtein", 1.0)],
    )
    table = ev.compare([str(base), str(ablation)])
    rows = [line for line in table.splitlines() if line.startswith("| caption")]
    # the headline, then the format reward, then the rewards either run's table named
    assert [r.split(" | ")[1] for r in rows] == [
        "rouge_l",
        "well_formed",
        "caption_levenshtein",
        "caption_rouge_l",
    ]
    # the ablation's reward is computed for the baseline too, from its completions
    levenshtein = next(r for r in rows if "caption_levenshtein" in r).split(" | ")
    assert levenshtein[2] == "30" and "–" not in levenshtein[3] and float(levenshtein[3].split()[0]) < 0.6
    rouge = rows[0].split(" | ")
    assert rouge[2] == "30" and re.fullmatch(r"0\.\d{4} \[0\.\d{4}, [01]\.\d{4}\]", rouge[3])
    low, high = map(float, re.findall(r"[\d.]+", rouge[3])[1:])
    assert low < float(rouge[3].split()[0]) < high
    assert re.fullmatch(r"\+0\.\d{4} \[[-+]\d\.\d{4}, \+\d\.\d{4}\]", rouge[5].rstrip(" |"))  # paired Δ
    assert "| counting | accuracy | 20 |" in table and "rouge1" not in table and "bootstrap" in table
    assert len(table.splitlines()) < 15
    everything = ev.compare([str(base), str(ablation)], every_metric=True)
    assert "| caption | rouge1 |" in everything and "| caption | accuracy_reward |" in everything
    only = ev.compare([str(base), str(ablation)], tasks=["counting"])
    assert "| counting |" in only and "| caption |" not in only


def test_task_flag_filters_predictions_and_is_checked(tmp_path, capsys):
    run = _caption_run(tmp_path / "run", ["a plane"])
    again = tmp_path / "again"
    argv = ["--predictions", str(run / "predictions.jsonl"), "--out", str(again), "--no-caption-extras"]
    assert ev.main([*argv, "--task", "counting"]) == 0
    assert list(json.loads((again / "metrics.json").read_text())["tasks"]) == ["counting"]
    with pytest.raises(SystemExit, match="no predictions of task"):
        ev.main([*argv, "--task", "grounding"])
    with pytest.raises(SystemExit):
        ev.main([*argv, "--task", "countin"])
    assert "unknown task(s) ['countin']" in capsys.readouterr().err


def test_count_matches_is_one_to_one():
    a, b = [0, 0, 10, 10], [10, 0, 20, 10]
    assert metrics.count_matches([a, a, a], [a], 0.5) == 1
    # a maximum matching, not a greedy one
    assert metrics.count_matches([[5, 0, 15, 10], a], [a, b], 0.25) == 2
    assert metrics.count_matches([], [a], 0.5) == 0


def test_detection_metrics_and_ap_by_hand():
    A, B, C = [0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]
    junk = [80, 80, 90, 90]
    preds = [[A, junk], [B]]
    gts = [[A], [B, C]]
    m = metrics.detection_metrics(preds, gts)
    assert m["precision@0.5"] == pytest.approx(2 / 3) and m["recall@0.5"] == pytest.approx(2 / 3)
    assert m["f1@0.5"] == pytest.approx(2 / 3)
    # ranked by answer order: A (TP), B (TP), junk (FP); 3 true boxes -> P = [1, 1, 2/3], R = [1/3, 2/3, 2/3]
    assert m["ap@0.5"] == pytest.approx(2 / 3)
    # a box at IoU 0.4 counts at 0.25 but not at 0.5
    loose = [[0, 0, 10, 4]]
    m = metrics.detection_metrics([loose], [[A]])
    assert m["precision@0.5"] == 0.0 and m["precision@0.25"] == 1.0 and m["recall@0.25"] == 1.0


def test_average_precision_voc_rules():
    A, B = [0, 0, 10, 10], [20, 20, 30, 30]
    assert metrics.average_precision([[A]], [[A]]) == 1.0
    # duplicate ranked after the hit: P drops after R = 1
    assert metrics.average_precision([[A, A]], [[A]]) == 1.0
    # miss first: P(R=1) = 1/2
    assert metrics.average_precision([[[60, 60, 70, 70], A]], [[A]]) == pytest.approx(0.5)
    # half the boxes never found
    assert metrics.average_precision([[A], []], [[A], [B]]) == pytest.approx(0.5)
    assert metrics.average_precision([[A]], [[]]) == 0.0


# ----------------------------------------------------------------------------- captions
WORDS = (
    "a an the two many large small white red green building buildings road roads river plane planes parked "
    "near beside along runway airport ship ships harbor field fields trees dense residential area".split()
)


def test_rouge_equals_rouge_score_on_synthetic_captions():
    from rouge_score import rouge_scorer

    ref_scorer = rouge_scorer.RougeScorer(["rouge1", "rougeL"], use_stemmer=True)
    rng = random.Random(1)

    def sentence():
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12)))

    preds = [sentence() for _ in range(40)]
    refs = [[sentence() for _ in range(rng.randint(1, 5))] for _ in range(40)]
    m = metrics.rouge_metrics(preds, refs)
    r1 = np.mean(
        [np.mean([ref_scorer.score(r, p)["rouge1"].fmeasure for r in rs]) for p, rs in zip(preds, refs)]
    )
    rl = np.mean(
        [np.mean([ref_scorer.score(r, p)["rougeL"].fmeasure for r in rs]) for p, rs in zip(preds, refs)]
    )
    assert m["rouge1"] == pytest.approx(r1, abs=1e-12) and m["rouge_l"] == pytest.approx(rl, abs=1e-12)
    for p, rs in zip(preds[:10], refs[:10]):  # the reward takes the best reference with the same scorer
        best = max(ref_scorer.score(r, p)["rougeL"].fmeasure for r in rs)
        assert rewards.caption_rouge_l(wrap(p), rs) == pytest.approx(best, abs=1e-12)


def test_rouge_by_hand():
    m = metrics.rouge_metrics(["a plane on runway"], [["a plane on the runway", "trees"]])
    assert m["rouge_l"] == pytest.approx((8 / 9 + 0) / 2)  # averaged over references
    assert m["rouge1"] == pytest.approx((8 / 9 + 0) / 2)


def require(status: str | None, what: str) -> None:
    """A metric whose system install is missing fails (never skips) its test, saying what to install:
    `make` installs WordNet, Java and Chromium when run as root (see the Makefile's system-deps)."""
    if status is not None:
        pytest.fail(
            f"{what} cannot run: {status}. As root, `make` installs it (make system-deps).", pytrace=False
        )


def test_nltk_meteor_matches_nltk():
    require(metrics.nltk_wordnet_status(), "NLTK METEOR")
    from nltk.translate.meteor_score import meteor_score

    preds, refs = (
        ["two planes parked near the runway"],
        [["two planes are parked beside a runway", "an airport"]],
    )
    expected = meteor_score([r.split() for r in refs[0]], preds[0].split())
    assert metrics.nltk_meteor(preds, refs) == pytest.approx(expected)
    assert metrics.nltk_meteor(["the same words"], [["the same words"]]) > 0.9


@pytest.mark.slow
def test_coco_metrics_run_offline():
    require(metrics.coco_status(), "coco-caption (BLEU, METEOR 1.5, ROUGE-L, CIDEr-D)")
    # METEOR 1.5's JVM loads its paraphrase table: ~10 s on 2 cores
    m = metrics.coco_metrics(
        ["two planes parked near the runway", "a river", ""],
        [["two planes parked near the runway"], ["a green field", "many trees"], ["a road"]],
    )
    assert set(m) == {"bleu1", "bleu4", "rouge_l_coco", "cider", "meteor_coco"}
    assert all(np.isfinite(v) for v in m.values())
    assert 0 < m["bleu1"] <= 1 and 0 < m["rouge_l_coco"] <= 1
    assert 0 < m["meteor_coco"] <= 1


# ----------------------------------------------------------------------------- evaluate()
def test_evaluate_tuples_per_task_and_dataset(tmp_path):
    frame = Frame(kind="pixels", image_size=(1000, 1000), model_size=(500, 500))
    samples = [
        ("classification", "airport", wrap("Airport"), None, {"dataset": "AID"}),
        ("classification", "forest", "river", None, {"dataset": "UCM"}),
        ("grounding", [[100, 100, 300, 300]], wrap("[50, 50, 150, 150]"), frame, {"dataset": "DIOR-RSVG"}),
        ("counting", 4, wrap("four"), None, {}),
    ]
    m = metrics.score_samples(samples, tmp_path, caption_extras=False, quiet=True)
    assert m["tasks"]["classification"]["accuracy"] == 0.5
    assert m["tasks"]["classification"]["well_formed"] == 0.5
    assert m["tasks"]["classification"]["answer_parsed"] == 1.0
    assert m["datasets"]["AID"]["classification"]["accuracy"] == 1.0
    assert m["datasets"]["UCM"]["classification"]["accuracy"] == 0.0
    assert m["tasks"]["grounding"]["acc@0.5"] == 1.0  # through the frame
    assert m["datasets"]["unknown"]["counting"]["accuracy"] == 1.0
    assert json.loads((tmp_path / "metrics.json").read_text()) == json.loads(json.dumps(m))
    lines = [json.loads(x) for x in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    assert len(lines) == 4 and lines[2]["parsed"] == [[100, 100, 300, 300]]
    assert lines[2]["frame"] == {"kind": "pixels", "image_size": [1000, 1000], "model_size": [500, 500]}
    assert lines[0]["scores"] == {"format": 1.0, "exact_match": 1.0, "accuracy": 1.0, "total": 2.0}
    with pytest.raises(ValueError, match="unknown task"):
        metrics.score_samples([("segmentation", "x", "x", None, {})], quiet=True)


def test_markdown_table_lists_tasks():
    m = metrics.score_samples(
        [("vqa", "yes", wrap("yes"), None, {"type": "presence"})], caption_extras=False, quiet=True
    )
    table = metrics.markdown_table(m)
    lines = table.splitlines()
    assert lines[0] == "| task | dataset | split | n | well_formed | answer_parsed | metrics |"
    assert "| vqa | all | all | 1 | 1.0000 | 1.0000 | " in table
    # the footer says what they are
    assert any(x.startswith("- well_formed: ") and "answer_parsed: " in x for x in lines)


def test_gather_single_process():
    assert distributed.gather_to_rank0([1, 2]) == [1, 2]


# ----------------------------------------------------------------------------- the CLI on a predictions file
def _prediction_lines() -> tuple[list[dict], dict]:
    frame = Frame(kind="pixels", image_size=(1000, 800), model_size=(504, 392))
    fj = {"kind": frame.kind, "image_size": list(frame.image_size), "model_size": list(frame.model_size)}
    gt_box = [100, 100, 500, 400]
    written = [round(v) for v in to_frame(gt_box, frame)]
    lines = [
        {
            "id": "c1",
            "task": "classification",
            "answer": "airport",
            "completion": wrap("Airport."),
            "meta": {"dataset": "AID"},
        },
        {
            "id": "c2",
            "task": "classification",
            "answer": "beach",
            "completion": wrap("river"),
            "meta": {"dataset": "AID"},
        },
        {"id": "g1", "task": "grounding", "answer": [gt_box], "completion": wrap(str(written)), "frame": fj},
        {
            "id": "g2",
            "task": "grounding",
            "answer": [gt_box],
            "completion": wrap("[0, 0, 10, 10]"),
            "frame": fj,
        },
        # foreign file: no frame, original pixels
        {
            "id": "d1",
            "task": "detection",
            "answer": [[0, 0, 10, 10], [20, 20, 30, 30]],
            "completion": wrap("[0, 0, 10, 10], [50, 50, 60, 60]"),
        },
        {"id": "n1", "task": "counting", "answer": 7, "completion": "7"},
        {
            "id": "m1",
            "task": "multilabel",
            "answer": ["forest", "river"],
            "completion": wrap("forest, beach"),
        },
        {
            "id": "p1",
            "task": "caption",
            "answer": ["a plane on the runway"],
            "completion": wrap("a plane on runway"),
        },
    ]
    expected = {
        ("classification", "accuracy"): 0.5,
        ("classification", "well_formed"): 1.0,
        ("grounding", "acc@0.5"): 0.5,
        ("detection", "precision@0.5"): 0.5,
        ("detection", "recall@0.5"): 0.5,
        ("detection", "ap@0.5"): 0.5,
        ("counting", "accuracy"): 1.0,
        ("counting", "well_formed"): 0.0,
        ("multilabel", "micro_f1"): 0.5,
        ("caption", "rouge_l"): 8 / 9,
    }
    return lines, expected


def test_cli_scores_a_predictions_file(tmp_path):
    lines, expected = _prediction_lines()
    pred_file = tmp_path / "preds.jsonl"
    pred_file.write_text("".join(json.dumps(x) + "\n" for x in lines))
    out = tmp_path / "out"
    proc = subprocess.run(
        [
            sys.executable,
            "eval.py",
            "--predictions",
            str(pred_file),
            "--out",
            str(out),
            "--no-caption-extras",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "| grounding | all | all | 2 |" in proc.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    for (task, key), value in expected.items():
        assert metrics["tasks"][task][key] == pytest.approx(value, abs=1e-6), (task, key)
    # the converted box is within rounding of the truth
    assert metrics["tasks"]["grounding"]["mean_iou"] > 0.49
    assert metrics["datasets"]["AID"]["classification"]["accuracy"] == 0.5

    # its own predictions.jsonl round-trips (frames included) to the same numbers (in-process: same main())
    again = tmp_path / "again"
    assert (
        ev.main(["--predictions", str(out / "predictions.jsonl"), "--out", str(again), "--no-caption-extras"])
        == 0
    )
    assert json.loads((again / "metrics.json").read_text())["tasks"] == metrics["tasks"]


def test_geochat_boxes_without_an_image_size_are_reported(tmp_path, capsys):
    # {<..>} boxes are 0-100 of the image: without --data (or a frame) nothing says how big the image is
    line = {
        "id": "a",
        "task": "grounding",
        "answer": [[120, 80, 190, 196]],
        "completion": wrap("{<60><40><95><98>|0}"),
    }
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps(line) + "\n" + json.dumps(line | {"id": "b"}) + "\n")
    ev.load_predictions(path)
    err = capsys.readouterr().err
    assert f"{path}:1:" in err and "2 prediction(s)" in err and "--data" in err
    framed = line | {"frame": {"kind": "pixels", "image_size": [200, 200], "model_size": [200, 200]}}
    path.write_text(
        json.dumps(framed) + "\n" + json.dumps(line | {"completion": wrap("[1, 2, 3, 4]")}) + "\n"
    )
    ev.load_predictions(path)
    assert capsys.readouterr().err == ""


def test_a_cut_json_line_is_reported_at_its_column(tmp_path):
    path = tmp_path / "p.jsonl"
    cut = '{"id": "a", "task": "vqa", "answer": "yes", "completion": "<ans'
    path.write_text(cut + "\n")
    with pytest.raises(ValueError, match=rf"{path}:1: bad JSON \(Unterminated string.*column 59\)"):
        ev.load_predictions(path)
    path.write_text('{"id": "a", "task": "vqa", "answer": "yes"\n')
    with pytest.raises(ValueError, match=r"column 43\)"):
        ev.load_predictions(path)


def test_cli_help_names_the_embedded_defaults(capsys):
    with pytest.raises(SystemExit) as exc:
        ev.main(["--help"])
    out = capsys.readouterr().out
    assert exc.value.code == 0 and "--predictions" in out and "default" in out


@pytest.mark.slow
def test_eval_end_to_end_on_the_tiny_model(tiny_dir, synth_dir, tmp_path):
    out = tmp_path / "out"
    argv = [
        "--model",
        tiny_dir,
        "--data",
        str(synth_dir / "test.jsonl"),
        "--out",
        str(out),
        "--limit",
        "6",
        "--batch-size",
        "6",
        "--max-new-tokens",
        "8",
        "--no-caption-extras",
    ]
    assert ev.main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    lines = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(lines) == 6 == metrics["n"] == sum(m["n"] for m in metrics["tasks"].values())
    for line in lines:
        assert line["frame"]["kind"] in ("pixels", "0-1000") and isinstance(line["completion"], str)
        assert set(line["scores"]) >= {"format", "total"}
    # the written predictions score to the same numbers without the model
    again = tmp_path / "again"
    assert (
        ev.main(["--predictions", str(out / "predictions.jsonl"), "--out", str(again), "--no-caption-extras"])
        == 0
    )
    assert json.loads((again / "metrics.json").read_text())["tasks"] == metrics["tasks"]


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch not installed")
def test_gather_to_rank0_across_processes(tmp_path):
    import socket

    with socket.socket() as sock:  # a free port for the gloo rendezvous
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    script = tmp_path / "gather.py"
    script.write_text(
        "import json, sys\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        "import torch.distributed as dist\n"
        "dist.init_process_group('gloo')\n"
        "from geovlm import distributed\n"
        "rank = dist.get_rank()\n"
        "out = distributed.gather_to_rank0([(rank, 'a'), (rank, 'b')])\n"
        "if rank == 0:\n"
        f"    open({str(tmp_path / 'out.json')!r}, 'w').write(json.dumps(out))\n"
        "else:\n"
        "    assert out is None\n"
        "dist.destroy_process_group()\n"
    )
    procs = []
    for rank in range(2):
        env = dict(
            os.environ,
            RANK=str(rank),
            WORLD_SIZE="2",
            LOCAL_RANK=str(rank),
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(port),
        )
        procs.append(
            subprocess.Popen(
                [sys.executable, str(script)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    try:
        results = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in results]
    assert json.loads((tmp_path / "out.json").read_text()) == [[0, "a"], [0, "b"], [1, "a"], [1, "b"]]


def test_every_task_is_scored_by_its_registry_entry(synth_dir):
    """Each task's scorer is looked up (Task.scoring) and reports the task's headline metric (Task.metric):
    the embedded test split answered with its own targets scores 1 on it (captions: ROUGE-L 1)."""
    import data
    from geovlm.tasks import TASKS

    records = data.load_records(synth_dir / "test.jsonl")
    samples = []
    for task in TASKS:
        rec = next((r for r in records if r.task == task), None)
        assert rec is not None, task
        frame = metrics.Frame("pixels", tuple(rec.image_sizes[0]), tuple(rec.image_sizes[0]))
        completion = f"<think>x</think><answer>{data.format_answer(task, rec.answer, frame)}</answer>"
        samples.append(
            metrics.Sample(task=task, answer=rec.answer, completion=completion, frame=frame, meta=rec.meta)
        )
    result = metrics.score_samples(samples, caption_extras=False, quiet=True)["tasks"]
    for task, spec in TASKS.items():
        assert spec.scoring in metrics.SCORERS
        assert result[task][spec.metric] == pytest.approx(1.0), (task, result[task])


def test_compare_names_the_line_of_a_broken_predictions_file(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps({"tasks": {"vqa": {"n": 1, "accuracy": 1.0}}}))
    (run / "predictions.jsonl").write_text(json.dumps({"task": "vqa", "id": "a"}) + "\n{cut off\n")
    with pytest.raises(SystemExit, match=r"unreadable predictions.jsonl .*predictions.jsonl:2: not JSON"):
        ev.compare([str(run), str(run)])
