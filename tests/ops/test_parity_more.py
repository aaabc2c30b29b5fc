"""Sorting, scans, einsum, fused pointwise ops and their in-place forms: gradcheck and PyTorch parity.

Same two checks as ``test_parity`` (float64 finite differences on three memory
layouts, float32 values and gradients against PyTorch), then the semantics
PyTorch programs rely on: named-tuple results, tie order, dtypes, errors,
in-place rules and sampling statistics.
"""

from __future__ import annotations

import numpy as np
import pytest

import forgeml as fm
from forgeml.autograd import gradcheck

from .test_parity import Case, _layout, _sample, both

torch = pytest.importorskip("torch")

CASES = [
    # --- sorting and selection (random normal inputs: no ties)
    Case("sort_values", *both(lambda a: a.sort(dim=1).values), [(3, 5)]),
    Case("sort_desc_dim0", *both(lambda a: a.sort(0, descending=True)[0]), [(4, 3)]),
    Case("sort_fn_1d", fm.sort, torch.sort, [(6,)]),
    Case("topk", *both(lambda a: a.topk(2).values), [(3, 5)]),
    Case("topk_smallest_dim0", *both(lambda a: a.topk(3, dim=0, largest=False)[0]), [(4, 3)]),
    # --- scans
    Case("cumsum", *both(lambda a: a.cumsum(1)), [(3, 4)]),
    Case("cumsum_fn_dim0", lambda a: fm.cumsum(a, dim=0), lambda a: torch.cumsum(a, dim=0), [(4, 3)]),
    Case("cumprod", *both(lambda a: a.cumprod(-1)), [(3, 4)]),
    Case("cumprod_dim0", lambda a: fm.cumprod(a, 0), lambda a: torch.cumprod(a, 0), [(4, 2, 3)]),
    # --- reordering
    Case("roll", *both(lambda a: a.roll(2, 1)), [(3, 4)]),
    Case("roll_flat", *both(lambda a: a.roll(-3)), [(3, 4)]),
    Case("roll_multi", lambda a: fm.roll(a, (1, -1), (0, 1)), lambda a: torch.roll(a, (1, -1), (0, 1)), [(3, 4)]),
    Case("fliplr", fm.fliplr, torch.fliplr, [(3, 4)]),
    Case("flipud", *both(lambda a: a.flipud() * 1), [(3, 4)]),
    Case("t", *both(lambda a: a.t() * 1), [(3, 4)]),
    Case("t_fn_1d", lambda a: fm.t(a) * 1, lambda a: torch.t(a) * 1, [(4,)]),
    # --- einsum
    Case(
        "einsum_matmul",
        lambda a, b: fm.einsum("ij,jk->ik", a, b),
        lambda a, b: torch.einsum("ij,jk->ik", a, b),
        [(3, 4), (4, 2)],
    ),
    Case(
        "einsum_implicit",
        lambda a, b: fm.einsum("ij,kj", a, b),
        lambda a, b: torch.einsum("ij,kj", a, b),
        [(3, 4), (2, 4)],
    ),
    Case(
        "einsum_list",
        lambda a, b: fm.einsum("bij,bjk->bik", [a, b]),
        lambda a, b: torch.einsum("bij,bjk->bik", [a, b]),
        [(2, 3, 4), (2, 4, 2)],
    ),
    Case(
        "einsum_attention",
        lambda a, b: fm.einsum("bhqd, bhkd -> bhqk", a, b),
        lambda a, b: torch.einsum("bhqd, bhkd -> bhqk", a, b),
        [(2, 2, 3, 4), (2, 2, 5, 4)],
    ),
    Case(
        "einsum_ellipsis",
        lambda a, b: fm.einsum("...ij,...jk->...ik", a, b),
        lambda a, b: torch.einsum("...ij,...jk->...ik", a, b),
        [(2, 3, 4), (4, 5)],
    ),
    Case(
        "einsum_ellipsis_sum", lambda a: fm.einsum("i...->...", a), lambda a: torch.einsum("i...->...", a), [(3, 2, 4)]
    ),
    Case("einsum_diag", lambda a: fm.einsum("ii->i", a), lambda a: torch.einsum("ii->i", a), [(4, 4)]),
    Case("einsum_trace", lambda a: fm.einsum("ii", a), lambda a: torch.einsum("ii", a), [(3, 3)]),
    Case(
        "einsum_diag_batch",
        lambda a, b: fm.einsum("iji,j->ij", a, b),
        lambda a, b: torch.einsum("iji,j->ij", a, b),
        [(3, 2, 3), (2,)],
    ),
    Case(
        "einsum_sum_only_here",
        lambda a, b: fm.einsum("ij,k->ik", a, b),
        lambda a, b: torch.einsum("ij,k->ik", a, b),
        [(3, 4), (2,)],
    ),
    Case(
        "einsum_broadcast_1",
        lambda a, b: fm.einsum("ij,ij->i", a, b),
        lambda a, b: torch.einsum("ij,ij->i", a, b),
        [(1, 3), (4, 3)],
    ),
    Case(
        "einsum_outer3",
        lambda a, b, c: fm.einsum("i,j,k->ijk", a, b, c),
        lambda a, b, c: torch.einsum("i,j,k->ijk", a, b, c),
        [(2,), (3,), (2,)],
    ),
    Case("einsum_transpose", lambda a: fm.einsum("ij->ji", a) * 1, lambda a: torch.einsum("ij->ji", a) * 1, [(3, 4)]),
    # --- fused pointwise ops (functions and methods)
    Case(
        "addcmul",
        lambda a, b, c: fm.addcmul(a, b, c, value=0.5),
        lambda a, b, c: torch.addcmul(a, b, c, value=0.5),
        [(3, 4), (4,), (3, 1)],
    ),
    Case("addcmul_method", *both(lambda a, b, c: a.addcmul(b, c)), [(3, 4), (3, 4), (3, 4)]),
    Case(
        "addcdiv",
        lambda a, b, c: fm.addcdiv(a, b, c, value=-2),
        lambda a, b, c: torch.addcdiv(a, b, c, value=-2),
        [(3, 4), (3, 4), (4,)],
        "away",
    ),
    Case("lerp_scalar", *both(lambda a, b: a.lerp(b, 0.3)), [(3, 4), (3, 4)]),
    Case("lerp_tensor", fm.lerp, torch.lerp, [(3, 4), (4,), (3, 1)]),
    # --- in-place forms, recorded on non-leaf tensors
    Case("addcmul_", *both(lambda a, b, c: (a * 1).addcmul_(b, c, value=2)), [(3, 4), (4,), (3, 4)]),
    Case("addcdiv_", *both(lambda a, b, c: (a * 1).addcdiv_(b, c, value=0.5)), [(3, 4), (3, 4), (3, 4)], "away"),
    Case("lerp_", *both(lambda a, b: (a * 1).lerp_(b, 0.25)), [(3, 4), (3, 4)]),
    Case("lerp_tensor_", *both(lambda a, b, w: (a * 1).lerp_(b, w)), [(3, 4), (3, 4), (4,)]),
    Case("sqrt_", *both(lambda a: (a * 1).sqrt_()), [(3, 4)], "pos"),
    Case("exp_", *both(lambda a: (a * 1).exp_()), [(3, 4)]),
    Case("mul_tensor_", *both(lambda a, b: (a * 1).mul_(b)), [(3, 4), (4,)]),
    Case("add_alpha_", *both(lambda a, b: (a * 1).add_(b, alpha=-2)), [(3, 4), (3, 4)]),
    Case("sub_alpha_", *both(lambda a, b: (a * 1).sub_(b, alpha=0.5)), [(3, 4), (1, 4)]),
    Case("inplace_on_view", *both(lambda a, b: a.clone()[1:].addcmul_(b, b)), [(3, 4), (2, 4)]),
]


