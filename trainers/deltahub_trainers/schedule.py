"""The learning-rate schedule: linear warm-up, then cosine or linear decay to a floor.

Re-warming and re-decaying (Ibrahim et al., "Simple and Scalable Strategies
to Continually Pre-train Large Language Models", 2024): a job that continues
an earlier adapter warms up from 0 again and decays again over its own steps,
which the paper finds better than continuing at the old, decayed rate. With
``rewarm`` off a continuing job starts at the peak (no warm-up).
"""

from __future__ import annotations

import math


def lr_factor(step: int, total: int, *, warmup: int, schedule: str, min_ratio: float) -> float:
    """The multiplier of the peak rate at optimizer step ``step`` (0-based) of ``total``."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    span = max(1, total - warmup)
    progress = min(1.0, (step - warmup) / span)
    if schedule == "linear":
        decay = 1.0 - progress
    else:  # cosine
        decay = 0.5 * (1.0 + math.cos(math.pi * progress))
    return min_ratio + (1.0 - min_ratio) * decay


def warmup_steps(total: int, ratio: float, *, continuing: bool, rewarm: bool) -> int:
    if continuing and not rewarm:
        return 0
    return int(round(total * ratio))
