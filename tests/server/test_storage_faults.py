"""The platform under storage faults: a corrupt or missing checkpoint, the data directory's disk full, and the
server or a worker killed (SIGKILL) mid-epoch. Nothing acknowledged is lost, jobs resume or fail with a clear
reason, and the server keeps answering. (PostgreSQL restarted mid-job: test_postgres.py.)

One ``forgeml serve`` (default SQLite store) runs the module's live tests, its data directory on a small tmpfs
mounted for the module (``mount -t tmpfs``: the tests run as root, here and in CI), so that the disk can be
filled up; the server-kill test restarts it on the same directory. Two more tests run a job in this process
(:func:`run_job`) to reach what a live server cannot time: the disk filling up just as the trained model is
written, and a worker that died between writing a checkpoint and its epoch's row.
"""

from __future__ import annotations

import errno
import os
import signal
import sqlite3
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from .conftest import OUTPUT, TINY_MLP, LiveServer, child_processes, end_processes, wait_for_job

DISK_SIZE = "48m"  # the tmpfs of the data directory: room for the jobs below, small enough to fill at once
JOB = {"model": TINY_MLP, "dataset": "mnist", "batch_size": 32}  # an epoch in a fraction of a second
CHECKPOINT = "checkpoint.safetensors"


@dataclass
class Disk:
    """The module's tmpfs (``problem`` says why none could be mounted; the data directory is then a plain one)."""

    path: Path
    problem: str | None

    def require(self) -> None:
        if self.problem is not None:
            pytest.fail(self.problem)


def _mount_tmpfs(path: Path, size: str) -> str | None:
    """Mount a tmpfs of ``size`` on ``path``; None when it worked, else why not (in words, with the fix)."""
    try:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "forgeml-test-tmpfs", str(path)],
            check=False,
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot mount a tmpfs for the full-disk test: {exc}"
    if done.returncode == 0:
        return None
    return (
        f"cannot mount a tmpfs on {path} for the full-disk test ({done.stderr.strip() or done.returncode}): it needs "
        "root (CI and the project's containers run the tests as root); run the tests as root, e.g. sudo make test"
    )


