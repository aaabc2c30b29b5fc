"""``Trainer``: the supervised training loop, with metrics, callbacks, checkpoints and a progress bar.

Devices. ``Trainer(..., device='cuda')`` moves the model there and every batch
(tensors, tuples, lists, dicts, :class:`~forgeml.nn.MaskedBatch`) before the
forward; ``device=None`` trains where the model's parameters are. On a CUDA
device the losses and accuracy counts stay on the device during the epoch and
are read back once at its end (reading a value is a device sync), unless a
per-step Python float is needed: a progress bar, or a callback with its own
``on_batch_end``. Checkpoints hold host copies and load back on either device.
"""

from __future__ import annotations

import collections.abc
import contextlib
import copy
import math
import sys
import time
from dataclasses import asdict, dataclass
from typing import Literal

from ..autograd.grad_mode import no_grad
from ..backend import random as _random
from ..backend.device import CPU, HOST_ARRAY, Device, array_module, as_device, namespace_of, to_host
from ..io.checkpoint import load, save
from ..nn.loss import CrossEntropyLoss
from ..nn.masked import MaskedBatch
from ..nn.utils import clip_grad_norm_
from ..optim.lr_scheduler import ReduceLROnPlateau
from ..tensor import Tensor
from .callbacks import Callback

__all__ = ["DivergencePolicy", "EpochMetrics", "Trainer", "TrainingDivergedError"]


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
    layers: list[dict] | None = None  # per-parameter statistics (``Trainer(layer_stats=True)``)

    def as_dict(self) -> dict:
        return asdict(self)

    def get(self, name: str, default=None):
        return getattr(self, name, default)


@dataclass
class DivergencePolicy:
    """How :class:`Trainer` recovers from a diverging epoch instead of stopping.

    An epoch diverges when a step's loss is NaN or infinite, or when its mean
    train loss exceeds ``factor`` times the best epoch train loss recorded
    since the loss last changed definition (:meth:`Trainer.note_loss_changed`).
    The trainer then restores the end of the last good epoch, multiplies every
    param group's learning rate (and a scheduler's ``base_lrs``) by
    ``lr_factor`` and runs the epoch again. After ``max_recoveries``
    recoveries the next divergence raises :class:`TrainingDivergedError`
    (``on_exhausted='raise'``) or stops training (``'stop'``).
    """

    factor: float = 4.0
    lr_factor: float = 0.3
    max_recoveries: int = 3
    on_exhausted: Literal["raise", "stop"] = "raise"

    def __post_init__(self) -> None:
        if not (isinstance(self.factor, (int, float)) and math.isfinite(self.factor) and self.factor > 1):
            raise ValueError(f"DivergencePolicy.factor must be a finite number > 1, got {self.factor!r}")
        if not (isinstance(self.lr_factor, (int, float)) and 0 < self.lr_factor < 1):
            raise ValueError(f"DivergencePolicy.lr_factor must be in (0, 1), got {self.lr_factor!r}")
        if isinstance(self.max_recoveries, bool) or not isinstance(self.max_recoveries, int) or self.max_recoveries < 0:
            raise ValueError(f"DivergencePolicy.max_recoveries must be an int >= 0, got {self.max_recoveries!r}")
        if self.on_exhausted not in ("raise", "stop"):
            raise ValueError(f"DivergencePolicy.on_exhausted must be 'raise' or 'stop', got {self.on_exhausted!r}")


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


def _hits(output: Tensor, target):
    """The number of correct predictions for classification outputs ([N, C] scores and integer targets), as
    a 0-d array on the output's device (no sync); None for other outputs."""
    t = target._data if isinstance(target, Tensor) else None
    if t is None or t.dtype.kind not in "iu" or output.ndim != 2 or t.shape != output.shape[:1]:
        return None
    return (output._data.argmax(axis=1) == t).sum()


def _model_device(model) -> Device:
    """Where the model's first parameter (or buffer) lives; the CPU for a model with neither."""
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return CPU


def move_to_device(obj, device: Device):
    """``obj`` with every tensor in it on ``device``: tensors, MaskedBatches, and tuples, lists and dicts of
    them (recursively). Tensors already there, and everything else, are returned as they are."""
    if isinstance(obj, Tensor):
        if type(obj._data) is HOST_ARRAY and device is CPU:  # the CPU fast path: nothing to compare
            return obj
        return obj.to(device)
    if isinstance(obj, MaskedBatch):
        mask = obj.padding_mask
        return MaskedBatch(move_to_device(obj.data, device), None if mask is None else move_to_device(mask, device))
    if isinstance(obj, tuple):
        moved = [move_to_device(o, device) for o in obj]
        return type(obj)(*moved) if hasattr(obj, "_fields") else tuple(moved)
    if isinstance(obj, list):
        return [move_to_device(o, device) for o in obj]
    if isinstance(obj, collections.abc.Mapping):
        moved = {k: move_to_device(v, device) for k, v in obj.items()}
        if type(obj) is dict:
            return moved
        try:
            clone = copy.copy(obj)
            clone.update(moved)
            return clone
        except (TypeError, AttributeError):
            return moved
    return obj


