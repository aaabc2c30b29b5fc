"""Reductions: sum, mean, var/std, max/min/amax/amin, prod, logsumexp, norm, argmax/argmin.

``dim`` is an int, a tuple of ints or None (every dim); ``keepdim`` keeps the
reduced dims with size 1. Gradients of ``max()``/``amax`` split evenly among
tied elements; ``max(dim)`` sends the gradient to the returned index. Each op
computes through ``ctx.xp``, so it runs on the device of its input; under
``forgeml.autocast``, ``sum``, ``prod``, ``norm`` and ``logsumexp`` run in
float32 (PyTorch's float32 list).
"""

from __future__ import annotations

import builtins
import math
from collections import namedtuple

from ..autograd.function import ArrayFunction
from ..backend.device import ignore_float_errors, namespace_of
from ..backend.dtypes import as_dtype, is_float
from ..tensor import Tensor
from . import _autocast
from ._util import normalize_dim, normalize_dims

__all__ = [
    "amax",
    "amin",
    "argmax",
    "argmin",
    "logsumexp",
    "max",
    "mean",
    "min",
    "norm",
    "prod",
    "std",
    "sum",
    "var",
]

MaxMin = namedtuple("MaxMin", ["values", "indices"])

_INT64 = as_dtype("int64").numpy
_autocast_state = _autocast.state


def _dims(input: Tensor, dim):
    if isinstance(dim, (list, tuple)) and len(dim) == 0:
        dim = None
    return normalize_dims(dim, input._data.ndim)


def _expand_grad(xp, g, shape, axes, keepdim):
    """Broadcast a reduction's output gradient back over the reduced ``axes`` of ``shape``."""
    if not keepdim and axes:
        g = xp.expand_dims(g, axes)
    return xp.broadcast_to(g, shape)


def _kept(xp, g, axes, keepdim):
    """A reduction's output (or its gradient) with the reduced dims present, as size 1."""
    return g if keepdim or not axes else xp.expand_dims(g, axes)


def _dropped(out_k, axes, keepdim):
    """A reduction computed with ``keepdims=True``, shaped as the caller asked."""
    return out_k if keepdim else out_k.squeeze(axis=axes)


def _count(shape, axes) -> int:
    n = 1
    for a in axes:
        n *= shape[a]
    return n


class Sum(ArrayFunction):
    @staticmethod
    def forward(ctx, x, axes, keepdim, dtype):
        ctx.meta = (x.shape, axes, keepdim)
        return x.sum(axis=axes, keepdims=keepdim, dtype=dtype)

    @staticmethod
    def backward(ctx, g):
        shape, axes, keepdim = ctx.meta
        xp = ctx.xp
        if len(axes) == len(shape):
            return xp.full(shape, g, dtype=g.dtype), None, None, None
        return _expand_grad(xp, g, shape, axes, keepdim), None, None, None


class Mean(ArrayFunction):
    @staticmethod
    def forward(ctx, x, axes, keepdim):
        ctx.meta = (x.shape, axes, keepdim)
        return x.mean(axis=axes, keepdims=keepdim)

    @staticmethod
    def backward(ctx, g):
        shape, axes, keepdim = ctx.meta
        xp = ctx.xp
        g = g / _count(shape, axes) if axes else g
        if len(axes) == len(shape):
            return xp.full(shape, g, dtype=g.dtype), None, None
        return _expand_grad(xp, g, shape, axes, keepdim), None, None


