"""GradScaler against torch.amp.GradScaler on the CPU: the same scale schedule, skipped steps and updates."""

from __future__ import annotations

import math

import numpy as np
import pytest

import forgeml as fm

torch = pytest.importorskip("torch")


def _run(lib, scaler_cls, grads_per_step, **kwargs):
    w = lib.tensor(np.array([1.0, -2.0, 0.5], dtype=np.float32), requires_grad=True)
    opt = (lib.optim.SGD if lib is fm else torch.optim.SGD)([w], lr=0.1)
    scaler = scaler_cls("cpu", **kwargs)
    scales, weights, results = [], [], []
    for g in grads_per_step:
        opt.zero_grad()
        loss = (w * lib.tensor(np.asarray(g, dtype=np.float32))).sum()
        scaler.scale(loss).backward()
        results.append(scaler.step(opt))
        scaler.update()
        scales.append(scaler.get_scale())
        weights.append(w.detach().numpy().copy())
    return scales, weights, results


GRADS = [[1.0, 2.0, 3.0], [math.inf, 0.0, 1.0], [0.5, 0.5, 0.5], [math.nan, 1.0, 1.0], [1.0, 1.0, 1.0]] + [
    [0.1, 0.2, 0.3]
] * 5


def test_scale_schedule_and_skipped_steps_match_torch():
    kwargs = {"init_scale": 2.0**10, "growth_interval": 3, "growth_factor": 2.0, "backoff_factor": 0.25}
    ours = _run(fm, fm.amp.GradScaler, GRADS, **kwargs)
    theirs = _run(torch, torch.amp.GradScaler, GRADS, **kwargs)
    assert ours[0] == theirs[0]
    np.testing.assert_allclose(np.array(ours[1]), np.array(theirs[1]), rtol=1e-6)
    assert [r is None for r in ours[2]] == [r is None for r in theirs[2]]


def test_unscale_then_clip_then_step():
    w = fm.tensor([3.0, 4.0], requires_grad=True)
    opt = fm.optim.SGD([w], lr=1.0)
    scaler = fm.amp.GradScaler("cpu", init_scale=8.0)
    scaler.scale((w * w).sum()).backward()
    np.testing.assert_allclose(w.grad.numpy(), [48.0, 64.0])
    scaler.unscale_(opt)
    np.testing.assert_allclose(w.grad.numpy(), [6.0, 8.0])
    fm.nn.utils.clip_grad_norm_([w], 1.0)
    scaler.step(opt)  # does not unscale twice
    np.testing.assert_allclose(w.detach().numpy(), [3.0 - 0.6, 4.0 - 0.8], rtol=1e-5)
    scaler.update()
    assert scaler.get_scale() == 8.0


def test_misuse_raises_like_torch():
    w = fm.tensor([1.0], requires_grad=True)
    opt = fm.optim.SGD([w], lr=0.1)
    scaler = fm.amp.GradScaler("cpu")
    scaler.scale(w.sum()).backward()
    scaler.unscale_(opt)
    with pytest.raises(RuntimeError, match="already been called"):
        scaler.unscale_(opt)
    scaler.step(opt)
    with pytest.raises(RuntimeError, match="step\\(\\) has already been called"):
        scaler.step(opt)
    with pytest.raises(RuntimeError, match="Closure"):
        fm.amp.GradScaler("cpu").step(opt, closure=lambda: None)
    with pytest.raises(RuntimeError, match="No inf checks"):
        fm.amp.GradScaler("cpu").update()
    with pytest.raises(ValueError, match="growth_factor"):
        fm.amp.GradScaler("cpu", growth_factor=0.5)


def test_disabled_scaler_is_a_pass_through():
    w = fm.tensor([1.0], requires_grad=True)
    opt = fm.optim.SGD([w], lr=0.5)
    scaler = fm.amp.GradScaler("cpu", enabled=False)
    loss = (w * 2).sum()
    assert scaler.scale(loss) is loss
    loss.backward()
    scaler.step(opt)
    scaler.update()
    assert scaler.get_scale() == 1.0 and scaler.state_dict() == {}
    np.testing.assert_allclose(w.detach().numpy(), [0.0])


def test_cuda_scaler_without_cuda_disables_itself_with_a_warning():
    if fm.cuda.is_available():
        pytest.skip("a CUDA device is present")
    with pytest.warns(UserWarning, match="CUDA is not available"):
        scaler = fm.amp.GradScaler()
    assert not scaler.is_enabled()


def test_state_dict_round_trip_matches_torch_keys():
    ours = fm.amp.GradScaler("cpu", init_scale=4.0)
    theirs = torch.amp.GradScaler("cpu", init_scale=4.0)
    assert set(ours.state_dict()) == set(theirs.state_dict())
    other = fm.amp.GradScaler("cpu")
    other.load_state_dict(ours.state_dict())
    assert other.get_scale() == 4.0
    with pytest.raises(RuntimeError, match="empty"):
        other.load_state_dict({})


def test_scaler_on_cuda_device(cuda_device):
    w = fm.tensor([1.0, 2.0]).to(cuda_device).requires_grad_()
    opt = fm.optim.SGD([w], lr=0.5)
    scaler = fm.amp.GradScaler(cuda_device, init_scale=16.0)
    scaler.scale((w * w).sum()).backward()
    scaler.step(opt)
    scaler.update()
    np.testing.assert_allclose(w.detach().cpu().numpy(), [0.0, 0.0])
    w.grad = fm.tensor([math.inf, 1.0]).to(cuda_device)
    scaler.step(opt)
    scaler.update()
    assert scaler.get_scale() == 8.0
