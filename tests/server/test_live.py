"""The platform as a person runs it: ``forgeml serve`` in its own process, driven over loopback.

The seed's curl calls, the SSE stream on a real uvicorn, and restart safety (SIGTERM and SIGKILL
mid-job: the job is marked ``interrupted`` at the next start, and ``resume`` finishes it).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from .conftest import (
    OUTPUT,
    LiveServer,
    child_processes,
    end_processes,
    free_port,
    offline_env,
    require_system_program,
    wait_for_job,
)


def curl(*args: str) -> tuple[int, str]:
    """Run curl as the seed's instructions do; return (HTTP status, body)."""
    require_system_program(shutil.which("curl") is not None, "curl (the seed's instructions call it)", "curl")
    out = subprocess.run(
        ["curl", "-sS", "--max-time", "60", "-w", "\n%{http_code}", *args],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    body, _, status = out.rpartition("\n")
    return int(status), body


def test_the_seeds_curl_calls(live_server):
    url = live_server.url
    status, page = curl(f"{url}/")
    assert status == 200 and "<html" in page.lower()

    status, body = curl(f"{url}/v1/ai/status")
    assert status == 200
    providers = json.loads(body)
    assert {"openai", "anthropic", "perplexity", "gemini", "xai"} <= set(providers["providers"])

    status, body = curl(
        "-X", "POST", f"{url}/v1/ai/enhance", "-H", "Content-Type: application/json",
        "-d", '{"model_description": "test", "config": {}}',
    )  # fmt: skip
    assert status == 200, body
    enhancement = json.loads(body)
    assert enhancement["analysis"]["provider"] == "local" and enhancement["research"]["citations"]

    status, body = curl(f"{url}/v1/ai/research?domain=computer_vision&recency=month")
    assert status == 200, body
    research = json.loads(body)
    assert research["insights"] and research["citations"]

    sample = [[0.1, 0.2, 0.3, 0], [0.9, 0.8, 0.7, 1], [0.2, 0.1, 0.2, 0], [0.8, 0.9, 0.9, 1]]
    status, body = curl(
        "-X", "POST", f"{url}/v1/ai/synthetic-data", "-H", "Content-Type: application/json",
        "-d", json.dumps({"model_type": "classifier", "existing_data_sample": sample, "target_count": 1000}),
    )  # fmt: skip
    assert status == 200, body
    synthetic = json.loads(body)
    assert synthetic["accepted"] == 1000 and len(synthetic["samples"]) == 1000

    metrics = {
        "train_loss": [1.0, 0.5, 0.2, 0.1],
        "val_loss": [1.0, 0.8, 0.9, 1.1],
        "val_accuracy": [0.6, 0.7, 0.69, 0.68],
    }
    status, body = curl(
        "-X", "POST", f"{url}/v1/ai/analyze", "-H", "Content-Type: application/json",
        "-d", json.dumps({"model_description": "MLP 784-128-10 on MNIST", "performance_metrics": metrics}),
    )  # fmt: skip
    assert status == 200, body
    analysis = json.loads(body)
    assert "overfit" in analysis["diagnosis"].lower() and analysis["recommendations"]


def test_startup_prints_the_url_and_the_providers(tmp_path):
    server = LiveServer(
        tmp_path / "data", OUTPUT / "logs" / "startup.log", OPENAI_API_KEY="sk-live-test-not-a-real-key"
    )
    try:
        server.start()
        with server.client() as api:
            assert api.get("/v1/ai/status").json()["providers"]["openai"]["configured"] is True
    finally:
        server.stop()
    log = server.log_path.read_text()
    assert f"serving at http://localhost:{server.port}" in log
    assert "AI providers configured: openai" in log
    assert "sk-live-test" not in log


def test_startup_without_keys_says_the_offline_advisor_answers(live_server):
    log = live_server.log_path.read_text()
    assert f"serving at http://localhost:{live_server.port}" in log
    assert "AI providers configured: none (the offline advisor answers)" in log


def read_sse(response: httpx.Response):
    """(event, data) pairs of a text/event-stream response, in arrival order."""
    event, data = None, []
    for line in response.iter_lines():
        if line.startswith(":"):
            continue
        if not line:
            if event is not None:
                yield event, json.loads("\n".join(data))
            event, data = None, []
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())


