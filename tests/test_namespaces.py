"""PyTorch's namespaces that programs use after ``import forgeml as torch``: utils.data, cuda, inference_mode,
backends, finfo/iinfo, set_num_threads, bfloat16."""

import importlib
import subprocess
import sys

import numpy as np
import pytest

import forgeml as fm

torch = pytest.importorskip("torch")


def test_utils_data_is_forgeml_data():
    import forgeml.utils.data as d
    from forgeml.utils.data import DataLoader, Dataset, Sampler, Subset, TensorDataset, random_split

    assert d is fm.data and fm.utils.data is fm.data
    assert (DataLoader, Dataset, Sampler, Subset, TensorDataset, random_split) == (
        fm.data.DataLoader,
        fm.data.Dataset,
        fm.data.Sampler,
        fm.data.Subset,
        fm.data.TensorDataset,
        fm.data.random_split,
    )
    assert importlib.import_module("forgeml.utils.data").get_worker_info is fm.data.get_worker_info
    ds = TensorDataset(fm.arange(10))
    a, b = random_split(ds, [6, 4])
    assert len(a) == 6 and isinstance(b, Subset)


def test_import_forgeml_stays_numpy_only():
    code = (
        "import sys, forgeml, forgeml.utils.data, forgeml.backends\n"
        "bad = [m for m in ('torch', 'threadpoolctl', 'ml_dtypes', 'cupy', 'pydantic') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_cuda_namespace():
    for name in (
        "is_available",
        "device_count",
        "current_device",
        "manual_seed",
        "manual_seed_all",
        "synchronize",
        "get_device_name",
        "empty_cache",
    ):
        assert callable(getattr(fm.cuda, name)), name
    assert isinstance(fm.cuda.is_available(), bool)
    assert fm.cuda.device_count() >= (1 if fm.cuda.is_available() else 0)
    fm.cuda.manual_seed(0)  # seeding is fine without a GPU, as in PyTorch
    fm.cuda.manual_seed_all(0)


def test_inference_mode_context_and_decorator():
    x = fm.ones(3, requires_grad=True)
    assert not fm.is_inference_mode_enabled()
    with fm.inference_mode():
        assert fm.is_inference_mode_enabled() and not fm.is_grad_enabled()
        y = x * 2
        with fm.inference_mode(False):
            assert not fm.is_inference_mode_enabled() and fm.is_grad_enabled()
            assert (x * 2).requires_grad
        assert fm.is_inference_mode_enabled()
    assert not y.requires_grad
    assert fm.is_grad_enabled() and not fm.is_inference_mode_enabled()

    @fm.inference_mode()
    def f(t):
        assert fm.is_inference_mode_enabled()
        return t * 3

    @fm.inference_mode
    def g(t):
        return t * 3

    def gen(t):
        for _ in range(2):
            yield (t * 2).requires_grad, fm.is_inference_mode_enabled()

    assert not f(x).requires_grad and not g(x).requires_grad
    assert list(fm.inference_mode()(gen)(x)) == [(False, True), (False, True)]
    assert f.__name__ == "f" and fm.is_grad_enabled() and not fm.is_inference_mode_enabled()
    with pytest.raises(ZeroDivisionError), fm.inference_mode():
        1 / 0
    assert fm.is_grad_enabled() and not fm.is_inference_mode_enabled()
    with pytest.raises(TypeError, match="bool"):
        fm.inference_mode("yes")


def test_backends_flags():
    assert fm.backends.cudnn.is_available() is False
    assert fm.backends.mps.is_available() is False
    for module, name, default in (
        (fm.backends.cudnn, "benchmark", torch.backends.cudnn.benchmark),
        (fm.backends.cudnn, "deterministic", torch.backends.cudnn.deterministic),
        (fm.backends.cudnn, "enabled", torch.backends.cudnn.enabled),
        (fm.backends.cuda.matmul, "allow_tf32", torch.backends.cuda.matmul.allow_tf32),
    ):
        assert getattr(module, name) == default, name
        setattr(module, name, not default)
        try:
            assert getattr(module, name) is (not default)
        finally:
            setattr(module, name, default)
    import forgeml.backends.cudnn as cudnn

    assert cudnn is fm.backends.cudnn


@pytest.mark.parametrize("name", ["float16", "bfloat16", "float32", "float64"])
def test_finfo_matches_torch(name):
    ours, theirs = fm.finfo(getattr(fm, name)), torch.finfo(getattr(torch, name))
    for attr in ("bits", "eps", "max", "min", "tiny", "smallest_normal", "resolution"):
        assert getattr(ours, attr) == getattr(theirs, attr), attr
    assert ours.dtype == theirs.dtype == name


def test_finfo_default_and_errors():
    assert fm.finfo().dtype == fm.get_default_dtype().name
    with pytest.raises(TypeError, match="floating point"):
        fm.finfo(fm.int32)
    with pytest.raises(TypeError, match="integer"):
        fm.iinfo(fm.float32)
    with pytest.raises(TypeError, match="integer"):
        fm.iinfo(fm.bool)


@pytest.mark.parametrize("name", ["uint8", "int8", "int16", "int32", "int64"])
def test_iinfo_matches_torch(name):
    ours, theirs = fm.iinfo(getattr(fm, name)), torch.iinfo(getattr(torch, name))
    assert (ours.bits, ours.max, ours.min, ours.dtype) == (theirs.bits, theirs.max, theirs.min, theirs.dtype)


def test_set_and_get_num_threads():
    before = fm.get_num_threads()
    assert before >= 1
    try:
        fm.set_num_threads(1)
        assert fm.get_num_threads() == 1
        from threadpoolctl import threadpool_info

        assert all(info["num_threads"] == 1 for info in threadpool_info())
        np.ones((64, 64)) @ np.ones((64, 64))  # still computes
    finally:
        fm.set_num_threads(before)
    assert fm.get_num_threads() == before
    with pytest.raises(ValueError, match="positive integer"):
        fm.set_num_threads(0)


def test_bfloat16_dtype():
    pytest.importorskip("ml_dtypes")
    x = fm.tensor([1.0, 2.5, 3.0]).to(fm.bfloat16)
    assert x.dtype is fm.bfloat16 and fm.bfloat16.is_floating_point and fm.bfloat16.itemsize == 2
    t = torch.tensor([1.0, 2.5, 3.0]).to(torch.bfloat16)
    np.testing.assert_array_equal(x.float().numpy(), t.float().numpy())
    assert (x * 2).dtype is fm.bfloat16
