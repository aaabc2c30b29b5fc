"""``SyncBatchNorm``: batch normalisation whose batch statistics cover every rank's batch.

In training, with more than one rank, each forward all-reduces the per-channel
sums (and the sample count), then the sums of squared deviations from the
global mean (two passes, as precise as single-process batch norm), so every rank
normalises with the statistics of the whole global batch and updates identical
running statistics (unbiased variance over the global count). Backward
all-reduces the two per-channel sums the input gradient needs. Two ranks on
batches of B then compute what one process computes on the batch of 2B. In
evaluation, or in a world of one, it is plain batch norm.
"""

from __future__ import annotations

from ..autograd.function import ArrayFunction
from ..autograd.grad_mode import no_grad
from ..nn.batchnorm import _BatchNorm
from ..nn.module import Module
from .group import ReduceOp, default_group, get_world_size, is_initialized

__all__ = ["SyncBatchNorm"]


class _SyncBatchNormFunction(ArrayFunction):
    @staticmethod
    def forward(ctx, x, running_mean, running_var, weight, bias, momentum, eps, group):
        xp = ctx.xp
        c = x.shape[1]
        axes = (0,) + tuple(range(2, x.ndim))
        shape = (1, c) + (1,) * (x.ndim - 2)
        sums = xp.concatenate([x.sum(axis=axes), xp.asarray([x.size // c], dtype=x.dtype)])
        group.all_reduce(sums, ReduceOp.SUM).wait()
        count = float(sums[c])
        mean = sums[:c] / count
        centered = x - mean.reshape(shape)
        squares = xp.square(centered).sum(axis=axes)
        group.all_reduce(squares, ReduceOp.SUM).wait()
        var = squares / count
        if running_mean is not None:
            running_mean[...] = momentum * mean + (1 - momentum) * running_mean
        if running_var is not None:
            running_var[...] = momentum * (var * (count / (count - 1))) + (1 - momentum) * running_var
        invstd = (1.0 / xp.sqrt(var + eps)).astype(x.dtype, copy=False)
        xhat = centered * invstd.reshape(shape)
        out = xhat * weight.reshape(shape) if weight is not None else xhat.copy()
        if bias is not None:
            out += bias.reshape(shape)
        ctx.save_for_backward(xhat, invstd, weight)
        ctx.meta = (axes, shape, count, group)
        return out

    @staticmethod
    def backward(ctx, g):
        xp = ctx.xp
        xhat, invstd, weight = ctx.saved_tensors
        axes, shape, count, group = ctx.meta
        needs = ctx.needs_input_grad
        gx = gw = gb = None
        if needs[0]:
            gxhat = g * weight.reshape(shape) if weight is not None else g
            c = xhat.shape[1]
            sums = xp.concatenate([gxhat.sum(axis=axes), (gxhat * xhat).sum(axis=axes)])
            group.all_reduce(sums, ReduceOp.SUM).wait()
            m1 = (sums[:c] / count).reshape(shape)
            m2 = (sums[c:] / count).reshape(shape)
            gx = (gxhat - m1 - xhat * m2) * invstd.reshape(shape)
        if needs[3]:
            gw = (g * xhat).sum(axis=axes)
        if needs[4]:
            gb = g.sum(axis=axes)
        return gx, None, None, gw, gb, None, None, None


class SyncBatchNorm(_BatchNorm):
    """``torch.nn.SyncBatchNorm``: batch norm over (N, C, ...) inputs with statistics over all ranks of
    ``process_group`` (the default group). Usually made by :meth:`convert_sync_batchnorm`."""

    _expected_dims = (2, 3, 4, 5)

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        process_group=None,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype)
        self.process_group = process_group

    def forward(self, input):
        self._check_input_dim(input)
        group = self.process_group
        world = group.world_size if group is not None else (get_world_size() if is_initialized() else 1)
        if not self.training or world == 1:
            return super().forward(input)
        group = default_group(group)
        factor = 0.0 if self.momentum is None else self.momentum
        if self.track_running_stats and self.num_batches_tracked is not None:
            with no_grad():
                self.num_batches_tracked.add_(1)
            if self.momentum is None:
                factor = 1.0 / float(self.num_batches_tracked.item())
        if self.weight is not None and input.dtype != self.weight.dtype:
            raise TypeError(
                f"SyncBatchNorm: the input is {input.dtype} but the layer's parameters are {self.weight.dtype}"
            )
        running = self.track_running_stats
        out = _SyncBatchNormFunction.apply(
            input,
            self.running_mean if running else None,
            self.running_var if running else None,
            self.weight,
            self.bias,
            float(factor),
            float(self.eps),
            group,
        )
        if running:
            for t in (self.running_mean, self.running_var):
                if t is not None:
                    t._bump_version()
        return out

    @classmethod
    def convert_sync_batchnorm(cls, module: Module, process_group=None) -> Module:
        """``module`` with every BatchNorm layer replaced by a SyncBatchNorm holding the same parameters and
        running statistics (the module itself when it is one)."""
        if isinstance(module, _BatchNorm) and not isinstance(module, SyncBatchNorm):
            sync = cls(
                module.num_features,
                module.eps,
                module.momentum,
                module.affine,
                module.track_running_stats,
                process_group,
            )
            with no_grad():
                if module.affine:
                    sync.weight = module.weight
                    sync.bias = module.bias
                if module.track_running_stats:
                    sync.running_mean = module.running_mean
                    sync.running_var = module.running_var
                    sync.num_batches_tracked = module.num_batches_tracked
            sync.train(module.training)
            return sync
        for name, child in list(module.named_children()):
            converted = cls.convert_sync_batchnorm(child, process_group)
            if converted is not child:
                # in place in the registry: the child keeps its position (a Sequential runs its children in order)
                module._modules[name] = converted
        return module
