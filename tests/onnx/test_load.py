"""``forgeml.onnx.load``: graphs exported by PyTorch load, match PyTorch's outputs, and fine-tune."""

import warnings

import numpy as np
import pytest

import forgeml as fm
import forgeml.onnx
from forgeml.onnx.load import SUPPORTED_OPS, OnnxImportError, OnnxModule, UnsupportedOnnxOpsError

onnx = pytest.importorskip("onnx", reason='ONNX import needs onnx: pip install "forgeml[onnx]"')
torch = pytest.importorskip("torch")
from onnx import TensorProto, helper  # noqa: E402


def export(model, args, path, **kwargs):
    """``torch.onnx.export`` with the TorchScript exporter (the dynamo one needs onnxscript)."""
    model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, args, str(path), dynamo=False, **kwargs)
    return path


def randomize(model, seed=0):
    """Distinct random values in every parameter and buffer (the exporter merges initializers that are equal)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in list(model.named_parameters()) + list(model.named_buffers()):
            if t.is_floating_point():
                if name.endswith("running_var"):
                    t.copy_(torch.rand(t.shape, generator=g) + 0.5)
                else:
                    t.copy_(torch.randn(t.shape, generator=g) * 0.3)
    return model


def ours(t):
    return t.detach().numpy()


class MLP(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = torch.nn.Linear(8, 16), torch.nn.Linear(16, 16), torch.nn.Linear(16, 4)

    def forward(self, x):
        h = torch.relu(self.fc1(x))
        h = torch.tanh(self.fc2(h)) + torch.sigmoid(h)
        return torch.nn.functional.gelu(self.fc3(h))


def small_cnn():
    nn = torch.nn
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 8, 3, stride=2, padding=1, dilation=1, groups=2),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=2, dilation=2),
        nn.AvgPool2d(2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 5),
    )


class Encoder(torch.nn.Module):
    def __init__(self, activation="relu"):
        super().__init__()
        layer = torch.nn.TransformerEncoderLayer(
            32, 4, dim_feedforward=64, dropout=0.1, activation=activation, batch_first=True
        )
        self.encoder = torch.nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)

    def forward(self, x, mask):
        return self.encoder(x, src_key_padding_mask=mask)


def encoder_inputs():
    x = torch.randn(2, 5, 32, generator=torch.Generator().manual_seed(1))
    mask = torch.zeros(2, 5, dtype=torch.bool)
    mask[1, 3:] = True
    return x, mask


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The three PyTorch models, exported once: name -> (torch model, torch inputs, path)."""
    root = tmp_path_factory.mktemp("onnx")
    torch.manual_seed(0)
    models = {}
    mlp = randomize(MLP())
    x = torch.randn(3, 8, generator=torch.Generator().manual_seed(2))
    models["mlp"] = (mlp, (x,), export(mlp, (x,), root / "mlp.onnx", input_names=["x"]))
    cnn = randomize(small_cnn())
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    # Without constant folding the exporter keeps BatchNormalization (with folding it merges it into the Conv).
    path = export(cnn, (x,), root / "cnn.onnx", input_names=["image"], do_constant_folding=False)
    models["cnn"] = (cnn, (x,), path)
    cnn_folded = export(cnn, (x,), root / "cnn_folded.onnx", input_names=["image"])
    models["cnn_folded"] = (cnn, (x,), cnn_folded)
    for activation in ("relu", "gelu"):
        enc = randomize(Encoder(activation), seed=4)
        args = encoder_inputs()
        path = export(enc, args, root / f"encoder_{activation}.onnx", input_names=["src", "mask"])
        models[f"encoder_{activation}"] = (enc, args, path)
    return models


def torch_out(model, args):
    with torch.no_grad():
        return model(*args).numpy()


def fm_args(args):
    return tuple(a.numpy() for a in args)


# ----------------------------------------------------------------- parity with PyTorch
@pytest.mark.parametrize("name", ["mlp", "cnn", "cnn_folded", "encoder_relu", "encoder_gelu"])
def test_loaded_model_matches_pytorch(exported, name):
    model, args, path = exported[name]
    loaded = forgeml.onnx.load(path)
    assert isinstance(loaded, OnnxModule) and isinstance(loaded, fm.nn.Module)
    out = loaded(*fm_args(args))
    assert isinstance(out, fm.Tensor) and out.dtype == fm.float32
    np.testing.assert_allclose(ours(out), torch_out(model, args), rtol=1e-5, atol=1e-5)


