"""Stochastic gradient descent with optional momentum, dampening, Nesterov and weight decay (``torch.optim.SGD``)."""

from __future__ import annotations

from ..backend.device import ignore_float_errors
from ..ops._fused import ElementwiseSpec
from ._kernel_parts import l2_grad
from .optimizer import Optimizer, _check_differentiable, _check_hyper

__all__ = ["SGD"]


def _sgd_kernel(xp, p, g, buf, s, s2, wd, neg, lr, momentum, damp_w, nesterov, init):
    """One SGD update in place with ``xp`` ufuncs. ``neg``: maximize (the effective gradient is ``-g``), folded into signs."""
    add, sub, mul = xp.add, xp.subtract, xp.multiply
    g, neg = l2_grad(xp, p, g, s2, wd, neg)  # g_eff = -g + wd*p  or  g + wd*p
    addg = sub if neg else add  # x + g_eff
    if buf is not None:
        if init:
            if neg:
                xp.negative(g, out=buf)
            else:
                xp.copyto(buf, g)
        else:
            mul(buf, momentum, out=buf)
            if damp_w == 1:
                addg(buf, g, out=buf)
            else:
                mul(g, damp_w, out=s)
                addg(buf, s, out=buf)
        if nesterov:
            mul(buf, momentum, out=s)
            addg(s, g, out=s)
            mul(s, -lr, out=s)
        else:
            mul(buf, -lr, out=s)
    else:
        mul(g, lr if neg else -lr, out=s)
    add(p, s, out=p)


# The CUDA halves: the same update in one pass per parameter; ``d`` is the effective gradient (maximize flips it,
# then L2 decay adds ``wd·θ``), ``nlr`` is ``-lr``.
SGD_BODY = """
T d = neg ? -g : g;
if (wd != (T)0) d = p * wd + d;
p = p + d * nlr;
"""
SGD_MOMENTUM_BODY = """
T d = neg ? -g : g;
if (wd != (T)0) d = p * wd + d;
if (init) buf = d; else buf = buf * momentum + d * damp_w;
d = nesterov ? buf * momentum + d : buf;
p = p + d * nlr;
"""
_SGD = ElementwiseSpec("optim_sgd", "T g, T wd, T nlr, bool neg", "T p", SGD_BODY)
_SGD_MOMENTUM = ElementwiseSpec(
    "optim_sgd_momentum",
    "T g, T wd, T nlr, T momentum, T damp_w, bool neg, bool nesterov, bool init",
    "T p, T buf",
    SGD_MOMENTUM_BODY,
)
CUDA_KERNELS = (_SGD, _SGD_MOMENTUM)  # compile-checked by tests/device/test_optim_kernels_compile.py


def _sgd_fused(xp, p, g, buf, wd, neg, lr, momentum, damp_w, nesterov, init):
    """``_sgd_kernel`` as one CuPy ``ElementwiseKernel`` launch (the CUDA half)."""
    if g.dtype != p.dtype:
        g = g.astype(p.dtype)
    if buf is None:
        _SGD(xp)(g, wd, -lr, neg, p)
    else:
        _SGD_MOMENTUM(xp)(g, wd, -lr, momentum, damp_w, neg, nesterov, init, p, buf)


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
        differentiable: bool = False,
        fused: bool | None = None,
    ) -> None:
        _check_differentiable(differentiable)
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
        with ignore_float_errors():
            for group in self.param_groups:
                lr = float(group["lr"])
                momentum = float(group["momentum"])
                damp_w = 1.0 - float(group["dampening"])
                wd = float(group["weight_decay"])
                nesterov = bool(group["nesterov"])
                neg = bool(group["maximize"])
                n_scratch = 2 if wd else 1
                for p, grad in self._with_grads(group):
                    if momentum != 0:
                        state = self.state[p]
                        buf = state.get("momentum_buffer")
                        init = buf is None
                        if init:
                            buf = state["momentum_buffer"] = self._zeros_like(p)
                        consts = (wd, neg, lr, momentum, damp_w, nesterov, init)
                        self._apply(_sgd_kernel, p, grad, (buf._data,), n_scratch, consts, _sgd_fused)
                    else:
                        consts = (wd, neg, lr, momentum, damp_w, False, False)
                        self._apply(_sgd_kernel, p, grad, (None,), n_scratch, consts, _sgd_fused)
        return loss
