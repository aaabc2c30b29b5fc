"""Hyper-parameter search with Optuna: :func:`tune` trains one model per trial under an epoch budget.

Each trial draws a learning rate, weight decay, optimizer, dropout and batch
size from a :class:`SearchSpace` (Optuna's TPE sampler, seeded), builds a fresh
model with ``build_model(params)``, and trains it with a :class:`Trainer` one
epoch at a time, reporting the validation metric to Optuna after each epoch so
that the median pruner can stop a hopeless trial early. The search stops when
the epoch budget (summed over all trials, pruned ones included) cannot fit one
more epoch. A trial whose loss becomes NaN or infinite ends as pruned, with the
worst value, and the search goes on.

Optuna is the ``tune`` extra (``pip install "forgeml[tune]"``), imported on first use.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import optim
from ..backend.random import manual_seed
from ..data import DataLoader
from ..tensor import Tensor
from .trainer import Trainer, TrainingDivergedError

__all__ = ["OPTIMIZERS", "SearchSpace", "TuneResult", "make_optimizer", "spec_builder", "tune"]

OPTIMIZERS = ("adam", "adamw", "sgd")
# what a parameter is when its SearchSpace field is None and ``fixed`` does not name it
DEFAULTS = {"lr": 1e-3, "weight_decay": 0.0, "optimizer": "adam", "dropout": 0.0, "batch_size": 64}
METRICS = {"val_accuracy": "maximize", "val_loss": "minimize"}
_quieted = False


def import_optuna():
    """The ``optuna`` module, or an ImportError naming the extra to install. The first call sets Optuna's
    logging to WARNING (it announces every trial at INFO)."""
    global _quieted
    try:
        import optuna
    except ImportError as exc:
        raise ImportError('hyper-parameter search needs Optuna: install it with pip install "forgeml[tune]"') from exc
    if not _quieted:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        _quieted = True
    return optuna


def quiet_overflow():
    """NumPy's overflow and invalid-value warnings off: a search tries learning rates that blow up on purpose,
    and the trainer already turns a non-finite loss into :class:`TrainingDivergedError`."""
    return np.errstate(over="ignore", invalid="ignore", divide="ignore")


def make_pruner(optuna, pruner: str):
    """Optuna's pruner for ``'median'`` (MedianPruner, 2 startup trials, 1 warm-up step) or ``'none'``."""
    if pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)
    if pruner == "none":
        return optuna.pruners.NopPruner()
    raise ValueError(f"pruner must be 'median' or 'none', got {pruner!r}")


