"""``forgeml.cuda``: CUDA devices as ``torch.cuda`` presents them (availability, memory, seeds, sync).

Everything here works without CuPy or a GPU: ``is_available()`` is then
False, ``device_count()`` 0, and the functions that need a device raise a
RuntimeError that says what is missing. Install CuPy with the ``gpu`` extra.
"""

from __future__ import annotations

from .backend import device as _device
from .backend.random import default_generator_for, generator_for

__all__ = [
    "current_device",
    "device_count",
    "empty_cache",
    "get_device_name",
    "get_rng_state",
    "initial_seed",
    "is_available",
    "manual_seed",
    "manual_seed_all",
    "max_memory_allocated",
    "memory_allocated",
    "memory_reserved",
    "reset_peak_memory_stats",
    "seed",
    "set_device",
    "set_rng_state",
    "synchronize",
]

_current_index = 0


def is_available() -> bool:
    """True when CuPy is installed and sees at least one CUDA device."""
    return _device.cuda_is_available()


def device_count() -> int:
    """The number of CUDA devices (0 without CuPy or a GPU)."""
    return _device.cuda_device_count()


def _index(device) -> int:
    if device is None:
        return _current_index
    dev = _device.as_device(device)
    if dev.type != "cuda":
        raise ValueError(f"expected a CUDA device, got {dev}")
    return dev.index


def _xp(device=None):
    index = _index(device)
    return _device.array_module(_device.Device("cuda", index)), index


def current_device() -> int:
    """The index of the device new CUDA work goes to by default."""
    _xp()
    return _current_index


def set_device(device) -> None:
    """Make ``device`` (an index, ``'cuda:N'`` or a Device) the current CUDA device."""
    global _current_index
    index = _index(device)
    xp, _ = _xp(index)
    xp.cuda.Device(index).use()
    _current_index = index


def get_device_name(device=None) -> str:
    xp, index = _xp(device)
    name = xp.cuda.runtime.getDeviceProperties(index)["name"]
    return name.decode() if isinstance(name, bytes) else str(name)


def synchronize(device=None) -> None:
    """Wait for all queued work on ``device`` (the current one by default) to finish."""
    xp, index = _xp(device)
    with xp.cuda.Device(index):
        xp.cuda.Device(index).synchronize()


# -- memory -------------------------------------------------------------------------
class _PeakTracker:
    """The most bytes the memory pool has handed out, since the last reset (per device)."""

    def __init__(self) -> None:
        self.peak: dict[int, int] = {}
        self.hook = None

    def install(self, xp) -> None:
        if self.hook is not None or not _device.is_cupy(xp):
            return
        tracker = self

        class _Hook(xp.cuda.MemoryHook):
            name = "forgeml_peak_memory"

            def malloc_postprocess(self, **kwargs) -> None:
                dev = kwargs.get("device_id", 0)
                used = xp.get_default_memory_pool().used_bytes()
                if used > tracker.peak.get(dev, 0):
                    tracker.peak[dev] = used

        self.hook = _Hook()
        self.hook.__enter__()


_peak = _PeakTracker()


def _pool(xp, index):
    with xp.cuda.Device(index):
        return xp.get_default_memory_pool()


def memory_allocated(device=None) -> int:
    """Bytes held by live CUDA arrays on ``device`` (CuPy's memory pool in use)."""
    xp, index = _xp(device)
    return int(_pool(xp, index).used_bytes())


def memory_reserved(device=None) -> int:
    """Bytes the memory pool holds from the driver (in use or cached for reuse)."""
    xp, index = _xp(device)
    return int(_pool(xp, index).total_bytes())


def max_memory_allocated(device=None) -> int:
    """The peak of :func:`memory_allocated` since the last :func:`reset_peak_memory_stats`.

    Tracking starts at the first call of this function or of
    ``reset_peak_memory_stats``, not at process start as in PyTorch.
    """
    xp, index = _xp(device)
    _peak.install(xp)
    now = memory_allocated(index)
    peak = max(_peak.peak.get(index, 0), now)
    if not _device.is_cupy(xp):  # a stand-in namespace keeps its own peak
        peak = max(peak, int(getattr(_pool(xp, index), "peak_bytes", lambda: 0)()))
    _peak.peak[index] = peak
    return peak


def reset_peak_memory_stats(device=None) -> None:
    """Restart :func:`max_memory_allocated` from the memory in use now."""
    xp, index = _xp(device)
    _peak.install(xp)
    pool = _pool(xp, index)
    if hasattr(pool, "reset_peak"):
        pool.reset_peak()
    _peak.peak[index] = int(pool.used_bytes())


def empty_cache() -> None:
    """Return the memory pool's cached, unused blocks to the driver."""
    xp, index = _xp()
    _pool(xp, index).free_all_blocks()


# -- random numbers -------------------------------------------------------------------
def manual_seed(seed: int) -> None:
    """Seed the current CUDA device's default generator (``forgeml.manual_seed`` seeds every device)."""
    if is_available():
        default_generator_for(_device.Device("cuda", _current_index)).manual_seed(seed)


def manual_seed_all(seed: int) -> None:
    """Seed the default generator of every CUDA device."""
    for index in range(device_count()):
        default_generator_for(_device.Device("cuda", index)).manual_seed(seed)


def seed() -> int:
    """Reseed the current device's generator from the OS's entropy; returns the seed."""
    return default_generator_for(_device.Device("cuda", current_device())).seed()


def initial_seed() -> int:
    return default_generator_for(_device.Device("cuda", current_device())).initial_seed()


def get_rng_state(device="cuda") -> dict:
    return generator_for(device).get_state()


def set_rng_state(state: dict, device="cuda") -> None:
    generator_for(device).set_state(state)
