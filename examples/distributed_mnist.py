"""Scenario 3 of the ForgeML seed: the MNIST classifier trained data-parallel, with AI guidance.

Every rank runs this script: the same model, the same optimizer, a shard of
the data. ``DistributedTrainer`` keeps the replicas in step (gradients averaged
by all-reduce), asks the AI services on rank 0 alone and applies their advice
on every rank at the same epoch. On CPUs the ranks talk over MPI; on GPUs,
``--backend nccl`` gives each rank its own GPU (``local_rank``).

    forgeml launch -n 2 examples/distributed_mnist.py [--epochs 10] [--batch-size 64]
    forgeml launch -n 1 examples/distributed_mnist.py --backend nccl      # one GPU
    mpiexec -n 8 -hosts a,b python examples/distributed_mnist.py          # two machines
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

import forgeml as fm
import forgeml.distributed as dist
from forgeml.distributed import DistributedTrainer, MPIBackend
from forgeml.optim import Adam
from forgeml.training import AIEnhancedConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mnist_mlp import build_model, load_split


def make_backend(name: str):
    if name == "nccl":
        local = MPIBackend()  # the node-local rank picks the GPU
        local_rank = local.comm.Split_type(local.MPI.COMM_TYPE_SHARED).Get_rank()
        world_size = local.world_size
        local.close()
        return dist.NCCLBackend(local_rank, world_size)
    return MPIBackend()


async def main(epochs: int = 10, batch_size: int = 64, lr: float = 0.001, backend: str = "mpi", seed: int = 0):
    fm.manual_seed(seed)  # the same initial weights everywhere (DDP would broadcast rank 0's anyway)
    train, test = load_split("train"), load_split("test")
    model = build_model()
    optimizer = Adam(model.parameters(), lr=lr, weight_decay=0.01)
    config = AIEnhancedConfig(
        research_update_interval=10,
        optimization_guidance_frequency=5,
        domain="computer_vision",
        model_description="MLP 784-512-256-10 with ReLU and Dropout(0.2) classifying MNIST digits",
    )
    trainer = DistributedTrainer(model, optimizer, make_backend(backend), config, batch_size=batch_size, log=print)
    if trainer.rank == 0:
        print(f"{trainer.world_size} ranks over {trainer.group.name}; batch {batch_size} per rank")
    metrics = await trainer.train_with_ai_guidance(train, test, epochs=epochs, test_data=test)
    if trainer.rank == 0:
        print("\n" + metrics.summary())
    await trainer.orchestrator.aclose()
    dist.destroy_process_group()
    return metrics


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=64, help="per rank")
    parser.add_argument("--lr", type=float, default=0.001)
    parser.add_argument("--backend", choices=("mpi", "nccl"), default="mpi")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    asyncio.run(main(args.epochs, args.batch_size, args.lr, args.backend, args.seed))
