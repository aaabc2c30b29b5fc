"""Fused pointwise ops that optimizers and hand-written updates use: ``addcmul``, ``addcdiv``, ``lerp``.

Each has an in-place form (``addcmul_``, ``addcdiv_``, ``lerp_``), as do
``sqrt_`` and ``exp_``; those go through :func:`forgeml.ops.inplace.apply_inplace`,
so they bump the version counter, are recorded when grad is involved, and
refuse a leaf that requires grad outside ``no_grad``.
"""

from __future__ import annotations

from ..autograd.function import ArrayFunction
from ..backend.device import HOST_ARRAY, HOST_XP, namespace_of
from ..backend.dtypes import get_default_dtype
from ..tensor import Tensor
from ._util import broadcasts_to, cast, is_number, operand_result_type, python_scalar
from .elementwise import Exp, Sqrt
from .inplace import apply_inplace

__all__ = ["addcdiv", "addcdiv_", "addcmul", "addcmul_", "exp_", "lerp", "lerp_", "sqrt_"]


class Addcmul(ArrayFunction):
    """``x + value * t1 * t2``."""

    @staticmethod
    def forward(ctx, x, t1, t2, value):
        ctx.save_for_backward(t1, t2)
        ctx.value = value
        return x + value * (t1 * t2)

    @staticmethod
    def backward(ctx, g):
        t1, t2 = ctx.saved_tensors
        n = ctx.needs_input_grad
        gv = g * ctx.value
        return (g if n[0] else None), (gv * t2 if n[1] else None), (gv * t1 if n[2] else None), None


class Addcdiv(ArrayFunction):
    """``x + value * t1 / t2``."""

    @staticmethod
    def forward(ctx, x, t1, t2, value):
        ctx.save_for_backward(t1, t2)
        ctx.value = value
        return x + value * (t1 / t2)

    @staticmethod
    def backward(ctx, g):
        t1, t2 = ctx.saved_tensors
        n = ctx.needs_input_grad
        gv = g * ctx.value
        g1 = gv / t2 if n[1] else None
        g2 = -gv * t1 / (t2 * t2) if n[2] else None
        return (g if n[0] else None), g1, g2, None


class Lerp(ArrayFunction):
    """``x + weight * (end - x)``; ``weight`` is a number or an array."""

    @staticmethod
    def forward(ctx, x, end, weight):
        ctx.save_for_backward(x, end, weight if hasattr(weight, "shape") else None)
        ctx.weight = weight
        return x + weight * (end - x)

    @staticmethod
    def backward(ctx, g):
        x, end, w_arr = ctx.saved_tensors
        n = ctx.needs_input_grad
        w = ctx.weight if w_arr is None else w_arr
        gx = g * (1 - w) if n[0] else None
        ge = g * w if n[1] else None
        gw = g * (end - x) if len(n) > 2 and n[2] else None
        return gx, ge, gw


def _tensor(value, name: str, arg: str) -> Tensor:
    if not isinstance(value, Tensor):
        raise TypeError(f"{name}(): argument '{arg}' must be a Tensor, not {type(value).__name__}")
    return value


def _scalar(value, name: str):
    if isinstance(value, Tensor) and value._data.ndim == 0:
        return value.item()
    if not is_number(value):
        raise TypeError(f"{name}(): 'value' must be a number, not {type(value).__name__}")
    return python_scalar(value)


def _xp(data):
    return HOST_XP if type(data) is HOST_ARRAY else namespace_of(data)


def _addc_operands(input, tensor1, tensor2, value, name):
    input, tensor1, tensor2 = (
        _tensor(a, name, k) for a, k in ((input, "input"), (tensor1, "tensor1"), (tensor2, "tensor2"))
    )
    value = _scalar(value, name)
    dtype = operand_result_type(input, tensor1, tensor2)
    if name.startswith("addcdiv") and not dtype.is_floating_point:
        raise RuntimeError(
            "Integer division with addcdiv is no longer supported; use (input + value * tensor1 / tensor2) "
            "with floating-point tensors"
        )
    if not dtype.is_floating_point and isinstance(value, float):
        raise RuntimeError(f"{name}(): a float value requires floating-point tensors, got {dtype.name}")
    return cast(input, dtype), cast(tensor1, dtype), cast(tensor2, dtype), value


