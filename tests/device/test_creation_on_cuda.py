"""Creation, transfers, casts, reductions, shape ops and matmul on ``device='cuda'``, against the CPU and PyTorch.

On a CPU machine ``cuda`` is the checked CuPy stand-in of ``tests/checked_cuda.py``
(any host/device mix-up fails as it would on a GPU); with a GPU and
``FORGEML_TEST_REAL_CUDA=1`` the same tests run on CuPy. Random values differ
between devices (cuRAND is not PCG64), so random creation is checked for shape,
dtype, device, range and reproducibility, not for values. The last tests check
autocast on the CPU against ``torch.autocast('cpu', dtype=torch.bfloat16)``.
"""

from __future__ import annotations

import numpy as np
import pytest

import forgeml as fm

torch = pytest.importorskip("torch")

CUDA0 = fm.device("cuda:0")


def _host(t: fm.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


def _assert_same_as_cpu(on_cuda: fm.Tensor, on_cpu: fm.Tensor) -> None:
    assert on_cuda.device == CUDA0 and str(on_cuda.device) == "cuda:0" and on_cuda.is_cuda
    assert on_cpu.device == fm.device("cpu")
    assert on_cuda.shape == on_cpu.shape
    assert on_cuda.dtype is on_cpu.dtype
    np.testing.assert_array_equal(_host(on_cuda), on_cpu.numpy())


# ------------------------------------------------------- deterministic creation
DETERMINISTIC = {
    "zeros": lambda **kw: fm.zeros(2, 3, **kw),
    "zeros-int64": lambda **kw: fm.zeros((4,), dtype=fm.int64, **kw),
    "ones": lambda **kw: fm.ones([2, 1, 3], **kw),
    "ones-bool": lambda **kw: fm.ones(3, dtype=fm.bool, **kw),
    "full-float": lambda **kw: fm.full((2, 2), 2.5, **kw),
    "full-int": lambda **kw: fm.full((3,), 7, **kw),
    "full-bool": lambda **kw: fm.full((2,), True, **kw),
    "full-float16": lambda **kw: fm.full((2,), 1.1, dtype=fm.float16, **kw),
    "arange-int": lambda **kw: fm.arange(5, **kw),
    "arange-float": lambda **kw: fm.arange(0, 1, 0.1, **kw),
    "arange-negative-step": lambda **kw: fm.arange(10, 0, -3, **kw),
    "arange-float64": lambda **kw: fm.arange(-2.5, 3.1, 0.7, dtype=fm.float64, **kw),
    "arange-int32-fractional": lambda **kw: fm.arange(1, 10, 2.5, dtype=fm.int32, **kw),
    "eye": lambda **kw: fm.eye(3, **kw),
    "eye-rect-int": lambda **kw: fm.eye(2, 4, dtype=fm.int64, **kw),
    "tensor-list": lambda **kw: fm.tensor([[1.0, 2.0], [3.0, 4.0]], **kw),
    "tensor-int-list": lambda **kw: fm.tensor([1, 2, 3], **kw),
    "tensor-scalar": lambda **kw: fm.tensor(3.5, **kw),
    "tensor-ndarray-float64": lambda **kw: fm.tensor(np.arange(6.0).reshape(2, 3), **kw),
    "tensor-dtype": lambda **kw: fm.tensor([0, 1, 2], dtype=fm.float16, **kw),
    "as_tensor-ndarray": lambda **kw: fm.as_tensor(np.array([1, 2], dtype=np.int32), **kw),
}


@pytest.mark.parametrize("name", list(DETERMINISTIC))
def test_deterministic_creation_on_cuda_matches_cpu(name, cuda_device):
    make = DETERMINISTIC[name]
    _assert_same_as_cpu(make(device=cuda_device), make(device="cpu"))


@pytest.mark.parametrize("args", [(0, 1, 5), (-1, 1, 7), (3, -3, 4), (0, 1, 0)])
def test_linspace_on_cuda_matches_cpu(args, cuda_device):
    on_cuda = fm.linspace(*args, device=cuda_device)
    on_cpu = fm.linspace(*args)
    assert on_cuda.device == CUDA0 and on_cuda.dtype is on_cpu.dtype and on_cuda.shape == on_cpu.shape
    # CuPy computes the float64 grid with its own kernel: equal up to the last float64 bit before the cast
    np.testing.assert_allclose(_host(on_cuda), on_cpu.numpy(), rtol=1e-7, atol=1e-12)


def test_creation_accepts_device_objects_and_requires_grad(cuda_device):
    for device in (cuda_device, "cuda:0", fm.device("cuda"), 0):
        t = fm.zeros(2, device=device, requires_grad=True)
        assert t.device == CUDA0 and t.requires_grad and t.is_leaf
    t = fm.ones(2, 3, device=cuda_device, requires_grad=True)
    (t * 3).sum().backward()
    assert t.grad.device == CUDA0
    np.testing.assert_array_equal(_host(t.grad), np.full((2, 3), 3.0, dtype=np.float32))
    with pytest.raises(RuntimeError, match="floating point"):
        fm.arange(3, device=cuda_device, requires_grad=True)


@pytest.mark.parametrize("name", ["zeros_like", "ones_like", "empty_like", "full_like"])
def test_like_functions_default_to_the_input_device(name, cuda_device):
    fn = getattr(fm, name)
    args = (2,) if name == "full_like" else ()
    src = fm.tensor([[1, 2, 3]], dtype=fm.int32, device=cuda_device)
    out = fn(src, *args)
    assert out.device == CUDA0 and out.dtype is fm.int32 and out.shape == (1, 3)
    if name != "empty_like":
        _assert_same_as_cpu(out, fn(src.cpu(), *args))
    assert fn(src, *args, device="cpu").device == fm.device("cpu")
    assert fn(src.cpu(), *args, device=cuda_device).device == CUDA0
    assert fn(src, *args, dtype=fm.float64).dtype is fm.float64


def test_tensor_of_a_cuda_tensor_copies_on_its_device(cuda_device):
    src = fm.tensor([1.0, 2.0, 3.0], device=cuda_device)
    copy = fm.tensor(src)
    assert copy.device == CUDA0
    assert copy._data is not src._data
    copy._data[0] = 10.0  # the copy owns its storage
    np.testing.assert_array_equal(_host(src), [1.0, 2.0, 3.0])
    moved = fm.tensor(src, device="cpu")
    assert moved.device == fm.device("cpu")
    np.testing.assert_array_equal(moved.numpy(), [1.0, 2.0, 3.0])
    assert fm.tensor(src, dtype=fm.float64).device == CUDA0


def test_as_tensor_shares_cuda_storage_and_from_numpy_is_cpu_only(cuda_device):
    src = fm.tensor([1.0, 2.0], device=cuda_device)
    assert fm.as_tensor(src) is src
    same = fm.as_tensor(src._data)
    assert same.device == CUDA0 and same._data is src._data
    assert fm.as_tensor(src, device="cpu").device == fm.device("cpu")
    assert fm.as_tensor([1.0, 2.0], device=cuda_device).device == CUDA0
    host = fm.from_numpy(np.array([1.0, 2.0]))
    assert host.device == fm.device("cpu")
    with pytest.raises(TypeError, match=r"np\.ndarray.*cuda"):
        fm.from_numpy(src._data)


# ------------------------------------------------------------- random creation
RANDOM = {
    "rand": (lambda **kw: fm.rand(4, 3, **kw), fm.float32),
    "rand-float64": (lambda **kw: fm.rand(5, dtype=fm.float64, **kw), fm.float64),
    "rand-float16": (lambda **kw: fm.rand(2, 2, dtype=fm.float16, **kw), fm.float16),
    "randn": (lambda **kw: fm.randn((3, 2), **kw), fm.float32),
    "randn-float64": (lambda **kw: fm.randn(5, dtype=fm.float64, **kw), fm.float64),
    "randint": (lambda **kw: fm.randint(0, 1000, (12,), **kw), fm.int64),
    "randint-int32": (lambda **kw: fm.randint(5, size=(6,), dtype=fm.int32, **kw), fm.int32),
    "randperm": (lambda **kw: fm.randperm(20, **kw), fm.int64),
}


@pytest.mark.parametrize("name", list(RANDOM))
def test_random_creation_on_cuda(name, cuda_device):
    make, dtype = RANDOM[name]
    out = make(device=cuda_device)
    ref = make(device="cpu")
    assert out.device == CUDA0
    assert out.dtype is dtype
    assert out.shape == ref.shape
    values = _host(out)
    if name.startswith("rand-"):
        assert values.min() >= 0 and values.max() < 1
    if name == "randperm":
        assert sorted(values.tolist()) == list(range(20))
    if name.startswith("randint"):
        high = 1000 if name == "randint" else 5
        assert values.min() >= 0 and values.max() < high


@pytest.mark.parametrize("name", list(RANDOM))
def test_manual_seed_makes_cuda_random_creation_reproducible(name, cuda_device):
    make, _ = RANDOM[name]
    fm.manual_seed(1234)
    first = _host(make(device=cuda_device))
    second = _host(make(device=cuda_device))
    fm.manual_seed(1234)
    np.testing.assert_array_equal(_host(make(device=cuda_device)), first)
    if name != "randint-int32":  # 6 draws from 5 values may repeat by chance; the others cannot
        assert not np.array_equal(first, second)


@pytest.mark.parametrize("name", list(RANDOM))
def test_cuda_generator_argument(name, cuda_device):
    make, _ = RANDOM[name]
    g = fm.Generator(device=cuda_device).manual_seed(7)
    first = _host(make(device=cuda_device, generator=g))
    g.manual_seed(7)
    np.testing.assert_array_equal(_host(make(device=cuda_device, generator=g)), first)
    with pytest.raises(RuntimeError, match=r"'cuda' device type for generator but found 'cpu'"):
        make(device=cuda_device, generator=fm.Generator())
    with pytest.raises(RuntimeError, match=r"'cpu' device type for generator but found 'cuda'"):
        make(device="cpu", generator=g)


def test_cuda_random_does_not_touch_the_cpu_stream(cuda_device):
    fm.manual_seed(3)
    expected = fm.rand(5).numpy().copy()
    fm.manual_seed(3)
    fm.rand(5, device=cuda_device)
    fm.randn(5, device=cuda_device)
    np.testing.assert_array_equal(fm.rand(5).numpy(), expected)


@pytest.mark.parametrize("name", ["rand_like", "randn_like", "randint_like"])
def test_random_like_defaults_to_the_input_device(name, cuda_device):
    src = fm.zeros(2, 3, dtype=fm.float64, device=cuda_device)
    args = (4,) if name == "randint_like" else ()
    out = getattr(fm, name)(src, *args)
    assert out.device == CUDA0 and out.shape == (2, 3) and out.dtype is fm.float64
    assert getattr(fm, name)(src, *args, device="cpu").device == fm.device("cpu")


# -------------------------------------------------------- transfers and casts
def test_cuda_and_cpu_round_trip_carries_gradients(cuda_device):
    a = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    x = fm.tensor(a, requires_grad=True)
    y = x.cuda()
    assert y.device == CUDA0 and y.grad_fn is not None
    z = (y * y).sum()
    assert z.device == CUDA0
    z.backward()
    assert x.grad.device == fm.device("cpu")
    np.testing.assert_allclose(x.grad.numpy(), 2 * a, rtol=1e-6)

    leaf = fm.tensor(a, device=cuda_device, requires_grad=True)
    back = leaf.cpu()
    assert back.device == fm.device("cpu") and back.grad_fn is not None
    (back * 3).sum().backward()
    assert leaf.grad.device == CUDA0
    np.testing.assert_allclose(_host(leaf.grad), np.full((3, 4), 3.0))


def test_to_forms_on_cuda(cuda_device):
    x = fm.tensor([1.5, -2.5], requires_grad=True)
    both = x.to(cuda_device, fm.float64)
    assert both.device == CUDA0 and both.dtype is fm.float64
    assert x.to(device=cuda_device).device == CUDA0
    ref = fm.zeros(1, dtype=fm.float16, device=cuda_device)
    like = x.to(ref)
    assert like.device == CUDA0 and like.dtype is fm.float16
    on_cuda = x.cuda()
    assert on_cuda.to(cuda_device) is on_cuda
    assert on_cuda.cuda() is on_cuda
    assert on_cuda.to("cuda", copy=True) is not on_cuda
    assert x.cuda(0).device == CUDA0
    both.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [1.0, 1.0])
    assert x.grad.dtype is fm.float32


