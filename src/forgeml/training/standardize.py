"""Input standardisation that leaves the model's input contract alone.

While training, :class:`InputStandardizer` feeds the network ``(x - mean) / std``;
the first layer is re-parameterised so that the function it computes does not
change at that moment (``W_std = W * std``, ``b_std = b + W @ mean``). Its
weight's optimizer state is rescaled to match when the mean is zero (the
gradient with respect to ``W_std`` is then the raw one divided by ``std``);
with a mean the gradient also mixes in the bias's
(``(dL/dW - dL/db * mean) / std``), which a second moment cannot be mapped
through, so the weight's state starts afresh. The bias's state carries over
(its gradient is the same in both coordinates). When training ends the transform is folded
back into the first layer (``W = W_std / std``, ``b = b_std - W @ mean``), so
the trained model takes raw inputs, as before. Both directions are exact for a
first ``Linear`` layer (per-feature or scalar statistics) and for a first
``Conv1d``/``Conv2d`` without padding (scalar statistics).
"""

from __future__ import annotations

import numpy as np

from ..nn.container import Sequential
from ..nn.conv import Conv2d
from ..nn.conv1d import Conv1d
from ..nn.flatten import Flatten
from ..nn.linear import Linear
from ..specs import InputStats
from ..tensor import Tensor
from .ai_context import input_stats, sample_arrays
from .guardrails import Refused

__all__ = ["InputStandardizer", "StandardizingMixin", "first_layer"]

_MAX_TABULAR_FEATURES = 256  # wider 1-D inputs (flattened images) are standardised with one mean and std

_SHAPE_ONLY = ("Flatten", "Identity", "Unflatten")


def first_layer(model):
    """The layer that first reads the input (a Linear or an unpadded convolution at the front of a Sequential,
    behind shape-only modules), or a string saying why there is none that a standardisation can be folded into."""
    if not isinstance(model, Sequential):
        return f"the model is a {type(model).__name__}, not a Sequential: its first layer cannot be identified"
    for module in model.children():
        if type(module).__name__ in _SHAPE_ONLY or isinstance(module, Flatten):
            continue
        if isinstance(module, Linear):
            return module
        if isinstance(module, (Conv1d, Conv2d)):
            padding = module.padding if isinstance(module.padding, (tuple, list)) else (module.padding,)
            if isinstance(module.padding, str) and module.padding != "valid":
                return f"the first layer is a padded {type(module).__name__} (padding={module.padding!r})"
            if any(int(p) != 0 for p in padding if not isinstance(p, str)):
                return (
                    f"the first layer is a {type(module).__name__} with zero padding {module.padding}: its padded "
                    "borders would change meaning"
                )
            return module
        return f"the first layer that reads the input is a {type(module).__name__}, which a standardisation cannot be folded into"
    return "the model has no layers"


