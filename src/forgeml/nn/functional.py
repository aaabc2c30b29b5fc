"""Stateless neural-network functions, as in ``torch.nn.functional``.

The losses here follow autocast as PyTorch's do: they compute in float32
under autocast on either device type; ``binary_cross_entropy`` raises under
CUDA autocast (PyTorch bans it there) and runs in float32 under CPU autocast.
"""

from __future__ import annotations

from ..autograd.grad_mode import is_grad_enabled
from ..backend.device import HOST_ARRAY, namespace_of
from ..ops import _autocast
from ..ops import elementwise as _ew
from ..ops import sparse as _sparse
from ..ops.attention import scaled_dot_product_attention
from ..ops.conv import adaptive_avg_pool2d, avg_pool2d, batch_norm, conv2d, max_pool2d
from ..ops.conv1d import conv1d
from ..ops.conv_transpose import conv_transpose1d, conv_transpose2d
from ..ops.distance import cosine_similarity, kl_div, normalize
from ..ops.elementwise import abs as _abs
from ..ops.elementwise import clamp, gelu, log, sigmoid, softplus, tanh, where
from ..ops.elementwise import maximum as _maximum
from ..ops.feature_dropout import dropout1d, dropout2d, dropout3d
from ..ops.group_norm import group_norm, instance_norm
from ..ops.inplace import relu_
from ..ops.nn import check_reduction, cross_entropy, dropout, linear, log_softmax, nll_loss, one_hot, softmax
from ..ops.normalization import layer_norm, rms_norm
from ..ops.pool1d import adaptive_avg_pool1d, adaptive_max_pool1d, avg_pool1d, max_pool1d
from ..ops.resample import (
    interpolate,
    pad,
    pixel_shuffle,
    pixel_unshuffle,
    upsample,
    upsample_bilinear,
    upsample_nearest,
)
from ..tensor import Tensor

__all__ = [
    "cosine_similarity",
    "dropout1d",
    "dropout2d",
    "dropout3d",
    "interpolate",
    "kl_div",
    "normalize",
    "pad",
    "pixel_shuffle",
    "pixel_unshuffle",
    "upsample",
    "upsample_bilinear",
    "upsample_nearest",
    "embedding",
    "layer_norm",
    "rms_norm",
    "scaled_dot_product_attention",
    "adaptive_avg_pool2d",
    "avg_pool2d",
    "batch_norm",
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "conv1d",
    "conv2d",
    "conv_transpose1d",
    "conv_transpose2d",
    "group_norm",
    "instance_norm",
    "adaptive_avg_pool1d",
    "adaptive_max_pool1d",
    "avg_pool1d",
    "max_pool1d",
    "cross_entropy",
    "dropout",
    "elu",
    "gelu",
    "l1_loss",
    "leaky_relu",
    "linear",
    "log_softmax",
    "max_pool2d",
    "mse_loss",
    "nll_loss",
    "one_hot",
    "relu",
    "relu_",
    "sigmoid",
    "silu",
    "smooth_l1_loss",
    "softmax",
    "softplus",
    "tanh",
]


def _reduce(loss, reduction: str):
    check_reduction(reduction)
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


def _check_pair(input, target, name: str) -> None:
    if not isinstance(input, Tensor) or not isinstance(target, Tensor):
        raise TypeError(f"{name} expects Tensors, got {type(input).__name__} and {type(target).__name__}")
    if input._data.shape != target._data.shape:
        raise ValueError(
            f"{name}: target size ({list(target.shape)}) must be the same as input size ({list(input.shape)})"
        )


def _weighted(loss, weight, reduction: str):
    """``loss * weight`` reduced as PyTorch's weighted ``mse_loss``/``l1_loss``: the mean divides by ``weight.sum()``."""
    check_reduction(reduction)
    if weight.shape != loss.shape:
        raise ValueError(f"Weights and input must have the same size, got {list(weight.shape)} and {list(loss.shape)}")
    loss = loss * weight
    if reduction == "mean":
        return loss.sum() / weight.sum()
    return loss.sum() if reduction == "sum" else loss


def mse_loss(input, target, reduction: str = "mean", weight=None):
    """Mean squared error ``(input - target)^2``; with ``weight`` (input's shape) each term is weighted."""
    _check_pair(input, target, "mse_loss")
    if _autocast.state.active:
        input, target = _autocast.full(input, target)
    diff = input - target
    return _reduce(diff * diff, reduction) if weight is None else _weighted(diff * diff, weight, reduction)


def l1_loss(input, target, reduction: str = "mean", weight=None):
    """Mean absolute error ``|input - target|``; with ``weight`` (input's shape) each term is weighted."""
    _check_pair(input, target, "l1_loss")
    if _autocast.state.active:
        input, target = _autocast.full(input, target)
    loss = _abs(input - target)
    return _reduce(loss, reduction) if weight is None else _weighted(loss, weight, reduction)


def _maybe_inplace(input, out, inplace: bool):
    """``out``, written into ``input`` when ``inplace`` and autograd records nothing on ``input``.

    While autograd tracks ``input`` the result stays out of place, as the activation modules do:
    the backward of the activation may need ``input`` unchanged.
    """
    if not inplace or (is_grad_enabled() and input.requires_grad):
        return out
    return input.copy_(out)


def relu(input, inplace: bool = False):
    """``max(input, 0)``."""
    return _maybe_inplace(input, _ew.relu(input), inplace)


