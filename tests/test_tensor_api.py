"""forgeml.Tensor: attributes, autograd flags, conversions and metadata, checked against PyTorch."""

from __future__ import annotations

import copy
import itertools
import pickle
import re

import numpy as np
import pytest

import forgeml as fm

torch = pytest.importorskip("torch")


def torch_dtype(dt):
    return getattr(torch, dt.name)


def same_dtype(f, t) -> bool:
    return f.dtype.name == str(t.dtype).removeprefix("torch.")


# ------------------------------------------------------------------ attributes
def test_attributes_of_a_fresh_tensor():
    t = fm.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    assert isinstance(t._data, np.ndarray)
    assert t._data.shape == (2, 3)
    assert t.requires_grad is False
    assert t.grad is None
    assert t.grad_fn is None
    assert t.is_leaf is True
    assert t.dtype is fm.float32
    assert t.shape == (2, 3)
    assert t.ndim == 2
    assert t.device == fm.device("cpu")
    assert t.device.type == "cpu"
    assert isinstance(t.id, int)


def test_device_looks_like_torch_device():
    t = fm.zeros(2)
    assert repr(t.device) == repr(torch.zeros(2).device)
    assert str(t.device) == "cpu"
    assert t.device == "cpu"
    assert t.is_cuda is False


def test_ids_are_unique_and_increasing():
    a = fm.zeros(1)
    b = fm.ones(2)
    c = a + 1  # op outputs get ids too
    d = a.detach()
    e = fm.Tensor(np.zeros(3))
    f = a.clone()
    ids = [t.id for t in (a, b, c, d, e, f)]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    many = [fm.zeros(1).id for _ in range(50)]
    assert all(x < y for x, y in itertools.pairwise(many))
    assert many[0] > f.id


def test_id_is_stable_for_one_tensor():
    t = fm.zeros(3)
    first = t.id
    t.add_(1)
    assert t.id == first


def test_is_leaf_and_grad_fn():
    x = fm.tensor([1.0, 2.0], requires_grad=True)
    y = x * 3
    z = y.sum()
    assert x.is_leaf and x.grad_fn is None
    assert not y.is_leaf and y.grad_fn is not None
    assert not z.is_leaf
    assert y.requires_grad and z.requires_grad
    # a tensor that does not require grad is a leaf, even when computed from others
    w = fm.tensor([1.0]) * 2
    assert w.is_leaf and w.grad_fn is None and not w.requires_grad
    with fm.no_grad():
        q = x * 2
    assert q.is_leaf and not q.requires_grad


def test_requires_grad_flag_set_by_op_inputs_matches_torch():
    x = fm.tensor([1.0, 2.0], requires_grad=True)
    c = fm.tensor([3.0, 4.0])
    tx = torch.tensor([1.0, 2.0], requires_grad=True)
    tc = torch.tensor([3.0, 4.0])
    assert (x + c).requires_grad == (tx + tc).requires_grad
    assert (c + c).requires_grad == (tc + tc).requires_grad


# ------------------------------------------------------------- requires_grad_
def test_requires_grad_underscore_returns_self_and_toggles():
    t = fm.tensor([1.0, 2.0])
    assert t.requires_grad_() is t
    assert t.requires_grad is True
    assert t.requires_grad_(False) is t
    assert t.requires_grad is False
    t.requires_grad = True
    assert t.requires_grad is True


def test_requires_grad_false_on_non_leaf_raises_like_torch():
    x = fm.tensor([1.0], requires_grad=True)
    y = x * 2
    with pytest.raises(RuntimeError, match="leaf"):
        y.requires_grad_(False)
    tx = torch.tensor([1.0], requires_grad=True)
    with pytest.raises(RuntimeError, match="leaf"):
        (tx * 2).requires_grad_(False)
    assert y.requires_grad  # unchanged


def test_requires_grad_on_int_tensor_raises_naming_dtype():
    t = fm.tensor([1, 2])
    with pytest.raises(RuntimeError, match="int64"):
        t.requires_grad_()
    assert t.requires_grad is False


# ------------------------------------------------------------ backward, grads
def test_backward_fills_grad_of_leaves_like_torch():
    a = np.array([[1.0, -2.0], [3.0, 0.5]], dtype=np.float32)
    x = fm.tensor(a, requires_grad=True)
    tx = torch.tensor(a, requires_grad=True)
    (x * x * 3).sum().backward()
    (tx * tx * 3).sum().backward()
    assert isinstance(x.grad, fm.Tensor)
    assert x.grad.dtype is fm.float32
    np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy(), rtol=1e-6)


