"""``NCCLBackend``: collectives between GPUs through NCCL (CuPy's bindings, ``cupy.cuda.nccl``), one rank per GPU.

Setup. Every rank joins MPI first (an internal :class:`~forgeml.distributed.MPIBackend`,
which also carries the object collectives and ``barrier``); rank 0 asks NCCL
for a unique id, MPI broadcasts it, and each rank builds its
``NcclCommunicator`` on ``cuda:<local_rank>``, where ``local_rank`` defaults to
the rank's index among the ranks on its node (MPI's ``COMM_TYPE_SHARED``
split). CuPy comes from :func:`forgeml.backend.device.array_module`, so a
machine without CuPy or without a GPU gets that layer's clear error; a CuPy
that cannot load NCCL is reported here.

Arrays. Collectives take CuPy arrays on the rank's GPU (a host array is an
error: move the tensor to the GPU, or use the ``'mpi'`` backend). A
C-contiguous array is handed to NCCL as it is; any other is staged through a
contiguous copy, and the result is copied back. NCCL reduces float16, bfloat16,
float32, float64, int8, uint8, int32, uint32, int64 and uint64; broadcast and
the gathers and scatters move any dtype (as bytes when NCCL has no type for
it). ``ReduceOp.AVG`` is NCCL's ``ncclAvg`` (NCCL 2.10 or newer): floats are
scaled by 1/world_size before the sum; integers are summed, then divided with
truncation toward zero, as C does (``MPIBackend`` floors instead: the two
differ only for negative sums that do not divide evenly). ``BAND``, ``BOR``
and ``BXOR`` are not NCCL reductions and raise.

Streams. Collectives run on a stream of the backend's own (non-blocking), so
they overlap computation. Before a collective the communication stream waits
for an event recorded on the caller's current stream (so it reads what the
caller's kernels wrote); staging copies, the NCCL call and the copy back all
run on the communication stream, after which an event is recorded there.
``Work.wait()`` makes the caller's current stream wait on that event and
returns at once, as PyTorch's NCCL ``work.wait()`` does: later kernels on that
stream see the result, and the host is not blocked (reading the result on the
host, ``.get()`` or ``.item()``, synchronises as usual). ``Work.wait(timeout)``
with an explicit timeout blocks the host instead, polling the event (and NCCL's
asynchronous error state) until it completes, and raises
:class:`~forgeml.distributed.DistributedTimeoutError` past the timeout: that is
how a hung peer is detected. ``Work.is_completed()`` tells whether the GPU
finished, without blocking. The backend keeps the arrays of a collective in
flight alive until its event completed.
"""

from __future__ import annotations

import importlib

import numpy as np

from ..backend.device import HOST_ARRAY, Device, array_module, cuda_device_count
from .group import DEFAULT_TIMEOUT, CompletedWork, DistributedError, ProcessGroup, ReduceOp, Work
from .mpi import MPIBackend

__all__ = ["NCCLBackend"]

_AVG_MIN_VERSION = 21000  # ncclAvg arrived in NCCL 2.10.0 (versions code as major*10000 + minor*100 + patch)
_NOT_IN_NCCL = (ReduceOp.BAND, ReduceOp.BOR, ReduceOp.BXOR)
_REDUCED_TYPES = "float16, bfloat16, float32, float64, int8, uint8, int32, uint32, int64 and uint64"


def _nccl_module(xp):
    """CuPy's NCCL bindings for the array namespace ``xp``, or an ImportError that says what to install."""
    nccl = getattr(xp.cuda, "nccl", None)
    if nccl is None:
        # CuPy does not import ``cupy.cuda.nccl`` with ``cupy.cuda``: load the submodule of the namespace in hand.
        package = getattr(xp.cuda, "__name__", None)
        if package:
            try:
                nccl = importlib.import_module(package + ".nccl")
            except ImportError:
                nccl = None
    if nccl is None or not getattr(nccl, "available", False):
        raise ImportError(
            "the 'nccl' backend needs NCCL, which CuPy cannot load here (CuPy was built without NCCL, or the NCCL "
            "library is missing): pip install nvidia-nccl-cu13 (nvidia-nccl-cu12 with cupy-cuda12x), or use "
            "init_process_group('mpi'), which runs CUDA tensors through the host"
        )
    return nccl


