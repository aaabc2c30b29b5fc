"""``Tensor``: an n-dimensional array that remembers how it was computed.

A tensor wraps a NumPy (or CuPy) array in ``_data``; ``data`` is the same
storage as a tensor outside autograd, as in PyTorch. When it requires grad,
the ops applied to it record a graph (``grad_fn``) that ``backward()`` walks
to fill the ``.grad`` of the leaves. The methods that compute (``exp``,
``sum``, ``reshape``, ``__add__`` ...) are the functions of ``forgeml.ops``,
bound by ``forgeml._methods`` when the package is imported, so ``x.exp()`` and
``forgeml.exp(x)`` are one function.
"""

from __future__ import annotations

import itertools
import weakref

from ._tensor_str import tensor_repr
from .autograd import engine as _engine
from .autograd.function import AccumulateGrad, RemovableHandle, bind_tensor_class, register_post_accumulate_hook
from .backend.convert import as_array
from .backend.device import CPU, HOST_ARRAY, as_device, device_of, is_array, to_device, to_host
from .backend.dtypes import dtype_of_array, get_default_dtype, is_float
from .backend.shapes import normalize_dim

__all__ = ["Tensor"]

_next_id = itertools.count(1).__next__
_new = object.__new__


class _RetainGrad:
    """The hook ``retain_grad()`` puts on a non-leaf: keeps its gradient in ``.grad``."""

    __slots__ = ("tensor_ref",)

    def __init__(self, tensor) -> None:
        self.tensor_ref = weakref.ref(tensor)

    def __call__(self, grad):
        t = self.tensor_ref()
        if t is not None:
            if t._grad is None:
                t._grad = Tensor._make(grad._data.copy(), False, None)
            else:
                t._grad._data = t._grad._data + grad._data


def _init_slots(t, data, requires_grad: bool, grad_fn) -> None:
    t._data = data
    t._requires_grad = requires_grad
    t._grad = None
    t.grad_fn = grad_fn
    t._output_nr = 0
    t._version_counter = [0]
    t._base = None
    t._hooks = None
    t._acc = None
    t._id = _next_id()
    t._retains_grad = False


