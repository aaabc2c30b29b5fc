"""``Parameter``: a tensor that a ``Module`` registers as one of its learnable weights."""

from __future__ import annotations

from ..backend.device import array_module, as_device, is_array, to_device, to_host
from ..backend.dtypes import get_default_dtype
from ..tensor import Tensor, _init_slots

__all__ = ["Parameter"]


class Parameter(Tensor):
    """A leaf tensor that requires grad (by default) and is found by ``Module.parameters()``.

    ``Parameter(t)`` shares ``t``'s storage, as in PyTorch.
    """

    __slots__ = ()

    def __init__(self, data=None, requires_grad: bool = True) -> None:
        if data is None:
            array = array_module(None).empty((0,), dtype=get_default_dtype().numpy)
        elif isinstance(data, Tensor):
            array = data._data
        elif is_array(data):
            array = data
        else:
            raise TypeError(f"Parameter expects a Tensor or an array, got {type(data).__name__}")
        _init_slots(self, array, False, None)
        if requires_grad:
            self.requires_grad_(True)

    def __repr__(self) -> str:
        return "Parameter containing:\n" + super().__repr__()

    def __reduce_ex__(self, protocol):
        return (_rebuild_parameter, (to_host(self._data), self._requires_grad, str(self.device)))

    def __deepcopy__(self, memo):
        result = Parameter(self._data.copy(), self._requires_grad)
        if self._grad is not None:
            result._grad = Tensor._make(self._grad._data.copy(), False, None)
        memo[id(self)] = result
        return result


def _rebuild_parameter(data, requires_grad, device="cpu"):
    return Parameter(to_device(data, as_device(device)) if device != "cpu" else data, requires_grad)
