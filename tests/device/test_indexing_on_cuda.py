"""Indexing and in-place ops on ``device='cuda'``: reads, writes, scatter-adds, random fills, version counters.

Inputs live on the CUDA device; indices and masks come as lists, NumPy
arrays, CPU tensors or CUDA tensors (CPU ones are copied to the device, as
PyTorch's advanced indexing does). Forward values and gradients are compared
with PyTorch on the CPU. On a CPU machine ``cuda`` is the checked CuPy
stand-in of ``tests/checked_cuda.py``, which fails on any host/device mix-up
(a NumPy index array meeting device data, ``np.add.at`` on a device array);
with a GPU and ``FORGEML_TEST_REAL_CUDA=1`` the same tests run on CuPy.
"""

from __future__ import annotations

import numpy as np
import pytest

import forgeml as fm
from forgeml.autograd import gradcheck
from forgeml.backend.device import namespace_of
from forgeml.ops import indexing, inplace

from ..autograd.test_inplace_views import SCRIPTS as VIEW_SCRIPTS

torch = pytest.importorskip("torch")

CUDA = fm.device("cuda", 0)
CPU = fm.device("cpu")


def _host(t) -> np.ndarray:
    return t.detach().cpu().numpy()


def _cuda(a, dtype=np.float32, requires_grad=False):
    t = fm.tensor(np.asarray(a).astype(dtype)).to("cuda")
    return t.requires_grad_() if requires_grad else t


def _pair(shape, seed=0, dtype=np.float32):
    """The same random values as a CUDA leaf and a torch leaf, both requiring grad."""
    a = np.random.default_rng(seed).standard_normal(shape).astype(dtype)
    return _cuda(a, dtype, True), torch.tensor(a, requires_grad=True)


def _backward_both(f_out, t_out, seed=2):
    upstream = np.random.default_rng(seed).standard_normal(tuple(t_out.shape)).astype(np.float32)
    f_out.backward(_cuda(upstream, f_out._data.dtype))
    t_out.backward(torch.tensor(upstream, dtype=t_out.dtype))


def _close(ours, theirs, **tol):
    theirs = theirs.detach().numpy() if isinstance(theirs, torch.Tensor) else theirs
    np.testing.assert_allclose(_host(ours), theirs, **({"rtol": 1e-6, "atol": 1e-6} | tol))


# -- reading: x[index] ------------------------------------------------------------------------------
def _index_on(kind, values):
    """``values`` as an index of the given kind (ForgeML side) and as the torch index."""
    arr = np.asarray(values)
    theirs = torch.tensor(arr)
    if kind == "list":
        return list(values), theirs
    if kind == "numpy":
        return arr, theirs
    if kind == "cpu":
        return fm.tensor(arr), theirs
    return fm.tensor(arr).to("cuda"), theirs


INDEX_KINDS = ["list", "numpy", "cpu", "cuda"]

GETITEM = {
    "basic_slices": lambda a, idx: a[1:, None, ::2],
    "int_and_ellipsis": lambda a, idx: a[-1, ..., 2],
    "rows_repeated": lambda a, idx: a[idx([0, 0, 2])],
    "two_arrays": lambda a, idx: a[idx([0, 2, 0]), idx([1, 1, 1])],
    "columns": lambda a, idx: a[:, idx([4, 0, 4])],
    "negative_indices": lambda a, idx: a[idx([-1, 0, -3])],
    "array_then_slice": lambda a, idx: a[idx([2, 2]), 1:4],
    "none_then_array": lambda a, idx: a[None, idx([1, 0])],
    "ellipsis_then_array": lambda a, idx: a[..., idx([3, 3, 1])],
    "2d_index": lambda a, idx: a[idx([[0, 1], [2, 2]])],
    "bool_rows": lambda a, idx: a[idx([True, False, True])],
    "bool_mask_2d": lambda a, idx: a[idx((np.arange(15).reshape(3, 5) % 3) == 0)],
    "bool_columns": lambda a, idx: a[:, idx([False, True, True, False, True])],
}