class InputStandardizer:
    """``(x - mean) / std`` on a model's inputs during training, folded into its first layer between runs.

    ``mean``/``std`` are floats (every feature alike) or 1-D arrays (per feature, for a first Linear layer).
    """

    def __init__(self, model, layer, mean, std) -> None:
        self.model = model
        self.layer = layer
        self.mean = np.asarray(mean, dtype=np.float64)
        self.std = np.asarray(std, dtype=np.float64)
        if np.any(self.std <= 0) or not np.all(np.isfinite(self.std)) or not np.all(np.isfinite(self.mean)):
            raise ValueError("standardisation needs finite statistics and a positive std")
        if self.mean.ndim and not isinstance(layer, Linear):
            raise ValueError("per-feature statistics need a first Linear layer")
        self.active = False

    # -- the data side ------------------------------------------------------------
    def __call__(self, x):
        """The batch as the network sees it while active (a float tensor; anything else passes unchanged)."""
        if not self.active or not isinstance(x, Tensor) or x._data.dtype.kind != "f":
            return x
        mean = self.mean.astype(x._data.dtype) if self.mean.ndim else float(self.mean)
        scale = (1.0 / self.std).astype(x._data.dtype) if self.std.ndim else float(1.0 / self.std)
        if not isinstance(mean, float):
            mean = Tensor(mean).to(x.device)
            scale = Tensor(scale).to(x.device)
        return (x - mean) * scale

    # -- the parameter side ---------------------------------------------------------
    def unfold(self, optimizer) -> None:
        """Re-parameterise the first layer for standardised inputs (the model's function is unchanged) and
        start transforming batches."""
        if self.active:
            return
        self._reparameterise(optimizer, to_standardised=True)
        self.active = True

    def fold(self, optimizer) -> None:
        """Fold the transform back into the first layer: the model takes raw inputs again."""
        if not self.active:
            return
        self._reparameterise(optimizer, to_standardised=False)
        self.active = False

    def _reparameterise(self, optimizer, to_standardised: bool) -> None:
        weight, bias = self.layer.weight, getattr(self.layer, "bias", None)
        new_w, new_b, factor = self._transform(weight._data, None if bias is None else bias._data, to_standardised)
        weight._data[...] = new_w
        if bias is not None:
            bias._data[...] = new_b
        if np.any(self.mean != 0):
            getattr(optimizer, "state", {}).pop(weight, None)
        else:
            self._rescale_state(optimizer, weight, factor)

    def convert_state(self, state: dict, to_standardised: bool) -> None:
        """Re-parameterise the first layer's entries of a stored ``model.state_dict()`` copy in place (a best
        or last-good snapshot taken in the other coordinates)."""
        prefix = next((name for name, m in self.model.named_modules() if m is self.layer), None)
        if prefix is None:
            return
        key = f"{prefix}.weight" if prefix else "weight"
        bias_key = f"{prefix}.bias" if prefix else "bias"
        if key not in state:
            return
        bias = state.get(bias_key)
        new_w, new_b, _ = self._transform(state[key]._data, None if bias is None else bias._data, to_standardised)
        state[key]._data[...] = new_w
        if bias is not None:
            bias._data[...] = new_b

    def _transform(self, w, b, to_standardised: bool):
        """The first layer's (weight, bias) in the other coordinates, and the factor its gradient is divided by."""
        std = self._broadcast(self.std, w)
        if to_standardised:
            shift = self._weighted_mean(w)  # b_std = b + W_raw . mean
            new_w, factor = w * std, std
        else:
            new_w, factor = w / std, 1.0 / std
            shift = -self._weighted_mean(new_w)  # b = b_std - W_raw . mean
        new_b = None if b is None else (b + shift).astype(b.dtype, copy=False)
        return new_w.astype(w.dtype, copy=False), new_b, factor

    def _broadcast(self, values: np.ndarray, w):
        """``values`` shaped to multiply the weight ``w`` along its input axis, in its array namespace."""
        if values.ndim == 0:
            return float(values)
        shape = (1, w.shape[1]) + (1,) * (w.ndim - 2)
        return _like(values.reshape(shape).astype(w.dtype), w)

    def _weighted_mean(self, w):
        """``W @ mean`` per output unit (a vector over the first axis of ``w``)."""
        axes = tuple(range(1, w.ndim))
        if self.mean.ndim == 0:
            return w.sum(axis=axes) * float(self.mean)
        return (w * self._broadcast(self.mean, w)).sum(axis=axes)

    @staticmethod
    def _rescale_state(optimizer, weight, factor) -> None:
        state = getattr(optimizer, "state", {}).get(weight)
        if not state:
            return
        for key, value in state.items():
            if not isinstance(value, Tensor) or value.shape != weight.shape:
                continue
            power = 2 if "sq" in key else 1
            value._data[...] = (value._data / factor**power).astype(value._data.dtype, copy=False)


def _like(array: np.ndarray, reference):
    """``array`` in the array namespace (and on the device) of ``reference``."""
    if isinstance(reference, np.ndarray):
        return array
    from ..backend.device import device_of, to_device

    return to_device(array, device_of(reference))


