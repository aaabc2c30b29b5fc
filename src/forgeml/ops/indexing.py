"""Indexing: ``x[...]``, gather, scatter_add, index_select, masked_fill, nonzero, and the scatter-add helper.

Basic indexing (ints, slices, None, Ellipsis) returns a view; advanced
indexing (integer or boolean tensors) copies. Backward of an advanced index
accumulates, so repeated indices add their gradients (:func:`add_at`, the one
scatter-add of the tensor stack: NumPy's ``add.at`` on the CPU, CuPy's atomic
``add.at`` on a GPU). Indices given as lists, arrays or tensors become arrays
on the indexed tensor's device first; CUDA tensors accept CPU indices, as
PyTorch's advanced indexing does. Writing through an index (``x[i] = v``) is an
in-place op and lives in :mod:`forgeml.ops.inplace`.
"""

from __future__ import annotations

import numbers

from ..autograd.function import ArrayFunction
from ..backend.device import HOST_ARRAY, HOST_XP, device_of, is_array, namespace_of, to_device
from ..tensor import Tensor
from . import _cpu
from ._util import broadcasts_to, normalize_dim, python_scalar

__all__ = [
    "add_at",
    "gather",
    "getitem",
    "index_select",
    "masked_fill",
    "nonzero",
    "scatter_add",
    "scatter_add_into_zeros",
]


# ------------------------------------------------------------ the scatter-add
# dtypes CuPy's atomic add handles natively; others accumulate in a wider type
_NATIVE_ATOMIC_ADD = frozenset(("float32", "float64", "int32", "uint32", "uint64"))


def _accumulation_dtype(dtype, xp):
    """The dtype a device scatter-add accumulates ``dtype`` in: float16 in float32; narrow, signed 64-bit
    and bool in uint64 (whose wrap-around sums are two's complement's, and nonzero where any bool was)."""
    if dtype.name in _NATIVE_ATOMIC_ADD:
        return dtype
    return xp.float32 if dtype.kind == "f" else xp.uint64


def add_at(target, index, values, xp=None):
    """``target[index] += values`` with repeated indices accumulating, as ``np.add.at``; returns the result.

    On the CPU ``target`` is updated in place (NumPy's ``add.at``) and returned.
    On other namespaces ``xp.add.at`` (CuPy's atomic scatter-add) does it; when
    ``target``'s dtype has no atomic add there (float16, int64, ...), the sums
    are taken in a wider dtype and the result is a new array of ``target``'s
    dtype. ``index`` must hold arrays of ``target``'s namespace.
    """
    xp = xp or namespace_of(target)
    if xp is HOST_XP:
        _cpu.add_at(target, index, values)
        return target
    dtype = target.dtype
    acc = _accumulation_dtype(dtype, xp)
    if acc == dtype:
        if values.dtype != dtype:
            values = values.astype(dtype)
        xp.add.at(target, index, values)
        return target
    wide = target.astype(acc)
    xp.add.at(wide, index, values.astype(acc))
    return wide.astype(dtype)


def scatter_add_into_zeros(shape, dtype, index, values, xp=None):
    """``zeros(shape, dtype)`` with ``values`` added at ``index``; repeated indices accumulate."""
    xp = xp or namespace_of(values)
    return add_at(xp.zeros(shape, dtype=dtype), index, values, xp)


# ------------------------------------------------------------ index arrays
def to_device_of(arr, data, what: str = "indices"):
    """``arr`` (an index array or mask) as an array on ``data``'s device.

    A CUDA tensor accepts indices from the CPU (they are copied over, as
    PyTorch's advanced indexing does); a CPU tensor refuses CUDA indices.
    """
    if isinstance(data, HOST_ARRAY):
        if isinstance(arr, HOST_ARRAY):
            return arr
        raise RuntimeError(
            f"{what} should be either on cpu or on the same device as the indexed tensor (cpu), "
            f"but got {what} on {device_of(arr)}"
        )
    if type(arr) is type(data) and arr.device.id == data.device.id:
        return arr
    return to_device(arr, device_of(data))


