"""Reordering ops: ``roll``, ``fliplr``/``flipud`` and ``t`` (matrix transpose), as in PyTorch.

``roll`` returns a copy; its gradient is the output gradient rolled back.
``t`` leaves 0-D and 1-D tensors as they are and transposes a matrix.
"""

from __future__ import annotations

from ..autograd.function import ArrayFunction
from ..tensor import Tensor
from ._util import normalize_dim
from .shape import flip, transpose

__all__ = ["fliplr", "flipud", "roll", "t"]


class Roll(ArrayFunction):
    @staticmethod
    def forward(ctx, x, shifts, axes):
        ctx.meta = (shifts, axes)
        return ctx.xp.roll(x, shifts, axis=axes)

    @staticmethod
    def backward(ctx, g):
        shifts, axes = ctx.meta
        return ctx.xp.roll(g, tuple(-s for s in shifts), axis=axes), None, None


def _int_tuple(value, name: str) -> tuple:
    items = tuple(value) if isinstance(value, (list, tuple)) else (value,)
    for item in items:
        if isinstance(item, bool) or not isinstance(item, int):
            raise TypeError(f"roll(): {name} must be ints or a sequence of ints, got {value!r}")
    return items


def roll(input, shifts, dims=None):
    """Shift elements along ``dims`` by ``shifts`` (wrapping around); with ``dims=None`` over the flattened tensor."""
    if not isinstance(input, Tensor):
        raise TypeError(f"roll(): argument 'input' must be a Tensor, not {type(input).__name__}")
    shifts = _int_tuple(shifts, "shifts")
    if dims is None:
        if len(shifts) != 1:
            raise RuntimeError(f"roll(): shifts must have one element when dims is not given, got {len(shifts)}")
        shape = input.shape
        return Roll.apply(input.reshape(-1), shifts, (0,)).reshape(shape)
    dims = _int_tuple(dims, "dims")
    if len(shifts) != len(dims):
        raise RuntimeError(f"shifts and dimensions must align. shifts: {len(shifts)}, dims: {len(dims)}")
    ndim = max(input._data.ndim, 1)
    axes = tuple(normalize_dim(d, ndim) for d in dims)
    if input._data.ndim == 0:
        return input.clone()
    return Roll.apply(input, shifts, axes)


def fliplr(input):
    """Reverse the columns (dim 1) of a tensor with at least 2 dims."""
    if input._data.ndim < 2:
        raise RuntimeError(f"fliplr(): input must be >= 2-D, got a {input._data.ndim}-D tensor")
    return flip(input, (1,))


def flipud(input):
    """Reverse the rows (dim 0) of a tensor with at least 1 dim."""
    if input._data.ndim < 1:
        raise RuntimeError("flipud(): input must be >= 1-D, got a 0-D tensor")
    return flip(input, (0,))


def t(input):
    """The transpose of a matrix; 0-D and 1-D tensors are returned as they are (``torch.t``)."""
    ndim = input._data.ndim
    if ndim > 2:
        raise RuntimeError(f"t() expects a tensor with <= 2 dimensions, but self is {ndim}D")
    if ndim < 2:
        return input
    return transpose(input, 0, 1)
