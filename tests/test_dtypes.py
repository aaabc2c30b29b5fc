"""dtypes and PyTorch's type-promotion rules: promote_types, result_type and the arithmetic operators."""

from __future__ import annotations

import itertools
import operator
import pickle

import numpy as np
import pytest

import forgeml as fm

torch = pytest.importorskip("torch")

NAMES = ["float16", "float32", "float64", "int32", "int64", "bool"]
ALL_NAMES = NAMES + ["uint8", "int8", "int16"]


def tname(dtype) -> str:
    return str(dtype).removeprefix("torch.")


# ------------------------------------------------------------ dtype objects
@pytest.mark.parametrize("name", ALL_NAMES)
def test_dtype_object_attributes_match_torch(name):
    d = getattr(fm, name)
    t = getattr(torch, name)
    assert isinstance(d, fm.DType)
    assert repr(d) == f"forgeml.{name}"
    assert str(d) == f"forgeml.{name}"
    assert d.name == name
    assert d.is_floating_point == t.is_floating_point
    assert d.itemsize == t.itemsize
    assert d.is_signed == t.is_signed


def test_dtype_aliases_match_torch():
    pairs = {
        "float": "float32",
        "double": "float64",
        "half": "float16",
        "long": "int64",
        "int": "int32",
        "short": "int16",
    }
    for alias, name in pairs.items():
        assert getattr(fm, alias) is getattr(fm, name)
        assert getattr(torch, alias) is getattr(torch, name)
    assert fm.bool.name == "bool"


def test_dtypes_are_distinct_hashable_and_picklable():
    dts = [getattr(fm, n) for n in ALL_NAMES]
    assert len(set(dts)) == len(dts)
    for d in dts:
        assert pickle.loads(pickle.dumps(d)) is d
    assert fm.float32 == fm.float32
    assert fm.float32 != fm.float64


def test_tensor_dtype_is_the_module_object():
    assert fm.zeros(1).dtype is fm.float32
    assert fm.tensor([1]).dtype is fm.int64
    assert fm.tensor([True]).dtype is fm.bool
    assert fm.zeros(1, dtype=fm.float16).dtype is fm.float16


# ----------------------------------------------------------- promote_types
@pytest.mark.parametrize("a, b", list(itertools.product(ALL_NAMES, ALL_NAMES)))
def test_promote_types_matches_torch(a, b):
    got = fm.promote_types(getattr(fm, a), getattr(fm, b))
    assert got is getattr(fm, tname(torch.promote_types(getattr(torch, a), getattr(torch, b))))


# --------------------------------------------------------------- result_type
def _pair(name, zero_dim):
    value = [True, False] if name == "bool" else [3, 1]
    if zero_dim:
        value = value[0]
    return fm.tensor(value, dtype=getattr(fm, name)), torch.tensor(value, dtype=getattr(torch, name))


@pytest.mark.parametrize(
    "za, zb", [(False, False), (False, True), (True, False), (True, True)], ids=["tt", "t0", "0t", "00"]
)
@pytest.mark.parametrize("a, b", list(itertools.product(ALL_NAMES, ALL_NAMES)))
def test_result_type_of_two_tensors_matches_torch(a, b, za, zb):
    fa, ta = _pair(a, za)
    fb, tb = _pair(b, zb)
    assert fm.result_type(fa, fb).name == tname(torch.result_type(ta, tb))


@pytest.mark.parametrize("scalar", [2, 2.5, True], ids=["int", "float", "bool"])
@pytest.mark.parametrize("zero_dim", [False, True], ids=["tensor", "0d"])
@pytest.mark.parametrize("a", ALL_NAMES)
def test_result_type_with_python_scalar_matches_torch(a, zero_dim, scalar):
    fa, ta = _pair(a, zero_dim)
    assert fm.result_type(fa, scalar).name == tname(torch.result_type(ta, scalar))
    assert fm.result_type(scalar, fa).name == tname(torch.result_type(scalar, ta))