def _index_array(item, data, position):
    """A tensor, array or (nested) list used as an index, as an array on ``data``'s device."""
    if isinstance(item, Tensor):
        arr = item._data
    elif is_array(item):
        arr = item
    else:
        xp = HOST_XP if type(data) is HOST_ARRAY else namespace_of(data)
        try:
            arr = xp.asarray(item)
        except (TypeError, ValueError):
            raise IndexError(
                f"index at position {position} is a ragged list; use a rectangular list or a tensor"
            ) from None
        if arr.dtype == object:
            raise IndexError(f"index at position {position} is a ragged list; use a rectangular list or a tensor")
        if arr.size == 0:
            arr = arr.astype(xp.int64)
    if arr.dtype.kind not in "biu":
        raise IndexError(
            f"tensors used as indices must be long, int or bool tensors; got dtype {arr.dtype} at position {position}"
        )
    return to_device_of(arr, data)


def _convert_index_item(item, position, data):
    """(index item, is basic): ints, slices, None and Ellipsis as they are; tensors and lists as arrays."""
    kind = type(item)
    if kind is int or kind is slice or item is None or item is Ellipsis:
        return item, True
    if kind is bool:
        return item, False  # a scalar bool adds a dim of size 1 (True) or 0 (False), like a 0-d mask
    if isinstance(item, (Tensor, list, HOST_ARRAY)) or is_array(item):
        return _index_array(item, data, position), False
    if isinstance(item, numbers.Integral):  # NumPy integer scalars
        return int(item), True
    dtype = getattr(item, "dtype", None)
    if dtype is not None and dtype.kind == "b" and getattr(item, "ndim", None) == 0:  # a NumPy bool scalar
        return bool(item), False
    raise IndexError(
        f"only integers, slices (`:`), ellipsis (`...`), None and long or boolean tensors are valid indices "
        f"(got {type(item).__name__} at position {position})"
    )


def _normalize_index(index, data):
    """(index tuple for ``data``, is_basic): tensors and lists become arrays on ``data``'s device."""
    items = index if isinstance(index, tuple) else (index,)
    for item in items:  # the common case, basic indexing, passes through as it is
        kind = type(item)
        if not (kind is int or kind is slice or item is None or item is Ellipsis):
            break
    else:
        return items, True
    converted, basic = [], True
    for i, item in enumerate(items):
        value, is_basic = _convert_index_item(item, i, data)
        converted.append(value)
        basic = basic and is_basic
    converted = tuple(converted)
    if not basic and not isinstance(data, HOST_ARRAY):
        _check_array_bounds(converted, data.shape)  # NumPy checks them itself
    return converted, basic


def _min_max(arr):
    """The smallest and largest element of an integer array as Python ints (one transfer from a device)."""
    if isinstance(arr, HOST_ARRAY):
        return int(arr.min()), int(arr.max())
    low, high = namespace_of(arr).stack((arr.min(), arr.max())).tolist()
    return int(low), int(high)


def _dims_indexed(item) -> int:
    if item is None or item is Ellipsis or isinstance(item, bool):
        return 0
    dtype = getattr(item, "dtype", None)
    if dtype is not None and dtype.kind == "b":
        return item.ndim
    return 1


def _check_array_bounds(items, shape):
    """Raise NumPy's IndexError for out-of-range integer array indices (CuPy would wrap them around)."""
    used = sum(_dims_indexed(item) for item in items)
    dim = 0
    for item in items:
        if item is Ellipsis:
            dim += len(shape) - used
            continue
        n = _dims_indexed(item)
        if n == 1 and getattr(item, "dtype", None) is not None and item.size and dim < len(shape):
            size = shape[dim]
            low, high = _min_max(item)
            bad = high if high >= size else low if low < -size else None
            if bad is not None:
                raise IndexError(
                    f"index {bad} is out of bounds for axis {dim} with size {size} "
                    f"(indexing a tensor of shape {list(shape)})"
                )
        dim += n


def _index_error(exc, shape, index):
    return IndexError(f"{exc} (indexing a tensor of shape {list(shape)})")


# ------------------------------------------------------------ x[index]
class BasicIndex(ArrayFunction):
    is_view = True

    @staticmethod
    def forward(ctx, x, index):
        ctx.meta = (x.shape, x.dtype, index)
        return x[index]

    @staticmethod
    def backward(ctx, g):
        shape, dtype, index = ctx.meta
        grad = ctx.xp.zeros(shape, dtype=dtype)
        grad[index] = g
        return grad, None


