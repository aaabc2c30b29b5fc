"""``forgeml.onnx.export``: models traced op by op, checked by onnx.checker and run in onnxruntime.

Every exported file must pass ``onnx.checker.check_model(full_check=True)`` and give ForgeML's outputs
(eval mode) within 1e-5 in onnxruntime, at the example's sizes and at other sizes of its dynamic axes.
"""

from __future__ import annotations

import importlib.util
import io
from pathlib import Path

import numpy as np
import pytest

import forgeml as fm
from forgeml import nn
from forgeml.autograd import Function

onnx = pytest.importorskip("onnx", reason='ONNX export needs the onnx extra: pip install "forgeml[onnx]"')
ort = pytest.importorskip("onnxruntime", reason='ONNX export is checked with onnxruntime: pip install "forgeml[onnx]"')

from forgeml.onnx import ExportError, UnsupportedOperatorError, export  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TOL = 1e-5


def _example(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _export(model, example, tmp_path, **kwargs):
    """Export to a file; return (checked ModelProto, onnxruntime session)."""
    path = tmp_path / "model.onnx"
    proto = export(model, example, str(path), **kwargs)
    loaded = onnx.load(str(path))
    onnx.checker.check_model(loaded, full_check=True)
    assert loaded.SerializeToString() == proto.SerializeToString()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return loaded, session


def _forgeml(model, *inputs, **kwargs):
    """The model's outputs in eval mode, as a list of arrays (None outputs dropped)."""
    model.eval()
    with fm.no_grad():
        out = model(*inputs, **kwargs)
    outs = out if isinstance(out, tuple) else (out,)
    arrays = []
    for o in outs:
        if isinstance(o, nn.MaskedBatch):
            arrays += [o.data.numpy(), o.padding_mask.numpy()]
        elif o is not None:
            arrays.append(o.numpy())
    return arrays


def _close(got, want):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.dtype == w.dtype
        np.testing.assert_allclose(g, w, rtol=TOL, atol=TOL)


def _floats(rng, *shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def _padded(rng, batch, length, vocab):
    """Token ids with random lengths (the first row full), 0 at padding, and the padding mask."""
    lengths = rng.integers(1, length + 1, batch)
    lengths[0] = length
    mask = np.arange(length)[None, :] >= lengths[:, None]
    ids = rng.integers(1, vocab, (batch, length)).astype(np.int64)
    ids[mask] = 0
    return ids, mask


def _dims(value_info):
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


# ---------------------------------------------------------------- the seed's models
def test_seed_mlp_exports_with_a_dynamic_batch(tmp_path, rng):
    model = _example("mnist_mlp").build_model()
    model.train()
    x = _floats(rng, 2, 784)
    proto, session = _export(
        model,
        (fm.from_numpy(x),),
        tmp_path,
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
    )
    assert model.training and all(m.training for m in model.modules())  # its modes are restored
    assert all(type(p._data) is np.ndarray for p in model.parameters())
    assert [i.name for i in proto.graph.input] == ["input"]
    assert _dims(proto.graph.input[0]) == ["batch", 784] and _dims(proto.graph.output[0]) == ["batch", 10]
    assert {n.op_type for n in proto.graph.node} == {"Gemm", "Relu"}  # Dropout is the identity in eval
    assert {i.name for i in proto.graph.initializer} == {f"{k}.{p}" for k in (0, 3, 6) for p in ("weight", "bias")}
    for batch in (2, 7, 1):
        x = _floats(rng, batch, 784)
        _close(session.run(None, {"input": x}), _forgeml(model, fm.from_numpy(x)))


def _cnn():
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(4, 6, 3, stride=1, padding=1, bias=False),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.MaxPool2d(2, ceil_mode=True),
        nn.Flatten(),
        nn.Linear(6 * 4 * 4, 10),
    )
    model.train()
    with fm.no_grad():  # a few training batches give the running statistics values of their own
        for seed in range(3):
            model(fm.from_numpy(_floats(np.random.default_rng(seed), 8, 1, 14, 14, scale=2.0) + 0.5))
    return model


def test_cnn_with_batch_norm_in_eval_exports(tmp_path, rng):
    model = _cnn()
    proto, session = _export(model, fm.from_numpy(_floats(rng, 2, 1, 14, 14)), tmp_path, dynamic_axes={"input": [0]})
    ops = {n.op_type for n in proto.graph.node}
    assert {"Conv", "BatchNormalization", "MaxPool", "Relu", "Gemm"} <= ops
    assert _dims(proto.graph.input[0]) == ["input_dynamic_axes_1", 1, 14, 14]
    for batch in (2, 5):
        x = _floats(rng, batch, 1, 14, 14)
        _close(session.run(None, {"input": x}), _forgeml(model, fm.from_numpy(x)))


def test_pooling_and_padding_layers(tmp_path, rng):
    class Pools(nn.Module):
        def __init__(self):
            super().__init__()
            self.avg = nn.AvgPool2d(3, stride=2, padding=1, ceil_mode=True, count_include_pad=False)
            self.adaptive = nn.AdaptiveAvgPool2d((3, 2))
            self.max = nn.MaxPool2d(3, stride=2, padding=1, return_indices=True)

        def forward(self, x):
            values, indices = self.max(x)
            padded = nn.functional.conv2d(x, fm.ones(2, 2, 1, 1), padding="same")
            return self.avg(x), self.adaptive(x), values, indices, nn.AdaptiveAvgPool2d(1)(padded)

    model = Pools()
    _, session = _export(model, fm.from_numpy(_floats(rng, 2, 2, 7, 9)), tmp_path, dynamic_axes={"input": [0]})
    x = _floats(rng, 3, 2, 7, 9)
    _close(session.run(None, {"input": x}), _forgeml(model, fm.from_numpy(x)))


def test_spam_transformer_with_padded_batches_of_different_lengths(tmp_path):
    rng = np.random.default_rng(7)
    model = _example("text_transformer").build_transformer(100)
    ids, mask = _padded(rng, 2, 8, 100)
    axes = {"batch": 0, "sequence": 1}
    proto, session = _export(
        model,
        (nn.MaskedBatch(fm.from_numpy(ids), fm.from_numpy(mask)),),
        tmp_path,
        input_names=["ids", "padding_mask"],
        output_names=["logits"],
        dynamic_axes={
            "ids": {v: k for k, v in axes.items()},
            "padding_mask": {v: k for k, v in axes.items()},
            "logits": {0: "batch"},
        },
    )
    assert [_dims(i) for i in proto.graph.input] == [["batch", "sequence"]] * 2
    assert _dims(proto.graph.output[0]) == ["batch", 2]
    assert proto.graph.input[1].type.tensor_type.elem_type == onnx.TensorProto.BOOL
    for batch, length in ((2, 8), (5, 13), (1, 3), (3, 40)):
        ids, mask = _padded(rng, batch, length, 100)
        want = _forgeml(model, nn.MaskedBatch(fm.from_numpy(ids), fm.from_numpy(mask)))
        _close(session.run(None, {"ids": ids, "padding_mask": mask}), want)


# ---------------------------------------------------------------- layers one by one
ACTIVATIONS = [
    nn.ReLU(),
    nn.LeakyReLU(0.1),
    nn.ELU(0.7),
    nn.GELU(),
    nn.GELU("tanh"),
    nn.SiLU(),
    nn.Sigmoid(),
    nn.Tanh(),
    nn.Softplus(beta=2.0, threshold=5.0),
    nn.Softmax(dim=-1),
    nn.LogSoftmax(dim=1),
]


@pytest.mark.parametrize("layer", ACTIVATIONS, ids=lambda m: type(m).__name__ + repr(m.extra_repr()))
def test_each_activation(layer, tmp_path, rng):
    x = _floats(rng, 3, 9, scale=4.0)
    proto, session = _export(layer, fm.from_numpy(x), tmp_path, dynamic_axes={"input": {0: "n", 1: "features"}})
    assert _dims(proto.graph.output[0]) == ["n", "features"]
    for shape in ((3, 9), (4, 5)):
        x = _floats(rng, *shape, scale=4.0)
        _close(session.run(None, {"input": x}), _forgeml(layer, fm.from_numpy(x)))


@pytest.mark.parametrize(
    "layer",
    [nn.LayerNorm(6), nn.LayerNorm((3, 6), elementwise_affine=False), nn.RMSNorm(6), nn.RMSNorm(6, eps=1e-4)],
    ids=["LayerNorm", "LayerNorm-2d-plain", "RMSNorm", "RMSNorm-eps"],
)
def test_normalization_layers(layer, tmp_path, rng):
    if getattr(layer, "weight", None) is not None:
        layer.weight._data[:] = rng.uniform(0.5, 1.5, layer.weight.shape)
    if getattr(layer, "bias", None) is not None:
        layer.bias._data[:] = rng.standard_normal(layer.bias.shape)
    x = _floats(rng, 2, 3, 6, scale=3.0) + 1.0
    _, session = _export(layer, fm.from_numpy(x), tmp_path, dynamic_axes={"input": [0]})
    x = _floats(rng, 5, 3, 6, scale=3.0) + 1.0
    _close(session.run(None, {"input": x}), _forgeml(layer, fm.from_numpy(x)))


def test_embedding_with_a_masked_batch_carries_the_mask(tmp_path, rng):
    layer = nn.Embedding(20, 4, padding_idx=0)
    ids, mask = _padded(rng, 2, 5, 20)
    proto, session = _export(
        layer,
        nn.MaskedBatch(fm.from_numpy(ids), fm.from_numpy(mask)),
        tmp_path,
        input_names=["ids", "mask"],
        output_names=["vectors", "out_mask"],
        dynamic_axes={"ids": {0: "b", 1: "t"}, "mask": {0: "b", 1: "t"}},
    )
    assert [o.name for o in proto.graph.output] == ["vectors", "out_mask"]
    assert _dims(proto.graph.output[0]) == ["b", "t", 4]  # named after the inputs' axes
    ids, mask = _padded(rng, 3, 7, 20)
    want = _forgeml(layer, nn.MaskedBatch(fm.from_numpy(ids), fm.from_numpy(mask)))
    _close(session.run(None, {"ids": ids, "mask": mask}), want)


def test_multihead_attention_with_a_key_padding_mask(tmp_path, rng):
    mha = nn.MultiHeadAttention(8, 2, batch_first=True)
    with fm.no_grad():
        mha.in_proj_bias._data[:] = rng.standard_normal(24) * 0.1
    x = _floats(rng, 2, 5, 8)
    mask = np.zeros((2, 5), bool)
    mask[1, 3:] = True
    axes = {0: "b", 1: "t"}
    _, session = _export(
        mha,
        (fm.from_numpy(x), fm.from_numpy(x), fm.from_numpy(x), {"key_padding_mask": fm.from_numpy(mask)}),
        tmp_path,
        input_names=["query", "key", "value", "key_padding_mask"],
        dynamic_axes={"query": axes, "key": axes, "value": axes, "key_padding_mask": axes},
    )
    q, k = _floats(rng, 3, 6, 8), _floats(rng, 3, 6, 8)
    mask = np.zeros((3, 6), bool)
    mask[1, 2:] = True
    mask[2, :] = True  # a row with every key masked gives zeros, as in ForgeML
    want = _forgeml(mha, fm.from_numpy(q), fm.from_numpy(k), fm.from_numpy(k), key_padding_mask=fm.from_numpy(mask))
    got = session.run(None, {"query": q, "key": k, "value": k, "key_padding_mask": mask})
    _close(got, want)


@pytest.mark.parametrize("mode", ["mean", "max", "first"])
def test_sequence_pool(mode, tmp_path, rng):
    pool = nn.SequencePool(mode)
    x = _floats(rng, 2, 6, 3)
    mask = np.zeros((2, 6), bool)
    mask[0, 4:] = True
    axes = {0: "b", 1: "t"}
    _, session = _export(
        pool,
        nn.MaskedBatch(fm.from_numpy(x), fm.from_numpy(mask)),
        tmp_path,
        input_names=["x", "mask"],
        dynamic_axes={"x": axes, "mask": axes},
    )
    x = _floats(rng, 4, 9, 3)
    _, mask = _padded(rng, 4, 9, 5)
    _close(
        session.run(None, {"x": x, "mask": mask}), _forgeml(pool, nn.MaskedBatch(fm.from_numpy(x), fm.from_numpy(mask)))
    )


def test_transformer_encoder_norm_first_and_a_final_norm(tmp_path, rng):
    layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.1, activation="relu", norm_first=True, batch_first=True)
    encoder = nn.TransformerEncoder(layer, 2, norm=nn.LayerNorm(8))
    x = _floats(rng, 2, 4, 8)
    mask = np.zeros((2, 4), bool)
    mask[1, 2:] = True
    axes = {0: "b", 1: "t"}
    _, session = _export(
        encoder,
        nn.MaskedBatch(fm.from_numpy(x), fm.from_numpy(mask)),
        tmp_path,
        input_names=["x", "mask"],
        dynamic_axes={"x": axes, "mask": axes},
    )
    x = _floats(rng, 3, 7, 8)
    _, mask = _padded(rng, 3, 7, 5)
    want = _forgeml(encoder, nn.MaskedBatch(fm.from_numpy(x), fm.from_numpy(mask)))
    _close(session.run(None, {"x": x, "mask": mask}), want)