@dataclass
class SearchSpace:
    """The ranges a trial's hyper-parameters are drawn from; a field set to None is left out of the search
    (the parameter then takes its value from ``fixed``, else from :data:`DEFAULTS`).

    ``lr`` and ``weight_decay`` are drawn log-uniformly (``weight_decay`` uniformly when its low end is 0),
    ``dropout`` uniformly, ``optimizers`` and ``batch_sizes`` as categories.
    """

    lr: tuple[float, float] | None = (1e-4, 1e-1)
    weight_decay: tuple[float, float] | None = (1e-6, 1e-1)
    optimizers: tuple[str, ...] | None = OPTIMIZERS
    dropout: tuple[float, float] | None = (0.0, 0.5)
    batch_sizes: tuple[int, ...] | None = (32, 64, 128, 256)

    def __post_init__(self) -> None:
        for name in ("lr", "weight_decay", "dropout"):
            value = getattr(self, name)
            if value is None:
                continue
            if len(value) != 2 or not value[0] <= value[1]:
                raise ValueError(f"SearchSpace.{name} must be a (low, high) pair with low <= high, got {value!r}")
            setattr(self, name, (float(value[0]), float(value[1])))
        if self.lr is not None and self.lr[0] <= 0:
            raise ValueError(f"SearchSpace.lr must be positive (it is drawn on a log scale), got {self.lr!r}")
        if self.weight_decay is not None and self.weight_decay[0] < 0:
            raise ValueError(f"SearchSpace.weight_decay must not be negative, got {self.weight_decay!r}")
        if self.dropout is not None and not (0.0 <= self.dropout[0] and self.dropout[1] < 1.0):
            raise ValueError(f"SearchSpace.dropout must lie in [0, 1), got {self.dropout!r}")
        if self.optimizers is not None:
            self.optimizers = tuple(self.optimizers)
            unknown = [o for o in self.optimizers if o not in OPTIMIZERS]
            if unknown or not self.optimizers:
                raise ValueError(f"SearchSpace.optimizers must be a non-empty choice of {OPTIMIZERS}, got {unknown}")
        if self.batch_sizes is not None:
            self.batch_sizes = tuple(int(b) for b in self.batch_sizes)
            if not self.batch_sizes or min(self.batch_sizes) < 1:
                raise ValueError(f"SearchSpace.batch_sizes must be positive sizes, got {self.batch_sizes!r}")

    def suggest(self, trial, fixed: dict) -> dict:
        """The trial's parameters: drawn for each searched field that ``fixed`` does not hold, then ``fixed``."""
        params = dict(DEFAULTS)
        if self.lr is not None and "lr" not in fixed:
            params["lr"] = trial.suggest_float("lr", *self.lr, log=True)
        if self.weight_decay is not None and "weight_decay" not in fixed:
            low, high = self.weight_decay
            params["weight_decay"] = trial.suggest_float("weight_decay", low, high, log=low > 0)
        if self.optimizers is not None and "optimizer" not in fixed:
            params["optimizer"] = trial.suggest_categorical("optimizer", list(self.optimizers))
        if self.dropout is not None and "dropout" not in fixed:
            params["dropout"] = trial.suggest_float("dropout", *self.dropout)
        if self.batch_sizes is not None and "batch_size" not in fixed:
            params["batch_size"] = trial.suggest_categorical("batch_size", list(self.batch_sizes))
        params.update(fixed)
        return params


def make_optimizer(params: dict, parameters) -> optim.Optimizer:
    """The optimizer a trial's ``params`` name: Adam, AdamW, or SGD with Nesterov momentum 0.9."""
    name, lr, decay = params["optimizer"], float(params["lr"]), float(params["weight_decay"])
    if name == "adam":
        return optim.Adam(parameters, lr=lr, weight_decay=decay)
    if name == "adamw":
        return optim.AdamW(parameters, lr=lr, weight_decay=decay)
    if name == "sgd":
        return optim.SGD(parameters, lr=lr, momentum=0.9, weight_decay=decay, nesterov=True)
    raise ValueError(f"unknown optimizer {name!r}: expected one of {OPTIMIZERS}")


def spec_builder(spec, edit: Callable | None = None) -> Callable[[dict], Any]:
    """A ``build_model`` for :func:`tune` from a :class:`~forgeml.specs.ModelSpec` (or its dict): each trial
    builds the spec with every dropout probability (``Dropout.p``, the ``dropout`` of the sequence layers) set
    to the trial's ``dropout``. ``edit(spec)``, when given, changes the copied spec in place before the build."""
    from ..nn.spec import build
    from ..specs import ModelSpec

    base = spec if isinstance(spec, ModelSpec) else ModelSpec.model_validate(spec)

    def build_model(params: dict):
        trial_spec = base.model_copy(deep=True)
        if edit is not None:
            edit(trial_spec)
        if params.get("dropout") is not None:
            for layer in trial_spec.layers:
                if layer.type == "Dropout":
                    layer.args["p"] = float(params["dropout"])
                elif "dropout" in layer.args:
                    layer.args["dropout"] = float(params["dropout"])
        return build(trial_spec)

    return build_model


