"""Indexing: ``x[...]``, ``x[...] = v``, gather, scatter_add, index_select, masked_fill, nonzero.

Basic indexing (ints, slices, None, Ellipsis) returns a view; advanced
indexing (integer or boolean tensors) copies. Backward of an advanced index
accumulates, so repeated indices add their gradients.
"""

from __future__ import annotations

import numpy as np

from ..autograd.function import Function
from ..tensor import Tensor
from ._util import broadcasts_to, normalize_dim, python_scalar, unbroadcast

__all__ = ["gather", "getitem", "index_select", "masked_fill", "nonzero", "scatter_add", "setitem"]


def _convert_index_item(item, position):
    if isinstance(item, Tensor):
        arr = item.data
    elif isinstance(item, (list, np.ndarray)):
        arr = np.asarray(item)
        if arr.dtype == object:
            raise IndexError(f"index at position {position} is a ragged list; use a rectangular list or a tensor")
        if isinstance(item, list) and arr.size == 0:
            arr = arr.astype(np.int64)
    else:
        if item is None or item is Ellipsis or isinstance(item, slice):
            return item, True
        if isinstance(item, bool) or isinstance(item, np.bool_):
            return np.asarray(item), False
        if isinstance(item, (int, np.integer)):
            return int(item), True
        raise IndexError(
            f"only integers, slices (`:`), ellipsis (`...`), None and long or boolean tensors are valid indices "
            f"(got {type(item).__name__} at position {position})"
        )
    if arr.dtype.kind not in "biu":
        raise IndexError(
            f"tensors used as indices must be long, int or bool tensors; got dtype {arr.dtype} at position {position}"
        )
    return arr, False


def _normalize_index(index):
    """(numpy index, is_basic): tensors become arrays; validates element types."""
    items = index if isinstance(index, tuple) else (index,)
    converted, basic = [], True
    for i, item in enumerate(items):
        value, is_basic = _convert_index_item(item, i)
        converted.append(value)
        basic = basic and is_basic
    return tuple(converted), basic


def scatter_add_into_zeros(shape, dtype, index, g):
    """``zeros(shape)`` with ``g`` added at ``index``; repeated indices accumulate."""
    grad = np.zeros(shape, dtype=dtype)
    np.add.at(grad, index, g)
    return grad


def _index_error(exc, shape, index):
    return IndexError(f"{exc} (indexing a tensor of shape {list(shape)})")


class BasicIndex(Function):
    _raw = True
    is_view = True

    @staticmethod
    def forward(ctx, x, index):
        ctx.meta = (x.shape, x.dtype, index)
        return x[index]

    @staticmethod
    def backward(ctx, g):
        shape, dtype, index = ctx.meta
        grad = np.zeros(shape, dtype=dtype)
        grad[index] = g
        return grad, None


class AdvancedIndex(Function):
    _raw = True

    @staticmethod
    def forward(ctx, x, index):
        ctx.meta = (x.shape, x.dtype, index)
        return x[index]

    @staticmethod
    def backward(ctx, g):
        shape, dtype, index = ctx.meta
        if any(isinstance(i, np.ndarray) and i.dtype != np.bool_ for i in index):
            return scatter_add_into_zeros(shape, dtype, index, g), None
        grad = np.zeros(shape, dtype=dtype)
        grad[index] = g  # boolean masks select each element at most once
        return grad, None


def getitem(input, index):
    idx, basic = _normalize_index(index)
    try:
        return (BasicIndex if basic else AdvancedIndex).apply(input, idx)
    except IndexError as exc:
        raise _index_error(exc, input.data.shape, index) from None


class SetItem(Function):
    """``out = x.clone(); out[index] = value``: the differentiable form of ``x[index] = value``."""

    _raw = True

    @staticmethod
    def forward(ctx, x, value, index):
        out = x.copy()
        out[index] = value
        ctx.meta = (index, getattr(value, "shape", ()))
        return out

    @staticmethod
    def backward(ctx, g):
        index, value_shape = ctx.meta
        n = ctx.needs_input_grad
        gx = gv = None
        if n[0]:
            gx = g.copy()
            gx[index] = 0
        if n[1]:
            gv = unbroadcast(g[index], value_shape)
        return gx, gv, None


def setitem(input, index, value) -> None:
    """``input[index] = value`` in place (bumps the version counter; recorded when grad is involved)."""
    from .inplace import apply_inplace

    idx, _ = _normalize_index(index)
    if isinstance(value, Tensor):
        if value.data.dtype != input.data.dtype:
            value = value.to(input.dtype)
    elif isinstance(value, (int, float, bool, np.number)):
        value = python_scalar(value)
    else:
        value = np.asarray(value, dtype=input.data.dtype)
    try:
        apply_inplace(input, SetItem, value, idx)
    except IndexError as exc:
        raise _index_error(exc, input.data.shape, index) from None
    except ValueError as exc:
        raise RuntimeError(
            f"cannot assign a value of shape {list(np.shape(getattr(value, 'data', value)))} to the selection: {exc}"
        ) from None


def _gather_index(index, dim):
    idx = list(np.indices(index.shape, sparse=True))
    idx[dim] = index
    return tuple(idx)