# ------------------------------------------------- operator promotion grid
OPS = {"add": operator.add, "mul": operator.mul, "sub": operator.sub, "truediv": operator.truediv}


def _operand(name, kind, position):
    """(forgeml, torch) operands; ``kind`` is 'tensor' or '0d'. Divisors avoid zero."""
    if name == "bool":
        value = [True, False] if position == 0 else [True, True]
    else:
        value = [3, 1] if position == 0 else [2, 4]
    if kind == "0d":
        value = value[0]
    return fm.tensor(value, dtype=getattr(fm, name)), torch.tensor(value, dtype=getattr(torch, name))


def _check_same(f, t):
    assert f.dtype.name == tname(t.dtype), f"forgeml {f.dtype.name} vs torch {tname(t.dtype)}"
    assert f.shape == tuple(t.shape)
    rtol = 1e-3 if f.dtype is fm.float16 else 1e-6
    np.testing.assert_allclose(f.numpy().astype(np.float64), t.numpy().astype(np.float64), rtol=rtol)


def _torch_rejects_sub(*bool_flags):
    return any(bool_flags)


TENSOR_GRID = [
    (op, a, b, kinds)
    for op in OPS
    for a, b in itertools.product(NAMES, NAMES)
    for kinds in (("tensor", "tensor"), ("tensor", "0d"), ("0d", "tensor"))
    if not (op == "sub" and _torch_rejects_sub(a == "bool", b == "bool"))
]


@pytest.mark.parametrize(
    "op, a, b, kinds", TENSOR_GRID, ids=[f"{o}-{a}-{b}-{k[0]}-{k[1]}" for o, a, b, k in TENSOR_GRID]
)
def test_operator_promotion_tensor_tensor_matches_torch(op, a, b, kinds):
    fa, ta = _operand(a, kinds[0], 0)
    fb, tb = _operand(b, kinds[1], 1)
    _check_same(OPS[op](fa, fb), OPS[op](ta, tb))


SCALARS = {"int": 2, "float": 2.5, "bool": True}
SCALAR_GRID = [
    (op, a, s, side)
    for op in OPS
    for a in NAMES
    for s in SCALARS
    for side in ("right", "left")
    if not (op == "sub" and _torch_rejects_sub(a == "bool", s == "bool"))
    and not (op == "truediv" and side == "left" and a == "bool")  # x / False: division by zero
]


@pytest.mark.parametrize("op, a, s, side", SCALAR_GRID, ids=[f"{o}-{a}-{s}-{side}" for o, a, s, side in SCALAR_GRID])
def test_operator_promotion_tensor_scalar_matches_torch(op, a, s, side):
    fa, ta = _operand(a, "tensor", 1)
    scalar = SCALARS[s]
    if side == "right":
        f, t = OPS[op](fa, scalar), OPS[op](ta, scalar)
    else:
        f, t = OPS[op](scalar, fa), OPS[op](scalar, ta)
    _check_same(f, t)


def test_promotion_rules_quoted_in_the_issue():
    i = fm.tensor([1, 2])
    f32 = fm.tensor([1.0, 2.0])
    f64 = fm.tensor([1.0, 2.0], dtype=fm.float64)
    assert (i + f32).dtype is fm.float32
    assert (f32 + f64).dtype is fm.float64
    # a Python scalar does not upcast a tensor of the same category
    assert (f32 * 2.5).dtype is fm.float32
    assert (fm.tensor([1.0], dtype=fm.float16) + 1e3).dtype is fm.float16
    assert (fm.tensor([1], dtype=fm.int32) + 7).dtype is fm.int32
    # ... but a float scalar lifts an int tensor to the default float dtype
    assert (i * 0.5).dtype is fm.float32
    np.testing.assert_allclose((i * 0.5).numpy(), [0.5, 1.0])
    # true division of ints gives the default float dtype
    assert (i / i).dtype is fm.float32
    assert (fm.tensor([1], dtype=fm.int32) / 2).dtype is fm.float32
    np.testing.assert_allclose((fm.tensor([3]) / fm.tensor([2])).numpy(), [1.5])


