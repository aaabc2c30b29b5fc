"""Issue 15 item 7: the SSE stream sends every epoch before the final state, and /metrics behind the API key."""

from __future__ import annotations

import json
import threading
import time

import pytest

from forgeml.server.db import AIEventRow, EpochRow, JobRow, new_id
from forgeml.server.settings import ServerSettings

from .conftest import TERMINAL


def _parse_sse(text: str) -> list[dict]:
    events = []
    for block in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if not line.startswith(":"))
        if fields:
            events.append({"event": fields["event"], "id": fields.get("id"), "data": json.loads(fields["data"])})
    return events


def _read_stream(client, job_id: str, headers: dict | None = None, poll: float = 0.05) -> list[dict]:
    with client.stream("GET", f"/v1/jobs/{job_id}/events?poll={poll}", headers=headers or {}) as response:
        assert response.status_code == 200
        return _parse_sse("".join(response.iter_text()))


def _check_order(events: list[dict], epochs: list[int], final: str = "completed") -> None:
    """Every epoch once, in order; the last state is the terminal one, after every epoch and AI event."""
    kinds = [e["event"] for e in events]
    assert kinds[0] == "state" and kinds[-1] == "end", kinds
    assert [e["data"]["epoch"] for e in events if e["event"] == "epoch"] == epochs, kinds
    assert kinds[-2] == "state" and events[-2]["data"]["state"] == final, kinds
    rows = [i for i, k in enumerate(kinds) if k in ("epoch", "ai_event")]
    assert not rows or rows[-1] < len(kinds) - 2
    # between the state sent on connect and the final one, only non-terminal states (queued, running)
    assert all(e["data"]["state"] not in TERMINAL for e in events[1:-2] if e["event"] == "state"), kinds


def test_a_live_job_streams_every_epoch_before_completed_and_replays(make_client):
    client = make_client()
    job = client.post("/v1/jobs", json={"preset": "mnist_mlp", "epochs": 3, "name": "sse order"}).json()
    events = _read_stream(client, job["id"])  # opened while the job is queued or running: follows it to the end
    _check_order(events, [1, 2, 3])
    assert events[-1]["data"]["state"] == "completed"

    # Last-Event-ID resumes after the given epoch: the rest once each, then the final state
    after_first = next(e["id"] for e in events if e["event"] == "epoch" and e["data"]["epoch"] == 1)
    resumed = _read_stream(client, job["id"], headers={"Last-Event-ID": after_first})
    _check_order(resumed, [2, 3])
    last = next(e["id"] for e in reversed(events) if e["event"] == "epoch")
    tail = _read_stream(client, job["id"], headers={"Last-Event-ID": last})
    assert [e["event"] for e in tail] == ["state", "end"] and tail[0]["data"]["state"] == "completed"


def test_rows_committed_with_the_final_state_come_before_it(make_client):
    """The race of the issue: the last epoch, its AI event and ``completed`` land between two polls."""
    client = make_client()
    db = client.app.state.db
    job_id = new_id("job")
    with db.session() as s:
        s.add(JobRow(id=job_id, name="race", state="running", request={"dataset": "mnist"}, epochs=2, started=1.0))
    with db.session() as s:
        s.add(EpochRow(job_id=job_id, epoch=1, metrics={"epoch": 1, "train_loss": 1.0}))

    connected = threading.Event()

    def finish():
        # after the stream's first poll (it has sent the running state), in one transaction: whenever the
        # stream polls next, all three rows are there at once (a fixed sleep lost the race on a busy machine)
        connected.wait(60)
        with db.session() as s:
            s.add(EpochRow(job_id=job_id, epoch=2, metrics={"epoch": 2, "train_loss": 0.5}))
            s.add(AIEventRow(job_id=job_id, epoch=2, event={"epoch": 2, "kind": "advice", "provider": "local"}))
            row = s.get(JobRow, job_id)
            row.state, row.epochs_done, row.finished = "completed", 2, time.time()

    writer = threading.Thread(target=finish)
    writer.start()
    try:
        text = ""
        with client.stream("GET", f"/v1/jobs/{job_id}/events?poll=0.05") as response:
            assert response.status_code == 200
            for chunk in response.iter_text():
                text += chunk
                if "\n\n" in text:
                    connected.set()
        events = _parse_sse(text)
    finally:
        connected.set()
        writer.join()
    assert [e["event"] for e in events] == ["state", "epoch", "epoch", "ai_event", "state", "end"]
    assert events[0]["data"]["state"] == "running" and events[-2]["data"]["state"] == "completed"
    _check_order(events, [1, 2])
    ids = [e["id"] for e in events if e["id"]]
    assert len(ids) == len(set(ids)) == 3
    # replay from the AI event's id: nothing left but the final state
    tail = _read_stream(client, job_id, headers={"Last-Event-ID": ids[-1]})
    assert [e["event"] for e in tail] == ["state", "end"]


