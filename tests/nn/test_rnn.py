"""RNN, LSTM, GRU and their cells: parity with PyTorch (outputs, final states, every gradient), gradcheck,
state_dicts both ways, dropout between layers, errors."""

import numpy as np
import pytest

import forgeml as fm
from forgeml import nn
from forgeml.autograd import gradcheck

torch = pytest.importorskip("torch")

KINDS = {
    "rnn_tanh": (nn.RNN, torch.nn.RNN, {}),
    "rnn_relu": (nn.RNN, torch.nn.RNN, {"nonlinearity": "relu"}),
    "lstm": (nn.LSTM, torch.nn.LSTM, {}),
    "gru": (nn.GRU, torch.nn.GRU, {}),
}
CONFIGS = [
    {"num_layers": 2, "bidirectional": True},
    {"num_layers": 1, "batch_first": True},
    {"num_layers": 2, "bias": False, "batch_first": True, "bidirectional": True},
]
RTOL, ATOL = 2e-4, 2e-5


def _np(t):
    return t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else t.detach().numpy()


def _pair_modules(kind, input_size=5, hidden_size=7, **config):
    ours_cls, theirs_cls, extra = KINDS[kind]
    torch.manual_seed(0)
    theirs = theirs_cls(input_size, hidden_size, **extra, **config)
    ours = ours_cls(input_size, hidden_size, **extra, **config)
    result = ours.load_state_dict({k: fm.tensor(v.detach().numpy()) for k, v in theirs.state_dict().items()})
    assert not result.missing_keys and not result.unexpected_keys
    return ours, theirs


def _states(kind, shape, rng):
    """Random initial states for both frameworks (a pair for the LSTM)."""
    arrays = [rng.standard_normal(shape).astype(np.float32) for _ in range(2 if kind == "lstm" else 1)]
    ours = [fm.tensor(a, requires_grad=True) for a in arrays]
    theirs = [torch.tensor(a, requires_grad=True) for a in arrays]
    return ours, theirs


def _as_hx(kind, states):
    return tuple(states) if kind == "lstm" else states[0]


def _flat_outputs(kind, out):
    output, hidden = out
    return [output, *(hidden if kind == "lstm" else (hidden,))]


def _close(ours, theirs, what):
    np.testing.assert_allclose(_np(ours), _np(theirs), rtol=RTOL, atol=ATOL, err_msg=what)


def _check_parity(kind, ours, theirs, x_np, hx_shape, rng, packed_lengths=None):
    fx, tx = fm.tensor(x_np, requires_grad=True), torch.tensor(x_np, requires_grad=True)
    f_states, t_states = _states(kind, hx_shape, rng) if hx_shape else ([], [])
    f_in, t_in = fx, tx
    if packed_lengths is not None:
        f_in = nn.utils.rnn.pack_padded_sequence(fx, packed_lengths, ours.batch_first, enforce_sorted=False)
        t_in = torch.nn.utils.rnn.pack_padded_sequence(tx, packed_lengths, theirs.batch_first, enforce_sorted=False)
    f_out = ours(f_in, _as_hx(kind, f_states) if f_states else None)
    t_out = theirs(t_in, _as_hx(kind, t_states) if t_states else None)
    f_flat, t_flat = _flat_outputs(kind, f_out), _flat_outputs(kind, t_out)
    if packed_lengths is not None:
        f_flat[0] = nn.utils.rnn.pad_packed_sequence(f_flat[0], ours.batch_first)[0]
        t_flat[0] = torch.nn.utils.rnn.pad_packed_sequence(t_flat[0], theirs.batch_first)[0]
    for i, (fo, to) in enumerate(zip(f_flat, t_flat)):
        assert tuple(fo.shape) == tuple(to.shape), f"output {i}: {fo.shape} vs {to.shape}"
        _close(fo, to, f"output {i}")
    f_loss, t_loss = 0, 0
    for fo, to in zip(f_flat, t_flat):
        g = rng.standard_normal(tuple(to.shape)).astype(np.float32)
        f_loss = f_loss + (fo * fm.tensor(g)).sum()
        t_loss = t_loss + (to * torch.tensor(g)).sum()
    f_loss.backward()
    t_loss.backward()
    _close(fx.grad, tx.grad, "input grad")
    for i, (fs, ts) in enumerate(zip(f_states, t_states)):
        _close(fs.grad, ts.grad, f"initial state {i} grad")
    theirs_params = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        _close(p.grad, theirs_params[name].grad, f"grad of {name}")


