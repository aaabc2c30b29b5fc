"""``Conv1d``: a 1-D convolution layer, as in ``torch.nn.Conv1d``."""

from __future__ import annotations

from ..ops.conv import mode_pad
from ..ops.conv1d import conv1d
from .conv import _ConvNd

__all__ = ["Conv1d"]


class Conv1d(_ConvNd):
    """Convolve an (N, C_in, L) or (C_in, L) input with ``out_channels`` learned filters of length ``kernel_size``.

    ``weight`` is ``[out_channels, in_channels // groups, kernel_size]`` and ``bias`` ``[out_channels]``,
    initialised as PyTorch does. ``padding`` is an int, ``'valid'`` or ``'same'``; a ``padding_mode`` other
    than ``'zeros'`` pads with reflected, replicated or wrapped-around elements.
    """

    _dims = 1
    _name = "Conv1d"

    def forward(self, input):
        if self.padding_mode != "zeros":
            padded = mode_pad(input, self._reversed_padding_repeated_twice + (0, 0), self.padding_mode)
            return conv1d(padded, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)
        return conv1d(input, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