@pytest.mark.parametrize("kind", INDEX_KINDS)
@pytest.mark.parametrize("name", list(GETITEM))
def test_getitem_matches_torch(name, kind, cuda_device):
    fx, tx = _pair((3, 5))
    f_out = GETITEM[name](fx, lambda v: _index_on(kind, v)[0])
    t_out = GETITEM[name](tx, lambda v: _index_on(kind, v)[1])
    assert f_out.device == CUDA
    assert f_out.shape == tuple(t_out.shape)
    _close(f_out, t_out)
    _backward_both(f_out, t_out)
    assert fx.grad.device == CUDA
    _close(fx.grad, tx.grad)


def test_getitem_with_a_mask_computed_on_the_device(cuda_device):
    fx, tx = _pair((4, 3))
    f_out, t_out = fx[fx > 0], tx[tx > 0]
    _close(f_out, t_out)
    _backward_both(f_out, t_out)
    _close(fx.grad, tx.grad)


def test_getitem_with_a_python_bool_and_a_cpu_integer_scalar_tensor(cuda_device):
    fx, tx = _pair((2, 3))
    _close(fx[True], tx[True])
    assert fx[False].shape == tuple(tx[False].shape) == (0, 2, 3)
    _close(fx[fm.tensor(1)], tx[torch.tensor(1)])


def test_basic_index_is_a_view_on_the_device(cuda_device):
    x = _cuda(np.arange(12.0).reshape(3, 4))
    row = x[1]
    row.add_(100)
    assert x._version == row._version == 1
    np.testing.assert_array_equal(_host(x)[1], np.arange(4.0, 8.0) + 100)


def test_out_of_range_index_array_raises_on_the_device_instead_of_wrapping(cuda_device):
    x = _cuda(np.zeros((3, 4)))
    with pytest.raises(IndexError, match=r"index 5 is out of bounds for axis 0 with size 3"):
        x[fm.tensor([0, 5])]
    with pytest.raises(IndexError, match=r"index -5 is out of bounds for axis 1 with size 4"):
        x[:, [1, -5]]
    with pytest.raises(IndexError, match=r"axis 1 with size 4"):
        x[..., fm.tensor([4]).to("cuda")]
    with pytest.raises(IndexError, match="size 3"):
        x[fm.tensor([3])] = 1.0
    assert x._version == 0


def test_cuda_indices_on_a_cpu_tensor_are_refused(cuda_device):
    x = fm.zeros(3, 4)
    with pytest.raises(RuntimeError, match=r"indices should be either on cpu or on the same device"):
        x[fm.tensor([0, 1]).to("cuda")]
    with pytest.raises(RuntimeError, match=r"mask should be either on cpu"):
        x.masked_fill(fm.zeros(3, 4, dtype=fm.bool).to("cuda"), 1.0)


def test_float_index_is_refused_naming_its_dtype(cuda_device):
    x = _cuda(np.zeros(3))
    with pytest.raises(IndexError, match="float32"):
        x[fm.tensor([0.0])]
    with pytest.raises(IndexError, match="float"):
        x[1.0]


# -- writing: x[index] = value ------------------------------------------------------------------------
def _setitem_script(lib, on_device):
    x = lib.zeros(3, 4)
    x = x.to("cuda") if on_device else x
    idx = lib.tensor([0, 2])
    x[1] = 2.0
    x[:, 0] = lib.tensor([1.0, 2.0, 3.0])  # a CPU value tensor
    x[x > 2.5] = -1.0  # a mask on the device
    x[[0, 2], [3, 3]] = 7.0
    x[idx, 1] = lib.tensor([4.0, 5.0])  # a CPU index tensor
    x[idx.to("cuda") if on_device else idx, 2] = 9.0
    x[lib.tensor([False, True, False])] = lib.tensor(8.0)
    x[2, 1:3] = np.array([0.5, 0.25], dtype=np.float32) if lib is fm else torch.tensor([0.5, 0.25])
    return x