def test_zero_dim_tensor_only_upcasts_across_categories():
    f32 = fm.tensor([1.0, 2.0])
    assert (f32 + fm.tensor(1.0, dtype=fm.float64)).dtype is fm.float32
    assert (fm.tensor([1], dtype=fm.int32) + fm.tensor(5)).dtype is fm.int32
    r = fm.tensor([1, 2], dtype=fm.int32) + fm.tensor(0.5, dtype=fm.float64)
    assert r.dtype is fm.float64
    np.testing.assert_allclose(r.numpy(), [1.5, 2.5])


def test_promotion_keeps_gradients_flowing():
    x = fm.tensor([1.0, 2.0], requires_grad=True)
    y = fm.tensor([3.0, 4.0], dtype=fm.float64)
    z = x * y
    assert z.dtype is fm.float64
    z.sum().backward()
    assert x.grad.dtype is fm.float32
    np.testing.assert_allclose(x.grad.numpy(), [3.0, 4.0])


def test_in_place_ops_cannot_change_category_like_torch():
    i = fm.tensor([1, 2])
    with pytest.raises(RuntimeError, match="int64"):
        i.add_(1.5)
    with pytest.raises(RuntimeError):
        torch.tensor([1, 2]).add_(1.5)
    assert i.tolist() == [1, 2]
    f = fm.tensor([1.0, 2.0])
    f.add_(fm.tensor([1, 1]))  # int into float is fine
    assert f.dtype is fm.float32 and f.tolist() == [2.0, 3.0]


# ----------------------------------------------------------- bool subtraction
@pytest.mark.parametrize("kinds", [("tensor", "tensor"), ("tensor", "0d"), ("0d", "tensor")])
def test_bool_minus_bool_raises_runtimeerror_like_torch(kinds):
    fa, ta = _operand("bool", kinds[0], 0)
    fb, tb = _operand("bool", kinds[1], 1)
    with pytest.raises(RuntimeError, match="bool"):
        ta - tb
    with pytest.raises(RuntimeError, match="bool"):
        fa - fb


def test_bool_tensor_minus_python_bool_raises_runtimeerror_like_torch():
    with pytest.raises(RuntimeError):
        torch.tensor([True, False]) - True
    with pytest.raises(RuntimeError, match="bool"):
        fm.tensor([True, False]) - True
    with pytest.raises(RuntimeError, match="bool"):
        fm.sub(fm.tensor([True]), fm.tensor([False]))


@pytest.mark.parametrize(
    "make",
    [
        lambda lib: lib.tensor([1.0, 2.0]) - lib.tensor([True, False]),
        lambda lib: lib.tensor([True, False]) - lib.tensor([1, 2]),
        lambda lib: lib.tensor([1.0, 2.0]) - True,
        lambda lib: lib.tensor([True, False]) - 2,
        lambda lib: 1.5 - lib.tensor([True, False]),
    ],
    ids=["float-booltensor", "booltensor-int", "float-pybool", "booltensor-pyint", "pyfloat-booltensor"],
)
def test_subtraction_with_a_bool_operand_raises_like_torch(make):
    with pytest.raises(RuntimeError, match="bool"):
        make(torch)
    with pytest.raises(RuntimeError, match="bool"):
        make(fm)


# ------------------------------------------------------------- reductions
@pytest.mark.parametrize("name", ["int32", "int64", "bool", "float16", "float32", "float64"])
def test_sum_dtype_matches_torch(name):
    data = [True, False, True] if name == "bool" else [1, 2, 3]
    f = fm.tensor(data, dtype=getattr(fm, name))
    t = torch.tensor(data, dtype=getattr(torch, name))
    for fs, ts in [(f.sum(), t.sum()), (f.sum(0), t.sum(0)), (fm.sum(f), torch.sum(t))]:
        assert fs.dtype.name == tname(ts.dtype)
        assert fs.item() == ts.item()