def test_graph_ops_cover_the_issue(exported):
    """The exported graphs use the ops the issue names: BatchNormalization, pools, LayerNormalization, Erf ..."""

    def ops(name):
        return {n.op_type for n in onnx.load(str(exported[name][2])).graph.node}

    assert {"Conv", "BatchNormalization", "MaxPool", "AveragePool", "GlobalAveragePool", "Flatten"} <= ops("cnn")
    assert {"Shape", "Gather", "Concat", "Reshape", "Where", "Softmax", "LayerNormalization"} <= ops("encoder_relu")
    assert "Erf" in ops("encoder_gelu") or "Gelu" in ops("encoder_gelu")


def test_inputs_by_name_and_padding_mask_matters(exported):
    model, (x, mask), path = exported["encoder_relu"]
    loaded = forgeml.onnx.load(path)
    assert loaded.input_names == ["src", "mask"]
    by_position = loaded(fm.tensor(x.numpy()), fm.tensor(mask.numpy()))
    by_name = loaded(mask=mask.numpy(), src=x.numpy())
    np.testing.assert_array_equal(ours(by_position), ours(by_name))
    no_mask = loaded(x.numpy(), np.zeros((2, 5), dtype=bool))
    assert not np.allclose(ours(no_mask)[1], ours(by_name)[1])  # the padded keys were ignored
    np.testing.assert_allclose(ours(no_mask), torch_out(model, (x, torch.zeros(2, 5, dtype=torch.bool))), atol=1e-5)


def test_multiple_outputs_from_bytes_and_a_model_proto(tmp_path):
    class Two(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(4, 3)

        def forward(self, x):
            y = self.lin(x)
            return y.softmax(-1), y.abs().sum(1, keepdim=True)

    model = randomize(Two())
    x = torch.randn(2, 4)
    path = export(model, (x,), tmp_path / "two.onnx")
    for source in (onnx.load(str(path)), path.read_bytes(), open(path, "rb")):
        a, b = forgeml.onnx.load(source)(x.numpy())
        ta, tb = (t.detach().numpy() for t in model(x))
        np.testing.assert_allclose(ours(a), ta, atol=1e-6)
        np.testing.assert_allclose(ours(b), tb, atol=1e-6)


# ----------------------------------------------------------------- fine-tuning
@pytest.mark.parametrize("name", ["mlp", "cnn", "encoder_gelu"])
def test_parameters_get_gradients_and_sgd_reduces_the_loss(exported, name):
    _, args, path = exported[name]
    loaded = forgeml.onnx.load(path)
    params = dict(loaded.named_parameters())
    assert params and all(p.requires_grad for p in params.values())
    inputs = fm_args(args)
    target = fm.zeros(*loaded(*inputs).shape)
    opt = fm.optim.SGD(loaded.parameters(), lr=0.05)
    losses = []
    for _ in range(4):
        opt.zero_grad()
        loss = fm.nn.functional.mse_loss(loaded(*inputs), target)
        loss.backward()
        if not losses:
            missing = [n for n, p in params.items() if p.grad is None or not np.any(p.grad.numpy())]
            assert not missing, f"no gradient reached {missing}"
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


@pytest.mark.parametrize("name", ["mlp", "cnn", "encoder_gelu"])
def test_gradients_match_pytorch(exported, name):
    """The gradient of each initializer that keeps its PyTorch name equals PyTorch's for that parameter."""
    model, args, path = exported[name]
    loaded = forgeml.onnx.load(path)
    loaded(*fm_args(args)).square().sum().backward()
    model.zero_grad()
    model(*args).square().sum().backward()
    theirs = dict(model.named_parameters())
    compared = 0
    for attr, param in loaded.named_parameters():
        onnx_name = loaded.initializer_names[attr]
        if onnx_name in theirs:
            np.testing.assert_allclose(param.grad.numpy(), theirs[onnx_name].grad.numpy(), rtol=1e-4, atol=1e-5)
            compared += 1
    assert compared >= 6


def test_gradcheck_in_float64():
    """Finite differences agree with the gradients of composed ops (Erf, asymmetric pads, pools, LayerNorm)."""
    d = TensorProto.DOUBLE
    rng = np.random.default_rng(3)
    w = helper.make_tensor("w", d, [2, 2, 2, 3], rng.standard_normal(24).ravel())
    scale = helper.make_tensor("scale", d, [2], [0.5, 2.0])
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[0, 1, 2, 0]),
        helper.make_node("Erf", ["c"], ["e"]),
        helper.make_node("AveragePool", ["e"], ["p"], kernel_shape=[2, 2], pads=[1, 0, 0, 1]),
        helper.make_node("MaxPool", ["p"], ["m"], kernel_shape=[2, 2], auto_pad="SAME_LOWER"),
        helper.make_node("Transpose", ["m"], ["t"], perm=[0, 2, 3, 1]),
        helper.make_node("LayerNormalization", ["t", "scale"], ["ln"]),
        helper.make_node("Softmax", ["ln"], ["y"], axis=1),
    ]
    model = _graph(
        nodes,
        [helper.make_tensor_value_info("x", d, [1, 2, 4, 5])],
        [helper.make_tensor_value_info("y", d, [1, 5, 4, 2])],
        [w, scale],
    )
    loaded = forgeml.onnx.load(model)
    x = fm.tensor(rng.standard_normal((1, 2, 4, 5)), requires_grad=True)
    assert fm.autograd.gradcheck(lambda x, w, s: loaded(x), (x, loaded.w, loaded.scale))


