"""Trainer callbacks: hooks into the training loop, early stopping, best-checkpoint saving."""

from __future__ import annotations

import math
from pathlib import Path

__all__ = ["Callback", "EarlyStopping", "LambdaCallback", "ModelCheckpoint"]


class Callback:
    """Override any of these; each receives the :class:`~forgeml.training.Trainer` running the loop."""

    def on_train_begin(self, trainer) -> None:
        pass

    def on_epoch_begin(self, trainer, epoch: int) -> None:
        pass

    def on_batch_end(self, trainer, step: int, loss: float) -> None:
        pass

    def on_epoch_end(self, trainer, metrics) -> None:
        pass

    def on_train_end(self, trainer) -> None:
        pass

    def on_divergence(self, trainer, record: dict) -> None:
        """An epoch diverged under the trainer's ``DivergencePolicy``; ``record`` is the entry just added to
        ``trainer.recoveries`` (epoch, reason, lr_before, lr_after, gave_up)."""


class LambdaCallback(Callback):
    """A callback from plain functions: ``LambdaCallback(on_epoch_end=lambda trainer, metrics: ...)``."""

    def __init__(self, **hooks) -> None:
        known = {"on_train_begin", "on_epoch_begin", "on_batch_end", "on_epoch_end", "on_train_end", "on_divergence"}
        unknown = set(hooks) - known
        if unknown:
            raise TypeError(f"unknown callback hooks {sorted(unknown)}; expected some of {sorted(known)}")
        for name, fn in hooks.items():
            setattr(self, name, fn)


def _better(mode: str, value: float, best: float, min_delta: float) -> bool:
    if mode == "min":
        return value < best - min_delta
    return value > best + min_delta


def _check_mode(mode: str) -> None:
    if mode not in ("min", "max"):
        raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")


def _monitored(metrics, monitor: str) -> float:
    value = metrics.get(monitor)
    if value is None:
        fallback = monitor.replace("val_", "train_")
        value = metrics.get(fallback)
    if value is None:
        raise KeyError(
            f"metric {monitor!r} is not recorded; available: {sorted(k for k, v in metrics.items() if v is not None)}"
        )
    return float(value)


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by ``min_delta`` for ``patience`` epochs.

    ``monitor`` names a metric of the epoch (``val_loss``, ``val_accuracy``,
    ``train_loss`` ...); a ``val_`` metric falls back to its ``train_`` twin
    when there is no validation set.
    """

    def __init__(self, monitor: str = "val_loss", patience: int = 3, min_delta: float = 0.0, mode: str = "min") -> None:
        _check_mode(mode)
        if patience < 0:
            raise ValueError(f"patience must be >= 0, got {patience}")
        self.monitor, self.patience, self.min_delta, self.mode = monitor, patience, min_delta, mode
        self.best = math.inf if mode == "min" else -math.inf
        self.wait = 0
        self.stopped_epoch: int | None = None

    def on_train_begin(self, trainer) -> None:
        self.best = math.inf if self.mode == "min" else -math.inf
        self.wait = 0
        self.stopped_epoch = None

    def on_epoch_end(self, trainer, metrics) -> None:
        value = _monitored(metrics.as_dict(), self.monitor)
        if _better(self.mode, value, self.best, self.min_delta):
            self.best, self.wait = value, 0
            return
        self.wait += 1
        if self.wait > self.patience:
            self.stopped_epoch = metrics.epoch
            trainer.stop_training = True
            trainer.log(
                f"early stopping at epoch {metrics.epoch}: {self.monitor} has not improved for {self.wait} epochs"
            )


class ModelCheckpoint(Callback):
    """Save the model and optimizer state (a safetensors checkpoint) when ``monitor`` improves.

    With ``save_best_only=False`` every epoch is written (to ``path`` with
    ``{epoch}`` filled in, if present). ``best_path`` holds the best file.
    """

    def __init__(self, path, monitor: str = "val_loss", mode: str = "min", save_best_only: bool = True) -> None:
        _check_mode(mode)
        self.path = str(path)
        self.monitor, self.mode, self.save_best_only = monitor, mode, save_best_only
        self.best = math.inf if mode == "min" else -math.inf
        self.best_path: Path | None = None

    def on_epoch_end(self, trainer, metrics) -> None:
        value = _monitored(metrics.as_dict(), self.monitor)
        improved = _better(self.mode, value, self.best, 0.0)
        if improved:
            self.best = value
        if improved or not self.save_best_only:
            target = Path(self.path.format(epoch=metrics.epoch))
            trainer.save_checkpoint(target)
            if improved:
                self.best_path = target
