"""Optimizers against torch.optim: the same parameters and gradients, trajectories compared at every step (float64)."""

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

RTOL, ATOL = 1e-10, 1e-12

TWO_GROUPS = [([0, 1], {"lr": 0.03}), ([2, 3], {})]

CASES = [
    # (name, kwargs, param groups or None)
    ("SGD", {"lr": 0.1}, None),
    ("SGD", {"lr": 0.1, "maximize": True}, None),
    ("SGD", {"lr": 0.1, "weight_decay": 0.1}, None),
    ("SGD", {"lr": 0.1, "weight_decay": 0.1, "maximize": True}, None),
    ("SGD", {"lr": 0.05, "momentum": 0.9}, None),
    ("SGD", {"lr": 0.05, "momentum": 0.9, "dampening": 0.3}, None),
    ("SGD", {"lr": 0.05, "momentum": 0.5, "dampening": 0.5, "maximize": True}, None),
    ("SGD", {"lr": 0.05, "momentum": 0.9, "nesterov": True}, None),
    ("SGD", {"lr": 0.05, "momentum": 0.9, "nesterov": True, "maximize": True}, None),
    ("SGD", {"lr": 0.05, "momentum": 0.9, "weight_decay": 0.1}, None),
    ("SGD", {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 0.1, "maximize": True}, None),
    ("SGD", {"lr": 0.1, "momentum": 0.9}, [([0, 1], {"lr": 0.01, "nesterov": True}), ([2, 3], {"momentum": 0.5})]),
    ("Adam", {}, None),
    ("Adam", {"lr": 0.01}, None),
    ("Adam", {"lr": 0.01, "amsgrad": True}, None),
    ("Adam", {"lr": 0.01, "maximize": True}, None),
    ("Adam", {"lr": 0.01, "weight_decay": 0.1}, None),
    ("Adam", {"lr": 0.01, "weight_decay": 0.1, "amsgrad": True, "maximize": True}, None),
    ("Adam", {"lr": 0.02, "betas": (0.5, 0.9), "eps": 1e-3}, None),
    ("Adam", {"lr": 0.01, "weight_decay": 0.1, "decoupled_weight_decay": True}, None),
    ("Adam", {"lr": 0.0}, None),
    ("Adam", {"lr": 0.01}, [([0, 1], {"lr": 0.1, "amsgrad": True}), ([2, 3], {"weight_decay": 0.2})]),
    ("AdamW", {}, None),
    ("AdamW", {"lr": 0.01, "weight_decay": 0.1}, None),
    ("AdamW", {"lr": 0.01, "weight_decay": 0.1, "amsgrad": True, "maximize": True}, None),
    ("AdamW", {"lr": 0.01}, TWO_GROUPS),
    ("RMSprop", {}, None),
    ("RMSprop", {"lr": 0.01, "alpha": 0.9, "eps": 1e-4}, None),
    ("RMSprop", {"lr": 0.01, "centered": True}, None),
    ("RMSprop", {"lr": 0.01, "momentum": 0.9}, None),
    ("RMSprop", {"lr": 0.01, "maximize": True}, None),
    ("RMSprop", {"lr": 0.01, "weight_decay": 0.1, "centered": True, "momentum": 0.9}, None),
    ("RMSprop", {"lr": 0.01, "centered": True, "momentum": 0.5, "maximize": True}, None),
    ("RMSprop", {"lr": 0.01}, [([0, 1], {"lr": 0.05, "centered": True}), ([2, 3], {"momentum": 0.8})]),
    ("Adagrad", {}, None),
    ("Adagrad", {"lr": 0.1, "lr_decay": 0.1}, None),
    ("Adagrad", {"lr": 0.1, "weight_decay": 0.1}, None),
    ("Adagrad", {"lr": 0.1, "initial_accumulator_value": 0.5, "eps": 1e-3}, None),
    ("Adagrad", {"lr": 0.1, "maximize": True}, None),
    ("Adagrad", {"lr": 0.1, "maximize": True, "weight_decay": 0.1, "lr_decay": 0.05}, None),
    ("Adagrad", {"lr": 0.1}, TWO_GROUPS),
]


