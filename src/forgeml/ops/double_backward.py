"""Differentiable backwards of the built-in ops, used when backward runs with ``create_graph=True``.

Each function below is the ``backward`` of the op(s) named in its decorator,
written with ForgeML's tensor ops instead of array arithmetic, so that the
backward pass is itself recorded and its gradients can be differentiated again
(see :mod:`forgeml.autograd.higher_order`). It receives the graph node (the
op's ``ctx``), what the op's ``forward`` saved (its inputs and output as tensors
carrying their history; other arrays, such as masks and indices, as constants)
and the output gradient as a tensor, and it returns what the op's ``backward``
returns. Where ``forward`` saved an intermediate value that depends on an input
(``silu``'s sigmoid, ``gelu``'s CDF), the value is recomputed here from that
input with tensor ops, so that its own derivative is not lost.

Ops not listed (convolutions, pooling, scatter, fused CUDA kernels...) raise
"<op> does not support higher-order gradients" under ``create_graph``.
"""

from __future__ import annotations

import math

from ..autograd.function import ArrayFunction
from ..autograd.higher_order import constant, input_tensor, register_differentiable_backward
from ..tensor import Tensor
from . import conversion, elementwise, indexing, linalg, nn, reduce, shape
from ._util import is_number
from .elementwise import cos, exp, log, sigmoid, sin, tanh, where

_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


def _const(node, array, like: Tensor) -> Tensor:
    """A constant tensor of ``array`` (a mask, a local factor) in ``like``'s dtype."""
    return constant(node, array.astype(like._data.dtype, copy=False))


def _value(x):
    return x._data if isinstance(x, Tensor) else x


def _kept(g, axes, keepdim):
    """A reduction's output gradient with the reduced dims present (size 1)."""
    if keepdim or not axes:
        return g
    out_shape = list(g.shape)
    for a in sorted(axes):
        out_shape.insert(a, 1)
    return shape.reshape(g, tuple(out_shape))


def _expand_to(g, in_shape, axes, keepdim):
    return shape.expand(_kept(g, axes, keepdim), tuple(in_shape))


# ---------------------------------------------------------------- arithmetic
@register_differentiable_backward(elementwise.Add)
def _add(node, saved, g):
    n = node.needs_input_grad
    return (g if n[0] else None), (g if n[1] else None)


@register_differentiable_backward(elementwise.Sub)
def _sub(node, saved, g):
    n = node.needs_input_grad
    return (g if n[0] else None), (-g if n[1] else None)


@register_differentiable_backward(elementwise.Mul)
def _mul(node, saved, g):
    b, a = saved
    n = node.needs_input_grad
    return (g * b if n[0] else None), (g * a if n[1] else None)


@register_differentiable_backward(elementwise.Div)
def _div(node, saved, g):
    b, out = saved
    n = node.needs_input_grad
    return (g / b if n[0] else None), (-g * out / b if n[1] else None)


@register_differentiable_backward(elementwise.Neg)
def _neg(node, saved, g):
    return -g


@register_differentiable_backward(elementwise.Pow)
def _pow(node, saved, g):
    a, b, out = saved
    n = node.needs_input_grad
    ga = gb = None
    if n[0]:
        if is_number(b):
            ga = g * 0.0 if b == 0 else g * (b * a ** (b - 1))
        else:
            zero = constant(node, b._data == 0)
            ga = g * where(zero, 0.0, b * a ** where(zero, 1.0, b - 1))
    if n[1]:
        base = a if isinstance(a, Tensor) else constant(node, out._data.dtype.type(a) + 0 * out._data)
        flat = constant(node, (base._data == 0) & (_value(b) >= 0))
        gb = g * where(flat, 0.0, out * log(base))
    return ga, gb


def _tie_split(node, g, a_wins, tie):
    n = node.needs_input_grad
    half = tie * 0.5
    ga = g * _const(node, a_wins + half, g) if n[0] else None
    gb = g * _const(node, ~(a_wins | tie) + half, g) if n[1] else None
    return ga, gb


@register_differentiable_backward(elementwise.Maximum)
def _maximum(node, saved, g):
    a, b = (_value(v) for v in saved)
    return _tie_split(node, g, a > b, a == b)


@register_differentiable_backward(elementwise.Minimum)
def _minimum(node, saved, g):
    a, b = (_value(v) for v in saved)
    return _tie_split(node, g, a < b, a == b)


