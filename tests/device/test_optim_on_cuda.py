"""Optimizers on ``device='cuda'``: through the CuPy stand-in here, through CuPy (fused kernels) on a GPU.

Every case of ``tests/optim/test_optimizers.py`` steps parameters on the CUDA
device and must follow ``torch.optim`` on the CPU step for step (same start
values, same gradients). State lives on the parameter's device (``step``
counters on the CPU, as in PyTorch); a state_dict saved on one device loads on
the other and training continues on the same trajectory.
"""

from __future__ import annotations

import numpy as np
import pytest

import forgeml as fm
from forgeml import optim

from ..optim._common import groups_of, make_grads, make_values, set_grads_torch, snapshot, torch_params
from ..optim.test_optimizers import CASES, case_id
from ..optim.test_state_dict import CONFIGS, GROUPS, IDS

torch = pytest.importorskip("torch")

STEPS = 6
# float64 throughout; a GPU's fused kernels contract multiply-adds (FMA), so allow a little more than rounding.
RTOL, ATOL = 1e-9, 1e-12
CUDA = fm.device("cuda")


def cuda_params(values):
    return [fm.nn.Parameter(fm.tensor(np.array(v, copy=True, order="K")).to("cuda")) for v in values]


def cpu_params(values):
    return [fm.nn.Parameter(np.array(v, copy=True, order="K")) for v in values]


def set_grads(params, grads):
    """Gradients as host arrays, put on each parameter's device (None: no gradient for that parameter)."""
    for p, g in zip(params, grads):
        p.grad = None if g is None else fm.tensor(np.array(g, copy=True, order="K")).to(p.device)


def values_of(params):
    return [p.detach().cpu().numpy() for p in params]


def assert_state_on_device(opt, device, stateless=False):
    assert stateless or opt.state, "the optimizer has no state"
    for p, state in opt.state.items():
        for key, value in state.items():
            if key == "step":
                assert value.device == fm.device("cpu"), "step counters stay on the CPU"
                assert value.shape == ()
            else:
                assert value.device == device, f"{key} is on {value.device}, its parameter on {p.device}"
                assert value.dtype == p.dtype, key
                assert value.shape == p.shape, key


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_trajectory_on_cuda_matches_torch(case, cuda_device):
    name, kwargs, groups = case
    values, grads = make_values(), make_grads(steps=STEPS)
    fp, tp = cuda_params(values), torch_params(torch, values)
    fopt = getattr(optim, name)(groups_of(fp, groups), **kwargs)
    topt = getattr(torch.optim, name)(groups_of(tp, groups), **kwargs)
    for t in range(STEPS):
        set_grads(fp, grads[t])
        set_grads_torch(torch, tp, grads[t])
        fopt.step()
        topt.step()
        for i, (o, e) in enumerate(zip(values_of(fp), snapshot(tp))):
            np.testing.assert_allclose(o, e, rtol=RTOL, atol=ATOL, err_msg=f"step {t + 1}, parameter {i}")
    assert all(p.device == CUDA for p in fp)
    assert_state_on_device(fopt, CUDA, stateless=name == "SGD" and not kwargs.get("momentum"))
    ours, theirs = fopt.state_dict()["state"], topt.state_dict()["state"]
    assert set(ours) == set(theirs)
    for index, tstate in theirs.items():
        assert list(ours[index]) == list(tstate), index
        for key, value in tstate.items():
            got = ours[index][key].cpu().numpy()
            np.testing.assert_allclose(got, value.numpy(), rtol=RTOL, atol=ATOL, err_msg=f"{index}.{key}")


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("Adam", {"lr": 0.01}),
        ("AdamW", {"lr": 0.01, "amsgrad": True, "weight_decay": 0.1}),
        ("SGD", {"lr": 0.05, "momentum": 0.9, "nesterov": True}),
        ("RMSprop", {"lr": 0.01, "centered": True, "momentum": 0.9}),
        ("Adagrad", {"lr": 0.1, "lr_decay": 0.01}),
    ],
)
def test_float32_parameters_on_cuda_match_torch(name, kwargs, cuda_device):
    values = [v.astype(np.float32) for v in make_values()]
    grads = [[None if g is None else g.astype(np.float32) for g in step] for step in make_grads(steps=STEPS)]
    fp, tp = cuda_params(values), torch_params(torch, values)
    fopt, topt = getattr(optim, name)(fp, **kwargs), getattr(torch.optim, name)(tp, **kwargs)
    for t in range(STEPS):
        set_grads(fp, grads[t])
        set_grads_torch(torch, tp, grads[t])
        fopt.step()
        topt.step()
        for i, (o, e) in enumerate(zip(values_of(fp), snapshot(tp))):
            np.testing.assert_allclose(o, e, rtol=1e-5, atol=1e-6, err_msg=f"step {t + 1}, parameter {i}")
    assert all(p.dtype == fm.float32 and p.device == CUDA for p in fp)
    assert_state_on_device(fopt, CUDA)


def _continue(opt, params, grads):
    for g in grads:
        set_grads(params, g)
        opt.step()


