"""``Dropout``: inverted dropout in training, the identity in eval mode."""

from __future__ import annotations

from ..ops.nn import dropout
from .module import Module

__all__ = ["Dropout"]


class _DropoutNd(Module):
    """Shared body of the dropout layers (as PyTorch's): the probability ``p`` (checked) and ``inplace``."""

    def __init__(self, p: float = 0.5, inplace: bool = False) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
        self.p = p
        self.inplace = inplace

    def extra_repr(self) -> str:
        return f"p={self.p}, inplace={self.inplace}"


class Dropout(_DropoutNd):
    """During training zero each element with probability ``p`` and scale the rest by ``1/(1-p)``.

    In eval mode (``model.eval()``) it returns its input unchanged. The mask
    comes from the default generator, so ``forgeml.manual_seed`` makes it
    reproducible.
    """

    def forward(self, input):
        return dropout(input, self.p, self.training, self.inplace)
