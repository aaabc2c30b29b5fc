"""In-place ops (``add_``, ``mul_``, ``fill_``, ``copy_``, ``x[i] = v``, ``uniform_`` ...) and the version counter.

Every in-place op bumps the tensor's version counter, which views share;
a backward that needs a saved tensor modified since then raises. On a leaf
that requires grad an in-place op is an error outside ``no_grad``. When grad
mode is on and the op involves a tensor that requires grad, the op is
recorded: it is computed out of place, written back into the same storage,
and the tensor's ``grad_fn`` becomes the new node (its history is rebased).
On a view, the base's history is rebased too (the view's region replaced by
the new values), as PyTorch does; other views of that base taken earlier are
then refused by autograd rather than giving stale gradients.

Updates compute through the tensor's array namespace (NumPy or CuPy);
operands on another device are refused, except where PyTorch moves them too
(``copy_``'s source, indices, masks and 0-d fill values).
"""

from __future__ import annotations

import math

from ..autograd.function import ArrayFunction, _raise_device_mismatch, _raise_stale_view, no_graph_context
from ..autograd.grad_mode import state as _grad_state
from ..backend.device import HOST_ARRAY, HOST_XP, is_array, is_cupy, namespace_of, to_device
from ..backend.dtypes import dtype_of_array
from ..backend.random import generator_for
from ..backend.shapes import sum_to_shape
from ..tensor import Tensor, _RetainGrad
from ._util import broadcasts_to, is_number, operand_result_type, python_scalar
from .elementwise import Add, Clamp, Div, Mul, Relu, Sub
from .indexing import MaskedFill, _index_error, _normalize_index, mask_array, scatter_add_into_zeros

__all__ = [
    "add_",
    "apply_inplace",
    "clamp_",
    "copy_",
    "div_",
    "fill_",
    "masked_fill_",
    "mul_",
    "normal_",
    "setitem",
    "sub_",
    "uniform_",
    "zero_",
]

LEAF_MESSAGE = (
    "a leaf Variable that requires grad is being used in an in-place operation. "
    "Wrap the update in `with forgeml.no_grad():` (as optimizers do) or work on a copy."
)


def _xp(data):
    return HOST_XP if type(data) is HOST_ARRAY else namespace_of(data)


def _records(t: Tensor, args) -> bool:
    if not _grad_state.enabled:
        return False
    if t._requires_grad:
        return True
    return any(isinstance(a, Tensor) and a._requires_grad for a in args)


def apply_inplace(t: Tensor, fn_cls, *args, direct=None) -> Tensor:
    """Run ``fn_cls`` as an in-place update of ``t``.

    ``direct(data, *arrays)`` updates ``t._data`` in place when no graph is
    recorded; without it, ``fn_cls.forward`` computes the new values, which are
    copied into ``t``'s storage. Tensor operands must be on ``t``'s device.
    """
    if _grad_state.enabled and t._requires_grad and t.grad_fn is None:
        raise RuntimeError(LEAF_MESSAGE)
    if not _records(t, args):
        data = t._data
        arrays = []
        for a in args:
            if isinstance(a, Tensor):
                a = a._data
                if type(a) is not type(data):
                    _raise_device_mismatch(fn_cls, (t, *args))
            arrays.append(a)
        if direct is not None:
            direct(data, *arrays)
        else:
            _write(t, fn_cls.forward(no_graph_context(_xp(data)), data, *arrays))
        t._bump_version()
        return t
    if t._base is not None:
        return _inplace_on_view(t, fn_cls, args)
    snapshot = Tensor._make(t._data.copy(), t._requires_grad, t.grad_fn)
    snapshot._output_nr = t._output_nr
    out = fn_cls.apply(snapshot, *args)
    _write(t, out._data)
    t._bump_version()
    _rebase(t, out)
    return t


def _rebase(t: Tensor, out: Tensor) -> None:
    """Give ``t`` the history of ``out`` (its new values); ``retain_grad`` moves along."""
    if t._retains_grad and t.grad_fn is not None:
        _drop_retain_hook(t.grad_fn, t._output_nr)
    t.grad_fn = out.grad_fn
    t._output_nr = 0
    t._requires_grad = out._requires_grad
    if t._retains_grad and t.grad_fn is not None:
        t.grad_fn.register_prehook(0, _RetainGrad(t))


