"""Stateless neural-network functions, as in ``torch.nn.functional``.

The losses here follow autocast as PyTorch's do: they compute in float32
under autocast on either device type; ``binary_cross_entropy`` raises under
CUDA autocast (PyTorch bans it there) and runs in float32 under CPU autocast.
"""

from __future__ import annotations

from ..backend.device import HOST_ARRAY
from ..ops import _autocast
from ..ops.attention import scaled_dot_product_attention
from ..ops.conv import adaptive_avg_pool2d, avg_pool2d, batch_norm, conv2d, max_pool2d
from ..ops.elementwise import abs as _abs
from ..ops.elementwise import clamp, elu, gelu, leaky_relu, log, relu, sigmoid, silu, softplus, tanh, where
from ..ops.elementwise import maximum as _maximum
from ..ops.nn import check_reduction, cross_entropy, dropout, linear, log_softmax, nll_loss, one_hot, softmax
from ..ops.normalization import layer_norm, rms_norm
from ..ops.sparse import embedding
from ..tensor import Tensor

__all__ = [
    "embedding",
    "layer_norm",
    "rms_norm",
    "scaled_dot_product_attention",
    "adaptive_avg_pool2d",
    "avg_pool2d",
    "batch_norm",
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "conv2d",
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
    if input.data.shape != target.data.shape:
        raise ValueError(
            f"{name}: target size ({list(target.shape)}) must be the same as input size ({list(input.shape)})"
        )


def mse_loss(input, target, reduction: str = "mean"):
    """Mean squared error ``(input - target)^2``."""
    _check_pair(input, target, "mse_loss")
    if _autocast.state.active:
        input, target = _autocast.full(input, target)
    diff = input - target
    return _reduce(diff * diff, reduction)


def l1_loss(input, target, reduction: str = "mean"):
    """Mean absolute error ``|input - target|``."""
    _check_pair(input, target, "l1_loss")
    if _autocast.state.active:
        input, target = _autocast.full(input, target)
    return _reduce(_abs(input - target), reduction)


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
        if type(input.data) is not HOST_ARRAY and _autocast.state.enabled["cuda"]:
            raise RuntimeError(_BCE_UNSAFE_TO_AUTOCAST)
        input, target, weight = _autocast.full(input, target, weight)
    if ((input.data < 0) | (input.data > 1)).any():
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