def _inputs(case, seed):
    rng = np.random.default_rng(seed)
    return [_sample(rng, s, case.domain) for s in case.shapes]


@pytest.mark.parametrize("layout", ["contiguous", "transposed", "sliced"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_gradcheck(case, layout):
    arrays = [_layout(a, layout) for a in _inputs(case, 0)]
    inputs = [fm.from_numpy(a).requires_grad_() for a in arrays]
    assert gradcheck(lambda *xs: _values(case.fm_fn(*xs)), inputs)


def _values(out):
    return out[0] if isinstance(out, tuple) else out  # (values, indices) results


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_matches_torch_float32(case):
    arrays = [a.astype(np.float32) for a in _inputs(case, 1)]
    fx = [fm.tensor(a, requires_grad=True) for a in arrays]
    tx = [torch.tensor(a, requires_grad=True) for a in arrays]
    f_out = _values(case.fm_fn(*fx))
    t_out = _values(case.torch_fn(*tx))
    assert f_out.shape == tuple(t_out.shape)
    assert f_out.dtype.name == str(t_out.dtype).removeprefix("torch.")
    np.testing.assert_allclose(f_out.detach().numpy(), t_out.detach().numpy(), rtol=1e-5, atol=1e-5)
    upstream = np.random.default_rng(2).standard_normal(tuple(t_out.shape)).astype(np.float32)
    f_out.backward(fm.tensor(upstream))
    t_out.backward(torch.tensor(upstream))
    for i, (f, t) in enumerate(zip(fx, tx)):
        assert f.grad is not None, f"input {i} got no gradient"
        np.testing.assert_allclose(f.grad.numpy(), t.grad.numpy(), rtol=1e-4, atol=1e-5, err_msg=f"input {i}")


# ------------------------------------------------------------------ sorting
def test_sort_and_topk_return_named_tuples_like_torch():
    values = np.random.default_rng(3).standard_normal((4, 6)).astype(np.float32)
    f, t = fm.tensor(values), torch.tensor(values)
    for f_res, t_res in [
        (f.sort(), t.sort()),
        (fm.sort(f, dim=0, descending=True), torch.sort(t, dim=0, descending=True)),
        (f.topk(3, dim=1), t.topk(3, dim=1)),
        (fm.topk(f, 2, 0, largest=False), torch.topk(t, 2, 0, largest=False)),
    ]:
        assert type(f_res).__name__ == type(t_res).__name__
        v, i = f_res
        assert v is f_res.values and i is f_res.indices
        assert i.dtype == fm.int64
        np.testing.assert_array_equal(i.numpy(), t_res.indices.numpy())
        np.testing.assert_array_equal(v.numpy(), t_res.values.numpy())


def test_stable_sort_keeps_tie_order_like_torch():
    values = np.array([[2, 1, 2, 0, 1, 2], [5, 5, 5, 1, 1, 9]], dtype=np.int64)
    for descending in (False, True):
        f = fm.tensor(values).sort(descending=descending, stable=True)
        t = torch.tensor(values).sort(descending=descending, stable=True)
        np.testing.assert_array_equal(f.indices.numpy(), t.indices.numpy())
        np.testing.assert_array_equal(f.values.numpy(), t.values.numpy())
        f_arg = fm.argsort(fm.tensor(values), dim=1, descending=descending, stable=True)
        np.testing.assert_array_equal(f_arg.numpy(), t.indices.numpy())


def test_argsort_and_nan_order_match_torch():
    values = np.array([0.5, np.nan, -1.0, 3.0, 2.0], dtype=np.float32)
    for descending in (False, True):
        np.testing.assert_array_equal(
            fm.tensor(values).argsort(descending=descending).numpy(),
            torch.tensor(values).argsort(descending=descending).numpy(),
        )
    f_bool = fm.tensor([True, False, True]).sort(descending=True, stable=True)
    np.testing.assert_array_equal(f_bool.indices.numpy(), [0, 2, 1])


def test_sort_gradient_goes_to_selected_positions():
    x = fm.tensor([[3.0, 1.0, 2.0], [0.0, 5.0, 4.0]], requires_grad=True)
    t = torch.tensor([[3.0, 1.0, 2.0], [0.0, 5.0, 4.0]], requires_grad=True)
    (x.topk(2).values * fm.tensor([1.0, 10.0])).sum().backward()
    (t.topk(2).values * torch.tensor([1.0, 10.0])).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), t.grad.numpy())


