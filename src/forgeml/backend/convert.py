"""Turning user data (nested lists, numbers, NumPy or CuPy arrays) into arrays of a supported dtype."""

from __future__ import annotations

import numpy as np

from .device import is_array
from .dtypes import as_dtype, dtype_of_array, get_default_dtype

__all__ = ["as_array", "from_python_numbers"]


def from_python_numbers(data) -> bool:
    """True when ``data``'s first element is a Python number (not a NumPy scalar, array or tensor).

    PyTorch infers the dtype of Python numbers (float -> default float dtype,
    int -> int64) but keeps the dtype of NumPy scalars and arrays.
    """
    while isinstance(data, (list, tuple)) and data:
        data = data[0]
    if isinstance(data, np.generic):  # np.float64 subclasses float, but keeps its dtype
        return False
    return isinstance(data, (bool, int, float)) or (isinstance(data, (list, tuple)) and not data)


def _host_array(data):
    try:
        arr = np.asarray(data)
    except ValueError as exc:
        raise ValueError(f"could not build a tensor from {type(data).__name__}: {exc}") from None
    if arr.dtype == object:
        raise TypeError(
            f"could not infer a dtype for {type(data).__name__} data: expected (nested, rectangular) "
            "sequences of numbers, or arrays"
        )
    if arr.dtype.kind in "US":
        raise TypeError(f"can't build a tensor from strings ({arr.dtype})")
    return arr


def as_array(data, dtype=None):
    """``data`` as an array of a supported dtype, on the device it is on (the CPU for Python data).

    Arrays are returned as they are when no conversion is needed.
    """
    if is_array(data):
        arr = data
    else:
        arr = _host_array(data)
        if dtype is None and from_python_numbers(data):
            if arr.dtype.kind == "f":
                arr = arr.astype(get_default_dtype().numpy)
            elif arr.dtype.kind in "iu":
                arr = arr.astype(np.int64)
    if dtype is not None:
        target = as_dtype(dtype).numpy
        if arr.dtype != target:
            arr = arr.astype(target)
    else:
        dtype_of_array(arr)
    return arr
