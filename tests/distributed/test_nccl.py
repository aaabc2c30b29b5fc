"""``NCCLBackend`` without a GPU: CuPy's NCCL bindings, streams and events faked, on the checked CUDA stand-in.

The fake follows CuPy 14's ``cupy.cuda.nccl`` (``cupy_backends/cuda/libs/nccl.pyx``
and ``nccl.pxd``): the same constants (``NCCL_SUM`` = 0 ... ``NCCL_AVG`` = 4,
``NCCL_INT8`` = 0 ... ``NCCL_BFLOAT16`` = 9), ``get_unique_id()`` returning 128
bytes, ``NcclCommunicator(ndev, commId, rank)`` and its methods with their
argument order (``allReduce(sendbuf, recvbuf, count, datatype, op, stream)``,
``reduce(sendbuf, recvbuf, count, datatype, op, root, stream)``,
``broadcast(sendbuff, recvbuff, count, datatype, root, stream)``,
``allGather(sendbuf, recvbuf, count, datatype, stream)``,
``reduceScatter(sendbuf, recvbuf, recvcount, datatype, op, stream)``,
``send(sendbuf, count, datatype, peer, stream)``,
``recv(recvbuf, count, datatype, peer, stream)``), ``groupStart``/``groupEnd``.
It is stricter than a Cython signature: pointers, counts, codes and stream
handles must be plain ints; a pointer must lie, with ``count`` elements of
``datatype`` after it, inside the memory of a C-contiguous array whose
``.data.ptr`` was taken (the stand-in's arrays get a ``data`` attribute whose
``ptr`` is the NumPy buffer's address); a reduction's datatype must be the
array's own; the stream must be one the code created. It then does what NCCL
would do with those bytes.

The communicator plays one rank. In a world of one (the real MPI singleton of
a plain process) every collective is a copy. Tests that need peers replace the
backend's MPI with a stub world of two in which this process is rank 0 and
rank 1 is simulated by the fake: its contributions are known values
(:func:`peer_values`) and what it is sent is recorded, so block offsets,
counts and roots are checked. CUDA streams and events are faked too: every
record, wait and NCCL call lands in one log, in order.

What only a GPU can confirm: that CuPy 14's real bindings accept these calls
(``tools/device_check.sh`` runs a one-rank NCCL job), real stream concurrency,
several GPUs and NCCL's own numerics (``ncclAvg``'s pre-scaling of floats).
"""

from __future__ import annotations

import os
import types

import numpy as np
import pytest

import forgeml as fm
from forgeml import distributed as dist
from forgeml.backend import device as backend_device
from forgeml.distributed import DistributedError, DistributedTimeoutError, ReduceOp
from forgeml.distributed import nccl as nccl_module
from forgeml.distributed.nccl import NCCLBackend

from ..checked_cuda import CheckedArray

pytest.importorskip("mpi4py", reason='the NCCL backend exchanges its unique id over MPI: pip install "forgeml[dist]"')

# -- the fake of cupy.cuda.nccl --------------------------------------------------------------------------
SUM, PROD, MAX, MIN, AVG = 0, 1, 2, 3, 4
INT8, UINT8, INT32, UINT32, INT64, UINT64, FLOAT16, FLOAT32, FLOAT64, BFLOAT16 = range(10)


def _bfloat16():
    import ml_dtypes

    return np.dtype(ml_dtypes.bfloat16)


_TYPES = {
    INT8: np.dtype(np.int8),
    UINT8: np.dtype(np.uint8),
    INT32: np.dtype(np.int32),
    UINT32: np.dtype(np.uint32),
    INT64: np.dtype(np.int64),
    UINT64: np.dtype(np.uint64),
    FLOAT16: np.dtype(np.float16),
    FLOAT32: np.dtype(np.float32),
    FLOAT64: np.dtype(np.float64),
}


def _dtype_of(code: int) -> np.dtype:
    return _bfloat16() if code == BFLOAT16 else _TYPES[code]


def _code_of(dtype) -> int | None:
    dtype = np.dtype(dtype)
    if dtype.name == "bfloat16":
        return BFLOAT16
    return next((c for c, d in _TYPES.items() if d == dtype), None)


class NcclError(RuntimeError):
    """``cupy.cuda.nccl.NcclError``: what the real bindings raise on a failed call."""


def peer_values(rank: int, count: int, dtype) -> np.ndarray:
    """What simulated rank ``rank`` holds in a send buffer of ``count`` elements (negatives included)."""
    return (((np.arange(count) % 5) - 2) * (rank + 1) + 10 * rank).astype(dtype)


class _MemoryPointer:
    __slots__ = ("ptr",)

    def __init__(self, ptr: int) -> None:
        self.ptr = ptr


