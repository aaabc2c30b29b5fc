"""Neural-network kernels: softmax and log-softmax with fused backward passes, one-hot encoding."""

from __future__ import annotations

import numpy as np

from ..autograd.function import Function
from ..tensor import Tensor
from ._util import normalize_dim

__all__ = ["log_softmax", "one_hot", "softmax"]


def _stable_exp(x, dim):
    shifted = x - x.max(axis=dim, keepdims=True)
    return shifted, np.exp(shifted)


class Softmax(Function):
    _raw = True

    @staticmethod
    def forward(ctx, x, dim):
        _, e = _stable_exp(x, dim)
        out = e / e.sum(axis=dim, keepdims=True)
        ctx.save_for_backward(out)
        ctx.dim = dim
        return out

    @staticmethod
    def backward(ctx, g):
        (out,) = ctx.saved_tensors
        go = g * out
        return go - out * go.sum(axis=ctx.dim, keepdims=True), None


class LogSoftmax(Function):
    _raw = True

    @staticmethod
    def forward(ctx, x, dim):
        shifted, e = _stable_exp(x, dim)
        out = shifted - np.log(e.sum(axis=dim, keepdims=True))
        ctx.save_for_backward(out)
        ctx.dim = dim
        return out

    @staticmethod
    def backward(ctx, g):
        (out,) = ctx.saved_tensors
        return g - np.exp(out) * g.sum(axis=ctx.dim, keepdims=True), None


def _prepare(input, dim, dtype, name):
    if dim is None:
        raise TypeError(f"{name}() requires dim (the dimension to normalise over)")
    if dtype is not None:
        input = input.to(dtype)
    if input.data.dtype.kind != "f":
        raise RuntimeError(f"{name}(): expected a floating point tensor, got {input.dtype}")
    return input, normalize_dim(dim, max(input.data.ndim, 1))


def softmax(input, dim=None, dtype=None):
    """``exp(x) / sum(exp(x))`` along ``dim``, computed without overflow."""
    input, d = _prepare(input, dim, dtype, "softmax")
    if input.data.ndim == 0:
        return Softmax.apply(input.reshape(1), 0).reshape(())
    return Softmax.apply(input, d)


def log_softmax(input, dim=None, dtype=None):
    """``x - logsumexp(x)`` along ``dim``; its backward is one fused step."""
    input, d = _prepare(input, dim, dtype, "log_softmax")
    if input.data.ndim == 0:
        return LogSoftmax.apply(input.reshape(1), 0).reshape(())
    return LogSoftmax.apply(input, d)


def one_hot(tensor, num_classes: int = -1):
    """int64 one-hot encoding of a tensor of class indices (``num_classes=-1``: max index + 1)."""
    if not isinstance(tensor, Tensor) or tensor.data.dtype.kind not in "iu":
        raise RuntimeError("one_hot is only applicable to index tensors (int64)")
    idx = tensor.data
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
    out = np.zeros(idx.shape + (num_classes,), dtype=np.int64)
    np.put_along_axis(out, idx[..., None].astype(np.int64), 1, axis=-1)
    return Tensor._make(out, False, None)


# ----------------------------------------------------------------- layers
class Linear(Function):
    """``x @ weight.T + bias`` as one op: one matmul and an in-place bias add forward, three products back."""

    _raw = True

    @staticmethod
    def forward(ctx, x, weight, bias):
        n = ctx.needs_input_grad
        ctx.save_for_backward(x if n[1] else None, weight if n[0] else None)
        # Batch dims are folded into one GEMM: NumPy runs a 3-D @ 2-D product as one small GEMM per row of
        # the leading dim, about half as fast on [batch, time, features] inputs.
        x2 = x.reshape(-1, x.shape[-1]) if x.ndim != 2 else x
        out = x2 @ weight.T
        if bias is not None:
            out += bias
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
        gb = g2.sum(axis=0) if n[2] else None
        return gx, gw, gb


def linear(input, weight, bias=None):
    """``input @ weight.T + bias`` (``weight`` is ``[out_features, in_features]``, as in PyTorch)."""
    if input.data.ndim == 0 or weight.data.ndim != 2:
        raise RuntimeError(
            "linear: expected input of at least 1 dim and a 2-D weight, "
            f"got {list(input.shape)} and {list(weight.shape)}"
        )
    if input.data.shape[-1] != weight.data.shape[1]:
        rows = "x".join(map(str, input.data.shape))
        raise RuntimeError(
            "linear: mat1 and mat2 shapes cannot be multiplied "
            f"({rows} and {weight.data.shape[1]}x{weight.data.shape[0]}): "
            f"input has {input.data.shape[-1]} features, the weight expects {weight.data.shape[1]}"
        )
    if bias is not None and bias.data.shape != (weight.data.shape[0],):
        raise RuntimeError(
            f"linear: bias of shape {list(bias.shape)} does not match {weight.data.shape[0]} output features"
        )
    if input.data.dtype != weight.data.dtype:
        raise RuntimeError(
            f"linear: input dtype {input.dtype} and weight dtype {weight.dtype} differ; convert one with .to()"
        )
    return Linear.apply(input, weight, bias)


