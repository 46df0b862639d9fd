"""Evaluation: greedy generation on a benchmark file -> the field's metrics per task -> JSON + markdown table.

    python eval.py --model ckpt/grpo --data data/test.jsonl --out results/
    python eval.py --predictions other_system.jsonl --out results/other     # score existing outputs, no model
    python eval.py --compare results/baseline results/ablation              # two evaluations side by side
    python eval.py --compare results/baseline results/ablation --task caption   # with n and 95% intervals
    python eval.py --suite geovlm-r1 --root /data/eo --model ckpt/grpo    # the paper's table beside ours
    torchrun --nproc_per_node=8 eval.py --model ckpt/grpo --data data/test.jsonl   # shards by rank

Generation is greedy (model.sample at temperature 0, `generate`); the trainers' --eval-data and the demo run
the same path (`evaluate_model`). Completions are parsed with the task registry's parsers (tasks.parse_answer:
boxes back to original pixels through each record's frame), then scored the way the papers score:

    classification, temporal_classification   accuracy after normalisation
    vqa                                        accuracy overall and per meta.type ("acc_<type>"), and the mean
                                               of the types without count and area ("type_average");
                                               "type_pooled": accuracy over those questions together
                                               (GeoVLM-R1's "avg")
    multilabel                                 micro / macro F1 (macro over the true label vocabulary), sample
                                               F1 and sample recall (EarthDial's BigEarthNet score)
    counting                                   exact accuracy; MAE over the parsed answers, each error capped
                                               at COUNT_ERROR_CAP; the unparsed rate
    grounding                                  acc@0.5, acc@0.25, acc@0.7, mean IoU, cumulative IoU (ΣI / ΣU)
    detection, change_detection (boxes)        precision / recall / F1 at IoU 0.5 and 0.25 with one-to-one
                                               matching; VOC AP@0.5 (all-point; boxes ranked by answer order);
                                               empty_accuracy on images with nothing to find;
                                               hit_precision@0.5 / @0.25: predicted boxes hitting any true
                                               box (EarthDial's; GeoVLM-R1's "mAP" and referring columns)
    captions (all four caption tasks)          ROUGE-1 and ROUGE-L F1 (rouge-score, stemmed), averaged over
                                               references; METEOR (NLTK) when WordNet is there; coco-caption
                                               BLEU-1/4, METEOR 1.5, ROUGE-L, CIDEr-D when pycocoevalcap +
                                               Java are
    every task                                 well_formed (the completion is exactly
                                               <think>…</think><answer>…</answer>), answer_parsed (its answer
                                               reads as the task's type), mean reward, accuracy_reward (the
                                               task's reward without format)

Per data set (meta.dataset) and, for grounding and detection, per split as GeoChat-bench and VRSBench report
referring: small / medium / large objects (meta.size_group, else the true box's area in COCO's ranges) and
single / multiple objects of the referred class (meta.single, meta.unique or meta.class_count; detection: the
true boxes).

Values are fractions in [0, 1] (published tables print percentages), except mae and cider.

--suite geovlm-r1 evaluates every benchmark of GeoVLM-R1's table found under --root (geovlm/suite.py; --list
shows the layouts and published numbers) and writes suite.md / suite.json: our numbers beside the paper's.

Outputs in --out: metrics.json ("tasks"; "datasets": per meta.dataset; "splits": per data set or "all"),
table.md (the markdown table printed at the end) and predictions.jsonl (one line a record: id, task, images,
completion, parsed answer, reward scores, answer, meta, frame; that file can be fed back with --predictions,
or opened in viewer.py).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

import data
import model as model_lib
from embedded import defaults
from geovlm import baselines, bootstrap, fsdp, suite, viewer
from geovlm.distributed import gather_to_rank0, init_distributed, local_rank0_first, rank_world
from geovlm.flags import ArgumentParser, add_imagery_flags, count, imagery_flags, positive_int
from geovlm.frames import Frame, frame_from_json
from geovlm.metrics import Sample, score_samples
from geovlm.parsing import extract_answer, iter_boxes
from geovlm.run import check_model, load_data
from geovlm.tasks import TASKS


def generate(
    net,
    processor,
    frame_kind: str,
    records: Sequence[Any],
    max_new_tokens: int,
    device,
    batch_size: int = 16,
    progress: bool = False,
) -> tuple[list[str], list[Frame]]:
    """Greedy completions for the records, in order, and the frame each record's boxes are written in.

    model.sample at temperature 0 with the processor's end and vision tokens, prompts batched by `batch_size`;
    `net` may be an FSDP root (its parameters are gathered once for all batches)."""
    net.eval()
    hf = fsdp.unwrap(net)  # token ids come from the HF model's config and head
    eos, banned = model_lib.eos_token_ids(hf, processor), model_lib.banned_token_ids(hf, processor)
    completions: list[str] = []
    frames: list[Frame] = []
    with torch.no_grad(), fsdp.gathered(net), fsdp.autocast(torch.device(device), net):
        for start in tqdm(
            range(0, len(records), batch_size), desc="eval", unit="batch", disable=not progress
        ):
            batch = data.collate_prompts(list(records[start : start + batch_size]), processor, frame_kind)
            out = fsdp.call(
                net,
                model_lib.sample,
                model_lib.to_device(batch.inputs, device),
                group_size=1,
                max_new_tokens=max_new_tokens,
                temperature=0.0,
                eos_ids=eos,
                banned=banned,
                pad_id=processor.tokenizer.pad_token_id,
            )
            completions += model_lib.decode(processor, out)
            frames += list(batch.frames)
    return completions, frames


def evaluate_model(
    net,
    processor,
    frame_kind: str,
    records: Sequence[Any],
    max_new_tokens: int,
    device,
    out_dir: str | Path | None = None,
    batch_size: int = 16,
    caption_extras: bool = False,
    quiet: bool = True,
    progress: bool = False,
) -> dict | None:
    """Generate greedily for `records` and score them (`score_samples`): the path of this CLI, of the
    trainers' --eval-data and of the demo. Under torch.distributed every rank generates its share (records
    rank::world) and rank 0 scores them all; it returns the metrics dict there and None on the other ranks."""
    rank, world = rank_world()
    mine = list(range(rank, len(records), world))
    completions, frames = generate(
        net,
        processor,
        frame_kind,
        [records[i] for i in mine],
        max_new_tokens,
        device,
        batch_size,
        progress and rank == 0,
    )
    local = [
        (
            i,
            Sample(
                task=records[i].task,
                answer=records[i].answer,
                completion=c,
                frame=f,
                meta=records[i].meta,
                id=str(records[i].id),
                images=list(records[i].images),
                question=records[i].question,
            ),
        )
        for i, c, f in zip(mine, completions, frames)
    ]
    gathered = gather_to_rank0(local)
    if gathered is None:
        return None
    samples = [s for _, s in sorted(gathered, key=lambda t: t[0])]
    return score_samples(samples, out_dir, caption_extras=caption_extras, quiet=quiet)


# ----------------------------------------------------------------------------- multi-process
# ----------------------------------------------------------------------------- predictions files
BOX_FRAMES = ("original", "0-1000", "0-100")  # how an outside system's bracketed boxes are written


def _prediction_frame(obj: dict, rec: Any, box_frame: str) -> Frame | None:
    """The frame a predictions line's boxes are read in: its own "frame"; else, when the record (from --data)
    gives the image size, --box-frame of that image (GeoChat's {<..>} boxes always read as 0-100 of it)."""
    if obj.get("frame"):
        return frame_from_json(obj["frame"])
    if rec is None or not rec.image_sizes:
        return None if box_frame == "original" else Frame(box_frame, (1000, 1000), (1000, 1000))
    size = tuple(rec.image_sizes[0])
    return Frame("pixels", size, size) if box_frame == "original" else Frame(box_frame, size, size)


def load_predictions(
    path: str | Path, records: Sequence[Any] | None = None, box_frame: str = "original"
) -> list[Sample]:
    """Samples from a predictions JSONL (this script's own, or another system's).

    Each line needs "completion" (or "prediction") and either "task" + "answer" or an "id" found in `records`
    (from --data). Boxes are read in the line's "frame" ({"kind", "image_size", "model_size"}) when it has
    one, else in `box_frame` units of the record's image ("original": pixels of the original image). A bad
    line is a ValueError naming path:line.
    """
    by_id = {str(r.id): r for r in records or []}
    samples = []
    unsized = []  # lines whose GeoChat {<..>} boxes (0-100 of an image) have no image size to convert with
    with open(path, encoding="utf-8-sig") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{line_no}"
            try:  # without its newline: a line cut short is reported where it ends, not at "line 2 column 1"
                obj = json.loads(line.rstrip("\r\n"))
            except json.JSONDecodeError as e:
                raise ValueError(f"{where}: bad JSON ({e.msg}, column {e.colno})") from None
            if not isinstance(obj, dict):
                raise ValueError(f"{where}: a line must be a JSON object")
            rec = by_id.get(str(obj.get("id")))
            if ("task" not in obj or "answer" not in obj) and rec is None:
                raise ValueError(f"{where}: needs 'task' and 'answer', or an 'id' found in --data")
            task = obj.get("task", rec.task if rec else None)
            if task not in TASKS:
                raise ValueError(f"{where}: field 'task': unknown task {task!r}; known: {', '.join(TASKS)}")
            samples.append(
                Sample(
                    task=task,
                    answer=obj["answer"] if "answer" in obj else rec.answer,
                    completion=str(obj.get("completion", obj.get("prediction", ""))),
                    frame=_prediction_frame(obj, rec, box_frame),
                    meta=obj.get("meta") or (rec.meta if rec is not None else {}),
                    id=str(obj.get("id", line_no)),
                    images=list(obj.get("images") or (rec.images if rec is not None else [])),
                    question=obj.get("question", rec.question if rec is not None else None),
                )
            )
            if samples[-1].frame is None and any(
                g for *_, g in iter_boxes(extract_answer(samples[-1].completion))
            ):
                unsized.append(where)
    if not samples:
        raise ValueError(f"{path}: no predictions")
    if unsized:
        print(
            f"{unsized[0]}: {len(unsized)} prediction(s) write GeoChat boxes {{<x1><y1><x2><y2>}} (0-100 of "
            "the image) with no image size known, so they are read as pixels; pass --data (the records) or "
            "give "
            'each line a "frame"',
            file=sys.stderr,
        )
    return samples


def task_list(text: str) -> list[str]:
    """--task's value: a comma list of the registry's tasks."""
    names = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [t for t in names if t not in TASKS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown task(s) {unknown or [text]}; known: {', '.join(TASKS)}")
    return names


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = ArgumentParser(description=__doc__)
    ap.add_argument(
        "--model",
        help="Generate with this checkpoint directory or hub id; unset: the embedded tiny "
        "model pre-trained to see, then on every task (defaults.sft_model, shipped in "
        "embedded/weights/embedded-start).",
    )
    ap.add_argument(
        "--data",
        help="Evaluate these records (a benchmark JSONL, see data.py); unset: the embedded "
        "synthetic test split. With --predictions: the records their ids refer to (unset: none).",
    )
    ap.add_argument(
        "--predictions",
        help="Score this predictions JSONL instead of generating (this script's own, or "
        "another system's: one {id, task, answer, completion} a line); unset: generate.",
    )
    ap.add_argument(
        "--box-frame",
        default="original",
        choices=BOX_FRAMES,
        help="With --predictions: the units of "
        "bracketed boxes in lines without a frame, relative to each record's image (--data).",
    )
    ap.add_argument(
        "--out", default="results", help="Write metrics.json, predictions.jsonl and table.md to this folder."
    )
    ap.add_argument("--batch-size", type=positive_int, default=8, help="Prompts per greedy generation batch.")
    ap.add_argument(
        "--max-new-tokens",
        type=positive_int,
        default=512,
        help="Stop each completion after this many tokens.",
    )
    ap.add_argument(
        "--task",
        type=task_list,
        default=None,
        help="Only these tasks (comma list) of --data, --predictions or --compare; unset: every task. "
        f"Tasks: {', '.join(TASKS)}.",
    )
    ap.add_argument("--limit", type=count, default=0, help="Evaluate only the first N records; 0: all.")
    ap.add_argument(
        "--skip-bad",
        action="store_true",
        help="Skip malformed records of --data (counted and reported) instead of stopping at the first.",
    )
    ap.add_argument(
        "--no-caption-extras",
        action="store_true",
        help="Skip METEOR and the coco-caption metrics (ROUGE is always computed).",
    )
    add_imagery_flags(ap)
    ap.add_argument(
        "--blind",
        metavar="TRAIN",
        help="Score the question-only baseline instead of a model: each "
        "record of --data answered from TRAIN's answers to the same question alone (baselines.py); no "
        "model loads. Unset: off.",
    )
    ap.add_argument(
        "--permute-images",
        type=count,
        default=None,
        metavar="SEED",
        help="The mismatched-image "
        "control: each record is shown the image(s) of another record of its task (a derangement drawn "
        "with SEED; boxes moved to the same relative place). Unset: off.",
    )
    ap.add_argument(
        "--compare",
        nargs="+",
        metavar="RESULTS",
        help="Print these evaluations (folders holding "
        "metrics.json) side by side and exit, e.g. an ablation against its baseline; unset: evaluate.",
    )
    ap.add_argument(
        "--all-metrics",
        action="store_true",
        help="With --compare: show every metric, not only each "
        "task's headline metric, well_formed rate and the rewards the runs' tables named.",
    )
    ap.add_argument(
        "--suite",
        choices=suite.SUITES,
        help="Evaluate every benchmark of this suite found under "
        "--root (GeoVLM-R1's table, geovlm/suite.py), each converted once into --out/data, and write "
        "suite.md and suite.json: ours beside the paper's numbers. Unset: evaluate --data.",
    )
    ap.add_argument(
        "--root",
        help="With --suite: the folder holding the benchmarks in their release layouts (--list shows them).",
    )
    ap.add_argument(
        "--list",
        action="store_true",
        help="With --suite: print every benchmark, the layout it is "
        "read from under --root and the published numbers, and exit.",
    )
    return ap.parse_args(argv)


# older metrics.json files: compare them all the same
RENAMED = {"format": "well_formed", "parsed": "answer_parsed"}


def compare(paths: Sequence[str], every_metric: bool = False, tasks: Sequence[str] | None = None) -> str:
    """Runs side by side: one row per (task, number), one column per run (a folder holding metrics.json, or
    the file), and the change from the first. By default each task's headline metric, then the rewards its
    table named (the rewards of predictions.jsonl's "scores"; the format reward as well_formed); every metric
    with `every_metric`. Each value carries its 95% bootstrap interval over the run's records when
    predictions.jsonl lies beside metrics.json, and Δ's interval is paired when both runs scored the same
    records. `tasks`: only these."""
    runs, preds = [], []
    for p in paths:
        f = Path(p) / "metrics.json" if Path(p).is_dir() else Path(p)
        try:
            run_tasks = json.loads(f.read_text())["tasks"]
        except (OSError, ValueError, KeyError) as e:
            raise SystemExit(f"--compare {p}: no readable metrics.json there ({e})") from None
        runs.append({t: {RENAMED.get(k, k): v for k, v in m.items()} for t, m in run_tasks.items()})
        try:
            preds.append(bootstrap.read_predictions(f.parent / "predictions.jsonl"))
        except (OSError, ValueError, TypeError) as e:  # ValueError names the file and line
            raise SystemExit(
                f"--compare {p}: unreadable predictions.jsonl beside metrics.json ({e})"
            ) from None
    lines = [
        "| task | metric | n | " + " | ".join(paths) + " | Δ (last - first) |",
        "|---|---|---:|" + "---:|" * (len(paths) + 1),
    ]
    for task in sorted({t for r in runs for t in r if not tasks or t in tasks}):
        # the rewards any run's table named, each computed for every run (an ablation's reward for the
        # baseline too)
        named = sorted({k for p in preds for row in p.get(task, []) for k in row.get("scores") or {}})
        named = [bootstrap.FORMAT if k == "format" else k for k in named if k not in bootstrap.NOT_REWARDS]
        stats = [bootstrap.task_stats(p.get(task, []), named) for p in preds]
        known = {k for r in runs for k in r.get(task, {})} | {k for s in stats for k in s}
        first = [TASKS[task].metric, bootstrap.FORMAT, *named]
        shown = [k for k in dict.fromkeys(first + (sorted(known) if every_metric else [])) if k in known]
        ns = [r[task].get("n") for r in runs if task in r]
        n = "/".join(str(x) for x in dict.fromkeys(ns))
        for k in [k for k in shown if k != "n"]:
            vals = [r.get(task, {}).get(k, s[k].value if k in s else None) for r, s in zip(runs, stats)]
            cells = [
                "–" if v is None else f"{v:.4f}" + (f" [{s[k].low:.4f}, {s[k].high:.4f}]" if k in s else "")
                for v, s in zip(vals, stats)
            ]
            delta = "–"
            if None not in (vals[0], vals[-1]):
                delta = f"{vals[-1] - vals[0]:+.4f}"
                a, b = preds[0].get(task, []), preds[-1].get(task, [])
                ci = (
                    bootstrap.paired_delta(stats[0][k], stats[-1][k])
                    if k in stats[0] and k in stats[-1] and bootstrap.same_records(a, b)
                    else None
                )
                delta += f" [{ci[0]:+.4f}, {ci[1]:+.4f}]" if ci else ""
            lines.append(f"| {task} | {k} | {n} | " + " | ".join(cells) + f" | {delta} |")
    lines += [
        "",
        f"[low, high]: {int(bootstrap.LEVEL * 100)}% bootstrap interval over the run's records "
        f"({bootstrap.RESAMPLES} resamples of predictions.jsonl); Δ's is paired when both runs scored the "
        "same records." + ("" if every_metric else " Every metric: --all-metrics."),
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.compare:
        print(compare(args.compare, args.all_metrics, args.task))
        return 0
    if args.suite:
        return run_suite(args)
    extras = not args.no_caption_extras
    if args.blind:  # no model: what the answer prior alone is worth
        records = _load_records(args.data or defaults.test_data(), args)[: args.limit or None]
        try:
            metrics = baselines.best_blind(_load_records(args.blind, args), records, args.out)
        except ValueError as e:  # a task of --data that TRAIN never shows
            raise SystemExit(f"--blind {args.blind}: {e}") from None
        print(baselines.blind_table(metrics))
        print(f"wrote {Path(args.out) / 'metrics.json'} and table.md")
        return 0
    if args.predictions:  # no model: score what another run or system wrote
        if rank_world()[0] != 0:
            return 0  # nothing to shard without a model
        records = _load_records(args.data, args) if args.data else None
        try:
            samples = load_predictions(args.predictions, records, args.box_frame)
        except FileNotFoundError:
            raise SystemExit(f"--predictions {args.predictions}: no such file") from None
        except ValueError as e:
            raise SystemExit(f"--predictions: {e}") from None
        samples = [s for s in samples if not args.task or s.task in args.task]
        if not samples:
            raise SystemExit(
                f"--predictions {args.predictions}: no predictions of task(s) {', '.join(args.task)}"
            )
        score_samples(samples[: args.limit or None], args.out, caption_extras=extras)
        if any(s.images for s in samples):
            print(
                f"open {viewer.write_viewer(Path(args.out) / 'predictions.jsonl', link_images=True)} "
                "in a browser"
            )
        return 0

    env = init_distributed()
    with local_rank0_first(env):  # the embedded defaults, built once (local rank 0 first)
        model_path = args.model or defaults.sft_model()
        data_path = args.data or defaults.test_data()
    records = _load_records(data_path, args)[: args.limit or None]
    if args.permute_images is not None:
        records = baselines.permute_images(records, args.permute_images)
    check_model(model_path)
    loaded = model_lib.load(model_path, device=env.device)
    metrics = evaluate_model(
        loaded.model,
        loaded.processor,
        loaded.frame_kind,
        records,
        args.max_new_tokens,
        env.device,
        args.out,
        args.batch_size,
        caption_extras=extras,
        quiet=False,
        progress=True,
    )
    if metrics is not None:  # rank 0: every completion with its boxes drawn on the image
        page = viewer.write_viewer(Path(args.out) / "predictions.jsonl", link_images=True)
        print(f"open {page} in a browser to see every answer on its image")
    if env.world > 1:
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    return 0


def run_suite(args: argparse.Namespace) -> int:
    """--suite: find each benchmark under --root, convert it once (cached in --out/data), evaluate it with one
    loaded model (sharded under torchrun like --data) and write suite.md / suite.json on rank 0."""
    benchmarks = suite.get_suite(args.suite)
    if args.list:
        print(suite.list_table(benchmarks))
        return 0
    if not args.root:
        raise SystemExit(
            "--suite needs --root DIR, the folder holding the benchmarks (--list shows the layouts)"
        )
    if not Path(args.root).is_dir():
        raise SystemExit(f"--root {args.root}: no such folder")
    if args.model:
        check_model(args.model)  # a wrong --model is one line before any conversion
    env = init_distributed()
    out = Path(args.out)
    with local_rank0_first(env):  # local rank 0 converts, the other ranks find its cache
        prepared = suite.prepare(benchmarks, args.root, str(out / "data"), args.skip_bad)
    if env.rank == 0:
        for p in prepared:
            print(f"{p.benchmark.name}: {p.status}" + (f": {p.message}" if p.message else f" ({p.summary})"))
    loaded = model_path = None
    if any(p.status == "ready" for p in prepared):
        with local_rank0_first(env):
            model_path = args.model or defaults.sft_model()
        loaded = model_lib.load(model_path, device=env.device)

    def evaluate(p: suite.Prepared) -> dict | None:
        records = _load_records(p.data, args)[: args.limit or None]
        return evaluate_model(
            loaded.model,
            loaded.processor,
            loaded.frame_kind,
            records,
            args.max_new_tokens,
            env.device,
            out / suite.slug(p.benchmark.name),
            args.batch_size,
            caption_extras=not args.no_caption_extras,
        )

    results = suite.run(prepared, evaluate)
    if env.rank == 0:
        print(suite.write_table(prepared, results, out, str(model_path or args.model)))
        print(f"wrote {out / 'suite.md'} and suite.json")
    if env.world > 1:
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    return 0


def _load_records(path: str, args: argparse.Namespace) -> list:
    return load_data(path, "--data", args.skip_bad, args.task, image_options=imagery_flags(args))


if __name__ == "__main__":
    sys.exit(main())
