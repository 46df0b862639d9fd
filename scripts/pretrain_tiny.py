"""Perception pre-training for the tiny model: a curriculum of streamed synthetic scenes, measured per stage.

    python scripts/pretrain_tiny.py --out runs/pretrain                  # the recipe (STAGES below), ~45 min
    python scripts/pretrain_tiny.py --out runs/p --stages square:500:grounding,fixedq:400:grounding
    python scripts/pretrain_tiny.py --out runs/p --stages square:500:grounding,fixedq:400:grounding,fixed1:400
                                    # the same --out again with more stages: resumes after the finished ones
    python scripts/pretrain_tiny.py --out runs/e --base-model runs/p/stage-2-fixed1 --stages synth:0:grounding
                                    # 0 steps: evaluates the model alone, as a stage end does

Issue 18, step 1; the measured ladder is docs/perception-ladder.md. On synth's EO scenes the tiny model does
not localise after grounding SFT on 12k records (README); it does localise one red square on grey once
M-RoPE's base is 50. Trained from scratch on synth's objects it localises nothing, not even one object on flat
ground at a fixed image size (the ladder's first rungs); started from the probe it does. So the curriculum
starts there and widens one thing a stage (--stages name:steps[:task+task], in order; the scenes are built in
embedded/curriculum.py):

    square   the probe itself (scripts/grpo_proof.py's square_records): one red 56-px square on grey 224 x 224
    square2  the probe with a second square of another colour: "Where is the blue square?"
    square2red / square2rb / square2rbg / square2fade   square2 with red always asked / red and blue only /
             red, blue, green / the other square faded; square2p: square2, and "Is there a green square?"
    fixedq   the probe's shape and one wording ("Where is the object?"), one synth object of any class
    fixed1   fixed 224 x 224 flat ground, one synth object, synth's wording (varies with class and template)
    fixed1l  fixed1 with every object at its class's largest size (37-100 px: more than one image token)
    flat1    flat ground of a random dull colour at synth's sizes (160-400 px a side), one synth object
    fixedmix fixed 224 x 224 flat ground, the asked class among 1-4 distractors of other classes
    fixedmixl fixedmix at the largest sizes, 1-2 distractors (detection: 1-2 of the asked class)
    colourmixl fixedmixl asked by colour ("Where is the yellow object?"), one distractor
    colourmix01l colourmixl, half the records without the distractor
    fixedmixlg / colourmixlg   fixedmixl / colourmixl on the probe's grey ground
    classmixl colourmixl asked by class ("Find the ship."), its reasoning still "The red object lies ..."
    flatmix  flat ground, the asked class (grounding: one; detection: 1-5) among 1-4 distractors of others
    synthu   synth's scenes without its qualifiers: grounding of a class's one object; detection as synth's
    classmix1 classmixl at all sizes, one distractor (grounding reasoning as classmixl's, as the next two)
    classmix / synthuc   fixedmix / synthu, their grounding reasoning as classmixl's ("The red object lies")
    synthucd synthuc, counting's and change detection's reasoning dense (each counted or changed one's cell)
    synthc   synth's own records, its unique grounding reasoning as classmixl's (qualified: synth's own)
    synthqd  synthc, its qualified reasoning dense: the class's objects by cell, then "the leftmost one lies"
    synth    synth's own scenes and builders (textured ground, extras, qualifiers: "the leftmost ship")

Records are generated on the fly (no data set on disk: each batch's images are written to out/stream/ and
overwritten by the next), from np.random.default_rng([seed, 1000 + stage index, i]), so any number of samples
costs only CPU time and never repeats. Supervision is dense where it is cheap: every grounding reasoning names
the target's 3 x 3 cell (synth's wording), and every detection reasoning names each object's cell in answer
order ("...: one in the top left, one at the bottom; each gets its own box"), so the model says where before
it writes the numbers. The held-out sets are synth's own grounding and detection records of --eval-seed
(synth.make_sample(task, eval_seed, i): a two-word seed, never a training stream's three-word one).

Each stage starts a fresh AdamW with its own warm-up and cosine decay (train_sft.train_step: the project's SFT
loss and step), ends with a checkpoint out/stage-K-NAME/ (an HF folder model.load reads; done.json marks it
whole) and a held-out evaluation (eval.generate greedy, geovlm.metrics scores): grounding acc@0.5 and mean
IoU, detection F1@0.5, and the 3 x 3 cell accuracy of the grounding reasoning, beside the blind baseline
(geovlm.baselines.best_blind fitted on synth-stage training records). Outputs: out/log.jsonl (a row per step,
a row per evaluation), out/recipe.json (with each launch's commit), out/results.json (the per-stage table).
A rerun with the same --out and the same recipe resumes where the last launch stopped: after the last finished
stage, and inside a stage from its newest checkpoint (out/partial/stage-K-NAME/, every --save-every steps and
on Ctrl-C / SIGTERM, which finish the step and save first; removed when the stage is done). The resumed run
logs the same losses as one never stopped, the log's rows after the checkpoint replaced; a different recipe
there is refused."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import NoReturn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

import data  # noqa: E402
import eval as E  # noqa: E402
import model as M  # noqa: E402
import train_sft  # noqa: E402
from embedded import defaults, synth, tiny  # noqa: E402
from embedded.curriculum import BUILDERS, synth_stage, to_record  # noqa: E402
from geovlm import baselines  # noqa: E402
from geovlm.checkpoints import discard_torn, find_checkpoint, load_checkpoint, save_checkpoint  # noqa: E402
from geovlm.distributed import Dist  # noqa: E402
from geovlm.flags import count, positive, positive_int  # noqa: E402
from geovlm.logs import commit_of, truncate_log  # noqa: E402
from geovlm.metrics import Sample, score_samples  # noqa: E402
from geovlm.parsing import box_iou  # noqa: E402
from geovlm.run import catch_stop_signals, stop_signalled  # noqa: E402
from geovlm.schedule import lr_at  # noqa: E402
from geovlm.tasks import TASKS, parse_answer  # noqa: E402

# name:steps:tasks, in order: the ladder's first whole recipe (docs/perception-ladder.md, "Time on one core").
# The best chain (rungs 30-67, a launch a rung with other flags) is scripts/perception_start.py's CHAIN.
STAGES = (
    "square:500:grounding,fixedq:400:grounding,fixed1:400:grounding,flat1:400:grounding,"
    "flatmix:400:grounding+detection,synth:1000:grounding+detection"
)
EVAL_TASKS = ("grounding", "detection")
# the curriculum's scenes make grounding, detection and (square2p) vqa; synth's (synthuc, synthc, synth) every
# task, so that a last stage can mix the other tasks back in beside the perception ones
STAGE_TASKS = tuple(synth.BUILDERS)


# ----------------------------------------------------------------------------- records


def stream_records(
    stage: str, stage_index: int, seed: int, start: int, n: int, tasks: tuple[str, ...], folder: Path
) -> list[data.Record]:
    """Training records start..start+n-1 of a stage: tasks round-robin, record i from rng [seed, 1000+stage,
    i].
    Images go to folder/slot-J.png, overwritten by the next batch (collate reads them straight away)."""
    out = []
    for j, i in enumerate(range(start, start + n)):
        task = tasks[i % len(tasks)]
        s = BUILDERS[stage](np.random.default_rng([seed, 1000 + stage_index, i]), task)
        out.append(to_record(s, task, f"slot-{j}", folder))
    return out


def held_out(seed: int, n: int, folder: Path) -> list[data.Record]:
    """synth's own records of the eval tasks for `seed` (its make_sample), n per task, written once."""
    path = folder / "records.jsonl"
    if path.exists():
        return data.load_records(path)
    rows = []
    for task in EVAL_TASKS:
        for i in range(n):
            s = synth.make_sample(task, seed, i)
            r = to_record(s, task, f"{task}-{i:05d}", folder / "images")
            rows.append(
                {
                    "id": r.id,
                    "task": task,
                    "images": r.images,
                    "question": s.question,
                    "answer": s.answer,
                    "reasoning": s.reasoning,
                    "meta": s.meta,
                }
            )
    path.with_suffix(".tmp").write_text("".join(json.dumps(r) + "\n" for r in rows))
    path.with_suffix(".tmp").rename(path)
    return data.load_records(path)