@pytest.mark.parametrize("config", CONFIGS, ids=["2layer-bidir", "batch_first", "nobias-2layer-bidir-bf"])
@pytest.mark.parametrize("kind", list(KINDS))
def test_layer_matches_torch(kind, config):
    rng = np.random.default_rng(0)
    ours, theirs = _pair_modules(kind, **config)
    directions = 2 if config.get("bidirectional") else 1
    shape = (3, 6, 5) if config.get("batch_first") else (6, 3, 5)
    x = rng.standard_normal(shape).astype(np.float32)
    _check_parity(kind, ours, theirs, x, (config["num_layers"] * directions, 3, 7), rng)


@pytest.mark.parametrize("kind", list(KINDS))
def test_layer_without_hx_and_unbatched_input_match_torch(kind):
    rng = np.random.default_rng(1)
    ours, theirs = _pair_modules(kind, num_layers=2, bidirectional=True)
    _check_parity(kind, ours, theirs, rng.standard_normal((4, 3, 5)).astype(np.float32), None, rng)
    ours, theirs = _pair_modules(kind, num_layers=2, bidirectional=True)
    _check_parity(kind, ours, theirs, rng.standard_normal((6, 5)).astype(np.float32), (4, 7), rng)


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("kind", list(KINDS))
def test_packed_input_with_unsorted_lengths_matches_torch(kind, batch_first):
    rng = np.random.default_rng(2)
    ours, theirs = _pair_modules(kind, num_layers=2, bidirectional=True, batch_first=batch_first)
    lengths = [3, 6, 1, 4]
    shape = (4, 6, 5) if batch_first else (6, 4, 5)
    x = rng.standard_normal(shape).astype(np.float32)
    _check_parity(kind, ours, theirs, x, (4, 4, 7), rng, packed_lengths=lengths)