def test_dynamic_batch_axis(exported, tmp_path):
    model, (x,), _ = exported["cnn"]
    path = export(model, (x,), tmp_path / "dyn.onnx", input_names=["image"], dynamic_axes={"image": {0: "batch"}})
    loaded = forgeml.onnx.load(path)
    bigger = torch.randn(5, 3, 16, 16)
    np.testing.assert_allclose(ours(loaded(bigger.numpy())), torch_out(model, (bigger,)), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match=r"'image' has shape \[5, 3, 8, 16\], the graph declares \['\?', 3, 16, 16\]"):
        loaded(np.zeros((5, 3, 8, 16), np.float32))


def test_batch_norm_statistics_are_buffers(exported):
    loaded = forgeml.onnx.load(exported["cnn"][2])
    buffers = dict(loaded.named_buffers())
    assert len(buffers) == 4  # running_mean and running_var of the two BatchNorm2d layers
    assert set(loaded.initializer_names.values()) >= {"1.running_mean", "1.running_var", "0.weight"}
    assert "0_weight" in dict(loaded.named_parameters())
    assert not any(b.requires_grad for b in buffers.values())


def test_state_dict_round_trip(exported):
    _, args, path = exported["encoder_relu"]
    trained = forgeml.onnx.load(path)
    opt = fm.optim.SGD(trained.parameters(), lr=0.1)
    out = trained(*fm_args(args))
    (out * out).mean().backward()
    opt.step()
    state = trained.state_dict()
    assert set(state) == set(trained.initializer_names)

    fresh = forgeml.onnx.load(path)
    before = ours(fresh(*fm_args(args)))
    fresh.load_state_dict(state)
    after = ours(fresh(*fm_args(args)))
    np.testing.assert_array_equal(after, ours(trained(*fm_args(args))))
    assert not np.allclose(before, after)


def test_runs_on_a_cuda_device(exported, cuda_device):
    model, args, path = exported["encoder_gelu"]
    loaded = forgeml.onnx.load(path).to(cuda_device)
    x, mask = (fm.tensor(a, device=cuda_device) for a in fm_args(args))
    out = loaded(x, mask)
    assert out.device.type == "cuda"
    np.testing.assert_allclose(out.detach().cpu().numpy(), torch_out(model, args), rtol=1e-5, atol=1e-5)
    out.sum().backward()
    assert all(p.grad is not None for p in loaded.parameters())


# ----------------------------------------------------------------- errors
def _graph(nodes, inputs, outputs, initializers=(), opset=17):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def test_unsupported_ops_are_listed_in_one_error():
    f = TensorProto.FLOAT
    nodes = [
        helper.make_node("Relu", ["x"], ["a"]),
        helper.make_node("NonMaxSuppression", ["boxes", "scores"], ["sel"]),
        helper.make_node("Einsum", ["a", "a"], ["b"], equation="ij,ij->ij"),
        helper.make_node("NonMaxSuppression", ["boxes", "scores"], ["sel2"]),
        helper.make_node("FusedMatMul", ["b", "b"], ["y"], domain="com.microsoft"),
    ]
    model = _graph(
        nodes,
        [helper.make_tensor_value_info(n, f, None) for n in ("x", "boxes", "scores")],
        [helper.make_tensor_value_info("y", f, None)],
    )
    with pytest.raises(UnsupportedOnnxOpsError) as info:
        forgeml.onnx.load(model)
    message = str(info.value)
    assert "ForgeML cannot run: Einsum, FusedMatMul (domain com.microsoft), NonMaxSuppression (opset 17)" in message
    assert info.value.ops == ["Einsum", "FusedMatMul (domain com.microsoft)", "NonMaxSuppression"]
    assert isinstance(info.value, NotImplementedError)


