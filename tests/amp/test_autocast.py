"""autocast's context-manager semantics (the per-op dtype rules are tested with each op family)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import forgeml as fm
from forgeml.ops import _autocast

torch = pytest.importorskip("torch")


def test_enter_exit_nesting_and_queries():
    assert not fm.amp.is_autocast_enabled("cpu")
    with fm.autocast("cpu", dtype=fm.bfloat16):
        assert fm.amp.is_autocast_enabled("cpu") and not fm.amp.is_autocast_enabled("cuda")
        assert fm.amp.get_autocast_dtype("cpu") is fm.bfloat16
        with fm.autocast("cpu", enabled=False):
            assert not fm.amp.is_autocast_enabled("cpu")
        with fm.autocast("cpu", dtype=fm.float16):
            assert fm.amp.get_autocast_dtype("cpu") is fm.float16
        assert fm.amp.get_autocast_dtype("cpu") is fm.bfloat16
    assert not fm.amp.is_autocast_enabled("cpu")
    assert fm.amp.get_autocast_dtype("cuda") is fm.float16  # the default, as torch.get_autocast_dtype


def test_decorator_form():
    @fm.autocast("cpu")
    def inside():
        return fm.amp.is_autocast_enabled("cpu"), fm.amp.get_autocast_dtype("cpu")

    assert inside() == (True, fm.bfloat16)
    assert not fm.amp.is_autocast_enabled("cpu")


def test_bad_arguments_name_the_problem():
    with pytest.raises(ValueError, match="device_type"):
        fm.autocast("cuda:0")
    with pytest.raises(ValueError, match="float16 and bfloat16"):
        fm.autocast("cuda", dtype=fm.float64)


def test_state_is_per_thread():
    seen = []
    with fm.autocast("cpu"):
        t = threading.Thread(target=lambda: seen.append(fm.amp.is_autocast_enabled("cpu")))
        t.start()
        t.join()
    assert seen == [False]


def test_lower_casts_floats_but_not_float64_or_integers_and_caches_leaf_casts():
    w = fm.randn(3, 3, requires_grad=True)
    d = fm.randn(3, dtype=fm.float64)
    i = fm.tensor([1, 2])
    with fm.autocast("cpu", dtype=fm.bfloat16):
        lw, ld, li = _autocast.lower(w, d, i)
        assert lw.dtype is fm.bfloat16 and ld is d and li is i
        assert _autocast.lower(w)[0] is lw  # one cast per weight per region
        with fm.no_grad():
            w.mul_(2)
        assert _autocast.lower(w)[0] is not lw  # an in-place change invalidates the cached copy
        (f,) = _autocast.full(lw)
        assert f.dtype is fm.float32
    assert _autocast.lower(w)[0] is w  # outside the region nothing is cast


def test_gradients_flow_back_to_float32_master_weights_like_torch():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((4, 5)).astype(np.float32), rng.standard_normal((5, 3)).astype(np.float32)
    fa, fb = fm.tensor(a, requires_grad=True), fm.tensor(b, requires_grad=True)
    ta, tb = torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True)
    with fm.autocast("cpu", dtype=fm.bfloat16):
        fo = fm.matmul(fa, fb)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        to = torch.matmul(ta, tb)
    assert fo.dtype is fm.bfloat16 and str(to.dtype) == "torch.bfloat16"
    fo.float().sum().backward()
    to.float().sum().backward()
    assert fa.grad.dtype is fm.float32
    np.testing.assert_allclose(fa.grad.numpy(), ta.grad.numpy(), rtol=2e-2, atol=2e-2)
    np.testing.assert_allclose(fb.grad.numpy(), tb.grad.numpy(), rtol=2e-2, atol=2e-2)
