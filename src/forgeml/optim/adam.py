"""Adam and AdamW (``torch.optim.Adam`` / ``torch.optim.AdamW``), with AMSGrad and maximize."""

from __future__ import annotations

import numpy as np

from .optimizer import Optimizer, _check_hyper

__all__ = ["Adam", "AdamW"]

_add, _sub, _mul, _div, _sqrt, _maximum = np.add, np.subtract, np.multiply, np.divide, np.sqrt, np.maximum


def _adam_kernel(p, g, m, v, vmax, s, s2, decay, wd, neg, w1, b2, w2, c1, c2, update):
    """One Adam update in place, 12 passes over memory (13 with AMSGrad).

    ``m ← m + (1-β1)(g - m)``, ``v ← β2 v + (1-β2) g²``, and
    ``θ ← θ - m / (sqrt(v̂) · c1 + c2)``, which is PyTorch's
    ``θ - lr/(1-β1^t) · m / (sqrt(v) / sqrt(1-β2^t) + eps)`` with the scalars folded.
    """
    if decay != 1.0:  # AdamW: θ ← θ(1 - lr·λ) before everything else
        _mul(p, decay, out=p)
    if wd:  # Adam: L2 decay into the gradient, g ← g + λθ
        _mul(p, wd, out=s2)
        (_sub if neg else _add)(s2, g, out=s2)
        g, neg = s2, False
    if neg:  # (-g) - m = -(g + m): maximize costs no extra pass
        _add(g, m, out=s)
        _mul(s, -w1, out=s)
    else:
        _sub(g, m, out=s)
        _mul(s, w1, out=s)
    _add(m, s, out=m)
    _mul(g, w2, out=s)
    _mul(s, g, out=s)
    _mul(v, b2, out=v)
    _add(v, s, out=v)
    if vmax is not None:  # AMSGrad: max over the raw v, bias-corrected below like v
        _maximum(vmax, v, out=vmax)
        v = vmax
    if update:
        _sqrt(v, out=s)
        _mul(s, c1, out=s)
        _add(s, c2, out=s)
        _div(m, s, out=s)
        _sub(p, s, out=p)


class Adam(Optimizer):
    """Adam, step for step as ``torch.optim.Adam`` (its for-loop implementation).

    ``weight_decay`` is L2 decay added to the gradient (``g ← g + λθ``) unless
    ``decoupled_weight_decay=True`` (then it is AdamW). The update is
    ``θ ← θ - lr/(1-β1^t) · m / (sqrt(v)/sqrt(1-β2^t) + eps)``; with ``amsgrad`` the
    running maximum of ``v`` replaces ``v`` in the denominator.
    """

    _param_state_keys = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
        decoupled_weight_decay: bool = False,
        foreach: bool | None = None,
    ) -> None:
        _check_hyper(lr >= 0.0, "learning rate", lr)
        _check_hyper(eps >= 0.0, "epsilon value", eps)
        try:
            beta1, beta2 = betas
        except (TypeError, ValueError):
            raise ValueError(f"betas should be a pair of floats (beta1, beta2), got {betas!r}") from None
        _check_hyper(0.0 <= beta1 < 1.0, "beta parameter at index 0", beta1)
        _check_hyper(0.0 <= beta2 < 1.0, "beta parameter at index 1", beta2)
        _check_hyper(weight_decay >= 0.0, "weight_decay value", weight_decay)
        defaults = {
            "lr": lr,
            "betas": (beta1, beta2),
            "eps": eps,
            "weight_decay": weight_decay,
            "amsgrad": amsgrad,
            "maximize": maximize,
            "decoupled_weight_decay": decoupled_weight_decay,
        }
        super().__init__(params, defaults)

    def step(self, closure=None):
        """Perform one optimization step; ``closure`` (optional) re-evaluates the model and returns the loss."""
        loss = self._call_closure(closure)
        with np.errstate(all="ignore"):
            for group in self.param_groups:
                lr = float(group["lr"])
                beta1, beta2 = (float(b) for b in group["betas"])
                eps = float(group["eps"])
                wd = float(group["weight_decay"])
                amsgrad = bool(group["amsgrad"])
                neg = bool(group["maximize"])
                decoupled = bool(group.get("decoupled_weight_decay", False))
                decay = 1.0 - lr * wd if decoupled and wd != 0 else 1.0
                l2 = 0.0 if decoupled else wd
                n_scratch = 2 if l2 else 1
                w1, w2 = 1.0 - beta1, 1.0 - beta2
                for p in group["params"]:
                    grad = p.grad
                    if grad is None:
                        continue
                    state = self.state[p]
                    if len(state) == 0:
                        state["step"] = self._new_step()
                        state["exp_avg"] = self._zeros_like(p)
                        state["exp_avg_sq"] = self._zeros_like(p)
                    if amsgrad and "max_exp_avg_sq" not in state:
                        state["max_exp_avg_sq"] = self._zeros_like(p)
                    step_t = state["step"].data
                    step_t += 1
                    step = float(step_t)
                    bias_correction1 = 1 - beta1**step
                    bias_correction2 = 1 - beta2**step
                    step_size = lr / bias_correction1
                    bias_correction2_sqrt = bias_correction2**0.5
                    update = step_size != 0
                    c1 = 1.0 / (bias_correction2_sqrt * step_size) if update else 0.0
                    c2 = eps / step_size if update else 0.0
                    vmax = state["max_exp_avg_sq"].data if amsgrad else None
                    buffers = (state["exp_avg"].data, state["exp_avg_sq"].data, vmax)
                    consts = (decay, l2, neg, w1, beta2, w2, c1, c2, update)
                    self._apply(_adam_kernel, p, grad, buffers, n_scratch, consts)
        return loss


class AdamW(Adam):
    """AdamW, step for step as ``torch.optim.AdamW``: decoupled decay ``θ ← θ - lr·λ·θ`` before the moment updates.

    The default ``weight_decay`` is 0.01.
    """

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
    ) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize=maximize, decoupled_weight_decay=True)

    def _after_load(self) -> None:
        for group in self.param_groups:
            group["decoupled_weight_decay"] = True
