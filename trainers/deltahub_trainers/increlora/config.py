from __future__ import annotations

from dataclasses import dataclass

from deltahub.errors import InvalidInputError
from deltahub_trainers.config import TrainConfig, knob


@dataclass
class IncreLoraTrainConfig(TrainConfig):
    init_r: int = knob(2, "rank every module starts with")
    target_r: int = knob(8, "average final rank: the budget is target_r x the number of modules")
    max_r: int = knob(-1, "most rank one module may reach; -1 = 2 x target_r")
    incre_rank: int = knob(-1, "rank added to a chosen module per allocation; -1 = target_r / 2 (official table)")
    top_h: int = knob(-1, "modules that grow per allocation; -1 = a quarter of the modules")
    init_warmup: int = knob(-1, "steps before the first allocation; -1 = 10% of the steps")
    interval: int = knob(-1, "steps between allocations; -1 = reach the budget by 70% of the steps")
    component_warmup: int = knob(-1, "steps over which a new rank's learning rate ramps up; -1 = interval")
    lora_alpha: float = knob(16.0, "scaling numerator, divided by the module's current rank")
    beta1: float = knob(0.85, "EMA of the sensitivity")
    beta2: float = knob(0.85, "EMA of the uncertainty")
    orth_reg_weight: float = knob(0.1, "weight of the orthogonality penalty on the active P and Q")
    advance_learning: bool = knob(True, "train the reserve ranks before they are activated")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.init_r < 1 or self.target_r <= self.init_r:
            raise InvalidInputError(
                f"config needs 1 <= init_r < target_r (IncreLoRA grows from init_r); got init_r={self.init_r}, "
                f"target_r={self.target_r}")
        if self.max_r != -1 and self.max_r < self.target_r:
            raise InvalidInputError(f"config 'max_r' ({self.max_r}) must be >= target_r ({self.target_r})")
        if not (0 < self.beta1 < 1 and 0 < self.beta2 < 1):
            raise InvalidInputError("config 'beta1' and 'beta2' must be in (0, 1)")

    @property
    def cap(self) -> int:
        return self.max_r if self.max_r > 0 else 2 * self.target_r

    @property
    def step_rank(self) -> int:
        return self.incre_rank if self.incre_rank > 0 else max(1, self.target_r // 2)
