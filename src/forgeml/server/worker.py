"""One training job, run in a worker process: data, model, trainer, and everything persisted as it happens.

Each finished epoch writes its metrics and the AI events since the last epoch
to the database and a checkpoint (model, optimizer, history) to
``<data_dir>/jobs/<id>/checkpoint.safetensors``; a resumed job continues from
that checkpoint. A job whose ``cancel_requested`` flag is set when a worker
picks it up ends ``cancelled`` without training (only ``resume`` clears the
flag). A running one-process job reads the flag between batches (at most every
:data:`CANCEL_POLL` seconds) and stops mid-epoch: the epoch is abandoned, the
last epoch's checkpoint stays as it was, and ``resume`` continues from it. A
job on several processes stops at its next epoch boundary. The finished model's
weights, vocabulary and metadata become a ``models`` row, usable for prediction.

The checkpoint is written before the epoch's row, so an epoch the API shows is
always in the checkpoint; a resumed job stores from the checkpoint's history an
epoch whose row was never written (its worker died in between). The job's
database writes are run again while a database server restarts
(:meth:`~forgeml.server.db.Database.run`). A checkpoint that cannot be read
(corrupt, truncated, missing) fails the resumed job with an error naming it; a
full disk fails the job naming what could not be written, the last checkpoint
kept whole (:mod:`forgeml.server.storage`).

A job trains on the device it names (``device`` in its request), else on the
server's (``FORGEML_DEVICE``, resolved by the server: a GPU when there is one).
The data stay on the host; the trainer moves each batch to the device. A job
that names a device this machine lacks fails with a message that says so.

A job with ``processes`` N > 1 trains data-parallel on N processes: the worker
process starts ``mpiexec -n N <python> -m forgeml.server.worker <job> <data_dir>
<device>`` (in a session of its own, so that a shutdown ends it whole) and
waits for it. Every rank builds the same data, model and optimizer and trains
with a :class:`~forgeml.distributed.DistributedTrainer` over MPI (the AI, when
the job has it, runs on rank 0, which broadcasts its decisions); rank 0 alone
reads the job and writes its epochs, AI events, AI calls, checkpoints and
model, so the API shows the job as it shows a one-process one. On a GPU the
ranks share the job's device (MPI moves the gradients through the host). The
ranks' output goes to ``<data_dir>/jobs/<id>/processes.log``; a job whose rank
fails or dies ends ``failed`` with an error that names the rank. Each rank gets
its share of the worker's BLAS threads (``OMP_NUM_THREADS``,
``OPENBLAS_NUM_THREADS``, unless set), the database URL through the
environment (``FORGEML_DATABASE_URL``: never on a command line, where other
users could read it), and the pids of the server and of its worker process
(``FORGEML_SERVER_PID``, ``FORGEML_WORKER_PID``): a rank ends itself within a
second of either's death.

A job with ``profile`` set runs its first epoch (training and validation) under
:func:`forgeml.profiler.profile` and stores the :data:`PROFILE_TOP` ops that took the most
time of their own (name, calls, self and total time) as ``profile`` in the job's summary as
soon as that epoch ends; the later epochs run at full speed. In a multi-process job, rank 0
profiles its share of the work.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from forgeml.distributed.launch import RankFailure

__all__ = ["end_launched_jobs", "mpi_unavailable", "profile_summary", "rank_failure", "run_job", "select_device"]

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
PROFILE_TOP = 20  # the ops a profiled job keeps, by self time
CANCEL_POLL = 0.5  # seconds between two reads of a running job's cancel flag (between batches)
LOG_NAME = "processes.log"  # the ranks' output of a multi-process job, in its job folder
PID_LINE = "forgeml.server.worker: rank {rank} of {world} is pid {pid}"
_PMI_PREFIXES = ("PMI_", "PMIX_", "HYDRA_", "MPI_LOCAL", "OMPI_")
_launched: dict[int, subprocess.Popen] = {}  # the mpiexec processes this process started, by pid


def _mnist():
    import forgeml as fm
    from forgeml.data import TensorDataset
    from forgeml.data.datasets import MNIST

    def split(name):
        digits = MNIST(name, flatten=True)
        pixels = digits.data.reshape(-1, 784).astype(np.float32) / 255.0
        x = ((pixels - MNIST_MEAN) / MNIST_STD).astype(np.float32)
        return TensorDataset(fm.tensor(x), fm.tensor(digits.targets.astype(np.int64)))

    extras = {"input": "image", "mean": MNIST_MEAN, "std": MNIST_STD, "classes": [str(i) for i in range(10)]}
    return split("train"), split("test"), extras


def _spam(max_length: int):
    from forgeml.data.datasets import SpamAssassin
    from forgeml.data.text import TextClassificationDataset

    train_raw, test_raw = SpamAssassin("train"), SpamAssassin("test")
    train = TextClassificationDataset(
        train_raw.texts, train_raw.labels, min_freq=2, max_size=20_000, max_length=max_length
    )
    test = TextClassificationDataset(test_raw.texts, test_raw.labels, vocab=train.vocab, max_length=max_length)
    return train, test, {"input": "text", "classes": ["ham", "spam"], "max_length": max_length, "vocab": train.vocab}


def _csv(row, data_dir: Path):
    import forgeml as fm
    from forgeml.data import TensorDataset
    from forgeml.data.datasets import CSVDataset

    full = CSVDataset(data_dir / row.path, target=row.target)
    x = full.data.astype(np.float32)
    y = np.asarray(full.targets).astype(np.int64)
    mean, std = x.mean(axis=0), x.std(axis=0) + 1e-8
    x = ((x - mean) / std).astype(np.float32)
    order = np.random.default_rng(0).permutation(len(x))
    cut = max(1, int(0.8 * len(x)))
    train_idx, test_idx = order[:cut], order[cut:] if cut < len(x) else order[:1]
    classes = row.summary.get("classes")
    extras = {"input": "tabular", "mean": mean.tolist(), "std": std.tolist(), "classes": classes, "features": len(mean)}
    return (
        TensorDataset(fm.tensor(x[train_idx]), fm.tensor(y[train_idx])),
        TensorDataset(fm.tensor(x[test_idx]), fm.tensor(y[test_idx])),
        extras,
    )


def _optimizer(spec, params):
    from forgeml import optim

    kwargs = {"lr": spec.lr, "weight_decay": spec.weight_decay}
    if spec.name in ("sgd", "rmsprop") and spec.momentum is not None:
        kwargs["momentum"] = spec.momentum
    if spec.name in ("adam", "adamw"):
        if spec.betas is not None:
            kwargs["betas"] = spec.betas
        if spec.amsgrad is not None:
            kwargs["amsgrad"] = spec.amsgrad
    if spec.name == "sgd" and spec.nesterov:
        kwargs["nesterov"] = True
    if spec.eps is not None and spec.name != "sgd":
        kwargs["eps"] = spec.eps
    cls = {
        "sgd": optim.SGD,
        "adam": optim.Adam,
        "adamw": optim.AdamW,
        "rmsprop": optim.RMSprop,
        "adagrad": optim.Adagrad,
    }
    return cls[spec.name](params, **kwargs)


def select_device(requested: str | None, server_device: str | None = None) -> str:
    """The device a job trains on: the one its request names, else the server's (``'auto'`` when unset),
    checked against this machine (``'cpu'`` or ``'cuda:N'``). Raises
    :class:`~forgeml.server.settings.DeviceUnavailableError` for a device this machine lacks."""
    from forgeml.server.settings import resolve_device

    return resolve_device(requested or server_device or "auto")


def run_job(job_id: str, db_url: str, data_dir: str, device: str | None = None, threads: int | None = None) -> str:
    """Train job ``job_id`` to completion (or cancellation) on ``device`` (the server's: ``'cpu'``,
    ``'cuda:N'`` or ``'auto'``; the job's own ``device`` wins); returns its final state. Never raises.

    A job on several processes runs under ``mpiexec``, its ranks sharing ``threads`` BLAS threads (default:
    this machine's cores)."""
    from forgeml.server.db import Database, JobRow

    db = Database(db_url)
    try:

        def processes_of(s) -> int:
            job = s.get(JobRow, job_id)
            return int((job.request or {}).get("processes") or 1) if job is not None else 1

        processes = db.run(processes_of)
        if processes > 1:
            return _launch(job_id, db, Path(data_dir), device, processes, threads)
        return _run(job_id, db, Path(data_dir), device)
    except Exception as exc:  # noqa: BLE001 - a job's failure is recorded, never lost
        traceback.print_exc()
        if isinstance(exc, MemoryError):  # over the worker's memory limit: the job fails, the worker lives on
            _release_frames(exc)  # the job's arrays go before its failure is written
        _record_failure(db, job_id, Path(data_dir), exc)
        return "failed"
    finally:
        db.dispose()


def _release_frames(exc: BaseException) -> None:
    """Free what the frames of ``exc``'s traceback hold (a failed job's model, optimizer and batches): near the
    memory limit, recording the failure needs the room."""
    import gc

    tb, exc.__traceback__ = exc.__traceback__, None
    if tb is not None:
        traceback.clear_frames(tb)  # the frames that have returned; the running one is left as it is
    del tb
    gc.collect()


def _failure_text(exc: BaseException) -> str:
    """A failed job's ``error``: the clear messages of a full disk or an unreadable checkpoint as they are,
    anything else as ``Type: message``."""
    from forgeml.server.storage import DiskFullError, disk_full_message, is_disk_full

    if isinstance(exc, DiskFullError | CheckpointUnusable):
        return str(exc)
    if isinstance(exc, MemoryError):
        from forgeml.server.limits import out_of_memory_message

        return out_of_memory_message(exc)
    if is_disk_full(exc):
        return disk_full_message("writing to the data directory", f"{type(exc).__name__}: {exc}")
    return f"{type(exc).__name__}: {exc}"


def _record_failure(db, job_id: str, data_dir: Path, exc: BaseException) -> None:
    """Mark the job ``failed`` with ``exc``'s reason. On a full disk the reserve file goes first, so that SQLite on
    that disk has room for the row; a database server that is away is waited for (:meth:`Database.run`)."""
    from forgeml.server.db import JobRow
    from forgeml.server.storage import is_disk_full, release_reserve, run_with_reserve

    if is_disk_full(exc):
        release_reserve(data_dir)
    error = _failure_text(exc)[:2000]

    def fail(s) -> None:
        job = s.get(JobRow, job_id)
        if job is not None:
            job.state, job.error, job.finished = "failed", error, time.time()

    run_with_reserve(db, data_dir, fail)  # a reserve made after this job started is released on a full disk too


class CheckpointUnusable(RuntimeError):
    """A job's checkpoint cannot be resumed from (missing, truncated, corrupt, or of another model); the message
    names it and says what to do."""


def _load_checkpoint(trainer, data_dir: Path, relative: str) -> None:
    """``trainer.load_checkpoint`` of the job's checkpoint, failing with :class:`CheckpointUnusable` naming it."""
    path = data_dir / relative
    try:
        trainer.load_checkpoint(path)
    except Exception as exc:
        reason = str(exc).replace(str(path), "it").replace(str(path.resolve()), "it")
        raise CheckpointUnusable(
            f"cannot resume from the checkpoint {relative}: {reason} ({type(exc).__name__}); restore a good copy "
            "of that file and resume the job again, or start a new job"
        ) from exc


def _match_checkpoint(s, job_id: str, trainer, relative: str) -> None:
    """Make the job's stored epochs those of the checkpoint it resumes from: an epoch the checkpoint holds but the
    database missed (the worker died between writing the one and the other, or its row could not be written) is
    stored from the checkpoint's history; epochs past the checkpoint (an older copy was put back) are dropped, as
    they are trained again."""
    from forgeml.server.db import EpochRow, JobRow, select

    rows = list(s.scalars(select(EpochRow).where(EpochRow.job_id == job_id).order_by(EpochRow.id)))
    stored = {row.epoch for row in rows}
    for row in rows:
        if row.epoch > trainer.epoch:
            s.delete(row)
    for metrics in trainer.history:
        if metrics.epoch not in stored and metrics.epoch <= trainer.epoch:
            s.add(EpochRow(job_id=job_id, epoch=metrics.epoch, metrics=metrics.as_dict()))
    job = s.get(JobRow, job_id)
    job.epochs_done, job.checkpoint = trainer.epoch, relative
    accuracies = [m.val_accuracy for m in trainer.history if m.val_accuracy is not None and m.epoch <= trainer.epoch]
    if accuracies:
        job.best_val_accuracy = max(accuracies)


# -- a job on several processes: the worker process's side ------------------------------------------
def mpi_unavailable() -> str | None:
    """Why this machine cannot run a multi-process job (no mpi4py, no ``mpiexec``), or None when it can."""
    from forgeml.distributed import is_available
    from forgeml.distributed.launch import find_mpiexec

    if not is_available():
        return 'mpi4py is not installed (pip install "forgeml[dist]")'
    try:
        find_mpiexec()
    except FileNotFoundError as exc:
        return str(exc)
    return None


def end_launched_jobs() -> None:
    """Kill every multi-process job this process started: mpiexec's process group (it and its proxies, which
    take the ranks with them). For a worker process that is being stopped, or whose server is gone."""
    for pid in list(_launched):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)


def _rank_environment(db_url: str, processes: int, threads: int | None) -> dict[str, str]:
    from forgeml.distributed.launch import THREAD_VARIABLES, available_cpus

    # A server started under a launcher must not hand its own PMI wiring to the job it starts.
    env = {k: v for k, v in os.environ.items() if not k.startswith(_PMI_PREFIXES)}
    share = str(max(1, (threads or available_cpus()) // processes))
    for name in THREAD_VARIABLES:
        env.setdefault(name, share)
    env["PYTHONUNBUFFERED"] = "1"  # the ranks' lines reach the log as they are printed, even from a rank that aborts
    env["FORGEML_DATABASE_URL"] = db_url
    env["FORGEML_SERVER_PID"] = str(os.getppid())
    env["FORGEML_WORKER_PID"] = str(os.getpid())
    from forgeml.server.limits import RANK_LIMIT_VARIABLE, rank_memory_limit

    rank_limit = rank_memory_limit(processes)  # the ranks share the worker's memory limit
    if rank_limit is None:
        env.pop(RANK_LIMIT_VARIABLE, None)
    else:
        env[RANK_LIMIT_VARIABLE] = str(rank_limit)
    return env


@contextlib.contextmanager
def _sigterm_ends_launched_jobs():
    """While a multi-process job runs, a SIGTERM to this worker process (the server shutting its pool down)
    kills the job's processes before this one ends, as the signal's default action would end it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_sigterm(signum, frame) -> None:
        end_launched_jobs()
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _launch(job_id: str, db, data_dir: Path, server_device: str | None, processes: int, threads: int | None) -> str:
    """Run job ``job_id`` on ``processes`` MPI ranks and wait for them; a job they leave unfinished is failed."""
    from forgeml.distributed.launch import RANK_STATUS_VARIABLE, first_rank_failure, launch_command
    from forgeml.server.db import JobRow
    from forgeml.server.schemas import JobCreate

    with db.session() as s:
        job = s.get(JobRow, job_id)
        if job is None:
            return "missing"
        request = JobCreate.model_validate(job.request)
        if job.cancel_requested:  # cancelled while it waited for a worker: it never starts
            job.state, job.finished = "cancelled", time.time()
            return "cancelled"
        # Claimed here, not by rank 0: a cancel that comes while the ranks start up is kept for the first epoch end.
        job.state, job.started, job.error = "running", job.started or time.time(), None
    device = select_device(request.device, server_device)  # before any work: an unavailable device fails the job
    # Each rank runs under the rank guard, which records a rank that dies: mpiexec's report may name a rank
    # it killed itself while ending the job.
    command = launch_command("forgeml.server.worker", [job_id, str(data_dir), device], processes, module=True)
    job_dir = data_dir / "jobs" / job_id
    status_dir = job_dir / "ranks"
    shutil.rmtree(status_dir, ignore_errors=True)  # a resumed job's earlier failures are not this run's
    status_dir.mkdir(parents=True)
    environment = {**_rank_environment(db.url, processes, threads), RANK_STATUS_VARIABLE: str(status_dir)}
    log_path = job_dir / LOG_NAME
    with log_path.open("ab") as log, _sigterm_ends_launched_jobs():
        start = log.tell()
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=environment,
            start_new_session=True,
        )
        _launched[process.pid] = process
        try:
            code = process.wait()
        finally:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)  # strays that outlived mpiexec
            _launched.pop(process.pid, None)
    with log_path.open("rb") as log:
        log.seek(start)
        output = log.read()[-200_000:].decode("utf-8", "replace")
    with db.session() as s:
        job = s.get(JobRow, job_id)
        if job is None:
            return "missing"
        if job.state in ("completed", "cancelled", "failed"):
            return job.state
        job.state, job.finished = "failed", time.time()
        where = f"the ranks' output is in {log_path.relative_to(data_dir)}"
        job.error = f"{rank_failure(output, code, processes, first_rank_failure(status_dir))} ({where})"[:2000]
        return "failed"


def rank_failure(output: str, code: int, processes: int, first: RankFailure | None = None) -> str:
    """What went wrong in a multi-process job, in a line that names the failing rank where it can: the line a
    rank that raised prints (``forgeml.distributed: rank R of W failed with ...``), else the rank its guard
    recorded dying first (``first``), else what mpiexec said, else the exit code and the last line printed."""
    failed = re.search(r"^forgeml\.distributed: (rank \d+ of \d+ failed with .*?)(?:; ending the job)?$", output, re.M)
    if failed:
        return failed.group(1)
    if first is not None:
        return first.describe()
    told = re.search(r"EXIT STRING: (.+)$", output, re.M)
    if told:  # mpiexec names a process by its pid only, and maybe one it killed itself
        return f"a rank of {processes} died: {told.group(1).strip()}"
    pids_line = re.compile(r"forgeml\.server\.worker: rank (\d+) of \d+ is pid (\d+)")
    lines = [line.strip() for line in output.splitlines() if line.strip() and not pids_line.match(line)]
    last = f": {lines[-1]}" if lines else ""
    if code == 0:
        return f"the job's {processes} processes ended without finishing it{last}"
    if code < 0:
        return f"mpiexec was ended by signal {-code}{last}"
    return f"the job's {processes} processes ended with exit code {code}{last}"


# -- a job on several processes: one rank's side ---------------------------------------------------
def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a process of another user: alive
        return True
    return True


def _watched_pids() -> list[int]:
    return [int(os.environ[name]) for name in ("FORGEML_SERVER_PID", "FORGEML_WORKER_PID") if os.environ.get(name)]


def _parents_alive() -> bool:
    """Whether the server and the worker process that started this rank still run."""
    return all(_pid_alive(pid) for pid in _watched_pids())


def _watch_parents() -> None:
    """End this rank within a second of the server's or its worker process's death (mpiexec then ends the
    others): a rank never trains on as an orphan, or writes behind a later server's back."""

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if not _parents_alive():
                os._exit(1)

    threading.Thread(target=watch, name="forgeml-server-watch", daemon=True).start()


def _rank_main(argv: list[str]) -> int:
    """``python -m forgeml.server.worker JOB_ID DATA_DIR DEVICE`` under mpiexec: one rank of a job.

    An exception is not caught here: the process group's hook prints ``rank R of W failed with ...`` and
    aborts the job, which the worker process reads from the ranks' output."""
    if len(argv) != 3:
        print("usage: mpiexec -n N python -m forgeml.server.worker JOB_ID DATA_DIR DEVICE", file=sys.stderr)
        return 2
    job_id, data_dir, device = argv
    import forgeml.distributed as dist
    from forgeml.server.limits import RANK_LIMIT_VARIABLE, apply_memory_limit, out_of_memory_message

    group = dist.init_process_group("mpi")
    print(PID_LINE.format(rank=group.rank, world=group.world_size, pid=os.getpid()), flush=True)
    _watch_parents()
    apply_memory_limit(int(os.environ.get(RANK_LIMIT_VARIABLE) or 0))  # this rank's share of the worker's limit
    db = None
    if group.rank == 0:
        from forgeml.server.db import Database

        db = Database(os.environ["FORGEML_DATABASE_URL"])
    try:
        _run(job_id, db, Path(data_dir), device, group=group)
    except MemoryError as exc:  # the hook prints it as this rank's failure, which the job's error names
        raise MemoryError(out_of_memory_message(exc, processes=group.world_size)) from None
    finally:
        if db is not None:
            db.dispose()
    dist.destroy_process_group()
    return 0


# -- profiling: the first epoch of a job that asks for it ------------------------------------------
def _first(entry, *names, default=None):
    for name in names:
        value = getattr(entry, name, None)
        if value is not None:
            return value
    return default


def profile_summary(prof, *, epoch: int, wall_seconds: float, limit: int = PROFILE_TOP) -> dict:
    """The ``profile`` a job stores from a finished :func:`forgeml.profiler.profile`: its ``limit`` ops with the
    most self time (``key_averages()``, times in microseconds), in milliseconds and as a share of all ops' self
    time."""
    rows = []
    for entry in prof.key_averages():
        self_us = float(_first(entry, "self_cpu_time_total", default=0.0))
        total_us = float(_first(entry, "cpu_time_total", default=self_us))
        name = str(_first(entry, "key", "name", default="?"))
        rows.append((name, int(_first(entry, "count", "calls", default=0)), self_us, total_us))
    all_self = sum(r[2] for r in rows) or 1.0
    rows.sort(key=lambda r: r[2], reverse=True)
    ops = [
        {
            "name": name,
            "calls": calls,
            "self_cpu_ms": round(self_us / 1e3, 3),
            "cpu_total_ms": round(total_us / 1e3, 3),
            "self_cpu_percent": round(100.0 * self_us / all_self, 2),
        }
        for name, calls, self_us, total_us in rows[:limit]
    ]
    return {
        "epoch": epoch,
        "wall_ms": round(wall_seconds * 1e3, 1),
        "ops_self_cpu_ms": round(all_self / 1e3, 3) if rows else 0.0,
        "distinct_ops": len(rows),
        "ops": ops,
    }


def _profile_callback(store):
    """A trainer callback that profiles the first epoch it sees and hands ``store`` the profile (or, when the
    profiler cannot run, ``{"error": ...}``); training goes on either way."""
    from forgeml.training import Callback

    class ProfileFirstEpoch(Callback):
        def __init__(self) -> None:
            self.prof = None
            self.done = False
            self.started = 0.0

        def on_epoch_begin(self, trainer, epoch: int) -> None:
            if self.done or self.prof is not None:
                return
            try:
                from forgeml.profiler import profile

                prof = profile()
                prof.__enter__()
            except Exception as exc:  # noqa: BLE001 - a profile is a courtesy; the job trains on
                self.done = True
                store({"epoch": epoch, "error": f"the profiler could not run: {type(exc).__name__}: {exc}"})
                return
            self.prof, self.started = prof, time.perf_counter()

        def on_epoch_end(self, trainer, metrics) -> None:
            if self.prof is None:
                return
            prof, self.prof, self.done = self.prof, None, True
            wall = time.perf_counter() - self.started
            prof.__exit__(None, None, None)
            store(profile_summary(prof, epoch=metrics.epoch, wall_seconds=wall))

        def on_train_end(self, trainer) -> None:
            if self.prof is not None:  # training ended inside the profiled epoch (an error): stop profiling
                prof, self.prof = self.prof, None
                prof.__exit__(None, None, None)

    return ProfileFirstEpoch()


# -- cancelling a running job between batches --------------------------------------------------------
class JobCancelled(Exception):
    """Raised between two batches of a one-process job whose cancel flag was set: training stops mid-epoch."""


def _cancel_callback(db, job_id: str, every: float = CANCEL_POLL):
    """A trainer callback that reads the job's ``cancel_requested`` flag after a batch, at most every ``every``
    seconds (one indexed read of one column), and raises :class:`JobCancelled` when it is set."""
    from sqlalchemy.exc import DBAPIError

    from forgeml.server.db import JobRow, select
    from forgeml.training import Callback

    query = select(JobRow.cancel_requested).where(JobRow.id == job_id)

    class CancelBetweenBatches(Callback):
        def __init__(self) -> None:
            self.next_check = time.monotonic() + every

        def on_batch_end(self, trainer, step: int, loss: float) -> None:
            now = time.monotonic()
            if now < self.next_check:
                return
            self.next_check = now + every
            try:
                with db.session() as s:
                    cancelled = s.scalar(query)
            except DBAPIError as exc:  # the database is away (restarting): train on, read the flag next time
                if not db.lost_connection(exc):
                    raise
                return
            if cancelled:
                raise JobCancelled(f"job {job_id} was cancelled")

    return CancelBetweenBatches()


# -- the training itself: a one-process job, or one rank of a multi-process job ---------------------
def _run(job_id: str, db, data_dir: Path, server_device: str | None = None, group=None) -> str:
    """Train the job. With ``group`` (a multi-process job) every rank calls this; rank 0 alone touches the
    database (``db`` is None elsewhere) and hands the others what it read."""
    import forgeml as fm
    from forgeml.data import DataLoader
    from forgeml.nn import build
    from forgeml.server.db import AICallRow, AIEventRow, DatasetRow, EpochRow, JobRow, ModelRow, new_id, select
    from forgeml.server.observability import outcome_label
    from forgeml.server.schemas import JobCreate
    from forgeml.server.storage import naming_disk_full
    from forgeml.training import AIEnhancedTrainer, Callback, Trainer

    writer = group is None or group.rank == 0
    loaded = None
    if writer:

        def claim(s):
            job = s.get(JobRow, job_id)
            if job is None:
                return None
            if group is None and job.cancel_requested:
                # Cancelled while it waited (the pool may hand a queued job to a worker before it is free): the
                # cancel wins, the job never starts. Only resume clears the flag.
                job.state, job.finished = "cancelled", time.time()
                return "cancelled"
            if group is None:  # claimed here; a multi-process job, by the worker process that started its ranks
                job.state, job.started, job.error = "running", job.started or time.time(), None
            row = s.get(DatasetRow, job.request["dataset"]) if job.request["dataset"] not in ("mnist", "spam") else None
            dataset = None if row is None else {"path": row.path, "target": row.target, "summary": row.summary}
            resume = job.checkpoint if job.checkpoint and (data_dir / job.checkpoint).exists() else None
            if job.checkpoint and resume is None and job.epochs_done > 0:  # never silently from scratch
                raise CheckpointUnusable(
                    f"cannot resume from the checkpoint {job.checkpoint}: the file is missing from the data "
                    f"directory (it held epoch {job.epochs_done}); restore it and resume the job again, or start "
                    "a new job"
                )
            profiled = bool((job.summary or {}).get("profile"))  # a resumed job keeps its first profile
            return {"request": job.request, "resume": resume, "dataset": dataset, "profiled": profiled}

        loaded = db.run(claim)
        if loaded == "cancelled":
            return "cancelled"
    if group is not None:
        loaded = group.broadcast_object(loaded, 0)
    if loaded is None:
        return "missing"
    request = JobCreate.model_validate(loaded["request"])
    processes = 1 if group is None else group.world_size
    device = select_device(request.device, server_device)  # before any work: an unavailable device fails the job
    fm.manual_seed(0)
    if request.dataset == "mnist":
        train, test, extras = _mnist()
    elif request.dataset == "spam":
        train, test, extras = _spam(request.max_length)
    elif loaded["dataset"] is not None:
        from types import SimpleNamespace

        train, test, extras = _csv(SimpleNamespace(**loaded["dataset"]), data_dir)
    else:
        raise ValueError(f"unknown dataset {request.dataset!r}")

    spec = request.model.model_copy(deep=True)
    if extras["input"] == "text":  # the vocabulary decides the embedding table's size
        for layer in spec.layers:
            if layer.type in ("Embedding", "EmbeddingLayer"):
                layer.args["num_embeddings"] = len(extras["vocab"])
                break
    model = build(spec)
    optimizer = _optimizer(request.optimizer, model.parameters())
    job_dir = data_dir / "jobs" / job_id
    job_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = job_dir / "checkpoint.safetensors"
    checkpoint_name = str(checkpoint.relative_to(data_dir))
    stored_epoch = select(EpochRow.id).where(EpochRow.job_id == job_id).limit(1)

    if group is None:
        server_pid = os.getppid()

        def server_alive() -> bool:
            return os.getppid() == server_pid
    else:
        server_alive = _parents_alive

    class Persist(Callback):
        """Each epoch: the checkpoint (every rank takes part), then, from the writer alone, the epoch's row, the
        AI events and calls since the last one, and the cancel flag (which stops every rank)."""

        def __init__(self) -> None:
            self.events_saved = 0
            self.calls: list = []  # the orchestrator's audit records since the last save
            self.calls_lock = threading.Lock()

        def record_call(self, record) -> None:
            """An orchestrator listener (runs on the trainer's event loop thread)."""
            with self.calls_lock:
                self.calls.append(record)

        def on_epoch_end(self, trainer, metrics) -> None:
            if writer and not server_alive():  # the server died: stop rather than write behind the next one's back
                os._exit(1)  # the pool's watchdog would end this process within a second anyway
            # The checkpoint first, then the epoch's row: an epoch the database shows is always in the checkpoint.
            # (It is written to a temporary name and renamed: a failed write leaves the previous one as it was.)
            kept = (
                f"the checkpoint of epoch {metrics.epoch - 1} is intact: free space, then resume the job"
                if checkpoint.exists()
                else "nothing was written in its place: free space, then resume the job"
            )
            with naming_disk_full(f"writing the checkpoint {checkpoint_name} of epoch {metrics.epoch}", kept):
                trainer.save_checkpoint(checkpoint)
            if not writer:
                return

            def store(s):
                if s.scalar(stored_epoch.where(EpochRow.epoch == metrics.epoch)) is not None:
                    return None, False  # an earlier try committed before its connection was lost
                s.add(EpochRow(job_id=job_id, epoch=metrics.epoch, metrics=metrics.as_dict()))
                saved = self.save_events(trainer, s)
                row = s.get(JobRow, job_id)
                row.epochs_done = metrics.epoch
                row.checkpoint = checkpoint_name
                if metrics.val_accuracy is not None:
                    row.best_val_accuracy = max(row.best_val_accuracy or 0.0, metrics.val_accuracy)
                return saved, row.cancel_requested

            kept = "its checkpoint is written: free space, then resume the job"
            with naming_disk_full(f"storing epoch {metrics.epoch} in the database", kept):
                saved, cancel = db.run(store)
            if saved is not None:
                saved()
            if cancel:
                trainer.stop_training = True

        def save_events(self, trainer, session):
            """Add the AI events and calls not stored yet to ``session`` (advice that arrived after the last epoch is
            stored when training ends); returns the function that marks them stored, to call once the session has
            committed (a transaction that is run again after a lost connection adds them again)."""
            events = getattr(trainer, "events", [])
            new_events = events[self.events_saved :]
            for event in new_events:
                session.add(AIEventRow(job_id=job_id, epoch=event.epoch, event=event.model_dump(mode="json")))
            with self.calls_lock:
                calls = list(self.calls)

            def saved() -> None:
                self.events_saved += len(new_events)
                with self.calls_lock:
                    del self.calls[: len(calls)]

            for c in calls:
                session.add(
                    AICallRow(
                        job_id=job_id,
                        provider=c.provider,
                        task=c.task,
                        outcome=outcome_label(c.outcome),
                        input_tokens=c.input_tokens,
                        output_tokens=c.output_tokens,
                        cost_usd=c.cost_usd if math.isfinite(c.cost_usd) else 0.0,
                    )
                )
            return saved

    persist = Persist()
    callbacks: list = [persist]
    if group is None:
        callbacks.append(_cancel_callback(db, job_id))
    if request.profile and writer and not loaded.get("profiled"):

        def store_profile(profile: dict) -> None:
            def store(s) -> None:
                row = s.get(JobRow, job_id)
                row.summary = {**(row.summary or {}), "profile": {**profile, "processes": processes}}

            db.run(store)

        callbacks.insert(0, _profile_callback(store_profile))  # first: its epoch ends before the checkpoint is saved
    if group is not None:
        from forgeml.distributed import DistributedTrainer

        # Without AI the ranks run the plain loop (Trainer.fit) of a DistributedTrainer: sharded batches and
        # metrics reduced across ranks, no AI; its config then only fills the constructor.
        trainer = DistributedTrainer(
            model, optimizer, group, request.ai, batch_size=request.batch_size, callbacks=callbacks, device=device
        )
        if request.ai is not None and writer:
            trainer.orchestrator.listeners.append(persist.record_call)  # the AI runs on rank 0 alone
    elif request.ai is not None:
        trainer = AIEnhancedTrainer(
            model, optimizer, request.ai, batch_size=request.batch_size, callbacks=callbacks, device=device
        )
        trainer.orchestrator.listeners.append(persist.record_call)
    else:
        trainer = Trainer(model, optimizer, callbacks=callbacks, device=device)
    if loaded["resume"]:
        _load_checkpoint(trainer, data_dir, loaded["resume"])  # events stored before stay; new ones are appended
        if writer:
            db.run(lambda s: _match_checkpoint(s, job_id, trainer, loaded["resume"]))
    remaining = request.epochs - trainer.epoch
    train_loader = DataLoader(train, batch_size=request.batch_size, shuffle=True)
    test_loader = DataLoader(test, batch_size=256)
    if group is not None:
        test_loader = trainer._eval_loader(test_loader)  # this rank's shard: every test sample counted once
    summary = None
    stopped_mid_epoch = False
    if remaining > 0:
        try:
            if request.ai is not None:
                metrics = trainer.fit(train_loader, test_loader, epochs=remaining)
                summary = metrics.model_dump(mode="json", exclude={"history", "events"})
            elif group is not None:
                Trainer.fit(trainer, trainer._train_loader(train_loader), test_loader, epochs=remaining)
            else:
                trainer.fit(train_loader, test_loader, epochs=remaining)
        except JobCancelled:  # between two batches: the epoch is dropped, its last checkpoint stays for resume
            stopped_mid_epoch = True

    cancelled = False
    if writer:

        def finish_events(s):
            saved = persist.save_events(trainer, s)
            row = s.get(JobRow, job_id)
            return saved, stopped_mid_epoch or (row.cancel_requested and trainer.epoch < request.epochs)

        saved, cancelled = db.run(finish_events)
        saved()
    if group is not None:
        cancelled = group.broadcast_object(cancelled, 0)  # the ranks evaluate together, or not at all
    if cancelled:
        if writer:

            def cancel(s) -> None:
                row = s.get(JobRow, job_id)
                row.state, row.finished = "cancelled", time.time()

            db.run(cancel)
        return "cancelled"

    final = trainer.evaluate(test_loader)  # a collective in a multi-process job: every rank takes part
    if not writer:
        return "completed"
    model_id = new_id("mdl")
    model_dir = data_dir / "models"
    model_dir.mkdir(parents=True, exist_ok=True)
    weights = model_dir / f"{model_id}.safetensors"
    model_extras = {k: v for k, v in extras.items() if k != "vocab"}
    vocab_path = model_dir / f"{model_id}.vocab.json"
    kept = f"the checkpoint of epoch {trainer.epoch} is intact: free space, then resume the job"

    @contextlib.contextmanager
    def model_files_kept_only_with_their_row(what: str):
        try:
            with naming_disk_full(what, kept):
                yield
        except Exception:
            for written in (weights, vocab_path):
                written.unlink(missing_ok=True)
            raise

    with model_files_kept_only_with_their_row(f"writing the trained model's file {weights.relative_to(data_dir)}"):
        fm.save(model.state_dict(), weights)  # to a temporary name, renamed into place: never half-written
        if "vocab" in extras:
            extras["vocab"].save(vocab_path)
            model_extras["vocab"] = str(vocab_path.relative_to(data_dir))

    def complete(s) -> None:
        if s.get(ModelRow, model_id) is not None:
            return  # an earlier try committed before its connection was lost
        s.add(
            ModelRow(
                id=model_id,
                name=request.name,
                job_id=job_id,
                kind=extras["input"],
                spec=spec.model_dump(mode="json"),
                metrics={"test_loss": final["loss"], "test_accuracy": final["accuracy"], "epochs": trainer.epoch},
                weights=str(weights.relative_to(data_dir)),
                extras=model_extras,
            )
        )
        row = s.get(JobRow, job_id)
        row.state, row.finished, row.model_id = "completed", time.time(), model_id
        kept = {"profile": row.summary["profile"]} if row.summary and "profile" in row.summary else {}
        row.summary = {**(summary or {"final_test": final}), "device": device, "processes": processes, **kept}

    with model_files_kept_only_with_their_row("storing the trained model in the database"):
        db.run(complete)
    return "completed"


if __name__ == "__main__":
    sys.exit(_rank_main(sys.argv[1:]))