def _check_gather_shapes(input, dim, index, name):
    if index.data.dtype.kind not in "iu":
        raise RuntimeError(f"{name}(): Expected dtype int64 for index, got {index.dtype}")
    if index.data.ndim != input.data.ndim:
        raise RuntimeError(
            f"{name}(): Index tensor must have the same number of dimensions as input tensor "
            f"(index {list(index.shape)}, input {list(input.shape)})"
        )
    for d in range(input.data.ndim):
        if d != dim and index.data.shape[d] > input.data.shape[d]:
            raise RuntimeError(
                f"{name}(): Size does not match at dimension {d}: index {list(index.shape)} is larger than "
                f"input {list(input.shape)} outside dimension {dim}"
            )
    size = input.data.shape[dim]
    if index.data.size and (index.data.min() < -size or index.data.max() >= size):
        raise IndexError(f"{name}(): index out of range for dimension {dim} with size {size}")


def gather(input, dim: int, index):
    """``out[i][j] = input[index[i][j]][j]`` for ``dim=0`` (and likewise for other dims)."""
    d = normalize_dim(dim, input.data.ndim)
    _check_gather_shapes(input, d, index, "gather")
    return AdvancedIndex.apply(input, _gather_index(index.data, d))  # one advanced index: x[i0, ..., index, ...]


class ScatterAdd(Function):
    _raw = True

    @staticmethod
    def forward(ctx, x, src, idx, src_region):
        out = x.copy()
        np.add.at(out, idx, src[src_region])
        ctx.meta = (src.shape, src.dtype, idx, src_region)
        return out

    @staticmethod
    def backward(ctx, g):
        src_shape, dtype, idx, region = ctx.meta
        n = ctx.needs_input_grad
        g_src = None
        if n[1]:
            g_src = np.zeros(src_shape, dtype=dtype)
            g_src[region] = g[idx]
        return (g if n[0] else None), g_src, None, None


def scatter_add(input, dim: int, index, src):
    """``out = input.clone(); out[index[i][j]][j] += src[i][j]`` (for ``dim=0``); repeated indices add up."""
    d = normalize_dim(dim, input.data.ndim)
    _check_gather_shapes(input, d, index, "scatter_add")
    if index.data.ndim != src.data.ndim or any(i > s for i, s in zip(index.data.shape, src.data.shape)):
        raise RuntimeError(
            f"scatter_add(): index {list(index.shape)} must not be larger than src {list(src.shape)} in any dimension"
        )
    if src.data.dtype != input.data.dtype:
        src = src.to(input.dtype)
    region = tuple(slice(0, s) for s in index.data.shape)
    return ScatterAdd.apply(input, src, _gather_index(index.data, d), region)


class IndexSelect(Function):
    _raw = True

    @staticmethod
    def forward(ctx, x, dim, index):
        ctx.meta = (x.shape, x.dtype, dim, index)
        return np.take(x, index, axis=dim)

    @staticmethod
    def backward(ctx, g):
        shape, dtype, dim, index = ctx.meta
        return scatter_add_into_zeros(shape, dtype, (slice(None),) * dim + (index,), g), None, None


def index_select(input, dim: int, index):
    d = normalize_dim(dim, max(input.data.ndim, 1))
    idx = index.data if isinstance(index, Tensor) else np.asarray(index)
    if idx.ndim > 1 or idx.dtype.kind not in "iu":
        raise RuntimeError(
            f"index_select(): index must be a 1-D integer tensor, got shape {list(idx.shape)} dtype {idx.dtype}"
        )
    size = input.data.shape[d] if input.data.ndim else 1
    if idx.size and (idx.min() < -size or idx.max() >= size):
        raise IndexError(f"index_select(): index out of range for dimension {d} with size {size}")
    return IndexSelect.apply(input, d, idx)


class MaskedFill(Function):
    _raw = True

    @staticmethod
    def forward(ctx, x, value, mask):
        ctx.save_for_backward(mask)
        ctx.value_shape = getattr(value, "shape", None)
        return np.where(mask, np.asarray(value, dtype=x.dtype), x)

    @staticmethod
    def backward(ctx, g):
        (mask,) = ctx.saved_tensors
        n = ctx.needs_input_grad
        zero = np.zeros((), dtype=g.dtype)
        gx = np.where(mask, zero, g) if n[0] else None
        gv = np.where(mask, g, zero).sum().reshape(ctx.value_shape) if n[1] else None
        return gx, gv, None


def masked_fill(input, mask, value):
    """``input`` with ``value`` where the boolean ``mask`` (broadcast to ``input``) is True."""
    m = mask.data if isinstance(mask, Tensor) else np.asarray(mask)
    if m.dtype != np.bool_:
        raise RuntimeError(f"masked_fill only supports boolean masks, but got mask with dtype {m.dtype}")
    if not broadcasts_to(m.shape, input.data.shape):
        raise RuntimeError(
            f"masked_fill: the mask of shape {list(m.shape)} cannot be broadcast to the input's shape "
            f"{list(input.shape)}"
        )
    if isinstance(value, Tensor):
        if value.data.ndim != 0:
            raise RuntimeError(
                "masked_fill only supports a 0-dimensional value tensor, but got tensor with "
                f"{value.data.ndim} dimension(s)"
            )
        if value.data.dtype != input.data.dtype:
            value = value.to(input.dtype)
    else:
        value = python_scalar(value)
    return MaskedFill.apply(input, value, m)


def nonzero(input, *, as_tuple: bool = False):
    """Indices of the non-zero elements: an ``(n, ndim)`` int64 tensor, or one 1-D tensor per dim."""
    idx = np.nonzero(input.data)
    if as_tuple:
        return tuple(Tensor._make(i.astype(np.int64), False, None) for i in idx)
    return Tensor._make(np.stack(idx, axis=1).astype(np.int64) if idx else np.zeros((1, 0), np.int64), False, None)
