"""Module full backward hooks (``register_full_backward_hook`` / ``register_full_backward_pre_hook``).

As in PyTorch, each call of a hooked module wraps its positional tensor inputs, and then its outputs, in one
identity op each. In backward the outputs' identity sees the gradients w.r.t. the module's outputs
(``grad_output``: pre-hooks run there and may replace them); the inputs' identity sees the gradients
w.r.t. the module's inputs (``grad_input``: the hooks run there and may replace them).
"""

from __future__ import annotations

from ..autograd.function import Function
from ..autograd.grad_mode import is_grad_enabled
from ..tensor import Tensor

__all__ = ["BackwardHook"]


class BackwardHookFunction(Function):
    """Identity on any number of tensors; its backward hands the gradients to a :class:`BackwardHook`."""

    @staticmethod
    def forward(ctx, state, role, *tensors):
        ctx.state, ctx.role = state, role
        outs = tuple(t._alias() for t in tensors)
        ctx.mark_non_differentiable(*(o for o, t in zip(outs, tensors) if not t.requires_grad))
        return outs

    @staticmethod
    def backward(ctx, *grads):
        handler = ctx.state.on_grad_outputs if ctx.role == "output" else ctx.state.on_grad_inputs
        return (None, None, *handler(grads))


def _tensor_positions(values) -> list[int]:
    return [i for i, v in enumerate(values) if isinstance(v, Tensor)]


class BackwardHook:
    """The backward-hook state of one call of ``module``."""

    def __init__(self, module, hooks: list, pre_hooks: list) -> None:
        self.module, self.hooks, self.pre_hooks = module, list(hooks), list(pre_hooks)
        self.n_inputs = 0
        self.input_positions = None  # None: no input requires grad, the hooks run at the outputs' node
        self.grad_outputs = None

    def _pack(self, positions, grads, n):
        packed = [None] * n
        for i, g in zip(positions, grads):
            packed[i] = g
        return tuple(packed)

    def setup_input_hook(self, args: tuple) -> tuple:
        self.n_inputs = len(args)
        positions = _tensor_positions(args)
        tensors = [args[i] for i in positions]
        if not (is_grad_enabled() and any(t.requires_grad for t in tensors)):
            return args
        self.input_positions = positions
        self.input_requires = [t.requires_grad for t in tensors]
        wrapped = BackwardHookFunction.apply(self, "input", *tensors)
        args = list(args)
        for i, t in zip(positions, wrapped):
            args[i] = t
        return tuple(args)

    def setup_output_hook(self, result):
        single = isinstance(result, Tensor)
        outputs = (result,) if single else result
        if not isinstance(outputs, tuple):
            return result  # outputs that are not tensors (dicts, MaskedBatch...) are left unhooked
        positions = _tensor_positions(outputs)
        tensors = [outputs[i] for i in positions]
        if not (is_grad_enabled() and any(t.requires_grad for t in tensors)):
            return result
        self.output_positions, self.n_outputs = positions, len(outputs)
        self.output_requires = [t.requires_grad for t in tensors]
        wrapped = BackwardHookFunction.apply(self, "output", *tensors)
        outputs = list(outputs)
        for i, t in zip(positions, wrapped):
            outputs[i] = t
        return outputs[0] if single else tuple(outputs)

    def on_grad_outputs(self, grads):
        grads = [g if need else None for g, need in zip(grads, self.output_requires)]
        self.grad_outputs = self._pack(self.output_positions, grads, self.n_outputs)
        for hook in self.pre_hooks:
            new = hook(self.module, self.grad_outputs)
            if new is None:
                continue
            new = tuple(new) if isinstance(new, (tuple, list)) else (new,)
            if len(new) != len(self.grad_outputs):
                raise RuntimeError(
                    f"backward pre hook returned an invalid number of grad_output, got {len(new)}, "
                    f"but expected {len(self.grad_outputs)}"
                )
            self.grad_outputs = new
        result = tuple(self.grad_outputs[i] for i in self.output_positions)
        if self.input_positions is None:  # no input requires grad: the hooks see grad_input of all None
            grad_inputs = (None,) * self.n_inputs
            for hook in self.hooks:
                res = hook(self.module, grad_inputs, self.grad_outputs)
                if res is not None and not (isinstance(res, tuple) and all(r is None for r in res)):
                    raise RuntimeError(
                        "backward hook for a module where no input requires gradient should always return None "
                        "or None for all gradients"
                    )
            self.grad_outputs = None
        return result

    def on_grad_inputs(self, grads):
        if self.grad_outputs is None:  # the outputs' gradient did not flow through this module
            return grads
        grads = [g if need else None for g, need in zip(grads, self.input_requires)]
        grad_inputs = self._pack(self.input_positions, grads, self.n_inputs)
        for hook in self.hooks:
            new = hook(self.module, grad_inputs, self.grad_outputs)
            if new is None:
                continue
            new = tuple(new) if isinstance(new, (tuple, list)) else (new,)
            if len(new) != len(grad_inputs):
                raise RuntimeError(
                    f"backward hook returned an invalid number of grad_input, got {len(new)}, "
                    f"but expected {len(grad_inputs)}"
                )
            grad_inputs = new
        self.grad_outputs = None
        return tuple(grad_inputs[i] for i in self.input_positions)
