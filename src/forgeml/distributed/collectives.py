"""Collectives on tensors, as in ``torch.distributed``: in place on the tensors' storage, blocking unless
``async_op=True`` (then a :class:`~forgeml.distributed.Work` is returned to ``wait()`` on).

Every rank must call the same collectives in the same order with tensors of the
same shape and dtype. A collective writes into its output tensor's storage (no
copy when that storage is contiguous) and bumps the tensor's version counter,
so autograd notices if a tensor saved for backward was overwritten.
"""

from __future__ import annotations

from ..tensor import Tensor
from .group import ProcessGroup, ReduceOp, Work, default_group

__all__ = [
    "all_gather",
    "all_gather_into_tensor",
    "all_gather_object",
    "all_reduce",
    "barrier",
    "broadcast",
    "broadcast_object_list",
    "gather",
    "gather_object",
    "reduce",
    "reduce_scatter",
    "reduce_scatter_tensor",
    "scatter",
    "scatter_object_list",
]


def _check_tensor(tensor, name: str = "tensor") -> Tensor:
    if not isinstance(tensor, Tensor):
        raise TypeError(f"{name} must be a forgeml Tensor, got {type(tensor).__name__}")
    return tensor


def _check_list(tensors, group: ProcessGroup, like: Tensor, name: str) -> list:
    if not isinstance(tensors, (list, tuple)) or len(tensors) != group.world_size:
        got = len(tensors) if isinstance(tensors, (list, tuple)) else type(tensors).__name__
        raise ValueError(f"{name} must be a list of {group.world_size} tensors (one per rank), got {got}")
    for i, t in enumerate(tensors):
        _check_tensor(t, f"{name}[{i}]")
        if t.shape != like.shape or t.dtype != like.dtype:
            raise ValueError(
                f"{name}[{i}] has shape {list(t.shape)} and dtype {t.dtype}; expected {list(like.shape)} "
                f"and {like.dtype}, as the input tensor"
            )
    return list(tensors)


def _modified(*tensors) -> None:
    for t in tensors:
        t._version_counter[0] += 1


def _result(work: Work, async_op: bool, after=None):
    if async_op:
        if after is not None:
            finish = work._finish

            def finish_then_unpack() -> None:
                finish()
                after()

            work._finish = finish_then_unpack
        return work
    work.wait()
    if after is not None:
        after()
    return None


def all_reduce(tensor: Tensor, op: ReduceOp = ReduceOp.SUM, group: ProcessGroup | None = None, async_op=False):
    """Reduce ``tensor`` across all ranks, in place; every rank ends with the result."""
    group = default_group(group)
    _check_tensor(tensor)
    work = group.all_reduce(tensor._data, op)
    _modified(tensor)
    return _result(work, async_op)


def broadcast(tensor: Tensor, src: int, group: ProcessGroup | None = None, async_op=False):
    """Copy rank ``src``'s ``tensor`` into every other rank's ``tensor``."""
    group = default_group(group)
    _check_tensor(tensor)
    _check_rank(src, group, "src")
    work = group.broadcast(tensor._data, src)
    _modified(tensor)
    return _result(work, async_op)


def reduce(tensor: Tensor, dst: int, op: ReduceOp = ReduceOp.SUM, group: ProcessGroup | None = None, async_op=False):
    """Reduce ``tensor`` across all ranks into rank ``dst``'s ``tensor`` (the others' are left unchanged)."""
    group = default_group(group)
    _check_tensor(tensor)
    _check_rank(dst, group, "dst")
    work = group.reduce(tensor._data, dst, op)
    _modified(tensor)
    return _result(work, async_op)


def all_gather_into_tensor(output_tensor: Tensor, input_tensor: Tensor, group=None, async_op=False):
    """``output_tensor`` (``world_size`` times ``input_tensor``'s size along dim 0, or as many elements)
    receives every rank's ``input_tensor``, in rank order."""
    group = default_group(group)
    _check_tensor(output_tensor, "output_tensor")
    _check_tensor(input_tensor, "input_tensor")
    _check_sizes(output_tensor, input_tensor, group, "all_gather_into_tensor", "output_tensor")
    work = group.all_gather(output_tensor._data, input_tensor._data)
    _modified(output_tensor)
    return _result(work, async_op)


def all_gather(tensor_list: list, tensor: Tensor, group=None, async_op=False):
    """``tensor_list[r]`` receives rank ``r``'s ``tensor``."""
    group = default_group(group)
    _check_tensor(tensor)
    outputs = _check_list(tensor_list, group, tensor, "tensor_list")
    xp = _xp(tensor)
    flat = xp.empty((group.world_size,) + tensor.shape, dtype=tensor._data.dtype)
    work = group.all_gather(flat, tensor._data)

    def unpack() -> None:
        for r, out in enumerate(outputs):
            out._data[...] = flat[r]
        _modified(*outputs)

    return _result(work, async_op, unpack)


def reduce_scatter_tensor(output: Tensor, input: Tensor, op: ReduceOp = ReduceOp.SUM, group=None, async_op=False):
    """Reduce ``input`` across ranks and give rank ``r`` block ``r`` of the result (``input`` holds
    ``world_size`` blocks of ``output``'s size)."""
    group = default_group(group)
    _check_tensor(output, "output")
    _check_tensor(input, "input")
    _check_sizes(input, output, group, "reduce_scatter_tensor", "input")
    work = group.reduce_scatter(output._data, input._data, op)
    _modified(output)
    return _result(work, async_op)