# ---------------------------------------------------------------- user modules and errors
class HandWritten(nn.Module):
    """Supported ops composed by hand: the exporter knows ops, not layer types."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(fm.tensor([0.5, -1.0, 2.0]))

    def forward(self, x):
        y = x * fm.sigmoid(x) + fm.exp(x * 0.1) * self.scale
        b, t, f = y.shape
        z = y.reshape(b, t * f).unsqueeze(1).transpose(1, 2)  # [b, t*f, 1]
        z = (z - z.mean(dim=1, keepdim=True)).clamp(min=-1.5) ** 2
        gate = (x > 0).float().sum(dim=-1, keepdim=True)
        return fm.cat([z.squeeze(-1), y[:, -1], gate[:, 0] / 3], dim=1), y.amax(1)


def test_a_user_module_of_supported_ops_exports(tmp_path, rng):
    model = HandWritten()
    x = _floats(rng, 2, 4, 3)
    proto, session = _export(
        model, fm.from_numpy(x), tmp_path, output_names=["features", "peaks"], dynamic_axes={"input": {0: "b", 1: "t"}}
    )
    assert _dims(proto.graph.output[1]) == ["b", 3]
    for shape in ((2, 4, 3), (5, 7, 3)):
        x = _floats(rng, *shape)
        _close(session.run(None, {"input": x}), _forgeml(model, fm.from_numpy(x)))


class Lookups(nn.Module):
    """Indexing ops, and an index made by NumPy code outside ops (argmax through numpy.asarray)."""

    def forward(self, x):
        best = x.argmax(-1)  # [b, t]
        values, where = x.max(1)
        picked = x.gather(2, best.unsqueeze(-1)).squeeze(-1)
        rows = x[x[:, :, 0] > 0]  # a boolean mask over the leading dims
        kept = x.masked_fill(x < -0.5, 0.0).index_select(2, fm.tensor([2, 0]))
        return best, values, where, picked + 1, rows.sum(0), kept


def test_indexing_ops_and_argmax(tmp_path, rng):
    model = Lookups()
    x = _floats(rng, 2, 5, 3)
    x[0, 0, 0] = 1.0  # at least one row kept by the mask
    _, session = _export(model, fm.from_numpy(x), tmp_path, dynamic_axes={"input": {0: "b", 1: "t"}})
    for shape in ((2, 5, 3), (4, 9, 3)):
        x = _floats(rng, *shape)
        _close(session.run(None, {"input": x}), _forgeml(model, fm.from_numpy(x)))


def test_causal_attention_follows_the_sequence_length(tmp_path, rng):
    layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True)

    class Causal(nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = layer

        def forward(self, x):
            return self.layer(x, is_causal=True)

    model = Causal()
    _, session = _export(model, fm.from_numpy(_floats(rng, 2, 5, 8)), tmp_path, dynamic_axes={"input": [0, 1]})
    for shape in ((2, 5, 8), (3, 11, 8)):
        x = _floats(rng, *shape)
        _close(session.run(None, {"input": x}), _forgeml(model, fm.from_numpy(x)))


class Cumsum(Function):
    """A user's op with no ONNX form."""

    @staticmethod
    def forward(ctx, x):
        return fm.tensor(np.cumsum(x.numpy(), axis=-1))

    @staticmethod
    def backward(ctx, g):
        return g


