"""The starts shipped in embedded/weights/ are what their manifests say: the files hash as listed, and the
recipe's first steps, re-run now with the same flags, give the losses logged when the start was trained
(scripts/ship_start.py; the perception start's chain: scripts/perception_start.py). A start whose recipe,
data or code changed since fails here; rebuild it with the commands in those scripts."""

import json
import shutil
from pathlib import Path

import pytest
import torch

WEIGHTS = Path(__file__).resolve().parents[1] / "embedded" / "weights"
N_SEEN = 40  # fresh detection records the embedded start is scored on (its synth held-out F1: 0.260 on 100)
STEPS = 5  # within the 20-step warm-up, so the learning rate of each step does not depend on --max-steps


def proof_start(task: str):
    """The seed-0 SFT start of `grpo_proof.py --task TASK`, re-run for STEPS steps: its run folder."""

    def rerun(out: Path, grpo_proof) -> Path:
        argv = ["--task", task, "--seeds", "0", "--sft-only", "--sft-steps", str(STEPS), "--out", str(out)]
        grpo_proof.main(argv)
        return out / "sft-seed0"

    return rerun


SFT_STARTS = {"grounding-probe-sft": proof_start("grounding"), "vqa-sft": proof_start("vqa")}
CHAIN_STARTS = {"perception-start": 16, "embedded-start": 21}  # links of scripts/perception_start.py's chain
STARTS = [*SFT_STARTS, *CHAIN_STARTS]


def manifest(start: Path) -> dict:
    return json.loads((start / "manifest.json").read_text())


def test_every_shipped_start_is_checked_here():
    assert {p.name for p in WEIGHTS.iterdir() if p.is_dir()} == set(STARTS)


@pytest.mark.parametrize("name", STARTS)
def test_the_shipped_files_are_the_manifests(ship_start, name):
    start = WEIGHTS / name
    m = manifest(start)
    shipped = {p.name for p in start.iterdir()} - {"manifest.json"}
    assert shipped == set(m["sha256"]), "a file is shipped without its hash, or listed and missing"
    assert {f: ship_start.sha256(start / f) for f in shipped} == m["sha256"]
    assert "model.safetensors" in shipped and m["commit"]


@pytest.mark.parametrize("name", SFT_STARTS)
def test_the_start_comes_from_its_recipe(tmp_path, grpo_proof, name):
    """The first STEPS steps of the manifest's command, re-run now, take the same flags (but the length) and
    give the logged losses, with the same tokenizer."""
    torch.set_num_threads(1)  # as the starts were trained (one-thread sums): bit-for-bit on one machine
    start, m = WEIGHTS / name, manifest(WEIGHTS / name)
    run = SFT_STARTS[name](tmp_path / "again", grpo_proof)
    flags = {k: v for k, v in json.loads((run / "args.json").read_text()).items() if k in m["sft_args"]}
    assert flags | {"max_steps": m["sft_args"]["max_steps"]} == m["sft_args"]
    assert len(m["losses"]) == m["sft_args"]["max_steps"]
    rows = [json.loads(line) for line in open(run / "log.jsonl")]
    again = [r["loss"] for r in rows if "loss" in r]
    assert again == pytest.approx(m["losses"][:STEPS], rel=1e-4, abs=1e-5)
    # the same tokenizer: the embedded corpus it is trained on has not changed since
    assert (run / "final" / "tokenizer.json").read_bytes() == (start / "tokenizer.json").read_bytes()


def test_the_proof_starts_have_their_recipes_length(grpo_proof):
    for name, task in (("grounding-probe-sft", "grounding"), ("vqa-sft", "vqa")):
        m = manifest(WEIGHTS / name)
        assert f"--task {task} --seeds 0 --sft-only" in m["command"]
        assert m["sft_args"]["max_steps"] == grpo_proof.RECIPES[task]["sft_steps"]