def leaky_relu(input, negative_slope: float = 0.01, inplace: bool = False):
    """``input`` where positive, ``negative_slope * input`` elsewhere."""
    return _maybe_inplace(input, _ew.leaky_relu(input, negative_slope), inplace)


def elu(input, alpha: float = 1.0, inplace: bool = False):
    """``input`` where positive, ``alpha * (exp(input) - 1)`` elsewhere."""
    return _maybe_inplace(input, _ew.elu(input, alpha), inplace)


def silu(input, inplace: bool = False):
    """``input * sigmoid(input)``."""
    return _maybe_inplace(input, _ew.silu(input), inplace)


def _embedding_renorm_(weight, input, max_norm: float, norm_type: float) -> None:
    """Rescale, in place and outside autograd, the rows ``input`` looks up whose norm exceeds ``max_norm``."""
    w = weight._data
    xp = namespace_of(w)
    idx = xp.asarray(input._data if isinstance(input, Tensor) else input)
    rows = xp.unique(idx.reshape(-1))
    norms = xp.linalg.norm(w[rows].astype(xp.float64), ord=norm_type, axis=1)
    scale = xp.where(norms > max_norm, max_norm / (norms + 1e-7), 1.0)
    w[rows] = (w[rows] * scale[:, None]).astype(w.dtype)


def embedding(
    input,
    weight,
    padding_idx: int | None = None,
    max_norm: float | None = None,
    norm_type: float = 2.0,
    scale_grad_by_freq: bool = False,
    sparse: bool = False,
):
    """Rows of ``weight`` at the integer ``input`` indices, as ``torch.nn.functional.embedding``.

    With ``max_norm`` the looked-up rows whose ``norm_type``-norm exceeds it are first rescaled in place to
    norm ``max_norm``. ``sparse=True`` is accepted, but the gradient is dense (same values).
    ``scale_grad_by_freq=True`` is not supported.
    """
    if scale_grad_by_freq:
        raise NotImplementedError("embedding: scale_grad_by_freq=True is not supported")
    if max_norm is not None:
        _embedding_renorm_(weight, input, max_norm, norm_type)
    return _sparse.embedding(input, weight, padding_idx)


def smooth_l1_loss(input, target, reduction: str = "mean", beta: float = 1.0):
    """Quadratic ``0.5 d^2 / beta`` for ``|d| < beta``, linear ``|d| - beta/2`` beyond (Huber / beta)."""
    _check_pair(input, target, "smooth_l1_loss")
    if _autocast.state.active:
        input, target = _autocast.full(input, target)
    if beta < 0:
        raise RuntimeError(f"smooth_l1_loss does not support negative values for beta, got {beta}")
    diff = _abs(input - target)
    if beta == 0:
        return _reduce(diff, reduction)
    loss = where(diff < beta, diff * diff * (0.5 / beta), diff - 0.5 * beta)
    return _reduce(loss, reduction)


_BCE_UNSAFE_TO_AUTOCAST = (
    "forgeml.nn.functional.binary_cross_entropy and forgeml.nn.BCELoss are unsafe to autocast.\n"
    "Many models use a sigmoid layer right before the binary cross entropy layer.\n"
    "In this case, combine the two layers using forgeml.nn.functional.binary_cross_entropy_with_logits\n"
    "or forgeml.nn.BCEWithLogitsLoss.  binary_cross_entropy_with_logits and BCEWithLogits are\n"
    "safe to autocast."
)  # PyTorch's message (torch.* named forgeml.*)


def binary_cross_entropy(input, target, weight=None, reduction: str = "mean"):
    """``-(t log p + (1 - t) log(1 - p))`` for probabilities ``p``; each log is clamped at -100 as in PyTorch."""
    _check_pair(input, target, "binary_cross_entropy")
    if _autocast.state.active:
        if type(input._data) is not HOST_ARRAY and _autocast.state.enabled["cuda"]:
            raise RuntimeError(_BCE_UNSAFE_TO_AUTOCAST)
        input, target, weight = _autocast.full(input, target, weight)
    if ((input._data < 0) | (input._data > 1)).any():
        raise RuntimeError("binary_cross_entropy: all elements of input should be between 0 and 1")
    log_p = clamp(log(input), min=-100.0)
    log_not_p = clamp(log(1 - input), min=-100.0)
    loss = -(target * log_p + (1 - target) * log_not_p)
    if weight is not None:
        loss = loss * weight
    return _reduce(loss, reduction)


def binary_cross_entropy_with_logits(input, target, weight=None, reduction: str = "mean", pos_weight=None):
    """Sigmoid + binary cross-entropy in one numerically stable expression; ``pos_weight`` scales positives."""
    _check_pair(input, target, "binary_cross_entropy_with_logits")
    if _autocast.state.active:
        input, target, weight, pos_weight = _autocast.full(input, target, weight, pos_weight)
    # log(1 + exp(-|x|)) + max(-x, 0) == -log(sigmoid(x)), without overflow
    neg_log_sigmoid = softplus(-_abs(input)) + _maximum(-input, 0.0)
    if pos_weight is not None:
        log_weight = (pos_weight - 1) * target + 1
        loss = (1 - target) * input + log_weight * neg_log_sigmoid
    else:
        loss = (1 - target) * input + neg_log_sigmoid
    if weight is not None:
        loss = loss * weight
    return _reduce(loss, reduction)
