"""``read_json`` answers every body exactly as FastAPI answers it for a body parameter of the same model:
two small apps, one with ``body: PredictRequest`` and one reading it with ``read_json``, get the same
bodies and must give the same status and the same JSON."""

from __future__ import annotations

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from forgeml.server.body import json_body, read_json
from forgeml.server.schemas import PredictRequest

BODIES = [
    b'{"inputs": [[0.0, 1.0], [2, 3.5]]}',
    b'{"inputs": ["a text", "another"]}',
    b'{"inputs": [[NaN, Infinity]]}',  # not strict JSON: pydantic and json.loads both read it
    b'{"inputs": [[1e400]]}',
    b'{"inputs": []}',
    b'{"inputs": [[true]]}',
    b'{"inputs": [["1"]]}',
    b'{"inputs": [[1], "mixed"]}',
    b'{"inputs": [[1]], "extra": 1}',
    b'{"inputs": null}',
    b"{}",
    b"[]",
    b"[1, 2]",
    b"null",
    b'"text"',
    b"17",
    b'{"inputs": ',
    b'{"inputs": [[1,]]}',
    b"{'inputs': [[1]]}",
    b"",
    b"\xff\xfe{}",
    '{"inputs": ["caf\u00e9"]}'.encode(),
    b'{"inputs": [[1]], "inputs": ["x"]}',  # a repeated key: the last one wins in both
]


def _apps() -> tuple[TestClient, TestClient]:
    fastapi_parsed, self_parsed = FastAPI(), FastAPI()

    @fastapi_parsed.post("/predict")
    async def by_fastapi(body: PredictRequest) -> dict:
        return body.model_dump()

    @self_parsed.post("/predict", openapi_extra=json_body(PredictRequest))
    async def by_read_json(request: Request) -> dict:
        return (await read_json(request, PredictRequest)).model_dump()

    return TestClient(fastapi_parsed), TestClient(self_parsed)


@pytest.fixture(scope="module")
def clients():
    return _apps()


@pytest.mark.parametrize("body", BODIES, ids=range(len(BODIES)))
def test_read_json_answers_as_fastapi_does(clients, body):
    headers = {"Content-Type": "application/json"}
    expected, got = (client.post("/predict", content=body, headers=headers) for client in clients)
    assert got.status_code == expected.status_code, (got.text, expected.text)
    assert got.json() == expected.json()


def test_the_body_is_documented_as_a_required_json_object():
    body = json_body(PredictRequest)["requestBody"]
    assert body["required"] is True
    schema = body["content"]["application/json"]["schema"]
    assert schema["required"] == ["inputs"] and schema["additionalProperties"] is False