class ScatterIntoBase(ArrayFunction):
    """A base after one of its views was overwritten: ``base`` with ``values`` at flat positions ``where``."""

    @staticmethod
    def forward(ctx, base, values, where):
        ctx.where = where
        out = base.copy()  # C order, as the base is (checked by _flat_positions)
        out.reshape(-1)[where] = values
        return out

    @staticmethod
    def backward(ctx, g):
        n = ctx.needs_input_grad
        g = ctx.xp.ascontiguousarray(g)
        g_values = g.reshape(-1)[ctx.where] if n[1] else None
        g_base = None
        if n[0]:
            g_base = g.copy()
            g_base.reshape(-1)[ctx.where] = 0
        return g_base, g_values, None


class TakeFromBase(ArrayFunction):
    """A view's values read from its base at flat positions ``where``: the view's history after a rebase."""

    @staticmethod
    def forward(ctx, base, where):
        ctx.meta = (base.shape, base.dtype, where)
        return ctx.xp.ascontiguousarray(base).reshape(-1)[where]

    @staticmethod
    def backward(ctx, g):
        shape, dtype, where = ctx.meta
        return scatter_add_into_zeros((math.prod(shape),), dtype, where, g, ctx.xp).reshape(shape), None


def _lowest_element(base, view, xp) -> int:
    """The flat index in ``base`` of ``view``'s lowest-addressed element, found from memory bounds alone.

    For namespaces that expose no data pointers: ``view`` overlaps ``base``'s
    first ``k`` elements exactly when ``k`` exceeds that index, so bisect on ``k``
    with ``may_share_memory`` (which compares memory bounds, as NumPy's and
    CuPy's do).
    """
    flat = base.reshape(-1)
    if not bool(xp.may_share_memory(view, flat)):
        raise RuntimeError("in-place update of a view whose storage is not inside its base's")
    low, high = 0, flat.size - 1
    while low < high:
        mid = (low + high) // 2
        if bool(xp.may_share_memory(view, flat[: mid + 1])):
            high = mid
        else:
            low = mid + 1
    return low