def test_topk_k_out_of_range_raises():
    with pytest.raises(RuntimeError, match="k out of range"):
        fm.ones(2, 3).topk(4)
    assert fm.ones(2, 3).topk(0).values.shape == (2, 0)


# ------------------------------------------------------------------ scans
@pytest.mark.parametrize(
    "values",
    [[2.0, 0.0, 3.0, 4.0], [0.0, 2.0, 3.0, 0.5], [1.5, 2.0, 3.0, 0.0], [2.0, 0.0, 3.0, 0.0], [0.0, 0.0, 1.0, 2.0]],
)
def test_cumprod_gradient_with_zeros_matches_torch(values):
    rows = np.array([values, values[::-1]])
    f = fm.tensor(rows, dtype=fm.float64, requires_grad=True)
    t = torch.tensor(rows, dtype=torch.float64, requires_grad=True)
    upstream = np.random.default_rng(4).standard_normal(rows.shape)
    f.cumprod(1).backward(fm.tensor(upstream))
    t.cumprod(1).backward(torch.tensor(upstream))
    np.testing.assert_allclose(f.grad.numpy(), t.grad.numpy(), rtol=1e-12, atol=1e-12)
    assert gradcheck(lambda a: a.cumprod(1), [fm.tensor(rows, dtype=fm.float64, requires_grad=True)])


