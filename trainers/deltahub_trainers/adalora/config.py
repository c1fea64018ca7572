from __future__ import annotations

from dataclasses import dataclass

from deltahub.errors import InvalidInputError
from deltahub_trainers.config import TrainConfig, knob


@dataclass
class AdaLoraTrainConfig(TrainConfig):
    init_r: int = knob(12, "rank every module starts with (the budget shrinks from init_r to target_r per module)")
    target_r: int = knob(8, "average final rank: the final budget is target_r x the number of modules")
    lora_alpha: float = knob(32.0, "scaling numerator (AdaLoRA divides by the rank count)")
    tinit: int = knob(-1, "steps before pruning starts; -1 = 10% of the steps")
    tfinal: int = knob(-1, "steps at the end with the rank pattern fixed; -1 = 20% of the steps")
    delta_t: int = knob(-1, "steps between two budget allocations; -1 = 5% of the steps (at least 1)")
    beta1: float = knob(0.85, "EMA of the sensitivity")
    beta2: float = knob(0.85, "EMA of the uncertainty")
    orth_reg_weight: float = knob(0.5, "weight of the orthogonality penalty on P and Q")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.target_r < 1:
            raise InvalidInputError("config 'target_r' must be >= 1")
        if self.init_r <= self.target_r:
            raise InvalidInputError(
                f"config 'init_r' ({self.init_r}) must exceed 'target_r' ({self.target_r}): AdaLoRA prunes from "
                "init_r down to the target budget")
        if not (0 < self.beta1 < 1 and 0 < self.beta2 < 1):
            raise InvalidInputError("config 'beta1' and 'beta2' must be in (0, 1)")

    def phases(self, total: int) -> tuple[int, int, int]:
        """(tinit, tfinal, deltaT) for ``total`` steps, checked to leave a budgeting phase."""
        tinit = self.tinit if self.tinit >= 0 else max(1, total // 10)
        tfinal = self.tfinal if self.tfinal > 0 else max(1, total // 5)
        delta_t = self.delta_t if self.delta_t > 0 else max(1, total // 20)
        if tinit + tfinal >= total:
            raise InvalidInputError(
                f"AdaLoRA needs tinit + tfinal < steps to have a budgeting phase; got tinit={tinit}, "
                f"tfinal={tfinal}, steps={total}")
        return tinit, tfinal, delta_t
