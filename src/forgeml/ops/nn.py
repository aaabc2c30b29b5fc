"""Neural-network kernels: softmax and log-softmax, one-hot encoding, linear, dropout and the class losses.

Each op is an :class:`~forgeml.autograd.ArrayFunction` computing with
``ctx.xp``. On CUDA (``backend.is_cupy(xp)``) the row-wise ops run the fused
kernels of :mod:`forgeml.ops._fused_nn`: softmax and log-softmax over the last
dim, cross-entropy of logits against class indices (class weights,
``ignore_index`` and label smoothing included; probability targets and
``nll_loss`` keep the portable body), the dropout mask and scale, and the bias
add after the linear layer's GEMM. Everywhere else (the CPU, and the checked
CuPy stand-in in the tests) the portable body runs, which on the CPU is the
code ForgeML always ran.
"""

from __future__ import annotations

import math

from ..autograd.function import ArrayFunction
from ..backend.device import HOST_ARRAY, HOST_XP, ignore_float_errors, is_cupy, namespace_of
from ..backend.dtypes import is_float
from ..backend.random import generator_for
from ..tensor import Tensor
from . import _autocast, _fused, _fused_nn
from ._util import as_tensor_like, normalize_dim

__all__ = ["cross_entropy", "dropout", "linear", "linear_activation", "log_softmax", "nll_loss", "one_hot", "softmax"]


def on_device_of(value, like: Tensor, what: str, name: str) -> Tensor:
    """``value`` (a tensor, array, list or number) as a tensor on ``like``'s device.

    Python data and NumPy arrays are copied there; a tensor on another device
    is an error, as in PyTorch.
    """
    if isinstance(value, Tensor):
        if type(value._data) is type(like._data) and (type(value._data) is HOST_ARRAY or value.device == like.device):
            return value
        raise RuntimeError(
            f"{name}: expected all tensors to be on the same device, but {what} is on {value.device} and the input "
            f"on {like.device} (move it with .to('{like.device}'))"
        )
    return as_tensor_like(value, like)


def full_on_cuda(*tensors):
    """``tensors`` in float32 under CUDA autocast; CPU autocast leaves them alone.

    For ops that PyTorch runs in float32 under CUDA autocast only (softmax,
    log_softmax, layer_norm): its CPU autocast lists omit them.
    """
    first = tensors[0]
    if type(first._data) is HOST_ARRAY:
        return tensors
    return _autocast.full(*tensors)


def _row_kernel_dtype(xp, x, dim):
    """The dtype the fused row kernels compute ``x`` in along ``dim`` (CUDA, last dim only), else None."""
    if not is_cupy(xp) or dim != x.ndim - 1:
        return None
    return _fused_nn.kernel_dtype(xp, x.dtype)


# ----------------------------------------------------------------- softmax
def _stable_exp(x, dim, xp):
    shifted = x - x.max(axis=dim, keepdims=True)
    return shifted, xp.exp(shifted)


def _sum_keepdims(a, dim, xp):
    """``a.sum(axis=dim, keepdims=True)``; over the last dim of a float32/float64 array as a product with a
    vector of ones: BLAS's matrix-vector product is several times faster than NumPy's reduction over short
    rows (softmax's 64-wide attention rows), and equal to float rounding."""
    if dim == a.ndim - 1 and a.ndim > 1 and a.dtype.char in "fd":
        return (a @ xp.ones(a.shape[-1], dtype=a.dtype))[..., None]
    return a.sum(axis=dim, keepdims=True)


def _softmax_rows(xp, x, kd, log):
    """The fused row softmax of ``x`` over its last dim, computed in ``kd``, in ``x``'s dtype and shape."""
    rows = xp.ascontiguousarray(x.astype(kd, copy=False)).reshape(-1, x.shape[-1])
    return _fused_nn.softmax_forward(xp, rows, log).reshape(x.shape).astype(x.dtype, copy=False)


def _softmax_rows_backward(xp, g, out, kd, log):
    n = out.shape[-1]
    rows = xp.ascontiguousarray(out.astype(kd, copy=False)).reshape(-1, n)
    dx = _fused_nn.softmax_backward(xp, g.reshape(-1, n), rows, log)
    return dx.reshape(out.shape).astype(g.dtype, copy=False)


