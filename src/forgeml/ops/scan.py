"""Scans: ``cumsum`` and ``cumprod`` along one dim.

Integer and bool inputs accumulate in int64, as in PyTorch; ``dtype=`` casts
the input first. The gradient of ``cumprod`` is exact when the input holds
zeros: along each line, positions before the first zero get the usual
``revcumsum(g * out) / x``, the first zero gets the products that skip it, and
positions after it get zero.
"""

from __future__ import annotations

from ..autograd.function import ArrayFunction
from ..backend.dtypes import as_dtype
from ..tensor import Tensor
from ._util import normalize_dim

__all__ = ["cumprod", "cumsum"]

_INT64 = as_dtype("int64").numpy


def _reverse_cumsum(xp, a, axis: int):
    return xp.flip(xp.cumsum(xp.flip(a, axis=axis), axis=axis), axis=axis)


class CumSum(ArrayFunction):
    @staticmethod
    def forward(ctx, x, dim, dtype):
        ctx.dim = dim
        return ctx.xp.cumsum(x, axis=dim, dtype=dtype)

    @staticmethod
    def backward(ctx, g):
        return _reverse_cumsum(ctx.xp, g, ctx.dim), None, None


class CumProd(ArrayFunction):
    @staticmethod
    def forward(ctx, x, dim, dtype):
        out = ctx.xp.cumprod(x, axis=dim, dtype=dtype)
        ctx.dim = dim
        ctx.save_for_backward(x, out)
        return out

    @staticmethod
    def backward(ctx, g):
        x, out = ctx.saved_tensors
        xp = ctx.xp
        d = ctx.dim
        # work along the last axis
        x, out, g = (xp.moveaxis(a, d, -1) for a in (x, out, g))
        n = x.shape[-1]
        is_zero = x == 0
        has_zero = is_zero.any(axis=-1, keepdims=True)
        first = xp.argmax(is_zero, axis=-1)[..., None]  # the first zero (0 where there is none)
        pos = xp.arange(n).reshape((1,) * (x.ndim - 1) + (n,))
        before = (pos < first) | ~has_zero
        at_zero = (pos == first) & has_zero
        safe_x = xp.where(is_zero, 1, x)
        grad = xp.where(before, _reverse_cumsum(xp, g * out, -1) / safe_x, 0)
        # at the first zero: sum_j>=z g_j * prod_{k<=j, k!=z} x_k, the cumprod with that zero replaced by 1
        skip = xp.where(at_zero, 1, x)
        at = _reverse_cumsum(xp, g * xp.cumprod(skip, axis=-1), -1)
        grad = xp.where(at_zero, at, grad)
        return xp.moveaxis(grad.astype(g.dtype, copy=False), -1, d), None, None


def _scan(fn_cls, input, dim, dtype, name):
    if not isinstance(input, Tensor):
        raise TypeError(f"{name}(): argument 'input' must be a Tensor, not {type(input).__name__}")
    if dim is None:
        raise TypeError(f"{name}(): missing required argument 'dim'")
    if dtype is not None:
        input = input.to(dtype)
    data = input._data
    np_dtype = _INT64 if data.dtype.kind in "biu" else None
    if data.ndim == 0:
        if dim not in (0, -1):
            raise IndexError(f"{name}(): dimension out of range (expected to be in range of [-1, 0], but got {dim})")
        out = fn_cls.apply(input.reshape(1), 0, np_dtype)
        return out.reshape(())
    return fn_cls.apply(input, normalize_dim(dim, data.ndim), np_dtype)


def cumsum(input, dim, *, dtype=None):
    """Cumulative sum along ``dim``: ``out[i] = input[0] + ... + input[i]``."""
    return _scan(CumSum, input, dim, dtype, "cumsum")


def cumprod(input, dim, *, dtype=None):
    """Cumulative product along ``dim``: ``out[i] = input[0] * ... * input[i]``; exact gradients with zeros."""
    return _scan(CumProd, input, dim, dtype, "cumprod")
