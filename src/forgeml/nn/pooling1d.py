"""1-D pooling layers: ``MaxPool1d``, ``AvgPool1d``, ``AdaptiveAvgPool1d``, ``AdaptiveMaxPool1d``."""

from __future__ import annotations

from ..ops.pool1d import adaptive_avg_pool1d, adaptive_max_pool1d, avg_pool1d, max_pool1d
from .module import Module
from .pooling import _AdaptivePoolNd, _MaxPoolNd

__all__ = ["AdaptiveAvgPool1d", "AdaptiveMaxPool1d", "AvgPool1d", "MaxPool1d"]


class MaxPool1d(_MaxPoolNd):
    """Max over windows of ``kernel_size`` along L; ``stride`` defaults to ``kernel_size``; ``return_indices``
    also returns the argmax indices (as :func:`forgeml.nn.functional.max_pool1d`)."""

    def forward(self, input):
        return max_pool1d(
            input, self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode, self.return_indices
        )


class AvgPool1d(Module):
    """Mean over windows of ``kernel_size`` along L, with PyTorch's ``ceil_mode`` and ``count_include_pad``."""

    def __init__(
        self, kernel_size, stride=None, padding=0, ceil_mode: bool = False, count_include_pad: bool = True
    ) -> None:
        super().__init__()
        self.kernel_size = _one(kernel_size)
        self.stride = _one(stride if stride is not None else kernel_size)
        self.padding = _one(padding)
        self.ceil_mode = ceil_mode
        self.count_include_pad = count_include_pad

    def forward(self, input):
        return avg_pool1d(input, self.kernel_size, self.stride, self.padding, self.ceil_mode, self.count_include_pad)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


def _one(value):
    """An int as a 1-tuple (PyTorch's ``_single``); tuples and lists stay as given."""
    return tuple(value) if isinstance(value, (tuple, list)) else (value,)


class AdaptiveAvgPool1d(_AdaptivePoolNd):
    """Average-pool (N, C, L) or (C, L) to a fixed ``output_size`` along L."""

    def forward(self, input):
        return adaptive_avg_pool1d(input, self.output_size)


class AdaptiveMaxPool1d(_AdaptivePoolNd):
    """Max-pool (N, C, L) or (C, L) to a fixed ``output_size`` along L; ``return_indices`` adds the argmaxes."""

    def __init__(self, output_size, return_indices: bool = False) -> None:
        super().__init__(output_size)
        self.return_indices = return_indices

    def forward(self, input):
        return adaptive_max_pool1d(input, self.output_size, self.return_indices)
