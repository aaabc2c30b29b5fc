"""``conv1d``, as in ``torch.nn.functional``: a 1-D convolution run by the conv2d kernel on a height-1 view.

The unsqueeze of input and weight is a view (no copy), and the conv2d im2col
of a height-1 image is one contiguous run per kernel position, so a 1-D
convolution costs what the 2-D kernel costs for the same number of pixels.
"""

from __future__ import annotations

from . import _autocast
from .conv import _check_float, _check_tensor, _is_int, _shape_str, conv2d
from .shape import squeeze, unsqueeze

__all__ = ["conv1d"]


def _single(value, name: str, fn: str) -> int:
    """``value`` (an int, or a sequence of one int) as an int."""
    if _is_int(value):
        return int(value)
    if isinstance(value, (tuple, list)) and len(value) == 1 and _is_int(value[0]):
        return int(value[0])
    raise TypeError(f"{fn}: {name} must be an int or a tuple of one int, got {value!r}")


def _check_args(fn, input, weight, bias, groups, dims):
    """Shared checks of a (transposed) convolution's tensors; ``dims`` is the spatial rank (1 or 2)."""
    _check_tensor(input, fn)
    _check_tensor(weight, fn)
    if input._data.ndim not in (dims + 1, dims + 2):
        raise RuntimeError(
            f"{fn}: expected {dims + 1}D (unbatched) or {dims + 2}D (batched) input, "
            f"but got input of size: {_shape_str(input.shape)}"
        )
    if weight._data.ndim != dims + 2:
        raise RuntimeError(f"{fn}: expected a {dims + 2}D weight, got weight of size {_shape_str(weight.shape)}")
    _check_float(input, fn)
    if input._data.dtype != weight._data.dtype:
        raise RuntimeError(
            f"{fn}: input dtype {input.dtype} and weight dtype {weight.dtype} differ; convert one with .to()"
        )
    if not _is_int(groups) or groups <= 0:
        raise RuntimeError(f"{fn}: groups must be a positive integer, got {groups!r}")
    if bias is not None:
        _check_tensor(bias, fn)
        if bias._data.dtype != weight._data.dtype:
            raise RuntimeError(f"{fn}: bias dtype {bias.dtype} differs from weight dtype {weight.dtype}")


def conv1d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """1-D convolution (cross-correlation) of an (N, C, L) or (C, L) input with an (out, C/groups, k) weight.

    ``padding`` is an int, ``'valid'`` (none) or ``'same'`` (output length equals input length; stride 1
    only; an odd total pad puts the extra element on the right, as PyTorch does).
    """
    fn = "conv1d"
    if _autocast.state.active:
        input, weight, bias = _autocast.lower(input, weight, bias)
    _check_args(fn, input, weight, bias, groups, 1)
    stride = _single(stride, "stride", fn)
    dilation = _single(dilation, "dilation", fn)
    if isinstance(padding, str):
        if padding not in ("valid", "same"):
            raise RuntimeError(f"{fn}: invalid padding string {padding!r}, should be one of 'valid', 'same'")
        if padding == "same" and stride != 1:
            raise RuntimeError(f"{fn}: padding='same' is not supported for strided convolutions (stride={stride})")
        pad2 = padding
    else:
        pad2 = (0, _single(padding, "padding", fn))
    o, cg, k = weight._data.shape
    c, length = input._data.shape[-2:]
    if o % groups:
        raise RuntimeError(
            f"{fn}: given groups={groups}, the weight's out_channels ({o}, dim 0 of weight "
            f"{list(weight.shape)}) must be divisible by groups"
        )
    if c != cg * groups:
        raise RuntimeError(
            f"{fn}: given groups={groups}, weight of size {list(weight.shape)}, expected input "
            f"{list(input.shape)} to have {cg * groups} channels, but got {c} channels instead"
        )
    if bias is not None and bias._data.shape != (o,):
        raise RuntimeError(
            f"{fn}: given weight of size {list(weight.shape)}, expected bias to be 1-dimensional with "
            f"{o} elements, but got bias of size {list(bias.shape)} instead"
        )
    if pad2 not in ("same", "valid"):
        padded, extent = length + 2 * pad2[1], dilation * (k - 1) + 1
        if padded < extent:
            raise RuntimeError(
                f"{fn}: calculated padded input size per channel: ({padded}). Kernel size: ({extent}) "
                f"(dilation {dilation}). Kernel size can't be greater than actual input size"
            )
    out = conv2d(unsqueeze(input, -2), unsqueeze(weight, -2), bias, (1, stride), pad2, (1, dilation), groups)
    return squeeze(out, -2)
