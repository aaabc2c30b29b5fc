"""In-place ops (``add_``, ``mul_``, ``fill_``, ``copy_``, ``uniform_`` ...) and the version counter.

Every in-place op bumps the tensor's version counter, which views share;
a backward that needs a saved tensor modified since then raises. On a leaf
that requires grad an in-place op is an error outside ``no_grad``. When grad
mode is on and the op involves a tensor that requires grad, the op is
recorded: it is computed out of place, written back into the same storage,
and the tensor's ``grad_fn`` becomes the new node (its history is rebased).
On a view, the base's history is rebased too (the view's region replaced by
the new values), as PyTorch does; other views of that base taken earlier are
then refused by autograd rather than giving stale gradients.
"""

from __future__ import annotations

import numpy as np

from ..autograd.function import _NO_GRAPH_CTX, Function, _raise_stale_view
from ..autograd.grad_mode import state as _grad_state
from ..backend.dtypes import dtype_of_array
from ..backend.random import numpy_generator
from ..tensor import Tensor, _RetainGrad
from ._util import broadcasts_to, is_number, operand_result_type, python_scalar, unbroadcast
from .elementwise import Add, Clamp, Div, Mul, Sub
from .indexing import MaskedFill, scatter_add_into_zeros

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
    "sub_",
    "uniform_",
    "zero_",
]

LEAF_MESSAGE = (
    "a leaf Variable that requires grad is being used in an in-place operation. "
    "Wrap the update in `with forgeml.no_grad():` (as optimizers do) or work on a copy."
)


def _records(t: Tensor, args) -> bool:
    if not _grad_state.enabled:
        return False
    if t._requires_grad:
        return True
    return any(isinstance(a, Tensor) and a._requires_grad for a in args)


def apply_inplace(t: Tensor, fn_cls, *args, direct=None) -> Tensor:
    """Run ``fn_cls`` as an in-place update of ``t``.

    ``direct(data, *arrays)`` updates ``t.data`` in place when no graph is
    recorded; without it, ``fn_cls.forward`` computes the new values, which are
    copied into ``t``'s storage.
    """
    if _grad_state.enabled and t._requires_grad and t.grad_fn is None:
        raise RuntimeError(LEAF_MESSAGE)
    if not _records(t, args):
        arrays = [a.data if isinstance(a, Tensor) else a for a in args]
        if direct is not None:
            direct(t.data, *arrays)
        else:
            _write(t, fn_cls.forward(_NO_GRAPH_CTX, t.data, *arrays))
        t._bump_version()
        return t
    if t._base is not None:
        return _inplace_on_view(t, fn_cls, args)
    snapshot = Tensor._make(t.data.copy(), t._requires_grad, t.grad_fn)
    snapshot._output_nr = t._output_nr
    out = fn_cls.apply(snapshot, *args)
    _write(t, out.data)
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


class ScatterIntoBase(Function):
    """A base after one of its views was overwritten: ``base`` with ``values`` at flat positions ``where``."""

    _raw = True

    @staticmethod
    def forward(ctx, base, values, where):
        ctx.where = where
        out = np.array(base, copy=True, order="C")
        out.reshape(-1)[where] = values
        return out

    @staticmethod
    def backward(ctx, g):
        n = ctx.needs_input_grad
        g = np.ascontiguousarray(g)
        g_values = g.reshape(-1)[ctx.where] if n[1] else None
        g_base = None
        if n[0]:
            g_base = g.copy()
            g_base.reshape(-1)[ctx.where] = 0
        return g_base, g_values, None


class TakeFromBase(Function):
    """A view's values read from its base at flat positions ``where``: the view's history after a rebase."""

    _raw = True

    @staticmethod
    def forward(ctx, base, where):
        ctx.meta = (base.shape, base.dtype, where)
        return np.ascontiguousarray(base).reshape(-1)[where]

    @staticmethod
    def backward(ctx, g):
        shape, dtype, where = ctx.meta
        return scatter_add_into_zeros((int(np.prod(shape)),), dtype, where, g).reshape(shape), None


