"""Training loops: ``Trainer`` with callbacks, metrics and checkpoints (``AIEnhancedTrainer`` comes later)."""

from .callbacks import Callback, EarlyStopping, LambdaCallback, ModelCheckpoint
from .trainer import EpochMetrics, Trainer, TrainingDivergedError

__all__ = [
    "Callback",
    "EarlyStopping",
    "EpochMetrics",
    "LambdaCallback",
    "ModelCheckpoint",
    "Trainer",
    "TrainingDivergedError",
]
