"""Channel-wise dropout: ``dropout1d``, ``dropout2d`` and ``dropout3d`` zero whole feature maps."""

from __future__ import annotations

import warnings

from ..autograd.function import ArrayFunction
from ..backend.dtypes import is_float
from ..backend.random import generator_for
from ..tensor import Tensor

__all__ = ["dropout1d", "dropout2d", "dropout3d", "feature_dropout"]


class FeatureDropout(ArrayFunction):
    """Keep each channel ``x[n, c]`` with probability ``1 - p`` (one draw per channel), scaled by ``1/(1-p)``."""

    @staticmethod
    def forward(ctx, x, p, gen):
        xp = ctx.xp
        mask_shape = x.shape[:2] + (1,) * (x.ndim - 2)
        if p >= 1.0:
            mask = xp.zeros(mask_shape, dtype=x.dtype)
        else:
            u = gen.random(mask_shape, dtype=xp.float32)
            mask = xp.multiply(u >= p, x.dtype.type(1.0 / (1.0 - p)))
        ctx.save_for_backward(mask)
        return x * mask

    @staticmethod
    def backward(ctx, g):
        (mask,) = ctx.saved_tensors
        return g * mask, None, None


def _check_p(p) -> None:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")


def feature_dropout(input, p: float = 0.5, training: bool = True, inplace: bool = False, *, generator=None):
    """Zero each channel (dim 1, all of its positions at once) with probability ``p``; survivors scale by 1/(1-p).

    ``input`` is ``[N, C, *]``; the draws come from ``generator`` or the default generator of its device.
    """
    _check_p(p)
    if not isinstance(input, Tensor):
        raise TypeError(f"feature dropout: expected a Tensor as input, got {type(input).__name__}")
    if not training or p == 0.0 or input._data.size == 0:
        return input
    if input._data.ndim < 2:
        raise RuntimeError(f"feature dropout expects an input of at least 2 dims [N, C, *], got shape {input.shape}")
    if not is_float(input._data.dtype):
        raise RuntimeError(f"dropout expects a floating point tensor, got {input.dtype}")
    out = FeatureDropout.apply(input, p, generator_for(input.device, generator))
    if inplace:
        return input.copy_(out) if not input.requires_grad else out
    return out


def _batched(input, p, training, inplace, batched: bool):
    if batched:
        return feature_dropout(input, p, training, inplace)
    if not training or p == 0.0:
        return input
    out = feature_dropout(input.unsqueeze(0), p, training, False).squeeze(0)  # unbatched: one sample
    return input.copy_(out) if inplace and not input.requires_grad else out


def dropout1d(input, p: float = 0.5, training: bool = True, inplace: bool = False):
    """Channel-wise dropout of ``[N, C, L]`` or ``[C, L]`` inputs (whole 1-D channels are zeroed)."""
    _check_p(p)
    nd = input.dim()
    if nd not in (2, 3):
        raise RuntimeError(
            f"dropout1d: Expected 2D or 3D input, but received a {nd}D input. Note that dropout1d exists to provide "
            "channel-wise dropout on inputs with 1 spatial dimension, a channel dimension, and an optional batch "
            "dimension (i.e. 2D or 3D inputs)."
        )
    return _batched(input, p, training, inplace, nd == 3)


def dropout2d(input, p: float = 0.5, training: bool = True, inplace: bool = False):
    """Channel-wise dropout of ``[N, C, H, W]`` inputs.

    As in PyTorch, a 3-D input is read as ``[N, C, L]`` (1-D channel-wise
    dropout, with a warning), not as an unbatched ``[C, H, W]``.
    """
    _check_p(p)
    nd = input.dim()
    if nd not in (3, 4):
        warnings.warn(
            f"dropout2d: Received a {nd}-D input to dropout2d, which is deprecated and will result in an error in a "
            "future release. To retain the behavior and silence this warning, please use dropout instead. Note that "
            "dropout2d exists to provide channel-wise dropout on inputs with 2 spatial dimensions, a channel "
            "dimension, and an optional batch dimension (i.e. 3D or 4D inputs).",
            stacklevel=2,
        )
    if nd == 3:
        warnings.warn(
            "dropout2d: Received a 3D input to dropout2d and assuming that channel-wise 1D dropout behavior is "
            "desired - input is interpreted as shape (N, C, L), where C is the channel dim. This behavior will "
            "change in a future release to interpret the input as one without a batch dimension, i.e. shape "
            "(C, H, W). To maintain the 1D channel-wise dropout behavior, please switch to using dropout1d instead.",
            stacklevel=2,
        )
    return feature_dropout(input, p, training, inplace)


def dropout3d(input, p: float = 0.5, training: bool = True, inplace: bool = False):
    """Channel-wise dropout of ``[N, C, D, H, W]`` or ``[C, D, H, W]`` inputs."""
    _check_p(p)
    nd = input.dim()
    if nd not in (4, 5):
        warnings.warn(
            f"dropout3d: Received a {nd}-D input to dropout3d, which is deprecated and will result in an error in a "
            "future release. To retain the behavior and silence this warning, please use dropout instead. Note that "
            "dropout3d exists to provide channel-wise dropout on inputs with 3 spatial dimensions, a channel "
            "dimension, and an optional batch dimension (i.e. 4D or 5D inputs).",
            stacklevel=2,
        )
    return _batched(input, p, training, inplace, nd == 5)
