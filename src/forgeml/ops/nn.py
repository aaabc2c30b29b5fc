"""Neural-network kernels: softmax and log-softmax with fused backward passes, one-hot encoding."""

from __future__ import annotations

import numpy as np

from ..autograd.function import Function
from ..tensor import Tensor
from ._util import normalize_dim

__all__ = ["log_softmax", "one_hot", "softmax"]


def _stable_exp(x, dim):
    shifted = x - x.max(axis=dim, keepdims=True)
    return shifted, np.exp(shifted)


class Softmax(Function):
    _raw = True

    @staticmethod
    def forward(ctx, x, dim):
        _, e = _stable_exp(x, dim)
        out = e / e.sum(axis=dim, keepdims=True)
        ctx.save_for_backward(out)
        ctx.dim = dim
        return out

    @staticmethod
    def backward(ctx, g):
        (out,) = ctx.saved_tensors
        go = g * out
        return go - out * go.sum(axis=ctx.dim, keepdims=True), None


class LogSoftmax(Function):
    _raw = True

    @staticmethod
    def forward(ctx, x, dim):
        shifted, e = _stable_exp(x, dim)
        out = shifted - np.log(e.sum(axis=dim, keepdims=True))
        ctx.save_for_backward(out)
        ctx.dim = dim
        return out

    @staticmethod
    def backward(ctx, g):
        (out,) = ctx.saved_tensors
        return g - np.exp(out) * g.sum(axis=ctx.dim, keepdims=True), None


def _prepare(input, dim, dtype, name):
    if dim is None:
        raise TypeError(f"{name}() requires dim (the dimension to normalise over)")
    if dtype is not None:
        input = input.to(dtype)
    if input.data.dtype.kind != "f":
        raise RuntimeError(f"{name}(): expected a floating point tensor, got {input.dtype}")
    return input, normalize_dim(dim, max(input.data.ndim, 1))


def softmax(input, dim=None, dtype=None):
    """``exp(x) / sum(exp(x))`` along ``dim``, computed without overflow."""
    input, d = _prepare(input, dim, dtype, "softmax")
    if input.data.ndim == 0:
        return Softmax.apply(input.reshape(1), 0).reshape(())
    return Softmax.apply(input, d)


def log_softmax(input, dim=None, dtype=None):
    """``x - logsumexp(x)`` along ``dim``; its backward is one fused step."""
    input, d = _prepare(input, dim, dtype, "log_softmax")
    if input.data.ndim == 0:
        return LogSoftmax.apply(input.reshape(1), 0).reshape(())
    return LogSoftmax.apply(input, d)


def one_hot(tensor, num_classes: int = -1):
    """int64 one-hot encoding of a tensor of class indices (``num_classes=-1``: max index + 1)."""
    if not isinstance(tensor, Tensor) or tensor.data.dtype.kind not in "iu":
        raise RuntimeError("one_hot is only applicable to index tensors (int64)")
    idx = tensor.data
    if idx.size and idx.min() < 0:
        raise RuntimeError("one_hot: class values must be non-negative")
    if num_classes == -1:
        if idx.size == 0:
            raise RuntimeError("one_hot: can not infer total number of classes from empty tensor")
        num_classes = int(idx.max()) + 1
    elif idx.size and idx.max() >= num_classes:
        raise RuntimeError(
            f"one_hot: class values must be smaller than num_classes ({num_classes}), got {int(idx.max())}"
        )
    out = np.zeros(idx.shape + (num_classes,), dtype=np.int64)
    np.put_along_axis(out, idx[..., None].astype(np.int64), 1, axis=-1)
    return Tensor._make(out, False, None)