class _Memory:
    """Device memory as the fake sees it: the arrays whose ``.data.ptr`` was taken, kept alive while it runs."""

    def __init__(self) -> None:
        self.blocks: list[np.ndarray] = []  # C-contiguous arrays, addressable by pointer
        self.strided: set[int] = set()  # pointers handed out for arrays that are not C-contiguous

    def pointer(self, a: np.ndarray) -> _MemoryPointer:
        ptr = int(a.__array_interface__["data"][0])
        if a.flags.c_contiguous:
            self.blocks.append(a)
        else:
            self.strided.add(ptr)
        return _MemoryPointer(ptr)

    def region(self, ptr: int, count: int, code: int, what: str, exact_type: bool) -> np.ndarray:
        """The ``count`` elements of type ``code`` at ``ptr``, as a writable NumPy view."""
        dtype = _dtype_of(code)
        nbytes = count * dtype.itemsize
        covering = []
        for a in self.blocks:
            start = int(a.__array_interface__["data"][0])
            if start <= ptr and ptr + nbytes <= start + a.nbytes:
                covering.append((a, start))
        if not covering:
            why = " (it is the pointer of a non-contiguous array)" if ptr in self.strided else ""
            raise NcclError(
                f"NCCL_ERROR_INVALID_ARGUMENT: {what}: {count} x {dtype} at {ptr:#x} is not inside any C-contiguous "
                f"device array{why}"
            )
        if exact_type and not any(a.dtype == dtype for a, _ in covering):
            raise NcclError(
                f"{what}: datatype {code} ({dtype}) does not match the array's dtype {covering[0][0].dtype}; "
                f"NCCL would reduce the bits as the wrong type"
            )
        a, start = covering[0]
        offset = ptr - start
        return a.reshape(-1).view(np.uint8)[offset : offset + nbytes].view(dtype)


class _FakeCuda:
    """``cupy.cuda.Stream``, ``Event`` and ``get_current_stream``: operations run at once and are logged."""

    def __init__(self, log: list) -> None:
        self.log = log
        self.hang = False  # events recorded while set never complete (a peer that never shows up)
        self.streams: dict[int, object] = {}
        fake = self

        class Stream:
            _next_ptr = 0x5000

            def __init__(self, null=False, non_blocking=False, ptds=False, priority=None, device_id=-1):
                if null:
                    self.ptr = 0
                else:
                    Stream._next_ptr += 0x10
                    self.ptr = Stream._next_ptr
                self.non_blocking, self.device_id = non_blocking, device_id
                self.synchronized = 0
                fake.streams[self.ptr] = self

            def __enter__(self):
                fake.stack.append(self)
                return self

            def __exit__(self, *exc):
                fake.stack.pop()

            def use(self):
                fake.stack[-1] = self
                return self

            def wait_event(self, event):
                if not isinstance(event, Event):
                    raise TypeError(f"Stream.wait_event needs a cupy.cuda.Event, got {type(event).__name__}")
                if not event.recorded:
                    raise AssertionError("waiting on an event never recorded: CUDA would not wait at all")
                fake.log.append(("wait", self.ptr, event.id))

            def record(self, event=None):
                event = event if event is not None else Event()
                event.record(self)
                return event

            def synchronize(self):
                self.synchronized += 1
                fake.log.append(("synchronize", self.ptr))

            @property
            def done(self):
                return True

        class Event:
            _next_id = 0

            def __init__(self, block=False, disable_timing=False, interprocess=False):
                Event._next_id += 1
                self.id = Event._next_id
                self.recorded = False
                self.disable_timing = disable_timing
                self._hung = False

            def record(self, stream=None):
                stream = stream if stream is not None else fake.stack[-1]
                if not isinstance(stream, Stream):
                    raise TypeError(f"Event.record needs a cupy.cuda.Stream, got {type(stream).__name__}")
                self.recorded, self._hung = True, fake.hang
                fake.log.append(("record", stream.ptr, self.id))

            @property
            def done(self):
                return not (self.recorded and self._hung and fake.hang)

            def synchronize(self):
                if not self.done:
                    raise AssertionError("Event.synchronize on a hung event would block forever")

        Stream.null = Stream(null=True)
        self.Stream, self.Event = Stream, Event
        self.stack = [Stream.null]

    def get_current_stream(self, device_id=-1):
        return self.stack[-1]


def _int(name: str, value, minimum: int | None = None) -> int:
    if type(value) is not int:
        raise TypeError(f"{name} must be an int (Cython intptr_t/size_t/int), got {type(value).__name__}: {value!r}")
    if minimum is not None and value < minimum:
        raise OverflowError(f"{name}={value} is out of range")
    return value


