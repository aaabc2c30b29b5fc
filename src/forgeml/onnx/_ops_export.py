"""The ONNX form of each ForgeML op: one emitter per ``Function`` class, found by the class the tracer sees.

An emitter ``fn(ctx, call)`` appends the nodes that compute the op to ``ctx`` (an
:class:`~._trace.ExportContext`) and writes its results to ``call.outputs``. ``call.args`` and
``call.kwargs`` are the op's arguments as ``apply`` got them (tensors hold traced arrays;
sizes that depend on dynamic axes are :class:`~._trace.SymInt`); ``call.results`` are the
computed results (their dtypes and shapes). The registry lives here, beside the exporter, so that
the tensor stack never imports ``onnx``; a user's own ``Function`` can be given an ONNX form with
``@emits(MyFunction)``.
"""

from __future__ import annotations

import math

import numpy as np

from ..ops import attention, conv, conversion, elementwise, indexing, linalg, nn, normalization, reduce, shape, sparse
from ..tensor import Tensor
from ._errors import ExportError, UnsupportedOperatorError
from ._trace import INT64_MIN, ExportContext, SymInt, TracedArray, gather_axis, shadow_of, traced_view

__all__ = ["EMITTERS", "OpCall", "emits"]

EMITTERS: dict[type, object] = {}
PRECHECKS: dict[type, object] = {}
SHADOW_ARGS: dict[type, object] = {}  # op -> fn(args, kwargs) giving its arguments in the shadow trace


class OpCall:
    """One traced op call: its class, arguments, output names and computed results."""

    __slots__ = ("args", "kwargs", "op", "outputs", "results")

    def __init__(self, op, args, kwargs, outputs, results) -> None:
        self.op, self.args, self.kwargs, self.outputs, self.results = op, args, kwargs, outputs, results

    @property
    def out(self) -> str:
        return self.outputs[0]

    @property
    def dtype(self):
        return self.results[0].dtype


def emits(*ops, precheck=None):
    """Register ``fn(ctx, call)`` as the ONNX form of the ``Function`` classes ``ops``. ``precheck(args,
    kwargs)``, when given, runs before the op does and raises for calls that have no ONNX form."""

    def register(fn):
        for op in ops:
            EMITTERS[op] = fn
            if precheck is not None:
                PRECHECKS[op] = precheck
        return fn

    return register


def _static(ctx: ExportContext, value, what: str) -> int:
    if isinstance(value, SymInt):
        raise ExportError(f"{what} depends on a dynamic axis, and ONNX needs it fixed here{ctx.where()}")
    return int(value)


def _refuse(message: str):
    def check(args, kwargs):
        raise UnsupportedOperatorError(message)

    return check


# ---------------------------------------------------------------- elementwise
_BINARY = {
    elementwise.Add: "Add",
    elementwise.Sub: "Sub",
    elementwise.Mul: "Mul",
    elementwise.Div: "Div",
    elementwise.Maximum: "Max",
    elementwise.Minimum: "Min",
}


_BOOL_BINARY = {"Add": "Or", "Mul": "And", "Max": "Or", "Min": "And"}  # NumPy's arithmetic on booleans


@emits(*_BINARY)
def _binary(ctx, call):
    a, b = (ctx.name(x, call.dtype) for x in call.args)
    op = _BINARY[call.op]
    if call.dtype == np.bool_:
        if op not in _BOOL_BINARY:
            raise UnsupportedOperatorError(f"{op} of booleans has no ONNX form{ctx.where()}")
        op = _BOOL_BINARY[op]
    ctx.node(op, [a, b], outputs=call.outputs)


@emits(elementwise.Pow)
def _pow(ctx, call):
    a, b = call.args
    exponent_dtype = call.dtype if call.dtype.kind == "f" else None
    ctx.node("Pow", [ctx.name(a, call.dtype), ctx.name(b, exponent_dtype)], outputs=call.outputs)


@emits(elementwise.Remainder)
def _remainder(ctx, call):
    a, b = (ctx.name(x, call.dtype) for x in call.args)
    if call.dtype.kind in "iu":
        ctx.node("Mod", [a, b], outputs=call.outputs, fmod=0)
        return
    floor = ctx.node("Floor", [ctx.node("Div", [a, b])])
    ctx.node("Sub", [a, ctx.node("Mul", [floor, b])], outputs=call.outputs)


