"""Training loops: ``Trainer`` with callbacks, metrics and checkpoints, and ``AIEnhancedTrainer``.

``AIEnhancedTrainer`` and its config need the ``ai`` extra (pydantic); they are
imported on first use, so the plain ``Trainer`` needs NumPy alone.
"""

from .callbacks import Callback, EarlyStopping, LambdaCallback, ModelCheckpoint
from .lr_finder import LRRangeTest, find_learning_rate
from .trainer import DivergencePolicy, EpochMetrics, Trainer, TrainingDivergedError

_AI_NAMES = ("AIEnhancedConfig", "AIEnhancedTrainer", "AIEvent", "EnhancedTrainingMetrics", "SyntheticDataStats")
_TUNE_NAMES = {
    "SearchSpace": "tuning",
    "TuneResult": "tuning",
    "tune": "tuning",
    "search_architectures": "architecture_search",
}

__all__ = [
    "AIEnhancedConfig",
    "AIEnhancedTrainer",
    "AIEvent",
    "Callback",
    "DivergencePolicy",
    "EarlyStopping",
    "EnhancedTrainingMetrics",
    "EpochMetrics",
    "LRRangeTest",
    "LambdaCallback",
    "ModelCheckpoint",
    "SearchSpace",
    "SyntheticDataStats",
    "Trainer",
    "TrainingDivergedError",
    "TuneResult",
    "find_learning_rate",
    "search_architectures",
    "tune",
]


def __getattr__(name: str):
    if name in _AI_NAMES:
        from . import ai_trainer

        return getattr(ai_trainer, name)
    if name in _TUNE_NAMES:  # Optuna (the tune extra) is imported when a search runs, not here
        import importlib

        return getattr(importlib.import_module(f".{_TUNE_NAMES[name]}", __name__), name)
    raise AttributeError(f"module 'forgeml.training' has no attribute {name!r}")
