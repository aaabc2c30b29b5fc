"""One hypothesis at a time: the changes of a round go on trial from a saved state and are kept or reverted.

:class:`TrialsMixin` is the part of ``AIEnhancedTrainer`` that opens a trial
before a round's first change (saving the weights, the optimizer object and
its state, the schedule, the settings and the training data), closes it after
``trial_epochs`` epochs with :func:`~forgeml.training.trials.judge_trial`, and on
a negative verdict (or a divergence during the trial) rolls the run back to
the saved state. ``lineage()`` is the history without the reverted epochs.
"""

from __future__ import annotations

import math

from ..nn.dropout import Dropout
from .trials import judge_trial

__all__ = ["TrialsMixin"]


class TrialsMixin:
    """Keep-or-revert for ``AIEnhancedTrainer`` (it supplies the state this reads and writes)."""

    def lineage(self) -> list:
        """The epochs that led to the current weights: ``history`` without the epochs of reverted trials."""
        return [m for m in self.history if m.epoch not in self._reverted_epochs]

    def _trial_length(self) -> int:
        return self.config.trial_epochs or self.config.optimization_guidance_frequency

    def _open_trial(self) -> None:
        """Save everything a change may touch, so the run can be rolled back to this boundary."""
        self._trial = {
            "epoch": self.epoch,
            "records": [],
            "state": self._capture(),
        }

    def _close_trial(self, final: bool = False) -> None:
        trial = self._trial
        records = trial["records"]
        start = trial["epoch"]
        lineage = self.lineage()  # a trial reverted earlier is no part of what this one is compared with
        before = [m.as_dict() for m in lineage if m.epoch <= start]
        from_start = not before
        if from_start and self._initial_eval is not None:
            before = [self._initial_eval]
        during = [m.as_dict() for m in lineage if m.epoch > start]
        # the validation loss keeps its meaning unless the loss function changed (label smoothing)
        comparable = getattr(self.loss_fn, "label_smoothing", None) == trial["state"]["label_smoothing"]
        verdict = judge_trial(before, during, loss_comparable=comparable, from_start=from_start)
        if verdict is None and self.stop_training:
            self._revert_trial("the run stopped before an epoch was trained with the change")
            return
        if verdict is None:
            self._trial = None
            for r in records:
                r.verdict, r.reason = "kept", "nothing to judge it on (no epochs after it): kept"
            return
        for r in records:  # before/after in the figure the verdict was judged on (accuracy, say)
            r.metric, r.before = verdict.metric, verdict.before
        at_end = final or (self.epochs_planned is not None and self.epoch >= self.epochs_planned)
        if verdict.helped or (at_end and not verdict.clearly_worse(self._validation_samples())):
            # At the end of the run a roll-back has no epochs left to try the old settings again: it would only
            # throw the trial's epochs away. The changes stay unless they made the run clearly worse than before
            # them (by more than the validation measurement's noise).
            reason = verdict.reason
            if not verdict.helped:
                where = "better than" if verdict.improved else "within the validation noise of"
                reason = reason.replace(": no improvement, reverted", "") + (
                    f": below the trend but {where} the best before the change, and no epochs are left to run "
                    "without it: kept"
                )
            self._trial = None
            for r in records:
                r.verdict, r.after, r.reason = "kept", verdict.after, reason
            self._event("trial", "verdict", "trainer", reason=reason, action=_actions(records))
            return
        self._revert_trial(verdict.reason + (" (at the end of the run)" if at_end else ""), after=verdict.after)

    def _validation_samples(self) -> int | None:
        """How many examples the validation figures are measured on (None when unknown)."""
        loader = self._val_loader
        try:
            return len(loader.dataset) if loader is not None else None
        except (TypeError, AttributeError):
            return None

    def _revert_trial(self, reason: str, after: float | None = None) -> None:
        trial, self._trial = self._trial, None
        self._reverted_epochs.update(m.epoch for m in self.history if m.epoch > trial["epoch"])
        self._restore(trial["state"])
        records = trial["records"]
        for r in records:
            r.verdict, r.after, r.reason = "reverted", after, reason
        self._event(
            "trial",
            "verdict",
            "trainer",
            reason=f"{reason}; rolled back to the state of epoch {trial['epoch']}",
            action=_actions(records),
        )

    def _capture(self) -> dict:
        """The run's state at a boundary: weights, optimizer (object and state), schedule, settings, data."""
        return {
            "copy": self._state_copy(),  # the weights and the optimizer's state
            "optimizer": self.optimizer,
            "scheduler": self.scheduler,
            "scheduler_state": self._scheduler_state(),
            "scheduler_interval": self.scheduler_interval,
            "batch_size": self.batch_size,
            "max_grad_norm": self.max_grad_norm,
            "label_smoothing": getattr(self.loss_fn, "label_smoothing", None),
            "loss_changed_at": list(self.loss_changed_at),
            "dropout": [m.p for m in self.model.modules() if isinstance(m, Dropout)],
            "standardizer": self._standardizer,
            "standardized": self._standardizer is not None and self._standardizer.active,
            "train_dataset": self._train_dataset,
        }

    def _restore(self, state: dict) -> None:
        self.optimizer = state["optimizer"]  # the object too: a switch of optimizer is undone
        self._load_state_copy(state["copy"])
        self.scheduler = state["scheduler"]
        if self.scheduler is not None and state["scheduler_state"] is not None:
            self.scheduler.load_state_dict(state["scheduler_state"])
        self.scheduler_interval = state["scheduler_interval"]
        if self.batch_size != state["batch_size"] or self._train_dataset is not state["train_dataset"]:
            self.rebuild_loader = True
        self.batch_size = state["batch_size"]
        self._train_dataset = state["train_dataset"]
        self.max_grad_norm = state["max_grad_norm"]
        if state["label_smoothing"] is not None:
            self.loss_fn.label_smoothing = state["label_smoothing"]
        self.loss_changed_at[:] = state["loss_changed_at"]
        for m, p in zip((m for m in self.model.modules() if isinstance(m, Dropout)), state["dropout"]):
            m.p = p
        if self._standardizer is not state["standardizer"] or (
            self._standardizer is not None and self._standardizer.active != state["standardized"]
        ):
            self._standardizer = state["standardizer"]
            if self._standardizer is not None:
                self._standardizer.active = state["standardized"]
            self._inputs = None
            self._sync_best_coordinates()
        self._snapshot()

    def _best_so_far(self) -> float | None:
        values = [m.val_loss if m.val_loss is not None else m.train_loss for m in self.lineage()]
        values = [v for v in values if v is not None and math.isfinite(v)]
        if not values and self._initial_eval is not None:
            return self._initial_eval.get("val_loss")
        return min(values) if values else None


def _actions(records) -> dict:
    return {"action": "trial", "changes": [r.action for r in records]}