@emits(elementwise.FloorDivide)
def _floor_divide(ctx, call):
    a, b = (ctx.name(x, call.dtype) for x in call.args)
    if call.dtype.kind == "f":
        ctx.node("Floor", [ctx.node("Div", [a, b])], outputs=call.outputs)
    elif call.dtype == np.int64:
        ctx.node("Identity", [ctx.floor_div_int(a, b, False)], outputs=call.outputs)
    else:
        wide = ctx.floor_div_int(ctx.cast(a, np.int64), ctx.cast(b, np.int64), False)
        ctx.node("Cast", [wide], outputs=call.outputs, to=ctx.onnx_type(call.dtype))


@emits(elementwise.Where)
def _where(ctx, call):
    cond, a, b = call.args
    ctx.node(
        "Where", [ctx.name(cond, np.bool_), ctx.name(a, call.dtype), ctx.name(b, call.dtype)], outputs=call.outputs
    )


_UNARY = {
    elementwise.Neg: "Neg",
    elementwise.Abs: "Abs",
    elementwise.Exp: "Exp",
    elementwise.Log: "Log",
    elementwise.Sqrt: "Sqrt",
    elementwise.Sin: "Sin",
    elementwise.Cos: "Cos",
    elementwise.Tanh: "Tanh",
    elementwise.Sigmoid: "Sigmoid",
    elementwise.Relu: "Relu",
    elementwise.Reciprocal: "Reciprocal",
}


@emits(*_UNARY)
def _unary(ctx, call):
    ctx.node(_UNARY[call.op], [ctx.name(call.args[0], call.dtype)], outputs=call.outputs)


@emits(elementwise.Log1p)
def _log1p(ctx, call):
    x = ctx.name(call.args[0], call.dtype)
    ctx.node("Log", [ctx.node("Add", [x, ctx.scalar(1, call.dtype)])], outputs=call.outputs)


@emits(elementwise.Rsqrt)
def _rsqrt(ctx, call):
    x = ctx.name(call.args[0], call.dtype)
    ctx.node("Reciprocal", [ctx.node("Sqrt", [x])], outputs=call.outputs)


@emits(elementwise.LeakyRelu)
def _leaky_relu(ctx, call):
    x, slope = call.args
    ctx.node("LeakyRelu", [ctx.name(x)], outputs=call.outputs, alpha=float(slope))


@emits(elementwise.Elu)
def _elu(ctx, call):
    x, alpha = call.args
    ctx.node("Elu", [ctx.name(x)], outputs=call.outputs, alpha=float(alpha))


@emits(elementwise.Silu)
def _silu(ctx, call):
    x = ctx.name(call.args[0])
    ctx.node("Mul", [x, ctx.node("Sigmoid", [x])], outputs=call.outputs)


@emits(elementwise.Softplus)
def _softplus(ctx, call):
    x, beta, threshold = call.args
    dt = call.dtype
    x = ctx.name(x)
    z = ctx.node("Mul", [x, ctx.scalar(beta, dt)])
    soft = ctx.node(
        "Div", [ctx.node("Softplus", [ctx.node("Min", [z, ctx.scalar(threshold, dt)])]), ctx.scalar(beta, dt)]
    )
    linear = ctx.node("Greater", [z, ctx.scalar(threshold, dt)])
    ctx.node("Where", [linear, x, soft], outputs=call.outputs)


@emits(elementwise.Gelu)
def _gelu(ctx, call):
    x, approximate = call.args
    dt = call.dtype
    x = ctx.name(x)
    half_x = ctx.node("Mul", [x, ctx.scalar(0.5, dt)])
    if approximate == "tanh":
        cube = ctx.node("Mul", [ctx.node("Mul", [x, x]), x])
        inner = ctx.node("Add", [x, ctx.node("Mul", [cube, ctx.scalar(0.044715, dt)])])
        t = ctx.node("Tanh", [ctx.node("Mul", [inner, ctx.scalar(math.sqrt(2.0 / math.pi), dt)])])
    else:
        t = ctx.node("Erf", [ctx.node("Mul", [x, ctx.scalar(1.0 / math.sqrt(2.0), dt)])])
    ctx.node("Mul", [half_x, ctx.node("Add", [t, ctx.scalar(1.0, dt)])], outputs=call.outputs)


@emits(elementwise.Clamp)
def _clamp(ctx, call):
    x, low, high = call.args
    out = ctx.name(x, call.dtype)
    if low is not None:
        out = ctx.node("Max", [out, ctx.name(low, call.dtype)])
    if high is not None:
        out = ctx.node("Min", [out, ctx.name(high, call.dtype)])
    ctx.node("Identity", [out], outputs=call.outputs)