def test_a_failed_job_with_no_epochs_streams_its_state_once(make_client):
    client = make_client()
    job_id = new_id("job")
    with client.app.state.db.session() as s:
        s.add(JobRow(id=job_id, name="x", state="failed", request={"dataset": "mnist"}, epochs=1, error="boom"))
    events = _read_stream(client, job_id)
    assert [e["event"] for e in events] == ["state", "end"] and events[0]["data"]["error"] == "boom"


SECRET = "fk-metrics-secret-0123456789"


def test_metrics_stay_open_by_default_even_with_an_api_key(make_client):
    client = make_client(api_key=SECRET)
    assert ServerSettings().metrics_require_key is False
    response = client.get("/metrics")
    assert response.status_code == 200 and "forgeml_http_requests_total" in response.text
    assert client.get("/v1/jobs").status_code == 401  # the /v1 routes are still guarded


def test_metrics_behind_the_api_key_when_the_setting_is_on(make_client):
    client = make_client(api_key=SECRET, metrics_require_key=True)
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": SECRET}):
        response = client.get("/metrics", headers=headers)
        assert response.status_code == 401, headers
        assert response.headers["www-authenticate"] == "Bearer"
        assert "API key" in response.json()["detail"] and SECRET not in response.text
    ok = client.get("/metrics", headers={"Authorization": f"Bearer {SECRET}"})
    assert ok.status_code == 200 and "forgeml_jobs" in ok.text
    assert 'route="/metrics",status="401"' in ok.text  # the refused scrapes are counted
    assert client.get("/healthz").status_code == 200  # health stays open


def test_metrics_require_key_without_an_api_key_leaves_metrics_open(make_client):
    client = make_client(metrics_require_key=True)
    assert client.get("/metrics").status_code == 200


def test_metrics_401_is_documented_in_the_openapi(make_client):
    client = make_client()
    operation = client.get("/openapi.json").json()["paths"]["/metrics"]["get"]
    assert (
        "401" in operation["responses"]
        and "FORGEML_METRICS_REQUIRE_KEY" in operation["responses"]["401"]["description"]
    )
    assert "FORGEML_METRICS_REQUIRE_KEY" in operation["description"]
    assert "metrics_require_key" in ServerSettings.__doc__
    assert "FORGEML_METRICS_REQUIRE_KEY" in ServerSettings.model_fields["metrics_require_key"].description


@pytest.mark.parametrize(
    ("value", "expected"), [("true", True), ("1", True), ("yes", True), ("false", False), ("0", False), ("off", False)]
)
def test_metrics_require_key_from_the_environment(value, expected):
    settings = ServerSettings.from_env({"FORGEML_METRICS_REQUIRE_KEY": value, "FORGEML_API_KEY": SECRET})
    assert settings.metrics_require_key is expected
    assert ServerSettings.from_env({}).metrics_require_key is False


def test_a_bad_metrics_require_key_is_refused_naming_the_setting():
    with pytest.raises(ValueError, match="metrics_require_key"):
        ServerSettings.from_env({"FORGEML_METRICS_REQUIRE_KEY": "maybe"})
