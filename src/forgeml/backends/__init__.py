"""``forgeml.backends``: the switches of ``torch.backends`` that PyTorch programs set, as harmless stand-ins.

ForgeML computes with NumPy on the CPU and with CuPy (its own kernels, not
cuDNN) on CUDA, so these flags are recorded and readable but change nothing:
``backends.cudnn.benchmark``, ``.deterministic``, ``.enabled``,
``.allow_tf32``; ``backends.cuda.matmul.allow_tf32``; ``backends.mps``
(no Apple GPU support).
"""

from __future__ import annotations

from . import cuda, cudnn, mps

__all__ = ["cuda", "cudnn", "mps"]
