"""Run the same script with ForgeML and with PyTorch, and compare what comes out."""

import numpy as np
import pytest

import forgeml as fm

torch = pytest.importorskip("torch")

LIBS = pytest.mark.parametrize("lib", [fm, torch], ids=["forgeml", "torch"])


def arr(t):
    """A NumPy copy of a ForgeML or torch tensor (None stays None)."""
    if t is None:
        return None
    return np.array(t.detach().numpy(), copy=True)


def both(script):
    """Run ``script(lib)`` with ForgeML and with torch; tensors in the results become NumPy arrays."""

    def convert(value):
        if isinstance(value, (tuple, list)):
            return [convert(v) for v in value]
        if isinstance(value, (fm.Tensor, torch.Tensor)):
            return arr(value)
        return value

    return convert(script(fm)), convert(script(torch))


def assert_same(ours, theirs, rtol=1e-10, atol=1e-12):
    """Nested results equal: arrays to tolerance, None to None, bools and strings exactly."""
    if isinstance(theirs, list):
        assert isinstance(ours, list) and len(ours) == len(theirs), (ours, theirs)
        for o, t in zip(ours, theirs):
            assert_same(o, t, rtol, atol)
        return
    if theirs is None:
        assert ours is None
        return
    assert ours is not None
    if isinstance(theirs, (bool, str)):
        assert ours == theirs
        return
    assert np.shape(ours) == np.shape(theirs)
    np.testing.assert_allclose(ours, theirs, rtol=rtol, atol=atol)
