"""``DistributedDataParallel``: one replica of a model per rank, kept identical by averaging gradients.

At construction rank 0's parameters and buffers are broadcast to every rank,
after checking that every rank holds the same parameters (names, shapes,
dtypes). The parameters are packed, in reverse order (roughly the order in
which backward produces their gradients), into flat buckets: the first at most
1 MiB so that communication starts early, the others at most ``bucket_cap_mb``.
A hook on each parameter copies its gradient, divided by the world size, into
its bucket as soon as backward has accumulated it; a full bucket is all-reduced
at once, without blocking, while backward goes on with the layers below.
When backward ends, DDP waits for the buckets still in flight and points each
parameter's ``.grad`` at its slice of the bucket (no copy back): after
``loss.backward()`` every rank holds the same averaged gradients. When every
rank runs on one machine (and the buckets are host float arrays) the buckets are
this rank's slots of an MPI shared-memory window and the ranks sum each other's
slots in place (``shared_memory.py``); otherwise each bucket is handed to the
process group's non-blocking all-reduce.

As in PyTorch: buckets are always reduced in the same order on every rank;
``no_sync()`` skips the all-reduce so that gradients accumulate locally (the
first backward after it synchronises the sum); with ``broadcast_buffers`` (the
default) rank 0's buffers (BatchNorm's running statistics) are broadcast at
each training forward; ``SyncBatchNorm`` computes batch statistics over all
ranks instead.

Unused parameters. With ``find_unused_parameters=False`` (the default) every
parameter must receive a gradient in every synchronised backward; if one does
not, backward raises an error naming it on the ranks where it got none (after
joining the all-reduces the other ranks started, so none is left waiting; an
uncaught error then ends the job). With ``True``, the buckets holding
parameters that received no gradient are all-reduced when backward ends
(contributing zeros from this rank), and one extra small all-reduce tells which
parameters no rank used: their ``.grad`` is left untouched (None after
``zero_grad``). Unlike PyTorch, ForgeML does not walk the graph after forward:
the cost of ``True`` is the extra all-reduce and a later start for buckets that
hold unused parameters. ``static_graph`` is accepted and changes nothing.
"""

from __future__ import annotations

import contextlib
import time

from ..autograd.engine import queue_callback
from ..autograd.grad_mode import is_grad_enabled, no_grad
from ..backend.device import as_device, namespace_of
from ..nn.module import Module
from ..tensor import Tensor
from .group import ReduceOp, default_group
from .shared_memory import SharedMemoryBuckets

__all__ = ["DistributedDataParallel"]

MiB = 1024 * 1024
FIRST_BUCKET_BYTES = 1 * MiB  # as torch.distributed's _DEFAULT_FIRST_BUCKET_BYTES


class _Bucket:
    """Parameters whose gradients travel together in one flat array."""

    __slots__ = ("indices", "buffer", "pending", "work")

    def __init__(self, indices: list[int], buffer) -> None:
        self.indices, self.buffer = indices, buffer
        self.pending = len(indices)
        self.work = None


def _plan_buckets(params: list, first_cap: int, cap: int) -> list[list[int]]:
    """Indices of ``params`` grouped into buckets, last parameter first; a bucket holds one dtype and device
    and stays under its byte cap unless a single parameter is bigger."""
    buckets: list[list[int]] = []
    current: list[int] = []
    size = 0
    key = None
    for i in reversed(range(len(params))):
        p = params[i]
        nbytes = p._data.size * p._data.dtype.itemsize
        limit = first_cap if not buckets else cap
        this_key = (p.dtype, p.device)
        if current and (this_key != key or size + nbytes > limit):
            buckets.append(current)
            current, size = [], 0
        current.append(i)
        size += nbytes
        key = this_key
    if current:
        buckets.append(current)
    return buckets


