"""TransformerDecoderLayer, TransformerDecoder and Transformer against PyTorch, state_dicts moved both ways."""

import numpy as np
import pytest

import forgeml as fm
from forgeml import nn

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # torch's own notes on fast paths

E, H, FF = 8, 2, 16
T, S, B = 5, 6, 3


def _to_fm(ours, theirs):
    ours.load_state_dict({k: fm.tensor(v.detach().numpy()) for k, v in theirs.state_dict().items()})


def _to_torch(theirs, ours):
    theirs.load_state_dict({k: torch.tensor(v._data.copy()) for k, v in ours.state_dict().items()})


def _close(a, b, tol=2e-5):
    a = a._data if isinstance(a, fm.Tensor) else a
    np.testing.assert_allclose(np.asarray(a), b.detach().numpy(), rtol=tol, atol=tol)


def _masks(rng, kind):
    """(ours, torch) pairs for tgt_mask, memory_mask, tgt_key_padding_mask, memory_key_padding_mask."""
    none = (None, None)
    if kind == "none":
        return none, none, none, none
    if kind == "causal_float":
        m = torch.nn.Transformer.generate_square_subsequent_mask(T)
        return (fm.tensor(m.numpy()), m), none, none, none
    if kind == "bool":
        tm = np.triu(np.ones((T, T), dtype=bool), 1)
        mm = rng.random((T, S)) > 0.6
        mm[:, 0] = False
        return (fm.tensor(tm), torch.tensor(tm)), (fm.tensor(mm), torch.tensor(mm)), none, none
    # key padding masks (bool), plus a float memory mask
    tk = np.zeros((B, T), dtype=bool)
    tk[1, -2:] = True
    mk = np.zeros((B, S), dtype=bool)
    mk[0, -3:] = True
    mk[2, -1] = True
    mm = rng.standard_normal((T, S)).astype(np.float32)
    return (
        none,
        (fm.tensor(mm), torch.tensor(mm)),
        (fm.tensor(tk), torch.tensor(tk)),
        (fm.tensor(mk), torch.tensor(mk)),
    )


def _inputs(rng, batch_first):
    tshape, mshape = ((B, T, E), (B, S, E)) if batch_first else ((T, B, E), (S, B, E))
    tgt = rng.standard_normal(tshape).astype(np.float32)
    mem = rng.standard_normal(mshape).astype(np.float32)
    return tgt, mem


def _run_pair(ours, theirs, rng, batch_first, mask_kind, call):
    tgt, mem = _inputs(rng, batch_first)
    ft, fmem = fm.tensor(tgt, requires_grad=True), fm.tensor(mem, requires_grad=True)
    tt, tmem = torch.tensor(tgt, requires_grad=True), torch.tensor(mem, requires_grad=True)
    masks = _masks(rng, mask_kind)
    fo = call(ours, ft, fmem, *(m[0] for m in masks))
    to = call(theirs, tt, tmem, *(m[1] for m in masks))
    # rows of tgt that are padding give NaN-free but arbitrary values in both; compare everything
    _close(fo, to)
    g = rng.standard_normal(to.shape).astype(np.float32)
    fo.backward(fm.tensor(g))
    to.backward(torch.tensor(g))
    _close(ft.grad, tt.grad, 1e-4)
    _close(fmem.grad, tmem.grad, 1e-4)
    theirs_params = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        _close(p.grad, theirs_params[name].grad, 1e-4)


def _layer_call(layer, tgt, mem, tm, mm, tk, mk):
    return layer(tgt, mem, tgt_mask=tm, memory_mask=mm, tgt_key_padding_mask=tk, memory_key_padding_mask=mk)


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("mask_kind", ["none", "causal_float", "bool", "padding"])
def test_decoder_layer_matches_torch_torch_to_forgeml(batch_first, norm_first, mask_kind):
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    kw = {"dim_feedforward": FF, "batch_first": batch_first, "norm_first": norm_first}
    theirs = torch.nn.TransformerDecoderLayer(E, H, **kw).eval()
    ours = nn.TransformerDecoderLayer(E, H, **kw).eval()
    assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == {
        k: tuple(v.shape) for k, v in theirs.state_dict().items()
    }
    _to_fm(ours, theirs)
    _run_pair(ours, theirs, rng, batch_first, mask_kind, _layer_call)