class FakeNccl:
    """``cupy.cuda.nccl`` for one rank of a world of ``nranks`` (the others simulated)."""

    NCCL_SUM, NCCL_PROD, NCCL_MAX, NCCL_MIN, NCCL_AVG = SUM, PROD, MAX, MIN, AVG
    NCCL_INT8, NCCL_CHAR, NCCL_UINT8, NCCL_INT32, NCCL_INT, NCCL_UINT32 = INT8, INT8, UINT8, INT32, INT32, UINT32
    NCCL_INT64, NCCL_UINT64, NCCL_FLOAT16, NCCL_HALF = INT64, UINT64, FLOAT16, FLOAT16
    NCCL_FLOAT32, NCCL_FLOAT, NCCL_FLOAT64, NCCL_DOUBLE, NCCL_BFLOAT16 = FLOAT32, FLOAT32, FLOAT64, FLOAT64, BFLOAT16
    NcclError = NcclError

    def __init__(self) -> None:
        self.available = True
        self.version = 22807  # NCCL 2.28.7
        self.calls: list[tuple[str, dict]] = []
        self.log: list[tuple] = []
        self.memory = _Memory()
        self.cuda = _FakeCuda(self.log)
        self.comms: list[FakeCommunicator] = []
        self.group_depth = 0
        self.pending: list[tuple] = []
        self.sent: list[tuple[int, np.ndarray]] = []  # (peer, bytes) sent to simulated ranks
        self.unique_id_error: Exception | None = None
        self.async_error: Exception | None = None
        fake = self

        class NcclCommunicator(FakeCommunicator):
            def __init__(self, ndev, commId, rank):
                super().__init__(fake, ndev, commId, rank)

        self.NcclCommunicator = NcclCommunicator

    def get_version(self) -> int:
        return self.version

    def get_build_version(self) -> int:
        return self.version

    def get_unique_id(self) -> bytes:
        self.calls.append(("get_unique_id", {}))
        if self.unique_id_error is not None:
            raise self.unique_id_error
        return os.urandom(128)  # CuPy 14: bytes (a tuple of 128 ints before)

    def groupStart(self) -> None:
        self.calls.append(("groupStart", {}))
        self.group_depth += 1

    def groupEnd(self) -> None:
        self.calls.append(("groupEnd", {}))
        if self.group_depth == 0:
            raise NcclError("NCCL_ERROR_INVALID_USAGE: groupEnd without groupStart")
        self.group_depth -= 1
        if self.group_depth == 0:
            pending, self.pending = self.pending, []
            for op in pending:
                op()

    def calls_named(self, name: str) -> list[dict]:
        return [args for n, args in self.calls if n == name]


