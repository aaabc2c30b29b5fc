"""Every route of the REST API, in process (TestClient, with the app's lifespan and its worker pool)."""

from __future__ import annotations

import io
import json
import logging
import math
import os
import time

import numpy as np
import pytest

import forgeml as fm
from forgeml.server.settings import ServerSettings

from .conftest import TINY_MLP, offline_app, wait_for_job


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    """One app for the module (its worker pool is spawned once), offline: no AI key reaches it."""
    with offline_app(tmp_path_factory.mktemp("api") / "data", ai_rate_limit=10_000) as client:
        yield client


@pytest.fixture(scope="module")
def mnist_model(api) -> dict:
    job = api.post("/v1/jobs", json={"preset": "mnist_mlp", "epochs": 2, "name": "api test mlp"}).json()
    done = wait_for_job(api, job["id"])
    assert done["state"] == "completed", done
    return {"job": done, "model_id": done["model_id"]}


def test_jobs_lifecycle_and_persisted_history(api, mnist_model):
    job = api.get(f"/v1/jobs/{mnist_model['job']['id']}").json()
    assert job["state"] == "completed" and job["epochs_done"] == 2 and job["dataset"] == "mnist"
    assert [h["epoch"] for h in job["history"]] == [1, 2]
    assert job["best_val_accuracy"] == max(h["val_accuracy"] for h in job["history"]) > 0.85
    assert job["request"]["preset"] == "mnist_mlp" and job["request"]["optimizer"]["name"] == "adam"
    listed = api.get("/v1/jobs").json()
    assert mnist_model["job"]["id"] in [j["id"] for j in listed]
    assert all("history" not in j or j["history"] is None for j in listed)


def test_presets_are_listed_with_their_defaults(api):
    presets = api.get("/v1/jobs/presets").json()
    assert set(presets) == {"mnist_mlp", "mnist_ai_enhanced", "spam_transformer"}
    assert presets["mnist_mlp"]["ai"] is None and presets["mnist_ai_enhanced"]["ai"]["synthetic_data_ratio"] == 0.3
    assert presets["spam_transformer"]["dataset"] == "spam" and presets["mnist_mlp"]["description"]
    assert presets["mnist_mlp"]["model"]["layers"][0]["args"] == {"in_features": 784, "out_features": 512}


def test_an_explicit_null_turns_a_presets_ai_guidance_off(api):
    guided = api.post("/v1/jobs", json={"preset": "mnist_ai_enhanced", "epochs": 1}).json()
    plain = api.post("/v1/jobs", json={"preset": "mnist_ai_enhanced", "epochs": 1, "ai": None}).json()
    assert guided["ai_enabled"] and not plain["ai_enabled"]
    request = api.get(f"/v1/jobs/{plain['id']}").json()["request"]
    assert request["ai"] is None and request["optimizer"]["lr"] == 0.001
    for job in (guided, plain):
        assert api.post(f"/v1/jobs/{job['id']}/cancel").status_code in (200, 409)
        wait_for_job(api, job["id"])


def test_job_from_a_full_spec_with_overrides(api):
    body = {
        "model": TINY_MLP,
        "dataset": "mnist",
        "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9},
        "epochs": 1,
        "batch_size": 128,
    }
    created = api.post("/v1/jobs", json=body)
    assert created.status_code == 201, created.text
    assert created.json()["state"] == "queued" and created.json()["name"] == "training job"
    done = wait_for_job(api, created.json()["id"])
    assert done["state"] == "completed", done
    model = api.get(f"/v1/models/{done['model_id']}").json()
    assert model["spec"]["layers"][0]["args"]["out_features"] == 32
    assert model["lineage"]["optimizer"]["name"] == "sgd" and model["lineage"]["job_id"] == done["id"]