def test_setitem_without_grad_matches_torch(cuda_device):
    ours = _setitem_script(fm, True)
    assert ours.device == CUDA and ours._version == 8
    _close(ours, _setitem_script(torch, False))


def test_setitem_leaves_the_tensor_unchanged_when_the_value_does_not_fit(cuda_device):
    x = _cuda(np.zeros((2, 3)))
    with pytest.raises(RuntimeError, match=r"cannot assign a value of shape \[4\]"):
        x[0] = fm.zeros(4)
    assert x._version == 0 and not _host(x).any()


def _setitem_with_grad(lib, x, v):
    y = x * 2
    y[1] = v * 3  # a row, the value broadcast from shape (4,)
    y[lib.tensor([0, 2]), 1:3] = v[:2] * v[2:]  # an advanced index with a CPU index tensor
    y[y > 1.5] = 0.0  # a mask
    z = x + 0
    z[:, 0] = v[0]  # a 0-d value broadcast down a column
    return (y * y).sum() + (z * x).sum()


def test_setitem_with_grad_matches_torch(cuda_device):
    fx, tx = _pair((3, 4), 5)
    fv, tv = _pair(4, 6)
    f_loss, t_loss = _setitem_with_grad(fm, fx, fv), _setitem_with_grad(torch, tx, tv)
    _close(f_loss, t_loss, rtol=1e-5)
    f_loss.backward()
    t_loss.backward()
    _close(fx.grad, tx.grad, rtol=1e-5)
    _close(fv.grad, tv.grad, rtol=1e-5)
    assert fx.grad.device == fv.grad.device == CUDA


def test_setitem_sums_the_gradient_of_a_value_broadcast_over_the_selection(cuda_device):
    fv, tv = _pair((1, 4), 3)
    outs = []
    for v, lib in ((fv, fm), (tv, torch)):
        y = lib.zeros(3, 4, dtype=lib.float32)
        y = y.to("cuda") if lib is fm else y
        y[lib.tensor([0, 2])] = v * 2  # a (1, 4) value broadcast over two rows
        y[1] = v * 3  # a (1, 4) value into a row of shape (4,): its leading 1 is dropped
        (y * lib.tensor(np.arange(12.0, dtype=np.float32).reshape(3, 4)).to(y.device)).sum().backward()
        outs.append((y, v.grad))
    for ours, theirs in zip(*outs):
        _close(ours, theirs)


class _CudaLib:
    """What the in-place view scripts need from ``lib``, making every tensor on the CUDA device."""

    float64 = fm.float64

    @staticmethod
    def tensor(data, requires_grad=False):
        return fm.tensor(data).to("cuda").requires_grad_(requires_grad)

    @staticmethod
    def zeros(*shape, dtype=None):
        return fm.zeros(*shape, dtype=dtype).to("cuda")


def _run_view_script(script, lib):
    rng = np.random.default_rng(0)
    a = lib.tensor(rng.standard_normal((3, 4)), requires_grad=True)
    w = lib.tensor(rng.standard_normal(4), requires_grad=True)
    out = script(a, w, lib)
    (out * out).sum().backward()
    return [t.detach().cpu().numpy() for t in (out, a.grad, w.grad)]


@pytest.mark.parametrize("name", sorted(VIEW_SCRIPTS))
def test_inplace_on_views_matches_torch(name, cuda_device):
    ours = _run_view_script(VIEW_SCRIPTS[name], _CudaLib)
    theirs = _run_view_script(VIEW_SCRIPTS[name], torch)
    for o, t in zip(ours, theirs):
        np.testing.assert_allclose(o, t, rtol=1e-12, atol=1e-12)


def _through_transposed_view(x, w):
    y = x * 1.5
    y.T[2] = w * w  # writes column 2 through a view of a transposed view
    y[:, 1:3].mul_(w[:, None].expand(3, 2))
    (y * y).sum().backward()
    return y