class FakeCommunicator:
    """``NcclCommunicator``: checks each call as CuPy's Cython signature and NCCL would, then does it."""

    def __init__(self, fake: FakeNccl, ndev, commId, rank) -> None:
        _int("ndev", ndev, 1)
        _int("rank", rank, 0)
        if not isinstance(commId, (bytes, tuple)) or len(commId) != 128:
            raise TypeError(f"commId must be the 128-byte unique id from get_unique_id(), got {commId!r:.60}")
        if rank >= ndev:
            raise NcclError("NCCL_ERROR_INVALID_ARGUMENT: rank >= ndev")
        self.fake, self.nranks, self.rank, self.comm_id = fake, ndev, rank, commId
        self.destroyed = self.aborted = False
        fake.comms.append(self)
        fake.calls.append(("NcclCommunicator", {"ndev": ndev, "commId": commId, "rank": rank}))

    # -- checks ---------------------------------------------------------------------------------------
    def _enter(self, name: str, args: dict, ptr_names=(), count_names=(), root_names=(), op=False) -> None:
        if self.destroyed:
            raise NcclError(f"{name} on a destroyed communicator")
        for key in ptr_names:
            _int(key, args[key], 0)
        for key in count_names:
            _int(key, args[key], 0)
        _int("datatype", args["datatype"])
        if args["datatype"] not in range(10):
            raise NcclError(f"NCCL_ERROR_INVALID_ARGUMENT: datatype {args['datatype']}")
        if op:
            _int("op", args["op"])
            if args["op"] not in range(5):
                raise NcclError(f"NCCL_ERROR_INVALID_ARGUMENT: op {args['op']}")
        for key in root_names:
            _int(key, args[key])
            if not 0 <= args[key] < self.nranks:
                raise NcclError(f"NCCL_ERROR_INVALID_ARGUMENT: {key}={args[key]} with {self.nranks} ranks")
        _int("stream", args["stream"])
        if args["stream"] not in self.fake.cuda.streams:
            raise NcclError(f"{name}: stream {args['stream']:#x} is no stream this process created")
        args = dict(args, current_stream=self.fake.cuda.stack[-1].ptr)
        self.fake.calls.append((name, args))
        self.fake.log.append(("nccl", name, args["stream"]))

    def _region(self, ptr, count, datatype, what, reduce=False):
        return self.fake.memory.region(ptr, count, datatype, what, exact_type=reduce)

    def _reduce(self, arrays: list[np.ndarray], op: int) -> np.ndarray:
        stack = np.stack(arrays)
        if op == SUM:
            return stack.sum(axis=0, dtype=stack.dtype)
        if op == PROD:
            return stack.prod(axis=0, dtype=stack.dtype)
        if op == MAX:
            return stack.max(axis=0)
        if op == MIN:
            return stack.min(axis=0)
        n = len(arrays)
        if stack.dtype.kind in "iu":  # ncclAvg on integers: sum, then C division (toward zero)
            total = stack.astype(np.int64 if stack.dtype.kind == "i" else np.uint64).sum(axis=0)
            quotient = np.abs(total) // n if stack.dtype.kind == "i" else total // n
            return (np.sign(total) * quotient if stack.dtype.kind == "i" else quotient).astype(stack.dtype)
        return (stack * stack.dtype.type(1.0 / n)).sum(axis=0, dtype=stack.dtype)  # floats: pre-multiplied

    def _contributions(self, own: np.ndarray) -> list[np.ndarray]:
        return [own.copy() if r == self.rank else peer_values(r, own.size, own.dtype) for r in range(self.nranks)]

    # -- collectives ----------------------------------------------------------------------------------
    def allReduce(self, sendbuf, recvbuf, count, datatype, op, stream):
        args = dict(sendbuf=sendbuf, recvbuf=recvbuf, count=count, datatype=datatype, op=op, stream=stream)
        self._enter("allReduce", args, ("sendbuf", "recvbuf"), ("count",), op=True)
        send = self._region(sendbuf, count, datatype, "allReduce sendbuf", reduce=True)
        recv = self._region(recvbuf, count, datatype, "allReduce recvbuf", reduce=True)
        recv[...] = self._reduce(self._contributions(send), op)

    def reduce(self, sendbuf, recvbuf, count, datatype, op, root, stream):
        args = dict(sendbuf=sendbuf, recvbuf=recvbuf, count=count, datatype=datatype, op=op, root=root, stream=stream)
        self._enter("reduce", args, ("sendbuf", "recvbuf"), ("count",), ("root",), op=True)
        send = self._region(sendbuf, count, datatype, "reduce sendbuf", reduce=True)
        if self.rank == root:  # recvbuff is used on root only
            recv = self._region(recvbuf, count, datatype, "reduce recvbuf", reduce=True)
            recv[...] = self._reduce(self._contributions(send), op)

    def broadcast(self, sendbuff, recvbuff, count, datatype, root, stream):
        args = dict(sendbuff=sendbuff, recvbuff=recvbuff, count=count, datatype=datatype, root=root, stream=stream)
        self._enter("broadcast", args, ("sendbuff", "recvbuff"), ("count",), ("root",))
        recv = self._region(recvbuff, count, datatype, "broadcast recvbuff")
        if self.rank == root:
            recv[...] = self._region(sendbuff, count, datatype, "broadcast sendbuff").copy()
        else:
            recv[...] = peer_values(root, count, recv.dtype)

    def bcast(self, buff, count, datatype, root, stream):
        self.broadcast(buff, buff, count, datatype, root, stream)

    def allGather(self, sendbuf, recvbuf, count, datatype, stream):
        args = dict(sendbuf=sendbuf, recvbuf=recvbuf, count=count, datatype=datatype, stream=stream)
        self._enter("allGather", args, ("sendbuf", "recvbuf"), ("count",))
        send = self._region(sendbuf, count, datatype, "allGather sendbuf").copy()
        recv = self._region(recvbuf, count * self.nranks, datatype, "allGather recvbuf")
        for r, block in enumerate(self._contributions(send)):
            recv[r * count : (r + 1) * count] = block

    def reduceScatter(self, sendbuf, recvbuf, recvcount, datatype, op, stream):
        args = dict(sendbuf=sendbuf, recvbuf=recvbuf, recvcount=recvcount, datatype=datatype, op=op, stream=stream)
        self._enter("reduceScatter", args, ("sendbuf", "recvbuf"), ("recvcount",), op=True)
        n = recvcount * self.nranks
        send = self._region(sendbuf, n, datatype, "reduceScatter sendbuf", reduce=True).copy()
        recv = self._region(recvbuf, recvcount, datatype, "reduceScatter recvbuf", reduce=True)
        blocks = [c[self.rank * recvcount : (self.rank + 1) * recvcount] for c in self._contributions(send)]
        recv[...] = self._reduce(blocks, op)

    def send(self, sendbuf, count, datatype, peer, stream):
        args = dict(sendbuf=sendbuf, count=count, datatype=datatype, peer=peer, stream=stream)
        self._enter("send", args, ("sendbuf",), ("count",), ("peer",))
        data = self._region(sendbuf, count, datatype, "send sendbuf")
        self._p2p(lambda: self.fake.sent.append((peer, data.copy())), peer, "send")

    def recv(self, recvbuf, count, datatype, peer, stream):
        args = dict(recvbuf=recvbuf, count=count, datatype=datatype, peer=peer, stream=stream)
        self._enter("recv", args, ("recvbuf",), ("count",), ("peer",))
        data = self._region(recvbuf, count, datatype, "recv recvbuf")

        def receive():
            data[...] = peer_values(peer, count, data.dtype)

        self._p2p(receive, peer, "recv")

    def _p2p(self, action, peer: int, what: str) -> None:
        if self.fake.group_depth:
            self.fake.pending.append(action)
        elif peer == self.rank:
            raise AssertionError(f"{what} to self outside groupStart()/groupEnd() would deadlock")
        else:
            action()

    # -- lifetime -----------------------------------------------------------------------------------------
    def check_async_error(self):
        if self.fake.async_error is not None:
            raise self.fake.async_error

    def destroy(self):
        self.fake.calls.append(("destroy", {}))
        self.destroyed = True

    def abort(self):
        self.fake.calls.append(("abort", {}))
        self.destroyed = self.aborted = True

    def rank_id(self):
        return self.rank

    def size(self):
        return self.nranks

    def device_id(self):
        return 0


# -- fixtures ---------------------------------------------------------------------------------------------
@pytest.fixture
def fake(checked_cuda, monkeypatch):
    """The stand-in's ``cuda`` gains the fake ``nccl``, ``Stream``, ``Event`` and ``get_current_stream``, and its
    arrays a ``data`` attribute (``data.ptr``), as CuPy's have."""
    fake = FakeNccl()
    cuda = checked_cuda.cuda
    monkeypatch.setattr(cuda, "nccl", fake, raising=False)
    monkeypatch.setattr(cuda, "Stream", fake.cuda.Stream)
    monkeypatch.setattr(cuda, "Event", fake.cuda.Event, raising=False)
    monkeypatch.setattr(cuda, "get_current_stream", fake.cuda.get_current_stream, raising=False)
    monkeypatch.setattr(CheckedArray, "data", property(lambda self: fake.memory.pointer(self._a)), raising=False)
    return fake