def test_casts_on_cuda_match_cpu(cuda_device):
    a = np.array([[1.7, -2.2], [0.5, 3.9]], dtype=np.float32)
    x = fm.tensor(a, device=cuda_device, requires_grad=True)
    for cast in ("double", "half", "float", "long", "int", "bool"):
        on_cuda = getattr(x, cast)()
        _assert_same_as_cpu(on_cuda, getattr(fm.tensor(a), cast)())
    y = x.double() * fm.tensor([2.0, 3.0], dtype=fm.float64, device=cuda_device)
    y.sum().backward()
    assert x.grad.dtype is fm.float32 and x.grad.device == CUDA0
    np.testing.assert_array_equal(_host(x.grad), [[2.0, 3.0], [2.0, 3.0]])
    assert not x.long().requires_grad


def test_clone_and_contiguous_on_cuda(cuda_device):
    x = fm.tensor(np.arange(6.0).reshape(2, 3), device=cuda_device, requires_grad=True)
    t = x.T
    assert not t.is_contiguous()
    c = t.contiguous()
    assert c.is_contiguous() and c.device == CUDA0 and c._data is not t._data
    assert c.contiguous() is c
    k = x.clone()
    assert k.device == CUDA0 and k._data is not x._data
    (c.sum() + (k * 2).sum()).backward()
    np.testing.assert_array_equal(_host(x.grad), np.full((2, 3), 3.0))


