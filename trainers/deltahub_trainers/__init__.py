"""Trainers that produce adapters on GPU workers (LoRA, AdaLoRA, IncreLoRA,
rank-selective). Each is registered in :data:`TRAINERS` here, explicitly."""

from deltahub.registry import Registry
from deltahub_trainers.adalora import AdaLoraTrainer
from deltahub_trainers.base import Trainer
from deltahub_trainers.increlora import IncreLoraTrainer
from deltahub_trainers.lora import LoraTrainer
from deltahub_trainers.rank_selective import RankSelectiveTrainer

TRAINERS: Registry[type[Trainer]] = Registry("trainer")
for _cls in (LoraTrainer, AdaLoraTrainer, IncreLoraTrainer, RankSelectiveTrainer):
    TRAINERS.register(_cls.name, _cls)


def make_trainer(name: str, config: dict | None = None) -> Trainer:
    """The named trainer with its config checked (unknown names and bad values raise InvalidInputError)."""
    cls = TRAINERS.get(name)
    return cls(cls.config_cls.from_dict(config))
