"""Embedding, LayerNorm, RMSNorm, attention and the transformer encoder: gradcheck and PyTorch parity."""

import math

import numpy as np
import pytest

import forgeml as fm
from forgeml import nn
from forgeml.autograd import gradcheck
from forgeml.nn import functional as F

torch = pytest.importorskip("torch")
TF = torch.nn.functional


def _copy_weights(ours, theirs):
    ours.load_state_dict({k: fm.tensor(v.detach().numpy()) for k, v in theirs.state_dict().items()})


def _close(a, b, tol=2e-5):
    np.testing.assert_allclose(a.detach().numpy(), b.detach().numpy(), rtol=tol, atol=tol)


# ---------------------------------------------------------------- gradcheck
def test_gradcheck_layer_norm_rms_norm_and_embedding():
    rng = np.random.default_rng(0)
    x = fm.tensor(rng.standard_normal((2, 3, 4)), requires_grad=True)
    w = fm.tensor(rng.standard_normal((3, 4)), requires_grad=True)
    b = fm.tensor(rng.standard_normal((3, 4)), requires_grad=True)
    assert gradcheck(lambda a, ww, bb: F.layer_norm(a, (3, 4), ww, bb), (x, w, b))
    w1 = fm.tensor(rng.standard_normal(4), requires_grad=True)
    assert gradcheck(lambda a, ww: F.rms_norm(a, 4, ww, eps=1e-6), (x, w1))
    table = fm.tensor(rng.standard_normal((5, 3)), requires_grad=True)
    ids = fm.tensor([[0, 2, 2], [4, 0, 1]])
    assert gradcheck(lambda t: F.embedding(ids, t), (table,))  # padding_idx is checked against torch below


@pytest.mark.parametrize("mask_kind", ["none", "bool", "float", "causal"])
def test_gradcheck_scaled_dot_product_attention(mask_kind):
    rng = np.random.default_rng(1)
    q, k, v = (fm.tensor(rng.standard_normal((2, 3, 4, 5)), requires_grad=True) for _ in range(3))
    k = fm.tensor(rng.standard_normal((2, 3, 6, 5)), requires_grad=True)
    v = fm.tensor(rng.standard_normal((2, 3, 6, 2)), requires_grad=True)
    mask = None
    if mask_kind == "bool":
        mask = fm.tensor(rng.random((4, 6)) > 0.3)
        mask._data[:, 0] = True  # every query keeps a key
    elif mask_kind == "float":
        mask = fm.tensor(rng.standard_normal((2, 1, 4, 6)))
    causal = mask_kind == "causal"
    assert gradcheck(
        lambda a, b, c: F.scaled_dot_product_attention(a, b, c, attn_mask=mask, is_causal=causal), (q, k, v)
    )


# ------------------------------------------------------------ torch parity
@pytest.mark.parametrize("mask_kind", ["none", "bool", "float", "causal"])
def test_sdpa_matches_torch(mask_kind):
    rng = np.random.default_rng(2)
    arrays = [rng.standard_normal(s).astype(np.float32) for s in ((2, 4, 7, 8), (2, 4, 9, 8), (2, 4, 9, 8))]
    if mask_kind == "causal":
        arrays[1], arrays[2] = arrays[1][:, :, :7], arrays[2][:, :, :7]
    fq = [fm.tensor(a, requires_grad=True) for a in arrays]
    tq = [torch.tensor(a, requires_grad=True) for a in arrays]
    fm_mask = t_mask = None
    if mask_kind == "bool":
        m = rng.random((7, 9)) > 0.4
        m[:, 0] = True
        fm_mask, t_mask = fm.tensor(m), torch.tensor(m)
    elif mask_kind == "float":
        m = rng.standard_normal((2, 1, 7, 9)).astype(np.float32)
        fm_mask, t_mask = fm.tensor(m), torch.tensor(m)
    causal = mask_kind == "causal"
    fo = F.scaled_dot_product_attention(*fq, attn_mask=fm_mask, is_causal=causal, scale=0.3)
    to = TF.scaled_dot_product_attention(*tq, attn_mask=t_mask, is_causal=causal, scale=0.3)
    _close(fo, to)
    g = rng.standard_normal(to.shape).astype(np.float32)
    fo.backward(fm.tensor(g))
    to.backward(torch.tensor(g))
    for a, b in zip(fq, tq):
        np.testing.assert_allclose(a.grad.numpy(), b.grad.numpy(), rtol=1e-4, atol=1e-5)


