"""Data-parallel training across processes and machines: MPI for CPUs (mpi4py), NCCL for CUDA GPUs.

As ``torch.distributed``: ``init_process_group('mpi')`` (or ``'nccl'``), then
collectives on tensors (``all_reduce``, ``broadcast``, ``all_gather``, ...),
:class:`DistributedSampler` to shard a data set, and
:class:`DistributedDataParallel` to keep replicas of a model in step.
:class:`DistributedTrainer` does all of it for you. Start a script on N
processes with ``forgeml launch -n N script.py`` (``mpiexec`` underneath).
"""

from .collectives import (
    all_gather,
    all_gather_into_tensor,
    all_gather_object,
    all_reduce,
    barrier,
    broadcast,
    broadcast_object_list,
    gather,
    gather_object,
    reduce,
    reduce_scatter,
    reduce_scatter_tensor,
    scatter,
    scatter_object_list,
)
from .group import (
    DistributedError,
    DistributedTimeoutError,
    ProcessGroup,
    ReduceOp,
    Work,
    destroy_process_group,
    get_backend,
    get_rank,
    get_world_size,
    init_process_group,
    is_available,
    is_initialized,
)


def __getattr__(name: str):
    # The backends, DDP and the trainer import mpi4py, CuPy and the training layer: only when asked for.
    if name == "MPIBackend":
        from .mpi import MPIBackend

        return MPIBackend
    if name == "NCCLBackend":
        from .nccl import NCCLBackend

        return NCCLBackend
    if name == "DistributedSampler":
        from .sampler import DistributedSampler

        return DistributedSampler
    if name == "DistributedDataParallel":
        from .ddp import DistributedDataParallel

        return DistributedDataParallel
    if name == "SyncBatchNorm":
        from .sync_batchnorm import SyncBatchNorm

        return SyncBatchNorm
    if name == "DistributedTrainer":
        from .trainer import DistributedTrainer

        return DistributedTrainer
    raise AttributeError(f"module 'forgeml.distributed' has no attribute {name!r}")


__all__ = [
    "DistributedDataParallel",
    "DistributedError",
    "DistributedSampler",
    "DistributedTimeoutError",
    "DistributedTrainer",
    "MPIBackend",
    "NCCLBackend",
    "ProcessGroup",
    "ReduceOp",
    "SyncBatchNorm",
    "Work",
    "all_gather",
    "all_gather_into_tensor",
    "all_gather_object",
    "all_reduce",
    "barrier",
    "broadcast",
    "broadcast_object_list",
    "destroy_process_group",
    "gather",
    "gather_object",
    "get_backend",
    "get_rank",
    "get_world_size",
    "init_process_group",
    "is_available",
    "is_initialized",
    "reduce",
    "reduce_scatter",
    "reduce_scatter_tensor",
    "scatter",
    "scatter_object_list",
]