def test_ship_writes_a_whole_start_with_its_manifest_and_never_replaces_one(tmp_path, ship_start):
    run = tmp_path / "run"
    (run / "final" / "resume").mkdir(parents=True)
    (run / "final" / "config.json").write_text("{}")
    (run / "final" / "model.safetensors").write_bytes(b"weights")
    (run / "args.json").write_text('{"model": "/x", "data": "/y", "out": "/z", "lr": 0.002, "max_steps": 2}')
    (run / "log.jsonl").write_text('{"step": 0, "eval_loss": 7.0}\n{"loss": 6.5}\n{"loss": 6.1}\n')
    dest = tmp_path / "weights" / "start"
    m = ship_start.ship(run, dest, "python train_sft.py --max-steps 2", "abc1234")
    assert sorted(p.name for p in dest.iterdir()) == ["config.json", "manifest.json", "model.safetensors"]
    assert manifest(dest) == m and m["losses"] == [6.5, 6.1]
    assert m["sft_args"] == {"lr": 0.002, "max_steps": 2}  # without the run's paths
    assert m["sha256"]["model.safetensors"] == ship_start.sha256(dest / "model.safetensors")
    with pytest.raises(SystemExit, match="exists; remove it first"):
        ship_start.ship(run, dest, "again", "def5678")
    assert manifest(dest)["commit"] == "abc1234"  # the shipped start is untouched
    with pytest.raises(SystemExit, match="not a finished SFT run"):
        ship_start.ship(tmp_path / "nothing", tmp_path / "weights" / "other", "c", "d")
    assert sorted(p.name for p in (tmp_path / "weights").iterdir()) == ["start"]  # no half-built folder left


@pytest.mark.parametrize("name", CHAIN_STARTS)
def test_the_chain_starts_come_from_their_chain(tmp_path, perception_start, pretrain_tiny, name):
    """The manifest's chain is the script's first links; each rung's log in docs/perception-ladder/ is the one
    shipped with it. Re-run now for STEPS steps, the first link (from a fresh model) for the perception start,
    the one after the perception start (from the shipped perception start) for the embedded start, give that
    rung's logged losses. (The embedded start's later links start from models that are not shipped.)"""
    torch.set_num_threads(1)
    start, links = WEIGHTS / name, CHAIN_STARTS[name]
    m = manifest(start)
    chain = perception_start.CHAIN[:links]
    assert [(c["rung"], c["run"], c["commit"], c["flags"]) for c in m["chain"]] == chain
    for c in m["chain"]:
        assert perception_start.sha256(perception_start.LADDER / c["run"] / "log.jsonl") == c["log_sha256"]
    assert m["commit"] == chain[-1][2]
    assert m["heldout"]["detection"]["f1@0.5"] > m["heldout"]["blind"]["detection"]["f1@0.5"] + 0.1
    if links == perception_start.PERCEPTION_LINKS:
        rung, base = chain[0], []
    else:
        assert links == len(perception_start.CHAIN)
        rung = chain[perception_start.PERCEPTION_LINKS]
        base = ["--base-model", str(WEIGHTS / "perception-start")]
    flags = rung[3].split()
    at = flags.index("--stages")
    stage, _, tasks = flags[at + 1].split(":")
    flags[at + 1] = f"{stage}:{STEPS}:{tasks}"
    out = tmp_path / "again"
    small_eval = ["--eval-records", "2", "--blind-records", "20", "--max-new-tokens", "8"]
    small_eval += ["--eval-every", "0"]
    pretrain_tiny.main(["--out", str(out), *flags, *base, *small_eval])
    again = [r["loss"] for r in map(json.loads, open(out / "log.jsonl")) if "loss" in r]
    logged = perception_start.LADDER / rung[1] / "log.jsonl"
    first = [r["loss"] for r in map(json.loads, open(logged)) if "loss" in r and r["stage"] == stage][:STEPS]
    assert again == pytest.approx(first, rel=1e-4, abs=1e-5)
    tokenizer = (out / f"stage-0-{stage}" / "tokenizer.json").read_bytes()
    assert tokenizer == (start / "tokenizer.json").read_bytes()


def test_perception_start_ships_only_a_finished_chain_and_never_replaces_a_start(tmp_path, perception_start):
    chain, dest = tmp_path / "chain", tmp_path / "weights" / "start"
    with pytest.raises(SystemExit, match="not finished; run the chain first"):
        perception_start.ship(chain, dest)
    last = perception_start.stage_dir(chain, len(perception_start.CHAIN) - 1)
    last.mkdir(parents=True)
    (last / "done.json").write_text("{}")
    (last / "model.safetensors").write_bytes(b"weights")
    results = {"blind": {"detection": {"f1@0.5": 0.01}}, "eval_seed": 7, "stages": [{"eval": {"x": 1}}]}
    (last.parent / "results.json").write_text(json.dumps(results))
    m = perception_start.ship(chain, dest)
    assert sorted(p.name for p in dest.iterdir()) == ["manifest.json", "model.safetensors"]  # not done.json
    assert manifest(dest) == m and m["heldout"] == {"blind": results["blind"], "eval_seed": 7, "x": 1}
    assert m["sha256"] == {"model.safetensors": perception_start.sha256(dest / "model.safetensors")}
    assert [c["log_sha256"] for c in m["chain"]] == [
        c["log_sha256"] for c in manifest(WEIGHTS / "embedded-start")["chain"]
    ]
    with pytest.raises(SystemExit, match="exists; remove it first"):
        perception_start.ship(chain, dest)
    assert manifest(dest) == m and sorted(p.name for p in dest.parent.iterdir()) == ["start"]  # untouched
    # the perception start: the chain's first links only, said so in the manifest's command
    links = perception_start.PERCEPTION_LINKS
    with pytest.raises(SystemExit, match="not finished; run the chain first"):
        perception_start.ship(chain, tmp_path / "weights" / "perception", links)
    shutil.copytree(last, perception_start.stage_dir(chain, links - 1))  # a finished link's model
    shutil.copy(last.parent / "results.json", perception_start.link_dir(chain, links - 1))
    p = perception_start.ship(chain, tmp_path / "weights" / "perception", links)
    assert p["command"].endswith(f"--out runs/perception --links {links}")
    assert p["chain"] == manifest(WEIGHTS / "perception-start")["chain"]


