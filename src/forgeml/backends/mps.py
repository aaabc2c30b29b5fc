"""``forgeml.backends.mps``: Apple's Metal backend (``torch.backends.mps``), which ForgeML does not have."""

from __future__ import annotations

__all__ = ["is_available", "is_built"]


def is_available() -> bool:
    """Whether an MPS device can be used: always False (ForgeML runs on NumPy and CuPy)."""
    return False


def is_built() -> bool:
    """Whether ForgeML was built with MPS support: False."""
    return False
