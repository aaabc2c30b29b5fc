"""How ops follow ``forgeml.autocast``: which inputs they cast, and to what.

Ops in PyTorch's "lower precision" list (matmul, linear, convolution,
attention) call :func:`lower` on their floating inputs, which casts them to
the autocast dtype of their device type; ops in its "float32" list
(reductions, softmax, norms, losses, exp/log/pow) call :func:`full` to run
in float32. Casts are differentiable, so gradients reach the float32 master
weights; a leaf's low-precision copy is cached for the autocast region, as
PyTorch's is. Ops not listed run in the dtype of their inputs.
"""

from __future__ import annotations

from ..autograd.grad_mode import state as _grad_state
from ..backend.autocast import state
from ..backend.device import HOST_ARRAY
from ..backend.dtypes import as_dtype, is_float
from ..tensor import Tensor

__all__ = ["full", "lower", "state"]

_FLOAT32 = as_dtype("float32")


def _device_type(t: Tensor) -> str:
    return "cpu" if type(t._data) is HOST_ARRAY else "cuda"


def _cast(t, dtype):
    """``t`` in ``dtype``; float64 tensors, integers and non-tensors are left alone, as PyTorch's autocast does."""
    if not isinstance(t, Tensor) or not is_float(t._data.dtype) or t._data.dtype == dtype.numpy:
        return t
    if t._data.dtype.itemsize == 8:
        return t
    cache = state.cache
    if cache is not None and t.grad_fn is None and t._requires_grad and _grad_state.enabled:
        hit = cache.get(id(t))
        if hit is not None and hit[0] is t and hit[1] == t._version_counter[0]:
            return hit[2]
        low = t.to(dtype)
        cache[id(t)] = (t, t._version_counter[0], low)
        return low
    return t.to(dtype)


def lower(*tensors):
    """``tensors`` cast to the autocast dtype of their device type (unchanged when autocast is off there)."""
    if not state.active:
        return tensors
    first = next((t for t in tensors if isinstance(t, Tensor)), None)
    if first is None:
        return tensors
    kind = _device_type(first)
    if not state.enabled[kind]:
        return tensors
    dtype = state.dtype[kind]
    return tuple(_cast(t, dtype) for t in tensors)


def full(*tensors):
    """``tensors`` cast to float32 when autocast is on for their device type (for ops that need the range)."""
    if not state.active:
        return tensors
    first = next((t for t in tensors if isinstance(t, Tensor)), None)
    if first is None or not state.enabled[_device_type(first)]:
        return tensors
    return tuple(_cast(t, _FLOAT32) for t in tensors)
