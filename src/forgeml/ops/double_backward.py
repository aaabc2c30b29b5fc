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

Ops not listed (1-D pooling, max_pool's adaptive forms, interpolation, RNN cells,
attention, RMSNorm, einsum...) raise "<op> does not support higher-order
gradients" under ``create_graph``. The backward of a linear op that scatters or
spreads (max/avg pooling, embedding, advanced indexing, index_select) is an op of
its own here, whose backward is the forward it transposes, so that every order
is available.
"""

from __future__ import annotations

import math

from ..autograd.function import ArrayFunction
from ..autograd.higher_order import constant, input_tensor, register_differentiable_backward
from ..backend.device import namespace_of
from ..tensor import Tensor
from . import (
    attention,
    conv,
    conv_transpose,
    conversion,
    elementwise,
    group_norm,
    indexing,
    linalg,
    nn,
    normalization,
    reduce,
    shape,
    sparse,
)
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


# ------------------------------------------------------------ convolutions
def _pad2d(x, pads):
    """``x`` zero-padded on its last two dims by ``(top, bottom, left, right)`` (a differentiable cat)."""
    top, bottom, left, right = pads
    xp = namespace_of(x._data)
    dtype = x._data.dtype

    def zeros(s):
        return constant(None, xp.zeros(s, dtype=dtype))

    lead, (h, w) = tuple(x.shape[:-2]), tuple(x.shape[-2:])
    if left or right:
        parts = ([zeros(lead + (h, left))] if left else []) + [x] + ([zeros(lead + (h, right))] if right else [])
        x = shape.cat(parts, -1)
        w += left + right
    if top or bottom:
        parts = ([zeros(lead + (top, w))] if top else []) + [x] + ([zeros(lead + (bottom, w))] if bottom else [])
        x = shape.cat(parts, -2)
    return x


def _conv_weight_grad(x, g, stride, pads, dilation, groups, kernel):
    """The weight gradient of a conv2d of ``x`` (N, C, H, W) whose output gradient is ``g`` (N, O, OH, OW).

    ``gw[o, c, i, j] = sum x_pad[n, c, oh*s + i*d, ow*s + j*d] * g[n, o, oh, ow]``: itself a conv2d, with
    the batch as channels, ``g`` as the kernel, stride and dilation swapped, one group per conv group.
    """
    n, c, h, w = x.shape
    o = g.shape[1]
    cg, og = c // groups, o // groups
    xr = shape.reshape(shape.permute(shape.reshape(x, (n, groups, cg, h, w)), 2, 1, 0, 3, 4), (cg, groups * n, h, w))
    gr = shape.reshape(
        shape.permute(shape.reshape(g, (n, groups, og) + tuple(g.shape[2:])), 1, 2, 0, 3, 4),
        (o, n) + tuple(g.shape[2:]),
    )
    top, bottom, left, right = pads
    if top == bottom and left == right:
        padding = (top, left)
    else:
        xr, padding = _pad2d(xr, pads), 0
    res = conv.conv2d(xr, gr, None, dilation, padding, stride, groups)  # (cg, O, kh', kw'), kh' >= kh
    kh, kw = kernel
    if tuple(res.shape[2:]) != (kh, kw):
        res = res[:, :, :kh, :kw]
    return shape.permute(res, 1, 0, 2, 3)


def _conv_input_grad(g, weight, stride, pads, dilation, groups, padded_hw, hw):
    """The input gradient of a conv2d: a transposed conv2d of ``g``, cropped to the unpadded input."""
    kh, kw = weight.shape[2:]
    extra = tuple(
        p - ((o - 1) * s + d * (k - 1) + 1) for p, o, s, d, k in zip(padded_hw, g.shape[2:], stride, dilation, (kh, kw))
    )  # rows/columns past the last window (fewer than the stride): output padding
    full = conv_transpose.conv_transpose2d(g, weight, None, stride, 0, extra, groups, dilation)
    top, _, left, _ = pads
    h, w = hw
    if tuple(full.shape[2:]) != (h, w):
        full = full[:, :, top : top + h, left : left + w]
    return full


def _conv_input_value(node, cols, grid, n):
    """The padded input's pixels that the windows read, rebuilt from im2col columns (others are zero).

    Conv2d saves its columns rather than its input; the weight gradient only reads those pixels.
    """
    xp = node.xp
    kh, kw, oh, ow = grid.kh, grid.kw, grid.oh, grid.ow
    c = cols._data.size // (kh * kw * n * oh * grid.q)
    c6 = cols._data.reshape(c, kh, kw, n, oh, grid.q)[..., :ow]
    xpad = xp.zeros((n, c, grid.hp, grid.wp), dtype=cols._data.dtype)
    (sh, sw), (dh, dw) = grid.stride, grid.dilation
    for i, j, where_ in conv._spatial_slices((kh, kw), (sh, sw), (dh, dw), (oh, ow)):
        xpad[where_] = c6[:, i, j].transpose(1, 0, 2, 3)
    top, _, left, _ = grid.pads
    h, w = grid.hw
    return xp.ascontiguousarray(xpad[:, :, top : top + h, left : left + w])


@register_differentiable_backward(conv.Conv2d)
def _conv2d(node, saved, g):
    cols, weight = saved
    grid, wshape, groups, unbatched = node.meta
    n_ = node.needs_input_grad
    if unbatched:
        g = shape.unsqueeze(g, 0)
    gx = gw = gb = None
    if n_[0]:
        gx = _conv_input_grad(g, weight, grid.stride, grid.pads, grid.dilation, groups, (grid.hp, grid.wp), grid.hw)
        if unbatched:
            gx = shape.squeeze(gx, 0)
    if n_[1]:
        value = _conv_input_value(node, cols, grid, g.shape[0])
        x = input_tensor(node, 0, value[0] if unbatched else value)
        xb = shape.unsqueeze(x, 0) if unbatched else x
        gw = _conv_weight_grad(xb, g, grid.stride, grid.pads, grid.dilation, groups, wshape[2:])
    if n_[2]:
        gb = reduce.sum(g, (0, 2, 3))
    return gx, gw, gb, None, None, None, None


@register_differentiable_backward(conv_transpose.ConvTranspose2d)
def _conv_transpose2d(node, saved, g):
    xt, weight = saved
    grid, wshape, groups, unbatched, (h, w) = node.meta
    n_ = node.needs_input_grad
    if unbatched:
        g = shape.unsqueeze(g, 0)
    gx = gw = gb = None
    top, _, left, _ = grid.pads
    if n_[0]:  # the transposed conv's input gradient is the conv it transposes
        padding = (top, left)
        gx = conv.conv2d(g, weight, None, grid.stride, padding, grid.dilation, groups)
        if tuple(gx.shape[2:]) != (h, w):
            gx = gx[:, :, :h, :w]
        if unbatched:
            gx = shape.squeeze(gx, 0)
    if n_[1]:
        cin = wshape[0]
        n = g.shape[0]
        value = node.xp.ascontiguousarray(xt._data.reshape(cin, n, h, -1)[..., :w].transpose(1, 0, 2, 3))
        x = input_tensor(node, 0, value[0] if unbatched else value)
        xb = shape.unsqueeze(x, 0) if unbatched else x
        # the weight gradient of the transposed conv is that of the conv it transposes, input and output swapped
        gw = _conv_weight_grad(g, xb, grid.stride, grid.pads, grid.dilation, groups, wshape[2:])
    if n_[2]:
        gb = reduce.sum(g, (0, 2, 3))
    return gx, gw, gb, None, None, None, None, None


# ------------------------------------------------------------ pooling
class AvgPool2dBackward(ArrayFunction):
    """The transpose of ``avg_pool2d``: each output gradient spread evenly over its window."""

    @staticmethod
    def forward(ctx, g, meta):
        ctx.meta = meta
        padded_shape, hw, k, stride, pads, out_hw, divisor = meta
        xp = ctx.xp
        share = g / divisor
        dx = xp.zeros(g.shape[:-2] + tuple(padded_shape[-2:]), dtype=g.dtype)
        for _, _, where_ in conv._spatial_slices(k, stride, (1, 1), out_hw):
            dx[where_] += share
        return conv._crop_hw(xp, dx, pads, hw)

    @staticmethod
    def backward(ctx, gg):
        _, _, k, stride, pads, out_hw, divisor = ctx.meta
        xp = ctx.xp
        ggpad = conv._pad_hw(xp, gg, pads)
        acc = None
        for _, _, where_ in conv._spatial_slices(k, stride, (1, 1), out_hw):
            acc = ggpad[where_].copy() if acc is None else acc + ggpad[where_]
        return acc / divisor, None


@register_differentiable_backward(conv.AvgPool2d)
def _avg_pool2d(node, saved, g):
    return AvgPool2dBackward.apply(g, node.meta), None, None, None, None, None


@register_differentiable_backward(AvgPool2dBackward)
def _avg_pool2d_backward(node, saved, gg):
    _, _, k, stride, pads, out_hw, divisor = node.meta
    return conv.AvgPool2d.apply(gg, k, stride, pads, out_hw, divisor), None


def _window_rows(flat):
    """``(rows, flat)``: the advanced index of a flat (M, P) array at per-row positions ``flat`` (M, Q)."""
    xp = namespace_of(flat)
    return xp.arange(flat.shape[0]).reshape(-1, 1), flat


class WindowScatter(ArrayFunction):
    """``g`` (..., OH, OW) added at flat positions of a zero padded (..., Hp, Wp) image, then cropped (max pool's
    backward: each window's gradient goes to its maximum). Its transpose is :class:`WindowGather`."""

    @staticmethod
    def forward(ctx, g, flat, padded_hw, pads, hw):
        ctx.meta = (flat, padded_hw, pads, hw)
        return _window_scatter(ctx.xp, g, flat, padded_hw, pads, hw)

    @staticmethod
    def backward(ctx, gg):
        flat, _, pads, _ = ctx.meta
        return _window_gather(ctx.xp, gg, flat, pads), None, None, None, None


def _window_scatter(xp, g, flat, padded_hw, pads, hw):
    lead = g.shape[:-2]
    m = math.prod(lead)
    dx = xp.zeros((m, padded_hw[0] * padded_hw[1]), dtype=g.dtype)
    dx = indexing.add_at(dx, _window_rows(flat.reshape(m, -1)), g.reshape(m, -1), xp)
    return conv._crop_hw(xp, dx.reshape(lead + tuple(padded_hw)), pads, hw)


def _window_gather(xp, x, flat, pads):
    lead = x.shape[:-2]
    m = math.prod(lead)
    xpad = conv._pad_hw(xp, x, pads).reshape(m, -1)
    return xpad[_window_rows(flat.reshape(m, -1))].reshape(lead + flat.shape[-2:])


class WindowGather(ArrayFunction):
    """``x`` (..., H, W) zero padded, read at flat positions (..., OH, OW): the transpose of :class:`WindowScatter`."""

    @staticmethod
    def forward(ctx, x, flat, pads):
        ctx.meta = (flat, tuple(x.shape[-2:]), pads)
        return _window_gather(ctx.xp, x, flat, pads)

    @staticmethod
    def backward(ctx, g):
        flat, hw, pads = ctx.meta
        padded_hw = (hw[0] + pads[0] + pads[1], hw[1] + pads[2] + pads[3])
        return _window_scatter(ctx.xp, g, flat, padded_hw, pads, hw), None, None


@register_differentiable_backward(WindowScatter)
def _window_scatter_db(node, saved, gg):
    flat, _, pads, _ = node.meta
    return WindowGather.apply(gg, flat, pads), None, None, None, None


@register_differentiable_backward(WindowGather)
def _window_gather_db(node, saved, g):
    flat, hw, pads = node.meta
    padded_hw = (hw[0] + pads[0] + pads[1], hw[1] + pads[2] + pads[3])
    return WindowScatter.apply(g, flat, padded_hw, pads, hw), None, None


@register_differentiable_backward(conv.MaxPool2d)
def _max_pool2d(node, saved, g):
    if isinstance(g, (list, tuple)):  # return_indices: the indices carry no gradient
        g = g[0]
    (arg,) = saved
    padded_shape, hw, k, stride, dilation, pads, out_hw = node.meta
    xp = node.xp
    a = arg._data.astype(xp.int64)
    oh, ow = out_hw
    row = xp.arange(oh, dtype=xp.int64).reshape(oh, 1) * stride[0] + (a // k[1]) * dilation[0]
    col = xp.arange(ow, dtype=xp.int64) * stride[1] + (a % k[1]) * dilation[1]
    flat = row * padded_shape[-1] + col  # the maximum's flat position in the padded image
    return WindowScatter.apply(g, flat, tuple(padded_shape[-2:]), pads, hw), None, None, None, None, None, None


@register_differentiable_backward(conv.AdaptiveAvgPool2d)
def _adaptive_avg_pool2d(node, saved, g):
    in_shape, ah, aw = node.meta
    xp = node.xp
    if ah is None:
        (h, w), (oh, ow) = in_shape[-2:], g.shape[-2:]
        ah, aw = conv._adaptive_matrix(xp, h, oh, g._data.dtype), conv._adaptive_matrix(xp, w, ow, g._data.dtype)
    return linalg.matmul(linalg.matmul(_const(node, ah.T, g), g), _const(node, aw, g)), None


# ------------------------------------------------------------ normalisation
def _renormalized(x, axes, rstd_saved):
    """``(xhat, rstd)`` recomputed from ``x`` with tensor ops over ``axes``.

    The ops keep ``1/sqrt(var + eps)`` but not ``eps``: it is recovered as ``1/rstd^2 - var`` (a constant),
    so the recomputed rstd has the saved value and the right derivatives.
    """
    xc = x - reduce.mean(x, axes, keepdim=True)
    var = reduce.mean(xc * xc, axes, keepdim=True)
    r = rstd_saved._data if isinstance(rstd_saved, Tensor) else rstd_saved
    eps = 1.0 / (r.astype(var._data.dtype) ** 2) - var._data
    rstd = elementwise.rsqrt(var + constant(None, eps))
    return xc * rstd, rstd


def _normalized_input_grad(gxhat, xhat, rstd, axes):
    """d/dx of a normalisation over ``axes``, applied to the gradient ``gxhat`` of its normalised output."""
    m1 = reduce.mean(gxhat, axes, keepdim=True)
    m2 = reduce.mean(gxhat * xhat, axes, keepdim=True)
    return (gxhat - m1 - xhat * m2) * rstd


@register_differentiable_backward(normalization.LayerNorm)
def _layer_norm(node, saved, g):
    axes = node.axes
    n_ = node.needs_input_grad
    normalized = tuple(g.shape[g.ndim - len(axes) :])
    if node.fused_dtype is not None:  # CUDA kernels: they saved the input as rows, and mean and rstd
        x2, w, _, rstd = saved
        if x2._data.dtype != g._data.dtype:
            raise RuntimeError(
                f"{node.name()} supports higher-order gradients only where it computes in the input's dtype, "
                f"not for {g._data.dtype} inputs computed in {x2._data.dtype}"
            )
        x_value = x2._data.reshape(g.shape)
        rstd_k = rstd._data.reshape(g.shape[: g.ndim - len(axes)] + (1,) * len(axes))
        weight = None if w is None else input_tensor(node, 1, w._data.reshape(normalized))
    else:
        xhat0, rstd_t, weight = saved
        x_value = xhat0._data / rstd_t._data  # centred: layer norm is shift-invariant along its axes
        rstd_k = rstd_t._data
    x = input_tensor(node, 0, x_value)
    xhat, rstd = _renormalized(x, axes, rstd_k)
    lead = tuple(range(g.ndim - len(axes)))
    gx = gw = gb = None
    if n_[0]:
        gx = _normalized_input_grad(g * weight if weight is not None else g, xhat, rstd, axes)
    if n_[1]:
        gw = reduce.sum(g * xhat, lead) if lead else g * xhat
    if n_[2]:
        gb = reduce.sum(g, lead) if lead else g
    return gx, gw, gb, None, None


@register_differentiable_backward(group_norm.GroupNorm)
def _group_norm(node, saved, g):
    xhat0, rstd_t, weight = saved
    in_shape, in_dtype = node.meta
    if xhat0._data.dtype != in_dtype:
        raise RuntimeError(f"{node.name()} supports higher-order gradients for float32 and float64 inputs only")
    n_ = node.needs_input_grad
    n, c = in_shape[:2]
    groups = xhat0.shape[1]
    x = shape.reshape(input_tensor(node, 0, (xhat0._data / rstd_t._data).reshape(in_shape)), xhat0.shape)
    xhat, rstd = _renormalized(x, (2,), rstd_t._data)
    gc = shape.reshape(g, (n, c, -1))
    gx = gw = gb = None
    if n_[0]:
        gxhat = gc * shape.reshape(weight, (1, c, 1)) if weight is not None else gc
        gxhat = shape.reshape(gxhat, (n, groups, -1))
        gx = shape.reshape(_normalized_input_grad(gxhat, xhat, rstd, (2,)), tuple(in_shape))
    if n_[1]:
        gw = reduce.sum(gc * shape.reshape(xhat, (n, c, -1)), (0, 2))
    if n_[2]:
        gb = reduce.sum(gc, (0, 2))
    return gx, gw, gb, None, None, None, None, None


@register_differentiable_backward(conv.BatchNorm)
def _batch_norm(node, saved, g):
    xhat0, invstd, weight = saved
    training, axes, bshape, in_dtype = node.meta
    if in_dtype is not None:
        raise RuntimeError(
            f"{node.name()} supports higher-order gradients only where it computes in the input's dtype "
            "(not for a float16/bfloat16 input with float32 parameters)"
        )
    n_ = node.needs_input_grad
    inv = shape.reshape(invstd, bshape)
    gx = gw = gb = None
    if training:
        x = input_tensor(node, 0, xhat0._data / inv._data)  # centred: shift-invariant per channel
        xhat, rstd = _renormalized(x, axes, inv._data)
    elif xhat0 is not None:
        # eval: xhat = (x - running_mean) * invstd, linear in x
        x = input_tensor(node, 0, xhat0._data / inv._data)
        xhat = x * inv
    w = shape.reshape(weight, bshape) if weight is not None else None
    if n_[0]:
        gxhat = g * w if w is not None else g
        gx = _normalized_input_grad(gxhat, xhat, rstd, axes) if training else gxhat * inv
    if n_[3]:
        gw = reduce.sum(g * xhat, axes)
    if n_[4]:
        gb = reduce.sum(g, axes)
    return gx, None, None, gw, gb, None, None, None, None


# ------------------------------------------------------------ indexing
class AdvancedIndexBackward(BasicIndexBackward):
    """The transpose of ``x[index]`` (advanced): ``g`` added at ``index`` of zeros; repeated indices accumulate.
    Its backward is :class:`BasicIndexBackward`'s: ``gg[index]``."""

    @staticmethod
    def forward(ctx, g, in_shape, index):
        if any(getattr(i, "dtype", None) is not None and i.dtype.kind != "b" for i in index):
            ctx.index = index
            return indexing.scatter_add_into_zeros(in_shape, g.dtype, index, g, ctx.xp)
        return BasicIndexBackward.forward(ctx, g, in_shape, index)


@register_differentiable_backward(indexing.AdvancedIndex)
def _advanced_index(node, saved, g):
    in_shape, _, index = node.meta
    return AdvancedIndexBackward.apply(g, in_shape, index), None


@register_differentiable_backward(AdvancedIndexBackward)
def _advanced_index_backward(node, saved, gg):
    return indexing.AdvancedIndex.apply(gg, node.index), None, None


class IndexSelectBackward(ArrayFunction):
    """The transpose of ``index_select``: ``g`` added at ``index`` along ``dim`` of zeros."""

    @staticmethod
    def forward(ctx, g, in_shape, dim, index):
        ctx.meta = (dim, index)
        return indexing.scatter_add_into_zeros(in_shape, g.dtype, (slice(None),) * dim + (index,), g, ctx.xp)

    @staticmethod
    def backward(ctx, gg):
        dim, index = ctx.meta
        return ctx.xp.take(gg, index, axis=dim), None, None, None


@register_differentiable_backward(indexing.IndexSelect)
def _index_select(node, saved, g):
    in_shape, _, dim, index = node.meta
    return IndexSelectBackward.apply(g, in_shape, dim, index), None, None


@register_differentiable_backward(IndexSelectBackward)
def _index_select_backward(node, saved, gg):
    dim, index = node.meta
    return indexing.IndexSelect.apply(gg, dim, index), None, None, None


@register_differentiable_backward(indexing.ScatterAdd)
def _scatter_add(node, saved, g):
    src_shape, _, idx, region = node.meta
    n_ = node.needs_input_grad
    g_src = None
    if n_[1]:
        g_src = indexing.AdvancedIndex.apply(g, idx)
        if tuple(g_src.shape) != tuple(src_shape):
            g_src = BasicIndexBackward.apply(g_src, tuple(src_shape), region)
    return (g if n_[0] else None), g_src, None, None


@register_differentiable_backward(indexing.MaskedFill)
def _masked_fill(node, saved, g):
    (mask,) = saved
    n_ = node.needs_input_grad
    gx = where(mask, 0.0, g) if n_[0] else None
    gv = shape.reshape(reduce.sum(where(mask, g, 0.0)), tuple(node.value_shape)) if n_[1] else None
    return gx, gv, None


class EmbeddingBackward(ArrayFunction):
    """The transpose of ``embedding``: rows of ``g`` summed into a zero table; ``padding_idx``'s row stays zero."""

    @staticmethod
    def forward(ctx, g, num_rows, indices, padding_idx):
        ctx.meta = (indices, padding_idx)
        xp = ctx.xp
        out = xp.zeros((num_rows, g.shape[-1]), dtype=g.dtype)
        out = indexing.add_at(out, indices.reshape(-1), g.reshape(-1, g.shape[-1]), xp)
        if padding_idx is not None:
            out[padding_idx] = 0
        return out

    @staticmethod
    def backward(ctx, gg):
        indices, padding_idx = ctx.meta
        rows = gg[indices]
        if padding_idx is not None:
            rows = rows * (indices != padding_idx)[..., None]
        return rows, None, None, None


@register_differentiable_backward(sparse.Embedding)
def _embedding(node, saved, g):
    num_rows, indices, padding_idx = node.meta
    return EmbeddingBackward.apply(g, num_rows, indices, padding_idx), None, None


@register_differentiable_backward(EmbeddingBackward)
def _embedding_backward(node, saved, gg):
    indices, padding_idx = node.meta
    rows = sparse.Embedding.apply(gg, indices, None)
    if padding_idx is not None:
        rows = rows * _const(node, (indices != padding_idx)[..., None], rows)
    return rows, None, None, None


# ------------------------------------------------------------ attention
@register_differentiable_backward(attention.ScaledDotProductAttention)
def _scaled_dot_product_attention(node, saved, g):
    qs, k, v, p, keep = saved
    scale, dropout_p = node.meta
    xp = node.xp
    n_ = node.needs_input_grad
    q = input_tensor(node, 0, qs._data / qs._data.dtype.type(scale))  # forward kept Q * scale
    s = linalg.matmul(q * scale, shape.transpose(k, -1, -2))
    # The attention weights recomputed with history: softmax(s + c), where the constant c (log p - s, -inf where
    # p is zero) stands for the mask that forward did not keep; rows the mask covers entirely stay zero.
    pa = p._data
    alive = pa.sum(axis=-1, keepdims=True) > 0
    c = xp.where(pa > 0, xp.log(xp.where(pa > 0, pa, 1)) - s._data, -math.inf)
    c = xp.where(alive, c, 0).astype(pa.dtype, copy=False)
    weights = nn.softmax(s + constant(node, c), -1)
    if not bool(alive.all()):
        weights = weights * _const(node, alive, weights)
    gq = gk = gv = None
    factor = None if keep is None else _const(node, keep._data * (1.0 / (1.0 - dropout_p)), weights)
    if n_[2]:
        dropped = weights * factor if factor is not None else weights
        gv = linalg.matmul(shape.transpose(dropped, -1, -2), g)
    if n_[0] or n_[1]:
        dp = linalg.matmul(g, shape.transpose(v, -1, -2))
        if factor is not None:
            dp = dp * factor
        ds = weights * (dp - reduce.sum(dp * weights, -1, keepdim=True))
        if n_[0]:
            gq = linalg.matmul(ds, k) * scale
        if n_[1]:
            gk = linalg.matmul(shape.transpose(ds, -1, -2), q * scale)
    return gq, gk, gv, None, None, None, None
