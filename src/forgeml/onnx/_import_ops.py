"""The ONNX ops that :func:`forgeml.onnx.load` runs, each written with ForgeML's differentiable ops.

A handler takes the node and its input values and returns the output value
(or a tuple, one per output). A value is a :class:`~forgeml.Tensor` (anything
computed from the graph inputs or the trainable initializers) or a NumPy array
(a constant: integer initializers, ``Constant`` nodes, and what ``Shape`` and
the shape arithmetic after it compute). The interpreter hands a handler
tensors for its data inputs; it evaluates a node whose inputs are all constants
on the host and keeps the result a constant, so shape subgraphs
(``Shape -> Gather -> Concat -> Reshape``) run on concrete NumPy values. Inputs
listed in ``meta`` (shapes, axes, pads, split sizes) reach the handler as they
are and are read on the host.

Float results go through ForgeML ops, so gradients reach the initializers;
integer and boolean results (ONNX integer division, comparisons, indices)
carry no gradient and are computed on the arrays directly, with ONNX's integer
semantics.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..autograd.function import ArrayFunction
from ..backend.device import namespace_of, to_host
from ..backend.dtypes import as_dtype, is_float
from ..ops import conv as C
from ..ops import creation, indexing, linalg, normalization, reduce, shape
from ..ops import elementwise as E
from ..ops import nn as N
from ..ops._util import as_tensor_like
from ..tensor import Tensor

__all__ = ["OPS", "OpDef", "host_tensor", "tensor_like"]


@dataclass(frozen=True)
class OpDef:
    """One supported op: its handler, the inputs it reads on the host, and a build-time capability check."""

    fn: Callable
    meta: frozenset = frozenset()
    check: Callable | None = None  # check(node, static_shape) -> None, or the reason the node cannot run


OPS: dict[str, OpDef] = {}


def op(*names: str, meta: tuple[int, ...] = (), check: Callable | None = None):
    def register(fn):
        for name in names:
            OPS[name] = OpDef(fn, frozenset(meta), check)
        return fn

    return register


# ----------------------------------------------------------------- value helpers
def host(value) -> np.ndarray:
    """A value as a host NumPy array (constants as they are, tensors copied off their device)."""
    if isinstance(value, Tensor):
        return np.asarray(to_host(value._data))
    return np.asarray(value)


def host_ints(value) -> list[int]:
    return [int(v) for v in host(value).reshape(-1)]


def host_scalar(value):
    return host(value).reshape(-1)[0].item()


def host_tensor(value) -> Tensor:
    """A constant as a CPU tensor sharing its memory when it can (a copy when not C-contiguous)."""
    arr = np.asarray(value)
    return Tensor(arr if arr.flags.c_contiguous else arr.copy())


def tensor_like(value, like: Tensor | None) -> Tensor:
    """``value`` as a tensor on ``like``'s device (on the CPU without ``like``)."""
    if isinstance(value, Tensor):
        return value
    t = host_tensor(value)
    return t if like is None else as_tensor_like(t._data, like)


def _floating(*values) -> bool:
    return any(isinstance(v, Tensor) and is_float(v._data.dtype) for v in values)


def _array_op(fn, *values) -> Tensor:
    """``fn(xp, *arrays)`` on tensors of one device, outside autograd (integer and boolean results)."""
    first = next(v for v in values if isinstance(v, Tensor))
    xp = namespace_of(first._data)
    arrays = [v._data if isinstance(v, Tensor) else v for v in values]
    return Tensor(xp.asarray(fn(xp, *arrays)))


def _axis(axis: int, ndim: int) -> int:
    if not -ndim <= axis < max(ndim, 1):
        raise ValueError(f"axis {axis} is out of range for a tensor of rank {ndim}")
    return axis + ndim if axis < 0 else axis


def _full_like(t: Tensor, shape, value) -> Tensor:
    return creation.full(tuple(shape), value, dtype=t.dtype, device=t.device)


def _lowest(t: Tensor):
    return -math.inf if is_float(t._data.dtype) else int(np.iinfo(t._data.dtype).min)


# ----------------------------------------------------------------- constants and identity
def _check_constant(node, static_shape) -> str | None:
    if not {"value", "value_float", "value_floats", "value_int", "value_ints"} & set(node.attrs):
        return "Constant (sparse or string value)"
    value = node.attrs.get("value")
    if value is not None and _forgeml_dtype(np.asarray(value).dtype) is None:
        return f"Constant (of {np.asarray(value).dtype})"
    return None


