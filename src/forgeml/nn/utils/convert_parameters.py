"""One flat vector from many parameters, and back."""

from __future__ import annotations

import numpy as np

from ...autograd.grad_mode import no_grad
from ...ops.shape import cat
from ...tensor import Tensor

__all__ = ["parameters_to_vector", "vector_to_parameters"]


def parameters_to_vector(parameters) -> Tensor:
    """The parameters flattened and joined into one 1-D tensor (differentiable)."""
    params = [parameters] if isinstance(parameters, Tensor) else list(parameters)
    if not params:
        raise ValueError("parameters_to_vector needs at least one parameter")
    return cat([p.reshape(-1) for p in params])


def vector_to_parameters(vec: Tensor, parameters) -> None:
    """Copy consecutive slices of ``vec`` into the parameters (in place, not recorded)."""
    if not isinstance(vec, Tensor) or vec.ndim != 1:
        raise TypeError(f"expected a 1-D Tensor, got {type(vec).__name__} of shape {getattr(vec, 'shape', None)}")
    params = [parameters] if isinstance(parameters, Tensor) else list(parameters)
    total = sum(p.numel() for p in params)
    if total != vec.numel():
        raise ValueError(f"the vector has {vec.numel()} elements but the parameters need {total}")
    offset = 0
    with no_grad():
        for p in params:
            n = p.numel()
            p.data[...] = np.reshape(vec.data[offset : offset + n], p.shape)
            p._bump_version()
            offset += n