def test_ai_enhanced_job_records_ai_events(api):
    body = {
        "preset": "mnist_ai_enhanced",
        "epochs": 2,
        "ai": {"optimization_guidance_frequency": 1, "research_update_interval": 1, "synthetic_data_ratio": 0.0},
    }
    job = wait_for_job(api, api.post("/v1/jobs", json=body).json()["id"])
    assert job["state"] == "completed", job
    detail = api.get(f"/v1/jobs/{job['id']}").json()
    assert detail["ai_enabled"] and detail["events"], detail
    # the offline advisor answered every request; the trainer itself reports verdicts and experiments
    assert {e["provider"] for e in detail["events"] if e["kind"] not in ("verdict", "experiment")} == {"local"}
    assert {e["provider"] for e in detail["events"] if e["kind"] in ("verdict", "experiment")} <= {"trainer"}
    assert all(e["epoch"] >= 0 and e["kind"] for e in detail["events"])
    assert "provider_usage" in detail["summary"]
    # the calls the job's worker made reach /metrics through the database
    job_calls = [
        line for line in api.get("/metrics").text.splitlines() if line.startswith("forgeml_job_ai_calls_total")
    ]
    made = sum(float(line.rsplit(" ", 1)[1]) for line in job_calls if 'outcome="ok"' in line)
    assert 'provider="local",task="analysis"' in "".join(job_calls)
    # the summary is a snapshot taken when fit returns; an answer still in flight then is stored after it
    assert made >= detail["summary"]["provider_usage"]["local"]["calls"] >= 1
    assert 'forgeml_job_ai_cost_usd_total{provider="local"} 0.0' in api.get("/metrics").text


def test_cancel_then_resume_finishes_from_the_checkpoint(api):
    epochs = 8  # still running when cancelled after its first epoch
    job = api.post("/v1/jobs", json={"preset": "mnist_mlp", "epochs": epochs}).json()
    # Cancel after the first checkpoint: a cancel stops the job between batches, so one sent as soon as it
    # runs can end it before any epoch (that case is test_faults.py's).
    deadline = time.monotonic() + 120
    while api.get(f"/v1/jobs/{job['id']}").json()["epochs_done"] < 1:
        assert time.monotonic() < deadline, "the job trained no epoch in 120 s"
        time.sleep(0.05)
    cancelled = api.post(f"/v1/jobs/{job['id']}/cancel")
    assert cancelled.status_code == 200
    stopped = wait_for_job(api, job["id"])
    assert stopped["state"] == "cancelled" and 0 < stopped["epochs_done"] < epochs
    assert api.post(f"/v1/jobs/{job['id']}/cancel").status_code == 409
    resumed = api.post(f"/v1/jobs/{job['id']}/resume")
    assert resumed.status_code == 200 and resumed.json()["state"] == "queued"
    # the resumed run continues where the checkpoint left off: no epoch is trained twice
    done = wait_for_job(api, job["id"])
    assert done["state"] == "completed", done
    trained = [h["epoch"] for h in api.get(f"/v1/jobs/{job['id']}").json()["history"]]
    assert trained == list(range(1, epochs + 1))
    assert api.post(f"/v1/jobs/{job['id']}/resume").status_code == 409


def test_sse_stream_replays_a_finished_job_in_order(api, mnist_model):
    job_id = mnist_model["job"]["id"]
    with api.stream("GET", f"/v1/jobs/{job_id}/events") as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = _parse_sse(response.iter_text())
    kinds = [e["event"] for e in events]
    assert kinds[0] == "state" and kinds[-1] == "end"
    assert [e["data"]["epoch"] for e in events if e["event"] == "epoch"] == [1, 2]
    last_id = next(e["id"] for e in events if e["event"] == "epoch" and e["data"]["epoch"] == 1)
    with api.stream("GET", f"/v1/jobs/{job_id}/events", headers={"Last-Event-ID": last_id}) as response:
        resumed = _parse_sse(response.iter_text())
    assert [e["data"]["epoch"] for e in resumed if e["event"] == "epoch"] == [2]


def _parse_sse(chunks) -> list[dict]:
    text = "".join(chunks)
    events = []
    for block in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if not line.startswith(":"))
        events.append({"event": fields["event"], "id": fields.get("id"), "data": json.loads(fields["data"])})
    return events


def test_predict_digits_batched(api, mnist_model):
    from forgeml.data.datasets import MNIST

    test = MNIST("test", flatten=True)
    pixels = (test.data[:64].reshape(64, 784) / 255.0).round(4).tolist()
    response = api.post(f"/v1/models/{mnist_model['model_id']}/predict", json={"inputs": pixels})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["classes"] == [str(i) for i in range(10)]
    probabilities = np.array(body["probabilities"])
    assert probabilities.shape == (64, 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-4)
    accuracy = np.mean([p == str(t) for p, t in zip(body["predictions"], test.targets[:64], strict=True)])
    assert accuracy > 0.85