class Var(ArrayFunction):
    @staticmethod
    def forward(ctx, x, axes, correction, keepdim, take_sqrt):
        centered = x - x.mean(axis=axes, keepdims=True)
        dof = _count(x.shape, axes) - correction
        with ignore_float_errors():
            out_k = (centered * centered).sum(axis=axes, keepdims=True) / builtins.max(dof, 0)
        if take_sqrt:
            out_k = ctx.xp.sqrt(out_k)
        ctx.save_for_backward(centered, out_k if take_sqrt else None)
        ctx.meta = (axes, keepdim, dof)
        out_k = out_k.astype(x.dtype, copy=False)
        return _dropped(out_k, axes, keepdim)

    @staticmethod
    def backward(ctx, g):
        centered, std_k = ctx.saved_tensors
        axes, keepdim, dof = ctx.meta
        g_k = _kept(ctx.xp, g, axes, keepdim)
        with ignore_float_errors():
            if std_k is not None:
                g_k = g_k / (2 * std_k)
            grad = g_k * centered * (2.0 / dof if dof > 0 else math.nan)
        return grad.astype(centered.dtype, copy=False), None, None, None, None


def _tie_mask_grad(xp, x, out, g, axes, keepdim):
    """Gradient of amax/amin: shared evenly among the elements equal to the extreme."""
    mask = x == _kept(xp, out, axes, keepdim)
    count = mask.sum(axis=axes, keepdims=True)
    return mask * (_kept(xp, g, axes, keepdim) / count)


class AMax(ArrayFunction):
    @staticmethod
    def forward(ctx, x, axes, keepdim, largest):
        out = x.max(axis=axes, keepdims=keepdim) if largest else x.min(axis=axes, keepdims=keepdim)
        ctx.save_for_backward(x, out)
        ctx.meta = (axes, keepdim)
        return out

    @staticmethod
    def backward(ctx, g):
        x, out = ctx.saved_tensors
        axes, keepdim = ctx.meta
        return _tie_mask_grad(ctx.xp, x, out, g, axes, keepdim).astype(g.dtype, copy=False), None, None, None


class MaxDim(ArrayFunction):
    """max/min along one dim: the values; the gradient goes to the index that was returned."""

    @staticmethod
    def forward(ctx, x, indices, dim, keepdim):
        xp = ctx.xp
        idx_k = xp.expand_dims(indices, dim)
        out = xp.take_along_axis(x, idx_k, axis=dim)
        if not keepdim:
            out = out.squeeze(axis=dim)
        ctx.save_for_backward(idx_k)
        ctx.meta = (x.shape, dim)
        return out

    @staticmethod
    def backward(ctx, g):
        (idx_k,) = ctx.saved_tensors
        shape, dim = ctx.meta
        xp = ctx.xp
        grad = xp.zeros(shape, dtype=g.dtype)
        xp.put_along_axis(grad, idx_k, g.reshape(idx_k.shape), axis=dim)
        return grad, None, None, None


class Prod(ArrayFunction):
    @staticmethod
    def forward(ctx, x, axes, keepdim, dtype):
        out = x.prod(axis=axes, keepdims=keepdim, dtype=dtype)
        ctx.save_for_backward(x)
        ctx.meta = (axes, keepdim)
        return out

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        axes, keepdim = ctx.meta
        xp = ctx.xp
        is_zero = x == 0
        x_nz = xp.where(is_zero, 1, x)
        prod_nz = x_nz.prod(axis=axes, keepdims=True)
        zeros = is_zero.sum(axis=axes, keepdims=True)
        others = xp.where(zeros == 0, prod_nz / x_nz, xp.where((zeros == 1) & is_zero, prod_nz, 0))
        return (_kept(xp, g, axes, keepdim) * others).astype(g.dtype, copy=False), None, None, None


class LogSumExp(ArrayFunction):
    @staticmethod
    def forward(ctx, x, axes, keepdim):
        xp = ctx.xp
        m = x.max(axis=axes, keepdims=True)
        m = xp.where(xp.isfinite(m), m, 0)
        out_k = xp.log(xp.exp(x - m).sum(axis=axes, keepdims=True)) + m
        ctx.save_for_backward(x, out_k)
        ctx.meta = (axes, keepdim)
        return _dropped(out_k, axes, keepdim)

    @staticmethod
    def backward(ctx, g):
        x, out_k = ctx.saved_tensors
        axes, keepdim = ctx.meta
        xp = ctx.xp
        return _kept(xp, g, axes, keepdim) * xp.exp(x - out_k), None, None


