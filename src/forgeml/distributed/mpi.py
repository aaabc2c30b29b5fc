"""``MPIBackend``: collectives over MPI through mpi4py (MPICH from the ``dist`` extra, or the system's MPI).

Arrays are handed to MPI as they are when they are host arrays, C-contiguous
and of a type MPI reduces (float32/64, the integer types): zero copies. Anything
else is staged: a non-contiguous view, a float16 or bfloat16 array (reduced in
float32), a CUDA array (copied to the host and back; use NCCL for GPUs). Every
collective is non-blocking underneath, so ``Work.wait`` can enforce the group's
timeout, and ``DistributedDataParallel`` overlaps its all-reduces with backward.
"""

from __future__ import annotations

import numpy as np

from ..backend.device import HOST_ARRAY, device_of, to_device, to_host
from .group import DEFAULT_TIMEOUT, DistributedError, ProcessGroup, ReduceOp, Work

__all__ = ["MPIBackend"]

_NATIVE = frozenset("bBhHiIlLqQfd")  # the NumPy type characters MPI reduces directly
_BITWISE = (ReduceOp.BAND, ReduceOp.BOR, ReduceOp.BXOR)


def import_mpi():
    """mpi4py's ``MPI`` module, or an ImportError that says what to install."""
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise ImportError(
            'forgeml.distributed needs MPI: pip install "forgeml[dist]" (mpi4py and the mpich wheel, which brings '
            "mpiexec), or mpi4py built against your cluster's MPI"
        ) from exc
    return MPI


class _MPIWork(Work):
    def __init__(self, group, what: str, request, finish=None) -> None:
        super().__init__(group, what)
        self._request, self._finisher = request, finish

    def _test(self) -> bool:
        return self._request.Test()

    def _finish(self) -> None:
        self._group._forget(self._request)
        if self._finisher is not None:
            self._finisher()


class _Staged:
    """A host buffer MPI can use for ``array``, and how to write the result back into ``array``."""

    __slots__ = ("array", "buffer", "copied")

    def __init__(self, array, reduce: bool) -> None:
        self.array = array
        buffer = array
        copied = False
        if type(buffer) is not HOST_ARRAY:
            buffer, copied = np.ascontiguousarray(to_host(array)), True
        if reduce and buffer.dtype.char not in _NATIVE:
            if buffer.dtype.kind in "bc":
                raise TypeError(f"reductions of {buffer.dtype} tensors are not supported; convert to an integer type")
            buffer, copied = buffer.astype(np.float32), True  # float16, bfloat16: reduce in float32
        elif not buffer.flags.c_contiguous:
            buffer, copied = np.ascontiguousarray(buffer), True
        self.buffer, self.copied = buffer, copied

    def write_back(self) -> None:
        if self.copied:
            result = self.buffer.astype(self.array.dtype, copy=False)
            if type(self.array) is not HOST_ARRAY:
                result = to_device(result, device_of(self.array))
            self.array[...] = result.reshape(self.array.shape)


def _bytes(array):
    """A flat byte view of a contiguous host array (moving data needs no MPI type)."""
    return array.reshape(-1).view(np.uint8)


