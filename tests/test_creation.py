"""Creation functions (tensor, zeros, arange, rand, *_like ...) and random generators, against PyTorch."""

from __future__ import annotations

import numpy as np
import pytest

import forgeml as fm

torch = pytest.importorskip("torch")


def dtype_name(t) -> str:
    """'float32' for a forgeml or torch tensor."""
    return t.dtype.name if isinstance(t, fm.Tensor) else str(t.dtype).removeprefix("torch.")


def assert_like_torch(f, t, *, rtol=1e-6, atol=0.0):
    assert isinstance(f, fm.Tensor)
    assert f.shape == tuple(t.shape), (f.shape, tuple(t.shape))
    assert dtype_name(f) == dtype_name(t)
    np.testing.assert_allclose(f.numpy().astype(np.float64), t.numpy().astype(np.float64), rtol=rtol, atol=atol)


# ----------------------------------------------------------- size arguments
SIZED = ["zeros", "ones", "empty", "rand", "randn"]


@pytest.mark.parametrize("name", SIZED)
@pytest.mark.parametrize("size", [(2, 3), (4,), (2, 1, 3), (0, 2)])
def test_size_from_varargs_tuple_and_list(name, size):
    fn = getattr(fm, name)
    tfn = getattr(torch, name)
    expected = tuple(tfn(*size).shape)
    assert fn(*size).shape == expected
    assert fn(size).shape == expected
    assert fn(list(size)).shape == expected
    assert fn(*size).dtype is fm.float32


@pytest.mark.parametrize("name", SIZED)
def test_zero_dim_size(name):
    assert getattr(fm, name)(()).shape == tuple(getattr(torch, name)(()).shape) == ()


@pytest.mark.parametrize("name", SIZED)
@pytest.mark.parametrize("dtype", ["float16", "float64"])
def test_dtype_argument(name, dtype):
    t = getattr(fm, name)(2, 3, dtype=getattr(fm, dtype))
    assert t.dtype is getattr(fm, dtype)
    assert t._data.dtype == np.dtype(dtype)


@pytest.mark.parametrize("name", ["zeros", "ones", "empty"])
@pytest.mark.parametrize("dtype", ["int64", "int32", "bool"])
def test_non_float_dtype_argument(name, dtype):
    f = getattr(fm, name)(2, dtype=getattr(fm, dtype))
    t = getattr(torch, name)(2, dtype=getattr(torch, dtype))
    assert dtype_name(f) == dtype_name(t)
    if name != "empty":
        np.testing.assert_array_equal(f.numpy(), t.numpy())


def test_zeros_ones_values():
    np.testing.assert_array_equal(fm.zeros(2, 3).numpy(), np.zeros((2, 3)))
    np.testing.assert_array_equal(fm.ones(2, 3).numpy(), np.ones((2, 3)))


def test_negative_size_raises_naming_shape():
    with pytest.raises(RuntimeError, match=r"negative.*\[2, -1\]"):
        fm.zeros(2, -1)
    with pytest.raises(RuntimeError):
        torch.zeros(2, -1)


def test_non_int_size_raises_typeerror():
    with pytest.raises(TypeError, match="float"):
        fm.zeros(2, 3.0)
    with pytest.raises(TypeError):
        torch.zeros(2, 3.0)


# --------------------------------------------------------- tensor() inference
TENSOR_INPUTS = {
    "int-list": [1, 2],
    "float-list": [1.0],
    "bool-list": [True],
    "mixed-int-float": [1, 2.5],
    "mixed-bool-int": [True, 2],
    "mixed-bool-float": [True, 2.5],
    "empty": [],
    "nested-empty": [[]],
    "int-scalar": 3,
    "float-scalar": 3.5,
    "bool-scalar": True,
    "nested": [[1, 2], [3, 4]],
    "np-float64-array": np.array([1.0, 2.0], dtype=np.float64),
    "np-float16-array": np.array([1.0], dtype=np.float16),
    "np-int32-array": np.array([1, 2], dtype=np.int32),
    "np-int16-array": np.array([1, 2], dtype=np.int16),
    "np-uint8-array": np.array([1, 2], dtype=np.uint8),
    "np-bool-array": np.array([True, False]),
    "np-0d-float64": np.array(5.0),
    "np-float64-scalar": np.float64(1.5),
    "np-float32-scalar": np.float32(1.5),
    "np-int32-scalar": np.int32(3),
}