def case_id(case):
    name, kwargs, groups = case
    opts = ",".join(f"{k}={v}" for k, v in kwargs.items())
    return f"{name}({opts}){'-2groups' if groups else ''}"


def run_both(name, kwargs, groups, steps=STEPS, check=None):
    values, grads = make_values(), make_grads(steps=steps)
    fp, tp = fm_params(values), torch_params(torch, values)
    fopt = getattr(optim, name)(groups_of(fp, groups), **kwargs)
    topt = getattr(torch.optim, name)(groups_of(tp, groups), **kwargs)
    for t in range(steps):
        set_grads_fm(fp, grads[t])
        set_grads_torch(torch, tp, grads[t])
        fopt.step()
        topt.step()
        ours, theirs = snapshot(fp), snapshot(tp)
        for i, (o, e) in enumerate(zip(ours, theirs)):
            np.testing.assert_allclose(o, e, rtol=RTOL, atol=ATOL, err_msg=f"step {t + 1}, parameter {i}")
        if check is not None:
            check(t, fopt, topt)
    return fp, tp, fopt, topt


def assert_same_state(fopt, topt):
    ours, theirs = fopt.state_dict(), topt.state_dict()
    assert set(ours["state"]) == set(theirs["state"])
    for index, tstate in theirs["state"].items():
        fstate = ours["state"][index]
        assert list(fstate) == list(tstate), index
        for key, value in tstate.items():
            np.testing.assert_allclose(
                np.asarray(fstate[key]._data), value.numpy(), rtol=RTOL, atol=ATOL, err_msg=f"{index}.{key}"
            )
    assert len(ours["param_groups"]) == len(theirs["param_groups"])
    for fg, tg in zip(ours["param_groups"], theirs["param_groups"]):
        assert fg["params"] == tg["params"]
        for key, value in fg.items():
            assert tg[key] == value, key


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_trajectory_matches_torch(case):
    _, _, fopt, topt = run_both(*case)
    assert_same_state(fopt, topt)


def test_the_grid_is_not_trivial():
    """The parameters move (a lr of zero leaves them still) and maximize flips the direction."""
    values = make_values()
    fp, _, _, _ = run_both("Adam", {"lr": 0.01}, None, steps=3)
    fp_max, _, _, _ = run_both("Adam", {"lr": 0.01, "maximize": True}, None, steps=3)
    fp_still, _, _, _ = run_both("Adam", {"lr": 0.0}, None, steps=3)
    for p, p_max, p_still, v in zip(fp, fp_max, fp_still, values):
        assert not np.allclose(p.detach().numpy(), v)
        np.testing.assert_allclose(p.detach().numpy() - v, v - p_max.detach().numpy(), rtol=1e-8, atol=1e-12)
        np.testing.assert_array_equal(p_still.detach().numpy(), v)


def test_amsgrad_changes_the_trajectory():
    a, _, _, _ = run_both("Adam", {"lr": 0.01}, None, steps=8)
    b, _, _, _ = run_both("Adam", {"lr": 0.01, "amsgrad": True}, None, steps=8)
    assert not np.allclose(a[2].detach().numpy(), b[2].detach().numpy())


def test_hyperparameters_are_read_at_every_step():
    """Changing lr, betas, momentum and weight_decay in param_groups between steps takes effect at once."""

    def change(t, fopt, topt):
        for opt in (fopt, topt):
            for group in opt.param_groups:
                group["lr"] *= 0.8
                if "betas" in group:
                    group["betas"] = (0.9 - 0.02 * t, 0.99 + 0.0004 * t)
                if "momentum" in group:
                    group["momentum"] = 0.5 + 0.02 * t
                group["weight_decay"] = 0.01 * t

    for name in ("SGD", "Adam", "AdamW", "RMSprop", "Adagrad"):
        kwargs = {"lr": 0.05}
        if name in ("SGD", "RMSprop"):
            kwargs["momentum"] = 0.5
        run_both(name, kwargs, None, steps=10, check=change)