@op("Constant", check=_check_constant)
def constant(node):
    a = node.attrs
    if "value" in a:
        return np.array(a["value"])
    if "value_float" in a:
        return np.array(a["value_float"], dtype=np.float32)
    if "value_floats" in a:
        return np.array(a["value_floats"], dtype=np.float32)
    if "value_int" in a:
        return np.array(a["value_int"], dtype=np.int64)
    if "value_ints" in a:
        return np.array(a["value_ints"], dtype=np.int64)
    raise NotImplementedError(f"Constant with attribute(s) {sorted(a)}: ForgeML has no string or sparse tensors")


@op("Identity")
def identity(node, x):
    return x


@op("Dropout", meta=(1, 2))
def dropout(node, x, ratio=None, training_mode=None):
    # An exported graph is an inference graph: dropout is the identity (the mask, when asked for, is all true).
    if node.n_out > 1:
        return x, np.ones(x.shape, dtype=bool)
    return x


@op("ConstantOfShape", meta=(0,))
def constant_of_shape(node, shape_value):
    value = node.attrs.get("value")
    value = np.zeros(1, dtype=np.float32) if value is None else np.asarray(value)
    return np.full(host_ints(shape_value), value.reshape(-1)[0], dtype=value.dtype)


@op("Shape")
def shape_of(node, x):
    dims = tuple(x.shape)
    start, end = node.attrs.get("start", 0), node.attrs.get("end")
    return np.array(dims[start:end], dtype=np.int64)


@op("Size")
def size_of(node, x):
    return np.array(int(np.prod(x.shape, dtype=np.int64)), dtype=np.int64)


@op("Range", meta=(0, 1, 2))
def range_(node, start, limit, delta):
    s, lim, d = host(start), host(limit), host(delta)
    return np.arange(s.item(), lim.item(), d.item()).astype(s.dtype)


def _forgeml_dtype(np_dtype):
    try:
        return as_dtype(np_dtype)
    except TypeError:
        return None


def _onnx_dtype(code: int):
    """The ForgeML dtype of an ONNX element type (``TensorProto.FLOAT`` ...), or None where ForgeML has none."""
    from onnx.helper import tensor_dtype_to_np_dtype

    try:
        return _forgeml_dtype(tensor_dtype_to_np_dtype(code))
    except (KeyError, ValueError, TypeError):
        return None


def _check_cast(node, static_shape) -> str | None:
    if _onnx_dtype(node.attrs.get("to", 0)) is None:
        from onnx import TensorProto

        return f"Cast (to {TensorProto.DataType.Name(node.attrs.get('to', 0))})"
    return None


@op("Cast", check=_check_cast)
def cast(node, x):
    return x.to(_onnx_dtype(node.attrs["to"]))


@op("CastLike")
def cast_like(node, x, target):
    return x.to(target.dtype)


# ----------------------------------------------------------------- arithmetic
def _trunc_div(xp, a, b):
    q = xp.floor_divide(a, b)
    return q + ((xp.remainder(a, b) != 0) & ((a < 0) != (b < 0)))


@op("Add")
def add(node, a, b):
    return E.add(a, b)


@op("Sub")
def sub(node, a, b):
    return E.sub(a, b)


@op("Mul")
def mul(node, a, b):
    if not _floating(a, b) and a._data.dtype.kind == "b":
        return E.logical_and(a, b)
    return E.mul(a, b)


@op("Div")
def div(node, a, b):
    if _floating(a, b):
        return E.div(a, b)
    return _array_op(lambda xp, x, y: _trunc_div(xp, x, y).astype(x.dtype), a, b)  # ONNX truncates


@op("Mod")
def mod(node, a, b):
    if node.attrs.get("fmod", 0):  # C's fmod: the sign of the dividend
        if _floating(a, b):
            return E.sub(a, E.mul(E.trunc(E.div(a, b)), b))
        return _array_op(lambda xp, x, y: xp.fmod(x, y), a, b)
    return E.remainder(a, b)  # Python's %: the sign of the divisor


@op("Pow")
def pow_(node, a, b):
    if not _floating(a):
        return _array_op(lambda xp, x, y: xp.power(x, y).astype(x.dtype), a, b)
    if b._data.ndim == 0 and not b.requires_grad:
        value = b.item()
        return E.pow(a, float(value))
    return E.pow(a, b.to(a.dtype))


