"""``profile``: what each op costs, seen through autograd's op observer; ``record_function``: named user ranges.

While a :class:`profile` runs, an :class:`~forgeml.autograd.function.OpObserver`
times every op's forward (``Function.apply``) and every graph node's backward
(the engine), on the thread that runs it. Nothing is installed otherwise:
outside a profiler the op path pays only autograd's test of an empty list.

Memory (``profile_memory=True``). Host memory is estimated, not measured
(``tracemalloc`` costs more than the ops): the new storage an op hands back
(its outputs, and what it saves for backward) counts as allocated by that op,
and a ``weakref.finalize`` on that storage counts it freed when the last array
on it goes, against the op or range running then. Views of inputs add
nothing. Temporaries an op frees before returning, and the gradient sums the
engine makes between nodes, are not seen, so the peak is a lower bound: the
most bytes of op-made storage alive at once. CUDA memory (with
``ProfilerActivity.CUDA``) is measured: CuPy's memory-pool bytes in use before
and after each op, and the pool's peak.

CUDA timing. GPU work is asynchronous: an op returns once its kernels are
queued. With ``ProfilerActivity.CUDA`` (the default when a GPU is there) the
profiler synchronises the current device before and after each op, so an op's
CPU time covers its kernels; this serialises CPU and GPU, so a profiled run is
slower than an unprofiled one. Device times of their own (PyTorch's "Self CUDA"
columns) are not recorded.
"""

from __future__ import annotations

import contextlib
import enum
import itertools
import threading
import time
import warnings
import weakref

from ..autograd.function import OpObserver, observe_ops
from ..backend.device import HOST_ARRAY, cuda_is_available
from ..tensor import Tensor
from .events import EventList, FunctionEvent
from .flops import backward_flops, forward_flops
from .trace import write_chrome_trace

__all__ = ["ProfilerActivity", "profile", "record_function", "supported_activities"]

_perf_ns = time.perf_counter_ns

# Started profilers, innermost last: ``record_function`` reports to the innermost, as the op observer does.
_ACTIVE: list = []

# A call's record: a list while it runs, a tuple once it ended; these are its fields.
_NAME, _TID, _KIND, _START, _END, _CHILD_NS, _SELF_MEM, _CHILD_MEM, _DEV_MEM, _PARENT, _SEQ = range(11)
_OP, _BWD, _RANGE = 0, 1, 2  # kinds


class ProfilerActivity(enum.Enum):
    """What to profile: ``CPU`` (every op, always on) and ``CUDA`` (device-synchronised timing, pool memory)."""

    CPU = "cpu"
    CUDA = "cuda"


def supported_activities() -> set:
    """``{ProfilerActivity.CPU}``, with ``CUDA`` when a CUDA device is available."""
    return {ProfilerActivity.CPU, ProfilerActivity.CUDA} if cuda_is_available() else {ProfilerActivity.CPU}