@pytest.mark.parametrize("key", list(TENSOR_INPUTS))
def test_tensor_dtype_and_shape_inference_matches_torch(key):
    data = TENSOR_INPUTS[key]
    assert_like_torch(fm.tensor(data), torch.tensor(data))


@pytest.mark.parametrize(
    "data",
    [[np.float64(1.0), np.float64(2.0)], [np.int32(1), np.int32(2)], [np.float16(0.5)]],
    ids=["list-of-np-float64", "list-of-np-int32", "list-of-np-float16"],
)
def test_tensor_of_list_of_numpy_scalars_keeps_their_dtype_like_torch(data):
    assert_like_torch(fm.tensor(data), torch.tensor(data))


def test_torch_reference_dtypes():
    # the inference rules the issue quotes, checked on both libraries
    for lib in (fm, torch):
        assert dtype_name(lib.tensor([1, 2])) == "int64"
        assert dtype_name(lib.tensor([1.0])) == "float32"
        assert dtype_name(lib.tensor([True])) == "bool"
        assert dtype_name(lib.tensor(np.array([1.0]))) == "float64"


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64", "int32", "int64", "bool"])
def test_tensor_explicit_dtype(dtype):
    data = [0, 1, 2]
    assert_like_torch(fm.tensor(data, dtype=getattr(fm, dtype)), torch.tensor(data, dtype=getattr(torch, dtype)))


def test_tensor_explicit_dtype_accepts_strings_and_python_types():
    assert fm.tensor([1], dtype="float64").dtype is fm.float64
    assert fm.tensor([1], dtype=float).dtype is fm.float32
    assert fm.tensor([1.5], dtype=int).dtype is fm.int64
    assert fm.tensor([1], dtype=bool).dtype is fm.bool
    assert fm.tensor([1], dtype=np.float16).dtype is fm.float16


def test_tensor_requires_grad_and_device_arguments():
    t = fm.tensor([1.0, 2.0], requires_grad=True, device="cpu")
    assert t.requires_grad and t.is_leaf and t.device == "cpu"
    (t * t).sum().backward()
    np.testing.assert_allclose(t.grad.numpy(), [2.0, 4.0])


def test_tensor_of_ragged_list_raises_valueerror():
    with pytest.raises(ValueError):
        fm.tensor([[1, 2], [3]])
    with pytest.raises(ValueError):
        torch.tensor([[1, 2], [3]])


def test_as_tensor_shares_memory_like_torch():
    a = np.array([1.0, 2.0], dtype=np.float32)
    f = fm.as_tensor(a)
    assert np.shares_memory(f._data, a) == np.shares_memory(torch.as_tensor(a).numpy(), a) == True  # noqa: E712


def test_from_numpy_rejects_non_arrays():
    with pytest.raises(TypeError, match="list"):
        fm.from_numpy([1.0, 2.0])
    with pytest.raises(TypeError):
        torch.from_numpy([1.0, 2.0])


# ------------------------------------------------------------------- full
@pytest.mark.parametrize("fill", [3, 3.0, 2.5, True, -1])
def test_full_dtype_inference_matches_torch(fill):
    assert_like_torch(fm.full((2, 3), fill), torch.full((2, 3), fill))


@pytest.mark.parametrize("dtype", ["float64", "int32", "float16"])
def test_full_explicit_dtype(dtype):
    assert_like_torch(fm.full((2,), 7, dtype=getattr(fm, dtype)), torch.full((2,), 7, dtype=getattr(torch, dtype)))


def test_full_with_list_size_and_requires_grad():
    t = fm.full([2, 2], 1.5, requires_grad=True)
    assert t.shape == (2, 2) and t.requires_grad
    t.sum().backward()
    np.testing.assert_array_equal(t.grad.numpy(), np.ones((2, 2)))