@emits(elementwise.ZeroGrad)
def _zero_grad(ctx, call):
    x, fn = call.args
    x = ctx.name(x)
    if fn in ("floor", "ceil", "sign"):
        ctx.node(fn.capitalize(), [x], outputs=call.outputs)
    elif fn == "trunc":
        negative = ctx.node("Less", [x, ctx.scalar(0, call.dtype)])
        ctx.node("Where", [negative, ctx.node("Ceil", [x]), ctx.node("Floor", [x])], outputs=call.outputs)
    else:
        raise UnsupportedOperatorError(f"{fn} has no ONNX form in this exporter{ctx.where()}")


@emits(elementwise.Round)
def _round(ctx, call):
    x, decimals = call.args
    x = ctx.name(x)
    if decimals == 0:
        ctx.node("Round", [x], outputs=call.outputs)
        return
    scale = ctx.scalar(10.0**decimals, call.dtype)
    ctx.node("Div", [ctx.node("Round", [ctx.node("Mul", [x, scale])]), scale], outputs=call.outputs)


# ---------------------------------------------------------------- products and nn kernels
@emits(linalg.Matmul)
def _matmul(ctx, call):
    a, b = (ctx.name(x, call.dtype) for x in call.args)
    ctx.node("MatMul", [a, b], outputs=call.outputs)


def _linear(ctx, x, weight, bias, outputs=None):
    xs, w = ctx.name(x), ctx.name(weight)
    if len(ctx.shape(x)) == 2:
        inputs = [xs, w] + ([ctx.name(bias)] if bias is not None else [])
        return ctx.node("Gemm", inputs, outputs=outputs, transB=1)
    out = ctx.node("MatMul", [xs, ctx.node("Transpose", [w], perm=[1, 0])])
    if bias is not None:
        out = ctx.node("Add", [out, ctx.name(bias)], outputs=outputs)
    elif outputs is not None:
        out = ctx.node("Identity", [out], outputs=outputs)
    return out


@emits(nn.Linear)
def _linear_op(ctx, call):
    x, weight, bias = call.args
    _linear(ctx, x, weight, bias, outputs=call.outputs)


@emits(nn.LinearActivation)
def _linear_activation(ctx, call):
    x, weight, bias, activation = call.args
    h = _linear(ctx, x, weight, bias)
    dt = call.dtype
    if activation == "relu":
        ctx.node("Relu", [h], outputs=call.outputs)
        return
    half_h = ctx.node("Mul", [h, ctx.scalar(0.5, dt)])
    if activation == "gelu_tanh":
        cube = ctx.node("Mul", [ctx.node("Mul", [h, h]), h])
        inner = ctx.node("Add", [h, ctx.node("Mul", [cube, ctx.scalar(0.044715, dt)])])
        t = ctx.node("Tanh", [ctx.node("Mul", [inner, ctx.scalar(math.sqrt(2.0 / math.pi), dt)])])
    else:
        t = ctx.node("Erf", [ctx.node("Mul", [h, ctx.scalar(1.0 / math.sqrt(2.0), dt)])])
    ctx.node("Mul", [half_h, ctx.node("Add", [t, ctx.scalar(1.0, dt)])], outputs=call.outputs)


@emits(nn.Softmax, nn.LogSoftmax)
def _softmax(ctx, call):
    x, dim = call.args
    op = "Softmax" if call.op is nn.Softmax else "LogSoftmax"
    ctx.node(op, [ctx.name(x)], outputs=call.outputs, axis=int(dim))


@emits(
    nn.Dropout,
    precheck=_refuse(
        "dropout in training mode draws random numbers: it has no ONNX form (export runs "
        "the model in eval mode, where Dropout is the identity)"
    ),
)
def _dropout(ctx, call):  # pragma: no cover - the precheck refuses every call
    raise AssertionError


@emits(sparse.Embedding)
def _embedding(ctx, call):
    weight, indices, _padding_idx = call.args
    ctx.node("Gather", [ctx.name(weight), ctx.name(indices)], outputs=call.outputs, axis=0)