def device_scope(device: Device):
    """A context in which ``device`` is CuPy's current device (a no-op for the CPU).

    CuPy's current device is per thread and ``cuda:0`` by default, so work for
    ``cuda:1``, or in a worker thread (``AIEnhancedTrainer`` trains in one, the
    server predicts in its thread pool), runs inside this scope.
    """
    if device.type != "cuda":
        return contextlib.nullcontext()
    return array_module(device).cuda.Device(device.index)


def _read_floats(arrays) -> list[float]:
    """Python floats of a list of 0-d arrays on one device: one transfer (one sync) for all of them."""
    if not arrays:
        return []
    xp = namespace_of(arrays[0])
    return to_host(xp.stack([a.reshape(()) for a in arrays])).tolist()


def _weighted_sum(values: list[float], sizes: list[int]) -> float:
    """``sum(value * size)``, added in step order as the per-step path adds (the same float result)."""
    total = 0.0
    for value, n in zip(values, sizes):
        total += value * n
    return total


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


def _sq_norm(array):
    """``sum(array ** 2)`` as a 0-d value on the array's device (float32 at least, no sync)."""
    xp = namespace_of(array)
    flat = array.reshape(-1)
    if flat.dtype.itemsize < 4:
        flat = flat.astype(xp.float32)
    return xp.vdot(flat, flat)


