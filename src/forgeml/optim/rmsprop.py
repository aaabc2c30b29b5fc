"""RMSprop (``torch.optim.RMSprop``), with momentum, centering and weight decay."""

from __future__ import annotations

from ..backend.device import ignore_float_errors
from ..ops._fused import ElementwiseSpec
from ._kernel_parts import l2_grad, lerp_moment
from .optimizer import Optimizer, _check_differentiable, _check_hyper

__all__ = ["RMSprop"]


def _rmsprop_kernel(xp, p, g, sq, ga, buf, s, s2, wd, neg, lr, alpha, w, eps, momentum):
    """One RMSprop update in place with ``xp`` ufuncs. ``neg``: maximize, folded into signs (exact)."""
    add, sub, mul, div, sqrt = xp.add, xp.subtract, xp.multiply, xp.divide, xp.sqrt
    g, neg = l2_grad(xp, p, g, s2, wd, neg)
    mul(g, w, out=s)  # v ← alpha v + (1-alpha) g²
    mul(s, g, out=s)
    mul(sq, alpha, out=sq)
    add(sq, s, out=sq)
    if ga is not None:  # centered: avg = sqrt(v - gbar²) with gbar ← gbar + (1-alpha)(g - gbar)
        lerp_moment(xp, ga, g, s, neg, w)
        mul(ga, ga, out=s)
        sub(sq, s, out=s)
        sqrt(s, out=s)
    else:
        sqrt(sq, out=s)
    add(s, eps, out=s)
    div(g, s, out=s)  # g / avg (the sign of maximize still pending)
    if buf is not None:
        mul(buf, momentum, out=buf)
        (sub if neg else add)(buf, s, out=buf)
        mul(buf, -lr, out=s)
    else:
        mul(s, lr if neg else -lr, out=s)
    add(p, s, out=p)


# The CUDA halves: the same update in one pass per parameter, one kernel per combination of the optional state
# (centered: ``ga``, momentum: ``buf``). ``d`` is the effective gradient (maximize flips it, then L2 decay adds
# ``wd·θ``), ``nlr`` is ``-lr``, ``w`` is ``1 - alpha``.
RMSPROP_IN_PARAMS = "T g, T wd, T nlr, T alpha, T w, T eps, T momentum, bool neg"
_RMSPROP_HEAD = """
T d = neg ? -g : g;
if (wd != (T)0) d = p * wd + d;
sq = sq * alpha + (d * w) * d;
"""
RMSPROP_BODY = _RMSPROP_HEAD + "p = p + (d / (sqrt(sq) + eps)) * nlr;"
RMSPROP_CENTERED_BODY = (
    _RMSPROP_HEAD
    + """
ga = ga + (d - ga) * w;
p = p + (d / (sqrt(sq - ga * ga) + eps)) * nlr;
"""
)
RMSPROP_MOMENTUM_BODY = (
    _RMSPROP_HEAD
    + """
buf = buf * momentum + d / (sqrt(sq) + eps);
p = p + buf * nlr;
"""
)
RMSPROP_CENTERED_MOMENTUM_BODY = (
    _RMSPROP_HEAD
    + """
ga = ga + (d - ga) * w;
buf = buf * momentum + d / (sqrt(sq - ga * ga) + eps);
p = p + buf * nlr;
"""
)
_RMSPROP = {  # by (centered, momentum)
    (False, False): ElementwiseSpec("optim_rmsprop", RMSPROP_IN_PARAMS, "T p, T sq", RMSPROP_BODY),
    (True, False): ElementwiseSpec(
        "optim_rmsprop_centered", RMSPROP_IN_PARAMS, "T p, T sq, T ga", RMSPROP_CENTERED_BODY
    ),
    (False, True): ElementwiseSpec(
        "optim_rmsprop_momentum", RMSPROP_IN_PARAMS, "T p, T sq, T buf", RMSPROP_MOMENTUM_BODY
    ),
    (True, True): ElementwiseSpec(
        "optim_rmsprop_centered_momentum", RMSPROP_IN_PARAMS, "T p, T sq, T ga, T buf", RMSPROP_CENTERED_MOMENTUM_BODY
    ),
}
CUDA_KERNELS = tuple(_RMSPROP.values())  # compile-checked by tests/device/test_optim_kernels_compile.py


def _rmsprop_fused(xp, p, g, sq, ga, buf, wd, neg, lr, alpha, w, eps, momentum):
    """``_rmsprop_kernel`` as one CuPy ``ElementwiseKernel`` launch (the CUDA half)."""
    if g.dtype != p.dtype:
        g = g.astype(p.dtype)
    outs = [a for a in (p, sq, ga, buf) if a is not None]
    _RMSPROP[ga is not None, buf is not None](xp)(g, wd, -lr, alpha, w, eps, momentum, neg, *outs)


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
        capturable: bool = False,
        foreach: bool | None = None,
        maximize: bool = False,
        differentiable: bool = False,
    ) -> None:
        _check_differentiable(differentiable)
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
        with ignore_float_errors():
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
                for p, grad in self._with_grads(group):
                    state = self._state_of(p, "square_avg")
                    if momentum > 0 and "momentum_buffer" not in state:
                        state["momentum_buffer"] = self._zeros_like(p)
                    if centered and "grad_avg" not in state:
                        state["grad_avg"] = self._zeros_like(p)
                    self._count_step(state)
                    buffers = (
                        state["square_avg"]._data,
                        state["grad_avg"]._data if centered else None,
                        state["momentum_buffer"]._data if momentum > 0 else None,
                    )
                    self._apply(_rmsprop_kernel, p, grad, buffers, n_scratch, consts, _rmsprop_fused)
        return loss