@pytest.fixture
def group(fake):
    g = NCCLBackend()
    yield g
    g.close()


class _TwoRankMPI:
    """What NCCLBackend uses of MPIBackend, as rank 0 of a world of two whose rank 1 agrees with everything."""

    MPI = types.SimpleNamespace(COMM_TYPE_SHARED="shared")

    def __init__(self, timeout=None) -> None:
        self.rank, self.world_size, self.closed = 0, 2, False
        node = types.SimpleNamespace(Get_rank=lambda: 0, Free=lambda: None)
        self.comm = types.SimpleNamespace(Split_type=lambda kind: node)

    def broadcast_object(self, obj, src):
        assert src == 0, "only rank 0's objects are known here"
        return obj

    def all_gather_object(self, obj):
        return [obj, None]

    def close(self):
        self.closed = True


@pytest.fixture
def pair(fake, monkeypatch):
    """An NCCLBackend that is rank 0 of two; rank 1 is simulated by the fake communicator."""
    monkeypatch.setattr(nccl_module, "MPIBackend", _TwoRankMPI)
    g = NCCLBackend()
    assert (g.rank, g.world_size) == (0, 2)
    yield g
    g.close()


def _dev(xp, values, dtype=None):
    return xp.asarray(np.asarray(values, dtype=dtype))


def _ptr(array) -> int:
    return array._a.__array_interface__["data"][0]


# -- setup ------------------------------------------------------------------------------------------------
def test_a_world_of_one_builds_its_communicator_from_rank_zeros_unique_id(group, fake):
    assert (group.name, group.rank, group.world_size, group.local_rank) == ("nccl", 0, 1, 0)
    assert group.device == fm.device("cuda:0")
    assert len(fake.calls_named("get_unique_id")) == 1
    (made,) = fake.calls_named("NcclCommunicator")
    assert made["ndev"] == 1 and made["rank"] == 0
    assert isinstance(made["commId"], bytes) and len(made["commId"]) == 128
    assert group._stream.non_blocking and group._stream.ptr != 0
    assert "NCCLBackend(rank=0, world_size=1" in repr(group)
    assert dist.NCCLBackend is NCCLBackend


def test_world_size_that_disagrees_with_the_launcher_is_an_error(fake):
    with pytest.raises(DistributedError, match=r"world_size=2 was given.*started 1 rank"):
        NCCLBackend(world_size=2)
    assert not fake.comms


def test_a_local_rank_without_a_gpu_is_an_error(fake):
    with pytest.raises(DistributedError, match=r"local rank 1 has no GPU, this node has 1"):
        NCCLBackend(local_rank=1)
    with pytest.raises(ValueError, match="local_rank"):
        NCCLBackend(local_rank=-1)


def test_cupy_without_nccl_is_a_clear_import_error(fake, checked_cuda, monkeypatch):
    fake.available = False  # what cupy.cuda.nccl says when it cannot load libnccl
    with pytest.raises(ImportError, match=r"needs NCCL.*nvidia-nccl-cu13.*init_process_group\('mpi'\)"):
        NCCLBackend()
    monkeypatch.delattr(checked_cuda.cuda, "nccl")  # and a namespace without the module at all
    with pytest.raises(ImportError, match="needs NCCL"):
        NCCLBackend()


def test_no_cupy_is_the_backend_layers_import_error(monkeypatch):
    monkeypatch.setattr(backend_device, "_cuda_xp", None)
    monkeypatch.setattr(backend_device, "_cuda_is_real", False)
    monkeypatch.setattr(backend_device, "_cupy_missing", ImportError("CUDA tensors need CuPy, which is not installed"))
    monkeypatch.setattr(backend_device, "cuda_device_count", lambda: 0)
    monkeypatch.setattr(nccl_module, "cuda_device_count", lambda: 0)
    with pytest.raises(ImportError, match="CuPy"):
        NCCLBackend()


def test_a_failure_to_make_the_unique_id_is_reported_on_every_rank(fake):
    fake.unique_id_error = NcclError("NCCL_ERROR_SYSTEM_ERROR: no network interface")
    with pytest.raises(DistributedError, match=r"rank 0 could not create the NCCL unique id.*no network interface"):
        NCCLBackend()


def test_init_process_group_nccl_runs_tensor_collectives(fake):
    group = dist.init_process_group("nccl")
    try:
        assert dist.get_backend() == "nccl" and isinstance(group, NCCLBackend)
        t = fm.tensor(np.arange(6, dtype=np.float32)).to("cuda")
        dist.all_reduce(t, op=ReduceOp.AVG)
        np.testing.assert_array_equal(t.cpu().numpy(), np.arange(6, dtype=np.float32))
        outs = [fm.zeros(6).to("cuda")]
        dist.all_gather(outs, t)
        np.testing.assert_array_equal(outs[0].cpu().numpy(), np.arange(6, dtype=np.float32))
        work = dist.broadcast(t, 0, async_op=True)
        assert work.wait() is True
        (call,) = fake.calls_named("broadcast")
        assert call["root"] == 0 and call["stream"] == group._stream.ptr
    finally:
        dist.destroy_process_group()
    assert fake.calls_named("destroy")