@emits(normalization.LayerNorm)
def _layer_norm(ctx, call):
    x, weight, bias, axes, eps = call.args
    dt = call.dtype
    normalized = tuple(ctx.shape(x)[axes[0] :])
    scale = ctx.name(weight, dt) if weight is not None else ctx.const(np.ones([int(d) for d in normalized], dt))
    inputs = [ctx.name(x, dt), scale] + ([ctx.name(bias, dt)] if bias is not None else [])
    ctx.node("LayerNormalization", inputs, outputs=call.outputs, axis=int(axes[0]), epsilon=float(eps))


@emits(normalization.RMSNorm)
def _rms_norm(ctx, call):
    x, weight, axes, eps = call.args
    dt = call.dtype
    xs = ctx.name(x, dt)
    mean_sq = ctx.reduce("ReduceMean", ctx.node("Mul", [xs, xs]), axes, True)
    rstd = ctx.node("Reciprocal", [ctx.node("Sqrt", [ctx.node("Add", [mean_sq, ctx.scalar(eps, dt)])])])
    out = ctx.node("Mul", [xs, rstd])
    if weight is not None:
        out = ctx.node("Mul", [out, ctx.name(weight, dt)])
    ctx.node("Identity", [out], outputs=call.outputs)


def _check_sdpa(args, kwargs):
    if args[5] > 0.0:
        raise UnsupportedOperatorError("attention dropout (dropout_p > 0) draws random numbers: it has no ONNX form")


def _causal(mask, q, k) -> bool:
    """Whether ``mask`` is the constant causal mask ``scaled_dot_product_attention(is_causal=True)`` builds, for a
    query or key length that depends on a dynamic axis (it is then built in the graph, at the lengths it runs at)."""
    if not isinstance(mask, np.ndarray) or isinstance(mask, TracedArray) or traced_view(mask) is not None:
        return False
    length, keys = q.shape[-2], k.shape[-2]
    if not (isinstance(length, SymInt) or isinstance(keys, SymInt)) or mask.shape != (int(length), int(keys)):
        return False
    return bool(np.array_equal(mask, _causal_mask(int(length), int(keys), mask.dtype)))


def _causal_mask(length: int, keys: int, dtype) -> np.ndarray:
    return np.where(np.tril(np.ones((length, keys), dtype=bool)), 0.0, -np.inf).astype(dtype)


def _sdpa_shadow_args(args, kwargs):
    q, k, v, mask, *rest = args
    if _causal(mask, q, k):
        mask = _causal_mask(shadow_of(q).shape[-2], shadow_of(k).shape[-2], mask.dtype)
        return (shadow_of(q), shadow_of(k), shadow_of(v), mask, *rest), kwargs
    return shadow_of(args), shadow_of(kwargs)


@emits(attention.ScaledDotProductAttention, precheck=_check_sdpa)
def _sdpa(ctx, call):
    q, k, v, mask, scale, _dropout_p, _gen = call.args
    dt = call.dtype
    nd = len(ctx.shape(k))
    perm = list(range(nd - 2)) + [nd - 1, nd - 2]
    qs = ctx.node("Mul", [ctx.name(q), ctx.scalar(scale, dt)])
    scores = ctx.node("MatMul", [qs, ctx.node("Transpose", [ctx.name(k)], perm=perm)])
    if mask is not None and _causal(mask, q, k):
        size = ctx.ints([ctx.shape(q)[-2], ctx.shape(k)[-2]])
        ones = ctx.node("ConstantOfShape", [size], value=ctx.helper.make_tensor("one", ctx.onnx_type(dt), [1], [1]))
        allowed = ctx.cast(ctx.node("Trilu", [ones], upper=0), np.bool_)
        scores = ctx.node("Add", [scores, ctx.node("Where", [allowed, ctx.scalar(0, dt), ctx.scalar(-np.inf, dt)])])
    elif mask is not None:
        scores = ctx.node("Add", [scores, ctx.name(mask, dt)])
    # the softmax as ForgeML computes it: a row whose keys are all masked gives zeros, not NaN
    row_max = ctx.reduce("ReduceMax", scores, [-1], True)
    finite = ctx.node("Not", [ctx.node("Or", [ctx.node("IsInf", [row_max]), ctx.node("IsNaN", [row_max])])])
    row_max = ctx.node("Where", [finite, row_max, ctx.scalar(0, dt)])
    e = ctx.node("Exp", [ctx.node("Sub", [scores, row_max])])
    total = ctx.reduce("ReduceSum", e, [-1], True)
    total = ctx.node("Where", [ctx.node("Equal", [total, ctx.scalar(0, dt)]), ctx.scalar(1, dt), total])
    ctx.node("MatMul", [ctx.node("Div", [e, total]), ctx.name(v)], outputs=call.outputs)


