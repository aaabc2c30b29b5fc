"""glibc malloc tuning at import (forgeml.backend.host_memory)."""

import ctypes
import sys

from forgeml.backend import host_memory


def _is_glibc() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        return hasattr(ctypes.CDLL(None), "gnu_get_libc_version")
    except OSError:
        return False


def test_tunes_glibc_malloc(monkeypatch):
    monkeypatch.delenv("FORGEML_HOST_MALLOC_TUNING", raising=False)
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    assert host_memory.tune_host_malloc() is _is_glibc()


def test_turned_off_by_environment(monkeypatch):
    monkeypatch.setenv("FORGEML_HOST_MALLOC_TUNING", "0")
    assert host_memory.tune_host_malloc() is False


def test_leaves_glibc_variables_alone(monkeypatch):
    monkeypatch.delenv("FORGEML_HOST_MALLOC_TUNING", raising=False)
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "1048576")
    assert host_memory.tune_host_malloc() is False
