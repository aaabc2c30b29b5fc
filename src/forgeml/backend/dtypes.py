"""ForgeML's dtypes and PyTorch's type-promotion rules.

Each :class:`DType` wraps a NumPy dtype (CuPy uses the same ones). Promotion
follows ``torch.result_type``: categories bool < integer < floating; within a
category the wider type wins; zero-dimensional tensors only matter when they
are of a higher category than the dimensioned ones; a Python scalar only
matters when it is of a higher category than every tensor, and then gives the
default type of its category (``int64``, or the default float dtype).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "DType",
    "is_float",
    "as_dtype",
    "dtype_of_array",
    "get_default_dtype",
    "promote_types",
    "result_type",
    "set_default_dtype",
]

BOOL, INT, FLOAT = 0, 1, 2


class DType:
    """A tensor element type, such as ``forgeml.float32``."""

    __slots__ = ("name", "numpy", "category", "itemsize")

    def __init__(self, name: str, numpy_dtype, category: int) -> None:
        self.name = name
        self.numpy = np.dtype(numpy_dtype)
        self.category = category
        self.itemsize = self.numpy.itemsize

    @property
    def is_floating_point(self) -> bool:
        return self.category == FLOAT

    @property
    def is_signed(self) -> bool:
        return self.numpy.kind in "if"

    def __repr__(self) -> str:
        return f"forgeml.{self.name}"

    def __reduce__(self):
        return (as_dtype, (self.name,))


class _LazyDType(DType):
    """A dtype whose NumPy type comes from an optional package, resolved on first use (bfloat16: ml_dtypes)."""

    __slots__ = ("_module", "_attr")

    def __init__(self, name: str, module: str, attr: str, itemsize: int, category: int) -> None:
        self.name, self.category, self.itemsize = name, category, itemsize
        self._module, self._attr = module, attr

    @property
    def numpy(self):
        try:
            module = __import__(self._module)
        except ImportError as exc:
            raise TypeError(
                f"{self.name} tensors need the {self._module} package (pip install {self._module.replace('_', '-')})"
            ) from exc
        resolved = np.dtype(getattr(module, self._attr))
        _BY_NUMPY.setdefault(resolved, self)
        return resolved


float16 = DType("float16", np.float16, FLOAT)
bfloat16 = _LazyDType("bfloat16", "ml_dtypes", "bfloat16", 2, FLOAT)
float32 = DType("float32", np.float32, FLOAT)
float64 = DType("float64", np.float64, FLOAT)
uint8 = DType("uint8", np.uint8, INT)
int8 = DType("int8", np.int8, INT)
int16 = DType("int16", np.int16, INT)
int32 = DType("int32", np.int32, INT)
int64 = DType("int64", np.int64, INT)
bool_ = DType("bool", np.bool_, BOOL)

ALL_DTYPES = (float16, bfloat16, float32, float64, uint8, int8, int16, int32, int64, bool_)
_BY_NUMPY = {d.numpy: d for d in ALL_DTYPES if d is not bfloat16}
_BY_NAME = {d.name: d for d in ALL_DTYPES}
_BY_NAME.update(
    {
        "half": float16,
        "float": float32,
        "double": float64,
        "short": int16,
        "int": int32,
        "long": int64,
        "bool_": bool_,
    }
)

_default_float = float32


def get_default_dtype() -> DType:
    """The dtype that Python floats and float creation functions produce (float32 unless changed)."""
    return _default_float


def set_default_dtype(d) -> None:
    """Set the default floating dtype (``float16``, ``float32`` or ``float64``)."""
    global _default_float
    d = as_dtype(d)
    if d.category != FLOAT:
        raise TypeError(f"the default dtype must be a floating dtype, got {d}")
    _default_float = d


def as_dtype(dtype) -> DType:
    """Normalise a :class:`DType`, NumPy dtype, name (``'float32'``) or Python type to a :class:`DType`."""
    if isinstance(dtype, DType):
        return dtype
    if dtype is float:
        return _default_float
    if dtype is int:
        return int64
    if dtype is bool:
        return bool_
    if isinstance(dtype, str):
        found = _BY_NAME.get(dtype.removeprefix("forgeml.").removeprefix("torch."))
        if found is not None:
            return found
    try:
        np_dtype = np.dtype(dtype)
    except TypeError:
        np_dtype = None
    found = _BY_NUMPY.get(np_dtype)
    if found is None and np_dtype is not None and np_dtype.name == "bfloat16":
        bfloat16.numpy  # noqa: B018 - registers ml_dtypes' bfloat16
        found = _BY_NUMPY.get(np_dtype)
    if found is None:
        names = ", ".join(d.name for d in ALL_DTYPES)
        raise TypeError(f"unsupported dtype {dtype!r}; ForgeML supports {names}")
    return found


def dtype_of_array(array) -> DType:
    """The :class:`DType` of a NumPy/CuPy array; raises for element types ForgeML does not support."""
    found = _BY_NUMPY.get(array.dtype)
    if found is None and array.dtype.name == "bfloat16":
        bfloat16.numpy  # noqa: B018 - registers ml_dtypes' bfloat16
        found = _BY_NUMPY.get(array.dtype)
    if found is None:
        names = ", ".join(d.name for d in ALL_DTYPES)
        raise TypeError(f"unsupported array dtype {array.dtype}; ForgeML supports {names}")
    return found


def is_float(np_dtype) -> bool:
    """True for a floating NumPy/CuPy dtype, bfloat16 included (ml_dtypes gives it kind 'V', not 'f')."""
    return np_dtype.kind == "f" or np_dtype.name == "bfloat16"


def promote_types(a: DType, b: DType) -> DType:
    """The smallest dtype both ``a`` and ``b`` convert to (``torch.promote_types``)."""
    if a is b:
        return a
    if a.category != b.category:
        return a if a.category > b.category else b
    if a is bfloat16 or b is bfloat16:  # bfloat16 with float16 gives float32; with a wider float, the wider one
        other = b if a is bfloat16 else a
        return float32 if other is float16 else other
    return _BY_NUMPY[np.promote_types(a.numpy, b.numpy)]


def scalar_category(value) -> int:
    if isinstance(value, (bool, np.bool_)):
        return BOOL
    if isinstance(value, (int, np.integer)):
        return INT
    if isinstance(value, (float, np.floating)):
        return FLOAT
    raise TypeError(f"expected a number, got {type(value).__name__}")


def result_type(operands) -> DType:
    """The dtype of an op on ``operands``: pairs ``(dtype, ndim)`` for tensors, or Python scalars."""
    dims = zero = None
    scalar_cat = -1
    for op in operands:
        if isinstance(op, tuple):
            dt, ndim = op
            if ndim:
                dims = dt if dims is None else promote_types(dims, dt)
            else:
                zero = dt if zero is None else promote_types(zero, dt)
        else:
            scalar_cat = max(scalar_cat, scalar_category(op))
    result = dims
    if zero is not None and (result is None or zero.category > result.category):
        result = zero
    if result is None:
        return {BOOL: bool_, INT: int64, FLOAT: _default_float}[scalar_cat]
    if scalar_cat > result.category:
        return int64 if scalar_cat == INT else _default_float
    return result
