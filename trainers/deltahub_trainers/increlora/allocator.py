"""IncreLoRA's budget: importance averages and which modules grow (pure).

Importance follows AdaLoRA: per module a sensitivity ``s``, its exponential
average ``s_bar = beta1 s_bar + (1 - beta1) s``, the uncertainty
``u_bar = beta2 u_bar + (1 - beta2) |s - s_bar|``, and the score
``s_bar * u_bar``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


def smooth(ipt_avg: float, unc_avg: float, s: float, beta1: float, beta2: float) -> tuple[float, float]:
    ipt_avg = beta1 * ipt_avg + (1 - beta1) * s
    unc_avg = beta2 * unc_avg + (1 - beta2) * abs(s - ipt_avg)
    return ipt_avg, unc_avg


@dataclass(frozen=True)
class Plan:
    warmup: int        # steps before the first allocation
    interval: int      # steps between allocations
    rounds: int        # allocations needed to reach the budget


def plan(total_steps: int, *, start_total: int, budget: int, per_round: int, warmup: int, interval: int,
         finish_ratio: float = 0.7) -> Plan:
    """Allocation times: given ones, or the budget reached by ``finish_ratio`` of the steps."""
    rounds = max(1, math.ceil((budget - start_total) / max(1, per_round)))
    warmup = warmup if warmup >= 0 else max(1, total_steps // 10)
    if interval <= 0:
        interval = max(1, (int(total_steps * finish_ratio) - warmup) // rounds)
    return Plan(warmup, interval, rounds)


def is_allocation_step(step: int, p: Plan) -> bool:
    return step >= p.warmup and (step - p.warmup) % p.interval == 0


def choose(scores: dict[str, float], ranks: dict[str, int], *, top_h: int, add: int, max_r: int,
           remaining: int) -> dict[str, int]:
    """Rank added to each of the ``top_h`` best-scored modules that have room, never past the budget.

    Ties go to the module named first, so the choice is reproducible.
    """
    grown: dict[str, int] = {}
    for name in sorted(scores, key=lambda n: (-scores[n], n)):
        if len(grown) == top_h or remaining <= 0:
            break
        room = min(add, max_r - ranks[name], remaining)
        if room > 0:
            grown[name] = room
            remaining -= room
    return grown
