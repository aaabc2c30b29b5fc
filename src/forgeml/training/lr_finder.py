"""The learning-rate range test (Smith 2017, "Cyclical Learning Rates for Training Neural Networks",
arXiv:1506.01186): train a few mini-batches while the learning rate rises geometrically, watch the loss,
and put everything back.

``find_learning_rate(trainer, loader)`` (or ``trainer.find_lr(loader)``) returns an :class:`LRRangeTest`
whose ``suggested_lr`` is a tenth of the rate where the smoothed loss was lowest.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import numpy as np

from .trainer import device_scope

__all__ = ["LRRangeTest", "find_learning_rate"]


@dataclass
class LRRangeTest:
    """What a learning-rate range test measured.

    ``lrs[i]`` is the rate of step ``i`` (the first param group's) and ``losses[i]`` the exponentially
    smoothed, bias-corrected training loss after it. ``suggested_lr`` is the rate at the smoothed loss's
    minimum divided by 10 (clamped to the tested range), ``min_loss_lr`` that minimum's rate,
    ``steepest_lr`` the rate where the smoothed loss fell fastest against log(lr) (before its minimum;
    None with fewer than 3 points), ``stopped_early`` whether the loss diverged before the last step.
    """

    lrs: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    suggested_lr: float | None = None
    steepest_lr: float | None = None
    min_loss_lr: float | None = None
    stopped_early: bool = False


def _check(name: str, value, *, positive: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if positive and value <= 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return float(value)


def _batches(loader):
    """The loader's batches, starting over when it runs out (a ValueError when it yields none)."""
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise ValueError("find_learning_rate: the training loader produced no batches")


def find_learning_rate(
    trainer,
    train_loader,
    *,
    min_lr: float = 1e-6,
    max_lr: float = 1.0,
    steps: int = 100,
    smoothing: float = 0.05,
    diverge_factor: float = 4.0,
) -> LRRangeTest:
    """Run a learning-rate range test with ``trainer``'s model, optimizer and loss on ``train_loader``.

    Trains ``steps`` mini-batches (cycling the loader when it is shorter) with the learning rate rising
    geometrically from ``min_lr`` to ``max_lr`` (param groups keep their ratios to the first group),
    records the loss smoothed as ``s = (1 - smoothing) * s + smoothing * loss`` (bias-corrected), and
    stops early when the smoothed loss exceeds ``diverge_factor`` times its minimum or a loss is not
    finite. Afterwards the model's weights and buffers, the optimizer (state and learning rates), the
    gradient scaler, the train/eval mode and every random generator are exactly as they were, so the
    test changes nothing about the training that follows.
    """
    min_lr = _check("min_lr", min_lr)
    max_lr = _check("max_lr", max_lr)
    if max_lr <= min_lr:
        raise ValueError(f"max_lr must be greater than min_lr, got min_lr={min_lr}, max_lr={max_lr}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 2:
        raise ValueError(f"steps must be an int >= 2, got {steps!r}")
    smoothing = _check("smoothing", smoothing)
    if smoothing > 1:
        raise ValueError(f"smoothing must be in (0, 1], got {smoothing}")
    diverge_factor = _check("diverge_factor", diverge_factor)
    if diverge_factor <= 1:
        raise ValueError(f"diverge_factor must be > 1, got {diverge_factor}")

    model, optimizer = trainer.model, trainer.optimizer
    saved = trainer._state_copy()
    scaler = trainer.scaler
    saved_scaler = copy.deepcopy(scaler.state_dict()) if scaler is not None else None
    was_training = model.training
    pending_loader_rng = trainer._pending_loader_rng
    saved_rng = trainer._rng_state()
    loader_generators = trainer._loader_generators(train_loader)
    saved_loader_rng = [g.get_state() for g in loader_generators]

    groups = optimizer.param_groups
    reference = float(groups[0]["lr"])
    ratios = [float(g["lr"]) / reference if reference > 0 else 1.0 for g in groups]
    result = LRRangeTest()
    beta = 1.0 - smoothing
    average, best = 0.0, math.inf
    try:
        model.train()
        with device_scope(trainer.device):
            batches = _batches(train_loader)
            for i in range(steps):
                lr = min_lr * (max_lr / min_lr) ** (i / (steps - 1))
                for group, ratio in zip(groups, ratios):
                    group["lr"] = lr * ratio
                x, y = trainer._prepare(next(batches))
                optimizer.zero_grad()
                with trainer._precision():
                    loss = trainer.loss_fn(trainer._train_forward(x), y)
                value = float(loss.item())
                if not math.isfinite(value):
                    result.stopped_early = i < steps - 1
                    break
                trainer._backward(loss)
                trainer._clip_and_step()
                average = beta * average + smoothing * value
                smoothed = average / (1.0 - beta ** (i + 1)) if beta > 0 else average
                result.lrs.append(lr)
                result.losses.append(smoothed)
                best = min(best, smoothed)
                if smoothed > diverge_factor * best:
                    result.stopped_early = i < steps - 1
                    break
    finally:
        optimizer.zero_grad()
        trainer._load_state_copy(saved)
        if scaler is not None:
            scaler.load_state_dict(saved_scaler)
        model.train(was_training)
        trainer._load_rng_state(saved_rng)
        trainer._pending_loader_rng = pending_loader_rng  # _load_rng_state queues the loader states: undo that
        for generator, state in zip(loader_generators, saved_loader_rng):
            generator.set_state(state)

    if result.losses:
        losses = np.asarray(result.losses)
        lowest = int(np.argmin(losses))
        result.min_loss_lr = result.lrs[lowest]
        result.suggested_lr = min(max(result.min_loss_lr / 10.0, min_lr), max_lr)
        if len(losses) >= 3:
            slopes = np.gradient(losses, np.log(np.asarray(result.lrs)))
            result.steepest_lr = result.lrs[int(np.argmin(slopes[: lowest + 1]))]
    return result
