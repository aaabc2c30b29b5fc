"""Bad input raises exceptions of PyTorch's types whose messages name the shapes, dtypes, dims or devices involved.

Each case is also run through PyTorch to confirm the exception type it uses.
After a failed op on tensors that require grad, the inputs are unchanged and a
later valid backward still works: no half-built graph is left behind.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

import forgeml as fm

torch = pytest.importorskip("torch")


def both_raise(exc, fm_call, torch_call, match):
    """``fm_call`` raises ``exc`` with a message matching ``match``; PyTorch raises ``exc`` for the same input."""
    with pytest.raises(exc):
        torch_call(torch)
    with pytest.raises(exc, match=match) as info:
        fm_call(fm)
    return str(info.value)


def message_names_all(message: str, *parts: str) -> None:
    for p in parts:
        assert p in message, f"{p!r} not in {message!r}"


# ---------------------------------------------------------------- broadcasting
@pytest.mark.parametrize(
    "op",
    [lambda a, b: a + b, lambda a, b: a * b, lambda a, b: a - b, lambda a, b: a / b, lambda a, b: a < b],
    ids=["add", "mul", "sub", "div", "lt"],
)
def test_broadcast_mismatch_names_both_shapes(op):
    msg = both_raise(
        RuntimeError,
        lambda lib: op(lib.zeros(2, 3), lib.zeros(4, 3)),
        lambda lib: op(lib.zeros(2, 3), lib.zeros(4, 3)),
        r"(?s)size of tensor a \(2\).*size of tensor b \(4\).*dimension 0",
    )
    message_names_all(msg, "[2, 3]", "[4, 3]")


def test_broadcast_mismatch_inner_dim_names_sizes_and_dim():
    msg = both_raise(
        RuntimeError,
        lambda lib: lib.ones(5, 2, 3) * lib.ones(2, 4),
        lambda lib: lib.ones(5, 2, 3) * lib.ones(2, 4),
        r"\(3\).*\(4\).*dimension 2",
    )
    message_names_all(msg, "[5, 2, 3]", "[2, 4]")


def test_broadcast_mismatch_with_mixed_dtypes_still_names_shapes():
    with pytest.raises(RuntimeError, match=r"\[2, 3\].*\[4\]"):
        fm.zeros(2, 3, dtype=fm.float64) + fm.zeros(4, dtype=fm.int32)


def test_where_broadcast_mismatch_names_shapes():
    msg = both_raise(
        RuntimeError,
        lambda lib: lib.where(lib.zeros(2, 3) > 0, lib.zeros(2, 3), lib.zeros(4)),
        lambda lib: lib.where(lib.zeros(2, 3) > 0, lib.zeros(2, 3), lib.zeros(4)),
        r"where",
    )
    message_names_all(msg, "[2, 3]", "[4]")


def test_where_condition_must_be_bool_names_dtype():
    with pytest.raises((TypeError, RuntimeError), match="float32"):
        fm.where(fm.zeros(2), fm.zeros(2), fm.ones(2))
    with pytest.raises((TypeError, RuntimeError)):
        torch.where(torch.zeros(2), torch.zeros(2), torch.ones(2))


def test_in_place_broadcast_mismatch_names_shapes():
    msg = both_raise(
        RuntimeError,
        lambda lib: lib.zeros(2, 3).add_(lib.ones(2, 3, 4)),
        lambda lib: lib.zeros(2, 3).add_(lib.ones(2, 3, 4)),
        r"\[2, 3\]",
    )
    message_names_all(msg, "[2, 3, 4]")


# ---------------------------------------------------------------------- matmul
@pytest.mark.parametrize(
    "sa, sb, parts",
    [
        ((2, 3), (4, 5), ("2x3", "4x5")),
        ((3,), (4,), ("3", "4")),
        ((2, 3), (2, 3), ("2x3",)),
        ((5, 2, 3), (4, 2), ("5x2x3", "4x2")),
    ],
)
def test_matmul_inner_size_mismatch_names_shapes(sa, sb, parts):
    msg = both_raise(
        RuntimeError,
        lambda lib: lib.zeros(*sa) @ lib.zeros(*sb),
        lambda lib: lib.zeros(*sa) @ lib.zeros(*sb),
        r"cannot be multiplied",
    )
    message_names_all(msg, *parts)
    assert f"{sa[-1]} and {sb[0] if len(sb) == 1 else sb[-2]}" in msg


def test_matmul_batch_dims_mismatch_names_shapes():
    msg = both_raise(
        RuntimeError,
        lambda lib: lib.matmul(lib.zeros(2, 2, 3), lib.zeros(3, 3, 4)),
        lambda lib: lib.matmul(lib.zeros(2, 2, 3), lib.zeros(3, 3, 4)),
        r"batch",
    )
    message_names_all(msg, "[2, 2, 3]", "[3, 3, 4]")


def test_mm_and_bmm_name_shapes():
    msg = both_raise(
        RuntimeError,
        lambda lib: lib.mm(lib.zeros(2, 3), lib.zeros(3)),
        lambda lib: lib.mm(lib.zeros(2, 3), lib.zeros(3)),
        r"mm",
    )
    message_names_all(msg, "[2, 3]", "[3]")
    both_raise(
        RuntimeError,
        lambda lib: lib.bmm(lib.zeros(2, 2, 3), lib.zeros(3, 3, 4)),
        lambda lib: lib.bmm(lib.zeros(2, 2, 3), lib.zeros(3, 3, 4)),
        r"2.*3",
    )


# ------------------------------------------------------------------ cat, stack
def test_cat_size_mismatch_names_shapes_and_position():
    msg = both_raise(
        RuntimeError,
        lambda lib: lib.cat([lib.zeros(2, 3), lib.zeros(2, 3), lib.zeros(2, 4)], 0),
        lambda lib: lib.cat([lib.zeros(2, 3), lib.zeros(2, 3), lib.zeros(2, 4)], 0),
        r"tensor number 2",
    )
    message_names_all(msg, "[2, 3]", "[2, 4]", "dimension 0")


def test_cat_ndim_mismatch_names_shapes():
    msg = both_raise(
        RuntimeError,
        lambda lib: lib.cat([lib.zeros(2, 3), lib.zeros(3)], 0),
        lambda lib: lib.cat([lib.zeros(2, 3), lib.zeros(3)], 0),
        r"tensor number 1",
    )
    message_names_all(msg, "[2, 3]", "[3]")


def test_cat_out_of_range_dim():
    both_raise(
        IndexError,
        lambda lib: lib.cat([lib.zeros(2, 3), lib.zeros(2, 3)], 2),
        lambda lib: lib.cat([lib.zeros(2, 3), lib.zeros(2, 3)], 2),
        r"\[-2, 1\].*got 2",
    )


def test_stack_unequal_shapes_names_shapes_and_entries():
    msg = both_raise(
        RuntimeError,
        lambda lib: lib.stack([lib.zeros(2, 3), lib.zeros(2, 3), lib.zeros(3, 2)]),
        lambda lib: lib.stack([lib.zeros(2, 3), lib.zeros(2, 3), lib.zeros(3, 2)]),
        r"equal size",
    )
    message_names_all(msg, "[2, 3]", "[3, 2]", "entry 2")


def test_cat_of_non_tensors_is_a_typeerror():
    with pytest.raises(TypeError, match="position 1"):
        fm.cat([fm.zeros(2), [1.0, 2.0]])


# -------------------------------------------------------------------- dtypes
@pytest.mark.parametrize("dtype", ["int64", "int32", "bool"])
def test_requires_grad_on_integer_tensor_names_dtype(dtype):
    msg = both_raise(
        RuntimeError,
        lambda lib: lib.zeros(2, dtype=getattr(lib, dtype)).requires_grad_(),
        lambda lib: lib.zeros(2, dtype=getattr(lib, dtype)).requires_grad_(),
        r"floating point",
    )
    assert dtype in msg
    with pytest.raises(RuntimeError, match=dtype):
        fm.tensor([1, 0], dtype=getattr(fm, dtype), requires_grad=True)


def test_float_tensor_as_index_names_dtype():
    both_raise(
        IndexError,
        lambda lib: lib.zeros(3)[lib.tensor([0.0, 1.0])],
        lambda lib: lib.zeros(3)[lib.tensor([0.0, 1.0])],
        r"float32",
    )
    both_raise(
        IndexError,
        lambda lib: lib.zeros(3, 2)[:, lib.tensor([1.0], dtype=lib.float64)],
        lambda lib: lib.zeros(3, 2)[:, lib.tensor([1.0], dtype=lib.float64)],
        r"float64",
    )


def test_python_float_as_index_names_type():
    both_raise(IndexError, lambda lib: lib.zeros(3)[1.0], lambda lib: lib.zeros(3)[1.0], r"float")


def test_float_index_in_setitem_names_dtype():
    t = fm.zeros(3)
    with pytest.raises(IndexError, match="float32"):
        t[fm.tensor([0.0])] = 1.0
    assert t.tolist() == [0.0, 0.0, 0.0]


def test_gather_with_float_index_names_dtypes():
    msg = both_raise(
        RuntimeError,
        lambda lib: lib.zeros(2, 3).gather(1, lib.tensor([[0.0, 1.0]])),
        lambda lib: lib.zeros(2, 3).gather(1, lib.tensor([[0.0, 1.0]])),
        r"gather.*int64",
    )
    assert "float32" in msg


def test_index_select_with_float_index_names_dtype():
    with pytest.raises(RuntimeError, match="float32"):
        fm.zeros(2, 3).index_select(0, fm.tensor([0.0]))
    with pytest.raises(RuntimeError):
        torch.zeros(2, 3).index_select(0, torch.tensor([0.0]))


def test_masked_fill_with_non_bool_mask_names_dtype():
    both_raise(
        RuntimeError,
        lambda lib: lib.zeros(2).masked_fill(lib.zeros(2), 1.0),
        lambda lib: lib.zeros(2).masked_fill(lib.zeros(2), 1.0),
        r"float32",
    )


def test_softmax_of_int_tensor_names_dtype():
    with pytest.raises(RuntimeError, match="int64"):
        fm.tensor([1, 2]).softmax(0)
    with pytest.raises(RuntimeError):
        torch.tensor([1, 2]).softmax(0)


# -------------------------------------------------------------- out-of-range dims
DIM_CASES = {
    "sum": (lambda x: x.sum(2), r"\[-2, 1\].*got 2"),
    "sum-neg": (lambda x: x.sum(-3), r"\[-2, 1\].*got -3"),
    "sum-tuple": (lambda x: x.sum((0, 5)), r"\[-2, 1\].*got 5"),
    "mean": (lambda x: x.mean(4), r"\[-2, 1\].*got 4"),
    "softmax": (lambda x: x.softmax(5), r"\[-2, 1\].*got 5"),
    "log_softmax": (lambda x: x.log_softmax(-3), r"\[-2, 1\].*got -3"),
    "transpose": (lambda x: x.transpose(0, 2), r"\[-2, 1\].*got 2"),
    "unsqueeze": (lambda x: x.unsqueeze(3), r"\[-3, 2\].*got 3"),
    "unsqueeze-neg": (lambda x: x.unsqueeze(-4), r"\[-3, 2\].*got -4"),
    "squeeze": (lambda x: x.squeeze(2), r"\[-2, 1\].*got 2"),
    "max": (lambda x: x.max(2), r"\[-2, 1\].*got 2"),
    "argmax": (lambda x: x.argmax(2), r"\[-2, 1\].*got 2"),
    "size": (lambda x: x.size(2), r"\[-2, 1\].*got 2"),
    "flatten": (lambda x: x.flatten(0, 3), r"\[-2, 1\].*got 3"),
    "split": (lambda x: x.split(1, 2), r"\[-2, 1\].*got 2"),
    "unbind": (lambda x: x.unbind(2), r"\[-2, 1\].*got 2"),
    "flip": (lambda x: x.flip(2), r"\[-2, 1\].*got 2"),
    "permute": (lambda x: x.permute(0, 2), r"\[-2, 1\].*got 2"),
}


@pytest.mark.parametrize("name", list(DIM_CASES))
def test_out_of_range_dim_names_range_and_dim(name):
    call, pattern = DIM_CASES[name]
    both_raise(IndexError, lambda lib: call(lib.zeros(2, 3)), lambda lib: call(lib.zeros(2, 3)), pattern)


def test_non_int_dim_is_a_typeerror():
    with pytest.raises(TypeError, match="float"):
        fm.zeros(2, 3).sum(1.0)
    with pytest.raises(TypeError):
        torch.zeros(2, 3).sum(1.0)


# ------------------------------------------------------------ out-of-range index
@pytest.mark.parametrize(
    "index, parts",
    [
        ((2,), ("2", "size 2", "0")),
        ((0, 5), ("5", "size 3", "1")),
        ((slice(None), -4), ("-4", "size 3", "1")),
    ],
    ids=["row", "col", "negative"],
)
def test_out_of_range_integer_index_names_size_and_dim(index, parts):
    msg = both_raise(
        IndexError, lambda lib: lib.zeros(2, 3)[index], lambda lib: lib.zeros(2, 3)[index], r"out of bounds"
    )
    message_names_all(msg, *parts)
    assert re.search(rf"(dimension|axis) {parts[2]}", msg), msg


def test_out_of_range_tensor_index_names_size():
    msg = both_raise(
        IndexError,
        lambda lib: lib.zeros(2, 3)[lib.tensor([0, 5])],
        lambda lib: lib.zeros(2, 3)[lib.tensor([0, 5])],
        r"5",
    )
    message_names_all(msg, "size 2")


def test_too_many_indices():
    with pytest.raises(IndexError, match=r"\[2, 3\]"):
        fm.zeros(2, 3)[0, 0, 0]
    with pytest.raises(IndexError):
        torch.zeros(2, 3)[0, 0, 0]


def test_out_of_range_index_in_setitem_leaves_tensor_unchanged():
    t = fm.zeros(2, 3)
    with pytest.raises(IndexError, match="size 2"):
        t[5] = 1.0
    assert t.tolist() == [[0.0] * 3] * 2
    assert t._version == 0


def test_gather_and_index_select_out_of_range_name_size():
    both_raise(
        (IndexError, RuntimeError),
        lambda lib: lib.zeros(2, 3).gather(1, lib.tensor([[0, 5]])),
        lambda lib: lib.zeros(2, 3).gather(1, lib.tensor([[0, 5]])),
        r"size 3",
    )
    both_raise(
        IndexError,
        lambda lib: lib.zeros(2, 3).index_select(0, lib.tensor([5])),
        lambda lib: lib.zeros(2, 3).index_select(0, lib.tensor([5])),
        r"size 2",
    )


def test_narrow_and_select_out_of_range():
    with pytest.raises((IndexError, RuntimeError), match=r"3"):
        fm.zeros(2, 3).narrow(1, 2, 3)
    with pytest.raises((IndexError, RuntimeError)):
        torch.zeros(2, 3).narrow(1, 2, 3)
    both_raise(IndexError, lambda lib: lib.zeros(2, 3).select(1, 3), lambda lib: lib.zeros(2, 3).select(1, 3), r"3")


# --------------------------------------------------------------- reshape / view
def test_reshape_incompatible_size_names_shape_and_input_size():
    both_raise(
        RuntimeError,
        lambda lib: lib.zeros(2, 3).reshape(4, 2),
        lambda lib: lib.zeros(2, 3).reshape(4, 2),
        r"\[4, 2\].*size 6",
    )
    both_raise(
        RuntimeError,
        lambda lib: lib.zeros(2, 3).view(-1, 4),
        lambda lib: lib.zeros(2, 3).view(-1, 4),
        r"\[-1, 4\].*size 6",
    )


def test_reshape_two_inferred_dims():
    both_raise(
        RuntimeError,
        lambda lib: lib.zeros(2, 3).reshape(-1, -1),
        lambda lib: lib.zeros(2, 3).reshape(-1, -1),
        r"one dimension",
    )


def test_view_on_non_contiguous_tensor_raises_and_suggests_reshape():
    msg = both_raise(
        RuntimeError,
        lambda lib: lib.zeros(2, 3).T.view(6),
        lambda lib: lib.zeros(2, 3).T.view(6),
        r"view size is not compatible",
    )
    assert "reshape" in msg
    # reshape works where view refuses
    x = fm.arange(6.0).reshape(2, 3)
    np.testing.assert_array_equal(x.T.reshape(6).numpy(), torch.arange(6.0).reshape(2, 3).T.reshape(6).numpy())


def test_expand_of_non_singleton_dim_names_sizes():
    msg = both_raise(
        RuntimeError,
        lambda lib: lib.zeros(2, 3).expand(4, 3),
        lambda lib: lib.zeros(2, 3).expand(4, 3),
        r"expanded size of the tensor \(4\) must match the existing size \(2\).*dimension 0",
    )
    message_names_all(msg, "[4, 3]", "[2, 3]")
    both_raise(
        RuntimeError,
        lambda lib: lib.zeros(3).expand(2, 4),
        lambda lib: lib.zeros(3).expand(2, 4),
        r"\(4\).*\(3\).*dimension 1",
    )


def test_expand_with_too_few_sizes():
    both_raise(
        RuntimeError, lambda lib: lib.zeros(2, 3).expand(3), lambda lib: lib.zeros(2, 3).expand(3), r"\(1\).*\(2\)"
    )


# -------------------------------------------------------------- item, backward
def test_item_on_multi_element_tensor_names_count():
    both_raise(RuntimeError, lambda lib: lib.zeros(2, 3).item(), lambda lib: lib.zeros(2, 3).item(), r"6 elements")


def test_backward_on_non_scalar_without_gradient():
    msg = both_raise(
        RuntimeError,
        lambda lib: (lib.zeros(2, 3, requires_grad=True) * 2).backward(),
        lambda lib: (lib.zeros(2, 3, requires_grad=True) * 2).backward(),
        r"scalar outputs",
    )
    assert "[2, 3]" in msg


def test_backward_with_wrong_gradient_shape_names_shapes():
    msg = both_raise(
        RuntimeError,
        lambda lib: (lib.zeros(2, 3, requires_grad=True) * 2).backward(lib.ones(3, 2)),
        lambda lib: (lib.zeros(2, 3, requires_grad=True) * 2).backward(lib.ones(3, 2)),
        r"Mismatch in shape",
    )
    message_names_all(msg, "[3, 2]", "[2, 3]")


def test_backward_on_tensor_without_grad():
    both_raise(
        RuntimeError,
        lambda lib: lib.zeros(1).sum().backward(),
        lambda lib: lib.zeros(1).sum().backward(),
        r"does not require grad",
    )


def test_backward_twice_without_retain_graph():
    def run(lib):
        x = lib.tensor([1.0, 2.0], requires_grad=True)
        y = (x * x).sum()
        y.backward()
        y.backward()

    both_raise(RuntimeError, run, run, r"retain_graph=True")


def test_in_place_on_leaf_requiring_grad():
    def run(lib):
        lib.tensor([1.0], requires_grad=True).add_(1)

    both_raise(RuntimeError, run, run, r"leaf Variable that requires grad")


def test_assigning_grad_of_wrong_shape_or_dtype_names_them():
    msg = both_raise(
        RuntimeError,
        lambda lib: setattr(lib.zeros(2, requires_grad=True), "grad", lib.zeros(3)),
        lambda lib: setattr(lib.zeros(2, requires_grad=True), "grad", lib.zeros(3)),
        r"size",
    )
    message_names_all(msg, "[3]", "[2]")
    msg = both_raise(
        RuntimeError,
        lambda lib: setattr(lib.zeros(2, requires_grad=True), "grad", lib.zeros(2, dtype=lib.float64)),
        lambda lib: setattr(lib.zeros(2, requires_grad=True), "grad", lib.zeros(2, dtype=lib.float64)),
        r"dtype",
    )
    message_names_all(msg, "float64", "float32")


# --------------------------------------------------------------------- devices
@pytest.mark.parametrize(
    "make",
    [
        lambda: fm.tensor([1.0], device="tpu"),
        lambda: fm.zeros(2, device="tpu"),
        lambda: fm.ones(2, device="tpu"),
        lambda: fm.randn(2, device="tpu"),
        lambda: fm.arange(3, device="tpu"),
        lambda: fm.Device("tpu"),
        lambda: fm.device("tpu:0"),
    ],
    ids=["tensor", "zeros", "ones", "randn", "arange", "Device", "device-index"],
)
def test_unknown_device_raises_valueerror_naming_it(make):
    with pytest.raises(ValueError, match="tpu"):
        make()


def test_to_unknown_device_names_the_device():
    with pytest.raises((ValueError, RuntimeError)):
        torch.tensor([1.0]).to("tpu")
    with pytest.raises((ValueError, RuntimeError, TypeError), match=r"(?s)tpu.*device|device.*tpu"):
        fm.tensor([1.0]).to("tpu")


def test_bad_cuda_index_spelling():
    with pytest.raises(ValueError, match="cuda:x"):
        fm.Device("cuda:x")
    with pytest.raises(ValueError, match="cpu"):
        fm.Device("cpu", 1)


def test_cuda_device_constructs_without_a_gpu():
    d = fm.Device("cuda")
    assert d.type == "cuda" and d.index == 0
    assert str(d) == "cuda:0"
    assert repr(fm.Device("cuda", 1)) == repr(torch.device("cuda", 1))
    assert fm.Device("cuda:1") == fm.Device("cuda", 1)
    assert fm.device("cuda:0") != fm.device("cpu")


def _cupy_missing() -> bool:
    try:
        import cupy  # noqa: F401
    except ImportError:
        return True
    return False


@pytest.mark.skipif(not _cupy_missing(), reason="CuPy is installed; this checks the message shown without it")
@pytest.mark.parametrize(
    "move",
    [
        lambda: fm.tensor([1.0]).to("cuda"),
        lambda: fm.tensor([1.0]).cuda(),
        lambda: fm.tensor([1.0], device="cuda"),
        lambda: fm.zeros(2, device="cuda:0"),
        lambda: fm.randn(2, device=fm.Device("cuda")),
        lambda: fm.tensor([1.0]).to(fm.device("cuda", 0), fm.float64),
    ],
    ids=["to", "cuda", "tensor", "zeros", "randn", "to-device-dtype"],
)
def test_moving_to_cuda_without_cupy_names_the_extra(move):
    with pytest.raises(ImportError, match=re.escape('pip install "forgeml[gpu]"')):
        move()


@pytest.mark.skipif(not _cupy_missing(), reason="CuPy is installed; this checks the message shown without it")
def test_failed_cuda_move_leaves_tensor_usable():
    x = fm.tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(ImportError):
        x.to("cuda")
    assert x.device == "cpu"
    (x * 3).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [3.0, 3.0])


def test_cuda_is_available_is_a_bool():
    assert isinstance(fm.cuda_is_available(), bool)
    if _cupy_missing():
        assert fm.cuda_is_available() is False


# ------------------------------------------------------- no half-built graph
def _leaf():
    return fm.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], requires_grad=True)


FAILING_OPS = {
    "add-broadcast": lambda x, y: y + fm.zeros(4, 3, requires_grad=True),
    "mul-mixed-dtype-broadcast": lambda x, y: y * fm.zeros(5, dtype=fm.float64, requires_grad=True),
    "where": lambda x, y: fm.where(y > 0, y, fm.zeros(4, requires_grad=True)),
    "matmul": lambda x, y: y @ fm.zeros(5, 5, requires_grad=True),
    "cat": lambda x, y: fm.cat([y, fm.zeros(2, 7, requires_grad=True), x]),
    "cat-mixed-dtype": lambda x, y: fm.cat([y, fm.zeros(3, 4, dtype=fm.float64)], 0),
    "stack": lambda x, y: fm.stack([x, y, fm.zeros(3, 2)]),
    "reshape": lambda x, y: y.reshape(4, 2),
    "view": lambda x, y: y.T.view(6),
    "expand": lambda x, y: y.expand(4, 3),
    "sum-dim": lambda x, y: y.sum(3),
    "softmax-dim": lambda x, y: y.softmax(2),
    "index": lambda x, y: y[5],
    "float-index": lambda x, y: y[fm.tensor([0.0])],
    "gather": lambda x, y: y.gather(1, fm.tensor([[0, 9]])),
    "add_-broadcast": lambda x, y: y.add_(fm.zeros(5, requires_grad=True)),
    "mul_-broadcast": lambda x, y: y.mul_(fm.zeros(2, 3, 4)),
    "setitem-index": lambda x, y: y.__setitem__(7, 1.0),
    "setitem-shape": lambda x, y: y.__setitem__(0, fm.zeros(5, requires_grad=True)),
    "setitem-float-index": lambda x, y: y.__setitem__(fm.tensor([0.5]), 1.0),
    "leaf-in-place": lambda x, y: x.add_(1.0),
    "leaf-setitem": lambda x, y: x.__setitem__(0, 0.0),
    "backward-non-scalar": lambda x, y: y.backward(),
    "backward-bad-grad": lambda x, y: y.backward(fm.ones(3, 2)),
    "item": lambda x, y: y.item(),
    "requires_grad-false-non-leaf": lambda x, y: y.requires_grad_(False),
}


@pytest.mark.parametrize("name", list(FAILING_OPS))
def test_failed_op_leaves_inputs_unchanged_and_backward_works(name):
    x = _leaf()
    y = x * 2
    x_before = x.detach().numpy().copy()
    y_before = y.detach().numpy().copy()
    y_fn, x_version, y_version = y.grad_fn, x._version, y._version

    with pytest.raises((RuntimeError, IndexError, TypeError, ValueError)):
        FAILING_OPS[name](x, y)

    np.testing.assert_array_equal(x.detach().numpy(), x_before)
    np.testing.assert_array_equal(y.detach().numpy(), y_before)
    assert x.is_leaf and x.requires_grad and x.grad is None
    assert y.grad_fn is y_fn and y.requires_grad
    assert x._version == x_version and y._version == y_version

    (y * fm.tensor([1.0, 2.0, 3.0])).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [[2.0, 4.0, 6.0], [2.0, 4.0, 6.0]])


def test_failed_backward_does_not_touch_grads_or_free_the_graph():
    x = _leaf()
    y = x * 3
    (y * 1).sum().backward(retain_graph=True)
    np.testing.assert_allclose(x.grad.numpy(), np.full((2, 3), 3.0))
    with pytest.raises(RuntimeError, match=r"\[2, 3\]"):
        y.backward()
    with pytest.raises(RuntimeError, match=r"\[1, 6\]"):
        y.backward(fm.ones(1, 6))
    np.testing.assert_allclose(x.grad.numpy(), np.full((2, 3), 3.0))
    y.backward(fm.ones(2, 3))
    np.testing.assert_allclose(x.grad.numpy(), np.full((2, 3), 6.0))


def test_failed_op_in_a_chain_keeps_the_rest_of_the_graph():
    x = _leaf()
    h = (x * x).sum(1)  # [2]
    with pytest.raises(RuntimeError):
        h + fm.zeros(3)
    with pytest.raises(RuntimeError):
        fm.matmul(h, fm.zeros(3))
    loss = (h * fm.tensor([1.0, -1.0])).sum()
    loss.backward()
    tx = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], requires_grad=True)
    ((tx * tx).sum(1) * torch.tensor([1.0, -1.0])).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy())


def test_errors_are_not_raw_numpy_exceptions():
    # a numpy error leaking out would carry numpy's own wording ("operands could not be broadcast", "axis")
    cases = [
        lambda: fm.zeros(2, 3) + fm.zeros(4, 3),
        lambda: fm.zeros(2, 3) @ fm.zeros(4, 5),
        lambda: fm.cat([fm.zeros(2, 3), fm.zeros(2, 4)]),
        lambda: fm.zeros(2, 3).sum(2),
        lambda: fm.zeros(2, 3).reshape(4, 2),
        lambda: fm.zeros(2, 3).expand(4, 3),
        lambda: fm.tensor([True]) - fm.tensor([False]),
    ]
    for case in cases:
        with pytest.raises(Exception) as info:
            case()
        msg = str(info.value)
        assert "operands could not be broadcast" not in msg, msg
        assert "numpy" not in msg.lower(), msg
        assert isinstance(info.value, (RuntimeError, IndexError, TypeError, ValueError))