def test_unsupported_forms_of_supported_ops_are_listed():
    f = TensorProto.FLOAT
    w = helper.make_tensor("w", f, [2, 1, 3, 3, 3], np.zeros(54, dtype=np.float32))
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"]),
        helper.make_node("MaxPool", ["c"], ["y", "idx"], kernel_shape=[2, 2]),
        helper.make_node("Cast", ["y"], ["s"], to=TensorProto.STRING),
        helper.make_node("Loop", ["", ""], ["z"], body=helper.make_graph([], "body", [], [])),
    ]
    model = _graph(
        nodes,
        [helper.make_tensor_value_info("x", f, [1, 1, 4, 4, 4])],
        [helper.make_tensor_value_info("y", f, None)],
        [w],
    )
    with pytest.raises(UnsupportedOnnxOpsError, match=r"Loop \(opset 17\)"):
        forgeml.onnx.load(model)
    model.graph.node.pop()  # drop the Loop: the remaining problems are forms of supported ops
    with pytest.raises(UnsupportedOnnxOpsError) as info:
        forgeml.onnx.load(model, check=False)
    assert info.value.ops == ["Cast (to STRING)", "Conv (3-D)", "MaxPool (with Indices output)"]


def test_a_file_that_is_not_onnx_gives_a_clear_error(tmp_path):
    bad = tmp_path / "model.onnx"
    bad.write_text("this is a text file, not a protobuf\n")
    with pytest.raises(OnnxImportError, match=r"model.onnx is not an ONNX model"):
        forgeml.onnx.load(bad)
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    with pytest.raises(OnnxImportError, match="not an ONNX model"):
        forgeml.onnx.load(empty)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        forgeml.onnx.load(tmp_path / "missing.onnx")
    with pytest.raises(TypeError, match="expects a path"):
        forgeml.onnx.load(42)


def test_input_errors_name_the_input(exported):
    loaded = forgeml.onnx.load(exported["encoder_relu"][2])
    x, mask = fm_args(exported["encoder_relu"][1])
    with pytest.raises(TypeError, match="missing graph input"):
        loaded(x)
    with pytest.raises(TypeError, match="unknown input 'src_mask'"):
        loaded(x, src_mask=mask)
    with pytest.raises(TypeError, match=r"'mask' must be a forgeml\.bool tensor, got forgeml\.int64"):
        loaded(x, fm.tensor(mask.astype(np.int64)))
    with pytest.raises(ValueError, match=r"'src' has shape \[3, 5, 32\], the graph declares \[2, 5, 32\]"):
        loaded(np.zeros((3, 5, 32), np.float32), np.zeros((3, 5), bool))


# ----------------------------------------------------------------- op semantics on small graphs
def _run(nodes, inputs, initializers=(), opset=17, outputs=("y",)):
    """Build a graph of ``nodes``, load it, and run it on ``inputs`` (name -> array)."""
    infos = [
        helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape) for n, a in inputs.items()
    ]
    model = _graph(nodes, infos, [helper.make_empty_tensor_value_info(o) for o in outputs], initializers, opset)
    ours_ = forgeml.onnx.load(model, check=False)(**inputs)
    ours_ = ours_ if isinstance(ours_, tuple) else (ours_,)
    return [o.detach().numpy() for o in ours_]


def _const(name, array):
    return helper.make_node("Constant", [], [name], value=onnx.numpy_helper.from_array(np.asarray(array), name))


def test_shape_arithmetic_runs_on_constants_with_onnx_integer_semantics():
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        _const("neg", np.array([-7], dtype=np.int64)),
        _const("two", np.array([2], dtype=np.int64)),
        helper.make_node("Div", ["neg", "two"], ["q"]),  # ONNX truncates: -3
        helper.make_node("Mod", ["neg", "two"], ["r"]),  # sign of the divisor: 1
        helper.make_node("Mod", ["neg", "two"], ["fr"], fmod=1),  # sign of the dividend: -1
        helper.make_node("Concat", ["q", "r", "fr"], ["qr"], axis=0),
        helper.make_node("Gather", ["s", "two"], ["last"], axis=0),  # [4]
        _const("minus1", np.array([-1], dtype=np.int64)),
        helper.make_node("Concat", ["minus1", "last"], ["newshape"], axis=0),
        helper.make_node("Reshape", ["x", "newshape"], ["y"]),
    ]
    y, qr = _run(nodes, {"x": x}, outputs=("y", "qr"))
    np.testing.assert_array_equal(y, x.reshape(-1, 4))
    np.testing.assert_array_equal(qr, [-3, 1, -1])


def test_shape_subgraphs_of_an_exported_encoder_run_on_numpy(exported, monkeypatch):
    kinds = {}
    run = OnnxModule._run

    def spy(self, node, values):
        out = run(self, node, values)
        kinds.setdefault(node.op_type, set()).add(type(out).__name__)
        return out

    monkeypatch.setattr(OnnxModule, "_run", spy)
    _, args, path = exported["encoder_relu"]
    forgeml.onnx.load(path)(*fm_args(args))
    assert kinds["Shape"] == kinds["Concat"] == kinds["Slice"] == {"ndarray"}
    assert kinds["MatMul"] == kinds["Softmax"] == kinds["LayerNormalization"] == {"Tensor"}