@dataclass
class TuneResult:
    """What :func:`tune` found. ``best_state`` holds host copies of the best trial's weights at the end of its
    training; :meth:`build_best` puts them into a fresh model. ``trials`` lists every trial in order."""

    best_params: dict
    best_value: float
    best_trial: int
    best_state: dict
    trials: list[dict]
    epochs_used: int
    seconds: float
    study: Any
    metric: str
    direction: str
    build_model: Callable[[dict], Any] = field(repr=False)

    def build_best(self):
        """``build_model(best_params)`` with ``best_state`` loaded (on the CPU)."""
        model = self.build_model(dict(self.best_params))
        model.load_state_dict(self.best_state)
        return model

    def leaderboard(self) -> list[dict]:
        """The trials best first: complete ones before pruned ones, each by value in the metric's direction."""
        sign = -1.0 if self.direction == "maximize" else 1.0
        return sorted(self.trials, key=lambda t: (t["state"] != "complete", sign * _sortable(t["value"])))

    def to_dict(self) -> dict:
        """A JSON-ready summary (no weights); non-finite values become None."""
        return {
            "metric": self.metric,
            "direction": self.direction,
            "best_trial": self.best_trial,
            "best_value": _finite_or_none(self.best_value),
            "best_params": dict(self.best_params),
            "epochs_used": self.epochs_used,
            "seconds": self.seconds,
            "trials": [{**t, "value": _finite_or_none(t["value"])} for t in self.trials],
        }


def _finite_or_none(value):
    return value if value is not None and math.isfinite(value) else None


def _sortable(value) -> float:
    return value if value is not None and not math.isnan(value) else math.inf


def _target_of(batch):
    if isinstance(batch, dict):
        return batch.get("target")
    if isinstance(batch, (tuple, list)) and batch:
        return batch[-1]
    return None


def _default_metric(val_loader) -> str:
    """``val_accuracy`` when the validation targets are integer class labels, else ``val_loss``."""
    for batch in val_loader:
        target = _target_of(batch)
        data = target._data if isinstance(target, Tensor) else None
        if data is not None and data.dtype.kind in "iu" and data.ndim == 1:
            return "val_accuracy"
        return "val_loss"
    raise ValueError("tune: the validation data produced no batches")


def _host_state(model) -> dict:
    return {name: tensor.detach().cpu().clone() for name, tensor in model.state_dict().items()}