class Dropout(Function):
    _raw = True

    @staticmethod
    def forward(ctx, x, p, rng):
        if p >= 1.0:
            mask = np.zeros(x.shape, dtype=x.dtype)
        else:
            keep = rng.random(x.shape, dtype=np.float32) >= p
            mask = np.multiply(keep, x.dtype.type(1.0 / (1.0 - p)))
        ctx.save_for_backward(mask)
        return x * mask

    @staticmethod
    def backward(ctx, g):
        (mask,) = ctx.saved_tensors
        return g * mask, None, None


def dropout(input, p: float = 0.5, training: bool = True, inplace: bool = False, *, generator=None):
    """Zero each element with probability ``p`` and scale survivors by ``1/(1-p)`` (training only)."""
    from ..backend.random import numpy_generator

    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
    if not training or p == 0.0:
        return input
    if input.data.dtype.kind != "f":
        raise RuntimeError(f"dropout expects a floating point tensor, got {input.dtype}")
    out = Dropout.apply(input, p, numpy_generator(generator))
    if inplace:
        return input.copy_(out) if not input.requires_grad else out
    return out


# ----------------------------------------------------------------- losses
_REDUCTIONS = ("mean", "sum", "none")


def check_reduction(reduction: str) -> None:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{reduction!r} is not a valid value for reduction; expected one of {_REDUCTIONS}")


def _rows(x):
    """Class scores as an (M, C) matrix: (C,) -> (1, C); (N, C, d1, ...) -> (N*d1*..., C), classes last."""
    if x.ndim == 1:
        return x.reshape(1, -1), None
    if x.ndim == 2:
        return x, None
    moved = np.moveaxis(x, 1, -1)
    return moved.reshape(-1, x.shape[1]), moved.shape[:-1]


class ClassLoss(Function):
    """Cross-entropy (``from_logits``) or NLL over class scores, one fused op.

    ``coef`` is the (M, C) matrix of per-row class coefficients a (one-hot
    times class weight, smoothed, zero for ignored rows, or the probability
    target times weights): the loss of row i is ``-sum_c a_ic * logp_ic``.
    When ``coef`` is None the target is a plain class index per row
    (unweighted, unsmoothed, nothing ignored): the fast path.
    """

    _raw = True

    @staticmethod
    def forward(ctx, x, target_idx, coef, denom, reduction, from_logits, out_shape):
        x2, _ = _rows(x)
        if from_logits:
            shifted = x2 - x2.max(axis=1, keepdims=True)
            e = np.exp(shifted)
            s = e.sum(axis=1, keepdims=True)
            logp = shifted - np.log(s)
        else:
            logp = x2
        rows = np.arange(x2.shape[0])
        if coef is None:
            per_row = -logp[rows, target_idx]
        else:
            per_row = -(coef * logp).sum(axis=1)
        ctx.meta = (x.shape, reduction, denom, from_logits, out_shape)
        if ctx.needs_input_grad[0]:
            ctx.save_for_backward(e / s if from_logits else None, target_idx, coef)
        if reduction == "none":
            return per_row.reshape(out_shape).astype(x.dtype, copy=False)
        total = per_row.sum(dtype=np.float64 if x.dtype == np.float16 else x.dtype)
        if reduction == "mean":
            total = total / denom if denom else np.nan  # every row ignored: 0/0, as in PyTorch
        return np.asarray(total, dtype=x.dtype)

    @staticmethod
    def backward(ctx, g):
        probs, target_idx, coef = ctx.saved_tensors
        shape, reduction, denom, from_logits, _ = ctx.meta
        if reduction == "none":
            scale = g.reshape(-1, 1)
        elif reduction == "mean":
            scale = g / denom if denom else g * np.nan
        else:
            scale = g
        m = target_idx.shape[0] if coef is None else coef.shape[0]
        rows = np.arange(m)
        if from_logits:
            if coef is None:
                grad = probs.copy()
                grad[rows, target_idx] -= 1
            else:
                grad = probs * coef.sum(axis=1, keepdims=True) - coef
        elif coef is None:
            grad = np.zeros((m, shape[1] if len(shape) > 1 else shape[0]), dtype=g.dtype)
            grad[rows, target_idx] = -1
        else:
            grad = -coef
        grad = (grad * scale).astype(g.dtype, copy=False)
        if len(shape) > 2:
            moved = (shape[0],) + tuple(shape[2:]) + (shape[1],)
            grad = np.moveaxis(grad.reshape(moved), -1, 1)
        elif len(shape) == 1:
            grad = grad.reshape(shape)
        return grad, None, None, None, None, None, None