class profile:  # noqa: N801 - named as torch.profiler.profile
    """Record every op's calls, times, and optionally input shapes, memory and FLOPs, as ``torch.profiler``.

    >>> with profile(record_shapes=True) as prof:
    ...     loss = model(x).sum()
    ...     loss.backward()
    >>> print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20))
    >>> prof.export_chrome_trace("trace.json")  # chrome://tracing or https://ui.perfetto.dev

    Forward calls are named after the op (``Matmul``, ``Relu``), backward calls
    after the graph node (``MatmulBackward``); :class:`record_function` ranges
    appear under their own names and contain the ops run inside them.

    Args:
        activities: ``ProfilerActivity`` values; by default CPU, and CUDA when
            a GPU is available (see the module docstring for what CUDA changes).
        record_shapes: record each call's input shapes (``Input Shapes``; with
            ``key_averages(group_by_input_shape=True)`` one row per shape).
        profile_memory: record the memory ops allocate (``CPU Mem``, ``Self CPU
            Mem``) and the peak (``peak_memory()``).
        with_flops: count FLOPs of matmul, linear, conv and attention
            (``Total MFLOPs`` and the like).
        on_trace_ready: called with this profiler when it stops (as
            ``torch.profiler.tensorboard_trace_handler`` is).
    """

    def __init__(
        self,
        *,
        activities=None,
        record_shapes: bool = False,
        profile_memory: bool = False,
        with_flops: bool = False,
        on_trace_ready=None,
    ) -> None:
        if activities is None:
            activities = supported_activities()
        activities = set(activities)
        for activity in activities:
            if not isinstance(activity, ProfilerActivity):
                raise TypeError(
                    f"activities must be ProfilerActivity values (CPU, CUDA), got {activity!r} "
                    f"of type {type(activity).__name__}"
                )
        self.activities = activities
        self.record_shapes = bool(record_shapes)
        self.profile_memory = bool(profile_memory)
        self.with_flops = bool(with_flops)
        self.on_trace_ready = on_trace_ready
        self._cuda = ProfilerActivity.CUDA in activities
        if self._cuda and not cuda_is_available():
            warnings.warn("ProfilerActivity.CUDA was asked for, but no CUDA device is available", stacklevel=2)
            self._cuda = False
        self._running = False
        self._stopped = False
        self._events = None
        self._reset()

    def _reset(self) -> None:
        # While running, each closed call is one tuple of numbers and a name (see _open), which the garbage
        # collector stops scanning after one look; FunctionEvents are built when the results are first read.
        self._records: list = []
        self._shapes: dict = {}  # seq -> input shapes
        self._flops: dict = {}  # seq -> FLOPs
        self._next_seq = itertools.count(1).__next__
        self._local = threading.local()  # per thread: the stack of open records, and the thread id
        self._node_flops = weakref.WeakKeyDictionary()  # graph node -> its forward's FLOPs
        self._live: dict = {}  # id(storage) -> bytes, for host storage made by ops and alive
        self._finalizers: list = []
        self._memory_records: list = []  # (ns, bytes (+ allocated, - freed), bytes in use, tid, device)
        self._cpu_now = 0
        self._peak = {}

    # -- starting and stopping ----------------------------------------------------------------------------------
    def start(self) -> None:
        if self._running:
            raise RuntimeError("this profiler is already running")
        self._reset()
        self._events = None
        self._stopped = False
        if self._cuda:
            from .. import cuda as fm_cuda

            self._sync = fm_cuda.synchronize
            self._pool_bytes = fm_cuda.memory_allocated
            if self.profile_memory:
                fm_cuda.reset_peak_memory_stats()
            self._sync()
        if self.profile_memory:
            self._peak["cpu"] = 0
        self._observation = observe_ops(_Observer(self))
        self._start_ns = _perf_ns()
        self._base_time_ns = time.time_ns()
        self._running = True
        _ACTIVE.append(self)
        self._observation.__enter__()

    def stop(self) -> None:
        if not self._running:
            return
        self._running = False
        try:
            self._observation.__exit__(None, None, None)
            self._observation = None  # the observer refers back to this profiler: no cycle left for the GC
        finally:
            with contextlib.suppress(ValueError):
                _ACTIVE.remove(self)
            for finalizer in self._finalizers:
                finalizer.detach()
            self._finalizers.clear()
            self._live.clear()
        if self._cuda:
            self._sync()
            if self.profile_memory:
                from .. import cuda as fm_cuda

                self._peak["cuda"] = fm_cuda.max_memory_allocated()
        self._events = None  # built from the records when first read
        self._stopped = True
        if self.on_trace_ready is not None:
            self.on_trace_ready(self)

    def __enter__(self) -> profile:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- results ------------------------------------------------------------------------------------------------
    def _finished(self) -> EventList:
        if self._running:
            raise RuntimeError("the profiler is still running: read its results after the with block (or stop())")
        if not self._stopped:
            raise RuntimeError("the profiler has not run yet: use it as `with profile() as prof:` first")
        if self._events is None:
            self._events = self._build()
        return self._events

    def _build(self) -> EventList:
        records = sorted(self._records, key=lambda r: (r[_START], -r[_END]))
        events, by_seq = [], {}
        for i, r in enumerate(records, 1):
            event = FunctionEvent(
                r[_NAME], r[_TID], is_user_annotation=r[_KIND] == _RANGE, is_backward=r[_KIND] == _BWD
            )
            event.id = i
            event.start_ns, event.end_ns, event._children_ns = r[_START], r[_END], r[_CHILD_NS]
            event.self_cpu_memory_usage, event._children_cpu_mem = r[_SELF_MEM], r[_CHILD_MEM]
            event.device_memory_usage = r[_DEV_MEM]
            event.input_shapes = [list(shape) for shape in self._shapes.get(r[_SEQ], ())]
            event.flops = self._flops.get(r[_SEQ], 0)
            by_seq[r[_SEQ]] = event
            events.append(event)
        for r, event in zip(records, events):
            parent = by_seq.get(r[_PARENT])
            if parent is not None:
                event.cpu_parent = parent
                parent.cpu_children.append(event)
        return EventList(events, profile_memory=self.profile_memory, with_flops=self.with_flops, peak_memory=self._peak)

    def events(self) -> EventList:
        """Every op call and range, in start order (``FunctionEvent``: name, times, shapes, memory, FLOPs)."""
        return self._finished()

    def key_averages(self, group_by_input_shape: bool = False) -> EventList:
        """One row per op name (and input shapes with ``group_by_input_shape``); ``.table()`` prints them."""
        return self._finished().key_averages(group_by_input_shape)

    @property
    def self_cpu_time_total(self) -> float:
        """Microseconds covered by the recorded events (each counted once)."""
        return self._finished().self_cpu_time_total

    def peak_memory(self, device: str = "cpu") -> int:
        """The most bytes in use at once while profiling: ``"cpu"`` the estimate from op-made storage (see the
        module docstring), ``"cuda"`` CuPy's memory pool (with ``ProfilerActivity.CUDA``)."""
        self._finished()
        if not self.profile_memory:
            raise RuntimeError("peak_memory needs profile(profile_memory=True)")
        key = str(device).split(":")[0]
        if key not in self._peak:
            raise ValueError(
                f"no peak memory recorded for {device!r}: recorded {sorted(self._peak)} "
                "(cuda needs ProfilerActivity.CUDA)"
            )
        return self._peak[key]

    def export_chrome_trace(self, path) -> None:
        """Write the events as a Chrome trace (JSON) to ``path``: open it in https://ui.perfetto.dev or
        chrome://tracing."""
        events = self._finished()
        write_chrome_trace(path, events, self._memory_records, start_ns=self._start_ns, base_time_ns=self._base_time_ns)

    # -- recording (the hot path while running) -----------------------------------------------------------------
    def _thread(self):
        local = self._local
        try:
            return local.stack, local.tid
        except AttributeError:
            local.stack, local.tid = [], threading.get_native_id()
            return local.stack, local.tid

    def _open(self, name: str, kind: int = 0) -> list:
        """Start a call: its open record goes on this thread's stack (see the _NAME... indices)."""
        stack, tid = self._thread()
        record = [name, tid, kind, 0, 0, 0, 0, 0, 0, stack[-1][_SEQ] if stack else 0, self._next_seq()]
        stack.append(record)
        if self._cuda:
            self._sync()
            if self.profile_memory:
                record[_DEV_MEM] = -self._pool_bytes()
        record[_START] = _perf_ns()
        return record

    def _close(self, record: list, made=(), kept=()) -> None:
        """End a call; with ``profile_memory``, count the storage of arrays ``made`` that ``kept`` (its inputs)
        do not own."""
        if self._cuda:
            self._sync()
            record[_END] = _perf_ns()
            if self.profile_memory:
                record[_DEV_MEM] += self._pool_bytes()
        else:
            record[_END] = _perf_ns()
        if made and self.profile_memory:
            self._count_made(record, made, kept)
        stack = self._local.stack
        if stack and stack[-1] is record:
            stack.pop()
        elif record in stack:  # ranges closed out of order
            stack.remove(record)
        if stack:
            parent = stack[-1]
            parent[_CHILD_NS] += record[_END] - record[_START]
            parent[_CHILD_MEM] += record[_SELF_MEM] + record[_CHILD_MEM]
        if self._running:
            self._records.append(tuple(record))

    # -- memory ---------------------------------------------------------------------------------------------------
    def _count_made(self, record, made, kept) -> None:
        owners_kept = {id(_storage(a)) for a in kept if type(a) is HOST_ARRAY}
        for array in made:
            if type(array) is not HOST_ARRAY:
                continue  # device arrays: the memory pool measures them
            owner = _storage(array)
            key = id(owner)
            if key in self._live or key in owners_kept:
                continue
            nbytes = int(owner.nbytes)
            if not nbytes:
                continue
            self._live[key] = nbytes
            self._finalizers.append(weakref.finalize(owner, self._release, key, nbytes))
            self._cpu_now += nbytes
            self._peak["cpu"] = max(self._peak["cpu"], self._cpu_now)
            record[_SELF_MEM] += nbytes
            self._memory_records.append((_perf_ns(), nbytes, self._cpu_now, record[_TID], "cpu"))

    def _release(self, key: int, nbytes: int) -> None:
        """A finalizer: storage an op made is gone; it counts against the op or range running now."""
        if self._live.pop(key, None) is None:
            return
        self._cpu_now -= nbytes
        stack, tid = self._thread()
        if stack:
            stack[-1][_SELF_MEM] -= nbytes
        self._memory_records.append((_perf_ns(), -nbytes, self._cpu_now, tid, "cpu"))