def test_grad_accumulates_across_backward_calls():
    x = fm.tensor([1.0, 2.0], requires_grad=True)
    (x * 2).sum().backward()
    (x * 3).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [5.0, 5.0])


def test_retain_grad_keeps_non_leaf_grad():
    x = fm.tensor([1.0, 2.0, 3.0], requires_grad=True)
    y = x * 2
    z = y * 5
    y.retain_grad()
    z.sum().backward()
    assert y.retains_grad
    np.testing.assert_allclose(y.grad.numpy(), [5.0, 5.0, 5.0])
    assert z.grad is None  # no retain_grad: a non-leaf keeps no grad
    np.testing.assert_allclose(x.grad.numpy(), [10.0, 10.0, 10.0])


def test_retained_grad_accumulates_like_torch():
    results = []
    for lib in (fm, torch):
        x = lib.tensor([1.0, 2.0], requires_grad=True)
        y = x * 2
        y.retain_grad()
        (y * y).sum().backward(retain_graph=True)
        (y * y).sum().backward()
        results.append((y.grad.tolist(), x.grad.tolist()))
    assert results[0] == results[1]


def test_retain_grad_on_leaf_is_noop_and_raises_without_requires_grad():
    x = fm.tensor([1.0], requires_grad=True)
    x.retain_grad()
    (x * 2).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [2.0])
    with pytest.raises(RuntimeError, match="requires_grad"):
        fm.tensor([1.0]).retain_grad()


def test_register_hook_sees_grad_and_can_replace_it():
    x = fm.tensor([1.0, 2.0, 3.0], requires_grad=True)
    seen = []

    def hook(g):
        seen.append(g.tolist())
        return g * 10

    handle = x.register_hook(hook)
    (x * x).sum().backward()
    assert seen == [[2.0, 4.0, 6.0]]
    np.testing.assert_allclose(x.grad.numpy(), [20.0, 40.0, 60.0])

    handle.remove()
    x.grad = None
    (x * x).sum().backward()
    assert len(seen) == 1  # removed hooks are not called
    np.testing.assert_allclose(x.grad.numpy(), [2.0, 4.0, 6.0])


def test_register_hook_on_non_leaf_changes_upstream_grad_like_torch():
    a = np.array([1.0, -2.0], dtype=np.float32)
    x = fm.tensor(a, requires_grad=True)
    tx = torch.tensor(a, requires_grad=True)
    y, ty = x * 3, tx * 3
    y.register_hook(lambda g: g * 2)
    ty.register_hook(lambda g: g * 2)
    (y * y).sum().backward()
    (ty * ty).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy())


def test_register_hook_requires_grad():
    with pytest.raises(RuntimeError, match="require"):
        fm.tensor([1.0]).register_hook(lambda g: g)


# ------------------------------------------------------------------- detach
def test_detach_shares_storage_and_cuts_graph():
    x = fm.tensor([1.0, 2.0, 3.0], requires_grad=True)
    d = x.detach()
    assert d.requires_grad is False
    assert d.grad_fn is None and d.is_leaf
    assert np.shares_memory(d._data, x._data)
    d.numpy()[0] = 42.0
    assert x._data[0] == 42.0
    y = x * 2
    assert y.detach().grad_fn is None
    assert d.id != x.id


# ------------------------------------------------------------------- numpy()
def test_numpy_is_zero_copy():
    t = fm.tensor([1.0, 2.0, 3.0])
    arr = t.numpy()
    assert isinstance(arr, np.ndarray)
    assert arr.dtype == np.float32
    assert np.shares_memory(arr, t._data)
    arr[1] = 7.0
    assert t.tolist() == [1.0, 7.0, 3.0]
    t.add_(1)  # in-place tensor writes show in the array
    assert arr.tolist() == [2.0, 8.0, 4.0]


def test_numpy_of_a_view_shares_the_base_storage():
    t = fm.arange(6.0).reshape(2, 3)
    v = t.T.numpy()
    v[0, 1] = -1.0
    assert t._data[1, 0] == -1.0


