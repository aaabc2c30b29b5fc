"""ONNX round trips: ForgeML -> ONNX -> onnxruntime, and PyTorch -> ONNX -> ForgeML, with their differences
and inference times.

Export: the seed MLP, a CNN (Conv2d/BatchNorm2d/MaxPool2d) and the spam transformer (padded batches of
two lengths, one file with dynamic batch and sequence axes) are exported with ``forgeml.onnx.export`` and
run in onnxruntime; we print the largest absolute difference from ForgeML's own outputs and the median
time of a forward in each. Import: an MLP, a small CNN and a 2-layer ``nn.TransformerEncoder`` exported by
``torch.onnx.export`` are loaded with ``forgeml.onnx.load``; we print the largest difference from PyTorch's
outputs.

    python benchmarks/bench_onnx.py [--repeats 50]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "examples"))

import forgeml as fm  # noqa: E402
from forgeml import nn  # noqa: E402


def _median_ms(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def _cnn():
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(8 * 14 * 14, 10),
    )


def _spam_transformer(vocab: int):
    from forgeml.nn import build
    from forgeml.server.schemas import PRESETS  # the platform's spam_transformer preset
    from forgeml.specs import ModelSpec

    spec = ModelSpec.model_validate(PRESETS["spam_transformer"]["model"])
    for layer in spec.layers:
        if layer.type in ("Embedding", "EmbeddingLayer"):
            layer.args["num_embeddings"] = vocab
    return build(spec)


def export_rows(repeats: int, folder: Path) -> list[tuple]:
    import onnxruntime as ort
    from mnist_mlp import build_model

    from forgeml.onnx import export

    rng = np.random.default_rng(0)
    rows = []
    cases = [
        ("seed MLP", build_model(), [rng.standard_normal((64, 784)).astype(np.float32)], None),
        ("CNN", _cnn(), [rng.standard_normal((64, 1, 28, 28)).astype(np.float32)], None),
    ]
    for name, model, inputs, _ in cases:
        model.eval()
        path = folder / f"{name}.onnx"
        export(model, tuple(fm.tensor(a) for a in inputs), path, input_names=["input"], output_names=["logits"],
               dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})  # fmt: skip
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        feed = {"input": inputs[0]}
        with fm.no_grad():
            ours = model(fm.tensor(inputs[0])).numpy()
        theirs = session.run(None, feed)[0]
        with fm.no_grad():
            x = fm.tensor(inputs[0])
            fm_ms = _median_ms(lambda m=model, x=x: m(x), repeats)
        ort_ms = _median_ms(lambda s=session, f=feed: s.run(None, f), repeats)
        rows.append((name, "batch 64", float(np.abs(ours - theirs).max()), fm_ms, ort_ms))

    vocab = 2000
    model = _spam_transformer(vocab)
    model.eval()

    def batch(n, length):
        ids = rng.integers(1, vocab, (n, length))
        lengths = rng.integers(1, length + 1, n)
        mask = np.arange(length)[None, :] >= lengths[:, None]  # True marks padding
        ids[mask] = 0
        return ids.astype(np.int64), mask

    ids, mask = batch(8, 48)
    path = folder / "spam.onnx"
    example = nn.MaskedBatch(fm.tensor(ids), fm.tensor(mask))
    export(model, (example,), path, input_names=["ids", "padding_mask"], output_names=["logits"],
           dynamic_axes={"ids": {0: "batch", 1: "seq"}, "padding_mask": {0: "batch", 1: "seq"},
                         "logits": {0: "batch"}})  # fmt: skip
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for n, length in ((8, 48), (32, 128)):
        ids, mask = batch(n, length)
        with fm.no_grad():
            ours = model(nn.MaskedBatch(fm.tensor(ids), fm.tensor(mask))).numpy()
        feed = {"ids": ids, "padding_mask": mask}
        theirs = session.run(None, feed)[0]
        with fm.no_grad():
            fm_ms = _median_ms(
                lambda i=ids, k=mask: model(nn.MaskedBatch(fm.tensor(i), fm.tensor(k))), max(5, repeats // 5)
            )
        ort_ms = _median_ms(lambda f=feed: session.run(None, f), max(5, repeats // 5))
        rows.append(
            ("spam transformer", f"batch {n}, length {length}", float(np.abs(ours - theirs).max()), fm_ms, ort_ms)
        )
    return rows


def import_rows(folder: Path) -> list[tuple]:
    import torch

    from forgeml.onnx import load

    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(784, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10))
    cnn = torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(8 * 14 * 14, 10),
    )  # fmt: skip
    layer = torch.nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True)
    encoder = torch.nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
    for model in (mlp, cnn, encoder):
        model.eval()
        with torch.no_grad():
            for p in model.parameters():  # distinct values: the exporter merges identical initializers
                p.add_(0.02 * torch.randn_like(p))
    cases = [
        ("MLP", mlp, torch.randn(16, 784)),
        ("small CNN", cnn, torch.randn(16, 1, 28, 28)),
        ("TransformerEncoder (2 layers, d 32)", encoder, torch.randn(4, 10, 32)),
    ]
    rows = []
    for name, model, x in cases:
        path = folder / f"torch_{len(rows)}.onnx"
        with warnings.catch_warnings():  # the TorchScript exporter warns that it is the legacy one
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=17, do_constant_folding=False)
        loaded = load(path)
        with torch.no_grad():
            want = model(x).numpy()
        with fm.no_grad():
            got = loaded(fm.tensor(x.numpy())).numpy()
        rows.append((name, float(np.abs(got - want).max())))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()
    from harness import print_environment

    print_environment()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        print("\nForgeML -> ONNX -> onnxruntime (float32)")
        print(f"{'model':18} {'input':24} {'max |diff|':>11} {'forgeml ms':>11} {'onnxruntime ms':>15}")
        for name, what, diff, fm_ms, ort_ms in export_rows(args.repeats, folder):
            print(f"{name:18} {what:24} {diff:11.2e} {fm_ms:11.3f} {ort_ms:15.3f}")
        print("\nPyTorch -> ONNX (torch.onnx.export) -> forgeml.onnx.load (float32)")
        print(f"{'model':38} {'max |diff| from PyTorch':>24}")
        for name, diff in import_rows(folder):
            print(f"{name:38} {diff:24.2e}")


if __name__ == "__main__":
    main()
