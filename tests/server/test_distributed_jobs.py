"""Jobs on several processes (``"processes": 2``): MPI ranks under the worker, seen through the API as any job.

They train, store their epochs, AI events and model as a one-process job does, stop at an epoch boundary
when cancelled, resume from their checkpoint, fail with an error naming the rank that failed or died, and
never outlive the server that started them.
"""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from forgeml.distributed.launch import RankFailure
from forgeml.server.app import create_app
from forgeml.server.settings import ServerSettings, default_max_processes
from forgeml.server.worker import mpi_unavailable, rank_failure

from .conftest import OUTPUT, LiveServer, wait_for_job

pytestmark = pytest.mark.skipif(
    mpi_unavailable() is not None, reason=f"multi-process jobs need MPI: {mpi_unavailable()}"
)

CSV = "f1,f2,f3,label\n" + "\n".join(
    f"{a:.3f},{b:.3f},{a - b:.3f},{'yes' if a > b else 'no'}" for a, b in np.random.default_rng(0).random((200, 2))
)
SPEC = {
    "input_shape": [3],
    "layers": [
        {"type": "Linear", "args": {"in_features": 3, "out_features": 16}},
        {"type": "ReLU"},
        {"type": "Linear", "args": {"in_features": 16, "out_features": 2}},
    ],
}
# An epoch of the digits MLP takes about a second on two ranks: long enough to act on a job mid-run.
SLOW = {"preset": "mnist_mlp", "processes": 2}
# One sample per step: an epoch takes many seconds, so nothing but the shutdown itself can end the ranks in time.
SLOWER = {**SLOW, "batch_size": 1, "epochs": 5}


