"""Layers start from PyTorch's default initialisation: same distribution, same bounds, for the same shapes.

Draws differ between the two libraries, so the checks are statistical: each
parameter's range and standard deviation, from a fixed seed, must agree with
the distribution PyTorch documents and with what PyTorch itself draws, within
tolerances that a wrong scheme (Xavier instead of Kaiming, N(0,1) instead of
U, a wrong fan) fails.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import forgeml as fm
from forgeml import nn

torch = pytest.importorskip("torch")


def _ours(p) -> np.ndarray:
    return np.asarray(p._data, dtype=np.float64)


def _theirs(p) -> np.ndarray:
    return p.detach().numpy().astype(np.float64)


def _check_uniform(ours: np.ndarray, theirs: np.ndarray, bound: float) -> None:
    """U(-bound, bound): inside the bounds, reaching close to them, std bound/sqrt(3), as torch's draws are."""
    n = ours.size
    assert np.abs(ours).max() <= bound * (1 + 1e-6)
    assert np.abs(ours).max() > bound * (1 - 20 / n)  # the largest of n uniform draws is near the bound
    std = bound / math.sqrt(3)
    tol = 4 * std / math.sqrt(2 * n) + 0.5 * std / math.sqrt(n)
    assert abs(ours.std() - std) < tol, (ours.std(), std)
    assert abs(ours.mean()) < 4 * std / math.sqrt(n)
    assert abs(ours.std() - theirs.std()) < 2 * tol
    assert np.abs(theirs).max() <= bound * (1 + 1e-6)


def _check_normal(ours: np.ndarray, theirs: np.ndarray, std: float) -> None:
    n = ours.size
    tol = 4 * std / math.sqrt(2 * n)
    assert abs(ours.std() - std) < tol and abs(theirs.std() - std) < tol
    assert abs(ours.mean()) < 4 * std / math.sqrt(n)
    assert np.abs(ours).max() > 2.5 * std  # not a bounded (uniform) draw


@pytest.fixture(autouse=True)
def _seed():
    fm.manual_seed(0)
    torch.manual_seed(0)


@pytest.mark.parametrize("in_features, out_features", [(64, 256), (300, 40), (7, 600)])
def test_linear(in_features, out_features):
    ours, theirs = nn.Linear(in_features, out_features), torch.nn.Linear(in_features, out_features)
    bound = 1 / math.sqrt(in_features)
    _check_uniform(_ours(ours.weight), _theirs(theirs.weight), bound)
    if out_features >= 200:
        _check_uniform(_ours(ours.bias), _theirs(theirs.bias), bound)
    else:
        assert np.abs(_ours(ours.bias)).max() <= bound and _ours(ours.bias).std() > 0


def test_linear_without_bias_and_reset_parameters():
    lin = nn.Linear(50, 80, bias=False)
    assert lin.bias is None
    before = _ours(lin.weight).copy()
    lin.reset_parameters()
    after = _ours(lin.weight)
    assert not np.array_equal(before, after)
    _check_uniform(after, _theirs(torch.nn.Linear(50, 80).weight), 1 / math.sqrt(50))


@pytest.mark.parametrize(
    "in_channels, out_channels, kernel_size, groups",
    [(3, 64, 3, 1), (16, 96, (3, 5), 1), (16, 96, 3, 4), (32, 128, 3, 32), (8, 256, 1, 2)],
)
def test_conv2d_fan_in_counts_groups_and_kernel(in_channels, out_channels, kernel_size, groups):
    ours = nn.Conv2d(in_channels, out_channels, kernel_size, groups=groups)
    theirs = torch.nn.Conv2d(in_channels, out_channels, kernel_size, groups=groups)
    assert tuple(ours.weight.shape) == tuple(theirs.weight.shape)
    k = kernel_size if isinstance(kernel_size, tuple) else (kernel_size, kernel_size)
    fan_in = in_channels // groups * k[0] * k[1]
    bound = 1 / math.sqrt(fan_in)
    _check_uniform(_ours(ours.weight), _theirs(theirs.weight), bound)
    bias = _ours(ours.bias)
    assert np.abs(bias).max() <= bound and np.abs(bias).max() > bound * (1 - 30 / bias.size)


def test_grouped_conv_differs_from_ungrouped():
    """With groups=8 the fan is 8 times smaller: the bound is sqrt(8) times larger than without groups."""
    grouped = _ours(nn.Conv2d(64, 128, 3, groups=8).weight)
    plain = _ours(nn.Conv2d(64, 128, 3).weight)
    assert 2.5 < grouped.std() / plain.std() < 3.2  # sqrt(8) = 2.83


