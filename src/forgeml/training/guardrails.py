"""The guardrails: what each AI action does to a running ``AIEnhancedTrainer``, and when it is refused.

``GUARDRAILS`` maps every action class of :mod:`forgeml.specs` to a
:class:`Guardrail`: the trainer setting it changes (at most one change per
setting per round), whether its effect is put on trial (kept only if the next
round confirms it helped), and the handler that applies it within the bounds of
the trainer's :class:`~forgeml.training.AIEnhancedConfig` or raises
:class:`Refused` saying why. A handler returns ``(before, after)`` for the
event log.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..nn.dropout import Dropout
from ..nn.loss import CrossEntropyLoss
from ..optim import lr_scheduler
from ..specs import (
    EarlyStop,
    EnableGradClipping,
    FindLearningRate,
    RestoreBestCheckpoint,
    ScaleLearningRate,
    SetBatchSize,
    SetDropout,
    SetLabelSmoothing,
    SetLRSchedule,
    SetWeightDecay,
    StandardizeInputs,
    SwitchOptimizer,
    SwitchScheduler,
)

__all__ = ["GUARDRAILS", "Guardrail", "Refused", "guardrail_for"]


class Refused(Exception):
    """A recommendation outside the guardrails (the message says which bound it broke)."""


@dataclass(frozen=True)
class Guardrail:
    """How one action class is applied: the setting it changes, whether it goes on trial, and its handler."""

    setting: str
    apply: Callable[[Any, Any], tuple[Any, Any]]
    on_trial: bool = True


def _within(value, bounds) -> bool:
    return bounds[0] <= value <= bounds[1]


def _lr_allowed(trainer, lr: float) -> None:
    low, high = trainer.config.min_learning_rate, trainer.config.max_learning_rate
    if not low <= lr <= high:
        raise Refused(f"the learning rate {lr:.3g} would leave [{low}, {high}]")


def scale_learning_rate(trainer, action: ScaleLearningRate):
    low, high = trainer.config.lr_factor_range
    if not low <= action.factor <= high:
        raise Refused(f"factor {action.factor} is outside the allowed range [{low}, {high}]")
    before = trainer.learning_rate
    _lr_allowed(trainer, before * action.factor)
    trainer.scale_learning_rate(action.factor)
    return before, trainer.learning_rate


def set_weight_decay(trainer, action: SetWeightDecay):
    if not _within(action.value, trainer.config.weight_decay_range):
        raise Refused(f"weight decay {action.value} is outside {trainer.config.weight_decay_range}")
    before = trainer.optimizer.param_groups[0].get("weight_decay")
    if before is None:
        raise Refused(f"{type(trainer.optimizer).__name__} has no weight_decay setting")
    for group in trainer.optimizer.param_groups:
        group["weight_decay"] = action.value
    return before, action.value


def set_dropout(trainer, action: SetDropout):
    if not _within(action.p, trainer.config.dropout_range):
        raise Refused(f"dropout {action.p} is outside {trainer.config.dropout_range}")
    layers = [m for m in trainer.model.modules() if isinstance(m, Dropout)]
    if not layers:
        raise Refused("the model has no Dropout layer")
    before = layers[0].p
    for m in layers:
        m.p = action.p
    if action.p > before:
        trainer.note_loss_changed()  # more units dropped in training raise the train loss: not a divergence
    return before, action.p


def set_batch_size(trainer, action: SetBatchSize):
    if not _within(action.n, trainer.config.batch_size_range):
        raise Refused(f"batch size {action.n} is outside {trainer.config.batch_size_range}")
    if trainer.train_dataset is None:
        raise Refused("the training data is not a dataset this trainer can re-batch")
    before = trainer.batch_size
    ratio = action.n / before
    factor = {"none": 1.0, "linear": ratio, "sqrt": math.sqrt(ratio)}[action.lr_scaling]
    if factor != 1.0:
        _lr_allowed(trainer, trainer.learning_rate * factor)
        trainer.scale_learning_rate(factor)
    trainer.batch_size = action.n
    trainer.rebuild_loader = True
    if factor != 1.0:
        return before, f"{action.n} (learning rate x{factor:.3g}, {action.lr_scaling} scaling)"
    return before, action.n


def enable_grad_clipping(trainer, action: EnableGradClipping):
    if not _within(action.max_norm, trainer.config.grad_clip_range):
        raise Refused(f"max_norm {action.max_norm} is outside {trainer.config.grad_clip_range}")
    before, trainer.max_grad_norm = trainer.max_grad_norm, action.max_norm
    return before, action.max_norm


def set_label_smoothing(trainer, action: SetLabelSmoothing):
    if not _within(action.x, trainer.config.label_smoothing_range):
        raise Refused(f"label smoothing {action.x} is outside {trainer.config.label_smoothing_range}")
    if not isinstance(trainer.loss_fn, CrossEntropyLoss):
        raise Refused(f"label smoothing needs a CrossEntropyLoss, the loss is {type(trainer.loss_fn).__name__}")
    before, trainer.loss_fn.label_smoothing = trainer.loss_fn.label_smoothing, action.x
    trainer.note_loss_changed()  # the loss's scale changes with it: a jump now is not divergence
    return before, action.x


def switch_scheduler(trainer, action: SwitchScheduler):
    cls = getattr(lr_scheduler, action.name, None)
    if cls is None:
        raise Refused(f"unknown scheduler {action.name}")
    for group in trainer.optimizer.param_groups:
        group["initial_lr"] = group["lr"]
    try:
        scheduler = cls(trainer.optimizer, **action.params)
    except (TypeError, ValueError) as exc:
        raise Refused(f"{action.name}({action.params}) cannot be built: {exc}") from None
    before = type(trainer.scheduler).__name__ if trainer.scheduler is not None else None
    trainer.scheduler = scheduler
    trainer.scheduler_interval = "step" if action.name == "OneCycleLR" else "epoch"
    return before, action.name


def set_lr_schedule(trainer, action: SetLRSchedule):
    remaining = trainer.epochs_remaining
    if remaining < 2:
        raise Refused(f"a schedule needs at least 2 epochs left, {remaining} remain")
    steps = trainer.steps_per_epoch
    if steps is None:
        raise Refused("the training loader's length is unknown: a per-step schedule cannot be laid out")
    before = type(trainer.scheduler).__name__ if trainer.scheduler is not None else None
    for group in trainer.optimizer.param_groups:
        group["initial_lr"] = group["lr"]  # the schedule starts from the current rate, not an earlier schedule's
    scheduler = lr_scheduler.LambdaLR(
        trainer.optimizer, schedule_multiplier(action, remaining * steps, round(action.warmup_epochs * steps))
    )
    trainer.scheduler = scheduler
    trainer.scheduler_interval = "step"
    return before, f"{action.kind} over the remaining {remaining} epochs"


def schedule_multiplier(action: SetLRSchedule, total: int, warmup: int) -> Callable[[int], float]:
    """The multiplier of the current learning rate at step ``t`` of ``total``: cosine from 1 to ``min_lr_ratio``
    (after a linear warm-up of ``warmup`` steps), or one-cycle (up to 10x over the first 30%, cosine down to
    ``min_lr_ratio`` x the start)."""
    floor = action.min_lr_ratio
    if action.kind == "one_cycle":
        rise = max(1, round(0.3 * total))

        def one_cycle(t: int) -> float:
            if t < rise:
                return 0.1 + 0.9 * t / rise
            progress = min(1.0, (t - rise) / max(1, total - rise))
            return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))

        return one_cycle
    warmup = warmup if action.kind == "warmup_cosine" else 0

    def cosine(t: int) -> float:
        if t < warmup:
            return (t + 1) / (warmup + 1)
        progress = min(1.0, (t - warmup) / max(1, total - warmup))
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return cosine


def switch_optimizer(trainer, action: SwitchOptimizer):
    wd = action.weight_decay
    if wd is not None and not _within(wd, trainer.config.weight_decay_range):
        raise Refused(f"weight decay {wd} is outside {trainer.config.weight_decay_range}")
    before = type(trainer.optimizer).__name__
    old_wd = trainer.optimizer.param_groups[0].get("weight_decay")
    after = trainer.replace_optimizer(action.name, keep_state=action.keep_state)
    if wd is None:
        return before, after
    before += f" (weight decay {old_wd})"
    for group in trainer.optimizer.param_groups:
        group["weight_decay"] = wd
    return before, f"{after}, weight decay {wd}"


def standardize_inputs(trainer, action: StandardizeInputs):
    return trainer.standardize_inputs(action.mean, action.std)


def find_learning_rate(trainer, action: FindLearningRate):
    return trainer.run_lr_range_test(action.min_lr, action.max_lr, action.steps)


def early_stop(trainer, action: EarlyStop):
    trainer.stop_training = True
    return False, True


def restore_best_checkpoint(trainer, action: RestoreBestCheckpoint):
    if trainer.best_state is None:
        raise Refused("no best checkpoint yet")
    trainer.restore_best()
    where = "the initial weights" if trainer.best_epoch == 0 else f"the weights of epoch {trainer.best_epoch}"
    return f"the weights of epoch {trainer.epoch}", where


GUARDRAILS: dict[type, Guardrail] = {
    ScaleLearningRate: Guardrail("learning_rate", scale_learning_rate),
    FindLearningRate: Guardrail("learning_rate", find_learning_rate),
    SetWeightDecay: Guardrail("weight_decay", set_weight_decay),
    SwitchOptimizer: Guardrail("optimizer", switch_optimizer),
    SetDropout: Guardrail("dropout", set_dropout),
    SetBatchSize: Guardrail("batch_size", set_batch_size),
    EnableGradClipping: Guardrail("grad_clipping", enable_grad_clipping),
    SetLabelSmoothing: Guardrail("label_smoothing", set_label_smoothing),
    SwitchScheduler: Guardrail("scheduler", switch_scheduler),
    SetLRSchedule: Guardrail("scheduler", set_lr_schedule),
    StandardizeInputs: Guardrail("inputs", standardize_inputs),
    EarlyStop: Guardrail("stopping", early_stop, on_trial=False),
    RestoreBestCheckpoint: Guardrail("weights", restore_best_checkpoint, on_trial=False),
}


def guardrail_for(action) -> Guardrail:
    """The guardrail of ``action``'s class (every action class of ``forgeml.specs.Action`` has one)."""
    try:
        return GUARDRAILS[type(action)]
    except KeyError:
        raise Refused(f"no guardrail for the action {type(action).__name__}") from None