class Softmax(ArrayFunction):
    @staticmethod
    def forward(ctx, x, dim):
        xp = ctx.xp
        ctx.dim = dim
        kd = _row_kernel_dtype(xp, x, dim)
        if kd is not None:
            out = _softmax_rows(xp, x, kd, False)
        else:
            out = x - x.max(axis=dim, keepdims=True)
            xp.exp(out, out=out)
            out /= _sum_keepdims(out, dim, xp)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, g):
        (out,) = ctx.saved_tensors
        xp = ctx.xp
        kd = _row_kernel_dtype(xp, out, ctx.dim)
        if kd is not None:
            return _softmax_rows_backward(xp, g, out, kd, False), None
        go = g * out
        go -= out * _sum_keepdims(go, ctx.dim, xp)
        return go, None


class LogSoftmax(ArrayFunction):
    @staticmethod
    def forward(ctx, x, dim):
        xp = ctx.xp
        ctx.dim = dim
        kd = _row_kernel_dtype(xp, x, dim)
        if kd is not None:
            out = _softmax_rows(xp, x, kd, True)
        else:
            shifted, e = _stable_exp(x, dim, xp)
            shifted -= xp.log(_sum_keepdims(e, dim, xp))
            out = shifted
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, g):
        (out,) = ctx.saved_tensors
        xp = ctx.xp
        kd = _row_kernel_dtype(xp, out, ctx.dim)
        if kd is not None:
            return _softmax_rows_backward(xp, g, out, kd, True), None
        return g - xp.exp(out) * _sum_keepdims(g, ctx.dim, xp), None


def _prepare(input, dim, dtype, name):
    if dim is None:
        raise TypeError(f"{name}() requires dim (the dimension to normalise over)")
    if dtype is not None:
        input = input.to(dtype)
    elif _autocast.state.active:
        (input,) = full_on_cuda(input)
    if not is_float(input._data.dtype):
        raise RuntimeError(f"{name}(): expected a floating point tensor, got {input.dtype}")
    return input, normalize_dim(dim, max(input._data.ndim, 1))


def softmax(input, dim=None, dtype=None):
    """``exp(x) / sum(exp(x))`` along ``dim``, computed without overflow."""
    input, d = _prepare(input, dim, dtype, "softmax")
    if input._data.ndim == 0:
        return Softmax.apply(input.reshape(1), 0).reshape(())
    return Softmax.apply(input, d)


def log_softmax(input, dim=None, dtype=None):
    """``x - logsumexp(x)`` along ``dim``; its backward is one fused step."""
    input, d = _prepare(input, dim, dtype, "log_softmax")
    if input._data.ndim == 0:
        return LogSoftmax.apply(input.reshape(1), 0).reshape(())
    return LogSoftmax.apply(input, d)


def one_hot(tensor, num_classes: int = -1):
    """int64 one-hot encoding of a tensor of class indices (``num_classes=-1``: max index + 1)."""
    if not isinstance(tensor, Tensor) or tensor._data.dtype.kind not in "iu":
        raise RuntimeError("one_hot is only applicable to index tensors (int64)")
    idx = tensor._data
    xp = namespace_of(idx)
    if idx.size and idx.min() < 0:
        raise RuntimeError("one_hot: class values must be non-negative")
    if num_classes == -1:
        if idx.size == 0:
            raise RuntimeError("one_hot: can not infer total number of classes from empty tensor")
        num_classes = int(idx.max()) + 1
    elif idx.size and idx.max() >= num_classes:
        raise RuntimeError(
            f"one_hot: class values must be smaller than num_classes ({num_classes}), got {int(idx.max())}"
        )
    out = xp.zeros(idx.shape + (num_classes,), dtype=xp.int64)
    xp.put_along_axis(out, idx[..., None].astype(xp.int64), 1, axis=-1)
    return Tensor._make(out, False, None)