def test_sse_delivers_a_running_jobs_epochs_in_order(live_server):
    with live_server.client() as api:
        job = api.post("/v1/jobs", json={"preset": "mnist_mlp", "epochs": 4}).json()
        seen, states, arrivals = [], [], []
        with api.stream("GET", f"/v1/jobs/{job['id']}/events") as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            for event, data in read_sse(response):
                if event == "epoch":
                    seen.append(data["epoch"])
                    arrivals.append(time.monotonic())
                elif event == "state":
                    states.append(data["state"])
                elif event == "end":
                    assert data["state"] == "completed", data
                    break
    assert seen == [1, 2, 3, 4]
    assert "running" in states
    # delivered as they happened, not in one burst at the end
    assert arrivals[-1] - arrivals[0] > 0.05


def niceness(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[16])  # field 19


def test_training_workers_yield_the_cpu_to_the_server(live_server):
    with live_server.client() as api:
        job = api.post("/v1/jobs", json={"preset": "mnist_mlp", "epochs": 50}).json()
        wait_for_job(api, job["id"], states=("running",))
        server_nice = niceness(live_server.process.pid)
        workers = [pid for pid in child_processes(live_server.process.pid) if niceness(pid) == server_nice + 10]
        assert len(workers) == 1, "the training worker should run 10 nice levels below the server"
        assert api.post(f"/v1/jobs/{job['id']}/cancel").status_code == 200
        assert wait_for_job(api, job["id"])["state"] == "cancelled"


@pytest.mark.parametrize("signal_name", ["SIGTERM", "SIGKILL"])
def test_restart_mid_job_marks_it_interrupted_and_resume_finishes_it(tmp_path, signal_name):
    server = LiveServer(tmp_path / "data", OUTPUT / "logs" / f"restart-{signal_name}.log")
    epochs = 8  # still running when it is stopped after its second epoch, with room to spare
    try:
        server.start()
        with server.client() as api:
            job = api.post("/v1/jobs", json={"preset": "mnist_mlp", "epochs": epochs}).json()
            deadline = time.monotonic() + 120
            while api.get(f"/v1/jobs/{job['id']}").json()["epochs_done"] < 2:
                assert time.monotonic() < deadline, "the job did not train two epochs in 120 s"
                time.sleep(0.1)
        workers = child_processes(server.process.pid)  # the job's worker and multiprocessing's resource tracker
        server.stop(kill=signal_name == "SIGKILL")
        assert not end_processes(workers), f"worker processes outlived the server ({signal_name})"

        server.start()
        with server.client() as api:
            stopped = api.get(f"/v1/jobs/{job['id']}").json()
            assert stopped["state"] == "interrupted", stopped
            assert 2 <= stopped["epochs_done"] < epochs
            kept = [h["epoch"] for h in api.get(f"/v1/jobs/{job['id']}").json()["history"]]
            assert kept == list(range(1, stopped["epochs_done"] + 1))

            assert api.post(f"/v1/jobs/{job['id']}/resume").status_code == 200
            done = wait_for_job(api, job["id"], timeout=180)
            assert done["state"] == "completed", done
            detail = api.get(f"/v1/jobs/{job['id']}").json()
            assert [h["epoch"] for h in detail["history"]] == list(range(1, epochs + 1))
            model = api.get(f"/v1/models/{done['model_id']}").json()
            assert model["job_id"] == job["id"]
            assert api.get(f"/v1/models/{done['model_id']}/weights").status_code == 200
    finally:
        server.stop(kill=True)


def test_serve_refuses_a_public_address_without_a_key(tmp_path):
    command = [sys.executable, "-m", "forgeml.cli", "serve", "--host", "0.0.0.0", "--port", str(free_port())]
    command += ["--data-dir", str(tmp_path / "data")]
    result = subprocess.run(command, check=False, capture_output=True, text=True, timeout=60, env=offline_env())
    assert result.returncode != 0
    message = result.stdout + result.stderr
    assert "FORGEML_API_KEY" in message and "0.0.0.0" in message