# ---------------------------------------------------------------- reductions
def _axes_or_identity(ctx, call, x, axes):
    if not axes:
        ctx.node("Identity", [x], outputs=call.outputs)
        return True
    return False


def _reduction(onnx_op: str):
    """The emitter of a reduction whose call starts ``(x, axes, keepdim, ...)`` (Sum and Prod add a dtype)."""

    def emit(ctx, call):
        x, axes, keepdim = call.args[:3]
        xs = ctx.name(x, call.dtype)
        if not _axes_or_identity(ctx, call, xs, axes):
            ctx.node("Identity", [ctx.reduce(onnx_op, xs, axes, keepdim)], outputs=call.outputs)

    return emit


emits(reduce.Sum)(_reduction("ReduceSum"))
emits(reduce.Mean)(_reduction("ReduceMean"))
emits(reduce.Prod)(_reduction("ReduceProd"))


@emits(reduce.AMax)
def _amax(ctx, call):
    x, axes, keepdim, largest = call.args
    op = "ReduceMax" if largest else "ReduceMin"
    if call.dtype == np.bool_:
        xs = ctx.name(x, np.int32)
        if not _axes_or_identity(ctx, call, ctx.cast(xs, np.bool_), axes):
            ctx.node("Cast", [ctx.reduce(op, xs, axes, keepdim)], outputs=call.outputs, to=ctx.onnx_type(np.bool_))
        return
    xs = ctx.name(x)
    if not _axes_or_identity(ctx, call, xs, axes):
        ctx.node("Identity", [ctx.reduce(op, xs, axes, keepdim)], outputs=call.outputs)


@emits(reduce.MaxDim)
def _max_dim(ctx, call):
    x, indices, dim, keepdim = call.args
    idx = ctx.node("Unsqueeze", [ctx.name(indices, np.int64), ctx.ints([dim])])
    out = ctx.node("GatherElements", [ctx.name(x), idx], axis=int(dim))
    if keepdim:
        ctx.node("Identity", [out], outputs=call.outputs)
    else:
        ctx.node("Squeeze", [out, ctx.ints([dim])], outputs=call.outputs)


def _count(ctx, x, axes) -> str:
    shape = ctx.shape(x)
    n = 1
    for a in axes:
        n = n * shape[a]
    return n


@emits(reduce.Var)
def _var(ctx, call):
    x, axes, correction, keepdim, take_sqrt = call.args
    dt = call.dtype
    xs = ctx.name(x, dt)
    centered = ctx.node("Sub", [xs, ctx.reduce("ReduceMean", xs, axes, True)])
    total = ctx.reduce("ReduceSum", ctx.node("Mul", [centered, centered]), axes, keepdim)
    dof = _count(ctx, x, axes) - correction
    if isinstance(dof, SymInt):
        dof_value = ctx.node("Max", [ctx.cast(ctx.name(dof), dt), ctx.scalar(0, dt)])
    else:
        dof_value = ctx.scalar(max(int(dof), 0), dt)
    out = ctx.node("Div", [total, dof_value])
    if take_sqrt:
        out = ctx.node("Sqrt", [out])
    ctx.node("Identity", [out], outputs=call.outputs)


@emits(reduce.LogSumExp)
def _logsumexp(ctx, call):
    x, axes, keepdim = call.args
    dt = call.dtype
    xs = ctx.name(x)
    m = ctx.reduce("ReduceMax", xs, axes, True)
    finite = ctx.node("Not", [ctx.node("Or", [ctx.node("IsInf", [m]), ctx.node("IsNaN", [m])])])
    m = ctx.node("Where", [finite, m, ctx.scalar(0, dt)])
    total = ctx.reduce("ReduceSum", ctx.node("Exp", [ctx.node("Sub", [xs, m])]), axes, True)
    out = ctx.node("Add", [ctx.node("Log", [total]), m])
    if keepdim:
        ctx.node("Identity", [out], outputs=call.outputs)
    else:
        ctx.node("Squeeze", [out, ctx.ints(axes)], outputs=call.outputs)


@emits(reduce.Norm2)
def _norm2(ctx, call):
    x, axes, keepdim = call.args
    xs = ctx.name(x)
    total = ctx.reduce("ReduceSum", ctx.node("Mul", [xs, xs]), axes, keepdim)
    ctx.node("Sqrt", [total], outputs=call.outputs)