@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_decoder_layer_forgeml_to_torch(activation):
    rng = np.random.default_rng(1)
    ours = nn.TransformerDecoderLayer(E, H, dim_feedforward=FF, activation=activation).eval()
    theirs = torch.nn.TransformerDecoderLayer(E, H, dim_feedforward=FF, activation=activation).eval()
    _to_torch(theirs, ours)
    _run_pair(ours, theirs, rng, False, "causal_float", _layer_call)


def test_decoder_stack_matches_torch():
    rng = np.random.default_rng(2)
    theirs = torch.nn.TransformerDecoder(
        torch.nn.TransformerDecoderLayer(E, H, FF, batch_first=True), 2, norm=torch.nn.LayerNorm(E)
    ).eval()
    ours = nn.TransformerDecoder(nn.TransformerDecoderLayer(E, H, FF, batch_first=True), 2, norm=nn.LayerNorm(E))
    ours.eval()
    assert sorted(ours.state_dict()) == sorted(theirs.state_dict())
    assert ours.layers[0] is not ours.layers[1]
    _to_fm(ours, theirs)
    _run_pair(ours, theirs, rng, True, "padding", _layer_call)


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("norm_first", [False, True])
def test_transformer_matches_torch_both_ways(batch_first, norm_first):
    rng = np.random.default_rng(3)
    kw = {
        "d_model": E,
        "nhead": H,
        "num_encoder_layers": 2,
        "num_decoder_layers": 2,
        "dim_feedforward": FF,
        "batch_first": batch_first,
        "norm_first": norm_first,
    }
    theirs = torch.nn.Transformer(**kw).eval()
    ours = nn.Transformer(**kw).eval()
    assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == {
        k: tuple(v.shape) for k, v in theirs.state_dict().items()
    }
    _to_torch(theirs, ours)  # forgeml -> torch

    def call(model, tgt, mem, tm, mm, tk, mk):
        # `mem` plays the role of src here
        return model(mem, tgt, tgt_mask=tm, memory_mask=mm, tgt_key_padding_mask=tk, memory_key_padding_mask=mk)

    _run_pair(ours, theirs, rng, batch_first, "causal_float", call)
    ours2 = nn.Transformer(**kw).eval()
    _to_fm(ours2, theirs)  # torch -> forgeml
    theirs.zero_grad()
    _run_pair(ours2, theirs, rng, batch_first, "padding", call)


def test_transformer_init_and_mask():
    model = nn.Transformer(d_model=E, nhead=H, num_encoder_layers=1, num_decoder_layers=1, dim_feedforward=FF)
    assert model.batch_first is False and model.d_model == E and model.nhead == H
    assert model.encoder.norm is not None and model.decoder.norm is not None
    w = model.encoder.layers[0].linear1.weight._data
    bound = np.sqrt(6.0 / (E + FF))  # xavier-uniform on every matrix
    assert np.abs(w).max() <= bound and np.abs(w).max() > bound / 2
    ours = nn.Transformer.generate_square_subsequent_mask(4)
    theirs = torch.nn.Transformer.generate_square_subsequent_mask(4)
    np.testing.assert_array_equal(ours._data, theirs.numpy())
    assert ours._data.dtype == np.float32
    with pytest.raises(RuntimeError, match="batch number"):
        model(fm.zeros(3, 2, E), fm.zeros(3, 4, E))


def test_dropout_active_in_training_only():
    layer = nn.TransformerDecoderLayer(E, H, FF, dropout=0.5)
    x, m = fm.randn(T, B, E), fm.randn(S, B, E)
    layer.train()
    a, b = layer(x, m), layer(x, m)
    assert not np.allclose(a._data, b._data)
    layer.eval()
    np.testing.assert_array_equal(layer(x, m)._data, layer(x, m)._data)