class AdvancedIndex(ArrayFunction):
    @staticmethod
    def forward(ctx, x, index):
        ctx.meta = (x.shape, x.dtype, index)
        return x[index]

    @staticmethod
    def backward(ctx, g):
        shape, dtype, index = ctx.meta
        if any(getattr(i, "dtype", None) is not None and i.dtype.kind != "b" for i in index):
            return scatter_add_into_zeros(shape, dtype, index, g, ctx.xp), None
        grad = ctx.xp.zeros(shape, dtype=dtype)
        grad[index] = g  # boolean masks select each element at most once
        return grad, None


def getitem(input, index):
    idx, basic = _normalize_index(index, input._data)
    try:
        return (BasicIndex if basic else AdvancedIndex).apply(input, idx)
    except IndexError as exc:
        raise _index_error(exc, input._data.shape, index) from None


# ------------------------------------------------------------ gather / scatter_add
def _gather_index(index, dim):
    """The advanced index ``(i0, ..., index, ...)`` that reads ``x[i0][..][index[i0, ..]]..``: aranges elsewhere."""
    xp = HOST_XP if type(index) is HOST_ARRAY else namespace_of(index)
    ndim = index.ndim
    idx = [
        xp.arange(n, dtype=xp.int64).reshape((1,) * d + (n,) + (1,) * (ndim - d - 1)) for d, n in enumerate(index.shape)
    ]
    idx[dim] = index
    return tuple(idx)


def _gather_index_array(input, dim, index, name):
    """``index`` (an integer tensor shaped like ``input``) checked, as an array on ``input``'s device."""
    if not isinstance(index, Tensor):
        raise TypeError(f"{name}(): index must be a Tensor, got {type(index).__name__}")
    idx = index._data
    if idx.dtype.kind not in "iu":
        raise RuntimeError(f"{name}(): Expected dtype int64 for index, got {index.dtype}")
    if idx.ndim != input._data.ndim:
        raise RuntimeError(
            f"{name}(): Index tensor must have the same number of dimensions as input tensor "
            f"(index {list(index.shape)}, input {list(input.shape)})"
        )
    for d in range(input._data.ndim):
        if d != dim and idx.shape[d] > input._data.shape[d]:
            raise RuntimeError(
                f"{name}(): Size does not match at dimension {d}: index {list(index.shape)} is larger than "
                f"input {list(input.shape)} outside dimension {dim}"
            )
    idx = to_device_of(idx, input._data, "index")
    size = input._data.shape[dim]
    if idx.size:
        low, high = _min_max(idx)
        if low < -size or high >= size:
            raise IndexError(f"{name}(): index out of range for dimension {dim} with size {size}")
    return idx


def gather(input, dim: int, index):
    """``out[i][j] = input[index[i][j]][j]`` for ``dim=0`` (and likewise for other dims)."""
    d = normalize_dim(dim, input._data.ndim)
    idx = _gather_index_array(input, d, index, "gather")
    return AdvancedIndex.apply(input, _gather_index(idx, d))  # one advanced index: x[i0, ..., index, ...]


class ScatterAdd(ArrayFunction):
    @staticmethod
    def forward(ctx, x, src, idx, src_region):
        ctx.meta = (src.shape, src.dtype, idx, src_region)
        return add_at(x.copy(), idx, src[src_region], ctx.xp)

    @staticmethod
    def backward(ctx, g):
        src_shape, dtype, idx, region = ctx.meta
        n = ctx.needs_input_grad
        g_src = None
        if n[1]:
            g_src = ctx.xp.zeros(src_shape, dtype=dtype)
            g_src[region] = g[idx]
        return (g if n[0] else None), g_src, None, None


def scatter_add(input, dim: int, index, src):
    """``out = input.clone(); out[index[i][j]][j] += src[i][j]`` (for ``dim=0``); repeated indices add up."""
    d = normalize_dim(dim, input._data.ndim)
    idx = _gather_index_array(input, d, index, "scatter_add")
    if idx.ndim != src._data.ndim or any(i > s for i, s in zip(idx.shape, src._data.shape)):
        raise RuntimeError(
            f"scatter_add(): index {list(index.shape)} must not be larger than src {list(src.shape)} in any dimension"
        )
    if src._data.dtype != input._data.dtype:
        src = src.to(input.dtype)
    region = tuple(slice(0, s) for s in idx.shape)
    return ScatterAdd.apply(input, src, _gather_index(idx, d), region)