class Inner(nn.Module):
    def forward(self, x):
        return Cumsum.apply(x) + 1


def test_an_op_without_an_onnx_form_names_the_op_and_its_module(tmp_path):
    model = nn.Sequential(nn.Linear(3, 3), nn.Sequential(nn.ReLU(), Inner()))
    model.train()
    with pytest.raises(UnsupportedOperatorError) as info:
        export(model, fm.randn(2, 3), str(tmp_path / "m.onnx"))
    message = str(info.value)
    assert "op Cumsum" in message and "test_export.Cumsum" in message
    assert "in module '1.1' (Inner)" in message and "has no ONNX form" in message
    assert not (tmp_path / "m.onnx").exists()
    assert model.training and all(type(p._data) is np.ndarray for p in model.parameters())
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_a_size_frozen_outside_ops_is_refused_with_dynamic_axes(tmp_path):
    class Frozen(nn.Module):
        def forward(self, x):
            return x + fm.zeros(x.shape[0], 1)  # a tensor built from the batch size as a plain number

    with pytest.raises(ExportError, match="fails when the dynamic axes change size"):
        export(Frozen(), fm.randn(2, 3), io.BytesIO(), dynamic_axes={"input": [0]})
    exported = export(Frozen(), fm.randn(2, 3), io.BytesIO())  # without dynamic axes the size is fixed: fine
    assert _dims(exported.graph.input[0]) == [2, 3]


