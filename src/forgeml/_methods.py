"""Bind the ops to ``Tensor`` as methods and operators.

``x.exp()`` is ``forgeml.exp(x)``: the same function object, so a method
costs no extra call. Reflected operators (``2 - x``) swap their operands.
"""

from __future__ import annotations

from ._methods_more import METHODS as _MORE_METHODS
from .ops import conversion, elementwise, indexing, inplace, linalg, nn, reduce, shape
from .ops._util import is_number, no_grad_op, normalize_dim
from .tensor import Tensor


def _reflected(fn):
    def method(self, other):
        return fn(other, self)

    method.__name__ = f"r{fn.__name__}"
    return method


def _comparison(fn):
    def method(self, other):
        if not (isinstance(other, Tensor) or is_number(other)):
            return NotImplemented
        return fn(self, other)

    return method


def _inplace_operator(fn):
    def method(self, other):
        return fn(self, other)

    return method


def narrow(input, dim: int, start: int, length: int):
    """A view of ``length`` elements of ``dim`` from ``start`` (which may be negative)."""
    d = normalize_dim(dim, input._data.ndim)
    size = input._data.shape[d]
    if start < 0:
        start += size
    if not (0 <= start <= size and 0 <= length and start + length <= size):
        raise IndexError(f"narrow(): start ({start}) + length ({length}) exceeds dimension size ({size}) of dim {d}")
    return indexing.getitem(input, (slice(None),) * d + (slice(start, start + length),))


def select(input, dim: int, index: int):
    d = normalize_dim(dim, input._data.ndim)
    size = input._data.shape[d]
    if not -size <= index < size:
        raise IndexError(
            f"select(): index {index} out of range for tensor of size {list(input.shape)} at dimension {d}"
        )
    return indexing.getitem(input, (slice(None),) * d + (index,))


def _split(self, split_size, dim: int = 0):
    """``Tensor.split``: PyTorch names the size argument ``split_size`` here (``split_size_or_sections`` in ``split``)."""
    return shape.split(self, split_size, dim)


def _tensor_where(self, condition, other):
    return elementwise.where(condition, self, other)


def _invert(self):
    if self._data.dtype.kind == "b":
        return elementwise.logical_not(self)
    return Tensor._make(~self._data, False, None)


def _bitwise(logical, name):
    ufunc_name = f"bitwise_{name}"

    def compute(xp, a, b):
        return getattr(xp, ufunc_name)(a, b)

    def method(self, other):
        a = self._data
        b = other._data if isinstance(other, Tensor) else other
        if a.dtype.kind == "b" and getattr(b, "dtype", None) is not None and b.dtype.kind == "b":
            return logical(self, other)
        return no_grad_op(compute, self, other, name=ufunc_name)

    return method