def _first_element_offset(base, view, xp) -> int:
    """How many elements into (C-contiguous) ``base`` the view's element ``[0, ..., 0]`` lies."""
    item = base.itemsize
    if xp is HOST_XP:
        return (view.__array_interface__["data"][0] - base.__array_interface__["data"][0]) // item
    if is_cupy(xp):
        return (view.data.ptr - base.data.ptr) // item
    lowest = _lowest_element(base, view, xp)
    # the first element lies above the lowest one by every negative stride walked to its end
    return lowest - sum((size - 1) * (stride // item) for size, stride in zip(view.shape, view.strides) if stride < 0)


def _flat_positions(base, view):
    """For each element of ``view``, its index in the flattened (C-contiguous) ``base``."""
    if not base.flags.c_contiguous:
        raise RuntimeError(
            "in-place modification of a view is only recorded when its base tensor is contiguous; "
            "call .contiguous() on the base first, or apply the op out of place"
        )
    xp = _xp(base)
    item = base.itemsize
    offset = _first_element_offset(base, view, xp) if view.size else 0
    positions = xp.full(view.shape, offset, dtype=xp.int64)
    for d, (size, stride) in enumerate(zip(view.shape, view.strides)):
        positions += (xp.arange(size, dtype=xp.int64) * (stride // item)).reshape((-1,) + (1,) * (view.ndim - d - 1))
    return positions


def _inplace_on_view(t: Tensor, fn_cls, args) -> Tensor:
    """In-place op on a view of ``base`` while recording: rebase both the base's and the view's history."""
    base = t._base
    if base._requires_grad and base.grad_fn is None:
        raise RuntimeError("a view of a leaf Variable that requires grad is being used in an in-place operation.")
    if t._requires_grad and t._version_counter[0] != t._view_version:
        _raise_stale_view(t)
    where = _flat_positions(base._data, t._data)
    snapshot = Tensor._make(t._data.copy(), t._requires_grad, t.grad_fn)
    snapshot._output_nr = t._output_nr
    new_values = fn_cls.apply(snapshot, *args)
    new_base = ScatterIntoBase.apply(base, new_values, where)
    _write(t, new_values._data)
    t._bump_version()
    _rebase(base, new_base)
    _rebase(t, TakeFromBase.apply(base, where))
    t._view_version = t._version_counter[0]
    return t


def _drop_retain_hook(node, output_nr: int) -> None:
    """The old version's node no longer reports to ``.grad``: retain_grad follows the tensor."""
    hooks = (node._pre_hooks or {}).get(output_nr, [])
    hooks[:] = [h for h in hooks if not isinstance(h, _RetainGrad)]


def _write(t: Tensor, values) -> None:
    data = t._data
    xp = _xp(data)
    if not hasattr(values, "dtype"):
        values = xp.asarray(values)
    if dtype_of_array(values).category > dtype_of_array(data).category:
        raise RuntimeError(
            f"result type {dtype_of_array(values).name} can't be cast to the desired output type {t.dtype.name}"
        )
    xp.copyto(data, values, casting="unsafe")


def _on_device_of(other: Tensor, t: Tensor) -> Tensor:
    """``other`` moved to ``t``'s device (for operands PyTorch moves too: sources, 0-d values)."""
    return other if type(other._data) is type(t._data) else other.to(t.device)


def _check_result_type(t: Tensor, other, name: str) -> None:
    result = operand_result_type(t, other)
    if result.category > dtype_of_array(t._data).category:
        raise RuntimeError(f"{name}: result type {result.name} can't be cast to the desired output type {t.dtype.name}")


def _operand(other, name):
    if isinstance(other, Tensor):
        return other
    if is_number(other):
        return python_scalar(other)
    raise TypeError(f"{name}: expected a Tensor or a number, got {type(other).__name__}")


def _binary_inplace(t, other, fn_cls, ufunc_name, name):
    other = _operand(other, name)
    _check_result_type(t, other, name)
    if isinstance(other, Tensor) and other._data.dtype != t._data.dtype:
        other = other.to(t.dtype) if other._data.dtype.kind == "f" and t._data.dtype.kind == "f" else other
    other_shape = other._data.shape if isinstance(other, Tensor) else ()
    if not broadcasts_to(other_shape, t._data.shape):
        raise RuntimeError(
            f"{name}: output with shape {list(t.shape)} doesn't match the broadcast shape of the operand "
            f"{list(other_shape)}"
        )
    ufunc = getattr(_xp(t._data), ufunc_name)

    def direct(data, o):
        ufunc(data, o, out=data, casting="unsafe")

    return apply_inplace(t, fn_cls, other, direct=direct)


def add_(input, other, *, alpha=1):
    if alpha != 1:
        other = other * alpha
    return _binary_inplace(input, other, Add, "add", "add_")


def sub_(input, other, *, alpha=1):
    if alpha != 1:
        other = other * alpha
    return _binary_inplace(input, other, Sub, "subtract", "sub_")


def mul_(input, other):
    return _binary_inplace(input, other, Mul, "multiply", "mul_")


def div_(input, other):
    if input._data.dtype.kind != "f":
        raise RuntimeError(f"div_: result type Float can't be cast to the desired output type {input.dtype.name}")
    return _binary_inplace(input, other, Div, "true_divide", "div_")


class Fill(ArrayFunction):
    """The values of ``x`` replaced by ``values`` (broadcast); the gradient to ``x`` is zero."""

    @staticmethod
    def forward(ctx, x, values):
        out = ctx.xp.empty_like(x)
        out[...] = values
        return out

    @staticmethod
    def backward(ctx, g):
        n = ctx.needs_input_grad
        return (ctx.xp.zeros_like(g) if n[0] else None), (g if n[1] else None)


def _assign(data, v):
    data[...] = v


def fill_(input, value):
    """Set every element to ``value`` (a number or a 0-d tensor, which may be on another device)."""
    if isinstance(value, Tensor):
        if value._data.ndim != 0:
            raise RuntimeError(
                f"fill_ only supports 0-dimension value tensor but got tensor with {value._data.ndim} dimensions"
            )
        if value._data.dtype != input._data.dtype and value._data.dtype.kind == "f" and input._data.dtype.kind == "f":
            value = value.to(input.dtype)
        value = _on_device_of(value, input)
    elif is_number(value):
        value = python_scalar(value)
    else:
        raise TypeError(f"fill_: value must be a number or a 0-d tensor, got {type(value).__name__}")
    return apply_inplace(input, Fill, value, direct=_assign)


def zero_(input):
    return fill_(input, 0)


def copy_(input, src, non_blocking: bool = False):
    """Copy ``src`` (broadcast, converted to this dtype and device) into ``input``; gradients flow to ``src``.

    ``non_blocking`` is accepted for PyTorch's sake: the copy is synchronous.
    """
    if not isinstance(src, Tensor):
        raise TypeError(f"copy_: src must be a Tensor, got {type(src).__name__}")
    if not broadcasts_to(src._data.shape, input._data.shape):
        raise RuntimeError(
            f"copy_: the src tensor of shape {list(src.shape)} cannot be broadcast to the destination "
            f"{list(input.shape)}"
        )
    if src._data.dtype != input._data.dtype:
        src = src.to(input.dtype)
    src = _on_device_of(src, input)
    xp = _xp(input._data)

    def direct(data, values):
        xp.copyto(data, values, casting="unsafe")

    return apply_inplace(input, Fill, src, direct=direct)


def _clamp_bound(bound, input):
    if isinstance(bound, Tensor):
        return _on_device_of(bound, input)._data
    return bound


def clamp_(input, min=None, max=None):
    if min is None and max is None:
        raise RuntimeError("clamp_: at least one of 'min' or 'max' must not be None")
    low = _clamp_bound(min, input)
    high = _clamp_bound(max, input)
    xp = _xp(input._data)

    def direct(data, lo, hi):
        xp.clip(data, lo, hi, out=data)

    return apply_inplace(input, Clamp, low, high, direct=direct)


clip_ = clamp_


def relu_(input):
    """``max(input, 0)`` written into ``input`` (recorded by autograd on a non-leaf, as PyTorch's ``relu_``)."""
    xp = _xp(input._data)

    def direct(data):
        xp.maximum(data, 0, out=data)

    return apply_inplace(input, Relu, direct=direct)


def masked_fill_(input, mask, value):
    m = mask_array(mask, input._data, "masked_fill_")
    value = _on_device_of(value, input) if isinstance(value, Tensor) else python_scalar(value)
    xp = _xp(input._data)

    def direct(data, v, mask_arr):
        xp.copyto(data, xp.asarray(v, dtype=data.dtype), where=xp.broadcast_to(mask_arr, data.shape))

    return apply_inplace(input, MaskedFill, value, m, direct=direct)


# ------------------------------------------------------------ x[index] = value
class SetItem(ArrayFunction):
    """``out = x.clone(); out[index] = value``: the differentiable form of ``x[index] = value``."""

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
            # the value was broadcast to the selection's shape, not the output's: sum it back here
            gv = g[index]
            if gv.ndim < len(value_shape):  # NumPy drops a value's leading size-1 dims when assigning
                gv = gv.reshape((1,) * (len(value_shape) - gv.ndim) + gv.shape)
            gv = sum_to_shape(gv, value_shape)
        return gx, gv, None


def setitem(input, index, value) -> None:
    """``input[index] = value`` in place (bumps the version counter; recorded when grad is involved).

    Index tensors and values may come from the CPU for a CUDA tensor; they are copied to its device.
    """
    idx, _ = _normalize_index(index, input._data)
    data = input._data
    if isinstance(value, Tensor):
        if value._data.dtype != data.dtype:
            value = value.to(input.dtype)
        value = _on_device_of(value, input)
    elif is_number(value):
        value = python_scalar(value)
    else:
        if is_array(value) and type(value) is not type(data):
            value = to_device(value, input.device)
        value = _xp(data).asarray(value, dtype=data.dtype)
    try:
        apply_inplace(input, SetItem, value, idx)
    except IndexError as exc:
        raise _index_error(exc, data.shape, index) from None
    except ValueError as exc:
        shape = getattr(getattr(value, "_data", value), "shape", ())
        raise RuntimeError(f"cannot assign a value of shape {list(shape)} to the selection: {exc}") from None


# ------------------------------------------------------------ random fills
def _random_fill(input, draw, name):
    if input._data.dtype.kind != "f":
        raise RuntimeError(f"{name} expects a floating point tensor, got {input.dtype}")
    values = draw(input._data.shape).astype(input._data.dtype, copy=False)
    return apply_inplace(input, Fill, values, direct=_assign)


def uniform_(input, a: float = 0.0, b: float = 1.0, *, generator=None):
    """Fill with samples from U(a, b), drawn on ``input``'s device (float64, then cast)."""
    gen = generator_for(input.device, generator)
    return _random_fill(input, lambda shape: gen.uniform(a, b, shape), "uniform_")


def normal_(input, mean: float = 0.0, std: float = 1.0, *, generator=None):
    """Fill with samples from N(mean, std^2), drawn on ``input``'s device (float64, then cast)."""
    if std < 0:
        raise RuntimeError(f"normal_ expects std >= 0.0, but found std {std}")
    gen = generator_for(input.device, generator)
    return _random_fill(input, lambda shape: gen.normal(mean, std, shape), "normal_")