class DistributedDataParallel(Module):
    """Data parallelism for ``module`` across the ranks of ``process_group`` (the default group).

    Construct it on every rank after ``init_process_group``, with the same
    model; train as usual (``loss.backward()`` averages the gradients across
    ranks). The wrapped model is ``ddp.module``; its ``state_dict()`` has no
    ``module.`` prefix, which is what checkpoints should hold.

    ``device_ids``: for a CUDA model, ``[local_rank]`` (checked against the
    parameters' device); ``output_device`` and ``dim`` are accepted for
    PyTorch's signature (outputs stay where the module puts them).
    """

    def __init__(
        self,
        module: Module,
        device_ids=None,
        output_device=None,
        dim: int = 0,
        broadcast_buffers: bool = True,
        process_group=None,
        bucket_cap_mb: float = 25.0,
        find_unused_parameters: bool = False,
        check_reduction: bool = False,
        gradient_as_bucket_view: bool = False,
        static_graph: bool = False,
    ) -> None:
        super().__init__()
        if not isinstance(module, Module):
            raise TypeError(f"DistributedDataParallel wraps a forgeml.nn.Module, got {type(module).__name__}")
        if not bucket_cap_mb > 0:
            raise ValueError(f"bucket_cap_mb must be positive, got {bucket_cap_mb}")
        self.module = module
        group = default_group(process_group)
        object.__setattr__(self, "process_group", group)
        self.broadcast_buffers = broadcast_buffers
        self.find_unused_parameters = find_unused_parameters
        self.bucket_cap_mb = bucket_cap_mb
        self.require_backward_grad_sync = True
        named = [(name, p) for name, p in module.named_parameters() if p.requires_grad]
        if not named:
            raise RuntimeError("DistributedDataParallel needs a module with at least one parameter that requires grad")
        devices = {str(p.device) for _, p in named}
        if len(devices) > 1:
            raise ValueError(f"DistributedDataParallel needs the module on one device; its parameters are on {devices}")
        if device_ids is not None:
            wanted = {str(as_device(d)) for d in device_ids}
            if len(wanted) != 1 or wanted != devices:
                raise ValueError(f"device_ids={list(device_ids)} does not match the module's device {devices.pop()}")
        self._names = [name for name, _ in named]
        object.__setattr__(self, "_params", [p for _, p in named])
        self._check_same_parameters(named)
        with no_grad():
            self._broadcast_coalesced(self._params + list(module.buffers()))
        self._build_buckets(int(FIRST_BUCKET_BYTES), int(bucket_cap_mb * MiB))
        self._handles = [p.register_post_accumulate_grad_hook(self._make_hook(i)) for i, p in enumerate(self._params)]
        self._sync_this_backward = False
        self._reset_iteration()
        self._stats = {"backwards": 0, "wait_seconds": 0.0, "bytes": 0}

    # -- construction -----------------------------------------------------------------------------
    def _check_same_parameters(self, named) -> None:
        """Raise on every rank unless every rank holds the same parameters and buffers (names, shapes, dtypes):
        the broadcasts and all-reduces that follow assume it."""
        group = self.process_group
        if group.world_size == 1:
            return

        def describe(items):
            return [(name, tuple(t.shape), str(t.dtype)) for name, t in items]

        mine = (describe(named), describe(self.module.named_buffers()))
        everyone = group.all_gather_object(mine)
        for k, kind in enumerate(("parameter", "buffer")):
            reference = everyone[0][k]
            for rank, theirs in enumerate(e[k] for e in everyone):
                if theirs == reference:
                    continue
                for (n0, s0, d0), (n1, s1, d1) in zip(reference, theirs):
                    if (n0, s0, d0) != (n1, s1, d1):
                        raise RuntimeError(
                            f"DistributedDataParallel: {kind} {n0!r} is {list(s0)} {d0} on rank 0 but "
                            f"{n1!r} is {list(s1)} {d1} on rank {rank}; every rank must build the same model"
                        )
                raise RuntimeError(
                    f"DistributedDataParallel: rank {rank} has {len(theirs)} {kind}s, rank 0 has "
                    f"{len(reference)}; every rank must build the same model"
                )

    def _broadcast_coalesced(self, tensors: list) -> None:
        """Rank 0's values of ``tensors`` on every rank: one broadcast per dtype and device."""
        group = self.process_group
        if group.world_size == 1 or not tensors:
            return
        by_kind: dict = {}
        for t in tensors:
            by_kind.setdefault((t._data.dtype, str(t.device)), []).append(t)
        for same in by_kind.values():
            xp = namespace_of(same[0]._data)
            flat = xp.concatenate([t._data.reshape(-1) for t in same])
            group.broadcast(flat, 0).wait()
            offset = 0
            for t in same:
                n = t._data.size
                t._data[...] = flat[offset : offset + n].reshape(t._data.shape)
                offset += n

    def _build_buckets(self, first_cap: int, cap: int) -> None:
        plan = _plan_buckets(self._params, first_cap, cap)
        buckets, where, views = [], [None] * len(self._params), [None] * len(self._params)
        for b, indices in enumerate(plan):
            first = self._params[indices[0]]._data
            xp = namespace_of(first)
            total = sum(self._params[i]._data.size for i in indices)
            buffer = xp.zeros(total, dtype=first.dtype)
            offset = 0
            for i in indices:
                data = self._params[i]._data
                views[i] = buffer[offset : offset + data.size].reshape(data.shape)
                where[i] = b
                offset += data.size
            buckets.append(_Bucket(indices, buffer))
        shared = SharedMemoryBuckets.create(self.process_group, [b.buffer for b in buckets])
        if shared is not None:  # the same buckets, each in this rank's slot of a shared-memory window
            for bucket, slot in zip(buckets, shared.slots):
                offset = 0
                for i in bucket.indices:
                    size = views[i].size
                    views[i] = slot[offset : offset + size].reshape(views[i].shape)
                    offset += size
                bucket.buffer = slot
        object.__setattr__(self, "_shared", shared)
        object.__setattr__(self, "_buckets", buckets)
        object.__setattr__(self, "_bucket_of", where)
        object.__setattr__(self, "_views", views)

    # -- forward ----------------------------------------------------------------------------------
    def forward(self, *inputs, **kwargs):
        grad_on = is_grad_enabled()
        if grad_on and self.module.training and self.broadcast_buffers:
            buffers = list(self.module.buffers())
            if buffers:
                with no_grad():
                    self._broadcast_coalesced(buffers)
        if grad_on:  # a forward without a graph (evaluation) leaves the coming backward's plan alone
            self._sync_this_backward = self.require_backward_grad_sync
            self._reset_iteration()
        return self.module(*inputs, **kwargs)

    @contextlib.contextmanager
    def no_sync(self):
        """Within this context backward accumulates gradients locally, without all-reducing them; the first
        backward after it (outside) averages the accumulated sums."""
        previous = self.require_backward_grad_sync
        self.require_backward_grad_sync = False
        try:
            yield
        finally:
            self.require_backward_grad_sync = previous

    # -- backward: the reducer --------------------------------------------------------------------
    def _reset_iteration(self) -> None:
        self._marked = [False] * len(self._params)
        self._next_bucket = 0
        self._finalize_queued = False
        for bucket in self._buckets:
            bucket.pending = len(bucket.indices)
            bucket.work = None

    def _make_hook(self, index: int):
        def hook(param) -> None:
            if self._sync_this_backward:
                self._grad_ready(index)

        return hook

    def _grad_ready(self, index: int) -> None:
        if not self._finalize_queued:
            queue_callback(self._finalize)
            self._finalize_queued = True
        if self._marked[index]:
            return  # a second gradient for it in this backward was accumulated into .grad: still in the copy below
        self._marked[index] = True
        self._copy_in(index, self._params[index].grad._data)
        bucket = self._buckets[self._bucket_of[index]]
        bucket.pending -= 1
        if bucket.pending == 0:
            self._launch_ready()
            self.process_group.progress()  # push what was just issued (MPI advances only inside MPI calls)

    def _copy_in(self, index: int, grad) -> None:
        """Put this rank's share of the average (grad / world size) into the parameter's bucket slice."""
        view = self._views[index]
        world = self.process_group.world_size
        if view.dtype.kind in "fc":
            xp = namespace_of(view)
            if world == 1:
                if grad is not view:
                    view[...] = grad
            else:
                xp.multiply(grad, 1.0 / world, out=view)
        elif grad is not view:
            view[...] = grad

    def _launch_ready(self) -> None:
        """All-reduce the buckets that are full, in bucket order (every rank issues them in the same order)."""
        buckets = self._buckets
        while self._next_bucket < len(buckets) and buckets[self._next_bucket].pending == 0:
            bucket = buckets[self._next_bucket]
            if self._shared is not None:
                bucket.work = self._shared.all_reduce(self._next_bucket)
            else:
                bucket.work = self.process_group.all_reduce(bucket.buffer, ReduceOp.SUM)
            self._stats["bytes"] += bucket.buffer.nbytes
            self._next_bucket += 1

    def _finalize(self) -> None:
        """End of a synchronised backward: reduce what is left, wait, and point each ``.grad`` at the result."""
        missing = [i for i, marked in enumerate(self._marked) if not marked]
        globally_unused: set[int] = set()
        if missing:
            for i in missing:
                grad = self._params[i].grad
                if grad is not None and self.find_unused_parameters:
                    self._copy_in(i, grad._data)
                else:
                    self._views[i][...] = 0
                self._buckets[self._bucket_of[i]].pending -= 1
            self._launch_ready()
            if not self.find_unused_parameters:
                # The ranks that used these parameters have started all-reduces this rank had not: join them (and
                # wait) before raising, so that no rank is left waiting in a collective this rank never calls.
                self._wait_all()
                self._reset_iteration()
                names = ", ".join(repr(self._names[i]) for i in missing[:10])
                raise RuntimeError(
                    f"DistributedDataParallel: parameters {names} received no gradient in this backward on rank "
                    f"{self.process_group.rank} ({len(missing)} in all). Every rank must produce a gradient for every "
                    "parameter before the all-reduce; if some parameters are unused in forward, pass "
                    "find_unused_parameters=True"
                )
        if self.find_unused_parameters:
            globally_unused = self._unused_everywhere()
        start = time.perf_counter()
        self._wait_all()
        self._stats["wait_seconds"] += time.perf_counter() - start
        self._stats["backwards"] += 1
        tensor_cls = Tensor
        for i, p in enumerate(self._params):
            if i in globally_unused:
                continue
            view = self._views[i]
            grad = p.grad
            if grad is None:
                p.grad = tensor_cls._make(view, False, None)
            elif grad._data is not view:
                grad._data = view
        self._reset_iteration()

    def _wait_all(self) -> None:
        launched = False
        for bucket in self._buckets:
            if bucket.work is not None:
                bucket.work.wait()
                launched = True
        if launched and self._shared is not None:
            self._shared.finish()

    def _unused_everywhere(self) -> set[int]:
        xp = namespace_of(self._buckets[0].buffer)
        used = xp.asarray([1 if marked else 0 for marked in self._marked], dtype=xp.int32)
        self.process_group.all_reduce(used, ReduceOp.MAX).wait()
        used_host = used.tolist()
        return {i for i, flag in enumerate(used_host) if not flag}

    # -- introspection ----------------------------------------------------------------------------
    def communication_stats(self, reset: bool = False) -> dict:
        """Synchronised backwards so far, seconds spent waiting for all-reduces when backward ended (the
        communication backward did not hide), and bytes all-reduced."""
        stats = dict(self._stats)
        stats["buckets"] = len(self._buckets)
        if reset:
            self._stats = {"backwards": 0, "wait_seconds": 0.0, "bytes": 0}
        return stats

    def extra_repr(self) -> str:
        return (
            f"world_size={self.process_group.world_size}, buckets={len(self._buckets)}, "
            f"bucket_cap_mb={self.bucket_cap_mb}, find_unused_parameters={self.find_unused_parameters}"
        )
