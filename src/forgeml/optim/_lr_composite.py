"""More schedulers of ``torch.optim.lr_scheduler``: ``PolynomialLR``, ``CosineAnnealingWarmRestarts`` and the
schedulers that combine others (``SequentialLR``, ``ChainedScheduler``).

They are re-exported by :mod:`forgeml.optim.lr_scheduler`, where users find them.
"""

from __future__ import annotations

import math
from bisect import bisect_right

from .lr_scheduler import LRScheduler, ReduceLROnPlateau, _group_values, _set_group_value
from .optimizer import Optimizer

__all__ = ["ChainedScheduler", "CosineAnnealingWarmRestarts", "PolynomialLR", "SequentialLR"]


def _write_lrs(scheduler, values) -> None:
    groups = scheduler.optimizer.param_groups
    if len(values) != len(groups):
        raise ValueError(f"{type(scheduler).__name__} computed {len(values)} learning rates for {len(groups)} groups")
    for group, lr in zip(groups, values):
        _set_group_value(group, "lr", lr)
    scheduler._last_lr = _group_values(scheduler.optimizer, "lr")


def _update_lr(scheduler, epoch: int) -> None:
    """Set ``scheduler`` to ``epoch`` and write its closed-form lr (its recursive one when it has none)."""
    scheduler._get_lr_called_within_step = True
    try:
        scheduler.last_epoch = epoch
        closed_form = getattr(scheduler, "_get_closed_form_lr", None)
        values = closed_form() if closed_form is not None else scheduler.get_lr()
    finally:
        scheduler._get_lr_called_within_step = False
    _write_lrs(scheduler, values)


class PolynomialLR(LRScheduler):
    """Decay the lr polynomially to zero over ``total_iters`` steps: ``lr = initial_lr·(1 - t/total_iters)^power``.

    After ``total_iters`` steps the lr stays at zero.
    """

    def __init__(self, optimizer: Optimizer, total_iters: int = 5, power: float = 1.0, last_epoch: int = -1) -> None:
        if total_iters <= 0:
            raise ValueError(f"total_iters should be a positive number of steps, got {total_iters!r}")
        self.total_iters = total_iters
        self.power = power
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list:
        self._warn_if_outside_step()
        if self._is_initial or self.last_epoch > self.total_iters:
            return _group_values(self.optimizer, "lr")
        factor = (
            (1.0 - self.last_epoch / self.total_iters) / (1.0 - (self.last_epoch - 1) / self.total_iters)
        ) ** self.power
        return [group["lr"] * factor for group in self.optimizer.param_groups]

    def _get_closed_form_lr(self) -> list:
        return [
            base_lr * (1.0 - min(self.total_iters, self.last_epoch) / self.total_iters) ** self.power
            for base_lr in self.base_lrs
        ]


class CosineAnnealingWarmRestarts(LRScheduler):
    """Cosine annealing from the initial lr to ``eta_min`` over ``T_i`` epochs, then a restart (SGDR).

    The first period is ``T_0`` epochs and each one after is ``T_mult`` times
    longer. ``step(epoch)`` accepts a fractional epoch (``epoch + i / iters``)
    to anneal within an epoch.
    """

    def __init__(
        self, optimizer: Optimizer, T_0: int, T_mult: int = 1, eta_min: float = 0.0, last_epoch: int = -1
    ) -> None:
        if not isinstance(T_0, int) or T_0 <= 0:
            raise ValueError(f"Expected positive integer T_0, but got {T_0}")
        if not isinstance(T_mult, int) or T_mult < 1:
            raise ValueError(f"Expected integer T_mult >= 1, but got {T_mult}")
        if not isinstance(eta_min, (float, int)):
            raise ValueError(f"Expected float or int eta_min, but got {eta_min} of type {type(eta_min)}")
        self.T_0 = T_0
        self.T_i = T_0
        self.T_mult = T_mult
        self.eta_min = eta_min
        self.T_cur = last_epoch
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list:
        self._warn_if_outside_step()
        return [
            self.eta_min + (base_lr - self.eta_min) * (1 + math.cos(math.pi * self.T_cur / self.T_i)) / 2
            for base_lr in self.base_lrs
        ]

    def step(self, epoch=None) -> None:
        """Advance one epoch, or jump to ``epoch`` (a float is allowed: fractions of an epoch anneal within it)."""
        if epoch is None and self.last_epoch < 0:
            epoch = 0
        if epoch is None:
            epoch = self.last_epoch + 1
            self.T_cur = self.T_cur + 1
            if self.T_cur >= self.T_i:
                self.T_cur = self.T_cur % self.T_i
                self.T_i = self.T_i * self.T_mult
        else:
            if epoch < 0:
                raise ValueError(f"Expected non-negative epoch, but got {epoch}")
            if epoch >= self.T_0:
                if self.T_mult == 1:
                    self.T_cur = epoch % self.T_0
                else:
                    n = int(math.log(epoch / self.T_0 * (self.T_mult - 1) + 1, self.T_mult))
                    self.T_cur = epoch - self.T_0 * (self.T_mult**n - 1) / (self.T_mult - 1)
                    self.T_i = self.T_0 * self.T_mult**n
            else:
                self.T_i = self.T_0
                self.T_cur = epoch
        self.last_epoch = math.floor(epoch)
        self._get_lr_called_within_step = True
        try:
            values = self.get_lr()
        finally:
            self._get_lr_called_within_step = False
        _write_lrs(self, values)


