"""Adagrad (``torch.optim.Adagrad``), with learning-rate decay and weight decay."""

from __future__ import annotations

from ..backend.device import ignore_float_errors
from ..ops._fused import ElementwiseSpec
from ._kernel_parts import l2_grad
from .optimizer import Optimizer, _check_differentiable, _check_hyper

__all__ = ["Adagrad"]


def _adagrad_kernel(xp, p, g, acc, s, s2, wd, neg, clr, eps):
    """One Adagrad update in place with ``xp`` ufuncs: ``Σ ← Σ + g²``, ``θ ← θ - clr·g/(sqrt(Σ) + eps)``."""
    add, mul, div, sqrt = xp.add, xp.multiply, xp.divide, xp.sqrt
    g, neg = l2_grad(xp, p, g, s2, wd, neg)
    mul(g, g, out=s)
    add(acc, s, out=acc)
    sqrt(acc, out=s)
    add(s, eps, out=s)
    div(g, s, out=s)
    mul(s, clr if neg else -clr, out=s)
    add(p, s, out=p)


# The CUDA half: the same update in one pass per parameter; ``d`` is the effective gradient (maximize flips it,
# then L2 decay adds ``wd·θ``), ``nclr`` is minus this step's learning rate.
ADAGRAD_BODY = """
T d = neg ? -g : g;
if (wd != (T)0) d = p * wd + d;
acc = acc + d * d;
p = p + (d / (sqrt(acc) + eps)) * nclr;
"""
_ADAGRAD = ElementwiseSpec("optim_adagrad", "T g, T wd, T nclr, T eps, bool neg", "T p, T acc", ADAGRAD_BODY)
CUDA_KERNELS = (_ADAGRAD,)  # compile-checked by tests/device/test_optim_kernels_compile.py


def _adagrad_fused(xp, p, g, acc, wd, neg, clr, eps):
    """``_adagrad_kernel`` as one CuPy ``ElementwiseKernel`` launch (the CUDA half)."""
    if g.dtype != p.dtype:
        g = g.astype(p.dtype)
    _ADAGRAD(xp)(g, wd, -clr, eps, neg, p, acc)


class Adagrad(Optimizer):
    """Adagrad, step for step as ``torch.optim.Adagrad`` (its for-loop implementation).

    The accumulator starts at ``initial_accumulator_value`` (state is created
    for every parameter at construction, as in PyTorch); the learning rate at
    step t is ``lr / (1 + (t - 1)·lr_decay)``.
    """

    _param_state_keys = ("sum",)

    def __init__(
        self,
        params,
        lr: float = 1e-2,
        lr_decay: float = 0,
        weight_decay: float = 0,
        initial_accumulator_value: float = 0,
        eps: float = 1e-10,
        foreach: bool | None = None,
        *,
        maximize: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
    ) -> None:
        _check_differentiable(differentiable)
        _check_hyper(lr >= 0.0, "learning rate", lr)
        _check_hyper(lr_decay >= 0.0, "lr_decay value", lr_decay)
        _check_hyper(weight_decay >= 0.0, "weight_decay value", weight_decay)
        _check_hyper(initial_accumulator_value >= 0.0, "initial_accumulator_value value", initial_accumulator_value)
        _check_hyper(eps >= 0.0, "epsilon value", eps)
        defaults = {
            "lr": lr,
            "lr_decay": lr_decay,
            "eps": eps,
            "weight_decay": weight_decay,
            "initial_accumulator_value": initial_accumulator_value,
            "maximize": maximize,
        }
        super().__init__(params, defaults)
        for group in self.param_groups:
            for p in group["params"]:
                self._init_state(p)

    def _init_state(self, p) -> dict:
        state = self.state[p]
        if len(state) == 0:
            state["step"] = self._new_step()
            state["sum"] = self._zeros_like(p, float(self.defaults["initial_accumulator_value"]))
        return state

    def step(self, closure=None):
        """Perform one optimization step; ``closure`` (optional) re-evaluates the model and returns the loss."""
        loss = self._call_closure(closure)
        with ignore_float_errors():
            for group in self.param_groups:
                lr = float(group["lr"])
                lr_decay = float(group["lr_decay"])
                eps = float(group["eps"])
                wd = float(group["weight_decay"])
                neg = bool(group["maximize"])
                n_scratch = 2 if wd else 1
                for p, grad in self._with_grads(group):
                    state = self._init_state(p)
                    step = self._count_step(state)
                    clr = lr / (1 + (step - 1) * lr_decay)
                    self._apply(
                        _adagrad_kernel, p, grad, (state["sum"]._data,), n_scratch, (wd, neg, clr, eps), _adagrad_fused
                    )
        return loss
