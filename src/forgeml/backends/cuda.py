"""``forgeml.backends.cuda``: CUDA switches (``torch.backends.cuda``); ``matmul.allow_tf32`` is recorded only."""

from __future__ import annotations

__all__ = ["is_built", "matmul"]


class _MatmulFlags:
    """``backends.cuda.matmul``: ``allow_tf32`` (default False, as in PyTorch) and the reduced-precision flags."""

    def __init__(self) -> None:
        self.allow_tf32 = False
        self.allow_fp16_reduced_precision_reduction = True
        self.allow_bf16_reduced_precision_reduction = True

    def __repr__(self) -> str:
        return f"<forgeml.backends.cuda.matmul allow_tf32={self.allow_tf32}>"


matmul = _MatmulFlags()


def is_built() -> bool:
    """Whether ForgeML can run on CUDA here (CuPy installed and a GPU visible)."""
    from ..backend.device import cuda_is_available

    return cuda_is_available()