# ------------------------------------------------------------------- arange
ARANGE_CASES = [
    (5,),
    (0, 1, 0.1),
    (1, 2.5, 0.5),
    (0, 10, 3),
    (-1.0, 1.0, 0.3),
    (0, 5, 1.0),
    (10, 0, -3),
    (1.0,),
    (2, 2),
    (-2.5, 3.1, 0.7),
    (0, 1, 0.25),
]


@pytest.mark.parametrize("args", ARANGE_CASES, ids=[str(a) for a in ARANGE_CASES])
def test_arange_matches_torch(args):
    assert_like_torch(fm.arange(*args), torch.arange(*args), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("dtype", ["float64", "int32", "float16"])
def test_arange_explicit_dtype(dtype):
    assert_like_torch(fm.arange(0, 6, 2, dtype=getattr(fm, dtype)), torch.arange(0, 6, 2, dtype=getattr(torch, dtype)))


def test_arange_fractional_step_with_int_dtype_matches_torch():
    # torch computes the length from the float step, then steps by the step cast to the integer dtype
    assert_like_torch(fm.arange(1, 10, 2.5, dtype=fm.int32), torch.arange(1, 10, 2.5, dtype=torch.int32))


def test_arange_lengths_from_the_issue():
    assert fm.arange(5).shape == (5,)
    assert fm.arange(5).dtype is fm.int64
    assert fm.arange(0, 1, 0.1).shape == tuple(torch.arange(0, 1, 0.1).shape) == (10,)
    assert fm.arange(0, 1, 0.1).dtype is fm.float32


def test_arange_bad_step_raises_like_torch():
    with pytest.raises(RuntimeError, match="step"):
        fm.arange(0, 5, 0)
    with pytest.raises(RuntimeError):
        torch.arange(0, 5, 0)
    with pytest.raises(RuntimeError, match="step sign"):
        fm.arange(0, 5, -1)
    with pytest.raises(RuntimeError):
        torch.arange(0, 5, -1)


def test_arange_requires_grad_float():
    t = fm.arange(0.0, 3.0, requires_grad=True)
    assert t.requires_grad and t.dtype is fm.float32


# ----------------------------------------------------------------- linspace
LINSPACE_CASES = [(0, 1, 5), (-1, 1, 7), (0, 10, 1), (0, 1, 0), (3, -3, 4), (0, 1, 2)]


@pytest.mark.parametrize("args", LINSPACE_CASES, ids=[str(a) for a in LINSPACE_CASES])
def test_linspace_matches_torch(args):
    assert_like_torch(fm.linspace(*args), torch.linspace(*args), rtol=1e-6, atol=1e-7)


def test_linspace_dtype():
    assert_like_torch(fm.linspace(0, 1, 5, dtype=fm.float64), torch.linspace(0, 1, 5, dtype=torch.float64))


# --------------------------------------------------------------------- eye
@pytest.mark.parametrize("args", [(3,), (2, 4), (4, 2), (1,), (0,)])
def test_eye_matches_torch(args):
    assert_like_torch(fm.eye(*args), torch.eye(*args))


def test_eye_dtype():
    assert_like_torch(fm.eye(3, dtype=fm.int64), torch.eye(3, dtype=torch.int64))
    assert_like_torch(fm.eye(2, 3, dtype=fm.float64), torch.eye(2, 3, dtype=torch.float64))


# ------------------------------------------------------- requires_grad=True
@pytest.mark.parametrize(
    "make",
    [
        lambda: fm.zeros(2, 3, requires_grad=True),
        lambda: fm.ones(2, 3, requires_grad=True),
        lambda: fm.empty(2, 3, requires_grad=True),
        lambda: fm.full((2, 3), 2.0, requires_grad=True),
        lambda: fm.rand(2, 3, requires_grad=True),
        lambda: fm.randn(2, 3, requires_grad=True),
        lambda: fm.eye(2, 3, requires_grad=True),
        lambda: fm.linspace(0, 1, 6, requires_grad=True).reshape(2, 3).detach().requires_grad_(),
        lambda: fm.tensor(np.ones((2, 3)), requires_grad=True),
    ],
    ids=["zeros", "ones", "empty", "full", "rand", "randn", "eye", "linspace", "tensor"],
)
def test_requires_grad_on_creation(make):
    t = make()
    assert t.requires_grad and t.is_leaf and t.grad_fn is None
    (t * 2).sum().backward()
    np.testing.assert_array_equal(t.grad.numpy(), np.full((2, 3), 2.0))


@pytest.mark.parametrize(
    "make",
    [
        lambda: fm.zeros(2, dtype=fm.int64, requires_grad=True),
        lambda: fm.arange(5, requires_grad=True),
        lambda: fm.randint(0, 5, (2,), requires_grad=True),
        lambda: fm.full((2,), 3, requires_grad=True),
        lambda: fm.tensor([True], requires_grad=True),
    ],
    ids=["zeros-int64", "arange-int", "randint", "full-int", "tensor-bool"],
)
def test_requires_grad_on_integer_creation_raises(make):
    with pytest.raises(RuntimeError, match=r"floating point.*(int64|bool)"):
        make()


# -------------------------------------------------------------- *_like
LIKE_SOURCES = [
    ("float32", (2, 3)),
    ("float64", (4,)),
    ("float16", (1, 2, 2)),
    ("int32", (3, 1)),
    ("int64", ()),
    ("bool", (2, 2)),
]


@pytest.mark.parametrize("dtype, shape", LIKE_SOURCES)
@pytest.mark.parametrize("name", ["zeros_like", "ones_like", "empty_like"])
def test_like_keeps_shape_and_dtype(name, dtype, shape):
    src = fm.zeros(shape, dtype=getattr(fm, dtype))
    tsrc = torch.zeros(shape, dtype=getattr(torch, dtype))
    f = getattr(fm, name)(src)
    t = getattr(torch, name)(tsrc)
    assert f.shape == tuple(t.shape) == shape
    assert dtype_name(f) == dtype_name(t)
    if name != "empty_like":
        np.testing.assert_array_equal(f.numpy(), t.numpy())
    assert not np.shares_memory(f._data, src._data)


@pytest.mark.parametrize("dtype, shape", LIKE_SOURCES)
def test_full_like_keeps_shape_and_dtype(dtype, shape):
    src = fm.zeros(shape, dtype=getattr(fm, dtype))
    tsrc = torch.zeros(shape, dtype=getattr(torch, dtype))
    assert_like_torch(fm.full_like(src, 1), torch.full_like(tsrc, 1))


def test_full_like_float_value_into_int_tensor_matches_torch():
    assert_like_torch(
        fm.full_like(fm.zeros(3, dtype=fm.int64), 2.7), torch.full_like(torch.zeros(3, dtype=torch.int64), 2.7)
    )


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16"])
@pytest.mark.parametrize("name", ["rand_like", "randn_like"])
def test_random_like_keeps_shape_and_dtype(name, dtype):
    src = fm.zeros(2, 5, dtype=getattr(fm, dtype))
    out = getattr(fm, name)(src)
    assert out.shape == (2, 5)
    assert out.dtype is getattr(fm, dtype)
    assert not np.all(out.numpy() == 0)


def test_like_dtype_override_and_requires_grad():
    src = fm.zeros(2, 3)
    assert fm.zeros_like(src, dtype=fm.float64).dtype is fm.float64
    assert fm.ones_like(src, dtype=fm.int32).dtype is fm.int32
    assert fm.full_like(src, 3, dtype=fm.float64).dtype is fm.float64
    assert fm.randn_like(src, dtype=fm.float64).dtype is fm.float64
    r = fm.ones_like(src, requires_grad=True)
    assert r.requires_grad and r.is_leaf
    src_g = fm.zeros(2, requires_grad=True)
    assert not fm.zeros_like(src_g).requires_grad  # like torch: requires_grad is not inherited
    assert not torch.zeros_like(torch.zeros(2, requires_grad=True)).requires_grad


def test_rand_like_of_int_tensor_raises():
    with pytest.raises(RuntimeError, match="int64"):
        fm.rand_like(fm.zeros(2, dtype=fm.int64))


# ------------------------------------------------------------- random values
def test_rand_range_and_randn_moments():
    u = fm.rand(20000).numpy()
    assert u.min() >= 0.0 and u.max() < 1.0
    assert abs(u.mean() - 0.5) < 0.02
    n = fm.randn(20000).numpy()
    assert abs(n.mean()) < 0.05
    assert abs(n.std() - 1.0) < 0.05


def test_randint_high_size():
    t = fm.randint(3, (2000,))
    assert t.shape == (2000,)
    assert t.dtype is fm.int64 and t.dtype.name == dtype_name(torch.randint(3, (2,)))
    assert set(np.unique(t.numpy()).tolist()) == {0, 1, 2}


def test_randint_low_high_size():
    t = fm.randint(-2, 3, (2, 1000))
    assert t.shape == (2, 1000)
    assert set(np.unique(t.numpy()).tolist()) == {-2, -1, 0, 1, 2}


def test_randint_size_keyword_and_dtype():
    assert fm.randint(5, size=(3,)).shape == (3,)
    assert fm.randint(1, 5, size=(2, 2)).shape == (2, 2)
    f = fm.randint(0, 5, (3,), dtype=fm.float32)
    assert f.dtype is fm.float32 and dtype_name(torch.randint(0, 5, (3,), dtype=torch.float32)) == "float32"


def test_randint_low_high_keywords_like_torch():
    assert tuple(torch.randint(low=0, high=5, size=(3,)).shape) == (3,)
    t = fm.randint(low=2, high=5, size=(300,))
    assert t.shape == (300,)
    assert t.numpy().min() >= 2 and t.numpy().max() < 5
    assert fm.randint(high=5, size=(4,)).shape == (4,)


def test_randint_empty_range_raises():
    with pytest.raises(RuntimeError, match=r"5.*2"):
        fm.randint(5, 2, (3,))
    with pytest.raises(RuntimeError):
        torch.randint(5, 2, (3,))


def test_randperm_is_a_permutation():
    p = fm.randperm(50)
    assert p.dtype is fm.int64
    assert sorted(p.tolist()) == list(range(50))
    assert p.tolist() != list(range(50))


def test_uniform_and_normal_in_place():
    u = fm.empty(5000).uniform_(2.0, 3.0).numpy()
    assert u.min() >= 2.0 and u.max() < 3.0
    n = fm.empty(20000).normal_(5.0, 2.0).numpy()
    assert abs(n.mean() - 5.0) < 0.1
    assert abs(n.std() - 2.0) < 0.1


# --------------------------------------------------------------- manual_seed
RANDOM_OPS = {
    "rand": lambda g=None: fm.rand(4, 3, generator=g),
    "randn": lambda g=None: fm.randn(4, 3, generator=g),
    "randint": lambda g=None: fm.randint(0, 1000, (12,), generator=g),
    "randperm": lambda g=None: fm.randperm(20, generator=g),
    "uniform_": lambda g=None: fm.empty(12).uniform_(generator=g),
    "normal_": lambda g=None: fm.empty(12).normal_(generator=g),
    "rand_like": lambda g=None: fm.rand_like(fm.zeros(3, 4), generator=g),
    "randn_like": lambda g=None: fm.randn_like(fm.zeros(3, 4), generator=g),
    "randn-float64": lambda g=None: fm.randn(5, dtype=fm.float64, generator=g),
}


@pytest.mark.parametrize("name", list(RANDOM_OPS))
def test_manual_seed_makes_random_ops_reproducible(name):
    op = RANDOM_OPS[name]
    fm.manual_seed(1234)
    first = op().numpy().copy()
    second = op().numpy().copy()
    fm.manual_seed(1234)
    again = op().numpy()
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, second)  # the stream advances
    fm.manual_seed(4321)
    assert not np.array_equal(op().numpy(), first)


