"""``MaskedBatch``: padded sequences with their padding mask, as one value a ``Sequential`` can pass along."""

from __future__ import annotations

from ..tensor import Tensor

__all__ = ["MaskedBatch"]


class MaskedBatch:
    """Padded sequences and which positions are padding (True = pad)."""

    __slots__ = ("data", "padding_mask")

    def __init__(self, data, padding_mask=None) -> None:
        if not isinstance(data, Tensor):
            raise TypeError(f"MaskedBatch data must be a Tensor, got {type(data).__name__}")
        if padding_mask is not None:
            if not isinstance(padding_mask, Tensor) or padding_mask.dtype.name != "bool":
                raise TypeError("padding_mask must be a bool Tensor (True at padding positions)")
            if padding_mask.shape != data.shape[:2]:
                raise ValueError(
                    f"padding_mask of shape {list(padding_mask.shape)} does not match the data's [batch, time] "
                    f"dims {list(data.shape[:2])}"
                )
        self.data = data
        self.padding_mask = padding_mask

    def replace(self, data) -> MaskedBatch:
        """The same mask with new data (a position-wise layer's output)."""
        return MaskedBatch(data, self.padding_mask)

    @property
    def shape(self):
        return self.data.shape

    def __repr__(self) -> str:
        return f"MaskedBatch(data={list(self.data.shape)}, padding_mask={None if self.padding_mask is None else list(self.padding_mask.shape)})"