def test_the_embedded_start_sees_the_objects_it_boxes(tmp_path):
    """On fresh synth detection records, the embedded start (what the defaults use) beats the best blind
    answer and its own score with the images permuted among the records: the image explains its boxes. (The
    perception start it was trained from, the detection proof's, is what its chain test re-runs from.)"""
    import eval as E
    import model as M
    from data import load_records
    from embedded import synth
    from geovlm import baselines

    torch.set_num_threads(1)
    synth.make_dataset(tmp_path / "held", n=N_SEEN, seed=1000, tasks=["detection"], test_frac=0.0)
    synth.make_dataset(tmp_path / "fit", n=200, seed=2000, tasks=["detection"], test_frac=0.0)
    held, fit = (
        load_records(tmp_path / "held" / "train.jsonl"),
        load_records(tmp_path / "fit" / "train.jsonl"),
    )
    loaded = M.load(str(WEIGHTS / "embedded-start"), device="cpu")
    loaded.model.eval()

    def f1(records) -> float:
        scores = E.evaluate_model(
            loaded.model, loaded.processor, loaded.frame_kind, records, 128, loaded.device
        )
        return scores["tasks"]["detection"]["f1@0.5"]

    seen, permuted = f1(held), f1(baselines.permute_images(held, 0))
    blind = baselines.best_blind(fit, held)["tasks"]["detection"]["f1@0.5"]
    assert seen >= max(permuted, blind) + 0.06, (seen, permuted, blind)  # measured: 0.240, 0.000, 0.000


def test_a_ctrl_c_lets_the_link_save_its_checkpoint_before_the_chain_stops(
    tmp_path, perception_start, monkeypatch
):
    waits = []

    class Link:  # pretrain_tiny.py got the Ctrl-C too: it ends its step, saves, and exits 130
        def __init__(self, cmd):
            pass

        def wait(self):
            waits.append(1)
            if len(waits) == 1:
                raise KeyboardInterrupt
            return 130

    monkeypatch.setattr(perception_start.subprocess, "Popen", Link)
    with pytest.raises(SystemExit, match="link 0 \\(rung \\d+\\) stopped \\(exit 130\\).*last checkpoint"):
        perception_start.run_chain(tmp_path / "chain")
    assert len(waits) == 2  # the chain waited for the link instead of leaving it mid-save


def test_the_chain_trains_each_link_from_the_last_and_resumes_after_the_finished_ones(
    tmp_path, perception_start, monkeypatch, capsys
):
    small = "--eval-records 2 --blind-records 20 --max-new-tokens 8"
    chain = [
        (1, "first", "abc1234", f"--stages square:2:grounding {small}"),
        (2, "second", "abc1234", f"--stages square2rb:2:grounding {small}"),
    ]
    monkeypatch.setattr(perception_start, "CHAIN", chain)
    final = perception_start.run_chain(tmp_path / "chain")
    assert (
        final == tmp_path / "chain" / "01-rung2-second" / "stage-0-square2rb"
        and (final / "done.json").exists()
    )
    second = json.loads((tmp_path / "chain" / "01-rung2-second" / "recipe.json").read_text())
    assert second["base_model"] == str(tmp_path / "chain" / "00-rung1-first" / "stage-0-square")
    perception_start.run_chain(tmp_path / "chain")  # again: both links are done, nothing is trained
    assert capsys.readouterr().out.count("done already") == 2
    monkeypatch.setattr(
        perception_start, "CHAIN", [*chain, (3, "third", "abc1234", "--stages nosuchstage:2")]
    )
    with pytest.raises(SystemExit, match="link 2 \\(rung 3\\) stopped"):
        perception_start.run_chain(tmp_path / "chain")
