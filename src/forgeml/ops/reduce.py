"""Reductions: sum, mean, var/std, max/min/amax/amin, prod, logsumexp, norm, argmax/argmin.

``dim`` is an int, a tuple of ints or None (every dim); ``keepdim`` keeps the
reduced dims with size 1. Gradients of ``max()``/``amax`` split evenly among
tied elements; ``max(dim)`` sends the gradient to the returned index.
"""

from __future__ import annotations

import builtins
from collections import namedtuple

import numpy as np

from ..autograd.function import Function
from ..backend.dtypes import as_dtype
from ..tensor import Tensor
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


def _dims(input: Tensor, dim):
    if isinstance(dim, (list, tuple)) and len(dim) == 0:
        dim = None
    return normalize_dims(dim, input.data.ndim)


def _expand_grad(g, shape, axes, keepdim):
    """Broadcast a reduction's output gradient back over the reduced ``axes`` of ``shape``."""
    if not keepdim and axes:
        g = np.expand_dims(g, axes)
    return np.broadcast_to(g, shape)


def _kept(g, axes, keepdim):
    """A reduction's output (or its gradient) with the reduced dims present, as size 1."""
    return g if keepdim or not axes else np.expand_dims(g, axes)


def _dropped(out_k, axes, keepdim):
    """A reduction computed with ``keepdims=True``, shaped as the caller asked."""
    return out_k if keepdim else np.squeeze(out_k, axis=axes)


def _count(shape, axes) -> int:
    n = 1
    for a in axes:
        n *= shape[a]
    return n


class Sum(Function):
    _raw = True

    @staticmethod
    def forward(ctx, x, axes, keepdim, dtype):
        ctx.meta = (x.shape, axes, keepdim)
        return x.sum(axis=axes, keepdims=keepdim, dtype=dtype)

    @staticmethod
    def backward(ctx, g):
        shape, axes, keepdim = ctx.meta
        if len(axes) == len(shape):
            return np.full(shape, g, dtype=g.dtype), None, None, None
        return _expand_grad(g, shape, axes, keepdim), None, None, None


class Mean(Function):
    _raw = True

    @staticmethod
    def forward(ctx, x, axes, keepdim):
        ctx.meta = (x.shape, axes, keepdim)
        return x.mean(axis=axes, keepdims=keepdim)

    @staticmethod
    def backward(ctx, g):
        shape, axes, keepdim = ctx.meta
        g = g / _count(shape, axes) if axes else g
        if len(axes) == len(shape):
            return np.full(shape, g, dtype=g.dtype), None, None
        return _expand_grad(g, shape, axes, keepdim), None, None


class Var(Function):
    _raw = True

    @staticmethod
    def forward(ctx, x, axes, correction, keepdim, take_sqrt):
        centered = x - x.mean(axis=axes, keepdims=True)
        dof = _count(x.shape, axes) - correction
        with np.errstate(divide="ignore", invalid="ignore"):
            out_k = (centered * centered).sum(axis=axes, keepdims=True) / builtins.max(dof, 0)
        if take_sqrt:
            out_k = np.sqrt(out_k)
        ctx.save_for_backward(centered, out_k if take_sqrt else None)
        ctx.meta = (axes, keepdim, dof)
        out_k = out_k.astype(x.dtype, copy=False)
        return _dropped(out_k, axes, keepdim)

    @staticmethod
    def backward(ctx, g):
        centered, std_k = ctx.saved_tensors
        axes, keepdim, dof = ctx.meta
        g_k = _kept(g, axes, keepdim)
        with np.errstate(divide="ignore", invalid="ignore"):
            if std_k is not None:
                g_k = g_k / (2 * std_k)
            grad = g_k * centered * (2.0 / dof if dof > 0 else np.nan)
        return grad.astype(centered.dtype, copy=False), None, None, None, None


def _tie_mask_grad(x, out, g, axes, keepdim):
    """Gradient of amax/amin: shared evenly among the elements equal to the extreme."""
    mask = x == _kept(out, axes, keepdim)
    count = mask.sum(axis=axes, keepdims=True)
    return mask * (_kept(g, axes, keepdim) / count)


class AMax(Function):
    _raw = True

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
        return _tie_mask_grad(x, out, g, axes, keepdim).astype(g.dtype, copy=False), None, None, None


class MaxDim(Function):
    """max/min along one dim: the values; the gradient goes to the index that was returned."""

    _raw = True

    @staticmethod
    def forward(ctx, x, indices, dim, keepdim):
        idx_k = np.expand_dims(indices, dim)
        out = np.take_along_axis(x, idx_k, axis=dim)
        if not keepdim:
            out = np.squeeze(out, axis=dim)
        ctx.save_for_backward(idx_k)
        ctx.meta = (x.shape, dim)
        return out

    @staticmethod
    def backward(ctx, g):
        (idx_k,) = ctx.saved_tensors
        shape, dim = ctx.meta
        grad = np.zeros(shape, dtype=g.dtype)
        np.put_along_axis(grad, idx_k, g.reshape(idx_k.shape), axis=dim)
        return grad, None, None, None


class Prod(Function):
    _raw = True

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
        is_zero = x == 0
        x_nz = np.where(is_zero, 1, x)
        prod_nz = x_nz.prod(axis=axes, keepdims=True)
        zeros = is_zero.sum(axis=axes, keepdims=True)
        others = np.where(zeros == 0, prod_nz / x_nz, np.where((zeros == 1) & is_zero, prod_nz, 0))
        return (_kept(g, axes, keepdim) * others).astype(g.dtype, copy=False), None, None, None


