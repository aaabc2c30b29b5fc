"""Schemathesis against the platform's own OpenAPI, in process: every operation answers every input with a
documented 2xx or 4xx, in the documented content type, headers and body schema; and the documented error
codes (400, 401, 404, 409, 413, 415, 422, 429) are the ones the routes really give, with the bodies
documented for them.

Two runs, on one app (an API key set, so that authentication is exercised too; no AI key: the offline
advisor answers):

* ``test_every_operation``: property tests of each operation, positive and negative data, in
  schemathesis's examples, coverage (boundary values, wrong types, missing fields, unexpected methods)
  and fuzzing phases;
* ``test_stateful``: the state machine that follows the OpenAPI links (a created or listed job to its
  detail, cancel, resume and events; a job to its model; a listed model to its predictions, weights and
  ONNX file; an uploaded dataset to its detail), starting from a dataset, models and jobs in each state
  that the fixture stores first, so that the chains reach real resources.

Checks: every check schemathesis has (``not_a_server_error``, ``status_code_conformance``,
``content_type_conformance``, ``response_schema_conformance``, ``response_headers_conformance``,
``positive_data_acceptance``, ``negative_data_rejection``, ``missing_required_header``, ``ignored_auth``,
``unsupported_method``, ``allow_header_conformance``, ``use_after_free``, ``ensure_resource_availability``,
``object_level_authorization``), except ``max_response_time``: a latency bound is not a property of the
API's answers, and on a loaded two-core machine it would fail at random. (``use_after_free``,
``ensure_resource_availability`` and ``object_level_authorization`` look for DELETE operations and
several users: this API has neither, so they pass without finding anything to test.)

``positive_data_acceptance`` expects a schema-valid request to succeed; the operations whose checks go
beyond what a JSON schema can say (a model that does not fit its dataset, a CSV without the target
column, inputs of the wrong width for the model, a sample the AI cannot imitate) may also answer 422, and
an upload whose file is not named .csv 415: those are added to its expected codes for them alone.

The budget is bounded and reproducible: a fixed seed, derandomized Hypothesis, few examples per operation
and few stateful scenarios (about 30 s on two cores). Jobs the fuzzer starts train on one niced worker
process with one thread and end with the app when the module ends; the fixture checks that no worker
process outlives it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck

from forgeml.server.app import create_app
from forgeml.server.settings import ServerSettings

from .conftest import TINY_MLP, child_processes, end_processes, offline_app

KEY = "schemathesis-api-key-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {KEY}"}
SETTINGS = {
    "api_key": KEY,
    "ai_rate_limit": 1_000_000,  # the fuzzer is one client; the 429 is tested on its own below
    "max_processes": 1,  # no multi-process (MPI) jobs
    "worker_threads": 1,
    "worker_nice": 19,
}
SEED = 15
EXAMPLES = 10  # per operation, in the fuzzing phase (the coverage phase's cases are deterministic)
SCENARIOS, STEPS = 25, 8  # stateful: scenarios, and steps in each
SEMANTIC_422 = [  # operations whose checks go beyond the schema: a schema-valid request may be a 422
    ("POST", "/v1/jobs"),
    ("POST", "/v1/jobs/{job_id}/resume"),  # the job's stored request, against today's limits
    ("POST", "/v1/models/{model_id}/predict"),  # and 410, below
    ("POST", "/v1/ai/analyze"),
    ("POST", "/v1/ai/synthetic-data"),
    ("POST", "/v1/ai/enhance"),
]
ACCEPTED = ["2xx", 401, 403, 404, 409, 429]  # schemathesis's default for positive_data_acceptance, less 3xx


def _config() -> schemathesis.Config:
    def accepting(method: str, path: str, *extra) -> dict:
        return {
            "include-name": f"{method} {path}",
            "checks": {"positive_data_acceptance": {"expected-statuses": [*ACCEPTED, *extra]}},
        }

    return schemathesis.Config.from_dict(
        {
            "seed": SEED,
            "headers": AUTH,
            "request-timeout": 20,
            "max-stream-events": 3,
            "generation": {"mode": "all", "max-examples": EXAMPLES},
            "phases": {"stateful": {"max-steps": STEPS}},
            "checks": {"positive_data_acceptance": {"expected-statuses": ACCEPTED}},
            "operations": [
                *(
                    accepting(method, path, 422, *([410] if path.endswith("predict") else []))
                    for method, path in SEMANTIC_422
                ),
                accepting("POST", "/v1/datasets", 415, 422),
                # a model whose weights are gone from the data directory (the fixture stores one)
                accepting("GET", "/v1/models/{model_id}/weights", 410),
                accepting("GET", "/v1/models/{model_id}/onnx", 410),
                # the stream of a job that is not over lasts until the job ends: one second of it is enough
                {"include-path": "/v1/jobs/{job_id}/events", "request-timeout": 1},
            ],
        }
    )


class AppUnderTest:
    """The ASGI app schemathesis calls: the app the ``fuzzed`` fixture started. Its lifespan (database, worker
    pool) runs under the fixture's TestClient, so the lifespan schemathesis would run is skipped."""

    app = None

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            return
        assert self.app is not None, "the fuzzed fixture starts the app"
        await self.app(scope, receive, send)


