"""``Embedding``: a lookup table of learned vectors."""

from __future__ import annotations

from ..ops.creation import empty
from ..ops.sparse import embedding
from . import functional as F
from . import init
from .module import Module
from .parameter import Parameter
from .sequence import MaskedBatch

__all__ = ["Embedding", "EmbeddingLayer"]


class Embedding(Module):
    """``num_embeddings`` vectors of size ``embedding_dim``, looked up by integer index (init N(0, 1)).

    Backward reaches only the rows that were used; ``padding_idx``'s row starts
    at zero and never receives a gradient. Given a :class:`MaskedBatch` of token
    ids, it returns one of embeddings with the same padding mask.
    """

    accepts_masked = True

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        padding_idx: int | None = None,
        max_norm: float | None = None,
        norm_type: float = 2.0,
        scale_grad_by_freq: bool = False,
        sparse: bool = False,
        _weight=None,
        _freeze: bool = False,
        device=None,
        dtype=None,
    ):
        super().__init__()
        if padding_idx is not None:
            if not -num_embeddings <= padding_idx < num_embeddings:
                raise ValueError(f"padding_idx {padding_idx} must be within num_embeddings ({num_embeddings})")
            padding_idx %= num_embeddings
        if scale_grad_by_freq:
            raise NotImplementedError("Embedding: scale_grad_by_freq=True is not supported")
        self.num_embeddings, self.embedding_dim, self.padding_idx = num_embeddings, embedding_dim, padding_idx
        self.max_norm, self.norm_type, self.scale_grad_by_freq, self.sparse = max_norm, norm_type, False, sparse
        if _weight is None:
            self.weight = Parameter(empty(num_embeddings, embedding_dim, dtype=dtype, device=device))
            self.reset_parameters()
        else:
            if tuple(_weight.shape) != (num_embeddings, embedding_dim):
                raise ValueError(
                    f"_weight must have shape [{num_embeddings}, {embedding_dim}], got {list(_weight.shape)}"
                )
            self.weight = Parameter(_weight.detach())
        if _freeze:
            self.weight.requires_grad_(False)

    @classmethod
    def from_pretrained(
        cls,
        embeddings,
        freeze: bool = True,
        padding_idx: int | None = None,
        max_norm: float | None = None,
        norm_type: float = 2.0,
        scale_grad_by_freq: bool = False,
        sparse: bool = False,
    ):
        """An ``Embedding`` whose table is ``embeddings`` ([num_embeddings, embedding_dim]), frozen by default."""
        if embeddings.dim() != 2:
            raise ValueError(f"Embeddings parameter is expected to be 2-dimensional, got {embeddings.dim()} dims")
        rows, cols = embeddings.shape
        return cls(
            rows,
            cols,
            padding_idx=padding_idx,
            max_norm=max_norm,
            norm_type=norm_type,
            scale_grad_by_freq=scale_grad_by_freq,
            sparse=sparse,
            _weight=embeddings,
            _freeze=freeze,
        )

    def reset_parameters(self) -> None:
        init.normal_(self.weight)
        if self.padding_idx is not None:
            self.weight._data[self.padding_idx] = 0

    def forward(self, input):
        if isinstance(input, MaskedBatch):
            return input.replace(self._lookup(input.data))
        return self._lookup(input)

    def _lookup(self, input):
        if self.max_norm is None:
            return embedding(input, self.weight, self.padding_idx)
        return F.embedding(input, self.weight, self.padding_idx, self.max_norm, self.norm_type)

    def extra_repr(self) -> str:
        text = f"{self.num_embeddings}, {self.embedding_dim}"
        text += f", padding_idx={self.padding_idx}" if self.padding_idx is not None else ""
        text += f", max_norm={self.max_norm}" if self.max_norm is not None else ""
        text += f", norm_type={self.norm_type}" if self.norm_type != 2 else ""
        return text + (", sparse=True" if self.sparse else "")


EmbeddingLayer = Embedding  # the seed's name