@pytest.mark.parametrize("name", ["int32", "int64", "bool"])
def test_mean_of_integers_raises_like_torch(name):
    data = [True, False] if name == "bool" else [1, 2]
    with pytest.raises(RuntimeError, match="mean"):
        torch.tensor(data, dtype=getattr(torch, name)).mean()
    with pytest.raises(RuntimeError, match=rf"mean.*floating point.*{name}"):
        fm.tensor(data, dtype=getattr(fm, name)).mean()


def test_mean_of_integers_with_dtype_works_like_torch():
    f = fm.tensor([1, 2]).mean(dtype=fm.float32)
    t = torch.tensor([1, 2]).mean(dtype=torch.float32)
    assert f.dtype.name == tname(t.dtype)
    assert f.item() == t.item() == 1.5


# ------------------------------------------------------------- default dtype
def test_default_dtype_is_float32():
    assert fm.get_default_dtype() is fm.float32
    assert tname(torch.get_default_dtype()) == "float32"


def test_set_default_dtype_changes_float_creation_and_promotion():
    try:
        fm.set_default_dtype(fm.float64)
        assert fm.get_default_dtype() is fm.float64
        assert fm.tensor([1.0]).dtype is fm.float64
        assert fm.tensor(2.5).dtype is fm.float64
        assert fm.zeros(2).dtype is fm.float64
        assert fm.ones(2).dtype is fm.float64
        assert fm.rand(2).dtype is fm.float64
        assert fm.randn(2).dtype is fm.float64
        assert fm.arange(0.0, 1.0, 0.5).dtype is fm.float64
        assert fm.linspace(0, 1, 3).dtype is fm.float64
        assert fm.full((2,), 1.5).dtype is fm.float64
        assert fm.eye(2).dtype is fm.float64
        assert (fm.tensor([1, 2]) * 0.5).dtype is fm.float64
        assert (fm.tensor([1]) / fm.tensor([2])).dtype is fm.float64
        # unaffected: ints, bools, explicit dtypes, existing float32 tensors with python floats
        assert fm.tensor([1]).dtype is fm.int64
        assert fm.tensor([True]).dtype is fm.bool
        assert fm.zeros(2, dtype=fm.float32).dtype is fm.float32
        assert (fm.zeros(2, dtype=fm.float32) * 2.5).dtype is fm.float32
        assert repr(fm.tensor([1.0, 2.0])) == "tensor([1., 2.])"
        assert "float32" in repr(fm.tensor([1.0], dtype=fm.float32))
    finally:
        fm.set_default_dtype(fm.float32)
    assert fm.get_default_dtype() is fm.float32
    assert fm.tensor([1.0]).dtype is fm.float32


def test_set_default_dtype_float16():
    try:
        fm.set_default_dtype(fm.float16)
        assert fm.zeros(1).dtype is fm.float16
        assert (fm.tensor([1]) + 1.5).dtype is fm.float16
    finally:
        fm.set_default_dtype(fm.float32)


@pytest.mark.parametrize("name", ["int64", "int32", "bool"])
def test_set_default_dtype_rejects_non_float_like_torch(name):
    try:
        with pytest.raises(TypeError):
            torch.set_default_dtype(getattr(torch, name))
        with pytest.raises(TypeError, match=name):
            fm.set_default_dtype(getattr(fm, name))
        assert fm.get_default_dtype() is fm.float32
    finally:
        fm.set_default_dtype(fm.float32)
        torch.set_default_dtype(torch.float32)


def test_unsupported_dtype_raises_typeerror_naming_it():
    with pytest.raises(TypeError, match="complex"):
        fm.tensor(np.array([1j]))
    with pytest.raises(TypeError, match=r"complex128|unsupported"):
        fm.zeros(2, dtype=np.complex128)