class Norm2(ArrayFunction):
    @staticmethod
    def forward(ctx, x, axes, keepdim):
        out_k = ctx.xp.sqrt((x * x).sum(axis=axes, keepdims=True))
        ctx.save_for_backward(x, out_k)
        ctx.meta = (axes, keepdim)
        return _dropped(out_k, axes, keepdim)

    @staticmethod
    def backward(ctx, g):
        x, out_k = ctx.saved_tensors
        axes, keepdim = ctx.meta
        xp = ctx.xp
        g_k = _kept(xp, g, axes, keepdim)
        safe = xp.where(out_k == 0, 1, out_k)
        return xp.where(out_k == 0, 0, g_k * x / safe).astype(x.dtype, copy=False), None, None


# ------------------------------------------------------------------ functions
def _require_float(input: Tensor, name: str):
    if not is_float(input._data.dtype):
        raise RuntimeError(
            f"{name}(): could not infer output dtype. Input dtype must be a floating point dtype. Got: {input.dtype}"
        )


def sum(input, dim=None, keepdim: bool = False, *, dtype=None):
    """Sum over ``dim`` (all dims by default); integer and bool inputs sum to int64."""
    if _autocast_state.active:
        (input,) = _autocast.full(input)
    axes = _dims(input, dim)
    np_dtype = as_dtype(dtype).numpy if dtype is not None else None
    if np_dtype is None and input._data.dtype.kind in "biu":
        np_dtype = _INT64
    return Sum.apply(input, axes, keepdim, np_dtype)


def mean(input, dim=None, keepdim: bool = False, *, dtype=None):
    if dtype is not None:
        input = input.to(dtype)
    _require_float(input, "mean")
    return Mean.apply(input, _dims(input, dim), keepdim)


def _correction(correction, unbiased):
    if unbiased is not None:
        if correction is not None:
            raise ValueError("pass either correction or unbiased, not both")
        return 1 if unbiased else 0
    return 1 if correction is None else correction


def var(input, dim=None, *, correction=None, keepdim: bool = False, unbiased=None):
    """Variance over ``dim`` with Bessel's ``correction`` (1 by default: the sample variance)."""
    _require_float(input, "var")
    return Var.apply(input, _dims(input, dim), _correction(correction, unbiased), keepdim, False)


def std(input, dim=None, *, correction=None, keepdim: bool = False, unbiased=None):
    _require_float(input, "std")
    return Var.apply(input, _dims(input, dim), _correction(correction, unbiased), keepdim, True)


def amax(input, dim=(), keepdim: bool = False):
    """Largest value over ``dim``; the gradient is split evenly among ties."""
    _check_nonempty(input, "amax", dim)
    return AMax.apply(input, _dims(input, dim), keepdim, True)


def amin(input, dim=(), keepdim: bool = False):
    _check_nonempty(input, "amin", dim)
    return AMax.apply(input, _dims(input, dim), keepdim, False)


def _check_nonempty(input, name, dim):
    if input._data.size == 0:
        raise RuntimeError(f"{name}(): cannot reduce an empty tensor of shape {list(input.shape)} (dim={dim})")


def _max_min(input, dim, keepdim, other, largest, name):
    if isinstance(dim, Tensor) or other is not None:
        from .elementwise import maximum, minimum

        other = dim if isinstance(dim, Tensor) else other
        return maximum(input, other) if largest else minimum(input, other)
    _check_nonempty(input, name, dim)
    if dim is None:
        return AMax.apply(input, tuple(range(input._data.ndim)), False, largest)
    data = input._data
    d = normalize_dim(dim, data.ndim) if data.ndim else 0
    xp = namespace_of(data)
    if data.ndim == 0:
        return MaxMin(input.clone(), Tensor._make(xp.zeros((), dtype=_INT64), False, None))
    indices = data.argmax(axis=d) if largest else data.argmin(axis=d)
    values = MaxDim.apply(input, indices, d, keepdim)
    idx = xp.expand_dims(indices, d) if keepdim else indices
    return MaxMin(values, Tensor._make(idx.astype(_INT64, copy=False), False, None))


