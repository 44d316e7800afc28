"""Training: one Trainer for every objective, run folders (save / load), and the CLI's named recipes."""
from encoderkit.train.trainer import (
    Trainer,
    TrainConfig,
    TrainingDiverged,
    freeze_by_prefix,
    freeze_layers,
    seed_everything,
)

__all__ = ["Trainer", "TrainConfig", "TrainingDiverged", "freeze_layers", "freeze_by_prefix", "seed_everything"]