@pytest.mark.parametrize("padding_idx", [None, 0, 5, -1])
def test_embedding(padding_idx):
    ours = nn.Embedding(1000, 32, padding_idx=padding_idx)
    theirs = torch.nn.Embedding(1000, 32, padding_idx=padding_idx)
    w, tw = _ours(ours.weight), _theirs(theirs.weight)
    if padding_idx is not None:
        assert not w[padding_idx].any() and not tw[padding_idx].any()
        w, tw = np.delete(w, padding_idx, axis=0), np.delete(tw, padding_idx, axis=0)
    _check_normal(w, tw, 1.0)


@pytest.mark.parametrize("kdim, vdim", [(None, None), (24, 40)])
def test_multihead_attention(kdim, vdim):
    e = 64
    ours = nn.MultiheadAttention(e, 4, kdim=kdim, vdim=vdim)
    theirs = torch.nn.MultiheadAttention(e, 4, kdim=kdim, vdim=vdim)
    assert sorted(n for n, _ in ours.named_parameters()) == sorted(n for n, _ in theirs.named_parameters())
    if kdim is None:
        # xavier_uniform_ on the [3e, e] stack: bound sqrt(6 / (e + 3e))
        _check_uniform(_ours(ours.in_proj_weight), _theirs(theirs.in_proj_weight), math.sqrt(6 / (4 * e)))
    else:
        for name, d in (("q_proj_weight", e), ("k_proj_weight", kdim), ("v_proj_weight", vdim)):
            bound = math.sqrt(6 / (e + d))
            _check_uniform(_ours(getattr(ours, name)), _theirs(getattr(theirs, name)), bound)
    assert not _ours(ours.in_proj_bias).any() and not _ours(ours.out_proj.bias).any()
    assert not _theirs(theirs.in_proj_bias).any() and not _theirs(theirs.out_proj.bias).any()
    _check_uniform(_ours(ours.out_proj.weight), _theirs(theirs.out_proj.weight), 1 / math.sqrt(e))


@pytest.mark.parametrize(
    "make",
    [
        lambda lib: lib.nn.LayerNorm(16),
        lambda lib: lib.nn.LayerNorm((4, 8)),
        lambda lib: lib.nn.BatchNorm1d(12),
        lambda lib: lib.nn.BatchNorm2d(6),
        lambda lib: lib.nn.RMSNorm(10),
    ],
)
def test_normalization_layers_start_at_ones_and_zeros(make):
    ours, theirs = make(fm), make(torch)
    theirs_params = dict(theirs.named_parameters())
    assert sorted(n for n, _ in ours.named_parameters()) == sorted(theirs_params)
    for name, p in ours.named_parameters():
        np.testing.assert_array_equal(_ours(p), _theirs(theirs_params[name]))
    theirs_buffers = dict(theirs.named_buffers())
    for name, b in ours.named_buffers():
        np.testing.assert_array_equal(_ours(b), theirs_buffers[name].numpy())


def test_transformer_encoder_layer_uses_layer_defaults():
    e, ff = 32, 128
    ours = nn.TransformerEncoderLayer(e, 4, ff)
    theirs = torch.nn.TransformerEncoderLayer(e, 4, ff)
    t = dict(theirs.named_parameters())
    o = dict(ours.named_parameters())
    assert sorted(o) == sorted(t)
    _check_uniform(_ours(o["linear1.weight"]), _theirs(t["linear1.weight"]), 1 / math.sqrt(e))
    _check_uniform(_ours(o["linear2.weight"]), _theirs(t["linear2.weight"]), 1 / math.sqrt(ff))
    _check_uniform(_ours(o["self_attn.in_proj_weight"]), _theirs(t["self_attn.in_proj_weight"]), math.sqrt(6 / (4 * e)))


def test_models_built_from_specs_get_the_layer_defaults():
    spec = {
        "layers": [
            {"type": "Linear", "args": {"in_features": 784, "out_features": 512}},
            {"type": "ReLU"},
            {"type": "Linear", "args": {"in_features": 512, "out_features": 10}},
        ]
    }
    model = nn.build(spec)
    first = model[0]
    _check_uniform(_ours(first.weight), _theirs(torch.nn.Linear(784, 512).weight), 1 / math.sqrt(784))


def test_xavier_normal_is_one_explicit_line_away():
    lin = nn.Linear(400, 300)
    nn.init.xavier_normal_(lin.weight)
    tl = torch.nn.Linear(400, 300)
    torch.nn.init.xavier_normal_(tl.weight)
    _check_normal(_ours(lin.weight), _theirs(tl.weight), math.sqrt(2 / 700))
