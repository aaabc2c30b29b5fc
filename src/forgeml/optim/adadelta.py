"""Adadelta (``torch.optim.Adadelta``), with weight decay and maximize."""

from __future__ import annotations

from ..backend.device import ignore_float_errors
from ._kernel_parts import l2_grad
from .optimizer import Optimizer, _check_differentiable, _check_hyper

__all__ = ["Adadelta"]


def _adadelta_kernel(xp, p, g, sq, acc, s, s2, wd, neg, lr, rho, w, eps):
    """One Adadelta update in place with ``xp`` ufuncs (``s2`` is always given: it may hold the gradient).

    ``v ← rho·v + (1-rho)·g²``, ``δ = sqrt(u + eps) / sqrt(v + eps) · g``,
    ``u ← rho·u + (1-rho)·δ²``, ``θ ← θ - lr·δ``.
    """
    add, mul, sqrt = xp.add, xp.multiply, xp.sqrt
    g, neg = l2_grad(xp, p, g, s2, wd, neg)  # L2 decay on the (possibly negated) gradient: g ← ±g + λθ
    if neg:
        xp.negative(g, out=s2)
        g = s2
    mul(g, w, out=s)
    mul(s, g, out=s)
    mul(sq, rho, out=sq)
    add(sq, s, out=sq)
    add(sq, eps, out=s)
    sqrt(s, out=s)  # std
    xp.divide(g, s, out=s)  # g / std (g is no longer needed, so s2 is free below)
    add(acc, eps, out=s2)
    sqrt(s2, out=s2)
    mul(s, s2, out=s)  # delta
    mul(s, w, out=s2)
    mul(s2, s, out=s2)
    mul(acc, rho, out=acc)
    add(acc, s2, out=acc)
    mul(s, -lr, out=s)
    add(p, s, out=p)


class Adadelta(Optimizer):
    """Adadelta, step for step as ``torch.optim.Adadelta`` (its for-loop implementation).

    Keeps running averages of squared gradients (``square_avg``) and of squared
    updates (``acc_delta``); the step is ``lr · sqrt(acc_delta + eps) / sqrt(square_avg + eps) · g``.
    """

    _param_state_keys = ("square_avg", "acc_delta")

    def __init__(
        self,
        params,
        lr: float = 1.0,
        rho: float = 0.9,
        eps: float = 1e-6,
        weight_decay: float = 0,
        foreach: bool | None = None,
        *,
        capturable: bool = False,
        maximize: bool = False,
        differentiable: bool = False,
    ) -> None:
        _check_differentiable(differentiable)
        _check_hyper(lr >= 0.0, "learning rate", lr)
        _check_hyper(0.0 <= rho <= 1.0, "rho value", rho)
        _check_hyper(eps >= 0.0, "epsilon value", eps)
        _check_hyper(weight_decay >= 0.0, "weight_decay value", weight_decay)
        defaults = {"lr": lr, "rho": rho, "eps": eps, "weight_decay": weight_decay, "maximize": maximize}
        super().__init__(params, defaults)

    def step(self, closure=None):
        """Perform one optimization step; ``closure`` (optional) re-evaluates the model and returns the loss."""
        loss = self._call_closure(closure)
        with ignore_float_errors():
            for group in self.param_groups:
                rho = float(group["rho"])
                consts = (
                    float(group["weight_decay"]),
                    bool(group["maximize"]),
                    float(group["lr"]),
                    rho,
                    1.0 - rho,
                    float(group["eps"]),
                )
                for p, grad in self._with_grads(group):
                    state = self._state_of(p, "square_avg", "acc_delta")
                    self._count_step(state)
                    buffers = (state["square_avg"]._data, state["acc_delta"]._data)
                    self._apply(_adadelta_kernel, p, grad, buffers, 2, consts)
        return loss
