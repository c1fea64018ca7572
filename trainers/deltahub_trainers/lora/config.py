from __future__ import annotations

from dataclasses import dataclass

from deltahub.errors import InvalidInputError
from deltahub_trainers.config import TrainConfig, knob


@dataclass
class LoraTrainConfig(TrainConfig):
    r: int = knob(8, "rank of every adapted module")
    lora_alpha: float = knob(16.0, "scaling numerator: the update is scaled by lora_alpha / r (or / sqrt(r) with rslora)")
    use_rslora: bool = knob(False, "rank-stabilised scaling lora_alpha / sqrt(r)")
    use_dora: bool = knob(False, "weight-decomposed LoRA (DoRA)")
    init_lora_weights: bool | str = knob(True, "peft's initialisation: true, false, gaussian, pissa, olora, ...")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.r < 1:
            raise InvalidInputError("config 'r' must be >= 1")
        if not self.lora_alpha > 0:
            raise InvalidInputError("config 'lora_alpha' must be > 0")
