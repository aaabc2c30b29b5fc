"""Similarity and divergence: ``normalize``, ``cosine_similarity`` and ``kl_div``."""

from __future__ import annotations

import warnings

from ..autograd.function import ArrayFunction
from ..backend.device import ignore_float_errors
from ..backend.dtypes import get_default_dtype
from ..backend.shapes import broadcast_shapes
from ..tensor import Tensor
from ._util import cast, normalize_dim, operand_result_type
from .elementwise import clamp
from .reduce import norm
from .shape import expand

__all__ = ["cosine_similarity", "kl_div", "normalize"]


def normalize(input, p: float = 2.0, dim: int = 1, eps: float = 1e-12, out=None):
    """``input / max(||input||_p, eps)`` with the norm taken over ``dim`` (rows of a 2-D input by default)."""
    if out is not None:
        raise NotImplementedError("normalize: the out= argument is not supported")
    if not isinstance(input, Tensor):
        raise TypeError(f"normalize(): expected a Tensor as input, got {type(input).__name__}")
    denom = clamp(norm(input, p, dim, keepdim=True), min=eps)
    return input / denom


class CosineSimilarity(ArrayFunction):
    """``sum(x1 / max(||x1||, eps) * x2 / max(||x2||, eps))`` over ``dim`` (inputs already broadcast).

    As in PyTorch 2.x, each norm is clamped at ``eps`` outside autograd: the
    gradient flows through the clamp as if it were the identity.
    """

    @staticmethod
    def forward(ctx, x1, x2, dim, eps):
        xp = ctx.xp
        n1 = xp.sqrt((x1 * x1).sum(axis=dim, keepdims=True))
        n2 = xp.sqrt((x2 * x2).sum(axis=dim, keepdims=True))
        a, b = xp.maximum(n1, eps).astype(x1.dtype), xp.maximum(n2, eps).astype(x2.dtype)
        y = ((x1 / a) * (x2 / b)).sum(axis=dim, keepdims=True)
        ctx.save_for_backward(x1, x2, n1, n2, a, b, y)
        ctx.dim = dim
        return y.squeeze(axis=dim)

    @staticmethod
    def backward(ctx, g):
        x1, x2, n1, n2, a, b, y = ctx.saved_tensors
        xp = ctx.xp
        gk = xp.expand_dims(g, ctx.dim)

        def grad(x, n, d, other_unit):  # d(y)/dx for y = <x, v> / d with d = clamp(||x||) passed straight through
            radial = xp.where(n == 0, 0, x / xp.where(n == 0, 1, n))
            return (gk * (other_unit / d - (y / d) * radial)).astype(x.dtype, copy=False)

        return grad(x1, n1, a, x2 / b), grad(x2, n2, b, x1 / a), None, None


def cosine_similarity(x1, x2, dim: int = 1, eps: float = 1e-8):
    """Cosine of the angle between ``x1`` and ``x2`` along ``dim`` (they broadcast against each other)."""
    if not isinstance(x1, Tensor) or not isinstance(x2, Tensor):
        raise TypeError(f"cosine_similarity expects Tensors, got {type(x1).__name__} and {type(x2).__name__}")
    dtype = operand_result_type(x1, x2)
    if not dtype.is_floating_point:
        raise RuntimeError(
            f"cosine_similarity: expected common dtype to be floating point, yet common dtype is {dtype}"
        )
    x1, x2 = cast(x1, dtype), cast(x2, dtype)
    try:
        shape = broadcast_shapes(x1._data.shape, x2._data.shape)
    except ValueError:
        raise RuntimeError(
            f"cosine_similarity: the shapes of x1 {list(x1.shape)} and x2 {list(x2.shape)} do not broadcast"
        ) from None
    if x1._data.shape != shape:
        x1 = expand(x1, shape)
    if x2._data.shape != shape:
        x2 = expand(x2, shape)
    return CosineSimilarity.apply(x1, x2, normalize_dim(dim, max(len(shape), 1)), eps)


class KLDivPointwise(ArrayFunction):
    """``target * (log(target) - input)`` (0 where target is 0), or ``exp(t) * (t - input)`` for log targets."""

    @staticmethod
    def forward(ctx, x, t, log_target):
        xp = ctx.xp
        ctx.save_for_backward(x, t)
        ctx.log_target = log_target
        if log_target:
            return xp.exp(t) * (t - x)
        with ignore_float_errors():
            xlogy = xp.where(t == 0, 0, t * xp.log(t))
        return (xlogy - t * x).astype(xp.result_type(x, t), copy=False)

    @staticmethod
    def backward(ctx, g):
        x, t = ctx.saved_tensors
        xp = ctx.xp
        n = ctx.needs_input_grad
        if ctx.log_target:
            e = xp.exp(t)
            gx = -g * e if n[0] else None
            gt = g * e * (t - x + 1) if n[1] else None
            return gx, gt, None
        gx = -g * t if n[0] else None
        gt = None
        if n[1]:
            with ignore_float_errors():
                gt = xp.where(t == 0, 0, g * (xp.log(t) + 1 - x))
        return gx, gt, None


_KL_REDUCTIONS = ("none", "batchmean", "sum", "mean")


def legacy_reduction(size_average, reduce) -> str:
    """The ``reduction`` that PyTorch's deprecated ``size_average``/``reduce`` pair stands for."""
    warnings.warn(
        "size_average and reduce args will be deprecated, please use reduction instead.", UserWarning, stacklevel=3
    )
    size_average = True if size_average is None else size_average
    reduce = True if reduce is None else reduce
    if not reduce:
        return "none"
    return "mean" if size_average else "sum"


def kl_div(input, target, size_average=None, reduce=None, reduction: str = "mean", log_target: bool = False):
    """Kullback-Leibler divergence of ``target`` from the log-probabilities ``input``.

    Pointwise ``target * (log(target) - input)`` (``exp(target) * (target - input)``
    when ``log_target``), then ``reduction``: 'none', 'sum', 'mean' (over every
    element, with PyTorch's warning), or 'batchmean' (sum / batch size, the
    mathematical KL divergence).
    """
    if not isinstance(input, Tensor) or not isinstance(target, Tensor):
        raise TypeError(f"kl_div expects Tensors, got {type(input).__name__} and {type(target).__name__}")
    if size_average is not None or reduce is not None:
        reduction = legacy_reduction(size_average, reduce)
    elif reduction == "mean":
        warnings.warn(
            "reduction: 'mean' divides the total loss by both the batch size and the support size."
            "'batchmean' divides only by the batch size, and aligns with the KL div math definition."
            "'mean' will be changed to behave the same as 'batchmean' in the next major release.",
            UserWarning,
            stacklevel=2,
        )
    if reduction not in _KL_REDUCTIONS:
        raise ValueError(f"{reduction!r} is not a valid value for reduction; expected one of {_KL_REDUCTIONS}")
    dtype = operand_result_type(input, target)
    if not dtype.is_floating_point:
        dtype = get_default_dtype()
    loss = KLDivPointwise.apply(cast(input, dtype), cast(target, dtype), bool(log_target))
    if reduction == "none":
        return loss
    if reduction == "mean":
        return loss.mean()
    total = loss.sum()
    if reduction == "batchmean" and input._data.ndim != 0:
        return total / input._data.shape[0]
    return total
