"""``Optimizer``: the base class of every optimizer, as in ``torch.optim.Optimizer``.

An optimizer holds ``param_groups`` (a list of dicts: ``"params"`` plus the
hyper-parameters of that group), ``defaults`` and ``state`` (a dict keyed by
parameter). ``state_dict()`` uses PyTorch's layout: state keyed by the integer
index of each parameter, groups with ``"params"`` as lists of those indices.

Updates run in place on the parameters' arrays with NumPy ufuncs and ``out=``.
On the CPU a parameter is walked in blocks of ``_BLOCK_BYTES`` per array, so
the dozen passes an update makes over each block stay in the CPU cache, and
the only scratch memory is one block-sized buffer per dtype, shared by all
parameters.
"""

from __future__ import annotations

import copy
import warnings
from collections import defaultdict
from itertools import chain

import numpy as np

from ..autograd.grad_mode import enable_grad
from ..backend.device import array_module, device_of, to_device
from ..backend.dtypes import get_default_dtype
from ..tensor import Tensor

__all__ = ["Optimizer", "required"]

_BLOCK_BYTES = 1 << 17  # 128 KiB per array per block: the arrays of one block fit in L2 together


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
    """The array behind a state value (ForgeML tensor, NumPy array, torch tensor), or None for other values."""
    if isinstance(value, Tensor):
        return value.data
    if isinstance(value, (np.ndarray, np.generic)):
        return np.asarray(value)
    if hasattr(value, "__cuda_array_interface__") and hasattr(value, "dtype"):
        return value
    if hasattr(value, "detach") and hasattr(value, "numpy") and hasattr(value, "cpu"):  # a torch tensor
        return np.asarray(value.detach().cpu().numpy())
    return None


def _scalar_dtype():
    """The dtype of the ``step`` counters: float64 when that is the default dtype, else float32 (PyTorch's rule)."""
    return np.float64 if get_default_dtype().numpy == np.float64 else np.float32


def _aligned_empty(shape, dtype) -> np.ndarray:
    """An uninitialised C-contiguous NumPy array whose data starts on a 64-byte (cache line) boundary."""
    dtype = np.dtype(dtype)
    n = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = np.empty(n + 64, dtype=np.uint8)
    offset = -raw.ctypes.data % 64
    return raw[offset : offset + n].view(dtype).reshape(shape)


def _check_hyper(ok: bool, what: str, value) -> None:
    if not ok:
        raise ValueError(f"Invalid {what}: {value}")


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
                    grad.data[...] = 0
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
                return Tensor._make(np.asarray(float(value), dtype=_scalar_dtype()), False, None)
            return copy.deepcopy(value)
        if key == "step":
            return Tensor._make(np.array(to_device(array, "cpu"), copy=True), False, None)
        target = param.data
        if key in self._param_state_keys and tuple(array.shape) != tuple(target.shape):
            raise ValueError(
                f"loaded state dict has {key!r} of shape {list(array.shape)} for parameter {index}, "
                f"whose shape is {list(target.shape)}"
            )
        array = to_device(array, device_of(target))
        dtype = target.dtype if target.dtype.kind == "f" else array.dtype
        if isinstance(array, np.ndarray):
            out = _aligned_empty(array.shape, dtype)
            out[...] = array
        else:
            out = array_module(device_of(target)).array(array, dtype=dtype, order="C", copy=True)
        return Tensor._make(out, False, None)

    # -- helpers for subclasses ---------------------------------------------
    @staticmethod
    def _zeros_like(param, fill: float = 0.0) -> Tensor:
        """A state buffer shaped like ``param``: C-contiguous, same dtype and device, filled with ``fill``."""
        data = param.data
        if type(data) is np.ndarray:
            array = _aligned_empty(data.shape, data.dtype)
            array.fill(fill)
        else:
            xp = array_module(device_of(data))
            array = xp.full(data.shape, fill, dtype=data.dtype)
        return Tensor._make(array, False, None)

    @staticmethod
    def _new_step() -> Tensor:
        return Tensor._make(np.zeros((), dtype=_scalar_dtype()), False, None)

    def _scratch_for(self, dtype, count: int, size: int):
        """Two flat scratch arrays of ``size`` elements (the second None unless ``count`` is 2).

        They are views of block-sized buffers shared by all parameters of this optimizer.
        """
        bufs = self._scratch.get(dtype)
        if bufs is None or len(bufs) < count or bufs[0].size < size:
            n = max(size, bufs[0].size if bufs else 0)
            bufs = [_aligned_empty((n,), dtype) for _ in range(max(count, len(bufs) if bufs else 0))]
            self._scratch[dtype] = bufs
        return bufs[0][:size], (bufs[1][:size] if count > 1 else None)

    def _apply(self, kernel, param: Tensor, grad: Tensor, buffers, n_scratch: int, consts) -> None:
        """Run ``kernel(p, g, *buffers, s, s2, *consts)`` over the parameter, in place, and bump its version.

        ``buffers`` are state arrays (or None) shaped like the parameter; ``s``
        and ``s2`` are scratch arrays (``s2`` is None unless ``n_scratch`` is 2).
        C-contiguous NumPy parameters are processed in cache-sized blocks of
        their flat views; other layouts and devices get one call on the whole arrays.
        """
        p = param.data
        g = grad.data
        if type(p) is np.ndarray and p.flags.c_contiguous and all(b is None or b.flags.c_contiguous for b in buffers):
            if not g.flags.c_contiguous:
                g = np.ascontiguousarray(g)
            n = p.size
            block = max(_BLOCK_BYTES // p.itemsize, 1)
            fp = p.reshape(-1)
            fg = g.reshape(-1)
            fb = [None if b is None else b.reshape(-1) for b in buffers]
            s, s2 = self._scratch_for(p.dtype, n_scratch, min(n, block))
            if n <= block:
                kernel(fp, fg, *fb, s, s2, *consts)
            else:
                for i in range(0, n, block):
                    j = i + block
                    if j > n:
                        j = n
                        s = s[: j - i]
                        s2 = None if s2 is None else s2[: j - i]
                    kernel(fp[i:j], fg[i:j], *[None if b is None else b[i:j] for b in fb], s, s2, *consts)
        else:
            xp = array_module(device_of(p))
            s = xp.empty(p.shape, dtype=p.dtype)
            s2 = xp.empty(p.shape, dtype=p.dtype) if n_scratch > 1 else None
            kernel(p, g, *buffers, s, s2, *consts)
        param._bump_version()


def _snapshot(value):
    if isinstance(value, Tensor):
        return Tensor._make(value.data.copy(), False, None)
    if isinstance(value, np.ndarray):
        return value.copy()
    return copy.deepcopy(value)