class LogSumExp(Function):
    _raw = True

    @staticmethod
    def forward(ctx, x, axes, keepdim):
        m = x.max(axis=axes, keepdims=True)
        m = np.where(np.isfinite(m), m, 0)
        out_k = np.log(np.exp(x - m).sum(axis=axes, keepdims=True)) + m
        ctx.save_for_backward(x, out_k)
        ctx.meta = (axes, keepdim)
        return _dropped(out_k, axes, keepdim)

    @staticmethod
    def backward(ctx, g):
        x, out_k = ctx.saved_tensors
        axes, keepdim = ctx.meta
        return _kept(g, axes, keepdim) * np.exp(x - out_k), None, None


class Norm2(Function):
    _raw = True

    @staticmethod
    def forward(ctx, x, axes, keepdim):
        out_k = np.sqrt((x * x).sum(axis=axes, keepdims=True))
        ctx.save_for_backward(x, out_k)
        ctx.meta = (axes, keepdim)
        return _dropped(out_k, axes, keepdim)

    @staticmethod
    def backward(ctx, g):
        x, out_k = ctx.saved_tensors
        axes, keepdim = ctx.meta
        g_k = _kept(g, axes, keepdim)
        safe = np.where(out_k == 0, 1, out_k)
        return np.where(out_k == 0, 0, g_k * x / safe).astype(x.dtype, copy=False), None, None


# ------------------------------------------------------------------ functions
def _require_float(input: Tensor, name: str):
    if input.data.dtype.kind != "f":
        raise RuntimeError(
            f"{name}(): could not infer output dtype. Input dtype must be a floating point dtype. Got: {input.dtype}"
        )


def sum(input, dim=None, keepdim: bool = False, *, dtype=None):
    """Sum over ``dim`` (all dims by default); integer and bool inputs sum to int64."""
    axes = _dims(input, dim)
    np_dtype = as_dtype(dtype).numpy if dtype is not None else None
    if np_dtype is None and input.data.dtype.kind in "biu":
        np_dtype = np.int64
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
    if input.data.size == 0:
        raise RuntimeError(f"{name}(): cannot reduce an empty tensor of shape {list(input.shape)} (dim={dim})")


def _max_min(input, dim, keepdim, other, largest, name):
    if isinstance(dim, Tensor) or other is not None:
        from .elementwise import maximum, minimum

        other = dim if isinstance(dim, Tensor) else other
        return maximum(input, other) if largest else minimum(input, other)
    _check_nonempty(input, name, dim)
    if dim is None:
        return AMax.apply(input, tuple(range(input.data.ndim)), False, largest)
    d = normalize_dim(dim, input.data.ndim) if input.data.ndim else 0
    if input.data.ndim == 0:
        return MaxMin(input.clone(), Tensor._make(np.zeros((), dtype=np.int64), False, None))
    arg = np.argmax if largest else np.argmin
    indices = arg(input.data, axis=d)
    values = MaxDim.apply(input, indices, d, keepdim)
    idx = np.expand_dims(indices, d) if keepdim else indices
    return MaxMin(values, Tensor._make(idx.astype(np.int64, copy=False), False, None))


def max(input, dim=None, keepdim: bool = False, *, other=None):
    """``max()`` the largest value; ``max(dim)`` a ``(values, indices)`` pair; ``max(other)`` elementwise."""
    return _max_min(input, dim, keepdim, other, True, "max")


def min(input, dim=None, keepdim: bool = False, *, other=None):
    return _max_min(input, dim, keepdim, other, False, "min")


def argmax(input, dim=None, keepdim: bool = False):
    return _arg(input, dim, keepdim, np.argmax, "argmax")


def argmin(input, dim=None, keepdim: bool = False):
    return _arg(input, dim, keepdim, np.argmin, "argmin")


def _arg(input, dim, keepdim, fn, name):
    _check_nonempty(input, name, dim)
    if dim is None:
        out = np.asarray(fn(input.data))
        if keepdim:
            out = out.reshape((1,) * input.data.ndim)
    else:
        d = normalize_dim(dim, input.data.ndim) if input.data.ndim else 0
        out = np.asarray(fn(input.data, axis=d)) if input.data.ndim else np.zeros((), dtype=np.int64)
        if keepdim and input.data.ndim:
            out = np.expand_dims(out, d)
    return Tensor._make(out.astype(np.int64, copy=False), False, None)


def prod(input, dim=None, keepdim: bool = False, *, dtype=None):
    """Product over ``dim`` (one int, or all dims); the gradient is exact when inputs contain zeros."""
    if isinstance(dim, (list, tuple)):
        raise TypeError("prod(): dim must be a single int or None, as in PyTorch")
    axes = _dims(input, dim)
    np_dtype = as_dtype(dtype).numpy if dtype is not None else None
    if np_dtype is None and input.data.dtype.kind in "biu":
        np_dtype = np.int64
    return Prod.apply(input, axes, keepdim, np_dtype)


def logsumexp(input, dim, keepdim: bool = False):
    """``log(sum(exp(input), dim))``, computed without overflow."""
    _require_float(input, "logsumexp")
    return LogSumExp.apply(input, _dims(input, dim), keepdim)


def norm(input, p="fro", dim=None, keepdim: bool = False):
    """The vector p-norm over ``dim`` (all elements by default): ``p`` = 2/'fro', 1, inf, -inf, 0 or any float."""
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