class _NCCLWork(Work):
    """A collective enqueued on the backend's communication stream; see the module docstring for ``wait``."""

    def __init__(self, group: NCCLBackend, what: str, event) -> None:
        super().__init__(group, what)
        self._event = event
        self._finished = False

    def _test(self) -> bool:
        if self._event.done:
            return True
        self._group._check_async_error(self._what)
        return False

    def _complete(self) -> None:
        self._done = True
        self._run_finish()

    def _run_finish(self) -> None:
        # Once, whichever way the work was waited for (callers may chain unpacking onto ``_finish``).
        if not self._finished:
            self._finished = True
            self._finish()

    def wait(self, timeout=None) -> bool:
        """Without ``timeout``: order the current stream after the collective and return (no host sync).
        With ``timeout`` (seconds or a timedelta): block the host until the GPU finished it, or raise
        :class:`~forgeml.distributed.DistributedTimeoutError`."""
        if timeout is not None:
            return super().wait(timeout)
        if not self._done:
            self._group._current_stream_waits(self._event)
            self._run_finish()
        return True


class _Staged:
    """A C-contiguous buffer NCCL can use for ``array``, and the copy back into ``array`` when it was staged."""

    __slots__ = ("array", "buffer", "copy_back")

    def __init__(self, xp, array, copy_in: bool, copy_back: bool) -> None:
        self.array = array
        if array.flags.c_contiguous:
            self.buffer, self.copy_back = array, False
        else:
            self.buffer = xp.ascontiguousarray(array) if copy_in else xp.empty(array.shape, dtype=array.dtype)
            self.copy_back = copy_back

    @property
    def ptr(self) -> int:
        return int(self.buffer.data.ptr)

    def write_back(self) -> None:
        if self.copy_back:
            self.array[...] = self.buffer


