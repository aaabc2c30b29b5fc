"""The platform and CUDA: FORGEML_DEVICE (auto|cpu|cuda|cuda:N), the worker's device choice, predictions on
the device, and readiness reporting. Worker processes do not get the CuPy stand-in, so the worker's choice of
device is tested here, in-process."""

from __future__ import annotations

import os
from types import SimpleNamespace

import numpy as np
import pytest

import forgeml as fm
from forgeml.server.settings import DeviceUnavailableError, ServerSettings, resolve_device
from forgeml.server.worker import select_device

CUDA = fm.device("cuda")


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(fm.cuda, "is_available", lambda: False)
    monkeypatch.setattr(fm.cuda, "device_count", lambda: 0)


@pytest.fixture
def two_gpus(monkeypatch):
    monkeypatch.setattr(fm.cuda, "is_available", lambda: True)
    monkeypatch.setattr(fm.cuda, "device_count", lambda: 2)


def test_settings_default_to_auto_and_read_forgeml_device():
    assert ServerSettings().device == "auto"
    assert ServerSettings.from_env({"FORGEML_DEVICE": "CUDA:1"}).device == "cuda:1"
    assert ServerSettings.from_env({"FORGEML_DEVICE": "cpu"}, device="cuda").device == "cuda"  # keyword wins
    for bad in ("gpu", "cuda:x", "cuda:-1", "cpu:0", ""):
        with pytest.raises(ValueError, match=r"auto .* cpu, cuda or cuda:N"):
            ServerSettings(device=bad)


def test_auto_picks_the_gpu_when_there_is_one(two_gpus):
    assert ServerSettings().resolved_device() == "cuda:0"
    assert ServerSettings(device="cpu").resolved_device() == "cpu"
    assert ServerSettings(device="cuda").resolved_device() == "cuda:0"
    assert ServerSettings(device="cuda:1").resolved_device() == "cuda:1"
    with pytest.raises(DeviceUnavailableError, match=r"2 CUDA device\(s\): cuda:0 to cuda:1"):
        ServerSettings(device="cuda:2").resolved_device()


def test_auto_is_the_cpu_without_a_gpu_and_an_explicit_gpu_is_refused(no_gpu):
    assert ServerSettings().resolved_device() == "cpu"
    assert resolve_device(None) == "cpu"
    with pytest.raises(DeviceUnavailableError, match=r"'cuda' was asked for, but CUDA is not available.*\"cpu\""):
        ServerSettings(device="cuda").resolved_device()


def test_the_worker_trains_on_the_jobs_device_else_the_servers(two_gpus):
    assert select_device(None, None) == "cuda:0"
    assert select_device(None, "cpu") == "cpu"
    assert select_device("cuda:1", "cpu") == "cuda:1"
    assert select_device("cpu", "cuda:0") == "cpu"
    assert select_device("auto", "cpu") == "cuda:0"


def test_a_job_on_a_missing_gpu_fails_with_a_clear_message(no_gpu):
    with pytest.raises(DeviceUnavailableError, match="CUDA is not available"):
        select_device("cuda", "cpu")
    with pytest.raises(DeviceUnavailableError, match="CUDA is not available"):
        select_device(None, "cuda:0")  # a server told to use a GPU it lacks: its jobs fail the same way


def test_job_requests_validate_their_device():
    from forgeml.server.schemas import JobCreate

    assert JobCreate(preset="mnist_mlp").device is None
    assert JobCreate(preset="mnist_mlp", device="Cuda:0").device == "cuda:0"
    with pytest.raises(ValueError, match="device must be"):
        JobCreate(preset="mnist_mlp", device="tpu")


def test_serve_has_a_device_option():
    from forgeml.cli import build_parser

    assert build_parser().parse_args(["serve", "--device", "cuda:1"]).device == "cuda:1"
    assert build_parser().parse_args(["serve"]).device is None


def test_serve_refuses_to_start_on_a_missing_gpu(no_gpu):
    from forgeml.server.app import serve

    with pytest.raises(SystemExit, match="refusing to start: device 'cuda'"):
        serve(ServerSettings(device="cuda"))


# -- predictions ----------------------------------------------------------------------------------------
def _tabular_row(tmp_path):
    spec = {
        "input_shape": [5],
        "layers": [
            {"type": "Linear", "args": {"in_features": 5, "out_features": 16}},
            {"type": "ReLU"},
            {"type": "Dropout", "args": {"p": 0.3}},
            {"type": "Linear", "args": {"in_features": 16, "out_features": 3}},
        ],
    }
    from forgeml.nn import build
    from forgeml.specs import ModelSpec

    fm.manual_seed(0)
    model = build(ModelSpec.model_validate(spec))
    fm.save(model.state_dict(), tmp_path / "w.safetensors")
    extras = {"input": "tabular", "features": 5, "mean": [0.1] * 5, "std": [2.0] * 5, "classes": ["a", "b", "c"]}
    return SimpleNamespace(id="mdl_t", kind="tabular", extras=extras, spec=spec, weights="w.safetensors")


