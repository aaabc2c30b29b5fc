"""``Dropout1d``, ``Dropout2d`` and ``Dropout3d``: zero whole channels in training, the identity in eval."""

from __future__ import annotations

from ..ops.feature_dropout import dropout1d, dropout2d, dropout3d
from .dropout import _DropoutNd

__all__ = ["Dropout1d", "Dropout2d", "Dropout3d"]


class Dropout1d(_DropoutNd):
    """Zero each channel of ``[N, C, L]`` (or ``[C, L]``) inputs with probability ``p``, scale the rest by 1/(1-p)."""

    def forward(self, input):
        return dropout1d(input, self.p, self.training, self.inplace)


class Dropout2d(_DropoutNd):
    """Zero each channel of ``[N, C, H, W]`` inputs with probability ``p``, scale the rest by 1/(1-p).

    A 3-D input is read as ``[N, C, L]``, as PyTorch does (with its warning).
    """

    def forward(self, input):
        return dropout2d(input, self.p, self.training, self.inplace)


class Dropout3d(_DropoutNd):
    """Zero each channel of ``[N, C, D, H, W]`` (or ``[C, D, H, W]``) inputs with probability ``p``."""

    def forward(self, input):
        return dropout3d(input, self.p, self.training, self.inplace)