def test_sdpa_fully_masked_row_gives_zeros_like_torch():
    q, k, v = (np.random.default_rng(3).standard_normal((1, 2, 3)).astype(np.float32) for _ in range(3))
    m = np.array([[True, True], [False, False]])
    ours = F.scaled_dot_product_attention(fm.tensor(q), fm.tensor(k), fm.tensor(v), attn_mask=fm.tensor(m))
    theirs = TF.scaled_dot_product_attention(
        torch.tensor(q), torch.tensor(k), torch.tensor(v), attn_mask=torch.tensor(m)
    )
    _close(ours, theirs)
    assert np.all(ours.numpy()[0, 1] == 0)


@pytest.mark.parametrize("shape, normalized", [((4, 6), 6), ((2, 3, 4), (3, 4))])
def test_layer_norm_and_rms_norm_modules_match_torch(shape, normalized):
    rng = np.random.default_rng(4)
    x = rng.standard_normal(shape).astype(np.float32) * 3 + 1
    for ours, theirs in (
        (nn.LayerNorm(normalized), torch.nn.LayerNorm(normalized)),
        (nn.RMSNorm(normalized, eps=1e-6), torch.nn.RMSNorm(normalized, eps=1e-6)),
    ):
        with torch.no_grad():
            for p in theirs.parameters():
                p.copy_(torch.tensor(rng.standard_normal(p.shape).astype(np.float32)))
        _copy_weights(ours, theirs)
        fx, tx = fm.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
        fo, to = ours(fx), theirs(tx)
        _close(fo, to)
        g = rng.standard_normal(shape).astype(np.float32)
        fo.backward(fm.tensor(g))
        to.backward(torch.tensor(g))
        np.testing.assert_allclose(fx.grad.numpy(), tx.grad.numpy(), rtol=1e-4, atol=1e-4)
        for (name, p), q in zip(ours.named_parameters(), theirs.parameters()):
            np.testing.assert_allclose(p.grad.numpy(), q.grad.numpy(), rtol=1e-4, atol=1e-4, err_msg=name)
    assert list(nn.LayerNorm(8, bias=False).state_dict()) == ["weight"]


