"""What the AI analyst is told about a run besides its curves: a :class:`~forgeml.specs.TrainingContext`.

Built from the trainer's live state: the optimizer and its weight-decay mode,
the regularisation in force, statistics of a sample of the training inputs,
the latest epoch's per-layer gradient and update statistics, and the changes
already tried with their verdicts.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from ..backend.device import HOST_ARRAY, device_of, is_array, to_device, to_host
from ..data.dataset import TensorDataset
from ..nn.dropout import Dropout
from ..nn.loss import CrossEntropyLoss
from ..specs import InputStats, LayerStats, TrainingContext
from ..tensor import Tensor

__all__ = ["build_context", "input_stats", "layer_types", "num_classes", "sample_arrays"]

_MAX_LAYERS = 48  # per-layer entries sent to an analyst (the largest tensors first beyond this)


def num_classes(trainer) -> int | None:
    """The number of classes of a classifier trained with cross-entropy (its last Linear's outputs), else None."""
    if not isinstance(trainer.loss_fn, CrossEntropyLoss):
        return None
    outputs = None
    for module in trainer.model.modules():
        outputs = getattr(module, "out_features", outputs)
    return outputs


def layer_types(model) -> dict[str, int]:
    """How many modules of each class ``model`` is built from (its leaves: containers are not counted)."""
    return dict(Counter(type(m).__name__ for m in model.modules() if next(iter(m.children()), None) is None))


def input_stats(dataset, standardized: bool = False) -> InputStats | None:
    """Statistics of up to 2,000 training inputs, or None when the inputs are not arrays of numbers."""
    try:
        features, _, shape = sample_arrays(dataset, 2000)
    except (TypeError, ValueError, IndexError, AttributeError):
        return None
    if features.size == 0:
        return None
    raw = features
    first = dataset[0][0]
    dtype = first._data.dtype if isinstance(first, Tensor) else np.asarray(first).dtype
    integer = dtype.kind in "iub"  # token ids or categories
    return InputStats(
        mean=float(raw.mean()),
        std=float(raw.std()),
        min=float(raw.min()),
        max=float(raw.max()),
        features=int(np.prod(shape)) if shape else 1,
        integer=integer,
        standardized=standardized,
    )


def build_context(trainer) -> TrainingContext:
    """The :class:`TrainingContext` of ``trainer`` (an ``AIEnhancedTrainer``) as it stands now."""
    group = trainer.optimizer.param_groups[0]
    optimizer = type(trainer.optimizer).__name__.lower()
    decoupled = bool(group.get("decoupled_weight_decay", optimizer == "adamw"))
    dropouts = [m.p for m in trainer.model.modules() if isinstance(m, Dropout)]
    smoothing = getattr(trainer.loss_fn, "label_smoothing", None)
    layers = []
    lineage = trainer.lineage()  # the epochs behind the current weights (reverted trials left out)
    if lineage and lineage[-1].layers:
        rows = lineage[-1].layers
        if len(rows) > _MAX_LAYERS:
            rows = sorted(rows, key=lambda r: -r["weight_norm"])[:_MAX_LAYERS]
        layers = [LayerStats(**row) for row in rows]
    return TrainingContext(
        optimizer=optimizer,
        learning_rate=trainer.learning_rate,
        weight_decay=group.get("weight_decay"),
        decoupled_weight_decay=decoupled,
        batch_size=trainer.batch_size,
        dropout=dropouts[0] if dropouts else None,
        label_smoothing=smoothing,
        max_grad_norm=trainer.max_grad_norm,
        scheduler=type(trainer.scheduler).__name__ if trainer.scheduler is not None else None,
        epochs_planned=trainer.epochs_planned,
        epochs_done=trainer.epoch,
        num_classes=num_classes(trainer),
        train_samples=len(trainer.train_dataset) if trainer.train_dataset is not None else None,
        inputs=trainer.inputs_summary(),
        layer_types=layer_types(trainer.model),
        layers=layers,
        changes=list(trainer.changes),
        loss_changed_at=list(trainer.loss_changed_at),
    )


def sample_arrays(dataset, limit: int, seed: int = 0):
    """Up to ``limit`` rows of a dataset as (features [n, d] float64, labels [n] or None, sample shape)."""
    n = len(dataset)
    idx = np.sort(np.random.default_rng(seed).choice(n, size=min(n, limit), replace=False))
    if isinstance(dataset, TensorDataset) and len(dataset.tensors) == 2:
        x, y = _host_rows(dataset.tensors[0]._data, idx), _host_rows(dataset.tensors[1]._data, idx)
    else:
        items = [dataset[int(i)] for i in idx]
        x = np.stack([_host(a._data if isinstance(a, Tensor) else a) for a, _ in items])
        y = np.asarray([b.item() if isinstance(b, Tensor) else b for _, b in items])
    shape = x.shape[1:]
    return x.reshape(len(idx), -1).astype(np.float64), (y if y.dtype.kind in "iuf" else None), shape


def _host(value):
    """A NumPy view of ``value`` (a device array is copied to the host)."""
    return to_host(value) if is_array(value) else np.asarray(value)


def _host_rows(array, idx):
    """``array[idx]`` on the host: a device array is indexed where it is, and only those rows come back."""
    if type(array) is HOST_ARRAY:
        return array[idx]
    return to_host(array[to_device(idx, device_of(array))])