def stage_held_out(
    stage: str, stage_index: int, seed: int, n: int, folder: Path, task: str = "grounding"
) -> list[data.Record]:
    """n `task` records of a curriculum stage from rng [seed, 2000 + stage index, i]: never a training
    stream (those are [train seed, 1000 + stage index, i])."""
    return [
        to_record(
            BUILDERS[stage](np.random.default_rng([seed, 2000 + stage_index, i]), task),
            task,
            f"{stage}-{task}-{i:05d}" if task != "grounding" else f"{stage}-{i:05d}",
            folder,
        )
        for i in range(n)
    ]


def own_scenes(net, processor, frame_kind: str, args, stage: str, index: int, tasks, out: Path) -> dict:
    """The stage's own held-out records of each of its tasks, scored: {"own_grounding": {...}, ...}."""
    m = {}
    for task in dict.fromkeys(tasks):  # a task listed twice (weighted) is scored once
        recs = stage_held_out(
            stage, index, args.eval_seed, args.eval_records // 2, out / f"heldout-{stage}", task
        )
        m[f"own_{task}"] = evaluate(net, processor, frame_kind, recs, args.max_new_tokens)[task]
    return m


def blind_train(seed: int, n: int, tasks: tuple[str, ...]) -> list[data.Record]:
    """n synth-stage training records (answers and image sizes only, no files): what the blind baseline
    fits."""
    recs = []
    for i in range(n):
        task = tasks[i % len(tasks)]
        s = synth_stage(np.random.default_rng([seed, 999, i]), task)
        size = [(s.images[0].shape[1], s.images[0].shape[0])]
        answer = TASKS[task].check(s.answer, size, f"blind-{i}")
        recs.append(data.Record(f"blind-{i}", task, [""], s.question, answer, s.reasoning, s.meta, "", size))
    return recs