def test_setitem_on_a_transposed_view_with_grad_matches_torch(cuda_device):
    (fx, tx), (fw, tw) = _pair((3, 4), 8), _pair(3, 9)
    _close(_through_transposed_view(fx, fw), _through_transposed_view(tx, tw), rtol=1e-5)
    _close(fx.grad, tx.grad, rtol=1e-5)
    _close(fw.grad, tw.grad, rtol=1e-5)


VIEWS = {
    "row": lambda a: a[1],
    "column": lambda a: a[:, 2],
    "transposed": lambda a: a.T,
    "strided": lambda a: a[::2, 1::2],
    "reversed": lambda a: a[::-1, ::-2],
    "reversed_slice": lambda a: a[2:0:-1, 3],
    "empty": lambda a: a[1:1],
    "scalar": lambda a: a[2, 3, ...],
}


@pytest.mark.parametrize("name", list(VIEWS))
def test_flat_positions_of_device_views_match_the_host(name, checked_cuda):
    """On namespaces without data pointers the view's offset is found from memory bounds: same positions."""
    host_base = np.arange(12.0, dtype=np.float32).reshape(3, 4)
    base = checked_cuda.asarray(host_base)
    view = VIEWS[name](base)
    expected = inplace._flat_positions(host_base, VIEWS[name](host_base))
    positions = inplace._flat_positions(base, view)
    assert type(positions) is type(base)
    np.testing.assert_array_equal(positions.get(), expected)
    np.testing.assert_array_equal(base.reshape(-1)[positions].get(), VIEWS[name](host_base))


# -- gather, scatter_add, index_select, masked_fill, nonzero --------------------------------------------
IDX = np.array([[0, 0], [1, 0], [4, 4]])
IDX1 = np.array([0, 0, 3, 4])


def _on(kind, arr):
    t = fm.tensor(arr)
    return t.to("cuda") if kind == "cuda" else t


@pytest.mark.parametrize("kind", ["cpu", "cuda"])
def test_gather_scatter_add_index_select_match_torch(kind, cuda_device):
    fx, tx = _pair((3, 5), 1)
    fs, ts = _pair((3, 2), 2)
    cases = [
        (fx.gather(1, _on(kind, IDX)), tx.gather(1, torch.tensor(IDX))),
        (fm.gather(fx, 0, _on(kind, IDX.T[:, :2] % 3)), torch.gather(tx, 0, torch.tensor(IDX.T[:, :2] % 3))),
        (fx.scatter_add(1, _on(kind, IDX), fs), tx.scatter_add(1, torch.tensor(IDX), ts)),
        (fx.index_select(1, _on(kind, IDX1)), tx.index_select(1, torch.tensor(IDX1))),
        (fm.index_select(fx, 0, _on(kind, np.array([2, 2, 0]))), torch.index_select(tx, 0, torch.tensor([2, 2, 0]))),
    ]
    f_total = t_total = 0
    for i, (f_out, t_out) in enumerate(cases):
        assert f_out.device == CUDA
        _close(f_out, t_out)
        weights = np.random.default_rng(i).standard_normal(tuple(t_out.shape)).astype(np.float32)
        f_total = f_total + (f_out * _cuda(weights)).sum()
        t_total = t_total + (t_out * torch.tensor(weights)).sum()
    f_total.backward()
    t_total.backward()
    _close(fx.grad, tx.grad, rtol=1e-5)
    _close(fs.grad, ts.grad, rtol=1e-5)


def test_gather_family_checks_ranges_on_the_device(cuda_device):
    x = _cuda(np.zeros((2, 3)))
    with pytest.raises(IndexError, match="size 3"):
        x.gather(1, fm.tensor([[0, 5]]).to("cuda"))
    with pytest.raises(IndexError, match="size 2"):
        x.index_select(0, fm.tensor([5]))
    with pytest.raises(RuntimeError, match="float32"):
        x.index_select(0, fm.tensor([0.0]).to("cuda"))


