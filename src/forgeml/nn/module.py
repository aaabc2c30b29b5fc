"""``Module``: the base class of every layer and model, as in ``torch.nn.Module``.

Assigning a :class:`Parameter` or a ``Module`` as an attribute registers it;
``register_buffer`` registers state that is saved but not trained (running
statistics). ``state_dict`` keys are dotted paths (``"0.weight"``,
``"encoder.norm1.bias"``) exactly as PyTorch names them, so weights move
between the two frameworks without renaming.
"""

from __future__ import annotations

from collections import OrderedDict, namedtuple

from ..autograd.function import RemovableHandle
from ..autograd.grad_mode import no_grad
from ..backend.convert import as_array
from ..backend.device import Device, as_device, is_array, to_device
from ..backend.dtypes import as_dtype
from ..tensor import Tensor
from .masked import MaskedBatch
from .parameter import Parameter

__all__ = ["IncompatibleKeys", "Module"]

IncompatibleKeys = namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])


class Module:
    """Base class for layers and models: subclass it, create parameters and sub-modules in
    ``__init__``, compute in ``forward``, call the module to run it."""

    training: bool
    accepts_masked = False  # True for layers that read a MaskedBatch's padding mask themselves

    def __init__(self) -> None:
        object.__setattr__(self, "training", True)
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_non_persistent_buffers", set())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "_forward_hooks", [])
        object.__setattr__(self, "_forward_pre_hooks", [])
        object.__setattr__(self, "_backward_hooks", [])
        object.__setattr__(self, "_backward_pre_hooks", [])

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f'Module [{type(self).__name__}] is missing the required "forward" function')

    def __call__(self, *args, **kwargs):
        if args and type(args[0]) is MaskedBatch and not self.accepts_masked:
            return self._call_on_masked(args, kwargs)
        if self._forward_pre_hooks or self._forward_hooks or self._backward_hooks or self._backward_pre_hooks:
            return self._call_with_hooks(args, kwargs)
        return self.forward(*args, **kwargs)

    def _call_on_masked(self, args, kwargs):
        """A position-wise layer given a MaskedBatch: run it on the data, carry the mask along."""
        batch = args[0]
        out = self(batch.data, *args[1:], **kwargs)
        if isinstance(out, Tensor) and out.ndim >= 2 and out.shape[:2] == batch.data.shape[:2]:
            return batch.replace(out)
        return out

    def _call_with_hooks(self, args, kwargs):
        for hook in list(self._forward_pre_hooks):
            result = hook(self, args)
            if result is not None:
                args = result if isinstance(result, tuple) else (result,)
        backward_hook = None
        if self._backward_hooks or self._backward_pre_hooks:
            from ._backward_hook import BackwardHook

            backward_hook = BackwardHook(self, self._backward_hooks, self._backward_pre_hooks)
            args = backward_hook.setup_input_hook(args)
        output = self.forward(*args, **kwargs)
        for hook in list(self._forward_hooks):
            result = hook(self, args, output)
            if result is not None:
                output = result
        if backward_hook is not None:
            output = backward_hook.setup_output_hook(output)
        return output

    def register_forward_hook(self, hook) -> RemovableHandle:
        """Call ``hook(module, inputs, output)`` after each forward; a non-None return replaces the output."""
        self._forward_hooks.append(hook)
        return RemovableHandle(self._forward_hooks, hook)

    def register_forward_pre_hook(self, hook) -> RemovableHandle:
        """Call ``hook(module, inputs)`` before each forward; a non-None return replaces the inputs."""
        self._forward_pre_hooks.append(hook)
        return RemovableHandle(self._forward_pre_hooks, hook)

    def register_full_backward_hook(self, hook) -> RemovableHandle:
        """Call ``hook(module, grad_input, grad_output)`` when the gradients w.r.t. the module's inputs are
        computed, as in PyTorch. ``grad_input`` holds one entry per positional input (None for non-tensors
        and tensors that need no gradient), ``grad_output`` one per output; a returned tuple replaces
        ``grad_input``. Returns a handle whose ``remove()`` unregisters the hook."""
        self._backward_hooks.append(hook)
        return RemovableHandle(self._backward_hooks, hook)

    def register_full_backward_pre_hook(self, hook) -> RemovableHandle:
        """Call ``hook(module, grad_output)`` when the gradients w.r.t. the module's outputs are computed,
        before the module's own backward; a returned tuple replaces ``grad_output``. Returns a handle."""
        self._backward_pre_hooks.append(hook)
        return RemovableHandle(self._backward_pre_hooks, hook)

    # -- attribute registration ----------------------------------------------
    def __setattr__(self, name: str, value) -> None:
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"cannot assign {name!r} before Module.__init__() is called")
        params, buffers, modules = self._parameters, self._buffers, self._modules
        if isinstance(value, Parameter):
            self._forget(name, params)
            params[name] = value
        elif isinstance(value, Module):
            self._forget(name, modules)
            modules[name] = value
        elif name in params:
            if value is not None:
                raise TypeError(
                    f"cannot assign {type(value).__name__} as parameter {name!r} (Parameter or None expected)"
                )
            params[name] = None
        elif name in modules:
            if value is not None:
                raise TypeError(
                    f"cannot assign {type(value).__name__} as child module {name!r} (Module or None expected)"
                )
            modules[name] = None
        elif name in buffers:
            if value is not None and not isinstance(value, Tensor):
                raise TypeError(f"cannot assign {type(value).__name__} as buffer {name!r} (Tensor or None expected)")
            buffers[name] = value
        else:
            object.__setattr__(self, name, value)

    def _forget(self, name: str, keep: dict | None = None) -> None:
        """Drop ``name`` from the instance dict and the registries, except ``keep`` (the registry it is about to
        be assigned in again: a replaced parameter, buffer or child keeps its position, as in PyTorch)."""
        self.__dict__.pop(name, None)
        for registry in (self._parameters, self._buffers, self._modules):
            if registry is not keep:
                registry.pop(name, None)
        self._non_persistent_buffers.discard(name)

    def __getattr__(self, name: str):
        d = self.__dict__
        for registry in ("_parameters", "_buffers", "_modules"):
            store = d.get(registry)
            if store is not None and name in store:
                return store[name]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def __delattr__(self, name: str) -> None:
        for registry in (self._parameters, self._buffers, self._modules):
            if name in registry:
                del registry[name]
                self._non_persistent_buffers.discard(name)
                return
        object.__delattr__(self, name)

    def __dir__(self):
        return sorted(set(super().__dir__()) | set(self._parameters) | set(self._buffers) | set(self._modules))

    def _check_name(self, name: str, kind: str) -> None:
        if not isinstance(name, str):
            raise TypeError(f"{kind} name should be a string, got {type(name).__name__}")
        if not name or "." in name:
            raise KeyError(f'{kind} name can\'t be empty or contain ".", got {name!r}')
        if name in self.__dict__ and not any(name in r for r in (self._parameters, self._buffers, self._modules)):
            raise KeyError(f"attribute {name!r} already exists")

    def register_parameter(self, name: str, param: Parameter | None) -> None:
        self._check_name(name, "parameter")
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"cannot assign {type(param).__name__} as parameter {name!r} (Parameter or None expected)")
        self._forget(name, self._parameters)
        self._parameters[name] = param

    def register_buffer(self, name: str, tensor: Tensor | None, persistent: bool = True) -> None:
        """Register state that is saved in ``state_dict`` (unless ``persistent=False``) but not trained."""
        self._check_name(name, "buffer")
        if tensor is not None and not isinstance(tensor, Tensor):
            raise TypeError(f"cannot assign {type(tensor).__name__} as buffer {name!r} (Tensor or None expected)")
        self._forget(name, self._buffers)
        self._buffers[name] = tensor
        if not persistent:
            self._non_persistent_buffers.add(name)

    def add_module(self, name: str, module: Module | None) -> None:
        self._check_name(name, "module")
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"{type(module).__name__} is not a Module subclass")
        self._forget(name, self._modules)
        self._modules[name] = module

    register_module = add_module

    # -- traversal ------------------------------------------------------------
    def named_modules(self, memo=None, prefix: str = "", remove_duplicate: bool = True):
        if memo is None:
            memo = set()
        if remove_duplicate:
            if id(self) in memo:
                return
            memo.add(id(self))
        yield prefix, self
        for name, module in self._modules.items():
            if module is not None:
                yield from module.named_modules(memo, f"{prefix}.{name}" if prefix else name, remove_duplicate)

    def modules(self, remove_duplicate: bool = True):
        for _, module in self.named_modules(remove_duplicate=remove_duplicate):
            yield module

    def named_children(self):
        seen = set()
        for name, module in self._modules.items():
            if module is not None and id(module) not in seen:
                seen.add(id(module))
                yield name, module

    def children(self):
        for _, module in self.named_children():
            yield module

    def _named_members(self, registry: str, prefix: str, recurse: bool, remove_duplicate: bool = True):
        seen = set()
        owners = self.named_modules(prefix=prefix, remove_duplicate=remove_duplicate) if recurse else [(prefix, self)]
        for owner_prefix, owner in owners:
            for name, value in getattr(owner, registry).items():
                if value is None or (remove_duplicate and id(value) in seen):
                    continue
                seen.add(id(value))
                yield (f"{owner_prefix}.{name}" if owner_prefix else name), value

    def named_parameters(self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True):
        yield from self._named_members("_parameters", prefix, recurse, remove_duplicate)

    def parameters(self, recurse: bool = True):
        for _, param in self.named_parameters(recurse=recurse):
            yield param

    def named_buffers(self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True):
        yield from self._named_members("_buffers", prefix, recurse, remove_duplicate)

    def buffers(self, recurse: bool = True):
        for _, buf in self.named_buffers(recurse=recurse):
            yield buf

    def num_parameters(self, only_trainable: bool = False) -> int:
        """How many scalar weights the module has (only those that require grad, if asked)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not only_trainable)

    def apply(self, fn) -> Module:
        """Call ``fn(module)`` on every sub-module (children first) and on ``self``; returns ``self``."""
        for module in self.children():
            module.apply(fn)
        fn(self)
        return self

    # -- modes ------------------------------------------------------------------
    def train(self, mode: bool = True) -> Module:
        """Training mode (``mode=True``) or evaluation mode, recursively; affects Dropout and BatchNorm."""
        if not isinstance(mode, bool):
            raise ValueError(f"training mode is expected to be boolean, got {type(mode).__name__}")
        object.__setattr__(self, "training", mode)
        for module in self.children():
            module.train(mode)
        return self

    def eval(self) -> Module:
        return self.train(False)

    def requires_grad_(self, requires_grad: bool = True) -> Module:
        for p in self.parameters():
            p.requires_grad_(requires_grad)
        return self

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Reset every parameter's gradient: to None (the default) or to zeros."""
        for p in self.parameters():
            if p.grad is None:
                continue
            if set_to_none:
                p.grad = None
            else:
                p.grad.detach_()
                p.grad.zero_()

    # -- state ------------------------------------------------------------------
    def state_dict(self, destination=None, prefix: str = "", keep_vars: bool = False) -> OrderedDict:
        """Every parameter and persistent buffer by dotted name (detached unless ``keep_vars``)."""
        if destination is None:
            destination = OrderedDict()
        for name, param in self._parameters.items():
            if param is not None:
                destination[prefix + name] = param if keep_vars else param.detach()
        for name, buf in self._buffers.items():
            if buf is not None and name not in self._non_persistent_buffers:
                destination[prefix + name] = buf if keep_vars else buf.detach()
        for name, module in self._modules.items():
            if module is not None:
                module.state_dict(destination, prefix + name + ".", keep_vars)
        return destination

    def _state_targets(self):
        """Name -> (owner module, attribute, current tensor) for everything a state_dict holds."""
        targets = OrderedDict()
        for prefix, module in self.named_modules(remove_duplicate=False):
            dotted = prefix + "." if prefix else ""
            for name, param in module._parameters.items():
                if param is not None:
                    targets[dotted + name] = (module, name, param)
            for name, buf in module._buffers.items():
                if buf is not None and name not in module._non_persistent_buffers:
                    targets[dotted + name] = (module, name, buf)
        return targets

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False) -> IncompatibleKeys:
        """Copy values from ``state_dict`` into this module's parameters and buffers.

        Every entry is checked first (names with ``strict``, shapes always);
        when anything is wrong nothing is copied and the error lists the missing
        keys, the unexpected keys and each shape mismatch. Values (tensors on
        any device, arrays, nested lists) are copied into each parameter's and
        buffer's own storage, converted to its dtype and device, so a CPU
        checkpoint loads into a CUDA model and back. With ``assign=True`` the
        module takes copies of the values as they are (their dtype and device).
        """
        targets = self._state_targets()
        missing = [k for k in targets if k not in state_dict]
        unexpected = [k for k in state_dict if k not in targets]
        problems = []
        values = {}
        for key, (_, _, current) in targets.items():
            if key not in state_dict:
                continue
            value = state_dict[key]
            if isinstance(value, Tensor):
                array = value._data
            elif is_array(value):
                array = value
            else:  # Python data, NumPy scalars, other frameworks' tensors: read on the host
                array = as_array(value, None if assign else current.dtype)
            if tuple(array.shape) != tuple(current._data.shape):
                problems.append(
                    f"size mismatch for {key}: copying a param with shape {list(array.shape)} from checkpoint, "
                    f"the shape in current model is {list(current._data.shape)}."
                )
            values[key] = array
        if strict:
            if unexpected:
                problems.insert(0, "Unexpected key(s) in state_dict: " + ", ".join(f'"{k}"' for k in unexpected) + ".")
            if missing:
                problems.insert(0, "Missing key(s) in state_dict: " + ", ".join(f'"{k}"' for k in missing) + ".")
        if problems:
            raise RuntimeError(f"Error(s) in loading state_dict for {type(self).__name__}:\n\t" + "\n\t".join(problems))
        with no_grad():
            for key, array in values.items():
                module, name, current = targets[key]
                if assign:
                    replacement = (
                        Parameter(array.copy(), current.requires_grad)
                        if isinstance(current, Parameter)
                        else Tensor(array.copy())
                    )
                    setattr(module, name, replacement)
                else:
                    # convert where the value is (a smaller transfer when narrowing), then copy across
                    converted = to_device(array.astype(current._data.dtype, copy=False), current.device)
                    current._data[...] = converted
                    current._bump_version()
        return IncompatibleKeys(missing, unexpected)

    # -- device and dtype ---------------------------------------------------------
    def _apply_to_tensors(self, convert) -> Module:
        """Replace every parameter's and buffer's array by ``convert(array)``, in place.

        The Parameter and buffer objects stay the same (only their ``data``
        changes), so an optimizer built before ``model.to('cuda')`` keeps
        updating the moved parameters, as in PyTorch; gradients move with them.
        """
        for module in self.modules():
            for registry in (module._parameters, module._buffers):
                for t in registry.values():
                    if t is None:
                        continue
                    new = convert(t._data)
                    if new is not t._data:
                        t._data = new
                    grad = t._grad
                    if grad is not None:
                        new_grad = convert(grad._data)
                        if new_grad is not grad._data:
                            grad._data = new_grad
        return self

    def to(self, *args, **kwargs) -> Module:
        """Move parameters and buffers to a device and/or convert the floating ones to a dtype; in place.

        ``to(device)``, ``to(dtype)``, ``to(device, dtype)``, ``to(tensor)`` (its
        device and dtype), as ``torch.nn.Module.to``. Returns ``self``.
        """
        device = kwargs.pop("device", None)
        dtype = kwargs.pop("dtype", None)
        kwargs.pop("non_blocking", None)
        kwargs.pop("memory_format", None)
        if kwargs:
            raise TypeError(f"Module.to() got unexpected keyword arguments {sorted(kwargs)}")
        for arg in args:
            if arg is None or isinstance(arg, bool):  # to(device, None) / to(device, dtype, non_blocking)
                continue
            if isinstance(arg, Tensor):
                device, dtype = arg.device, arg.dtype
            elif isinstance(arg, (Device, int)):
                device = arg
            else:
                try:
                    dtype = as_dtype(arg)
                except TypeError:
                    device = arg
        target_dtype = as_dtype(dtype) if dtype is not None else None
        if target_dtype is not None and not target_dtype.is_floating_point:
            raise TypeError(f"Module.to only accepts floating point dtypes, but got desired dtype={target_dtype}")
        target_device = as_device(device) if device is not None else None

        def convert(array):
            out = array
            if target_dtype is not None and array.dtype.kind == "f" and array.dtype != target_dtype.numpy:
                out = out.astype(target_dtype.numpy)
            if target_device is not None:
                out = to_device(out, target_device)
            return out

        return self._apply_to_tensors(convert)

    def float(self) -> Module:
        return self.to("float32")

    def double(self) -> Module:
        return self.to("float64")

    def half(self) -> Module:
        return self.to("float16")

    def cpu(self) -> Module:
        """Move every parameter and buffer to the CPU, in place; returns ``self``."""
        return self.to("cpu")

    def cuda(self, device=None) -> Module:
        """Move every parameter and buffer to a CUDA device (``cuda:0`` by default), in place; returns ``self``."""
        if device is None:
            return self.to("cuda")
        if isinstance(device, int) and not isinstance(device, bool):
            return self.to(Device("cuda", device))
        dev = as_device(device)
        if dev.type != "cuda":
            raise ValueError(f"Module.cuda() expects a CUDA device, got {dev}")
        return self.to(dev)

    # -- specs ----------------------------------------------------------------------
    def to_spec(self, input_shape=None, name: str | None = None):
        """This model as a ``forgeml.specs.ModelSpec`` (see ``forgeml.nn.to_spec``; needs pydantic)."""
        from .spec import to_spec

        return to_spec(self, input_shape=input_shape, name=name)

    # -- printing ---------------------------------------------------------------
    def extra_repr(self) -> str:
        """The hyper-parameters shown between the parentheses of this module's repr."""
        return ""

    def _get_name(self) -> str:
        return type(self).__name__

    def __repr__(self) -> str:
        lines = []
        extra = self.extra_repr()
        if extra:
            lines.extend(extra.split("\n"))
        for name, module in self._modules.items():
            child = repr(module).replace("\n", "\n  ")
            lines.append(f"({name}): {child}")
        if not lines:
            return f"{self._get_name()}()"
        if len(lines) == 1 and not self._modules:
            return f"{self._get_name()}({lines[0]})"
        return self._get_name() + "(\n  " + "\n  ".join(lines) + "\n)"