def test_one_cycle_lr_with_adam_matches_torch():
    """The scheduler writes lr and betas[0] every step; the optimizer reads them."""
    values, grads = make_values(), make_grads()
    fp, tp = fm_params(values), torch_params(torch, values)
    fopt = optim.Adam(fp, lr=0.01, weight_decay=0.01)
    topt = torch.optim.Adam(tp, lr=0.01, weight_decay=0.01)
    fs = optim.lr_scheduler.OneCycleLR(fopt, max_lr=0.05, total_steps=STEPS, three_phase=True)
    ts = torch.optim.lr_scheduler.OneCycleLR(topt, max_lr=0.05, total_steps=STEPS, three_phase=True)
    for t in range(STEPS):
        set_grads_fm(fp, grads[t])
        set_grads_torch(torch, tp, grads[t])
        fopt.step()
        topt.step()
        fs.step()
        ts.step()
        assert fopt.param_groups[0]["betas"] == topt.param_groups[0]["betas"]
        for o, e in zip(snapshot(fp), snapshot(tp)):
            np.testing.assert_allclose(o, e, rtol=RTOL, atol=ATOL, err_msg=f"step {t + 1}")


def _mlp(lib):
    lib.manual_seed(0)
    return lib.nn.Sequential(lib.nn.Linear(6, 16), lib.nn.Tanh(), lib.nn.Linear(16, 3)).double()


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("SGD", {"lr": 0.1, "momentum": 0.9, "nesterov": True}),
        ("Adam", {"lr": 0.01, "amsgrad": True}),
        ("AdamW", {"lr": 0.01}),
        ("RMSprop", {"lr": 0.01, "centered": True, "momentum": 0.5}),
        ("Adagrad", {"lr": 0.1, "lr_decay": 0.01}),
    ],
)
def test_training_an_mlp_matches_torch(name, kwargs):
    """A small MLP trained by each framework on the same data: losses and weights agree at every step."""
    fmodel, tmodel = _mlp(fm), _mlp(torch)
    with torch.no_grad():
        for (_, tparam), (_, fparam) in zip(tmodel.named_parameters(), fmodel.named_parameters()):
            tparam.copy_(torch.tensor(fparam.detach().numpy()))
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((32, 6)), rng.standard_normal((32, 3))
    fx, fy, tx, ty = fm.tensor(x), fm.tensor(y), torch.tensor(x), torch.tensor(y)
    fopt = getattr(optim, name)(fmodel.parameters(), **kwargs)
    topt = getattr(torch.optim, name)(tmodel.parameters(), **kwargs)
    losses = []
    for t in range(STEPS):
        fopt.zero_grad()
        topt.zero_grad()
        floss = ((fmodel(fx) - fy) ** 2).mean()
        tloss = ((tmodel(tx) - ty) ** 2).mean()
        floss.backward()
        tloss.backward()
        fopt.step()
        topt.step()
        losses.append(floss.item())
        np.testing.assert_allclose(floss.item(), tloss.item(), rtol=1e-9)
        for fparam, tparam in zip(fmodel.parameters(), tmodel.parameters()):
            np.testing.assert_allclose(
                fparam.detach().numpy(), tparam.detach().numpy(), rtol=1e-9, atol=1e-11, err_msg=f"step {t + 1}"
            )
    assert losses[-1] < losses[0]