@register_differentiable_backward(elementwise.Where)
def _where(node, saved, g):
    (cond,) = saved
    n = node.needs_input_grad
    return None, (where(cond, g, 0.0) if n[1] else None), (where(cond, 0.0, g) if n[2] else None)


@register_differentiable_backward(elementwise.Clamp)
def _clamp(node, saved, g):
    (keep,) = saved
    return g * _const(node, keep._data, g), None, None


@register_differentiable_backward(elementwise.ZeroGrad, elementwise.Round)
def _zero(node, saved, g):
    return g * 0.0, None


# -------------------------------------------------------------- unary maths
@register_differentiable_backward(elementwise.Abs)
def _abs(node, saved, g):
    (x,) = saved
    return g * _const(node, node.xp.sign(x._data), g)


@register_differentiable_backward(elementwise.Exp)
def _exp(node, saved, g):
    (out,) = saved
    return g * out


@register_differentiable_backward(elementwise.Log)
def _log(node, saved, g):
    (x,) = saved
    return g / x


@register_differentiable_backward(elementwise.Log1p)
def _log1p(node, saved, g):
    (x,) = saved
    return g / (x + 1.0)


@register_differentiable_backward(elementwise.Sqrt)
def _sqrt(node, saved, g):
    (out,) = saved
    return g / (out * 2.0)


@register_differentiable_backward(elementwise.Rsqrt)
def _rsqrt(node, saved, g):
    (out,) = saved
    return g * (out * out * out * -0.5)


@register_differentiable_backward(elementwise.Reciprocal)
def _reciprocal(node, saved, g):
    (out,) = saved
    return -g * out * out


@register_differentiable_backward(elementwise.Sin)
def _sin(node, saved, g):
    (x,) = saved
    return g * cos(x)


@register_differentiable_backward(elementwise.Cos)
def _cos(node, saved, g):
    (x,) = saved
    return -g * sin(x)


@register_differentiable_backward(elementwise.Tanh)
def _tanh(node, saved, g):
    (out,) = saved
    return g * (1.0 - out * out)


@register_differentiable_backward(elementwise.Sigmoid)
def _sigmoid(node, saved, g):
    (out,) = saved
    return g * (out * (1.0 - out))


# ------------------------------------------------------------- activations
@register_differentiable_backward(elementwise.Relu)
def _relu(node, saved, g):
    (out,) = saved
    return g * _const(node, out._data > 0, g)


@register_differentiable_backward(elementwise.LeakyRelu)
def _leaky_relu(node, saved, g):
    (x,) = saved
    return g * _const(node, node.xp.where(x._data > 0, 1.0, node.slope), g), None


@register_differentiable_backward(elementwise.Elu)
def _elu(node, saved, g):
    x, out = saved
    return g * where(constant(node, x._data > 0), 1.0, out + node.alpha), None


@register_differentiable_backward(elementwise.Silu)
def _silu(node, saved, g):
    x, _ = saved
    s = sigmoid(x)  # recomputed from x: forward saved it as a plain array
    return g * (s * (x * (1.0 - s) + 1.0))


@register_differentiable_backward(elementwise.Softplus)
def _softplus(node, saved, g):
    z, linear = saved
    beta = node.beta
    x = input_tensor(node, 0, z._data / beta)  # forward kept z = x * beta; x's history is the input's
    return g * where(linear, 1.0, sigmoid(x * beta)), None, None