def tune(
    build_model: Callable[[dict], Any],
    train_data,
    val_data,
    *,
    epochs_per_trial: int,
    epoch_budget: int,
    space: SearchSpace | None = None,
    loss_fn=None,
    seed: int = 0,
    device=None,
    metric: str | None = None,
    pruner: str = "median",
    fixed: dict | None = None,
    log: Callable[[str], None] | None = None,
) -> TuneResult:
    """Search hyper-parameters for ``build_model`` on ``train_data`` within ``epoch_budget`` epochs in all.

    Args:
        build_model: gets a trial's parameters (``lr``, ``weight_decay``, ``optimizer``, ``dropout``,
            ``batch_size``, and whatever ``fixed`` adds) and returns a fresh model.
        train_data: a Dataset (a DataLoader's dataset is used; each trial batches it with its own size).
        val_data: a Dataset or DataLoader to measure ``metric`` on after each epoch.
        epochs_per_trial: epochs each trial trains (the last trial is cut short to fit the budget).
        epoch_budget: epochs across all trials; a pruned or diverged trial counts the epochs it ran.
        space: the :class:`SearchSpace` (default: its defaults).
        loss_fn: the training loss (default cross-entropy); each trial gets its own copy.
        seed: seeds the sampler, and each trial's weights and shuffling (``seed + trial number``).
        device: where to train (default: where ``build_model``'s models are).
        metric: ``'val_accuracy'`` (maximized) or ``'val_loss'`` (minimized); default ``val_accuracy``
            when the validation targets are integer labels, else ``val_loss``.
        pruner: ``'median'`` or ``'none'``.
        fixed: parameters held fixed (e.g. ``{"batch_size": 64}``); keys outside the space are passed on to
            ``build_model``.
        log: called with a line of text per trial.
    """
    optuna = import_optuna()
    from optuna.trial import TrialState

    if epochs_per_trial < 1:
        raise ValueError(f"epochs_per_trial must be >= 1, got {epochs_per_trial}")
    if epoch_budget < 1:
        raise ValueError(f"epoch_budget must be >= 1, got {epoch_budget}")
    space = space if space is not None else SearchSpace()
    fixed = dict(fixed or {})
    if "optimizer" in fixed and fixed["optimizer"] not in OPTIMIZERS:
        raise ValueError(f"fixed optimizer must be one of {OPTIMIZERS}, got {fixed['optimizer']!r}")
    say = log if log is not None else (lambda message: None)
    train_dataset = train_data.dataset if isinstance(train_data, DataLoader) else train_data
    val_loader = val_data if isinstance(val_data, DataLoader) else DataLoader(val_data, batch_size=256)
    metric = metric if metric is not None else _default_metric(val_loader)
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {sorted(METRICS)}, got {metric!r}")
    direction = METRICS[metric]
    worst = 0.0 if metric == "val_accuracy" else math.inf
    better = (lambda a, b: a > b) if direction == "maximize" else (lambda a, b: a < b)

    study = optuna.create_study(
        direction=direction,
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=make_pruner(optuna, pruner),
    )
    start = time.perf_counter()
    used = 0
    trials: list[dict] = []
    best = None  # (complete?, value, number, params, state)
    while epoch_budget - used >= 1:
        trial = study.ask()
        params = space.suggest(trial, fixed)
        n_epochs = min(epochs_per_trial, epoch_budget - used)
        trial_start = time.perf_counter()
        manual_seed(seed + trial.number)
        model = build_model(dict(params))
        trainer = Trainer(
            model,
            make_optimizer(params, model.parameters()),
            copy.deepcopy(loss_fn),
            device=device,
            log=lambda message, n=trial.number: say(f"trial {n}: {message}"),
        )
        loader = DataLoader(train_dataset, batch_size=int(params["batch_size"]), shuffle=True)
        value, ran, state, diverged = worst, 0, "complete", False
        for epoch in range(1, n_epochs + 1):
            ran = epoch
            try:
                with quiet_overflow():
                    metrics = trainer.fit(loader, val_loader, epochs=1)[-1]
            except TrainingDivergedError:
                metrics = None
            measured = None if metrics is None else getattr(metrics, metric)
            if metrics is not None and measured is None:
                raise ValueError(
                    f"metric {metric!r} is not measured for this model (its outputs are not class scores for "
                    "integer targets): use metric='val_loss'"
                )
            if measured is None or not math.isfinite(measured):
                value, state, diverged = worst, "pruned", True
                trial.report(worst, epoch - 1)
                break
            value = float(measured)
            trial.report(value, epoch - 1)  # 0-based steps: the pruner's one warm-up step is the first epoch
            if epoch < n_epochs and trial.should_prune():
                state = "pruned"
                break
        used += ran
        if state == "complete":
            study.tell(trial, value)
        else:
            study.tell(trial, state=TrialState.PRUNED)
        seconds = time.perf_counter() - trial_start
        trials.append(
            {
                "number": trial.number,
                "params": dict(params),
                "value": value,
                "state": state,
                "epochs": ran,
                "seconds": seconds,
                "diverged": diverged,
            }
        )
        # a complete trial beats any pruned one; the model as its training ended is what a trial delivers
        if (
            best is None
            or (state == "complete" and not best[0])
            or ((state == "complete") == best[0] and better(value, best[1]))
        ):
            best = (state == "complete", value, trial.number, dict(params), _host_state(trainer.model))
        say(
            f"trial {trial.number}: {state}{' (diverged)' if diverged else ''}, {metric} {value:.4g} after "
            f"{ran} epoch(s) in {seconds:.1f}s; {used}/{epoch_budget} epochs used"
        )
    _, best_value, best_number, best_params, best_state = best
    return TuneResult(
        best_params=best_params,
        best_value=best_value,
        best_trial=best_number,
        best_state=best_state,
        trials=trials,
        epochs_used=used,
        seconds=time.perf_counter() - start,
        study=study,
        metric=metric,
        direction=direction,
        build_model=build_model,
    )