def _check_children(owner: str, optimizer, schedulers) -> None:
    if len(schedulers) < 1:
        raise ValueError(f"{owner} expects at least one scheduler, but got no scheduler.")
    for i, scheduler in enumerate(schedulers):
        if not hasattr(scheduler, "optimizer"):
            raise TypeError(f"{owner} at index {i} should have `optimizer` as its attribute.")
        if isinstance(scheduler, ReduceLROnPlateau):
            raise ValueError(
                f"{owner} does not support `ReduceLROnPlateau` scheduler as it requires additional kwargs to be "
                f"specified when calling `step`, but got one at index {i} in the given schedulers sequence."
            )
        if scheduler.optimizer is not optimizer:
            raise ValueError(
                f"{owner} expects all schedulers to belong to the same optimizer, but got scheduler "
                f"{type(scheduler).__name__} at index {i} with a different optimizer "
                f"(expected the {type(optimizer).__name__} given)."
            )


class _Composite(LRScheduler):
    """A scheduler made of others: its state_dict holds theirs under ``_schedulers``."""

    def state_dict(self) -> dict:
        """The scheduler's attributes, with each child scheduler's state_dict in ``_schedulers``."""
        state = {k: v for k, v in self.__dict__.items() if k not in ("optimizer", "_schedulers")}
        state["_schedulers"] = [s.state_dict() for s in self._schedulers]
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore the attributes and each child's state (the dict passed in is left unchanged)."""
        state_dict = dict(state_dict)
        children = state_dict.pop("_schedulers")
        self.__dict__.update(state_dict)
        for scheduler, state in zip(self._schedulers, children):
            scheduler.load_state_dict(state)


class SequentialLR(_Composite):
    """Run ``schedulers`` one after the other: ``schedulers[i]`` takes over at epoch ``milestones[i-1]``.

    Each scheduler starts from its epoch 0 (its closed form) when it takes over.
    """

    def __init__(self, optimizer: Optimizer, schedulers, milestones, last_epoch: int = -1) -> None:
        schedulers = list(schedulers)
        _check_children(type(self).__name__, optimizer, schedulers)
        milestones = list(milestones)
        if len(milestones) != len(schedulers) - 1:
            raise ValueError(
                "Sequential Schedulers expects number of schedulers provided to be one more than the number of "
                f"milestone points, but got number of schedulers {len(schedulers)} and the number of milestones "
                f"to be equal to {len(milestones)}"
            )
        self._schedulers = schedulers
        self._milestones = milestones
        self.last_epoch = last_epoch + 1
        self.optimizer = optimizer
        for i, group in enumerate(optimizer.param_groups):
            if "initial_lr" not in group:
                raise KeyError(f"param 'initial_lr' is not specified in param_groups[{i}]")
            _set_group_value(group, "lr", group["initial_lr"])
        self._recursive_undo()
        idx = bisect_right(self._milestones, 0)
        self._schedulers[idx]._initial_step()
        self._last_lr = self._schedulers[idx].get_last_lr()

    def _recursive_undo(self, sched=None) -> None:
        """Undo the initial step every (nested) child took when it was built."""
        scheds = self if sched is None else sched
        if hasattr(scheds, "_schedulers"):
            for s in scheds._schedulers:
                self._recursive_undo(s)
        elif hasattr(scheds, "last_epoch"):
            scheds.last_epoch -= 1

    recursive_undo = _recursive_undo

    def step(self) -> None:
        """Advance one epoch: step the scheduler in charge (restarted at its epoch 0 on a milestone)."""
        self.last_epoch += 1
        idx = bisect_right(self._milestones, self.last_epoch)
        scheduler = self._schedulers[idx]
        if idx > 0 and self._milestones[idx - 1] == self.last_epoch:
            _update_lr(scheduler, 0)
        else:
            scheduler.step()
        self._last_lr = scheduler.get_last_lr()


class ChainedScheduler(_Composite):
    """Step every scheduler in ``schedulers`` at each ``step()``, so their effects on the lr compose."""

    def __init__(self, schedulers, optimizer: Optimizer | None = None) -> None:
        schedulers = list(schedulers)
        if len(schedulers) < 1:
            raise ValueError(f"{type(self).__name__} expects at least one scheduler to be chained, but got none.")
        optimizer = optimizer or schedulers[0].optimizer
        _check_children(type(self).__name__, optimizer, schedulers)
        self._schedulers = schedulers
        self.optimizer = optimizer
        self._last_lr = _group_values(self._schedulers[-1].optimizer, "lr")

    def step(self) -> None:
        """Step every chained scheduler, in order."""
        for scheduler in self._schedulers:
            scheduler.step()
        self._last_lr = _group_values(self._schedulers[-1].optimizer, "lr")
