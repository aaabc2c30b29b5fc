"""DLPack: ForgeML tensors share memory with PyTorch, NumPy and (on a GPU) CuPy, both ways.

Every round trip checks that the memory is shared, by writing on one side and
reading on the other, not only that the values match.
"""

import numpy as np
import pytest

import forgeml as fm
from forgeml.backend import array_module, is_cupy

torch = pytest.importorskip("torch")

DTYPES = [
    (fm.float32, torch.float32, np.float32),
    (fm.float64, torch.float64, np.float64),
    (fm.float16, torch.float16, np.float16),
    (fm.int64, torch.int64, np.int64),
    (fm.int32, torch.int32, np.int32),
    (fm.int8, torch.int8, np.int8),
    (fm.uint8, torch.uint8, np.uint8),
    (fm.bool, torch.bool, np.bool_),
]


def _sample(np_dtype, shape=(3, 4)):
    values = np.arange(int(np.prod(shape))).reshape(shape) % 7
    return (values % 2 == 1) if np_dtype is np.bool_ else values.astype(np_dtype)


# -- ForgeML -> PyTorch ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("fm_dtype", "torch_dtype", "np_dtype"), DTYPES, ids=lambda d: getattr(d, "name", None))
def test_torch_reads_forgeml_memory(fm_dtype, torch_dtype, np_dtype):
    t = fm.tensor(_sample(np_dtype), dtype=fm_dtype)
    theirs = torch.from_dlpack(t)
    assert theirs.dtype == torch_dtype
    assert theirs.shape == (3, 4)
    np.testing.assert_array_equal(theirs.numpy(), t.numpy())
    one = True if np_dtype is np.bool_ else 5
    theirs[1, 2] = one  # a write on the torch side ...
    assert t[1, 2].item() == one  # ... is seen by ForgeML
    zero = False if np_dtype is np.bool_ else 0
    t[0, 0] = zero  # and the other way
    assert theirs[0, 0].item() == zero


def test_torch_sees_forgeml_inplace_ops():
    t = fm.zeros(4)
    theirs = torch.from_dlpack(t)
    t.add_(2.5)
    assert theirs.tolist() == [2.5] * 4


@pytest.mark.parametrize(
    "view",
    [
        lambda t: t.T,
        lambda t: t[:, ::2],
        lambda t: t[1:, 1:3],
        lambda t: t.transpose(1, 0)[::2],
        lambda t: t.reshape(2, 2, 3).swapaxes(0, 2),
    ],
    ids=["transpose", "step", "slice", "permute_step", "3d_transpose"],
)
def test_strided_views_keep_their_strides_and_memory(view):
    base = fm.arange(12.0).reshape(3, 4)
    v = view(base)
    theirs = torch.from_dlpack(v)
    assert tuple(theirs.shape) == tuple(v.shape)
    assert theirs.stride() == v.stride()
    np.testing.assert_array_equal(theirs.numpy(), v.numpy())
    theirs.fill_(-1.0)  # writes land in the base's storage, exactly where the view is
    expected = np.arange(12.0).reshape(3, 4)
    view(expected)[...] = -1.0
    np.testing.assert_array_equal(base.numpy(), expected)


def test_zero_dim_and_empty_tensors():
    s = fm.tensor(3.5)
    theirs = torch.from_dlpack(s)
    assert theirs.shape == () and theirs.item() == 3.5
    theirs.fill_(1.0)
    assert s.item() == 1.0
    e = fm.zeros(0, 3)
    assert torch.from_dlpack(e).shape == (0, 3)
    back = fm.from_dlpack(torch.tensor(7, dtype=torch.int64))
    assert back.shape == () and back.dtype == fm.int64 and back.item() == 7


def test_broadcast_views_export_with_zero_strides():
    t = fm.arange(3.0).expand(2, 3)
    theirs = torch.from_dlpack(t)
    assert theirs.stride() == (0, 1)
    np.testing.assert_array_equal(theirs.numpy(), [[0, 1, 2], [0, 1, 2]])


# -- PyTorch -> ForgeML -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("fm_dtype", "torch_dtype", "np_dtype"), DTYPES, ids=lambda d: getattr(d, "name", None))
def test_forgeml_reads_torch_memory(fm_dtype, torch_dtype, np_dtype):
    theirs = torch.from_numpy(_sample(np_dtype))
    t = fm.from_dlpack(theirs)
    assert isinstance(t, fm.Tensor)
    assert t.dtype == fm_dtype and t.shape == (3, 4) and t.device == "cpu"
    assert not t.requires_grad
    np.testing.assert_array_equal(t.numpy(), theirs.numpy())
    one = True if np_dtype is np.bool_ else 3
    t[2, 3] = one
    assert theirs[2, 3].item() == one
    zero = False if np_dtype is np.bool_ else 0
    theirs[0, 1] = zero
    assert t[0, 1].item() == zero