class StandardizingMixin:
    """The ``standardize_inputs`` action for ``AIEnhancedTrainer``: batches transformed while it trains, the first
    layer and the stored best weights kept in the matching coordinates, folded back when training ends."""

    def standardize_inputs(self, mean: float | None = None, std: float | None = None):
        """Standardise the inputs from now on (statistics measured on the training data unless given), with the
        first layer re-parameterised so that the model computes the same function at this moment."""
        if self._standardizer is not None and self._standardizer.active:
            raise Refused("the inputs are already standardised")
        layer = first_layer(self.model)
        if isinstance(layer, str):
            raise Refused(layer)
        stats = self.inputs_summary()
        if stats is None or stats.integer:
            raise Refused("the inputs are not real-valued arrays (token ids or categories cannot be standardised)")
        if mean is None or std is None:
            mean, std = self._measured_standardisation(layer)
        self._standardizer = InputStandardizer(self.model, layer, mean, std)
        self._standardizer.unfold(self.optimizer)
        self._sync_best_coordinates()
        self._snapshot()  # the last good state, in the new coordinates
        self._inputs = None
        shown = _show_stats(mean, std)
        return f"raw inputs ({_show_stats(stats.mean, stats.std)})", f"(x - mean) / std with {shown}"

    def inputs_summary(self) -> InputStats | None:
        """Statistics of the training inputs, as the network now sees them."""
        if self._inputs is None and self._train_dataset is not None:
            stats = input_stats(self._train_dataset)
            active = self._standardizer is not None and self._standardizer.active
            if stats is not None and active:
                stats = stats.model_copy(update={"standardized": True, "mean": 0.0, "std": 1.0})
            self._inputs = stats
        return self._inputs

    def _measured_standardisation(self, layer):
        """Scalar statistics, or per-feature ones for tabular inputs whose features differ in scale."""
        features, _, shape = sample_arrays(self._train_dataset, 2000)
        mean, std = float(features.mean()), float(features.std())
        from ..nn.linear import Linear

        if isinstance(layer, Linear) and len(shape) == 1 and features.shape[1] <= _MAX_TABULAR_FEATURES:
            stds = features.std(axis=0)
            positive = stds[stds > 1e-8]
            if len(positive) and positive.max() > 10 * positive.min():
                # a floor keeps a rarely-varying feature from being blown up (and its weights' steps with it)
                floor = 0.1 * float(np.median(positive))
                return features.mean(axis=0), np.maximum(stds, floor)
        if std <= 0:
            raise Refused("the inputs are constant")
        return mean, std

    def _fold_standardizer(self) -> None:
        self._standardizer.fold(self.optimizer)
        self._sync_best_coordinates()
        self._snapshot()

    def _accept_epoch(self, metrics):
        super()._accept_epoch(metrics)
        if self.best_epoch == self.epoch:  # stored just now, in the coordinates the model is in
            self._best_coordinates = self._active_standardizer()

    def _active_standardizer(self) -> InputStandardizer | None:
        s = self._standardizer
        return s if s is not None and s.active else None

    def _sync_best_coordinates(self) -> None:
        """Keep the stored best weights in the coordinates the model is in (raw, or standardised inputs)."""
        target = self._active_standardizer()
        if self.best_state is None or self._best_coordinates is target:
            self._best_coordinates = target
            return
        if self._best_coordinates is not None:
            self._best_coordinates.convert_state(self.best_state, to_standardised=False)
        if target is not None:
            target.convert_state(self.best_state, to_standardised=True)
        self._best_coordinates = target

    def _prepare(self, batch):
        x, y = super()._prepare(batch)
        if self._standardizer is not None and self._standardizer.active:
            x = self._standardizer(x)
        return x, y

    def predict(self, inputs) -> Tensor:
        if self._standardizer is not None and self._standardizer.active:
            from .trainer import move_to_device

            inputs = self._standardizer(move_to_device(inputs, self.device))
        return super().predict(inputs)


def _show_stats(mean, std) -> str:
    if np.ndim(mean):
        return f"per-feature statistics over {np.size(mean)} features"
    return f"mean {float(mean):.4g}, std {float(std):.4g}"
