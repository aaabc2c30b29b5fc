"""The job manager: a bounded pool of worker processes that train, and restart safety.

Jobs never run on the server's event loop: each is a call of
:func:`forgeml.server.worker.run_job` in a process of a spawn-context pool of
``workers`` processes. State lives in the database, so the server, the workers
and a later server all see the same jobs. At start, jobs left ``running`` or
``queued`` by a server that stopped are marked ``interrupted``; ``resume``
continues them from their last checkpoint. A job on several processes holds one
worker process, which starts and waits for the job's ``mpiexec``; stopping the
pool ends those too.

A worker process that dies (killed, crashed, out of memory) breaks the whole
pool (``BrokenProcessPool``: Python ends its other workers too). The manager
then replaces the pool at once: a job that was running in it ends
``interrupted`` with an error that says its worker died (``resume`` continues it
from its last checkpoint); a job that was still waiting in it had not started,
so it is submitted again to the new pool (or ends ``cancelled`` if a cancel came
for it). ``/readyz`` reports the job pool not ready from the moment the pool
breaks until a process of the new pool has started and answered.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from .db import Database, JobRow, select
from .storage import ensure_reserve, run_with_reserve
from .worker import end_launched_jobs, run_job

__all__ = ["JobManager"]

log = logging.getLogger("forgeml.server.jobs")

TERMINAL = ("completed", "failed", "cancelled", "interrupted")
WORKER_DIED = (
    "the job's worker process died (killed, crashed or out of memory), or was ended with another that did; "
    "resume it to continue from its last checkpoint"
)
WARMUP_TIMEOUT = 120.0  # seconds a replacement pool's first process has to start and answer


class JobManager:
    def __init__(
        self,
        db: Database,
        data_dir: Path,
        workers: int,
        nice: int = 0,
        threads: int | None = None,
        device: str | None = None,
        memory_limit: int | None = None,
    ) -> None:
        self.db = db
        self.data_dir = Path(data_dir)
        self.workers = workers
        self.device = device  # the server's device for jobs that name none ('cpu', 'cuda:N'; None: auto)
        self.nice, self.threads = nice, threads
        self.memory_limit = memory_limit  # bytes of data memory per worker process (RLIMIT_DATA); None: no limit
        self._pool: ProcessPoolExecutor | None = None
        self._futures: dict[str, Future] = {}
        self.accepting = False
        self._stopping = False
        self._lock = threading.RLock()  # the pool and its replacement (done callbacks run on the pool's threads)
        self._restarting: str | None = None  # why the pool is not ready (being replaced), None when it is
        self.restarts = 0  # pools replaced since the start, after a worker died

    # -- lifecycle ----------------------------------------------------------------
    def start(self) -> int:
        """Mark jobs a previous server left unfinished as ``interrupted``; returns how many."""
        ensure_reserve(self.data_dir)  # room to record a job's failure when the disk fills up (storage.py)
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
        with self._lock:
            if self._pool is None:
                self._pool = ProcessPoolExecutor(
                    max_workers=self.workers,
                    mp_context=multiprocessing.get_context("spawn"),
                    initializer=_init_worker,
                    initargs=(self.nice, self.threads, self.memory_limit),
                )
            return self._pool

    def health(self) -> str:
        """``'ok'`` when jobs can start; otherwise why not (``/readyz`` reports it). A pool found broken here
        (a worker died while no job ran) is replaced."""
        if not self.accepting:
            return "stopped"
        pool = self._pool
        if pool is not None and getattr(pool, "_broken", False):
            self._replace(pool)
        restarting = self._restarting
        return "ok" if restarting is None else restarting

    def _replace(self, broken: ProcessPoolExecutor) -> None:
        """Put a new pool in the place of ``broken`` (once, whoever notices first) and warm it up: readiness
        says not ready until one of its processes has started and answered."""
        with self._lock:
            if self._stopping or self._pool is not broken:
                return  # already replaced, or stopping
            self._pool = None
            self.restarts += 1
            self._restarting = "restarting: a worker process died; starting new workers"
            log.warning("a worker process died; replacing the job pool (restart %d)", self.restarts)
            # The broken pool already ended its processes and failed its futures (BrokenProcessPool): nothing to stop.
            pool = self._executor()
            warmup = pool.submit(_ready)
        threading.Thread(
            target=self._await_warmup, args=(pool, warmup), name="forgeml-pool-warmup", daemon=True
        ).start()

    def _await_warmup(self, pool: ProcessPoolExecutor, warmup: Future) -> None:
        try:
            warmup.result(timeout=WARMUP_TIMEOUT)
        except BrokenProcessPool:
            time.sleep(1.0)  # the new pool broke too: replace it again, not in a tight loop
            self._replace(pool)
            return
        except Exception as exc:  # noqa: BLE001 - readiness reports it; a submitted job may still start later
            with self._lock:
                if self._pool is pool:
                    self._restarting = f"error: new worker processes did not start: {type(exc).__name__}: {exc}"
            return
        with self._lock:
            if self._pool is pool:
                self._restarting = None
                log.info("the job pool is ready again")

    def shutdown(self) -> None:
        """Stop the workers now and mark their unfinished jobs ``interrupted`` (``resume`` continues them)."""
        self.accepting = False
        self._stopping = True  # workers killed below are not failures of their jobs
        with self._lock:
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
        """Queue ``job_id`` on the pool; a pool found broken is replaced and the job goes to the new one."""
        args = (run_job, job_id, self.db.url, str(self.data_dir), self.device, self.threads)
        ensure_reserve(self.data_dir)  # made again once space was freed after a full disk (a no-op when it is there)
        future = error = None
        for _ in range(3):  # a pool that breaks again at once is not retried for ever
            pool = self._executor()
            try:
                future = pool.submit(*args)
                break
            except BrokenProcessPool as exc:  # a worker died since the last job: replace the pool and go on
                error = exc
                self._replace(pool)
                if self._stopping:
                    break
            except Exception as exc:  # noqa: BLE001 - recorded on the job below, then raised
                error = exc
                break
        if future is None:  # no worker could start: the job must not stay queued forever
            with self.db.session() as s:
                job = s.get(JobRow, job_id)
                job.state, job.finished = "failed", time.time()
                job.error = f"no worker process could start: {type(error).__name__}: {error}"[:2000]
            raise error
        self._futures[job_id] = future
        future.add_done_callback(lambda f, jid=job_id, p=pool: self._finished(jid, f, p))

    def _finished(self, job_id: str, future: Future, pool: ProcessPoolExecutor | None = None) -> None:
        if self._futures.get(job_id) is future:
            self._futures.pop(job_id, None)
        if future.cancelled() or self._stopping:
            return
        exc = future.exception()
        if exc is None:
            return
        if isinstance(exc, BrokenProcessPool):  # a worker process died: every job in its pool lands here
            if pool is not None:
                self._replace(pool)
            self._after_broken_pool(job_id)
            return
        # the job's call itself failed (run_job raises only when it could not record the job's failure; pickling)
        error = f"the worker process ended abnormally: {type(exc).__name__}: {exc}"[:2000]

        def fail(s) -> None:
            job = s.get(JobRow, job_id)
            if job is not None and job.state in ("queued", "running"):
                job.state, job.error, job.finished = "failed", error, time.time()

        self._write(fail)

    def _write(self, work):
        """``work(session)`` in a transaction, from a pool thread: run again while the database server is away
        (:meth:`Database.run`), and on a full disk once more after the reserve file is released, so that a job's
        end is recorded."""
        return run_with_reserve(self.db, self.data_dir, work)

    def _after_broken_pool(self, job_id: str) -> None:
        """A job of a pool that broke: one that was running is interrupted; one still waiting (it never
        started) goes to the new pool, unless it was cancelled meanwhile."""

        def settle(s) -> bool:
            job = s.get(JobRow, job_id)
            if job is None or job.state not in ("queued", "running"):
                return False
            if job.state == "running":
                job.state, job.error, job.finished = "interrupted", WORKER_DIED, time.time()
                log.warning("job %s interrupted: its worker process died", job_id)
            elif job.cancel_requested:
                job.state, job.finished = "cancelled", time.time()
            else:
                return True
            return False

        if self._write(settle):
            try:
                self.submit(job_id)
            except Exception:  # submit recorded the failure on the job
                log.exception("job %s could not be queued again after its pool broke", job_id)

    def cancel(self, job_id: str) -> str:
        """Ask a job to stop: a queued one stops at once (or, when the pool has already handed it to a worker,
        as that worker starts it: it never trains), a running one between two batches within about a second
        (a job on several processes, at its next epoch boundary)."""
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


def _ready() -> bool:
    """The warm-up call of a replacement pool: answers once one of its processes has started."""
    return True


def _init_worker(nice: int, threads: int | None, memory_limit: int | None = None) -> None:
    """Run in each worker process as it starts: training yields the CPU to the server's requests and uses
    ``threads`` BLAS threads (OpenBLAS threads spin while they wait for each other, so more threads than
    free cores, at a lower priority, slow an epoch down many times over), and the worker ends itself
    when the server process is gone (killed) instead of idling on as an orphan. With ``memory_limit`` the
    process's data memory is limited (``RLIMIT_DATA``, :func:`forgeml.server.limits.apply_memory_limit`):
    an allocation past it is a MemoryError, which fails the job with an out-of-memory error, and the worker
    lives on for the next one."""
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
    if memory_limit:  # last: the watchdog above must start whatever the limit
        from .limits import apply_memory_limit

        apply_memory_limit(memory_limit)