def test_a_busy_model_never_blocks_the_event_loop(api, mnist_model):
    """While another request holds the model, a small prediction waits in the thread pool, not on the loop."""
    import threading

    model_id = mnist_model["model_id"]
    digit = {"inputs": [[0.0] * 784]}
    assert api.post(f"/v1/models/{model_id}/predict", json=digit).status_code == 200  # loaded and cached
    predictor = api.app.state.predictors.cached(model_id)
    assert predictor is not None and predictor.is_cheap(1)
    answers = []
    with predictor._lock:  # as a big batch running in a worker thread would
        assert predictor.predict(digit["inputs"], wait=False) is None
        waiting = threading.Thread(
            target=lambda: answers.append(api.post(f"/v1/models/{model_id}/predict", json=digit))
        )
        waiting.start()
        waiting.join(0.5)
        assert waiting.is_alive() and not answers  # the prediction waits for the model...
        health = []
        probe = threading.Thread(target=lambda: health.append(api.get("/healthz").status_code), daemon=True)
        probe.start()
        probe.join(10)
        held_up = probe.is_alive()
    waiting.join(30)
    assert not held_up and health == [200], "the event loop was blocked by a prediction waiting for its model"
    assert answers and answers[0].status_code == 200, answers


def test_predict_matches_the_model_run_locally(api, mnist_model):
    from forgeml.nn import build
    from forgeml.server.worker import MNIST_MEAN, MNIST_STD
    from forgeml.specs import ModelSpec

    model_id = mnist_model["model_id"]
    info = api.get(f"/v1/models/{model_id}").json()
    weights = api.get(f"/v1/models/{model_id}/weights")
    assert weights.status_code == 200 and weights.headers["content-type"] == "application/octet-stream"
    from safetensors.numpy import load as st_load

    state = {k: fm.from_numpy(v) for k, v in st_load(weights.content).items()}
    model = build(ModelSpec.model_validate(info["spec"]))
    model.load_state_dict(state)
    model.eval()
    x = np.random.default_rng(0).random((3, 784)).astype(np.float32)
    with fm.no_grad():
        logits = model(fm.from_numpy((x - MNIST_MEAN) / MNIST_STD)).numpy()
    expected = np.exp(logits - logits.max(1, keepdims=True))
    expected /= expected.sum(1, keepdims=True)
    served = api.post(f"/v1/models/{model_id}/predict", json={"inputs": x.tolist()}).json()
    np.testing.assert_allclose(served["probabilities"], expected, atol=1e-5)


@pytest.mark.parametrize(
    ("inputs", "fragment"),
    [
        ([[0.0] * 783], "784 numbers"),
        (["a digit as text"], "rows of numbers"),
        ([], "inputs"),
    ],
)
def test_predict_rejects_inputs_that_do_not_fit(api, mnist_model, inputs, fragment):
    response = api.post(f"/v1/models/{mnist_model['model_id']}/predict", json={"inputs": inputs})
    assert response.status_code == 422 and fragment in response.text


def test_predict_rejects_non_finite_and_oversized_batches(api, mnist_model):
    url = f"/v1/models/{mnist_model['model_id']}/predict"
    bad = api.post(
        url, content=b'{"inputs": [[NaN' + b", 0" * 783 + b"]]}", headers={"content-type": "application/json"}
    )
    assert bad.status_code == 422
    too_many = api.post(url, json={"inputs": [[0.0] * 784] * 1025})
    assert too_many.status_code in (413, 422)


