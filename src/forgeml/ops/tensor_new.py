"""``Tensor.new_*`` factories and ``Tensor.type``.

``x.new_zeros(size)`` and friends make a tensor with ``x``'s dtype and device
unless ``dtype=``/``device=`` say otherwise; ``new_tensor(data)`` always copies
(a tensor given as ``data`` is copied and detached). ``x.type()`` names the
tensor type the way PyTorch does, with ForgeML's prefix
(``'forgeml.FloatTensor'``, ``'forgeml.cuda.LongTensor'``); ``x.type(dtype)``
converts (a dtype, a dtype name, or such a type string).
"""

from __future__ import annotations

from ..backend.dtypes import as_dtype
from ..tensor import Tensor
from . import creation
from .conversion import clone, to

__all__ = ["new_empty", "new_full", "new_ones", "new_tensor", "new_zeros", "type_"]

# dtype name -> PyTorch's legacy tensor type name
_TYPE_NAMES = {
    "float32": "FloatTensor",
    "float64": "DoubleTensor",
    "float16": "HalfTensor",
    "bfloat16": "BFloat16Tensor",
    "uint8": "ByteTensor",
    "int8": "CharTensor",
    "int16": "ShortTensor",
    "int32": "IntTensor",
    "int64": "LongTensor",
    "bool": "BoolTensor",
}
_DTYPE_OF_TYPE = {v: k for k, v in _TYPE_NAMES.items()}


def _defaults(self: Tensor, dtype, device):
    return (dtype if dtype is not None else self.dtype), (device if device is not None else self.device)


def new_zeros(self, *size, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    """Zeros of ``size``, with ``self``'s dtype and device unless given."""
    dtype, device = _defaults(self, dtype, device)
    return creation.zeros(*size, dtype=dtype, device=device, requires_grad=requires_grad)


def new_ones(self, *size, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    """Ones of ``size``, with ``self``'s dtype and device unless given."""
    dtype, device = _defaults(self, dtype, device)
    return creation.ones(*size, dtype=dtype, device=device, requires_grad=requires_grad)


def new_empty(self, *size, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    """An uninitialised tensor of ``size``, with ``self``'s dtype and device unless given."""
    dtype, device = _defaults(self, dtype, device)
    return creation.empty(*size, dtype=dtype, device=device, requires_grad=requires_grad)


def new_full(self, size, fill_value, *, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    """A tensor of ``size`` filled with ``fill_value``, with ``self``'s dtype and device unless given."""
    dtype, device = _defaults(self, dtype, device)
    return creation.full(size, fill_value, dtype=dtype, device=device, requires_grad=requires_grad)


def new_tensor(self, data, *, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    """A copy of ``data`` as a new leaf tensor, with ``self``'s dtype and device unless given."""
    dtype, device = _defaults(self, dtype, device)
    if isinstance(data, Tensor):
        out = clone(to(data.detach(), device, dtype))
    else:
        out = creation.tensor(data, dtype=dtype, device=device)
    return out.requires_grad_(requires_grad) if requires_grad else out


def _type_name(t: Tensor) -> str:
    prefix = "forgeml.cuda." if t.device.type == "cuda" else "forgeml."
    return prefix + _TYPE_NAMES[t.dtype.name]


def _dtype_of(dtype):
    if isinstance(dtype, str):
        name = dtype.removeprefix("forgeml.").removeprefix("torch.")
        cuda = name.startswith("cuda.")
        name = name.removeprefix("cuda.")
        if name in _DTYPE_OF_TYPE:
            return as_dtype(_DTYPE_OF_TYPE[name]), ("cuda" if cuda else "cpu")
    return as_dtype(dtype), None


def type_(self, dtype=None, non_blocking: bool = False):
    """With no ``dtype``: the type name (``'forgeml.FloatTensor'``). Otherwise ``self`` converted to ``dtype``
    (``self`` itself when it already has it)."""
    if dtype is None:
        return _type_name(self)
    target, device = _dtype_of(dtype)
    if device is not None and device != self.device.type:
        return to(self, device, target)
    return to(self, target)