_METHODS = {
    # arithmetic
    "add": elementwise.add,
    "sub": elementwise.sub,
    "subtract": elementwise.sub,
    "mul": elementwise.mul,
    "multiply": elementwise.mul,
    "div": elementwise.div,
    "divide": elementwise.div,
    "true_divide": elementwise.div,
    "floor_divide": elementwise.floor_divide,
    "remainder": elementwise.remainder,
    "pow": elementwise.pow,
    "neg": elementwise.neg,
    "negative": elementwise.neg,
    "abs": elementwise.abs,
    "exp": elementwise.exp,
    "log": elementwise.log,
    "log1p": elementwise.log1p,
    "sqrt": elementwise.sqrt,
    "rsqrt": elementwise.rsqrt,
    "sin": elementwise.sin,
    "cos": elementwise.cos,
    "tanh": elementwise.tanh,
    "sigmoid": elementwise.sigmoid,
    "relu": elementwise.relu,
    "gelu": elementwise.gelu,
    "silu": elementwise.silu,
    "softplus": elementwise.softplus,
    "leaky_relu": elementwise.leaky_relu,
    "elu": elementwise.elu,
    "clamp": elementwise.clamp,
    "clip": elementwise.clamp,
    "maximum": elementwise.maximum,
    "minimum": elementwise.minimum,
    "square": elementwise.square,
    "reciprocal": elementwise.reciprocal,
    "sign": elementwise.sign,
    "floor": elementwise.floor,
    "ceil": elementwise.ceil,
    "round": elementwise.round,
    "trunc": elementwise.trunc,
    "where": _tensor_where,
    "matmul": linalg.matmul,
    "mm": linalg.mm,
    "bmm": linalg.bmm,
    "dot": linalg.dot,
    "mv": linalg.mv,
    "outer": linalg.outer,
    # comparisons and logic (no grad)
    "eq": elementwise.eq,
    "ne": elementwise.ne,
    "lt": elementwise.lt,
    "le": elementwise.le,
    "gt": elementwise.gt,
    "ge": elementwise.ge,
    "logical_and": elementwise.logical_and,
    "logical_or": elementwise.logical_or,
    "logical_xor": elementwise.logical_xor,
    "logical_not": elementwise.logical_not,
    "isnan": elementwise.isnan,
    "isinf": elementwise.isinf,
    "isfinite": elementwise.isfinite,
    "allclose": elementwise.allclose,
    "equal": elementwise.equal,
    # reductions
    "sum": reduce.sum,
    "mean": reduce.mean,
    "var": reduce.var,
    "std": reduce.std,
    "max": reduce.max,
    "min": reduce.min,
    "amax": reduce.amax,
    "amin": reduce.amin,
    "prod": reduce.prod,
    "logsumexp": reduce.logsumexp,
    "norm": reduce.norm,
    "argmax": reduce.argmax,
    "argmin": reduce.argmin,
    "softmax": nn.softmax,
    "log_softmax": nn.log_softmax,
    # shape
    "reshape": shape.reshape,
    "view": shape.view,
    "view_as": shape.view_as,
    "reshape_as": shape.reshape_as,
    "flatten": shape.flatten,
    "unflatten": shape.unflatten,
    "squeeze": shape.squeeze,
    "unsqueeze": shape.unsqueeze,
    "transpose": shape.transpose,
    "swapaxes": shape.transpose,
    "permute": shape.permute,
    "movedim": shape.movedim,
    "expand": shape.expand,
    "expand_as": shape.expand_as,
    "broadcast_to": shape.broadcast_to,
    "repeat": shape.repeat,
    "tile": shape.tile,
    "split": _split,
    "chunk": shape.chunk,
    "unbind": shape.unbind,
    "tril": shape.tril,
    "triu": shape.triu,
    "flip": shape.flip,
    "narrow": narrow,
    "select": select,
    # indexing
    "gather": indexing.gather,
    "scatter_add": indexing.scatter_add,
    "index_select": indexing.index_select,
    "masked_fill": indexing.masked_fill,
    "nonzero": indexing.nonzero,
    # conversion
    "clone": conversion.clone,
    "contiguous": conversion.contiguous,
    "to": conversion.to,
    "type_as": conversion.type_as,
    "float": conversion.float_,
    "double": conversion.double,
    "half": conversion.half,
    "long": conversion.long,
    "int": conversion.int_,
    "bool": conversion.bool_,
    "cpu": conversion.cpu,
    "cuda": conversion.cuda,
    # in place
    "add_": inplace.add_,
    "sub_": inplace.sub_,
    "mul_": inplace.mul_,
    "div_": inplace.div_,
    "zero_": inplace.zero_,
    "fill_": inplace.fill_,
    "clamp_": inplace.clamp_,
    "clip_": inplace.clamp_,
    "relu_": inplace.relu_,
    "copy_": inplace.copy_,
    "masked_fill_": inplace.masked_fill_,
    "uniform_": inplace.uniform_,
    "normal_": inplace.normal_,
    # operators
    "__add__": elementwise.add,
    "__radd__": _reflected(elementwise.add),
    "__sub__": elementwise.sub,
    "__rsub__": _reflected(elementwise.sub),
    "__mul__": elementwise.mul,
    "__rmul__": _reflected(elementwise.mul),
    "__truediv__": elementwise.div,
    "__rtruediv__": _reflected(elementwise.div),
    "__floordiv__": elementwise.floor_divide,
    "__rfloordiv__": _reflected(elementwise.floor_divide),
    "__mod__": elementwise.remainder,
    "__rmod__": _reflected(elementwise.remainder),
    "__pow__": elementwise.pow,
    "__rpow__": _reflected(elementwise.pow),
    "__matmul__": linalg.matmul,
    "__rmatmul__": _reflected(linalg.matmul),
    "__neg__": elementwise.neg,
    "__pos__": lambda self: self,
    "__abs__": elementwise.abs,
    "__invert__": _invert,
    "__and__": _bitwise(elementwise.logical_and, "and"),
    "__or__": _bitwise(elementwise.logical_or, "or"),
    "__xor__": _bitwise(elementwise.logical_xor, "xor"),
    "__eq__": _comparison(elementwise.eq),
    "__ne__": _comparison(elementwise.ne),
    "__lt__": _comparison(elementwise.lt),
    "__le__": _comparison(elementwise.le),
    "__gt__": _comparison(elementwise.gt),
    "__ge__": _comparison(elementwise.ge),
    "__getitem__": indexing.getitem,
    "__setitem__": inplace.setitem,
    "__iadd__": _inplace_operator(inplace.add_),
    "__isub__": _inplace_operator(inplace.sub_),
    "__imul__": _inplace_operator(inplace.mul_),
    "__itruediv__": _inplace_operator(inplace.div_),
}

_METHODS.update(_MORE_METHODS)  # sorting, scans, sampling, fused pointwise ops, new_*, type

for _name, _fn in _METHODS.items():
    setattr(Tensor, _name, _fn)

Tensor.T = property(shape.t_, doc="All dims reversed (the transpose of a matrix).")
Tensor.mT = property(shape.mT, doc="The last two dims swapped (a batch of transposed matrices).")
Tensor.__hash__ = object.__hash__  # defining __eq__ would otherwise remove hashing
