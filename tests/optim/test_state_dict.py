"""Optimizer state_dict: PyTorch's layout, snapshots, round trips that resume on exactly the same trajectory."""

import pickle

import numpy as np
import pytest

import forgeml as fm
from forgeml import io as fm_io
from forgeml import optim

from ._common import fm_params, groups_of, make_grads, make_values, set_grads_fm, set_grads_torch, torch_params

torch = pytest.importorskip("torch")

CONFIGS = [
    ("SGD", {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 0.01}),
    ("Adam", {"lr": 0.01, "amsgrad": True, "weight_decay": 0.1}),
    ("AdamW", {"lr": 0.01, "maximize": True}),
    ("RMSprop", {"lr": 0.01, "centered": True, "momentum": 0.9}),
    ("Adagrad", {"lr": 0.1, "lr_decay": 0.01, "initial_accumulator_value": 0.1}),
]
GROUPS = [([0, 2], {"lr": 0.02}), ([1, 3], {})]
IDS = [name for name, _ in CONFIGS]


def train(opt, params, grads):
    for g in grads:
        set_grads_fm(params, g)
        opt.step()


@pytest.mark.parametrize(("name", "kwargs"), CONFIGS, ids=IDS)
def test_round_trip_resumes_on_the_same_trajectory(name, kwargs):
    grads = make_grads(steps=16)
    params = fm_params(make_values())
    opt = getattr(optim, name)(groups_of(params, GROUPS), **kwargs)
    train(opt, params, grads[:8])

    saved = pickle.loads(pickle.dumps(opt.state_dict()))  # through bytes, as a checkpoint would go
    saved_values = [p.detach().numpy().copy() for p in params]

    train(opt, params, grads[8:])  # the original continues

    resumed = fm_params(saved_values)
    opt2 = getattr(optim, name)(groups_of(resumed, GROUPS), **kwargs)
    opt2.load_state_dict(saved)
    train(opt2, resumed, grads[8:])
    for a, b in zip(params, resumed):
        np.testing.assert_array_equal(a.detach().numpy(), b.detach().numpy())
    assert opt2.state_dict()["param_groups"] == opt.state_dict()["param_groups"]


@pytest.mark.parametrize(("name", "kwargs"), CONFIGS, ids=IDS)
def test_state_dict_is_a_snapshot(name, kwargs):
    grads = make_grads(steps=6)
    params = fm_params(make_values())
    opt = getattr(optim, name)(params, **kwargs)
    train(opt, params, grads[:3])
    sd = opt.state_dict()
    frozen = {i: {k: np.array(v._data, copy=True) for k, v in s.items()} for i, s in sd["state"].items()}
    train(opt, params, grads[3:])
    for i, s in sd["state"].items():
        for k, v in s.items():
            np.testing.assert_array_equal(v._data, frozen[i][k])
    assert sd["param_groups"][0]["params"] == [0, 1, 2, 3]


def test_loading_copies_so_two_optimizers_do_not_share_buffers():
    grads = make_grads(steps=4)
    a = fm_params(make_values())
    opt_a = optim.Adam(a, lr=0.01)
    train(opt_a, a, grads[:2])
    b = fm_params([p.detach().numpy() for p in a])
    opt_b = optim.Adam(b, lr=0.01)
    opt_b.load_state_dict(opt_a.state_dict())
    for p, q in zip(a, b):
        for key in ("exp_avg", "exp_avg_sq"):
            assert not np.shares_memory(opt_a.state[p][key]._data, opt_b.state[q][key]._data)
    train(opt_a, a, grads[2:])
    train(opt_b, b, grads[2:])
    for p, q in zip(a, b):
        np.testing.assert_array_equal(p.detach().numpy(), q.detach().numpy())


@pytest.mark.parametrize(("name", "kwargs"), CONFIGS, ids=IDS)
def test_torch_state_dict_loads_and_training_continues_like_torch(name, kwargs):
    """PyTorch's state_dict (torch tensors) loads into ForgeML, and ForgeML's into PyTorch."""
    grads = make_grads(steps=12)
    values = make_values()
    tp = torch_params(torch, values)
    topt = getattr(torch.optim, name)(groups_of(tp, GROUPS), **kwargs)
    for g in grads[:6]:
        set_grads_torch(torch, tp, g)
        topt.step()

    fp = fm_params([p.detach().numpy() for p in tp])
    fopt = getattr(optim, name)(groups_of(fp, GROUPS), **kwargs)
    fopt.load_state_dict(topt.state_dict())

    # and back: ForgeML's state_dict, tensors converted, loads into a fresh torch optimizer
    tp2 = torch_params(torch, [p.detach().numpy() for p in fp])
    topt2 = getattr(torch.optim, name)(groups_of(tp2, GROUPS), **kwargs)
    sd = fopt.state_dict()
    sd["state"] = {i: {k: torch.tensor(np.array(v._data)) for k, v in s.items()} for i, s in sd["state"].items()}
    topt2.load_state_dict(sd)

    for g in grads[6:]:
        set_grads_torch(torch, tp, g)
        set_grads_torch(torch, tp2, g)
        set_grads_fm(fp, g)
        topt.step()
        topt2.step()
        fopt.step()
        for f, t, t2 in zip(fp, tp, tp2):
            np.testing.assert_allclose(f.detach().numpy(), t.detach().numpy(), rtol=1e-10, atol=1e-12)
            np.testing.assert_allclose(t2.detach().numpy(), t.detach().numpy(), rtol=1e-10, atol=1e-12)


