"""Transposed convolution layers: ``ConvTranspose1d`` and ``ConvTranspose2d``, as in ``torch.nn``."""

from __future__ import annotations

from ..ops.conv_transpose import conv_transpose1d, conv_transpose2d
from .conv import _check_channels, _conv_tuple, _init_conv_parameters, conv_extra_repr, reset_conv_parameters
from .module import Module

__all__ = ["ConvTranspose1d", "ConvTranspose2d"]


class _ConvTransposeNd(Module):
    """Shared body: hyper-parameters as tuples, ``weight`` ``[in_channels, out_channels // groups, *kernel]``;
    ``forward(input, output_size=None)`` runs the subclass's ``_conv``."""

    _dims = 0
    _conv = None  # conv_transpose1d or conv_transpose2d

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size,
        stride=1,
        padding=0,
        output_padding=0,
        groups: int = 1,
        bias: bool = True,
        dilation=1,
        padding_mode: str = "zeros",
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        cls = type(self).__name__
        _check_channels(cls, in_channels, out_channels, groups)
        if padding_mode != "zeros":
            raise ValueError(f'Only "zeros" padding mode is supported for {cls}')
        if isinstance(padding, str):
            raise ValueError(f"{cls} does not support string padding ({padding!r}); give the padding as ints")

        def tup(value, name):
            return _conv_tuple(value, name, cls, self._dims)

        self.in_channels, self.out_channels, self.groups, self.padding_mode = (
            in_channels,
            out_channels,
            groups,
            padding_mode,
        )
        self.kernel_size = tup(kernel_size, "kernel_size")
        self.stride = tup(stride, "stride")
        self.padding = tup(padding, "padding")
        self.output_padding = tup(output_padding, "output_padding")
        self.dilation = tup(dilation, "dilation")
        self.transposed = True
        weight_shape = (in_channels, out_channels // groups, *self.kernel_size)
        _init_conv_parameters(self, weight_shape, out_channels, bias, device, dtype)

    def reset_parameters(self) -> None:
        reset_conv_parameters(self.weight, self.bias)

    def _output_padding(self, input, output_size) -> tuple[int, ...]:
        """The ``output_padding`` that makes the output ``output_size`` (PyTorch's rule and range check)."""
        if output_size is None:
            return self.output_padding
        output_size = [int(s) for s in output_size]
        if len(output_size) in (self._dims + 1, self._dims + 2):
            output_size = output_size[-self._dims :]
        if len(output_size) != self._dims:
            raise ValueError(
                f"ConvTranspose{self._dims}D: for {input.ndim}D input, output_size must have {self._dims} or "
                f"{self._dims + 2} elements (got {len(output_size)})"
            )
        spatial = input.shape[-self._dims :]
        mins = [
            (spatial[d] - 1) * self.stride[d] - 2 * self.padding[d] + self.dilation[d] * (self.kernel_size[d] - 1) + 1
            for d in range(self._dims)
        ]
        maxs = [mins[d] + self.stride[d] - 1 for d in range(self._dims)]
        for d in range(self._dims):
            if not mins[d] <= output_size[d] <= maxs[d]:
                raise ValueError(
                    f"requested an output size of {output_size}, but valid sizes range from {mins} to {maxs} "
                    f"(for an input of {list(spatial)})"
                )
        return tuple(output_size[d] - mins[d] for d in range(self._dims))

    def forward(self, input, output_size=None):
        op = self._output_padding(input, output_size)
        return self._conv(input, self.weight, self.bias, self.stride, self.padding, op, self.groups, self.dilation)

    def extra_repr(self) -> str:
        return conv_extra_repr(self)


class ConvTranspose1d(_ConvTransposeNd):
    """Transposed 1-D convolution of (N, C_in, L) or (C_in, L); ``forward(input, output_size=None)``."""

    _dims = 1
    _conv = staticmethod(conv_transpose1d)


class ConvTranspose2d(_ConvTransposeNd):
    """Transposed 2-D convolution of (N, C_in, H, W) or (C_in, H, W); ``forward(input, output_size=None)``.

    ``weight`` is ``[in_channels, out_channels // groups, kH, kW]``, as in PyTorch.
    """

    _dims = 2
    _conv = staticmethod(conv_transpose2d)