def test_forgeml_keeps_torch_strides():
    theirs = torch.arange(24.0).reshape(4, 6).t()[::2, 1:]
    t = fm.from_dlpack(theirs)
    assert t.stride() == theirs.stride()
    np.testing.assert_array_equal(t.numpy(), theirs.numpy())
    theirs.mul_(2)
    np.testing.assert_array_equal(t.numpy(), theirs.numpy())


def test_imported_tensor_takes_part_in_autograd():
    theirs = torch.ones(3)
    t = fm.from_dlpack(theirs).requires_grad_()
    (t * t).sum().backward()
    np.testing.assert_array_equal(t.grad.numpy(), [2.0, 2.0, 2.0])


def test_torch_tensor_that_requires_grad_is_refused_by_torch():
    with pytest.raises(BufferError, match=r"Can't export tensors that require gradient, use tensor\.detach\(\)"):
        fm.from_dlpack(torch.ones(2, requires_grad=True))
    assert fm.from_dlpack(torch.ones(2, requires_grad=True).detach()).tolist() == [1.0, 1.0]


def test_dlpack_capsule_from_to_dlpack():
    theirs = torch.arange(6.0).reshape(2, 3)
    capsule = torch.utils.dlpack.to_dlpack(theirs)
    t = fm.from_dlpack(capsule)
    t[0, 0] = 9.0
    assert theirs[0, 0].item() == 9.0
    with pytest.raises(BufferError, match="consumed already"):
        fm.from_dlpack(capsule)
    strided = torch.arange(12.0).reshape(3, 4).t()[1:]
    t = fm.from_dlpack(torch.utils.dlpack.to_dlpack(strided))
    assert t.stride() == strided.stride()
    t.mul_(-1.0)
    np.testing.assert_array_equal(strided.numpy(), -np.arange(12.0).reshape(3, 4).T[1:])
    del t
    assert strided.sum().item() < 0  # the memory outlives the capsule's tensor as long as torch holds it
    source = np.arange(4.0)
    versioned = fm.from_dlpack(source.__dlpack__(max_version=(1, 0)))  # DLPack 1.x capsules too
    versioned[3] = -3.0
    assert source[3] == -3.0


def test_copy_argument():
    theirs = torch.zeros(3)
    copied = fm.from_dlpack(theirs, copy=True)
    copied[0] = 1.0
    assert theirs[0].item() == 0.0
    shared = fm.from_dlpack(theirs, copy=False)
    shared[0] = 2.0
    assert theirs[0].item() == 2.0
    capsule_copy = fm.from_dlpack(torch.utils.dlpack.to_dlpack(theirs), copy=True)
    capsule_copy[1] = 5.0
    assert theirs[1].item() == 0.0
    assert fm.from_dlpack(theirs, device="cpu").tolist() == [2.0, 0.0, 0.0]


# -- NumPy, both ways -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("fm_dtype", "torch_dtype", "np_dtype"), DTYPES, ids=lambda d: getattr(d, "name", None))
def test_numpy_both_ways(fm_dtype, torch_dtype, np_dtype):
    t = fm.tensor(_sample(np_dtype), dtype=fm_dtype)
    arr = np.from_dlpack(t)
    assert arr.dtype == np_dtype
    assert np.shares_memory(arr, t.numpy())
    arr[0, 0] = 1
    assert t[0, 0].item() == 1

    source = _sample(np_dtype)
    back = fm.from_dlpack(source)
    assert back.dtype == fm_dtype
    back[1, 1] = 0
    assert source[1, 1] == 0


def test_numpy_strided_and_zero_dim():
    source = np.arange(20.0).reshape(4, 5)[::2, 1::2]
    t = fm.from_dlpack(source)
    np.testing.assert_array_equal(t.numpy(), source)
    source[0, 0] = 100.0
    assert t[0, 0].item() == 100.0
    t0 = fm.from_dlpack(np.array(4.0))
    assert t0.shape == () and t0.item() == 4.0
    assert np.from_dlpack(fm.tensor(2)).shape == ()


# -- refusals and errors ------------------------------------------------------------------------------------------------
def test_tensor_that_requires_grad_refuses_export_like_torch():
    t = fm.ones(3, requires_grad=True)
    message = r"Can't export tensors that require gradient, use tensor\.detach\(\)"
    with pytest.raises(BufferError, match=message):
        torch.from_dlpack(t)
    with pytest.raises(BufferError, match=message):
        np.from_dlpack(t)
    with pytest.raises(BufferError, match=message):
        fm.from_dlpack(t)
    with pytest.raises(BufferError, match=message):
        torch.from_dlpack(t * 2)  # a non-leaf that requires grad too
    detached = t.detach()
    theirs = torch.from_dlpack(detached)
    theirs[0] = 4.0
    assert t[0].item() == 4.0  # detach() shares memory, as in PyTorch