# ----------------------------------------------------------------- layers
class Linear(ArrayFunction):
    """``x @ weight.T + bias`` as one op: one matmul and an in-place bias add forward, three products back.

    On CUDA the bias add is a fused kernel over the GEMM's output.
    """

    @staticmethod
    def forward(ctx, x, weight, bias):
        n = ctx.needs_input_grad
        ctx.save_for_backward(x if n[1] else None, weight if n[0] else None)
        # Batch dims are folded into one GEMM: NumPy runs a 3-D @ 2-D product as one small GEMM per row of
        # the leading dim, about half as fast on [batch, time, features] inputs.
        x2 = x.reshape(-1, x.shape[-1]) if x.ndim != 2 else x
        out = x2 @ weight.T
        if bias is not None:
            xp = ctx.xp
            if xp is not HOST_XP and is_cupy(xp):
                _fused_nn.bias_add_(xp, out, bias.astype(out.dtype, copy=False))
            else:
                out += bias
        if out.dtype != x.dtype:  # ml_dtypes' bfloat16 matmul returns float32: round once, after the bias
            out = out.astype(x.dtype)
        return out.reshape(x.shape[:-1] + (weight.shape[0],)) if x.ndim != 2 else out

    @staticmethod
    def backward(ctx, g):
        x, weight = ctx.saved_tensors
        n = ctx.needs_input_grad
        g2 = g.reshape(-1, g.shape[-1]) if g.ndim != 2 else g
        gx = None
        if n[0]:
            gx = g2 @ weight
            if g.ndim != 2:
                gx = gx.reshape(g.shape[:-1] + (weight.shape[1],))
        gw = g2.T @ x.reshape(-1, x.shape[-1]) if n[1] else None
        gb = None
        if n[2]:  # column sums; float32/float64 as a BLAS product with ones, faster than NumPy's sum over rows
            blas = g2.dtype.char in "fd"
            gb = ctx.xp.ones(g2.shape[0], dtype=g2.dtype) @ g2 if blas else g2.sum(axis=0)
        # x and weight share a dtype (linear checks); NumPy returns bfloat16 products as float32
        if gx is not None and gx.dtype != weight.dtype:
            gx = gx.astype(weight.dtype)
        if gw is not None and gw.dtype != x.dtype:
            gw = gw.astype(x.dtype)
        return gx, gw, gb


def linear(input, weight, bias=None):
    """``input @ weight.T + bias`` (``weight`` is ``[out_features, in_features]``, as in PyTorch)."""
    if _autocast.state.active:
        input, weight, bias = _autocast.lower(input, weight, bias)
    _check_linear(input, weight, bias)
    return Linear.apply(input, weight, bias)


def _check_linear(input, weight, bias) -> None:
    """Shapes and dtypes a linear layer can multiply, or an error that names them."""
    if input._data.ndim == 0 or weight._data.ndim != 2:
        raise RuntimeError(
            "linear: expected input of at least 1 dim and a 2-D weight, "
            f"got {list(input.shape)} and {list(weight.shape)}"
        )
    if input._data.shape[-1] != weight._data.shape[1]:
        rows = "x".join(map(str, input._data.shape))
        raise RuntimeError(
            "linear: mat1 and mat2 shapes cannot be multiplied "
            f"({rows} and {weight._data.shape[1]}x{weight._data.shape[0]}): "
            f"input has {input._data.shape[-1]} features, the weight expects {weight._data.shape[1]}"
        )
    if bias is not None and bias._data.shape != (weight._data.shape[0],):
        raise RuntimeError(
            f"linear: bias of shape {list(bias.shape)} does not match {weight._data.shape[0]} output features"
        )
    if input._data.dtype != weight._data.dtype:
        raise RuntimeError(
            f"linear: input dtype {input.dtype} and weight dtype {weight.dtype} differ; convert one with .to()"
        )


