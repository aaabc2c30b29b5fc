"""Process groups: what every backend provides, the default group, and how a failing rank ends the job.

A backend (:class:`~forgeml.distributed.MPIBackend`,
:class:`~forgeml.distributed.NCCLBackend`) is a :class:`ProcessGroup`: it knows
its rank and the world size and runs collectives on contiguous arrays in place,
returning a :class:`Work` to wait on. The tensor-level functions of
``forgeml.distributed`` (``all_reduce(tensor)``, ...) check their arguments and
call the default group's methods.

Failure. A rank that raises (an uncaught exception in any thread) prints
``forgeml.distributed: rank R of W failed: ...`` and aborts the whole job, so the
other ranks end at once instead of waiting in a collective; a rank that dies is
reported by ``mpiexec``, which ends the others. A collective that does not
complete within the group's ``timeout`` raises :class:`DistributedTimeoutError`
naming the operation and the rank, which then aborts the job the same way.
"""

from __future__ import annotations

import datetime
import enum
import os
import sys
import threading
import time

__all__ = [
    "DistributedError",
    "DistributedTimeoutError",
    "ProcessGroup",
    "ReduceOp",
    "Work",
    "default_group",
    "destroy_process_group",
    "get_backend",
    "get_rank",
    "get_world_size",
    "init_process_group",
    "is_available",
    "is_initialized",
]

DEFAULT_TIMEOUT = datetime.timedelta(minutes=30)  # as torch.distributed's default for CPU backends


class ReduceOp(enum.Enum):
    """How ``all_reduce``, ``reduce`` and ``reduce_scatter`` combine the ranks' values.

    ``AVG`` is the sum divided by the world size (floor division for integer
    tensors); ``BAND``, ``BOR`` and ``BXOR`` need integer tensors.
    """

    SUM = "sum"
    AVG = "avg"
    PRODUCT = "product"
    MIN = "min"
    MAX = "max"
    BAND = "band"
    BOR = "bor"
    BXOR = "bxor"


class DistributedError(RuntimeError):
    """A collective could not run: a mismatch between ranks, a backend failure, a bad argument."""


class DistributedTimeoutError(DistributedError, TimeoutError):
    """A collective did not complete in time: another rank died, hangs, or stopped calling collectives."""


class Work:
    """A collective in flight (``async_op=True``): ``wait()`` blocks until it completed (and its result is in
    place), ``is_completed()`` asks without blocking. Waiting twice is harmless."""

    def __init__(self, group: ProcessGroup, what: str) -> None:
        self._group, self._what = group, what
        self._done = False

    def _test(self) -> bool:
        """Subclasses: whether the transfer finished (without blocking)."""
        return True

    def _finish(self) -> None:
        """Subclasses: what runs once, after the transfer: copy back a staged result, divide for AVG."""

    def is_completed(self) -> bool:
        if not self._done and self._test():
            self._complete()
        return self._done

    def wait(self, timeout: datetime.timedelta | float | None = None) -> bool:
        """Block until the collective completed; raise :class:`DistributedTimeoutError` after ``timeout``
        (seconds or a timedelta; the group's timeout by default)."""
        if self._done:
            return True
        limit = self._group.timeout_seconds if timeout is None else _seconds(timeout)
        deadline = time.monotonic() + limit
        spins = 0
        while not self._test():
            spins += 1
            if spins > 2000:  # past a short busy wait, give the core away between polls
                if time.monotonic() > deadline:
                    raise DistributedTimeoutError(
                        f"rank {self._group.rank} of {self._group.world_size}: {self._what} did not complete within "
                        f"{limit:g} s; another rank may have died, hung, or stopped calling the same collectives"
                    )
                time.sleep(0.0001 if spins < 20000 else 0.002)
        self._complete()
        return True

    def _complete(self) -> None:
        if not self._done:
            self._done = True
            self._finish()


class CompletedWork(Work):
    """A collective that finished when it was issued (a world of one, a blocking call)."""

    def __init__(self, group: ProcessGroup, what: str = "") -> None:
        super().__init__(group, what)
        self._done = True


