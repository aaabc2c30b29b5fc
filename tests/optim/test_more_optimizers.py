"""Adadelta, NAdam, RAdam and Adamax against torch.optim: trajectories, state layout, state_dict round trips."""

import pickle

import numpy as np
import pytest

import forgeml as fm
from forgeml import optim

from ._common import (
    STEPS,
    fm_params,
    groups_of,
    make_grads,
    make_values,
    set_grads_fm,
    set_grads_torch,
    snapshot,
    torch_params,
)

torch = pytest.importorskip("torch")

TOL = {np.float64: (1e-10, 1e-12), np.float32: (2e-5, 2e-6)}
TWO_GROUPS = [([0, 1], {"lr": 0.03}), ([2, 3], {"weight_decay": 0.05})]

CASES = [
    ("Adadelta", {}, None),
    ("Adadelta", {"lr": 0.5, "rho": 0.8, "eps": 1e-4}, None),
    ("Adadelta", {"weight_decay": 0.1}, None),
    ("Adadelta", {"maximize": True}, None),
    ("Adadelta", {"weight_decay": 0.1, "maximize": True}, None),
    ("Adadelta", {}, TWO_GROUPS),
    ("NAdam", {}, None),
    ("NAdam", {"lr": 0.01, "betas": (0.8, 0.99), "momentum_decay": 0.01}, None),
    ("NAdam", {"lr": 0.01, "weight_decay": 0.1}, None),
    ("NAdam", {"lr": 0.01, "weight_decay": 0.1, "decoupled_weight_decay": True}, None),
    ("NAdam", {"lr": 0.01, "maximize": True}, None),
    ("NAdam", {"lr": 0.01, "weight_decay": 0.1, "maximize": True}, None),
    ("NAdam", {"lr": 0.01}, TWO_GROUPS),
    ("RAdam", {}, None),
    ("RAdam", {"lr": 0.01, "betas": (0.5, 0.9), "eps": 1e-3}, None),  # rectified from step 6 on
    ("RAdam", {"lr": 0.01, "weight_decay": 0.1}, None),
    ("RAdam", {"lr": 0.01, "weight_decay": 0.1, "decoupled_weight_decay": True}, None),
    ("RAdam", {"lr": 0.01, "betas": (0.9, 0.9), "maximize": True}, None),
    ("RAdam", {"lr": 0.01, "betas": (0.9, 0.9), "weight_decay": 0.1, "maximize": True}, None),
    ("RAdam", {"lr": 0.01}, TWO_GROUPS),
    ("Adamax", {}, None),
    ("Adamax", {"lr": 0.01, "betas": (0.5, 0.9), "eps": 1e-3}, None),
    ("Adamax", {"lr": 0.01, "weight_decay": 0.1}, None),
    ("Adamax", {"lr": 0.01, "maximize": True}, None),
    ("Adamax", {"lr": 0.01, "weight_decay": 0.1, "maximize": True}, None),
    ("Adamax", {"lr": 0.01}, TWO_GROUPS),
]


def case_id(case):
    name, kwargs, groups = case
    opts = ",".join(f"{k}={v}" for k, v in kwargs.items())
    return f"{name}({opts}){'-2groups' if groups else ''}"


def run_both(name, kwargs, groups, dtype=np.float64, steps=STEPS):
    values = [v.astype(dtype) for v in make_values()]
    grads = [[None if g is None else g.astype(dtype) for g in step] for step in make_grads(steps=steps)]
    fp, tp = fm_params(values), torch_params(torch, values)
    fopt = getattr(optim, name)(groups_of(fp, groups), **kwargs)
    topt = getattr(torch.optim, name)(groups_of(tp, groups), **kwargs)
    rtol, atol = TOL[dtype]
    for t in range(steps):
        set_grads_fm(fp, grads[t])
        set_grads_torch(torch, tp, grads[t])
        fopt.step()
        topt.step()
        for i, (o, e) in enumerate(zip(snapshot(fp), snapshot(tp))):
            assert o.dtype == dtype
            np.testing.assert_allclose(o, e, rtol=rtol, atol=atol, err_msg=f"step {t + 1}, parameter {i}")
    return fp, fopt, topt


def assert_same_state(fopt, topt, dtype):
    rtol, atol = TOL[dtype]
    ours, theirs = fopt.state_dict(), topt.state_dict()
    assert set(ours["state"]) == set(theirs["state"])
    for index, tstate in theirs["state"].items():
        fstate = ours["state"][index]
        assert list(fstate) == list(tstate), index
        for key, value in tstate.items():
            assert np.asarray(fstate[key]._data).dtype == value.numpy().dtype, f"{index}.{key}"
            np.testing.assert_allclose(
                np.asarray(fstate[key]._data), value.numpy(), rtol=rtol, atol=atol, err_msg=f"{index}.{key}"
            )
    for fg, tg in zip(ours["param_groups"], theirs["param_groups"], strict=True):
        assert fg["params"] == tg["params"]
        for key, value in fg.items():
            assert tg[key] == value, key


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_trajectory_matches_torch_float64(case):
    _, fopt, topt = run_both(*case)
    assert_same_state(fopt, topt, np.float64)