def test_numpy_raises_for_requires_grad_like_torch():
    x = fm.tensor([1.0], requires_grad=True)
    with pytest.raises(RuntimeError, match=r"detach\(\)\.numpy\(\)"):
        x.numpy()
    with pytest.raises(RuntimeError, match="requires grad"):
        torch.tensor([1.0], requires_grad=True).numpy()
    np.testing.assert_array_equal(x.detach().numpy(), [1.0])


def test_numpy_force_copies():
    x = fm.tensor([1.0, 2.0], requires_grad=True)
    arr = x.numpy(force=True)
    assert not np.shares_memory(arr, x._data)
    np.testing.assert_array_equal(arr, [1.0, 2.0])


# -------------------------------------------------------- from_numpy / tensor
def test_from_numpy_is_zero_copy_both_ways():
    a = np.arange(6, dtype=np.float64).reshape(2, 3)
    t = fm.from_numpy(a)
    assert t.dtype is fm.float64
    assert t._data is a or np.shares_memory(t._data, a)
    a[0, 0] = 100.0
    assert t[0, 0].item() == 100.0
    t[1, 2] = -5.0
    assert a[1, 2] == -5.0
    t.mul_(2)
    assert a[0, 0] == 200.0


@pytest.mark.parametrize("np_dtype", [np.float16, np.float32, np.float64, np.int32, np.int64, np.bool_])
def test_from_numpy_keeps_dtype_like_torch(np_dtype):
    a = np.zeros(3, dtype=np_dtype)
    assert same_dtype(fm.from_numpy(a), torch.from_numpy(a))


def test_tensor_copies_ndarray():
    a = np.array([1.0, 2.0], dtype=np.float32)
    t = fm.tensor(a)
    assert not np.shares_memory(t._data, a)
    a[0] = 99.0
    assert t.tolist() == [1.0, 2.0]
    t.add_(1)
    assert a.tolist() == [99.0, 2.0]


def test_tensor_copies_ndarray_even_when_dtype_already_matches():
    a = np.array([1.0, 2.0], dtype=np.float32)
    t = fm.tensor(a, dtype=fm.float32)
    assert not np.shares_memory(t._data, a)
    a[0] = 5.0
    assert t.tolist() == [1.0, 2.0]


def test_tensor_of_requires_grad_tensor_is_a_fresh_leaf_like_torch():
    x = fm.tensor([1.0, 2.0], requires_grad=True)
    t = fm.tensor(x * 2)
    assert t.is_leaf and t.requires_grad is False and t.grad_fn is None
    assert t.tolist() == [2.0, 4.0]


def test_tensor_copies_tensor():
    src = fm.tensor([1.0, 2.0])
    t = fm.tensor(src)
    assert not np.shares_memory(t._data, src._data)
    src.add_(10)
    assert t.tolist() == [1.0, 2.0]


def test_tensor_constructor_wraps_ndarray_without_copy():
    a = np.ones((2, 2), dtype=np.float32)
    t = fm.Tensor(a)
    assert t._data is a
    a[0, 0] = 3.0
    assert t[0, 0].item() == 3.0
    assert t.requires_grad is False and t.is_leaf
    assert fm.Tensor(a, requires_grad=True).requires_grad


def test_tensor_constructor_from_list():
    t = fm.Tensor([[1.0, 2.0]])
    assert t.shape == (1, 2)
    assert t.dtype is fm.float32


# ------------------------------------------------------------- item / tolist
@pytest.mark.parametrize(
    "value, dtype",
    [(3.5, "float32"), (2.0, "float64"), (7, "int64"), (-3, "int32"), (True, "bool"), (0.5, "float16")],
)
def test_item_matches_torch(value, dtype):
    f = fm.tensor([value], dtype=getattr(fm, dtype)).item()
    t = torch.tensor([value], dtype=getattr(torch, dtype)).item()
    assert f == t
    assert type(f) is type(t)


@pytest.mark.parametrize(
    "data, dtype",
    [
        ([[1, 2], [3, 4]], None),
        ([[1.5, 2.0]], None),
        ([True, False], None),
        (2.5, None),
        ([[[1]], [[2]]], "int32"),
        ([], None),
    ],
)
def test_tolist_matches_torch(data, dtype):
    f = fm.tensor(data, dtype=getattr(fm, dtype) if dtype else None).tolist()
    t = torch.tensor(data, dtype=getattr(torch, dtype) if dtype else None).tolist()
    assert f == t
    flat_f = f
    flat_t = t
    while isinstance(flat_f, list) and flat_f:
        flat_f, flat_t = flat_f[0], flat_t[0]
    assert type(flat_f) is type(flat_t)