def test_packed_output_keeps_the_packing():
    ours = nn.GRU(3, 4)
    seqs = [fm.randn(n, 3) for n in (2, 5, 3)]
    packed = nn.utils.rnn.pack_sequence(seqs, enforce_sorted=False)
    out, h_n = ours(packed)
    assert isinstance(out, nn.utils.rnn.PackedSequence)
    assert out.batch_sizes.tolist() == packed.batch_sizes.tolist()
    assert out.sorted_indices.tolist() == packed.sorted_indices.tolist()
    # each sequence run alone gives the same final state
    for b, s in enumerate(seqs):
        _, alone = ours(s.unsqueeze(1))
        np.testing.assert_allclose(h_n[:, b].detach().numpy(), alone[:, 0].detach().numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", list(KINDS))
def test_state_dict_moves_both_ways(kind):
    ours_cls, theirs_cls, extra = KINDS[kind]
    x = np.random.default_rng(3).standard_normal((4, 2, 5)).astype(np.float32)
    theirs = theirs_cls(5, 6, num_layers=2, bidirectional=True, **extra)
    ours = ours_cls(5, 6, num_layers=2, bidirectional=True, **extra)
    t_sd = theirs.state_dict()
    f_sd = ours.state_dict()
    assert list(f_sd) == list(t_sd)
    assert [tuple(v.shape) for v in f_sd.values()] == [tuple(v.shape) for v in t_sd.values()]
    # forgeml -> torch
    theirs.load_state_dict({k: torch.tensor(v.numpy()) for k, v in f_sd.items()})
    _close(ours(fm.tensor(x))[0], theirs(torch.tensor(x))[0], "forgeml -> torch")
    # torch -> forgeml, from a freshly initialised torch layer
    theirs = theirs_cls(5, 6, num_layers=2, bidirectional=True, **extra)
    ours.load_state_dict({k: fm.tensor(v.numpy()) for k, v in theirs.state_dict().items()})
    _close(ours(fm.tensor(x))[0], theirs(torch.tensor(x))[0], "torch -> forgeml")


@pytest.mark.parametrize("kind", list(KINDS))
def test_gradcheck_float64(kind):
    ours_cls, _, extra = KINDS[kind]
    layer = ours_cls(3, 2, num_layers=2, bidirectional=True, **extra).to(fm.float64)
    x = fm.randn(3, 2, 3, dtype=fm.float64, requires_grad=True)
    h0 = fm.randn(4, 2, 2, dtype=fm.float64, requires_grad=True)
    c0 = fm.randn(4, 2, 2, dtype=fm.float64, requires_grad=True)
    params = list(layer.parameters())

    def run(x, h0, c0, *weights):
        hx = (h0, c0) if kind == "lstm" else h0
        out, hidden = layer(x, hx)
        return out, *(hidden if kind == "lstm" else (hidden,))

    assert gradcheck(run, (x, h0, c0, *params))


def test_gradcheck_packed_float64():
    layer = nn.LSTM(2, 3, bidirectional=True).to(fm.float64)
    x = fm.randn(4, 3, 2, dtype=fm.float64, requires_grad=True)
    weights = list(layer.parameters())

    def run(x, *weights):
        packed = nn.utils.rnn.pack_padded_sequence(x, [2, 4, 1], enforce_sorted=False)
        out, (h, c) = layer(packed)
        return nn.utils.rnn.pad_packed_sequence(out)[0], h, c

    assert gradcheck(run, (x, *weights))


# ------------------------------------------------------------------- cells
CELLS = {
    "rnn_tanh": (nn.RNNCell, torch.nn.RNNCell, {}),
    "rnn_relu": (nn.RNNCell, torch.nn.RNNCell, {"nonlinearity": "relu"}),
    "lstm": (nn.LSTMCell, torch.nn.LSTMCell, {}),
    "gru": (nn.GRUCell, torch.nn.GRUCell, {}),
}


@pytest.mark.parametrize("batched", [True, False])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("kind", list(CELLS))
def test_cell_matches_torch(kind, bias, batched):
    ours_cls, theirs_cls, extra = CELLS[kind]
    theirs = theirs_cls(4, 6, bias=bias, **extra)
    ours = ours_cls(4, 6, bias=bias, **extra)
    assert [(k, tuple(v.shape)) for k, v in ours.state_dict().items()] == [
        (k, tuple(v.shape)) for k, v in theirs.state_dict().items()
    ]
    ours.load_state_dict({k: fm.tensor(v.detach().numpy()) for k, v in theirs.state_dict().items()})
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 4) if batched else (4,)).astype(np.float32)
    fx, tx = fm.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    f_states, t_states = _states(kind, (3, 6) if batched else (6,), rng)
    f_out, t_out = ours(fx, _as_hx(kind, f_states)), theirs(tx, _as_hx(kind, t_states))
    f_out = list(f_out) if kind == "lstm" else [f_out]
    t_out = list(t_out) if kind == "lstm" else [t_out]
    f_loss = t_loss = 0
    for fo, to in zip(f_out, t_out):
        assert tuple(fo.shape) == tuple(to.shape)
        _close(fo, to, "cell output")
        g = rng.standard_normal(tuple(to.shape)).astype(np.float32)
        f_loss = f_loss + (fo * fm.tensor(g)).sum()
        t_loss = t_loss + (to * torch.tensor(g)).sum()
    f_loss.backward()
    t_loss.backward()
    _close(fx.grad, tx.grad, "input grad")
    for fs, ts in zip(f_states, t_states):
        _close(fs.grad, ts.grad, "state grad")
    theirs_params = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        _close(p.grad, theirs_params[name].grad, f"grad of {name}")


@pytest.mark.parametrize("kind", list(CELLS))
def test_cell_without_hx_and_gradcheck(kind):
    ours_cls, _, extra = CELLS[kind]
    cell = ours_cls(3, 2, **extra).to(fm.float64)
    x = fm.randn(2, 3, dtype=fm.float64, requires_grad=True)
    out = cell(x)
    states = out if kind == "lstm" else (out,)
    for s in states:
        assert tuple(s.shape) == (2, 2)
    assert gradcheck(lambda x, *w: cell(x), (x, *cell.parameters()))


# ------------------------------------------------------------------- details
def test_default_init_is_uniform_in_one_over_sqrt_hidden():
    fm.manual_seed(5)
    layer = nn.LSTM(30, 100, num_layers=2)
    bound = 1 / np.sqrt(100)
    values = np.concatenate([p.detach().numpy().ravel() for p in layer.parameters()])
    assert values.min() >= -bound and values.max() <= bound
    assert values.min() < -0.95 * bound and values.max() > 0.95 * bound
    assert abs(values.std() - bound / np.sqrt(3)) < 0.01 * bound