# The epilogue of a linear layer followed by its activation, fused on CUDA: one pass adds the bias and applies
# the activation (keeping the pre-activation for backward), one pass back gives the pre-activation gradient.
_BIAS_ACT_FORWARD = {
    "relu": "double p = (double)h + (double)bias[i % n_out]; pre = p; y = p > 0.0 ? p : 0.0",
    "gelu": "double p = (double)h + (double)bias[i % n_out]; pre = p; y = p * normcdf(p)",
    "gelu_tanh": (
        "double p = (double)h + (double)bias[i % n_out]; pre = p;"
        " y = 0.5 * p * (1.0 + tanh(0.7978845608028654 * (p + 0.044715 * p * p * p)))"
    ),
}
_ACT_BACKWARD = {
    "relu": "dp = (double)pre > 0.0 ? (double)g : 0.0",
    "gelu": "double u = (double)pre; dp = (double)g * (normcdf(u) + u * 0.3989422804014327 * exp(-0.5 * u * u))",
    "gelu_tanh": (
        "double u = (double)pre; double t = tanh(0.7978845608028654 * (u + 0.044715 * u * u * u));"
        " dp = (double)g * (0.5 * (1.0 + t) + 0.5 * u * (1.0 - t * t) * 0.7978845608028654 * (1.0 + 0.134145 * u * u))"
    ),
}
_BIAS_ACT_SPECS = {
    name: (
        _fused.define(f"linear_bias_{name}", "T h, raw T bias, int64 n_out", "T pre, T y", body),
        _fused.define(f"linear_{name}_backward", "T g, T pre", "T dp", _ACT_BACKWARD[name]),
    )
    for name, body in _BIAS_ACT_FORWARD.items()
}


class LinearActivation(ArrayFunction):
    """``activation(x @ weight.T + bias)`` with the bias add and the activation fused (the CUDA half only)."""

    @staticmethod
    def forward(ctx, x, weight, bias, activation):
        xp = ctx.xp
        forward_kernel, _ = _BIAS_ACT_SPECS[activation]
        x2 = x.reshape(-1, x.shape[-1]) if x.ndim != 2 else x
        h = x2 @ weight.T
        pre = xp.empty_like(h)
        y = xp.empty_like(h)
        forward_kernel(xp)(h, bias.astype(h.dtype, copy=False), h.shape[-1], pre, y)
        n = ctx.needs_input_grad
        ctx.save_for_backward(x if n[1] else None, weight if n[0] else None, pre)
        ctx.activation = activation
        return y.reshape(x.shape[:-1] + (weight.shape[0],)) if x.ndim != 2 else y

    @staticmethod
    def backward(ctx, g):
        x, weight, pre = ctx.saved_tensors
        xp = ctx.xp
        n = ctx.needs_input_grad
        g2 = g.reshape(-1, g.shape[-1]) if g.ndim != 2 else g
        dp = xp.empty_like(pre)
        _BIAS_ACT_SPECS[ctx.activation][1](xp)(g2, pre, dp)
        gx = None
        if n[0]:
            gx = dp @ weight
            if g.ndim != 2:
                gx = gx.reshape(g.shape[:-1] + (weight.shape[1],))
        gw = dp.T @ x.reshape(-1, x.shape[-1]) if n[1] else None
        gb = dp.sum(axis=0) if n[2] else None
        return gx, gw, gb, None


def linear_activation(input, weight, bias, activation: str):
    """``activation(linear(input, weight, bias))`` for ``activation`` in relu, gelu, gelu_tanh.

    On CUDA the bias add and the activation are one fused kernel each way;
    elsewhere it is the two ops in sequence (the same numbers).
    """
    if activation not in _BIAS_ACT_FORWARD:
        raise ValueError(
            f"linear_activation: activation must be one of {sorted(_BIAS_ACT_FORWARD)}, got {activation!r}"
        )
    if bias is not None and is_cupy(namespace_of(input._data)):
        if _autocast.state.active:
            input, weight, bias = _autocast.lower(input, weight, bias)
        _check_linear(input, weight, bias)
        return LinearActivation.apply(input, weight, bias, activation)
    from .elementwise import gelu, relu

    out = linear(input, weight, bias)
    if activation == "relu":
        return relu(out)
    return gelu(out, approximate="tanh" if activation == "gelu_tanh" else "none")


