"""``finfo`` and ``iinfo``: the numerical limits of ForgeML's dtypes, as ``torch.finfo`` / ``torch.iinfo`` give them."""

from __future__ import annotations

import math

import numpy as np

from . import dtypes as _dtypes

__all__ = ["finfo", "iinfo"]


def _dtype_of(dtype, who: str):
    if dtype is None:
        return _dtypes.get_default_dtype()
    try:
        return _dtypes.as_dtype(dtype)
    except (TypeError, ValueError, KeyError) as exc:
        raise TypeError(f"{who}() expects a forgeml dtype (such as forgeml.float32), got {dtype!r}") from exc


class finfo:  # noqa: N801 - PyTorch's name
    """Limits of a floating dtype (the default dtype when none is given).

    Attributes: ``bits``, ``eps`` (the gap between 1 and the next number),
    ``max``, ``min`` (the most negative), ``tiny`` / ``smallest_normal`` (the
    smallest positive normal number), ``resolution`` (10 to the minus the
    number of reliable decimal digits), ``dtype`` (the dtype's name).
    """

    def __init__(self, type=None) -> None:
        dtype = _dtype_of(type, "finfo")
        if not dtype.is_floating_point:
            raise TypeError(f"finfo() requires a floating point input type, got {dtype.name}; use iinfo for integers")
        if dtype is _dtypes.bfloat16:
            np_type = dtype.numpy  # ml_dtypes' bfloat16 (a TypeError naming the package when it is missing)
            import ml_dtypes

            info = ml_dtypes.finfo(np_type)
        else:
            info = np.finfo(dtype.numpy)
        self.bits = int(info.bits)
        self.eps = float(info.eps)
        self.max = float(info.max)
        self.min = float(info.min)
        self.tiny = float(info.smallest_normal)
        self.smallest_normal = self.tiny
        self.resolution = 10.0 ** -int(-math.log10(self.eps))  # as PyTorch: 10^-(reliable decimal digits)
        self.dtype = dtype.name

    def __repr__(self) -> str:
        return (
            f"finfo(resolution={self.resolution}, min={self.min:g}, max={self.max:g}, eps={self.eps:g}, "
            f"smallest_normal={self.smallest_normal:g}, tiny={self.tiny:g}, dtype={self.dtype})"
        )


class iinfo:  # noqa: N801 - PyTorch's name
    """Limits of an integer dtype: ``bits``, ``max``, ``min`` and ``dtype`` (the dtype's name)."""

    def __init__(self, type) -> None:
        dtype = _dtype_of(type, "iinfo")
        if dtype.is_floating_point or dtype is _dtypes.bool_:
            raise TypeError(f"iinfo() requires an integer input type, got {dtype.name}; use finfo for floats")
        info = np.iinfo(dtype.numpy)
        self.bits = int(info.bits)
        self.max = int(info.max)
        self.min = int(info.min)
        self.dtype = dtype.name

    def __repr__(self) -> str:
        return f"iinfo(min={self.min}, max={self.max}, dtype={self.dtype})"
