"""pad, interpolate, pixel (un)shuffle, normalize, cosine_similarity, kl_div and channel dropout.

Each op: float64 ``gradcheck``, and PyTorch as the oracle for float32 forward
values and input gradients under the same upstream gradient.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import forgeml as fm
import forgeml.nn.functional as FF
from forgeml.autograd import gradcheck

torch = pytest.importorskip("torch")
TF = torch.nn.functional


def _inputs(shapes, seed, dtype, positive=False):
    rng = np.random.default_rng(seed)
    arrays = [rng.standard_normal(s).astype(dtype) for s in shapes]
    return [np.abs(a) + 0.1 if positive else a for a in arrays]


def check_parity(fm_fn, torch_fn, shapes, seed=0, positive=False, rtol=1e-5, atol=1e-5, grad_of=None):
    """Forward and input gradients of ``fm_fn`` against ``torch_fn`` in float32."""
    arrays = _inputs(shapes, seed, np.float32, positive)
    grad_of = range(len(arrays)) if grad_of is None else grad_of
    xs = [fm.tensor(a, requires_grad=i in grad_of) for i, a in enumerate(arrays)]
    ts = [torch.tensor(a, requires_grad=i in grad_of) for i, a in enumerate(arrays)]
    out, ref = fm_fn(*xs), torch_fn(*ts)
    assert tuple(out.shape) == tuple(ref.shape)
    np.testing.assert_allclose(out.detach().numpy(), ref.detach().numpy(), rtol=rtol, atol=atol)
    g = np.random.default_rng(seed + 1).standard_normal(tuple(ref.shape)).astype(np.float32)
    out.backward(fm.tensor(g))
    ref.backward(torch.tensor(g))
    for i in grad_of:
        np.testing.assert_allclose(xs[i].grad.numpy(), ts[i].grad.numpy(), rtol=rtol, atol=atol)


def check_grad(fn, shapes, seed=0, positive=False, grad_of=None):
    arrays = _inputs(shapes, seed, np.float64, positive)
    grad_of = range(len(arrays)) if grad_of is None else grad_of
    assert gradcheck(fn, tuple(fm.tensor(a, requires_grad=i in grad_of) for i, a in enumerate(arrays)))


# ---------------------------------------------------------------- pad
PAD_CASES = [
    ("constant", (2, 3, 5), (1, 2)),
    ("constant", (2, 3, 4, 5), (1, 0, 2, 1, 0, 1, 1, 1)),  # every dim, one more than the spatial ones
    ("constant", (2, 3, 6), (-2, 1, 1, -1)),  # negative padding crops
    ("constant", (4,), (-4, 2)),  # everything cropped away, then padded
    ("reflect", (2, 3, 6), (2, 3)),
    ("reflect", (3, 6), (5, 1)),  # unbatched, padding up to size - 1
    ("reflect", (2, 2, 4, 5), (1, 2, 3, 0)),
    ("reflect", (1, 2, 3, 4, 5), (1, 1, 2, 1, 2, 2)),
    ("reflect", (2, 2, 5, 6), (-1, 2, 1, -2)),
    ("replicate", (2, 3, 4), (3, 5)),
    ("replicate", (2, 2, 4, 5), (2, 1, 0, 3)),
    ("replicate", (2, 3, 4, 5), (1, 2, 1, 0, 2, 1)),
    ("replicate", (2, 2, 5, 6), (-1, 2, 1, -2)),
    ("circular", (2, 3, 4), (4, 2)),
    ("circular", (2, 2, 4, 5), (1, 2, 3, 4)),
    ("circular", (1, 2, 3, 4, 5), (1, 2, 3, 1, 2, 3)),
    ("circular", (2, 3, 6), (-2, 3)),
    ("circular", (2, 3, 6), (2, -1)),
]


@pytest.mark.parametrize("mode,shape,pad", PAD_CASES, ids=[f"{m}-{s}-{p}" for m, s, p in PAD_CASES])
def test_pad(mode, shape, pad):
    value = 1.5 if mode == "constant" else None
    kw = {"value": value} if value is not None else {}
    check_parity(lambda x: FF.pad(x, pad, mode, value), lambda t: TF.pad(t, pad, mode, **kw), [shape])
    check_grad(lambda x: FF.pad(x, pad, mode, value), [shape])


def test_pad_default_value_is_zero_and_int_tensors_pad():
    x = fm.tensor([[1, 2], [3, 4]])
    out = FF.pad(x, (1, 1))
    ref = TF.pad(torch.tensor([[1, 2], [3, 4]]), (1, 1))
    assert out.dtype == fm.int64
    np.testing.assert_array_equal(out.numpy(), ref.numpy())


@pytest.mark.parametrize(
    "shape,pad,mode,match",
    [
        ((2, 3), (1,), "constant", "divisible by 2"),
        ((3,), (1, 1, 1, 1), "constant", "two times the input dimension"),
        ((2, 3, 4), (4, 0), "reflect", "less than the corresponding input dimension"),
        ((2, 3, 4), (5, 0), "circular", "wrapping around more than once"),
        ((2, 3, 4), (1, 1), "reflection", "unsupported padding mode"),
        ((4,), (1, 1), "reflect", "2D, 3D, 4D, 5D"),
        ((2, 3, 4), (1, 1, 1, 1, 1, 1), "replicate", "2D, 3D, 4D, 5D"),
    ],
)
def test_pad_errors(shape, pad, mode, match):
    with pytest.raises((RuntimeError, NotImplementedError), match=match):
        FF.pad(fm.zeros(shape), pad, mode)
    with pytest.raises((RuntimeError, NotImplementedError, ValueError)):  # torch refuses the same call
        TF.pad(torch.zeros(shape), pad, mode)


def test_pad_value_with_non_constant_mode_is_an_error():
    with pytest.raises(RuntimeError, match="doesn't take in value"):
        FF.pad(fm.zeros((1, 2, 3)), (1, 1), "reflect", value=2.0)


# ---------------------------------------------------------------- interpolate
INTERP_CASES = [
    ("nearest", (2, 3, 7), {"size": 11}),
    ("nearest", (2, 3, 7), {"size": 4}),
    ("nearest", (2, 3, 7), {"scale_factor": 1.7}),
    ("nearest", (2, 3, 5, 6), {"size": (7, 4)}),
    ("nearest", (2, 3, 5, 6), {"scale_factor": 2}),
    ("nearest", (2, 3, 5, 6), {"scale_factor": (0.6, 3.3)}),
    ("nearest", (2, 3, 5, 6), {"scale_factor": 1.01}),  # kept size: the 4-D kernel copies
    ("nearest", (2, 3, 5, 6), {"scale_factor": 2.05}),  # doubled size: the 4-D kernel halves the index
    ("nearest", (2, 3, 5, 6), {"scale_factor": 2.3, "recompute_scale_factor": True}),
    ("nearest", (1, 2, 3, 4, 5), {"scale_factor": 1.5}),
    ("nearest-exact", (2, 3, 5, 6), {"scale_factor": 1.7}),
    ("nearest-exact", (2, 3, 7), {"size": 3}),
    ("area", (2, 3, 7, 9), {"size": (3, 4)}),
    ("area", (2, 3, 7), {"scale_factor": 0.5}),
]
for _mode, _shape in (("linear", (2, 3, 7)), ("bilinear", (2, 3, 5, 6)), ("trilinear", (1, 2, 3, 4, 5))):
    _sp = len(_shape) - 2
    for _ac in (False, True):
        INTERP_CASES += [
            (_mode, _shape, {"size": (9, 4, 6)[:_sp], "align_corners": _ac}),
            (_mode, _shape, {"scale_factor": 1.7, "align_corners": _ac}),
            (_mode, _shape, {"scale_factor": 0.6, "align_corners": _ac}),
            (_mode, _shape, {"scale_factor": 2.3, "recompute_scale_factor": True, "align_corners": _ac}),
            (_mode, _shape, {"scale_factor": 1.01, "align_corners": _ac}),  # kept size: copied
        ]


@pytest.mark.parametrize("mode,shape,kw", INTERP_CASES, ids=[f"{m}-{s}-{k}" for m, s, k in INTERP_CASES])
def test_interpolate(mode, shape, kw):
    check_parity(lambda x: FF.interpolate(x, mode=mode, **kw), lambda t: TF.interpolate(t, mode=mode, **kw), [shape])
    check_grad(lambda x: FF.interpolate(x, mode=mode, **kw), [(1, 1) + shape[2:]])  # one channel: fast enough


def test_interpolate_nearest_uint8_forward():
    a = np.arange(24, dtype=np.uint8).reshape(1, 2, 3, 4)
    out = FF.interpolate(fm.tensor(a), scale_factor=2.5)
    ref = TF.interpolate(torch.tensor(a), scale_factor=2.5)
    assert out.dtype == fm.uint8
    np.testing.assert_array_equal(out.numpy(), ref.numpy())


@pytest.mark.parametrize(
    "shape,kw,exc,match",
    [
        ((1, 2, 3, 4), {"mode": "nearest", "size": 4, "align_corners": True}, ValueError, "align_corners"),
        ((1, 2, 3), {"mode": "bilinear", "size": 4}, NotImplementedError, "needs 4D input"),
        ((1, 2, 3, 4), {"size": 4, "scale_factor": 2}, ValueError, "only one of size or scale_factor"),
        ((1, 2, 3, 4), {}, ValueError, "either size or scale_factor"),
        ((1, 2, 3, 4), {"size": (4, 5, 6)}, ValueError, "same number of spatial dimensions"),
        ((2, 3), {"size": 4}, NotImplementedError, "3D, 4D and 5D"),
    ],
)
def test_interpolate_errors(shape, kw, exc, match):
    with pytest.raises(exc, match=match):
        FF.interpolate(fm.zeros(shape), **kw)
    with pytest.raises(exc):
        TF.interpolate(torch.zeros(shape), **kw)


# ---------------------------------------------------------------- pixel shuffle
@pytest.mark.parametrize("shape,r", [((2, 8, 3, 4), 2), ((9, 2, 3), 3), ((2, 1, 4, 3, 2), 2)])
def test_pixel_shuffle(shape, r):
    check_parity(lambda x: FF.pixel_shuffle(x, r), lambda t: TF.pixel_shuffle(t, r), [shape])
    check_grad(lambda x: FF.pixel_shuffle(x, r), [shape])


@pytest.mark.parametrize("shape,r", [((2, 2, 4, 6), 2), ((3, 6, 3), 3)])
def test_pixel_unshuffle(shape, r):
    check_parity(lambda x: FF.pixel_unshuffle(x, r), lambda t: TF.pixel_unshuffle(t, r), [shape])
    check_grad(lambda x: FF.pixel_unshuffle(x, r), [shape])


def test_pixel_shuffle_errors():
    with pytest.raises(RuntimeError, match="divisible by the square of upscale_factor"):
        FF.pixel_shuffle(fm.zeros((1, 6, 2, 2)), 2)
    with pytest.raises(RuntimeError, match="divisible by downscale_factor"):
        FF.pixel_unshuffle(fm.zeros((1, 1, 3, 4)), 2)


# ---------------------------------------------------------------- normalize / cosine_similarity
@pytest.mark.parametrize(
    "shape,kw", [((4, 5), {}), ((2, 3, 4), {"dim": -1}), ((3, 4), {"p": 1.0, "dim": 0}), ((3, 4), {"p": 3.0})]
)
def test_normalize(shape, kw):
    check_parity(lambda x: FF.normalize(x, **kw), lambda t: TF.normalize(t, **kw), [shape])
    check_grad(lambda x: FF.normalize(x, **kw), [shape])


def test_normalize_clamps_tiny_norms_at_eps():
    a = np.array([[1e-14, -2e-14, 0.0], [1.0, 2.0, 2.0]])
    check = lambda lib: lib.nn.functional.normalize(lib.tensor(a), dim=1, eps=1e-12)  # noqa: E731
    np.testing.assert_allclose(check(fm).numpy(), check(torch).numpy(), rtol=1e-12)


@pytest.mark.parametrize(
    "shapes,dim", [([(4, 5), (4, 5)], 1), ([(2, 3, 4), (3, 4)], -1), ([(3, 1, 4), (1, 5, 4)], 2), ([(6,), (6,)], 0)]
)
def test_cosine_similarity(shapes, dim):
    check_parity(lambda a, b: FF.cosine_similarity(a, b, dim), lambda a, b: TF.cosine_similarity(a, b, dim), shapes)
    check_grad(lambda a, b: FF.cosine_similarity(a, b, dim), shapes)


def test_cosine_similarity_zero_and_tiny_vectors():
    """Norms below eps are clamped and the gradient passes the clamp straight through, as PyTorch 2.x does."""
    a = np.array([[0.0, 0.0, 0.0], [1e-9, 2e-9, -1e-9], [1.0, 2.0, 3.0]], dtype=np.float64)
    b = np.array([[1.0, -1.0, 2.0], [0.5, 1.0, 2.0], [0.0, 0.0, 0.0]], dtype=np.float64)
    xs = [fm.tensor(v, requires_grad=True) for v in (a, b)]
    ts = [torch.tensor(v, requires_grad=True) for v in (a, b)]
    out, ref = FF.cosine_similarity(*xs), TF.cosine_similarity(*ts)
    out.sum().backward()
    ref.sum().backward()
    np.testing.assert_allclose(out.detach().numpy(), ref.detach().numpy(), rtol=1e-10, atol=1e-12)
    for x, t in zip(xs, ts):
        np.testing.assert_allclose(x.grad.numpy(), t.grad.numpy(), rtol=1e-8, atol=1e-10)


# ---------------------------------------------------------------- kl_div
@pytest.mark.parametrize("reduction", ["none", "sum", "mean", "batchmean"])
@pytest.mark.parametrize("log_target", [False, True])
def test_kl_div(reduction, log_target):
    def fm_fn(x, t):
        return FF.kl_div(
            x.log_softmax(-1), t if log_target else t.softmax(-1), reduction=reduction, log_target=log_target
        )

    def torch_fn(x, t):
        return TF.kl_div(
            x.log_softmax(-1), t if log_target else t.softmax(-1), reduction=reduction, log_target=log_target
        )

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check_parity(fm_fn, torch_fn, [(3, 5), (3, 5)])
        check_grad(fm_fn, [(3, 5), (3, 5)])


def test_kl_div_zero_targets_and_mean_warning():
    x = np.log(np.array([[0.2, 0.3, 0.5], [0.1, 0.1, 0.8]]))
    t = np.array([[0.0, 0.5, 0.5], [1.0, 0.0, 0.0]])
    xi = fm.tensor(x, requires_grad=True)
    ti = torch.tensor(x, requires_grad=True)
    with pytest.warns(UserWarning, match="batchmean"):
        out = FF.kl_div(xi, fm.tensor(t))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = TF.kl_div(ti, torch.tensor(t))
    out.backward()
    ref.backward()
    np.testing.assert_allclose(out.item(), ref.item(), rtol=1e-12)
    np.testing.assert_allclose(xi.grad.numpy(), ti.grad.numpy(), rtol=1e-12)
    with pytest.raises(ValueError, match="reduction"):
        FF.kl_div(xi, fm.tensor(t), reduction="avg")


# ---------------------------------------------------------------- channel dropout
@pytest.mark.parametrize(
    "fn,shape", [("dropout1d", (4, 6, 5)), ("dropout2d", (4, 6, 3, 5)), ("dropout3d", (3, 4, 2, 3, 2))]
)
def test_channel_dropout_zeroes_whole_channels(fn, shape):
    fm.manual_seed(0)
    x = fm.tensor(np.random.default_rng(0).uniform(1.0, 2.0, shape), requires_grad=True)
    out = getattr(FF, fn)(x, p=0.5, training=True)
    ratio = (out / x).detach().numpy().reshape(shape[0], shape[1], -1)
    kept = ratio[..., 0]
    assert set(np.round(np.unique(kept), 12)) <= {0.0, 2.0} and 0 < (kept == 0).sum() < kept.size
    np.testing.assert_allclose(ratio, np.broadcast_to(kept[..., None], ratio.shape), rtol=1e-12)
    out.sum().backward()
    np.testing.assert_allclose(x.grad.numpy().reshape(ratio.shape), ratio, rtol=1e-12)
    assert getattr(FF, fn)(x, p=0.5, training=False) is x


def test_dropout2d_reads_3d_input_as_n_c_l():
    fm.manual_seed(1)
    x = fm.ones((8, 5, 6))
    with pytest.warns(UserWarning, match="channel-wise 1D dropout"):
        out = FF.dropout2d(x, 0.5).numpy()
    assert np.all(out == out[:, :, :1])  # constant along L: each (n, c) row dropped or kept whole
    assert 0 < (out == 0).sum() < out.size


def test_dropout1d_unbatched_and_errors():
    fm.manual_seed(2)
    out = FF.dropout1d(fm.ones((6, 4)), 0.5).numpy()
    assert np.all(out == out[:, :1]) and set(np.unique(out)) <= {0.0, 2.0}
    with pytest.raises(RuntimeError, match="Expected 2D or 3D input"):
        FF.dropout1d(fm.ones((2, 3, 4, 5)))
    with pytest.raises(ValueError, match="between 0 and 1"):
        FF.dropout2d(fm.ones((2, 3, 4, 5)), 1.5)
    assert np.all(FF.dropout2d(fm.ones((2, 3, 4, 5)), 1.0).numpy() == 0)


# ---------------------------------------------------------------- on a CUDA device (the CuPy stand-in without a GPU)
DEVICE_CASES = [
    ("pad_constant", lambda x: FF.pad(x, (1, -1, 2, 0), value=0.5), [(2, 3, 4, 5)]),
    ("pad_reflect", lambda x: FF.pad(x, (2, 1, 1, 2), "reflect"), [(2, 3, 4, 5)]),
    ("pad_replicate", lambda x: FF.pad(x, (2, 1), "replicate"), [(2, 3, 4)]),
    ("pad_circular", lambda x: FF.pad(x, (1, 2, 2, 1), "circular"), [(2, 3, 4, 5)]),
    ("nearest", lambda x: FF.interpolate(x, scale_factor=1.7), [(2, 3, 4, 5)]),
    ("bilinear", lambda x: FF.interpolate(x, size=(7, 3), mode="bilinear"), [(2, 3, 4, 5)]),
    ("linear_ac", lambda x: FF.interpolate(x, scale_factor=2, mode="linear", align_corners=True), [(2, 3, 4)]),
    ("area", lambda x: FF.interpolate(x, size=(2, 3), mode="area"), [(2, 3, 4, 5)]),
    ("pixel_shuffle", lambda x: FF.pixel_shuffle(x, 2), [(2, 8, 3, 4)]),
    ("normalize", lambda x: FF.normalize(x, p=3.0), [(4, 5)]),
    ("cosine_similarity", lambda a, b: FF.cosine_similarity(a, b, -1), [(3, 4), (2, 3, 4)]),
    ("kl_div", lambda a, b: FF.kl_div(a.log_softmax(1), b.softmax(1), reduction="batchmean"), [(3, 4), (3, 4)]),
]


@pytest.mark.parametrize("name,fn,shapes", DEVICE_CASES, ids=[c[0] for c in DEVICE_CASES])
def test_on_cuda_device_matches_cpu(cuda_device, name, fn, shapes):
    arrays = _inputs(shapes, 5, np.float32)
    results = []
    for device in ("cpu", cuda_device):
        xs = [fm.tensor(a, device=device, requires_grad=True) for a in arrays]
        out = fn(*xs)
        assert out.device.type == fm.device(device).type
        out.backward(fm.ones_like(out))
        results.append([out.detach().cpu().numpy()] + [x.grad.cpu().numpy() for x in xs])
    for ours, ref in zip(*results):
        np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-6)


def test_channel_dropout_on_cuda_device(cuda_device):
    fm.manual_seed(0)
    out = FF.dropout2d(fm.ones((4, 6, 2, 3), device=cuda_device), 0.5).cpu().numpy().reshape(4, 6, -1)
    assert np.all(out == out[..., :1]) and 0 < (out == 0).sum() < out.size


def test_deprecated_upsample_aliases():
    a = _inputs([(1, 2, 3, 4)], 7, np.float32)[0]
    for name, kw in [("upsample", {"scale_factor": 2, "mode": "bilinear"}), ("upsample_nearest", {"size": (5, 7)})]:
        with pytest.warns(UserWarning, match="deprecated"):
            out = getattr(FF, name)(fm.tensor(a), **kw)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = getattr(TF, name)(torch.tensor(a), **kw)
        np.testing.assert_allclose(out.numpy(), ref.numpy(), rtol=1e-6, atol=1e-6)
    with pytest.warns(UserWarning, match="deprecated"):
        out = FF.upsample_bilinear(fm.tensor(a), scale_factor=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = TF.upsample_bilinear(torch.tensor(a), scale_factor=2)
    np.testing.assert_allclose(out.numpy(), ref.numpy(), rtol=1e-6, atol=1e-6)