def test_scan_dtypes_match_torch():
    for dtype in ("int32", "int64", "bool", "uint8"):
        values = np.array([[1, 0, 1], [1, 1, 0]]).astype(dtype)
        for name in ("cumsum", "cumprod"):
            f = getattr(fm.tensor(values), name)(1)
            t = getattr(torch.tensor(values), name)(1)
            assert f.dtype.name == str(t.dtype).removeprefix("torch."), (name, dtype)
            np.testing.assert_array_equal(f.numpy(), t.numpy())
    f = fm.cumsum(fm.tensor([1, 2, 3]), 0, dtype=fm.float64)
    assert f.dtype == fm.float64 and f.tolist() == [1.0, 3.0, 6.0]
    assert fm.cumsum(fm.tensor(2.0), 0).shape == ()


# ------------------------------------------------------------------ any / all
@pytest.mark.parametrize("dtype", ["float32", "int64", "bool", "uint8"])
def test_any_all_match_torch(dtype):
    values = (np.random.default_rng(5).standard_normal((2, 3, 4)) > 0.3).astype(dtype)
    f, t = fm.tensor(values), torch.tensor(values)
    for kwargs in [{}, {"dim": 1}, {"dim": -1, "keepdim": True}, {"dim": (0, 2)}, {"dim": (1,), "keepdim": True}]:
        for name in ("any", "all"):
            f_out = getattr(fm, name)(f, **kwargs)
            t_out = getattr(t, name)(**kwargs)
            assert f_out.dtype.name == str(t_out.dtype).removeprefix("torch."), (name, kwargs)
            assert f_out.shape == tuple(t_out.shape)
            np.testing.assert_array_equal(f_out.numpy(), t_out.numpy())


# ------------------------------------------------------------------ einsum
def test_einsum_errors_name_the_problem():
    with pytest.raises(ValueError, match="2 operands but 1"):
        fm.einsum("ij,jk->ik", fm.ones(2, 3))
    with pytest.raises(ValueError, match="name 2 dims but the operand has 3"):
        fm.einsum("ij->i", fm.ones(2, 3, 4))
    with pytest.raises(ValueError, match="does not appear"):
        fm.einsum("ij->k", fm.ones(2, 3))
    with pytest.raises(RuntimeError, match="sizes don't match"):
        fm.einsum("ii->i", fm.ones(2, 3))
    with pytest.raises(RuntimeError, match="expected scalar type"):
        fm.einsum("i,i->", fm.ones(2), fm.ones(2, dtype=fm.float64))


# ------------------------------------------------------------------ t, type, new_*
def test_t_matches_torch():
    assert fm.t(fm.tensor(2.0)).shape == ()
    x = fm.arange(6).reshape(2, 3)
    np.testing.assert_array_equal(x.t().numpy(), torch.arange(6).reshape(2, 3).t().numpy())
    np.testing.assert_array_equal(x.T.numpy(), x.t().numpy())
    assert fm.ones(2, 3, 4).mT.shape == (2, 4, 3)
    with pytest.raises(RuntimeError, match="<= 2 dimensions"):
        fm.ones(2, 3, 4).t()


def test_type_names_and_conversion():
    for name in ("float32", "float64", "float16", "int64", "int32", "int16", "int8", "uint8", "bool"):
        f = fm.zeros(2, dtype=getattr(fm, name))
        t = torch.zeros(2, dtype=getattr(torch, name))
        assert f.type() == t.type().replace("torch.", "forgeml.")
    x = fm.ones(2, requires_grad=True)
    assert x.type(fm.float32) is x
    y = x.type("forgeml.DoubleTensor")
    assert y.dtype == fm.float64 and y.requires_grad
    assert x.type("torch.LongTensor").dtype == fm.int64
    assert x.type(fm.int32).dtype == fm.int32


