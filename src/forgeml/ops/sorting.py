"""Sorting and selection: ``sort``, ``argsort``, ``topk``.

``sort`` and ``topk`` return a ``(values, indices)`` named tuple, like
``torch.return_types``; the gradient of ``values`` goes back to the positions
the indices name (scattered into zeros). Sorting is stable when asked
(``stable=True``) and, for determinism, always in practice; descending order
keeps equal elements in their original order too. NaN sorts as the largest
value, as in PyTorch.
"""

from __future__ import annotations

from collections import namedtuple

from ..autograd.function import ArrayFunction
from ..backend.device import HOST_XP, namespace_of
from ..backend.dtypes import as_dtype
from ..tensor import Tensor
from ._util import normalize_dim

__all__ = ["argsort", "sort", "topk"]

_INT64 = as_dtype("int64").numpy

# Named like torch.return_types.sort / .topk: unpackable, with .values and .indices.
sort_result = namedtuple("sort", ["values", "indices"])
topk_result = namedtuple("topk", ["values", "indices"])


class TakeAlongDim(ArrayFunction):
    """``values = take_along_axis(x, indices, dim)`` for indices that are distinct along ``dim``.

    The gradient is scattered back into zeros at the selected positions.
    """

    @staticmethod
    def forward(ctx, x, indices, dim):
        ctx.meta = (x.shape, dim)
        ctx.save_for_backward(indices)
        return ctx.xp.take_along_axis(x, indices, axis=dim)

    @staticmethod
    def backward(ctx, g):
        (indices,) = ctx.saved_tensors
        shape, dim = ctx.meta
        xp = ctx.xp
        grad = xp.zeros(shape, dtype=g.dtype)
        xp.put_along_axis(grad, indices, g, axis=dim)
        return grad, None, None


def stable_argsort(xp, data, axis: int):
    """``argsort`` that keeps equal elements in order (CuPy's always does, and takes no ``kind``)."""
    if xp is HOST_XP:
        return xp.argsort(data, axis=axis, kind="stable")
    return xp.argsort(data, axis=axis)


def _sorted_indices(xp, data, dim: int, descending: bool):
    """Stable argsort of ``data`` along ``dim``; descending order keeps ties in their original order."""
    if not descending:
        return stable_argsort(xp, data, dim)
    n = data.shape[dim]
    # a stable ascending sort of the reversed data, read backwards: descending, ties in original order
    idx = stable_argsort(xp, xp.flip(data, axis=dim), dim)
    return (n - 1) - xp.flip(idx, axis=dim)


def _check_tensor(input, name: str) -> None:
    if not isinstance(input, Tensor):
        raise TypeError(f"{name}(): argument 'input' must be a Tensor, not {type(input).__name__}")


def _sort_dim(input: Tensor, dim: int, name: str) -> int:
    ndim = input._data.ndim
    if ndim == 0:
        if dim not in (0, -1):
            raise IndexError(f"{name}(): dimension out of range (expected to be in range of [-1, 0], but got {dim})")
        return 0
    return normalize_dim(dim, ndim)


def sort(input, dim: int = -1, descending: bool = False, stable: bool = False):
    """Sort along ``dim``; returns ``(values, indices)`` (a named tuple). ``stable`` is accepted; sorting is
    always stable here."""
    _check_tensor(input, "sort")
    d = _sort_dim(input, dim, "sort")
    data = input._data
    if data.ndim == 0:
        xp = namespace_of(data)
        return sort_result(input.clone(), Tensor._make(xp.zeros((), dtype=_INT64), False, None))
    xp = namespace_of(data)
    idx = _sorted_indices(xp, data, d, descending).astype(_INT64, copy=False)
    values = TakeAlongDim.apply(input, idx, d)
    return sort_result(values, Tensor._make(idx, False, None))


def argsort(input, dim: int = -1, descending: bool = False, stable: bool = False):
    """The int64 indices that sort ``input`` along ``dim`` (no gradient)."""
    _check_tensor(input, "argsort")
    d = _sort_dim(input, dim, "argsort")
    data = input._data
    xp = namespace_of(data)
    if data.ndim == 0:
        return Tensor._make(xp.zeros((), dtype=_INT64), False, None)
    idx = _sorted_indices(xp, data, d, descending).astype(_INT64, copy=False)
    return Tensor._make(idx, False, None)


def topk(input, k: int, dim: int = -1, largest: bool = True, sorted: bool = True):
    """The ``k`` largest (or smallest, ``largest=False``) elements along ``dim``: ``(values, indices)``.

    Results come in sorted order whatever ``sorted`` says (PyTorch leaves the order unspecified then).
    """
    _check_tensor(input, "topk")
    d = _sort_dim(input, dim, "topk")
    data = input._data
    size = data.shape[d] if data.ndim else 1
    if isinstance(k, bool) or not isinstance(k, int):
        raise TypeError(f"topk(): argument 'k' must be an int, not {type(k).__name__}")
    if not 0 <= k <= size:
        raise RuntimeError(f"selected index k out of range (k={k}, dim {dim} has size {size})")
    xp = namespace_of(data)
    if data.ndim == 0:  # PyTorch returns the element itself for k = 0 or 1
        return topk_result(input.clone(), Tensor._make(xp.zeros((), dtype=_INT64), False, None))
    idx = _sorted_indices(xp, data, d, largest).astype(_INT64, copy=False)
    idx = xp.ascontiguousarray(xp.take(idx, xp.arange(k), axis=d))
    values = TakeAlongDim.apply(input, idx, d)
    return topk_result(values, Tensor._make(idx, False, None))
