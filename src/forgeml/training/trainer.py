"""``Trainer``: the supervised training loop, with metrics, callbacks, checkpoints and a progress bar."""

from __future__ import annotations

import copy
import math
import sys
import time
from dataclasses import asdict, dataclass

from ..autograd.grad_mode import no_grad
from ..io.checkpoint import load, save
from ..nn.loss import CrossEntropyLoss
from ..nn.masked import MaskedBatch
from ..nn.utils import clip_grad_norm_
from ..optim.lr_scheduler import ReduceLROnPlateau
from ..tensor import Tensor
from .callbacks import Callback

__all__ = ["EpochMetrics", "Trainer", "TrainingDivergedError"]


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or infinite; the model was restored to its last good state."""

    def __init__(self, message: str, epoch: int, step: int) -> None:
        super().__init__(message)
        self.epoch, self.step = epoch, step


@dataclass
class EpochMetrics:
    """What one epoch measured; ``Trainer.history`` is a list of these."""

    epoch: int
    train_loss: float
    train_accuracy: float | None
    val_loss: float | None
    val_accuracy: float | None
    learning_rate: float
    epoch_time: float
    samples_per_second: float
    grad_norm: float | None

    def as_dict(self) -> dict:
        return asdict(self)

    def get(self, name: str, default=None):
        return getattr(self, name, default)


def _split_batch(batch):
    if isinstance(batch, (tuple, list)) and len(batch) == 2:
        return batch
    if isinstance(batch, (tuple, list)) and len(batch) == 3:  # (ids, padding_mask, labels) from a text loader
        ids, mask, targets = batch
        return MaskedBatch(ids, mask), targets
    if isinstance(batch, dict) and {"input", "target"} <= set(batch):
        return batch["input"], batch["target"]
    raise TypeError(
        f"each batch must be an (inputs, targets) pair or a dict with 'input' and 'target'; got {type(batch).__name__}"
    )


def _batch_size(x) -> int:
    if isinstance(x, MaskedBatch):
        x = x.data
    if isinstance(x, Tensor):
        return x.shape[0] if x.ndim else 1
    if isinstance(x, (tuple, list)) and x:
        return _batch_size(x[0])
    return len(x)


def _correct(output: Tensor, target) -> int | None:
    """Correct predictions for classification outputs ([N, C] scores and integer targets), else None."""
    t = target.data if isinstance(target, Tensor) else None
    if t is None or t.dtype.kind not in "iu" or output.ndim != 2 or t.shape != output.shape[:1]:
        return None
    return int((output.data.argmax(axis=1) == t).sum())


class _Progress:
    """A tqdm bar when tqdm is installed (and asked for), else nothing."""

    def __init__(self, enabled: bool, total, desc: str) -> None:
        self.bar = None
        if enabled:
            try:
                from tqdm.auto import tqdm
            except ImportError:
                tqdm = None
            if tqdm is not None:
                self.bar = tqdm(total=total, desc=desc, leave=False, file=sys.stderr, dynamic_ncols=True)

    def update(self, loss: float, samples_per_second: float) -> None:
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{loss:.4f}", samples_s=f"{samples_per_second:,.0f}", refresh=False)
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.refresh()  # show the epoch's final loss and throughput before the bar goes
            self.bar.close()


class Trainer:
    """Train ``model`` with ``optimizer`` on ``loss_fn(output, target)`` (cross-entropy by default).

    ``fit`` returns ``history``, one :class:`EpochMetrics` per epoch. A
    ``scheduler`` steps once per epoch (``scheduler_interval='step'`` for once
    per batch, as OneCycleLR wants; ReduceLROnPlateau gets the monitored
    validation loss). ``max_grad_norm`` clips gradients before each step.
    A non-finite loss restores the model and optimizer to the end of the last
    good epoch and raises :class:`TrainingDivergedError` naming the epoch and step.
    """

    def __init__(
        self,
        model,
        optimizer,
        loss_fn=None,
        *,
        scheduler=None,
        scheduler_interval: str = "epoch",
        callbacks: list[Callback] | tuple = (),
        max_grad_norm: float | None = None,
        progress: bool = False,
        log=None,
    ) -> None:
        if scheduler_interval not in ("epoch", "step"):
            raise ValueError(f"scheduler_interval must be 'epoch' or 'step', got {scheduler_interval!r}")
        self.model = model
        self.optimizer = optimizer
        self.loss_fn = loss_fn if loss_fn is not None else CrossEntropyLoss()
        self.scheduler = scheduler
        self.scheduler_interval = scheduler_interval
        self.callbacks = list(callbacks)
        self.max_grad_norm = max_grad_norm
        self.progress = progress
        self._log = log if log is not None else (lambda message: None)
        self.history: list[EpochMetrics] = []
        self.stop_training = False
        self.epoch = 0
        self.global_step = 0
        self._last_good = None

    # -- public API ---------------------------------------------------------------
    def log(self, message: str) -> None:
        self._log(message)

    def fit(self, train_loader, val_loader=None, epochs: int = 1) -> list[EpochMetrics]:
        """Train for ``epochs`` more epochs (or until a callback sets ``stop_training``)."""
        if epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {epochs}")
        self.stop_training = False
        self._snapshot()
        self._call("on_train_begin")
        try:
            for _ in range(epochs):
                self.epoch += 1
                self._call("on_epoch_begin", self.epoch)
                metrics = self._run_epoch(train_loader, val_loader)
                self.history.append(metrics)
                self._snapshot()
                self.log(self._describe(metrics))
                self._call("on_epoch_end", metrics)
                if self.stop_training:
                    break
        finally:
            self._call("on_train_end")
        return self.history

    def evaluate(self, loader) -> dict:
        """Mean loss (and accuracy, for classification) over ``loader`` in eval mode, without a graph."""
        was_training = self.model.training
        self.model.eval()
        total_loss, total, correct, classified = 0.0, 0, 0, True
        try:
            with no_grad():
                for batch in loader:
                    x, y = _split_batch(batch)
                    output = self.model(x)
                    n = _batch_size(x)
                    total_loss += float(self.loss_fn(output, y).item()) * n
                    total += n
                    hits = _correct(output, y)
                    classified = classified and hits is not None
                    correct += hits or 0
        finally:
            self.model.train(was_training)
        if total == 0:
            raise ValueError("evaluate: the loader produced no batches")
        return {"loss": total_loss / total, "accuracy": correct / total if classified else None, "samples": total}

    def predict(self, inputs) -> Tensor:
        """The model's outputs for ``inputs`` in eval mode, without a graph."""
        was_training = self.model.training
        self.model.eval()
        try:
            with no_grad():
                return self.model(inputs)
        finally:
            self.model.train(was_training)

    def state_dict(self) -> dict:
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "epoch": self.epoch,
            "global_step": self.global_step,
            "history": [m.as_dict() for m in self.history],
        }
        if self.scheduler is not None and hasattr(self.scheduler, "state_dict"):
            state["scheduler"] = self.scheduler.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and "scheduler" in state:
            self.scheduler.load_state_dict(state["scheduler"])
        self.epoch = int(state.get("epoch", 0))
        self.global_step = int(state.get("global_step", 0))
        self.history = [EpochMetrics(**m) for m in state.get("history", [])]

    def save_checkpoint(self, path) -> None:
        """Model, optimizer, scheduler, epoch and history in one safetensors file (written atomically)."""
        save(self.state_dict(), path)

    def load_checkpoint(self, path) -> None:
        """Resume from :meth:`save_checkpoint`'s file: training continues on the same trajectory."""
        self.load_state_dict(load(path))

    def restore_last_good(self) -> None:
        """Put the model and optimizer back as they were at the end of the last completed epoch."""
        if self._last_good is not None:
            self.model.load_state_dict(self._last_good["model"])
            self.optimizer.load_state_dict(copy.deepcopy(self._last_good["optimizer"]))

    @property
    def learning_rate(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    # -- the loop -----------------------------------------------------------------
    def _call(self, hook: str, *args) -> None:
        for callback in self.callbacks:
            getattr(callback, hook)(self, *args)

    def _snapshot(self) -> None:
        self._last_good = {
            "model": {k: v.clone() for k, v in self.model.state_dict().items()},
            "optimizer": copy.deepcopy(self.optimizer.state_dict()),
        }

    def _run_epoch(self, train_loader, val_loader) -> EpochMetrics:
        self.model.train()
        total_loss, total, correct, classified = 0.0, 0, 0, True
        grad_norm = None
        try:
            n_batches = len(train_loader)
        except TypeError:
            n_batches = None
        bar = _Progress(self.progress, n_batches, f"epoch {self.epoch}")
        start = time.perf_counter()
        try:
            for step, batch in enumerate(train_loader, 1):
                x, y = _split_batch(batch)
                self.optimizer.zero_grad()
                output = self.model(x)
                loss = self.loss_fn(output, y)
                loss_value = float(loss.item())
                if not math.isfinite(loss_value):
                    self.restore_last_good()
                    raise TrainingDivergedError(
                        f"the loss became {loss_value} at epoch {self.epoch}, step {step}; the model and optimizer "
                        "were restored to the end of the last good epoch",
                        self.epoch,
                        step,
                    )
                loss.backward()
                if self.max_grad_norm is not None:
                    grad_norm = float(clip_grad_norm_(self.model.parameters(), self.max_grad_norm).item())
                lr = self.learning_rate  # the rate this step uses; the epoch reports its last one
                self.optimizer.step()
                self.global_step += 1
                if self.scheduler is not None and self.scheduler_interval == "step":
                    self.scheduler.step()
                n = _batch_size(x)
                total_loss += loss_value * n
                total += n
                hits = _correct(output, y)
                classified = classified and hits is not None
                correct += hits or 0
                elapsed = time.perf_counter() - start
                bar.update(loss_value, total / elapsed if elapsed > 0 else 0.0)
                self._call("on_batch_end", self.global_step, loss_value)
        finally:
            bar.close()
        if total == 0:
            raise ValueError("fit: the training loader produced no batches")
        train_time = time.perf_counter() - start
        val = self.evaluate(val_loader) if val_loader is not None else None
        if self.scheduler is not None and self.scheduler_interval == "epoch":
            if isinstance(self.scheduler, ReduceLROnPlateau):
                self.scheduler.step(val["loss"] if val else total_loss / total)
            else:
                self.scheduler.step()
        return EpochMetrics(
            epoch=self.epoch,
            train_loss=total_loss / total,
            train_accuracy=correct / total if classified else None,
            val_loss=val["loss"] if val else None,
            val_accuracy=val["accuracy"] if val else None,
            learning_rate=lr,
            epoch_time=time.perf_counter() - start,
            samples_per_second=total / train_time if train_time > 0 else float("inf"),
            grad_norm=grad_norm,
        )

    @staticmethod
    def _describe(m: EpochMetrics) -> str:
        parts = [f"epoch {m.epoch}", f"loss {m.train_loss:.4f}"]
        if m.train_accuracy is not None:
            parts.append(f"acc {m.train_accuracy:.4f}")
        if m.val_loss is not None:
            parts.append(f"val_loss {m.val_loss:.4f}")
        if m.val_accuracy is not None:
            parts.append(f"val_acc {m.val_accuracy:.4f}")
        parts.append(f"lr {m.learning_rate:.3g}")
        parts.append(f"{m.samples_per_second:,.0f} samples/s")
        return "  ".join(parts)