def test_embedding_matches_torch_and_padding_row_gets_no_gradient():
    ours, theirs = nn.Embedding(10, 4, padding_idx=0), torch.nn.Embedding(10, 4, padding_idx=0)
    _copy_weights(ours, theirs)
    assert np.all(ours.weight.detach().numpy()[0] == theirs.weight.detach().numpy()[0])
    ids = np.array([[1, 2, 0, 2], [9, 0, 0, 1]])
    fo, to = ours(fm.tensor(ids)), theirs(torch.tensor(ids))
    _close(fo, to)
    g = np.random.default_rng(5).standard_normal((2, 4, 4)).astype(np.float32)
    fo.backward(fm.tensor(g))
    to.backward(torch.tensor(g))
    np.testing.assert_allclose(ours.weight.grad.numpy(), theirs.weight.grad.numpy(), rtol=1e-6)
    assert np.all(ours.weight.grad.numpy()[0] == 0) and np.all(ours.weight.grad.numpy()[[3, 4, 5]] == 0)
    with pytest.raises(IndexError, match="out of range"):
        ours(fm.tensor([10]))
    assert repr(ours) == repr(theirs)


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"kpm": True},
        {"attn_bool": True},
        {"attn_float": True, "kpm": True},
        {"causal": True},
        {"cross": True},
        {"kdim": True},
    ],
)
def test_multihead_attention_matches_torch(options):
    rng = np.random.default_rng(6)
    E, H, B, L = 12, 3, 2, 5
    S = 7 if options.get("cross") or options.get("kdim") else L
    kdim = 5 if options.get("kdim") else None
    ours = nn.MultiHeadAttention(E, H, kdim=kdim, vdim=kdim, batch_first=True)
    theirs = torch.nn.MultiheadAttention(E, H, batch_first=True, kdim=kdim, vdim=kdim)
    assert sorted(ours.state_dict()) == sorted(theirs.state_dict())
    _copy_weights(ours, theirs)
    q = rng.standard_normal((B, L, E)).astype(np.float32)
    kv = rng.standard_normal((B, S, kdim or E)).astype(np.float32) if S != L or kdim else q
    kwargs_f, kwargs_t = {"need_weights": True}, {"need_weights": True}
    if options.get("kpm"):
        kpm = np.zeros((B, S), dtype=bool)
        kpm[1, -2:] = True
        if options.get("attn_float"):  # torch wants both masks of one kind: the additive form of the padding
            kpm = np.where(kpm, -np.inf, 0.0).astype(np.float32)
        kwargs_f["key_padding_mask"], kwargs_t["key_padding_mask"] = fm.tensor(kpm), torch.tensor(kpm)
    if options.get("attn_bool"):
        am = rng.random((L, S)) > 0.7  # True = not allowed
        am[:, 0] = False
        kwargs_f["attn_mask"], kwargs_t["attn_mask"] = fm.tensor(am), torch.tensor(am)
    if options.get("attn_float"):
        am = rng.standard_normal((B * H, L, S)).astype(np.float32)
        kwargs_f["attn_mask"], kwargs_t["attn_mask"] = fm.tensor(am), torch.tensor(am)
    if options.get("causal"):
        causal = np.triu(np.ones((L, S), dtype=bool), 1)
        kwargs_f["is_causal"] = True
        kwargs_t["attn_mask"], kwargs_t["is_causal"] = torch.tensor(causal), True
    fq, tq = fm.tensor(q, requires_grad=True), torch.tensor(q, requires_grad=True)
    fk = fm.tensor(kv, requires_grad=True) if kv is not q else fq
    tk = torch.tensor(kv, requires_grad=True) if kv is not q else tq
    fo, fw = ours(fq, fk, fk, **kwargs_f)
    to, tw = theirs(tq, tk, tk, **kwargs_t)
    _close(fo, to)
    _close(fw, tw)
    g = rng.standard_normal(to.shape).astype(np.float32)
    fo.backward(fm.tensor(g))
    to.backward(torch.tensor(g))
    np.testing.assert_allclose(fq.grad.numpy(), tq.grad.numpy(), rtol=1e-4, atol=1e-5)
    for name, p in ours.named_parameters():
        np.testing.assert_allclose(
            p.grad.numpy(), dict(theirs.named_parameters())[name].grad.numpy(), rtol=1e-4, atol=1e-4, err_msg=name
        )


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_transformer_encoder_matches_torch(norm_first, activation):
    rng = np.random.default_rng(7)
    layer_t = torch.nn.TransformerEncoderLayer(
        16, 4, 32, dropout=0.0, activation=activation, batch_first=True, norm_first=norm_first
    )
    theirs = torch.nn.TransformerEncoder(layer_t, 2, norm=torch.nn.LayerNorm(16), enable_nested_tensor=False)
    ours = nn.TransformerEncoder(
        nn.TransformerEncoderLayer(
            16, 4, 32, dropout=0.0, activation=activation, norm_first=norm_first, batch_first=True
        ),
        2,
        norm=nn.LayerNorm(16),
    )
    assert sorted(ours.state_dict()) == sorted(theirs.state_dict())
    _copy_weights(ours, theirs)
    x = rng.standard_normal((3, 6, 16)).astype(np.float32)
    kpm = np.zeros((3, 6), dtype=bool)
    kpm[2, 4:] = True
    fx, tx = fm.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    fo = ours(fx, src_key_padding_mask=fm.tensor(kpm))
    to = theirs(tx, src_key_padding_mask=torch.tensor(kpm))
    _close(fo, to, 1e-4)
    g = rng.standard_normal(to.shape).astype(np.float32)
    g[kpm] = 0  # torch's encoder leaves padded outputs unspecified in fast paths; compare real tokens
    fo.backward(fm.tensor(g))
    to.backward(torch.tensor(g))
    np.testing.assert_allclose(fx.grad.numpy(), tx.grad.numpy(), rtol=1e-3, atol=1e-4)
    for name, p in ours.named_parameters():
        np.testing.assert_allclose(
            p.grad.numpy(), dict(theirs.named_parameters())[name].grad.numpy(), rtol=1e-3, atol=1e-4, err_msg=name
        )