# -- collectives in a world of one --------------------------------------------------------------------------
DTYPES = [np.float16, np.float32, np.float64, np.int32, np.int64, np.uint8, np.int8, "bfloat16"]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name if d != "bfloat16" else d)
@pytest.mark.parametrize("op", [ReduceOp.SUM, ReduceOp.AVG, ReduceOp.PRODUCT, ReduceOp.MIN, ReduceOp.MAX])
def test_all_reduce_hands_nccl_the_array_in_place(group, fake, checked_cuda, op, dtype):
    dtype = _bfloat16() if dtype == "bfloat16" else np.dtype(dtype)
    values = (np.arange(12) % 7).astype(dtype).reshape(3, 4)
    x = _dev(checked_cuda, values)
    group.all_reduce(x, op).wait()
    np.testing.assert_array_equal(x.get(), values)
    (call,) = fake.calls_named("allReduce")
    codes = {ReduceOp.SUM: SUM, ReduceOp.AVG: AVG, ReduceOp.PRODUCT: PROD, ReduceOp.MIN: MIN, ReduceOp.MAX: MAX}
    assert call["sendbuf"] == call["recvbuf"] == _ptr(x)  # contiguous: no copy
    assert (call["count"], call["datatype"], call["op"]) == (12, _code_of(dtype), codes[op])
    assert call["stream"] == call["current_stream"] == group._stream.ptr


def test_collectives_follow_the_callers_stream_and_wait_orders_the_caller_after_them(group, fake, checked_cuda):
    x = _dev(checked_cuda, [1.0, 2.0], np.float32)
    caller = fake.cuda.get_current_stream().ptr
    comm = group._stream.ptr
    start = len(fake.log)
    work = group.all_reduce(x, ReduceOp.SUM)
    (rec_ready, wait_ready, call, rec_done) = fake.log[start:]
    assert rec_ready[:2] == ("record", caller) and wait_ready == ("wait", comm, rec_ready[2])
    assert call == ("nccl", "allReduce", comm) and rec_done[:2] == ("record", comm)
    assert work.wait() is True  # no timeout: the caller's stream waits on the event; the host does not
    assert fake.log[-1] == ("wait", caller, rec_done[2])
    assert work.is_completed()


def test_wait_with_a_timeout_blocks_the_host_and_detects_a_hang(group, fake, checked_cuda):
    x = _dev(checked_cuda, [1.0], np.float32)
    fake.cuda.hang = True
    work = group.all_reduce(x, ReduceOp.SUM)
    assert not work.is_completed()
    with pytest.raises(DistributedTimeoutError, match=r"rank 0 of 1: all_reduce did not complete within 0.05 s"):
        work.wait(timeout=0.05)
    assert work.wait() is True  # stream semantics still return at once
    assert not work.is_completed()
    fake.cuda.hang = False
    assert work.is_completed() and work.wait(timeout=1.0)


def test_an_nccl_async_error_surfaces_in_a_timed_wait(group, fake, checked_cuda):
    x = _dev(checked_cuda, [1.0], np.float32)
    fake.cuda.hang = True
    work = group.all_reduce(x, ReduceOp.SUM)
    fake.async_error = NcclError("NCCL_ERROR_REMOTE_ERROR: peer closed the connection")
    with pytest.raises(DistributedError, match=r"NCCL failed during all_reduce.*peer closed"):
        work.wait(timeout=5.0)


def test_a_non_contiguous_array_is_staged_and_never_reaches_nccl_strided(group, fake, checked_cuda):
    base = _dev(checked_cuda, np.arange(24, dtype=np.float32).reshape(4, 6))
    view = base[:, ::2]
    group.all_reduce(view, ReduceOp.SUM).wait()
    (call,) = fake.calls_named("allReduce")
    assert call["sendbuf"] == call["recvbuf"] != _ptr(view) and call["count"] == 12
    np.testing.assert_array_equal(base.get(), np.arange(24, dtype=np.float32).reshape(4, 6))


def test_broadcast_reduce_and_their_arguments(group, fake, checked_cuda):
    x = _dev(checked_cuda, [[1, 2], [3, 4]], np.int64)
    group.broadcast(x, 0).wait()
    group.reduce(x, 0, ReduceOp.MAX).wait()
    (b,) = fake.calls_named("broadcast")
    assert b["sendbuff"] == b["recvbuff"] == _ptr(x) and (b["count"], b["datatype"], b["root"]) == (4, INT64, 0)
    (r,) = fake.calls_named("reduce")
    assert (r["count"], r["datatype"], r["op"], r["root"]) == (4, INT64, MAX, 0)
    np.testing.assert_array_equal(x.get(), [[1, 2], [3, 4]])


