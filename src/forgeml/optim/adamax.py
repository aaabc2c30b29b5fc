"""Adamax (``torch.optim.Adamax``): Adam with the infinity norm, with weight decay and maximize."""

from __future__ import annotations

from ..backend.device import ignore_float_errors
from ._hyper import adam_group, check_adam_hyper
from ._kernel_parts import l2_grad, lerp_moment
from .optimizer import Optimizer

__all__ = ["Adamax"]


def _adamax_kernel(xp, p, g, m, u, s, s2, wd, neg, w1, b2, eps, nclr):
    """One Adamax update in place: ``m ← m + (1-β1)(g - m)``, ``u ← max(β2 u, |g| + eps)``, ``θ ← θ + nclr·m/u``."""
    add, mul = xp.add, xp.multiply
    g, neg = l2_grad(xp, p, g, s2, wd, neg)
    lerp_moment(xp, m, g, s, neg, w1)
    mul(u, b2, out=u)
    xp.absolute(g, out=s)
    add(s, eps, out=s)
    xp.maximum(u, s, out=u)
    xp.divide(m, u, out=s)
    mul(s, nclr, out=s)
    add(p, s, out=p)


class Adamax(Optimizer):
    """Adamax, step for step as ``torch.optim.Adamax`` (its for-loop implementation).

    ``exp_inf ← max(β2·exp_inf, |g| + eps)`` and ``θ ← θ - lr/(1-β1^t) · exp_avg / exp_inf``;
    ``weight_decay`` is L2 decay added to the gradient.
    """

    _param_state_keys = ("exp_avg", "exp_inf")

    def __init__(
        self,
        params,
        lr: float = 2e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        foreach: bool | None = None,
        *,
        maximize: bool = False,
        differentiable: bool = False,
        capturable: bool = False,
    ) -> None:
        betas = check_adam_hyper(differentiable, lr, eps, betas, weight_decay)
        defaults = {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay, "maximize": maximize}
        super().__init__(params, defaults)

    def step(self, closure=None):
        """Perform one optimization step; ``closure`` (optional) re-evaluates the model and returns the loss."""
        loss = self._call_closure(closure)
        with ignore_float_errors():
            for group in self.param_groups:
                lr, beta1, beta2, eps, wd, neg = adam_group(group)
                for p, grad in self._with_grads(group):
                    state = self._state_of(p, "exp_avg", "exp_inf")
                    clr = lr / (1 - beta1 ** self._count_step(state))
                    buffers = (state["exp_avg"]._data, state["exp_inf"]._data)
                    consts = (wd, neg, 1.0 - beta1, beta2, eps, -clr)
                    self._apply(_adamax_kernel, p, grad, buffers, 2 if wd else 1, consts)
        return loss