def test_defaults_are_sequence_first_like_torch():
    """With no batch_first argument inputs are [seq, batch, E], as in PyTorch."""
    rng = np.random.default_rng(11)
    S, N, E, H = 6, 3, 8, 2
    mha, t_mha = nn.MultiheadAttention(E, H), torch.nn.MultiheadAttention(E, H)
    layer = nn.TransformerEncoderLayer(E, H, 16, dropout=0.0)
    encoder = nn.TransformerEncoder(layer, 2)
    t_encoder = torch.nn.TransformerEncoder(
        torch.nn.TransformerEncoderLayer(E, H, 16, dropout=0.0), 2, enable_nested_tensor=False
    )
    assert mha.batch_first is False and layer.self_attn.batch_first is False
    _copy_weights(mha, t_mha)
    _copy_weights(encoder, t_encoder)
    x = rng.standard_normal((S, N, E)).astype(np.float32)
    kpm = np.zeros((N, S), dtype=bool)
    kpm[1, 4:] = True
    fx, tx, fk, tk = fm.tensor(x), torch.tensor(x), fm.tensor(kpm), torch.tensor(kpm)
    fo, fw = mha(fx, fx, fx, key_padding_mask=fk, need_weights=True)
    to, tw = t_mha(tx, tx, tx, key_padding_mask=tk, need_weights=True)
    _close(fo, to)
    _close(fw, tw)
    _close(encoder(fx, src_key_padding_mask=fk), t_encoder(tx, src_key_padding_mask=tk), 1e-4)
    _close(encoder.layers[0](fx), t_encoder.layers[0](tx), 1e-4)


@pytest.mark.parametrize("kind", ["mha", "layer", "encoder"])
def test_masked_batch_is_batch_first_whatever_the_layout(kind):
    """A MaskedBatch is [batch, time, E]: sequence-first and batch-first layers give the same result for it."""
    E, H = 8, 2

    def make(batch_first):
        fm.manual_seed(3)
        if kind == "mha":
            return nn.MultiheadAttention(E, H, batch_first=batch_first)
        layer = nn.TransformerEncoderLayer(E, H, 16, dropout=0.0, batch_first=batch_first)
        return layer if kind == "layer" else nn.TransformerEncoder(layer, 2, norm=nn.LayerNorm(E))

    seq_first, batch_first = make(False).eval(), make(True).eval()
    x = fm.tensor(np.random.default_rng(12).standard_normal((3, 5, E)).astype(np.float32))
    mask = np.zeros((3, 5), dtype=bool)
    mask[0, 3:] = True
    batch = nn.MaskedBatch(x, fm.tensor(mask))
    with fm.no_grad():
        a, b = seq_first(batch), batch_first(batch)
        want = batch_first(x, x, x, key_padding_mask=fm.tensor(mask))[0] if kind == "mha" else None
    assert isinstance(a, nn.MaskedBatch) and a.padding_mask is batch.padding_mask
    assert a.shape == (3, 5, E)
    np.testing.assert_allclose(a.data.numpy(), b.data.numpy(), rtol=1e-5, atol=1e-6)
    if want is not None:
        np.testing.assert_allclose(a.data.numpy(), want.numpy(), rtol=1e-5, atol=1e-6)