def test_negative_strides_refuse_unless_copying():
    # PyTorch cannot hold negative strides (its importer aborts the process on them), so they are refused.
    t = fm.from_numpy(np.arange(4.0)[::-1])
    with pytest.raises(BufferError, match="negative strides"):
        torch.from_dlpack(t)
    assert torch.from_dlpack(t, copy=True).tolist() == [3.0, 2.0, 1.0, 0.0]
    assert torch.from_dlpack(t.contiguous()).tolist() == [3.0, 2.0, 1.0, 0.0]


@pytest.mark.parametrize("bad", [[1, 2, 3], 3.0, "tensor", object()])
def test_objects_without_the_protocol_are_rejected(bad):
    with pytest.raises(TypeError, match=rf"from_dlpack expects an object with __dlpack__.*got {type(bad).__name__}"):
        fm.from_dlpack(bad)


def test_memory_on_a_device_forgeml_cannot_hold():
    class OnOpenCL:
        def __dlpack__(self, **kwargs):
            raise AssertionError("never asked for a capsule")

        def __dlpack_device__(self):
            return (4, 0)

    with pytest.raises(BufferError, match="kDLOpenCL"):
        fm.from_dlpack(OnOpenCL())


def test_dtypes_forgeml_has_not():
    with pytest.raises(TypeError, match="unsupported array dtype complex64"):
        fm.from_dlpack(torch.zeros(2, dtype=torch.complex64))
    with pytest.raises(TypeError, match="no bfloat16"):  # DLPack has bfloat16, NumPy's reader does not
        fm.from_dlpack(torch.zeros(2, dtype=torch.bfloat16))
    with pytest.raises(BufferError, match="DLPack only supports"):  # and NumPy cannot export ml_dtypes' either
        torch.from_dlpack(fm.zeros(2, dtype=fm.bfloat16))


def test_protocol_arguments():
    t = fm.arange(3.0)
    assert t.__dlpack_device__() == (1, 0)
    assert "dltensor" in repr(t.__dlpack__())
    assert "dltensor_versioned" in repr(t.__dlpack__(max_version=(1, 0)))
    t.__dlpack__(stream=None)
    t.__dlpack__(stream=-1)  # PyTorch's "do not synchronise"
    with pytest.raises(BufferError, match="stream must be None for a cpu tensor"):
        t.__dlpack__(stream=1)
    with pytest.raises(BufferError):
        t.__dlpack__(max_version=(1, 0), copy=False, dl_device=(2, 0))  # NumPy cannot hand cpu memory to CUDA
    copied = np.from_dlpack(t, copy=True)
    copied[0] = 10.0
    assert t[0].item() == 0.0


def test_consumers_that_ask_with_every_keyword():
    t = fm.arange(4.0)
    arr = np.from_dlpack(t, device="cpu", copy=False)
    arr[1] = 7.0
    assert t[1].item() == 7.0


# -- CUDA -----------------------------------------------------------------------------------------------------------------
def test_cuda_memory_goes_through_the_cuda_namespace(cuda_device):
    """On the CuPy stand-in (or a GPU with FORGEML_TEST_REAL_CUDA=1): CUDA memory is read by the CUDA namespace."""
    xp = array_module("cuda")
    source = xp.arange(6, dtype=xp.float32).reshape(2, 3)
    t = fm.from_dlpack(source)
    assert t.device == "cuda:0"
    assert t.__dlpack_device__()[0] == 2  # kDLCUDA
    source[0, 1] = 42.0
    assert t[0, 1].item() == 42.0
    t[1, 2] = -1.0
    assert float(source[1, 2].get() if hasattr(source[1, 2], "get") else source[1, 2]) == -1.0
    with pytest.raises(BufferError, match="require gradient"):
        fm.from_dlpack(fm.ones(2, device="cuda", requires_grad=True))


def test_cuda_tensor_exports_to_cupy(cuda_device):
    xp = array_module("cuda")
    if not is_cupy(xp):
        pytest.skip("needs a GPU with CuPy (the stand-in's arrays live in host memory, which CuPy cannot import)")
    t = fm.zeros(4, device="cuda")
    theirs = xp.from_dlpack(t)
    theirs[2] = 5.0
    assert t[2].item() == 5.0
    if torch.cuda.is_available():
        tt = torch.from_dlpack(t)
        tt[0] = 3.0
        assert t[0].item() == 3.0


def test_imported_memory_outlives_its_producer():
    t = fm.from_dlpack(torch.arange(1000.0))  # the torch tensor is gone after this line; its storage is not
    u = fm.from_dlpack(torch.utils.dlpack.to_dlpack(torch.arange(1000.0)))
    junk = [torch.full((1000,), -1.0) for _ in range(20)]  # would reuse freed blocks
    assert t.sum().item() == u.sum().item() == sum(range(1000))
    del junk
