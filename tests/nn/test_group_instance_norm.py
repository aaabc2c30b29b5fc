"""group_norm, instance_norm and their layers: gradcheck in float64, PyTorch parity in float32, state_dicts, errors."""

from __future__ import annotations

import numpy as np
import pytest

import forgeml as fm
import forgeml.nn.functional as FF
from forgeml.autograd import gradcheck

torch = pytest.importorskip("torch")
F = torch.nn.functional


def _both(rng, shape, scale=1.0, shift=0.0):
    a = (rng.standard_normal(shape) * scale + shift).astype(np.float32)
    return fm.tensor(a, requires_grad=True), torch.tensor(a, requires_grad=True)


def _close(ours, theirs, rtol=1e-4, atol=1e-5, msg=""):
    assert tuple(ours.shape) == tuple(theirs.shape), msg
    np.testing.assert_allclose(ours.detach().numpy(), theirs.detach().numpy(), rtol=rtol, atol=atol, err_msg=msg)


def _backward_both(f_out, t_out, seed=5):
    up = np.random.default_rng(seed).standard_normal(tuple(t_out.shape)).astype(np.float32)
    f_out.backward(fm.tensor(up))
    t_out.backward(torch.tensor(up))


@pytest.mark.parametrize(
    "shape,groups,affine",
    [
        ((3, 6, 4, 5), 2, True),
        ((3, 6, 4, 5), 6, True),
        ((2, 6, 7), 1, False),
        ((4, 6), 3, True),
        ((2, 4, 2, 3, 2), 2, True),
    ],
)
def test_group_norm_matches_torch(shape, groups, affine):
    rng = np.random.default_rng(0)
    fx, tx = _both(rng, shape, scale=3.0, shift=1.0)
    fw, tw = _both(rng, (shape[1],)) if affine else (None, None)
    fb, tb = _both(rng, (shape[1],)) if affine else (None, None)
    f_out, t_out = FF.group_norm(fx, groups, fw, fb, eps=1e-4), F.group_norm(tx, groups, tw, tb, eps=1e-4)
    _close(f_out, t_out, msg="forward")
    _backward_both(f_out, t_out)
    for name, f, t in (("input", fx, tx), ("weight", fw, tw), ("bias", fb, tb)):
        if f is not None:
            _close(f.grad, t.grad, msg=f"grad of {name}")


@pytest.mark.parametrize("use_stats", [True, False])
def test_instance_norm_matches_torch_with_running_stats(use_stats):
    rng = np.random.default_rng(1)
    fx, tx = _both(rng, (3, 4, 5, 6), scale=2.0, shift=-1.0)
    fw, tw = _both(rng, (4,))
    fb, tb = _both(rng, (4,))
    rm, rv = rng.standard_normal(4).astype(np.float32), rng.uniform(0.5, 2, 4).astype(np.float32)
    f_rm, f_rv, t_rm, t_rv = fm.tensor(rm), fm.tensor(rv), torch.tensor(rm), torch.tensor(rv)
    f_out = FF.instance_norm(fx, f_rm, f_rv, fw, fb, use_input_stats=use_stats, momentum=0.3)
    t_out = F.instance_norm(tx, t_rm, t_rv, tw, tb, use_input_stats=use_stats, momentum=0.3)
    _close(f_out, t_out, msg="forward")
    _close(f_rm, t_rm, msg="running_mean")
    _close(f_rv, t_rv, msg="running_var")
    _backward_both(f_out, t_out)
    for name, f, t in (("input", fx, tx), ("weight", fw, tw), ("bias", fb, tb)):
        _close(f.grad, t.grad, msg=f"grad of {name}")


def test_gradcheck_float64():
    rng = np.random.default_rng(2)
    x = fm.from_numpy(rng.standard_normal((2, 4, 3, 2))).requires_grad_()
    w = fm.from_numpy(rng.standard_normal(4)).requires_grad_()
    b = fm.from_numpy(rng.standard_normal(4)).requires_grad_()
    assert gradcheck(lambda x, w, b: FF.group_norm(x, 2, w, b), (x, w, b))
    assert gradcheck(lambda x: FF.group_norm(x, 4), (x,))
    assert gradcheck(lambda x, w, b: FF.instance_norm(x, weight=w, bias=b), (x, w, b))
    rm, rv = fm.zeros(4, dtype=fm.float64), fm.ones(4, dtype=fm.float64)
    assert gradcheck(lambda x, w, b: FF.instance_norm(x, rm, rv, w, b, use_input_stats=False), (x, w, b))