@pytest.mark.parametrize("mask_kind", ["device", "cpu", "numpy"])
def test_masked_fill_matches_torch(mask_kind, cuda_device):
    fx, tx = _pair((3, 5), 4)
    fv, tv = _pair(2, 5)
    t_mask = tx > 0
    mask = {"device": fx > 0, "cpu": fm.tensor(t_mask.numpy()), "numpy": t_mask.numpy()}[mask_kind]
    f_out = fx.masked_fill(mask, 0.5) * fx.masked_fill(mask, fv.sum())
    t_out = tx.masked_fill(t_mask, 0.5) * tx.masked_fill(t_mask, tv.sum())
    _close(f_out, t_out)
    _backward_both(f_out, t_out)
    _close(fx.grad, tx.grad)
    _close(fv.grad, tv.grad, rtol=1e-5)
    # a 0-d value from the CPU, and a mask broadcast along the rows
    row_mask = np.array([True, False, True, False, False])
    ours = _cuda(np.zeros((2, 5))).masked_fill(fm.tensor(row_mask), fm.tensor(3.0))
    np.testing.assert_array_equal(_host(ours), torch.zeros(2, 5).masked_fill(torch.tensor(row_mask), 3.0).numpy())


def test_nonzero_and_where_matches_torch(cuda_device):
    a = np.array([[0.0, 1.5, 0.0], [2.0, 0.0, -1.0]], dtype=np.float32)
    x, t = _cuda(a), torch.tensor(a)
    out = x.nonzero()
    assert out.device == CUDA and out.dtype == fm.int64
    np.testing.assert_array_equal(_host(out), t.nonzero().numpy())
    for ours, theirs in zip(fm.nonzero(x, as_tuple=True), t.nonzero(as_tuple=True)):
        assert ours.device == CUDA
        np.testing.assert_array_equal(_host(ours), theirs.numpy())
    for ours, theirs in zip(fm.where(x > 0), torch.where(t > 0)):
        np.testing.assert_array_equal(_host(ours), theirs.numpy())
    assert _host(_cuda(np.zeros(())).reshape(1).nonzero()).shape == (0, 1)


def test_indexing_gradients_pass_gradcheck_on_the_device(cuda_device):
    rng = np.random.default_rng(0)
    x = _cuda(rng.standard_normal((3, 5)), np.float64, True)
    idx = fm.tensor(IDX)
    assert gradcheck(lambda a: a[[0, 0, 2]] * a[:, fm.tensor([4, 0, 4])].sum(1, keepdim=True), [x])
    assert gradcheck(lambda a: a.gather(1, idx).exp() + a.index_select(1, fm.tensor(IDX1)).sum(), [x])
    src = _cuda(rng.standard_normal((3, 2)), np.float64, True)
    assert gradcheck(lambda a, s: a.scatter_add(1, idx, s).sin(), [x, src])


# -- the scatter-add helper -------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["float16", "float32", "float64", "int64", "int32", "int8", "uint8", "bool"])
def test_add_at_on_the_device_matches_numpy_add_at(dtype, checked_cuda):
    """Dtypes without a CUDA atomic add accumulate in a wider one; the sums (and wrap-arounds) stay NumPy's."""
    rng = np.random.default_rng(7)
    if np.dtype(dtype).kind == "f":
        start, values = (rng.standard_normal(s) * 50 for s in ((4, 3), (6, 3)))
    else:
        low = 0 if np.dtype(dtype).kind in "ub" else -100
        start, values = (rng.integers(low, 100 if dtype != "bool" else 2, s) for s in ((4, 3), (6, 3)))
    start, values = start.astype(dtype), values.astype(dtype)
    rows = np.array([0, 3, 3, 1, 0, 3])
    expected = start.copy()
    if dtype == "float16":  # the device accumulates float16 in float32
        wide = start.astype(np.float32)
        np.add.at(wide, rows, values.astype(np.float32))
        expected = wide.astype(np.float16)
    else:
        np.add.at(expected, rows, values)
    out = indexing.add_at(checked_cuda.asarray(start), (checked_cuda.asarray(rows),), checked_cuda.asarray(values))
    assert namespace_of(out) is checked_cuda and out.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(out.get(), expected)