def test_positional_encoding_is_the_sinusoid_and_learned_positions_add():
    pe = nn.PositionalEncoding(6, max_len=10)
    x = fm.zeros(1, 4, 6)
    out = pe(x).numpy()[0]
    for pos in range(4):
        for i in range(3):
            assert out[pos, 2 * i] == pytest.approx(math.sin(pos / 10000 ** (2 * i / 6)), abs=1e-6)
            assert out[pos, 2 * i + 1] == pytest.approx(math.cos(pos / 10000 ** (2 * i / 6)), abs=1e-6)
    assert "pe" not in pe.state_dict()
    with pytest.raises(RuntimeError, match="exceeds max_len"):
        pe(fm.zeros(1, 11, 6))
    learned = nn.LearnedPositionalEmbedding(8, 6)
    y = learned(fm.ones(2, 5, 6))
    y.sum().backward()
    assert np.all(learned.weight.grad.numpy()[:5] == 2) and np.all(learned.weight.grad.numpy()[5:] == 0)


# ------------------------------------------------------- masks through Sequential
def _seed_stack(vocab=20, embed=8, heads=2, classes=3):
    fm.manual_seed(0)
    return nn.Sequential(
        nn.EmbeddingLayer(vocab, embed, padding_idx=0),
        nn.PositionalEncoding(embed),
        nn.MultiHeadAttention(embed, heads, batch_first=True),
        nn.LayerNorm(embed),
        nn.FeedForward(embed, 16),
        nn.TransformerEncoderLayer(embed, heads, 16, dropout=0.0, batch_first=True),
        nn.SequencePool("mean"),
        nn.Linear(embed, classes),
    )


@fm.no_grad()
def test_changing_pad_tokens_changes_no_output():
    model = _seed_stack().eval()
    ids = np.array([[3, 4, 5, 0, 0], [6, 7, 8, 9, 10]])
    mask = ids == 0
    base = model(nn.MaskedBatch(fm.tensor(ids), fm.tensor(mask))).numpy()
    noisy = ids.copy()
    noisy[0, 3:] = [17, 19]  # different tokens in the padded positions
    changed = model(nn.MaskedBatch(fm.tensor(noisy), fm.tensor(mask))).numpy()
    np.testing.assert_allclose(changed, base, rtol=1e-6, atol=1e-6)
    unmasked = model(fm.tensor(noisy)).numpy()
    assert not np.allclose(unmasked[0], base[0])  # without the mask the pads do leak in
    np.testing.assert_allclose(
        model(nn.MaskedBatch(fm.tensor(ids[1:]), fm.tensor(mask[1:]))).numpy(), base[1:], rtol=1e-5, atol=1e-6
    )


def test_sequence_pooling_modes_respect_the_mask():
    x = fm.tensor(np.arange(12, dtype=np.float32).reshape(1, 4, 3))
    mask = fm.tensor([[False, False, True, True]])
    batch = nn.MaskedBatch(x, mask)
    np.testing.assert_allclose(nn.SequencePool("mean")(batch).numpy(), [[1.5, 2.5, 3.5]])
    np.testing.assert_allclose(nn.SequencePool("max")(batch).numpy(), [[3.0, 4.0, 5.0]])
    np.testing.assert_allclose(nn.SequencePool("first")(batch).numpy(), [[0.0, 1.0, 2.0]])
    with pytest.raises(ValueError, match="does not match"):
        nn.MaskedBatch(x, fm.tensor([[False, True]]))


def test_short_training_run_learns_a_token_rule():
    """Class = whether token 5 appears anywhere: attention plus pooling must learn it."""
    rng = np.random.default_rng(8)
    ids = rng.integers(1, 20, (256, 8))
    ids[rng.random((256, 8)) < 0.2] = 0
    labels = (ids == 5).any(1).astype(np.int64)
    model = _seed_stack(classes=2)
    opt = fm.optim.AdamW(model.parameters(), lr=0.01)
    batch = nn.MaskedBatch(fm.tensor(ids), fm.tensor(ids == 0))
    for _ in range(60):
        opt.zero_grad()
        loss = F.cross_entropy(model(batch), fm.tensor(labels))
        loss.backward()
        opt.step()
    with fm.no_grad():
        accuracy = (model.eval()(batch).numpy().argmax(1) == labels).mean()
    assert accuracy > 0.9
