"""Shared fixtures: every test starts from the same random state and with grad mode on."""

import numpy as np
import pytest

import forgeml as fm


@pytest.fixture(autouse=True)
def _fresh_state():
    fm.manual_seed(0)
    with fm.enable_grad():
        yield


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture
def checked_cuda():
    """Run ``device='cuda'`` on the CuPy stand-in of ``tests/checked_cuda.py`` (a CPU proxy for a GPU)."""
    from forgeml import cuda as fm_cuda
    from forgeml.backend import device as backend_device
    from forgeml.backend import random as backend_random

    from .checked_cuda import namespace

    state = backend_device.use_cuda_namespace(namespace, device_count=1)
    backend_random.reset_cuda_generators()
    fm_cuda._peak.peak.clear()
    try:
        yield namespace
    finally:
        backend_device.restore_cuda_namespace(state)
        backend_random.reset_cuda_generators()
        fm_cuda._peak.peak.clear()


@pytest.fixture
def cuda_device(request):
    """A CUDA device for device tests: a real GPU when FORGEML_TEST_REAL_CUDA=1 (and one is there), else the stand-in."""
    import os

    if os.environ.get("FORGEML_TEST_REAL_CUDA") == "1":
        if not fm.cuda.is_available():
            pytest.skip("FORGEML_TEST_REAL_CUDA=1 but no CUDA device is available")
        yield "cuda"
        return
    request.getfixturevalue("checked_cuda")
    yield "cuda"
