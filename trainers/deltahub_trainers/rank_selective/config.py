from __future__ import annotations

from dataclasses import dataclass

from deltahub.errors import InvalidInputError
from deltahub_trainers.config import TrainConfig, knob


@dataclass
class RankSelectiveTrainConfig(TrainConfig):
    r: int = knob(16, "ranks every module starts with; the L1 penalty on the gates switches off the ones the data does not need")
    l1: float = knob(0.5, "final weight of the L1 penalty on the rank gates (the sparsity threshold)")
    dense_ratio: float = knob(0.3, "share of the steps trained dense (no penalty) before the threshold starts rising")
    gate_lr: float = knob(0.05, "step size of the gates' proximal gradient steps, at the peak of the schedule")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.r < 1:
            raise InvalidInputError("config 'r' must be >= 1")
        if self.l1 < 0 or not 0 <= self.dense_ratio < 1 or not self.gate_lr > 0:
            raise InvalidInputError("config 'l1' must be >= 0, 'dense_ratio' in [0, 1) and 'gate_lr' > 0")
