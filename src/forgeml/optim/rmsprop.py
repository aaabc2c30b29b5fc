"""RMSprop (``torch.optim.RMSprop``), with momentum, centering and weight decay."""

from __future__ import annotations

import numpy as np

from .optimizer import Optimizer, _check_hyper

__all__ = ["RMSprop"]

_add, _sub, _mul, _div, _sqrt = np.add, np.subtract, np.multiply, np.divide, np.sqrt


def _rmsprop_kernel(p, g, sq, ga, buf, s, s2, wd, neg, lr, alpha, w, eps, momentum):
    """One RMSprop update in place. ``neg``: maximize, folded into signs (exact)."""
    if wd:
        _mul(p, wd, out=s2)
        (_sub if neg else _add)(s2, g, out=s2)
        g, neg = s2, False
    _mul(g, w, out=s)  # v ← alpha v + (1-alpha) g²
    _mul(s, g, out=s)
    _mul(sq, alpha, out=sq)
    _add(sq, s, out=sq)
    if ga is not None:  # centered: avg = sqrt(v - gbar²) with gbar ← gbar + (1-alpha)(g - gbar)
        if neg:
            _add(g, ga, out=s)
            _mul(s, -w, out=s)
        else:
            _sub(g, ga, out=s)
            _mul(s, w, out=s)
        _add(ga, s, out=ga)
        _mul(ga, ga, out=s)
        _sub(sq, s, out=s)
        _sqrt(s, out=s)
    else:
        _sqrt(sq, out=s)
    _add(s, eps, out=s)
    _div(g, s, out=s)  # g / avg (the sign of maximize still pending)
    if buf is not None:
        _mul(buf, momentum, out=buf)
        (_sub if neg else _add)(buf, s, out=buf)
        _mul(buf, -lr, out=s)
    else:
        _mul(s, lr if neg else -lr, out=s)
    _add(p, s, out=p)


class RMSprop(Optimizer):
    """RMSprop, step for step as ``torch.optim.RMSprop`` (its for-loop implementation).

    ``v ← alpha v + (1-alpha) g²``; ``avg = sqrt(v) + eps`` (centered: ``sqrt(v - gbar²) + eps``);
    ``θ ← θ - lr·g/avg``, or with momentum ``b ← μ b + g/avg``, ``θ ← θ - lr·b``.
    """

    _param_state_keys = ("square_avg", "momentum_buffer", "grad_avg")

    def __init__(
        self,
        params,
        lr: float = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0,
        momentum: float = 0,
        centered: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
    ) -> None:
        _check_hyper(lr >= 0.0, "learning rate", lr)
        _check_hyper(eps >= 0.0, "epsilon value", eps)
        _check_hyper(momentum >= 0.0, "momentum value", momentum)
        _check_hyper(weight_decay >= 0.0, "weight_decay value", weight_decay)
        _check_hyper(alpha >= 0.0, "alpha value", alpha)
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "alpha": alpha,
            "eps": eps,
            "centered": centered,
            "weight_decay": weight_decay,
            "maximize": maximize,
        }
        super().__init__(params, defaults)

    def step(self, closure=None):
        """Perform one optimization step; ``closure`` (optional) re-evaluates the model and returns the loss."""
        loss = self._call_closure(closure)
        with np.errstate(all="ignore"):
            for group in self.param_groups:
                lr = float(group["lr"])
                alpha = float(group["alpha"])
                eps = float(group["eps"])
                wd = float(group["weight_decay"])
                momentum = float(group["momentum"])
                centered = bool(group["centered"])
                neg = bool(group["maximize"])
                n_scratch = 2 if wd else 1
                consts = (wd, neg, lr, alpha, 1.0 - alpha, eps, momentum)
                for p in group["params"]:
                    grad = p.grad
                    if grad is None:
                        continue
                    state = self.state[p]
                    if len(state) == 0:
                        state["step"] = self._new_step()
                        state["square_avg"] = self._zeros_like(p)
                        if momentum > 0:
                            state["momentum_buffer"] = self._zeros_like(p)
                        if centered:
                            state["grad_avg"] = self._zeros_like(p)
                    if momentum > 0 and "momentum_buffer" not in state:
                        state["momentum_buffer"] = self._zeros_like(p)
                    if centered and "grad_avg" not in state:
                        state["grad_avg"] = self._zeros_like(p)
                    state["step"].data += 1
                    buffers = (
                        state["square_avg"].data,
                        state["grad_avg"].data if centered else None,
                        state["momentum_buffer"].data if momentum > 0 else None,
                    )
                    self._apply(_rmsprop_kernel, p, grad, buffers, n_scratch, consts)
        return loss
