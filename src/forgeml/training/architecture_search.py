"""Architecture search: train each candidate :class:`~forgeml.specs.ModelSpec` as one Optuna trial.

:func:`search_architectures` enqueues one trial per candidate, trains each
with a :class:`Trainer` epoch by epoch on the same data, and reports the
validation accuracy (or the negated validation loss) after each epoch, so that
the median pruner can stop a candidate that is clearly behind the others. The
answer is a leaderboard, best first.

Optuna is the ``tune`` extra (``pip install "forgeml[tune]"``), imported on first use.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

from ..backend.random import manual_seed
from ..data import DataLoader
from .trainer import Trainer, TrainingDivergedError
from .tuning import import_optuna, make_pruner, quiet_overflow

__all__ = ["search_architectures"]


def _score(metrics) -> float:
    """What a trial reports for an epoch: validation accuracy, else minus the validation loss (training figures
    when there is no validation data)."""
    accuracy = metrics.val_accuracy if metrics.val_loss is not None else metrics.train_accuracy
    loss = metrics.val_loss if metrics.val_loss is not None else metrics.train_loss
    if accuracy is not None:
        return float(accuracy)
    return -float(loss) if loss is not None and math.isfinite(loss) else -math.inf


def _rank_key(row: dict):
    accuracy = row["val_accuracy"]
    loss = row["val_loss"] if row["val_loss"] is not None else row["train_loss"]
    return (
        row["pruned"],
        -accuracy if accuracy is not None else math.inf,
        loss if loss is not None and math.isfinite(loss) else math.inf,
    )


def search_architectures(
    candidates: list,
    train_data,
    val_data,
    *,
    epochs_each: int,
    make_optimizer: Callable,
    loss_fn=None,
    batch_size: int = 64,
    device=None,
    amp: bool = False,
    autocast_dtype=None,
    seed: int = 0,
    pruner: str = "median",
    log: Callable[[str], None] | None = None,
    extras: list[dict] | None = None,
) -> list[dict]:
    """Train every candidate spec for up to ``epochs_each`` epochs and return a leaderboard, best first.

    Args:
        candidates: ``ModelSpec`` objects (or their dicts); each is built with :func:`forgeml.nn.spec.build`.
        train_data: a Dataset (batched by ``batch_size``, shuffled) or a DataLoader.
        val_data: a Dataset or DataLoader to rank on; None ranks on the training figures.
        epochs_each: epochs per candidate (fewer for one the pruner stops).
        make_optimizer: ``make_optimizer(model)`` gives a fresh optimizer for a candidate's model.
        loss_fn: the loss (default cross-entropy); each candidate gets its own copy.
        batch_size, device, amp, autocast_dtype: as for :class:`Trainer` and :class:`~forgeml.data.DataLoader`.
        seed: candidate ``i`` builds and shuffles after ``manual_seed(seed + i)``.
        pruner: ``'median'`` (Optuna's MedianPruner: 2 startup trials, 1 warm-up epoch) or ``'none'``.
        log: called with a line of text per candidate.
        extras: one dict per candidate, merged into its row (e.g. ``rationale``, ``provider``).

    Each row: ``rank``, ``candidate`` (its index), ``spec`` (``model_dump()``), ``parameters``,
    ``val_accuracy``, ``val_loss``, ``train_loss`` (of its last good epoch), ``epochs`` (run), ``pruned`` and
    ``diverged`` (a non-finite loss ended it; it counts as pruned). Complete candidates come first, by
    validation accuracy, then validation loss; pruned ones after them, ranked the same way.
    """
    from ..nn.spec import build
    from ..specs import ModelSpec

    optuna = import_optuna()
    from optuna.trial import TrialState

    if epochs_each < 1:
        raise ValueError(f"epochs_each must be >= 1, got {epochs_each}")
    specs = [c if isinstance(c, ModelSpec) else ModelSpec.model_validate(c) for c in candidates]
    if extras is not None and len(extras) != len(specs):
        raise ValueError(f"extras must hold one dict per candidate: {len(extras)} for {len(specs)} candidates")
    say = log if log is not None else (lambda message: None)
    if isinstance(train_data, DataLoader):
        train_loader = train_data
    else:
        train_loader = DataLoader(train_data, batch_size=batch_size, shuffle=True)
    if val_data is None or isinstance(val_data, DataLoader):
        val_loader = val_data
    else:
        val_loader = DataLoader(val_data, batch_size=max(batch_size, 256))

    study = optuna.create_study(
        direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed), pruner=make_pruner(optuna, pruner)
    )
    for index in range(len(specs)):
        study.enqueue_trial({"candidate": index})
    board = []
    for _ in range(len(specs)):
        trial = study.ask()
        index = trial.suggest_categorical("candidate", list(range(len(specs))))
        manual_seed(seed + index)
        model = build(specs[index])
        trainer = Trainer(
            model,
            make_optimizer(model),
            copy.deepcopy(loss_fn),
            device=device,
            amp=amp,
            autocast_dtype=autocast_dtype,
            log=lambda message, i=index: say(f"candidate {i}: {message}"),
        )
        ran, pruned, diverged, score = 0, False, False, -math.inf
        for epoch in range(1, epochs_each + 1):
            ran = epoch
            try:
                with quiet_overflow():
                    metrics = trainer.fit(train_loader, val_loader, epochs=1)[-1]
                score = _score(metrics)
            except TrainingDivergedError:
                score = -math.inf
            if not math.isfinite(score):
                pruned = diverged = True
                trial.report(-math.inf, epoch - 1)
                break
            trial.report(score, epoch - 1)  # 0-based steps: the pruner's one warm-up step is the first epoch
            if epoch < epochs_each and trial.should_prune():
                pruned = True
                break
        if pruned:
            study.tell(trial, state=TrialState.PRUNED)
        else:
            study.tell(trial, score)
        last = trainer.history[-1] if trainer.history else None
        row = {
            "rank": 0,
            "candidate": index,
            "spec": specs[index].model_dump(),
            "parameters": model.num_parameters(),
            "val_accuracy": None if last is None else last.val_accuracy,
            "val_loss": None if last is None else last.val_loss,
            "train_loss": None if last is None else last.train_loss,
            "epochs": ran,
            "pruned": pruned,
            "diverged": diverged,
        }
        if extras is not None:
            row.update(extras[index])
        board.append(row)
        state = "diverged" if diverged else "pruned" if pruned else "complete"
        say(f"candidate {index}: {state} after {ran} epoch(s), score {score:.4g}")
    board.sort(key=_rank_key)
    for rank, row in enumerate(board, 1):
        row["rank"] = rank
    return board
