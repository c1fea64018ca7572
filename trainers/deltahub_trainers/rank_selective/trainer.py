"""Rank-selective LoRA (CoDyRA: "Adaptive Rank, Reduced Forgetting: Knowledge Retention in Continual
Learning Vision-Language Models with Dynamic Rank-Selective LoRA"; official code Artificer-AI-Lab/CoDyRA).

Each adapted module is ``delta W = B diag(w) A`` with one gate per rank. The
gates carry an L1 penalty optimised proximally: after every optimizer step a
gradient step on the gates is followed by the soft-threshold of the L1
proximal operator, so gates reach exactly zero and their ranks switch off.
Training starts dense (no penalty, ``dense_ratio`` of the steps), then the
penalty weight rises linearly to ``l1`` at the last step. Each module keeps
the ranks its data needs; the result is exported as a LoRA with a rank
pattern, the gates folded into A (exact).

Choices where the paper and code leave room, written down:

* initialisation as the official code: A Kaiming-uniform, B zero, gates
  standard normal; no extra scale (``lora_alpha = r``, peft's scaling 1);
* the gates take plain (proximal) gradient steps of size ``gate_lr`` times
  the schedule's factor, not Adam steps: the proximal gradient method
  (ISTA) needs the step in gradient units - with Adam's normalised steps any
  threshold above the step size would close every gate and any below it
  none that has a steady gradient. A and B train with AdamW as usual;
* the threshold of step t is ``eta_t * lambda_t`` (step size x penalty weight),
  the proximal operator of ``lambda_t |w|_1`` for that step.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from deltahub_trainers import gates as gating
from deltahub_trainers.base import Trainer
from deltahub_trainers.rank_selective.config import RankSelectiveTrainConfig
from deltahub_trainers.rank_selective.prox import l1_weight, soft_threshold


class GateVector(gating.RankGate):
    def __init__(self, r: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(r))

    def vector(self) -> torch.Tensor:
        return self.weight


class RankSelectiveTrainer(Trainer):
    name = "rank_selective"
    title = "Rank-selective LoRA (CoDyRA)"
    paper = "https://arxiv.org/abs/2412.01004"
    config_cls = RankSelectiveTrainConfig
    rank_adaptive = True

    def build(self, model, *, task_type, resume_adapter: Path | None):
        c: RankSelectiveTrainConfig = self.config
        self.model, self.gates = gating.gated_lora(model, c.r, c, task_type, lambda name, layer: GateVector(c.r))
        self.dense_steps = int(self.total_steps * c.dense_ratio)
        return self.model

    def optimizer_params(self, model):
        gate_ids = {id(g.weight) for g in self.gates.values()}
        return [p for p in model.parameters() if p.requires_grad and id(p) not in gate_ids]

    def after_step(self, model, step: int, lr: float) -> None:
        c: RankSelectiveTrainConfig = self.config
        eta = c.gate_lr * lr / c.lr  # the schedule's factor applies to the gates' step too
        tau = eta * l1_weight(step, self.total_steps, dense_steps=self.dense_steps, l1=c.l1)
        with torch.no_grad():
            for g in self.gates.values():
                w = g.weight
                if w.grad is not None:
                    w.sub_(eta * w.grad)
                w.copy_(soft_threshold(w, tau))
                w.grad = None

    def rank_pattern(self, model) -> dict[str, int]:
        return {k: int((g.weight != 0).sum()) for k, g in self.gates.items()}

    def export(self, model, dest: Path) -> dict:
        return gating.export_gated(model, self.gates, dest, diag_and_scale=lambda g: (g.weight, 1.0))
