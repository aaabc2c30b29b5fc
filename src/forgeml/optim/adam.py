"""Adam and AdamW (``torch.optim.Adam`` / ``torch.optim.AdamW``), with AMSGrad and maximize."""

from __future__ import annotations

from ..backend.device import ignore_float_errors
from ..ops._fused import ElementwiseSpec
from ._hyper import adam_group, check_adam_hyper, split_weight_decay
from ._kernel_parts import l2_grad, lerp_moment
from .optimizer import Optimizer, _check_differentiable

__all__ = ["Adam", "AdamW"]


def _adam_moments(xp, p, g, m, v, s, s2, decay, wd, neg, w1, b2, w2):
    """Adam's first half in place: AdamW's decay, L2 decay into the gradient, ``m ← m + (1-β1)(g - m)`` and
    ``v ← β2 v + (1-β2) g²``. Returns the effective gradient and whether it is still to be negated (maximize).
    """
    mul = xp.multiply
    if decay != 1.0:  # AdamW: θ ← θ(1 - lr·λ) before everything else
        mul(p, decay, out=p)
    g, neg = l2_grad(xp, p, g, s2, wd, neg)  # Adam: L2 decay into the gradient, g ← g + λθ
    lerp_moment(xp, m, g, s, neg, w1)
    mul(g, w2, out=s)
    mul(s, g, out=s)
    mul(v, b2, out=v)
    xp.add(v, s, out=v)
    return g, neg


def _adam_kernel(xp, p, g, m, v, vmax, s, s2, decay, wd, neg, w1, b2, w2, c1, c2, update):
    """One Adam update in place with ``xp`` ufuncs, 12 passes over memory (13 with AMSGrad).

    ``m ← m + (1-β1)(g - m)``, ``v ← β2 v + (1-β2) g²``, and
    ``θ ← θ - m / (sqrt(v̂) · c1 + c2)``, which is PyTorch's
    ``θ - lr/(1-β1^t) · m / (sqrt(v) / sqrt(1-β2^t) + eps)`` with the scalars folded.
    """
    _adam_moments(xp, p, g, m, v, s, s2, decay, wd, neg, w1, b2, w2)
    if vmax is not None:  # AMSGrad: max over the raw v, bias-corrected below like v
        xp.maximum(vmax, v, out=vmax)
        v = vmax
    if update:
        xp.sqrt(v, out=s)
        xp.multiply(s, c1, out=s)
        xp.add(s, c2, out=s)
        xp.divide(m, s, out=s)
        xp.subtract(p, s, out=p)


# The CUDA half: the same update, scalars folded the same way, in one pass per parameter. ``neg`` flips the
# gradient (maximize); ``decay`` is AdamW's factor (1: none), ``wd`` Adam's L2 coefficient (0: none).
ADAM_IN_PARAMS = "T g, T decay, T wd, T w1, T b2, T w2, T c1, T c2, bool neg, bool update"
ADAM_BODY = """
T gg = neg ? -g : g;
if (decay != (T)1) p = p * decay;
if (wd != (T)0) gg = p * wd + gg;
m = m + (gg - m) * w1;
v = v * b2 + (gg * w2) * gg;
if (update) p = p - m / (sqrt(v) * c1 + c2);
"""
ADAM_AMSGRAD_BODY = """
T gg = neg ? -g : g;
if (decay != (T)1) p = p * decay;
if (wd != (T)0) gg = p * wd + gg;
m = m + (gg - m) * w1;
v = v * b2 + (gg * w2) * gg;
if (v > vmax || v != v) vmax = v;
if (update) p = p - m / (sqrt(vmax) * c1 + c2);
"""
_ADAM = ElementwiseSpec("optim_adam", ADAM_IN_PARAMS, "T p, T m, T v", ADAM_BODY)
_ADAM_AMSGRAD = ElementwiseSpec("optim_adam_amsgrad", ADAM_IN_PARAMS, "T p, T m, T v, T vmax", ADAM_AMSGRAD_BODY)
CUDA_KERNELS = (_ADAM, _ADAM_AMSGRAD)  # compile-checked by tests/device/test_optim_kernels_compile.py


def _adam_fused(xp, p, g, m, v, vmax, decay, wd, neg, w1, b2, w2, c1, c2, update):
    """``_adam_kernel`` as one CuPy ``ElementwiseKernel`` launch (the CUDA half)."""
    if g.dtype != p.dtype:
        g = g.astype(p.dtype)
    if vmax is None:
        _ADAM(xp)(g, decay, wd, w1, b2, w2, c1, c2, neg, update, p, m, v)
    else:
        _ADAM_AMSGRAD(xp)(g, decay, wd, w1, b2, w2, c1, c2, neg, update, p, m, v, vmax)


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
        foreach: bool | None = None,
        maximize: bool = False,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
        decoupled_weight_decay: bool = False,
    ) -> None:
        betas = check_adam_hyper(differentiable, lr, eps, betas, weight_decay)
        defaults = {
            "lr": lr,
            "betas": betas,
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
        with ignore_float_errors():
            for group in self.param_groups:
                lr, beta1, beta2, eps, wd, neg = adam_group(group)
                amsgrad = bool(group["amsgrad"])
                decay, l2 = split_weight_decay(group, lr, wd)
                n_scratch = 2 if l2 else 1
                w1, w2 = 1.0 - beta1, 1.0 - beta2
                for p, grad in self._with_grads(group):
                    state = self._state_of(p, "exp_avg", "exp_avg_sq")
                    if amsgrad and "max_exp_avg_sq" not in state:
                        state["max_exp_avg_sq"] = self._zeros_like(p)
                    step = self._count_step(state)
                    bias_correction1 = 1 - beta1**step
                    bias_correction2 = 1 - beta2**step
                    step_size = lr / bias_correction1
                    bias_correction2_sqrt = bias_correction2**0.5
                    update = step_size != 0
                    c1 = 1.0 / (bias_correction2_sqrt * step_size) if update else 0.0
                    c2 = eps / step_size if update else 0.0
                    vmax = state["max_exp_avg_sq"]._data if amsgrad else None
                    buffers = (state["exp_avg"]._data, state["exp_avg_sq"]._data, vmax)
                    consts = (decay, l2, neg, w1, beta2, w2, c1, c2, update)
                    self._apply(_adam_kernel, p, grad, buffers, n_scratch, consts, _adam_fused)
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
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
    ) -> None:
        _check_differentiable(differentiable)
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize=maximize, decoupled_weight_decay=True)

    def _after_load(self) -> None:
        for group in self.param_groups:
            group["decoupled_weight_decay"] = True