def test_bfloat16_casts_match_torch_and_carry_gradients():
    a = np.random.default_rng(1).standard_normal((4, 5)).astype(np.float32)
    x = fm.tensor(a, requires_grad=True)
    low = x.to(fm.bfloat16)
    t_low = torch.tensor(a).bfloat16()
    assert low.dtype is fm.bfloat16 and low.requires_grad
    np.testing.assert_array_equal(low.float().detach().numpy(), t_low.float().numpy())
    (low.float() * 2).sum().backward()
    assert x.grad.dtype is fm.float32
    np.testing.assert_array_equal(x.grad.numpy(), np.full((4, 5), 2.0, dtype=np.float32))
    assert fm.tensor([1.0], dtype=fm.bfloat16).half().dtype is fm.float16
    assert fm.tensor([1.0], dtype=fm.bfloat16).double().dtype is fm.float64


# ------------------------------------------ reductions, shape ops, matmul on cuda
def _pair(a, cuda_device, dtype=np.float32):
    return (
        fm.tensor(a.astype(dtype), device=cuda_device, requires_grad=True),
        torch.tensor(a.astype(dtype), requires_grad=True),
    )


EXTRA = [
    ("sum_neg_dims", lambda x: x.sum((-1, 0))),
    ("mean_tuple", lambda x: x.mean((0, 2))),
    ("var_unbiased_false", lambda x: x.var(1, unbiased=False)),
    ("std_all_keepdim", lambda x: x.std((0, 1, 2), keepdim=True)),
    ("amax_all", lambda x: x.amax()),
    ("min_dim", lambda x: x.min(-1).values),
    ("prod_dim0", lambda x: x.prod(0)),
    ("logsumexp_keepdim", lambda x: x.logsumexp(2, keepdim=True)),
    ("norm_p1_all", lambda x: x.norm(p=1)),
    ("norm_ninf", lambda x: x.norm(p=float("-inf"), dim=0)),
    ("flatten_all", lambda x: x.flatten()),
    ("movedim", lambda x: x.movedim(0, 2)),
    ("flip_two", lambda x: x.flip((0, 2))),
    ("view_of_slice", lambda x: x[:, 1:].reshape(2, -1)),
    ("unbind_last", lambda x: x.unbind(-1)[1] * 2),
    ("chunk_cat", lambda x: x.chunk(3, 1)[0] * 2),
    ("tril_batched", lambda x: x.tril(-1)),
    ("expand_view", lambda x: x[:, :1].expand(2, 3, 4) * 1.5),
    ("repeat_4d", lambda x: x.repeat(2, 1, 1, 2)),
    ("batched_self_matmul", lambda x: x @ x.transpose(1, 2)),
    ("matmul_broadcast_vec", lambda x: x @ x[0, 0]),
    ("vec_matmul_batched", lambda x: x[0, 1] @ x.transpose(1, 2)),
]


