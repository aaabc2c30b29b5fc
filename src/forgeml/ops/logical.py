"""``any`` and ``all``: boolean reductions (no gradient), over all dims, one dim or a tuple of dims.

The result is bool, except for uint8 input, which gives uint8 as in PyTorch.
"""

from __future__ import annotations

from ..tensor import Tensor
from ._util import no_grad_op, normalize_dims

__all__ = ["all", "any"]


def _reduce(input, dim, keepdim, name):
    if not isinstance(input, Tensor):
        raise TypeError(f"{name}(): argument 'input' must be a Tensor, not {type(input).__name__}")
    data = input._data
    if isinstance(dim, (list, tuple)) and len(dim) == 0:
        dim = None
    axes = normalize_dims(dim, data.ndim) if data.ndim else (() if dim is None else _scalar_dims(dim))
    uint8 = data.dtype.name == "uint8"

    def compute(xp, x):
        out = getattr(xp, name)(x != 0, axis=axes, keepdims=keepdim)
        out = xp.asarray(out)
        return out.astype(x.dtype) if uint8 else out

    return no_grad_op(compute, input, name=name)


def _scalar_dims(dim):
    for d in dim if isinstance(dim, (list, tuple)) else (dim,):
        if d not in (0, -1):
            raise IndexError(f"Dimension out of range (expected to be in range of [-1, 0], but got {d})")
    return ()


def any(input, dim=None, keepdim: bool = False):
    """True where any element over ``dim`` (all dims by default; an int or a tuple) is nonzero."""
    return _reduce(input, dim, keepdim, "any")


def all(input, dim=None, keepdim: bool = False):
    """True where every element over ``dim`` (all dims by default; an int or a tuple) is nonzero."""
    return _reduce(input, dim, keepdim, "all")
