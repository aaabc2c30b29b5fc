"""nn.Module behaviour: registration, traversal, modes, state_dict round trips, repr, to()."""

from collections import OrderedDict

import numpy as np
import pytest

import forgeml as fm
from forgeml import nn

torch = pytest.importorskip("torch")


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)
        self.drop = nn.Dropout(0.5)
        self.register_buffer("steps", fm.zeros(1))
        self.register_buffer("scratch", fm.zeros(2), persistent=False)
        self.scale = nn.Parameter(fm.ones(3))

    def forward(self, x):
        return self.drop(self.fc(x)) * self.scale


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleList([Block(), Block()])
        self.head = nn.Sequential(OrderedDict(act=nn.ReLU(), out=nn.Linear(3, 2)))
        self.tied = self.blocks[0].fc  # the same module twice: counted once

    def forward(self, x):
        for block in self.blocks:
            x = x[:, :4] if x.shape[1] > 4 else x
            x = block(fm.cat([x, x[:, :1]], 1)[:, :4])
        return self.head(x)


def test_parameters_registered_through_nested_containers():
    net = Net()
    names = [n for n, _ in net.named_parameters()]
    assert names == [
        "blocks.0.scale",
        "blocks.0.fc.weight",
        "blocks.0.fc.bias",
        "blocks.1.scale",
        "blocks.1.fc.weight",
        "blocks.1.fc.bias",
        "head.out.weight",
        "head.out.bias",
    ]
    assert len(list(net.parameters())) == 8
    assert net.num_parameters() == 2 * (4 * 3 + 3 + 3) + 3 * 2 + 2
    assert [n for n, _ in net.named_buffers()] == [
        "blocks.0.steps",
        "blocks.0.scratch",
        "blocks.1.steps",
        "blocks.1.scratch",
    ]
    assert [n for n, _ in net.named_children()] == ["blocks", "head", "tied"]
    assert [n for n, _ in net.named_modules()][:4] == ["", "blocks", "blocks.0", "blocks.0.fc"]


def test_state_dict_skips_non_persistent_buffers_and_round_trips():
    a, b = Net(), Net()
    sd = a.state_dict()
    assert "blocks.0.scratch" not in sd and "blocks.0.steps" in sd
    assert "tied.weight" in sd  # PyTorch lists a module under every name it is reachable by
    result = b.load_state_dict(sd)
    assert result.missing_keys == [] and result.unexpected_keys == []
    for (na, pa), (nb, pb) in zip(a.named_parameters(), b.named_parameters()):
        assert na == nb
        np.testing.assert_array_equal(pa.numpy() if not pa.requires_grad else pa.detach().numpy(), pb.detach().numpy())
    a.eval(), b.eval()
    x = fm.randn(5, 4)
    np.testing.assert_array_equal(a(x).detach().numpy(), b(x).detach().numpy())


def test_strict_load_lists_missing_unexpected_and_shape_mismatch_and_changes_nothing():
    net = nn.Sequential(nn.Linear(3, 2), nn.ReLU(), nn.Linear(2, 1))
    before = {k: v.numpy().copy() for k, v in net.state_dict().items()}
    bad = OrderedDict(net.state_dict())
    del bad["2.bias"]
    bad["extra.weight"] = fm.zeros(1)
    bad["0.weight"] = fm.zeros(5, 5)
    with pytest.raises(RuntimeError) as info:
        net.load_state_dict(bad)
    msg = str(info.value)
    assert '"2.bias"' in msg and "Missing key" in msg
    assert '"extra.weight"' in msg and "Unexpected key" in msg
    assert "size mismatch for 0.weight" in msg and "[5, 5]" in msg and "[2, 3]" in msg
    for k, v in net.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), before[k])
    del bad["0.weight"]
    bad["0.weight"] = fm.ones(2, 3)
    result = net.load_state_dict(bad, strict=False)
    assert result.missing_keys == ["2.bias"] and result.unexpected_keys == ["extra.weight"]
    np.testing.assert_array_equal(net[0].weight.detach().numpy(), np.ones((2, 3)))


def test_state_dict_keys_match_torch_for_the_same_architecture():
    ours = nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Dropout(0.2), nn.Linear(512, 10))
    theirs = torch.nn.Sequential(
        torch.nn.Linear(784, 512), torch.nn.ReLU(), torch.nn.Dropout(0.2), torch.nn.Linear(512, 10)
    )
    assert list(ours.state_dict()) == list(theirs.state_dict())
    theirs.load_state_dict({k: torch.tensor(v.numpy()) for k, v in ours.state_dict().items()})
    ours.eval(), theirs.eval()
    x = np.random.default_rng(0).standard_normal((3, 784)).astype(np.float32)
    np.testing.assert_allclose(
        ours(fm.tensor(x)).detach().numpy(), theirs(torch.tensor(x)).detach().numpy(), rtol=1e-5, atol=1e-5
    )


def test_train_eval_recurse_and_dropout_follows():
    net = Net()
    net.eval()
    assert all(not m.training for m in net.modules())
    x = fm.randn(4, 4)
    np.testing.assert_array_equal(net(x).detach().numpy(), net(x).detach().numpy())
    net.train()
    assert all(m.training for m in net.modules())
    with fm.no_grad():
        assert net.training  # grad mode does not touch train/eval


def test_sequential_builder_indexing_slicing_and_iteration():
    seq = nn.Sequential().add(nn.Linear(784, 512, True)).add(nn.ReLU()).add(nn.Dropout(0.2))
    assert len(seq) == 3 and isinstance(seq[0], nn.Linear) and isinstance(seq[-1], nn.Dropout)
    head = seq[:2]
    assert isinstance(head, nn.Sequential) and len(head) == 2 and head[0] is seq[0]
    seq.append(nn.Linear(512, 10))
    assert [type(m).__name__ for m in seq] == ["Linear", "ReLU", "Dropout", "Linear"]
    del seq[2]
    assert list(seq.state_dict()) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    with pytest.raises(IndexError, match="out of range"):
        seq[7]


