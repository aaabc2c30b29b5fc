"""``Optimizer``: the base class of every optimizer, as in ``torch.optim.Optimizer``.

An optimizer holds ``param_groups`` (a list of dicts: ``"params"`` plus the
hyper-parameters of that group), ``defaults`` and ``state`` (a dict keyed by
parameter). ``state_dict()`` uses PyTorch's layout: state keyed by the integer
index of each parameter, groups with ``"params"`` as lists of those indices.

State lives on each parameter's device (``step`` counters are CPU tensors, as
in PyTorch). Updates run in place on the parameters' arrays through update
kernels with three halves: on the CPU a blocked NumPy path
(:mod:`._cpu_kernels`: cache-sized blocks, one shared scratch block per dtype);
on CuPy a fused ``ElementwiseKernel`` per parameter where the optimizer has
one (Adam/AdamW, SGD); elsewhere the same kernel function with the device's
ufuncs on whole arrays.
"""

from __future__ import annotations

import copy
import warnings
from collections import defaultdict
from itertools import chain

from ..autograd.grad_mode import enable_grad
from ..backend.convert import as_array
from ..backend.device import HOST_ARRAY, HOST_XP, device_of, is_array, is_cupy, namespace_of, to_device, to_host
from ..backend.dtypes import float32, float64, get_default_dtype
from ..tensor import Tensor
from . import _cpu_kernels

__all__ = ["Optimizer", "required"]


class _RequiredParameter:
    """Singleton marking a hyper-parameter that every param group must give (``lr`` in a custom optimizer)."""

    def __repr__(self) -> str:
        return "<required parameter>"


required = _RequiredParameter()


def _typename(obj) -> str:
    cls = type(obj)
    module = cls.__module__
    if module in (None, "builtins"):
        return cls.__qualname__
    if module.startswith("forgeml"):
        module = "forgeml"
    return f"{module}.{cls.__qualname__}"


def _as_array(value):
    """The array behind a state value (ForgeML tensor, NumPy/CuPy array or scalar, torch tensor), or None."""
    if isinstance(value, Tensor):
        return value._data
    if is_array(value):
        return value
    if hasattr(value, "detach") and hasattr(value, "numpy") and hasattr(value, "cpu"):  # a torch tensor
        return value.detach().cpu().numpy()
    if hasattr(value, "dtype") and hasattr(value, "shape"):  # a NumPy scalar
        return as_array(value)
    return None


def _scalar_dtype():
    """The dtype of the ``step`` counters: float64 when that is the default dtype, else float32 (PyTorch's rule)."""
    return (float64 if get_default_dtype() is float64 else float32).numpy


def _check_hyper(ok: bool, what: str, value) -> None:
    if not ok:
        raise ValueError(f"Invalid {what}: {value}")


def _check_differentiable(differentiable: bool) -> None:
    """PyTorch's ``foreach``/``fused``/``capturable`` only choose its kernels: accepted and ignored here.
    ``differentiable=True`` (autograd through the step) is not supported."""
    if differentiable:
        raise NotImplementedError("differentiable=True (autograd through the optimizer step) is not supported")


