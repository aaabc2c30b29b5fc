"""Host memory: keep glibc's malloc from handing array memory back to the kernel between training steps.

NumPy takes each array's data from ``malloc``. glibc serves blocks above its mmap threshold with a fresh
``mmap`` and trims the heap's top once more than twice that threshold lies free there, so a training step
that allocates and frees the same few-MB activations every time faults all their pages in again, every
step (nanoGPT's 'nano' benchmark step: about 5,500 minor page faults and 15 ms of system time, a tenth of
the step). Fixed thresholds of 32 MiB (mmap) and 128 MiB (trim) keep that memory in the process for the
next step, at the cost of holding up to 128 MiB of freed memory.

Applied once, when ``forgeml`` is imported, where the C library is glibc; it is left off with
``FORGEML_HOST_MALLOC_TUNING=0``, and thresholds the user set through glibc's own ``MALLOC_MMAP_THRESHOLD_``
or ``MALLOC_TRIM_THRESHOLD_`` are left as they are.
"""

from __future__ import annotations

import os
import sys

__all__ = ["tune_host_malloc"]

_M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20  # glibc's largest allowed on 64-bit platforms
TRIM_THRESHOLD = 128 << 20


def tune_host_malloc(mmap_threshold: int = MMAP_THRESHOLD, trim_threshold: int = TRIM_THRESHOLD) -> bool:
    """Set glibc's mmap and trim thresholds (bytes); True if they were set, False where not glibc or turned off."""
    if not sys.platform.startswith("linux") or os.environ.get("FORGEML_HOST_MALLOC_TUNING", "1") == "0":
        return False
    if "MALLOC_MMAP_THRESHOLD_" in os.environ or "MALLOC_TRIM_THRESHOLD_" in os.environ:
        return False
    import ctypes

    try:
        libc = ctypes.CDLL(None)
    except OSError:
        return False
    # glibc only: other C libraries' mallopt take other parameters, or do nothing
    if not hasattr(libc, "gnu_get_libc_version") or not hasattr(libc, "mallopt"):
        return False
    mallopt = libc.mallopt
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    # the mmap threshold first: setting either turns off glibc's dynamic adjustment of both
    return bool(mallopt(_M_MMAP_THRESHOLD, int(mmap_threshold))) and bool(
        mallopt(_M_TRIM_THRESHOLD, int(trim_threshold))
    )
