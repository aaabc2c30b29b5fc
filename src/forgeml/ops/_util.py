"""Helpers shared by the op families: operand promotion, no-grad array ops, device checks.

Dim and shape helpers live in :mod:`forgeml.backend.shapes` (below both
tensors and ops); they are re-exported here for the op modules.
"""

from __future__ import annotations

import numbers

from ..autograd.function import _as_array, _raise_device_mismatch
from ..backend.convert import as_array
from ..backend.device import HOST_ARRAY, namespace_for_type, to_device
from ..backend.dtypes import BOOL, FLOAT, INT, as_dtype, dtype_of_array, get_default_dtype, result_type
from ..backend.shapes import broadcasts_to, normalize_dim, normalize_dims, size_args
from ..tensor import Tensor

__all__ = [
    "as_tensor_like",
    "binary_operands",
    "broadcasts_to",
    "no_grad_op",
    "normalize_dim",
    "normalize_dims",
    "size_args",
]


def is_number(value) -> bool:
    return isinstance(value, numbers.Number) and not isinstance(value, complex)


def python_scalar(value):
    """Plain ``bool``/``int``/``float`` for a NumPy scalar, so it stays a weak (non-promoting) operand."""
    if not isinstance(value, (bool, int, float)) and hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        return value.item()
    return value


class _NoGradOp:
    """Stands in for a Function class in device-mismatch errors raised by :func:`no_grad_op`."""

    def __init__(self, name: str) -> None:
        self.__name__ = name


def no_grad_op(fn, *operands, name: str = "op"):
    """``fn(xp, *arrays)`` on the operands (tensors unwrapped, all on one device) as a tensor outside autograd.

    For results that carry no gradient: comparisons, logic, integer arithmetic.
    """
    arrays = []
    array_type = None
    for operand in operands:
        if isinstance(operand, Tensor):
            data = operand._data
            if array_type is None:
                array_type = type(data)
            elif type(data) is not array_type:
                _raise_device_mismatch(_NoGradOp(name), operands)
            arrays.append(data)
        else:
            arrays.append(operand)
    xp = namespace_for_type(array_type if array_type is not None else HOST_ARRAY)
    return Tensor._make(_as_array(fn(xp, *arrays), xp), False, None)


def as_tensor_like(data, like, dtype=None) -> Tensor:
    """``data`` (a tensor, array, list or number) as a tensor on ``like``'s device (the CPU if ``like`` is None)."""
    if isinstance(data, Tensor):
        return data
    arr = as_array(data, dtype)
    if isinstance(like, Tensor) and type(like._data) is not type(arr):
        arr = to_device(arr, like.device)
    return Tensor._make(arr, False, None)


def _check_operand(value, op_name: str):
    if isinstance(value, Tensor):
        return value
    if is_number(value):
        return python_scalar(value)
    raise TypeError(
        f"{op_name}: expected a Tensor or a number as operand, got {type(value).__name__}; "
        "wrap arrays and lists with forgeml.tensor(...)"
    )


def cast(t: Tensor, dtype) -> Tensor:
    """``t`` converted to ``dtype`` (differentiable for float targets); ``t`` itself when already there."""
    return t.to(dtype) if t._data.dtype != dtype.numpy else t


def binary_operands(a, b, op_name: str):
    """Apply PyTorch's type promotion to two operands of a binary op."""
    a = _check_operand(a, op_name)
    b = _check_operand(b, op_name)
    a_is_t = isinstance(a, Tensor)
    b_is_t = isinstance(b, Tensor)
    if a_is_t and b_is_t:
        if a._data.dtype == b._data.dtype:
            return a, b
        target = result_type([(dtype_of_array(a._data), a._data.ndim), (dtype_of_array(b._data), b._data.ndim)])
        return cast(a, target), cast(b, target)
    t, s = (a, b) if a_is_t else (b, a)
    if not (a_is_t or b_is_t):
        raise TypeError(f"{op_name}: at least one operand must be a Tensor")
    t_cat = dtype_of_array(t._data).category
    if isinstance(s, bool):
        s_cat = BOOL
    elif isinstance(s, int):
        s_cat = INT
    else:
        s_cat = FLOAT
    if s_cat > t_cat:
        t = cast(t, get_default_dtype() if s_cat == FLOAT else as_dtype("int64"))
    elif t_cat == FLOAT and s_cat == FLOAT:
        pass
    return (t, s) if a_is_t else (s, t)


def operand_result_type(*operands):
    """The promoted dtype of tensors and Python numbers (``torch.result_type``)."""
    described = []
    for op in operands:
        if isinstance(op, Tensor):
            described.append((dtype_of_array(op._data), op._data.ndim))
        else:
            described.append(python_scalar(op))
    return result_type(described)


def float_like(t: Tensor) -> Tensor:
    """``t`` as a floating tensor (integers and bools become the default float dtype)."""
    if t._data.dtype.kind in "biu":
        return t.to(get_default_dtype())
    return t


__all__ += ["cast", "float_like", "is_number", "operand_result_type", "python_scalar", "FLOAT"]