def test_all_gather_reduce_scatter_gather_and_scatter_in_a_world_of_one(group, fake, checked_cuda):
    x = _dev(checked_cuda, [1.5, 2.5, 3.5], np.float32)
    out = checked_cuda.zeros(3, dtype=np.float32)
    group.all_gather(out, x).wait()
    np.testing.assert_array_equal(out.get(), [1.5, 2.5, 3.5])
    (g,) = fake.calls_named("allGather")
    assert (g["sendbuf"], g["recvbuf"], g["count"], g["datatype"]) == (_ptr(x), _ptr(out), 3, FLOAT32)

    red = checked_cuda.zeros(3, dtype=np.float32)
    group.reduce_scatter(red, x, ReduceOp.SUM).wait()
    np.testing.assert_array_equal(red.get(), [1.5, 2.5, 3.5])
    (rs,) = fake.calls_named("reduceScatter")
    assert (rs["recvcount"], rs["datatype"], rs["op"]) == (3, FLOAT32, SUM)

    gathered = checked_cuda.zeros((1, 3), dtype=np.float32)
    group.gather(gathered, x, 0).wait()
    np.testing.assert_array_equal(gathered.get(), [[1.5, 2.5, 3.5]])
    got = checked_cuda.zeros(3, dtype=np.float32)
    group.scatter(got, x.reshape(1, 3), 0).wait()
    np.testing.assert_array_equal(got.get(), [1.5, 2.5, 3.5])
    assert not fake.calls_named("send") and not fake.calls_named("recv")  # one's own block is a device copy


def test_data_movement_carries_dtypes_nccl_has_no_type_for_as_bytes(group, fake, checked_cuda):
    x = _dev(checked_cuda, [1, -2, 3], np.int16)
    group.broadcast(x, 0).wait()
    (b,) = fake.calls_named("broadcast")
    assert (b["count"], b["datatype"]) == (6, UINT8)
    flags = _dev(checked_cuda, [True, False])
    out = checked_cuda.zeros(2, dtype=bool)
    group.all_gather(out, flags).wait()
    assert out.get().tolist() == [True, False]
    with pytest.raises(TypeError, match=r"NCCL cannot reduce int16 arrays"):
        group.all_reduce(x, ReduceOp.SUM)
    with pytest.raises(TypeError, match=r"NCCL cannot reduce bool arrays"):
        group.all_reduce(flags, ReduceOp.MAX)


@pytest.mark.parametrize("op", [ReduceOp.BAND, ReduceOp.BOR, ReduceOp.BXOR])
def test_bitwise_reductions_are_not_nccl_ops(group, checked_cuda, op):
    with pytest.raises(DistributedError, match=rf"ReduceOp.{op.name} is not an NCCL reduction.*'mpi' backend"):
        group.all_reduce(_dev(checked_cuda, [1, 2], np.int32), op)


def test_avg_needs_nccl_2_10(fake, checked_cuda):
    fake.version = 20907
    group = NCCLBackend()
    try:
        with pytest.raises(DistributedError, match=r"ReduceOp.AVG needs NCCL 2.10"):
            group.all_reduce(_dev(checked_cuda, [1.0], np.float32), ReduceOp.AVG)
        group.all_reduce(_dev(checked_cuda, [1.0], np.float32), ReduceOp.SUM).wait()
    finally:
        group.close()


def test_host_arrays_and_wrong_sizes_are_errors_that_name_the_fix(group, checked_cuda):
    with pytest.raises(TypeError, match=r"host \(NumPy\) array.*move the tensor to the GPU.*'mpi' backend"):
        group.all_reduce(np.ones(3, dtype=np.float32), ReduceOp.SUM)
    with pytest.raises(TypeError, match="output is a host"):
        group.all_gather(np.zeros(3, dtype=np.float32), _dev(checked_cuda, [1.0, 2.0, 3.0], np.float32))
    with pytest.raises(ValueError, match=r"output has 4 elements; expected world_size \(1\) times 3"):
        group.all_gather(checked_cuda.zeros(4, dtype=np.float32), _dev(checked_cuda, [1.0, 2.0, 3.0], np.float32))
    with pytest.raises(TypeError, match="dtypes differ"):
        group.all_gather(checked_cuda.zeros(3, dtype=np.float64), _dev(checked_cuda, [1.0, 2.0, 3.0], np.float32))
    with pytest.raises(ValueError, match=r"src must be a rank in \[0, 1\)"):
        group.broadcast(_dev(checked_cuda, [1.0], np.float32), 1)


def test_an_empty_array_needs_no_nccl_call(group, fake, checked_cuda):
    assert group.all_reduce(checked_cuda.zeros(0, dtype=np.float32), ReduceOp.SUM).wait()
    assert not fake.calls_named("allReduce")


def test_objects_and_barrier_go_over_mpi(group):
    assert group.broadcast_object({"a": 1}, 0) == {"a": 1}
    assert group.all_gather_object(3) == [3]
    assert group.gather_object("x", 0) == ["x"]
    assert group.scatter_object(["only"], 0) == "only"
    group.barrier()
    group.progress()


def test_close_finishes_the_stream_destroys_the_communicator_once_and_ends_collectives(fake, checked_cuda):
    group = NCCLBackend()
    group.close()
    group.close()
    assert len(fake.calls_named("destroy")) == 1 and group._stream.synchronized == 1
    with pytest.raises(DistributedError, match="closed"):
        group.all_reduce(_dev(checked_cuda, [1.0], np.float32), ReduceOp.SUM)


def test_abort_aborts_the_communicator_then_the_mpi_job(group, fake, monkeypatch):
    codes = []
    monkeypatch.setattr(group._mpi, "abort", codes.append)
    group.abort(3)
    assert fake.calls_named("abort") and codes == [3]


