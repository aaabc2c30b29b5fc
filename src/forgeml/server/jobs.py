"""The job manager: a bounded pool of worker processes that train, and restart safety.

Jobs never run on the server's event loop: each is a call of
:func:`forgeml.server.worker.run_job` in a process of a spawn-context pool of
``workers`` processes. State lives in the database, so the server, the workers
and a later server all see the same jobs. At start, jobs left ``running`` or
``queued`` by a server that stopped are marked ``interrupted``; ``resume``
continues them from their last checkpoint. A job on several processes holds one
worker process, which starts and waits for the job's ``mpiexec``; stopping the
pool ends those too.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path

from .db import Database, JobRow, select
from .worker import end_launched_jobs, run_job

__all__ = ["JobManager"]

log = logging.getLogger("forgeml.server.jobs")

TERMINAL = ("completed", "failed", "cancelled", "interrupted")


class JobManager:
    def __init__(
        self,
        db: Database,
        data_dir: Path,
        workers: int,
        nice: int = 0,
        threads: int | None = None,
        device: str | None = None,
    ) -> None:
        self.db = db
        self.data_dir = Path(data_dir)
        self.workers = workers
        self.device = device  # the server's device for jobs that name none ('cpu', 'cuda:N'; None: auto)
        self.nice, self.threads = nice, threads
        self._pool: ProcessPoolExecutor | None = None
        self._futures: dict[str, Future] = {}
        self.accepting = False
        self._stopping = False

    # -- lifecycle ----------------------------------------------------------------
    def start(self) -> int:
        """Mark jobs a previous server left unfinished as ``interrupted``; returns how many."""
        with self.db.session() as s:
            stale = list(s.scalars(select(JobRow).where(JobRow.state.in_(("running", "queued")))))
            for job in stale:
                job.state = "interrupted"
                job.error = "the server stopped while this job was unfinished; resume it to continue"
        if stale:
            log.info("marked %d unfinished jobs interrupted", len(stale))
        self.accepting = True
        return len(stale)

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker,
                initargs=(self.nice, self.threads),
            )
        return self._pool

    def shutdown(self) -> None:
        """Stop the workers now and mark their unfinished jobs ``interrupted`` (``resume`` continues them)."""
        self.accepting = False
        self._stopping = True  # workers killed below are not failures of their jobs
        pool, self._pool = self._pool, None
        if pool is None:
            return
        unfinished = list(self._futures)
        processes = list(getattr(pool, "_processes", {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            if process.is_alive():
                process.terminate()
        for process in processes:
            process.join(timeout=5)
        with self.db.session() as s:
            for job in s.scalars(
                select(JobRow).where(JobRow.id.in_(unfinished), JobRow.state.in_(("running", "queued")))
            ):
                job.state = "interrupted"
                job.error = "the server stopped while this job was unfinished; resume it to continue"

    # -- jobs ---------------------------------------------------------------------
    def submit(self, job_id: str) -> None:
        try:
            future = self._executor().submit(
                run_job, job_id, self.db.url, str(self.data_dir), self.device, self.threads
            )
        except Exception as exc:  # no worker could start: the job must not stay queued forever
            with self.db.session() as s:
                job = s.get(JobRow, job_id)
                job.state, job.finished = "failed", time.time()
                job.error = f"no worker process could start: {type(exc).__name__}: {exc}"[:2000]
            raise
        self._futures[job_id] = future
        future.add_done_callback(lambda f, jid=job_id: self._finished(jid, f))

    def _finished(self, job_id: str, future: Future) -> None:
        self._futures.pop(job_id, None)
        if future.cancelled() or self._stopping:
            return
        exc = future.exception()
        if exc is not None:  # the worker process died (killed, out of memory): record it
            with self.db.session() as s:
                job = s.get(JobRow, job_id)
                if job is not None and job.state in ("queued", "running"):
                    job.state = "failed"
                    job.error = f"the worker process ended abnormally: {type(exc).__name__}: {exc}"[:2000]
                    job.finished = time.time()

    def cancel(self, job_id: str) -> str:
        """Ask a job to stop: a queued one stops at once, a running one at its next epoch boundary."""
        future = self._futures.get(job_id)
        with self.db.session() as s:
            job = s.get(JobRow, job_id)
            if job.state == "queued" and future is not None and future.cancel():
                job.state, job.finished = "cancelled", time.time()
            elif job.state in ("queued", "running"):
                job.cancel_requested = True
            return job.state

    def resume(self, job_id: str) -> None:
        with self.db.session() as s:
            job = s.get(JobRow, job_id)
            job.state, job.error, job.cancel_requested, job.finished = "queued", None, False, None
        self.submit(job_id)

    def running(self) -> int:
        return sum(1 for f in self._futures.values() if f.running())


def _init_worker(nice: int, threads: int | None) -> None:
    """Run in each worker process as it starts: training yields the CPU to the server's requests and uses
    ``threads`` BLAS threads (OpenBLAS threads spin while they wait for each other, so more threads than
    free cores, at a lower priority, slow an epoch down many times over), and the worker ends itself
    when the server process is gone (killed) instead of idling on as an orphan."""
    if nice and hasattr(os, "nice"):
        os.nice(nice)
    if threads:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=threads, user_api="blas")
    server_pid = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != server_pid:
                end_launched_jobs()  # a multi-process job's mpiexec and ranks go too
                os._exit(1)  # stores are atomic: an epoch's rows commit whole, checkpoints are renamed into place

    threading.Thread(target=watch, name="forgeml-server-watch", daemon=True).start()