# ------------------------------------------------------------ index_select
class IndexSelect(ArrayFunction):
    @staticmethod
    def forward(ctx, x, dim, index):
        ctx.meta = (x.shape, x.dtype, dim, index)
        return ctx.xp.take(x, index, axis=dim)

    @staticmethod
    def backward(ctx, g):
        shape, dtype, dim, index = ctx.meta
        return scatter_add_into_zeros(shape, dtype, (slice(None),) * dim + (index,), g, ctx.xp), None, None


def index_select(input, dim: int, index):
    d = normalize_dim(dim, max(input._data.ndim, 1))
    data = input._data
    if isinstance(index, Tensor):
        idx = index._data
    elif is_array(index):
        idx = index
    else:
        idx = (HOST_XP if type(data) is HOST_ARRAY else namespace_of(data)).asarray(index)
    if idx.ndim > 1 or idx.dtype.kind not in "iu":
        raise RuntimeError(
            f"index_select(): index must be a 1-D integer tensor, got shape {list(idx.shape)} dtype {idx.dtype}"
        )
    idx = to_device_of(idx, data, "index")
    size = data.shape[d] if data.ndim else 1
    if idx.size:
        low, high = _min_max(idx)
        if low < -size or high >= size:
            raise IndexError(f"index_select(): index out of range for dimension {d} with size {size}")
    return IndexSelect.apply(input, d, idx)


# ------------------------------------------------------------ masked_fill
def mask_array(mask, data, name):
    """A boolean mask (tensor, array or list) as an array on ``data``'s device; other dtypes are refused."""
    if isinstance(mask, Tensor):
        m = mask._data
    elif is_array(mask):
        m = mask
    else:
        m = (HOST_XP if type(data) is HOST_ARRAY else namespace_of(data)).asarray(mask)
    if m.dtype.kind != "b":
        raise RuntimeError(f"{name} only supports boolean masks, but got mask with dtype {m.dtype}")
    return to_device_of(m, data, "mask")


class MaskedFill(ArrayFunction):
    @staticmethod
    def forward(ctx, x, value, mask):
        xp = ctx.xp
        ctx.save_for_backward(mask)
        ctx.value_shape = getattr(value, "shape", None)
        return xp.where(mask, xp.asarray(value, dtype=x.dtype), x)

    @staticmethod
    def backward(ctx, g):
        (mask,) = ctx.saved_tensors
        xp = ctx.xp
        n = ctx.needs_input_grad
        zero = xp.zeros((), dtype=g.dtype)
        gx = xp.where(mask, zero, g) if n[0] else None
        gv = xp.where(mask, g, zero).sum().reshape(ctx.value_shape) if n[1] else None
        return gx, gv, None


def masked_fill(input, mask, value):
    """``input`` with ``value`` where the boolean ``mask`` (broadcast to ``input``) is True."""
    m = mask_array(mask, input._data, "masked_fill")
    if not broadcasts_to(m.shape, input._data.shape):
        raise RuntimeError(
            f"masked_fill: the mask of shape {list(m.shape)} cannot be broadcast to the input's shape "
            f"{list(input.shape)}"
        )
    if isinstance(value, Tensor):
        if value._data.ndim != 0:
            raise RuntimeError(
                "masked_fill only supports a 0-dimensional value tensor, but got tensor with "
                f"{value._data.ndim} dimension(s)"
            )
        if value._data.dtype != input._data.dtype:
            value = value.to(input.dtype)
        if type(value._data) is not type(input._data):  # a 0-d value is a scalar: it may come from another device
            value = value.to(input.device)
    else:
        value = python_scalar(value)
    return MaskedFill.apply(input, value, m)


# ------------------------------------------------------------ nonzero
def nonzero(input, *, as_tuple: bool = False):
    """Indices of the non-zero elements: an ``(n, ndim)`` int64 tensor, or one 1-D tensor per dim."""
    data = input._data
    xp = HOST_XP if type(data) is HOST_ARRAY else namespace_of(data)
    idx = xp.nonzero(data)
    if as_tuple:
        return tuple(Tensor._make(i.astype(xp.int64), False, None) for i in idx)
    out = xp.stack(idx, axis=1).astype(xp.int64) if idx else xp.zeros((1, 0), dtype=xp.int64)
    return Tensor._make(out, False, None)