def test_manual_seed_reproduces_a_mixed_sequence():
    def run():
        return [
            fm.rand(3).numpy().copy(),
            fm.randn(2, 2).numpy().copy(),
            fm.randint(0, 100, (5,)).numpy().copy(),
            fm.randperm(6).numpy().copy(),
            fm.empty(3).uniform_(-1, 1).numpy().copy(),
            fm.empty(3).normal_(0, 3).numpy().copy(),
        ]

    fm.manual_seed(7)
    a = run()
    fm.manual_seed(7)
    b = run()
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def test_manual_seed_returns_generator_and_sets_initial_seed():
    g = fm.manual_seed(99)
    assert isinstance(g, fm.Generator)
    assert fm.initial_seed() == 99


def test_seed_reseeds_nondeterministically():
    s = fm.seed()
    assert isinstance(s, int)
    assert fm.initial_seed() == s


# ----------------------------------------------------------------- Generator
def test_generator_default_seed_matches_torch():
    assert fm.Generator().initial_seed() == torch.Generator().initial_seed()


def test_generator_manual_seed_returns_self_like_torch():
    g = fm.Generator()
    assert g.manual_seed(5) is g
    tg = torch.Generator()
    assert tg.manual_seed(5) is tg
    assert g.initial_seed() == 5