def max(input, dim=None, keepdim: bool = False, *, other=None):
    """``max()`` the largest value; ``max(dim)`` a ``(values, indices)`` pair; ``max(other)`` elementwise."""
    return _max_min(input, dim, keepdim, other, True, "max")


def min(input, dim=None, keepdim: bool = False, *, other=None):
    return _max_min(input, dim, keepdim, other, False, "min")


def argmax(input, dim=None, keepdim: bool = False):
    return _arg(input, dim, keepdim, True, "argmax")


def argmin(input, dim=None, keepdim: bool = False):
    return _arg(input, dim, keepdim, False, "argmin")


def _arg(input, dim, keepdim, largest, name):
    _check_nonempty(input, name, dim)
    data = input._data
    xp = namespace_of(data)
    if dim is None:
        out = xp.asarray(data.argmax() if largest else data.argmin())
        if keepdim:
            out = out.reshape((1,) * data.ndim)
    elif data.ndim == 0:
        out = xp.zeros((), dtype=_INT64)
    else:
        d = normalize_dim(dim, data.ndim)
        out = xp.asarray(data.argmax(axis=d) if largest else data.argmin(axis=d))
        if keepdim:
            out = xp.expand_dims(out, d)
    return Tensor._make(out.astype(_INT64, copy=False), False, None)


def prod(input, dim=None, keepdim: bool = False, *, dtype=None):
    """Product over ``dim`` (one int, or all dims); the gradient is exact when inputs contain zeros."""
    if _autocast_state.active:
        (input,) = _autocast.full(input)
    if isinstance(dim, (list, tuple)):
        raise TypeError("prod(): dim must be a single int or None, as in PyTorch")
    axes = _dims(input, dim)
    np_dtype = as_dtype(dtype).numpy if dtype is not None else None
    if np_dtype is None and input._data.dtype.kind in "biu":
        np_dtype = _INT64
    return Prod.apply(input, axes, keepdim, np_dtype)


def logsumexp(input, dim, keepdim: bool = False):
    """``log(sum(exp(input), dim))``, computed without overflow."""
    if _autocast_state.active:
        (input,) = _autocast.full(input)
    _require_float(input, "logsumexp")
    return LogSumExp.apply(input, _dims(input, dim), keepdim)


def norm(input, p="fro", dim=None, keepdim: bool = False, *, out=None, dtype=None):
    """The vector p-norm over ``dim`` (all elements by default): ``p`` = 2/'fro', 1, inf, -inf, 0 or any float.

    With ``dtype`` the input is cast to it first, as in PyTorch; ``out=`` is not supported.
    """
    if out is not None:
        raise NotImplementedError("norm: the out= argument is not supported")
    if dtype is not None:
        input = input.to(dtype)
    if _autocast_state.active:
        (input,) = _autocast.full(input)
    _require_float(input, "norm")
    axes = _dims(input, dim)
    if p in ("fro", 2, 2.0):
        return Norm2.apply(input, axes, keepdim)
    from .elementwise import abs as abs_

    a = abs_(input)
    if p in (float("inf"), "inf"):
        return amax(a, axes, keepdim)
    if p in (float("-inf"), "-inf"):
        return amin(a, axes, keepdim)
    if p == 1:
        return sum(a, axes, keepdim)
    if p == 0:
        return sum((a != 0).to(input.dtype), axes, keepdim)
    if isinstance(p, str):
        raise ValueError(f"norm: unsupported p={p!r}; expected 'fro', a number, or inf")
    return sum(a**p, axes, keepdim) ** (1.0 / p)
