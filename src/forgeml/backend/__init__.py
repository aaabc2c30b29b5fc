"""The backend layer: devices, the array namespace per device, shapes, dtypes, random generators.

Nothing above this layer imports NumPy's or CuPy's device logic directly: it
asks for the namespace (``xp``) of an array or a device here.
"""

from .convert import as_array
from .device import (
    CPU,
    HOST_ARRAY,
    HOST_XP,
    Device,
    array_module,
    as_device,
    cuda_device_count,
    cuda_is_available,
    device_of,
    ignore_float_errors,
    is_array,
    is_cupy,
    namespace_of,
    to_device,
    to_host,
)
from .dtypes import DType, as_dtype, dtype_of_array, get_default_dtype, promote_types, result_type, set_default_dtype
from .host_memory import tune_host_malloc
from .random import Generator, default_generator, default_generator_for, generator_for, manual_seed, numpy_generator
from .shapes import broadcasts_to, normalize_dim, normalize_dims, size_args, sum_to_shape

tune_host_malloc()  # once, at import: see host_memory

__all__ = [
    "CPU",
    "HOST_ARRAY",
    "HOST_XP",
    "DType",
    "Device",
    "Generator",
    "array_module",
    "as_array",
    "as_device",
    "as_dtype",
    "broadcasts_to",
    "cuda_device_count",
    "cuda_is_available",
    "default_generator",
    "default_generator_for",
    "device_of",
    "dtype_of_array",
    "generator_for",
    "get_default_dtype",
    "ignore_float_errors",
    "is_array",
    "is_cupy",
    "manual_seed",
    "namespace_of",
    "normalize_dim",
    "normalize_dims",
    "numpy_generator",
    "promote_types",
    "result_type",
    "set_default_dtype",
    "size_args",
    "sum_to_shape",
    "to_device",
    "to_host",
]
