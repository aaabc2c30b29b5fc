"""``Conv2d``: a 2-D convolution layer, as in ``torch.nn.Conv2d``."""

from __future__ import annotations

import math

from ..ops.conv import _pair, conv2d, mode_pad
from ..ops.creation import empty
from . import init
from .module import Module
from .parameter import Parameter

__all__ = ["Conv2d"]

_PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


class Conv2d(Module):
    """Convolve an (N, C_in, H, W) or (C_in, H, W) input with ``out_channels`` learned (kh, kw) filters.

    ``weight`` is ``[out_channels, in_channels // groups, kh, kw]`` and ``bias``
    ``[out_channels]``, initialised as PyTorch does: ``kaiming_uniform_(a=sqrt(5))``
    for the weight and U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for the bias.
    ``padding`` is an int, a pair, ``'valid'`` or ``'same'``; ``padding_mode``
    other than ``'zeros'`` pads with reflected, replicated or wrapped-around pixels.
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
        if in_channels <= 0 or out_channels <= 0:
            raise ValueError(
                f"Conv2d needs positive channel counts, got in_channels={in_channels}, out_channels={out_channels}"
            )
        if isinstance(groups, bool) or not isinstance(groups, int) or groups <= 0:
            raise ValueError(f"groups must be a positive integer, got {groups!r}")
        if in_channels % groups:
            raise ValueError(f"in_channels must be divisible by groups, got in_channels={in_channels}, groups={groups}")
        if out_channels % groups:
            raise ValueError(
                f"out_channels must be divisible by groups, got out_channels={out_channels}, groups={groups}"
            )
        kernel_size = _pair(kernel_size, "kernel_size", "Conv2d")
        stride = _pair(stride, "stride", "Conv2d")
        dilation = _pair(dilation, "dilation", "Conv2d")
        if isinstance(padding, str):
            if padding not in ("same", "valid"):
                raise ValueError(f"Invalid padding string {padding!r}, should be one of {{'same', 'valid'}}")
            if padding == "same" and stride != (1, 1):
                raise ValueError("padding='same' is not supported for strided convolutions")
        else:
            padding = _pair(padding, "padding", "Conv2d")
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
        if padding == "valid":
            self._reversed_padding_repeated_twice = (0, 0, 0, 0)
        elif padding == "same":
            (kh, kw), (dh, dw) = kernel_size, dilation
            th, tw = dh * (kh - 1), dw * (kw - 1)
            self._reversed_padding_repeated_twice = (tw // 2, tw - tw // 2, th // 2, th - th // 2)
        else:
            self._reversed_padding_repeated_twice = (padding[1], padding[1], padding[0], padding[0])
        self.weight = Parameter(empty(out_channels, in_channels // groups, *kernel_size, dtype=dtype, device=device))
        if bias:
            self.bias = Parameter(empty(out_channels, dtype=dtype, device=device))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = (self.in_channels // self.groups) * self.kernel_size[0] * self.kernel_size[1]
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
            init.uniform_(self.bias, -bound, bound)

    def forward(self, input):
        if self.padding_mode != "zeros":
            padded = mode_pad(input, self._reversed_padding_repeated_twice, self.padding_mode)
            return conv2d(padded, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)
        return conv2d(input, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)

    def extra_repr(self) -> str:
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if self.padding != (0, 0):
            s += f", padding={self.padding}"
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        if self.padding_mode != "zeros":
            s += f", padding_mode={self.padding_mode}"
        return s
