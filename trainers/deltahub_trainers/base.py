"""What a trainer is: a config class plus the hooks the training loop calls.

The loop (:mod:`deltahub_trainers.loop`) owns data, optimizer, schedule,
checkpoints and progress; a trainer only says how to wrap the base model,
what to add to the loss, what to do around each optimizer step, what state
of its own a checkpoint must carry, and how to save the result as a plain
peft adapter.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from deltahub_trainers.config import TrainConfig

PEFT_PREFIX = "base_model.model."


def module_key(name: str) -> str:
    """A peft model's module name as the base model names it (the key of rank_pattern)."""
    return name[len(PEFT_PREFIX):] if name.startswith(PEFT_PREFIX) else name


class Trainer:
    name: ClassVar[str]
    title: ClassVar[str]
    paper: ClassVar[str] = ""
    config_cls: ClassVar[type[TrainConfig]] = TrainConfig
    rank_adaptive: ClassVar[bool] = False
    resumable_from_adapter: ClassVar[bool] = False

    def __init__(self, config: TrainConfig) -> None:
        self.config = config
        self.total_steps = 0  # set by the loop before build()

    # -- set-up -----------------------------------------------------------
    def build(self, model: nn.Module, *, task_type: str, resume_adapter: Path | None) -> nn.Module:
        """The trainable model around the (frozen) base; ``self.total_steps`` is known by then."""
        raise NotImplementedError

    def optimizer_params(self, model: nn.Module) -> list[nn.Parameter]:
        """What AdamW updates: by default every trainable parameter."""
        return [p for p in model.parameters() if p.requires_grad]

    # -- each step ----------------------------------------------------------
    def extra_loss(self, model: nn.Module) -> torch.Tensor | None:
        return None

    def before_step(self, model: nn.Module, step: int) -> None:
        """After backward, before the optimizer step."""

    def after_step(self, model: nn.Module, step: int, lr: float) -> None:
        """After the optimizer step, before gradients are cleared (rank allocation lives here)."""

    def rank_pattern(self, model: nn.Module) -> dict[str, int] | None:
        """The current rank of each adapted module, for rank-adaptive trainers."""
        return None

    # -- checkpoints ----------------------------------------------------------
    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """The trainer's own state beyond the model's parameters (tensors, JSON)."""
        return {}, {}

    def load_state(self, model: nn.Module, tensors: dict[str, torch.Tensor], doc: dict[str, Any]) -> None:
        return None

    # -- the result -------------------------------------------------------------
    def export(self, model: nn.Module, dest: Path) -> dict[str, Any]:
        """Writes a standard peft adapter to ``dest``; returns facts for the lineage (rank pattern)."""
        raise NotImplementedError
