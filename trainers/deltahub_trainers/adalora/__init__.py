from deltahub_trainers.adalora.config import AdaLoraTrainConfig
from deltahub_trainers.adalora.trainer import AdaLoraTrainer

__all__ = ["AdaLoraTrainConfig", "AdaLoraTrainer"]