# -- behaviour ----------------------------------------------------------------
def test_parameters_without_grad_are_skipped():
    a, b = fm.nn.Parameter(np.ones(3)), fm.nn.Parameter(np.ones(3))
    opt = optim.Adam([a, b], lr=0.1)
    a.grad = fm.Tensor(np.ones(3))
    opt.step()
    np.testing.assert_array_equal(b.detach().numpy(), np.ones(3))
    assert not np.allclose(a.detach().numpy(), np.ones(3))
    assert b not in opt.state and a in opt.state
    assert opt.state_dict()["state"].keys() == {0}


def test_step_updates_in_place_and_bumps_the_version():
    for make in (
        lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9),
        lambda ps: optim.Adam(ps, lr=0.1),
        lambda ps: optim.RMSprop(ps, centered=True),
        optim.Adagrad,
    ):
        p = fm.nn.Parameter(np.arange(6.0).reshape(2, 3))
        data, version = p._data, p._version
        opt = make([p])
        p.grad = fm.Tensor(np.ones((2, 3)))
        opt.step()
        assert p._data is data
        assert p._version == version + 1
        assert p.grad is not None and np.array_equal(p.grad._data, np.ones((2, 3)))  # the gradient is left alone


def test_step_result_does_not_record_a_graph():
    p = fm.nn.Parameter(np.ones(3))
    opt = optim.SGD([p], lr=0.1)
    p.grad = fm.Tensor(np.ones(3))
    opt.step()
    assert p.grad_fn is None and p.is_leaf and p.requires_grad


def test_closure_is_evaluated_with_grad_enabled_and_its_loss_returned():
    p = fm.nn.Parameter(np.array([3.0, -2.0]))
    opt = optim.SGD([p], lr=0.25)
    calls = []

    def closure():
        opt.zero_grad()
        loss = (p * p).sum()
        loss.backward()
        calls.append(loss.item())
        return loss

    with fm.no_grad():
        loss = opt.step(closure)
    assert loss.item() == 13.0 and calls == [13.0]
    np.testing.assert_allclose(p.detach().numpy(), [1.5, -1.0])  # p - 0.25 * 2p


def test_zero_grad():
    p = fm.nn.Parameter(np.ones(3))
    opt = optim.SGD([p], lr=0.1)
    p.grad = fm.Tensor(np.full(3, 2.0))
    grad = p.grad
    opt.zero_grad(set_to_none=False)
    assert p.grad is grad and np.array_equal(grad._data, np.zeros(3))
    opt.zero_grad()
    assert p.grad is None


def test_float32_parameters_stay_float32():
    p = fm.nn.Parameter(np.ones((300, 300), dtype=np.float32))
    for opt in (optim.Adam([p], weight_decay=0.1), optim.SGD([p], lr=0.1, momentum=0.9), optim.RMSprop([p])):
        p.grad = fm.Tensor(np.full((300, 300), 0.5, dtype=np.float32))
        opt.step()
        assert p._data.dtype == np.float32
        for value in opt.state[p].values():
            if value._data.ndim:
                assert value._data.dtype == np.float32


def test_add_param_group_joins_training():
    a, b = fm.nn.Parameter(np.ones(2)), fm.nn.Parameter(np.ones(2))
    opt = optim.SGD([a], lr=0.1, momentum=0.9)
    opt.add_param_group({"params": b, "lr": 0.5})
    assert opt.param_groups[1]["momentum"] == 0.9 and opt.param_groups[1]["lr"] == 0.5
    a.grad, b.grad = fm.Tensor(np.ones(2)), fm.Tensor(np.ones(2))
    opt.step()
    np.testing.assert_allclose(a.detach().numpy(), [0.9, 0.9])
    np.testing.assert_allclose(b.detach().numpy(), [0.5, 0.5])


def test_named_parameters_are_accepted():
    model = fm.nn.Linear(3, 2)
    opt = optim.AdamW(model.named_parameters())
    assert opt.param_groups[0]["param_names"] == ["weight", "bias"]
    assert opt.state_dict()["param_groups"][0]["param_names"] == ["weight", "bias"]
