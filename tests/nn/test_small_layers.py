"""Small layers: Upsample family, padding layers, PixelShuffle, CosineSimilarity, KLDivLoss, Dropout1d/2d/3d, Identity.

Each layer runs against its PyTorch namesake on the same input (forward and
input gradients), and its state_dict keys and repr match PyTorch's.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import forgeml as fm
from forgeml import nn

torch = pytest.importorskip("torch")
tnn = torch.nn


def run_both(make, shapes, seed=0):
    """Build the layer with ``make(lib.nn)`` for both libraries, run it, compare output and input gradients."""
    rng = np.random.default_rng(seed)
    arrays = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    ours, theirs = make(nn), make(tnn)
    xs = [fm.tensor(a, requires_grad=True) for a in arrays]
    ts = [torch.tensor(a, requires_grad=True) for a in arrays]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out, ref = ours(*xs), theirs(*ts)
    np.testing.assert_allclose(out.detach().numpy(), ref.detach().numpy(), rtol=1e-5, atol=1e-6)
    g = rng.standard_normal(tuple(ref.shape)).astype(np.float32)
    out.backward(fm.tensor(g))
    ref.backward(torch.tensor(g))
    for x, t in zip(xs, ts):
        np.testing.assert_allclose(x.grad.numpy(), t.grad.numpy(), rtol=1e-5, atol=1e-6)
    assert list(ours.state_dict().keys()) == list(theirs.state_dict().keys())
    assert repr(ours) == repr(theirs)


LAYERS = [
    (lambda n: n.Upsample(scale_factor=2), [(2, 3, 4, 5)]),
    (lambda n: n.Upsample(size=(7, 3), mode="bilinear"), [(2, 3, 4, 5)]),
    (lambda n: n.Upsample(scale_factor=1.5, mode="bilinear", align_corners=True), [(2, 3, 4, 5)]),
    (lambda n: n.Upsample(scale_factor=(2.0, 3.0), mode="nearest"), [(1, 2, 3, 4)]),
    (lambda n: n.Upsample(size=9, mode="linear"), [(2, 3, 4)]),
    (lambda n: n.UpsamplingNearest2d(scale_factor=3), [(2, 3, 4, 5)]),
    (lambda n: n.UpsamplingBilinear2d(size=(6, 8)), [(2, 3, 4, 5)]),
    (lambda n: n.PixelShuffle(2), [(2, 8, 3, 4)]),
    (lambda n: n.PixelUnshuffle(3), [(2, 1, 6, 9)]),
    (lambda n: n.ZeroPad2d((1, 2, 0, 3)), [(2, 3, 4, 5)]),
    (lambda n: n.ZeroPad1d(2), [(2, 3, 4)]),
    (lambda n: n.ConstantPad1d((1, 2), 3.5), [(2, 3, 4)]),
    (lambda n: n.ConstantPad3d(1, -1.0), [(1, 2, 3, 4, 5)]),
    (lambda n: n.ReflectionPad1d((3, 1)), [(2, 3, 5)]),
    (lambda n: n.ReflectionPad2d(2), [(2, 3, 4, 5)]),
    (lambda n: n.ReplicationPad2d((1, 2, 3, 0)), [(2, 3, 4, 5)]),
    (lambda n: n.ReplicationPad3d(1), [(1, 2, 3, 4, 5)]),
    (lambda n: n.CircularPad1d(2), [(2, 3, 4)]),
    (lambda n: n.CircularPad2d((1, 0, 2, 3)), [(2, 3, 4, 5)]),
    (lambda n: n.CosineSimilarity(), [(4, 6), (4, 6)]),
    (lambda n: n.CosineSimilarity(dim=-1, eps=1e-6), [(2, 3, 5), (3, 5)]),
    (lambda n: n.Identity(54, unused_argument1=0.1, unused_argument2=False), [(3, 4)]),
]


@pytest.mark.parametrize("make,shapes", LAYERS, ids=range(len(LAYERS)))
def test_layer_matches_torch(make, shapes):
    run_both(make, shapes)


@pytest.mark.parametrize("reduction", ["batchmean", "sum", "none", "mean"])
def test_kl_div_loss(reduction):
    rng = np.random.default_rng(3)
    x, t = rng.standard_normal((4, 5)), rng.standard_normal((4, 5))
    results = []
    for lib in (fm, torch):
        inp = lib.tensor(x, requires_grad=True)
        loss_fn = lib.nn.KLDivLoss(reduction=reduction, log_target=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            loss = loss_fn(inp.log_softmax(1), lib.tensor(t).log_softmax(1))
        loss.sum().backward()
        results.append((loss.detach().numpy(), inp.grad.numpy(), repr(loss_fn)))
    np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-10)
    np.testing.assert_allclose(results[0][1], results[1][1], rtol=1e-10, atol=1e-14)
    assert results[0][2] == results[1][2]
    assert list(nn.KLDivLoss().state_dict()) == list(tnn.KLDivLoss().state_dict())


def test_kl_div_loss_rejects_unknown_reduction():
    with pytest.raises(ValueError, match="not a valid value for reduction"):
        nn.KLDivLoss(reduction="avg")


@pytest.mark.parametrize(
    "cls,shape", [("Dropout1d", (6, 8, 5)), ("Dropout2d", (6, 8, 3, 4)), ("Dropout3d", (4, 8, 2, 3, 2))]
)
def test_channel_dropout_layers(cls, shape):
    layer = getattr(nn, cls)(p=0.25)
    assert repr(layer) == repr(getattr(tnn, cls)(p=0.25))
    fm.manual_seed(0)
    x = fm.ones(shape)
    out = layer(x).numpy().reshape(shape[0], shape[1], -1)
    assert np.all(out == out[..., :1])  # a channel is kept or zeroed whole
    assert np.all((out == 0) | np.isclose(out, 1 / 0.75, rtol=1e-6))  # survivors scaled by 1 / (1 - p)
    assert 0 < (out[..., 0] == 0).sum() < out[..., 0].size
    layer.eval()
    assert layer(x) is x
    assert list(layer.state_dict()) == []


def test_dropout2d_layer_on_3d_input_follows_torch():
    """PyTorch 2.13 reads a 3-D input to Dropout2d as [N, C, L]: whole rows of L are dropped, with a warning."""
    fm.manual_seed(3)
    with pytest.warns(UserWarning, match="3D input to dropout2d"):
        out = nn.Dropout2d(0.5)(fm.ones((8, 6, 10))).numpy()
    assert np.all(out == out[..., :1])
    assert 0 < (out == 0).sum() < out.size


def test_upsample_rejects_align_corners_with_nearest():
    with pytest.raises(ValueError, match="align_corners"):
        nn.Upsample(scale_factor=2, align_corners=True)(fm.zeros((1, 1, 2, 2)))