@pytest.mark.parametrize("name, fn", EXTRA, ids=[e[0] for e in EXTRA])
def test_more_reductions_shape_ops_and_matmuls_on_cuda_match_torch(name, fn, cuda_device):
    a = np.random.default_rng(5).standard_normal((2, 3, 4))
    fx, tx = _pair(a, cuda_device)
    f_out, t_out = fn(fx), fn(tx)
    assert f_out.device == CUDA0
    assert f_out.shape == tuple(t_out.shape)
    np.testing.assert_allclose(_host(f_out), t_out.detach().numpy(), rtol=1e-5, atol=1e-5)
    upstream = np.random.default_rng(6).standard_normal(tuple(t_out.shape)).astype(np.float32)
    f_out.backward(fm.tensor(upstream, device=cuda_device))
    t_out.backward(torch.tensor(upstream))
    assert fx.grad.device == CUDA0
    np.testing.assert_allclose(_host(fx.grad), tx.grad.numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["argmax", "argmin"])
def test_argmax_argmin_and_max_indices_on_cuda_match_torch(name, cuda_device):
    a = np.random.default_rng(3).standard_normal((3, 4, 5)).astype(np.float32)
    f, t = fm.tensor(a, device=cuda_device), torch.tensor(a)
    for dim in (None, 0, -1):
        for keepdim in (False, True):
            fo = getattr(f, name)(dim=dim, keepdim=keepdim)
            to = getattr(t, name)(dim=dim, keepdim=keepdim)
            assert fo.device == CUDA0 and fo.dtype is fm.int64
            np.testing.assert_array_equal(_host(fo), to.numpy())
    values, indices = (f.max if name == "argmax" else f.min)(1, keepdim=True)
    tv, ti = (t.max if name == "argmax" else t.min)(1, keepdim=True)
    assert indices.device == CUDA0 and indices.dtype is fm.int64
    np.testing.assert_array_equal(_host(values), tv.numpy())
    np.testing.assert_array_equal(_host(indices), ti.numpy())
    scalar = fm.tensor(2.0, device=cuda_device)
    assert _host(scalar.argmax()) == 0 and scalar.max(0).indices.device == CUDA0