def test_float16_input_computes_in_float32():
    x = np.random.default_rng(3).standard_normal((2, 4, 8)).astype(np.float16) * 50
    out = FF.group_norm(fm.tensor(x), 2)
    assert out.dtype == fm.float16
    ref = F.group_norm(torch.tensor(x.astype(np.float32)), 2).numpy()
    np.testing.assert_allclose(out.numpy().astype(np.float32), ref, atol=2e-3)


# ------------------------------------------------------------------ layers
LAYERS = [
    ("GroupNorm", (2, 6), {}, (3, 6, 4, 4)),
    ("GroupNorm", (3, 6), dict(affine=False, eps=1e-3), (3, 6, 5)),
    ("GroupNorm", (2, 4), dict(bias=False), (2, 4, 3)),
    ("InstanceNorm1d", (4,), {}, (3, 4, 7)),
    ("InstanceNorm1d", (4,), dict(affine=True, bias=False), (3, 4, 7)),
    ("InstanceNorm1d", (4,), dict(affine=True, track_running_stats=True), (3, 4, 7)),
    ("InstanceNorm2d", (4,), dict(affine=True), (4, 5, 6)),  # unbatched
    ("InstanceNorm2d", (4,), dict(track_running_stats=True, momentum=None), (2, 4, 5, 6)),
]


@pytest.mark.parametrize("name,args,kwargs,x_shape", LAYERS, ids=[f"{c[0]}-{i}" for i, c in enumerate(LAYERS)])
def test_layer_state_dict_both_ways_and_train_eval(name, args, kwargs, x_shape):
    f_mod, t_mod = getattr(fm.nn, name)(*args, **kwargs), getattr(torch.nn, name)(*args, **kwargs)
    assert list(f_mod.state_dict()) == list(t_mod.state_dict())
    for key, value in t_mod.state_dict().items():
        assert tuple(f_mod.state_dict()[key].shape) == tuple(value.shape), key
        np.testing.assert_array_equal(f_mod.state_dict()[key].numpy(), value.numpy(), err_msg=f"default {key}")
    assert repr(f_mod) == repr(t_mod)
    rng = np.random.default_rng(4)
    x = rng.standard_normal(x_shape).astype(np.float32) * 2 + 0.5
    with torch.no_grad():  # non-default parameters, then torch -> forgeml
        for p in t_mod.parameters():
            p.copy_(torch.randn(p.shape))
    f_mod.load_state_dict({k: fm.tensor(v.numpy().copy()) for k, v in t_mod.state_dict().items()})
    for _ in range(2):  # training steps update running stats the same way
        _close(f_mod(fm.tensor(x)), t_mod(torch.tensor(x)), msg="train")
    for key, value in t_mod.state_dict().items():
        _close(f_mod.state_dict()[key], value, msg=f"after training: {key}")
    f_mod.eval(), t_mod.eval()
    _close(f_mod(fm.tensor(x + 1)), t_mod(torch.tensor(x + 1)), msg="eval")
    fresh = getattr(torch.nn, name)(*args, **kwargs).eval()  # forgeml -> torch
    fresh.load_state_dict({k: torch.tensor(np.array(v.numpy())) for k, v in f_mod.state_dict().items()})
    _close(f_mod(fm.tensor(x - 1)), fresh(torch.tensor(x - 1)), msg="forgeml -> torch")


def test_errors_name_the_problem():
    with pytest.raises(RuntimeError, match="divisible by num_groups"):
        FF.group_norm(fm.zeros(2, 6, 3), 4)
    with pytest.raises(RuntimeError, match="expected weight to have 6 elements"):
        FF.group_norm(fm.zeros(2, 6, 3), 2, fm.ones(3))
    with pytest.raises(ValueError, match="must be divisible by num_groups"):
        fm.nn.GroupNorm(4, 6)
    with pytest.raises(ValueError, match="more than 1 spatial element"):
        FF.instance_norm(fm.zeros(2, 3, 1))
    with pytest.raises(RuntimeError, match="running_mean and running_var"):
        FF.instance_norm(fm.zeros(2, 3, 4), use_input_stats=False)
    with pytest.raises(ValueError, match="expected 3D or 4D input"):
        fm.nn.InstanceNorm2d(3)(fm.zeros(2, 3))
    with pytest.raises(ValueError, match="match num_features"):
        fm.nn.InstanceNorm1d(3, affine=True)(fm.zeros(2, 4, 5))


def test_instance_norm_is_not_a_batch_norm():
    """As in PyTorch: convert_sync_batchnorm and other batch-norm checks must leave instance norm alone."""
    from forgeml.nn.batchnorm import _BatchNorm

    assert not isinstance(fm.nn.InstanceNorm2d(3, track_running_stats=True), _BatchNorm)
    assert not isinstance(torch.nn.InstanceNorm2d(3), torch.nn.modules.batchnorm._BatchNorm)