# ------------------------------------------------------------------- clone
def test_clone_copies_storage():
    x = fm.tensor([1.0, 2.0])
    c = x.clone()
    assert not np.shares_memory(c._data, x._data)
    c.add_(5)
    assert x.tolist() == [1.0, 2.0]
    assert c.dtype is x.dtype
    assert fm.clone(x).tolist() == [1.0, 2.0]


def test_clone_is_differentiable():
    x = fm.tensor([1.0, 2.0, 3.0], requires_grad=True)
    c = x.clone()
    assert c.requires_grad and c.grad_fn is not None and not c.is_leaf
    (c * c).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [2.0, 4.0, 6.0])


def test_clone_of_non_requires_grad_has_no_graph():
    c = fm.tensor([1.0]).clone()
    assert c.grad_fn is None and not c.requires_grad


# --------------------------------------------------------------- contiguous
def test_contiguous_on_transposed_returns_c_contiguous_copy():
    x = fm.arange(6.0).reshape(2, 3)
    xt = x.T
    assert not xt.is_contiguous()
    c = xt.contiguous()
    assert c is not xt
    assert c.is_contiguous()
    assert c._data.flags.c_contiguous
    assert c.stride() == torch.arange(6.0).reshape(2, 3).T.contiguous().stride()
    np.testing.assert_array_equal(c.numpy(), xt.numpy())
    assert not np.shares_memory(c._data, x._data)


def test_contiguous_on_contiguous_returns_same_tensor():
    x = fm.zeros(2, 3)
    assert x.contiguous() is x
    tx = torch.zeros(2, 3)
    assert tx.contiguous() is tx


def test_contiguous_is_differentiable():
    x = fm.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    c = x.T.contiguous()
    (c * fm.tensor([[1.0, 2.0], [3.0, 4.0]])).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [[1.0, 3.0], [2.0, 4.0]])


# ------------------------------------------------------------------- to(...)
def test_to_same_dtype_or_device_returns_self():
    x = fm.randn(2, 3)
    assert x.to(fm.float32) is x
    assert x.to("cpu") is x
    assert x.to(fm.device("cpu")) is x
    assert x.to(device="cpu") is x
    assert x.cpu() is x


@pytest.mark.parametrize("target", ["float16", "float32", "float64", "int32", "int64", "bool"])
@pytest.mark.parametrize("source", ["float32", "float64", "int64", "bool"])
def test_to_dtype_values_match_torch(source, target):
    data = [[-1.7, 0.0], [2.5, 3.0]] if source.startswith("float") else [[-1, 0], [2, 3]]
    if source == "bool":
        data = [[True, False], [False, True]]
    f = fm.tensor(data, dtype=getattr(fm, source)).to(getattr(fm, target))
    t = torch.tensor(data, dtype=getattr(torch, source)).to(getattr(torch, target))
    assert f.dtype is getattr(fm, target)
    np.testing.assert_array_equal(f.numpy(), t.numpy())


def test_to_accepts_device_and_dtype_forms():
    x = fm.randn(2, 3)
    assert x.to("cpu", fm.float64).dtype is fm.float64
    assert x.to(device="cpu", dtype=fm.float64).dtype is fm.float64
    assert x.to(dtype=fm.float16).dtype is fm.float16
    assert x.to(fm.zeros(1, dtype=fm.int32)).dtype is fm.int32


def test_to_copy_true_gives_new_storage():
    x = fm.randn(3)
    c = x.to(fm.float32, copy=True)
    assert c is not x
    assert not np.shares_memory(c._data, x._data)
    np.testing.assert_array_equal(c.numpy(), x.numpy())


@pytest.mark.parametrize(
    "method, dtype",
    [
        ("float", "float32"),
        ("double", "float64"),
        ("half", "float16"),
        ("long", "int64"),
        ("int", "int32"),
        ("bool", "bool"),
    ],
)
def test_cast_methods_match_torch(method, dtype):
    data = [-1.7, 0.0, 0.4, 2.5]
    f = getattr(fm.tensor(data), method)()
    t = getattr(torch.tensor(data), method)()
    assert f.dtype is getattr(fm, dtype)
    assert same_dtype(f, t)
    np.testing.assert_array_equal(f.numpy(), t.numpy())


