"""Checks of optimizer hyper-parameters shared by the Adam family (messages as PyTorch's)."""

from __future__ import annotations

from .optimizer import _check_hyper

__all__ = ["check_betas"]


def check_betas(betas) -> tuple[float, float]:
    """``betas`` as a pair ``(beta1, beta2)``, each in ``[0, 1)``; ValueError naming the bad one otherwise."""
    try:
        beta1, beta2 = betas
    except (TypeError, ValueError):
        raise ValueError(f"betas should be a pair of floats (beta1, beta2), got {betas!r}") from None
    _check_hyper(0.0 <= beta1 < 1.0, "beta parameter at index 0", beta1)
    _check_hyper(0.0 <= beta2 < 1.0, "beta parameter at index 1", beta2)
    return (beta1, beta2)
