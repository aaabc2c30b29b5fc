"""The backend layer: devices, the array namespace per device, dtypes, random generators.

Nothing above this layer imports NumPy's or CuPy's device logic directly.
"""

from .device import CPU, Device, array_module, as_device, cuda_is_available, device_of, to_device
from .dtypes import DType, as_dtype, dtype_of_array, get_default_dtype, promote_types, result_type, set_default_dtype
from .random import Generator, default_generator, manual_seed, numpy_generator

__all__ = [
    "CPU",
    "DType",
    "Device",
    "Generator",
    "array_module",
    "as_device",
    "as_dtype",
    "cuda_is_available",
    "default_generator",
    "device_of",
    "dtype_of_array",
    "get_default_dtype",
    "manual_seed",
    "numpy_generator",
    "promote_types",
    "result_type",
    "set_default_dtype",
    "to_device",
]