def test_integer_and_bool_reductions_on_cuda_match_torch(cuda_device):
    a = np.array([[1, -2, 3], [4, 5, -6]])
    f, t = fm.tensor(a, device=cuda_device), torch.tensor(a)
    for fo, to in ((f.sum(), t.sum()), (f.sum(0), t.sum(0)), (f.prod(1), t.prod(1)), ((f > 0).sum(), (t > 0).sum())):
        assert fo.device == CUDA0 and fo.dtype is fm.int64 and str(to.dtype) == "torch.int64"
        np.testing.assert_array_equal(_host(fo), to.numpy())
    assert f.sum(dtype=fm.float64).dtype is fm.float64
    np.testing.assert_allclose(_host(f.mean(dtype=fm.float32)), t.float().mean().numpy())


def test_view_rules_on_cuda_match_the_cpu(cuda_device):
    base = np.arange(24.0).reshape(2, 3, 4)
    cases = [
        (lambda x: x.transpose(0, 1), (3, 8)),  # needs a copy
        (lambda x: x.transpose(0, 1), (3, 2, 2, 2)),  # splits a dim: a view
        (lambda x: x[:, :, ::2], (6, 2)),  # merges strided dims: a view
        (lambda x: x[:, :, ::2], (12,)),  # needs a copy
        (lambda x: x[:, 1:], (2, 8)),  # merges the last two dims of a slice: a view
        (lambda x: x[:, 1:], (16,)),  # needs a copy
        (lambda x: x[:1].expand(5, 3, 4), (5, 12)),  # a view of a broadcast
        (lambda x: x[:1].expand(5, 3, 4), (60,)),  # needs a copy
        (lambda x: x[:, :1, :1], (2,)),  # drops size-1 dims: a view
    ]
    for make, shape in cases:
        cpu_src = make(fm.tensor(base))
        cuda_src = make(fm.tensor(base, device=cuda_device))
        try:
            expected = cpu_src.view(shape)
        except RuntimeError:
            with pytest.raises(RuntimeError, match="view size is not compatible"):
                cuda_src.view(shape)
            copied = cuda_src.reshape(shape)
            assert copied._base is None
            np.testing.assert_array_equal(_host(copied), cpu_src.reshape(shape).numpy())
            continue
        viewed = cuda_src.view(shape)
        assert viewed._base is not None and viewed._version_counter is cuda_src._version_counter
        np.testing.assert_array_equal(_host(viewed), expected.numpy())