@pytest.mark.parametrize(
    "src, dst", [("float32", "float64"), ("float64", "float32"), ("float32", "float16"), ("float16", "float64")]
)
def test_float_to_float_cast_is_differentiable(src, dst):
    a = np.array([1.0, -2.0, 0.5])
    x = fm.tensor(a, dtype=getattr(fm, src), requires_grad=True)
    y = x.to(getattr(fm, dst))
    assert y.requires_grad and y.grad_fn is not None
    (y * y * 3).sum().backward()
    assert x.grad is not None
    assert x.grad.dtype is getattr(fm, src)  # grad comes back in the original dtype
    tx = torch.tensor(a, dtype=getattr(torch, src), requires_grad=True)
    (tx.to(getattr(torch, dst)) ** 2 * 3).sum().backward()
    np.testing.assert_allclose(x.grad.numpy().astype(np.float64), tx.grad.numpy().astype(np.float64), rtol=1e-3)


def test_double_float_methods_are_differentiable():
    x = fm.tensor([1.0, 2.0], requires_grad=True)
    (x.double() * fm.tensor([3.0, 4.0], dtype=fm.float64)).sum().backward()
    assert x.grad.dtype is fm.float32
    np.testing.assert_allclose(x.grad.numpy(), [3.0, 4.0])


@pytest.mark.parametrize("method", ["long", "int", "bool"])
def test_cast_to_non_float_drops_grad_like_torch(method):
    x = fm.tensor([1.0, 2.0], requires_grad=True)
    tx = torch.tensor([1.0, 2.0], requires_grad=True)
    y, ty = getattr(x, method)(), getattr(tx, method)()
    assert y.requires_grad == ty.requires_grad == False  # noqa: E712
    assert y.grad_fn is None


# --------------------------------------------------------------------- repr
@pytest.mark.parametrize(
    "data, dtype",
    [
        ([1.0, 2.0, 3.0], None),
        ([[1.0, 2.0], [3.0, 4.0]], None),
        ([1, 2, 3], None),
        ([True, False], None),
        (2, None),
        ([1.0, 2.0], "float64"),
        ([1, 2], "int32"),
        ([1.0, 2.0], "float16"),
    ],
)
def test_repr_matches_torch(data, dtype):
    f = fm.tensor(data, dtype=getattr(fm, dtype) if dtype else None)
    t = torch.tensor(data, dtype=getattr(torch, dtype) if dtype else None)
    assert repr(f) == repr(t).replace("torch.", "forgeml.")


@pytest.mark.parametrize(
    "data",
    [[1.5, 2.25], 3.5, [0.1, 0.2], [True]],
    ids=["fractional-floats", "0d-fraction", "small-fractions", "single-bool"],
)
def test_repr_number_formatting_matches_torch(data):
    # PyTorch prints non-integral floats with 4 decimals (tensor([1.5000, 2.2500])) and a lone True unpadded
    assert repr(fm.tensor(data)) == repr(torch.tensor(data))


def test_repr_shows_requires_grad_and_grad_fn():
    x = fm.tensor([1.0, 2.0], requires_grad=True)
    assert repr(x) == "tensor([1., 2.], requires_grad=True)"
    assert repr(x) == repr(torch.tensor([1.0, 2.0], requires_grad=True))
    r = repr(x * 2)
    assert r.startswith("tensor([2., 4.]")
    assert re.search(r"grad_fn=<MulBackward\d*>\)$", r), r
    assert "requires_grad" not in r
    assert re.search(r"grad_fn=<SumBackward\d*>", repr(x.sum()))
    assert str(x) == repr(x)


def test_format_of_0d_tensor():
    assert f"{fm.tensor(3.14159):.2f}" == f"{torch.tensor(3.14159):.2f}" == "3.14"


# -------------------------------------------------- len / iter / conversions
def test_len_and_iter_like_torch():
    data = [[1, 2], [3, 4], [5, 6]]
    f, t = fm.tensor(data), torch.tensor(data)
    assert len(f) == len(t) == 3
    rows = list(f)
    assert len(rows) == 3
    assert all(isinstance(r, fm.Tensor) for r in rows)
    assert [r.tolist() for r in rows] == [r.tolist() for r in t]


