"""The predict shortcut (``forgeml.server.fast_predict``) answers exactly as the route does.

One app, with an API key, serves a small digit model; each request is sent twice, once with the shortcut
on and once off (``settings.fast_predict``), and both answers must be the same bytes with the same status
and headers. A spy on the shortcut says which requests it answered itself: plain predictions must be, and
everything else (a bad key, another media type, a bad body, too many rows, an unknown model) must be
handed to the route.
"""

from __future__ import annotations

import asyncio
import json
import logging

import numpy as np
import pytest

from forgeml.server import fast_predict
from forgeml.server.fast_predict import PredictShortcut

from .conftest import TINY_MLP, offline_app, wait_for_job

KEY = "test-key-for-the-shortcut"
AUTH = {"authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(client, model id) for an app with an API key and a trained tiny digit model, loaded."""
    with offline_app(tmp_path_factory.mktemp("fast") / "data", api_key=KEY) as api:
        job = api.post("/v1/jobs", json={"model": TINY_MLP, "dataset": "mnist", "epochs": 1}, headers=AUTH)
        assert job.status_code == 201, job.text
        done = wait_for_job(_Authorised(api), job.json()["id"])
        assert done["state"] == "completed", done
        model_id = done["model_id"]
        first = api.post(f"/v1/models/{model_id}/predict", json={"inputs": [[0.0] * 784]}, headers=AUTH)
        assert first.status_code == 200, first.text  # loads the model: the route answers it
        yield api, model_id


class _Authorised:
    """The client with the API key on every GET (what ``wait_for_job`` sends)."""

    def __init__(self, api) -> None:
        self.api = api

    def get(self, url: str):
        return self.api.get(url, headers=AUTH)


@pytest.fixture
def answered(monkeypatch):
    """How many requests the shortcut answered itself (a spy on its answer)."""
    count = {"n": 0}
    answer = PredictShortcut._answer

    def spy(state, model_id, body):
        result = answer(state, model_id, body)
        count["n"] += result is not None
        return result

    monkeypatch.setattr(PredictShortcut, "_answer", staticmethod(spy))
    return count


def _both(api, path: str, body: bytes, headers) -> tuple:
    """The answer with the shortcut on, then off: (on, off)."""
    settings = api.app.state.settings
    answers = []
    for fast in (True, False):
        settings.fast_predict = fast
        try:
            answers.append(api.post(path, content=body, headers=headers))
        finally:
            settings.fast_predict = True
    return tuple(answers)


def _same(on, off) -> None:
    assert on.status_code == off.status_code, (on.text, off.text)
    assert on.content == off.content
    assert dict(on.headers) == dict(off.headers)


def _rows(n: int, seed: int = 0) -> list[list[float]]:
    return np.random.default_rng(seed).random((n, 784)).round(6).tolist()


JSON = {**AUTH, "content-type": "application/json"}


@pytest.mark.parametrize("rows", [1, 3, 16])
def test_plain_predictions_are_answered_by_the_shortcut_as_the_route_answers_them(served, answered, rows):
    api, model_id = served
    body = json.dumps({"inputs": _rows(rows, seed=rows)}).encode()
    on, off = _both(api, f"/v1/models/{model_id}/predict", body, JSON)
    assert answered["n"] == 1  # the first of the two, and only that one
    assert on.status_code == 200 and len(on.json()["predictions"]) == rows
    _same(on, off)


@pytest.mark.parametrize("content_type", ["application/json; charset=utf-8", "application/vnd.forgeml+json"])
def test_json_declared_otherwise_still_takes_the_shortcut(served, answered, content_type):
    api, model_id = served
    body = json.dumps({"inputs": _rows(1)}).encode()
    on, off = _both(api, f"/v1/models/{model_id}/predict", body, {**AUTH, "content-type": content_type})
    assert answered["n"] == 1
    _same(on, off)


ROW = json.dumps({"inputs": _rows(1)}).encode()
HANDED_ON = {  # what the route must answer: (body, headers, the status it gives)
    "no key": (ROW, {"content-type": "application/json"}, 401),
    "a wrong key": (ROW, {"authorization": "Bearer nope", "content-type": "application/json"}, 401),
    "another scheme": (ROW, {"authorization": f"Basic {KEY}", "content-type": "application/json"}, 401),
    "no content type": (ROW, AUTH, 415),
    "text/plain": (ROW, {**AUTH, "content-type": "text/plain"}, 415),
    "invalid JSON": (b'{"inputs": [[1,]]}', JSON, 422),
    "no body": (b"", JSON, 422),
    "not UTF-8": (b'{"inputs": [["\xff"]]}', JSON, 400),
    "NaN": (b'{"inputs": [[NaN' + b", 0" * 783 + b"]]}", JSON, 422),
    "a row too short": (json.dumps({"inputs": [[0.0] * 783]}).encode(), JSON, 422),
    "text for a digit model": (json.dumps({"inputs": ["seven"]}).encode(), JSON, 422),
    "no rows": (b'{"inputs": []}', JSON, 422),
    "an extra key": (json.dumps({"inputs": _rows(1), "extra": 1}).encode(), JSON, 422),
    "too many rows": (json.dumps({"inputs": [[0.0]] * 1025}).encode(), JSON, 422),
}


@pytest.mark.parametrize("case", list(HANDED_ON))
def test_anything_but_a_plain_prediction_is_answered_by_the_route(served, answered, case):
    api, model_id = served
    body, headers, status = HANDED_ON[case]
    on, off = _both(api, f"/v1/models/{model_id}/predict", body, headers)
    assert answered["n"] == 0
    assert on.status_code == status, on.text
    _same(on, off)


@pytest.mark.parametrize(
    ("first", "last", "status"), [(f"Bearer {KEY}", "Bearer nope", 200), ("Bearer nope", f"Bearer {KEY}", 401)]
)
def test_a_repeated_header_is_read_as_the_route_reads_it(served, answered, first, last, status):
    """Two Authorization headers: the first counts, for the shortcut as for the route (a key sent last
    must not let a request in that the route refuses)."""
    api, model_id = served
    headers = [("authorization", first), ("authorization", last), ("content-type", "application/json")]
    on, off = _both(api, f"/v1/models/{model_id}/predict", ROW, headers)
    assert on.status_code == status and answered["n"] == (status == 200)
    _same(on, off)


def test_an_unknown_model_and_a_model_not_loaded_go_to_the_route(served, answered):
    api, _ = served
    on, off = _both(api, "/v1/models/mdl_000000000000/predict", ROW, JSON)
    assert on.status_code == 404 and answered["n"] == 0
    _same(on, off)


def test_a_busy_model_is_left_to_the_route(served, answered):
    """A model another request holds: the shortcut does not wait on the event loop, the route's thread does."""
    import threading

    api, model_id = served
    predictor = api.app.state.predictors.cached(model_id)
    answers = []
    with predictor._lock:
        waiting = threading.Thread(
            target=lambda: answers.append(api.post(f"/v1/models/{model_id}/predict", content=ROW, headers=JSON))
        )
        waiting.start()
        waiting.join(0.5)
        assert waiting.is_alive() and not answers
    waiting.join(30)
    assert answers and answers[0].status_code == 200 and answered["n"] == 0


def test_dependency_overrides_turn_the_shortcut_off(served, answered):
    from forgeml.server.security import require_api_key

    api, model_id = served
    api.app.dependency_overrides[require_api_key] = lambda: None
    try:
        response = api.post(f"/v1/models/{model_id}/predict", content=ROW, headers={"content-type": "application/json"})
    finally:
        api.app.dependency_overrides.clear()
    assert response.status_code == 200 and answered["n"] == 0  # the override let it in, through the route


def test_its_answers_are_counted_and_logged_as_the_route(served, answered, caplog):
    api, model_id = served
    metric = f'forgeml_http_requests_total{{method="POST",route="{fast_predict.PREDICT_ROUTE}",status="200"}}'

    def count() -> float:
        lines = [line for line in api.get("/metrics").text.splitlines() if line.startswith(metric)]
        return float(lines[0].rsplit(" ", 1)[1]) if lines else 0.0

    before = count()
    with caplog.at_level(logging.INFO, logger="forgeml.server.access"):
        assert api.post(f"/v1/models/{model_id}/predict", content=ROW, headers=JSON).status_code == 200
    assert answered["n"] == 1 and count() == before + 1
    routes = [getattr(r, "route", None) for r in caplog.records if r.name == "forgeml.server.access"]
    assert fast_predict.PREDICT_ROUTE in routes


def _asgi_post(app, path: str, chunks: list[bytes], headers: dict, disconnect: bool = False) -> list[dict]:
    """POST ``chunks`` (a body sent in parts) straight to the ASGI app; the messages it sends back."""
    sent: list[dict] = []
    messages = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]
    if disconnect:
        messages = [*messages[:1], {"type": "http.disconnect"}]

    async def receive():
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(k.encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 1234),
        "server": ("testserver", 80),
    }
    asyncio.run(app(scope, receive, send))
    return sent