@pytest.mark.parametrize("name", ["Adadelta", "NAdam", "RAdam", "Adamax"])
def test_trajectory_matches_torch_float32(name):
    _, fopt, topt = run_both(name, {"lr": 0.01, "weight_decay": 0.05}, None, dtype=np.float32)
    assert_same_state(fopt, topt, np.float32)


@pytest.mark.parametrize("name", ["Adadelta", "NAdam", "RAdam", "Adamax"])
def test_defaults_match_torch(name):
    p = fm.nn.Parameter(np.ones(2))
    ours = getattr(optim, name)([p]).defaults
    theirs = getattr(torch.optim, name)([torch.ones(2, requires_grad=True)]).defaults
    for key, value in ours.items():
        assert theirs[key] == value, key


@pytest.mark.parametrize("name", ["Adadelta", "NAdam", "RAdam", "Adamax"])
def test_parameters_move_and_maximize_flips(name):
    fp, _, _ = run_both(name, {"lr": 0.01}, None, steps=2)
    fp_max, _, _ = run_both(name, {"lr": 0.01, "maximize": True}, None, steps=2)
    values = make_values()
    for p, q, v in zip(fp, fp_max, values):
        assert not np.allclose(p.detach().numpy(), v)
        assert not np.allclose(p.detach().numpy(), q.detach().numpy())


ROUND_TRIP = [
    ("Adadelta", {"weight_decay": 0.01}),
    ("NAdam", {"lr": 0.01, "weight_decay": 0.1}),
    ("RAdam", {"lr": 0.01, "decoupled_weight_decay": True, "weight_decay": 0.1}),
    ("Adamax", {"lr": 0.01, "maximize": True}),
]


@pytest.mark.parametrize(("name", "kwargs"), ROUND_TRIP, ids=[n for n, _ in ROUND_TRIP])
def test_state_dict_round_trip_resumes_identically(name, kwargs):
    grads = make_grads(steps=16)
    params = fm_params(make_values())
    groups = [([0, 2], {"lr": 0.02}), ([1, 3], {})]
    opt = getattr(optim, name)(groups_of(params, groups), **kwargs)
    for g in grads[:8]:
        set_grads_fm(params, g)
        opt.step()
    saved = pickle.loads(pickle.dumps(opt.state_dict()))
    saved_values = [p.detach().numpy().copy() for p in params]
    for g in grads[8:]:
        set_grads_fm(params, g)
        opt.step()
    resumed = fm_params(saved_values)
    opt2 = getattr(optim, name)(groups_of(resumed, groups), **kwargs)
    opt2.load_state_dict(saved)
    for g in grads[8:]:
        set_grads_fm(resumed, g)
        opt2.step()
    for a, b in zip(params, resumed):
        np.testing.assert_array_equal(a.detach().numpy(), b.detach().numpy())
    assert opt2.state_dict()["param_groups"] == opt.state_dict()["param_groups"]


@pytest.mark.parametrize(("name", "kwargs"), ROUND_TRIP, ids=[n for n, _ in ROUND_TRIP])
def test_torch_state_dict_loads_and_continues_like_torch(name, kwargs):
    """A state_dict saved by torch mid-run, loaded into ForgeML, continues on torch's trajectory."""
    values, grads = make_values(), make_grads(steps=12)
    tp = torch_params(torch, values)
    topt = getattr(torch.optim, name)(tp, **kwargs)
    for g in grads[:6]:
        set_grads_torch(torch, tp, g)
        topt.step()
    fp = fm_params(snapshot(tp))
    fopt = getattr(optim, name)(fp, **kwargs)
    fopt.load_state_dict(topt.state_dict())
    for g in grads[6:]:
        set_grads_torch(torch, tp, g)
        set_grads_fm(fp, g)
        topt.step()
        fopt.step()
    for o, e in zip(snapshot(fp), snapshot(tp)):
        np.testing.assert_allclose(o, e, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    ("name", "kwargs", "message"),
    [
        ("Adadelta", {"rho": 1.5}, "rho"),
        ("Adadelta", {"lr": -1.0}, "learning rate"),
        ("NAdam", {"momentum_decay": -0.1}, "momentum_decay"),
        ("NAdam", {"betas": (1.0, 0.9)}, "beta parameter at index 0"),
        ("RAdam", {"betas": (0.9, -0.1)}, "beta parameter at index 1"),
        ("Adamax", {"eps": -1.0}, "epsilon"),
        ("Adamax", {"weight_decay": -1.0}, "weight_decay"),
    ],
)
def test_invalid_hyperparameters_are_named(name, kwargs, message):
    with pytest.raises(ValueError, match=message):
        getattr(optim, name)([fm.nn.Parameter(np.ones(2))], **kwargs)
