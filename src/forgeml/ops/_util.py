"""Helpers shared by the op families: broadcast gradients, dims, operand promotion."""

from __future__ import annotations

import numbers

import numpy as np

from ..backend.dtypes import BOOL, FLOAT, INT, as_dtype, dtype_of_array, get_default_dtype, result_type
from ..tensor import Tensor

__all__ = [
    "binary_operands",
    "normalize_dim",
    "normalize_dims",
    "unbroadcast",
]


def unbroadcast(grad, shape):
    """Sum ``grad`` back to ``shape``: over the leading dims broadcasting added, then over size-1 dims."""
    if grad.shape == shape:
        return grad
    extra = grad.ndim - len(shape)
    if extra < 0:
        return np.broadcast_to(grad, shape)
    if extra:
        grad = grad.sum(axis=tuple(range(extra)))
    axes = tuple(i for i, size in enumerate(shape) if size == 1 and grad.shape[i] != 1)
    if axes:
        grad = grad.sum(axis=axes, keepdims=True)
    return grad


def broadcasts_to(shape, target) -> bool:
    """True when an array of ``shape`` broadcasts to exactly ``target`` (what in-place ops and masks need)."""
    if tuple(shape) == tuple(target):
        return True
    try:
        return np.broadcast_shapes(shape, target) == tuple(target)
    except ValueError:
        return False


def normalize_dim(dim, ndim: int, *, allow_end: bool = False) -> int:
    """A dim in ``[-ndim, ndim)`` (``[-ndim-1, ndim]`` with ``allow_end``) as a non-negative int."""
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)):
        raise TypeError(f"dim must be an int, got {type(dim).__name__}")
    size = ndim + 1 if allow_end else ndim
    low, high = -max(size, 1), max(size, 1) - 1
    if not low <= dim <= high:
        raise IndexError(f"Dimension out of range (expected to be in range of [{low}, {high}], but got {dim})")
    return int(dim) % max(size, 1)


def normalize_dims(dim, ndim: int) -> tuple[int, ...]:
    """``dim`` (None, an int, or a sequence of ints) as a sorted tuple of distinct non-negative dims."""
    if dim is None:
        return tuple(range(ndim))
    if isinstance(dim, (list, tuple)):
        dims = tuple(normalize_dim(d, ndim) for d in dim)
        if len(set(dims)) != len(dims):
            raise RuntimeError(f"dim {list(dim)} appears multiple times in the list of dims")
        return tuple(sorted(dims))
    return (normalize_dim(dim, ndim),)


def is_number(value) -> bool:
    return isinstance(value, numbers.Number) and not isinstance(value, complex)


def python_scalar(value):
    """Plain ``bool``/``int``/``float`` for a NumPy scalar, so it stays a weak (non-promoting) operand."""
    if isinstance(value, np.generic):
        return value.item()
    return value


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
    return t.to(dtype) if t.data.dtype != dtype.numpy else t


def binary_operands(a, b, op_name: str):
    """Apply PyTorch's type promotion to two operands of a binary op."""
    a = _check_operand(a, op_name)
    b = _check_operand(b, op_name)
    a_is_t = isinstance(a, Tensor)
    b_is_t = isinstance(b, Tensor)
    if a_is_t and b_is_t:
        if a.data.dtype == b.data.dtype:
            return a, b
        target = result_type([(dtype_of_array(a.data), a.data.ndim), (dtype_of_array(b.data), b.data.ndim)])
        return cast(a, target), cast(b, target)
    t, s = (a, b) if a_is_t else (b, a)
    if not (a_is_t or b_is_t):
        raise TypeError(f"{op_name}: at least one operand must be a Tensor")
    t_cat = dtype_of_array(t.data).category
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
            described.append((dtype_of_array(op.data), op.data.ndim))
        else:
            described.append(python_scalar(op))
    return result_type(described)


def float_like(t: Tensor) -> Tensor:
    """``t`` as a floating tensor (integers and bools become the default float dtype)."""
    if t.data.dtype.kind in "biu":
        return t.to(get_default_dtype())
    return t


__all__ += ["cast", "float_like", "is_number", "operand_result_type", "python_scalar", "FLOAT"]