class Dropout(ArrayFunction):
    """Inverted dropout from uniform draws ``u``: keep where ``u >= p``, scale survivors by ``1/(1-p)``.

    The CPU (and portable) body saves the mask times the scale; the CUDA half
    makes the output and a boolean mask in one kernel and saves the mask.
    """

    fused_scale = None  # the scale when the CUDA kernel made the (boolean) saved mask

    @staticmethod
    def forward(ctx, x, p, gen):
        xp = ctx.xp
        if p >= 1.0:
            mask = xp.zeros(x.shape, dtype=x.dtype)
        else:
            u = gen.random(x.shape, dtype=xp.float32)
            scale = x.dtype.type(1.0 / (1.0 - p))
            if is_cupy(xp):
                out, keep = _fused_nn.dropout_forward(xp, x, u, p, scale)
                ctx.save_for_backward(keep)
                ctx.fused_scale = scale
                return out
            mask = xp.multiply(u >= p, scale)
        ctx.save_for_backward(mask)
        return x * mask

    @staticmethod
    def backward(ctx, g):
        (mask,) = ctx.saved_tensors
        if ctx.fused_scale is not None:
            return _fused_nn.dropout_backward(ctx.xp, g, mask, ctx.fused_scale), None, None
        return g * mask, None, None


def dropout(input, p: float = 0.5, training: bool = True, inplace: bool = False, *, generator=None):
    """Zero each element with probability ``p`` and scale survivors by ``1/(1-p)`` (training only).

    The uniform draws come from ``generator`` or the default generator of the input's device.
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
    if not training or p == 0.0:
        return input
    if not is_float(input._data.dtype):
        raise RuntimeError(f"dropout expects a floating point tensor, got {input.dtype}")
    out = Dropout.apply(input, p, generator_for(input.device, generator))
    if inplace:
        return input.copy_(out) if not input.requires_grad else out
    return out


# ----------------------------------------------------------------- losses
_REDUCTIONS = ("mean", "sum", "none")


def check_reduction(reduction: str) -> None:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{reduction!r} is not a valid value for reduction; expected one of {_REDUCTIONS}")


def _rows(x, xp):
    """Class scores as an (M, C) matrix: (C,) -> (1, C); (N, C, d1, ...) -> (N*d1*..., C), classes last."""
    if x.ndim == 1:
        return x.reshape(1, -1)
    if x.ndim == 2:
        return x
    return xp.moveaxis(x, 1, -1).reshape(-1, x.shape[1])


def _unrows(grad, shape, xp):
    """The (M, C) gradient of :func:`_rows` back in the input's layout."""
    if len(shape) > 2:
        moved = (shape[0],) + tuple(shape[2:]) + (shape[1],)
        return xp.moveaxis(grad.reshape(moved), -1, 1)
    if len(shape) == 1:
        return grad.reshape(shape)
    return grad


def _reduce_rows(xp, per_row, dtype, reduction, denom, out_shape):
    """The loss from one value per row: as it is (``none``), summed, or divided by ``denom`` (``mean``)."""
    if reduction == "none":
        return per_row.reshape(out_shape).astype(dtype, copy=False)
    total = per_row.sum(dtype=xp.float64 if dtype.itemsize == 2 else dtype)
    if reduction == "mean":
        if xp is HOST_XP:
            total = total / denom if denom else math.nan  # every row ignored: 0/0, as in PyTorch
        else:
            with ignore_float_errors():
                total = total / denom  # 0/0 = NaN on the device itself, without a sync
    return xp.asarray(total, dtype=dtype)


def _row_scale(xp, g, reduction, denom):
    """The upstream gradient per row: ``g`` itself per row (``none``), or one value for all rows."""
    if reduction == "none":
        return g.reshape(-1, 1)
    if reduction == "mean":  # every row ignored (denom 0): the loss is NaN, its gradient 0, as in PyTorch
        if xp is HOST_XP:
            return g / denom if denom else g * 0.0
        with ignore_float_errors():
            return xp.where(denom == 0, 0, g / denom)
    return g