# ----------------------------------------------------------------------------- the signal


def said_cell(completion: str) -> str | None:
    """The 3 x 3 cell the reasoning names first (synth's phrases, e.g. 'in the top left'), None if none."""
    think = completion.split("</think>")[0]
    hits = [(think.find(phrase), cell) for cell, phrase in synth._AT.items() if phrase in think]
    return min(hits)[1] if hits else None


def evaluate(net, processor, frame_kind: str, records: list[data.Record], max_new_tokens: int) -> dict:
    """Greedy held-out metrics (eval.generate, geovlm.metrics): per task the headline numbers, and for
    grounding the cell accuracy of the reasoning, how many distinct cells it names and, where synth's two
    halves are both held out, acc@0.5 and mean IoU of each and the qualified half's wrong picks; for detection
    the boxes it gives and the objects there are, per record."""
    completions, frames = E.generate(net, processor, frame_kind, records, max_new_tokens, torch.device("cpu"))
    samples = [Sample(r.task, r.answer, c, f, r.meta, r.id) for r, c, f in zip(records, completions, frames)]
    m = score_samples(samples, caption_extras=False, quiet=True)["tasks"]
    keep = {
        "grounding": ("acc@0.5", "acc@0.25", "mean_iou", "well_formed"),
        "detection": ("f1@0.5", "f1@0.25", "precision@0.5", "recall@0.5"),
        "vqa": ("accuracy", "well_formed"),
    }
    out = {t: {k: m[t][k] for k in keep.get(t, (TASKS[t].metric, "well_formed"))} for t in m}
    # synth's grounding is half unique ("the ship"), half qualified ("the leftmost ship"): score each half
    halves = {"unique": [], "qualified": []}
    for s in samples:
        if s.task == "grounding" and "type" in s.meta:
            halves["unique" if s.meta["type"] == "unique" else "qualified"].append(s)
    if halves["unique"] and halves["qualified"]:
        for half, group in halves.items():
            g = score_samples(group, caption_extras=False, quiet=True)["tasks"]["grounding"]
            out["grounding"] |= {f"{half}_acc@0.5": g["acc@0.5"], f"{half}_mean_iou": g["mean_iou"]}
        out["grounding"]["qualified_other@0.5"] = _other_object_share(records, completions, frames)
    if "detection" in out:  # does it list one box per object, or one box whatever the count?
        dets = [(r, c, f) for r, c, f in zip(records, completions, frames) if r.task == "detection"]
        given = [len(parse_answer("detection", c, f) or []) for _, c, f in dets]
        out["detection"]["boxes_per_record"] = float(np.mean(given))
        out["detection"]["objects_per_record"] = float(np.mean([len(r.answer) for r, _, _ in dets]))
    said, truth = [], []
    for r, c in zip(records, completions):
        if r.task == "grounding":
            x1, y1, x2, y2 = r.answer[0][:4]
            truth.append(synth._cell((x1 + x2) / 2, (y1 + y2) / 2, *r.image_sizes[0]))
            said.append(said_cell(c))
    if said:
        out["grounding"]["cell_acc"] = float(np.mean([s == t for s, t in zip(said, truth)]))
        out["grounding"]["cells_named"] = len({s for s in said if s})
    out["examples"] = completions[:2] + completions[len(completions) // 2 : len(completions) // 2 + 2]
    return out


def _other_object_share(records: list[data.Record], completions: list[str], frames: list) -> float:
    """Of synth's qualified grounding records, the share whose box lands (IoU >= 0.5) on an object of the
    asked class other than the target (recovered from the pixels): the wrong one picked, not none."""
    hits = []
    for r, c, f in zip(records, completions, frames):
        if r.task != "grounding" or r.meta.get("type", "unique") == "unique":
            continue
        box = (parse_answer("grounding", c, f) or [None])[0]
        image = np.asarray(Image.open(r.images[0]).convert("RGB"))
        others = [b for _, b in synth.find_objects(image, r.meta["class"]) if box_iou(b, r.answer[0]) < 0.5]
        hits.append(box is not None and any(box_iou(box, b) >= 0.5 for b in others))
    return float(np.mean(hits))


def blind_metrics(train: list[data.Record], records: list[data.Record]) -> dict:
    b = baselines.best_blind(train, records)["tasks"]
    return {
        "grounding": {"acc@0.5": b["grounding"]["acc@0.5"], "mean_iou": b["grounding"]["mean_iou"]},
        "detection": {"f1@0.5": b["detection"]["f1@0.5"]},
        "cell_acc": None,
    }


# ----------------------------------------------------------------------------- the run


def expand_all(tasks) -> tuple[str, ...]:
    """Task names in order, "all" standing for every synth task; a task named twice is drawn twice as often
    (the round-robin), e.g. grounding+detection+all."""
    return tuple(t for name in tasks for t in (STAGE_TASKS if name == "all" else (name,)))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--out", required=True, help="run folder (log.jsonl, stage checkpoints, results.json); required"
    )
    p.add_argument(
        "--stages",
        default=STAGES,
        help=f"comma list of name:steps, names from {list(BUILDERS)} (default: %(default)s)",
    )
    p.add_argument(
        "--tasks",
        default="grounding,detection",
        help="training tasks, round-robin; all: every synth task; one named twice is drawn twice as often "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--seed", type=count, default=0, help="training streams and model init (default: %(default)s)"
    )
    p.add_argument(
        "--eval-seed",
        type=count,
        default=90210,
        help="synth seed of the held-out sets (default: %(default)s)",
    )
    p.add_argument(
        "--eval-records",
        type=positive_int,
        default=100,
        help="held-out records per task (default: %(default)s)",
    )
    p.add_argument(
        "--eval-every",
        type=count,
        default=0,
        help="also evaluate every N steps within a stage; 0: at stage ends only (default: %(default)s)",
    )
    p.add_argument(
        "--save-every",
        type=count,
        default=250,
        help="checkpoint every N steps within a stage, which a rerun resumes from (Ctrl-C and SIGTERM save "
        "one too); 0: only those (default: %(default)s)",
    )
    p.add_argument("--batch-size", type=positive_int, default=8, help="records a step (default: %(default)s)")
    p.add_argument(
        "--lr", type=positive, default=2e-3, help="peak learning rate of each stage (default: %(default)s)"
    )
    p.add_argument(
        "--warmup", type=count, default=20, help="warm-up steps of each stage (default: %(default)s)"
    )
    p.add_argument(
        "--rope-theta",
        type=positive,
        default=50.0,
        help="M-RoPE base of the fresh tiny model (tiny.build_tiny; default: %(default)s)",
    )
    p.add_argument(
        "--text-first",
        action="store_true",
        help="the fresh tiny model's chat template puts the question before the image "
        "(tiny.TEXT_FIRST_CHAT_TEMPLATE; default: image first, as Qwen2.5-VL)",
    )
    p.add_argument(
        "--lm-width",
        type=positive_int,
        default=tiny.TINY_TEXT["hidden_size"],
        help="the fresh tiny model's LM hidden size, a multiple of 32 (32-dim heads; default: %(default)s, "
        "the embedded model's)",
    )
    p.add_argument(
        "--lm-layers",
        type=positive_int,
        default=tiny.TINY_TEXT["num_hidden_layers"],
        help="the fresh tiny model's LM decoder layers (default: %(default)s, the embedded model's)",
    )
    p.add_argument(
        "--kv-heads",
        type=positive_int,
        default=None,
        help="the fresh tiny model's key/value heads (default: half its heads, the embedded model's)",
    )
    p.add_argument(
        "--mrope-section",
        default="4,6,6",
        help="the fresh tiny model's M-RoPE split of its 16 rotary frequencies, highest first, into time, "
        "rows and columns (default: %(default)s, the embedded model's)",
    )
    p.add_argument(
        "--mrope-layout",
        choices=M.MROPE_LAYOUTS,
        default="sections",
        help="the fresh tiny model's order of those frequencies: Qwen2.5-VL's contiguous sections, or rows "
        "and columns interleaved (model.mrope_axes; default: %(default)s)",
    )
    p.add_argument(
        "--base-model", default=None, help="start from this model (default: a fresh tiny model, --rope-theta)"
    )
    p.add_argument(
        "--max-new-tokens", type=positive_int, default=128, help="greedy eval length (default: %(default)s)"
    )
    p.add_argument(
        "--blind-records",
        type=positive_int,
        default=400,
        help="synth records the blind baseline is fitted on (default: %(default)s)",
    )
    args = p.parse_args(argv)
    args.task_list = expand_all(t.strip() for t in args.tasks.split(",") if t.strip())
    try:  # name:steps[:task+task], the stage's own tasks overriding --tasks; "all": every synth task
        args.stage_list = [
            (part[0], int(part[1]), expand_all(part[2].split("+")) if len(part) > 2 else args.task_list)
            for part in (s.split(":") for s in args.stages.split(","))
        ]
    except (ValueError, IndexError):
        p.error(f"--stages {args.stages!r}: expected name:steps[:task+task],...")
    bad = [n for n, k, _ in args.stage_list if n not in BUILDERS or k < 0]
    if bad:
        p.error(f"--stages: unknown stage(s) or negative steps {bad}; stages: {', '.join(BUILDERS)}")
    if any(not ts or any(t not in STAGE_TASKS for t in ts) for _, _, ts in args.stage_list):
        p.error(f"--tasks {args.tasks!r} / --stages {args.stages!r}: tasks are from {', '.join(STAGE_TASKS)}")
    with tempfile.TemporaryDirectory() as tmp:  # one record of each stage and task: does the stage write it?
        for name, _, ts in args.stage_list:
            for task in ts:
                try:
                    to_record(BUILDERS[name](np.random.default_rng(0), task), task, "check", Path(tmp))
                except ValueError as e:
                    p.error(f"--stages: stage {name} does not make {task} records ({e})")
    try:
        args.mrope = tuple(int(v) for v in args.mrope_section.split(","))
    except ValueError:
        args.mrope = ()
    if len(args.mrope) != 3 or sum(args.mrope) != 16 or min(args.mrope) < 0:
        p.error(f"--mrope-section {args.mrope_section!r}: three counts that sum to 16, e.g. 4,6,6")
    args.mrope_section = ",".join(map(str, args.mrope))  # "2, 4, 10" resumes a "2,4,10" run
    if args.lm_width % 32:
        p.error(f"--lm-width {args.lm_width}: a multiple of 32 (the heads' width)")
    if min(args.batch_size, args.eval_records) < 1:
        p.error("--batch-size and --eval-records must be at least 1")
    return args


