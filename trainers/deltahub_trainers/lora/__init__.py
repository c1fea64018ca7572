from deltahub_trainers.lora.config import LoraTrainConfig
from deltahub_trainers.lora.trainer import LoraTrainer

__all__ = ["LoraTrainConfig", "LoraTrainer"]
