"""In-place ops and autograd: the version counter, views sharing it, saved-tensor checks, leaves,
recorded in-place updates of non-leaves, dtype rules; every script is also run with torch."""

import numpy as np
import pytest

import forgeml as fm
from tests.oracle import arr, assert_same, both

torch = pytest.importorskip("torch")


INPLACE_MESSAGE = "modified by an inplace operation"


def outcome(fn):
    """'ok' or the kind of RuntimeError ('inplace', 'leaf', 'cast', or the message)."""
    try:
        fn()
        return "ok"
    except RuntimeError as exc:
        msg = str(exc)
        if INPLACE_MESSAGE in msg:
            return "inplace"
        if "leaf Variable" in msg:
            return "leaf"
        if "can't be cast" in msg:
            return "cast"
        return msg


# -- the version counter ------------------------------------------------------------------------------
def _setitem(x, lib):
    x[0] = 5.0


def _setitem_slice(x, lib):
    x[1:, 2] = lib.tensor([1.0, 2.0])


def _iadd(x, lib):
    x += 1


def _isub(x, lib):
    x -= 1


def _imul(x, lib):
    x *= 2


def _idiv(x, lib):
    x /= 2


INPLACE_OPS = {
    "add_": lambda x, lib: x.add_(1),
    "add_tensor": lambda x, lib: x.add_(lib.ones(4)),
    "sub_": lambda x, lib: x.sub_(1),
    "mul_": lambda x, lib: x.mul_(2),
    "div_": lambda x, lib: x.div_(2),
    "zero_": lambda x, lib: x.zero_(),
    "fill_": lambda x, lib: x.fill_(3.0),
    "clamp_": lambda x, lib: x.clamp_(0.0, 1.0),
    "clamp_min": lambda x, lib: x.clamp_(min=0.5),
    "copy_": lambda x, lib: x.copy_(lib.ones(3, 4)),
    "uniform_": lambda x, lib: x.uniform_(),
    "normal_": lambda x, lib: x.normal_(),
    "masked_fill_": lambda x, lib: x.masked_fill_(lib.zeros(3, 4) == 0, 2.0),
    "setitem": _setitem,
    "setitem_slice": _setitem_slice,
    "iadd": _iadd,
    "isub": _isub,
    "imul": _imul,
    "idiv": _idiv,
}


@pytest.mark.parametrize("op", list(INPLACE_OPS), ids=list(INPLACE_OPS))
def test_in_place_op_bumps_version_by_one(op):
    def script(lib):
        x = lib.zeros(3, 4)
        before = x._version
        ident = id(x)
        INPLACE_OPS[op](x, lib)
        return [before, x._version, id(x) == ident]

    ours, theirs = both(script)
    assert ours == theirs == [0, 1, True]


def test_versions_count_every_in_place_op():
    x = fm.zeros(3, 4)
    for i, op in enumerate(INPLACE_OPS.values(), start=1):
        op(x, fm)
        assert x._version == i


def test_in_place_ops_return_self_and_out_of_place_ops_do_not_bump():
    x = fm.zeros(3)
    assert x.add_(1) is x
    assert x.mul_(2) is x
    assert x.zero_() is x
    y = x + 1
    x.exp()
    x.reshape(3)
    assert x._version == 3 and y._version == 0
    np.testing.assert_array_equal(arr(x), [0.0, 0.0, 0.0])


VIEWS = {
    "reshape": lambda x: x.reshape(6),
    "view": lambda x: x.view(3, 2),
    "transpose": lambda x: x.transpose(0, 1),
    "T": lambda x: x.T,
    "slice_row": lambda x: x[0],
    "slice_cols": lambda x: x[:, 1:],
    "unsqueeze": lambda x: x.unsqueeze(0),
    "none_index": lambda x: x[None],
    "permute": lambda x: x.permute(1, 0),
    "narrow": lambda x: x.narrow(1, 0, 2),
    "select": lambda x: x.select(0, 1),
    "view_of_view": lambda x: x.view(6)[2:],
    "expand": lambda x: x[0:1].expand(4, 3),
}


