"""nn.build and nn.to_spec: ModelSpec <-> Sequential, round trips, errors, and weights shared with torch."""

import json
import subprocess
import sys
from collections import OrderedDict

import numpy as np
import pytest

import forgeml as fm
from forgeml import nn
from forgeml.specs import LAYER_ARGUMENTS, SEQUENCE_LAYERS, ModelSpec

torch = pytest.importorskip("torch")

MNIST_MLP = {
    "name": "mnist-mlp",
    "input_shape": [784],
    "layers": [
        {"type": "Linear", "args": {"in_features": 784, "out_features": 512}},
        {"type": "ReLU"},
        {"type": "Dropout", "args": {"p": 0.2}},
        {"type": "Linear", "args": {"in_features": 512, "out_features": 256}},
        {"type": "ReLU"},
        {"type": "Dropout", "args": {"p": 0.2}},
        {"type": "Linear", "args": {"in_features": 256, "out_features": 10}},
    ],
}

SMALL_CNN = {
    "input_shape": [1, 28, 28],
    "layers": [
        {"type": "Conv2d", "args": {"in_channels": 1, "out_channels": 4, "kernel_size": [3, 3], "padding": [1, 1]}},
        {"type": "ReLU"},
        {"type": "MaxPool2d", "args": {"kernel_size": 2}},
        {"type": "Conv2d", "args": {"in_channels": 4, "out_channels": 8, "kernel_size": [3, 3]}},
        {"type": "ReLU"},
        {"type": "MaxPool2d", "args": {"kernel_size": [2, 2]}},
        {"type": "Flatten"},
        {"type": "Linear", "args": {"in_features": 8 * 6 * 6, "out_features": 10}},
    ],
}