def test_module_list_and_dict():
    ml = nn.ModuleList([nn.Linear(2, 2)])
    ml.append(nn.ReLU())
    ml += [nn.Tanh()]
    assert len(ml) == 3 and isinstance(ml[-1], nn.Tanh)
    md = nn.ModuleDict({"a": nn.Linear(2, 3), "b": nn.ReLU()})
    md["c"] = nn.Linear(3, 1)
    assert list(md.keys()) == ["a", "b", "c"] and "b" in md
    assert [n for n, _ in md.named_parameters()] == ["a.weight", "a.bias", "c.weight", "c.bias"]


def test_repr_matches_torch():
    ours = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Dropout(0.2), nn.Linear(3, 2, bias=False), nn.Softmax(dim=1))
    theirs = torch.nn.Sequential(
        torch.nn.Linear(4, 3),
        torch.nn.ReLU(),
        torch.nn.Dropout(0.2),
        torch.nn.Linear(3, 2, bias=False),
        torch.nn.Softmax(dim=1),
    )
    assert repr(ours) == repr(theirs)
    assert repr(nn.Flatten()) == repr(torch.nn.Flatten())
    assert repr(nn.GELU(approximate="tanh")) == repr(torch.nn.GELU(approximate="tanh"))
    assert repr(nn.LeakyReLU(0.2)) == repr(torch.nn.LeakyReLU(0.2))


def test_zero_grad_requires_grad_and_apply():
    net = nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 1))
    net(fm.randn(4, 3)).sum().backward()
    assert all(p.grad is not None for p in net.parameters())
    net.zero_grad(set_to_none=False)
    assert all(np.all(p.grad.numpy() == 0) for p in net.parameters())
    net.zero_grad()
    assert all(p.grad is None for p in net.parameters())
    net.requires_grad_(False)
    assert not any(p.requires_grad for p in net.parameters())
    seen = []
    net.apply(lambda m: seen.append(type(m).__name__))
    assert seen == ["Linear", "Linear", "Sequential"]


def test_to_dtype_converts_in_place_and_keeps_parameters():
    net = nn.Linear(3, 2)
    weight = net.weight
    net.to(fm.float64)
    assert net.weight is weight and weight.dtype == fm.float64 and net.bias.dtype == fm.float64
    out = net(fm.randn(2, 3, dtype=fm.float64))
    assert out.dtype == fm.float64
    with pytest.raises(TypeError, match="floating point"):
        net.to(fm.int64)


def test_registration_errors_are_clear():
    m = nn.Module()
    with pytest.raises(KeyError, match=r'contain "\."'):
        m.register_buffer("a.b", fm.zeros(1))
    with pytest.raises(TypeError, match="Parameter or None expected"):
        m.register_parameter("w", fm.zeros(1))
    m.w = nn.Parameter(fm.zeros(1))
    with pytest.raises(TypeError, match="Parameter or None expected"):
        m.w = fm.zeros(1)
    with pytest.raises(AttributeError, match="nothing"):
        m.nothing
    with pytest.raises(NotImplementedError, match="forward"):
        m(fm.zeros(1))


def test_forward_hooks_see_and_replace_outputs():
    lin = nn.Linear(2, 2)
    seen = []
    handle = lin.register_forward_hook(lambda mod, inputs, out: seen.append(out.shape))
    lin(fm.zeros(3, 2))
    handle.remove()
    lin(fm.zeros(3, 2))
    assert seen == [(3, 2)]
    lin.register_forward_hook(lambda mod, inputs, out: out * 0)
    assert np.all(lin(fm.ones(1, 2)).detach().numpy() == 0)


def test_parameter_shares_storage_and_pickles():
    import copy
    import pickle

    base = fm.ones(3)
    p = nn.Parameter(base)
    assert p._data is base._data and p.requires_grad and p.is_leaf
    assert repr(p).startswith("Parameter containing:\ntensor(")
    q = pickle.loads(pickle.dumps(p))
    assert isinstance(q, nn.Parameter) and q.requires_grad and q.tolist() == [1.0, 1.0, 1.0]
    r = copy.deepcopy(nn.Linear(2, 2))
    assert isinstance(r.weight, nn.Parameter)


def test_replacing_a_child_parameter_or_buffer_keeps_its_position():
    """As in PyTorch: assigning to an existing name replaces in place, so a Sequential keeps running its
    children in order and state_dict keeps its key order."""
    import torch

    seq = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    seq[1] = nn.Tanh()
    assert [type(m).__name__ for m in seq] == ["Linear", "Tanh", "Linear"]
    layer = nn.Linear(3, 4)
    layer.weight = nn.Parameter(fm.zeros(4, 3))
    bn = nn.BatchNorm1d(3)
    bn.register_buffer("running_mean", fm.ones(3))
    setattr(seq, "0", nn.Linear(3, 4))
    reference_layer = torch.nn.Linear(3, 4)
    reference_layer.weight = torch.nn.Parameter(torch.zeros(4, 3))
    reference_bn = torch.nn.BatchNorm1d(3)
    reference_bn.register_buffer("running_mean", torch.ones(3))
    assert list(layer.state_dict()) == list(reference_layer.state_dict()) == ["weight", "bias"]
    assert list(bn.state_dict()) == list(reference_bn.state_dict())
    assert list(seq._modules) == ["0", "1", "2"]