@pytest.mark.parametrize("name", list(RANDOM_OPS))
def test_generator_reproducible_with_manual_seed(name):
    op = RANDOM_OPS[name]
    g = fm.Generator().manual_seed(42)
    first = op(g).numpy().copy()
    g.manual_seed(42)
    np.testing.assert_array_equal(op(g).numpy(), first)
    g2 = fm.Generator().manual_seed(42)
    np.testing.assert_array_equal(op(g2).numpy(), first)


@pytest.mark.parametrize("name", list(RANDOM_OPS))
def test_generator_stream_is_independent_of_the_global_one(name):
    op = RANDOM_OPS[name]
    # global stream unaffected by draws from a private generator
    fm.manual_seed(3)
    expected_global = op().numpy().copy()
    fm.manual_seed(3)
    g = fm.Generator().manual_seed(3)
    op(g)
    op(g)
    np.testing.assert_array_equal(op().numpy(), expected_global)
    # private stream unaffected by global draws (and by reseeding the global one)
    g.manual_seed(11)
    expected_private = op(g).numpy().copy()
    g.manual_seed(11)
    op()
    fm.manual_seed(12345)
    op()
    np.testing.assert_array_equal(op(g).numpy(), expected_private)


def test_generator_state_roundtrip():
    g = fm.Generator().manual_seed(8)
    fm.rand(3, generator=g)
    state = g.get_state()
    a = fm.randn(5, generator=g).numpy().copy()
    b = fm.randint(0, 10, (5,), generator=g).numpy().copy()
    g.set_state(state)
    np.testing.assert_array_equal(fm.randn(5, generator=g).numpy(), a)
    np.testing.assert_array_equal(fm.randint(0, 10, (5,), generator=g).numpy(), b)
    # the same state can be restored again (it is not consumed or aliased)
    g.set_state(state)
    np.testing.assert_array_equal(fm.randn(5, generator=g).numpy(), a)
    assert g.initial_seed() == 8