class Optimizer:
    """Base class for optimizers.

    Args:
        params: an iterable of tensors, of ``(name, tensor)`` pairs, or of dicts
            (parameter groups: ``{"params": [...], "lr": ...}`` with per-group options).
        defaults: the default value of every hyper-parameter (used by groups that do not set it).

    Subclasses implement ``step()``; keys listed in ``_param_state_keys`` are
    state buffers with the parameter's shape (checked by ``load_state_dict``).
    """

    _param_state_keys: tuple[str, ...] = ()

    def __init__(self, params, defaults: dict) -> None:
        self.defaults = defaults
        if isinstance(params, Tensor):
            raise TypeError(
                "params argument given to the optimizer should be an iterable of Tensors or dicts, but got "
                + _typename(params)
            )
        if isinstance(params, dict):
            raise TypeError(
                "params argument given to the optimizer should be an iterable of Tensors or dicts, but got a dict; "
                "wrap a single parameter group in a list: [{'params': ...}]"
            )
        if isinstance(params, (set, frozenset)):
            raise TypeError(
                "optimizer parameters need to be organized in ordered collections, but the ordering of tensors in "
                "sets will change between runs. Please use a list instead."
            )
        self.state: defaultdict = defaultdict(dict)
        self.param_groups: list[dict] = []
        self._scratch: dict = {}

        param_groups = list(params)
        if len(param_groups) == 0:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(param_groups[0], dict):
            param_groups = [{"params": param_groups}]
        for param_group in param_groups:
            self.add_param_group(param_group)

    # -- pickling and printing ----------------------------------------------
    def __getstate__(self) -> dict:
        return {"defaults": self.defaults, "state": self.state, "param_groups": self.param_groups}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._scratch = {}

    def __repr__(self) -> str:
        text = type(self).__name__ + " ("
        for i, group in enumerate(self.param_groups):
            text += f"\nParameter Group {i}\n"
            for key in sorted(group):
                if key != "params":
                    text += f"    {key}: {group[key]}\n"
        return text + ")"

    # -- groups -------------------------------------------------------------
    def add_param_group(self, param_group: dict) -> None:
        """Add a group of parameters (with its own options) to ``param_groups``, e.g. when unfreezing layers."""
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, but got {_typename(param_group)}")
        if "params" not in param_group:
            raise ValueError("param_group must have a 'params' entry (the tensors it holds)")
        params = param_group["params"]
        if isinstance(params, Tensor):
            params = [params]
        elif isinstance(params, (set, frozenset)):
            raise TypeError(
                "optimizer parameters need to be organized in ordered collections, but the ordering of tensors in "
                "sets will change between runs. Please use a list instead."
            )
        else:
            params = list(params)

        tensors, names = [], []
        for param in params:
            if isinstance(param, tuple) and len(param) == 2 and isinstance(param[0], str):
                names.append(param[0])
                tensors.append(param[1])
            else:
                tensors.append(param)
        if names and len(names) != len(tensors):
            raise ValueError("all optimizer params should be with/without names. Some param names are missing")
        param_group["params"] = tensors
        if names:
            param_group["param_names"] = names

        if not tensors:
            raise ValueError("optimizer got an empty parameter list (in a parameter group)")
        for param in tensors:
            if not isinstance(param, Tensor):
                raise TypeError("optimizer can only optimize Tensors, but one of the params is " + _typename(param))
            if not (param.is_leaf or param.retains_grad):
                raise ValueError("can't optimize a non-leaf Tensor")

        for name, default in self.defaults.items():
            if default is required and name not in param_group:
                raise ValueError(f"parameter group didn't specify a value of required optimization parameter {name}")
            param_group.setdefault(name, default)

        if len({id(p) for p in tensors}) != len(tensors):
            warnings.warn(
                "optimizer contains a parameter group with duplicate parameters; in future, this will cause an "
                "error; see github.com/pytorch/pytorch/issues/40967 for more information",
                stacklevel=3,
            )

        seen = set()
        for group in self.param_groups:
            seen.update(id(p) for p in group["params"])
            if ("param_names" in param_group) != ("param_names" in group):
                which = "with names" if "param_names" in param_group else "without names"
                raise ValueError(
                    "all optimizer param groups should be with/without names. "
                    f"cannot add param group {which} to the optimizer"
                )
        if any(id(p) in seen for p in tensors):
            raise ValueError("some parameters appear in more than one parameter group")
        self.param_groups.append(param_group)

    # -- gradients ----------------------------------------------------------
    def zero_grad(self, set_to_none: bool = True) -> None:
        """Reset the gradient of every optimized tensor: to None (the default), or to zeros in place."""
        for group in self.param_groups:
            for p in group["params"]:
                grad = p.grad
                if grad is None:
                    continue
                if set_to_none:
                    p.grad = None
                else:
                    if grad.grad_fn is not None:
                        grad.detach_()
                    else:
                        grad.requires_grad_(False)
                    grad._data[...] = 0
                    grad._bump_version()

    def step(self, closure=None):
        """Perform one optimization step; ``closure`` (optional) re-evaluates the model and returns the loss."""
        raise NotImplementedError

    @staticmethod
    def _call_closure(closure):
        if closure is None:
            return None
        with enable_grad():
            return closure()

    # -- state dict ---------------------------------------------------------
    def state_dict(self) -> dict:
        """The optimizer's state in PyTorch's layout: ``{"state": {index: {...}}, "param_groups": [...]}``.

        Parameters are replaced by their index (in group order); state tensors
        are copies, so the dict is a snapshot that later steps do not change.
        """
        mapping: dict[int, int] = {}
        start = 0

        def pack(group):
            nonlocal start
            packed = {k: v for k, v in group.items() if k != "params"}
            for i, p in enumerate(group["params"], start):
                mapping.setdefault(id(p), i)
            packed["params"] = [mapping[id(p)] for p in group["params"]]
            start += len(packed["params"])
            return packed

        groups = [pack(g) for g in self.param_groups]
        state = {}
        for key, value in self.state.items():
            index = mapping[id(key)] if isinstance(key, Tensor) and id(key) in mapping else key
            state[index] = {k: _snapshot(v) for k, v in value.items()} if isinstance(value, dict) else value
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict) -> None:
        """Load a ``state_dict()`` (ForgeML's or PyTorch's layout; tensors may be ForgeML, NumPy or torch).

        Values are copied into fresh buffers cast to each parameter's dtype and
        device (``step`` counters keep theirs), so training resumes exactly where
        the saved optimizer stopped.
        """
        if not isinstance(state_dict, dict) or "state" not in state_dict or "param_groups" not in state_dict:
            raise ValueError("optimizer state_dict must be a dict with 'state' and 'param_groups' entries")
        groups = self.param_groups
        saved_groups = copy.deepcopy(state_dict["param_groups"])
        if len(groups) != len(saved_groups):
            raise ValueError(
                "loaded state dict has a different number of parameter groups "
                f"({len(saved_groups)}, the optimizer has {len(groups)})"
            )
        for i, (g, s) in enumerate(zip(groups, saved_groups)):
            if len(g["params"]) != len(s["params"]):
                raise ValueError(
                    "loaded state dict contains a parameter group that doesn't match the size of optimizer's group "
                    f"(group {i}: {len(s['params'])} saved parameters, {len(g['params'])} in the optimizer)"
                )
        id_map = dict(
            zip(
                chain.from_iterable(s["params"] for s in saved_groups),
                chain.from_iterable(g["params"] for g in groups),
            )
        )
        state: defaultdict = defaultdict(dict)
        for key, value in state_dict["state"].items():
            if key in id_map:
                param = id_map[key]
                if not isinstance(value, dict):
                    raise ValueError(f"the state of parameter {key} should be a dict, got {_typename(value)}")
                state[param] = {k: self._load_value(param, key, k, v) for k, v in value.items()}
            else:
                state[key] = value
        new_groups = []
        for group, saved in zip(groups, saved_groups):
            saved["params"] = group["params"]
            if "param_names" in group and "param_names" not in saved:
                saved["param_names"] = group["param_names"]
            for name, default in self.defaults.items():
                saved.setdefault(name, default)
            new_groups.append(saved)
        self.state = state
        self.param_groups = new_groups
        self._scratch = {}
        self._after_load()

    def _after_load(self) -> None:
        """Hook for subclasses: fix up groups after ``load_state_dict`` (AdamW forces decoupled decay)."""

    def _load_value(self, param, index, key, value):
        array = _as_array(value)
        if array is None:
            if key == "step" and isinstance(value, (int, float)):
                return Tensor._make(HOST_XP.asarray(float(value), dtype=_scalar_dtype()), False, None)
            return copy.deepcopy(value)
        if key == "step":  # counters stay on the CPU, whatever device saved them
            return Tensor._make(to_host(array).copy(), False, None)
        target = param._data
        if key in self._param_state_keys and tuple(array.shape) != tuple(target.shape):
            raise ValueError(
                f"loaded state dict has {key!r} of shape {list(array.shape)} for parameter {index}, "
                f"whose shape is {list(target.shape)}"
            )
        dtype = target.dtype if target.dtype.kind == "f" else array.dtype
        if type(target) is HOST_ARRAY:
            out = _cpu_kernels.aligned_copy(to_host(array), dtype)
        else:
            out = to_device(array, device_of(target)).astype(dtype, order="C", copy=True)
        return Tensor._make(out, False, None)

    # -- helpers for subclasses ---------------------------------------------
    @staticmethod
    def _zeros_like(param, fill: float = 0.0) -> Tensor:
        """A state buffer shaped like ``param``: C-contiguous, same dtype and device, filled with ``fill``."""
        data = param._data
        if type(data) is HOST_ARRAY:
            array = _cpu_kernels.aligned_full(data.shape, data.dtype, fill)
        else:
            array = namespace_of(data).full(data.shape, fill, dtype=data.dtype)
        return Tensor._make(array, False, None)

    @staticmethod
    def _new_step() -> Tensor:
        """A ``step`` counter: a 0-d CPU tensor, whatever the parameter's device (as in PyTorch)."""
        return Tensor._make(HOST_XP.zeros((), dtype=_scalar_dtype()), False, None)

    @staticmethod
    def _with_grads(group: dict):
        """``(param, grad)`` for each parameter of ``group`` that has a gradient, in order."""
        for p in group["params"]:
            grad = p.grad
            if grad is not None:
                yield p, grad

    def _state_of(self, param: Tensor, *buffers: str) -> dict:
        """The state of ``param``; on its first step a ``step`` counter and the zero ``buffers`` named, in order."""
        state = self.state[param]
        if len(state) == 0:
            state["step"] = self._new_step()
            for key in buffers:
                state[key] = self._zeros_like(param)
        return state

    @staticmethod
    def _count_step(state: dict) -> float:
        """Add one to the ``step`` counter of ``state``, in place in its own dtype (as PyTorch), and return it."""
        step_t = state["step"]._data
        step_t += 1
        return float(step_t)

    def _apply(self, kernel, param: Tensor, grad: Tensor, buffers, n_scratch: int, consts, fused=None) -> None:
        """Run one update kernel over the parameter, in place, and bump its version.

        ``kernel(xp, p, g, *buffers, s, s2, *consts)`` is the portable body:
        ``buffers`` are state arrays (or None) shaped like the parameter; ``s``
        and ``s2`` are scratch arrays (``s2`` is None unless ``n_scratch`` is 2).
        C-contiguous NumPy parameters are processed in cache-sized blocks of
        their flat views (:mod:`._cpu_kernels`). On CuPy, ``fused(xp, p, g,
        *buffers, *consts)`` (a fused CUDA kernel) runs instead when given; other
        layouts and namespaces get one call of ``kernel`` on the whole arrays.
        """
        p = param._data
        g = grad._data
        if (
            type(p) is HOST_ARRAY
            and type(g) is HOST_ARRAY
            and p.flags.c_contiguous
            and all(b is None or (type(b) is HOST_ARRAY and b.flags.c_contiguous) for b in buffers)
        ):
            _cpu_kernels.blocked_update(self._scratch, kernel, p, g, buffers, n_scratch, consts)
        else:
            xp = _namespace_of_update(p, g, buffers)
            if fused is not None and is_cupy(xp):
                fused(xp, p, g, *buffers, *consts)
            else:
                s = xp.empty(p.shape, dtype=p.dtype)
                s2 = xp.empty(p.shape, dtype=p.dtype) if n_scratch > 1 else None
                kernel(xp, p, g, *buffers, s, s2, *consts)
        param._bump_version()


def _namespace_of_update(p, g, buffers):
    """The namespace that updates ``p``; raises when its gradient or a state buffer is on another device."""
    device = device_of(p)
    if device_of(g) != device:
        raise RuntimeError(
            f"a parameter on {device} has its gradient on {device_of(g)}: the gradient must be on the "
            "parameter's device"
        )
    for b in buffers:
        if b is not None and device_of(b) != device:
            raise RuntimeError(
                f"optimizer state on {device_of(b)} for a parameter on {device}: create the optimizer after "
                "moving the model to its device, or load the optimizer's state_dict again (it moves the state)"
            )
    return namespace_of(p)


def _snapshot(value):
    if isinstance(value, Tensor):
        return Tensor._make(value._data.copy(), False, None)
    if is_array(value):
        return value.copy()
    return copy.deepcopy(value)
