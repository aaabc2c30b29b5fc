"""``CosineSimilarity`` and ``KLDivLoss`` (their reprs show no arguments, as PyTorch's do)."""

from __future__ import annotations

from ..ops.distance import _KL_REDUCTIONS, cosine_similarity, kl_div, legacy_reduction
from .module import Module

__all__ = ["CosineSimilarity", "KLDivLoss"]


class CosineSimilarity(Module):
    """Cosine similarity of two inputs along ``dim``, each norm clamped at ``eps``."""

    def __init__(self, dim: int = 1, eps: float = 1e-8) -> None:
        super().__init__()
        self.dim = dim
        self.eps = eps

    def forward(self, x1, x2):
        return cosine_similarity(x1, x2, self.dim, self.eps)


class KLDivLoss(Module):
    """Kullback-Leibler divergence loss of targets from log-probability inputs (see ``functional.kl_div``)."""

    def __init__(self, size_average=None, reduce=None, reduction: str = "mean", log_target: bool = False) -> None:
        super().__init__()
        if size_average is not None or reduce is not None:
            reduction = legacy_reduction(size_average, reduce)
        if reduction not in _KL_REDUCTIONS:
            raise ValueError(f"{reduction!r} is not a valid value for reduction; expected one of {_KL_REDUCTIONS}")
        self.reduction = reduction
        self.log_target = log_target

    def forward(self, input, target):
        return kl_div(input, target, reduction=self.reduction, log_target=self.log_target)