def _text_row(tmp_path):
    from forgeml.data.text import Vocabulary
    from forgeml.nn import build
    from forgeml.specs import ModelSpec

    vocab = Vocabulary(["good", "bad", "movie", "plot"])
    vocab.save(tmp_path / "v.json")
    spec = {
        "input_shape": [8],
        "layers": [
            {"type": "Embedding", "args": {"num_embeddings": len(vocab), "embedding_dim": 8, "padding_idx": 0}},
            {"type": "SequencePool", "args": {"mode": "mean"}},
            {"type": "Linear", "args": {"in_features": 8, "out_features": 2}},
        ],
    }
    fm.manual_seed(1)
    model = build(ModelSpec.model_validate(spec))
    fm.save(model.state_dict(), tmp_path / "t.safetensors")
    extras = {"input": "text", "classes": ["neg", "pos"], "max_length": 8, "vocab": "v.json"}
    return SimpleNamespace(id="mdl_x", kind="text", extras=extras, spec=spec, weights="t.safetensors")


@pytest.mark.parametrize("kind", ["tabular", "text"])
def test_predictions_on_cuda_match_the_cpu(tmp_path, cuda_device, kind):
    from forgeml.server.predictor import Predictor, PredictorCache

    if kind == "tabular":
        row = _tabular_row(tmp_path)
        inputs = np.random.default_rng(0).standard_normal((6, 5)).round(3).tolist()
    else:
        row = _text_row(tmp_path)
        inputs = ["good movie", "bad plot bad", "unknown words here", "good"]
    on_cpu = Predictor(row, tmp_path)
    on_cuda = Predictor(row, tmp_path, device=cuda_device)
    assert all(p.device == CUDA for p in on_cuda.model.parameters())
    assert not on_cuda.model.training and not on_cuda.is_cheap(1)  # never blocks the event loop on a device sync
    classes, predicted, probabilities = on_cuda.predict(inputs)
    want_classes, want_predicted, want_probabilities = on_cpu.predict(inputs)
    assert classes == want_classes and predicted == want_predicted
    np.testing.assert_allclose(probabilities, want_probabilities, rtol=1e-5, atol=2e-6)
    assert all(isinstance(p, float) for row_ in probabilities for p in row_)

    cache = PredictorCache(tmp_path, device="cuda:0")
    assert cache.get(row).device == CUDA


# -- the app ------------------------------------------------------------------------------------------------
def _client(tmp_path, **settings):
    from fastapi.testclient import TestClient

    from forgeml.server.app import create_app

    return TestClient(create_app(ServerSettings(data_dir=tmp_path / "data", workers=1, **settings)))


@pytest.fixture
def clean_env(monkeypatch):
    for key in list(os.environ):
        if key.endswith("_API_KEY") or key.startswith("FORGEML_"):
            monkeypatch.delenv(key)


def test_readiness_reports_the_gpu_the_platform_uses(tmp_path, cuda_device, clean_env):
    with _client(tmp_path) as client:
        ready = client.get("/readyz").json()
        assert ready["status"] == "ready" and ready["checks"]["device"] == "ok"
        assert ready["device"].startswith("cuda:0")
        assert client.app.state.jobs.device == "cuda:0" and client.app.state.predictors.device == "cuda:0"
    with _client(tmp_path, device="cpu") as client:
        assert client.get("/readyz").json()["device"] == "cpu"
        assert client.app.state.jobs.device == "cpu"


def test_a_missing_gpu_makes_the_platform_not_ready_instead_of_crashing(tmp_path, no_gpu, clean_env):
    with _client(tmp_path, device="cuda") as client:
        ready = client.get("/readyz")
        assert ready.status_code == 503
        body = ready.json()
        assert body["status"] == "not ready" and body["device"] is None
        assert body["checks"]["device"].startswith("error: device 'cuda' was asked for, but CUDA is not available")
        assert client.get("/healthz").status_code == 200
        answer = client.post("/v1/models/mdl_nope/predict", json={"inputs": [[1.0]]})
        assert answer.status_code == 503 and "CUDA is not available" in answer.json()["detail"]
        assert client.app.state.jobs.device == "cuda"  # jobs that run fail with the same message