# Every supported layer type, each with arguments other than its defaults, in a model that runs on [3, 16, 16].
EVERY_LAYER = {
    "name": "every-layer",
    "input_shape": [3, 16, 16],
    "layers": [
        {
            "type": "Conv2d",
            "args": {
                "in_channels": 3,
                "out_channels": 6,
                "kernel_size": [3, 3],
                "stride": [2, 1],
                "padding": [1, 2],
                "dilation": [1, 2],
                "groups": 3,
                "bias": False,
                "padding_mode": "reflect",
            },
        },
        {"type": "BatchNorm2d", "args": {"num_features": 6, "eps": 0.001, "momentum": None}},
        {"type": "LeakyReLU", "args": {"negative_slope": 0.2, "inplace": True}},
        {
            "type": "MaxPool2d",
            "args": {"kernel_size": [2, 2], "stride": [2, 1], "padding": [1, 0], "dilation": [1, 2], "ceil_mode": True},
        },
        {
            "type": "AvgPool2d",
            "args": {"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True, "count_include_pad": False},
        },
        {"type": "AdaptiveAvgPool2d", "args": {"output_size": [2, 4]}},
        {"type": "Flatten", "args": {"start_dim": 2}},
        {"type": "Unflatten", "args": {"dim": 2, "unflattened_size": [2, 4]}},
        {"type": "Flatten", "args": {"end_dim": 3}},
        {"type": "Linear", "args": {"in_features": 48, "out_features": 16, "bias": False}},
        {
            "type": "BatchNorm1d",
            "args": {"num_features": 16, "momentum": 0.2, "affine": False, "track_running_stats": False},
        },
        {"type": "ELU", "args": {"alpha": 0.5}},
        {"type": "GELU", "args": {"approximate": "tanh"}},
        {"type": "SiLU", "args": {"inplace": True}},
        {"type": "Softplus", "args": {"beta": 2, "threshold": 10.0}},
        {"type": "Sigmoid"},
        {"type": "Tanh"},
        {"type": "Dropout", "args": {"p": 0.25}},
        {"type": "Identity"},
        {"type": "ReLU", "args": {"inplace": True}},
        {"type": "Linear", "args": {"in_features": 16, "out_features": 5}},
        {"type": "Softmax", "args": {"dim": 1}},
        {"type": "LogSoftmax", "args": {"dim": -1}},
    ],
}


def mnist_sequential():
    """The seed's MNIST MLP written by hand (as examples/mnist_mlp.py builds it)."""
    return nn.Sequential(
        nn.Linear(784, 512),
        nn.ReLU(),
        nn.Dropout(0.2),
        nn.Linear(512, 256),
        nn.ReLU(),
        nn.Dropout(0.2),
        nn.Linear(256, 10),
    )


# ------------------------------------------------------------------- build
def test_build_mnist_mlp_from_dict():
    model = nn.build(MNIST_MLP)
    assert type(model) is nn.Sequential
    assert [name for name, _ in model.named_children()] == [str(i) for i in range(7)]
    assert model.num_parameters() == 535_818
    assert repr(model) == repr(mnist_sequential())
    out = model(fm.randn(3, 784))
    assert out.shape == (3, 10)


def test_build_from_json_and_from_model_spec():
    text = json.dumps(MNIST_MLP)
    from_json = nn.build(text)
    from_spec = nn.build(ModelSpec.model_validate(MNIST_MLP))
    assert repr(from_json) == repr(from_spec) == repr(mnist_sequential())
    assert from_json.num_parameters() == from_spec.num_parameters() == 535_818


def test_build_small_cnn_runs_with_the_predicted_output_shape():
    spec = ModelSpec.model_validate(SMALL_CNN)
    model = nn.build(spec)
    assert isinstance(model[0], nn.Conv2d) and model[0].kernel_size == (3, 3) and model[0].padding == (1, 1)
    assert model[5].kernel_size == (2, 2)  # a JSON list becomes the tuple the constructor expects
    out = model(fm.randn(2, 1, 28, 28))
    assert spec.output_shape() == (10,)
    assert out.shape == (2, *spec.output_shape())


def test_build_every_layer_type_and_run_it():
    spec = ModelSpec.model_validate(EVERY_LAYER)
    assert {layer.type for layer in spec.layers} == set(LAYER_ARGUMENTS) - SEQUENCE_LAYERS
    model = nn.build(spec)
    assert [type(m).__name__ for m in model] == [layer.type for layer in spec.layers]
    assert model[7].unflattened_size == (2, 4)
    assert model[5].output_size == (2, 4)
    for mode in (True, False):
        model.train(mode)
        out = model(fm.randn(2, 3, 16, 16))
        assert out.shape == (2, *spec.output_shape()) == (2, 5)


def test_build_does_not_need_input_shape():
    spec = {"layers": [{"type": "Linear", "args": {"in_features": 4, "out_features": 2}}, {"type": "Tanh"}]}
    model = nn.build(spec)
    assert model(fm.randn(5, 4)).shape == (5, 2)


# -------------------------------------------------------------- round trips
@pytest.mark.parametrize("spec", [MNIST_MLP, SMALL_CNN, EVERY_LAYER], ids=["mlp", "cnn", "every-layer"])
def test_spec_round_trip(spec):
    spec = ModelSpec.model_validate(spec)
    back = nn.to_spec(nn.build(spec), input_shape=spec.input_shape, name=spec.name)
    assert back == spec
    assert ModelSpec.model_validate_json(back.model_dump_json()) == spec
    assert nn.build(spec).to_spec(spec.input_shape, name=spec.name) == spec  # the Module method


def test_module_round_trip_keeps_the_structure():
    model = nn.Sequential(
        OrderedDict(
            features=nn.Sequential(
                nn.Conv2d(1, 8, 3, padding=1),
                nn.BatchNorm2d(8),
                nn.ReLU(),
                nn.MaxPool2d(2),
                nn.Conv2d(8, 4, (3, 5), stride=2, bias=False),
                nn.AvgPool2d(2, stride=1),
                nn.AdaptiveAvgPool2d(3),
            ),
            head=nn.Sequential(nn.Flatten(), nn.Dropout(), nn.Linear(36, 10), nn.LogSoftmax(dim=1)),
        )
    )
    spec = model.to_spec([1, 28, 28])
    flat = nn.Sequential(*model.features, *model.head)
    rebuilt = nn.build(spec)
    assert repr(rebuilt) == repr(flat)
    assert rebuilt.num_parameters() == model.num_parameters()
    assert rebuilt(fm.randn(2, 1, 28, 28)).shape == (2, 10)
    assert spec.output_shape() == (10,)
    assert nn.to_spec(rebuilt, [1, 28, 28]) == spec


def test_to_spec_skips_defaults_but_keeps_required_arguments():
    model = nn.Sequential(
        nn.Linear(4, 3), nn.ReLU(), nn.Dropout(), nn.Linear(3, 2, bias=False), nn.MaxPool2d(2), nn.Softmax()
    )
    spec = nn.to_spec(model)
    assert [layer.args for layer in spec.layers] == [
        {"in_features": 4, "out_features": 3},
        {},
        {},
        {"in_features": 3, "out_features": 2, "bias": False},
        {"kernel_size": 2},
        {},
    ]
    assert spec.input_shape is None and spec.name is None
    conv = nn.to_spec(nn.Conv2d(2, 4, 3, stride=1, padding=0, dilation=1))  # a single layer
    assert [layer.type for layer in conv.layers] == ["Conv2d"]
    assert conv.layers[0].args == {"in_channels": 2, "out_channels": 4, "kernel_size": [3, 3]}


def test_to_spec_writes_plain_json_values():
    model = nn.Sequential(nn.Unflatten(1, (2, 3)), nn.Flatten(), nn.Linear(np.int64(6), 2))
    spec = nn.to_spec(model, input_shape=(6,), name="plain")
    assert spec.layers[0].args == {"dim": 1, "unflattened_size": [2, 3]}
    assert type(spec.layers[2].args["in_features"]) is int
    assert json.loads(spec.model_dump_json())["layers"][0]["args"]["unflattened_size"] == [2, 3]
    assert spec.input_shape == [6] and spec.name == "plain"


# -------------------------------------------------------------------- errors
def test_unknown_layer_type():
    with pytest.raises(ValueError, match=r"unknown layer type 'Conv3d'.*Linear"):
        nn.build({"layers": [{"type": "Conv3d", "args": {"in_channels": 1}}]})


def test_missing_required_argument():
    with pytest.raises(ValueError, match=r"Linear is missing required arguments \['out_features'\]"):
        nn.build({"layers": [{"type": "Linear", "args": {"in_features": 3}}]})


def test_unexpected_argument_and_bad_json():
    with pytest.raises(ValueError, match=r"unexpected arguments \['bias'\]"):
        nn.build('{"layers": [{"type": "ReLU", "args": {"bias": true}}]}')
    with pytest.raises(ValueError, match="Invalid JSON"):
        nn.build('{"layers": [')
    with pytest.raises(TypeError, match="ModelSpec, a dict or a JSON string, got list"):
        nn.build(MNIST_MLP["layers"])


def test_shape_mismatch_names_the_layer():
    spec = json.loads(json.dumps(MNIST_MLP))
    spec["layers"][3]["args"]["in_features"] = 500
    with pytest.raises(ValueError, match=r"input_shape \[784\].*layer 3 \(Linear\) expects 500 input features"):
        nn.build(spec)
    cnn = json.loads(json.dumps(SMALL_CNN))
    cnn["input_shape"] = [3, 28, 28]
    with pytest.raises(ValueError, match=r"layer 0 \(Conv2d\) expects \[1, H, W\]"):
        nn.build(cnn)


def test_constructor_errors_name_the_layer():
    spec = {
        "layers": [
            {"type": "Identity"},
            {"type": "Conv2d", "args": {"in_channels": 3, "out_channels": 4, "kernel_size": 3, "groups": 2}},
        ]
    }
    with pytest.raises(ValueError, match=r"layer 1 \(Conv2d\): in_channels must be divisible by groups"):
        nn.build(spec)


class Custom(nn.Module):
    def forward(self, x):
        return x * 2


class MyLinear(nn.Linear):
    pass


class Residual(nn.Sequential):
    def forward(self, x):
        return x + super().forward(x)


@pytest.mark.parametrize(
    ("module", "name"),
    [
        (Custom(), "Custom"),
        (nn.TransformerEncoder(nn.TransformerEncoderLayer(8, 2, 16), 1), "TransformerEncoder"),
        (MyLinear(2, 3), "MyLinear"),
        (Residual(nn.Linear(3, 3)), "Residual"),
        (nn.ModuleList([nn.ReLU()]), "ModuleList"),
    ],
)
def test_to_spec_rejects_unsupported_modules(module, name):
    model = nn.Sequential(nn.Linear(3, 3), nn.Sequential(nn.ReLU(), module))
    with pytest.raises(TypeError, match=rf"cannot describe {name} at '1\.1'.*Conv2d.*Linear"):
        nn.to_spec(model)
    with pytest.raises(TypeError, match=rf"cannot describe {name}\b"):
        module.to_spec()
    with pytest.raises(TypeError, match=r"expects an nn\.Module, got dict"):
        nn.to_spec(MNIST_MLP)


@pytest.mark.parametrize(
    ("layer", "what"),
    [
        (nn.BatchNorm1d(4, bias=False), "bias=False"),
        (nn.MaxPool2d(2, return_indices=True), "return_indices=True"),
        (nn.AvgPool2d(2, divisor_override=3), "divisor_override=3"),
    ],
)
def test_to_spec_rejects_settings_a_spec_cannot_hold(layer, what):
    with pytest.raises(ValueError, match=rf"no way to say {what}"):
        nn.to_spec(nn.Sequential(layer))


def test_to_spec_checks_input_shape_and_emptiness():
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    assert nn.to_spec(model, input_shape=[1, 28, 28]).output_shape() == (10,)
    with pytest.raises(ValueError, match=r"layer 1 \(Linear\) expects 784 input features, but receives shape \[12\]"):
        nn.to_spec(model, input_shape=[3, 4])
    with pytest.raises(ValueError, match="empty Sequential"):
        nn.to_spec(nn.Sequential())


def test_import_forgeml_nn_does_not_import_pydantic():
    code = "import sys, forgeml.nn as nn; assert nn.build and 'pydantic' not in sys.modules, sorted(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True)


# ------------------------------------------------------------ torch interop
def torch_build(spec):
    """The same architecture built with torch.nn, from the spec's layer types and arguments."""

    def tuples(v):
        return tuple(tuples(x) for x in v) if isinstance(v, list) else v

    layers = [getattr(torch.nn, layer.type)(**{k: tuples(v) for k, v in layer.args.items()}) for layer in spec.layers]
    return torch.nn.Sequential(*layers)


@pytest.mark.parametrize("spec", [MNIST_MLP, SMALL_CNN, EVERY_LAYER], ids=["mlp", "cnn", "every-layer"])
def test_state_dict_loads_into_torch_and_gives_the_same_outputs(spec):
    spec = ModelSpec.model_validate(spec)
    ours, theirs = nn.build(spec), torch_build(spec)
    state = ours.state_dict()
    assert list(state) == list(theirs.state_dict())
    theirs.load_state_dict({k: torch.from_numpy(np.array(v.numpy())) for k, v in state.items()})
    ours.eval()
    theirs.eval()
    x = np.random.default_rng(0).standard_normal((2, *spec.input_shape)).astype(np.float32)
    with torch.no_grad():
        expected = theirs(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(ours(fm.tensor(x)).detach().numpy(), expected, rtol=1e-4, atol=1e-5)


def test_build_the_text_stack_and_describe_what_can_be_described():
    spec = ModelSpec(
        input_shape=[16],
        layers=[
            {"type": "Embedding", "args": {"num_embeddings": 50, "embedding_dim": 8, "padding_idx": 0}},
            {"type": "PositionalEncoding", "args": {"d_model": 8, "max_len": 64}},
            {"type": "MultiHeadAttention", "args": {"embed_dim": 8, "num_heads": 2}},
            {"type": "LayerNorm", "args": {"normalized_shape": 8}},
            {"type": "FeedForward", "args": {"embed_dim": 8, "hidden_dim": 16}},
            {
                "type": "TransformerEncoderLayer",
                "args": {"d_model": 8, "nhead": 2, "dim_feedforward": 16, "dropout": 0.0},
            },
            {"type": "SequencePool", "args": {"mode": "mean"}},
            {"type": "Linear", "args": {"in_features": 8, "out_features": 3}},
        ],
    )
    assert spec.output_shape() == (3,)
    model = nn.build(spec).eval()
    ids = fm.tensor([[1, 2, 3] + [0] * 13, [4] * 16])
    out = model(nn.MaskedBatch(ids, ids == 0))
    assert out.shape == (2, 3)
    # the attention layers are batch-first (PyTorch's default is not): a plain [batch, time] tensor
    # gives what a MaskedBatch without padding gives
    assert model[2].batch_first and model[5].self_attn.batch_first
    full = fm.tensor([[1, 2, 3] * 5 + [7], [4] * 16])
    with fm.no_grad():
        np.testing.assert_allclose(model(full).numpy(), model(nn.MaskedBatch(full)).numpy(), rtol=1e-5, atol=1e-6)
    small = nn.Sequential(
        nn.Embedding(50, 8, padding_idx=0), nn.LayerNorm(8), nn.SequencePool("first"), nn.Linear(8, 2)
    )
    assert [layer.type for layer in small.to_spec().layers] == ["Embedding", "LayerNorm", "SequencePool", "Linear"]
    with pytest.raises(TypeError, match="sub-modules"):
        model.to_spec()
    with pytest.raises(ValueError, match="expects token ids"):
        ModelSpec(input_shape=[4, 4], layers=spec.layers).output_shape()