# ---------------------------------------------------------------- shapes
@emits(shape.ViewAs, shape.ReshapeCopy)
def _reshape(ctx, call):
    x, target = call.args
    ctx.node("Identity", [ctx.reshape(x, target)], outputs=call.outputs)


@emits(shape.Permute)
def _permute(ctx, call):
    x, dims = call.args
    ctx.node("Transpose", [ctx.name(x)], outputs=call.outputs, perm=[int(d) for d in dims])


@emits(shape.Expand)
def _expand(ctx, call):
    x, target = call.args
    ctx.node("Identity", [ctx.expand(x, target)], outputs=call.outputs)


@emits(shape.Repeat)
def _repeat(ctx, call):
    x, reps = call.args
    xs = ctx.name(x)
    extra = len(reps) - len(ctx.shape(x))
    if extra:
        xs = ctx.node("Unsqueeze", [xs, ctx.ints(range(extra))])
    ctx.node("Tile", [xs, ctx.ints(reps)], outputs=call.outputs)


@emits(shape.Cat)
def _cat(ctx, call):
    ctx.node("Concat", [ctx.name(a, call.dtype) for a in call.args], outputs=call.outputs, axis=int(call.kwargs["dim"]))


@emits(shape.Stack)
def _stack(ctx, call):
    dim = int(call.kwargs["dim"])
    parts = [ctx.node("Unsqueeze", [ctx.name(a, call.dtype), ctx.ints([dim])]) for a in call.args]
    ctx.node("Concat", parts, outputs=call.outputs, axis=dim)


@emits(shape.Split)
def _split(ctx, call):
    x, dim, bounds = call.args
    xs = ctx.name(x)
    for out, (start, stop) in zip(call.outputs, bounds):
        ctx.node("Slice", [xs, ctx.ints([start]), ctx.ints([stop]), ctx.ints([dim])], outputs=[out])


@emits(shape.Select)
def _select(ctx, call):
    x, dim, count = call.args
    xs = ctx.name(x)
    for i, out in zip(range(_static(ctx, count, "the number of pieces of unbind")), call.outputs):
        ctx.node("Gather", [xs, ctx.scalar(i, np.int64)], outputs=[out], axis=int(dim))


@emits(shape.Tri)
def _tri(ctx, call):
    x, diagonal, lower = call.args
    ctx.node("Trilu", [ctx.name(x), ctx.scalar(diagonal, np.int64)], outputs=call.outputs, upper=0 if lower else 1)


@emits(shape.Flip)
def _flip(ctx, call):
    x, dims = call.args
    n = len(dims)
    ctx.node(
        "Slice",
        [ctx.name(x), ctx.ints([-1] * n), ctx.ints([INT64_MIN] * n), ctx.ints(dims), ctx.ints([-1] * n)],
        outputs=call.outputs,
    )


# ---------------------------------------------------------------- indexing
@emits(indexing.BasicIndex, indexing.AdvancedIndex)
def _index(ctx, call):
    x, index = call.args
    ctx.node("Identity", [ctx.index(x, index)], outputs=call.outputs)


def _gather_shadow_args(args, kwargs):
    """``gather``'s index holds aranges sized like the index: in the shadow trace, sized like its shadow."""
    x, items = args
    found = gather_axis(items) if isinstance(items, tuple) else None
    if found is None:
        return shadow_of(args), shadow_of(kwargs)
    axis, index = found
    shadow_index = shadow_of(index._data if isinstance(index, Tensor) else index)
    nd = shadow_index.ndim
    aranges = [
        np.arange(n, dtype=np.int64).reshape((1,) * d + (n,) + (1,) * (nd - d - 1))
        for d, n in enumerate(shadow_index.shape)
    ]
    aranges[axis] = shadow_index
    return (shadow_of(x), tuple(aranges)), shadow_of(kwargs)


SHADOW_ARGS[indexing.AdvancedIndex] = _gather_shadow_args
SHADOW_ARGS[attention.ScaledDotProductAttention] = _sdpa_shadow_args


@emits(indexing.IndexSelect)
def _index_select(ctx, call):
    x, dim, index = call.args
    ctx.node("Gather", [ctx.name(x), ctx.name(index, np.int64)], outputs=call.outputs, axis=int(dim))


@emits(indexing.MaskedFill)
def _masked_fill(ctx, call):
    x, value, mask = call.args
    ctx.node(
        "Where", [ctx.name(mask, np.bool_), ctx.name(value, call.dtype), ctx.name(x, call.dtype)], outputs=call.outputs
    )


