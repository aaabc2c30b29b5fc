"""``Conv2d``: a 2-D convolution layer, as in ``torch.nn.Conv2d``; the pieces every conv layer shares."""

from __future__ import annotations

import math

from ..ops.conv import _pair, conv2d, mode_pad
from ..ops.conv1d import _single
from ..ops.creation import empty
from . import init
from .module import Module
from .parameter import Parameter

__all__ = ["Conv2d"]

_PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


def _check_channels(cls: str, in_channels, out_channels, groups) -> None:
    """PyTorch's checks of a conv layer's channel counts and groups (ValueError)."""
    if in_channels <= 0 or out_channels <= 0:
        raise ValueError(
            f"{cls} needs positive channel counts, got in_channels={in_channels}, out_channels={out_channels}"
        )
    if isinstance(groups, bool) or not isinstance(groups, int) or groups <= 0:
        raise ValueError(f"groups must be a positive integer, got {groups!r}")
    if in_channels % groups:
        raise ValueError(f"in_channels must be divisible by groups, got in_channels={in_channels}, groups={groups}")
    if out_channels % groups:
        raise ValueError(f"out_channels must be divisible by groups, got out_channels={out_channels}, groups={groups}")


def _conv_tuple(value, name: str, cls: str, dims: int) -> tuple[int, ...]:
    """``value`` (an int or a sequence of ints) as a tuple of ``dims`` ints, checked as PyTorch does."""
    return (_single(value, name, cls),) if dims == 1 else _pair(value, name, cls)


def _init_conv_parameters(m, weight_shape, out_channels: int, bias: bool, device, dtype) -> None:
    """Give the conv layer ``m`` its ``weight`` (of ``weight_shape``) and ``bias`` (or None), then initialise them."""
    m.weight = Parameter(empty(*weight_shape, dtype=dtype, device=device))
    if bias:
        m.bias = Parameter(empty(out_channels, dtype=dtype, device=device))
    else:
        m.register_parameter("bias", None)
    m.reset_parameters()


def reset_conv_parameters(weight, bias) -> None:
    """PyTorch's default conv initialisation: ``kaiming_uniform_(a=sqrt(5))`` weight, U(+-1/sqrt(fan_in)) bias.

    ``fan_in`` is the weight's dim 1 times its kernel size (for a transposed conv: out_channels/groups * k).
    """
    init.kaiming_uniform_(weight, a=math.sqrt(5))
    if bias is not None:
        fan_in = weight.shape[1] * math.prod(weight.shape[2:])
        bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
        init.uniform_(bias, -bound, bound)


def conv_extra_repr(m) -> str:
    """``extra_repr`` of a conv layer, as PyTorch prints it."""
    n = len(m.kernel_size)
    s = f"{m.in_channels}, {m.out_channels}, kernel_size={m.kernel_size}, stride={m.stride}"
    if m.padding != (0,) * n:
        s += f", padding={m.padding}"
    if m.dilation != (1,) * n:
        s += f", dilation={m.dilation}"
    if getattr(m, "output_padding", (0,) * n) != (0,) * n:
        s += f", output_padding={m.output_padding}"
    if m.groups != 1:
        s += f", groups={m.groups}"
    if m.bias is None:
        s += ", bias=False"
    if m.padding_mode != "zeros":
        s += f", padding_mode={m.padding_mode}"
    return s


class _ConvNd(Module):
    """Shared body of ``Conv1d`` and ``Conv2d``: hyper-parameters as tuples of ``_dims`` ints (``padding`` may be
    ``'valid'`` or ``'same'``), ``weight`` ``[out_channels, in_channels // groups, *kernel]``."""

    _dims = 0
    _name = ""  # the layer's name in error messages

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size,
        stride=1,
        padding=0,
        dilation=1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        cls, dims = self._name, self._dims
        _check_channels(cls, in_channels, out_channels, groups)
        kernel_size = _conv_tuple(kernel_size, "kernel_size", cls, dims)
        stride = _conv_tuple(stride, "stride", cls, dims)
        dilation = _conv_tuple(dilation, "dilation", cls, dims)
        if isinstance(padding, str):
            if padding not in ("same", "valid"):
                raise ValueError(f"Invalid padding string {padding!r}, should be one of {{'same', 'valid'}}")
            if padding == "same" and stride != (1,) * dims:
                raise ValueError("padding='same' is not supported for strided convolutions")
        else:
            padding = _conv_tuple(padding, "padding", cls, dims)
        if padding_mode not in _PADDING_MODES:
            raise ValueError(f"padding_mode must be one of {_PADDING_MODES}, but got padding_mode={padding_mode!r}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.stride = stride
        self.padding = padding
        self.dilation = dilation
        self.groups = groups
        self.padding_mode = padding_mode
        reversed_padding = ()  # (left, right) per spatial dim, last dim first, as F.pad takes it
        for d in reversed(range(dims)):
            if padding == "valid":
                reversed_padding += (0, 0)
            elif padding == "same":
                total = dilation[d] * (kernel_size[d] - 1)
                reversed_padding += (total // 2, total - total // 2)
            else:
                reversed_padding += (padding[d], padding[d])
        self._reversed_padding_repeated_twice = reversed_padding
        weight_shape = (out_channels, in_channels // groups, *kernel_size)
        _init_conv_parameters(self, weight_shape, out_channels, bias, device, dtype)

    def reset_parameters(self) -> None:
        reset_conv_parameters(self.weight, self.bias)

    def extra_repr(self) -> str:
        return conv_extra_repr(self)


class Conv2d(_ConvNd):
    """Convolve an (N, C_in, H, W) or (C_in, H, W) input with ``out_channels`` learned (kh, kw) filters.

    ``weight`` is ``[out_channels, in_channels // groups, kh, kw]`` and ``bias``
    ``[out_channels]``, initialised as PyTorch does: ``kaiming_uniform_(a=sqrt(5))``
    for the weight and U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for the bias.
    ``padding`` is an int, a pair, ``'valid'`` or ``'same'``; ``padding_mode``
    other than ``'zeros'`` pads with reflected, replicated or wrapped-around pixels.
    """

    _dims = 2
    _name = "Conv2d"

    def forward(self, input):
        if self.padding_mode != "zeros":
            padded = mode_pad(input, self._reversed_padding_repeated_twice, self.padding_mode)
            return conv2d(padded, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)
        return conv2d(input, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