class NormalCdf(ArrayFunction):
    """Phi(x), the standard normal CDF (GELU's factor), as an op of its own."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return elementwise.normal_cdf(x, ctx.xp)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * (_INV_SQRT_2PI * ctx.xp.exp(-0.5 * x * x))


@register_differentiable_backward(NormalCdf)
def _normal_cdf(node, saved, g):
    (x,) = saved
    return g * (exp(x * x * -0.5) * _INV_SQRT_2PI)


@register_differentiable_backward(elementwise.Gelu)
def _gelu(node, saved, g):
    x = saved[0]
    if node.approximate == "tanh":
        t = tanh((x + x * x * x * 0.044715) * _SQRT_2_OVER_PI)
        d_inner = (x * x * (3 * 0.044715) + 1.0) * _SQRT_2_OVER_PI
        local = (t + 1.0) * 0.5 + x * (1.0 - t * t) * d_inner * 0.5
    else:
        local = NormalCdf.apply(x) + x * exp(x * x * -0.5) * _INV_SQRT_2PI
    return g * local, None


@register_differentiable_backward(nn.Dropout)
def _dropout(node, saved, g):
    (mask,) = saved
    factor = mask._data if node.fused_scale is None else mask._data * node.fused_scale
    return g * _const(node, factor, g), None, None


# -------------------------------------------------------------- reductions
@register_differentiable_backward(reduce.Sum)
def _sum(node, saved, g):
    in_shape, axes, keepdim = node.meta
    return _expand_to(g, in_shape, axes, keepdim), None, None, None


@register_differentiable_backward(reduce.Mean)
def _mean(node, saved, g):
    in_shape, axes, keepdim = node.meta
    count = math.prod(in_shape[a] for a in axes)
    return _expand_to(g / float(count), in_shape, axes, keepdim), None, None


@register_differentiable_backward(reduce.LogSumExp)
def _logsumexp(node, saved, g):
    x, _ = saved
    axes, keepdim = node.meta
    lse = reduce.LogSumExp.apply(x, axes, True)  # recomputed: forward saved it with its dims kept
    return _kept(g, axes, keepdim) * exp(x - lse), None, None


@register_differentiable_backward(reduce.Norm2)
def _norm2(node, saved, g):
    x, out_k = saved
    axes, keepdim = node.meta
    zero = constant(node, out_k._data == 0)
    norm = reduce.Norm2.apply(x, axes, True)
    return where(zero, 0.0, _kept(g, axes, keepdim) * x / where(zero, 1.0, norm)), None, None


@register_differentiable_backward(reduce.AMax)
def _amax(node, saved, g):
    x, out = (_value(v) for v in saved)
    axes, keepdim = node.meta
    xp = node.xp
    kept_out = out if keepdim or not axes else xp.expand_dims(out, axes)
    mask = x == kept_out
    share = mask / mask.sum(axis=axes, keepdims=True)
    return _kept(g, axes, keepdim) * _const(node, share, g), None, None, None


@register_differentiable_backward(reduce.Var)
def _var(node, saved, g):
    centered, std_k = saved
    axes, keepdim, dof = node.meta
    x = input_tensor(node, 0, centered._data)  # var is shift-invariant: the centred values stand in for x
    c = x - reduce.mean(x, axes, keepdim=True)
    g_k = _kept(g, axes, keepdim)
    if std_k is not None:
        std = elementwise.sqrt(reduce.sum(c * c, axes, keepdim=True) / float(dof))
        g_k = g_k / (std * 2.0)
    return g_k * c * (2.0 / dof if dof > 0 else math.nan), None, None, None, None


# ------------------------------------------------------------------ linalg
@register_differentiable_backward(linalg.Matmul)
def _matmul(node, saved, g):
    a, b = saved
    nda, ndb = node.ndims
    n = node.needs_input_grad
    if nda == 1 and ndb == 1:
        return (g * b if n[0] else None), (g * a if n[1] else None)
    g2 = shape.unsqueeze(g, g.ndim - 1) if nda == 1 else g
    if ndb == 1:
        g2 = shape.unsqueeze(g2, g2.ndim)
    ga = gb = None
    if n[0]:
        b2 = shape.reshape(b, (b.shape[0], 1)) if ndb == 1 else b
        ga = linalg.matmul(g2, shape.transpose(b2, -1, -2))
        if nda == 1:
            ga = shape.squeeze(ga, -2)
    if n[1]:
        a2 = shape.reshape(a, (1, a.shape[0])) if nda == 1 else a
        gb = linalg.matmul(shape.transpose(a2, -1, -2), g2)
        if ndb == 1:
            gb = shape.squeeze(gb, -1)
    return ga, gb


@register_differentiable_backward(nn.Linear)
def _linear(node, saved, g):
    x, weight = saved
    n = node.needs_input_grad
    g2 = shape.reshape(g, (-1, g.shape[-1])) if g.ndim != 2 else g
    gx = linalg.matmul(g, weight) if n[0] else None
    gw = linalg.matmul(shape.transpose(g2, 0, 1), shape.reshape(x, (-1, x.shape[-1]))) if n[1] else None
    gb = reduce.sum(g2, 0) if n[2] else None
    return gx, gw, gb


# ------------------------------------------------------- softmax and losses
@register_differentiable_backward(nn.Softmax)
def _softmax(node, saved, g):
    (out,) = saved
    go = g * out
    return go - out * reduce.sum(go, node.dim, keepdim=True), None


@register_differentiable_backward(nn.LogSoftmax)
def _log_softmax(node, saved, g):
    (out,) = saved
    return g - exp(out) * reduce.sum(g, node.dim, keepdim=True), None


@register_differentiable_backward(nn.ClassLoss)
def _class_loss(node, saved, g):
    probs, target_idx, coef = saved
    in_shape, reduction, denom, from_logits, _ = node.meta
    if len(in_shape) > 2:
        raise RuntimeError(
            f"{node.name()} supports higher-order gradients for inputs of 1 or 2 dims only, got {list(in_shape)}"
        )
    xp = node.xp
    if coef is None:
        rows = target_idx._data.shape[0]
        n_classes = in_shape[-1]
        one_hot = xp.zeros((rows, n_classes), dtype=g._data.dtype)
        one_hot[xp.arange(rows), target_idx._data] = 1
        coef_arr = one_hot
    else:
        coef_arr = coef._data
    if reduction == "none":
        scale = shape.reshape(g, (-1, 1))
    elif reduction == "mean":
        d = float(denom)
        scale = g / d if d else g * 0.0
    else:
        scale = g
    if from_logits:
        # log(probs) is the input less each row's log-sum-exp: softmax of it is the same, and so is its derivative
        x = input_tensor(node, 0, xp.log(probs._data).reshape(in_shape))
        p = nn.softmax(shape.reshape(x, (-1, in_shape[-1])), 1)
        grad = p * _const(node, coef_arr.sum(axis=1, keepdims=True), g) - _const(node, coef_arr, g)
    else:
        grad = _const(node, -coef_arr, g)
    return shape.reshape(grad * scale, tuple(in_shape)), None, None, None, None, None, None


# ------------------------------------------------------------------ shapes
@register_differentiable_backward(shape.ViewAs, shape.ReshapeCopy)
def _reshape(node, saved, g):
    return shape.reshape(g, tuple(node.in_shape)), None


@register_differentiable_backward(shape.Permute)
def _permute(node, saved, g):
    return shape.permute(g, *node.inverse), None


@register_differentiable_backward(shape.Expand)
def _expand(node, saved, g):
    return g, None  # summed back to the input's shape by the engine


@register_differentiable_backward(shape.Cat)
def _cat(node, saved, g):
    dim, sizes = node.meta
    n = node.needs_input_grad
    out, start = [], 0
    for i, size in enumerate(sizes):
        index = [slice(None)] * g.ndim
        index[dim] = slice(start, start + size)
        out.append(g[tuple(index)] if n[i] else None)
        start += size
    return tuple(out)


@register_differentiable_backward(shape.Stack)
def _stack(node, saved, g):
    n = node.needs_input_grad
    lead = (slice(None),) * node.dim
    return tuple(g[lead + (i,)] if n[i] else None for i in range(g.shape[node.dim]))


def _zeros_for_missing(node, grads, piece_shape, dtype):
    xp = node.xp
    return [g if g is not None else constant(node, xp.zeros(piece_shape(i), dtype=dtype)) for i, g in enumerate(grads)]


@register_differentiable_backward(shape.Split)
def _split(node, saved, grads):
    in_shape, dtype, dim, bounds = node.meta

    def piece(i):
        s = list(in_shape)
        s[dim] = bounds[i][1] - bounds[i][0]
        return tuple(s)

    return shape.cat(_zeros_for_missing(node, grads, piece, dtype), dim), None, None


@register_differentiable_backward(shape.Select)
def _select(node, saved, grads):
    in_shape, dtype, dim = node.meta
    piece = in_shape[:dim] + in_shape[dim + 1 :]
    return shape.stack(_zeros_for_missing(node, grads, lambda i: piece, dtype), dim), None, None


class BasicIndexBackward(ArrayFunction):
    """The transpose of ``x[index]``: ``g`` written at ``index`` of a zero tensor of the input's shape."""

    @staticmethod
    def forward(ctx, g, in_shape, index):
        ctx.index = index
        out = ctx.xp.zeros(in_shape, dtype=g.dtype)
        out[index] = g
        return out

    @staticmethod
    def backward(ctx, gg):
        return gg[ctx.index], None, None


@register_differentiable_backward(indexing.BasicIndex)
def _basic_index(node, saved, g):
    in_shape, _, index = node.meta
    return BasicIndexBackward.apply(g, in_shape, index), None


@register_differentiable_backward(BasicIndexBackward)
def _basic_index_backward(node, saved, gg):
    return indexing.BasicIndex.apply(gg, node.index), None, None


@register_differentiable_backward(conversion.Cast)
def _cast(node, saved, g):
    return conversion.Cast.apply(g, node.in_dtype), None


@register_differentiable_backward(conversion.Clone)
def _clone(node, saved, g):
    return g
