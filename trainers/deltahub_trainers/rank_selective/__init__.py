from deltahub_trainers.rank_selective.config import RankSelectiveTrainConfig
from deltahub_trainers.rank_selective.trainer import RankSelectiveTrainer

__all__ = ["RankSelectiveTrainConfig", "RankSelectiveTrainer"]