class ProcessGroup:
    """The ranks that run collectives together, over one backend. Subclasses implement the array methods;
    every array argument is contiguous and on the backend's device, and results are written in place."""

    name = "base"

    def __init__(self, rank: int, world_size: int, timeout=DEFAULT_TIMEOUT) -> None:
        self.rank, self.world_size = int(rank), int(world_size)
        self.timeout_seconds = _seconds(timeout)

    # -- collectives on arrays (in place, non-blocking: each returns a Work) -------------------
    def all_reduce(self, array, op: ReduceOp) -> Work:
        raise NotImplementedError

    def broadcast(self, array, src: int) -> Work:
        raise NotImplementedError

    def reduce(self, array, dst: int, op: ReduceOp) -> Work:
        raise NotImplementedError

    def all_gather(self, output, array) -> Work:
        """``output`` (world_size * array.size elements) receives every rank's ``array``, rank order."""
        raise NotImplementedError

    def reduce_scatter(self, output, array, op: ReduceOp) -> Work:
        """``output`` receives block ``rank`` (of world_size equal blocks) of the reduction of ``array``."""
        raise NotImplementedError

    def gather(self, output, array, dst: int) -> Work:
        """On ``dst``, ``output`` receives every rank's ``array`` in rank order (``output`` is None elsewhere)."""
        raise NotImplementedError

    def scatter(self, output, array, src: int) -> Work:
        """``output`` receives block ``rank`` of ``src``'s ``array`` (``array`` is None off ``src``)."""
        raise NotImplementedError

    def barrier(self) -> None:
        raise NotImplementedError

    def progress(self) -> None:
        """Let collectives in flight advance (called between pieces of other work); a no-op by default."""

    # -- collectives on picklable objects (blocking) -------------------------------------------
    def broadcast_object(self, obj, src: int):
        raise NotImplementedError

    def all_gather_object(self, obj) -> list:
        raise NotImplementedError

    def gather_object(self, obj, dst: int) -> list | None:
        raise NotImplementedError

    def scatter_object(self, objs, src: int):
        raise NotImplementedError

    def abort(self, code: int = 1) -> None:
        """End every rank of the job now (after this rank failed)."""
        os._exit(code)

    def close(self) -> None:
        """Release the backend's resources (``destroy_process_group``)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(rank={self.rank}, world_size={self.world_size})"


def _seconds(timeout) -> float:
    if isinstance(timeout, datetime.timedelta):
        return timeout.total_seconds()
    value = float(timeout)
    if value <= 0:
        raise ValueError(f"timeout must be positive, got {timeout!r}")
    return value


# -- the default group ------------------------------------------------------------------------
_default: ProcessGroup | None = None
_hooks_installed = False


def init_process_group(
    backend: str | ProcessGroup = "mpi",
    *,
    timeout: datetime.timedelta | float = DEFAULT_TIMEOUT,
    world_size: int = -1,
    rank: int = -1,
    device_id: int | None = None,
) -> ProcessGroup:
    """Join the job's default process group (``torch.distributed.init_process_group``).

    ``backend``: ``'mpi'`` (CPU tensors; CUDA tensors are staged through the
    host), ``'nccl'`` (CUDA tensors, one rank per GPU, ``device_id`` the local
    GPU; defaults to the local rank), or a backend object already built
    (``MPIBackend()``, ``NCCLBackend(local_rank, world_size)``). Ranks and the
    world size come from the launcher (``mpiexec``, ``srun``, ``forgeml
    launch``); ``world_size``/``rank``, when given, must agree with it. Calling it
    twice is an error, as in PyTorch.
    """
    global _default
    if _default is not None:
        raise DistributedError("the default process group is already initialized; destroy_process_group() first")
    if isinstance(backend, ProcessGroup):
        group = backend
    elif backend == "mpi":
        from .mpi import MPIBackend

        group = MPIBackend(timeout=timeout)
    elif backend == "nccl":
        from .nccl import NCCLBackend

        group = NCCLBackend(device_id, world_size if world_size > 0 else None, timeout=timeout)
    else:
        raise ValueError(f"unknown backend {backend!r}: expected 'mpi', 'nccl' or a backend object")
    if world_size > 0 and world_size != group.world_size:
        raise DistributedError(f"world_size={world_size} was given, but the launcher started {group.world_size} ranks")
    if rank >= 0 and rank != group.rank:
        raise DistributedError(f"rank={rank} was given, but the launcher made this process rank {group.rank}")
    _default = group
    _install_failure_hooks()
    if group.world_size > 1:
        _line_buffered_output()
    return group


def destroy_process_group() -> None:
    """Leave the default group (a no-op when none was initialized)."""
    global _default
    group, _default = _default, None
    if group is not None:
        group.close()


def is_initialized() -> bool:
    return _default is not None


def is_available() -> bool:
    """Whether ``forgeml.distributed`` can run here: mpi4py imports."""
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return False
    return True


def default_group(group: ProcessGroup | None = None) -> ProcessGroup:
    """``group``, else the default one; a clear error when there is none."""
    if group is not None:
        return group
    if _default is None:
        raise DistributedError(
            "the default process group is not initialized: call forgeml.distributed.init_process_group() first "
            "(and start the script with `forgeml launch -n N script.py` or mpiexec)"
        )
    return _default


def get_rank(group: ProcessGroup | None = None) -> int:
    """This process's rank (0 when no group is initialized, as a single process is rank 0)."""
    if group is None and _default is None:
        return 0
    return default_group(group).rank


def get_world_size(group: ProcessGroup | None = None) -> int:
    """The number of ranks (1 when no group is initialized)."""
    if group is None and _default is None:
        return 1
    return default_group(group).world_size


def get_backend(group: ProcessGroup | None = None) -> str:
    return default_group(group).name


def _line_buffered_output() -> None:
    """Whole lines on stdout and stderr: unbuffered streams write a print's text and its newline apart, and
    the launcher interleaves the ranks' output mid-line."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            try:
                reconfigure(line_buffering=True, write_through=False)
            except (ValueError, OSError):  # a stream that cannot change (closed, replaced by a test)
                pass


# -- failure: a rank that raises ends the job --------------------------------------------------
def _install_failure_hooks() -> None:
    global _hooks_installed
    if _hooks_installed:
        return
    _hooks_installed = True
    previous_excepthook = sys.excepthook
    previous_thread_hook = threading.excepthook

    def abort_job(exc_type, exc) -> None:
        group = _default
        if group is None or group.world_size == 1 or issubclass(exc_type, (SystemExit, KeyboardInterrupt)):
            return
        sys.stderr.write(
            f"forgeml.distributed: rank {group.rank} of {group.world_size} failed with "
            f"{exc_type.__name__}: {exc}; ending the job\n"
        )
        sys.stderr.flush()
        group.abort(1)

    def excepthook(exc_type, exc, tb) -> None:
        previous_excepthook(exc_type, exc, tb)  # the traceback first
        abort_job(exc_type, exc)

    def thread_hook(args) -> None:
        previous_thread_hook(args)
        abort_job(args.exc_type, args.exc_value)

    sys.excepthook = excepthook
    threading.excepthook = thread_hook