def test_new_factories_follow_self():
    x = fm.ones(2, dtype=fm.float64)
    for made, shape in [
        (x.new_zeros(2, 3), (2, 3)),
        (x.new_ones((4,)), (4,)),
        (x.new_empty(3), (3,)),
        (x.new_full((2, 2), 7), (2, 2)),
        (x.new_tensor([1, 2]), (2,)),
    ]:
        assert made.dtype == fm.float64 and made.shape == shape and made.device == x.device
    assert x.new_zeros(2, dtype=fm.int64).dtype == fm.int64
    assert x.new_full((2,), 7).tolist() == [7.0, 7.0]
    assert x.new_ones(2, requires_grad=True).requires_grad
    src = fm.ones(3, requires_grad=True)
    copy = src.new_tensor(src)
    assert not copy.requires_grad and copy.is_leaf
    copy.add_(1)
    assert src.tolist() == [1.0, 1.0, 1.0]


# ------------------------------------------------------------------ in place
def test_inplace_ops_refuse_leaf_requiring_grad_and_bump_version():
    w = fm.ones(3, requires_grad=True)
    for op in (
        lambda: w.addcmul_(fm.ones(3), fm.ones(3)),
        lambda: w.addcdiv_(fm.ones(3), fm.ones(3)),
        lambda: w.lerp_(fm.zeros(3), 0.5),
        w.sqrt_,
        w.exp_,
    ):
        with pytest.raises(RuntimeError, match="leaf Variable"):
            op()
    with fm.no_grad():
        before = w._version
        w.addcmul_(fm.full((3,), 2.0), fm.full((3,), 3.0), value=0.5).sqrt_()
        assert w._version == before + 2
    np.testing.assert_allclose(w.detach().numpy(), np.full(3, 2.0))


def test_inplace_on_saved_tensor_makes_backward_raise():
    x = fm.ones(3, requires_grad=True)
    y = x * 2
    z = y.exp()  # saves its output
    z.exp_()
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        z.sum().backward()


def test_inplace_dtype_and_shape_errors():
    with pytest.raises(RuntimeError, match="can't be cast"):
        fm.ones(2, dtype=fm.int64).sqrt_()
    with pytest.raises(RuntimeError, match="doesn't match the broadcast shape"):
        fm.ones(2).addcmul_(fm.ones(3, 2), fm.ones(2))
    with pytest.raises(RuntimeError, match="Integer division"):
        fm.addcdiv(fm.ones(2, dtype=fm.int64), fm.ones(2, dtype=fm.int64), fm.ones(2, dtype=fm.int64))
    with pytest.raises(RuntimeError, match="for `end`"):
        fm.lerp(fm.ones(2), fm.ones(2, dtype=fm.float64), 0.5)
    ints = fm.addcmul(fm.ones(2, dtype=fm.int64), fm.ones(2, dtype=fm.int64), fm.ones(2, dtype=fm.int64), value=2)
    assert ints.dtype == fm.int64 and ints.tolist() == [3, 3]


# ------------------------------------------------------------------ multinomial
def test_multinomial_with_replacement_frequencies_and_seed():
    weights = fm.tensor([1.0, 0.0, 3.0, 6.0])  # unnormalised
    fm.manual_seed(123)
    a = fm.multinomial(weights, 20000, replacement=True)
    fm.manual_seed(123)
    b = weights.multinomial(20000, True)
    assert a.dtype == fm.int64 and a.shape == (20000,)
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    freq = np.bincount(a.numpy(), minlength=4) / 20000
    np.testing.assert_allclose(freq, [0.1, 0.0, 0.3, 0.6], atol=0.015)
    assert freq[1] == 0
    gen = fm.Generator().manual_seed(7)
    c = fm.multinomial(weights, 50, True, generator=gen)
    d = fm.multinomial(weights, 50, True, generator=fm.Generator().manual_seed(7))
    np.testing.assert_array_equal(c.numpy(), d.numpy())


