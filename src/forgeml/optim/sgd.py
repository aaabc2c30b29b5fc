"""Stochastic gradient descent with optional momentum, dampening, Nesterov and weight decay (``torch.optim.SGD``)."""

from __future__ import annotations

import numpy as np

from .optimizer import Optimizer, _check_hyper

__all__ = ["SGD"]

_add, _sub, _mul, _copyto, _neg = np.add, np.subtract, np.multiply, np.copyto, np.negative


def _sgd_kernel(p, g, buf, s, s2, wd, neg, lr, momentum, damp_w, nesterov, init):
    """One SGD update in place. ``neg``: maximize (the effective gradient is ``-g``), folded into signs."""
    if wd:
        _mul(p, wd, out=s2)
        (_sub if neg else _add)(s2, g, out=s2)  # g_eff = -g + wd*p  or  g + wd*p
        g, neg = s2, False
    addg = _sub if neg else _add  # x + g_eff
    if buf is not None:
        if init:
            if neg:
                _neg(g, out=buf)
            else:
                _copyto(buf, g)
        else:
            _mul(buf, momentum, out=buf)
            if damp_w == 1:
                addg(buf, g, out=buf)
            else:
                _mul(g, damp_w, out=s)
                addg(buf, s, out=buf)
        if nesterov:
            _mul(buf, momentum, out=s)
            addg(s, g, out=s)
            _mul(s, -lr, out=s)
        else:
            _mul(buf, -lr, out=s)
    else:
        _mul(g, lr if neg else -lr, out=s)
    _add(p, s, out=p)


class SGD(Optimizer):
    """Stochastic gradient descent, step for step as ``torch.optim.SGD`` (its for-loop implementation).

    ``g ← ∇ (negated if maximize) + weight_decay·θ``; with momentum
    ``b ← momentum·b + (1 - dampening)·g`` (``b ← g`` on the first step) and
    ``g ← g + momentum·b`` (Nesterov) or ``g ← b``; then ``θ ← θ - lr·g``.
    """

    _param_state_keys = ("momentum_buffer",)

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        momentum: float = 0,
        dampening: float = 0,
        weight_decay: float = 0,
        nesterov: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
    ) -> None:
        _check_hyper(lr >= 0.0, "learning rate", lr)
        _check_hyper(momentum >= 0.0, "momentum value", momentum)
        _check_hyper(weight_decay >= 0.0, "weight_decay value", weight_decay)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError(
                f"Nesterov momentum requires a momentum and zero dampening (got momentum={momentum}, "
                f"dampening={dampening})"
            )
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "dampening": dampening,
            "weight_decay": weight_decay,
            "nesterov": nesterov,
            "maximize": maximize,
        }
        super().__init__(params, defaults)

    def step(self, closure=None):
        """Perform one optimization step; ``closure`` (optional) re-evaluates the model and returns the loss."""
        loss = self._call_closure(closure)
        with np.errstate(all="ignore"):
            for group in self.param_groups:
                lr = float(group["lr"])
                momentum = float(group["momentum"])
                damp_w = 1.0 - float(group["dampening"])
                wd = float(group["weight_decay"])
                nesterov = bool(group["nesterov"])
                neg = bool(group["maximize"])
                n_scratch = 2 if wd else 1
                for p in group["params"]:
                    grad = p.grad
                    if grad is None:
                        continue
                    if momentum != 0:
                        state = self.state[p]
                        buf = state.get("momentum_buffer")
                        init = buf is None
                        if init:
                            buf = state["momentum_buffer"] = self._zeros_like(p)
                        consts = (wd, neg, lr, momentum, damp_w, nesterov, init)
                        self._apply(_sgd_kernel, p, grad, (buf.data,), n_scratch, consts)
                    else:
                        consts = (wd, neg, lr, momentum, damp_w, False, False)
                        self._apply(_sgd_kernel, p, grad, (None,), n_scratch, consts)
        return loss
