"""Test-side launcher of train_grpo, run directly or under torchrun: test hooks live here, not in the trainer.

    python tests/grpo_launcher.py [--fixed-completions FILE.json] [--sigkill-at-step N] -- TRAIN_GRPO_FLAGS...

--fixed-completions: a JSON {record id: [completion texts]}; completion g of a prompt is texts[g % len]
    instead of a sample, so runs that would draw different samples (1 process vs N, each rank its own
    generator) train on the same completions (tests/test_distributed.py).
--sigkill-at-step: every rank SIGKILLs itself right after logging step N, before its checkpoint: a crash in
    the middle of a run at a known point.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import model as M  # noqa: E402
import train_grpo  # noqa: E402
from geovlm import fsdp  # noqa: E402
from geovlm.distributed import barrier  # noqa: E402


def fixed_sampler(path: str):
    """A stand-in for train_grpo.sample_group that returns the table's completions with their real
    log-probs."""
    table = json.loads(Path(path).read_text())

    def sample_group(tr: train_grpo.Trainer, inputs: dict, records: list) -> M.Rollout:
        G, T, tok = tr.args.group_size, tr.args.max_new_tokens, tr.run.processor.tokenizer
        eos = M.eos_token_ids(fsdp.unwrap(tr.policy), tr.run.processor)[0]
        rows = []
        for rec in records:
            texts = table[str(rec.id)]
            for g in range(G):
                rows.append((tok(texts[g % len(texts)], add_special_tokens=False)["input_ids"] + [eos])[:T])
        ids = torch.full((len(rows), max(map(len, rows))), tok.pad_token_id, dtype=torch.long)
        mask = torch.zeros(ids.shape, dtype=torch.bool)
        for i, r in enumerate(rows):
            ids[i, : len(r)], mask[i, : len(r)] = torch.tensor(r), True
        truncated = torch.tensor([r[-1] != eos for r in rows])
        dev = inputs["input_ids"].device
        logp = fsdp.call(
            tr.policy, M.token_logprobs, inputs, ids.to(dev), mask.to(dev), G, tr.args.temperature, tr.banned
        )
        return M.Rollout(ids, mask, truncated, logp)

    return sample_group


def kill_after_logging(step_to_die: int):
    real = train_grpo.log_step

    def log_step(tr, step, *args, **kwargs):
        row = real(tr, step, *args, **kwargs)
        if step == step_to_die:
            barrier()  # every rank has logged its part of this step
            os.kill(os.getpid(), signal.SIGKILL)
        return row

    return log_step


if __name__ == "__main__":
    own, rest = sys.argv[1 : sys.argv.index("--")], sys.argv[sys.argv.index("--") + 1 :]
    p = argparse.ArgumentParser()
    p.add_argument("--fixed-completions")
    p.add_argument("--sigkill-at-step", type=int)
    a = p.parse_args(own)
    if a.fixed_completions:
        train_grpo.sample_group = fixed_sampler(a.fixed_completions)
    if a.sigkill_at_step:
        train_grpo.log_step = kill_after_logging(a.sigkill_at_step)
    train_grpo.main(rest)
