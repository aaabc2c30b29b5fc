"""RAdam (``torch.optim.RAdam``): Adam with a rectified adaptive learning rate."""

from __future__ import annotations

from ..backend.device import ignore_float_errors
from ._hyper import check_betas
from .adam import _adam_kernel
from .optimizer import Optimizer, _check_differentiable, _check_hyper

__all__ = ["RAdam"]


def _radam_kernel(xp, p, g, m, v, s, s2, decay, wd, neg, w1, b2, w2, eps, rectified, k):
    """One RAdam update in place: Adam's moment updates, then ``θ ← θ - k·m/(sqrt(v) + eps)`` when rectified
    (``k = lr·r_t·sqrt(1-β2^t)/(1-β1^t)``) or the plain momentum step ``θ ← θ - k·m`` (``k = lr/(1-β1^t)``).
    """
    _adam_kernel(xp, p, g, m, v, None, s, s2, decay, wd, neg, w1, b2, w2, 0.0, 0.0, False)
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
        _check_differentiable(differentiable)
        _check_hyper(lr >= 0.0, "learning rate", lr)
        _check_hyper(eps >= 0.0, "epsilon value", eps)
        betas = check_betas(betas)
        _check_hyper(weight_decay >= 0.0, "weight_decay value", weight_decay)
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
                lr = float(group["lr"])
                beta1, beta2 = (float(b) for b in group["betas"])
                eps = float(group["eps"])
                wd = float(group["weight_decay"])
                neg = bool(group["maximize"])
                decoupled = bool(group["decoupled_weight_decay"])
                decay = 1.0 - lr * wd if decoupled and wd != 0 else 1.0
                l2 = 0.0 if decoupled else wd
                rho_inf = 2 / (1 - beta2) - 1
                for p in group["params"]:
                    grad = p.grad
                    if grad is None:
                        continue
                    state = self.state[p]
                    if len(state) == 0:
                        state["step"] = self._new_step()
                        state["exp_avg"] = self._zeros_like(p)
                        state["exp_avg_sq"] = self._zeros_like(p)
                    step_t = state["step"]._data
                    step_t += 1
                    step = float(step_t)
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