def test_cat_stack_split_on_cuda_keep_the_device_and_promote(cuda_device):
    a = fm.tensor([[1.0, 2.0]], device=cuda_device, requires_grad=True)
    b = fm.tensor([[3, 4]], device=cuda_device)
    c = fm.cat([a, b])
    assert c.device == CUDA0 and c.dtype is fm.float32
    s = fm.stack([a, a * 2], dim=2)
    assert s.device == CUDA0 and s.shape == (1, 2, 2)
    first = c.split(1)[0]
    (first.sum() + s.sum()).backward()
    np.testing.assert_array_equal(_host(a.grad), [[4.0, 4.0]])
    assert a.grad.device == CUDA0


# ------------------------------------------------------------------ device mix-ups
def test_matmul_of_cpu_and_cuda_tensors_names_both_devices(cuda_device):
    cpu = fm.randn(2, 3)
    gpu = fm.randn(3, 2, device=cuda_device)
    with pytest.raises(RuntimeError, match=r"same device.*cpu and cuda:0"):
        fm.matmul(cpu, gpu)
    with pytest.raises(RuntimeError, match=r"cpu and cuda:0"):
        gpu @ cpu
    with pytest.raises(RuntimeError, match=r"cpu and cuda:0"):
        fm.cat([cpu, gpu.T])


