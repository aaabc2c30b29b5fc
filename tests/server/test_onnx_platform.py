"""The platform's ONNX export (GET /v1/models/{id}/onnx, ``forgeml export``) and profiled jobs, in process.

One short job trains the module's digits model, with ``profile`` on: the ONNX tests export that model, and
the profile test reads that job's top ops.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import forgeml as fm

from .conftest import TINY_MLP, offline_app, wait_for_job

ort = pytest.importorskip("onnxruntime", reason='ONNX export is tested with onnxruntime: pip install "forgeml[onnx]"')


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    """One app for the module, offline: no AI key, no FORGEML_* setting reaches it."""
    with offline_app(tmp_path_factory.mktemp("onnx") / "data") as client:
        yield client


@pytest.fixture(scope="module")
def profiled_job(api) -> dict:
    """A one-epoch digits job on the tiny MLP, its first epoch profiled."""
    body = {"model": TINY_MLP, "dataset": "mnist", "epochs": 2, "batch_size": 128, "profile": True, "name": "tiny"}
    created = api.post("/v1/jobs", json=body)
    assert created.status_code == 201, created.text
    done = wait_for_job(api, created.json()["id"], timeout=120)
    assert done["state"] == "completed", done
    return api.get(f"/v1/jobs/{done['id']}").json()


@pytest.fixture(scope="module")
def model_id(profiled_job) -> str:
    return profiled_job["model_id"]


def digits(n: int) -> np.ndarray:
    """``n`` test digits as the predict route takes them: pixels in [0, 1], 784 a row."""
    from forgeml.data.datasets import MNIST

    test = MNIST("test", flatten=True)
    return (test.data[:n].reshape(n, 784) / 255.0).round(4).astype(np.float32)


def softmax(z: np.ndarray) -> np.ndarray:
    z = z.astype(np.float64) - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def run_onnx(data: bytes, feeds: dict) -> np.ndarray:
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    return session.run(["logits"], feeds)[0]


def test_onnx_route_serves_a_file_that_runs_like_predict(api, model_id):
    response = api.get(f"/v1/models/{model_id}/onnx")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/octet-stream"
    assert response.headers["content-disposition"] == f'attachment; filename="{model_id}.onnx"'
    model = api.get(f"/v1/models/{model_id}").json()
    prep = model["preprocessing"]
    assert prep == {"mean": 0.1307, "std": 0.3081}

    session = ort.InferenceSession(response.content, providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input"]
    assert [o.name for o in session.get_outputs()] == ["logits"]
    batch_dim = session.get_inputs()[0].shape[0]
    assert not isinstance(batch_dim, int), f"the batch axis is fixed at {batch_dim}"
    metadata = session.get_modelmeta().custom_metadata_map
    assert metadata["forgeml.model_id"] == model_id and metadata["forgeml.input"] == "image"

    for n in (1, 7):  # any batch size
        x = digits(n)
        normalised = ((x - np.float32(prep["mean"])) / np.float32(prep["std"])).astype(np.float32)
        local = softmax(session.run(["logits"], {"input": normalised})[0])
        served = api.post(f"/v1/models/{model_id}/predict", json={"inputs": x.tolist()}).json()
        np.testing.assert_allclose(local, served["probabilities"], atol=1e-5)
        assert [str(i) for i in local.argmax(1)] == served["predictions"]

    # exported once, then served from the copy beside the weights
    cached = list((api.app.state.settings.data_dir / "models").glob(f"{model_id}.*.onnx"))
    assert len(cached) == 1 and cached[0].read_bytes() == response.content
    assert api.get(f"/v1/models/{model_id}/onnx").content == response.content


def test_onnx_route_unknown_model_and_missing_key(api, make_client):
    missing = api.get("/v1/models/mdl_nosuchmodel/onnx")
    assert missing.status_code == 404 and "mdl_nosuchmodel" in missing.json()["detail"]
    client = make_client(api_key="fk-onnx-test-key-0123456789")
    assert client.get("/v1/models/mdl_nosuchmodel/onnx").status_code == 401
    wrong = client.get("/v1/models/mdl_nosuchmodel/onnx", headers={"Authorization": "Bearer wrong"})
    assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer"
    right = client.get(
        "/v1/models/mdl_nosuchmodel/onnx", headers={"Authorization": "Bearer fk-onnx-test-key-0123456789"}
    )
    assert right.status_code == 404


def test_onnx_route_is_documented(api):
    operation = api.get("/openapi.json").json()["paths"]["/v1/models/{model_id}/onnx"]["get"]
    responses = operation["responses"]
    assert set(responses) >= {"200", "401", "404", "409", "410"}
    assert "application/octet-stream" in responses["200"]["content"]
    assert "cannot write" in responses["409"]["description"]


def add_model(api, model_id: str, kind: str, spec: dict, extras: dict, model=None) -> None:
    """A models row for ``spec`` (untrained weights), as the worker stores a trained one."""
    from forgeml.nn import build
    from forgeml.server.db import JobRow, ModelRow
    from forgeml.specs import ModelSpec

    spec = ModelSpec.model_validate(spec)
    model = model or build(spec)
    state = api.app.state
    models = state.settings.data_dir / "models"
    models.mkdir(parents=True, exist_ok=True)
    fm.save(model.state_dict(), models / f"{model_id}.safetensors")
    with state.db.session() as s:
        s.add(JobRow(id=f"job_{model_id}", name=model_id, request={"dataset": "x"}, epochs=1, state="completed"))
        s.add(
            ModelRow(
                id=model_id,
                name=model_id,
                job_id=f"job_{model_id}",
                kind=kind,
                spec=spec.model_dump(mode="json"),
                metrics={},
                weights=f"models/{model_id}.safetensors",
                extras=extras,
            )
        )


TEXT_BAG = {  # a bag of embeddings: the smallest text classifier
    "input_shape": [32],
    "layers": [
        {"type": "Embedding", "args": {"num_embeddings": 60, "embedding_dim": 8, "padding_idx": 0}},
        {"type": "SequencePool", "args": {"mode": "mean"}},
        {"type": "Linear", "args": {"in_features": 8, "out_features": 2}},
    ],
}


def test_a_text_model_exports_with_dynamic_batch_and_sequence_axes(api):
    """A text model takes token ids and their padding mask, any batch and any length, as predict prepares them."""
    from forgeml.data.text import Vocabulary
    from forgeml.server.db import ModelRow
    from forgeml.server.predictor import Predictor

    texts = ["win money now click here", "meeting at ten tomorrow", "free prize", "notes attached"]
    vocab = Vocabulary.build(texts)
    data_dir = api.app.state.settings.data_dir
    (data_dir / "models").mkdir(parents=True, exist_ok=True)
    vocab.save(data_dir / "models" / "mdl_onnxtext.vocab.json")
    extras = {"input": "text", "classes": ["ham", "spam"], "max_length": 32, "vocab": "models/mdl_onnxtext.vocab.json"}
    add_model(api, "mdl_onnxtext", "text", TEXT_BAG, extras)

    response = api.get("/v1/models/mdl_onnxtext/onnx")
    assert response.status_code == 200, response.text
    session = ort.InferenceSession(response.content, providers=["CPUExecutionProvider"])
    inputs = {i.name: i for i in session.get_inputs()}
    assert list(inputs) == ["ids", "padding_mask"]
    assert inputs["ids"].type == "tensor(int64)" and inputs["padding_mask"].type == "tensor(bool)"
    assert all(not isinstance(d, int) for d in inputs["ids"].shape), inputs["ids"].shape
    assert api.get("/v1/models/mdl_onnxtext").json()["preprocessing"] == {"max_length": 32}

    row = api.app.state.db.get(ModelRow, "mdl_onnxtext")
    predictor = Predictor(row, data_dir)
    for batch in (["free money now"], texts, ["a", "meeting tomorrow at ten with the notes attached"]):
        prepared = predictor._prepare(batch)  # the ids and mask predict feeds the network
        feeds = {"ids": prepared.data.numpy(), "padding_mask": prepared.padding_mask.numpy()}
        local = softmax(run_onnx(response.content, feeds))
        served = api.post("/v1/models/mdl_onnxtext/predict", json={"inputs": batch}).json()
        np.testing.assert_allclose(local, served["probabilities"], atol=1e-5)


def test_a_model_that_cannot_export_is_409_naming_the_op(api, monkeypatch):
    import sys

    import forgeml.onnx

    onnx_export = sys.modules["forgeml.onnx.export"]  # the module (forgeml.onnx.export is the function)

    add_model(api, "mdl_noexport", "image", TINY_MLP, {"input": "image", "mean": 0.0, "std": 1.0})

    def refuse(model, *args, **kwargs):  # as the exporter answers an op it has no ONNX form for
        raise forgeml.onnx.UnsupportedOperatorError(
            "op Relu (forgeml.ops.elementwise.Relu) in module '1' has no ONNX form"
        )

    monkeypatch.setattr(onnx_export, "export", refuse)
    response = api.get("/v1/models/mdl_noexport/onnx")
    assert response.status_code == 409
    assert "cannot be exported to ONNX" in response.json()["detail"] and "Relu" in response.json()["detail"]
    assert not list((api.app.state.settings.data_dir / "models").glob("*mdl_noexport*onnx*"))  # nothing half-written
    monkeypatch.undo()
    assert api.get("/v1/models/mdl_noexport/onnx").status_code == 200  # nothing cached from the refusal
    assert api.post("/v1/models/mdl_noexport/predict", json={"inputs": [[0.0] * 784]}).status_code == 200


def test_cli_export_writes_the_same_file(api, model_id, tmp_path, capsys):
    from forgeml.cli import main

    data_dir = api.app.state.settings.data_dir
    served = api.get(f"/v1/models/{model_id}/onnx").content
    out = tmp_path / "exported.onnx"
    assert main(["export", model_id, "--format", "onnx", "--output", str(out), "--data-dir", str(data_dir)]) == 0
    assert out.read_bytes() == served
    assert str(out) in capsys.readouterr().out

    # a fresh export (no cached copy) writes the same bytes: the file depends on the model alone
    for cached in (data_dir / "models").glob(f"{model_id}.*.onnx"):
        cached.unlink()
    again = tmp_path / "again"
    again.mkdir()
    assert main(["export", model_id, "-o", str(again), "--data-dir", str(data_dir)]) == 0
    assert (again / f"{model_id}.onnx").read_bytes() == served

    assert main(["export", "mdl_nosuchmodel", "--data-dir", str(data_dir)]) == 1
    assert "no model 'mdl_nosuchmodel'" in capsys.readouterr().err
    assert main(["export", model_id, "--data-dir", str(tmp_path / "empty")]) == 2
    assert "no ForgeML database" in capsys.readouterr().err


def test_profiled_job_shows_its_top_ops(api, profiled_job):
    profile = profiled_job["profile"]
    assert profile is not None and profile.get("error") is None, profile
    assert profile["epoch"] == 1 and profile["wall_ms"] > 0 and profile["processes"] == 1
    ops = profile["ops"]
    assert 1 <= len(ops) <= 20 and profile["distinct_ops"] >= len(ops)
    assert all(op["name"] and op["calls"] >= 1 for op in ops)
    assert all(0 <= op["self_cpu_ms"] <= op["cpu_total_ms"] + 1e-3 for op in ops)
    assert [op["self_cpu_ms"] for op in ops] == sorted((op["self_cpu_ms"] for op in ops), reverse=True)
    assert math.isclose(sum(op["self_cpu_percent"] for op in ops), 100.0, abs_tol=0.5) or profile["distinct_ops"] > 20
    # an epoch of the tiny MLP: a matrix product per linear layer and batch, forward and backward
    from forgeml.data.datasets import MNIST

    batches = math.ceil(len(MNIST("train")) / 128)
    assert any("matmul" in op["name"].lower() or "linear" in op["name"].lower() for op in ops), ops
    assert max(op["calls"] for op in ops) >= batches
    # stored with the summary, answered on its own; a job without "profile" has none
    assert "profile" not in (profiled_job["summary"] or {})
    assert profiled_job["request"]["profile"] is True
    listed = next(j for j in api.get("/v1/jobs").json() if j["id"] == profiled_job["id"])
    assert listed["profile"] is None
