"""``Tensor.data``: a tensor over the same storage, outside autograd, as in PyTorch.

Each idiom that PyTorch programs use on ``.data`` is run on ForgeML and on
PyTorch from the same values; the results (and the parameter they change) must
agree. The backing array itself is ``Tensor._data``.
"""

from __future__ import annotations

import numpy as np
import pytest

import forgeml as fm
from forgeml import nn

torch = pytest.importorskip("torch")

RNG = np.random.default_rng(0)


def _pair(shape=(3, 4), requires_grad=True):
    a = RNG.standard_normal(shape).astype(np.float32)
    return fm.tensor(a, requires_grad=requires_grad), torch.tensor(a, requires_grad=requires_grad)


def _same(f, t):
    np.testing.assert_allclose(np.asarray(f._data), t.detach().numpy(), rtol=1e-6, atol=1e-6)


# -- the getter ----------------------------------------------------------------


def test_data_is_a_detached_tensor_sharing_storage():
    x, tx = _pair()
    d = x.data
    assert type(d) is fm.Tensor and type(tx.data) is torch.Tensor
    assert d._data is x._data  # no copy
    assert d.requires_grad is tx.data.requires_grad is False
    assert d.grad_fn is None and d.is_leaf
    assert d.data is not x.data  # a new tensor each time, as torch gives
    assert d.shape == x.shape and d.dtype == x.dtype and d.device == x.device


def test_data_of_a_parameter_is_a_plain_tensor():
    p = nn.Parameter(fm.ones(2, 3))
    assert type(p.data) is fm.Tensor and type(torch.nn.Parameter(torch.ones(2, 3)).data) is torch.Tensor


def test_data_of_a_non_leaf():
    x, tx = _pair()
    y, ty = x * 2, tx * 2
    d, td = y.data, ty.data
    assert d.requires_grad is td.requires_grad is False and d.is_leaf is td.is_leaf is True
    d.fill_(5.0)
    td.fill_(5.0)
    _same(y, ty)
    assert y.grad_fn is not None  # the history stays


def test_data_of_a_view_changes_the_base():
    base = fm.arange(6.0).reshape(2, 3)
    tbase = torch.arange(6.0).reshape(2, 3)
    v, tv = base[0], tbase[0]
    v.data.fill_(7.0)
    tv.data.fill_(7.0)
    _same(base, tbase)
    _same(v, tv)
    assert v.data._base is None


def test_data_keeps_the_device():
    x = fm.ones(2, device="cpu")
    assert x.data.device == x.device == fm.device("cpu")
    assert x.data.numpy() is x._data


def test_data_numpy_of_a_tensor_that_requires_grad():
    x, tx = _pair()
    with pytest.raises(RuntimeError):
        x.numpy()
    np.testing.assert_array_equal(x.data.numpy(), tx.data.numpy())
    assert np.shares_memory(x.data.numpy(), x._data)


# -- version counter ---------------------------------------------------------------


def test_changes_through_data_are_invisible_to_the_version_counter():
    x, tx = _pair()
    d, td = x.data, tx.data
    assert (x._version, d._version) == (tx._version, td._version) == (0, 0)
    d.mul_(2.0)
    td.mul_(2.0)
    assert (x._version, d._version) == (tx._version, td._version) == (0, 1)
    _same(x, tx)


def test_detach_shares_the_version_counter():
    x, tx = _pair()
    x.detach().mul_(1.0)
    tx.detach().mul_(1.0)
    assert x._version == tx._version == 1


def test_backward_uses_values_changed_through_data_without_error():
    x, tx = _pair((4,))
    y, ty = (x * x).sum(), (tx * tx).sum()
    x.data.mul_(2.0)
    tx.data.mul_(2.0)
    y.backward()
    ty.backward()
    np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy(), rtol=1e-6)