# ---------------------------------------------------------------- conversions
@emits(conversion.Cast)
def _cast(ctx, call):
    ctx.node("Cast", [ctx.name(call.args[0])], outputs=call.outputs, to=ctx.onnx_type(call.dtype))


@emits(conversion.ToDevice, conversion.Clone)
def _identity(ctx, call):
    ctx.node("Identity", [ctx.name(call.args[0])], outputs=call.outputs)


# ---------------------------------------------------------------- convolution, pooling, batch norm
def _unbatched(ctx, x):
    """``(name, was_3d)``: a (C, H, W) input as a batch of one."""
    if len(ctx.shape(x)) == 3:
        return ctx.node("Unsqueeze", [ctx.name(x), ctx.ints([0])]), True
    return ctx.name(x), False


def _rebatch(ctx, name, was_3d, outputs):
    if was_3d:
        return ctx.node("Squeeze", [name, ctx.ints([0])], outputs=outputs)
    return ctx.node("Identity", [name], outputs=outputs)


@emits(conv.Conv2d)
def _conv2d(ctx, call):
    x, weight, bias, stride, pads, dilation, groups = call.args
    xs, was_3d = _unbatched(ctx, x)
    top, bottom, left, right = (int(p) for p in pads)
    inputs = [xs, ctx.name(weight)] + ([ctx.name(bias)] if bias is not None else [])
    kh, kw = (int(d) for d in ctx.shape(weight)[2:])
    out = ctx.node(
        "Conv",
        inputs,
        kernel_shape=[kh, kw],
        strides=[int(s) for s in stride],
        dilations=[int(d) for d in dilation],
        pads=[top, left, bottom, right],
        group=int(groups),
    )
    _rebatch(ctx, out, was_3d, call.outputs)


@emits(conv.ModePad)
def _mode_pad(ctx, call):
    x, pads, mode = call.args
    left, right, top, bottom = (int(p) for p in pads)
    nd = len(ctx.shape(x))
    xs = ctx.name(x)
    if mode in ("reflect", "replicate"):
        begins = [0] * (nd - 2) + [top, left]
        ends = [0] * (nd - 2) + [bottom, right]
        onnx_mode = "reflect" if mode == "reflect" else "edge"
        ctx.node("Pad", [xs, ctx.ints(begins + ends)], outputs=call.outputs, mode=onnx_mode)
        return
    out = xs  # circular: the far rows (columns) before, the near ones after
    for axis, before, after in ((nd - 2, top, bottom), (nd - 1, left, right)):
        parts = []
        if before:
            parts.append(ctx.node("Slice", [out, ctx.ints([-before]), ctx.ints([2**62]), ctx.ints([axis])]))
        parts.append(out)
        if after:
            parts.append(ctx.node("Slice", [out, ctx.ints([0]), ctx.ints([after]), ctx.ints([axis])]))
        if len(parts) > 1:
            out = ctx.node("Concat", parts, axis=axis)
    ctx.node("Identity", [out], outputs=call.outputs)


def _crop(ctx, name, x, k, stride, dilation, pads, out_hw):
    """``name`` (a pooling output) cut to ``out_hw`` where ONNX's size rule gives more (static sizes only)."""
    top, bottom, left, right = (int(p) for p in pads)
    h, w = ctx.shape(x)[-2:]
    if isinstance(h, SymInt) or isinstance(w, SymInt):
        return name
    oh = (int(h) + top + bottom - int(dilation[0]) * (int(k[0]) - 1) - 1) // int(stride[0]) + 1
    ow = (int(w) + left + right - int(dilation[1]) * (int(k[1]) - 1) - 1) // int(stride[1]) + 1
    if (oh, ow) == tuple(int(i) for i in out_hw):
        return name
    return ctx.node("Slice", [name, ctx.ints([0, 0]), ctx.ints(list(out_hw)), ctx.ints([-2, -1])])


