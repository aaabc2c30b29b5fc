"""``forgeml.backends.cudnn``: cuDNN's switches (``torch.backends.cudnn``), recorded but without effect.

ForgeML's CUDA kernels are its own (CuPy elementwise and cuBLAS matmuls), so
cuDNN is never used: :func:`is_available` is False and the flags below may be
set freely (``cudnn.benchmark = True`` is common in PyTorch scripts).
"""

from __future__ import annotations

__all__ = ["allow_tf32", "benchmark", "deterministic", "enabled", "is_available", "version"]

enabled = True  # PyTorch's default
benchmark = False
deterministic = False
allow_tf32 = True  # PyTorch's default for convolutions


def is_available() -> bool:
    """Whether cuDNN would be used: always False in ForgeML, which does not call cuDNN."""
    return False


def version() -> int | None:
    """The cuDNN version in use: None, since ForgeML does not use cuDNN."""
    return None