def test_text_model_predicts_from_raw_strings(api, tmp_path):
    """A text model row (trained briefly here, in process) is served from raw strings."""
    from forgeml.data.datasets import SpamAssassin
    from forgeml.data.text import TextClassificationDataset
    from forgeml.nn import build
    from forgeml.server.db import JobRow, ModelRow
    from forgeml.specs import ModelSpec

    raw = SpamAssassin("train")
    ds = TextClassificationDataset(raw.texts[:200], raw.labels[:200], min_freq=2, max_length=32)
    spec = ModelSpec.model_validate(
        {
            "input_shape": [32],
            "layers": [
                {"type": "Embedding", "args": {"num_embeddings": len(ds.vocab), "embedding_dim": 8, "padding_idx": 0}},
                {"type": "SequencePool", "args": {"mode": "mean"}},
                {"type": "Linear", "args": {"in_features": 8, "out_features": 2}},
            ],
        }
    )
    model = build(spec)
    state = api.app.state
    data_dir = state.settings.data_dir
    fm.save(model.state_dict(), data_dir / "models" / "mdl_texttest.safetensors")
    ds.vocab.save(data_dir / "models" / "mdl_texttest.vocab.json")
    with state.db.session() as s:
        s.add(JobRow(id="job_texttest", name="text", request={"dataset": "spam"}, epochs=1, state="completed"))
        s.add(
            ModelRow(
                id="mdl_texttest",
                name="text",
                job_id="job_texttest",
                kind="text",
                spec=spec.model_dump(mode="json"),
                metrics={},
                weights="models/mdl_texttest.safetensors",
                extras={"classes": ["ham", "spam"], "max_length": 32, "vocab": "models/mdl_texttest.vocab.json"},
            )
        )
    response = api.post(
        "/v1/models/mdl_texttest/predict", json={"inputs": ["WIN MONEY NOW!!! click here", "", "meeting at 10"]}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["classes"] == ["ham", "spam"] and len(body["predictions"]) == 3
    assert all(math.isclose(sum(p), 1.0, abs_tol=1e-5) for p in body["probabilities"])
    numbers = api.post("/v1/models/mdl_texttest/predict", json={"inputs": [[1.0, 2.0]]})
    assert numbers.status_code == 422 and "strings" in numbers.text


CSV = "f1,f2,f3,label\n" + "\n".join(
    f"{a:.3f},{b:.3f},{a - b:.3f},{'yes' if a > b else 'no'}" for a, b in np.random.default_rng(0).random((200, 2))
)


def test_csv_upload_summary_and_a_tabular_job(api):
    response = api.post(
        "/v1/datasets", files={"file": ("points.csv", CSV.encode(), "text/csv")}, data={"target": "label"}
    )
    assert response.status_code == 201, response.text
    dataset = response.json()
    summary = dataset["summary"]
    assert summary["rows"] == 200 and summary["features"] == 3 and summary["classes"] == ["no", "yes"]
    assert sum(summary["class_counts"].values()) == 200
    assert dataset["id"] in [d["id"] for d in api.get("/v1/datasets").json()]
    assert api.get(f"/v1/datasets/{dataset['id']}").json()["name"] == "points.csv"
    spec = {
        "input_shape": [3],
        "layers": [
            {"type": "Linear", "args": {"in_features": 3, "out_features": 16}},
            {"type": "ReLU"},
            {"type": "Linear", "args": {"in_features": 16, "out_features": 2}},
        ],
    }
    job = api.post(
        "/v1/jobs",
        json={
            "model": spec,
            "dataset": dataset["id"],
            "epochs": 20,
            "batch_size": 16,
            "optimizer": {"name": "adam", "lr": 0.01},
        },
    )
    assert job.status_code == 201, job.text
    done = wait_for_job(api, job.json()["id"])
    assert done["state"] == "completed", done
    predicted = api.post(
        f"/v1/models/{done['model_id']}/predict", json={"inputs": [[0.9, 0.1, 0.8], [0.1, 0.9, -0.8]]}
    ).json()
    assert predicted["predictions"] == ["yes", "no"]
    wrong_width = api.post(f"/v1/models/{done['model_id']}/predict", json={"inputs": [[0.9, 0.1]]})
    assert wrong_width.status_code == 422 and "3 numbers" in wrong_width.text
    mismatched = api.post("/v1/jobs", json={"model": TINY_MLP, "dataset": dataset["id"], "epochs": 1})
    assert mismatched.status_code == 422 and "layer 0" in mismatched.text


@pytest.mark.parametrize(
    ("csv", "target", "fragment"),
    [
        ("a,b,label\n1,2,x\n3,oops,y\n", "label", "oops"),
        ("a,b,label\n1,2,x\n3,4,y\n", "missing", "no target column 'missing'"),
        ("a,b,label\n1,2,0.5\n3,4,1.5\n", "label", "class labels"),
        ("a,label\n1,x\n", "label", "at least 2 rows"),
        ("a,b,label\n1,2,x\n3,nan,y\n", "label", "column 'b' has a missing or non-finite value in data row 2"),
        ("a,b,label\n1,inf,x\n3,4,y\n", "label", "column 'b' has a missing or non-finite value in data row 1"),
    ],
)
def test_csv_upload_rejects_bad_files_naming_the_problem(api, csv, target, fragment):
    response = api.post("/v1/datasets", files={"file": ("bad.csv", csv.encode(), "text/csv")}, data={"target": target})
    assert response.status_code == 422, response.text
    [error] = response.json()["detail"]  # the same list of errors as every 422, at the file
    assert error["loc"] == ["body", "file"] and fragment in error["msg"]
    assert "/" not in error["msg"].split(":")[0]  # names the upload, not a server path


def test_csv_upload_needs_a_csv_and_a_target(api):
    assert (
        api.post(
            "/v1/datasets", files={"file": ("x.exe", b"MZ", "application/octet-stream")}, data={"target": "y"}
        ).status_code
        == 415
    )
    missing = api.post("/v1/datasets", files={"file": ("x.csv", b"a,b\n1,2\n", "text/csv")})
    assert missing.status_code == 422 and "target" in missing.text


def test_unknown_ids_are_404(api):
    for method, url in [
        ("GET", "/v1/jobs/job_nope"),
        ("POST", "/v1/jobs/job_nope/cancel"),
        ("POST", "/v1/jobs/job_nope/resume"),
        ("GET", "/v1/jobs/job_nope/events"),
        ("GET", "/v1/models/mdl_nope"),
        ("GET", "/v1/models/mdl_nope/weights"),
        ("GET", "/v1/datasets/ds_nope"),
    ]:
        response = api.request(method, url)
        assert response.status_code == 404, (url, response.text)
        assert "nope" in response.json()["detail"]
    predict = api.post("/v1/models/mdl_nope/predict", json={"inputs": [[0.0] * 784]})
    assert predict.status_code == 404


@pytest.mark.parametrize(
    ("body", "loc", "fragment"),
    [
        ({}, ["body"], "preset or a model spec"),
        ({"preset": "imagenet"}, ["body", "preset"], "mnist_mlp"),
        ({"preset": "mnist_mlp", "epochs": 0}, ["body", "epochs"], "greater than or equal to 1"),
        ({"preset": "mnist_mlp", "batch_size": "big"}, ["body", "batch_size"], "integer"),
        ({"preset": "mnist_mlp", "optimizer": {"name": "adam", "lr": -1}}, ["body", "optimizer", "lr"], "greater than"),
        (
            {"preset": "mnist_mlp", "ai": {"synthetic_data_ratio": 5}},
            ["body", "ai", "synthetic_data_ratio"],
            "less than",
        ),
        ({"preset": "mnist_mlp", "dataset": "ds_missing"}, ["body", "dataset"], "ds_missing"),
        ({"preset": "mnist_mlp", "surprise": 1}, ["body", "surprise"], "Extra inputs"),
        (
            {
                "model": {
                    **TINY_MLP,
                    "layers": [{"type": "Linear", "args": {"in_features": 784, "out_features": 32}}, {"type": "Warp"}],
                },
                "dataset": "mnist",
            },
            ["body", "model", "layers", 1],
            "Warp",
        ),
        (
            {
                "model": {
                    **TINY_MLP,
                    "layers": [
                        TINY_MLP["layers"][0],
                        {"type": "Linear", "args": {"in_features": 64, "out_features": 10}},
                    ],
                },
                "dataset": "mnist",
            },
            ["body", "model", "layers", 1],
            "layer 1",
        ),
        ({"model": TINY_MLP, "dataset": "spam"}, ["body", "model", "layers", 0], "layer 0"),
    ],
)
def test_bad_job_requests_are_422_naming_the_field(api, body, loc, fragment):
    response = api.post("/v1/jobs", json=body)
    assert response.status_code == 422, response.text
    errors = response.json()["detail"]
    assert any(e["loc"][: len(loc)] == loc and fragment in e["msg"] for e in errors), errors


def test_malformed_json_is_422(api):
    response = api.post("/v1/jobs", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 422


def test_ai_status_lists_every_provider_and_no_key(api):
    status = api.get("/v1/ai/status").json()
    assert set(status["providers"]) == {"openai", "anthropic", "perplexity", "gemini", "xai", "local"}
    assert status["providers"]["local"]["configured"] is True
    assert not any(p["configured"] for name, p in status["providers"].items() if name != "local")


def test_ai_enhance_minimal_body_works(api):
    response = api.post("/v1/ai/enhance", json={"model_description": "test", "config": {}})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["synthetic_data"] is None
    assert body["analysis"]["provider"] == "local" and body["research"]["citations"]


def test_ai_enhance_with_data_and_providers(api):
    rows = [[0.1, 0.2, 0], [0.9, 0.8, 1], [0.2, 0.1, 0], [0.8, 0.9, 1]] * 5
    body = {
        "model_description": "a small classifier",
        "training_data": rows,
        "config": {"ai_providers": ["openai", "anthropic"], "synthetic_data_ratio": 0.5},
    }
    response = api.post("/v1/ai/enhance", json=body)
    assert response.status_code == 200, response.text
    out = response.json()
    assert out["requested_providers"] == ["openai", "anthropic"]
    assert out["synthetic_data"]["accepted"] == 10
    # only the requested providers are tried (none is configured here), then the offline advisor
    tried = {a["provider"] for a in out["analysis"]["attempts"]}
    assert tried <= {"openai", "anthropic", "local"} and "local" in tried
    bad = api.post("/v1/ai/enhance", json={**body, "config": {"ai_providers": ["skynet"]}})
    assert bad.status_code == 422 and "ai_providers" in bad.text


def test_ai_research_synthetic_and_analyze(api):
    research = api.get("/v1/ai/research", params={"domain": "computer_vision", "recency": "month"})
    assert research.status_code == 200 and research.json()["insights"] and research.json()["citations"]
    assert api.get("/v1/ai/research", params={"recency": "decade"}).status_code == 422
    sample = [[0.1, 0.2, 0], [0.9, 0.8, 1], [0.15, 0.25, 0], [0.85, 0.95, 1]]
    synthetic = api.post(
        "/v1/ai/synthetic-data", json={"model_type": "classifier", "existing_data_sample": sample, "target_count": 20}
    )
    assert synthetic.status_code == 200 and synthetic.json()["accepted"] == 20
    assert all(s["label"] in (0, 1) for s in synthetic.json()["samples"])
    ragged = api.post("/v1/ai/synthetic-data", json={"existing_data_sample": [[1, 2, 0], [1, 0]], "target_count": 5})
    assert ragged.status_code == 422
    assert api.post("/v1/ai/synthetic-data", json={"existing_data_sample": [], "target_count": 5}).status_code == 422
    metrics = {
        "train_loss": [1.0, 0.5, 0.2, 0.1],
        "val_loss": [1.0, 0.8, 0.9, 1.1],
        "train_accuracy": [0.6, 0.8, 0.95, 0.99],
        "val_accuracy": [0.6, 0.7, 0.69, 0.68],
    }
    analysis = api.post("/v1/ai/analyze", json={"model_description": "an MLP", "performance_metrics": metrics})
    assert analysis.status_code == 200
    assert "overfit" in analysis.json()["diagnosis"].lower() and analysis.json()["recommendations"]
    bad = api.post("/v1/ai/analyze", json={"model_description": "x", "performance_metrics": {"train_loss": "low"}})
    assert bad.status_code == 422
    assert api.post("/v1/ai/analyze", json={"performance_metrics": {}}).status_code == 422


def test_ai_routes_are_rate_limited_with_retry_after(make_client):
    client = make_client(ai_rate_limit=3)
    codes = [client.get("/v1/ai/status").status_code for _ in range(5)]
    assert codes[:3] == [200, 200, 200] and codes[3:] == [429, 429]
    limited = client.get("/v1/ai/status")
    assert int(limited.headers["retry-after"]) >= 1 and "rate limit" in limited.json()["detail"]
    assert client.get("/v1/jobs").status_code == 200  # only /v1/ai/* is limited


def test_api_key_guards_every_v1_route_and_never_leaks(make_client, tmp_path, caplog):
    secret = "fk-super-secret-key-0123456789"
    provider_secret = "sk-provider-secret-abcdef"
    os.environ["OPENAI_API_KEY"] = provider_secret
    try:
        client = make_client(api_key=secret)
        caplog.set_level(logging.DEBUG)
        guarded = [
            ("GET", "/v1/ai/status"),
            ("GET", "/v1/jobs"),
            ("POST", "/v1/jobs"),
            ("GET", "/v1/models"),
            ("GET", "/v1/datasets"),
            ("GET", "/v1/ai/research"),
            ("POST", "/v1/ai/analyze"),
        ]
        for method, url in guarded:
            assert client.request(method, url).status_code == 401, url
            assert client.request(method, url, headers={"Authorization": "Bearer wrong"}).status_code == 401, url
        unauthorized = client.get("/v1/jobs")
        assert unauthorized.headers["www-authenticate"] == "Bearer"
        headers = {"Authorization": f"Bearer {secret}"}
        status = client.get("/v1/ai/status", headers=headers)
        assert status.status_code == 200 and status.json()["providers"]["openai"]["configured"] is True
        job = client.post("/v1/jobs", json={"preset": "mnist_mlp", "epochs": 1}, headers=headers)
        assert job.status_code == 201
        done = wait_for_job(_Authed(client, headers), job.json()["id"])
        assert done["state"] == "completed"
        assert client.get("/healthz").status_code == 200 and client.get("/").status_code == 200  # open routes
        texts = [status.text, job.text, client.get("/metrics").text, client.get("/openapi.json").text, caplog.text]
        texts.append(client.get(f"/v1/jobs/{done['id']}", headers=headers).text)
        database = b"".join(p.read_bytes() for p in (tmp_path / "data").rglob("*") if p.is_file())
        for secret_value in (secret, provider_secret):
            assert all(secret_value not in t for t in texts)
            assert secret_value.encode() not in database
        assert secret not in repr(client.app.state.settings)
    finally:
        del os.environ["OPENAI_API_KEY"]


class _Authed:
    def __init__(self, client, headers):
        self.client, self.headers = client, headers

    def get(self, url):
        return self.client.get(url, headers=self.headers)


def test_request_bodies_over_the_cap_are_413(make_client):
    client = make_client(max_body_bytes=4096, max_upload_bytes=8192)
    big = {"model_description": "x" * 5000}
    assert client.post("/v1/ai/analyze", json=big).status_code == 413

    def chunks():  # no Content-Length: counted as it arrives
        for _ in range(10):
            yield b" " * 1000

    streamed = client.post("/v1/ai/analyze", content=chunks(), headers={"content-type": "application/json"})
    assert streamed.status_code == 413 and "limit" in streamed.json()["detail"]
    upload = client.post(
        "/v1/datasets", files={"file": ("big.csv", b"a,b\n" + b"1,2\n" * 3000, "text/csv")}, data={"target": "b"}
    )
    assert upload.status_code == 413
    small = client.post(
        "/v1/datasets", files={"file": ("ok.csv", b"a,b\n1,0\n2,1\n3,0\n", "text/csv")}, data={"target": "b"}
    )
    assert small.status_code == 201


def test_dashboard_security_headers_and_csp(api):
    page = api.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert page.headers["x-content-type-options"] == "nosniff" and page.headers["x-frame-options"] == "DENY"
    plotly = api.get("/static/vendor/plotly.min.js")
    assert plotly.status_code == 200 and len(plotly.content) > 1_000_000
    assert api.get("/docs").status_code == 200
    assert "/v1/jobs/{job_id}/events" in api.get("/openapi.json").json()["paths"]


def test_health_readiness_and_metrics(api, mnist_model):
    assert api.get("/healthz").json() == {"status": "ok"}
    ready = api.get("/readyz").json()
    assert ready["status"] == "ready" and ready["checks"] == {"database": "ok", "jobs": "ok", "device": "ok"}
    # FORGEML_DEVICE is unset: auto, the GPU when there is one
    assert ready["device"] == "cpu" if not fm.cuda.is_available() else ready["device"].startswith("cuda:0")
    api.post("/v1/ai/analyze", json={"model_description": "m", "performance_metrics": {"train_loss": [1.0, 0.5]}})
    text = api.get("/metrics").text
    assert 'forgeml_jobs{state="completed"}' in text
    assert 'forgeml_http_requests_total{method="GET",route="/v1/jobs/{job_id}",status="200"}' in text
    assert 'forgeml_http_request_duration_seconds_bucket{le="0.005",method="POST",route="/v1/ai/analyze"}' in text
    assert 'forgeml_ai_calls_total{outcome="ok",provider="local",task="analysis"}' in text


def test_jobs_record_their_device_and_a_missing_device_fails_the_job_clearly(api, mnist_model):
    detail = api.get(f"/v1/jobs/{mnist_model['job']['id']}").json()
    assert detail["summary"]["device"] == ("cuda:0" if fm.cuda.is_available() else "cpu")
    if fm.cuda.is_available():
        pytest.skip("this machine has a GPU: a job asking for one would train")
    before = len(api.get("/v1/jobs").json())
    job = api.post("/v1/jobs", json={"preset": "mnist_mlp", "epochs": 1, "device": "cuda", "name": "no gpu"})
    assert job.status_code == 422, job.text
    (error,) = job.json()["detail"]
    assert error["loc"] == ["body", "device"]
    assert "device 'cuda' was asked for, but CUDA is not available" in error["msg"]
    assert len(api.get("/v1/jobs").json()) == before  # nothing was queued
    assert api.get("/readyz").status_code == 200  # the server carries on


def test_structured_json_access_log(api):
    from forgeml.server.observability import JsonFormatter

    record = logging.makeLogRecord(
        {"name": "forgeml.server.access", "msg": "request", "levelname": "INFO", "route": "/v1/jobs", "status": 200}
    )
    line = json.loads(JsonFormatter().format(record))
    assert (
        line["message"] == "request"
        and line["route"] == "/v1/jobs"
        and line["status"] == 200
        and line["level"] == "info"
    )


def test_non_loopback_without_a_key_refuses_to_start():
    with pytest.raises(SystemExit, match="FORGEML_API_KEY"):
        ServerSettings(host="0.0.0.0").check_exposure()
    ServerSettings(host="0.0.0.0", api_key="k" * 32).check_exposure()
    ServerSettings(host="127.0.0.1").check_exposure()
    ServerSettings(host="::1").check_exposure()


def test_ai_call_outcomes_become_bounded_metric_labels():
    from forgeml.server.observability import outcome_label

    assert outcome_label("ok") == "ok" and outcome_label("cache hit") == "cache hit"
    assert outcome_label("error: ProviderUnavailable: connection failed: [Errno 111]") == "error: ProviderUnavailable"
    assert outcome_label("invalid output: 3 validation errors for AnalysisDraft ...") == "invalid output"


def test_training_workers_are_limited_to_their_share_of_blas_threads():
    import subprocess
    import sys

    cores = os.cpu_count() or 1
    assert ServerSettings(workers=2).blas_threads_per_worker == max(1, (cores - 1) // 2)
    assert ServerSettings(workers=1, worker_threads=3).blas_threads_per_worker == 3
    script = (
        "import numpy, threadpoolctl\n"
        "from forgeml.server.jobs import _init_worker\n"
        "_init_worker(0, 1)\n"
        "print([p['num_threads'] for p in threadpoolctl.threadpool_info() if p['user_api'] == 'blas'])"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[1]", out


def test_settings_from_environment():
    env = {
        "FORGEML_PORT": "5123",
        "FORGEML_WORKERS": "3",
        "FORGEML_API_KEY": "abc",
        "FORGEML_DATABASE_URL": "postgresql+psycopg://u@h/db",
        "FORGEML_WORKER_NICE": "5",
    }
    settings = ServerSettings.from_env(env, host="127.0.0.2")
    assert settings.port == 5123 and settings.workers == 3 and settings.host == "127.0.0.2"
    assert settings.worker_nice == 5 and ServerSettings().worker_nice == 10
    assert settings.db_url == "postgresql+psycopg://u@h/db" and "abc" not in repr(settings)
    with pytest.raises(ValueError, match="workers"):
        ServerSettings.from_env({"FORGEML_WORKERS": "0"})


def test_upload_io_is_atomic_on_rejection(api):
    folder = api.app.state.settings.data_dir / "datasets"
    before = sorted(p.name for p in folder.glob("*")) if folder.exists() else []
    api.post(
        "/v1/datasets", files={"file": ("bad.csv", io.BytesIO(b"a,label\n1,x\n"), "text/csv")}, data={"target": "label"}
    )
    assert sorted(p.name for p in folder.glob("*")) == before