def _storage(array):
    """The array that owns ``array``'s memory (the end of its chain of ``base`` arrays)."""
    base = array.base
    while base is not None and hasattr(base, "nbytes") and hasattr(base, "base"):
        array, base = base, base.base
    return array


def _arrays(value) -> list:
    """The arrays behind an op's result: a Tensor, a tuple of them, or of arrays (a backward's gradients)."""
    items = value if isinstance(value, (tuple, list)) else (value,)
    found = []
    for item in items:
        if isinstance(item, Tensor):
            found.append(item._data)
        elif item is not None and hasattr(item, "nbytes"):
            found.append(item)
    return found


def _shape(value) -> tuple:
    return tuple(value.shape) if value is not None and hasattr(value, "shape") else ()


class _Observer(OpObserver):
    """Times each op call for a :class:`profile` (and records shapes, FLOPs and memory as it asks)."""

    def __init__(self, prof: profile) -> None:
        self.prof = prof

    def forward(self, cls, args, kwargs, run):
        prof = self.prof
        record = prof._open(cls.__name__)
        if prof.record_shapes:
            prof._shapes[record[_SEQ]] = tuple(tuple(a._data.shape) if isinstance(a, Tensor) else () for a in args)
        out = None
        try:
            out = run()
            return out
        finally:
            if prof.profile_memory and out is not None:
                made = _arrays(out)
                node = getattr(out[0] if type(out) is tuple else out, "grad_fn", None)
                if node is not None:
                    made += _arrays(tuple(getattr(node, "_saved", ())))
                prof._close(record, made, [a._data for a in args if isinstance(a, Tensor)])
            else:
                prof._close(record)
            if prof.with_flops and out is not None:
                flops = forward_flops(cls, args, out)
                if flops:
                    prof._flops[record[_SEQ]] = flops
                    node = getattr(out[0] if type(out) is tuple else out, "grad_fn", None)
                    if node is not None:
                        prof._node_flops[node] = flops

    def backward(self, node, grad, run):
        prof = self.prof
        record = prof._open(node.name(), _BWD)
        if prof.record_shapes:
            grads_in = grad if isinstance(grad, (tuple, list)) else (grad,)
            prof._shapes[record[_SEQ]] = tuple(_shape(g) for g in grads_in)
        grads = None
        try:
            grads = run()
            return grads
        finally:
            if prof.profile_memory and grads is not None:
                prof._close(record, _arrays(grads), _arrays(grad))
            else:
                prof._close(record)
            if prof.with_flops:
                flops = backward_flops(node, prof._node_flops.get(node, 0))
                if flops:
                    prof._flops[record[_SEQ]] = flops


class record_function(contextlib.ContextDecorator):  # noqa: N801 - named as torch.profiler.record_function
    """A named range in the profile (a row of the table, a slice of the trace) holding the ops run inside it.

    ``with record_function("data"):`` or ``@record_function("step")``. Without
    an active profiler it records nothing and costs one list test. ``args`` is
    accepted as PyTorch accepts it, and not recorded.
    """

    def __init__(self, name: str, args: str | None = None) -> None:
        self.name = name
        self.args = args
        self._open: list = []  # (profiler, record) per entry: a decorated function may recurse

    def __enter__(self) -> record_function:
        if _ACTIVE:
            prof = _ACTIVE[-1]
            self._open.append((prof, prof._open(self.name, _RANGE)))
        else:
            self._open.append(None)
        return self

    def __exit__(self, *exc) -> bool:
        entry = self._open.pop() if self._open else None
        if entry is not None:
            prof, record = entry
            prof._close(record)
        return False