def reduce_scatter(output: Tensor, input_list: list, op: ReduceOp = ReduceOp.SUM, group=None, async_op=False):
    """``output`` receives the reduction over ranks of every rank's ``input_list[rank]``."""
    group = default_group(group)
    _check_tensor(output, "output")
    inputs = _check_list(input_list, group, output, "input_list")
    xp = _xp(output)
    flat = xp.stack([t._data for t in inputs])
    work = group.reduce_scatter(output._data, flat, op)
    _modified(output)
    return _result(work, async_op)


def gather(tensor: Tensor, gather_list: list | None = None, dst: int = 0, group=None, async_op=False):
    """On ``dst``, ``gather_list[r]`` receives rank ``r``'s ``tensor``; other ranks pass no list."""
    group = default_group(group)
    _check_tensor(tensor)
    _check_rank(dst, group, "dst")
    if group.rank == dst:
        outputs = _check_list(gather_list, group, tensor, "gather_list")
        flat = _xp(tensor).empty((group.world_size,) + tensor.shape, dtype=tensor._data.dtype)
    else:
        if gather_list:
            raise ValueError(f"gather_list must be None (or empty) on rank {group.rank}: only dst={dst} receives")
        outputs, flat = [], None
    work = group.gather(flat, tensor._data, dst)

    def unpack() -> None:
        for r, out in enumerate(outputs):
            out._data[...] = flat[r]
        _modified(*outputs)

    return _result(work, async_op, unpack)


def scatter(tensor: Tensor, scatter_list: list | None = None, src: int = 0, group=None, async_op=False):
    """``tensor`` receives ``scatter_list[rank]`` of rank ``src``; other ranks pass no list."""
    group = default_group(group)
    _check_tensor(tensor)
    _check_rank(src, group, "src")
    if group.rank == src:
        inputs = _check_list(scatter_list, group, tensor, "scatter_list")
        flat = _xp(tensor).stack([t._data for t in inputs])
    else:
        if scatter_list:
            raise ValueError(f"scatter_list must be None (or empty) on rank {group.rank}: only src={src} sends")
        flat = None
    work = group.scatter(tensor._data, flat, src)
    _modified(tensor)
    return _result(work, async_op)


def barrier(group: ProcessGroup | None = None) -> None:
    """Wait until every rank reached this call."""
    default_group(group).barrier()


def broadcast_object_list(object_list: list, src: int = 0, group=None) -> None:
    """Replace ``object_list``'s items on every rank with rank ``src``'s (picklable) objects, in place."""
    group = default_group(group)
    _check_rank(src, group, "src")
    if not isinstance(object_list, list):
        raise TypeError(f"object_list must be a list, got {type(object_list).__name__}")
    received = group.broadcast_object(list(object_list) if group.rank == src else None, src)
    if len(received) != len(object_list):
        raise ValueError(
            f"broadcast_object_list: rank {src} sent {len(received)} objects, this rank's list has "
            f"{len(object_list)}; every rank must pass a list of the same length"
        )
    object_list[:] = received


def all_gather_object(object_list: list, obj, group=None) -> None:
    """``object_list[r]`` receives rank ``r``'s picklable ``obj``."""
    group = default_group(group)
    if not isinstance(object_list, list) or len(object_list) != group.world_size:
        raise ValueError(f"object_list must be a list of {group.world_size} items (one per rank)")
    object_list[:] = group.all_gather_object(obj)


def gather_object(obj, object_gather_list: list | None = None, dst: int = 0, group=None) -> None:
    """On ``dst``, ``object_gather_list[r]`` receives rank ``r``'s ``obj``."""
    group = default_group(group)
    _check_rank(dst, group, "dst")
    if group.rank == dst and (not isinstance(object_gather_list, list) or len(object_gather_list) != group.world_size):
        raise ValueError(f"object_gather_list must be a list of {group.world_size} items on rank {dst}")
    gathered = group.gather_object(obj, dst)
    if group.rank == dst:
        object_gather_list[:] = gathered


def scatter_object_list(scatter_object_output_list: list, scatter_object_input_list=None, src=0, group=None) -> None:
    """``scatter_object_output_list[0]`` receives ``scatter_object_input_list[rank]`` of rank ``src``."""
    group = default_group(group)
    _check_rank(src, group, "src")
    if not isinstance(scatter_object_output_list, list) or not scatter_object_output_list:
        raise ValueError("scatter_object_output_list must be a non-empty list (its first item receives the object)")
    scatter_object_output_list[0] = group.scatter_object(scatter_object_input_list, src)


def _check_rank(rank, group: ProcessGroup, name: str) -> None:
    if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < group.world_size:
        raise ValueError(f"{name} must be a rank in [0, {group.world_size}), got {rank!r}")


def _check_sizes(big: Tensor, small: Tensor, group: ProcessGroup, what: str, name: str) -> None:
    if big.dtype != small.dtype:
        raise TypeError(f"{what}: the tensors' dtypes differ ({big.dtype} and {small.dtype})")
    if big.numel() != small.numel() * group.world_size:
        raise ValueError(
            f"{what}: {name} has {big.numel()} elements; expected world_size ({group.world_size}) times "
            f"{small.numel()} = {small.numel() * group.world_size}"
        )


def _xp(tensor: Tensor):
    from ..backend.device import namespace_of

    return namespace_of(tensor._data)