TARGET = AppUnderTest()
# The OpenAPI of an app with the same settings (the data directory does not show in it): loaded at import,
# as schemathesis parametrizes the test with its operations.
SPEC = create_app(ServerSettings(data_dir=Path("unused"), **SETTINGS)).openapi()
schema = schemathesis.openapi.from_dict(SPEC, config=_config())
schema.app = TARGET


def _niceness(pid: int) -> int | None:
    try:
        return os.getpriority(os.PRIO_PROCESS, pid)
    except OSError:
        return None


def _workers() -> dict[int, str]:
    """This process's children that run niced below it: the app's training workers (not multiprocessing's
    resource tracker, which runs at this process's niceness and lives as long as it)."""
    own = os.getpriority(os.PRIO_PROCESS, 0)
    return {pid: started for pid, started in child_processes(os.getpid()).items() if (_niceness(pid) or own) > own}


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory):
    """The app under test, started once for the module, with a dataset, two models and jobs in several
    states stored first; stopped at the end, and no worker process may outlive it."""
    with offline_app(tmp_path_factory.mktemp("schemathesis") / "data", **SETTINGS) as client:
        assert client.app.openapi() == SPEC
        client.headers.update(AUTH)
        _seed(client)
        TARGET.app = client.app
        try:
            yield client
        finally:
            TARGET.app = None
            workers = _workers()
    assert not end_processes(workers), "training worker processes outlived the app"


def _seed(client) -> None:
    import forgeml as fm
    from forgeml.nn import build
    from forgeml.server.db import JobRow, ModelRow
    from forgeml.specs import ModelSpec

    csv = "a,b,label\n" + "".join(f"{i % 7},{i % 5},{'yes' if i % 3 else 'no'}\n" for i in range(40))
    uploaded = client.post(
        "/v1/datasets", files={"file": ("rows.csv", csv.encode(), "text/csv")}, data={"target": "label"}
    )
    assert uploaded.status_code == 201, uploaded.text
    state = client.app.state
    spec = ModelSpec.model_validate(TINY_MLP)
    request = {"model": TINY_MLP, "dataset": "mnist", "epochs": 1, "batch_size": 256, "name": "seeded"}
    extras = {"input": "image", "mean": 0.1307, "std": 0.3081, "classes": [str(i) for i in range(10)]}
    (state.settings.data_dir / "models").mkdir(parents=True, exist_ok=True)
    fm.save(build(spec).state_dict(), state.settings.data_dir / "models" / "mdl_digits.safetensors")
    now = time.time()
    with state.db.session() as s:
        for job_state in ("completed", "cancelled", "failed", "interrupted"):  # resume: 409, 200, 200, 200
            s.add(JobRow(id=f"job_{job_state}", name=job_state, request=request, epochs=1, state=job_state))
        # an untrained digits MLP stored as the worker stores a trained one, listed first (the newest), and one
        # whose weights are gone from the data directory (its /weights and /onnx answer 410)
        for model_id, created in (("mdl_noweights", now - 1), ("mdl_digits", now)):
            s.add(
                ModelRow(
                    id=model_id,
                    name=model_id,
                    job_id="job_completed",
                    kind="image",
                    spec=spec.model_dump(mode="json"),
                    metrics={},
                    weights=f"models/{model_id}.safetensors",
                    extras=extras,
                    created=created,
                )
            )


@schema.parametrize()
@hypothesis.settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_every_operation(case, fuzzed):
    case.call_and_validate()


