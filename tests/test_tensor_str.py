"""str/repr/format of tensors against PyTorch's, and set_printoptions."""

import re

import numpy as np
import pytest

import forgeml as fm

torch = pytest.importorskip("torch")

_rng = np.random.default_rng(0)

CASES = {
    "scalar_float": (np.array(1.5), "float32"),
    "scalar_int": (np.array(7), "int64"),
    "scalar_bool": (np.array(True), "bool"),
    "scalar_small": (np.array(1e-5), "float32"),
    "scalar_f64": (np.array(-2.0), "float64"),
    "vec_float": (np.array([1.5, -2.25, 3.0]), "float32"),
    "vec_intlike": (np.array([1.0, 2.0, -3.0]), "float32"),
    "vec_negzero": (np.array([-0.0, 1.0, 0.0]), "float32"),
    "vec_nan_inf": (np.array([np.nan, np.inf, -np.inf, 1.5]), "float32"),
    "vec_nan_int": (np.array([np.nan, 2.0, 3.0]), "float32"),
    "vec_all_nonfinite": (np.array([np.nan, np.inf]), "float32"),
    "vec_zeros": (np.zeros(4), "float32"),
    "vec_sci_ratio": (np.array([1e-3, 1.0, 5e3]), "float32"),
    "vec_sci_big": (np.array([1e9, 2.5]), "float32"),
    "vec_sci_int_big": (np.array([1e10, 2.0]), "float64"),
    "vec_int64": (np.array([1, -20, 300]), "int64"),
    "vec_int32": (np.array([1, -20, 300]), "int32"),
    "vec_uint8": (np.array([0, 255, 3]), "uint8"),
    "vec_bool": (np.array([True, False, True]), "bool"),
    "vec_f16": (np.array([0.1, 2.5, -3.75]), "float16"),
    "vec_f64": (_rng.standard_normal(5), "float64"),
    "mat_float": (_rng.standard_normal((3, 4)), "float32"),
    "mat_mixed": (_rng.standard_normal((2, 3)) * np.array([1e-6, 1.0, 1e4]), "float32"),
    "mat_int": (_rng.integers(-1000, 1000, (3, 3)), "int64"),
    "mat_bool": (_rng.random((2, 3)) > 0.5, "bool"),
    "cube": (_rng.standard_normal((2, 3, 4)), "float32"),
    "cube_int": (np.arange(24).reshape(2, 3, 4), "int32"),
    "wrap_1d": (_rng.standard_normal(30), "float32"),
    "wrap_int_1d": (np.arange(100), "int64"),
    "wrap_2d": (_rng.standard_normal((3, 20)), "float64"),
    "big_1d": (np.arange(2000, dtype=np.float64) / 7, "float32"),
    "big_2d": (_rng.standard_normal((40, 50)), "float32"),
    "big_3d": (np.arange(3000).reshape(10, 15, 20), "int64"),
    "big_wide": (_rng.standard_normal((2, 1000)), "float32"),
    "empty": (np.zeros(0), "float32"),
    "empty_2d": (np.zeros((2, 0)), "int64"),
    "empty_f64": (np.zeros(0), "float64"),
}


def _norm(text: str) -> str:
    return text.replace("torch.", "forgeml.")


def _pair(array, dtype, **kw):
    return (
        fm.tensor(array, dtype=getattr(fm, dtype), **kw),
        torch.tensor(array, dtype=getattr(torch, dtype), **kw),
    )


@pytest.mark.parametrize("name", sorted(CASES))
def test_str_matches_torch(name):
    ours, theirs = _pair(*CASES[name])
    assert str(ours) == _norm(str(theirs))
    assert repr(ours) == _norm(repr(theirs))


def test_bfloat16_matches_torch():
    array = np.array([0.1, 2.5, -3.75, 1e3])
    ours, theirs = _pair(array, "bfloat16")
    assert str(ours) == _norm(str(theirs))


@pytest.mark.parametrize("shape", [(3,), (2, 3), ()])
def test_requires_grad_and_grad_fn_suffixes(shape):
    array = _rng.standard_normal(shape)
    ours, theirs = _pair(array, "float32", requires_grad=True)
    assert str(ours) == str(theirs)
    grad_fn = re.compile(r"grad_fn=<\w+>")
    ours_out, theirs_out = ours * 2, theirs * 2
    assert grad_fn.sub("grad_fn=<X>", str(ours_out)) == grad_fn.sub("grad_fn=<X>", str(theirs_out))


def test_long_suffix_wraps_like_torch():
    array = _rng.standard_normal((4, 6))
    ours, theirs = _pair(array, "float64", requires_grad=True)
    assert str(ours) == _norm(str(theirs))


@pytest.mark.parametrize(
    "spec",
    ["", ".2f", ".3e", "10.4f", "+.1f", "g"],
)
@pytest.mark.parametrize("value,dtype", [(3.14159, "float32"), (-2.5e-7, "float64"), (42, "int64")])
def test_format_of_0d_tensor_matches_torch(value, dtype, spec):
    ours, theirs = _pair(np.array(value), dtype)
    assert format(ours, spec) == format(theirs, spec)
    assert f"{ours}" == f"{theirs}"


def test_format_spec_on_multi_element_tensor_raises_like_torch():
    ours, theirs = _pair(np.array([1.0, 2.0]), "float32")
    with pytest.raises(TypeError):
        format(theirs, ".2f")
    with pytest.raises(TypeError):
        format(ours, ".2f")
    assert f"{ours}" == str(ours)


@pytest.mark.parametrize(
    "options",
    [
        {"precision": 2},
        {"precision": 6, "linewidth": 40},
        {"threshold": 5, "edgeitems": 1},
        {"sci_mode": True},
        {"sci_mode": False},
        {"profile": "short"},
        {"profile": "full"},
    ],
)
def test_set_printoptions_matches_torch(options):
    array = _rng.standard_normal((4, 7)) * np.array([1e-5, 1.0, 10, 1.0, 1.0, 1.0, 100])
    ours, theirs = _pair(array, "float32")
    big = _pair(np.arange(1500, dtype=np.float64) / 3, "float32")
    try:
        fm.set_printoptions(**options)
        torch.set_printoptions(**options)
        assert str(ours) == str(theirs)
        assert str(big[0]) == str(big[1])
    finally:
        fm.set_printoptions(profile="default")
        torch.set_printoptions(profile="default")
    assert str(ours) == str(theirs)


def test_parameter_prints_like_torch():
    array = _rng.standard_normal(3)
    ours = fm.nn.Parameter(fm.tensor(array, dtype=fm.float32))
    theirs = torch.nn.Parameter(torch.tensor(array, dtype=torch.float32))
    assert str(ours) == str(theirs) and repr(ours) == repr(theirs)