def test_file_objects_default_names_and_bad_arguments():
    model = nn.Sequential(nn.Linear(3, 2), nn.Softmax(-1))
    buffer = io.BytesIO()
    proto = export(model, (fm.randn(4, 3), {}), buffer)
    assert buffer.getvalue() == proto.SerializeToString()
    assert [i.name for i in proto.graph.input] == ["input"] and [o.name for o in proto.graph.output] == ["output"]
    assert proto.opset_import[0].version == 17
    named = export(model, fm.randn(4, 3), io.BytesIO(), input_names=["0.weight"], output_names=["linear"])
    assert [i.name for i in named.graph.input] == ["0.weight"] and [o.name for o in named.graph.output] == ["linear"]
    with pytest.raises(ValueError, match="opset_version"):
        export(model, fm.randn(4, 3), io.BytesIO(), opset_version=13)
    with pytest.raises(ValueError, match="neither input nor output"):
        export(model, fm.randn(4, 3), io.BytesIO(), dynamic_axes={"x": [0]})
    with pytest.raises(ValueError, match="input_names"):
        export(model, fm.randn(4, 3), io.BytesIO(), input_names=["a", "b"])


def test_a_later_opset_writes_reduction_axes_as_inputs(tmp_path, rng):
    model = nn.RMSNorm(4)
    x = _floats(rng, 3, 4)
    proto, session = _export(model, fm.from_numpy(x), tmp_path, opset_version=18, dynamic_axes={"input": [0]})
    assert proto.opset_import[0].version == 18
    x = _floats(rng, 6, 4)
    _close(session.run(None, {"input": x}), _forgeml(model, fm.from_numpy(x)))