def base_model(args: argparse.Namespace, out: Path) -> str:
    """--base-model, else the embedded tiny model's twin with M-RoPE base --rope-theta (same sizes,
    tokenizer)."""
    if args.base_model:
        return args.base_model
    corpus = defaults.tokenizer_corpus([defaults.data_dir() / "train.jsonl"])
    build = lambda tmp: tiny.build_tiny(  # noqa: E731
        tmp,
        corpus,
        seed=args.seed,
        rope_theta=args.rope_theta,
        text_first=args.text_first,
        lm_width=args.lm_width,
        lm_layers=args.lm_layers,
        mrope_section=args.mrope,
        kv_heads=args.kv_heads,
        mrope_layout=args.mrope_layout,
    )
    name = f"base-rope-theta-{args.rope_theta:g}" + ("-text-first" if args.text_first else "")
    name += f"-lm{args.lm_width}" if args.lm_width != tiny.TINY_TEXT["hidden_size"] else ""
    name += f"-L{args.lm_layers}" if args.lm_layers != tiny.TINY_TEXT["num_hidden_layers"] else ""
    name += f"-mrope{'-'.join(map(str, args.mrope))}" if args.mrope != (4, 6, 6) else ""
    name += f"-kv{args.kv_heads}" if args.kv_heads else ""
    name += f"-{args.mrope_layout}" if args.mrope_layout != "sections" else ""
    return str(defaults._build_once(out / name, "config.json", build))