def _class_targets(input, target, weight, ignore_index, label_smoothing, name):
    """Validate and lay out targets: (idx, coef, denom, out_shape) for ClassLoss."""
    x = input.data
    if x.ndim == 0:
        raise RuntimeError(f"{name}: input must have at least 1 dimension (the classes)")
    n_classes = x.shape[1] if x.ndim > 1 else x.shape[0]
    batch_shape = (x.shape[0],) + x.shape[2:] if x.ndim > 1 else ()
    t = target.data if hasattr(target, "data") else np.asarray(target)
    w = None
    if weight is not None:
        w = weight.data.astype(x.dtype, copy=False)
        if w.shape != (n_classes,):
            raise RuntimeError(
                f"{name}: weight should have {n_classes} elements (one per class), got shape {list(w.shape)}"
            )
    if t.dtype.kind == "f":  # class probabilities
        if t.shape != x.shape:
            raise RuntimeError(
                f"{name}: probability targets must have the input's shape {list(x.shape)}, got {list(t.shape)}"
            )
        probs, _ = _rows(t.astype(x.dtype, copy=False))
        if label_smoothing:
            probs = probs * (1 - label_smoothing) + label_smoothing / n_classes
        coef = probs * w if w is not None else probs
        return np.zeros(coef.shape[0], dtype=np.int64), coef, max(coef.shape[0], 1), batch_shape
    if t.dtype.kind not in "iu":
        raise RuntimeError(
            f"{name}: expected class-index targets of an integer dtype (or float probabilities), got {t.dtype}"
        )
    if t.shape != batch_shape:
        raise RuntimeError(
            f"{name}: expected target of shape {list(batch_shape)} for input of shape {list(x.shape)}, "
            f"got {list(t.shape)}"
        )
    idx = t.reshape(-1).astype(np.int64, copy=False)
    ignored = idx == ignore_index
    bad = (~ignored) & ((idx < 0) | (idx >= n_classes))
    if bad.any():
        raise IndexError(f"{name}: Target {int(idx[bad][0])} is out of bounds for {n_classes} classes.")
    if w is None and not label_smoothing and not ignored.any():
        return idx, None, max(idx.shape[0], 1), batch_shape
    safe = np.where(ignored, 0, idx)
    m = idx.shape[0]
    coef = np.zeros((m, n_classes), dtype=x.dtype)
    kept = (~ignored).astype(x.dtype)
    target_weight = (w[safe] if w is not None else np.ones(m, dtype=x.dtype)) * kept
    coef[np.arange(m), safe] = (1 - label_smoothing) * target_weight
    if label_smoothing:
        coef += (label_smoothing / n_classes) * (w if w is not None else 1) * kept[:, None]
    return safe, coef, target_weight.sum(), batch_shape


def _class_loss(input, target, weight, ignore_index, reduction, label_smoothing, from_logits, name):
    check_reduction(reduction)
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"{name}: label_smoothing must be between 0.0 and 1.0, got {label_smoothing}")
    if input.data.dtype.kind != "f":
        raise RuntimeError(f"{name}: expected floating point input, got {input.dtype}")
    idx, coef, denom, out_shape = _class_targets(input, target, weight, ignore_index, label_smoothing, name)
    return ClassLoss.apply(input, idx, coef, denom, reduction, from_logits, out_shape)


def cross_entropy(
    input, target, weight=None, ignore_index: int = -100, reduction: str = "mean", label_smoothing: float = 0.0
):
    """Softmax cross-entropy of logits ``input`` against class indices or class probabilities ``target``."""
    return _class_loss(input, target, weight, ignore_index, reduction, label_smoothing, True, "cross_entropy")


def nll_loss(input, target, weight=None, ignore_index: int = -100, reduction: str = "mean"):
    """Negative log-likelihood of log-probabilities ``input`` at the target classes."""
    if hasattr(target, "data") and target.data.dtype.kind == "f":
        raise RuntimeError("nll_loss expects class-index targets of an integer dtype")
    return _class_loss(input, target, weight, ignore_index, reduction, 0.0, False, "nll_loss")
