"""One flat vector from many parameters, and back."""

from __future__ import annotations

from ...autograd.grad_mode import no_grad
from ...backend.device import to_device
from ...ops.shape import cat
from ...tensor import Tensor

__all__ = ["parameters_to_vector", "vector_to_parameters"]


def _check_one_device(params, name: str) -> None:
    device = None
    for p in params:
        if not isinstance(p, Tensor):
            raise TypeError(f"{name} expects Tensors, got {type(p).__name__}")
        if device is None:
            device = p.device
        elif p.device != device:
            raise TypeError(
                f"{name}: found parameters on two devices ({device} and {p.device}); expected all on one device"
            )


def parameters_to_vector(parameters) -> Tensor:
    """The parameters flattened and joined into one 1-D tensor on their device (differentiable)."""
    params = [parameters] if isinstance(parameters, Tensor) else list(parameters)
    if not params:
        raise ValueError("parameters_to_vector needs at least one parameter")
    _check_one_device(params, "parameters_to_vector")
    return cat([p.reshape(-1) for p in params])


def vector_to_parameters(vec: Tensor, parameters) -> None:
    """Copy consecutive slices of ``vec`` into the parameters (in place, not recorded).

    Each slice is converted to its parameter's dtype and device, so the
    parameters stay where they are (and optimizers keep pointing at them).
    """
    if not isinstance(vec, Tensor) or vec.ndim != 1:
        raise TypeError(f"expected a 1-D Tensor, got {type(vec).__name__} of shape {getattr(vec, 'shape', None)}")
    params = [parameters] if isinstance(parameters, Tensor) else list(parameters)
    _check_one_device(params, "vector_to_parameters")
    total = sum(p.numel() for p in params)
    if total != vec.numel():
        raise ValueError(f"the vector has {vec.numel()} elements but the parameters need {total}")
    offset = 0
    with no_grad():
        for p in params:
            n = p.numel()
            chunk = vec._data[offset : offset + n].reshape(p.shape).astype(p._data.dtype, copy=False)
            p._data[...] = to_device(chunk, p.device)
            p._bump_version()
            offset += n