def _flat_positions(base, view):
    """For each element of ``view``, its index in the flattened (C-contiguous) ``base``."""
    if not base.flags.c_contiguous:
        raise RuntimeError(
            "in-place modification of a view is only recorded when its base tensor is contiguous; "
            "call .contiguous() on the base first, or apply the op out of place"
        )
    item = base.itemsize
    offset = view.__array_interface__["data"][0] - base.__array_interface__["data"][0]
    positions = np.full(view.shape, offset // item, dtype=np.int64)
    for d, (size, stride) in enumerate(zip(view.shape, view.strides)):
        positions += (np.arange(size, dtype=np.int64) * (stride // item)).reshape((-1,) + (1,) * (view.ndim - d - 1))
    return positions


def _inplace_on_view(t: Tensor, fn_cls, args) -> Tensor:
    """In-place op on a view of ``base`` while recording: rebase both the base's and the view's history."""
    base = t._base
    if base._requires_grad and base.grad_fn is None:
        raise RuntimeError("a view of a leaf Variable that requires grad is being used in an in-place operation.")
    if t._requires_grad and t._version_counter[0] != t._view_version:
        _raise_stale_view(t)
    where = _flat_positions(base.data, t.data)
    snapshot = Tensor._make(t.data.copy(), t._requires_grad, t.grad_fn)
    snapshot._output_nr = t._output_nr
    new_values = fn_cls.apply(snapshot, *args)
    new_base = ScatterIntoBase.apply(base, new_values, where)
    _write(t, new_values.data)
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
    values = np.asarray(values) if not hasattr(values, "dtype") else values
    if dtype_of_array(values).category > dtype_of_array(t.data).category:
        raise RuntimeError(
            f"result type {dtype_of_array(values).name} can't be cast to the desired output type {t.dtype.name}"
        )
    np.copyto(t.data, values, casting="unsafe")


def _check_result_type(t: Tensor, other, name: str) -> None:
    result = operand_result_type(t, other)
    if result.category > dtype_of_array(t.data).category:
        raise RuntimeError(f"{name}: result type {result.name} can't be cast to the desired output type {t.dtype.name}")


def _operand(other, name):
    if isinstance(other, Tensor):
        return other
    if is_number(other):
        return python_scalar(other)
    raise TypeError(f"{name}: expected a Tensor or a number, got {type(other).__name__}")


def _binary_inplace(t, other, fn_cls, ufunc, name):
    other = _operand(other, name)
    _check_result_type(t, other, name)
    if isinstance(other, Tensor) and other.data.dtype != t.data.dtype:
        other = other.to(t.dtype) if other.data.dtype.kind == "f" and t.data.dtype.kind == "f" else other
    other_shape = other.data.shape if isinstance(other, Tensor) else ()
    if not broadcasts_to(other_shape, t.data.shape):
        raise RuntimeError(
            f"{name}: output with shape {list(t.shape)} doesn't match the broadcast shape of the operand "
            f"{list(other_shape)}"
        )

    def direct(data, o):
        ufunc(data, o, out=data, casting="unsafe")

    return apply_inplace(t, fn_cls, other, direct=direct)


def add_(input, other, *, alpha=1):
    if alpha != 1:
        other = other * alpha
    return _binary_inplace(input, other, Add, np.add, "add_")


def sub_(input, other, *, alpha=1):
    if alpha != 1:
        other = other * alpha
    return _binary_inplace(input, other, Sub, np.subtract, "sub_")


def mul_(input, other):
    return _binary_inplace(input, other, Mul, np.multiply, "mul_")


def div_(input, other):
    if input.data.dtype.kind != "f":
        raise RuntimeError(f"div_: result type Float can't be cast to the desired output type {input.dtype.name}")
    return _binary_inplace(input, other, Div, np.true_divide, "div_")


class Fill(Function):
    """The values of ``x`` replaced by ``values`` (broadcast); the gradient to ``x`` is zero."""

    _raw = True

    @staticmethod
    def forward(ctx, x, values):
        ctx.value_shape = getattr(values, "shape", ())
        out = np.empty_like(x)
        out[...] = values
        return out

    @staticmethod
    def backward(ctx, g):
        n = ctx.needs_input_grad
        gv = unbroadcast(g, ctx.value_shape) if n[1] else None
        return (np.zeros_like(g) if n[0] else None), gv


def fill_(input, value):
    """Set every element to ``value`` (a number or a 0-d tensor)."""
    if isinstance(value, Tensor):
        if value.data.ndim != 0:
            raise RuntimeError(
                f"fill_ only supports 0-dimension value tensor but got tensor with {value.data.ndim} dimensions"
            )
        if value.data.dtype != input.data.dtype and value.data.dtype.kind == "f" and input.data.dtype.kind == "f":
            value = value.to(input.dtype)
    elif is_number(value):
        value = python_scalar(value)
    else:
        raise TypeError(f"fill_: value must be a number or a 0-d tensor, got {type(value).__name__}")

    def direct(data, v):
        data[...] = v

    return apply_inplace(input, Fill, value, direct=direct)


def zero_(input):
    return fill_(input, 0)


def copy_(input, src):
    """Copy ``src`` (broadcast, converted to this dtype) into ``input``; gradients flow to ``src``."""
    if not isinstance(src, Tensor):
        raise TypeError(f"copy_: src must be a Tensor, got {type(src).__name__}")
    if not broadcasts_to(src.data.shape, input.data.shape):
        raise RuntimeError(
            f"copy_: the src tensor of shape {list(src.shape)} cannot be broadcast to the destination "
            f"{list(input.shape)}"
        )
    if src.data.dtype != input.data.dtype:
        src = src.to(input.dtype)
    if src.device != input.device:
        src = src.to(input.device)

    def direct(data, values):
        np.copyto(data, values, casting="unsafe")

    return apply_inplace(input, Fill, src, direct=direct)


def clamp_(input, min=None, max=None):
    if min is None and max is None:
        raise RuntimeError("clamp_: at least one of 'min' or 'max' must not be None")
    low = min.data if isinstance(min, Tensor) else min
    high = max.data if isinstance(max, Tensor) else max

    def direct(data, lo, hi):
        np.clip(data, lo, hi, out=data)

    return apply_inplace(input, Clamp, low, high, direct=direct)


clip_ = clamp_


def masked_fill_(input, mask, value):
    m = mask.data if isinstance(mask, Tensor) else np.asarray(mask)
    if m.dtype != np.bool_:
        raise RuntimeError(f"masked_fill_ only supports boolean masks, but got mask with dtype {m.dtype}")
    value = value if isinstance(value, Tensor) else python_scalar(value)

    def direct(data, v, mask_arr):
        np.copyto(data, np.asarray(v, dtype=data.dtype), where=np.broadcast_to(mask_arr, data.shape))

    return apply_inplace(input, MaskedFill, value, m, direct=direct)


def _random_fill(input, sample, name):
    if input.data.dtype.kind != "f":
        raise RuntimeError(f"{name} expects a floating point tensor, got {input.dtype}")
    values = sample(input.data.shape).astype(input.data.dtype, copy=False)
    if not isinstance(input.data, np.ndarray):
        from ..backend.device import to_device

        values = to_device(values, input.device)

    def direct(data, v):
        data[...] = v

    return apply_inplace(input, Fill, values, direct=direct)


def uniform_(input, a: float = 0.0, b: float = 1.0, *, generator=None):
    """Fill with samples from U(a, b)."""
    rng = numpy_generator(generator)
    return _random_fill(input, lambda shape: rng.uniform(a, b, size=shape), "uniform_")


def normal_(input, mean: float = 0.0, std: float = 1.0, *, generator=None):
    """Fill with samples from N(mean, std^2)."""
    if std < 0:
        raise RuntimeError(f"normal_ expects std >= 0.0, but found std {std}")
    rng = numpy_generator(generator)
    return _random_fill(input, lambda shape: rng.normal(mean, std, size=shape), "normal_")