def partial_dir(out: Path, k: int, stage: str) -> Path:
    """Stage k's checkpoints inside the stage (checkpoints/step-NNNNNN, the newest kept), gone once done."""
    return out / "partial" / f"stage-{k}-{stage}"


def stage_checkpoint(
    out: Path, k: int, stage: str, steps: int, tasks: tuple[str, ...]
) -> tuple[Path | None, dict]:
    """The newest checkpoint of stage k stopped part-way and its state, or (None, {}) if it has none. One of
    a stage with other steps or tasks (another schedule) is refused, not resumed or dropped."""
    folder = partial_dir(out, k, stage)
    discard_torn(folder)  # a save cut short leaves a dot-folder: never resumed
    ckpt = find_checkpoint(folder, "auto")
    if ckpt is None:
        return None, {}
    state = json.loads((ckpt / "resume" / "state.json").read_text())
    if (state["steps"], state["tasks"]) != (steps, list(tasks)):
        raise SystemExit(
            f"pretrain_tiny.py: {folder} holds stage {k} ({stage}) stopped at step {state['step']} of "
            f"{state['steps']} steps of {'+'.join(state['tasks'])}; rerun with that stage to continue it, "
            f"or remove {folder} to start it over"
        )
    return ckpt, state


def stopped(where: str) -> NoReturn:
    """After Ctrl-C / SIGTERM and the checkpoint: say how to go on, exit 130 (as a Ctrl-C does)."""
    print(f"pretrain_tiny.py: stopped {where}; the same command continues from there", flush=True)
    raise SystemExit(130)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(1)  # the recipe's figures are one-core figures
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    recipe = {
        k: getattr(args, k)
        for k in (
            "stages",
            "tasks",
            "seed",
            "batch_size",
            "lr",
            "warmup",
            "rope_theta",
            "text_first",
            "lm_width",
            "lm_layers",
            "mrope_section",
            "kv_heads",
            "mrope_layout",
            "base_model",
        )
    }
    # (runs from before these flags existed: image-first, 128 wide, 4,6,6 in sections, 2 kv heads)
    kept = (
        {
            "text_first": False,
            "lm_width": 128,
            "lm_layers": 4,
            "mrope_section": "4,6,6",
            "kv_heads": None,
            "mrope_layout": "sections",
        }
        | json.loads((out / "recipe.json").read_text())
        if (out / "recipe.json").exists()
        else None
    )
    # the same recipe, or one whose stages begin with the finished ones (a ladder's next rung), may resume
    finished = sum(1 for k in range(len(args.stage_list)) if list(out.glob(f"stage-{k}-*/done.json")))
    common = min(len(args.stage_list), len(kept["stages"].split(",")), finished) if kept else 0
    if kept is not None and (
        any(kept[k] != recipe[k] for k in recipe if k != "stages")
        or args.stages.split(",")[:common] != kept["stages"].split(",")[:common]
    ):
        raise SystemExit(
            f"pretrain_tiny.py: {out} holds a run of another recipe ({kept}); pick another --out"
        )
    # a stage stopped part-way resumes from its checkpoint (refused here if the stage's schedule changed)
    unfinished = finished < len(args.stage_list)
    _, resumed = stage_checkpoint(out, finished, *args.stage_list[finished]) if unfinished else (None, {})
    # every launch's commit, in order: a ladder's rungs resume a run at later commits
    commits = (kept or {}).get("commits", []) + [commit_of(Path(__file__).resolve().parent)]
    (out / "recipe.json").write_text(json.dumps(recipe | {"commits": commits}) + "\n")
    # the log keeps the rows up to where the first unfinished stage resumes (with nothing left to train, every
    # row)
    if unfinished:
        last = next(out.glob(f"stage-{finished - 1}-*/done.json"), None) if finished else None
        kept_step = resumed.get("global_step", json.loads(last.read_text())["global_step"] if last else 0)
        truncate_log(out / "log.jsonl", kept_step, key="global_step")
    log = open(out / "log.jsonl", "a")
    t_start = time.time()

    held = held_out(
        args.eval_seed, args.eval_records, out / f"heldout-seed{args.eval_seed}-{args.eval_records}"
    )
    blind = blind_metrics(blind_train(args.seed, args.blind_records, EVAL_TASKS), held)
    print(f"blind baseline: {json.dumps(blind)}", flush=True)
    results = {"blind": blind, "eval_seed": args.eval_seed, "stages": []}
    results_path = out / "results.json"
    if results_path.exists():
        results["stages"] = json.loads(results_path.read_text())["stages"]

    path = base_model(args, out)
    env = Dist(0, 1, 0, torch.device("cpu"))
    global_step = 0
    # a stage's own held-out set is the one of its first occurrence, so a repeated stage is measured alike
    first = {name: [n for n, _, _ in args.stage_list].index(name) for name, _, _ in args.stage_list}
    catch_stop_signals()  # Ctrl-C / SIGTERM: the step ends, a checkpoint is saved, then the run stops
    for k, (stage, steps, stage_tasks) in enumerate(args.stage_list):
        folder = out / f"stage-{k}-{stage}"
        if (folder / "done.json").exists():  # finished in an earlier run: continue from its weights
            path, global_step = str(folder), json.loads((folder / "done.json").read_text())["global_step"]
            print(f"stage {k} {stage}: done already, resuming from {folder}", flush=True)
            continue
        ckpt, state = stage_checkpoint(out, k, stage, steps, stage_tasks)
        loaded = M.load(str(ckpt or path), device="cpu")
        net, processor = loaded.model, loaded.processor
        net.train()
        opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=0.0, betas=(0.9, 0.95))
        if ckpt:
            load_checkpoint(ckpt, net, opt, env)
            global_step = state["global_step"]
            print(f"stage {k} {stage}: resuming from {ckpt} (step {state['step']} of {steps})", flush=True)
        t0 = time.time() - state.get("train_seconds", 0.0)
        for step in range(state.get("step", 0) + 1, steps + 1):
            ts = time.perf_counter()
            recs = stream_records(
                stage,
                k,
                args.seed,
                (step - 1) * args.batch_size,
                args.batch_size,
                stage_tasks,
                out / "stream",
            )
            batch = data.collate_sft(recs, processor, loaded.frame_kind)
            for g in opt.param_groups:
                g["lr"] = lr_at(step - 1, args.lr, args.warmup, steps)
            loss, grad_norm, _ = train_sft.train_step(net, opt, [batch], env, 1.0, step)
            global_step += 1
            row = {
                "stage": stage,
                "stage_index": k,
                "step": step,
                "global_step": global_step,
                "loss": loss,
                "lr": opt.param_groups[0]["lr"],
                "grad_norm": grad_norm,
                "seconds": time.perf_counter() - ts,
            }
            log.write(json.dumps(row) + "\n")
            if step % 25 == 0 or step == 1:
                log.flush()
                print(
                    f"stage {k} {stage} step {step}/{steps} loss {loss:.4f} ({time.time() - t0:.0f} s)",
                    flush=True,
                )
            if args.eval_every and step % args.eval_every == 0 and step < steps:
                m = evaluate(net, processor, loaded.frame_kind, held, args.max_new_tokens)
                if stage != "synth":
                    m |= own_scenes(
                        net, processor, loaded.frame_kind, args, stage, first[stage], stage_tasks, out
                    )
                net.train()
                log.write(
                    json.dumps({"stage": stage, "step": step, "global_step": global_step, "eval": m}) + "\n"
                )
                log.flush()
                shown = {t: v for t, v in m.items() if t in EVAL_TASKS or t.startswith("own_")}
                print(f"  eval at step {step}: {json.dumps(shown)}", flush=True)
            stop = stop_signalled()
            if stop or (args.save_every and (step % args.save_every == 0 or step == steps)):
                log.flush()  # the log holds every row up to the checkpoint
                save_checkpoint(
                    partial_dir(out, k, stage) / "checkpoints" / f"step-{step:06d}",
                    net,
                    processor,
                    opt,
                    env,
                    {
                        "step": step,
                        "global_step": global_step,
                        "steps": steps,
                        "tasks": list(stage_tasks),
                        "train_seconds": time.time() - t0,
                    },
                    rank_state={},
                    keep=1,
                )
            if stop:
                stopped(f"in stage {k} ({stage}) after step {step} of {steps}")
        train_minutes = (time.time() - t0) / 60
        M.save(net, processor, folder)
        m = evaluate(net, processor, loaded.frame_kind, held, args.max_new_tokens)
        if stage != "synth":  # in-distribution check: does it localise on the stage's own scenes?
            m |= own_scenes(net, processor, loaded.frame_kind, args, stage, first[stage], stage_tasks, out)
        entry = {
            "stage": stage,
            "stage_index": k,
            "steps": steps,
            "samples": steps * args.batch_size,
            "global_step": global_step,
            "train_minutes": train_minutes,
            "eval_minutes": (time.time() - t0) / 60 - train_minutes,
            "eval": m,
        }
        log.write(json.dumps(entry) + "\n")
        log.flush()
        (folder / "done.json").write_text(json.dumps(entry) + "\n")
        results["stages"].append(entry)
        results_path.write_text(json.dumps(results, indent=2) + "\n")
        shutil.rmtree(partial_dir(out, k, stage), ignore_errors=True)
        if (out / "partial").is_dir() and not any((out / "partial").iterdir()):
            (out / "partial").rmdir()
        path = str(folder)
        print(
            f"stage {k} {stage} done: {json.dumps({t: m[t] for t in EVAL_TASKS})} "
            f"({train_minutes:.1f} min training)",
            flush=True,
        )
        if stop_signalled() and k + 1 < len(args.stage_list):  # it came during the stage's evaluation
            stopped(f"after stage {k} ({stage})")
    print(f"total {(time.time() - t_start) / 60:.1f} min; final model {path}", flush=True)
    return results


if __name__ == "__main__":
    main()
