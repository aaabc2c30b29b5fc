"""The op parity table on ``device='cuda'``: through the CuPy stand-in here, through CuPy on a GPU.

Every case of ``tests/ops/test_parity.py`` runs with its inputs on the CUDA
device; forward values and input gradients must match PyTorch (on the CPU)
and float64 gradients must pass ``gradcheck`` there. On a CPU machine the
device is the checked stand-in of ``tests/checked_cuda.py``, which fails on
any host/device mix-up a GPU would fail on; with a GPU and
``FORGEML_TEST_REAL_CUDA=1`` the same tests run on CuPy.
"""

from __future__ import annotations

import numpy as np
import pytest

import forgeml as fm
from forgeml.autograd import gradcheck

from ..ops.test_parity import CASES, _inputs

torch = pytest.importorskip("torch")


def _on_cuda(arrays, dtype):
    return [fm.tensor(a.astype(dtype)).to("cuda").requires_grad_() for a in arrays]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_matches_torch_on_cuda(case, cuda_device):
    arrays = _inputs(case, 1)
    fx = _on_cuda(arrays, np.float32)
    tx = [torch.tensor(a.astype(np.float32), requires_grad=True) for a in arrays]
    f_out = case.fm_fn(*fx)
    t_out = case.torch_fn(*tx)
    assert f_out.device == fm.device("cuda")
    assert f_out.shape == tuple(t_out.shape)
    assert f_out.dtype.name == str(t_out.dtype).removeprefix("torch.")
    np.testing.assert_allclose(f_out.detach().cpu().numpy(), t_out.detach().numpy(), rtol=1e-5, atol=1e-5)
    upstream = np.random.default_rng(2).standard_normal(tuple(t_out.shape)).astype(np.float32)
    f_out.backward(fm.tensor(upstream).to("cuda"))
    t_out.backward(torch.tensor(upstream))
    for i, (f, t) in enumerate(zip(fx, tx)):
        assert f.grad is not None, f"input {i} got no gradient"
        assert f.grad.device == fm.device("cuda")
        np.testing.assert_allclose(f.grad.cpu().numpy(), t.grad.numpy(), rtol=1e-4, atol=1e-5, err_msg=f"input {i}")


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_gradcheck_on_cuda(case, cuda_device):
    inputs = _on_cuda(_inputs(case, 0), np.float64)
    assert gradcheck(case.fm_fn, inputs)