def test_stateful(fuzzed):
    """Chains of operations along the OpenAPI links, each answer checked as above."""
    machine = schema.as_state_machine()
    machine.run(
        settings=hypothesis.settings(
            max_examples=SCENARIOS,
            stateful_step_count=STEPS,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
    )


# -- the documented error codes, and one real answer of each, checked against the OpenAPI ---------------------
V1 = [(path, method) for path, operations in SPEC["paths"].items() if path.startswith("/v1/") for method in operations]
WITH_BODY = {(path, method) for path, method in V1 if "requestBody" in SPEC["paths"][path][method]}
NOT_FOUND = {
    ("/v1/jobs/{job_id}", "get"),
    ("/v1/jobs/{job_id}/cancel", "post"),
    ("/v1/jobs/{job_id}/resume", "post"),
    ("/v1/jobs/{job_id}/events", "get"),
    ("/v1/datasets/{dataset_id}", "get"),
    ("/v1/models/{model_id}", "get"),
    ("/v1/models/{model_id}/predict", "post"),
    ("/v1/models/{model_id}/weights", "get"),
    ("/v1/models/{model_id}/onnx", "get"),
}
CONFLICT = {
    ("/v1/jobs/{job_id}/cancel", "post"),
    ("/v1/jobs/{job_id}/resume", "post"),
    ("/v1/models/{model_id}/onnx", "get"),
}


def _responses(path: str, method: str) -> dict:
    return SPEC["paths"][path][method]["responses"]


def _json_schema(response: dict) -> dict:
    return response["content"]["application/json"]["schema"]


def test_the_openapi_documents_the_error_codes_the_routes_give():
    assert WITH_BODY == {
        ("/v1/jobs", "post"),
        ("/v1/datasets", "post"),
        ("/v1/models/{model_id}/predict", "post"),
        ("/v1/ai/analyze", "post"),
        ("/v1/ai/synthetic-data", "post"),
        ("/v1/ai/enhance", "post"),
    }
    error = {"$ref": "#/components/schemas/ErrorOut"}
    assert SPEC["components"]["schemas"]["ErrorOut"]["required"] == ["detail"]
    assert SPEC["components"]["securitySchemes"]["APIKey"] == {
        "type": "http",
        "scheme": "bearer",
        "description": SPEC["components"]["securitySchemes"]["APIKey"]["description"],
    }
    for path, method in V1:
        responses = _responses(path, method)
        assert SPEC["paths"][path][method]["security"] == [{"APIKey": []}], (path, method)
        assert _json_schema(responses["401"]) == error and "WWW-Authenticate" in responses["401"]["headers"]
        expected = {"401"}
        expected |= {"400", "413", "415"} if (path, method) in WITH_BODY else set()
        expected |= {"404"} if (path, method) in NOT_FOUND else set()
        expected |= {"409"} if (path, method) in CONFLICT else set()
        expected |= {"429"} if path.startswith("/v1/ai/") else set()
        assert expected <= set(responses), (path, method, sorted(responses))
        for code in expected:
            assert _json_schema(responses[code]) == error, (path, method, code)
        if path.startswith("/v1/ai/"):
            assert responses["429"]["headers"]["Retry-After"]["schema"] == {"type": "integer"}
        for code in {"409"} - expected:  # only where the route really gives it
            assert code not in responses, (path, method, code)
    for path, method in WITH_BODY:
        # every 422, the ones the routes raise themselves included (a CSV that is not a classification data set),
        # is FastAPI's list of errors
        assert _json_schema(_responses(path, method)["422"]) == {"$ref": "#/components/schemas/HTTPValidationError"}
    assert "text/event-stream" in _responses("/v1/jobs/{job_id}/events", "get")["200"]["content"]
    assert SPEC["paths"]["/healthz"]["get"].get("security") is None  # the operations routes need no key


@pytest.fixture
def small(make_client):
    """An app with a key and small limits, where every error is cheap to provoke; a completed job stored."""
    from forgeml.server.db import JobRow

    client = make_client(api_key=KEY, ai_rate_limit=10, max_body_bytes=1024, max_upload_bytes=2048, max_predict_batch=2)
    client.headers.update(AUTH)
    with client.app.state.db.session() as s:
        s.add(JobRow(id="job_done", name="done", request={"dataset": "mnist"}, epochs=1, state="completed"))
    return client


def _conforms(path: str, method: str, response) -> None:
    """``response`` is one the OpenAPI documents for the operation: its status code, content type, headers and
    body (schemathesis's checks)."""
    from schemathesis import checks

    case = schema[path][method.upper()].Case()
    response.request.read()  # a multipart upload's request is a stream: schemathesis reads what was sent
    case.validate_response(
        response,
        checks=[
            checks.not_a_server_error,
            checks.status_code_conformance,
            checks.content_type_conformance,
            checks.response_headers_conformance,
            checks.response_schema_conformance,
        ],
    )


def test_each_documented_error_is_what_the_route_answers(small):
    json_type = {"content-type": "application/json"}
    multipart = {"content-type": "multipart/form-data; boundary=xyz"}
    answers = [
        # 400: a JSON body that is not UTF-8; a multipart form that does not parse
        ("/v1/ai/analyze", "post", 400, {"content": b'{"model_description": "\xff"}', "headers": json_type}),
        ("/v1/datasets", "post", 400, {"content": b"garbage", "headers": multipart}),
        # 401: no key, or another one
        ("/v1/jobs", "get", 401, {"headers": {"Authorization": ""}}),
        ("/v1/ai/status", "get", 401, {"headers": {"Authorization": "Bearer not-the-key"}}),
        # 404: no such job, model, dataset
        ("/v1/jobs/{job_id}", "get", 404, {"url": "/v1/jobs/job_nope"}),
        ("/v1/jobs/{job_id}/events", "get", 404, {"url": "/v1/jobs/job_nope/events"}),
        (
            "/v1/models/{model_id}/predict",
            "post",
            404,
            {"url": "/v1/models/mdl_nope/predict", "json": {"inputs": [[0.5]]}},
        ),
        ("/v1/datasets/{dataset_id}", "get", 404, {"url": "/v1/datasets/ds_nope"}),
        # 409: a completed job is neither cancelled nor resumed
        ("/v1/jobs/{job_id}/cancel", "post", 409, {"url": "/v1/jobs/job_done/cancel"}),
        ("/v1/jobs/{job_id}/resume", "post", 409, {"url": "/v1/jobs/job_done/resume"}),
        # 413: over max_body_bytes (declared, or counted as it arrives), and over max_upload_bytes
        ("/v1/jobs", "post", 413, {"json": {"name": "x" * 2000}}),
        (
            "/v1/datasets",
            "post",
            413,
            {"files": {"file": ("big.csv", b"a,b\n" + b"1,2\n" * 1000)}, "data": {"target": "b"}},
        ),
        # 415: a JSON route sent another media type, or none; an upload sent JSON; a file not named .csv
        (
            "/v1/ai/analyze",
            "post",
            415,
            {"content": b'{"model_description": "x"}', "headers": {"content-type": "text/plain"}},
        ),
        ("/v1/jobs", "post", 415, {"content": b'{"preset": "mnist_mlp"}'}),
        ("/v1/datasets", "post", 415, {"json": {"target": "b"}}),
        ("/v1/datasets", "post", 415, {"files": {"file": ("x.exe", b"MZ")}, "data": {"target": "b"}}),
        # 422: the AI routes' own refusals are FastAPI's list of errors too, as the OpenAPI says
        (
            "/v1/ai/synthetic-data",
            "post",
            422,
            {"json": {"existing_data_sample": [[1, 2, 0], [1, 0]], "target_count": 5}},
        ),
        (
            "/v1/ai/analyze",
            "post",
            422,
            {"json": {"model_description": "x", "performance_metrics": {"train_loss": "low"}}},
        ),
        (
            "/v1/ai/enhance",
            "post",
            422,
            {"json": {"model_description": "x", "config": {"synthetic_data_ratio": False}}},
        ),
        (
            "/v1/models/{model_id}/predict",
            "post",
            422,
            {"url": "/v1/models/mdl_nope/predict", "json": {"inputs": [[0.5]] * 3}},
        ),
    ]
    for path, method, status, request in answers:
        url = request.pop("url", path)
        response = small.request(method, url, **request)
        assert response.status_code == status, (method, url, status, response.text)
        _conforms(path, method, response)
        detail = response.json()["detail"]
        if status == 422:
            assert isinstance(detail, list) and all({"loc", "msg", "type"} <= set(e) for e in detail), detail
        else:
            assert isinstance(detail, str) and detail, detail
        if status == 401:
            assert response.headers["www-authenticate"] == "Bearer"
    # 413 for a body sent without a Content-Length too, counted as it arrives
    streamed = small.post("/v1/ai/analyze", content=(b" " * 512 for _ in range(4)), headers=json_type)
    assert streamed.status_code == 413 and "limit" in streamed.json()["detail"]
    # the AI route's own 422 names what is wrong, at the body
    ragged = small.post("/v1/ai/synthetic-data", json={"existing_data_sample": [[1, 2, 0], [1, 0]], "target_count": 5})
    (error,) = ragged.json()["detail"]
    assert error["loc"] == ["body"] and error["type"] == "value_error" and error["msg"], error
    # 429: over the AI rate limit (10 a minute, some spent above), with Retry-After
    statuses = [small.get("/v1/ai/status") for _ in range(11)]
    limited = statuses[-1]
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1, limited.text
    _conforms("/v1/ai/status", "get", limited)


def test_405_names_every_method_of_the_path(small):
    response = small.request("DELETE", "/v1/jobs")
    assert response.status_code == 405 and response.headers["allow"] == "GET, POST"
    assert small.request("PUT", "/v1/jobs/job_done").headers["allow"] == "GET"
    assert small.request("GET", "/v1/jobs/job_done/cancel").headers["allow"] == "POST"


def test_without_an_api_key_no_route_declares_one(make_client):
    spec = make_client().app.openapi()
    assert "securitySchemes" not in spec.get("components", {})
    assert all("security" not in op for ops in spec["paths"].values() for op in ops.values())
