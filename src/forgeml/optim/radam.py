"""RAdam (``torch.optim.RAdam``): Adam with a rectified adaptive learning rate."""

from __future__ import annotations

from ..backend.device import ignore_float_errors
from ._hyper import adam_group, check_adam_hyper, split_weight_decay
from .adam import _adam_moments
from .optimizer import Optimizer

__all__ = ["RAdam"]


def _radam_kernel(xp, p, g, m, v, s, s2, decay, wd, neg, w1, b2, w2, eps, rectified, k):
    """One RAdam update in place: Adam's moment updates, then ``θ ← θ - k·m/(sqrt(v) + eps)`` when rectified
    (``k = lr·r_t·sqrt(1-β2^t)/(1-β1^t)``) or the plain momentum step ``θ ← θ - k·m`` (``k = lr/(1-β1^t)``).
    """
    _adam_moments(xp, p, g, m, v, s, s2, decay, wd, neg, w1, b2, w2)
    if rectified:
        xp.sqrt(v, out=s)
        xp.add(s, eps, out=s)
        xp.divide(m, s, out=s)
        xp.multiply(s, k, out=s)
    else:
        xp.multiply(m, k, out=s)
    xp.subtract(p, s, out=p)


class RAdam(Optimizer):
    """RAdam, step for step as ``torch.optim.RAdam`` (its for-loop implementation).

    While the length of the approximated simple moving average ``rho_t`` is at
    most 5 the step is SGD with momentum (``lr·m̂``); afterwards it is Adam's
    step scaled by the variance rectification term. ``weight_decay`` is L2 decay
    unless ``decoupled_weight_decay=True`` (``θ ← θ(1 - lr·λ)``, as AdamW).
    """

    _param_state_keys = ("exp_avg", "exp_avg_sq")

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        decoupled_weight_decay: bool = False,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        capturable: bool = False,
        differentiable: bool = False,
    ) -> None:
        betas = check_adam_hyper(differentiable, lr, eps, betas, weight_decay)
        defaults = {
            "lr": lr,
            "betas": betas,
            "eps": eps,
            "weight_decay": weight_decay,
            "maximize": maximize,
            "decoupled_weight_decay": decoupled_weight_decay,
        }
        super().__init__(params, defaults)

    def step(self, closure=None):
        """Perform one optimization step; ``closure`` (optional) re-evaluates the model and returns the loss."""
        loss = self._call_closure(closure)
        with ignore_float_errors():
            for group in self.param_groups:
                lr, beta1, beta2, eps, wd, neg = adam_group(group)
                decay, l2 = split_weight_decay(group, lr, wd)
                rho_inf = 2 / (1 - beta2) - 1
                for p, grad in self._with_grads(group):
                    state = self._state_of(p, "exp_avg", "exp_avg_sq")
                    step = self._count_step(state)
                    bias_correction1 = 1 - beta1**step
                    bias_correction2 = 1 - beta2**step
                    rho_t = rho_inf - 2 * step * (beta2**step) / bias_correction2
                    rectified = rho_t > 5.0
                    if rectified:
                        rect = ((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t)) ** 0.5
                        k = lr * rect * bias_correction2**0.5 / bias_correction1
                    else:
                        k = lr / bias_correction1
                    buffers = (state["exp_avg"]._data, state["exp_avg_sq"]._data)
                    consts = (decay, l2, neg, 1.0 - beta1, beta2, 1.0 - beta2, eps, rectified, k)
                    self._apply(_radam_kernel, p, grad, buffers, 2 if l2 else 1, consts)
        return loss
