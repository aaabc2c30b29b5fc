"""conv1d, transposed convs, group/instance norm and 1-D pooling on ``device='cuda'`` (the portable halves).

On a CPU machine the checked CuPy stand-in runs them (only names CuPy has, no host/device mixing); with
``FORGEML_TEST_REAL_CUDA=1`` on a GPU, CuPy does. Forward values and gradients must match PyTorch on the CPU
and stay on the device.
"""

from __future__ import annotations

import numpy as np
import pytest

import forgeml as fm
import forgeml.nn.functional as FF

torch = pytest.importorskip("torch")
F = torch.nn.functional

CUDA = fm.device("cuda")


def _pair(rng, shape):
    a = rng.standard_normal(shape).astype(np.float32)
    return fm.tensor(a).to("cuda").requires_grad_(), torch.tensor(a, requires_grad=True)


def _close(ours, theirs, msg=""):
    assert ours.device == CUDA, f"{msg}: on {ours.device}, expected cuda:0"
    assert tuple(ours.shape) == tuple(theirs.shape), msg
    np.testing.assert_allclose(ours.detach().cpu().numpy(), theirs.detach().numpy(), rtol=1e-4, atol=1e-5, err_msg=msg)


# (name, tensor shapes: input first, then weight/bias or None, kwargs)
CASES = [
    ("conv1d", [(2, 4, 9), (6, 2, 3), (6,)], dict(stride=2, padding=1, groups=2)),
    ("conv1d", [(2, 3, 8), (4, 3, 4), None], dict(padding="same", dilation=2)),
    ("conv_transpose2d", [(2, 4, 5, 6), (4, 3, 3, 3), (6,)], dict(stride=2, padding=1, output_padding=1, groups=2)),
    ("conv_transpose2d", [(2, 3, 4, 4), (3, 2, 3, 3), (2,)], dict(dilation=2, output_padding=(1, 0))),
    ("conv_transpose1d", [(2, 4, 7), (4, 3, 3), (3,)], dict(stride=3, padding=1, output_padding=2)),
    ("group_norm", [(3, 6, 4, 5), (6,), (6,)], {}),
    ("instance_norm", [(3, 4, 7)], {}),
    ("max_pool1d", [(2, 3, 11)], dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)),
    ("avg_pool1d", [(2, 3, 11)], dict(kernel_size=4, stride=3, padding=2, ceil_mode=True, count_include_pad=False)),
    ("adaptive_avg_pool1d", [(2, 3, 11)], dict(output_size=4)),
    ("adaptive_max_pool1d", [(2, 3, 11)], dict(output_size=15)),
]


@pytest.mark.parametrize("name,shapes,kwargs", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_matches_torch_on_cuda(name, shapes, kwargs, cuda_device):
    rng = np.random.default_rng(0)
    pairs = [_pair(rng, s) if s is not None else (None, None) for s in shapes]
    if name == "group_norm":
        f_args, t_args = [pairs[0][0], 2, pairs[1][0], pairs[2][0]], [pairs[0][1], 2, pairs[1][1], pairs[2][1]]
    else:
        f_args, t_args = [p[0] for p in pairs], [p[1] for p in pairs]
    f_out, t_out = getattr(FF, name)(*f_args, **kwargs), getattr(F, name)(*t_args, **kwargs)
    _close(f_out, t_out, "forward")
    up = rng.standard_normal(tuple(t_out.shape)).astype(np.float32)
    f_out.backward(fm.tensor(up).to("cuda"))
    t_out.backward(torch.tensor(up))
    for i, (f, t) in enumerate(pairs):
        if f is not None:
            _close(f.grad, t.grad, f"grad of argument {i}")


def test_instance_norm_running_stats_and_indices_on_cuda(cuda_device):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 4, 6)).astype(np.float32)
    f_mod, t_mod = (
        fm.nn.InstanceNorm1d(4, track_running_stats=True).to("cuda"),
        torch.nn.InstanceNorm1d(4, track_running_stats=True),
    )
    _close(f_mod(fm.tensor(x).to("cuda")), t_mod(torch.tensor(x)), "train")
    _close(f_mod.running_var, t_mod.running_var, "running_var")
    f_mod.eval(), t_mod.eval()
    _close(f_mod(fm.tensor(x).to("cuda")), t_mod(torch.tensor(x)), "eval")
    x[0, 1, 2] = np.nan
    _, f_idx = FF.adaptive_max_pool1d(fm.tensor(x).to("cuda"), 4, return_indices=True)
    _, t_idx = F.adaptive_max_pool1d(torch.tensor(x), 4, return_indices=True)
    np.testing.assert_array_equal(f_idx.cpu().numpy(), t_idx.numpy())
