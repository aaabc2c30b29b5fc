"""``default_collate`` and ``default_convert``: samples to batches, as ``torch.utils.data`` builds them.

``default_collate`` looks at the first sample and recurses:

==========================  ==============================================================
sample element              batch
==========================  ==============================================================
ForgeML tensor              the tensors stacked along a new dim 0 (on their device)
NumPy array                 converted to tensors, then stacked (string/object arrays: error)
CuPy array                  stacked on its device
NumPy scalar                a 1-D tensor of the scalars' dtype
Python float                a float64 tensor
Python int / bool           an int64 / bool tensor
str / bytes                 the batch of them, unchanged
mapping (dict, ...)         the same mapping type, each key collated
namedtuple                  the same namedtuple, each field collated
tuple                       a *list*, each position collated (PyTorch does the same)
other sequence (list, ...)  the same sequence type, each position collated
==========================  ==============================================================

Batches built from host data (NumPy arrays, Python numbers) are CPU tensors,
as in PyTorch; tensors already on a CUDA device are stacked there. Moving
batches to the training device is the training loop's job (``Trainer``
does it, or ``batch.to(device)``).
"""

from __future__ import annotations

import collections.abc
import copy

import numpy as np

from ..backend.device import is_array
from ..ops.creation import from_numpy, tensor
from ..ops.shape import stack
from ..tensor import Tensor

__all__ = ["default_collate", "default_convert"]

_ERR = "default_collate: batch must contain tensors, numpy arrays, numbers, dicts or lists; found {}"
_STRING_KINDS = "SUO"  # bytes, unicode, object: not numeric


def _collate_tensors(batch) -> Tensor:
    shape = batch[0]._data.shape
    for i, t in enumerate(batch):
        if not isinstance(t, Tensor):
            raise TypeError(
                f"default_collate: element 0 of the batch is a Tensor but element {i} is {type(t).__name__}"
            )
        if t._data.shape != shape:
            raise RuntimeError(
                f"default_collate: stack expects each tensor to be equal size, but got {list(shape)} at entry 0 "
                f"and {list(t._data.shape)} at entry {i}"
            )
    if all(type(t._data) is np.ndarray and not t.requires_grad for t in batch) and all(
        t._data.dtype == batch[0]._data.dtype for t in batch
    ):
        return Tensor._make(np.stack([t._data for t in batch]), False, None)
    return stack(list(batch), 0)  # promotes mixed dtypes, keeps the graph and the device


def _collate_arrays(batch) -> Tensor:
    elem = batch[0]
    if elem.dtype.kind in _STRING_KINDS:
        raise TypeError(_ERR.format(elem.dtype))
    for i, a in enumerate(batch):
        if not isinstance(a, np.ndarray):
            raise TypeError(
                f"default_collate: element 0 of the batch is a NumPy array but element {i} is {type(a).__name__}"
            )
        if a.shape != elem.shape:
            raise RuntimeError(
                f"default_collate: stack expects each array to be equal size, but got {list(elem.shape)} at entry 0 "
                f"and {list(a.shape)} at entry {i}"
            )
    return from_numpy(np.stack(batch))


def default_collate(batch):
    """Merge a list of samples into a batch: tensors stacked along a new first dim, recursing into containers.

    >>> import forgeml as fm
    >>> b = default_collate([{"x": fm.zeros(3), "y": 1}, {"x": fm.ones(3), "y": 0}])
    >>> b["x"].shape, b["y"].tolist()
    ((2, 3), [1, 0])
    """
    if not isinstance(batch, collections.abc.Sequence) or isinstance(batch, (str, bytes)):
        raise TypeError(f"default_collate expects a list of samples, got {type(batch).__name__}")
    if len(batch) == 0:
        raise ValueError("default_collate: the batch is empty")
    elem = batch[0]
    elem_type = type(elem)
    if isinstance(elem, Tensor):
        return _collate_tensors(batch)
    if isinstance(elem, np.ndarray):
        return _collate_arrays(batch)
    if is_array(elem):  # a device (CuPy) array: stacked where it is
        return _collate_tensors([Tensor._make(a, False, None) if is_array(a) else a for a in batch])
    if isinstance(elem, (np.bool_, np.number)):
        return from_numpy(np.asarray(batch))
    if isinstance(elem, float):
        return tensor(batch, dtype="float64")
    if isinstance(elem, int):  # bool included: a list of bools gives a bool tensor
        return tensor(batch)
    if isinstance(elem, (str, bytes)):
        return batch
    if isinstance(elem, collections.abc.Mapping):
        collated = {key: default_collate([d[key] for d in batch]) for key in elem}
        try:
            if isinstance(elem, collections.abc.MutableMapping):
                clone = copy.copy(elem)  # keeps the mapping's type and any state it carries
                clone.update(collated)
                return clone
            return elem_type(collated)
        except TypeError:  # the mapping type cannot be rebuilt this way
            return collated
    if isinstance(elem, tuple) and hasattr(elem, "_fields"):  # namedtuple
        return elem_type(*(default_collate(samples) for samples in zip(*batch)))
    if isinstance(elem, collections.abc.Sequence):
        size = len(elem)
        for i, sample in enumerate(batch):
            if len(sample) != size:
                raise RuntimeError(
                    f"each element in list of batch should be of equal size (element 0 has {size} items, "
                    f"element {i} has {len(sample)})"
                )
        transposed = [default_collate(samples) for samples in zip(*batch)]
        if isinstance(elem, tuple):
            return transposed  # PyTorch returns a list for tuples, for backward compatibility
        try:
            if isinstance(elem, collections.abc.MutableSequence):
                clone = copy.copy(elem)
                for i, value in enumerate(transposed):
                    clone[i] = value
                return clone
            return elem_type(transposed)
        except TypeError:
            return transposed
    raise TypeError(_ERR.format(elem_type))


def default_convert(data):
    """NumPy arrays and scalars become tensors, recursing into containers; everything else is left as is.

    The conversion a :class:`~forgeml.data.DataLoader` applies to each sample when
    automatic batching is off (``batch_size=None``).
    """
    if isinstance(data, Tensor):
        return data
    if isinstance(data, np.ndarray):
        if data.dtype.kind in _STRING_KINDS:
            return data
        return from_numpy(data)
    if isinstance(data, (np.bool_, np.number)):
        return from_numpy(np.asarray(data))
    if is_array(data):  # a device (CuPy) array: wrapped where it is
        return Tensor._make(data, False, None)
    if isinstance(data, (str, bytes)):
        return data
    if isinstance(data, collections.abc.Mapping):
        converted = {key: default_convert(value) for key, value in data.items()}
        try:
            if isinstance(data, collections.abc.MutableMapping):
                clone = copy.copy(data)
                clone.update(converted)
                return clone
            return type(data)(converted)
        except TypeError:
            return converted
    if isinstance(data, tuple) and hasattr(data, "_fields"):
        return type(data)(*(default_convert(d) for d in data))
    if isinstance(data, tuple):
        return [default_convert(d) for d in data]
    if isinstance(data, collections.abc.Sequence):
        converted = [default_convert(d) for d in data]
        try:
            if isinstance(data, collections.abc.MutableSequence):
                clone = copy.copy(data)
                for i, value in enumerate(converted):
                    clone[i] = value
                return clone
            return type(data)(converted)
        except TypeError:
            return converted
    return data
