"""Batches of rows for training: domain rows mixed with replay rows, tokenised.

The order is a pure function of (seed, step), so a job resumed from a
checkpoint on another worker sees exactly the batches it would have seen.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from deltahub.errors import InvalidInputError


@dataclass
class Split:
    train: list[dict]
    held_out: list[dict]


def split_rows(rows: list[dict], fraction: float, seed: int) -> Split:
    """Holds out ``fraction`` of the rows (at least one when asked) for the final evaluation."""
    if not fraction:
        return Split(list(rows), [])
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    n = max(1, int(len(rows) * fraction))
    if n >= len(rows):
        raise InvalidInputError(f"eval_fraction {fraction} leaves no training rows out of {len(rows)}")
    held = set(order[:n])
    return Split([r for i, r in enumerate(rows) if i not in held], [r for i, r in enumerate(rows) if i in held])


def batch_indices(step: int, n: int, size: int, seed: int) -> list[int]:
    """The rows of batch ``step``: epochs are seeded shuffles, walked in order."""
    if n == 0 or size == 0:
        return []
    out: list[int] = []
    pos = step * size
    while len(out) < size:
        epoch, offset = divmod(pos, n)
        order = list(range(n))
        random.Random(seed * 1_000_003 + epoch).shuffle(order)
        take = min(size - len(out), n - offset)
        out.extend(order[offset:offset + take])
        pos += take
    return out


class Batches:
    """Domain rows plus, at ``replay_fraction``, rows of a general (replay) set in every batch."""

    def __init__(self, tokenizer, rows: list[dict], *, batch_size: int, max_length: int, seed: int,
                 replay: list[dict] | None = None, replay_fraction: float = 0.0,
                 labels: dict | None = None) -> None:
        if not rows:
            raise InvalidInputError("the domain data has no rows")
        self.tokenizer = tokenizer
        self.rows, self.replay = rows, replay or []
        self.n_replay = round(batch_size * replay_fraction) if self.replay else 0
        self.n_domain = batch_size - self.n_replay
        self.max_length, self.seed = max_length, seed
        self.labels = labels

    def rows_at(self, step: int) -> list[dict]:
        rows = [self.rows[i] for i in batch_indices(step, len(self.rows), self.n_domain, self.seed)]
        rows += [self.replay[i] for i in batch_indices(step, len(self.replay), self.n_replay, self.seed + 1)]
        return rows

    def encode(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        enc = self.tokenizer([r["text"] for r in rows], return_tensors="pt", padding=True, truncation=True,
                             max_length=self.max_length)
        if self.labels is not None:
            enc["labels"] = torch.tensor([self.labels[r["label"]] for r in rows])
        else:
            labels = enc["input_ids"].clone()
            labels[enc["attention_mask"] == 0] = -100  # padding is not a target
            enc["labels"] = labels
        return dict(enc)

    def at(self, step: int) -> dict[str, torch.Tensor]:
        return self.encode(self.rows_at(step))

    def tokens(self, batch: dict[str, torch.Tensor]) -> int:
        return int(batch["attention_mask"].sum())