def _variadic(fn):
    def run(node, *xs):
        out = xs[0]
        for x in xs[1:]:
            out = fn(out, x)
        return out

    return run


op("Max")(_variadic(E.maximum))
op("Min")(_variadic(E.minimum))
op("Sum")(_variadic(E.add))


@op("Mean")
def mean_(node, *xs):
    return E.div(_variadic(E.add)(node, *xs), float(len(xs)))


# ----------------------------------------------------------------- comparisons and logic (no gradient)
op("Equal")(lambda node, a, b: E.eq(a, b))
op("Less")(lambda node, a, b: E.lt(a, b))
op("LessOrEqual")(lambda node, a, b: E.le(a, b))
op("Greater")(lambda node, a, b: E.gt(a, b))
op("GreaterOrEqual")(lambda node, a, b: E.ge(a, b))
op("And")(lambda node, a, b: E.logical_and(a, b))
op("Or")(lambda node, a, b: E.logical_or(a, b))
op("Xor")(lambda node, a, b: E.logical_xor(a, b))
op("Not")(lambda node, a: E.logical_not(a))
op("IsNaN")(lambda node, a: E.isnan(a))


@op("IsInf")
def isinf(node, x):
    pos, neg = node.attrs.get("detect_positive", 1), node.attrs.get("detect_negative", 1)
    return _array_op(lambda xp, a: xp.isinf(a) & (((a > 0) & bool(pos)) | ((a < 0) & bool(neg))), x)


@op("Where")
def where(node, cond, a, b):
    return E.where(cond, a, b)