def test_multinomial_without_replacement_has_no_duplicates():
    probs = fm.tensor([[0.5, 0.2, 0.0, 0.2, 0.1], [1.0, 1.0, 1.0, 1.0, 1.0]])
    for _ in range(20):
        rows = fm.multinomial(probs, 4).numpy()
        assert rows.shape == (2, 4)
        for row in rows:
            assert len(set(row.tolist())) == 4
        assert 2 not in rows[0]
    # the first draw without replacement follows the probabilities
    firsts = fm.multinomial(fm.tensor([[0.2, 0.3, 0.5]]).expand(6000, 3), 2)[:, 0].numpy()
    np.testing.assert_allclose(np.bincount(firsts, minlength=3) / 6000, [0.2, 0.3, 0.5], atol=0.03)
    # the second draw is renormalised over the rest: P(second = 0) = 0.3*0.2/0.7 + 0.5*0.2/0.5
    seconds = fm.multinomial(fm.tensor([[0.2, 0.3, 0.5]]).expand(6000, 3), 2)[:, 1].numpy()
    assert abs((seconds == 0).mean() - (0.3 * 0.2 / 0.7 + 0.5 * 0.2 / 0.5)) < 0.03


def test_multinomial_errors_match_torch():
    cases = [
        ((fm.tensor([1.0, -1.0]), 1), "element < 0"),
        ((fm.tensor([0.0, 0.0]), 1), "sum of probabilities <= 0"),
        ((fm.tensor([1.0, 1.0]), 0), "n_sample <= 0"),
        ((fm.tensor([1.0, 1.0]), 3), "n_sample > prob_dist.size"),
        ((fm.ones(2, 2, 2), 1), "1 or 2 dim"),
        ((fm.tensor([1, 1]), 1), "floating-point"),
        ((fm.tensor([1.0, 0.0, 0.0]), 2), "not enough"),
    ]
    for args, message in cases:
        with pytest.raises(RuntimeError, match=message.replace("(", r"\(").replace(".", r"\.")):
            fm.multinomial(*args)


# ------------------------------------------------------------------ on a CUDA device (the CuPy stand-in, or a GPU)
DEVICE_CASES = [c for c in CASES if c.name != "inplace_on_view"]


def test_ops_run_on_cuda_like_on_cpu(cuda_device):
    for case in DEVICE_CASES:
        arrays = _inputs(case, 6)
        cpu = [fm.tensor(a, requires_grad=True) for a in arrays]
        dev = [fm.tensor(a, device=cuda_device, requires_grad=True) for a in arrays]
        out_cpu, out_dev = _values(case.fm_fn(*cpu)), _values(case.fm_fn(*dev))
        assert out_dev.device.type == "cuda", case.name
        np.testing.assert_allclose(out_dev.cpu().detach().numpy(), out_cpu.detach().numpy(), rtol=1e-10, atol=1e-12)
        out_cpu.sum().backward()
        out_dev.sum().backward()
        for c, d in zip(cpu, dev):
            np.testing.assert_allclose(d.grad.cpu().numpy(), c.grad.numpy(), rtol=1e-10, atol=1e-12, err_msg=case.name)


def test_sampling_and_selection_on_cuda(cuda_device):
    fm.manual_seed(5)
    probs = fm.tensor([[0.0, 1.0, 3.0], [2.0, 0.0, 2.0]], device=cuda_device)
    a = fm.multinomial(probs, 3, replacement=True)
    fm.manual_seed(5)
    b = probs.multinomial(3, True)
    assert a.device.type == "cuda" and a.dtype == fm.int64
    np.testing.assert_array_equal(a.cpu().numpy(), b.cpu().numpy())
    c = fm.multinomial(probs, 2).cpu().numpy()
    assert set(c[0].tolist()) == {1, 2} and set(c[1].tolist()) == {0, 2}
    x = fm.tensor([[3.0, 1.0, 2.0]], device=cuda_device)
    assert x.argsort(descending=True).cpu().tolist() == [[0, 2, 1]]
    assert fm.any(x > 2).item() and x.all(dim=(0, 1), keepdim=True).cpu().tolist() == [[True]]
    assert not fm.all(x > 1).item()
    assert x.type() == "forgeml.cuda.FloatTensor"
    assert x.new_zeros(2).device == x.device


def test_flip_copies_as_torch_does():
    x, tx = fm.arange(4.0), torch.arange(4.0)
    y, ty = x.flip(0), tx.flip(0)
    y[0] = 9.0
    ty[0] = 9.0
    assert x.tolist() == tx.tolist() == [0.0, 1.0, 2.0, 3.0]
    assert y.tolist() == ty.tolist() == [9.0, 2.0, 1.0, 0.0]
