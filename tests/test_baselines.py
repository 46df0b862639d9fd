"""baselines.py and the synthetic set's answer balance: a model that never looks at the image scores chance.

The balance test draws records straight from synth's builders with rendering patched out (the answers do
not depend on the pixels), fits the best blind baseline on two thirds and scores it on the rest with
eval's headline metric, next to chance: the same records answered with another record's answer of the
same question type (for K equally likely labels, 1/K).
"""

import json

import numpy as np
import pytest

import eval as E
from data import Record
from embedded import synth
from geovlm import baselines, metrics
from geovlm.frames import Frame
from geovlm.tasks import TASKS

# caption tasks have no chance level (every caption is its own answer); every other task is checked
BALANCED_TASKS = [
    "classification",
    "multilabel",
    "vqa",
    "counting",
    "grounding",
    "detection",
    "change_detection",
    "temporal_classification",
]
N_PER_TASK = 600


def _records(task: str, n: int, seed: int = 99) -> list[Record]:
    out = []
    for i in range(n):
        s = synth.make_sample(task, seed, i)
        sizes = [(int(img.shape[1]), int(img.shape[0])) for img in s.images]
        out.append(
            Record(
                id=f"{task}-{i}",
                task=task,
                images=[f"{task}-{i}-{k}.png" for k in range(len(sizes))],
                question=s.question,
                answer=s.answer,
                reasoning=s.reasoning,
                meta=s.meta,
                source=f"synth:{i}",
                image_sizes=sizes,
            )
        )
    return out


def _score(samples) -> dict:
    return metrics.score_samples(samples, caption_extras=False, quiet=True)


def _chance(records: list[Record], shifts: int = 8) -> float:
    """The headline metric when each record gets the answer of another record of its question type, averaged
    over `shifts` such assignments (for K equally likely labels: 1/K)."""
    rng = np.random.default_rng(0)
    by_type: dict[str, list[int]] = {}
    for i, r in enumerate(records):
        by_type.setdefault(str(r.meta.get("type")), []).append(i)
    samples = []
    for idx, shift in ((idx, k) for idx in by_type.values() for k in range(1, shifts + 1)):
        order = rng.permutation(idx)
        for i, d in zip(order, np.roll(order, shift)):
            # donor's answer placed on rec's image
            rec, donor = (records[i], baselines._moved(records[d], records[i]))
            frame = Frame("pixels", rec.image_sizes[0], rec.image_sizes[0])
            text = TASKS[rec.task].target(donor.answer, frame)
            samples.append(
                metrics.Sample(
                    task=rec.task,
                    answer=rec.answer,
                    frame=frame,
                    meta=rec.meta,
                    completion=f"<think></think><answer>{text}</answer>",
                )
            )
    return _score(samples)["tasks"][records[0].task][TASKS[records[0].task].metric]


def _flat(rng, h, w, *_):
    return np.full((h, w, 3), 128, np.float32)


@pytest.fixture(scope="module")
def drawn() -> dict[str, list[Record]]:
    """N_PER_TASK records per task, fast: no pixels and flat textures (the answers never read them)."""
    mp = pytest.MonkeyPatch()
    mp.setattr(
        synth,
        "render",
        lambda scene, objects=None, ground=None: np.zeros((scene.height, scene.width, 3), np.uint8),
    )
    mp.setattr(synth, "_noise", lambda rng, h, w, *_: np.zeros((h, w), np.float32))
    mp.setattr(synth, "_grain", lambda rng, h, w, *_: np.zeros((h, w, 3), np.float32))
    for name in (
        "_water_tex",
        "_sand_tex",
        "_soil_tex",
        "_farmland",
        "_water",
        "_urban",
        "_forest",
        "_airport",
        "_desert",
    ):
        mp.setattr(synth, name, _flat)
    try:
        return {t: _records(t, N_PER_TASK) for t in BALANCED_TASKS}
    finally:
        mp.undo()


@pytest.mark.parametrize("task", BALANCED_TASKS)
def test_question_only_baseline_is_within_5_points_of_chance(drawn, task):
    recs = drawn[task]
    train, test = recs[: 2 * len(recs) // 3], recs[2 * len(recs) // 3 :]
    best = baselines.best_blind(train, test)["tasks"][task]
    metric = TASKS[task].metric
    chance = _chance(test)
    if task == "multilabel":  # F1's chance level is the all-positive answer's (2p / (1 + p) at prevalence p)
        every = ", ".join(synth.CLASSES)
        chance = max(
            chance,
            _score(
                [
                    metrics.Sample(task=task, answer=r.answer, completion=f"<answer>{every}</answer>")
                    for r in test
                ]
            )["tasks"][task][metric],
        )
    print(task, metric, round(best[metric], 3), best["baseline"], "chance", round(chance, 3))
    assert best[metric] - chance <= 0.05, (
        f"{task}: blind {best['baseline']} {metric} {best[metric]:.3f} vs chance {chance:.3f}"
    )


def test_eval_blind_cli_scores_and_names_a_task_train_lacks(tmp_path, synth_dir, capsys):
    test_rows = [json.loads(line) for line in open(synth_dir / "test.jsonl")]
    train_rows = [json.loads(line) for line in open(synth_dir / "train.jsonl")]
    assert (
        E.main(
            [
                "--blind",
                str(synth_dir / "train.jsonl"),
                "--data",
                str(synth_dir / "test.jsonl"),
                "--out",
                str(tmp_path / "blind"),
            ]
        )
        == 0
    )
    metrics = json.loads((tmp_path / "blind" / "metrics.json").read_text())
    assert (
        set(metrics["tasks"]) == {r["task"] for r in test_rows} and (tmp_path / "blind" / "table.md").exists()
    )
    vqa_only = tmp_path / "vqa.jsonl"
    vqa_only.write_text(
        "".join(
            json.dumps({**r, "images": [str(synth_dir / p) for p in r["images"]]}) + "\n"
            for r in train_rows
            if r["task"] == "vqa"
        )
    )
    with pytest.raises(SystemExit, match="no training record of task"):
        E.main(
            ["--blind", str(vqa_only), "--data", str(synth_dir / "test.jsonl"), "--out", str(tmp_path / "b2")]
        )


def test_the_module_cli_scores_the_blind_baseline(tmp_path, capsys):
    synth.make_dataset(tmp_path / "d", n=24, seed=0, tasks=["vqa", "counting"], test_frac=0.5)
    d = tmp_path / "d"
    argv = ["--train", str(d / "train.jsonl"), "--data", str(d / "test.jsonl"), "--out", str(tmp_path / "b")]
    assert baselines.main(argv) == 0
    assert "| counting | all | all |" in capsys.readouterr().out
    assert set(json.loads((tmp_path / "b" / "metrics.json").read_text())["tasks"]) == {"vqa", "counting"}
    with pytest.raises(SystemExit, match=r"baselines: .*missing.jsonl"):
        baselines.main(["--train", str(tmp_path / "missing.jsonl"), "--data", str(d / "test.jsonl")])
