"""IncreLoRA (Zhang et al., "IncreLoRA: Incremental Parameter Allocation Method for Parameter-Efficient
Fine-tuning", 2023; official code FeiyuZhang98/IncreLoRA), built on peft's LoRA layers.

Every module is ``delta W = P diag(lambda) Q * alpha / rank`` (SVD form, as
AdaLoRA) and starts at ``init_r`` ranks. After ``init_warmup`` steps, every
``interval`` steps the ``top_h`` modules with the highest importance score
(sensitivity x uncertainty, smoothed as in AdaLoRA) gain ``incre_rank`` ranks,
until the total rank equals the budget ``target_r x modules``; the total
never falls. Advance learning: each module keeps ``incre_rank`` reserve ranks
whose P and Q train before activation behind a fixed lambda of 1e-5, so a
rank starts useful; an activated rank's lambda starts at that 1e-5 (the
output does not jump) and its learning rate ramps up linearly over
``component_warmup`` steps. An orthogonality penalty keeps the active P and
Q near-orthonormal.

Where this departs from the official code, and why:

* the module's sensitivity is AdaLoRA's parameter sensitivity ``|theta x grad|``
  averaged over its active P, lambda, Q entries, where the official code
  scores ``|delta W x dL/d(delta W)|``: that needs delta W materialised and its
  gradient (a full weight gradient per module per step), which the 1.5x speed
  goal does not allow; both measure how much the loss moves with the module;
* ranks live in fixed tensors of ``max_r`` rows with masks (peft's layer),
  not growing parameter lists, so the optimizer keeps one state per tensor
  and checkpoints have fixed shapes; a module stops growing at ``max_r``;
* the last allocation adds only what is left of the budget, so the total
  lands exactly on it (the official code may overshoot by incre_rank - 1);
* per-component learning-rate warm-up scales that component's update (the
  difference the optimizer step made), which is what a per-group lr does.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from deltahub_trainers import gates as gating
from deltahub_trainers.base import Trainer
from deltahub_trainers.increlora.allocator import choose, is_allocation_step, plan, smooth
from deltahub_trainers.increlora.config import IncreLoraTrainConfig

RESERVE_LAMBDA = 1e-5


class SingularValues(gating.RankGate):
    """lambda of one module, with the masks of its active and reserve ranks."""

    def __init__(self, r_max: int, init_r: int, alpha: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(r_max))  # the official init: lambda = 0
        self.register_buffer("active", torch.zeros(r_max))
        self.register_buffer("reserve", torch.zeros(r_max))
        self.register_buffer("since", torch.full((r_max,), -1.0))  # step a rank was activated; -1: from the start
        self.active[:init_r] = 1.0
        self.alpha = alpha

    @property
    def rank(self) -> int:
        return int(self.active.sum())

    def scale(self) -> float:
        return self.alpha / (self.rank + 1e-5)

    def vector(self) -> torch.Tensor:
        return (self.weight * self.active + RESERVE_LAMBDA * self.reserve) * self.scale()


class IncreLoraTrainer(Trainer):
    name = "increlora"
    title = "IncreLoRA"
    paper = "https://arxiv.org/abs/2308.12043"
    config_cls = IncreLoraTrainConfig
    rank_adaptive = True

    def build(self, model, *, task_type, resume_adapter: Path | None):
        c: IncreLoraTrainConfig = self.config
        self.model, self.gates = gating.gated_lora(
            model, c.cap, c, task_type, lambda name, layer: SingularValues(c.cap, c.init_r, c.lora_alpha))
        with torch.no_grad():
            for a, b in gating.factors(self.model).values():
                nn.init.normal_(a, std=0.02)  # the official init of P and Q
                nn.init.normal_(b, std=0.02)
        self.budget = c.target_r * len(self.gates)
        self.plan = plan(self.total_steps, start_total=c.init_r * len(self.gates), budget=self.budget,
                         per_round=c.step_rank * self._top_h, warmup=c.init_warmup, interval=c.interval)
        self.ema = {k: [0.0, 0.0] for k in self.gates}
        self.history: list[dict] = []
        self._set_reserves()
        self._snapshot: dict[str, tuple] = {}
        return self.model

    @property
    def _top_h(self) -> int:
        return self.config.top_h if self.config.top_h > 0 else max(1, len(self.gates) // 4)

    @property
    def total_rank(self) -> int:
        return sum(g.rank for g in self.gates.values())

    def _set_reserves(self) -> None:
        c: IncreLoraTrainConfig = self.config
        growing = c.advance_learning and self.total_rank < self.budget
        for g in self.gates.values():
            g.reserve.zero_()
            if growing:
                g.reserve[g.rank:g.rank + c.step_rank] = 1.0

    # -- the loss -------------------------------------------------------------
    def extra_loss(self, model):
        c: IncreLoraTrainConfig = self.config
        if not c.orth_reg_weight:
            return None
        ab = gating.factors(model)
        total = 0.0
        for key, g in self.gates.items():
            a, b = ab[key]
            k = g.rank
            eye = torch.eye(k, device=a.device, dtype=a.dtype)
            total = total + ((a[:k] @ a[:k].T - eye) ** 2).sum() + ((b[:, :k].T @ b[:, :k] - eye) ** 2).sum()
        return c.orth_reg_weight * total / len(self.gates)

    # -- around the optimizer step -------------------------------------------------
    def _warming(self, step: int) -> dict[str, torch.Tensor]:
        """Per-rank update multipliers of modules with a rank still in its learning-rate warm-up."""
        span = self.config.component_warmup if self.config.component_warmup > 0 else self.plan.interval
        out = {}
        for key, g in self.gates.items():
            since = g.since
            warming = (since >= 0) & (step - since < span)
            if bool(warming.any()):
                m = torch.ones_like(since)
                m[warming] = (step - since[warming] + 1) / span
                out[key] = m
        return out

    def before_step(self, model, step: int) -> None:
        ab = gating.factors(model)
        self._snapshot = {k: (ab[k][0].detach().clone(), ab[k][1].detach().clone(),
                              self.gates[k].weight.detach().clone(), m)
                          for k, m in self._warming(step).items()}

    def after_step(self, model, step: int, lr: float) -> None:
        ab = gating.factors(model)
        with torch.no_grad():
            for key, (a0, b0, e0, m) in self._snapshot.items():
                a, b = ab[key]
                e = self.gates[key].weight
                a.copy_(a0 + (a - a0) * m.unsqueeze(1))
                b.copy_(b0 + (b - b0) * m.unsqueeze(0))
                e.copy_(e0 + (e - e0) * m)
        self._snapshot = {}
        if self.total_rank >= self.budget:
            return
        self._update_scores(ab)
        if is_allocation_step(step, self.plan):
            self._allocate(step)

    @torch.no_grad()
    def _update_scores(self, ab) -> None:
        c: IncreLoraTrainConfig = self.config
        for key, g in self.gates.items():
            a, b = ab[key]
            if a.grad is None or b.grad is None or g.weight.grad is None:
                continue
            k = g.rank
            s = ((a[:k] * a.grad[:k]).abs().sum() + (b[:, :k] * b.grad[:, :k]).abs().sum()
                 + (g.weight[:k] * g.weight.grad[:k]).abs().sum())
            s = float(s) / (k * (a.shape[1] + b.shape[0] + 1))
            self.ema[key] = list(smooth(*self.ema[key], s, c.beta1, c.beta2))

    def scores(self) -> dict[str, float]:
        return {k: ipt * unc for k, (ipt, unc) in self.ema.items()}

    def _allocate(self, step: int) -> None:
        c: IncreLoraTrainConfig = self.config
        scores = self.scores()
        ranks = {k: g.rank for k, g in self.gates.items()}
        grown = choose(scores, ranks, top_h=self._top_h, add=c.step_rank, max_r=c.cap,
                       remaining=self.budget - self.total_rank)
        with torch.no_grad():
            for key, add in grown.items():
                g = self.gates[key]
                lo = g.rank
                g.active[lo:lo + add] = 1.0
                g.since[lo:lo + add] = float(step)
                g.weight[lo:lo + add] = RESERVE_LAMBDA if c.advance_learning else 0.0
        self.history.append({"step": step, "grown": grown, "scores": scores, "total_rank": self.total_rank})
        self._set_reserves()

    def rank_pattern(self, model) -> dict[str, int]:
        return {k: g.rank for k, g in self.gates.items()}

    # -- checkpoints ------------------------------------------------------------
    def state(self):
        tensors = {f"ema.{k}": torch.tensor(v, dtype=torch.float64) for k, v in self.ema.items()}
        return tensors, {"history": self.history}

    def load_state(self, model, tensors, doc) -> None:
        for key, value in tensors.items():
            self.ema[key[len("ema."):]] = [float(x) for x in value]
        self.history = list(doc.get("history", []))
        self._set_reserves()

    def export(self, model, dest: Path) -> dict:
        facts = gating.export_gated(model, self.gates, dest, diag_and_scale=lambda g: (g.weight * g.active, g.scale()))
        return {**facts, "allocations": self.history}
