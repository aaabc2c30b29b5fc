"""Devices, namespaces and forgeml.cuda: parsing, errors without a GPU, and the CUDA API on the checked stand-in."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import forgeml as fm
from forgeml.backend import device as backend_device

from ..checked_cuda import CheckedArray


@pytest.mark.parametrize(
    "spec, expected",
    [("cpu", ("cpu", None)), ("cuda", ("cuda", 0)), ("cuda:1", ("cuda", 1)), (fm.device("cuda", 2), ("cuda", 2))],
)
def test_device_parsing_matches_torch_spellings(spec, expected):
    dev = fm.device(spec)
    assert (dev.type, dev.index) == expected
    assert backend_device.as_device(3) == fm.device("cuda:3")
    assert str(fm.device("cuda:1")) == "cuda:1" and repr(fm.device("cpu")) == "device(type='cpu')"


@pytest.mark.parametrize("bad", ["gpu", "cuda:x", "cuda:-1", "cpu:1"])
def test_bad_device_strings_name_the_problem(bad):
    with pytest.raises(ValueError, match="device"):
        fm.device(bad)


def test_import_forgeml_does_not_import_cupy():
    code = "import sys, forgeml; print('cupy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_without_a_gpu_cuda_requests_fail_clearly():
    if fm.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    assert fm.cuda.device_count() == 0
    assert not fm.cuda_is_available()
    # ImportError naming the extra when CuPy is missing (as here and in CI), RuntimeError when it sees no GPU
    with pytest.raises((ImportError, RuntimeError), match=r"CuPy|CUDA"):
        fm.zeros(2, device="cuda")
    with pytest.raises((ImportError, RuntimeError), match=r"CuPy|CUDA"):
        fm.tensor([1.0]).cuda()
    with pytest.raises((ImportError, RuntimeError), match=r"CuPy|CUDA"):
        fm.cuda.memory_allocated()


def test_checked_cuda_device_roundtrip_and_namespace(checked_cuda):
    assert fm.cuda.is_available() and fm.cuda.device_count() == 1
    x = fm.tensor([[1.0, 2.0], [3.0, 4.0]]).cuda()
    assert x.device == fm.device("cuda:0") and x.is_cuda
    assert type(x._data) is CheckedArray
    assert backend_device.namespace_of(x._data) is checked_cuda
    back = x.cpu()
    assert back.device == fm.device("cpu") and isinstance(back._data, np.ndarray)
    np.testing.assert_array_equal(back.numpy(), [[1.0, 2.0], [3.0, 4.0]])
    with pytest.raises(TypeError, match="cpu\\(\\)"):
        x.numpy()
    assert "device='cuda:0'" in repr(x)
    with pytest.raises(RuntimeError, match="invalid device ordinal"):
        fm.zeros(1, device="cuda:1")


def test_mixing_devices_in_one_op_names_both(checked_cuda):
    a = fm.ones(3)
    b = fm.ones(3).cuda()
    with pytest.raises(RuntimeError, match="cpu and cuda:0"):
        a + b
    with pytest.raises(RuntimeError, match="cpu and cuda:0"):
        a < b


def test_stand_in_refuses_host_arrays_like_cupy(checked_cuda):
    x = fm.ones(3).cuda()
    with pytest.raises(TypeError, match="Implicit conversion"):
        np.asarray(x._data)
    with pytest.raises(TypeError):
        np.exp(x._data)
    with pytest.raises(TypeError, match="host"):
        x._data + np.ones(3)
    with pytest.raises(AttributeError, match="frompyfunc"):
        checked_cuda.frompyfunc
    with pytest.raises(AttributeError, match="is_cupy"):
        checked_cuda.ElementwiseKernel
    assert not backend_device.is_cupy(checked_cuda)
    assert type(x._data.sum()) is CheckedArray  # reductions give 0-d device arrays, as CuPy's do


def test_cuda_memory_statistics(checked_cuda):
    fm.cuda.reset_peak_memory_stats()
    before = fm.cuda.memory_allocated()
    big = fm.zeros(1 << 18, device="cuda")  # 1 MiB of float32
    assert fm.cuda.memory_allocated() - before == 1 << 20
    peak = fm.cuda.max_memory_allocated()
    assert peak >= before + (1 << 20)
    del big
    assert fm.cuda.memory_allocated() == before
    assert fm.cuda.max_memory_allocated() == peak
    fm.cuda.reset_peak_memory_stats()
    assert fm.cuda.max_memory_allocated() == before
    fm.cuda.synchronize()
    fm.cuda.empty_cache()
    assert fm.cuda.get_device_name() == "Checked CUDA stand-in"


def test_cuda_generator_is_seeded_by_manual_seed(checked_cuda):
    fm.manual_seed(123)
    a = fm.randn(5, device="cuda").cpu().numpy()
    fm.manual_seed(123)
    b = fm.randn(5, device="cuda").cpu().numpy()
    np.testing.assert_array_equal(a, b)
    fm.cuda.manual_seed(7)
    c = fm.rand(4, device="cuda").cpu().numpy()
    fm.cuda.manual_seed(7)
    np.testing.assert_array_equal(c, fm.rand(4, device="cuda").cpu().numpy())
    with pytest.raises(RuntimeError, match="'cuda' device type for generator"):
        fm.randn(3, device="cuda", generator=fm.Generator())