class MPIBackend(ProcessGroup):
    """A process group over MPI: ``MPIBackend()`` uses every rank ``mpiexec`` started (``MPI.COMM_WORLD``).

    It duplicates the communicator, so the user's own MPI messages never mix
    with ForgeML's. Object collectives pickle (``broadcast_object``, ...).
    """

    name = "mpi"

    def __init__(self, comm=None, *, timeout=DEFAULT_TIMEOUT) -> None:
        mpi = import_mpi()
        self.MPI = mpi
        self.comm = (comm if comm is not None else mpi.COMM_WORLD).Dup()
        super().__init__(self.comm.Get_rank(), self.comm.Get_size(), timeout)
        self._ops = {
            ReduceOp.SUM: mpi.SUM,
            ReduceOp.AVG: mpi.SUM,
            ReduceOp.PRODUCT: mpi.PROD,
            ReduceOp.MIN: mpi.MIN,
            ReduceOp.MAX: mpi.MAX,
            ReduceOp.BAND: mpi.BAND,
            ReduceOp.BOR: mpi.BOR,
            ReduceOp.BXOR: mpi.BXOR,
        }
        self._inflight: list = []

    # -- helpers ----------------------------------------------------------------------------
    def _op(self, op: ReduceOp, dtype):
        if not isinstance(op, ReduceOp):
            raise TypeError(f"op must be a forgeml.distributed.ReduceOp, got {op!r}")
        if op in _BITWISE and np.dtype(dtype).kind not in "iu":
            raise TypeError(f"ReduceOp.{op.name} needs an integer tensor, got {dtype}")
        return self._ops[op]

    def _issue(self, what: str, request, finish=None) -> Work:
        self._inflight.append(request)
        if len(self._inflight) > 64:
            self.progress()
        return _MPIWork(self, what, request, finish)

    def _average(self, staged: _Staged):
        def finish() -> None:
            buffer = staged.buffer
            if buffer.dtype.kind == "f":
                buffer /= self.world_size
            else:
                buffer //= self.world_size
            staged.write_back()

        return finish

    # -- collectives --------------------------------------------------------------------------
    def all_reduce(self, array, op: ReduceOp = ReduceOp.SUM) -> Work:
        staged = _Staged(array, reduce=True)
        mpi_op = self._op(op, staged.buffer.dtype)
        request = self.comm.Iallreduce(self.MPI.IN_PLACE, staged.buffer, mpi_op)
        finish = self._average(staged) if op is ReduceOp.AVG else (staged.write_back if staged.copied else None)
        return self._issue("all_reduce", request, finish)

    def broadcast(self, array, src: int) -> Work:
        staged = _Staged(array, reduce=False)
        request = self.comm.Ibcast(_bytes(staged.buffer), root=src)
        return self._issue("broadcast", request, staged.write_back if staged.copied else None)

    def reduce(self, array, dst: int, op: ReduceOp = ReduceOp.SUM) -> Work:
        staged = _Staged(array, reduce=True)
        mpi_op = self._op(op, staged.buffer.dtype)
        if self.rank == dst:
            request = self.comm.Ireduce(self.MPI.IN_PLACE, staged.buffer, mpi_op, root=dst)
            finish = self._average(staged) if op is ReduceOp.AVG else (staged.write_back if staged.copied else None)
        else:
            request = self.comm.Ireduce(staged.buffer, None, mpi_op, root=dst)
            finish = None
        return self._issue("reduce", request, finish)

    def all_gather(self, output, array) -> Work:
        out, inp = _Staged(output, reduce=False), _Staged(array, reduce=False)
        request = self.comm.Iallgather(_bytes(inp.buffer), _bytes(out.buffer))
        return self._issue("all_gather", request, out.write_back if out.copied else None)

    def reduce_scatter(self, output, array, op: ReduceOp = ReduceOp.SUM) -> Work:
        out, inp = _Staged(output, reduce=True), _Staged(array, reduce=True)
        mpi_op = self._op(op, inp.buffer.dtype)
        if out.buffer.dtype != inp.buffer.dtype:
            raise TypeError(f"reduce_scatter: output is {output.dtype}, input is {array.dtype}; they must match")
        request = self.comm.Ireduce_scatter_block(inp.buffer, out.buffer, mpi_op)
        finish = self._average(out) if op is ReduceOp.AVG else (out.write_back if out.copied else None)
        return self._issue("reduce_scatter", request, finish)

    def gather(self, output, array, dst: int) -> Work:
        inp = _Staged(array, reduce=False)
        out = _Staged(output, reduce=False) if self.rank == dst else None
        request = self.comm.Igather(_bytes(inp.buffer), _bytes(out.buffer) if out else None, root=dst)
        return self._issue("gather", request, out.write_back if out is not None and out.copied else None)

    def scatter(self, output, array, src: int) -> Work:
        out = _Staged(output, reduce=False)
        inp = _Staged(array, reduce=False) if self.rank == src else None
        request = self.comm.Iscatter(_bytes(inp.buffer) if inp else None, _bytes(out.buffer), root=src)
        return self._issue("scatter", request, out.write_back if out.copied else None)

    def barrier(self) -> None:
        self._issue("barrier", self.comm.Ibarrier()).wait()

    def _forget(self, request) -> None:
        """A completed request leaves the list ``progress`` polls."""
        inflight = self._inflight
        for i in range(len(inflight) - 1, -1, -1):
            if inflight[i] is request:
                del inflight[i]
                return

    def progress(self) -> None:
        if self._inflight:
            self.MPI.Request.Testall(self._inflight)
            self._inflight = [r for r in self._inflight if r != self.MPI.REQUEST_NULL]

    # -- objects ------------------------------------------------------------------------------
    def broadcast_object(self, obj, src: int):
        payload = _pickle(obj) if self.rank == src else None
        size = np.array([len(payload) if payload is not None else 0], dtype=np.int64)
        self.broadcast(size, src).wait()
        buffer = payload if payload is not None else np.empty(int(size[0]), dtype=np.uint8)
        self.broadcast(buffer, src).wait()
        return obj if self.rank == src else _unpickle(buffer)

    def all_gather_object(self, obj) -> list:
        payload = _pickle(obj)
        sizes = np.empty(self.world_size, dtype=np.int64)
        self.all_gather(sizes, np.array([len(payload)], dtype=np.int64)).wait()
        width = int(sizes.max())
        gathered = np.empty(width * self.world_size, dtype=np.uint8)
        self.all_gather(gathered, _padded(payload, width)).wait()
        return [_unpickle(gathered[r * width : r * width + int(sizes[r])]) for r in range(self.world_size)]

    def gather_object(self, obj, dst: int) -> list | None:
        everything = self.all_gather_object(obj)  # small objects: one code path, same cost order
        return everything if self.rank == dst else None

    def scatter_object(self, objs, src: int):
        if self.rank == src and (objs is None or len(objs) != self.world_size):
            raise DistributedError(f"scatter_object: rank {src} must pass one object per rank ({self.world_size})")
        return self.broadcast_object(list(objs) if self.rank == src else None, src)[self.rank]

    def abort(self, code: int = 1) -> None:
        self.comm.Abort(code)

    def close(self) -> None:
        self.progress()
        if self.comm != self.MPI.COMM_NULL:
            self.comm.Free()


def _pickle(obj) -> np.ndarray:
    import pickle

    return np.frombuffer(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL), dtype=np.uint8).copy()


def _unpickle(buffer):
    import pickle

    return pickle.loads(buffer.tobytes())


def _padded(payload: np.ndarray, width: int) -> np.ndarray:
    out = np.zeros(width, dtype=np.uint8)
    out[: len(payload)] = payload
    return out