def addcmul(input, tensor1, tensor2, *, value=1):
    """``input + value * tensor1 * tensor2`` (broadcasting)."""
    return Addcmul.apply(*_addc_operands(input, tensor1, tensor2, value, "addcmul"))


def addcdiv(input, tensor1, tensor2, *, value=1):
    """``input + value * tensor1 / tensor2`` (broadcasting; floating-point tensors only)."""
    return Addcdiv.apply(*_addc_operands(input, tensor1, tensor2, value, "addcdiv"))


def _lerp_operands(input, end, weight, name):
    input = _tensor(input, name, "input")
    end = _tensor(end, name, "end")
    if not input.dtype.is_floating_point:
        raise RuntimeError(f"{name}(): expected a floating-point input, got {input.dtype.name}")
    if end._data.dtype != input._data.dtype:
        raise RuntimeError(f"expected dtype {input.dtype.name} for `end` but got dtype {end.dtype.name}")
    if isinstance(weight, Tensor):
        if weight._data.dtype != input._data.dtype:
            raise RuntimeError(f"expected dtype {input.dtype.name} for `weight` but got dtype {weight.dtype.name}")
    elif is_number(weight):
        weight = python_scalar(weight)
    else:
        raise TypeError(f"{name}(): 'weight' must be a number or a Tensor, not {type(weight).__name__}")
    return input, end, weight


def lerp(input, end, weight):
    """``input + weight * (end - input)``; ``weight`` is a number or a tensor (broadcasting)."""
    return Lerp.apply(*_lerp_operands(input, end, weight, "lerp"))


# ------------------------------------------------------------ in place
def _check_out_shape(t: Tensor, operands, name: str) -> None:
    for op in operands:
        shape = op._data.shape if isinstance(op, Tensor) else ()
        if not broadcasts_to(shape, t._data.shape):
            raise RuntimeError(
                f"{name}: output with shape {list(t.shape)} doesn't match the broadcast shape of an operand "
                f"{list(shape)}"
            )


def _check_castable(t: Tensor, dtype, name: str) -> None:
    if dtype.category > t.dtype.category:
        raise RuntimeError(f"{name}: result type {dtype.name} can't be cast to the desired output type {t.dtype.name}")


def addcmul_(input, tensor1, tensor2, *, value=1):
    """In place: ``input += value * tensor1 * tensor2``."""
    _, t1, t2, value = _addc_operands(input, tensor1, tensor2, value, "addcmul_")
    return _addc_inplace(input, Addcmul, t1, t2, value, "addcmul_")


def addcdiv_(input, tensor1, tensor2, *, value=1):
    """In place: ``input += value * tensor1 / tensor2``."""
    _, t1, t2, value = _addc_operands(input, tensor1, tensor2, value, "addcdiv_")
    return _addc_inplace(input, Addcdiv, t1, t2, value, "addcdiv_")


def _addc_inplace(input, fn_cls, t1, t2, value, name):
    _check_castable(input, t1.dtype, name)
    if t1._data.dtype != input._data.dtype:
        t1, t2 = cast(t1, input.dtype), cast(t2, input.dtype)
    _check_out_shape(input, (t1, t2), name)
    return apply_inplace(input, fn_cls, t1, t2, value)


def lerp_(input, end, weight):
    """In place: ``input += weight * (end - input)``."""
    input, end, weight = _lerp_operands(input, end, weight, "lerp_")
    _check_out_shape(input, (end, weight), "lerp_")
    return apply_inplace(input, Lerp, end, weight)


def _unary_inplace(input, fn_cls, ufunc: str, name: str):
    input = _tensor(input, name, "input")
    if not input.dtype.is_floating_point:
        _check_castable(input, get_default_dtype(), name)
    xp = _xp(input._data)

    def direct(data):
        getattr(xp, ufunc)(data, out=data)

    return apply_inplace(input, fn_cls, direct=direct)


def sqrt_(input):
    """In place: ``input = sqrt(input)`` (floating-point tensors)."""
    return _unary_inplace(input, Sqrt, "sqrt", "sqrt_")


def exp_(input):
    """In place: ``input = exp(input)`` (floating-point tensors)."""
    return _unary_inplace(input, Exp, "exp", "exp_")
