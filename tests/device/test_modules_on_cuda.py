"""Modules on ``device='cuda'``: moving models, training steps on the device, state dicts, clipping, init.

Each model is built on the CPU under ``fm.manual_seed``, copied, and moved
with ``.to('cuda')``: every parameter and buffer must land on ``cuda:0`` as
the same Parameter object (optimizers built before the move keep working),
and forward values and gradients on the device must match the CPU copy (same
weights) and PyTorch. On a CPU machine ``cuda`` is the checked CuPy stand-in
of ``tests/checked_cuda.py``, which fails on any host/device mix-up a GPU
would fail on; with a GPU and ``FORGEML_TEST_REAL_CUDA=1`` the same tests run on CuPy.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest

import forgeml as fm
from forgeml import nn

torch = pytest.importorskip("torch")

CUDA = fm.device("cuda", 0)
CPU = fm.device("cpu")
RTOL = ATOL = 1e-5
GRAD_TOL = 1e-4


def _host(t) -> np.ndarray:
    return t.detach().cpu().numpy()


def _state(module) -> dict:
    return {k: np.array(_host(v)) for k, v in module.state_dict().items()}


def _move(model, device="cuda"):
    """``model.to(device)``, checking it moved in place: same objects, everything on the device."""
    params = dict(model.named_parameters())
    buffers = dict(model.named_buffers())
    before = {k: _host(v).copy() for k, v in {**params, **buffers}.items()}
    assert model.to(device) is model
    target = fm.device(device)
    for name, p in model.named_parameters():
        assert p is params[name], f"{name} is a new Parameter after .to({device!r})"
        assert isinstance(p, nn.Parameter) and p.requires_grad
        assert p.device == target, f"parameter {name} is on {p.device}"
    for name, b in model.named_buffers():
        assert b is buffers[name], f"buffer {name} is a new tensor after .to({device!r})"
        assert b.device == target, f"buffer {name} is on {b.device}"
    for name, value in {**params, **buffers}.items():
        np.testing.assert_array_equal(_host(value), before[name], err_msg=f"{name} changed when moved")
    return model


def _torch_twin(ours, theirs):
    theirs.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in _state(ours).items()})
    return theirs


def _on(array, device, requires_grad=False):
    t = fm.tensor(array).to(device)
    return t.requires_grad_() if requires_grad else t


def _check_grads(cuda_model, cpu_model, torch_model=None):
    theirs = dict(torch_model.named_parameters()) if torch_model is not None else {}
    cpu = dict(cpu_model.named_parameters())
    for name, p in cuda_model.named_parameters():
        assert p.grad is not None, f"{name} got no gradient on cuda"
        assert p.grad.device == CUDA, f"{name}.grad is on {p.grad.device}"
        np.testing.assert_allclose(
            _host(p.grad), _host(cpu[name].grad), rtol=GRAD_TOL, atol=GRAD_TOL, err_msg=f"{name} (cuda vs cpu)"
        )
        if name in theirs:
            np.testing.assert_allclose(
                _host(p.grad), theirs[name].grad.numpy(), rtol=GRAD_TOL, atol=GRAD_TOL, err_msg=f"{name} (vs torch)"
            )


def _close(a, b, tol=RTOL):
    b = b.detach().numpy() if isinstance(b, torch.Tensor) else _host(b) if isinstance(b, fm.Tensor) else b
    np.testing.assert_allclose(_host(a), b, rtol=tol, atol=tol)


# ------------------------------------------------------------------ layer parity
def test_linear_on_cuda(cuda_device):
    fm.manual_seed(0)
    model = nn.Linear(6, 4)
    reference = copy.deepcopy(model)
    _move(model, cuda_device)
    theirs = _torch_twin(reference, torch.nn.Linear(6, 4))
    x = np.random.default_rng(1).standard_normal((5, 6)).astype(np.float32)
    out, ref = model(_on(x, cuda_device)), reference(fm.tensor(x))
    t_out = theirs(torch.from_numpy(x))
    assert out.device == CUDA
    _close(out, ref)
    _close(out, t_out)
    out.square().sum().backward()
    ref.square().sum().backward()
    t_out.square().sum().backward()
    _check_grads(model, reference, theirs)


def _cnn(nn_):
    return nn_.Sequential(
        nn_.Conv2d(3, 4, 3, padding=1),
        nn_.BatchNorm2d(4),
        nn_.ReLU(),
        nn_.MaxPool2d(2),
        nn_.Conv2d(4, 4, 3, stride=1, padding=1, bias=False),
        nn_.AvgPool2d(2),
        nn_.AdaptiveAvgPool2d(1),
        nn_.Flatten(),
        nn_.Linear(4, 3),
    )


def test_cnn_with_batchnorm_and_pooling_on_cuda(cuda_device):
    fm.manual_seed(0)
    model = _cnn(nn)
    reference = copy.deepcopy(model)
    _move(model, cuda_device)
    theirs = _torch_twin(reference, _cnn(torch.nn))
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    target = rng.integers(0, 3, 2)
    for step in range(2):  # the second step sees running stats updated on the device
        out, ref, t_out = model(_on(x, cuda_device)), reference(fm.tensor(x)), theirs(torch.from_numpy(x))
        _close(out, ref)
        _close(out, t_out, 1e-4)
        loss = nn.functional.cross_entropy(out, _on(target, cuda_device))
        nn.functional.cross_entropy(ref, fm.tensor(target)).backward()
        torch.nn.functional.cross_entropy(t_out, torch.from_numpy(target)).backward()
        loss.backward()
        _check_grads(model, reference, theirs)
        bn, t_bn = model[1], theirs[1]
        for name in ("running_mean", "running_var"):
            assert getattr(bn, name).device == CUDA
            _close(getattr(bn, name), getattr(t_bn, name), 1e-5)
        assert int(bn.num_batches_tracked.item()) == step + 1
        for m in (model, reference, theirs):
            m.zero_grad()
    model.eval()
    reference.eval()
    theirs.eval()
    _close(model(_on(x, cuda_device)), theirs(torch.from_numpy(x)), 1e-4)


def _seed_mlp(nn_, p=0.2):
    return nn_.Sequential(
        nn_.Linear(784, 32),
        nn_.ReLU(),
        nn_.Dropout(p),
        nn_.Linear(32, 16),
        nn_.ReLU(),
        nn_.Dropout(p),
        nn_.Linear(16, 10),
    )


def test_seed_mlp_on_cuda(cuda_device):
    fm.manual_seed(0)
    model = _seed_mlp(nn)
    reference = copy.deepcopy(model)
    _move(model, cuda_device)
    theirs = _torch_twin(reference, _seed_mlp(torch.nn))
    rng = np.random.default_rng(3)
    x = rng.random((4, 784), dtype=np.float32)
    y = rng.integers(0, 10, 4)
    for m in (model, reference, theirs):
        m.eval()  # dropout masks come from per-device streams: compare deterministically
    out, ref, t_out = model(_on(x, cuda_device)), reference(fm.tensor(x)), theirs(torch.from_numpy(x))
    _close(out, ref)
    _close(out, t_out)
    nn.CrossEntropyLoss()(out, _on(y, cuda_device)).backward()
    nn.CrossEntropyLoss()(ref, fm.tensor(y)).backward()
    torch.nn.CrossEntropyLoss()(t_out, torch.from_numpy(y)).backward()
    _check_grads(model, reference, theirs)

    model.train()
    model.zero_grad()
    hidden = model[1](model[0](_on(x, cuda_device)))
    dropped = model[2](hidden)
    assert dropped.device == CUDA
    active = _host(hidden) != 0  # ReLU zeros stay zero
    kept = (_host(dropped) != 0) & active
    np.testing.assert_allclose(_host(dropped)[kept], _host(hidden)[kept] / 0.8, rtol=1e-6)
    assert not _host(dropped)[~active].any()
    assert 0.55 < kept.sum() / active.sum() < 0.98  # p = 0.2 over ~64 active units
    nn.CrossEntropyLoss()(model(_on(x, cuda_device)), _on(y, cuda_device)).backward()
    assert all(p.grad.device == CUDA for p in model.parameters())


class _Encoder(nn.Module):
    def __init__(self, vocab=11, dim=8, heads=2, layers=2) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, dim, padding_idx=0)
        self.encoder = nn.TransformerEncoder(
            nn.TransformerEncoderLayer(dim, heads, 16, dropout=0.0, batch_first=True), layers
        )

    def forward(self, ids, padding_mask):
        return self.encoder(self.emb(ids), src_key_padding_mask=padding_mask)


class _TorchEncoder(torch.nn.Module):
    def __init__(self, vocab=11, dim=8, heads=2, layers=2) -> None:
        super().__init__()
        self.emb = torch.nn.Embedding(vocab, dim, padding_idx=0)
        layer = torch.nn.TransformerEncoderLayer(dim, heads, 16, dropout=0.0, batch_first=True)
        self.encoder = torch.nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)

    def forward(self, ids, padding_mask):
        return self.encoder(self.emb(ids), src_key_padding_mask=padding_mask)


def test_embedding_transformer_encoder_with_padding_mask_on_cuda(cuda_device):
    fm.manual_seed(0)
    model = _Encoder()
    reference = copy.deepcopy(model)
    _move(model, cuda_device)
    theirs = _torch_twin(reference, _TorchEncoder())
    ids = np.array([[3, 1, 4, 1, 5], [9, 2, 6, 0, 0], [5, 3, 0, 0, 0]], dtype=np.int64)
    pad = ids == 0
    upstream = np.random.default_rng(4).standard_normal((3, 5, 8)).astype(np.float32)
    ids_c, pad_c = _on(ids, cuda_device), _on(pad, cuda_device)
    out = model(ids_c, pad_c)
    ref = reference(fm.tensor(ids), fm.tensor(pad))
    t_out = theirs(torch.from_numpy(ids), torch.from_numpy(pad))
    assert out.device == CUDA
    _close(out, ref)
    _close(out, t_out, 1e-4)
    (out * _on(upstream, cuda_device)).sum().backward()
    (ref * fm.tensor(upstream)).sum().backward()
    (t_out * torch.from_numpy(upstream)).sum().backward()
    _check_grads(model, reference, theirs)
    assert not _host(model.emb.weight.grad)[0].any(), "padding_idx got a gradient"

    batch = nn.MaskedBatch(model.emb(ids_c), pad_c)  # the Sequential convention carries the mask along
    pooled = nn.Sequential(model.encoder, nn.SequencePool("mean"))(batch)
    assert pooled.device == CUDA and pooled.shape == (3, 8)


@pytest.mark.parametrize("kind", ["layer_norm", "rms_norm"])
def test_norms_on_cuda(kind, cuda_device):
    fm.manual_seed(0)
    if kind == "layer_norm":
        model, theirs = nn.LayerNorm((3, 4)), torch.nn.LayerNorm((3, 4))
    else:
        model, theirs = nn.RMSNorm(4, eps=1e-6), torch.nn.RMSNorm(4, eps=1e-6)
    with fm.no_grad():  # non-trivial affine weights
        for p in model.parameters():
            p.copy_(fm.randn(*p.shape))
    reference = copy.deepcopy(model)
    _move(model, cuda_device)
    _torch_twin(reference, theirs)
    x = np.random.default_rng(5).standard_normal((2, 3, 4)).astype(np.float32)
    upstream = np.random.default_rng(6).standard_normal((2, 3, 4)).astype(np.float32)
    xc = _on(x, cuda_device, requires_grad=True)
    xr = fm.tensor(x, requires_grad=True)
    xt = torch.tensor(x, requires_grad=True)
    out, ref, t_out = model(xc), reference(xr), theirs(xt)
    _close(out, ref)
    _close(out, t_out)
    (out * _on(upstream, cuda_device)).sum().backward()
    (ref * fm.tensor(upstream)).sum().backward()
    (t_out * torch.from_numpy(upstream)).sum().backward()
    _check_grads(model, reference, theirs)
    assert xc.grad.device == CUDA
    _close(xc.grad, xt.grad, GRAD_TOL)


def test_multihead_attention_on_cuda(cuda_device):
    fm.manual_seed(0)
    model = nn.MultiheadAttention(8, 2, batch_first=True)
    with fm.no_grad():
        model.in_proj_bias.copy_(fm.randn(24) * 0.1)
    reference = copy.deepcopy(model)
    _move(model, cuda_device)
    theirs = _torch_twin(reference, torch.nn.MultiheadAttention(8, 2, batch_first=True))
    rng = np.random.default_rng(7)
    q = rng.standard_normal((2, 3, 8)).astype(np.float32)
    kv = rng.standard_normal((2, 4, 8)).astype(np.float32)
    key_padding = np.array([[False, False, True, True], [False, False, False, True]])
    attn_mask = np.triu(np.ones((3, 4), dtype=bool), 2)  # True: may not attend
    qc, kvc = _on(q, cuda_device, True), _on(kv, cuda_device, True)
    out, weights = model(
        qc,
        kvc,
        kvc,
        key_padding_mask=_on(key_padding, cuda_device),
        attn_mask=_on(attn_mask, cuda_device),
        need_weights=True,
    )
    ref, ref_w = reference(
        fm.tensor(q),
        fm.tensor(kv),
        fm.tensor(kv),
        key_padding_mask=fm.tensor(key_padding),
        attn_mask=fm.tensor(attn_mask),
        need_weights=True,
    )
    qt, kvt = torch.tensor(q, requires_grad=True), torch.tensor(kv, requires_grad=True)
    t_out, t_w = theirs(
        qt,
        kvt,
        kvt,
        key_padding_mask=torch.from_numpy(key_padding),
        attn_mask=torch.from_numpy(attn_mask),
        need_weights=True,
    )
    assert out.device == CUDA and weights.device == CUDA
    _close(out, ref)
    _close(weights, ref_w)
    _close(out, t_out, 1e-4)
    _close(weights, t_w, 1e-4)
    ((out**2).sum() + weights.sum()).backward()
    ((ref**2).sum() + ref_w.sum()).backward()
    ((t_out**2).sum() + t_w.sum()).backward()
    _check_grads(model, reference, theirs)
    _close(qc.grad, qt.grad, GRAD_TOL)
    _close(kvc.grad, kvt.grad, GRAD_TOL)

    float_mask = np.triu(np.full((3, 4), -1.5, dtype=np.float32), 2)  # additive masks are added to the scores
    out_f, w_f = model(qc, kvc, kvc, attn_mask=_on(float_mask, cuda_device), need_weights=True)
    t_out_f, t_w_f = theirs(qt, kvt, kvt, attn_mask=torch.from_numpy(float_mask), need_weights=True)
    _close(out_f, t_out_f, 1e-4)
    _close(w_f, t_w_f, 1e-4)

    causal, causal_w = model(qc, qc, qc, need_weights=True, is_causal=True)  # the causal mask is built on the device
    assert causal.device == CUDA
    assert not np.triu(_host(causal_w), 1).any()

    # Python masks are moved to the query's device; a tensor mask on another device is an error.
    out_list, _ = model(qc, kvc, kvc, key_padding_mask=key_padding.tolist())
    _close(out_list, model(qc, kvc, kvc, key_padding_mask=_on(key_padding, cuda_device))[0])
    with pytest.raises(RuntimeError, match="key_padding_mask is on cpu"):
        model(qc, kvc, kvc, key_padding_mask=fm.tensor(key_padding))


# ------------------------------------------------------------------ moving, dtypes, state dicts
def test_to_moves_grads_and_back(cuda_device):
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    model(fm.randn(5, 3)).sum().backward()
    grads = {k: _host(p.grad).copy() for k, p in model.named_parameters()}
    grad_objects = {k: p.grad for k, p in model.named_parameters()}
    _move(model, cuda_device)
    for name, p in model.named_parameters():
        assert p.grad is grad_objects[name] and p.grad.device == CUDA
        np.testing.assert_array_equal(_host(p.grad), grads[name])
    assert model.cpu() is model
    assert all(p.device == CPU and p.grad.device == CPU for p in model.parameters())
    assert all(b.device == CPU for b in model.buffers())
    assert model.cuda() is model and all(t.device == CUDA for t in [*model.parameters(), *model.buffers()])
    model.cpu()
    model.cuda(0)
    assert all(p.device == CUDA for p in model.parameters())
    model.to(device=CPU)
    assert all(p.device == CPU for p in model.parameters())


def test_to_dtype_and_to_tensor(cuda_device):
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    params = list(model.parameters())
    model.to(fm.float64)
    assert all(p.dtype == fm.float64 for p in model.parameters())
    assert model[1].num_batches_tracked.dtype == fm.int64  # integer buffers keep their dtype
    model.to(fm.zeros(1, dtype=fm.float32).to(cuda_device))  # to(tensor): its device and dtype
    assert list(model.parameters()) == params
    assert all(p.device == CUDA and p.dtype == fm.float32 for p in model.parameters())
    assert model[1].running_var.device == CUDA and model[1].num_batches_tracked.dtype == fm.int64
    model.to(cuda_device, fm.float64)
    assert all(p.device == CUDA and p.dtype == fm.float64 for p in model.parameters())
    out = model(fm.randn(5, 3, dtype=fm.float64).to(cuda_device))
    assert out.device == CUDA and out.dtype == fm.float64
    with pytest.raises(TypeError, match="floating point"):
        model.to(fm.int32)


def test_optimizer_built_before_the_move_keeps_working(cuda_device):
    fm.manual_seed(0)
    model = nn.Linear(3, 2)
    optimizer = fm.optim.SGD(model.parameters(), lr=0.1)
    model.to(cuda_device)
    before = _host(model.weight).copy()
    x = fm.randn(4, 3).to(cuda_device)
    model(x).sum().backward()
    grad = _host(model.weight.grad).copy()
    optimizer.step()
    assert model.weight.device == CUDA
    np.testing.assert_allclose(_host(model.weight), before - 0.1 * grad, rtol=1e-6, atol=1e-6)


def test_state_dict_round_trips_between_cpu_and_cuda(cuda_device):
    fm.manual_seed(0)
    cpu_model = _Encoder()
    cpu_model.encoder.layers[0].norm1.weight._data[...] = 2.0
    bn_cpu = nn.BatchNorm2d(3)
    bn_cpu(fm.randn(2, 3, 4, 4))  # running stats and num_batches_tracked differ from their defaults
    fm.manual_seed(1)
    cuda_model = _Encoder().to(cuda_device)
    bn_cuda = nn.BatchNorm2d(3, device=cuda_device)

    for src, dst in ((cpu_model, cuda_model), (bn_cpu, bn_cuda)):
        state = src.state_dict()
        assert all(v.device == CPU for v in state.values())  # state_dict keeps tensors where they are
        objects = dict(dst.named_parameters())
        result = dst.load_state_dict(state)
        assert result.missing_keys == [] and result.unexpected_keys == []
        assert dict(dst.named_parameters()) == objects
        for key, value in dst.state_dict().items():
            assert value.device == CUDA, f"{key} left the device when loading"
            np.testing.assert_array_equal(_host(value), _host(state[key]), err_msg=key)
            assert value.dtype == state[key].dtype

    fm.manual_seed(2)
    back = _Encoder()
    cuda_state = cuda_model.state_dict()
    assert all(v.device == CUDA for v in cuda_state.values())
    back.load_state_dict(cuda_state)  # a CUDA checkpoint into a CPU model
    for key, value in back.state_dict().items():
        assert value.device == CPU
        np.testing.assert_array_equal(value.numpy(), _state(cpu_model)[key])
    bn_back = nn.BatchNorm2d(3)
    bn_back.load_state_dict(bn_cuda.state_dict())
    assert int(bn_back.num_batches_tracked.item()) == 1
    # NumPy arrays and float64 values are converted to each entry's dtype on its device
    bn_cuda.load_state_dict(
        {k: v.astype(np.float64) if v.dtype == np.float32 else v for k, v in _state(bn_cpu).items()}
    )
    assert all(t.device == CUDA for t in bn_cuda.state_dict().values())
    assert bn_cuda.running_mean.dtype == fm.float32


def test_deepcopy_of_a_cuda_model_stays_on_cuda(cuda_device):
    layer = nn.TransformerEncoderLayer(8, 2, 16, device=cuda_device)
    twin = copy.deepcopy(layer)
    assert all(p.device == CUDA for p in twin.parameters())
    encoder = nn.TransformerEncoder(layer, 2)  # deep-copies the layer on the device
    assert all(p.device == CUDA for p in encoder.parameters())


# ------------------------------------------------------------------ created on the device
@pytest.mark.parametrize(
    "factory",
    [
        lambda d: nn.Linear(4, 3, device=d),
        lambda d: nn.Conv2d(3, 4, 3, device=d),
        lambda d: nn.Embedding(10, 4, padding_idx=1, device=d),
        lambda d: nn.LayerNorm(4, device=d),
        lambda d: nn.RMSNorm(4, device=d),
        lambda d: nn.BatchNorm1d(4, device=d),
        lambda d: nn.BatchNorm2d(4, device=d, dtype=fm.float64),
        lambda d: nn.MultiheadAttention(8, 2, device=d),
        lambda d: nn.MultiheadAttention(8, 2, kdim=5, vdim=3, device=d),
        lambda d: nn.TransformerEncoderLayer(8, 2, 16, device=d),
        lambda d: nn.FeedForward(8, 16, device=d),
        lambda d: nn.PositionalEncoding(8, 32, device=d),
        lambda d: nn.LearnedPositionalEmbedding(16, 8, device=d),
    ],
    ids=[
        "Linear", "Conv2d", "Embedding", "LayerNorm", "RMSNorm", "BatchNorm1d", "BatchNorm2d-f64",
        "MultiheadAttention", "MultiheadAttention-kdim", "TransformerEncoderLayer", "FeedForward",
        "PositionalEncoding", "LearnedPositionalEmbedding",
    ],
)  # fmt: skip
def test_created_with_device_cuda(factory, cuda_device):
    module = factory(cuda_device)
    tensors = [*module.parameters(), *module.buffers()]
    assert tensors
    for t in tensors:
        assert t.device == CUDA, f"{type(module).__name__} made a tensor on {t.device}"
    for p in module.parameters():
        assert np.isfinite(_host(p)).all()


def test_created_with_device_cuda_runs(cuda_device):
    fm.manual_seed(0)
    emb = nn.Embedding(10, 8, padding_idx=0, device=cuda_device)
    assert not _host(emb.weight)[0].any()
    model = nn.Sequential(
        nn.PositionalEncoding(8, 16, device=cuda_device),
        nn.TransformerEncoderLayer(8, 2, 16, dropout=0.1, batch_first=True, device=cuda_device),
        nn.LayerNorm(8, device=cuda_device),
    )
    out = model(emb(fm.tensor([[1, 2, 3], [4, 0, 0]]).to(cuda_device)))
    assert out.device == CUDA
    out.sum().backward()
    assert all(p.grad is not None and p.grad.device == CUDA for p in model.parameters())


# ------------------------------------------------------------------ init, clipping, vectors
def test_init_draws_on_the_parameters_device(cuda_device):
    fm.manual_seed(0)
    w = nn.Parameter(fm.empty(64, 32).to(cuda_device))
    for fn in (
        nn.init.xavier_uniform_, nn.init.xavier_normal_, nn.init.kaiming_uniform_, nn.init.kaiming_normal_,
        nn.init.normal_, nn.init.uniform_, nn.init.trunc_normal_,
    ):  # fmt: skip
        version = w._version
        assert fn(w) is w
        assert w.device == CUDA and w._version == version + 1
        assert np.isfinite(_host(w)).all() and _host(w).std() > 0
    nn.init.trunc_normal_(w, std=3.0, a=-0.5, b=0.5)
    assert np.abs(_host(w)).max() <= 0.5
    nn.init.constant_(w, 0.25)
    assert (_host(w) == 0.25).all()
    bound = 1 / math.sqrt(32)
    nn.init.uniform_(w, -bound, bound, generator=fm.Generator(device=cuda_device).manual_seed(3))
    assert np.abs(_host(w)).max() <= bound
    with pytest.raises(RuntimeError, match="device type for generator"):
        nn.init.normal_(w, generator=fm.Generator())  # a CPU generator cannot fill a CUDA tensor


def test_init_is_reproducible_on_cuda(cuda_device):
    def draw():
        fm.manual_seed(5)
        return _host(nn.Linear(6, 5, device=cuda_device).weight).copy()

    np.testing.assert_array_equal(draw(), draw())


def _grads_on(device, scale=1.0):
    fm.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 7), nn.Linear(7, 3)).to(device)
    rng = np.random.default_rng(8)
    theirs = []
    for p in model.parameters():
        g = (rng.standard_normal(p.shape) * scale).astype(np.float32)
        p.grad = fm.tensor(g).to(device)
        theirs.append(torch.nn.Parameter(torch.zeros(p.shape)))
        theirs[-1].grad = torch.from_numpy(g.copy())
    return model, theirs


@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.0, math.inf])
@pytest.mark.parametrize("scale", [0.01, 10.0])
def test_clip_grad_norm_on_cuda(norm_type, scale, cuda_device):
    model, theirs = _grads_on(cuda_device, scale)
    total = nn.utils.clip_grad_norm_(model.parameters(), 1.0, norm_type=norm_type)
    t_total = torch.nn.utils.clip_grad_norm_(theirs, 1.0, norm_type=norm_type)
    assert total.device == CUDA and total.ndim == 0 and total.dtype == fm.float32
    np.testing.assert_allclose(_host(total), t_total.numpy(), rtol=1e-5)
    for p, t in zip(model.parameters(), theirs):
        assert p.grad.device == CUDA
        np.testing.assert_allclose(_host(p.grad), t.grad.numpy(), rtol=1e-5, atol=1e-7)
    cpu_model, _ = _grads_on("cpu", scale)
    cpu_total = nn.utils.clip_grad_norm_(cpu_model.parameters(), 1.0, norm_type=norm_type)
    np.testing.assert_allclose(_host(total), cpu_total.numpy(), rtol=1e-6)


def test_clip_grad_norm_nonfinite_and_value_on_cuda(cuda_device):
    model, _ = _grads_on(cuda_device)
    model[0].weight.grad._data[0, 0] = float("inf")
    with pytest.raises(RuntimeError, match="non-finite"):
        nn.utils.clip_grad_norm_(model.parameters(), 1.0, error_if_nonfinite=True)
    total = nn.utils.clip_grad_norm_(model.parameters(), 1.0, foreach=True)
    assert total.device == CUDA and math.isinf(total.item())

    model, theirs = _grads_on(cuda_device)
    nn.utils.clip_grad_value_(model.parameters(), 0.5, foreach=False)
    torch.nn.utils.clip_grad_value_(theirs, 0.5)
    for p, t in zip(model.parameters(), theirs):
        assert p.grad.device == CUDA
        np.testing.assert_array_equal(_host(p.grad), t.grad.numpy())
    empty = nn.utils.clip_grad_norm_([nn.Parameter(fm.zeros(2).to(cuda_device))], 1.0)
    assert empty.item() == 0.0


def test_parameters_to_vector_and_back_on_cuda(cuda_device):
    fm.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2)).to(cuda_device)
    objects = list(model.parameters())
    vec = nn.utils.parameters_to_vector(model.parameters())
    assert vec.device == CUDA and vec.shape == (sum(p.numel() for p in objects),)
    expected = np.concatenate([_host(p).ravel() for p in objects])
    np.testing.assert_array_equal(_host(vec), expected)
    nn.utils.vector_to_parameters(vec * 2, model.parameters())
    assert list(model.parameters()) == objects
    assert all(p.device == CUDA for p in objects)
    np.testing.assert_array_equal(np.concatenate([_host(p).ravel() for p in objects]), expected * 2)
    nn.utils.vector_to_parameters(fm.tensor(expected), model.parameters())  # a CPU vector into CUDA parameters
    np.testing.assert_array_equal(_host(nn.utils.parameters_to_vector(model.parameters())), expected)
    mixed = [nn.Parameter(fm.zeros(2)), nn.Parameter(fm.zeros(2).to(cuda_device))]
    with pytest.raises(TypeError, match="two devices"):
        nn.utils.parameters_to_vector(mixed)
