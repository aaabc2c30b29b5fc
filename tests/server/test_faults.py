"""Faults a live server must survive: a worker process killed mid-job, and cancels that must win.

One ``forgeml serve`` (one worker process) runs the module's tests in order; the last one kills its worker.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from .conftest import OUTPUT, TINY_MLP, LiveServer, child_processes, wait_for_job

QUICK = {"model": TINY_MLP, "dataset": "mnist", "epochs": 2, "batch_size": 128}  # trains in a second or two
LONG = {"preset": "mnist_mlp", "epochs": 50}  # runs until cancelled or killed
SLOW_EPOCH = {"preset": "mnist_mlp", "epochs": 3, "batch_size": 1}  # thousands of batches per epoch


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    live = LiveServer(tmp_path_factory.mktemp("faults") / "data", OUTPUT / "logs" / "faults.log")
    live.start()
    yield live
    live.stop()


def niceness(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[16])  # field 19


def training_workers(server: LiveServer) -> list[int]:
    """The pool's worker processes (10 nice levels below the server; not multiprocessing's resource tracker)."""
    server_nice = niceness(server.process.pid)
    found = []
    for pid in child_processes(server.process.pid):
        try:
            if niceness(pid) == server_nice + 10:
                found.append(pid)
        except OSError:
            continue
    return found


def test_cancelling_a_queued_job_wins_even_when_the_pool_preloaded_it(api):
    busy = api.post("/v1/jobs", json=LONG).json()
    wait_for_job(api, busy["id"], timeout=60, states=("running",))
    queued = api.post("/v1/jobs", json=QUICK).json()  # the pool hands it to its call queue at once
    response = api.post(f"/v1/jobs/{queued['id']}/cancel")
    assert response.status_code == 200, response.text
    assert api.post(f"/v1/jobs/{busy['id']}/cancel").status_code == 200
    assert wait_for_job(api, busy["id"], timeout=30)["state"] == "cancelled"
    done = wait_for_job(api, queued["id"], timeout=30)
    assert done["state"] == "cancelled", done
    detail = api.get(f"/v1/jobs/{queued['id']}").json()
    assert detail["epochs_done"] == 0 and detail["history"] == [] and detail["model_id"] is None, detail


def test_cancel_stops_a_running_epoch_within_seconds(api):
    job = api.post("/v1/jobs", json=SLOW_EPOCH).json()
    wait_for_job(api, job["id"], timeout=60, states=("running",))
    time.sleep(3.0)  # past the data loading, into the first (long) epoch
    asked = time.monotonic()
    assert api.post(f"/v1/jobs/{job['id']}/cancel").status_code == 200
    done = wait_for_job(api, job["id"], timeout=30)
    waited = time.monotonic() - asked
    assert done["state"] == "cancelled", done
    assert waited < 5.0, f"the cancel took {waited:.1f} s: it should stop between batches, not at the epoch's end"
    assert done["epochs_done"] < SLOW_EPOCH["epochs"]


def test_a_job_cancelled_mid_epoch_resumes_from_its_last_checkpoint(api):
    request = {"model": TINY_MLP, "dataset": "mnist", "epochs": 3, "batch_size": 2}
    job = api.post("/v1/jobs", json=request).json()
    deadline = time.monotonic() + 60
    while api.get(f"/v1/jobs/{job['id']}").json()["epochs_done"] < 1:
        assert time.monotonic() < deadline, "the job did not finish an epoch in 60 s"
        time.sleep(0.05)
    assert api.post(f"/v1/jobs/{job['id']}/cancel").status_code == 200
    stopped = wait_for_job(api, job["id"], timeout=30)
    assert stopped["state"] == "cancelled" and 1 <= stopped["epochs_done"] < 3, stopped

    assert api.post(f"/v1/jobs/{job['id']}/resume").status_code == 200
    done = wait_for_job(api, job["id"], timeout=60)
    assert done["state"] == "completed", done
    history = [h["epoch"] for h in api.get(f"/v1/jobs/{job['id']}").json()["history"]]
    assert history == [1, 2, 3]


def test_a_killed_worker_interrupts_its_job_and_the_pool_recovers(server, api):
    job = api.post("/v1/jobs", json=LONG).json()
    wait_for_job(api, job["id"], timeout=60, states=("running",))
    workers = training_workers(server)
    assert len(workers) == 1, workers
    os.kill(workers[0], signal.SIGKILL)

    seen, deadline = [], time.monotonic() + 60
    while time.monotonic() < deadline:
        status = httpx.get(server.url + "/readyz", timeout=5).status_code
        if not seen or seen[-1] != status:
            seen.append(status)
        if 503 in seen and status == 200:
            break
        time.sleep(0.02)
    assert seen[-1] == 200 and 503 in seen, f"/readyz answered {seen}: it should go not ready, then ready"

    stopped = wait_for_job(api, job["id"], timeout=10)
    assert stopped["state"] == "interrupted", stopped
    assert "worker process died" in stopped["error"], stopped

    fresh = api.post("/v1/jobs", json=QUICK)
    assert fresh.status_code == 201, fresh.text
    done = wait_for_job(api, fresh.json()["id"], timeout=60)
    assert done["state"] == "completed", done
    assert training_workers(server) and workers[0] not in training_workers(server)