def test_backward_refuses_values_changed_through_detach():
    x, tx = _pair((4,))
    y, ty = (x * x).sum(), (tx * tx).sum()
    x.detach().mul_(2.0)
    tx.detach().mul_(2.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        ty.backward()
    with pytest.raises(RuntimeError):
        y.backward()


# -- the idioms ----------------------------------------------------------------------


IDIOMS = {
    "add_ alpha": lambda p, g, x: p.data.add_(g, alpha=-0.1),
    "mul_": lambda p, g, x: p.data.mul_(0.5),
    "clamp_": lambda p, g, x: p.data.clamp_(-0.3, 0.3),
    "zero_": lambda p, g, x: p.data.zero_(),
    "fill_": lambda p, g, x: p.data.fill_(1),
    "copy_": lambda p, g, x: p.data.copy_(x),
    "setitem": lambda p, g, x: p.data.__setitem__((1, slice(0, 2)), 9.0),
    "sub_": lambda p, g, x: p.data.sub_(g),
    "div_": lambda p, g, x: p.data.div_(4.0),
}


@pytest.mark.parametrize("name", sorted(IDIOMS))
def test_idiom_changes_the_parameter_as_torch_does(name):
    a = RNG.standard_normal((3, 4)).astype(np.float32)
    g = RNG.standard_normal((3, 4)).astype(np.float32)
    x = RNG.standard_normal((3, 4)).astype(np.float32)
    p, tp = nn.Parameter(fm.tensor(a)), torch.nn.Parameter(torch.tensor(a))
    p.grad, tp.grad = fm.tensor(g), torch.tensor(g)
    array = p._data
    IDIOMS[name](p, p.grad, fm.tensor(x))
    IDIOMS[name](tp, tp.grad, torch.tensor(x))
    _same(p, tp)
    assert p._data is array and isinstance(p, nn.Parameter) and p.requires_grad
    assert p._version == tp._version == 0


@pytest.mark.parametrize("name", ["normal_", "uniform_"])
def test_random_idioms_fill_the_parameter(name):
    fm.manual_seed(0)
    p = nn.Parameter(fm.zeros(200, 50))
    array = p._data
    if name == "normal_":
        out = p.data.normal_(0, 0.02)
        assert abs(float(array.std()) - 0.02) < 0.002 and abs(float(array.mean())) < 0.002
    else:
        out = p.data.uniform_(-0.5, 0.5)
        assert -0.5 <= float(array.min()) < -0.49 and 0.49 < float(array.max()) <= 0.5
    assert p._data is array and out._data is array and p._version == 0


def test_hand_written_sgd_step_matches_torch():
    fm.manual_seed(0)
    a = RNG.standard_normal((5, 3)).astype(np.float32)
    xs = RNG.standard_normal((8, 3)).astype(np.float32)
    w, tw = nn.Parameter(fm.tensor(a)), torch.nn.Parameter(torch.tensor(a))
    for _ in range(3):
        loss, tloss = (fm.tensor(xs) @ w.T).tanh().sum(), (torch.tensor(xs) @ tw.T).tanh().sum()
        loss.backward()
        tloss.backward()
        w.data.add_(w.grad, alpha=-0.1)
        tw.data.add_(tw.grad, alpha=-0.1)
        w.grad, tw.grad = None, None
    _same(w, tw)


def test_elementwise_assignment_through_data_is_not_recorded():
    x, tx = _pair((4,))
    x.data[1] = 3.0
    tx.data[1] = 3.0
    _same(x, tx)
    assert x.grad_fn is None and x._version == tx._version == 0


def test_augmented_assignment_on_data():
    x, tx = _pair((4,))
    array = x._data
    x.data -= 0.5
    tx.data -= 0.5
    _same(x, tx)
    assert x._data is array


# -- the setter ---------------------------------------------------------------------


def test_setter_replaces_the_storage():
    x, tx = _pair((3,))
    y = fm.tensor([7.0, 8.0, 9.0])
    x.data = y
    tx.data = torch.tensor([7.0, 8.0, 9.0])
    assert x._data is y._data  # shares the new tensor's storage, as torch does
    assert x.requires_grad and x.is_leaf and x._version == tx._version == 0
    _same(x, tx)


@pytest.mark.parametrize("value", [[1.0, 2.0], 3.0, np.ones(3, dtype=np.float32)])
def test_setter_refuses_what_is_not_a_tensor(value):
    x, tx = _pair((3,))
    with pytest.raises(TypeError) as theirs:
        tx.data = value
    with pytest.raises(TypeError) as ours:
        x.data = value
    assert str(ours.value).split(",")[0] == str(theirs.value).split(",")[0] == "Variable data has to be a tensor"


@pytest.mark.parametrize(
    "shape, dtype, requires_grad",
    [
        ((2, 2), "float32", True),
        ((5,), "float32", False),
        ((3,), "float64", True),
        ((3,), "int64", False),
        ((3,), "int64", True),
        ((), "float32", True),
    ],
)
def test_setter_shape_and_dtype_rules_follow_torch(shape, dtype, requires_grad):
    x, tx = _pair((3,), requires_grad=requires_grad)
    value = np.ones(shape, dtype=dtype)
    try:
        tx.data = torch.tensor(value)
        torch_error = None
    except RuntimeError as exc:
        torch_error = exc
    if torch_error is not None:
        with pytest.raises(RuntimeError, match="data set to a tensor that requires gradients must be floating point"):
            x.data = fm.tensor(value)
        return
    x.data = fm.tensor(value)
    assert tuple(x.shape) == tuple(tx.shape) and str(x.dtype).split(".")[-1] == str(tx.dtype).split(".")[-1]
    assert x.requires_grad is tx.requires_grad
    _same(x, tx)


def test_setter_on_a_non_leaf_keeps_its_history():
    x, tx = _pair((3,))
    y, ty = x * 2, tx * 2
    y.data = fm.zeros(3)
    ty.data = torch.zeros(3)
    assert y.grad_fn is not None and ty.grad_fn is not None
    _same(y, ty)


def test_parameter_stays_a_parameter_and_its_optimizer_state_works():
    a = RNG.standard_normal((4, 3)).astype(np.float32)
    b = RNG.standard_normal((4, 3)).astype(np.float32)
    g = RNG.standard_normal((4, 3)).astype(np.float32)
    p, tp = nn.Parameter(fm.tensor(a)), torch.nn.Parameter(torch.tensor(a))
    opt = fm.optim.SGD([p], lr=0.1, momentum=0.9)
    topt = torch.optim.SGD([tp], lr=0.1, momentum=0.9)
    for step in range(3):
        p.grad, tp.grad = fm.tensor(g), torch.tensor(g)
        opt.step()
        topt.step()
        if step == 0:
            p.data = fm.tensor(b)
            tp.data = torch.tensor(b)
            assert type(p) is nn.Parameter and p.requires_grad
    assert p in opt.state and "momentum_buffer" in opt.state[p]
    _same(p, tp)


def test_module_parameter_replaced_through_data():
    lin, tlin = nn.Linear(3, 2), torch.nn.Linear(3, 2)
    weight = lin.weight
    w = RNG.standard_normal((2, 3)).astype(np.float32)
    lin.weight.data = fm.tensor(w)
    tlin.weight.data = torch.tensor(w)
    assert lin.weight is weight and dict(lin.named_parameters())["weight"] is weight
    np.testing.assert_array_equal(lin.weight.numpy(force=True), tlin.weight.detach().numpy())
    np.testing.assert_array_equal(lin.state_dict()["weight"].numpy(force=True), w)


# -- the hot path does not go through the property ------------------------------------


def test_hot_path_never_reads_the_data_property(monkeypatch):
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.LayerNorm(8), nn.Linear(8, 3))
    opts = [fm.optim.Adam(model.parameters(), lr=1e-3), fm.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)]
    x = fm.randn(5, 4)
    target = fm.tensor([0, 1, 2, 0, 1])

    def refuse(self):
        raise AssertionError("Tensor.data read on the hot path")

    monkeypatch.setattr(fm.Tensor, "data", property(refuse))
    with pytest.raises(AssertionError):
        x.data  # the patch is live
    for opt in opts:
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), target)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    y = fm.exp(x * 2 + 1).sum()  # Function.apply on plain tensors
    assert np.isfinite(y.item())