class _LayerStats:
    """Per-parameter gradient norms and relative update sizes, measured on a few sampled steps of an epoch.

    On a sampled step :meth:`before_step` (after backward) measures the gradients and copies the weights,
    :meth:`after_step` measures how far the optimizer moved them. The sums stay on the device until
    :meth:`result` reads them back in one transfer per device.
    """

    UNKNOWN_LENGTH_EVERY = 25

    def __init__(self, model, n_batches: int | None) -> None:
        self.named = [(name, p) for name, p in model.named_parameters()]
        self.n_batches = n_batches
        self.every = max(1, n_batches // 8) if n_batches else self.UNKNOWN_LENGTH_EVERY
        self.grad_sum = [None] * len(self.named)
        self.grad_count = [0] * len(self.named)
        self.ratio_sum = [None] * len(self.named)
        self.ratio_count = [None] * len(self.named)
        self.total_sum = None
        self.total_count = 0
        self._before: list | None = None

    def wants(self, step: int) -> bool:
        if self.n_batches:
            return step % self.every == 0 or step == self.n_batches
        return (step - 1) % self.every == 0  # the length is unknown: the first step, then every 25th

    @staticmethod
    def _add(current, value):
        return value if current is None else current + value

    def before_step(self, inv_scale: float) -> None:
        total = None
        for i, (_, p) in enumerate(self.named):
            grad = p.grad
            if grad is None:
                continue
            sq = _sq_norm(grad._data)
            if inv_scale != 1.0:  # gradients of a scaled loss: report the true ones
                sq = sq * (inv_scale * inv_scale)
            total = self._add(total, sq)
            self.grad_sum[i] = self._add(self.grad_sum[i], namespace_of(sq).sqrt(sq))
            self.grad_count[i] += 1
        if total is not None:
            self.total_sum = self._add(self.total_sum, namespace_of(total).sqrt(total))
            self.total_count += 1
        self._before = [p._data.copy() for _, p in self.named]

    def after_step(self) -> None:
        before, self._before = self._before, None
        for i, ((_, p), old) in enumerate(zip(self.named, before)):
            xp = namespace_of(old)
            w_norm = xp.sqrt(_sq_norm(old))
            u_norm = xp.sqrt(_sq_norm(p._data - old))
            known = w_norm > 0  # the relative update of an all-zero weight is undefined: that step is left out
            ratio = xp.where(known, u_norm / xp.where(known, w_norm, 1), 0)
            self.ratio_sum[i] = self._add(self.ratio_sum[i], ratio)
            self.ratio_count[i] = self._add(self.ratio_count[i], known.astype(ratio.dtype))

    def result(self) -> tuple[list[dict], float | None]:
        """The per-parameter rows (``name``, ``dims``, ``weight_norm``, ``grad_norm``, ``update_ratio``) and the mean
        total gradient norm of the sampled steps."""
        slots: list = []  # every value to read, as 0-d arrays

        def slot(value):
            if value is None:
                return None
            slots.append(value)
            return len(slots) - 1

        layout = []
        for i, (name, p) in enumerate(self.named):
            xp = namespace_of(p._data)
            layout.append(
                (
                    name,
                    slot(xp.sqrt(_sq_norm(p._data))),
                    slot(self.grad_sum[i]),
                    self.grad_count[i],
                    slot(self.ratio_sum[i]),
                    slot(self.ratio_count[i]),
                )
            )
        total = slot(self.total_sum)
        values = [None] * len(slots)
        by_namespace: dict = {}
        for index, value in enumerate(slots):
            by_namespace.setdefault(namespace_of(value), []).append(index)
        for indices in by_namespace.values():  # one transfer (one sync) per device
            for index, value in zip(indices, _read_floats([slots[j] for j in indices])):
                values[index] = value
        rows = []
        p_dims = {name: p.ndim for name, p in self.named}
        for name, w, g, g_count, r, r_count in layout:
            ratio_count = values[r_count] if r_count is not None else 0.0
            rows.append(
                {
                    "name": name,
                    "dims": p_dims[name],
                    "weight_norm": values[w],
                    "grad_norm": values[g] / g_count if g is not None and g_count else None,
                    "update_ratio": values[r] / ratio_count if r is not None and ratio_count else None,
                }
            )
        mean_total = values[total] / self.total_count if total is not None and self.total_count else None
        return rows, mean_total


class Trainer:
    """Train ``model`` with ``optimizer`` on ``loss_fn(output, target)`` (cross-entropy by default).

    ``fit`` returns ``history``, one :class:`EpochMetrics` per epoch. A
    ``scheduler`` steps once per epoch (``scheduler_interval='step'`` for once
    per batch, as OneCycleLR wants; ReduceLROnPlateau gets the monitored
    validation loss). ``max_grad_norm`` clips gradients before each step.
    A non-finite loss restores the model and optimizer to the end of the last
    good epoch and raises :class:`TrainingDivergedError` naming the epoch and step.

    ``device``: where to train. ``None`` trains where the model's parameters
    are; ``'cpu'``, ``'cuda'`` or ``'cuda:N'`` moves the model (and any optimizer
    state) there. Each batch is moved to the device before the forward, so
    DataLoaders can keep yielding CPU batches. On a CUDA device the epoch's
    losses are read back once, at its end: a non-finite loss is then found
    there (the epoch's remaining steps have run), and reported with the step
    where it first appeared.

    ``amp=True`` runs the forward and the loss under :class:`forgeml.autocast`
    in ``autocast_dtype`` (default: float16 on CUDA, bfloat16 on the CPU) and,
    for float16, scales the loss with a :class:`forgeml.amp.GradScaler` (its
    state is part of the trainer's checkpoints).

    ``divergence``: a :class:`DivergencePolicy` makes a diverging epoch (a
    non-finite loss, or a train loss that explodes) restore the last good epoch,
    lower the learning rate and run again (see :meth:`run_epoch`); each
    recovery is a dict in ``recoveries``. ``track_best=True`` keeps host copies
    of the weights of the epoch with the lowest validation loss (train loss
    without validation) in ``best_state`` (:meth:`restore_best`).
    ``layer_stats=True`` adds per-parameter statistics, measured on a few
    sampled steps, to each epoch's ``EpochMetrics.layers``.
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
        device: Device | str | int | None = None,
        amp: bool = False,
        autocast_dtype=None,
        divergence: DivergencePolicy | None = None,
        track_best: bool = False,
        layer_stats: bool = False,
    ) -> None:
        if scheduler_interval not in ("epoch", "step"):
            raise ValueError(f"scheduler_interval must be 'epoch' or 'step', got {scheduler_interval!r}")
        if divergence is not None and not isinstance(divergence, DivergencePolicy):
            raise TypeError(f"divergence must be a DivergencePolicy or None, got {type(divergence).__name__}")
        if device is None:
            self.device = _model_device(model)
        else:
            self.device = as_device(device)
            if self.device.type == "cuda":
                array_module(self.device)  # a clear error now when CUDA (or this ordinal) is not available
            if _model_device(model) != self.device or any(p.device != self.device for p in model.parameters()):
                model.to(self.device)
                if optimizer is not None and getattr(optimizer, "state", None):
                    # state built for the old device (a loaded optimizer): load_state_dict casts it to each
                    # parameter's device, and resets whatever the optimizer cached for them
                    optimizer.load_state_dict(optimizer.state_dict())
        if self.device.type == "cpu":
            self.device = CPU  # the identity the batch mover's fast path compares with
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
        self._rng_loader = None  # the last training loader an epoch ran on: its own generators are checkpointed
        self._pending_loader_rng = None  # their states from a loaded checkpoint, put back when the next epoch starts
        self.divergence = divergence
        self.recoveries: list[dict] = []
        self.loss_changed_at: list[int] = []
        self.track_best = bool(track_best)
        self.best_state: dict | None = None
        self.best_epoch: int | None = None
        self.best_metric: float | None = None
        self.layer_stats = bool(layer_stats)
        self.amp = bool(amp)
        self.scaler = None
        self._autocast = None
        if self.amp:
            from ..amp import GradScaler, autocast
            from ..backend.dtypes import as_dtype

            default = "float16" if self.device.type == "cuda" else "bfloat16"
            dtype = as_dtype(autocast_dtype if autocast_dtype is not None else default)
            self._autocast = autocast(self.device.type, dtype=dtype)
            if dtype.name == "float16":  # bfloat16 has float32's range: no loss scaling needed
                self.scaler = GradScaler(self.device.type)
        elif autocast_dtype is not None:
            raise ValueError("autocast_dtype is set but amp is off: pass amp=True to train in mixed precision")

    # -- public API ---------------------------------------------------------------
    def log(self, message: str) -> None:
        self._log(message)

    def fit(self, train_loader, val_loader=None, epochs: int = 1) -> list[EpochMetrics]:
        """Train for ``epochs`` more epochs (or until a callback sets ``stop_training``).

        With a :class:`DivergencePolicy` a diverged epoch is run again; only completed epochs count.
        """
        if epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {epochs}")
        self.stop_training = False
        self._snapshot()
        if self.track_best and val_loader is not None and self.best_state is None:
            self.track_initial_best(val_loader)
        self._call("on_train_begin")
        try:
            done = 0
            while done < epochs:
                if self.run_epoch(train_loader, val_loader) is not None:
                    done += 1
                if self.stop_training:
                    break
        finally:
            self._call("on_train_end")
        return self.history

    def run_epoch(self, train_loader, val_loader=None) -> EpochMetrics | None:
        """Train one epoch under the divergence policy; its metrics, or None when it diverged.

        Without a policy a non-finite loss raises :class:`TrainingDivergedError`
        (the model and optimizer restored to the last good epoch). With one, a
        non-finite loss or an exploding train loss restores the last good epoch
        (model, optimizer, scheduler and ``global_step``), multiplies the
        learning rates by ``lr_factor``, appends a record to ``recoveries``,
        calls the callbacks' ``on_divergence`` and returns None: the caller runs
        the epoch again. Once ``max_recoveries`` are used up the next divergence
        raises (``on_exhausted='raise'``) or sets ``stop_training``
        (``'stop'``), and its record has ``gave_up=True``.
        """
        policy = self.divergence
        if policy is None:
            self.epoch += 1
            self._call("on_epoch_begin", self.epoch)
            metrics = self._run_epoch(train_loader, val_loader)
            self._accept_epoch(metrics)
            return metrics
        start_step = self.global_step
        scheduler_state = self._scheduler_state()
        self.epoch += 1
        self._call("on_epoch_begin", self.epoch)
        try:
            metrics = self._run_epoch(train_loader, val_loader)
        except TrainingDivergedError as exc:  # the model and optimizer are restored already
            error = exc
            reason = f"non-finite loss at step {exc.step} of epoch {exc.epoch}"
        else:
            baseline = self._explosion_baseline()
            if baseline is None or metrics.train_loss <= policy.factor * baseline:
                self._accept_epoch(metrics)
                return metrics
            self.restore_last_good()
            reason = (
                f"train loss {metrics.train_loss:.4g} at epoch {self.epoch} exceeded {policy.factor:g}x "
                f"the best epoch's {baseline:.4g}"
            )
            error = TrainingDivergedError(
                f"{reason}; the model and optimizer were restored to the end of the last good epoch",
                self.epoch,
                self.global_step - start_step,
            )
        self._recover(reason, error, start_step, scheduler_state)
        return None

    def note_loss_changed(self) -> None:
        """The loss's definition changed (label smoothing switched on, say): from now on the explosion check
        compares an epoch's train loss only with the epochs that follow this point."""
        self.loss_changed_at.append(self.epoch)

    def track_initial_best(self, val_loader) -> dict | None:
        """Evaluate the model as it is now on ``val_loader`` and make it the best state so far when it is
        (recorded as the current epoch: 0 before training), so that a run that goes wrong from the start can
        be restored to it. Draws nothing from the random generators that training uses. Returns the
        evaluation (:meth:`evaluate`'s dict), or None without a loader."""
        if val_loader is None:
            return None
        cpu_state = _random.default_generator.get_state()
        cuda_states = {index: gen.get_state() for index, gen in _random._cuda_generators.items()}
        try:
            result = self.evaluate(val_loader)
        finally:
            _random.default_generator.set_state(cpu_state)
            for index, state in cuda_states.items():
                _random._cuda_generators[index].set_state(state)
        self._update_best(self.epoch, result["loss"])
        return result

    def restore_best(self) -> bool:
        """Load the best epoch's weights (``track_best``) into the model; False when none were kept."""
        if self.best_state is None:
            return False
        self.model.load_state_dict(self.best_state)
        return True

    def find_lr(self, train_loader, **kwargs):
        """A learning-rate range test on ``train_loader``: see :func:`forgeml.training.lr_finder.find_learning_rate`
        (the model, optimizer and random state are left as they were)."""
        from .lr_finder import find_learning_rate

        return find_learning_rate(self, train_loader, **kwargs)

    def evaluate(self, loader) -> dict:
        """Mean loss (and accuracy, for classification) over ``loader`` in eval mode, without a graph.

        On a CUDA device the per-batch losses and counts are read back once, at the end.
        """
        was_training = self.model.training
        self.model.eval()
        live = self.device.type == "cpu"
        total_loss, total, correct, classified = 0.0, 0, 0, True
        losses, sizes, hits_seen = [], [], []
        try:
            with no_grad(), device_scope(self.device):
                for batch in loader:
                    x, y = self._prepare(batch)
                    with self._precision():
                        output = self.model(x)
                        loss = self.loss_fn(output, y)
                    n = _batch_size(x)
                    hits = _hits(output, y)
                    classified = classified and hits is not None
                    if live:
                        total_loss += float(loss.item()) * n
                        correct += int(hits) if hits is not None else 0
                    else:
                        if loss._data.size != 1:
                            loss.item()  # the error a per-batch read gives
                        losses.append(loss._data)
                        sizes.append(n)
                        if hits is not None:
                            hits_seen.append(hits)
                    total += n
        finally:
            self.model.train(was_training)
        if not live and total:
            total_loss = _weighted_sum(_read_floats(losses), sizes)
            correct = int(sum(_read_floats(hits_seen))) if classified else 0
        total_loss, total, correct, classified = self._combine_totals(total_loss, total, correct, classified)
        if total == 0:
            raise ValueError("evaluate: the loader produced no batches")
        return {"loss": total_loss / total, "accuracy": correct / total if classified else None, "samples": total}

    def predict(self, inputs) -> Tensor:
        """The model's outputs for ``inputs`` (moved to the trainer's device) in eval mode, without a graph.

        The outputs stay on the device; ``.cpu()`` brings them to the host.
        """
        was_training = self.model.training
        self.model.eval()
        try:
            with no_grad(), device_scope(self.device), self._precision():
                return self.model(move_to_device(inputs, self.device))
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
        if self.best_epoch is not None:
            state["best_epoch"] = self.best_epoch
            state["best_metric"] = self.best_metric
        if self.loss_changed_at:
            state["loss_changed_at"] = list(self.loss_changed_at)
        if self.recoveries:
            state["recoveries"] = [dict(r) for r in self.recoveries]
        if self.scheduler is not None and hasattr(self.scheduler, "state_dict"):
            state["scheduler"] = self.scheduler.state_dict()
        if self.scaler is not None and self.scaler.is_enabled():
            state["scaler"] = self.scaler.state_dict()
        state["rng"] = self._rng_state()
        return state

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`; its tensors may be on any device (they are copied to the trainer's)."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and "scheduler" in state:
            self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and self.scaler.is_enabled() and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.epoch = int(state.get("epoch", 0))
        self.global_step = int(state.get("global_step", 0))
        self.history = [EpochMetrics(**m) for m in state.get("history", [])]
        # states written before these entries existed have none of them; the best weights are never saved
        best_epoch = state.get("best_epoch")
        self.best_epoch = int(best_epoch) if best_epoch is not None else None
        best_metric = state.get("best_metric")
        self.best_metric = float(best_metric) if best_metric is not None else None
        self.best_state = None
        self.loss_changed_at = [int(e) for e in state.get("loss_changed_at") or []]
        self.recoveries = [dict(r) for r in state.get("recoveries") or []]
        if state.get("rng") is not None:  # checkpoints written before the random state was saved have none
            self._load_rng_state(state["rng"])

    def save_checkpoint(self, path) -> None:
        """Model, optimizer, scheduler, epoch, history and random state in one safetensors file (written atomically).

        The file holds host copies of the tensors, so it loads back on any device.
        """
        save(self.state_dict(), path)

    def load_checkpoint(self, path) -> None:
        """Resume from :meth:`save_checkpoint`'s file (written on any device): training continues on the same
        trajectory, on this trainer's device."""
        self.load_state_dict(load(path, map_location=self.device))

    def restore_last_good(self) -> None:
        """Put the model and optimizer back as they were at the end of the last completed epoch."""
        if self._last_good is not None:
            self._load_state_copy(self._last_good)

    def scale_learning_rate(self, factor: float) -> None:
        """Multiply every param group's learning rate, and a scheduler's ``base_lrs``, by ``factor`` (so that
        the schedule continues from the new level)."""
        for group in self.optimizer.param_groups:
            group["lr"] = group["lr"] * factor
        base_lrs = getattr(self.scheduler, "base_lrs", None)
        if isinstance(base_lrs, list):
            self.scheduler.base_lrs = [lr * factor for lr in base_lrs]

    @property
    def learning_rate(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    # -- the loop -----------------------------------------------------------------
    def _call(self, hook: str, *args) -> None:
        for callback in self.callbacks:
            getattr(callback, hook)(self, *args)

    def _accept_epoch(self, metrics: EpochMetrics) -> None:
        """A completed epoch: record it, make it the last good state, update the best state, log, and tell
        the callbacks."""
        self.history.append(metrics)
        self._snapshot()
        if self.track_best:
            self._update_best(metrics.epoch, metrics.val_loss if metrics.val_loss is not None else metrics.train_loss)
        self.log(self._describe(metrics))
        self._call("on_epoch_end", metrics)

    def _update_best(self, epoch: int, value) -> None:
        if value is None or not math.isfinite(value) or (self.best_metric is not None and value >= self.best_metric):
            return
        self.best_metric, self.best_epoch = float(value), int(epoch)
        self.best_state = {
            k: Tensor._make(to_host(v._data).copy(), False, None) for k, v in self.model.state_dict().items()
        }

    def _explosion_baseline(self) -> float | None:
        """The lowest finite train loss of the epochs since the loss last changed definition (None: none)."""
        since = self.loss_changed_at[-1] if self.loss_changed_at else None
        losses = [
            m.train_loss
            for m in self.history
            if (since is None or m.epoch > since) and m.train_loss is not None and math.isfinite(m.train_loss)
        ]
        return min(losses, default=None)

    def _scheduler_state(self):
        scheduler = self.scheduler
        if scheduler is None or not hasattr(scheduler, "state_dict") or not hasattr(scheduler, "load_state_dict"):
            return None
        return copy.deepcopy(scheduler.state_dict())

    def _recover(self, reason: str, error: TrainingDivergedError, start_step: int, scheduler_state) -> None:
        """After a diverged epoch (model and optimizer restored): undo the rest of the epoch, lower the
        learning rate unless the recoveries are used up, record it, and raise or stop when they are."""
        policy = self.divergence
        epoch = self.epoch
        self.epoch -= 1
        self.global_step = start_step
        if scheduler_state is not None:
            self.scheduler.load_state_dict(copy.deepcopy(scheduler_state))
        lr_before = self.learning_rate
        gave_up = sum(1 for r in self.recoveries if not r["gave_up"]) >= policy.max_recoveries
        if not gave_up:
            self.scale_learning_rate(policy.lr_factor)
            if self._last_good is not None:
                # the last good state keeps the lowered rates: the next restore must not undo them
                saved_groups = self._last_good["optimizer"]["param_groups"]
                for saved, group in zip(saved_groups, self.optimizer.param_groups):
                    saved["lr"] = group["lr"]
        record = {
            "epoch": epoch,
            "reason": reason,
            "lr_before": lr_before,
            "lr_after": self.learning_rate,
            "gave_up": gave_up,
        }
        self.recoveries.append(record)
        if gave_up:
            self.log(f"{reason}; recovery limit ({policy.max_recoveries}) reached, giving up")
        else:
            self.log(
                f"{reason}; restored the last good epoch, learning rate {lr_before:.3g} -> {record['lr_after']:.3g}"
            )
        for callback in self.callbacks:
            hook = getattr(callback, "on_divergence", None)
            if hook is not None:
                hook(self, record)
        self._on_recovery(record)
        if gave_up:
            if policy.on_exhausted == "raise":
                raise error
            self.stop_training = True

    def _on_recovery(self, record: dict) -> None:
        """Called after each divergence record (a no-op here; subclasses log or report it)."""

    def _prepare(self, batch):
        """``(inputs, targets)`` of a batch, on the trainer's device."""
        x, y = _split_batch(batch)
        device = self.device
        return move_to_device(x, device), move_to_device(y, device)

    def _precision(self):
        """The autocast region of a forward (a no-op context without ``amp``)."""
        return self._autocast if self._autocast is not None else contextlib.nullcontext()

    def _needs_step_values(self, bar) -> bool:
        """Whether each step's loss must be a Python float at once (a sync per step on a GPU)."""
        if self.device.type == "cpu" or bar.bar is not None:
            return True
        for callback in self.callbacks:
            if "on_batch_end" in vars(callback) or type(callback).on_batch_end is not Callback.on_batch_end:
                return True
        return False

    def _diverged(self, loss_value: float, step: int) -> TrainingDivergedError:
        self.restore_last_good()
        return TrainingDivergedError(
            f"the loss became {loss_value} at epoch {self.epoch}, step {step}; the model and optimizer "
            "were restored to the end of the last good epoch",
            self.epoch,
            step,
        )

    def _backward(self, loss) -> None:
        """Backpropagate ``loss`` (scaled first when a float16 ``GradScaler`` is in use)."""
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
        else:
            loss.backward()

    def _clip_and_step(self):
        """Clip the (unscaled) gradients when ``max_grad_norm`` is set, then step the optimizer (through the
        scaler, which skips a step with non-finite gradients). Returns the clipped total norm, or None."""
        scaler, norm = self.scaler, None
        if self.max_grad_norm is not None:
            if scaler is not None:
                scaler.unscale_(self.optimizer)  # clip the true gradients
            norm = clip_grad_norm_(self.model.parameters(), self.max_grad_norm)
        if scaler is not None:
            scaler.step(self.optimizer)
            scaler.update()
        else:
            self.optimizer.step()
        return norm

    def _train_forward(self, x):
        """The training forward (``DistributedTrainer`` runs it through its DistributedDataParallel wrapper)."""
        return self.model(x)

    def _nonfinite_loss(self, value: float, step: int, global_step: int | None = None) -> None:
        """A step's loss was NaN or infinite: restore the last good epoch and raise (``global_step``: where
        training stood at that step, when the check runs after the epoch)."""
        if global_step is not None:
            self.global_step = global_step  # as if training had stopped at that step
        raise self._diverged(value, step)

    def _combine_totals(self, total_loss: float, total: int, correct: int, classified: bool):
        """An epoch's or an evaluation's sums (loss x samples, samples, correct predictions, whether every batch
        was a classification): this process's own; ``DistributedTrainer`` adds up every rank's."""
        return total_loss, total, correct, classified

    # -- random state -----------------------------------------------------------------
    @staticmethod
    def _loader_generators(loader) -> list:
        """The generators of their own (not a device's default) that ``loader`` shuffles with, in a fixed order."""
        found = []
        batch_sampler = getattr(loader, "batch_sampler", None)
        for owner in (loader, getattr(loader, "sampler", None), batch_sampler, getattr(batch_sampler, "sampler", None)):
            gen = getattr(owner, "generator", None)
            if (
                isinstance(gen, _random.Generator)
                and gen is not _random.default_generator
                and gen not in _random._cuda_generators.values()
                and all(gen is not g for g in found)
            ):
                found.append(gen)
        return found

    def _rng_state(self) -> dict:
        """Every generator's position, so that a resumed run draws what the uninterrupted one would have:
        the CPU default generator, each CUDA default generator made so far, and the training loader's own.
        (A CUDA generator's state is its seed and draw count: a resume from it is reproducible, though not
        bit-identical to the uninterrupted run; see :meth:`forgeml.Generator.get_state`.)"""
        if self._pending_loader_rng is not None:  # loaded, and no epoch has run since: still the state to resume
            loader = self._pending_loader_rng
        elif self._rng_loader is not None:
            loader = [g.get_state() for g in self._loader_generators(self._rng_loader)]
        else:
            loader = []
        return {
            "cpu": _random.default_generator.get_state(),
            "cuda": {index: gen.get_state() for index, gen in sorted(_random._cuda_generators.items())},
            "loader": loader,
        }

    def _load_rng_state(self, state: dict) -> None:
        try:
            _random.default_generator.set_state(state["cpu"])
            for index, gen_state in (state.get("cuda") or {}).items():
                try:
                    gen = _random.default_generator_for(f"cuda:{int(index)}")
                except Exception:  # noqa: BLE001 - saved on a GPU this machine lacks: nothing draws from it here
                    continue
                gen.set_state(gen_state)
            self._pending_loader_rng = list(state.get("loader") or [])
        except (TypeError, KeyError, AttributeError) as exc:
            raise ValueError(
                "invalid 'rng' entry in the trainer state: expected the dict Trainer.state_dict() writes"
            ) from exc

    def _restore_loader_rng(self, train_loader) -> None:
        """Put a loaded checkpoint's loader generator states into ``train_loader``'s own generators."""
        pending, self._pending_loader_rng = self._pending_loader_rng, None
        if not pending:
            return
        generators = self._loader_generators(train_loader)
        if len(generators) != len(pending):
            self.log(
                f"checkpoint holds {len(pending)} data loader generator state(s), the training loader has "
                f"{len(generators)} generator(s) of its own: their states are not restored"
            )
            return
        for gen, gen_state in zip(generators, pending):
            gen.set_state(gen_state)

    def _state_copy(self) -> dict:
        """Copies of the model's and the optimizer's state, for :meth:`_load_state_copy` to put back."""
        return {
            "model": {k: v.clone() for k, v in self.model.state_dict().items()},
            "optimizer": copy.deepcopy(self.optimizer.state_dict()),
        }

    def _load_state_copy(self, saved: dict) -> None:
        """Put back what :meth:`_state_copy` saved (the copy stays intact, to be loaded again)."""
        self.model.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(copy.deepcopy(saved["optimizer"]))

    def _snapshot(self) -> None:
        self._last_good = self._state_copy()

    def _run_epoch(self, train_loader, val_loader) -> EpochMetrics:
        self._rng_loader = train_loader
        if self._pending_loader_rng is not None:
            self._restore_loader_rng(train_loader)
        with device_scope(self.device):  # this thread's current CUDA device (AIEnhancedTrainer runs epochs in one)
            return self._train_epoch(train_loader, val_loader)

    def _train_epoch(self, train_loader, val_loader) -> EpochMetrics:
        self.model.train()
        total_loss, total, correct, classified = 0.0, 0, 0, True
        grad_norm = None
        try:
            n_batches = len(train_loader)
        except TypeError:
            n_batches = None
        bar = _Progress(self.progress, n_batches, f"epoch {self.epoch}")
        live = self._needs_step_values(bar)
        losses, sizes, hits_seen = [], [], []  # per-step values kept on the device (not live)
        norm = None
        first_step = self.global_step
        scaler = self.scaler
        stats = _LayerStats(self.model, n_batches) if self.layer_stats else None
        sampled = False
        start = time.perf_counter()
        try:
            for step, batch in enumerate(train_loader, 1):
                x, y = self._prepare(batch)
                self.optimizer.zero_grad()
                with self._precision():
                    output = self._train_forward(x)
                    loss = self.loss_fn(output, y)
                if live:
                    loss_value = float(loss.item())
                    if not math.isfinite(loss_value):
                        self._nonfinite_loss(loss_value, step)
                self._backward(loss)
                if stats is not None:
                    sampled = stats.wants(step)
                    if sampled:
                        scaled = scaler is not None and scaler.is_enabled()
                        stats.before_step(1.0 / scaler.get_scale() if scaled else 1.0)
                lr = self.learning_rate  # the rate this step uses; the epoch reports its last one
                clipped = self._clip_and_step()
                if clipped is not None:
                    norm = clipped
                    if live:
                        grad_norm = float(norm.item())
                if sampled:
                    stats.after_step()
                    sampled = False
                self.global_step += 1
                if self.scheduler is not None and self.scheduler_interval == "step":
                    self.scheduler.step()
                n = _batch_size(x)
                total += n
                hits = _hits(output, y)
                classified = classified and hits is not None
                if live:
                    total_loss += loss_value * n
                    correct += int(hits) if hits is not None else 0
                    elapsed = time.perf_counter() - start
                    bar.update(loss_value, total / elapsed if elapsed > 0 else 0.0)
                    self._call("on_batch_end", self.global_step, loss_value)
                else:
                    if loss._data.size != 1:
                        loss.item()  # the error a per-step read gives
                    losses.append(loss._data)
                    sizes.append(n)
                    if hits is not None:
                        hits_seen.append(hits)
        finally:
            bar.close()
        if not live and total:  # the epoch's values, read back in one transfer each
            values = _read_floats(losses)
            for i, value in enumerate(values):
                if not math.isfinite(value):
                    self._nonfinite_loss(value, i + 1, first_step + i)
                    break
            total_loss = _weighted_sum(values, sizes)
            correct = int(sum(_read_floats(hits_seen))) if classified else 0
            if norm is not None:
                grad_norm = float(norm.item())
        total_loss, total, correct, classified = self._combine_totals(total_loss, total, correct, classified)
        if total == 0:
            raise ValueError("fit: the training loader produced no batches")
        layers = None
        if stats is not None:
            layers, mean_grad_norm = stats.result()
            if self.max_grad_norm is None:
                grad_norm = mean_grad_norm
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
            layers=layers,
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