@pytest.mark.parametrize("view", list(VIEWS), ids=list(VIEWS))
def test_views_share_the_version_counter_with_their_base(view):
    def script(lib):
        x = lib.zeros(2, 3)
        v = VIEWS[view](x)
        x.add_(1)
        after_base = (x._version, v._version)
        if view != "expand":  # writing through an expanded view is an error in torch
            v.mul_(2)
        return [after_base, (x._version, v._version), arr(x)]

    ours, theirs = both(script)
    assert ours[0] == theirs[0] == [1, 1]
    assert ours[1] == theirs[1]
    np.testing.assert_array_equal(ours[2], theirs[2])


def test_views_of_the_same_base_see_each_other():
    x = fm.zeros(4)
    a = x[:2]
    b = x.view(2, 2)
    a.add_(1)
    assert b._version == 1 and x._version == 1
    np.testing.assert_array_equal(arr(b), [[1.0, 1.0], [0.0, 0.0]])


@pytest.mark.parametrize("copy", ["clone", "advanced_index", "contiguous_after_T", "arith"])
def test_copies_do_not_share_the_version_counter(copy):
    def script(lib):
        x = lib.zeros(2, 3)
        c = {
            "clone": x.clone,
            "advanced_index": lambda: x[[0, 1]],
            "contiguous_after_T": x.T.contiguous,
            "arith": lambda: x + 0,
        }[copy]()
        x.add_(1)
        return [c._version, x._version, arr(c)]

    ours, theirs = both(script)
    assert_same(ours, theirs)
    assert ours[0] == 0


def test_detach_shares_storage_and_version_counter_like_torch():
    def script(lib):
        x = lib.zeros(3, requires_grad=True)
        d = x.detach()
        d.add_(1)
        return [x._version, d._version, arr(x)]

    ours, theirs = both(script)
    assert_same(ours, theirs)
    assert ours[0] == 1


# -- saved tensors modified in place ---------------------------------------------------------------------------
def _exp_then_add(lib):
    x = lib.tensor([1.0, 2.0], requires_grad=True)
    y = x.exp()
    y.add_(1)
    y.sum().backward()


def _sigmoid_then_mul(lib):
    a = lib.tensor([1.0, 2.0], requires_grad=True)
    y = a.sigmoid()
    z = y * 2
    y.mul_(2)
    z.sum().backward()


def _exp_then_zero_via_sum(lib):
    x = lib.tensor([1.0, 2.0], requires_grad=True)
    y = x.exp()
    z = y.sum()
    y.zero_()
    z.backward()


def _constant_operand_modified(lib):
    x = lib.tensor([1.0, 2.0], requires_grad=True)
    w = lib.tensor([3.0, 4.0])
    y = x * w
    w.add_(1)
    y.sum().backward()


def _leaf_modified_under_no_grad(lib):
    x = lib.tensor([1.0, 2.0], requires_grad=True)
    y = (x * x).sum()
    with lib.no_grad():
        x.add_(1)
    y.backward()


def _modified_through_detach(lib):
    a = lib.tensor([1.0, 2.0], requires_grad=True)
    b = lib.tensor([3.0, 4.0], requires_grad=True)
    y = a * b
    a.detach().mul_(2)
    y.sum().backward()


def _modified_through_setitem(lib):
    x = lib.tensor([1.0, 2.0], requires_grad=True)
    y = x * 1
    z = y * y
    y[0] = 0.0
    z.sum().backward()


def _non_leaf_used_after_view_modified(lib):
    a = lib.tensor([1.0, 2.0], requires_grad=True)
    y = a * 1
    w = y.view(2) * y.view(2)
    y.add_(1)
    w.sum().backward()