def test_generator_state_moves_between_generators():
    g = fm.Generator().manual_seed(21)
    fm.rand(4, generator=g)
    h = fm.Generator().set_state(g.get_state())
    np.testing.assert_array_equal(fm.rand(6, generator=h).numpy(), fm.rand(6, generator=g).numpy())


def test_generator_set_state_rejects_garbage():
    with pytest.raises(ValueError, match="state"):
        fm.Generator().set_state({"nope": 1})


def test_global_rng_state_roundtrip():
    fm.manual_seed(5)
    fm.randn(3)
    state = fm.get_rng_state()
    a = fm.randn(4).numpy().copy()
    b = fm.rand(2).numpy().copy()
    fm.set_rng_state(state)
    np.testing.assert_array_equal(fm.randn(4).numpy(), a)
    np.testing.assert_array_equal(fm.rand(2).numpy(), b)
    fm.set_rng_state(state)
    np.testing.assert_array_equal(fm.randn(4).numpy(), a)


def test_default_generator_is_the_global_one():
    fm.manual_seed(17)
    a = fm.rand(3).numpy().copy()
    fm.default_generator.manual_seed(17)
    np.testing.assert_array_equal(fm.rand(3, generator=fm.default_generator).numpy(), a)


def test_generator_argument_type_checked():
    with pytest.raises(TypeError, match="Generator"):
        fm.rand(2, generator=np.random.default_rng(0))