def test_dropout_applies_between_layers_in_training_only():
    layer = nn.LSTM(4, 8, num_layers=2, dropout=0.5)
    x = fm.randn(5, 2, 4)
    layer.eval()
    first, second = layer(x)[0], layer(x)[0]
    np.testing.assert_array_equal(first.detach().numpy(), second.detach().numpy())
    layer.train()
    a, b = layer(x)[0], layer(x)[0]
    assert not np.allclose(a.detach().numpy(), b.detach().numpy())
    single = nn.LSTM(4, 8, num_layers=2, dropout=0.0)
    single.load_state_dict(layer.state_dict())
    np.testing.assert_allclose(single(x)[0].detach().numpy(), first.detach().numpy(), rtol=1e-6)
    # the first layer's input is never dropped: a one-layer LSTM with dropout is deterministic in training
    with pytest.warns(UserWarning, match="num_layers greater than 1"):
        one = nn.LSTM(4, 8, num_layers=1, dropout=0.5)
    np.testing.assert_array_equal(one(x)[0].detach().numpy(), one(x)[0].detach().numpy())


def test_compatibility_members_and_repr():
    layer = nn.GRU(3, 4, num_layers=2, bidirectional=True, batch_first=True)
    layer.flatten_parameters()
    assert len(layer.all_weights) == 4
    assert [tuple(w.shape) for w in layer.all_weights[1]] == [(12, 3), (12, 4), (12,), (12,)]
    assert repr(layer) == repr(torch.nn.GRU(3, 4, num_layers=2, bidirectional=True, batch_first=True))
    assert repr(nn.RNN(3, 4, nonlinearity="relu")) == repr(torch.nn.RNN(3, 4, nonlinearity="relu"))
    assert repr(nn.LSTMCell(3, 4, bias=False)) == repr(torch.nn.LSTMCell(3, 4, bias=False))
    positional = nn.RNN(3, 4, 2, "relu", False)  # PyTorch's positional order
    assert positional.nonlinearity == "relu" and positional.bias is False and positional.num_layers == 2


def test_errors_name_the_problem():
    layer = nn.LSTM(3, 4, num_layers=2)
    with pytest.raises(RuntimeError, match="Expected 3, got 5"):
        layer(fm.randn(2, 1, 5))
    with pytest.raises(ValueError, match="Expected input to be 2D or 3D, got 4D"):
        layer(fm.randn(2, 1, 1, 3))
    with pytest.raises(RuntimeError, match=r"Expected hidden size \(2, 1, 4\), got \[1, 1, 4\]"):
        layer(fm.randn(2, 1, 3), (fm.zeros(1, 1, 4), fm.zeros(1, 1, 4)))
    with pytest.raises(RuntimeError, match="hx should also be 2-D"):
        layer(fm.randn(2, 3), (fm.zeros(2, 1, 4), fm.zeros(2, 1, 4)))
    with pytest.raises(RuntimeError, match="dtype"):
        layer(fm.randn(2, 1, 3), (fm.zeros(2, 1, 4, dtype=fm.float64), fm.zeros(2, 1, 4)))
    with pytest.raises(NotImplementedError, match="proj_size"):
        nn.LSTM(3, 4, proj_size=2)
    with pytest.raises(ValueError, match="nonlinearity"):
        nn.RNN(3, 4, nonlinearity="sigmoid")
    with pytest.raises(ValueError, match="dropout"):
        nn.GRU(3, 4, dropout=1.5)


# ------------------------------------------------------------------- on a CUDA device (the CuPy stand-in, or a GPU)
@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_packed_layer_runs_on_cuda_like_on_cpu(kind, cuda_device):
    ours_cls, _, extra = KINDS[kind]
    cpu_layer = ours_cls(3, 4, num_layers=2, bidirectional=True, **extra).to(fm.float64)
    dev_layer = ours_cls(3, 4, num_layers=2, bidirectional=True, **extra).to(fm.float64)
    dev_layer.load_state_dict(cpu_layer.state_dict())
    dev_layer.to(cuda_device)
    x = np.random.default_rng(6).standard_normal((5, 3, 3))
    results = []
    for layer, device in ((cpu_layer, "cpu"), (dev_layer, cuda_device)):
        xt = fm.tensor(x, device=device, requires_grad=True)
        packed = nn.utils.rnn.pack_padded_sequence(xt, [4, 5, 2], enforce_sorted=False)
        out, hidden = layer(packed)
        padded = nn.utils.rnn.pad_packed_sequence(out)[0]
        h_n = hidden[0] if kind == "lstm" else hidden
        assert padded.device.type == device
        (padded.sum() + h_n.sum()).backward()
        grads = [xt.grad] + [p.grad for p in layer.parameters()]
        results.append([padded, h_n, *grads])
    for c, d in zip(*results):
        np.testing.assert_allclose(d.cpu().detach().numpy(), c.detach().numpy(), rtol=1e-10, atol=1e-12)