# ----------------------------------------------------------------- unary functions
class Erf(ArrayFunction):
    """``erf(x) = 2 Phi(x sqrt 2) - 1``; its derivative is ``2 / sqrt(pi) exp(-x^2)``."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        phi = E.normal_cdf(x * x.dtype.type(math.sqrt(2.0)), ctx.xp)
        return (2 * phi - 1).astype(x.dtype, copy=False)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        xp = ctx.xp
        return g * (x.dtype.type(2.0 / math.sqrt(math.pi)) * xp.exp(-(x * x)))


def erf(x: Tensor) -> Tensor:
    if not is_float(x._data.dtype):
        raise TypeError(f"Erf expects a floating point input, got {x.dtype}")
    return Erf.apply(x)


_UNARY = {
    "Abs": (E.abs, "abs"),
    "Neg": (E.neg, "negative"),
    "Sign": (E.sign, "sign"),
    "Relu": (E.relu, None),
    "Sqrt": (E.sqrt, None),
    "Reciprocal": (E.reciprocal, None),
    "Exp": (E.exp, None),
    "Log": (E.log, None),
    "Sin": (E.sin, None),
    "Cos": (E.cos, None),
    "Tanh": (E.tanh, None),
    "Sigmoid": (E.sigmoid, None),
    "Floor": (E.floor, None),
    "Ceil": (E.ceil, None),
    "Round": (E.round, None),
    "Softplus": (E.softplus, None),
    "Erf": (erf, None),
}


def _unary(fn, int_name):
    def run(node, x):
        if not is_float(x._data.dtype):
            if int_name is not None:
                return _array_op(lambda xp, a: getattr(xp, int_name)(a), x)
            if node.op_type == "Relu":
                return _array_op(lambda xp, a: xp.maximum(a, 0).astype(a.dtype), x)
        return fn(x)

    return run


for _name, (_fn, _int_name) in _UNARY.items():
    op(_name)(_unary(_fn, _int_name))


@op("LeakyRelu")
def leaky_relu(node, x):
    return E.leaky_relu(x, node.attrs.get("alpha", 0.01))


@op("Elu")
def elu(node, x):
    return E.elu(x, node.attrs.get("alpha", 1.0))


@op("Celu")
def celu(node, x):
    alpha = node.attrs.get("alpha", 1.0)
    return E.mul(E.elu(E.div(x, alpha)), alpha)


@op("Selu")
def selu(node, x):
    alpha = node.attrs.get("alpha", 1.67326319217681884765625)
    gamma = node.attrs.get("gamma", 1.05070102214813232421875)
    return E.mul(E.elu(x, alpha), gamma)


@op("Gelu")
def gelu(node, x):
    return E.gelu(x, approximate=node.attrs.get("approximate", "none"))


@op("HardSigmoid")
def hard_sigmoid(node, x):
    alpha, beta = node.attrs.get("alpha", 0.2), node.attrs.get("beta", 0.5)
    return E.clamp(E.add(E.mul(x, alpha), beta), 0.0, 1.0)


@op("HardSwish")
def hard_swish(node, x):
    return E.mul(x, E.clamp(E.add(E.div(x, 6.0), 0.5), 0.0, 1.0))


@op("Softsign")
def softsign(node, x):
    return E.div(x, E.add(E.abs(x), 1.0))


@op("Mish")
def mish(node, x):
    return E.mul(x, E.tanh(E.softplus(x)))


@op("ThresholdedRelu")
def thresholded_relu(node, x):
    return E.where(E.gt(x, node.attrs.get("alpha", 1.0)), x, 0.0)


@op("PRelu")
def prelu(node, x, slope):
    return E.where(E.lt(x, 0), E.mul(x, slope), x)


@op("Clip", meta=(1, 2))
def clip(node, x, lo=None, hi=None):
    if node.opset < 11:
        lo, hi = node.attrs.get("min"), node.attrs.get("max")
    lo = None if lo is None else host_scalar(lo)
    hi = None if hi is None else host_scalar(hi)
    if lo is None and hi is None:
        return x
    if not is_float(x._data.dtype):
        return _array_op(lambda xp, a: xp.clip(a, lo, hi).astype(a.dtype), x)
    return E.clamp(x, lo, hi)


def _softmax(fn):
    def run(node, x):
        if node.opset >= 13:
            return fn(x, node.attrs.get("axis", -1))
        # Before opset 13 the input is seen as a matrix [prod(dims before axis), prod(dims from axis)].
        axis = _axis(node.attrs.get("axis", 1), x.ndim)
        rows = int(np.prod(x.shape[:axis], dtype=np.int64))
        return shape.reshape(fn(shape.reshape(x, (rows, -1)), 1), tuple(x.shape))

    return run


op("Softmax")(_softmax(N.softmax))
op("LogSoftmax")(_softmax(N.log_softmax))


# ----------------------------------------------------------------- linear algebra
@op("MatMul")
def matmul(node, a, b):
    return linalg.matmul(a, b)


@op("Gemm")
def gemm(node, a, b, c=None):
    alpha, beta = node.attrs.get("alpha", 1.0), node.attrs.get("beta", 1.0)
    trans_a, trans_b = node.attrs.get("transA", 0), node.attrs.get("transB", 0)
    if trans_a:
        a = shape.transpose(a, 0, 1)
    if trans_b and alpha == 1.0 and (c is None or (beta == 1.0 and c.ndim == 1 and c.shape[0] == b.shape[0])):
        return N.linear(a, b, c)  # the usual Linear layer: one fused op
    if trans_b:
        b = shape.transpose(b, 0, 1)
    y = linalg.matmul(a, b)
    if alpha != 1.0:
        y = E.mul(y, alpha)
    if c is not None:
        y = E.add(y, c if beta == 1.0 else E.mul(c, beta))
    return y


# ----------------------------------------------------------------- shape ops
@op("Reshape", meta=(1,))
def reshape(node, x, target):
    dims = host_ints(target)
    if not node.attrs.get("allowzero", 0):
        dims = [x.shape[i] if d == 0 else d for i, d in enumerate(dims)]
    return shape.reshape(x, tuple(dims))


@op("Flatten")
def flatten(node, x):
    axis = node.attrs.get("axis", 1)
    axis = axis + x.ndim if axis < 0 else axis
    outer = int(np.prod(x.shape[:axis], dtype=np.int64))
    inner = int(np.prod(x.shape[axis:], dtype=np.int64))
    return shape.reshape(x, (outer, inner))


def _axes_input(node, axes):
    if axes is not None:
        return host_ints(axes)
    found = node.attrs.get("axes")
    return None if found is None else list(found)


@op("Squeeze", meta=(1,))
def squeeze(node, x, axes=None):
    axes = _axes_input(node, axes)
    if axes is None:
        keep = [d for d in x.shape if d != 1]
    else:
        drop = {_axis(a, x.ndim) for a in axes}
        for a in drop:
            if x.shape[a] != 1:
                raise ValueError(f"Squeeze: dim {a} of a tensor of shape {list(x.shape)} is not 1")
        keep = [d for i, d in enumerate(x.shape) if i not in drop]
    return shape.reshape(x, tuple(keep))


@op("Unsqueeze", meta=(1,))
def unsqueeze(node, x, axes=None):
    axes = _axes_input(node, axes) or []
    rank = x.ndim + len(axes)
    new = {_axis(a, rank) for a in axes}
    dims = iter(x.shape)
    return shape.reshape(x, tuple(1 if i in new else next(dims) for i in range(rank)))


@op("Transpose")
def transpose(node, x):
    perm = node.attrs.get("perm")
    return shape.permute(x, tuple(perm) if perm is not None else tuple(reversed(range(x.ndim))))


@op("Concat")
def concat(node, *xs):
    return shape.cat(list(xs), node.attrs["axis"])


@op("Split", meta=(1,))
def split(node, x, sizes=None):
    axis = _axis(node.attrs.get("axis", 0), x.ndim)
    n = x.shape[axis]
    if sizes is not None:
        parts = host_ints(sizes)
    elif "split" in node.attrs:
        parts = list(node.attrs["split"])
    else:
        count = node.attrs.get("num_outputs", node.n_out)
        size = -(-n // count)  # opset 18: ceil, the last part smaller
        parts = [min(size, n - i * size) for i in range(count)]
        if node.opset < 18 and n % count:
            raise ValueError(f"Split: dim {axis} of size {n} does not split evenly into {count} outputs")
    return tuple(shape.split(x, parts, axis))


def _slice_bounds(start: int, end: int, step: int, dim: int) -> slice:
    """ONNX's clamping of one axis' start and end, as a Python slice."""
    if step == 0:
        raise ValueError("Slice: a step of 0 is not allowed")
    start = start + dim if start < 0 else start
    end = end + dim if end < 0 else end
    if step > 0:
        start, end = min(max(start, 0), dim), min(max(end, 0), dim)
    else:
        start, end = min(max(start, 0), dim - 1), min(max(end, -1), dim - 1)
    return slice(start, None if end < 0 else end, step)


@op("Slice", meta=(1, 2, 3, 4))
def slice_(node, x, starts=None, ends=None, axes=None, steps=None):
    if node.opset < 10:
        starts, ends = node.attrs["starts"], node.attrs["ends"]
        axes = node.attrs.get("axes")
        starts, ends = list(starts), list(ends)
        axes = list(axes) if axes is not None else None
    else:
        starts, ends = host_ints(starts), host_ints(ends)
        axes = host_ints(axes) if axes is not None else None
    steps = host_ints(steps) if steps is not None else [1] * len(starts)
    axes = list(range(len(starts))) if axes is None else [_axis(a, x.ndim) for a in axes]
    index = [slice(None)] * x.ndim
    for a, s, e, st in zip(axes, starts, ends, steps):
        index[a] = _slice_bounds(s, e, st, x.shape[a])
    return x[tuple(index)]


@op("Gather")
def gather(node, data, indices):
    axis = _axis(node.attrs.get("axis", 0), data.ndim)
    n = data.shape[axis]
    idx = indices._data
    xp = namespace_of(idx)
    flat = xp.where(idx < 0, idx + n, idx).reshape(-1)
    out = indexing.index_select(data, axis, flat)
    return shape.reshape(out, tuple(data.shape[:axis]) + tuple(idx.shape) + tuple(data.shape[axis + 1 :]))


@op("GatherElements")
def gather_elements(node, data, indices):
    axis = _axis(node.attrs.get("axis", 0), data.ndim)
    n = data.shape[axis]
    idx = indices._data
    xp = namespace_of(idx)
    return indexing.gather(data, axis, Tensor(xp.where(idx < 0, idx + n, idx).astype(xp.int64)))


@op("Expand", meta=(1,))
def expand(node, x, target):
    return shape.broadcast_to(x, tuple(np.broadcast_shapes(tuple(x.shape), tuple(host_ints(target)))))


@op("Tile", meta=(1,))
def tile(node, x, repeats):
    return shape.tile(x, tuple(host_ints(repeats)))


@op("Trilu", meta=(1,))
def trilu(node, x, k=None):
    k = 0 if k is None else host_scalar(k)
    return shape.triu(x, k) if node.attrs.get("upper", 1) else shape.tril(x, k)


def _pad_constant(x: Tensor, widths: dict[int, tuple[int, int]], value) -> Tensor:
    """``x`` padded (or cropped, for negative widths) by ``{axis: (before, after)}`` with ``value``, differentiably."""
    for axis, (before, after) in widths.items():
        if before < 0 or after < 0:
            index = [slice(None)] * x.ndim
            index[axis] = slice(max(-before, 0), x.shape[axis] - max(-after, 0))
            x = x[tuple(index)]
            before, after = max(before, 0), max(after, 0)
        pieces = []
        for width in (before, None, after):
            if width is None:
                pieces.append(x)
            elif width:
                dims = list(x.shape)
                dims[axis] = width
                pieces.append(_full_like(x, dims, value))
        if len(pieces) > 1:
            x = shape.cat(pieces, axis)
    return x


_PAD_MODES = {"reflect": "reflect", "edge": "replicate", "wrap": "circular"}


@op("Pad", meta=(1, 2, 3))
def pad(node, x, pads=None, value=None, axes=None):
    if node.opset < 11:
        pads, value = list(node.attrs["pads"]), node.attrs.get("value", 0.0)
    else:
        pads = host_ints(pads)
        value = 0 if value is None else host_scalar(value)
    axes = list(range(x.ndim)) if axes is None else [_axis(a, x.ndim) for a in host_ints(axes)]
    half = len(axes)
    widths = {a: (pads[i], pads[i + half]) for i, a in enumerate(axes) if pads[i] or pads[i + half]}
    mode = node.attrs.get("mode", "constant")
    if mode == "constant":
        return _pad_constant(x, widths, value)
    if mode not in _PAD_MODES:
        raise NotImplementedError(f"Pad mode {mode!r}: ForgeML pads in the modes constant, reflect, edge and wrap")
    if any(a < x.ndim - 2 for a in widths) or x.ndim < 2:
        raise NotImplementedError(f"Pad mode {mode!r}: ForgeML pads only the last two dims in this mode")
    h, w = widths.get(x.ndim - 2, (0, 0)), widths.get(x.ndim - 1, (0, 0))
    return C.mode_pad(x, (w[0], w[1], h[0], h[1]), _PAD_MODES[mode])


# ----------------------------------------------------------------- reductions
def _reduce(fn):
    def run(node, x, axes=None):
        axes = _axes_input(node, axes)
        if not axes:
            if node.attrs.get("noop_with_empty_axes", 0):
                return x
            axes = list(range(x.ndim))
        dims = tuple(sorted({_axis(a, x.ndim) for a in axes}))
        return fn(x, dims, bool(node.attrs.get("keepdims", 1)))

    return run


def _prod(x, dims, keepdim):
    for d in reversed(dims):
        x = reduce.prod(x, d, keepdim)
    return x


def _sum_square(x, dims, keepdim):
    return reduce.sum(E.mul(x, x), dims, keepdim)


_REDUCTIONS = {
    "ReduceMean": reduce.mean,
    "ReduceSum": reduce.sum,
    "ReduceMax": reduce.amax,
    "ReduceMin": reduce.amin,
    "ReduceProd": _prod,
    "ReduceSumSquare": _sum_square,
    "ReduceL1": lambda x, d, k: reduce.sum(E.abs(x), d, k),
    "ReduceL2": lambda x, d, k: E.sqrt(_sum_square(x, d, k)),
    "ReduceLogSum": lambda x, d, k: E.log(reduce.sum(x, d, k)),
    "ReduceLogSumExp": reduce.logsumexp,
}
for _name, _fn in _REDUCTIONS.items():
    op(_name, meta=(1,))(_reduce(_fn))


def _arg(largest: bool):
    def run(node, x):
        axis = _axis(node.attrs.get("axis", 0), x.ndim)
        keep, last = bool(node.attrs.get("keepdims", 1)), bool(node.attrs.get("select_last_index", 0))

        def compute(xp, a):
            pick = xp.argmax if largest else xp.argmin
            if last:
                out = a.shape[axis] - 1 - pick(xp.flip(a, axis), axis=axis)
            else:
                out = pick(a, axis=axis)
            out = xp.asarray(out).astype(xp.int64)
            return xp.expand_dims(out, axis) if keep else out

        return _array_op(compute, x)

    return run


op("ArgMax")(_arg(True))
op("ArgMin")(_arg(False))


@op("NonZero")
def nonzero(node, x):
    return _array_op(lambda xp, a: xp.stack(xp.nonzero(a)).astype(xp.int64).reshape(a.ndim, -1), x)


# ----------------------------------------------------------------- convolution and pooling
def _kernel_rank(node, static_shape) -> int | None:
    kernel = node.attrs.get("kernel_shape")
    if kernel is not None:
        return len(kernel)
    if node.op_type == "Conv":
        weight = static_shape(node.inputs[1])
        if weight is not None:
            return len(weight) - 2
    return None


def _check_spatial(node, static_shape) -> str | None:
    rank = _kernel_rank(node, static_shape)
    if rank is not None and rank not in (1, 2):
        return f"{node.op_type} ({rank}-D)"
    if node.op_type == "MaxPool" and node.n_out > 1:
        return "MaxPool (with Indices output)"
    if node.op_type == "AveragePool" and any(d != 1 for d in node.attrs.get("dilations", [])):
        return "AveragePool (with dilations)"
    return None


def _pads(node, in_sizes, kernel, strides, dilations) -> tuple[list[int], list[int]]:
    """``(begins, ends)`` of the spatial padding, from ``pads`` or ``auto_pad``."""
    nd = len(kernel)
    auto = node.attrs.get("auto_pad", "NOTSET")
    if auto in ("NOTSET", ""):
        pads = list(node.attrs.get("pads", [0] * (2 * nd)))
        return pads[:nd], pads[nd:]
    if auto == "VALID":
        return [0] * nd, [0] * nd
    begins, ends = [], []
    for size, k, s, d in zip(in_sizes, kernel, strides, dilations):
        out = -(-size // s)
        total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
        small, big = total // 2, total - total // 2
        begins.append(small if auto == "SAME_UPPER" else big)
        ends.append(big if auto == "SAME_UPPER" else small)
    return begins, ends


def _spatial(node, x, kernel):
    """Geometry of a 1-D or 2-D conv or pool as 2-D: ``(x as 4-D, kernel, strides, dilations, begins, ends)``."""
    nd = len(kernel)
    if nd not in (1, 2) or x.ndim != nd + 2:
        raise NotImplementedError(
            f"{node.op_type}: ForgeML runs 1-D and 2-D {node.op_type} on (N, C, ...) inputs; got a {nd}-D kernel "
            f"and an input of shape {list(x.shape)}"
        )
    strides = list(node.attrs.get("strides", [1] * nd))
    dilations = list(node.attrs.get("dilations", [1] * nd))
    begins, ends = _pads(node, x.shape[2:], kernel, strides, dilations)
    if nd == 1:  # a 1-D op is the 2-D op on a height of 1
        x = shape.reshape(x, (x.shape[0], x.shape[1], 1, x.shape[2]))
        kernel, strides, dilations = [1, *kernel], [1, *strides], [1, *dilations]
        begins, ends = [0, *begins], [0, *ends]
    return x, list(kernel), strides, dilations, begins, ends


def _back_to_rank(y: Tensor, nd: int) -> Tensor:
    return shape.reshape(y, (y.shape[0], y.shape[1], y.shape[3])) if nd == 1 else y


@op("Conv", check=_check_spatial)
def conv(node, x, w, b=None):
    nd = w.ndim - 2
    x4, _, strides, dilations, begins, ends = _spatial(node, x, list(w.shape[2:]))
    if nd == 1:
        w = shape.reshape(w, (w.shape[0], w.shape[1], 1, w.shape[2]))
    group = node.attrs.get("group", 1)
    if begins == ends:
        y = C.conv2d(x4, w, b, tuple(strides), tuple(begins), tuple(dilations), group)
    else:
        x4 = _pad_constant(x4, {2: (begins[0], ends[0]), 3: (begins[1], ends[1])}, 0.0)
        y = C.conv2d(x4, w, b, tuple(strides), 0, tuple(dilations), group)
    return _back_to_rank(y, nd)


def _symmetric_within_half(kernel, begins, ends) -> bool:
    return begins == ends and all(p <= k // 2 for p, k in zip(begins, kernel))


@op("MaxPool", check=_check_spatial)
def max_pool(node, x):
    if node.n_out > 1:
        raise NotImplementedError("MaxPool: ForgeML does not compute the Indices output")
    kernel = list(node.attrs["kernel_shape"])
    x4, kernel, strides, dilations, begins, ends = _spatial(node, x, kernel)
    ceil_mode = bool(node.attrs.get("ceil_mode", 0))
    if _symmetric_within_half(kernel, begins, ends):
        y = C.max_pool2d(x4, tuple(kernel), tuple(strides), tuple(begins), tuple(dilations), ceil_mode)
    else:
        x4 = _pad_constant(x4, {2: (begins[0], ends[0]), 3: (begins[1], ends[1])}, _lowest(x4))
        y = C.max_pool2d(x4, tuple(kernel), tuple(strides), 0, tuple(dilations), ceil_mode)
    return _back_to_rank(y, len(node.attrs["kernel_shape"]))


@op("AveragePool", check=_check_spatial)
def average_pool(node, x):
    kernel = list(node.attrs["kernel_shape"])
    x4, kernel, strides, _, begins, ends = _spatial(node, x, kernel)
    ceil_mode = bool(node.attrs.get("ceil_mode", 0))
    include_pad = bool(node.attrs.get("count_include_pad", 0))
    k, s = tuple(kernel), tuple(strides)
    if _symmetric_within_half(kernel, begins, ends):
        y = C.avg_pool2d(x4, k, s, tuple(begins), ceil_mode, include_pad)
    else:
        widths = {2: (begins[0], ends[0]), 3: (begins[1], ends[1])}
        y = C.avg_pool2d(_pad_constant(x4, widths, 0.0), k, s, 0, ceil_mode, True)
        if not include_pad:  # divide by the share of real pixels in each window
            ones = _full_like(x4, (1, 1, *x4.shape[2:]), 1.0)
            y = E.div(y, C.avg_pool2d(_pad_constant(ones, widths, 0.0), k, s, 0, ceil_mode, True))
    return _back_to_rank(y, len(node.attrs["kernel_shape"]))


@op("GlobalAveragePool")
def global_average_pool(node, x):
    return reduce.mean(x, tuple(range(2, x.ndim)), True)


@op("GlobalMaxPool")
def global_max_pool(node, x):
    return reduce.amax(x, tuple(range(2, x.ndim)), True)


# ----------------------------------------------------------------- normalization
def _check_batch_norm(node, static_shape) -> str | None:
    if node.attrs.get("training_mode", 0) and node.n_out > 1:
        return "BatchNormalization (training mode with running-statistics outputs)"
    return None


@op("BatchNormalization", check=_check_batch_norm)
def batch_norm(node, x, scale, bias, mean, var):
    eps = node.attrs.get("epsilon", 1e-5)
    if node.attrs.get("training_mode", 0):
        return C.batch_norm(x, None, None, scale, bias, training=True, eps=eps)
    # An exported graph normalises with its running statistics, in train() as in eval(): they are buffers.
    return C.batch_norm(x, mean, var, scale, bias, training=False, eps=eps)


@op("InstanceNormalization")
def instance_norm(node, x, scale, bias):
    eps = node.attrs.get("epsilon", 1e-5)
    dims = tuple(range(2, x.ndim))
    mean = reduce.mean(x, dims, True)
    var = reduce.var(x, dims, correction=0, keepdim=True)
    y = E.div(E.sub(x, mean), E.sqrt(E.add(var, eps)))
    per_channel = (1, x.shape[1]) + (1,) * (x.ndim - 2)
    return E.add(E.mul(y, shape.reshape(scale, per_channel)), shape.reshape(bias, per_channel))


@op("LayerNormalization")
def layer_norm(node, x, scale, bias=None):
    axis = _axis(node.attrs.get("axis", -1), x.ndim)
    eps = node.attrs.get("epsilon", 1e-5)
    normalized = tuple(x.shape[axis:])
    if tuple(scale.shape) != normalized:
        scale = shape.broadcast_to(scale, normalized)
    if bias is not None and tuple(bias.shape) != normalized:
        bias = shape.broadcast_to(bias, normalized)
    y = normalization.layer_norm(x, normalized, scale, bias, eps)
    if node.n_out == 1:
        return y
    dims = tuple(range(axis, x.ndim))
    mean = reduce.mean(x, dims, True)
    inv_std = E.rsqrt(E.add(reduce.var(x, dims, correction=0, keepdim=True), eps))
    return (y, mean, inv_std)[: node.n_out]


@op("RMSNormalization")
def rms_norm(node, x, scale):
    axis = _axis(node.attrs.get("axis", -1), x.ndim)
    normalized = tuple(x.shape[axis:])
    if tuple(scale.shape) != normalized:
        scale = shape.broadcast_to(scale, normalized)
    return normalization.rms_norm(x, normalized, scale, node.attrs.get("epsilon", 1e-5))