def test_slice_split_pad_and_pools_match_onnxruntime():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 2, 7, 6)).astype(np.float32)
    w = rng.standard_normal((4, 1, 3, 2)).astype(np.float32)
    nodes = [
        _const("st", np.array([5, 0], np.int64)),
        _const("en", np.array([-100, 5], np.int64)),
        _const("ax", np.array([2, 3], np.int64)),
        _const("sp", np.array([-2, 2], np.int64)),
        helper.make_node("Slice", ["x", "st", "en", "ax", "sp"], ["sl"]),  # reversed rows, every other column
        _const("pads", np.array([0, 0, 1, 0, 0, 0, 2, 3], np.int64)),
        helper.make_node("Pad", ["x", "pads"], ["pd"], mode="constant"),
        helper.make_node("Conv", ["x", "w"], ["cv"], group=2, pads=[0, 1, 2, 0], strides=[2, 1]),
        helper.make_node("MaxPool", ["x"], ["mp"], kernel_shape=[3, 2], auto_pad="SAME_UPPER", strides=[2, 2]),
        helper.make_node("AveragePool", ["x"], ["ap"], kernel_shape=[3, 3], pads=[1, 0, 0, 1]),
        _const("parts", np.array([1, 5], np.int64)),
        helper.make_node("Split", ["x", "parts"], ["s1", "s2"], axis=3),
        helper.make_node("ReduceMean", ["s2", "ax"], ["y"], keepdims=0),
    ]
    outputs = ["sl", "pd", "cv", "mp", "ap", "s1", "y"]
    _compare_with_onnxruntime(nodes, {"x": x}, [_t("w", w)], 18, outputs)


def test_supported_ops_include_the_issue_list():
    needed = {
        "Gemm",
        "MatMul",
        "Add",
        "Relu",
        "Conv",
        "BatchNormalization",
        "MaxPool",
        "AveragePool",
        "GlobalAveragePool",
        "Flatten",
        "Mul",
        "Div",
        "Sqrt",
        "Softmax",
        "Transpose",
        "Reshape",
        "Shape",
        "Gather",
        "Unsqueeze",
        "Concat",
        "Slice",
        "Split",
        "LayerNormalization",
        "ReduceMean",
        "Sub",
        "Pow",
        "Erf",
        "Gelu",
        "Where",
        "Equal",
        "Cast",
        "ConstantOfShape",
        "Expand",
        "Constant",
        "Identity",
        "Dropout",
        "Tanh",
        "Sigmoid",
    }
    assert needed <= set(SUPPORTED_OPS)


# ----------------------------------------------------------------- one-node graphs against onnxruntime
_RNG = np.random.default_rng(7)
_X = _RNG.standard_normal((2, 3, 4)).astype(np.float32)
_Y = _RNG.standard_normal((2, 3, 4)).astype(np.float32)
_POS = (np.abs(_X) + 0.1).astype(np.float32)
_IMG = _RNG.standard_normal((2, 4, 6, 5)).astype(np.float32)
_SEQ = _RNG.standard_normal((2, 4, 9)).astype(np.float32)
_I64 = np.array([[-7, 5, 0], [3, -2, 9]], dtype=np.int64)


def _n(op_type, inputs, outputs=("y",), **attrs):
    return helper.make_node(op_type, list(inputs), list(outputs), **attrs)


def _t(name, array):
    return onnx.numpy_helper.from_array(np.asarray(array), name)


_UNARY = [
    "Abs",
    "Neg",
    "Exp",
    "Sin",
    "Cos",
    "Tanh",
    "Sigmoid",
    "Relu",
    "Floor",
    "Ceil",
    "Round",
    "Sign",
    "Softplus",
    "Erf",
    "LeakyRelu",
    "Elu",
    "Celu",
    "Selu",
    "HardSigmoid",
    "HardSwish",
    "Softsign",
    "Identity",
]