def test_a_body_sent_in_parts_is_read_whole_and_replayed_to_the_route(served, answered):
    api, model_id = served
    path = f"/v1/models/{model_id}/predict"
    whole = _asgi_post(api.app, path, [ROW[:100], ROW[100:2000], ROW[2000:]], JSON)
    assert whole[0]["status"] == 200 and answered["n"] == 1
    bad = b'{"inputs": [[1,]]}'
    replayed = _asgi_post(api.app, path, [bad[:5], bad[5:]], JSON)  # read here, then handed to the route
    assert replayed[0]["status"] == 422 and answered["n"] == 1
    assert json.loads(replayed[1]["body"])["detail"][0]["type"] == "json_invalid"


def test_a_body_over_the_limit_sent_in_parts_gets_the_routes_413(served, answered):
    """No Content-Length: the body limit is found while the shortcut reads, and answered as the route does."""
    api, model_id = served
    settings = api.app.state.settings
    chunk = b" " * (settings.max_body_bytes // 2 + 1)
    answers = []
    for fast in (True, False):
        settings.fast_predict = fast
        try:
            answers.append(_asgi_post(api.app, f"/v1/models/{model_id}/predict", [chunk, chunk, chunk], JSON))
        finally:
            settings.fast_predict = True
    on, off = answers
    assert on[0]["status"] == off[0]["status"] == 413 and answered["n"] == 0
    assert on[1]["body"] == off[1]["body"] and b"exceeds the limit" in on[1]["body"]


def test_a_client_gone_while_sending_gets_nothing_and_breaks_nothing(served, answered):
    api, model_id = served
    sent = _asgi_post(api.app, f"/v1/models/{model_id}/predict", [ROW[:100], ROW[100:]], JSON, disconnect=True)
    assert sent == [] and answered["n"] == 0
    assert api.post(f"/v1/models/{model_id}/predict", content=ROW, headers=JSON).status_code == 200


def test_a_route_with_a_check_it_does_not_know_keeps_it_off():
    from fastapi import APIRouter, Depends

    from forgeml.server.body import require_declared_media_type
    from forgeml.server.routers import models
    from forgeml.server.security import require_api_key

    checks = [Depends(require_api_key), Depends(require_declared_media_type)]
    assert PredictShortcut(None, models.router, checks).enabled
    assert not PredictShortcut(None, models.router, [*checks, Depends(lambda: None)]).enabled
    assert not PredictShortcut(None, models.router, checks[:1]).enabled  # a check the route relies on, missing
    other = APIRouter(prefix="/v1/models", dependencies=[Depends(lambda: None)])
    other.add_api_route("/{model_id}/predict", lambda model_id: None, methods=["POST"])
    assert not PredictShortcut(None, other, checks).enabled