@pytest.fixture(scope="module")
def disk(tmp_path_factory):
    path = tmp_path_factory.mktemp("storage-faults")
    problem = _mount_tmpfs(path, DISK_SIZE)
    try:
        yield Disk(path, problem)
    finally:
        if problem is None:
            if subprocess.run(["umount", str(path)], check=False, capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", str(path)], check=False, capture_output=True)  # busy: detach it


@pytest.fixture(scope="module")
def server(disk):
    live = LiveServer(disk.path / "data", OUTPUT / "logs" / "storage-faults.log")
    live.start()
    yield live
    live.stop()


def fill(path: Path) -> int:
    """Write ``path`` until its disk has no byte left (ENOSPC); returns how many bytes it took."""
    written = 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for size in (1 << 20, 1 << 12, 1):
            block = b"\0" * size
            while True:
                try:
                    written += os.write(fd, block)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
    finally:
        os.close(fd)
    return written


def wait_for_epochs(api, job_id: str, epochs: int, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = api.get(f"/v1/jobs/{job_id}").json()
        if job["epochs_done"] >= epochs:
            return job
        assert job["state"] in ("queued", "running"), f"the job ended before epoch {epochs}: {job}"
        assert time.monotonic() < deadline, f"the job did not finish {epochs} epochs in {timeout} s: {job}"
        time.sleep(0.02)


def history(api, job_id: str) -> list[int]:
    return [h["epoch"] for h in api.get(f"/v1/jobs/{job_id}").json()["history"]]


def checkpoint_epoch(path: Path) -> int:
    import forgeml as fm

    return int(fm.load(path)["epoch"])


def stopped_job(api, epochs: int) -> dict:
    """A job of ``epochs`` epochs, cancelled after its first: it has a checkpoint and can be resumed."""
    job = api.post("/v1/jobs", json={**JOB, "epochs": epochs}).json()
    wait_for_epochs(api, job["id"], 1)
    assert api.post(f"/v1/jobs/{job['id']}/cancel").status_code == 200
    stopped = wait_for_job(api, job["id"], timeout=30)
    assert stopped["state"] == "cancelled" and 1 <= stopped["epochs_done"] < epochs, stopped
    return stopped


def resume(api, job_id: str, timeout: float = 60.0) -> dict:
    response = api.post(f"/v1/jobs/{job_id}/resume")
    assert response.status_code == 200, response.text
    return wait_for_job(api, job_id, timeout=timeout)


# -- a corrupt, truncated or missing checkpoint -------------------------------------------------------------
def test_a_corrupt_truncated_or_missing_checkpoint_fails_the_resume_and_a_restored_one_completes(server, api):
    epochs = 6
    stopped = stopped_job(api, epochs)
    job_id, done_before = stopped["id"], stopped["epochs_done"]
    relative = f"jobs/{job_id}/{CHECKPOINT}"
    checkpoint = server.data_dir / relative
    good = checkpoint.read_bytes()
    assert checkpoint_epoch(checkpoint) == done_before

    damages = {
        "garbage": (lambda: checkpoint.write_bytes(os.urandom(len(good))), "corrupt"),
        "truncated": (lambda: checkpoint.write_bytes(good[: len(good) // 2]), "truncated"),
        "missing": (checkpoint.unlink, "missing"),
    }
    for damage, (apply, said) in damages.items():
        apply()
        failed = resume(api, job_id)
        assert failed["state"] == "failed", (damage, failed)
        error = failed["error"]
        assert f"cannot resume from the checkpoint {relative}" in error and said in error, (damage, error)
        assert "restore" in error and str(server.data_dir) not in error, (damage, error)
        # what was acknowledged stays: the epochs before the cancel, no more, no fewer
        assert failed["epochs_done"] == done_before and history(api, job_id) == list(range(1, done_before + 1))
        assert api.get("/readyz").status_code == 200

    checkpoint.write_bytes(good)  # the operator restores it
    done = resume(api, job_id)
    assert done["state"] == "completed" and done["error"] is None, done
    assert history(api, job_id) == list(range(1, epochs + 1))  # from the checkpoint on: no epoch trained twice


# -- the data directory's disk full --------------------------------------------------------------------------
def test_a_full_disk_fails_the_job_naming_it_keeps_its_checkpoint_and_uploads_get_507(disk, server, api):
    disk.require()
    epochs = 6
    job_id = api.post("/v1/jobs", json={**JOB, "epochs": epochs}).json()["id"]
    job_dir = server.data_dir / "jobs" / job_id
    fillers = [disk.path / "filler"]
    models_before = set(server.data_dir.glob("models/*"))
    try:
        wait_for_epochs(api, job_id, 2)
        fill(fillers[0])
        failed = wait_for_job(api, job_id, timeout=60)
        assert failed["state"] == "failed", failed
        done_before, error = failed["epochs_done"], failed["error"]
        assert 2 <= done_before < epochs, failed
        checkpoint_failed = (
            f"no space left on device while writing the checkpoint jobs/{job_id}/{CHECKPOINT} of epoch "
            f"{done_before + 1} (the data directory's disk is full); the checkpoint of epoch {done_before} is intact"
        )
        # (when the disk fills between an epoch's checkpoint and its row, the row is what fails; resume stores it)
        row_failed = f"no space left on device while storing epoch {done_before + 1} in the database"
        assert error.startswith((checkpoint_failed, row_failed)), error
        # the acknowledged epochs are all there, and the checkpoint in place is a good one, whole
        assert history(api, job_id) == list(range(1, done_before + 1))
        assert sorted(p.name for p in job_dir.iterdir()) == [CHECKPOINT], "a partial checkpoint was left behind"
        assert checkpoint_epoch(job_dir / CHECKPOINT) == done_before + (not error.startswith(checkpoint_failed))
        assert set(server.data_dir.glob("models/*")) == models_before, "a model file was written for a failed job"

        # the server answers; an upload on the full disk gets a clear 507 and leaves nothing behind
        fillers.append(disk.path / "filler-2")
        fill(fillers[1])  # the space the worker freed to record the failure
        assert os.statvfs(disk.path).f_bavail == 0
        assert api.get("/healthz").status_code == 200
        assert api.get("/v1/jobs").status_code == 200
        assert api.get("/readyz").status_code == 200  # the database reads; jobs fail at their first write
        csv = b"a,b,label\n" + b"".join(b"%d,%d,%s\n" % (i, i % 7, b"xy"[i % 2 : i % 2 + 1]) for i in range(400))
        upload = api.post("/v1/datasets", files={"file": ("flowers.csv", csv)}, data={"target": "label"})
        assert upload.status_code == 507, upload.text
        assert upload.json()["detail"].startswith("no space left on device while storing flowers.csv"), upload.text
        assert not any(server.data_dir.glob("datasets/*")), "the failed upload left a file"
    finally:
        for filler in fillers:
            filler.unlink(missing_ok=True)

    # with space again: the job resumes from its checkpoint and completes; the upload goes through
    done = resume(api, job_id)
    assert done["state"] == "completed" and done["error"] is None, done
    assert history(api, job_id) == list(range(1, epochs + 1))
    assert (server.data_dir / "models" / f"{done['model_id']}.safetensors").is_file()
    upload = api.post("/v1/datasets", files={"file": ("flowers.csv", csv)}, data={"target": "label"})
    assert upload.status_code == 201, upload.text
    assert (server.data_dir / ".forgeml-reserve").is_file(), "the reserve was not made again once space was freed"


# -- the server or a worker killed mid-epoch ---------------------------------------------------------------
def _rows(data_dir: Path, query: str, *params) -> list[tuple]:
    """The server's SQLite database, read directly (as an operator would while the server is down)."""
    with sqlite3.connect(data_dir / "forgeml.sqlite", timeout=30) as conn:
        return conn.execute(query, params).fetchall()


def test_a_server_killed_mid_epoch_leaves_its_job_interrupted_and_resume_completes_it(server):
    epochs = 6
    with server.client() as api:
        job_id = api.post("/v1/jobs", json={**JOB, "epochs": epochs}).json()["id"]
        wait_for_epochs(api, job_id, 2)
    orphans = child_processes(server.process.pid)  # its worker and multiprocessing's resource tracker
    server.stop(kill=True)  # SIGKILL, mid-epoch: the server marks nothing on its way out
    assert not end_processes(orphans), "the killed server's worker processes outlived it"
    [(state, done_before)] = _rows(server.data_dir, "SELECT state, epochs_done FROM jobs WHERE id = ?", job_id)
    assert state == "running" and 2 <= done_before < epochs, (state, done_before)

    server.start()  # the same data directory
    with server.client() as api:
        stopped = api.get(f"/v1/jobs/{job_id}").json()
        assert stopped["state"] == "interrupted" and "server stopped" in stopped["error"], stopped
        assert stopped["epochs_done"] == done_before and history(api, job_id) == list(range(1, done_before + 1))
        assert checkpoint_epoch(server.data_dir / "jobs" / job_id / CHECKPOINT) == done_before
        done = resume(api, job_id)
        assert done["state"] == "completed", done
        assert history(api, job_id) == list(range(1, epochs + 1))  # every epoch once, in order


def _niceness(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[16])


def test_a_worker_killed_mid_epoch_interrupts_its_job_and_resume_completes_it(server, api):
    epochs = 6
    job_id = api.post("/v1/jobs", json={**JOB, "epochs": epochs}).json()["id"]
    wait_for_epochs(api, job_id, 2)
    server_nice = _niceness(server.process.pid)
    workers = [pid for pid in child_processes(server.process.pid) if _niceness(pid) == server_nice + 10]
    assert len(workers) == 1, workers
    os.kill(workers[0], signal.SIGKILL)

    stopped = wait_for_job(api, job_id, timeout=30)
    assert stopped["state"] == "interrupted" and "worker process died" in stopped["error"], stopped
    done_before = stopped["epochs_done"]
    assert 2 <= done_before < epochs and history(api, job_id) == list(range(1, done_before + 1))
    deadline = time.monotonic() + 60
    while api.get("/readyz").status_code != 200:  # the pool is replaced
        assert time.monotonic() < deadline, "the job pool did not recover in 60 s"
        time.sleep(0.1)
    done = resume(api, job_id)
    assert done["state"] == "completed", done
    assert history(api, job_id) == list(range(1, epochs + 1))


# -- in this process: what a live server cannot time --------------------------------------------------------
@pytest.fixture
def local_job(tmp_path):
    """``local_job(epochs)`` -> (database, data directory, job id): a queued job in a fresh SQLite database, to
    run with :func:`run_job` here."""
    from forgeml.server.db import Database, JobRow, new_id
    from forgeml.server.schemas import JobCreate

    data_dir = tmp_path / "data"
    data_dir.mkdir()
    db = Database(f"sqlite:///{data_dir / 'forgeml.sqlite'}")

    def make(epochs: int) -> str:
        request = JobCreate.model_validate({**JOB, "epochs": epochs}).model_dump(mode="json")
        job_id = new_id("job")
        with db.session() as s:
            s.add(JobRow(id=job_id, name="local", state="queued", request=request, epochs=epochs))
        return job_id

    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):  # as a worker process has: no BLAS threads spinning
        yield db, data_dir, make
    db.dispose()


def _epochs_of(db, job_id: str) -> list[int]:
    from forgeml.server.db import EpochRow, select

    return [r.epoch for r in db.all(select(EpochRow).where(EpochRow.job_id == job_id).order_by(EpochRow.id))]


def test_a_full_disk_as_the_model_is_written_fails_the_job_and_leaves_no_model_file(local_job, monkeypatch):
    import forgeml as fm
    from forgeml.server.db import JobRow
    from forgeml.server.worker import run_job

    db, data_dir, make = local_job
    job_id = make(2)
    real_save = fm.save

    def save(obj, path, *args, **kwargs):
        if Path(path).parent.name == "models":  # the trained model's file: the disk fills up as it is written
            Path(path).write_bytes(b"\0" * 100)  # what a crash mid-write would leave, were it written in place
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(obj, path, *args, **kwargs)

    monkeypatch.setattr(fm, "save", save)
    assert run_job(job_id, db.url, str(data_dir)) == "failed"
    job = db.get(JobRow, job_id)
    assert job.state == "failed" and job.model_id is None, job.error
    assert job.error.startswith("no space left on device while writing the trained model's file models/mdl_"), job.error
    assert "the checkpoint of epoch 2 is intact" in job.error
    assert list((data_dir / "models").iterdir()) == [], "a half-written model file was left"
    assert _epochs_of(db, job_id) == [1, 2] and checkpoint_epoch(data_dir / "jobs" / job_id / CHECKPOINT) == 2

    monkeypatch.setattr(fm, "save", real_save)  # space again: resume finishes it without training again
    assert run_job(job_id, db.url, str(data_dir)) == "completed"
    job = db.get(JobRow, job_id)
    assert job.state == "completed" and job.error is None and _epochs_of(db, job_id) == [1, 2]
    assert [p.name for p in (data_dir / "models").iterdir()] == [f"{job.model_id}.safetensors"]


def test_an_epoch_in_the_checkpoint_but_not_in_the_database_is_stored_on_resume(local_job):
    """A worker that died (or found the disk full) between writing an epoch's checkpoint and its row: the resumed
    job stores that epoch from the checkpoint's history, so no epoch is missing or trained twice."""
    from forgeml.server.db import EpochRow, JobRow, select
    from forgeml.server.worker import run_job

    db, data_dir, make = local_job
    job_id = make(2)
    assert run_job(job_id, db.url, str(data_dir)) == "completed"
    with db.session() as s:  # as it would be had the worker died right after epoch 2's checkpoint
        s.delete(s.scalars(select(EpochRow).where(EpochRow.job_id == job_id, EpochRow.epoch == 2)).one())
        job = s.get(JobRow, job_id)
        job.state, job.epochs_done, job.model_id, job.epochs = "interrupted", 1, None, 3
        job.request = {**job.request, "epochs": 3}
    assert run_job(job_id, db.url, str(data_dir)) == "completed"
    job = db.get(JobRow, job_id)
    assert job.state == "completed" and job.epochs_done == 3, job.error
    assert _epochs_of(db, job_id) == [1, 2, 3]