def _custom_saved_input_modified(lib):
    class Square(lib.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x * x

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return 2 * x * g

    a = lib.tensor([1.0, 2.0], requires_grad=True)
    h = a * 1
    y = Square.apply(h)
    h.add_(1)
    y.sum().backward()


SAVED_MODIFIED = {
    "exp_then_add_": _exp_then_add,
    "sigmoid_then_mul_": _sigmoid_then_mul,
    "exp_output_zeroed": _exp_then_zero_via_sum,
    "constant_operand": _constant_operand_modified,
    "leaf_under_no_grad": _leaf_modified_under_no_grad,
    "through_detach": _modified_through_detach,
    "through_setitem": _modified_through_setitem,
    "view_then_base": _non_leaf_used_after_view_modified,
    "custom_function": _custom_saved_input_modified,
}


@pytest.mark.parametrize("case", list(SAVED_MODIFIED), ids=list(SAVED_MODIFIED))
def test_backward_after_a_saved_tensor_was_modified_raises(case):
    script = SAVED_MODIFIED[case]
    assert outcome(lambda: script(torch)) == "inplace"
    with pytest.raises(RuntimeError, match=INPLACE_MESSAGE):
        script(fm)


def test_the_error_names_the_versions():
    x = fm.tensor([1.0, 2.0], requires_grad=True)
    y = x.exp()
    y.add_(1)
    y.add_(1)
    with pytest.raises(RuntimeError) as info:
        y.sum().backward()
    assert "version 2" in str(info.value) and "version 0" in str(info.value)


def test_an_in_place_op_without_backward_raises_nothing():
    x = fm.tensor([1.0, 2.0], requires_grad=True)
    y = x.exp()
    y.add_(1)
    assert y.grad_fn is not None and y._version == 1


# -- modifying what was not saved -----------------------------------------------------------------------------
def test_modifying_inputs_that_add_did_not_save_is_fine():
    def script(lib):
        a0 = lib.tensor([1.0, 2.0], dtype=lib.float64, requires_grad=True)
        b0 = lib.tensor([3.0, 4.0], dtype=lib.float64, requires_grad=True)
        a = a0 * 1
        b = b0 * 1
        y = a + b
        a.add_(1)
        b.mul_(2)
        (y * 3).sum().backward()
        return [a0.grad, b0.grad, y]

    ours, theirs = both(script)
    assert_same(ours, theirs)
    np.testing.assert_allclose(ours[0], [3.0, 3.0])


def test_modifying_a_leaf_under_no_grad_that_was_not_saved_is_fine():
    def script(lib):
        x = lib.tensor([1.0, 2.0], dtype=lib.float64, requires_grad=True)
        y = (x + x).sum()
        with lib.no_grad():
            x.add_(1)
        y.backward()
        return [x.grad, x]

    ours, theirs = both(script)
    assert_same(ours, theirs)


def test_modifying_the_output_of_an_op_that_saved_only_its_input_is_fine():
    def script(lib):
        x = lib.tensor([1.0, 2.0], dtype=lib.float64, requires_grad=True)
        h = x * 1
        y = h.sin()  # sin saves its input h, not its output y
        y.add_(5)
        (y * 2).sum().backward()
        return [x.grad, y]

    ours, theirs = both(script)
    assert_same(ours, theirs)
    np.testing.assert_allclose(ours[0], 2 * np.cos([1.0, 2.0]))


# -- leaves ---------------------------------------------------------------------------------------------------------
LEAF_OPS = {k: v for k, v in INPLACE_OPS.items() if k not in ("add_tensor", "copy_", "setitem_slice")}
LEAF_OPS["copy_"] = lambda x, lib: x.copy_(lib.ones(4))
LEAF_OPS["masked_fill_"] = lambda x, lib: x.masked_fill_(lib.tensor([True, False, True, False]), 2.0)


@pytest.mark.parametrize("op", list(LEAF_OPS), ids=list(LEAF_OPS))
def test_in_place_on_a_leaf_that_requires_grad_raises(op):
    def script(lib):
        x = lib.tensor([0.5, 1.0, 2.0, 3.0], requires_grad=True)
        result = outcome(lambda: LEAF_OPS[op](x, lib))
        return [result, x.is_leaf, x.grad_fn is None, arr(x)]

    ours, theirs = both(script)
    assert theirs[0] in ("leaf",) or "leaf Variable" in theirs[0]
    assert ours[0] == "leaf", ours[0]
    assert ours[1:3] == [True, True]
    np.testing.assert_array_equal(ours[3], [0.5, 1.0, 2.0, 3.0])  # nothing was written


def test_leaf_error_message_says_leaf():
    x = fm.tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(RuntimeError, match="leaf"):
        x.add_(1)


@pytest.mark.parametrize("op", list(LEAF_OPS), ids=list(LEAF_OPS))
def test_in_place_on_a_leaf_works_inside_no_grad(op):
    def script(lib):
        lib.manual_seed(0)
        x = lib.tensor([0.5, 1.0, 2.0, 3.0], requires_grad=True)
        with lib.no_grad():
            LEAF_OPS[op](x, lib)
        return [x.requires_grad, x.is_leaf, x.grad_fn is None, x._version, arr(x)]

    ours, theirs = both(script)
    assert ours[:4] == theirs[:4] == [True, True, True, 1]
    if op not in ("uniform_", "normal_"):
        np.testing.assert_allclose(ours[4], theirs[4], rtol=1e-6)


def test_leaf_updated_under_no_grad_still_trains():
    def script(lib):
        w = lib.tensor([1.0, -2.0], dtype=lib.float64, requires_grad=True)
        for _ in range(3):
            loss = ((w - 3) ** 2).sum()
            loss.backward()
            with lib.no_grad():
                w.sub_(0.1 * w.grad)
            w.grad = None
        return w

    ours, theirs = both(script)
    assert_same(ours, theirs)


# -- recorded in-place on non-leaves ---------------------------------------------------------------------------------
def test_recorded_in_place_on_non_leaf_matches_torch():
    def script(lib):
        x = lib.tensor([1.0, 2.0, 3.0], dtype=lib.float64, requires_grad=True)
        b = lib.tensor([0.5, -1.0, 2.0], dtype=lib.float64, requires_grad=True)
        y = x * 2
        y.mul_(b)
        y.add_(1)
        flags = [y.is_leaf, y.requires_grad, y.grad_fn is not None]
        (y * y).sum().backward()
        return [x.grad, b.grad, y, flags]

    ours, theirs = both(script)
    assert_same(ours, theirs)
    assert ours[3] == [False, True, True]


def test_in_place_add_of_a_grad_tensor_makes_a_buffer_part_of_the_graph():
    def script(lib):
        w = lib.tensor([1.0, 2.0, 3.0], dtype=lib.float64, requires_grad=True)
        buf = lib.zeros(3, dtype=lib.float64)
        buf.add_(w)
        flags = [buf.requires_grad, buf.is_leaf, buf.grad_fn is not None, buf._version]
        (buf * buf).sum().backward()
        return [flags, w.grad, buf]

    ours, theirs = both(script)
    assert ours[0] == theirs[0] == [True, False, True, 1]
    assert_same(ours[1:], theirs[1:])
    np.testing.assert_allclose(ours[1], [2.0, 4.0, 6.0])


def test_setitem_with_grad_values_records_into_a_buffer():
    def script(lib):
        w = lib.tensor([1.0, 2.0, 3.0], dtype=lib.float64, requires_grad=True)
        buf = lib.zeros(2, 3, dtype=lib.float64)
        buf[0] = w * 2
        buf[1] = w * w
        (buf * lib.tensor([[1.0], [3.0]], dtype=lib.float64)).sum().backward()
        return [w.grad, buf]

    ours, theirs = both(script)
    assert_same(ours, theirs)
    np.testing.assert_allclose(ours[0], 2 + 6 * np.array([1.0, 2.0, 3.0]))


def test_setitem_overwrites_the_gradient_path_of_the_overwritten_elements():
    def script(lib):
        a = lib.tensor([1.0, 2.0, 3.0], dtype=lib.float64, requires_grad=True)
        y = a * 1
        y[0] = a[1] * 3
        y.sum().backward()
        return a.grad

    ours, theirs = both(script)
    assert_same(ours, theirs)
    np.testing.assert_allclose(ours, [0.0, 4.0, 1.0])


RECORDED = {
    "clamp_": lambda y, b, lib: y.clamp_(min=1.5),
    "masked_fill_": lambda y, b, lib: y.masked_fill_(lib.tensor([True, False, True]), 0.0),
    "copy_": lambda y, b, lib: y.copy_(b * b),
    "div_": lambda y, b, lib: y.div_(b),
    "sub_": lambda y, b, lib: y.sub_(b),
    "fill_tensor": lambda y, b, lib: y.fill_(b.sum()),
    "zero_": lambda y, b, lib: y.zero_(),
    "iadd_imul": lambda y, b, lib: (y.__iadd__(b), y.__imul__(b)),
    "add_alpha": lambda y, b, lib: y.add_(b, alpha=2.5),
}


@pytest.mark.parametrize("op", list(RECORDED), ids=list(RECORDED))
def test_recorded_in_place_ops_give_torch_gradients(op):
    def script(lib):
        x = lib.tensor([1.0, 2.0, 3.0], dtype=lib.float64, requires_grad=True)
        b = lib.tensor([0.5, -1.5, 2.0], dtype=lib.float64, requires_grad=True)
        y = x * 1.5
        RECORDED[op](y, b, lib)
        (y * y * lib.tensor([1.0, 2.0, 3.0], dtype=lib.float64)).sum().backward()
        return [x.grad, b.grad, y]

    ours, theirs = both(script)
    assert_same(ours, theirs)


def test_retain_grad_then_in_place_matches_torch():
    """torch moves the retain_grad hook to the new grad_fn: y.grad is the gradient w.r.t. the final y."""

    def script(lib):
        a = lib.tensor([1.0, 2.0], dtype=lib.float64, requires_grad=True)
        y = a * 2
        y.retain_grad()
        y.mul_(3)
        (y * y).sum().backward()
        return [y.grad, a.grad]

    ours, theirs = both(script)
    np.testing.assert_allclose(theirs[0], [12.0, 24.0])
    assert_same(ours, theirs)


def test_retain_grad_then_two_in_place_ops_matches_torch():
    def script(lib):
        a = lib.tensor([1.0, 2.0], dtype=lib.float64, requires_grad=True)
        y = a * 2
        y.retain_grad()
        y.add_(1)
        y.mul_(3)
        (y * y).sum().backward()
        return [y.grad, a.grad]

    ours, theirs = both(script)
    assert_same(ours, theirs)


def test_retain_grad_after_in_place_matches_torch():
    def script(lib):
        a = lib.tensor([1.0, 2.0], dtype=lib.float64, requires_grad=True)
        y = a * 2
        y.mul_(3)
        y.retain_grad()
        (y * y).sum().backward()
        return [y.grad, a.grad]

    ours, theirs = both(script)
    assert_same(ours, theirs)


def test_in_place_on_a_view_of_a_graph_tensor_matches_torch():
    """torch rebases the base's history when a view of it is modified in place (y[0:1].mul_(3))."""

    def script(lib):
        a = lib.tensor([1.0, 2.0], dtype=lib.float64, requires_grad=True)
        y = a * 2
        y[0:1].mul_(3)
        (y * y).sum().backward()
        return [a.grad, y]

    ours = outcome(lambda: script(fm))
    assert ours == "ok", f"ForgeML raised: {ours}"
    ours, theirs = both(script)
    assert_same(ours, theirs)


# -- dtypes -----------------------------------------------------------------------------------------------------------
INT_FLOAT = {
    "add_scalar": lambda x, lib: x.add_(1.5),
    "mul_tensor": lambda x, lib: x.mul_(lib.tensor([1.5, 1.0, 1.0])),
    "div_int": lambda x, lib: x.div_(2),
    "iadd_float": lambda x, lib: x.__iadd__(0.5),
    "sub_tensor": lambda x, lib: x.sub_(lib.tensor([0.5, 0.5, 0.5])),
}


@pytest.mark.parametrize("op", list(INT_FLOAT), ids=list(INT_FLOAT))
def test_in_place_on_an_int_tensor_with_a_float_operand_raises(op):
    def script(lib):
        x = lib.tensor([1, 2, 3])
        result = outcome(lambda: INT_FLOAT[op](x, lib))
        return [result, x, str(x.dtype).split(".")[-1], x._version]

    ours, theirs = both(script)
    assert theirs[0] == "cast"
    assert ours[0] == "cast", ours[0]
    assert_same(ours[1:], theirs[1:])
    np.testing.assert_array_equal(ours[1], [1, 2, 3])
    assert ours[3] == 0


@pytest.mark.parametrize(
    "op",
    ["fill_", "setitem", "copy_"],
)
def test_assigning_floats_into_an_int_tensor_truncates_like_torch(op):
    def script(lib):
        x = lib.tensor([1, 2, 3])
        if op == "fill_":
            x.fill_(2.7)
        elif op == "setitem":
            x[0] = 2.5
        else:
            x.copy_(lib.tensor([1.5, 2.5, -3.5]))
        return [x, str(x.dtype).split(".")[-1]]

    ours, theirs = both(script)
    assert_same(ours, theirs)
    assert ours[1] == "int64"


@pytest.mark.parametrize(
    "case",
    ["f32_plus_f64", "f32_times_int", "i32_plus_i64", "f64_plus_f32", "f32_setitem_f64", "f32_copy_f64"],
)
def test_in_place_ops_preserve_dtype(case):
    def script(lib):
        if case == "f32_plus_f64":
            x = lib.tensor([1.0, 2.0], dtype=lib.float32)
            x.add_(lib.tensor([0.1, 0.2], dtype=lib.float64))
        elif case == "f32_times_int":
            x = lib.tensor([1.0, 2.0], dtype=lib.float32)
            x.mul_(lib.tensor([3, 4]))
        elif case == "i32_plus_i64":
            x = lib.tensor([1, 2], dtype=lib.int32)
            x.add_(lib.tensor([10, 20], dtype=lib.int64))
        elif case == "f64_plus_f32":
            x = lib.tensor([1.0, 2.0], dtype=lib.float64)
            x.add_(lib.tensor([0.1, 0.2], dtype=lib.float32))
        elif case == "f32_setitem_f64":
            x = lib.tensor([1.0, 2.0], dtype=lib.float32)
            x[0] = lib.tensor(0.5, dtype=lib.float64)
        else:
            x = lib.tensor([1.0, 2.0], dtype=lib.float32)
            x.copy_(lib.tensor([0.25, 0.75], dtype=lib.float64))
        return [str(x.dtype).split(".")[-1], x]

    ours, theirs = both(script)
    assert ours[0] == theirs[0]
    assert_same(ours[1], theirs[1], rtol=1e-6)


def test_recorded_in_place_with_mixed_dtypes_keeps_dtypes_of_values_and_grads():
    def script(lib):
        x = lib.tensor([1.0, 2.0], dtype=lib.float32, requires_grad=True)
        b = lib.tensor([3.0, 4.0], dtype=lib.float64, requires_grad=True)
        y = x * 2
        y.add_(b)
        y.mul_(b)
        y.sum().backward()
        names = [str(t.dtype).split(".")[-1] for t in (y, x.grad, b.grad)]
        return [names, x.grad, b.grad]

    ours, theirs = both(script)
    assert ours[0] == theirs[0] == ["float32", "float32", "float64"]
    assert_same(ours[1:], theirs[1:], rtol=1e-6)
