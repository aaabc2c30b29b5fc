"""``set_num_threads`` / ``get_num_threads``: the size of the CPU thread pools (BLAS, OpenMP) ForgeML's NumPy uses.

They go through ``threadpoolctl`` (imported on first use), which limits the
thread pools of the native libraries loaded in this process, as
``torch.set_num_threads`` limits PyTorch's intra-op pool.
"""

from __future__ import annotations

import os

__all__ = ["get_num_threads", "set_num_threads"]

_limits = None  # the threadpool_limits object of the last set_num_threads call
_requested: int | None = None


def _threadpoolctl():
    try:
        import threadpoolctl
    except ImportError as exc:
        raise ImportError(
            "set_num_threads/get_num_threads need the threadpoolctl package: pip install threadpoolctl"
        ) from exc
    return threadpoolctl


def set_num_threads(n: int) -> None:
    """Use at most ``n`` threads in the CPU thread pools (BLAS and OpenMP) from now on."""
    global _limits, _requested
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"set_num_threads expects a positive integer number of threads, got {n!r}")
    _limits = _threadpoolctl().threadpool_limits(limits=n)
    _requested = n


def get_num_threads() -> int:
    """The number of threads the CPU thread pools use (the largest among the loaded BLAS/OpenMP libraries)."""
    counts = [int(info["num_threads"]) for info in _threadpoolctl().threadpool_info() if info.get("num_threads")]
    if counts:
        return max(counts)
    return _requested if _requested is not None else (os.cpu_count() or 1)
