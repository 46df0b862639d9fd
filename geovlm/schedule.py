"""What a step sees: its learning rate (`lr_at`) and its records (`Stream`: a seeded order whose position is
the whole state, so a resumed run continues exactly; `rank_slice`: this process's part of the global
batch)."""

from __future__ import annotations

import math
import random


def lr_at(
    step: int, base_lr: float, warmup: int, total: int, schedule: str = "cosine", min_ratio: float = 0.1
) -> float:
    """Linear warm-up to base_lr over `warmup` steps, then cosine to min_ratio·base_lr at `total` (or
    constant)."""
    if warmup > 0 and step < warmup:
        return base_lr * (step + 1) / warmup
    if schedule == "constant" or total <= warmup:
        return base_lr
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return base_lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


class Stream:
    """Endless epochs over item indices 0..n-1, each epoch in its own order: a permutation seeded by
    (seed, name, epoch), so the position (epoch, index) is the whole state and resuming continues exactly.

    Every rank holds the same stream and takes the same global batch from it, then keeps its own slice:
    N processes with B items each see what one process with N*B items sees, and no two ranks overlap."""

    def __init__(self, n: int, seed: int, name: str = ""):
        if n < 1:
            raise ValueError(f"stream {name!r}: no items")
        self.n, self.seed, self.name = n, seed, name
        self.epoch, self.index = 0, 0
        self._order: list[int] | None = None

    def _epoch_order(self) -> list[int]:
        if self._order is None:
            self._order = list(range(self.n))
            random.Random(f"{self.seed}:{self.name}:{self.epoch}").shuffle(self._order)  # str seed: stable
        return self._order

    def next(self) -> int:
        i = self._epoch_order()[self.index]
        self.index += 1
        if self.index == self.n:
            self.epoch, self.index, self._order = self.epoch + 1, 0, None
        return i

    def take(self, k: int) -> list[int]:
        return [self.next() for _ in range(k)]

    def state_dict(self) -> dict:
        return {"n": self.n, "seed": self.seed, "name": self.name, "epoch": self.epoch, "index": self.index}

    def load_state_dict(self, state: dict) -> None:
        if (state["n"], state["seed"], state["name"]) != (self.n, self.seed, self.name):
            raise SystemExit(
                f"resume: data stream {self.name!r} was {state['n']} items, seed {state['seed']}; "
                f"now {self.n} items, seed {self.seed}: not the same data / --seed"
            )
        self.epoch, self.index, self._order = state["epoch"], state["index"], None


def rank_slice(items: list, counts: list[int], rank: int) -> list:
    """This rank's part of a global batch laid out rank after rank (counts[r] items for rank r)."""
    lo = sum(counts[:rank])
    return items[lo : lo + counts[rank]]
