"""``forgeml.nn.parallel``, as ``torch.nn.parallel``: :class:`DistributedDataParallel`.

The class lives in ``forgeml.distributed`` (it needs the process groups above
``nn`` in the layering); it is imported from there when first asked for.
"""


def __getattr__(name: str):
    if name == "DistributedDataParallel":
        from ...distributed.ddp import DistributedDataParallel

        return DistributedDataParallel
    raise AttributeError(f"module 'forgeml.nn.parallel' has no attribute {name!r}")


__all__ = ["DistributedDataParallel"]
