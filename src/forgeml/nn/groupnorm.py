"""``GroupNorm``, ``InstanceNorm1d`` and ``InstanceNorm2d``, as in ``torch.nn``."""

from __future__ import annotations

import warnings

from ..ops.group_norm import group_norm, instance_norm
from ..ops.shape import squeeze, unsqueeze
from .batchnorm import _NormBase, affine_parameters, reset_affine
from .module import Module

__all__ = ["GroupNorm", "InstanceNorm1d", "InstanceNorm2d"]


class GroupNorm(Module):
    """Normalise an (N, C, *) input over groups of ``num_channels // num_groups`` channels, then scale and
    shift per channel; the same statistics in train and eval. ``weight`` starts at 1, ``bias`` at 0."""

    def __init__(
        self,
        num_groups: int,
        num_channels: int,
        eps: float = 1e-5,
        affine: bool = True,
        device=None,
        dtype=None,
        *,
        bias: bool = True,
    ) -> None:
        super().__init__()
        if num_groups <= 0 or num_channels % num_groups:
            raise ValueError(f"num_channels ({num_channels}) must be divisible by num_groups ({num_groups})")
        self.num_groups, self.num_channels, self.eps, self.affine = num_groups, num_channels, eps, affine
        affine_parameters(self, num_channels, affine, bias, device, dtype)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        reset_affine(self.weight, self.bias)

    def forward(self, input):
        return group_norm(input, self.num_groups, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return (
            f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}, "
            f"bias={self.bias is not None}"
        )


class _InstanceNorm(_NormBase):
    """Per-sample, per-channel normalisation; running statistics (when tracked) normalise in eval only.

    Parameters and buffers are named as in PyTorch (``weight``, ``bias``,
    ``running_mean``, ``running_var``, ``num_batches_tracked``), so state_dicts
    are interchangeable; ``affine`` and ``track_running_stats`` default to
    False. A ``_NormBase`` but not a batch-norm subclass (as in PyTorch), so
    ``SyncBatchNorm.convert_sync_batchnorm`` leaves it alone.
    """

    _no_batch_dim = 0

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = False,
        track_running_stats: bool = False,
        device=None,
        dtype=None,
        *,
        bias: bool = True,
    ) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype, bias=bias)

    def _check_input_dim(self, input) -> None:
        dims = (self._no_batch_dim, self._no_batch_dim + 1)
        if input.ndim not in dims:
            raise ValueError(
                f"{type(self).__name__}: expected {dims[0]}D or {dims[1]}D input "
                f"(got {input.ndim}D input of shape {list(input.shape)})"
            )

    def forward(self, input):
        self._check_input_dim(input)
        feature_dim = input.ndim - self._no_batch_dim
        if input.shape[feature_dim] != self.num_features:
            if self.affine:
                raise ValueError(
                    f"expected input's size at dim={feature_dim} to match num_features ({self.num_features}), "
                    f"but got: {input.shape[feature_dim]}."
                )
            warnings.warn(
                f"input's size at dim={feature_dim} does not match num_features. You can silence this warning "
                "by not passing in num_features, which is not used because affine=False",
                stacklevel=2,
            )
        unbatched = input.ndim == self._no_batch_dim
        x = unsqueeze(input, 0) if unbatched else input
        out = instance_norm(
            x,
            self.running_mean,
            self.running_var,
            self.weight,
            self.bias,
            self.training or not self.track_running_stats,
            self.momentum if self.momentum is not None else 0.0,
            self.eps,
        )
        return squeeze(out, 0) if unbatched else out


class InstanceNorm1d(_InstanceNorm):
    """Instance norm over (N, C, L) or unbatched (C, L) inputs."""

    _no_batch_dim = 2


class InstanceNorm2d(_InstanceNorm):
    """Instance norm over (N, C, H, W) or unbatched (C, H, W) inputs."""

    _no_batch_dim = 3
