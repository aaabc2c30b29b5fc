"""``Embedding``: a lookup table of learned vectors."""

from __future__ import annotations

from ..ops.creation import empty
from ..ops.sparse import embedding
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
        self, num_embeddings: int, embedding_dim: int, padding_idx: int | None = None, device=None, dtype=None
    ):
        super().__init__()
        if padding_idx is not None:
            if not -num_embeddings <= padding_idx < num_embeddings:
                raise ValueError(f"padding_idx {padding_idx} must be within num_embeddings ({num_embeddings})")
            padding_idx %= num_embeddings
        self.num_embeddings, self.embedding_dim, self.padding_idx = num_embeddings, embedding_dim, padding_idx
        self.weight = Parameter(empty(num_embeddings, embedding_dim, dtype=dtype, device=device))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        init.normal_(self.weight)
        if self.padding_idx is not None:
            self.weight.data[self.padding_idx] = 0

    def forward(self, input):
        if isinstance(input, MaskedBatch):
            return input.replace(embedding(input.data, self.weight, self.padding_idx))
        return embedding(input, self.weight, self.padding_idx)

    def extra_repr(self) -> str:
        text = f"{self.num_embeddings}, {self.embedding_dim}"
        return text + (f", padding_idx={self.padding_idx}" if self.padding_idx is not None else "")


EmbeddingLayer = Embedding  # the seed's name