@pytest.mark.parametrize(("name", "kwargs"), CONFIGS, ids=IDS)
@pytest.mark.parametrize(("src", "dst"), [("cuda", "cpu"), ("cpu", "cuda")], ids=["cuda-to-cpu", "cpu-to-cuda"])
def test_state_dict_moves_between_devices_and_training_continues(name, kwargs, src, dst, cuda_device):
    grads = make_grads(steps=10)
    make = {"cuda": cuda_params, "cpu": cpu_params}
    params = make[src](make_values())
    opt = getattr(optim, name)(groups_of(params, GROUPS), **kwargs)
    _continue(opt, params, grads[:5])

    saved = opt.state_dict()
    assert_state_on_device(opt, fm.device(src))
    for state in saved["state"].values():  # the snapshot stays where the state was
        for key, value in state.items():
            assert value.device == (fm.device("cpu") if key == "step" else fm.device(src)), key

    moved = make[dst](values_of(params))
    opt2 = getattr(optim, name)(groups_of(moved, GROUPS), **kwargs)
    opt2.load_state_dict(saved)
    assert_state_on_device(opt2, fm.device(dst))
    assert opt2.state_dict()["param_groups"] == saved["param_groups"]

    _continue(opt, params, grads[5:])
    _continue(opt2, moved, grads[5:])
    for i, (a, b) in enumerate(zip(values_of(params), values_of(moved))):
        np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL, err_msg=f"parameter {i}")
    for p, q in zip(params, moved):
        for key, value in opt.state[p].items():
            np.testing.assert_allclose(
                value.cpu().numpy(), opt2.state[q][key].cpu().numpy(), rtol=RTOL, atol=ATOL, err_msg=key
            )


def test_state_dict_on_cuda_is_a_snapshot(cuda_device):
    grads = make_grads(steps=4)
    params = cuda_params(make_values())
    opt = optim.Adam(params, lr=0.01, amsgrad=True)
    _continue(opt, params, grads[:2])
    sd = opt.state_dict()
    frozen = {i: {k: v.cpu().numpy().copy() for k, v in s.items()} for i, s in sd["state"].items()}
    _continue(opt, params, grads[2:])
    for i, s in sd["state"].items():
        for k, v in s.items():
            assert v.device == (fm.device("cpu") if k == "step" else CUDA)
            np.testing.assert_array_equal(v.cpu().numpy(), frozen[i][k])


def test_torch_state_dict_loads_onto_cuda(cuda_device):
    """A PyTorch (CPU) optimizer's state_dict loads into an optimizer of CUDA parameters and continues like it."""
    grads = make_grads(steps=8)
    values = make_values()
    tp = torch_params(torch, values)
    topt = torch.optim.Adam(tp, lr=0.01, weight_decay=0.1, amsgrad=True)
    for g in grads[:4]:
        set_grads_torch(torch, tp, g)
        topt.step()
    fp = cuda_params([p.detach().numpy() for p in tp])
    fopt = optim.Adam(fp, lr=0.01, weight_decay=0.1, amsgrad=True)
    fopt.load_state_dict(topt.state_dict())
    assert_state_on_device(fopt, CUDA)
    for g in grads[4:]:
        set_grads_torch(torch, tp, g)
        set_grads(fp, g)
        topt.step()
        fopt.step()
    for o, e in zip(values_of(fp), snapshot(tp)):
        np.testing.assert_allclose(o, e, rtol=RTOL, atol=ATOL)


def test_zero_grad_on_cuda(cuda_device):
    params = cuda_params(make_values())
    opt = optim.SGD(params, lr=0.1, momentum=0.9)
    set_grads(params, make_grads(steps=1)[0])
    opt.step()
    kept = [p.grad for p in params]
    opt.zero_grad(set_to_none=False)
    for p, g in zip(params, kept):
        if g is None:
            assert p.grad is None
            continue
        assert p.grad is g, "set_to_none=False zeroes the gradient in place"
        assert g.device == CUDA
        np.testing.assert_array_equal(g.cpu().numpy(), np.zeros(p.shape))
    opt.zero_grad()
    assert all(p.grad is None for p in params)
    before = values_of(params)
    opt.step()  # no gradients: nothing moves, and no error
    for a, b in zip(before, values_of(params)):
        np.testing.assert_array_equal(a, b)


def test_a_gradient_or_state_on_another_device_is_a_clear_error(cuda_device):
    p = cuda_params([np.ones(3)])[0]
    opt = optim.Adam([p], lr=0.1)
    p.grad = fm.tensor(np.ones(3))  # on the CPU
    with pytest.raises(RuntimeError, match=r"parameter on cuda:0 has its gradient on cpu"):
        opt.step()

    q = cpu_params([np.ones(3)])[0]
    opt = optim.SGD([q], lr=0.1, momentum=0.9)
    set_grads([q], [np.ones(3)])
    opt.step()  # state on the CPU
    q.data = q.to("cuda").data  # the parameter moves, the state does not
    set_grads([q], [np.ones(3)])
    with pytest.raises(RuntimeError, match=r"optimizer state on cpu for a parameter on cuda:0"):
        opt.step()


def test_reduce_lr_on_plateau_takes_a_cuda_metric(cuda_device):
    p = cuda_params([np.ones(3)])[0]
    opt = optim.SGD([p], lr=1.0)
    sched = optim.lr_scheduler.ReduceLROnPlateau(opt, patience=0, factor=0.5)
    metric = fm.tensor(1.0).to("cuda")
    sched.step(metric)
    sched.step(metric)
    assert opt.param_groups[0]["lr"] == 0.5