def test_len_and_iter_of_0d_raise_typeerror_like_torch():
    with pytest.raises(TypeError, match="0-d"):
        len(fm.tensor(1.0))
    with pytest.raises(TypeError, match="0-d"):
        iter(fm.tensor(1.0))
    with pytest.raises(TypeError):
        len(torch.tensor(1.0))
    with pytest.raises(TypeError):
        iter(torch.tensor(1.0))


def test_iteration_is_differentiable():
    x = fm.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    total = None
    for i, row in enumerate(x):
        term = row.sum() * (i + 1)
        total = term if total is None else total + term
    total.backward()
    np.testing.assert_allclose(x.grad.numpy(), [[1.0, 1.0], [2.0, 2.0]])


@pytest.mark.parametrize("value", [0.0, 1.0, -2.5, 3.7, -3.7])
def test_python_number_conversions_match_torch(value):
    f, t = fm.tensor([value]), torch.tensor([value])
    assert bool(f) == bool(t)
    assert float(f) == float(t)
    assert int(f) == int(t)
    assert int(fm.tensor(value)) == int(torch.tensor(value))


def test_bool_of_multi_element_raises_like_torch():
    with pytest.raises(RuntimeError, match=r"2 elements|ambiguous"):
        bool(fm.tensor([1.0, 2.0]))
    with pytest.raises(RuntimeError):
        bool(torch.tensor([1.0, 2.0]))


def test_float_int_of_multi_element_raise_valueerror_like_torch():
    with pytest.raises(ValueError):
        float(torch.tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match="one element"):
        float(fm.tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match="one element"):
        int(fm.tensor([1, 2]))


def test_index_protocol():
    items = [10, 20, 30]
    assert items[fm.tensor(1)] == items[torch.tensor(1)] == 20
    with pytest.raises(TypeError, match="integer"):
        items[fm.tensor(1.0)]
    with pytest.raises(TypeError):
        items[torch.tensor(1.0)]


# ------------------------------------------------- pickling and deepcopy
@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "int64", "int32", "bool"])
def test_pickle_roundtrip(dtype):
    t = fm.tensor([[1, 0, 3], [4, 5, 0]], dtype=getattr(fm, dtype))
    u = pickle.loads(pickle.dumps(t))
    assert isinstance(u, fm.Tensor)
    assert u.dtype is t.dtype
    assert u.shape == t.shape
    np.testing.assert_array_equal(u.numpy(), t.numpy())
    assert u.id != t.id
    assert not np.shares_memory(u._data, t._data)


def test_pickle_keeps_requires_grad_like_torch():
    t = fm.tensor([1.0, 2.0], requires_grad=True)
    u = pickle.loads(pickle.dumps(t))
    tu = pickle.loads(pickle.dumps(torch.tensor([1.0, 2.0], requires_grad=True)))
    assert u.requires_grad == tu.requires_grad == True  # noqa: E712
    assert u.is_leaf
    (u * 2).sum().backward()
    np.testing.assert_allclose(u.grad.numpy(), [2.0, 2.0])
    assert t.grad is None


def test_pickle_of_non_contiguous_view():
    t = fm.arange(6.0).reshape(2, 3).T
    u = pickle.loads(pickle.dumps(t))
    assert u.shape == (3, 2)
    np.testing.assert_array_equal(u.numpy(), t.numpy())


def test_pickle_of_dtype_and_device():
    assert pickle.loads(pickle.dumps(fm.float64)) is fm.float64
    assert pickle.loads(pickle.dumps(fm.int32)) is fm.int32
    assert pickle.loads(pickle.dumps(fm.device("cpu"))) == fm.device("cpu")


def test_deepcopy_of_leaf_copies_data_flag_and_grad():
    x = fm.tensor([1.0, 2.0], requires_grad=True)
    (x * 3).sum().backward()
    d = copy.deepcopy(x)
    assert d is not x
    assert d.requires_grad and d.is_leaf
    assert not np.shares_memory(d._data, x._data)
    np.testing.assert_array_equal(d.numpy(force=True), [1.0, 2.0])
    # like torch, .grad is copied too (and is independent)
    tx = torch.tensor([1.0, 2.0], requires_grad=True)
    (tx * 3).sum().backward()
    assert (copy.deepcopy(tx).grad is not None) == (d.grad is not None)
    np.testing.assert_array_equal(d.grad.numpy(), [3.0, 3.0])
    assert not np.shares_memory(d.grad._data, x.grad._data)
    with fm.no_grad():
        d.mul_(0)
    assert x.tolist() == [1.0, 2.0]