# ------------------------------------------------------------- autocast on the CPU
def test_cpu_autocast_bfloat16_matmul_and_float32_reductions_against_torch():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((4, 5)).astype(np.float32)
    b = rng.standard_normal((5, 3)).astype(np.float32)
    v = rng.standard_normal(5).astype(np.float32)
    fa, fb, fv = fm.tensor(a), fm.tensor(b), fm.tensor(v)
    ta, tb, tv = torch.tensor(a), torch.tensor(b), torch.tensor(v)
    with fm.autocast(device_type="cpu", dtype=fm.bfloat16):
        f_products = [fm.matmul(fa, fb), fa @ fb, fm.mm(fa, fb), fm.bmm(fa[None], fb[None])]
        f_mv = fm.mv(fa, fv)
        f_low = fa.to(fm.bfloat16)
        f_sum, f_prod = f_low.sum(), f_low[:, :2].prod(1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        t_products = [torch.matmul(ta, tb), ta @ tb, torch.mm(ta, tb), torch.bmm(ta[None], tb[None])]
        t_low = ta.bfloat16()
        t_sum, t_prod = t_low.sum(), t_low[:, :2].prod(1)
    for f, t in zip(f_products, t_products):
        assert f.dtype is fm.bfloat16 and t.dtype == torch.bfloat16
        np.testing.assert_allclose(f.float().numpy(), t.float().numpy(), rtol=1e-2, atol=1e-2)
    # mv is in PyTorch's CUDA lower-precision list, which ForgeML applies on every device type
    # (torch's CPU list leaves mv out): compare with torch's mv of the bfloat16-rounded inputs
    assert f_mv.dtype is fm.bfloat16
    t_mv = torch.mv(ta.bfloat16(), tv.bfloat16())
    np.testing.assert_allclose(f_mv.float().numpy(), t_mv.float().numpy(), rtol=1e-2, atol=1e-2)
    # prod is in both libraries' float32 lists on the CPU
    assert f_prod.dtype is fm.float32 and t_prod.dtype == torch.float32
    np.testing.assert_allclose(f_prod.numpy(), t_prod.numpy(), rtol=1e-6)
    # sum runs in float32 under ForgeML's autocast on every device type (PyTorch's CUDA float32 list);
    # torch's CPU autocast leaves sum in bfloat16, so only the values are compared, at bfloat16 precision
    assert f_sum.dtype is fm.float32 and t_sum.dtype == torch.bfloat16
    np.testing.assert_allclose(f_sum.numpy(), t_low.float().sum().numpy(), rtol=1e-6)
    np.testing.assert_allclose(f_sum.numpy(), t_sum.float().numpy(), rtol=1e-2, atol=1e-2)


def test_cpu_autocast_float32_list_of_reductions_and_what_stays_out():
    x = fm.tensor([[0.5, 1.5, -2.0]], dtype=fm.bfloat16)
    with fm.autocast("cpu", dtype=fm.bfloat16):
        assert x.sum().dtype is fm.float32
        assert x.prod().dtype is fm.float32
        assert x.norm().dtype is fm.float32
        assert x.logsumexp(1).dtype is fm.float32
        assert x.amax().dtype is fm.bfloat16  # not in the float32 list
        f64 = fm.tensor([1.0, 2.0], dtype=fm.float64)
        assert (f64 @ f64).dtype is fm.float64  # float64 is never cast
        f32 = fm.tensor([1.0, 2.0])
        assert fm.dot(f32, f32).dtype is fm.float32  # dot is not in the lower-precision list
    assert x.sum().dtype is fm.bfloat16
    assert (fm.ones(2, 2) @ fm.ones(2, 2)).dtype is fm.float32


def test_cpu_autocast_matmul_gradients_reach_float32_inputs_like_torch():
    rng = np.random.default_rng(2)
    a = rng.standard_normal((2, 3, 4)).astype(np.float32)
    b = rng.standard_normal((4, 2)).astype(np.float32)
    fa, fb = fm.tensor(a, requires_grad=True), fm.tensor(b, requires_grad=True)
    ta, tb = torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True)
    with fm.autocast("cpu", dtype=fm.bfloat16):
        f_loss = (fa @ fb).float().sum()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        t_loss = (ta @ tb).float().sum()
    f_loss.backward()
    t_loss.backward()
    assert fa.grad.dtype is fm.float32 and fb.grad.dtype is fm.float32
    np.testing.assert_allclose(fa.grad.numpy(), ta.grad.numpy(), rtol=2e-2, atol=2e-2)
    np.testing.assert_allclose(fb.grad.numpy(), tb.grad.numpy(), rtol=2e-2, atol=2e-2)