def test_loaded_state_follows_the_parameter_dtype_and_steps_stay_counters():
    p = fm.nn.Parameter(np.ones(4))
    opt = optim.Adam([p])
    p.grad = fm.Tensor(np.ones(4))
    opt.step()
    sd = opt.state_dict()
    q = fm.nn.Parameter(np.ones(4, dtype=np.float32))
    opt2 = optim.Adam([q])
    opt2.load_state_dict(sd)
    assert opt2.state[q]["exp_avg"]._data.dtype == np.float32
    assert opt2.state[q]["step"]._data.dtype == sd["state"][0]["step"]._data.dtype
    assert opt2.state[q]["exp_avg"]._data.flags.c_contiguous


def test_load_state_dict_errors():
    a, b = fm.nn.Parameter(np.ones(3)), fm.nn.Parameter(np.ones((2, 2)))
    opt = optim.Adam([a, b])
    a.grad, b.grad = fm.Tensor(np.ones(3)), fm.Tensor(np.ones((2, 2)))
    opt.step()
    sd = opt.state_dict()

    with pytest.raises(ValueError, match="different number of parameter groups"):
        optim.Adam([{"params": [a]}, {"params": [b]}]).load_state_dict(sd)
    with pytest.raises(ValueError, match="doesn't match the size of optimizer's group"):
        optim.Adam([a]).load_state_dict(sd)
    c, d = fm.nn.Parameter(np.ones((2, 2))), fm.nn.Parameter(np.ones(3))  # same count, swapped shapes
    with pytest.raises(ValueError, match=r"'exp_avg' of shape \[3\] for parameter 0, whose shape is \[2, 2\]"):
        optim.Adam([c, d]).load_state_dict(sd)
    with pytest.raises(ValueError, match="'state' and 'param_groups'"):
        optim.Adam([a, b]).load_state_dict({"state": {}})


def test_load_state_dict_restores_hyperparameters_and_adamw_stays_decoupled():
    p = fm.nn.Parameter(np.ones(3))
    opt = optim.Adam([p], lr=0.5, weight_decay=0.1)
    sd = opt.state_dict()
    q = fm.nn.Parameter(np.ones(3))
    opt2 = optim.AdamW([q])
    opt2.load_state_dict(sd)
    group = opt2.param_groups[0]
    assert group["lr"] == 0.5 and group["weight_decay"] == 0.1
    assert group["decoupled_weight_decay"] is True
    assert group["params"][0] is q


def test_scheduler_and_optimizer_round_trip():
    grads = make_grads(steps=20)
    params = fm_params(make_values())
    opt = optim.SGD(params, lr=0.1, momentum=0.9)
    sched = optim.lr_scheduler.OneCycleLR(opt, max_lr=0.5, total_steps=20)
    lrs = []
    for t, g in enumerate(grads):
        if t == 8:
            saved = pickle.loads(pickle.dumps((opt.state_dict(), sched.state_dict())))
            saved_values = [p.detach().numpy().copy() for p in params]
        set_grads_fm(params, g)
        opt.step()
        sched.step()
        lrs.append(sched.get_last_lr())

    resumed = fm_params(saved_values)
    opt2 = optim.SGD(resumed, lr=0.1, momentum=0.9)
    sched2 = optim.lr_scheduler.OneCycleLR(opt2, max_lr=0.5, total_steps=20)
    opt2.load_state_dict(saved[0])
    sched2.load_state_dict(saved[1])
    for t, g in enumerate(grads[8:], start=8):
        set_grads_fm(resumed, g)
        opt2.step()
        sched2.step()
        assert sched2.get_last_lr() == lrs[t]
    assert opt2.param_groups[0]["momentum"] == opt.param_groups[0]["momentum"]
    for a, b in zip(params, resumed):
        np.testing.assert_array_equal(a.detach().numpy(), b.detach().numpy())


@pytest.mark.parametrize(
    "make_scheduler",
    [
        lambda opt: optim.lr_scheduler.MultiStepLR(opt, milestones=[3, 10, 10], gamma=0.5),
        lambda opt: optim.lr_scheduler.ReduceLROnPlateau(opt, patience=1, factor=0.5),
        lambda opt: optim.lr_scheduler.OneCycleLR(opt, max_lr=0.05, total_steps=16, three_phase=True),
    ],
    ids=["MultiStepLR", "ReduceLROnPlateau", "OneCycleLR"],
)
def test_checkpoint_file_round_trip(tmp_path, make_scheduler):
    """Optimizer and scheduler state through a safetensors checkpoint (forgeml.io): the same continuation."""
    grads = make_grads(steps=16)
    params = fm_params(make_values())
    opt = optim.Adam(groups_of(params, GROUPS), lr=0.01, amsgrad=True)
    sched = make_scheduler(opt)
    plateau = isinstance(sched, optim.lr_scheduler.ReduceLROnPlateau)

    def advance(opt, sched, params, t):
        set_grads_fm(params, grads[t])
        opt.step()
        if plateau:
            sched.step(1.0 if t > 4 else 2.0 - t)
        else:
            sched.step()

    for t in range(8):
        advance(opt, sched, params, t)
    path = tmp_path / "ckpt.safetensors"
    fm_io.save({"optimizer": opt.state_dict(), "scheduler": sched.state_dict()}, path)
    saved_values = [p.detach().numpy().copy() for p in params]
    for t in range(8, 16):
        advance(opt, sched, params, t)

    loaded = fm_io.load(path)
    resumed = fm_params(saved_values)
    opt2 = optim.Adam(groups_of(resumed, GROUPS), lr=0.01, amsgrad=True)
    sched2 = make_scheduler(opt2)
    opt2.load_state_dict(loaded["optimizer"])
    sched2.load_state_dict(loaded["scheduler"])
    for t in range(8, 16):
        advance(opt2, sched2, resumed, t)
    assert sched2.get_last_lr() == sched.get_last_lr()
    for a, b in zip(params, resumed):
        np.testing.assert_array_equal(a.detach().numpy(), b.detach().numpy())