# (id, nodes, inputs, initializers, opset)
_CASES = [(op_type, [_n(op_type, ["x"])], {"x": _X}, [], 17) for op_type in _UNARY] + [
    ("Sqrt", [_n("Sqrt", ["x"])], {"x": _POS}, [], 17),
    ("Log", [_n("Log", ["x"])], {"x": _POS}, [], 17),
    ("Reciprocal", [_n("Reciprocal", ["x"])], {"x": _POS}, [], 17),
    ("Mish", [_n("Mish", ["x"])], {"x": _X}, [], 18),
    ("Gelu-tanh", [_n("Gelu", ["x"], approximate="tanh")], {"x": _X}, [], 20),
    ("Gelu", [_n("Gelu", ["x"])], {"x": _X}, [], 20),
    ("ThresholdedRelu", [_n("ThresholdedRelu", ["x"], alpha=0.3)], {"x": _X}, [], 17),
    ("LeakyRelu-alpha", [_n("LeakyRelu", ["x"], alpha=0.2)], {"x": _X}, [], 17),
    *[(b, [_n(b, ["x", "z"])], {"x": _X, "z": _Y}, [], 17) for b in ("Add", "Sub", "Mul", "Div", "Max", "Min")],
    ("Sum-Mean", [_n("Sum", ["x", "z", "x"], ["s"]), _n("Mean", ["s", "z"])], {"x": _X, "z": _Y}, [], 17),
    ("Pow", [_n("Pow", ["x", "z"])], {"x": _POS, "z": _Y}, [], 17),
    ("Pow-int-exponent", [_n("Pow", ["x", "e"])], {"x": _X}, [_t("e", np.array(3, np.int64))], 17),
    ("Mod-fmod", [_n("Mod", ["x", "z"], fmod=1)], {"x": _X, "z": _POS}, [], 17),
    ("Mod-int", [_n("Mod", ["a", "b"])], {"a": _I64, "b": np.array([4, -3, 5], np.int64)}, [], 17),
    ("Div-int", [_n("Div", ["a", "b"])], {"a": _I64, "b": np.array([4, -3, 5], np.int64)}, [], 17),
    ("PRelu", [_n("PRelu", ["x", "slope"])], {"x": _X}, [_t("slope", _RNG.random((3, 1)).astype(np.float32))], 17),
    ("Where-compare", [_n("Less", ["x", "z"], ["c"]), _n("Where", ["c", "x", "z"])], {"x": _X, "z": _Y}, [], 17),
    (
        "Logic",
        [
            _n("Greater", ["x", "z"], ["a"]),
            _n("LessOrEqual", ["x", "zero"], ["b"]),
            _n("Xor", ["a", "b"], ["c"]),
            _n("Not", ["c"], ["d"]),
            _n("Or", ["d", "a"], ["e"]),
            _n("Equal", ["e", "b"], ["f"]),
            _n("Cast", ["f"], to=TensorProto.FLOAT),
        ],
        {"x": _X, "z": _Y},
        [_t("zero", np.float32(0))],
        17,
    ),
    (
        "Clip",
        [_n("Clip", ["x", "lo", "hi"])],
        {"x": _X},
        [_t("lo", np.float32(-0.5)), _t("hi", np.float32(0.7))],
        17,
    ),
    ("Clip-attrs", [_n("Clip", ["x"], min=-0.2, max=0.1)], {"x": _X}, [], 6),
    ("Softmax-13", [_n("Softmax", ["x"], axis=1)], {"x": _X}, [], 13),
    ("Softmax-11", [_n("Softmax", ["x"], axis=1)], {"x": _X}, [], 11),
    ("LogSoftmax", [_n("LogSoftmax", ["x"])], {"x": _X}, [], 17),
    (
        "MatMul-batched",
        [_n("MatMul", ["x", "w"])],
        {"x": _X},
        [_t("w", _RNG.standard_normal((4, 5)).astype(np.float32))],
        17,
    ),
    (
        "Gemm-general",
        [_n("Gemm", ["a", "b", "c"], alpha=0.5, beta=2.0, transA=1, transB=1)],
        {"a": _RNG.standard_normal((4, 3)).astype(np.float32)},
        [
            _t("b", _RNG.standard_normal((5, 4)).astype(np.float32)),
            _t("c", _RNG.standard_normal((3, 5)).astype(np.float32)),
        ],
        17,
    ),
    *[
        (r, [_n(r, ["x", "axes"], keepdims=k)], {"x": _POS}, [_t("axes", np.array([0, -1], np.int64))], 18)
        for r in (
            "ReduceMean",
            "ReduceSum",
            "ReduceMax",
            "ReduceMin",
            "ReduceProd",
            "ReduceL1",
            "ReduceL2",
            "ReduceSumSquare",
            "ReduceLogSum",
            "ReduceLogSumExp",
        )
        for k in (0, 1)
    ],
    ("ReduceSum-all", [_n("ReduceSum", ["x"], keepdims=0)], {"x": _X}, [], 13),
    ("ReduceMean-attr", [_n("ReduceMean", ["x"], axes=[1])], {"x": _X}, [], 13),
    ("ArgMax", [_n("ArgMax", ["x"], axis=1, keepdims=0)], {"x": np.round(_X)}, [], 17),
    ("ArgMin-last", [_n("ArgMin", ["x"], axis=2, select_last_index=1)], {"x": np.round(_X)}, [], 17),
    ("Transpose", [_n("Transpose", ["x"], perm=[2, 0, 1])], {"x": _X}, [], 17),
    ("Transpose-default", [_n("Transpose", ["x"])], {"x": _X}, [], 17),
    ("Flatten", [_n("Flatten", ["x"], axis=-1)], {"x": _X}, [], 17),
    (
        "Squeeze-Unsqueeze",
        [_n("Unsqueeze", ["x", "ax"], ["u"]), _n("Squeeze", ["u", "ax2"])],
        {"x": _X},
        [_t("ax", np.array([0, -1], np.int64)), _t("ax2", np.array([-1], np.int64))],
        17,
    ),
    ("Unsqueeze-attr", [_n("Unsqueeze", ["x"], axes=[1])], {"x": _X}, [], 11),
    ("Expand", [_n("Expand", ["x", "s"])], {"x": _X[:, :1]}, [_t("s", np.array([3, 1, 5, 4], np.int64))], 17),
    ("Tile", [_n("Tile", ["x", "r"])], {"x": _X}, [_t("r", np.array([1, 2, 3], np.int64))], 17),
    ("Trilu", [_n("Trilu", ["x", "k"], upper=0)], {"x": _X}, [_t("k", np.array(1, np.int64))], 17),
    (
        "Gather-negative",
        [_n("Gather", ["x", "i"], axis=1)],
        {"x": _X},
        [_t("i", np.array([[-1, 0], [2, -3]], np.int64))],
        17,
    ),
    ("Gather-scalar", [_n("Gather", ["x", "i"], axis=2)], {"x": _X}, [_t("i", np.array(-2, np.int64))], 17),
    (
        "GatherElements",
        [_n("GatherElements", ["x", "i"], axis=1)],
        {"x": _X},
        [_t("i", _RNG.integers(-3, 3, (2, 2, 4)).astype(np.int64))],
        17,
    ),
    ("Split-even", [_n("Split", ["x"], ["a", "b"], axis=2), _n("Sub", ["a", "b"])], {"x": _X}, [], 17),
    (
        "Split-num-outputs",
        [
            _n("Split", ["x"], ["a", "b"], axis=1, num_outputs=2),
            _n("ReduceSum", ["a"], ["y"]),
            _n("Identity", ["b"], ["y2"]),
        ],
        {"x": _X},
        [],
        18,
    ),
    ("Slice-opset9", [_n("Slice", ["x"], starts=[1, -3], ends=[100, -1], axes=[0, 2])], {"x": _X}, [], 9),
    ("Cast-int", [_n("Cast", ["x"], to=TensorProto.INT32)], {"x": _X * 3}, [], 17),
    ("CastLike", [_n("CastLike", ["a", "x"])], {"a": _I64, "x": _X}, [], 17),
    (
        "Range-ConstantOfShape",
        [
            _n("Range", ["s", "l", "d"], ["r"]),
            _n("Shape", ["r"], ["sh"]),
            _n("ConstantOfShape", ["sh"], ["c"], value=_t("v", np.array([2.5], np.float32))),
            _n("Mul", ["c", "r2"]),
        ],
        {},
        [
            _t("s", np.float32(1)),
            _t("l", np.float32(6)),
            _t("d", np.float32(1.5)),
            _t("r2", np.ones(4, np.float32)),
        ],
        17,
    ),
    (
        "Shape-Size",
        [
            _n("Shape", ["x"], ["s"], start=1),
            _n("Size", ["x"], ["n"]),
            _n("Unsqueeze", ["n", "z"], ["nn"]),
            _n("Concat", ["s", "nn"], ["y"], axis=0),
        ],
        {"x": _X},
        [_t("z", np.array([0], np.int64))],
        17,
    ),
    ("NonZero", [_n("NonZero", ["x"])], {"x": (_X > 0)}, [], 17),
    (
        "IsInf-IsNaN",
        [_n("IsInf", ["x"], ["a"], detect_negative=0), _n("IsNaN", ["x"], ["b"]), _n("Or", ["a", "b"])],
        {"x": np.array([1.0, np.inf, -np.inf, np.nan], np.float32)},
        [],
        17,
    ),
    (
        "Pad-reflect",
        [_n("Pad", ["i", "p"], mode="reflect")],
        {"i": _IMG},
        [_t("p", np.array([0, 0, 2, 1, 0, 0, 1, 3], np.int64))],
        17,
    ),
    (
        "Pad-edge-crop",
        [_n("Pad", ["i", "p"], mode="edge")],
        {"i": _IMG},
        [_t("p", np.array([0, 0, 2, 0, 0, 0, 0, 2], np.int64))],
        17,
    ),
    (
        "Pad-axes",
        [_n("Pad", ["i", "p", "v", "a"])],
        {"i": _IMG},
        [_t("p", np.array([1, -1, 2, 1], np.int64)), _t("v", np.float32(0.5)), _t("a", np.array([1, 3], np.int64))],
        18,
    ),
    (
        "Conv1d-same",
        [_n("Conv", ["s", "w", "b"], auto_pad="SAME_LOWER", strides=[2])],
        {"s": _SEQ},
        [
            _t("w", _RNG.standard_normal((3, 4, 4)).astype(np.float32)),
            _t("b", _RNG.standard_normal(3).astype(np.float32)),
        ],
        17,
    ),
    (
        "Conv-depthwise",
        [_n("Conv", ["i", "w"], group=4, pads=[1, 1, 1, 1], dilations=[2, 1])],
        {"i": _IMG},
        [_t("w", _RNG.standard_normal((8, 1, 3, 3)).astype(np.float32))],
        17,
    ),
    ("MaxPool1d", [_n("MaxPool", ["s"], kernel_shape=[3], strides=[2], pads=[1, 1])], {"s": _SEQ}, [], 17),
    (
        "MaxPool-ceil-dilated",
        [_n("MaxPool", ["i"], kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1, dilations=[1, 2])],
        {"i": _IMG},
        [],
        17,
    ),
    (
        "AveragePool-exclude-pad",
        [_n("AveragePool", ["i"], kernel_shape=[3, 3], pads=[1, 1, 1, 1])],
        {"i": _IMG},
        [],
        17,
    ),
    (
        "AveragePool-include-pad",
        [_n("AveragePool", ["i"], kernel_shape=[3, 2], pads=[1, 1, 1, 1], count_include_pad=1, strides=[2, 1])],
        {"i": _IMG},
        [],
        17,
    ),
    (
        "AveragePool-same-upper",
        [_n("AveragePool", ["i"], kernel_shape=[2, 2], auto_pad="SAME_UPPER")],
        {"i": _IMG},
        [],
        17,
    ),
    ("GlobalMaxPool", [_n("GlobalMaxPool", ["i"])], {"i": _IMG}, [], 17),
    (
        "BatchNormalization",
        [_n("BatchNormalization", ["i", "sc", "bi", "me", "va"], epsilon=1e-3)],
        {"i": _IMG},
        [
            _t("sc", _RNG.random(4).astype(np.float32)),
            _t("bi", _RNG.random(4).astype(np.float32)),
            _t("me", _RNG.random(4).astype(np.float32)),
            _t("va", _RNG.random(4).astype(np.float32) + 0.5),
        ],
        15,
    ),
    (
        "InstanceNormalization",
        [_n("InstanceNormalization", ["i", "sc", "bi"])],
        {"i": _IMG},
        [_t("sc", _RNG.random(4).astype(np.float32)), _t("bi", _RNG.random(4).astype(np.float32))],
        17,
    ),
    (
        "LayerNormalization-axis",
        [_n("LayerNormalization", ["x", "sc", "bi"], ["y", "m", "r"], axis=1, epsilon=1e-3)],
        {"x": _X},
        [_t("sc", _RNG.random((3, 4)).astype(np.float32)), _t("bi", _RNG.random((3, 4)).astype(np.float32))],
        17,
    ),
    (
        "RMSNormalization",
        [_n("RMSNormalization", ["x", "sc"], epsilon=1e-3)],
        {"x": _X},
        [_t("sc", _RNG.random(4).astype(np.float32))],
        23,
    ),
    ("Dropout", [_n("Dropout", ["x"], ["y", "mask"])], {"x": _X}, [], 17),
]