# -- a world of two, seen from rank 0 (rank 1 simulated) ------------------------------------------------
def test_all_reduce_with_a_peer_combines_both_and_writes_back_a_strided_view(pair, fake, checked_cuda):
    base = checked_cuda.zeros((3, 4), dtype=np.float32)
    view = base[:, 1::2]
    view[...] = _dev(checked_cuda, np.arange(6, dtype=np.float32).reshape(3, 2))
    pair.all_reduce(view, ReduceOp.SUM).wait()
    expected = np.arange(6, dtype=np.float32) + peer_values(1, 6, np.float32)
    np.testing.assert_array_equal(base.get()[:, 1::2].reshape(-1), expected)
    np.testing.assert_array_equal(base.get()[:, 0::2], 0)  # the columns between are untouched


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.float32])
def test_avg_is_nccls_average(pair, checked_cuda, dtype):
    own = np.array([-7, -1, 0, 3, 8, 1], dtype=dtype)
    x = _dev(checked_cuda, own)
    pair.all_reduce(x, ReduceOp.AVG).wait()
    total = own.astype(np.float64) + peer_values(1, 6, dtype)
    expected = np.trunc(total / 2) if np.dtype(dtype).kind == "i" else total / 2  # integers: toward zero
    np.testing.assert_array_equal(x.get(), expected.astype(dtype))


def test_broadcast_from_the_peer_lands_in_a_strided_view(pair, checked_cuda):
    base = checked_cuda.zeros((2, 6), dtype=np.int32)
    pair.broadcast(base[:, ::3], 1).wait()
    np.testing.assert_array_equal(base.get()[:, ::3].reshape(-1), peer_values(1, 4, np.int32))
    np.testing.assert_array_equal(base.get()[:, 1::3], 0)


def test_reduce_writes_on_the_root_only(pair, fake, checked_cuda):
    x = _dev(checked_cuda, [1.0, 2.0, 3.0], np.float64)
    pair.reduce(x, 1, ReduceOp.SUM).wait()
    np.testing.assert_array_equal(x.get(), [1.0, 2.0, 3.0])
    pair.reduce(x, 0, ReduceOp.MIN).wait()
    np.testing.assert_array_equal(x.get(), np.minimum([1.0, 2.0, 3.0], peer_values(1, 3, np.float64)))
    assert [c["root"] for c in fake.calls_named("reduce")] == [1, 0]


def test_all_gather_and_reduce_scatter_put_each_rank_in_its_block(pair, fake, checked_cuda):
    x = _dev(checked_cuda, [5, 6, 7], np.int64)
    out = checked_cuda.zeros((2, 3), dtype=np.int64)
    pair.all_gather(out, x).wait()
    np.testing.assert_array_equal(out.get(), [[5, 6, 7], peer_values(1, 3, np.int64)])
    assert fake.calls_named("allGather")[0]["count"] == 3  # per rank

    big = _dev(checked_cuda, np.arange(6, dtype=np.float32))
    mine = checked_cuda.zeros(3, dtype=np.float32)
    pair.reduce_scatter(mine, big, ReduceOp.MAX).wait()
    np.testing.assert_array_equal(mine.get(), np.maximum(np.arange(3), peer_values(1, 6, np.float32)[:3]))
    assert fake.calls_named("reduceScatter")[0]["recvcount"] == 3


def test_gather_receives_the_peers_block_at_its_offset_and_sends_when_not_root(pair, fake, checked_cuda):
    x = _dev(checked_cuda, [1.0, 2.0], np.float32)
    out = checked_cuda.zeros((2, 2), dtype=np.float32)
    pair.gather(out, x, 0).wait()
    np.testing.assert_array_equal(out.get(), [[1.0, 2.0], peer_values(1, 2, np.float32)])
    (recv,) = fake.calls_named("recv")
    assert (recv["recvbuf"], recv["count"], recv["datatype"], recv["peer"]) == (_ptr(out) + 8, 2, FLOAT32, 1)
    assert [n for n, _ in fake.calls if n in ("groupStart", "recv", "groupEnd")] == ["groupStart", "recv", "groupEnd"]

    pair.gather(None, x, 1).wait()
    (send,) = fake.calls_named("send")
    assert (send["sendbuf"], send["count"], send["peer"]) == (_ptr(x), 2, 1)
    assert fake.sent[-1][0] == 1 and fake.sent[-1][1].tolist() == [1.0, 2.0]


def test_scatter_sends_the_peers_block_and_receives_when_not_root(pair, fake, checked_cuda):
    blocks = _dev(checked_cuda, [[1, 2, 3], [4, 5, 6]], np.int32)
    mine = checked_cuda.zeros(3, dtype=np.int32)
    pair.scatter(mine, blocks, 0).wait()
    np.testing.assert_array_equal(mine.get(), [1, 2, 3])
    (send,) = fake.calls_named("send")
    assert (send["sendbuf"], send["count"], send["peer"]) == (_ptr(blocks) + 12, 3, 1)
    assert fake.sent[-1][1].tolist() == [4, 5, 6]

    base = checked_cuda.zeros((3, 2), dtype=np.int32)
    pair.scatter(base[:, 0], None, 1).wait()  # a strided output, received from rank 1
    np.testing.assert_array_equal(base.get()[:, 0], peer_values(1, 3, np.int32))
    np.testing.assert_array_equal(base.get()[:, 1], 0)
