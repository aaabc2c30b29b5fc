"""Training loops: ``Trainer`` with callbacks, metrics and checkpoints, and ``AIEnhancedTrainer``.

``AIEnhancedTrainer`` and its config need the ``ai`` extra (pydantic); they are
imported on first use, so the plain ``Trainer`` needs NumPy alone.
"""

from .callbacks import Callback, EarlyStopping, LambdaCallback, ModelCheckpoint
from .trainer import EpochMetrics, Trainer, TrainingDivergedError

_AI_NAMES = ("AIEnhancedConfig", "AIEnhancedTrainer", "AIEvent", "EnhancedTrainingMetrics", "SyntheticDataStats")

__all__ = [
    "AIEnhancedConfig",
    "AIEnhancedTrainer",
    "AIEvent",
    "Callback",
    "EarlyStopping",
    "EnhancedTrainingMetrics",
    "EpochMetrics",
    "LambdaCallback",
    "ModelCheckpoint",
    "SyntheticDataStats",
    "Trainer",
    "TrainingDivergedError",
]


def __getattr__(name: str):
    if name in _AI_NAMES:
        from . import ai_trainer

        return getattr(ai_trainer, name)
    raise AttributeError(f"module 'forgeml.training' has no attribute {name!r}")
