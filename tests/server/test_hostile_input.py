"""Wrong types in every JSON body: each field of each route (and of its nested objects) gets values of
the wrong kind (objects, lists, null, NaN, 1e400, strings), and the answer is a client error, never a 500.

The routes and their fields come from the app's OpenAPI schema, so a new route or field is covered
without editing this file. A job body names a missing dataset and more processes than the server's cap
(two guards, as a null field takes the preset's value), so that no body here that passes validation
starts a training job: the route refuses it with a 422 before queueing.
"""

from __future__ import annotations

import json

import pytest

from .conftest import offline_app

# JSON texts (not Python values): NaN and Infinity are not strict JSON, but Python's parser reads them
HOSTILE = ["{}", "[]", "null", "[{}]", "[[]]", "true", "-1", "1e400", "-1e400", "NaN", str(10**40), '"hostile"', '""']
BASES = {  # a body that passes validation except where a test swaps a field, per (method, path)
    ("post", "/v1/jobs"): {"preset": "mnist_mlp", "dataset": "ds_missing", "processes": 256},
    ("post", "/v1/ai/analyze"): {"model_description": "a digit classifier", "performance_metrics": {}},
    ("post", "/v1/ai/synthetic-data"): {"existing_data_sample": [[0.0, 1.0]], "target_count": 2},
    ("post", "/v1/ai/enhance"): {"model_description": "a digit classifier"},
    ("post", "/v1/models/{model_id}/predict"): {"inputs": [[0.0, 1.0]]},
}


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    with offline_app(tmp_path_factory.mktemp("hostile") / "data", ai_rate_limit=1_000_000, max_processes=1) as client:
        yield client


def _json_routes(spec: dict) -> list[tuple[str, str, dict]]:
    """(method, path, body schema) of every route whose request body is JSON."""
    found = []
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            content = (operation.get("requestBody") or {}).get("content", {})
            if "application/json" in content:
                found.append((method, path, _resolve(spec, content["application/json"]["schema"])))
    return found


def _resolve(spec: dict, schema: dict) -> dict:
    while "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def _object_properties(spec: dict, schema: dict) -> dict:
    """The properties of an object schema (through $ref and a nullable anyOf), or {}."""
    schema = _resolve(spec, schema)
    for option in schema.get("anyOf", []):
        properties = _object_properties(spec, option)
        if properties:
            return properties
    return schema.get("properties", {})


def _bodies(spec: dict, base: dict, schema: dict):
    """(field path, JSON text) for each hostile value in each top-level field and each nested object's field."""
    for name, field in _object_properties(spec, schema).items():
        for value in HOSTILE:
            yield name, _with(base, [name], value)
        for inner in _object_properties(spec, field):
            for value in HOSTILE:
                yield f"{name}.{inner}", _with(base, [name, inner], value)


def _with(base: dict, where: list[str], value: str) -> str:
    """The JSON text of ``base`` with the field at ``where`` set to the JSON text ``value``."""
    marker = "__HOSTILE__"
    body = json.loads(json.dumps(base))
    target = body
    for key in where[:-1]:
        if not isinstance(target.get(key), dict):
            target[key] = {}
        target = target[key]
    target[where[-1]] = marker
    return json.dumps(body).replace(json.dumps(marker), value)


def test_every_json_route_is_covered(app):
    routes = {(method, path) for method, path, _ in _json_routes(app.app.openapi())}
    assert routes == set(BASES), "add a base body for each JSON route to BASES"


def test_wrong_types_in_any_field_are_client_errors_never_500(app):
    spec = app.app.openapi()
    failures = []
    for method, path, schema in _json_routes(spec):
        url = path.replace("{model_id}", "model_missing")
        for field, text in _bodies(spec, BASES[(method, path)], schema):
            try:
                response = app.request(method, url, content=text, headers={"content-type": "application/json"})
            except Exception as exc:  # noqa: BLE001 - the TestClient re-raises what the app let escape: a 500
                failures.append(f"{method.upper()} {path} {field}: {text} -> {type(exc).__name__}: {exc}")
                continue
            if response.status_code >= 500 or (path == "/v1/jobs" and response.status_code < 400):
                failures.append(
                    f"{method.upper()} {path} {field}: {text} -> {response.status_code} {response.text[:200]}"
                )
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("preset", [{}, [], ["mnist_mlp"], {"mnist_mlp": 1}, 1, "no_such_preset"])
def test_a_preset_that_is_not_a_name_is_422_naming_preset(app, preset):
    response = app.post("/v1/jobs", json={"preset": preset})
    assert response.status_code == 422, response.text
    errors = response.json()["detail"]
    assert any(e["loc"][:2] == ["body", "preset"] for e in errors), errors


@pytest.mark.parametrize("number", ["NaN", "1e400", "-1e400"])
def test_a_non_finite_number_is_echoed_as_a_string_in_the_422(app, number):
    text = '{"model_description": NUMBER, "performance_metrics": {}}'.replace("NUMBER", number)
    response = app.post("/v1/ai/analyze", content=text, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    (error,) = response.json()["detail"]
    assert error["loc"] == ["body", "model_description"] and error["input"] in ("nan", "inf", "-inf")


@pytest.fixture(scope="module")
def digit_model(app) -> str:
    """An untrained digits MLP stored as the worker stores a trained one (its image extras: pixels in [0, 1])."""
    import forgeml as fm
    from forgeml.nn import build
    from forgeml.server.db import JobRow, ModelRow
    from forgeml.specs import ModelSpec

    from .conftest import TINY_MLP

    spec = ModelSpec.model_validate(TINY_MLP)
    state = app.app.state
    models = state.settings.data_dir / "models"
    models.mkdir(parents=True, exist_ok=True)
    fm.save(build(spec).state_dict(), models / "mdl_pixels.safetensors")
    with state.db.session() as s:
        s.add(JobRow(id="job_mdl_pixels", name="pixels", request={"dataset": "mnist"}, epochs=1, state="completed"))
        s.add(
            ModelRow(
                id="mdl_pixels",
                name="pixels",
                job_id="job_mdl_pixels",
                kind="image",
                spec=spec.model_dump(mode="json"),
                metrics={},
                weights="models/mdl_pixels.safetensors",
                extras={"input": "image", "mean": 0.1307, "std": 0.3081, "classes": [str(i) for i in range(10)]},
            )
        )
    return "mdl_pixels"


def test_raw_0_255_pixels_are_422_naming_the_range(app, digit_model):
    url = f"/v1/models/{digit_model}/predict"
    raw = [[float(i % 256) for i in range(784)]]
    response = app.post(url, json={"inputs": raw})
    assert response.status_code == 422, response.text
    assert "[0, 1]" in response.text and "divide 0-255 pixels by 255" in response.text
    assert app.post(url, json={"inputs": [[-0.5] * 784]}).status_code == 422
    scaled = app.post(url, json={"inputs": [[v / 255 for v in raw[0]], [0.0] * 784, [1.0] * 784]})
    assert scaled.status_code == 200, scaled.text