def _offline(mp: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.endswith("_API_KEY") or key.startswith("FORGEML_"):
            mp.delenv(key)


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    """One app for the module, offline, that allows jobs of up to 2 processes."""
    with pytest.MonkeyPatch.context() as mp:
        _offline(mp)
        settings = ServerSettings(data_dir=tmp_path_factory.mktemp("dist") / "data", workers=1, max_processes=2)
        with TestClient(create_app(settings)) as client:
            yield client


@pytest.fixture(scope="module")
def dataset(api) -> str:
    response = api.post(
        "/v1/datasets", files={"file": ("points.csv", CSV.encode(), "text/csv")}, data={"target": "label"}
    )
    assert response.status_code == 201, response.text
    return response.json()["id"]


def _tabular(dataset: str, **extra) -> dict:
    return {
        "model": SPEC,
        "dataset": dataset,
        "epochs": 3,
        "batch_size": 16,
        "optimizer": {"name": "adam", "lr": 0.01},
        **extra,
    }


def _wait_for_epochs(api, job_id: str, epochs: int, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = api.get(f"/v1/jobs/{job_id}").json()
        if job["epochs_done"] >= epochs or job["state"] not in ("queued", "running"):
            return job
        assert time.monotonic() < deadline, f"job {job_id} did not train {epochs} epoch(s) in {timeout} s: {job}"
        time.sleep(0.05)


def _rank_pids(data_dir: Path, job_id: str, processes: int = 2, timeout: float = 60.0) -> dict[int, int]:
    """{rank: pid} of a running job's ranks, from the lines they print to the job's log as they start."""
    log = data_dir / "jobs" / job_id / "processes.log"
    deadline = time.monotonic() + timeout
    while True:
        text = log.read_text() if log.exists() else ""
        pids = {int(r): int(p) for r, p in re.findall(r"rank (\d+) of \d+ is pid (\d+)", text)}
        if len(pids) == processes:
            return pids
        assert time.monotonic() < deadline, f"the job's ranks did not start in {timeout} s: {text}"
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "State:\tZ" not in Path(f"/proc/{pid}/status").read_text()


def _gone(pids, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while any(_alive(pid) for pid in pids):
        if time.monotonic() > deadline:
            for pid in pids:
                if _alive(pid):
                    os.kill(pid, signal.SIGKILL)
            return False
        time.sleep(0.1)
    return True


def test_a_two_process_job_is_stored_and_served_as_a_one_process_job(api, dataset):
    jobs = {}
    for processes in (1, 2):
        created = api.post("/v1/jobs", json=_tabular(dataset, processes=processes))
        assert created.status_code == 201, created.text
        assert created.json()["processes"] == processes
        jobs[processes] = wait_for_job(api, created.json()["id"], timeout=120)
    for processes, job in jobs.items():
        assert job["state"] == "completed", job
        detail = api.get(f"/v1/jobs/{job['id']}").json()
        assert detail["summary"]["processes"] == processes and detail["request"]["processes"] == processes
        assert [h["epoch"] for h in detail["history"]] == [1, 2, 3] and detail["epochs_done"] == 3
        assert detail["best_val_accuracy"] == max(h["val_accuracy"] for h in detail["history"]) > 0.7
        predicted = api.post(
            f"/v1/models/{job['model_id']}/predict", json={"inputs": [[0.9, 0.1, 0.8], [0.1, 0.9, -0.8]]}
        )
        assert predicted.status_code == 200 and predicted.json()["predictions"] == ["yes", "no"], predicted.text
    one, two = (api.get(f"/v1/jobs/{jobs[n]['id']}").json() for n in (1, 2))
    assert set(one["history"][0]) == set(two["history"][0])
    assert set(one["summary"]) == set(two["summary"])
    # every rank evaluated its shard of the 40 test rows: each counted once
    assert one["summary"]["final_test"]["samples"] == two["summary"]["final_test"]["samples"] == 40


def test_a_two_process_job_with_ai_stores_its_ai_events(api, dataset):
    ai = {"optimization_guidance_frequency": 1, "research_update_interval": 1}
    job = wait_for_job(api, api.post("/v1/jobs", json=_tabular(dataset, processes=2, ai=ai)).json()["id"])
    assert job["state"] == "completed", job
    detail = api.get(f"/v1/jobs/{job['id']}").json()
    assert detail["ai_enabled"] and detail["summary"]["processes"] == 2
    ai_events = [e for e in detail["events"] if e["kind"] not in ("verdict", "experiment")]  # those are the trainer's
    assert ai_events and {e["provider"] for e in ai_events} == {"local"}
    assert {e["epoch"] for e in detail["events"]} <= {1, 2, 3}
    assert detail["summary"]["provider_usage"]["local"]["calls"] >= 1  # rank 0 alone asked: no duplicates
    calls = [line for line in api.get("/metrics").text.splitlines() if line.startswith("forgeml_job_ai_calls_total")]
    assert 'provider="local",task="analysis"' in "".join(calls)
    with api.stream("GET", f"/v1/jobs/{job['id']}/events") as response:
        text = "".join(response.iter_text())
    assert text.count("event: epoch") == 3 and "event: ai_event" in text


@pytest.mark.parametrize(("processes", "fragment"), [(3, "at most 2"), (0, "greater than or equal to 1")])
def test_processes_beyond_the_cap_are_422_naming_the_field(api, dataset, processes, fragment):
    before = len(api.get("/v1/jobs").json())
    response = api.post("/v1/jobs", json=_tabular(dataset, processes=processes))
    assert response.status_code == 422, response.text
    (error,) = response.json()["detail"]
    assert error["loc"] == ["body", "processes"] and fragment in error["msg"]
    if processes == 3:
        assert "FORGEML_MAX_PROCESSES" in error["msg"]
    assert len(api.get("/v1/jobs").json()) == before  # nothing was queued


def test_cancel_stops_every_rank_at_an_epoch_boundary_and_resume_continues(api):
    job = api.post("/v1/jobs", json={**SLOW, "epochs": 5}).json()
    _wait_for_epochs(api, job["id"], 1)
    assert api.post(f"/v1/jobs/{job['id']}/cancel").status_code == 200
    stopped = wait_for_job(api, job["id"])
    assert stopped["state"] == "cancelled" and 1 <= stopped["epochs_done"] < 5, stopped
    kept = [h["epoch"] for h in api.get(f"/v1/jobs/{job['id']}").json()["history"]]
    assert kept == list(range(1, stopped["epochs_done"] + 1))

    # A checkpoint that cannot be read fails the job on its ranks: the error names one.
    checkpoint = api.app.state.settings.data_dir / "jobs" / job["id"] / "checkpoint.safetensors"
    good = checkpoint.read_bytes()
    checkpoint.write_bytes(b"not a checkpoint")
    assert api.post(f"/v1/jobs/{job['id']}/resume").status_code == 200
    failed = wait_for_job(api, job["id"])
    assert failed["state"] == "failed", failed
    assert re.match(r"rank [01] of 2 failed with \w+", failed["error"]), failed["error"]
    assert "processes.log" in failed["error"]

    checkpoint.write_bytes(good)
    assert api.post(f"/v1/jobs/{job['id']}/resume").status_code == 200
    done = wait_for_job(api, job["id"], timeout=120)
    assert done["state"] == "completed", done
    # the resumed ranks continued from the checkpoint: no epoch trained twice
    assert [h["epoch"] for h in api.get(f"/v1/jobs/{job['id']}").json()["history"]] == [1, 2, 3, 4, 5]


def test_a_rank_that_dies_fails_the_job_naming_it(api):
    job = api.post("/v1/jobs", json={**SLOW, "epochs": 50}).json()
    _wait_for_epochs(api, job["id"], 1)
    pids = _rank_pids(api.app.state.settings.data_dir, job["id"])
    os.kill(pids[1], signal.SIGKILL)  # as the OOM killer would
    failed = wait_for_job(api, job["id"], timeout=30)
    assert failed["state"] == "failed", failed
    assert failed["error"].startswith("rank 1 of 2 died: killed by SIGKILL (signal 9)"), failed["error"]
    assert _gone(pids.values()), "a rank outlived its failed job"


def test_stopping_the_server_ends_the_ranks(tmp_path, monkeypatch):
    _offline(monkeypatch)
    settings = ServerSettings(data_dir=tmp_path / "data", workers=1, max_processes=2)
    with TestClient(create_app(settings)) as client:
        job = client.post("/v1/jobs", json=SLOWER).json()
        pids = _rank_pids(settings.data_dir, job["id"])
    assert _gone(pids.values(), timeout=3), "ranks outlived the server's shutdown"
    with TestClient(create_app(settings)) as client:
        assert client.get(f"/v1/jobs/{job['id']}").json()["state"] == "interrupted"


def test_a_killed_server_takes_its_ranks_with_it(tmp_path):
    server = LiveServer(tmp_path / "data", OUTPUT / "logs" / "distributed-kill.log", FORGEML_MAX_PROCESSES="2")
    try:
        server.start()
        with server.client() as api:
            job = api.post("/v1/jobs", json=SLOWER)
            assert job.status_code == 201, job.text
        pids = _rank_pids(server.data_dir, job.json()["id"])
        server.stop(kill=True)
        assert _gone(pids.values(), timeout=3), "ranks outlived a killed server"
    finally:
        server.stop(kill=True)


def test_rank_failures_are_told_by_rank():
    raised = (
        "Traceback (most recent call last):\n  ...\nValueError: bad batch 17\n"
        "forgeml.distributed: rank 1 of 2 failed with ValueError: bad batch 17; ending the job\n"
    )
    assert rank_failure(raised, 1, 2) == "rank 1 of 2 failed with ValueError: bad batch 17"
    # mpiexec names the first death it noticed, here rank 0 (pid 100) that it killed itself while ending the
    # job; the rank guards' records name the rank that died first.
    died = (
        "forgeml.server.worker: rank 0 of 3 is pid 100\nforgeml.server.worker: rank 2 of 3 is pid 102\n"
        "=   BAD TERMINATION OF ONE OF YOUR APPLICATION PROCESSES\n=   PID 100 RUNNING AT host\n=   EXIT CODE: 9\n"
        "YOUR APPLICATION TERMINATED WITH THE EXIT STRING: Killed (signal 9)\n"
    )
    first = RankFailure(rank=2, size=3, pid=102, time=1.0, signal=9)
    assert rank_failure(died, 9, 3, first) == "rank 2 of 3 died: killed by SIGKILL (signal 9)"
    assert rank_failure(died, 9, 3) == "a rank of 3 died: Killed (signal 9)"  # no record: no rank is guessed
    exited = RankFailure(rank=1, size=2, pid=7, time=1.0, code=3)
    assert rank_failure("", 3, 2, exited) == "rank 1 of 2 died: exited with code 3"
    early = "forgeml.server.worker: rank 0 of 2 is pid 5\nTraceback ...\nImportError: no module x\n"
    assert rank_failure(early, 1, 2) == "the job's 2 processes ended with exit code 1: ImportError: no module x"
    assert rank_failure("", 0, 2) == "the job's 2 processes ended without finishing it"


def test_max_processes_setting():
    assert ServerSettings().max_processes == default_max_processes() == min(4, len(os.sched_getaffinity(0)))
    assert ServerSettings.from_env({"FORGEML_MAX_PROCESSES": "8"}).max_processes == 8
    with pytest.raises(ValueError, match="max_processes"):
        ServerSettings.from_env({"FORGEML_MAX_PROCESSES": "0"})


def test_serve_max_processes_flag_wins_over_the_environment(monkeypatch):
    from forgeml import cli

    captured = {}
    monkeypatch.setattr("forgeml.server.app.serve", lambda settings: captured.setdefault("settings", settings))
    monkeypatch.setenv("FORGEML_MAX_PROCESSES", "8")
    assert cli.main(["serve", "--max-processes", "3"]) == 0
    assert captured["settings"].max_processes == 3