class NCCLBackend(ProcessGroup):
    """A process group over NCCL, one rank per GPU: ``NCCLBackend(local_rank=None, world_size=None)``.

    Start it under ``mpiexec`` (or ``forgeml launch``) with one rank per GPU;
    ``local_rank`` (the GPU of this rank) defaults to the rank's index on its
    node, ``world_size``, when given, must match the launcher's. Collectives
    take CuPy arrays on ``cuda:<local_rank>``.
    """

    name = "nccl"

    def __init__(self, local_rank: int | None = None, world_size: int | None = None, *, timeout=DEFAULT_TIMEOUT):
        self._closed = True  # until the communicator exists: close() has nothing of NCCL to release
        mpi = MPIBackend(timeout=timeout)
        try:
            super().__init__(mpi.rank, mpi.world_size, timeout)
            self._mpi = mpi
            if world_size is not None and int(world_size) != mpi.world_size:
                raise DistributedError(
                    f"NCCLBackend: world_size={world_size} was given, but the launcher started {mpi.world_size} "
                    f"rank(s) (MPI's world size); start one rank per GPU with `forgeml launch -n {world_size}` "
                    f"or `mpiexec -n {world_size}`, or leave world_size out"
                )
            if local_rank is None:
                local_rank = _node_local_rank(mpi)
            if isinstance(local_rank, bool) or not isinstance(local_rank, (int, np.integer)) or local_rank < 0:
                raise ValueError(f"local_rank must be a non-negative integer (a GPU index), got {local_rank!r}")
            self.local_rank = int(local_rank)
            self.device = Device("cuda", self.local_rank)
            # Every rank opens CUDA and NCCL, then all learn whether all of them could: no rank is left waiting.
            problem = None
            try:
                self._xp, self._nccl = self._open_cuda()
            except Exception as exc:  # noqa: BLE001 - re-raised below, after the others were told
                problem = exc
            problems = mpi.all_gather_object(None if problem is None else f"{type(problem).__name__}: {problem}")
            if problem is not None:
                raise problem
            failed = [(r, p) for r, p in enumerate(problems) if p is not None]
            if failed:
                r, p = failed[0]
                raise DistributedError(f"rank {r} of {self.world_size} could not set up NCCL: {p}")
            self._open_communicator()
        except BaseException:
            mpi.close()
            raise
        self._closed = False
        self._inflight: list = []  # (event, arrays) of collectives whose event may not have completed yet

    # -- setup ------------------------------------------------------------------------------------
    def _open_cuda(self):
        count = cuda_device_count()
        if count and self.local_rank >= count:
            raise DistributedError(
                f"rank {self.rank}: local rank {self.local_rank} has no GPU, this node has {count}: start at most "
                f"one rank per GPU (or pass NCCLBackend(local_rank=...) / init_process_group(device_id=...))"
            )
        xp = array_module(self.device)  # ImportError without CuPy, RuntimeError without a usable GPU
        nccl = _nccl_module(xp)
        self.nccl_version = int(nccl.get_version())
        dtypes = {
            np.dtype(np.int8): nccl.NCCL_INT8,
            np.dtype(np.uint8): nccl.NCCL_UINT8,
            np.dtype(np.int32): nccl.NCCL_INT32,
            np.dtype(np.uint32): nccl.NCCL_UINT32,
            np.dtype(np.int64): nccl.NCCL_INT64,
            np.dtype(np.uint64): nccl.NCCL_UINT64,
            np.dtype(np.float16): nccl.NCCL_FLOAT16,
            np.dtype(np.float32): nccl.NCCL_FLOAT32,
            np.dtype(np.float64): nccl.NCCL_FLOAT64,
        }
        self._dtypes = dtypes
        self._bfloat16 = getattr(nccl, "NCCL_BFLOAT16", None)
        self._ops = {
            ReduceOp.SUM: nccl.NCCL_SUM,
            ReduceOp.PRODUCT: nccl.NCCL_PROD,
            ReduceOp.MIN: nccl.NCCL_MIN,
            ReduceOp.MAX: nccl.NCCL_MAX,
        }
        avg = getattr(nccl, "NCCL_AVG", None)
        if avg is not None and self.nccl_version >= _AVG_MIN_VERSION:
            self._ops[ReduceOp.AVG] = avg
        return xp, nccl

    def _open_communicator(self) -> None:
        xp, nccl, mpi = self._xp, self._nccl, self._mpi
        with xp.cuda.Device(self.local_rank):
            payload = None
            if self.rank == 0:
                try:
                    payload = ("id", nccl.get_unique_id())
                except Exception as exc:  # noqa: BLE001 - sent to every rank, then raised everywhere
                    payload = ("error", f"{type(exc).__name__}: {exc}")
            kind, value = mpi.broadcast_object(payload, 0)
            if kind == "error":
                raise DistributedError(f"rank 0 could not create the NCCL unique id: {value}")
            self._comm = nccl.NcclCommunicator(self.world_size, value, self.rank)
            self._stream = xp.cuda.Stream(non_blocking=True)

    # -- helpers ----------------------------------------------------------------------------------
    def _check(self, array, what: str, name: str = "array") -> None:
        if isinstance(array, (HOST_ARRAY, np.generic)):
            raise TypeError(
                f"NCCLBackend.{what}: {name} is a host (NumPy) array; NCCL moves GPU memory only: move the tensor "
                f"to the GPU first (tensor.to('{self.device}')), or use the 'mpi' backend for CPU tensors"
            )
        if not isinstance(array, self._xp.ndarray):
            raise TypeError(f"NCCLBackend.{what}: {name} must be a CuPy array on {self.device}, got {type(array)!r}")
        index = int(array.device.id)
        if index != self.local_rank:
            raise DistributedError(
                f"NCCLBackend.{what}: {name} is on cuda:{index}, but this rank's NCCL communicator runs on "
                f"{self.device}; move the tensor there"
            )

    def _check_root(self, root, name: str) -> int:
        if isinstance(root, bool) or not isinstance(root, (int, np.integer)) or not 0 <= root < self.world_size:
            raise ValueError(f"{name} must be a rank in [0, {self.world_size}), got {root!r}")
        return int(root)

    def _reduced_type(self, dtype, what: str) -> int:
        dtype = np.dtype(dtype)
        code = self._dtypes.get(dtype)
        if code is None and dtype.name == "bfloat16":
            code = self._bfloat16
        if code is None:
            raise TypeError(f"NCCLBackend.{what}: NCCL cannot reduce {dtype} arrays; it reduces {_REDUCED_TYPES}")
        return code

    def _moved_type(self, dtype) -> tuple[int, int]:
        """The NCCL type that moves ``dtype``'s data and its size: the dtype's own, else bytes."""
        dtype = np.dtype(dtype)
        code = self._dtypes.get(dtype)
        if code is None and dtype.name == "bfloat16" and self._bfloat16 is not None:
            code = self._bfloat16
        if code is None:
            return self._nccl.NCCL_UINT8, 1
        return code, dtype.itemsize

    def _op(self, op: ReduceOp, what: str) -> int:
        if not isinstance(op, ReduceOp):
            raise TypeError(f"op must be a forgeml.distributed.ReduceOp, got {op!r}")
        if op in _NOT_IN_NCCL:
            raise DistributedError(
                f"NCCLBackend.{what}: ReduceOp.{op.name} is not an NCCL reduction (NCCL has SUM, AVG, PRODUCT, "
                f"MIN and MAX); use the 'mpi' backend for bitwise reductions"
            )
        code = self._ops.get(op)
        if code is None:  # AVG on an NCCL older than 2.10
            raise DistributedError(
                f"NCCLBackend.{what}: ReduceOp.AVG needs NCCL 2.10 or newer (ncclAvg); this NCCL is "
                f"{self.nccl_version}; all-reduce with SUM and divide by the world size instead"
            )
        return code

    def _launch(self, what: str, enqueue, keep: tuple) -> Work:
        """Run ``enqueue()`` (staging copies, NCCL calls, copies back) on the communication stream, after the
        work already queued on the caller's current stream; return the Work that waits for it."""
        self._check_open(what)
        xp = self._xp
        with xp.cuda.Device(self.local_rank):
            ready = xp.cuda.Event(disable_timing=True)
            ready.record(xp.cuda.get_current_stream())
            self._stream.wait_event(ready)
            with self._stream:
                staged = enqueue()
            done = xp.cuda.Event(disable_timing=True)
            done.record(self._stream)
        self._inflight = [item for item in self._inflight if not item[0].done]
        self._inflight.append((done, keep, staged))
        return _NCCLWork(self, what, done)

    def _current_stream_waits(self, event) -> None:
        xp = self._xp
        with xp.cuda.Device(self.local_rank):
            xp.cuda.get_current_stream().wait_event(event)

    def _check_async_error(self, what: str) -> None:
        check = getattr(self._comm, "check_async_error", None) if not self._closed else None
        if check is None:
            return
        try:
            check()
        except Exception as exc:  # NcclError: a peer died, the network failed
            raise DistributedError(
                f"rank {self.rank} of {self.world_size}: NCCL failed during {what}: {type(exc).__name__}: {exc}"
            ) from exc

    def _check_open(self, what: str) -> None:
        if self._closed:
            raise DistributedError(f"NCCLBackend.{what}: the process group was closed (destroy_process_group)")

    def _stage(self, array, copy_in: bool = True, copy_back: bool = False) -> _Staged:
        return _Staged(self._xp, array, copy_in, copy_back)

    # -- collectives ------------------------------------------------------------------------------
    def all_reduce(self, array, op: ReduceOp = ReduceOp.SUM) -> Work:
        self._check(array, "all_reduce")
        dtype, nccl_op = self._reduced_type(array.dtype, "all_reduce"), self._op(op, "all_reduce")
        if array.size == 0:
            return CompletedWork(self, "all_reduce")

        def enqueue():
            buf = self._stage(array, copy_back=True)
            self._comm.allReduce(buf.ptr, buf.ptr, int(array.size), dtype, nccl_op, self._stream.ptr)
            buf.write_back()
            return buf

        return self._launch("all_reduce", enqueue, (array,))

    def broadcast(self, array, src: int) -> Work:
        self._check(array, "broadcast")
        src = self._check_root(src, "src")
        dtype, unit = self._moved_type(array.dtype)
        if array.size == 0:
            return CompletedWork(self, "broadcast")

        def enqueue():
            buf = self._stage(array, copy_in=self.rank == src, copy_back=self.rank != src)
            self._comm.broadcast(buf.ptr, buf.ptr, int(array.nbytes) // unit, dtype, src, self._stream.ptr)
            buf.write_back()
            return buf

        return self._launch("broadcast", enqueue, (array,))

    def reduce(self, array, dst: int, op: ReduceOp = ReduceOp.SUM) -> Work:
        self._check(array, "reduce")
        dst = self._check_root(dst, "dst")
        dtype, nccl_op = self._reduced_type(array.dtype, "reduce"), self._op(op, "reduce")
        if array.size == 0:
            return CompletedWork(self, "reduce")

        def enqueue():
            # NCCL writes the result on dst only; the other ranks' arrays are read and left as they were.
            buf = self._stage(array, copy_back=self.rank == dst)
            self._comm.reduce(buf.ptr, buf.ptr, int(array.size), dtype, nccl_op, dst, self._stream.ptr)
            buf.write_back()
            return buf

        return self._launch("reduce", enqueue, (array,))

    def all_gather(self, output, array) -> Work:
        self._check(output, "all_gather", "output")
        self._check(array, "all_gather")
        self._check_sizes(output, array, "all_gather", "output")
        dtype, unit = self._moved_type(array.dtype)
        if array.size == 0:
            return CompletedWork(self, "all_gather")

        def enqueue():
            inp = self._stage(array)
            out = self._stage(output, copy_in=False, copy_back=True)
            self._comm.allGather(inp.ptr, out.ptr, int(array.nbytes) // unit, dtype, self._stream.ptr)
            out.write_back()
            return inp, out

        return self._launch("all_gather", enqueue, (output, array))

    def reduce_scatter(self, output, array, op: ReduceOp = ReduceOp.SUM) -> Work:
        self._check(output, "reduce_scatter", "output")
        self._check(array, "reduce_scatter")
        self._check_sizes(array, output, "reduce_scatter", "array")
        dtype, nccl_op = self._reduced_type(array.dtype, "reduce_scatter"), self._op(op, "reduce_scatter")
        if output.size == 0:
            return CompletedWork(self, "reduce_scatter")

        def enqueue():
            inp = self._stage(array)
            out = self._stage(output, copy_in=False, copy_back=True)
            self._comm.reduceScatter(inp.ptr, out.ptr, int(output.size), dtype, nccl_op, self._stream.ptr)
            out.write_back()
            return inp, out

        return self._launch("reduce_scatter", enqueue, (output, array))

    def gather(self, output, array, dst: int) -> Work:
        self._check(array, "gather")
        dst = self._check_root(dst, "dst")
        if self.rank == dst:
            self._check(output, "gather", "output")
            self._check_sizes(output, array, "gather", "output")
        dtype, unit = self._moved_type(array.dtype)
        if array.size == 0:
            return CompletedWork(self, "gather")
        block, count = int(array.nbytes), int(array.nbytes) // unit

        def enqueue():
            inp = self._stage(array)
            if self.rank != dst:
                self._p2p([("send", inp.ptr, dst)], count, dtype)
                return (inp,)
            out = self._stage(output, copy_in=False, copy_back=True)
            flat = out.buffer.reshape(-1)
            flat[self.rank * array.size : (self.rank + 1) * array.size] = inp.buffer.reshape(-1)  # own block: a copy
            peers = [r for r in range(self.world_size) if r != self.rank]
            self._p2p([("recv", out.ptr + r * block, r) for r in peers], count, dtype)
            out.write_back()
            return inp, out

        return self._launch("gather", enqueue, (output, array))

    def scatter(self, output, array, src: int) -> Work:
        self._check(output, "scatter", "output")
        src = self._check_root(src, "src")
        if self.rank == src:
            self._check(array, "scatter")
            self._check_sizes(array, output, "scatter", "array")
        dtype, unit = self._moved_type(output.dtype)
        if output.size == 0:
            return CompletedWork(self, "scatter")
        block, count = int(output.nbytes), int(output.nbytes) // unit

        def enqueue():
            out = self._stage(output, copy_in=False, copy_back=True)
            if self.rank != src:
                self._p2p([("recv", out.ptr, src)], count, dtype)
                out.write_back()
                return (out,)
            inp = self._stage(array)
            flat = inp.buffer.reshape(-1)
            out.buffer.reshape(-1)[...] = flat[self.rank * output.size : (self.rank + 1) * output.size]
            peers = [r for r in range(self.world_size) if r != self.rank]
            self._p2p([("send", inp.ptr + r * block, r) for r in peers], count, dtype)
            out.write_back()
            return inp, out

        return self._launch("scatter", enqueue, (output, array))

    def _p2p(self, transfers: list, count: int, dtype: int) -> None:
        """Point-to-point sends and receives as one NCCL group (so their order between ranks cannot deadlock)."""
        if not transfers:
            return
        nccl, stream = self._nccl, self._stream.ptr
        nccl.groupStart()
        try:
            for kind, ptr, peer in transfers:
                if kind == "send":
                    self._comm.send(ptr, count, dtype, peer, stream)
                else:
                    self._comm.recv(ptr, count, dtype, peer, stream)
        finally:
            nccl.groupEnd()

    def _check_sizes(self, big, small, what: str, name: str) -> None:
        if big.dtype != small.dtype:
            raise TypeError(f"NCCLBackend.{what}: the arrays' dtypes differ ({big.dtype} and {small.dtype})")
        if big.size != small.size * self.world_size:
            raise ValueError(
                f"NCCLBackend.{what}: {name} has {big.size} elements; expected world_size ({self.world_size}) "
                f"times {small.size} = {small.size * self.world_size}"
            )

    def barrier(self) -> None:
        self._mpi.barrier()

    def progress(self) -> None:
        """Nothing to drive (NCCL progresses on the GPU); forgets the arrays of collectives that completed."""
        if self._inflight:
            self._inflight = [item for item in self._inflight if not item[0].done]

    # -- objects (over MPI) -----------------------------------------------------------------------
    def broadcast_object(self, obj, src: int):
        return self._mpi.broadcast_object(obj, src)

    def all_gather_object(self, obj) -> list:
        return self._mpi.all_gather_object(obj)

    def gather_object(self, obj, dst: int) -> list | None:
        return self._mpi.gather_object(obj, dst)

    def scatter_object(self, objs, src: int):
        return self._mpi.scatter_object(objs, src)

    # -- lifetime ---------------------------------------------------------------------------------
    def abort(self, code: int = 1) -> None:
        comm = getattr(self, "_comm", None)
        if comm is not None and hasattr(comm, "abort"):
            try:
                comm.abort()  # ncclCommAbort: frees a rank stuck in a collective
            except Exception:  # noqa: BLE001 - the job is ending anyway
                pass
        self._mpi.abort(code)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            with self._xp.cuda.Device(self.local_rank):
                self._stream.synchronize()  # collectives still queued finish before the communicator goes
                self._comm.destroy()
        finally:
            self._inflight = []
            self._mpi.close()

    def __repr__(self) -> str:
        return f"NCCLBackend(rank={self.rank}, world_size={self.world_size}, device='{self.device}')"


def _node_local_rank(mpi: MPIBackend) -> int:
    """This rank's index among the ranks that share its node (MPI's ``COMM_TYPE_SHARED`` split)."""
    node = mpi.comm.Split_type(mpi.MPI.COMM_TYPE_SHARED)
    try:
        return int(node.Get_rank())
    finally:
        node.Free()
