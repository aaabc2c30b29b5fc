"""``Conv1d``: a 1-D convolution layer, as in ``torch.nn.Conv1d``."""

from __future__ import annotations

import math

from ..ops.conv import mode_pad
from ..ops.conv1d import _single, conv1d
from ..ops.creation import empty
from . import init
from .module import Module
from .parameter import Parameter

__all__ = ["Conv1d"]

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


class Conv1d(Module):
    """Convolve an (N, C_in, L) or (C_in, L) input with ``out_channels`` learned filters of length ``kernel_size``.

    ``weight`` is ``[out_channels, in_channels // groups, kernel_size]`` and ``bias`` ``[out_channels]``,
    initialised as PyTorch does. ``padding`` is an int, ``'valid'`` or ``'same'``; a ``padding_mode`` other
    than ``'zeros'`` pads with reflected, replicated or wrapped-around elements.
    """

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
        _check_channels("Conv1d", in_channels, out_channels, groups)
        self.kernel_size = (_single(kernel_size, "kernel_size", "Conv1d"),)
        self.stride = (_single(stride, "stride", "Conv1d"),)
        self.dilation = (_single(dilation, "dilation", "Conv1d"),)
        if isinstance(padding, str):
            if padding not in ("same", "valid"):
                raise ValueError(f"Invalid padding string {padding!r}, should be one of {{'same', 'valid'}}")
            if padding == "same" and self.stride != (1,):
                raise ValueError("padding='same' is not supported for strided convolutions")
            self.padding = padding
        else:
            self.padding = (_single(padding, "padding", "Conv1d"),)
        if padding_mode not in _PADDING_MODES:
            raise ValueError(f"padding_mode must be one of {_PADDING_MODES}, but got padding_mode={padding_mode!r}")
        self.in_channels, self.out_channels, self.groups, self.padding_mode = (
            in_channels,
            out_channels,
            groups,
            padding_mode,
        )
        if self.padding == "valid":
            self._reversed_padding_repeated_twice = (0, 0)
        elif self.padding == "same":
            total = self.dilation[0] * (self.kernel_size[0] - 1)
            self._reversed_padding_repeated_twice = (total // 2, total - total // 2)
        else:
            self._reversed_padding_repeated_twice = (self.padding[0], self.padding[0])
        self.weight = Parameter(
            empty(out_channels, in_channels // groups, *self.kernel_size, dtype=dtype, device=device)
        )
        if bias:
            self.bias = Parameter(empty(out_channels, dtype=dtype, device=device))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        reset_conv_parameters(self.weight, self.bias)

    def forward(self, input):
        if self.padding_mode != "zeros":
            padded = mode_pad(input, self._reversed_padding_repeated_twice + (0, 0), self.padding_mode)
            return conv1d(padded, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)
        return conv1d(input, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)

    def extra_repr(self) -> str:
        return conv_extra_repr(self)
