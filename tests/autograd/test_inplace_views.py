"""In-place ops on views of tensors in the graph: the base's history is rebased, as in PyTorch."""

import numpy as np
import pytest

import forgeml as fm

torch = pytest.importorskip("torch")


def _run(script, lib):
    rng = np.random.default_rng(0)
    a = lib.tensor(rng.standard_normal((3, 4)), requires_grad=True)
    w = lib.tensor(rng.standard_normal(4), requires_grad=True)
    out = script(a, w, lib)
    (out * out).sum().backward()
    return out.detach().numpy(), a.grad.numpy(), w.grad.numpy()


def _row_op(y, op, column=False):
    op(y[:, 1] if column else y[1])
    return y


def _view_then(y, op):
    op(y)
    return y


def _buffer_copy(a, w, lib):
    buf = lib.zeros(3, 4, dtype=lib.float64)
    buf[2].copy_(w * a[0])
    return buf + a


def _two_views(y):
    y[0].mul_(2)
    y[:, 3].add_(1)
    return y


SCRIPTS = {
    "row_mul_scalar": lambda a, w, lib: _row_op(a * 2, lambda v: v.mul_(3)) + w,
    "column_add_tensor": lambda a, w, lib: _row_op(a * 1, lambda v: v.add_(w[:3]), column=True),
    "slice_of_reshape_mul_tensor": lambda a, w, lib: _view_then(a * 1.5, lambda y: y.view(-1)[2:6].mul_(w)),
    "setitem_through_view": lambda a, w, lib: _view_then(a + 1, lambda y: y[1].__setitem__(slice(0, 2), w[:2] * 5)),
    "copy_into_view_of_plain_buffer": _buffer_copy,
    "two_views_modified_in_turn": lambda a, w, lib: _two_views(a - w),
}


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_inplace_on_view_matches_torch(name):
    ours = _run(SCRIPTS[name], fm)
    theirs = _run(SCRIPTS[name], torch)
    for o, t in zip(ours, theirs):
        np.testing.assert_allclose(o, t, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("lib", [fm, torch], ids=["forgeml", "torch"])
def test_modifying_a_saved_output_through_a_view_raises_in_both(lib):
    a = lib.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    y = a.exp()  # exp saves its output for backward
    y[0].mul_(2)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.sum().backward()


def test_view_taken_before_the_base_changed_is_refused():
    a = fm.tensor([1.0, 2.0, 3.0], requires_grad=True)
    y = a * 2
    early = y[0:2]
    y.mul_(3)
    with pytest.raises(RuntimeError, match="modified in place"):
        early * 1


def test_view_of_a_leaf_that_requires_grad_cannot_be_modified_in_place():
    a = fm.ones(3, requires_grad=True)
    with pytest.raises(RuntimeError, match="view of a leaf"):
        a[0:2].add_(1)
    with fm.no_grad():
        a[0:2].add_(1)
    assert a.tolist() == [2.0, 2.0, 1.0]