def test_float16_index_select_gradient_accumulates_in_float32_on_the_device(cuda_device):
    x = _cuda(np.zeros(4), np.float16, True)
    many = fm.tensor(np.zeros(3000, dtype=np.int64))
    x.index_select(0, many).sum().backward()
    assert x.grad.dtype == fm.float16
    # 3000 float16 additions of 1 would stall at 2048; the float32 accumulator counts them all
    assert _host(x.grad)[0] == 3000.0


def test_add_at_on_the_cpu_is_numpy_add_at():
    target = np.zeros(3, dtype=np.float32)
    out = indexing.add_at(target, (np.array([0, 0, 2]),), np.array([1.0, 2.0, 3.0], dtype=np.float32))
    assert out is target
    np.testing.assert_array_equal(target, [3.0, 0.0, 3.0])


# -- in-place ops -------------------------------------------------------------------------------------------
def _inplace_script(lib, to):
    x = to(lib.tensor(np.arange(12, dtype=np.float32).reshape(3, 4) - 5))
    x.add_(to(lib.tensor([1.0, 2.0, 3.0, 4.0])))
    x.sub_(0.5, alpha=2)
    x.mul_(to(lib.tensor([[2.0], [0.5], [1.0]])))
    x.div_(3)
    x[0].clamp_(-1.0, 1.0)
    x[1].clamp_(min=to(lib.tensor(0.25)))
    x += 1
    x *= to(lib.full((4,), 2.0))
    x.masked_fill_(lib.tensor(np.eye(3, 4, dtype=bool)), -7.0)  # a CPU mask
    x[2].fill_(lib.tensor(0.125))  # a 0-d CPU value
    return x


def test_inplace_arithmetic_matches_torch(cuda_device):
    ours = _inplace_script(fm, lambda t: t.to("cuda"))
    assert ours.device == CUDA and ours._version == 10
    _close(ours, _inplace_script(torch, lambda t: t))


def test_copy_from_a_cpu_tensor_into_a_cuda_tensor_carries_gradients(cuda_device):
    src = fm.tensor(np.arange(4.0), requires_grad=True)
    t_src = torch.tensor(np.arange(4.0, dtype=np.float32), requires_grad=True)
    for lib, s, to in ((fm, src, lambda t: t.to("cuda")), (torch, t_src, lambda t: t)):
        y = to(lib.ones(3, 4)) * 2
        y.copy_(s * 3)  # broadcast over the rows, cast float64 -> float32 on ForgeML's side
        (y * y).sum().backward()
    assert src.grad.device == CPU
    np.testing.assert_allclose(src.grad.numpy(), t_src.grad.numpy())
    x = _cuda(np.zeros((2, 2)))
    x.copy_(fm.tensor([[1, 2], [3, 4]]))  # int64 on the CPU into float32 on the device
    np.testing.assert_array_equal(_host(x), [[1, 2], [3, 4]])
    host = fm.zeros(2)
    host.copy_(_cuda([5.0, 6.0]))
    np.testing.assert_array_equal(host.numpy(), [5.0, 6.0])


def test_inplace_with_an_operand_on_another_device_is_refused(cuda_device):
    x = _cuda(np.zeros(3))
    with pytest.raises(RuntimeError, match="same device"):
        x.add_(fm.ones(3))
    with pytest.raises(RuntimeError, match="same device"):
        x.requires_grad_()
        (x * 1).mul_(fm.ones(3))
    assert x._version == 0


def test_fill_zero_and_clamp_with_grad_match_torch(cuda_device):
    fx, tx = _pair((2, 3), 11)
    fv, tv = _pair((), 12)
    outs = []
    for x, v in ((fx, fv), (tx, tv)):
        y = x * 3
        y[0].fill_(v * 2)
        z = x * 1
        z.clamp_(-0.5, 0.5)
        w = x + 0
        w[1].zero_()
        ((y * y).sum() + (z * x).sum() + (w * w).sum()).backward()
        outs.append((x.grad, v.grad))
    for ours, theirs in zip(*outs):
        _close(ours, theirs, rtol=1e-5)