class ClassLoss(ArrayFunction):
    """Cross-entropy (``from_logits``) or NLL over class scores, one fused op.

    ``coef`` is the (M, C) matrix of per-row class coefficients a (one-hot
    times class weight, smoothed, zero for ignored rows, or the probability
    target times weights): the loss of row i is ``-sum_c a_ic * logp_ic``.
    When ``coef`` is None the target is a plain class index per row
    (unweighted, unsmoothed, nothing ignored): the fast path.
    """

    @staticmethod
    def forward(ctx, x, target_idx, coef, denom, reduction, from_logits, out_shape):
        xp = ctx.xp
        x2 = _rows(x, xp)
        if from_logits:
            shifted = x2 - x2.max(axis=1, keepdims=True)
            e = xp.exp(shifted)
            s = e.sum(axis=1, keepdims=True)
            logp = shifted - xp.log(s)
        else:
            logp = x2
        if coef is None:
            per_row = -logp[xp.arange(x2.shape[0]), target_idx]
        else:
            per_row = -(coef * logp).sum(axis=1)
        ctx.meta = (x.shape, reduction, denom, from_logits, out_shape)
        if ctx.needs_input_grad[0]:
            ctx.save_for_backward(e / s if from_logits else None, target_idx, coef)
        return _reduce_rows(xp, per_row, x.dtype, reduction, denom, out_shape)

    @staticmethod
    def backward(ctx, g):
        probs, target_idx, coef = ctx.saved_tensors
        shape, reduction, denom, from_logits, _ = ctx.meta
        xp = ctx.xp
        scale = _row_scale(xp, g, reduction, denom)
        m = target_idx.shape[0] if coef is None else coef.shape[0]
        rows = xp.arange(m)
        if from_logits:
            if coef is None:
                grad = probs.copy()
                grad[rows, target_idx] -= 1
            else:
                grad = probs * coef.sum(axis=1, keepdims=True) - coef
        elif coef is None:
            grad = xp.zeros((m, shape[1] if len(shape) > 1 else shape[0]), dtype=g.dtype)
            grad[rows, target_idx] = -1
        else:
            grad = -coef
        grad = (grad * scale).astype(g.dtype, copy=False)
        return _unrows(grad, shape, xp), None, None, None, None, None, None


class CrossEntropyRows(ArrayFunction):
    """Cross-entropy of logits against class indices with the fused CUDA row kernels (ClassLoss's CUDA half).

    Forward keeps the logits (as contiguous rows) and one log-sum-exp per row;
    backward rebuilds the softmax from them in the gradient kernel.
    """

    @staticmethod
    def forward(ctx, x, idx, weight, ignore_index, smoothing, reduction, denom, out_shape, kd):
        xp = ctx.xp
        x2 = xp.ascontiguousarray(_rows(x, xp).astype(kd, copy=False))
        w = None if weight is None else xp.ascontiguousarray(weight.astype(kd, copy=False))
        loss, lse = _fused_nn.cross_entropy_forward(xp, x2, idx, w, ignore_index, smoothing)
        ctx.meta = (x.shape, reduction, denom, ignore_index, smoothing)
        if ctx.needs_input_grad[0]:
            ctx.save_for_backward(x2, lse, idx, w)
        return _reduce_rows(xp, loss, x.dtype, reduction, denom, out_shape)

    @staticmethod
    def backward(ctx, g):
        x2, lse, idx, w = ctx.saved_tensors
        shape, reduction, denom, ignore_index, smoothing = ctx.meta
        xp = ctx.xp
        scale = _row_scale(xp, g, reduction, denom)
        if reduction == "none":
            scale = scale.reshape(-1)
        grad = _fused_nn.cross_entropy_backward(xp, x2, lse, idx, w, ignore_index, smoothing, scale)
        return _unrows(grad.astype(g.dtype, copy=False), shape, xp), None, None, None, None, None, None, None, None


def _probability_coef(xp, x, t, w, label_smoothing, n_classes, name):
    """(coef, denom) of probability targets ``t`` (the input's shape), smoothed and weighted."""
    if t.shape != x.shape:
        raise RuntimeError(
            f"{name}: probability targets must have the input's shape {list(x.shape)}, got {list(t.shape)}"
        )
    probs = _rows(t.astype(x.dtype, copy=False), xp)
    if label_smoothing:
        probs = probs * (1 - label_smoothing) + label_smoothing / n_classes
    coef = probs * w if w is not None else probs
    return coef, max(coef.shape[0], 1)


def _index_coef(xp, x, idx, ignored, w, label_smoothing, n_classes):
    """(safe index, coef, denom) of class-index targets with weights, ``ignore_index`` or smoothing."""
    safe = xp.where(ignored, 0, idx)
    m = idx.shape[0]
    coef = xp.zeros((m, n_classes), dtype=x.dtype)
    kept = (~ignored).astype(x.dtype)
    target_weight = (w[safe] if w is not None else xp.ones(m, dtype=x.dtype)) * kept
    coef[xp.arange(m), safe] = (1 - label_smoothing) * target_weight
    if label_smoothing:
        coef += (label_smoothing / n_classes) * (w if w is not None else 1) * kept[:, None]
    return safe, coef, target_weight.sum()


