"""``GradScaler``: loss scaling for float16 training, with ``torch.amp.GradScaler``'s semantics.

Multiply the loss by a large factor before ``backward`` so small float16
gradients do not flush to zero; before the optimizer steps, divide the
gradients by it again and skip the step when any is inf or NaN; after each
step, shrink the factor when a step was skipped and grow it after
``growth_interval`` clean steps::

    scaler = forgeml.amp.GradScaler("cuda")
    with forgeml.autocast("cuda", dtype=forgeml.float16):
        loss = loss_fn(model(x), y)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
"""

from __future__ import annotations

import warnings

from ..autograd.grad_mode import no_grad
from ..backend.device import as_device, cuda_is_available, namespace_of
from ..tensor import Tensor

__all__ = ["GradScaler"]

_READY, _UNSCALED, _STEPPED = "ready", "unscaled", "stepped"


class GradScaler:
    """Dynamic loss scaling (``torch.amp.GradScaler``).

    Args:
        device: where the training runs (``'cuda'`` by default, as in PyTorch; ``'cpu'`` works too).
        init_scale: the first scale factor.
        growth_factor: the factor's multiplier after ``growth_interval`` steps without inf/NaN gradients.
        backoff_factor: its multiplier after a step whose gradients held inf or NaN (the step is skipped).
        growth_interval: clean steps between growths.
        enabled: False makes every method a pass-through (``scale`` returns its input, ``step`` just steps).
    """

    def __init__(
        self,
        device: str = "cuda",
        init_scale: float = 2.0**16,
        growth_factor: float = 2.0,
        backoff_factor: float = 0.5,
        growth_interval: int = 2000,
        enabled: bool = True,
    ) -> None:
        self._device = as_device(device)
        if enabled and self._device.type == "cuda" and not cuda_is_available():
            warnings.warn(
                "forgeml.amp.GradScaler is enabled, but CUDA is not available. Disabling.", UserWarning, stacklevel=2
            )
            enabled = False
        if growth_factor <= 1.0:
            raise ValueError(f"growth_factor should be > 1, got {growth_factor}")
        if not 0.0 < backoff_factor < 1.0:
            raise ValueError(f"backoff_factor should be in (0, 1), got {backoff_factor}")
        if not isinstance(growth_interval, int) or growth_interval <= 0:
            raise ValueError(f"growth_interval should be a positive int, got {growth_interval!r}")
        self._enabled = bool(enabled)
        self._scale = float(init_scale)
        self._growth_factor = float(growth_factor)
        self._backoff_factor = float(backoff_factor)
        self._growth_interval = growth_interval
        self._growth_tracker = 0
        self._per_optimizer: dict[int, dict] = {}

    # -- scaling --------------------------------------------------------------
    def scale(self, outputs):
        """``outputs`` (a tensor, or nested lists/tuples of them) multiplied by the current scale."""
        if not self._enabled:
            return outputs
        if isinstance(outputs, Tensor):
            return outputs * self._scale
        if isinstance(outputs, (list, tuple)):
            return type(outputs)(self.scale(o) for o in outputs)
        raise ValueError(f"outputs must be a Tensor or an iterable of Tensors, got {type(outputs).__name__}")

    def _state(self, optimizer) -> dict:
        return self._per_optimizer.setdefault(id(optimizer), {"stage": _READY, "found_inf": None})

    def unscale_(self, optimizer) -> None:
        """Divide ``optimizer``'s gradients by the scale in place and note whether any is inf/NaN.

        Call it before clipping gradients; ``step`` calls it when you have not.
        """
        if not self._enabled:
            return
        state = self._state(optimizer)
        if state["stage"] == _UNSCALED:
            raise RuntimeError("unscale_() has already been called on this optimizer since the last update().")
        if state["stage"] == _STEPPED:
            raise RuntimeError("unscale_() is being called after step().")
        inv_scale = 1.0 / self._scale
        flags: dict = {}  # namespace -> one non-finite flag per gradient, read back once (one sync per device)
        with no_grad():
            for group in optimizer.param_groups:
                for p in group["params"]:
                    grad = p.grad
                    if grad is None:
                        continue
                    g = grad._data
                    if g.dtype.itemsize < 4:
                        raise ValueError("Attempting to unscale FP16 gradients.")
                    g *= g.dtype.type(inv_scale)
                    grad._bump_version()
                    xp = namespace_of(g)
                    flags.setdefault(xp, []).append(~xp.isfinite(g).all())
        state["found_inf"] = any(bool(xp.stack(f).any()) for xp, f in flags.items())
        state["stage"] = _UNSCALED

    def step(self, optimizer, *args, **kwargs):
        """Unscale (if not done yet), then ``optimizer.step()`` unless a gradient is inf/NaN; returns its result."""
        if not self._enabled:
            return optimizer.step(*args, **kwargs)
        if "closure" in kwargs:
            raise RuntimeError("Closure use is not currently supported if GradScaler is enabled.")
        state = self._state(optimizer)
        if state["stage"] == _STEPPED:
            raise RuntimeError("step() has already been called since the last update().")
        if state["stage"] == _READY:
            self.unscale_(optimizer)
        result = None
        if not state["found_inf"]:
            result = optimizer.step(*args, **kwargs)
        state["stage"] = _STEPPED
        return result

    def update(self, new_scale=None) -> None:
        """Adjust the scale for the next iteration (or set it to ``new_scale``) and reset the per-step state."""
        if not self._enabled:
            return
        if new_scale is not None:
            value = new_scale.item() if isinstance(new_scale, Tensor) else new_scale
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise ValueError("new_scale should be a float or a 1-element tensor")
            self._scale = float(value)
        else:
            checked = [s["found_inf"] for s in self._per_optimizer.values() if s["found_inf"] is not None]
            if not checked:
                raise RuntimeError("No inf checks were recorded prior to update.")
            if any(checked):
                self._scale *= self._backoff_factor
                self._growth_tracker = 0
            else:
                self._growth_tracker += 1
                if self._growth_tracker == self._growth_interval:
                    self._scale *= self._growth_factor
                    self._growth_tracker = 0
        self._per_optimizer = {}

    # -- inspection and state --------------------------------------------------------
    def get_scale(self) -> float:
        return self._scale if self._enabled else 1.0

    def get_growth_factor(self) -> float:
        return self._growth_factor

    def set_growth_factor(self, new_factor: float) -> None:
        self._growth_factor = float(new_factor)

    def get_backoff_factor(self) -> float:
        return self._backoff_factor

    def set_backoff_factor(self, new_factor: float) -> None:
        self._backoff_factor = float(new_factor)

    def get_growth_interval(self) -> int:
        return self._growth_interval

    def set_growth_interval(self, new_interval: int) -> None:
        self._growth_interval = int(new_interval)

    def is_enabled(self) -> bool:
        return self._enabled

    def state_dict(self) -> dict:
        """The scale and its schedule (empty when disabled), for checkpoints."""
        if not self._enabled:
            return {}
        return {
            "scale": self._scale,
            "growth_factor": self._growth_factor,
            "backoff_factor": self._backoff_factor,
            "growth_interval": self._growth_interval,
            "_growth_tracker": self._growth_tracker,
        }

    def load_state_dict(self, state_dict: dict) -> None:
        if not self._enabled:
            return
        if len(state_dict) == 0:
            raise RuntimeError(
                "The source state dict is empty, possibly because it was saved from a disabled instance of GradScaler."
            )
        self._scale = float(state_dict["scale"])
        self._growth_factor = float(state_dict["growth_factor"])
        self._backoff_factor = float(state_dict["backoff_factor"])
        self._growth_interval = int(state_dict["growth_interval"])
        self._growth_tracker = int(state_dict["_growth_tracker"])