def _compare_with_onnxruntime(nodes, inputs, inits, opset, outputs):
    """Run the graph with onnxruntime and with ForgeML: same outputs, same dtypes."""
    ort = pytest.importorskip("onnxruntime")
    infos = [
        helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape) for k, v in inputs.items()
    ]
    model = _graph(nodes, infos, [helper.make_empty_tensor_value_info(o) for o in outputs], inits, opset)
    if opset < 11:  # old opsets need an older IR version for onnxruntime
        model.ir_version = 7
    expected = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, inputs)
    got = forgeml.onnx.load(model, check=False)(**inputs)
    got = got if isinstance(got, tuple) else (got,)
    assert len(got) == len(expected)
    for name, o, e in zip(outputs, got, expected):
        assert o.dtype.numpy == e.dtype, name
        np.testing.assert_allclose(o.detach().numpy(), e, rtol=2e-6, atol=2e-6, err_msg=name)


@pytest.mark.parametrize("nodes, inputs, inits, opset", [c[1:] for c in _CASES], ids=[c[0] for c in _CASES])
def test_op_matches_onnxruntime(nodes, inputs, inits, opset):
    outputs = [o for o in nodes[-1].output if o] + [o for n in nodes[:-1] for o in n.output if o.startswith("y")]
    _compare_with_onnxruntime(nodes, inputs, inits, opset, outputs)
