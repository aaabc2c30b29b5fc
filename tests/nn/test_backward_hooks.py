"""Module.register_full_backward_hook / register_full_backward_pre_hook against PyTorch."""

import numpy as np
import pytest

import forgeml as fm
from forgeml import nn

torch = pytest.importorskip("torch")


def _np(t):
    if t is None:
        return None
    return t._data if isinstance(t, fm.Tensor) else t.detach().numpy()


def _pair_linear(seed=0):
    torch.manual_seed(seed)
    theirs = torch.nn.Linear(4, 3)
    ours = nn.Linear(4, 3)
    ours.load_state_dict({k: fm.tensor(v.detach().numpy()) for k, v in theirs.state_dict().items()})
    return ours, theirs


def _pair_seq(seed=0):
    torch.manual_seed(seed)
    theirs = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.ReLU(), torch.nn.Linear(5, 2))
    ours = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 2))
    ours.load_state_dict({k: fm.tensor(v.detach().numpy()) for k, v in theirs.state_dict().items()})
    return ours, theirs


def _recorder(log):
    def hook(module, grad_input, grad_output):
        log.append((type(module).__name__, [_np(g) for g in grad_input], [_np(g) for g in grad_output]))

    return hook


def _assert_logs_equal(ours, theirs):
    assert len(ours) == len(theirs) > 0
    for (name_a, gi_a, go_a), (name_b, gi_b, go_b) in zip(ours, theirs):
        assert name_a == name_b
        for a, b in zip(gi_a + go_a, gi_b + go_b):
            assert (a is None) == (b is None)
            if a is not None:
                np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
        assert len(gi_a) == len(gi_b) and len(go_a) == len(go_b)


def _run(ours, theirs, x_requires_grad=True):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 4)).astype(np.float32)
    g = rng.standard_normal((2, ours(fm.tensor(x)).shape[-1])).astype(np.float32)
    fx, tx = fm.tensor(x, requires_grad=x_requires_grad), torch.tensor(x, requires_grad=x_requires_grad)
    ours(fx).backward(fm.tensor(g))
    theirs(tx).backward(torch.tensor(g))
    return fx, tx


@pytest.mark.parametrize("x_requires_grad", [True, False])
def test_full_backward_hook_sees_torch_gradients_linear(x_requires_grad):
    ours, theirs = _pair_linear()
    log_a, log_b = [], []
    ours.register_full_backward_hook(_recorder(log_a))
    theirs.register_full_backward_hook(_recorder(log_b))
    _run(ours, theirs, x_requires_grad)
    _assert_logs_equal(log_a, log_b)
    assert (log_a[0][1][0] is None) == (not x_requires_grad)


def test_hooks_on_sequential_and_children_fire_in_torch_order():
    ours, theirs = _pair_seq()
    log_a, log_b = [], []
    for m in (ours, *ours):
        m.register_full_backward_hook(_recorder(log_a))
    for m in (theirs, *theirs):
        m.register_full_backward_hook(_recorder(log_b))
    _run(ours, theirs)
    assert [e[0] for e in log_a] == [e[0] for e in log_b]
    _assert_logs_equal(log_a, log_b)


def test_hook_return_replaces_grad_input_and_handle_removes():
    ours, theirs = _pair_seq()
    hooks = []
    for model in (ours, theirs):

        def scale(module, grad_input, grad_output):
            return tuple(None if g is None else g * 3.0 for g in grad_input)

        hooks.append(model[2].register_full_backward_hook(scale))
    fx, tx = _run(ours, theirs)
    np.testing.assert_allclose(_np(fx.grad), _np(tx.grad), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(_np(ours[0].weight.grad), _np(theirs[0].weight.grad), rtol=1e-5, atol=1e-6)
    # the last layer's own weight gradient is unchanged by a grad_input hook
    np.testing.assert_allclose(_np(ours[2].weight.grad), _np(theirs[2].weight.grad), rtol=1e-5, atol=1e-6)
    for h in hooks:
        h.remove()
    ours.zero_grad()
    theirs.zero_grad()
    fx2, tx2 = _run(ours, theirs)
    np.testing.assert_allclose(_np(fx2.grad), _np(tx2.grad), rtol=1e-5, atol=1e-6)
    assert not np.allclose(_np(fx2.grad), _np(fx.grad))  # the hook is gone


def test_backward_pre_hook_replaces_grad_output():
    ours, theirs = _pair_linear(1)
    seen_a, seen_b = [], []

    def make(seen):
        def pre(module, grad_output):
            seen.append(_np(grad_output[0]).copy())
            return (grad_output[0] * -2.0,)

        return pre

    ours.register_full_backward_pre_hook(make(seen_a))
    theirs.register_full_backward_pre_hook(make(seen_b))
    log_a, log_b = [], []
    ours.register_full_backward_hook(_recorder(log_a))
    theirs.register_full_backward_hook(_recorder(log_b))
    fx, tx = _run(ours, theirs)
    np.testing.assert_allclose(seen_a[0], seen_b[0], rtol=1e-6)
    _assert_logs_equal(log_a, log_b)  # the hook sees the replaced grad_output
    np.testing.assert_allclose(_np(fx.grad), _np(tx.grad), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(_np(ours.weight.grad), _np(theirs.weight.grad), rtol=1e-5, atol=1e-6)


def test_wrong_number_of_grads_is_an_error():
    ours, _ = _pair_linear()
    ours.register_full_backward_hook(lambda m, gi, go: (None, None))
    x = fm.randn(2, 4, requires_grad=True)
    with pytest.raises(RuntimeError, match="invalid number of grad_input"):
        ours(x).sum().backward()


def test_no_hook_call_under_no_grad():
    ours, _ = _pair_linear()
    calls = []
    ours.register_full_backward_hook(lambda *a: calls.append(a))
    with fm.no_grad():
        out = ours(fm.randn(2, 4, requires_grad=True))
    assert not out.requires_grad and not calls
