"""Hyper-parameter checks and group reading shared by the Adam family (messages as PyTorch's)."""

from __future__ import annotations

from .optimizer import _check_differentiable, _check_hyper

__all__ = ["adam_group", "check_adam_hyper", "check_betas", "split_weight_decay"]


def check_betas(betas) -> tuple[float, float]:
    """``betas`` as a pair ``(beta1, beta2)``, each in ``[0, 1)``; ValueError naming the bad one otherwise."""
    try:
        beta1, beta2 = betas
    except (TypeError, ValueError):
        raise ValueError(f"betas should be a pair of floats (beta1, beta2), got {betas!r}") from None
    _check_hyper(0.0 <= beta1 < 1.0, "beta parameter at index 0", beta1)
    _check_hyper(0.0 <= beta2 < 1.0, "beta parameter at index 1", beta2)
    return (beta1, beta2)


def check_adam_hyper(differentiable: bool, lr, eps, betas, weight_decay) -> tuple[float, float]:
    """The constructor checks of the Adam family, in PyTorch's order; returns ``betas`` as a pair."""
    _check_differentiable(differentiable)
    _check_hyper(lr >= 0.0, "learning rate", lr)
    _check_hyper(eps >= 0.0, "epsilon value", eps)
    betas = check_betas(betas)
    _check_hyper(weight_decay >= 0.0, "weight_decay value", weight_decay)
    return betas


def adam_group(group: dict) -> tuple[float, float, float, float, float, bool]:
    """``(lr, beta1, beta2, eps, weight_decay, maximize)`` of a param group of the Adam family, as Python scalars."""
    beta1, beta2 = (float(b) for b in group["betas"])
    return float(group["lr"]), beta1, beta2, float(group["eps"]), float(group["weight_decay"]), bool(group["maximize"])


def split_weight_decay(group: dict, lr: float, wd: float) -> tuple[float, float]:
    """``(decay, l2)``: with ``decoupled_weight_decay`` AdamW's factor ``θ ← θ·decay`` (1.0: none) and no L2;
    otherwise no factor and ``wd`` as the L2 coefficient added to the gradient."""
    decoupled = bool(group.get("decoupled_weight_decay", False))
    decay = 1.0 - lr * wd if decoupled and wd != 0 else 1.0
    return decay, (0.0 if decoupled else wd)