@pytest.mark.parametrize("op", ["uniform_", "normal_"])
def test_random_fills_draw_on_the_device_reproducibly(op, cuda_device):
    args = {"uniform_": (-2.0, 3.0), "normal_": (1.0, 0.5)}[op]
    draws = []
    for _ in range(2):
        fm.manual_seed(123)
        x = _cuda(np.zeros((64, 32)))
        assert getattr(x, op)(*args) is x and x._version == 1
        draws.append(_host(x))
    np.testing.assert_array_equal(draws[0], draws[1])
    assert draws[0].dtype == np.float32 and len(np.unique(draws[0])) > 1000
    if op == "uniform_":
        assert draws[0].min() >= -2.0 and draws[0].max() <= 3.0
    else:
        assert abs(draws[0].mean() - 1.0) < 0.05 and abs(draws[0].std() - 0.5) < 0.05
    gen = fm.Generator(device="cuda").manual_seed(5)
    again = fm.Generator(device="cuda").manual_seed(5)
    a, b = _cuda(np.zeros(8)), _cuda(np.zeros(8))
    getattr(a, op)(*args, generator=gen)
    getattr(b, op)(*args, generator=again)
    np.testing.assert_array_equal(_host(a), _host(b))
    with pytest.raises(RuntimeError, match="generator"):
        getattr(_cuda(np.zeros(2)), op)(generator=fm.Generator())


def test_random_fills_on_the_cpu_draw_the_same_bits_as_numpy():
    fm.manual_seed(9)
    x = fm.zeros(5, 7).uniform_(-1.0, 2.0)
    y = fm.zeros(3, dtype=fm.float64).normal_(0.5, 2.0)
    rng = np.random.Generator(np.random.PCG64(9))
    np.testing.assert_array_equal(x.numpy(), rng.uniform(-1.0, 2.0, size=(5, 7)).astype(np.float32))
    np.testing.assert_array_equal(y.numpy(), rng.normal(0.5, 2.0, size=(3,)))


# -- version counters ---------------------------------------------------------------------------------------
def test_version_counter_errors_on_the_device(cuda_device):
    x = _cuda(np.ones(3), requires_grad=True)
    y = x.exp()  # exp saves its output
    y.add_(1)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.sum().backward()
    with pytest.raises(RuntimeError, match="leaf Variable"):
        x.mul_(2)
    with pytest.raises(RuntimeError, match="leaf Variable"):
        x[0] = 1.0
    with fm.no_grad():
        x[0] = 5.0  # allowed outside grad mode, and counted
    assert x._version == 1
    z = x * 2
    early = z[0:2]
    z[fm.tensor([2])] = 0.0
    with pytest.raises(RuntimeError, match="modified in place"):
        early * 1


# -- bitwise operators ----------------------------------------------------------------------------------------
def test_bitwise_operators_compute_on_the_device(cuda_device):
    a = np.array([[1, 6, 12], [7, 0, 5]])
    b = np.array([3, 10, 4])
    x, y = _cuda(a, np.int64), _cuda(b, np.int64)
    ta, tb = torch.tensor(a), torch.tensor(b)
    for ours, theirs in ((x & y, ta & tb), (x | y, ta | tb), (x ^ y, ta ^ tb), (x & 6, ta & 6), (x | 8, ta | 8)):
        assert ours.device == CUDA and ours.dtype.name == str(theirs.dtype).removeprefix("torch.")
        np.testing.assert_array_equal(_host(ours), theirs.numpy())
    m, n = x > 4, y > 4
    np.testing.assert_array_equal(_host(m & n), ((ta > 4) & (tb > 4)).numpy())
    np.testing.assert_array_equal(_host(m ^ True), ((ta > 4) ^ True).numpy())
    np.testing.assert_array_equal(_host(~x), (~ta).numpy())
    with pytest.raises(RuntimeError, match="same device"):
        x & fm.tensor(b)