class Tensor:
    """A multi-dimensional array with reverse-mode automatic differentiation.

    Create tensors with :func:`forgeml.tensor`, :func:`forgeml.zeros`,
    :func:`forgeml.randn` and friends. ``Tensor(array)`` wraps an existing
    NumPy array without copying; ``Tensor(data)`` of Python numbers gives the
    default float dtype, as ``torch.Tensor`` does.
    """

    __slots__ = (
        "_data",
        "_requires_grad",
        "_grad",
        "grad_fn",
        "_output_nr",
        "_version_counter",
        "_base",
        "_hooks",
        "_acc",
        "_id",
        "_retains_grad",
        "_view_version",
        "__weakref__",
    )

    __array_ufunc__ = None  # NumPy defers to Tensor's reflected operators (np.float32(2) * t)
    __array_priority__ = 1000

    def __init__(self, data, requires_grad: bool = False) -> None:
        if isinstance(data, Tensor):
            data = data._data
        elif not is_array(data):
            data = as_array(data, get_default_dtype())
        dtype_of_array(data)  # validates the element type
        _init_slots(self, data, False, None)
        if requires_grad:
            self.requires_grad_(True)

    # -- fast constructors used by ops ----------------------------------------
    @staticmethod
    def _make(data, requires_grad: bool, grad_fn) -> Tensor:
        t = _new(Tensor)
        _init_slots(t, data, requires_grad, grad_fn)
        return t

    @staticmethod
    def _make_view(data, source: Tensor, requires_grad: bool, grad_fn) -> Tensor:
        """A tensor whose storage is (part of) ``source``'s: it shares the version counter."""
        t = Tensor._make(data, requires_grad, grad_fn)
        t._version_counter = source._version_counter
        t._base = source if source._base is None else source._base
        t._view_version = source._version_counter[0]  # see Function.apply: stale views are refused
        return t

    def _alias(self) -> Tensor:
        """Same storage and version counter, no history (what ``save_for_backward`` keeps)."""
        t = Tensor._make(self._data, False, None)
        t._version_counter = self._version_counter
        t._base = self._base
        t._view_version = self._version_counter[0]
        return t

    def _accumulator(self) -> AccumulateGrad:
        ref = self._acc
        acc = ref() if ref is not None else None
        if acc is None:
            acc = AccumulateGrad(self)
            self._acc = weakref.ref(acc)
        return acc

    # -- ``.data``: the same storage seen without autograd -----------------------
    @property
    def data(self) -> Tensor:
        """A tensor over this one's storage, outside autograd (PyTorch's ``.data``).

        No copy: in-place changes made through it (``p.data.mul_(0.5)``,
        ``p.data[i] = v``) change this tensor. Unlike :meth:`detach`, it has its own
        version counter, so autograd does not see those changes (a backward that
        saved this tensor uses the new values without complaint, as in PyTorch).
        The backing array itself is ``_data``.
        """
        return Tensor._make(self._data, False, None)

    @data.setter
    def data(self, value) -> None:
        """``t.data = other``: ``t`` now uses ``other``'s storage (any shape or dtype); history and class stay."""
        if not isinstance(value, Tensor):
            raise TypeError(f"Variable data has to be a tensor, but got {type(value).__name__}")
        array = value._data
        if self._requires_grad and not (array.dtype.kind in "fc" or is_float(array.dtype)):
            raise RuntimeError(
                "data set to a tensor that requires gradients must be floating point or complex dtype, "
                f"got {dtype_of_array(array)}"
            )
        self._data = array

    # -- autograd attributes -------------------------------------------------
    @property
    def requires_grad(self) -> bool:
        return self._requires_grad

    @requires_grad.setter
    def requires_grad(self, value: bool) -> None:
        self.requires_grad_(value)

    def requires_grad_(self, requires_grad: bool = True) -> Tensor:
        """Set whether autograd records ops on this leaf tensor; returns ``self``."""
        if not isinstance(requires_grad, bool):
            raise TypeError(f"requires_grad must be a bool, got {type(requires_grad).__name__}")
        if self.grad_fn is not None:
            if not requires_grad:
                raise RuntimeError(
                    "you can only change requires_grad flags of leaf variables. If you want to use a computed "
                    "variable in a subgraph that doesn't require differentiation use var_no_grad = var.detach()."
                )
            return self
        if requires_grad and self._data.dtype.kind not in "fc" and not is_float(self._data.dtype):
            raise RuntimeError(
                f"only Tensors of floating point dtype can require gradients; this tensor is {self.dtype}"
            )
        self._requires_grad = requires_grad
        return self

    @property
    def grad(self) -> Tensor | None:
        """The accumulated gradient (leaves, and non-leaves after ``retain_grad()``), or None."""
        return self._grad

    @grad.setter
    def grad(self, value) -> None:
        if value is not None:
            if not isinstance(value, Tensor):
                raise TypeError(f"assigned grad must be a Tensor or None, got {type(value).__name__}")
            if value._data.shape != self._data.shape:
                raise RuntimeError(
                    f"assigned grad has data of a different size: {list(value.shape)} "
                    f"vs the tensor's {list(self.shape)}"
                )
            if value._data.dtype != self._data.dtype:
                raise RuntimeError(f"assigned grad has dtype {value.dtype}, but the tensor is {self.dtype}")
        self._grad = value

    @property
    def is_leaf(self) -> bool:
        """True for tensors not produced by a recorded op (all tensors that do not require grad)."""
        return self.grad_fn is None

    @property
    def retains_grad(self) -> bool:
        return self._retains_grad

    def retain_grad(self) -> None:
        """Keep this non-leaf tensor's gradient in ``.grad`` during backward (no-op on leaves)."""
        if not self._requires_grad:
            raise RuntimeError("can't retain_grad on Tensor that has requires_grad=False")
        if self.grad_fn is None or self._retains_grad:
            return
        self.grad_fn.register_prehook(self._output_nr, _RetainGrad(self))
        self._retains_grad = True

    def register_hook(self, hook) -> RemovableHandle:
        """Call ``hook(grad)`` when this tensor's gradient is computed; it may return a replacement."""
        if not self._requires_grad:
            raise RuntimeError("cannot register a hook on a tensor that doesn't require gradient")
        if self.grad_fn is None:
            if self._hooks is None:
                self._hooks = []
            self._hooks.append(hook)
            return RemovableHandle(self._hooks, hook)
        node = self.grad_fn
        if node._pre_hooks is None:
            node._pre_hooks = {}
        hooks = node._pre_hooks.setdefault(self._output_nr, [])
        if hooks and isinstance(hooks[-1], _RetainGrad):  # retain_grad sees the final gradient
            hooks.insert(len(hooks) - 1, hook)
        else:
            hooks.append(hook)
        return RemovableHandle(hooks, hook)

    def register_post_accumulate_grad_hook(self, hook) -> RemovableHandle:
        """Call ``hook(self)`` after backward has accumulated a gradient into this leaf's ``.grad``.

        The hook returns nothing (it reads or changes ``self.grad`` in place);
        ``DistributedDataParallel`` all-reduces gradients from such hooks.
        """
        if not self._requires_grad:
            raise RuntimeError("cannot register a hook on a tensor that doesn't require gradient")
        if self.grad_fn is not None:
            raise RuntimeError("post accumulate grad hooks cannot be registered on non-leaf tensors")
        return register_post_accumulate_hook(self, hook)

    def backward(self, gradient=None, retain_graph: bool | None = None, create_graph: bool = False, inputs=None):
        """Accumulate d(self)/d(leaf) into every leaf's ``.grad``; ``gradient`` is needed unless self is a scalar."""
        _engine.backward([self], [gradient], retain_graph=retain_graph, create_graph=create_graph, inputs=inputs)

    def detach(self) -> Tensor:
        """A tensor sharing this one's storage, cut from the graph."""
        return self._alias()

    def detach_(self) -> Tensor:
        self.grad_fn = None
        self._requires_grad = False
        return self

    @property
    def _version(self) -> int:
        """How many times this tensor's storage was modified in place."""
        return self._version_counter[0]

    def _bump_version(self) -> None:
        self._version_counter[0] += 1

    # -- metadata ---------------------------------------------------------------
    @property
    def id(self) -> int:
        """A unique identifier, increasing in creation order."""
        return self._id

    @property
    def shape(self) -> tuple[int, ...]:
        return self._data.shape

    def size(self, dim: int | None = None):
        if dim is None:
            return self._data.shape
        return self._data.shape[normalize_dim(dim, self._data.ndim)]

    @property
    def ndim(self) -> int:
        return self._data.ndim

    def dim(self) -> int:
        return self._data.ndim

    def numel(self) -> int:
        return int(self._data.size)

    nelement = numel

    def element_size(self) -> int:
        return self._data.itemsize

    @property
    def itemsize(self) -> int:
        return self._data.itemsize

    @property
    def nbytes(self) -> int:
        return int(self._data.nbytes)

    @property
    def dtype(self):
        return dtype_of_array(self._data)

    @property
    def device(self):
        return CPU if type(self._data) is HOST_ARRAY else device_of(self._data)

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"

    def is_floating_point(self) -> bool:
        return is_float(self._data.dtype)

    def stride(self, dim: int | None = None):
        """Strides in elements, as PyTorch counts them (NumPy counts bytes)."""
        strides = tuple(s // self._data.itemsize for s in self._data.strides)
        if dim is None:
            return strides
        return strides[normalize_dim(dim, self._data.ndim)]

    def is_contiguous(self) -> bool:
        return bool(self._data.flags.c_contiguous)

    # -- conversion ---------------------------------------------------------------
    def numpy(self, *, force: bool = False):
        """The data as a NumPy array, sharing storage (``force=True`` detaches and copies to host)."""
        data = self._data
        if force:
            return data.copy() if type(data) is HOST_ARRAY else to_host(data)
        if self._requires_grad:
            raise RuntimeError("Can't call numpy() on Tensor that requires grad. Use tensor.detach().numpy() instead.")
        if type(data) is not HOST_ARRAY:
            raise TypeError(
                f"can't convert {self.device} device type tensor to numpy. Use Tensor.cpu() to copy the tensor to "
                "host memory first."
            )
        return data

    def __array__(self, dtype=None, copy=None):
        data = to_host(self._data)
        if dtype is not None and data.dtype != dtype:
            return data.astype(dtype)
        return data.copy() if copy else data

    def __dlpack__(self, *, stream=None, max_version=None, dl_device=None, copy=None):
        """A DLPack capsule of this tensor's memory, for ``torch.from_dlpack``, ``numpy.from_dlpack``,
        ``cupy.from_dlpack`` (see ``forgeml.from_dlpack``); the backing array's own ``__dlpack__`` makes it."""
        if self._requires_grad:
            raise BufferError("Can't export tensors that require gradient, use tensor.detach()")
        data = self._data
        if type(data) is HOST_ARRAY:
            if stream is not None and stream != -1:  # -1: PyTorch's "no synchronisation", the same as None here
                raise BufferError(f"stream must be None for a cpu tensor, got {stream!r}")
            stream = None
        if copy is not True and any(s < 0 for s in data.strides):
            raise BufferError(
                "Can't export a tensor with negative strides (a flip() view) without copying: PyTorch cannot hold "
                "them; call .contiguous() first, or pass copy=True"
            )
        # Only what was asked is passed on: an older producer (CuPy 13) takes ``stream`` alone and raises a
        # TypeError for the rest, which consumers (torch, numpy) answer by asking again without max_version.
        kwargs = {"stream": stream, "max_version": max_version, "dl_device": dl_device, "copy": copy}
        return data.__dlpack__(**{k: v for k, v in kwargs.items() if v is not None})

    def __dlpack_device__(self) -> tuple:
        """``(DLPack device type, index)``: ``(1, 0)`` for the cpu, ``(2, N)`` for ``cuda:N``."""
        return self._data.__dlpack_device__()

    def item(self):
        """The single value of a one-element tensor, as a Python number."""
        if self._data.size != 1:
            raise RuntimeError(f"a Tensor with {self._data.size} elements cannot be converted to Scalar")
        return self._data.item()

    def tolist(self):
        return self._data.tolist()

    def __float__(self) -> float:
        if self._data.size != 1:
            raise ValueError("only one element tensors can be converted to Python scalars")
        return float(self._data.item())

    def __int__(self) -> int:
        if self._data.size != 1:
            raise ValueError("only one element tensors can be converted to Python scalars")
        return int(self._data.item())

    def __index__(self) -> int:
        if self._data.dtype.kind not in "iub" or self._data.size != 1:
            raise TypeError("only integer tensors of a single element can be converted to an index")
        return int(self.item())

    def __bool__(self) -> bool:
        if self._data.size != 1:
            raise RuntimeError(f"Boolean value of Tensor with {self._data.size} elements is ambiguous")
        return bool(self._data.item())

    def __len__(self) -> int:
        if self._data.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self._data.shape[0]

    def __iter__(self):
        if self._data.ndim == 0:
            raise TypeError("iteration over a 0-d tensor")
        return iter(self.unbind(0))

    def __hash__(self) -> int:
        return id(self)

    def __reduce_ex__(self, protocol):
        return (_rebuild_tensor, (to_host(self._data), self._requires_grad, str(self.device)))

    def __deepcopy__(self, memo):
        if self.grad_fn is not None:
            raise RuntimeError(
                "Only Tensors created explicitly by the user (graph leaves) support the deepcopy protocol"
            )
        t = Tensor._make(self._data.copy(), self._requires_grad, None)
        if self._grad is not None:
            t._grad = Tensor._make(self._grad._data.copy(), False, None)
        memo[id(self)] = t
        return t

    def __repr__(self) -> str:
        return tensor_repr(
            to_host(self._data),
            self.dtype,
            get_default_dtype(),
            device=self.device,
            grad_fn_name=None if self.grad_fn is None else self.grad_fn.name(),
            requires_grad=self._requires_grad,
        )

    def __str__(self) -> str:
        return repr(self)  # a subclass's __repr__ (Parameter's "Parameter containing:") prints too

    def __format__(self, spec: str) -> str:
        """A 0-d tensor formats as its Python number (``f"{t:.2f}"``); any other tensor only with an empty spec."""
        if self._data.ndim == 0 and type(self) is Tensor:
            return format(self.item(), spec)
        return object.__format__(self, spec)


def _rebuild_tensor(data, requires_grad, device="cpu"):
    t = Tensor._make(to_device(data, as_device(device)) if device != "cpu" else data, False, None)
    if requires_grad:
        t.requires_grad_(True)
    return t


bind_tensor_class(Tensor)