@emits(conv.MaxPool2d)
def _max_pool(ctx, call):
    x, k, stride, dilation, pads, out_hw, want_indices = call.args
    xs, was_3d = _unbatched(ctx, x)
    top, bottom, left, right = (int(p) for p in pads)
    outputs = ctx.node(
        "MaxPool",
        [xs],
        n_out=2 if want_indices else 1,
        kernel_shape=[int(i) for i in k],
        strides=[int(s) for s in stride],
        dilations=[int(d) for d in dilation],
        pads=[top, left, bottom, right],
    )
    values, indices = (outputs, None) if not want_indices else outputs
    values = _crop(ctx, values, x, k, stride, dilation, pads, out_hw)
    _rebatch(ctx, values, was_3d, call.outputs[:1])
    if want_indices:
        h, w = ctx.shape(x)[-2:]
        plane = ctx.node("Mul", [ctx.int1d(h), ctx.int1d(w)])
        flat = ctx.node(
            "Mod", [_crop(ctx, indices, x, k, stride, dilation, pads, out_hw), plane], fmod=0
        )  # ONNX counts over the whole tensor
        _rebatch(ctx, flat, was_3d, call.outputs[1:])


@emits(conv.AvgPool2d)
def _avg_pool(ctx, call):
    x, k, stride, pads, out_hw, divisor = call.args
    dt = call.dtype
    xs, was_3d = _unbatched(ctx, x)
    top, bottom, left, right = (int(p) for p in pads)
    if top or bottom or left or right:
        xs = ctx.node("Pad", [xs, ctx.ints([0, 0, top, left, 0, 0, bottom, right])], mode="constant")
    kh, kw = (int(i) for i in k)
    out = ctx.node("AveragePool", [xs], kernel_shape=[kh, kw], strides=[int(s) for s in stride])
    out = _crop(ctx, out, x, k, stride, (1, 1), pads, out_hw)
    div = np.asarray(divisor, dtype=np.float64)
    if not (div.ndim == 0 and float(div) == kh * kw):
        out = ctx.node("Mul", [out, ctx.const((kh * kw / div).astype(dt))])
    _rebatch(ctx, out, was_3d, call.outputs)


def _adaptive_matrix(size: int, out: int, dtype) -> np.ndarray:
    i = np.arange(out)
    start = (i * size) // out
    end = -((-(i + 1) * size) // out)
    pos = np.arange(size)
    inside = (pos >= start[:, None]) & (pos < end[:, None])
    return (inside / (end - start)[:, None]).astype(dtype)


@emits(conv.AdaptiveAvgPool2d)
def _adaptive_avg_pool(ctx, call):
    x, out_hw = call.args
    oh, ow = (int(i) for i in out_hw)
    dt = call.dtype
    xs = ctx.name(x)
    h, w = ctx.shape(x)[-2:]
    if (oh, ow) == (1, 1):
        xs4, was_3d = _unbatched(ctx, x)
        _rebatch(ctx, ctx.node("GlobalAveragePool", [xs4]), was_3d, call.outputs)
        return
    h = _static(ctx, h, "the height of an adaptive pooling input")
    w = _static(ctx, w, "the width of an adaptive pooling input")
    if h % oh == 0 and w % ow == 0:
        xs4, was_3d = _unbatched(ctx, x)
        out = ctx.node("AveragePool", [xs4], kernel_shape=[h // oh, w // ow], strides=[h // oh, w // ow])
        _rebatch(ctx, out, was_3d, call.outputs)
        return
    ah, aw = _adaptive_matrix(h, oh, dt), _adaptive_matrix(w, ow, dt)
    rows = ctx.node("MatMul", [ctx.const(ah), xs])
    ctx.node("MatMul", [rows, ctx.const(np.ascontiguousarray(aw.T))], outputs=call.outputs)


def _check_batch_norm(args, kwargs):
    if args[5]:
        raise UnsupportedOperatorError(
            "batch_norm in training mode (batch statistics, running stats updated) has no ONNX form here; "
            "export runs the model in eval mode"
        )


@emits(conv.BatchNorm, precheck=_check_batch_norm)
def _batch_norm(ctx, call):
    x, running_mean, running_var, weight, bias, _training, _momentum, eps, compute_dtype = call.args
    dt = np.dtype(compute_dtype) if compute_dtype is not None else call.dtype
    c = int(ctx.shape(x)[1])
    scale = ctx.name(weight, dt) if weight is not None else ctx.const(np.ones(c, dt))
    shift = ctx.name(bias, dt) if bias is not None else ctx.const(np.zeros(c, dt))
    inputs = [ctx.name(x, dt), scale, shift, ctx.name(running_mean, dt), ctx.name(running_var, dt)]
    out = ctx.node("BatchNormalization", inputs, epsilon=float(eps))
    ctx.node(
        "Identity" if dt == call.dtype else "Cast",
        [out],
        outputs=call.outputs,
        to=None if dt == call.dtype else ctx.onnx_type(call.dtype),
    )
