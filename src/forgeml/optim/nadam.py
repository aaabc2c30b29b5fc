"""NAdam (``torch.optim.NAdam``): Adam with Nesterov momentum and momentum decay."""

from __future__ import annotations

from ..backend.device import HOST_XP, ignore_float_errors
from ..tensor import Tensor
from ._hyper import adam_group, check_adam_hyper, split_weight_decay
from .adam import _adam_moments
from .optimizer import Optimizer, _as_array, _check_hyper, _scalar_dtype

__all__ = ["NAdam"]


def _nadam_kernel(xp, p, g, m, v, s, s2, decay, wd, neg, w1, b2, w2, bc2, eps, cg, cm):
    """One NAdam update in place (``s2`` is always given).

    Adam's moments, ``denom = sqrt(v/(1-β2^t)) + eps``, then
    ``θ ← θ + cg·g/denom + cm·m/denom`` with ``cg = -lr(1-μ_t)/(1-Πμ)`` and
    ``cm = -lr·μ_{t+1}/(1-Πμ·μ_{t+1})`` (``neg``: maximize, folded into signs).
    """
    add, mul, div = xp.add, xp.multiply, xp.divide
    g, neg = _adam_moments(xp, p, g, m, v, s, s2, decay, wd, neg, w1, b2, w2)
    div(v, bc2, out=s)
    xp.sqrt(s, out=s)
    add(s, eps, out=s)  # denom
    div(g, s, out=s2)  # in place when g is s2
    mul(s2, -cg if neg else cg, out=s2)
    add(p, s2, out=p)
    div(m, s, out=s2)
    mul(s2, cm, out=s2)
    add(p, s2, out=p)


class NAdam(Optimizer):
    """NAdam, step for step as ``torch.optim.NAdam`` (its for-loop implementation).

    The momentum coefficient at step t is ``μ_t = β1(1 - 0.5·0.96^(t·momentum_decay))``;
    the state keeps their running product ``mu_product`` (a CPU scalar, as in
    PyTorch). ``weight_decay`` is L2 decay unless ``decoupled_weight_decay=True``.
    """

    _param_state_keys = ("exp_avg", "exp_avg_sq")

    def __init__(
        self,
        params,
        lr: float = 2e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        momentum_decay: float = 4e-3,
        decoupled_weight_decay: bool = False,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        capturable: bool = False,
        differentiable: bool = False,
    ) -> None:
        betas = check_adam_hyper(differentiable, lr, eps, betas, weight_decay)
        _check_hyper(momentum_decay >= 0.0, "momentum_decay value", momentum_decay)
        defaults = {
            "lr": lr,
            "betas": betas,
            "eps": eps,
            "weight_decay": weight_decay,
            "momentum_decay": momentum_decay,
            "decoupled_weight_decay": decoupled_weight_decay,
            "maximize": maximize,
        }
        super().__init__(params, defaults)

    def _load_value(self, param, index, key, value):
        if key == "mu_product":  # a CPU scalar that keeps its own dtype, like ``step``
            array = _as_array(value)
            if array is None:
                array = HOST_XP.asarray(float(value), dtype=_scalar_dtype())
            return Tensor._make(HOST_XP.array(array, copy=True), False, None)
        return super()._load_value(param, index, key, value)

    def step(self, closure=None):
        """Perform one optimization step; ``closure`` (optional) re-evaluates the model and returns the loss."""
        loss = self._call_closure(closure)
        with ignore_float_errors():
            for group in self.param_groups:
                lr, beta1, beta2, eps, wd, neg = adam_group(group)
                momentum_decay = float(group["momentum_decay"])
                decay, l2 = split_weight_decay(group, lr, wd)
                for p, grad in self._with_grads(group):
                    state = self.state[p]
                    if len(state) == 0:
                        state["step"] = self._new_step()
                        state["mu_product"] = Tensor._make(HOST_XP.ones((), dtype=_scalar_dtype()), False, None)
                        state["exp_avg"] = self._zeros_like(p)
                        state["exp_avg_sq"] = self._zeros_like(p)
                    step = self._count_step(state)
                    mu = beta1 * (1.0 - 0.5 * (0.96 ** (step * momentum_decay)))
                    mu_next = beta1 * (1.0 - 0.5 * (0.96 ** ((step + 1) * momentum_decay)))
                    mu_product = state["mu_product"]._data
                    mu_product *= mu  # in the counter's own dtype (float32 by default), as PyTorch does
                    mu_prod = float(mu_product)
                    cg = -lr * (1.0 - mu) / (1.0 - mu_prod)
                    cm = -lr * mu_next / (1.0 - mu_prod * mu_next)
                    buffers = (state["exp_avg"]._data, state["exp_avg_sq"]._data)
                    consts = (decay, l2, neg, 1.0 - beta1, beta2, 1.0 - beta2, 1 - beta2**step, eps, cg, cm)
                    self._apply(_nadam_kernel, p, grad, buffers, 2, consts)
        return loss