def test_deepcopy_keeps_shared_references_in_containers():
    x = fm.tensor([1.0])
    a, b = copy.deepcopy([x, x])
    assert a is b


def test_deepcopy_of_non_leaf_raises_like_torch():
    x = fm.tensor([1.0], requires_grad=True)
    with pytest.raises(RuntimeError, match="leaves"):
        copy.deepcopy(x * 2)
    tx = torch.tensor([1.0], requires_grad=True)
    with pytest.raises(RuntimeError, match="leaves"):
        copy.deepcopy(tx * 2)


# ------------------------------------------------------------------ metadata
def test_size_dim_numel_match_torch():
    a = np.zeros((2, 3, 4), dtype=np.float32)
    f, t = fm.tensor(a), torch.tensor(a)
    assert f.size() == tuple(t.size())
    assert f.shape == tuple(t.shape)
    for d in range(-3, 3):
        assert f.size(d) == t.size(d)
    assert f.dim() == t.dim() == 3
    assert f.ndim == t.ndim
    assert f.numel() == t.numel() == 24
    assert fm.numel(f) == 24
    assert fm.tensor(5.0).numel() == 1
    assert fm.tensor(5.0).shape == ()
    assert fm.zeros(0, 3).numel() == 0


def test_size_out_of_range_raises_indexerror_naming_range():
    with pytest.raises(IndexError, match=r"\[-3, 2\].*got 3"):
        fm.zeros(2, 3, 4).size(3)


_VIEWS = {
    "plain": lambda x: x,
    "transpose": lambda x: x.transpose(0, 2),
    "permute": lambda x: x.permute(1, 0, 2),
    "step": lambda x: x[:, ::2],
    "slice-rows": lambda x: x[1:],
    "select": lambda x: x[:, 1],
    "unsqueeze": lambda x: x.unsqueeze(1),
    "expand": lambda x: x[:, :1].expand(2, 5, 4),
    "reshape": lambda x: x.reshape(6, 4),
    "inner-slice": lambda x: x[..., 1:3],
}


@pytest.mark.parametrize("name", list(_VIEWS))
def test_stride_and_is_contiguous_match_torch(name):
    a = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    f = _VIEWS[name](fm.tensor(a))
    t = _VIEWS[name](torch.tensor(a))
    assert f.stride() == t.stride()
    for d in range(-f.ndim, f.ndim):
        assert f.stride(d) == t.stride(d)
    assert f.is_contiguous() == t.is_contiguous()
    np.testing.assert_array_equal(f.numpy(), t.numpy())


def test_stride_of_0d_and_element_size():
    assert fm.tensor(1.0).stride() == torch.tensor(1.0).stride() == ()
    for dt in ("float16", "float32", "float64", "int32", "int64", "bool"):
        assert (
            fm.zeros(1, dtype=getattr(fm, dt)).element_size() == torch.zeros(1, dtype=getattr(torch, dt)).element_size()
        )


def test_stride_out_of_range_dim_raises_like_torch():
    with pytest.raises(IndexError, match=r"Dimension out of range"):
        torch.zeros(2, 3).stride(2)
    with pytest.raises(IndexError, match=r"\[-2, 1\].*got 2"):
        fm.zeros(2, 3).stride(2)


def test_is_floating_point_matches_torch():
    for dt in ("float16", "float32", "float64", "int32", "int64", "bool"):
        f = fm.zeros(1, dtype=getattr(fm, dt))
        t = torch.zeros(1, dtype=getattr(torch, dt))
        assert f.is_floating_point() == t.is_floating_point()


def test_is_tensor():
    assert fm.is_tensor(fm.zeros(1))
    assert not fm.is_tensor(np.zeros(1))
    assert not fm.is_tensor([1.0])


def test_tensor_constructor_of_python_numbers_gives_default_float_like_torch():
    assert fm.Tensor([1, 2]).dtype == fm.float32
    assert str(torch.Tensor([1, 2]).dtype) == "torch.float32"
    arr = np.arange(3)
    wrapped = fm.Tensor(arr)
    assert wrapped.dtype == fm.int64 and wrapped._data is arr