def _class_loss(input, target, weight, ignore_index, reduction, label_smoothing, from_logits, name):
    check_reduction(reduction)
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"{name}: label_smoothing must be between 0.0 and 1.0, got {label_smoothing}")
    if not is_float(input._data.dtype):
        raise RuntimeError(f"{name}: expected floating point input, got {input.dtype}")
    x = input._data
    if x.ndim == 0:
        raise RuntimeError(f"{name}: input must have at least 1 dimension (the classes)")
    xp = HOST_XP if type(x) is HOST_ARRAY else namespace_of(x)
    n_classes = x.shape[1] if x.ndim > 1 else x.shape[0]
    batch_shape = (x.shape[0],) + x.shape[2:] if x.ndim > 1 else ()
    t = on_device_of(target, input, "target", name)._data
    w = None
    if weight is not None:
        w = on_device_of(weight, input, "weight", name)._data.astype(x.dtype, copy=False)
        if w.shape != (n_classes,):
            raise RuntimeError(
                f"{name}: weight should have {n_classes} elements (one per class), got shape {list(w.shape)}"
            )
    if is_float(t.dtype):  # class probabilities
        coef, denom = _probability_coef(xp, x, t, w, label_smoothing, n_classes, name)
        idx = xp.zeros(coef.shape[0], dtype=xp.int64)
        return ClassLoss.apply(input, idx, coef, denom, reduction, from_logits, batch_shape)
    if t.dtype.kind not in "iu":
        raise RuntimeError(
            f"{name}: expected class-index targets of an integer dtype (or float probabilities), got {t.dtype}"
        )
    if t.shape != batch_shape:
        raise RuntimeError(
            f"{name}: expected target of shape {list(batch_shape)} for input of shape {list(x.shape)}, "
            f"got {list(t.shape)}"
        )
    idx = t.reshape(-1).astype(xp.int64, copy=False)
    ignored = idx == ignore_index
    bad = (~ignored) & ((idx < 0) | (idx >= n_classes))
    if bad.any():
        raise IndexError(f"{name}: Target {int(idx[bad][0])} is out of bounds for {n_classes} classes.")
    kd = _fused_nn.kernel_dtype(xp, x.dtype) if from_logits and is_cupy(xp) else None
    if kd is not None:  # CUDA: the fused kernels handle weights, ignore_index and smoothing themselves
        kept = (~ignored).astype(kd)
        denom = (w.astype(kd, copy=False)[xp.where(ignored, 0, idx)] * kept).sum() if w is not None else kept.sum()
        idx = xp.ascontiguousarray(idx)
        return CrossEntropyRows.apply(
            input, idx, w, ignore_index, float(label_smoothing), reduction, denom, batch_shape, kd
        )
    if w is None and not label_smoothing and not ignored.any():
        return ClassLoss.apply(input, idx, None, max(idx.shape[0], 1), reduction, from_logits, batch_shape)
    safe, coef, denom = _index_coef(xp, x, idx, ignored, w, label_smoothing, n_classes)
    return ClassLoss.apply(input, safe, coef, denom, reduction, from_logits, batch_shape)


def cross_entropy(
    input, target, weight=None, ignore_index: int = -100, reduction: str = "mean", label_smoothing: float = 0.0
):
    """Softmax cross-entropy of logits ``input`` against class indices or class probabilities ``target``."""
    if _autocast.state.active:
        input, target, weight = _autocast.full(input, target, weight)
    return _class_loss(input, target, weight, ignore_index, reduction, label_smoothing, True, "cross_entropy")


def nll_loss(input, target, weight=None, ignore_index: int = -100, reduction: str = "mean"):
    """Negative log-likelihood of log-probabilities ``input`` at the target classes."""
    if hasattr(target, "_data") and is_float(target._data.dtype):
        raise RuntimeError("nll_loss expects class-index targets of an integer dtype")
    if _autocast.state.active:
        input, weight = _autocast.full(input, weight)
    return _class_loss(input, target, weight, ignore_index, reduction, 0.0, False, "nll_loss")
