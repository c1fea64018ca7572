from deltahub_trainers.increlora.config import IncreLoraTrainConfig
from deltahub_trainers.increlora.trainer import IncreLoraTrainer

__all__ = ["IncreLoraTrainConfig", "IncreLoraTrainer"]
